"""Load generator for the end-to-end benchmark: a forward-protocol client that
sends pre-built PackedForward chunks with acks.

Theory of operation
-------------------
* The workload is built once, before the clock starts: ``build_templates``
  packs ``chunks`` x 1000 records in the shapes Fluentd produces from rsyslog
  traffic (``in_syslog``: host, ident, pid, message, source_address;
  ``in_tail`` with the ``none`` parser: one RSYSLOG_FileFormat line in
  ``message``), ~150-250 bytes each, with a fraction (1 % by default) of
  scanner probe lines as rsyslog logs them (``GET / HTTP/1.0#015``, ``#015``,
  ``OPTIONS sip:nm SIP/2.0#015``, ``#026#003#000#000S#001...``; FIELD_GUIDE
  2.1 and 3 for the escaping and the HOSTNAME/TAG split).
* Every record ends with the key ``bench_sent`` holding a float64, and every
  entry starts with an EventTime. A template keeps the packed bytes *between*
  those two 8-byte holes, so stamping a chunk at send time is one
  ``bytes.join`` (no per-record Python work): all records of a chunk share
  the send time and the event time. ``frame`` builds the whole PackedForward
  frame in that same join (the frame header and option map ride on the
  first and last body), so a chunk's bytes are written once in user space:
  the load generator shares two cores with probetag and the sink, and what
  it spends is taken from probetag. The sink counts ``bench_sent`` keys and
  reads one stamp per run of equal stamps (``_sink.py``); tagged records
  are re-encoded by probetag but keep the key and its float64.
* ``run_load`` drives ``connections`` TCP connections, each with at most
  ``window`` unacked chunks. Frames are the bytes
  ``probetag.forward.ClientConnection.send_packed`` makes (checked in
  ``tests/bench``); replies must be ``{"ack": id}`` for an id in flight,
  anything else ends the connection with a reason, as in ``ClientConnection``.
  Each connection is an ``asyncio.Protocol`` (``_Conn``) that takes acks
  in ``data_received``. ``rate=None`` is closed loop: a freed slot is
  refilled from that same callback, so a chunk goes out as soon as the
  window allows (the max-throughput mode) without a task switch. With ``rate`` it
  is open loop: chunk *k* is due at ``start + k * 1000 / rate`` and is
  stamped with that *due* time, not the time it actually left, so a stall
  that holds the sender back shows as latency instead of being hidden
  (coordinated omission).
* Everything is bounded: the run stops sending after ``seconds``, waits at
  most ``drain_timeout`` for outstanding acks, and reports what was never
  acked instead of waiting for it.

Run as a script it prints one JSON line ``{"event": "started"}`` once every
connection is up and one ``{"event": "done", ...}`` with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import msgpack

from probetag.decode import escape
from probetag.forward import new_chunk_id

__all__ = ["Template", "LoadResult", "build_templates", "stamp", "frame", "frame_prefix", "run_load", "benign_message",
           "probe_lines", "rsyslog_split", "file_line", "CHUNK_RECORDS", "STAMP_KEY"]

CHUNK_RECORDS = 1000
STAMP_KEY = "bench_sent"
TAG = "syslog.bench"
_MAX_REPLY = 64 * 1024  # acks are tens of bytes

_HEAD = b"\x92\xd7\x00"  # [EventTime (fixext8, type 0), ...
_HOLE = b"\x00" * 8
_packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")

# -------------------------------------------------------------- workload

HOSTS = [f"app-{i:02d}.prod.example.net" for i in range(16)] + ["db-1", "edge-gw-3", "mail"]
USERS = ("alice", "bob", "deploy", "root", "www-data", "backup", "postgres")
_MESSAGES = (
    ("sshd", "Accepted publickey for {user} from 10.{a}.{b}.{c} port {port} ssh2: ED25519 SHA256:{hex}"),
    ("sshd", "pam_unix(sshd:session): session opened for user {user}(uid={uid}) by (uid=0)"),
    ("sshd", "Connection closed by authenticating user {user} 192.0.2.{c} port {port} [preauth]"),
    ("CRON", "pam_unix(cron:session): session closed for user {user}"),
    ("CRON", "({user}) CMD (/usr/local/bin/rotate-logs --keep {b} >/dev/null 2>&1)"),
    ("systemd", "Started Session {port} of User {user}."),
    ("systemd", "logrotate.service: Deactivated successfully. Consumed {b}.{c}s CPU time."),
    ("kernel", "[{port}.{uid}] eth0: renamed from veth{hex8}; link becomes ready"),
    ("nginx", '10.{a}.{b}.{c} - - "GET /api/v1/items?page={b}&id={hex8} HTTP/1.1" 200 {port} "-" "python-requests/2.31"'),
    ("nginx", "upstream timed out (110: Connection timed out) while reading response header from upstream, client: 10.{a}.{b}.{c}"),
    ("postfix/smtpd", "connect from mail-{hex8}.example.org[198.51.100.{c}]"),
    ("postfix/qmgr", "{HEX}: from=<{user}@example.net>, size={port}, nrcpt=1 (queue active)"),
    ("app", "level=info#011msg=request done#011user={user}#011took_ms={b}#011trace={hex8}"),
    ("dockerd", 'time="2026-11-27T10:00:00.{uid}Z" level=info msg="ignoring event" container={hex}'),
)


def benign_message(rng: random.Random) -> tuple[str, str]:
    """(ident, message) of an ordinary syslog line, ~70-150 characters."""
    ident, fmt = rng.choice(_MESSAGES)
    return ident, fmt.format(
        user=rng.choice(USERS), a=rng.randrange(256), b=rng.randrange(256), c=rng.randrange(1, 255),
        port=rng.randrange(1024, 65535), uid=rng.randrange(1000, 60000),
        hex="%032x" % rng.getrandbits(128), hex8="%08x" % rng.getrandbits(32),
        HEX="%010X" % rng.getrandbits(40))


_CATALOGUE: list[list[bytes]] | None = None


def _catalogue_probes() -> list[list[bytes]]:
    """The built-in catalogue's TCP payloads cut into lines the way rsyslog's
    imtcp cuts them (at LF; empty frames dropped, FIELD_GUIDE 1). Payloads
    that start with a digit are left out: octet-counting framing would eat
    them (FIELD_GUIDE 1)."""
    global _CATALOGUE
    if _CATALOGUE is None:
        from probetag.detect import load_catalogue

        out = []
        for sig in load_catalogue():
            if sig.transport != "tcp" or not sig.payload or sig.payload[:1].isdigit():
                continue
            lines = [ln for ln in sig.payload.split(b"\n") if ln][:4]
            if lines:
                out.append(lines)
        _CATALOGUE = out
    return _CATALOGUE


def probe_lines(rng: random.Random) -> list[bytes]:
    """The lines of one probe as rsyslog cuts them (at LF, CR kept), as sent.

    Half are drawn from the built-in catalogue's TCP payloads (what the
    scanners send); the other half are request shapes every scanner family
    writes (HTTP and RTSP request lines, a SIP OPTIONS, a TLS ClientHello
    with random bytes after its first octets, a bare CRLF), some of which no
    signature matches exactly, as in real traffic."""
    if rng.random() < 0.5:
        known = _catalogue_probes()
        if known:
            return list(rng.choice(known))
    kind = rng.randrange(6)
    if kind == 0:
        return [b"GET / HTTP/1.0\r", b"\r"]
    if kind == 1:
        return [b"OPTIONS / HTTP/1.0\r", b"\r"]
    if kind == 2:
        return [b"OPTIONS / RTSP/1.0\r", b"\r"]
    if kind == 3:
        return [b"OPTIONS sip:nm SIP/2.0\r", b"Via: SIP/2.0/TCP nm;branch=foo\r", b"Call-ID: 50000\r", b"\r"]
    if kind == 4:
        tail = bytes(rng.randrange(256) for _ in range(40)).replace(b"\n", b"\x0b")
        return [b"\x16\x03\x00\x00S\x01\x00\x00O\x03\x00" + tail]
    return [b"\r"]


#: Probe lines that are probes on their own (the correlator keeps state
#: only for sources with such a line; a lone ``#015`` creates none).
_DISTINCTIVE = (b"GET / HTTP/1.0\r", b"OPTIONS / HTTP/1.0\r", b"OPTIONS / RTSP/1.0\r",
                b"OPTIONS sip:nm SIP/2.0\r")

_HOSTWORD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def rsyslog_split(line: bytes, sender: str) -> tuple[str, str, str]:
    """(HOSTNAME, TAG, MSG) as rsyslog's RFC 3164 parser makes them from a
    raw network line (FIELD_GUIDE 2.1 escaping, 3.3 HOSTNAME, 3.4 TAG). Text
    is str with undecodable bytes as surrogates (how msgpack carries them)."""
    esc = escape(line, "rsyslog")
    host = sender
    word, sp, rest = esc.partition(b" ")
    if word and all(ch in _HOSTWORD for ch in word) and word[-1:] not in (b".", b"-", b"_") and (sp or not rest):
        host, esc = word.decode(), rest
        if not sp:
            esc = b""
    if esc[:1] in (b" ", b"{", b"[") or not esc:
        tag, msg = b"", esc
    else:
        cut = len(esc)
        for i, ch in enumerate(esc[:510]):
            if ch == 0x20:
                cut = i
                break
            if ch == 0x3A:
                cut = i + 1
                break
        else:
            cut = min(cut, 510)
        tag, msg = esc[:cut], esc[cut:]
    dec = lambda b: b.decode("utf-8", "surrogateescape")  # noqa: E731
    return host, dec(tag), dec(msg)


def file_line(ts: str, host: str, tag: str, msg: str) -> str:
    """One RSYSLOG_FileFormat line (no LF): a space is added before MSG
    unless it starts with one (``sp-if-no-1st-sp``)."""
    return f"{ts} {host} {tag}{msg if msg.startswith(' ') else ' ' + msg}"


def _rfc3339(rng: random.Random) -> str:
    return f"2026-11-27T10:{rng.randrange(60):02d}:{rng.randrange(60):02d}.{rng.randrange(10**6):06d}+00:00"


def _benign_record(rng: random.Random) -> dict:
    host = rng.choice(HOSTS)
    ident, msg = benign_message(rng)
    if rng.random() < 0.7:  # Fluentd in_syslog (rsyslog forwarding to it)
        return {"host": host, "ident": ident, "pid": str(rng.randrange(100, 99999)), "message": msg,
                "source_address": f"10.0.{rng.randrange(8)}.{rng.randrange(1, 255)}"}
    # Fluentd in_tail of /var/log/syslog with the none parser
    return {"message": file_line(_rfc3339(rng), host.split(".")[0], f"{ident}[{rng.randrange(100, 99999)}]:", msg)}


def _probe_record(rng: random.Random, line: bytes, sender: str, tail_share: float = 0.3) -> dict:
    host, tag, msg = rsyslog_split(line, sender)
    if rng.random() >= tail_share:
        # in_syslog: ident is the TAG without [pid]/colon; message loses its
        # leading spaces (Fluentd's rfc3164 regex ' *(?<message>.*)').
        return {"host": host, "ident": tag.rstrip(":"), "pid": None, "message": msg.lstrip(" "),
                "source_address": sender}
    return {"message": file_line(_rfc3339(rng), host, tag, msg)}


def _entry_body(record: dict) -> bytes:
    """The packed entry between its two stamp holes (see the module doc)."""
    rec = {k: v for k, v in record.items() if v is not None}
    rec[STAMP_KEY] = 0.0
    packed = _packer.pack([msgpack.ExtType(0, _HOLE), rec])
    assert packed.startswith(_HEAD + _HOLE) and packed.endswith(b"\xcb" + _HOLE), "unexpected packing"
    return packed[len(_HEAD) + 8:-8]


@dataclass(frozen=True, slots=True)
class Template:
    """One pre-built chunk: ``bodies`` are the entries without their holes."""

    bodies: tuple[bytes, ...]
    probes: int
    nbytes: int  # size of the stamped entries

    @property
    def count(self) -> int:
        return len(self.bodies)


def build_templates(chunks: int, probe_rate: float = 0.01, seed: int = 7,
                    sources: int = 0) -> list[Template]:
    """``chunks`` templates of 1000 records. ``sources`` > 0 builds the
    correlation-state workload instead: every record is a distinctive probe
    line (one the correlator keeps state for) from its own sender,
    ``sources`` distinct senders in turn (10.x.y.z), all in the in_syslog
    shape, which keeps the sender in ``source_address``."""
    rng = random.Random(seed)
    out = []
    pending: list[tuple[bytes, str]] = []  # rest of the current probe's lines, in order
    scanners = [f"203.0.113.{i}" for i in range(1, 41)]
    serial = 0
    for _ in range(chunks):
        bodies = []
        nprobe = 0
        want = round(CHUNK_RECORDS * probe_rate) if not sources else CHUNK_RECORDS
        where = set(rng.sample(range(CHUNK_RECORDS), want)) if want < CHUNK_RECORDS else None
        for i in range(CHUNK_RECORDS):
            if sources:
                n = serial % sources
                serial += 1
                sender = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
                # in_syslog only: an in_tail line whose HOSTNAME is the
                # payload's first word has lost the sender (FIELD_GUIDE 3.3).
                line = _DISTINCTIVE[n % len(_DISTINCTIVE)]
                bodies.append(_entry_body(_probe_record(rng, line, sender, 0.0)))
                nprobe += 1
            elif where is not None and i in where:
                if not pending:
                    sender = rng.choice(scanners)
                    pending = [(ln, sender) for ln in probe_lines(rng)]
                line, sender = pending.pop(0)
                bodies.append(_entry_body(_probe_record(rng, line, sender)))
                nprobe += 1
            else:
                bodies.append(_entry_body(_benign_record(rng)))
        nbytes = sum(len(b) for b in bodies) + len(bodies) * (len(_HEAD) + 16)
        out.append(Template(tuple(bodies), nprobe, nbytes))
    return out


def _times(sent: float) -> tuple[bytes, bytes]:
    """(EventTime payload, float64) of ``sent``."""
    sec = int(sent)
    et = sec.to_bytes(4, "big") + min(int((sent - sec) * 1e9), 999_999_999).to_bytes(4, "big")
    return et, struct.pack(">d", sent)


def stamp(t: Template, sent: float) -> bytes:
    """The packed entries of ``t`` with every event time and ``bench_sent``
    set to ``sent`` (Unix seconds)."""
    et, f = _times(sent)
    return b"".join((_HEAD, et, (f + _HEAD + et).join(t.bodies), f))


def frame_prefix(t: Template, tag: str) -> bytes:
    """What comes before ``t``'s entries in a PackedForward frame:
    ``[tag, bin(entries) ...`` (the array header, the tag, the bin header in
    the smallest form, as msgpack writes it)."""
    n = t.nbytes
    head = (b"\xc4" + n.to_bytes(1, "big") if n < 1 << 8 else
            b"\xc5" + n.to_bytes(2, "big") if n < 1 << 16 else b"\xc6" + n.to_bytes(4, "big"))
    return b"\x93" + _packer.pack(tag) + head


def frame(t: Template, sent: float, prefix: bytes, chunk_id: str) -> bytes:
    """The whole PackedForward frame ``[tag, entries, {"size": n, "chunk":
    id}]`` of ``t`` stamped with ``sent``: the bytes
    ``ClientConnection.send_packed`` makes (``tests/bench`` compares them),
    built by ONE ``join`` whose separator carries the stamps; the frame
    header and the option map ride on the first and last body, so the
    entries are not copied a second time."""
    et, f = _times(sent)
    tail = f + _packer.pack({"size": len(t.bodies), "chunk": chunk_id})
    parts = list(t.bodies)
    if len(parts) == 1:
        return b"".join((prefix, _HEAD, et, parts[0], tail))
    parts[0] = prefix + _HEAD + et + parts[0]
    parts[-1] += tail
    return (f + _HEAD + et).join(parts)


# -------------------------------------------------------------- sending


@dataclass(slots=True)
class LoadResult:
    mode: str
    seconds: float = 0.0           # from the first send to the last send
    chunks_sent: int = 0
    records_sent: int = 0
    bytes_sent: int = 0            # packed entries (the records), not frame overhead
    probes_sent: int = 0
    chunks_acked: int = 0
    records_acked: int = 0
    unacked_chunks: int = 0        # still outstanding when the drain bound ran out
    errors: list[str] = field(default_factory=list)
    ack_rtt_p50_ms: float = 0.0
    ack_rtt_p99_ms: float = 0.0
    max_behind_ms: float = 0.0     # open loop: worst lateness of a send behind its due time
    cpu_seconds: float = 0.0       # this process (user + system) while sending and draining
    cpu_user: float = 0.0
    cpu_system: float = 0.0
    first_send: float = 0.0        # Unix time
    last_send: float = 0.0


class _Conn(asyncio.Protocol):
    """One connection and its window of unacked chunks. Acks are taken in
    ``data_received`` and, in the closed loop, the freed slots are refilled
    right there (``on_free``): an ack costs no task switch, which matters
    because every cycle the load generator spends is taken from probetag."""

    def __init__(self, window: int, res: LoadResult, rtts: list[float]) -> None:
        self.free = window
        self.inflight: dict[str, tuple[float, int]] = {}  # chunk id -> (sent monotonic, records)
        self.dead: str | None = None
        self.closing = False
        self.paused = False
        self.transport: asyncio.Transport | None = None
        self.res, self.rtts = res, rtts
        self.on_free: Callable[[_Conn], None] | None = None  # closed loop: refill
        self.waiter: asyncio.Future[None] | None = None      # open loop: waiting for a slot
        self._up = msgpack.Unpacker(raw=False, unicode_errors="surrogateescape", max_buffer_size=_MAX_REPLY)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # Pause only beyond a few frames' worth of unsent bytes (the default
        # 64 KiB is less than one 1000-record frame).
        self.transport.set_write_buffer_limits(high=4 * 1024 * 1024)

    def data_received(self, data: bytes) -> None:
        # Replies are acks only (no handshake: the benchmark runs without a
        # shared key): {"ack": id} for an id in flight, anything else is
        # fatal, as in ClientConnection (SPEC1; {} is Vector's nack).
        res = self.res
        try:
            self._up.feed(data)
            for msg in self._up:
                ack = msg.get("ack") if isinstance(msg, dict) else None
                got = self.inflight.pop(ack, None) if isinstance(ack, str) else None
                if got is None:
                    self._fail("nack" if msg == {} else f"unexpected reply: {str(msg)[:80]}")
                    return
                self.rtts.append(time.monotonic() - got[0])
                res.chunks_acked += 1
                res.records_acked += got[1]
                self.free += 1
        except (msgpack.UnpackException, ValueError) as exc:
            self._fail(f"bad reply: {exc}")
            return
        self._wake()

    def eof_received(self) -> bool:
        self._fail("closed by server")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self._fail(f"connection lost: {exc}" if exc else "closed by server")

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake()

    def _fail(self, reason: str) -> None:
        if self.dead is None:
            self.dead = reason
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        if self.on_free is not None:
            self.on_free(self)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run_load(host: str, port: int, templates: list[Template], seconds: float, *,
                   rate: float | None = None, window: int = 8, connections: int = 1,
                   drain_timeout: float = 15.0, connect_timeout: float = 10.0, tag: str = TAG,
                   min_records: int = 0, max_seconds: float = 0.0,
                   on_started=None) -> LoadResult:
    """Send for ``seconds`` (see the module doc); returns the figures.
    ``min_records``: closed loop only, keep sending past ``seconds`` until that
    many records went out, but never past ``max_seconds``."""
    res = LoadResult("rate" if rate else "max")
    cpu0 = os.times()
    loop = asyncio.get_running_loop()
    rtts: list[float] = []
    conns: list[_Conn] = []
    # The server may still be starting (the benchmark starts both at once so
    # building the chunks overlaps its start-up): retry until connect_timeout.
    give_up = time.monotonic() + connect_timeout
    while len(conns) < connections:
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: _Conn(window, res, rtts), host, port), 10.0)
        except (OSError, asyncio.TimeoutError):
            if time.monotonic() >= give_up:
                raise
            await asyncio.sleep(0.05)
            continue
        conns.append(proto)
    prefixes = [frame_prefix(t, tag) for t in templates]
    if on_started is not None:
        on_started()
    start = time.monotonic()
    wall0 = time.time()
    end = start + seconds
    k = 0  # chunks handed out so far, over all connections

    def send(c: _Conn, sent: float) -> None:
        nonlocal k
        i = k % len(templates)
        t = templates[i]
        k += 1
        cid = new_chunk_id()
        c.free -= 1
        c.inflight[cid] = (time.monotonic(), len(t.bodies))
        assert c.transport is not None
        c.transport.write(frame(t, sent, prefixes[i], cid))
        if not res.first_send:
            res.first_send = sent
        res.last_send = sent
        res.chunks_sent += 1
        res.records_sent += len(t.bodies)
        res.bytes_sent += t.nbytes
        res.probes_sent += t.probes

    hard_end = start + max(seconds, max_seconds)

    def more() -> bool:
        now = time.monotonic()
        return now < end or (res.records_sent < min_records and now < hard_end)

    def refill(c: _Conn) -> None:
        # Closed loop: a chunk goes out as soon as the window has room.
        while c.free > 0 and c.dead is None and not c.paused and more():
            send(c, time.time())

    async def open_loop() -> None:
        # One schedule; chunks are dealt to the connections in turn.
        step = CHUNK_RECORDS / rate
        while True:
            due = start + k * step
            if due >= end:
                return
            c = conns[k % len(conns)]
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            while c.free <= 0 and c.dead is None:
                c.waiter = loop.create_future()
                await c.waiter
                c.waiter = None
            if c.dead is not None:
                return
            res.max_behind_ms = max(res.max_behind_ms, (time.monotonic() - due) * 1e3)
            send(c, wall0 + (due - start))

    if rate:
        await open_loop()
    else:
        for c in conns:
            c.on_free = refill
            refill(c)
        # Acks drive the sending; this only notices the end (bounded by hard_end).
        while more() and any(c.dead is None for c in conns):
            await asyncio.sleep(0.01)
        for c in conns:
            c.on_free = None
    res.seconds = time.monotonic() - start

    deadline = time.monotonic() + drain_timeout
    while any(c.inflight and c.dead is None for c in conns) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    for c in conns:
        res.unacked_chunks += len(c.inflight)
        if c.dead is not None:
            res.errors.append(c.dead)
        c.closing = True
        if c.transport is not None:
            c.transport.close()
    await asyncio.sleep(0)  # let connection_lost run
    res.ack_rtt_p50_ms = round(_pct(rtts, 0.50) * 1e3, 3)
    res.ack_rtt_p99_ms = round(_pct(rtts, 0.99) * 1e3, 3)
    res.max_behind_ms = round(res.max_behind_ms, 3)
    cpu1 = os.times()
    res.cpu_user = round(cpu1.user - cpu0.user, 3)
    res.cpu_system = round(cpu1.system - cpu0.system, 3)
    res.cpu_seconds = round(res.cpu_user + res.cpu_system, 3)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Send pre-built forward chunks with acks (benchmark load).")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=None, help="records/s (open loop); default: as fast as acks allow")
    ap.add_argument("--window", type=int, default=16, help="unacked chunks per connection")
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--chunks", type=int, default=50, help="distinct pre-built chunks of 1000 records")
    ap.add_argument("--probe-rate", type=float, default=0.01)
    ap.add_argument("--sources", type=int, default=0, help="correlation workload: this many distinct probing senders")
    ap.add_argument("--min-records", type=int, default=0,
                    help="closed loop: send at least this many records (up to --max-seconds)")
    ap.add_argument("--max-seconds", type=float, default=0.0)
    ap.add_argument("--drain-timeout", type=float, default=15.0)
    ap.add_argument("--connect-timeout", type=float, default=10.0,
                    help="keep retrying the first connect this long (server starting up)")
    args = ap.parse_args(argv)
    if args.sources:
        args.chunks = max(args.chunks, -(-args.sources // CHUNK_RECORDS))
    templates = build_templates(args.chunks, args.probe_rate, sources=args.sources)

    def started() -> None:
        print(json.dumps({"event": "started", "time": time.time()}), flush=True)

    res = asyncio.run(run_load(args.host, args.port, templates, args.seconds, rate=args.rate,
                               window=args.window, connections=args.connections,
                               drain_timeout=args.drain_timeout, connect_timeout=args.connect_timeout,
                               min_records=args.min_records, max_seconds=args.max_seconds,
                               on_started=started))
    out = asdict(res)
    out["event"] = "done"
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
