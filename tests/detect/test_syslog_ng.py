"""syslog-ng's files (docs/collectors.md): the file formats, what syslog-ng
leaves of a payload, the pieces of a NUL-cut probe rebuilt into the whole
(``detect._runs``), continuation lines, and ``explain`` on them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from probetag import decode
from probetag._config import config_from_mapping
from probetag.detect import Detector, load_catalogue
from probetag.detect._engine import syslog_ng_tcp, syslog_ng_udp
from probetag.detect._runs import FragmentRuns, RunLine
from probetag.explain import Explainer

CAT = load_catalogue()
BY_ID = {s.id: s for s in CAT}
DET = Detector(CAT)
ROOT = Path(__file__).resolve().parents[2]


def test_cut_at_nul_and_lf_as_the_live_daemon_does():
    # observed (tests/util/syslog_ng.py): trailing CRs go, empty frames go,
    # a leading '*' goes, a frame that is only '<' is logged empty
    assert syslog_ng_tcp(b"*1\r\n$4\r\ninfo\r\n") == (b"1", b"$4", b"info")
    assert syslog_ng_tcp(b"AA\x00BB zz\n\x00\x00<\x00  x\r\r\n") == (b"AA", b"BB zz", b"", b"x")
    assert syslog_ng_tcp(b"<13>GET\n") == (b"GET",)
    assert syslog_ng_udp(b"\x00\x00\x10\x00\x00x\x00\x00") == b"\x10\x00\x00x"
    assert syslog_ng_udp(b"help\r\n\r\n") == b"help\r\n\r"


def test_request_line_without_cr_is_distinctive_in_syslog_ng_files_only():
    sng = DET.match(b"GET / HTTP/1.0", collector="syslog-ng")
    assert sng and not sng[0].ambiguous and sng[0].signature.probe == "GetRequest"
    assert all(m.ambiguous for m in DET.match(b"GET / HTTP/1.0"))


def _file(lines: list[bytes]) -> bytes:
    return b"".join(b"Dec  5 17:14:%02d 127.0.0.1 " % (30 + k // 10) + x + b"\n" for k, x in enumerate(lines))


def test_file_format_is_told_by_syslog_ngs_own_lines():
    own = b"Dec  5 17:13:32 vm syslog-ng[16125]: syslog-ng starting up; version='3.38.1'"
    assert decode.detect_file_format([own, b"Dec  5 17:13:45 127.0.0.1 GET / HTTP/1.0"]) == "syslog-ng"
    iso = b"2026-12-05T17:13:32+00:00 vm syslog-ng[16125]: syslog-ng starting up"
    assert decode.detect_file_format([iso, b"2026-12-05T17:13:45+00:00 127.0.0.1 x"]) == "syslog-ng-iso"
    # a relayed syslog-ng line in rsyslog's file: rsyslog escapes control bytes
    assert decode.detect_file_format([own, b"Dec  5 17:13:45 127.0.0.1 GET / HTTP/1.0#015"]) == "traditional"


def test_payload_is_read_as_received():
    rec = decode.parse_syslog_line(b"Dec  5 17:14:30 127.0.0.1 help#015 now", "syslog-ng").record
    rb = decode.rebuild(rec)
    assert rb is not None and rb.line == b"help#015 now" and rb.source == "127.0.0.1" and rb.shape == "syslog-ng"
    bad = b"Dec  5 17:14:30 127.0.0.1 syslog-ng[16091]: Error processing log message: < NTP/1.2 >"
    assert decode.rebuild(decode.parse_syslog_line(bad, "syslog-ng").record).line == b"< NTP/1.2 >"
    cont = decode.parse_syslog_line(b"Via: SIP/2.0/TCP nm;branch=foo\r", "syslog-ng")
    assert cont.record["_continuation"] is True and cont.host is None


def test_a_run_of_pieces_is_named_as_the_whole_payload():
    sig = BY_ID["nmap-tcp-SSLSessionReq"]
    cores = DET.syslog_ng_cores(sig.id)
    assert len(cores) > 20
    runs = FragmentRuns(DET)
    lines = [RunLine(100.0, "127.0.0.1", c, frozenset()) for c in cores]
    # another sender's line in between changes nothing; the last piece comes at close
    lines.insert(5, RunLine(100.0, "127.0.9.4", b"backup finished", frozenset()))
    lines[-1] = RunLine(105.0, "127.0.0.1", cores[-1], frozenset())
    got = runs.name(lines)
    assert got[5] is None
    named = [g for k, g in enumerate(got) if k != 5]
    assert all(g is not None and g[0].probe == "SSLSessionReq" for g in named)
    assert [g[1] for g in named] == list(range(len(cores)))  # type: ignore[index]
    # the same pieces, one missing: not a whole payload, no name
    partial = [RunLine(100.0, "127.0.0.1", c, frozenset()) for c in cores[:-3] + cores[-2:]]
    assert runs.name(partial) == [None] * len(partial)


def test_pieces_that_are_no_name_together_are_a_run_only_on_consecutive_lines():
    # DNSStatusRequestTCP is \x0c and \x10 once cut at its NULs: too few
    # bytes to name anything wherever they are, but one read of one
    # connection on the sender's next two lines is that probe whole.
    cores = DET.syslog_ng_cores("nmap-tcp-DNSStatusRequestTCP")
    assert cores == (b"\x0c", b"\x10")
    runs = FragmentRuns(DET)
    other = RunLine(100.0, "127.0.9.4", b"backup finished", frozenset())
    tight = [RunLine(100.0, "127.0.0.1", cores[0], frozenset()), other,
             RunLine(100.0, "127.0.0.1", cores[1], frozenset())]
    got = runs.name(tight)
    assert [g and (g[0].probe, g[1]) for g in got] == [("DNSStatusRequestTCP", 0), None, ("DNSStatusRequestTCP", 1)]
    # a line of the same sender between them, or a second between them
    # (the last piece of a run with distinctive bytes could be that late)
    between = RunLine(100.0, "127.0.0.1", b"\x01", frozenset())
    assert runs.name([tight[0], between, tight[2]]) == [None] * 3
    late = RunLine(102.0, "127.0.0.1", cores[1], frozenset())
    assert runs.name([tight[0], late]) == [None] * 2
    # printable pieces that are no name together are never a run
    assert all(any(b < 0x20 or b >= 0x7F for b in piece) for tight_cores in runs._tight for piece in tight_cores)


def test_a_run_stamped_seconds_apart_by_a_busy_logger_is_still_named():
    # syslog-ng stamps a read's pieces as it parses them (ten per pass): a
    # busy daemon stamps the later pieces of one read seconds after the first
    sig = BY_ID["nmap-tcp-WMSRequest"]
    cores = DET.syslog_ng_cores(sig.id)
    assert len(cores) > 40
    runs = FragmentRuns(DET)

    def run(stall_at: int, stall: float, between: bytes | None = None) -> list[RunLine]:
        out = [RunLine(100.0 + (stall if k >= stall_at else 0.0), "127.0.0.1", c, frozenset())
               for k, c in enumerate(cores[:-1])]
        out.append(RunLine(out[-1].t + 5.0, "127.0.0.1", cores[-1], frozenset()))  # at close
        if between is not None:
            out.insert(stall_at, RunLine(100.0 + stall, "127.0.0.1", between, frozenset()))
        return out

    for stall in (2.0, 4.0, 8.0):
        got = runs.name(run(30, stall))
        assert all(g is not None and g[0].probe == "WMSRequest" for g in got), stall
        assert [g[1] for g in got] == list(range(len(cores)))  # type: ignore[index]
    # not when another line of that sender came in the pause (another
    # connection's: the pieces after it need not be this one's) ...
    assert runs.name(run(30, 4.0, b"backup finished")) == [None] * (len(cores) + 1)
    # ... nor a pause longer than a connection's wait for its close
    assert runs.name(run(30, 20.0)) == [None] * len(cores)


def test_a_close_logged_after_the_next_probes_pieces_still_ends_its_run():
    # The daemon reads one connection's close and the next connection's data
    # in no fixed order: the last piece of WMSRequest (the bytes after its
    # last NUL, logged at close) can come after the pieces of the probe nmap
    # sent next, more lines than a run steps over otherwise.
    wms = DET.syslog_ng_cores("nmap-tcp-WMSRequest")
    ssl = DET.syslog_ng_cores("nmap-tcp-SSLSessionReq")
    assert len(ssl) > 8
    runs = FragmentRuns(DET)
    lines = [RunLine(100.0, "127.0.0.1", c, frozenset()) for c in wms[:-1]]
    lines += [RunLine(105.0, "127.0.0.1", c, frozenset()) for c in ssl[:-1]]
    lines.append(RunLine(105.0, "127.0.0.1", wms[-1], frozenset()))  # WMSRequest's close
    lines.append(RunLine(110.0, "127.0.0.1", ssl[-1], frozenset()))  # SSLSessionReq's
    got = runs.name(lines)
    names = [g[0].probe if g is not None else None for g in got]
    assert names == ["WMSRequest"] * (len(wms) - 1) + ["SSLSessionReq"] * (len(ssl) - 1) \
        + ["WMSRequest", "SSLSessionReq"]
    assert [g[1] for g in got[:len(wms) - 1]] + [got[-2][1]] == list(range(len(wms)))  # type: ignore[index]
    # a close piece no later than CLOSE_WAIT: one 20 s on ends no run
    late = lines[:len(wms) - 1] + [RunLine(121.0, "127.0.0.1", wms[-1], frozenset())]
    assert runs.name(late) == [None] * len(late)


def test_explain_names_cut_and_continued_lines_and_not_benign(tmp_path: Path):
    ssl = DET.syslog_ng_cores("nmap-tcp-SSLSessionReq")
    head = [b"Dec  5 17:13:32 vm syslog-ng[16125]: syslog-ng starting up; version='3.38.1'"]
    benign = [b"Dec  5 17:14:20 127.0.9.4 app[12]: GET / HTTP/1.0 took 2 ms",
              b"Dec  5 17:14:21 127.0.9.4 app[12]: \x1b[32mok\x1b[39m"]
    udp_help = [b"Dec  5 17:14:25 127.0.0.1 help\r", b"\r"]
    body = head + benign + [b"Dec  5 17:14:29 127.0.0.1 GET / HTTP/1.0",
                            b"Dec  5 17:14:29 127.0.0.1 OPTIONS / HTTP/1.0"] + udp_help
    data = b"\n".join(body) + b"\n" + _file(list(ssl))
    path = tmp_path / "syslog"
    path.write_bytes(data)
    proc = subprocess.run([sys.executable, "-m", "probetag", "explain", "--format", "jsonl", "--jobs", "1", str(path)],
                          capture_output=True, timeout=120, env={"PYTHONPATH": str(ROOT / "plugin")})
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(x)["probe"] for x in proc.stdout.splitlines()]
    assert out[0] is None and out[1] is None and out[2] is None
    assert out[3]["name"] == "GetRequest" and out[4]["name"] == "HTTPOptions"
    assert out[5]["name"] == "Help" and out[6] is out[6] and out[6]["name"] == "Help"
    rest = out[7:]
    assert all(p is not None and p["name"] == "SSLSessionReq" and p["scanner"] == "nmap" for p in rest)
    assert {p["via"] for p in rest} == {"reassembled"}


def test_explainer_reads_on_around_a_hit():
    # no piece of TLSSessionReq but the first holds a prefilter literal
    tls = DET.syslog_ng_cores("nmap-tcp-TLSSessionReq")
    data = bytearray(b"Dec  5 17:13:32 vm syslog-ng[1]: syslog-ng starting up\n" + _file([b"GET / HTTP/1.0"] + list(tls)))
    ex = Explainer(config_from_mapping({}), "syslog-ng")
    n, found = ex.block(data[:-1])
    assert n == len(tls) + 2
    assert sorted(found) == list(range(1, n))
