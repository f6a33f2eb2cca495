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
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any


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
