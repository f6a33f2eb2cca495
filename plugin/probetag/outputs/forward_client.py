"""Output: a forward-protocol client toward Fluentd in_forward or Vector's
``fluent`` source, acked, retried forever.

Theory of operation
-------------------
* Thin asyncio glue around the sans-I/O ``probetag.forward.ClientConnection``
  (framing, handshake, ack parsing live there).
* One sender task owns the connection and sends **one request at a time**:
  write a PackedForward with a fresh ``chunk`` id, wait for ``{"ack": id}``,
  settle, next. No pipelining, on purpose: a failed request is then exactly
  one known batch to resend, acks can never be attributed to the wrong
  chunk, and a peer that closes after each request (Fluentd
  ``deny_keepalive``) costs nothing extra. Throughput comes from batching
  instead: every chunk that is queued for the same tag when the sender is
  free goes out in the same request (up to ``MAX_BATCH_BYTES``), so under
  load one round trip carries many upstream chunks.
* Fair order: queued chunks are not sent strictly first in, first out.
  Each request starts with the oldest queued chunk of the upstream peer
  (``OutChunk.peer``) whose records went out longest ago, and takes the
  later chunks of the same tag that do not pass an earlier chunk of their
  own peer. Each peer's chunks keep their order; across peers none waits
  behind another's backlog: with a downstream that takes one request per
  ack cycle, a quiet connection's chunk goes out within as many cycles as
  there are peers with chunks queued, however much a flooding one queued.
* A batch is settled (every waiting ``send`` returns) only on the matching
  ack. On ack timeout, EOF, a mismatched ack, a ``{}`` (Vector's reject
  reply, FORWARD_NOTES §1) or any connection error: close the connection,
  count ``downstream_retries{reason}``, back off (``retry_initial`` doubling
  to ``retry_max``, with jitter), and resend the *same records* with a *new*
  chunk id on a new connection (Fluentd out_forward does the same: roll back
  and retry, discard the keepalive socket, #4057). It never gives up: the
  records are never dropped and the upstream stays un-acked meanwhile, which
  is the backpressure. Duplicates are possible only when an ack is lost
  after the downstream accepted the request (at-least-once).
* ``require_ack: false``: a request is settled once written and drained to
  the kernel (no delivery guarantee beyond that, as Fluentd without
  ``require_ack_response``).
* ``keepalive: false`` closes the connection after each settled request
  (Fluentd's default). A kept-alive connection is checked for EOF before
  reuse, so a downstream that closed an idle connection costs no retry.
* ``time_as_integer``: EventTime is replaced by integer seconds for old
  peers; entries are re-encoded only then.
* Dead letters (``output.dead_letter`` set): a downstream that refuses one
  record (never acks it, closes on it, answers ``{}``) would otherwise
  hold every record behind it forever, since requests go one at a time. A
  *refusal* is a failure after the request was written whole; connect,
  handshake and write failures are the downstream being away and never
  count. After ``dead_letter_after`` refusals of a batch it is split in
  halves, each sent once (refused: halved again) down to single records,
  which get ``dead_letter_after`` attempts; a record still refused is
  appended to the dead-letter file (``_deadletter``), fsynced, counted
  (``records_dead_lettered{reason}``) and settled, so its upstream chunk
  is acked once its other records are delivered. A batch of n records with
  one refused record costs about ``dead_letter_after`` + log2(n) +
  ``dead_letter_after`` attempts. Unset: retried forever, as above.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl
from dataclasses import dataclass
from typing import Any

import msgpack

from .._config import Output as OutputConfig
from .._config import parse_hostport
from .._metrics import Metrics
from .._logging import log_event
from .._chunk import OutChunk, pack_entry, unpacker_for
from ..forward import (
    CLOSED,
    NEED_DATA,
    AckReceived,
    ClientConnection,
    ClientSecurity,
    HandshakeDone,
    HandshakeFailed,
    HandshakePing,
    ProtocolError,
    new_chunk_id,
)
from . import OutputClosed
from ._common import Queued, SendQueue, client_ssl_context, stop_sender
from ._deadletter import append_fsync, dead_letter_line, split_entries

__all__ = ["ForwardOutput", "client_ssl_context", "MAX_BATCH_BYTES"]

#: Largest request assembled from queued chunks (one chunk alone may be larger).
MAX_BATCH_BYTES = 4 * 1024 * 1024
#: Peers remembered for the fair order.
_MAX_SERVED = 4096
READ_SIZE = 64 * 1024


class _Retry(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        #: The request was written whole and then not acked: the downstream
        #: saw it and refused (or lost) it. Only these count toward
        #: ``dead_letter_after``; a downstream that cannot be reached at all
        #: holds everything back as before.
        self.refused = False


@dataclass(slots=True)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    proto: ClientConnection
    #: the socket's descriptor when nothing sits between it and the
    #: transport (no TLS): frames are written to it by ``_write``
    fd: int | None = None


#: At most this many parts go to one ``os.writev``.
_IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)


def _write(conn: _Conn, parts: list[Any]) -> None:
    """Write a frame given as parts. An output chunk is mostly slices of its
    input chunk between the re-encoded records: joined into one frame they
    would be copied once more before the socket copies them. On a plain
    socket whose transport holds nothing unsent, ``os.writev`` hands the
    kernel the parts themselves; what it does not take (a full socket
    buffer) goes to the transport, which sends it when the socket drains,
    as it does any write. Errors are left to the transport's own write."""
    tr = conn.writer.transport
    if conn.fd is not None and 1 < len(parts) <= _IOV_MAX and not tr.get_write_buffer_size() \
            and not tr.is_closing():
        try:
            n = os.writev(conn.fd, parts)
        except OSError:  # (EAGAIN, EINTR, or an error the transport reports below)
            n = 0
        k = 0
        while k < len(parts) and n >= len(parts[k]):
            n -= len(parts[k])
            k += 1
        if k == len(parts):
            return
        parts = [memoryview(parts[k])[n:], *parts[k + 1:]]
    # As a memoryview, what the socket does not take at once is sliced
    # without a copy before the transport buffers it.
    conn.writer.write(memoryview(parts[0] if len(parts) == 1 else b"".join(parts)))


def integer_times(entries: bytes) -> bytes:
    """Re-encode entries with integer-second times (``time_as_integer``)."""
    out = []
    for t, record in unpacker_for(entries):
        if isinstance(t, msgpack.ExtType):
            t = int.from_bytes(t.data[:4], "big")
        out.append(pack_entry(t, record))
    return b"".join(out)


class ForwardOutput:
    def __init__(self, config: OutputConfig, metrics: Metrics) -> None:
        assert config.address, "output.address is validated by Config"
        self.config = config
        self.metrics = metrics
        self.host, self.port = parse_hostport(config.address)
        self.security = (
            ClientSecurity(config.shared_key, config.self_hostname, config.username, config.password)
            if config.shared_key is not None else None
        )
        self.ssl = client_ssl_context(config.tls) if config.tls else None
        self._queue = SendQueue()
        self._task: asyncio.Task[None] | None = None
        self._conn: _Conn | None = None
        self._closed = False
        self._failures = 0
        self._last_failure = ""
        #: peer -> serial of the last request that carried its records
        self._served: dict[str, int] = {}
        #: peer -> its chunks in the queue (one peer: plain FIFO, no scan)
        self._queued: dict[str, int] = {}
        self._serial = 0

    # -- Output interface ------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def down(self) -> str | None:
        """Why the downstream is unusable (failures since the last delivery),
        or None; ``/health`` reports it."""
        if not self._failures:
            return None
        return f"{self.config.address}: {self._last_failure} ({self._failures} failed attempts)"

    async def send(self, chunk: OutChunk) -> None:
        if self._closed:
            raise OutputClosed("forward output is closed")
        await self.send_nowait(chunk)

    def send_nowait(self, chunk: OutChunk) -> asyncio.Future[None]:
        """``send`` without a coroutine: queues ``chunk`` at once and returns
        the future its delivery settles (``OutputClosed`` set on it if the
        output is closed). The pipeline uses it to hand over a chunk without
        a task of its own."""
        if self._closed:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.set_exception(OutputClosed("forward output is closed"))
            return fut
        queued = self._queued
        queued[chunk.peer] = queued.get(chunk.peer, 0) + 1
        return self._queue.put_nowait(chunk)

    async def close(self) -> None:
        self._closed = True
        await stop_sender(self._task)
        self._queue.fail_all(lambda: OutputClosed("forward output closed"))
        await self._drop_conn()

    # -- sender ------------------------------------------------------------------

    def _take_batch(self) -> list[Queued]:
        """The next request's chunks (see "Fair order" above): the oldest
        chunk of the peer served longest ago, then every later chunk of the
        same tag that can join without passing an earlier chunk of its own
        peer, up to ``MAX_BATCH_BYTES``."""
        queue = self._queue.items
        while queue and queue[0].future.done():  # cancelled by its waiter (shutdown)
            self._unqueue(queue.popleft())
        if not queue:
            return []
        if len(self._queued) == 1:
            return self._take_fifo()
        served = self._served
        first = queue[0]
        start = 0
        oldest = served.get(first.chunk.peer, -1)
        if oldest >= 0:
            seen = {first.chunk.peer}
            for i, item in enumerate(queue):
                peer = item.chunk.peer
                if peer in seen or item.future.done():
                    continue
                seen.add(peer)
                stamp = served.get(peer, -1)
                if stamp < oldest:
                    first, start, oldest = item, i, stamp
                    if stamp < 0:
                        break  # never served: none can be older
        tag = first.chunk.tag
        batch: list[Queued] = []
        keep: list[Queued] = []
        held: set[str] = set()  # peers with a chunk left in the queue
        size = 0
        for i, item in enumerate(queue):
            if item.future.done():
                self._unqueue(item)
                continue
            peer = item.chunk.peer
            if (i < start or peer in held or item.chunk.tag != tag
                    or (batch and size + item.chunk.nbytes > MAX_BATCH_BYTES)):
                held.add(peer)
                keep.append(item)
                continue
            batch.append(item)
            size += item.chunk.nbytes
        queue.clear()
        queue.extend(keep)
        self._mark_served(batch)
        return batch

    def _take_fifo(self) -> list[Queued]:
        """One peer queued: its chunks in order, as long as the tag stays."""
        batch: list[Queued] = []
        size = 0
        queue = self._queue.items
        while queue:
            item = queue[0]
            if item.future.done():
                self._unqueue(queue.popleft())
                continue
            if batch and (item.chunk.tag != batch[0].chunk.tag
                          or size + item.chunk.nbytes > MAX_BATCH_BYTES):
                break
            queue.popleft()
            batch.append(item)
            size += item.chunk.nbytes
        self._mark_served(batch)
        return batch

    def _unqueue(self, item: Queued) -> None:
        peer = item.chunk.peer
        left = self._queued.get(peer, 0) - 1
        if left > 0:
            self._queued[peer] = left
        else:
            self._queued.pop(peer, None)

    def _mark_served(self, batch: list[Queued]) -> None:
        served = self._served
        self._serial += 1
        for item in batch:
            self._unqueue(item)
            served[item.chunk.peer] = self._serial
        if len(served) > _MAX_SERVED:
            # Peers long gone: forget the oldest half (a forgotten peer
            # counts as never served, i.e. goes first once).
            for peer, _ in sorted(served.items(), key=lambda kv: kv[1])[:len(served) // 2]:
                del served[peer]

    async def _run(self) -> None:
        while True:
            await self._queue.wait()
            batch = self._take_batch()
            if not batch:
                continue
            try:
                await self._deliver(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # our bug: fail this batch, keep the sender alive
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            for item in batch:
                if not item.future.done():
                    item.future.set_result(None)

    async def _deliver(self, batch: list[Queued]) -> None:
        tag = batch[0].chunk.tag
        # The chunks' entries (and the stage's parts of them) go into the
        # frame as parts: joined once there.
        entries: list[Any] = []
        for i in batch:
            if i.chunk.parts is not None:
                entries.extend(i.chunk.parts)
            else:
                entries.append(i.chunk.entries)
        count = sum(i.chunk.count for i in batch)
        if self.config.time_as_integer:
            entries = [integer_times(b"".join(entries))]
        after = self.config.dead_letter_after if self.config.dead_letter else None
        refused = await self._send(tag, entries, count, after)
        if refused is None:
            return
        # Refused ``after`` times: find the records the downstream refuses,
        # set them aside, deliver the rest (see "Dead letters" above).
        records = [(e, i.chunk.peer) for i in batch
                   for e in split_entries(integer_times(i.chunk.entries) if self.config.time_as_integer
                                          else i.chunk.entries)]
        log_event(logging.WARNING, "batch_refused", address=self.config.address, tag=tag,
                  records=len(records), attempts=after, reason=refused)
        await self._isolate(tag, records, refused)

    async def _isolate(self, tag: str, records: list[tuple[bytes, str]], reason: str) -> None:
        """Halve a refused group until each refused record is alone: a group
        of several gets one attempt (refused: halve it again), a single
        record ``dead_letter_after`` attempts before it is dead-lettered.
        Records leave in their order, less the dead-lettered ones."""
        after = self.config.dead_letter_after
        todo: list[tuple[list[tuple[bytes, str]], str | None]] = [(records, reason)]
        while todo:
            group, refused = todo.pop()
            if refused is None:
                refused = await self._send(tag, [e for e, _ in group], len(group),
                                           1 if len(group) > 1 else after)
                if refused is None:
                    continue
            if len(group) == 1:
                await self._dead_letter(tag, group, refused)
                continue
            half = len(group) // 2
            todo.append((group[half:], None))
            todo.append((group[:half], None))

    async def _dead_letter(self, tag: str, group: list[tuple[bytes, str]], reason: str) -> None:
        path = self.config.dead_letter
        assert path
        data = b"".join(dead_letter_line(e, tag=tag, reason=reason, peer=peer,
                                         downstream=self.config.address or "")
                        for e, peer in group)
        delay = self.config.retry_initial
        while True:
            try:
                await asyncio.to_thread(append_fsync, path, data)
                break
            except OSError as exc:
                # Not on disk: not settled either. The upstream stays un-acked
                # and this retries until the file can be written.
                self.metrics.inc("dead_letter_errors")
                log_event(logging.ERROR, "dead_letter_failed", file=path,
                          reason=f"{type(exc).__name__}: {exc.strerror or exc}", retry_in=f"{delay:.3f}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.retry_max)
        self.metrics.inc("records_dead_lettered", len(group), reason=reason)
        log_event(logging.WARNING, "records_dead_lettered", address=self.config.address, tag=tag,
                  records=len(group), reason=reason, peer=group[0][1], file=path)

    async def _send(self, tag: str, entries: list[bytes], count: int, attempts: int | None) -> str | None:
        """Send one request until it is acked (None), or until the downstream
        refused it ``attempts`` times (the last refusal's reason). Failures to
        reach the downstream are retried without counting."""
        delay = self.config.retry_initial
        refusals = 0
        while True:
            try:
                await self._request(tag, entries, count)
            except _Retry as exc:
                await self._drop_conn()
                self._failures += 1
                self._last_failure = f"{exc.reason} {exc.detail}".strip()
                self.metrics.inc("downstream_retries", reason=exc.reason)
                if exc.refused and attempts is not None:
                    refusals += 1
                    if refusals >= attempts:
                        return exc.reason
                # First failure of a streak, then every 10th: an outage must
                # not flood the log.
                if self._failures == 1 or self._failures % 10 == 0:
                    log_event(logging.WARNING, "downstream_retry", address=self.config.address,
                              reason=exc.reason, detail=exc.detail, failures=self._failures,
                              retry_in=f"{delay:.3f}")
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.config.retry_max)
                continue
            if self._failures:
                log_event(logging.INFO, "downstream_recovered", address=self.config.address,
                          failures=self._failures)
                self._failures = 0
            self.metrics.inc("chunks_out")
            self.metrics.inc("records_out", count)
            if not self.config.keepalive:
                await self._drop_conn()
            return None

    async def _request(self, tag: str, entries: list[bytes], count: int) -> None:
        conn = await self._connection()
        chunk_id = new_chunk_id() if self.config.require_ack else None
        parts = conn.proto.send_packed_parts(tag, entries, count, chunk_id, compress=self.config.compress)
        # asyncio.timeout arms one timer on this task; wait_for would run
        # each of these awaits in a Task of its own (Python 3.11).
        try:
            async with asyncio.timeout(self.config.ack_timeout):
                _write(conn, parts)
                await conn.writer.drain()
        except TimeoutError:
            raise _Retry("write_timeout") from None
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            raise _Retry("write_error", type(exc).__name__) from None
        if chunk_id is None:
            return
        try:
            async with asyncio.timeout(self.config.ack_timeout):
                await self._await_ack(conn, chunk_id)
        except TimeoutError:
            exc = _Retry("ack_timeout")
            exc.refused = True
            raise exc from None
        except _Retry as exc:
            exc.refused = True  # written whole, answered with a close, {} or garbage
            raise
        self.metrics.inc("acks_received")

    async def _await_ack(self, conn: _Conn, chunk_id: str) -> None:
        while True:
            ev = await self._next_event(conn)
            if isinstance(ev, AckReceived):
                if ev.chunk_id == chunk_id:
                    return
                raise _Retry("ack_mismatch")
            self._unexpected(ev)

    def _unexpected(self, ev: Any) -> None:
        if isinstance(ev, ProtocolError):
            raise _Retry(_label(ev.reason), str(getattr(ev, "detail", "") or "")[:200])
        if isinstance(ev, HandshakeFailed):
            raise _Retry("handshake_failed", str(ev.reason)[:200])
        raise _Retry("unexpected_reply", type(ev).__name__)

    async def _next_event(self, conn: _Conn) -> Any:
        while True:
            ev = conn.proto.next_event()
            if ev is CLOSED:
                raise _Retry("eof")
            if ev is not NEED_DATA:
                return ev
            try:
                data = await conn.reader.read(READ_SIZE)
            except (ConnectionError, ssl.SSLError, OSError) as exc:
                raise _Retry("read_error", type(exc).__name__) from None
            conn.proto.receive_data(data)

    async def _connection(self) -> _Conn:
        conn = self._conn
        if conn is not None:
            if conn.reader.at_eof() or conn.writer.transport.is_closing():
                # The downstream closed the idle connection (Fluentd
                # deny_keepalive, Vector after {}); not a delivery failure.
                await self._drop_conn()
            else:
                return conn
        timeout = self.config.connect_timeout
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host, self.port, ssl=self.ssl, limit=READ_SIZE,
                    server_hostname=self._server_name() if self.ssl else None),
                timeout)
        except asyncio.TimeoutError:
            raise _Retry("connect_timeout") from None
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            raise _Retry("connect_error", type(exc).__name__) from None
        conn = _Conn(reader, writer, ClientConnection(security=self.security))
        if self.ssl is None:
            sock = writer.get_extra_info("socket")
            conn.fd = sock.fileno() if sock is not None else None
        self._conn = conn
        if self.security is not None:
            try:
                await asyncio.wait_for(self._handshake(conn), timeout)
            except asyncio.TimeoutError:
                raise _Retry("handshake_timeout") from None
        return conn

    def _server_name(self) -> str:
        tls = self.config.tls
        return (tls.server_name if tls is not None and tls.server_name else None) or self.host

    async def _handshake(self, conn: _Conn) -> None:
        # Server speaks first (HELO); we answer with the PING the core builds
        # and wait for a verified PONG (SPEC1 "Handshake Messages").
        while True:
            ev = await self._next_event(conn)
            if isinstance(ev, HandshakePing):
                conn.writer.write(ev.data)
            elif isinstance(ev, HandshakeDone):
                return
            else:
                self._unexpected(ev)

    async def _drop_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.writer.close()
        try:
            await asyncio.wait_for(conn.writer.wait_closed(), 1.0)
        except (asyncio.TimeoutError, ConnectionError, ssl.SSLError, OSError):
            pass


def _label(reason: str) -> str:
    return (reason or "protocol_error")[:60]
