#!/usr/bin/env python3
"""Coverage-guided fuzzing of probetag's input surfaces with atheris (libFuzzer).

Usage::

    python tools/fuzz/fuzz.py TARGET [CORPUS_DIR...] [libFuzzer flags]
    python tools/fuzz/fuzz.py forward -max_total_time=60 -rss_limit_mb=1024 -timeout=5

TARGET is one of ``targets.TARGETS`` (forward, forward_handshake, http,
ndjson, decoders, config, exec_filter); ``tools/fuzz/corpus/TARGET`` is
its checked-in seed corpus (copy it: libFuzzer writes what it finds into
the first corpus folder). The targets are the same functions the
Hypothesis suite drives (``tests/fuzz``): a crash is any exception they do
not expect, ``-timeout`` catches hangs, ``-rss_limit_mb`` unbounded memory.
libFuzzer prints ``Done N runs`` at the end; a crash writes ``crash-*``
with the input (replay: ``fuzz.py TARGET crash-FILE``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Coverage feedback from the decoders that read peer bytes; the stage and the
# detector behind them still run on every input, uninstrumented (compiling
# the catalogue under instrumentation would cost seconds per start).
with atheris.instrument_imports(include=["probetag.forward", "probetag.inputs", "probetag.decode",
                                         "probetag._config", "targets", "yaml"]):
    import targets


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in targets.TARGETS:
        sys.exit(f"usage: {argv[0]} TARGET [libFuzzer args]; targets: {', '.join(targets.TARGETS)}")
    fn = targets.TARGETS[argv[1]]
    targets.processor()  # build the stage before fuzzing starts
    atheris.Setup([argv[0]] + argv[2:], fn)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
