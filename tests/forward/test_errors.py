"""Bad input: every case gets its own reason and the documented fatal flag;
after a non-fatal error the same connection keeps working."""

from __future__ import annotations

import gzip
import struct
import tracemalloc

import msgpack
import pytest
import zstandard

from probetag.forward import (
    CLOSED,
    NEED_DATA,
    Chunk,
    Limits,
    LocalProtocolError,
    ProtocolError,
    ServerConnection,
)

from .conftest import feed

GOOD = msgpack.packb(["ok", 1, {"a": 1}])


def _pk(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


NON_FATAL = [
    ("map", _pk({"a": 1}), "not_array", None),
    ("str", _pk("hello"), "not_array", None),
    ("int", _pk(7), "not_array", None),
    ("empty array", _pk([]), "short_frame", None),
    ("one element", _pk(["t"]), "short_frame", None),
    ("int tag", _pk([1, 1, {}]), "bad_tag", None),
    ("bin tag", _pk([b"t", 1, {}]), "bad_tag", None),
    ("map 2nd", _pk(["t", {}, {}]), "unknown_mode", None),
    ("nil 2nd", _pk(["t", None]), "unknown_mode", None),
    ("bool 2nd", _pk(["t", True, {}]), "unknown_mode", None),
    ("float 2nd", _pk(["t", 1.5, {}]), "unknown_mode", None),
    ("message without record", _pk(["t", 1]), "bad_arity", None),
    ("message with 5", _pk(["t", 1, {}, {}, {}]), "bad_arity", None),
    ("forward with 4", _pk(["t", [], {}, {}]), "bad_arity", None),
    ("option int", _pk(["t", [], 5]), "bad_option", None),
    ("option str", _pk(["t", b"", "x"]), "bad_option", None),
    ("signal str", _pk(["t", [], {"chunk": "c1", "fluent_signal": "x"}]), "bad_option", "c1"),
    ("compressed int", _pk(["t", b"", {"chunk": "c2", "compressed": 3}]), "bad_option", "c2"),
    ("chunk int", _pk(["t", [], {"chunk": 5}]), "bad_chunk_id", None),
    ("chunk array", _pk(["t", [], {"chunk": ["a"]}]), "bad_chunk_id", None),
    ("unknown compression", _pk(["t", b"xx", {"chunk": "c3", "compressed": "lz4"}]), "unknown_compression", "c3"),
    ("bad gzip", _pk(["t", b"not gzip", {"chunk": "c4", "compressed": "gzip"}]), "bad_gzip", "c4"),
    ("empty gzip", _pk(["t", b"", {"compressed": "gzip"}]), "bad_gzip", None),
    ("truncated gzip", _pk(["t", gzip.compress(b"\x92\x01\x80" * 100)[:-9], {"chunk": b"c5", "compressed": "gzip"}]), "bad_gzip", b"c5"),
    ("gzip trailing junk", _pk(["t", gzip.compress(b"\x92\x01\x80") + b"junk", {"compressed": "gzip"}]), "bad_gzip", None),
    ("bad zstd", _pk(["t", b"garbage!", {"compressed": "zstd"}]), "bad_zstd", None),
    ("truncated zstd", _pk(["t", zstandard.ZstdCompressor().compress(b"\x92\x01\x80" * 99)[:-3], {"compressed": "zstd"}]), "bad_zstd", None),
    ("ext time type 5", b"\x93\xa1t\xd7\x05" + b"\x00" * 8 + b"\x80", "bad_time", None),
    ("ext time 4 bytes", b"\x93\xa1t\xd6\x00" + b"\x00" * 4 + b"\x80", "bad_time", None),
    ("ext8 time 12 bytes", b"\x93\xa1t\xc7\x0c\x00" + b"\x00" * 12 + b"\x80", "bad_time", None),
    ("msgpack timestamp ext", b"\x94\xa1t\xd6\xff" + b"\x00" * 4 + b"\x80\x81\xa5chunk\xa2c6", "bad_time", "c6"),
]


@pytest.mark.parametrize("name,frame,reason,chunk_id", NON_FATAL, ids=[c[0] for c in NON_FATAL])
def test_non_fatal_frame_is_skipped_and_connection_kept(name, frame, reason, chunk_id):
    conn = ServerConnection("p")
    evs = feed(conn, frame + GOOD + frame + GOOD)
    assert [type(e) for e in evs] == [ProtocolError, Chunk, ProtocolError, Chunk, type(NEED_DATA)]
    err = evs[0]
    assert (err.reason, err.fatal, err.chunk_id) == (reason, False, chunk_id)
    assert err.detail
    assert evs[1].tag == "ok" and evs[3].tag == "ok"


@pytest.mark.parametrize("comp", ["gzip", "zstd"])
def test_decompression_bomb_is_bounded_and_skipped(comp):
    big = b"\x00" * (4 * 1024 * 1024)
    payload = gzip.compress(big) if comp == "gzip" else zstandard.ZstdCompressor().compress(big)
    assert len(payload) < 64 * 1024
    conn = ServerConnection("p", Limits(max_decompressed_bytes=1024 * 1024))
    tracemalloc.start()
    try:
        evs = feed(conn, _pk(["t", payload, {"chunk": "bomb", "compressed": comp}]) + GOOD)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert evs[0] == ProtocolError("decompressed_too_large", False, evs[0].detail, "bomb")
    assert isinstance(evs[1], Chunk)
    assert peak < 3 * 1024 * 1024  # never the 4 MiB the payload expands to


def test_decompression_exactly_at_limit_is_accepted():
    data = b"\x92\x01\x80" * 1000
    conn = ServerConnection("p", Limits(max_decompressed_bytes=len(data)))
    (chunk, _) = feed(conn, _pk(["t", gzip.compress(data) + gzip.compress(b""), {"compressed": "gzip"}]))
    assert chunk.entries == data
    conn = ServerConnection("p", Limits(max_decompressed_bytes=len(data) - 1))
    (err, _) = feed(conn, _pk(["t", gzip.compress(data), {"compressed": "gzip"}]))
    assert err.reason == "decompressed_too_large"


def _assert_fatal_then_closed(conn, evs, reason):
    assert isinstance(evs[-2], ProtocolError), evs
    assert evs[-2].reason == reason and evs[-2].fatal
    assert evs[-1] is CLOSED
    assert conn.next_event() is CLOSED


def test_0xc1_is_fatal():
    conn = ServerConnection("p")
    evs = feed(conn, GOOD + b"\xc1" + GOOD)
    assert isinstance(evs[0], Chunk)
    _assert_fatal_then_closed(conn, evs, "parse_error")


def test_0xc1_inside_a_frame_is_fatal():
    conn = ServerConnection("p")
    evs = feed(conn, b"\x93\xa1t\x91\xc1\x80")
    _assert_fatal_then_closed(conn, evs, "parse_error")


def test_deep_nesting_is_fatal_not_a_crash():
    conn = ServerConnection("p")
    evs = feed(conn, b"\x92\xa1t" + b"\x91" * 2000 + b"\xc0")
    _assert_fatal_then_closed(conn, evs, "too_deep")


def test_nesting_below_the_stack_limit_is_fine():
    conn = ServerConnection("p")
    (chunk, _) = feed(conn, b"\x92\xa1t\x91\x92\x01" + b"\x91" * 500 + b"\xc0")
    assert isinstance(chunk, Chunk) and chunk.mode == "forward"


def test_gigabyte_length_prefix_fails_fast_without_allocating():
    conn = ServerConnection("p")
    tracemalloc.start()
    try:
        # only the header has arrived: [tag, str32 of 4 GiB - 1]
        evs = feed(conn, b"\x92\xa1t\xdb\xff\xff\xff\xff")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _assert_fatal_then_closed(conn, evs, "frame_too_large")
    assert peak < 2 * 1024 * 1024


@pytest.mark.parametrize(
    "head",
    [b"\xdd\xff\xff\xff\xff", b"\xdf\x7f\xff\xff\xff", b"\x92\xa1t\x92\x01\xc6\xff\xff\xff\x00", b"\x93\xa1t\xc4\x01x\xdf\xff\xff\xff\xff"],
    ids=["array32", "map32", "bin32 in a forward", "option map32"],
)
def test_declared_sizes_over_the_limit_fail_at_once(head):
    conn = ServerConnection("p", Limits(max_frame_bytes=4096))
    _assert_fatal_then_closed(conn, feed(conn, head), "frame_too_large")


def test_frame_growing_past_the_limit_is_fatal():
    # Nothing large is declared up front; the bytes just keep coming.
    limit = 1024
    conn = ServerConnection("p", Limits(max_frame_bytes=limit))
    head = b"\x92\xa1t\xdc" + struct.pack(">H", 500)
    assert feed(conn, head) == [NEED_DATA]
    evs = []
    for _ in range(500):
        evs = feed(conn, b"\x92\x01\x80")
        if evs != [NEED_DATA]:
            break
    _assert_fatal_then_closed(conn, evs, "frame_too_large")
    assert conn._framer.buffered <= limit + 3  # noqa: SLF001 - buffering stopped at the bound


def test_frame_exactly_at_the_limit_is_accepted():
    frame = _pk(["t", b"x" * 100])
    conn = ServerConnection("p", Limits(max_frame_bytes=len(frame)))
    (chunk, _) = feed(conn, frame)
    assert chunk.frame_bytes == len(frame)
    conn = ServerConnection("p", Limits(max_frame_bytes=len(frame) - 1))
    _assert_fatal_then_closed(conn, feed(conn, frame), "frame_too_large")


def test_many_small_frames_in_one_receive_do_not_overflow_buffers():
    frames = GOOD * 200_000  # ~2 MiB in one call, frame limit 1 KiB
    conn = ServerConnection("p", Limits(max_frame_bytes=1024))
    conn.receive_data(frames)
    n = 0
    for _ in range(200_001):
        ev = conn.next_event()
        if ev is NEED_DATA:
            break
        assert isinstance(ev, Chunk)
        n += 1
    assert n == 200_000


def test_eof_inside_a_frame_is_fatal():
    conn = ServerConnection("p")
    evs = feed(conn, GOOD + GOOD[:-1], eof=True)
    assert isinstance(evs[0], Chunk)
    _assert_fatal_then_closed(conn, evs, "truncated_frame")


def test_clean_eof_and_empty_connection_are_closed_without_error():
    conn = ServerConnection("p")
    assert feed(conn, b"", eof=True) == [CLOSED]
    conn = ServerConnection("p")
    evs = feed(conn, GOOD, eof=True)
    assert isinstance(evs[0], Chunk) and evs[1] is CLOSED


def test_json_stream_is_refused():
    conn = ServerConnection("p")
    _assert_fatal_then_closed(conn, feed(conn, b'["tag", 1, {"a": 1}]'), "json_unsupported")


def test_receive_after_eof_is_our_bug():
    conn = ServerConnection("p")
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"\xc0")


def test_forward_entries_are_not_validated_here():
    # Entry-level problems (float time, non-map record) belong to the stage,
    # which counts them one by one; the frame itself is fine.
    frame = _pk(["t", [[1.5, {"a": 1}], [1, "x"]]])
    (chunk, _) = feed(ServerConnection("p"), frame)
    assert isinstance(chunk, Chunk) and chunk.entries == _pk([1.5, {"a": 1}]) + _pk([1, "x"])


@pytest.mark.parametrize(
    "frame,reason",
    [
        (b"\x93\xa1t\x90\x81\x80\x01", "bad_option"),  # option map with a map as key
        (b"\x93\xa1t\x90\x81\x91\x01\x01", "bad_option"),  # ... an array as key
        (b"\x93\xa1t\x90\x81\xa8metadata\xd4\xff\x00", "bad_option"),  # malformed msgpack timestamp
        (b"\x93\xa1t\xd4\xff\x00\x80", "bad_time"),  # Message time: fixext1 type -1
        (b"\x93\xa1t\xc8\x00\x08\x00" + b"\x00" * 8 + b"\x80", None),  # ext16 EventTime: 8 bytes, type 0
    ],
    ids=["map key", "array key", "bad timestamp ext", "timestamp as time", "ext16 event time"],
)
def test_values_python_cannot_hold_are_reported_not_raised(frame, reason):
    conn = ServerConnection("p")
    evs = feed(conn, frame + GOOD)
    if reason is None:
        assert isinstance(evs[0], Chunk) and evs[0].mode == "message"
    else:
        assert isinstance(evs[0], ProtocolError) and (evs[0].reason, evs[0].fatal) == (reason, False)
    assert isinstance(evs[1], Chunk)
