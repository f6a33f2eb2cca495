"""``probetag explain FILE...``: what are these syslog lines?

Theory of operation
-------------------
* Input is rsyslog output files (``-`` is stdin; gzip is recognised by its
  magic bytes). The format is detected once per file from its first lines
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

* rsyslog's own "Framing Error" / "Incomplete frame" lines are counted
  (they mean octet counting ate the start of some bytes) and never tagged. A
  "line" longer than ``_MAX_LINE`` without LF is cut and counted.

* Output: ``jsonl`` is one object per input line, in order:
  ``{"line": N, "probe": {...}}`` or ``{"line": N, "probe": null}`` (N is
  1-based per file; ``"file"`` is added when several files are given).
  ``text`` is a per-source summary (scanner, probes, first/last seen, lines,
  the listener that received them and how to close it) and a count of the
  other lines, from the correlator's scan summaries.
* Each file gets its own correlator: correlation runs on event time, and two
  files are two time lines. The compiled detector is shared.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, Iterator

from . import decode
from ._config import Config, ConfigError, load_config
from ._metrics import Metrics

__all__ = ["main", "Explainer", "FileReport", "INPUT_FORMATS"]

INPUT_FORMATS = ("auto", *decode.FORMATS)
#: Bytes read per block (whole lines). Bounded memory: one block at a time.
_BLOCK = 4 * 1024 * 1024
#: A single line longer than this is cut (and counted): rsyslog's own
#: maximum message size is 8 KiB by default, so only garbage gets here.
_MAX_LINE = 1024 * 1024
#: Lines the format detection looks at.
_SNIFF_LINES = 200

#: rsyslog's internal messages when octet counting meets a non-syslog client
_FRAMING_MARKERS = (b"Framing Error in received TCP message", b"Incomplete frame at end of stream")



def _count_lines_with(data: bytes, markers: tuple[bytes, ...]) -> int:
    """How many lines of ``data`` contain one of ``markers`` (rare: found with
    bytes.find, then one line counted once even if it holds several)."""
    offs = []
    for m in markers:
        i = data.find(m)
        while i >= 0:
            offs.append(i)
            i = data.find(m, i + len(m))
    if not offs:
        return 0
    offs.sort()
    lines, pos, idx, last = 0, 0, 0, -1
    for off in offs:
        idx += data.count(b"\n", pos, off)
        pos = off
        if idx != last:
            lines += 1
            last = idx
    return lines


_MONTHS = {m.encode(): i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def _json_escaped(fragment: bytes) -> bytes:
    # rsyslog's jsonf/json property formats escape these three (FIELD_GUIDE 3)
    return fragment.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"/", b"\\/")


@dataclass(slots=True)
class _SourceInfo:
    transports: set[str] = field(default_factory=set)
    inputs: set[str] = field(default_factory=set)


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

    @property
    def benign_lines(self) -> int:
        return self.lines - self.probe_lines - self.framing_errors


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
        if fmt in ("json", "auto"):
            frags = prefilter_fragments(det, config.detect.escapes)
            pre = Prefilter(sorted(set(frags) | {_json_escaped(f) for f in frags}), det.backend)
        self.prefilter = pre
        self.output_field = config.detect.output_field
        self.report = FileReport(name, fmt)
        self._tcache: dict[bytes, float] = {}
        self._last_t = 0.0
        self._year = datetime.now().year

    # -- event time ----------------------------------------------------------
    def _time(self, sl: decode.SyslogLine) -> float:
        ts = sl.time
        if not ts:
            return self._last_t
        key = ts.encode() if isinstance(ts, str) else ts
        t = self._tcache.get(key)
        if t is None:
            t = self._parse_time(key)
            if len(self._tcache) > 100_000:
                self._tcache.clear()
            self._tcache[key] = t
        if t != t or t <= 0:  # unparsable: keep the previous line's time
            return self._last_t
        self._last_t = t
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
    def block(self, data: bytes) -> tuple[int, dict[int, dict[str, Any]]]:
        """``data``: whole lines joined by LF (no final LF) -> (number of
        lines, {0-based line index: probe map}) for the lines that are probes.

        Only lines the prefilter hits are split out and decoded; the others
        are never touched one by one (that is what makes big files fast)."""
        rep = self.report
        n = data.count(b"\n") + 1
        rep.lines += n
        # rsyslog's own complaints about bytes a client sent (FIELD_GUIDE 1):
        # counted here, whatever the prefilter thinks of them
        rep.framing_errors += _count_lines_with(data, _FRAMING_MARKERS)
        found: dict[int, dict[str, Any]] = {}
        hits = self.prefilter.literals.find(data)
        if not hits:
            return n, found
        items: list[tuple[float, dict[Any, Any]]] = []
        where: list[int] = []
        idx, pos, last = 0, 0, -1
        for off, _ in hits:  # sorted by offset
            idx += data.count(b"\n", pos, off)
            pos = off
            if idx == last:
                continue
            last = idx
            start = data.rfind(b"\n", 0, off) + 1
            end = data.find(b"\n", off)
            sl = decode.parse_syslog_line(data[start:end if end >= 0 else len(data)], self.fmt)
            if sl.tag == b"rsyslogd:" and any(m in sl.msg for m in _FRAMING_MARKERS):
                continue  # rsyslog's own line, counted above; never a probe
            items.append((self._time(sl), sl.record))
            where.append(idx)
        if not items:
            return n, found
        for k, d in enumerate(self.enricher.batch("explain", items)):
            if d is None or d.outcome != "tagged":
                continue
            probe = d.record.get(self.output_field)
            if not isinstance(probe, dict):
                continue
            found[where[k]] = probe
            rep.probe_lines += 1
            src = str(probe.get("source") or "-")
            info = rep.sources.setdefault(src, _SourceInfo())
            if probe.get("transport"):
                info.transports.add(str(probe["transport"]))
            inp = items[k][1].get("inputname")
            if inp:
                info.inputs.add(inp.decode("utf-8", "replace") if isinstance(inp, bytes) else str(inp))
        return n, found

    def finish(self) -> FileReport:
        self.report.summaries = self.correlator.flush()
        return self.report


# ---------------------------------------------------------------- file I/O
def _open(path: str) -> IO[bytes]:
    raw: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[arg-type,type-var]
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=buffered)  # type: ignore[return-value]
    return buffered


def _blocks(f: IO[bytes], first: list[bytes], report: FileReport) -> Iterator[bytes]:
    """Blocks of whole lines joined by LF, without the last LF. A block is
    one detection batch, and a connection's lines split across two batches
    lose the look-ahead (a request line and its lone CR), so the sniffed
    ``first`` lines open the first block rather than making one of their
    own, and a last line without LF joins the block before it. (One block
    is held back for that: memory stays at two blocks.)"""
    rest = b"\n".join(first) + b"\n" if first else b""
    held: bytes | None = None
    while True:
        data = f.read(_BLOCK)
        if not data:
            break
        data = rest + data
        cut = data.rfind(b"\n")
        if cut < 0:
            if len(data) > _MAX_LINE:
                report.cut_lines += 1
                if held is not None:
                    yield held
                held, rest = data[:_MAX_LINE], b""
            else:
                rest = data
            continue
        rest = data[cut + 1:]
        if held is not None:
            yield held
        held = data[:cut]
    if rest.endswith(b"\n"):
        rest = rest[:-1]  # only the sniffed lines, nothing after them
        if held is None:
            yield rest
            return
    elif rest:
        held = rest if held is None else held + b"\n" + rest
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
_NULL = '{"line": %d, "probe": null}'
_NULL_FILE = '{"file": %s, "line": %d, "probe": null}'


def _jsonl(out: IO[str], n: int, found: dict[int, dict[str, Any]], base: int, fname: str | None) -> None:
    """Lines base+1 .. base+n; ``found`` maps 0-based block indices to probes."""
    parts: list[str] = []
    fq = json.dumps(fname) if fname is not None else None
    nulls = _NULL.__mod__ if fq is None else (lambda k: _NULL_FILE % (fq, k))
    k = 0
    for i in sorted(found):
        if i > k:
            parts.append("\n".join(map(nulls, range(base + k + 1, base + i + 1))))
        obj = {"line": base + i + 1, "probe": found[i]}
        if fname is not None:
            obj = {"file": fname, **obj}
        parts.append(json.dumps(obj, ensure_ascii=False, default=str))
        k = i + 1
    if n > k:
        parts.append("\n".join(map(nulls, range(base + k + 1, base + n + 1))))
    if parts:
        out.write("\n".join(parts) + "\n")


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def _listener(info: _SourceInfo) -> tuple[str, list[str]]:
    tr = sorted(info.transports) or ["tcp", "udp"]
    named = sorted(info.inputs - {"rsyslogd"})
    if named:
        where = ", ".join(named)
    else:
        where = "a syslog network input (" + "/".join(t.upper() for t in tr) + "; this format does not name it)"
    how = []
    if "tcp" in tr:
        how.append('bind imtcp to a trusted address: input(type="imtcp" address="127.0.0.1" ...), '
                   "or firewall its port (514/tcp by default) from untrusted networks")
    if "udp" in tr:
        how.append('bind imudp the same way: input(type="imudp" address=...), or firewall 514/udp')
    if "tcp" in tr:
        # FIELD_GUIDE 1: a leading digit starts an octet count that eats bytes
        how.append('if every sender uses LF framing, supportOctetCountedFraming="off" on imtcp '
                   "keeps digits at a line start from swallowing the following bytes")
    return where, how


def _text(out: IO[str], rep: FileReport) -> None:
    sources = {s["source"] for s in rep.summaries}
    out.write(f"{rep.name}: {rep.lines} lines ({rep.fmt} format)\n")
    out.write(f"  {rep.probe_lines} scanner-probe lines from {len(sources)} source(s), "
              f"{rep.benign_lines} other (benign) lines")
    if rep.framing_errors:
        out.write(f", {rep.framing_errors} rsyslog framing-error lines")
    out.write("\n")
    for s in sorted(rep.summaries, key=lambda s: (s["first_seen"], s["source"])):
        info = rep.sources.get(s["source"], _SourceInfo())
        where, how = _listener(info)
        scanners = ", ".join(s.get("scanners") or [s.get("scanner") or "?"])
        src = s["source"] if s["source"] != "-" else "sender unknown (the file does not record it)"
        out.write(f"\n  {src}: {scanners}\n")
        out.write(f"    {s['lines']} lines, {len(s['probes'])} distinct probes, "
                  f"first seen {_ts(s['first_seen'])}, last seen {_ts(s['last_seen'])}\n")
        probes = sorted(s["probes"].items(), key=lambda kv: (-kv[1], kv[0]))
        out.write("    probes: " + ", ".join(f"{p} x{c}" for p, c in probes) + "\n")
        out.write(f"    received by: {where}\n")
        out.write("    to close it:\n")
        for h in how:
            out.write(f"      - {h}\n")
    if rep.cut_lines:
        out.write(f"  {rep.cut_lines} over-long lines were cut at {_MAX_LINE} bytes\n")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="probetag explain",
                                 description="Tell what scanner-probe lines in rsyslog output files are.")
    ap.add_argument("files", nargs="+", metavar="FILE", help="syslog files ('-' = stdin; .gz is read too)")
    ap.add_argument("--format", choices=("text", "jsonl"), default="text", help="output (default: text)")
    ap.add_argument("--input-format", choices=INPUT_FORMATS, default="auto",
                    help="how the files were written (default: detected per file)")
    ap.add_argument("-c", "--config", metavar="FILE", help="probetag config (detect/correlation settings)")
    args = ap.parse_args(argv)
    try:
        config = load_config(args.config) if args.config else load_config(None)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return _run(args, config)
    except BrokenPipeError:
        # the reader went away (``| head``): stop quietly, like other filters
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _run(args: argparse.Namespace, config: Config) -> int:
    out = sys.stdout
    detector = None
    status = 0
    several = len(args.files) > 1
    for path in args.files:
        try:
            f = _open(path)
        except OSError as exc:
            print(f"error: {path}: {exc.strerror or exc}", file=sys.stderr)
            status = 1
            continue
        with f:
            first = _sniff(f)
            fmt = args.input_format
            if fmt == "auto":
                fmt = decode.detect_file_format(first)
            ex = Explainer(config, fmt, path, detector)
            detector = ex.detector
            try:
                base = 0
                for data in _blocks(f, first, ex.report):
                    n, found = ex.block(data)
                    if args.format == "jsonl":
                        _jsonl(out, n, found, base, path if several else None)
                    base += n
            except BrokenPipeError:
                raise
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                print(f"error: {path}: {exc}", file=sys.stderr)
                status = 1
            rep = ex.finish()
        if args.format == "text":
            if several and path is not args.files[0]:
                out.write("\n")
            _text(out, rep)
    out.flush()
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
