"""Plumbing shared by the network and stdout outputs.

Theory of operation
-------------------
* ``client_ssl_context`` builds the TLS context of a client output from the
  ``output.tls`` section: the given CA file (or the system store), checks
  off only when ``verify`` is false, a client certificate when configured.
* ``stop_sender`` cancels an output's sender task on ``close()`` and waits
  for it; whatever the task ends with is already counted by the task itself,
  so close() never raises from it. The caller then fails what is still
  queued with its own ``OutputClosed`` message.
* ``SendQueue`` sits between ``send()`` and the sender task: each chunk waits
  in it with the future its ``send()`` awaits, in arrival order (the
  forward output takes them out in its fair order across upstream peers,
  each peer's own in arrival order). The sender sleeps on an event while
  it is empty; a future already done means its
  waiter was cancelled (shutdown), and the sender skips that chunk.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from .._chunk import OutChunk


def client_ssl_context(tls: Any) -> ssl.SSLContext:
    if tls.ca_file:
        ctx = ssl.create_default_context(cafile=tls.ca_file)
    else:
        ctx = ssl.create_default_context()
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.cert_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    return ctx


async def stop_sender(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass


@dataclass(slots=True)
class Queued:
    chunk: OutChunk
    future: asyncio.Future[None]


class SendQueue:
    def __init__(self) -> None:
        self.items: deque[Queued] = deque()
        self._wakeup = asyncio.Event()

    async def put(self, chunk: OutChunk) -> None:
        """Queue ``chunk`` and wait until the sender settles it."""
        await self.put_nowait(chunk)

    def put_nowait(self, chunk: OutChunk) -> asyncio.Future[None]:
        """Queue ``chunk``; the future is settled by the sender (cancelling
        it takes the chunk back if the sender has not taken it yet)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.items.append(Queued(chunk, fut))
        self._wakeup.set()
        return fut

    async def wait(self) -> None:
        """Until something is queued."""
        while not self.items:
            self._wakeup.clear()
            await self._wakeup.wait()

    def fail_all(self, error: Callable[[], BaseException]) -> None:
        """Empty the queue, failing each waiting ``send()`` with ``error()``."""
        while self.items:
            item = self.items.popleft()
            if not item.future.done():
                item.future.set_exception(error())
