"""The cluster's NATS I/O: thin asyncio around the sans-I/O parts.

Theory of operation
-------------------
* ``JetStreamOutput`` is an ordinary probetag output (``start``/``send``/
  ``close``), so the existing forward and HTTP inputs, flow control and
  end-to-end acks work unchanged in the ingress: ``send(chunk)`` splits the
  chunk into per-source batches (``SourceBatcher``), publishes each to
  ``logs.in.<token>`` with a ``Nats-Msg-Id`` and returns only when JetStream
  has acked every batch; then the runtime acks the upstream. A failed or
  timed-out publish is retried with the same id (back-off, never given up)
  so a lost ack does not make a duplicate.
* ``Worker`` owns partitions through leases (``_lease``: renewed every
  ``lease_renew`` with retries, each partition fetched only while its lease
  is surely valid, and first only once what a previous owner left un-acked
  is out of the way), consumes each with a durable pull consumer, runs the
  ``Processor`` (detection and correlation state live in this process),
  publishes results to ``logs.out.<tag>`` with the id ``<input stream
  seq>-<k>`` (a redelivered input makes the same ids, which the output
  stream's duplicate window drops) and acks the input only after every
  output publish is acked.
* The per-message path is lean because it runs for every 25-100 records:
  a packed input message nobody changed is published as the same bytes
  (``out_format: packed``); a fetched batch's results are written in one go
  and their acks awaited together on one inbox (``_Publisher.publish_all``);
  a partition is fetched through one inbox of ours (``_Pull``), a batch
  awaited once.
* ``Egress`` reads ``logs.out.>`` with one shared durable pull consumer and
  forwards each message with probetag's forward output (acked by Fluentd or
  Vector) before acking it.
* Transient errors (a node restarting, leader elections) surface as
  timeouts: they are retried and counted, never turned into data loss.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import time
from typing import Any, Callable

import nats
from nats.errors import ConnectionClosedError, NoRespondersError, TimeoutError as NatsTimeout
from nats.js.api import (AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig, RetentionPolicy,
                         StorageType, StreamConfig)
from nats.js.errors import (APIError, KeyNotFoundError, KeyWrongLastSequenceError, NoStreamResponseError,
                            NotFoundError)

from .._config import Config
from .._metrics import Metrics
from .._logging import log_event, route_library_logs
from .._chunk import OutChunk
from .._stage import Processor, walk_entries
from ..outputs import OutputClosed
from ._batch import MessageIds, SourceBatcher
from ._config import ClusterConfig
from ._lease import PartitionState, in_flight_wait, lease_key, plan, worker_key
from ._messages import (COUNT_HEADER, MSG_ID_HEADER, TAG_HEADER, WORKER_HEADER, BadMessage,
                        decode_input, decode_output, output_message)
from ._subjects import in_subject, out_subject, part_filter

__all__ = ["connect", "ensure_streams", "JetStreamOutput", "Worker", "Egress"]

_TRANSIENT = (NatsTimeout, asyncio.TimeoutError, NoRespondersError, NoStreamResponseError, APIError,
              ConnectionClosedError)


async def connect(cfg: ClusterConfig, name: str) -> Any:
    # Reconnect forever: a node going away is normal; the client moves to
    # another server of the cluster and pending requests time out (retried).
    # The client's own error reports become logfmt lines (its default prints
    # a traceback for every dropped connection).
    async def on_error(exc: Exception) -> None:
        log_event(logging.WARNING, "nats_error", client=name, error=type(exc).__name__, detail=str(exc)[:200])

    async def on_disconnected() -> None:
        log_event(logging.INFO, "nats_disconnected", client=name)

    async def on_reconnected() -> None:
        url = getattr(nc, "connected_url", None)
        log_event(logging.INFO, "nats_reconnected", client=name, server=getattr(url, "netloc", "?"))

    route_library_logs("nats")
    nc = await nats.connect(servers=list(cfg.servers), name=name, max_reconnect_attempts=-1,
                            reconnect_time_wait=0.2, connect_timeout=2, error_cb=on_error,
                            disconnected_cb=on_disconnected, reconnected_cb=on_reconnected)
    return nc


async def ensure_streams(js: Any, cfg: ClusterConfig, timeout: float = 30.0) -> None:
    """Create the input and output streams and the lease bucket when missing.
    Never deletes or recreates (see _config). Retries while the cluster forms."""
    deadline = time.monotonic() + timeout
    specs = [(cfg.stream, f"{cfg.part_prefix}.>"), (cfg.out_stream, f"{cfg.out_prefix}.>")]
    while True:
        try:
            for name, subject in specs:
                try:
                    await js.stream_info(name)
                except NotFoundError:
                    if not cfg.create_streams:
                        raise RuntimeError(f"stream {name} does not exist") from None
                    await js.add_stream(StreamConfig(
                        name=name, subjects=[subject], retention=RetentionPolicy.LIMITS,
                        storage=StorageType.FILE, num_replicas=cfg.replicas, max_age=cfg.max_age or None,
                        max_bytes=cfg.max_bytes, duplicate_window=cfg.duplicate_window))
            try:
                await js.key_value(cfg.lease_bucket)
            except (NotFoundError, Exception) as exc:  # nats-py raises BucketNotFoundError
                if type(exc).__name__ not in ("BucketNotFoundError", "NotFoundError"):
                    raise
                await js.create_key_value(KeyValueConfig(
                    bucket=cfg.lease_bucket, ttl=cfg.lease_ttl, history=1, replicas=cfg.replicas))
            return
        except _TRANSIENT:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


class _Publisher:
    """Publish with ack, retrying the same message id until it is acked."""

    def __init__(self, nc: Any, js: Any, cfg: ClusterConfig, metrics: Metrics) -> None:
        self.nc = nc
        self.js = js
        self.cfg = cfg
        self.metrics = metrics
        self.closed = False
        self._inbox: str | None = None
        self._acks: dict[str, asyncio.Future[bytes]] = {}
        self._seq = 0

    async def publish(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        delay = self.cfg.retry_initial
        while True:
            if self.closed:
                raise OutputClosed("cluster publisher closed")
            try:
                ack = await self.js.publish(subject, data, timeout=self.cfg.publish_timeout, headers=headers)
            except _TRANSIENT as exc:
                self.metrics.inc("cluster_publish_retries", reason=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cfg.retry_max)
                continue
            if ack.duplicate:
                self.metrics.inc("cluster_publish_duplicates")
            return

    async def publish_all(self, items: list[tuple[str, bytes, dict[str, str]]]) -> None:
        """Publish many at once, pipelined: every message is written (one
        socket write for the lot) before any ack is awaited, and the acks
        come back on one inbox of ours and are awaited together: no round
        trip, timer or task per message. What is not acked in time, or is
        refused, is retried one by one with ``publish`` (same message id)."""
        if not items:
            return
        if self.closed:
            raise OutputClosed("cluster publisher closed")
        nc = self.nc
        if self._inbox is None:
            self._inbox = nc.new_inbox() + "."
            await nc.subscribe(self._inbox + "*", cb=self._on_ack)
        loop = asyncio.get_running_loop()
        waiting: list[tuple[str, asyncio.Future[bytes], tuple[str, bytes, dict[str, str]]]] = []
        retry: list[tuple[str, bytes, dict[str, str]]] = []
        try:
            for item in items:
                self._seq += 1
                token = str(self._seq)
                fut = self._acks[token] = loop.create_future()
                waiting.append((token, fut, item))
                await nc.publish(item[0], item[1], reply=self._inbox + token, headers=item[2])
        except _TRANSIENT as exc:
            self.metrics.inc("cluster_publish_retries", reason=type(exc).__name__)
            token, fut, _ = waiting.pop()  # never written
            self._acks.pop(token, None)
            fut.cancel()
            retry = list(items[len(waiting):])
        if waiting:
            await asyncio.wait([f for _, f, _ in waiting], timeout=self.cfg.publish_timeout)
        duplicates = 0
        for token, fut, item in waiting:
            ack = fut.result() if fut.done() else None
            if not fut.done():
                fut.cancel()
                self._acks.pop(token, None)
            # A JetStream publish ack is {"stream":..,"seq":..[,"duplicate":true]};
            # anything else (an error, no responders, no answer) is retried.
            if ack is None or not ack.startswith(b'{"stream"'):
                retry.append(item)
            elif b'"duplicate":true' in ack:
                duplicates += 1
        if duplicates:
            self.metrics.inc("cluster_publish_duplicates", duplicates)
        if retry:
            self.metrics.inc("cluster_publish_retries", len(retry), reason="pipelined")
            await asyncio.gather(*(self.publish(*item) for item in retry))

    async def _on_ack(self, msg: Any) -> None:
        fut = self._acks.pop(msg.subject[len(self._inbox or ""):], None)
        if fut is not None and not fut.done():
            fut.set_result(msg.data if not msg.headers else b"")  # a status header: no stream answered


class _Pull:
    """One durable pull consumer, fetched through one inbox subscription of
    ours: a callback collects the messages and the caller awaits a batch
    once (nats-py's ``fetch`` awaits every message with a timer of its own).

    Rules kept:
    * A request first asks for what is there (``no_wait``: the server sends
      what it has, then a status that ends the request); only when nothing
      was there does it linger, for one message and at most the fetch
      timeout (``expires``), so the server stops answering a request once
      its caller stopped waiting (the lease fencing relies on that).
    * A message that arrives when no fetch waits (a late answer) is kept
      and handed over by the next fetch: it is delivered and un-acked, and
      is judged against the lease like any other.
    * Status messages (404 no messages, 408 request expired, 409) end a
      request; they are not messages. Heartbeats (100) are ignored.
    """

    def __init__(self, nc: Any, subject: str) -> None:
        self.nc = nc
        self.subject = subject
        self.inbox = nc.new_inbox()
        self.sub: Any = None
        self._buf: list[Any] = []
        self._want = 0
        self._waiter: asyncio.Future[None] | None = None

    @classmethod
    async def bind(cls, nc: Any, js: Any, stream: str, config: ConsumerConfig) -> "_Pull":
        """Create the durable consumer when missing (never changed if it
        exists), then subscribe our inbox."""
        try:
            await js.consumer_info(stream, config.durable_name)
        except NotFoundError:
            await js.add_consumer(stream, config)
        pull = cls(nc, f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{config.durable_name}")
        pull.sub = await nc.subscribe(pull.inbox, cb=pull._on_msg)
        return pull

    async def _on_msg(self, msg: Any) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status == "100":
            return
        if status is None:
            self._buf.append(msg)
        waiter = self._waiter
        if waiter is not None and not waiter.done() and (status is not None or len(self._buf) >= self._want):
            waiter.set_result(None)

    async def _request(self, batch: int, want: int, timeout: float, expires: float = 0.0) -> None:
        req: dict[str, Any] = {"batch": batch}
        if expires:
            req["expires"] = int(expires * 1e9)
        else:
            req["no_wait"] = True
        self._want = want
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self.nc.publish(self.subject, json.dumps(req).encode(), reply=self.inbox)
            await asyncio.wait_for(self._waiter, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self._waiter = None

    async def fetch(self, batch: int, timeout: float, may_linger: Callable[[], bool] = lambda: True) -> list[Any]:
        """Up to ``batch`` messages; ``may_linger()`` is asked right before
        a lingering request goes out (the lease check)."""
        if not self._buf:
            await self._request(batch, batch, timeout)
        if not self._buf and may_linger():
            await self._request(1, 1, timeout + 0.25, expires=timeout)
            if self._buf and len(self._buf) < batch:
                await self._request(batch - len(self._buf), batch, timeout)
        out, self._buf = self._buf[:batch], self._buf[batch:]
        return out

    async def unsubscribe(self) -> None:
        if self.sub is not None:
            await self.sub.unsubscribe()

    def take_buffered(self) -> list[Any]:
        """Messages received and not yet handed over (after ``unsubscribe``)."""
        out, self._buf = self._buf, []
        return out


class JetStreamOutput:
    """The ingress: an output that publishes per-source batches to JetStream."""

    def __init__(self, cluster: ClusterConfig, config: Config, metrics: Metrics) -> None:
        self.cluster = cluster
        self.metrics = metrics
        self.batcher = SourceBatcher(cluster.batch_records, config.detect.source_fields)
        self.ids = MessageIds()
        self.nc: Any = None
        self.pub: _Publisher | None = None

    async def start(self) -> None:
        self.nc = await connect(self.cluster, f"probetag-ingress-{self.ids.instance}")
        js = self.nc.jetstream(timeout=self.cluster.publish_timeout)
        await ensure_streams(js, self.cluster)
        self.pub = _Publisher(self.nc, js, self.cluster, self.metrics)

    async def send(self, chunk: OutChunk) -> None:
        if self.pub is None:
            raise OutputClosed("not started")
        batches = self.batcher.split(chunk.tag, chunk.entries)
        await self.pub.publish_all([
            (in_subject(self.cluster.in_prefix, b.token), b.entries,
             {MSG_ID_HEADER: self.ids.next(), TAG_HEADER: b.tag, COUNT_HEADER: str(b.count)})
            for b in batches])
        self.metrics.inc("cluster_batches_published", len(batches))
        self.metrics.inc("cluster_records_published", chunk.count)

    async def close(self) -> None:
        if self.pub is not None:
            self.pub.closed = True
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Worker:
    """Claims partitions, runs detection on them, publishes the results."""

    def __init__(self, cluster: ClusterConfig, config: Config, metrics: Metrics,
                 processor: Processor | None = None) -> None:
        self.cluster = cluster
        self.config = config
        self.metrics = metrics
        self.processor = processor if processor is not None else Processor(config, metrics)
        self.id = cluster.worker_id or default_worker_id()
        self.nc: Any = None
        self.js: Any = None
        self.kv: Any = None
        self.pub: _Publisher | None = None
        self.owned: dict[int, PartitionState] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._wake: dict[int, asyncio.Event] = {}
        self._renewing: dict[int, asyncio.Task[None]] = {}
        self._held: set[int] = set()  # partitions held before: claimed first when free
        self._stop = asyncio.Event()
        self._summary_seq = 0
        self._renewer_task: asyncio.Task[None] | None = None
        # A pull request may be answered until it closes: start none that
        # could end later than this before the lease's end (network, clocks).
        self._fetch_window = cluster.fetch_timeout + min(1.0, cluster.lease_ttl / 8)

    async def start(self) -> None:
        self.nc = await connect(self.cluster, f"probetag-worker-{self.id}")
        self.js = self.nc.jetstream(timeout=self.cluster.publish_timeout)
        await ensure_streams(self.js, self.cluster)
        # Lease requests get short timeouts: a renewal that hangs for the
        # whole publish timeout would eat the lease it tries to keep.
        lease_js = self.nc.jetstream(timeout=min(self.cluster.lease_renew, self.cluster.publish_timeout))
        self.kv = await lease_js.key_value(self.cluster.lease_bucket)
        self.pub = _Publisher(self.nc, self.js, self.cluster, self.metrics)
        log_event(logging.INFO, "worker_started", worker=self.id, partitions=self.cluster.partitions,
                  lease_ttl=self.cluster.lease_ttl, ack_wait=self.cluster.ack_wait)

    async def run(self) -> None:
        """Lease upkeep every ``lease_renew`` until ``stop()``; partitions run as tasks."""
        tick = self.cluster.lease_renew
        last_expire = time.monotonic()
        # Renewals keep their own pace: an upkeep or a summary publish held
        # up by an election must not delay them.
        # They go on while ``close`` drains, which cancels them.
        self._renewer_task = asyncio.get_running_loop().create_task(self._renewer())
        summaries: asyncio.Task[None] | None = None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                await self._upkeep()
            except _TRANSIENT as exc:
                self.metrics.inc("cluster_lease_errors", reason=type(exc).__name__)
            except Exception:  # our bug: keep the leases' upkeep alive, and say so
                self.metrics.inc("internal_errors", where="cluster_upkeep")
                logging.getLogger("probetag").exception("event=upkeep_failed worker=%s", self.id)
            if time.monotonic() - last_expire >= 1.0 and (summaries is None or summaries.done()):
                last_expire = time.monotonic()
                summaries = asyncio.get_running_loop().create_task(
                    self._publish_summaries(self.processor.expire(time.time())))
            try:
                await asyncio.wait_for(self._stop.wait(), max(0.05, tick - (time.monotonic() - started)))
            except asyncio.TimeoutError:
                pass
        if summaries is not None:
            await asyncio.wait([summaries], timeout=self.cluster.publish_timeout)

    async def _renewer(self) -> None:
        while True:
            self._renew_all()
            await asyncio.sleep(self.cluster.lease_renew)

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        """Stop consuming, release our leases (others need not wait for the TTL)."""
        self._stop.set()
        for p in list(self.owned):
            self._release(p, "shutdown")
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=self.cluster.publish_timeout * 2)
        if self._renewer_task is not None:
            self._renewer_task.cancel()
        for task in self._renewing.values():
            task.cancel()
        try:
            await self.kv.delete(worker_key(self.id))
        except Exception:  # best effort: the TTL frees it anyway
            pass
        if self.pub is not None:
            self.pub.closed = True
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()

    # -- leases --------------------------------------------------------------

    async def _snapshot(self) -> tuple[dict[int, str], set[str]]:
        owners: dict[int, str] = {}
        live: set[str] = set()
        w = await self.kv.watchall(ignore_deletes=True)
        try:
            for _ in range(self.cluster.partitions + 10_000):
                e = await w.updates(timeout=self.cluster.publish_timeout)
                if e is None:
                    break
                if e.key.startswith("p") and e.key[1:].isdigit() and e.value:
                    owners[int(e.key[1:])] = e.value.decode()
                elif e.key.startswith("w."):
                    live.add(e.key[2:])
        finally:
            await w.stop()
        return owners, live

    def _renew_all(self) -> None:
        """One renewal per owned lease, each its own task (retried with back-off)."""
        for p, st in self.owned.items():
            task = self._renewing.get(p)
            if task is None or task.done():
                self._renewing[p] = asyncio.get_running_loop().create_task(self._renew(st))

    async def _renew(self, st: PartitionState) -> None:
        p = st.partition
        key = lease_key(p)
        first_sent = time.monotonic()
        delay = 0.1
        while self.owned.get(p) is st:
            sent = time.monotonic()
            try:
                rev = await self.kv.update(key, self.id.encode(), last=st.revision)
            except KeyWrongLastSequenceError:
                await self._check_lease(st, first_sent)
                return
            except _TRANSIENT as exc:
                # A leader election or a node going away: the lease is not
                # lost until a compare-and-set says so. Keep trying.
                self.metrics.inc("cluster_lease_renew_retries", reason=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cluster.lease_renew)
                continue
            st.renewed(rev, sent, self.cluster.lease_ttl)
            return

    async def _check_lease(self, st: PartitionState, first_sent: float) -> None:
        """A renewal's compare-and-set failed. An earlier attempt that timed
        out may have been applied after all (the revision moved on, the
        value is still ours): then the lease is still ours."""
        p = st.partition
        delay = 0.1
        while self.owned.get(p) is st:
            try:
                entry = await self.kv.get(lease_key(p))
            except KeyNotFoundError:
                self._lose(p, "expired")
                return
            except _TRANSIENT:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cluster.lease_renew)
                continue
            if entry.value == self.id.encode():
                # The applied attempt was sent no earlier than the first.
                st.renewed(entry.revision, first_sent, self.cluster.lease_ttl)
                self.metrics.inc("cluster_lease_renew_recovered")
                return
            # Another worker's value. If our validity had run out by now (a
            # renewal retried through an election longer than the TTL), the
            # key aged out and was claimed afresh: it expired, it was not
            # taken from a lease we still held.
            self._lose(p, "expired" if st.expired(time.monotonic()) else "taken")
            return

    async def _upkeep(self) -> None:
        await self.kv.put(worker_key(self.id), b"1")
        owners, live = await self._snapshot()
        for p in list(self.owned):
            if owners.get(p) not in (None, self.id):
                self._lose(p, "owner_changed")
        # Partitions we are releasing still count as ours until deleted.
        decision = plan(self.id, self.cluster.partitions, owners, live, self.cluster.max_partitions,
                        prefer=self._held)
        for p in decision.release:
            self._release(p, "rebalance")
        for p in decision.claim:
            if p in self.owned:
                continue  # still being released, or its key aged out: the renewal decides
            sent = time.monotonic()
            try:
                rev = await self.kv.create(lease_key(p), self.id.encode())
            except KeyWrongLastSequenceError:
                continue  # another worker won the race
            self.metrics.inc("cluster_leases_claimed")
            log_event(logging.INFO, "lease_claimed", worker=self.id, partition=p, revision=rev)
            st = self.owned[p] = PartitionState(p, rev, claimed_at=sent,
                                                valid_until=sent + self.cluster.lease_ttl)
            self._held.add(p)
            self._wake[p] = asyncio.Event()
            self._tasks[p] = asyncio.get_running_loop().create_task(self._consume(st))
        self.metrics.set("cluster_partitions_owned", len(self.owned))

    def _release(self, p: int, reason: str) -> None:
        st = self.owned.get(p)
        if st is None or st.releasing:
            return
        st.releasing = True
        self._held.discard(p)
        self.metrics.inc("cluster_leases_released")
        log_event(logging.INFO, "lease_release", worker=self.id, partition=p, reason=reason,
                  waiting=st.waiting)
        wake = self._wake.get(p)
        if wake is not None:
            wake.set()  # a partition still waiting gives its key back now

    def _lose(self, p: int, reason: str) -> None:
        st = self.owned.pop(p, None)
        if st is None:
            return
        self._renewing.pop(p, None)
        self.metrics.inc("cluster_leases_lost", reason=reason)
        log_event(logging.WARNING, "lease_lost", worker=self.id, partition=p, reason=reason,
                  revision=st.revision)
        st.releasing = True
        self._wake.pop(p, None)
        task = self._tasks.pop(p, None)
        if task is not None:
            task.cancel()  # un-acked messages are redelivered to the next owner

    # -- consuming -------------------------------------------------------------

    async def _wait_in_flight(self, st: PartitionState) -> tuple[float, str, int]:
        """Until the previous owner's un-acked messages are no longer in the
        way (see ``_lease.in_flight_wait``). -> (waited, reason, pending)."""
        p = st.partition
        wake = self._wake[p]
        durable = f"{self.cluster.consumer_prefix}-{p}"
        while not st.releasing:
            pending: int | None = None
            last: float | None = None
            try:
                info = await self.js.consumer_info(self.cluster.stream, durable,
                                                   timeout=self.cluster.fetch_timeout)
                pending = info.num_ack_pending or 0
                if info.delivered is not None and info.delivered.last_active is not None:
                    last = info.delivered.last_active.timestamp()
            except NotFoundError:
                pending = 0  # never consumed: nothing in flight
            except _TRANSIENT:
                pending = None
            wait, reason = in_flight_wait(1 if pending is None else pending, None if pending is None else last,
                                          time.time(), st.claimed_at, time.monotonic(), self.cluster.ack_wait)
            if wait <= 0:
                return time.monotonic() - st.claimed_at, reason, pending or 0
            try:
                await asyncio.wait_for(wake.wait(), min(wait, 0.5))
            except asyncio.TimeoutError:
                pass
        return time.monotonic() - st.claimed_at, "released", 0

    async def _consume(self, st: PartitionState) -> None:
        p = st.partition
        first_delivery = last_delivery = 0.0
        sub = None
        try:
            waited, reason, pending = await self._wait_in_flight(st)
            st.waiting = False
            if not st.releasing:
                log_event(logging.INFO, "partition_ready", worker=self.id, partition=p, reason=reason,
                          waited=f"{waited:.2f}", pending=pending, fetch_from=f"{time.time():.3f}")
            while sub is None and not st.releasing:
                try:
                    sub = await _Pull.bind(self.nc, self.js, self.cluster.stream, ConsumerConfig(
                        durable_name=f"{self.cluster.consumer_prefix}-{p}",
                        filter_subject=part_filter(self.cluster.part_prefix, p),
                        ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                        ack_wait=self.cluster.ack_wait, max_ack_pending=self.cluster.max_ack_pending,
                        max_deliver=-1))
                except _TRANSIENT:
                    self.metrics.inc("cluster_subscribe_retries")
                    await asyncio.sleep(0.5)
            while not st.releasing and sub is not None:
                # The staleness check, before every fetch.
                if not st.may_fetch(time.monotonic(), self._fetch_window):
                    self.metrics.inc("cluster_fetch_paused")
                    await asyncio.sleep(0.1)
                    continue
                try:
                    msgs = await sub.fetch(self.cluster.fetch_batch, self.cluster.fetch_timeout,
                                           lambda: st.may_fetch(time.monotonic(), self._fetch_window))
                except _TRANSIENT:
                    continue
                if not msgs:
                    continue
                if st.expired(time.monotonic()):
                    # Answered after the lease may have run out: someone else
                    # may own these now. Not processed, not acked.
                    self.metrics.inc("cluster_batches_dropped", reason="lease_expired")
                    log_event(logging.WARNING, "batch_dropped", worker=self.id, partition=p,
                              reason="lease_expired", messages=len(msgs))
                    continue
                last_delivery = time.time()
                first_delivery = first_delivery or last_delivery
                await self._handle(msgs)
        except asyncio.CancelledError:
            raise
        except Exception:  # our bug: say so, and give the partition to someone else
            self.metrics.inc("internal_errors", where="cluster_consume")
            logging.getLogger("probetag").exception("event=consume_failed partition=%d", p)
            st.releasing = True
        finally:
            log_event(logging.INFO, "partition_done", worker=self.id, partition=p,
                      first_delivery=f"{first_delivery:.3f}", last_delivery=f"{last_delivery:.3f}")
            if sub is not None:
                try:
                    await sub.unsubscribe()
                    if st.releasing and self.owned.get(p) is st and not st.expired(time.monotonic()):
                        # Late answers we hold and never handled: due again at
                        # once, so the next owner need not wait for them.
                        for m in sub.take_buffered():
                            await m.nak()
                except Exception:
                    pass
            if st.releasing and self.owned.get(p) is st:
                await self._give_back(st)

    async def _give_back(self, st: PartitionState) -> None:
        """Delete a drained (or never fetched) partition's key: the next owner
        claims it at its next upkeep, not after the TTL."""
        p = st.partition
        self.owned.pop(p, None)  # no new renewal starts
        self._tasks.pop(p, None)
        self._wake.pop(p, None)
        renewing = self._renewing.pop(p, None)
        if renewing is not None and not renewing.done():
            # Let a renewal in flight settle: it may move the revision.
            await asyncio.wait([renewing], timeout=self.cluster.lease_ttl)
        delay = 0.1
        while not st.expired(time.monotonic()):
            try:
                await self.kv.delete(lease_key(p), last=st.revision)
            except KeyWrongLastSequenceError:
                return  # aged out or taken meanwhile: not ours to delete
            except _TRANSIENT:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cluster.lease_renew)
                continue
            log_event(logging.INFO, "lease_released", worker=self.id, partition=p, revision=st.revision)
            return

    async def _handle(self, msgs: list[Any]) -> None:
        """Process a fetched batch, publish every result (acked), then ack
        the inputs. Per message, not per record: a packed message whose
        records nobody changed is published as the bytes it came in."""
        assert self.pub is not None
        jobs = []
        acks = []
        redelivered = records = 0
        fmt = self.cluster.out_format
        prefix = self.cluster.out_prefix
        subjects: dict[str, str] = {}
        for m in msgs:
            md = m.metadata
            if md.num_delivered > 1:
                redelivered += 1
            try:
                parts = decode_input(m.headers, m.data, self.cluster.json_default_tag)
            except BadMessage as exc:
                self.metrics.inc("cluster_bad_messages")
                log_event(logging.WARNING, "bad_message", subject=m.subject, reason=str(exc)[:200])
                await m.term()
                continue
            k = 0
            seq = md.sequence.stream
            for tag, entries, _count in parts:
                for chunk in self.processor.process(tag, entries).chunks:
                    body, headers = output_message(chunk, fmt)
                    headers[MSG_ID_HEADER] = f"{seq}-{k}"
                    headers[WORKER_HEADER] = self.id
                    subject = subjects.get(chunk.tag)
                    if subject is None:
                        subject = subjects[chunk.tag] = out_subject(prefix, chunk.tag)
                    jobs.append((subject, body, headers))
                    records += chunk.count
                    k += 1
            acks.append(m)
        self.metrics.inc("cluster_messages_in", len(msgs))
        if redelivered:
            self.metrics.inc("cluster_redeliveries", redelivered)
        self.metrics.inc("cluster_records_out", records)
        await self.pub.publish_all(jobs)
        # Acks last, all at once: a plain publish each, written together.
        for m in acks:
            try:
                await m.ack()
            except _TRANSIENT:
                self.metrics.inc("cluster_ack_errors")  # redelivered; outputs de-duplicated by id

    async def _publish_summaries(self, chunks: list[OutChunk]) -> None:
        if not chunks or self.pub is None:
            return
        jobs = []
        for chunk in chunks:
            self._summary_seq += 1
            body, headers = output_message(chunk, self.cluster.out_format)
            headers[MSG_ID_HEADER] = f"{self.id}-s{self._summary_seq}"
            headers[WORKER_HEADER] = self.id
            jobs.append(self.pub.publish(out_subject(self.cluster.out_prefix, chunk.tag), body, headers))
        await asyncio.gather(*jobs)


class Egress:
    """``logs.out.>`` -> a forward server (Fluentd in_forward, acked)."""

    def __init__(self, cluster: ClusterConfig, output: Any, metrics: Metrics) -> None:
        self.cluster = cluster
        self.output = output
        self.metrics = metrics
        self.nc: Any = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        self.nc = await connect(self.cluster, "probetag-egress")
        self.js = self.nc.jetstream(timeout=self.cluster.publish_timeout)
        await ensure_streams(self.js, self.cluster)
        await self.output.start()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        sub = None
        while sub is None and not self._stop.is_set():
            try:
                sub = await self.js.pull_subscribe(
                    f"{self.cluster.out_prefix}.>", durable=self.cluster.egress_durable,
                    stream=self.cluster.out_stream,
                    config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=self.cluster.ack_wait,
                                          max_ack_pending=self.cluster.max_ack_pending, max_deliver=-1))
            except _TRANSIENT:
                self.metrics.inc("cluster_subscribe_retries")
                await asyncio.sleep(0.5)
        while sub is not None and not self._stop.is_set():
            try:
                msgs = await sub.fetch(self.cluster.fetch_batch, timeout=1.0)
            except _TRANSIENT:
                continue
            await asyncio.gather(*(self._forward(m) for m in msgs))

    async def _forward(self, m: Any) -> None:
        try:
            parts = [(tag, entries, n if n >= 0 else len(walk_entries(entries)[0]) - 1)
                     for tag, entries, n in decode_output(m.data, headers=m.headers)]
        except BadMessage as exc:
            self.metrics.inc("cluster_bad_messages")
            log_event(logging.WARNING, "bad_message", subject=m.subject, reason=str(exc)[:200])
            await m.term()
            return
        await asyncio.gather(*(self.output.send(OutChunk(tag, entries, n)) for tag, entries, n in parts))
        self.metrics.inc("cluster_records_forwarded", sum(n for _, _, n in parts))
        try:
            await m.ack()
        except _TRANSIENT:
            self.metrics.inc("cluster_ack_errors")

    async def close(self) -> None:
        self._stop.set()
        await self.output.close()
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()
