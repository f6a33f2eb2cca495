"""Failures under load on a real 3-node JetStream cluster: a worker SIGKILLed
(its partitions are taken over), a NATS node SIGKILLed and restarted. In
both, no record is lost, duplicates are counted and removed by record id,
and detection equals a single instance's on the same input."""

from __future__ import annotations

import asyncio
import time
import urllib.request

from _harness import (Paused, Role, check_delivered, chunks, free_ports, lease_owners, reference, send_load,
                      wait_leases, write_cluster_yaml)

SOURCES = 4000


def _metrics(port: int) -> dict[str, float]:
    """Unlabelled counters (and label sums) from a role's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            name = name.split("{", 1)[0]
            out[name] = out.get(name, 0.0) + float(value)
    return out


def _check(nats_cluster, load, ref, timeout=90):
    return check_delivered(nats_cluster.urls, load, ref, timeout=timeout)


def test_worker_sigkill_takeover(nats_cluster, roles, tmp_path):
    load = chunks(0, SOURCES, per_chunk=25)
    cy = write_cluster_yaml(tmp_path, nats_cluster.urls)
    (port,) = free_ports(1)
    roles.append(Role(tmp_path, "ingress", cy, "ingress", "--listen", f"127.0.0.1:{port}"))
    mport, = free_ports(1)
    bcfg = tmp_path / "worker-b.yaml"
    bcfg.write_text(f"metrics:\n  address: 127.0.0.1:{mport}\n")
    a = Role(tmp_path, "worker", cy, "worker-a")
    b = Role(tmp_path, "worker", cy, "worker-b", "-c", str(bcfg))
    roles += [a, b]
    owners = wait_leases(nats_cluster.urls, 8, 2, timeout=40)
    ref = reference(load)  # next to the workers: same code on disk
    sender = Paused(port, load)
    sender.wait_mid_load()
    a.kill()
    sender.resume()
    sender.thread.join(timeout=180)
    assert sender.result.get("acked") == len(load)
    got = _check(nats_cluster, load, ref)
    # The survivor holds every partition now: the dead one's leases expired.
    after = asyncio.run(lease_owners(nats_cluster.urls))
    assert len(after) == 8 and len(set(after.values())) == 1
    assert set(after.values()) < set(owners.values())
    # Both workers delivered results: the survivor's include the dead one's partitions.
    assert set().union(*got.workers.values()) == set(owners.values())
    m = _metrics(mport)
    assert m.get("probetag_cluster_leases_claimed", 0) >= 8  # its own 4 (or 8 then 4) + the dead one's
    assert m.get("probetag_records_in", 0) > 0
    print(f"duplicates={got.duplicates} messages={got.messages} "
          f"redeliveries={m.get('probetag_cluster_redeliveries', 0)}")


def test_nats_node_sigkill_restart_under_load(nats_cluster, roles, tmp_path):
    load = chunks(0, SOURCES, per_chunk=25)
    cy = write_cluster_yaml(tmp_path, nats_cluster.urls)
    (port,) = free_ports(1)
    roles.append(Role(tmp_path, "ingress", cy, "ingress", "--listen", f"127.0.0.1:{port}"))
    roles.append(Role(tmp_path, "worker", cy, "worker-a"))
    roles.append(Role(tmp_path, "worker", cy, "worker-b"))
    wait_leases(nats_cluster.urls, 8, 2, timeout=40)
    ref = reference(load)  # next to the workers: same code on disk
    sender = Paused(port, load)
    sender.wait_mid_load()
    node = nats_cluster.nodes[1]
    node.kill()
    sender.resume()
    time.sleep(2.0)  # the rest of the load meets a 2-node cluster for a while
    node.start()
    sender.thread.join(timeout=180)
    assert sender.result.get("acked") == len(load)
    got = _check(nats_cluster, load, ref)
    assert node.proc is not None and node.proc.poll() is None, "restarted node died (see its log)"
    print(f"duplicates={got.duplicates} messages={got.messages} longest_output_gap={got.longest_gap():.1f}s")


def test_worker_sigterm_hands_partitions_over_before_ttl(nats_cluster, roles, tmp_path):
    # A long TTL (15 s, upkeep every 5 s): a takeover within seconds can only come from the
    # stopping worker deleting its leases, not from them expiring.
    load = chunks(0, 500, per_chunk=50)
    cy = write_cluster_yaml(tmp_path, nats_cluster.urls, lease_ttl=15.0)
    (port,) = free_ports(1)
    roles.append(Role(tmp_path, "ingress", cy, "ingress", "--listen", f"127.0.0.1:{port}"))
    a = Role(tmp_path, "worker", cy, "worker-a")
    b = Role(tmp_path, "worker", cy, "worker-b")
    roles += [a, b]
    wait_leases(nats_cluster.urls, 8, 2, timeout=60, settle=0)
    ref = reference(load)  # next to the workers: same code on disk
    t = time.monotonic()
    a.stop()
    assert a.proc.returncode == 0
    wait_leases(nats_cluster.urls, 8, 1, timeout=15, settle=3.0)
    assert time.monotonic() - t < 12  # inside the 15 s TTL (plus the 3 s settle)
    assert send_load(port, load, timeout=60) == len(load)
    got = _check(nats_cluster, load, ref, timeout=60)
    assert len(set().union(*got.workers.values())) == 1
