"""End-to-end benchmark: load generator -> ``probetag serve`` -> counting sink.

    python bench/bench_e2e.py [--mode max|latency|sources|scaling] [--seconds 20]
                              [--rate 50000] [--sources 100000] [--workers N]
                              [--connections C] [--profile]

Theory of operation
-------------------
* Three processes besides this one, so each one's CPU is its own: the sink
  (``_sink.py``, a forward server that acks and measures arrival), ``python
  -m probetag serve`` with a generated config (forward input on a free
  loopback port, forward output to the sink, detection on), and the load
  generator (``_loadgen.py``, pre-built 1000-record PackedForward chunks with
  acks). probetag acks upstream only once the sink has acked, so in the
  closed-loop ``max`` mode the acks pace the sender and the figure is what
  probetag sustains.
* Figures come from a measurement window that starts after ``--warmup``
  seconds of load and lasts ``--seconds``: the sink and ``/proc/PID/stat`` of
  the serve process(es) are sampled at both ends. ``/proc/PID/task/*/
  schedstat`` gives the time serve was runnable but waiting for a CPU: on a
  shared machine that share says how far other load held the figures back. records/s and MB/s (of
  the records as sent) are counted where they arrive, at the sink; latency
  is sink arrival minus the record's send stamp (p50/p99 over the window);
  CPU seconds per million records is serve's user+system time over the
  window per record delivered; peak RSS is ``VmHWM``.
* The floor: in the same run, after the load, this process decodes and
  re-encodes the same chunks with msgpack in one Python loop (every record
  unpacked and packed again): what any Python stage that looks at every
  record pays. probetag's rate / floor is printed; the target is >= 0.5.
* Modes: ``max`` (closed loop, as fast as acks allow), ``latency`` (open
  loop at ``--rate`` records/s; the p99 target applies), ``sources`` (every
  record a probe line from one of ``--sources`` distinct senders, so the
  correlation state holds that many sources; the load goes on past the
  window, up to ``--sources-max-extra`` seconds, until every sender was sent
  once; the RSS target applies).
* The harness's own cost is measured, not assumed: the load generator's
  and the sink's CPU over the window (``/proc/PID/stat``) is reported in
  cores (``harness_cores``) and per record. On a 2-core machine that is
  CPU probetag could not have.
* ``--workers N`` is passed to ``probetag serve`` if its ``--help`` lists the
  flag; otherwise the run goes on with one process and the JSON says
  ``"workers_supported": false``. With workers the load uses 8 connections
  (SO_REUSEPORT hashes each connection to a worker; fewer connections split
  unevenly too often), and ``per_worker`` gives each worker's accepted
  connections (``/proc/net/tcp`` inodes matched to the worker's fds) and
  CPU over the window.
* ``harness`` leaves probetag out: the load generator sends straight to the
  sink at ``--rate`` (default 300,000 records/s, the throughput target) and
  the window gives their CPU in cores: what the harness takes from probetag
  at that rate.
* ``scaling`` runs ``max`` with one worker and then with ``--workers`` N
  (default 2), same harness and connections, and prints the ratio of
  records/s with what explains a shortfall: how much more CPU the workers
  got (``serve_cpu_ratio``), how much more each record cost
  (``cpu_per_record_ratio``), what the harness left over.
* ``--profile`` samples the serve process with py-spy during the window and
  prints the functions with the most samples (self and inclusive %).
  py-spy samples wall time, so on a busy machine time spent waiting for a
  CPU lands on whatever line was running (often a socket write that woke
  another process). ``--profile cprofile`` runs serve under cProfile with a
  CPU-time clock, switched on only for the window: immune to that, but
  cProfile's per-call overhead inflates call-heavy code.
* Every wait has a bound. Results are printed as a table and written as JSON
  to ``bench/results/`` (git-ignored), or to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgpack

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _loadgen import CHUNK_RECORDS, build_templates, stamp  # noqa: E402
from _sink import hist_diff, percentile  # noqa: E402

TARGETS = {
    "max": {"records_per_s": 300_000, "floor_ratio": 0.5},
    "latency": {"latency_p99_ms": 10.0},
    "sources": {"peak_rss_mb": 200.0},
    "scaling": {"scaling_ratio": 1.8},
}
_CLK = os.sysconf("SC_CLK_TCK")
#: glibc malloc: serve buffers up to 32 MiB from the heap instead of a fresh
#: mmap each, and keep freed memory instead of trimming it at once (mallopt(3),
#: M_MMAP_THRESHOLD / M_TRIM_THRESHOLD).
MALLOC_BIG_BUFFERS = {"MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),
                      "MALLOC_TRIM_THRESHOLD_": str(128 * 1024 * 1024)}


# ------------------------------------------------------------------ children


class Child:
    """A subprocess whose stdout JSON lines are read by a thread, so every
    wait for one has a timeout."""

    def __init__(self, argv: list[str], *, stdin: bool = False, stderr_path: Path | None = None,
                 env: dict | None = None) -> None:
        self.stderr_file = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self.stderr_file, env=env,
                                     text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next_json(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no output from {self.proc.args[1:3]} within {timeout} s")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"{self.proc.args[1:3]} exited (rc={self.proc.wait(5)}) before answering")
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.stderr_file is not subprocess.DEVNULL:
            self.stderr_file.close()
        return self.proc.returncode


def free_port() -> int:
    """A loopback TCP port whose UDP twin is free too (the forward listener
    binds both for the heartbeat)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def wait_listening(port: int, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"probetag serve exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"probetag serve not listening on {port} within {timeout} s")


# ---------------------------------------------------------------- /proc


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_times(pids: list[int]) -> tuple[float, float]:
    """(user, system) seconds of ``pids`` (and of children they reaped)."""
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17
        user += int(fields[11]) + int(fields[13])
        system += int(fields[12]) + int(fields[14])
    return user / _CLK, system / _CLK


def cpu_seconds(pids: list[int]) -> float:
    """user + system seconds of ``pids`` (and of children they reaped)."""
    return sum(cpu_times(pids))


def runqueue_wait(pids: list[int]) -> float:
    """Seconds the threads of ``pids`` spent runnable but waiting for a CPU
    (``/proc/PID/task/TID/schedstat``, second field, ns): how much a busy
    machine held the process back."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[1])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


def _tcp_rows(port: int, state: str) -> list[list[str]]:
    """Rows of ``/proc/net/tcp`` and ``tcp6`` in ``state`` (hex, e.g. "01"
    ESTABLISHED, "0A" LISTEN) whose local port is ``port``."""
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
                    cols = line.split()
                    if len(cols) > 9 and cols[3] == state and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        rows.append(cols)
        except (OSError, ValueError):
            continue
    return rows


def wait_listeners(port: int, count: int, timeout: float, proc: subprocess.Popen) -> None:
    """Wait until ``count`` sockets listen on ``port`` (the workers' SO_REUSEPORT group)."""
    deadline = time.monotonic() + timeout
    while len(_tcp_rows(port, "0A")) < count:
        if proc.poll() is not None:
            raise RuntimeError(f"probetag serve exited with {proc.returncode} before every worker listened")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{count} workers not listening on {port} within {timeout} s")
        time.sleep(0.05)


def established_inodes(port: int) -> set[int]:
    """Socket inodes of the ESTABLISHED TCP connections whose local port is
    ``port`` (``/proc/net/tcp`` and ``tcp6``: the accepted side of a
    listener on that port)."""
    return {int(cols[9]) for cols in _tcp_rows(port, "01")}


def connections_by_pid(pids: list[int], port: int) -> dict[int, int]:
    """For each of ``pids``: how many accepted connections on ``port`` its
    file descriptors hold (with SO_REUSEPORT, which worker got which)."""
    inodes = established_inodes(port)
    out = {}
    for pid in pids:
        n = 0
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                n += 1
        out[pid] = n
    return out


def peak_rss_mb(pids: list[int]) -> float:
    """Sum of ``VmHWM`` over ``pids`` (one process: its peak RSS)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


# ---------------------------------------------------------------- floor


def msgpack_floor(templates, seconds: float) -> float:
    """records/s of decoding and re-encoding every record of the chunks with
    msgpack in one Python loop. Each chunk is timed on its own and its best
    time kept (the machine is shared: other work only ever slows a pass
    down, and a short interval is more likely to run undisturbed)."""
    chunks = [stamp(t, time.time()) for t in templates]
    packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")
    best = [float("inf")] * len(chunks)
    deadline = time.perf_counter() + seconds
    passes = 0
    while passes < 2 or (time.perf_counter() < deadline and passes < 1000):
        for i, ch in enumerate(chunks):
            t0 = time.perf_counter()
            up = msgpack.Unpacker(raw=False, unicode_errors="surrogateescape", strict_map_key=False,
                                  max_buffer_size=len(ch) + 1)
            up.feed(ch)
            b"".join([packer.pack(entry) for entry in up])
            best[i] = min(best[i], time.perf_counter() - t0)
        passes += 1
    return len(chunks) * CHUNK_RECORDS / sum(best)


# ---------------------------------------------------------------- profile


def summarize_profile(raw_path: Path, top: int = 15) -> dict:
    """Sample shares from py-spy's raw (collapsed stack) output, one
    ``frame;frame;... count`` per line, frames as ``func (file:line)``:
    per function (line numbers folded) self and inclusive %, and the hottest
    lines by self %."""
    self_fn: dict[str, int] = {}
    incl_fn: dict[str, int] = {}
    self_line: dict[str, int] = {}
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        fns = [_fold_line(f) for f in frames]
        for f in set(fns):
            if not f.startswith(_SCAFFOLD):
                incl_fn[f] = incl_fn.get(f, 0) + n
        self_fn[fns[-1]] = self_fn.get(fns[-1], 0) + n
        self_line[frames[-1]] = self_line.get(frames[-1], 0) + n

    def pct(d: dict[str, int]) -> list[tuple[str, float]]:
        ranked = sorted(d.items(), key=lambda kv: -kv[1])[:top]
        return [(k, round(100.0 * v / total, 1)) for k, v in ranked] if total else []

    return {"samples": total, "self": pct(self_fn), "inclusive": pct(incl_fn), "lines": pct(self_line)}


#: ``probetag serve`` under cProfile with a CPU-time clock, switched on by
#: SIGUSR1 and off (and dumped to argv[1]) by SIGUSR2, so only the window is
#: profiled and time spent waiting for a CPU is not charged to anything.
_CPROFILE_SERVE = """
import cProfile, signal, sys, time
from probetag.cli import main
out = sys.argv[1]
prof = cProfile.Profile(time.process_time)
def on_signal(signum, frame):
    if signum == signal.SIGUSR1:
        prof.enable()
    else:
        prof.disable()
        prof.dump_stats(out)
signal.signal(signal.SIGUSR1, on_signal)
signal.signal(signal.SIGUSR2, on_signal)
sys.exit(main(["serve", *sys.argv[2:]]))
"""


def summarize_cprofile(path: Path, top: int = 15) -> dict:
    """Self (tottime) and inclusive (cumtime) CPU shares per function from a
    cProfile dump; the total is the sum of self times."""
    import pstats

    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values())

    def name(key: tuple) -> str:
        file, line, func = key
        short = re.sub(r"^.*/(?:site-packages|plugin|lib/python3\.\d+)/", "", file)
        return f"{func} ({short})" if line else func

    def pct(idx: int) -> list[tuple[str, float]]:
        ranked = sorted(stats.items(), key=lambda kv: -kv[1][idx])
        out = [(name(k), round(100.0 * v[idx] / total, 1)) for k, v in ranked
               if not name(k).startswith(_SCAFFOLD_CPROFILE)]
        return out[:top] if total else []

    return {"samples": round(total, 3), "unit": "CPU seconds", "self": pct(2), "inclusive": pct(3), "lines": []}


# Frames every sample has (interpreter start, the event loop, CLI dispatch):
# left out of the inclusive list, where they would only say "100 %".
_SCAFFOLD = ("_run_module_as_main ", "_run_code ", "<module> (probetag/__main__", "main (probetag/cli",
             "main (probetag/_serve", "run (asyncio/runners", "Runner.run ", "BaseEventLoop.run_",
             "BaseEventLoop._run_once ", "Handle._run ")


_SCAFFOLD_CPROFILE = ("_run_once (asyncio/", "_run (asyncio/events", "<method 'run' of '_contextvars",
                      "run_forever (asyncio/", "run_until_complete (asyncio/", "run (asyncio/runners",
                      "main (probetag/cli", "main (probetag/_serve", "<module>")


def _fold_line(frame: str) -> str:
    """``f (path.py:123)`` -> ``f (path.py)``."""
    head, sep, tail = frame.rpartition(":")
    return f"{head})" if sep and tail.rstrip(")").isdigit() else frame


# ---------------------------------------------------------------- the run


def serve_supports(flag: str, python: str = sys.executable) -> bool:
    out = subprocess.run([python, "-m", "probetag", "serve", "--help"],
                         capture_output=True, text=True, timeout=60)
    return flag in out.stdout


def serve_matcher(python: str, env: dict) -> dict:
    """The matcher backend and walker serve will run with (``probetag._accel``,
    what serve logs as ``event=matcher``) and the slow paths it warns about."""
    code = ("import json, probetag._accel as a; "
            "print(json.dumps({**a.describe(), 'slow_paths': a.slow_paths()}))")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    if out.returncode != 0:
        return {"error": out.stderr.strip()[-500:]}
    return json.loads(out.stdout)


def write_config(dirpath: Path, listen_port: int, sink_port: int, detect: bool = True) -> Path:
    cfg = dirpath / "probetag.yaml"
    cfg.write_text(
        "# generated by bench/bench_e2e.py\n"
        f"listen:\n  address: \"127.0.0.1:{listen_port}\"\n"
        f"output:\n  type: forward\n  address: \"127.0.0.1:{sink_port}\"\n"
        f"detect:\n  enabled: {'true' if detect else 'false'}\n"
        "log_level: warning\n")
    return cfg


def run(args: argparse.Namespace) -> dict:
    """One benchmark run (see the module doc); the figures as a dict."""
    tmp = Path(tempfile.mkdtemp(prefix="probetag-bench-"))
    try:
        return _run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(args: argparse.Namespace, tmp: Path) -> dict:
    t0 = time.monotonic()

    def phase(name: str) -> None:
        if args.verbose:
            print(f"[{time.monotonic() - t0:6.2f} s] {name}", file=sys.stderr, flush=True)

    result: dict = {"mode": args.mode, "seconds": args.seconds, "warmup": args.warmup,
                    "load_avg_start": [round(x, 2) for x in os.getloadavg()]}
    python = getattr(args, "python", None) or sys.executable
    workers_ok = args.workers > 1 and serve_supports("--workers", python)
    result["workers_requested"] = args.workers
    result["workers_supported"] = workers_ok if args.workers > 1 else None
    # SO_REUSEPORT hashes each connection's 4-tuple to a worker: with few
    # connections two often land on one worker (4 connections over 2 workers
    # are split 2/2 only 3 times in 8). 8 connections make a lopsided split
    # rarer; the split is reported per worker either way.
    connections = args.connections or (8 if args.workers > 1 else 1)
    result["connections"] = connections
    result["window"] = args.window
    sink = serve = load = None
    # The sink and the load generator handle multi-megabyte buffers; with
    # glibc's defaults every such buffer is a fresh mmap that page-faults on
    # first touch, which made the sink several times dearer per byte. They
    # are harness, not the system under test, so they get the cheap setting.
    harness_env = {**os.environ, **MALLOC_BIG_BUFFERS}
    serve_env = dict(os.environ)
    for item in args.serve_env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--serve-env wants KEY=VALUE, got {item!r}")
        serve_env[key] = value
    result["serve_env"] = list(args.serve_env)
    if python != sys.executable:
        # serve from another install (--python, --plain): its own package
        # only, not this tree's
        serve_env.pop("PYTHONPATH", None)
    result["serve_python"] = python
    result["install"] = getattr(args, "install", None) or "this interpreter"
    result["matcher"] = serve_matcher(python, serve_env)
    try:
        # Sink, serve and the load generator start together: serve's start-up
        # (imports, catalogue compilation) is the long pole.
        sink_port = free_port()
        sink = Child([sys.executable, str(HERE / "_sink.py"), "--port", str(sink_port)], stdin=True,
                     stderr_path=tmp / "sink.err", env=harness_env)
        listen_port = free_port()
        cfg = write_config(tmp, listen_port, sink_port, detect=not args.no_detect)
        result["detect"] = not args.no_detect
        if args.profile == "cprofile":
            argv = [python, "-c", _CPROFILE_SERVE, str(tmp / "serve.prof"), "-c", str(cfg)]
        else:
            argv = [python, "-m", "probetag", "serve", "-c", str(cfg)]
        if workers_ok:
            argv += ["--workers", str(args.workers)]
        t_serve = time.monotonic()
        serve = Child(argv, stderr_path=tmp / "serve.err", env=serve_env)
        # The load generator builds its chunks while serve starts; it retries
        # connecting until serve listens (bounded by --connect-timeout).
        load_argv = [sys.executable, str(HERE / "_loadgen.py"), "--port", str(listen_port),
                     "--seconds", str(args.warmup + args.seconds + 0.5), "--window", str(args.window),
                     "--connections", str(connections), "--chunks", str(args.chunks),
                     "--connect-timeout", "90"]
        if args.mode == "latency":
            load_argv += ["--rate", str(args.rate)]
        if args.mode == "sources":
            # Every sender must have been seen once before the peak RSS means
            # anything: keep sending until all were, within a bound.
            load_argv += ["--sources", str(args.sources), "--min-records", str(args.sources),
                          "--max-seconds", str(args.warmup + args.seconds + args.sources_max_extra)]
        if not workers_ok:
            load = Child(load_argv, stderr_path=tmp / "loadgen.err", env=harness_env)
        wait_listening(listen_port, 60, serve.proc)
        result["serve_startup_s"] = round(time.monotonic() - t_serve, 2)
        phase("serve listening")
        sink.next_json(30)  # {"event": "listening"}
        if workers_ok:
            # Every worker must listen before the load connects, or
            # SO_REUSEPORT has only the first ones to hand connections to.
            wait_listeners(listen_port, args.workers, 60, serve.proc)
            phase("every worker listening")
            load = Child(load_argv, stderr_path=tmp / "loadgen.err", env=harness_env)
        assert load is not None
        load.next_json(120)  # "started": the chunks are built and connections are up
        phase("load started")
        result["serve_processes"] = len(process_tree(serve.proc.pid))

        time.sleep(args.warmup)
        pids = process_tree(serve.proc.pid)
        workers = [p for p in pids if p != serve.proc.pid] if workers_ok else [serve.proc.pid]
        harness = {"sink": [sink.proc.pid], "loadgen": [load.proc.pid]}
        sink.send("snap")
        a = sink.next_json(30)
        user_a, sys_a = cpu_times(pids)
        cpu_a = user_a + sys_a
        wait_a = runqueue_wait(pids)
        harness_a = {k: cpu_seconds(v) for k, v in harness.items()}
        worker_a = {w: cpu_seconds([w]) for w in workers}
        phase("window opened")
        t_a = time.monotonic()
        spy = None
        if args.profile == "py-spy":
            spy = _start_profile(serve.proc.pid, args.seconds, tmp / "profile.txt", workers_ok)
        elif args.profile == "cprofile":
            os.kill(serve.proc.pid, signal.SIGUSR1)
        time.sleep(args.seconds)
        if args.profile == "cprofile":
            os.kill(serve.proc.pid, signal.SIGUSR2)
        pids = process_tree(serve.proc.pid)
        sink.send("snap")
        b = sink.next_json(30)
        user_b, sys_b = cpu_times(pids)
        cpu_b = user_b + sys_b
        wait_b = runqueue_wait(pids)
        harness_b = {k: cpu_seconds(v) for k, v in harness.items()}
        worker_b = {w: cpu_seconds([w]) for w in workers}
        phase("window closed")
        t_b = time.monotonic()
        conns_by_worker = connections_by_pid(workers, listen_port)
        rss = peak_rss_mb(pids)
        if spy is not None:
            try:
                spy.wait(args.seconds + 30)
                result["profile"] = summarize_profile(tmp / "profile.txt")
                keep = HERE / "results" / f"profile-{args.mode}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.txt"
                keep.parent.mkdir(exist_ok=True)
                shutil.copy(tmp / "profile.txt", keep)
                result["profile_raw"] = str(keep)
            except (subprocess.TimeoutExpired, OSError) as exc:
                result["profile_error"] = repr(exc)
        if args.profile == "cprofile":
            prof = tmp / "serve.prof"
            deadline = time.monotonic() + 15
            while not prof.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.3)  # let the dump finish
            try:
                result["profile"] = summarize_cprofile(prof)
                keep = HERE / "results" / f"cprofile-{args.mode}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.prof"
                keep.parent.mkdir(exist_ok=True)
                shutil.copy(prof, keep)
                result["profile_raw"] = str(keep)
            except (OSError, EOFError, ValueError, TypeError) as exc:
                result["profile_error"] = repr(exc)
        extra = args.sources_max_extra if args.mode == "sources" else 0.0
        done = load.next_json(args.warmup + args.seconds + extra + 60)
        phase("load done")
        rss = max(rss, peak_rss_mb(process_tree(serve.proc.pid)))
        time.sleep(0.2)
        sink.send("snap")
        final = sink.next_json(30)
    except (TimeoutError, RuntimeError, OSError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        for name in ("serve", "loadgen", "sink"):
            err = tmp / f"{name}.err"
            if err.exists():
                result[f"{name}_stderr_tail"] = err.read_text(errors="replace")[-1500:]
        return result
    finally:
        for child in (load, serve, sink):
            if child is not None:
                rc = child.stop(15)
                if child is serve:
                    result["serve_exit"] = rc
    phase("processes stopped")
    serve_err = (tmp / "serve.err").read_text(errors="replace")
    if serve_err.strip():
        result["serve_stderr_tail"] = serve_err[-1500:]

    dt = t_b - t_a
    recs = b["records"] - a["records"]
    harness_cores = {k: round((harness_b[k] - harness_a[k]) / dt, 3) if dt > 0 else None for k in harness_a}
    avg_in = done["bytes_sent"] / max(done["records_sent"], 1)
    hist = hist_diff(b["hist"], a["hist"])
    rps = recs / dt if dt > 0 else 0.0
    result.update({
        "records_per_s": round(rps),
        "mb_per_s": round(rps * avg_in / 1e6, 3),
        "avg_record_bytes": round(avg_in, 1),
        "latency_p50_ms": _r(percentile(hist, 0.50)),
        "latency_p99_ms": _r(percentile(hist, 0.99)),
        "latency_max_ms": _r(percentile(hist, 1.0)),
        "cpu_s_per_million": round((cpu_b - cpu_a) / recs * 1e6, 2) if recs else None,
        # What one fully available core would give at this CPU cost: a
        # projection for busy machines, not a measurement.
        "one_core_records_per_s": round(recs / (cpu_b - cpu_a)) if cpu_b > cpu_a else None,
        "serve_cpu_util": round((cpu_b - cpu_a) / dt, 2) if dt > 0 else None,
        # Kernel time (socket I/O, loopback TCP) as a share of serve's CPU.
        "serve_system_share": round((sys_b - sys_a) / (cpu_b - cpu_a), 2) if cpu_b > cpu_a else None,
        # Share of the window serve was ready to run but had no CPU: near 0 on
        # a quiet machine; well above 0 means the figures are held back by
        # other load, not by probetag.
        "serve_runqueue_wait_share": round((wait_b - wait_a) / dt, 2) if dt > 0 else None,
        "peak_rss_mb": round(rss, 1),
        "window_records": recs,
        "window_tagged": b["tagged"] - a["tagged"],
        "expected_tagged_share": round(done["probes_sent"] / max(done["records_sent"], 1), 4),
        "tagged_share": round((b["tagged"] - a["tagged"]) / recs, 4) if recs else None,
        "loadgen": {k: done.get(k) for k in ("records_sent", "records_acked", "unacked_chunks", "errors",
                                              "ack_rtt_p50_ms", "ack_rtt_p99_ms", "max_behind_ms",
                                              "cpu_seconds", "cpu_user", "cpu_system", "seconds")},
        "sink": {"records_total": final["records"], "records_counted": final["stamped"],
                 "cpu_seconds": final["cpu_seconds"], "rescans": final.get("rescans", 0),
                 "errors": final["errors"]},
        # CPU the load generator and the sink used in the window, in cores:
        # on a 2-core machine, what probetag could not have.
        "harness_cores": harness_cores,
        "harness_cores_total": round(sum(v for v in harness_cores.values() if v is not None), 3),
        "harness_us_per_record": round(sum(harness_b[k] - harness_a[k] for k in harness_a) / recs * 1e6, 3)
        if recs else None,
        # One entry per serve process that handles connections (the workers,
        # or serve itself): accepted load connections and CPU over the window.
        "per_worker": [{"connections": conns_by_worker.get(w, 0),
                        "cpu_util": round((worker_b[w] - worker_a[w]) / dt, 2) if dt > 0 else None}
                       for w in workers],
        # Acked upstream must have arrived downstream (acks are end to end):
        # the sink's own count of records (one stamp each), not the frames'
        # size claims.
        "delivery_ok": (final["stamped"] >= done["records_acked"] and not done["errors"]
                        and not final["errors"]),
    })
    if args.mode == "sources":
        result["sources"] = args.sources
        result["sources_covered"] = min(args.sources, done["records_acked"])
        result["load_seconds"] = done["seconds"]
    if not args.no_floor:
        templates = build_templates(min(args.chunks, 20), sources=args.sources if args.mode == "sources" else 0)
        floor = msgpack_floor(templates, args.floor_seconds)
        result["floor_records_per_s"] = round(floor)
        result["floor_ratio"] = round(rps / floor, 3) if floor else None
    phase("floor measured")
    result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def run_harness(args: argparse.Namespace) -> dict:
    """The harness alone: the load generator sends straight to the sink
    (no probetag) at ``--rate`` records/s, open loop, and the window gives
    what the two cost in cores at that rate: the CPU a real run at that rate
    takes from probetag on a machine with few cores."""
    result: dict = {"mode": "harness", "rate": args.rate, "seconds": args.seconds,
                    "load_avg_start": [round(x, 2) for x in os.getloadavg()]}
    env = {**os.environ, **MALLOC_BIG_BUFFERS}
    tmp = Path(tempfile.mkdtemp(prefix="probetag-bench-harness-"))
    sink = load = None
    try:
        sink = Child([sys.executable, str(HERE / "_sink.py")], stdin=True, stderr_path=tmp / "sink.err", env=env)
        port = sink.next_json(30)["port"]
        conns = args.connections or 8
        load = Child([sys.executable, str(HERE / "_loadgen.py"), "--port", str(port), "--rate", str(args.rate),
                      "--seconds", str(args.warmup + args.seconds + 0.5), "--window", str(args.window),
                      "--connections", str(conns), "--chunks", str(args.chunks)],
                     stderr_path=tmp / "loadgen.err", env=env)
        load.next_json(120)
        time.sleep(args.warmup)
        parts = {"sink": [sink.proc.pid], "loadgen": [load.proc.pid]}
        sink.send("snap")
        a = sink.next_json(30)
        cpu_a = {k: cpu_times(v) for k, v in parts.items()}
        t_a = time.monotonic()
        time.sleep(args.seconds)
        sink.send("snap")
        b = sink.next_json(30)
        cpu_b = {k: cpu_times(v) for k, v in parts.items()}
        dt = time.monotonic() - t_a
        done = load.next_json(args.warmup + args.seconds + 60)
        time.sleep(0.2)
        sink.send("snap")
        final = sink.next_json(30)
    except (TimeoutError, RuntimeError, OSError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        return result
    finally:
        for child in (load, sink):
            if child is not None:
                child.stop(15)
        shutil.rmtree(tmp, ignore_errors=True)
    recs = b["stamped"] - a["stamped"]
    cores = {}
    for k in parts:
        user = cpu_b[k][0] - cpu_a[k][0]
        system = cpu_b[k][1] - cpu_a[k][1]
        cores[k] = {"cores": round((user + system) / dt, 3), "user": round(user / dt, 3),
                    "system": round(system / dt, 3),
                    "us_per_record": round((user + system) / recs * 1e6, 3) if recs else None}
    total = sum(c["cores"] for c in cores.values())
    result.update({
        "connections": conns,
        "records_per_s": round(recs / dt) if dt > 0 else 0,
        "harness": cores,
        "harness_cores_total": round(total, 3),
        # The same cost scaled to exactly --rate (the achieved rate may fall short).
        "harness_cores_at_rate": round(total / (recs / dt) * args.rate, 3) if recs else None,
        # Everything acked arrived, counted by its stamp, and matched the frames' sizes.
        "delivery_ok": (final["stamped"] >= done["records_acked"] > 0 and not done["errors"]
                        and not final["errors"] and final["stamped"] == final["records"]),
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
    })
    return result


def _projected(cpus: int, n: int, c1_us: float | None, cn_us: float | None, h_us: float | None) -> float | None:
    """Scaling projected for an idle machine (see ``run_scaling``)."""
    if not c1_us or not cn_us or h_us is None:
        return None
    return round(min(cpus / (cn_us + h_us), n / cn_us) * c1_us, 3)


def run_scaling(args: argparse.Namespace) -> dict:
    """``max`` with one worker, then with ``--workers`` N (at least 2), back
    to back with the same harness: same load connections (default 8 for
    both), window and warm-up. The ratio of the two records/s is the
    scaling; next to it, what limits it on this machine."""
    n = max(args.workers, 2)
    conns = args.connections or 8
    result: dict = {"mode": "scaling", "workers": n, "connections": conns, "seconds": args.seconds,
                    "load_avg_start": [round(x, 2) for x in os.getloadavg()], "runs": []}
    for w in (1, n):
        sub = argparse.Namespace(**{**vars(args), "mode": "max", "workers": w, "connections": conns,
                                    "no_floor": True, "profile": None})
        r = run(sub)
        result["runs"].append(r)
        if "error" in r:
            result["error"] = f"workers={w}: {r['error']}"
            return result
    one, many = result["runs"]
    result["workers_supported"] = many["workers_supported"]
    cpus = os.cpu_count() or 1
    result.update({
        "records_per_s_1": one["records_per_s"],
        f"records_per_s_{n}": many["records_per_s"],
        "scaling_ratio": round(many["records_per_s"] / one["records_per_s"], 3) if one["records_per_s"] else None,
        # CPU cost per record with N workers relative to one: 1.0 means the
        # workers add no cost of their own; above 1, each record costs more.
        "cpu_per_record_ratio": round(many["cpu_s_per_million"] / one["cpu_s_per_million"], 3)
        if one["cpu_s_per_million"] and many["cpu_s_per_million"] else None,
        # How much more CPU N workers got than one. scaling_ratio is about
        # serve_cpu_ratio / cpu_per_record_ratio: a shortfall is either CPU
        # the workers did not get (harness, other load: see
        # serve_runqueue_wait_share) or cost per record they added.
        "serve_cpu_ratio": round(many["serve_cpu_util"] / one["serve_cpu_util"], 3)
        if one["serve_cpu_util"] else None,
        # The cores the harness left over in the N-worker run: the most N
        # workers could have used on an otherwise idle machine.
        "cores_left_for_serve": round(cpus - many["harness_cores_total"], 2),
        # What an otherwise idle machine would show, from CPU per record
        # (the figure other load disturbs least): one worker CPU-bound on one
        # core makes 1/c1 records/s; N workers and the harness share the
        # cores, so N workers make cores/(cN + h) (at most N/cN), where c is
        # serve's and h the harness's CPU seconds per record. The harness's
        # h is in the denominator: on 2 cores it caps what can be shown.
        "projected_ratio_idle": _projected(cpus, n, one["cpu_s_per_million"], many["cpu_s_per_million"],
                                           many["harness_us_per_record"]),
        "projected_ratio_idle_without_harness": _projected(cpus, n, one["cpu_s_per_million"],
                                                           many["cpu_s_per_million"], 0.0),
        "delivery_ok": one["delivery_ok"] and many["delivery_ok"],
        # A worker without a connection idles whatever it could do: the
        # N-worker figure then measures fewer workers (re-run; the kernel's
        # hash of the connections' source ports decides).
        "every_worker_loaded": all(w["connections"] > 0 for w in many["per_worker"]),
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
    })
    return result


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _start_profile(pid: int, seconds: float, out: Path, subprocesses: bool) -> subprocess.Popen | None:
    spy = shutil.which("py-spy")
    if spy is None:
        print("py-spy not found (pip install py-spy); no profile", file=sys.stderr)
        return None
    argv = [spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
            "--rate", "200", "--format", "raw", "--output", str(out), "--nonblocking"]
    if subprocesses:
        argv.append("--subprocesses")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------- report


def verdicts(result: dict) -> dict:
    """Target checks that apply to this mode (True/False)."""
    out = {}
    mode = result["mode"]
    for key, target in TARGETS.get(mode, {}).items():
        value = result.get(key)
        if value is None:
            continue
        out[key] = value <= target if key in ("latency_p99_ms", "peak_rss_mb") else value >= target
    return out


def table(rows: list[tuple[str, str, str]]) -> str:
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in rows)


def print_scaling(result: dict) -> None:
    if "error" in result:
        print(f"mode scaling: ERROR {result['error']}")
        return
    v = verdicts(result)
    n = result["workers"]
    rows = [("mode", "scaling", f"max with 1 and {n} workers, {result['connections']} load connections each"
             + ("" if result["workers_supported"] else " (--workers missing: both ran 1 process)"))]
    for r in result["runs"]:
        w = r["workers_requested"]
        split = r["per_worker"]
        rows.append((f"records/s, {w} worker{'s' if w > 1 else ''}", f"{r['records_per_s']:,}",
                     f"serve {r['serve_cpu_util']} cores, {r['cpu_s_per_million']} CPU s / M records, "
                     f"waited for a CPU {r['serve_runqueue_wait_share']:.0%}; harness {r['harness_cores_total']} cores"))
        if len(split) > 1:
            rows.append((f"  per worker ({w})", " / ".join(str(x["connections"]) for x in split),
                         "connections; CPU " + " / ".join(str(x["cpu_util"]) for x in split) + " cores"
                         + ("" if result["every_worker_loaded"] else "  [a worker got no connection: re-run]")))
    mark = "" if "scaling_ratio" not in v else ("  [target met]" if v["scaling_ratio"] else "  [target MISSED]")
    rows.append(("scaling", f"{result['scaling_ratio']}", f"target >= {TARGETS['scaling']['scaling_ratio']}{mark}"))
    rows.append(("serve CPU, N / 1", f"{result['serve_cpu_ratio']}",
                 f"cores the workers got over what one got; {result['cores_left_for_serve']} of "
                 f"{os.cpu_count()} cores were left by the harness"))
    rows.append(("CPU per record, N / 1", f"{result['cpu_per_record_ratio']}",
                 "1.0: the workers add no cost per record (scaling ~ serve CPU ratio / this)"))
    rows.append(("projected, idle machine", f"{result['projected_ratio_idle']}",
                 f"from CPU per record (serve {result['runs'][0]['cpu_s_per_million']} / "
                 f"{result['runs'][1]['cpu_s_per_million']} us, harness {result['runs'][1]['harness_us_per_record']} us); "
                 f"{result['projected_ratio_idle_without_harness']} without the harness"))
    rows.append(("delivery", "ok" if result["delivery_ok"] else "NOT OK", "both runs"))
    rows.append(("load average", f"{result['load_avg_start'][0]} -> {result['load_avg_end'][0]}", ""))
    print(table(rows))


def print_harness(result: dict) -> None:
    if "error" in result:
        print(f"mode harness: ERROR {result['error']}")
        return
    h = result["harness"]
    rows = [("mode", "harness", f"load generator -> sink, no probetag, {result['connections']} connections"),
            ("records/s", f"{result['records_per_s']:,}", f"asked {result['rate']:,.0f}"),
            ("harness CPU (cores)", f"{result['harness_cores_total']}",
             f"{result['harness_cores_at_rate']} at exactly {result['rate']:,.0f} records/s")]
    for k in ("loadgen", "sink"):
        rows.append((f"  {k}", f"{h[k]['cores']}", f"cores (user {h[k]['user']}, system {h[k]['system']}), "
                     f"{h[k]['us_per_record']} us/record"))
    rows.append(("delivery", "ok" if result["delivery_ok"] else "NOT OK", ""))
    rows.append(("load average", f"{result['load_avg_start'][0]} -> {result['load_avg_end'][0]}", ""))
    print(table(rows))


def print_result(result: dict) -> None:
    if result["mode"] == "scaling":
        print_scaling(result)
        return
    if result["mode"] == "harness":
        print_harness(result)
        return
    if "error" in result:
        print(f"mode {result['mode']}: ERROR {result['error']}")
        for key in ("serve_stderr_tail", "loadgen_stderr_tail", "sink_stderr_tail"):
            if key in result:
                print(f"--- {key}\n{result[key]}")
        return
    v = verdicts(result)
    mark = lambda k: "" if k not in v else ("  [target met]" if v[k] else "  [target MISSED]")  # noqa: E731
    t = TARGETS.get(result["mode"], {})
    rows = [
        ("mode", result["mode"], f"workers={result['workers_requested']}"
         + ("" if result["workers_supported"] in (None, True) else " (--workers missing: ran 1 process)")),
        ("records/s", f"{result['records_per_s']:,}", (f"target >= {t['records_per_s']:,}" if "records_per_s" in t else "") + mark("records_per_s")),
        ("MB/s (records in)", f"{result['mb_per_s']}", f"avg record {result['avg_record_bytes']} B"),
        ("latency p50 / p99 ms", f"{result['latency_p50_ms']} / {result['latency_p99_ms']}",
         (f"target p99 <= {t['latency_p99_ms']}" if "latency_p99_ms" in t else "") + mark("latency_p99_ms")),
        ("one busy core would give", f"{result['one_core_records_per_s']:,}",
         "records/s (projection from CPU s / M records)"),
        ("CPU s / M records", f"{result['cpu_s_per_million']}",
         f"serve CPU use {result['serve_cpu_util']} cores ({result['serve_system_share']:.0%} system),"
         f" waited for a CPU {result['serve_runqueue_wait_share']:.0%} of the window"),
        ("peak RSS MB", f"{result['peak_rss_mb']}", (f"target <= {t['peak_rss_mb']}" if "peak_rss_mb" in t else "") + mark("peak_rss_mb")),
        ("tagged share", f"{result['tagged_share']}", f"probe share sent {result['expected_tagged_share']}"),
    ]
    m = result.get("matcher") or {}
    rows.append(("matcher / walker", f"{m.get('backend', '?')} / {m.get('walker', '?')}",
                 f"{result.get('install', '')}" + (f"; SLOW: {'; '.join(m['slow_paths'])}" if m.get("slow_paths") else "")))
    if "sources" in result:
        rows.append(("senders covered", f"{result['sources_covered']:,}",
                     f"of {result['sources']:,} (load ran {result['load_seconds']:.1f} s)"))
    if "floor_records_per_s" in result:
        rows.append(("msgpack floor rec/s", f"{result['floor_records_per_s']:,}",
                     f"ratio {result['floor_ratio']}" + (" (target >= 0.5)" if "floor_ratio" in t else "") + mark("floor_ratio")))
    lg = result["loadgen"]
    rows.append(("delivery", "ok" if result["delivery_ok"] else "NOT OK",
                 f"acked {lg['records_acked']:,}, sink counted {result['sink']['records_counted']:,}, "
                 f"unacked chunks {lg['unacked_chunks']}"
                 + (f", sink errors {result['sink']['errors']}" if result["sink"]["errors"] else "")))
    hc = result["harness_cores"]
    rows.append(("harness CPU (cores)", f"{result['harness_cores_total']}",
                 f"load generator {hc['loadgen']}, sink {hc['sink']}; {result['harness_us_per_record']} us/record"))
    if len(result["per_worker"]) > 1:
        rows.append(("per worker", " / ".join(str(w["connections"]) for w in result["per_worker"]),
                     "connections; CPU " + " / ".join(f"{w['cpu_util']}" for w in result["per_worker"]) + " cores"))
    rows.append(("load average", f"{result['load_avg_start'][0]} -> {result['load_avg_end'][0]}",
                 f"loadgen CPU {lg['cpu_seconds']} s, sink CPU {result['sink']['cpu_seconds']} s"))
    print(table(rows))
    prof = result.get("profile")
    if prof and prof["samples"]:
        unit = prof.get("unit", "samples")
        print(f"profile ({prof['samples']} {unit}), self time:")
        for name, pct in prof["self"][:12]:
            print(f"  {pct:5.1f}%  {name}")
        print("inclusive:")
        for name, pct in prof["inclusive"][:15]:
            print(f"  {pct:5.1f}%  {name}")
        if prof["lines"]:
            print("hottest lines (self):")
            for name, pct in prof["lines"][:10]:
                print(f"  {pct:5.1f}%  {name}")


def write_json(result: dict, path: Path | None) -> Path:
    stamp_ = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    if path is None:
        path = HERE / "results" / f"bench_e2e-{result['mode']}-{stamp_}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"when": stamp_, "python": sys.version.split()[0], "machine": platform.machine(),
           "cpus": os.cpu_count(), "msgpack": msgpack.version, "chunk_records": CHUNK_RECORDS,
           "targets": TARGETS, "verdicts": verdicts(result) if "error" not in result else {},
           "result": result}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bench_e2e.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("max", "latency", "sources", "scaling", "harness"), default="max",
                    help="scaling: max with 1 worker, then with --workers (default 2), and their ratio; "
                         "harness: load generator straight to the sink at --rate, what the two cost")
    ap.add_argument("--seconds", type=float, default=20.0, help="measurement window (default 20)")
    ap.add_argument("--warmup", type=float, default=3.0, help="load before the window starts")
    ap.add_argument("--rate", type=float, default=None,
                    help="latency and harness modes: records/s, open loop (default 50,000; harness 300,000)")
    ap.add_argument("--sources", type=int, default=100_000, help="sources mode: distinct probing senders")
    ap.add_argument("--sources-max-extra", type=float, default=60.0,
                    help="sources mode: seconds the load may run past the window to reach every sender")
    ap.add_argument("--workers", type=int, default=1, help="passed to probetag serve if it has --workers")
    ap.add_argument("--connections", type=int, default=0,
                    help="load connections (default 1; 8 with --workers or in scaling mode)")
    ap.add_argument("--window", type=int, default=16, help="unacked chunks per connection")
    ap.add_argument("--chunks", type=int, default=50, help="distinct pre-built chunks of 1000 records")
    ap.add_argument("--floor-seconds", type=float, default=3.0)
    ap.add_argument("--no-floor", action="store_true")
    ap.add_argument("--profile", nargs="?", const="py-spy", choices=("py-spy", "cprofile"), default=None,
                    help="profile serve in the window: py-spy (sampling, wall clock; default) or cprofile "
                         "(deterministic, CPU clock: not skewed by other load, but slows serve down)")
    ap.add_argument("--serve-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for probetag serve (repeatable), e.g. MALLOC_MMAP_THRESHOLD_=33554432")
    ap.add_argument("--python", default=None, metavar="PATH",
                    help="interpreter that runs probetag serve (default: this one)")
    ap.add_argument("--no-detect", action="store_true",
                    help="serve with detection off: what forwarding alone costs")
    ap.add_argument("--plain", action="store_true",
                    help="build a fresh venv with a plain `pip install .` of this tree (bench/_plain.py) "
                         "and run serve from it: what a new user gets")
    ap.add_argument("--json", type=Path, default=None, help="write the JSON here instead of bench/results/")
    ap.add_argument("--verbose", action="store_true", help="print the phases with their times on stderr")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.seconds <= 0 or args.seconds > 600 or args.warmup < 0:
        print("--seconds must be in (0, 600], --warmup >= 0", file=sys.stderr)
        return 2
    if args.rate is None:
        args.rate = 300_000.0 if args.mode == "harness" else 50_000.0
    args.install = f"--python {args.python}" if args.python else None
    plain_dir = None
    if args.plain:
        import _plain

        plain_dir = Path(tempfile.mkdtemp(prefix="probetag-plain-"))
        t = time.monotonic()
        args.python = str(_plain.build(plain_dir))
        args.install = f"plain pip install . in a fresh venv ({time.monotonic() - t:.0f} s to build)"
    runner = {"scaling": run_scaling, "harness": run_harness}.get(args.mode, run)
    try:
        result = runner(args)
    finally:
        if plain_dir is not None:
            shutil.rmtree(plain_dir, ignore_errors=True)
    print_result(result)
    path = write_json(result, args.json)
    print(f"wrote {path}")
    if args.plain:
        # the plain install must be the fast one (as tests/install checks)
        m = (result.get("runs") or [result])[0].get("matcher") or {}
        if m.get("backend") not in ("hyperscan", "ahocorasick") or m.get("slow_paths"):
            print(f"plain install runs a slow path: {m}")
            return 1
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
