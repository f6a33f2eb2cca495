"""Every file of the checked-in fuzz corpus (``tools/fuzz/corpus``, the
hostile inputs of issue 14 scaled to the targets' limits) goes through its
target without a crash, and within memory its limits explain (tracemalloc)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

import targets

CORPUS = Path(__file__).resolve().parents[2] / "tools" / "fuzz" / "corpus"
CASES = sorted((d.name, f.name) for d in CORPUS.iterdir() if d.is_dir() for f in d.iterdir())


def test_every_target_has_a_corpus():
    assert {t for t, _ in CASES} == set(targets.TARGETS)


@pytest.mark.parametrize("target,name", CASES)
def test_corpus_case(target, name):
    data = (CORPUS / target / name).read_bytes()
    targets.processor()  # built outside the measurement
    tracemalloc.start()
    try:
        targets.TARGETS[target](data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The targets' limits are 64 KiB frames, 256 KiB bodies and inflated
    # payloads: a few copies of those, never what the input claims to hold.
    assert peak < 48 * 1024 * 1024, (target, name, peak)
