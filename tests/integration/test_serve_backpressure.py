"""Backpressure: a downstream that stops acking makes probetag stop reading
(in-flight stays within the bound, the sender's writes block); once acks
resume everything arrives, nothing lost."""

from __future__ import annotations

import threading
import time

from util.downstream import Downstream
from util.service import ServiceThread
from util.upstream import Upstream

BOUND = 200
PER_CHUNK = 50
CHUNKS = 400  # 20000 records of ~1 KiB: far more than socket buffers hold
PAD = "x" * 1000


def test_stalled_downstream_stops_reading_then_everything_arrives():
    cfg_out = {"type": "forward", "retry_initial": 0.02, "retry_max": 0.2, "ack_timeout": 30.0}
    with Downstream() as ds:
        ds.hold_acks()
        cfg = {"listen": {"address": "127.0.0.1:0"},
               "output": {**cfg_out, "address": f"127.0.0.1:{ds.port}"},
               "flow": {"max_inflight_records": BOUND}}
        with ServiceThread(cfg) as svc:
            up = Upstream(svc.port, timeout=60, sndbuf=32 * 1024)
            done = threading.Event()
            errors: list[BaseException] = []

            def send_all() -> None:
                try:
                    for c in range(CHUNKS):
                        up.send_chunk("bp.test", [{"seq": c * PER_CHUNK + i, "pad": PAD}
                                                  for i in range(PER_CHUNK)])
                except BaseException as exc:  # reported below
                    errors.append(exc)
                finally:
                    done.set()

            sender_thread = threading.Thread(target=send_all, daemon=True)
            sender_thread.start()
            # Watch the in-flight gauge while the downstream holds its acks,
            # until the sender makes no progress for 0.5 s (socket buffers
            # full, its sendall blocked) or 20 s pass.
            peak = 0
            stalled = False
            last, last_change = -1, time.monotonic()
            deadline = time.monotonic() + 20.0
            while time.monotonic() < deadline and not done.is_set():
                peak = max(peak, svc.metrics.get("inflight_records"))
                now_sent = up.bytes_sent
                if now_sent != last:
                    last, last_change = now_sent, time.monotonic()
                elif time.monotonic() - last_change >= 0.5:
                    stalled = True
                    break
                time.sleep(0.005)
            assert stalled, "the sender kept writing while probetag was full"
            assert not done.is_set(), "the sender was never blocked"
            assert up.bytes_sent < CHUNKS * PER_CHUNK * 1000
            # The bound is checked before each chunk is taken: at most one
            # chunk over it.
            assert BOUND <= peak < BOUND + PER_CHUNK, peak
            assert svc.metrics.get("backpressure_waits") >= 1
            assert up.acked_at == {}  # nothing acked upstream while the downstream holds
            ds.release_acks()
            assert done.wait(60), "the sender never finished after acks resumed"
            sender_thread.join(5)
            assert not errors, errors
            assert up.read_acks(CHUNKS, timeout=60) == CHUNKS
            up.close()
            peak_after = svc.metrics.get("inflight_records")
    seqs = sorted(rec["seq"] for _, _, rec in ds.acked_records())
    assert seqs == list(range(CHUNKS * PER_CHUNK))
    assert peak_after == 0
