"""A live syslog-ng capture of a TCP and a UDP version scan of one port at
once (tests/fixtures/syslog-ng-live): one sender going through nmap's TCP and
UDP orders together, whose probes share names (Help, SIPOptions).

The lines no byte names alone (DNSStatusRequestTCP's ``\\x0c`` and ``\\x10``,
X11Probe's ``l`` and ``\\x0b``, a TCP ``HELP`` after the UDP Help probe,
rpc-grind's RPC call with its random XID, cut at the NULs over TCP, whole
over UDP) are placed by the order of their own transport: the anchors of the
other transport around them bound nothing, and the other transport's probe
of the same name is not this one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from probetag import decode

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "syslog-ng-live"


def _kinds(path: Path) -> list[str]:
    fmt = decode.detect_file_format(path.read_bytes().split(b"\n")[:200])
    kinds: list[str] = []
    for line in path.read_bytes().split(b"\n")[:-1]:
        sl = decode.parse_syslog_line(line, fmt)
        if sl.record.get("_continuation"):
            kinds.append(kinds[-1])
        elif sl.host == b"127.0.0.1" and b"ptbenign" not in sl.msg:
            kinds.append("probe")
        else:
            kinds.append("other")
    return kinds


def _explain(path: Path) -> list[dict | None]:
    proc = subprocess.run([sys.executable, "-m", "probetag", "explain", "--format", "jsonl", "--jobs", "1",
                           str(path)], capture_output=True, timeout=120, env={"PYTHONPATH": str(ROOT / "plugin")})
    assert proc.returncode == 0, proc.stderr
    return [json.loads(x)["probe"] for x in proc.stdout.splitlines()]


@pytest.mark.parametrize("name", ["net_default.log", "net_iso.log", "net_default-2.log"])
def test_every_probe_line_of_both_scans_is_named_and_nothing_else(name: str) -> None:
    path = FIX / name
    kinds, probes = _kinds(path), _explain(path)
    assert len(kinds) == len(probes) and kinds.count("probe") == 273
    assert all(p is None for k, p in zip(kinds, probes) if k != "probe")
    raw = path.read_bytes().split(b"\n")
    unnamed = [raw[i] for i, (k, p) in enumerate(zip(kinds, probes)) if k == "probe" and p is None]
    assert not unnamed
    assert {p["scanner"] for p in probes if p is not None} == {"nmap"}


def test_lines_placed_by_their_own_transports_order() -> None:
    path = FIX / "net_default.log"
    raw = path.read_bytes().split(b"\n")
    probes = _explain(path)
    payload = [x.split(b" 127.0.0.1 ", 1)[1] if b" 127.0.0.1 " in x else None for x in raw]

    def named(core: bytes) -> set[tuple[str, str]]:
        return {(p["name"], p["transport"]) for x, p in zip(payload, probes) if x == core and p is not None}

    # (a one-byte line is a piece of several probes: TLSSessionReq's \x0c,
    # WMSRequest's l, each named by the run of its pieces)
    # DNSStatusRequestTCP (\0\x0c\0\0\x10\0...) cut at its NULs: \x0c, \x10
    assert ("DNSStatusRequestTCP", "tcp") in named(b"\x0c")
    assert ("DNSStatusRequestTCP", "tcp") in named(b"\x10")
    # X11Probe (l\0\x0b\0...): l, \x0b
    assert ("X11Probe", "tcp") in named(b"l")
    assert ("X11Probe", "tcp") in named(b"\x0b")
    # the TCP Help probe (HELP\r\n) after the UDP one (help\r\n\r\n) was named
    assert named(b"HELP") == {("Help", "tcp")}
    assert ("Help", "udp") in named(b"help\r")
    # rpc-grind over TCP: its record mark's first byte, the rest of the mark
    # and the random XID, then the call's fixed words
    assert ("rpc-grind", "tcp") in named(b"\x80")
    assert ("rpc-grind", "tcp") in named(b"\x01\x86\xa0")
    # rpc-grind over UDP: one datagram, its XID random, its trailing NULs
    # gone; after the UDP order's last probe while the TCP one still went on
    udp = [(x, p) for x, p in zip(payload, probes) if x is not None and x.endswith(b"\x00\x01\x86\xa0\x00\x00\x00\x02")
           and len(x) == 20]
    assert len(udp) == 1 and udp[0][1] is not None
    assert (udp[0][1]["name"], udp[0][1]["transport"]) == ("rpc-grind", "udp")


def test_a_probe_whose_pieces_come_before_the_last_piece_of_the_one_before() -> None:
    # net_default-2.log: DNSVersionBindReqTCP's pieces at lines 63-67, its
    # last (logged when its connection closed) at 75, after the next
    # connection's DNSStatusRequestTCP pieces \x0c \x10 (73-74). Those two
    # bytes are no name alone; on consecutive lines of one read they are
    # that probe whole, and the \x10 is not DNSVersionBindReqTCP's.
    probes = _explain(FIX / "net_default-2.log")
    names = {n: (probes[n - 1] or {}).get("name") for n in range(63, 76)}
    assert [names[n] for n in (63, 64, 65, 66, 67, 75)] == ["DNSVersionBindReqTCP"] * 6
    assert [names[n] for n in (73, 74)] == ["DNSStatusRequestTCP"] * 2
    assert all(probes[n - 1]["via"] == "reassembled" for n in (73, 74))
