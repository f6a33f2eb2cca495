"""The prefilter's match handler in C (``_speedups.Hits``): with hyperscan
and the C walk, ``Prefilter.classify`` collects hits and maps them to
entries in C. Its answer must be the Python path's, hit for hit: every hit
entry once, in order, and the entries hit only by weak literals.
"""

from __future__ import annotations

import random
from array import array

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probetag._config import config_from_mapping
from probetag._metrics import Metrics
from probetag._stage import Processor, walk_entries
from probetag.detect import available_backends
from probetag.detect._prefilter import Prefilter

sp = pytest.importorskip("probetag._speedups", reason="the C accelerator was not built (no compiler?)")
pytestmark = pytest.mark.skipif("hyperscan" not in available_backends(), reason="hyperscan not installed")

ALPHABET = b"ab#015\\\x00\xff"


def _offsets(starts: list[int]) -> memoryview:
    return memoryview(array("Q", starts).tobytes()).cast("Q")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**64))
def test_c_handler_classifies_like_python(seed):
    rng = random.Random(seed)
    strong = {bytes(rng.choice(ALPHABET) for _ in range(rng.randrange(4, 8))) for _ in range(rng.randrange(1, 8))}
    weak = {b"#015", b"#000"} | {bytes(rng.choice(ALPHABET) for _ in range(4)) for _ in range(rng.randrange(3))}
    pf = Prefilter(strong, "hyperscan", weak=weak)
    assert pf._tables is not None
    for _ in range(5):
        data = bytes(rng.choice(ALPHABET + b"xy ") for _ in range(rng.randrange(1, 400)))
        cuts = sorted({0, *(rng.randrange(len(data) + 1) for _ in range(rng.randrange(6)))} | {len(data)})
        got = pf.classify(data, _offsets(cuts))
        want = pf.classify(data, cuts)  # a list: the Python path
        assert got == want
        assert got[0] == sorted(set(got[0]))


def test_c_handler_on_the_catalogue_prefilter():
    proc = Processor(config_from_mapping({}), Metrics())
    pf = proc.prefilter
    assert pf._tables is not None, "hyperscan and the C walk: the C handler is used"
    rng = random.Random(11)
    lits = pf.literals.patterns
    for _ in range(40):
        records = []
        for _k in range(rng.randrange(1, 30)):
            msg = rng.choice([b"an ordinary line", rng.choice(lits), b"#015", b"x#001y" + rng.choice(lits)])
            records.append(b"\x92\x01\x81\xa1m\xc4" + bytes([len(msg)]) + msg)
        data = b"".join(records)
        starts, slow, end, error = walk_entries(data)
        assert error is None and isinstance(starts, memoryview)
        assert pf.classify(data, starts) == pf.classify(data, list(starts))


def test_hits_checks_its_input():
    h = sp.Hits(array("I", [3, 4]).tobytes(), b"\x00\x01")
    assert h(0, 0, 3, 0, None) is None and h(1, 0, 9, 0, None) is None
    assert h.count() == 2
    assert h.entries(_offsets([0, 4, 10])) == ([0, 1], {1})
    with pytest.raises(ValueError):
        h(2, 0, 5, 0, None)  # no such pattern
    with pytest.raises(TypeError):
        h.entries(b"\x00" * 16)  # bytes: no uint64 format
    with pytest.raises(ValueError):
        sp.Hits(b"\x00" * 4, b"\x00\x00")  # one length for two patterns


def _naive(data: bytes, starts: list[int], strong: set[bytes], weak: set[bytes]) -> tuple[list[int], set[int]]:
    """Every occurrence of every literal, by ``bytes.find``, to its entry."""
    kinds: dict[int, set[bool]] = {}
    for lit in strong | weak:
        at = data.find(lit)
        while at >= 0:
            i = max(k for k in range(len(starts) - 1) if starts[k] <= at)
            kinds.setdefault(i, set()).add(lit in strong)
            at = data.find(lit, at + 1)
    return sorted(kinds), {i for i, k in kinds.items() if True not in k}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**64))
def test_literals_holding_others_are_dropped_without_changing_the_entries_hit(seed):
    rng = random.Random(seed)
    strong = {bytes(rng.choice(b"ab#0") for _ in range(rng.randrange(4, 9))) for _ in range(rng.randrange(1, 12))}
    strong |= {x + bytes(rng.choice(b"ab") for _ in range(2)) for x in list(strong)[:3]}  # some hold others
    weak = {b"#015", b"#000"} - strong
    pf = Prefilter(strong, "hyperscan", weak=weak)
    kept = {p for i, p in enumerate(pf.literals.patterns) if i not in pf.weak_ids}
    assert all(not any(q != p and q in p for q in kept) for p in kept)
    for _ in range(5):
        data = bytes(rng.choice(b"ab#015 x") for _ in range(rng.randrange(1, 300)))
        cuts = sorted({0, *(rng.randrange(len(data)) for _ in range(rng.randrange(6)))} | {len(data)})
        assert pf.classify(data, cuts) == _naive(data, cuts, strong, weak)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**64), st.integers(0, 12))
def test_guarded_handler_reads_an_entry_past_its_limit_as_strong_and_nothing_else_changes(seed, limit):
    """Hits.guard(starts, limit): the hit that takes an entry past ``limit``
    stops the scan, which resumes at the next entry; that entry counts as
    hit by a strong literal. Every other entry is classified as without the
    guard, and so is every entry on the Python path with the same limit.
    (A literal that straddles two entries is in neither record: a scan
    stopped in the later one may miss it, and that is all it may miss.)"""
    from probetag.detect import _prefilter

    rng = random.Random(seed)
    strong = {bytes(rng.choice(b"ab#0") for _ in range(rng.randrange(4, 6))) for _ in range(rng.randrange(1, 4))}
    weak = {b"#015", b"#000"} - strong
    pf = Prefilter(strong, "hyperscan", weak=weak)
    lits = pf.literals.patterns
    for _ in range(5):
        data = bytes(rng.choice(b"ab#015") for _ in range(rng.randrange(1, 300)))
        cuts = sorted({0, *(rng.randrange(len(data)) for _ in range(rng.randrange(6)))} | {len(data)})
        free = sp.Hits(*pf._tables)
        pf.literals.scan_into(data, free)
        want_hit, want_weak = free.entries(_offsets(cuts))
        found = pf.literals.find(data)
        entry = [max(k for k in range(len(cuts)) if cuts[k] <= off) for off, _pid in found]
        counts = {i: entry.count(i) for i in range(len(cuts))}
        over = {i for i, c in counts.items() if c > limit}
        straddles = any(k + 1 < len(cuts) and off + len(lits[pid]) > cuts[k + 1]
                        for (off, pid), k in zip(found, entry))
        inner = [(k, pid) for (off, pid), k in zip(found, entry)
                 if k + 1 >= len(cuts) or off + len(lits[pid]) <= cuts[k + 1]]
        inner_strong = {k for k, pid in inner if pid not in pf.weak_ids}
        guarded = sp.Hits(*pf._tables)
        guarded.guard(_offsets(cuts), limit)
        pf.literals.scan_into(data, guarded)
        got_hit, got_weak = guarded.entries(_offsets(cuts))
        assert guarded.count() <= free.count()
        old = _prefilter.ENTRY_HIT_LIMIT
        _prefilter.ENTRY_HIT_LIMIT = limit
        try:
            python_path = pf.classify(data, cuts)
            c_path = pf.classify(data, _offsets(cuts))
        finally:
            _prefilter.ENTRY_HIT_LIMIT = old
        assert c_path == (got_hit, got_weak)
        assert python_path == (want_hit, want_weak - over)
        if not straddles:
            assert (got_hit, got_weak) == (want_hit, want_weak - over)
        else:
            assert set(got_hit) <= set(want_hit) and over <= set(got_hit)
            assert not (inner_strong | over) & got_weak          # nothing under-reported
            assert {k for k, _pid in inner} <= set(got_hit)      # every literal inside a record is seen


def test_a_record_of_one_piece_over_and_over_costs_the_limit():
    """A 4 MB record of ``#000`` (a probe's escaped NUL, two prefilter hits
    each) once cost a million handler calls and 12 bytes each; now the
    scan leaves it after ENTRY_HIT_LIMIT and goes on with the next record,
    whose hits are all found."""
    from probetag.detect._prefilter import ENTRY_HIT_LIMIT

    proc = Processor(config_from_mapping({}), Metrics())
    pf = proc.prefilter
    probe = b"GET / HTTP/1.0#015#012#015#012"
    msgs = [b"#000" * 1_000_000, b"an ordinary line", probe, b"#015" * 100_000, b"another ordinary line"]
    data = b"".join(b"\x92\x01\x81\xa1m\xc6" + len(m).to_bytes(4, "big") + m for m in msgs)
    starts, _slow, _end, error = walk_entries(data)
    assert error is None
    h = sp.Hits(*pf._tables)
    h.guard(starts, ENTRY_HIT_LIMIT)
    pf.literals.scan_into(data, h)
    assert h.count() < 3 * ENTRY_HIT_LIMIT + 100
    hit, weak_only = h.entries(starts)
    assert hit == [0, 2, 3] and weak_only == set()    # the flood of #015 is read, not skipped
    assert pf.classify(data, starts) == (hit, weak_only)
