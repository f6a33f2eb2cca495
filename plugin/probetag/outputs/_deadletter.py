"""The dead-letter file: records a downstream keeps refusing, set aside.

Theory of operation
-------------------
* A record lands here only when the forward output has found it refused on
  its own (``forward_client``: a batch refused ``dead_letter_after`` times is
  halved until the refused records are alone). Setting it aside lets
  everything queued behind it go on; the upstream ack of its chunk waits
  until the line is written *and fsynced*, so an acked record is always
  either delivered or on disk here.
* One JSON object per line: ``record`` is base64 of the entry's bytes
  exactly as they would have been sent (the msgpack ``[time, record]``
  array), so nothing is lost to a JSON rendering; ``tag``, ``time`` (float
  seconds, null if the entry has no readable time), ``reason`` (the last
  refusal: ``ack_timeout``, ``eof``, ``nack``...), ``peer`` (the upstream
  address, "" if unknown), ``downstream`` and ``at`` (when it was written).
  Replay: base64-decode ``record`` and send it to any forward server as a
  PackedForward entry of ``tag``.
* The file is opened, appended, fsynced and closed for every group of
  lines: rare by design (a refusal costs several ack timeouts), and nothing
  stays open to rotate around.
"""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

import msgpack

from .._chunk import unpacker_for

__all__ = ["split_entries", "dead_letter_line", "append_fsync"]


def split_entries(entries: bytes) -> list[bytes]:
    """The packed entries one by one (the stage only hands over well-formed
    msgpack, so every boundary is found)."""
    up = unpacker_for(entries)
    out: list[bytes] = []
    start = 0
    while True:
        try:
            up.skip()
        except msgpack.OutOfData:
            break
        end = up.tell()
        out.append(entries[start:end])
        start = end
    if start < len(entries):  # pragma: no cover - the stage guarantees whole entries
        out.append(entries[start:])
    return out


def _entry_time(entry: bytes) -> float | None:
    try:
        t = next(iter(unpacker_for(entry)))[0]
    except Exception:  # any bytes: the line is written whatever they hold
        return None
    if isinstance(t, list) and t:  # v1.5 nested time: [time, metadata]
        t = t[0]
    if isinstance(t, msgpack.ExtType) and t.code == 0 and len(t.data) == 8:
        return int.from_bytes(t.data[:4], "big") + int.from_bytes(t.data[4:], "big") / 1e9
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        return float(t)
    return None


def dead_letter_line(entry: bytes, *, tag: str, reason: str, peer: str, downstream: str,
                     now: float | None = None) -> bytes:
    obj: dict[str, Any] = {
        "tag": tag,
        "time": _entry_time(entry),
        "reason": reason,
        "peer": peer,
        "downstream": downstream,
        "at": round(time.time() if now is None else now, 6),
        "record": base64.b64encode(entry).decode("ascii"),
    }
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"


def append_fsync(path: str, data: bytes) -> None:
    """Append ``data`` and fsync; raises OSError (the caller retries)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
