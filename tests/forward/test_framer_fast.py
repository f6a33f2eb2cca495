"""The framer's fast path for big PackedForward frames (headers read directly,
no skipper) must cut, bound and reject exactly as the skipper path does.
Each case runs the same bytes through both paths (the fast path switched off
by raising its size threshold) and compares the events."""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probetag.forward import CLOSED, NEED_DATA, Chunk, Limits, ProtocolError, ServerConnection
from probetag.forward import _wire

from .conftest import drain, event_time

BIG = _wire._BIG_PAYLOAD  # noqa: SLF001 - the threshold under test


def _pk(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _entries(n: int, width: int) -> bytes:
    return b"".join(b"\x92" + event_time(1_700_000_000 + i) + _pk({"message": "m" * width, "i": i})
                    for i in range(n))


def _packed(tag: str, payload: bytes, option=None, as_str: bool = False) -> bytes:
    body = (b"\xdb" + struct.pack(">I", len(payload)) + payload) if as_str else _pk(payload)
    if option is None:
        return b"\x92" + _pk(tag) + body
    return b"\x93" + _pk(tag) + body + _pk(option)


def _summary(events: list) -> list:
    out = []
    for ev in events:
        if isinstance(ev, Chunk):
            # The type too: the stage needs bytes (it calls entries.find),
            # and the fast path cuts its frames as views.
            out.append(("chunk", ev.tag, ev.entries, ev.chunk_id, ev.mode, ev.size_hint,
                        ev.frame_bytes, type(ev.entries)))
        elif isinstance(ev, ProtocolError):
            out.append(("error", ev.reason, ev.fatal, ev.chunk_id))
        elif ev is NEED_DATA or ev is CLOSED:
            continue
        else:
            out.append((type(ev).__name__,))
    return out


def _run(pieces: list[bytes], limits: Limits, *, eof: bool = True) -> list:
    conn = ServerConnection("p", limits)
    events: list = []
    for piece in pieces:
        conn.receive_data(piece)
        events += drain(conn)
        if conn.closed:
            break
    if eof and not conn.closed:
        conn.receive_data(b"")
        events += drain(conn)
    return _summary(events)


def _both(pieces: list[bytes], limits: Limits = Limits(), monkeypatch=None, **kw) -> tuple[list, list]:
    fast = _run(pieces, limits, **kw)
    monkeypatch.setattr(_wire, "_BIG_PAYLOAD", 1 << 62)
    slow = _run(pieces, limits, **kw)
    monkeypatch.undo()
    return fast, slow


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    cuts = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


# Built once: a few payloads just over and well over the threshold.
_PAYLOADS = [_entries(n, 150) for n in (BIG // 160 + 1, BIG // 100 + 40)]
assert all(len(p) >= BIG for p in _PAYLOADS)
big_payload = st.sampled_from(_PAYLOADS)
options = st.one_of(
    st.none(),
    st.fixed_dictionaries({"size": st.integers(0, 5000)}),
    st.fixed_dictionaries({"size": st.integers(0, 5000), "chunk": st.text(min_size=1, max_size=24)}),
    st.fixed_dictionaries({"chunk": st.binary(min_size=1, max_size=24),
                           "metadata": st.dictionaries(st.text(max_size=8), st.integers(-(2**31), 2**31), max_size=4)}),
)
small = st.sampled_from([_pk(["s.t", 1_700_000_000, {"a": 1}]), _pk(["s.t", [[1, {"b": 2}]]]), b"\xc0",
                         _packed("s.t", _entries(2, 10), {"size": 2})])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(st.one_of(st.tuples(st.text(min_size=1, max_size=20), big_payload, options, st.booleans())
                                 .map(lambda t: _packed(*t)), small), min_size=1, max_size=5),
       cuts=st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=8))
def test_any_split_gives_the_skipper_paths_events(frames, cuts):
    stream = b"".join(frames)
    mp = pytest.MonkeyPatch()
    try:
        fast, slow = _both(_split(stream, cuts), monkeypatch=mp)
    finally:
        mp.undo()
    assert fast == slow
    whole = _run([stream], Limits())
    assert fast == whole
    assert sum(1 for e in fast if e[0] == "chunk") == sum(1 for f in frames if f != b"\xc0")


def test_big_frame_is_cut_without_a_skipper():
    frame = _packed("big.t", _entries(200, 150), {"size": 200, "chunk": "c1"})
    conn = ServerConnection("p")
    framer = conn._framer  # noqa: SLF001 - which path ran is internal state
    conn.receive_data(frame[:BIG + 10])
    assert drain(conn) == [NEED_DATA]
    assert not framer.skipper_active
    conn.receive_data(frame[BIG + 10:] + frame[:100])
    evs = drain(conn)
    assert isinstance(evs[0], Chunk) and evs[0].chunk_id == "c1" and evs[0].size_hint == 200
    assert evs[0].entries == _entries(200, 150) and evs[-1] is NEED_DATA
    assert framer.buffered == 100


def test_a_skipper_left_at_a_frame_boundary_is_dropped(monkeypatch):
    small_frame = _pk(["s.t", 1_700_000_000, {"a": 1}])
    frame = _packed("big.t", _entries(200, 150), {"size": 200})
    conn = ServerConnection("p")
    framer = conn._framer  # noqa: SLF001
    conn.receive_data(small_frame + frame[:3])  # too little to tell the big frame's shape
    evs = drain(conn)
    assert isinstance(evs[0], Chunk) and framer.skipper_active
    conn.receive_data(frame[3:])
    evs = drain(conn)
    assert isinstance(evs[0], Chunk) and evs[0].entries == _entries(200, 150)
    assert not framer.skipper_active


@pytest.mark.parametrize("pieces", [1, 3])
def test_declared_payload_over_the_limit_fails_as_on_the_skipper_path(pieces, monkeypatch):
    limit = BIG + 1000
    frame = _packed("big.t", _entries(300, 150), {"size": 300})
    assert len(frame) > limit
    step = -(-len(frame) // pieces)
    data = [frame[:6]] + [frame[6 + i * step:6 + (i + 1) * step] for i in range(pieces)]
    fast, slow = _both(data, Limits(max_frame_bytes=limit), monkeypatch=monkeypatch)
    assert fast == slow == [("error", "frame_too_large", True, None)]


def test_frame_exactly_at_the_limit_is_accepted_on_the_fast_path():
    frame = _packed("big.t", _entries(200, 150), {"size": 200})
    assert _run([frame], Limits(max_frame_bytes=len(frame)))[0][0] == "chunk"
    assert _run([frame], Limits(max_frame_bytes=len(frame) - 1)) == [("error", "frame_too_large", True, None)]


def test_never_used_byte_in_the_option_is_a_parse_error(monkeypatch):
    frame = _packed("big.t", _entries(200, 150), {"size": 200})
    bad = frame[:-len(_pk({"size": 200}))] + b"\x81\xa4size\xc1"
    fast, slow = _both([bad, _packed("big.t", _entries(200, 150))], monkeypatch=monkeypatch)
    assert fast == slow == [("error", "parse_error", True, None)]


def test_option_map_beyond_the_walk_budget_goes_to_the_skipper(monkeypatch):
    option = {f"k{i}": i for i in range(_wire._WALK_BUDGET)}  # noqa: SLF001
    option["chunk"] = "long-option"
    frame = _packed("big.t", _entries(200, 150), option)
    fast, slow = _both(_split(frame, [7, 9000, len(frame) - 5]), monkeypatch=monkeypatch)
    assert fast == slow
    assert fast[0][0] == "chunk" and fast[0][3] == "long-option"


def test_truncated_big_frame_at_eof(monkeypatch):
    frame = _packed("big.t", _entries(200, 150), {"size": 200})
    fast, slow = _both([frame[:-3]], monkeypatch=monkeypatch)
    assert fast == slow == [("error", "truncated_frame", True, None)]


def test_fast_frame_is_a_view_that_later_bytes_leave_alone():
    """The fast path hands out its frame as a view of the buffer it arrived
    in (no copy of its own); the framer must never write to that buffer
    again, whatever it receives next."""
    frame = _packed("t", _entries(300, 80), {"chunk": "c1", "size": 300})
    framer = _wire.Framer(1 << 20)
    framer.feed(frame + frame[:1000])
    first = framer.next_frame()
    assert isinstance(first, memoryview)
    assert first == frame
    assert framer.buffered == 1000
    framer.feed(frame[1000:] + b"\xc0")
    second = framer.next_frame()
    assert first == frame and second == frame
    assert framer.next_frame() == b"\xc0"
    assert framer.buffered == 0


def test_many_buffered_fast_frames_each_come_out_whole():
    """Many fast-path frames buffered at once, each kept by the caller (so
    each pins the buffer it is a view of): every frame still comes out
    whole and unchanged by the ones cut after it."""
    frames = [_packed("t", _entries(200 + i, 100), {"chunk": f"c{i}"}) for i in range(12)]
    framer = _wire.Framer(1 << 20)
    framer.feed(b"".join(frames))
    got = []
    while (frame := framer.next_frame()) is not None:
        got.append(frame)
    assert [bytes(f) for f in got] == frames
    assert all(isinstance(f, memoryview) for f in got)
    assert framer.buffered == 0


def test_a_released_fast_frame_is_dropped_in_place():
    """A frame nobody keeps is dropped from the front of the same buffer
    (no copy of the bytes after it); the buffered count never includes it."""
    frame = _packed("t", _entries(300, 80), {"chunk": "c1"})
    framer = _wire.Framer(1 << 20)
    framer.feed(frame + frame[:500])
    got = framer.next_frame()
    assert got == frame and framer.buffered == 500
    buf = framer._buf  # noqa: SLF001 - the buffer under test
    got.release()
    framer.feed(frame[500:])
    assert framer._buf is buf  # noqa: SLF001
    assert framer.next_frame() == frame
