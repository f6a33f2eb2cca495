"""The runtime between inputs and outputs: flow control, delivery, settling.

Theory of operation
-------------------
* An input hands the pipeline one chunk at a time: ``submit(tag, entries,
  nbytes, on_settled)``. The pipeline runs ``Processor.process`` on it
  synchronously (CPU work in the event loop, one call per chunk, no
  per-record coroutines), hands the resulting ``OutChunk``s to the output and
  calls ``on_settled(True)`` once *all* of them are settled downstream (acked
  by the downstream forward server, or written and flushed to stdout). Only
  then does the forward input write ``{"ack": chunk}`` upstream: acks are end
  to end. A chunk whose records were all dropped or rejected has nothing to
  wait for and is settled at once.
* ``on_settled(False)`` means the output is gone (stdout closed, shutdown):
  the input must not ack; the upstream keeps the chunk and resends it.
* Flow control bounds what is in flight (records read but not settled):
  ``flow.max_inflight_records`` and ``flow.max_inflight_bytes``. Inputs
  ``await wait_capacity()`` before handing over the next chunk and before
  the next socket read, so when the bound is hit they simply stop reading:
  the kernel buffers fill, TCP windows close and the senders' writes block.
  The bound is checked before a chunk is admitted, so what is in flight
  exceeds it by at most one chunk (a chunk larger than the bound must still
  be able to pass).
* Inside the bound each input connection gets its share
  (``FlowControl``): with n connections holding or wanting room, one that
  holds ``1/n`` waits while others want in, so a flood cannot take every
  slot a slow downstream frees.
* Outputs never give up, so when the downstream is down the in-flight
  records stay at the bound and everything upstream waits; nothing is
  dropped.
* Hand-over: an output with ``send_nowait(chunk)`` (the forward output)
  queues the chunk at once and returns the future its delivery settles;
  the pipeline settles the chunk from that future's done callback, not
  from a task per chunk that awaits ``send`` (a task, its coroutines and
  their wake-ups per chunk were per-chunk work on the hot path). Chunks
  are queued in the order they were processed; ``close`` cancels the
  futures, which settles their chunks as not delivered, as cancelling the
  tasks did. Other outputs get the task.
* Scan summaries: if the processor has ``expire(now)``, it is called every
  ``EXPIRE_INTERVAL`` seconds and the chunks it returns go to the output like
  any other (they have no upstream to ack). At shutdown ``flush_summaries``
  ends every open scan so no summary is lost with the process.
* Logs are one line each, ``key=value`` (logfmt), on stderr; secrets never
  reach them (only addresses, reasons and counts are logged). A process
  started by ``serve --workers N`` adds ``worker=I`` to each of its lines.
* ``tune_malloc()`` (serve start-up): glibc serves every allocation above
  ``M_MMAP_THRESHOLD`` (128 KiB at first, adapted upwards only after frees)
  with a fresh ``mmap``, and trims the heap top above ``M_TRIM_THRESHOLD``;
  every such buffer page-faults again on first touch. Parsing 4 MB frames
  then costs 5-10 ms/MB instead of 0.6 ms/MB. Raising the two thresholds
  (32 MiB, 128 MiB) keeps big buffers in the heap and reuses their pages.
  The price is RSS: up to ~128 MiB of freed heap may stay mapped. A no-op
  on other C libraries.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from bisect import bisect_right
from typing import Any, Callable

from ._config import Flow
from ._logging import log_event, setup_logging
from ._metrics import Metrics
from ._chunk import OutChunk
from ._stage import ChunkRejected, Processor, walk_entries
from .outputs import Output, OutputClosed

__all__ = ["FlowControl", "Pipeline", "log_event", "setup_logging", "tune_malloc", "EXPIRE_INTERVAL"]

EXPIRE_INTERVAL = 1.0

_log = logging.getLogger("probetag")

#: Entries the stage processes in one go: a chunk with more is handed over
#: in slices of this many, the event loop serving others in between
#: (~20 ms of stage work per slice at the worst ~1 us an entry).
SLICE_ENTRIES = 20_000
#: Bytes of entries the stage processes in one go, likewise (a slice holds
#: one entry at least): a chunk's cost grows with its bytes too, in the
#: probe lines it holds (an 8 MB Fluentd chunk of scan lines is ~50,000 of
#: them, ~1 s of detection).
SLICE_BYTES = 1024 * 1024


#: glibc <malloc.h> parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 128 * 1024 * 1024


def tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds (see above); True if applied."""
    import ctypes
    import ctypes.util
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on error.
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


class FlowControl:
    """Counts records and bytes in flight and tells inputs when to wait.

    Fairness: each *owner* (a forward connection, an HTTP peer) that has
    records in flight or is waiting to hand some over is *active*; with n
    active owners, one that already holds ``max / n`` records or bytes in
    flight waits even when there is room, so the room it would take goes to
    the others. An owner with nothing in flight passes whenever there is
    room at all, and what is in flight exceeds a share by at most one chunk.
    A connection flooding a slow downstream therefore holds about the whole
    bound while it is alone, and about half of it as soon as a second one
    wants in: the second one's chunk is admitted at the next release
    instead of competing with the flood for every freed slot."""

    def __init__(self, config: Flow, metrics: Metrics) -> None:
        self.max_records = config.max_inflight_records
        self.max_bytes = config.max_inflight_bytes
        self.metrics = metrics
        self.records = 0
        self.bytes = 0
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        #: owner -> [records, bytes] in flight (only owners with some)
        self._held: dict[Any, list[int]] = {}
        #: owners waiting in ``wait`` (how many waits each: a connection may
        #: wait in two places at once)
        self._waiting: dict[Any, int] = {}
        #: woken on every release and every change of the active owners
        self._changed: asyncio.Future[None] | None = None

    @property
    def full(self) -> bool:
        return self.records >= self.max_records or self.bytes >= self.max_bytes

    def active(self) -> int:
        """Owners with records in flight or waiting to hand some over."""
        if not self._waiting:
            return len(self._held)
        return len(self._held.keys() | self._waiting.keys())

    def over_share(self, owner: Any) -> bool:
        """Does ``owner`` hold its share (or more) while others want in?"""
        if owner is None:
            return False
        held = self._held.get(owner)
        if held is None:
            return False
        n = self.active()
        if n <= 1:
            return False
        return held[0] * n >= self.max_records or held[1] * n >= self.max_bytes

    def blocked(self, owner: Any = None) -> bool:
        """Must ``owner`` wait before handing over its next chunk?"""
        return self.full or self.over_share(owner)

    async def wait(self, owner: Any = None) -> None:
        """Return when ``owner`` may hand over one more chunk."""
        if not self.blocked(owner):
            return
        self.metrics.inc("backpressure_waits")
        if owner is None:
            await self._room.wait()
            return
        first = owner not in self._waiting
        self._waiting[owner] = self._waiting.get(owner, 0) + 1
        if first:
            self._notify()  # one more active owner: the others' shares shrink
        try:
            while self.blocked(owner):
                if self.over_share(owner) and not self.full:
                    self.metrics.inc("fair_share_waits")
                if self._changed is None or self._changed.done():
                    self._changed = asyncio.get_running_loop().create_future()
                await asyncio.shield(self._changed)
        finally:
            left = self._waiting[owner] - 1
            if left:
                self._waiting[owner] = left
            else:
                del self._waiting[owner]
                self._notify()

    def add(self, records: int, nbytes: int, owner: Any = None) -> None:
        self.records += records
        self.bytes += nbytes
        if owner is not None:
            held = self._held.get(owner)
            if held is None:
                self._held[owner] = [records, nbytes]
                self._notify()
            else:
                held[0] += records
                held[1] += nbytes
        self._update()

    def release(self, records: int, nbytes: int, owner: Any = None) -> None:
        self.records -= records
        self.bytes -= nbytes
        if owner is not None:
            held = self._held[owner]
            held[0] -= records
            held[1] -= nbytes
            if held[0] <= 0 and held[1] <= 0:
                del self._held[owner]
        self._update()
        self._notify()

    def _notify(self) -> None:
        changed = self._changed
        if changed is not None and not changed.done():
            changed.set_result(None)

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def _update(self) -> None:
        self.metrics.set("inflight_records", self.records)
        self.metrics.set("inflight_bytes", self.bytes)
        if self.full:
            self._room.clear()
        else:
            self._room.set()
        if self.records == 0 and self.bytes == 0:
            self._idle.set()
        else:
            self._idle.clear()


Settled = Callable[[bool], None]


class Pipeline:
    """Processor -> output, with flow control and end-to-end settling."""

    def __init__(self, processor: Processor, output: Output, flow: Flow, metrics: Metrics) -> None:
        self.processor = processor
        self.output = output
        self.metrics = metrics
        self.flow = FlowControl(flow, metrics)
        self._tasks: set[asyncio.Task[None]] = set()
        #: Futures of chunks handed over by ``_hand_over``, not settled yet.
        self._waiting: set[asyncio.Future[None]] = set()
        self._expirer: asyncio.Task[None] | None = None
        self._closed = False
        #: Set when the output reported it is gone for good (stdout closed);
        #: ``probetag serve`` then shuts down instead of refusing every chunk.
        self.output_failed = asyncio.Event()

    async def start(self) -> None:
        await self.output.start()
        if hasattr(self.processor, "expire"):
            self._expirer = asyncio.get_running_loop().create_task(self._expire_loop())

    def unhealthy(self) -> str | None:
        """Why this pipeline cannot take records now (``/health`` answers 503
        with it), or None: the output is gone, the downstream is failing, or
        the in-flight limit is reached (inputs have stopped reading)."""
        if self.output_failed.is_set():
            return "output closed"
        down = getattr(self.output, "down", None)
        if down:
            return f"downstream down: {down}"
        if self.flow.full:
            return (f"in-flight limit reached: {self.flow.records}/{self.flow.max_records} records, "
                    f"{self.flow.bytes}/{self.flow.max_bytes} bytes")
        return None

    async def wait_capacity(self, owner: Any = None) -> None:
        """Until ``owner`` (an input's connection, for its fair share; None:
        the bound only) may hand over its next chunk."""
        await self.flow.wait(owner)

    def submit(self, tag: str, entries: bytes, nbytes: int, on_settled: Settled | None = None,
               walked: Any = None, peer: str = "", owner: Any = None) -> None:
        """Process one chunk now; ``on_settled(ok)`` is called once its output
        is settled (at once when nothing is left to deliver). ``walked``: the
        chunk's ``walk_entries`` result when the input has it already;
        ``peer``: the sender's address, kept with the output chunks;
        ``owner``: whose share of the in-flight bound the chunk counts in."""
        if self._closed:
            if on_settled is not None:
                on_settled(False)
            return
        if walked is None:
            result = self.processor.process(tag, entries)
        else:
            result = self.processor.process(tag, entries, walked)
        if peer:
            for c in result.chunks:
                c.peer = peer
        self._dispatch(result.chunks, nbytes, on_settled, owner)

    async def submit_sliced(self, tag: str, entries: bytes, cuts: list[int], on_settled: Settled,
                            peer: str = "", owner: Any = None) -> None:
        """``submit`` one slice at a time (``cuts``: ``slice_cuts``), the
        loop running others between them (the stage is synchronous: one
        slice is its longest stall). ``on_settled(ok)`` once every slice
        has settled: True when all of them were delivered."""
        left = len(cuts) - 1
        all_ok = True

        def part_settled(ok: bool) -> None:
            nonlocal left, all_ok
            all_ok = all_ok and ok
            left -= 1
            if left == 0:
                on_settled(all_ok)

        for k in range(len(cuts) - 1):
            if k:
                await asyncio.sleep(0)
            try:
                self.submit(tag, entries[cuts[k]:cuts[k + 1]], cuts[k + 1] - cuts[k], part_settled,
                            peer=peer, owner=owner)
            except Exception:
                # Our bug: the slices not handed over count as failed, so
                # the chunk is not acked (settled once, here).
                self.metrics.inc("internal_errors", where="process")
                _log.exception("event=process_failed peer=%s tag=%s", peer, tag)
                left -= len(cuts) - 2 - k
                part_settled(False)
                return

    def _dispatch(self, chunks: list[OutChunk], nbytes: int, on_settled: Settled | None,
                  owner: Any = None) -> None:
        if not chunks:
            if on_settled is not None:
                on_settled(True)
            return
        records = sum(c.count for c in chunks)
        self.flow.add(records, nbytes, owner)
        send_nowait = getattr(self.output, "send_nowait", None)
        if send_nowait is not None:
            self._hand_over(send_nowait, chunks, records, nbytes, on_settled, owner)
            return
        task = asyncio.get_running_loop().create_task(
            self._deliver(chunks, records, nbytes, on_settled, owner, time.monotonic()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _hand_over(self, send_nowait: Callable[[OutChunk], asyncio.Future[None]],
                   chunks: list[OutChunk], records: int, nbytes: int,
                   on_settled: Settled | None, owner: Any) -> None:
        """``_deliver`` without a task (see "Hand-over" above): the chunks
        are queued at once, in order, and the first failure or the last
        success settles them, as ``asyncio.gather`` did in ``_deliver``."""
        t0 = time.monotonic()
        futures = [send_nowait(c) for c in chunks]
        left = len(futures)
        settled = False
        waiting = self._waiting

        def done(fut: asyncio.Future[None]) -> None:
            nonlocal left, settled
            waiting.discard(fut)
            left -= 1
            if settled:
                if not fut.cancelled():
                    fut.exception()  # retrieved, as gather does: no "never retrieved" log
                return
            failed = fut.cancelled() or fut.exception() is not None
            if not failed and left:
                return
            settled = True
            for other in futures:
                waiting.discard(other)  # the others settle nothing more
            self._settle(fut, records, nbytes, on_settled, owner, t0)

        for fut in futures:
            waiting.add(fut)
            fut.add_done_callback(done)

    def _settle(self, fut: asyncio.Future[None], records: int, nbytes: int,
                on_settled: Settled | None, owner: Any, t0: float) -> None:
        """What ``_deliver`` does once its sends returned or raised, for the
        future that decided it."""
        ok = False
        if not fut.cancelled():
            exc = fut.exception()
            if exc is None:
                ok = True
            else:
                self._failed(exc, records)
        self._delivered(ok, records, nbytes, owner, t0, on_settled)

    def _failed(self, exc: BaseException, records: int) -> None:
        if isinstance(exc, OutputClosed):
            if not self._closed and not self.output_failed.is_set():
                log_event(logging.ERROR, "output_closed", records=records, reason=str(exc))
            self.output_failed.set()
        else:  # our bug: keep serving, never ack what was not delivered
            self.metrics.inc("internal_errors", where="output")
            _log.error("event=output_failed records=%d", records, exc_info=exc)

    def _delivered(self, ok: bool, records: int, nbytes: int, owner: Any, t0: float,
                   on_settled: Settled | None) -> None:
        """A delivery settled: its flow-control share released, its time
        counted when it succeeded, and its upstream told."""
        self.flow.release(records, nbytes, owner)
        if ok and t0:
            # processed -> acked downstream, per chunk (a Prometheus
            # summary without quantiles: rate(sum) / rate(count))
            self.metrics.inc("delivery_seconds_sum", time.monotonic() - t0)
            self.metrics.inc("delivery_seconds_count")
        if on_settled is not None:
            try:
                on_settled(ok)
            except Exception:
                self.metrics.inc("internal_errors", where="on_settled")
                _log.exception("event=settle_callback_failed")

    async def _deliver(self, chunks: list[OutChunk], records: int, nbytes: int,
                       on_settled: Settled | None, owner: Any = None, t0: float = 0.0) -> None:
        ok = False
        try:
            if len(chunks) == 1:
                await self.output.send(chunks[0])
            else:
                await asyncio.gather(*(self.output.send(c) for c in chunks))
            ok = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(exc, records)
        finally:
            self._delivered(ok, records, nbytes, owner, t0, on_settled)

    async def _expire_loop(self) -> None:
        expire = getattr(self.processor, "expire")
        while True:
            await asyncio.sleep(EXPIRE_INTERVAL)
            try:
                chunks = expire(time.time())
            except Exception:
                self.metrics.inc("internal_errors", where="expire")
                _log.exception("event=expire_failed")
                continue
            if chunks:
                self._dispatch(list(chunks), 0, None)

    def flush_summaries(self) -> None:
        """Shutdown: end every open scan so its summary still goes out
        (``expire`` at infinity treats every source as idle)."""
        expire = getattr(self.processor, "expire", None)
        if expire is None or self._closed:
            return
        try:
            chunks = expire(math.inf)
        except Exception:
            self.metrics.inc("internal_errors", where="expire")
            _log.exception("event=expire_failed")
            return
        if chunks:
            self._dispatch(list(chunks), 0, None)

    async def drain(self, timeout: float) -> bool:
        """Wait until nothing is in flight (True) or ``timeout`` passes (False)."""
        try:
            await asyncio.wait_for(self.flow.wait_idle(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def close(self) -> None:
        """Stop: cancel what is still undelivered (left un-acked upstream) and
        close the output."""
        self._closed = True
        if self._expirer is not None:
            self._expirer.cancel()
        for t in list(self._tasks):
            t.cancel()
        waiting = list(self._waiting)
        for f in waiting:
            f.cancel()  # settles its chunk as not delivered, as a task's cancel does
        if self._tasks or waiting:
            await asyncio.wait(list(self._tasks) + waiting, timeout=5)
        await self.output.close()


def slice_cuts(entries: bytes, max_entries: int) -> tuple[list[int] | None, Any]:
    """(offsets cutting ``entries`` into slices of at most ``SLICE_ENTRIES``
    entries and ``SLICE_BYTES`` bytes (or one entry), first 0 and last
    len(entries), or None when one slice holds them all; the walk, handed
    to the stage so that it does not walk again, or None). Past
    ``max_entries`` it raises ``ChunkRejected`` before any slice is handed
    over. Walked only when the chunk could hold more than one slice (an
    entry takes a byte at least)."""
    if len(entries) <= SLICE_ENTRIES:
        return None, None
    walked = walk_entries(entries, max_entries)
    starts, _slow, _end, error = walked
    if error == "too_many_entries":
        raise ChunkRejected(error, f"more than {max_entries} entries")
    count = len(starts) - 1
    if count <= SLICE_ENTRIES and len(entries) <= SLICE_BYTES:
        return None, walked
    cuts = [0]
    i = 0
    while True:
        j = min(i + SLICE_ENTRIES, count)
        if starts[j] - starts[i] > SLICE_BYTES:
            # the last entry start within SLICE_BYTES, one entry at least
            j = max(bisect_right(starts, starts[i] + SLICE_BYTES, i + 1, j) - 1, i + 1)
        if j >= count:
            break
        cuts.append(int(starts[j]))
        i = j
    if len(cuts) == 1:
        return None, walked
    # The last slice runs to the end: a truncated tail is the stage's to report.
    return cuts + [len(entries)], None
