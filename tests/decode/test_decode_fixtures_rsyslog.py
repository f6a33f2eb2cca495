"""Golden tests over tests/fixtures/rsyslog: a real nmap -sS/-sU -sV run
plus benign traffic, logged by rsyslog 8.2302 in four formats, with the
bytes of every flow (wire.jsonl) and each line's label (truth.jsonl).

The expected message of a line is taken from the wire, not from probetag:
the flow's bytes, framed as rsyslog frames them (test_decode_golden.frames),
picking the frame whose rsyslog escaping equals the line's ``rawmsg``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from probetag.decode import detect_file_format, escape, parse_syslog_line, rebuild

from test_decode_golden import frames  # noqa: E402  (same folder, no package)

DIR = Path(__file__).resolve().parents[1] / "fixtures" / "rsyslog"
TRUTH = [json.loads(line) for line in (DIR / "truth.jsonl").read_text().splitlines()]
WIRE = {w["flow"]: w for w in map(json.loads, (DIR / "wire.jsonl").read_text().splitlines())}
FORMATS = {"json": "json", "traditional": "traditional", "rfc3339": "rfc3339", "rfc5424": "rfc5424"}


def lines(name: str) -> list[bytes]:
    return (DIR / f"{name}.log").read_bytes().split(b"\n")[:-1]


def sent(i: int) -> bytes | None:
    """The message the sender sent for line i (0-based), from the wire."""
    t = TRUTH[i]
    if t["flow"] is None:
        return None
    w = WIRE[t["flow"]]
    raw = parse_syslog_line(lines("json")[i]).record["rawmsg"]
    hits = [f for f in frames(bytes.fromhex(w["payload_hex"]), w["transport"], True) if escape(f) == raw]
    assert hits, (i, raw)
    return hits[0]


def test_files_line_up_with_the_truth():
    for name in FORMATS:
        assert len(lines(name)) == len(TRUTH), name
    assert sum(t["kind"] == "probe" for t in TRUTH) >= 50


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_line_parses_and_rebuilds(name):
    ls = lines(name)
    assert detect_file_format(ls) == FORMATS[name]
    for line in ls:
        p = parse_syslog_line(line)
        assert p.fmt == FORMATS[name], line
        rb = rebuild(p.record)
        assert rb is not None
        assert rb.lossy or FORMATS[name] != "rfc5424"


def test_json_rawmsg_rebuilds_what_was_sent():
    # every line with a flow, probes and benign alike: escaped control bytes
    # decoded, literal '#015' prose kept literal
    checked = 0
    for i, line in enumerate(lines("json")):
        want = sent(i)
        if want is None:
            continue
        rb = rebuild(parse_syslog_line(line).record)
        assert rb.shape == "rsyslog-rawmsg" and rb.source == "127.0.0.1"
        assert rb.line == want, (i + 1, TRUTH[i], rb)
        checked += 1
    assert checked == sum(t["flow"] is not None for t in TRUTH)


def test_json_prose_with_hash_digits_stays_literal():
    prose = [i for i, line in enumerate(lines("json"))
             if TRUTH[i]["kind"] == "benign" and b"#0" in parse_syslog_line(line).record["rawmsg"]]
    for i in prose:
        rb = rebuild(parse_syslog_line(lines("json")[i]).record)
        if b"#0" in sent(i):  # typed by the application
            assert rb.dialect is None and rb.line == sent(i)


@pytest.mark.parametrize("name", ["traditional", "rfc3339"])
def test_probe_lines_rebuild_from_file_formats(name):
    probes = primary = 0
    for i, line in enumerate(lines(name)):
        if TRUTH[i]["kind"] != "probe":
            continue
        want = sent(i)
        rb = rebuild(parse_syslog_line(line).record)
        assert want in (rb.line, *rb.alternatives), (i + 1, TRUTH[i]["probe"], line, rb)
        probes += 1
        primary += rb.line == want
    assert probes == sum(t["kind"] == "probe" for t in TRUTH)
    assert primary == probes, (primary, probes)


def test_probe_lines_from_rfc5424_keep_what_survived():
    # RFC 5424 keeps APP-NAME and MSG only: the rebuilt line is empty (all
    # TAG, no programname), a prefix-sharing reading, or a piece of the probe.
    for i, line in enumerate(lines("rfc5424")):
        if TRUTH[i]["kind"] != "probe":
            continue
        want = sent(i)
        rb = rebuild(parse_syslog_line(line).record)
        assert rb.lossy
        readings = [r for r in (rb.line, *rb.alternatives) if r]
        assert not rb.line or any(want.startswith(r[:1]) or r in want for r in readings), (i + 1, rb)


def test_framing_errors_are_read_from_internal_lines():
    from probetag.decode import parse_framing_error

    errors = [(i, parse_framing_error(line)) for i, line in enumerate(lines("rfc3339"))]
    errors = [(i, e) for i, e in errors if e is not None]
    assert errors and all(TRUTH[i]["kind"] == "internal" for i, _ in errors)
    assert {e.kind for _, e in errors} == {"delimiter", "zero-count", "incomplete"}
    assert all(e.ip == "127.0.0.1" for _, e in errors if e.kind != "incomplete")
    # no probe or benign line is mistaken for one
    assert all(parse_framing_error(line) is None
               for i, line in enumerate(lines("json")) if TRUTH[i]["kind"] != "internal")
