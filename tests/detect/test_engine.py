"""The matching engine on every shape a probe takes once rsyslog has logged it.

Log lines are built here from the catalogue payloads by the FIELD_GUIDE rules
(independently of the engine's own derivation), then matched.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probetag.detect._catalogue import Signature, load_catalogue
from probetag.detect._engine import _COMMON_LINES, DEFAULT_CONFIDENCE, Detector
from probetag.detect._prefilter import LiteralSet, available_backends

CATALOGUE = load_catalogue()
PAYLOAD_SIGS = [s for s in CATALOGUE if s.match == "payload"]


def sig(id: str, payload: bytes, *, transport: str = "tcp", probe: str | None = None,
        scanner: str = "test", match: str = "payload", confidence: float | None = None) -> Signature:
    return Signature(id=id, probe=probe or id, scanner=scanner, transport=transport, payload=payload,
                     match=match, confidence=confidence, ports=(), provenance="test", notes="",
                     source="test")


# -- the FIELD_GUIDE rules, written out for the tests -------------------------

def tcp_lines(payload: bytes) -> list[bytes]:
    """imtcp LF framing: cut at LF, LF removed, CR kept, empty frames dropped,
    a final NUL removed (FIELD_GUIDE 1, 2.1)."""
    out = []
    for part in payload.split(b"\n"):
        if part.endswith(b"\0"):
            part = part[:-1]
        if part:
            out.append(part)
    return out


def udp_line(payload: bytes) -> bytes:
    if payload.endswith(b"\0"):
        payload = payload[:-1]
    return payload[:-1] if payload.endswith(b"\n") else payload


def ids(matches) -> list[str]:
    return [m.signature.id for m in matches]


def best(matches):
    assert matches, "no match"
    return matches[0]


# Binary and text test signatures covering what the seed catalogue lacks.
BIN_SPLIT = sig("bin-split", b"\x16\x03\x01\x00\x8f\x01\x00\x00\x8b\x03\x03\nZ\x9c\xe1\x00\x11\x22\x33\x44\x55\x66")
UDP_SIP = sig("udp-sip", b"OPTIONS sip:nm SIP/2.0\r\nVia: SIP/2.0/UDP nm;branch=foo\r\nCall-ID: 50000\r\n\r\n",
              transport="udp", scanner="nmap")
NUL_END = sig("nul-end", b"\x00\x00\x00\xa4\xff\x53\x4d\x42\x72\x00\x00\x00\x00\x08\x01\x40\x00")
DIGITS = sig("digits", b"0\x84\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x06\x00\x01\xab\xcd\xef")
ONE_SP = sig("one-space", b"1 HELLO-PROBE v2 \x01\x02\x03 end\r\n")
LONG_BIN = sig("long-bin", bytes(range(0x80, 0x100)) * 5 + b"\x00\x01tail-of-the-probe")
HIGH = sig("high-bytes", b"\x80\x81zgrab\xfe\xffhandshake\xc3(bad utf8)\r\n")
MARKER = sig("ua-marker", b"Nmap Scripting Engine", match="marker", scanner="nmap")
EXTRA = [BIN_SPLIT, UDP_SIP, NUL_END, DIGITS, ONE_SP, LONG_BIN, HIGH, MARKER]


@pytest.fixture(scope="module", params=available_backends())
def det(request) -> Detector:
    return Detector(CATALOGUE + tuple(EXTRA), backend=request.param)


# -- every fragment kind --------------------------------------------------------

@pytest.mark.parametrize("s", PAYLOAD_SIGS, ids=lambda s: s.id)
def test_every_catalogue_tcp_line_matches_its_probe(det, s):
    assert s.transport in ("tcp", "any", "udp")
    lines = tcp_lines(s.payload) if s.transport != "udp" else [udp_line(s.payload)]
    assert lines
    for i, line in enumerate(lines):
        got = det.match(line)
        mine = [m for m in got if m.signature.id == s.id]
        assert mine, (line, ids(got))
        assert mine[0].kind == "exact"
        if (len(line.strip()) >= 8 and re.search(rb"[^A-Za-z0-9]", line.strip())
                and line.strip() not in _COMMON_LINES):
            assert not mine[0].ambiguous
            assert mine[0].confidence >= 0.5


def test_header_lines_every_http_client_sends_are_not_distinctive(det):
    # curl, whatweb, sqlmap and masscan all send it (tests/fixtures/tools)
    got = det.match(b"Accept: */*\r")
    assert got and all(m.ambiguous for m in got)


def test_request_line_names_the_probe(det):
    got = det.match(b"GET / HTTP/1.0\r")
    m, = [m for m in got if m.signature.id == "nmap-tcp-GetRequest"]
    assert (m.signature.probe, m.signature.scanner, m.kind, m.fragment) == ("GetRequest", "nmap", "exact", 0)
    assert not m.ambiguous and m.confidence >= 0.5
    # Every candidate is a scanner request that starts with this line.
    assert all(s.payload.startswith(b"GET / HTTP/1.0\r\n") for s in (x.signature for x in got))
    m = best(det.match(b"OPTIONS / RTSP/1.0\r"))
    assert m.signature.probe == "RTSPRequest"


def test_lone_cr_is_ambiguous_and_low(det):
    got = det.match(b"\r")
    assert "nmap-tcp-GetRequest" in ids(got)
    assert all(m.ambiguous and m.confidence < 0.5 for m in got)
    assert {m.fragment for m in got if m.signature.id == "nmap-tcp-GetRequest"} == {1}


def test_binary_split_at_arbitrary_lf(det):
    first, second = tcp_lines(BIN_SPLIT.payload)
    assert ids(det.match(first))[0] == "bin-split"
    m = best(det.match(second))
    assert (m.signature.id, m.fragment) == ("bin-split", 1)


def test_udp_payload_is_one_line_with_inner_crlf(det):
    line = udp_line(UDP_SIP.payload)
    assert b"\r\n" in line
    m = best(det.match(line))
    assert (m.signature.id, m.kind, m.ambiguous) == ("udp-sip", "exact", False)
    # Transport filter: a UDP-only signature is not offered for a TCP line.
    assert "udp-sip" not in ids(det.match(line, transport="tcp"))
    assert "udp-sip" in ids(det.match(line, transport="udp"))


def test_trailing_nul_removed(det):
    line = tcp_lines(NUL_END.payload)[0]
    assert not line.endswith(b"\0")
    assert best(det.match(line)).signature.id == "nul-end"


def test_octet_counting_eats_digits_and_next_byte(det):
    line = DIGITS.payload[2:]  # "0" and 0x84 consumed by imtcp
    m = best(det.match(line))
    assert (m.signature.id, m.kind) == ("digits", "damaged")
    assert not m.ambiguous and m.confidence >= 0.5


@pytest.mark.parametrize("n, probe", [(32, "LDAPSearchReq"), (37, "LDAPBindReq")])
def test_escaping_off_nul_rule_after_octet_counting(det, n, probe):
    # Real lines (tests/fixtures/corpus-dev, escaping off): imtcp ate the
    # frame's leading ``0`` and the byte after it, then rsyslog's NUL rule
    # dropped the control bytes after the first NUL (FIELD_GUIDE 1, 2.2).
    path = Path(__file__).resolve().parents[1] / "fixtures" / "corpus-dev" / "noescape_nmap_sV_all" / "traditional.log"
    raw = path.read_bytes().split(b"\n")[n - 1]
    line = raw.split(b" 127.0.0.1 ", 1)[1].rstrip(b" ").replace(b"#000", b"\0")
    m = best(det.match(line, transport="tcp"))
    assert (m.signature.probe, m.kind) == (probe, "damaged")
    assert not m.ambiguous


def test_escaping_off_marker_after_the_nul_rule(det):
    # rpc-grind (tests/fixtures/corpus-dev, escaping off, line 160): the
    # control bytes of its program number 100000 (\x00\x01\x86\xa0) went
    # with the NUL rule; the marker is found as the rule left it.
    path = Path(__file__).resolve().parents[1] / "fixtures" / "corpus-dev" / "noescape_nmap_sV_all" / "traditional.log"
    raw = path.read_bytes().split(b"\n")[159]
    line = raw.split(b" 127.0.0.1 ", 1)[1].rstrip(b" ").replace(b"#000", b"\0")
    assert b"\x01\x86\xa0" not in line and b"\x00\x86\xa0" in line
    m = best(det.match(line, transport="tcp"))
    assert (m.signature.probe, m.kind) == ("rpc-grind", "marker")
    # no NUL before the marker's control bytes: the rule never ran, and the
    # filtered bytes alone (a line of NULs and 0x86 0xa0) are no marker
    assert not any(x.kind == "marker" for x in det.match(b"\x86\xa0 text \x86\xa0 more text"))


def test_two_byte_values_inside_a_line_name_no_probe(det):
    # iax2-version with escaping off is \x80 and nine NULs; that run sits
    # inside ibm-db2's payload (corpus-dev noescape proto23.log line 79),
    # which was named iax2-version
    run = b"\x80" + b"\x00" * 9
    line = b"\x00\x00\x00\xb6\x00SQLDB2RA\x00" + run + b"@\x00\x00\x00\x01\x00"
    assert not any(m.signature.probe == "iax2-version" for m in det.match(line, lossy=True))
    assert any(m.signature.probe == "iax2-version" for m in det.match(run))  # the line itself still is


def test_rfc5424_version_rule_eats_one_space(det):
    line = tcp_lines(ONE_SP.payload)[0][2:]
    m = best(det.match(line))
    assert (m.signature.id, m.kind) == ("one-space", "damaged")


def test_tag_cut_at_510_bytes(det):
    full = tcp_lines(LONG_BIN.payload)[0]
    assert len(full) > 510
    line = full[:510]
    m = best(det.match(line))
    assert (m.signature.id, m.kind) == ("long-bin", "truncated")
    assert m.confidence >= 0.5


def test_utf8_replacement(det):
    line = tcp_lines(HIGH.payload)[0].decode("utf-8", "replace").encode("utf-8")
    assert "\ufffd".encode() in line
    m = best(det.match(line))
    assert (m.signature.id, m.kind) == ("high-bytes", "damaged")


def test_rfc5424_printable_prefix(det):
    # SyslogProtocol23Format keeps only the printable prefix (FIELD_GUIDE 3).
    m = best(det.match(b"GET /nice%20ports%2C/Tri"))
    assert (m.signature.probe, m.kind) == ("FourOhFourRequest", "truncated")
    assert m.confidence >= 0.5


def test_prefix_shared_by_probes_is_ambiguous():
    d = Detector([sig("a", b"XPROBE common request prefix, variant Alpha\r\n"),
                  sig("b", b"XPROBE common request prefix, variant Bravo\r\n")])
    got = d.match(b"XPROBE common request prefix")
    assert sorted(ids(got)) == ["a", "b"]
    assert all(m.ambiguous and m.kind == "truncated" for m in got)
    # One probe only: not ambiguous.
    m, = d.match(b"XPROBE common request prefix, variant Al")
    assert (m.signature.id, m.kind, m.ambiguous) == ("a", "truncated", False)


def test_short_text_prefix_says_nothing(det):
    assert det.match(b"OPTIONS / ") == []


def test_piece_at_start_of_longer_line_is_prefix(det):
    m = best(det.match(b"GET /nice%20ports%2C/Tri%6Eity.txt%2ebak HTTP/1.0\r trailing junk"))
    assert (m.signature.probe, m.kind) == ("FourOhFourRequest", "prefix")


def test_marker_anywhere(det):
    m = best(det.match(b'10.0.0.9 - - "GET /x HTTP/1.1" 404 "Mozilla/5.0 (compatible; Nmap Scripting Engine)"'))
    assert (m.signature.id, m.kind, m.ambiguous) == ("ua-marker", "marker", False)


def test_binary_piece_inside_line_is_damaged(det):
    line = b"xx" + tcp_lines(NUL_END.payload)[0]
    m = best(det.match(line))
    assert (m.signature.id, m.kind) == ("nul-end", "damaged")


def test_alternatives_tried_after_line(det):
    got = det.match(b"GET / HTTP/1.0#015", alternatives=(b"GET / HTTP/1.0\r",))
    assert "nmap-tcp-GetRequest" in ids(got)
    assert det.match(b"GET / HTTP/1.0#015") == []


NEAR_MISSES = [
    b'nginx: 10.0.0.1 - - [27/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 612 "-" "curl/8.0"',
    b"proxy: upstream sent GET / HTTP/1.0\r",
    b'{"level":"info","msg":"request GET / HTTP/1.0 done","status":200}',
    b"the sequence #015 is how rsyslog writes a carriage return",
    b"key=value\tuser=alice\tstatus=ok",
    b"Windows service started successfully\r",
    b"\xc3\xa9v\xc3\xa9nement enregistr\xc3\xa9 \xe2\x80\x94 caf\xc3\xa9 ouvert",
    b"kernel: [12345.678] eth0: link up, 1000Mbps, full-duplex",
    b"sshd[812]: Accepted publickey for root from 10.0.0.5 port 50122",
    b"GET",
    b"GET / HTTP/1.0",  # a request line without rsyslog's CR: quoted, not received
    b"2026-11-27 12:00:00 INFO started",
]


@pytest.mark.parametrize("line", NEAR_MISSES)
def test_benign_near_misses_do_not_match(det, line):
    got = det.match(line)
    assert all(m.ambiguous and m.confidence < 0.5 for m in got), [(m.signature.id, m.kind) for m in got]
    if line not in (b"GET", b"GET / HTTP/1.0"):
        assert got == []


# -- backends agree -----------------------------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pats=st.lists(st.binary(min_size=1, max_size=6), min_size=1, max_size=25),
       data=st.binary(max_size=200), glue=st.lists(st.integers(0, 24), max_size=8))
def test_literal_backends_agree(pats, data, glue):
    # Plant some of the patterns in the data so there is something to find.
    for g in glue:
        data += pats[g % len(pats)] + data[:3]
    results = {b: LiteralSet(pats, b).find(data) for b in available_backends()}
    ref = results["re"]
    # Independent oracle.
    expect = sorted((i, k) for k, p in enumerate(pats) for i in range(len(data)) if data.startswith(p, i))
    assert ref == expect
    for b, got in results.items():
        assert got == ref, b


_ALL = CATALOGUE + tuple(EXTRA)
_DETECTORS = {b: Detector(_ALL, backend=b) for b in available_backends()}
_PIECES = sorted({p for s in _ALL for p in tcp_lines(s.payload)} | {udp_line(s.payload) for s in _ALL})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(st.one_of(st.sampled_from(_PIECES), st.binary(max_size=12)), min_size=1, max_size=4),
       cut=st.integers(0, 600))
def test_engine_backends_agree_on_generated_lines(parts, cut):
    line = b"".join(parts)
    line = line[:cut] if cut < len(line) and cut > 0 else line
    seen = {}
    for b, d in _DETECTORS.items():
        seen[b] = [(m.signature.id, m.fragment, m.kind, m.confidence, m.ambiguous) for m in d.match(line)]
    ref = seen["re"]
    for b, got in seen.items():
        assert got == ref, b


def test_backends_available():
    # hyperscan and pyahocorasick are project dependencies: a missing one must
    # fail here rather than silently test only the fallback.
    assert available_backends() == ("hyperscan", "ahocorasick", "re")


# -- lossy records: one gap where the TAG beyond APP-NAME was -------------------------------

SIP_TCP = sig("sip-tcp", b"OPTIONS sip:nm SIP/2.0\r\nVia: SIP/2.0/TCP nm;branch=foo\r\n\r\n")


def test_gapped_match_only_for_lossy_records():
    d = Detector([SIP_TCP, sig("get", b"GET / HTTP/1.0\r\n\r\n"),
                  sig("get404", b"GET /nice%20ports%2C/Tri%6Eity.txt%2ebak HTTP/1.0\r\n\r\n")])
    # RFC 5424 output: HOSTNAME "OPTIONS", APP-NAME "sip" (the ':' is lost), MSG.
    assert d.match(b"OPTIONS sipnm SIP/2.0\r") == []
    m = best(d.match(b"OPTIONS sipnm SIP/2.0\r", lossy=True))
    assert (m.signature.id, m.fragment, m.kind, m.ambiguous) == ("sip-tcp", 0, "damaged", False)
    assert m.confidence >= 0.5
    m = best(d.match(b"Via SIP/2.0/TCP nm;branch=foo\r", lossy=True))
    assert (m.signature.id, m.fragment) == ("sip-tcp", 1)
    # The lost TAG of a request line is its path: several GET probes fit.
    got = d.match(b"GET  HTTP/1.0\r", lossy=True)
    assert sorted(ids(got)) == ["get", "get404"] and all(m.ambiguous for m in got)
    # A gap with a space in it is not a TAG: no match.
    assert d.match(b"OPTIONS SIP/2.0\r", lossy=True) == []


def test_match_best_prefers_a_distinctive_reading():
    d = Detector([sig("help", b"HELP\r\n"), SIP_TCP])
    # The first reading is only ambiguous; a later one is distinctive.
    cand, got = d.match_best([b"HELP\r", b"OPTIONS sip:nm SIP/2.0\r"])
    assert cand == b"OPTIONS sip:nm SIP/2.0\r" and ids(got) == ["sip-tcp"]
    # With nothing better, the ambiguous reading is returned for correlation.
    cand, got = d.match_best([b"nothing here", b"HELP\r"])
    assert cand == b"HELP\r" and all(m.ambiguous for m in got)
    assert d.match_best([b"nothing here"]) == (b"", [])
    # Exact readings win over gapped ones even when the gapped one comes first.
    cand, got = d.match_best([b"OPTIONS sipnm SIP/2.0\r", b"OPTIONS sip:nm SIP/2.0\r"], lossy=True)
    assert cand == b"OPTIONS sip:nm SIP/2.0\r" and got[0].kind == "exact"


MARKER_SIGS = [s for s in CATALOGUE if s.match == "marker"]


@pytest.mark.parametrize("s", MARKER_SIGS, ids=lambda s: s.id)
def test_every_catalogue_marker_found_inside_a_line(det, s):
    assert b"\n" not in s.payload or s.transport == "udp"
    line = b"10.0.0.7 - prefix " + s.payload + b" suffix"
    got = [m for m in det.match(line) if m.signature.id == s.id]
    assert got and got[0].kind == "marker" and not got[0].ambiguous
    # As sure as the catalogue says (less when other probes share the marker).
    base = s.confidence if s.confidence is not None else DEFAULT_CONFIDENCE
    assert 0.8 * base <= got[0].confidence <= base


def test_gapped_match_when_app_name_is_shorter_than_the_head():
    # RFC 5424: APP-NAME "To" / "Max-Forwards", the TAG's ':' lost; the gap
    # starts inside the first three bytes, or the kept tail is short.
    d = Detector([sig("sip-tcp", b"OPTIONS sip:nm SIP/2.0\r\nVia: SIP/2.0/TCP nm;branch=foo\r\n"
                                 b"To: <sip:nm2@nm2>\r\nMax-Forwards: 70\r\n\r\n")])
    m = best(d.match(b"To <sip:nm2@nm2>\r", lossy=True))
    assert (m.signature.id, m.fragment, m.kind, m.ambiguous) == ("sip-tcp", 2, "damaged", False)
    m = best(d.match(b"Max-Forwards 70\r", lossy=True))
    assert (m.signature.id, m.ambiguous) == ("sip-tcp", False)
    assert d.match(b"Max-Forwards 70\r") == []  # only for records known to miss bytes
    assert d.match(b"Max 70\r", lossy=True) == []  # neither side long enough to mean anything


def test_gap_with_spaces_only_when_it_ends_at_a_colon():
    # Fluentd's separator [^:]*: swallowed ' \x00:' after a binary ident
    payload = b"\x00Z\x00\x00\x01\x00\x00\x00\x016\x01 \x00:\x00\x00\x00\x00\x00\x004\xe6\x00\x00"
    d = Detector([sig("tns", payload)])
    m = best(d.match(payload.replace(b" \x00:", b""), lossy=True))
    assert (m.signature.id, m.kind) == ("tns", "damaged")


def test_same_bytes_in_two_families_are_not_a_doubt_and_the_service_probe_wins():
    a = Signature(id="z-sv", probe="SNMPv3GetRequest", scanner="nmap", transport="udp",
                  payload=b"0:\x02\x01\x030\x0f\x02\x02Ji\x02\x03\x00\xff\xe3", match="payload",
                  confidence=None, ports=(), provenance="t", family="service-probe")
    b = Signature(id="a-scan", probe="udp-scan-payload/161", scanner="nmap", transport="udp",
                  payload=a.payload, match="payload", confidence=None, ports=(), provenance="t",
                  family="udp-payload")
    for d in (Detector([a, b]), Detector([b, a])):
        got = d.match(b"0\x02\x01\x030\x0f\x02\x02Ji\x02\x03\x00\xff\xe3", lossy=True)  # ':' lost
        assert got[0].signature.probe == "SNMPv3GetRequest" and not got[0].ambiguous
        assert d.match(a.payload)[0].signature.probe == "SNMPv3GetRequest"


def test_gap_of_colon_and_dropped_first_space():
    # RFC 5424 output of remove.msgFirstSpace="on": APP-NAME "Via", then MSG
    # without its first space; the TAG's ':' and that space are the gap
    d = Detector([SIP_TCP])
    m = best(d.match(b"ViaSIP/2.0/TCP nm;branch=foo\r", lossy=True))
    assert (m.signature.id, m.fragment, m.ambiguous) == ("sip-tcp", 1, False)
    assert d.match(b"Via nm;branch=foo\r", lossy=True) == []  # a longer gap with a space: no


# -- lines that hold only rsyslog's MSG (%FROMHOST% %msg%) ---------------------

def test_rsyslog_msg_follows_the_rfc3164_parser():
    from probetag.detect._engine import rsyslog_msg

    assert rsyslog_msg(b"GET / HTTP/1.0\r") == b" HTTP/1.0\r"  # HOSTNAME GET, TAG /
    assert rsyslog_msg(b"OPTIONS sip:nm SIP/2.0\r") == b"nm SIP/2.0\r"  # TAG sip:
    assert rsyslog_msg(b"Cookie: mstshash=nmap\r") == b" mstshash=nmap\r"
    assert rsyslog_msg(b"HELP") == b""  # all HOSTNAME
    assert rsyslog_msg(b"\r") == rsyslog_msg(b"\x16\x03\x00\x00S") == b""  # all TAG
    assert rsyslog_msg(b"{\"a\": 1}") == b"{\"a\": 1}"  # no TAG before '{'
    assert rsyslog_msg(b"1 x y z") == b" z"  # '1 ' read as a version
    # a TAG cut at 510 bytes of escaped text, inside an escape: its digits
    # start MSG as text
    assert rsyslog_msg(b"\x00" * 200 + b"ab") == b"00" + b"\x00" * 72 + b"ab"


def test_match_msg_names_a_probe_by_what_rsyslog_left_in_msg(det):
    got = det.match_msg(b" mstshash=nmap\r")
    assert got and got[0].signature.probe == "TerminalServerCookie" and not got[0].ambiguous
    # several probes leave " HTTP/1.0\r": the line alone cannot tell them apart
    got = det.match_msg(b" HTTP/1.0\r")
    assert got and all(m.ambiguous for m in got)
    assert {"GetRequest", "HTTPOptions"} <= {m.signature.probe for m in got}
    assert det.match_msg(b"") == det.match_msg(b"   ") == []
    assert det.match_msg(b" session opened for user root by (uid=0)") == []


def test_gapped_line_that_is_a_suffix_may_lose_the_whole_head(det):
    # Fluent Bit's syslog-rfc3164 separator ``[^:]*:`` swallowed oracle-tns's
    # cut TAG, its space and its colon: what is left starts with a NUL, as
    # the piece does, and must not pin the gap after that NUL
    piece = det.logged_pieces("nmap-tcp-oracle-tns")[0]
    line = piece[piece.index(b":") + 1:]
    got = det.match(line, lossy=True)
    assert got and got[0].signature.probe == "oracle-tns"


def test_one_payload_under_two_names_is_not_in_doubt(det):
    # nmap's NTPRequest and the -sU payload of port 123 are the same bytes:
    # the line is named by the catalogue's rank, at full confidence
    ntp = next(s for s in det.signatures if s.id == "nmap-udp-NTPRequest")
    got = det.match(ntp.payload, transport="udp")
    assert {"NTPRequest", "udp-scan-payload/123"} <= {m.signature.probe for m in got}
    assert got[0].signature.probe == "NTPRequest" and not got[0].ambiguous
    assert got[0].confidence >= 0.85  # not lowered as for two payloads


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pats=st.lists(st.binary(min_size=1, max_size=6), min_size=1, max_size=25),
       data=st.binary(max_size=200), glue=st.lists(st.integers(0, 24), max_size=8))
def test_first_only_is_each_literals_first_occurrence(pats, data, glue):
    for g in glue:
        data += pats[g % len(pats)] + data[:3]
    every = LiteralSet(pats, "re").find(data)
    first: dict[int, int] = {}
    for start, pid in every:
        first.setdefault(pid, start)
    want = sorted((start, pid) for pid, start in first.items())
    for b in available_backends():
        assert LiteralSet(pats, b, first_only=True).find(data) == want, b


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(st.one_of(st.sampled_from(_PIECES), st.binary(max_size=12)), min_size=1, max_size=6),
       repeat=st.integers(1, 4))
def test_engine_reads_first_occurrences_as_it_read_every_one(parts, repeat):
    """The line matcher's substring set reports each literal once, at its
    first occurrence: the matches are the same as from every occurrence."""
    line = b"".join(parts) * repeat
    for b, d in _DETECTORS.items():
        every = Detector(_ALL, backend=b)
        every._subs = LiteralSet(every._subs.patterns, b)           # every occurrence, as before
        assert every._subs.first_only is False and d._subs.first_only is True
        assert [(m.signature.id, m.fragment, m.kind, m.confidence) for m in d.match(line)] == \
            [(m.signature.id, m.fragment, m.kind, m.confidence) for m in every.match(line)], b


def test_a_line_of_one_piece_over_and_over_is_one_hit_per_literal():
    """A 1 MB line of one binary probe piece repeated (~0.5 substring hits
    a byte) once built a Python tuple and a confidence per hit: seconds per
    line. Each literal is reported once now (hyperscan), or the search
    stops at MAX_RAW_HITS occurrences (the other backends)."""
    from probetag.detect._prefilter import MAX_RAW_HITS

    piece = b"\x00\x0c\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00\x00"
    line = piece * 80_000
    for b, d in _DETECTORS.items():
        hits = d._subs.find(line)
        assert len(hits) == len({pid for _s, pid in hits})         # each literal once
        assert len(hits) <= MAX_RAW_HITS
        every = LiteralSet(d._subs.patterns, b).find(line[:len(piece) * 2000])
        assert len(every) > 100 * len(hits)                         # what it was
