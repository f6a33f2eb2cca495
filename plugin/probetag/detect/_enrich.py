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
* A verdict below ``detect.min_confidence`` adds nothing. Otherwise the probe
  map (``detect.output_field``) has at least ``name``, ``scanner``, ``id``,
  ``confidence``, ``transport``, ``payload``, ``fragment``, ``scan_id``,
  ``source``, ``shape``, ``lossy``; ``payload`` is the decoded line with
  bytes shown the Python way (``\\r``, ``\\x00``, ``\\\\``) so the map is
  valid UTF-8 whatever the probe sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ._correlate import Correlator, Verdict
from ._engine import Detector, Match

__all__ = ["Enricher", "Analysis", "show_bytes", "HOST_FIELDS"]

#: Record fields that stand in for the sender when no sender field exists.
HOST_FIELDS = ("host", "hostname", "HOSTNAME", "fromhost")
#: Shapes whose rebuild already judged the host field (decode.rebuild: the
#: HOSTNAME is the sender or the payload's first word); when it found no
#: sender there, the host field is the payload's word and is not the sender.
_HOST_AWARE = ("rsyslog-json", "fluentd-syslog", "vector-syslog", "file-line")
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

_SHOW = {c: chr(c) for c in range(0x20, 0x7F)}
_SHOW.update({c: "\\x%02x" % c for c in list(range(0x20)) + list(range(0x7F, 0x100))})
_SHOW.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x5C: "\\\\"})


def show_bytes(data: bytes) -> str:
    """Bytes as Python shows them inside ``b'...'`` (no quotes): always valid UTF-8."""
    return data.decode("latin-1").translate(_SHOW)


#: Record fields naming the input a line came in on, and what they mean.
#: rsyslog's ``inputname`` property is ``imtcp``/``imudp`` (``imptcp``,
#: ``imrelp`` are TCP too); other pipelines say ``tcp``/``udp``.
TRANSPORT_FIELDS = ("inputname", "protocol", "transport")
_TRANSPORTS = {"imudp": "udp", "udp": "udp", "imtcp": "tcp", "imptcp": "tcp", "imrelp": "tcp",
               "tcp": "tcp", "imgssapi": "tcp"}


def _transport(record: dict[Any, Any]) -> str | None:
    """tcp/udp when the record says which input it came in on, else None."""
    for key in TRANSPORT_FIELDS:
        v = record.get(key)
        if isinstance(v, str):
            t = _TRANSPORTS.get(v.lower())
            if t is not None:
                return t
    return None


@dataclass(frozen=True, slots=True)
class Analysis:
    line: bytes
    matches: tuple[Match, ...]
    source: str | None
    shape: str
    lossy: bool


class Enricher:
    def __init__(self, config: Any, detector: Detector, actions: Any, correlator: Correlator,
                 metrics: Any = None) -> None:
        from .. import decode  # the decoder is its own package; imported once here

        self._rebuild = decode.rebuild
        d = config.detect
        self.fields = tuple(d.fields)
        self.source_fields = tuple(d.source_fields)
        self.dialects = tuple(d.escapes)
        self.min_confidence = d.min_confidence
        self.detector = detector
        self.actions = actions
        self.correlator = correlator
        self.metrics = metrics

    def analyse(self, record: dict[Any, Any]) -> Analysis | None:
        rb = self._rebuild(record, fields=self.fields, source_fields=self.source_fields,
                           dialects=self.dialects)
        matches: list[Match] = []
        if rb is not None:
            # The primary reading, then the other readings rebuild offers
            # (ambiguous escaping such as a literal ``#015``, a doubtful
            # HOSTNAME), then, for records known to miss bytes, gapped matches.
            line, matches = self.detector.match_best(
                (rb.line, *rb.alternatives), transport=_transport(record), lossy=bool(rb.lossy))
            shape, lossy, source = rb.shape, bool(rb.lossy), rb.source
        if not matches:
            # Markers (user agents...) also count in other fields of the
            # record, e.g. the ``agent`` of a parsed access log.
            found = self._marker_field(record)
            if found is None:
                return None
            key, line, matches = found
            shape, lossy = f"field:{key}", False
            source = rb.source if rb is not None else None
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
        return Analysis(line, tuple(matches), source, shape, lossy)

    def _marker_field(self, record: dict[Any, Any]) -> tuple[str, bytes, list[Match]] | None:
        for n, (key, value) in enumerate(record.items()):
            if n >= _MAX_MARKER_FIELDS:
                break
            if isinstance(value, str):
                data = value.encode("utf-8", "surrogateescape")
            elif isinstance(value, bytes):
                data = value
            else:
                continue
            got = self.detector.match_markers(data)
            if got:
                return str(key), data, got
        return None

    def batch(self, tag: str, items: Sequence[tuple[float, dict[Any, Any]]]) -> list[Any]:
        """``items``: (event time in seconds, record) in stream order ->
        one ``Decision`` or ``None`` per item."""
        analyses = [self.analyse(rec) for _, rec in items]
        if self.metrics is not None:
            misses = analyses.count(None)
            if misses:
                # Prefilter hits that match nothing: the price of a cheap scan.
                self.metrics.inc("prefilter_no_match", misses)
        out: list[Any] = [None] * len(items)
        # Pass 0: a line whose HOSTNAME was the payload's first word has no
        # sender; the next line of its connection usually has one.
        analyses = self._adopt_senders(analyses, items)
        # Pass 1: lines several probes share are ordered by what follows.
        resolved: list[tuple[Match, ...]] = [
            () if an is None else self._by_sequence(analyses, items, i, an, items[i][0])
            for i, an in enumerate(analyses)]
        # Pass 2: correlation, in stream order, with look-ahead for ambiguous lines.
        for i, an in enumerate(analyses):
            if an is None:
                continue
            t = items[i][0]
            following = None
            matches = resolved[i]
            if all(m.ambiguous for m in matches):
                following = self._following(analyses, resolved, items, i, an.source, t)
            whole: tuple[Match, ...] = ()
            if all(m.ambiguous for m in matches):
                whole = self._whole(analyses, items, i, an, matches)
            verdict = self.correlator.observe(an.source, t, matches, following=following,
                                              whole=whole)
            if verdict is None or verdict.confidence < self.min_confidence:
                if self.metrics is not None:
                    self.metrics.inc("probe_below_confidence")
                continue
            probe = self.probe_map(an, verdict)
            out[i] = self.actions.decide(tag, items[i][1], probe, an.source)
            if self.metrics is not None:
                self.metrics.inc("probes_matched", probe=verdict.match.signature.probe,
                                 kind=verdict.match.kind)
        return out

    def _adopt_senders(self, analyses: list[Analysis | None],
                       items: Sequence[tuple[float, Any]]) -> list[Analysis | None]:
        """A file line ``GET / HTTP/1.0#015`` has HOSTNAME ``GET``: rsyslog
        wrote the payload's first word instead of the sender (FIELD_GUIDE
        3.3), so the line names no sender. The connection's next line
        (``127.0.0.1 #015``) does, and it is the same connection when it is
        the next piece of the same payload, logged at nearly the same time.
        Such a line takes that sender; otherwise it stays without one."""
        out = list(analyses)
        for i, an in enumerate(analyses):
            if an is None or an.source is not None:
                continue
            sure = [m for m in an.matches if not m.ambiguous]
            if not sure:
                continue
            t = items[i][0]
            for j in range(i + 1, min(len(analyses), i + 1 + _LOOKAHEAD)):
                aj = analyses[j]
                if aj is None or aj.source is None:
                    continue
                if abs(items[j][0] - t) > _SAME_CONNECTION:
                    break
                if any(x.signature.id == m.signature.id and self._is_piece(x.signature.id, m.fragment + 1, aj.line)
                       for m in sure for x in aj.matches):
                    out[i] = Analysis(an.line, an.matches, aj.source, an.shape, an.lossy)
                    break
        return out

    def _is_piece(self, sig_id: str, fragment: int, line: bytes) -> bool:
        """Is ``line`` (spacing aside) what rsyslog logs as that fragment?"""
        pieces = self.detector.logged_pieces(sig_id)
        return 0 <= fragment < len(pieces) and pieces[fragment].strip(b" \t") == line.strip(b" \t")

    def _whole(self, analyses: Sequence[Analysis | None], items: Sequence[tuple[float, Any]],
               i: int, an: Analysis, matches: Sequence[Match]) -> tuple[Match, ...]:
        """Ambiguous matches of line ``i`` that, with the lines following it,
        are a signature's complete payload:

        * one line that is all of it: ``HELP\r`` (text of 4 bytes or more,
          ordinary words are too common below that) or a short binary
          datagram (Sqlping's single ``\x02``: control bytes on their own are
          no application's log line);
        * the first of the lines that are all of it, each the expected piece
          in order, from the same source within ``_SAME_CONNECTION`` seconds:
          GenericLines is ``\r\n\r\n``, two lines that are only a CR.

        The correlator tags these only for a source in the middle of a scan."""
        count = self.detector.fragment_count
        core = an.line.strip(b" \t\r\n")
        out = []
        for m in matches:
            if m.kind != "exact":
                continue
            n = count.get(m.signature.id, 1)
            if n == 1:
                if len(core) >= _MIN_WHOLE or (core and _CONTROL.fullmatch(core)):
                    out.append(m)
                continue
            if not self._is_piece(m.signature.id, 0, an.line):
                continue
            t, k = items[i][0], 1
            for j in range(i + 1, min(len(analyses), i + 1 + _LOOKAHEAD)):
                aj = analyses[j]
                if aj is None or aj.source != an.source:
                    continue
                if abs(items[j][0] - t) > _SAME_CONNECTION or any(not x.ambiguous for x in aj.matches):
                    break
                if not self._is_piece(m.signature.id, k, aj.line):
                    break
                k += 1
                if k == n:
                    out.append(Match(m.signature, 0, m.kind, m.confidence, m.ambiguous))
                    break
        return tuple(out)

    def _by_sequence(self, analyses: Sequence[Analysis | None], items: Sequence[tuple[float, Any]],
                     i: int, an: Analysis, t: float) -> tuple[Match, ...]:
        """Order the distinctive matches of a line several probes share
        (``GET / HTTP/1.0\\r`` starts nmap's GetRequest and masscan's banner
        request) by how well the next lines of the same source continue each
        payload: fragment 0, then 1, 2... A tie goes to the payload with the
        fewest pieces still to come, since a longer payload's other lines would
        arrive together with this one (one connection, one batch)."""
        sure = [m for m in an.matches if not m.ambiguous]
        if len({(m.signature.probe, m.signature.scanner) for m in sure}) < 2:
            return an.matches
        window = self.correlator.window
        ranked = []
        for m in sure:
            expect, score = m.fragment + 1, 0
            for j in range(i + 1, min(len(analyses), i + 1 + _LOOKAHEAD)):
                aj = analyses[j]
                if aj is None or aj.source != an.source:
                    continue
                if items[j][0] - t > window:
                    break
                if not any(x.signature.id == m.signature.id and x.fragment == expect for x in aj.matches):
                    break
                score += 1
                expect += 1
            left = self.detector.fragment_count.get(m.signature.id, 1) - m.fragment - 1
            ranked.append((-score, left, -m.confidence, m.signature.rank, m))
        ranked.sort(key=lambda r: r[:4])
        return tuple(r[4] for r in ranked) + tuple(m for m in an.matches if m.ambiguous)

    def _following(self, analyses: Sequence[Analysis | None], resolved: Sequence[tuple[Match, ...]],
                   items: Sequence[tuple[float, Any]], i: int, source: str | None,
                   t: float) -> Match | None:
        window = self.correlator.window
        for j in range(i + 1, min(len(analyses), i + 1 + _LOOKAHEAD)):
            an = analyses[j]
            if an is None or an.source != source:
                continue
            if items[j][0] - t > window:
                return None
            sure = [m for m in resolved[j] if not m.ambiguous]
            if sure:
                return sure[0]
        return None

    def probe_map(self, an: Analysis, v: Verdict) -> dict[str, Any]:
        sig = v.match.signature
        return {
            "name": sig.probe,
            "scanner": sig.scanner,
            "id": sig.id,
            "confidence": v.confidence,
            "transport": sig.transport,
            "kind": v.match.kind,
            "payload": show_bytes(an.line),
            "fragment": v.match.fragment,
            "scan_id": v.scan_id,
            "group_lines": v.group_lines,
            "inherited": v.inherited,
            "via": v.via,
            "source": an.source,
            "shape": an.shape,
            "lossy": an.lossy,
        }


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

    return sorted({bytes(escape(b"\r", d)) for d in _dialects(dialects)})


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
    correlator = Correlator(c.window, c.scan_idle, c.max_sources, metrics)
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
