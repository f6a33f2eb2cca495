"""Real nmap against the private rsyslog, and the ground truth of what it sent.

Theory of operation
-------------------
Ground truth never comes from probetag's own detector; it comes from two
independent records of the scan:

1. **nmap's own trace.** ``--version-trace`` prints, for every service probe,
   ``Service scan sending probe NAME to HOST:PORT (tcp|udp)`` followed by the
   nsock line ``Write request for N bytes to IOD #k``, with times relative to
   nmap's start. nmap prints the names on stdout and the nsock lines on
   stderr: the two are read as one stream, or their order is lost.
   ``--script-trace`` adds the NSE scripts that ``-sV`` runs, with a hex dump
   of each write and its source port; ``--packet-trace`` adds the raw packets
   of the port scan (``-sU`` sends a UDP payload there). rsyslog never
   answers, so nmap walks its probes in order until the intensity runs out.
   ``parse_trace`` turns that text into ``TraceWrite`` events.
2. **The bytes on the wire.** ``WireCapture`` reads the IPv4 packets on the
   loopback interface (an ``AF_PACKET`` socket, root only, the same privilege
   ``nmap -sU`` needs) whose destination is the rsyslog port (kernel BPF
   filter, kernel receive time stamps), and rebuilds each TCP connection
   (SYN, payload segments, FIN/RST) and each UDP datagram as a ``Flow``.

``attribute_flows`` pairs the two: NSE and port-scan writes by source port
and bytes; service-probe writes to a captured payload of exactly the traced
size at the traced time, once the one offset between nmap's clock and the
wall clock is fitted. Flows nobody claims must be
the benign traffic the harness sent itself (matched by content), otherwise
attribution fails loudly. ``label_log_lines`` then maps flows to log lines
with the rsyslog model of ``tests/util/rsyslog.py``; ``capture_scan`` does
the whole run.
"""

from __future__ import annotations

import ctypes
import re
import select
import shutil
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .rsyslog import (FORMATS, VARIANTS, Piece, PrivateRsyslog, Variant, read_json_lines, send_benign, tcp_pieces,
                      udp_pieces)

__all__ = [
    "TraceWrite",
    "ScriptRun",
    "Trace",
    "parse_trace",
    "run_nmap",
    "Segment",
    "Flow",
    "WireCapture",
    "NmapRun",
    "attribute_flows",
    "AttributionError",
    "nmap_path",
    "LineTruth",
    "label_log_lines",
    "ScanCapture",
    "capture_scan",
]


def nmap_path() -> str | None:
    return shutil.which("nmap")


# ---------------------------------------------------------------- the trace
@dataclass(frozen=True, slots=True)
class TraceWrite:
    """One probe as nmap reports sending it. ``nbytes`` is 0 for the NULL
    probe (connect and wait for a banner: nothing is written)."""

    probe: str
    transport: str  # "tcp" | "udp"
    port: int
    t: float  # seconds on nmap's nsock clock
    nbytes: int
    iod: int
    script: str | None = None  # NSE script name when the write came from NSE
    sport: int | None = None  # NSE (--script-trace) and -sU port scan (--packet-trace) name it
    data: bytes | None = None  # NSE only: --script-trace dumps the bytes


@dataclass(frozen=True, slots=True)
class ScriptRun:
    script: str
    port: int
    t_start: float | None
    t_end: float | None


@dataclass(frozen=True, slots=True)
class Trace:
    writes: tuple[TraceWrite, ...]
    scripts: tuple[ScriptRun, ...]
    probes_sent: tuple[str, ...]  # every "sending probe" name, in order


_SENDING = re.compile(r"^Service scan sending probe (\S+) to [\d.]+:(\d+) \((tcp|udp)\)")
_NSOCK = re.compile(r"^NSOCK INFO \[([\d.]+)s\] (\w+)\(\): (.*)$")
_WRITE = re.compile(r"(?:Write|Sendto) request for (\d+) bytes to IOD #(\d+) EID \d+ \[[\d.]+:(\d+)\]")
# --script-trace: "NSE: TCP 127.0.0.1:53812 > 127.0.0.1:15514 | 00000000: 47 45 ...  GET"
# then continuation lines "00000010: 0d 0a ...": 16 hex bytes in a fixed 48-column field
_NSE_DUMP = re.compile(r"^NSE: (TCP|UDP) [\d.]+:(\d+) > [\d.]+:(\d+) \| (00000000: .*)$")
# --packet-trace: raw packets of the port-scan phase; -sU sends UDP payloads
_SENT_UDP = re.compile(r"^SENT \(([\d.]+)s\) UDP [\d.]+:(\d+) > [\d.]+:(\d+) .*\biplen=(\d+)")
_DUMP_CONT = re.compile(r"^([0-9a-f]{8}): (.*)$")
_NSE_START = re.compile(r"^NSE: Starting (\S+) against [\d.]+:(\d+)\.")
_NSE_END = re.compile(r"^NSE: Finished (\S+) against [\d.]+:(\d+)\.")


def parse_trace(text: str) -> Trace:
    """Parse ``nmap --version-trace --script-trace`` output (stdout+stderr)."""
    writes: list[TraceWrite] = []
    sent: list[str] = []
    pending: tuple[str, int, str] | None = None
    last_t = 0.0
    script: str | None = None
    script_start: dict[str, float] = {}
    scripts: list[ScriptRun] = []
    dump: tuple[str, int, int] | None = None
    dump_bytes = bytearray()

    def hexfield(rest: str) -> bytes:
        return bytes.fromhex(rest[10:58].replace(" ", ""))

    for line in text.splitlines():
        if dump is not None:
            c = _DUMP_CONT.match(line)
            if c and int(c.group(1), 16) == len(dump_bytes):
                dump_bytes += hexfield(line)
                continue
            transport, sport, dport = dump
            name = f"nse:{script}" if script else "nse:?"
            writes.append(TraceWrite(name, transport, dport, last_t, len(dump_bytes), -1, script, sport, bytes(dump_bytes)))
            dump = None
        m = _SENT_UDP.match(line)
        if m:
            size = int(m.group(4)) - 28  # IPv4 + UDP headers, no options
            if size > 0:
                writes.append(TraceWrite("portscan:udp", "udp", int(m.group(3)), float(m.group(1)), size, -1,
                                         None, int(m.group(2)), None))
            continue
        m = _NSE_DUMP.match(line)
        if m:
            dump = (m.group(1).lower(), int(m.group(2)), int(m.group(3)))
            dump_bytes = bytearray(hexfield(m.group(4)))
            continue
        m = _SENDING.match(line)
        if m:
            if pending is not None and pending[0] == "NULL":
                # the NULL probe writes nothing; it is followed directly by
                # the next probe on the same connection
                writes.append(TraceWrite("NULL", pending[2], pending[1], last_t, 0, -1))
            pending = (m.group(1), int(m.group(2)), m.group(3))
            sent.append(m.group(1))
            continue
        m = _NSE_START.match(line)
        if m:
            script = m.group(1)
            script_start[script] = last_t
            continue
        m = _NSE_END.match(line)
        if m:
            scripts.append(ScriptRun(m.group(1), int(m.group(2)), script_start.pop(m.group(1), None), last_t))
            script = None
            continue
        m = _NSOCK.match(line)
        if not m:
            continue
        last_t = float(m.group(1))
        w = _WRITE.search(m.group(3))
        if not w:
            continue
        nbytes, iod, port = int(w.group(1)), int(w.group(2)), int(w.group(3))
        if pending is not None:
            name, pport, transport = pending
            if name == "NULL":
                writes.append(TraceWrite("NULL", transport, pport, last_t, 0, iod))
                pending = None
                continue
            writes.append(TraceWrite(name, transport, pport, last_t, nbytes, iod))
            pending = None
        # writes made by NSE scripts are taken from their --script-trace dump
    if pending is not None and pending[0] == "NULL":
        writes.append(TraceWrite("NULL", pending[2], pending[1], last_t, 0, -1))
    return Trace(tuple(writes), tuple(scripts), tuple(sent))


@dataclass(slots=True)
class NmapRun:
    argv: list[str]
    wall_start: float
    wall_end: float
    returncode: int
    output: str
    trace: Trace


def run_nmap(port: int, *, udp: bool = False, timeout: float = 280.0, extra: Iterable[str] = ()) -> NmapRun:
    """``nmap -sV`` (or ``-sU -sV``) against 127.0.0.1:port with the traces on.
    Default intensity: rsyslog never answers, so nmap sends every probe whose
    rarity is within the intensity, one after the other."""
    exe = nmap_path()
    if exe is None:
        raise RuntimeError("nmap is not installed")
    argv = [exe, "-sU" if udp else "-sS", "-sV", "--version-trace", "--script-trace", "--packet-trace", "-Pn", "-n", "-p", str(port)]
    argv += [*extra, "127.0.0.1"]
    t0 = time.time()
    # one stream: "sending probe" goes to stdout and the nsock lines to stderr;
    # only their interleaving ties a write to its probe name
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout)
    t1 = time.time()
    out = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise RuntimeError(f"nmap failed ({proc.returncode}): {out[-2000:]}")
    return NmapRun(argv, t0, t1, proc.returncode, out, parse_trace(out))


# ---------------------------------------------------------- bytes on the wire
@dataclass(frozen=True, slots=True)
class Segment:
    t: float
    data: bytes


@dataclass(slots=True)
class Flow:
    """One TCP connection or one UDP datagram towards the rsyslog port."""

    transport: str
    src: str
    sport: int
    t_open: float
    segments: list[Segment] = field(default_factory=list)
    t_close: float | None = None
    # filled in by attribute_flows
    scanner: str | None = None
    probe: str | None = None
    label: str | None = None  # "probe" | "benign"

    @property
    def payload(self) -> bytes:
        return b"".join(s.data for s in self.segments)


_ETH_P_ALL = 0x0003
_SO_TIMESTAMPNS = 35  # SCM_TIMESTAMPNS has the same value (asm-generic/socket.h)
_SO_ATTACH_FILTER = 26


def _attach_port_filter(sock: socket.socket, port: int) -> object:
    """Classic BPF: IPv4, TCP or UDP, destination port ``port``; else drop.
    (What ``tcpdump 'ip and (tcp or udp) and dst port P'`` compiles to.)"""
    prog = [
        (0x28, 0, 0, 12),  # ldh [12]            ethertype
        (0x15, 0, 6, 0x0800),  # jeq IPv4 ? next : drop
        (0x30, 0, 0, 23),  # ldb [23]            IP protocol
        (0x15, 1, 0, 6),  # jeq TCP ? port : next
        (0x15, 0, 3, 17),  # jeq UDP ? port : drop
        (0xB1, 0, 0, 14),  # ldxb 4*([14]&0xf)   IP header length
        (0x48, 0, 0, 16),  # ldh [x + 16]        destination port
        (0x15, 1, 0, port),  # jeq port ? accept : drop
        (0x06, 0, 0, 0),  # drop
        (0x06, 0, 0, 0x40000),  # accept (whole packet)
    ]
    buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, struct.pack("HL", len(prog), ctypes.addressof(buf)))
    return buf  # (the kernel copies the program; nothing needs to keep it alive)


class WireCapture:
    """Capture traffic to 127.0.0.1:port (TCP and UDP) on ``lo`` in a thread.
    ``with WireCapture(port) as cap: ...``; then ``cap.flows()``."""

    def __init__(self, port: int, iface: str = "lo") -> None:
        self.port = port
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
        # the kernel keeps only packets to our port (other scans may be busy
        # on lo), and stamps each packet on arrival: a Python thread that
        # falls behind must not shift the times ground truth relies on
        self._filter = _attach_port_filter(self._sock, port)
        self._sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        self._sock.bind((iface, 0))
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wire-capture", daemon=True)
        self._lock = threading.Lock()
        self._tcp: dict[int, Flow] = {}
        self._seen_seq: dict[int, set[int]] = {}
        self._flows: list[Flow] = []

    def __enter__(self) -> "WireCapture":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        time.sleep(0.1)  # let packets already queued on lo be read
        self._stop.set()
        self._thread.join(timeout)
        self._sock.close()

    def flows(self) -> list[Flow]:
        with self._lock:
            return sorted((f for f in self._flows if f.segments), key=lambda f: f.segments[0].t)

    def _run(self) -> None:
        sock = self._sock
        while not self._stop.is_set():
            r, _, _ = select.select([sock], [], [], 0.1)
            if not r:
                continue
            for _ in range(1000):  # drain what is queued, bounded
                try:
                    data, anc, _flags, addr = sock.recvmsg(65600, socket.CMSG_SPACE(16), socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                if addr[2] == socket.PACKET_OUTGOING:  # lo shows each packet twice
                    continue
                t = time.time()
                for level, kind, cdata in anc:
                    if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(cdata) >= 16:
                        sec, nsec = struct.unpack("qq", cdata[:16])
                        t = sec + nsec / 1e9
                self._packet(t, data)

    def _packet(self, t: float, frame: bytes) -> None:
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":
            return
        ip = frame[14:]
        ihl = (ip[0] & 15) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        proto = ip[9]
        l4 = ip[ihl:total]
        if proto not in (6, 17) or len(l4) < 8:
            return
        sport, dport = struct.unpack("!HH", l4[:4])
        if dport != self.port:
            return
        src = socket.inet_ntoa(ip[12:16])
        with self._lock:
            if proto == 17:
                f = Flow("udp", src, sport, t, [Segment(t, bytes(l4[8:]))] if len(l4) > 8 else [], t)
                self._flows.append(f)
                return
            off = (l4[12] >> 4) * 4
            flags = l4[13]
            seq = struct.unpack("!I", l4[4:8])[0]
            payload = bytes(l4[off:])
            if flags & 0x02:  # SYN: a new connection from this source port
                f = Flow("tcp", src, sport, t)
                self._tcp[sport] = f
                self._seen_seq[sport] = set()
                self._flows.append(f)
                return
            f = self._tcp.get(sport)
            if f is None:
                return
            if payload and seq not in self._seen_seq[sport]:  # skip retransmissions
                self._seen_seq[sport].add(seq)
                f.segments.append(Segment(t, payload))
            if flags & 0x05 and f.t_close is None:  # FIN or RST
                f.t_close = t


# ------------------------------------------------------------- attribution
class AttributionError(AssertionError):
    pass


def _best_offset(writes: list[TraceWrite], segs: list[tuple[Flow, Segment]]) -> float | None:
    """The shift from nmap's clock to the wall clock under which the most
    traced writes line up (equal size, within 0.2 s) with captured segments.
    Candidates come from pairing each of the first writes with each
    equal-sized segment; the probes are seconds apart, so the right shift
    stands out."""
    best: tuple[int, float] | None = None
    for w in writes[:6]:
        for _, s in segs:
            if len(s.data) != w.nbytes:
                continue
            off = s.t - w.t
            score = sum(
                1 for w2 in writes
                if any(len(s2.data) == w2.nbytes and abs(s2.t - w2.t - off) <= 0.2 for _, s2 in segs)
            )
            if best is None or score > best[0]:
                best = (score, off)
    return None if best is None else best[1]


def attribute_flows(flows: list[Flow], runs: list[NmapRun], benign_payloads: list[bytes]) -> None:
    """Label every flow (in place) as an nmap probe or benign traffic.

    * A flow whose payload carries one of ``benign_payloads`` (what the
      harness sent itself) is benign.
    * NSE writes (``--script-trace``) and UDP port-scan datagrams
      (``--packet-trace``) name their source port: matched on port and bytes
      (or size).
    * Service-probe writes are matched to captured segments of the same size
      within 0.5 s, after removing the clock offset between nmap's trace and
      the wall clock (``_best_offset``); each segment is used once.
    * Anything left over raises ``AttributionError``: nothing is guessed.
    """
    for f in flows:
        p = f.payload
        if any(b and b in p for b in benign_payloads):
            f.label, f.scanner, f.probe = "benign", None, None
    for run in runs:
        for w in run.trace.writes:
            if w.sport is None:
                continue
            hit = [f for f in flows if f.label is None and f.transport == w.transport and f.sport == w.sport
                   and (w.nbytes == len(f.payload) if w.data is None else (w.data and w.data in f.payload))]
            if not hit:
                raise AttributionError(f"{w.probe} write from port {w.sport} ({w.nbytes} bytes) not captured")
            for f in hit:
                f.label, f.scanner, f.probe = "probe", "nmap", w.probe
    for run in runs:
        transport = "udp" if "-sU" in run.argv else "tcp"
        writes = [w for w in run.trace.writes if w.nbytes > 0 and w.transport == transport and w.sport is None]
        if not writes:
            continue
        segs = [(f, s) for f in flows if f.transport == transport and f.label is None for s in f.segments]
        offset = _best_offset(writes, segs)
        if offset is None:
            raise AttributionError(f"no captured {transport} segment has the size of any traced write")
        used: set[int] = set()
        for w in writes:
            want = w.t + offset
            cands = [k for k, (f, s) in enumerate(segs)
                     if k not in used and len(s.data) == w.nbytes and abs(s.t - want) <= 0.5]
            if not cands:
                raise AttributionError(f"nmap write {w.probe} ({w.nbytes} bytes at {w.t:.3f}) has no captured segment")
            k = min(cands, key=lambda k: abs(segs[k][1].t - want))
            used.add(k)
            f = segs[k][0]
            f.label, f.scanner, f.probe = "probe", "nmap", w.probe
    left = [f for f in flows if f.label is None]
    if left:
        raise AttributionError(
            "captured flows not explained by nmap's trace nor the benign senders: "
            + "; ".join(f"{f.transport}:{f.sport} {f.payload[:60]!r}" for f in left[:10])
        )


# ------------------------------------------------------ flows -> log lines
@dataclass(frozen=True, slots=True)
class LineTruth:
    """What produced line ``line`` (1-based) of every output file."""

    line: int
    kind: str  # "probe" | "benign" | "internal" | "unexplained"
    scanner: str | None
    probe: str | None
    transport: str | None
    flow: int | None  # index into the capture's flow list
    wire_equal: tuple[str, ...] = ()  # other probes whose payload is byte-identical
    dt: float | None = None  # log time minus predicted time, seconds

    def as_json(self) -> dict[str, object]:
        return {
            "line": self.line,
            "kind": self.kind,
            "scanner": self.scanner,
            "probe": self.probe,
            "transport": self.transport,
            "flow": self.flow,
            "wire_equal": list(self.wire_equal),
            "dt_ms": None if self.dt is None else round(self.dt * 1000, 3),
        }


def _piece_time(flow: Flow, piece: Piece) -> float:
    if piece.at_close:
        return flow.t_close if flow.t_close is not None else flow.segments[-1].t
    pos = 0
    for s in flow.segments:
        pos += len(s.data)
        if piece.end < pos:
            return s.t
    return flow.segments[-1].t


def label_log_lines(records: list[dict[str, object]], flows: list[Flow], variant: Variant = VARIANTS["default"],
                    max_skew: float = 0.25) -> list[LineTruth]:
    """Assign every log line (records of the harness's capture file, in file
    order) to the flow whose bytes rsyslog turned into exactly that rawmsg,
    logged within ``max_skew`` seconds of when those bytes (or the closing
    FIN, for a last line without LF) crossed the wire. Ties go to the
    closest time. rsyslog's own lines are "internal"; a line no flow
    explains is "unexplained" (callers fail on it)."""
    by_payload: dict[bytes, set[str]] = {}
    for f in flows:
        if f.label == "probe" and f.probe:
            by_payload.setdefault(f.payload, set()).add(f.probe)
    pieces: dict[tuple[str, bytes], list[tuple[float, int]]] = {}
    for k, f in enumerate(flows):
        if f.transport == "tcp":
            ps = tcp_pieces(f.payload, variant.octet_counting, variant.escape)
        else:
            ps = udp_pieces(f.payload, variant.escape)
        for p in ps:
            pieces.setdefault((f.transport, p.rawmsg), []).append((_piece_time(f, p), k))
    out: list[LineTruth] = []
    for n, rec in enumerate(records, 1):
        inp = rec.get("inputname")
        if inp not in ("imtcp", "imudp"):
            out.append(LineTruth(n, "internal", None, None, None, None))
            continue
        transport = "tcp" if inp == "imtcp" else "udp"
        raw = str(rec.get("rawmsg", "")).encode("utf-8", "surrogateescape")
        tg = float(str(rec["timegenerated"])) + float(str(rec.get("usec") or 0)) / 1e6
        cands = pieces.get((transport, raw), [])
        best = min(range(len(cands)), key=lambda i: abs(cands[i][0] - tg), default=None)
        if best is None or abs(cands[best][0] - tg) > max_skew:
            out.append(LineTruth(n, "unexplained", None, None, transport, None))
            continue
        t, k = cands.pop(best)
        f = flows[k]
        if f.label == "probe":
            same = tuple(sorted(by_payload.get(f.payload, set()) - {f.probe}))
            out.append(LineTruth(n, "probe", f.scanner, f.probe, transport, k, same, tg - t))
        else:
            out.append(LineTruth(n, "benign", None, None, transport, k, (), tg - t))
    return out


# ------------------------------------------------------------ one full run
@dataclass(slots=True)
class ScanCapture:
    rsyslog: PrivateRsyslog
    runs: list[NmapRun]
    flows: list[Flow]
    truth: list[LineTruth]
    benign_markers: list[bytes]


def capture_scan(workdir: Path | None = None, *, tcp: bool = True, udp: bool = True,
                 benign_spread: float = 4.0, nmap_timeout: float = 280.0,
                 variant: Variant | str = "default") -> ScanCapture:
    """Private rsyslog + wire capture; real ``nmap -sV`` (TCP) and
    ``nmap -sU -sV`` (UDP) in parallel while benign traffic trickles in; stop
    everything; attribute flows; label every log line. Raises
    ``AttributionError`` if anything on the wire or in the log is unexplained,
    or if the output files disagree on their line count."""
    from concurrent.futures import ThreadPoolExecutor

    r = PrivateRsyslog(workdir, variant=variant).start()
    try:
        with WireCapture(r.port) as cap:
            deadline = time.monotonic() + nmap_timeout
            with ThreadPoolExecutor(3) as pool:
                futs = []
                if tcp:
                    futs.append(pool.submit(run_nmap, r.port, udp=False, timeout=nmap_timeout))
                if udp:
                    futs.append(pool.submit(run_nmap, r.port, udp=True, timeout=nmap_timeout))
                benign = pool.submit(send_benign, r.port, spread=benign_spread, deadline=deadline - 60)
                runs = [f.result() for f in futs]
                markers = benign.result()
            r.wait_quiet(idle=0.5, timeout=10)
        r.stop()
    except BaseException:
        r.cleanup()
        raise
    result = ScanCapture(r, runs, cap.flows(), [], markers)
    try:
        attribute_flows(result.flows, runs, markers)
        records = read_json_lines(r.capture_file)
        counts = {fmt: r.line_count(fmt) for fmt in FORMATS}
        if set(counts.values()) != {len(records)}:
            raise AttributionError(f"output files disagree on line count: {counts}, capture {len(records)}")
        result.truth = label_log_lines(records, result.flows, r.variant)
    except AttributionError as e:
        e.capture = result  # type: ignore[attr-defined]  # for post-mortems
        raise
    return result
