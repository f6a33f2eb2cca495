"""The Fluentd forward protocol (v1 and v1.5), sans-I/O.

This package does no I/O: no sockets, no asyncio, no threads. Bytes go in
with ``receive_data()``, events come out of ``next_event()`` (or
``NEED_DATA``), bytes to write come back from methods and events, in the
style of h11. The asyncio server and client in ``probetag.inputs`` /
``probetag.outputs`` are thin loops around these classes.

Theory of operation
-------------------
* ``ServerConnection`` (``_server``) is one accepted connection: optional
  HELO/PING/PONG handshake (``initial_bytes()`` then ``HandshakeReply``),
  then frames -> ``Chunk`` / ``Heartbeat`` / ``ProtocolError``; the caller
  writes ``ack_bytes(chunk_id)`` once a chunk's records are settled.
* ``ClientConnection`` (``_client``) is one outgoing connection: HELO ->
  ``HandshakePing(data)`` (write it) -> PONG -> ``HandshakeDone``; then
  ``send_packed()`` and ``AckReceived``. A ``{}`` reply is the fatal
  ``ProtocolError("nack")``: close and resend.
* ``_wire`` cuts the stream into frames and types them; ``_handshake`` holds
  the digests and message checks.
* Every ``Chunk`` carries *packed entries* (concatenated msgpack
  ``[time, record]``) whatever the mode, so the processing stage sees one
  shape.

Where peers differ, and what we do
----------------------------------
* Undecodable msgpack (0xc1...), a frame over ``max_frame_bytes``, nesting
  over 1024 levels, EOF inside a frame: **fatal** (close). The stream cannot
  be resynchronised (Fluentd and Fluent Bit close too; Vector skips a byte
  and hopes).
* A well-framed but invalid frame (top-level non-array, fewer than 2
  elements, wrong arity for its mode, non-str tag, unknown mode, option not
  a map, ``chunk`` not str/bin, ``fluent_signal`` not int, Message time an
  ext that is not an 8-byte EventTime, unknown ``compressed``, bad or
  truncated gzip/zstd, decompression bomb): **non-fatal** ``ProtocolError``
  carrying the chunk id when it was readable; the frame is skipped, no ack,
  the connection is kept (Vector's choice; Fluentd and Fluent Bit close on
  most of these, which loses the rest of the stream).
* Top-level ``nil``: ``Heartbeat`` (Fluentd and Vector ignore it, Fluent Bit
  closes). ``nil`` options: no options (old Docker logging driver).
* A bad ``size`` is ignored (a hint; Fluentd does ``to_i``, Vector drops the
  frame). ``metadata`` and unknown option keys are ignored.
* ``compressed``: absent or "text" -> as is; "gzip" (every member) and
  "zstd" (every frame) -> decompressed up to ``max_decompressed_bytes``.
  Only PackedForward payloads are decompressed (as Fluentd).
* Entries are not validated here (nested v1.5 times, float times, records
  that are not maps): the stage rejects and counts them entry by entry, as
  Fluentd's ``skip_invalid_event`` does, instead of dropping the whole frame
  (Vector) or the connection (Fluent Bit).
* Handshake: data before the PING is the fatal ``handshake_required``
  (Fluentd would answer PONG false "invalid ping message"); a PING with bad
  arity or field types gets that PONG false; key and user failures get
  Fluentd's PONG false reasons. Fluent Bit closes without a PONG on a key
  mismatch; we always send the PONG so the peer can log why.
* Chunk ids are echoed with the msgpack type they came with (str or bin)
  and their exact bytes, trailing newline included (Fluentd's ids end in
  "\\n"; Fluent Bit compares the ack byte for byte). A chunk id of another
  type is skipped as ``bad_chunk_id`` (Fluent Bit and Vector reject it too);
  one over 128 bytes (peers send 24-25) as ``chunk_id_too_long``.
* HELO ``auth``: a 16-byte bin salt only when user auth is on, else ``""``
  (SPEC1). Fluentd sends a salt whenever ``<security>`` is on; every client
  handles both. Our client, given a salt and no credentials, sends Fluentd's
  defaults (username ``""``, ``sha512_hex(salt)``).
* A JSON stream (first byte ``{`` or ``[``, which Fluentd accepts) is the
  fatal ``json_unsupported``.
* UDP heartbeat: only the spec's single 0x00 byte gets the 0x00 reply.
"""

from ._client import ClientConnection, new_chunk_id
from ._events import (
    CLOSED,
    NEED_DATA,
    AckReceived,
    Chunk,
    ChunkId,
    ClientSecurity,
    HandshakeDone,
    HandshakeFailed,
    HandshakePing,
    HandshakeReply,
    Heartbeat,
    Limits,
    LocalProtocolError,
    Marker,
    ProtocolError,
    ServerSecurity,
)
from ._server import ServerConnection, encode_ack, encode_nack, handle_udp_heartbeat
from ._wire import parse_event_time

__all__ = [
    "Limits",
    "ServerSecurity",
    "ClientSecurity",
    "ServerConnection",
    "ClientConnection",
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
    "encode_ack",
    "encode_nack",
    "new_chunk_id",
    "handle_udp_heartbeat",
    "parse_event_time",
]
