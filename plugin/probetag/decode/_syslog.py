"""Split one physical line of an rsyslog output file into its properties.

Theory of operation
-------------------
* rsyslog's file templates print HOSTNAME, TAG and MSG (FIELD_GUIDE section
  3); this module undoes the template, not the escaping. Formats:

  ``traditional``  ``Mmm dd hh:mm:ss HOST TAG[sp]MSG``
                   (RSYSLOG_TraditionalFileFormat)
  ``rfc3339``      the same with an RFC 3339 timestamp (RSYSLOG_FileFormat,
                   Debian 12's /var/log/syslog)
  ``rfc5424``      ``<PRI>1 TS HOST APP PROCID MSGID SD MSG``
                   (RSYSLOG_SyslogProtocol23Format): only APP-NAME of the TAG
                   survives, so these lines are ``lossy``
  ``json``         one JSON object per line (rsyslog ``json``/``jsonf``
                   properties or ``%jsonmesg%``), bytes >= 0x80 raw inside
  ``fromhost``     ``TIMESTAMP FROMHOST MSG``: a central server's template
                   ``%TIMESTAMP% %FROMHOST% %msg%`` (traditional or RFC 3339
                   timestamp). HOSTNAME and TAG are not printed, so the line
                   holds the sender and rsyslog's MSG property only: the
                   payload's first word is gone when it became HOSTNAME, and
                   so is all the parser put into the TAG (``lossy``). A
                   line alone does not tell this format from ``traditional``;
                   ``detect_file_format`` tells it by the share of lines
                   whose text after the sender starts with a space (every
                   ``app: text`` message keeps the space after its TAG).
  ``raw``          anything else: the whole line is the payload.
  ``syslog-ng``    syslog-ng's default file template,
                   ``${DATE} ${HOST} ${MSGHDR}${MESSAGE}`` (Debian's
                   /var/log/syslog under syslog-ng-core): ``Mmm dd hh:mm:ss
                   HOST PAYLOAD``
  ``syslog-ng-iso`` the same with ``$ISODATE`` (``template("$ISODATE $HOST
                   $MSGHDR$MSG\n")``)

* syslog-ng (docs/collectors.md) escapes nothing and prints MSGHDR and MSG
  back to back, so the text after HOST is the payload as received (minus a
  PRI, leading spaces and a leading ``*``/``.``, which it drops); HOST is
  the sender's address for every line without a header of its own. A line
  of such a file without a timestamp and HOST is the continuation of the
  message above it (a UDP datagram with LFs inside):
  ``record["_continuation"]`` is set and ``msg`` is the whole line. Files are
  told apart from rsyslog's by syslog-ng's own messages
  (``syslog-ng[PID]: ...``) among the first lines (``detect_file_format``).

* ``[sp]`` is the template's ``sp-if-no-1st-sp``: a space is printed after the
  TAG only when MSG does not start with one. Where the TAG ended at a space the
  split is exact; after a TAG ending in ``:``, an empty TAG or a TAG cut at 510
  bytes, the space may or may not be the payload's. ``SyslogLine.record``
  keeps MSG as printed (minus the space that is certainly added) and names the
  doubtful case in ``_spacing`` so ``rebuild()`` offers both readings.
* ``parse_framing_error`` reads imtcp's own error messages about octet-counted
  framing (FIELD_GUIDE 1): they name the peer whose next logged line lost its
  leading digits and one more byte (or, "incomplete", a whole message).
* ``strip_time`` tells when a line's parse does not depend on its
  timestamp (an rfc3339 or traditional timestamp followed by a HOSTNAME and
  a space): then only the rest of the line matters, which lets the
  detector's memo treat the same line logged at another time as the same.
* ``record`` has rsyslog property names (``hostname``, ``syslogtag``, ``msg``,
  ``app-name``...), so ``rebuild(parse_syslog_line(l).record)`` is the same
  code path as a record that arrived over the network (explain == serve).
  Values are bytes; invalid UTF-8 never raises.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from ._escape import to_bytes

__all__ = ["FORMATS", "SYSLOG_NG_FORMATS", "SyslogLine", "parse_syslog_line", "detect_file_format", "split_tag",
           "FramingError", "parse_framing_error", "strip_time"]

FORMATS = ("traditional", "rfc3339", "rfc5424", "json", "fromhost", "raw", "syslog-ng", "syslog-ng-iso")
#: syslog-ng's file formats: the payload after HOST, unescaped and unsplit.
SYSLOG_NG_FORMATS = ("syslog-ng", "syslog-ng-iso")

#: pmrfc3164 cuts the TAG at this many bytes (FIELD_GUIDE 3.4).
TAG_MAX = 510


@dataclass(frozen=True, slots=True)
class SyslogLine:
    """fmt: one of ``FORMATS``; time: the timestamp text; host: HOSTNAME;
    tag: TAG (APP-NAME for rfc5424); msg: MSG as printed; record: rsyslog
    property names -> bytes, for ``rebuild``; lossy: bytes known missing."""

    fmt: str
    time: str | None
    host: bytes | None
    tag: bytes
    msg: bytes
    record: dict[str, Any] = field(hash=False)
    lossy: bool


_TRAD_TIME = rb"[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2}"
_RFC3339_TIME = rb"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})"
_TRAD = re.compile(rb"(" + _TRAD_TIME + rb") (\S+) (.*)", re.S)
_RFC3339 = re.compile(rb"(" + _RFC3339_TIME + rb") (\S+) (.*)", re.S)
# A timestamp, its space, and a HOSTNAME with its space after it: then the
# line is certainly parsed in that format, whatever the timestamp says.
# ASCII: \S is the bytes patterns' \S for str too (non-ASCII characters
# are bytes >= 0x80, never spaces).
_TIMED = rb"(?:(" + _RFC3339_TIME + rb")|" + _TRAD_TIME + rb") (?=\S+ )"
_TIMED_B = re.compile(_TIMED)
_TIMED_S = re.compile(_TIMED.decode("ascii"), re.ASCII)
# Fields of RSYSLOG_SyslogProtocol23Format are separated by single spaces. APP-NAME is
# rsyslog's programname and can be empty (not '-') after the '1 ' version strip.
_RFC5424 = re.compile(
    rb"<([0-9]{1,3}|invld)>1 (\S+) (\S+) (\S*) (\S+) (\S+) (-|(?:\[(?:[^\]\\]|\\.)*\])+) ?(.*)", re.S)
_TAG_END = re.compile(rb"[ :]")
# syslog-ng: TIMESTAMP SP HOST SP PAYLOAD (the payload may be empty: the
# space after HOST is printed all the same). $ISODATE has no fraction unless
# frac-digits() asks for one.
_SNG = re.compile(rb"(" + _TRAD_TIME + rb") (\S+) (.*)", re.S)
_SNG_ISO = re.compile(rb"(" + _RFC3339_TIME + rb") (\S+) (.*)", re.S)
#: syslog-ng's own messages (the ``internal()`` source): ``syslog-ng[PID]: ``
_SNG_SELF = re.compile(rb"(?:" + _TRAD_TIME + rb"|" + _RFC3339_TIME + rb") \S+ syslog-ng\[[0-9]+\]: ")
#: what rsyslog writes and syslog-ng never does: its own messages, ``#ooo``
_RSYSLOG_SIGN = re.compile(rb" rsyslogd(?:\[[0-9]+\])?: |#0[0-3][0-7]")


def split_tag(rest: bytes) -> tuple[bytes, bytes]:
    """Split the text after HOSTNAME into (TAG, MSG) by pmrfc3164's rule:
    up to the first space (excluded) or colon (included), at most 510 bytes;
    a text starting with a space, '{' or '[' has an empty TAG."""
    if not rest or rest[:1] in (b" ", b"{", b"["):
        return b"", rest
    m = _TAG_END.search(rest, 0, TAG_MAX + 1)
    if m is None:
        if len(rest) <= TAG_MAX:
            return rest, b""
        return rest[:TAG_MAX], rest[TAG_MAX:]
    end = m.end() if m.group() == b":" else m.start()
    if end > TAG_MAX:
        return rest[:TAG_MAX], rest[TAG_MAX:]
    return rest[:end], rest[end:]


def _split_printed(rest: bytes) -> tuple[bytes, bytes, str]:
    """Undo ``TAG + sp-if-no-1st-sp + MSG`` of the file templates.

    Returns (tag, msg, spacing) where spacing says what is uncertain:
    "" exact; "colon" a space after a TAG ending in ':' may be added;
    "empty-tag" a space after an empty TAG may be added; "lead" the space
    before a '{', '[' or '<' MSG is most likely added (it is not in ``msg``);
    "cut" the space after a TAG cut at 510 bytes is most likely added.
    """
    if rest.startswith(b" "):
        # Empty TAG. MSG starting with '{', '[' or '<' (invalid PRI) got the
        # space from the template; otherwise it is ambiguous.
        body = rest[1:]
        if not body:
            return b"", b"", ""
        if body[:1] in (b"{", b"[", b"<"):
            return b"", body, "lead"  # most likely the template's; ' [' is possible
        return b"", rest, "empty-tag"
    m = _TAG_END.search(rest, 0, TAG_MAX + 1)
    if m is None:
        tag, msg = rest[:TAG_MAX], rest[TAG_MAX:]
    elif m.group() == b":" and m.end() <= TAG_MAX:
        tag, msg = rest[:m.end()], rest[m.end():]
    elif m.start() <= TAG_MAX:
        tag, msg = rest[:m.start()], rest[m.start():]
    else:
        tag, msg = rest[:TAG_MAX], rest[TAG_MAX:]
    if msg == b" ":
        # MSG empty: the template printed one space after the TAG.
        return tag, b"", ""
    if len(tag) >= TAG_MAX and not tag.endswith(b":"):
        if msg.startswith(b" "):
            return tag, msg[1:], "cut"
        return tag, msg, ""
    if tag.endswith(b":"):
        if msg.startswith(b" "):
            return tag, msg, "colon"
        return tag, msg, ""
    return tag, msg, ""


def _parse_json(line: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(line.decode("utf-8", "surrogateescape"))
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _s(value: Any) -> str | None:
    if value is None:
        return None
    b = to_bytes(value)
    return b.decode("utf-8", "replace") if b is not None else str(value)


def parse_syslog_line(line: bytes | str, fmt: str = "auto") -> SyslogLine:
    """Parse one line of an rsyslog output file. Never raises on bad bytes;
    a line that does not fit ``fmt`` (or any format, for "auto") is "raw"."""
    if fmt not in ("auto", *FORMATS):
        raise ValueError(f"unknown syslog file format {fmt!r}; known: auto, {', '.join(FORMATS)}")
    data = to_bytes(line) or b""
    if data.endswith(b"\n"):
        data = data[:-1]
    if fmt in ("auto", "json") and data[:1] == b"{":
        obj = _parse_json(data)
        if obj is not None:
            rec: dict[str, Any] = {}
            for k, v in obj.items():
                b = to_bytes(v)
                rec[k] = b if b is not None else v
            rec["_format"] = "json"
            tag = to_bytes(obj.get("syslogtag")) or b""
            return SyslogLine("json", _s(obj.get("timegenerated") or obj.get("timereported")),
                              to_bytes(obj.get("hostname")), tag, to_bytes(obj.get("msg")) or b"",
                              rec, "rawmsg" not in obj and "syslogtag" not in obj)
    if fmt in ("auto", "rfc5424") and data[:1] == b"<":
        m = _RFC5424.fullmatch(data)
        if m:
            pri, ts, host, app, procid, msgid, sd, msg = m.groups()
            rec = {"pri": pri, "timereported": ts, "hostname": host, "app-name": app,
                   "procid": procid, "msgid": msgid, "structured-data": sd, "msg": msg,
                   "protocol-version": b"1", "_format": "rfc5424"}
            return SyslogLine("rfc5424", ts.decode("ascii", "replace"), host,
                              b"" if app == b"-" else app, msg, rec, True)
    if fmt == "fromhost":
        m = _RFC3339.fullmatch(data) or _TRAD.fullmatch(data)
        if m:
            ts, host, rest = m.groups()
            rec = {"timereported": ts, "fromhost": host, "msg": rest, "_format": "fromhost"}
            return SyslogLine("fromhost", ts.decode("ascii", "replace"), host, b"", rest, rec, True)
    if fmt in SYSLOG_NG_FORMATS:
        m = (_SNG if fmt == "syslog-ng" else _SNG_ISO).fullmatch(data)
        if m is None:
            # no header: the continuation of the message above (raw LF)
            return SyslogLine(fmt, None, None, b"", data,
                              {"msg": data, "_format": fmt, "_continuation": True}, False)
        ts, host, rest = m.groups()
        return SyslogLine(fmt, ts.decode("ascii", "replace"), host, b"", rest,
                          {"timereported": ts, "hostname": host, "msg": rest, "_format": fmt}, False)
    for name, pattern in (("rfc3339", _RFC3339), ("traditional", _TRAD)):
        if fmt in ("auto", name):
            m = pattern.fullmatch(data)
            if m:
                ts, host, rest = m.groups()
                tag, msg, spacing = _split_printed(rest)
                rec = {"timereported": ts, "hostname": host, "syslogtag": tag, "msg": msg,
                       "_format": name}
                if spacing:
                    rec["_spacing"] = spacing
                return SyslogLine(name, ts.decode("ascii", "replace"), host, tag, msg, rec,
                                  len(tag) >= TAG_MAX)
    return SyslogLine("raw", None, None, b"", data, {"message": data, "_format": "raw"}, False)


def strip_time(line: bytes | str) -> tuple[str, bytes | str] | None:
    """(format, the rest of the line) for an ``rfc3339`` or ``traditional``
    file line whose parse does not depend on its timestamp: any other
    timestamp of that format gives the same ``parse_syslog_line`` record
    (``timereported`` aside) and the same ``lossy``. None otherwise.

    That is a line that starts with such a timestamp, a space and a
    HOSTNAME followed by a space: neither JSON (``{``) nor RFC 5424 (``<``)
    can start so, an RFC 3339 line is tried before the traditional format
    and cannot start with a letter, and both patterns then match whatever
    follows."""
    if isinstance(line, str):
        m = _TIMED_S.match(line)
    elif isinstance(line, bytes):
        m = _TIMED_B.match(line)
    else:
        return None
    if m is None:
        return None
    return ("rfc3339" if m.group(1) is not None else "traditional"), line[m.end():]


#: ``fromhost`` rather than ``traditional``/``rfc3339`` when at least this
#: share of the sampled timed lines (and ``_FROMHOST_MIN`` of them) has a
#: space or nothing right after the sender. In the traditional formats that
#: needs an empty TAG before a space (under 15 % of the lines of the
#: corpora's scans, 0-2 % of ordinary logs); behind ``%FROMHOST% %msg%``
#: every ``app: text`` message has it (58-72 % in the corpus).
_FROMHOST_SHARE = 0.35
_FROMHOST_MIN = 10


def detect_file_format(lines: Iterable[bytes | str], sample: int = 50) -> str:
    """The format most of the first ``sample`` non-empty lines parse as
    ("raw" wins only if nothing else does better). A file whose lines hold
    one of syslog-ng's own messages (``syslog-ng[PID]: ``) and nothing only
    rsyslog writes (its own messages, ``#ooo`` escapes) is syslog-ng's:
    ``syslog-ng`` or ``syslog-ng-iso`` by the timestamps. Otherwise
    ``fromhost`` for a traditional or RFC 3339 file whose lines print no TAG
    (``_FROMHOST_SHARE``)."""
    votes: Counter[str] = Counter()
    spaced = 0
    sng = rsyslog = False
    for i, line in enumerate(lines):
        if i >= sample * 4:
            break
        b = to_bytes(line) or b""
        if not b.strip():
            continue
        if not sng and _SNG_SELF.match(b):
            sng = True
        if not rsyslog and _RSYSLOG_SIGN.search(b):
            rsyslog = True
        if sum(votes.values()) < sample:
            sl = parse_syslog_line(b)
            votes[sl.fmt] += 1
            if sl.fmt in ("traditional", "rfc3339") and not sl.tag and (not sl.msg or sl.msg[:1] == b" "):
                spaced += 1
        elif not sng:
            break
    if not votes:
        return "raw"
    best = votes.most_common(1)[0][0]
    if sng and not rsyslog and best in ("traditional", "rfc3339", "raw"):
        if votes["rfc3339"] > votes["traditional"]:
            return "syslog-ng-iso"
        return "syslog-ng"
    timed = votes["traditional"] + votes["rfc3339"]
    if best in ("traditional", "rfc3339") and spaced >= _FROMHOST_MIN and spaced >= _FROMHOST_SHARE * timed:
        return "fromhost"
    return best


@dataclass(frozen=True, slots=True)
class FramingError:
    """An rsyslog imtcp framing error: the peer's data lost bytes.

    kind: "delimiter" (digits then a byte other than SP: the digits and that
    byte are gone), "zero-count" (``0`` then a byte: both gone),
    "incomplete" (a counted frame cut by the close: the data is gone, no peer
    named). ``lost_byte`` is the byte after the digits (rsyslog prints it as a
    signed char; here 0..255)."""

    kind: str
    host: str | None
    ip: str | None
    lost_byte: int | None


_FRAMING = re.compile(
    rb"Framing Error in received TCP message from peer: \(hostname\) ([^,]*), \(ip\) ([^:]*): "
    rb"(?:delimiter is not SP but has ASCII value (-?[0-9]+)|invalid octet count ([0-9]+))")
_INCOMPLETE = re.compile(rb"Incomplete frame at end of stream in session ")


def parse_framing_error(text: bytes | str) -> FramingError | None:
    """The framing error an rsyslog internal message reports, or None."""
    data = to_bytes(text) or b""
    if b"Framing Error" not in data and b"Incomplete frame" not in data:
        return None  # the common case, without running the regexes
    m = _FRAMING.search(data)
    if m:
        host, ip = m.group(1).decode("utf-8", "replace"), m.group(2).decode("utf-8", "replace")
        if m.group(3) is not None:
            return FramingError("delimiter", host, ip, int(m.group(3)) & 0xFF)
        return FramingError("zero-count", host, ip, None)
    if _INCOMPLETE.search(data):
        return FramingError("incomplete", None, None, None)
    return None
