"""Output: newline-delimited JSON over TCP, for Vector's ``socket`` source. No acks.

Theory of operation
-------------------
* Each record becomes one JSON object and a ``\\n``: the record's fields,
  plus ``tag`` and ``timestamp`` (RFC 3339, UTC, 9 fraction digits), the
  inverse of the Vector mapping in ``probetag._vector``. Vector's
  ``socket`` source (``mode: tcp``, ``decoding.codec: json``,
  ``framing.method: newline_delimited``) turns each line into one event.
* **There are no acks on this path.** The socket source never answers, so a
  chunk counts as delivered (settled, and acked upstream) once its bytes are
  written and the kernel took them (``drain``). Records in the kernel send
  buffer when the connection breaks, or in Vector when it stops, are lost.
  Use the ``forward`` output to Vector's ``fluent`` source for end-to-end
  acks.
* Writing fails -> the connection is dropped and the *whole* chunk is
  written again on a new one (we cannot know how much of it arrived), so
  records may be duplicated around a broken connection; that is counted as
  ``output_retries``. Connecting fails -> retry with exponential backoff
  (``output.retry_initial`` doubling up to ``output.retry_max``), forever:
  like every output this one never gives up, the un-settled chunk holds the
  upstream back instead.
* One chunk at a time (an ``asyncio.Lock``), so records leave in the order
  the pipeline settled them. A peer that closed its side is noticed before
  the next write (EOF on our read side) instead of losing that write.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl

from .._config import Output as OutputConfig
from .._config import parse_hostport
from .._metrics import Metrics
from .._logging import log_event
from .._chunk import OutChunk, unpacker_for
from .._vector import entry_to_event
from . import OutputClosed
from ._common import client_ssl_context

__all__ = ["NdjsonOutput", "render_ndjson"]

log = logging.getLogger("probetag.outputs.ndjson")

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def render_ndjson(chunk: OutChunk, *, tag_field: str = "tag", time_field: str = "timestamp") -> bytes:
    """The NDJSON lines of one chunk (each ends in ``\\n``)."""
    out = []
    for t, record in unpacker_for(chunk.entries):
        ev = entry_to_event(chunk.tag, t, record, tag_field=tag_field, time_field=time_field)
        out.append(_encoder.encode(ev).encode("utf-8"))
        out.append(b"\n")
    return b"".join(out)


class NdjsonOutput:
    def __init__(self, config: OutputConfig, metrics: Metrics) -> None:
        if not config.address:
            raise ValueError("output.address is required for the ndjson output")
        self.config = config
        self.metrics = metrics
        self.host, self.port = parse_hostport(config.address)
        self._ssl = client_ssl_context(config.tls) if config.tls else None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._closed_event = asyncio.Event()
        #: Why the last write failed, until one succeeds (``/health``).
        self.down: str | None = None

    async def start(self) -> None:
        return None  # connect lazily: a downstream that is down must not stop start-up

    async def send(self, chunk: OutChunk) -> None:
        data = render_ndjson(chunk)
        delay = self.config.retry_initial
        async with self._lock:
            while True:
                if self._closed:
                    raise OutputClosed("ndjson output is closed")
                try:
                    writer = await self._connection()
                    writer.write(data)
                    await writer.drain()
                except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
                    self._drop(f"{type(exc).__name__}: {exc}")
                    self.down = f"{self.config.address}: {type(exc).__name__}: {exc}"
                    self.metrics.inc("output_retries", reason="ndjson_io")
                    await self._sleep(delay)
                    delay = min(delay * 2 or 0.1, self.config.retry_max)
                    continue
                break
            self.down = None
            if not self.config.keepalive:
                self._drop(None)
        self.metrics.inc("chunks_out")
        self.metrics.inc("records_out", chunk.count)

    async def _connection(self) -> asyncio.StreamWriter:
        if self._writer is not None and self._reader is not None:
            if not self._reader.at_eof() and not self._writer.is_closing():
                return self._writer
            # The socket source closed its side (restart, connection_limit):
            # reconnect before writing rather than lose the write.
            self._drop("peer closed the connection")
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=self._ssl,
                                    server_hostname=(self.config.tls.server_name or self.host)
                                    if self._ssl and self.config.tls else None),
            self.config.connect_timeout)
        self._reader, self._writer = reader, writer
        self.metrics.inc("output_connects", output="ndjson")
        log_event(logging.INFO, "output_connected", log, output="ndjson", address=f"{self.host}:{self.port}", acks="no")
        return writer

    def _drop(self, why: str | None) -> None:
        if why:
            log_event(logging.WARNING, "output_error", log, output="ndjson", address=f"{self.host}:{self.port}", reason=why)
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def _sleep(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._closed_event.wait(), delay)
        except asyncio.TimeoutError:
            pass

    async def close(self) -> None:
        self._closed = True
        self._closed_event.set()
        writer = self._writer
        self._drop(None)
        if writer is not None:
            try:
                await asyncio.wait_for(writer.wait_closed(), 2)
            except (OSError, asyncio.TimeoutError, ssl.SSLError):
                pass
