"""The two ends of the cluster against real peers' shapes: Vector's nats sink
(one JSON event per JetStream message on logs.in.<token>) next to the
forward ingress, and ``probetag cluster egress`` delivering the results to a
forward server that acks like Fluentd in_forward (and drops the first
request, so delivery must be retried)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from _harness import REPO, Role, chunks, compare, free_ports, reference, send_load, wait_leases, write_cluster_yaml

sys.path.insert(0, str(REPO / "tests"))
from util.downstream import Downstream  # noqa: E402

VECTOR_EVENTS = [
    {"message": "GET / HTTP/1.0\r", "source_ip": "192.0.2.10", "tag": "vector.syslog",
     "timestamp": "2026-11-27T10:00:00.000000000Z", "rid": "v-0"},
    {"message": "Accepted publickey for deploy", "source_ip": "192.0.2.11", "tag": "vector.syslog",
     "timestamp": "2026-11-27T10:00:01Z", "rid": "v-1"},
]


async def _publish_like_vector(urls: list[str]) -> None:
    import nats

    from probetag.cluster import source_token

    nc = await nats.connect(servers=urls)
    try:
        js = nc.jetstream(timeout=5)
        for ev in VECTOR_EVENTS:
            ack = await js.publish(f"logs.in.{source_token(ev['source_ip'])}", json.dumps(ev).encode())
            assert ack.stream == "PROBETAG_IN"
    finally:
        await nc.close()


def test_vector_json_in_and_egress_to_forward_server(nats_cluster, roles, tmp_path: Path):
    load = chunks(0, 300, per_chunk=50)
    cy = write_cluster_yaml(tmp_path, nats_cluster.urls)
    (port,) = free_ports(1)
    with Downstream(drop_first=1) as down:
        roles.append(Role(tmp_path, "ingress", cy, "ingress", "--listen", f"127.0.0.1:{port}"))
        roles.append(Role(tmp_path, "worker", cy, "worker"))
        roles.append(Role(tmp_path, "egress", cy, "egress", "--forward-to", f"127.0.0.1:{down.port}"))
        wait_leases(nats_cluster.urls, 8, 1, timeout=40)
        ref = reference(load)  # next to the workers: same code on disk
        assert send_load(port, load, timeout=60) == len(load)
        asyncio.run(_publish_like_vector(nats_cluster.urls))
        want = {r["rid"] for _, _, recs in load for r in recs} | {ev["rid"] for ev in VECTOR_EVENTS}

        def delivered() -> dict[str, dict]:
            return {rec["rid"]: {"tag": tag, **rec} for tag, _t, rec in down.acked_records()}

        assert down.wait_until(lambda: want <= delivered().keys(), timeout=60), \
            f"missing {len(want - delivered().keys())}"
        got = delivered()
        assert any(r.outcome == "dropped" for r in down.snapshot())  # the egress retried
    assert compare(ref, got) == []
    v0, v1 = got["v-0"], got["v-1"]
    assert v0["tag"] == "vector.syslog" and v0["probe"]["scanner"]
    assert "probe" not in v1 and v1["message"] == "Accepted publickey for deploy"
