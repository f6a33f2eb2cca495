"""``probetag explain``'s text report, as a person reads it.

Theory of operation
-------------------
* Input: one ``FileReport`` per file (``explain.FileReport``): the
  correlator's scan summaries (one per source), what the listener was
  (``_SourceInfo``) and, per source and probe name, the first line numbers
  and one sample payload (``Example``). Output: text for a terminal of
  ``width`` columns (the terminal's, or 100 when the output is not one).
* Per source: the scanner, when and for how long, then one row per kind of
  probe, most frequent first: the count, the probe in plain words with its
  own name after it (``detect/catalogue/describes/probes.yaml``, data), the
  first line numbers and a sample of what the line held. A row never wraps:
  its sample is cut to the width.
* The listener advice ("received by", "to close it") comes once per kind of
  listener at the end of the file's report, naming the sources it let in,
  not once per source. Application-log traces (a scanner's user agent in an
  access log) get no listener advice: no syslog listener took those bytes.
* Colour only when asked (``--color always``) or when the output is a
  terminal (``auto``, the default) and ``NO_COLOR`` is not set.
* No I/O of its own but ``out.write``: the caller picks the stream.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import textwrap
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Callable

import yaml

__all__ = ["Example", "describe", "listener_kinds", "text_report", "use_color", "report_width", "Progress"]

_DESCRIBES = Path(__file__).resolve().parent / "detect" / "catalogue" / "describes" / "probes.yaml"
#: First line numbers shown per kind of probe.
_FIRST_LINES = 3
#: Width when the output is not a terminal.
_WIDTH = 100


@dataclass(slots=True)
class Example:
    """The first lines (1-based) of one kind of probe from one source, and
    the payload the first of them held (``probe["payload"]``)."""

    lines: list[int] = field(default_factory=list)
    payload: str = ""
    count: int = 0


@functools.lru_cache(maxsize=1)
def _describes() -> tuple[dict[str, str], dict[int, str]]:
    data = yaml.load(_DESCRIBES.read_text(encoding="utf-8"),
                     Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    probes = {str(k): str(v) for k, v in (data.get("probes") or {}).items()}
    ports = {int(k): str(v) for k, v in (data.get("ports") or {}).items()}
    return probes, ports


def describe(name: str) -> str:
    """The probe ``name`` in plain words, or "" when the data has none."""
    probes, ports = _describes()
    if name in probes:
        return probes[name]
    head, _, port = name.partition("/")
    if head == "udp-scan-payload" and port.isdigit():
        service = ports.get(int(port))
        return f"nmap's UDP port-scan payload for {service} ({port}/udp)" if service \
            else f"nmap's UDP port-scan payload for port {port}"
    return ""


def use_color(choice: str, stream: IO[str]) -> bool:
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def report_width(stream: IO[str]) -> int:
    isatty = getattr(stream, "isatty", None)
    if isatty and isatty():
        return max(60, shutil.get_terminal_size((_WIDTH, 24)).columns)
    return _WIDTH


class _Style:
    def __init__(self, color: bool) -> None:
        self.color = color

    def _sgr(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color and text else text

    def bold(self, text: str) -> str:
        return self._sgr("1", text)

    def dim(self, text: str) -> str:
        return self._sgr("2", text)

    def warn(self, text: str) -> str:
        return self._sgr("1;33", text)


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


def _when(first: float, last: float) -> str:
    """"2026-12-05 13:13:33 to 13:16:11 (2 min 38 s)"; "" without times."""
    if first <= 0:
        return "time not recorded in the file"
    a = datetime.fromtimestamp(first).astimezone()
    b = datetime.fromtimestamp(last).astimezone()
    end = b.strftime("%H:%M:%S") if a.date() == b.date() else b.strftime("%Y-%m-%d %H:%M:%S")
    span = max(0, int(round(last - first)))
    if span < 60:
        took = f"{span} s"
    elif span < 3600:
        took = f"{span // 60} min {span % 60} s"
    else:
        took = f"{span // 3600} h {span % 3600 // 60} min"
    if span == 0:
        return a.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    return f"{a.strftime('%Y-%m-%d %H:%M:%S')} to {end} {a.strftime('%Z')} ({took})".replace("  ", " ")


def _cut(text: str, room: int) -> str:
    if room <= 1:
        return ""
    return text if len(text) <= room else text[:room - 1] + "…"


def _probe_rows(out: IO[str], examples: dict[str, Example], probes: dict[str, int], width: int,
                st: _Style) -> None:
    """One row per kind of probe: count, name, first lines, plain words and
    a sample of the payload, cut to ``width``."""
    rows = []
    for name, count in probes.items():
        ex = examples.get(name)
        lines = ", ".join(str(n) for n in ex.lines) if ex is not None else ""
        if ex is not None and ex.count > len(ex.lines):
            lines += ", …"
        rows.append((count, name, lines, describe(name), ex.payload if ex is not None else "",
                     ex.lines[0] if ex is not None and ex.lines else 0))
    # most frequent first, then in the order the file has them
    rows.sort(key=lambda r: (-r[0], r[5], r[1]))
    cw = max(len(str(r[0])) for r in rows) if rows else 1
    name_w = max(5, min(max((len(r[1]) for r in rows), default=5), 24))
    lines_w = max(5, min(max((len(r[2]) for r in rows), default=5), 22))
    out.write(st.dim(f"    {'n':>{cw}}  {'probe':<{name_w}}  {'lines':<{lines_w}}  what it asks for; sample") + "\n")
    for count, name, lines, words, payload, _first in rows:
        head = f"    {count:>{cw}}  {_cut(name, name_w):<{name_w}}  {_cut(lines, lines_w):<{lines_w}}  "
        room = width - len(head)
        text = _cut(words, room) if words else ""
        rest = room - len(text) - (2 if text else 0)
        sample = _cut(payload, rest) if payload and rest >= 8 else ""
        out.write(head + text + (("  " if text else "") + st.dim(sample) if sample else "") + "\n")


def listener_kinds(rep: Any, listener: Callable[[Any, str], tuple[str, list[str]]],
                   kinds: dict[str, tuple[list[str], list[str]]] | None = None) -> dict[str, tuple[list[str], list[str]]]:
    """Listener kind ("received by") -> (how to close it, the sources it let
    in), in the order of the sources' first probe, added to ``kinds``. One
    kind per transport; sources seen only in another program's log lines
    get none (no syslog listener took their bytes)."""
    kinds = {} if kinds is None else kinds
    seen = {where: set(srcs) for where, (_how, srcs) in kinds.items()}  # (a list's `in` is linear)
    for s in sorted(rep.summaries, key=lambda s: (s["first_seen"], s["source"])):
        info = rep.sources.get(s["source"])
        if info is None or (info.app_lines and not info.listener_lines):
            continue
        src = s["source"] if s["source"] != "-" else "sender unknown"
        for t in sorted(info.transports) or [None]:
            one = dataclasses.replace(info, transports={t}) if t else info
            where, how = listener(one, rep.fmt)
            srcs = kinds.setdefault(where, (how, []))[1]
            have = seen.setdefault(where, set())
            if src not in have:
                have.add(src)
                srcs.append(src)
    return kinds


def text_report(out: IO[str], rep: Any, *, first: bool = True, width: int = _WIDTH, color: bool = False,
                listener: Callable[[Any, str], tuple[str, list[str]]] | None = None,
                max_line: int = 0) -> None:
    """One file's report (``rep``: an ``explain.FileReport``); a blank line
    before every one but the first. ``listener(info, fmt)`` -> (where, how
    to close it) for a source's ``_SourceInfo``."""
    st = _Style(color)
    if not first:
        out.write("\n")
    summaries = sorted(rep.summaries, key=lambda s: (s["first_seen"], s["source"]))
    sources = {s["source"] for s in summaries}
    out.write(st.bold(f"{rep.name}") + f": {_n(rep.lines, 'line')} ({rep.fmt} format)\n")
    tail = f", {_n(rep.framing_errors, 'rsyslog framing-error line')}" if rep.framing_errors else ""
    if rep.probe_lines:
        out.write(f"  {_n(rep.probe_lines, 'scanner-probe line')} from {_n(len(sources), 'source')}, "
                  f"{_n(rep.benign_lines, 'other line')}{tail}\n")
    else:
        out.write(f"  no scanner-probe lines; {_n(rep.benign_lines, 'other line')}{tail}\n")
    for s in summaries:
        info = rep.sources.get(s["source"])
        src = s["source"] if s["source"] != "-" else "sender unknown"
        scanners = [x for x in (s.get("scanners") or [s.get("scanner") or "unknown"])]
        who = ", ".join(scanners)
        out.write("\n  " + st.bold(f"{src}") + f": {who}, {_when(s['first_seen'], s['last_seen'])}\n")
        if s["source"] == "-":
            out.write(st.dim("    (the file does not record who sent these lines)") + "\n")
        out.write(f"    {_n(s['lines'], 'line')}, {_n(len(s['probes']), 'kind')} of probe\n")
        examples = rep.examples.get(s["source"], {}) if hasattr(rep, "examples") else {}
        _probe_rows(out, examples, s["probes"], width, st)
        if info is not None and info.app_lines and not info.listener_lines:
            # a scanner's name quoted in another program's log line (an
            # access log's user agent): no syslog listener took its bytes
            out.write("    seen in another program's log lines: the scanner talked to that program,"
                      " not to a syslog listener\n")
    # one section per kind of listener, at the end
    kinds = listener_kinds(rep, listener) if listener is not None else {}
    for where, (how, srcs) in kinds.items():
        out.write("\n  " + st.bold("received by") + f": {where}\n")
        out.write(textwrap.fill("from: " + ", ".join(srcs), width=width, initial_indent="    ",
                                subsequent_indent="          ") + "\n")
        if how:
            out.write("    " + st.bold("to close it") + ":\n")
            for h in how:
                out.write(textwrap.fill(h, width=width, initial_indent="      - ",
                                        subsequent_indent="        ") + "\n")
    if rep.cut_lines:
        out.write(f"  {_n(rep.cut_lines, 'over-long line')} cut at {max_line} bytes\n")
    if rep.scans_dropped:
        out.write(f"  {_n(rep.scans_dropped, 'scan')} not listed: more sources than correlation.max_bytes "
                  "holds (their lines are counted above; a larger bound in --config lists them)\n")


class Progress:
    """A progress line on ``stream`` (stderr) while big input is read, when
    ``stream`` is a terminal: bytes read (of ``total`` on disk, when the
    input is not compressed), at most every ``every`` seconds; erased at
    the end."""

    def __init__(self, stream: IO[str], total: int, *, min_bytes: int = 64 * 1024 * 1024,
                 every: float = 0.5) -> None:
        isatty = getattr(stream, "isatty", None)
        self.on = bool(isatty and isatty()) and total >= min_bytes
        self.stream = stream
        self.total = total
        self.every = every
        self.done_bytes = 0
        self._last = 0.0
        self._shown = False

    def update(self, nbytes: int, name: str = "") -> None:
        if not self.on:
            return
        self.done_bytes += nbytes
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        mb = self.done_bytes / 1e6
        if self.total and self.done_bytes <= self.total:
            text = f"explain: {mb:,.0f} of {self.total / 1e6:,.0f} MB ({100 * self.done_bytes / self.total:.0f} %)"
        else:
            text = f"explain: {mb:,.0f} MB read"
        if name:
            text += f"  {name}"
        self.stream.write("\r" + text[:120] + "\x1b[K")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False
