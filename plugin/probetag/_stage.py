"""The processing stage: one chunk of packed entries in, chunks out. No I/O.

Theory of operation
-------------------
* Input is what every input produces: a tag and the *packed entries* of one
  chunk, i.e. concatenated msgpack ``[time, record]`` arrays, exactly as a
  forward PackedForward carries them. Message and Forward mode frames, HTTP
  and NDJSON batches are all turned into this one shape by their inputs.
* Output is a list of ``OutChunk`` (tag, packed entries, count; the chunk
  type and its packing helpers live in ``_chunk``, shared with inputs and
  outputs, and are re-exported here). Entries are
  always classic ``[time, record]`` with an int or EventTime time, because
  that is what every downstream accepts (Vector's ``fluent`` source and
  Fluentd <= 1.19 reject Fluent Bit's nested ``[[time, meta], record]``).
* A record nobody changes leaves as the bytes it arrived in. Only records
  that are rewritten (tagged, time normalised) are re-encoded.
* Every record ends in exactly one outcome: passed, tagged, dropped (by a
  rule) or rejected (malformed entry). ``StageResult`` carries the counts and
  the stage adds them to ``Metrics``.
* Fluent Bit group markers (EventTime seconds 0xFFFFFFFF / 0xFFFFFFFE) are not
  log records: they are removed and counted as ``group_markers``.

Hot path
--------
Almost every record is ordinary log traffic, so the stage is built to not
look at it:

1. Entry boundaries come from ``walk_entries``: the optional C accelerator
   (``probetag._speedups``: one call per chunk, no Python object per entry)
   or, as the reference, ``Unpacker.skip()``/``tell()``. Each entry's first
   bytes are checked against ``_FAST_ENTRY`` (a 2-array, a time that needs
   no normalisation, a map). Entries that fail it take the full path below
   (nested ``[[time, meta], record]``, time 0/float/nil, rejects, markers).
2. ONE multi-literal scan (``detect.Prefilter``: hyperscan, else
   pyahocorasick, else ``re``) runs over the chunk's packed bytes. Its
   literals are fragments of every catalogue line, raw and as rsyslog
   escapes them in each configured dialect, plus the context marker ``#015``;
   msgpack stores strings unescaped, so a record holding a probe line
   contains one of them. Hit offsets map to entries by bisect. Entries hit
   only by the context marker (a Windows forwarder's CRLF) are kept only if
   the chunk also has a real hit or their time is near a live probe context
   (read from the time's bytes in place).
3. Only hit entries (and full-path ones) are decoded; hit entries go
   through ``detect.Enricher`` (rebuild -> match -> correlate -> actions) as
   one batch, so an ambiguous line can look ahead within the chunk. Of a
   hit entry that passed ``_FAST_ENTRY`` only the record is decoded: its
   time is read from its bytes, and a tagged record is packed after them.
   The bytes of the chunk's last few unread entries are kept (``_keep_tail``:
   a constant cost per chunk, no decode) for a strong hit at the head of
   the next chunk, whose neighbours before they are.
4. Output: runs of untouched entries are slices of the input; only changed
   records are re-encoded. They go out as ``OutChunk.parts`` (the forward
   output copies them once, into its frame). Records retagged by a rule
   leave in their own ``OutChunk`` per new tag, after the chunk of the
   input tag.

C accelerator
-------------
``probetag._speedups`` (``_speedups.c``, built by ``setup.py`` when a C
compiler and the Python headers are there, skipped otherwise) walks a chunk
in one call: a msgpack skipper that follows msgpack-python's own
(``unpack_template.h``: same depth limit, same outcome for every truncated
or malformed entry) and ``_FAST_ENTRY``'s byte conditions. ``_walk_py`` is
the reference it is tested against and the fallback; ``WALK_BACKEND`` says
which one runs, and ``PROBETAG_PURE=1`` in the environment forces Python.
"""

from __future__ import annotations

import functools
import re
import struct
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import msgpack

from . import _accel
from ._chunk import (EXT_EVENT_TIME, OutChunk, event_time, event_time_now, pack_after, pack_entry,
                     unpacker_for)
from ._config import Config
from ._metrics import Metrics

__all__ = ["ChunkRejected", "OutChunk", "StageResult", "Processor", "unpacker_for", "pack_entry", "event_time_now",
           "walk_entries", "WALK_BACKEND"]

GROUP_MARKERS = (0xFFFFFFFF, 0xFFFFFFFE)


class ChunkRejected(Exception):
    """A chunk refused as a whole (``reason``, ``detail``): nothing of it was
    delivered; the input answers it as refused (no ack, HTTP 413)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class StageResult:
    chunks: list[OutChunk] = field(default_factory=list)
    passed: int = 0
    tagged: int = 0
    dropped: int = 0
    rejected: int = 0
    markers: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.passed + self.tagged + self.dropped + self.rejected


def normalize_time(t: Any) -> tuple[Any, str | None]:
    """-> (time to send, reject reason or None). Returns the same object when valid."""
    if isinstance(t, list) and len(t) >= 1:  # v1.5 nested [time, metadata]
        t = t[0]
    if type(t) is int:
        if t == 0:
            return event_time_now(), None
        if t < 0 or t > 0xFFFFFFFF:
            return None, "time_out_of_range"
        return t, None
    if isinstance(t, msgpack.ExtType):
        if t.code != EXT_EVENT_TIME or len(t.data) != 8:
            return None, "bad_event_time"
        nsec = int.from_bytes(t.data[4:], "big")
        if nsec >= 1_000_000_000:
            return None, "bad_event_time"
        return t, None
    if isinstance(t, float):
        if not 0 <= t < 2**32:
            return None, "time_out_of_range"
        sec = int(t)
        return event_time(sec, min(int(round((t - sec) * 1e9)), 999_999_999)), None
    if t is None:
        return event_time_now(), None
    return None, "bad_time_type"


def is_group_marker(t: Any) -> bool:
    if isinstance(t, list) and t:
        t = t[0]
    if isinstance(t, msgpack.ExtType) and t.code == EXT_EVENT_TIME and len(t.data) == 8:
        return int.from_bytes(t.data[:4], "big") in GROUP_MARKERS and t.data[4:] == b"\0\0\0\0"
    return False


#: A record transform: (tag, time, record) -> None (unchanged, passed) or a
#: Verdict. The detection stage provides one; without it every record passes.
RecordHook = Callable[[str, Any, dict[Any, Any]], Any]


class Processor:
    """Runs one chunk through validation, detection and actions.

    ``detector`` and ``actions`` default to ones built from ``config``
    (catalogue files, allowlist, rules). ``expire(now)`` turns scans that went
    idle into summary chunks (``now`` on the records' event-time scale; see
    ``probetag.detect._correlate``)."""

    def __init__(self, config: Config, metrics: Metrics, detector: Any = None,
                 actions: Any = None) -> None:
        self.config = config
        self.metrics = metrics
        self.enricher = None
        self.prefilter = None
        #: (entries still to read at the start of the next chunk, the sender
        #: bytes they may hold): the neighbours of a hit at a chunk's end
        self._carry: tuple[int, bytes] = (0, b"")
        #: the bytes (None: an entry not kept) of the last entries that went
        #: by unread: the neighbours before a hit at the head of the next
        #: chunk (``_keep_tail``); like ``_carry``, of whatever tag came
        #: (in_syslog's tags change with a line's facility and severity)
        #: (kept in ``_tail`` as pieces: (bytes, their offsets in the chunk,
        #: the index of the first, the chunk's read entries), one per chunk
        #: or per entry; at most as many pieces as entries are kept)
        self._tail: deque[tuple[bytes, Sequence[int], int, set[int]]] = deque(maxlen=_NEIGHBOURS_BEFORE)
        #: entries rejected as msgpack Python cannot hold, so far (inputs
        #: compare it around a chunk to log their peer)
        self.undecodable = 0
        self.correlator = None
        self.actions = actions
        if config.detect.enabled:
            from .detect._enrich import build_detection

            parts = build_detection(config, metrics, detector=detector, actions=actions)
            self.detector, self.prefilter, self.correlator, self.actions, self.enricher = parts
        else:
            self.detector = detector

    # -- the hot path --------------------------------------------------------

    def process(self, tag: str, entries: bytes, walked: Any = None) -> StageResult:
        """``walked``: ``walk_entries(entries)`` when the caller has it (an
        input that counted the entries to slice a chunk), saving a walk."""
        res = StageResult()
        #: entry index -> Enricher.analyse() result, when the neighbour
        #: search analysed it already (the batch then does not again)
        self._analysed: dict[int, Any] = {}
        #: entry index -> (seconds, head, record) of a fast entry read
        #: already (``_read_fast``)
        self._fast: dict[int, tuple[float, bytes, Any]] = {}
        #: entry index -> the whole entry decoded, for a slow one
        self._unpacked: dict[int, Any] = {}
        n = len(entries)
        limit = self.config.listen.max_chunk_entries
        # An entry takes a byte at least: a chunk no longer than the bound
        # cannot pass it, and is walked without one.
        if walked is not None:
            starts, slow, pos, error = walked
        else:
            starts, slow, pos, error = (walk_entries(entries) if n <= limit
                                        else walk_entries(entries, limit))
        if error == "too_many_entries":
            # The whole chunk is refused before anything is built per entry
            # (16 MB of 0x00 is 16M entries): nothing of it is delivered, so
            # the input must not ack it.
            self.metrics.inc("chunks_rejected", reason=error)
            raise ChunkRejected(error, f"more than {limit} entries")
        count_entries = len(starts) - 1  # starts ends with a sentinel

        # One multi-literal scan over the packed bytes picks the entries to decode.
        hits: list[int] = []
        found: list[int] = []
        if self.prefilter is not None and count_entries:
            hits, weak = self.prefilter.classify(entries if pos == n else entries[:pos], starts)
            found = hits
            if weak and len(weak) == len(hits):
                # Only bare-CR lines (a Windows forwarder's CRLF) in this chunk:
                # decode those that some source's probe context is near in time.
                keep = [i for i in hits if self._context_live(entries, starts, i)]
                if len(keep) < len(hits):
                    self.metrics.inc("prefilter_skipped_no_context", len(hits) - len(keep))
                    if self.enricher is not None:
                        # (as bytes, for a scan whose first lines come later:
                        # GenericLines' two CRs open nmap's -sV; Enricher.hold)
                        kept = set(keep)
                        skipped = [i for i in hits if i not in kept] if keep else hits
                        self.enricher.hold(tag, [entries[starts[i]:starts[i + 1]] for i in skipped[-32:]],
                                           _held_entry)
                    hits = keep
            if hits:
                self.metrics.inc("prefilter_hits", len(hits))
            if self.enricher is not None and (len(weak) < len(hits) or self._carry):
                hits = self._with_neighbours(tag, entries, starts, hits, weak, count_entries, slow)
        # entry index -> None (removed: rejected, marker, dropped, retagged)
        # or bytes (re-encoded); entries not in it leave as they came.
        changes: dict[int, Any] = {}
        bulk = 0
        if len(slow) > _BULK_REJECT_MIN:
            # Many entries the fast check refused: those whose first byte is
            # no 2-element array header can never be a [time, record] pair.
            # They are rejected in bulk, without an Unpacker or a set entry
            # each, so a chunk of degenerate one-byte entries costs what an
            # honest chunk of its size costs.
            view = entries
            not_pair = [i for i in slow if view[starts[i]] not in _PAIR_HEADS]
            if not_pair:
                bulk = len(not_pair)
                res.rejected += bulk
                res.reject_reasons["entry_not_pair"] = (
                    res.reject_reasons.get("entry_not_pair", 0) + len(not_pair))
                changes = dict.fromkeys(not_pair)
                slow = [i for i in slow if i not in changes] if len(not_pair) < len(slow) else []
                hits = [i for i in hits if i not in changes]
        slowset = set(slow)
        todo = sorted(slowset.union(hits)) if slow else hits
        hitset = set(hits)
        retagged: dict[str, list[bytes]] = {}
        detect_idx: list[int] = []
        detect_pre: list[Any] = []
        detect_items: list[tuple[float, dict[Any, Any]]] = []
        detect_time: list[Any] = []
        detect_changed: list[bool] = []
        fast = self._fast
        enricher = self.enricher
        loop: Sequence[int] = todo
        if not slow and enricher is not None and todo:
            # The usual chunk: every entry to decode is a fast hit (todo is
            # hits). Its reads in one pass; an entry whose record does not
            # decode sends the chunk through the loop below, which rejects
            # it (the reads made are memoised).
            try:
                got_all = [fast.get(i) or self._read_fast(entries, starts, i) for i in todo]
            except _UNDECODABLE:
                pass
            else:
                analysed = self._analysed
                detect_idx = todo
                detect_pre = [analysed.get(i, _NOT_ANALYSED) for i in todo]
                detect_items = [(g[0], g[2]) for g in got_all]
                detect_time = [g[1] for g in got_all]
                detect_changed = [False] * len(todo)
                loop = ()
        for i in loop:
            if i not in slowset:
                # _FAST_ENTRY vouched for its bytes: a pair whose time needs
                # no normalisation (and is no group marker) and whose record
                # is a map, so the checks of the full path would all pass.
                # Only the record is decoded; the time stays bytes.
                got = fast.get(i)
                if got is None:
                    try:
                        got = self._read_fast(entries, starts, i)
                    except _UNDECODABLE:
                        self._reject(res, "entry_undecodable")
                        changes[i] = None
                        continue
                if enricher is not None and i in hitset:
                    detect_idx.append(i)
                    detect_pre.append(self._analysed.get(i, _NOT_ANALYSED))
                    detect_items.append((got[0], got[2]))
                    detect_time.append(got[1])
                    detect_changed.append(False)
                else:
                    res.passed += 1
                continue
            entry = self._unpacked.get(i, _NOT_ANALYSED)
            try:
                if entry is _NOT_ANALYSED:
                    entry = _unpack_one(entries[starts[i]:starts[i + 1]])
            except _UNDECODABLE:
                # Well-framed msgpack Python cannot hold (a map or an array as
                # a map key, a malformed timestamp ext): this record is
                # rejected, the rest of the chunk goes on and is acked.
                # Raising would leave the chunk un-acked, to be resent forever.
                self._reject(res, "entry_undecodable")
                changes[i] = None
                continue
            if not (isinstance(entry, (list, tuple)) and len(entry) == 2):
                self._reject(res, "entry_not_pair")
                changes[i] = None
                continue
            t, record = entry
            if is_group_marker(t):
                res.markers += 1
                changes[i] = None
                continue
            if not isinstance(record, dict):
                self._reject(res, "record_not_map")
                changes[i] = None
                continue
            nt, reason = normalize_time(t)
            if reason is not None:
                self._reject(res, reason)
                changes[i] = None
                continue
            if i in hitset and self.enricher is not None:
                detect_idx.append(i)
                detect_pre.append(self._analysed.get(i, _NOT_ANALYSED))
                detect_items.append((_seconds(nt), record))
                detect_time.append(nt)
                detect_changed.append(nt is not t)
                continue
            res.passed += 1
            if nt is not t:
                changes[i] = pack_entry(nt, record)
        if detect_items:
            decisions = self.enricher.batch(tag, detect_items, pre=detect_pre)  # type: ignore[union-attr]
            for k, i in enumerate(detect_idx):
                d = decisions[k]
                nt = detect_time[k]
                if d is None or d.outcome == "passed":
                    res.passed += 1
                    if detect_changed[k]:
                        changes[i] = pack_entry(nt, detect_items[k][1])
                elif d.outcome == "dropped":
                    res.dropped += 1
                    changes[i] = None
                else:
                    res.tagged += 1
                    # (a fast entry's time: its bytes, as they came)
                    packed = pack_after(nt, d.record) if type(nt) is bytes else pack_entry(nt, d.record)
                    if d.tag != tag:
                        retagged.setdefault(d.tag, []).append(packed)
                        changes[i] = None
                    else:
                        changes[i] = packed
        res.passed += count_entries - len(todo) - bulk

        if error is not None:
            self._reject(res, error)
        kept = count_entries - len(changes) + sum(1 for v in changes.values() if v is not None)
        if kept:
            if not changes:
                res.chunks.append(OutChunk(tag, entries if pos == n else entries[:pos], kept))
            else:
                # Runs of untouched entries are slices of the input
                # (memoryviews: no copy) between the re-encoded records,
                # handed over as parts: the output copies them once, into
                # its frame (``OutChunk``).
                view = memoryview(entries)
                parts: list[Any] = []
                run = 0
                for i in sorted(changes):
                    if starts[i] > starts[run]:
                        parts.append(view[starts[run]:starts[i]])
                    v = changes[i]
                    if v is not None:
                        parts.append(v)
                    run = i + 1
                if starts[count_entries] > starts[run]:
                    parts.append(view[starts[run]:starts[count_entries]])
                if type(entries) is bytes and len(parts) <= _MAX_PARTS:
                    res.chunks.append(OutChunk(tag, None, kept, parts=parts))
                else:
                    # a buffer its owner may reuse, or so many parts that
                    # their views would outweigh the copy: joined now
                    res.chunks.append(OutChunk(tag, b"".join(parts), kept))
        for new_tag, packed_list in retagged.items():
            res.chunks.append(OutChunk(new_tag, b"".join(packed_list), len(packed_list)))
        if self.enricher is not None and count_entries:
            self._keep_tail(entries, starts, count_entries, hitset.union(found) if found else hitset)
        self._account(res)
        return res

    def _keep_tail(self, entries: bytes, starts: Sequence[int], count: int, read: set[int]) -> None:
        """Remembers the chunk's last entries that went by unread (a live
        stream's chunk is often one line), as bytes: only the last
        ``_NEIGHBOURS_BEFORE`` entries are looked at, whatever the chunk's
        size, and one longer than ``_TAIL_BYTES`` keeps only its place.
        Kept as one copy of their bytes with their offsets, split into
        entries only when a hit at the head of a later chunk reads them
        (``_tail_entries``): most chunks' tails are never read."""
        lo = count - _NEIGHBOURS_BEFORE if count > _NEIGHBOURS_BEFORE else 0
        base = starts[lo]
        end = starts[count]
        if end - base <= _NEIGHBOURS_BEFORE * _TAIL_BYTES:
            # (bytes: a slice is a copy; a view of a buffer its owner may
            # reuse is copied all the same)
            self._tail.append((bytes(entries[base:end]), starts[lo:count + 1], lo, read))
            return
        # some entry longer than kept: each kept alone (or its place)
        for j in range(lo, count):
            a, b = starts[j], starts[j + 1]
            if b - a <= _TAIL_BYTES:
                self._tail.append((bytes(entries[a:b]), (a, b), j, read))
            else:
                self._tail.append((b"", (a, a), -1, read))

    def _tail_entries(self) -> list[bytes | None]:
        """The kept tail, an item per entry (None: an entry read already or
        longer than ``_TAIL_BYTES``), the last ``_NEIGHBOURS_BEFORE``."""
        out: list[bytes | None] = []
        for buf, offs, lo, read in self._tail:
            base = offs[0]
            for k in range(len(offs) - 1):
                a, b = offs[k] - base, offs[k + 1] - base
                out.append(buf[a:b] if lo >= 0 and b - a <= _TAIL_BYTES and lo + k not in read else None)
        return out[-_NEIGHBOURS_BEFORE:]

    def _tail_before(self, tag: str, i: int, needle: bytes) -> None:
        """Strong hit ``i`` near the head of its chunk: the entries of earlier
        chunks in its window before it that would be its neighbours (short,
        or holding its sender) are read now. They have left already: the
        enricher keeps them for pass 3 (``Enricher.hold``), which names them
        late, in their scan's summary."""
        tail = self._tail_entries()
        tail = tail[max(0, len(tail) - (_NEIGHBOURS_BEFORE - i)):]
        self._tail.clear()
        raws = [x for x in tail if x is not None and (len(x) <= _NEIGHBOUR_BYTES or (needle and needle in x))]
        if raws:
            self.metrics.inc("neighbours_read_back", len(raws))
            self.enricher.hold(tag, raws, _held_entry)  # type: ignore[union-attr]

    def _with_neighbours(self, tag: str, entries: bytes, starts: Sequence[int], hits: list[int],
                         weak: set[int], count: int, slow: list[int]) -> list[int]:
        have = set(hits)
        extra: list[int] = []
        find = entries.find
        short = _NEIGHBOUR_BYTES
        # The previous chunk ended next to a hit: its neighbours go on here
        # (a live stream often has one line per chunk).
        left, needle0 = self._carry
        for j in range(min(left, count)):
            a, b = starts[j], starts[j + 1]
            if j not in have and (b - a <= short or (needle0 and find(needle0, a, b) >= 0)):
                have.add(j)
                extra.append(j)
        last = -1
        last_needle = b""
        # The C walk's offsets: the window is tested in C, one call per hit.
        near = near_less = None
        if _speedups is not None and isinstance(starts, memoryview):
            near, near_less = _speedups.near, _speedups.near_sender_less
        for i in hits:
            if i in weak:
                continue
            needle = self._hit_sender(entries, starts, i, slow)
            if needle is None:
                continue
            if i < _NEIGHBOURS_BEFORE and self._tail:
                self._tail_before(tag, i, needle)
            if not needle:
                # A hit that names no sender (its HOSTNAME was the payload's
                # first word: ``fox a 1 -1 fox hello``, ``GET / HTTP/1.0``):
                # the lines of its connection and scan around it may hold
                # the sender (``fox.version=s:1.0``) or name none either
                # (xmlsysd's ``on identity version``), whatever their size;
                # but not a daemon's own line (a pid, ``name[pid]: ``), which
                # no payload piece looks like: a request line in an access
                # log must not cost the analysis of every line around it.
                if near_less is not None:
                    window = near_less(entries, starts, i, _NEIGHBOURS_BEFORE, _NEIGHBOURS_AFTER, short)
                else:
                    window = [j for j in range(max(0, i - _NEIGHBOURS_BEFORE), min(count, i + _NEIGHBOURS_AFTER + 1))
                              if starts[j + 1] - starts[j] <= short
                              or not _daemon_entry(entries, starts[j], starts[j + 1])]
            elif near is not None:
                window = near(entries, starts, i, _NEIGHBOURS_BEFORE, _NEIGHBOURS_AFTER, short, needle)
            else:
                window = [j for j in range(max(0, i - _NEIGHBOURS_BEFORE), min(count, i + _NEIGHBOURS_AFTER + 1))
                          if starts[j + 1] - starts[j] <= short
                          or (needle and find(needle, starts[j], starts[j + 1]) >= 0)]
            for j in window:
                if j not in have:
                    have.add(j)
                    extra.append(j)
            last = i
            last_needle = needle or last_needle or needle0
        if last >= 0:
            self._carry = (max(0, last + _NEIGHBOURS_AFTER + 1 - count), last_needle)
        else:
            self._carry = (max(0, left - count), needle0)
        return sorted(hits + extra) if extra else hits

    def _hit_sender(self, entries: bytes, starts: Sequence[int], i: int, slow: list[int]) -> bytes | None:
        """The sender of hit entry ``i`` as bytes (b"": none), or None when
        its neighbours are not worth reading: its line matched nothing, or
        its sender's scan is not going through its scanner's order (the
        sequence pass only places lines of such scans); the reading is
        memoised for the batch."""
        try:
            k = bisect_left(slow, i) if slow else 0  # (slow is sorted)
            if k < len(slow) and slow[k] == i:
                entry = _unpack_one(entries[starts[i]:starts[i + 1]])
                record = entry[1]
                self._unpacked[i] = entry
            else:
                record = self._read_fast(entries, starts, i)[2]
        except (ValueError, TypeError, IndexError, KeyError, msgpack.ExtraData, msgpack.FormatError,
                msgpack.StackError):
            return b""
        if not isinstance(record, dict):
            return b""
        got = self.enricher.analyse(record)  # type: ignore[union-attr]
        self._analysed[i] = got  # the batch reuses it
        if got is None or not got[0].matches:
            return None
        if got[1] and not self.correlator.may_place(got[1]):  # type: ignore[union-attr]
            return None  # a scan that does not go through its scanner's order
        return got[1].encode("utf-8", "surrogateescape") if got[1] else b""

    def _read_fast(self, entries: bytes, starts: Sequence[int], i: int) -> tuple[float, bytes, Any]:
        """(event time in seconds, the entry's head: its array header and
        time packed, the record) of an entry ``_FAST_ENTRY`` vouched for,
        memoised for the chunk. The time is read from its bytes: no
        ``ExtType`` is made for it, and a tagged record is re-encoded after
        the same bytes (``pack_after``)."""
        a = starts[i]
        tb = entries[a + 1]
        if tb == 0xD7:  # EventTime: seconds and nanoseconds, big-endian
            at = a + 11
            head = entries[a:at]
            s, ns = _EVENT_TIME_BODY.unpack_from(head, 3)
            sec = s + ns / 1e9
        elif tb <= 0x7F:
            at = a + 2
            head = entries[a:at]
            sec = float(tb)
        else:  # uint32: packed again as msgpack packs the int (smallest form)
            at = a + 6
            value = int.from_bytes(entries[a + 2:at], "big")
            head = b"\x92" + msgpack.packb(value)
            sec = float(value)
        got = (sec, head, _unpack_one(entries[at:starts[i + 1]]))
        self._fast[i] = got
        return got

    def _context_live(self, entries: bytes, starts: list[int], i: int) -> bool:
        """Is any source's probe context recent at entry ``i``'s time?"""
        if self.correlator is None or self.correlator.last_context == float("-inf"):
            return False
        pos = starts[i]
        if _FAST_ENTRY.match(entries, pos) is not None:
            # The time's bytes, read in place (EventTime or a positive int).
            if entries[pos + 1] == 0xD7:
                sec = int.from_bytes(entries[pos + 3:pos + 7], "big")
                nsec = int.from_bytes(entries[pos + 7:pos + 11], "big")
                return self.correlator.context_live(sec + nsec / 1e9)
            if entries[pos + 1] == 0xCE:
                return self.correlator.context_live(int.from_bytes(entries[pos + 2:pos + 6], "big"))
            return self.correlator.context_live(entries[pos + 1])
        try:
            entry = _unpack_one(entries[starts[i]:starts[i + 1]])
            t, reason = normalize_time(entry[0])
        except (ValueError, TypeError, IndexError, KeyError, msgpack.ExtraData, msgpack.FormatError,
                msgpack.StackError):
            return True  # cannot tell: decode, the full path will judge it
        return reason is not None or self.correlator.context_live(_seconds(t))

    def expire(self, now: float | None = None) -> list[OutChunk]:
        """Summary records for scans idle at ``now`` (event-time seconds;
        None: the highest event time seen so far, right for replays)."""
        if self.correlator is None:
            return []
        if now is None:
            now = self.correlator.high_water
        return self._summaries(self.correlator.expire(now))

    def flush(self) -> list[OutChunk]:
        """Summary records for every scan still open (shutdown)."""
        if self.correlator is None:
            return []
        return self._summaries(self.correlator.flush())

    def _summaries(self, summaries: list[dict[str, Any]]) -> list[OutChunk]:
        out: list[OutChunk] = []
        for summary in summaries:
            self.metrics.inc("scan_summaries")
            made = self.actions.summary(summary) if self.actions is not None else None
            if made is None:
                continue
            stag, record = made
            last = float(summary.get("last_seen") or 0.0)
            sec = int(last)
            t = event_time(sec, min(int(round((last - sec) * 1e9)), 999_999_999)) if last > 0 else event_time_now()
            out.append(OutChunk(stag, pack_entry(t, record), 1))
        return out

    def _reject(self, res: StageResult, reason: str) -> None:
        res.rejected += 1
        res.reject_reasons[reason] = res.reject_reasons.get(reason, 0) + 1

    def _account(self, res: StageResult) -> None:
        m = self.metrics
        m.inc("records_in", res.total)
        if res.passed:
            m.inc("records_passed", res.passed)
        if res.tagged:
            m.inc("records_tagged", res.tagged)
        if res.dropped:
            m.inc("records_dropped", res.dropped)
        for reason, n in res.reject_reasons.items():
            m.inc("records_rejected", n, reason=reason)
            if reason == "entry_undecodable":
                self.undecodable += n
        if res.markers:
            m.inc("group_markers", res.markers)


# The fast path's entry check, as one regex over the entry's first bytes:
# a 2-array (0x92); then a time that needs no normalisation: an EventTime
# (fixext8 0xd7, type 0) whose seconds are not a Fluent Bit group marker
# (0xFFFFFFFE/0xFFFFFFFF with nsec 0 -- excluded with any nsec; those rare
# entries just take the full path) and whose nanoseconds are < 10**9
# (0x3B9AC9FF, spelt out byte by byte), or a positive fixint, or a non-zero
# uint32 (0xce); then a map header (fixmap, map16, map32).
_NSEC = (rb"(?:[\x00-\x3a][\x00-\xff]{3}|\x3b[\x00-\x99][\x00-\xff]{2}"
         rb"|\x3b\x9a[\x00-\xc8][\x00-\xff]|\x3b\x9a\xc9[\x00-\xff])")
_FAST_ENTRY = re.compile(
    rb"\x92(?:\xd7\x00(?!\xff\xff\xff[\xfe\xff])[\x00-\xff]{4}" + _NSEC
    + rb"|[\x01-\x7f]|\xce(?!\x00\x00\x00\x00)[\x00-\xff]{4})[\x80-\x8f\xde\xdf]",
    re.DOTALL)


#: Entries read around an entry a strong literal hit: a probe's other lines
#: (a bare ``HELP`` rsyslog took for a HOSTNAME, an RFC 5424 record whose
#: payload was all TAG, an in_syslog ``ident`` cut at 32 bytes) hold no
#: literal; the detector's sequence pass names them by their place between
#: the lines that do. Only short entries, and entries whose bytes hold the
#: sender of a hit entry that matched, are read: a scan's lines, not the
#: ordinary logs around them. Before: nmap's first four probes leave eight
#: lines ahead of RPCCheck, and with rsyslog's escaping off (raw CRs, which
#: Fluentd's chomp removes from a line's end) none of them holds a literal.
_NEIGHBOURS_BEFORE = 8
_NEIGHBOURS_AFTER = 6
_NEIGHBOUR_BYTES = 112
#: A daemon's TAG in a record's text, ``name[pid]: `` (a file line in
#: ``message``): no probe's piece looks like it. Searched from its ``[`` (a
#: literal start, which the regex engine looks for with memchr) and the name
#: byte before it checked by hand (``_daemon_entry``).
_PID_TAG = re.compile(rb"\[[0-9]{1,10}\]: \S")
_NAME_BYTE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./-")
#: Longest entry kept, as bytes, for a hit at the head of the next chunk
#: (``_keep_tail``): its window before reaches back across the chunk
#: boundary, at most ``_NEIGHBOURS_BEFORE`` entries of this size.
_TAIL_BYTES = 512


from .detect._enrich import NOT_ANALYSED as _NOT_ANALYSED  # noqa: E402


#: Parts of an output chunk (runs of the input and re-encoded records)
#: handed to the output unjoined, at most (a memoryview is ~200 bytes).
_MAX_PARTS = 256

#: Slow entries above which non-pairs are rejected in bulk (see process()).
_BULK_REJECT_MIN = 64
#: First bytes of a msgpack array that may hold 2 elements: fixarray 2,
#: array16, array32 (counts checked by the full path).
_PAIR_HEADS = frozenset((0x92, 0xDC, 0xDD))


def _walk_py(entries: bytes, max_entries: int = -1) -> tuple[list[int], list[int], int, str | None]:
    """The reference walk (see ``walk_entries``): msgpack's own skipper."""
    n = len(entries)
    up = unpacker_for(entries)
    starts: list[int] = []
    slow: list[int] = []  # entries the fast check cannot vouch for
    pos = 0
    error = None
    fast = _FAST_ENTRY.match
    while pos < n:
        try:
            up.skip()
        except msgpack.OutOfData:
            error = "entries_truncated"
            break
        except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError):
            # Garbage inside the entries blob: the rest cannot be framed.
            error = "entries_undecodable"
            break
        if len(starts) == max_entries:
            error = "too_many_entries"
            break
        end = up.tell()
        # Cheap validation without building objects (one C-level regex
        # match, see _FAST_ENTRY). Anything else takes the full path, which
        # rejects, normalises or removes it exactly as before.
        m = fast(entries, pos)
        if m is None:
            slow.append(len(starts))
        else:
            # Only a container or ext header byte after the record's map
            # header can make the entry unholdable: decode just those.
            after = m.end() + _MAP_COUNT_BYTES.get(entries[m.end() - 1], 0)
            if _SUSPECT.search(entries, after, end) and _unholdable(entries[pos:end]):
                slow.append(len(starts))
        starts.append(pos)
        pos = end
    starts.append(pos)  # sentinel: end of the last whole entry
    return starts, slow, pos, error


#: Count bytes after a map16/map32 header.
_MAP_COUNT_BYTES = {0xDE: 2, 0xDF: 4}
#: Header bytes of containers (fixmap, fixarray, array16/32, map16/32) and
#: exts (ext8/16/32, fixext1-16): without one, an entry is holdable.
_SUSPECT = re.compile(rb"[\x80-\x9f\xdc-\xdf\xc7-\xc9\xd4-\xd8]")


def _unholdable(raw: bytes) -> bool:
    """Well-framed msgpack that Python's unpacker refuses (a map or array as
    a map key, a bad Timestamp ext): such an entry takes the full path, which
    rejects it, even when ``_FAST_ENTRY`` matches its first bytes. The C walk
    finds the same entries while it frames them; here it costs a decode."""
    try:
        _unpack_one(raw)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return True
    return False


def _walk_c(entries: bytes, max_entries: int = -1) -> tuple[Sequence[int], list[int], int, str | None]:
    offsets, slow, pos, error = _speedups.walk(entries, max_entries)
    # A memoryview over the C array: indexing and bisect work on it like on
    # a list, without a Python int per entry.
    return memoryview(offsets).cast("Q"), slow, pos, error


def _held_entry(raw: bytes) -> tuple[float, dict[Any, Any]] | None:
    """(event time in seconds, record) of one entry ``Enricher.hold`` kept,
    or None for one the full path would not have analysed."""
    try:
        t, record = _unpack_one(raw)
        nt, reason = normalize_time(t)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None
    if reason is not None or is_group_marker(t) or not isinstance(record, dict):
        return None
    return _seconds(nt), record


# The accelerator is loaded by ``_accel`` (the prefilter uses it too);
# these names stay here for the stage's callers and tests.
SPEEDUPS_API = _accel.SPEEDUPS_API
_speedups = _accel.speedups

#: ``walk_entries(entries) -> (starts, slow, end, error)`` frames a chunk:
#: ``starts`` holds every whole entry's start offset and then ``end`` (a
#: sentinel), ``slow`` the indices of entries failing ``_FAST_ENTRY``,
#: ``end`` is where the last whole entry ends and ``error`` is None,
#: ``"entries_truncated"``, ``"entries_undecodable"`` or, past
#: ``max_entries`` (if >= 0), ``"too_many_entries"``. The C accelerator
#: (``probetag._speedups``) and the pure-Python ``_walk_py`` give the same
#: answer (tests/stage cross-checks them); ``PROBETAG_PURE=1`` forces Python.
walk_entries = _walk_c if _speedups is not None else _walk_py
WALK_BACKEND = _accel.WALK_BACKEND


#: What decoding an entry Python cannot hold raises.
_UNDECODABLE = (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError)


def _daemon_entry(entries: bytes, a: int, b: int) -> bool:
    """Entry ``entries[a:b]`` is a daemon's own line: a ``pid`` field with
    digits (a msgpack str of 1 to 10 digits, or an int), or a TAG
    ``name[pid]: `` in its text."""
    k = entries.find(b"\xa3pid", a, b)
    if 0 <= k < b - 5:
        v = entries[k + 4]
        if v <= 0x7F or 0xCC <= v <= 0xCE or (0xA1 <= v <= 0xAA and 0x30 <= entries[k + 5] <= 0x39):
            return True
    search = _PID_TAG.search
    m = search(entries, a, b)
    while m is not None:
        at = m.start()
        if at > a and entries[at - 1] in _NAME_BYTE:
            return True
        m = search(entries, at + 1, b)
    return False


#: An EventTime's body: seconds and nanoseconds, big-endian uint32s.
_EVENT_TIME_BODY = struct.Struct(">II")


#: One entry or record decoded (a partial: no Python frame per call).
_unpack_one: Callable[[bytes], Any] = functools.partial(
    msgpack.unpackb, raw=False, unicode_errors="surrogateescape", strict_map_key=False)


def _seconds(t: Any) -> float:
    if isinstance(t, msgpack.ExtType):
        return int.from_bytes(t.data[:4], "big") + int.from_bytes(t.data[4:], "big") / 1e9
    return float(t)
