"""The extra labelled corpus (tests/fixtures/corpus-extra) and the tools that
made it: every evaluated log line has exactly one label, every derived record
points at a labelled line or carries its own label, and the stock-parser
derivations behave as documented on known lines."""

from __future__ import annotations

import collections
import gzip
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fixtures" / "corpus-extra"
sys.path.insert(0, str(ROOT / "tools" / "corpus"))

import derive_records  # noqa: E402


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in gzip.decompress(path.read_bytes()).decode().splitlines() if x]


def test_every_line_of_every_evaluated_file_is_labelled_once() -> None:
    labels = _jsonl(CORPUS / "labels.jsonl.gz")
    by_file = collections.defaultdict(list)
    for lab in labels:
        by_file[lab["file"]].append(lab["line"])
    assert len(by_file) == 4 * 7
    for fname, lines in by_file.items():
        n = len((CORPUS / fname).read_bytes().split(b"\n")) - 1
        assert sorted(lines) == list(range(1, n + 1)), fname


def test_probe_lines_are_labelled_from_the_trace_and_the_capture() -> None:
    labels = _jsonl(CORPUS / "labels.jsonl.gz")
    probe = [lab for lab in labels if lab["scanner"] == "nmap"]
    assert probe and all(lab["session"] and lab["label_method"].startswith("pcap+nmap-trace") for lab in probe)
    assert not [lab for lab in labels if lab["label"] in ("unknown", "nmap-unidentified")]
    # syslog-ng's syslog() driver over TCP logs no probe byte (octet counting only)
    assert not [lab for lab in probe if lab["format"].startswith("sys_") and lab["transport"] == "tcp"]


def test_derived_records_join_to_labels() -> None:
    labels = {(lab["file"], lab["line"]): lab for lab in _jsonl(CORPUS / "labels.jsonl.gz")}
    recs = _jsonl(CORPUS / "records" / "records.jsonl.gz")
    assert {r["variant"] for r in recs} == {"fluentbit_syslog_rfc3164", "fluentbit_syslog_rfc5424",
                                            "vector_syslog_relay", "vector_syslog_direct"}
    for r in recs:
        assert r["derived"] is True
        if r["source_file"] is None:
            assert r["variant"] == "vector_syslog_direct" and r["label"]
        else:
            assert labels[(r["source_file"], r["source_line"])]["label"] == r["label"]


def test_fluent_bit_rfc3164_regex_on_a_relayed_probe_line() -> None:
    rec, types, t = derive_records.fluentbit(b"<13>Dec  5 17:13:45 GET / HTTP/1.0#015", derive_records.FB_3164,
                                             derive_records.FB_GROUPS_3164, 0.0)
    assert rec == {"pri": "13", "time": "Dec  5 17:13:45", "host": "GET", "ident": "/", "message": "HTTP/1.0#015"}
    assert t > 0
    # text between ident and the first colon is in no key
    rec, _, _ = derive_records.fluentbit(b"<13>Dec  5 17:13:45 127.0.0.1 SSH-2.0-x y: z", derive_records.FB_3164,
                                         derive_records.FB_GROUPS_3164, 0.0)
    assert rec["ident"] == "SSH-2.0-x" and rec["message"] == "z"
    assert derive_records.fluentbit(b"<invld>Dec  5 17:13:45 x", derive_records.FB_3164,
                                    derive_records.FB_GROUPS_3164, 0.0) == (None, None)


def test_fluent_bit_rfc5424_regex_drops_an_empty_message() -> None:
    ok = derive_records.fluentbit(b"<13>1 2026-12-05T17:13:45+00:00 127.0.0.1 - - - - x", derive_records.FB_5424,
                                  derive_records.FB_GROUPS_5424, 0.0)
    assert ok[0]["message"] == "x" and ok[0]["extradata"] == "-"
    assert derive_records.fluentbit(b"<13>1 2026-12-05T17:13:45+00:00 127.0.0.1 - - - - ", derive_records.FB_5424,
                                    derive_records.FB_GROUPS_5424, 0.0) == (None, None)


def test_vector_parse_syslog_model() -> None:
    relay = derive_records.loose("<13>Dec  5 17:13:45 GET / HTTP/1.0#015")
    assert (relay["hostname"], relay["appname"], relay["message"]) == ("GET", "/", "HTTP/1.0#015")
    tagged = derive_records.loose("<38>Dec  5 17:13:48 vm sshd[3102]: Bad protocol")
    assert (tagged["hostname"], tagged["appname"], tagged["procid"], tagged["message"]) == (
        "vm", "sshd", "3102", "Bad protocol")
    # no timestamp, or rsyslog's <invld> PRI: parse_message_with_year_exact
    # fails and the syslog source drops the frame
    assert derive_records.loose("OPTIONS / RTSP/1.0\r") is None
    assert derive_records.loose("<invld>Dec  5 17:16:07 127.0.0.1  < NTP/1.2 >") is None


def _frames(flow: dict) -> list:
    return [(text, fr) for _, text, fr in derive_records.vector_frames(flow)]


def test_vector_direct_framing() -> None:
    # LinesCodec: one trailing CR removed, empty frames give nothing
    flow = {"proto": "tcp", "payload": b"GET / HTTP/1.0\r\n\r\n", "t_end": 2.0,
            "segments": [(1.0, b"GET / HTTP/1.0\r\n\r\n")]}
    assert _frames(flow) == [("GET / HTTP/1.0", b"GET / HTTP/1.0")]
    # a first byte 1-9 is an octet count; cut short by the close, the frame is lost
    flow = {"proto": "tcp", "payload": b"5 hello6 wor", "t_end": 2.0, "segments": [(1.0, b"5 hello6 wor")]}
    assert _frames(flow) == [("hello", b"hello")]
    # a count that is no number is discarded up to its space
    flow = {"proto": "tcp", "payload": b"1.0 x\n", "t_end": 2.0, "segments": [(1.0, b"1.0 x\n")]}
    assert _frames(flow) == [("x", b"x")]
    # not valid UTF-8 over TCP: the framer's error, no text
    flow = {"proto": "tcp", "payload": b"\x16\x03\x01\xfe\n", "t_end": 2.0, "segments": [(1.0, b"\x16\x03\x01\xfe\n")]}
    assert _frames(flow) == [(None, b"\x16\x03\x01\xfe")]
    # UDP: one datagram, decoded lossily
    flow = {"proto": "udp", "payload": b"\xfe\x01", "t_first_data": 1.0}
    assert _frames(flow) == [("\ufffd\x01", b"\xfe\x01")]
