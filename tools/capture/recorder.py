#!/usr/bin/env python3
"""A silent loopback listener that records what scanners send, as JSONL.

Theory of operation
-------------------
* One process listens on many TCP and UDP ports of 127.0.0.1. It never sends
  a byte: a scanner's service detection then finds nothing it recognises and
  goes on to its next probe, so one scan shows every probe it has.
* Every TCP connection is recorded as ``open`` (with the scanner's source port),
  one ``data`` event per ``recv()`` with its time, and ``close`` (who closed
  it and why). Every UDP datagram is one ``udp`` event. Bytes are hex. Times
  are ``time.time()`` floats so they can be lined up with a scanner's own
  trace output.
* By default a TCP connection stays open and silent until the scanner closes
  it (nmap waits out each probe's own timeout, then closes). With
  ``--close-after-idle S`` the recorder closes a connection S seconds after
  the last byte it received; a closed connection is a "no match" for nmap,
  which then sends its next probe without waiting the probe's full timeout.
  The first probe (nmap's NULL probe sends nothing and waits for a banner) is
  never cut short because the timer only starts after bytes have arrived.
* Everything is bounded: ``--duration`` ends the run, ``--max-conn-seconds``
  closes connections that stay open too long, ``--max-conn-bytes`` stops
  recording a connection that sends too much (recorded as ``truncated``).
* A port that cannot be bound (in use) is recorded as ``bind_error`` and the
  rest keep working. Once every port is bound the recorder prints ``READY``
  and the port counts on stdout, so a driver can start the scanner.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

# Well-known service ports (IANA assignments) that scanners aim probes at.
# The capture's tcp-reg / udp-reg runs show which of them nmap has probes
# registered for (tools/capture/README.md); the rest still get every probe
# at --version-all.
DEFAULT_TCP_PORTS = (
    "7,9,11,13,17,19,21-23,25,37,42,43,49,53,69,70,79-81,88,102,106,110,111,113,119,135,"
    "139,143,161,177,179,199,264,389,407,427,443-445,465,497,500,502,512-515,523,540,548,"
    "554,563,587,593,623,631,636,646,873,902,990,993,995,1025,1080,1099,1194,1214,1234,"
    "1311,1352,1433,1434,1500,1521,1604,1720,1723,1883,1900,2000,2049,2121,2123,2181,2302,"
    "2323,2375,2376,2427,2638,3000,3050,3128,3260,3268,3306,3310,3389,3478,3632,3690,3784,"
    "4000,4369,4443,4444,4786,4840,5000,5001,5060,5061,5093,5222,5351,5353,5432,5555,5560,"
    "5601,5632,5672,5683,5800,5900,5901,5938,5984,5985,6000,6379,6481,6502,6666,6667,7000,"
    "7001,7070,7210,7547,7777,8000,8008,8009,8080,8081,8086,8088,8443,8888,9000,9001,9042,"
    "9090,9100,9160,9200,9418,9443,9999,10000,11211,11300,13722,17185,18264,20000,26000,"
    "27015,27017,30718,31337,44818,47808,49152,50000"
)
DEFAULT_UDP_PORTS = (
    "7,13,17,19,37,53,67-69,88,111,123,137,138,161,162,177,389,427,443,500,502,513,514,520,"
    "523,623,626,631,1194,1434,1604,1645,1701,1812,1900,2049,2123,2302,2427,3283,3478,"
    "3671,3702,3784,4500,4665,5060,5093,5351,5353,5632,5683,6481,7777,8767,9987,10000,"
    "10080,11211,17185,20000,26000,27015,27960,30718,31337,34963,44818,47808,64738"
)


def parse_ports(spec: str) -> list[int]:
    """``"7,13,20-22"`` -> [7, 13, 20, 21, 22] (sorted, unique). Raises ValueError."""
    ports: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        a, b = int(lo), int(hi) if sep else int(lo)
        if not (0 < a <= b <= 65535):
            raise ValueError(f"bad port range {part!r}")
        ports.update(range(a, b + 1))
    return sorted(ports)


class Journal:
    """Writes one JSON object per line, flushed, with a running connection id."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._next_conn = 0

    def new_conn(self) -> int:
        self._next_conn += 1
        return self._next_conn

    def write(self, ev: str, **fields: Any) -> None:
        self._out.write(json.dumps({"ev": ev, "t": round(time.time(), 6), **fields}) + "\n")
        self._out.flush()


class _TcpSink(asyncio.Protocol):
    def __init__(self, rec: "Recorder", port: int) -> None:
        self.rec = rec
        self.port = port
        self.conn = 0
        self.transport: asyncio.Transport | None = None
        self.received = 0
        self.idle_handle: asyncio.TimerHandle | None = None
        self.life_handle: asyncio.TimerHandle | None = None
        self.closed_by = "peer"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conn = self.rec.journal.new_conn()
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.rec.journal.write("open", proto="tcp", port=self.port, conn=self.conn,
                               peer=[peer[0], peer[1]])
        self.rec.open_conns.add(self)
        loop = asyncio.get_running_loop()
        self.life_handle = loop.call_later(self.rec.max_conn_seconds, self._close, "max-conn-seconds")

    def data_received(self, data: bytes) -> None:
        if self.received >= self.rec.max_conn_bytes:
            return
        room = self.rec.max_conn_bytes - self.received
        self.received += len(data)
        fields: dict[str, Any] = {}
        if len(data) > room:
            data, fields = data[:room], {"truncated": True}
        self.rec.journal.write("data", proto="tcp", port=self.port, conn=self.conn,
                               hex=data.hex(), **fields)
        if self.rec.close_after_idle is not None:
            if self.idle_handle is not None:
                self.idle_handle.cancel()
            loop = asyncio.get_running_loop()
            self.idle_handle = loop.call_later(self.rec.close_after_idle, self._close, "idle")

    def eof_received(self) -> bool:
        return False  # close our side too; we never answer

    def _close(self, why: str) -> None:
        self.closed_by = why
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for h in (self.idle_handle, self.life_handle):
            if h is not None:
                h.cancel()
        self.rec.open_conns.discard(self)
        extra = {"error": str(exc)} if exc else {}
        self.rec.journal.write("close", proto="tcp", port=self.port, conn=self.conn,
                               bytes=self.received, by=self.closed_by, **extra)


class _UdpSink(asyncio.DatagramProtocol):
    def __init__(self, rec: "Recorder", port: int) -> None:
        self.rec = rec
        self.port = port

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.rec.journal.write("udp", proto="udp", port=self.port, peer=[addr[0], addr[1]],
                               hex=data[: self.rec.max_conn_bytes].hex())


class Recorder:
    """Binds the listeners; ``run()`` records until the duration ends or a signal."""

    def __init__(self, journal: Journal, *, host: str = "127.0.0.1", tcp_ports: list[int],
                 udp_ports: list[int], close_after_idle: float | None = None,
                 max_conn_seconds: float = 120.0, max_conn_bytes: int = 1 << 20) -> None:
        self.journal = journal
        self.host = host
        self.tcp_ports = tcp_ports
        self.udp_ports = udp_ports
        self.close_after_idle = close_after_idle
        self.max_conn_seconds = max_conn_seconds
        self.max_conn_bytes = max_conn_bytes
        self.open_conns: set[_TcpSink] = set()
        self.bound_tcp: list[int] = []
        self.bound_udp: list[int] = []

    async def bind(self) -> list[Any]:
        loop = asyncio.get_running_loop()
        handles: list[Any] = []
        for port in self.tcp_ports:
            try:
                srv = await loop.create_server(functools.partial(_TcpSink, self, port), self.host, port,
                                               reuse_address=True, backlog=256)
            except OSError as exc:
                self.journal.write("bind_error", proto="tcp", port=port, error=exc.strerror)
                continue
            handles.append(srv)
            self.bound_tcp.append(port)
        for port in self.udp_ports:
            try:
                tr, _ = await loop.create_datagram_endpoint(functools.partial(_UdpSink, self, port),
                                                            local_addr=(self.host, port))
            except OSError as exc:
                self.journal.write("bind_error", proto="udp", port=port, error=exc.strerror)
                continue
            handles.append(tr)
            self.bound_udp.append(port)
        self.journal.write("ready", tcp=self.bound_tcp, udp=self.bound_udp,
                           close_after_idle=self.close_after_idle)
        return handles

    async def run(self, duration: float, ready: IO[str] | None = None) -> None:
        handles = await self.bind()
        if ready is not None:
            ready.write(f"READY tcp={len(self.bound_tcp)} udp={len(self.bound_udp)}\n")
            ready.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await asyncio.wait_for(stop.wait(), timeout=duration)
        except asyncio.TimeoutError:
            pass
        for h in handles:
            h.close()
        for conn in list(self.open_conns):
            conn._close("shutdown")
        await asyncio.sleep(0.2)  # let connection_lost() write the close events
        self.journal.write("end")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="JSONL file to write ('-' for stdout)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--tcp", default=DEFAULT_TCP_PORTS, help="TCP ports, e.g. 80,443,8000-8010")
    ap.add_argument("--udp", default=DEFAULT_UDP_PORTS, help="UDP ports ('' for none)")
    ap.add_argument("--duration", type=float, default=600.0, help="stop after this many seconds")
    ap.add_argument("--close-after-idle", type=float, default=None,
                    help="close a TCP connection this long after its last byte (default: never)")
    ap.add_argument("--max-conn-seconds", type=float, default=120.0)
    ap.add_argument("--max-conn-bytes", type=int, default=1 << 20)
    args = ap.parse_args(argv)
    out: IO[str] = sys.stdout if args.out == "-" else Path(args.out).open("w", encoding="utf-8")
    rec = Recorder(Journal(out), host=args.host, tcp_ports=parse_ports(args.tcp),
                   udp_ports=parse_ports(args.udp) if args.udp else [],
                   close_after_idle=args.close_after_idle, max_conn_seconds=args.max_conn_seconds,
                   max_conn_bytes=args.max_conn_bytes)
    asyncio.run(rec.run(args.duration, ready=sys.stderr if args.out == "-" else sys.stdout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
