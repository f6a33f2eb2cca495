"""``probetag check-config FILE...`` and ``probetag config-reference``."""

from __future__ import annotations

import argparse
import sys

from ._config import ConfigError, load_config, reference


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="probetag check-config",
                                 description="Validate probetag YAML config files.")
    ap.add_argument("files", nargs="+", metavar="FILE")
    args = ap.parse_args(argv)
    bad = 0
    for f in args.files:
        try:
            load_config(f)
        except ConfigError as exc:
            bad += 1
            print(f"error: {exc}", file=sys.stderr)
        else:
            print(f"ok: {f}")
    return 1 if bad else 0


def reference_main(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="probetag config-reference",
                            description="Print every config key, its default and description.").parse_args(argv)
    for key, default, doc in reference():
        print(f"{key}\n    default: {default or '-'}\n    {doc}\n")
    return 0
