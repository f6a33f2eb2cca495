"""``probetag cluster ingress|worker|egress``: run one role of the cluster.

Theory of operation
-------------------
* ``ingress``: ``probetag serve`` with its output replaced by
  ``JetStreamOutput`` and detection switched off (workers detect; the
  ingress only frames records and reads their sender). Inputs, flow
  control, end-to-end acks and the shutdown order are ``Service``'s.
* ``worker``: one ``Worker`` (leases, consumers, detection) until SIGTERM or
  SIGINT, then releases its leases so others take over without the TTL.
* ``egress``: ``Egress`` to ``output.address`` of the main config (a forward
  server: Fluentd in_forward or Vector's fluent source, acked).
* ``metrics.address`` of the main config serves ``/metrics`` and ``/health``
  in every role (the ``cluster_*`` counters of docs/scale-out.md).
* Config errors print ``error: FILE:LINE: KEY: reason`` and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys

from .._config import Config, ConfigError, load_config, replace
from .._metrics import Metrics
from .._runtime import Pipeline, log_event, setup_logging
from .._serve import MetricsServer, Service, print_config_error
from .._stage import Processor
from ._config import ClusterConfig, load_cluster_config

__all__ = ["main", "IngressService"]

ROLES = ("ingress", "worker", "egress")


class IngressService(Service):
    """``Service`` whose output is JetStream."""

    def __init__(self, config: Config, cluster: ClusterConfig, metrics: Metrics | None = None) -> None:
        # Detection runs on the workers; here it would only cost CPU.
        config = dataclasses.replace(config, detect=dataclasses.replace(config.detect, enabled=False))
        super().__init__(config, metrics)
        self.cluster = cluster

    async def start(self) -> None:
        from ..inputs.forward_server import ForwardServer
        from ._nats import JetStreamOutput

        output = JetStreamOutput(self.cluster, self.config, self.metrics)
        self.pipeline = Pipeline(Processor(self.config, self.metrics), output, self.config.flow, self.metrics)
        await self.pipeline.start()
        self.server = ForwardServer(self.config.listen, self.pipeline, self.metrics)
        await self.server.start()
        self.listen_host, self.listen_port = self.server.host, self.server.port
        await self._start_http_and_metrics()
        log_event(logging.INFO, "serving", output="jetstream", downstream=",".join(self.cluster.servers))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="probetag cluster",
                                 description="Run one role of a probetag cluster on NATS JetStream.")
    ap.add_argument("role", choices=ROLES)
    ap.add_argument("--cluster", required=True, metavar="CLUSTER.yaml", help="cluster settings")
    ap.add_argument("-c", "--config", metavar="CONFIG.yaml", help="probetag config (inputs, detection, output)")
    ap.add_argument("--listen", metavar="HOST:PORT", help="ingress: forward input address")
    ap.add_argument("--forward-to", metavar="HOST:PORT", help="egress: forward server address")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_config(args.config)
        if args.listen:
            cfg = replace(cfg, listen={"address": args.listen})
        if args.forward_to:
            cfg = replace(cfg, output={"type": "forward", "address": args.forward_to})
        cluster = load_cluster_config(args.cluster)
        if args.role == "egress" and cfg.output.type != "forward":
            raise ConfigError("egress needs output.type forward (or --forward-to)", key="output.type")
    except ConfigError as exc:
        print_config_error(exc, "<command line>")
        return 2
    setup_logging(cfg.log_level, fmt=cfg.log_format)
    return asyncio.run(_run(args.role, cfg, cluster))


async def _run(role: str, cfg: Config, cluster: ClusterConfig) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(s, stop.set)
    metrics = Metrics()
    metrics_server = None
    if role != "ingress" and cfg.metrics.address:
        # The ingress serves /metrics itself (Service); the other roles here.
        metrics_server = MetricsServer(cfg.metrics.address, metrics)
        await metrics_server.start()
    try:
        return await _run_role(role, cfg, cluster, metrics, stop)
    finally:
        if metrics_server is not None:
            await metrics_server.close()


async def _run_role(role: str, cfg: Config, cluster: ClusterConfig, metrics: Metrics,
                    stop: asyncio.Event) -> int:
    loop = asyncio.get_running_loop()
    if role == "ingress":
        service = IngressService(cfg, cluster, metrics)
        await service.start()
        await stop.wait()
        return 0 if await service.stop() else 1
    if role == "worker":
        from ._nats import Worker
        worker = Worker(cluster, cfg, metrics)
        await worker.start()
        task = loop.create_task(worker.run())
        await stop.wait()
        worker.stop()
        await task
        await worker.close()
        log_event(logging.INFO, "stopped", role="worker", records_in=int(metrics.get("records_in")))
        return 0
    from ..outputs import make_output
    from ._nats import Egress
    egress = Egress(cluster, make_output(cfg, metrics), metrics)
    await egress.start()
    task = loop.create_task(egress.run())
    await stop.wait()
    egress.stop()
    await asyncio.wait([task], timeout=5)
    await egress.close()
    return 0
