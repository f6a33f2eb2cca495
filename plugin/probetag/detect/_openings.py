"""Client openings on the record path: lines the catalogue names no probe in.

Theory of operation
-------------------
* ``Openings.amend`` runs once per batch, after the catalogue readings and
  before correlation (the one hook in ``_enrich.Enricher.batch``). It looks
  at the lines the catalogue gave no distinctive match, and at lines whose
  catalogue match the next line of the same connection contradicts, and
  gives ``_clients.recognise`` its chance. A recognised line gets a reading
  with one distinctive match of a signature made for it: ``probe`` is the
  protocol (``tls-client-hello``, ``http-request``...), ``scanner`` the
  client the known-client table names from unique evidence, else
  ``unknown``; the probe map gets ``protocol``, ``client``, ``ja3``,
  ``ja4``, ``user_agent``... (``Reading.extra``).
* Connections. rsyslog logs one TCP connection as consecutive lines of one
  sender (FIELD_GUIDE 1, 5). A TLS ClientHello cut at its LF bytes is
  several lines: its record header says how long it is, so the next lines
  of the same source are pieces of it while bytes are still missing
  (``_Pending``; the last piece is logged when the client closes, seconds
  later, hence ``HELLO_WAIT``). They are re-joined (``_clients.rejoin``)
  and every piece of the batch gets the hello's fingerprint. HTTP, RESP
  and SIP continuation lines (header lines, the empty line that ends a
  request, ``$4\\r``) are tagged as the protocol when a request of the same
  source opened less than ``_SAME_CONNECTION`` seconds before.
* A shared line names no scanner: ``GET / HTTP/1.0\\r`` is nmap's whole
  GetRequest only when the next line of the connection is the bare ``\\r``
  that ends it; when header lines follow, another client sent it, and the
  line is read as an ``http-request`` here.
* State (pending hellos, open HTTP/RESP connections) is per source and
  bounded (``MAX_SOURCES``, least recently used evicted).
* ``seen_in``: a probe found in the payload line itself was received by a
  syslog listener (``syslog-listener``); a marker found in another daemon's
  log line (an access log quoting a scanner's User-Agent, or a marker in a
  record field other than the payload) is a trace in an
  ``application-log``.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Callable, Sequence

from ._catalogue import Signature
from functools import lru_cache

from ._clients import KnownClients, Opening, known_clients, rejoin
from ._clients import recognise as _recognise

#: ``_clients.recognise`` is pure and its answer immutable, and scanners send
#: the same lines again and again: answers are kept for the lines seen last.
recognise = lru_cache(maxsize=4096)(_recognise)
from ._engine import Match

__all__ = ["Openings", "seen_in", "literals", "hostname_was_payload"]

#: Seconds a truncated ClientHello waits for its next piece: the bytes after
#: its last LF are logged when the client closes, on its own timeout.
HELLO_WAIT = 30.0
_SAME_CONNECTION = 1.0
#: NULs rsyslog may have removed from the ends of a hello's pieces.
_MAX_LOST_NULS = 6
#: A source the catalogue named a line of this recently is in a scan the
#: correlator follows: its ambiguous lines are left to it.
SCAN_CONTEXT = 60.0
MAX_SOURCES = 4096
#: rsyslog file formats whose lines keep every byte of TAG and MSG.
_WHOLE_FILE_FORMATS = frozenset(("traditional", "rfc3339"))
#: Protocols whose later lines (same source, within a second) continue it.
_CONTINUED = {"http-request": "http", "http-header": "http", "redis-command": "redis",
              "sip-request": "sip", "memcached-command": "memcached"}
#: A binary piece holds a control byte other than TAB/LF: the chunk
#: prefilter picks such lines by their escapes (``continuation_bytes`` and
#: the CR), so the lines taken as pieces are the same whether every record
#: is decoded or only the prefilter's hits. Empty lines (rsyslog's RFC 5424
#: output drops a binary TAG) are no pieces.
_PIECE = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_CR_ONLY = re.compile(rb"[ \t]*\r?[ \t]*")
_RESP_PIECE = re.compile(rb"(?:\$[0-9]{1,6}|[\x21-\x7e]{1,64})\r")
_HEADER = re.compile(rb"[A-Za-z][A-Za-z0-9-]{0,60}: ?[^\r\n]{0,4096}\r")


@lru_cache(maxsize=4096)
def _is_header(line: bytes) -> bool:
    """Is ``line`` a header line (``Name: value`` and its CR)? Kept for the
    lines seen last, as ``recognise``'s answers are."""
    return _HEADER.fullmatch(line.strip(b" \t")) is not None


#: ``Openings._contradicted``: the matches and first bytes of a catalogue
#: line that can be a shared request line.
_PAYLOAD_KINDS = frozenset(("exact", "prefix"))
_REQUEST_FIRST = frozenset((b"", b"G", b"H", b"O", b"P", b"D", b"T"))


@lru_cache(maxsize=4096)
def _http_request_line(line: bytes) -> bool:
    """Does ``recognise`` read ``line`` as an HTTP request line?"""
    op = _recognise(line)
    return op is not None and op.protocol == "http-request"


_HTTP_CONT = re.compile(rb"[A-Za-z][A-Za-z0-9-]{0,60}: ?[^\r\n]{0,4096}\r|\r")
_PROVENANCE = "recogniser: probetag.detect._clients (protocol specification); client from catalogue/clients/known-clients.yaml"


@dataclass(slots=True)
class _Pending:
    """A ClientHello whose record header announced more bytes than its
    lines so far hold."""

    pieces: list[bytes]
    expected: int
    t: float
    lines: list[int]  # batch indices of this batch's pieces we tagged
    first: Opening  # what the first piece said
    broken: bool = False  # the pieces do not parse together (octet-counting ate bytes)
    batch: int = 0  # the batch ``lines`` index into

    def first_seen_after(self, named: float | None) -> bool:
        """Is this hello newer than the source's last catalogue-named line
        (that is not one of its pieces)?"""
        return named is None or self.t >= named

    def room(self, line: bytes, t: float) -> bool:
        """Can ``line``, logged at ``t``, be the next piece? Pieces come
        within a second of each other, except the last (the bytes after the
        last LF, logged when the client closes): that one must end the
        record, give or take the NULs rsyslog removes."""
        have = sum(map(len, self.pieces)) + len(self.pieces) - 1  # (the LFs between them)
        total = have + 1 + len(line)
        if total > self.expected:
            return False
        return t - self.t <= _SAME_CONNECTION or total + _MAX_LOST_NULS >= self.expected


class Openings:
    def __init__(self, table: KnownClients | None = None) -> None:
        self.table = table if table is not None else known_clients()
        self._sigs: dict[tuple[str, str, str], Signature] = {}
        self._hellos: OrderedDict[str, _Pending] = OrderedDict()
        self._lossy = False  # the line being read is known to miss bytes
        self._conns: OrderedDict[str, tuple[str, float, Opening]] = OrderedDict()
        self._batch = 0
        #: per source, the time of its last line the catalogue named
        self._named: OrderedDict[str, float] = OrderedDict()

    # -- signatures made for recognised lines ---------------------------------
    def signature(self, protocol: str, scanner: str, transport: str) -> Signature:
        key = (protocol, scanner, transport)
        sig = self._sigs.get(key)
        if sig is None:
            sig = self._sigs[key] = Signature(
                id=f"client-{protocol}-{scanner}", probe=protocol, scanner=scanner, transport=transport,
                payload=b"", match="payload", confidence=None, ports=(), provenance=_PROVENANCE,
                family="client")
        return sig

    def _remember(self, table: "OrderedDict[str, Any]", key: str, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        if len(table) > MAX_SOURCES:
            table.popitem(last=False)

    # -- the batch pass --------------------------------------------------------
    def amend(self, readings: list[Any], sources: list[str | None], items: Sequence[tuple[float, Any]],
              full: Callable[[int], tuple[Any, str | None, str | None]],
              make: Callable[..., Any], todo: Sequence[int] | None = None) -> int:
        """Give lines the catalogue left unnamed (or whose name the next
        line contradicts) an opening reading, in place. ``full(i)``: (the
        reading of line i even without matches, its source, its transport);
        ``make(rebuilt, line, matches, shape, lossy, asked, extra)``: a Reading.
        ``todo``: the lines to look at (default: all); the others have
        neither a match nor a payload line (placeholders).
        Returns how many lines had no reading before and have one now."""
        added = 0
        made = http = torn = False
        self._batch += 1
        # (a catalogue line is looked up in the hellos under way only when one
        # could be its source's, in the open connections only when it is a
        # header line)
        hellos, conns, named = self._hellos, self._conns, self._named
        for i in (range(len(items)) if todo is None else todo):
            r = readings[i]
            if r is not None and r.sure and not (
                    # (``_contradicted``'s first test, inline: most lines fail it)
                    (m := r.sure[0]).kind in _PAYLOAD_KINDS and m.signature.match == "payload"
                    and r.line[:1] in _REQUEST_FIRST and self._contradicted(readings, sources, items, i, r, full)):
                t = items[i][0]
                src = sources[i]
                key = src or "-"
                if r.line[:1] == b"\x16" or (hellos and (key in hellos or src is None)
                                              and _PIECE.search(r.line) is not None):
                    # a catalogue line can still be a piece of a ClientHello
                    # (sslscan's cipher lists): the hello's byte count needs
                    # it (``_pending``: a hello of this source, or of any
                    # source for a line without one). A piece is binary, as
                    # ``_read`` asks of the lines it takes: a request line
                    # another client sent in the same second is none.
                    self._feed_hello(r.line, src, t, i)
                if conns and _is_header(r.line) and (conn := self._conn(key, t)) is not None \
                        and conn[0] == "http":
                    # a header line the catalogue names (sqlmap's User-Agent)
                    # inside a request this source opened: still that request
                    self._remember(conns, key, ("http", t, conn[2]))
                else:
                    # the source's context now: its ambiguous lines are the
                    # correlator's to decide, not an earlier opening's
                    named[key] = t
                    named.move_to_end(key)
                    if len(named) > MAX_SOURCES:
                        named.popitem(last=False)
                continue
            if r is not None and not r.sure and sources[i] is not None:
                # (``_read``'s first test, before the line is fetched: an
                # ambiguous line of a source the catalogue named lately)
                named_t = named.get(sources[i])
                if named_t is not None and 0 <= items[i][0] - named_t <= SCAN_CONTEXT:
                    continue
            base, src, transport = full(i)
            if base is None or base.rebuilt is None:
                continue
            if sources[i] is None:
                sources[i] = src
            line = base.line or base.rebuilt.line
            # a record known to miss bytes (RFC 5424's dropped TAG) cannot be
            # counted as the next piece of a hello under way; a line of a
            # traditional or RFC 3339 file misses none (it is lossy for the
            # space at a TAG cut at 510 bytes, which the line leaves out:
            # the template adds one there; a hello's count allows a byte less)
            self._lossy = bool(base.lossy) and not (
                base.shape == "file-line" and items[i][1].get("_format") in _WHOLE_FILE_FORMATS)
            got = self._read(line, sources[i], items[i][0], transport, i, readings)
            if got is None:
                continue
            op, client, candidates, conf = got
            m = self._match(op, client, transport, conf)
            extra = _extra(op, client, candidates)
            readings[i] = make(base.rebuilt, line, (m,), base.shape, base.lossy, base.asked, MappingProxyType(extra))
            made = True
            http = http or op.protocol == "http-request"
            torn = torn or (client is None and bool(candidates))
            if r is None:
                added += 1
        if made:  # (only the readings made here have an opening's fields)
            self._adopt(readings, sources, items)
            if http:
                self._share_client(readings, sources, items, todo)
            if torn:
                self._by_own_client(readings, sources, items, todo)
        return added

    def _match(self, op: Opening, client: str | None, transport: str | None, conf: float) -> Match:
        sig = self.signature(op.protocol, client or "unknown", transport or "tcp")
        return Match(sig, 0, "opening", conf, False)

    def _pending(self, key: str, src: str | None, t: float) -> _Pending | None:
        pend = self._hellos.get(key)
        if pend is not None and not pend.first_seen_after(self._named.get(key)):
            return None
        if pend is None and src is None:
            # a piece in the HOSTNAME slot (a lone word: FIELD_GUIDE 3) has
            # no sender: the hello of any source logged this very second
            for p in reversed(self._hellos.values()):
                if 0 <= t - p.t <= _SAME_CONNECTION:
                    return p
                break
        if pend is not None and t - pend.t > HELLO_WAIT:
            del self._hellos[key]
            return None
        return pend

    def _feed_hello(self, line: bytes, src: str | None, t: float, i: int) -> None:
        """A catalogue line of a source with a hello under way: one more piece
        (or the start of a new hello)."""
        key = src or "-"
        if line[:1] == b"\x16":
            op = recognise(line)
            if op is not None and op.hello is not None:
                if op.expected is not None:
                    self._remember(self._hellos, key, _Pending([line], op.expected, t, [], op, batch=self._batch))
                else:
                    self._hellos.pop(key, None)
                return
        pend = self._pending(key, src, t)
        if pend is not None:
            if pend.room(line, t):
                pend.pieces.append(line)
                pend.t = t
            else:
                self._hellos.pop(key, None)

    def _read(self, line: bytes, src: str | None, t: float, transport: str | None, i: int,
              readings: list[Any]) -> tuple[Opening, str | None, tuple[str, ...], float] | None:
        key = src or "-"
        named = self._named.get(key)
        # (line i's catalogue reading: still the one it came with, a line's
        # reading is replaced only once the pass has got to it)
        r = readings[i]
        if r is not None and not r.sure and named is not None and 0 <= t - named <= SCAN_CONTEXT:
            # A line the catalogue finds ambiguous (``*1\r``, ``stats\r``,
            # a lone CR) from a source the catalogue named lines of lately:
            # the correlator decides it from that scan.
            return None
        pend = self._pending(key, src, t) if transport != "udp" and not self._lossy else None
        # a line that opens something itself (a new hello, an RDP cookie) is
        # no piece of the previous one
        starts = recognise(line, transport) is not None
        if pend is not None and not starts and _PIECE.search(line) is not None:
            if pend.room(line, t):
                pend.pieces.append(line)
                if pend.batch != self._batch:
                    pend.lines, pend.batch = [], self._batch
                pend.lines.append(i)
                pend.t = t
                op = None if pend.broken else recognise(rejoin(pend.pieces, pend.expected), transport)
                if op is None or op.protocol != pend.first.protocol:
                    # bytes lost on the way (octet counting ate a digit and
                    # the byte after it): still the hello's piece, by length
                    pend.broken = True
                    op = pend.first
                else:
                    if op.expected is None:
                        self._hellos.pop(key, None)
                client, cands = self.table.identify(op)
                # earlier pieces of this batch learn the whole hello
                if not pend.broken:
                    for j in pend.lines[:-1]:
                        rj = readings[j]
                        if rj is not None and (rj.extra or {}).get("protocol") == op.protocol:
                            m = self._match(op, client, transport, op.confidence)
                            readings[j] = replace(rj, matches=(m,), sure=(m,),
                                                  by_id=MappingProxyType({m.signature.id: m}),
                                                  extra=MappingProxyType(_extra(op, client, cands)))
                return op, client, cands, op.confidence
            self._hellos.pop(key, None)
        op = recognise(line, transport)
        if op is not None:
            client, cands = self.table.identify(op)
            if (op.hello is not None or op.expected is not None) and transport != "udp":
                if op.expected is not None:
                    self._remember(self._hellos, key, _Pending([line], op.expected, t, [i], op, batch=self._batch))
                else:
                    self._hellos.pop(key, None)
            kind = _CONTINUED.get(op.protocol)
            conn = self._conn(key, t)
            if op.protocol == "http-header" and conn is not None and conn[0] == "http":
                # a header line of the request this source just opened
                op = Opening("http-request", 0.8, {**conn[2].fields, **op.fields})
                client, cands = self.table.identify(op)
                self._remember(self._conns, key, ("http", t, op))
                return op, client, cands, 0.8
            if kind is not None:
                self._remember(self._conns, key, (kind, t, op))
            return op, client, cands, op.confidence
        conn = self._conn(key, t)
        if conn is not None:
            kind, _t0, first = conn
            ok = (kind == "http" and _HTTP_CONT.fullmatch(line.strip(b" \t")) is not None) or \
                 (kind == "redis" and _RESP_PIECE.fullmatch(line.strip(b" \t")) is not None) or \
                 (kind in ("sip", "memcached") and _CR_ONLY.fullmatch(line) is not None)
            if ok:
                proto = "http-request" if kind == "http" else first.protocol
                op = Opening(proto, 0.75, dict(first.fields))
                client, cands = self.table.identify(op)
                self._remember(self._conns, key, (kind, t, first))
                return op, client, cands, 0.75
        return None

    def _conn(self, key: str, t: float) -> tuple[str, float, Opening] | None:
        """The connection this source opened less than a second ago, unless
        the catalogue named a line of the source since; a request line in
        the HOSTNAME slot has no source yet (``-``): the next lines of its
        connection, which name one, continue it."""
        named = self._named.get(key, float("-inf"))
        for k in (key, "-"):
            conn = self._conns.get(k)
            if conn is not None and 0 <= t - conn[1] <= _SAME_CONNECTION and \
                    conn[1] >= max(named, self._named.get(k, float("-inf"))):
                return conn
        return None

    def _contradicted(self, readings: Sequence[Any], sources: Sequence[str | None],
                      items: Sequence[tuple[float, Any]], i: int, r: Any,
                      full: Callable[[int], tuple[Any, str | None, str | None]]) -> bool:
        """A catalogue payload match whose line is a shared request line
        (one our recogniser reads as an HTTP request too), followed by a line
        of the same connection that is not that payload's next piece but a
        header line: another client sent it."""
        m = r.sure[0]
        # (the caller has checked m.kind, its signature's match and the line's
        # first byte: ``amend``, inline)
        if not _http_request_line(r.line):
            return False
        t, src = items[i][0], sources[i]
        sid, nxt = m.signature.id, m.fragment + 1
        for j in range(i + 1, min(len(items), i + 4)):
            if items[j][0] - t > _SAME_CONNECTION:
                return False
            if src is not None and sources[j] is not None and sources[j] != src:
                continue
            rj = readings[j]
            if src is None and rj is not None and rj.sure and \
                    not any(x.signature.id == sid for x in rj.sure):
                # no sender to follow, and the next line is another probe's:
                # it says nothing about this one
                return False
            # (by_id holds every signature among the matches: a line without
            # this one's is no next piece of it)
            if rj is not None and sid in rj.by_id and any(x.signature.id == sid and x.fragment == nxt
                                                          for x in rj.matches):
                return False
            line = rj.line if rj is not None and rj.line else None
            if line is None:
                base = full(j)[0]
                line = base.rebuilt.line if base is not None and base.rebuilt is not None else b""
            return _is_header(line)
        return False

    def _adopt(self, readings: Sequence[Any], sources: list[str | None],
               items: Sequence[tuple[float, Any]]) -> None:
        """A request line in the HOSTNAME slot names no sender; the next
        opening line of its connection does (as ``_enrich`` does for
        catalogue payloads)."""
        for i, r in enumerate(readings):
            if r is None or sources[i] is not None or not r.extra:
                continue
            for j in range(i + 1, min(len(items), i + 8)):
                if items[j][0] - items[i][0] > _SAME_CONNECTION:
                    break
                rj = readings[j]
                if sources[j] is not None and rj is not None and (rj.extra or {}).get("protocol") == r.extra.get("protocol"):
                    sources[i] = sources[j]
                    break

    def _share_client(self, readings: list[Any], sources: Sequence[str | None],
                      items: Sequence[tuple[float, Any]], todo: Sequence[int] | None) -> None:
        """The lines of one HTTP request (its request line and the header
        lines after it, one sender, each within ``_SAME_CONNECTION`` of the
        one before) were sent by one client: when exactly one client is
        named among them (a User-Agent the known-client table or the
        catalogue knows: sqlmap's, hydra's), the lines named only by their
        protocol are named after it too. A request whose lines name two
        clients, or none, stays as it is."""
        groups: dict[str, list[int]] = {}  # per sender, the request being read
        done: list[list[int]] = []
        for i in (range(len(readings)) if todo is None else todo):
            r = readings[i]
            src = sources[i]
            if r is None or src is None or not r.sure:
                continue
            extra = r.extra or {}
            opening = extra.get("protocol") == "http-request"
            if not opening and not (r.sure[0].signature.family != "client" and _is_header(r.line)):
                continue
            g = groups.get(src)
            if opening and _http_request_line(r.line):
                if g is not None:
                    done.append(g)
                groups[src] = [i]
            elif g is not None and 0 <= items[i][0] - items[g[-1]][0] <= _SAME_CONNECTION:
                g.append(i)
            elif g is not None:
                done.append(groups.pop(src))
        done.extend(groups.values())
        for g in done:
            if len(g) < 2:
                continue
            named = set()
            for i in g:
                r = readings[i]
                extra = r.extra or {}
                if extra.get("protocol") == "http-request":
                    if extra.get("client"):
                        named.add(extra["client"])
                elif r.sure[0].signature.scanner != "unknown":
                    named.add(r.sure[0].signature.scanner)
            if len(named) != 1:
                continue
            client = named.pop()
            for i in g:
                r = readings[i]
                extra = r.extra or {}
                if extra.get("protocol") != "http-request" or extra.get("client"):
                    continue
                readings[i] = self._with_client(r, client)

    def _by_own_client(self, readings: list[Any], sources: Sequence[str | None],
                       items: Sequence[tuple[float, Any]], todo: Sequence[int] | None) -> None:
        """An opening whose bytes two clients send alike (sslscan and
        testssl.sh send some ClientHellos byte for byte: ``client_candidates``)
        is named after the one of them that the same sender's other openings
        of this batch, within ``SCAN_CONTEXT`` seconds, name on their own,
        when exactly one of them does."""
        seen: dict[str, list[tuple[float, str]]] = {}
        torn: list[int] = []
        for i in (range(len(readings)) if todo is None else todo):
            r = readings[i]
            src = sources[i]
            if r is None or src is None or not r.extra:
                continue
            client = r.extra.get("client")
            if client:
                seen.setdefault(src, []).append((items[i][0], client))
            elif r.extra.get("client_candidates"):
                torn.append(i)
        for i in torn:
            r, src, t = readings[i], sources[i], items[i][0]
            cands = set(r.extra["client_candidates"])
            named = {c for tc, c in seen.get(src, ()) if c in cands and abs(tc - t) <= SCAN_CONTEXT}
            others = {c for tc, c in seen.get(src, ()) if abs(tc - t) <= SCAN_CONTEXT} - named
            if len(named) != 1 or others:
                continue  # (a sender whose openings name other clients too says nothing)
            readings[i] = self._with_client(r, named.pop())

    def _with_client(self, r: Any, client: str) -> Any:
        """Opening reading ``r`` (named by its protocol only) named after
        ``client``: its match, and ``client`` in its fields."""
        old = r.sure[0]
        sig = self.signature(old.signature.probe, client, old.signature.transport)
        m = Match(sig, 0, "opening", old.confidence, False)
        extra = {k: v for k, v in (r.extra or {}).items() if k != "client_candidates"}
        extra["client"] = client
        return replace(r, matches=(m,), sure=(m,), by_id=MappingProxyType({sig.id: m}),
                       extra=MappingProxyType(extra))


def hostname_was_payload(line: bytes, rebuilt_line: bytes, source: str | None) -> bool:
    """Did the reading that matched (``line``) need the HOSTNAME ``source``
    put back in front of rebuild's line (``show info\r`` logged as HOSTNAME
    ``show``, TAG ``info#015``: FIELD_GUIDE 3)? Then that word was the
    payload's, not the sender's: the line has no sender (the next line of
    its connection may lend one, see ``_enrich._adopt_senders``)."""
    if not source or line == rebuilt_line:
        return False
    word = source.encode("utf-8", "surrogateescape")
    return line == word or line.startswith(word + b" ")


def _extra(op: Opening, client: str | None, candidates: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"protocol": op.protocol, "client": client}
    if candidates and client is None:
        out["client_candidates"] = list(candidates)
    out.update(op.fields)
    return out


_APP_LOG = re.compile(rb'"[A-Z]{3,8} \S+ HTTP/|\] "|" [0-9]{3} ')


def seen_in(shape: str, kind: str, line: bytes) -> str:
    """``application-log`` for a marker that another daemon's log line (or
    another field of the record) carries, else ``syslog-listener``."""
    if shape.startswith("field:"):
        return "application-log"
    if kind == "marker" and _APP_LOG.search(line) is not None:
        return "application-log"
    return "syslog-listener"


def literals() -> list[bytes]:
    """Raw opening bytes the chunk prefilter must look for (escaped by the
    caller in each dialect): what the lines ``recognise`` reads start with,
    and what the continuation pieces of a ClientHello hold."""
    out = [b"\x16\x03\x01", b"\x16\x03\x00", b"\x16\x03\x02", b"\x16\x03\x03", b"\x16\x03\x04",
           b" HTTP/1.1\r", b" HTTP/1.0\r", b" SIP/2.0\r", b"SSH-2.0-", b"SSH-1.99-", b"SSH-1.5-",
           b"Cookie: mstshash=", b"\xffSMBr", b"\xfeSMB@\x00", b"\x00\x00\x00\x00\x00\x00\x00\x00\x01\x10\x04",
           b"\x00\x00\x00\x00\x00\x00\x00\x00\x01\x10\x02", b"\x00\x00\x00\x00\x00\x00\x00\x00! \"",
           b"\x00\x01\x00\x00\x00\x00\x00", b"\x01\x00\x00\x01\x00\x00\x00", b"\x01 \x00\x01\x00\x00\x00",
           b"\x03\x00\x00", b"\r\n$", b"stats\r", b"version\r"]
    out += [b"*%d\r" % k for k in range(1, 10)] + [b"$%d\r" % k for k in range(1, 20)]
    out += [h + b": " for h in (b"User-Agent", b"Accept", b"Host", b"Authorization", b"Connection",
                                b"Accept-Encoding", b"Accept-Language", b"Cache-Control", b"Content-Type",
                                b"Content-Length", b"Cookie", b"Pragma", b"Referer", b"Upgrade")]
    return out


def continuation_bytes() -> bytes:
    """Control bytes whose escaped forms mark a binary continuation piece
    (TAB, LF and CR left out: benign text has those)."""
    return bytes(b for b in range(0x20) if b not in (0x09, 0x0A, 0x0D))
