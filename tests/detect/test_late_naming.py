"""A live stream's one-record chunks: a line its own chunk cannot name (it
needed lines that came later) has left untagged; when a later chunk brings
the lines that place it, its name goes into the scan's summary
(``named_late``) and the metric ``probes_named_late``. Real lines:
``tests/fixtures/corpus-dev`` as Fluentd ``in_tail`` ``none`` records, one
per chunk, through the stage ``serve`` runs.
"""

from __future__ import annotations

import collections
import json
from datetime import datetime, timezone
from pathlib import Path

import msgpack
import pytest

from probetag._config import config_from_mapping
from probetag._metrics import Metrics
from probetag._stage import Processor, event_time, unpacker_for
from probetag.detect import _enrich

FX = Path(__file__).resolve().parents[1] / "fixtures" / "corpus-dev"


def _labels(run: str) -> dict[int, str]:
    return {x["line"]: x["label"] for x in map(json.loads, (FX / "labels.jsonl").read_text().splitlines())
            if x["run"] == run and x["format"] == "traditional"}


def _when(raw: bytes) -> int:
    return int(datetime.strptime("2026 " + raw[:15].decode(), "%Y %b %d %H:%M:%S")
               .replace(tzinfo=timezone.utc).timestamp())


def _entry(raw: bytes, t: float | None = None) -> bytes:
    return msgpack.packb([event_time(int(_when(raw) if t is None else t), 0), {"message": raw}],
                         use_bin_type=True)


def _stream(run: str, metrics: Metrics) -> tuple[dict[int, str | None], list[dict], Processor]:
    """Every line of the run's file, one per chunk -> (line -> probe named
    at once, the summaries' named_late entries, the processor)."""
    proc = Processor(config_from_mapping({"actions": {"summaries": True}}), metrics)
    raw = (FX / run / "traditional.log").read_bytes().split(b"\n")
    at_once: dict[int, str | None] = {}
    for n, line in enumerate(raw, 1):
        if not line:
            continue
        res = proc.process("tail.none", _entry(line))
        recs = [r for ch in res.chunks if not ch.tag.startswith("probetag.") for _, r in unpacker_for(ch.entries)]
        assert len(recs) == 1
        at_once[n] = (recs[0].get("probe") or {}).get("name")
    late = []
    for ch in proc.flush():
        for _, rec in unpacker_for(ch.entries):
            late += rec["probe_summary"].get("named_late", [])
    return at_once, late, proc


def _times(run: str) -> dict[int, int]:
    raw = (FX / run / "traditional.log").read_bytes().split(b"\n")
    return {n: _when(line) for n, line in enumerate(raw, 1) if line}


@pytest.mark.parametrize("run, expected", [
    # GenericLines' two lone CRs open the scan; the line that places them,
    # GetRequest's, comes 5 s later in a chunk of its own. HELP4STOMP's
    # record kept nothing of its payload (it was all HOSTNAME and TAG).
    ("nmap_sV_all_tcp", {2: "GenericLines", 3: "GenericLines", 73: "HELP4STOMP"}),
    # escaping off: raw CRs are no literal the prefilter reads, but riak-pbc's
    # three NULs are, and only the next probe's line places them
    ("noescape_nmap_sV_all", {73: "HELP4STOMP", 108: "riak-pbc"}),
])
def test_lines_a_later_chunk_places_are_named_in_the_scan_summary(run, expected):
    m = Metrics()
    at_once, late, _proc = _stream(run, m)
    labels, times = _labels(run), _times(run)
    # (left untagged when they passed)
    assert all(at_once[n] is None for n in expected)
    # each late name is the label of a line of that second that left
    # untagged: none is wrong, none names a benign line
    waiting = collections.defaultdict(list)
    for n, name in at_once.items():
        if name is None:
            waiting[times[n]].append(labels[n])
    for x in late:
        assert x["scanner"] == "nmap" and x["id"].endswith("-" + x["probe"]), x
        assert x["probe"] in waiting[int(x["time"])], (x, waiting[int(x["time"])])
        waiting[int(x["time"])].remove(x["probe"])
    got = collections.Counter((int(x["time"]), x["probe"]) for x in late)
    want = collections.Counter((times[n], name) for n, name in expected.items())
    assert got & want == want, (got, want)
    assert m.get("probes_named_late", probe="GenericLines") == sum(x["probe"] == "GenericLines" for x in late)
    if run == "nmap_sV_all_tcp":
        frags = sorted(x["fragment"] for x in late if x["probe"] == "GenericLines")
        assert frags == [0, 1]


def test_a_benign_lone_cr_pair_is_held_but_never_named():
    # two bare CRs from a sender that never scans, then a scan from another
    m = Metrics()
    proc = Processor(config_from_mapping({"actions": {"summaries": True}}), m)
    for k in range(2):
        proc.process("tail.none", _entry(b"Dec  5 13:00:40 10.9.9.9 #015 "))
    raw = (FX / "nmap_sV_all_tcp" / "traditional.log").read_bytes().split(b"\n")
    for line in raw[3:40]:
        proc.process("tail.none", _entry(line))
    for ch in proc.flush():
        for _, rec in unpacker_for(ch.entries):
            s = rec["probe_summary"]
            assert s["source"] != "10.9.9.9"
            assert all(x["time"] != _when(b"Dec  5 13:00:40") for x in s.get("named_late", ()))


def test_what_waits_for_later_lines_is_bounded():
    m = Metrics()
    proc = Processor(config_from_mapping({}), m)
    enr = proc.enricher
    # whole-probe lines that name nothing alone (no scan): from one source,
    # then from many, over more event time than is kept
    for i in range(3 * _enrich._MAX_PENDING_SOURCE):
        proc.process("t", _entry(b"Dec  5 13:00:46 10.0.0.1 HELP#015 ", t=1000 + i * 0.1))
    assert enr._unnamed == _enrich._MAX_PENDING_SOURCE == len(enr._pending)
    for i in range(3 * _enrich._MAX_PENDING):
        proc.process("t", _entry(b"Dec  5 13:00:46 10.1.%d.%d HELP#015 " % (i // 250, i % 250), t=1100 + i * 0.1))
    assert len(enr._pending) == _enrich._MAX_PENDING
    assert m.get("late_pending") == _enrich._MAX_PENDING
    t_new = 1100 + (3 * _enrich._MAX_PENDING - 1) * 0.1
    proc.process("t", _entry(b"Dec  5 13:00:46 10.2.0.1 HELP#015 ", t=t_new + 2 * _enrich._PENDING_AGE))
    assert [x[1][1] for x in enr._pending] == ["10.2.0.1"]
    kept_total = 3 * _enrich._MAX_PENDING_SOURCE + 3 * _enrich._MAX_PENDING + 1
    assert m.get("late_pending_dropped") == kept_total - 1
    # bare-CR records skipped for want of a probe context: the last few, as bytes
    cr = b"".join(_entry(b"Dec  5 13:00:46 10.3.0.%d #015 " % (i % 250), t=5000 + i) for i in range(500))
    proc.process("t", cr)
    assert len(enr._held) == _enrich._MAX_HELD
    big = _entry(b"Dec  5 13:00:46 10.3.0.1 " + b"x" * 600 + b"#015 ", t=6000)
    proc.process("t", big)
    assert all(len(raw) <= _enrich._MAX_HELD_BYTES for _tag, raw in enr._held)
