"""``probetag check-config FILE...`` and ``probetag config-reference``."""

from __future__ import annotations

import argparse
import sys

from ._config import Config, ConfigError, check_config, reference


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
        cfg, errors = check_config(f, resources=True)
        if cfg is not None and not errors:
            errors = _build(cfg, f)
        if errors:
            bad += 1
            for exc in errors:
                print(f"error: {exc}", file=sys.stderr)
            print(f"{f}: {len(errors)} error{'s' if len(errors) > 1 else ''}", file=sys.stderr)
        else:
            print(f"ok: {f}")
    return 1 if bad else 0


def _build(cfg: Config, file: str) -> list[ConfigError]:
    """Build the detection stage as ``serve`` does at start (compile the
    catalogue and signatures, the rules): whatever the checks above missed
    shows here, as an error of the file, not as a traceback."""
    from ._metrics import Metrics
    from ._stage import Processor

    try:
        Processor(cfg, Metrics())
    except ConfigError as exc:
        return [exc if exc.file else ConfigError(exc.reason, file=file, key=exc.key)]
    except Exception as exc:  # noqa: BLE001 - reported, never a traceback
        return [ConfigError(f"detection does not build: {type(exc).__name__}: {exc}", file=file)]
    return []


def reference_main(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="probetag config-reference",
                            description="Print every config key, its default and description.").parse_args(argv)
    for key, default, doc in reference():
        print(f"{key}\n    default: {default or '-'}\n    {doc}\n")
    return 0
