"""Inputs the fuzzers found, kept as plain tests: each one crashed a decoder
once and must now give a specific, counted refusal."""

from __future__ import annotations

from probetag._config import config_from_mapping
from probetag._metrics import Metrics
from probetag._stage import Processor, event_time_now, pack_entry

# [1, {"message": "GET / HTTP/1.0#015", {"a": 1}: "b"}]: well-framed msgpack
# with a map as a map key, which Python cannot hold, on a probe line (so the
# stage decodes it instead of passing it through as it came).
MAP_KEY_ENTRY = b"\x92\x01\x82\xa7message\xb2GET / HTTP/1.0#015\x81\xa1a\x01\xa1b"


def test_entry_with_a_map_key_is_rejected_not_raised():
    metrics = Metrics()
    proc = Processor(config_from_mapping({}), metrics)
    good = pack_entry(event_time_now(), {"message": "GET / HTTP/1.0#015", "host": "x"})
    res = proc.process("fuzz.regression", MAP_KEY_ENTRY + good)
    assert [c.count for c in res.chunks] == [1]
    assert metrics.get("records_rejected", reason="entry_undecodable") == 1
    assert metrics.get("records_tagged") == 1
    assert metrics.get("records_in") == 2


def test_json_lone_surrogate_escapes_do_not_fail_the_batch():
    # JSON allows "\udeef" (a lone surrogate) and Python's json accepts it;
    # such a str has no UTF-8 form. Packing it raised UnicodeEncodeError,
    # which failed the whole HTTP request / NDJSON read batch.
    import sys
    from pathlib import Path

    import msgpack

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "fuzz"))
    import targets
    from probetag.inputs.http import build_chunks, parse_events
    from probetag.inputs.ndjson import LineSplitter, lines_to_chunks

    body = b'{"message": "a\\udeef b", "raw": "\\udcff"}\n{"message": "next"}\n'
    parsed = parse_events(body, "application/x-ndjson")
    chunks, _ = build_chunks(parsed.events, default_tag="v", tag_field="tag", time_field="timestamp")
    splitter = LineSplitter(1024)
    nd_chunks, rejected, _ = lines_to_chunks(list(splitter.feed(body)), default_tag="v", tag_field="tag",
                                             time_field="timestamp", batch=10)
    assert rejected == {}
    for got in (chunks, nd_chunks):
        (tag, entries, count), = got
        records = [r for _, r in msgpack.Unpacker(__import__("io").BytesIO(entries), raw=False,
                                                   unicode_errors="surrogateescape")]
        assert count == 2 and records[1]["message"] == "next"
        assert records[0]["message"] == "a\ufffd b"
        assert records[0]["raw"] == "\udcff"  # surrogateescape byte: stays the byte it was
    targets.ndjson(body)
    targets.http(b"POST /v1/vector HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
