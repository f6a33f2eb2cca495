"""atheris target: the C walk (``probetag._speedups.walk``) on arbitrary
bytes must not crash and must agree with the reference ``_walk_py``.

    python tests/stage/fuzz_walk.py CORPUS_DIR -runs=N -max_total_time=S
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from probetag import _stage


def one_input(data: bytes) -> None:
    starts, slow, end, error = _stage._walk_c(data)
    got = (list(starts), slow, end, error)
    ref = _stage._walk_py(data)
    if got != ref:
        raise AssertionError(f"C walk {got[1:]} != reference {ref[1:]} on {data[:120].hex()}")
    # The same bytes as a view into a larger buffer: no read past its end.
    view = memoryview(data + b"\x00" * 8)[:len(data)]
    starts, slow, end, error = _stage._walk_c(view)
    if (list(starts), slow, end, error) != got:
        raise AssertionError("C walk differs on a memoryview")


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
