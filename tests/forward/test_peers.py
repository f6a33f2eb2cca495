"""The exact byte shapes real peers send (FORWARD_NOTES §1 and §8), built by
hand, and the acks they expect back."""

from __future__ import annotations

import base64
import gzip
import os
import struct

import msgpack
from fluent.sender import EventTime, FluentSender

from probetag.forward import NEED_DATA, Chunk, ServerConnection, encode_ack, parse_event_time

from .conftest import event_time, feed, unpack_entries


def _str32(b: bytes) -> bytes:
    return b"\xdb" + struct.pack(">I", len(b)) + b


def _fixstr(s: str) -> bytes:
    b = s.encode()
    assert len(b) < 32
    return bytes([0xA0 | len(b)]) + b


def _entry(sec: int, nsec: int, record: dict) -> bytes:
    return b"\x92" + event_time(sec, nsec) + msgpack.packb(record)


# ---------------------------------------------------------------- Fluentd


def _fluentd_frame(tag: str, payload: bytes, size: int, compressed: str, chunk: str | None) -> bytes:
    """out_forward: 0x93, str tag, entries wrapped in str32 (0xdb) even when
    gzipped, option {"size", "compressed"[, "chunk"]} (Ruby packs a fixmap)."""
    opt = [(b"size", msgpack.packb(size)), (b"compressed", _fixstr(compressed))]
    if chunk is not None:
        opt.append((b"chunk", _fixstr(chunk)))
    optb = bytes([0x80 | len(opt)]) + b"".join(_fixstr(k.decode()) + v for k, v in opt)
    return b"\x93" + _fixstr(tag) + _str32(payload) + optb


def test_fluentd_default_text_frame_with_ack_chunk():
    entries = _entry(1700000000, 123, {"message": "GET / HTTP/1.0#015", "host": "h"}) + _entry(
        1700000001, 0, {"message": b"\xff\xfe raw"}
    )
    chunk_id = base64.encodebytes(os.urandom(16)).decode()  # Ruby Base64.encode64: ends in "\n"
    assert chunk_id.endswith("\n") and len(chunk_id) == 25
    frame = _fluentd_frame("syslog.auth", entries, 2, "text", chunk_id)
    conn = ServerConnection("10.0.0.1")
    (chunk, marker) = feed(conn, frame)
    assert marker is NEED_DATA
    assert chunk.mode == "packed"
    assert chunk.tag == "syslog.auth"
    assert chunk.entries == entries  # not re-encoded, not UTF-8 decoded
    assert chunk.chunk_id == chunk_id and isinstance(chunk.chunk_id, str)
    assert chunk.size_hint == 2
    # ack echoes the id as a str with its trailing newline, byte for byte
    ack = conn.ack_bytes(chunk.chunk_id)
    assert ack == b"\x81\xa3ack" + _fixstr(chunk_id)
    assert msgpack.unpackb(ack) == {"ack": chunk_id}


def test_fluentd_gzip_with_one_member_per_event():
    e1 = _entry(1, 0, {"a": "x" * 100})
    e2 = _entry(2, 0, {"b": "y"})
    e3 = _entry(3, 0, {"c": "z"})
    payload = gzip.compress(e1) + gzip.compress(e2) + gzip.compress(e3)
    frame = _fluentd_frame("t", payload, 3, "gzip", "AAAAAAAAAAAAAAAAAAAAAA==\n")
    (chunk, _) = feed(ServerConnection("p"), frame)
    assert chunk.mode == "compressed"
    assert chunk.entries == e1 + e2 + e3
    assert chunk.chunk_id == "AAAAAAAAAAAAAAAAAAAAAA==\n"


def test_fluentd_zstd():
    import zstandard

    e = _entry(1, 0, {"a": 1}) * 50
    c = zstandard.ZstdCompressor()
    payload = c.compress(e[:100]) + c.compress(e[100:])  # two frames
    frame = _fluentd_frame("t", payload, 50, "zstd", None)
    (chunk, _) = feed(ServerConnection("p"), frame)
    assert chunk.mode == "compressed"
    assert chunk.entries == e


# -------------------------------------------------------------- Fluent Bit


def _map32(pairs: list[tuple[str, bytes]]) -> bytes:
    """Fluent Bit forces option maps to map32 (df 00 00 00 NN)."""
    return b"\xdf" + struct.pack(">I", len(pairs)) + b"".join(_fixstr(k) + v for k, v in pairs)


def test_fluent_bit_default_forward_mode_with_nested_metadata_time():
    # [[EventTime, {}], record], no option map: Fluent Bit >= 5.0.5 default.
    e1 = b"\x92\x92" + event_time(1700000000, 5) + b"\x80" + msgpack.packb({"log": "x"})
    e2 = b"\x92\x92" + event_time(1700000001, 6) + b"\x80" + msgpack.packb({"log": "y"})
    frame = b"\x92" + _fixstr("kube.var") + b"\x92" + e1 + e2
    (chunk, _) = feed(ServerConnection("p"), frame)
    assert chunk.mode == "forward"
    assert chunk.entries == e1 + e2  # kept as is: the stage unwraps [t, meta]
    first = unpack_entries(chunk.entries)[0]
    assert parse_event_time(first[0][0]) == (1700000000, 5)


def test_fluent_bit_send_options_with_non_minimal_headers_and_ack():
    # retain_metadata false: plain entries with array32 headers dd 00 00 00 02.
    e = b"\xdd\x00\x00\x00\x02" + event_time(7, 8) + b"\xdf\x00\x00\x00\x01" + _fixstr("log") + _fixstr("z")
    payload_entries = e + e
    chunk_id = base64.b64encode(b"\x01" * 16).decode()  # 24 chars, no newline
    opts = _map32([("size", b"\x02"), ("fluent_signal", b"\x00"), ("chunk", _fixstr(chunk_id))])
    frame = b"\x93" + _fixstr("fb") + b"\xdd\x00\x00\x00\x02" + payload_entries + opts
    conn = ServerConnection("p")
    (chunk, _) = feed(conn, frame)
    assert chunk.mode == "forward"
    assert chunk.entries == payload_entries
    assert chunk.chunk_id == chunk_id and chunk.size_hint == 2 and chunk.signal == 0
    assert conn.ack_bytes(chunk.chunk_id) == b"\x81\xa3ack" + _fixstr(chunk_id)
    assert unpack_entries(chunk.entries) == [[msgpack.ExtType(0, struct.pack(">II", 7, 8)), {"log": "z"}]] * 2


def test_fluent_bit_gzip_is_bin_and_signal_is_reported():
    entries = _entry(1, 0, {"m": 1})
    gz = gzip.compress(entries)
    opts = _map32([("size", b"\x01"), ("compressed", _fixstr("gzip")), ("fluent_signal", b"\x01")])
    frame = b"\x93" + _fixstr("metrics") + b"\xc6" + struct.pack(">I", len(gz)) + gz + opts
    (chunk, _) = feed(ServerConnection("p"), frame)
    assert chunk.mode == "compressed" and chunk.entries == entries and chunk.signal == 1


def test_fluent_bit_group_markers_pass_through_unsigned():
    start = b"\x92\x92" + event_time(0xFFFFFFFF, 0) + msgpack.packb({"resource": {}}) + b"\x80"
    rec = b"\x92\x92" + event_time(1700000000, 0) + b"\x80" + msgpack.packb({"log": "a"})
    end = b"\x92\x92" + event_time(0xFFFFFFFE, 0) + b"\x80" + b"\x80"
    frame = b"\x92" + _fixstr("otel") + b"\x93" + start + rec + end
    (chunk, _) = feed(ServerConnection("p"), frame)
    times = [parse_event_time(e[0][0]) for e in unpack_entries(chunk.entries)]
    assert times == [(0xFFFFFFFF, 0), (1700000000, 0), (0xFFFFFFFE, 0)]
    assert chunk.entries == start + rec + end


def test_fluent_bit_message_mode_for_dynamic_tags():
    frame = b"\x94" + _fixstr("dyn.tag") + event_time(9, 1) + msgpack.packb({"k": "v"}) + _map32(
        [("fluent_signal", b"\x00"), ("metadata", b"\x81\xa1x\x01")]
    )
    (chunk, _) = feed(ServerConnection("p"), frame)
    assert chunk.mode == "message"
    assert chunk.entries == b"\x92" + event_time(9, 1) + msgpack.packb({"k": "v"})


def test_old_docker_nil_option():
    (chunk, _) = feed(ServerConnection("p"), msgpack.packb(["docker.x", [[1, {"log": "a"}]], None]))
    assert chunk.mode == "forward" and chunk.chunk_id is None


# ------------------------------------------------------ fluent-logger-python


def test_fluent_logger_message_mode_int_and_eventtime():
    sender = FluentSender("app", host="127.0.0.1", port=1, nanosecond_precision=True)
    try:
        packet_et = sender._make_packet("access", 1700000000.25, {"path": "/", "bin": b"\x00\xff"})
        packet_int = FluentSender("app", host="127.0.0.1", port=1)._make_packet("err", 1700000000, {"x": 1})
    finally:
        sender.close()
    conn = ServerConnection("p")
    evs = feed(conn, packet_et + packet_int)
    a, b = evs[0], evs[1]
    assert isinstance(a, Chunk) and isinstance(b, Chunk)
    assert (a.tag, a.mode, b.tag, b.mode) == ("app.access", "message", "app.err", "message")
    assert unpack_entries(a.entries) == [[EventTime(1700000000.25), {"path": "/", "bin": b"\x00\xff"}]]
    assert parse_event_time(unpack_entries(a.entries)[0][0]) == (1700000000, 250000000)
    assert unpack_entries(b.entries) == [[1700000000, {"x": 1}]]


# -------------------------------------------------------------------- acks


def test_ack_preserves_bin_type_and_non_utf8_bytes():
    raw = b"\xffchunk\x00\n"
    frame = b"\x93\xa1t\x90" + b"\x81\xa5chunk" + b"\xc4" + bytes([len(raw)]) + raw
    conn = ServerConnection("p")
    (chunk, _) = feed(conn, frame)
    assert chunk.chunk_id == raw and isinstance(chunk.chunk_id, bytes)
    assert conn.ack_bytes(chunk.chunk_id) == b"\x81\xa3ack\xc4" + bytes([len(raw)]) + raw
    # a str chunk id that is not UTF-8 comes back as a str with the same bytes
    frame = b"\x93\xa1t\x90" + b"\x81\xa5chunk" + bytes([0xA0 | len(raw)]) + raw
    (chunk, _) = feed(conn, frame)
    assert isinstance(chunk.chunk_id, str)
    assert encode_ack(chunk.chunk_id) == b"\x81\xa3ack" + bytes([0xA0 | len(raw)]) + raw


def test_non_utf8_tag_is_decoded_with_surrogateescape():
    frame = b"\x92\xa3t\xffx\x90"
    (chunk, _) = feed(ServerConnection("p"), frame)
    assert chunk.tag.encode("utf-8", "surrogateescape") == b"t\xffx"
