"""``probetag serve --workers 2``: two processes on one port (SO_REUSEPORT),
each with its own downstream connection; the parent forwards SIGTERM (both
drain) and SIGHUP (both reload), restarts a worker that dies, and its
death makes the workers drain and exit."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

from fluent import sender

from util.downstream import Downstream
from util.ports import free_port
from util.upstream import Upstream

CONNECTIONS = 40
PER_CONNECTION = 25


def _metrics_base(avoid: int) -> int:
    """A port P with P and P + 1 free (worker 1 serves metrics on P + 1)."""
    for _ in range(50):
        base = free_port()
        if avoid in (base, base + 1):
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", base + 1))
        except OSError:
            continue
        return base
    raise RuntimeError("no free pair of metrics ports")


def _start(tmp_path: Path, ds_port: int, port: int, *extra: str) -> tuple[subprocess.Popen, Path]:
    cfg = tmp_path / "serve.yaml"
    metrics = _metrics_base(port)
    cfg.write_text(f"listen: {{address: '127.0.0.1:{port}'}}\n"
                   f"metrics: {{address: '127.0.0.1:{metrics}'}}\n"
                   f"output: {{type: forward, address: '127.0.0.1:{ds_port}', "
                   f"retry_initial: 0.02, retry_max: 0.2, ack_timeout: 5.0}}\n")
    err = tmp_path / "stderr.log"
    proc = subprocess.Popen([sys.executable, "-m", "probetag", "serve", "-c", str(cfg), "--workers", "2", *extra],
                            stdout=subprocess.PIPE, stderr=err.open("wb"))
    return proc, err


def _wait_log(err: Path, pattern: str, count: int, timeout: float = 30.0) -> list[re.Match[str]]:
    deadline = time.monotonic() + timeout
    while True:
        found = list(re.finditer(pattern, err.read_text(errors="replace")))
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _stop(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in body.splitlines()
               if line.startswith(("probetag_" + name + " ", "probetag_" + name + "{", name + " ", name + "{")))


def test_two_workers_share_the_port_and_every_record_arrives(tmp_path):
    port = free_port()
    with Downstream() as ds:
        proc, err = _start(tmp_path, ds.port, port)
        try:
            listening = _wait_log(err, r"worker=(\d) event=listening input=forward", 2)
            assert sorted(m.group(1) for m in listening) == ["0", "1"], err.read_text()
            metrics = {m.group(1): int(m.group(2)) for m in
                       _wait_log(err, r"worker=(\d) event=listening input=metrics address=127\.0\.0\.1:(\d+)", 2)}
            assert len(metrics) == 2, err.read_text()
            assert metrics["1"] == metrics["0"] + 1
            sent = []
            for c in range(CONNECTIONS):  # one fluent-logger connection each
                s = sender.FluentSender("w", host="127.0.0.1", port=port, timeout=3.0)
                try:
                    for i in range(PER_CONNECTION):
                        rec = {"seq": c * PER_CONNECTION + i, "message": f"user {i} logged in"}
                        assert s.emit("auth", rec), s.last_error
                        sent.append(rec["seq"])
                finally:
                    s.close()
            total = CONNECTIONS * PER_CONNECTION
            assert ds.wait_until(lambda: len(ds.acked_records()) >= total, 30)
            # Each worker counted its own connections; 40 connections all
            # hashed to one socket would be a 2^-39 chance.
            accepted = [_metric(metrics[w], "connections_accepted") for w in ("0", "1")]
            assert all(a >= 1 for a in accepted), accepted
            assert sum(accepted) >= CONNECTIONS
            # Each worker has its own downstream connection.
            assert len({r.connection for r in ds.snapshot() if r.outcome == "acked"}) == 2
        finally:
            _stop(proc)
        log = err.read_text()
    assert proc.returncode == 0, log
    assert Counter(rec["seq"] for _, _, rec in ds.acked_records()) == Counter(sent)
    assert len(re.findall(r"worker=\d event=stopped drained=True", log)) == 2, log


def test_sigterm_drains_both_workers(tmp_path):
    port = free_port()
    with Downstream(ack_delay=1.0) as ds:
        proc, err = _start(tmp_path, ds.port, port)
        ups: list[tuple[Upstream, str]] = []
        try:
            assert len(_wait_log(err, r"event=listening input=forward", 2)) == 2, err.read_text()
            # New connections until the downstream holds chunks from both
            # workers (its two connections), all still un-acked.
            for i in range(40):
                up = Upstream(port)
                ups.append((up, up.send_chunk("drain.t", [{"seq": i}])))
                if ds.wait_until(lambda: len({r.connection for r in ds.snapshot()}) >= 2, 0.3):
                    break
            assert len({r.connection for r in ds.snapshot()}) == 2, err.read_text()
            proc.send_signal(signal.SIGTERM)
            for up, _ in ups:
                assert up.read_acks(1, timeout=15) == 1
            proc.wait(30)
        finally:
            for up, _ in ups:
                up.close()
            _stop(proc)
        log = err.read_text()
    assert proc.returncode == 0, log
    assert len(re.findall(r"worker=\d event=stopped drained=True", log)) == 2, log
    acked = sorted(rec["seq"] for _, _, rec in ds.acked_records())
    assert acked == list(range(len(ups)))
    for up, cid in ups:
        assert up.acked_at[cid] >= min(r.acked_at for r in ds.snapshot() if r.acked_at)


def test_sighup_is_forwarded_and_a_worker_that_dies_is_restarted(tmp_path):
    port = free_port()
    with Downstream() as ds:
        proc, err = _start(tmp_path, ds.port, port)
        try:
            started = _wait_log(err, r"event=worker_started worker=(\d) pid=(\d+)", 2)
            assert len(started) == 2 and len(_wait_log(err, r"event=listening input=forward", 2)) == 2
            # SIGHUP to the parent: every worker reloads.
            proc.send_signal(signal.SIGHUP)
            reloaded = _wait_log(err, r"worker=(\d) event=reloaded", 2)
            assert sorted(m.group(1) for m in reloaded) == ["0", "1"], err.read_text()
            victim = int(started[1].group(2))
            os.kill(victim, signal.SIGKILL)
            restarted = _wait_log(err, r"event=worker_started worker=1 pid=(\d+)", 2)
            assert len(restarted) == 2 and int(restarted[1].group(1)) != victim, err.read_text()
            assert re.search(rf"event=worker_died worker=1 pid={victim} status=-9", err.read_text())
            assert len(_wait_log(err, r"worker=1 event=listening input=forward", 2)) == 2
            # Still serving on the shared port after the restart.
            for i in range(10):
                with socket.create_connection(("127.0.0.1", port), timeout=3):
                    pass
            s = sender.FluentSender("r", host="127.0.0.1", port=port, timeout=3.0)
            assert s.emit("x", {"seq": 1}), s.last_error
            s.close()
            assert ds.wait_until(lambda: len(ds.acked_records()) >= 1, 15)
        finally:
            _stop(proc)
    assert proc.returncode == 0, err.read_text()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_workers_drain_and_exit_when_the_parent_is_killed(tmp_path):
    with Downstream() as ds:
        proc, err = _start(tmp_path, ds.port, 0)  # port 0: the parent picks one for both
        try:
            started = _wait_log(err, r"event=worker_started worker=(\d) pid=(\d+)", 2)
            listening = _wait_log(err, r"event=listening input=forward address=127\.0\.0\.1:(\d+)", 2)
            assert len(listening) == 2, err.read_text()
            assert listening[0].group(1) == listening[1].group(1) != "0"
            pids = [int(m.group(2)) for m in started]
            assert all(_alive(p) for p in pids)
            proc.kill()
            proc.wait(5)
            deadline = time.monotonic() + 20
            while any(_alive(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not any(_alive(p) for p in pids), err.read_text()
        finally:
            _stop(proc)
    assert len(re.findall(r"worker=\d event=stopped drained=True", err.read_text())) == 2
