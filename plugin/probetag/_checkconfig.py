"""``probetag check-config FILE...`` and ``probetag config-reference``."""

from __future__ import annotations

import argparse
import sys

from ._config import check_config, reference


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="probetag check-config",
        description="Validate probetag YAML config files: everything `probetag serve` checks "
                    "before it starts (keys, types, ranges, rule templates, catalogue files, "
                    "allowlists, TLS files). Every error is printed as FILE:LINE: KEY: message.")
    ap.add_argument("files", nargs="+", metavar="FILE")
    args = ap.parse_args(argv)
    bad = 0
    for f in args.files:
        _, errors = check_config(f, resources=True)
        if errors:
            bad += 1
            for exc in errors:
                print(f"error: {exc}", file=sys.stderr)
            print(f"{f}: {len(errors)} error{'s' if len(errors) > 1 else ''}", file=sys.stderr)
        else:
            print(f"ok: {f}")
    return 1 if bad else 0


def reference_main(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="probetag config-reference",
                            description="Print every config key, its default and description.").parse_args(argv)
    for key, default, doc in reference():
        print(f"{key}\n    default: {default or '-'}\n    {doc}\n")
    return 0
