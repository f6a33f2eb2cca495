"""End to end: real nmap -sV against a real (private) rsyslog, then probetag.

One module-scoped run (about three minutes, nmap's probe timeouts): a private
rsyslogd listens with imtcp and imudp on one free 127.0.0.1 port and writes
every message in four formats; ``nmap -sV`` (TCP) and ``nmap -sU -sV`` (UDP),
default intensity, scan that port in parallel while benign traffic arrives;
a packet capture records the bytes on the wire. Ground truth per log line
comes from nmap's trace and those bytes (tests/util/nmap.py), never from
probetag.

Then:
* ``probetag explain --format jsonl`` (the real CLI, as a subprocess) on each
  format: every probe line named correctly, no benign or rsyslog-internal
  line tagged; RFC 5424 only where the payload survived (see e2e_scoring).
* the traditional file's lines as Fluentd ``in_tail`` + ``syslog`` parser
  records (``host``/``ident``/``message``, values as msgpack bin) sent over
  the forward protocol to ``probetag serve``: the same verdicts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from e2e_scoring import REPORT, score
from util.nmap import ScanCapture, capture_scan
from util.rsyslog import FORMATS, read_json_lines, rsyslogd_path

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> ScanCapture:
    # scripts/test installs nmap and rsyslog; UDP scanning and the packet
    # capture need root (CI runs as root). Missing parts are a failure.
    missing = [n for n, ok in (("nmap", shutil.which("nmap")), ("rsyslogd", rsyslogd_path()),
                                ("logger", shutil.which("logger")), ("root", os.geteuid() == 0)) if not ok]
    if missing:
        pytest.fail(f"e2e needs {', '.join(missing)} (run ./scripts/test as root)")
    t0 = time.monotonic()
    cap = capture_scan(tmp_path_factory.mktemp("rsyslog"), benign_spread=4.0, nmap_timeout=240.0)
    kinds = Counter(t.kind for t in cap.truth)
    REPORT.append(f"capture: {len(cap.truth)} log lines {dict(kinds)}, {len(cap.flows)} flows on the wire, "
                  f"{time.monotonic() - t0:.0f} s")
    return cap


def _truth(cap: ScanCapture) -> list[dict[str, Any]]:
    return [t.as_json() for t in cap.truth]


def _explain(path: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-m", "probetag", "explain", "--format", "jsonl", str(path)],
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return [json.loads(x) for x in proc.stdout.splitlines()]


def test_ground_truth_is_complete(scan: ScanCapture) -> None:
    # every line is explained by a flow or is rsyslog's own; every nmap
    # service probe in the trace produced a labelled flow or (NULL) nothing
    assert not [t for t in scan.truth if t.kind == "unexplained"]
    assert {t.kind for t in scan.truth} >= {"probe", "benign", "internal"}
    traced = {w.probe for r in scan.runs for w in r.trace.writes if w.nbytes > 0}
    on_wire = {f.probe for f in scan.flows if f.label == "probe"}
    assert traced == on_wire
    # both transports were scanned and logged
    assert {t.transport for t in scan.truth if t.kind == "probe"} == {"tcp", "udp"}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_explain_names_every_probe_line(scan: ScanCapture, fmt: str) -> None:
    path = scan.rsyslog.files[fmt]
    out = _explain(path)
    truth = _truth(scan)
    assert [o["line"] for o in out] == list(range(1, len(truth) + 1))
    props = read_json_lines(scan.rsyslog.files["json"])
    s = score(fmt, truth, props, [o["probe"] for o in out])
    REPORT.append(s.line())
    for probe, names in sorted(s.extra_names.items()):
        REPORT.append(f"{'':12} {probe} tagged as {sorted(names)}")
    assert not s.false_positives, s.problems()
    assert not s.misnamed, s.problems()
    assert not s.missed, s.problems()


# Fluentd's RFC 3164 regexp (parser_syslog.rb, REGEXP, for in_tail without
# PRI); lines it does not match are dropped by Fluentd (FORWARD_NOTES 8)
_FLUENTD_3164 = re.compile(
    rb"^(?P<time>[^ ]*\s*[^ ]* [^ ]*) (?P<host>[^ ]*) (?P<ident>[^ :\[]*)(?:\[(?P<pid>[0-9]+)\])?"
    rb"(?:[^:]*:)? *(?P<message>.*)$", re.S)


def _in_tail_record(line: bytes) -> tuple[float, dict[str, bytes]] | None:
    m = _FLUENTD_3164.match(line)
    if not m:
        return None
    try:
        t = datetime.strptime(f"{datetime.now().year} {m['time'].decode()}", "%Y %b %d %H:%M:%S").timestamp()
    except ValueError:
        return None
    rec = {"host": m["host"], "ident": m["ident"], "message": m["message"]}
    if m["pid"]:
        rec["pid"] = m["pid"]
    return t, rec


def test_forward_in_tail_records_through_serve(scan: ScanCapture) -> None:
    from fluent import sender

    from util.service import ServiceThread

    lines = scan.rsyslog.files["traditional"].read_bytes().split(b"\n")[:-1]
    truth = _truth(scan)
    props = read_json_lines(scan.rsyslog.files["json"])
    sent: list[int] = []  # index of the line each record came from
    with ServiceThread({"listen": {"address": "127.0.0.1:0"}}) as svc:
        s = sender.FluentSender("syslog", host="127.0.0.1", port=svc.port, timeout=5.0, nanosecond_precision=True)
        for i, line in enumerate(lines):
            r = _in_tail_record(line)
            if r is None:
                continue
            assert s.emit_with_time("rsyslog", r[0], r[1]), s.last_error
            sent.append(i)
        s.close()
        deadline = time.monotonic() + 20
        while len(svc.stdout.lines()) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.05)
        got = [json.loads(x) for x in svc.stdout.lines()]
    assert len(got) == len(sent)
    # same records, same order (hosts are ASCII in every line)
    assert [o["record"]["host"] for o in got] == [
        _in_tail_record(lines[i])[1]["host"].decode("ascii") for i in sent  # type: ignore[index]
    ]
    s_ = score("fwd-in_tail", [truth[i] for i in sent], [props[i] for i in sent],
               [o["record"].get("probe") for o in got])
    REPORT.append(s_.line() + f"  ({len(lines) - len(sent)} lines dropped by the Fluentd parser)")
    assert not s_.false_positives, s_.problems()
    assert not s_.misnamed, s_.problems()
    assert not s_.missed, s_.problems()


def test_explain_text_names_the_scanner_source_and_listener(scan: ScanCapture) -> None:
    path = scan.rsyslog.files["json"]
    proc = subprocess.run([sys.executable, "-m", "probetag", "explain", str(path)], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    text = proc.stdout.decode()
    n = len(scan.truth)
    assert f"{n} lines (json format)" in text
    # the scan came from 127.0.0.1 over both transports, and the JSON output
    # names the inputs that received it
    assert "127.0.0.1: nmap" in text
    assert "received by: imtcp, imudp" in text
    internal_framing = sum(1 for p in read_json_lines(path)
                           if p["inputname"] == "rsyslogd" and ("Framing Error" in str(p["rawmsg"])
                                                                or "Incomplete frame" in str(p["rawmsg"])))
    assert f"{internal_framing} rsyslog framing-error lines" in text
