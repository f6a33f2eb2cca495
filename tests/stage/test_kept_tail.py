"""The bytes the stage keeps of each chunk's last unread entries
(``Processor._keep_tail``), for a strong hit at the head of a later chunk:
kept as one copy per chunk and split only when read, they must be the
entries a per-entry deque of the last ``_NEIGHBOURS_BEFORE`` would hold."""

from __future__ import annotations

import collections
import random
import sys

import pytest

from probetag import _stage
from probetag._config import config_from_mapping
from probetag._metrics import Metrics
from probetag._stage import Processor


def _per_entry(kept: collections.deque, entries: bytes, starts, count: int, read: set[int]) -> None:
    for j in range(max(0, count - _stage._NEIGHBOURS_BEFORE), count):
        a, b = starts[j], starts[j + 1]
        kept.append(entries[a:b] if b - a <= _stage._TAIL_BYTES and j not in read else None)


@pytest.mark.parametrize("seed", range(60))
def test_the_kept_tail_is_the_last_unread_entries(seed):
    rng = random.Random(seed)
    proc = Processor(config_from_mapping({}), Metrics())
    want: collections.deque = collections.deque(maxlen=_stage._NEIGHBOURS_BEFORE)
    seen_kept = False
    for _chunk in range(rng.randrange(1, 12)):
        count = rng.choice([1, 1, 2, 5, 8, 9, 30])
        sizes = [rng.choice([3, 40, 511, 512, 513, 600, 5000]) if rng.random() < 0.3 else rng.randrange(2, 200)
                 for _ in range(count)]
        bodies = [bytes(rng.randrange(256) for _ in range(n)) for n in sizes]
        entries = b"".join(bodies)
        starts = [0]
        for n in sizes:
            starts.append(starts[-1] + n)
        read = {j for j in range(count) if rng.random() < 0.2}
        view = rng.random() < 0.5
        # a chunk as the C walk gives its offsets, and as a reusable buffer's view
        offs = memoryview(bytes().join(x.to_bytes(8, sys.byteorder) for x in starts)).cast("Q") if view else starts
        buf = bytearray(entries)
        proc._keep_tail(memoryview(buf) if view else entries, offs, count, read)
        if view:
            buf[:] = b"\0" * len(buf)  # the owner reuses its buffer: the kept bytes are copies
        _per_entry(want, entries, starts, count, read)
        assert proc._tail_entries() == list(want)
        seen_kept = seen_kept or any(x is not None for x in want)
    assert seen_kept or all(len(b) > _stage._TAIL_BYTES for b in bodies)
