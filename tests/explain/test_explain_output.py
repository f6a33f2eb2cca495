"""``probetag explain``'s fast paths against straightforward references.

explain reads blocks in place, counts LFs from hit line to hit line and
writes the null lines of ``--format jsonl`` in groups of 1000 without
formatting them one by one. Each of these is checked here against the
plain way of doing the same thing:

* ``_JsonlWriter`` against ``json.dumps`` of every line's object;
* ``_blocks`` against the original cut (read ``_BLOCK`` bytes, cut at the
  last LF, hold one block back), with short reads and tiny blocks;
* ``Explainer.block`` against a line-by-line reference (split every line,
  line index = number of LFs before the hit), on real probe lines, including
  a literal that spans a LF;
* the CLI's whole output against the reference pipeline, on the golden
  fixtures and odd files (CRLF, no final LF, invalid UTF-8, NUL, empty lines,
  several files, gzip, stdin).
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import os
import re
import subprocess
import sys
import types
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probetag import _explain_read, _explain_scan, decode, explain
from probetag._config import load_config
from probetag.detect import Prefilter, available_backends

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "rsyslog"
sys.path.insert(0, str(ROOT / "bench"))

import bench_explain  # noqa: E402

CONFIG = load_config(None)
_DETECTOR: list[Any] = []


def _explainer(fmt: str, name: str = "-") -> explain.Explainer:
    ex = explain.Explainer(CONFIG, fmt, name, _DETECTOR[0] if _DETECTOR else None)
    _DETECTOR[:] = [ex.detector]
    return ex


def _spy(ex: explain.Explainer) -> list[tuple[float, dict[str, Any]]]:
    """Every (event time, record) ``ex`` hands to detection, in order."""
    seen: list[tuple[float, dict[str, Any]]] = []
    batch = ex.enricher.batch

    def spy(name: str, items: list[tuple[float, dict[str, Any]]], pre: Any = None) -> Any:
        seen.extend(items)
        return batch(name, items, pre)

    ex.enricher.batch = spy  # type: ignore[method-assign]
    return seen


# ----------------------------------------------------------- references
def ref_blocks(f: Any, first: list[bytes], report: explain.FileReport) -> Iterator[bytes]:
    """The original block cut: ``f.read(_BLOCK)``, cut at the last LF; a
    read with no LF past ``_MAX_LINE`` is a line cut there, and the rest of
    that line, up to its LF, is dropped."""
    report.cut_lines += getattr(first, "cut", 0)
    rest = b"\n".join(first) + b"\n" if first else b""
    held: bytes | None = None
    skip = False
    while True:
        data = f.read(_explain_read._BLOCK)
        if not data:
            break
        data = rest + data
        if skip:
            lf = data.find(b"\n")
            if lf < 0:
                rest = b""
                continue
            skip, data = False, data[lf + 1:]
        cut = data.rfind(b"\n")
        if cut < 0:
            if len(data) > _explain_read._MAX_LINE:
                report.cut_lines += 1
                if held is not None:
                    yield held
                held, rest, skip = data[:_explain_read._MAX_LINE], b"", True
            else:
                rest = data
            continue
        rest = data[cut + 1:]
        if held is not None:
            yield held
        held = data[:cut]
    if rest.endswith(b"\n"):
        rest = rest[:-1]
        if held is None:
            yield rest
            return
    elif rest:
        held = rest if held is None else held + b"\n" + rest
    if held is not None:
        yield held


def ref_time(ex: explain.Explainer, sl: decode.SyslogLine) -> float:
    """The line's time from its whole stamp, uncached; an unparsable or
    missing one keeps the previous line's."""
    t = ex._parse_time(sl.time.encode()) if sl.time else float("nan")
    if t != t or t <= 0:
        return ex._last_t
    ex._last_t = t
    return t


def ref_block(ex: explain.Explainer, data: bytes) -> tuple[int, dict[int, dict[str, Any]]]:
    """Every line split out; a line is hit when a literal starts in it or
    on its LF; then the same detection calls as ``Explainer.block``."""
    rep = ex.report
    lines = data.split(b"\n")
    rep.lines += len(lines)
    rep.framing_errors += sum(1 for ln in lines if any(m in ln for m in explain._FRAMING_MARKERS))
    found_lits = ex.prefilter.literals.find(data)
    hit_set = {data.count(b"\n", 0, off) for off, _ in found_lits}
    # the lines around a line a strong (not only CR) literal hit are read too
    strong = {data.count(b"\n", 0, off) for off, pid in found_lits if pid not in ex.prefilter.weak_ids}
    # (in the plain-header formats only short ones and ones that hold the
    # strong line's HOSTNAME word)
    host_at = 16 if ex.fmt == "traditional" else 0 if ex.fmt == "rfc3339" else -1
    lit_hit = set(hit_set)
    for i in strong:
        needle = explain._host_word(lines[i], host_at)[1] if host_at >= 0 else b""
        for j in range(i - _explain_scan._NEIGHBOURS_BEFORE, i + _explain_scan._NEIGHBOURS_AFTER + 1):
            if not 0 <= j < len(lines) or j in lit_hit:
                continue
            if host_at >= 0:
                h, host = explain._host_word(lines[j], host_at)
                if re.match(rb"[A-Za-z0-9_./-]{1,48}\[[0-9]{1,10}\]: \S", lines[j][h + len(host) + 1:]):
                    continue  # a daemon's own line
                if len(lines[j]) - h > explain._NEIGHBOUR_REST and not (needle and needle in lines[j][h:]):
                    continue
            hit_set.add(j)
    hit = sorted(hit_set)
    items, where = [], []
    for i in hit:
        sl = decode.parse_syslog_line(lines[i], ex.fmt)
        if sl.tag == b"rsyslogd:" and any(m in sl.msg for m in explain._FRAMING_MARKERS):
            continue
        items.append((ref_time(ex, sl), sl.record))
        where.append(i)
    found: dict[int, dict[str, Any]] = {}
    for k, d in enumerate(ex.enricher.batch("explain", items) if items else []):
        if d is None or d.outcome != "tagged":
            continue
        probe = d.record.get(ex.output_field)
        if isinstance(probe, dict):
            found[where[k]] = probe
            rep.probe_lines += 1
    return len(lines), found


def _no_match(got: Any) -> bool:
    return got is None or not got[0].matches


def ref_jsonl(n: int, found: dict[int, Any], base: int, fname: str | None) -> str:
    """One ``json.dumps`` per line. Probe lines keep non-ASCII text as is
    (``ensure_ascii=False``); null lines have always been written with the
    defaults, which escape a non-ASCII file name."""
    out = []
    for i in range(n):
        obj: dict[str, Any] = {"line": base + i + 1, "probe": found.get(i)}
        if fname is not None:
            obj = {"file": fname, **obj}
        if i in found:
            out.append(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
        else:
            out.append(json.dumps(obj) + "\n")
    return "".join(out)


def ref_explain_jsonl(paths: list[Path], stdin: bytes | None = None) -> bytes:
    """``probetag explain --format jsonl PATHS`` the plain way (UTF-8 out)."""
    out = []
    for path in paths:
        raw = stdin if str(path) == "-" else path.read_bytes()
        if raw is not None and raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        f = io.BytesIO(raw)
        first = explain._sniff(f)
        ex = _explainer(decode.detect_file_format(first), str(path))
        base = 0
        for data in ref_blocks(f, first, ex.report):
            n, found = ref_block(ex, data)
            out.append(ref_jsonl(n, found, base, str(path) if len(paths) > 1 else None))
            base += n
    return "".join(out).encode("utf-8", "surrogateescape")


# ------------------------------------------------------ the jsonl writer
_PROBE = st.fixed_dictionaries({
    "name": st.text(max_size=12),
    "confidence": st.floats(),  # NaN and infinities too: json writes NaN, Infinity
    "source": st.one_of(st.none(), st.text(max_size=8)),
    "evidence": st.binary(max_size=6),  # not JSON: default=str writes it
    "lines": st.lists(st.one_of(st.integers(), st.booleans(), st.dictionaries(st.text(max_size=3), st.none())),
                      max_size=3),
})
_BASES = st.sampled_from([0, 1, 7, 990, 998, 999, 1000, 1001, 9_990, 99_999, 123_456, 9_999_000])


@settings(max_examples=150, deadline=None)
@given(base=_BASES, n=st.integers(0, 2500), picks=st.lists(st.integers(0, 2499), max_size=8),
       probe=_PROBE, fname=st.one_of(st.none(), st.text(max_size=10)))
def test_jsonl_writer_is_json_dumps_per_line(base: int, n: int, picks: list[int], probe: dict[str, Any],
                                              fname: str | None) -> None:
    found = {i: {**probe, "i": i} for i in picks if i < n}
    buf = io.BytesIO()
    w = explain._JsonlWriter(buf, "utf-8", "surrogateescape", fname)
    w.block(n, found, base)
    w.block(3, {1: probe}, base + n)  # the numbering goes on across blocks
    want = ref_jsonl(n, found, base, fname) + ref_jsonl(3, {1: probe}, base + n, fname)
    assert buf.getvalue() == want.encode("utf-8", "surrogateescape")


def test_jsonl_writer_every_group_boundary() -> None:
    # every number from 1 to 25,001 in ranges cut at awkward places
    buf = io.BytesIO()
    w = explain._JsonlWriter(buf, "utf-8", "strict", None)
    want, base = [], 0
    for n in (1, 998, 1, 1000, 1001, 7, 993, 2000, 19_000):
        w.block(n, {}, base)
        want.append(ref_jsonl(n, {}, base, None))
        base += n
    assert buf.getvalue() == "".join(want).encode()
    assert buf.getvalue().count(b"\n") == base == 25_001


def test_jsonl_writer_on_a_text_stream_without_buffer() -> None:
    # explain called with sys.stdout replaced by a StringIO still writes text
    out = io.StringIO()
    sink, enc, errors = explain._binary(out)
    w = explain._JsonlWriter(sink, enc, errors, "f\u00e9\"\\.log")
    w.block(1002, {3: {"name": "caf\u00e9 \udcff"}}, 0)
    assert out.getvalue() == ref_jsonl(1002, {3: {"name": "caf\u00e9 \udcff"}}, 0, "f\u00e9\"\\.log")


# ------------------------------------------------------------ event time
_EX_TIME: list[explain.Explainer] = []
_STAMP = st.tuples(st.sampled_from([1, 1969, 1970, 2026, 2038, 9999]), st.integers(0, 13), st.integers(0, 32),
                   st.integers(0, 24), st.integers(0, 60), st.integers(0, 60),
                   st.text("0123456789", min_size=0, max_size=8),
                   st.sampled_from(["Z", "+00:00", "-05:30", "+14:00", "-23:59", "+24:00", ""]))


@settings(max_examples=600, deadline=None)
@given(stamp=_STAMP)
def test_time_of_a_stamp_is_its_plain_parse(stamp: tuple[int, int, int, int, int, int, str, str]) -> None:
    # the per-second cache gives the float datetime.timestamp() gives
    y, mo, d, h, mi, sec, frac, tz = stamp
    ts = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{sec:02d}{'.' if frac else ''}{frac}{tz}"
    if not _EX_TIME:  # one explainer for every example: its cache fills up as in a file
        _EX_TIME.append(_explainer("rfc3339"))
    ex = _EX_TIME[0]
    sl = decode.SyslogLine("rfc3339", ts, None, b"", b"", {}, False)
    ex._last_t = ref_last = 12.5
    got = ex._time(sl)
    ex._last_t = ref_last
    want = ref_time(ex, sl)
    assert got == want or (got != got and want != want), ts


# ------------------------------------------------------------ the blocks
class _Trickle(io.RawIOBase):
    """A raw stream that returns at most ``step`` bytes per read (a pipe)."""

    def __init__(self, data: bytes, step: int) -> None:
        self._f, self._step = io.BytesIO(data), step

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        chunk = self._f.read(min(len(b), self._step))
        b[:len(chunk)] = chunk
        return len(chunk)


_LINE = st.one_of(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
                  st.sampled_from([b"", b"\r", b"x" * 70, b"y" * 140]))


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(_LINE, max_size=40), final_lf=st.booleans(), block=st.integers(1, 90),
       max_line=st.integers(1, 100), sniff=st.integers(0, 6), step=st.integers(1, 50))
def test_blocks_cut_where_the_original_cut(lines: list[bytes], final_lf: bool, block: int,
                                           max_line: int, sniff: int, step: int) -> None:
    data = b"\n".join(lines) + (b"\n" if final_lf and lines else b"")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_explain_read, "_BLOCK", block)
        mp.setattr(_explain_read, "_MAX_LINE", max_line)
        mp.setattr(_explain_read, "_SNIFF_LINES", sniff)
        want_rep = explain.FileReport("ref")
        f = io.BytesIO(data)
        want = list(ref_blocks(f, explain._sniff(f), want_rep))
        for reader in (io.BufferedReader(io.BytesIO(data)), io.BufferedReader(_Trickle(data, step), 16)):
            got_rep = explain.FileReport("new")
            got = [bytes(b) for b in explain._blocks(reader, explain._sniff(reader), got_rep)]
            assert got == want
            assert got_rep.cut_lines == want_rep.cut_lines
    # Whatever the cuts: line k read is a prefix of line k of the file (no
    # line is lost, split or numbered anew), and each one shorter is counted.
    file_lines = data.split(b"\n") if data else []
    if data.endswith(b"\n"):
        file_lines.pop()
    read = b"\n".join(want).split(b"\n") if want else []
    assert len(read) == len(file_lines)
    assert all(line.startswith(r) for r, line in zip(read, file_lines))
    assert want_rep.cut_lines == sum(len(r) < len(line) for r, line in zip(read, file_lines))


# ------------------------------------------------- hit lines and detection
def _generated(tmp_path: Path) -> bytes:
    path = tmp_path / "gen.log"
    bench_explain.generate(path, 0.3, probe_rate=0.05, seed=5, pool=60)
    return path.read_bytes()


def _lf_spanning(ex: explain.Explainer) -> bytes:
    """Two lines joined by a prefilter literal that holds a LF (raw HTTP
    request fragments do): the hit belongs to the first line."""
    lit = next(p for p in ex.prefilter.literals.patterns if b"\n" in p[1:-1])
    k = lit.index(b"\n")
    return (b"2026-11-27T10:00:00.000001+00:00 host app: x " + lit[:k] + b"\n" + lit[k + 1:]
            + b" tail\n2026-11-27T10:00:00.000002+00:00 host app: plain line\n")


@pytest.mark.parametrize("block", [200, 4096, 1 << 22])
@pytest.mark.parametrize("source", ["traditional.log", "rfc3339.log", "rfc5424.log", "json.log", "generated"])
def test_block_equals_line_by_line_reference(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             source: str, block: int) -> None:
    monkeypatch.setattr(_explain_read, "_BLOCK", block)
    monkeypatch.setattr(_explain_read, "_SNIFF_LINES", 20)  # the fixtures are ~100 lines
    raw = _generated(tmp_path) if source == "generated" else (FIX / source).read_bytes()
    fmt = decode.detect_file_format(raw.split(b"\n")[:200])
    new, ref = _explainer(fmt), _explainer(fmt)
    if fmt == "rfc3339":
        raw = _lf_spanning(new) + raw
    f = io.BufferedReader(io.BytesIO(raw))
    first = explain._sniff(f)
    blocks = [bytes(b) for b in explain._blocks(f, first, new.report)]
    assert len(blocks) > (1 if block < 4096 else 0)
    seen_new, seen_ref = _spy(new), _spy(ref)
    for data in blocks:
        assert new.block(bytearray(data)) == ref_block(ref, data)
    # A line hit only by a CR escape, with other text beside it, reaches
    # detection as an empty record in its place (``Explainer.pick``): the
    # line itself would have read as nothing. (Its time is never read.)
    assert len(seen_new) == len(seen_ref) > 10
    for (t, got), (t_ref, want) in zip(seen_new, seen_ref):
        # a skipped line is one whose reading can match nothing
        assert (got, t) == (want, t_ref) or (got == {} and _no_match(ref.enricher.analyse(want))), want
    a, b = new.finish(), ref.finish()
    assert (a.lines, a.probe_lines, a.framing_errors) == (b.lines, b.probe_lines, b.framing_errors)
    assert a.summaries == b.summaries
    assert a.lines == raw.count(b"\n") and a.probe_lines > 0
    if fmt == "rfc3339":  # the literal across the LF picked its first line
        lit_hits = {data.count(b"\n", 0, off) for off, _ in new.prefilter.literals.find(blocks[0])}
        assert 0 in lit_hits


def test_cr_lines_skipped_without_changing_a_verdict(tmp_path: Path) -> None:
    """30 % of the benign lines end in #015 or hold #011 (a CRLF forwarder,
    TAB-separated appliance fields): those with text beside the CR are not
    decoded, and every line's verdict is the one a full decode gives."""
    path = tmp_path / "crtab.log"
    counts = bench_explain.generate(path, 0.4, probe_rate=0.02, seed=5, pool=400, crtab=0.3)
    raw = path.read_bytes()
    assert raw.count(b"#015") > counts["lines"] // 10 and b"#011" in raw
    out = {}
    for skip in (True, False):
        ex = _explainer("rfc3339", str(path))
        ex.skip_weak = skip
        lines, found = 0, {}
        f = io.BufferedReader(io.BytesIO(raw))
        for data in explain._blocks(f, explain._sniff(f), ex.report):
            n, hits = ex.block(data)
            found.update({lines + k: v for k, v in hits.items()})
            lines += n
        rep = ex.finish()
        out[skip] = (lines, found, rep.probe_lines, rep.summaries, ex.weak_skipped)
    assert out[True][:4] == out[False][:4] and out[True][2] > 0
    assert out[True][4] > counts["lines"] // 10 and out[False][4] == 0


@pytest.mark.parametrize("backend", available_backends())
def test_hits_on_and_across_a_lf(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Literals that start on a LF or hold one: the hit belongs to the line
    # the literal starts in (a LF ends its line). Benign otherwise, so what
    # is compared is the lines handed to detection (the lines around a hit,
    # read too in real use, are left out here).
    monkeypatch.setattr(_explain_scan, "_NEIGHBOURS_BEFORE", 0)
    monkeypatch.setattr(_explain_scan, "_NEIGHBOURS_AFTER", 0)
    frags = [b"\nzz", b"q\nr", b"GET / HTTP/1.0#015", b"#015"]
    lines = [
        b"Nov 27 10:00:00 h app: ends q",  # 0: q LF r starts here
        b"rest of it",
        b"Nov 27 10:00:01 h app: plain",  # 2: LF zz starts on its LF
        b"zz starts",
        b"Nov 27 10:00:02 h app: GET / HTTP/1.0#015",  # 4: two literals, one line
        b"Nov 27 10:00:02 h app: #015",  # 5: a literal, and LF zz on its LF
        b"zz and r",
        b"Nov 27 10:00:03 h app: ends q",  # 7
        b"r",
        b"Nov 27 10:00:04 h app: last",  # 9: the last hit, on its LF
        b"zz",
    ]
    data = b"\n".join(lines)
    new, ref = _explainer("traditional"), _explainer("traditional")
    ref.prefilter = Prefilter(frags, backend)
    new.use_prefilter(ref.prefilter)
    seen_new, seen_ref = _spy(new), _spy(ref)
    assert new.block(bytearray(data)) == ref_block(ref, data)
    assert seen_new == seen_ref
    records = [decode.parse_syslog_line(ln, "traditional").record for ln in lines]
    assert [records.index(r) for _, r in seen_new] == [0, 2, 4, 5, 7, 9]
    assert new.report.lines == len(lines)


# ----------------------------------------------------------------- the CLI
def _cli(*args: str, stdin: bytes | None = None, jobs: str = "1") -> bytes:
    p = subprocess.run([sys.executable, "-m", "probetag", "explain", "--jobs", jobs, "--format", "jsonl", *args],
                       input=stdin, capture_output=True, timeout=120,
                       env={**os.environ, "PYTHONIOENCODING": "utf-8:surrogateescape"})
    # grep's exit codes: 0 probes found, 1 none
    assert p.returncode == (0 if b'"probe": {' in p.stdout else 1), p.stderr.decode(errors="replace")
    return p.stdout


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_cli_output_equals_reference_pipeline(tmp_path: Path, jobs: str) -> None:
    _cli = functools.partial(globals()["_cli"], jobs=jobs)
    golden = (FIX / "rfc3339.log").read_bytes()
    odd = {
        "crlf.log": golden.replace(b"\n", b"\r\n"),
        "no-final-lf.log": golden.rstrip(b"\n"),
        "junk.log": b"\n\xff\xfe binary \x00 junk\n\n" + golden[:5000] + b"\xc3\x28 bad utf-8\nlast",
        "empty.log": b"",
        "only-lf.log": b"\n\n\n",
        "generated.log": _generated(tmp_path),
    }
    for name, data in odd.items():
        (tmp_path / name).write_bytes(data)
    gz = tmp_path / "golden.log.gz"
    gz.write_bytes(gzip.compress(golden))
    for name in odd:
        path = tmp_path / name
        assert _cli(str(path)) == ref_explain_jsonl([path]), name
    for path in (FIX / "json.log", FIX / "traditional.log", gz):
        assert _cli(str(path)) == ref_explain_jsonl([path]), path
    several = [tmp_path / "junk.log", FIX / "json.log", gz, tmp_path / "no-final-lf.log"]
    assert _cli(*map(str, several)) == ref_explain_jsonl(several)
    assert _cli("-", stdin=gz.read_bytes()) == ref_explain_jsonl([Path("-")], stdin=gz.read_bytes())
    out = _cli(str(tmp_path / "junk.log"))
    assert out.count(b"\n") == odd["junk.log"].count(b"\n") + 1  # the last line has no LF


# ------------------------------------------------------- the bench's split
def test_bench_split_adds_up_cpu_per_stage(tmp_path: Path) -> None:
    out = tmp_path / "explain.json"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_explain.py"), "--mb", "0.5", "--cache-dir",
                        str(tmp_path), "--no-cache", "--formats", "jsonl", "--split", "--timeout", "60",
                        "--json", str(out)], capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    (run,) = json.loads(out.read_text())["runs"]
    sp = run["cpu_split"]
    assert set(sp) == {"startup", "read", "scan_lines", "detection", "writing", "total"}, sp
    assert all(v >= 0 for v in sp.values()), sp
    # start-up is the CPU time before the first block; the stages come after it
    assert 0 < sp["startup"] < sp["total"]
    # 0.5 MB holds ~40 probe lines: detection takes measurable CPU; writing
    # 4,000 jsonl lines may take less than the CPU clock's tick
    assert sp["detection"] > 0 and sp["writing"] >= 0
    assert sp["startup"] + sp["read"] + sp["scan_lines"] + sp["detection"] + sp["writing"] <= sp["total"] + 0.01
    assert "CPU split (s): start-up" in p.stdout


# ------------------------------------------------------------------ gzip
def _read_all(f: Any) -> bytes:
    first = explain._sniff(f)
    return b"\n".join(bytes(b) for b in explain._blocks(f, first, explain.FileReport("x")))


def _gunzip_cases() -> dict[str, bytes]:
    a = b"".join(b"Nov 27 10:00:%02d h app: line %d\n" % (i % 60, i) for i in range(30_000))
    b = b"Nov 27 10:00:00 h app: GET / HTTP/1.0#015\nlast line, no LF"
    return {
        "one member": gzip.compress(a),
        "two members": gzip.compress(a) + gzip.compress(b),
        "zero padding": gzip.compress(b) + b"\x00" * 700 + gzip.compress(a) + b"\x00" * 3,
        "empty member": gzip.compress(b"") + gzip.compress(b),
        "stored": gzip.compress(a, compresslevel=0),
        "many members": b"".join(gzip.compress(b"Nov 27 10:00:00 h app: line %d\n" % i) + b"\x00" * (i % 3)
                                 for i in range(3000)),
    }


def test_gunzip_of_many_members_feeds_zlib_each_byte_a_few_times(monkeypatch: pytest.MonkeyPatch) -> None:
    # (what zlib leaves at a member's end is a copy: handing it the rest of
    # a 1 MiB read per member made a file of one-line members quadratic)
    data = b"".join(gzip.compress(b"Nov 27 10:00:00 h app: line %d\n" % i) for i in range(20_000))
    want = _read_all(gzip.GzipFile(fileobj=io.BufferedReader(io.BytesIO(data))))
    fed = 0
    real = zlib.decompressobj

    class Counting:
        def __init__(self, wbits: int) -> None:
            self.z = real(wbits)

        def decompress(self, chunk: Any, limit: int) -> bytes:
            nonlocal fed
            fed += len(chunk)
            return self.z.decompress(chunk, limit)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.z, name)

    monkeypatch.setattr(_explain_read, "zlib", types.SimpleNamespace(decompressobj=Counting, error=zlib.error))
    got = _read_all(io.BufferedReader(explain._Gunzip(io.BufferedReader(io.BytesIO(data)))))
    assert got == want
    # each member's bytes at most twice (the window doubles), and one
    # window past its end
    assert fed <= 2 * len(data) + 20_000 * _explain_read._GZ_WINDOW, (fed, len(data))


@pytest.mark.parametrize("case", list(_gunzip_cases()))
def test_gunzip_reads_what_gzipfile_reads(tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _gunzip_cases()[case]
    path = tmp_path / "f.gz"
    path.write_bytes(data)
    want = _read_all(gzip.GzipFile(fileobj=io.BufferedReader(io.BytesIO(data))))
    assert _read_all(explain._open(str(path))) == want
    # tiny reads and a tiny inflate limit: every member boundary and
    # unconsumed tail is met
    monkeypatch.setattr(_explain_read, "_GZ_IN", 7)
    monkeypatch.setattr(_explain_read, "_GZ_OUT", 64)
    assert _read_all(io.BufferedReader(explain._Gunzip(io.BufferedReader(io.BytesIO(data))), 64)) == want


@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("damage", ["cut", "garbage after", "one byte after"])
def test_gunzip_fails_as_gzipfile_fails(tmp_path: Path, damage: str, jobs: str) -> None:
    good = gzip.compress(b"Nov 27 10:00:00 h app: x\n" * 50_000)
    data = {"cut": good[:-9], "garbage after": good + b"xyz", "one byte after": good + b"\x01"}[damage]
    with pytest.raises((EOFError, gzip.BadGzipFile)) as want:
        _read_all(gzip.GzipFile(fileobj=io.BufferedReader(io.BytesIO(data))))
    path = tmp_path / "f.gz"
    path.write_bytes(data)
    with pytest.raises(want.type) as got:
        _read_all(explain._open(str(path)))
    assert str(got.value) == str(want.value)
    # the CLI names the file and the error, and keeps going
    p = subprocess.run([sys.executable, "-m", "probetag", "explain", "--jobs", jobs, str(path), str(FIX / "rfc3339.log")],
                       capture_output=True, timeout=120)
    assert p.returncode == 2 and f"error: {path}: {want.value}".encode() in p.stderr
    assert b"Traceback" not in p.stderr and b"rfc3339.log:" in p.stdout


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_corrupt_gzip_is_an_error_not_a_traceback(tmp_path: Path, jobs: str) -> None:
    data = bytearray(gzip.compress(b"Nov 27 10:00:00 h app: x\n" * 1000))
    data[-6] ^= 0xFF  # the CRC32 in the trailer
    path = tmp_path / "crc.gz"
    path.write_bytes(bytes(data))
    p = subprocess.run([sys.executable, "-m", "probetag", "explain", "--jobs", jobs, str(path)], capture_output=True,
                       timeout=120)
    assert p.returncode == 2 and str(path).encode() in p.stderr and b"Traceback" not in p.stderr


def test_skipped_cr_line_still_lends_its_time_to_a_line_without_one() -> None:
    data = (b"2026-11-27T13:46:00+00:00 web01 app: one two three four five#015\n"
            b"2026-11-27T13:46:01+00:00 web01 app: six seven eight nine ten#015\n"
            b"garbage with no stamp GET / HTTP/1.0#015")
    times = {}
    for skip in (True, False):
        ex = _explainer("rfc3339")
        ex.skip_weak = skip
        seen = _spy(ex)
        ex.block(bytearray(data))
        times[skip] = [t for t, rec in seen if rec]
        assert (ex.weak_skipped == 2) is skip
    assert times[True] == times[False][-1:] == [1795787161.0]


def test_skipped_cr_lines_held_for_their_time_are_bounded() -> None:
    # A file of nothing but CRLF-sender lines (pick skips each one, holding
    # it for its time only): a few thousand at most are held, and the last
    # one's time still reaches the next line without one of its own.
    from probetag._explain_scan import _PENDING_MAX
    n = 3 * _PENDING_MAX + 7
    data = b"".join(b"2026-11-27T13:%02d:%02d+00:00 web01 app: one two three four five#015\n"
                    % (i // 60 % 60, i % 60) for i in range(n))
    last = n - 1
    data += b"garbage with no stamp GET / HTTP/1.0#015"
    ex = _explainer("rfc3339")
    seen = _spy(ex)
    ex.block(bytearray(data))
    assert ex.weak_skipped == n
    assert len(ex._pending) <= _PENDING_MAX
    stamp = datetime(2026, 11, 27, 13, last // 60 % 60, last % 60, tzinfo=timezone.utc).timestamp()
    assert [t for t, rec in seen if rec] == [stamp]


def test_a_report_says_how_many_scans_the_correlation_bound_left_out(tmp_path: Path) -> None:
    cfg = tmp_path / "small.yaml"
    cfg.write_text("correlation:\n  max_bytes: 1048576\n")
    log = tmp_path / "many.log"
    log.write_bytes(b"".join(b"Nov 27 10:%02d:%02d 10.1.%d.%d GET / HTTP/1.0#015\n"
                             % (i // 60 % 60, i % 60, i >> 8, i & 255) for i in range(5000)))
    for jobs in ("1", "2"):
        small = subprocess.run([sys.executable, "-m", "probetag", "explain", "--jobs", jobs, "-c", str(cfg), str(log)],
                               capture_output=True, timeout=300)
        full = subprocess.run([sys.executable, "-m", "probetag", "explain", "--jobs", jobs, str(log)],
                              capture_output=True, timeout=300)
        assert small.returncode == full.returncode == 0
        m = re.search(rb"\n  ([0-9,]+) scans not listed: more sources than correlation.max_bytes holds", small.stdout)
        assert m is not None, small.stdout[-500:]
        listed = small.stdout.count(b"\n  10.1.")
        assert listed + int(m.group(1).replace(b",", b"")) == 5000 == full.stdout.count(b"\n  10.1.")
        assert b"not listed" not in full.stdout
