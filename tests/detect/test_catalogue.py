"""The catalogue loader (validation, errors naming file:line and id) and the
built-in catalogue's content."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probetag._config import Signature as ConfigSignature
from probetag.detect._catalogue import (
    CatalogueError,
    Signature,
    builtin_catalogue_paths,
    FAMILY_RANK,
    format_payload,
    load_catalogue,
    parse_catalogue,
)

GOOD = '''\
# a comment
- id: t-one            # beside an entry
  probe: One
  scanner: nmap
  transport: tcp
  payload: "GET / HTTP/1.0\\r\\n\\r\\n"
  confidence: 0.9
  ports: [80, 8080]
  provenance: "test"
- id: t-two
  probe: Two
  scanner: masscan
  transport: udp
  payload: "\\x00\\xff\\x80"
  match: marker
  provenance: "test"
  notes: "free text"
'''


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _entry(**over: str) -> str:
    fields = {"id": "x-1", "probe": "P", "scanner": "nmap", "transport": "tcp",
              "payload": '"abc"', "provenance": '"test"'}
    fields.update(over)
    lines = []
    for i, (k, v) in enumerate(fields.items()):
        lines.append(("- " if i == 0 else "  ") + f"{k}: {v}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Loader
# --------------------------------------------------------------------------


def test_good_file_parses_to_exact_bytes(tmp_path: Path) -> None:
    path = _write(tmp_path, "good.yaml", GOOD)
    sigs = load_catalogue([path], builtin=False)
    assert [s.id for s in sigs] == ["t-one", "t-two"]
    one, two = sigs
    assert one.payload == b"GET / HTTP/1.0\r\n\r\n"
    assert one.match == "payload" and one.confidence == 0.9 and one.ports == (80, 8080)
    assert one.source == f"{path}:2"
    assert two.payload == b"\x00\xff\x80"
    assert two.match == "marker" and two.confidence is None and two.ports == ()
    assert two.notes == "free text" and two.transport == "udp"


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x009\x00x", bytes(range(256)), b'"\\\r\n\t#015'])
def test_format_payload_round_trips(data: bytes) -> None:
    if not data:
        return _assert_empty_rejected(data)
    text = _entry(payload=format_payload(data))
    (sig,) = parse_catalogue(text, file="rt.yaml")
    assert sig.payload == data


def _assert_empty_rejected(data: bytes) -> None:
    with pytest.raises(CatalogueError, match="payload: must not be empty"):
        parse_catalogue(_entry(payload=format_payload(data)), file="e.yaml")


@pytest.mark.parametrize(
    ("over", "line", "key", "reason"),
    [
        ({"colour": '"red"'}, 8, "colour", "unknown key"),
        ({"transport": "sctp"}, 5, "transport", "must be one of tcp, udp, any"),
        ({"payload": '""'}, 6, "payload", "must not be empty"),
        ({"match": "regex"}, 8, "match", "must be one of payload, marker"),
        ({"confidence": "1.5"}, 8, "confidence", "between 0 and 1"),
        ({"ports": "[70000]"}, 8, "ports", "0..65535"),
        ({"payload": "'GET\\r\\n'"}, 6, "payload", "not double-quoted"),
        ({"payload": '"caf\u00e9\u20ac"'}, 6, "payload", "is not a byte"),
        ({"provenance": '""'}, 7, "provenance", "must not be empty"),
    ],
)
def test_bad_entries_name_file_line_id_and_key(over: dict[str, str], line: int, key: str,
                                               reason: str, tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.yaml", "# header\n" + _entry(**over))
    with pytest.raises(CatalogueError) as info:
        load_catalogue([path], builtin=False)
    err = info.value
    assert (err.file, err.line, err.entry, err.key) == (str(path), line, "x-1", key)
    assert reason in err.reason
    assert str(err).startswith(f"{path}:{line}: x-1: {key}: ")


def test_missing_required_key_names_entry(tmp_path: Path) -> None:
    text = "- id: no-prov\n  probe: P\n  scanner: s\n  transport: tcp\n  payload: \"a\"\n"
    path = _write(tmp_path, "m.yaml", text)
    with pytest.raises(CatalogueError) as info:
        load_catalogue([path], builtin=False)
    assert (info.value.line, info.value.entry, info.value.key) == (1, "no-prov", "provenance")


def test_duplicate_id_across_files_names_both_places(tmp_path: Path) -> None:
    a = _write(tmp_path, "a.yaml", GOOD)
    b = _write(tmp_path, "b.yaml", "# other\n\n" + _entry(id="t-two"))
    with pytest.raises(CatalogueError) as info:
        load_catalogue([a, b], builtin=False)
    err = info.value
    assert (err.file, err.line, err.entry) == (str(b), 3, "t-two")
    assert f"{a}:10" in str(err)


def test_duplicate_id_against_builtin(tmp_path: Path) -> None:
    builtin_id = load_catalogue()[0].id
    extra = _write(tmp_path, "extra.yaml", _entry(id=builtin_id))
    with pytest.raises(CatalogueError, match="duplicate id"):
        load_catalogue([extra])


def test_not_a_list_and_yaml_syntax(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match=r"m\.yaml:1: expected a list"):
        parse_catalogue("id: x\n", file="m.yaml")
    with pytest.raises(CatalogueError, match=r"s\.yaml:\d+: YAML syntax"):
        parse_catalogue("- id: [\n", file="s.yaml")
    assert parse_catalogue("# only comments\n", file="c.yaml") == ()


def test_config_signatures_convert() -> None:
    extra = [ConfigSignature(id="local-hc", probe="HealthCheck", scanner="lb",
                             payload="HEAD /hc HTTP/1.1\\r\\nX: \\x00\\xff"),
             ConfigSignature(id="local-ua", probe="UA", scanner="mine", payload="MyScanner/1.0",
                             transport="tcp", match="contains", provenance="ops wiki")]
    sigs = load_catalogue(builtin=False, extra=extra)
    assert sigs[0] == Signature(id="local-hc", probe="HealthCheck", scanner="lb", transport="any",
                                payload=b"HEAD /hc HTTP/1.1\r\nX: \x00\xff", match="payload",
                                confidence=None, ports=(), provenance="user config",
                                source="config:detect.signatures[0]")
    assert sigs[1].match == "marker" and sigs[1].provenance == "ops wiki"
    bad = [ConfigSignature(id="bad", probe="P", scanner="s", payload="\\x4")]
    with pytest.raises(CatalogueError, match="bad: payload: bad escape"):
        load_catalogue(builtin=False, extra=bad)


# --------------------------------------------------------------------------
# The built-in catalogue
# --------------------------------------------------------------------------


def test_builtin_catalogue_loads_with_provenance() -> None:
    paths = builtin_catalogue_paths()
    assert paths and all(p.suffix == ".yaml" for p in paths)
    assert list(paths) == sorted(paths)
    sigs = load_catalogue()
    assert len({s.id for s in sigs}) == len(sigs)
    for s in sigs:
        assert s.provenance.strip(), s.id
        assert "nmap-service-probes" not in s.provenance.lower(), s.id
        assert "nmap-payloads" not in s.provenance.lower(), s.id


# What nmap 7.93's default -sV (--version-intensity 7) sent to a port no probe
# is registered for, in the order it sent them (capture run tcp-i7).
DEFAULT_TCP_PROBES = (
    "GenericLines", "GetRequest", "HTTPOptions", "RTSPRequest", "RPCCheck", "DNSVersionBindReqTCP",
    "DNSStatusRequestTCP", "Help", "SSLSessionReq", "TerminalServerCookie", "TLSSessionReq",
    "Kerberos", "SMBProgNeg", "X11Probe", "FourOhFourRequest", "LPDString", "LDAPSearchReq",
    "LDAPBindReq", "SIPOptions", "LANDesk-RC", "TerminalServer", "NCP", "NotesRPC", "JavaRMI",
    "WMSRequest", "oracle-tns", "ms-sql-s", "afp", "giop",
)


def test_builtin_has_every_default_tcp_probe() -> None:
    tcp = {s.probe: s for s in load_catalogue()
           if s.scanner == "nmap" and s.transport == "tcp" and s.match == "payload"}
    missing = [p for p in DEFAULT_TCP_PROBES if p not in tcp]
    assert not missing
    for name in DEFAULT_TCP_PROBES:
        assert tcp[name].notes.startswith("default -sV sends it"), name
    # --version-all adds the rarer ones; the capture saw 99 TCP probes in all.
    assert len(tcp) >= 99
    assert {s.probe for s in tcp.values() if "--version-intensity 9" in s.notes} >= {"metasploit-xmlrpc"}


# The same for -sU -sV (capture run udp-i7). UDP has no NULL probe.
DEFAULT_UDP_PROBES = (
    "RPCCheck", "DNSVersionBindReq", "DNSStatusRequest", "NBTStat", "Help", "SIPOptions", "Sqlping",
    "NTPRequest", "SNMPv1public", "SNMPv3GetRequest", "xdmcp", "AFSVersionRequest", "DNS-SD",
    "Citrix", "Kerberos", "sybaseanywhere", "NetMotionMobility", "DTLSSessionReq", "QUIC",
)


def test_builtin_has_every_default_udp_probe() -> None:
    udp = {s.probe: s for s in load_catalogue()
           if s.scanner == "nmap" and s.transport == "udp" and s.match == "payload"}
    missing = [p for p in DEFAULT_UDP_PROBES if p not in udp]
    assert not missing
    for name in DEFAULT_UDP_PROBES:
        assert udp[name].notes.startswith("default -sV sends it"), name
    # Same name, different bytes per transport: separate entries.
    tcp_rpc = next(s for s in load_catalogue() if s.id == "nmap-tcp-RPCCheck")
    assert udp["RPCCheck"].payload != tcp_rpc.payload
    assert tcp_rpc.payload[4:] == udp["RPCCheck"].payload  # TCP adds RPC record marking (RFC 5531 11)
    # The -sU port scan's own payloads are there too, named by their port.
    scan = [s for s in load_catalogue() if s.id.startswith("nmap-udp-scan-")]
    assert any(53 in s.ports for s in scan) and any(161 in s.ports for s in scan)


def test_builtin_has_observed_markers_that_name_nmap() -> None:
    markers = {(s.scanner, s.payload) for s in load_catalogue() if s.match == "marker"}
    # NSE's HTTP library, seen in the http requests of the version scripts.
    assert ("nmap", b"User-Agent: Mozilla/5.0 (compatible; Nmap Scripting Engine; "
            b"https://nmap.org/book/nse.html)") in markers
    assert ("nmap", b"Cookie: mstshash=nmap") in markers  # inside the RDP TerminalServerCookie probe
    assert ("sipvicious", b"User-Agent: friendly-scanner") in markers
    for s in load_catalogue():
        if s.match == "marker" and s.transport == "tcp":
            assert b"\n" not in s.payload, s.id  # rsyslog cuts TCP streams at LF: no line holds it
        assert b"127.0.0.1" not in s.payload or s.scanner == "nmap", s.id  # nothing names our target


def test_builtin_has_default_http_probes() -> None:
    by_probe = {(s.scanner, s.transport, s.probe): s for s in load_catalogue()}
    assert by_probe[("nmap", "tcp", "GetRequest")].payload == b"GET / HTTP/1.0\r\n\r\n"
    assert by_probe[("nmap", "tcp", "HTTPOptions")].payload == b"OPTIONS / HTTP/1.0\r\n\r\n"


# --------------------------------------------------------------------------
# The capture against a real nmap: the catalogue's bytes are what nmap sends
# --------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
RECORDER = REPO / "tools" / "capture" / "recorder.py"
# Ports nmap sends GetRequest to even at --version-intensity 0 (observed in
# the capture's tcp-reg run); several, in case one is taken on this machine.
GET_PORTS = (7070, 5800, 1234, 9999, 4000)


def _wait_ready(journal: Path, proc: subprocess.Popen, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "recorder exited early"
        if journal.exists():
            for line in journal.read_text().splitlines():
                ev = json.loads(line)
                if ev["ev"] == "ready":
                    return ev
        time.sleep(0.05)
    raise AssertionError("recorder not ready in time")


@pytest.mark.e2e
def test_recorder_sees_nmap_send_the_catalogue_bytes(tmp_path: Path) -> None:
    nmap = shutil.which("nmap")
    assert nmap, "nmap is not installed (scripts/test installs it)"
    journal = tmp_path / "rec.jsonl"
    proc = subprocess.Popen([sys.executable, str(RECORDER), "--out", str(journal),
                             "--tcp", ",".join(map(str, GET_PORTS)), "--udp", "",
                             "--duration", "55", "--close-after-idle", "0.3"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ready = _wait_ready(journal, proc, 10)
        assert ready["tcp"], f"none of {GET_PORTS} could be bound"
        port = ready["tcp"][0]
        get = next(s for s in load_catalogue() if s.id == "nmap-tcp-GetRequest")
        assert port in get.ports  # so even intensity 0 sends GetRequest there
        out = subprocess.run([nmap, "-sV", "--version-intensity", "0", "--version-trace", "-Pn", "-n",
                              "--max-retries", "1", "-p", str(port), "127.0.0.1"],
                             capture_output=True, text=True, timeout=45)
        time.sleep(0.5)  # the recorder's close event for the last connection
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    trace = [m.group(1) for m in re.finditer(
        rf"^Service scan sending probe (\S+) to 127\.0\.0\.1:{port} \(tcp\)$", out.stdout, re.M)]
    assert trace[:2] == ["NULL", "GetRequest"], out.stdout[-2000:]
    # One send per connection (the recorder closes 0.3 s after the last byte);
    # NULL shares its connection with the first real probe.
    conns: dict[int, dict] = {}
    for ev in events:
        if ev.get("port") != port:
            continue
        c = conns.setdefault(ev.get("conn", 0), {"data": b""})
        if ev["ev"] == "open":
            c["open"] = ev["t"]
        elif ev["ev"] == "data":
            c.setdefault("first", ev["t"])
            c["data"] += bytes.fromhex(ev["hex"])
    sent = [c for _, c in sorted(conns.items()) if c["data"]]
    assert len(sent) == len(trace) - 1  # every named probe but NULL sent bytes
    # NULL sends nothing: the first bytes on the first connection come only
    # after nmap has waited for a banner (its NULL probe waits 6 s).
    assert sent[0]["first"] - sent[0]["open"] > 4.0
    catalogue = {(s.scanner, s.transport, s.probe): s.payload for s in load_catalogue()}
    for name, c in zip(trace[1:], sent):
        assert catalogue[("nmap", "tcp", name)] == c["data"], name


def test_recorder_records_and_never_answers(tmp_path: Path) -> None:
    """What the capture relies on: bytes and times recorded exactly, nothing
    sent back (a scanner must see a silent service), UDP datagrams too."""
    journal = tmp_path / "rec.jsonl"
    with socket.socket() as probe_port:
        probe_port.bind(("127.0.0.1", 0))
        port = probe_port.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(RECORDER), "--out", str(journal), "--tcp", str(port),
                             "--udp", str(port), "--duration", "20", "--close-after-idle", "0.5"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ready = _wait_ready(journal, proc, 10)
        assert ready["tcp"] == [port] and ready["udp"] == [port]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"HELP\r\n")
            time.sleep(0.1)
            c.sendall(b"\x00\xff")
            c.settimeout(3)
            assert c.recv(100) == b""  # closed by the recorder after 0.5 s idle, never answered
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.sendto(b"\x00\x00\x10\x00", ("127.0.0.1", port))
            u.settimeout(0.5)
            with pytest.raises(socket.timeout):
                u.recvfrom(100)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    data = [bytes.fromhex(e["hex"]) for e in events if e["ev"] == "data"]
    assert b"".join(data) == b"HELP\r\n\x00\xff" and 1 <= len(data) <= 2  # recv() may join them
    close = next(e for e in events if e["ev"] == "close")
    assert (close["by"], close["bytes"]) == ("idle", 8)
    assert [bytes.fromhex(e["hex"]) for e in events if e["ev"] == "udp"] == [b"\x00\x00\x10\x00"]
    assert events[-1]["ev"] == "end"


# --------------------------------------------------------------------------
# The capture's pairing of nmap's trace with the recorder's journal (no I/O)
# --------------------------------------------------------------------------

sys.path.insert(0, str(REPO / "tools" / "capture"))
import capture_common as cc  # noqa: E402


def test_pairing_nmap_trace_with_journal() -> None:
    trace = cc.parse_nmap_trace(
        "Service scan sending probe NULL to 127.0.0.1:80 (tcp)\n"
        "Service scan sending probe GetRequest to 127.0.0.1:80 (tcp)\n"
        "NSOCK INFO [6.5s] noise\n"
        "Service scan sending probe HTTPOptions to 127.0.0.1:80 (tcp)\n"
        "Service scan sending probe DNSStatusRequest to 127.0.0.1:53 (udp)\n")
    events = [
        # NULL and GetRequest share the first connection; GetRequest arrives in two reads.
        {"ev": "open", "t": 0.0, "port": 80, "conn": 1, "peer": ["127.0.0.1", 40000]},
        {"ev": "data", "t": 6.0, "port": 80, "conn": 1, "hex": b"GET / ".hex()},
        {"ev": "data", "t": 6.01, "port": 80, "conn": 1, "hex": b"HTTP/1.0\r\n\r\n".hex()},
        {"ev": "close", "t": 6.3, "port": 80, "conn": 1},
        {"ev": "open", "t": 6.4, "port": 80, "conn": 2, "peer": ["127.0.0.1", 40001]},
        {"ev": "data", "t": 6.5, "port": 80, "conn": 2, "hex": b"OPTIONS / HTTP/1.0\r\n\r\n".hex()},
        {"ev": "close", "t": 6.8, "port": 80, "conn": 2},
        # The -sU port scan's own datagram comes first; the probe is the last one.
        {"ev": "udp", "t": 1.0, "port": 53, "peer": ["127.0.0.1", 5], "hex": "aa"},
        {"ev": "udp", "t": 7.0, "port": 53, "peer": ["127.0.0.1", 6], "hex": "000010"},
    ]
    got = cc.pair(trace, cc.sends(events), align_end=True)
    assert got.mismatched == []
    assert [(tp.name, s.data) for tp, s in got.pairs] == [
        ("GetRequest", b"GET / HTTP/1.0\r\n\r\n"), ("HTTPOptions", b"OPTIONS / HTTP/1.0\r\n\r\n"),
        ("DNSStatusRequest", b"\x00\x00\x10")]
    assert [s.data for s in got.leading[("udp", 53)]] == [b"\xaa"]
    # One send too few: the port is reported, not paired wrongly.
    short = cc.pair(trace, [s for s in cc.sends(events) if s.conn != 2])
    assert ("tcp", 80, 2, 1) in short.mismatched
    assert all(tp.port != 80 for tp, _ in short.pairs)


def test_constant_marker_skips_random_bytes_target_and_lf() -> None:
    a = b"\x16\x03\x01RAND" + b"ciphers-\n-list" + b"127.0.0.1" + b"constant-tail!"
    b = b"\x16\x03\x01rnd!" + b"ciphers-\n-list" + b"127.0.0.1" + b"constant-tail!"
    off, marker = cc.constant_marker(a, b, forbid=b"\n")
    assert marker == b"constant-tail!" and a[off:off + len(marker)] == marker
    assert cc.constant_marker(b"abc", b"xyz") is None


def test_constant_marker_as_logged_drops_chance_bytes_and_final_nul() -> None:
    # rpc-grind's UDP call: a 4-byte random xid whose last byte happened to be
    # equal on both ports, and a final NUL rsyslog removes (FIELD_GUIDE 2.1)
    body = b"\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01\x86\xa0" + b"\x00" * 8
    a, b = b"\x1b\xd4\x36\xc3" + body, b"\x77\x10\x99\xc3" + body
    off, plain = cc.constant_marker(a, b)
    assert (off, plain) == (3, a[3:])  # the chance byte and the NUL are kept
    off, logged = cc.constant_marker(a, b, as_logged=True)
    assert (off, logged) == (4, body[:-1])
    line = (b"\x1b\xd4\x36\xde" + body)[:-1]  # another xid, as rsyslog logs it
    assert logged in line and plain not in line


def test_naming_policy_scanner_is_the_tool_family_says_which_part() -> None:
    cat = load_catalogue()
    nmapish = [s for s in cat if s.id.startswith("nmap-")]
    assert nmapish and all(s.scanner == "nmap" for s in nmapish)
    fam = {s.id: s.family for s in nmapish}
    assert fam["nmap-tcp-GetRequest"] == "service-probe"
    assert all(f == "nse" for i, f in fam.items() if i.startswith("nmap-nse-"))
    assert all(f == "udp-payload" for i, f in fam.items() if i.startswith("nmap-udp-scan-"))
    assert all(s.family in ("", *FAMILY_RANK) for s in cat)
    ranks = {f: Signature(id="x", probe="p", scanner="s", transport="tcp", payload=b"x",
                          match="payload", confidence=None, ports=(), provenance="t",
                          family=f).rank[0] for f in ("service-probe", "nse", "udp-payload", "")}
    assert ranks["service-probe"] < ranks["nse"] < ranks["udp-payload"] < ranks[""]


def test_unknown_family_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text('- id: x\n  probe: p\n  scanner: s\n  family: nsee\n  transport: tcp\n'
                 '  payload: "abc"\n  provenance: "t"\n')
    with pytest.raises(CatalogueError, match="family: must be one of"):
        load_catalogue([f], builtin=False)


def test_no_forced_transport_artefacts_in_the_nse_entries() -> None:
    # Scripts -sV ran by itself over one transport only (capture_nmap's
    # natural_nse_transports) have no entries for the other one: nmap never
    # sends http-server-header's GET over UDP, nor snmp-info over TCP.
    nse = {(s.probe, s.transport) for s in load_catalogue() if s.family == "nse"}
    for artefact in [("http-server-header", "udp"), ("snmp-info", "tcp"), ("oracle-tns-version", "udp"),
                     ("skypev2-version", "udp")]:
        assert artefact not in nse, artefact
    assert ("rpc-grind", "tcp") in nse and ("rpc-grind", "udp") in nse  # ran on both by itself


def test_shared_bytes_name_the_service_probe() -> None:
    from probetag.detect import Detector

    cat = load_catalogue()
    det = Detector(cat)
    by_id = {s.id: s for s in cat}
    xdmcp = by_id["nmap-udp-xdmcp"]
    twins = [s for s in cat if s.payload == xdmcp.payload and s.transport == "udp" and s is not xdmcp]
    assert any(s.family == "udp-payload" for s in twins)  # the -sU payload for port 177
    assert det.match(xdmcp.payload, transport="udp")[0].signature.probe == "xdmcp"
    # whatever the load order
    assert Detector(list(reversed(cat))).match(xdmcp.payload, transport="udp")[0].signature.probe == "xdmcp"
    # an NSE script's UDP entry no longer competes with the service probe
    assert not any(m.signature.family == "nse" for m in det.match(b"GET / HTTP/1.0\r\n\r\n"))
