"""Named counters and gauges: every path a record or a frame can take has one.

Theory of operation
-------------------
* A counter is a name plus an optional sorted tuple of label pairs; values
  only go up. Gauges are set. There is one ``Metrics`` object per process,
  passed explicitly (no global), so tests can read exact figures.
* Record accounting keeps one invariant that tests check:
  ``records_in == records_passed + records_tagged + records_dropped + records_rejected``
  once everything in flight has been settled. What reaches an output (passed
  and tagged records, plus summaries) ends delivered (``records_out``) or,
  with ``output.dead_letter``, set aside (``records_dead_lettered``).
* ``render()`` writes the Prometheus text exposition format (version 0.0.4).
  Secrets never reach here: labels are names, reasons and probe ids only.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Iterable

__all__ = ["Metrics", "RECORD_OUTCOMES"]

#: Every record ends in exactly one of these.
RECORD_OUTCOMES = ("passed", "tagged", "dropped", "rejected")

Labels = tuple[tuple[str, str], ...]


class Metrics:
    def __init__(self) -> None:
        self._counters: dict[tuple[str, Labels], float] = defaultdict(float)
        self._gauges: dict[tuple[str, Labels], float] = {}
        self._help: dict[str, str] = {}
        self._lock = threading.Lock()

    def inc(self, name: str, n: float = 1, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())) if labels else ())
        self._counters[key] += n

    def add(self, key: tuple[str, Labels], n: float = 1) -> None:
        """``inc`` by its key: (name, the labels' (key, value) pairs in key
        order), for a caller on a hot path that builds it itself."""
        self._counters[key] += n

    def set(self, name: str, value: float, **labels: str) -> None:
        self._gauges[(name, tuple(sorted(labels.items())) if labels else ())] = value

    def describe(self, name: str, help_text: str) -> None:
        self._help[name] = help_text

    def get(self, name: str, **labels: str) -> float:
        """Sum of a counter over all label sets that include ``labels``."""
        want = set(labels.items())
        total = 0.0
        for (n, lab), v in list(self._counters.items()):
            if n == name and want.issubset(lab):
                total += v
        for (n, lab), v in list(self._gauges.items()):
            if n == name and want.issubset(lab):
                total += v
        return total

    def snapshot(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for (n, lab), v in list(self._counters.items()) + list(self._gauges.items()):
            out[_fmt(n, lab)] = v
        return out

    def render(self) -> str:
        lines: list[str] = []
        seen: set[str] = set()
        items: Iterable[tuple[tuple[str, Labels], float, str]] = (
            [(k, v, "counter") for k, v in sorted(self._counters.items())]
            + [(k, v, "gauge") for k, v in sorted(self._gauges.items())]
        )
        for (name, lab), value, kind in items:
            full = f"probetag_{name}"
            if full not in seen:
                seen.add(full)
                if name in self._help:
                    lines.append(f"# HELP {full} {self._help[name]}")
                lines.append(f"# TYPE {full} {kind}")
            lines.append(f"{_fmt(full, lab)} {value:g}")
        return "\n".join(lines) + "\n"


def _fmt(name: str, labels: Labels) -> str:
    if not labels:
        return name
    inner = ",".join(f'{k}="{_esc(v)}"' for k, v in labels)
    return f"{name}{{{inner}}}"


def _esc(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
