"""Figures of the reliability and fuzz scenarios, printed to the run log.

Every scenario records its figures with the ``figures`` fixture; they are
printed as the test ends (so a CI log shows them even when a later test
hangs) and again, as one table, at the end of the session."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

_ALL: list[tuple[str, dict[str, object]]] = []
_state = {"printed": False}


class Figures:
    def __init__(self, name: str) -> None:
        self.name = name
        self.values: dict[str, object] = {}

    def add(self, **values: object) -> None:
        self.values.update(values)

    def line(self) -> str:
        return f"FIGURES {self.name}: {_fmt_values(self.values)}"


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def _fmt_values(values: dict[str, object]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in values.items())


@pytest.fixture
def figures(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> Iterator[Figures]:
    fig = Figures(request.node.name)
    yield fig
    if fig.values:
        _ALL.append((fig.name, dict(fig.values)))
        with capsys.disabled():
            print("\n" + fig.line(), flush=True)


def terminal_summary(terminalreporter: Any) -> None:
    if not _ALL or _state["printed"]:
        return
    _state["printed"] = True
    terminalreporter.section("reliability figures")
    for name, values in _ALL:
        terminalreporter.write_line(f"{name}: {_fmt_values(values)}")
