"""The matching engine: one decoded log line in, the probes it can be part of out.

Theory of operation
-------------------
* ``Detector`` is compiled once from the catalogue. For every ``payload``
  signature it derives what rsyslog can have logged from those bytes
  (FIELD_GUIDE sections 1-3), each a *piece* with the index of the LF-piece
  (``fragment``) it comes from:

  - TCP: the payload cut at every LF, LF removed, CR kept, empty pieces
    dropped; a NUL that ends a piece is removed (2.1).
  - UDP: the whole payload as one line; a trailing NUL and then one trailing
    LF removed, inner CR/LF kept.
  - damage, as kind ``damaged``: octet-counted framing eats leading digits
    plus the next byte of every TCP frame (1, RFC 6587); the RFC 5424
    version rule eats a leading ``1 `` (3.4); a forwarder that re-encodes
    to UTF-8 replaces invalid bytes with U+FFFD (Python's "replace" decoder
    and Rust's ``from_utf8_lossy`` both follow the Unicode "maximal subpart"
    practice, so the replaced piece is computed exactly).
  - trimmed variants (spaces/tabs/CR at the ends removed), because the
    HOSTNAME/TAG/MSG join of the file formats adds or drops spacing.

* syslog-ng (docs/collectors.md) cuts and trims differently, and its files
  say so (``decode``'s ``syslog-ng`` shape): a TCP stream is cut at every
  LF *and* every NUL, trailing CRs are removed, empty frames dropped; a UDP
  datagram loses its leading and trailing NULs and one trailing LF, and
  keeps inner CR/LF; then the RFC 3164 parser drops leading spaces, a PRI
  and a leading ``*``/``.`` (the whole message ``<`` is logged empty).
  ``syslog_ng_pieces`` lists what that leaves of a payload, and
  ``match(..., collector="syslog-ng")`` looks the line up among those
  first: there a request line without its CR is what the probe leaves, so
  it is as distinctive as the piece itself.

* ``match(line)`` tries, cheapest first:

  1. an exact dict lookup of the line among all pieces and variants;
  2. a bisect in the sorted pieces for a piece the line is a proper prefix
     of (``truncated``: TAG cut at 510 bytes, RFC 5424 printable prefix,
     a connection closed early);
  3. one multi-literal scan (``_prefilter.LiteralSet``: hyperscan,
     pyahocorasick or ``re``) for markers anywhere (``marker``), a
     distinctive piece at the start of a longer line (``prefix``) and a
     binary piece inside a line (``damaged``);
  4. only for records known to miss bytes (``lossy=True``: RFC 5424 output
     prints APP-NAME, not the rest of the TAG), a piece ``A + X + B`` for a
     line ``A + B`` where ``X`` is a plausible TAG remainder (``damaged``).

  ``match_msg(line)`` is for lines that hold only rsyslog's MSG property
  (a central server's ``%FROMHOST% %msg%`` template): the payload's first
  word went to HOSTNAME and its next token to the TAG, neither printed. Each
  piece's MSG is derived once by pmrfc3164's rules (``rsyslog_msg``) and
  looked up whole (kind ``damaged``); an empty MSG matches nothing here
  (the sequence pass places those lines, ``msg_cores``).

  Matches are ordered by confidence; entries with the same bytes (hence the
  same confidence for the same kind of match) by ``Signature.rank``: an nmap
  service probe before an NSE script before a -sU payload (the catalogue's
  naming policy), so the name does not depend on ids or load order.

  ``match_best(candidates)`` applies this to each reading of a record and
  prefers the first with a distinctive match. The answers for lines that
  are catalogue pieces are computed once and kept.

* A piece that is not distinctive on its own (a lone ``\\r``, ``\\r\\n``, a
  single common word, a run of one byte) gives ``ambiguous=True`` matches
  with a low confidence; ``_correlate`` decides those from the lines of the
  same source around them. Plain text inside a longer line only counts when
  it starts the line, so application logs that *quote* a request line do
  not match.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from os.path import commonprefix
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from ._catalogue import Signature
from ._prefilter import LiteralSet

__all__ = ["Detector", "Match", "KINDS", "DEFAULT_CONFIDENCE"]

KINDS = ("exact", "prefix", "truncated", "marker", "damaged")

#: Confidence of a catalogue entry that does not state one.
DEFAULT_CONFIDENCE = 0.9
#: Multiplier per match kind (exact and marker are as sure as the entry).
_KIND_FACTOR = {"exact": 1.0, "marker": 1.0, "prefix": 0.9, "damaged": 0.85, "truncated": 0.75}
#: Confidence factor of a non-distinctive piece: below any sane threshold,
#: so only correlation can make it a tag.
_AMBIGUOUS_FACTOR = 0.25
#: A truncated line shorter than this says nothing (binary / plain text);
#: ``fragments()`` gives the prefilter piece prefixes of these lengths.
_MIN_TRUNCATED = 4
_MIN_TRUNCATED_TEXT = 16
#: Gapped (lossy) lines: shortest line and kept tail, and the head used to
#: find candidates.
_MIN_GAPPED = 6
_GAP_PREFIX = 3
#: Shortest text token whose CR-less form is a prefilter fragment, and the
#: words that are never one (``fragments``).
_MIN_CHOMPED = 6
_PLAIN_TOKEN = re.compile(rb"[A-Z]+(?:/[0-9.]+)?")
#: Shortest piece used for substring (prefix/damaged) search.
_MIN_SUBSTRING = 6
#: Bounded candidate walk in the truncation bisect.
_MAX_TRUNC_CANDIDATES = 256

_FRAMING_DIGITS = re.compile(rb"^[0-9]+")
#: A lone common word (``HELP``, ``stats``, ``OPTIONS``): ordinary logs have
#: those too. Version-like tokens (``SSH-2.0-Go``) are not common words.
_WORD = re.compile(rb"^[A-Za-z]{1,12}$")
_TRIM = b" \t\r"
_SPLIT_TOKENS = re.compile(rb"[ :\[\]]+")
#: The first two tokens of a line (HOSTNAME and TAG in the RFC 3164 split).
_MSG_PART = re.compile(rb"^[^ :\[]*[ :\[]+[^ :\[]*[ :\[]*")


@dataclass(frozen=True, slots=True)
class Match:
    signature: Signature
    fragment: int
    kind: str
    confidence: float
    ambiguous: bool


@dataclass(frozen=True, slots=True)
class _Piece:
    sig: int  # index into Detector.signatures
    fragment: int
    kind: str  # exact | damaged
    transport: str  # tcp | udp
    text: bytes
    distinctive: bool
    trimmed: bool


#: Request header lines that many HTTP clients send word for word (curl,
#: whatweb, sqlmap and masscan all send ``Accept: */*``: tests/fixtures/tools):
#: a line that is one of them names no probe alone.
_COMMON_LINES = frozenset((b"Accept: */*", b"Connection: close", b"Connection: Keep-Alive",
                           b"Connection: keep-alive"))


def distinctive(piece: bytes) -> bool:
    """Can this line, alone, identify a probe? (FIELD_GUIDE 5: expect lines
    that are only ``#015``; common words like ``HELP`` appear in ordinary
    logs too; header lines every HTTP client sends, ``_COMMON_LINES``.)"""
    t = piece.strip(b" \t\r\n")
    if len(t) < 4 or t in _COMMON_LINES:
        return False
    if _WORD.match(t):
        return False
    if len(set(t)) == 1:
        return False
    return True


_BINARY = re.compile(rb"[\x00-\x08\x0a-\x0c\x0e-\x1f\x7f-\xff]")


def _mostly_one_byte(piece: bytes) -> bool:
    """A piece shorter than 16 bytes, more than half of them one value."""
    return len(piece) < 16 and max(piece.count(bytes((c,))) for c in set(piece)) * 2 > len(piece)


def _has_binary(piece: bytes) -> bool:
    """A control byte other than TAB/CR, DEL, or an 8-bit byte."""
    return _BINARY.search(piece) is not None


def replaced(data: bytes) -> bytes:
    """What a forwarder that forces valid UTF-8 leaves of ``data``."""
    return data.decode("utf-8", "replace").encode("utf-8")


def _logged_lines(payload: bytes, transport: str) -> list[tuple[str, int, bytes]]:
    """(transport, fragment index, line) for each line rsyslog logs."""
    out: list[tuple[str, int, bytes]] = []
    if transport in ("tcp", "any"):
        n = 0
        for part in payload.split(b"\n"):
            if part in (b"", b"\0"):
                continue  # empty frame, or a lone NUL: an empty message
            out.append(("tcp", n, part[:-1] if part.endswith(b"\0") else part))
            if part.endswith(b"\0"):
                # Also the unstripped form: other parser settings and other
                # syslog daemons keep the final NUL (escaped).
                out.append(("tcp", n, part))
            n += 1
    if transport in ("udp", "any"):
        seen = set()
        # FIELD_GUIDE 2.1: a final NUL goes, then one trailing LF; both orders
        # are indexed because senders differ in which comes last.
        for line in (payload, payload[:-1] if payload.endswith(b"\0") else payload):
            line = line[:-1] if line.endswith(b"\n") else line
            line = line[:-1] if line.endswith(b"\0") else line
            if line and line not in seen:
                seen.add(line)
                out.append(("udp", 0, line))
    return out


_SNG_CUT = re.compile(rb"[\n\x00]")
_SNG_PRI = re.compile(rb"<[0-9]{1,3}>")


def _syslog_ng_parsed(frame: bytes) -> bytes:
    """What syslog-ng's RFC 3164 parser leaves of one frame in its file
    (observed, syslog-ng 3.38): leading spaces and a PRI dropped, then one
    leading ``*`` or ``.`` (a time-sync marker); a frame that is only ``<``
    is logged empty. (A ``<`` without a PRI before other bytes gives
    syslog-ng's own error message with the frame in it: decode's
    ``syslog-ng`` shape takes the frame back out.)"""
    f = frame.lstrip(b" ")
    m = _SNG_PRI.match(f)
    if m is not None:
        f = f[m.end():]
    elif f == b"<":
        return b""
    if f[:1] in (b"*", b"."):
        f = f[1:]
    return f


def syslog_ng_tcp(payload: bytes) -> tuple[bytes, ...]:
    """The lines syslog-ng's ``network()`` source logs for ``payload`` sent
    on one TCP connection, in order (an empty line where the parser left
    nothing of a frame)."""
    out = []
    for frame in _SNG_CUT.split(payload):
        frame = frame.rstrip(b"\r")
        if frame:
            out.append(_syslog_ng_parsed(frame))
    return tuple(out)


def syslog_ng_udp(payload: bytes) -> bytes:
    """The message syslog-ng logs for ``payload`` sent as one datagram (its
    inner LFs then start continuation lines in a file)."""
    d = payload.strip(b"\x00")
    if d.endswith(b"\n"):
        d = d[:-1].strip(b"\x00")
    return _syslog_ng_parsed(d)


def _damage(line: bytes, transport: str) -> list[bytes]:
    """Variants of a logged line with bytes destroyed on the way in."""
    out: list[bytes] = []
    if transport == "tcp":
        m = _FRAMING_DIGITS.match(line)
        if m and len(line) > m.end() + 1:
            # RFC 6587 octet counting: the digits and the following byte are
            # consumed (FIELD_GUIDE 1).
            out.append(line[m.end() + 1:])
    if line.startswith(b"1 ") and len(line) > 2:
        out.append(line[2:])  # read as the RFC 5424 VERSION field
    return out


def unescaped_nul_rule(line: bytes) -> bytes:
    """What rsyslog with ``escapeControlCharactersOnReceive="off"`` leaves of
    a message that holds a NUL (FIELD_GUIDE 2.2): the bytes before the byte
    preceding the first NUL as they are, then every control byte other than
    NUL dropped (NUL itself is still escaped, and unescaped again here)."""
    first = line.find(b"\0")
    if first < 0:
        return line
    k = max(first - 1, 0)
    return line[:k] + bytes(c for c in line[k:] if c == 0 or c >= 0x20)


_HOSTWORD = re.compile(rb"[A-Za-z0-9._-]*[A-Za-z0-9]")
#: pmrfc3164 stops a TAG at this many bytes of escaped text (FIELD_GUIDE 3.4).
_TAG_MAX = 510
_TAG_END = re.compile(rb"[ :]")
#: Bytes rsyslog escapes as ``#ooo`` (FIELD_GUIDE 2.1), and the escape.
_CONTROL_BYTE = re.compile(rb"[\x00-\x1f]")
_ESCAPE = re.compile(rb"#([0-3][0-7]{2})")


def rsyslog_msg(line: bytes) -> bytes:
    """What rsyslog's RFC 3164 parser leaves in MSG of a logged line
    (FIELD_GUIDE 3): a leading ``1 `` is read as a version field; a first
    word of hostname characters followed by a space (or the whole line, if
    it is only such characters) is HOSTNAME; then the TAG runs to the first
    space (which stays in MSG) or colon (which goes with the TAG), at most
    510 bytes as escaped (a control byte is 4: ``#ooo``); a text starting
    with a space, ``{`` or ``[`` has no TAG."""
    if line.startswith(b"1 "):
        line = line[2:]
    sp = line.find(b" ")
    word = line if sp < 0 else line[:sp]
    if word and _HOSTWORD.fullmatch(word) is not None:
        if sp < 0:
            return b""
        line = line[sp + 1:]
    if not line or line[:1] in (b" ", b"{", b"["):
        return line
    cut = _tag_cut(line)
    if cut is not None:
        return line[cut:]
    # The TAG runs into the 510-byte cut, counted in the escaped text: the
    # cut may split an escape, whose digits then start MSG as text.
    escaped = _CONTROL_BYTE.sub(lambda m: b"#%03o" % m.group()[0], line)
    if len(escaped) <= _TAG_MAX:
        return b""
    return _ESCAPE.sub(lambda m: bytes((int(m.group(1), 8),)), escaped[_TAG_MAX:])


def _tag_cut(line: bytes, escaped_bytes: re.Pattern[bytes] = _CONTROL_BYTE) -> int | None:
    """Where MSG starts in ``line`` (TAG first) when its TAG ends before
    pmrfc3164's 510-byte cut, counted as rsyslog wrote it (``escaped_bytes``
    as ``#ooo``); None when the TAG runs into the cut."""
    end = _TAG_END.search(line)
    if end is not None:
        cut = end.end() if end.group() == b":" else end.start()
        if cut + 3 * len(escaped_bytes.findall(line, 0, cut)) <= _TAG_MAX:
            return cut
    return None


#: An escape that a cut at a fixed byte count split (``#0`` of ``#001``).
_SPLIT_ESCAPE = re.compile(rb"#[0-7]{0,2}$")


_NUL = re.compile(rb"\x00")
_SPACE_RUN = re.compile(rb" {2,}")
#: Places tried for a gap that ends with a colon (``Detector._gapped``).
_MAX_GAP_PLACES = 8
#: The ident class of Fluent Bit's stock ``syslog-rfc3164`` parser.
_IDENT = re.compile(rb"[A-Za-z0-9_/.-]*")


def forward_cut(line: bytes, escaped_bytes: re.Pattern[bytes] = _CONTROL_BYTE) -> tuple[bytes, bytes] | None:
    """What rsyslog's forwarding template (``%syslogtag:1:32%%msg%``) sends
    of a logged line whose TAG ran into pmrfc3164's 510-byte cut, as
    (head, tail), both decoded: head is the HOSTNAME word (with its space),
    if any, and the TAG's first 32 bytes as escaped, without an escape that
    cut split; tail is MSG, the escaped text from byte 510 on, whose first
    bytes may be the digits of an escape the 510-byte cut split (ibm-db2's
    ``#0`` + `` `` + ``000#004...``). None when the TAG ends before 510.
    ``escaped_bytes``: the bytes rsyslog wrote as ``#ooo`` (with escaping
    off, after the NUL rule, only NUL)."""
    sp = line.find(b" ")
    word = line if sp < 0 else line[:sp]
    host = b""
    if sp >= 0 and word and _HOSTWORD.fullmatch(word) is not None:
        host, line = line[:sp + 1], line[sp + 1:]
    if not line or line[:1] in (b" ", b"{", b"["):
        return None
    if _tag_cut(line, escaped_bytes) is not None:
        return None
    escaped = escaped_bytes.sub(lambda m: b"#%03o" % m.group()[0], line)
    if len(escaped) <= _TAG_MAX:
        return None

    def decode(text: bytes) -> bytes:
        return _ESCAPE.sub(lambda m: bytes((int(m.group(1), 8),)), text)

    head = _SPLIT_ESCAPE.sub(b"", escaped[:32])
    return host + decode(head), decode(escaped[_TAG_MAX:])


class Detector:
    """Compiled catalogue. ``match()`` is safe to call from one thread at a time."""

    def __init__(self, signatures: Sequence[Signature], backend: str | None = None) -> None:
        self.signatures: tuple[Signature, ...] = tuple(signatures)
        self._exact: dict[bytes, list[_Piece]] = {}
        self._pieces: list[_Piece] = []
        self._exact_answers: dict[tuple[bytes, str | None], tuple[Match, ...]] = {}
        #: signature id -> number of LF-pieces its payload gives over TCP
        self.fragment_count: dict[str, int] = {}
        self._logged: dict[str, tuple[bytes, ...]] = {}
        self._cores: dict[str, tuple[bytes, ...]] = {}
        #: syslog-ng: signature id -> its TCP lines; line -> pieces
        self._sng_tcp: dict[str, tuple[bytes, ...]] = {}
        self._sng_exact: dict[bytes, list[_Piece]] = {}
        self._sng_answers: dict[tuple[bytes, str | None], tuple[Match, ...]] = {}
        #: pieces whose TAG ran into the 510-byte cut, with what the
        #: forwarding template leaves of them (``forward_cut``)
        self._forward: list[tuple[_Piece, bytes, bytes]] = []
        #: (ident, MSG) -> pieces, for ``_swallowed`` (built on first use)
        self._separator_index: dict[tuple[bytes, bytes], list[_Piece]] | None = None
        markers: list[tuple[bytes, int]] = []
        for si, sig in enumerate(self.signatures):
            if sig.match == "marker":
                if sig.payload:
                    text = bytes(sig.payload)
                    markers.append((text, si))
                    if b"\0" in text:
                        # Escaping off: the NUL rule dropped the control bytes
                        # after the payload's first NUL, which may come before
                        # the marker or inside it (rpc-grind's program number
                        # \x00\x01\x86\xa0 is logged \x00\x86\xa0).
                        for kept in {bytes(c for c in text if c == 0 or c >= 0x20), unescaped_nul_rule(text)}:
                            if kept != text and len(kept) >= _MIN_SUBSTRING and len(set(kept)) >= 3:
                                markers.append((kept, si))
                continue
            self._add_syslog_ng(si, sig)
            logged = _logged_lines(bytes(sig.payload), sig.transport)
            self.fragment_count[sig.id] = max((f for _, f, _ in logged), default=-1) + 1
            frags: dict[int, bytes] = {}
            for _t, f, line in logged:
                frags.setdefault(f, line)
            self._logged[sig.id] = tuple(frags[f] for f in sorted(frags))
            for transport, frag, line in logged:
                kept = unescaped_nul_rule(line)
                for got in {forward_cut(line), forward_cut(kept, _NUL) if kept != line else None}:
                    if got is not None and len(got[1].strip(_TRIM)) >= _MIN_GAPPED:
                        self._forward.append((_Piece(si, frag, "damaged", transport, line, distinctive(line),
                                                     trimmed=False), got[0].strip(_TRIM), got[1].strip(_TRIM)))
            self._cores[sig.id] = tuple(x.strip(b" \t") for x in self._logged[sig.id])
            for transport, frag, line in logged:
                for text, kind in self._variants(line, transport):
                    self._add(_Piece(si, frag, kind, transport, text, distinctive(text),
                                     trimmed=False))
                    for t in {text.strip(_TRIM), text.rstrip(_TRIM), text.lstrip(_TRIM)}:
                        if t and t != text:
                            # rsyslog keeps the CR (FIELD_GUIDE 1): a request
                            # line without it is what applications log when
                            # they quote one, so that reading needs context.
                            lost_cr = t.count(b"\r") < text.count(b"\r")
                            self._add(_Piece(si, frag, kind, transport, t,
                                             distinctive(t) and not lost_cr, trimmed=True))
        # Pieces with runs of spaces, by their text with each run one space:
        # parsers that split a line into fields at spaces and trim them
        # (Vector's syslog source) keep one space where the payload had
        # several (SharpTV's ``TVNM1   \rMNRD1``, ``DB2DAS      \x01``).
        self._squeezed: dict[bytes, list[_Piece]] = {}
        for p in self._pieces:
            if not p.trimmed and b"  " in p.text:
                key = _SPACE_RUN.sub(b" ", p.text).strip(_TRIM)
                if len(key) >= _MIN_GAPPED:
                    self._squeezed.setdefault(key, []).append(p)
        # Sorted keys for the truncation bisect.
        self._sorted = sorted(self._exact)
        self._rsorted = sorted(k[::-1] for k in self._exact)
        # Substring engine: markers, plus distinctive untrimmed pieces.
        subs: list[bytes] = []
        self._sub_info: list[tuple[str, Any]] = []
        for text, si in markers:
            subs.append(text)
            self._sub_info.append(("marker", si))
        for p in self._pieces:
            if p.distinctive and not p.trimmed and len(p.text) >= _MIN_SUBSTRING:
                subs.append(p.text)
                self._sub_info.append(("piece", p))
        self._markers = markers
        # (first occurrences: all _match_one and match_markers read)
        self._subs = LiteralSet(subs, backend, first_only=True)
        self.backend = self._subs.backend
        # MSG-only lines (match_msg): built on first use
        self._msg_index: dict[bytes, list[_Piece]] | None = None
        self._msg_cores: dict[str, tuple[bytes, ...]] = {}

    @staticmethod
    def _variants(line: bytes, transport: str) -> list[tuple[bytes, str]]:
        out = [(line, "exact")]
        for d in _damage(line, transport):
            out.append((d, "damaged"))
        # Escaping off: the NUL rule applies to what framing left of the
        # frame (octet counting ate LDAP's ``0\x84``, then the rule dropped
        # the control bytes after the first NUL).
        for text, _kind in list(out):
            kept = unescaped_nul_rule(text)
            if kept != text and kept:
                out.append((kept, "damaged"))
        for text, _kind in list(out):
            r = replaced(text)
            if r != text:
                out.append((r, "damaged"))
        return out

    def _add_syslog_ng(self, si: int, sig: Signature) -> None:
        payload = bytes(sig.payload)
        pieces: list[tuple[str, int, bytes]] = []
        if sig.transport in ("tcp", "any"):
            tcp = syslog_ng_tcp(payload)
            self._sng_tcp[sig.id] = tcp
            pieces += [("tcp", k, line) for k, line in enumerate(tcp)]
        if sig.transport in ("udp", "any"):
            pieces.append(("udp", 0, syslog_ng_udp(payload)))
        for transport, frag, line in pieces:
            if not line:
                continue
            lst = self._sng_exact.setdefault(line, [])
            if any(q.sig == si and q.transport == transport for q in lst):
                continue
            lst.append(_Piece(si, frag, "exact", transport, line, distinctive(line), trimmed=False))

    def syslog_ng_fragments(self) -> list[bytes]:
        """Literals one of which a syslog-ng file line holds when its payload
        is a distinctive piece of ``syslog_ng_pieces`` (the line holds the
        piece as received): the first 16 bytes of each of 6 bytes or more
        with 3 different bytes or more. ``explain`` adds them to the
        prefilter's for syslog-ng files (``GET / HTTP/1.0`` without the CR
        that the prefilter's own literals carry)."""
        out = set()
        for text, pieces in self._sng_exact.items():
            if len(text) >= 6 and len(set(text)) >= 3 and any(p.distinctive for p in pieces):
                out.add(text[:16])
        return sorted(out)

    def syslog_ng_cores(self, sig_id: str) -> tuple[bytes, ...]:
        """The lines syslog-ng logs for that signature's payload over TCP
        (``syslog_ng_tcp``), spaces and tabs stripped at both ends."""
        return tuple(x.strip(b" \t") for x in self._sng_tcp.get(sig_id, ()))

    def _match_syslog_ng(self, line: bytes, transport: str | None) -> list[Match]:
        cached = self._sng_answers.get((line, transport))
        if cached is not None:
            return list(cached)
        best: dict[int, Match] = {}
        for p in self._sng_exact.get(line, ()):
            if not self._ok_transport(p, transport):
                continue
            amb = not p.distinctive
            m = Match(self.signatures[p.sig], p.fragment, "exact", self._conf(p.sig, "exact", amb), amb)
            old = best.get(id(m.signature))
            if old is None or m.confidence > old.confidence:
                best[id(m.signature)] = m
        answer = self._finish(best) if best else []
        if len(self._sng_answers) < 65536:
            self._sng_answers[(line, transport)] = tuple(answer)
        return answer

    def _add(self, piece: _Piece) -> None:
        lst = self._exact.setdefault(piece.text, [])
        for q in lst:
            if q.sig == piece.sig and q.fragment == piece.fragment and q.transport == piece.transport:
                return
        lst.append(piece)
        self._pieces.append(piece)

    # -- public --------------------------------------------------------------

    def logged_pieces(self, sig_id: str) -> tuple[bytes, ...]:
        """The lines rsyslog logs for that signature's payload over TCP, in
        order (fragment k is element k); empty for markers and unknown ids."""
        return self._logged.get(sig_id, ())

    def logged_cores(self, sig_id: str) -> tuple[bytes, ...]:
        """``logged_pieces`` with spaces and tabs stripped from both ends (the
        file formats' HOSTNAME/TAG/MSG join adds or drops them)."""
        return self._cores.get(sig_id, ())

    def msg_cores(self, sig_id: str) -> tuple[bytes, ...]:
        """Per fragment of ``logged_pieces``, what rsyslog leaves of it in MSG
        (``rsyslog_msg``), spaces and tabs stripped from both ends."""
        got = self._msg_cores.get(sig_id)
        if got is None:
            got = self._msg_cores[sig_id] = tuple(rsyslog_msg(x).strip(b" \t") for x in self._logged.get(sig_id, ()))
        return got

    def match_msg(self, line: bytes, transport: str | None = None) -> list[Match]:
        """Matches for a line that is only rsyslog's MSG of the payload line
        (HOSTNAME and TAG not printed): the pieces whose MSG it is, spacing
        aside; failing that, what ``match`` finds in it (markers, binary
        pieces inside it). Nothing for an empty MSG."""
        core = line.strip(b" \t")
        if not core:
            return []
        index = self._msg_index
        if index is None:
            index = self._msg_index = {}
            for p in self._pieces:
                if not p.trimmed:
                    index.setdefault(rsyslog_msg(p.text).strip(b" \t"), []).append(p)
        hits = [p for p in index.get(core, ()) if self._ok_transport(p, transport)]
        if not hits:
            return self.match_best((line,), transport=transport)[1]
        return self._damaged(hits, core)

    def fragments(self) -> list[bytes]:
        """Raw byte fragments one of which survives intact in a record that
        holds a line this detector can match (the prefilter escapes them per
        dialect). Syslog parsers split a line into HOSTNAME, TAG and MSG at
        spaces, ``:`` and ``[`` (FIELD_GUIDE 3), so:

        * a token with a control, CR or 8-bit byte is rare in ordinary logs
          and a field boundary cannot cut it: every such token (its first 32
          bytes, which also survive the 510-byte TAG cut) is a fragment;
        * a plain-text piece gives its first 16 bytes (whole-line shapes:
          ``rawmsg``, a file line, JSON) and, when 10 bytes or more, the start
          of what follows its first two tokens (the MSG of split shapes).
          Bare tokens such as ``HTTP/1.1`` would hit every access log, so a
          plain-text probe line whose MSG part is that short is only found
          in whole-line shapes (documented limit);
        * the shortest prefix the engine accepts as ``truncated``;
        * markers whole.
        """
        out: set[bytes] = set()
        for text, _ in self._markers:
            out.add(text)
        for p in self._pieces:
            if p.trimmed:
                continue
            toks = [t for t in _SPLIT_TOKENS.split(p.text) if t]
            if not toks:
                continue
            rich = [t for t in toks if _has_binary(t) or b"\r" in t]
            if rich:
                for t in rich:
                    out.add(t[:32])
                    if (t.endswith(b"\r") and not _has_binary(t) and len(t) > _MIN_CHOMPED
                            and not _PLAIN_TOKEN.fullmatch(t[:-1])):
                        # Fluentd's in_tail/in_syslog ``chomp`` a line's final CR
                        # when rsyslog left it raw (escaping off): the token
                        # arrives without it. Not the protocol words
                        # (``HTTP/1.0``, ``OPTIONS`` would hit every access log).
                        out.add(t[:-1][:32])
            else:
                out.add(p.text[:_MIN_TRUNCATED_TEXT])
                msg = _MSG_PART.sub(b"", p.text, count=1).strip()
                if len(msg) >= 10:
                    out.add(msg[:16])
            n = _MIN_TRUNCATED if _has_binary(p.text) else _MIN_TRUNCATED_TEXT
            if len(p.text) > n:
                out.add(p.text[:n])
        return sorted(out)

    def match(self, line: bytes, *, alternatives: Iterable[bytes] = (),
              transport: str | None = None, lossy: bool = False, collector: str | None = None) -> list[Match]:
        """Matches for ``line``, best first; the first candidate (line, then
        each alternative) that gives any match wins. ``lossy``: the record is
        known to miss bytes inside the line (RFC 5424 output drops the TAG
        beyond APP-NAME), so a piece with one gap is also accepted."""
        return self.match_best((line, *alternatives), transport=transport, lossy=lossy, collector=collector)[1]

    def match_best(self, candidates: Iterable[bytes], *, transport: str | None = None,
                   lossy: bool = False, collector: str | None = None,
                   separator: bool = False) -> tuple[bytes, list[Match]]:
        """(candidate, its matches) for the first candidate with a
        distinctive match; exact/prefix/truncated readings before gapped ones
        (``lossy``), and syslog-ng's pieces before both for its lines
        (``collector``); ``separator``: the record comes from a parser whose
        ident stops at the first byte outside a class and whose separator
        ``[^:]*:`` then swallows the rest of the TAG (Fluent Bit's stock
        ``syslog-rfc3164``: ``A#000#000#000:`` read as ident ``A``), so a
        piece with such a stretch, up to its colon, lost matches too
        (``damaged``); failing that, the first candidate with ambiguous matches
        only, so correlation can still use it. ``(b"", [])`` when nothing
        matches."""
        cands = [c for c in candidates if c]
        fallback: tuple[bytes, list[Match]] | None = None
        passes = [self._match_one] + ([self._gapped] if lossy else []) + [self._squeezed_match]
        if separator and not lossy:
            passes.append(self._swallowed)
        if collector == "syslog-ng":
            # what syslog-ng leaves of a payload first (module docstring)
            passes.insert(0, self._match_syslog_ng)
        for fn in passes:
            for cand in cands:
                got = fn(cand, transport)
                if not got:
                    continue
                for m in got:
                    if not m.ambiguous:
                        return cand, got
                if fallback is None:
                    fallback = (cand, got)
        return fallback if fallback is not None else (b"", [])

    def _damaged(self, hits: list[_Piece], text: bytes) -> list[Match]:
        """Pieces ``text`` matched with bytes lost or changed -> a ``damaged``
        match per signature, ambiguous when ``text`` is not distinctive or
        leaves several probes whose payloads differ."""
        probes = {self.signatures[p.sig].probe for p in hits}
        amb = not distinctive(text) or (len(probes) > 1 and self._payloads(hits) > 1)
        best: dict[int, Match] = {}
        for p in hits:
            if p.sig not in best:
                best[p.sig] = Match(self.signatures[p.sig], p.fragment, "damaged",
                                    self._conf(p.sig, "damaged", amb), amb)
        return self._finish({id(m.signature): m for m in best.values()})

    def _payloads(self, pieces: Iterable[_Piece]) -> int:
        """How many payloads these pieces come from: one means no doubt
        about the bytes, whatever names the catalogue gives them (the
        variants of one payload, trimmed or damaged, differ in text)."""
        return len({self.signatures[p.sig].payload for p in pieces})

    def _squeezed_match(self, line: bytes, transport: str | None) -> list[Match]:
        """A piece whose runs of spaces the line has one space of each
        (``damaged``): what a parser that trims its fields leaves."""
        if not self._squeezed or b" " not in line:
            return []
        hits = [p for p in self._squeezed.get(_SPACE_RUN.sub(b" ", line).strip(_TRIM), ())
                if self._ok_transport(p, transport)]
        if not hits:
            return []
        return self._damaged(hits, line)

    def match_markers(self, data: bytes) -> list[Match]:
        """Marker signatures only (a user agent, a tool's name) anywhere in
        ``data``: for record fields other than the payload line, such as the
        ``agent`` field of a parsed access log."""
        best: dict[int, Match] = {}
        for _start, pid in self._subs.find(data):
            what, si = self._sub_info[pid]
            if what == "marker" and si not in best:
                best[si] = Match(self.signatures[si], 0, "marker", self._conf(si, "marker", False), False)
        return self._finish({id(m.signature): m for m in best.values()}) if best else []

    def _swallowed(self, line: bytes, transport: str | None) -> list[Match]:
        """Pieces ``IDENT + X + MSG`` for a line ``IDENT [sep] MSG``, ``X``
        what a syslog parser's separator ``[^:]*:`` took after an ident that
        stopped at a byte outside ``[A-Za-z0-9_/.-]`` (``damaged``). One
        lookup: the pieces are indexed by (ident, MSG) once."""
        index = self._separator_index
        if index is None:
            index = self._separator_index = {}
            for p in self._pieces:
                if p.trimmed:
                    continue
                ident = _IDENT.match(p.text).group()
                colon = p.text.find(b":", len(ident))
                if colon <= len(ident):
                    continue  # nothing but the colon between: no bytes lost
                msg = p.text[colon + 1:].lstrip(b": ").rstrip(_TRIM)
                if ident or msg:
                    index.setdefault((ident, msg), []).append(p)
        ident = _IDENT.match(line).group()
        msg = line[len(ident):].lstrip(b": ").rstrip(_TRIM)
        hits = [p for p in index.get((ident, msg), ()) if self._ok_transport(p, transport)]
        if not hits:
            return []
        probes = {self.signatures[p.sig].probe for p in hits}
        # (a few bytes left, ``id`` + ``1`` of niagara-fox's ``id=i:1``, say
        # nothing alone: the line before them from the same sender decides)
        amb = (not distinctive(line) or len(ident) + len(msg) < _MIN_GAPPED
               or (len(probes) > 1 and self._payloads(hits) > 1))
        best: dict[int, Match] = {}
        for p in hits:
            if p.sig not in best:
                best[p.sig] = Match(self.signatures[p.sig], p.fragment, "damaged",
                                    self._conf(p.sig, "damaged", amb, 0.8 + 0.2 * min(1.0, len(line) / len(p.text))),
                                    amb)
        return self._finish({id(m.signature): m for m in best.values()})

    def _gapped(self, line: bytes, transport: str | None) -> list[Match]:
        """Pieces ``A + X + B`` for a line ``A + B``: the bytes ``X`` were lost
        in one stretch (FIELD_GUIDE 3: RFC 5424 output prints APP-NAME, not
        the rest of the TAG). ``A`` may be empty (the whole TAG lost); ``B``
        must be long enough to mean something."""
        if len(line.strip(_TRIM)) < _MIN_GAPPED:
            return []
        hits: list[tuple[_Piece, float]] = []
        seen: set[bytes] = set()
        # The forwarding template's cut after the 510-byte one: the TAG's
        # first 32 bytes, then MSG; rebuild joins the two with a separator
        # of its own (a space, ``: ``) or none, and may drop a split escape.
        core = line.strip(_TRIM)
        for p, head, tail in self._forward:
            if core.endswith(tail) and self._ok_transport(p, transport):
                kept = core[:len(core) - len(tail)].rstrip(b" :")
                if head.startswith(kept):
                    hits.append((p, len(core) / len(p.text)))

        def consider(key: bytes) -> None:
            if key in seen or len(key) <= len(line):
                return
            seen.add(key)
            cp = len(commonprefix([key, line]))
            cs = len(commonprefix([key[::-1], line[::-1]]))
            if cp + cs < len(line):
                return
            # Place the gap as late as the kept tail allows (the shortest B),
            # then check it is a TAG remainder: no space inside, at most 510
            # bytes, ending where the TAG ends (before a space, or with ':').
            # When the whole line is a suffix, the gap may also start the
            # piece (A empty: the line's first bytes only happen to be the
            # piece's too, ``\x00`` after a TAG that began with one).
            hi, glen = min(cp, len(line)), len(key) - len(line)
            tries = [hi, 0 if cs >= len(line) else -1]
            # A gap that ends with the TAG's colon (a separator ``[^:]*:``
            # took it) may sit earlier, where the bytes before and after it
            # repeat (``#000`` runs): those places too, a few.
            for a in range(hi - 1, max(0, len(line) - cs) - 1, -1):
                if key[a + glen - 1:a + glen] == b":" or key[a + glen - 2:a + glen] == b": ":
                    tries.append(a)
                    if len(tries) >= _MAX_GAP_PLACES:
                        break
            for a in dict.fromkeys(tries):
                if a >= 0 and self._tag_gap(key, line, a, len(line) - a, cs):
                    break
            else:
                return
            for p in self._exact[key]:
                if self._ok_transport(p, transport) and not p.trimmed:
                    hits.append((p, len(line) / len(key)))

        keys = self._sorted
        # The gap starts where APP-NAME ends, which can be inside the first
        # _GAP_PREFIX bytes (APP-NAME ``To`` of ``To: <sip:...>``, ``0`` of
        # SNMP's ``0:``): shorter heads too, each walk bounded.
        for hl in range(min(_GAP_PREFIX, len(line)), 0, -1):
            head = line[:hl]
            i = bisect_left(keys, head)
            n = 0
            while i < len(keys) and n < _MAX_TRUNC_CANDIDATES and keys[i].startswith(head):
                consider(keys[i])
                i += 1
                n += 1
        # A empty: the line is what followed the lost TAG, a suffix of a piece.
        rkeys = self._rsorted
        tail = line[::-1]
        i = bisect_left(rkeys, tail)
        n = 0
        while i < len(rkeys) and n < _MAX_TRUNC_CANDIDATES and rkeys[i].startswith(tail):
            consider(rkeys[i][::-1])
            i += 1
            n += 1
        if not hits:
            return []
        probes = {self.signatures[p.sig].probe for p, _ in hits}
        # Several probes, but all from the same bytes (an -sV probe and the
        # -sU payload of its port): no doubt about the line; the catalogue's
        # naming policy (Signature.rank) picks the name.
        amb = not distinctive(line) or (len(probes) > 1 and self._payloads(p for p, _ in hits) > 1)
        best: dict[int, Match] = {}
        for p, ratio in hits:
            m = Match(self.signatures[p.sig], p.fragment, "damaged",
                      self._conf(p.sig, "damaged", amb, 0.8 + 0.2 * ratio), amb)
            old = best.get(p.sig)
            if old is None or m.confidence > old.confidence:
                best[p.sig] = m
        return sorted(best.values(), key=lambda m: (-m.confidence, m.ambiguous, m.signature.rank))

    # -- internals -------------------------------------------------------------

    @staticmethod
    def _tag_gap(key: bytes, line: bytes, a: int, b: int, cs: int) -> bool:
        """Is ``key[a:len(key) - b]`` a TAG remainder lost in one stretch
        (``line`` is ``key[:a] + key[len(key) - b:]``)?"""
        # A or B must be long enough to mean something: ``Max-Forwards``
        # + `` 70\r`` (the ':' of the TAG lost) is as telling as a long B.
        if b < 1 or (a < _MIN_GAPPED and cs < _MIN_GAPPED):
            return False
        gap = key[a:len(key) - b]
        if gap and not gap.strip(b" ") and line[a - 1:a] == b" ":
            # A run of spaces the reading has one of: Fluentd's syslog
            # parser ends ident at a space and drops the spaces after it
            # (`` *``), so ``DB2DAS      \x01`` arrives as ident and
            # message with the run gone.
            return True
        # No space inside a TAG; Fluentd's separator ``[^:]*:`` may hold
        # spaces but then ends with the colon it stops at.
        # ``: `` at the end: the TAG's colon and the MSG's first space,
        # which remove.msgFirstSpace drops (FIELD_GUIDE 4).
        # A run of spaces after the TAG remainder: Fluentd's `` *`` after
        # its separator dropped it too (ibm-mqseries' 38 spaces).
        tag = gap.rstrip(b" ") if line[a:a + 1] == b" " else gap
        if not tag or (b" " in tag.removesuffix(b": ") and not tag.endswith(b":")) or len(tag) > 510:
            return False
        rest = key[len(key) - b:]
        return rest[:1] in (b" ", b"") or gap.endswith((b":", b": "))

    def _conf(self, si: int, kind: str, ambiguous: bool, scale: float = 1.0) -> float:
        base = self.signatures[si].confidence
        if base is None:
            base = DEFAULT_CONFIDENCE
        c = base * _KIND_FACTOR[kind] * scale
        if ambiguous:
            c *= _AMBIGUOUS_FACTOR
        return round(min(c, 1.0), 4)

    def _ok_transport(self, piece: _Piece, transport: str | None) -> bool:
        return transport is None or piece.transport == transport

    def _match_one(self, line: bytes, transport: str | None) -> list[Match]:
        best: dict[int, Match] = {}

        def offer(m: Match) -> None:
            key = id(m.signature)
            old = best.get(key)
            if old is None or (m.confidence, not m.ambiguous) > (old.confidence, not old.ambiguous):
                best[key] = m

        exact = self._exact.get(line)
        if exact:
            # The answer for a catalogue piece never changes: computed once.
            # (Bounded: the keys are the catalogue's own pieces.)
            cached = self._exact_answers.get((line, transport))
            if cached is not None:
                return list(cached)
            for p in exact:
                if not self._ok_transport(p, transport):
                    continue
                amb = not p.distinctive
                scale = 0.95 if p.trimmed else 1.0
                offer(Match(self.signatures[p.sig], p.fragment, p.kind,
                            self._conf(p.sig, p.kind, amb, scale), amb))
            if best:
                answer = self._finish(best)
                self._exact_answers[(line, transport)] = tuple(answer)
                return answer

        # Truncated: the line is a proper prefix of pieces.
        core = len(line.strip(_TRIM))
        if core >= _MIN_TRUNCATED_TEXT or (core >= _MIN_TRUNCATED and _has_binary(line)):
            keys = self._sorted
            i = bisect_left(keys, line)
            n = 0
            hits: list[tuple[_Piece, float]] = []
            while i < len(keys) and n < _MAX_TRUNC_CANDIDATES and keys[i].startswith(line):
                key = keys[i]
                if len(key) > len(line):
                    for p in self._exact[key]:
                        if self._ok_transport(p, transport):
                            hits.append((p, len(line) / len(key)))
                i += 1
                n += 1
            if hits:
                probes = {self.signatures[p.sig].probe for p, _ in hits}
                # Several probes, but all from the same bytes (an -sV probe and the
                # -sU payload of its port): no doubt about the line; the catalogue's
                # naming policy (Signature.rank) picks the name.
                amb = not distinctive(line) or (len(probes) > 1 and self._payloads(p for p, _ in hits) > 1)
                for p, ratio in hits:
                    offer(Match(self.signatures[p.sig], p.fragment, "truncated",
                                self._conf(p.sig, "truncated", amb, 0.8 + 0.2 * ratio), amb))

        for start, pid in self._subs.find(line):
            what, info = self._sub_info[pid]
            if what == "marker":
                offer(Match(self.signatures[info], 0, "marker", self._conf(info, "marker", False), False))
                continue
            p = info
            if not self._ok_transport(p, transport):
                continue
            if start == 0:
                if len(p.text) < len(line):
                    offer(Match(self.signatures[p.sig], p.fragment, "prefix",
                                self._conf(p.sig, "prefix", False), False))
            elif (_has_binary(p.text) and len(p.text) >= 8 and not _mostly_one_byte(p.text)
                    and len(set(p.text)) >= 3):
                # Binary bytes inside a longer line: something in front of them
                # was damaged or mis-parsed. Text pieces quoted inside a line
                # (an app logging a request line) are not evidence, nor is a
                # short run of mostly one byte (IAX2's nine NULs inside another
                # probe's binary), nor two byte values (iax2-version's ``\x80``
                # and nine NULs, as the NUL rule leaves it, is inside many a
                # binary payload).
                offer(Match(self.signatures[p.sig], p.fragment, "damaged",
                            self._conf(p.sig, "damaged", False), False))
        return self._finish(best)

    def _finish(self, best: dict[int, Match]) -> list[Match]:
        out = sorted(best.values(), key=lambda m: (-m.confidence, m.ambiguous, m.signature.rank))
        # The same bytes claimed by different probes: the line alone cannot tell
        # them apart; keep every candidate but say so in the confidence.
        sure = [m for m in out if not m.ambiguous]
        if (len({(m.signature.probe, m.signature.scanner) for m in sure}) > 1
                and len({m.signature.payload for m in sure}) > 1):
            # (one payload under two names, an -sV probe and the -sU payload
            # of its port: no doubt about the line, Signature.rank names it)
            out = [Match(m.signature, m.fragment, m.kind, round(m.confidence * 0.85, 4), m.ambiguous)
                   for m in out]
        return out
