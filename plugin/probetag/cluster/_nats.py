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
* ``Worker`` owns partitions through leases (``_lease``), consumes each with
  a durable pull consumer, runs the ``Processor`` (detection and correlation
  state live in this process), publishes results to ``logs.out.<tag>`` with
  the id ``<input stream seq>-<k>`` (a redelivered input makes the same ids,
  which the output stream's duplicate window drops) and acks the input only
  after every output publish is acked.
* ``Egress`` reads ``logs.out.>`` with one shared durable pull consumer and
  forwards each message with probetag's forward output (acked by Fluentd or
  Vector) before acking it.
* Transient errors (a node restarting, leader elections) surface as
  timeouts: they are retried and counted, never turned into data loss.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from typing import Any

import nats
from nats.errors import ConnectionClosedError, NoRespondersError, TimeoutError as NatsTimeout
from nats.js.api import (AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig, RetentionPolicy,
                         StorageType, StreamConfig)
from nats.js.errors import APIError, KeyWrongLastSequenceError, NoStreamResponseError, NotFoundError

from .._config import Config
from .._metrics import Metrics
from .._logging import log_event
from .._chunk import OutChunk
from .._stage import Processor
from ..outputs import OutputClosed
from ._batch import MessageIds, SourceBatcher
from ._config import ClusterConfig
from ._lease import PartitionState, lease_key, plan, worker_key
from ._messages import (COUNT_HEADER, MSG_ID_HEADER, TAG_HEADER, WORKER_HEADER, BadMessage,
                        decode_input, decode_output, encode_output)
from ._subjects import in_subject, out_subject, part_filter

__all__ = ["connect", "ensure_streams", "JetStreamOutput", "Worker", "Egress"]

_TRANSIENT = (NatsTimeout, asyncio.TimeoutError, NoRespondersError, NoStreamResponseError, APIError,
              ConnectionClosedError)


async def connect(cfg: ClusterConfig, name: str) -> Any:
    # Reconnect forever: a node going away is normal; the client moves to
    # another server of the cluster and pending requests time out (retried).
    return await nats.connect(servers=list(cfg.servers), name=name, max_reconnect_attempts=-1,
                              reconnect_time_wait=0.2, connect_timeout=2)


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

    def __init__(self, js: Any, cfg: ClusterConfig, metrics: Metrics) -> None:
        self.js = js
        self.cfg = cfg
        self.metrics = metrics
        self.closed = False

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
        self.pub = _Publisher(js, self.cluster, self.metrics)

    async def send(self, chunk: OutChunk) -> None:
        if self.pub is None:
            raise OutputClosed("not started")
        batches = self.batcher.split(chunk.tag, chunk.entries)
        jobs = []
        for b in batches:
            headers = {MSG_ID_HEADER: self.ids.next(), TAG_HEADER: b.tag, COUNT_HEADER: str(b.count)}
            jobs.append(self.pub.publish(in_subject(self.cluster.in_prefix, b.token), b.entries, headers))
        await asyncio.gather(*jobs)
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
        self._renewed: dict[int, float] = {}
        self._stop = asyncio.Event()
        self._summary_seq = 0

    async def start(self) -> None:
        self.nc = await connect(self.cluster, f"probetag-worker-{self.id}")
        self.js = self.nc.jetstream(timeout=self.cluster.publish_timeout)
        await ensure_streams(self.js, self.cluster)
        self.kv = await self.js.key_value(self.cluster.lease_bucket)
        self.pub = _Publisher(self.js, self.cluster, self.metrics)
        log_event(logging.INFO, "worker_started", worker=self.id, partitions=self.cluster.partitions)

    async def run(self) -> None:
        """Lease upkeep every TTL/3 until ``stop()``; partitions run as tasks."""
        tick = self.cluster.lease_ttl / 3
        last_expire = time.monotonic()
        while not self._stop.is_set():
            try:
                await self._upkeep()
            except _TRANSIENT as exc:
                self.metrics.inc("cluster_lease_errors", reason=type(exc).__name__)
            except Exception:  # our bug: keep the leases' upkeep alive, and say so
                self.metrics.inc("internal_errors", where="cluster_upkeep")
                logging.getLogger("probetag").exception("event=upkeep_failed worker=%s", self.id)
            self._drop_stale()
            if time.monotonic() - last_expire >= 1.0:
                last_expire = time.monotonic()
                await self._publish_summaries(self.processor.expire(time.time()))
            try:
                await asyncio.wait_for(self._stop.wait(), tick)
            except asyncio.TimeoutError:
                pass

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        """Stop consuming, release our leases (others need not wait for the TTL)."""
        self._stop.set()
        for st in self.owned.values():
            st.releasing = True
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=self.cluster.publish_timeout * 2)
        for p, st in list(self.owned.items()):
            try:
                await self.kv.delete(lease_key(p), last=st.revision)
            except Exception:  # best effort: the TTL frees it anyway
                pass
        try:
            await self.kv.delete(worker_key(self.id))
        except Exception:
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

    async def _upkeep(self) -> None:
        await self.kv.put(worker_key(self.id), b"1")
        for p, st in list(self.owned.items()):
            if st.releasing:
                continue
            try:
                st.revision = await self.kv.update(lease_key(p), self.id.encode(), last=st.revision)
                self._renewed[p] = time.monotonic()
            except KeyWrongLastSequenceError:
                self._lose(p, "taken")
        owners, live = await self._snapshot()
        for p in list(self.owned):
            if owners.get(p) not in (None, self.id):
                self._lose(p, "owner_changed")
        # Partitions we are releasing still count as ours until drained.
        decision = plan(self.id, self.cluster.partitions, owners, live, self.cluster.max_partitions)
        for p in decision.release:
            held = self.owned.get(p)
            if held is not None and not held.releasing:
                held.releasing = True
                self.metrics.inc("cluster_leases_released")
                log_event(logging.INFO, "lease_release", worker=self.id, partition=p)
        for p in decision.claim:
            try:
                rev = await self.kv.create(lease_key(p), self.id.encode())
            except KeyWrongLastSequenceError:
                continue  # another worker won the race
            self.metrics.inc("cluster_leases_claimed")
            log_event(logging.INFO, "lease_claimed", worker=self.id, partition=p)
            st = self.owned[p] = PartitionState(p, rev, time.monotonic() + self.cluster.ack_wait)
            self._renewed[p] = time.monotonic()
            self._tasks[p] = asyncio.get_running_loop().create_task(self._consume(st))
        self.metrics.set("cluster_partitions_owned", len(self.owned))

    def _drop_stale(self) -> None:
        # Renewals failing with timeouts (a node down) do not prove the lease
        # lost, but once the TTL may have run out others can claim it: stop.
        limit = self.cluster.lease_ttl * 0.8
        now = time.monotonic()
        for p in list(self.owned):
            if now - self._renewed.get(p, now) > limit:
                self._lose(p, "renewal_overdue")

    def _lose(self, p: int, reason: str) -> None:
        st = self.owned.pop(p, None)
        if st is None:
            return
        self.metrics.inc("cluster_leases_lost", reason=reason)
        log_event(logging.WARNING, "lease_lost", worker=self.id, partition=p, reason=reason)
        st.releasing = True
        task = self._tasks.pop(p, None)
        if task is not None:
            task.cancel()  # un-acked messages are redelivered to the next owner

    # -- consuming -------------------------------------------------------------

    async def _consume(self, st: PartitionState) -> None:
        p = st.partition
        try:
            # Wait out the ack timeout: what the previous owner fetched and
            # never acked is due for redelivery by then and comes first.
            await asyncio.sleep(max(0.0, st.ready_at - time.monotonic()))
            sub = None
            while sub is None and not st.releasing:
                try:
                    sub = await self.js.pull_subscribe(
                        part_filter(self.cluster.part_prefix, p),
                        durable=f"{self.cluster.consumer_prefix}-{p}", stream=self.cluster.stream,
                        config=ConsumerConfig(
                            ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                            ack_wait=self.cluster.ack_wait, max_ack_pending=self.cluster.max_ack_pending,
                            max_deliver=-1))
                except _TRANSIENT:
                    self.metrics.inc("cluster_subscribe_retries")
                    await asyncio.sleep(0.5)
            while not st.releasing and sub is not None:
                try:
                    msgs = await sub.fetch(self.cluster.fetch_batch, timeout=1.0)
                except _TRANSIENT:
                    continue
                await self._handle(msgs)
            if sub is not None:
                try:
                    await sub.unsubscribe()
                except Exception:
                    pass
        except asyncio.CancelledError:
            raise
        except Exception:
            self.metrics.inc("internal_errors", where="cluster_consume")
            logging.getLogger("probetag").exception("event=consume_failed partition=%d", p)
        finally:
            if st.releasing and self.owned.get(p) is st:
                # Drained: hand the partition back now rather than at TTL.
                self.owned.pop(p, None)
                self._tasks.pop(p, None)
                try:
                    await self.kv.delete(lease_key(p), last=st.revision)
                except Exception:
                    pass

    async def _handle(self, msgs: list[Any]) -> None:
        assert self.pub is not None
        jobs = []
        acks = []
        for m in msgs:
            self.metrics.inc("cluster_messages_in")
            md = m.metadata
            if md.num_delivered > 1:
                self.metrics.inc("cluster_redeliveries")
            try:
                parts = decode_input(m.headers, m.data, self.cluster.json_default_tag)
            except BadMessage as exc:
                self.metrics.inc("cluster_bad_messages")
                log_event(logging.WARNING, "bad_message", subject=m.subject, reason=str(exc)[:200])
                await m.term()
                continue
            k = 0
            for tag, entries, _count in parts:
                for chunk in self.processor.process(tag, entries).chunks:
                    headers = {MSG_ID_HEADER: f"{md.sequence.stream}-{k}", TAG_HEADER: chunk.tag,
                               WORKER_HEADER: self.id}
                    jobs.append(self.pub.publish(out_subject(self.cluster.out_prefix, chunk.tag),
                                                 encode_output(chunk), headers))
                    self.metrics.inc("cluster_records_out", chunk.count)
                    k += 1
            acks.append(m)
        await asyncio.gather(*jobs)
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
            headers = {MSG_ID_HEADER: f"{self.id}-s{self._summary_seq}", TAG_HEADER: chunk.tag,
                       WORKER_HEADER: self.id}
            jobs.append(self.pub.publish(out_subject(self.cluster.out_prefix, chunk.tag),
                                         encode_output(chunk), headers))
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
            parts = decode_output(m.data)
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
