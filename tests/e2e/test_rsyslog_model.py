"""The rsyslog framing/sanitising model that ground truth relies on
(tests/util/rsyslog.py) against the real rsyslogd, and the private harness
itself. Fast: no nmap."""

from __future__ import annotations

import socket
import time

import pytest

from util.rsyslog import FORMATS, VARIANTS, PrivateRsyslog, read_json_lines, rsyslogd_path, tcp_pieces, udp_pieces

TCP_CASES = [
    b"GET / HTTP/1.0\r\n\r\n",  # CRLF lines: trailing #015, a lone #015 line
    b"HELP\r\n",
    b"\x00\x00\x00\x01abc",  # no LF: logged at close
    b"0\x84rest\n",  # count 0 + non-SP: two framing errors, LF framing resumes
    b"12 hello world!tail\n",  # octet-counted frame, then the rest
    b"123",  # digits to the end: lost
    b"abc\x00",  # trailing NUL removed
    b"2026-11-27 10:00:06 INFO a\n2026-11-27 10:00:07 INFO b\n",  # the date trap: lost
    b"x\n\n\ny\n",  # empty frames dropped
    b"\x00\n",  # NUL-only frame: an empty message
    b"5 ab\ncdXY\n",  # LF inside an octet-counted frame
    b"tab\there \x1b[0m \x7f \xc3\xa9 #015 literal\n",
]
UDP_CASES = [b"one\r\ntwo\r\n", b"trailing lf\n", b"nul at end\x00", b"\x16\x03\x01\x00\x05hello"]


@pytest.fixture(scope="module", params=list(VARIANTS))
def rsyslog(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    if rsyslogd_path() is None:
        pytest.fail("rsyslogd is not installed (./scripts/test installs it)")
    r = PrivateRsyslog(tmp_path_factory.mktemp("model"), variant=request.param)
    t0 = time.monotonic()
    r.start()
    startup = time.monotonic() - t0
    for c in TCP_CASES:
        with socket.create_connection(("127.0.0.1", r.port), timeout=5) as s:
            s.sendall(c)
            time.sleep(0.03)
        time.sleep(0.03)  # one connection after the other: log order = send order
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        for c in UDP_CASES:
            u.sendto(c, ("127.0.0.1", r.port))
            time.sleep(0.03)
    r.stop()
    yield r, startup
    r.cleanup()


def test_starts_fast_and_privately(rsyslog) -> None:  # type: ignore[no-untyped-def]
    r, startup = rsyslog
    assert startup < 2.0
    conf = r.conf_file.read_text()
    assert "imuxsock" not in conf and "imklog" not in conf
    assert 'address="127.0.0.1"' in conf and 'net.enableDNS="off"' in conf
    assert not r.pid_file.exists() or r.pid_file.parent == r.dir


def test_all_formats_have_the_same_lines(rsyslog) -> None:  # type: ignore[no-untyped-def]
    r, _ = rsyslog
    counts = {fmt: r.line_count(fmt) for fmt in FORMATS}
    assert len(set(counts.values())) == 1, counts
    assert counts["json"] == len(read_json_lines(r.capture_file))


def test_model_predicts_every_logged_message(rsyslog) -> None:  # type: ignore[no-untyped-def]
    r, _ = rsyslog
    recs = read_json_lines(r.capture_file)
    v = r.variant
    got_tcp = [str(x["rawmsg"]).encode("utf-8", "surrogateescape") for x in recs if x["inputname"] == "imtcp"]
    got_udp = [str(x["rawmsg"]).encode("utf-8", "surrogateescape") for x in recs if x["inputname"] == "imudp"]
    assert got_tcp == [p.rawmsg for c in TCP_CASES for p in tcp_pieces(c, v.octet_counting, v.escape)]
    assert got_udp == [p.rawmsg for c in UDP_CASES for p in udp_pieces(c, v.escape)]
    internal = [str(x["rawmsg"]) for x in recs if x["inputname"] == "rsyslogd"]
    if v.octet_counting:
        assert sum("Framing Error" in m for m in internal) == 3  # 0x84 (two) and '-' after 2026
        assert sum("Incomplete frame" in m for m in internal) >= 2  # "123" and the date trap
    else:
        assert not [m for m in internal if "Framing Error" in m or "Incomplete frame" in m]


def test_tag_ending_by_colon_keeps_the_payload_in_msg(rsyslog) -> None:  # type: ignore[no-untyped-def]
    r, _ = rsyslog
    recs = [x for x in read_json_lines(r.files["json"]) if x["inputname"] == "imtcp"]
    get = next(x for x in recs if str(x["rawmsg"]).startswith("GET "))
    if r.variant.tag_ending_by_colon:
        # FIELD_GUIDE 4: TAG "-" unless the token ends in ':', payload in MSG
        assert get["syslogtag"] == "-" and get["msg"] == get["rawmsg"][4:]
    else:
        assert get["hostname"] == "GET" and get["syslogtag"] == "/"


def test_model_without_octet_counting() -> None:
    assert [p.rawmsg for p in tcp_pieces(b"2026-11-27 a\n12 b\n", octet_counting=False)] == [
        b"2026-11-27 a", b"12 b"]
