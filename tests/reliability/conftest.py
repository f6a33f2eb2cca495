"""Reliability suite (issue #5): faults, overload and hostile input, on
loopback, each scenario bounded in time, its figures printed to the run log.

Every scenario records its figures with the ``figures`` fixture; they are
printed as the test ends (so a CI log shows them even when a later test
hangs) and again, as one table, at the end of the session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

_ALL: list[tuple[str, dict]] = []


class Figures:
    def __init__(self, name: str) -> None:
        self.name = name
        self.values: dict[str, object] = {}

    def add(self, **values: object) -> None:
        self.values.update(values)

    def line(self) -> str:
        body = " ".join(f"{k}={_fmt(v)}" for k, v in self.values.items())
        return f"FIGURES {self.name}: {body}"


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


@pytest.fixture
def figures(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]):
    fig = Figures(request.node.name)
    yield fig
    if fig.values:
        _ALL.append((fig.name, dict(fig.values)))
        with capsys.disabled():
            print("\n" + fig.line(), flush=True)


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    if not _ALL:
        return
    terminalreporter.section("reliability figures")
    for name, values in _ALL:
        terminalreporter.write_line(f"{name}: " + " ".join(f"{k}={_fmt(v)}" for k, v in values.items()))
