"""e2e: real rsyslog, real nmap. Precision/recall go to the terminal summary."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for p in (_HERE, _HERE.parent):  # e2e_scoring, and tests/ for util.*
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from e2e_scoring import REPORT  # noqa: E402


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    if REPORT:
        terminalreporter.section("probetag detection vs. nmap ground truth")
        for line in REPORT:
            terminalreporter.write_line(line)
