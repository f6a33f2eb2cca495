"""What an idle connection costs: the framer's msgpack skipper (about 1 MiB
of buffer and a zeroed 40 KiB parse stack) exists only while a frame is in
progress. Measured with tracemalloc over many in-memory connections."""

from __future__ import annotations

import gc
import tracemalloc

import msgpack

from probetag.forward import NEED_DATA, Chunk, ServerConnection

from .conftest import drain

#: Per idle connection. Before the skipper was created lazily, tracemalloc
#: counted about 1,090,000 bytes per connection (the Unpacker's buffer).
IDLE_BOUND = 8 * 1024
N = 1000


def _per_connection(make) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = [make(i) for i in range(N)]
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(held) == N
    return (after - before) / N


def test_idle_connection_without_data_is_small():
    per = _per_connection(lambda i: ServerConnection(f"127.0.0.1:{i}"))
    assert per < IDLE_BOUND, f"{per:.0f} bytes per idle connection"


def _frame(i: int) -> bytes:
    return msgpack.packb(["mem.t", 1700000000 + i, {"message": "x" * 100}], use_bin_type=True)


def test_connection_idle_again_after_a_frame_releases_the_skipper():
    def used(i: int) -> ServerConnection:
        conn = ServerConnection(f"127.0.0.1:{i}")
        conn.receive_data(_frame(i))
        evs = drain(conn)
        assert isinstance(evs[0], Chunk) and evs[-1] is NEED_DATA
        return conn
    per = _per_connection(used)
    assert per < IDLE_BOUND, f"{per:.0f} bytes per connection idle after one frame"


def test_skipper_lives_while_a_frame_is_in_progress_and_goes_after():
    conn = ServerConnection("127.0.0.1")
    framer = conn._framer  # noqa: SLF001 - the skipper is internal state
    assert not framer.skipper_active
    one, two = _frame(1), _frame(2)
    # A frame and the first half of the next one: the skipper must keep its
    # place in the unfinished frame.
    conn.receive_data(one + two[:7])
    evs = drain(conn)
    assert [type(e) for e in evs] == [Chunk, type(NEED_DATA)]
    assert framer.skipper_active and framer.buffered == 7
    conn.receive_data(two[7:])
    evs = drain(conn)
    assert isinstance(evs[0], Chunk) and msgpack.unpackb(evs[0].entries) == [1700000002, {"message": "x" * 100}]
    assert evs[-1] is NEED_DATA
    assert not framer.skipper_active and framer.buffered == 0
    # A new skipper after the release starts a fresh stream offset: frames
    # after it are cut where they really end.
    for i in range(3, 6):
        conn.receive_data(_frame(i))
        evs = drain(conn)
        assert len(evs) == 2 and msgpack.unpackb(evs[0].entries)[0] == 1700000000 + i
