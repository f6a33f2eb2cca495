"""``probetag serve`` in-process: the Service on its own event loop in a thread."""

from __future__ import annotations

import asyncio
import io
import threading
from typing import Any, Callable

from probetag._config import Config, config_from_mapping
from probetag._metrics import Metrics
from probetag._serve import Service


class LockedBuffer(io.RawIOBase):
    """A thread-safe binary sink standing in for stdout."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._lock = threading.Lock()
        self.flushes = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        with self._lock:
            self._buf += bytes(b)
        return len(b)

    def flush(self) -> None:
        self.flushes += 1

    def getvalue(self) -> bytes:
        with self._lock:
            return bytes(self._buf)

    def lines(self) -> list[bytes]:
        return [ln for ln in self.getvalue().split(b"\n") if ln]


class ServiceThread:
    """``with ServiceThread(cfg) as svc: svc.port ...``; stop drains."""

    def __init__(self, config: Config | dict[str, Any], drain_timeout: float = 5.0) -> None:
        if isinstance(config, dict):
            config = config_from_mapping(config)
        self.config = config
        self.metrics = Metrics()
        self.stdout = LockedBuffer()
        self.drain_timeout = drain_timeout
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="probetag-serve", daemon=True)
        self.service = Service(config, self.metrics, stdout=self.stdout)  # type: ignore[arg-type]
        self.port = 0
        self.drained: bool | None = None

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run ``fn`` on the service loop and return its result."""
        async def wrap() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout)

    def start(self) -> "ServiceThread":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.service.start(), self.loop).result(10)
        self.port = self.service.listen_port
        return self

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        try:
            fut = asyncio.run_coroutine_threadsafe(self.service.stop(self.drain_timeout), self.loop)
            self.drained = fut.result(self.drain_timeout + 15)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    def __enter__(self) -> "ServiceThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
