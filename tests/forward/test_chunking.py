"""Property: however a valid stream is split into reads, the events are the
same as when it arrives in one piece. Also EventTime decoding."""

from __future__ import annotations

import gzip
import struct

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probetag.forward import CLOSED, NEED_DATA, Chunk, Heartbeat, ProtocolError, ServerConnection, parse_event_time

from .conftest import event_time, event_time_ext8, feed

text = st.text(max_size=20)
raw = st.binary(max_size=20)
values = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), text, raw, st.floats(allow_nan=False))
records = st.dictionaries(text, values, max_size=5)
times = st.one_of(
    st.integers(0, 2**32 - 1),
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 999_999_999)).map(
        lambda t: msgpack.ExtType(0, struct.pack(">II", *t))
    ),
)
tags = st.text(min_size=1, max_size=30)
entries = st.lists(st.tuples(times, records).map(list), max_size=5)
chunk_ids = st.one_of(st.none(), text, raw)


def _pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _options(cid, size):
    opt = {"size": size}
    if cid is not None:
        opt["chunk"] = cid
    return opt


message = st.builds(lambda tag, t, rec: _pack([tag, t, rec]), tags, times, records)
message_opt = st.builds(lambda tag, t, rec, cid: _pack([tag, t, rec, _options(cid, 1)]), tags, times, records, chunk_ids)
forward = st.builds(lambda tag, es, cid: _pack([tag, es, _options(cid, len(es))]), tags, entries, chunk_ids)
def _packed(tag: str, es: list, cid, as_str: bool) -> bytes:
    """PackedForward with the entries typed as str32 (Fluentd) or bin."""
    payload = b"".join(_pack(e) for e in es)
    body = b"\xdb" + struct.pack(">I", len(payload)) + payload if as_str else _pack(payload)
    return b"\x93" + _pack(tag) + body + _pack(_options(cid, len(es)))


packed = st.builds(_packed, tags, entries, chunk_ids, st.booleans())
gzipped = st.builds(
    lambda tag, es, cid: _pack([tag, gzip.compress(b"".join(_pack(e) for e in es), mtime=0), {**_options(cid, len(es)), "compressed": "gzip"}]),
    tags, entries, chunk_ids,
)
heartbeat = st.just(b"\xc0")
invalid = st.sampled_from([_pack({"a": 1}), _pack([1, 2, 3]), _pack(["t", None]), _pack(["t", [], 7])])
frames = st.lists(st.one_of(message, message_opt, forward, packed, gzipped, heartbeat, invalid), min_size=1, max_size=8)


def _events(conn, pieces: list[bytes]) -> list:
    out = []
    for piece in pieces:
        out += [e for e in feed(conn, piece) if e is not NEED_DATA]
    out += feed(conn, b"", eof=True)
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames, st.data())
def test_split_stream_gives_the_same_events(frame_list, data):
    stream = b"".join(frame_list)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(stream)), max_size=12))))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    pieces = [p for p in pieces if p]  # b"" would mean EOF
    whole = _events(ServerConnection("p"), [stream])
    split = _events(ServerConnection("p"), pieces)
    assert split == whole
    assert whole[-1] is CLOSED
    assert len(whole) == len(frame_list) + 1  # one event per frame, then CLOSED
    assert all(isinstance(e, (Chunk, Heartbeat, ProtocolError)) and not getattr(e, "fatal", False) for e in whole[:-1])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(message, forward, packed), min_size=1, max_size=4))
def test_byte_by_byte_feeding(frame_list):
    stream = b"".join(frame_list)
    assert _events(ServerConnection("p"), [stream[i:i + 1] for i in range(len(stream))]) == _events(
        ServerConnection("p"), [stream]
    )


# ----------------------------------------------------------------- EventTime


def test_event_time_forms():
    fix = msgpack.unpackb(event_time(1700000000, 999_999_999))
    ext8 = msgpack.unpackb(event_time_ext8(1700000000, 999_999_999))
    assert fix == ext8
    assert parse_event_time(fix) == (1700000000, 999_999_999)
    # unsigned: values above 2**31 stay positive (Fluent Bit group markers)
    assert parse_event_time(msgpack.unpackb(event_time(0xFFFFFFFF, 0xFFFFFFFF))) == (2**32 - 1, 2**32 - 1)
    assert parse_event_time(1700000000) == (1700000000, 0)


def test_event_time_rejects_wrong_shapes():
    assert parse_event_time(msgpack.ExtType(0, b"\x00" * 7)) is None
    assert parse_event_time(msgpack.ExtType(0, b"\x00" * 9)) is None
    assert parse_event_time(msgpack.ExtType(1, b"\x00" * 8)) is None
    for other in (1.5, True, None, "1", b"\x00" * 8, [1, {}]):
        assert parse_event_time(other) is None


def test_message_mode_with_ext8_time():
    frame = b"\x93\xa1t" + event_time_ext8(3, 4) + b"\x80"
    (chunk, _) = feed(ServerConnection("p"), frame)
    assert chunk.mode == "message" and chunk.entries == b"\x92" + event_time_ext8(3, 4) + b"\x80"


# ------------------------------------------------------------------ fuzzing


def _run_to_end(conn, data: bytes) -> list:
    evs = [e for e in feed(conn, data) if e is not NEED_DATA]
    evs += feed(conn, b"", eof=True)
    return evs


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6), st.binary(max_size=40))
def test_corrupted_streams_give_events_never_exceptions(frame_list, flips, tail):
    stream = bytearray(b"".join(frame_list))
    for pos, value in flips:
        stream[pos % len(stream)] = value
    from probetag.forward import ClientConnection, ServerSecurity

    for conn in (
        ServerConnection("p"),
        ServerConnection("p", security=ServerSecurity("k", "h")),
        ClientConnection(),
    ):
        evs = _run_to_end(conn, bytes(stream) + tail)
        assert evs[-1] is CLOSED
        assert all(getattr(e, "reason", "x") for e in evs)
