"""Naming a line by where it falls in its source's scan.

Theory of operation
-------------------
* A scanner sends its probes in a fixed order, one connection (or datagram)
  each: nmap ``-sV`` sends GenericLines, then GetRequest, HTTPOptions, ...
  (``catalogue/sequences/*.yaml``, observed from nmap's own trace output).
  Many probe lines say nothing alone: a lone ``\\r``, a bare ``HELP`` that
  rsyslog took as the HOSTNAME, ``#000#001n``, an RFC 5424 record whose
  payload went into a TAG the format does not print, an in_syslog ``ident``
  cut at 32 bytes. Their bytes leave several probes, or none, and the
  correlator's context (the connection's previous line) does not reach
  them when they are the first line of their connection.
* ``SequenceNamer.name`` runs after correlation over one batch (a chunk, or
  a block of a file, in stream order). For each line left untagged it takes
  the *anchors* around it: the tagged lines of the same source (or, for a
  line that names no sender, of the one source scanning at that time)
  within ``gap`` seconds before and after, and the source's earlier context
  from the correlator. The candidates are the probes of the anchors'
  scanner that could have left this line:

  - a piece of the probe's payload as rsyslog logs it, spacing aside
    (``Detector.logged_cores``), or a match the engine already found for it
    (ambiguous ones included: damage, truncation);
  - a proper prefix of such a piece (a TAG cut at 32 or 510 bytes, RFC 5424's
    APP-NAME prefix, a connection closed early), or of what rsyslog's NUL
    rule leaves of it with escaping off (APP-NAME ``#000#000`` of
    TerminalServer), or for records known to miss bytes, nothing at all (an
    all-TAG binary line in RFC 5424 output);
  - an empty message, for a probe whose payload has a frame that is only a
    NUL (FIELD_GUIDE 2.1: it is logged as an empty message);
  - for a line that holds only rsyslog's MSG (``%FROMHOST% %msg%``; an 8th
    element of the line, true), the pieces whose MSG it is
    (``Detector.msg_cores``), an empty one included: a binary line that was
    all TAG leaves nothing else;
  - for a line of a syslog-ng file (a 7th element of the line, true), the
    same against the pieces syslog-ng logs (``Detector.syslog_ng_cores``:
    cut at NULs as well as LFs, trailing CRs gone), an empty line being the
    piece syslog-ng's parser left nothing of.

  Then the order decides: a candidate must come after the previous anchor's
  probe and before the next anchor's in the scanner's order, and must not
  be a probe the scan already sent (each is sent once per port). A line is
  named only when exactly one probe is left (``via: sequence``, confidence
  ``SEQUENCE_CONFIDENCE``). A line right after a named line of the same
  source (within ``_SAME_CONNECTION``; its last piece up to ``_CLOSE_WAIT``)
  that is a later piece of the same payload is named as its continuation
  first; so is the line after a sender-less named line. A line right before
  a later piece of its source's payload is an earlier piece of it. A record
  that kept nothing is only placed so (or as GenericLines at a scan's
  head). Before a scan's first anchor, where several probes could have
  left a line, the one whose whole payload the line and its sender's next
  ones within the second are is taken, when only one is (GenericLines'
  two lone CRs; the request line before GetRequest's CR may not have been
  read). A next anchor earlier in the order than the previous one (the
  order starting again) bounds nothing.
* After the last probe of the order, nmap runs the NSE scripts of the
  version category, runlevel by runlevel (``nse:`` in the sequence file,
  observed from ``--script-trace``): skypev2-version sends GetRequest's bytes
  again, rpc-grind an ONC-RPC call whose XID is random. ``_nse`` places a
  sender's line after its last anchor as one of those scripts when exactly
  one step after the previous anchor (a script's line, or a probe of the
  order) fits it and no probe the order still has to send at the scan's
  intensity could have left it: a piece of the resent probe, or rpc-grind's
  bytes with the random ones taken for any byte (the prefix a record kept,
  the pieces syslog-ng cut at NULs, a datagram without its trailing NULs).
  A line that kept nothing, or too little to say so alone, only when no
  probe of the order is left; random bytes that another probe's catalogue
  entry holds as fixed ones (RPCCheck's XID) are that probe's. A resent
  probe named so does not count as sent by the order.
* ``_segments``: between two anchors of one source, the unnamed lines are
  cut into the connections of the probes the order puts between them; a
  cut is used only when it is the only one (``_split``). For records known
  to miss bytes, which may miss whole records too (Fluent Bit's RFC 5424
  parser drops every record with an empty message), probes may be passed
  over: the lines still take the probes in order, one way only
  (metasploit-msgrpc's and hazelcast-http's identical request lines).
* Nothing here creates a scan: a line is named only between lines that
  named their probe themselves, so a benign ``#015`` far from any scan, or
  from another sender, stays untagged.
* No I/O. Sequence files are data (``load_orders``), validated at load.
"""

from __future__ import annotations

import re
from bisect import bisect_left, insort
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from ._catalogue import CatalogueError, Signature

__all__ = ["NseStep", "ScanOrder", "load_orders", "SEQUENCE_CONFIDENCE"]

_SEQ_DIR = Path(__file__).resolve().parent / "catalogue" / "sequences"
#: libyaml's safe loader where PyYAML has it (a sixth of the pure one's time)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: Confidence of a line named by its place in the scan.
SEQUENCE_CONFIDENCE = 0.6
#: A connection's lines are logged together (file formats keep whole seconds).
_SAME_CONNECTION = 1.0
#: nmap's default ``--version-intensity``.
_DEFAULT_INTENSITY = 7
_INTENSITY = re.compile(r"intensity (\d)")
#: Rounds of the pass: a line named in one round is an anchor in the next.
_ROUNDS = 4
#: How much further (in ``gap``s) a line without a sender looks for anchors.
_SENDERLESS_REACH = 3
#: The last piece of a payload (bytes after its last LF, or a final NUL
#: frame) is logged when the connection closes, which the scanner does when
#: its wait for an answer is over: up to this long after the first line.
_CLOSE_WAIT = 15.0
#: Most probes, and lines, one stretch between two anchors is cut into
#: (``SequenceNamer._split``).
_MAX_SPLIT = 64
_MAX_SPLIT_LINES = 256
#: Candidate sets kept per (scanner, line, lossy, cut).
_MAX_CANDIDATE_MEMO = 4096
_DIGITS = re.compile(rb"[0-9]+")
#: How far into a lossy line a space that joined two record fields is looked for.
_MAX_JOIN = 48


def _flags(item: Sequence[Any]) -> tuple[bool, bool]:
    """(a syslog-ng line, a line that holds only MSG) of a sequence line's
    optional 7th and 8th elements."""
    return len(item) > 6 and bool(item[6]), len(item) > 7 and bool(item[7])


def _names(sent: dict[str | None, set[tuple[str, str]]], source: str | None) -> set[str]:
    """The names of the probes ``source`` sent (``SequenceNamer.name``'s
    ``sent``), whatever their transport."""
    return {p for p, _tr in sent.get(source, ())}


def _telling(core: bytes) -> bool:
    """More than a lone CR, a common word or a run of one byte."""
    t = core.strip(b" \t\r")
    return len(t) >= 6 and len(set(t)) > 2 and not t.isalpha()


@dataclass(frozen=True, slots=True)
class NseStep:
    """An NSE script that runs after the service probes (its runlevel's
    place): the bytes of its first send, and the offsets that differ from
    one send to the next (a random id)."""

    script: str
    sends: bytes
    varies: frozenset[int]


@dataclass(frozen=True, slots=True)
class ScanOrder:
    """(scanner, transport) -> probe -> position in the send order; and the
    NSE scripts that run after the last probe, in the order they start."""

    positions: dict[tuple[str, str], dict[str, int]]
    nse: dict[tuple[str, str], tuple[NseStep, ...]] = field(default_factory=dict)

    def position(self, sig: Signature) -> int | None:
        order = self.positions.get((sig.scanner, sig.transport))
        if order is None:
            return None
        if sig.family == "udp-payload":
            return -1  # the port scan's own payloads come before any service probe
        return order.get(sig.probe)


def load_orders(paths: Iterable[Path] | None = None) -> ScanOrder:
    """The bundled sequence files (``catalogue/sequences/*.yaml``), or ``paths``."""
    files = sorted(_SEQ_DIR.glob("*.yaml")) if paths is None else list(paths)
    positions: dict[tuple[str, str], dict[str, int]] = {}
    nse: dict[tuple[str, str], tuple[NseStep, ...]] = {}
    for path in files:
        try:
            data = yaml.load(Path(path).read_text(), Loader=_LOADER)
        except (OSError, yaml.YAMLError) as exc:
            raise CatalogueError(f"cannot read sequence file: {exc}", file=str(path)) from None
        if not isinstance(data, list):
            raise CatalogueError("a sequence file is a list of entries", file=str(path))
        for n, entry in enumerate(data):
            if not isinstance(entry, dict) or not all(
                    isinstance(entry.get(k), str) for k in ("scanner", "transport", "provenance")):
                raise CatalogueError(f"entry {n}: needs scanner, transport and provenance strings",
                                     file=str(path))
            order = entry.get("order")
            if not isinstance(order, list) or not all(isinstance(x, str) for x in order):
                raise CatalogueError(f"entry {n}: order must be a list of probe names", file=str(path))
            key = (entry["scanner"], entry["transport"])
            positions[key] = {name: i for i, name in enumerate(order)}
            steps = entry.get("nse", [])
            if not isinstance(steps, list):
                raise CatalogueError(f"entry {n}: nse must be a list", file=str(path))
            got = []
            for k, step in enumerate(steps):
                varies = step.get("varies", []) if isinstance(step, dict) else None
                if (not isinstance(step, dict) or not isinstance(step.get("script"), str)
                        or not isinstance(step.get("sends"), str) or not isinstance(varies, list)
                        or not all(isinstance(v, int) and v >= 0 for v in varies)):
                    raise CatalogueError(f"entry {n}: nse step {k}: needs a script and sends string "
                                         "and a list of varies offsets", file=str(path))
                try:
                    sends = step["sends"].encode("latin-1")
                except UnicodeEncodeError:
                    raise CatalogueError(f"entry {n}: nse step {k}: sends must be bytes (\\xNN escapes)",
                                         file=str(path)) from None
                got.append(NseStep(step["script"], sends, frozenset(varies)))
            nse[key] = tuple(got)
    return ScanOrder(positions, nse)


@dataclass(slots=True)
class _Anchor:
    t: float
    source: str | None
    sig: Signature
    fragment: int
    #: the NSE step (``ScanOrder.nse``) this pass named the line as
    step: int | None = None


class _Index:
    """Anchor line numbers, sorted: per source, per source those with a
    place in their scanner's order, and all with a source."""

    __slots__ = ("by_source", "placed", "placed_by_transport", "with_source")

    def __init__(self) -> None:
        self.by_source: dict[str | None, list[int]] = {}
        self.placed: dict[str | None, list[int]] = {}
        self.placed_by_transport: dict[tuple[str | None, str], list[int]] = {}
        self.with_source: list[int] = []

    def add(self, i: int, a: _Anchor, placed: bool) -> None:
        insort(self.by_source.setdefault(a.source, []), i)
        if placed:
            insort(self.placed.setdefault(a.source, []), i)
            insort(self.placed_by_transport.setdefault((a.source, a.sig.transport), []), i)
        if a.source is not None:
            insort(self.with_source, i)


class SequenceNamer:
    """Names the untagged lines of a batch by their place in a scan."""

    def __init__(self, detector: Any, order: ScanOrder, gap: float = 30.0) -> None:
        self.detector = detector
        self.order = order
        self.gap = gap
        by_scanner: dict[str, list[Signature]] = {}
        for sig in detector.signatures:
            if sig.match == "payload":
                by_scanner.setdefault(sig.scanner, []).append(sig)
        self._by_scanner = by_scanner
        # (scanner, logged piece spacing aside) -> [(signature, fragment)]
        self._pieces: dict[tuple[str, bytes], list[tuple[Signature, int]]] = {}
        # the same for syslog-ng's pieces
        self._sng_pieces: dict[tuple[str, bytes], list[tuple[Signature, int]]] = {}
        self._sng_cores: dict[str, tuple[bytes, ...]] = {}
        for sigs in by_scanner.values():
            for sig in sigs:
                for k, p in enumerate(detector.logged_cores(sig.id)):
                    self._pieces.setdefault((sig.scanner, p), []).append((sig, k))
                cores = self._sng_cores[sig.id] = self._syslog_ng(sig)
                for k, p in enumerate(cores):
                    self._sng_pieces.setdefault((sig.scanner, p), []).append((sig, k))
        self._nul_kept: dict[str, tuple[bytes, ...]] = {}
        self._multi: set[str | None] = set()
        self._index = _Index()
        self._cands: dict[tuple[str, bytes, bool, bool, bool], dict[str, tuple[Signature, int]]] = {}
        # The lowest intensity at which nmap sends a probe (catalogue notes,
        # observed at each intensity); probes that leave no line at all (only
        # digits: imtcp waits for an octet-counted frame that never comes).
        self._intensity: dict[tuple[str, str, str], int] = {}
        self._silent: set[tuple[str, str, str]] = set()
        for sig in detector.signatures:
            key = (sig.scanner, sig.transport, sig.probe)
            m = _INTENSITY.search(sig.notes or "")
            if m is not None:
                self._intensity[key] = int(m.group(1))
            if sig.match == "payload" and sig.transport == "tcp" and sig.payload.strip(b"0123456789") == b"":
                self._silent.add(key)
        # Probes whose payload has a frame that is only a NUL (logged empty).
        self._empty: set[str] = set()
        for sig in detector.signatures:
            if sig.match == "payload" and sig.transport == "tcp" and b"\n\x00\n" in b"\n" + sig.payload + b"\n":
                self._empty.add(sig.id)
        # (scanner, transport) -> the NSE steps after the order, each with the
        # probe whose bytes it resends (skypev2-version sends GetRequest's),
        # or else the script's own catalogue entry (rpc-grind's marker).
        self._steps: dict[tuple[str, str], list[tuple[NseStep, Signature | None, Signature | None]]] = {}
        for key, steps in order.nse.items():
            for step in steps:
                same = [g for g in by_scanner.get(key[0], ()) if g.transport == key[1] and g.payload == step.sends]
                own = [g for g in detector.signatures if g.scanner == key[0] and g.transport == key[1]
                       and g.probe == step.script]
                self._steps.setdefault(key, []).append((
                    step, min(same, key=lambda g: g.rank) if same else None,
                    min(own, key=lambda g: g.rank) if own else None))

    def _syslog_ng(self, sig: Signature) -> tuple[bytes, ...]:
        """What syslog-ng logs of the signature's payload, spacing aside."""
        from ._engine import syslog_ng_udp

        if sig.transport == "udp":
            return (syslog_ng_udp(sig.payload).strip(b" \t"),)
        get = getattr(self.detector, "syslog_ng_cores", None)
        return get(sig.id) if get is not None else ()

    def _count(self, sig: Signature, sng: bool) -> int:
        """How many lines the payload leaves (syslog-ng's, or rsyslog's and
        its NUL frame)."""
        if sng:
            return len(self._sng_cores.get(sig.id, ()))
        return len(self.detector.logged_cores(sig.id)) + (sig.id in self._empty)

    # -- compatibility -------------------------------------------------------

    def _fragments(self, sig: Signature, core: bytes, lossy: bool, cut: bool, *, sng: bool = False,
                   head: bool = False) -> list[int]:
        """Fragments of ``sig`` that could have been logged as ``core``
        (``sng``: by syslog-ng; ``head``: the line is only MSG, see
        ``Detector.msg_cores``)."""
        if sng:
            pieces = self._sng_cores.get(sig.id, ())
            return [k for k, p in enumerate(pieces)
                    if p == core or (cut and len(p) > len(core) and p.startswith(core))]
        if head:
            out = [k for k, m in enumerate(self.detector.msg_cores(sig.id)) if m == core]
            if not core and sig.id in self._empty:
                out.append(len(self.detector.logged_cores(sig.id)))
            return out
        pieces = self.detector.logged_cores(sig.id)
        out = []
        if not core:
            if sig.id in self._empty:
                out.append(len(pieces))  # the NUL frame comes after the text
            if lossy:
                out.extend(range(len(pieces)))
            return out
        kept = self._kept(sig.id) if lossy or cut else ()
        for k, p in enumerate(pieces):
            # (a CR at the end is what in_tail and in_syslog chomp off a
            # line rsyslog wrote with escaping off)
            if p == core or p == core + b"\r" or (
                    (lossy or cut) and ((len(p) > len(core) and p.startswith(core))
                                        or (len(kept[k]) > len(core) and kept[k].startswith(core)))):
                # (or a prefix of what the NUL rule leaves of it: escaping
                # off, TerminalServer's ``\x03\x00\x00\x0b\x06\xe0`` is logged
                # ``#000#000\xe0``, and RFC 5424's APP-NAME keeps ``#000#000``)
                out.append(k)
        return out

    def _kept(self, sig_id: str) -> tuple[bytes, ...]:
        """The signature's logged pieces as rsyslog with escaping off keeps
        them (``_engine.unescaped_nul_rule``), spaces and tabs stripped."""
        got = self._nul_kept.get(sig_id)
        if got is None:
            from ._engine import unescaped_nul_rule

            got = self._nul_kept[sig_id] = tuple(unescaped_nul_rule(p).strip(b" \t")
                                                 for p in self.detector.logged_cores(sig_id))
        return got

    def candidates(self, scanner: str, core: bytes, matches: Sequence[Any], lossy: bool,
                   cut: bool, *, sng: bool = False, head: bool = False) -> dict[str, tuple[Signature, int]]:
        """sig id -> (signature, fragment) of the scanner's probes that could
        have left this line."""
        key = (scanner, core, lossy, cut, sng, head)
        base = self._cands.get(key)
        if base is None:
            base = self._catalogue_candidates(scanner, core, lossy, cut, sng=sng, head=head)
            if len(self._cands) >= _MAX_CANDIDATE_MEMO:
                self._cands.clear()
            self._cands[key] = base
        if not matches:
            return base
        out: dict[str, tuple[Signature, int]] = {}
        for m in matches:
            if m.signature.scanner == scanner:
                out.setdefault(m.signature.id, (m.signature, m.fragment))
        for sid, v in base.items():
            out.setdefault(sid, v)
        return out

    def could_place(self, item: Sequence[Any]) -> bool:
        """Is a sequence line (as ``name`` takes them) a piece some
        scanner's probe leaves? A line none leaves is never placed as one."""
        _t, _src, core, _matches, lossy, cut = item[:6]
        sng, head = _flags(item)
        return any(self.candidates(scanner, core, (), lossy, cut, sng=sng, head=head) for scanner in self._by_scanner)

    def _catalogue_candidates(self, scanner: str, core: bytes, lossy: bool,
                              cut: bool, *, sng: bool = False, head: bool = False) -> dict[str, tuple[Signature, int]]:
        out: dict[str, tuple[Signature, int]] = {}
        if sng:
            for sig, k in self._sng_pieces.get((scanner, core), ()):
                out.setdefault(sig.id, (sig, k))
            return out
        if core and not (lossy or cut or head):
            # only whole pieces: one lookup
            for key in (core, core + b"\r"):
                for sig, k in self._pieces.get((scanner, key), ()):
                    out.setdefault(sig.id, (sig, k))
            return out
        for sig in self._by_scanner.get(scanner, ()):
            if sig.id in out:
                continue
            frags = self._fragments(sig, core, lossy, cut, head=head)
            if frags:
                out[sig.id] = (sig, frags[0])
        return out

    # -- the pass ------------------------------------------------------------

    def name(self, lines: Sequence[tuple[float, str | None, bytes, Sequence[Any], bool, bool] | None],
             named: Sequence[tuple[Signature, int] | None], context: Any,
             ) -> list[tuple[Signature, int, str | None, str] | None]:
        """``lines``: per line of the batch, None (not a candidate) or (time,
        source, stripped line, engine matches, lossy, cut); ``named``: per
        line, the (signature, fragment) it was tagged with, or None;
        ``context(source)``: (time, signature, fragment, probes already sent)
        of the source's scan before this batch, or None.
        -> per line: None, or (signature, fragment, source, via) for a line
        this pass names (``via``: ``continuation`` or ``sequence``)."""
        n = len(lines)
        anchors: list[_Anchor | None] = [None] * n
        for i, nm in enumerate(named):
            if nm is not None and lines[i] is not None:
                t, src = lines[i][0], lines[i][1]  # type: ignore[index]
                anchors[i] = _Anchor(t, src, nm[0], nm[1])
        out: list[tuple[Signature, int, str | None, str] | None] = [None] * n
        # per sender, the probes sent as (name, transport): the order of each
        # transport places its own probes (a TCP and a UDP probe can share a
        # name); ``_names`` for the passes that go by name
        sent: dict[str | None, set[tuple[str, str]]] = {}
        for a in anchors:
            if a is not None:
                sent.setdefault(a.source, set()).add((a.sig.probe, a.sig.transport))
        # A scan of several ports sends the whole order to each, interleaved:
        # the order says nothing there. A probe named on two connections
        # (more than ``gap`` apart) marks such a source; a TCP and a UDP
        # probe of one name are two probes (``-sS -sU -sV``).
        seen: dict[tuple[str | None, str, str], float] = {}
        again: dict[str | None, set[tuple[str, str]]] = {}
        for a in anchors:
            if a is None:
                continue
            key = (a.source, a.sig.probe, a.sig.transport)
            t0 = seen.setdefault(key, a.t)
            if abs(a.t - t0) > self.gap:
                again.setdefault(a.source, set()).add((a.sig.probe, a.sig.transport))
        # (one repeat is not enough: an NSE script may resend a probe's bytes)
        self._multi = {src for src, probes in again.items() if len(probes) >= 2}
        self._build_index(anchors)
        for _round in range(_ROUNDS):
            changed = self._lines(lines, anchors, out, sent, context)
            changed += self._segments(lines, anchors, out, sent, context)
            changed += self._head(lines, anchors, out, sent, context)
            changed += self._tail(lines, anchors, out, sent, context)
            if not changed:
                break
        return out

    def _set(self, i: int, t: float, source: str | None, sig: Signature, frag: int, via: str,
             anchors: list[_Anchor | None], out: list[Any], sent: dict[str | None, set[tuple[str, str]]],
             step: int | None = None) -> None:
        out[i] = (sig, frag, source, via)
        a = anchors[i] = _Anchor(t, source, sig, frag, step)
        if step is not None:
            # an NSE script's line: a probe whose bytes it resends is not
            # sent by the order for that (GetRequest's place is still open)
            self._index.add(i, a, False)
            return
        self._index.add(i, a, self._pos(a) is not None)
        sent.setdefault(source, set()).add((sig.probe, sig.transport))

    def _lines(self, lines: Sequence[Any], anchors: list[_Anchor | None], out: list[Any],
               sent: dict[str | None, set[tuple[str, str]]], context: Any) -> int:
        """One line at a time: a continuation of the previous named line, or
        the one probe its bytes allow between its anchors."""
        changed = 0
        for i in range(len(lines)):
            item = lines[i]
            if item is None or anchors[i] is not None:
                continue
            t, src, core, matches, lossy, cut = item[:6]
            sng, head = _flags(item)
            # Any probe fits a line with nothing left: _segments counts those;
            # here it is only the rest of the previous line's payload (its
            # last piece, logged when the connection closed).
            rest_only = not core and lossy
            prev, nxt, source = self._around(anchors, i, t, src)
            ctx = context(source) if source is not None else None
            if prev is None and ctx is not None and 0 <= t - ctx[0] <= self.gap:
                prev = _Anchor(ctx[0], source, ctx[1], ctx[2])
            # The line whose payload this one may go on: the sender's previous
            # named line, or a sender-less one right before it (``OPTIONS /
            # HTTP/1.0`` whose HOSTNAME was the payload's first word).
            cont = prev
            if src is not None:
                orphan = self._near(self._index.by_source.get(None, ()), anchors, i, t, -1,
                                    _CLOSE_WAIT if rest_only else _SAME_CONNECTION)
                if orphan is not None and t >= orphan.t and (cont is None or orphan.t > cont.t):
                    cont = orphan
            if prev is None and nxt is None and cont is None or source in self._multi:
                continue
            scanner = (cont or prev or nxt).sig.scanner  # type: ignore[union-attr]
            if prev is not None and nxt is not None and nxt.sig.scanner != scanner:
                continue
            cands = self.candidates(scanner, core, matches, lossy, cut, sng=sng, head=head)
            if not cands and not (lossy and cont is not None) and not (self._steps and prev is not None):
                continue  # (an NSE script's line has no candidate of the order: _nse)
            # The rest of the previous line's payload, logged with it (its
            # last piece when the connection closed); bytes lost inside a
            # short lossy line are looked for only here.
            if cont is not None and 0 <= t - cont.t <= _CLOSE_WAIT and (cont.sig.id in cands or lossy):
                frag = self._later_fragment(cont.sig, core, lossy, cut, cont.fragment, sng=sng, head=head)
                if frag is None:
                    # a later piece as the engine read it (escaping off: what
                    # the NUL rule left of TerminalServerCookie's last piece)
                    frag = min((m.fragment for m in matches
                                if m.signature.id == cont.sig.id and m.fragment > cont.fragment), default=None)
                if frag is None and lossy:
                    frag = self._gapped_fragment(cont.sig, core, cont.fragment)
                last = self._count(cont.sig, sng) - 1
                if frag is not None and t - cont.t > _SAME_CONNECTION and frag != last:
                    frag = None
                if frag is not None:
                    self._set(i, t, source, cont.sig, frag, "continuation", anchors, out, sent,
                              step=cont.step)
                    changed += 1
                    continue
            if (nxt is not None and nxt.source == source and nxt.fragment >= 1 and nxt.sig.id in cands
                    and 0 <= nxt.t - t <= (_CLOSE_WAIT if rest_only else _SAME_CONNECTION)
                    and (cont is None or cont.sig.id != nxt.sig.id)
                    and self._alone_before(lines, anchors, i, nxt)):
                # An earlier piece of the next line's payload: its first piece,
                # logged at once, when the rest came at close (SSLSessionReq:
                # its ClientHello's head kept nothing, its tail 5 s later
                # did), or a request line rsyslog took the HOSTNAME of
                # (apple-iphoto's ``GET /server-info HTTP/1.1`` in RFC 5424).
                frags = self._fragments(nxt.sig, core, lossy, cut, sng=sng, head=head)
                frags += [m.fragment for m in matches if m.signature.id == nxt.sig.id]
                frag = max((f for f in frags if f < nxt.fragment), default=None)
                if frag is not None:
                    self._set(i, t, source, nxt.sig, frag, "sequence", anchors, out, sent, step=nxt.step)
                    changed += 1
                    continue
            got = self._nse(i, item, anchors, source, cands, sent, ctx)
            if got is not None:
                self._set(i, t, source, got[1], got[2], "sequence", anchors, out, sent, step=got[0])
                changed += 1
                continue
            if prev is None and nxt is None or not cands:
                continue
            # Each transport's order places its own probes: ``-sS -sU -sV``
            # goes through the TCP and the UDP order at once from one source,
            # and a TCP and a UDP probe can share a name (Help).
            already = set(sent.get(source, ()))
            if ctx is not None:
                # (less the probes this line's own bytes name: the correlator
                # counts a probe as sent from a line too unsure to be tagged,
                # an in_syslog ident cut at 32 bytes)
                own = {(m.signature.probe, m.signature.transport) for m in matches if not m.ambiguous}
                if len(ctx) > 4:
                    already |= ctx[4] - own
                else:  # (names only: sent on every transport)
                    already |= {(p, tr) for p in ctx[3] for tr in ("tcp", "udp", "any")} - own
            if rest_only and (self._placed(anchors, i, t, source, -1) is not None or (
                    prev is not None and prev.source == source and self._pos(prev) is not None)):
                continue  # (at the head of a scan: GenericLines' two empty records)
            bounds: dict[str, tuple[_Anchor | None, _Anchor | None]] = {}
            for tr in {sig.transport for sig, _ in cands.values()}:
                lo = self._placed(anchors, i, t, source, -1, tr)
                if (lo is None and prev is not None and prev.source == source and prev.sig.transport == tr
                        and self._pos(prev) is not None):
                    lo = prev  # the scan's line from an earlier batch
                hi = self._placed(anchors, i, t, source, +1, tr)
                if src is None:
                    # A line without a sender: placed lines without one (their
                    # HOSTNAME was the payload's word too) are as near.
                    lo = self._nearer(lo, self._placed(anchors, i, t, None, -1, tr), t)
                    hi = self._nearer(hi, self._placed(anchors, i, t, None, +1, tr), t)
                if lo is not None and hi is not None and self._pos(hi) < self._pos(lo):  # type: ignore[operator]
                    # The order starts again after this line (an NSE script
                    # resends GetRequest's bytes after the last service probe,
                    # insteonPLM): the next anchor bounds nothing; the line is
                    # among the rest of the order after the previous one.
                    hi = None
                if lo is not None or hi is not None:
                    bounds[tr] = (lo, hi)
            if not bounds:
                continue  # no order to place it by
            left: dict[str, tuple[Signature, int]] = {}
            for sid, (sig, frag) in cands.items():
                b = bounds.get(sig.transport)
                if b is None or (sig.probe, sig.transport) in already:
                    continue
                pos = self.order.position(sig)
                if pos is None:
                    continue
                lo, hi = b
                if lo is not None and pos <= self._pos(lo):  # type: ignore[operator]
                    continue
                if hi is not None and pos >= self._pos(hi):  # type: ignore[operator]
                    continue
                left[sid] = (sig, frag)
            if all(b[0] is None for b in bounds.values()) and not head \
                    and len({sig.probe for sig, _ in left.values()}) > 1:
                # The head of a scan, several probes before the first anchor:
                # the one whose whole payload the line and the sender's next
                # ones within the second are, when only one is (GenericLines'
                # two lone CRs: GetRequest, HTTPOptions, ... end with one CR,
                # after a request line a live stream may not have read). Not
                # for lines that hold only MSG: _head counts those.
                group = self._head_group(lines, anchors, i, t, src, source)
                whole = {sid: v for sid, v in left.items()
                         if self._head_fit(v[0], group, sng, lossy, core, v[1], strict=True)}
                if len({sig.probe for sig, _ in whole.values()}) == 1:
                    left = whole
            if len({sig.probe for sig, _ in left.values()}) != 1:
                continue
            sig, frag = min(left.values(), key=lambda x: x[0].rank)
            if bounds[sig.transport][0] is None:
                # The head of a scan: only a payload seen whole (GenericLines'
                # two CRs, not one CR alone) is placed before the first anchor.
                if not self._head_fit(sig, self._head_group(lines, anchors, i, t, src, source),
                                      sng, lossy, core, frag):
                    continue
                frag = 0
            self._set(i, t, source, sig, frag, "sequence", anchors, out, sent)
            changed += 1
        return changed

    @staticmethod
    def _head_group(lines: Sequence[Any], anchors: Sequence[_Anchor | None], i: int, t: float,
                    src: str | None, source: str | None) -> list[Any]:
        """Line ``i`` and the unnamed lines of its sender within the second
        after it."""
        group = []
        for j in range(i, len(lines)):
            lj = lines[j]
            if lj is None:
                continue
            if lj[0] - t > _SAME_CONNECTION:
                break
            if anchors[j] is None and lj[1] in (src, source):
                group.append(lj)
        return group

    def _head_fit(self, sig: Signature, group: Sequence[Any], sng: bool, lossy: bool, core: bytes,
                  frag: int, strict: bool = False) -> bool:
        """Are the first lines of ``group`` all of ``sig``'s payload, from
        its first piece (``strict``: and the group is just that)? A record known to miss lines may show only its first
        piece, when that says more than a lone CR or word."""
        total = self._count(sig, sng) - (0 if sng else sig.id in self._empty)
        # (the sender's next line within the second may be another
        # connection's: another program logging through the same relay, as
        # the benign lines of corpus-dev's mixed run do)
        fit = None
        # (a record known to miss lines may have kept only its first line,
        # and the rest of the second be others')
        least = 1 if lossy and not strict else min(total, len(group))
        for k in range(len(group), least - 1, -1):
            fit = self._fit(sig.scanner, sig.transport, sig.probe, group[:k])
            if fit is not None:
                break
        if fit is None or fit[0][1] != 0:
            return False
        if strict:
            return len(fit) == total == len(group)
        # (a record known to miss lines too, Fluent Bit's RFC 5424 parser
        # drops empty ones: its first piece will do)
        return len(fit) >= total or (lossy and frag == 0 and _telling(core))

    # -- the NSE scripts after the order --------------------------------------

    def _step_of(self, i: int, a: _Anchor, earlier: _Anchor | None) -> int | None:
        """The NSE step anchor ``a`` (line ``i``) is: named so here, the
        script's own entry, or a resent probe's bytes after a later probe
        of the order (``earlier``, the sender's anchor before it)."""
        if a.step is not None:
            return a.step
        for k, (step, same, own) in enumerate(self._steps.get((a.sig.scanner, a.sig.transport), ())):
            if own is not None and a.sig.probe == own.probe:
                return k
            if (same is not None and a.sig.id == same.id and earlier is not None
                    and self._pos(earlier) is not None and self._pos(a) is not None
                    and self._pos(earlier) > self._pos(a)):  # type: ignore[operator]
                return k
        return None

    @staticmethod
    def _sng_step_pieces(step: NseStep) -> list[tuple[int, int]]:
        """(start, end) of the pieces syslog-ng logs of the step's TCP send:
        cut at every NUL and LF, empty ones dropped; a random byte is taken
        for one that cuts nothing (it may, and then no piece fits)."""
        out, start = [], 0
        sends = step.sends
        for k in range(len(sends) + 1):
            if k == len(sends) or (sends[k] in b"\0\n" and k not in step.varies):
                if k > start:
                    out.append((start, k))
                start = k + 1
        return out

    def _step_fit(self, step: NseStep, same: Signature | None, own: Signature | None,
                  item: Sequence[Any]) -> list[tuple[Signature, int, bool, bool]]:
        """(signature, fragment, telling, random) for each way the line can
        be the step's: a piece of the probe it resends, or what rsyslog or
        syslog-ng keeps of its own bytes with the random ones (``varies``)
        any byte; telling is False for a line that kept too little to say
        so alone, random True for one that holds random bytes."""
        core, matches, lossy, cut = item[2:6]
        sng, head = _flags(item)
        if same is not None:
            frags = sorted({m.fragment for m in matches if m.signature.id == same.id}
                           | set(self._fragments(same, core, lossy, cut, sng=sng, head=head)))
            return [(same, f, bool(core), False) for f in frags]
        if own is None:
            return []
        if not core:
            return [(own, 0, False, False)] if (lossy or head) else []
        if head:
            return []
        sends = step.sends

        def fits(start: int, end: int, prefix: bool) -> int | None:
            """How many of the line's bytes are the send's fixed ones, when
            the line is sends[start:end] (or a prefix of it)."""
            nonlocal random
            if len(core) > end - start or (not prefix and len(core) != end - start):
                return None
            for k, b in enumerate(core):
                if start + k not in step.varies and sends[start + k] != b:
                    return None
            fixed = sum(1 for k in range(len(core)) if start + k not in step.varies)
            random = fixed < len(core)
            return fixed

        random = False
        if sng and own.transport == "tcp":
            out = []
            for f, (start, end) in enumerate(self._sng_step_pieces(step)):
                while start < end and sends[start] in b" \t" and start not in step.varies:
                    start += 1
                while end > start and sends[end - 1] in b" \t\r" and end - 1 not in step.varies:
                    end -= 1
                fixed = fits(start, end, False)
                if fixed is not None:
                    out.append((own, f, fixed >= 8, random))
            return out
        # the line's bytes from the start of the send (spacing aside); what
        # follows them is what the record lost (cut, lossy) or the NULs
        # syslog-ng left off a datagram
        start = 0
        if sng or not (lossy or cut):
            for start in range(len(sends)):
                if sends[start] not in b" \t" or start in step.varies:
                    break
        fixed = fits(start, len(sends), True)
        if fixed is None and lossy:
            # (a record's fields joined again with a space the line did not
            # have: Fluent Bit's ident stops at a byte its pattern refuses)
            for p in [k for k, b in enumerate(core[:_MAX_JOIN]) if b == 0x20]:
                core = item[2][:p] + item[2][p + 1:]
                fixed = fits(start, len(sends), True)
                if fixed is not None:
                    break
        if fixed is None:
            return []
        if (not (lossy or cut) and sends[start + len(core):].strip(b"\0")
                and not (step.varies and start + len(core) > max(step.varies))):
            # (a cut after the random bytes, where a relay cut the TAG
            # at 32 characters and the parser took it for the message)
            return []
        return [(own, 0, fixed >= 8, random)]

    def _nse(self, i: int, item: Sequence[Any], anchors: list[_Anchor | None], source: str | None,
             cands: dict[str, tuple[Signature, int]], sent: dict[str | None, set[tuple[str, str]]],
             ctx: Any) -> tuple[int, Signature, int] | None:
        """A line after the sender's last probe of the order, placed as one
        of the NSE scripts that run then (``ScanOrder.nse``), when exactly
        one step between the anchors around it fits it and no probe still
        to come in the order does. A line that kept too little to say so
        alone (an empty record) only when the scan's intensity sends no
        probe after the previous anchor, or that anchor was a script's."""
        if source is None or source in self._multi or not self._steps:
            return None
        t = item[0]
        lst = self._index.by_source.get(source, ())
        k = bisect_left(lst, i)
        back = [j for j in lst[:k] if anchors[j] is not None and 0 <= t - anchors[j].t <= self.gap]  # type: ignore[union-attr]
        if not back:
            return None
        transports = {anchors[j].sig.transport for j in back}  # type: ignore[union-attr]
        if len(transports) == 1:
            return self._nse_after(i, item, anchors, source, cands, sent, ctx, lst, k, back)
        # A sender going through two orders at once (``-sS -sU -sV``): the
        # line follows the last anchor of its own transport's order, which
        # of them is not known: it is placed when exactly one fits it.
        got = []
        for tr in sorted(transports):
            g = self._nse_after(i, item, anchors, source, cands, sent, ctx,
                                [j for j in lst if anchors[j].sig.transport == tr],  # type: ignore[union-attr]
                                None, [j for j in back if anchors[j].sig.transport == tr])  # type: ignore[union-attr]
            if g is not None:
                got.append(g)
        return got[0] if len(got) == 1 else None

    def _nse_after(self, i: int, item: Sequence[Any], anchors: list[_Anchor | None], source: str,
                   cands: dict[str, tuple[Signature, int]], sent: dict[str | None, set[tuple[str, str]]], ctx: Any,
                   lst: Sequence[int], k: int | None, back: list[int]) -> tuple[int, Signature, int] | None:
        """``_nse`` after the anchors ``back`` (the last is the line's
        previous anchor), ``lst`` the anchors the next one is looked for in
        (``k``: where line ``i`` goes in it, when known)."""
        t = item[0]
        if k is None:
            k = bisect_left(lst, i)
        j = back[-1]
        lo = anchors[j]
        assert lo is not None
        steps = self._steps.get((lo.sig.scanner, lo.sig.transport))
        if not steps:
            return None
        # the anchor before lo, looked for back to where the order went forward
        earlier = None
        for jj in reversed(back[:-1]):
            a = anchors[jj]
            if a is not None and self._pos(a) is not None and a.sig.id != lo.sig.id:
                earlier = a
                break
        lo_step = self._step_of(j, lo, earlier)
        key = (lo.sig.scanner, lo.sig.transport)
        order = self.order.positions.get(key, {})
        already = _names(sent, source)
        if ctx is not None:
            already |= ctx[3]
        remaining: list[str] = []
        if lo_step is None:
            plo = self._pos(lo)
            if plo is None:
                return None
            level = self._scan_intensity(*key, already)
            for name, pos in order.items():
                if (pos > plo and name not in already and (*key, name) not in self._silent
                        and self._intensity.get((*key, name), 0) <= level):
                    remaining.append(name)
            if any(sig.transport == key[1] and sig.probe in remaining for sig, _frag in cands.values()):
                return None  # a probe still to come could have left it
            lo_step = -1
        hi_step = len(steps)
        nxt = lst[k + 1] if k < len(lst) and lst[k] == i else (lst[k] if k < len(lst) else None)
        if nxt is not None:
            a = anchors[nxt]
            if a is not None and 0 <= a.t - t <= self.gap:
                st = self._step_of(nxt, a, lo)
                if st is None:
                    return None  # the order goes on after this line
                hi_step = st
        # Random bytes that are a probe's fixed ones (RPCCheck's XID, in
        # its own RPC call) are that probe's.
        elsewhere = any(sig.scanner == lo.sig.scanner for sig, _f in cands.values())
        fits = []
        if lo.step is not None and 0 <= t - lo.t <= _SAME_CONNECTION:
            # the next piece of the step's payload (syslog-ng cut rpc-grind's
            # call at every NUL)
            step, same, own = steps[lo.step]
            later = [g for g in self._step_fit(step, same, own, item)
                     if g[0] is lo.sig and g[1] > lo.fragment and not (g[3] and elsewhere)]
            if later:
                return lo.step, later[0][0], min(g[1] for g in later)
        for n in range(lo_step + 1, hi_step):
            step, same, own = steps[n]
            got = [g for g in self._step_fit(step, same, own, item)
                   if (g[1] == 0 or same is not None) and not (g[3] and elsewhere)]
            if got:
                fits.append((n, *got[0][:3]))
        if len(fits) != 1:
            return None
        n, sig, frag, telling = fits[0]
        if remaining and (not telling or _flags(item)[1]):
            return None  # (lines that hold only MSG: the count at the scan's end places them)
        return n, sig, frag

    def _segments(self, lines: Sequence[Any], anchors: list[_Anchor | None], out: list[Any],
                  sent: dict[str | None, set[tuple[str, str]]], context: Any) -> int:
        """Between two placed anchors of one source (positions a < b in the
        scanner's order), the unnamed lines fall into connections (a new one
        after a pause of more than ``_SAME_CONNECTION``); when there are as
        many as the probes between a and b that the scan's intensity sends
        and that leave a line, and each connection can be its probe, each
        is named by its place."""
        changed = 0
        placed = [i for i, a in enumerate(anchors) if a is not None and self._pos(a) is not None]
        # Consecutive anchors of one sender, with lines of other senders (or
        # of none: ``show info`` as the HOSTNAME) between them allowed.
        pairs = {(x, y) for x, y in zip(placed, placed[1:])}
        by_source: dict[str, list[int]] = {}
        for i in placed:
            src = anchors[i].source  # type: ignore[union-attr]
            if src is not None:
                by_source.setdefault(src, []).append(i)
        for lst in by_source.values():
            pairs.update(zip(lst, lst[1:]))
        for x, y in sorted(pairs):
            a, b = anchors[x], anchors[y]
            assert a is not None and b is not None
            if (a.source != b.source or a.sig.scanner != b.sig.scanner
                    or a.sig.transport != b.sig.transport):
                continue
            pa, pb = self._pos(a), self._pos(b)
            assert pa is not None and pb is not None
            if pb - pa < 2 or b.t - a.t > self.gap * (pb - pa):
                continue
            source = a.source
            if source in self._multi:
                continue
            groups: list[list[int]] = []
            last_t = a.t
            # probes named between them on lines without a sender (``show
            # info`` that rsyslog took for a HOSTNAME is tarantool's)
            between_named: set[str] = set()
            for i in range(x + 1, y):
                item = lines[i]
                if item is None or anchors[i] is not None:
                    if anchors[i] is not None and anchors[i].source == source:  # type: ignore[union-attr]
                        last_t = item[0] if item is not None else last_t
                    elif anchors[i] is not None and anchors[i].source is None:  # type: ignore[union-attr]
                        between_named.add(anchors[i].sig.probe)  # type: ignore[union-attr]
                    continue
                t, src = item[0], item[1]
                if src is not None and src != source:
                    continue
                if src is None:
                    _p, _n, guess = self._around(anchors, i, t, None)
                    if guess != source:
                        continue
                if groups and t - last_t <= _SAME_CONNECTION:
                    groups[-1].append(i)
                else:
                    groups.append([i])
                last_t = t
            if not groups:
                continue
            done = _names(sent, source) | between_named
            ctx = context(source) if source is not None else None
            if ctx is not None:
                done |= ctx[3]
            level = self._scan_intensity(a.sig.scanner, a.sig.transport, done)
            order = self.order.positions.get((a.sig.scanner, a.sig.transport), {})
            between = sorted((pos, name) for name, pos in order.items() if pa < pos < pb)
            expected = [name for _pos, name in between
                        if name not in done
                        and (a.sig.scanner, a.sig.transport, name) not in self._silent
                        and self._intensity.get((a.sig.scanner, a.sig.transport, name), 0) <= level]
            flat = [i for grp in groups for i in grp]
            plan = self._by_count(a.sig.scanner, a.sig.transport, expected, b, lines, flat)
            if plan is not None:
                for i, sig, frag in plan:
                    self._set(i, lines[i][0], source, sig, frag, "sequence", anchors, out, sent)
                    changed += 1
                continue
            plan = self._split(a.sig.scanner, a.sig.transport, groups, expected, lines)
            if plan is None and all(lines[i][4] for i in flat):
                # Records known to miss bytes may miss whole lines too (Fluent
                # Bit's RFC 5424 parser drops every record with an empty
                # message): the probes that left none are passed over, and
                # the lines still take the probes in the scan's order.
                plan = self._split(a.sig.scanner, a.sig.transport, groups, expected, lines, skip=True)
            if plan is None:
                continue
            for i, sig, frag in plan:
                self._set(i, lines[i][0], source, sig, frag, "sequence", anchors, out, sent)
                changed += 1
        return changed

    def _gapped_fragment(self, sig: Signature, core: bytes, after: int) -> int | None:
        """The first piece of ``sig`` after ``after`` that is ``core`` with
        one stretch without spaces lost inside (RFC 5424 printed APP-NAME
        ``id=i`` of the TAG ``id=i:``, then MSG ``1``): a continuation only,
        where the short line alone would say nothing."""
        if not core:
            return None
        pieces = self.detector.logged_cores(sig.id)
        for k in range(after + 1, len(pieces)):
            p = pieces[k].rstrip(b"\r")
            if len(p) <= len(core) or len(p) > len(core) + 510:
                continue
            for cut in range(1, len(core)):
                head, tail = core[:cut], core[cut:]
                if p.startswith(head) and p.endswith(tail) and b" " not in p[cut:len(p) - len(tail)]:
                    return k
        return None

    @staticmethod
    def _alone_before(lines: Sequence[Any], anchors: Sequence[_Anchor | None], i: int, nxt: _Anchor) -> bool:
        """Is line ``i`` right before anchor ``nxt``: no named line between
        them (a sender-less one may be the payload's first piece: SIPOptions'
        request line) and no other unnamed line of its sender?"""
        src = lines[i][1]
        for j in range(i + 1, len(lines)):
            a = anchors[j]
            if a is nxt:
                return True
            item = lines[j]
            if item is None:
                continue
            if item[0] > nxt.t or a is not None or item[1] in (src, None):
                return False
        return False

    def _split(self, scanner: str, transport: str, groups: list[list[int]], expected: list[str],
               lines: Sequence[Any], skip: bool = False) -> list[tuple[int, Signature, int]] | None:
        """The one way to cut the lines into ``expected``'s connections, in
        order, each line of a connection its probe's next piece; None when
        there is none or more than one. A pause of more than
        ``_SAME_CONNECTION`` always starts a connection (``groups``), but two
        connections can also follow each other within it (kumo-server's
        empty RFC 5424 record and metasploit-msgrpc's request line, 0.1 ms
        apart): a group may hold several of them. ``skip``: a probe of
        ``expected`` may have left no line (each way of naming the lines
        is counted once: a probe is either passed over or takes lines)."""
        if len(expected) < len(groups) or len(expected) > _MAX_SPLIT:
            return None
        flat = [i for grp in groups for i in grp]
        if len(flat) > _MAX_SPLIT_LINES:
            return None
        starts = {grp[0] for grp in groups}
        fits: dict[tuple[int, int, int], list[tuple[Signature, int]] | None] = {}

        def fit(k: int, n: int, e: int) -> list[tuple[Signature, int]] | None:
            key = (k, n, e)
            if key not in fits:
                fits[key] = self._fit(scanner, transport, expected[e], [lines[i] for i in flat[k:k + n]])
            return fits[key]

        # ways[k][e]: how many cuts (0, 1, 2 = more) of flat[k:] into expected[e:]
        memo: dict[tuple[int, int], tuple[int, list[tuple[int, Signature, int]]]] = {}

        def ways(k: int, e: int) -> tuple[int, list[tuple[int, Signature, int]]]:
            if k == len(flat) or e == len(expected):
                return (1, []) if k == len(flat) and (skip or e == len(expected)) else (0, [])
            got = memo.get((k, e))
            if got is not None:
                return got
            count, best = 0, []
            if skip:
                count, best = ways(k, e + 1)
            n = 1
            while k + n <= len(flat):
                if n > 1 and flat[k + n - 1] in starts:
                    break  # a pause: the connection ended before this line
                here = fit(k, n, e)
                if here is not None:
                    c, rest = ways(k + n, e + 1)
                    if c:
                        count += c
                        best = [(i, sig, frag) for i, (sig, frag) in zip(flat[k:k + n], here)] + rest
                        if count > 1:
                            break
                n += 1
            memo[(k, e)] = (min(count, 2), best)
            return memo[(k, e)]

        count, plan = ways(0, 0)
        return plan if count == 1 else None

    def _head(self, lines: Sequence[Any], anchors: list[_Anchor | None], out: list[Any],
              sent: dict[str | None, set[tuple[str, str]]], context: Any) -> int:
        """The start of a scan in lines that hold only MSG: before a source's
        first placed anchor ``b`` (with nothing of its scan before the batch),
        every unnamed line of that source back to the last pause longer than
        ``gap`` is counted against the probes that come before ``b`` in the
        order (``_by_count``); all of them, or none, are named. A line of the
        source that no probe could have left is set aside; any other line in
        that stretch (a benign empty message) makes the count fail."""
        changed = 0
        firsts: dict[str | None, int] = {}
        for i, a in enumerate(anchors):
            if a is not None and a.source is not None and a.source not in firsts and self._pos(a) is not None:
                firsts[a.source] = i
        for source, y in firsts.items():
            b = anchors[y]
            assert b is not None
            pb = self._pos(b)
            if not pb or source in self._multi:
                continue
            ctx = context(source)
            if ctx is not None and 0 <= b.t - ctx[0] <= self.gap * (pb + 1):
                continue  # the scan began before this batch
            idx = [i for i in range(y) if lines[i] is not None and anchors[i] is None and lines[i][1] == source
                   and 0 <= b.t - lines[i][0] <= self.gap * pb]
            idx = self._run(idx, lines, b.t, -1)  # the scan began after the last pause
            if not idx or any(anchors[i] is not None and anchors[i].source == source  # type: ignore[union-attr]
                              for i in range(idx[0], y)):
                continue
            done = _names(sent, source)
            level = self._scan_intensity(b.sig.scanner, b.sig.transport, done)
            order = self.order.positions.get((b.sig.scanner, b.sig.transport), {})
            expected = [name for name, pos in sorted(order.items(), key=lambda x: x[1])
                        if pos < pb and name not in done
                        and (b.sig.scanner, b.sig.transport, name) not in self._silent
                        and self._intensity.get((b.sig.scanner, b.sig.transport, name), 0) <= level]
            plan = self._by_count(b.sig.scanner, b.sig.transport, expected, b, lines, idx)
            if plan is None:
                continue
            for i, sig, frag in plan:
                self._set(i, lines[i][0], source, sig, frag, "sequence", anchors, out, sent)
                changed += 1
        return changed

    def _tail(self, lines: Sequence[Any], anchors: list[_Anchor | None], out: list[Any],
              sent: dict[str | None, set[tuple[str, str]]], context: Any) -> int:
        """The end of a scan in lines that hold only MSG: after a source's
        last placed anchor ``a``, its unnamed lines are counted against the
        probes after ``a`` in the order (``_by_count``). Lines left over
        after them must be ones the scanner's other probes could have left
        (NSE scripts run after the service scan, and resend some probes'
        bytes), and stay unnamed. The intensity
        decides which probes come; one the scan has not shown may be higher
        than seen, so every intensity from the one seen up to 9 is tried,
        and the lines are named only when all that fit agree."""
        changed = 0
        lasts: dict[str | None, int] = {}
        for i, a in enumerate(anchors):
            if a is not None and a.source is not None and self._pos(a) is not None:
                lasts[a.source] = i
        for source, x in lasts.items():
            a = anchors[x]
            assert a is not None
            pa = self._pos(a)
            if pa is None or source in self._multi:
                continue
            key = (a.sig.scanner, a.sig.transport)
            order = self.order.positions.get(key, {})
            after = [name for name, pos in sorted(order.items(), key=lambda x: x[1]) if pos > pa]
            if not after:
                continue
            reach = self.gap * (len(after) + 2)
            if any(anchors[j] is not None and anchors[j].source == source  # type: ignore[union-attr]
                   for j in range(x + 1, len(lines))):
                continue
            idx = [i for i in range(x + 1, len(lines)) if lines[i] is not None and lines[i][1] == source
                   and 0 <= lines[i][0] - a.t <= reach]
            idx = self._run(idx, lines, a.t, +1)
            if not idx:
                continue
            done = _names(sent, source)
            plans = []
            for level in range(self._scan_intensity(a.sig.scanner, a.sig.transport, done), 10):
                expected = [name for name in after if name not in done and (*key, name) not in self._silent
                            and self._intensity.get((*key, name), 0) <= level]
                plan = self._by_count(a.sig.scanner, a.sig.transport, expected, None, lines, idx)
                if plan is not None:
                    plans.append(plan)
            if not plans or any(p != plans[0] for p in plans):
                continue
            for i, sig, frag in plans[0]:
                self._set(i, lines[i][0], source, sig, frag, "sequence", anchors, out, sent)
                changed += 1
        return changed

    def _run(self, idx: Sequence[int], lines: Sequence[Any], t: float, step: int) -> list[int]:
        """The lines of ``idx`` (in stream order) that follow on from time
        ``t`` (step +1: forwards; -1: backwards) with no pause longer than
        ``gap`` between two of them: a scan's lines come every few seconds,
        and a line after a longer pause is not known to be its."""
        out: list[int] = []
        last = t
        for i in (idx if step > 0 else reversed(idx)):
            if abs(lines[i][0] - last) > self.gap:
                break
            out.append(i)
            last = lines[i][0]
        return out if step > 0 else out[::-1]

    def _leaves(self, sig: Signature) -> int:
        """How many lines a probe's payload leaves: its pieces, less those
        that imtcp's octet counting swallows whole (digits, then one more
        byte; FIELD_GUIDE 1), plus the empty message of a NUL-only frame."""
        n = sig.id in self._empty
        for p in self.detector.logged_pieces(sig.id):
            m = _DIGITS.match(p) if sig.transport == "tcp" else None
            if m is None or len(p) > m.end() + 1:
                n += 1
        return n

    def _by_count(self, scanner: str, transport: str, expected: Sequence[str], b: _Anchor | None,
                  lines: Sequence[Any], idx: Sequence[int]) -> list[tuple[int, Signature, int]] | None:
        """Lines that hold only MSG (``%FROMHOST% %msg%``): the connections
        cannot be told apart by time (a payload's last piece is logged when
        the connection closes, up to ``_CLOSE_WAIT`` later, in the same
        second as the next probe's first line), but each probe leaves a known
        number of lines, each with a known MSG. The segment's lines are cut
        into runs of those lengths in the order's sequence, the lines before
        the next anchor being its own earlier pieces (with no next anchor,
        ``b`` None: the lines after the expected ones must each be a piece
        of one of the scanner's other probes, and are not named); a plan only when every line fits its probe's piece. Lines no
        probe of the scanner could have left (an application's message
        between two probes) are set aside first. None: no such plan (or
        lines of other shapes)."""
        if not idx or not all(_flags(lines[i])[1] for i in idx):
            return None
        idx = [i for i in idx if self.candidates(scanner, lines[i][2], lines[i][3], False, False, head=True)]
        sigs = []
        for name in expected:
            sig = self._sig(scanner, transport, name)
            if sig is None:
                return None
            sigs.append(sig)
        counts = [self._leaves(sig) for sig in sigs]
        extra = len(idx) - sum(counts)
        if extra < 0 or (b is not None and extra > b.fragment):
            return None
        if b is None:
            # (an NSE script of the version scan may send a probe's bytes
            # again: skypev2-version's first request is GetRequest's)
            for i in idx[len(idx) - extra:]:
                _t, _src, core, _matches, lossy, cut, *_ = lines[i]
                if not any(sig.probe not in expected and self._fragments(sig, core, lossy, cut, head=True)
                           for sig in self._by_scanner.get(scanner, ()) if sig.transport == transport):
                    return None
        plan: list[tuple[int, Signature, int]] = []
        k = 0
        for sig, n in zip([*sigs, *((b.sig,) if b is not None else ())], [*counts, extra]):
            run = idx[k:k + n]
            k += n
            if not run:
                continue
            got = self._fit(scanner, transport, sig.probe, [lines[i] for i in run], only=sig)
            if got is None or (b is not None and sig is b.sig and got[-1][1] >= b.fragment):
                return None
            plan.extend((i, g, frag) for i, (g, frag) in zip(run, got))
        return plan

    def _sig(self, scanner: str, transport: str, probe: str) -> Signature | None:
        for sig in self._by_scanner.get(scanner, ()):
            if sig.probe == probe and sig.transport == transport:
                return sig
        return None

    def _fit(self, scanner: str, transport: str, probe: str,
             group: Sequence[Any], only: Signature | None = None) -> list[tuple[Signature, int]] | None:
        """(signature, fragment) per line of one connection's lines when
        they can all be that probe's, in order; else None."""
        for sig in self._by_scanner.get(scanner, ()):
            if sig.probe != probe or sig.transport != transport or (only is not None and sig is not only):
                continue
            got: list[tuple[Signature, int]] = []
            after = -1
            for item in group:
                _t, _src, core, matches, lossy, cut = item[:6]
                frags = [m.fragment for m in matches if m.signature.id == sig.id]
                sng, head = _flags(item)
                frags += self._fragments(sig, core, lossy, cut, sng=sng, head=head)
                frags = sorted(f for f in set(frags) if f > after)
                if not frags:
                    break
                after = frags[0]
                got.append((sig, after))
            else:
                return got
        return None

    def _scan_intensity(self, scanner: str, transport: str, sent: Iterable[str]) -> int:
        level = _DEFAULT_INTENSITY
        for name in sent:
            level = max(level, self._intensity.get((scanner, transport, name), 0))
        return level

    @staticmethod
    def _nearer(a: _Anchor | None, b: _Anchor | None, t: float) -> _Anchor | None:
        if a is None or b is None:
            return a or b
        return a if abs(a.t - t) <= abs(b.t - t) else b

    def _placed(self, anchors: Sequence[_Anchor | None], i: int, t: float, source: str | None,
                step: int, transport: str | None = None) -> _Anchor | None:
        """The nearest anchor of ``source`` before (step -1) or after (+1)
        line ``i`` within ``gap`` seconds whose probe has a place in its
        scanner's order (of ``transport``'s order, when given)."""
        idx = self._index
        lst = idx.placed.get(source, ()) if transport is None else \
            idx.placed_by_transport.get((source, transport), ())
        return self._near(lst, anchors, i, t, step, self.gap)

    @staticmethod
    def _near(lst: Sequence[int], anchors: Sequence[_Anchor | None], i: int, t: float, step: int,
              gap: float) -> _Anchor | None:
        k = bisect_left(lst, i)
        j = k - 1 if step < 0 else (k + 1 if k < len(lst) and lst[k] == i else k)
        if not 0 <= j < len(lst):
            return None
        a = anchors[lst[j]]
        return a if a is not None and abs(a.t - t) <= gap else None

    def _build_index(self, anchors: Sequence[_Anchor | None]) -> None:
        idx = _Index()
        for i, a in enumerate(anchors):
            if a is not None:
                idx.add(i, a, self._pos(a) is not None)
        self._index = idx

    def _later_fragment(self, sig: Signature, core: bytes, lossy: bool, cut: bool, after: int,
                        *, sng: bool = False, head: bool = False) -> int | None:
        for k in self._fragments(sig, core, lossy, cut, sng=sng, head=head):
            if k > after:
                return k
        return None

    def _pos(self, a: _Anchor | None) -> int | None:
        return None if a is None or a.step is not None else self.order.position(a.sig)

    def _around(self, anchors: Sequence[_Anchor | None], i: int, t: float,
                src: str | None) -> tuple[_Anchor | None, _Anchor | None, str | None]:
        """The nearest anchors before and after line ``i`` of its source
        within ``gap`` seconds; for a line without a sender, of the nearest
        anchors' source when both sides (or the one side there is) agree."""
        idx = self._index
        if src is not None:
            lst = idx.by_source.get(src, ())
            gap = self.gap
        else:
            # A line without a sender looks further: the lines around it may
            # be sender-less too (single-word probes rsyslog took for HOSTNAMEs).
            lst = idx.with_source
            gap = self.gap * _SENDERLESS_REACH
        prev = self._near(lst, anchors, i, t, -1, gap)
        nxt = self._near(lst, anchors, i, t, +1, gap)
        if src is not None:
            return prev, nxt, src
        sources = {a.source for a in (prev, nxt) if a is not None}
        if len(sources) != 1:
            return None, None, None
        return prev, nxt, sources.pop()
