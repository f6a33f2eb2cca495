"""Command line: ``probetag serve | explain | exec-filter | check-config | config-reference``.

Each subcommand lives in its own module and is imported only when used, so
``probetag explain`` does not pay for the server's imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main"]

# subcommand -> (module, function that takes argv, one-line help)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": ("probetag._serve", "main", "run the stream processor (forward/HTTP/NDJSON in, forward/NDJSON/stdout out)"),
    "explain": ("probetag.explain", "main", "tell what scanner-probe lines in syslog files are"),
    "exec-filter": ("probetag.inputs.exec_filter", "main", "filter records on stdin/stdout for Fluentd out_exec_filter"),
    "check-config": ("probetag._checkconfig", "main", "validate probetag config files"),
    "config-reference": ("probetag._checkconfig", "reference_main", "print every config key with default and description"),
    "cluster": ("probetag.cluster._cli", "main", "run one role of a NATS JetStream cluster (ingress, worker, egress)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="probetag",
        description="Tags port-scanner service probes in log streams.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, _, help_text) in _COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    parser.add_argument("--version", action="version", version=f"probetag {_version()}")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    if argv[0] in ("--version", "-V"):
        print(f"probetag {_version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in _COMMANDS:
        parser.error(f"unknown command {name!r}")
    module, func, _ = _COMMANDS[name]
    fn = getattr(importlib.import_module(module), func)
    return int(fn(rest) or 0)


def _version() -> str:
    from . import __version__

    return __version__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
