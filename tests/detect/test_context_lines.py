"""Lines that say nothing alone (a lone CR, GenericLines' two CRs, Sqlping's
one-byte datagram) are named from their sender's scan, and only then; file
lines get their sender from the HOSTNAME (FIELD_GUIDE 3.3).

Runs the real ``probetag explain`` on small traditional-format files built
with rsyslog's escaping (FIELD_GUIDE 2.1) from catalogue payloads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from probetag.detect import load_catalogue

CAT = {s.id: s for s in load_catalogue()}


def esc(data: bytes) -> bytes:
    """rsyslog's default escaping: control bytes as #ooo, the rest raw."""
    return b"".join(b"#%03o" % c if c < 0x20 else bytes([c]) for c in data)


def line(t: int, host: bytes, payload: bytes) -> bytes:
    """A traditional-format line whose HOSTNAME is the sender (binary TAG)."""
    return b"Nov 27 10:00:%02d %s %s " % (t, host, esc(payload))


def explain(tmp_path: Path, lines: list[bytes]) -> list[dict[str, Any] | None]:
    f = tmp_path / "t.log"
    f.write_bytes(b"\n".join(lines) + b"\n")
    p = subprocess.run([sys.executable, "-m", "probetag", "explain", "--format", "jsonl", str(f)],
                       capture_output=True, timeout=120)
    assert p.returncode in (0, 1), p.stderr.decode(errors="replace")  # probes found / none
    return [json.loads(x)["probe"] for x in p.stdout.splitlines()]


SCANNER = b"10.1.2.3"
BENIGN = b"10.9.9.9"


def _scan_start() -> list[bytes]:
    # two different probes on distinctive lines: the sender is scanning
    return [line(0, SCANNER, CAT["nmap-udp-RPCCheck"].payload[:-1]),
            line(1, SCANNER, CAT["nmap-udp-DNSVersionBindReq"].payload)]


def test_generic_lines_and_sqlping_named_from_the_scan(tmp_path: Path) -> None:
    lines = _scan_start() + [
        line(3, SCANNER, b"\r"), line(3, SCANNER, b"\r"),  # GenericLines: \r\n\r\n over TCP
        line(5, SCANNER, b"\x02"),                            # Sqlping: one byte over UDP
    ]
    out = explain(tmp_path, lines)
    assert out[0] and out[1]
    assert [o and o["name"] for o in out[2:]] == ["GenericLines", "GenericLines", "Sqlping"]
    for o in out[2:]:
        assert o["scanner"] == "nmap" and o["source"] == "10.1.2.3"
        assert o["inherited"] is True and o["via"] in ("scan", "context")
        assert o["confidence"] < out[1]["confidence"]  # less sure than a distinctive line
    assert out[2]["via"] == "scan" and out[3]["via"] == "context"


def test_same_lines_from_a_sender_without_a_scan_stay_untagged(tmp_path: Path) -> None:
    # a Windows forwarder's CRLF, a stray control byte: the scan of another
    # sender at the same time lends them nothing
    lines = _scan_start() + [line(3, BENIGN, b"\r"), line(3, BENIGN, b"\r"), line(5, BENIGN, b"\x02")]
    out = explain(tmp_path, lines)
    assert out[0] and out[1]
    assert out[2:] == [None, None, None]


def test_lone_crs_without_any_scan_stay_untagged(tmp_path: Path) -> None:
    out = explain(tmp_path, [line(3, SCANNER, b"\r"), line(3, SCANNER, b"\r"), line(5, SCANNER, b"\x02")])
    assert out == [None, None, None]


def test_three_crs_are_not_generic_lines(tmp_path: Path) -> None:
    # the run must be exactly the probe's lines, in one connection
    lines = _scan_start() + [line(3, SCANNER, b"\r")] + [line(9, SCANNER, b"\r")]
    out = explain(tmp_path, lines)
    assert out[2:] == [None, None]


def test_request_line_takes_the_sender_of_its_next_line(tmp_path: Path) -> None:
    # HOSTNAME 'GET' is the payload's first word: the line names no sender;
    # the lone CR after it (same connection, same second) names 10.1.2.3
    lines = [b"Nov 27 10:00:07 GET / HTTP/1.0#015", line(7, SCANNER, b"\r"),
             b"Nov 27 10:00:09 app01 sshd[42]: Accepted publickey for alice"]
    out = explain(tmp_path, lines)
    assert out[0] and out[1] and out[2] is None
    assert (out[0]["name"], out[1]["name"]) == ("GetRequest", "GetRequest")
    assert out[0]["source"] == out[1]["source"] == "10.1.2.3"
    assert out[1]["via"] in ("context", "lookahead")


def test_hostname_ip_is_the_sender_of_a_file_line(tmp_path: Path) -> None:
    out = explain(tmp_path, [line(0, b"192.0.2.7", CAT["nmap-udp-DNSVersionBindReq"].payload),
                             line(1, b"2001:db8::5", CAT["nmap-udp-DNSStatusRequest"].payload)])
    assert [o and o["source"] for o in out] == ["192.0.2.7", "2001:db8::5"]
