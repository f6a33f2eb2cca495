"""``decode.plan_for``: what a record's keys alone say, worked out once per
set of keys. ``planned_senders`` and ``planned_key`` must say what
``sender_fields`` and ``memo_key`` say for every record, whatever its
keys, values and key order; a planned memo key only has another form (the
present fields' names, then their values)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from probetag.decode import (ABSENT, READ_FIELDS, SOURCE_FIELDS, memo_key, plan_for, planned_key,
                             planned_senders, sender_fields, str_keys)
from probetag.decode import _rebuild

NAMES = [*READ_FIELDS, *SOURCE_FIELDS, "inputname", "agent", "timereported", "other"]
VALUES = st.one_of(
    st.sampled_from(["GET", "/", "HTTP/1.0#015", "GET / HTTP/1.0#015", "#015", "10.0.0.1", "10.0.0.2",
                     "localhost", "", "-", "syslog-ng", "syslog-ng-iso", "fromhost", "rfc3339",
                     "2026-11-27T10:00:00+00:00 10.0.0.1 GET / HTTP/1.0#015",
                     "Nov 27 10:00:00 10.0.0.1 GET / HTTP/1.0#015", "Nov 27 10:00:00 GET / HTTP/1.0#015",
                     "<13>1 2026-11-27T10:00:00+00:00 h a - - - x", "{\"msg\": 1}",
                     # not ASCII: UTF-8, a byte that was not UTF-8 (surrogateescape), a lone surrogate
                     "caf\u00e9", "10.0.0.1\udcff", "\ud800"]),
    st.binary(max_size=12), st.integers(0, 3), st.none(), st.lists(st.integers(), max_size=2))
KEYS = st.one_of(st.sampled_from(NAMES), st.sampled_from(NAMES).map(str.encode), st.integers(0, 3))


def _as_old(new: tuple[Any, ...]) -> tuple[Any, ...]:
    present, values = new[0], new[1:]
    got = dict(zip(present, values))
    return tuple(got.get(n, ABSENT) for n in READ_FIELDS)


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=8),
       st.lists(st.sampled_from([b"10.0.0.1", b"GET", b"localhost", b"caf\xc3\xa9", b"10.0.0.1\xff"]), max_size=2))
def test_planned_reads_equal_the_plain_ones(record: dict[Any, Any], own: list[bytes]) -> None:
    rec = str_keys(record)
    plan = plan_for(record)
    if plan.str_ok:  # (else str_keys decodes any bytes key; other keys stay)
        assert rec is record
    rplan = plan_for(rec)
    assert planned_senders(rec, rplan) == sender_fields(rec)
    own_t = tuple(own)
    new = planned_key(rec, rplan, own_t)
    assert new[0] == tuple(n for n in READ_FIELDS if n in rec)
    assert _as_old(new) == memo_key(rec, (), READ_FIELDS, own_t)


def test_key_order_changes_no_answer() -> None:
    a = {"host": "10.0.0.1", "ident": "GET", "message": "/ HTTP/1.0#015", "source_address": "10.0.0.9"}
    b = dict(reversed(list(a.items())))
    assert plan_for(a) is not plan_for(b)
    assert planned_key(a, plan_for(a)) == planned_key(b, plan_for(b))
    assert plan_for(a).present is plan_for(b).present  # (one tuple: memo keys share it)
    assert planned_senders(a, plan_for(a)) == planned_senders(b, plan_for(b)) == ("10.0.0.9", (b"10.0.0.9",))


def test_the_plans_are_bounded() -> None:
    # A stream of ever new key sets (hostile, or a field named by a value)
    # keeps at most _MAX_PLANS of them.
    for k in range(3 * _rebuild._MAX_PLANS):
        rec = {"message": "x", f"f{k}": 1}
        assert planned_key(rec, plan_for(rec)) == (("message",), "x")
        assert len(_rebuild._PLANS) <= _rebuild._MAX_PLANS
