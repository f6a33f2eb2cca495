"""Rebuild the line a sender sent from one log record.

Theory of operation
-------------------
* A record reaches us in one of a few shapes; each keeps the payload line in
  different fields and loses different bytes (FIELD_GUIDE 3, FORWARD_NOTES 8).
  Auto-detection tries them in this order (first fit wins):

  ``rsyslog-rawmsg``  ``rawmsg`` is the whole line after sanitising and before
                      parsing: exact.
  ``rsyslog-json``    ``hostname``/``syslogtag``/``msg`` (or ``app-name`` from
                      RFC 5424 output, lossy).
  ``fluentd-syslog``  ``host``/``ident``[/``pid``]/``message`` from Fluentd's
                      syslog parser: the separator between ident and message
                      (spaces, a colon, ``[pid]:``) is gone. With ``msgid``
                      as well (Fluent Bit's stock ``syslog-rfc5424`` parser
                      behind an rsyslog RFC 5424 relay) ``ident`` is APP-NAME
                      and ``message`` rsyslog's MSG: read as rsyslog's own
                      RFC 5424 output (lossy: the TAG beyond APP-NAME is gone).
  ``vector-syslog``   ``hostname``/``appname``/``procid``/``message``/``source_ip``
                      (Vector's ``syslog`` source; ``appname`` may be absent).
  ``rsyslog-msg``     a ``fromhost`` file line (``%FROMHOST% %msg%``): the
                      sender and rsyslog's MSG, HOSTNAME and TAG not printed.
                      The line is MSG as it is (lossy: its head is gone);
                      ``detect.Detector.match_msg`` matches it against what
                      rsyslog leaves in MSG of each probe line.
  ``file-line``       ``message``/``log`` holds a whole rsyslog file line
                      (in_tail ``none`` parser, Vector ``file``): parsed with
                      ``parse_syslog_line`` and rebuilt from that record.
  ``syslog-ng``       a line of a syslog-ng file (``_format`` ``syslog-ng`` or
                      ``syslog-ng-iso`` from ``parse_syslog_line``): ``msg`` is
                      the payload as received, nothing escaped, ``hostname``
                      the sender; a syslog-ng complaint about a bad PRI
                      (``syslog-ng[PID]: Error processing log message: X``)
                      has the payload ``X``. Never unescaped (docs/collectors.md).
  ``message``         any other ``message``/``msg``/``log``/``MESSAGE`` field.

* The HOSTNAME rule (FIELD_GUIDE 3.3): the HOSTNAME is either the sender or
  the payload's first word. It is the sender when it equals a source field;
  it is certainly the payload's when the rest of the line starts with a word
  rsyslog would have taken as HOSTNAME itself; otherwise it is a guess (IP
  addresses, ``localhost`` and dotted names are senders; words rsyslog's
  senders never have, such as ``GET`` or ``SSH-2.0-...``, are payload), and
  the other reading is offered in ``alternatives``.
* ``source`` is the first sender field present; failing that (text log
  files, Fluentd in_tail records) the HOSTNAME, when the primary reading
  takes it as the sender rather than as the payload's first word.
* The sender fields matter to the reconstruction only through "is this
  HOSTNAME one of them?" and "are there any?". ``Senders`` holds them and
  notes each such question with its answer (``asked``), so a caller can
  reuse a reconstruction for another record with the same payload fields
  whose senders answer alike (``detect.Enricher``'s memo); ``fields_read``
  names every other field rebuild reads (``READ_FIELDS``, or the configured
  ``fields``).
* The escaped text is unescaped once, with the dialect chosen for the primary
  line, and every alternative is decoded with that same dialect: one line,
  one dialect.
* ``lossy`` is set where bytes are known to be missing: RFC 5424 output (TAG
  beyond APP-NAME), a TAG cut at 510 bytes (the split point's space is a
  guess), a Fluentd ident of exactly 32 bytes with nothing after it (rsyslog's
  forwarding template cuts the TAG there) and U+FFFD in the text (a lossy UTF-8 hop replaced bytes). A leading
  ``1 `` that rsyslog dropped (read as a version field) is put back where the
  record proves it (empty TAG before ordinary text; empty APP-NAME). Bytes
  eaten by octet-counted framing cannot be seen in the record itself: see
  ``parse_framing_error`` for rsyslog's own report of them.
"""

from __future__ import annotations

import functools
import ipaddress
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ._escape import DEFAULT_DIALECTS, to_bytes, unescape, unescape_as
from ._syslog import SYSLOG_NG_FORMATS, TAG_MAX, parse_syslog_line, strip_time

__all__ = ["Rebuilt", "SHAPES", "rebuild", "SOURCE_FIELDS", "PAYLOAD_FIELDS", "READ_FIELDS",
           "Senders", "senders", "sender_fields", "answers_alike", "rebuild_with", "fields_read", "str_keys",
           "memo_key", "ABSENT", "SENDER", "sender_hostname"]

#: rsyslog's RSYSLOG_ForwardFormat prints ``%syslogtag:1:32%``.
FORWARD_TAG_MAX = 32

#: Evidence below this offers the other reading (literal vs decoded) too.
UNSURE = 0.5

SHAPES = ("rsyslog-rawmsg", "rsyslog-json", "fluentd-syslog", "vector-syslog", "rsyslog-msg", "file-line",
          "syslog-ng", "message")

#: Fields that hold the sender's address, most specific first.
SOURCE_FIELDS = ("fromhost-ip", "source_ip", "source_address", "fromhost_ip", "fromhost",
                 "source_host", "source_hostname", "remote_addr", "client_ip", "src_ip", "peer")
#: Fields that hold a plain payload line, in order.
PAYLOAD_FIELDS = ("message", "msg", "log", "MESSAGE", "rawmsg")
#: Every field ``rebuild`` reads (value or presence) when no ``fields`` are
#: configured, sender fields aside: the shapes' fields below. A memo keyed on
#: them (``fields_read``) is exact; tests/decode checks the list against the
#: fields rebuild actually touches.
READ_FIELDS = ("rawmsg", "syslogtag", "hostname", "app-name", "msg", "_format", "_spacing", "ident",
               "host", "message", "pid", "msgid", "appname", "procid", "source_ip", "log", "MESSAGE",
               "_continuation")


@dataclass(frozen=True, slots=True)
class Rebuilt:
    """One record's payload line.

    line: the best reconstruction, unescaped; escaped: the same before
    unescaping; alternatives: other plausible readings (HOSTNAME word
    with/without, spacing, literal vs decoded), unescaped, best first;
    source: the sender address from a source field, if any; shape: one of
    ``SHAPES``; lossy: bytes are known to be missing; dialect, escapes,
    evidence: from ``unescape`` of ``escaped``.
    """

    line: bytes
    escaped: bytes
    alternatives: tuple[bytes, ...]
    source: str | None
    shape: str
    lossy: bool
    dialect: str | None
    escapes: int
    evidence: float


# ------------------------------------------------------------ HOSTNAME rule ---

_HOSTWORD = re.compile(rb"[A-Za-z0-9._-]*[A-Za-z0-9]")
_DNS_NAME = re.compile(rb"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9-]*")
_PROTO_WORD = re.compile(rb"[A-Z]+|[A-Z][A-Za-z0-9_]*-[0-9][0-9.]*-.*|RFB|[A-Z]+/[0-9.]+")


def _takes_hostname(text: bytes) -> bool:
    """Would pmrfc3164 take the first word of ``text`` as HOSTNAME?"""
    sp = text.find(b" ")
    word = text if sp < 0 else text[:sp]
    return bool(word) and _HOSTWORD.fullmatch(word) is not None


_IP_SHAPE = re.compile(rb"[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(?:%\S+)?")


@functools.lru_cache(maxsize=4096)
def _is_ip(word: bytes) -> bool:
    # Host names repeat from line to line: cached, and the cheap shape test
    # spares ipaddress's exception path for ordinary words.
    if _IP_SHAPE.fullmatch(word) is None:
        return False
    try:
        ipaddress.ip_address(word.decode("ascii"))
        return True
    except (ValueError, UnicodeDecodeError):
        return False


def _looks_like_sender(host: bytes) -> bool:
    if _is_ip(host) or host.lower() == b"localhost":
        return True
    if _PROTO_WORD.fullmatch(host):
        return False
    # dotted DNS names and plain lower-case/mixed machine names
    return _DNS_NAME.fullmatch(host) is not None or not host.isupper()


def _host_is_sender(host: bytes, rest: bytes, sources: Senders,
                    exact: bool = True) -> tuple[bool, bool]:
    """(host is the sender, certain). ``exact``: ``rest`` is rsyslog's
    TAG+MSG as parsed (not rebuilt from a lossy shape), so the HOSTNAME rule
    can be replayed on it."""
    if not host:
        return True, True
    if host in sources:
        return True, True
    if _HOSTWORD.fullmatch(host) is None:
        return True, True  # e.g. an IPv6 sender: never a payload word
    if _is_ip(host):
        # DNS off (the usual server setting): HOSTNAME is the sender's IP.
        # A payload starting with a bare IPv4 address is kept as alternative.
        return True, False
    if exact and rest and not rest.startswith(b"1 ") and _takes_hostname(rest):
        return False, True  # the sender's line would have lost this word to HOSTNAME
    if not rest:
        # TAG and MSG empty: rsyslog saw a line made only of hostname
        # characters, or an empty message (a lone NUL) from the sender.
        return (True, False) if (_is_ip(host) or host.lower() == b"localhost") else (False, False)
    if sources and host.lower() != b"localhost":
        # A known sender that differs from HOSTNAME: the word is the payload's,
        # unless it is a dotted DNS name (rsyslog with DNS lookups on).
        return _DNS_NAME.fullmatch(host) is not None, False
    return _looks_like_sender(host), False


_BINARY_TAG = re.compile(rb"[\x80-\xff]|#0[0-3][0-7]|\\")


def _template_space(tag: bytes, msg: bytes, host: bytes | None, rest: bytes,
                    sources: Senders) -> bool:
    """After a TAG ending in ':' the file templates print a space when MSG
    does not start with one, so 'x: y' may stand for 'x:y'. Guess which:
    binary right after the space ('0: #002#001', ': #000#000') or a probe
    line (HOSTNAME is the payload's word: 'OPTIONS sip: nm') -> the template's;
    text after a binary TAG ('...Cookie: mstshash=') or an application's
    'app: text' -> the payload's."""
    after = msg[1:2]
    if after and (after[0] >= 0x80 or _BINARY_TAG.match(msg, 1)):
        return True
    if host and not _host_is_sender(host, rest, sources)[0]:
        return True
    return bool(_BINARY_TAG.search(tag)) and not after.isalnum()


def _join_host(host: bytes, rest: bytes) -> bytes:
    return host + b" " + rest if rest else host


# ------------------------------------------------------------- candidates ---

class _Cand:
    """Escaped text of the primary reconstruction and its alternatives."""

    __slots__ = ("primary", "alts", "lossy", "source", "host_source", "raw")

    def __init__(self, primary: bytes, alts: list[bytes] | None = None, lossy: bool = False):
        self.primary = primary
        self.alts = list(alts or ())
        self.lossy = lossy
        self.source: str | None = None
        #: the text is as received: nothing to unescape (syslog-ng)
        self.raw = False
        #: the HOSTNAME, when the primary reading takes it as the sender
        self.host_source: bytes | None = None

    def add(self, alt: bytes) -> None:
        self.alts.append(alt)


def _with_host(cand: _Cand, host: bytes | None, rest_alts: list[bytes], rest: bytes,
               sources: Senders, exact: bool = True) -> None:
    """Apply the HOSTNAME rule to a reconstruction of TAG+MSG."""
    if host is None:
        return
    sender, certain = _host_is_sender(host, rest, sources, exact)
    if sender:
        cand.host_source = host
        if not certain:
            cand.add(_join_host(host, rest))
            for a in rest_alts:
                cand.add(_join_host(host, a))
    else:
        cand.primary = _join_host(host, rest)
        cand.alts = [_join_host(host, a) for a in rest_alts]
        if not certain:
            cand.add(rest)
            cand.alts.extend(rest_alts)


def _tag_msg(tag: bytes, msg: bytes, spacing: str, lossy: bool) -> tuple[bytes, list[bytes], bool]:
    """(TAG+MSG, alternatives, lossy) with the printed-spacing doubts resolved."""
    alts: list[bytes] = []
    rest = tag + msg
    if spacing == "colon":
        alts.append(tag + msg[1:])  # 'sip:nm' printed as 'sip: nm'
    elif spacing == "empty-tag":
        alts.append(msg[1:])
        alts.append(b"1 " + msg[1:])  # '1 ' read as a version field and dropped
    elif spacing == "lead":
        alts.append(b" " + msg)
    elif spacing == "cut":
        alts.append(tag + b" " + msg)
        lossy = True
    if not tag and msg and msg[:1] not in (b" ", b"{", b"[", b"<"):
        # An empty TAG is only printed before ' ', '{', '[' or an invalid PRI;
        # anything else lost a leading '1 ' (FIELD_GUIDE 3.4).
        rest = b"1 " + msg
        alts.append(msg)
    if len(tag) >= TAG_MAX:
        lossy = True
    return rest, alts, lossy


def _from_rsyslog(rec: Mapping[str, Any], sources: Senders) -> _Cand:
    host = to_bytes(rec.get("hostname"))
    msg = to_bytes(rec.get("msg")) or b""
    spacing = _str(rec.get("_spacing"))
    if "syslogtag" in rec:
        tag = to_bytes(rec.get("syslogtag")) or b""
        if tag == b"-":
            colon = _colon_tag(host, msg, sources, _str(rec.get("_format")) in _FILE_FORMATS)
            if colon is not None:
                return colon
        if (host and tag == host and _is_ip(host) and (msg[:1] == b" " or not msg)
                and _str(rec.get("_format")) in _FILE_FORMATS):
            # A central server's template printed %FROMHOST-IP% before the
            # HOSTNAME (``127.0.0.1 127.0.0.1 #002``): the address again is
            # the HOSTNAME, what follows it the line (``127.0.0.1 127.0.0.1 ``:
            # an empty message, a NUL-only frame; or a line that was only
            # the address, offered too).
            cand = _Cand(msg[1:], [msg] if msg[1:] else [] if msg else [host], False)
            cand.host_source = host
            return cand
        rest, alts, lossy = _tag_msg(tag, msg, spacing, False)
        if spacing == "colon" and alts and _template_space(tag, msg, host, rest, sources):
            rest, alts[0] = alts[0], rest
        cand = _Cand(rest, alts, lossy)
    else:
        # RFC 5424 output: only APP-NAME (programname) of the TAG survives.
        app = to_bytes(rec.get("app-name")) or b""
        if app == b"-" and msg.startswith(b"\x00"):
            # force.tagEndingByColon: TAG '-', the whole line in MSG after
            # rsyslog's stray NUL, HOSTNAME the sender (see _colon_tag).
            cand = _Cand(msg[1:], [], True)
            cand.host_source = host
            return cand
        if app == b"":
            # rsyslog leaves APP-NAME empty (not '-') after dropping a '1 '.
            rest = b"1 " + msg
            cand = _Cand(rest, [msg], True)
        else:
            app = b"" if app == b"-" else app
            rest = app + msg
            cand = _Cand(rest, [app] if app and msg else [], True)
        alts = list(cand.alts)
        _with_host(cand, host, alts, rest, sources, exact=False)
        return cand
    _with_host(cand, host, alts, rest, sources)
    return cand


def _colon_tag(host: bytes | None, msg: bytes, sources: Senders,
               printed: bool) -> _Cand | None:
    """A TAG of '-': pmrfc3164 with force.tagEndingByColon (FIELD_GUIDE 4), or
    a payload that starts with '- ' under the default parser. None: the latter.

    With force.tagEndingByColon the whole rest of the line is MSG, without its
    first space (remove.msgFirstSpace); rsyslog 8.2302 starts that MSG with a
    raw NUL when HOSTNAME is the sender (observed; Fluentd passes it on). A
    default-parser MSG after a TAG '-' starts with a space or is empty."""
    body = msg[1:] if printed and msg.startswith(b" ") else msg
    if body.startswith(b"\x00"):
        cand = _Cand(body[1:])
        cand.host_source = host  # the NUL says HOSTNAME is the sender
        return cand
    if printed:
        # 'HOST - rest' reads either way; a sender HOSTNAME would have had
        # the NUL under force.tagEndingByColon, so then it is the default.
        if not body or host is None or host in sources or _is_ip(host) or host.lower() == b"localhost":
            return None
    elif not msg or msg.startswith(b" "):
        return None
    cand = _Cand(body, [b"-" + msg] if printed else [])
    if host is not None:
        _colon_host(cand, host, body, sources)
    return cand


def _colon_host(cand: _Cand, host: bytes, body: bytes, sources: Senders) -> None:
    """HOSTNAME rule for force.tagEndingByColon records (TAG '-')."""
    if body.startswith(b"\x00"):
        cand.primary = body[1:]
        cand.host_source = host
        return
    if host in sources or _is_ip(host):
        cand.host_source = host
        return
    extra = cand.alts
    if body == host[-1:]:
        # rsyslog 8.2302 leaves the line's last byte in MSG when the whole line
        # was the HOSTNAME ('stats' -> host 'stats', msg 's').
        cand.primary, cand.alts = host, [_join_host(host, body), body]
    else:
        cand.primary, cand.alts = _join_host(host, body), [body]
    cand.alts += [_join_host(host, a) for a in extra] + extra


#: The start of an escape at the end of a cut TAG: rsyslog ``#ooo`` (or
#: another prefix, ``\ooo``) and C-style ``\xHH``.
_PARTIAL_ESCAPE = re.compile(rb"(?:[#\\][0-3]?[0-7]?|\\x[0-9A-Fa-f]?)$")


def _from_fluentd(rec: Mapping[str, Any], sources: Senders) -> _Cand:
    """Fluentd's RFC 3164 parser: ``host ident[pid]<anything up to ':'>: *message``
    (FORWARD_NOTES 8). The separator is gone, so the common ones are offered."""
    host = to_bytes(rec.get("host"))
    ident = to_bytes(rec.get("ident")) or b""
    msg = to_bytes(rec.get("message")) or b""
    pid = to_bytes(rec.get("pid"))
    cut = len(ident) == FORWARD_TAG_MAX
    if cut:
        # The cut falls in the escaped text: an escape it split (``#0`` of
        # ``#000``, ``\x1`` of ``\x1B``) is no byte of the payload.
        ident = _PARTIAL_ESCAPE.sub(b"", ident)
    elif not pid and msg:
        # Fluent Bit's stock ident pattern stops at the first byte outside
        # ``[a-zA-Z0-9_/.-]``, so the rest of a cut TAG starts message.
        head, sp, tail = msg.partition(b" ")
        if _tag_cut(ident + head):
            cut = True
            msg = _PARTIAL_ESCAPE.sub(b"", head) + (sp + tail if tail else b"")
    if ident == b"-":
        cand = _Cand(msg)
        if host is not None:
            _colon_host(cand, host, msg, sources)
        return cand
    # A trailing space with no other space in MSG is the file template's
    # (rsyslog printed an empty MSG after a space-less TAG); keep both.
    msgs = [msg[:-1], msg] if msg.endswith(b" ") and b" " not in msg[:-1] else [msg]
    readings: list[bytes] = []
    for m in msgs:
        if pid:
            readings.append(ident + b"[" + pid + b"]: " + m)
        elif not m:
            readings += [ident, ident + b":"]
        elif not ident:
            readings += [m, b" " + m]
        elif m.startswith(b"["):
            # ident stops at '[' and a non-numeric '[...' stays in message
            readings += [ident + m, ident + b" " + m]
        else:
            readings += [ident + b" " + m, ident + b": " + m, ident + b":" + m, ident + m]
    if len(ident) >= TAG_MAX and msg and not pid:
        # pmrfc3164 cut the TAG at 510 bytes (FIELD_GUIDE 3.4) and the file
        # template printed a space after it: the payload goes on in message,
        # with no separator of its own (``#`` + ``000`` is one escape).
        readings.insert(0, ident + msg)
    rest, alts = readings[0], readings[1:]
    # rsyslog's forwarding template cuts the TAG at 32 bytes (FORWARD_NOTES 8):
    # an ident of exactly that length may be the cut front of a longer line.
    # The separator ``[^:]*:`` can also swallow payload bytes up to the first
    # colon (oracle-tns: `` \x00:`` after a binary ident; NotesRPC's leading
    # ':' with an empty ident): for such lines bytes may be missing. A plain
    # ident (``EventLog``) had its ordinary ': ' separator: not marked, so
    # benign lines do not pay for the gapped search.
    swallowed = bool(msg) and (not ident or bool(_BINARY_TAG.search(ident)))
    cand = _Cand(rest, alts, lossy=cut or swallowed or len(ident) >= TAG_MAX)
    # ident's separator is gone, so the HOSTNAME rule cannot be replayed.
    _with_host(cand, host, alts, rest, sources, exact=False)
    return cand


#: syslog-ng's own message in place of one whose PRI it could not parse
#: (a payload starting with ``<`` and no number): the payload follows.
_SNG_BAD_PRI = re.compile(rb"syslog-ng\[[0-9]+\]: Error processing log message: ")


def _from_syslog_ng(rec: Mapping[str, Any]) -> _Cand:
    """A syslog-ng file line: the text after HOST is the payload as received
    (syslog-ng prints MSGHDR and MSG back to back and escapes nothing); HOST
    is the sender. A continuation line (raw LF inside a UDP datagram) has
    no HOST: its text is a later line of the message above it."""
    msg = to_bytes(rec.get("msg")) or b""
    m = _SNG_BAD_PRI.match(msg)
    cand = _Cand(msg[m.end():] if m else msg)
    cand.raw = True
    if not rec.get("_continuation"):
        host = to_bytes(rec.get("hostname"))
        if host:
            cand.host_source = host
    return cand


def _tag_cut(tag: bytes) -> bool:
    """Is this TAG (payload bytes, a forwarder's U+FFFD for each byte it could
    not decode) as long as rsyslog's forwarding template cuts it, with no
    space in it?"""
    if b" " in tag:
        return False
    n = len(tag) - 2 * tag.count(b"\xef\xbf\xbd")
    return n == FORWARD_TAG_MAX


def _from_vector(rec: Mapping[str, Any], sources: Senders) -> _Cand:
    host = to_bytes(rec.get("hostname"))
    app = to_bytes(rec.get("appname")) or b""
    procid = to_bytes(rec.get("procid"))
    msg = to_bytes(rec.get("message")) or b""
    # rsyslog's forwarding template cuts the TAG at 32 bytes (FORWARD_NOTES
    # 8): an appname that long may have lost the TAG's rest, whether or not
    # a message follows (``Cookie: mstshash=nmap`` after a binary TAG).
    cut = not procid and _tag_cut(app)
    if cut:
        app = _PARTIAL_ESCAPE.sub(b"", app)
    alts: list[bytes] = []
    if app and procid:
        rest = app + b"[" + procid + b"]: " + msg
    elif app:
        rest = app + b": " + msg if msg else app
        alts += [app + b" " + msg, app + b":" + msg]
    else:
        rest = msg
        if msg:
            # a TAG that was only ':' (empty appname): the parser took the
            # colon for the separator (NotesRPC's ``:\x00\x00\x00/``)
            alts.append(b":" + msg)
    cand = _Cand(rest, alts, lossy=cut)
    _with_host(cand, host, alts, rest, sources, exact=False)
    return cand


def _str(value: Any) -> str:
    b = to_bytes(value)
    return b.decode("utf-8", "replace") if b is not None else ""


def _first(rec: Mapping[str, Any], names: tuple[str, ...]) -> tuple[str, bytes] | None:
    for name in names:
        if name in rec:
            b = to_bytes(rec[name])
            if b is not None:
                return name, b
    return None


_FILE_FORMATS = ("traditional", "rfc3339", "rfc5424")
#: A JSON line is an rsyslog record (not an application's JSON) with one of these.
_RSYSLOG_KEYS = frozenset(("rawmsg", "syslogtag", "fromhost-ip", "fromhost", "programname"))
_FILE_LINE_START = re.compile(
    rb"(?:[0-9]{4}-[0-9]{2}-[0-9]{2}T|[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:|<(?:[0-9]{1,3}|invld)>1 |\{\")")
#: The PRI of rsyslog's forwarding formats (``RSYSLOG_TraditionalForwardFormat``:
#: ``<PRI>`` then a traditional line; ``<invld>`` for a payload starting
#: with ``<`` and no valid PRI), as a collector that could not parse it
#: keeps it: the whole line in ``message`` (Vector's ``parse_syslog`` fails
#: on ``<invld>``).
_FORWARD_PRI = re.compile(rb"<(?:[0-9]{1,3}|invld)>(?=[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:|[0-9]{4}-[0-9]{2}-[0-9]{2}T)")


@functools.lru_cache(maxsize=64)
def _name_index(names: tuple[str, ...]) -> tuple[frozenset[str], dict[str, int]]:
    """``names`` as a set and each name's place (``_source``, ``memo_key``:
    a config has one tuple of each; read-only)."""
    return frozenset(names), {n: i for i, n in enumerate(names)}


def _source(rec: Mapping[str, Any], source_fields: tuple[str, ...] = ()) -> tuple[str | None, tuple[bytes, ...]]:
    # The record's keys looked up in the names, not the other way round: a
    # record has a few keys, and one sender field of the eleven, or none.
    # (A false value is no sender: its bytes, if any, are empty.)
    names = source_fields or SOURCE_FIELDS
    have = _name_index(names)[0].intersection(rec)
    if not have:
        return None, ()
    if len(have) == 1:
        (name,) = have
        return _one_sender(rec[name])
    return _several_senders(rec, names)


def _one_sender(value: Any) -> tuple[str | None, tuple[bytes, ...]]:
    """The senders of a record with one sender field, of this value."""
    b = to_bytes(value) if value else None
    return (b.decode("utf-8", "replace"), (b,)) if b else (None, ())


def _several_senders(rec: Mapping[str, Any], names: tuple[str, ...]) -> tuple[str | None, tuple[bytes, ...]]:
    """The senders of a record with more than one of the sender fields
    ``names`` (in that order): the first non-empty one names it."""
    present = list(filter(None, map(rec.get, names)))
    if not present:
        return None, ()
    found = tuple(filter(None, map(to_bytes, present)))
    if not found:
        return None, ()
    return found[0].decode("utf-8", "replace"), found


def _shape(rec: Mapping[str, Any]) -> str | None:
    """Which syslog shape's fields the record has (no ``fields`` configured):
    ``rawmsg``, ``rsyslog``, ``fluentd``, ``vector``; None: a plain payload
    field (``PAYLOAD_FIELDS``), if any."""
    raw = rec.get("rawmsg")
    if raw is not None and to_bytes(raw) is not None:
        return "rawmsg"
    if rec.get("_format") in SYSLOG_NG_FORMATS:
        return "syslog-ng"
    if "syslogtag" in rec or ("hostname" in rec and "app-name" in rec and "msg" in rec):
        return "rsyslog"
    if "ident" in rec and ("host" in rec or "message" in rec):
        return "fluentd"
    if "msg" in rec and "_format" in rec and _str(rec["_format"]) == "fromhost":
        return "msg-only"
    if "message" in rec and ("appname" in rec or ("hostname" in rec and "source_ip" in rec)):
        # Vector adds 'appname' only when it found one; 'source_ip' is the peer.
        return "vector"
    return None


def _detect(rec: Mapping[str, Any], fields: tuple[str, ...], sources: Senders,
            depth: int) -> tuple[_Cand, str] | None:
    if fields:
        values = [to_bytes(rec.get(f)) for f in fields if f in rec]
        present = [v for v in values if v is not None]
        if not present:
            return None
        if len(present) == 1:
            return _single(present[0], sources, depth)
        # Configured fields that form a known shape (host/ident/message...)
        # are rebuilt as that shape; anything else is joined with spaces.
        sub = {f: rec[f] for f in fields if f in rec}
        found = _detect(sub, (), sources, depth + 1)
        if found is not None and found[1] != "message":
            return found
        return _Cand(b" ".join(v for v in present if v)), "message"
    shape = _shape(rec)
    if shape == "rawmsg":
        return _Cand(to_bytes(rec.get("rawmsg")) or b""), "rsyslog-rawmsg"
    if shape == "rsyslog":
        # parse_syslog_line() marks records it made from file lines
        name = "file-line" if _str(rec.get("_format")) in _FILE_FORMATS else "rsyslog-json"
        return _from_rsyslog(rec, sources), name
    if shape == "fluentd":
        if "msgid" in rec:
            # Fluent Bit's syslog-rfc5424: host, ident (APP-NAME), pid
            # (PROCID), msgid, extradata, message (MSG, its first space kept)
            as5424 = {"hostname": rec.get("host"), "app-name": rec.get("ident"), "msg": rec.get("message")}
            return _from_rsyslog(as5424, sources), "fluentd-syslog"
        return _from_fluentd(rec, sources), "fluentd-syslog"
    if shape == "vector":
        return _from_vector(rec, sources), "vector-syslog"
    if shape == "msg-only":
        return _Cand(to_bytes(rec.get("msg")) or b"", [], True), "rsyslog-msg"
    if shape == "syslog-ng":
        return _from_syslog_ng(rec), "syslog-ng"
    hit = _first(rec, PAYLOAD_FIELDS)
    if hit is None:
        return None
    return _single(hit[1], sources, depth)


def _line_field(rec: Mapping[str, Any], fields: tuple[str, ...]) -> str | None:
    """The field whose value ``_detect`` hands to ``_single`` at depth 0 (the
    only place a whole file line is parsed), if any."""
    if fields:
        present = [f for f in fields if f in rec and to_bytes(rec.get(f)) is not None]
        return present[0] if len(present) == 1 else None
    if _shape(rec) is not None:
        return None
    hit = _first(rec, PAYLOAD_FIELDS)
    return hit[0] if hit is not None else None


#: Stands for a field the record does not have in ``memo_key`` (None is a value).
ABSENT = object()
#: Marks a file line's value in ``memo_key`` that stands without its timestamp.
_UNTIMED = object()


def memo_key(record: Mapping[str, Any], fields: tuple[str, ...] = (),
             names: tuple[str, ...] | None = None, own: tuple[bytes, ...] = ()) -> tuple[Any, ...]:
    """What ``rebuild_with`` depends on besides the senders: the value of
    every field it reads (``fields_read``, passed as ``names`` by callers
    that have it), ``ABSENT`` for absent ones, with two values replaced by
    what rebuild actually reads of them:

    * a whole file line that rebuild parses (Fluentd in_tail, Vector's file
      source) stands there without its timestamp when the parse does not
      depend on it (``strip_time``): rebuild never reads the timestamp, and
      every line has its own;
    * a HOSTNAME that is one of the record's sender field values ``own``
      (``sender_hostname``) is ``SENDER``: rebuild only asks whether it is
      a sender, so a scanner's lines share the key with any other
      scanner's. The questions about it are then answered by the key (see
      ``Senders``; a caller drops them from what it checks)."""
    if names is None:
        names = fields_read(fields)
    # The record's few keys placed, not every name looked up.
    wanted, index = _name_index(names)
    key = [ABSENT] * len(names)
    for name in wanted.intersection(record):
        key[index[name]] = record[name]
    if not fields:
        # The routing of _detect, once: a syslog shape (its HOSTNAME may be
        # a sender) or a plain payload field (which may be a file line).
        shape = _shape(record)
        if shape is not None:
            if own:
                name = _HOSTNAME_FIELD.get(shape)
                if name is not None:
                    i = _READ_INDEX[name]
                    host = to_bytes(key[i]) if key[i] is not ABSENT else None
                    if host is not None and host in own:  # sender_hostname
                        key[i] = SENDER
            return tuple(key)
        hit = _first(record, PAYLOAD_FIELDS)
        name = hit[0] if hit is not None else None
    else:
        name = _line_field(record, fields)
    if name is not None:
        j = names.index(name)
        untimed = strip_time(key[j])
        if untimed is not None:
            key[j] = (_UNTIMED, *untimed)
    return tuple(key)


#: Stands in ``memo_key`` for a HOSTNAME that is one of the record's senders.
SENDER = object()
#: The field each syslog shape takes the HOSTNAME from (``_shape``).
_HOSTNAME_FIELD = {"rsyslog": "hostname", "fluentd": "host", "vector": "hostname"}


def sender_hostname(record: Mapping[str, Any], fields: tuple[str, ...],
                    own: tuple[bytes, ...]) -> tuple[str, bytes] | None:
    """(field, value) of a record's HOSTNAME when it is one of the record's
    sender field values ``own`` (no ``fields`` configured). Then every use
    rebuild makes of it starts with "is it a sender?" -- yes -- and goes no
    further (``_host_is_sender``, ``_colon_tag``, ``_colon_host``,
    ``_template_space``); the only other use, as the source when there is no
    sender field, cannot happen. And these shapes ask nothing else about the
    senders: no whole file line is parsed in them."""
    if fields or not own:
        return None
    name = _HOSTNAME_FIELD.get(_shape(record))  # type: ignore[arg-type]
    if name is None:
        return None
    host = to_bytes(record.get(name))
    if host is None or host not in own:
        return None
    return name, host


#: Where ``memo_key`` finds each of ``READ_FIELDS``.
_READ_INDEX = {n: i for i, n in enumerate(READ_FIELDS)}


def _single(value: bytes, sources: Senders, depth: int) -> tuple[_Cand, str]:
    if depth == 0 and value[:1] == b"<":
        m = _FORWARD_PRI.match(value)
        if m is not None:
            value = value[m.end():]
    if depth == 0 and _FILE_LINE_START.match(value):
        parsed = parse_syslog_line(value)
        if parsed.fmt == "json" and not _RSYSLOG_KEYS.intersection(parsed.record):
            # an application's own JSON line is the payload itself
            return _Cand(value), "message"
        if parsed.fmt != "raw":
            # an rsyslog JSON line names its sender (fromhost-ip) itself
            inner_source, inner_sources = _source(parsed.record, ())
            inner = _detect(parsed.record, (), sources + inner_sources, depth + 1)
            if inner is not None:
                cand, _ = inner
                cand.lossy = cand.lossy or parsed.lossy
                cand.source = inner_source
                return cand, "file-line"
    return _Cand(value), "message"


_STR_KEYS = frozenset((str,))


def str_keys(record: Mapping[Any, Any]) -> Mapping[Any, Any]:
    """``record`` with bytes keys decoded: peers that send msgpack str keys as
    bin (raw=True style decoders). The same object when it has none."""
    if set(map(type, record)) <= _STR_KEYS:  # (one C-level pass: the usual case)
        return record
    for k in record:
        if isinstance(k, bytes):
            return {k.decode("utf-8", "surrogateescape") if isinstance(k, bytes) else k: v
                    for k, v in record.items()}
    return record


def fields_read(fields: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Every record field whose value (or absence) ``rebuild`` reads, sender
    fields aside (``Senders`` stands for those). A memo of ``rebuild`` keyed
    on these values and on what ``Senders`` was asked is exact."""
    return tuple(fields) if fields else READ_FIELDS


# ---------------------------------------------------------------- plans ---
#
# A stream's records share their keys (every record of one Fluentd input
# has the same fields), and much of what ``str_keys``, ``sender_fields``,
# ``memo_key`` and ``_shape`` find in a record follows from its keys alone:
# which sender fields, payload fields and rebuild fields it has, and for
# most shapes the shape itself. ``plan_for`` works that out once per tuple
# of keys; the ``planned_*`` functions then read only the values. They give
# what the plain functions give (tests/decode/test_plans.py), for the
# default fields (no ``fields`` or ``source_fields`` configured).

#: ``RecordPlan.shape`` when the shape depends on values (``rawmsg``,
#: ``_format``): ``_shape`` decides per record.
_BY_VALUE = object()
#: Plans kept, at most (a stream has a few key sets; a hostile one cleared).
_MAX_PLANS = 256


class RecordPlan:
    """What a record's keys alone say (``plan_for``). ``present``: the
    ``READ_FIELDS`` it has, in that order (one tuple object per distinct
    set, so memo keys share it); ``values``: the record -> their values, in
    that order; ``index``: name -> place in ``present``."""

    __slots__ = ("str_ok", "keyset", "senders", "present", "present_chars", "values", "index", "shape",
                 "host_at", "payload")

    def __init__(self, keys: tuple[Any, ...]) -> None:
        self.str_ok = all(type(k) is str for k in keys)
        self.keyset = frozenset(keys)
        self.senders = tuple(n for n in SOURCE_FIELDS if n in self.keyset)
        present = tuple(n for n in READ_FIELDS if n in self.keyset)
        self.present = _PRESENT.setdefault(present, present)
        self.present_chars = sum(map(len, present))
        if not present:
            self.values: Callable[[Any], tuple[Any, ...]] = lambda rec: ()
        elif len(present) == 1:
            name = present[0]
            self.values = lambda rec: (rec[name],)
        else:
            self.values = operator.itemgetter(*present)
        self.index = {n: i for i, n in enumerate(present)}
        if "rawmsg" in self.keyset or "_format" in self.keyset:
            self.shape: Any = _BY_VALUE
        else:
            self.shape = _shape(dict.fromkeys(keys))  # (only key tests are left)
        #: where the shape's HOSTNAME is in ``present`` (-1: none, or the
        #: shape depends on values)
        host = _HOSTNAME_FIELD.get(self.shape) if isinstance(self.shape, str) else None
        self.host_at = self.index.get(host, -1) if host is not None else -1
        self.payload = tuple((n, self.index[n]) for n in PAYLOAD_FIELDS if n in self.index)


_PLANS: dict[tuple[Any, ...], RecordPlan] = {}
_PRESENT: dict[tuple[str, ...], tuple[str, ...]] = {}


def plan_for(record: Mapping[Any, Any]) -> RecordPlan:
    """The plan of ``record``'s keys (made once per tuple of keys)."""
    keys = tuple(record)
    plan = _PLANS.get(keys)
    if plan is None:
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
            _PRESENT.clear()
        plan = _PLANS[keys] = RecordPlan(keys)
    return plan


def planned_senders(rec: Mapping[str, Any], plan: RecordPlan) -> tuple[str | None, tuple[bytes, ...]]:
    """``sender_fields(rec)`` (default source fields), ``plan`` being rec's."""
    names = plan.senders
    if not names:
        return None, ()
    if len(names) == 1:
        return _one_sender(rec[names[0]])
    return _several_senders(rec, names)


def planned_key(rec: Mapping[str, Any], plan: RecordPlan, own: tuple[bytes, ...] = ()) -> tuple[Any, ...]:
    """``memo_key(rec, (), READ_FIELDS, own)`` in another form, as exact:
    ``plan.present`` (which fields are absent), then the values of the
    present ones, in that order, with the same two replacements."""
    values = plan.values(rec)
    shape = plan.shape
    if shape is _BY_VALUE:
        shape = _shape(rec)
        at = plan.index.get(_HOSTNAME_FIELD.get(shape), -1) if shape is not None else -1  # type: ignore[arg-type]
    else:
        at = plan.host_at
    if shape is not None:
        if own and at >= 0:
            host = to_bytes(values[at])
            if host is not None and host in own:  # sender_hostname
                values = (*values[:at], SENDER, *values[at + 1:])
        return (plan.present, *values)
    for _name, at in plan.payload:  # _first: the first that is text
        if to_bytes(values[at]) is not None:
            untimed = strip_time(values[at])
            if untimed is not None:
                values = (*values[:at], (_UNTIMED, *untimed), *values[at + 1:])
            break
    return (plan.present, *values)


class Senders:
    """The values of a record's sender fields, as the HOSTNAME rule asks
    about them (is this word the sender?), plus the senders a parsed rsyslog
    JSON line names itself.

    ``rebuild`` depends on the sender fields only through these questions
    and through whether there are any, so ``asked`` lists each question
    about the record's own fields with its answer. Another record with the
    same payload fields gets the same reconstruction if its sender fields
    answer those questions alike (``same_answers``): that is what lets the
    detector's memo ignore the sender address, which changes from scanner
    to scanner while the probe bytes do not."""

    __slots__ = ("first", "own", "inner", "asked")

    def __init__(self, own: tuple[bytes, ...], first: str | None = None,
                 inner: tuple[bytes, ...] = (), asked: list[tuple[bytes, bool]] | None = None) -> None:
        self.own = own
        self.first = first  # the first sender field's value, decoded: the record's source
        self.inner = inner
        self.asked = [] if asked is None else asked

    def __contains__(self, word: object) -> bool:
        if word in self.inner:
            return True  # decided by the payload itself: no question about the record
        answer = word in self.own
        self.asked.append((word, answer))  # type: ignore[arg-type]
        return answer

    def __bool__(self) -> bool:
        return bool(self.own or self.inner)

    def __add__(self, inner: tuple[bytes, ...]) -> Senders:
        """These senders plus those named inside the payload (shared log)."""
        return Senders(self.own, self.first, self.inner + tuple(inner), self.asked)

    def same_answers(self, asked: tuple[tuple[bytes, bool], ...]) -> bool:
        """Would these senders answer ``asked`` (another record's questions) alike?"""
        return answers_alike(self.own, asked)


def answers_alike(own: tuple[bytes, ...], asked: tuple[tuple[bytes, bool], ...]) -> bool:
    """Would sender field values ``own`` answer ``asked`` (``Senders.asked``
    of another record) alike?"""
    for word, answer in asked:
        if (word in own) is not answer:
            return False
    return True


#: (the first sender field's value decoded, every sender field's value as
#: bytes) of a record (``source_fields``, default ``SOURCE_FIELDS``).
sender_fields = _source


def senders(record: Mapping[str, Any], source_fields: tuple[str, ...] = ()) -> Senders:
    """The record's sender fields (``source_fields``, default ``SOURCE_FIELDS``)."""
    source, found = _source(record, source_fields)
    return Senders(found, source)


def rebuild(record: Mapping[str, Any], *, fields: tuple[str, ...] = (),
            source_fields: tuple[str, ...] = (),
            dialects: tuple[str, ...] = DEFAULT_DIALECTS) -> Rebuilt | None:
    """The best reconstruction of the one line the sender sent, or None when
    the record has no payload field. Never raises on odd values."""
    if not isinstance(record, Mapping):
        return None
    record = str_keys(record)
    return rebuild_with(record, senders(record, source_fields), fields=fields, dialects=dialects)


def rebuild_with(record: Mapping[str, Any], who: Senders, *, fields: tuple[str, ...] = (),
                 dialects: tuple[str, ...] = DEFAULT_DIALECTS) -> Rebuilt | None:
    """``rebuild`` of a record whose keys are str (``str_keys``), with its
    sender fields already read (``senders``); ``who.asked`` then lists what
    the reconstruction asked about them."""
    found = _detect(record, fields, who, 0)
    if found is None:
        return None
    cand, shape = found
    source = who.first
    if source is None:
        source = cand.source  # from inside a parsed file line (rsyslog json)
    if source is None and cand.host_source:
        # No sender field (a text log file, Fluentd's in_tail records): the
        # HOSTNAME is the sender when the HOSTNAME rule says it is not the
        # payload's first word (FIELD_GUIDE 3.3: with DNS off, the sender's IP).
        source = cand.host_source.decode("utf-8", "replace")
    if cand.raw:
        dialects = ()  # as received: a literal ``#015`` is literal
    u = unescape(cand.primary, dialects)
    seen = {u.data}
    alts: list[bytes] = []
    for a in cand.alts:
        a = unescape_as(a, u.dialect)
        if a not in seen:
            seen.add(a)
            alts.append(a)
    if u.evidence and u.evidence < UNSURE:
        # Escaped or literal was a close call: offer the other reading of
        # every candidate, after all of the first reading.
        if u.dialect is not None:
            others = [cand.primary, *cand.alts]
        else:
            d = unescape(cand.primary, dialects, assume_escaped=True).dialect
            others = [unescape_as(c, d) for c in (cand.primary, *cand.alts)]
        for other in others:
            if other not in seen:
                seen.add(other)
                alts.append(other)
    lossy = cand.lossy or u.replaced > 0
    return Rebuilt(u.data, cand.primary, tuple(alts), source, shape, lossy, u.dialect, u.escapes,
                   u.evidence)
