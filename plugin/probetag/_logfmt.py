"""Log lines as logfmt (``ts=... level=... event=NAME k=v ...``) on stderr.

Its own module, importing nothing of probetag's and no asyncio, so that
``probetag explain`` logs the way ``serve`` does without loading the
runtime.
"""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["log_event", "setup_logging"]

_log = logging.getLogger("probetag")


def _fmt_value(v: Any) -> str:
    s = v if isinstance(v, str) else str(v)
    if s and all(c.isprintable() and c not in ' "=\\' for c in s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def log_event(level: int, event: str, **fields: Any) -> None:
    """Log ``event=NAME k=v ...`` (logfmt) on the ``probetag`` logger."""
    if not _log.isEnabledFor(level):
        return
    parts = [f"event={event}"]
    parts.extend(f"{k}={_fmt_value(v)}" for k, v in fields.items())
    _log.log(level, " ".join(parts))


class _LogfmtFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None, timestamps: bool = True) -> None:
        super().__init__()
        self.worker = f" worker={worker}" if worker is not None else ""
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        line = f"level={record.levelname.lower()}{self.worker} {record.getMessage()}"
        if self.timestamps:
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            line = f"ts={ts}.{int(record.msecs):03d}Z {line}"
        if record.exc_info:
            line += " exc=" + _fmt_value(self.formatException(record.exc_info))
        return line


_worker: int | None = None


def setup_logging(level: str = "info", worker: int | None = None, timestamps: bool = True) -> None:
    """Log lines to stderr at ``level``; ``worker`` (kept for later calls,
    e.g. a reload) tags every line of a ``serve --workers`` process.
    ``timestamps=False`` leaves ``ts=`` out (a one-shot command's stderr,
    which then reads the same from run to run)."""
    global _worker
    if worker is not None:
        _worker = worker
    handler = logging.StreamHandler()
    handler.setFormatter(_LogfmtFormatter(_worker, timestamps))
    _log.handlers[:] = [handler]
    _log.setLevel(level.upper())
    _log.propagate = False
