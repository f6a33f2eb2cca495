"""Partition leases: which partitions this worker should claim or release,
how long a lease is good for, and when a claimed partition may be fetched.
No I/O.

Theory of operation
-------------------
* Leases live in a JetStream KV bucket whose ``max_age`` is the lease TTL.
  Key ``p<N>`` holds the owner's worker id. Claiming is ``create`` (fails if
  the key exists), renewing is ``update`` with the last revision
  (compare-and-set: fails if anyone else wrote it, and also if the key aged
  out, since the subject then has no last revision). A dead worker stops
  renewing, its keys age out after the TTL and ``create`` succeeds for the
  next claimer. Workers also put ``w.<id>`` heartbeats in the same bucket,
  which is how each one knows how many workers are alive.
* ``plan`` is the whole claiming policy, pure: given the partitions, the
  current owners, the live workers and ourselves, it returns the partitions
  to claim and to release. Fair share is ``ceil(partitions / live
  workers)``. A worker over its share releases its highest partitions; one
  under its share claims free ones, those it held last first (a lease lost
  to a bucket outage comes back to the worker that has its state), then
  from an offset derived from its id, so that workers starting together
  mostly try different keys (a lost race is just a failed ``create``).
* **How long a lease is ours.** A renewal sent at monotonic time ``t`` and
  acknowledged makes the key's timestamp at least ``t``, so the key cannot
  age out before ``t + TTL``: that is ``PartitionState.valid_until``. A
  renewal that times out proves nothing either way; it is retried with
  back-off and the lease stays ours as long as a later compare-and-set on
  our revision succeeds (nobody wrote the key, and it did not age out in
  between). A bucket leader election therefore costs no lease as long as
  it is shorter than the TTL minus the renewal interval.
* **No fetch near the end.** A pull request can be answered for as long as
  it is open (the fetch timeout), so a fetch is only started while
  ``now + fetch window < valid_until``; this is checked before every
  fetch, not once per upkeep. A batch that arrives after ``valid_until`` is
  not processed and not acked: the next owner gets it again.
* **When a claimed partition may be fetched.** The previous owner may have
  fetched messages it never acked. They must go first (per-source order),
  and the server hands redeliveries out first once their ack timeout is
  over. ``in_flight_wait`` decides from the consumer's own state: nothing
  pending (``num_ack_pending == 0``: a cold start, a clean release, an owner
  that acked all it took) means fetch now; otherwise wait until the last
  delivery's ack timeout is over, and never longer than ``ack_wait`` after
  our claim (the old owner's last delivery came before its lease ran out,
  which came before our claim).
* A partition being released is drained (the batch in hand finished and
  acked), its lease renewed meanwhile, then its key deleted at once; one
  that is still waiting has fetched nothing and is given back at once.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

__all__ = ["Plan", "plan", "lease_key", "worker_key", "PartitionState", "in_flight_wait"]


def lease_key(partition: int) -> str:
    return f"p{partition}"


def worker_key(worker_id: str) -> str:
    return f"w.{worker_id}"


@dataclass(frozen=True, slots=True)
class Plan:
    claim: tuple[int, ...]
    release: tuple[int, ...]


def plan(me: str, partitions: int, owners: dict[int, str], live: frozenset[str] | set[str],
         max_owned: int = 0, prefer: frozenset[int] | set[int] = frozenset()) -> Plan:
    """What ``me`` should claim and release now. ``owners``: partition ->
    worker id for every live lease; ``max_owned`` (0: no cap) bounds our
    share; free partitions in ``prefer`` are claimed first."""
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
    order = [(start + i) % partitions for i in range(partitions)]
    free = [p for p in order if p not in owners and p in prefer]
    free += [p for p in order if p not in owners and p not in prefer]
    return Plan(tuple(free[:want]), ())


@dataclass(slots=True)
class PartitionState:
    """One claimed partition: its lease's revision and validity, and whether
    it is waiting for the previous owner's messages, active or releasing."""

    partition: int
    revision: int
    claimed_at: float
    valid_until: float
    waiting: bool = True
    releasing: bool = False

    def renewed(self, revision: int, sent_at: float, ttl: float) -> None:
        self.revision = revision
        self.valid_until = max(self.valid_until, sent_at + ttl)

    def may_fetch(self, now: float, window: float) -> bool:
        """A fetch open for ``window`` seconds would end inside the lease."""
        return not self.releasing and now + window < self.valid_until

    def expired(self, now: float) -> bool:
        return now >= self.valid_until


def in_flight_wait(num_ack_pending: int | None, last_delivery: float | None, now: float,
                   claimed_at: float, now_mono: float, ack_wait: float,
                   skew: float = 1.0) -> tuple[float, str]:
    """(seconds still to wait, reason) before the first fetch of a claimed
    partition. ``last_delivery``, ``now``: wall clock (the consumer's
    ``delivered.last_active``, our time); ``claimed_at``, ``now_mono``:
    monotonic; ``skew``: allowance for the server's clock against ours."""
    if not num_ack_pending:
        return 0.0, "idle"
    bound = claimed_at + ack_wait - now_mono
    if last_delivery is not None:
        due = last_delivery + ack_wait + skew - now
        if due < bound:
            return max(0.0, due), "redelivery_due"
    return max(0.0, bound), "ack_wait"
