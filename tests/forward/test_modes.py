"""Every event mode of SPEC1/SPEC15 turned into packed entries."""

from __future__ import annotations

import gzip

import msgpack

from probetag.forward import NEED_DATA, Chunk, Heartbeat, ProtocolError

from .conftest import event_time, feed, unpack_entries


def test_message_mode_int_time_gives_one_packed_entry(server):
    evs = feed(server, msgpack.packb(["app.log", 1700000000, {"msg": "hi"}]))
    assert evs[-1] is NEED_DATA
    (chunk,) = evs[:-1]
    assert isinstance(chunk, Chunk)
    assert chunk.mode == "message"
    assert chunk.tag == "app.log"
    assert unpack_entries(chunk.entries) == [[1700000000, {"msg": "hi"}]]
    assert chunk.chunk_id is None and chunk.size_hint is None and chunk.signal == 0


def test_message_mode_with_options_keeps_eventtime_bytes(server):
    frame = b"\x94\xa3a.b" + event_time(5, 7) + b"\x81\xa1k\xa1v" + msgpack.packb({"chunk": "Q0hVTks=", "fluent_signal": 0, "metadata": {"x": 1}})
    (chunk, _) = feed(server, frame)
    assert chunk.mode == "message"
    assert chunk.chunk_id == "Q0hVTks="
    # one entry, time and record exactly as sent, behind a 0x92 header
    assert chunk.entries == b"\x92" + event_time(5, 7) + b"\x81\xa1k\xa1v"
    assert chunk.frame_bytes == len(frame)


def test_forward_mode_entries_are_the_array_payload(server):
    entries = [[1, {"a": 1}], [2, {"b": 2}]]
    (chunk, _) = feed(server, msgpack.packb(["t", entries]))
    assert chunk.mode == "forward"
    assert chunk.entries == b"".join(msgpack.packb(e) for e in entries)


def test_packed_forward_bin_and_str_payloads_are_passed_as_is(server):
    payload = msgpack.packb([1, {"a": 1}]) + msgpack.packb([2, {"b": "x"}])
    for body in (msgpack.packb(payload, use_bin_type=True), b"\xdb" + len(payload).to_bytes(4, "big") + payload):
        (chunk, _) = feed(server, b"\x92\xa1t" + body)
        assert chunk.mode == "packed"
        assert chunk.entries == payload


def test_compressed_packed_forward_gzip(server):
    payload = msgpack.packb([1, {"a": 1}])
    frame = msgpack.packb(["t", gzip.compress(payload), {"compressed": "gzip", "size": 1}], use_bin_type=True)
    (chunk, _) = feed(server, frame)
    assert chunk.mode == "compressed"
    assert chunk.entries == payload
    assert chunk.size_hint == 1


def test_nil_is_a_heartbeat_and_non_array_is_skipped(server):
    evs = feed(server, b"\xc0" + msgpack.packb({"a": 1}) + msgpack.packb(["t", 1, {}]))
    assert isinstance(evs[0], Heartbeat)
    assert isinstance(evs[1], ProtocolError) and evs[1].reason == "not_array" and not evs[1].fatal
    assert isinstance(evs[2], Chunk)
