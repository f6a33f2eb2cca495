"""Any client's opening bytes: what protocol a payload speaks, and which client sent it.

Theory of operation
-------------------
* Bytes in, a small frozen ``Opening`` out (or None); no I/O, no state.
  ``recognise(data)`` takes what a client sent first on a connection or in a
  datagram, as far as the log kept it: for TCP the concatenation of the
  connection's consecutive log lines re-joined with ``b"\\n"`` (rsyslog cut
  the stream at every LF and removed it, FIELD_GUIDE 1), for UDP the one
  line of the datagram.
* A payload is recognised only when it *starts* with the protocol's opening
  (a TLS record header, an HTTP request line, ``SSH-``...): a daemon that
  quotes a request line (``Bad protocol version identification
  'SSH-2.0-Go'``, an access log's ``"GET / HTTP/1.0"``) does not start with
  it. Text openings must end the way the protocol ends a line (CR, CRLF, or
  the end of the bytes where the protocol has no CR): ordinary log text
  rarely ends in a bare CR after a request line or a RESP length.
* The TLS ClientHello is parsed as far as the bytes go (``TlsHello``): the
  cipher list alone gives JA4's ``b`` part; the whole hello gives JA3 and
  JA4 (FoxIO's JA4 spec, technical_details/JA4.md; JA3 as Salesforce
  defined it: version, ciphers, extensions, groups, point formats, GREASE
  left out, decimal, MD5). ``expected`` is the length the record header
  announces, so a caller can tell whether more lines are still to come.
* rsyslog removes a NUL that ends a message (FIELD_GUIDE 2.1), and a TCP
  piece is a message: a ClientHello piece that ended in ``\\x00`` just
  before the LF (extension 0x000a starts with one) lost that byte.
  ``rejoin(pieces, expected)`` puts the missing NULs back where the
  record's own lengths say they were (a few combinations are tried; the
  first whose parse ends exactly at the record's end wins).
* Names: ``Opening.protocol`` is the protocol name (``tls-client-hello``,
  ``http-request``, ...). Who sent it is only said from evidence in the
  bytes (``client``): a JA4/JA3 or User-Agent or SSH banner looked up in the
  known-client table (``catalogue/clients/known-clients.yaml``, built by
  observing each client on loopback). A fingerprint that more than one known
  client shares names none of them (``candidates`` lists them).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "Opening", "TlsHello", "KnownClients", "recognise", "parse_tls_hello", "rejoin",
    "PROTOCOLS", "known_clients",
]

#: Every protocol name ``recognise`` can give.
PROTOCOLS = (
    "tls-client-hello", "sslv2-client-hello", "http-request", "http-header", "ssh-banner",
    "sip-request", "rdp-cookie", "rdp-negotiation", "smb-negotiate", "redis-command",
    "memcached-command", "dns-query", "ike-request",
)

_GREASE = frozenset(0x0A0A + 0x1010 * i for i in range(16))
#: Longest ClientHello record parsed (a real one is a few KiB).
MAX_HELLO = 16 * 1024
#: At most this many lost NULs are put back by ``rejoin``.
_MAX_LOST = 6
#: ... among at most this many pieces (the combinations tried stay few).
_MAX_PIECES = 12


@dataclass(frozen=True, slots=True)
class TlsHello:
    """What the bytes of a ClientHello say, as far as they go."""

    record_version: int
    expected: int  # bytes the record header announces, header included
    have: int  # bytes there were
    complete: bool  # every field up to the end of the extensions parsed
    version: int = 0  # legacy_version
    ciphers: tuple[int, ...] = ()
    extensions: tuple[int, ...] = ()
    groups: tuple[int, ...] = ()
    point_formats: tuple[int, ...] = ()
    sig_algs: tuple[int, ...] = ()
    alpn: tuple[bytes, ...] = ()
    versions: tuple[int, ...] = ()  # supported_versions
    sni: bytes | None = None
    ciphers_whole: bool = False  # the cipher list is all there

    @property
    def ja3_string(self) -> str | None:
        if not self.complete:
            return None

        def j(xs: Iterable[int]) -> str:
            return "-".join(str(x) for x in xs if x not in _GREASE)

        return ",".join((str(self.version), j(self.ciphers), j(self.extensions), j(self.groups),
                         j(self.point_formats)))

    @property
    def ja3(self) -> str | None:
        s = self.ja3_string
        return None if s is None else hashlib.md5(s.encode()).hexdigest()

    @property
    def ja4_b(self) -> str | None:
        """JA4's cipher part: known as soon as the cipher list is."""
        if not self.ciphers_whole:
            return None
        cs = sorted("%04x" % c for c in self.ciphers if c not in _GREASE)
        return _sha12(",".join(cs)) if cs else "000000000000"

    @property
    def ja4(self) -> str | None:
        if not self.complete:
            return None
        vs = [v for v in self.versions if v not in _GREASE]
        ver = _JA4_VERSION.get(max(vs) if vs else self.version, "00")
        ciphers = [c for c in self.ciphers if c not in _GREASE]
        exts = [e for e in self.extensions if e not in _GREASE]
        a = "t%s%s%02d%02d%s" % (ver, "d" if 0 in exts else "i", min(len(ciphers), 99),
                                 min(len(exts), 99), _ja4_alpn(self.alpn))
        rest = sorted("%04x" % e for e in exts if e not in (0x0000, 0x0010))
        if rest:
            text = ",".join(rest)
            if self.sig_algs:
                text += "_" + ",".join("%04x" % s for s in self.sig_algs)
            c = _sha12(text)
        else:
            c = "000000000000"
        return f"{a}_{self.ja4_b}_{c}"

    @property
    def tls_version(self) -> str:
        vs = [v for v in self.versions if v not in _GREASE]
        return _VERSION_NAMES.get(max(vs) if vs else (self.version or self.record_version), "unknown")


_JA4_VERSION = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3", 0x0002: "s2",
                0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3"}
_VERSION_NAMES = {0x0304: "TLSv1.3", 0x0303: "TLSv1.2", 0x0302: "TLSv1.1", 0x0301: "TLSv1.0",
                  0x0300: "SSLv3", 0x0002: "SSLv2"}


def _sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _alnum(b: int) -> bool:
    return 0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A


def _ja4_alpn(alpn: Sequence[bytes]) -> str:
    if not alpn or not alpn[0]:
        return "00"
    v = alpn[0]
    if _alnum(v[0]) and _alnum(v[-1]):
        return chr(v[0]) + chr(v[-1])
    h = v.hex()
    return h[0] + h[-1]


def _u16s(data: bytes) -> tuple[int, ...]:
    return tuple(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data) - 1, 2))


def parse_tls_hello(data: bytes) -> TlsHello | None:
    """A TLS ClientHello record at the start of ``data``, parsed as far as
    the bytes go; None when ``data`` does not start with one."""
    if len(data) < 6 or data[0] != 0x16 or data[1] != 0x03 or data[2] > 0x04 or data[5] != 0x01:
        return None
    rec_len = int.from_bytes(data[3:5], "big")
    if rec_len < 4 or rec_len > MAX_HELLO:
        return None
    expected = 5 + rec_len
    body = data[5:expected]
    have = len(data)
    rv = int.from_bytes(data[1:3], "big")
    out: dict[str, Any] = {}
    p = 4  # handshake type + 3-byte length
    if len(body) >= 4:
        hs_len = int.from_bytes(body[1:4], "big")
        if hs_len + 4 > rec_len + 0 and hs_len + 4 > len(body) and len(body) == rec_len:
            return None  # a complete record too short for its handshake: not a hello
    try:
        if len(body) < p + 2:
            raise _Short
        out["version"] = int.from_bytes(body[p:p + 2], "big")
        p += 2 + 32  # random
        if len(body) < p + 1:
            raise _Short
        p += 1 + body[p]  # session id
        if len(body) < p + 2:
            raise _Short
        n = int.from_bytes(body[p:p + 2], "big")
        p += 2
        if n % 2 or n > 2 * 512:
            return None
        if len(body) < p + n:
            out["ciphers"] = _u16s(body[p:len(body) - (len(body) - p) % 2])
            raise _Short
        out["ciphers"] = _u16s(body[p:p + n])
        out["ciphers_whole"] = True
        p += n
        if len(body) < p + 1:
            raise _Short
        p += 1 + body[p]  # compression methods
        if len(body) < p + 2:
            raise _Short
        ext_total = int.from_bytes(body[p:p + 2], "big")
        p += 2
        end = p + ext_total
        if end > rec_len:
            return None
        exts: list[int] = []
        while p + 4 <= min(end, len(body)):
            et = int.from_bytes(body[p:p + 2], "big")
            el = int.from_bytes(body[p + 2:p + 4], "big")
            if p + 4 + el > end:
                return None
            if p + 4 + el > len(body):
                exts.append(et)
                break
            ed = body[p + 4:p + 4 + el]
            exts.append(et)
            _extension(et, ed, out)
            p += 4 + el
        out["extensions"] = tuple(exts)
        # whole: the extensions end where the handshake and the record do
        complete = p == end == rec_len == len(body) and \
            int.from_bytes(body[1:4], "big") + 4 == rec_len
    except _Short:
        complete = False
    return TlsHello(rv, expected, have, complete, **out)


class _Short(Exception):
    """The bytes end before the field."""


def _extension(et: int, ed: bytes, out: dict[str, Any]) -> None:
    if et == 0x0000:
        # server_name list: type 0 host_name
        if len(ed) >= 5:
            out["sni"] = ed[5:5 + int.from_bytes(ed[3:5], "big")]
        else:
            out["sni"] = b""
    elif et == 0x000A and len(ed) >= 2:
        out["groups"] = _u16s(ed[2:2 + int.from_bytes(ed[0:2], "big")])
    elif et == 0x000B and ed:
        out["point_formats"] = tuple(ed[1:1 + ed[0]])
    elif et == 0x000D and len(ed) >= 2:
        out["sig_algs"] = _u16s(ed[2:2 + int.from_bytes(ed[0:2], "big")])
    elif et == 0x0010 and len(ed) >= 2:
        vals, q, end = [], 2, 2 + int.from_bytes(ed[0:2], "big")
        while q < min(end, len(ed)):
            n = ed[q]
            vals.append(ed[q + 1:q + 1 + n])
            q += 1 + n
        out["alpn"] = tuple(vals)
    elif et == 0x002B and ed:
        out["versions"] = _u16s(ed[1:1 + ed[0]])


def rejoin(pieces: Sequence[bytes], expected: int | None = None) -> bytes:
    """The logged pieces of one TCP payload put back together: joined with
    the LF rsyslog cut at and, for a ClientHello, with the NULs rsyslog
    removed from the ends of pieces put back where the record's own lengths
    say they were (see the module docstring): the fewest NULs that make the
    hello parse, exactly to its end when all of it is there."""
    joined = b"\n".join(pieces)
    head = parse_tls_hello(pieces[0]) if pieces else None
    if head is None:
        return joined
    if expected is None:
        expected = head.expected
    if len(joined) > expected or len(pieces) > _MAX_PIECES:
        return joined
    whole = len(joined) + _MAX_LOST >= expected
    # a NUL lost at the end of any piece, the last one included (the bytes
    # after the last LF are a message too)
    cuts = range(len(pieces))
    for lost in range(0, min(_MAX_LOST, expected - len(joined)) + 1):
        for where in combinations(cuts, lost):
            parts = [p + b"\x00" if i in where else p for i, p in enumerate(pieces)]
            cand = b"\n".join(parts)
            h = parse_tls_hello(cand)
            if h is None:
                continue
            if h.complete or not whole and _consistent(cand, h):
                return cand
    return joined


def _consistent(data: bytes, h: TlsHello) -> bool:
    """A truncated hello whose last extension does not claim to run past
    the record: the parse got that far without a wrong length."""
    return h.have < h.expected


# --------------------------------------------------------------- text protocols

_HTTP_METHODS = (b"GET", b"POST", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"CONNECT", b"TRACE", b"PATCH",
                 b"PROPFIND", b"MKCOL", b"SEARCH")
_HTTP_LINE = re.compile(rb"(" + b"|".join(_HTTP_METHODS) + rb") (\S{1,4096}) HTTP/[0-9]\.[0-9]\r?(?:\n|$)")
#: Request headers a client opens with; a line ``Name: value\r`` with one of
#: these names is a request header line (the value as sent, CR kept).
_HTTP_HEADERS = frozenset(h.lower() for h in (
    b"Host", b"User-Agent", b"Accept", b"Accept-Encoding", b"Accept-Language", b"Accept-Charset",
    b"Connection", b"Authorization", b"Cookie", b"Content-Type", b"Content-Length", b"Cache-Control",
    b"Pragma", b"Referer", b"Upgrade", b"Keep-Alive", b"Proxy-Connection", b"If-Modified-Since",
    b"Upgrade-Insecure-Requests", b"X-Requested-With", b"Origin", b"Range", b"TE", b"DNT",
    b"Expect", b"Transfer-Encoding",
))
_HEADER_LINE = re.compile(rb"([A-Za-z][A-Za-z0-9-]{0,40}): ?([^\r\n]{0,4096})\r(?:\n|$)")
_SSH_BANNER = re.compile(rb"SSH-(2\.0|1\.99|1\.5)-([\x21-\x2c\x2e-\x7e][\x21-\x7e]{0,200})(?: ([\x20-\x7e]{0,200}))?\r?(?:\n|$)")
_SIP_METHODS = (b"OPTIONS", b"INVITE", b"REGISTER", b"ACK", b"BYE", b"CANCEL", b"SUBSCRIBE", b"NOTIFY",
                b"MESSAGE", b"INFO", b"PRACK", b"UPDATE", b"REFER", b"PUBLISH")
_SIP_LINE = re.compile(rb"(" + b"|".join(_SIP_METHODS) + rb") (sips?:\S{1,1024}) SIP/2\.0\r?(?:\n|$)")
_RESP_HEAD = re.compile(rb"\*([1-9][0-9]{0,3})\r(?:\n|$)")
_RESP_BULK = re.compile(rb"\$([0-9]{1,6})\r(?:\n|$)")
_MEMCACHED = re.compile(
    rb"(stats(?: [a-z_]{1,20})?|version|verbosity [0-9]|flush_all|get [\x21-\x7e]{1,250}|gets [\x21-\x7e]{1,250}"
    rb"|(?:set|add|replace|append|prepend) [\x21-\x7e]{1,250} [0-9]{1,10} [0-9]{1,10} [0-9]{1,10}(?: noreply)?)\r(?:\n|$)")
_MSTSHASH = b"Cookie: mstshash="


@dataclass(frozen=True, slots=True)
class Opening:
    """A recognised opening. ``protocol`` is its name; ``fields`` what the
    bytes tell (``ja3``, ``ja4``, ``user_agent``, ``ssh_client``, ...),
    strings only; ``expected``: for a truncated binary opening the length
    its own header announces (more pieces to come), else None;
    ``confidence``: how sure the protocol reading is (not who sent it);
    ``hello``: the parsed TLS hello, if any."""

    protocol: str
    confidence: float
    fields: Mapping[str, str] = field(default_factory=dict)
    expected: int | None = None
    hello: TlsHello | None = None


def recognise(data: bytes, transport: str | None = None) -> Opening | None:
    """The opening ``data`` starts with, or None. ``data`` is the payload as
    the log kept it (see the module docstring); ``transport`` ``tcp``/``udp``
    when known (a DNS query over TCP has a 2-byte length first)."""
    if not data:
        return None
    b0 = data[0]
    if b0 == 0x16:
        return _tls(data)
    if b0 & 0x80 and len(data) >= 5 and data[2] == 0x01 and data[3] in (0x00, 0x03):
        return _sslv2(data)
    if b0 == 0x03 and len(data) >= 11 and data[1] == 0x00 and data[5] == 0xE0:
        return _rdp(data)
    if b0 == 0x00 and len(data) >= 8 and data[4:8] in (b"\xffSMB", b"\xfeSMB"):
        return Opening("smb-negotiate", 0.9, {"dialect": "smb1" if data[4] == 0xFF else "smb2"})
    if 0x41 <= b0 <= 0x5A:
        m = _HTTP_LINE.match(data)
        if m is not None:
            return _http(data, m)
        m = _SIP_LINE.match(data)
        if m is not None:
            f = {"method": m.group(1).decode()}
            ua = _header(data, b"user-agent")
            if ua is not None:
                f["user_agent"] = ua
            return Opening("sip-request", 0.9, f)
        if data.startswith(b"SSH-"):
            m = _SSH_BANNER.match(data)
            if m is not None:
                return Opening("ssh-banner", 0.8, {"ssh_client": m.group(2).decode("ascii"),
                                                   "ssh_banner": m.group(0).rstrip(b"\r\n").decode("ascii")})
    if 0x41 <= b0 <= 0x7A:
        m = _HEADER_LINE.match(data)
        if m is not None and m.group(1).lower() in _HTTP_HEADERS:
            f = {"header": m.group(1).decode("ascii")}
            if m.group(1).lower() == b"user-agent":
                f["user_agent"] = m.group(2).decode("latin-1")
            return Opening("http-header", 0.6, f)
        m = _MEMCACHED.match(data)
        if m is not None and (len(m.group(1)) > 5 or m.group(1) in (b"stats",)):
            return Opening("memcached-command", 0.6, {"command": m.group(1).split(b" ")[0].decode()})
    if b0 == 0x2A:
        m = _RESP_HEAD.match(data)
        if m is not None:
            f: dict[str, str] = {}
            rest = data[m.end():].split(b"\r\n" if b"\r\n" in data else b"\r\n")
            words = [w for w in re.findall(rb"\$[0-9]+\r\n([^\r\n]*)\r", data)]
            if words:
                f["command"] = words[0].decode("latin-1").upper()
            del rest
            return Opening("redis-command", 0.7, f)
    if b0 == 0x24 and _RESP_BULK.match(data):
        return Opening("redis-command", 0.55, {})
    if len(data) >= 28 and data[8:16] == b"\x00" * 8 and data[17] in (0x10, 0x20) and \
            data[18] in (2, 4, 5, 34) and data[20:24] == b"\x00\x00\x00\x00":
        return _ike(data)
    dns = _dns(data, transport)
    if dns is not None:
        return dns
    return None


def _header(data: bytes, name: bytes) -> str | None:
    for m in re.finditer(rb"(?:^|\n)([A-Za-z-]+): ?([^\r\n]*)", data):
        if m.group(1).lower() == name:
            return m.group(2).decode("latin-1")
    return None


def _http(data: bytes, m: re.Match[bytes]) -> Opening:
    f = {"method": m.group(1).decode(), "path": m.group(2).decode("latin-1")[:200]}
    ua = _header(data, b"user-agent")
    if ua is not None:
        f["user_agent"] = ua
    names = re.findall(rb"\n([A-Za-z][A-Za-z0-9-]*):", data)
    if names:
        f["header_order"] = ",".join(n.decode("ascii") for n in names)
    return Opening("http-request", 0.85 if m.group(0).rstrip(b"\n").endswith(b"\r") else 0.6, f)


def _tls(data: bytes) -> Opening | None:
    h = parse_tls_hello(data)
    if h is None:
        return None
    f: dict[str, str] = {"tls_version": h.tls_version}
    ja4_b = h.ja4_b
    if ja4_b is not None:
        f["ja4_b"] = ja4_b
    if h.complete:
        f["ja3"] = h.ja3 or ""
        f["ja4"] = h.ja4 or ""
        if h.sni:
            f["sni"] = h.sni.decode("latin-1")
        if h.alpn:
            f["alpn"] = ",".join(a.decode("latin-1") for a in h.alpn)
    more = h.expected if h.have < h.expected else None
    return Opening("tls-client-hello", 0.9 if h.ciphers else 0.7, f, more, h)


def _sslv2(data: bytes) -> Opening | None:
    # SSLv2 CLIENT-HELLO: 2-byte length with the top bit set, type 1, version.
    n = ((data[0] & 0x7F) << 8) | data[1]
    if n < 9:
        return None
    ver = int.from_bytes(data[3:5], "big")
    if ver not in (0x0002, 0x0300, 0x0301, 0x0302, 0x0303) or len(data) < 11:
        return None
    # cipher specs (3 bytes each), session id (0 or 16), challenge (16..32),
    # adding up to the record length
    cs, sid, ch = (int.from_bytes(data[i:i + 2], "big") for i in (5, 7, 9))
    if cs == 0 or cs % 3 or sid not in (0, 16) or not 16 <= ch <= 32 or 9 + cs + sid + ch != n:
        return None
    more = n + 2 if len(data) < n + 2 else None
    return Opening("sslv2-client-hello", 0.8, {"tls_version": _VERSION_NAMES.get(ver, "unknown")}, more)


def _rdp(data: bytes) -> Opening | None:
    # TPKT (RFC 1006) version 3, then an X.224 Connection Request (0xE0).
    n = int.from_bytes(data[2:4], "big")
    if n < 11 or n > 1024:
        return None
    i = data.find(_MSTSHASH, 11)
    if i >= 0:
        end = data.find(b"\r", i)
        user = data[i + len(_MSTSHASH):end if end >= 0 else len(data)]
        return Opening("rdp-cookie", 0.9, {"mstshash": user.decode("latin-1")[:64]})
    return Opening("rdp-negotiation", 0.7, {}, n if len(data) < n else None)


def _ike(data: bytes) -> Opening:
    ex = {2: "main-mode", 4: "aggressive", 5: "informational", 34: "ikev2-sa-init"}[data[18]]
    return Opening("ike-request", 0.8, {"exchange": ex, "ike_version": "2" if data[17] == 0x20 else "1"})


_QNAME_LABEL = re.compile(rb"[A-Za-z0-9_-]{1,63}\Z")


def _dns(data: bytes, transport: str | None) -> Opening | None:
    """A DNS query: header (RFC 1035 4.1.1) with QR=0, standard or status
    opcode, one question and no answers, then a well-formed QNAME. Over TCP
    a 2-byte length comes first (RFC 1035 4.2.2)."""
    for off in ((2, 0) if transport != "udp" else (0,)):
        d = data[off:]
        if len(d) < 17:
            continue
        if off == 2 and int.from_bytes(data[0:2], "big") not in range(17, 4097):
            continue
        flags = int.from_bytes(d[2:4], "big")
        if flags & 0x8000 or (flags >> 11) & 0xF not in (0, 2) or flags & 0x000F:
            continue
        qd, an, ns, ar = (int.from_bytes(d[i:i + 2], "big") for i in (4, 6, 8, 10))
        if qd != 1 or an or ns > 1 or ar > 1:
            continue
        p, labels = 12, []
        while p < len(d) and d[p] != 0:
            n = d[p]
            if n > 63 or p + 1 + n > len(d):
                return None
            lab = d[p + 1:p + 1 + n]
            if not _QNAME_LABEL.match(lab):
                return None
            labels.append(lab)
            p += 1 + n
        if p >= len(d) or not labels and p == 12 and len(d) < 17:
            continue
        f = {"qname": (b".".join(labels) or b".").decode("ascii")}
        if p + 3 <= len(d):
            f["qtype"] = str(int.from_bytes(d[p + 1:p + 3], "big"))
        more = None
        if off == 2 and len(data) < 2 + int.from_bytes(data[0:2], "big"):
            more = 2 + int.from_bytes(data[0:2], "big")
        return Opening("dns-query", 0.75 if labels else 0.6, f, more)
    return None


# ------------------------------------------------------------ known clients

@dataclass(frozen=True, slots=True)
class KnownClient:
    id: str
    client: str  # the tool or library
    kind: str  # ja4 | ja3 | ja4_b | user_agent_prefix | user_agent_contains | ssh_client_prefix
    value: str
    scanner: bool  # a scanning tool (else a general client or library)
    provenance: str


_KINDS = ("ja4", "ja3", "ja4_b", "user_agent_prefix", "user_agent_contains", "ssh_client_prefix")
_CLIENTS_FILE = Path(__file__).resolve().parent / "catalogue" / "clients" / "known-clients.yaml"


class KnownClients:
    """The known-client table: evidence in an opening -> who sent it.

    ``identify(opening)`` -> (client or None, candidates). A JA4 (then JA3,
    then JA4's cipher part for a truncated hello) or User-Agent or SSH
    banner that one client alone has in the table names it; one that
    several share names none (the candidates are returned, sorted)."""

    def __init__(self, entries: Sequence[KnownClient]) -> None:
        self.entries = tuple(entries)
        self._exact: dict[tuple[str, str], set[str]] = {}
        self._ua_prefix: list[tuple[str, str]] = []
        self._ua_contains: list[tuple[str, str]] = []
        self._ssh: list[tuple[str, str]] = []
        for e in self.entries:
            if e.kind in ("ja4", "ja3", "ja4_b"):
                self._exact.setdefault((e.kind, e.value), set()).add(e.client)
            elif e.kind == "user_agent_prefix":
                self._ua_prefix.append((e.value, e.client))
            elif e.kind == "user_agent_contains":
                self._ua_contains.append((e.value, e.client))
            elif e.kind == "ssh_client_prefix":
                self._ssh.append((e.value, e.client))

    @classmethod
    def load(cls, path: Path | str = _CLIENTS_FILE) -> "KnownClients":
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        with open(path, "rb") as f:
            raw = yaml.load(f, Loader=loader) or []
        out = []
        for i, e in enumerate(raw):
            if not isinstance(e, dict) or set(e) - {"id", "client", "kind", "value", "scanner", "provenance", "notes"}:
                raise ValueError(f"{path}: entry {i}: unknown or missing keys")
            if e.get("kind") not in _KINDS or not e.get("provenance"):
                raise ValueError(f"{path}: {e.get('id')}: kind must be one of {_KINDS}, provenance required")
            out.append(KnownClient(str(e["id"]), str(e["client"]), e["kind"], str(e["value"]),
                                   bool(e.get("scanner", False)), str(e["provenance"])))
        return cls(out)

    def identify(self, op: Opening) -> tuple[str | None, tuple[str, ...]]:
        f = op.fields
        for kind in ("ja4", "ja3", "ja4_b"):
            v = f.get(kind)
            if v:
                got = self._exact.get((kind, v))
                if got:
                    return (next(iter(got)) if len(got) == 1 else None), tuple(sorted(got))
                if kind != "ja4_b" and f.get("ja4"):
                    # a whole hello no entry knows: its cipher list alone
                    # does not name a client either
                    break
        ua = f.get("user_agent")
        if ua:
            got = {c for v, c in self._ua_prefix if ua.startswith(v)}
            got |= {c for v, c in self._ua_contains if v in ua}
            if got:
                return (next(iter(got)) if len(got) == 1 else None), tuple(sorted(got))
        ssh = f.get("ssh_client")
        if ssh:
            got = {c for v, c in self._ssh if ssh.startswith(v)}
            if got:
                return (next(iter(got)) if len(got) == 1 else None), tuple(sorted(got))
        return None, ()


_KNOWN: KnownClients | None = None


def known_clients() -> KnownClients:
    """The built-in table, loaded once."""
    global _KNOWN
    if _KNOWN is None:
        _KNOWN = KnownClients.load() if _CLIENTS_FILE.exists() else KnownClients(())
    return _KNOWN
