"""Which fast paths this process runs: the C walker and the literal matcher.

Theory of operation
-------------------
* ``speedups`` is the C accelerator (``probetag._speedups``, built by
  ``setup.py`` when a C compiler and the Python headers are there) or None.
  It is loaded here, in a module that imports nothing of probetag's, so the
  stage (entry walk) and the prefilter (anchor search) both reach it without
  importing each other. ``PROBETAG_PURE=1`` forces the pure-Python walk; a
  stale build of an older ``_speedups.c`` (wrong ``API_VERSION``) is ignored.
* ``matcher_backend()`` is the multi-literal matcher the prefilter and the
  engine pick by default: hyperscan where it is installed (a dependency on
  Linux x86_64), else pyahocorasick (a dependency everywhere). Both scan a
  chunk in C. The regex reference (``"re"``) is never picked by default: one
  alternation of ~1,400 literals in a look-ahead runs some 400 times slower
  and made the delivery path time out; it is kept only as the oracle the
  tests compare the fast backends with.
* ``describe()`` is what ``serve`` and ``explain`` log at start
  (``event=matcher backend=hyperscan walker=c``), ``slow_paths()`` what they
  warn about.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["speedups", "SPEEDUPS_API", "WALK_BACKEND", "matcher_backend", "fast_backends",
           "describe", "slow_paths", "log_start"]

#: The ``API_VERSION`` of ``_speedups.c`` this package expects.
SPEEDUPS_API = 7


def _load_speedups() -> Any:
    if os.environ.get("PROBETAG_PURE", "") not in ("", "0"):
        return None
    try:
        from . import _speedups  # type: ignore[attr-defined]
    except ImportError:  # built without a C compiler: the pure path
        return None
    if getattr(_speedups, "API_VERSION", None) != SPEEDUPS_API:
        return None  # a stale build of an older _speedups.c: rebuild with pip install .
    return _speedups


speedups = _load_speedups()
#: "c" when the chunk walk runs in ``_speedups``, else "python".
WALK_BACKEND = "c" if speedups is not None else "python"


def fast_backends() -> tuple[str, ...]:
    """The installed multi-literal matchers that scan in C, best first."""
    out = []
    try:
        import hyperscan  # noqa: F401
        out.append("hyperscan")
    except ImportError:  # pragma: no cover - not on every platform
        pass
    try:
        import ahocorasick  # noqa: F401
        out.append("ahocorasick")
    except ImportError:  # pragma: no cover - a dependency: a broken install
        pass
    return tuple(out)


def matcher_backend() -> str:
    """The default matcher; ImportError when no fast one is installed."""
    fast = fast_backends()
    if not fast:
        raise ImportError("no multi-literal matcher installed: probetag needs pyahocorasick "
                          "(or hyperscan); reinstall with pip install probetag")
    return fast[0]


def _default() -> str:
    fast = fast_backends()
    return fast[0] if fast else "none"


def describe(backend: str | None = None) -> dict[str, str]:
    """The start-up log line's fields."""
    return {"backend": backend or _default(), "walker": WALK_BACKEND}


def slow_paths(backend: str | None = None) -> list[str]:
    """Why this process runs slower than it could (empty when it does not)."""
    out = []
    if WALK_BACKEND != "c":
        why = ("PROBETAG_PURE is set" if os.environ.get("PROBETAG_PURE", "") not in ("", "0")
               else "probetag._speedups is not built (no C compiler or Python headers at install)")
        out.append(f"pure-Python chunk walk: {why}")
    b = backend or _default()
    if b == "none":
        out.append("no multi-literal matcher installed (pyahocorasick is a dependency: reinstall probetag)")
    elif b not in ("hyperscan", "ahocorasick"):
        out.append(f"matcher {b} is a slow reference backend")
    return out


def log_start(backend: str | None = None) -> None:
    """``event=matcher backend=... walker=...`` and a warning per slow path."""
    import logging

    from ._logging import log_event

    log_event(logging.INFO, "matcher", **describe(backend))
    for why in slow_paths(backend):
        log_event(logging.WARNING, "slow_path", reason=why)
