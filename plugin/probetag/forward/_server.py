"""Server side of one forward-protocol connection (what Fluentd's
``in_forward`` and Vector's ``fluent`` source are). No I/O.

Theory of operation
-------------------
* The caller writes ``initial_bytes()`` on connect (the HELO when a shared
  key is configured, else nothing), feeds every received byte string to
  ``receive_data()`` (``b""`` for EOF) and drains ``next_event()`` until it
  returns ``NEED_DATA`` or ``CLOSED`` before reading again. That drain is
  what bounds memory: ``receive_data()`` itself only appends, while
  ``next_event()`` never holds more than one frame (``max_frame_bytes``)
  plus the last read.
* States: HANDSHAKE (security set, waiting for PING) -> DATA -> DONE. In
  HANDSHAKE the first frame must be a PING; anything else is the fatal
  ``handshake_required``. A failed PING yields ``HandshakeReply(ok=False)``
  and then ``CLOSED``: the caller writes the PONG and closes (SPEC1 "Server
  MUST disconnect if authentication/authorization fails").
* In DATA each frame becomes a ``Chunk``, a ``Heartbeat`` or a
  ``ProtocolError``. A fatal error (the stream itself is broken: bad
  msgpack, too large, too deep, truncated at EOF) is reported once, then
  ``CLOSED`` forever. A non-fatal error means "frame skipped, no ack,
  carry on".
* Acks are the caller's decision (after the records are settled); it gets
  the bytes from ``ack_bytes(chunk_id)``, which echoes the id with the type
  and bytes it arrived with.
"""

from __future__ import annotations

import os

import msgpack

from ._events import (
    CLOSED,
    NEED_DATA,
    Chunk,
    ChunkId,
    HandshakeReply,
    Heartbeat,
    Limits,
    LocalProtocolError,
    Marker,
    ProtocolError,
    ServerSecurity,
)
from ._handshake import build_helo, check_ping
from ._wire import ARRAY, FrameError, Framer, Undecodable, kind_at, parse_frame, unpack_frame

__all__ = ["ServerConnection", "encode_ack", "encode_nack", "handle_udp_heartbeat"]

ServerEvent = Chunk | Heartbeat | HandshakeReply | ProtocolError | Marker

_HANDSHAKE, _DATA, _DONE = "handshake", "data", "done"
# A PING is a few hundred bytes; a bigger first frame is not a PING.
_MAX_PING_BYTES = 64 * 1024

_ack_packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")


def encode_ack(chunk_id: ChunkId) -> bytes:
    """``{"ack": chunk_id}``. A str id goes out as str, a bytes id as bin, with
    the exact bytes received: Fluentd's ids end in "\\n" and Fluent Bit
    compares the ack byte for byte."""
    if not isinstance(chunk_id, (str, bytes)):
        raise LocalProtocolError(f"chunk id must be str or bytes, not {type(chunk_id).__name__}")
    return _ack_packer.pack({"ack": chunk_id})


def encode_nack() -> bytes:
    """``{}`` (0x80): what Vector's fluent source writes when it rejects a
    chunk (then it closes). Fluentd clients treat it as a failed ack."""
    return b"\x80"


def handle_udp_heartbeat(datagram: bytes) -> bytes | None:
    """The reply to a UDP heartbeat datagram, or None to ignore it.

    SPEC1 "Heartbeat Message": the client sends a single 0x00 byte and the
    server answers 0x00 to the source address. Fluentd answers any datagram;
    we answer only the real heartbeat so the port cannot be used to reflect
    arbitrary traffic (the reply is never larger than the request anyway)."""
    return b"\x00" if datagram == b"\x00" else None


class ServerConnection:
    """One accepted TCP connection, server side."""

    def __init__(
        self,
        peer: str,
        limits: Limits = Limits(),
        security: ServerSecurity | None = None,
        *,
        keepalive: bool = True,
    ) -> None:
        """``keepalive=False`` is Fluentd's ``deny_keepalive``: the HELO then
        says ``keepalive: false`` and the caller closes after the first
        request (and its ack)."""
        self.peer = peer
        self.limits = limits
        self.security = security
        self._framer = Framer(limits.max_frame_bytes)
        self._state = _HANDSHAKE if security is not None else _DATA
        self._started = False  # has the first byte of the stream been looked at
        self._nonce = b""
        self._auth_salt = b""
        self._helo = b""
        if security is not None:
            # Fluentd in_forward: 16 random bytes each, sent as bin; the auth
            # salt only when user auth is on ("auth": "" otherwise).
            self._nonce = os.urandom(16)
            self._auth_salt = os.urandom(16) if security.users else b""
            self._helo = build_helo(self._nonce, self._auth_salt, keepalive=keepalive)

    @property
    def handshake_pending(self) -> bool:
        return self._state == _HANDSHAKE

    @property
    def closed(self) -> bool:
        return self._state == _DONE

    @property
    def partial_bytes(self) -> int:
        """Bytes of a frame that has started and is not complete yet (read it
        after ``next_event()`` returned ``NEED_DATA``). The caller times how
        long this stays non-zero (``listen.frame_timeout``): the protocol
        core keeps no clock."""
        return 0 if self._state == _DONE else self._framer.buffered

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not yet returned as events, in any state (the
        caller stops reading above its own bound)."""
        return self._framer.buffered

    def initial_bytes(self) -> bytes:
        return self._helo

    def receive_data(self, data: bytes) -> None:
        if data and self._framer.eof:
            raise LocalProtocolError("receive_data() after EOF")
        self._framer.feed(data)

    def ack_bytes(self, chunk_id: ChunkId) -> bytes:
        return encode_ack(chunk_id)

    def next_event(self) -> ServerEvent:
        if self._state == _DONE:
            return CLOSED
        if not self._started and self._framer.buffered:
            self._started = True
            # Fluentd in_forward switches to JSON when the first byte is { or [
            # (FD-IN). We speak msgpack only; as msgpack those bytes are small
            # ints and every following byte would be another bogus frame.
            first = self._framer.peek()
            if first in (0x7B, 0x5B):
                return self._fatal("json_unsupported", "stream starts with '{' or '[': JSON forward is not supported")
        try:
            frame = self._framer.next_frame()
        except FrameError as exc:
            return self._fatal(exc.reason, exc.detail)
        if frame is None:
            if not self._framer.eof:
                return NEED_DATA
            if self._framer.buffered:
                return self._fatal(
                    "truncated_frame", f"EOF inside a frame ({self._framer.buffered} bytes buffered)"
                )
            # A connection closed without data is normal: Fluentd's transport
            # heartbeat connects (and handshakes) and closes every second.
            self._state = _DONE
            return CLOSED
        if self._state == _HANDSHAKE:
            return self._on_ping(frame)
        return parse_frame(frame, self.limits)

    # ----------------------------------------------------------- internals

    def _fatal(self, reason: str, detail: str) -> ProtocolError:
        self._state = _DONE
        return ProtocolError(reason, True, detail)

    def _on_ping(self, frame: bytes) -> ServerEvent:
        assert self.security is not None
        msg = None
        if kind_at(frame, 0) == ARRAY and len(frame) <= _MAX_PING_BYTES:
            try:
                msg = unpack_frame(frame)
            except Undecodable:
                msg = None  # a real PING holds only str/bin: no map keys to fail on
        head = msg[0] if isinstance(msg, list) and msg else None
        if head not in ("PING", b"PING"):
            # Fluentd answers PONG false "invalid ping message" to any
            # non-PING; data before the handshake is fatal here (no PONG).
            return self._fatal("handshake_required", "data frame before the PING handshake")
        ok, reason, pong = check_ping(msg, self.security, self.peer, self._nonce, self._auth_salt)
        self._state = _DATA if ok else _DONE
        return HandshakeReply(pong, ok, reason)
