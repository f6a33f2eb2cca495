"""cluster: scale probetag out on NATS JetStream with per-source affinity.

Ingress instances (stateless) publish per-source batches to
``logs.in.<source-token>``; the server maps them to ``logs.part.<p>.<token>``
(p = hash of the token mod N); workers (stateful: correlation) lease
partitions and publish results to ``logs.out.<tag>``; the egress or a
shipper reads those. See docs/scale-out.md.

The sans-I/O parts (subjects, batching, leases, message shapes, config) do
not import the NATS client; ``JetStreamOutput``, ``Worker``, ``Egress`` and
``IngressService`` do (``pip install nats-py``) and are imported lazily.
"""

from __future__ import annotations

from typing import Any

from ._batch import Batch, MessageIds, SourceBatcher
from ._config import ClusterConfig, cluster_config_from_mapping, load_cluster_config
from ._lease import PartitionState, Plan, in_flight_wait, lease_key, plan, worker_key
from ._messages import BadMessage, decode_input, decode_output, encode_output, output_message
from ._subjects import UNKNOWN_SOURCE, in_subject, out_subject, part_filter, partition_of, source_token

__all__ = [
    "Batch", "MessageIds", "SourceBatcher",
    "ClusterConfig", "load_cluster_config", "cluster_config_from_mapping",
    "Plan", "plan", "PartitionState", "in_flight_wait", "lease_key", "worker_key",
    "BadMessage", "decode_input", "decode_output", "encode_output", "output_message",
    "UNKNOWN_SOURCE", "source_token", "partition_of", "in_subject", "out_subject", "part_filter",
    "JetStreamOutput", "Worker", "Egress", "IngressService", "ensure_streams",
]

_LAZY = {"JetStreamOutput": "_nats", "Worker": "_nats", "Egress": "_nats", "ensure_streams": "_nats",
         "IngressService": "_cli"}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(name)
    import importlib
    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)
