"""probetag serve -> a downstream forward server, acked end to end, with the
downstream misbehaving (late acks, ``{}``, closing without an ack, restarting)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from fluent import sender

from util.downstream import Downstream
from util.ports import free_port, wait_listening
from util.service import ServiceThread
from util.upstream import Upstream
from util.wait import kill_if_running

N = 400


def _cfg(downstream_port: int, **output: object) -> dict:
    out = {"type": "forward", "address": f"127.0.0.1:{downstream_port}",
           "retry_initial": 0.02, "retry_max": 0.2, "ack_timeout": 2.0}
    out.update(output)
    return {"listen": {"address": "127.0.0.1:0"}, "output": out}


def _send_fluent_logger(port: int, n: int, tag: str = "app") -> list[dict]:
    s = sender.FluentSender(tag, host="127.0.0.1", port=port, nanosecond_precision=True)
    records = [{"seq": i, "message": f"user {i} logged in", "bin": f"v{i}".encode()} for i in range(n)]
    try:
        for r in records:
            assert s.emit("auth", r), s.last_error
    finally:
        s.close()
    return records


def _seqs(records) -> Counter:
    return Counter(rec["seq"] for _, _, rec in records)


def test_fluent_logger_to_downstream_every_record_arrives():
    with Downstream() as ds, ServiceThread(_cfg(ds.port)) as svc:
        sent = _send_fluent_logger(svc.port, N)
        assert ds.wait_until(lambda: len(ds.acked_records()) >= N)
        got = ds.acked_records()
        assert svc.call(lambda: svc.metrics.get("inflight_records")) == 0 or ds.wait_until(
            lambda: svc.metrics.get("inflight_records") == 0, 5)
    assert len(got) == N
    by_seq = {rec["seq"]: (tag, rec) for tag, _, rec in got}
    for r in sent:
        tag, rec = by_seq[r["seq"]]
        assert tag == "app.auth"
        assert rec["message"] == r["message"] and rec["bin"] == r["bin"]
    assert svc.metrics.get("acks_received") == svc.metrics.get("chunks_out") >= 1
    assert svc.metrics.get("downstream_retries") == 0


def _upstream_run(ds: Downstream, svc: ServiceThread, chunks: int, per_chunk: int):
    up = Upstream(svc.port)
    try:
        ids = []
        for c in range(chunks):
            recs = [{"seq": c * per_chunk + i, "message": f"chunk {c} rec {i}"} for i in range(per_chunk)]
            ids.append(up.send_chunk("up.test", recs))
        assert up.read_acks(chunks, timeout=30) == chunks, (up.acked_at, up.other_replies)
        assert set(up.acked_at) == set(ids)
        assert up.other_replies == []
        return up
    finally:
        up.close()


def _check_all_arrived(ds: Downstream, total: int) -> int:
    """Every record acked downstream at least once; returns the duplicates."""
    counts = _seqs(ds.acked_records())
    assert set(counts) == set(range(total))
    return sum(counts.values()) - total


def _check_ack_order(ds: Downstream, up: Upstream, per_chunk: int) -> None:
    # For each upstream chunk, its records' downstream ack came before the
    # upstream ack (monotonic clock, same process).
    first_ack: dict[int, float] = {}
    for r in ds.snapshot():
        if r.outcome == "acked":
            for _, rec in r.records:
                s = rec["seq"]
                first_ack[s] = min(first_ack.get(s, r.acked_at), r.acked_at)
    for idx, cid in enumerate(sorted(up.sent_at, key=up.sent_at.get)):
        latest_down = max(first_ack[idx * per_chunk + i] for i in range(per_chunk))
        assert up.acked_at[cid] >= latest_down, (idx, up.acked_at[cid], latest_down)


def test_late_acks_upstream_ack_follows_downstream_ack():
    with Downstream(ack_delay=0.3) as ds, ServiceThread(_cfg(ds.port)) as svc:
        up = _upstream_run(ds, svc, chunks=6, per_chunk=20)
    assert _check_all_arrived(ds, 120) == 0
    _check_ack_order(ds, up, 20)
    # Nothing was acked upstream before the delayed downstream ack could exist.
    assert min(up.acked_at.values()) - min(up.sent_at.values()) >= 0.3


@pytest.mark.parametrize("fault", ["nack", "drop", "wrong_ack"])
def test_refusing_downstream_is_retried(fault):
    kw = {f"{fault}_first": 3}
    with Downstream(**kw) as ds, ServiceThread(_cfg(ds.port)) as svc:
        up = _upstream_run(ds, svc, chunks=5, per_chunk=10)
        reasons = {k: v for k, v in svc.metrics.snapshot().items() if k.startswith("downstream_retries")}
    dups = _check_all_arrived(ds, 50)
    refused = [r for r in ds.snapshot() if r.outcome in ("nacked", "dropped", "wrong_ack")]
    assert len(refused) == 3
    # Duplicates only come from retried requests, and there were none here:
    # a refused request was never acked, so its records count once.
    assert dups == 0
    reason = {"nack": "nack", "drop": "eof", "wrong_ack": "unexpected_ack"}[fault]
    assert reasons == {f'downstream_retries{{reason="{reason}"}}': 3}, reasons
    _check_ack_order(ds, up, 10)


def test_downstream_restart_mid_stream():
    with Downstream() as ds, ServiceThread(_cfg(ds.port)) as svc:
        up = Upstream(svc.port)
        try:
            per = 10
            ds.hold_acks()
            for c in range(5):
                up.send_chunk("up.restart", [{"seq": c * per + i} for i in range(per)])
            # A request is in flight, un-acked, when the downstream goes away.
            assert ds.wait_until(lambda: len(ds.snapshot()) >= 1, 10)
            ds.restart(pause=0.5)
            ds.release_acks()
            for c in range(5, 10):
                up.send_chunk("up.restart", [{"seq": c * per + i} for i in range(per)])
            assert up.read_acks(10, timeout=30) == 10
        finally:
            up.close()
        assert svc.metrics.get("downstream_retries", reason="eof") >= 1
    dups = _check_all_arrived(ds, 100)
    retried = [r for r in ds.snapshot() if r.outcome != "acked"]
    assert retried, "the restart did not interrupt a request"
    # Duplicates are bounded by what was in requests that had to be retried.
    assert dups <= sum(len(r.records) for r in retried)
    _check_ack_order(ds, up, 10)


def test_subprocess_forward_to_with_fluent_logger():
    port = free_port()
    with Downstream() as ds:
        proc = subprocess.Popen(
            [sys.executable, "-m", "probetag", "serve", "--listen", f"127.0.0.1:{port}",
             "--forward-to", f"127.0.0.1:{ds.port}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            assert wait_listening(port), "server did not come up"
            s = sender.FluentSender("sp", host="127.0.0.1", port=port, timeout=3.0)
            assert s.emit("x", {"seq": -1}), s.last_error
            s.close()
            sent = _send_fluent_logger(port, N, tag="sp")
            assert ds.wait_until(lambda: len(ds.acked_records()) >= N + 1)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=20)
        finally:
            kill_if_running(proc)
    assert proc.returncode == 0, err
    assert out == b""
    counts = _seqs(ds.acked_records())
    assert counts == Counter([-1] + [r["seq"] for r in sent])


def test_sigterm_drains_in_flight_acked_downstream_then_upstream():
    port = free_port()
    with Downstream(ack_delay=1.0) as ds:
        proc = subprocess.Popen(
            [sys.executable, "-m", "probetag", "serve", "--listen", f"127.0.0.1:{port}",
             "--forward-to", f"127.0.0.1:{ds.port}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert wait_listening(port), "server did not come up"
            up = Upstream(port)
            cid = up.send_chunk("drain.t", [{"seq": i} for i in range(10)])
            assert ds.wait_until(lambda: len(ds.snapshot()) >= 1, 10)  # downstream has it, un-acked
            proc.send_signal(signal.SIGTERM)
            assert up.read_acks(1, timeout=15) == 1
            up.close()
            _, err = proc.communicate(timeout=20)
        finally:
            kill_if_running(proc)
    assert proc.returncode == 0, err
    assert b"drained=True" in err
    (req,) = ds.snapshot()
    assert req.outcome == "acked" and up.acked_at[cid] >= req.acked_at
    assert sorted(rec["seq"] for _, rec in req.records) == list(range(10))
