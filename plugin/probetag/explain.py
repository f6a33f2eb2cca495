"""``probetag explain FILE...``: what are these syslog lines?

Theory of operation
-------------------
* Input is rsyslog or syslog-ng output files (``-`` is stdin; gzip is recognised by its
  magic bytes and inflated by zlib in large reads, ``_Gunzip``). The format is detected once per file from its first lines
  (``probetag.decode.detect_file_format``) unless ``--input-format`` names it.
* The file is read in blocks of whole lines (``_BLOCK`` bytes), so memory
  stays constant however big the file is. Per block, the *same* code as
  ``probetag serve`` decides:

  1. the chunk prefilter's literal set (one multi-literal scan over the
     block's bytes, as the stage does over a chunk) picks the lines worth
     decoding; the other lines are never split out one by one. For JSON
     files the fragments are also searched the way rsyslog's JSON escaping
     writes them (``\\/``, ``\\"``, ``\\\\``);
  2. each picked line goes through ``probetag.decode.parse_syslog_line``,
     whose ``record`` takes the network path: ``Enricher.batch`` (rebuild,
     match, correlate, actions) in line order, with the line's own time as
     event time. Lines the prefilter skips are benign by construction.
     Correlation looks ahead inside a block, as the stage does inside a
     chunk, and back across blocks.

* Cost per block, besides detection: one read into a fresh buffer, one
  literal scan (the prefilter's literals and rsyslog's framing markers) and
  one pass of LF counting (the line numbers of the hit lines and of the
  block are counted from hit line to hit line). Nothing is done per benign
  line, not even in the jsonl output (``_JsonlWriter``).

* syslog-ng files (``decode.SYSLOG_NG_FORMATS``, docs/collectors.md): the
  lines around a strong hit are read further (``_syslog_ng_neighbours``:
  syslog-ng cuts a binary probe at its NULs into lines no literal hits),
  and a line without a header joins the message above it in ``pick`` (a
  UDP datagram with LFs): that message is detected whole, and each of its
  lines gets its verdict in ``detect`` (the continuation lines travel as
  ``{"_continues": item}`` records, which read as nothing).

* rsyslog's own "Framing Error" / "Incomplete frame" lines are counted
  (they mean octet counting ate the start of some bytes) and never tagged. A
  "line" longer than ``_MAX_LINE`` without LF is cut and counted.

* Output: ``jsonl`` is one object per input line, in order:
  ``{"line": N, "probe": {...}}`` or ``{"line": N, "probe": null}`` (N is
  1-based per file; ``"file"`` is added when several files are given),
  byte for byte what one ``json.dumps`` per line writes (the null lines
  with its defaults, the probe lines with ``ensure_ascii=False``), encoded
  as ``sys.stdout`` would.
  ``text`` is a per-source summary (scanner, probes, first/last seen, lines,
  the listener that received them and how to close it) and a count of the
  other lines, from the correlator's scan summaries.
  ``html`` is the same report as one page with charts and a table of the
  probe lines (``_explain_html``); only then does ``Explainer.detect`` hand
  each probe line to a collector (``on_probe``). ``--output`` names the file.
* Each file gets its own correlator: correlation runs on event time, and two
  files are two time lines. The compiled detector is shared.

* ``--jobs 2`` (``_run_pipeline``) splits the same work over two processes
  for the two cores: a forked reading process opens, sniffs and cuts the
  files (``_blocks``), scans each block and parses its hit lines
  (``Explainer.scan`` and ``pick``), and sends per block the line count,
  the framing-error count and the (event time, record) of its hit lines
  through a pipe of bounded size; this process runs ``Explainer.detect``
  in block order and writes the output. Same functions, same order: the
  output, the error messages and the exit status are those of ``--jobs 1``,
  which stays the reference (tests/explain runs every comparison both
  ways). The fork comes before any thread (the gzip reader's thread lives
  in the reading process); where fork is missing or a thread runs, it is
  one process. On a 1 GB file the reading process has some 4 CPU s of work
  and this one 5 (jsonl) or 4.4 (text), against 8.5 in one process.
* ``--jobs`` defaults to 2 when there are two or more CPUs and the files
  (stdin if it is a regular file) hold at least ``_PIPELINE_MIN_BYTES``
  (32 MiB) on disk: below that, the fork and the second process's start
  cost about as much as the overlap saves (measured on 5, 10 and 20 MB
  files, within 0.1 s either way).
"""

from __future__ import annotations

import argparse
import functools
import gzip
import io
import json
import marshal
import os
import queue
import re
import signal
import struct
import sys
import threading
import time
import traceback
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, Callable, Iterator

from . import _explain_html, decode
from ._accel import log_start
from ._explain_report import _FIRST_LINES, Example, Progress, report_width, text_report, use_color
from ._config import Config, ConfigError, load_config
from ._logging import setup_logging
from ._metrics import Metrics

__all__ = ["main", "Explainer", "FileReport", "INPUT_FORMATS"]

INPUT_FORMATS = ("auto", *decode.FORMATS)
#: Bytes read per block (whole lines). Bounded memory: one block at a time.
_BLOCK = 4 * 1024 * 1024
#: A single line longer than this is cut (and counted): rsyslog's own
#: maximum message size is 8 KiB by default, so only garbage gets here.
_MAX_LINE = 1024 * 1024
#: gzip input: compressed bytes read, and most bytes inflated, per call;
#: inflated pieces held ready for the reader (``_Gunzip``)
_GZ_IN = 1024 * 1024
_GZ_OUT = 4 * 1024 * 1024
_GZ_AHEAD = 2
#: Lines the format detection looks at.
_SNIFF_LINES = 200
#: ``--jobs`` default: the two-process pipeline (``_run_pipeline``) from this
#: many input bytes on (files' sizes on disk; stdin counts when it is a
#: regular file). Below it, the fork and the reading process's own
#: detector set-up cost more wall time than the overlap wins (measured:
#: see the module docstring).
_PIPELINE_MIN_BYTES = 32 * 1024 * 1024
#: Pipe buffer between the two processes (F_SETPIPE_SZ; Linux's default is
#: 64 KiB). Each block's message is flushed on its own, so this, one
#: message being written and one being read bound how far the reading
#: process runs ahead: a block's hit lines are some 100 KB at 1 % probe
#: lines, so a few blocks.
_PIPE_BYTES = 256 * 1024
#: Seconds the detecting process waits for the reading process to exit
#: once it has said it is done, before killing it.
_CHILD_WAIT = 5.0

#: rsyslog's internal messages when octet counting meets a non-syslog client
_FRAMING_MARKERS = (b"Framing Error in received TCP message", b"Incomplete frame at end of stream")

#: An RFC 3339 timestamp with a fraction of 1-6 digits and an offset (what
#: rsyslog's date-rfc3339 writes): see ``Explainer._time``.
_ISO_FRACTION = re.compile(rb"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})\.([0-9]{1,6})(Z|[+-][0-9]{2}:[0-9]{2})")

#: What ``pick`` hands detection in place of a line it knows matches nothing.
_NOTHING: dict[Any, Any] = {}
#: Letters and digits a CR-escape line's MSG must hold, besides its CR
#: escapes, to count as text (``_wordy``).
_WORDS = 8
_ALNUM = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _wordy(msg: bytes, escapes: tuple[bytes, ...]) -> bool:
    """Does ``msg`` hold ``_WORDS`` letters or digits besides ``escapes``?"""
    if len(msg) < _WORDS or len(msg) - len(msg.translate(None, _ALNUM)) < _WORDS:
        return False
    msg = _escapes_re(escapes).sub(b" ", msg)
    return len(msg) - len(msg.translate(None, _ALNUM)) >= _WORDS


@functools.lru_cache(maxsize=8)
def _escapes_re(escapes: tuple[bytes, ...]) -> re.Pattern[bytes]:
    """One pattern for every escape (longest first: what one pass of
    ``bytes.replace`` per escape, in that order, would remove)."""
    return re.compile(b"|".join(re.escape(e) for e in sorted(set(escapes), key=len, reverse=True)))

_MONTHS = {m.encode(): i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def _json_escaped(fragment: bytes) -> bytes:
    # rsyslog's jsonf/json property formats escape these three (FIELD_GUIDE 3)
    return fragment.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"/", b"\\/")


@dataclass(slots=True)
class _SourceInfo:
    transports: set[str] = field(default_factory=set)
    inputs: set[str] = field(default_factory=set)
    #: lines where a syslog input logged the probe's bytes, and lines where
    #: another program's log quoted a scanner (``seen_in``)
    listener_lines: int = 0
    app_lines: int = 0


@dataclass(slots=True)
class FileReport:
    """What one file held; ``summaries`` are the correlator's scan summaries."""

    name: str
    fmt: str = "raw"
    lines: int = 0
    probe_lines: int = 0
    framing_errors: int = 0
    cut_lines: int = 0
    summaries: list[dict[str, Any]] = field(default_factory=list)
    sources: dict[str, _SourceInfo] = field(default_factory=dict)
    #: source -> probe name -> its first lines and a sample (the text report)
    examples: dict[str, dict[str, Example]] = field(default_factory=dict)

    @property
    def benign_lines(self) -> int:
        return self.lines - self.probe_lines - self.framing_errors


#: Lines read around a line a strong literal hit: a probe's other lines
#: (a bare ``HELP`` rsyslog took for a HOSTNAME, an RFC 5424 record whose
#: payload was all TAG) hold no literal, and the sequence pass names them
#: by their place between the lines that do.
_NEIGHBOURS_BEFORE = 3
_NEIGHBOURS_AFTER = 6


#: A neighbour line of a file format with a plain header (traditional,
#: RFC 3339) is read when what follows its timestamp is at most this long or
#: holds the strong line's HOSTNAME word: a scan's lines, not the ordinary
#: logs around them (the stage's rule, ``_stage._NEIGHBOUR_BYTES``).
_NEIGHBOUR_REST = 96
#: A TAG as a daemon writes it, ``name[pid]: `` then text: what a payload
#: piece never looks like.
_PROGRAM_TAG = re.compile(rb"[A-Za-z0-9_./-]{1,48}\[[0-9]{1,10}\]: \S")


def _host_word(line: bytes | bytearray, host_at: int) -> tuple[int, bytes]:
    """(offset past the timestamp, HOSTNAME word) of a plain-header line
    (``host_at``: 16 for traditional, 0 for RFC 3339: after the first space)."""
    h = line.find(b" ") + 1 if host_at == 0 else host_at
    if h <= 0 or h > len(line):
        return len(line), b""
    e = line.find(b" ", h)
    return h, bytes(line[h:e if e >= 0 else len(line)])


def _with_neighbours(data: bytes | bytearray, picked: list[tuple[int, bytes, bool, bool]],
                     strong: list[tuple[int, int, int]], host_at: int = -1) -> list[tuple[int, bytes, bool, bool]]:
    """``picked`` plus the lines around each of ``strong`` (line index,
    start, end offsets), in line order. ``host_at`` >= 0 (a plain-header
    format, see ``_host_word``): only neighbours that are short or hold the
    strong line's HOSTNAME word."""
    have = {x[0] for x in picked}
    extra: list[tuple[int, bytes, bool, bool]] = []
    n = len(data)
    filtered = host_at >= 0

    def wanted(ln: bytes, needle: bytes) -> bool:
        h, host = _host_word(ln, host_at)
        if _PROGRAM_TAG.match(ln, h + len(host) + 1) is not None:
            return False  # a daemon's own line (``sshd[812]: ...``), no payload piece
        return len(ln) - h <= _NEIGHBOUR_REST or (bool(needle) and ln.find(needle, h) >= 0)

    for idx, start, end in strong:
        needle = _host_word(data[start:end], host_at)[1] if filtered else b""
        s = start
        for k in range(1, _NEIGHBOURS_BEFORE + 1):
            if s == 0:
                break
            b = data.rfind(b"\n", 0, s - 1) + 1
            if idx - k not in have:
                ln = bytes(data[b:s - 1])
                if not filtered or wanted(ln, needle):
                    have.add(idx - k)
                    extra.append((idx - k, ln, any(m in ln for m in _FRAMING_MARKERS), False))
            s = b
        e = end
        for k in range(1, _NEIGHBOURS_AFTER + 1):
            if e >= n:
                break
            f = data.find(b"\n", e + 1)
            if f < 0:
                f = n
            if idx + k not in have:
                ln = bytes(data[e + 1:f])
                if not filtered or wanted(ln, needle):
                    have.add(idx + k)
                    extra.append((idx + k, ln, any(m in ln for m in _FRAMING_MARKERS), False))
            e = f
    if not extra:
        return picked
    return sorted(picked + extra, key=lambda x: x[0])


#: A ``fromhost`` line with an empty MSG: the sender and nothing else.
_EMPTY_MSG = re.compile(rb"(?:[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2}|[0-9]{4}-[0-9]{2}-[0-9]{2}T\S+)"
                        rb" \S+ +")


def _with_empty_msgs(data: bytes | bytearray, picked: list[tuple[int, bytes, bool, bool]]
                     ) -> list[tuple[int, bytes, bool, bool]]:
    """``picked`` plus every line of a ``fromhost`` file whose MSG is empty,
    in line order. A binary probe line that rsyslog took whole into the TAG
    leaves such a line (``%FROMHOST% %msg%`` prints no TAG): no literal can
    hit it, and only its place among the scan's other lines names it. They
    are rare in ordinary logs (a message with no text)."""
    have = {x[0] for x in picked}
    extra: list[tuple[int, bytes, bool, bool]] = []
    idx = pos = 0
    n = len(data)
    off = data.find(b" \n")
    ends = []
    while off >= 0:
        ends.append(off + 1)
        off = data.find(b" \n", off + 1)
    if data.endswith(b" "):
        ends.append(n)
    for end in ends:
        start = data.rfind(b"\n", 0, end) + 1
        ln = bytes(data[start:end])
        if _EMPTY_MSG.fullmatch(ln) is None:
            continue
        idx += data.count(b"\n", pos, start)
        pos = start
        if idx not in have:
            extra.append((idx, ln, False, False))
    if not extra:
        return picked
    return sorted(picked + extra, key=lambda x: x[0])


#: syslog-ng files (``decode.SYSLOG_NG_FORMATS``): the lines around a strong
#: hit are read on while they look like pieces of a probe
#: (``_fragment_like``) or come within ``_SNG_REACH`` seconds of the last
#: line that did: syslog-ng cuts a TCP stream at every NUL, so one binary
#: probe is dozens of lines of a few bytes (``SSLSessionReq``: 25), none of
#: which holds a prefilter literal, and a scan's probes, some seconds
#: apart, may all be such lines; a UDP message with LFs spans several
#: lines. A walk reads at most ``_SNG_WALK`` lines.
_SNG_WALK = 2048
_SNG_REACH = 12.0
#: A payload this short, or one holding a control byte, or a line without
#: a header (a continuation), is fragment-like.
_SNG_SHORT = 16
_CONTROL_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_SNG_HEAD = re.compile(rb"(?:([A-Z][a-z]{2}) ([ 0-9][0-9])|[0-9]{4}-([0-9]{2})-([0-9]{2})T)"
                       rb"([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})? \S+ ")


def _sng_clock(m: re.Match[bytes]) -> float:
    """Seconds since the start of the year (months of 31 days) of a header:
    for differences between nearby lines only."""
    if m.group(1) is not None:
        mon, day = _MONTHS.get(m.group(1), 0), int(m.group(2))
    else:
        mon, day = int(m.group(3)), int(m.group(4))
    return (((mon * 31 + day) * 24 + int(m.group(5))) * 60 + int(m.group(6))) * 60 + int(m.group(7))


def _fragment_like(line: bytes | bytearray, m: re.Match[bytes] | None) -> bool:
    """A syslog-ng line (``m``: its header) that can be a piece of a cut probe."""
    if m is None:
        return True  # a continuation line
    return len(line) - m.end() <= _SNG_SHORT or _CONTROL_BYTE.search(line, m.end()) is not None


def _syslog_ng_neighbours(data: bytes | bytearray, picked: list[tuple[int, bytes, bool, bool]],
                          strong: list[tuple[int, int, int]]) -> list[tuple[int, bytes, bool, bool]]:
    """``_with_neighbours`` for syslog-ng files: the walks go on as long as
    ``_SNG_REACH`` says, and a continuation line's message is read back to
    its header line."""
    have = {x[0] for x in picked}
    extra: list[tuple[int, bytes, bool, bool]] = []
    n = len(data)

    def take(i: int, b: int, e: int) -> bytes:
        ln = bytes(data[b:e])
        if i not in have:
            have.add(i)
            extra.append((i, ln, any(m in ln for m in _FRAMING_MARKERS), False))
        return ln

    for idx, start, end in strong:
        h = _SNG_HEAD.match(data, start)
        t0 = _sng_clock(h) if h is not None else None
        for step in (-1, 1):
            pos = start if step < 0 else end
            last_t, k, left = t0, 0, (_NEIGHBOURS_BEFORE if step < 0 else _NEIGHBOURS_AFTER)
            cont = step < 0 and h is None
            while k < _SNG_WALK:
                if step < 0:
                    if pos <= 0:
                        break
                    b = data.rfind(b"\n", 0, pos - 1) + 1
                    e = pos - 1
                else:
                    if pos >= n:
                        break
                    b = pos + 1
                    e = data.find(b"\n", b)
                    if e < 0:
                        e = n
                m = _SNG_HEAD.match(data, b, e)
                t = _sng_clock(m) if m is not None else last_t
                near = t is not None and last_t is not None and abs(t - last_t) <= _SNG_REACH
                if not (left > 0 or cont or near):
                    break
                k += 1
                ln = take(idx + step * k, b, e)
                left -= 1
                if _fragment_like(ln, m):
                    last_t = t if t is not None else last_t
                    left = max(left, 1)
                cont = step < 0 and m is None
                pos = b if step < 0 else e
    if not extra:
        return picked
    return sorted(picked + extra, key=lambda x: x[0])


class Explainer:
    """The sans-I/O core of ``explain``: blocks of lines in, one probe map (or
    None) per line out. One instance per file."""

    def __init__(self, config: Config, fmt: str, name: str = "-", detector: Any = None) -> None:
        # the same construction the stage uses (probetag._stage)
        from .detect import Prefilter, build_detection, prefilter_fragments

        self.config = config
        self.fmt = fmt
        self.metrics = Metrics()
        det, pre, self.correlator, _actions, self.enricher = build_detection(config, self.metrics, detector=detector)
        self.detector = det
        # a block is a whole part of the file, and its lines are written
        # when it is done: nothing is named late
        self.enricher.late = False
        if fmt in ("json", "auto"):
            frags = prefilter_fragments(det, config.detect.escapes)
            pre = Prefilter(sorted(set(frags) | {_json_escaped(f) for f in frags}), det.backend)
        elif fmt in decode.SYSLOG_NG_FORMATS:
            # the payload as received, nothing escaped: syslog-ng's pieces too
            frags = prefilter_fragments(det, config.detect.escapes)
            pre = Prefilter(sorted(set(frags) | set(det.syslog_ng_fragments())), det.backend)
        self.use_prefilter(pre)
        self.output_field = config.detect.output_field
        self.report = FileReport(name, fmt)
        self._tcache: dict[bytes, float] = {}
        self._last_t = 0.0
        self._year = datetime.now().year
        #: called with (1-based line, event time, probe map, record) for
        #: each probe line when a report needs every line (``--format html``)
        self.on_probe: Callable[[int, float, dict[str, Any], dict[Any, Any]], None] | None = None

    def use_prefilter(self, pre: Any) -> None:
        """Pick lines with ``pre``'s literals (a ``probetag.detect.Prefilter``)."""
        from .detect import LiteralSet

        self.prefilter = pre
        # The scan also looks for rsyslog's framing markers: one pass over
        # the block instead of one bytes.find pass per marker. Their ids
        # come after the prefilter's, whose own ids are kept.
        self._marker_ids = len(pre.literals.patterns)
        self._literals = LiteralSet([*pre.literals.patterns, *_FRAMING_MARKERS], pre.literals.backend)
        # The context marker's ids (a bare CR's escapes: ``Prefilter``'s
        # weak literals) and the escapes themselves (``_weak_matters``).
        self._weak_ids = frozenset(getattr(pre, "_weak", ()))
        self._weak_lits = tuple(pre.literals.patterns[i] for i in sorted(self._weak_ids))
        #: lines hit only by the context marker that ``pick`` did not decode
        #: (``skip_weak``: whether it may; tests compare both ways)
        self.weak_skipped = 0
        self.skip_weak = True
        self._nothing_read: Any = None  # what analyse makes of _NOTHING
        self._pending: list[bytes] = []  # skipped lines not parsed since the last parsed one

    # -- event time ----------------------------------------------------------
    def _time(self, sl: decode.SyslogLine) -> float:
        ts = sl.time
        if not ts:
            return self._last_t
        key = ts.encode() if isinstance(ts, str) else ts
        m = _ISO_FRACTION.fullmatch(key)
        if m is not None:
            # Microseconds make every RFC 3339 stamp distinct, but the lines
            # of one second share the rest: parse that once. An aware
            # datetime's timestamp() is (whole seconds * 10**6 + us) / 10**6
            # (CPython's timedelta.total_seconds): the same float.
            whole = m.group(1) + m.group(3)
            base = self._tcache.get(whole)
            if base is None:
                base = self._cache_time(whole)
            t = base if base != base else (int(base) * 1_000_000 + int(m.group(2).ljust(6, b"0"))) / 1_000_000
        else:
            cached = self._tcache.get(key)
            t = self._cache_time(key) if cached is None else cached
        if t != t or t <= 0:  # unparsable: keep the previous line's time
            return self._last_t
        self._last_t = t
        return t

    def _time_after(self, sl: decode.SyslogLine) -> float:
        """``_time(sl)`` after lines ``pick`` skipped unparsed: their times
        matter only if ``sl`` has none of its own, and only then are they
        parsed, in order."""
        base = self._last_t
        self._last_t = float("nan")
        t = self._time(sl)
        if t != t:
            self._last_t = base
            for line in self._pending:
                self._time(decode.parse_syslog_line(line, self.fmt))
            t = self._time(sl)
        self._pending.clear()
        return t

    def _cache_time(self, key: bytes) -> float:
        if len(self._tcache) > 100_000:
            self._tcache.clear()
        t = self._tcache[key] = self._parse_time(key)
        return t

    def _parse_time(self, ts: bytes) -> float:
        try:
            if ts[:1].isdigit():
                return datetime.fromisoformat(ts.decode("ascii").replace("Z", "+00:00")).timestamp()
            # "Nov 27 13:25:57": no year in the traditional format; only
            # differences matter to correlation, so the current year will do
            mon = _MONTHS[ts[:3]]
            day, hms = int(ts[4:6]), ts[7:15].split(b":")
            return datetime(self._year, mon, day, int(hms[0]), int(hms[1]), int(hms[2])).timestamp()
        except (ValueError, KeyError, IndexError, UnicodeDecodeError):
            return float("nan")

    # -- one block -------------------------------------------------------------
    def block(self, data: bytes | bytearray) -> tuple[int, dict[int, dict[str, Any]]]:
        """``data``: whole lines joined by LF (no final LF) -> (number of
        lines, {0-based line index: probe map}) for the lines that are probes.

        Only lines the prefilter hits are split out and decoded; the others
        are never touched one by one (that is what makes big files fast)."""
        n, framing, picked = self.scan(data)
        return self.detect(n, framing, *self.pick(picked))

    def scan(self, data: bytes | bytearray) -> tuple[int, int, list[tuple[int, bytes, bool, bool]]]:
        """The first half of ``block``, which needs no detection state (the
        reading process of ``--jobs 2`` runs it): -> (number of lines,
        framing-error lines, [(0-based line index, line, holds a framing
        marker, hit only by the context marker)] for the lines a prefilter
        literal hit)."""
        # One pass of LF counting over the block: the line index of each hit
        # line is counted from the previous hit line, and the block's line
        # count from the last one. A line's hits are consecutive (sorted by
        # offset); it is split out once they are all seen, if a prefilter
        # literal hit it.
        picked: list[tuple[int, bytes, bool, bool]] = []
        framing = 0
        marker_ids = self._marker_ids
        weak_ids = self._weak_ids
        # (line index, start, end) of lines a strong literal hit: their
        # neighbours are read too (see _with_neighbours)
        strong_lines: list[tuple[int, int, int]] = []
        idx, pos, start, end = 0, 0, 0, -1
        probe = marked = strong = False
        count, rfind, find = data.count, data.rfind, data.find
        # (every LiteralSet backend takes a bytearray: tests/explain)
        hits = self._literals.find(data)  # type: ignore[arg-type]
        hits.append((len(data) + 1, -1))  # a sentinel ends the last line
        for off, pid in hits:
            if off <= end:
                if pid >= marker_ids:
                    marked = True
                else:
                    probe = True
                    if pid not in weak_ids:
                        strong = True
                continue
            if marked:
                # rsyslog's own complaints about bytes a client sent
                # (FIELD_GUIDE 1): counted, whatever else the line holds
                framing += 1
            if probe:
                picked.append((idx, bytes(data[start:end]), marked, not strong))
                if strong:
                    strong_lines.append((idx, start, end))
            if pid < 0:
                break
            idx += count(b"\n", pos, off)
            pos = off
            start = rfind(b"\n", 0, off) + 1
            end = find(b"\n", off)
            if end < 0:
                end = len(data)
            marked = pid >= marker_ids
            probe = not marked
            strong = probe and pid not in weak_ids
        if strong_lines:
            if self.fmt in decode.SYSLOG_NG_FORMATS:
                picked = _syslog_ng_neighbours(data, picked, strong_lines)
            else:
                host_at = 16 if self.fmt == "traditional" else 0 if self.fmt == "rfc3339" else -1
                picked = _with_neighbours(data, picked, strong_lines, host_at)
        if self.fmt == "fromhost":
            picked = _with_empty_msgs(data, picked)
        return idx + count(b"\n", pos) + 1, framing, picked

    def pick(self, picked: list[tuple[int, bytes, bool, bool]]) -> tuple[list[tuple[float, dict[Any, Any]]], list[int]]:
        """The middle of ``block`` (the reading process of ``--jobs 2`` runs
        it too): ``scan``'s hit lines -> (detection items: (event time,
        record) in line order, their 0-based line indices). Event time runs
        on from line to line within the file (``_time``). Lines hit only by
        the context marker go on only when they are nothing but a CR."""
        items: list[tuple[float, dict[Any, Any]]] = []
        where: list[int] = []
        fmt, parse = self.fmt, decode.parse_syslog_line
        lits = self._weak_lits
        # File formats whose MSG is a suffix of the line: there the text
        # after the last ": " past HOSTNAME lies inside MSG, and words in it
        # are words in MSG, so the line need not even be parsed (its time is
        # read later, only if a line after it needs it: ``_time_after``).
        first_space = 16 if fmt == "traditional" else 0 if fmt == "rfc3339" else -1
        raw_ok = self.skip_weak and first_space >= 0
        pending = self._pending
        sng = fmt in decode.SYSLOG_NG_FORMATS
        head: tuple[int, int, dict[Any, Any]] | None = None  # syslog-ng: (line, item, record) of the last message
        for idx, line, marked, weak_only in picked:
            if sng:
                sl = parse(line, fmt)
                rec = sl.record
                if rec.get("_continuation") and head is not None and head[0] == idx - 1:
                    # a raw LF inside the message above (a UDP datagram):
                    # its text joins that message, and the line takes the
                    # message's verdict (``detect``)
                    hrec = head[2]
                    hrec["msg"] = hrec["msg"] + b"\n" + rec["msg"]
                    items.append((self._last_t, {"_continues": head[1]}))
                    where.append(idx)
                    head = (idx, head[1], hrec)
                    continue
                head = (idx, len(items), rec)
                items.append((self._time(sl) if not pending else self._time_after(sl), rec))
                where.append(idx)
                continue
            if weak_only and raw_ok and not marked:
                host_end = line.find(b" ", line.find(b" ", first_space) + 1 if first_space == 0 else first_space)
                q = line.rfind(b": ")
                if 0 <= host_end < q and _wordy(line[q + 2:], lits):
                    self.weak_skipped += 1
                    pending.append(line)
                    items.append((self._last_t, _NOTHING))
                    where.append(idx)
                    continue
            sl = parse(line, fmt)
            if not (marked and sl.tag == b"rsyslogd:" and any(m in sl.msg for m in _FRAMING_MARKERS)):
                # every line's time in order: a line without one takes the
                # one before
                t = self._time_after(sl) if pending else self._time(sl)
                if weak_only:
                    # Hit only by a bare CR's escape (``#015``: every line of
                    # a CRLF sender such as a Windows event forwarder). Such
                    # a line holds no other catalogue fragment (the
                    # prefilter never under-reports), and a bare CR matches
                    # only a line that is nothing else: one whose MSG holds
                    # words beside the CR (``_WORDS``) matches nothing, so it
                    # is not decoded. (Placeholders such as a nil TAG ``-``
                    # or a NUL do not count as words: the rebuilt line of
                    # ``127.0.0.1 - #000#015`` is a lone CR.) It keeps its
                    # place in the batch as an empty record, which reads as
                    # nothing as the line would have: the look-ahead counts
                    # places, so every verdict stays the same.
                    if self.skip_weak and _wordy(sl.msg, lits):
                        self.weak_skipped += 1
                        items.append((t, _NOTHING))
                        where.append(idx)
                        continue
                items.append((t, sl.record))
                where.append(idx)
            # else rsyslog's own line, counted by scan; never a probe
        return items, where

    def detect(self, n: int, framing: int, items: list[tuple[float, dict[Any, Any]]],
               where: list[int]) -> tuple[int, dict[int, dict[str, Any]]]:
        """The last part of ``block``: ``scan``'s counts and ``pick``'s
        items -> (n, {0-based line index: probe map})."""
        rep = self.report
        base = rep.lines + 1  # 1-based number of the block's first line
        rep.lines += n
        rep.framing_errors += framing
        found: dict[int, dict[str, Any]] = {}
        if not items:
            return n, found
        by_item: dict[int, dict[str, Any]] = {}
        # A skipped line's record is always the same empty one: analysed once.
        pre = None
        if self.weak_skipped:
            if self._nothing_read is None:
                self._nothing_read = self.enricher.analyse(_NOTHING, True)
            from .detect._enrich import NOT_ANALYSED as na

            got = self._nothing_read
            pre = [got if rec is _NOTHING else na for _t, rec in items]
        for k, d in enumerate(self.enricher.batch("explain", items, pre)):
            rec = items[k][1]
            if "_continues" in rec:
                # a continuation line of a syslog-ng message: the message's verdict
                probe = by_item.get(rec["_continues"])  # type: ignore[assignment]
                if probe is None:
                    continue
            else:
                if d is None or d.outcome != "tagged":
                    continue
                probe = d.record.get(self.output_field)
                if not isinstance(probe, dict):
                    continue
                by_item[k] = probe
            found[where[k]] = probe
            rep.probe_lines += 1
            if self.on_probe is not None:
                self.on_probe(base + where[k], items[k][0], probe, rec)
            src = str(probe.get("source") or "-")
            name = str(probe.get("name"))
            ex = rep.examples.setdefault(src, {}).get(name)
            if ex is None:
                ex = rep.examples[src][name] = Example(payload=str(probe.get("payload") or ""))
            ex.count += 1
            if len(ex.lines) < _FIRST_LINES:
                ex.lines.append(base + where[k])
            info = rep.sources.setdefault(src, _SourceInfo())
            if probe.get("seen_in") == "application-log":
                info.app_lines += 1
            else:
                info.listener_lines += 1
            if probe.get("transport"):
                info.transports.add(str(probe["transport"]))
            inp = items[k][1].get("inputname")
            if inp:
                info.inputs.add(inp.decode("utf-8", "replace") if isinstance(inp, bytes) else str(inp))
        return n, found

    def finish(self) -> FileReport:
        self.report.summaries = _merge_overlapping(self.correlator.flush())
        return self.report


def _merge_overlapping(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One scan per source and stretch of time in the report. The correlator
    ends a scan after ``scan_idle`` without a named line; where most lines
    are named by their place in the scan afterwards (a ``%FROMHOST% %msg%``
    file), a later named line reopens the source as a new scan whose time
    then reaches back over the first: such overlapping scans are one."""
    out: list[dict[str, Any]] = []
    for s in sorted(summaries, key=lambda s: (str(s["source"]), s["first_seen"])):
        prev = out[-1] if out else None
        if prev is None or prev["source"] != s["source"] or s["first_seen"] > prev["last_seen"]:
            out.append(dict(s, probes=dict(s["probes"])))
            continue
        prev["last_seen"] = max(prev["last_seen"], s["last_seen"])
        prev["lines"] += s["lines"]
        for name, n in s["probes"].items():
            prev["probes"][name] = prev["probes"].get(name, 0) + n
        prev["probes"] = dict(sorted(prev["probes"].items()))
        prev["probe_count"] = len(prev["probes"])
        scanners = list(dict.fromkeys([*prev.get("scanners", ()), *s.get("scanners", ())]))
        # "unknown": bytes several scanners send only; a part named after a
        # scanner by bytes it alone sends names the whole scan
        known = [x for x in scanners if x != "unknown"]
        prev["scanners"] = known or scanners
        if known and prev.get("scanner") not in known:
            prev["scanner"] = known[0]
        if s.get("named_late"):
            prev["named_late"] = [*prev.get("named_late", ()), *s["named_late"]]
    return out


# ---------------------------------------------------------------- file I/O
def _open(path: str) -> IO[bytes]:
    raw: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[arg-type,type-var]
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        return io.BufferedReader(_Gunzip(buffered), _GZ_OUT)  # type: ignore[return-value]
    return buffered


class _Gunzip(io.RawIOBase):
    """A gzip stream's members, one after another, inflated.

    What ``gzip.GzipFile`` reads, with its errors (``EOFError`` for a cut
    file, ``BadGzipFile`` for bytes after a member that are neither zeros nor
    another member), but zlib parses the header and checks CRC and size
    itself (``wbits=31``) and gets ``_GZ_IN`` bytes per call instead of 8 KiB:
    GzipFile spent a third of the inflate time again around it. A corrupt
    member is ``BadGzipFile`` with zlib's message.

    zlib lets go of the GIL while it inflates, so a thread inflates up to
    ``_GZ_AHEAD`` pieces ahead of the reader: on two cores the inflating and
    the scanning overlap. Its errors reach the reader in order, after the
    data before them, where GzipFile would have raised them."""

    def __init__(self, src: IO[bytes]) -> None:
        self._src = src
        self._z = zlib.decompressobj(31)
        self._out = memoryview(b"")
        self._done = False
        self._stop = threading.Event()
        self._q: queue.Queue[bytes | BaseException | None] = queue.Queue(_GZ_AHEAD)
        self._thread = threading.Thread(target=self._produce, name="probetag-gunzip", daemon=True)
        self._thread.start()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._out:
            if self._done:
                return 0
            item = self._q.get()
            if item is None or isinstance(item, BaseException):
                self._done = True
                if item is None:
                    return 0
                raise item
            self._out = memoryview(item)
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def close(self) -> None:
        # a reader that stops early: the thread stops at its next piece
        self._stop.set()
        self._thread.join(5.0)
        super().close()

    def _produce(self) -> None:
        item: bytes | BaseException | None
        try:
            while not self._stop.is_set():
                item = self._inflate()
                if item is None:
                    break
                if item:
                    self._put(item)
        except Exception as exc:  # the reader raises it, in order
            self._put(exc)
            return
        self._put(None)

    def _put(self, item: bytes | BaseException | None) -> None:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _inflate(self) -> bytes | None:
        """The next inflated piece (maybe empty); None at the end."""
        z = self._z
        if z.eof:
            # A member ended. GzipFile: zero padding is skipped; anything
            # else must be the next member's magic.
            rest = z.unused_data.lstrip(b"\x00")
            while not rest:
                rest = self._src.read(_GZ_IN)
                if not rest:
                    return None
                rest = rest.lstrip(b"\x00")
            if len(rest) < 2:
                rest += self._src.read(1)
            if rest[:2] != b"\x1f\x8b":
                raise gzip.BadGzipFile("Not a gzipped file (%r)" % rest[:2])
            self._z = z = zlib.decompressobj(31)
            data = rest
        else:
            data = z.unconsumed_tail or self._src.read(_GZ_IN)
            if not data:
                raise EOFError("Compressed file ended before the end-of-stream marker was reached")
        try:
            return z.decompress(data, _GZ_OUT)
        except zlib.error as exc:
            raise gzip.BadGzipFile(str(exc)) from exc


def _fill(f: IO[bytes], view: memoryview) -> int:
    """Read into ``view`` until it is full or the stream ends (a pipe or a
    gzip member boundary may return less per call) -> bytes read."""
    got = 0
    while got < len(view):
        k = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not k:
            break
        got += k
    return got


def _blocks(f: IO[bytes], first: list[bytes], report: FileReport) -> Iterator[bytearray]:
    """Blocks of whole lines joined by LF, without the last LF. A block is
    one detection batch, and a connection's lines split across two batches
    lose the look-ahead (a request line and its lone CR), so the sniffed
    ``first`` lines open the first block rather than making one of their
    own, and a last line without LF joins the block before it. (One block
    is held back for that: memory stays at two blocks.)

    Each block is read straight into its own buffer (``readinto``) behind
    the partial line the previous read left, and cut at its last LF in
    place: the bytes are copied once, by the read."""
    rest = b"\n".join(first) + b"\n" if first else b""
    held: bytearray | None = None
    while True:
        start = len(rest)
        buf = bytearray(start + _BLOCK)
        buf[:start] = rest
        with memoryview(buf) as view:
            got = _fill(f, view[start:])
        if not got:
            break
        size = start + got
        cut = buf.rfind(b"\n", 0, size)
        if cut < 0:
            if size > _MAX_LINE:
                report.cut_lines += 1
                if held is not None:
                    yield held
                del buf[_MAX_LINE:]
                held, rest = buf, b""
            else:
                rest = bytes(buf[:size])
            continue
        rest = bytes(buf[cut + 1:size])
        del buf[cut:]
        if held is not None:
            yield held
        held = buf
    if rest.endswith(b"\n"):
        rest = rest[:-1]  # only the sniffed lines, nothing after them
        if held is None:
            yield bytearray(rest)
            return
    elif rest:
        if held is None:
            held = bytearray(rest)
        else:
            held += b"\n"
            held += rest
    if held is not None:
        yield held


def _sniff(f: IO[bytes]) -> list[bytes]:
    out = []
    for _ in range(_SNIFF_LINES):
        ln = f.readline(_MAX_LINE)
        if not ln:
            break
        out.append(ln[:-1] if ln.endswith(b"\n") else ln)
    return out


# ----------------------------------------------------------------- output
class _JsonlWriter:
    """``--format jsonl`` for one file: the lines of each block, in order,
    written as bytes.

    About 99 % of the lines are ``{"line": N, "probe": null}``, so their text
    is never formatted line by line: the numbers N = 1000 P + s share the
    digits P, and 1000 of those lines are one ``bytes.join`` with P as the
    separator between precomputed pieces (``s, "probe": null}`` + LF + the
    next line's head). The bytes are exactly what ``json.dumps`` of the same
    object writes (the tests compare the two); in probe lines only the probe
    map goes through the JSON encoder."""

    __slots__ = ("_out", "_head", "_tail", "_full", "_mids", "_lasts", "_enc", "_errors", "_dumps", "_probe_head")

    _GROUP = 1000

    def __init__(self, out: Any, encoding: str, errors: str, fname: str | None) -> None:
        self._out = out
        # json.dumps escapes non-ASCII by default: the head is ASCII
        head = ('{"line": ' if fname is None else '{"file": %s, "line": ' % json.dumps(fname)).encode()
        self._head = head
        self._tail = tail = b', "probe": null}\n'
        self._mids = [b"%03d" % s + tail + head for s in range(self._GROUP)]
        self._lasts = [b"%03d" % s + tail for s in range(self._GROUP)]
        self._full = [head, *self._mids[:-1], self._lasts[-1]]
        self._enc, self._errors = encoding, errors
        self._dumps = _probe_encoder()
        self._probe_head = '{"line": ' if fname is None else '{"file": %s, "line": ' % self._dumps(fname)

    def _nulls(self, parts: list[bytes], a: int, b: int) -> None:
        """The null lines a .. b-1 (1-based numbers)."""
        head, tail, g = self._head, self._tail, self._GROUP
        while a < g and a < b:  # no leading zeros below 1000
            parts.append(b"%s%d%s" % (head, a, tail))
            a += 1
        while a < b:
            p, s = divmod(a, g)
            e = min(b - p * g, g)  # suffixes s .. e-1 share the digits p
            pieces = self._full if s == 0 and e == g else [head, *self._mids[s:e - 1], self._lasts[e - 1]]
            parts.append((b"%d" % p).join(pieces))
            a = p * g + e

    def block(self, n: int, found: dict[int, dict[str, Any]], base: int) -> None:
        """Lines base+1 .. base+n; ``found`` maps 0-based block indices to probes."""
        parts: list[bytes] = []
        k = 0
        for i in sorted(found):
            if i > k:
                self._nulls(parts, base + k + 1, base + i + 1)
            text = "%s%d, \"probe\": %s}\n" % (self._probe_head, base + i + 1, self._dumps(found[i]))
            parts.append(text.encode(self._enc, self._errors))
            k = i + 1
        if n > k:
            self._nulls(parts, base + k + 1, base + n + 1)
        if parts:
            self._out.write(b"".join(parts))


def _probe_encoder() -> Any:
    """``json.dumps(o, ensure_ascii=False, default=str)``, built once:
    dumps makes a JSONEncoder per call when given options, and its encode()
    a C encoder (and a dict of ids for the circular check; a probe map is a
    tree) per call. CPython's C encoder is made once here; without it, the
    JSONEncoder is."""
    from json import encoder as je

    make = getattr(je, "c_make_encoder", None)
    if make is None:  # pragma: no cover - other Pythons
        return json.JSONEncoder(ensure_ascii=False, default=str).encode
    # (markers, default, encoder, indent, key sep, item sep, sort_keys,
    # skipkeys, allow_nan): json.JSONEncoder.iterencode's call for these options
    enc = make(None, str, je.encode_basestring, None, ": ", ", ", False, False, True)
    join = "".join
    return lambda o: join(enc(o, 0))


class _TextSink:
    """Bytes written to a text stream that has no byte stream under it."""

    __slots__ = ("_out",)

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def write(self, data: bytes) -> int:
        return self._out.write(data.decode("utf-8", "surrogatepass"))


def _binary(out: IO[str]) -> tuple[Any, str, str]:
    """(byte stream, encoding, errors) that write what ``out.write`` would:
    its own buffer when its encoding keeps ASCII as ASCII (the null lines are
    ASCII templates), else a sink that decodes back to text."""
    enc, errors = getattr(out, "encoding", None) or "utf-8", getattr(out, "errors", None) or "strict"
    buf = getattr(out, "buffer", None)
    try:
        ascii_ok = '{"line": 0}\n'.encode(enc) == b'{"line": 0}\n'
    except LookupError:
        ascii_ok = False
    if buf is not None and ascii_ok:
        out.flush()
        return buf, enc, errors
    return _TextSink(out), "utf-8", "surrogatepass"


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def _listener(info: _SourceInfo, fmt: str = "") -> tuple[str, list[str]]:
    tr = sorted(info.transports) or ["tcp", "udp"]
    named = sorted(info.inputs - {"rsyslogd"})
    if named:
        where = ", ".join(named)
    else:
        where = "a syslog network input (" + "/".join(t.upper() for t in tr) + "; this format does not name it)"
    how = []
    if fmt in decode.SYSLOG_NG_FORMATS:
        # syslog-ng's network()/syslog() sources (docs/collectors.md)
        how.append('bind the network()/syslog() source to a trusted address: network(ip("127.0.0.1") ...), '
                   "or firewall its ports (514/tcp and 514/udp by default) from untrusted networks")
        if "tcp" in tr:
            how.append('a syslog(transport("tcp")) source takes octet-counted frames only and logs no '
                       "probe byte over TCP; network() logs every line it is sent")
        return where, how
    if "tcp" in tr:
        how.append('bind imtcp to a trusted address: input(type="imtcp" address="127.0.0.1" ...), '
                   "or firewall its port (514/tcp by default) from untrusted networks")
    if "udp" in tr:
        how.append('bind imudp to a trusted address: input(type="imudp" address="127.0.0.1" ...), '
                   "or firewall its port (514/udp by default) from untrusted networks")
    if "tcp" in tr:
        # FIELD_GUIDE 1: a leading digit starts an octet count that eats bytes
        how.append('if every sender uses LF framing, supportOctetCountedFraming="off" on imtcp '
                   "keeps digits at a line start from swallowing the following bytes")
    return where, how


def _text_file(out: IO[str], rep: FileReport, first: bool, args: argparse.Namespace | None = None) -> None:
    """One file's text report (``_explain_report``)."""
    color = getattr(args, "color", "never")
    text_report(out, rep, first=first, width=report_width(out), color=use_color(color, out),
                listener=_listener, max_line=_MAX_LINE)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="probetag explain",
                                 description="Tell what scanner-probe lines in rsyslog output files are.",
                                 epilog="exit status: 0 when probe lines were found, 1 when none were, "
                                        "2 on an error (as grep)")
    ap.add_argument("files", nargs="+", metavar="FILE", help="syslog files ('-' = stdin; .gz is read too)")
    ap.add_argument("--format", choices=("text", "jsonl", "html"), default="text",
                    help="output: the report, one JSON object per line, or the report as one HTML page "
                         "(default: text)")
    ap.add_argument("-o", "--output", metavar="FILE",
                    help="write the output to FILE (default: stdout; html is not written to a terminal)")
    ap.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                    help="colour in the text report (default: auto, when the output is a terminal "
                         "and NO_COLOR is not set)")
    ap.add_argument("--input-format", choices=INPUT_FORMATS, default="auto",
                    help="how the files were written (default: detected per file)")
    ap.add_argument("-c", "--config", metavar="FILE", help="probetag config (detect/correlation settings)")
    ap.add_argument("--jobs", type=_positive, default=None, metavar="N",
                    help="processes: 2 reads and scans in one process while another detects and writes; 1 "
                         "does all in one (default: 2 when there are 2 or more CPUs and the input is at least "
                         f"{_PIPELINE_MIN_BYTES // (1024 * 1024)} MiB on disk, else 1; more than 2 is 2)")
    args = ap.parse_args(argv)
    try:
        config = load_config(args.config) if args.config else load_config(None)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.format == "html" and not args.output and sys.stdout.isatty():
        print("error: --format html writes a page: give --output FILE or redirect stdout", file=sys.stderr)
        return 2
    try:
        args.out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    except OSError as exc:
        print(f"error: {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, timestamps=False)
    log_start()
    args.found = 0
    args.html = _explain_html.Lines() if args.format == "html" else None
    try:
        failed = _run_pipeline(args, config) if _jobs(args) >= 2 else _run(args, config)
        if args.html is not None:
            _explain_html.write_html(args.out, args.html, listener=_listener, max_line=_MAX_LINE)
            args.out.flush()
        # grep's exit codes: 0 probes found, 1 none, 2 an error
        return 2 if failed else 0 if args.found else 1
    except BrokenPipeError:
        # the reader went away (``| head``): stop quietly, like other filters
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        if args.out is not sys.stdout:
            args.out.close()


def _output(args: argparse.Namespace, ex: Explainer) -> None:
    """Hook ``ex`` to the HTML report's collection when it is asked for."""
    lines = getattr(args, "html", None)
    if lines is not None:
        ex.on_probe = lines.file(ex.report.name, ex.fmt)


def _finished(args: argparse.Namespace, rep: FileReport) -> None:
    lines = getattr(args, "html", None)
    if lines is not None:
        lines.finish_file(rep)


def _run(args: argparse.Namespace, config: Config) -> int:
    out = getattr(args, "out", sys.stdout)
    detector = None
    status = 0
    several = len(args.files) > 1
    progress = Progress(sys.stderr, _input_bytes(args.files))
    for path in args.files:
        try:
            f = _open(path)
        except OSError as exc:
            print(f"error: {path}: {exc.strerror or exc}", file=sys.stderr)
            status = 1
            continue
        with f:
            try:
                first = _sniff(f)
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                # a file too damaged to find its format in
                print(f"error: {path}: {exc}", file=sys.stderr)
                status = 1
                continue
            fmt = args.input_format
            if fmt == "auto":
                fmt = decode.detect_file_format(first)
            ex = Explainer(config, fmt, path, detector)
            detector = ex.detector
            _output(args, ex)
            jsonl = _JsonlWriter(*_binary(out), path if several else None) if args.format == "jsonl" else None
            try:
                base = 0
                for data in _blocks(f, first, ex.report):
                    n, found = ex.block(data)
                    if jsonl is not None:
                        jsonl.block(n, found, base)
                    base += n
                    progress.update(len(data), path)
            except BrokenPipeError:
                raise
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                print(f"error: {path}: {exc}", file=sys.stderr)
                status = 1
            rep = ex.finish()
        _finished(args, rep)
        args.found += rep.probe_lines
        if args.format == "text":
            _text_file(out, rep, first=path is args.files[0], args=args)
    progress.close()
    out.flush()
    return status


# ------------------------------------------------------ --jobs 2: two processes
def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _input_bytes(paths: list[str]) -> int:
    """The input's size on disk, as far as it is known (0 for a pipe)."""
    total = 0
    for path in paths:
        try:
            st = os.fstat(0) if path == "-" else os.stat(path)
        except OSError:
            continue  # reported when it is opened
        if (st.st_mode & 0o170000) == 0o100000:  # a regular file
            total += st.st_size
    return total


def _jobs(args: argparse.Namespace) -> int:
    """1 or 2. The pipeline needs fork, and fork needs a process without
    threads (a thread's locks would be copied held): else it is 1."""
    if args.jobs is not None:
        n = args.jobs
    else:
        n = 2 if (os.cpu_count() or 1) >= 2 and _input_bytes(args.files) >= _PIPELINE_MIN_BYTES else 1
    if n >= 2 and (not hasattr(os, "fork") or threading.active_count() > 1):
        n = 1
    return min(n, 2)


_HEAD = struct.Struct("<I")


class _ReaderDied(Exception):
    """The reading process ended without saying it was done."""


def _run_pipeline(args: argparse.Namespace, config: Config) -> int:
    """``_run`` in two processes: a forked reading process opens each file,
    sniffs it, cuts its blocks (``_blocks``) and runs ``Explainer.scan`` and
    ``pick`` on them; this process gets per block only the line count, the
    framing-error count and ``pick``'s items and line indices (``marshal``,
    length-prefixed, through a pipe) and runs ``Explainer.detect`` and the
    output in block order. Both run the
    same functions as ``_run`` in the same order, so the output, messages
    and exit status are the same. Messages from the reading process:

    * ``("skip", message)``: the file could not be opened or sniffed;
    * ``("start", fmt)``, then ``("block", lines, framing errors, items,
      line indices)`` per block, then ``("end", cut lines, message or None)``;
    * ``("done",)`` after the last file, or ``("fail", traceback)``.

    The reading process never outlives this one: it dies with its parent
    (``PR_SET_PDEATHSIG`` where there is one; otherwise its next write
    fails), and it is killed and reaped when this function leaves early
    (``| head``, Ctrl-C, an error)."""
    out = getattr(args, "out", sys.stdout)
    # The compiled detector (most of the set-up) is built once, before the
    # fork: both processes start from it, the reading one for free.
    from .detect import build_detection

    detector = build_detection(config, Metrics())[0]
    if threading.active_count() > 1:  # pragma: no cover - set-up started a thread: no fork then
        return _run(args, config)
    out.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_BYTES)
    except (ImportError, OSError):
        pass  # the default pipe size only bounds the look-ahead more tightly
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child (tests/explain check it)
        os.close(r)
        _reader_main(w, args, config, parent, detector)
    os.close(w)
    done = False
    try:
        with open(r, "rb", buffering=_PIPE_BYTES) as rf:
            status = _detect_from(rf, args, config, pid, detector)
        done = True
        return status
    finally:
        _reap(pid, _CHILD_WAIT if done else 0.0)


def _reap(pid: int, wait: float) -> int | None:
    """Wait up to ``wait`` seconds for the child, then kill it -> its wait status."""
    deadline = time.monotonic() + wait
    while True:
        try:
            got, st = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if got:
            return st
        if time.monotonic() >= deadline:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                return os.waitpid(pid, 0)[1]
            except ChildProcessError:
                return None
        time.sleep(0.005)


def _receive(rf: Any, pid: int) -> tuple[Any, ...]:
    head = rf.read(_HEAD.size)
    if len(head) == _HEAD.size:
        (size,) = _HEAD.unpack(head)
        body = rf.read(size)
        if len(body) == size:
            return marshal.loads(body)  # type: ignore[no-any-return]
    st = _reap(pid, 1.0)
    if st is None:
        why = "it is gone"
    elif os.WIFSIGNALED(st):
        why = f"killed by signal {os.WTERMSIG(st)}"
    else:
        why = f"exit status {os.waitstatus_to_exitcode(st)}"
    raise _ReaderDied(f"the reading process ended before the end of the input ({why})")


def _detect_from(rf: Any, args: argparse.Namespace, config: Config, pid: int, detector: Any) -> int:
    """The detecting half of ``_run_pipeline``: ``_run``'s loop, fed by messages."""
    out = getattr(args, "out", sys.stdout)
    status = 0
    several = len(args.files) > 1
    progress = Progress(sys.stderr, _input_bytes(args.files))
    for path in args.files:
        try:
            msg = _receive(rf, pid)
        except _ReaderDied as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 1
        if msg[0] == "fail":
            raise RuntimeError("explain's reading process failed:\n" + msg[1])
        if msg[0] == "skip":
            print(msg[1], file=sys.stderr)
            status = 1
            continue
        ex = Explainer(config, msg[1], path, detector)
        detector = ex.detector
        _output(args, ex)
        jsonl = _JsonlWriter(*_binary(out), path if several else None) if args.format == "jsonl" else None
        base = 0
        died = None
        while True:
            try:
                msg = _receive(rf, pid)
            except _ReaderDied as exc:
                died = exc
                break
            if msg[0] != "block":
                break
            n, found = ex.detect(msg[1], msg[2], msg[3], msg[4])
            if jsonl is not None:
                jsonl.block(n, found, base)
            base += n
            progress.update(msg[5], path)
        if died is not None:
            print(f"error: {path}: {died}", file=sys.stderr)
            status = 1
        elif msg[0] == "fail":
            raise RuntimeError("explain's reading process failed:\n" + msg[1])
        else:
            ex.report.cut_lines = msg[1]
            if msg[2] is not None:
                print(msg[2], file=sys.stderr)
                status = 1
        rep = ex.finish()
        _finished(args, rep)
        args.found += rep.probe_lines
        if args.format == "text":
            _text_file(out, rep, first=path is args.files[0], args=args)
        if died is not None:
            break  # nothing reads the files after it
    progress.close()
    out.flush()
    return status


def _reader_main(w: int, args: argparse.Namespace, config: Config, parent: int,
                 detector: Any) -> None:  # pragma: no cover
    """The reading process of ``_run_pipeline``; never returns."""
    code = 0
    try:
        # Ctrl-C reaches the whole process group: the parent handles it
        # and kills this process.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            import ctypes

            # Linux: die with the parent, even when blocked reading stdin
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:
            os._exit(1)
        # only the parent writes output; a reader of it waits for every copy
        # of the descriptor to close
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
        with open(w, "wb", buffering=_PIPE_BYTES) as wf:
            def send(msg: tuple[Any, ...]) -> None:
                body = marshal.dumps(msg)
                wf.write(_HEAD.pack(len(body)))
                wf.write(body)

            try:
                _read_files(send, wf, args, config, detector)
            except BrokenPipeError:
                raise
            except Exception:
                send(("fail", traceback.format_exc()))
                code = 1
            wf.flush()
    except BrokenPipeError:
        code = 1  # the parent went away
    except BaseException:  # noqa: BLE001 - a child must not unwind into the parent's code
        code = 1
    finally:
        os._exit(code)


def _read_files(send: Any, wf: Any, args: argparse.Namespace, config: Config,
                detector: Any) -> None:  # pragma: no cover
    """``_run``'s loop up to ``Explainer.pick``, for the reading process."""
    for path in args.files:
        try:
            f = _open(path)
        except OSError as exc:
            send(("skip", f"error: {path}: {exc.strerror or exc}"))
            continue
        with f:
            try:
                first = _sniff(f)
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                send(("skip", f"error: {path}: {exc}"))
                continue
            fmt = args.input_format
            if fmt == "auto":
                fmt = decode.detect_file_format(first)
            send(("start", fmt))
            wf.flush()  # the parent sets up its detector meanwhile
            ex = Explainer(config, fmt, path, detector)
            err = None
            try:
                for data in _blocks(f, first, ex.report):
                    n, framing, picked = ex.scan(data)
                    send(("block", n, framing, *ex.pick(picked), len(data)))
                    wf.flush()
            except BrokenPipeError:
                raise
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                err = f"error: {path}: {exc}"
            send(("end", ex.report.cut_lines, err))
            wf.flush()
    send(("done",))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
