"""listen.frame_timeout over a real socket: a frame trickled in one byte at
a time (slow loris) is cut off, while frames that each complete in time pass
even when the stream as a whole takes longer and no read ends on a frame
boundary."""

from __future__ import annotations

import json
import socket
import time

from util.service import ServiceThread
from util.upstream import Upstream, new_chunk_id, packed_frame


def _listen(**kw: object) -> dict:
    return {"listen": {"address": "127.0.0.1:0", **kw}}


def test_slow_loris_frame_is_cut_off_and_counted():
    # idle_timeout alone never fires: a byte arrives every 0.1 s.
    with ServiceThread(_listen(idle_timeout=0.5, frame_timeout=1.0)) as svc:
        frame = packed_frame("loris", [{"seq": 1, "pad": "x" * 200}], new_chunk_id())
        up = Upstream(svc.port)
        t0 = time.monotonic()
        closed_after = None
        for i in range(min(len(frame) - 1, 80)):  # never the last byte: <= 8 s
            try:
                up.sock.sendall(frame[i:i + 1])
            except OSError:
                closed_after = time.monotonic() - t0
                break
            if up.peer_closed(0.1):
                closed_after = time.monotonic() - t0
                break
        up.close()
        assert closed_after is not None, "connection still open after 8 s of trickling"
        assert 0.9 <= closed_after < 4.0
        assert svc.metrics.get("frames_rejected", reason="frame_timeout") == 1
        assert svc.metrics.get("connections_timed_out") == 0
        assert svc.metrics.get("frames_in") == 0
    assert svc.stdout.lines() == []


def test_frames_each_in_time_pass_though_the_stream_is_slower():
    records = [{"seq": i, "pad": "y" * 40} for i in range(4)]
    frames = [packed_frame("slow.ok", [r], new_chunk_id()) for r in records]
    stream = b"".join(frames)
    # Cut every frame in two and send a piece every 0.3 s, so each read ends
    # inside a frame (bytes stay buffered the whole time) while every frame
    # completes 0.3 s after it started; the stream takes ~2.4 s > frame_timeout.
    cuts, pos = [], 0
    for f in frames:
        cuts += [pos + len(f) // 2, pos + len(f)]
        pos += len(f)
    with ServiceThread(_listen(idle_timeout=5.0, frame_timeout=1.0)) as svc:
        up = Upstream(svc.port)
        up.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0, prev = time.monotonic(), 0
        for cut in cuts:
            up.sock.sendall(stream[prev:cut])
            prev = cut
            time.sleep(0.3)
        assert time.monotonic() - t0 > 2.0
        assert up.read_acks(4, timeout=10) == 4
        up.close()
        assert svc.metrics.get("frames_rejected") == 0
        assert svc.metrics.get("frames_in") == 4
    assert sorted(json.loads(x)["record"]["seq"] for x in svc.stdout.lines()) == [0, 1, 2, 3]
