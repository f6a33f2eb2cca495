"""Client openings (detect/_clients.py): recognisers on real bytes, JA3/JA4
against published values, and what rsyslog does to a ClientHello."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

from probetag import decode
from probetag.detect._clients import KnownClients, known_clients, parse_tls_hello, recognise, rejoin

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tools"
LABELS = [json.loads(x) for x in (FIXTURE / "labels.jsonl").read_text().splitlines()]


# -- building hellos from published field lists ---------------------------------------

def _ext(t: int, data: bytes) -> bytes:
    return struct.pack(">HH", t, len(data)) + data


def _u16_list(xs, prefix=2) -> bytes:
    body = b"".join(struct.pack(">H", x) for x in xs)
    return (struct.pack(">H", len(body)) if prefix == 2 else bytes((len(body),))) + body


def hello(ciphers, ext_order, *, groups=(), points=(0,), sig_algs=(), alpn=(b"h2",), versions=(0x0304, 0x0303),
          sni=b"example.org", grease=False) -> bytes:
    """A ClientHello record with these fields (RFC 8446 4.1.2); extensions
    without a builder here get empty data."""
    data = {
        0x0000: _u16_list([]) if False else (struct.pack(">HBH", len(sni) + 3, 0, len(sni)) + sni),
        0x000A: _u16_list(groups),
        0x000B: bytes((len(points),)) + bytes(points),
        0x000D: _u16_list(sig_algs),
        0x0010: struct.pack(">H", sum(len(a) + 1 for a in alpn)) + b"".join(bytes((len(a),)) + a for a in alpn),
        0x002B: _u16_list(versions, prefix=1),
        0x0033: struct.pack(">HHH", 2 + 4 + 32, 0x001D, 32) + b"\x11" * 32,
    }
    cs = ([0x0A0A] if grease else []) + list(ciphers)
    exts = ([0x1A1A] if grease else []) + list(ext_order)
    ext_bytes = b"".join(_ext(e, data.get(e, b"")) for e in exts)
    body = (b"\x03\x03" + b"\x22" * 32 + b"\x20" + b"\x33" * 32 + _u16_list(cs) + b"\x01\x00"
            + struct.pack(">H", len(ext_bytes)) + ext_bytes)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack(">H", len(hs)) + hs


# FoxIO ja4 technical_details/JA4.md, "JA4_ro": the example's fields in their
# original order, and its JA4 t13d1516h2_8daaf6152771_e5627efa2ab1.
SPEC_CIPHERS = [0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC014, 0x009C,
                0x009D, 0x002F, 0x0035]
SPEC_EXTS = [0x001B, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002D, 0x000D, 0x0005, 0x0023, 0x0012, 0x002B,
             0xFF01, 0x000B, 0x000A, 0x0015]
SPEC_SIGS = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]


@pytest.mark.parametrize("grease", [False, True])
def test_ja4_of_the_spec_example(grease):
    h = parse_tls_hello(hello(SPEC_CIPHERS, SPEC_EXTS, sig_algs=SPEC_SIGS, groups=(0x001D,), grease=grease))
    assert h is not None and h.complete
    assert h.ja4 == "t13d1516h2_8daaf6152771_e5627efa2ab1"


def test_ja3_and_ja4_of_a_published_browser_hello():
    # A Chrome hello as published with its JA3 text, JA3 hash and JA4
    # (browserleaks' TLS report): ja3 98487aa16281980e7d1120d399efb6a4,
    # ja4 t13d1516h2_8daaf6152771_d8a2da3f94cd.
    ja3_text = ("771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53,"
                "45-51-16-65037-23-17613-0-11-10-43-65281-35-18-5-13-27,4588-29-23-24,0")
    _, cs, ex, gr, _pf = ja3_text.split(",")
    raw = hello([int(x) for x in cs.split("-")], [int(x) for x in ex.split("-")],
                groups=[int(x) for x in gr.split("-")], sig_algs=SPEC_SIGS, grease=True)
    h = parse_tls_hello(raw)
    assert h.ja3_string == ja3_text
    assert h.ja3 == "98487aa16281980e7d1120d399efb6a4" == hashlib.md5(ja3_text.encode()).hexdigest()
    assert h.ja4 == "t13d1516h2_8daaf6152771_d8a2da3f94cd"


def test_alpn_rules_of_the_spec():
    def alpn_part(values):
        return parse_tls_hello(hello([0x1301], [0x0010], alpn=values)).ja4.split("_")[0][-2:]
    assert alpn_part((b"http/1.1",)) == "h1"
    assert alpn_part((b"\xab",)) == "ab"
    assert alpn_part((b"\xab\xcd",)) == "ad"
    assert alpn_part((b"\x30\xab",)) == "3b"
    assert alpn_part((b"\x30\xab\xcd\x31",)) == "01"
    assert parse_tls_hello(hello([0x1301], [0x002B])).ja4.startswith("t13i0101" + "00")


def test_truncated_hello_gives_the_cipher_part_only():
    full = hello(SPEC_CIPHERS, SPEC_EXTS, sig_algs=SPEC_SIGS)
    whole = parse_tls_hello(full)
    for cut in (80, 120, 200):
        h = parse_tls_hello(full[:cut])
        assert h is not None and not h.complete and h.ja4 is None and h.ja3 is None
        assert h.expected == len(full)
        if cut >= 76 + 2 * len(SPEC_CIPHERS) + 2:
            assert h.ja4_b == whole.ja4_b == "8daaf6152771"


def rsyslog_tcp_pieces(payload: bytes) -> list[bytes]:
    """imtcp: cut at LF, LF removed, a NUL that ends a message removed
    (FIELD_GUIDE 1, 2.1); written out here, not taken from the engine."""
    return [p[:-1] if p.endswith(b"\0") else p for p in payload.split(b"\n")]


def test_rejoin_puts_back_the_nuls_rsyslog_removed():
    raw = hello(SPEC_CIPHERS, SPEC_EXTS, groups=(0x001D, 0x0017), sig_algs=SPEC_SIGS)
    pieces = rsyslog_tcp_pieces(raw)
    assert len(pieces) >= 2 and len(b"\n".join(pieces)) < len(raw)  # extension 0x000a lost its NUL
    assert rejoin(pieces) == raw
    assert parse_tls_hello(rejoin(pieces)).ja4 == parse_tls_hello(raw).ja4


# -- real bytes from the tool fixture --------------------------------------------------

def tool_lines(tool: str) -> list[bytes]:
    """The payload lines a tool left in the fixture, rebuilt by the decoder."""
    out = []
    for row in LABELS:
        if row["file"] == f"{tool}/rfc3339.log" and row["scanner"] != "rsyslogd":
            rec = decode.parse_syslog_line(row["raw"].encode("latin-1"), "rfc3339").record
            out.append(decode.rebuild(rec).line)
    return out


@pytest.mark.parametrize("tool,protocol,field,value", [
    ("curl-https", "tls-client-hello", "alpn", "h2,http/1.1"),
    ("python-ssl", "tls-client-hello", "sni", "localhost"),
    ("openssl-s_client", "tls-client-hello", "tls_version", "TLSv1.3"),
    ("curl-http", "http-request", "user_agent", "curl/7.88.1"),
    ("hydra-http-get", "http-request", "user_agent", "Mozilla/4.0 (Hydra)"),
    ("whatweb", "http-request", "user_agent", "WhatWeb/0.5.5"),
    ("ssh", "ssh-banner", "ssh_client", None),
    ("hydra-redis", "redis-command", None, None),
    ("dig-udp", "dns-query", "qname", "example.org"),
    ("dig-tcp", "dns-query", "qname", "example.org"),
    ("svmap", "sip-request", "method", "OPTIONS"),
    ("ike-scan-aggressive-id", "ike-request", "exchange", "aggressive"),
])
def test_recognisers_on_real_bytes(tool, protocol, field, value):
    lines = tool_lines(tool)
    data = rejoin(lines) if lines[0][:1] == b"\x16" else b"\n".join(lines)
    op = recognise(data, "udp" if tool in ("dig-udp", "svmap", "ike-scan-aggressive-id") else "tcp")
    assert op is not None and op.protocol == protocol
    if field is not None:
        assert op.fields[field] == value if value is not None else op.fields[field]
    if protocol == "tls-client-hello" and tool != "openssl-s_client":
        # whole hellos: JA3 and JA4 (openssl's lost bytes to octet counting)
        assert op.fields["ja4"].startswith("t1") and len(op.fields["ja3"]) == 32


def test_openssl_hello_damaged_by_octet_counting_is_still_a_hello():
    # A piece began with a digit: rsyslog's framing ate it and the byte after
    # it (FIELD_GUIDE 1). The first piece alone says what it is.
    op = recognise(tool_lines("openssl-s_client")[0], "tcp")
    assert op.protocol == "tls-client-hello" and op.expected is not None and "ja4" not in op.fields


@pytest.mark.parametrize("line", [
    b"Bad protocol version identification 'SSH-2.0-Go' from 203.0.113.5 port 40022",
    b'203.0.113.5 - - [05/Dec/2026:17:00:00 +0000] "GET / HTTP/1.0" 200 612 "-" "curl/8.0"',
    b"GET / HTTP/1.0 200 612",
    b"MSWinEventLog\t1\tSecurity\t123\tSat Dec 05 17:00:00 2026\r",
    b'{"method": "GET", "path": "/", "proto": "HTTP/1.0"}\r',
    b"16 03 01 02 00 01 00 01 fc 03 03",
    b"FgMBAgABAAH8AwMyVrlehw==",
    b"Error: connection reset\r",
    b"session opened for user root\r",
    b"*** glibc detected ***\r",
])
def test_benign_near_misses_are_not_openings(line):
    assert recognise(line) is None
    assert recognise(line, "udp") is None


def test_known_client_table_names_only_unique_evidence():
    table = known_clients()
    assert table.entries and all(e.provenance for e in table.entries)
    op = recognise(rejoin(tool_lines("curl-https")), "tcp")
    assert table.identify(op) == ("curl", ("curl",))
    # curl and openssl s_client share OpenSSL's cipher list: a hello cut
    # before its extensions names neither.
    lines = tool_lines("curl-https")
    cut = next(op for op in (recognise(rejoin(lines[:k]), "tcp") for k in range(1, len(lines)))
               if "ja4_b" in op.fields)
    assert "ja4" not in cut.fields
    client, cands = table.identify(cut)
    assert client is None and set(cands) == {"curl", "openssl"}
    # a hello cut inside its cipher list gives no cipher hash at all
    assert "ja4_b" not in recognise(lines[0], "tcp").fields
    shared = KnownClients([e for e in table.entries])
    assert shared.identify(recognise(b"GET / HTTP/1.1\r\nAccept: */*\r\n")) == (None, ())
