"""Bad input over the socket: the server survives, logs once per connection
with the peer address, counts, and a well-behaved connection keeps flowing in
parallel with nothing lost."""

from __future__ import annotations

import gzip
import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import msgpack

from util.service import ServiceThread
from util.upstream import Upstream, new_chunk_id

GOOD_CHUNKS = 40
PER_CHUNK = 5


def _bomb_frame() -> bytes:
    payload = gzip.compress(b"\x00" * (8 * 1024 * 1024), compresslevel=9)  # ~8 KiB -> 8 MiB
    return msgpack.packb(["bad.bomb", payload, {"compressed": "gzip", "chunk": new_chunk_id()}],
                         use_bin_type=True)


BAD_INPUTS = {
    "garbage": b"GET / HTTP/1.0\r\n\r\n",
    "c1": b"\xc1",
    "huge_size_prefix": b"\x93\xa3tag\xc6\xff\xff\xff\xf0",
    "gzip_bomb": _bomb_frame(),
    "deep_nesting": b"\x91" * 2000 + b"\xc0",
    "empty_tag": msgpack.packb(["", [[1, {"a": 1}]], {"chunk": "e1"}]),
    "empty": b"",
    "nil_heartbeat": b"\xc0",
}


def _bad_connection(port: int, data: bytes) -> tuple[str, bool, list]:
    """Send ``data``; returns (our address, closed by the server, replies)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    me = "%s:%d" % s.getsockname()[:2]
    replies: list = []
    closed = False
    try:
        if data:
            s.sendall(data)
        else:
            s.close()  # Fluentd's transport heartbeat: connect, close
            return me, True, replies
        up = msgpack.Unpacker()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                break
            except OSError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            up.feed(chunk)
            replies.extend(up)
    finally:
        s.close()
    return me, closed, replies


def test_bad_connections_beside_a_good_one(caplog):
    caplog.set_level(logging.WARNING, logger="probetag")
    cfg = {"listen": {"address": "127.0.0.1:0", "max_frame_bytes": 1024 * 1024,
                      "max_decompressed_bytes": 1024 * 1024}}
    with ServiceThread(cfg) as svc:
        up = Upstream(svc.port)
        sent: list[int] = []

        def good_sender() -> None:
            for c in range(GOOD_CHUNKS):
                recs = [{"seq": c * PER_CHUNK + i, "message": "ok"} for i in range(PER_CHUNK)]
                up.send_chunk("good.flow", recs)
                sent.extend(r["seq"] for r in recs)
                time.sleep(0.01)

        t = threading.Thread(target=good_sender, daemon=True)
        t.start()
        with ThreadPoolExecutor(len(BAD_INPUTS)) as pool:
            futs = {name: pool.submit(_bad_connection, svc.port, data) for name, data in BAD_INPUTS.items()}
            results = {name: f.result(30) for name, f in futs.items()}
        t.join(20)
        assert up.read_acks(GOOD_CHUNKS, timeout=20) == GOOD_CHUNKS
        up.close()
        m = svc.metrics
        # Fatal stream errors close the connection.
        for name in ("c1", "huge_size_prefix", "deep_nesting"):
            assert results[name][1], f"{name}: connection not closed"
        # No bad request was ever acked.
        for name, (_, _, replies) in results.items():
            assert not any(isinstance(r, dict) and r.get("ack") for r in replies), name
        assert m.get("frames_rejected", reason="parse_error") >= 1
        assert m.get("frames_rejected", reason="frame_too_large") >= 1
        assert m.get("frames_rejected", reason="too_deep") >= 1
        assert m.get("frames_rejected", reason="decompressed_too_large") == 1
        assert m.get("frames_rejected", reason="not_array") >= 1  # garbage bytes are msgpack ints
        assert m.get("frames_rejected", reason="empty_tag") == 1
        assert not results["empty_tag"][1]  # skipped, connection kept
        assert m.get("heartbeats", transport="tcp") == 1
        assert m.get("connections_accepted") == 1 + len(BAD_INPUTS)
        lines = svc.stdout.lines()
    # Everything the good connection sent came out, once.
    seqs = sorted(json.loads(x)["record"]["seq"] for x in lines)
    assert seqs == sorted(sent) == list(range(GOOD_CHUNKS * PER_CHUNK))
    # One log line per misbehaving connection, naming its address.
    warnings = [r.getMessage() for r in caplog.records if "forward_peer_error" in r.getMessage()]
    for name in ("garbage", "c1", "huge_size_prefix", "gzip_bomb", "deep_nesting", "empty_tag"):
        me = results[name][0]
        assert sum(f"peer={me} " in w for w in warnings) == 1, (name, me, warnings)
    for name in ("empty", "nil_heartbeat"):
        me = results[name][0]
        assert not any(f"peer={me} " in w for w in warnings), name


def test_max_connections_refused_and_counted():
    with ServiceThread({"listen": {"address": "127.0.0.1:0", "max_connections": 2}}) as svc:
        a, b = Upstream(svc.port), Upstream(svc.port)
        a.send_chunk("mc.a", [{"seq": 1}])
        assert a.read_acks(1, 10) == 1
        b.send_chunk("mc.b", [{"seq": 2}])
        assert b.read_acks(1, 10) == 1
        c = Upstream(svc.port)
        assert c.peer_closed(5)
        c.close()
        assert svc.metrics.get("connections_refused") == 1
        assert svc.metrics.get("connections_open") == 2
        a.send_chunk("mc.a", [{"seq": 3}])
        assert a.read_acks(2, 10) == 2
        a.close(), b.close()


def test_udp_heartbeat_answered():
    with ServiceThread({"listen": {"address": "127.0.0.1:0"}}) as svc:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(5)
        u.sendto(b"\x00", ("127.0.0.1", svc.port))
        data, _ = u.recvfrom(16)
        u.close()
        assert data == b"\x00"
        assert svc.metrics.get("heartbeats", transport="udp") == 1
