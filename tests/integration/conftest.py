"""Loopback integration tests: real sockets on 127.0.0.1, kernel-chosen ports,
every wait bounded. Shared helpers live in ``tests/util``."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
