"""All inputs of ``probetag serve`` feed one pipeline: forward frames in the
shapes Fluent Bit sends, Vector's HTTP and NDJSON sinks; plus /metrics."""

from __future__ import annotations

import http.client
import json
import socket
import time

import msgpack

from util.downstream import Downstream
from util.service import ServiceThread
from util.upstream import event_time, new_chunk_id


def _out(port: int) -> dict:
    return {"type": "forward", "address": f"127.0.0.1:{port}", "retry_initial": 0.02,
            "retry_max": 0.2, "ack_timeout": 5.0}


def _recv_ack(sock: socket.socket, timeout: float = 10.0) -> object:
    sock.settimeout(timeout)
    up = msgpack.Unpacker(raw=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = sock.recv(4096)
        if not data:
            return None
        up.feed(data)
        for obj in up:
            return obj
    return None


def test_fluent_bit_forward_mode_nested_times_arrive_classic():
    # Fluent Bit >= 5.0.4 default: Forward mode, entries [[EventTime, {}], record],
    # with send_options: {size, fluent_signal, chunk} (FORWARD_NOTES §1, §8).
    t = time.time()
    entries = [[[event_time(t), {}], {"seq": i, "log": f"fb {i}"}] for i in range(5)]
    cid = new_chunk_id().strip()
    frame = msgpack.packb(["fb.tag", entries, {"size": 5, "fluent_signal": 0, "chunk": cid}],
                          use_bin_type=True)
    with Downstream() as ds, ServiceThread({"listen": {"address": "127.0.0.1:0"},
                                            "output": _out(ds.port)}) as svc:
        with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as s:
            s.sendall(frame)
            assert _recv_ack(s) == {"ack": cid}
        assert svc.metrics.get("frames_in", mode="forward") == 1
    got = ds.acked_records()
    assert [rec["seq"] for _, _, rec in got] == list(range(5))
    for tag, tm, _ in got:
        assert tag == "fb.tag"
        # Sent downstream as a classic EventTime, not the nested form.
        assert isinstance(tm, msgpack.ExtType) and tm.code == 0 and len(tm.data) == 8


def test_http_and_ndjson_inputs_share_the_pipeline(tmp_path):
    cfg = {"listen": {"address": "127.0.0.1:0"}, "http": {"address": "127.0.0.1:0"},
           "ndjson": {"address": "127.0.0.1:0"}}
    with ServiceThread(cfg) as svc:
        http_in, nd_in = svc.service.inputs
        body = "\n".join(json.dumps({"tag": "vec.http", "timestamp": "2026-11-27T10:00:00Z",
                                     "message": f"h{i}"}) for i in range(3))
        conn = http.client.HTTPConnection("127.0.0.1", http_in.port, timeout=10)
        conn.request("POST", "/v1/vector", body=body, headers={"Content-Type": "application/x-ndjson"})
        assert conn.getresponse().status == 200
        conn.close()
        with socket.create_connection(("127.0.0.1", nd_in.port), timeout=10) as s:
            s.sendall(b"".join(json.dumps({"tag": "vec.nd", "message": f"n{i}"}).encode() + b"\n"
                               for i in range(3)))
        deadline = time.monotonic() + 10
        while len(svc.stdout.lines()) < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        lines = [json.loads(x) for x in svc.stdout.lines()]
    assert sorted((o["tag"], o["record"]["message"]) for o in lines) == (
        [("vec.http", f"h{i}") for i in range(3)] + [("vec.nd", f"n{i}") for i in range(3)])


def test_metrics_endpoint():
    with ServiceThread({"listen": {"address": "127.0.0.1:0"},
                        "metrics": {"address": "127.0.0.1:0"}}) as svc:
        port = svc.service.metrics_server.port
        with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as s:
            cid = new_chunk_id()
            s.sendall(msgpack.packb(["m.t", msgpack.packb([event_time(time.time()), {"a": 1}]),
                                    {"chunk": cid}], use_bin_type=True))
            assert _recv_ack(s) == {"ack": cid}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        text = r.read().decode()
        conn.close()
        assert r.status == 200 and r.getheader("Content-Type").startswith("text/plain; version=0.0.4")
        assert 'probetag_frames_in{mode="packed"} 1' in text
        assert "probetag_acks_sent 1" in text and "# TYPE probetag_connections_open gauge" in text
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/nope")
        assert conn.getresponse().status == 404
        conn.close()


def test_buffered_message_frames_are_merged_and_each_acked():
    # fluent-logger style Message frames, here with ack requests, all in one
    # write: they reach the pipeline as a few merged chunks, and every frame
    # still gets its own ack.
    ids = [f"m{i}" for i in range(200)]
    data = b"".join(msgpack.packb(["merge.t", event_time(time.time()), {"seq": i}, {"chunk": cid}],
                                  use_bin_type=True) for i, cid in enumerate(ids))
    with ServiceThread({"listen": {"address": "127.0.0.1:0"}}) as svc:
        with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as s:
            s.sendall(data)
            s.settimeout(10)
            up = msgpack.Unpacker(raw=False)
            acks: list = []
            deadline = time.monotonic() + 10
            while len(acks) < len(ids) and time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                up.feed(chunk)
                acks.extend(up)
        assert sorted(a["ack"] for a in acks) == sorted(ids)
        assert svc.metrics.get("frames_in", mode="message") == 200
        # The ack bytes may reach us a moment before the counter moves.
        deadline = time.monotonic() + 5
        while svc.metrics.get("acks_sent") < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert svc.metrics.get("acks_sent") == 200
        assert svc.metrics.get("chunks_out") < 200  # merged
        lines = [json.loads(x) for x in svc.stdout.lines()]
    assert [o["record"]["seq"] for o in lines] == list(range(200))
