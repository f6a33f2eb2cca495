"""The chunk as it travels between inputs, the stage and outputs. No I/O.

A chunk is a tag and the *packed entries* of its records: concatenated
msgpack ``[time, record]`` arrays, exactly as a forward PackedForward
carries them. Inputs build them (``pack_entry``), the stage reads and
rewrites them, outputs send or render them (``unpacker_for``); ``OutChunk``
is what the stage hands to an output. This module is what all of them share,
so an output need not import the stage.
"""

from __future__ import annotations

import codecs
import time as _time
from typing import Any

import msgpack

__all__ = ["OutChunk", "unpacker_for", "pack_entry", "pack_after", "event_time", "event_time_now", "EXT_EVENT_TIME"]

EXT_EVENT_TIME = 0


class OutChunk:
    """``tag``, the packed ``entries`` of ``count`` records, and ``peer``:
    the upstream peer the records came from ("" when unknown: summaries,
    stdin; only the dead-letter file shows it).

    The stage may hand the entries over as ``parts`` (slices of its input
    and re-encoded records, in order) instead of joining them: the forward
    output hands the parts to the socket as they are (``os.writev`` on a
    plain socket; a TLS one gets them laid into one frame), so a chunk is
    not copied in user space on the way out.
    ``entries`` joins them on first use; ``nbytes`` is their length."""

    __slots__ = ("tag", "_entries", "count", "peer", "parts", "nbytes")

    def __init__(self, tag: str, entries: bytes | None, count: int, peer: str = "", *,
                 parts: list[Any] | None = None) -> None:
        self.tag = tag
        self.count = count
        self.peer = peer
        if entries is None:
            assert parts is not None, "entries or parts"
            self.parts: list[Any] | None = parts
            self._entries: bytes | None = None
            self.nbytes = sum(map(len, parts))
        else:
            self.parts = None
            self._entries = entries
            self.nbytes = len(entries)

    @property
    def entries(self) -> bytes:
        if self._entries is None:
            self._entries = b"".join(self.parts or ())
            self.parts = None
        return self._entries

    @entries.setter
    def entries(self, value: bytes) -> None:
        self._entries, self.parts, self.nbytes = value, None, len(value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OutChunk):
            return NotImplemented
        return (self.tag, self.entries, self.count, self.peer) == (other.tag, other.entries, other.count, other.peer)

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass it was

    def __repr__(self) -> str:
        return f"OutChunk(tag={self.tag!r}, entries={self.entries!r}, count={self.count!r}, peer={self.peer!r})"


def unpacker_for(data: bytes | None = None, max_size: int = 0) -> msgpack.Unpacker:
    """The one way records are decoded: str stays str (bytes that are not
    UTF-8 survive as surrogates and re-encode byte for byte), bin stays bytes,
    non-str map keys are kept (Fluent peers may send them)."""
    up = msgpack.Unpacker(
        raw=False,
        unicode_errors="surrogateescape",
        strict_map_key=False,
        max_buffer_size=max_size or max(len(data or b"") + 1, 1024 * 1024),
    )
    if data:
        up.feed(data)
    return up


_packer = msgpack.Packer(unicode_errors="surrogateescape", use_bin_type=True)


def _lone_surrogates(exc: UnicodeError) -> tuple[bytes, int]:
    # U+DC80..U+DCFF is surrogateescape's byte that was not UTF-8: give the
    # byte back. Any other lone surrogate (a JSON "\ud800" escape, which
    # Python's json accepts) has no UTF-8 form at all: U+FFFD.
    assert isinstance(exc, UnicodeEncodeError)
    out = b"".join(bytes([ord(c) - 0xDC00]) if 0xDC80 <= ord(c) <= 0xDCFF else "\ufffd".encode()
                   for c in exc.object[exc.start:exc.end])
    return out, exc.end


codecs.register_error("probetag-surrogates", _lone_surrogates)
_lenient_packer = msgpack.Packer(unicode_errors="probetag-surrogates", use_bin_type=True)


def pack_entry(t: Any, record: Any) -> bytes:
    try:
        return _packer.pack([t, record])
    except UnicodeEncodeError:
        # Only JSON inputs can carry such strings; raising here would fail
        # the whole request or line batch, so the record goes on with U+FFFD.
        return _lenient_packer.pack([t, record])


def pack_after(head: bytes, record: Any) -> bytes:
    """``pack_entry(t, record)`` when ``head`` is the 2-array header and ``t``
    packed: the time's bytes as they came, without a Python object for it."""
    try:
        return head + _packer.pack(record)
    except UnicodeEncodeError:
        return head + _lenient_packer.pack(record)


def event_time(seconds: int, nanoseconds: int = 0) -> msgpack.ExtType:
    return msgpack.ExtType(EXT_EVENT_TIME, seconds.to_bytes(4, "big") + nanoseconds.to_bytes(4, "big"))


def event_time_now() -> msgpack.ExtType:
    ns = _time.time_ns()
    return event_time(ns // 1_000_000_000, ns % 1_000_000_000)
