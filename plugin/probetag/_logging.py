"""probetag's own log lines: one format for every component.

Its own module, importing nothing of probetag's and no asyncio, so that
``probetag explain`` logs the way ``serve`` does without loading the
runtime.

Every module logs through ``log_event(level, "event_name", k=v, ...)`` on the
``probetag`` logger or a ``probetag.*`` child of it; ``setup_logging`` puts
one handler on ``probetag`` that writes each line to stderr as logfmt
(``ts=2026-12-05T12:35:57.280Z level=info event=listening input=http ...``)
or, with ``log_format: json``, as one JSON object with the same fields.
"""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["log_event", "setup_logging", "route_library_logs"]

_log = logging.getLogger("probetag")


def _fmt_value(v: Any) -> str:
    s = v if isinstance(v, str) else str(v)
    if s and all(c.isprintable() and c not in ' "=\\' for c in s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def log_event(level: int, event: str, _logger: logging.Logger | None = None, **fields: Any) -> None:
    """Log ``event=NAME k=v ...`` (logfmt) on the ``probetag`` logger, or
    on ``_logger`` (a ``probetag.*`` child: same handler, same format). The
    fields also ride on the record, for ``log_format: json``."""
    log = _logger or _log
    if not log.isEnabledFor(level):
        return
    parts = [f"event={event}"]
    parts.extend(f"{k}={_fmt_value(v)}" for k, v in fields.items())
    log.log(level, " ".join(parts), extra={"probetag_event": (event, fields)})


class _LibraryHandler(logging.Handler):
    """A library's log records as ``event=library_log`` lines of probetag's
    handler: one line each, the exception's type and text instead of a
    traceback (a dropped connection is an event, not our bug)."""

    def emit(self, record: logging.LogRecord) -> None:
        fields: dict[str, Any] = {"logger": record.name, "msg": record.getMessage()[:300]}
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            fields["error"] = type(exc).__name__
            fields["detail"] = str(exc)[:200]
        log_event(record.levelno, "library_log", **fields)


def route_library_logs(name: str) -> None:
    """Send the ``name`` logger's records (a library's) through probetag's
    handler as logfmt/JSON lines; idempotent."""
    lib = logging.getLogger(name)
    if not any(isinstance(h, _LibraryHandler) for h in lib.handlers):
        lib.addHandler(_LibraryHandler())
    lib.propagate = False


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


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, [worker], event and its fields
    (a line not made by ``log_event`` carries its text as ``msg``)."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        import json

        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {"ts": f"{ts}.{int(record.msecs):03d}Z", "level": record.levelname.lower()}
        if self.worker is not None:
            out["worker"] = self.worker
        ev = getattr(record, "probetag_event", None)
        if ev is not None:
            out["event"] = ev[0]
            for k, v in ev[1].items():
                out.setdefault(k, v if isinstance(v, (int, float, bool)) or v is None else str(v))
        else:
            out["msg"] = record.getMessage()
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


_worker: int | None = None
_format = "logfmt"


def setup_logging(level: str = "info", worker: int | None = None, fmt: str | None = None,
                  timestamps: bool = True) -> None:
    """Log lines to stderr at ``level``, as logfmt (``ts=... level=...
    event=...``) or one JSON object per line (``fmt="json"``, config
    ``log_format``); every probetag component logs through this one
    handler. ``worker`` and ``fmt`` are kept for later calls (a reload);
    ``worker`` tags every line of a ``serve --workers`` process.
    ``timestamps=False`` leaves ``ts=`` out of logfmt lines (a one-shot
    command's stderr, which then reads the same from run to run)."""
    global _worker, _format
    if worker is not None:
        _worker = worker
    if fmt is not None:
        _format = fmt
    handler = logging.StreamHandler()
    handler.setFormatter(_JsonFormatter(_worker) if _format == "json" else _LogfmtFormatter(_worker, timestamps))
    _log.handlers[:] = [handler]
    _log.setLevel(level.upper())
    _log.propagate = False
