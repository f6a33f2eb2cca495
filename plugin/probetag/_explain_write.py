"""``probetag explain``'s output (see ``probetag.explain``): ``--format
jsonl`` (``_JsonlWriter``) and the text report of one file (``_text_file``,
laid out by ``_explain_report``; ``_listener`` tells where the probes were
received and how to close it, for the text and HTML reports)."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import IO, Any

from . import decode
from ._explain_read import _MAX_LINE
from ._explain_report import report_width, text_report, use_color
from ._explain_scan import FileReport, _SourceInfo

class _JsonlWriter:
    """``--format jsonl`` for one file: the lines of each block, in order,
    written as bytes.

    About 99 % of the lines are ``{"line": N, "probe": null}``, so their text
    is never formatted line by line: the numbers N = 1000 P + s share the
    digits P, and 1000 of those lines are one ``bytes.join`` with P as the
    separator between precomputed pieces (``s, "probe": null}`` + LF + the
    next line's head). The bytes are exactly what ``json.dumps`` of the same
    object writes (the tests compare the two); in probe lines only the probe
    map goes through the JSON encoder."""

    __slots__ = ("_out", "_head", "_tail", "_full", "_mids", "_lasts", "_enc", "_errors", "_dumps", "_probe_head")

    _GROUP = 1000

    def __init__(self, out: Any, encoding: str, errors: str, fname: str | None) -> None:
        self._out = out
        # json.dumps escapes non-ASCII by default: the head is ASCII
        head = ('{"line": ' if fname is None else '{"file": %s, "line": ' % json.dumps(fname)).encode()
        self._head = head
        self._tail = tail = b', "probe": null}\n'
        self._mids = [b"%03d" % s + tail + head for s in range(self._GROUP)]
        self._lasts = [b"%03d" % s + tail for s in range(self._GROUP)]
        self._full = [head, *self._mids[:-1], self._lasts[-1]]
        self._enc, self._errors = encoding, errors
        self._dumps = _probe_encoder()
        self._probe_head = '{"line": ' if fname is None else '{"file": %s, "line": ' % self._dumps(fname)

    def _nulls(self, parts: list[bytes], a: int, b: int) -> None:
        """The null lines a .. b-1 (1-based numbers)."""
        head, tail, g = self._head, self._tail, self._GROUP
        while a < g and a < b:  # no leading zeros below 1000
            parts.append(b"%s%d%s" % (head, a, tail))
            a += 1
        while a < b:
            p, s = divmod(a, g)
            e = min(b - p * g, g)  # suffixes s .. e-1 share the digits p
            pieces = self._full if s == 0 and e == g else [head, *self._mids[s:e - 1], self._lasts[e - 1]]
            parts.append((b"%d" % p).join(pieces))
            a = p * g + e

    def block(self, n: int, found: dict[int, dict[str, Any]], base: int) -> None:
        """Lines base+1 .. base+n; ``found`` maps 0-based block indices to probes."""
        parts: list[bytes] = []
        k = 0
        for i in sorted(found):
            if i > k:
                self._nulls(parts, base + k + 1, base + i + 1)
            text = "%s%d, \"probe\": %s}\n" % (self._probe_head, base + i + 1, self._dumps(found[i]))
            parts.append(text.encode(self._enc, self._errors))
            k = i + 1
        if n > k:
            self._nulls(parts, base + k + 1, base + n + 1)
        if parts:
            self._out.write(b"".join(parts))


def _probe_encoder() -> Any:
    """``json.dumps(o, ensure_ascii=False, default=str)``, built once:
    dumps makes a JSONEncoder per call when given options, and its encode()
    a C encoder (and a dict of ids for the circular check; a probe map is a
    tree) per call. CPython's C encoder is made once here; without it, the
    JSONEncoder is."""
    from json import encoder as je

    make = getattr(je, "c_make_encoder", None)
    if make is None:  # pragma: no cover - other Pythons
        return json.JSONEncoder(ensure_ascii=False, default=str).encode
    # (markers, default, encoder, indent, key sep, item sep, sort_keys,
    # skipkeys, allow_nan): json.JSONEncoder.iterencode's call for these options
    enc = make(None, str, je.encode_basestring, None, ": ", ", ", False, False, True)
    join = "".join
    return lambda o: join(enc(o, 0))


class _TextSink:
    """Bytes written to a text stream that has no byte stream under it."""

    __slots__ = ("_out",)

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def write(self, data: bytes) -> int:
        return self._out.write(data.decode("utf-8", "surrogatepass"))


def _binary(out: IO[str]) -> tuple[Any, str, str]:
    """(byte stream, encoding, errors) that write what ``out.write`` would:
    its own buffer when its encoding keeps ASCII as ASCII (the null lines are
    ASCII templates), else a sink that decodes back to text."""
    enc, errors = getattr(out, "encoding", None) or "utf-8", getattr(out, "errors", None) or "strict"
    buf = getattr(out, "buffer", None)
    try:
        ascii_ok = '{"line": 0}\n'.encode(enc) == b'{"line": 0}\n'
    except LookupError:
        ascii_ok = False
    if buf is not None and ascii_ok:
        out.flush()
        return buf, enc, errors
    return _TextSink(out), "utf-8", "surrogatepass"


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def _listener(info: _SourceInfo, fmt: str = "") -> tuple[str, list[str]]:
    tr = sorted(info.transports) or ["tcp", "udp"]
    named = sorted(info.inputs - {"rsyslogd"})
    if named:
        where = ", ".join(named)
    else:
        where = "a syslog network input (" + "/".join(t.upper() for t in tr) + "; this format does not name it)"
    how = []
    if fmt in decode.SYSLOG_NG_FORMATS:
        # syslog-ng's network()/syslog() sources (docs/collectors.md)
        how.append('bind the network()/syslog() source to a trusted address: network(ip("127.0.0.1") ...), '
                   "or firewall its ports (514/tcp and 514/udp by default) from untrusted networks")
        if "tcp" in tr:
            how.append('a syslog(transport("tcp")) source takes octet-counted frames only and logs no '
                       "probe byte over TCP; network() logs every line it is sent")
        return where, how
    if "tcp" in tr:
        how.append('bind imtcp to a trusted address: input(type="imtcp" address="127.0.0.1" ...), '
                   "or firewall its port (514/tcp by default) from untrusted networks")
    if "udp" in tr:
        how.append('bind imudp to a trusted address: input(type="imudp" address="127.0.0.1" ...), '
                   "or firewall its port (514/udp by default) from untrusted networks")
    if "tcp" in tr:
        # FIELD_GUIDE 1: a leading digit starts an octet count that eats bytes
        how.append('if every sender uses LF framing, supportOctetCountedFraming="off" on imtcp '
                   "keeps digits at a line start from swallowing the following bytes")
    return where, how


def _text_file(out: IO[str], rep: FileReport, first: bool, args: argparse.Namespace | None = None) -> None:
    """One file's text report (``_explain_report``)."""
    color = getattr(args, "color", "never")
    text_report(out, rep, first=first, width=report_width(out), color=use_color(color, out),
                listener=_listener, max_line=_MAX_LINE)

