"""Helpers shared by the forward-protocol tests: drive a connection in memory."""

from __future__ import annotations

import struct

import msgpack
import pytest

from probetag.forward import CLOSED, NEED_DATA, ServerConnection


def event_time(sec: int, nsec: int = 0) -> bytes:
    """EventTime as fixext8 (d7 00 + uint32 BE sec + uint32 BE nsec), SPEC1."""
    return b"\xd7\x00" + struct.pack(">II", sec, nsec)


def event_time_ext8(sec: int, nsec: int = 0) -> bytes:
    """The same EventTime as ext8 (c7 08 00 ...), which SPEC1 also allows."""
    return b"\xc7\x08\x00" + struct.pack(">II", sec, nsec)


def drain(conn, limit: int = 10_000) -> list:
    """Every event up to NEED_DATA or CLOSED (the marker is included)."""
    out = []
    for _ in range(limit):
        ev = conn.next_event()
        out.append(ev)
        if ev is NEED_DATA or ev is CLOSED:
            return out
    raise AssertionError("next_event() did not settle")


def feed(conn, data: bytes, eof: bool = False) -> list:
    conn.receive_data(data)
    if eof:
        conn.receive_data(b"")
    return drain(conn)


def unpack_entries(entries: bytes) -> list:
    up = msgpack.Unpacker(raw=False, unicode_errors="surrogateescape", strict_map_key=False)
    up.feed(entries)
    return list(up)


@pytest.fixture
def server() -> ServerConnection:
    return ServerConnection("127.0.0.1")
