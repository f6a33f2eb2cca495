"""Connection bookkeeping shared by the Vector inputs (``http``, ``ndjson``).

Theory of operation
-------------------
* Each input keeps the asyncio tasks of its open connections in one set.
  ``admit`` adds the running connection's task and says whether that stays
  within ``listen.max_connections``; over the limit the task is taken out
  again and the caller refuses the peer (each connection may buffer up to a
  body or a line, so their number is bounded).
* ``close_listener`` stops accepting, cancels the open connections and waits
  for them (5 s at most) before waiting for the listener itself.
* ``close_writer`` closes one connection's transport and waits for it (2 s at
  most): a peer that never reads must not hold shutdown up. ``ssl.SSLError``
  is an ``OSError``, so a TLS close failure is covered too.
* ``peer_label`` is the ``host:port`` text used in these inputs' log lines.

The forward input does its own bookkeeping: it counts connections still in
their TLS handshake against the limit and refuses before registering.
"""

from __future__ import annotations

import asyncio
from typing import Any


def peer_label(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


def admit(conns: set[asyncio.Task[None]], limit: int) -> tuple[asyncio.Task[None], bool]:
    """Register the current connection task in ``conns``; False (and not
    registered) when that would make more than ``limit`` open."""
    task = asyncio.current_task()
    assert task is not None
    conns.add(task)
    if len(conns) > limit:
        conns.discard(task)
        return task, False
    return task, True


async def close_listener(server: Any, conns: set[asyncio.Task[None]]) -> None:
    if server is not None:
        server.close()
    for t in list(conns):
        t.cancel()
    if conns:
        await asyncio.wait(list(conns), timeout=5)
    if server is not None:
        await server.wait_closed()


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 2)
    except (OSError, asyncio.TimeoutError):
        pass
