"""Parts of the reliability scenarios: a ``probetag serve`` subprocess, an
upstream that behaves like Fluentd out_forward with ``require_ack_response``,
and the exact accounting of what came out downstream.

Theory of operation
-------------------
* ``ServeProcess`` runs ``python -m probetag serve -c CONFIG.yaml`` on
  127.0.0.1 with stderr in a file (the structured log the tests read back),
  and reads the child's ``VmRSS``/``VmHWM`` from ``/proc/PID/status``.
* ``FluentdUpstream`` is what Fluentd's out_forward does with
  ``require_ack_response true`` (out_forward.rb, ack_handler.rb): every
  buffer chunk is sent as a PackedForward with a ``chunk`` option, several
  chunks may wait for their ack at once, a chunk whose ack does not come
  within ``ack_response_timeout`` (or whose connection breaks) is rolled back
  and sent again, with the same chunk id, on a new connection after a retry
  wait. It never drops a chunk: the run ends when every chunk is acked (or
  the test's deadline passes, which the test then reports as a failure).
* Every record carries a unique ``uid``; ``tally`` counts, from the
  downstream's own log of acked requests, how many distinct uids arrived,
  how many arrived more than once, and checks that every duplicate is
  explained by something that was in flight: a chunk the upstream had to
  resend, or the last request of a downstream connection that was cut
  before its ack could be read (probetag then resends it).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import msgpack
import yaml

from util.downstream import Downstream
from util.ports import free_port, wait_listening
from util.upstream import event_time, new_chunk_id

__all__ = ["ServeProcess", "FluentdUpstream", "Tally", "tally", "proc_status_kib",
           "scrape", "parse_metrics", "record_for", "PROBE_EVERY"]

#: Every PROBE_EVERY-th record is a probe line (nmap's GetRequest as rsyslog
#: logs it), so the tagging path is part of every run.
PROBE_EVERY = 50


def record_for(uid: int, pad: int = 0) -> dict[str, Any]:
    if uid % PROBE_EVERY == 0:
        return {"uid": uid, "host": "GET", "ident": "/", "message": "HTTP/1.0#015",
                "source_address": f"198.51.100.{uid % 200 + 1}"}
    rec: dict[str, Any] = {"uid": uid, "host": "web01", "ident": "app",
                           "message": f"request {uid} served in 3 ms"}
    if pad:
        rec["pad"] = "x" * pad
    return rec


def proc_status_kib(pid: int, field_name: str) -> int:
    """``VmRSS`` / ``VmHWM`` of a process, in KiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------- serve process
class ServeProcess:
    """``probetag serve`` as a child process on a fixed loopback port."""

    def __init__(self, tmp: Path, config: dict[str, Any], *, port: int | None = None,
                 metrics_port: int | None = None, name: str = "serve") -> None:
        self.tmp = tmp
        self.port = port or free_port()
        self.metrics_port = metrics_port
        cfg = dict(config)
        cfg["listen"] = {"address": f"127.0.0.1:{self.port}", **cfg.get("listen", {})}
        if metrics_port:
            cfg["metrics"] = {"address": f"127.0.0.1:{metrics_port}"}
        self.config = cfg
        self.config_path = tmp / f"{name}.yaml"
        self.write_config(cfg)
        self.log_path = tmp / f"{name}.stderr.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.peak_rss_kib = 0

    def write_config(self, cfg: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(cfg))

    def start(self, timeout: float = 30.0) -> "ServeProcess":
        self.starts += 1
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "probetag", "serve", "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"probetag serve exited with {self.proc.returncode}: {self.log()[-2000:]}")
            if _listening(self.port):
                return self
            time.sleep(0.05)
        raise RuntimeError("probetag serve did not come up")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_kib(self) -> int:
        v = proc_status_kib(self.pid, "VmRSS")
        self.peak_rss_kib = max(self.peak_rss_kib, v)
        return v

    def hwm_kib(self) -> int:
        """Peak RSS of the current process (``VmHWM``), read while it runs."""
        v = proc_status_kib(self.pid, "VmHWM")
        self.peak_rss_kib = max(self.peak_rss_kib, v)
        return v

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.hwm_kib()
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.hwm_kib()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> "ServeProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _listening(port: int) -> bool:
    # A bare connect+close is a transport heartbeat for the forward server.
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def scrape(port: int, path: str = "/metrics", timeout: float = 5.0) -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                break
            buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, body.decode()


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


def metric_sum(series: dict[str, float], name: str) -> float:
    return sum(v for k, v in series.items() if k == name or k.startswith(name + "{"))


# ---------------------------------------------------------------- upstream
@dataclass
class _Chunk:
    index: int
    chunk_id: str
    frame: bytes
    uids: range
    sends: int = 0
    acked: bool = False


@dataclass
class FluentdUpstream:
    """Fluentd out_forward with ``require_ack_response``, in a thread."""

    port: int
    records: int
    per_chunk: int = 100
    tag: str = "rel.test"
    window: int = 8
    ack_timeout: float = 5.0
    retry_wait: float = 0.2
    #: Seconds between chunk sends (pacing, so faults happen *under* load);
    #: 0 sends as fast as probetag takes them.
    interval: float = 0.0
    pad: int = 0
    chunks: list[_Chunk] = field(default_factory=list)
    failures: Counter = field(default_factory=Counter)
    connections: int = 0
    acks: int = 0
    error: BaseException | None = None

    def __post_init__(self) -> None:
        t = time.time()
        for i, start in enumerate(range(0, self.records, self.per_chunk)):
            uids = range(start, min(start + self.per_chunk, self.records))
            entries = b"".join(msgpack.packb([event_time(t), record_for(u, self.pad)], use_bin_type=True)
                               for u in uids)
            cid = new_chunk_id()
            frame = msgpack.packb([self.tag, entries, {"size": len(uids), "chunk": cid}], use_bin_type=True)
            self.chunks.append(_Chunk(i, cid, frame, uids))
        self._by_id = {c.chunk_id: c for c in self.chunks}
        self._stop = threading.Event()
        self.done = threading.Event()  # every chunk acked
        self.finished = threading.Event()  # the thread is over (done, stopped or failed)
        self._thread = threading.Thread(target=self._main, name="fluentd-upstream", daemon=True)
        self.sent_chunks = 0  # first sends, for pacing and progress

    # -- control --------------------------------------------------------------
    def start(self) -> "FluentdUpstream":
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def wait(self, timeout: float) -> bool:
        """True once every chunk is acked; stops the client after ``timeout``."""
        self.finished.wait(timeout)
        self._stop.set()
        self._thread.join(10)
        return self.done.is_set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def acked_chunks(self) -> int:
        return sum(c.acked for c in self.chunks)

    def resent_uids(self) -> set[int]:
        return {u for c in self.chunks if c.sends > 1 for u in c.uids}

    @property
    def resent_chunks(self) -> int:
        return sum(c.sends > 1 for c in self.chunks)

    # -- the client -------------------------------------------------------------
    def _main(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.finished.set()

    def _loop(self) -> None:
        pending = list(self.chunks)  # in order; rolled-back chunks go to the front
        while not self._stop.is_set():
            if not pending:
                self.done.set()
                return
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=2.0)
            except OSError:
                self.failures["connect"] += 1
                time.sleep(self.retry_wait)
                continue
            self.connections += 1
            inflight: dict[str, tuple[_Chunk, float]] = {}
            reason = self._session(sock, pending, inflight)
            sock.close()
            if reason is None:
                continue
            self.failures[reason] += 1
            # Roll back: what was not acked is sent again, same chunk id.
            back = sorted((c for c, _ in inflight.values()), key=lambda c: c.index)
            pending[:0] = back
            time.sleep(self.retry_wait)

    def _session(self, sock: socket.socket, pending: list[_Chunk],
                 inflight: dict[str, tuple[_Chunk, float]]) -> str | None:
        unpacker = msgpack.Unpacker(raw=False)
        sock.setblocking(False)
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        out = b""
        while not self._stop.is_set():
            now = time.monotonic()
            while pending and len(inflight) < self.window and not out:
                c = pending[0]
                if c.sends == 0 and self.interval and now < self._t0 + c.index * self.interval:
                    break
                pending.pop(0)
                if c.acked:
                    continue
                c.sends += 1
                if c.sends == 1:
                    self.sent_chunks += 1
                out = c.frame
                inflight[c.chunk_id] = (c, now)
            if not pending and not inflight:
                return None  # all done on this connection
            oldest = min((t for _, t in inflight.values()), default=None)
            if oldest is not None and now - oldest > self.ack_timeout:
                return "ack_timeout"
            # poll, not select: scenarios with thousands of sockets have fds > 1024
            poller.modify(sock, select.POLLIN | (select.POLLOUT if out else 0))
            ready = {ev for _, ev in poller.poll(50)}
            r = any(ev & (select.POLLIN | select.POLLHUP | select.POLLERR) for ev in ready)
            w = any(ev & select.POLLOUT for ev in ready)
            if w:
                try:
                    n = sock.send(out)
                except BlockingIOError:
                    n = 0
                except OSError:
                    return "write_error"
                out = out[n:]
            if r:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    return "read_error"
                if not data:
                    return "eof"
                unpacker.feed(data)
                for obj in unpacker:
                    cid = obj.get("ack") if isinstance(obj, dict) else None
                    entry = inflight.pop(cid, None) if isinstance(cid, str) else None
                    if entry is None:
                        continue  # a late ack for a chunk already resent elsewhere
                    entry[0].acked = True
                    self.acks += 1
        # stopped by the test: whatever is in flight stays un-acked
        return "stopped"


# ---------------------------------------------------------------- accounting
@dataclass
class Tally:
    sent: int
    received: int  # distinct uids acked downstream
    deliveries: int  # every copy acked downstream
    duplicates: int
    unexplained_duplicates: int
    missing: list[int]

    def figures(self) -> dict[str, int]:
        return {"sent": self.sent, "received": self.received, "duplicates": self.duplicates,
                "lost": len(self.missing)}


def tally(ds: Downstream, upstream_resent: set[int], total: int) -> Tally:
    reqs = ds.snapshot()
    last_on_conn: dict[int, int] = {}
    for r in reqs:
        last_on_conn[r.connection] = max(last_on_conn.get(r.connection, -1), r.n)
    counts: Counter = Counter()
    first_req: dict[int, Any] = {}
    for r in reqs:
        if r.outcome != "acked":
            continue
        for _, rec in r.records:
            uid = rec.get("uid")
            if uid is None:
                continue
            counts[uid] += 1
            first_req.setdefault(uid, r)
    dups = {u: n - 1 for u, n in counts.items() if n > 1}
    unexplained = 0
    for u, extra in dups.items():
        if u in upstream_resent:
            continue
        fr = first_req[u]
        # The first copy's ack may have been lost with its connection only if
        # it was the last request written on that connection.
        if last_on_conn[fr.connection] == fr.n:
            continue
        unexplained += extra
    missing = sorted(set(range(total)) - set(counts))
    return Tally(total, len(counts), sum(counts.values()), sum(dups.values()), unexplained, missing)


def wait_for(pred: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()
