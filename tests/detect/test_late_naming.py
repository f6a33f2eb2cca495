"""A live stream's one-record chunks: a line its own chunk cannot name (it
needed lines that came later) has left untagged; when a later chunk brings
the lines that place it, its name goes into the scan's summary
(``named_late``) and the metric ``probes_named_late``. Real lines:
``tests/fixtures/corpus-dev`` as Fluentd ``in_tail`` ``none`` records, one
per chunk, through the stage ``serve`` runs.
"""

from __future__ import annotations

import base64
import collections
import json
from datetime import datetime, timezone
from pathlib import Path

import msgpack
import pytest

from probetag._config import config_from_mapping
from probetag._metrics import Metrics
from probetag import _stage
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


def _fluentd_rows(name: str) -> list[tuple[int, str, bytes]]:
    """(line, tag, entry) of a real Fluentd's records of a run."""
    out = []
    for row in map(json.loads, (FX / name).read_text().splitlines()):
        rec = {}
        for k, v in row["record"].items():
            raw = base64.b64decode(v["b64"]) if isinstance(v, dict) else v.encode("utf-8")
            rec[k] = raw if row["value_types"][k].startswith("bin") else raw.decode("utf-8", "surrogateescape")
        out.append((row["source_line"], row["tag"], msgpack.packb([event_time(*row["time"]), rec], use_bin_type=True)))
    return out


def _scan_head_stream(kind: str) -> list[tuple[int, str, bytes]]:
    if kind == "in_tail rfc3164":
        return _fluentd_rows("fluentd_tail_rfc3164_noescape_head.jsonl")
    # in_tail with no parser: Fluentd's chomp removes a CR at a line's end
    raw = (FX / "noescape_nmap_sV_all" / "traditional.log").read_bytes().split(b"\n")
    return [(n, "tail.none", _entry(line[:-1] if line.endswith(b"\r") else line))
            for n, line in enumerate(raw, 1) if line]


def _live(rows: list[tuple[int, str, bytes]], m: Metrics) -> tuple[dict[int, dict | None], dict[int, float],
                                                                   list[dict], list[dict]]:
    """Each entry its own chunk -> (line -> probe map given at once, line ->
    event time, the summaries' named_late entries, the summaries)."""
    proc = Processor(config_from_mapping({"actions": {"summaries": True}}), m)
    at_once: dict[int, dict | None] = {}
    when: dict[int, float] = {}
    for n, tag, entry in rows:
        res = proc.process(tag, entry)
        recs = [r for ch in res.chunks if not ch.tag.startswith("probetag.") for _, r in unpacker_for(ch.entries)]
        assert len(recs) == 1
        at_once[n] = recs[0].get("probe")
        t, _rec = msgpack.unpackb(entry, raw=False, unicode_errors="surrogateescape")
        when[n] = int.from_bytes(t.data[:4], "big") + int.from_bytes(t.data[4:], "big") / 1e9
    summaries = [rec["probe_summary"] for ch in proc.flush() for _, rec in unpacker_for(ch.entries)]
    late = [x for s in summaries for x in s.get("named_late", [])]
    return at_once, when, late, summaries


def _by_protocol(p: dict | None) -> bool:
    return p is not None and p["scanner"] == "unknown"


@pytest.mark.parametrize("kind", ["in_tail rfc3164", "in_tail none"])
def test_the_scan_head_before_its_first_distinctive_line_is_named_late(kind):
    # rsyslog's escaping off, one record per chunk: nmap's first probes
    # (GenericLines' raw CRs, request lines whose CR Fluentd chomped) hold
    # no literal and pass unread, each alone in its chunk; the first line
    # the prefilter reads comes later. Its window before reaches back into
    # the records kept from the chunks before it.
    run = "noescape_nmap_sV_all"
    labels, m = _labels(run), Metrics()
    got, when, late, _summaries = _live(_scan_head_stream(kind), m)
    at_once = {n: (p or {}).get("name") for n, p in got.items()}
    # the scan's head: its probe lines before the first one named at once
    first = min(n for n, name in at_once.items() if name is not None and name == labels[n])
    head = [n for n in sorted(at_once) if n < first and labels[n] != "benign" and at_once[n] is None]
    assert len(head) >= 4 and {labels[n] for n in head} >= {"GenericLines", "GetRequest"}
    # every head line is named late with its label; no late name is wrong
    # (a name that refines a protocol's, ``was``: of a line that left so)
    waiting = collections.defaultdict(list)
    for n, p in got.items():
        if p is None or _by_protocol(p):
            waiting[(when[n], p and p["name"])].append(labels[n])
    for x in late:
        key = (x["time"], x.get("was"))
        assert x["scanner"] == "nmap" and x["id"] == "nmap-tcp-" + x["probe"], x
        assert x["probe"] in waiting[key], (x, waiting[key])
        waiting[key].remove(x["probe"])
    named = collections.Counter((x["time"], x["probe"]) for x in late)
    want = collections.Counter((when[n], labels[n]) for n in head)
    assert named & want == want, (sorted(named), sorted(want))
    assert m.get("neighbours_read_back") >= len(head)


def test_a_line_named_by_its_protocol_is_refined_late_by_its_place_in_the_scan():
    # in_tail none, escaping off, one record per chunk: HTTPOptions'
    # ``OPTIONS / HTTP/1.0`` (its CR chomped) and the CR after it are named
    # at once by protocol (http-request, scanner unknown); the scan's later
    # lines place them as nmap's probe. A line of the same second from a
    # sender that never scans, named so too, stays as it left.
    run = "noescape_nmap_sV_all"
    labels, m = _labels(run), Metrics()
    rows = _scan_head_stream("in_tail none")
    other = b"Dec  5 13:01:01 10.9.9.9 OPTIONS / HTTP/1.0"
    k = next(k for k, (n, _tag, _e) in enumerate(rows) if labels[n] == "HTTPOptions")
    rows.insert(k + 1, (0, rows[k][1], _entry(other)))
    labels[0] = "benign"
    got, when, late, summaries = _live(rows, m)
    assert got[0] is not None and got[0]["source"] == "10.9.9.9" and _by_protocol(got[0])
    left = {n: p["name"] for n, p in got.items() if _by_protocol(p) and labels[n] != "benign"}
    assert len(left) >= 2 and {labels[n] for n in left} == {"HTTPOptions"}
    refined = [x for x in late if "was" in x]
    # each refinement is the label of a line of its time that left named by
    # that protocol; every such line of the scan is refined
    waiting = collections.defaultdict(list)
    for n, name in left.items():
        waiting[(when[n], name)].append(labels[n])
    for x in refined:
        key = (x["time"], x["was"])
        assert x["scanner"] == "nmap" and x["id"] == "nmap-tcp-" + x["probe"], x
        assert x["probe"] in waiting[key], (x, waiting[key])
        waiting[key].remove(x["probe"])
    assert not any(waiting.values()), dict(waiting)
    assert sorted(x["fragment"] for x in refined) == [0, 1]
    assert m.get("probes_named_late", probe="HTTPOptions") == len(refined)
    # the other sender's line: no entry, and its scan is as it left
    assert not [x for x in late if x["time"] == when[0]]
    mine = [s for s in summaries if s["source"] == "10.9.9.9"]
    assert mine and all(s["probes"] == {"http-request": 1} and "named_late" not in s for s in mine)
    # the scanning sender's count moved from the protocol to the probe
    scan = next(s for s in summaries if s["source"] == "127.0.0.1")
    assert "http-request" not in scan["probes"] and scan["probes"]["HTTPOptions"] >= 1


def test_only_a_protocol_line_some_probe_leaves_waits_to_be_refined():
    # every web client's header lines are named by protocol too: none is a
    # piece of a scanner's probe, and none is kept to be placed
    seq = Processor(config_from_mapping({}), Metrics()).enricher.sequence
    assert seq is not None

    def line(core: bytes) -> tuple:
        return (0.0, "10.8.8.8", core, (), False, False, False, False)
    assert seq.could_place(line(b"OPTIONS / HTTP/1.0")) and seq.could_place(line(b"\r"))
    assert not seq.could_place(line(b"Host: www.example.com\r"))
    assert not seq.could_place(line(b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r"))


def test_what_is_kept_for_the_next_chunks_window_is_bounded():
    proc = Processor(config_from_mapping({}), Metrics())
    benign = [_entry(b"Dec  5 13:00:40 vm app[1]: request %d served" % i, t=100 + i) for i in range(1000)]
    proc.process("t", b"".join(benign))
    # the chunk's last entries only, as their own bytes
    assert proc._tail_entries() == benign[-_stage._NEIGHBOURS_BEFORE:]
    assert sum(len(piece[0]) for piece in proc._tail) <= _stage._NEIGHBOURS_BEFORE * _stage._TAIL_BYTES
    long = _entry(b"Dec  5 13:00:41 vm app[1]: " + b"x" * _stage._TAIL_BYTES, t=2000)
    proc.process("t", long)
    tail = proc._tail_entries()
    assert len(tail) == _stage._NEIGHBOURS_BEFORE and tail[-1] is None
    assert sum(len(piece[0]) for piece in proc._tail) <= _stage._NEIGHBOURS_BEFORE * _stage._TAIL_BYTES
    # a record the prefilter read is not kept (it is in the late path already)
    proc.process("t", _entry(b"Dec  5 13:00:42 10.0.0.1 HELP#015 ", t=2001))
    assert proc._tail_entries()[-1] is None


def test_kept_records_of_another_sender_are_read_but_never_named():
    # short records of a sender that never scans (a lone CR among them) go
    # by just before a scan's first distinctive line, each in its chunk
    m = Metrics()
    proc = Processor(config_from_mapping({"actions": {"summaries": True}}), m)
    rows = _fluentd_rows("fluentd_tail_rfc3164_noescape_head.jsonl")
    labels = _labels("noescape_nmap_sV_all")
    first = next(k for k, (n, _tag, _e) in enumerate(rows) if labels[n] == "RPCCheck")
    tag = rows[first][1]
    for k, payload in enumerate([b"\r", b"ok", b"\r", b"GET", b"/", b"HTTP/1.0", b"\r", b"done"]):
        rec = {"host": b"10.9.9.9", "ident": payload, "message": b""}
        proc.process(tag, msgpack.packb([event_time(1796475670, k), rec], use_bin_type=True))
    for _n, tag, entry in rows[first:]:
        proc.process(tag, entry)
    assert m.get("neighbours_read_back") == 8
    for ch in proc.flush():
        for _, rec in unpacker_for(ch.entries):
            s = rec["probe_summary"]
            assert s["source"] != "10.9.9.9"
            assert not [x for x in s.get("named_late", ()) if int(x["time"]) == 1796475670]


def test_kept_entries_of_a_reused_buffer_are_copies():
    # an input may hand the stage a view of a buffer it reuses: what is kept
    # for the next chunk must not change when that buffer does
    proc = Processor(config_from_mapping({}), Metrics())
    benign = [_entry(b"Dec  5 13:00:40 vm app[1]: request %d served" % i, t=100 + i) for i in range(20)]
    buf = bytearray(b"".join(benign))
    proc.process("t", buf)
    kept = proc._tail_entries()
    assert kept == benign[-_stage._NEIGHBOURS_BEFORE:]
    assert all(type(x) is bytes for x in kept) and all(type(piece[0]) is bytes for piece in proc._tail)
    buf[:] = b"\x00" * len(buf)
    assert proc._tail_entries() == benign[-_stage._NEIGHBOURS_BEFORE:]


def _bound_by_every_line(keep, new):
    """The kept lines' bounds applied to every line at each addition: what
    ``Enricher._add_pending`` keeps by counts. Returns (kept, unnamed dropped)."""
    keep = sorted([*keep, *new], key=lambda x: x[0]) if keep and new[0][0] < keep[-1][0] else [*keep, *new]
    newest = keep[-1][0]
    dropped = sum(1 for x in keep if x[0] < newest - _enrich._PENDING_AGE and x[2] is None)
    keep = [x for x in keep if x[0] >= newest - _enrich._PENDING_AGE]
    if len(keep) > _enrich._MAX_ANCHORS_KEPT:
        waits = {x[1][1] for x in keep if x[2] is None}
        seen: dict = {}
        out = []
        for x in reversed(keep):
            src = x[1][1]
            c = seen.get(src, 0)
            if c >= (_enrich._MAX_PENDING_SOURCE if src in waits else _enrich._MAX_ANCHORS_KEPT):
                dropped += x[2] is None
                continue
            seen[src] = c + 1
            out.append(x)
        keep = out[::-1]
    if len(keep) > _enrich._MAX_PENDING:
        dropped += sum(1 for x in keep[:len(keep) - _enrich._MAX_PENDING] if x[2] is None)
        keep = keep[len(keep) - _enrich._MAX_PENDING:]
    return keep, dropped


@pytest.mark.parametrize("seed", range(40))
def test_the_kept_lines_bounds_kept_by_counts_are_the_bounds_of_every_line(seed):
    import random

    rng = random.Random(seed)
    m = Metrics()
    enr = Processor(config_from_mapping({}), m).enricher
    sources = [None, *(f"10.0.0.{k}" for k in range(rng.choice([1, 3, 12, 40])))]
    want: list = []
    want_dropped = 0
    t = 1000.0
    p_named = rng.choice([0.1, 0.7, 0.95])
    for _step in range(600):
        if want and rng.random() < 0.15:
            # a waiting line named late, maybe for another sender
            k = rng.randrange(len(enr._pending))
            if enr._pending[k][2] is None:
                src = rng.choice(sources)
                enr._name_kept(k, src, "sig", 0)
                want[k] = (want[k][0], (want[k][0], src, b"", (), False, False), ("sig", 0), None)
            continue
        new = []
        for _ in range(rng.choice([1, 1, 2, 9])):
            # (mostly small steps: the age bound drops a few lines at a time)
            t += rng.choice([0.0, 0.05, 0.3, 1.0]) if rng.random() < 0.99 else rng.choice([-5.0, 70.0])
            src = rng.choice(sources[:rng.choice([1, 3, len(sources)])])
            named = ("sig", 0) if rng.random() < p_named else None
            new.append((t, (t, src, b"x", (), False, False), named, None))
        new.sort(key=lambda x: x[0])
        enr._add_pending(new)
        want, d = _bound_by_every_line(want, new)
        want_dropped += d
        assert enr._pending == want
        assert enr._unnamed == sum(1 for x in want if x[2] is None) == m.get("late_pending")
        assert m.get("late_pending_dropped") == want_dropped
        assert enr._kept_count == dict(collections.Counter(x[1][1] for x in want))
