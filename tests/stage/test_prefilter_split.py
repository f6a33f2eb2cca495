"""Hyperscan's short-literal split (``detect._prefilter``): literals under 4
bytes live in a second database scanned only when the data holds one of
their anchors (``_speedups.contains_any``). Every occurrence must still be
reported, exactly as the ``re`` and ``ahocorasick`` backends report it.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probetag._config import config_from_mapping
from probetag._metrics import Metrics
from probetag._stage import Processor
from probetag.detect import LiteralSet, available_backends
from probetag.detect._prefilter import _anchors

sp = pytest.importorskip("probetag._speedups", reason="the C accelerator was not built (no compiler?)")
pytestmark = pytest.mark.skipif("hyperscan" not in available_backends(), reason="hyperscan not installed")

ALPHABET = b"\\0r#15ab\x00\xff"


def _random_literals(rng: random.Random) -> list[bytes]:
    lits = {bytes(rng.choice(ALPHABET) for _ in range(rng.randrange(2, 7))) for _ in range(rng.randrange(1, 12))}
    return sorted(lits) + [b"\\0", b"\\r", b"0\\r"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**64))
def test_split_backend_finds_every_occurrence(seed):
    rng = random.Random(seed)
    lits = _random_literals(rng)
    hs = LiteralSet(lits, "hyperscan")
    ref = LiteralSet(lits, "re")
    for _ in range(5):
        data = bytes(rng.choice(ALPHABET + b"xyz ") for _ in range(rng.randrange(0, 200)))
        assert hs.find(data) == ref.find(data)
        assert hs.find(bytearray(data)) == ref.find(data)


def test_catalogue_prefilter_splits_and_agrees():
    proc = Processor(config_from_mapping({}), Metrics())
    lits = proc.prefilter.literals
    main, short, anchors = lits._impl
    assert short is not None and anchors, "the built-in catalogue's C-style escapes get their own database"
    assert all(any(a in p for a in anchors) for p in lits.patterns if len(p) < 4)
    ref = LiteralSet(lits.patterns, "ahocorasick")
    rng = random.Random(5)
    for k in range(60):
        parts = [rng.randbytes(rng.randrange(50)), rng.choice(lits.patterns)] * rng.randrange(0, 4)
        if k % 3 == 0:
            parts.append(rng.choice([b"\\r", b"\\0", b"x0\\r", b"\\"]))
        data = b"".join(parts) + b"tail"
        assert lits.find(data) == ref.find(data), data


def test_anchors():
    assert set(_anchors([b"\\0", b"\\r", b"0\\r"])) == {b"\\0", b"\\r"}
    assert _anchors([b"ab", b"\\r"]) is None  # 'ab' holds no rare byte: no split
    assert _anchors([b"\x00\x01", b"\x00\x02", b"\x03\x04", b"\x05\x06", b"\x07\x08", b"\x09\x0a"]) is None


def test_contains_any():
    assert sp.contains_any(b"ab\\rc", (b"\\0", b"\\r")) is True
    assert sp.contains_any(b"ab\\", (b"\\0", b"\\r")) is False  # needle would run past the end
    assert sp.contains_any(memoryview(b"xx\\0")[1:], (b"\\0",)) is True
    assert sp.contains_any(b"", (b"\\0",)) is False
    assert sp.contains_any(b"abc", ()) is False
    with pytest.raises(TypeError):
        sp.contains_any(b"abc", (b"",))
    with pytest.raises(TypeError):
        sp.contains_any(b"abc", [b"a"])
    rng = random.Random(3)
    for _ in range(20_000):
        data = bytes(rng.choice(b"\\0r x") for _ in range(rng.randrange(10)))
        needles = tuple(bytes(rng.choice(b"\\0r x") for _ in range(rng.randrange(1, 4)))
                        for _ in range(rng.randrange(0, 4)))
        assert sp.contains_any(data, needles) == any(n in data for n in needles), (data, needles)


def _classify_reference(pre, data, starts):
    """Prefilter.classify as first written: one bisect per hit."""
    from bisect import bisect_right

    out, strong, last = [], set(), -1
    for off, pid in pre.literals.find(data):
        i = bisect_right(starts, off) - 1
        if i < 0:
            continue
        if i != last:
            out.append(i)
            last = i
        if pid not in pre._weak:
            strong.add(i)
    return out, set(out) - strong if pre._weak else set()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**64))
def test_classify_matches_one_bisect_per_hit(seed):
    from probetag.detect import Prefilter

    rng = random.Random(seed)
    strong = [b"GET /", b"HTTP/1.0#015", b"#000", b"\\r\\n"]
    pre = Prefilter(strong, rng.choice(["hyperscan", "re"]), weak=[b"#015", b"\\r"])
    data = b"".join(rng.choice([b"xx", b"GET / HTTP/1.0#015", b"#000#000", b"#015", b"\\r", b"\\r\\n", b"y" * 9])
                    for _ in range(rng.randrange(30)))
    cuts = sorted({rng.randrange(len(data) + 1) for _ in range(rng.randrange(1, 12))})
    starts = cuts if rng.random() < 0.5 else cuts + [len(data)]  # with or without an end sentinel
    assert pre.classify(data, starts) == _classify_reference(pre, data, starts)
