"""Per-source correlation: lines of one sender close in time belong together.

Theory of operation
-------------------
* rsyslog logs one TCP connection or datagram as one or more lines that share
  only the sender address and nearly the same time (FIELD_GUIDE 1, 5): there
  is no source port to link them. So the key is the *source* (sender
  address; the caller falls back to the record's host field), and lines of
  one source within ``window`` seconds of each other are one connection.
* ``observe(source, t, matches, following=...)`` is called for every line the
  engine produced matches for, in stream order, and returns a ``Verdict``:

  - a line with a distinctive match is a probe line on its own; it becomes
    the source's *context* (signature, confidence, time);
  - a line with only ambiguous matches (``\\r``, a common word) inherits the
    context's probe when the context is at most ``window`` old and the same
    signature could have produced the line (``GET / HTTP/1.0\\r`` then
    ``\\r``). Otherwise it stays untagged.
  - Look-behind across chunks, look-ahead only inside a chunk: a record
    stream cannot be held back to wait for the next line without adding
    latency to every record, but a chunk is processed at once, so the stage
    passes the next distinctive match of the same source in the same chunk
    as ``following``. It only counts when the ambiguous line can be an
    *earlier* piece of that payload (a connection's lines are logged in
    order). An ambiguous line that is the last line of its chunk and comes
    before its context stays untagged (documented miss; it is not a
    distinctive line anyway).
  - a line that is a scanner's *whole* probe but says nothing alone
    (``HELP\\r``, nmap's Help; Sqlping's one-byte datagram), or the first
    of the lines that together are a whole probe (GenericLines' two lone
    CRs, found by the caller's look-ahead), is tagged, at a modest
    confidence and ``via="scan"``, when its source is in the middle of a
    scan by that scanner (at least two different probes seen on distinctive
    lines, not idle); the lines after it inherit from it. A source with no
    scan never gets such a line tagged (a Windows forwarder's CRLF).
  - consecutive lines of the same signature within ``window`` form one
    *group* (``group_lines`` counts them); all lines of a source form one
    *scan* until the source is silent for ``scan_idle``; ``scan_id`` is a
    hash of the source and the scan's first time, so replaying the same log
    gives the same ids. A scan that was going through its scanner's order
    when it ended on silence hands its place to the source's next scan if
    that one's first placed line comes later in the order: the same scan
    whose lines in between a collector dropped (``in_order``).

* **Event time, not wall clock.** ``t`` is the record's own time. Replaying
  a day of logs through probetag in a minute then groups lines exactly as
  they happened, and ``expire(now)`` must be called with a time on the same
  scale: the stage uses the highest event time it has seen, a live server
  may pass the wall clock (records then arrive in near real time).
* Bounded: at most ``max_sources`` sources are tracked; the least recently
  seen is evicted (its scan summary is emitted early and the eviction is
  counted as ``correlation_evicted``). Only lines with a distinctive match
  create state, so benign ``#015`` lines cannot fill the table.
* Bounded in bytes too (``max_bytes``): a source is a peer-chosen string (a
  2 KiB one costs as much as a whole scan's state), so counting sources
  alone let 100,000 of them hold ~400 MB. Each scan's cost is estimated as
  it grows (the source string's real size, a fixed cost per scan, per
  probe/scanner entry and per late-named line: figures measured with
  tracemalloc, ``_SCAN_BYTES`` and below) and so are the summaries of ended
  scans until ``expire`` hands them over. Past ``max_bytes`` the least
  recently seen sources are evicted (``correlation_evicted{reason="bytes"}``);
  if the summaries waiting for ``expire`` alone still exceed it (a flood of
  new sources between two expiries), the oldest of them are dropped and
  counted (``correlation_summaries_dropped``): their scans were one line
  long, and memory comes first.
* ``expire(now)`` returns summary dicts for scans idle for ``scan_idle``
  (plus any ended early by a new scan of the same source or an eviction).
"""

from __future__ import annotations

import hashlib
import sys
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ._catalogue import Signature
from ._engine import Match

__all__ = ["Correlator", "Verdict"]

#: An inherited probe is a little less sure than the line it leans on.
_INHERIT_FACTOR = 0.95
#: A source is scanning once this many different probes came from it on
#: distinctive lines; then a lone line that is a whole probe of the same
#: scanner (``HELP\r``) is tagged with this confidence.
_SCAN_MIN_PROBES = 2
#: A sender-less line's context lends itself to another source's ambiguous
#: line only this soon after (one connection's lines are logged together;
#: file formats keep whole seconds).
_ORPHAN_WINDOW = 1.0
_SCAN_CONFIDENCE = 0.6
#: Steps back in the order a scan may take and still be placed by it (nmap
#: sends the probes that name the target port first, then its order; the
#: -sU port scan's payloads come before the UDP service probes).
_MAX_STEPS_BACK = 3
#: At most this many late-named lines listed in one scan's summary.
_MAX_LATE = 256
#: Estimated bytes held (tracemalloc, CPython 3.11, 64-bit): one scan's
#: state without its source string; one more probe/scanner/transport entry;
#: one late-named line; one ended scan's summary without its source string.
_SCAN_BYTES = 1200
_ENTRY_BYTES = 120
_LATE_BYTES = 360
#: A late entry that also says ``was`` (six keys: the dict's next size).
_WAS_BYTES = 88
_SUMMARY_BYTES = 1100


# Not frozen: one is made per named line and handed to its caller alone
# (a frozen dataclass's __init__ costs four times as much).
@dataclass(slots=True)
class Verdict:
    match: Match
    confidence: float
    scan_id: str
    group: int  # ordinal of the group inside the scan
    group_lines: int  # lines in the group so far, this one included
    inherited: bool
    #: what decided: the line itself, the source's preceding context, a
    #: following line of the chunk, or the source's ongoing scan
    via: str = "line"


@dataclass(slots=True)
class _Scan:
    source: str
    scan_id: str
    first: float
    last: float
    lines: int = 0
    probes: dict[str, int] = field(default_factory=dict)
    scanners: dict[str, int] = field(default_factory=dict)
    #: scanners named by bytes only they send (not ``Signature.shared_with``)
    own: set[str] = field(default_factory=set)
    #: (probe, transport) seen on distinctive lines: nmap's TCP and UDP
    #: probes of one name (Help, SIPOptions) are two probes
    sure_probes: set[tuple[str, str]] = field(default_factory=set)
    sure_transports: set[str] = field(default_factory=set)  # their transports
    ctx_frag: int = -1  # the last fragment of the context's payload seen
    #: furthest place in its scanner's order that a distinctive line reached,
    #: per (scanner, transport); and whether a probe came again (several ports)
    max_pos: dict[tuple[str, str], int] = field(default_factory=dict)
    repeated: bool = False
    #: per (scanner, transport), [placed, last_pos, back]: distinctive lines
    #: with a place in that order, the last place, and how often one came
    #: before the place of the previous one: a scanner going through its
    #: order has few such steps back. One per transport: ``-sS -sU -sV``
    #: goes through the TCP and the UDP order at once, from one source.
    orders: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    #: per (scanner, transport), (placed, last_pos, back) of the scan this
    #: source's previous one ended on silence with, while going through
    #: that order (``observe``)
    resume: dict[tuple[str, str], tuple[int, int, int]] | None = None
    #: the orders that say nothing more of this scan: it left them (``in_order``
    #: and ``may_place`` no longer count them) and a probe came again
    #: (``max_pos`` is read no more); their places are not kept
    past_order: set[tuple[str, str]] | None = None
    #: some order goes through its scanner's order (``in_order``); no order
    #: has two places yet (``may_place``): kept by ``_place``
    ordered: bool = False
    young: bool = True
    #: signature id -> (probe, transport) of every line counted (``context``)
    sent: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: lines that had already left when their probe was named (serve)
    late: list[dict[str, Any]] = field(default_factory=list)
    cost: int = 0  # estimated bytes held (see max_bytes)
    # context: the last distinctive match and its time
    ctx: Match | None = None
    ctx_conf: float = 0.0
    ctx_t: float = float("-inf")
    group: int = 0
    group_lines: int = 0
    group_sig: str | None = None
    group_t: float = float("-inf")
    group_frag: int = -1


def _step(o: list[int], pos: int) -> None:
    """One more distinctive line at place ``pos`` of an order's
    [placed, last place, steps back]."""
    if pos != o[1]:
        if o[0] and pos < o[1]:
            o[2] += 1
        o[0] += 1
        o[1] = pos


def _going(o: list[int]) -> bool:
    """Does an order's [placed, last place, steps back] go through it: two
    places or more, at most ``_MAX_STEPS_BACK`` steps back?"""
    return o[0] >= 2 and o[2] <= _MAX_STEPS_BACK


def _scan_id(source: str, first: float) -> str:
    return hashlib.blake2b(f"{source}|{first:.6f}".encode("utf-8", "surrogateescape"),
                           digest_size=8).hexdigest()


class Correlator:
    def __init__(self, window: float = 5.0, scan_idle: float = 60.0, max_sources: int = 100_000,
                 metrics: Any = None, max_bytes: int = 64 * 1024 * 1024) -> None:
        if max_sources <= 0:
            raise ValueError("max_sources must be > 0")
        if max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        self.window = window
        self.scan_idle = scan_idle
        self.max_sources = max_sources
        self.max_bytes = max_bytes
        self.metrics = metrics
        self._sources: OrderedDict[str, _Scan] = OrderedDict()
        #: ended scans' summaries, each with its estimated bytes
        self._ended: deque[tuple[dict[str, Any], int]] = deque()
        #: estimated bytes held: live scans plus summaries not yet handed over
        self.bytes = 0
        self._ended_bytes = 0
        #: signature id -> pieces its payload logs (``Detector.fragment_count``)
        self.fragment_count: Mapping[str, int] = {}
        #: signature -> its place in its scanner's send order, or None
        #: (``_sequence.ScanOrder.position``); None: no order known
        self.position: Any = None
        self.high_water = float("-inf")  # highest event time observed
        self.last_context = float("-inf")  # latest time any source had a probe context
        #: the source whose distinctive line set ``last_context`` (None: none yet)
        self.last_source: str | None = None

    def __len__(self) -> int:
        return len(self._sources)

    def observe(self, source: str | None, t: float, matches: Sequence[Match], *,
                following: Match | None = None, whole: Sequence[Match] = (),
                sure: Sequence[Match] | None = None,
                by_id: Mapping[str, Match] | None = None) -> Verdict | None:
        """The verdict for one line, or None when it stays untagged.
        ``whole``: those ambiguous ``matches`` that are a signature's complete
        payload on their own (``HELP\\r`` is all of nmap's Help probe).
        ``sure``: the distinctive ones among ``matches``, in their order,
        and ``by_id``: ``matches`` by signature id (the last of an id wins),
        when the caller has them already."""
        if not matches:
            return None
        if t > self.high_water:
            self.high_water = t
        src = source or "-"
        if sure is None:
            sure = [m for m in matches if not m.ambiguous]
        scan = self._sources.get(src)
        resume = None
        if scan is not None and t - scan.last > self.scan_idle:
            resume = {key: (o[0], o[1], o[2]) for key, o in scan.orders.items() if _going(o)} or None
            self._end(src)  # silent too long: that scan is over
            scan = None
        if sure:
            first = sure[0]
            if (scan is not None and first.kind not in ("exact", "marker")
                    and len(scan.sure_probes) >= _SCAN_MIN_PROBES
                    and (first.signature.transport not in scan.sure_transports
                         or self._port_scan_payload_late(scan, first))):
                # A damaged or partial piece of a payload of the other
                # transport, in the middle of a scan that has used only one:
                # a coincidence of bytes, not that probe.
                return None
            scan = self._touch(src, t, scan)
            scan.ctx, scan.ctx_conf, scan.ctx_t = first, first.confidence, t
            scan.ctx_frag = first.fragment
            if resume is not None:
                scan.resume = resume
            if t >= self.last_context:
                self.last_source = None if src == "-" else src
            self.last_context = max(self.last_context, t)
            sig = first.signature
            pt = (sig.probe, sig.transport)
            if pt in scan.sure_probes:
                if scan.group_sig != sig.id:
                    scan.repeated = True
            else:
                scan.sure_probes.add(pt)
                self._grow(scan, _ENTRY_BYTES)
            if sig.transport not in scan.sure_transports:
                scan.sure_transports.add(sig.transport)
                self._grow(scan, _ENTRY_BYTES)
            if self.position is not None:
                key = (sig.scanner, sig.transport)
                past = scan.past_order
                pos = self.position(sig) if past is None or key not in past else None
                if pos is not None:
                    self._place(scan, key, pos)
            return self._record(scan, first, first.confidence, t, inherited=False)
        # Only ambiguous matches: lean on the context.
        by_sig = by_id if by_id is not None else {m.signature.id: m for m in matches}
        if scan is not None and scan.ctx is not None and 0 <= t - scan.ctx_t <= self.window:
            # A later piece of the context's payload than the last one seen
            # (a third lone CR is not GenericLines, whose payload has two).
            sid = scan.ctx.signature.id
            behind = by_sig.get(sid)
            if behind is not None and behind.fragment <= scan.ctx_frag:
                # (the engine names one fragment per signature; a piece that
                # repeats, like GenericLines' CR, is any of them)
                total = self.fragment_count.get(sid)
                if total is not None and scan.ctx_frag >= total - 1:
                    behind = None
                else:
                    behind = Match(behind.signature, scan.ctx_frag + 1, behind.kind, behind.confidence,
                                   behind.ambiguous)
            if behind is not None:
                scan = self._touch(src, t, scan)
                scan.ctx_t = t  # the connection is still talking
                scan.ctx_frag = behind.fragment
                self.last_context = max(self.last_context, t)
                return self._record(scan, behind, scan.ctx_conf * _INHERIT_FACTOR, t, inherited=True,
                                    via="context")
        if following is not None:
            ahead = by_sig.get(following.signature.id)
            # rsyslog logs one connection's lines in order, so a line that
            # comes first must be an earlier piece of the same payload.
            if ahead is not None and ahead.fragment < following.fragment:
                scan = self._touch(src, t, scan)
                return self._record(scan, ahead, following.confidence * _INHERIT_FACTOR, t,
                                    inherited=True, via="lookahead")
        orphan = self._sources.get("-") if src != "-" else None
        if orphan is not None and orphan.ctx is not None and 0 <= t - orphan.ctx_t <= _ORPHAN_WINDOW:
            # The line before it named no sender (HOSTNAME was the payload's
            # first word, FIELD_GUIDE 3.3) and came in an earlier batch, so it
            # could not take this line's sender: the next piece of its
            # payload right after it is that connection's.
            behind = by_sig.get(orphan.ctx.signature.id)
            if behind is not None:
                scan = self._touch(src, t, scan)
                self.last_context = max(self.last_context, t)
                return self._record(scan, behind, orphan.ctx_conf * _INHERIT_FACTOR, t, inherited=True,
                                    via="context")
        if whole and scan is not None and len(scan.sure_probes) >= _SCAN_MIN_PROBES:
            # A source in the middle of a scan sends a line that is, whole, one
            # of its scanner's probes: that is the best reading of it.
            cands = [m for m in whole if m.signature.scanner in scan.scanners and self._in_place(scan, m)]
            if len({m.signature.probe for m in cands}) == 1:
                scan = self._touch(src, t, scan)
                # The rest of a multi-line whole probe (GenericLines' second
                # CR) then leans on this line as its context.
                scan.ctx, scan.ctx_conf, scan.ctx_t = cands[0], _SCAN_CONFIDENCE, t
                scan.ctx_frag = cands[0].fragment
                return self._record(scan, cands[0], _SCAN_CONFIDENCE, t, inherited=True, via="scan")
        return None

    def context(self, source: str | None) -> tuple[float, Any, int, frozenset[str], frozenset[tuple[str, str]]] | None:
        """(time, signature, fragment) of the source's last distinctive
        line, the probes its scan sent so far, and the same as (probe,
        transport); None without a scan."""
        scan = self._sources.get(source or "-")
        if scan is None or scan.ctx is None:
            return None
        return (scan.ctx_t, scan.ctx.signature, max(scan.ctx.fragment, scan.ctx_frag), frozenset(scan.probes),
                frozenset(scan.sent.values()))

    def note_late(self, source: str | None, t: float, m: Match, was: Signature | None = None) -> bool:
        """A line of ``source`` at ``t`` that left untagged was ``m``'s probe
        (found later, by its place in the scan): counted in the scan (its
        probes, lines and scanners, for the next placements and the summary)
        and listed in its summary. ``was``: the protocol name (a client's
        opening, scanner unknown) the line left with: the line was counted
        under it, and now counts under ``m``'s probe instead; its entry says
        ``was``. The scan's context and place in the order stay where the
        lines as they came put them: the line is older than both. False
        when the source has no scan to say it in."""
        scan = self._sources.get(source or "-")
        if scan is None:
            return False
        sig = m.signature
        if was is not None and scan.probes.get(was.probe):
            # (the line is in the scan's count already, under its protocol)
            _drop_one(scan.probes, was.probe)
            _drop_one(scan.scanners, was.scanner)
        else:
            scan.lines += 1
        n = scan.probes.get(sig.probe)
        scan.probes[sig.probe] = 1 if n is None else n + 1
        grew = 0 if n is not None else 2 * _ENTRY_BYTES
        if sig.id not in scan.sent:
            scan.sent[sig.id] = (sig.probe, sig.transport)
            grew += _ENTRY_BYTES
        n = scan.scanners.get(sig.scanner)
        scan.scanners[sig.scanner] = 1 if n is None else n + 1
        if n is None:
            grew += _ENTRY_BYTES
        if t < scan.first:
            scan.first = t
        if len(scan.late) < _MAX_LATE:
            entry = {"time": t, "probe": sig.probe, "id": sig.id, "scanner": sig.scanner, "fragment": m.fragment}
            if was is not None:
                entry["was"] = was.probe
                grew += _WAS_BYTES
            scan.late.append(entry)
            grew += _LATE_BYTES
        if grew:
            self._grow(scan, grew)
        return True

    def _place(self, scan: _Scan, key: tuple[str, str], pos: int) -> None:
        """A distinctive line at place ``pos`` of the order ``key``."""
        if pos > scan.max_pos.get(key, -2):
            scan.max_pos[key] = pos
        o = scan.orders.get(key)
        if o is None:
            o = scan.orders[key] = [0, -2, 0]
            self._grow(scan, _ENTRY_BYTES)
        if scan.resume is not None:
            r = scan.resume.pop(key, None)
            if r is not None and not o[0] and pos > r[1]:
                # The order goes on where the scan that ended on silence left
                # it: the same scan, whose lines in between a collector
                # dropped (Fluent Bit's RFC 5424 parser drops every record
                # with an empty message).
                o[0], o[1], o[2] = r
        _step(o, pos)
        if o[0] >= 2 and (scan.young or scan.ordered != (o[2] <= _MAX_STEPS_BACK)):
            scan.young = False
            scan.ordered = any(map(_going, scan.orders.values()))
        if scan.repeated and o[2] > _MAX_STEPS_BACK and o[0] >= 2:
            if scan.past_order is None:
                scan.past_order = set()
            scan.past_order.add(key)

    def _port_scan_payload_late(self, scan: _Scan, m: Match) -> bool:
        """A -sU port-scan payload (place -1) once the scan's service probes
        of that transport have begun: nmap sends those payloads first."""
        if self.position is None or scan.repeated:
            return False
        sig = m.signature
        return self.position(sig) == -1 and scan.max_pos.get((sig.scanner, sig.transport), -1) >= 0

    def _in_place(self, scan: _Scan, m: Match, *, current: bool = False) -> bool:
        """Can a line be that probe where the scan has got to? Not a probe
        its scanner sends before probes the scan already sent (a scan of one
        port goes through its scanner's order once); ``current``: the probe
        the scan is at counts as in place (a later piece of its payload)."""
        sig = m.signature
        if sig.family == "udp-payload" and scan.sure_transports and sig.transport not in scan.sure_transports:
            return False  # a -sU port-scan payload in a scan that sent no UDP probe
        if self.position is None or scan.repeated:
            return True
        pos = self.position(sig)
        reached = scan.max_pos.get((sig.scanner, sig.transport))
        return pos is None or reached is None or pos > reached or (current and pos == reached)

    def in_order(self, source: str | None) -> bool:
        """Is the source's scan going through one of its scanner's orders
        (two placed probes or more, at most ``_MAX_STEPS_BACK`` steps back)?
        The sequence pass only places lines of such scans."""
        scan = self._sources.get(source or "-")
        return scan is not None and scan.ordered

    def lines_in_order(self, sigs: Iterable[Any]) -> bool:
        """Do these named lines of one source (stream order) go through their
        scanner's order by ``in_order``'s rule? A batch can hold a scan that
        the correlator ended on a silence of ``scan_idle`` and began again (a
        collector that drops records, Fluent Bit's RFC 5424 parser, leaves
        minutes without a line of a scan that went on): its lines are placed
        by the order all the same."""
        if self.position is None:
            return False
        orders: dict[tuple[str, str], list[int]] = {}  # per order: placed, last, back
        for sig in sigs:
            pos = self.position(sig)
            if pos is not None:
                _step(orders.setdefault((sig.scanner, sig.transport), [0, -2, 0]), pos)
        return any(map(_going, orders.values()))

    def may_place(self, source: str) -> bool:
        """Could the sequence pass place lines of this source's scan: none
        yet or a young one (not known to leave the order), or one going
        through its scanner's order?"""
        scan = self._sources.get(source)
        return scan is None or scan.young or scan.ordered

    def context_live(self, t: float) -> bool:
        """Could a line at time ``t`` lean on some source's context? (False
        lets the stage skip lines that are only a CR.)"""
        return abs(t - self.last_context) <= self.window

    def expire(self, now: float) -> list[dict[str, Any]]:
        """Summaries of scans ended so far and of scans idle at ``now``."""
        idle = [s for s, scan in self._sources.items() if now - scan.last >= self.scan_idle]
        for s in idle:
            self._end(s)
        return self._hand_over()

    def own_scanners(self, source: str | None) -> set[str]:
        """The scanners that ``source``'s ongoing scan sent bytes of that
        only they send (empty: none, or no scan)."""
        scan = self._sources.get(source) if source is not None else None
        return scan.own if scan is not None else set()

    def flush(self) -> list[dict[str, Any]]:
        """End every scan (shutdown)."""
        for s in list(self._sources):
            self._end(s)
        return self._hand_over()

    def _hand_over(self) -> list[dict[str, Any]]:
        out = [summary for summary, _cost in self._ended]
        self.bytes -= self._ended_bytes
        self._ended_bytes = 0
        self._ended.clear()
        return out

    # -- internals -------------------------------------------------------------

    def _touch(self, src: str, t: float, scan: _Scan | None) -> _Scan:
        if scan is None:
            scan = _Scan(src, _scan_id(src, t), t, t)
            scan.cost = _SCAN_BYTES + sys.getsizeof(src)
            self.bytes += scan.cost
            self._sources[src] = scan
            while len(self._sources) > self.max_sources:
                old, _ = next(iter(self._sources.items()))
                self._end(old)
                if self.metrics is not None:
                    self.metrics.inc("correlation_evicted", reason="sources")
            if self.bytes > self.max_bytes:
                self._shed()
        else:
            self._sources.move_to_end(src)
        if t > scan.last:
            scan.last = t
        if t < scan.first:
            scan.first = t
        return scan

    def _record(self, scan: _Scan, m: Match, conf: float, t: float, *, inherited: bool,
                via: str = "line") -> Verdict:
        sig = m.signature
        scan.lines += 1
        n = scan.probes.get(sig.probe)
        scan.probes[sig.probe] = 1 if n is None else n + 1
        grew = 0 if n is not None else 2 * _ENTRY_BYTES  # and the summary's copy
        if sig.id not in scan.sent:
            scan.sent[sig.id] = (sig.probe, sig.transport)
            grew += _ENTRY_BYTES
        n = scan.scanners.get(sig.scanner)
        scan.scanners[sig.scanner] = 1 if n is None else n + 1
        if n is None:
            grew += _ENTRY_BYTES
        if not sig.shared_with and sig.scanner not in scan.own:
            scan.own.add(sig.scanner)
            grew += _ENTRY_BYTES
        if grew:
            self._grow(scan, grew)
        # A new group starts with another signature, after a pause, or when a
        # distinctive line goes back to an earlier fragment (a new connection
        # sending the same probe again).
        same = (scan.group_sig == sig.id and scan.group_lines > 0
                and 0 <= t - scan.group_t <= self.window
                and (inherited or m.fragment > scan.group_frag))
        if same:
            scan.group_lines += 1
        else:
            scan.group += 1
            scan.group_lines = 1
        scan.group_sig = sig.id
        scan.group_t = t
        if not inherited or not same:
            scan.group_frag = m.fragment
        return Verdict(m, round(conf, 4), scan.scan_id, scan.group, scan.group_lines, inherited, via)

    def _grow(self, scan: _Scan, n: int) -> None:
        scan.cost += n
        self.bytes += n
        if self.bytes > self.max_bytes:
            self._shed()

    def _shed(self) -> None:
        """Back under ``max_bytes``. An evicted source leaves a summary of
        nearly its size, so the larger share goes first: the least recently
        seen live source (never the most recent, the one being served) while
        live scans hold at least as much as the waiting summaries, else the
        oldest waiting summary."""
        dropped = 0
        while self.bytes > self.max_bytes:
            if len(self._sources) > 1 and (self.bytes - self._ended_bytes >= self._ended_bytes
                                           or not self._ended):
                self._end(next(iter(self._sources)))
                if self.metrics is not None:
                    self.metrics.inc("correlation_evicted", reason="bytes")
            elif self._ended:
                _summary, cost = self._ended.popleft()
                self.bytes -= cost
                self._ended_bytes -= cost
                dropped += 1
            else:
                break  # one source alone over the bound: bounded by _MAX_LATE and the catalogue
        if dropped and self.metrics is not None:
            self.metrics.inc("correlation_summaries_dropped", dropped)

    def _end(self, src: str) -> None:
        scan = self._sources.pop(src, None)
        if scan is None:
            return
        self.bytes -= scan.cost
        scanners = sorted(scan.scanners, key=lambda k: (-scan.scanners[k], k))
        # Named after a scanner only by bytes that scanner alone sends.
        named = [s for s in scanners if s in scan.own]
        summary = {
            "source": scan.source,
            "scan_id": scan.scan_id,
            "first_seen": scan.first,
            "last_seen": scan.last,
            "probes": dict(sorted(scan.probes.items())),
            "probe_count": len(scan.probes),
            "scanner": named[0] if named else "unknown" if scanners else None,
            "scanners": named if named else ["unknown"] if scanners else [],
            "lines": scan.lines,
            **({"named_late": list(scan.late)} if scan.late else {}),
        }
        cost = (_SUMMARY_BYTES + sys.getsizeof(scan.source)
                + _ENTRY_BYTES * (2 * len(scan.probes) + 2 * len(scanners)) + _LATE_BYTES * len(scan.late)
                + _WAS_BYTES * sum(1 for x in scan.late if "was" in x))
        self._ended.append((summary, cost))
        self._ended_bytes += cost
        self.bytes += cost


def _drop_one(counts: dict[str, int], key: str) -> None:
    n = counts.get(key, 0)
    if n > 1:
        counts[key] = n - 1
    else:
        counts.pop(key, None)
