"""Ingress batching: one chunk of packed entries -> per-source batches. No I/O.

Theory of operation
-------------------
* A JetStream message holds records of ONE source, so that the server's
  subject mapping can route it by source (see ``_subjects``). One record per
  message costs a publish and an ack per record (about 6x slower), so a
  message holds up to ``max_records`` records of its source.
* Records are "decoded enough": each entry is unpacked to read its sender
  from the record's source fields (``decode.SOURCE_FIELDS``, or the
  configured ``source_fields``). Only records without such a field pay for
  ``decode.rebuild``, which also finds a sender inside a parsed file line.
  The entry bytes themselves are copied unchanged into the batch.
* Order: a source's records keep their relative order inside and across its
  batches (batches of a chunk are listed in the order their first record
  came). Records of different sources may be reordered; they are
  independent by construction.
* An entry that cannot be framed ends the chunk: the rest is one
  ``undecodable`` batch of token ``_unknown``; the worker's stage rejects and
  counts it exactly as a single instance would. Nothing is dropped here.
* ``MessageIds`` names each batch ``<instance>-<seq>``: a publish retried after
  a lost ack carries the same id and JetStream's duplicate window drops the
  second copy. A chunk resent by the upstream after an ingress crash gets
  new ids (a resend is indistinguishable from two identical log lines);
  those duplicates are at-least-once delivery and are counted downstream.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass
from typing import Any

import msgpack

from ..decode import SOURCE_FIELDS, rebuild
from .._chunk import unpacker_for
from ._subjects import UNKNOWN_SOURCE, source_token

__all__ = ["Batch", "SourceBatcher", "MessageIds"]


@dataclass(frozen=True, slots=True)
class Batch:
    token: str
    tag: str
    entries: bytes
    count: int


class SourceBatcher:
    def __init__(self, max_records: int = 100, source_fields: tuple[str, ...] = ()) -> None:
        if max_records <= 0:
            raise ValueError("max_records must be > 0")
        self.max_records = max_records
        self.source_fields = source_fields or SOURCE_FIELDS

    def source_of(self, record: Any) -> str | None:
        if not isinstance(record, dict):
            return None
        for name in self.source_fields:
            v = record.get(name)
            if isinstance(v, str) and v:
                return v
        rebuilt = rebuild(record, source_fields=self.source_fields)
        return rebuilt.source if rebuilt is not None else None

    def split(self, tag: str, entries: bytes) -> list[Batch]:
        up = unpacker_for(entries)
        # token -> list of entry byte slices; dict keeps first-seen order.
        groups: dict[str, list[bytes]] = {}
        pos = 0
        n = len(entries)
        while pos < n:
            try:
                entry = up.unpack()
            except (msgpack.OutOfData, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
                    ValueError):
                groups.setdefault(UNKNOWN_SOURCE, []).append(entries[pos:])
                break
            end = up.tell()
            record = entry[1] if isinstance(entry, (list, tuple)) and len(entry) == 2 else None
            token = source_token(self.source_of(record))
            groups.setdefault(token, []).append(entries[pos:end])
            pos = end
        out: list[Batch] = []
        for token, parts in groups.items():
            for i in range(0, len(parts), self.max_records):
                piece = parts[i:i + self.max_records]
                out.append(Batch(token, tag, b"".join(piece), len(piece)))
        return out


class MessageIds:
    """``Nats-Msg-Id`` values: unique per ingress process and batch."""

    def __init__(self, instance: str | None = None) -> None:
        self.instance = instance or secrets.token_hex(6)
        self._seq = itertools.count(1)

    def next(self) -> str:
        return f"{self.instance}-{next(self._seq)}"
