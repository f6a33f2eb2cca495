"""A downstream forward server for tests, behaving like Fluentd in_forward
(acks ``{"ack": chunk}`` once a request is accepted) with switchable faults.

It parses with ``probetag.forward.ServerConnection`` and runs on its own
event loop in a thread, so blocking test code can drive it. Faults, applied
by request number (0-based, across connections):

* ``ack_delay``: wait this long before acking (a slow downstream);
* ``nack_first=N``: answer the first N requests with ``{}`` and close
  (Vector's reject reply, FORWARD_NOTES §1);
* ``drop_first=N``: close the next N requests' connections without acking;
* ``wrong_ack_first=N``: ack the next N requests with an id that is not
  theirs (Fluentd out_forward treats it as a failed request);
* ``hold_acks()`` / ``release_acks()``: stop acking (records are still read
  until the socket buffers fill) and resume;
* ``restart()``: close the listener and every connection, reopen the same
  port after a pause (a downstream restarting mid-stream).

Every request is recorded with its records, the time it arrived and what was
done with it, so tests can check that every record was acked at least once,
count duplicates (retries) and compare ack times with upstream ack times.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from probetag._stage import unpacker_for
from probetag.forward import (
    CLOSED, NEED_DATA, Chunk, HandshakeReply, Heartbeat, Limits, ProtocolError,
    ServerConnection, ServerSecurity,
)

from .wait import wait_until


@dataclass
class Request:
    n: int
    tag: str
    chunk_id: Any
    records: list[tuple[Any, dict]]
    received_at: float
    mode: str = ""
    connection: int = 0
    outcome: str = "pending"  # acked | nacked | dropped | pending | lost
    acked_at: float | None = None


@dataclass
class Downstream:
    ack_delay: float = 0.0
    nack_first: int = 0
    drop_first: int = 0
    wrong_ack_first: int = 0
    shared_key: str | None = None
    ssl_context: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    errors: list[ProtocolError] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="downstream", daemon=True)
        self.lock = threading.Lock()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._release: asyncio.Event | None = None
        self._count = 0
        self.connections = 0

    # -- control (from the test thread) ----------------------------------------

    def _run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> "Downstream":
        self.thread.start()
        self._run(self._start())
        return self

    async def _start(self) -> None:
        if self._release is None:
            self._release = asyncio.Event()
            self._release.set()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port,
                                                  ssl=self.ssl_context, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop_server(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.close()
        self._writers.clear()

    def restart(self, pause: float = 0.3) -> None:
        self._run(self._stop_server())
        time.sleep(pause)
        self._run(self._start())

    def hold_acks(self) -> None:
        self.loop.call_soon_threadsafe(self._release.clear)  # type: ignore[union-attr]

    def release_acks(self) -> None:
        self.loop.call_soon_threadsafe(self._release.set)  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.thread.is_alive():
            self._run(self._stop_server())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)

    def __enter__(self) -> "Downstream":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- results -----------------------------------------------------------------

    def snapshot(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def acked_records(self) -> list[tuple[str, Any, dict]]:
        return [(r.tag, t, rec) for r in self.snapshot() if r.outcome == "acked" for t, rec in r.records]

    def wait_until(self, pred: Callable[[], bool], timeout: float = 20.0) -> bool:
        return wait_until(pred, timeout)

    # -- server ------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.connections += 1
        conn_no = self.connections
        peer = str(writer.get_extra_info("peername"))
        sec = ServerSecurity(self.shared_key, "downstream") if self.shared_key else None
        conn = ServerConnection(peer, limits=Limits(64 * 1024 * 1024, 256 * 1024 * 1024), security=sec)
        pending: set[asyncio.Task[None]] = set()
        try:
            first = conn.initial_bytes()
            if first:
                writer.write(first)
            while True:
                ev = conn.next_event()
                if ev is NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    continue
                if ev is CLOSED:
                    break
                if isinstance(ev, HandshakeReply):
                    writer.write(ev.data)
                    if not ev.ok:
                        break
                elif isinstance(ev, Heartbeat):
                    continue
                elif isinstance(ev, ProtocolError):
                    self.errors.append(ev)
                    if ev.fatal:
                        break
                elif isinstance(ev, Chunk):
                    req = self._record(ev, conn_no)
                    if req.n < self.nack_first:
                        req.outcome = "nacked"
                        writer.write(b"\x80")  # {}
                        await writer.drain()
                        break
                    if req.n < self.nack_first + self.drop_first:
                        req.outcome = "dropped"
                        break
                    if req.n < self.nack_first + self.drop_first + self.wrong_ack_first:
                        req.outcome = "wrong_ack"
                        writer.write(conn.ack_bytes("bm90LXlvdXJzLW5vdC15b3Vycw=="))
                        continue
                    t = asyncio.get_running_loop().create_task(self._ack(conn, writer, req))
                    pending.add(t)
                    t.add_done_callback(pending.discard)
            if pending:
                await asyncio.wait(list(pending), timeout=30)
        except (ConnectionError, OSError):
            pass
        finally:
            for t in pending:
                t.cancel()
            self._writers.discard(writer)
            writer.close()

    def _record(self, ev: Chunk, conn_no: int) -> Request:
        records = [(t, rec) for t, rec in unpacker_for(ev.entries)]
        with self.lock:
            req = Request(self._count, ev.tag, ev.chunk_id, records, time.monotonic(),
                          mode=ev.mode, connection=conn_no)
            self._count += 1
            self.requests.append(req)
        return req

    async def _ack(self, conn: ServerConnection, writer: asyncio.StreamWriter, req: Request) -> None:
        if self.ack_delay:
            await asyncio.sleep(self.ack_delay)
        assert self._release is not None
        await self._release.wait()
        if writer.is_closing():
            req.outcome = "lost"
            return
        if req.chunk_id is None:
            req.outcome = "acked"
            req.acked_at = time.monotonic()
            return
        req.acked_at = time.monotonic()
        req.outcome = "acked"
        writer.write(conn.ack_bytes(req.chunk_id))
