"""Counting downstream for the end-to-end benchmark: a forward-protocol server
that acks every chunk and records what arrived and when.

Theory of operation
-------------------
* Runs as its own process (``python bench/_sink.py``) so its CPU time is not
  charged to the process under test. On a 2-core machine every cycle it
  spends is a cycle ``probetag serve --workers 2`` cannot have, so it does
  as little as an exact count allows: no msgpack decoding of records, no
  Python work per record, about two C-level passes over the bytes.
* Framing (``_Conn``): an ``asyncio.BufferedProtocol``, so the kernel copies
  received bytes straight into the connection's buffer (no intermediate
  ``bytes`` per read, no second buffer in a framer). It understands what
  ``probetag serve``'s forward output sends: PackedForward
  ``[tag, entries (bin or str), {"size": n, "chunk": id}]`` with plain
  entries; the header bytes give the entries' extent, only the option map
  is decoded (msgpack). Anything else (Forward or Message mode, compressed
  entries, a frame over ``MAX_FRAME``) is counted in ``errors`` by reason
  and the connection is closed: nothing is dropped silently, and the
  benchmark's delivery check then fails visibly.
* Every accepted frame is acked at once (that is what releases probetag's
  upstream acks; ``probetag.forward.encode_ack`` echoes the id's type) and
  accounted (``Sink.on_entries``):

  - ``records``: the frame's ``size`` option (what the sender claims);
    ``stamped``: records counted in the bytes, one per ``bench_sent`` key.
    The load generator puts that key in every record, once
    (``_loadgen.py``), and its marker -- fixstr(10) ``bench_sent`` followed
    by the float64 header ``0xcb`` -- cannot occur inside another msgpack
    value of the workload (``tests/bench`` checks this against a full
    decode of what probetag sends). ``stamped`` is what the delivery check
    uses: it can only undercount, so a pass proves the records arrived.
  - latency: arrival (when the frame is complete) minus the record's
    ``bench_sent``. The load generator stamps all records of one upstream
    chunk with one send time, and probetag's output sends a chunk's records
    in order and batches whole chunks, so a frame holds a few *runs* of
    equal stamps. ``stamp_runs`` finds each run's end by galloping and
    bisecting with ``find`` (a few dozen short searches per run) and counts
    its records with one ``count`` of marker+stamp. Runs need not really be
    contiguous for the result to be exact: each count only takes records
    with that run's stamp, so a record hiding in another run makes the
    total fall short of ``size``, and then the frame is rescanned with a
    regex over every stamp (``rescans`` says how often; 0 in practice).
  - ``tagged``: occurrences of the output field's key, fixstr(5)
    ``probe`` (hyperscan when installed, else ``bytes.count``); only
    probetag adds that key, and only with the probe map as its value
    (checked by the same test).
  - latencies go into a log histogram (1 % buckets), so a snapshot is small
    and percentiles of a time window are the difference of two snapshots.
* Control on stdin/stdout, one JSON line each: on start it prints
  ``{"event": "listening", "port": P}``; ``snap`` prints the cumulative
  counters, histogram and this process's CPU time; ``quit`` (or EOF) exits.
  Every wait is bounded by the caller (``bench_e2e.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import resource
import struct
import sys
import time
from collections import Counter

import msgpack
from msgpack.exceptions import FormatError, OutOfData, StackError

from probetag.forward import encode_ack

__all__ = ["Sink", "percentile", "hist_diff", "stamp_runs", "stamp_counts", "count_tagged", "BUCKET", "MARK", "TAGGED", "MAX_FRAME"]

#: Histogram bucket ratio: bucket i holds latencies around BUCKET**i microseconds.
BUCKET = 1.01
_LOG_BUCKET = math.log(BUCKET)
#: fixstr(10) "bench_sent", then the float64 header: the 8 bytes after it are the stamp.
MARK = b"\xaabench_sent\xcb"
_KEY = len(MARK) + 8
#: fixstr(5) "probe": the key of the map probetag adds to a tagged record.
TAGGED = b"\xa5probe"
_STAMP_RE = re.compile(re.escape(MARK) + rb"(.{8})", re.DOTALL)
_DOUBLE = struct.Struct(">d").unpack
#: Largest frame accepted (probetag's output sends at most 4 MiB of entries per frame).
MAX_FRAME = 64 * 1024 * 1024
_MAX_OPTIONS = 4096          # {"size": n, "chunk": id}: tens of bytes
_MIN_READ = 256 * 1024       # free space offered to each recv_into
_GALLOP = 16 * 1024          # first gallop step: a run is ~190 KB (1000 records)
_LINEAR = 1024               # below this, walk the markers one by one


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


def _run_end(data: bytes | bytearray, pos: int, end: int, key: bytes) -> int:
    """The first marker after ``pos`` (which starts ``key``, marker + stamp)
    whose stamp differs, or -1, assuming equal stamps form one run: gallop
    forward from ``pos``, then bisect, then walk the last few markers."""
    lo = pos  # a marker carrying key
    hi = end  # the first marker at or after hi differs from key, or there is none
    step = _GALLOP
    while lo + step < end:
        q = data.find(MARK, lo + step, end)
        if q < 0:
            hi = lo + step
            break
        if data.startswith(key, q):
            lo = q
            step *= 2
        else:
            hi = q
            break
    while hi - lo > _LINEAR:
        mid = (lo + hi) // 2
        q = data.find(MARK, mid, hi)
        if q < 0:
            hi = mid
        elif data.startswith(key, q):
            lo = q
        else:
            hi = q
    q = data.find(MARK, lo + 1, end)
    while q >= 0 and data.startswith(key, q):
        q = data.find(MARK, q + 1, end)
    return q


def stamp_runs(data: bytes | bytearray, start: int, end: int) -> tuple[list[tuple[bytes, int]], int]:
    """``([(stamp, records), ...], total)`` for the entries in
    ``data[start:end]``, one item per run of equal stamps (see the module
    doc). Exact whenever ``total`` equals the number of records; a record
    whose stamp sits in another run is left out, never miscounted."""
    runs = []
    total = 0
    pos = data.find(MARK, start, end)
    while pos >= 0 and pos + _KEY <= end:
        key = bytes(data[pos:pos + _KEY])
        nxt = _run_end(data, pos, end, key)
        n = data.count(key, pos, nxt if nxt >= 0 else end)
        runs.append((key[len(MARK):], n))
        total += n
        pos = nxt
    return runs, total


def stamp_counts(data: bytes | bytearray, start: int, end: int) -> Counter[bytes]:
    """Every stamp in ``data[start:end]`` with its count: one regex match per
    record (the slow, assumption-free path)."""
    return Counter(_STAMP_RE.findall(data, start, end))


def _tagged_counter():
    """``count(data, start, end)``: occurrences of ``TAGGED`` in
    ``data[start:end]``. Hyperscan (probetag's ``fast`` extra) scans for a
    literal several times faster than ``bytes.count``, whose skip loop
    stalls on every letter of "probe" in ordinary text; tagged records are
    about 1 % of the records, so its per-match callback costs little."""
    try:
        import hyperscan
    except ImportError:
        return lambda data, start, end: data.count(TAGGED, start, end)
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=[rb"\xa5probe"], ids=[0], elements=1, flags=[0])
    hits = [0]

    def on_match(*_args) -> None:
        hits[0] += 1

    def count(data: bytes | bytearray, start: int, end: int) -> int:
        hits[0] = 0
        with memoryview(data) as view, view[start:end] as part:
            db.scan(part, match_event_handler=on_match)
        return hits[0]

    return count


count_tagged = _tagged_counter()


class Sink:
    """The counters of one sink process (all connections)."""

    def __init__(self) -> None:
        self.chunks = 0
        self.records = 0
        self.stamped = 0
        self.bytes = 0
        self.tagged = 0
        self.rescans = 0
        self.errors: Counter[str] = Counter()
        self.connections = 0
        self.hist: Counter[int] = Counter()
        self.first_arrival = 0.0
        self.last_arrival = 0.0

    def on_entries(self, data: bytes | bytearray, start: int, end: int, size: int | None,
                   arrival: float) -> None:
        """Account the packed entries ``data[start:end]`` of one frame whose
        ``size`` option said ``size`` records (None: absent)."""
        runs, stamped = stamp_runs(data, start, end)
        if stamped != (size if size is not None else data.count(MARK, start, end)):
            exact = stamp_counts(data, start, end)
            self.rescans += 1
            runs, stamped = list(exact.items()), sum(exact.values())
        hist = self.hist
        for raw, n in runs:
            lat_us = (arrival - _DOUBLE(raw)[0]) * 1e6
            hist[int(round(math.log(lat_us) / _LOG_BUCKET)) if lat_us >= 1.0 else 0] += n
        self.chunks += 1
        self.stamped += stamped
        self.records += size if size is not None else stamped
        if size is not None and size != stamped:
            self.errors["size_not_stamped"] += 1  # records without the stamp, or a wrong size
        self.bytes += end - start
        self.tagged += count_tagged(data, start, end)
        if not self.first_arrival:
            self.first_arrival = arrival
        self.last_arrival = arrival

    def snapshot(self) -> dict:
        t = os.times()
        return {"event": "snap", "time": time.time(), "chunks": self.chunks, "records": self.records,
                "stamped": self.stamped, "bytes": self.bytes, "tagged": self.tagged,
                "rescans": self.rescans, "connections": self.connections, "errors": dict(self.errors),
                "first_arrival": self.first_arrival, "last_arrival": self.last_arrival,
                "cpu_seconds": round(t.user + t.system, 3), "cpu_user": round(t.user, 3),
                "cpu_system": round(t.system, 3),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "hist": {str(k): v for k, v in self.hist.items()}}


class _Bad(Exception):
    """A frame this sink does not take; the connection is closed."""


def _length(buf: bytearray, pos: int, filled: int, bin_ok: bool) -> tuple[int, int] | None:
    """(header length, payload length) of the str (or, with ``bin_ok``, bin)
    whose header is at ``pos``; None while the header is incomplete."""
    b = buf[pos]
    if 0xA0 <= b <= 0xBF:  # fixstr
        return 1, b & 0x1F
    width = _WIDTH.get(b, 0) if bin_ok or b >= 0xD9 else 0
    if not width:
        raise _Bad("unsupported_frame")  # Forward or Message mode, a non-str tag...
    if pos + 1 + width > filled:
        return None
    return 1 + width, int.from_bytes(buf[pos + 1:pos + 1 + width], "big")


#: Header byte -> length bytes: str8/16/32 and bin8/16/32.
_WIDTH = {0xD9: 1, 0xDA: 2, 0xDB: 4, 0xC4: 1, 0xC5: 2, 0xC6: 4}


class _Conn(asyncio.BufferedProtocol):
    """One connection: frames are cut from ``buf[start:filled]``."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.buf = bytearray(_MIN_READ * 2)
        self.start = 0    # first byte of the frame in progress
        self.filled = 0   # end of the received bytes
        self.want = 0     # bytes (from start) the frame in progress needs, once known
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.sink.connections += 1

    def get_buffer(self, sizehint: int) -> memoryview:
        # Compact and grow here, not in buffer_updated: the transport holds
        # the previous view until buffer_updated returns, and a bytearray
        # with a live view cannot be resized.
        if self.start:
            rest = self.filled - self.start
            self.buf[:rest] = self.buf[self.start:self.filled]
            self.start, self.filled = 0, rest
        need = max(self.want, self.filled) + _MIN_READ
        if need > len(self.buf):
            bigger = bytearray(max(need, 2 * len(self.buf)))
            bigger[:self.filled] = self.buf[:self.filled]
            self.buf = bigger
        return memoryview(self.buf)[self.filled:]

    def buffer_updated(self, nbytes: int) -> None:
        self.filled += nbytes
        acks = []
        try:
            while self.filled > self.start:
                ack = self._frame()
                if ack is None:
                    break
                if ack:
                    acks.append(ack)
        except _Bad as exc:
            self.sink.errors[str(exc)] += 1
            self.filled = self.start = self.want = 0
            assert self.transport is not None
            self.transport.write(b"".join(acks))
            self.transport.close()
            return
        if acks:
            assert self.transport is not None
            self.transport.write(b"".join(acks))

    def eof_received(self) -> bool:
        if self.filled > self.start:
            self.sink.errors["eof_inside_frame"] += 1
        return False

    def _frame(self) -> bytes | None:
        """Account the frame at ``start`` if it is complete and return its
        ack (b"" without a chunk id); None while more bytes are needed."""
        buf, p, filled = self.buf, self.start, self.filled
        if filled - p < self.want:
            return None
        arity = buf[p]
        if arity not in (0x92, 0x93):  # [tag, entries] or [tag, entries, option]
            raise _Bad("unsupported_frame")
        if filled - p < 2:
            return self._more(2)
        got = _length(buf, p + 1, filled, bin_ok=False)
        q = p + 1 + got[0] + got[1] if got is not None else filled
        if q >= filled:
            return self._more(q - p + 1)
        got = _length(buf, q, filled, bin_ok=True)
        if got is None:
            return self._more(q - p + 6)
        es = q + got[0]
        ee = es + got[1]
        if ee - p > MAX_FRAME:
            raise _Bad("frame_too_large")
        option: dict = {}
        done = ee
        if arity == 0x93:
            if filled <= ee:
                return self._more(ee - p + 1)
            up = msgpack.Unpacker(raw=False, unicode_errors="surrogateescape", max_buffer_size=_MAX_OPTIONS)
            up.feed(buf[ee:min(filled, ee + _MAX_OPTIONS)])
            try:
                opt = up.unpack()
            except OutOfData:
                if filled - ee >= _MAX_OPTIONS:
                    raise _Bad("options_too_large") from None
                return self._more(filled - p + 1)
            except (FormatError, StackError, ValueError):
                raise _Bad("bad_options") from None
            if opt is not None:  # nil options: none (old Docker logging driver)
                if not isinstance(opt, dict):
                    raise _Bad("bad_options")
                option = opt
            done = ee + up.tell()
        elif filled < ee:
            return self._more(ee - p)
        if option.get("compressed", "text") != "text":
            raise _Bad("compressed_unsupported")
        size = option.get("size")
        self.sink.on_entries(buf, es, ee, size if type(size) is int else None, time.time())
        self.start, self.want = done, 0
        chunk = option.get("chunk")
        return encode_ack(chunk) if isinstance(chunk, (str, bytes)) else b""

    def _more(self, want: int) -> None:
        self.want = want
        return None


async def serve(host: str, port: int) -> None:
    sink = Sink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Conn(sink), host, port)
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
