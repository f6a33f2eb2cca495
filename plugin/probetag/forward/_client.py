"""Client side of one forward-protocol connection (what Fluentd's and Fluent
Bit's ``out_forward`` are). No I/O.

Theory of operation
-------------------
* Without security the connection is ``ready`` at once. With a shared key
  the server speaks first: its HELO yields ``HandshakePing(data)`` (write
  it), its PONG yields ``HandshakeDone`` or ``HandshakeFailed`` (close).
* ``send_packed()`` returns the bytes of one PackedForward frame
  ``[tag, entries (bin), {"size": n, "chunk": id, "compressed": "gzip"}]``
  and remembers the chunk id. Entries go out as bin (SPEC1) which Fluentd,
  Fluent Bit and Vector all accept; ``compressed`` is left out for plain
  entries because Vector only knows "gzip"/"text"/absent and an absent key
  means text for every peer.
* Every reply after the handshake must be an ack for an outstanding chunk:
  ``{"ack": id}`` -> ``AckReceived(id)``. ``{}`` (Vector's reject) is the
  fatal ``ProtocolError("nack")``; an ack for an id we did not send, or any
  other reply, is the fatal ``unexpected_ack`` / ``bad_ack``. Fatal means:
  close, and resend every unacked chunk on a new connection (Fluentd's
  out_forward does the same on a bad ack, #4057).
"""

from __future__ import annotations

import base64
import secrets
import zlib
from typing import Any, Literal, Sequence

import msgpack

from ._events import (
    CLOSED,
    NEED_DATA,
    AckReceived,
    ClientSecurity,
    HandshakeDone,
    HandshakeFailed,
    HandshakePing,
    LocalProtocolError,
    Marker,
    ProtocolError,
)
from ._handshake import build_ping, check_pong, parse_helo
from ._wire import FrameError, Framer, Undecodable, to_bytes, unpack_frame

__all__ = ["ClientConnection", "new_chunk_id"]

ClientEvent = HandshakePing | HandshakeDone | HandshakeFailed | AckReceived | ProtocolError | Marker

_HELO, _PONG, _READY, _DONE = "await_helo", "await_pong", "ready", "done"
# Server replies are HELO, PONG and acks: small. Bound them tightly.
_MAX_REPLY_BYTES = 64 * 1024

_packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")


_FIXARRAY3 = b"\x93"


def _bin_header(n: int) -> bytes:
    """msgpack bin 8/16/32 header for ``n`` bytes."""
    if n < 0x100:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 0x10000:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def new_chunk_id() -> str:
    """A fresh chunk id: base64 of 16 random bytes (SPEC1 "chunk": base64 of a
    128-bit id), 24 chars. Unlike Fluentd's ``Base64.encode64`` there is no
    trailing newline."""
    return base64.b64encode(secrets.token_bytes(16)).decode("ascii")


class ClientConnection:
    """One outgoing TCP connection, client side."""

    def __init__(self, security: ClientSecurity | None = None) -> None:
        self.security = security
        self._framer = Framer(_MAX_REPLY_BYTES)
        self._state = _HELO if security is not None else _READY
        self._nonce = b""
        self._salt = b""
        self._outstanding: dict[bytes, str] = {}

    @property
    def ready(self) -> bool:
        """True when no handshake is needed or it has completed."""
        return self._state == _READY

    @property
    def outstanding(self) -> tuple[str, ...]:
        """Chunk ids sent and not yet acked, oldest first."""
        return tuple(self._outstanding.values())

    def receive_data(self, data: bytes) -> None:
        if data and self._framer.eof:
            raise LocalProtocolError("receive_data() after EOF")
        self._framer.feed(data)

    def next_event(self) -> ClientEvent:
        if self._state == _DONE:
            return CLOSED
        try:
            frame = self._framer.next_frame()
        except FrameError as exc:
            return self._fatal(exc.reason, exc.detail)
        if frame is None:
            if not self._framer.eof:
                return NEED_DATA
            if self._framer.buffered:
                return self._fatal("truncated_frame", "EOF inside a reply")
            self._state = _DONE
            return CLOSED
        try:
            msg = unpack_frame(frame)
        except Undecodable as exc:
            return self._fatal("parse_error", f"undecodable reply ({exc})")
        if self._state == _HELO:
            return self._on_helo(msg)
        if self._state == _PONG:
            return self._on_pong(msg)
        return self._on_ack(msg)

    def send_packed(
        self,
        tag: str,
        entries: bytes | Sequence[bytes],
        count: int,
        chunk_id: str | None,
        compress: Literal["text", "gzip"] = "text",
    ) -> bytes:
        """One PackedForward frame. With ``chunk_id`` the server must ack it.
        ``entries`` may be given in parts (several chunks' packed entries):
        they are concatenated into the frame, which is the only copy made."""
        return b"".join(self.send_packed_parts(tag, entries, count, chunk_id, compress))

    def send_packed_parts(
        self,
        tag: str,
        entries: bytes | Sequence[bytes],
        count: int,
        chunk_id: str | None,
        compress: Literal["text", "gzip"] = "text",
    ) -> list[Any]:
        """``send_packed``'s frame as the parts it is made of (its head,
        ``entries``' parts as given, its option map), not joined: for a
        writer that hands them to the kernel as they are (``os.writev``)."""
        if self._state != _READY:
            raise LocalProtocolError(f"send_packed() in state {self._state}")
        if not isinstance(tag, str) or not tag:
            raise LocalProtocolError("tag must be a non-empty str")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise LocalProtocolError("count must be an int >= 0")
        option: dict[str, object] = {"size": count}
        if chunk_id is not None:
            if not isinstance(chunk_id, str) or not chunk_id:
                raise LocalProtocolError("chunk_id must be a non-empty str")
            key = chunk_id.encode("utf-8", "surrogateescape")
            if key in self._outstanding:
                raise LocalProtocolError("chunk id already in flight on this connection")
            option["chunk"] = chunk_id
        parts = [entries] if isinstance(entries, (bytes, bytearray, memoryview)) else list(entries)
        if compress == "gzip":
            z = zlib.compressobj(6, zlib.DEFLATED, 31)
            parts = [b"".join(z.compress(p) for p in parts) + z.flush()]
            option["compressed"] = "gzip"
        elif compress != "text":
            raise LocalProtocolError(f"compress must be 'text' or 'gzip', not {compress!r}")
        # [tag, bin payload, option] laid out by hand (what msgpack packs with
        # use_bin_type=True, byte for byte) so the payload is copied once,
        # into the frame, instead of into the packer and out again.
        size = sum(map(len, parts))
        frame = [_FIXARRAY3 + _packer.pack(tag) + _bin_header(size), *parts, _packer.pack(option)]
        if chunk_id is not None:
            self._outstanding[key] = chunk_id
        return frame

    # ----------------------------------------------------------- internals

    def _fatal(self, reason: str, detail: str) -> ProtocolError:
        self._state = _DONE
        return ProtocolError(reason, True, detail)

    def _failed(self, reason: str) -> HandshakeFailed:
        self._state = _DONE
        return HandshakeFailed(reason)

    def _on_helo(self, msg: object) -> ClientEvent:
        assert self.security is not None
        helo = parse_helo(msg)
        if isinstance(helo, str):
            return self._failed(helo)
        self._nonce, auth, _keepalive = helo
        data, self._salt = build_ping(self.security, self._nonce, auth)
        self._state = _PONG
        return HandshakePing(data)

    def _on_pong(self, msg: object) -> ClientEvent:
        assert self.security is not None
        problem = check_pong(msg, self.security, self._salt, self._nonce)
        if problem is not None:
            return self._failed(problem)
        self._state = _READY
        return HandshakeDone()

    def _on_ack(self, msg: object) -> ClientEvent:
        if isinstance(msg, dict) and not msg:
            return self._fatal("nack", "server rejected the chunk ({})")
        if not isinstance(msg, dict) or "ack" not in msg or not isinstance(msg["ack"], (str, bytes)):
            return self._fatal("bad_ack", f"reply is not {{'ack': id}}: {type(msg).__name__}")
        sent = self._outstanding.pop(to_bytes(msg["ack"]), None)
        if sent is None:
            return self._fatal("unexpected_ack", "ack for a chunk id not in flight")
        return AckReceived(sent)
