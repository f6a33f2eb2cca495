"""Partition leases: which partitions this worker should claim or release. No I/O.

Theory of operation
-------------------
* Leases live in a JetStream KV bucket whose ``max_age`` is the lease TTL.
  Key ``p<N>`` holds the owner's worker id. Claiming is ``create`` (fails if
  the key exists), renewing is ``update`` with the last revision
  (compare-and-set: fails if anyone else wrote it). A dead worker stops
  renewing, its keys age out after the TTL and ``create`` succeeds for the
  next claimer. Workers also put ``w.<id>`` heartbeats in the same bucket,
  which is how each one knows how many workers are alive.
* ``plan`` is the whole policy, pure: given the partitions, the current
  owners, the live workers and ourselves, it returns the partitions to claim
  and to release. Fair share is ``ceil(partitions / live workers)``. A worker
  over its share releases its highest partitions (after draining them); one
  under its share claims free ones, starting at an offset derived from its
  id so that workers starting together mostly try different keys (a lost
  race is just a failed ``create``).
* A partition we claim may have been another worker's, with messages it
  fetched but never acked. ``PartitionState`` keeps it *waiting* for the
  consumer's ack timeout before the first fetch: by then those messages are
  due for redelivery and the server hands redeliveries out first, so a
  source's records are still processed in order.
* A failed renewal means the lease is gone (expired or taken): the worker
  stops fetching from that partition at once and never acks what it holds.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

__all__ = ["Plan", "plan", "lease_key", "worker_key", "PartitionState"]


def lease_key(partition: int) -> str:
    return f"p{partition}"


def worker_key(worker_id: str) -> str:
    return f"w.{worker_id}"


@dataclass(frozen=True, slots=True)
class Plan:
    claim: tuple[int, ...]
    release: tuple[int, ...]


def plan(me: str, partitions: int, owners: dict[int, str], live: frozenset[str] | set[str],
         max_owned: int = 0) -> Plan:
    """What ``me`` should claim and release now. ``owners``: partition ->
    worker id for every live lease; ``max_owned`` (0: no cap) bounds our share."""
    workers = set(live) | {me}
    share = math.ceil(partitions / len(workers))
    if max_owned:
        share = min(share, max_owned)
    mine = sorted(p for p, w in owners.items() if w == me)
    if len(mine) > share:
        return Plan((), tuple(mine[share:]))
    want = share - len(mine)
    if want <= 0:
        return Plan((), ())
    start = zlib.crc32(me.encode()) % partitions
    free = [p for p in ((start + i) % partitions for i in range(partitions)) if p not in owners]
    return Plan(tuple(free[:want]), ())


@dataclass(slots=True)
class PartitionState:
    """One claimed partition: waiting out the ack timeout, then active."""

    partition: int
    revision: int
    ready_at: float
    releasing: bool = False

    def ready(self, now: float) -> bool:
        return now >= self.ready_at
