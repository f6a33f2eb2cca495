"""Events, markers and settings of the forward protocol core.

Every value here is a frozen, slotted dataclass (or an enum marker), so an
event can be compared, logged and handed across tasks without copying.
Secrets (shared keys, passwords) are kept out of ``repr`` so that logging a
settings object or an event never prints them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Mapping

__all__ = [
    "Limits",
    "ServerSecurity",
    "ClientSecurity",
    "Chunk",
    "Heartbeat",
    "HandshakeReply",
    "HandshakePing",
    "HandshakeDone",
    "HandshakeFailed",
    "AckReceived",
    "ProtocolError",
    "LocalProtocolError",
    "NEED_DATA",
    "CLOSED",
    "Marker",
    "ChunkId",
    "Mode",
]

MiB = 1024 * 1024

#: A chunk id as it came off the wire: ``str`` when the peer sent a msgpack
#: str (bytes that are not UTF-8 survive as surrogates), ``bytes`` for bin.
ChunkId = str | bytes

Mode = Literal["message", "forward", "packed", "compressed"]


class Marker(enum.Enum):
    """h11-style markers returned by ``next_event()`` instead of an event."""

    NEED_DATA = "NEED_DATA"
    CLOSED = "CLOSED"

    def __repr__(self) -> str:
        return self.value

    __str__ = __repr__


#: No complete event is buffered: feed more bytes with ``receive_data()``.
NEED_DATA = Marker.NEED_DATA
#: The peer closed (EOF), or the connection is finished after a fatal error
#: or a failed handshake. Every later call returns ``CLOSED`` again.
CLOSED = Marker.CLOSED


class LocalProtocolError(RuntimeError):
    """We (the caller) used the state machine wrongly: a bug, never a peer error."""


# ---------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one peer can make us buffer.

    ``max_frame_bytes`` bounds one top-level msgpack object on the wire (the
    whole frame, options included); a frame that grows beyond it is fatal,
    because a stream cannot be resynchronised in the middle of an object.
    ``max_decompressed_bytes`` bounds the entries of one CompressedPackedForward
    frame after gzip/zstd; exceeding it skips the frame (a bomb), the
    connection is kept.
    """

    max_frame_bytes: int = 16 * MiB
    max_decompressed_bytes: int = 64 * MiB

    def __post_init__(self) -> None:
        for name in ("max_frame_bytes", "max_decompressed_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 64:
                raise ValueError(f"Limits.{name} must be an int >= 64, got {value!r}")


@dataclass(frozen=True, slots=True)
class ServerSecurity:
    """The ``<security>`` section of Fluentd's ``in_forward``.

    ``users`` maps username to password; when it is non-empty the HELO carries
    an auth salt and every PING must carry a matching user digest (Fluentd's
    ``user_auth true``). ``allow_anonymous_source=False`` rejects every peer
    with Fluentd's ``anonymous source host '<ip>' denied`` reason: there is no
    ``<client>`` list here, so no peer is ever "known" (Fluentd semantics).
    """

    shared_key: str = field(repr=False)
    self_hostname: str
    users: Mapping[str, str] = field(default_factory=dict, repr=False)
    allow_anonymous_source: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.shared_key, str) or not isinstance(self.self_hostname, str):
            raise TypeError("ServerSecurity.shared_key and self_hostname must be str")
        if not self.self_hostname:
            raise ValueError("ServerSecurity.self_hostname must not be empty")
        users = dict(self.users)
        for name, password in users.items():
            if not isinstance(name, str) or not isinstance(password, str):
                raise TypeError("ServerSecurity.users must map str usernames to str passwords")
        # Freeze the mapping so the settings object really is immutable.
        object.__setattr__(self, "users", MappingProxyType(users))


@dataclass(frozen=True, slots=True)
class ClientSecurity:
    """The ``<security>`` / ``<server>`` credentials of Fluentd's ``out_forward``."""

    shared_key: str = field(repr=False)
    self_hostname: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.shared_key, str) or not isinstance(self.self_hostname, str):
            raise TypeError("ClientSecurity.shared_key and self_hostname must be str")
        if (self.username is None) != (self.password is None):
            raise ValueError("ClientSecurity.username and password go together")


# ------------------------------------------------------------ server events


@dataclass(frozen=True, slots=True)
class Chunk:
    """One accepted data frame.

    ``entries`` is always *packed entries*: concatenated msgpack
    ``[time, record]`` arrays, whatever the mode the peer used. The bytes are
    the peer's own (no re-encoding), except that a Message-mode frame gets a
    ``0x92`` array header in front of its time and record, and compressed
    payloads are decompressed. Entries are not validated here: nested
    ``[[time, meta], record]`` times, bad times and non-map records are the
    processing stage's business (it rejects and counts them one by one).
    """

    tag: str
    entries: bytes
    chunk_id: ChunkId | None
    mode: Mode
    size_hint: int | None
    signal: int
    frame_bytes: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A msgpack ``nil`` at the top level of a TCP stream (SPEC1 grammar)."""


@dataclass(frozen=True, slots=True)
class HandshakeReply:
    """The PONG to write. When ``ok`` is False the caller closes after writing."""

    data: bytes
    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The peer sent something we do not accept.

    ``reason`` is a short snake_case label for a counter; ``detail`` is for a
    log line and never contains secrets. ``fatal=True``: the stream cannot be
    trusted any more, close the connection. ``fatal=False``: the frame was
    skipped (no ack), the connection goes on.
    """

    reason: str
    fatal: bool
    detail: str
    chunk_id: ChunkId | None = None


# ------------------------------------------------------------ client events


@dataclass(frozen=True, slots=True)
class HandshakePing:
    """Client side: the PING to write now, in answer to the server's HELO."""

    data: bytes


@dataclass(frozen=True, slots=True)
class HandshakeDone:
    """Client side: the server's PONG was verified; data may be sent."""


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    """Client side: the handshake failed; close the connection."""

    reason: str


@dataclass(frozen=True, slots=True)
class AckReceived:
    """Client side: the server acknowledged this chunk id (as sent)."""

    chunk_id: ChunkId
