"""The cluster settings: their own small YAML file, typed and validated like
probetag's main config (same loader: unknown keys are errors, errors name
file, line and key).

Theory of operation
-------------------
* ``probetag cluster ROLE --cluster cluster.yaml [--config probetag.yaml]``:
  the main config keeps what it always meant (inputs, detection,
  correlation, actions, forward output for the egress); this file says where
  NATS is and how the subjects, streams, leases and consumers are laid out.
  Keeping it separate leaves a single instance's config untouched.
* ``partitions`` must equal N in the server's subject mapping
  (configs/nats/mapping.conf); workers consume ``<part_prefix>.<p>.*`` for
  p in 0..N-1 and nothing checks the server's N for them.
* Streams are created when missing and never deleted or recreated by
  probetag (nats-server 2.9.10 can panic on restart after a stream was
  recreated in place; see docs/scale-out.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .._config import ConfigError, _build, _Ctx, _doc

__all__ = ["ClusterConfig", "load_cluster_config"]


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    servers: tuple[str, ...] = field(default=("nats://127.0.0.1:4222",), metadata=_doc(
        "NATS URLs of the cluster (any subset; the client learns the others)."))
    partitions: int = field(default=8, metadata=_doc(
        "N of the server's mapping logs.in.* -> logs.part.{{partition(N,1)}}.{{wildcard(1)}}."))
    in_prefix: str = field(default="logs.in", metadata=_doc("Ingress publishes to IN_PREFIX.<source-token>."))
    part_prefix: str = field(default="logs.part", metadata=_doc("Mapped subjects: PART_PREFIX.<p>.<token>."))
    out_prefix: str = field(default="logs.out", metadata=_doc("Workers publish to OUT_PREFIX.<tag>."))
    stream: str = field(default="PROBETAG_IN", metadata=_doc("Stream over PART_PREFIX.>."))
    out_stream: str = field(default="PROBETAG_OUT", metadata=_doc("Stream over OUT_PREFIX.>."))
    replicas: int = field(default=3, metadata=_doc("Stream replicas (1, 3 or 5)."))
    max_age: float = field(default=86400.0, metadata=_doc(
        "Limits retention: messages older than this are removed. Seconds."))
    max_bytes: int = field(default=-1, metadata=_doc("Limits retention: stream size bound; -1 none."))
    duplicate_window: float = field(default=120.0, metadata=_doc(
        "JetStream de-duplication window for Nats-Msg-Id. Seconds."))
    create_streams: bool = field(default=True, metadata=_doc(
        "Create the streams and the lease bucket if missing (never recreated)."))
    batch_records: int = field(default=100, metadata=_doc(
        "Ingress: records of one source per message, at most."))
    publish_timeout: float = field(default=5.0, metadata=_doc("Wait for a publish ack this long. Seconds."))
    retry_initial: float = field(default=0.1, metadata=_doc("First publish retry delay. Seconds."))
    retry_max: float = field(default=2.0, metadata=_doc("Largest publish retry delay. Seconds."))
    lease_bucket: str = field(default="probetag_leases", metadata=_doc("KV bucket of partition leases."))
    lease_ttl: float = field(default=8.0, metadata=_doc(
        "A lease not renewed for this long expires: a killed worker's partitions are free after "
        "it. Longer than a lease-bucket leader election (a few seconds) plus lease_renew, so that "
        "leases survive one. Seconds. It is the lease bucket's max_age, fixed when the bucket is "
        "created: to change it, use a new bucket."))
    lease_renew: float = field(default=1.0, metadata=_doc(
        "Renew leases, heartbeat and re-plan this often; a failed renewal is retried with "
        "back-off (from 0.1 s up to this) until it succeeds or the lease is gone. Seconds."))
    ack_wait: float = field(default=8.0, metadata=_doc(
        "Consumer ack timeout. A claimed partition whose consumer has un-acked messages (its "
        "previous owner died holding them) is fetched once they are due again, at most this long "
        "after the claim; with none pending it is fetched at once. Longer than a batch takes. "
        "Seconds."))
    fetch_timeout: float = field(default=1.0, metadata=_doc(
        "How long one pull request stays open. A worker starts no fetch that could still be "
        "answered after its lease may have run out. Seconds."))
    max_ack_pending: int = field(default=1000, metadata=_doc("Un-acked messages per partition consumer."))
    fetch_batch: int = field(default=64, metadata=_doc("Messages per pull request."))
    consumer_prefix: str = field(default="probetag-part", metadata=_doc(
        "Durable consumer of partition p: CONSUMER_PREFIX-p."))
    worker_id: str | None = field(default=None, metadata=_doc("Worker id; unset: host-pid-random."))
    max_partitions: int = field(default=0, metadata=_doc("Most partitions one worker claims; 0: fair share."))
    egress_durable: str = field(default="probetag-egress", metadata=_doc(
        "Durable consumer the egress instances share."))
    out_format: Literal["packed", "ndjson"] = field(default="packed", metadata=_doc(
        "Workers' output messages: 'packed' (the stage's chunk as is: no per-record work for "
        "records nobody changed; read by the egress) or 'ndjson' (one JSON event per line, for "
        "Vector's nats source)."))
    json_default_tag: str = field(default="vector", metadata=_doc(
        "Tag of JSON messages (Vector nats sink) whose event has no 'tag' field."))

    def validate(self) -> None:
        if not self.servers:
            raise ConfigError("at least one server", key="servers")
        if self.partitions <= 0:
            raise ConfigError("must be > 0", key="partitions")
        if self.replicas not in (1, 3, 5):
            raise ConfigError("must be 1, 3 or 5", key="replicas")
        for name in ("batch_records", "max_ack_pending", "fetch_batch"):
            if getattr(self, name) <= 0:
                raise ConfigError("must be > 0", key=name)
        if self.lease_ttl < 1.0:
            raise ConfigError("must be >= 1 second", key="lease_ttl")
        if not 0 < self.lease_renew <= self.lease_ttl / 3:
            raise ConfigError("must be > 0 and at most lease_ttl / 3", key="lease_renew")
        if not 0 < self.fetch_timeout <= self.lease_ttl / 3:
            raise ConfigError("must be > 0 and at most lease_ttl / 3", key="fetch_timeout")
        if self.ack_wait <= 0:
            raise ConfigError("must be > 0", key="ack_wait")
        for name in ("in_prefix", "part_prefix", "out_prefix"):
            value = getattr(self, name)
            if not value or any(c in value for c in " *>") or value.endswith("."):
                raise ConfigError("not a subject prefix", key=name)


def load_cluster_config(path: str | Path | None = None, *, text: str | None = None) -> ClusterConfig:
    file = str(path) if path is not None else "<cluster>"
    if text is None and path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror}", file=file) from None
    node = None
    if text is not None:
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            raise ConfigError(f"YAML: {exc}", file=file) from None
    cfg: ClusterConfig = _build(_Ctx(file), node, ClusterConfig, "")
    try:
        cfg.validate()
    except ConfigError as exc:
        raise ConfigError(exc.reason, file=file, key=exc.key) from None
    return cfg


def cluster_config_from_mapping(data: dict[str, Any]) -> ClusterConfig:
    return load_cluster_config(text=yaml.safe_dump(data))

