"""Output: enriched records as JSON lines on standard output.

Theory of operation
-------------------
* One line per record: ``{"tag": ..., "time": <float seconds>, "record":
  {...}}`` (``probetag._jsonenc.record_lines``), written in arrival order.
* A chunk is settled only after its lines are written *and flushed*, so an
  upstream ack means the lines reached the pipe or file.
* One writer task owns the stream. The chunks queued while it was busy are
  rendered and written in one go (up to ``MAX_BATCH_RECORDS``), with one
  flush: under load (fluent-logger
  sends one record per frame) the per-write cost is paid once per batch,
  not once per record.
* Rendering and writing happen in a worker thread: a slow reader on the
  other end of the pipe blocks that thread, not the event loop (heartbeats,
  handshakes and acks of other connections keep flowing, and the
  un-settled chunks hold the upstream back).
* A write error (EPIPE: the reader went away) cannot be retried; every
  waiting ``send`` raises ``OutputClosed`` so the runtime leaves those chunks
  un-acked upstream.
"""

from __future__ import annotations

import asyncio
import sys
from typing import BinaryIO

from .._config import Output as OutputConfig
from .._jsonenc import record_lines
from .._metrics import Metrics
from .._chunk import OutChunk, unpacker_for
from . import OutputClosed
from ._common import Queued, SendQueue, stop_sender

__all__ = ["StdoutOutput", "render_chunk", "MAX_BATCH_RECORDS"]

#: Records rendered and written per write (bounds the memory and the time
#: one write holds the lines of the chunks behind it).
MAX_BATCH_RECORDS = 10_000


def render_chunk(chunk: OutChunk) -> bytes:
    """The JSON lines of one chunk."""
    return record_lines(chunk.tag, unpacker_for(chunk.entries))


class StdoutOutput:
    def __init__(self, config: OutputConfig, metrics: Metrics, stream: BinaryIO | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.stream: BinaryIO = stream if stream is not None else sys.stdout.buffer
        self._queue = SendQueue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def send(self, chunk: OutChunk) -> None:
        if self._closed:
            raise OutputClosed("stdout output is closed")
        if self._task is None:
            await self.start()
        await self._queue.put(chunk)

    async def _run(self) -> None:
        queue = self._queue.items
        while True:
            await self._queue.wait()
            batch: list[Queued] = []
            records = 0
            while queue and records < MAX_BATCH_RECORDS:
                item = queue.popleft()
                if not item.future.done():  # done = its waiter was cancelled (shutdown)
                    batch.append(item)
                    records += item.chunk.count
            if not batch:
                continue
            chunks = [i.chunk for i in batch]
            try:
                await asyncio.to_thread(self._write, chunks)
            except (OSError, ValueError) as exc:  # ValueError: write to a closed file
                self._closed = True
                self.metrics.inc("output_errors", reason="stdout_write")
                error = OutputClosed(f"stdout: {exc}")
                self._fail(batch, error)
                self._queue.fail_all(lambda: error)
                return
            self.metrics.inc("chunks_out", len(chunks))
            self.metrics.inc("records_out", sum(c.count for c in chunks))
            for item in batch:
                if not item.future.done():
                    item.future.set_result(None)

    def _write(self, chunks: list[OutChunk]) -> None:
        self.stream.write(b"".join(render_chunk(c) for c in chunks))
        self.stream.flush()

    @staticmethod
    def _fail(items: list[Queued], exc: Exception) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(exc)

    async def close(self) -> None:
        self._closed = True
        await stop_sender(self._task)
        error = OutputClosed("stdout output closed")
        self._queue.fail_all(lambda: error)
