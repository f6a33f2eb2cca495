"""A real 3-node nats-server cluster on loopback, probetag cluster roles as
subprocesses, a generated multi-source load and its single-instance
reference. Every wait is bounded; every process is stopped by PID."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import msgpack
import yaml

REPO = Path(__file__).resolve().parents[2]
MAPPING = REPO / "configs" / "nats" / "mapping.conf"
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
PORT_RANGE = range(24000, 25000)
T0 = 1_790_000_000


def free_ports(n: int) -> list[int]:
    """``n`` TCP ports in 24000-24999 that are free now (bind test, random order)."""
    import random

    candidates = list(PORT_RANGE)
    random.shuffle(candidates)
    out: list[int] = []
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        out.append(port)
        if len(out) == n:
            return out
    raise RuntimeError("not enough free ports in 24000-24999")


def _wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@dataclass
class Node:
    name: str
    conf: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([NATS_SERVER, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"))
        if not _wait_port(self.port, 15):
            raise RuntimeError(f"{self.name} did not listen; see {self.log}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


class NatsCluster:
    """Three JetStream nodes with routes between them, own configs/stores."""

    def __init__(self, root: Path) -> None:
        self.root = root
        ports = free_ports(6)
        self.client_ports, route_ports = ports[:3], ports[3:]
        shutil.copy(MAPPING, root / "mapping.conf")
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in route_ports)
        self.nodes: list[Node] = []
        for i in range(3):
            store = root / f"store-{i}"
            store.mkdir()
            conf = root / f"node-{i}.conf"
            conf.write_text(
                f"server_name: t{i}\nlisten: 127.0.0.1:{self.client_ports[i]}\n"
                f"jetstream {{ store_dir: \"{store}\", max_memory_store: 64M, max_file_store: 1G }}\n"
                f"cluster {{ name: probetag-test, listen: 127.0.0.1:{route_ports[i]}, routes: [{routes}] }}\n"
                "include mapping.conf\n")
            self.nodes.append(Node(f"t{i}", conf, self.client_ports[i], root / f"node-{i}.log"))

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{p}" for p in self.client_ports]

    def start(self) -> None:
        for n in self.nodes:
            n.start()

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


def write_cluster_yaml(root: Path, urls: list[str], **over: Any) -> Path:
    cfg = {"servers": urls, "partitions": 8, "lease_ttl": 3.0, "ack_wait": 2.0, "publish_timeout": 2.0,
           "retry_max": 0.5, "fetch_batch": 128, "duplicate_window": 120.0, **over}
    path = root / "cluster.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Role:
    """``probetag cluster ROLE`` as a subprocess (stopped by PID)."""

    def __init__(self, root: Path, role: str, cluster_yaml: Path, name: str, *extra: str) -> None:
        self.name = name
        self.log = root / f"{name}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "probetag", "cluster", role, "--cluster", str(cluster_yaml), *extra],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"), env=env, cwd=root)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


# -- the load -----------------------------------------------------------------

def _ip(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def source_records(i: int) -> tuple[str, list[dict[str, Any]]]:
    """(tag, records) of source ``i``: an HTTP+SIP probe sequence, an rsyslog
    GET/OPTIONS/HELP sequence, or one ordinary line. Each record has ``rid``."""
    ip = _ip(i)
    kind = i % 10
    if kind == 0:
        tag = "syslog.user"
        recs = [{"host": "GET", "ident": "/", "message": "HTTP/1.0#015", "source_address": ip},
                {"host": ip, "ident": "#015", "message": "", "source_address": ip},
                {"host": "OPTIONS", "ident": "sip:nm", "message": "SIP/2.0#015", "source_address": ip},
                {"host": ip, "ident": "Via:", "message": "SIP/2.0/TCP nm;branch=foo#015", "source_address": ip}]
    elif kind == 1:
        tag = "syslog.rsyslog"
        recs = [{"rawmsg": "GET / HTTP/1.0#015", "fromhost-ip": ip, "hostname": "GET", "syslogtag": "/",
                 "msg": " HTTP/1.0#015"},
                {"rawmsg": "OPTIONS / HTTP/1.0#015", "fromhost-ip": ip, "hostname": "OPTIONS",
                 "syslogtag": "/", "msg": " HTTP/1.0#015"},
                {"rawmsg": "HELP#015", "fromhost-ip": ip, "hostname": ip, "syslogtag": "HELP#015", "msg": ""}]
    else:
        tag = "syslog.user"
        recs = [{"host": "web01", "ident": "sshd", "message": f"Accepted publickey for deploy from {ip}",
                 "source_address": ip}]
    for k, r in enumerate(recs):
        r["rid"] = f"{i}-{k}"
    return tag, recs


def chunks(first: int, last: int, per_chunk: int = 100) -> list[tuple[str, float, list[dict[str, Any]]]]:
    """Sources first..last-1 as forward chunks (one tag each; a source's
    records all in one chunk), with event times that grow."""
    by_tag: dict[str, list[dict[str, Any]]] = {}
    out = []
    count: dict[str, int] = {}
    for i in range(first, last):
        tag, recs = source_records(i)
        by_tag.setdefault(tag, []).extend(recs)
        count[tag] = count.get(tag, 0) + 1
        if count[tag] == per_chunk:
            out.append((tag, T0 + i * 0.01, by_tag.pop(tag)))
            count[tag] = 0
    for tag, recs in by_tag.items():
        out.append((tag, T0 + last * 0.01, recs))
    return out


_REFERENCE = r"""
import json, sys
import msgpack
sys.path.insert(0, sys.argv[1])
from util.upstream import packed_frame
from probetag._config import Config
from probetag._metrics import Metrics
from probetag._stage import Processor
from probetag.cluster import encode_output
proc = Processor(Config(), Metrics())
out = {}
for tag, t, recs in json.load(sys.stdin):
    frame = msgpack.unpackb(packed_frame(tag, recs, None, t), raw=False)
    for chunk in proc.process(tag, frame[1]).chunks:
        for line in encode_output(chunk).splitlines():
            ev = json.loads(line)
            out[ev["rid"]] = ev
json.dump(out, sys.stdout)
"""


def reference(load: list[tuple[str, float, list[dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    """rid -> output event of a single instance on the same chunks.

    Run in a fresh process started next to the workers, so both load the
    detection code as it is on disk at that moment (this process imported
    it at collection time, possibly minutes earlier)."""
    done = subprocess.run([sys.executable, "-c", _REFERENCE, str(REPO / "tests")],
                          input=json.dumps(load).encode(), capture_output=True, timeout=120, check=True)
    return json.loads(done.stdout)


def send_load(port: int, load: list[tuple[str, float, list[dict[str, Any]]]], timeout: float = 120.0,
              window: int = 20, pause: tuple[int, Any, Any] | None = None) -> int:
    """Send chunks over the forward protocol with acks (at most ``window``
    un-acked); returns the number of acked chunks.

    ``pause``: ``(n, reached, resume)``, two ``threading.Event``s: after the
    n-th chunk is written, set ``reached`` and wait for ``resume`` before
    sending the rest, so a test acts while chunks are in flight whatever
    the machine's speed."""
    sys.path.insert(0, str(REPO / "tests"))
    from util.upstream import Upstream, new_chunk_id, packed_frame

    up = Upstream(port, timeout=timeout)
    deadline = time.monotonic() + timeout
    try:
        sent = 0
        for tag, t, recs in load:
            while sent - len(up.acked_at) >= window and time.monotonic() < deadline:
                up.read_acks(len(up.acked_at) + 1, timeout=max(0.1, deadline - time.monotonic()))
            cid = new_chunk_id()
            up.sock.sendall(packed_frame(tag, recs, cid, t))
            sent += 1
            if pause is not None and sent == pause[0]:
                pause[1].set()
                pause[2].wait(max(0.1, deadline - time.monotonic()))
        return up.read_acks(sent, timeout=max(0.1, deadline - time.monotonic()))
    finally:
        up.close()


class Paused:
    """The load sender stopped after half the chunks (a window of them still
    un-acked) until ``resume()``: the test's fault lands mid-load however fast
    the machine is, instead of after a guessed sleep."""

    def __init__(self, port: int, load, window: int = 4) -> None:
        self.reached = threading.Event()
        self.resumed = threading.Event()
        self.result: dict[str, int] = {}
        pause = (len(load) // 2, self.reached, self.resumed)

        def run() -> None:
            try:
                self.result["acked"] = send_load(port, load, timeout=150, window=window, pause=pause)
            finally:
                self.reached.set()  # never leave the test waiting on a sender that died

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def wait_mid_load(self, timeout: float = 120.0) -> None:
        assert self.reached.wait(timeout), "the sender never got half-way"
        assert self.thread.is_alive() and "acked" not in self.result, "the sender stopped early"

    def resume(self) -> None:
        self.resumed.set()


@dataclass
class Collected:
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    workers: dict[str, set[str]] = field(default_factory=dict)   # source ip -> worker ids
    duplicates: int = 0
    messages: int = 0
    stamps: list[float] = field(default_factory=list)  # output messages' stream times

    def longest_gap(self) -> float:
        """Longest time between two consecutive output messages (seconds)."""
        s = sorted(self.stamps)
        return max((b - a for a, b in zip(s, s[1:])), default=0.0)


async def collect(urls: list[str], want: set[str], timeout: float, stream: str = "PROBETAG_OUT") -> Collected:
    """Read the output stream from the start until every rid in ``want`` is
    seen or ``timeout``; duplicates (same rid twice) are counted, not kept.
    Bounded as a whole: connecting and closing the NATS client get a grace
    period of their own, so a cluster that stopped answering fails the test
    instead of hanging it."""
    return await asyncio.wait_for(_collect(urls, want, timeout, stream), timeout + 60)


@contextlib.asynccontextmanager
async def _client(urls: list[str]) -> AsyncIterator[Any]:
    """A NATS client that reconnects through node restarts; closing it gets
    a bounded grace period (a cluster that stopped answering fails the
    caller's wait instead of hanging it)."""
    import nats

    nc = await nats.connect(servers=urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        yield nc
    finally:
        try:
            await asyncio.wait_for(nc.close(), 10)
        except asyncio.TimeoutError:
            pass


async def _collect(urls: list[str], want: set[str], timeout: float, stream: str) -> Collected:
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import AckPolicy, ConsumerConfig

    res = Collected()
    async with _client(urls) as nc:
        js = nc.jetstream(timeout=5)
        deadline = time.monotonic() + timeout
        # Creating the consumer is a JetStream API request: right after a node
        # restart the stream may still be electing a leader and the request
        # times out. Retry within the same deadline instead of failing.
        while True:
            try:
                sub = await js.pull_subscribe("logs.out.>", durable=None, stream=stream,
                                              config=ConsumerConfig(ack_policy=AckPolicy.NONE))
                break
            except (NatsTimeout, asyncio.TimeoutError):
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.5)
        while not want <= res.events.keys() and time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(500, timeout=1.0)
            except (NatsTimeout, asyncio.TimeoutError):
                continue
            for m in msgs:
                res.messages += 1
                res.stamps.append(m.metadata.timestamp.timestamp())
                worker = (m.headers or {}).get("Probetag-Worker", "?")
                for ev in output_events(m.headers or {}, m.data):
                    rid = ev.get("rid")
                    if rid in res.events:
                        res.duplicates += 1
                        continue
                    res.events[rid] = ev
                    src = ev.get("source_address") or ev.get("fromhost-ip") or "?"
                    res.workers.setdefault(src, set()).add(worker)
    return res


async def sweep(urls: list[str], stream: str = "PROBETAG_OUT") -> dict[str, dict[str, Any]]:
    """Every event the stream holds, read by sequence number from 1 to its
    last, each a request its leader answers (no consumer in between)."""
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.errors import NotFoundError

    out: dict[str, dict[str, Any]] = {}
    async with _client(urls) as nc:
        js = nc.jetstream(timeout=5)
        last = (await js.stream_info(stream)).state.last_seq
        seq = 1
        while seq <= last:
            try:
                m = await js.get_msg(stream, seq)
            except NotFoundError:
                seq += 1  # deleted or aged out: nothing there
                continue
            except (NatsTimeout, asyncio.TimeoutError):
                await asyncio.sleep(0.2)
                continue
            for ev in output_events(m.headers or {}, m.data or b""):
                out.setdefault(ev.get("rid"), ev)
            seq += 1
    return out


def output_events(headers: dict[str, str], data: bytes) -> list[dict[str, Any]]:
    """The events of one output message, either shape (``out_format``):
    packed entries get the tag from the header, as an NDJSON line has it."""
    if headers.get("Probetag-Format") == "packed":
        return [{"tag": headers["Probetag-Tag"], **rec} for _t, rec in _unpack_all(data)]
    return [json.loads(line) for line in data.splitlines()]


def _unpack_all(data: bytes) -> list[Any]:
    up = msgpack.Unpacker(raw=False, strict_map_key=False)
    up.feed(data)
    return list(up)


async def lease_owners(urls: list[str], bucket: str = "probetag_leases") -> dict[str, str]:
    """Partition key -> owner, as the bucket's stream leader has it: the
    keys from the stream's subject list, each key's last entry by a get the
    leader answers (a watcher's consumer, or a direct get from a replica
    still catching up after a restart, can show a partial or older set)."""
    import nats
    from nats.js.errors import NotFoundError

    stream = f"KV_{bucket}"
    prefix = f"$KV.{bucket}."
    nc = await nats.connect(servers=urls)
    try:
        js = nc.jetstream(timeout=5)
        info = await js.stream_info(stream, subjects_filter=prefix + ">")
        out: dict[str, str] = {}
        for subject in sorted(info.state.subjects or {}):
            key = subject[len(prefix):]
            if not key.startswith("p"):
                continue
            try:
                m = await js.get_msg(stream, subject=subject)
            except NotFoundError:
                continue
            if (m.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
                continue
            out[key] = (m.data or b"").decode()
        return out
    finally:
        await nc.close()


def wait_leases(urls: list[str], partitions: int, workers: int, timeout: float,
                settle: float = 3.0) -> dict[str, str]:
    """Until every partition is leased and spread over ``workers`` workers."""
    deadline = time.monotonic() + timeout
    owners: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            owners = asyncio.run(lease_owners(urls))
        except Exception:
            owners = {}
        per: dict[str, int] = {}
        for w in owners.values():
            per[w] = per.get(w, 0) + 1
        if len(owners) == partitions and len(per) == workers and max(per.values()) - min(per.values()) <= 1:
            # A claimed partition is fetched once nothing is in flight
            # (at once on a fresh cluster): let every worker get there.
            time.sleep(settle)
            return owners
        time.sleep(0.5)
    raise AssertionError(f"leases not balanced in {timeout}s: {owners}")


def compare(ref: dict[str, dict[str, Any]], got: dict[str, dict[str, Any]]) -> list[str]:
    """rids whose detection result (tag, probe fields) differs."""
    bad = []
    for rid, ev in ref.items():
        g = got.get(rid)
        if g is None or g.get("tag") != ev.get("tag") or g.get("probe") != ev.get("probe"):
            bad.append(rid)
    return bad


def check_delivered(urls: list[str], load: list[Any], ref: dict[str, dict[str, Any]],
                    timeout: float = 90) -> Collected:
    """Every record of ``load`` reached the egress stream as ``ref`` says it
    should (none lost, none different) -> what was collected."""
    want = {r["rid"] for _, _, recs in load for r in recs}
    got = asyncio.run(collect(urls, want, timeout=timeout))
    missing = want - got.events.keys()
    if missing:
        # The reading consumer saw all it will see. Read the stream itself,
        # message by message from its leader, before calling anything lost:
        # what the stream holds was delivered.
        held = asyncio.run(asyncio.wait_for(sweep(urls), 120))
        found = missing & held.keys()
        print(f"collect missed {len(missing)} records; the stream holds {len(found)} of them")
        for rid in found:
            got.events[rid] = held[rid]
        missing -= found
    assert not missing, f"{len(missing)} records lost, e.g. {sorted(missing)[:5]}"
    bad = compare(ref, got.events)
    assert bad == [], f"{len(bad)} differ, e.g. {bad[0]}: {ref[bad[0]]} != {got.events.get(bad[0])}"
    return got


# -- protocol events from the roles' logs and the servers ---------------------

def log_events(path: Path, event: str) -> list[dict[str, str]]:
    """The ``event=NAME`` lines of a role's logfmt log, as field dicts
    (values unquoted; enough for the fields probetag writes bare)."""
    import shlex

    out = []
    for line in path.read_text(errors="replace").splitlines():
        if f" event={event} " not in line + " ":
            continue
        fields: dict[str, str] = {}
        try:
            parts = shlex.split(line)
        except ValueError:
            parts = line.split()
        for part in parts:
            k, sep, v = part.partition("=")
            if sep:
                fields[k] = v
        out.append(fields)
    return out


async def stream_leader(urls: list[str], stream: str) -> str:
    """Server name of ``stream``'s current leader (KV bucket B: ``KV_B``)."""
    import nats

    nc = await nats.connect(servers=urls)
    try:
        info = await nc.jetstream(timeout=5).stream_info(stream)
        return info.cluster.leader
    finally:
        await nc.close()
