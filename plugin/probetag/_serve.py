"""``probetag serve``: wire config, processor, inputs and output, run until signalled.

Theory of operation
-------------------
* ``Service`` owns one event loop's worth of parts: the ``Processor``, the
  output (``make_output``), the ``Pipeline`` (flow control, end-to-end
  settling), the forward input and, when their addresses are set, the HTTP
  and NDJSON inputs (all feed the same pipeline). ``start()`` binds and returns;
  ``stop()`` shuts down in the order that keeps the at-least-once promise:
  1. stop accepting; keep reading open connections for ``READ_GRACE``
     seconds, so what a client without acks (fluent-logger) wrote just
     before the signal is still taken in; then stop reading;
  2. flush the scan summaries still open, then drain: wait, up to
     ``shutdown_timeout`` (config; ``--drain-timeout`` overrides it) from
     the signal, until every record in flight is
     settled downstream; their upstream acks are written as they settle;
  3. close the sockets and the output. Whatever was still in flight when the
     bound ran out is simply not acked upstream, so the clients resend it.
* ``metrics.address`` serves ``GET /metrics`` (Prometheus text format
  0.0.4, ``Metrics.render``) and ``GET /health``: one request per
  connection, bounded head, nothing else.
* CLI flags override the file: ``--listen`` sets ``listen.address``,
  ``--forward-to`` sets ``output.type=forward`` and ``output.address``.
  Config errors print ``error: FILE:LINE: KEY: reason`` and exit 2.
* SIGHUP reloads: the config file is read again (with the same CLI
  overrides) and, if it is valid, a new ``Processor`` (catalogue files,
  signatures, allowlist, rules, correlation) is built off the event loop and
  swapped in between two chunks; open connections, in-flight records and
  their acks are untouched. Open scans of the old processor are ended (their
  summaries go out). Listener, inputs, output, flow and metrics settings
  cannot change on a live socket: a reload that changes them is applied
  without them and says which sections need a restart. An invalid file
  keeps the running config (``reloads{result="failed"}``, one log line).
* SIGINT/SIGTERM start the shutdown; a second signal exits at once. An
  output that is gone for good (stdout closed under ``| head``) also shuts
  down, with exit status 1: un-acked upstream chunks are resent elsewhere.
* ``--workers N`` (config ``workers``): the parent forks N worker
  processes and supervises them; it serves nothing itself. Each worker is a
  whole ``Service`` (own processor, pipeline, downstream connection) whose
  forward listener and UDP heartbeat bind the same port with
  ``SO_REUSEPORT``; the kernel spreads new connections over the workers and a
  connection stays with the worker that accepted it. Correlation state (scans
  per source) is per worker: a source whose records arrive over several
  connections may be seen by several workers, so per-source affinity is not
  guaranteed; the cluster mode (NATS, partitioned by source) is the answer
  when it must be. With port 0 the parent picks the port first (a bound,
  never listening ``SO_REUSEPORT`` socket, which takes no connections) so
  all workers share it. Worker 0 alone runs the HTTP and NDJSON inputs (they
  do not share ports). Metrics: each worker serves its own ``/metrics`` on
  ``metrics.address`` port + worker index (port 0: each its own free port,
  logged); every log line of a worker carries ``worker=I``. The parent
  forwards SIGTERM/SIGINT (each worker drains as below; a second signal
  makes them exit at once) and SIGHUP (each reloads), exits once all have
  exited (status 1 if one did not drain), and restarts a worker that dies
  on its own after a back-off (0.5 s doubling to 30 s; reset once a worker
  ran ``RESTART_RESET`` seconds). Workers get SIGTERM when the parent dies
  (Linux ``PR_SET_PDEATHSIG``), so a killed parent leaves none behind.
* ``serve`` raises glibc's malloc thresholds at start-up
  (``_runtime.tune_malloc``): big frame buffers are reused instead of
  freshly mmap'd and page-faulted.
* ``--demo`` sends the bundled sample (``probetag/samples/demo.jsonl``) to
  our own listener with the fluent-logger client once serving, so the
  enriched JSON lines show on stdout, then keeps serving.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import math
import os
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING, BinaryIO, Callable

from ._accel import log_start
from ._config import Config, ConfigError, load_config, parse_hostport, replace
from ._metrics import Metrics
from ._runtime import Pipeline, log_event, setup_logging, tune_malloc
from ._stage import Processor

if TYPE_CHECKING:
    from .inputs.forward_server import ForwardServer
    from .outputs import Output

__all__ = ["Service", "main", "build_config"]

#: Sections a reload cannot apply to open sockets and a running output.
RESTART_SECTIONS = ("listen", "http", "ndjson", "output", "flow", "metrics", "workers")

READ_GRACE = 0.5
#: Worker restart back-off: first delay, cap, and the uptime that resets it.
RESTART_FIRST = 0.5
RESTART_MAX = 30.0
RESTART_RESET = 30.0
_MAX_HTTP_HEAD = 8192


def health_response(health: Callable[[], str | None] | None) -> tuple[str, str, bytes]:
    """``GET /health``: 200 ``{"status":"ok"}``, or 503 with the reason
    (downstream down, in-flight limit reached, output closed)."""
    import json

    reason = health() if health is not None else None
    if reason is None:
        return "200 OK", "application/json", b'{"status":"ok"}'
    return ("503 Service Unavailable", "application/json",
            json.dumps({"status": "unavailable", "reason": reason}).encode())


class MetricsServer:
    """``GET /metrics`` and ``GET /health`` over plain HTTP/1.1 (one request
    per connection, ``Connection: close``)."""

    def __init__(self, address: str, metrics: Metrics,
                 health: Callable[[], str | None] | None = None) -> None:
        self.address = address
        self.metrics = metrics
        #: None: healthy; else the reason ``/health`` answers 503 with.
        self.health = health
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> None:
        host, port = parse_hostport(self.address)
        self._server = await asyncio.start_server(self._handle, host, port, limit=_MAX_HTTP_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        log_event(logging.INFO, "listening", input="metrics", address=f"{host}:{self.port}")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            method, _, rest = head.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            if method not in (b"GET", b"HEAD"):
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"use GET\n"
            elif path == b"/metrics":
                status, ctype = "200 OK", "text/plain; version=0.0.4; charset=utf-8"
                # 1 while /health would answer 200 (downstream up, room in flight)
                self.metrics.set("healthy", 0.0 if self.health is not None and self.health() else 1.0)
                body = self.metrics.render().encode()
            elif path == b"/health":
                status, ctype, body = health_response(self.health)
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"GET /metrics or /health\n"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         f"Connection: close\r\n\r\n".encode() + (b"" if method == b"HEAD" else body))
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError, OSError):
            self.metrics.inc("metrics_http_errors")
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


class Service:
    """The running processor. ``await start()``, ``listen_port``, ``await stop()``."""

    def __init__(self, config: Config, metrics: Metrics | None = None,
                 stdout: BinaryIO | None = None, reuse_port: bool = False) -> None:
        self.config = config
        self.reuse_port = reuse_port
        self.metrics = metrics if metrics is not None else Metrics()
        self.stdout = stdout
        self.pipeline: Pipeline | None = None
        self.server: ForwardServer | None = None
        self.inputs: list = []  # further inputs (HTTP, NDJSON), started after the forward one
        self.listen_port = 0
        self.metrics_server: MetricsServer | None = None
        self.listen_host = ""

    async def start(self) -> None:
        from .inputs.forward_server import ForwardServer
        from .outputs import make_output

        processor = Processor(self.config, self.metrics)
        output: Output
        if self.config.output.type == "stdout":
            from .outputs.stdout import StdoutOutput
            output = StdoutOutput(self.config.output, self.metrics, self.stdout)
        else:
            output = make_output(self.config, self.metrics)
        self.pipeline = Pipeline(processor, output, self.config.flow, self.metrics)
        await self.pipeline.start()
        server = self.server = ForwardServer(self.config.listen, self.pipeline, self.metrics,
                                             reuse_port=self.reuse_port)
        try:
            await server.start()
        except BaseException:
            await self.pipeline.close()
            raise
        self.listen_host, self.listen_port = server.host, server.port
        await self._start_http_and_metrics()
        if self.config.ndjson.address:
            from .inputs.ndjson import NdjsonInput
            nd = NdjsonInput(self.config, self.metrics, self.pipeline)
            await nd.start()
            self.inputs.append(nd)
        out = self.config.output
        log_event(logging.INFO, "serving", output=out.type,
                  downstream=out.address if out.type != "stdout" else "-")

    async def _start_http_and_metrics(self) -> None:
        """The HTTP input and the /metrics listener, once the forward input
        and the pipeline run (also the cluster ingress's start-up)."""
        assert self.pipeline is not None
        if self.config.http.address:
            from .inputs.http import HttpInput
            http = HttpInput(self.config, self.metrics, self.pipeline)
            await http.start()
            self.inputs.append(http)
        if self.config.metrics.address:
            self.metrics_server = MetricsServer(self.config.metrics.address, self.metrics,
                                                health=self.pipeline.unhealthy)
            await self.metrics_server.start()

    async def reload(self, cfg: Config) -> tuple[str, ...]:
        """Apply ``cfg`` to the processing stage (see SIGHUP above); returns
        the sections that changed but need a restart."""
        assert self.pipeline is not None
        # Building the detector compiles the catalogue: seconds of CPU for big
        # catalogues, so not on the event loop, which keeps serving meanwhile.
        processor = await asyncio.to_thread(Processor, cfg, self.metrics)
        pending = tuple(name for name in RESTART_SECTIONS
                        if getattr(cfg, name) != getattr(self.config, name))
        self.pipeline.flush_summaries()
        self.pipeline.processor = processor
        self.config = dataclasses.replace(
            self.config, detect=cfg.detect, correlation=cfg.correlation, actions=cfg.actions,
            log_level=cfg.log_level, log_format=cfg.log_format, shutdown_timeout=cfg.shutdown_timeout)
        return pending

    async def stop(self, drain_timeout: float | None = None) -> bool:
        """Shut down; True if everything in flight was settled in time.
        ``drain_timeout`` (default ``shutdown_timeout``) bounds the read grace
        plus the drain."""
        assert self.pipeline is not None and self.server is not None
        if drain_timeout is None:
            drain_timeout = self.config.shutdown_timeout
        grace = min(READ_GRACE, drain_timeout / 4)
        await self.server.stop_accepting()
        for extra in self.inputs:
            # HTTP answers a request only once it is settled: closing the
            # listener first and the open requests after the drain keeps that.
            server = getattr(extra, "_server", None)
            if server is not None:
                server.close()
        await asyncio.sleep(grace)
        self.server.stop_reading()
        self.pipeline.flush_summaries()
        drained = await self.pipeline.drain(drain_timeout - grace)
        left = self.pipeline.flow.records
        await self.server.close()
        for extra in self.inputs:
            await extra.close()
        await self.pipeline.close()
        if self.metrics_server is not None:
            await self.metrics_server.close()
        log_event(logging.INFO if drained else logging.WARNING, "stopped",
                  drained=drained, unsettled_records=left)
        return drained


def build_config(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config, resources=True)
    if args.listen:
        cfg = replace(cfg, listen={"address": args.listen})
    if args.forward_to:
        cfg = replace(cfg, output={"type": "forward", "address": args.forward_to})
    if getattr(args, "workers", None) is not None:
        cfg = dataclasses.replace(cfg, workers=args.workers)
        try:
            cfg.validate()
        except ConfigError as exc:
            exc.key = "--workers"
            raise
    return cfg


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="probetag serve",
        description="Run the stream processor: forward protocol in, enriched records out "
                    "(forward protocol to --forward-to, or JSON lines on stdout).")
    ap.add_argument("-c", "--config", metavar="CONFIG.yaml", help="YAML config file (default: built-in defaults)")
    ap.add_argument("--listen", metavar="HOST:PORT", help="forward input address (overrides listen.address)")
    ap.add_argument("--forward-to", metavar="HOST:PORT",
                    help="send to this forward server (sets output.type=forward, output.address)")
    ap.add_argument("--demo", action="store_true",
                    help="send the bundled sample to ourselves once serving, then keep serving")
    ap.add_argument("--drain-timeout", type=float, default=None, metavar="SECONDS",
                    help="on SIGINT/SIGTERM, wait this long for in-flight records to be acked "
                         "(overrides shutdown_timeout)")
    ap.add_argument("--workers", type=int, default=None, metavar="N",
                    help="run N processes sharing the listen port (SO_REUSEPORT; overrides workers)")
    return ap


def print_config_error(exc: ConfigError, where: str) -> None:
    """``error: FILE:LINE: KEY: reason`` on stderr, one line per error of
    the load; ``where`` stands for the file when an error names none (a
    command-line override)."""
    for e in exc.errors:
        line = f"{e.line}:" if e.line is not None else ""
        key = f" {e.key}:" if e.key else ""
        print(f"error: {e.file or where}:{line}{key} {e.reason}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = build_config(args)
    except ConfigError as exc:
        print_config_error(exc, args.config or "<command line>")
        return 2
    setup_logging(cfg.log_level, fmt=cfg.log_format)
    log_start()
    if cfg.workers > 1:
        return _supervise(cfg, args)
    tune_malloc()
    from .detect._catalogue import CatalogueError

    try:
        return asyncio.run(_serve(cfg, args.demo, args.drain_timeout, lambda: build_config(args)))
    except OSError as exc:  # bind failure and the like
        log_event(logging.ERROR, "fatal", reason=str(exc))
        return 1
    except (ConfigError, CatalogueError) as exc:
        # load_config(resources=True) checks all of this before the start;
        # whatever still slips through is reported as a config error, never
        # as a traceback.
        log_event(logging.ERROR, "fatal", reason=f"config: {exc}")
        return 2


async def _demo(send: Callable[[str, int], int], host: str, port: int) -> None:
    try:
        n = await asyncio.to_thread(send, host, port)
    except OSError as exc:
        log_event(logging.WARNING, "demo_failed", reason=str(exc))
        return
    log_event(logging.INFO, "demo_sent", records=n, address=f"{host}:{port}")
    # What a first-time user needs next: where their own records go, how to stop.
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    log_event(logging.INFO, "demo_hint",
              send_to=f"forward protocol on {address} (Fluentd/Fluent Bit out_forward, fluent-cat)",
              example=f"echo '{{\"message\":\"GET / HTTP/1.0#015\"}}' | fluent-cat -h {host} -p {port} demo",
              config="probetag serve -c configs/probetag/fluentd-enrich.yaml (see docs/)",
              stop="Ctrl-C (SIGINT) or SIGTERM: in-flight records are drained first")


async def _reload(service: Service, load: Callable[[], Config]) -> None:
    try:
        cfg = await asyncio.to_thread(load)
        pending = await service.reload(cfg)
    except ConfigError as exc:
        service.metrics.inc("reloads", result="failed")
        log_event(logging.ERROR, "reload_failed", file=exc.file or "-", line=exc.line or "-",
                  key=exc.key or "-", reason=exc.reason)
        return
    except Exception as exc:  # a catalogue that does not compile, unreadable file...
        service.metrics.inc("reloads", result="failed")
        log_event(logging.ERROR, "reload_failed", reason=f"{type(exc).__name__}: {str(exc)[:200]}")
        return
    setup_logging(cfg.log_level, fmt=cfg.log_format)
    service.metrics.inc("reloads", result="ok")
    if pending:
        log_event(logging.WARNING, "reload_restart_needed", sections=",".join(pending))
    log_event(logging.INFO, "reloaded", catalogue_files=len(cfg.detect.catalogue),
              signatures=len(cfg.detect.signatures))


def worker_config(cfg: Config, index: int, listen: str) -> Config:
    """Worker ``index``'s config: the shared listen address, the HTTP and
    NDJSON inputs on worker 0 only, its own metrics port (see above)."""
    sections: dict[str, dict[str, object]] = {"listen": {"address": listen}}
    if index > 0:
        sections["http"] = {"address": None}
        sections["ndjson"] = {"address": None}
        if cfg.metrics.address:
            host, port = parse_hostport(cfg.metrics.address)
            if port:
                sections["metrics"] = {"address": _join(host, port + index)}
    return replace(cfg, **sections)


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reserve_port(address: str) -> tuple[str, socket.socket | None]:
    """With port 0, bind (never listen) an SO_REUSEPORT socket to fix the
    port every worker binds; a socket that does not listen takes no
    connections from the group."""
    host, port = parse_hostport(address)
    if port:
        return address, None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return _join(host, sock.getsockname()[1]), sock


_SUPERVISED = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _term_with_parent(parent: int) -> None:
    """Linux: SIGTERM (drain and exit) when the parent dies, even by SIGKILL
    (``prctl(PR_SET_PDEATHSIG)``); elsewhere workers outlive it."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl
        os.kill(os.getpid(), signal.SIGTERM)


def _run_worker(cfg: Config, args: argparse.Namespace, index: int, listen: str, parent: int) -> int:
    """In the forked child: one whole ``Service`` on the shared port."""
    # Its own process group: a terminal's Ctrl-C reaches the parent only,
    # which forwards it once; the worker would take a second copy as "exit
    # now" and skip the drain.
    os.setpgid(0, 0)
    _term_with_parent(parent)
    # SIGHUP stays held until _serve has its reload handler in place (a
    # SIGHUP while the worker starts would otherwise kill it).
    signal.pthread_sigmask(signal.SIG_SETMASK, {signal.SIGHUP})
    setup_logging(cfg.log_level, worker=index, fmt=cfg.log_format)
    tune_malloc()
    wcfg = worker_config(cfg, index, listen)
    try:
        return asyncio.run(_serve(wcfg, args.demo and index == 0, args.drain_timeout,
                                  lambda: worker_config(build_config(args), index, listen),
                                  reuse_port=True))
    except OSError as exc:
        log_event(logging.ERROR, "fatal", reason=str(exc))
        return 1


def _spawn(cfg: Config, args: argparse.Namespace, index: int, listen: str,
           reserved: socket.socket | None) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        rc = 1
        if reserved is not None:
            reserved.close()  # the parent's port reservation, not the worker's
        try:
            rc = _run_worker(cfg, args, index, listen, parent)
        except SystemExit as exc:  # second signal: exit at once
            rc = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            logging.getLogger("probetag").exception("event=worker_failed")
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
    log_event(logging.INFO, "worker_started", worker=index, pid=pid)
    return pid


def _supervise(cfg: Config, args: argparse.Namespace) -> int:
    """The ``--workers`` parent (see above). Signals are blocked and taken
    with ``sigtimedwait``, so nothing runs in a signal handler."""
    try:
        listen, reserved = _reserve_port(cfg.listen.address)
    except OSError as exc:
        log_event(logging.ERROR, "fatal", reason=str(exc))
        return 1
    signal.pthread_sigmask(signal.SIG_BLOCK, _SUPERVISED)
    drain = args.drain_timeout if args.drain_timeout is not None else cfg.shutdown_timeout
    log_event(logging.INFO, "supervising", workers=cfg.workers, address=listen, pid=os.getpid())
    children: dict[int, tuple[int, float]] = {}  # pid -> (worker index, start time)
    failures = [0] * cfg.workers
    due: dict[int, float] = {}  # worker index -> restart time
    for i in range(cfg.workers):
        children[_spawn(cfg, args, i, listen, reserved)] = (i, time.monotonic())
    stopping = False
    kill_at = math.inf
    status = 0
    try:
        while children or (due and not stopping):
            info = signal.sigtimedwait(_SUPERVISED, 0.5)
            now = time.monotonic()
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                if not stopping:
                    stopping = True
                    due.clear()
                    # The workers' own bound, plus start-up and exit slack.
                    kill_at = now + drain + 10.0
                    log_event(logging.INFO, "shutdown", signal=signal.Signals(info.si_signo).name,
                              workers=len(children))
                for pid in children:
                    _signal(pid, info.si_signo)
            elif info is not None and info.si_signo == signal.SIGHUP:
                for pid in children:
                    _signal(pid, signal.SIGHUP)
            while children:
                try:
                    pid, wstatus = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    children.clear()
                    break
                if pid == 0:
                    break
                index, started = children.pop(pid, (-1, now))
                rc = os.waitstatus_to_exitcode(wstatus)
                if index < 0:
                    continue
                if stopping:
                    if rc != 0:  # did not drain in time, or was killed
                        status = 1
                    log_event(logging.INFO, "worker_exited", worker=index, pid=pid, status=rc)
                    continue
                if now - started >= RESTART_RESET:
                    failures[index] = 0
                delay = min(RESTART_MAX, RESTART_FIRST * 2 ** failures[index])
                failures[index] += 1
                due[index] = now + delay
                log_event(logging.WARNING, "worker_died", worker=index, pid=pid, status=rc,
                          restart_in=f"{delay:g}")
            if not stopping:
                for index, at in list(due.items()):
                    if at <= now:
                        del due[index]
                        children[_spawn(cfg, args, index, listen, reserved)] = (index, time.monotonic())
            elif now >= kill_at and children:
                log_event(logging.WARNING, "workers_killed", workers=len(children))
                for pid in children:
                    _signal(pid, signal.SIGKILL)
                kill_at = math.inf
                status = 1
    finally:
        if reserved is not None:
            reserved.close()
    log_event(logging.INFO, "stopped", workers=cfg.workers, status=status)
    return status


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


async def _serve(cfg: Config, demo: bool, drain_timeout: float | None,
                 load: Callable[[], Config] | None = None, reuse_port: bool = False) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0
    reloading: asyncio.Task[None] | None = None
    reload_again = False

    def on_hangup() -> None:
        nonlocal reloading, reload_again
        if load is None:
            return
        if reloading is not None and not reloading.done():
            reload_again = True  # one more once this one is done: the file may have changed since
            return
        log_event(logging.INFO, "reload", signal="SIGHUP")
        reloading = loop.create_task(_reload(service, load))
        reloading.add_done_callback(lambda _t: _again())

    def _again() -> None:
        nonlocal reload_again
        if reload_again and not stop.is_set():
            reload_again = False
            on_hangup()

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log_event(logging.WARNING, "exit_now", signal=signal.Signals(signum).name)
            raise SystemExit(1)
        log_event(logging.INFO, "shutdown", signal=signal.Signals(signum).name)
        stop.set()

    for s in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(s, on_signal, s)
    # SIGHUP's default action ends the process: held while the service
    # starts, a SIGHUP that arrives then is delivered as a reload once the
    # handler is in place.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    service = Service(cfg, reuse_port=reuse_port)
    await service.start()
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    demo_task = None
    if demo:
        from .samples import send_demo
        demo_task = loop.create_task(_demo(send_demo, service.listen_host, service.listen_port))
    failed = asyncio.ensure_future(service.pipeline.output_failed.wait())  # type: ignore[union-attr]
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({failed, stopping}, return_when=asyncio.FIRST_COMPLETED)
    for fut in (failed, stopping):
        fut.cancel()
    output_gone = service.pipeline is not None and service.pipeline.output_failed.is_set()
    if output_gone:
        log_event(logging.ERROR, "shutdown", reason="output closed")
    if demo_task is not None and not demo_task.done():
        demo_task.cancel()
    if reloading is not None and not reloading.done():
        reloading.cancel()
    drained = await service.stop(drain_timeout)
    return 0 if drained and not output_gone else 1
