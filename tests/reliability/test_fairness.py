"""One noisy upstream connection does not starve the others behind a slow
downstream: each connection's share of the in-flight bound (admission) and
the forward output's fair order (a quiet peer's chunk does not queue behind
a flood's backlog) keep a quiet client's chunk within a few downstream ack
cycles. Measured in downstream requests acked between sending a chunk and
getting its ack, not in wall time.

Loopback, one event loop for the input, pipeline and output, the test
downstream (util.downstream, acking each request after a delay) in its own
thread; the two upstreams are real forward clients (chunk ids, acks)."""

from __future__ import annotations

import asyncio
import time

import msgpack
import pytest

from probetag._config import config_from_mapping
from probetag._metrics import Metrics
from probetag._runtime import Pipeline
from probetag._stage import Processor
from probetag.inputs.forward_server import ForwardServer
from probetag.outputs import forward_client
from probetag.outputs.forward_client import ForwardOutput

from util.downstream import Downstream

#: 64 records of 4 KiB: one chunk of the flood is one request's worth
#: (MAX_BATCH_BYTES is lowered to that), and 32 of them fill the bound, so
#: in strict FIFO order a quiet chunk admitted behind them waited 32 cycles.
PAD = "x" * 4096
NOISY_RECORDS = 64
INFLIGHT_BYTES = 8 * 1024 * 1024
QUIET_CHUNKS = 5


def _frame(tag: str, records: list[dict], chunk: str) -> bytes:
    entries = b"".join(msgpack.packb([1700000000, r], use_bin_type=True) for r in records)
    return msgpack.packb([tag, entries, {"chunk": chunk, "size": len(records)}], use_bin_type=True)


async def _acks(reader, got: dict[str, float], stop: asyncio.Event) -> None:
    up = msgpack.Unpacker(raw=False)
    while not stop.is_set():
        data = await reader.read(65536)
        if not data:
            return
        up.feed(data)
        for msg in up:
            got[msg["ack"]] = time.monotonic()


async def _flood(writer, stop: asyncio.Event, sent: list[int]) -> None:
    recs = [{"message": f"noise {i}", "pad": PAD} for i in range(NOISY_RECORDS)]
    for n in range(2000):  # bounded; the bound in flight makes drain() block long before
        if stop.is_set():
            return
        writer.write(_frame("noisy", recs, f"n{n}"))
        await writer.drain()
        sent[0] += 1


def test_quiet_connection_is_acked_within_a_few_ack_cycles(monkeypatch):
    monkeypatch.setattr(forward_client, "MAX_BATCH_BYTES", NOISY_RECORDS * (len(PAD) + 64))
    down = Downstream(ack_delay=0.1).start()

    async def main():
        cfg = config_from_mapping({
            "listen": {"address": "127.0.0.1:0", "udp_heartbeat": False},
            "detect": {"enabled": False},
            "flow": {"max_inflight_bytes": INFLIGHT_BYTES},
            "output": {"type": "forward", "address": f"127.0.0.1:{down.port}", "ack_timeout": 30},
        })
        metrics = Metrics()
        pipeline = Pipeline(Processor(cfg, metrics), ForwardOutput(cfg.output, metrics), cfg.flow, metrics)
        server = ForwardServer(cfg.listen, pipeline, metrics)
        await pipeline.start()
        await server.start()
        stop = asyncio.Event()
        try:
            nr, nw = await asyncio.open_connection("127.0.0.1", server.port)
            noisy_acks: dict[str, float] = {}
            sent = [0]
            tasks = [asyncio.create_task(_flood(nw, stop, sent)),
                     asyncio.create_task(_acks(nr, noisy_acks, stop))]
            # The flood fills the bound first (the quiet one arrives late).
            for _ in range(3000):
                if pipeline.flow.bytes >= INFLIGHT_BYTES * 0.9 and len(noisy_acks) >= 2:
                    break
                await asyncio.sleep(0.01)
            assert pipeline.flow.full or pipeline.flow.bytes >= INFLIGHT_BYTES * 0.9
            qr, qw = await asyncio.open_connection("127.0.0.1", server.port)
            quiet_acks: dict[str, float] = {}
            tasks.append(asyncio.create_task(_acks(qr, quiet_acks, stop)))
            spans = []
            for k in range(QUIET_CHUNKS):
                cid = f"q{k}"
                t0 = time.monotonic()
                qw.write(_frame("quiet", [{"message": f"quiet {k}"}], cid))
                await qw.drain()
                for _ in range(3000):
                    if cid in quiet_acks:
                        break
                    await asyncio.sleep(0.01)
                assert cid in quiet_acks, f"quiet chunk {k} not acked"
                spans.append((t0, quiet_acks[cid]))
                await asyncio.sleep(0.05)  # "a chunk now and then"
            still_flooding = pipeline.flow.bytes > INFLIGHT_BYTES / 4
            return spans, sent[0], len(noisy_acks), still_flooding, metrics
        finally:
            stop.set()
            for t in tasks:
                t.cancel()
            await server.stop_accepting()
            await server.close()
            await pipeline.close()

    try:
        spans, sent, noisy_acked, still_flooding, m = asyncio.run(asyncio.wait_for(main(), 120))
    finally:
        time.sleep(0.3)  # the downstream's last acks (ack_delay) before its loop stops
        down.stop()
    acked = sorted(r.acked_at for r in down.snapshot() if r.outcome == "acked" and r.acked_at)
    cycles = [sum(1 for a in acked if t0 < a <= t1) for t0, t1 in spans]
    print(f"FIGURES fairness quiet_cycles={cycles} noisy_sent={sent} noisy_acked={noisy_acked}")
    assert still_flooding                       # the flood was on the whole time
    assert noisy_acked >= 10                    # and was served too
    # One cycle for the request in progress to make room, one for the quiet
    # chunk's own request; one more of slack. FIFO order: ~32 cycles each.
    assert max(cycles) <= 4, cycles
    assert m.get("fair_share_waits") >= 1
    assert m.get("records_out") >= QUIET_CHUNKS


def test_fair_share_admission_unit():
    """Two owners: one holding its share waits while the other passes."""
    from probetag._config import Flow
    from probetag._runtime import FlowControl

    async def main():
        flow = FlowControl(Flow(max_inflight_records=100, max_inflight_bytes=10**9), Metrics())
        a, b = object(), object()
        flow.add(60, 0, a)
        assert not flow.blocked(a)              # alone: the whole bound
        waiter = asyncio.create_task(flow.wait(b))
        await asyncio.sleep(0)
        assert waiter.done()                    # room: b passes at once
        flow.add(1, 0, b)
        assert flow.over_share(a) and flow.blocked(a)   # 60 of 100 with 2 owners
        assert not flow.blocked(b)
        blocked_a = asyncio.create_task(flow.wait(a))
        await asyncio.sleep(0)
        assert not blocked_a.done()
        flow.release(1, 0, b)                   # b has nothing left: a alone again
        for _ in range(5):                      # a few loop turns for the wake-up
            await asyncio.sleep(0)
        assert blocked_a.done()
        flow.release(60, 0, a)
        assert flow.active() == 0 and flow.records == 0

    asyncio.run(main())


def test_output_fair_order_unit():
    """Peers take turns; each peer's chunks keep their order; a batch joins
    later chunks of its tag only where no earlier chunk of their peer waits."""
    from probetag._chunk import OutChunk
    from probetag.outputs._common import Queued

    async def main():
        cfg = config_from_mapping({"output": {"type": "forward", "address": "127.0.0.1:1"}})
        out = ForwardOutput(cfg.output, Metrics())
        loop = asyncio.get_running_loop()
        plan = [("a", "t", 1), ("a", "t", 2), ("a", "u", 3), ("a", "t", 4), ("b", "t", 5), ("c", "v", 6)]
        for peer, tag, n in plan:
            out._queued[peer] = out._queued.get(peer, 0) + 1  # noqa: SLF001 - as send() counts
            out._queue.items.append(Queued(OutChunk(tag, b"x" * n, 1, peer), loop.create_future()))
        batches = []
        while out._queue.items:  # noqa: SLF001
            batches.append([(q.chunk.peer, len(q.chunk.entries)) for q in out._take_batch()])  # noqa: SLF001
        return batches

    batches = asyncio.run(main())
    # a's first "t" chunks, b's "t" chunk joins (nothing of b waits before it);
    # a's "t" chunk 4 cannot pass a's "u" chunk 3. Then c (never served), then a.
    assert batches == [[("a", 1), ("a", 2), ("b", 5)], [("c", 6)], [("a", 3)], [("a", 4)]]
