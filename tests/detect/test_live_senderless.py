"""A live stream's one-line chunks: a line whose HOSTNAME was the payload's
only word (``vp3``, xmlsysd's ``init``) has no sender and no lines around it
in its batch; it takes the sender whose scan named the latest line, when
that was recent. Real lines: ``tests/fixtures/corpus-dev/nmap_sV_all_tcp``
as Fluentd ``in_tail`` ``none`` records, one per chunk.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import msgpack

from probetag._config import config_from_mapping
from probetag._metrics import Metrics
from probetag._stage import Processor, event_time, unpacker_for

FX = Path(__file__).resolve().parents[1] / "fixtures" / "corpus-dev"
RAW = (FX / "nmap_sV_all_tcp" / "traditional.log").read_bytes().split(b"\n")
LABEL = {x["line"]: x["label"] for x in map(json.loads, (FX / "labels.jsonl").read_text().splitlines())
         if x["run"] == "nmap_sV_all_tcp" and x["format"] == "traditional"}


def _when(raw: bytes) -> int:
    return int(datetime.strptime("2026 " + raw[:15].decode(), "%Y %b %d %H:%M:%S")
               .replace(tzinfo=timezone.utc).timestamp())


def _one_per_chunk(numbers: list[int], proc: Processor) -> dict[int, str | None]:
    out = {}
    for n in numbers:
        raw = RAW[n - 1]
        entry = msgpack.packb([event_time(_when(raw), 0), {"message": raw}], use_bin_type=True)
        res = proc.process("tail.none", entry)
        recs = [r for ch in res.chunks if not ch.tag.startswith("probetag.") for _, r in unpacker_for(ch.entries)]
        assert len(recs) == 1
        out[n] = (recs[0].get("probe") or {}).get("name")
    return out


def test_a_lone_word_after_the_scans_last_line_is_named() -> None:
    assert RAW[111].endswith(b" vp3  ") and RAW[121].endswith(b" init  ")
    names = _one_per_chunk(list(range(105, 126)), Processor(config_from_mapping({}), Metrics()))
    for n in (112, 122):
        assert names[n] == LABEL[n], (n, RAW[n - 1])


def test_no_scan_or_an_old_one_lends_no_sender() -> None:
    proc = Processor(config_from_mapping({}), Metrics())
    assert _one_per_chunk([112], proc)[112] is None
    # the scan's lines, then the lone word more than the sequence gap later
    _one_per_chunk(list(range(105, 112)), proc)
    raw = RAW[111].replace(b"13:06:45", b"13:16:45")
    entry = msgpack.packb([event_time(_when(raw), 0), {"message": raw}], use_bin_type=True)
    res = proc.process("tail.none", entry)
    recs = [r for ch in res.chunks if not ch.tag.startswith("probetag.") for _, r in unpacker_for(ch.entries)]
    assert recs[0].get("probe") is None
