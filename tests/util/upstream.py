"""An upstream test client: sends PackedForward chunks with ``chunk`` ids
(as Fluentd out_forward does with require_ack_response) over one blocking
socket and records when each ack arrives."""

from __future__ import annotations

import base64
import os
import socket
import time
from typing import Any

import msgpack


def event_time(t: float) -> msgpack.ExtType:
    sec = int(t)
    return msgpack.ExtType(0, sec.to_bytes(4, "big") + int((t - sec) * 1e9).to_bytes(4, "big"))


def packed_frame(tag: str, records: list[dict], chunk_id: str | None, t: float | None = None) -> bytes:
    t = time.time() if t is None else t
    entries = b"".join(msgpack.packb([event_time(t), r], use_bin_type=True) for r in records)
    opts: dict[str, Any] = {"size": len(records), "compressed": "text"}
    if chunk_id is not None:
        opts["chunk"] = chunk_id
    return msgpack.packb([tag, entries, opts], use_bin_type=True)


def new_chunk_id() -> str:
    # Fluentd: Base64.encode64(16 random bytes), trailing newline included.
    return base64.encodebytes(os.urandom(16)).decode()


class HandshakeError(Exception):
    pass


class Upstream:
    """``ssl_context`` wraps the socket in TLS; ``security`` (a
    ``probetag.forward.ClientSecurity``) does the HELO/PING/PONG handshake
    with ``probetag.forward.ClientConnection`` before anything is sent;
    ``sndbuf`` shrinks the kernel send buffer (backpressure tests)."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0, *,
                 ssl_context: Any = None, security: Any = None, sndbuf: int | None = None) -> None:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if sndbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        raw.settimeout(timeout)
        raw.connect((host, port))
        self.sock = ssl_context.wrap_socket(raw, server_hostname=host) if ssl_context else raw
        self.unpacker = msgpack.Unpacker(raw=False)
        self.bytes_sent = 0
        if security is not None:
            self._handshake(security, timeout)
        self.sent_at: dict[str, float] = {}
        self.acked_at: dict[str, float] = {}
        self.other_replies: list[Any] = []

    def _handshake(self, security: Any, timeout: float) -> None:
        from probetag.forward import (CLOSED, NEED_DATA, ClientConnection, HandshakeDone,
                                      HandshakeFailed, HandshakePing)
        cli = ClientConnection(security=security)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ev = cli.next_event()
            if ev is NEED_DATA:
                data = self.sock.recv(65536)
                cli.receive_data(data)
            elif isinstance(ev, HandshakePing):
                self.sock.sendall(ev.data)
            elif isinstance(ev, HandshakeDone):
                return
            elif isinstance(ev, HandshakeFailed):
                raise HandshakeError(ev.reason)
            elif ev is CLOSED:
                raise HandshakeError("closed")
            else:
                raise HandshakeError(repr(ev))
        raise HandshakeError("timeout")

    def send_chunk(self, tag: str, records: list[dict]) -> str:
        cid = new_chunk_id()
        frame = packed_frame(tag, records, cid)
        self.sent_at[cid] = time.monotonic()
        self.sock.sendall(frame)
        self.bytes_sent += len(frame)
        return cid

    def peer_closed(self, timeout: float = 5.0) -> bool:
        """True if the server closes the connection within ``timeout``
        (replies before the EOF are kept in ``other_replies``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return False
            except OSError:
                return True
            if not data:
                return True
            self.unpacker.feed(data)
            self.other_replies.extend(self.unpacker)
        return False

    def read_acks(self, want: int, timeout: float = 20.0) -> int:
        """Read replies until ``want`` acks in total arrived or ``timeout``."""
        deadline = time.monotonic() + timeout
        while len(self.acked_at) < want and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, min(0.5, deadline - time.monotonic())))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                break
            now = time.monotonic()
            self.unpacker.feed(data)
            for obj in self.unpacker:
                if isinstance(obj, dict) and "ack" in obj:
                    self.acked_at[obj["ack"]] = now
                else:
                    self.other_replies.append(obj)
        return len(self.acked_at)

    def close(self) -> None:
        self.sock.close()
