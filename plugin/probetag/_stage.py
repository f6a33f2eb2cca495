"""The processing stage: one chunk of packed entries in, chunks out. No I/O.

Theory of operation
-------------------
* Input is what every input produces: a tag and the *packed entries* of one
  chunk, i.e. concatenated msgpack ``[time, record]`` arrays, exactly as a
  forward PackedForward carries them. Message and Forward mode frames, HTTP
  and NDJSON batches are all turned into this one shape by their inputs.
* Output is a list of ``OutChunk`` (tag, packed entries, count). Entries are
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
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass, field
from typing import Any, Callable

import msgpack

from ._config import Config
from ._metrics import Metrics

__all__ = ["OutChunk", "StageResult", "Processor", "unpacker_for", "pack_entry", "event_time_now"]

EXT_EVENT_TIME = 0
GROUP_MARKERS = (0xFFFFFFFF, 0xFFFFFFFE)


@dataclass(slots=True)
class OutChunk:
    tag: str
    entries: bytes
    count: int


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


def unpacker_for(data: bytes | None = None, max_size: int = 0) -> msgpack.Unpacker:
    """The one way records are decoded: str stays str (bytes that are not
    UTF-8 survive as surrogates and re-encode byte for byte), bin stays bytes,
    non-str map keys are kept (Fluent peers may send them)."""
    up = msgpack.Unpacker(
        raw=False,
        unicode_errors="surrogateescape",
        strict_map_key=False,
        max_buffer_size=max_size or max(len(data or b"") + 1, 1024 * 1024),
    )
    if data:
        up.feed(data)
    return up


_packer = msgpack.Packer(unicode_errors="surrogateescape", use_bin_type=True)


def pack_entry(t: Any, record: Any) -> bytes:
    return _packer.pack([t, record])


def event_time(seconds: int, nanoseconds: int = 0) -> msgpack.ExtType:
    return msgpack.ExtType(EXT_EVENT_TIME, seconds.to_bytes(4, "big") + nanoseconds.to_bytes(4, "big"))


def event_time_now() -> msgpack.ExtType:
    ns = _time.time_ns()
    return event_time(ns // 1_000_000_000, ns % 1_000_000_000)


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
    """Runs one chunk through validation, detection and actions."""

    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics

    def process(self, tag: str, entries: bytes) -> StageResult:
        res = StageResult()
        up = unpacker_for(entries)
        parts: list[bytes] = []
        count = 0
        start = 0
        try:
            for entry in up:
                end = up.tell()
                raw = entries[start:end]
                start = end
                if not (isinstance(entry, (list, tuple)) and len(entry) == 2):
                    self._reject(res, "entry_not_pair")
                    continue
                t, record = entry
                if is_group_marker(t):
                    res.markers += 1
                    continue
                if not isinstance(record, dict):
                    self._reject(res, "record_not_map")
                    continue
                nt, reason = normalize_time(t)
                if reason is not None:
                    self._reject(res, reason)
                    continue
                if nt is t:
                    parts.append(raw)
                else:
                    parts.append(pack_entry(nt, record))
                count += 1
                res.passed += 1
        except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as exc:
            # Garbage inside the entries blob: the rest cannot be framed.
            self._reject(res, "entries_undecodable")
            _ = exc
        if start < len(entries) and not res.reject_reasons.get("entries_undecodable"):
            self._reject(res, "entries_truncated")
        if count:
            res.chunks.append(OutChunk(tag, b"".join(parts), count))
        self._account(res)
        return res

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
        if res.markers:
            m.inc("group_markers", res.markers)
