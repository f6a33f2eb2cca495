"""The stage's cost per record on the bench_e2e workload, in process.

    python bench/stage_cost.py                     # CPU µs per record (best of --passes)
    python bench/stage_cost.py --callgrind         # instructions per record under valgrind
    python bench/stage_cost.py --callgrind --tree /path/to/other/tree
    python bench/stage_cost.py --opcodes [--top 20]  # Python bytecode instructions per record

Theory of operation
-------------------
* The chunks are the ones the e2e load generator sends (``_loadgen``'s
  templates: 50 chunks of 1000 records, 1 % probe lines from 40 scanner
  addresses, Fluentd ``in_syslog`` and ``in_tail`` shapes), stamped
  ``--gap-ms`` apart (0.67 ms: a chunk every 0.67 ms is ~1.5 M records/s),
  and run through ``Processor.process`` as ``probetag serve`` runs them
  (config defaults, detection on), tag ``syslog.bench``.
* ``--probe-rate`` changes the share of probe lines (default 0.01, the
  e2e workload's): runs at several rates split a chunk's cost into what
  every chunk costs and what each probe line adds.
* ``--warmup`` chunks go first (1,500 by default): by then every scanner
  address's scan has left its scanner's order, as in a ``max`` run, so the
  sequence pass keeps its bookkeeping but names nothing. Then ``--count``
  chunks (200) are measured.
* ``--callgrind`` re-runs this script under ``valgrind --tool=callgrind``
  with collection off until the measured chunks: they run inside one
  ``functools.reduce`` call and ``--toggle-collect=functools_reduce``
  counts only that call (nothing else in the stage calls ``reduce``).
  Instructions do not depend on other load on the machine, so trees can be
  compared one after the other. ``PYTHONHASHSEED=0`` keeps set and dict
  orders, and so the instruction counts, the same from run to run.
* Without ``--callgrind``: the CPU time (``time.process_time``) of the
  measured chunks, best of ``--passes`` passes (a fresh processor per pass,
  warmed up the same way); noisy on a shared machine, say the load average
  with it.
* ``--opcodes``: the Python bytecode instructions the measured chunks run
  (``sys.settrace`` with ``f_trace_opcodes``), per record, and with
  ``--top N`` the functions that run most of them. Also independent of
  load, and closer to the CPU time than the machine instructions are: the
  interpreter's dispatch costs more per instruction (branch and
  instruction-cache misses) than the C it calls.
* ``--tree`` runs another work tree's ``plugin`` (its C accelerator built
  in place) with this tree's load generator: the before/after comparison.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _chunks(gap_ms: float, total: int, probe_rate: float = 0.01) -> list[bytes]:
    from _loadgen import build_templates, stamp

    templates = build_templates(50, probe_rate=probe_rate)
    t0 = 1_800_000_000.0
    return [stamp(templates[k % len(templates)], t0 + k * gap_ms / 1000) for k in range(total)]


def _workload(args: argparse.Namespace) -> list[str]:
    """The flags that make the measured chunks, for the run in a child."""
    return ["--warmup", str(args.warmup), "--count", str(args.count), "--gap-ms", str(args.gap_ms),
            "--probe-rate", str(args.probe_rate)]


def _processor():  # type: ignore[no-untyped-def]
    from probetag._config import config_from_mapping
    from probetag._metrics import Metrics
    from probetag._stage import Processor

    return Processor(config_from_mapping({}), Metrics())


_CLIENT_REQUESTS = """
#include <valgrind/callgrind.h>
void probetag_bench_instrument(int on) {
    if (on) { CALLGRIND_START_INSTRUMENTATION; } else { CALLGRIND_STOP_INSTRUMENTATION; }
}
"""


def _instrumenter(workdir: str | None):  # type: ignore[no-untyped-def]
    """Callgrind's client requests, when valgrind's header and a C compiler
    are there: the warm-up then runs without instrumentation (several times
    faster under valgrind). Without them everything is instrumented and only
    the reduce call is counted all the same."""
    if not workdir:
        return lambda on: None
    import ctypes

    src, lib = Path(workdir) / "cg.c", Path(workdir) / "cg.so"
    src.write_text(_CLIENT_REQUESTS)
    made = subprocess.run(["cc", "-O1", "-shared", "-fPIC", "-o", str(lib), str(src)], capture_output=True)
    if made.returncode != 0:
        return lambda on: None
    fn = ctypes.CDLL(str(lib)).probetag_bench_instrument
    return lambda on: fn(1 if on else 0)


def measure(args: argparse.Namespace) -> dict:
    import probetag

    try:
        from probetag._accel import describe
        matcher = describe()
    except ImportError:  # a tree from before the loader
        matcher = None

    chunks = _chunks(args.gap_ms, args.warmup + args.count, args.probe_rate)
    warm, counted = chunks[:args.warmup], chunks[args.warmup:]
    tag = "syslog.bench"
    instrument = _instrumenter(args.client_requests)
    best = float("inf")
    tagged = 0
    for _ in range(args.passes):
        proc = _processor()
        for ch in warm:
            proc.process(tag, ch)
        start = time.process_time()
        instrument(True)
        # The measured chunks in one reduce call: callgrind counts only it.
        tagged = functools.reduce(lambda acc, ch: acc + proc.process(tag, ch).tagged, counted, 0)
        instrument(False)
        best = min(best, time.process_time() - start)
    records = 1000 * len(counted)
    return {"tree": str(Path(probetag.__file__).resolve().parents[2]), "records": records,
            "tagged": tagged, "cpu_us_per_record": round(best / records * 1e6, 4),
            "matcher": matcher, "load_avg": [round(x, 2) for x in os.getloadavg()]}


def opcodes(args: argparse.Namespace) -> dict:
    """Bytecode instructions of the measured chunks, per function."""
    import collections

    import probetag

    chunks = _chunks(args.gap_ms, args.warmup + args.count, args.probe_rate)
    warm, counted = chunks[:args.warmup], chunks[args.warmup:]
    tag = "syslog.bench"
    proc = _processor()
    for ch in warm:
        proc.process(tag, ch)
    per: collections.Counter[tuple[str, str]] = collections.Counter()

    def trace(frame, event, arg):  # type: ignore[no-untyped-def]
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        code = frame.f_code
        key = (code.co_filename.rsplit("/plugin/", 1)[-1], code.co_name)

        def local(frame, event, arg):  # type: ignore[no-untyped-def]
            if event == "opcode":
                per[key] += 1
            return local
        return local

    sys.settrace(trace)
    try:
        tagged = sum(proc.process(tag, ch).tagged for ch in counted)
    finally:
        sys.settrace(None)
    records = 1000 * len(counted)
    total = sum(per.values())
    return {"tree": str(Path(probetag.__file__).resolve().parents[2]), "records": records, "tagged": tagged,
            "opcodes_per_record": round(total / records, 2),
            "top": [[f"{f}:{n}", round(c / len(counted))] for (f, n), c in per.most_common(args.top)]}


def _have_header() -> bool:
    return Path("/usr/include/valgrind/callgrind.h").exists() and shutil.which("cc") is not None


def callgrind(args: argparse.Namespace, plugin: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="probetag-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        env = {**os.environ, "PYTHONPATH": str(plugin), "PYTHONHASHSEED": "0"}
        fast = _have_header()
        # With client requests only what runs between them is instrumented
        # (and counted); without, collection is toggled on entering reduce.
        how = (["--instr-atstart=no"] if fast else
               ["--collect-atstart=no", "--toggle-collect=functools_reduce"])
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *how, sys.executable, str(Path(__file__).resolve()),
                "--inner", "--passes", "1", "--client-requests", tmp if fast else "", *_workload(args)]
        run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=args.timeout)
        if run.returncode != 0:
            raise SystemExit(run.stderr[-2000:])
        inner = json.loads(run.stdout.strip().splitlines()[-1])
        text = out.read_text(errors="replace")
        ir = max((int(x) for x in re.findall(r"^(?:summary|totals):\s*(\d+)", text, re.M)), default=0)
        if not ir:
            raise SystemExit(f"callgrind counted nothing: {run.stderr[-500:]}")
        inner["instructions"] = ir
        inner["instructions_per_record"] = round(ir / inner["records"])
        if args.keep:
            # for callgrind_annotate (the C functions: hyperscan, msgpack, the interpreter)
            args.keep.write_bytes(out.read_bytes())
        del inner["cpu_us_per_record"]  # under valgrind it means nothing
        return inner


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--callgrind", action="store_true", help="instructions per record under valgrind")
    ap.add_argument("--tree", type=Path, default=HERE.parent, help="work tree whose plugin/ to run")
    ap.add_argument("--warmup", type=int, default=1500)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--gap-ms", type=float, default=0.67)
    ap.add_argument("--probe-rate", type=float, default=0.01,
                    help="share of probe lines in the chunks (0: forwarding and the prefilter alone)")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--keep", type=Path, help="--callgrind: keep valgrind's output file here")
    ap.add_argument("--opcodes", action="store_true", help="Python bytecode instructions per record")
    ap.add_argument("--top", type=int, default=0, help="--opcodes: the N functions that run most, per chunk")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--client-requests", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    plugin = (args.tree / "plugin").resolve()
    if args.inner:
        print(json.dumps(opcodes(args) if args.opcodes else measure(args)))
        return 0
    if args.opcodes:
        env = {**os.environ, "PYTHONPATH": str(plugin), "PYTHONHASHSEED": "0"}
        run = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--inner", "--opcodes",
                              "--top", str(args.top), *_workload(args)],
                             env=env, capture_output=True, text=True, timeout=args.timeout)
        if run.returncode != 0:
            raise SystemExit(run.stderr[-2000:])
        res = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"{res['tree']}: {res['opcodes_per_record']:,} bytecode instructions per record "
              f"({res['records']:,} records, {res['tagged']} tagged)")
        for name, per_chunk in res["top"]:
            print(f"  {per_chunk:8,} per chunk  {name}")
        return 0
    if args.callgrind:
        res = callgrind(args, plugin)
        print(f"{res['tree']}: {res['instructions_per_record']:,} instructions per record "
              f"({res['records']:,} records, {res['tagged']} tagged)")
    else:
        env = {**os.environ, "PYTHONPATH": str(plugin)}
        run = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--inner",
                              "--passes", str(args.passes), *_workload(args)],
                             env=env, capture_output=True, text=True, timeout=args.timeout)
        if run.returncode != 0:
            raise SystemExit(run.stderr[-2000:])
        res = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"{res['tree']}: {res['cpu_us_per_record']} CPU µs per record, best of {args.passes} "
              f"(load average {res['load_avg']})")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
