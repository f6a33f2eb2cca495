"""The ground-truth tooling on the stored run (fast, no nmap): nmap's trace
parser, the wire records and truth.jsonl agree with each other."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from util.nmap import parse_trace
from util.rsyslog import VARIANTS, read_json_lines, tcp_pieces, udp_pieces

BASE = Path(__file__).resolve().parents[1] / "fixtures" / "rsyslog"
#: (variant, directory): the stock set-up and every captured variant
RUNS = [("default", BASE)] + [(d.name, d) for d in sorted((BASE / "variants").glob("*")) if d.is_dir()]


@pytest.fixture(params=RUNS, ids=[name for name, _ in RUNS])
def run(request: pytest.FixtureRequest) -> tuple[str, Path]:
    return request.param


def _wire(fix: Path) -> list[dict]:
    return [json.loads(x) for x in (fix / "wire.jsonl").read_text().splitlines()]


def _truth(fix: Path) -> list[dict]:
    return [json.loads(x) for x in (fix / "truth.jsonl").read_text().splitlines()]


def test_trace_parser_finds_every_probe_and_its_size(run: tuple[str, Path]) -> None:
    FIX = run[1]
    tcp = parse_trace((FIX / "nmap_tcp.trace.txt").read_text())
    udp = parse_trace((FIX / "nmap_udp.trace.txt").read_text())
    # every "sending probe" line has its write; NULL writes nothing
    assert [w.probe for w in tcp.writes if w.sport is None] == list(tcp.probes_sent)
    assert [w.probe for w in udp.writes if w.sport is None and w.probe != "portscan:udp"] == list(udp.probes_sent)
    assert all(w.nbytes > 0 for w in tcp.writes if w.probe != "NULL")
    assert [w.nbytes for w in tcp.writes if w.probe == "NULL"] == [0]
    # NSE writes carry the dumped bytes and the source port
    nse = [w for w in tcp.writes + udp.writes if w.script]
    assert {w.script for w in nse} == {"skypev2-version", "rpc-grind"}
    assert all(w.data is not None and len(w.data) == w.nbytes and w.sport for w in nse)
    assert next(w.data for w in nse if w.script == "skypev2-version") == b"GET / HTTP/1.0\r\n\r\n"
    # the -sU port scan's datagrams come from --packet-trace
    assert [w for w in udp.writes if w.probe == "portscan:udp"]
    # times increase along the trace
    svc = [w.t for w in tcp.writes if w.sport is None]
    assert svc == sorted(svc)


def test_every_traced_write_is_a_labelled_flow_on_the_wire(run: tuple[str, Path]) -> None:
    FIX = run[1]
    wire = _wire(FIX)
    tcp = parse_trace((FIX / "nmap_tcp.trace.txt").read_text())
    udp = parse_trace((FIX / "nmap_udp.trace.txt").read_text())
    want = Counter((("tcp" if w in tcp.writes else "udp"), w.probe, w.nbytes)
                   for w in tcp.writes + udp.writes if w.nbytes > 0)
    got = Counter((f["transport"], f["probe"], len(bytes.fromhex(f["payload_hex"])))
                  for f in wire if f["label"] == "probe")
    assert got == want
    assert {f["label"] for f in wire} == {"probe", "benign"}


def test_truth_lines_follow_from_the_wire_bytes(run: tuple[str, Path]) -> None:
    v, FIX = VARIANTS[run[0]], run[1]
    wire = _wire(FIX)
    truth = _truth(FIX)
    props = read_json_lines(FIX / "json.log")
    assert len(truth) == len(props)
    for t, p in zip(truth, props):
        if t["kind"] == "internal":
            assert p["inputname"] == "rsyslogd"
            continue
        assert t["kind"] in ("probe", "benign"), t
        f = wire[t["flow"]]
        assert f["transport"] == t["transport"] and f["label"] == t["kind"]
        assert f["probe"] == t["probe"]
        payload = bytes.fromhex(f["payload_hex"])
        if f["transport"] == "tcp":
            pieces = tcp_pieces(payload, v.octet_counting, v.escape)
        else:
            pieces = udp_pieces(payload, v.escape)
        raw = str(p["rawmsg"]).encode("utf-8", "surrogateescape")
        assert raw in [x.rawmsg for x in pieces], (t, raw)
        assert abs(t["dt_ms"]) < 250


def test_wire_equal_means_identical_bytes(run: tuple[str, Path]) -> None:
    FIX = run[1]
    wire = _wire(FIX)
    by_probe: dict[str, set[bytes]] = {}
    for f in wire:
        if f["label"] == "probe":
            by_probe.setdefault(f["probe"], set()).add(bytes.fromhex(f["payload_hex"]))
    pairs = 0
    for t in _truth(FIX):
        for other in t.get("wire_equal", []):
            assert by_probe[t["probe"]] & by_probe[other], (t["probe"], other)
            pairs += 1
    assert pairs > 0  # skypev2-version and GetRequest send the same bytes


@pytest.mark.e2e
def test_wire_capture_sees_only_its_port_with_kernel_times() -> None:
    import os
    import socket
    import time

    from util.nmap import WireCapture
    from util.ports import free_port

    if os.geteuid() != 0:
        pytest.fail("the packet capture needs root (CI runs as root)")
    port = free_port()
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", port))
        srv.listen()
        with WireCapture(port) as cap:
            t0 = time.time()
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(b"hello\n")
                time.sleep(0.05)
                c.sendall(b"tail")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.sendto(b"dgram", ("127.0.0.1", port))
                u.sendto(b"elsewhere", ("127.0.0.1", port + 1 if port < 65535 else port - 1))
            time.sleep(0.1)
            t1 = time.time()
    flows = cap.flows()
    assert [(f.transport, f.payload) for f in flows] == [("tcp", b"hello\ntail"), ("udp", b"dgram")]
    tcp = flows[0]
    assert len(tcp.segments) == 2 and tcp.t_close is not None
    assert t0 <= tcp.t_open <= tcp.segments[0].t < tcp.segments[1].t <= tcp.t_close <= t1
