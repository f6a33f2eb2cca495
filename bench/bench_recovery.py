"""Cluster start-up and recovery times on a real 3-node JetStream cluster
(loopback), with the shipped lease timing (``ClusterConfig`` defaults:
lease_ttl 8 s, lease_renew 1 s, ack_wait 8 s).

    python bench/bench_recovery.py [--runs 1] [--only cold,worker,leader]

Theory of operation
-------------------
* ``cold``: a fresh cluster and an ingress; two workers are started at T;
  a chunk is sent at T. Figures: T -> every partition ``partition_ready``
  (from the workers' logs) and T -> the chunk's records all in the output
  stream.
* ``worker``: two workers under steady load; one is SIGKILLed at T.
  Figure: T -> the survivor's ``partition_ready`` for the last of the dead
  worker's partitions (its lease TTL, then the in-flight wait).
* ``leader``: two workers under steady load; the node leading the lease
  bucket is SIGKILLed at T and restarted 10 s later. Figures: the longest
  time without an output message (stream timestamps) and the number of
  ``lease_lost`` lines (0: every lease survived the election).
* Every figure comes with the load average: the machine is shared.
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

from _harness import (NatsCluster, Paused, Role, chunks, collect, free_ports, log_events, send_load,  # noqa: E402
                      stream_leader, wait_leases, write_cluster_yaml)

from probetag.cluster import ClusterConfig  # noqa: E402

D = ClusterConfig()
TIMING = {"lease_ttl": D.lease_ttl, "lease_renew": D.lease_renew, "ack_wait": D.ack_wait,
          "publish_timeout": D.publish_timeout, "fetch_timeout": D.fetch_timeout}


def _setup(root: Path) -> tuple[NatsCluster, Path, int, list[Role]]:
    cluster = NatsCluster(root)
    cluster.start()
    cy = write_cluster_yaml(root, cluster.urls, **TIMING)
    (port,) = free_ports(1)
    roles = [Role(root, "ingress", cy, "ingress", "--listen", f"127.0.0.1:{port}")]
    return cluster, cy, port, roles


def cold(root: Path) -> dict:
    cluster, cy, port, roles = _setup(root)
    try:
        load = chunks(0, 100, per_chunk=100)
        want = {r["rid"] for _, _, recs in load for r in recs}
        # The ingress must listen first (it is not what is measured).
        deadline = time.monotonic() + 60
        while True:
            try:
                send_load(port, [], timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        t = time.time()
        roles += [Role(root, "worker", cy, "worker-a"), Role(root, "worker", cy, "worker-b")]
        send_load(port, load, timeout=60)
        got = asyncio.run(collect(cluster.urls, want, timeout=60))
        assert want <= got.events.keys()
        out = max(got.stamps) - t
        wait_leases(cluster.urls, 8, 2, timeout=60, settle=0)
        ready = [float(e["fetch_from"]) for r in roles[1:] for e in log_events(r.log, "partition_ready")]
        return {"all_partitions_ready_s": round(max(ready) - t, 2), "first_records_out_s": round(out, 2)}
    finally:
        for r in roles:
            r.stop()
        cluster.stop()


def worker_kill(root: Path) -> dict:
    cluster, cy, port, roles = _setup(root)
    try:
        a, b = Role(root, "worker", cy, "worker-a"), Role(root, "worker", cy, "worker-b")
        roles += [a, b]
        owners = wait_leases(cluster.urls, 8, 2, timeout=60, settle=1.0)
        a_id = log_events(a.log, "worker_started")[0]["worker"]
        theirs = {k[1:] for k, v in owners.items() if v == a_id}
        load = chunks(0, 3000, per_chunk=25)
        sender = Paused(port, load)
        sender.wait_mid_load()
        t = time.time()
        a.kill()
        sender.resume()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready = {e["partition"]: float(e["fetch_from"]) for e in log_events(b.log, "partition_ready")
                     if float(e["fetch_from"]) > t}
            if theirs <= ready.keys():
                break
            time.sleep(0.2)
        sender.thread.join(timeout=120)
        resume = max(ready[p] for p in theirs) - t
        reasons = sorted({e["reason"] for e in log_events(b.log, "partition_ready")
                          if e["partition"] in theirs and float(e["fetch_from"]) > t})
        return {"partitions_resumed_s": round(resume, 2), "ready_reasons": reasons}
    finally:
        for r in roles:
            r.stop()
        cluster.stop()


def leader_kill(root: Path) -> dict:
    cluster, cy, port, roles = _setup(root)
    try:
        ws = [Role(root, "worker", cy, "worker-a"), Role(root, "worker", cy, "worker-b")]
        roles += ws
        wait_leases(cluster.urls, 8, 2, timeout=60, settle=1.0)
        leader = asyncio.run(stream_leader(cluster.urls, "KV_probetag_leases"))
        node = next(n for n in cluster.nodes if n.name == leader)
        load = chunks(0, 4000, per_chunk=25)
        want = {r["rid"] for _, _, recs in load for r in recs}
        sender = Paused(port, load)
        sender.wait_mid_load()
        node.kill()
        sender.resume()
        time.sleep(10.0)
        node.start()
        sender.thread.join(timeout=180)
        got = asyncio.run(collect(cluster.urls, want, timeout=90))
        lost = sum(len(log_events(w.log, "lease_lost")) for w in ws)
        return {"longest_output_gap_s": round(got.longest_gap(), 2), "lease_lost": lost,
                "records_lost": len(want - got.events.keys()), "duplicates": got.duplicates}
    finally:
        for r in roles:
            r.stop()
        cluster.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--only", default="cold,worker,leader")
    args = ap.parse_args()
    scenarios = {"cold": cold, "worker": worker_kill, "leader": leader_kill}
    rows = []
    for name in args.only.split(","):
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
                load0 = os.getloadavg()[0]
                row = {"scenario": name, **scenarios[name](Path(tmp)),
                       "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    outdir = REPO / "bench" / "results"
    outdir.mkdir(exist_ok=True)
    path = outdir / f"bench_recovery-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps({"bench": "recovery", "cores": os.cpu_count(), "timing": TIMING,
                                "rows": rows}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
