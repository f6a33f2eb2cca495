"""Shared, I/O-free parts of the capture tools: read a recorder journal, read a
scanner's trace, pair the two, and write catalogue YAML.

Theory of operation
-------------------
* The recorder (recorder.py) writes what arrived on each port: TCP connections
  with their data events, UDP datagrams. A scanner's trace names what it sent
  on each port, in order (nmap: ``Service scan sending probe NAME to
  127.0.0.1:PORT (tcp)``). Neither side alone gives "probe name -> bytes".
* A *send* is what one probe put on the wire: for TCP, the data events of one
  connection that arrive without a pause longer than ``burst_gap`` (nmap opens
  a fresh connection per probe, except that the NULL probe, which sends
  nothing, shares its connection with the next probe); for UDP, one datagram.
* Pairing is per port and by order: the k-th named probe that sends bytes is
  the k-th send. A port whose counts differ is reported and left out rather
  than paired wrongly. A name seen on many ports must give the same bytes
  everywhere; a port that disagrees gives a separate variant entry.
* YAML is written by hand (not yaml.dump) so that payloads are double-quoted
  with ``\\xHH`` escapes (probetag.detect._catalogue.format_payload) and every
  entry keeps a fixed key order that diffs well between capture runs.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from probetag.detect._catalogue import format_payload, parse_catalogue


@dataclass(frozen=True, slots=True)
class Send:
    proto: str  # "tcp" | "udp"
    port: int
    t: float  # time of the first byte
    data: bytes
    conn: int = 0  # TCP connection id in the journal; 0 for UDP
    peer_port: int = 0


def read_journal(path: Path | str) -> list[dict]:
    """The recorder's JSONL events, in file order."""
    events = []
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not JSON: {exc}") from None
    return events


def sends(events: Iterable[dict], *, burst_gap: float = 0.25) -> list[Send]:
    """Turn journal events into sends, ordered by time."""
    out: list[Send] = []
    peers: dict[int, int] = {}
    current: dict[int, list] = {}  # conn -> [port, t_first, t_last, bytearray]

    def flush(conn: int) -> None:
        port, t0, _, buf = current.pop(conn)
        out.append(Send("tcp", port, t0, bytes(buf), conn, peers.get(conn, 0)))

    for ev in events:
        kind = ev.get("ev")
        if kind == "open":
            peers[ev["conn"]] = ev["peer"][1]
        elif kind == "data":
            conn, t, data = ev["conn"], ev["t"], bytes.fromhex(ev["hex"])
            cur = current.get(conn)
            if cur is not None and t - cur[2] > burst_gap:
                flush(conn)
                cur = None
            if cur is None:
                current[conn] = [ev["port"], t, t, bytearray(data)]
            else:
                cur[2] = t
                cur[3] += data
        elif kind == "close":
            if ev["conn"] in current:
                flush(ev["conn"])
        elif kind == "udp":
            out.append(Send("udp", ev["port"], ev["t"], bytes.fromhex(ev["hex"]), 0, ev["peer"][1]))
    for conn in list(current):
        flush(conn)
    out.sort(key=lambda s: s.t)
    return out


def bound_ports(events: Iterable[dict]) -> tuple[list[int], list[int]]:
    for ev in events:
        if ev.get("ev") == "ready":
            return list(ev["tcp"]), list(ev["udp"])
    raise ValueError("journal has no 'ready' event (recorder did not start)")


# --------------------------------------------------------------------------
# nmap's trace
# --------------------------------------------------------------------------

_PROBE_LINE = re.compile(
    r"^Service scan sending probe (?P<name>\S+) to (?P<host>[\d.:a-fA-F]+):(?P<port>\d+) \((?P<proto>tcp|udp)\)")


@dataclass(frozen=True, slots=True)
class TraceProbe:
    name: str
    proto: str
    port: int
    seq: int  # position in the trace


_NSE_SOCKET = re.compile(r"^NSE: (TCP|UDP) [\d.]+:(\d+) > [\d.]+:(\d+) \| CONNECT")


def parse_nse_sockets(text: str) -> set[tuple[str, int, int]]:
    """(proto, source port, destination port) of every socket an NSE script
    opened, from nmap's ``--script-trace`` lines."""
    out = set()
    for line in text.splitlines():
        m = _NSE_SOCKET.match(line)
        if m:
            out.add((m[1].lower(), int(m[2]), int(m[3])))
    return out


def parse_nmap_trace(text: str) -> list[TraceProbe]:
    out: list[TraceProbe] = []
    for line in text.splitlines():
        m = _PROBE_LINE.match(line)
        if m:
            out.append(TraceProbe(m["name"], m["proto"], int(m["port"]), len(out)))
    return out


@dataclass(slots=True)
class Pairing:
    pairs: list[tuple[TraceProbe, Send]] = field(default_factory=list)
    #: (proto, port, probes named, sends seen): ports left out because counts differ
    mismatched: list[tuple[str, int, int, int]] = field(default_factory=list)
    #: sends before the service scan (nmap -sU port-scan payloads), per (proto, port)
    leading: dict[tuple[str, int], list[Send]] = field(default_factory=dict)


def pair(trace: list[TraceProbe], observed: list[Send], *, silent: Iterable[str] = ("NULL",),
         align_end: bool = False) -> Pairing:
    """Pair named probes with sends, per (proto, port), by order.

    ``silent`` probes send no bytes (nmap's NULL probe only listens).
    ``align_end``: for UDP, the port scan's own datagrams come before the
    service probes; pair from the end and return the extra leading ones.
    """
    silent = set(silent)
    named: dict[tuple[str, int], list[TraceProbe]] = defaultdict(list)
    for tp in trace:
        if tp.name not in silent:
            named[(tp.proto, tp.port)].append(tp)
    seen: dict[tuple[str, int], list[Send]] = defaultdict(list)
    for s in observed:
        if s.data:
            seen[(s.proto, s.port)].append(s)
    result = Pairing()
    for key in sorted(set(named) | set(seen)):
        probes, got = named.get(key, []), seen.get(key, [])
        if align_end and len(got) > len(probes):
            lead = len(got) - len(probes)
            result.leading[key] = got[:lead]
            got = got[lead:]
        if len(probes) != len(got):
            result.mismatched.append((key[0], key[1], len(probes), len(got)))
            continue
        result.pairs.extend(zip(probes, got))
    return result


# --------------------------------------------------------------------------
# Catalogue YAML
# --------------------------------------------------------------------------


@dataclass(slots=True)
class Entry:
    id: str
    probe: str
    scanner: str
    transport: str
    payload: bytes
    provenance: str
    match: str = "payload"
    confidence: float | None = None
    ports: tuple[int, ...] = ()
    notes: str = ""
    comment: str = ""  # written as a "# ..." line above the entry
    family: str = ""  # nmap: service-probe | nse | udp-payload (see the catalogue loader)


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid YAML double-quoted scalar


def render_yaml(entries: Iterable[Entry], header: str) -> str:
    lines = [f"# {h}" if h else "#" for h in header.splitlines()]
    for e in entries:
        lines.append("")
        if e.comment:
            lines.extend(f"# {c}" for c in e.comment.splitlines())
        lines.append(f"- id: {e.id}")
        lines.append(f"  probe: {_q(e.probe)}")
        lines.append(f"  scanner: {e.scanner}")
        if e.family:
            lines.append(f"  family: {e.family}")
        lines.append(f"  transport: {e.transport}")
        lines.append(f"  payload: {format_payload(e.payload)}")
        lines.append(f"  match: {e.match}")
        if e.confidence is not None:
            lines.append(f"  confidence: {e.confidence}")
        if e.ports:
            lines.append(f"  ports: [{', '.join(map(str, e.ports))}]")
        lines.append(f"  provenance: {_q(e.provenance)}")
        if e.notes:
            lines.append(f"  notes: {_q(e.notes)}")
    text = "\n".join(lines) + "\n"
    parse_catalogue(text, file="<generated>")  # never write a file the loader rejects
    return text


def write_yaml(path: Path, entries: list[Entry], header: str) -> None:
    path.write_text(render_yaml(entries, header), encoding="utf-8")


def safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def chunks(seq: list, n: int) -> Iterator[list]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


#: Bytes that name the capture's own target, not the scanner: a marker must
#: not contain them (sslscan puts the target in SNI, SIP tools in the URI).
TARGET_BYTES = (b"127.0.0.1", b"\x7f\x00\x00\x01")


def constant_marker(a: bytes, b: bytes, *, forbid: bytes = b"", max_len: int = 64,
                    min_len: int = 8, as_logged: bool = False) -> tuple[int, bytes] | None:
    """The longest run of bytes that two sends of one step share at the same
    offsets, without any byte in ``forbid`` and without target-specific bytes;
    at most ``max_len`` bytes of it (a short marker survives truncated log
    lines). Returns (offset, bytes) or None if no run reaches ``min_len``.

    ``as_logged``: the marker must be found in what rsyslog logs, so
    * a byte at the edge of the run that touches a byte differing between the
      two sends is left out: it can belong to the same random field and be
      equal by chance (1 in 256; rpc-grind's UDP xid had one such byte);
    * a NUL that ends the send is left out: rsyslog removes a final NUL
      (FIELD_GUIDE 2.1), so a marker ending in it is never in the log."""
    if as_logged:
        found = constant_marker(a, b, forbid=forbid, max_len=1 << 30, min_len=min_len)
        if found is None:
            return None
        lo, run = found
        hi = lo + len(run)
        if lo > 0 and a[lo - 1] != b[lo - 1]:
            lo += 1
        if hi < min(len(a), len(b)) and a[hi] != b[hi]:
            hi -= 1
        if hi == len(a) == len(b) and a[hi - 1:hi] == b"\0":
            hi -= 1
        if hi - lo < min_len:
            return None
        return lo, a[lo:min(hi, lo + max_len)]
    n = min(len(a), len(b))
    ok = [a[i] == b[i] and a[i] not in forbid for i in range(n)]
    for t in TARGET_BYTES:
        for data in (a, b):
            start = data.find(t)
            while start != -1:
                for i in range(start, min(start + len(t), n)):
                    ok[i] = False
                start = data.find(t, start + 1)
    best = (0, 0)
    run_start = None
    for i in range(n + 1):
        if i < n and ok[i]:
            if run_start is None:
                run_start = i
        elif run_start is not None:
            if i - run_start > best[1] - best[0]:
                best = (run_start, i)
            run_start = None
    lo, hi = best
    if hi - lo < min_len:
        return None
    return lo, a[lo:min(hi, lo + max_len)]
