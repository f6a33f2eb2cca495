"""Sans-I/O half of the HTTP input: framing, decoding, body parsing."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest
import zstandard
from hypothesis import given, settings, strategies as st

from probetag.inputs.http import (NEED_DATA, ExpectContinue, HttpError, Request, RequestParser,
                                  build_chunks, decode_body, parse_events, render_response)
from probetag._stage import unpacker_for


def req(body=b"", headers=(), method="POST", target="/v1/vector", version="HTTP/1.1"):
    head = f"{method} {target} {version}\r\nHost: 127.0.0.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers)
    if body and not any(k.lower() == "transfer-encoding" for k, _ in headers):
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def events_of(p, data):
    p.feed(data)
    out = []
    for _ in range(100):
        ev = p.next_event()
        if ev is NEED_DATA:
            return out
        out.append(ev)
    raise AssertionError("parser did not stop")


def test_simple_and_keepalive_pipeline():
    p = RequestParser(1000)
    evs = events_of(p, req(b'[{"a":1}]') + req(b"x", headers=[("Connection", "close")]))
    assert [type(e) for e in evs] == [Request, Request]
    assert evs[0].body == b'[{"a":1}]' and evs[0].keep_alive and evs[0].header("host") == "127.0.0.1"
    assert evs[1].body == b"x" and not evs[1].keep_alive


def test_http10_keepalive_rules():
    p = RequestParser(1000)
    assert not events_of(p, req(version="HTTP/1.0"))[0].keep_alive
    assert events_of(p, req(version="HTTP/1.0", headers=[("Connection", "Keep-Alive")]))[0].keep_alive


@given(st.lists(st.integers(1, 40), min_size=1, max_size=30))
@settings(max_examples=60, deadline=None)
def test_arbitrary_chunking(cuts):
    data = req(b'{"message":"GET / HTTP/1.0#015"}\n{"b":2}', headers=[("Content-Type", "application/x-ndjson")])
    data += req(b"[]")
    p = RequestParser(1000)
    out, pos = [], 0
    for c in cuts * 10:
        if pos >= len(data):
            break
        out += events_of(p, data[pos:pos + c])
        pos += c
    out += events_of(p, data[pos:])
    assert [e.body for e in out] == [b'{"message":"GET / HTTP/1.0#015"}\n{"b":2}', b"[]"]


def test_chunked_transfer_coding():
    body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: y\r\n\r\n"
    p = RequestParser(1000)
    (ev,) = events_of(p, req(body, headers=[("Transfer-Encoding", "chunked")]))
    assert ev.body == b"hello, world"
    (ev,) = events_of(p, req(b"0\r\n\r\n", headers=[("Transfer-Encoding", "chunked")]))
    assert ev.body == b""


def test_expect_continue():
    p = RequestParser(1000)
    p.feed(req(headers=[("Expect", "100-continue"), ("Content-Length", "2")]))
    assert isinstance(p.next_event(), ExpectContinue)
    assert p.next_event() is NEED_DATA
    p.feed(b"[]")
    assert p.next_event().body == b"[]"


@pytest.mark.parametrize("data,status", [
    (b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\n folded: x\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1000\r\n", 413),
])
def test_refused_heads(data, status):
    p = RequestParser(1000)
    p.feed(data)
    with pytest.raises(HttpError) as ei:
        for _ in range(5):
            p.next_event()
    assert ei.value.status == status


def test_header_bound_without_terminator():
    p = RequestParser(1000, max_header_bytes=100)
    p.feed(b"POST / HTTP/1.1\r\n" + b"a" * 99)
    with pytest.raises(HttpError) as ei:
        p.next_event()
    assert ei.value.status == 431


PAYLOAD = b'{"message":"a"}\n{"message":"b"}'


@pytest.mark.parametrize("enc,data", [
    ("gzip", gzip.compress(PAYLOAD)),
    ("gzip", gzip.compress(PAYLOAD[:10]) + gzip.compress(PAYLOAD[10:])),  # concatenated members
    ("deflate", zlib.compress(PAYLOAD)),                                  # Vector's zlib
    ("deflate", zlib.compress(PAYLOAD)[2:-4]),                            # raw deflate
    ("zstd", zstandard.ZstdCompressor().compress(PAYLOAD)),
    ("identity", PAYLOAD),
    (None, PAYLOAD),
])
def test_decode_body(enc, data):
    assert decode_body(data, enc, 1000) == PAYLOAD


@pytest.mark.parametrize("enc,comp", [
    ("gzip", gzip.compress), ("deflate", zlib.compress),
    ("zstd", zstandard.ZstdCompressor().compress),
])
def test_decompression_bomb_bounded(enc, comp):
    bomb = comp(b"\0" * 5_000_000)
    assert len(bomb) < 10_000
    with pytest.raises(HttpError) as ei:
        decode_body(bomb, enc, 100_000)
    assert ei.value.status == 413


@pytest.mark.parametrize("enc,data,status", [
    ("gzip", b"not gzip", 400), ("zstd", b"not zstd", 400), ("deflate", b"\xff\xff", 400),
    ("br", b"x", 415), ("gzip", gzip.compress(PAYLOAD)[:-5], 400),
])
def test_decode_errors(enc, data, status):
    with pytest.raises(HttpError) as ei:
        decode_body(data, enc, 1000)
    assert ei.value.status == status


def test_parse_array_and_ndjson():
    assert parse_events(b'[{"a":1},{"b":2}]', "application/json").events == [{"a": 1}, {"b": 2}]
    # NDJSON without a trailing newline, as Vector sends it
    assert parse_events(b'{"a":1}\n{"b":2}', "application/x-ndjson").events == [{"a": 1}, {"b": 2}]
    # no or unknown content type: sniffed
    assert parse_events(b'  [{"a":1}]', None).events == [{"a": 1}]
    assert parse_events(b'{"a":1}\r\n{"b":2}\n', "text/plain").events == [{"a": 1}, {"b": 2}]
    assert parse_events(b"", "application/x-ndjson").events == []


def test_bad_lines_counted_rest_kept():
    p = parse_events(b'{"a":1}\n{broken\n42\n{"b":2}', "application/x-ndjson")
    assert p.events == [{"a": 1}, {"b": 2}]
    assert p.rejected == {"bad_json": 1, "event_not_object": 1}
    assert "line 2" in p.first_error
    p = parse_events(b'[{"a":1}, "x"]', "application/json")
    assert p.events == [{"a": 1}] and p.rejected == {"event_not_object": 1}


@pytest.mark.parametrize("body,ct", [
    (b"[{broken", "application/json"), (b"\x89PNG\r\n", "application/x-ndjson"),
    (b'["a", 1]', "application/json"), (b"nope\nnope", None),
])
def test_unusable_bodies_are_400(body, ct):
    with pytest.raises(HttpError) as ei:
        parse_events(body, ct)
    assert ei.value.status == 400


def test_invalid_utf8_survives_byte_for_byte():
    body = b'{"message":"GET /\xff HTTP/1.0"}'
    (ev,) = parse_events(body, "application/x-ndjson").events
    chunks, _ = build_chunks([ev], default_tag="v", tag_field="tag", time_field="timestamp")
    (tag, entries, count), = chunks
    (_, rec), = list(unpacker_for(entries))
    assert rec["message"].encode("utf-8", "surrogateescape") == b"GET /\xff HTTP/1.0"


def test_build_chunks_groups_by_tag_in_order():
    evs = [{"tag": "a", "n": 1}, {"tag": "b", "n": 2}, {"tag": "a", "n": 3}, {"n": 4}]
    chunks, notes = build_chunks(evs, default_tag="d", tag_field="tag", time_field="timestamp")
    assert [(t, c) for t, _, c in chunks] == [("a", 2), ("b", 1), ("d", 1)]
    assert [r["n"] for _, r in unpacker_for(chunks[0][1])] == [1, 3]
    assert notes == {"missing": 4}


def test_render_response():
    r = render_response(429, b'{"error":"x"}', keep_alive=False, extra=(("Retry-After", "1"),))
    assert r.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
    assert b"Content-Length: 13\r\n" in r and b"Connection: close\r\n" in r and r.endswith(b'\r\n\r\n{"error":"x"}')
    assert render_response(200, b"abc", head_only=True).endswith(b"\r\n\r\n")
    assert json.loads(render_response(400, b'{"e":1}').split(b"\r\n\r\n", 1)[1]) == {"e": 1}
