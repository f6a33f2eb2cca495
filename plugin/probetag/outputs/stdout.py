"""Output: enriched records as JSON lines on standard output.

Theory of operation
-------------------
* One line per record: ``{"tag": ..., "time": <float seconds>, "record":
  {...}}`` (``probetag._jsonenc.record_line``), written in chunk order.
* A chunk is settled only after its lines are written *and flushed*, so an
  upstream ack means the lines reached the pipe or file.
* Writes happen in a worker thread: a slow reader on the other end of the
  pipe blocks that thread, not the event loop (heartbeats, handshakes and
  acks of other connections keep flowing, and the un-settled chunks hold the
  upstream back). One ``asyncio.Lock`` keeps chunks in arrival order.
* A write error (EPIPE: the reader went away) cannot be retried; it raises
  ``OutputClosed`` so the runtime leaves the chunk un-acked upstream.
"""

from __future__ import annotations

import asyncio
import sys
from typing import BinaryIO

from .._config import Output as OutputConfig
from .._jsonenc import record_lines
from .._metrics import Metrics
from .._stage import OutChunk, unpacker_for
from . import OutputClosed

__all__ = ["StdoutOutput", "render_chunk"]


def render_chunk(chunk: OutChunk) -> bytes:
    """The JSON lines of one chunk."""
    return record_lines(chunk.tag, unpacker_for(chunk.entries))


class StdoutOutput:
    def __init__(self, config: OutputConfig, metrics: Metrics, stream: BinaryIO | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.stream: BinaryIO = stream if stream is not None else sys.stdout.buffer
        self._lock = asyncio.Lock()
        self._closed = False

    async def start(self) -> None:
        return None

    async def send(self, chunk: OutChunk) -> None:
        if self._closed:
            raise OutputClosed("stdout output is closed")
        data = render_chunk(chunk)
        async with self._lock:
            try:
                await asyncio.to_thread(self._write, data)
            except (OSError, ValueError) as exc:  # ValueError: write to a closed file
                self._closed = True
                self.metrics.inc("output_errors", reason="stdout_write")
                raise OutputClosed(f"stdout: {exc}") from exc
        self.metrics.inc("chunks_out")
        self.metrics.inc("records_out", chunk.count)

    def _write(self, data: bytes) -> None:
        self.stream.write(data)
        self.stream.flush()

    async def close(self) -> None:
        self._closed = True
