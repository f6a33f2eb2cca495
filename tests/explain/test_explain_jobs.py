"""``probetag explain --jobs 2``: the reading process and the detecting process.

The output comparisons of every CLI test run with ``--jobs 1`` and
``--jobs 2`` (tests/explain/test_explain_output.py, tests/e2e/test_explain_cli.py).
Here: stdout, stderr and exit status of the two agree on the error cases
and in text format, the default picks the pipeline by input size, and the
reading process never outlives the detecting one (killed reader, a closed
stdout, a killed parent).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probetag import explain

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "rsyslog"


def _explain(*args: str, jobs: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "probetag", "explain", "--jobs", jobs, *args], input=stdin,
                          capture_output=True, timeout=120)


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        # the command name is in parentheses and may hold spaces
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(d))
    return out


def _wait_for(cond, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.02)
    return cond()


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


@pytest.mark.skipif(not hasattr(os, "fork") or not Path("/proc/self/stat").exists(), reason="needs fork and /proc")
class TestPipeline:
    def test_errors_and_text_equal_one_process(self, tmp_path: Path) -> None:
        golden = (FIX / "rfc3339.log").read_bytes()
        cut = tmp_path / "cut.gz"
        cut.write_bytes(gzip.compress(golden * 40)[:-20])
        long = tmp_path / "long.log"  # a line with no LF in a whole block, past the sniffed lines, then more lines
        long.write_bytes(golden * 2 + b"Nov 27 10:00:00 h app: " + b"x" * (3 * explain._BLOCK) + b"\n" + golden)
        files = [str(FIX / "json.log"), str(tmp_path / "missing.log"), str(cut), str(long),
                 str(FIX / "traditional.log")]
        for fmt in ("text", "jsonl"):
            one = _explain("--format", fmt, *files, jobs="1")
            two = _explain("--format", fmt, *files, jobs="2")
            assert one.returncode == 2 and b"missing.log" in one.stderr and b"cut.gz" in one.stderr
            assert (two.returncode, two.stdout, two.stderr) == (one.returncode, one.stdout, one.stderr), fmt
        # The cut line is one line, cut once: the lines after it keep their numbers.
        n = golden.count(b"\n")
        for jobs in ("1", "2"):
            text = _explain(str(long), jobs=jobs).stdout
            assert b"1 over-long line cut" in text and f": {3 * n + 1} lines".encode() in text, text[:200]
            probes = [json.loads(x) for x in _explain("--format", "jsonl", str(long), jobs=jobs).stdout.splitlines()]
            alone = [json.loads(x) for x in _explain("--format", "jsonl", str(FIX / "rfc3339.log"),
                                                    jobs=jobs).stdout.splitlines()]
            after = [p["line"] - (2 * n + 1) for p in probes if p["probe"] and p["line"] > 2 * n + 1]
            assert after == [p["line"] for p in alone if p["probe"]] and after

    def test_stdin_text_equals_one_process(self) -> None:
        data = gzip.compress((FIX / "traditional.log").read_bytes())
        one, two = _explain("-", jobs="1", stdin=data), _explain("-", jobs="2", stdin=data)
        assert one.returncode == 0 and b"scanner-probe lines" in one.stdout
        assert (two.returncode, two.stdout, two.stderr) == (one.returncode, one.stdout, one.stderr)

    def test_reader_killed_mid_file_is_an_error(self) -> None:
        # stdin is a pipe kept open, so the reading process is mid-file
        p = subprocess.Popen([sys.executable, "-m", "probetag", "explain", "--jobs", "2", "--format", "jsonl", "-"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.stdin is not None
        try:
            p.stdin.write((FIX / "rfc3339.log").read_bytes())
            p.stdin.flush()
            kids = _wait_for(lambda: _children(p.pid))
            assert len(kids) == 1, kids
            os.kill(kids[0], signal.SIGKILL)
            out, err = p.communicate(timeout=60)
        finally:
            p.kill()
            p.wait(10)
        assert p.returncode == 2
        assert b"error: -: the reading process ended before the end of the input (killed by signal 9)" in err
        assert b"Traceback" not in err
        assert _gone(kids[0])

    def test_closed_stdout_ends_both_processes(self, tmp_path: Path) -> None:
        f = tmp_path / "many.log"
        f.write_bytes(b"Nov 27 10:00:00 h app: line\n" * 400_000)
        p = subprocess.Popen([sys.executable, "-m", "probetag", "explain", "--jobs", "2", "--format", "jsonl", str(f)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.stdout is not None and p.stderr is not None
        try:
            assert p.stdout.readline() == b'{"line": 1, "probe": null}\n'
            kids = _children(p.pid)
            t0 = time.monotonic()
            p.stdout.close()
            err = p.stderr.read()
            assert p.wait(timeout=30) == 141
            assert time.monotonic() - t0 < 10
        finally:
            p.kill()
            p.wait(10)
        assert b"Traceback" not in err and b"error" not in err
        # reaped by the detecting process before it exited: no zombie, no orphan
        assert kids and all(_gone(k) for k in kids), kids

    def test_reader_dies_with_its_parent(self) -> None:
        p = subprocess.Popen([sys.executable, "-m", "probetag", "explain", "--jobs", "2", "-"],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert p.stdin is not None
        try:
            p.stdin.write(b"Nov 27 10:00:00 h app: line\n" * 1000)
            p.stdin.flush()
            kids = _wait_for(lambda: _children(p.pid))
            assert len(kids) == 1, kids
            p.kill()  # no chance to clean up: the reader blocked on stdin must still go
            p.wait(10)
            assert _wait_for(lambda: _gone(kids[0]), 10.0), kids
        finally:
            p.kill()
            p.wait(10)
            p.stdin.close()

    def test_ctrl_c_ends_both(self, tmp_path: Path) -> None:
        # A shell without job control starts background jobs with SIGINT
        # ignored, and Python then installs no handler for it: the run under
        # test gets Ctrl-C's default, as from a terminal.
        p = subprocess.Popen([sys.executable, "-m", "probetag", "explain", "--jobs", "2", "-"],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        assert p.stdin is not None
        try:
            p.stdin.write(b"Nov 27 10:00:00 h app: line\n" * 1000)
            p.stdin.flush()
            kids = _wait_for(lambda: _children(p.pid))
            assert len(kids) == 1, kids
            p.send_signal(signal.SIGINT)
            p.wait(30)
        finally:
            p.kill()
            p.wait(10)
            p.stdin.close()
        assert p.returncode != 0
        assert _gone(kids[0])


def _args(*files: str, jobs: int | None = None) -> argparse.Namespace:
    return argparse.Namespace(files=list(files), jobs=jobs)


def test_default_jobs_follow_the_input_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "f.log"
    f.write_bytes(b"x\n" * 1000)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(explain, "_PIPELINE_MIN_BYTES", 2000)
    assert explain._jobs(_args(str(f))) == 2
    assert explain._jobs(_args(str(f), jobs=1)) == 1
    assert explain._jobs(_args(str(f), jobs=8)) == 2  # two stages: two processes
    monkeypatch.setattr(explain, "_PIPELINE_MIN_BYTES", 2001)
    assert explain._jobs(_args(str(f))) == 1
    assert explain._jobs(_args(str(f), str(f))) == 2  # the sizes add up
    assert explain._jobs(_args(str(tmp_path / "missing"), str(f))) == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert explain._jobs(_args(str(f), str(f))) == 1
    assert explain._jobs(_args(str(f), jobs=2)) == 2  # asked for


def test_no_fork_with_threads_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    stop = threading.Event()
    t = threading.Thread(target=stop.wait, args=(10,))
    t.start()
    try:
        assert explain._jobs(_args(str(tmp_path), jobs=2)) == 1
    finally:
        stop.set()
        t.join(10)
