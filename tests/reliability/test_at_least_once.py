"""At-least-once end to end (issue #5): a Fluentd-like upstream that retries
unacked chunks -> ``probetag serve`` (subprocess) -> an acking downstream;
the downstream restarts repeatedly under load, is down for a long while, or
probetag itself is SIGKILLed and restarted. Every record has a unique id:
nothing may be lost, and every duplicate must come from a chunk that was in
flight (counted and printed)."""

from __future__ import annotations

import os
import threading
import time

from harness import FluentdUpstream, ServeProcess, parse_metrics, scrape, tally, wait_for
from util.downstream import Downstream
from util.ports import free_port

#: Outage length of the "downstream down" scenario. The issue asks for a
#: minute; RELIABILITY_OUTAGE shortens it for a quick local run.
OUTAGE = float(os.environ.get("RELIABILITY_OUTAGE", "60"))


def _config(ds_port: int, **flow: int) -> dict:
    return {
        "output": {"type": "forward", "address": f"127.0.0.1:{ds_port}", "retry_initial": 0.05,
                   "retry_max": 1.0, "ack_timeout": 5.0, "connect_timeout": 1.0},
        "flow": {"max_inflight_records": 5000, "max_inflight_bytes": 8 * 1024 * 1024, **flow},
        "shutdown_timeout": 5.0,
    }


def _check(fig, ds: Downstream, up: FluentdUpstream, total: int, **extra: object) -> None:
    t = tally(ds, up.resent_uids(), total)
    fig.add(**t.figures(), upstream_resent_chunks=up.resent_chunks,
            upstream_retries=dict(up.failures), **extra)
    assert up.error is None, up.error
    assert t.missing == [], f"{len(t.missing)} records lost, first {t.missing[:10]}"
    assert t.received == total
    assert t.unexplained_duplicates == 0, t
    assert up.acked_chunks() == len(up.chunks)


def test_downstream_restarted_repeatedly_under_load(tmp_path, figures):
    total, restarts = 24_000, 5
    mport = free_port()
    # A small ack delay keeps a request waiting for its ack most of the time,
    # so the restarts cut requests in flight.
    with Downstream(ack_delay=0.03) as ds, ServeProcess(tmp_path, _config(ds.port), metrics_port=mport) as pt:
        up = FluentdUpstream(pt.port, total, per_chunk=100, interval=0.04).start()  # ~10 s of load
        for i in range(restarts):
            # Restart when a share of the stream has gone through, so every
            # restart cuts live traffic.
            assert wait_for(lambda: up.sent_chunks >= (i + 1) * len(up.chunks) // (restarts + 2), 30)
            ds.restart(pause=0.3)
        assert up.wait(90), f"acked {up.acked_chunks()}/{len(up.chunks)}"
        series = parse_metrics(scrape(mport)[1])
        retries = sum(v for k, v in series.items() if k.startswith("probetag_downstream_retries"))
        rc = pt.stop()
        _check(figures, ds, up, total, restarts=restarts, downstream_connections=ds.connections,
               probetag_retries=int(retries),
               peak_rss_mib=round(pt.peak_rss_kib / 1024, 1), exit=rc)
    assert rc == 0
    assert ds.connections >= restarts + 1  # probetag reconnected after each restart
    assert retries >= 1, "no restart cut a request in flight"


def test_downstream_down_for_a_long_while(tmp_path, figures):
    total = 12_000
    with Downstream() as ds, ServeProcess(tmp_path, _config(ds.port, max_inflight_records=2000)) as pt:
        up = FluentdUpstream(pt.port, total, per_chunk=100, interval=0.02, ack_timeout=20.0).start()
        assert wait_for(lambda: up.sent_chunks >= len(up.chunks) // 4, 30)
        t0 = time.monotonic()
        acked_before = up.acked_chunks()
        stalled: list[int] = []
        # While it is down, nothing more may be acked upstream (acks are end
        # to end) and probetag holds at most its in-flight bound.
        watcher = threading.Timer(OUTAGE / 2, lambda: stalled.append(up.acked_chunks()))
        watcher.start()
        ds.restart(pause=OUTAGE)
        watcher.join()
        outage = time.monotonic() - t0
        assert up.wait(120), f"acked {up.acked_chunks()}/{len(up.chunks)}"
        recovery = time.monotonic() - t0 - outage
        rc = pt.stop()
        _check(figures, ds, up, total, outage_s=round(outage, 1), recovery_s=round(recovery, 1),
               peak_rss_mib=round(pt.peak_rss_kib / 1024, 1), exit=rc)
    # at most the chunks whose acks were already on their way when it stopped
    assert stalled and stalled[0] - acked_before <= 10, (acked_before, stalled)
    assert rc == 0


def test_probetag_sigkilled_and_restarted_mid_stream(tmp_path, figures):
    total, kills = 20_000, 2
    # The downstream holds each ack for 0.2 s so that chunks are always in
    # flight inside probetag when it is killed: the scenario is "killed with
    # unacked work", not "killed between chunks".
    with Downstream(ack_delay=0.2) as ds:
        pt = ServeProcess(tmp_path, _config(ds.port))
        with pt:
            up = FluentdUpstream(pt.port, total, per_chunk=100, interval=0.03, ack_timeout=5.0,
                                 retry_wait=0.3).start()
            for i in range(kills):
                assert wait_for(lambda: up.sent_chunks >= (i + 1) * len(up.chunks) // (kills + 2), 30)
                pt.kill()
                time.sleep(0.5)
                pt.start()
            assert up.wait(90), f"acked {up.acked_chunks()}/{len(up.chunks)}"
            rc = pt.stop()
        _check(figures, ds, up, total, kills=kills, peak_rss_mib=round(pt.peak_rss_kib / 1024, 1))
    assert rc == 0
    assert up.resent_chunks >= 1, "no chunk was in flight at a kill"
    assert up.connections >= kills + 1
