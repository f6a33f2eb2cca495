"""Fuzzing the input surfaces (issue #5): the targets live in
``tools/fuzz/targets.py`` (shared with the atheris harness); figures are
printed like the reliability suite's (``tests/reliability/figures.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
for _p in (str(_ROOT / "tools" / "fuzz"), str(_ROOT / "tests"), str(_ROOT / "tests" / "reliability")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from figures import figures, terminal_summary  # noqa: E402,F401


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    terminal_summary(terminalreporter)
