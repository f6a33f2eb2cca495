"""Hand-over on a real 3-node JetStream cluster, judged by protocol events
(lease revisions, releases, the log's partition_ready / partition_done
lines), not by how fast this machine is:

* the node leading the lease bucket is SIGKILLed under load: every lease
  survives the election (no ``lease_lost``, the same owners after);
* a partition released while it still waits for a dead owner's un-acked
  message gives its key back at once (deleted, not left to expire) and is
  never fetched by the releasing worker;
* with a short ``ack_wait``, an owner frozen (SIGSTOP) past its lease and
  then thawed never fetches while the next owner does: per partition, the
  ownership intervals (first fetch .. last delivery) of different workers
  do not overlap, and nothing is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import msgpack
from _harness import (Paused, Role, check_delivered, chunks, collect, free_ports, lease_owners, log_events, reference,
                      stream_leader, wait_leases, write_cluster_yaml)

from probetag.cluster import partition_of


def _check(nats_cluster, load, ref, timeout=90):
    return check_delivered(nats_cluster.urls, load, ref, timeout=timeout)


def _worker_id(role: Role) -> str:
    started = log_events(role.log, "worker_started")
    assert started, f"{role.name} never started; see {role.log}"
    return started[0]["worker"]


def test_lease_bucket_leader_kill_keeps_every_lease(nats_cluster, roles, tmp_path):
    load = chunks(0, 2000, per_chunk=25)
    # The shipped lease timing (cluster.yaml): TTL 8 s, renewed every second.
    cy = write_cluster_yaml(tmp_path, nats_cluster.urls, lease_ttl=8.0, ack_wait=8.0)
    (port,) = free_ports(1)
    roles.append(Role(tmp_path, "ingress", cy, "ingress", "--listen", f"127.0.0.1:{port}"))
    a = Role(tmp_path, "worker", cy, "worker-a")
    b = Role(tmp_path, "worker", cy, "worker-b")
    roles += [a, b]
    owners = wait_leases(nats_cluster.urls, 8, 2, timeout=60, settle=1.0)
    ref = reference(load)
    leader = asyncio.run(stream_leader(nats_cluster.urls, "KV_probetag_leases"))
    node = next(n for n in nats_cluster.nodes if n.name == leader)
    sender = Paused(port, load)
    sender.wait_mid_load()
    node.kill()
    sender.resume()
    # How long the bucket took to take writes again (the election), seen
    # from outside the workers.
    others = [u for n, u in zip(nats_cluster.nodes, nats_cluster.urls) if n is not node]
    election = asyncio.run(_kv_writable_after(others, deadline=30.0))
    # Longer than the TTL: leases kept by luck of timing would expire.
    time.sleep(max(0.0, 10.0 - election))
    node.start()
    sender.thread.join(timeout=180)
    assert sender.result.get("acked") == len(load)
    got = _check(nats_cluster, load, ref)
    lost = [e for w in (a, b) for e in log_events(w.log, "lease_lost")]
    # No lease is ever taken by another worker while its owner renews it.
    assert all(e["reason"] != "taken" for e in lost), lost[:3]
    if election < 8.0 - 1.0 - 1.0:
        # An election shorter than the TTL less a renewal period and a
        # round trip costs no lease: renewals are retried through it. (A
        # longer one, as a machine with no CPU to spare can make it, ends
        # the leases; they are then claimed afresh, nothing lost.)
        assert lost == [], f"leases lost in a {election:.1f} s election: {lost[:3]}"
        assert asyncio.run(lease_owners(nats_cluster.urls)) == owners
    else:
        assert len(wait_leases(nats_cluster.urls, 8, 2, timeout=60, settle=0)) == 8
    reconnects = sum(1 for w in (a, b) for _ in log_events(w.log, "nats_reconnected"))
    print(f"lease leader {leader} killed: bucket writable again after {election:.1f}s, "
          f"longest output gap {got.longest_gap():.1f}s, "
          f"duplicates={got.duplicates}, reconnects={reconnects}")


async def _kv_writable_after(urls: list[str], deadline: float) -> float:
    """Seconds until the lease bucket takes a write again (a key of its own,
    not a lease), trying every 0.2 s through ``urls``."""
    import nats

    t0 = time.monotonic()
    nc = await nats.connect(servers=urls)
    try:
        js = nc.jetstream(timeout=1)
        while time.monotonic() - t0 < deadline:
            try:
                kv = await js.key_value("probetag_leases")
                await kv.put("election-probe", b"1")
                return time.monotonic() - t0
            except Exception:  # noqa: BLE001 - any failure means not yet
                await asyncio.sleep(0.2)
        return time.monotonic() - t0
    finally:
        await nc.close()


async def _hold_one_message(urls: list[str], partition: int, ack_wait: float) -> None:
    """A message of ``partition`` fetched from its durable consumer and never
    acked, as a worker killed mid-batch leaves it."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    from probetag.cluster import cluster_config_from_mapping, ensure_streams

    token = next(t for t in (f"10_9_0_{i}" for i in range(1000)) if partition_of(t, 8) == partition)
    nc = await nats.connect(servers=urls)
    try:
        js = nc.jetstream(timeout=5)
        await ensure_streams(js, cluster_config_from_mapping({"servers": urls, "lease_ttl": 8.0}))
        entry = msgpack.packb([1_790_000_000, {"message": "held", "rid": "held-0",
                                               "source_address": token.replace("_", ".")}])
        await js.publish(f"logs.in.{token}", entry, headers={"Probetag-Tag": "syslog.user",
                                                             "Probetag-Count": "1"})
        sub = await js.pull_subscribe(
            f"logs.part.{partition}.*", durable=f"probetag-part-{partition}", stream="PROBETAG_IN",
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                                  ack_wait=ack_wait, max_ack_pending=1000, max_deliver=-1))
        msgs = await sub.fetch(1, timeout=10)
        assert len(msgs) == 1
    finally:
        await nc.close()


def test_release_while_waiting_gives_the_key_back_at_once(nats_cluster, roles, tmp_path):
    ack_wait = 40.0
    cy = write_cluster_yaml(tmp_path, nats_cluster.urls, lease_ttl=8.0, ack_wait=ack_wait)
    asyncio.run(_hold_one_message(nats_cluster.urls, 7, ack_wait))
    b = Role(tmp_path, "worker", cy, "worker-b")
    roles.append(b)
    wait_leases(nats_cluster.urls, 8, 1, timeout=60, settle=0)
    # Partition 7 waits for the held message's ack timeout; the others run.
    deadline = time.monotonic() + 30
    while len({e["partition"] for e in log_events(b.log, "partition_ready")}) < 7:
        assert time.monotonic() < deadline, "the idle partitions were not fetched at once"
        time.sleep(0.2)
    ready = {e["partition"]: e for e in log_events(b.log, "partition_ready")}
    assert "7" not in ready and all(e["reason"] == "idle" for e in ready.values())
    c = Role(tmp_path, "worker", cy, "worker-c")
    roles.append(c)
    t = time.monotonic()
    owners = wait_leases(nats_cluster.urls, 8, 2, timeout=ack_wait / 2, settle=0)
    took = time.monotonic() - t
    assert owners["p7"] == _worker_id(c)
    release = [e for e in log_events(b.log, "lease_release") if e["partition"] == "7"]
    assert release and release[0]["waiting"] == "True"
    assert [e for e in log_events(b.log, "lease_released") if e["partition"] == "7"], \
        "the key was left to expire instead of being deleted"
    assert not [e for e in log_events(b.log, "partition_ready") if e["partition"] == "7"]
    assert not [e for e in log_events(b.log, "lease_lost")]
    # The held message is not lost: c fetches it once it is due again.
    got = asyncio.run(collect(nats_cluster.urls, {"held-0"}, timeout=ack_wait + 30))
    assert "held-0" in got.events
    print(f"partition 7 handed over {took:.1f}s after the second worker started (ack_wait {ack_wait:.0f}s)")


def _intervals(role: Role) -> dict[str, list[tuple[float, float]]]:
    """partition -> [(first fetch allowed, last delivery)] of each ownership."""
    out: dict[str, list[tuple[float, float]]] = {}
    ready: dict[str, float] = {}
    for line in role.log.read_text(errors="replace").splitlines():
        if " event=partition_ready " in line or " event=partition_done " in line:
            f = dict(p.split("=", 1) for p in line.split() if "=" in p)
            if f["event"] == "partition_ready":
                ready[f["partition"]] = float(f["fetch_from"])
            else:
                start = ready.pop(f["partition"], None)
                last = float(f["last_delivery"])
                if start is not None and last > 0:
                    out.setdefault(f["partition"], []).append((start, last))
    for p, start in ready.items():  # still owned when the log ended
        out.setdefault(p, []).append((start, float("inf")))
    return out


def test_short_ack_wait_frozen_owner_never_overlaps(nats_cluster, roles, tmp_path):
    load = chunks(0, 3000, per_chunk=25)
    cy = write_cluster_yaml(tmp_path, nats_cluster.urls, lease_ttl=3.0, ack_wait=1.0)
    (port,) = free_ports(1)
    roles.append(Role(tmp_path, "ingress", cy, "ingress", "--listen", f"127.0.0.1:{port}"))
    a = Role(tmp_path, "worker", cy, "worker-a")
    b = Role(tmp_path, "worker", cy, "worker-b")
    roles += [a, b]
    wait_leases(nats_cluster.urls, 8, 2, timeout=60, settle=1.0)
    ref = reference(load)
    sender = Paused(port, load)
    sender.wait_mid_load()
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        sender.resume()
        # b takes every partition while a is frozen holding leases and messages.
        wait_leases(nats_cluster.urls, 8, 1, timeout=40, settle=2.0)
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    sender.thread.join(timeout=180)
    assert sender.result.get("acked") == len(load)
    _check(nats_cluster, load, ref)
    a.stop()
    b.stop()
    lost = log_events(a.log, "lease_lost")
    assert lost, "the thawed worker never noticed its leases were gone"
    ia, ib = _intervals(a), _intervals(b)
    overlaps = []
    for p in set(ia) | set(ib):
        spans = sorted([(s, e, "a") for s, e in ia.get(p, [])] + [(s, e, "b") for s, e in ib.get(p, [])])
        for (s1, e1, w1), (s2, e2, w2) in zip(spans, spans[1:]):
            if w1 != w2 and s2 < e1:
                overlaps.append((p, w1, e1, w2, s2))
    assert not overlaps, f"two workers fetched one partition at once: {overlaps[:3]}"
    dropped = log_events(a.log, "batch_dropped")
    print(f"a lost {len(lost)} leases on thawing, dropped {len(dropped)} late batches; no overlap")
