"""Vector events <-> (tag, time, record). No I/O.

Shared by the inputs (HTTP, NDJSON, exec-filter's JSON), the NDJSON output
and the cluster's messages, so it sits beside them rather than in any one
of them.

Theory of operation
-------------------
* Vector has no forward-protocol sink, so its events reach us as JSON objects
  (``http`` sink: a JSON array or NDJSON body; ``socket`` sink: NDJSON).
  Each object is one log event with its fields at the top level; Vector
  sorts the keys and writes the event timestamp as ``timestamp``
  (FORWARD_NOTES §4.1).
* Mapping in (``event_to_entry``):

  - **tag** = the ``tag_field`` value when it is a non-empty string, else the
    configured default tag. A non-string value is not ours to interpret: it
    stays in the record and the default tag is used.
  - **time** = the ``time_field`` value, as a forward EventTime (seconds +
    nanoseconds):

    * a string: RFC 3339, as Vector writes it (``2026-11-27T10:00:00Z``,
      with 0, 3, 6 or 9 fraction digits; any 1..9 digits and a ``+HH:MM``
      offset are accepted too);
    * a float: ``timestamp_format: unix_float``, seconds;
    * an integer: ``unix``, ``unix_ms``, ``unix_us`` or ``unix_ns``. The
      JSON does not say which, so the magnitude decides:
      ``< 10**11`` seconds, ``< 10**14`` milliseconds, ``< 10**17``
      microseconds, else nanoseconds. The bands do not overlap for any
      time between 1973-03-03 and 5138 (in seconds 10**11 is year 5138; in
      milliseconds it is 1973-03-03), and forward EventTime ends in 2106
      anyway.

    A missing or null time is the receipt time. A time that does not parse
    (or falls outside EventTime's 1970..2106) is *not* an error that loses
    the event: the field stays in the record untouched, the receipt time is
    used, and ``time_note`` says why (the input counts it).
  - **record** = every other field, unchanged (nested maps stay nested).
* Mapping out (``entry_to_event``, for the NDJSON output towards Vector's
  ``socket`` source): the record's fields, plus ``tag_field`` = the tag and
  ``time_field`` = RFC 3339 UTC with 9 fraction digits. A record that
  already has a ``time_field`` key keeps its own value (it is either the
  unparsed original from above or the producer's choice); the tag is always
  ours, because a rule may have retagged the record.
* Lone surrogates (``lone_surrogate_escapes``): JSON may escape half of a
  UTF-16 surrogate pair on its own (``"\\ud800"``), and Python's ``json``
  decodes that into a str no UTF-8 encoder accepts. The stage packs such a
  record anyway (raising would fail the whole request or line batch): a
  ``\\udc80``..``\\udcff`` escape becomes the byte 0x80..0xff (the
  surrogateescape convention the inputs use for bytes that are not UTF-8),
  any other one U+FFFD. The inputs count each of them
  (``json_surrogates_replaced{input}``) so the change is never silent. They
  are found in the JSON text, not the decoded value, because a decoded
  U+DC80..U+DCFF may also be a raw non-UTF-8 byte, which is kept as is.
"""

from __future__ import annotations

import datetime as _dt
import re
import time as _time
from dataclasses import dataclass
from typing import Any

import msgpack

from ._jsonenc import to_jsonable

__all__ = ["Mapped", "event_to_entry", "entry_to_event", "parse_timestamp", "format_timestamp",
           "event_time_parts", "lone_surrogate_escapes"]

_EXT_EVENT_TIME = 0
_MAX_SECONDS = 0xFFFFFFFF

# A cheap test first (most JSON has no surrogate escape at all), then every
# backslash escape in order, so an escaped backslash ("\\ud800") is not
# taken for a \u escape. Outside strings a backslash is not valid JSON, so
# this sees exactly the escapes json.loads decoded.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)", re.S)

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))\Z")


@dataclass(frozen=True, slots=True)
class Mapped:
    tag: str
    time: msgpack.ExtType
    record: dict[str, Any]
    #: None, or why the receipt time was used: "missing", "unparsed".
    time_note: str | None = None


def _event_time(sec: int, nsec: int) -> msgpack.ExtType:
    return msgpack.ExtType(_EXT_EVENT_TIME, sec.to_bytes(4, "big") + nsec.to_bytes(4, "big"))


def _now() -> msgpack.ExtType:
    ns = _time.time_ns()
    return _event_time(ns // 1_000_000_000, ns % 1_000_000_000)


def lone_surrogate_escapes(text: str) -> int:
    """How many ``\\uXXXX`` escapes in this JSON text decode to a lone
    surrogate (a high one not directly followed by a low one, or a low one
    not directly preceded by a high one: what ``json.loads`` leaves unpaired)."""
    if _SURROGATE_ESCAPE.search(text) is None:
        return 0
    lone = 0
    high_end = -1  # end of the last high-surrogate escape still unpaired
    for m in _ESCAPE.finditer(text):
        code = int(m.group(1), 16) if m.group(1) else -1
        if 0xDC00 <= code <= 0xDFFF and high_end == m.start():
            high_end = -1  # a pair: one code point
            continue
        if high_end >= 0:
            lone += 1  # the previous high escape stays alone
            high_end = -1
        if 0xD800 <= code <= 0xDBFF:
            high_end = m.end()
        elif 0xDC00 <= code <= 0xDFFF:
            lone += 1
    return lone + (high_end >= 0)


def parse_timestamp(value: Any) -> tuple[int, int]:
    """A Vector timestamp (see the module docstring) -> (seconds, nanoseconds).
    Raises ValueError if it is not one or is outside 1970..2106."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(value, str):
        m = _RFC3339.match(value.strip())
        if not m:
            raise ValueError(f"not RFC 3339: {value[:64]!r}")
        y, mo, d, h, mi, s = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
        frac = m.group(7) or ""
        nsec = int(frac.ljust(9, "0")) if frac else 0
        leap = s == 60  # RFC 3339 allows a leap second; fold it into the next second
        try:
            dt = _dt.datetime(y, mo, d, h, mi, 59 if leap else s, tzinfo=_dt.timezone.utc)
        except ValueError as exc:
            raise ValueError(f"bad date/time: {exc}") from None
        sec = int(dt.timestamp()) + (1 if leap else 0)
        if m.group(8) is None:
            off = int(m.group(10)) * 3600 + int(m.group(11)) * 60
            sec -= off if m.group(9) == "+" else -off
    elif isinstance(value, float):
        if value != value or value < 0 or value >= _MAX_SECONDS + 1:
            raise ValueError(f"unix_float out of range: {value!r}")
        sec = int(value)
        nsec = min(int(round((value - sec) * 1e9)), 999_999_999)
    elif isinstance(value, int):
        if value < 0:
            raise ValueError(f"negative timestamp: {value}")
        if value < 10**11:
            sec, nsec = value, 0
        elif value < 10**14:
            sec, nsec = divmod(value, 1000)
            nsec *= 1_000_000
        elif value < 10**17:
            sec, nsec = divmod(value, 1_000_000)
            nsec *= 1000
        else:
            sec, nsec = divmod(value, 1_000_000_000)
    else:
        raise ValueError(f"a {type(value).__name__} is not a timestamp")
    if not 0 <= sec <= _MAX_SECONDS:
        raise ValueError(f"outside EventTime's range (1970..2106): {value!r}")
    return sec, nsec


def event_to_entry(event: Any, *, default_tag: str, tag_field: str = "tag",
                   time_field: str = "timestamp") -> Mapped:
    """One decoded JSON value -> Mapped. Raises ValueError if it is not an object."""
    if not isinstance(event, dict):
        raise ValueError(f"event is a JSON {_json_type(event)}, not an object")
    record = dict(event)
    tag = default_tag
    raw_tag = record.get(tag_field)
    if isinstance(raw_tag, str) and raw_tag:
        tag = raw_tag
        del record[tag_field]
    note: str | None = None
    raw_time = record.get(time_field)
    if raw_time is None:
        record.pop(time_field, None)
        t = _now()
        note = "missing"
    else:
        try:
            sec, nsec = parse_timestamp(raw_time)
        except ValueError:
            t = _now()
            note = "unparsed"
        else:
            t = _event_time(sec, nsec)
            del record[time_field]
    return Mapped(tag, t, record, note)


def _json_type(v: Any) -> str:
    if isinstance(v, list):
        return "array"
    if isinstance(v, str):
        return "string"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    return "number"


def event_time_parts(t: Any) -> tuple[int, int]:
    """Forward time (int seconds, EventTime ext, float, or v1.5 ``[time, meta]``)
    -> (seconds, nanoseconds)."""
    if isinstance(t, list) and t:
        t = t[0]
    if isinstance(t, msgpack.ExtType) and t.code == _EXT_EVENT_TIME and len(t.data) == 8:
        return int.from_bytes(t.data[:4], "big"), int.from_bytes(t.data[4:], "big")
    if type(t) is int:
        return t, 0
    if isinstance(t, float):
        sec = int(t)
        return sec, min(int(round((t - sec) * 1e9)), 999_999_999)
    raise ValueError(f"not a forward-protocol time: {t!r}")


def format_timestamp(sec: int, nsec: int) -> str:
    """RFC 3339 UTC with 9 fraction digits, the form Vector parses as a timestamp."""
    base = _dt.datetime.fromtimestamp(sec, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{nsec:09d}Z"


def entry_to_event(tag: str, t: Any, record: dict[Any, Any], *, tag_field: str = "tag",
                   time_field: str = "timestamp") -> dict[str, Any]:
    """(tag, forward time, record) -> a JSON-safe object for Vector."""
    out: dict[str, Any] = to_jsonable(record) if isinstance(record, dict) else {"message": to_jsonable(record)}
    if time_field not in out:
        out[time_field] = format_timestamp(*event_time_parts(t))
    out[tag_field] = to_jsonable(tag)
    return out
