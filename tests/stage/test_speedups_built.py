"""The accelerator's tests skip when ``probetag._speedups`` is missing; that
is only acceptable on a machine that cannot build it (no C compiler or no
Python headers), so a broken build shows up here as a failure."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest


def test_accelerator_is_built_where_it_can_be():
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if shutil.which(cc) is None or not headers.exists():
        pytest.skip(f"cannot build C extensions here ({cc} or {headers} missing): "
                    "the pure-Python path is used")
    import probetag._speedups as sp  # an ImportError fails the test
    from probetag import _stage

    # A stale build (older _speedups.c) is ignored at run time; here it fails.
    assert sp.API_VERSION == _stage.SPEEDUPS_API, "rebuild: pip install -e ."
    assert sp.walk(b"\x92\x05\x80")[2:] == (3, None)
