"""Listener and output options over loopback: tag_prefix, deny_keepalive,
idle and handshake timeouts, half-closed clients; gzip, keepalive off,
integer times and no-ack mode toward the downstream."""

from __future__ import annotations

import socket
import time

import msgpack
import pytest

from util.downstream import Downstream
from util.service import ServiceThread
from util.upstream import Upstream


def _out(port: int, **kw: object) -> dict:
    return {"type": "forward", "address": f"127.0.0.1:{port}", "retry_initial": 0.02,
            "retry_max": 0.2, "ack_timeout": 5.0, **kw}


def test_tag_prefix_and_deny_keepalive():
    with Downstream() as ds, ServiceThread({
        "listen": {"address": "127.0.0.1:0", "tag_prefix": "edge", "deny_keepalive": True},
        "output": _out(ds.port),
    }) as svc:
        up = Upstream(svc.port)
        first = up.send_chunk("app.one", [{"seq": 1}])
        up.send_chunk("app.two", [{"seq": 2}])
        assert up.read_acks(1, timeout=10) == 1
        assert up.peer_closed(5)  # closed after the first request's ack
        up.close()
        assert set(up.acked_at) == {first}
        assert svc.metrics.get("frames_in") == 1
    assert [(tag, rec["seq"]) for tag, _, rec in ds.acked_records()] == [("edge.app.one", 1)]


def test_idle_and_handshake_timeouts():
    with ServiceThread({"listen": {"address": "127.0.0.1:0", "idle_timeout": 0.3}}) as svc:
        up = Upstream(svc.port)
        t0 = time.monotonic()
        assert up.peer_closed(5)
        assert 0.25 <= time.monotonic() - t0 < 4
        up.close()
        assert svc.metrics.get("connections_timed_out", reason="idle_timeout") == 1
    with ServiceThread({"listen": {"address": "127.0.0.1:0", "shared_key": "k",
                                   "handshake_timeout": 0.3}}) as svc:
        up = Upstream(svc.port)  # reads the HELO, never answers it
        assert up.peer_closed(5)
        up.close()
        assert svc.metrics.get("connections_timed_out", reason="handshake_timeout") == 1


def test_half_closed_client_still_gets_its_ack():
    with Downstream(ack_delay=0.3) as ds, ServiceThread({
        "listen": {"address": "127.0.0.1:0"}, "output": _out(ds.port),
    }) as svc:
        up = Upstream(svc.port)
        cid = up.send_chunk("half.closed", [{"seq": 7}])
        up.sock.shutdown(socket.SHUT_WR)  # EOF from the client side
        assert up.read_acks(1, timeout=10) == 1 and cid in up.acked_at
        up.close()
    assert [rec["seq"] for _, _, rec in ds.acked_records()] == [7]


@pytest.mark.parametrize("opts,check", [
    ({"compress": "gzip"}, lambda reqs: all(r.mode == "compressed" for r in reqs)),
    ({"keepalive": False}, lambda reqs: len({r.connection for r in reqs}) == len(reqs) > 1),
    ({"time_as_integer": True}, lambda reqs: all(type(t) is int for r in reqs for t, _ in r.records)),
    ({"require_ack": False}, lambda reqs: all(r.chunk_id is None for r in reqs)),
])
def test_output_options(opts, check):
    with Downstream() as ds, ServiceThread({
        "listen": {"address": "127.0.0.1:0"}, "output": _out(ds.port, **opts),
    }) as svc:
        up = Upstream(svc.port)
        for c in range(4):
            up.send_chunk("opt.test", [{"seq": c * 10 + i, "message": "m" * 50} for i in range(10)])
            assert up.read_acks(c + 1, timeout=10) == c + 1  # one at a time: separate requests
        up.close()
        assert ds.wait_until(lambda: len(ds.acked_records()) >= 40, 10)
    reqs = [r for r in ds.snapshot() if r.outcome == "acked"]
    assert sorted(rec["seq"] for r in reqs for _, rec in r.records) == list(range(40))
    assert check(reqs), [(r.mode, r.connection, r.chunk_id) for r in reqs]


def test_waiting_for_acks_is_not_idle():
    with Downstream(ack_delay=1.0) as ds, ServiceThread({
        "listen": {"address": "127.0.0.1:0", "idle_timeout": 0.3}, "output": _out(ds.port),
    }) as svc:
        up = Upstream(svc.port)
        cid = up.send_chunk("idle.wait", [{"seq": 1}])
        assert up.read_acks(1, timeout=10) == 1 and cid in up.acked_at
        assert up.peer_closed(5)  # idle after the ack: closed
        up.close()
        assert svc.metrics.get("connections_timed_out", reason="idle_timeout") == 1
