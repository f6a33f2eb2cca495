"""inputs: where records enter probetag.

* ``forward_server.ForwardServer`` - the forward protocol (Fluentd, Fluent
  Bit, fluent-logger), acked.
* ``http.HttpInput`` - Vector's ``http`` sink (JSON array / NDJSON), answered
  after settling.
* ``ndjson.NdjsonInput`` - Vector's ``socket`` sink (NDJSON over TCP), no acks.
* ``exec_filter`` - ``probetag exec-filter`` for Fluentd's ``out_exec_filter``
  (stdin/stdout).

Every input turns what it receives into (tag, packed ``[time, record]``
entries) and hands it to the pipeline; the Vector mapping lives in
``probetag._vector`` (shared with the NDJSON output). Modules are imported
on first use, so ``probetag exec-filter`` does not load the servers.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ForwardServer", "HttpInput", "NdjsonInput", "ExecFilterCore"]

_WHERE = {"ForwardServer": "forward_server", "HttpInput": "http", "NdjsonInput": "ndjson",
          "ExecFilterCore": "exec_filter"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
