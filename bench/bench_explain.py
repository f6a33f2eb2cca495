"""Benchmark: ``probetag explain`` on a large syslog file.

    python bench/bench_explain.py [--mb 200] [--formats jsonl,text] [--jobs N] [--split]

Theory of operation
-------------------
* The file is RSYSLOG_FileFormat (Debian's ``/var/log/syslog`` default):
  ``2026-11-27T10:00:00.123456+00:00 HOST TAG: MSG``, ordinary lines from a
  pool of realistic messages (``_loadgen.benign_message``) with 1 % scanner
  probe lines as rsyslog writes them (``_loadgen.probe_lines`` through
  ``rsyslog_split``: escaped control bytes, the payload's first word taken
  as HOSTNAME, raw bytes >= 0x80). Multi-line probes keep their line order
  and sender, with other lines in between. Timestamps increase line by
  line (~200 us apart).
* Building 1 GB line by line in Python would take longer than explaining
  it, so each line is a fresh timestamp plus a body drawn from a pool of
  ``--pool`` distinct bodies. The file is cached under ``--cache-dir``
  (default: the temp dir), named by size, seed and a format version, and
  reused by later runs; ``--no-cache`` writes it afresh and deletes it.
* Each format is timed as a child process (``python -m probetag explain
  --format F FILE``, output to a file so the terminal is not measured), one
  run each, bounded by ``--timeout``. MB/s is file bytes / wall seconds
  (MB = 10**6 bytes); CPU seconds and peak RSS come from ``wait4``. The
  start-up cost (the same command on a one-line file) is measured too, and
  ``mb_per_s_after_startup`` leaves it out.
* ``--jobs N`` is passed to explain (default: explain's own default, which
  picks 2 processes for big inputs on 2 or more CPUs); the jobs setting that
  ran is printed beside each format and stored as ``jobs`` in the JSON.
* ``--split`` runs each format once more in a child that adds up CPU
  seconds per stage (start-up, read, scan+lines, detection, writing) by
  wrapping explain's functions, always with ``--jobs 1`` (the stages of
  one process); the timed run above stays unwrapped.
* Results are printed as a table and written as JSON to ``bench/results/``
  (git-ignored), or to ``--json``. The target is >= 100 MB/s for a 1 GB file
  (``--mb 1024``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _loadgen import HOSTS, benign_message, file_line, probe_lines, rsyslog_split  # noqa: E402

TARGET_MB_S = 150.0
FILE_VERSION = 3  # bump when the generated content changes, so caches are not reused


def generate(path: Path, mb: float, probe_rate: float = 0.01, seed: int = 11, pool: int = 20000,
             crtab: float = 0.0) -> dict:
    """Write ``mb`` MB (10**6 bytes) of lines to ``path``; -> counts.
    ``crtab``: the share of benign lines that end in ``#015`` (a CRLF
    sender, as Windows event forwarders write) or hold ``#011`` (a TAB
    between fields, as many appliances write), half each."""
    rng = random.Random(seed)
    bodies = []
    for _ in range(pool):
        ident, msg = benign_message(rng)
        host = rng.choice(HOSTS).split(".")[0]
        body = f" {host} {ident}[{rng.randrange(100, 99999)}]: {msg}"
        r = rng.random()
        if r < crtab / 2:
            body += "#015"
        elif r < crtab:
            head, sep, tail = body.rpartition(": ")
            words = tail.split(" ")
            k = rng.randrange(len(words))
            body = head + sep + " ".join(words[:k]) + ("#011" if k else "") + " ".join(words[k:])
            if "#011" not in body:
                body += "#011"
        bodies.append(f"{body}\n".encode())
    scanners = [f"203.0.113.{i}" for i in range(1, 41)] + [f"198.51.100.{i}" for i in range(1, 21)]
    limit = int(mb * 1e6)
    written = lines = probes = 0
    pending: list[tuple[bytes, str]] = []
    t = 1_795_780_800  # 2026-11-27T12:00:00Z
    us = 0
    prefix_sec = -1
    prefix = ""
    rand = rng.random
    with open(path, "wb") as f:
        buf: list[bytes] = []
        while written < limit:
            for _ in range(10000):
                us += 1 + int(rand() * 400)
                sec, micro = divmod(us, 1_000_000)
                if sec != prefix_sec:
                    prefix_sec = sec
                    prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t + sec))
                ts = f"{prefix}.{micro:06d}+00:00"
                # A probe's later lines take later probe slots, so lines of
                # other senders fall in between (FIELD_GUIDE 5) and the probe
                # share stays ``probe_rate``.
                if rand() < probe_rate:
                    if not pending:
                        sender = rng.choice(scanners)
                        pending = [(ln, sender) for ln in probe_lines(rng)]
                    raw, sender = pending.pop(0)
                    host, tag, msg = rsyslog_split(raw, sender)
                    line = file_line(ts, host, tag, msg).encode("utf-8", "surrogateescape") + b"\n"
                    probes += 1
                else:
                    line = ts.encode() + bodies[int(rand() * pool)]
                buf.append(line)
                written += len(line)
                lines += 1
                if written >= limit:
                    break
            f.write(b"".join(buf))
            buf.clear()
    return {"bytes": written, "lines": lines, "probe_lines": probes}


def ensure_file(args: argparse.Namespace) -> tuple[Path, dict, bool]:
    """-> (path, counts, cached). Reuses a cached file of the same recipe."""
    cache = Path(args.cache_dir or tempfile.gettempdir())
    crtab = f"-crtab{args.crtab:g}" if args.crtab else ""
    name = f"probetag-bench-explain-v{FILE_VERSION}-{args.mb:g}mb-s{args.seed}-p{args.probe_rate:g}{crtab}.log"
    path = cache / name
    meta = path.with_suffix(".json")
    if not args.no_cache and path.exists() and meta.exists():
        counts = json.loads(meta.read_text())
        if counts.get("bytes") == path.stat().st_size:
            return path, counts, True
    t0 = time.perf_counter()
    counts = generate(path, args.mb, args.probe_rate, args.seed, crtab=args.crtab)
    counts["generate_seconds"] = round(time.perf_counter() - t0, 2)
    if not args.no_cache:
        meta.write_text(json.dumps(counts))
    return path, counts, False


def time_explain(path: Path, fmt: str, timeout: float, extra: list[str]) -> dict:
    out_path = Path(tempfile.mkstemp(prefix=f"probetag-explain-{fmt}-", suffix=".out")[1])
    err_path = out_path.with_suffix(".err")
    argv = [sys.executable, "-m", "probetag", "explain", "--format", fmt, *extra, str(path)]
    res: dict = {"format": fmt}
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        box: dict = {}

        def reap() -> None:
            box["wait"] = os.wait4(proc.pid, 0)

        waiter = threading.Thread(target=reap, daemon=True)
        waiter.start()
        waiter.join(timeout)
        wall = time.perf_counter() - t0
        if waiter.is_alive():
            proc.kill()
            waiter.join(10)
            res["error"] = f"timed out after {timeout:.0f} s"
    if "wait" in box:
        _, status, usage = box["wait"]
        proc.returncode = os.waitstatus_to_exitcode(status)
        res["exit"] = proc.returncode
        res["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 3)
        res["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
        if proc.returncode not in (0, 1) and "error" not in res:
            # 1 may mean "probe lines found" (grep-like); anything else is a failure.
            res["error"] = f"exit status {proc.returncode}"
    size = path.stat().st_size
    res["seconds"] = round(wall, 3)
    res["mb_per_s"] = round(size / wall / 1e6, 3) if "error" not in res else None
    res["output_bytes"] = out_path.stat().st_size
    with open(out_path, "rb") as f:
        res["output_lines"] = sum(1 for _ in f)
    stderr = err_path.read_text(errors="replace")
    if stderr.strip():
        res["stderr_tail"] = stderr[-800:]
    out_path.unlink()
    err_path.unlink()
    return res


#: ``--split``: the same explain run in a child that adds up CPU seconds
#: (``time.process_time``) per stage by wrapping explain's own functions:
#: start-up (interpreter, imports, catalogue and literal compilation: CPU
#: time before the first block is read), read (``_blocks``: read and cut),
#: scan+lines (``Explainer.block`` without detection: framing markers,
#: literal scan, LF counting, line split, syslog parse, event time),
#: detection (``Enricher.batch``) and writing (``_JsonlWriter.block``).
_SPLIT_CHILD = r"""
import json, sys, time
pt = time.process_time
from probetag import explain
from probetag.detect._enrich import Enricher
acc = {"startup": None, "read": 0.0, "scan_lines": 0.0, "detection": 0.0, "writing": 0.0}

def timed(fn, key):
    def wrapper(*a, **k):
        t0 = pt()
        try:
            return fn(*a, **k)
        finally:
            acc[key] += pt() - t0
    return wrapper

blocks = explain._blocks
def timed_blocks(*a):
    if acc["startup"] is None:
        acc["startup"] = pt()
    it = blocks(*a)
    while True:
        t0 = pt()
        b = next(it, None)
        acc["read"] += pt() - t0
        if b is None:
            return
        yield b

explain._blocks = timed_blocks
explain.Explainer.block = timed(explain.Explainer.block, "scan_lines")
explain._JsonlWriter.block = timed(explain._JsonlWriter.block, "writing")
Enricher.batch = timed(Enricher.batch, "detection")
rc = explain.main(sys.argv[1:])
sys.stdout.flush()
acc["scan_lines"] -= acc["detection"]
acc["total"] = pt()
print(json.dumps({k: round(v or 0.0, 3) for k, v in acc.items()}), file=sys.stderr)
sys.exit(rc)
"""


def cpu_split(path: Path, fmt: str, timeout: float, extra: list[str]) -> dict:
    """CPU seconds per stage of one explain run (``--split``), or an error."""
    with tempfile.TemporaryFile() as out:
        try:
            p = subprocess.run([sys.executable, "-c", _SPLIT_CHILD, "--format", fmt, *extra, str(path)],
                               stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
    lines = p.stderr.decode(errors="replace").strip().splitlines()
    try:
        return json.loads(lines[-1]) if p.returncode in (0, 1) else {"error": f"exit status {p.returncode}"}
    except (IndexError, ValueError):
        return {"error": "no split printed: " + " | ".join(lines[-3:])}


def explain_jobs(path: Path, jobs: int | None) -> int:
    """The number of processes ``probetag explain [--jobs JOBS] PATH`` runs."""
    from probetag import explain

    return explain._jobs(argparse.Namespace(files=[str(path)], jobs=jobs))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_explain.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=200.0, help="file size in MB (10**6 bytes); 1024 for the target")
    ap.add_argument("--formats", default="jsonl,text", help="comma-separated explain output formats")
    ap.add_argument("--probe-rate", type=float, default=0.01, help="share of probe lines (0.15: the probe-heavy file)")
    ap.add_argument("--crtab", type=float, default=0.0,
                    help="share of benign lines ending in #015 or holding #011 (0.3: the CR/TAB-heavy file)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--cache-dir", default=None, help="where the generated file is kept (default: temp dir)")
    ap.add_argument("--no-cache", action="store_true", help="generate afresh and delete the file afterwards")
    ap.add_argument("--timeout", type=float, default=0.0,
                    help="per format, seconds (default: enough for 2 MB/s, at least 60)")
    ap.add_argument("--explain-args", default="", help="extra arguments for probetag explain, space-separated")
    ap.add_argument("--jobs", type=int, default=None,
                    help="explain --jobs (default: explain's own choice for this file)")
    ap.add_argument("--json", type=Path, default=None, help="write the JSON here instead of bench/results/")
    ap.add_argument("--split", action="store_true",
                    help="also run each format once more, adding up CPU seconds per stage (start-up, read, "
                         "scan+lines, detection, writing)")
    args = ap.parse_args(argv)
    if not 0 < args.mb <= 4096:
        print("--mb must be in (0, 4096]", file=sys.stderr)
        return 2
    timeout = args.timeout or max(60.0, args.mb / 2.0)
    load0 = [round(x, 2) for x in os.getloadavg()]
    path, counts, cached = ensure_file(args)
    runs = []
    # The fixed cost (interpreter, imports, catalogue compilation) on a
    # one-line file, so the per-byte rate can be told apart from start-up.
    tiny = Path(tempfile.mkstemp(prefix="probetag-explain-tiny-", suffix=".log")[1])
    with open(path, "rb") as f:
        tiny.write_bytes(f.readline())
    startup = time_explain(tiny, "jsonl", 120, args.explain_args.split())
    tiny.unlink()
    jobs = explain_jobs(path, args.jobs)
    extra = [*(["--jobs", str(args.jobs)] if args.jobs is not None else []), *args.explain_args.split()]
    try:
        for fmt in [f for f in args.formats.split(",") if f]:
            r = time_explain(path, fmt, timeout, extra)
            r["jobs"] = jobs
            if r.get("mb_per_s") and "error" not in startup and r["seconds"] > startup["seconds"]:
                r["mb_per_s_after_startup"] = round(counts["bytes"] / (r["seconds"] - startup["seconds"]) / 1e6, 3)
            if r.get("mb_per_s") and "error" not in startup and r["cpu_seconds"] > startup["cpu_seconds"]:
                # Per CPU second past start-up: the figure a busy machine
                # disturbs least (it ignores time spent waiting for a core).
                r["mb_per_cpu_s"] = round(counts["bytes"] / (r["cpu_seconds"] - startup["cpu_seconds"]) / 1e6, 3)
            if args.split:
                r["cpu_split"] = cpu_split(path, fmt, timeout, ["--jobs", "1", *args.explain_args.split()])
            runs.append(r)
    finally:
        if args.no_cache:
            path.unlink(missing_ok=True)
    load1 = [round(x, 2) for x in os.getloadavg()]

    size_mb = counts["bytes"] / 1e6
    print(f"file: {size_mb:,.1f} MB, {counts['lines']:,} lines, {counts['probe_lines']:,} probe lines, "
          f"CR/TAB share {args.crtab:g}"
          f" ({'cached' if cached else 'generated in %.1f s' % counts.get('generate_seconds', 0)}); "
          f"load average {load0[0]} -> {load1[0]}")
    print(f"explain start-up (one-line file): {startup['seconds']:.2f} s")
    for r in runs:
        if "error" in r:
            print(f"explain --format {r['format']:5s}  ERROR {r['error']}")
            if "stderr_tail" in r:
                print(r["stderr_tail"])
            continue
        verdict = "target met" if r["mb_per_s"] >= TARGET_MB_S else "target MISSED"
        print(f"explain --format {r['format']:5s} (jobs {r['jobs']})  {r['mb_per_s']:8.1f} MB/s "
              f"({r.get('mb_per_s_after_startup', 0):.1f} without start-up)  {r['seconds']:7.2f} s  "
              f"CPU {r['cpu_seconds']} s ({r.get('mb_per_cpu_s', 0):.1f} MB per CPU s)  RSS {r['peak_rss_mb']} MB"
              f"  out {r['output_lines']:,} lines"
              f"  (target >= {TARGET_MB_S:g} MB/s: {verdict})")
        sp = r.get("cpu_split")
        if sp and "error" in sp:
            print(f"  CPU split: ERROR {sp['error']}")
        elif sp:
            other = sp["total"] - sum(sp[k] for k in ("startup", "read", "scan_lines", "detection", "writing"))
            print(f"  CPU split (s): start-up {sp['startup']:.2f}, read {sp['read']:.2f}, "
                  f"scan+lines {sp['scan_lines']:.2f}, detection {sp['detection']:.2f}, "
                  f"writing {sp['writing']:.2f}, other {other:.2f}; total {sp['total']:.2f}")
    stamp_ = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.json or HERE / "results" / f"bench_explain-{stamp_}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "when": stamp_, "python": sys.version.split()[0], "machine": platform.machine(),
        "cpus": os.cpu_count(), "target_mb_per_s": TARGET_MB_S, "file": counts, "crtab": args.crtab,
        "probe_rate": args.probe_rate, "file_cached": cached,
        "load_avg_start": load0, "load_avg_end": load1, "startup": startup, "runs": runs}, indent=2) + "\n")
    print(f"wrote {out}")
    return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
