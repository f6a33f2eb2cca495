"""Reliability suite (issue #5): faults, overload and hostile input, on
loopback, each scenario bounded in time, its figures printed to the run log
(``figures.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _p in (str(_HERE.parent), str(_HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from figures import figures, terminal_summary  # noqa: E402,F401


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    terminal_summary(terminalreporter)
