"""Input: the Fluentd forward-protocol server (TCP, optional TLS, UDP heartbeat).

Theory of operation
-------------------
* Thin asyncio glue. All parsing, handshake and ack encoding is done by the
  sans-I/O ``probetag.forward.ServerConnection``; this module moves bytes
  between it and the socket and hands each ``Chunk`` to the ``Pipeline``.
* One task per connection runs the loop: drain events, then (after waiting
  for pipeline capacity) wait for more bytes. Before every chunk is handed
  over and before every wait the task awaits ``Pipeline.wait_capacity()``:
  when the in-flight bound is hit the connection simply stops reading, the
  protocol pauses the transport once ``HIGH_WATER`` bytes wait unparsed, and
  the sender's writes block (TCP flow control). Nothing is buffered beyond
  the bound but the one chunk being admitted.
* Bytes go from the transport's ``data_received`` straight into the
  ``ServerConnection`` (``_StreamProtocol``): no StreamReader, whose
  buffer and ``read()`` would copy every 200 KB chunk three more times and
  wake the task once per ``read()`` size. The protocol only appends and
  wakes the task; all parsing stays in the task.
* Acks are end to end: ``{"ack": chunk}`` is written from the pipeline's
  settle callback, i.e. only after every record of the chunk is acked
  downstream (or flushed to stdout). Acks may therefore leave in a different
  order than chunks arrived; Fluentd and Fluent Bit match them by chunk id.
  If the output cannot take the chunk (shutdown, stdout gone) the connection
  is closed without an ack so the client resends (FD-OUT rolls back).
* A chunk without ``chunk`` option gets no reply (SPEC1 "Response").
* Ack writes have backpressure: once the socket's write buffer passes
  asyncio's high-water mark (64 KiB: the peer does not read its acks), the
  connection stops reading until it drains (``ack_writes_blocked``); the
  frames already buffered are bounded by ``HIGH_WATER``, those in flight in
  the pipeline by ``flow.*``, and so are the acks still to come.
* Acks that become due in the same event-loop iteration (one downstream ack
  settles a batch of chunks) are written together, once per iteration,
  and always before the connection is closed.
* Merging: frames of the same tag that are *already buffered* (one read
  often holds hundreds of fluent-logger Message frames, one record each) are
  handed to the pipeline as one chunk (their packed entries concatenate),
  up to ``MERGE_MAX_BYTES`` / ``MERGE_MAX_FRAMES`` and never past the
  in-flight bound (records counted from the ``size`` option, 1 for a
  Message frame); their acks are all written when that chunk settles.
  Nothing waits for more frames to merge, so merging adds no latency; it
  only saves per-chunk work. A PackedForward payload that does not end with
  a whole entry is never joined to another frame's (its cut entry would
  swallow them): such a group goes frame by frame.
* Peer errors (``ProtocolError``) are counted in ``frames_rejected{reason}``;
  the first one of a connection is logged with the peer address (never the
  key or passwords); a fatal one closes the connection. A connection opened
  and closed without data is Fluentd's transport heartbeat (FD-OUT
  ``send_heartbeat``): normal, not an error.
* TLS is started on each accepted connection (after the connection limit
  check); a failed or slow TLS handshake is ``connections_rejected{reason}``
  and one log line with the peer address.
* Timeouts: ``handshake_timeout`` for the TLS handshake and until the
  PING/PONG is done (only with a shared key), ``idle_timeout`` between
  reads afterwards. A connection that waits for
  pipeline capacity, or whose client waits for our acks, is not idle: the
  wait is ours.
* ``frame_timeout`` (slow-loris guard): the idle timeout restarts with every
  read, so a peer sending one byte a second would hold a connection and its
  partial frame forever. Once a frame has started (bytes buffered after the
  drain) it must be complete within ``frame_timeout``, else the connection
  is closed and ``frames_rejected{reason="frame_timeout"}`` counted. The
  clock restarts with every completed frame, so a busy stream whose reads
  end mid-frame is never hit, and stops while we are not reading (waiting
  for pipeline capacity).
* Fairness: each connection is an *owner* of its share of the in-flight
  bound (``FlowControl``): with n connections holding records in flight
  or waiting to, one that holds ``1/n`` of the bound waits even when there
  is room, so a connection flooding a slow downstream cannot take every
  slot that frees up while a quiet one waits (``fair_share_waits``).
* ``acks_pending`` (gauge): chunks handed over whose settling (upstream
  ack, or close without one) is still to come, over all connections.
* ``max_connections`` (connections still in their TLS handshake count):
  one more connection is accepted and closed at once
  (``connections_refused``, logged once per hundred); the listening socket
  keeps accepting.
* A chunk of more than ``SLICE_ENTRIES`` entries or ``SLICE_BYTES`` bytes
  is handed to the pipeline in slices, yielding the loop between them; it
  is acked once every slice has settled. More than ``max_chunk_entries``: refused, not acked.
* Slots: a connection that has sent no byte within ``first_frame_timeout``
  of its accept is closed (``connections_timed_out{reason=
  "first_frame_timeout"}``); once ``idle_soft_limit`` connections are open,
  each new one closes the connection idle the longest (nothing buffered, no
  ack owed; ``connections_evicted``); a peer address with
  ``auth_failures_per_minute`` failed handshakes in its minute gets its new
  connections closed at once (``connections_refused_auth_rate``). Frames
  that have started and not ended are bounded per connection
  (``max_frame_bytes``, ``frame_timeout``) and over all of them
  (``max_partial_bytes``: the connections holding the largest are closed,
  ``connections_evicted{reason="partial_frames"}``).
* ``deny_keepalive`` (Fluentd in_forward): stop reading after the first
  request, write its ack when it settles, then close.
* UDP heartbeat on the same port: ``handle_udp_heartbeat`` decides the reply
  (Fluentd answers ``0x00`` to ``0x00``).
* ``reuse_port`` (``serve --workers N``): the TCP listener and the UDP
  endpoint set ``SO_REUSEPORT``, so N processes bind the same port and the
  kernel spreads new connections (and datagrams) over them by address hash.
  A connection stays with the process that accepted it.
* Shutdown: ``stop_accepting()`` closes the listener, ``stop_reading()``
  makes every connection stop reading (data not yet handed over is never
  acked, so the client resends it). Acks for what is in flight still go
  out while the runtime drains; ``close()`` then closes the sockets.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Any

from .._config import Listen, parse_hostport
from .._metrics import Metrics
from .._runtime import Pipeline, log_event, slice_cuts
from .._stage import ChunkRejected, walk_entries
from ..forward import (
    CLOSED,
    NEED_DATA,
    Chunk,
    HandshakeReply,
    Heartbeat,
    Limits,
    ProtocolError,
    ServerConnection,
    ServerSecurity,
    handle_udp_heartbeat,
)

__all__ = ["ForwardServer", "server_ssl_context", "format_peer"]

#: Unparsed bytes above which the transport stops reading until the
#: connection's task asks for more (the bound the StreamReader's limit was).
HIGH_WATER = 512 * 1024
#: Bounds of one merged group of buffered frames (see "Merging").
MERGE_MAX_BYTES = 1024 * 1024
MERGE_MAX_FRAMES = 1000
_log = logging.getLogger("probetag")


def format_peer(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr or "unknown")


def server_ssl_context(tls: Any) -> ssl.SSLContext:
    """TLS for the listener; client certificates are required and verified
    against ``ca_file`` when it is set."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.ca_file:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(tls.ca_file)
    return ctx


class _UdpHeartbeat(asyncio.DatagramProtocol):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        reply = handle_udp_heartbeat(data)
        if reply is None:
            self.metrics.inc("frames_rejected", reason="udp_not_heartbeat")
            return
        self.metrics.inc("heartbeats", transport="udp")
        if self.transport is not None:
            self.transport.sendto(reply, addr)


class _StreamProtocol(asyncio.Protocol):
    """One accepted socket: feeds received bytes to its connection's
    ``ServerConnection`` and wakes the connection's task.

    Reading starts paused and is resumed by ``_accept`` once the connection
    is set up: bytes a client sends at once (a TLS ClientHello) must not be
    consumed before ``start_tls`` takes the socket over. Bytes that arrive
    before the connection exists (right after the TLS handshake) are kept
    and handed over by ``attach``."""

    def __init__(self, server: ForwardServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.conn: ServerConnection | None = None
        self.over_ssl = False
        self.arrived = False  # bytes, EOF or loss since the task last looked
        self.received = False  # any byte at all
        self.paused = False
        #: The transport's write buffer is over its high-water mark (the peer
        #: does not read its acks): reading stays paused until it drains.
        self.write_blocked = False
        self.exc: BaseException | None = None
        self.eof = False
        self._early: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if isinstance(transport, asyncio.ReadTransport):
            transport.pause_reading()
            self.paused = True
        self._task = asyncio.get_running_loop().create_task(self.server._accept(self))

    def attach(self, conn: ServerConnection) -> None:
        self.conn = conn
        for data in self._early:
            conn.receive_data(data)
        self._early.clear()

    def data_received(self, data: bytes) -> None:
        self.received = True
        conn = self.conn
        if conn is None:
            self._early.append(data)
        else:
            conn.receive_data(data)
            if not self.paused and conn.buffered_bytes > HIGH_WATER:
                self.pause()
        self.arrived = True
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        if self.conn is not None:
            self.conn.receive_data(b"")
        self.arrived = True
        self._wake()
        # Keep the socket open for writing: acks of chunks already handed
        # over still go out after the peer's FIN (SSL cannot half-close).
        return not self.over_ssl

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.exc = exc
        elif not self.eof:
            self.eof_received()
        self.arrived = True
        self._wake()
        if not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        # asyncio calls this when the write buffer passes its high-water mark
        # (64 KiB): a peer that sends frames but never reads its acks would
        # otherwise grow it without bound. Stop reading it (TCP flow control
        # then stops its writes) until the acks drain.
        self.write_blocked = True
        self.server.metrics.inc("ack_writes_blocked")
        self.pause()

    def resume_writing(self) -> None:
        self.write_blocked = False
        self._wake()  # the read loop resumes reading at its next wait

    def pause(self) -> None:
        if not self.paused and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
            self.paused = True

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
            self.paused = False

    async def wait_data(self) -> None:
        """Until bytes, EOF or a connection error arrive (raised here, as
        ``StreamReader.read`` raised it); at once if some came meanwhile."""
        if self.exc is not None:
            raise self.exc
        if self.arrived or self.eof:
            self.arrived = False
            return
        if not self.write_blocked:
            self.resume()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        self.arrived = False
        if self.exc is not None:
            raise self.exc

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._lost)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Connection:
    """One TCP connection: its ServerConnection, read loop and pending acks."""

    def __init__(self, server: ForwardServer, io: _StreamProtocol) -> None:
        self.server = server
        self.io = io
        assert io.transport is not None
        self.transport = io.transport
        self.peer = format_peer(io.transport.get_extra_info("peername"))
        cfg = server.config
        self.proto = ServerConnection(self.peer, limits=server.limits, security=server.security,
                                      keepalive=not cfg.deny_keepalive)
        io.attach(self.proto)
        self.authenticated = server.security is None
        self.pending = 0
        self._settled = asyncio.Event()
        self._settled.set()
        self.stopping = False
        self.closed = False
        self._acks: list[bytes] = []  # due upstream, written by _flush_acks
        self.logged_error = False
        self.requests = 0
        self.deny_keepalive = cfg.deny_keepalive
        #: loop time since which the read loop waits for the peer; None while
        #: it works. Idle = waiting, no partial frame and no ack owed.
        self.idle_since: float | None = None
        self.evicted = False
        #: this connection's share of the server's ``partial_total``
        self.partial_held = 0

    # -- settle callbacks (called by the pipeline) ---------------------------

    def _on_settled(self, chunk_ids: list[Any], ok: bool) -> None:
        self.pending -= 1
        self.server.count_pending(-len(chunk_ids))
        if self.pending == 0:
            self._settled.set()
        if self.closed:
            return
        if not ok:
            # Not delivered: no ack, and close so the client resends promptly
            # instead of waiting out its ack timeout.
            self._close()
            return
        acks = [self.proto.ack_bytes(cid) for cid in chunk_ids if cid is not None]
        if acks:
            # A downstream ack settles a whole batch of chunks at once: their
            # acks leave in one write (one syscall, one wake-up of the
            # client) at the end of this loop iteration.
            if not self._acks:
                asyncio.get_running_loop().call_soon(self._flush_acks)
            self._acks.extend(acks)

    def _flush_acks(self) -> None:
        if self._acks and not self.closed:
            self.transport.write(b"".join(self._acks))
            self.server.metrics.inc("acks_sent", len(self._acks))
        self._acks.clear()

    # -- main loop -------------------------------------------------------------

    async def run(self) -> None:
        m = self.server.metrics
        loop = asyncio.get_running_loop()
        io = self.io
        initial = self.proto.initial_bytes()
        if initial:
            self.transport.write(initial)
        handshake_deadline = loop.time() + self.server.config.handshake_timeout
        first_deadline = loop.time() + self.server.config.first_frame_timeout
        frame_deadline: float | None = None  # see "frame_timeout" above
        group: list[Chunk] = []
        group_bytes = group_records = 0
        flow = self.server.pipeline.flow
        while not self.stopping:
            if not group and self.authenticated and flow.blocked(self):
                # No frame is parsed while the pipeline is full. Every
                # connection waiting for room is woken when room comes; the
                # first one fills it again (parse and submit do not yield),
                # and without this check each other one would parse its
                # frame, decompressing up to max_decompressed_bytes, only to
                # hold it until the next room.
                waited_from = loop.time()
                await self.server.pipeline.wait_capacity(self)
                if frame_deadline is not None:
                    frame_deadline += loop.time() - waited_from  # our wait, not the peer's
                if self.stopping:
                    break
                continue
            ev = self.proto.next_event()
            if ev is not NEED_DATA and ev is not CLOSED:
                frame_deadline = None  # a frame completed
            if isinstance(ev, Chunk) and not self.deny_keepalive:
                # Frames already buffered with the same tag go to the pipeline
                # as one chunk (see "Merging" above); nothing waits for more.
                n = ev.size_hint if ev.size_hint and ev.size_hint > 0 else 1
                if group and (ev.tag != group[0].tag or len(group) >= MERGE_MAX_FRAMES
                              or group_bytes + len(ev.entries) > MERGE_MAX_BYTES
                              or flow.records + group_records + n > flow.max_records
                              or flow.bytes + group_bytes + len(ev.entries) > flow.max_bytes):
                    await self._submit(group)
                    group, group_bytes, group_records = [], 0, 0
                group.append(ev)
                group_bytes += len(ev.entries)
                group_records += n
                continue
            if group:
                await self._submit(group)
                group, group_bytes, group_records = [], 0, 0
                if self.stopping:
                    break
                if ev is NEED_DATA:
                    # Bytes may have arrived while the group was handed over
                    # (it awaits): parse them before waiting for more, or a
                    # client waiting for our acks would wait forever.
                    continue
            if ev is NEED_DATA:
                io.arrived = False  # next_event() has seen every byte so far
                partial = self.proto.partial_bytes
                if partial != self.partial_held:
                    self.server.hold_partial(self, partial)
                    if self.closed:
                        break  # the connection holding the most (this one) was shed
                waited_from = loop.time()
                await self.server.pipeline.wait_capacity(self)
                if self.stopping:
                    break
                now = loop.time()
                if not self.proto.partial_bytes:
                    frame_deadline = None
                elif frame_deadline is None:
                    frame_deadline = now + self.server.config.frame_timeout
                else:
                    frame_deadline += now - waited_from  # our wait, not the peer's
                if (self.authenticated and not io.received
                        and first_deadline - now < self.server.config.idle_timeout):
                    # Sent nothing since it connected: a slot held for free.
                    timeout = max(0.0, first_deadline - now)
                    reason = "first_frame_timeout"
                elif self.authenticated:
                    timeout = self.server.config.idle_timeout
                    reason = "idle_timeout"
                else:
                    timeout = max(0.0, handshake_deadline - now)
                    reason = "handshake_timeout"
                if frame_deadline is not None and frame_deadline - now < timeout:
                    timeout = max(0.0, frame_deadline - now)
                    reason = "frame_timeout"
                self.idle_since = now
                try:
                    # asyncio.timeout arms one timer handle on this task;
                    # wait_for would wrap every read in a new Task (~5 % of
                    # the CPU at full rate).
                    async with asyncio.timeout(timeout):
                        await io.wait_data()
                except TimeoutError:
                    self.idle_since = None
                    if reason == "frame_timeout":
                        m.inc("frames_rejected", reason=reason)
                        self._log_once(reason, fatal=True,
                                       detail=f"frame incomplete after {self.server.config.frame_timeout:g} s "
                                              f"({self.proto.partial_bytes} bytes)")
                        break
                    if self.authenticated and self.pending:
                        # The client is waiting for our acks (the downstream
                        # is slow): its silence is ours, not idleness.
                        continue
                    m.inc("connections_timed_out", reason=reason)
                    self._log_once(reason, fatal=True)
                    break
                except ConnectionResetError:
                    self.idle_since = None
                    # An RST instead of a FIN is how some peers close (SO_LINGER
                    # 0, as Fluentd's server side does); like EOF, not an error.
                    m.inc("connections_reset")
                    break
                except (ConnectionError, ssl.SSLError, OSError) as exc:
                    m.inc("connections_reset")
                    self._log_once("read_error", fatal=True, detail=type(exc).__name__)
                    break
                self.idle_since = None
                if self.stopping:
                    break
                continue
            if ev is CLOSED:
                break
            if isinstance(ev, Chunk):  # deny_keepalive: the first request only
                await self._submit([ev])
                break
            elif isinstance(ev, Heartbeat):
                m.inc("heartbeats", transport="tcp")
            elif isinstance(ev, HandshakeReply):
                if ev.data:
                    self.transport.write(ev.data)
                if ev.ok:
                    self.authenticated = True
                else:
                    self.server.auth_failed(self.transport)
                    m.inc("handshake_failures", reason=_reason_label(ev.reason))
                    self._log_once("handshake_failed", fatal=True, detail=ev.reason)
                    break
            elif isinstance(ev, ProtocolError):
                m.inc("frames_rejected", reason=ev.reason)
                self._log_once(ev.reason, fatal=ev.fatal, detail=ev.detail)
                if ev.fatal:
                    break
            else:  # pragma: no cover - a new event type is our bug
                raise TypeError(f"unexpected forward event {ev!r}")
        # Acks of chunks already handed over still go out on this socket
        # (the peer may have half-closed; Fluentd waits for acks before it
        # closes). The runtime bounds this wait at shutdown.
        await self._settled.wait()

    async def _submit(self, group: list[Chunk]) -> None:
        """Hand buffered frames of one tag to the pipeline as one chunk."""
        if len(group) > 1 and not all(_ends_whole(ev) for ev in group):
            # A payload that ends in a cut or broken entry would swallow the
            # next frame's entries once joined to them: each frame goes on
            # its own, and its broken tail is rejected and counted there.
            for ev in group:
                await self._submit([ev])
            return
        m = self.server.metrics
        await self.server.pipeline.wait_capacity(self)
        if self.stopping:
            return  # shutdown while waiting: not handed over, never acked
        self.requests += len(group)
        tag = group[0].tag
        prefix = self.server.config.tag_prefix
        if prefix:
            tag = f"{prefix}.{tag}"
        if not tag:
            # No downstream takes an empty tag (Fluentd routes by it; our own
            # forward client refuses it): skip the frames, no ack, counted.
            m.inc("frames_rejected", len(group), reason="empty_tag")
            self._log_once("empty_tag", fatal=False)
            return
        for ev in group:
            m.inc("frames_in", mode=str(ev.mode))
        chunk_ids = [ev.chunk_id for ev in group]
        entries = group[0].entries if len(group) == 1 else b"".join(ev.entries for ev in group)
        self.pending += 1
        self.server.count_pending(len(group))
        self._settled.clear()
        processor = self.server.pipeline.processor
        undecodable = processor.undecodable
        try:
            cuts, walked = slice_cuts(entries, self.server.config.max_chunk_entries)
            if cuts is None:
                self.server.pipeline.submit(tag, entries, len(entries),
                                            lambda ok: self._on_settled(chunk_ids, ok), walked, peer=self.peer,
                                            owner=self)
            else:
                await self._submit_sliced(tag, entries, cuts, chunk_ids)
            if processor.undecodable != undecodable:
                self.server.log_poison(self.transport, self.peer, tag,
                                       processor.undecodable - undecodable)
        except ChunkRejected as rej:
            # Refused as a whole by the stage (too many entries): nothing was
            # delivered, so no ack; the connection stays, as for any other
            # well-framed invalid frame.
            m.inc("frames_rejected", len(group), reason=rej.reason)
            self._log_once(rej.reason, fatal=False, detail=rej.detail)
            self.pending -= 1
            self.server.count_pending(-len(group))
            if self.pending == 0:
                self._settled.set()
        except Exception:
            # A bug in processing must not take the server down; the frames
            # are not acked, so the client keeps them and resends.
            m.inc("internal_errors", where="process")
            _log.exception("event=process_failed peer=%s tag=%s", self.peer, tag)
            self._on_settled(chunk_ids, False)
        # Let the output write this chunk before the next buffered one is
        # processed: the stage runs in this task without suspending, so
        # without this the downstream would sit idle for as many chunks as
        # are buffered here (and their latency would add up).
        await asyncio.sleep(0)

    async def _submit_sliced(self, tag: str, entries: bytes, cuts: list[int],
                             chunk_ids: list[Any]) -> None:
        """The chunk in slices (``Pipeline.submit_sliced``); its acks wait
        for every slice to settle, and one failed slice means none."""
        await self.server.pipeline.submit_sliced(tag, entries, cuts, lambda ok: self._on_settled(chunk_ids, ok),
                                                 peer=self.peer, owner=self)

    def _log_once(self, reason: str, *, fatal: bool, detail: Any = None) -> None:
        if self.logged_error:
            return
        self.logged_error = True
        fields: dict[str, Any] = {"peer": self.peer, "reason": reason, "fatal": fatal}
        if detail:
            fields["detail"] = str(detail)[:200]
        log_event(logging.WARNING, "forward_peer_error", **fields)

    def stop(self) -> None:
        """Stop reading (shutdown). Acks of handed-over chunks still go out."""
        self.stopping = True
        self.io.pause()
        self.io.arrived = True
        self.io._wake()  # noqa: SLF001 - the read loop sees ``stopping``

    def _close(self) -> None:
        if self.closed:
            return
        self._flush_acks()  # acks already due go out before the close
        self.closed = True
        self.stopping = True
        if self.partial_held:
            self.server.hold_partial(self, 0)
        self.io.close()

    async def close(self) -> None:
        self._close()
        try:
            await asyncio.wait_for(self.io.wait_closed(), 2.0)
        except (asyncio.TimeoutError, ConnectionError, ssl.SSLError, OSError):
            pass


def _ends_whole(ev: Chunk) -> bool:
    """The frame's entries end with a whole entry. Message and Forward
    frames are framed entry by entry by the parser; a PackedForward payload
    is the peer's blob, walked here (only when it is to be merged)."""
    if ev.mode == "message" or ev.mode == "forward":
        return True
    return walk_entries(ev.entries)[3] is None


def _peer_host(transport: Any) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)


def _reason_label(reason: str | None) -> str:
    # PONG reasons may name the client address ("anonymous source host
    # '10.1.2.3' denied"); keep the metric label set small.
    text = (reason or "unknown").split(" '")[0]
    return text[:60]


class ForwardServer:
    """The forward input. ``await start()``, then ``port``; ``stop_accepting()``
    and ``close()`` on shutdown."""

    def __init__(self, config: Listen, pipeline: Pipeline, metrics: Metrics,
                 reuse_port: bool = False) -> None:
        self.config = config
        self.reuse_port = reuse_port  # serve --workers: N processes on one port
        self.pipeline = pipeline
        self.metrics = metrics
        self.limits = Limits(config.max_frame_bytes, config.max_decompressed_bytes)
        self.security = (
            ServerSecurity(config.shared_key, config.self_hostname,
                           users={u.username: u.password for u in config.users})
            if config.shared_key is not None else None
        )
        self._server: asyncio.base_events.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._conns: set[_Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0
        self.host = ""
        self._ssl: ssl.SSLContext | None = None
        self._refused = 0
        self.acks_pending = 0
        #: bytes of unfinished frames over all connections (``hold_partial``)
        self.partial_total = 0
        #: peer address -> (start of its minute, failed handshakes in it)
        self._auth_failures: dict[str, tuple[float, int]] = {}
        self._poison_logged: dict[str, float] = {}

    def auth_failed(self, transport: Any) -> None:
        host = _peer_host(transport)
        now = asyncio.get_running_loop().time()
        start, n = self._auth_failures.get(host, (now, 0))
        if now - start >= 60.0:
            start, n = now, 0
        if len(self._auth_failures) >= 10_000 and host not in self._auth_failures:
            # Bounded: forget the minutes that are over (then, if need be, all).
            self._auth_failures = {h: v for h, v in self._auth_failures.items() if now - v[0] < 60.0}
            if len(self._auth_failures) >= 10_000:
                self._auth_failures.clear()
        self._auth_failures[host] = (start, n + 1)

    def _auth_blocked(self, transport: Any) -> bool:
        entry = self._auth_failures.get(_peer_host(transport))
        if entry is None:
            return False
        start, n = entry
        return (n >= self.config.auth_failures_per_minute
                and asyncio.get_running_loop().time() - start < 60.0)

    def log_poison(self, transport: Any, peer: str, tag: str, n: int) -> None:
        """Entries Python cannot hold were rejected (counted by the stage as
        ``records_rejected{reason="entry_undecodable"}``): one log line per
        peer address and minute."""
        host = _peer_host(transport)
        now = asyncio.get_running_loop().time()
        last = self._poison_logged.get(host)
        if last is not None and now - last < 60.0:
            return
        if len(self._poison_logged) >= 10_000:
            self._poison_logged.clear()
        self._poison_logged[host] = now
        log_event(logging.WARNING, "records_undecodable", peer=peer, tag=tag, records=n,
                  detail="msgpack Python cannot hold (container as map key, bad ext); rejected")

    def _evict_idle(self) -> None:
        """Over ``idle_soft_limit``: close the connection idle the longest."""
        if len(self._conns) < self.config.idle_soft_limit:
            return
        idle = [c for c in self._conns
                if c.idle_since is not None and not c.pending and not c.closed
                and not c.proto.partial_bytes]
        if not idle:
            return
        oldest = min(idle, key=lambda c: c.idle_since or 0.0)
        oldest.evicted = True
        self.metrics.inc("connections_evicted", reason="idle_soft_limit")
        oldest._close()

    def hold_partial(self, conn: _Connection, nbytes: int) -> None:
        """``conn`` now holds ``nbytes`` of a frame that has not ended
        (``partial_bytes``, read when it waits for data). Past
        ``max_partial_bytes`` over all connections, the connections holding
        the largest such frames are closed until the rest fit: each one's
        sender resends the frame (it was not acked)."""
        if conn.closed:
            nbytes = 0  # (a connection shed while it still had bytes to parse)
        self.partial_total += nbytes - conn.partial_held
        conn.partial_held = nbytes
        if self.partial_total <= self.config.max_partial_bytes:
            return
        held = sorted((c for c in self._conns if c.partial_held and not c.closed),
                      key=lambda c: c.partial_held, reverse=True)
        for c in held:
            if self.partial_total <= self.config.max_partial_bytes:
                break
            self.metrics.inc("connections_evicted", reason="partial_frames")
            c._log_once("partial_frames", fatal=True,
                        detail=f"{c.partial_held} bytes of an unfinished frame; "
                               f"{self.partial_total} held over all connections "
                               f"(listen.max_partial_bytes {self.config.max_partial_bytes})")
            c.evicted = True
            c._close()  # (gives its share back)

    def count_pending(self, delta: int) -> None:
        """Chunks handed to the pipeline whose upstream ack (or refusal) is
        still to come: the ``acks_pending`` gauge."""
        self.acks_pending += delta
        self.metrics.set("acks_pending", self.acks_pending)

    async def start(self) -> None:
        host, port = parse_hostport(self.config.address)
        ctx = self._ssl = server_ssl_context(self.config.tls) if self.config.tls else None
        # TLS is started per connection in _accept (not by create_server's
        # ssl=), so a failed TLS handshake is counted and logged like any peer
        # error; asyncio itself reports those only in debug mode.
        loop = asyncio.get_running_loop()

        def protocol() -> _StreamProtocol:
            return _StreamProtocol(self)

        self._server = await loop.create_server(protocol, host, port, reuse_address=True,
                                                reuse_port=self.reuse_port or None)
        sock = self._server.sockets[0]
        self.host, self.port = sock.getsockname()[:2]
        if self.config.udp_heartbeat:
            loop = asyncio.get_running_loop()
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpHeartbeat(self.metrics), local_addr=(self.host, self.port), family=family,
                reuse_port=self.reuse_port or None)
        log_event(logging.INFO, "listening", input="forward", address=format_peer((self.host, self.port)),
                  tls=bool(ctx), handshake=self.security is not None)

    async def _accept(self, io: _StreamProtocol) -> None:
        m = self.metrics
        task = asyncio.current_task()
        assert task is not None
        # Connections still in their TLS handshake count against the limit too.
        if len(self._tasks) >= self.config.max_connections or self._server is None:
            m.inc("connections_refused")
            self._refused += 1
            if self._refused % 100 == 1:  # a connection flood must not flood the log
                log_event(logging.WARNING, "connection_refused",
                          peer=format_peer(io.transport.get_extra_info("peername") if io.transport else None),
                          reason="max_connections", limit=self.config.max_connections,
                          refused_total=self._refused)
            io.close()
            return
        if self.security is not None and self._auth_blocked(io.transport):
            # Too many failed handshakes from this address this minute
            # (shared-key guessing): no HELO, no slot.
            m.inc("connections_refused_auth_rate")
            io.close()
            return
        self._evict_idle()
        self._tasks.add(task)
        try:
            if self._ssl is not None:
                if not await self._start_tls(io):
                    return
            conn = _Connection(self, io)
            io.resume()
            self._conns.add(conn)
            m.inc("connections_accepted")
            m.set("connections_open", len(self._conns))
            try:
                await conn.run()
            finally:
                self._conns.discard(conn)
                m.set("connections_open", len(self._conns))
                await conn.close()
        except asyncio.CancelledError:
            io.close()  # shutdown (close() cancels what is left)
        finally:
            self._tasks.discard(task)

    async def _start_tls(self, io: _StreamProtocol) -> bool:
        assert self._ssl is not None and io.transport is not None
        peer = format_peer(io.transport.get_extra_info("peername"))
        try:
            tls = await asyncio.wait_for(
                asyncio.get_running_loop().start_tls(io.transport, io, self._ssl, server_side=True),
                self.config.handshake_timeout)
            assert tls is not None
            io.transport = tls  # type: ignore[assignment]
            io.over_ssl = True
            # The TLS transport reads from the start; it is paused again
            # only by the high-water mark.
            io.paused = False
            return True
        except asyncio.TimeoutError:
            reason, detail = "tls_handshake_timeout", ""
        except (ssl.SSLError, ConnectionError, OSError) as exc:
            reason, detail = "tls_handshake_failed", getattr(exc, "reason", None) or type(exc).__name__
        self.metrics.inc("connections_rejected", reason=reason)
        log_event(logging.WARNING, "forward_peer_error", peer=peer, reason=reason, fatal=True,
                  detail=str(detail)[:200])
        io.close()
        return False

    async def stop_accepting(self) -> None:
        """Close the listener (and the UDP heartbeat endpoint)."""
        if self._server is not None:
            self._server.close()
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    def stop_reading(self) -> None:
        """Every connection stops reading; acks of handed-over chunks still go out."""
        for conn in list(self._conns):
            conn.stop()

    async def close(self) -> None:
        """Close every connection (after the runtime drained)."""
        await self.stop_accepting()
        self.stop_reading()
        for conn in list(self._conns):
            await conn.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 5)
            except asyncio.TimeoutError:
                pass
            self._server = None
