"""Counting downstream for the end-to-end benchmark: a forward-protocol server
that acks every chunk and records what arrived and when.

Theory of operation
-------------------
* Runs as its own process (``python bench/_sink.py``) so its CPU time is not
  charged to the process under test; ``probetag.forward.ServerConnection``
  does the framing. Every accepted ``Chunk`` is acked at once (that is what
  releases probetag's upstream acks) and accounted:
  records (the frame's ``size`` option, which probetag always sends, else the
  stamps found), entry bytes, records carrying the ``probe`` map (tagged),
  and latency.
* Latency: the load generator stamps every record with ``bench_sent``
  (float64, Unix seconds, see ``_loadgen.py``). One regex over the entries
  finds every stamp without decoding records; the arrival time is taken when
  the frame is complete, before that scan. Records of one upstream chunk share
  a stamp, so counting distinct stamps (``Counter``) keeps the Python work
  per chunk, not per record. Latencies go into a log histogram (1 %
  buckets), so a snapshot is small and percentiles of a time window are the
  difference of two snapshots.
* Control on stdin/stdout, one JSON line each: on start it prints
  ``{"event": "listening", "port": P}``; ``snap`` prints the cumulative
  counters and histogram; ``quit`` (or EOF) exits. Every wait is bounded by
  the caller (``bench_e2e.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import resource
import struct
import sys
import time
from collections import Counter

from probetag.forward import CLOSED, NEED_DATA, Chunk, Limits, ProtocolError, ServerConnection

__all__ = ["Sink", "percentile", "hist_diff", "BUCKET"]

#: Histogram bucket ratio: bucket i holds latencies around BUCKET**i microseconds.
BUCKET = 1.01
_LOG_BUCKET = math.log(BUCKET)
_STAMP = re.compile(rb"\xaabench_sent\xcb(.{8})", re.DOTALL)
# A tagged record carries the output field ("probe") with a map value.
_TAGGED = re.compile(rb"\xa5probe[\x80-\x8f\xde\xdf]")
_DOUBLE = struct.Struct(">d").unpack
_LIMITS = Limits(max_frame_bytes=64 * 1024 * 1024, max_decompressed_bytes=256 * 1024 * 1024)


def percentile(hist: dict[int, int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a histogram, in milliseconds."""
    total = sum(hist.values())
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for idx in sorted(hist):
        seen += hist[idx]
        if seen >= rank:
            return BUCKET ** idx / 1000.0
    return BUCKET ** max(hist) / 1000.0


def hist_diff(later: dict, earlier: dict) -> dict[int, int]:
    """``later - earlier`` of two cumulative histograms (JSON keys are str)."""
    out = {}
    for k, v in later.items():
        d = v - earlier.get(k, 0)
        if d > 0:
            out[int(k)] = d
    return out


class Sink:
    def __init__(self) -> None:
        self.chunks = 0
        self.records = 0
        self.stamped = 0
        self.bytes = 0
        self.tagged = 0
        self.errors: Counter[str] = Counter()
        self.connections = 0
        self.hist: Counter[int] = Counter()
        self.first_arrival = 0.0
        self.last_arrival = 0.0

    def on_chunk(self, ch: Chunk, arrival: float) -> None:
        stamps = Counter(_STAMP.findall(ch.entries))
        n_stamped = 0
        for raw, n in stamps.items():
            lat_us = (arrival - _DOUBLE(raw)[0]) * 1e6
            idx = int(round(math.log(lat_us) / _LOG_BUCKET)) if lat_us >= 1.0 else 0
            self.hist[idx] += n
            n_stamped += n
        self.chunks += 1
        self.stamped += n_stamped
        self.records += ch.size_hint if ch.size_hint is not None else n_stamped
        self.bytes += len(ch.entries)
        self.tagged += len(_TAGGED.findall(ch.entries))
        if not self.first_arrival:
            self.first_arrival = arrival
        self.last_arrival = arrival

    def snapshot(self) -> dict:
        return {"event": "snap", "time": time.time(), "chunks": self.chunks, "records": self.records,
                "stamped": self.stamped, "bytes": self.bytes, "tagged": self.tagged,
                "connections": self.connections, "errors": dict(self.errors),
                "first_arrival": self.first_arrival, "last_arrival": self.last_arrival,
                "cpu_seconds": round(time.process_time(), 3),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "hist": {str(k): v for k, v in self.hist.items()}}


class _Proto(asyncio.Protocol):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.conn: ServerConnection | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.conn = ServerConnection(f"{peer[0]}:{peer[1]}" if peer else "?", _LIMITS)
        self.sink.connections += 1

    def data_received(self, data: bytes) -> None:
        self._feed(data)

    def eof_received(self) -> bool:
        self._feed(b"")
        return False

    def _feed(self, data: bytes) -> None:
        assert self.conn is not None and self.transport is not None
        self.conn.receive_data(data)
        acks = []
        while True:
            ev = self.conn.next_event()
            if ev is NEED_DATA or ev is CLOSED:
                break
            if isinstance(ev, Chunk):
                self.sink.on_chunk(ev, time.time())
                if ev.chunk_id is not None:
                    acks.append(self.conn.ack_bytes(ev.chunk_id))
            elif isinstance(ev, ProtocolError):
                self.sink.errors[ev.reason] += 1
                if ev.fatal:
                    self.transport.close()
                    return
        if acks:
            self.transport.write(b"".join(acks))
        if ev is CLOSED:
            self.transport.close()


async def serve(host: str, port: int) -> None:
    sink = Sink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Proto(sink), host, port)
    bound = server.sockets[0].getsockname()[1]
    print(json.dumps({"event": "listening", "port": bound}), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if line == "snap":
            print(json.dumps(sink.snapshot()), flush=True)
        elif line in ("quit", ""):
            break
    server.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Counting forward server that acks (benchmark downstream).")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
