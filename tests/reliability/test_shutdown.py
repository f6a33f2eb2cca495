"""Graceful shutdown (issue #5): SIGTERM stops accepting, drains what is in
flight (acked downstream, then upstream) and exits within
``shutdown_timeout``, under load; a downstream that never acks cannot hold
the exit past the bound, and what it held is resent by the upstream to the
next instance, so nothing is lost."""

from __future__ import annotations

import signal
import socket
import time

from harness import FluentdUpstream, ServeProcess, tally, wait_for
from util.downstream import Downstream


def _config(ds_port: int, shutdown_timeout: float) -> dict:
    return {
        "output": {"type": "forward", "address": f"127.0.0.1:{ds_port}", "retry_initial": 0.05,
                   "retry_max": 0.5, "ack_timeout": 30.0},
        "flow": {"max_inflight_records": 3000},
        "shutdown_timeout": shutdown_timeout,
    }


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def _acked_upstream_uids(up: FluentdUpstream) -> set[int]:
    return {u for c in up.chunks if c.acked for u in c.uids}


def test_sigterm_under_load_drains_then_exits_and_next_instance_takes_the_rest(tmp_path, figures):
    total, timeout = 12_000, 8.0
    with Downstream(ack_delay=0.2) as ds:
        pt = ServeProcess(tmp_path, _config(ds.port, timeout))
        with pt:
            up = FluentdUpstream(pt.port, total, per_chunk=100, interval=0.03, window=16,
                                 retry_wait=0.3, ack_timeout=20.0).start()
            assert wait_for(lambda: up.sent_chunks >= len(up.chunks) // 3, 30)
            t0 = time.monotonic()
            pt.signal(signal.SIGTERM)
            refused_after = None
            if wait_for(lambda: _refused(pt.port), 2.0, step=0.01):
                refused_after = time.monotonic() - t0
            rc = pt.wait(timeout + 10)
            exit_s = time.monotonic() - t0
            # What the upstream saw acked by the first instance was acked downstream first.
            acked_by_first = _acked_upstream_uids(up)
            downstream_uids = {rec["uid"] for _, _, rec in ds.acked_records()}
            log = pt.log()
            pt.start()  # the next instance, same port: the upstream resends the rest to it
            assert up.wait(90), f"acked {up.acked_chunks()}/{len(up.chunks)}"
            rc2 = pt.stop()
        t = tally(ds, up.resent_uids(), total)
        figures.add(**t.figures(), exit_s=round(exit_s, 2), shutdown_timeout=timeout,
                    refused_after_s=round(refused_after or -1, 3), acked_before_exit=len(acked_by_first),
                    upstream_resent_chunks=up.resent_chunks)
    assert refused_after is not None and refused_after < 1.0, "still accepting after SIGTERM"
    assert rc == 0 and "drained=True" in log, log[-1500:]
    assert exit_s < timeout + 3
    assert acked_by_first and acked_by_first <= downstream_uids
    assert rc2 == 0
    assert t.missing == [] and t.unexplained_duplicates == 0, t


def test_sigterm_with_a_downstream_that_never_acks_exits_within_the_bound(tmp_path, figures):
    total, timeout = 3_000, 2.0
    with Downstream() as ds:
        ds.hold_acks()
        with ServeProcess(tmp_path, _config(ds.port, timeout)) as pt:
            up = FluentdUpstream(pt.port, total, per_chunk=100, window=30, ack_timeout=60.0).start()
            assert ds.wait_until(lambda: len(ds.snapshot()) >= 1, 15)
            assert wait_for(lambda: up.sent_chunks == len(up.chunks), 15)
            t0 = time.monotonic()
            pt.signal(signal.SIGTERM)
            rc = pt.wait(timeout + 10)
            exit_s = time.monotonic() - t0
            log = pt.log()
            up.stop()
        ds.release_acks()
    figures.add(exit_s=round(exit_s, 2), shutdown_timeout=timeout, exit=rc,
                acked_upstream=up.acked_chunks(), sent_chunks=len(up.chunks))
    assert exit_s < timeout + 2.5, exit_s
    assert rc == 1 and "drained=False" in log
    # Nothing was acked upstream: the upstream keeps every chunk to resend.
    assert up.acked_chunks() == 0
