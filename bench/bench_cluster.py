"""Cluster benchmark: aggregate worker throughput with 1, 2 and 4 workers on
a real 3-node JetStream cluster (loopback), plus the ingress publish rate.

    python bench/bench_cluster.py [--workers 1,2,4] [--sources 40] [--per-source 1250] [--single]

Theory of operation
-------------------
* For each worker count a fresh 3-node cluster is started (own ports in
  24000-24999, temp store dirs, R3 streams) and K ``probetag cluster
  worker`` processes lease the partitions (fetched at once: nothing in flight).
  Then ``--sources`` x ``--per-source`` records are published through
  ``JetStreamOutput`` in process (the ingress's output: per-source batches
  of ``batch_records``, acked, 8 chunks in flight); that gives the
  *ingress* figure. Records are interleaved across sources as a forwarder
  sends them, so a 1000-record chunk of S sources makes batches of about
  1000/S records: many sources per chunk means small batches, lower rates.
* The *aggregate* figure is records / (time the output stream holds every
  result - time publishing began), polled every 0.2 s: ingress, partition
  mapping, workers (detection) and output publishing, end to end, with the
  workers running while the ingress publishes (as in production).
* The *worker CPU* figure is the user + system CPU of all worker processes
  (``/proc/PID/stat``) from the first publish until the output stream holds
  every result, per record: what a record costs a worker, whatever the
  machine's other load.
* ``--single`` also publishes one record per message (the Vector nats sink
  shape) for the batching comparison.
* The machine has 2 cores shared by the three nats-servers, the workers and
  this process: more workers than cores cannot add throughput here; the
  figure shows the cost of coordination, not the scaling of a real cluster
  (where each worker and each node has its own cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "cluster"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from _harness import NatsCluster, Role, wait_leases, write_cluster_yaml  # noqa: E402
from bench_e2e import cpu_seconds  # noqa: E402

from probetag._config import Config  # noqa: E402
from probetag._metrics import Metrics  # noqa: E402
from probetag._stage import OutChunk, pack_entry  # noqa: E402
from probetag.cluster import cluster_config_from_mapping  # noqa: E402


def make_chunks(sources: int, per_source: int, per_chunk: int = 1000, scanners: bool = False) -> list[OutChunk]:
    """Records interleaved across sources (like a real forwarder), 1 % probes.

    ``scanners=False``: every 100th record is a probe, whatever its source
    (with 40 sources, two sources send a probe every few lines between
    ordinary ones). ``scanners=True``: every 100th record is a probe sent
    by one of four scanner addresses that send nothing else, and the
    ordinary sources never probe (how scans look in real logs)."""
    t0 = 1_790_000_000
    entries: list[bytes] = []
    for k in range(per_source):
        for s in range(sources):
            ip = f"10.{s >> 16 & 255}.{s >> 8 & 255}.{s & 255}"
            n = k * sources + s
            if n % 100 == 0:
                src = f"192.0.2.{n // 100 % 4 + 1}" if scanners else ip
                rec = {"host": "GET", "ident": "/", "message": "HTTP/1.0#015", "source_address": src}
            else:
                rec = {"host": "web01", "ident": "sshd", "pid": "812",
                       "message": f"Accepted publickey for deploy from {ip} port {n % 65536} ssh2",
                       "source_address": ip}
            entries.append(pack_entry(t0 + n // 1000, rec))
    return [OutChunk("syslog.auth", b"".join(entries[i:i + per_chunk]), len(entries[i:i + per_chunk]))
            for i in range(0, len(entries), per_chunk)]


async def publish(urls: list[str], chunks: list[OutChunk], batch_records: int) -> float:
    from probetag.cluster import JetStreamOutput

    cluster = cluster_config_from_mapping({"servers": urls, "batch_records": batch_records})
    out = JetStreamOutput(cluster, Config(), Metrics())
    await out.start()
    t = time.monotonic()
    window = 8  # chunks in flight, as the runtime allows
    pending: set[asyncio.Task[None]] = set()
    for c in chunks:
        if len(pending) >= window:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        pending.add(asyncio.create_task(out.send(c)))
    await asyncio.gather(*pending)
    elapsed = time.monotonic() - t
    await out.close()
    return elapsed


async def out_count(urls: list[str]) -> int:
    import nats

    nc = await nats.connect(servers=urls)
    try:
        return (await nc.jetstream(timeout=5).stream_info("PROBETAG_OUT")).state.messages
    finally:
        await nc.close()


def run_one(workers: int, chunks: list[OutChunk], records: int, messages: int, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        root = Path(tmp)
        cluster = NatsCluster(root)
        roles: list[Role] = []
        try:
            cluster.start()
            cy = write_cluster_yaml(root, cluster.urls, ack_wait=5.0, fetch_batch=64)
            for i in range(workers):
                roles.append(Role(root, "worker", cy, f"worker-{i}"))
            # Every partition leased; on a fresh cluster nothing is in
            # flight, so each is fetched at once.
            wait_leases(cluster.urls, 8, workers, timeout=60, settle=1.0)
            pids = [r.proc.pid for r in roles]
            cpu0 = cpu_seconds(pids)
            t0 = time.monotonic()
            ingress_s = asyncio.run(publish(cluster.urls, chunks, 100))
            deadline = time.monotonic() + timeout
            n, last = 0, 0.0
            while time.monotonic() < deadline:
                n = asyncio.run(out_count(cluster.urls))
                if n >= messages:
                    last = time.monotonic()
                    break
                time.sleep(0.2)
            worker_cpu = cpu_seconds(pids) - cpu0
            load = os.getloadavg()[0]
        finally:
            for r in roles:
                r.stop()
            cluster.stop()
    done = n >= messages
    span = max(last - t0, 1e-6)
    return {"workers": workers, "records": records, "complete": done,
            "aggregate_records_per_s": round(records / span) if done else None,
            "ingress_records_per_s": round(records / ingress_s),
            "worker_cpu_us_per_record": round(worker_cpu / records * 1e6, 2), "load_avg": round(load, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--sources", type=int, default=40)
    ap.add_argument("--per-source", type=int, default=1250)
    ap.add_argument("--timeout", type=float, default=180.0)
    ap.add_argument("--single", action="store_true", help="also time one record per message")
    ap.add_argument("--scanners", action="store_true",
                    help="probes from four scanner addresses only (see make_chunks)")
    args = ap.parse_args()
    chunks = make_chunks(args.sources, args.per_source, scanners=args.scanners)
    records = sum(c.count for c in chunks)
    # Output messages: one per input message (all records share one tag),
    # i.e. per source and chunk, split at 100 records.
    from probetag.cluster import SourceBatcher
    batcher = SourceBatcher(100)
    messages = sum(len(batcher.split(c.tag, c.entries)) for c in chunks)
    rows = []
    for k in (int(x) for x in args.workers.split(",")):
        row = run_one(k, chunks, records, messages, args.timeout)
        rows.append(row)
        print(f"workers={k} records={records} aggregate_records_per_s={row['aggregate_records_per_s']} "
              f"ingress_records_per_s={row['ingress_records_per_s']} "
              f"worker_cpu_us_per_record={row['worker_cpu_us_per_record']} load_avg={row['load_avg']}", flush=True)
    result = {"bench": "cluster", "cores": os.cpu_count(), "scanners": args.scanners, "rows": rows}
    if args.single:
        few = make_chunks(20, 100)
        with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
            cluster = NatsCluster(Path(tmp))
            try:
                cluster.start()
                n = sum(c.count for c in few)
                batched = n / asyncio.run(publish(cluster.urls, few, 100))
                single = n / asyncio.run(publish(cluster.urls, few, 1))
            finally:
                cluster.stop()
        result["ingress_batched_vs_single"] = {"batched_records_per_s": round(batched),
                                               "single_records_per_s": round(single)}
        print(f"ingress batched={batched:.0f}/s one-per-message={single:.0f}/s ratio={batched / single:.1f}")
    outdir = REPO / "bench" / "results"
    outdir.mkdir(exist_ok=True)
    path = outdir / f"bench_cluster-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
