"""Module boundaries the layout promises (README "Layout"): outputs do not
need the stage, detection does not import the stage, and the Vector
mapping is not inside one input."""

from __future__ import annotations

import subprocess
import sys


def _loaded_after(stmt: str) -> set[str]:
    code = f"import sys; {stmt}; print(' '.join(m for m in sys.modules if m.startswith('probetag')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return set(out.stdout.split())


def test_outputs_do_not_import_the_stage_or_inputs():
    mods = _loaded_after("import probetag.outputs.forward_client, probetag.outputs.ndjson_client, "
                         "probetag.outputs.stdout")
    assert "probetag._chunk" in mods
    assert "probetag._stage" not in mods
    assert not any(m.startswith("probetag.inputs") for m in mods), sorted(mods)


def test_detection_reaches_the_accelerator_without_the_stage():
    # a 2-byte literal beside longer ones makes the hyperscan backend look
    # for its anchors with the accelerator's contains_any
    mods = _loaded_after("from probetag.detect._prefilter import LiteralSet; "
                         "LiteralSet([b'\\\\r', b'GET / HTTP']).find(b'x\\\\r')")
    assert "probetag._accel" in mods
    assert "probetag._stage" not in mods


def test_stage_reexports_the_chunk_type():
    from probetag import _chunk, _stage

    assert _stage.OutChunk is _chunk.OutChunk and _stage.unpacker_for is _chunk.unpacker_for
