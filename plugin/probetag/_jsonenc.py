"""Decoded msgpack values -> JSON-safe values, and record -> JSON line.

Theory of operation
-------------------
* Records reach us decoded by ``probetag._chunk.unpacker_for``: msgpack str
  that is not UTF-8 arrives as ``str`` with surrogate escapes, msgpack bin as
  ``bytes``, ext types (EventTime and others) as ``msgpack.ExtType``, and map
  keys may be any hashable (ints, bytes...) because ``strict_map_key=False``.
* JSON has none of these, so each is turned into text *without losing the
  byte values*: bytes that are not UTF-8 become ``\\xHH`` (Python's
  ``backslashreplace``), so ``GET / HTTP/1.0\\r\\xff`` stays readable and the
  0xff is still visible. Valid UTF-8 bin becomes plain text, because
  Fluentd's in_tail types every value as bin (FORWARD_NOTES §8) and nobody
  wants ``"message": {"bytes": ...}`` for ASCII.
* ``ExtType`` -> ``{"msgpack_extension_code": n, "bytes": "<hex>"}``, the
  shape Vector's ``fluent`` source uses for the same thing (FORWARD_NOTES §1,
  VEC-FL), so the two tools agree.
* Map keys: str stays, bytes are decoded as above, int/float/bool/None are
  left for ``json`` to stringify (``1`` -> ``"1"``), anything else is
  ``str(key)``.
* Floats that JSON cannot carry (NaN, +-Infinity) become the strings
  ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` instead of invalid JSON.
* The fast path is plain ASCII strings and numbers: they are returned as the
  same object, no copying or encoding attempts.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import msgpack

__all__ = ["to_jsonable", "text_of", "event_time_seconds", "record_line", "record_lines", "dumps"]

_EXT_EVENT_TIME = 0
_SEC_NSEC = struct.Struct(">II")  # uint32 BE seconds, uint32 BE nanoseconds

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _no_default(o: Any) -> Any:
    raise TypeError(f"not JSON-safe: {type(o).__name__}")


def _make_dumps() -> Any:
    # json.dumps builds a new C encoder object on every call, which costs more
    # than encoding a small record; build it once (no cycle check: decoded
    # msgpack cannot be cyclic).
    c_make = getattr(json.encoder, "c_make_encoder", None)
    if c_make is None:  # pragma: no cover - pure-Python json
        return _encoder.encode
    enc = c_make(None, _no_default, json.encoder.encode_basestring, None, ":", ",", False, False, False)

    def dumps(o: Any) -> str:
        return "".join(enc(o, 0))

    return dumps


#: ``json.dumps(value, ensure_ascii=False, separators=(",", ":"))`` for values
#: from ``to_jsonable``.
dumps = _make_dumps()


def text_of(value: str | bytes) -> str:
    """Text for a str that may hold surrogate escapes, or for raw bytes."""
    if type(value) is str:
        if value.isascii():
            return value
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            pass
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            # A lone surrogate that did not come from surrogateescape (e.g.
            # CESU-style input decoded elsewhere): keep its code unit bytes.
            raw = value.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "backslashreplace")
    raw = bytes(value)  # type: ignore[arg-type]  # str was handled above
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace")


def _key(k: Any) -> Any:
    t = type(k)
    if t is str:
        return k if k.isascii() else text_of(k)
    if t is bytes:
        return text_of(k)
    if k is None or t is int or t is bool:
        return k
    if t is float:
        return k if math.isfinite(k) else _float(k)
    return str(k)


def _float(f: float) -> Any:
    if math.isfinite(f):
        return f
    if math.isnan(f):
        return "NaN"
    return "Infinity" if f > 0 else "-Infinity"


def to_jsonable(value: Any) -> Any:
    """A value ``json.dumps(..., ensure_ascii=False)`` accepts and that encodes
    as valid UTF-8. Returns the same object for plain values."""
    t = type(value)
    if t is str:
        return value if value.isascii() else text_of(value)
    if t is int or t is bool or value is None:
        return value
    if t is dict:
        return {_key(k): to_jsonable(v) for k, v in value.items()}
    if t is list or t is tuple:
        return [to_jsonable(v) for v in value]
    if t is float:
        return _float(value)
    if t is bytes or t is bytearray or t is memoryview:
        return text_of(bytes(value))
    if isinstance(value, msgpack.ExtType):
        return {"msgpack_extension_code": value.code, "bytes": value.data.hex()}
    if isinstance(value, msgpack.Timestamp):
        return value.to_unix()
    # Subclasses of the plain types (not produced by msgpack, but harmless).
    if isinstance(value, str):
        return text_of(str(value))
    if isinstance(value, dict):
        return {_key(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return str(value)


def event_time_seconds(t: Any) -> float:
    """Seconds since the epoch as a float, for an int time or an EventTime
    ext (uint32 BE seconds + uint32 BE nanoseconds, SPEC1 EventTime)."""
    if type(t) is int:
        return float(t)
    if isinstance(t, msgpack.ExtType) and t.code == _EXT_EVENT_TIME and len(t.data) == 8:
        sec, nsec = _SEC_NSEC.unpack(t.data)
        return sec + nsec / 1e9
    if isinstance(t, float):
        return t
    if isinstance(t, list) and t:  # v1.5 nested [time, metadata]
        return event_time_seconds(t[0])
    raise ValueError(f"not a forward-protocol time: {t!r}")


def record_line(tag: str, t: Any, record: Any) -> bytes:
    """One JSON line (with the newline) ``{"tag", "time", "record"}``."""
    return record_lines(tag, [(t, record)])


def record_lines(tag: str, entries: Any) -> bytes:
    """The JSON lines of ``(time, record)`` pairs sharing one tag."""
    head = '{"tag":' + dumps(text_of(tag)) + ',"time":'
    parts = []
    for t, record in entries:
        # float repr is what json writes for floats.
        parts.append(f'{head}{event_time_seconds(t)!r},"record":{dumps(to_jsonable(record))}}}\n')
    return "".join(parts).encode("utf-8")
