"""Input for Vector's ``socket`` sink: TCP, one JSON object per line. No acks.

Theory of operation
-------------------
* Vector's ``socket`` sink with ``mode: tcp`` and ``encoding.codec: json``
  writes each event as one JSON object followed by ``\\n`` (the default
  ``newline_delimited`` framing, FORWARD_NOTES §4.1). There is no
  application-level ack: an event counts as delivered for Vector once it is
  written to the socket. This input therefore gives **no delivery
  guarantee**: what is in the kernel buffers or in our pipeline when
  probetag stops is lost. Use the HTTP input when that matters.
* ``LineSplitter`` (sans-I/O) cuts the byte stream into lines. A line longer
  than ``ndjson.max_line_bytes`` is not buffered: the splitter reports it
  once as ``LineTooLong`` and discards bytes up to its newline. ``\\r\\n``
  is accepted as well as ``\\n``. A final line without a newline is taken at
  EOF.
* Each line is mapped like an HTTP event (``_vector.event_to_entry``);
  lone-surrogate escapes are counted as for HTTP
  (``json_surrogates_replaced{input="ndjson"}``). Bad
  lines (not JSON, not an object, too long) are counted as
  ``records_in`` + ``records_rejected{reason}`` and logged once per
  connection with the peer address (first reason; the count is in the
  close log line), so a misconfigured sender cannot flood the log.
* At most ``listen.max_connections`` connections are open; more are closed
  at once (counted as ``ndjson_connections_refused``).
* Backpressure: before each read the connection awaits the pipeline's
  capacity, so a full pipeline stops reading and TCP pushes back on Vector.
  Lines of one read are handed over in chunks of at most
  ``flow.batch_records`` per tag.
* Vector connects once at start-up as a healthcheck and closes without
  sending; it also polls the socket for a peer close before each write and
  discards anything read. So the server never writes to the socket.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from .._config import Config, parse_hostport
from .._metrics import Metrics
from .._logging import log_event
from .._chunk import pack_entry
from ._listener import admit, close_listener, close_writer, peer_label
from ._json import MAX_JSON_DEPTH, json_too_deep
from .._vector import event_to_entry, lone_surrogate_escapes

if TYPE_CHECKING:
    from .._runtime import Pipeline

__all__ = ["LineSplitter", "LineTooLong", "NdjsonInput", "lines_to_chunks"]

log = logging.getLogger("probetag.inputs.ndjson")


@dataclass(frozen=True, slots=True)
class LineTooLong:
    """A line over the bound was skipped; ``length`` is at least this many bytes."""

    length: int


class LineSplitter:
    """Bytes in, complete lines (bytes, without the newline) or LineTooLong out."""

    def __init__(self, max_line_bytes: int) -> None:
        self.max = max_line_bytes
        self._buf = bytearray()
        self._skipping = 0  # >0: inside an over-long line, this many bytes seen

    def feed(self, data: bytes) -> Iterator[bytes | LineTooLong]:
        start = 0
        n = len(data)
        while start < n:
            nl = data.find(b"\n", start)
            if self._skipping:
                if nl < 0:
                    self._skipping += n - start
                    return
                yield LineTooLong(self._skipping + nl - start)
                self._skipping = 0
                start = nl + 1
                continue
            if nl < 0:
                self._buf += data[start:]
                if len(self._buf) > self.max:
                    self._skipping = len(self._buf)
                    self._buf.clear()
                return
            if len(self._buf) + nl - start > self.max:
                yield LineTooLong(len(self._buf) + nl - start)
                self._buf.clear()
            else:
                if self._buf:
                    self._buf += data[start:nl]
                    line = bytes(self._buf)
                    self._buf.clear()
                else:
                    line = data[start:nl]
                yield line[:-1] if line.endswith(b"\r") else line
            start = nl + 1

    def eof(self) -> Iterator[bytes | LineTooLong]:
        """The stream ended: a final line without a newline still counts."""
        if self._skipping:
            yield LineTooLong(self._skipping)
            self._skipping = 0
        elif self._buf:
            line = bytes(self._buf)
            self._buf.clear()
            yield line[:-1] if line.endswith(b"\r") else line


def lines_to_chunks(lines: list[bytes | LineTooLong], *, default_tag: str, tag_field: str,
                    time_field: str, batch: int, notes: dict[str, int] | None = None,
                    stats: dict[str, int] | None = None
                    ) -> tuple[list[tuple[str, bytes, int]], dict[str, int], str | None]:
    """Lines -> ([(tag, entries, count)], rejected reason -> count, first error).
    ``notes`` (if given) counts events that got the receipt time, by reason;
    ``stats`` (if given) adds up ``json_surrogates_replaced``: lone-surrogate
    escapes in lines that became entries (the stage replaces each one)."""
    by_tag: dict[str, list[bytes]] = {}
    chunks: list[tuple[str, bytes, int]] = []
    rejected: dict[str, int] = {}
    first: str | None = None
    for line in lines:
        if isinstance(line, LineTooLong):
            reason, why = "line_too_long", f"line of {line.length}+ bytes over the limit"
        else:
            if not line.strip():
                continue
            text = line.decode("utf-8", "surrogateescape")
            try:
                if json_too_deep(text):
                    raise RecursionError(f"nested deeper than {MAX_JSON_DEPTH} levels")
                value = json.loads(text)
            except RecursionError as exc:
                reason, why = "json_too_deep", str(exc)
            except ValueError as exc:
                reason, why = "bad_json", f"not JSON: {exc}"
            else:
                try:
                    m = event_to_entry(value, default_tag=default_tag, tag_field=tag_field,
                                       time_field=time_field)
                except ValueError as exc:
                    reason, why = "event_not_object", str(exc)
                else:
                    if m.time_note and notes is not None:
                        notes[m.time_note] = notes.get(m.time_note, 0) + 1
                    if stats is not None:
                        lone = lone_surrogate_escapes(text)
                        if lone:
                            stats["json_surrogates_replaced"] = stats.get("json_surrogates_replaced", 0) + lone
                    try:
                        entry = pack_entry(m.time, m.record)
                    except (OverflowError, ValueError) as exc:
                        # An integer msgpack cannot hold (JSON has no bound).
                        rejected["unpackable"] = rejected.get("unpackable", 0) + 1
                        first = first or f"cannot pack: {exc}"
                        continue
                    parts = by_tag.setdefault(m.tag, [])
                    parts.append(entry)
                    if len(parts) >= batch:
                        chunks.append((m.tag, b"".join(parts), len(parts)))
                        del by_tag[m.tag]
                    continue
        rejected[reason] = rejected.get(reason, 0) + 1
        first = first or why
    chunks.extend((tag, b"".join(parts), len(parts)) for tag, parts in by_tag.items())
    return chunks, rejected, first


class NdjsonInput:
    """The asyncio server. ``await start()``, ``await close()``."""

    def __init__(self, config: Config, metrics: Metrics, pipeline: "Pipeline") -> None:
        self.config = config
        self.cfg = config.ndjson
        self.metrics = metrics
        self.pipeline = pipeline
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self.port: int | None = None

    async def start(self) -> None:
        assert self.cfg.address is not None, "ndjson.address is not set"
        host, port = parse_hostport(self.cfg.address)
        self._server = await asyncio.start_server(self._client, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        log_event(logging.INFO, "listening", log, input="ndjson", address=f"{host}:{self.port}", acks="no")

    async def close(self) -> None:
        await close_listener(self._server, self._conns)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task, admitted = admit(self._conns, self.config.listen.max_connections)
        peer_s = peer_label(writer)
        self.metrics.inc("ndjson_connections")
        if not admitted:
            # Each connection may buffer up to max_line_bytes: bound how many.
            self.metrics.inc("ndjson_connections_refused")
            log_event(logging.WARNING, "ndjson_refused", log, peer=peer_s, connections=len(self._conns))
            writer.close()
            return
        splitter = LineSplitter(self.cfg.max_line_bytes)
        state = {"bad": 0, "logged": False}
        try:
            while True:
                await self.pipeline.wait_capacity()
                try:
                    data = await asyncio.wait_for(reader.read(256 * 1024), self.config.listen.idle_timeout)
                except asyncio.TimeoutError:
                    self.metrics.inc("ndjson_idle_closed")
                    break
                if not data:
                    self._hand_over(list(splitter.eof()), peer_s, state)
                    break
                self._hand_over(list(splitter.feed(data)), peer_s, state)
        except ConnectionError as exc:
            self.metrics.inc("ndjson_connection_errors")
            log_event(logging.DEBUG, "ndjson_connection_error", log, peer=peer_s, reason=exc)
        except asyncio.CancelledError:
            # close() cancels open connections. Ending normally here keeps
            # asyncio's start_server callback from logging the cancellation
            # as an error (it calls task.exception() on the finished task).
            pass
        finally:
            self._conns.discard(task)
            if state["bad"]:
                log_event(logging.WARNING, "ndjson_closed", log, peer=peer_s, bad_lines=state["bad"])
            await close_writer(writer)

    def _hand_over(self, lines: list[bytes | LineTooLong], peer: str, state: dict[str, int | bool]) -> None:
        if not lines:
            return
        notes: dict[str, int] = {}
        stats: dict[str, int] = {}
        chunks, rejected, first = lines_to_chunks(
            lines, default_tag=self.cfg.default_tag, tag_field=self.cfg.tag_field,
            time_field=self.cfg.time_field, batch=self.config.flow.batch_records, notes=notes,
            stats=stats)
        for note, n in notes.items():
            self.metrics.inc("vector_time_receipt", n, reason=note)
        if stats.get("json_surrogates_replaced"):
            self.metrics.inc("json_surrogates_replaced", stats["json_surrogates_replaced"], input="ndjson")
        if rejected:
            n = sum(rejected.values())
            state["bad"] = int(state["bad"]) + n
            for reason, k in rejected.items():
                self.metrics.inc("records_in", k)
                self.metrics.inc("records_rejected", k, reason=reason)
            if not state["logged"]:
                state["logged"] = True
                log_event(logging.WARNING, "ndjson_bad_line", log, peer=peer, reason=first,
                          note="further ones on this connection are only counted")
        for tag, entries, count in chunks:
            self.metrics.inc("ndjson_events", count)
            self.pipeline.submit(tag, entries, len(entries))
