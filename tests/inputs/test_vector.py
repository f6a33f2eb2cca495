"""Vector event <-> (tag, time, record) mapping."""

from __future__ import annotations

import datetime as dt
import json

import msgpack
import pytest
from hypothesis import given, strategies as st

from probetag._vector import (entry_to_event, event_to_entry, event_time_parts,
                                     format_timestamp, lone_surrogate_escapes, parse_timestamp)

T0 = int(dt.datetime(2026, 11, 27, 10, 0, 0, tzinfo=dt.timezone.utc).timestamp())


@pytest.mark.parametrize("text,nsec", [
    ("2026-11-27T10:00:00Z", 0),
    ("2026-11-27T10:00:00.123Z", 123_000_000),
    ("2026-11-27T10:00:00.123456Z", 123_456_000),
    ("2026-11-27T10:00:00.123456789Z", 123_456_789),
    ("2026-11-27T10:00:00.5Z", 500_000_000),
])
def test_rfc3339_vector_forms(text, nsec):
    assert parse_timestamp(text) == (T0, nsec)


def test_rfc3339_offset():
    assert parse_timestamp("2026-11-27T11:30:00+01:30") == (T0, 0)
    assert parse_timestamp("2026-11-27T08:00:00-02:00") == (T0, 0)


@pytest.mark.parametrize("value,expect", [
    (T0, (T0, 0)),                                   # unix
    (T0 * 1000 + 123, (T0, 123_000_000)),            # unix_ms
    (T0 * 1_000_000 + 123_456, (T0, 123_456_000)),   # unix_us
    (T0 * 1_000_000_000 + 123_456_789, (T0, 123_456_789)),  # unix_ns
    (T0 + 0.25, (T0, 250_000_000)),                  # unix_float
])
def test_numeric_units_by_magnitude(value, expect):
    assert parse_timestamp(value) == expect


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01T00:00:00Z", "2026-11-27T10:00:00",
                                 -1, True, [1], {"a": 1}, "2200-01-01T00:00:00Z"])
def test_bad_timestamps(bad):
    with pytest.raises(ValueError):
        parse_timestamp(bad)


def test_event_to_entry_full():
    ev = {"host": "web1", "message": "GET / HTTP/1.0#015", "source_type": "syslog",
          "tag": "syslog.daemon", "timestamp": "2026-11-27T10:00:00.123Z"}
    m = event_to_entry(ev, default_tag="vector")
    assert m.tag == "syslog.daemon"
    assert event_time_parts(m.time) == (T0, 123_000_000)
    assert m.record == {"host": "web1", "message": "GET / HTTP/1.0#015", "source_type": "syslog"}
    assert m.time_note is None
    assert "tag" in ev  # input not mutated


def test_event_defaults_and_notes():
    m = event_to_entry({"message": "x"}, default_tag="vector")
    assert m.tag == "vector" and m.time_note == "missing" and m.record == {"message": "x"}
    m = event_to_entry({"message": "x", "tag": 5, "timestamp": "27/Nov/2026"}, default_tag="d")
    assert m.tag == "d" and m.time_note == "unparsed"
    assert m.record == {"message": "x", "tag": 5, "timestamp": "27/Nov/2026"}  # nothing lost
    m = event_to_entry({"msg": "x", "ts": T0, "t": "a.b"}, default_tag="d", tag_field="t", time_field="ts")
    assert m.tag == "a.b" and event_time_parts(m.time) == (T0, 0) and m.record == {"msg": "x"}


def test_event_not_object():
    with pytest.raises(ValueError, match="array"):
        event_to_entry([1], default_tag="d")


def test_entry_to_event_round_trip():
    t = msgpack.ExtType(0, T0.to_bytes(4, "big") + (5).to_bytes(4, "big"))
    ev = entry_to_event("sec.probe", t, {"message": b"GET / HTTP/1.0\r", "probe": {"name": "GetRequest"}})
    assert ev == {"message": "GET / HTTP/1.0\r", "probe": {"name": "GetRequest"},
                  "timestamp": "2026-11-27T10:00:00.000000005Z", "tag": "sec.probe"}
    back = event_to_entry(ev, default_tag="x")
    assert back.tag == "sec.probe" and back.time == t
    # a record's own timestamp wins; the tag is always ours
    ev = entry_to_event("new", T0, {"timestamp": "orig", "tag": "old"})
    assert ev == {"timestamp": "orig", "tag": "new"}


@given(st.integers(0, 0xFFFFFFFF), st.integers(0, 999_999_999))
def test_format_parse_inverse(sec, nsec):
    assert parse_timestamp(format_timestamp(sec, nsec)) == (sec, nsec)


def _surrogates_in(value) -> int:
    """Surrogate code points left in a decoded JSON value (keys included)."""
    if isinstance(value, str):
        return sum(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return sum(_surrogates_in(k) + _surrogates_in(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(_surrogates_in(v) for v in value)
    return 0


@pytest.mark.parametrize("text,lone", [
    (r'{"a":"plain"}', 0),
    (r'{"a":"\u00e9 \ud83d\ude00"}', 0),          # a pair is one code point
    (r'{"a":"\ud800"}', 1),
    (r'{"a":"\uDBFF\u0041"}', 1),                  # high, then not a low escape
    (r'{"a":"\udfff"}', 1),                         # low without high
    (r'{"a":"\ud800\ud800\udc00"}', 1),           # the first high stays alone
    (r'{"a":"\ud800x\udc00"}', 2),                 # not adjacent: both alone
    (r'{"\udc80":"\udcff"}', 2),                   # keys count too
    (r'{"a":"\\ud800"}', 0),                       # an escaped backslash, then text
    (r'{"a":"\\\ud800"}', 1),                     # escaped backslash, then an escape
])
def test_lone_surrogate_escapes(text, lone):
    assert lone_surrogate_escapes(text) == lone == _surrogates_in(json.loads(text))


def test_raw_non_utf8_bytes_are_not_escapes():
    # surrogateescape turns a raw 0xff byte into U+DCFF, the same code point
    # a "\udcff" escape decodes to; only the escape is a replacement.
    text = b'{"a":"\xff\\udcff"}'.decode("utf-8", "surrogateescape")
    assert _surrogates_in(json.loads(text)) == 2
    assert lone_surrogate_escapes(text) == 1


@given(st.recursive(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0xE000)),
                    lambda kids: st.lists(kids, max_size=4)
                    | st.dictionaries(st.text(max_size=4), kids, max_size=4), max_leaves=12))
def test_lone_surrogate_escapes_agrees_with_json_loads(value):
    # ensure_ascii writes every surrogate as an escape, and a high one next to
    # a low one as a pair that json.loads joins: exactly what is left is lone.
    text = json.dumps(value)
    assert lone_surrogate_escapes(text) == _surrogates_in(json.loads(text))
