"""Affinity across 10,000 sources on a real 3-node JetStream cluster: every
record of a source is handled by one worker, nothing is lost, and detection
equals a single instance's on the same input."""

from __future__ import annotations

import asyncio
import time

from _harness import Role, chunks, collect, compare, free_ports, reference, send_load, wait_leases, write_cluster_yaml

from probetag.cluster import partition_of, source_token

SOURCES = 10_000


def test_affinity_10k_sources_two_workers(nats_cluster, roles, tmp_path):
    load = chunks(0, SOURCES)
    cy = write_cluster_yaml(tmp_path, nats_cluster.urls)
    (port,) = free_ports(1)
    roles.append(Role(tmp_path, "ingress", cy, "ingress", "--listen", f"127.0.0.1:{port}"))
    roles.append(Role(tmp_path, "worker", cy, "worker-a"))
    roles.append(Role(tmp_path, "worker", cy, "worker-b"))
    owners = wait_leases(nats_cluster.urls, 8, 2, timeout=40)
    ref = reference(load)  # next to the workers: same code on disk
    want = {r["rid"] for _, _, recs in load for r in recs}
    t = time.monotonic()
    acked = send_load(port, load, timeout=120)
    assert acked == len(load)
    got = asyncio.run(collect(nats_cluster.urls, want, timeout=90))
    elapsed = time.monotonic() - t
    missing = want - got.events.keys()
    assert not missing, f"{len(missing)} records lost, e.g. {sorted(missing)[:5]}"
    split = {src: ws for src, ws in got.workers.items() if len(ws) != 1}
    assert not split, f"sources handled by several workers: {list(split.items())[:5]}"
    assert len(got.workers) == SOURCES
    used = set().union(*got.workers.values())
    assert used == set(owners.values())
    # The server's partition(8,1) put each source where partition_of says:
    # its worker is the owner of that partition's lease.
    wrong = [src for src, ws in got.workers.items()
             if ws != {owners[f"p{partition_of(source_token(src), 8)}"]}]
    assert not wrong, f"sources off their partition: {wrong[:5]}"
    assert ref.keys() == want
    tagged = sum(1 for ev in ref.values() if "probe" in ev)
    assert tagged >= 2000  # the load really exercises detection
    assert compare(ref, got.events) == []
    print(f"records={len(want)} chunks={len(load)} elapsed={elapsed:.1f}s duplicates={got.duplicates}")
