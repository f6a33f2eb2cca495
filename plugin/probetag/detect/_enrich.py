"""The record path: decoded record -> payload line -> matches -> verdict -> probe map.

Theory of operation
-------------------
* ``Enricher.batch(tag, items)`` takes the records of one chunk that the
  prefilter hit (in stream order) and returns, per record, either ``None``
  (nothing to add: the stage passes the original bytes on) or the
  ``Decision`` from ``probetag.act``.
* Per record: ``probetag.decode.rebuild`` gives the logged line (escapes
  undone), alternative readings, the sender and the record's shape; the
  engine takes the first reading with a distinctive match
  (``Detector.match_best``), gapped readings only for records known to miss
  bytes (``lossy``). rsyslog's ``inputname`` (``imtcp``/``imudp``), when the
  record carries it, restricts signatures to that transport. No match in
  the line: markers are looked for in the record's other top-level fields
  (the ``agent`` of a parsed access log). The sender is the correlation
  key: a sender field, else the HOSTNAME when ``decode.rebuild`` reads it as
  the sender, else (records of no syslog shape) a host field, str or bytes.
  A line whose HOSTNAME was the payload's first word (``GET / HTTP/1.0#015``)
  has no sender; it takes the sender of the next line in the batch that is
  the next piece of the same payload within ``_SAME_CONNECTION`` seconds
  (the ``127.0.0.1 #015`` rsyslog logs right after it).
* The reading of a record (rebuild, then ``match_best``) depends only on
  its payload fields, its transport and what the HOSTNAME rule asked about
  its sender fields (``decode.Senders``), not on its time or its sender
  address; scanners send the same bytes again and again. So readings are
  memoised (``Enricher.reading``): an LRU of ``MEMO_ENTRIES`` keyed by the
  transport, whether sender fields exist, and the value (or absence) of
  every field rebuild reads (``decode.memo_key``: a whole file line without
  its timestamp, a HOSTNAME that is one of the record's senders as just
  that); a hit counts only when this record's sender fields answer
  rebuild's other questions as the first record's did. Keys with more than ``_MEMO_KEY_CHARS`` of text, and
  records with values that cannot be hashed, are read without it. A
  ``Reading`` is immutable; the sender, correlation, the probe map and the
  actions stay per record. ``detect_memo_hits``/``detect_memo_misses``
  count it.
* A line several probes share (``GET / HTTP/1.0\\r`` starts nmap's
  GetRequest and masscan's banner request) is resolved by the following
  lines of the same source in the batch: the payload whose next pieces they
  are wins; otherwise the payload with the fewest pieces still to come.
* Correlation runs over the whole batch in order, with look-ahead inside the
  batch (see ``_correlate``): the next distinctive match of the same source
  within the window is offered to an ambiguous line, and a line that is a
  whole probe (``HELP\\r``, Sqlping's one control byte), or the first of
  the batch's lines of one source that together are a whole probe
  (GenericLines: two lines that are only a CR), may be tagged from its
  source's ongoing scan (``via: scan``, lower confidence). explain hands a
  whole block of a file to one batch, so this look-ahead works there too.
* Client openings (the one hook, in ``batch`` before correlation):
  ``_openings.Openings.amend`` gives lines the catalogue named nothing in
  (and shared request lines whose next line contradicts the catalogue's
  name) a reading named by protocol, with the client only from evidence
  the known-client table holds; their probe maps carry ``protocol``,
  ``client``, ``ja3``, ``ja4``, ``user_agent``... (``Reading.extra``).
  Every probe map says ``seen_in``: ``syslog-listener`` (the probe's own
  bytes) or ``application-log`` (a marker in another daemon's log line or
  in another field of the record).
* Late names (serve; ``late``, off in explain): lines no pass named are
  kept with the named lines of their sender around them (``_pending``,
  bounded by count per sender and in all, and by event time), and offered
  to pass 3 again with the next batch that names a line of a scan going
  through its scanner's order, so a live stream's one-line chunks get the
  picture one batch would. A name found so goes into the scan's summary
  (``Correlator.note_late``): the record has left. A line named only by
  its protocol (a client's opening, scanner unknown) waits so too, as a
  line to place and never as an anchor; a name pass 3 finds for it refines
  the protocol's (its summary entry says ``was``). Bare-CR records the
  stage skipped for want of a probe context come as bytes (``hold``) and
  are decoded only then; so do the records of earlier chunks the stage
  reads as the neighbours before a hit at the head of a chunk.
* A verdict below ``detect.min_confidence`` adds nothing. Otherwise the probe
  map (``detect.output_field``) has at least ``name``, ``scanner``, ``id``,
  ``confidence``, ``transport``, ``payload``, ``fragment``, ``scan_id``,
  ``source``, ``shape``, ``lossy``; ``payload`` is the decoded line with
  bytes shown the Python way (``\\r``, ``\\x00``, ``\\\\``) so the map is
  valid UTF-8 whatever the probe sent.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
import re
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from operator import itemgetter
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from ._correlate import Correlator, Verdict
from ._engine import DEFAULT_CONFIDENCE, Detector, Match
from ._runs import FragmentRuns, RunLine
from ._sequence import SEQUENCE_CONFIDENCE, SequenceNamer, load_orders
from ._openings import Openings, continuation_bytes, hostname_was_payload, seen_in
from ._openings import literals as opening_literals

__all__ = ["Enricher", "Reading", "show_bytes", "HOST_FIELDS"]

#: Record fields that stand in for the sender when no sender field exists.
HOST_FIELDS = ("host", "hostname", "HOSTNAME", "fromhost")
#: Shapes whose rebuild already judged the host field (decode.rebuild: the
#: HOSTNAME is the sender or the payload's first word); when it found no
#: sender there, the host field is the payload's word and is not the sender.
_HOST_AWARE = ("rsyslog-json", "fluentd-syslog", "vector-syslog", "rsyslog-msg", "file-line", "syslog-ng")
#: Shortest raw literal the chunk prefilter looks for; longest escaped form.
_MIN_RAW = 6
_MAX_ESCAPED = 24
#: Shortest line the scan rule may tag as a whole probe (``HELP``).
_MIN_WHOLE = 4
#: Top-level fields searched for markers when the payload line has none.
_MAX_MARKER_FIELDS = 64
#: How many later hit records an ambiguous line may look ahead to.
_LOOKAHEAD = 16
#: Lines of one connection are logged together; file formats keep whole
#: seconds, so two lines of one connection can be a second apart.
_SAME_CONNECTION = 1.0
#: A line made only of control bytes (rsyslog escapes them, FIELD_GUIDE 2.1).
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]+")
#: Memo of readings (rebuild + match, the pure part of a record's analysis):
#: at most this many, least recently used evicted; keys whose text is longer
#: than ``_MEMO_KEY_CHARS`` are not kept.
MEMO_ENTRIES = 4096
_MEMO_KEY_CHARS = 2048
#: Confidence factor of a line named by the whole payload its run of
#: syslog-ng lines rebuilds (``_runs``).
_RUN_FACTOR = 0.95
#: Longest sender value kept as it is. No address or host name is longer
#: (253); a longer one is a peer's choice and would be held, whole, by every
#: per-source table (correlation, openings): it is kept as its first
#: ``_LONG_SOURCE_KEEP`` characters and a hash of the whole.
MAX_SOURCE_CHARS = 256
#: A record with a payload field (one rebuild reads) longer than this is
#: not read as a probe line (counted in
#: ``detect_skipped{reason="line_too_long"}``): no syslog daemon writes one
#: (rsyslog's ``maxMessageSize`` is 8 KiB by default, syslog-ng's
#: ``log-msg-size`` 64 KiB), and undoing the escapes of a few MB would hold
#: the loop for a second. Its markers (user agents...) are still looked for,
#: in the first MAX_LINE_BYTES of each field (as in every record).
MAX_LINE_BYTES = 64 * 1024
_LONG_SOURCE_KEEP = 64
#: Longest line the sequence pass considers (probe lines it names are short).
_MAX_SEQUENCE_LINE = 600
#: Lines kept for the next batches' sequence pass (``Enricher._keep_pending``):
#: the unnamed ones, and the named lines around them it places them by; at
#: most ``_MAX_PENDING`` in all, ``_MAX_PENDING_SOURCE`` of one source (the
#: head of an nmap scan, from GenericLines to its second placed probe, is
#: about 20 lines), ``_MAX_ANCHORS_KEPT`` named ones of a source with no
#: unnamed line kept, none older than ``_PENDING_AGE`` event-time seconds
#: before the newest line.
_MAX_PENDING = 128
_MAX_PENDING_SOURCE = 64
_MAX_ANCHORS_KEPT = 4
_PENDING_AGE = 60.0
#: ``probe_map``'s per-line parts kept, at most (cleared when full).
_MAX_LINE_FACTS = 4096
#: A kept line's (time, sequence line, name or None, was); its sender is
#: the sequence line's.
_TIME = itemgetter(0)
_NAMED = itemgetter(2)
_SECOND = itemgetter(1)
#: Bare-CR records the stage did not decode (no probe context near them,
#: ``Processor.process``) kept as bytes for the next pass 3 that has a scan
#: to place them in: at most this many, of at most ``_MAX_HELD_BYTES`` each.
_MAX_HELD = 32
_MAX_HELD_BYTES = 512
#: Record shapes a Fluentd input made, whose line may have lost a final CR
#: (``Enricher._restore_cr``), and how many tags it remembers as carrying raw
#: CRs.
_CHOMPED = ("fluentd-syslog", "file-line")
_MAX_RAW_TAGS = 256
#: Record fields holding a syslog TAG, and the lengths forwarders cut it at:
#: rsyslog's forward templates print ``%syslogtag:1:32%`` and its parser
#: stops a TAG at 510 bytes (FIELD_GUIDE 3.4).
_TAG_FIELDS = ("ident", "syslogtag", "appname", "app_name", "programname")
_TAG_CUTS = (32, 510)


def _cut(record: Mapping[Any, Any]) -> bool:
    """Is the record's TAG as long as a forwarder cuts it? (its payload may go on)"""
    for key in _TAG_FIELDS:
        v = record.get(key)
        if isinstance(v, (str, bytes)) and len(v) in _TAG_CUTS:
            return True
    return False

#: ``Enricher.batch``'s ``pre`` for an item not analysed yet.
NOT_ANALYSED: Any = object()

_SHOW = {c: chr(c) for c in range(0x20, 0x7F)}
_SHOW.update({c: "\\x%02x" % c for c in list(range(0x20)) + list(range(0x7F, 0x100))})
_SHOW.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x5C: "\\\\"})


def show_bytes(data: bytes) -> str:
    """Bytes as Python shows them inside ``b'...'`` (no quotes): always valid UTF-8."""
    if type(data) is bytes and b"'" not in data:
        # repr escapes exactly these (its quote is ', which is not there),
        # in C: a binary line's translate costs 30 ns a byte
        return repr(data)[2:-1]
    return data.decode("latin-1").translate(_SHOW)


#: Record fields naming the input a line came in on, and what they mean.
#: rsyslog's ``inputname`` property is ``imtcp``/``imudp`` (``imptcp``,
#: ``imrelp`` are TCP too); other pipelines say ``tcp``/``udp``.
TRANSPORT_FIELDS = ("inputname", "protocol", "transport")
_TRANSPORTS = {"imudp": "udp", "udp": "udp", "imtcp": "tcp", "imptcp": "tcp", "imrelp": "tcp",
               "tcp": "tcp", "imgssapi": "tcp"}


def _transport(record: dict[Any, Any]) -> str | None:
    """tcp/udp when the record says which input it came in on, else None."""
    if not any(map(record.__contains__, TRANSPORT_FIELDS)):  # (C-level: the usual case)
        return None
    for key in TRANSPORT_FIELDS:
        v = record.get(key)
        if isinstance(v, str):
            t = _TRANSPORTS.get(v.lower())
            if t is not None:
                return t
    return None


@dataclass(frozen=True, slots=True)
class Reading:
    """What a record's payload says, whoever sent it: the pure part of its
    analysis, which the memo keeps and hands out again (so: immutable).

    rebuilt: ``decode.rebuild``'s result (None for a record without payload);
    line, matches: the reading that matched; shape, lossy: the record's
    shape (``field:KEY`` for a marker in another field) and whether bytes
    are known to be missing; asked: the questions the reconstruction asked
    about the record's sender fields, with their answers
    (``decode.Senders``); and, derived once from line and matches for the
    batch passes: sure (the distinctive matches), ambiguous (no distinctive
    match), by_id (signature id -> match, read-only, for the correlator),
    payload (``show_bytes(line)``), whole (the exact ambiguous matches that
    can be a whole probe starting with this line: (match, its signature's
    piece count), see ``Enricher._whole``), ranking (when the sure matches
    name two probes or more: per sure match the parts of its rank in
    ``Enricher._by_sequence`` that do not depend on the following lines;
    empty otherwise)."""

    rebuilt: Any
    line: bytes
    matches: tuple[Match, ...]
    shape: str
    lossy: bool
    asked: tuple[tuple[bytes, bool], ...]
    sure: tuple[Match, ...]
    ambiguous: bool
    by_id: Mapping[str, Match]
    payload: str
    whole: tuple[tuple[Match, int], ...]
    ranking: tuple[tuple[Match, int, float, tuple[int, str]], ...]
    #: Fields a client opening adds to the probe map (``_openings``).
    extra: Mapping[str, Any] | None = None


def _reading(detector: Detector, rebuilt: Any, line: bytes, matches: Sequence[Match], shape: str,
             lossy: bool, asked: tuple[tuple[bytes, bool], ...] = (), extra: Mapping[str, Any] | None = None) -> Reading:
    matches = tuple(matches)
    sure = tuple(m for m in matches if not m.ambiguous)
    count = detector.fragment_count
    whole: list[tuple[Match, int]] = []
    if not sure:
        core = line.strip(b" \t\r\n")
        alone = len(core) >= _MIN_WHOLE or bool(core and _CONTROL.fullmatch(core))
        spaced = line.strip(b" \t")  # _is_piece(..., 0, line), with the strip done once
        for m in matches:
            if m.kind != "exact":
                continue
            n = count.get(m.signature.id, 1)
            if n == 1:
                if alone:
                    whole.append((m, 1))
            else:
                pieces = detector.logged_cores(m.signature.id)
                if pieces and pieces[0] == spaced:
                    whole.append((m, n))
    ranking: tuple[tuple[Match, int, float, tuple[int, str]], ...] = ()
    if len({(m.signature.probe, m.signature.scanner) for m in sure}) >= 2:
        # (match, pieces still to come, -confidence, catalogue rank)
        ranking = tuple((m, count.get(m.signature.id, 1) - m.fragment - 1, -m.confidence, m.signature.rank)
                        for m in sure)
    by_id = MappingProxyType({m.signature.id: m for m in matches})
    return Reading(rebuilt, line, matches, shape, lossy, asked, sure, not sure, by_id, show_bytes(line),
                   tuple(whole), ranking, extra)


def _long_source(source: str) -> str:
    digest = hashlib.blake2b(source.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()
    return f"{source[:_LONG_SOURCE_KEEP]}~{digest}"


def _as_read(got: tuple[Reading, str | None] | None, reading: Reading | None, source: str | None,
             record: dict[Any, Any]) -> tuple[Reading | None, str | None, str | None]:
    """(reading even without matches, sender, transport) of a line, for _openings."""
    if got is not None:
        return got[0], got[1], _transport(record)
    return reading, source, _transport(record)


def _too_long(record: Mapping[Any, Any], fields: Sequence[str]) -> bool:
    """A text value among the ``fields`` of ``record`` that rebuild reads is
    over ``MAX_LINE_BYTES`` (characters of a str: as many bytes at least)."""
    get = record.get
    for k in fields:
        v = get(k)
        if v is not None and isinstance(v, (str, bytes)) and len(v) > MAX_LINE_BYTES:
            return True
    return False


def _same_source_chain(readings: Sequence[Reading | None], sources: Sequence[str | None]) -> list[int]:
    """For each line, the index of the next line of the batch from the same
    source (None is a source too), or -1: the look-ahead loops step along it
    instead of reading every line in between."""
    nxt = [-1] * len(readings)
    last: dict[str | None, int] = {}
    for i in range(len(readings) - 1, -1, -1):
        if readings[i] is None:
            continue
        src = sources[i]
        nxt[i] = last.get(src, -1)
        last[src] = i
    return nxt


def _is_piece(detector: Detector, sig_id: str, fragment: int, line: bytes) -> bool:
    """Is ``line`` (spacing aside) what rsyslog logs as that fragment?"""
    pieces = detector.logged_cores(sig_id)
    return 0 <= fragment < len(pieces) and pieces[fragment] == line.strip(b" \t")


#: Types of memo key values that hold no text (``decode.ABSENT`` is an object).
_NO_TEXT = frozenset((object, type(None), bool, int, float))


def _key_chars(key: tuple[Any, ...]) -> int:
    """Characters of text in a memo key (a file line's rest is a tuple in it)."""
    n = 0
    for v in key:
        t = type(v)
        if t is str or t is bytes:
            n += len(v)
        elif t is tuple:
            n += _key_chars(v)
        elif t not in _NO_TEXT and isinstance(v, (str, bytes)):
            n += len(v)
    return n


class Enricher:
    def __init__(self, config: Any, detector: Detector, actions: Any, correlator: Correlator,
                 metrics: Any = None, memo_size: int = MEMO_ENTRIES) -> None:
        from .. import decode  # the decoder is its own package; imported once here

        self._rebuild_with = decode.rebuild_with
        self._senders = decode.Senders
        self._sender_fields = decode.sender_fields
        self._str_keys = decode.str_keys
        d = config.detect
        self.fields = tuple(d.fields)
        self.source_fields = tuple(d.source_fields)
        self.dialects = tuple(d.escapes)
        self.min_confidence = d.min_confidence
        self.detector = detector
        self.actions = actions
        self.correlator = correlator
        self.metrics = metrics
        #: Readings memoised (0: off); hits and misses since construction.
        self.memo_size = memo_size
        self.memo_hits = 0
        self.memo_misses = 0
        self._memo: OrderedDict[tuple[Any, ...], Reading] = OrderedDict()
        self._key_fields = decode.fields_read(self.fields)
        self._memo_key = decode.memo_key
        # The default fields: what the record's keys say is worked out once
        # per set of keys (decode.plan_for).
        self._planned = not self.fields and not self.source_fields
        self._plan_for = decode.plan_for
        self._planned_key = decode.planned_key
        self._planned_senders = decode.planned_senders
        self._sender_hostname = decode.sender_hostname
        #: Pass 3: lines named by their place in a scan (None: off).
        self.sequence: SequenceNamer | None = SequenceNamer(detector, _orders())
        #: Lines of earlier batches, offered to the next pass 3 ((time, line,
        #: (signature, fragment) or None: unnamed, the protocol signature an
        #: unnamed line left named by or None) in time order; ``late``: do
        #: that (explain's blocks are whole file parts, and their lines are
        #: written already). ``_unnamed``: how many of them are unnamed.
        self._pending: list[tuple[float, Any, Any, Any]] = []
        #: (the reading's id, signature id and transport, fragment, match
        #: kind) -> (the probe map without the verdict's fields, a cut
        #: piece, the reading): ``probe_map``'s part that depends on the
        #: reading and match alone
        self._line_facts: dict[tuple[Any, ...], tuple[dict[str, Any], bool, Reading]] = {}
        self._unnamed = 0
        #: Sticky: a reading of a syslog-ng line was made, a reading of a
        #: Fluentd record with a raw CR in its text was made (every reading
        #: a batch sees is made by ``reading`` or from one it made): until
        #: then passes 1.5 and 0.5 have nothing to look at.
        self._seen_syslog_ng = False
        self._seen_raw_cr = False
        #: per source: its kept lines, its unnamed ones (``_add_pending``)
        self._kept_count: dict[str | None, int] = {}
        self._kept_waiting: dict[str | None, int] = {}
        #: sources that may be over their bound since the last check
        self._kept_check: set[str | None] = set()
        self.late = True
        #: (tag, entry bytes) the stage skipped (``hold``) and the function
        #: that decodes one into (event time, record), or None.
        self._held: deque[tuple[str, bytes]] = deque(maxlen=_MAX_HELD)
        self._decode_held: Any = None
        # Client openings: lines the catalogue names no probe in (_openings).
        self.openings = Openings()
        #: (payload, scanner) -> entry, for bytes several scanners send
        #: (``Signature.shared_with``), the best-ranked entry per scanner.
        self._same_bytes: dict[tuple[bytes, str], Any] = {}
        for s in sorted(detector.signatures, key=lambda s: s.rank):
            if s.shared_with:
                self._same_bytes.setdefault((s.payload, s.scanner), s)
        #: Pass 1.5: syslog-ng's NUL/LF-cut pieces rebuilt into whole
        #: payloads (``_runs``; None: off).
        self.runs: FragmentRuns | None = FragmentRuns(detector)
        #: Tags whose Fluentd records carried a raw CR (``_restore_cr``).
        self._raw_cr: OrderedDict[str, None] = OrderedDict()

    def clear_memo(self) -> None:
        """Forget every memoised reading (the counters stay)."""
        self._memo.clear()

    def reading(self, record: Mapping[Any, Any], first: str | None, own: tuple[bytes, ...],
                transport: str | None, plan: Any = None) -> Reading:
        """The reading of a record with str keys (``decode.str_keys``) whose
        sender fields are ``first``, ``own`` (``decode.sender_fields``);
        memoised, see ``MEMO_ENTRIES``. ``plan``: the record's
        ``decode.plan_for`` (default fields only)."""
        key = None
        if self.memo_size > 0:
            # Everything the reading depends on: the payload fields rebuild
            # reads (decode.memo_key), the transport, whether the record has
            # sender fields; what rebuild asked about their values is checked
            # on the hit. Config, dialects and detector are this object's own.
            if plan is not None:
                key = (transport, bool(own), *self._planned_key(record, plan, own))
            else:
                key = (transport, bool(own), *self._memo_key(record, self.fields, self._key_fields, own))
            try:
                hit = self._memo.get(key)
            except TypeError:  # a list or map among the values: not memoised
                key = hit = None
            if hit is not None:
                # decode.answers_alike, inline: this is the hot path
                for word, answer in hit.asked:
                    if (word in own) is not answer:
                        break
                else:
                    self._memo.move_to_end(key)
                    self.memo_hits += 1
                    return hit
        if _too_long(record, self._key_fields):
            if self.metrics is not None:
                self.metrics.inc("detect_skipped", reason="line_too_long")
            return _reading(self.detector, None, b"", (), "", False, ())
        who = self._senders(own, first)
        rb = self._rebuild_with(record, who, fields=self.fields, dialects=self.dialects)
        asked = tuple(who.asked)
        if key is not None and asked:
            host = self._sender_hostname(record, self.fields, own)
            if host is not None:
                # The key says "HOSTNAME is one of the senders" (decode.SENDER):
                # the questions about it are answered by the key itself.
                asked = tuple(q for q in asked if q[0] != host[1])
        if rb is None:
            entry = _reading(self.detector, None, b"", (), "", False, asked)
        else:
            # The primary reading, then the other readings rebuild offers
            # (ambiguous escaping such as a literal ``#015``, a doubtful
            # HOSTNAME), then, for records known to miss bytes, gapped matches.
            if rb.shape == "rsyslog-msg":
                # only MSG was printed (``%FROMHOST% %msg%``)
                line, matches = rb.line, self.detector.match_msg(rb.line, transport)
            else:
                collector = None
                if rb.shape == "syslog-ng":
                    collector = "syslog-ng"
                    self._seen_syslog_ng = True
                    if transport is None and (b"\x00" in rb.line or b"\n" in rb.line):
                        transport = "udp"  # syslog-ng cuts a TCP stream at every NUL and LF
                line, matches = self.detector.match_best(
                    (rb.line, *rb.alternatives), transport=transport, lossy=bool(rb.lossy), collector=collector,
                    separator=rb.shape == "fluentd-syslog")
            entry = _reading(self.detector, rb, line, matches, rb.shape, bool(rb.lossy), asked)
            if not self._seen_raw_cr and rb.shape in _CHOMPED and b"\r" in rb.escaped:
                self._seen_raw_cr = True
        if key is not None:
            self.memo_misses += 1
            # (a planned key's field names are no text of the record)
            if _key_chars(key) - (plan.present_chars if plan is not None else 0) <= _MEMO_KEY_CHARS:
                memo = self._memo
                memo[key] = entry
                memo.move_to_end(key)
                if len(memo) > self.memo_size:
                    memo.popitem(last=False)
        return entry

    def analyse(self, record: dict[Any, Any], keep: bool = False) -> tuple[Reading, str | None] | None:
        """(reading, sender) of one record. A record with a payload line that
        matches nothing gets its reading without matches (the sequence pass
        and the client openings read those); a record without one gets None
        (unless ``keep``: then a reading without a rebuilt line)."""
        # rebuild reads the record with bin keys decoded; the rest of the
        # analysis (transport, markers, host fields) reads it as it came.
        if self._planned:
            plan = self._plan_for(record)
            if plan.str_ok:
                rec, rplan = record, plan
            else:
                rec = self._str_keys(record)
                rplan = self._plan_for(rec)
            first, own = self._planned_senders(rec, rplan)
            reading = self.reading(rec, first, own,
                                   None if plan.keyset.isdisjoint(TRANSPORT_FIELDS) else _transport(record), rplan)
        else:
            rec = self._str_keys(record)
            first, own = self._sender_fields(rec, self.source_fields)
            reading = self.reading(rec, first, own, _transport(record))
        rb = reading.rebuilt
        source = None
        if rb is not None:
            # A memoised reading may come from a record with another sender:
            # the source is this record's.
            source = first if first is not None else rb.source
            if first is None and reading.matches and hostname_was_payload(reading.line, rb.line, source):
                source = None
        if not reading.matches:
            # Markers (user agents...) also count in other fields of the
            # record, e.g. the ``agent`` of a parsed access log.
            found = self._marker_field(record)
            if found is None:
                if not keep and rb is None:
                    return None
                # Kept for the sequence pass and the client openings: a line
                # its bytes do not name can still be named by its place in a
                # scan, or as a client's opening bytes.
            else:
                key, line, matches = found
                reading = _reading(self.detector, rb, line, matches, f"field:{key}", False)
        if not source and (rb is None or rb.shape not in _HOST_AWARE):
            # No sender field and no HOSTNAME rule applied: a host field, as
            # str or as bytes (msgpack bin from Fluentd's in_tail, our own
            # file-line records), stands in.
            for key in HOST_FIELDS:
                v = record.get(key)
                if isinstance(v, bytes):
                    v = v.decode("utf-8", "replace")
                if isinstance(v, str) and v:
                    source = v
                    break
        if source is not None and len(source) > MAX_SOURCE_CHARS:
            source = _long_source(source)
        if source and rb is not None and reading.matches and reading.line != rb.line \
                and hostname_was_payload(reading.line, rb.line, source):
            # The match needed the HOSTNAME put back in front of the line:
            # that word was the payload's, whichever field named the sender.
            source = None
        return reading, source

    def _marker_field(self, record: dict[Any, Any]) -> tuple[str, bytes, list[Match]] | None:
        for n, (key, value) in enumerate(record.items()):
            if n >= _MAX_MARKER_FIELDS:
                break
            if isinstance(value, str):
                data = value[:MAX_LINE_BYTES].encode("utf-8", "surrogateescape")
            elif isinstance(value, bytes):
                data = value[:MAX_LINE_BYTES]
            else:
                continue
            got = self.detector.match_markers(data)
            if got:
                return str(key), data, got
        return None

    def batch(self, tag: str, items: Sequence[tuple[float, dict[Any, Any]]],
              pre: Sequence[Any] | None = None) -> list[Any]:
        """``items``: (event time in seconds, record) in stream order ->
        one ``Decision`` or ``None`` per item. ``pre``: per item, what
        ``analyse`` returned for it already, or ``NOT_ANALYSED``."""
        hits, misses = self.memo_hits, self.memo_misses
        n = len(items)
        # Per line: its reading (None: nothing matched) and its sender.
        readings: list[Reading | None] = [None] * n
        sources: list[str | None] = [None] * n
        analyse = self.analyse
        nothing = 0
        # Lines without matches, as read: for the client-openings hook and
        # the sequence pass below.
        unmatched: list[tuple[Reading, str | None] | None] = [None] * n
        # Lines with a payload or a match: the passes below step over the
        # others (explain's placeholders for lines it skipped: always
        # untagged). Those keep their places, which the look-ahead counts.
        live: list[int] = []
        for i, (_t, rec) in enumerate(items):
            got = pre[i] if pre is not None else NOT_ANALYSED
            if got is NOT_ANALYSED:
                got = analyse(rec, True)
            if got is None or not got[0].matches:
                nothing += 1
                unmatched[i] = got
                if got is not None and got[0].rebuilt is not None:
                    live.append(i)
            else:
                readings[i], sources[i] = got
                live.append(i)
        todo: Sequence[int] = live if len(live) < n else range(n)
        metrics = self.metrics
        if metrics is not None:
            if nothing:
                # Prefilter hits that match nothing: the price of a cheap scan.
                metrics.inc("prefilter_no_match", nothing)
            if self.memo_hits > hits:
                metrics.inc("detect_memo_hits", self.memo_hits - hits)
            if self.memo_misses > misses:
                metrics.inc("detect_memo_misses", self.memo_misses - misses)
        # Pass 0.5: a request line whose CR Fluentd removed (see _restore_cr).
        nothing -= self._restore_cr(tag, items, readings, sources, unmatched, todo)
        # --- hook: client openings (detect/_openings.py) ---------------------
        nothing -= self.openings.amend(readings, sources, items,
                                       lambda i: _as_read(unmatched[i], readings[i], sources[i], items[i][1]),
                                       self._make_reading, todo)
        # ----------------------------------------------------------------------
        out: list[Any] = [None] * n
        if nothing == n and not any(unmatched):
            return out
        # Pass 1.5: syslog-ng lines that together are one payload, cut at
        # its NULs and LFs (``_runs``).
        reassembled: set[int] = set()
        if self.runs is not None and self._seen_syslog_ng:
            nothing -= self._reassemble(items, readings, sources, unmatched, reassembled, todo)
        # Pass 0: a line whose HOSTNAME was the payload's first word has no
        # sender; the next line of its connection usually has one.
        if None in sources:
            sources = self._adopt_senders(readings, sources, items)
        # The look-ahead of the passes below reads the following lines of
        # the same source: each line's next one, found once.
        nxt = _same_source_chain(readings, sources)
        # Pass 1: lines several probes share are ordered by what follows.
        resolved: list[tuple[Match, ...]] = [
            () if r is None else self._by_sequence(readings, nxt, items, i, r) if r.ranking else r.matches
            for i, r in enumerate(readings)]
        # Pass 2: correlation, in stream order, with look-ahead for ambiguous lines.
        matched: dict[tuple[str, str, str], int] = {}
        below = 0
        observe = self.correlator.observe
        decide = self.actions.decide
        min_confidence = self.min_confidence
        named: list[tuple[Any, int] | None] = [None] * n
        for i, r in enumerate(readings):
            if r is None:
                continue
            t = items[i][0]
            source = sources[i]
            if r.ambiguous:
                verdict = observe(source, t, resolved[i], sure=r.sure, by_id=r.by_id,
                                  following=self._following(readings, nxt, resolved, items, i, t),
                                  whole=self._whole(readings, nxt, items, i, r))
            else:
                # Pass 1 reorders only rival lines' matches; otherwise the
                # reading's own distinctive matches are in the same order.
                verdict = observe(source, t, resolved[i], sure=None if r.ranking else r.sure)
            if verdict is None or verdict.confidence < min_confidence:
                below += 1
                continue
            if i in reassembled:
                verdict = replace(verdict, via="reassembled")
            pm = self.probe_map(r, source, verdict)
            out[i] = decide(tag, items[i][1], pm, source)
            named[i] = (verdict.match.signature, verdict.match.fragment)
            k = (verdict.match.signature.probe, verdict.match.kind, pm["scanner"])
            matched[k] = matched.get(k, 0) + 1
        # Pass 3: lines still unnamed, by their place in their source's scan.
        has_unmatched = unmatched.count(None) < n  # (C-level: some line is)
        lines: list[Any] | None = None
        fresh: set[str] | None = None
        if self.sequence is not None and (
                below or has_unmatched
                # (lines of earlier batches alone: only a sender whose scan
                # this batch goes on with can place them)
                or ((self._unnamed or self._held) and (fresh := self._fresh(sources, named)))) and (
                named.count(None) < n
                or items[-1][0] - self.correlator.last_context <= self.sequence.gap):
            # (a line of this batch, or a scan's line of an earlier one, to place by)
            lines = [None] * n
            below -= self._by_scan_order(tag, items, readings, sources, unmatched, named, out, matched, lines,
                                         todo, fresh)
        if self.sequence is not None and self.late:
            self._keep_pending(items, readings, sources, unmatched, named, lines)
        if metrics is not None:
            # Counted per batch: the same totals as per record, at a fraction
            # of the label handling.
            if below:
                metrics.inc("probe_below_confidence", below)
            for (probe_name, kind, scanner), count in matched.items():
                # (inc's key, built in place: labels in key order)
                metrics.add(("probes_matched", (("kind", kind), ("probe", probe_name), ("scanner", scanner))),
                            count)
        return out

    def _restore_cr(self, tag: str, items: Sequence[tuple[float, Any]], readings: list[Reading | None],
                    sources: list[str | None], unmatched: list[tuple[Reading, str | None] | None],
                    todo: Sequence[int]) -> int:
        """Fluentd's ``in_tail`` and ``in_syslog`` end a line with Ruby's
        ``chomp``, which removes a trailing CR as well as the LF. Where
        rsyslog escapes control bytes (its default) the CR was ``#015`` and
        survives; with escaping off it was a raw CR, and a probe's request
        line (``GET / HTTP/1.0\r``, ``To: <sip:nm2@nm2>\r``) reaches us
        without it, as the CR-less line an application logs when it quotes
        one (``Detector``: not distinctive). So once a stream (a tag) has
        carried a raw CR in a Fluentd record's line, its upstream does not
        escape CRs, and a Fluentd record there whose line matches nothing
        distinctive is read again with the CR put back; an exact match of
        that reading is taken (or, for a record known to miss bytes, a
        gapped one: in_syslog's ident cut at 32 bytes). Returns how many
        lines that had no match now have one."""
        raw = self._raw_cr
        found = tag in raw
        if not found and not self._seen_raw_cr:
            return 0  # (no record read so far had a raw CR: none of these has)
        again: list[int] = []
        for i in todo:
            r = readings[i]
            if r is None:
                got = unmatched[i]
                if got is None:
                    continue
                r = got[0]
            elif not r.ambiguous:
                continue
            rb = r.rebuilt
            if rb is None or rb.shape not in _CHOMPED:
                continue
            # A raw CR is one in the record's text (``escaped``): ``#015``
            # unescapes to a CR in ``line`` too, but a stream that escapes
            # its CRs keeps them, and has none to put back.
            if not found and b"\r" in rb.escaped:
                found = True
            elif rb.line[-1:] not in (b"\r", b""):
                again.append(i)
        if not found:
            return 0
        raw[tag] = None
        raw.move_to_end(tag)
        if len(raw) > _MAX_RAW_TAGS:
            raw.popitem(last=False)
        fixed = 0
        for i in again:
            r = readings[i]
            got = unmatched[i]
            was_unmatched = r is None
            if r is None:
                assert got is not None
                r, src = got
            else:
                src = sources[i]
            rb = r.rebuilt
            cands = [c + b"\r" for c in (rb.line, *rb.alternatives) if c and c[-1:] != b"\r"]
            line, matches = self.detector.match_best(cands, transport=_transport(items[i][1]), lossy=bool(r.lossy))
            if not matches or not any(not m.ambiguous and m.kind in ("exact", "damaged") for m in matches):
                continue
            if src is not None and line.startswith(src.encode("utf-8", "surrogateescape") + b" "):
                src = None  # (analyse: the HOSTNAME was the payload's first word)
            readings[i] = _reading(self.detector, rb, line, matches, rb.shape, r.lossy, r.asked)
            sources[i] = src
            if was_unmatched:
                unmatched[i] = None
                fixed += 1
        return fixed

    def _reassemble(self, items: Sequence[tuple[float, Any]], readings: list[Reading | None],
                    sources: list[str | None], unmatched: list[tuple[Reading, str | None] | None],
                    reassembled: set[int], todo: Sequence[int]) -> int:
        """Pass 1.5 (``_runs``): lines of syslog-ng files that are the pieces
        of one payload get that payload's match. Returns how many of them
        had no match before."""
        assert self.runs is not None
        lines: list[RunLine | None] = [None] * len(items)
        any_sng = False
        for i in todo:
            r, src = readings[i], sources[i]
            if r is None:
                got = unmatched[i]
                if got is None:
                    continue
                r, src = got
            rb = r.rebuilt
            if rb is None or rb.shape != "syslog-ng" or b"\n" in rb.line or b"\x00" in rb.line:
                continue  # (NUL or LF inside: a UDP datagram, whole)
            any_sng = True
            sure = frozenset(m.signature.id for m in r.sure) if r.matches else frozenset()
            lines[i] = RunLine(items[i][0], src, rb.line.strip(b" \t"), sure)
        if not any_sng:
            return 0
        was_unmatched = 0
        for i, got in enumerate(self.runs.name(lines)):
            if got is None:
                continue
            sig, frag = got
            r = readings[i]
            if r is None:
                r, sources[i] = unmatched[i]  # type: ignore[misc]
                unmatched[i] = None
                was_unmatched += 1
            conf = round((sig.confidence if sig.confidence is not None else DEFAULT_CONFIDENCE) * _RUN_FACTOR, 4)
            m = Match(sig, frag, "exact", conf, False)
            readings[i] = _reading(self.detector, r.rebuilt, r.rebuilt.line, (m,), r.shape, r.lossy, r.asked)
            reassembled.add(i)
        return was_unmatched

    def _by_scan_order(self, tag: str, items: Sequence[tuple[float, Any]], readings: Sequence[Reading | None],
                       sources: Sequence[str | None], unmatched: Sequence[tuple[Reading, str | None] | None],
                       named: list[tuple[Any, int] | None], out: list[Any],
                       matched: dict[tuple[str, str, str], int], lines: list[Any],
                       todo: Sequence[int], fresh: set[str] | None = None) -> int:
        """Pass 3 (``_sequence``): returns how many lines below the
        confidence threshold it named. ``lines``: filled with the lines as
        the pass took them. ``todo``: the lines with a payload or a match.
        ``fresh``: ``_fresh`` of this batch, when the caller has it."""
        n = len(items)
        in_order = self.correlator.in_order
        ordered: dict[str | None, bool] = {}
        # A line without a sender in a batch with no scanning sender of its
        # own (a live stream's one-line chunk: ``vp3`` that rsyslog took for
        # the HOSTNAME) takes the sender whose scan named the latest line,
        # when that was recent: the look-behind a batch of lines has inside.
        guess = None
        last = self.correlator.last_source
        if (last is not None and None in sources and self.sequence is not None
                and not any(in_order(x) for x in set(sources) if x is not None)
                and 0 <= items[0][0] - self.correlator.last_context <= self.sequence.gap and in_order(last)):
            guess = last
        # The named lines per sender, in order, for ``_in_order``.
        named_by: dict[str | None, list[Any]] | None = None
        for i in todo:
            if named[i] is not None:
                continue  # (taken below, when there is a line to place)
            line = self._sequence_line(i, items, readings, sources, unmatched)
            if line is None:
                continue
            if line[1] is None and guess is not None:
                line = (line[0], guess, *line[2:])
            src = line[1]
            # only lines of a scan that goes through its scanner's order (a
            # line without a sender: when some sender's scan does)
            ok = ordered.get(src)
            if ok is None:
                if named_by is None:
                    named_by = {}
                    for j in todo:
                        if named[j] is not None:
                            named_by.setdefault(sources[j], []).append(named[j][0])
                ok = ordered[src] = (self._in_order(src, named_by) if src is not None
                                     else any(self._in_order(x, named_by)
                                              for x in set(sources) if x is not None))
            if not ok:
                continue
            lines[i] = line
        # Lines of earlier batches come first, the unnamed ones and the named
        # lines around them: this batch may hold the anchor after them (a
        # live stream's chunks are small), and the pass then sees what it
        # would have seen in one batch. They have left already; a name found
        # now goes into their scan's summary (``named_late``). Only the
        # earlier lines this batch can say more about: of a source with a
        # line named here whose scan goes through its scanner's order (and
        # lines without a sender).
        offer: list[int] = []
        if self.late and (self._unnamed or self._held):
            if fresh is None:
                fresh = self._fresh(sources, named)
            if fresh and self._held:
                self._take_held(fresh, items[-1][0])
            if fresh and self._unnamed:
                offer = [k for k, x in enumerate(self._pending) if x[1][1] in fresh or x[1][1] is None]
                if all(self._pending[k][2] is not None for k in offer):
                    offer = []
        p = len(offer)
        if not p and lines.count(None) == n:  # (so far only lines to place are in it)
            return 0  # nothing to place
        for i in todo:
            if named[i] is not None:
                lines[i] = (items[i][0], sources[i], b"", (), False, False)
        pend = self._pending
        early = [pend[k][1] for k in offer]
        early_named = [pend[k][2] for k in offer]
        # Lines the pass cannot place (no payload: explain's placeholders for
        # lines it skipped) are left out of it: it goes by order and time
        # alone, and its loops would otherwise step over every one of them.
        keep = [i for i in range(n) if lines[i] is not None]
        if len(keep) == n:
            got_all = self.sequence.name([*early, *lines], [*early_named, *named], self.correlator.context)
        else:
            got_kept = self.sequence.name([*early, *(lines[i] for i in keep)],
                                          [*early_named, *(named[i] for i in keep)], self.correlator.context)
            got_all = got_kept[:p] + [None] * n
            for k, i in enumerate(keep):
                got_all[p + i] = got_kept[p + k]
        for j, k in enumerate(offer):
            g = got_all[j]
            t, line, nm, was = pend[k]
            if g is None or nm is not None:
                continue
            sig, frag, source, via = g
            if self.correlator.note_late(source, t, Match(sig, frag, via, SEQUENCE_CONFIDENCE, False), was):
                if self.metrics is not None:
                    self.metrics.inc("probes_named_late", probe=sig.probe)
            self._name_kept(k, source, sig, frag)
        got = got_all[p:]
        below = 0
        for i, g in enumerate(got):
            if g is None:
                continue
            sig, frag, source, via = g
            r = readings[i]
            if r is None:
                r = unmatched[i][0]
            else:
                below += 1
            t = items[i][0]
            m = Match(sig, frag, via, SEQUENCE_CONFIDENCE, False)
            verdict = self.correlator.observe(source, t, (m,), sure=(m,))
            if verdict is None or verdict.confidence < self.min_confidence:
                continue
            verdict = replace(verdict, inherited=True, via=via)
            pm = self.probe_map(r, source, verdict)
            out[i] = self.actions.decide(tag, items[i][1], pm, source)
            named[i] = (sig, frag)
            k = (sig.probe, via, pm["scanner"])
            matched[k] = matched.get(k, 0) + 1
        return below

    def _fresh(self, sources: Sequence[str | None], named: Sequence[Any]) -> set[str]:
        """The senders of this batch's named lines whose scans go through
        their scanner's order: the senders whose kept lines it may place."""
        in_order = self.correlator.in_order
        return {x for x in {sources[i] for i, nm in enumerate(named) if nm is not None}
                if x is not None and in_order(x)}

    def _in_order(self, source: str, named_by: Mapping[str | None, Sequence[Any]]) -> bool:
        """Does the source's scan go through its scanner's order: as the
        correlator sees it now, or by the lines of it named in this batch
        (``named_by``: their signatures per sender, in stream order)?"""
        if self.correlator.in_order(source):
            return True
        return self.correlator.lines_in_order(named_by.get(source, ()))

    @staticmethod
    def _sequence_line(i: int, items: Sequence[tuple[float, Any]], readings: Sequence[Reading | None],
                       sources: Sequence[str | None],
                       unmatched: Sequence[tuple[Reading, str | None] | None]) -> tuple[Any, ...] | None:
        """Line ``i`` as the sequence pass takes it: (time, sender, the line
        spacing aside, engine matches, lossy, TAG cut, a syslog-ng line, MSG
        only); None for a line with no payload or too long to be a probe's."""
        r, src = readings[i], sources[i]
        if r is None:
            got = unmatched[i]
            if got is None or got[0].rebuilt is None:
                return None
            r, src = got
        rb = r.rebuilt
        text = r.line if r.matches else (rb.line if rb is not None else b"")
        if len(text) > _MAX_SEQUENCE_LINE:
            return None
        if r.shape == "rsyslog-msg":
            # MSG only: its candidates are the pieces with that MSG (exact)
            return items[i][0], src, text.strip(b" \t"), r.matches, False, False, False, True
        return (items[i][0], src, text.strip(b" \t"), r.matches, r.lossy, _cut(items[i][1]),
                r.shape == "syslog-ng", False)

    def _keep_pending(self, items: Sequence[tuple[float, Any]], readings: Sequence[Reading | None],
                      sources: Sequence[str | None], unmatched: Sequence[tuple[Reading, str | None] | None],
                      named: Sequence[tuple[Any, int] | None], lines: Sequence[Any] | None) -> None:
        """Keep this batch's lines for the next batches' pass 3: the unnamed
        ones a scan may still place (of a source with no scan yet too: the
        head of a scan is placed once its later probes come) and the named
        ones they would be placed by; within the bounds (``_MAX_PENDING``...),
        the oldest going first, unnamed lines dropped counted as
        ``late_pending_dropped``. A line named only by its protocol (a
        client's opening, scanner unknown) waits as an unnamed one does,
        with that name (``was``): never an anchor, it may be placed as a
        scanner's probe, a refinement of the name it left with."""
        may_place = self.correlator.may_place
        new: list[tuple[float, Any, Any, Any]] = []
        for i in range(len(items)):
            t = items[i][0]
            nm = named[i]
            if nm is not None:
                src = sources[i]
                if src is not None and not may_place(src):
                    continue
                if nm[0].family != "client":
                    new.append((t, (t, src, b"", (), False, False), nm, None))
                elif nm[0].scanner == "unknown":
                    # (named by its protocol, a client's opening: it has no
                    # place in a scanner's order, and as an anchor it would
                    # stand between a scan's head and the probes that place
                    # it; as a line to place, the order may say whose probe
                    # it was. The opening's match is no scanner's: left out.
                    # A request no scanner's probe leaves, the traffic of
                    # every web client, would only crowd the lines that wait.)
                    line = self._sequence_line(i, items, readings, sources, unmatched)
                    if line is not None and self.sequence is not None and self.sequence.could_place(line):
                        new.append((t, (*line[:3], (), *line[4:]), None, nm[0]))
                continue
            line = lines[i] if lines is not None else None
            if line is None:
                line = self._sequence_line(i, items, readings, sources, unmatched)
            if line is not None and (line[1] is None or may_place(line[1])):
                new.append((t, line, None, None))
        if new:
            self._add_pending(new)

    def _add_pending(self, new: Sequence[tuple[float, Any, Any, Any]]) -> None:
        """Add ``new`` to the kept lines and bound them: none older than
        ``_PENDING_AGE`` before the newest; per source the newest
        ``_MAX_PENDING_SOURCE`` lines, or of a source with no unnamed line
        kept its last ``_MAX_ANCHORS_KEPT`` named ones; ``_MAX_PENDING`` in
        all, the oldest going first.

        Called once per batch, with 128 lines kept in a steady stream: the
        per-source bound is kept by counts (``_kept_count``, ``_kept_waiting``)
        and checked only for the sources that can be over it
        (``_kept_check``: those with lines added, and those whose last
        unnamed line went since they were checked), not over every line."""
        keep = self._pending
        if not new and not keep:
            return
        check = self._kept_check
        unnamed = 0
        for x in new:
            unnamed += self._kept_in(x)
            check.add(x[1][1])
        # (in place: the list is this object's alone between batches)
        if keep and new[0][0] < keep[-1][0]:
            keep = sorted([*keep, *new], key=_TIME)
        else:
            keep.extend(new)
        newest = keep[-1][0]
        dropped = 0
        if keep[0][0] < newest - _PENDING_AGE:
            cut = bisect_left(keep, newest - _PENDING_AGE, key=_TIME)
            dropped += self._kept_out(keep[:cut])
            del keep[:cut]
        check = self._kept_check
        self._kept_check = set()
        if len(keep) > _MAX_ANCHORS_KEPT and check:
            count, waiting = self._kept_count, self._kept_waiting
            over = [(src, e) for src in check
                    if (e := count.get(src, 0) - (_MAX_PENDING_SOURCE if src in waiting else _MAX_ANCHORS_KEPT)) > 0]
            if over:
                srcs = list(map(_SECOND, map(_SECOND, keep)))
                drop: list[int] = []
                for src, e in over:
                    at = -1
                    for _ in range(e):  # (the oldest go)
                        at = srcs.index(src, at + 1)
                        drop.append(at)
                drop.sort()
                dropped += self._kept_out([keep[k] for k in drop])
                out: list[tuple[float, Any, Any, Any]] = []
                a = 0
                for k in drop:
                    out += keep[a:k]
                    a = k + 1
                out += keep[a:]
                keep = out
        if len(keep) > _MAX_PENDING:
            dropped += self._kept_out(keep[:len(keep) - _MAX_PENDING])
            del keep[:len(keep) - _MAX_PENDING]
        self._pending = keep
        self._unnamed += unnamed - dropped
        if self.metrics is not None:
            if dropped:
                self.metrics.inc("late_pending_dropped", dropped)
            self.metrics.set("late_pending", self._unnamed)

    def _kept_in(self, x: tuple[float, Any, Any, Any]) -> int:
        """Count kept line ``x`` in; 1 if it is unnamed."""
        src = x[1][1]
        count = self._kept_count
        count[src] = count.get(src, 0) + 1
        if x[2] is not None:
            return 0
        waiting = self._kept_waiting
        waiting[src] = waiting.get(src, 0) + 1
        return 1

    def _kept_out(self, gone: Sequence[tuple[float, Any, Any, Any]]) -> int:
        """Count kept lines ``gone`` out; a source whose last unnamed line
        went is checked against the anchors' bound next time. Returns how
        many of them were unnamed."""
        count, waiting = self._kept_count, self._kept_waiting
        unnamed = 0
        for x in gone:
            src = x[1][1]
            n = count[src] - 1
            if n:
                count[src] = n
            else:
                del count[src]
            if x[2] is None:
                unnamed += 1
                n = waiting[src] - 1
                if n:
                    waiting[src] = n
                else:
                    del waiting[src]
                    self._kept_check.add(src)
        return unnamed

    def _name_kept(self, k: int, source: str | None, sig: Any, frag: int) -> None:
        """Kept unnamed line ``k``, named late: an anchor now, of ``source``
        (the sender the pass placed it for), for the lines still waiting."""
        was = self._pending[k]
        t = was[0]
        x = (t, (t, source, b"", (), False, False), (sig, frag), None)
        self._kept_out([was])
        self._kept_in(x)
        self._pending[k] = x
        self._kept_check.add(source)
        self._unnamed -= 1

    def hold(self, tag: str, entries: Sequence[bytes], decode: Any) -> None:
        """Bare-CR records the stage passed on without decoding them (no
        probe context was near; a Windows forwarder's CRLF lines are that
        too): the last few, as bytes, for the next pass 3 that has a scan to
        place them in (GenericLines' two CRs at a scan's head come seconds
        before the scan's first distinctive line). ``decode``: entry bytes
        -> (event time in seconds, record), or None."""
        if not self.late or self.sequence is None:
            return
        self._decode_held = decode
        for raw in entries[-_MAX_HELD:]:
            if len(raw) <= _MAX_HELD_BYTES:
                self._held.append((tag, raw))

    def _take_held(self, fresh: set[str], newest: float) -> None:
        """The held records of the scanning sources in ``fresh``, decoded,
        join the pending lines (those of other senders are dropped). So do
        records without a sender (a request line whose CR Fluentd chomped,
        ``GET`` taken for the HOSTNAME): pass 3 places such a line only
        between lines of a scan, as it would in one batch."""
        held, decode = list(self._held), self._decode_held
        self._held.clear()
        new: list[tuple[float, Any, Any, Any]] = []
        for _tag, raw in held:
            got = decode(raw) if decode is not None else None
            if got is None or not newest - _PENDING_AGE <= got[0] <= newest:
                continue
            t, rec = got
            read = self.analyse(rec, True)
            if read is None:
                continue
            r, src = read
            one = [(t, rec)]
            line = (self._sequence_line(0, one, [r], [src], [None]) if r.matches
                    else self._sequence_line(0, one, [None], [None], [read]))
            if line is not None and (line[1] in fresh or line[1] is None):
                new.append((t, line, None, None))
        if new:
            self._add_pending(new)

    def _make_reading(self, rb: Any, line: bytes, matches: Sequence[Match], shape: str, lossy: bool,
                      asked: tuple[tuple[bytes, bool], ...], extra: Mapping[str, Any] | None = None) -> Reading:
        return _reading(self.detector, rb, line, matches, shape, lossy, asked, extra)

    def _adopt_senders(self, readings: Sequence[Reading | None], sources: list[str | None],
                       items: Sequence[tuple[float, Any]]) -> list[str | None]:
        """A file line ``GET / HTTP/1.0#015`` has HOSTNAME ``GET``: rsyslog
        wrote the payload's first word instead of the sender (FIELD_GUIDE
        3.3), so the line names no sender. The connection's next line
        (``127.0.0.1 #015``) does, and it is the same connection when it is
        the next piece of the same payload, logged at nearly the same time.
        Such a line takes that sender; otherwise it stays without one.
        Decided on the senders as analysed, not as adopted."""
        out = list(sources)
        for i, r in enumerate(readings):
            if r is None or sources[i] is not None:
                continue
            sure = r.sure
            if not sure:
                continue
            t = items[i][0]
            for j in range(i + 1, min(len(readings), i + 1 + _LOOKAHEAD)):
                rj = readings[j]
                if rj is None or sources[j] is None:
                    continue
                if abs(items[j][0] - t) > _SAME_CONNECTION:
                    break
                if any(x.signature.id == m.signature.id and self._is_piece(x.signature.id, m.fragment + 1, rj.line)
                       for m in sure for x in rj.matches):
                    out[i] = sources[j]
                    break
        return out

    def _is_piece(self, sig_id: str, fragment: int, line: bytes) -> bool:
        """Is ``line`` (spacing aside) what rsyslog logs as that fragment?"""
        return _is_piece(self.detector, sig_id, fragment, line)

    def _whole(self, readings: Sequence[Reading | None], nxt: Sequence[int],
               items: Sequence[tuple[float, Any]], i: int, r: Reading) -> tuple[Match, ...]:
        """Ambiguous matches of line ``i`` that, with the lines following it,
        are a signature's complete payload:

        * one line that is all of it: ``HELP\r`` (text of 4 bytes or more,
          ordinary words are too common below that) or a short binary
          datagram (Sqlping's single ``\x02``: control bytes on their own are
          no application's log line);
        * the first of the lines that are all of it, each the expected piece
          in order, from the same source within ``_SAME_CONNECTION`` seconds:
          GenericLines is ``\r\n\r\n``, two lines that are only a CR.

        The first test and the first piece of the second depend on the line
        alone (``Reading.whole``); the rest looks at the following lines.
        The correlator tags these only for a source in the middle of a scan."""
        if not r.whole:
            return ()
        out = []
        for m, n in r.whole:
            if n == 1:
                out.append(m)
                continue
            t, k = items[i][0], 1
            j = nxt[i]
            while 0 <= j <= i + _LOOKAHEAD:
                rj = readings[j]
                assert rj is not None
                if abs(items[j][0] - t) > _SAME_CONNECTION or not rj.ambiguous:
                    break
                if not self._is_piece(m.signature.id, k, rj.line):
                    break
                k += 1
                if k == n:
                    out.append(Match(m.signature, 0, m.kind, m.confidence, m.ambiguous))
                    break
                j = nxt[j]
        return tuple(out)

    def _by_sequence(self, readings: Sequence[Reading | None], nxt: Sequence[int],
                     items: Sequence[tuple[float, Any]], i: int, r: Reading) -> tuple[Match, ...]:
        """Order the distinctive matches of a line several probes share
        (``GET / HTTP/1.0\\r`` starts nmap's GetRequest and masscan's banner
        request) by how well the next lines of the same source continue each
        payload: fragment 0, then 1, 2... A tie goes to the payload with the
        fewest pieces still to come, since a longer payload's other lines would
        arrive together with this one (one connection, one batch). Only for
        lines whose distinctive matches name two probes or more
        (``Reading.ranking``); other lines keep their order."""
        window = self.correlator.window
        t = items[i][0]
        ranked = []
        for m, left, neg_conf, rank in r.ranking:
            expect, score = m.fragment + 1, 0
            sid = m.signature.id
            j = nxt[i]
            while 0 <= j <= i + _LOOKAHEAD:
                rj = readings[j]
                assert rj is not None
                if items[j][0] - t > window:
                    break
                if not any(x.signature.id == sid and x.fragment == expect for x in rj.matches):
                    break
                score += 1
                expect += 1
                j = nxt[j]
            ranked.append((-score, left, neg_conf, rank, m))
        ranked.sort(key=lambda x: x[:4])
        return tuple(x[4] for x in ranked) + tuple(m for m in r.matches if m.ambiguous)

    def _following(self, readings: Sequence[Reading | None], nxt: Sequence[int],
                   resolved: Sequence[tuple[Match, ...]], items: Sequence[tuple[float, Any]],
                   i: int, t: float) -> Match | None:
        """The first distinctive match of the next lines of line ``i``'s
        source within the window and the look-ahead."""
        window = self.correlator.window
        j = nxt[i]
        while 0 <= j <= i + _LOOKAHEAD:
            rj = readings[j]
            assert rj is not None
            if items[j][0] - t > window:
                return None
            if not rj.ambiguous:
                # The first distinctive match in the order pass 1 gave them.
                for m in resolved[j]:
                    if not m.ambiguous:
                        return m
            j = nxt[j]
        return None

    def probe_map(self, r: Reading, source: str | None, v: Verdict) -> dict[str, Any]:
        m = v.match
        sig = m.signature
        if r.extra is None:
            # What the map says of the line and the match alone is the same
            # for every record of one reading and match: made once, copied,
            # and the verdict's fields filled in (in their places: a copy
            # keeps the keys' order).
            # (keyed by the reading's identity: readings are immutable and
            # the memo hands the same one out again; the entry holds it, so
            # its id is not reused while the entry is there)
            key = (id(r), sig.id, sig.transport, m.fragment, m.kind)
            fixed = self._line_facts.get(key)
            if fixed is None or fixed[2] is not r:
                if len(self._line_facts) >= _MAX_LINE_FACTS:
                    self._line_facts.clear()
                fixed = self._line_facts[key] = (self._probe_map(r, None, m, None), self._cut(m, r), r)
            out = fixed[0].copy()
            out["confidence"] = v.confidence
            out["scan_id"] = v.scan_id
            out["group_lines"] = v.group_lines
            out["inherited"] = v.inherited
            out["via"] = v.via
            out["source"] = source
            cut = fixed[1]
        else:
            out = self._probe_map(r, source, m, v)
            cut = self._cut(m, r)
        if sig.shared_with:
            # Bytes several scanners send: the scanner is named only when
            # this sender's scan holds bytes that one of them alone sends.
            senders = (sig.scanner, *sig.shared_with)
            known = [s for s in senders if s in self.correlator.own_scanners(source)]
            if len(known) == 1:
                if known[0] != sig.scanner:
                    alt = self._same_bytes.get((sig.payload, known[0]))
                    if alt is not None:
                        out.update(name=alt.probe, scanner=alt.scanner, id=alt.id)
            else:
                out["scanner"] = "unknown"
            out["sent_by"] = sorted(senders)
        if cut:
            # the line is the front of the probe's piece: cut on the way
            # (a TAG at 32 or 510 bytes, maxMessageSize, RFC 5424's APP-NAME)
            out["truncated"] = True
        return out

    def _probe_map(self, r: Reading, source: str | None, m: Match, v: Verdict | None) -> dict[str, Any]:
        sig = m.signature
        return {
            "name": sig.probe,
            "scanner": sig.scanner,
            "id": sig.id,
            "confidence": v.confidence if v is not None else None,
            "transport": sig.transport,
            "kind": m.kind,
            "payload": r.payload or (show_bytes(r.rebuilt.line) if r.rebuilt is not None else ""),
            "fragment": m.fragment,
            "scan_id": v.scan_id if v is not None else None,
            "group_lines": v.group_lines if v is not None else None,
            "inherited": v.inherited if v is not None else None,
            "via": v.via if v is not None else None,
            "source": source,
            "shape": r.shape,
            "lossy": r.lossy,
            "seen_in": seen_in(r.shape, m.kind, r.line),
            **(r.extra or {}),
        }

    def _cut(self, m: Match, r: Reading) -> bool:
        return m.kind == "truncated" or self._cut_piece(m, r)

    def _cut_piece(self, m: Match, r: Reading) -> bool:
        pieces = self.detector.logged_cores(m.signature.id)
        if not 0 <= m.fragment < len(pieces):
            return False
        line = r.line if r.matches else (r.rebuilt.line if r.rebuilt is not None else b"")
        core = line.strip(b" \t")
        piece = pieces[m.fragment]
        return bool(core) and len(core) < len(piece) and piece.startswith(core) and core + b"\r" != piece


def prefilter_fragments(detector: Detector, dialects: Sequence[str]) -> list[bytes]:
    """The literals the chunk prefilter looks for: each engine fragment raw,
    escaped in every configured dialect, and as a UTF-8-replacing forwarder
    leaves it (msgpack strings hold these bytes verbatim)."""
    from ..decode import escape

    from ._engine import replaced

    names = _dialects(dialects)
    out: set[bytes] = set()
    for frag in detector.fragments():
        raw = {frag, replaced(frag)}
        # A prefix of a fragment's escaped form is as good a witness as the
        # whole of it, and keeps the literal set small.
        escaped = {bytes(escape(frag, d))[:_MAX_ESCAPED] for d in names} - raw
        escaped |= {replaced(f) for f in escaped}
        # Short or low-variety raw literals (``\0\0\0``, ``0000``) hit
        # msgpack's own framing bytes (lengths, integers, times) in every
        # chunk. The price: with rsyslog's escaping turned off, a line that is
        # only a CR or a short binary prefix is not looked at. Escaped forms
        # are text and carry an escape (C-style ``\r`` is 2 bytes).
        out.update(f for f in raw if len(f) >= _MIN_RAW and len(set(f)) >= 3)
        out.update(f for f in escaped if len(f) >= 2)
    # Client openings (_openings): the same treatment for what they start with.
    for frag in opening_literals():
        if len(frag) >= _MIN_RAW and len(set(frag)) >= 3:
            out.add(frag)
        out.update(e for e in (bytes(escape(frag, d))[:_MAX_ESCAPED] for d in names) if e != frag)
    return sorted(out)


def _dialects(dialects: Sequence[str]) -> list[str]:
    names = list(dialects)
    if "rsyslog" in names and "rsyslog-8bit" not in names:
        # escape8BitCharactersOnReceive is one rsyslog setting away.
        names.append("rsyslog-8bit")
    return names


def context_fragments(dialects: Sequence[str]) -> list[bytes]:
    """The escaped forms of a bare CR (``#015``, ``\\r``, ``\\015``): the
    prefilter literals that only matter next to a probe line."""
    from ..decode import escape

    # and of the control bytes a ClientHello's later pieces are full of
    # (_openings.continuation_bytes): they matter only after its first piece.
    # Not the 2-byte C-style ones (``\a``, ``\f``...): short literals must
    # share a few anchors for the prefilter's split (_prefilter._anchors).
    names = _dialects(dialects)
    cr = {bytes(escape(b"\r", d)) for d in names}
    more = {bytes(escape(bytes((c,)), d)) for d in names for c in continuation_bytes()}
    return sorted(cr | {f for f in more if len(f) >= 4})


def build_detection(config: Any, metrics: Any, *, detector: Detector | None = None,
                    actions: Any = None) -> tuple[Any, ...]:
    """(detector, prefilter, correlator, actions, enricher) for the stage."""
    from ..act import Actions
    from ._prefilter import Prefilter

    d = config.detect
    if detector is None:
        detector = _detector_for(d)
    if actions is None:
        actions = Actions(config.actions, d.allowlist, d.output_field)
    c = config.correlation
    correlator = Correlator(c.window, c.scan_idle, c.max_sources, metrics, max_bytes=c.max_bytes)
    correlator.fragment_count = detector.fragment_count
    correlator.position = _orders().position
    # Compiling the literal sets is the slow part of start-up (hyperscan):
    # a detector keeps the prefilter built for each dialect list.
    cache = detector.__dict__.setdefault("_prefilters", {})
    prefilter = cache.get(tuple(d.escapes))
    if prefilter is None:
        prefilter = cache[tuple(d.escapes)] = Prefilter(
            prefilter_fragments(detector, d.escapes), detector.backend,
            weak=context_fragments(d.escapes))
    enricher = Enricher(config, detector, actions, correlator, metrics)
    return detector, prefilter, correlator, actions, enricher


_DETECTORS: dict[Any, Detector] = {}
_ORDERS: list[Any] = []


def _orders() -> Any:
    """The bundled scan orders, loaded once."""
    if not _ORDERS:
        _ORDERS.append(load_orders())
    return _ORDERS[0]


def _detector_for(d: Any) -> Detector:
    """One compiled detector per catalogue (files with their mtimes, inline
    signatures): processors built from the same config share it. Bounded."""
    from ._catalogue import builtin_catalogue_paths, load_catalogue

    files = list(builtin_catalogue_paths()) if d.builtin_catalogue else []
    files += [Path(p) for p in d.catalogue]
    key = (tuple((str(f), _mtime(f)) for f in files), d.builtin_catalogue, tuple(d.signatures))
    det = _DETECTORS.get(key)
    if det is None:
        det = Detector(load_catalogue(d.catalogue or None, builtin=d.builtin_catalogue,
                                      extra=d.signatures))
        if len(_DETECTORS) >= 8:
            _DETECTORS.clear()
        _DETECTORS[key] = det
    return det


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1  # load_catalogue reports the missing file
