"""Framing and the typed wire model of forward-protocol frames. No I/O.

Theory of operation
-------------------
* ``Framer`` cuts a byte stream into top-level msgpack objects (frames). It
  keeps its own copy of the unconsumed bytes and runs a msgpack ``Unpacker``
  in *skip* mode over them only to find where each object ends: skipping
  builds no Python objects, so a length prefix never allocates anything. It
  feeds the unpacker in slices of at most ``_FEED`` bytes, so its buffer stays
  below ``max_frame_bytes + 2 * _FEED`` however much the caller hands us at once.
* The skipper exists only while a frame is in progress. It is created on the
  first byte and dropped again whenever every received byte has been
  returned as frames: an ``Unpacker`` costs about 1 MiB of buffer plus a
  zeroed 40 KiB parse stack, so an idle connection (most of a Fluentd
  fleet's, between flushes) would otherwise pay ~1 MiB of address space for
  nothing. With nothing buffered the skipper holds no state (it stops between
  objects), so dropping it loses nothing; making a new one costs about 1 us
  per read that ends on a frame boundary.
* The one bound check: a frame whose bytes (received or, when it can be read
  from a header, declared) exceed ``max_frame_bytes`` is fatal. Declared sizes
  are checked by a shallow header walk (``_declared_overflow``) so that a
  str32 claiming 4 GiB fails at once instead of after 16 MiB of waiting.
* Fast path for the frame every forwarder sends under load, a PackedForward
  ``[tag, str/bin payload, option]`` with a payload of at least
  ``_BIG_PAYLOAD`` bytes: its end is read from its few headers
  (``_packed_end``: tag, payload length, then the small option map header by
  header), so the payload is never copied into a skipper. The skipper
  path would copy a 200 KB chunk five times (slice, bytes, unpacker buffer
  and its growth) for nothing. The fast path applies the same bound checks;
  anything it cannot decide from the headers (other shapes, an option map
  of more than ``_WALK_BUDGET`` objects) goes to the skipper. The skipper is
  dropped whenever such a frame starts: between frames it holds nothing
  but bytes still in ``_buf``. Such a frame is returned as a memoryview of
  ``_buf``, not copied into a ``bytes`` of its own: ``parse_frame`` copies
  the payload out once, as the chunk's entries, so each received byte of
  a big chunk is copied twice in user space (into ``_buf``, into the
  entries), not three times. Its bytes stay at the front of ``_buf``
  (``_held``) until the next ``feed`` or ``next_frame`` drops them, in
  O(1) as before. A view still alive then (a caller that kept its frame)
  pins the buffer: ``_buf`` is then replaced by a copy of the bytes after
  the frame and the view keeps the old one, unchanged.
* Nesting deeper than msgpack's C stack (1024 levels) raises ``StackError``
  in the skipper: fatal ``too_deep``, never a crash. ``0xc1`` and other
  undecodable bytes: fatal ``parse_error``. After a fatal framing error the
  stream cannot be resynchronised, so nothing more is read from it.
* ``parse_frame`` turns one complete frame into a ``Chunk``, a ``Heartbeat``
  or a non-fatal ``ProtocolError``. It looks at type bytes directly and
  decodes only the tag and the option map into Python objects; entries are
  sliced out of the frame as the peer packed them.
* Strings are decoded with ``raw=False, unicode_errors="surrogateescape"``:
  any str decodes (Fluentd wraps entries in str32, Fluent Bit sends non-UTF-8
  salts as str), its original bytes come back with
  ``.encode("utf-8", "surrogateescape")``, and the str/bin distinction of a
  chunk id survives, so an ack echoes it with its original type.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Callable

import msgpack
from msgpack.exceptions import FormatError, OutOfData, StackError

from .._inflate import InflateError, inflate, unzstd
from ._events import Chunk, ChunkId, Heartbeat, Limits, ProtocolError

__all__ = [
    "Framer",
    "FrameError",
    "parse_frame",
    "parse_event_time",
    "BadPayload",
    "gunzip_bounded",
    "unzstd_bounded",
    "new_unpacker",
    "unpack_frame",
    "Undecodable",
    "to_bytes",
    "kind_at",
]

# Bytes handed to the skipping unpacker per feed() call.
_FEED = 256 * 1024
# Initial buffer of the skipping unpacker (msgpack's default is 1 MiB); it
# grows on demand up to its max_buffer_size when a big frame arrives.
_SKIP_READ_SIZE = 64 * 1024
# Fast path (see above): payloads from this size on; headers walked at most.
_BIG_PAYLOAD = 16 * 1024
_WALK_BUDGET = 64

# -------------------------------------------------------------- type table
#
# The msgpack type of an object is fully given by its first byte. Mode
# detection (SPEC1 "Fluentd Forward Server": the 2nd element decides) and the
# entries slicing below need nothing else.

INT, EXT, ARRAY, MAP, STR, BIN, NIL, BOOL, FLOAT, NEVER = (
    "int", "ext", "array", "map", "str", "bin", "nil", "bool", "float", "never",
)


def _build_kinds() -> tuple[str, ...]:
    k: list[str] = [NEVER] * 256
    for b in range(0x00, 0x80):
        k[b] = INT
    for b in range(0x80, 0x90):
        k[b] = MAP
    for b in range(0x90, 0xA0):
        k[b] = ARRAY
    for b in range(0xA0, 0xC0):
        k[b] = STR
    for b in range(0xE0, 0x100):
        k[b] = INT
    k[0xC0] = NIL
    k[0xC2] = k[0xC3] = BOOL
    k[0xC4] = k[0xC5] = k[0xC6] = BIN
    k[0xC7] = k[0xC8] = k[0xC9] = EXT
    k[0xCA] = k[0xCB] = FLOAT
    for b in range(0xCC, 0xD4):
        k[b] = INT
    for b in range(0xD4, 0xD9):
        k[b] = EXT
    k[0xD9] = k[0xDA] = k[0xDB] = STR
    k[0xDC] = k[0xDD] = ARRAY
    k[0xDE] = k[0xDF] = MAP
    return tuple(k)


_KINDS = _build_kinds()


def kind_at(buf: bytes, pos: int) -> str:
    return _KINDS[buf[pos]]


# Header length and how to read the payload length / element count, for the
# variable-size types. (fixed-size header bytes, size-field format or None)
_VAR = {
    0xC4: (2, ">B"), 0xC5: (3, ">H"), 0xC6: (5, ">I"),          # bin 8/16/32
    0xD9: (2, ">B"), 0xDA: (3, ">H"), 0xDB: (5, ">I"),          # str 8/16/32
    0xC7: (3, ">B"), 0xC8: (4, ">H"), 0xC9: (6, ">I"),          # ext 8/16/32 (+type byte)
    0xDC: (3, ">H"), 0xDD: (5, ">I"),                           # array 16/32
    0xDE: (3, ">H"), 0xDF: (5, ">I"),                           # map 16/32
}
_FIXED = {0xCA: 5, 0xCB: 9, 0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9, 0xD0: 2, 0xD1: 3,
          0xD2: 5, 0xD3: 9, 0xD4: 3, 0xD5: 4, 0xD6: 6, 0xD7: 10, 0xD8: 18,
          0xC0: 1, 0xC2: 1, 0xC3: 1}


def _header(buf: bytes | bytearray, pos: int) -> tuple[int, int, int] | None:
    """(header length, payload length, element count) of the object at
    ``pos``, or None when the header is not complete yet. Element count is
    the number of child objects (2 per map pair)."""
    b = buf[pos]
    if b < 0x80 or b >= 0xE0:
        return 1, 0, 0
    if b < 0x90:
        return 1, 0, 2 * (b & 0x0F)
    if b < 0xA0:
        return 1, 0, b & 0x0F
    if b < 0xC0:
        return 1, b & 0x1F, 0
    fixed = _FIXED.get(b)
    if fixed is not None:
        return fixed, 0, 0  # payload counted in the header length
    var = _VAR.get(b)
    if var is None:  # 0xc1: never used
        raise FormatError("byte 0xc1 is never used in msgpack")
    hlen, fmt = var
    if pos + hlen > len(buf):
        return None
    (n,) = struct.unpack_from(fmt, buf, pos + 1)
    if b in (0xDC, 0xDD):
        return hlen, 0, n
    if b in (0xDE, 0xDF):
        return hlen, 0, 2 * n
    return hlen, n, 0


def _declared_overflow(buf: bytearray, start: int, limit: int, budget: int = 64) -> int | None:
    """Walk the first ``budget`` headers of the (incomplete) object at
    ``start`` and return the size it declares if that already exceeds
    ``limit`` bytes, else None. Payload lengths count in full; each declared
    child counts at least one byte. Stops where the data ends."""
    pos = start
    pending = 1  # objects still to be read at any depth
    end = len(buf)
    while pending and budget and pos < end:
        budget -= 1
        h = _header(buf, pos)
        if h is None:
            return None
        hlen, plen, children = h
        pending += children - 1
        claimed = pos + hlen + plen - start + pending  # every pending child >= 1 byte
        if claimed > limit:
            return claimed
        pos += hlen + plen
    return None


def _packed_end(buf: bytearray) -> int | None:
    """Where the frame at ``buf[0]`` ends if its headers show a PackedForward
    with a payload of at least ``_BIG_PAYLOAD`` bytes: the end offset (which
    may lie beyond the data received so far), -1 if the headers after the
    payload are not all here yet, None if it is not such a frame or its
    option map is too long to walk (the skipper decides). Raises
    ``FormatError`` on the byte 0xc1, as the skipper would."""
    b0 = buf[0]
    end = len(buf)
    if (b0 != 0x92 and b0 != 0x93) or end < 2 or _KINDS[buf[1]] != STR:
        return None
    h = _header(buf, 1)
    if h is None:
        return None
    pos = 1 + h[0] + h[1]
    if pos >= end:
        return None
    kind = _KINDS[buf[pos]]
    if kind != STR and kind != BIN:
        return None
    h = _header(buf, pos)
    if h is None or h[1] < _BIG_PAYLOAD:
        return None
    pos += h[0] + h[1]
    if b0 == 0x92 or pos > end:
        return pos if b0 == 0x92 else -1
    pending = 1  # the option map and, as they appear, its children
    for _ in range(_WALK_BUDGET):
        if pos >= end:
            return -1
        h = _header(buf, pos)
        if h is None:
            return -1
        pending += h[2] - 1
        pos += h[0] + h[1]
        if not pending:
            return pos
    return None


class FrameError(Exception):
    """A framing failure: always fatal for the stream."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


class Framer:
    """Cuts a byte stream into complete top-level msgpack objects."""

    __slots__ = ("_limit", "_buf", "_start", "_fed", "_up", "_eof", "_checked", "_held")

    def __init__(self, max_frame_bytes: int) -> None:
        self._limit = max_frame_bytes
        self._buf = bytearray()  # bytes from offset _start on
        # Offsets count from where the current skipper started (it restarts
        # at 0 with every new skipper, see "Theory of operation").
        self._start = 0          # skipper offset of _buf[0] (= frame start)
        self._fed = 0            # offset up to which the skipper was fed
        self._checked = -1       # _fed value at the last declared-size walk
        self._eof = False
        self._up: msgpack.Unpacker | None = None  # created on the first byte
        self._held = 0  # bytes at the front of _buf handed out as a view

    @property
    def skipper_active(self) -> bool:
        """Whether a skipping unpacker is allocated (a frame is in progress)."""
        return self._up is not None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as a frame."""
        return len(self._buf) - self._held

    @property
    def eof(self) -> bool:
        return self._eof

    def peek(self) -> int:
        """The first buffered byte (call only when ``buffered``)."""
        return self._buf[self._held]

    def _drop_held(self) -> None:
        """Drop the bytes of the last frame handed out as a view."""
        n = self._held
        self._held = 0
        try:
            del self._buf[:n]  # O(1) at the front of a bytearray
        except BufferError:
            # A view of it is still alive: never resize or write what a
            # caller can still read; the view keeps the old buffer.
            self._buf = self._buf[n:]

    def feed(self, data: bytes) -> None:
        if self._held:
            self._drop_held()
        if data:
            self._buf += data
        else:
            self._eof = True

    def next_frame(self) -> bytes | memoryview | None:
        """The next complete frame, or None if more bytes are needed. A frame
        of the fast path is a view of the framer's buffer that stays valid
        and unchanged (the framer never resizes or writes a buffer with a
        live view).
        Raises ``FrameError`` (fatal) on undecodable, too deep or too large
        input."""
        if self._held:
            self._drop_held()
        if not self._buf:
            # Every received byte went out as frames: drop the skipper (it
            # holds no state between objects) so an idle stream costs nothing.
            if self._up is not None:
                self._up = None
                self._start = self._fed = 0
                self._checked = -1
            return None
        if len(self._buf) >= _BIG_PAYLOAD:
            frame = self._fast_frame()
            if frame is not False:
                return frame  # type: ignore[return-value]
        if self._up is None:
            self._up = msgpack.Unpacker(
                raw=True,
                strict_map_key=False,
                read_size=_SKIP_READ_SIZE,
                max_buffer_size=self._limit + 2 * _FEED,
            )
        up = self._up
        while True:
            if self._fed - self._start < _FEED:
                # Keep the skipper a slice ahead so a buffered frame is found
                # without first paying for an OutOfData round trip.
                self._feed_slice()
            try:
                up.skip()
            except OutOfData:
                pass
            except StackError:
                raise FrameError("too_deep", "nesting deeper than 1024 levels") from None
            except FormatError as exc:
                raise FrameError("parse_error", f"undecodable msgpack: {exc}") from None
            except ValueError as exc:
                raise FrameError("parse_error", f"undecodable msgpack: {exc}") from None
            else:
                end = up.tell()
                n = end - self._start
                if n > self._limit:
                    raise FrameError("frame_too_large", f"frame of {n} bytes > limit {self._limit}")
                with memoryview(self._buf) as view:
                    frame = view[:n].tobytes()  # one copy, not slice + bytes()
                del self._buf[:n]  # O(1) amortised at the front of a bytearray
                self._start = end
                return frame
            # Incomplete: bound it, then feed the next slice if there is one.
            partial = self._fed - self._start
            if partial > self._limit:
                raise FrameError(
                    "frame_too_large", f"incomplete frame of {partial} bytes > limit {self._limit}"
                )
            if self._fed != self._checked and self._fed > self._start:
                self._checked = self._fed
                try:
                    claimed = _declared_overflow(self._buf, 0, self._limit)
                except FormatError as exc:
                    raise FrameError("parse_error", f"undecodable msgpack: {exc}") from None
                if claimed is not None:
                    raise FrameError(
                        "frame_too_large",
                        f"frame declares at least {claimed} bytes > limit {self._limit}",
                    )
            if not self._feed_slice():
                return None

    def _fast_frame(self) -> bytes | None | bool:
        """The fast path (see above): a frame, None (incomplete), or False
        when the skipper has to decide."""
        try:
            n = _packed_end(self._buf)
        except FormatError as exc:
            raise FrameError("parse_error", f"undecodable msgpack: {exc}") from None
        if n is None:
            return False
        if self._up is not None:
            # At a frame boundary the skipper holds only bytes still in _buf.
            self._up = None
            self._start = self._fed = 0
            self._checked = -1
        if n < 0 or n > len(self._buf):
            # Incomplete: the same bounds as on the skipper path.
            claimed = _declared_overflow(self._buf, 0, self._limit)
            if claimed is not None:
                raise FrameError(
                    "frame_too_large", f"frame declares at least {claimed} bytes > limit {self._limit}"
                )
            if len(self._buf) > self._limit:
                raise FrameError(
                    "frame_too_large", f"incomplete frame of {len(self._buf)} bytes > limit {self._limit}"
                )
            return None
        if n > self._limit:
            raise FrameError("frame_too_large", f"frame of {n} bytes > limit {self._limit}")
        # Handed out as a view, dropped from _buf at the next call (see
        # "Theory of operation").
        self._held = n
        return memoryview(self._buf)[:n]

    def _feed_slice(self) -> bool:
        """Hand the skipper the next (at most ``_FEED``) received bytes."""
        lo = self._fed - self._start
        take = min(len(self._buf) - lo, _FEED)
        if take <= 0:
            return False
        assert self._up is not None
        self._up.feed(bytes(self._buf[lo:lo + take]))
        self._fed += take
        return True


# ---------------------------------------------------------------- parsing


def new_unpacker(max_size: int) -> msgpack.Unpacker:
    return msgpack.Unpacker(
        raw=False,
        unicode_errors="surrogateescape",
        strict_map_key=False,
        max_buffer_size=max(max_size, 1024),
    )


class Undecodable(Exception):
    """A complete msgpack object that still has no Python value (a map key
    that is itself a map or an array, a malformed msgpack timestamp...)."""


def unpack_one(up: msgpack.Unpacker) -> Any:
    """``up.unpack()`` for peer data: raises only ``Undecodable``."""
    try:
        return up.unpack()
    except (TypeError, ValueError, msgpack.UnpackException) as exc:
        raise Undecodable(f"{type(exc).__name__}: {exc}") from None


def unpack_frame(frame: bytes) -> Any:
    """The Python value of one complete (small) frame; ``Undecodable`` else.
    ``unpackb`` decodes as ``new_unpacker`` does, without allocating an
    ``Unpacker`` (whose 40 KiB parse stack is zeroed on every creation)."""
    try:
        return msgpack.unpackb(frame, raw=False, unicode_errors="surrogateescape", strict_map_key=False)
    except (TypeError, ValueError, msgpack.UnpackException) as exc:
        raise Undecodable(f"{type(exc).__name__}: {exc}") from None


def to_bytes(value: str | bytes) -> bytes:
    """The wire bytes of a value decoded by ``new_unpacker`` (str or bin)."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return value


def parse_event_time(obj: Any) -> tuple[int, int] | None:
    """(seconds, nanoseconds) of an int time or an EventTime ext, else None.

    EventTime is ext type 0 with exactly 8 bytes, two *unsigned* big-endian
    uint32 (SPEC1 "EventTime Ext Format"; Vector's ``FluentEventTime`` checks
    the length the same way). fixext8 and ext8 decode to the same ExtType.
    """
    if isinstance(obj, bool):
        return None
    if isinstance(obj, int):
        return obj, 0
    if isinstance(obj, msgpack.ExtType):
        if obj.code != 0 or len(obj.data) != 8:
            return None
        sec, nsec = struct.unpack(">II", obj.data)
        return sec, nsec
    return None


class BadPayload(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


def gunzip_bounded(data: bytes, limit: int) -> bytes:
    """Decompress every gzip member of ``data`` (Fluentd writes one member per
    event, FD-CORE compressable.rb), never producing more than ``limit`` bytes,
    in time linear in the input however many members it holds (``_inflate``)."""
    if not data:
        raise BadPayload("bad_gzip", "empty gzip payload")
    try:
        # 16 + MAX_WBITS: gzip header required.
        return inflate(data, 16 + zlib.MAX_WBITS, limit)
    except InflateError as exc:
        if exc.reason == "too_large":
            raise BadPayload("decompressed_too_large", f"gzip output exceeds {limit} bytes") from None
        raise BadPayload("bad_gzip", f"truncated gzip member #{exc.member}") from None
    except zlib.error as exc:
        raise BadPayload("bad_gzip", f"gzip: {exc}") from None


def unzstd_bounded(data: bytes, limit: int) -> bytes:
    """Decompress every zstd frame of ``data`` (Fluentd >= 1.19
    ``compress zstd``), never producing more than ``limit`` bytes."""
    import zstandard

    if not data:
        raise BadPayload("bad_zstd", "empty zstd payload")
    try:
        return unzstd(data, limit)
    except InflateError as exc:
        if exc.reason == "too_large":
            raise BadPayload("decompressed_too_large", f"zstd output exceeds {limit} bytes") from None
        raise BadPayload("bad_zstd", "truncated zstd frame") from None
    except zstandard.ZstdError as exc:
        raise BadPayload("bad_zstd", f"zstd: {exc}") from None


_DECOMPRESSORS: dict[str, Callable[[bytes, int], bytes]] = {
    "gzip": gunzip_bounded,
    "zstd": unzstd_bounded,
}

def _ext_at(buf: bytes, pos: int) -> tuple[int, int]:
    """(ext type, payload length) of the ext object at ``pos``. Read from the
    header bytes: msgpack-python would turn type -1 into a Timestamp (and
    raise on a malformed one) before we could look at it."""
    b = buf[pos]
    fixed = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}.get(b)
    if fixed is not None:
        return struct.unpack_from(">b", buf, pos + 1)[0], fixed
    hlen, fmt = _VAR[b]
    (length,) = struct.unpack_from(fmt, buf, pos + 1)
    return struct.unpack_from(">b", buf, pos + hlen - 1)[0], length


# Header lengths of the str/bin carrying PackedForward entries and of the
# array carrying Forward entries.
_PAYLOAD_HLEN = {0xC4: 2, 0xC5: 3, 0xC6: 5, 0xD9: 2, 0xDA: 3, 0xDB: 5}
_ARRAY_HLEN = {0xDC: 3, 0xDD: 5}


class _Skip(Exception):
    """A well-framed but invalid frame: skipped, connection kept."""

    def __init__(self, reason: str, detail: str, chunk_id: ChunkId | None = None) -> None:
        super().__init__(reason)
        self.error = ProtocolError(reason, False, detail, chunk_id)


def _describe(value: Any) -> str:
    return type(value).__name__


#: Longest ``chunk`` option accepted (str characters or bin bytes).
MAX_CHUNK_ID_BYTES = 128


def _parse_options(opt: Any) -> tuple[ChunkId | None, str | None, int | None, int]:
    """(chunk, compressed, size_hint, signal) from an option map (SPEC1/SPEC15
    "Option"). Unknown keys (``metadata``, Fluent Bit's ``add_option`` keys)
    are ignored: "Servers MAY ignore options"."""
    chunk = opt.get("chunk")
    if chunk is not None and not isinstance(chunk, (str, bytes)):
        # Fluent Bit and Vector reject a non-str chunk; Fluentd would echo it.
        # An ack that the client cannot match is useless: skip the frame.
        raise _Skip("bad_chunk_id", f"option chunk is {_describe(chunk)}, not str/bin")
    if chunk is not None and len(chunk) > MAX_CHUNK_ID_BYTES:
        # Fluentd and Fluent Bit send base64 of 16 random bytes (24-25
        # bytes). An id we would echo in every ack is bounded: a peer with
        # 64 KiB ids made each ack cost 64 KiB of our memory.
        raise _Skip("chunk_id_too_long", f"option chunk of {len(chunk)} bytes, "
                                         f"over {MAX_CHUNK_ID_BYTES}")
    compressed = opt.get("compressed")
    if compressed is not None:
        if isinstance(compressed, bytes):
            # Ruby treats a bin "gzip" like a str "gzip"; so do we.
            compressed = compressed.decode("ascii", "replace")
        if not isinstance(compressed, str):
            raise _Skip("bad_option", f"option compressed is {_describe(compressed)}", chunk)
    size = opt.get("size")
    # size is a hint only; Fluentd ignores a bad one (to_i), so do we.
    size_hint = size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None
    signal = opt.get("fluent_signal", 0)
    if isinstance(signal, bool) or not isinstance(signal, int):
        raise _Skip("bad_option", f"option fluent_signal is {_describe(signal)}", chunk)
    return chunk, compressed, size_hint, signal


def parse_frame(frame: bytes | memoryview, limits: Limits) -> Chunk | Heartbeat | ProtocolError:
    """Interpret one complete frame. Never raises for peer errors."""
    try:
        return _parse(frame, limits)
    except _Skip as skip:
        return skip.error


def _packed_layout(frame: bytes | memoryview) -> tuple[int, str, int, int] | None:
    """(element count, tag, payload offset, payload end) of a PackedForward
    frame ``[str, str/bin, option?]`` in a fixarray, from its headers alone;
    None for any other shape (the unpacker path decides)."""
    b0 = frame[0]
    if (b0 != 0x92 and b0 != 0x93) or len(frame) < 3 or _KINDS[frame[1]] != STR:
        return None
    h = _header(frame, 1)
    if h is None:
        return None
    p2 = 1 + h[0] + h[1]
    if p2 >= len(frame) or (_KINDS[frame[p2]] != STR and _KINDS[frame[p2]] != BIN):
        return None
    h2 = _header(frame, p2)
    if h2 is None:
        return None
    # msgpack's raw=False decoding of a str, as new_unpacker does it.
    tag = str(frame[1 + h[0]:p2], "utf-8", "surrogateescape")
    return b0 & 0x0F, tag, p2, p2 + h2[0] + h2[1]


def _parse(frame: bytes | memoryview, limits: Limits) -> Chunk | Heartbeat:
    first = _KINDS[frame[0]]
    if first == NIL:
        # SPEC1: a nil request is a heartbeat. Fluentd and Vector ignore it;
        # Fluent Bit closes (it has no TCP heartbeat). We report it.
        return Heartbeat()
    if first != ARRAY:
        # SPEC1: "Server SHOULD ignore any request value other than array".
        raise _Skip("not_array", f"top-level {first}, expected array")
    layout = _packed_layout(frame)
    up: msgpack.Unpacker | None = None
    if layout is not None:
        # PackedForward, read from its headers: the payload is sliced out
        # once and never copied into an unpacker.
        n, tag, p2, p3 = layout
        k2 = _KINDS[frame[p2]]
    else:
        up = new_unpacker(len(frame))
        up.feed(frame)
        n = up.read_array_header()
        if n < 2:
            raise _Skip("short_frame", f"array of {n} element(s), need at least 2")

        p = up.tell()
        if _KINDS[frame[p]] != STR:
            # Spec: tag is a str. Fluent Bit closes, Fluentd and Vector skip.
            raise _Skip("bad_tag", f"tag is {_KINDS[frame[p]]}, not str")
        tag = up.unpack()

        p2 = up.tell()
        k2 = _KINDS[frame[p2]]
        up.skip()
        p3 = up.tell()
    if k2 in (INT, EXT):
        mode = "message"
        arity = (3, 4)
    elif k2 == ARRAY:
        mode = "forward"
        arity = (2, 3)
    elif k2 in (STR, BIN):
        mode = "packed"
        arity = (2, 3)
    else:
        raise _Skip("unknown_mode", f"2nd element is {k2}: not time, array, str or bin")
    if n not in arity:
        raise _Skip("bad_arity", f"{mode} mode frame with {n} elements, need {arity[0]} or {arity[1]}")

    record_end = p3
    if mode == "message":
        assert up is not None
        up.skip()
        record_end = up.tell()

    chunk: ChunkId | None = None
    compressed: str | None = None
    size_hint: int | None = None
    signal = 0
    if n == arity[1]:
        po = up.tell() if up is not None else p3
        ko = _KINDS[frame[po]]
        if ko == MAP:
            try:
                # Packed mode: the option is the frame's last object.
                option = unpack_one(up) if up is not None else unpack_frame(frame[po:])
            except Undecodable as exc:
                raise _Skip("bad_option", f"undecodable option map ({exc})") from None
            chunk, compressed, size_hint, signal = _parse_options(option)
        elif ko != NIL:
            # nil options: old Docker fluentd logging driver (Fluent Bit accepts them).
            raise _Skip("bad_option", f"option is {ko}, not map")

    if mode == "message":
        # The time decides the mode, so it must be a real time here; in the
        # other modes entry times are the stage's business.
        if k2 == EXT and _ext_at(frame, p2) != (0, 8):
            raise _Skip("bad_time", "Message time is an ext but not an 8-byte EventTime", chunk)
        entries = b"\x92" + frame[p2:record_end]
    elif mode == "forward":
        b = frame[p2]
        hlen = _ARRAY_HLEN.get(b, 1)
        entries = bytes(frame[p2 + hlen:p3])
    else:
        b = frame[p2]
        hlen = _PAYLOAD_HLEN.get(b, 1)
        # One copy: the slice of a bytes frame, bytes() of a view (the
        # bytes() of a bytes is the same object).
        entries = bytes(frame[p2 + hlen:p3])
        if compressed is not None and compressed != "text":
            decompress = _DECOMPRESSORS.get(compressed)
            if decompress is None:
                # Fluentd raises and closes, Vector skips; we skip (no ack).
                raise _Skip("unknown_compression", f"compressed={compressed[:32]!r}", chunk)
            try:
                entries = decompress(entries, limits.max_decompressed_bytes)
            except BadPayload as bad:
                raise _Skip(bad.reason, bad.detail, chunk) from None
            mode = "compressed"

    return Chunk(
        tag=tag,
        entries=entries,
        chunk_id=chunk,
        mode=mode,  # type: ignore[arg-type]
        size_hint=size_hint,
        signal=signal,
        frame_bytes=len(frame),
    )
