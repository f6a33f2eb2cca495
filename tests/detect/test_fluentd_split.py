"""Lines Fluentd's RFC 3164 parser split so that bytes are gone: the run of
spaces after the ident (`` *``), and a TAG rsyslog cut at 510 bytes inside an
escape (``#`` | ``000``). Real records:
``tests/fixtures/corpus-dev/fluentd_tail_rfc3164_spaces.jsonl`` (its README).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from probetag.decode import rebuild
from probetag.detect import Detector, load_catalogue

FX = Path(__file__).resolve().parents[1] / "fixtures" / "corpus-dev" / "fluentd_tail_rfc3164_spaces.jsonl"
ROWS = {r["source_line"]: r for r in map(json.loads, FX.read_text().splitlines())}
DET = Detector(load_catalogue())


def _record(n: int) -> dict[str, bytes]:
    return {k: base64.b64decode(v["b64"]) if isinstance(v, dict) else v.encode()
            for k, v in ROWS[n]["record"].items()}


@pytest.mark.parametrize("n", sorted(ROWS))
def test_named_after_the_probe_sent(n: int) -> None:
    rb = rebuild(_record(n))
    assert rb is not None and rb.lossy
    _line, matches = DET.match_best((rb.line, *rb.alternatives), lossy=True)
    sure = [m for m in matches if not m.ambiguous]
    assert sure and sure[0].signature.probe == ROWS[n]["label"], (n, [m.signature.probe for m in matches])


def test_a_510_byte_ident_goes_on_in_message_without_a_separator() -> None:
    rec = _record(79)
    assert len(rec["ident"]) == 510 and rec["ident"].endswith(b"#") and rec["message"].startswith(b"000")
    rb = rebuild(rec)
    assert b"\x88\x00\x00\x00\x01" in rb.line and b"#" not in rb.line[:600]


def test_only_spaces_fill_the_gap() -> None:
    # the same record with a letter where the spaces were is no match
    sig = next(s for s in load_catalogue() if s.probe == "ibm-db2-das" and s.transport == "tcp")
    piece = DET.logged_pieces(sig.id)[0]
    run = piece.index(b"      ")
    whole = piece[:run] + b" " + piece[run:].lstrip(b" ")
    assert any(m.signature.id == sig.id for m in DET.match(whole, lossy=True))
    other = piece[:run] + b" X" + piece[run:].lstrip(b" ")
    assert not any(m.signature.id == sig.id for m in DET.match(other, lossy=True))


def test_a_tag_cut_at_32_bytes_then_a_run_of_spaces() -> None:
    # in_syslog (rsyslog's forward template cut the TAG at 32 bytes; Fluentd
    # dropped the 38 spaces after it): ibm-mqseries, tests/fixtures/corpus-dev
    path = FX.parent / "fluentd_in_syslog_nmap_sV_all_tcp.jsonl"
    row = next(r for r in map(json.loads, path.read_text().splitlines()) if r["source_line"] == 94)
    rec = {k: base64.b64decode(v["b64"]) if isinstance(v, dict) else v.encode() for k, v in row["record"].items()}
    rb = rebuild(rec)
    assert rb.lossy
    _line, matches = DET.match_best((rb.line, *rb.alternatives), lossy=True)
    sure = [m for m in matches if not m.ambiguous]
    assert sure and sure[0].signature.probe == row["label"] == "ibm-mqseries"
