"""The benchmarks themselves: their parts in memory, then each benchmark run
in a tiny bounded mode, checking the figures it reports are sane and its JSON
is complete. Network traffic is loopback only; every run has a timeout."""

from __future__ import annotations

import json
import math
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import _loadgen  # noqa: E402
import _sink  # noqa: E402
import bench_e2e  # noqa: E402
from probetag.forward import NEED_DATA, AckReceived, ClientConnection, encode_ack, new_chunk_id  # noqa: E402


_TAIL_BENIGN = re.compile(r"\S+ \S+ [\w/-]+\[\d+\]: ")


def _unpack_all(data: bytes) -> list:
    up = msgpack.Unpacker(raw=False, unicode_errors="surrogateescape", strict_map_key=False)
    up.feed(data)
    return list(up)


# ----------------------------------------------------------------- workload


def test_stamp_sets_every_event_time_and_send_stamp():
    (t,) = _loadgen.build_templates(1, seed=3)
    sent = 1_795_786_709.123456
    data = _loadgen.stamp(t, sent)
    entries = _unpack_all(data)
    assert len(entries) == t.count == _loadgen.CHUNK_RECORDS
    assert len(data) == t.nbytes
    for et, record in entries:
        assert isinstance(et, msgpack.ExtType) and et.code == 0
        sec = int.from_bytes(et.data[:4], "big")
        nsec = int.from_bytes(et.data[4:], "big")
        assert sec == int(sent) and abs(nsec - (sent - int(sent)) * 1e9) < 1000
        assert record[_loadgen.STAMP_KEY] == sent
        assert list(record)[-1] == _loadgen.STAMP_KEY


def test_frame_is_what_the_forward_client_sends():
    # The load generator builds its frames itself (one join, see _loadgen);
    # they must be byte for byte what probetag's own client would send.
    templates = _loadgen.build_templates(2, seed=4)
    for t in templates:
        cid = new_chunk_id()
        sent = 1_795_786_709.25
        ours = _loadgen.frame(t, sent, _loadgen.frame_prefix(t, "syslog.bench"), cid)
        theirs = ClientConnection().send_packed("syslog.bench", _loadgen.stamp(t, sent), t.count, cid)
        assert ours == theirs
    one = _loadgen.Template(templates[0].bodies[:1], 0, len(templates[0].bodies[0]) + 19)
    assert (_loadgen.frame(one, 5.0, _loadgen.frame_prefix(one, "t"), "id")
            == ClientConnection().send_packed("t", _loadgen.stamp(one, 5.0), 1, "id"))


def test_workload_shapes_sizes_and_probe_share():
    templates = _loadgen.build_templates(4, probe_rate=0.01, seed=5)
    assert [t.probes for t in templates] == [10, 10, 10, 10]
    sizes = []
    probes = 0
    for t in templates:
        for _, rec in _unpack_all(_loadgen.stamp(t, 1.0)):
            sizes.append(len(msgpack.packb(rec, use_bin_type=True, unicode_errors="surrogateescape")))
            assert "message" in rec
            # Ordinary lines carry a pid (in_syslog) or "ident[pid]:" (in_tail).
            benign = "pid" in rec if "host" in rec else _TAIL_BENIGN.match(rec["message"])
            probes += not benign
    assert probes == 40
    mean = sum(sizes) / len(sizes)
    assert 150 <= mean <= 250, mean


def test_sources_workload_has_distinct_senders():
    templates = _loadgen.build_templates(3, sources=2500, seed=1)
    senders = set()
    for t in templates:
        assert t.probes == t.count
        for _, rec in _unpack_all(_loadgen.stamp(t, 1.0)):
            senders.add(rec["source_address"])
    assert len(senders) == 2500


@pytest.mark.parametrize("line, host, tag, msg", [
    (b"GET / HTTP/1.0\r", "GET", "/", " HTTP/1.0#015"),
    (b"\r", "203.0.113.9", "#015", ""),
    (b"OPTIONS sip:nm SIP/2.0\r", "OPTIONS", "sip:", "nm SIP/2.0#015"),
    (b"\x16\x03\x00\x00S\x01\x00", "203.0.113.9", "#026#003#000#000S#001#000", ""),
    (b"HELP", "HELP", "", ""),
])
def test_rsyslog_split_follows_the_field_guide(line, host, tag, msg):
    assert _loadgen.rsyslog_split(line, "203.0.113.9") == (host, tag, msg)


def test_file_line_adds_one_space_before_msg():
    assert _loadgen.file_line("TS", "h", "sshd[1]:", "x") == "TS h sshd[1]: x"
    assert _loadgen.file_line("TS", "GET", "/", " HTTP/1.0#015") == "TS GET / HTTP/1.0#015"
    assert _loadgen.file_line("TS", "10.0.0.1", "#015", "") == "TS 10.0.0.1 #015 "


# ----------------------------------------------------------------- sink maths


def test_percentile_and_hist_diff():
    hist = {}
    for ms in (1.0, 2.0, 3.0, 4.0, 100.0):
        idx = int(round(math.log(ms * 1000) / math.log(_sink.BUCKET)))
        hist[idx] = hist.get(idx, 0) + 20
    assert abs(_sink.percentile(hist, 0.5) - 3.0) < 0.05
    assert abs(_sink.percentile(hist, 0.99) - 100.0) < 1.0
    assert _sink.percentile({}, 0.5) is None
    later = {str(k): v + 5 for k, v in hist.items()}
    assert _sink.hist_diff(later, {str(k): v for k, v in hist.items()}) == {k: 5 for k in hist}


def test_profile_summary_folds_lines(tmp_path):
    raw = tmp_path / "p.txt"
    raw.write_text("_run_code (<frozen runpy>:88);f (a.py:1);g (b.py:7) 30\n"
                   "_run_code (<frozen runpy>:88);f (a.py:2) 10\n"
                   "_run_code (<frozen runpy>:88);f (a.py:1);g (b.py:9) 60\n")
    s = bench_e2e.summarize_profile(raw)
    assert s["samples"] == 100
    assert s["self"] == [("g (b.py)", 90.0), ("f (a.py)", 10.0)]
    assert dict(s["inclusive"]) == {"f (a.py)": 100.0, "g (b.py)": 90.0}
    assert s["lines"][0] == ("g (b.py:9)", 60.0)


def test_cprofile_summary_shares_add_up(tmp_path):
    import cProfile

    def leaf(n):
        return sum(i * i for i in range(n))

    def outer():
        return [leaf(20000) for _ in range(20)]

    prof = cProfile.Profile(time.process_time)
    prof.runcall(outer)
    path = tmp_path / "p.prof"
    prof.dump_stats(str(path))
    s = bench_e2e.summarize_cprofile(path, top=50)
    assert s["unit"] == "CPU seconds" and s["samples"] > 0
    assert sum(p for _, p in s["self"]) == pytest.approx(100.0, abs=1.0)
    incl = dict(s["inclusive"])
    outer_share = next(v for k, v in incl.items() if k.startswith("outer ("))
    leaf_share = next(v for k, v in incl.items() if k.startswith("leaf ("))
    assert outer_share >= leaf_share > 50.0


@pytest.mark.parametrize("reply, reason", [
    (b"\x80", "nack"),                                    # {}: Vector's reject
    (msgpack.packb({"ack": "not-in-flight"}), "unexpected reply"),
    (b"\xc1", "bad reply"),                                # never valid msgpack
    # Closing with our bytes unread makes the kernel reset the connection.
    (None, ("closed by server", "connection lost")),
])
def test_load_generator_stops_a_connection_on_a_bad_reply(reply, reason):
    import asyncio

    async def scenario():
        async def handle(reader, writer):
            await reader.read(1)  # the first frame has started arriving
            if reply is not None:
                writer.write(reply)
                await writer.drain()
                await asyncio.sleep(0.5)
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await asyncio.wait_for(_loadgen.run_load(
                "127.0.0.1", port, _loadgen.build_templates(1, seed=2), 0.3, window=2, drain_timeout=1.0), 20)
        finally:
            server.close()

    res = asyncio.run(scenario())
    assert len(res.errors) == 1 and res.errors[0].startswith(reason), res.errors
    assert res.chunks_acked == 0 and res.unacked_chunks == res.chunks_sent >= 1


# ----------------------------------------------------------------- sink counting


def _entries(runs: list[tuple[float, int]], seed: int = 0) -> bytes:
    """Packed entries: ``n`` records stamped ``t`` for each (t, n), in order,
    records of varied sizes (some over the sink's linear-walk span)."""
    import random

    rng = random.Random(seed)
    out = []
    for t, n in runs:
        for _ in range(n):
            rec = {"message": "x" * rng.choice((5, 40, 150, 900, 3000)), _loadgen.STAMP_KEY: t}
            out.append(msgpack.packb([msgpack.ExtType(0, b"\0" * 8), rec], use_bin_type=True))
    return b"".join(out)


def _exact_hist(runs: list[tuple[float, int]]) -> dict[bytes, int]:
    out: dict[bytes, int] = {}
    for t, n in runs:
        key = struct.pack(">d", t)
        out[key] = out.get(key, 0) + n
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 60)), min_size=1, max_size=8))
def test_stamp_runs_count_every_record_with_its_stamp(spec):
    # Stamps drawn from a few values, so runs may repeat a stamp that came
    # earlier (not contiguous): the sink must stay exact, by rescanning.
    runs = [(1_795_786_700.0 + k * 0.25, n) for k, n in spec]
    data = bytearray(b"junk" + _entries(runs) + b"tail")
    total = sum(n for _, n in runs)
    sink = _sink.Sink()
    sink.on_entries(data, 4, len(data) - 4, total, 1_795_786_800.0)
    assert sink.stamped == sink.records == total
    assert sink.errors == {}
    exact = _exact_hist(runs)
    assert _sink.stamp_counts(data, 0, len(data)) == exact
    got = {}
    for raw, n in _sink.stamp_runs(data, 4, len(data) - 4)[0]:
        got[raw] = got.get(raw, 0) + n
    contiguous = len({t for t, _ in runs}) == len(_merge(runs))
    if contiguous:
        assert got == exact and sink.rescans == 0
    # The histogram holds every record once, wherever the runs were.
    assert sum(sink.hist.values()) == total


def _merge(runs):
    out = []
    for t, n in runs:
        if out and out[-1][0] == t:
            out[-1] = (t, out[-1][1] + n)
        else:
            out.append((t, n))
    return out


def test_sink_reports_records_without_a_stamp():
    data = _entries([(10.0, 3)]) + msgpack.packb([1, {"message": "summary"}])
    sink = _sink.Sink()
    sink.on_entries(data, 0, len(data), 4, 20.0)
    assert (sink.records, sink.stamped) == (4, 3)
    assert sink.errors == {"size_not_stamped": 1} and sink.rescans == 1


@pytest.fixture(scope="module")
def probetag_output():
    """What ``probetag serve``'s stage makes of the benchmark's workloads
    (the bench config: detection on), with the decoded truth."""
    import tempfile

    from probetag._config import load_config
    from probetag._metrics import Metrics
    from probetag._stage import Processor

    with tempfile.TemporaryDirectory() as d:
        cfg = load_config(str(bench_e2e.write_config(Path(d), 1, 2)))
    out = []
    for templates in (_loadgen.build_templates(50), _loadgen.build_templates(3, sources=2500, seed=1)):
        proc = Processor(cfg, Metrics())
        for i, t in enumerate(templates):
            sent = 1_795_786_700.0 + i * 0.001
            raw = _loadgen.stamp(t, sent)
            # Before probetag: no probe key anywhere, one marker per record.
            assert raw.count(_sink.TAGGED) == 0 and raw.count(_sink.MARK) == t.count
            for oc in proc.process("syslog.bench", raw).chunks:
                out.append(oc.entries)
    return out


def test_byte_counts_equal_a_full_decode_of_probetag_output(probetag_output):
    # The sink counts records by the bench_sent marker and tagged records by
    # the "probe" key without decoding; on every chunk probetag makes of the
    # bench's workloads both equal what a full decode finds.
    tagged_total = 0
    for entries in probetag_output:
        records = _unpack_all(entries)
        stamps: dict[bytes, int] = {}
        for _, rec in records:
            key = struct.pack(">d", rec[_loadgen.STAMP_KEY])
            stamps[key] = stamps.get(key, 0) + 1
        tagged = sum(isinstance(rec.get("probe"), dict) for _, rec in records)
        tagged_total += tagged
        data = bytearray(entries)
        assert entries.count(_sink.MARK) == len(records)
        assert _sink.count_tagged(data, 0, len(data)) == entries.count(_sink.TAGGED) == tagged
        runs, total = _sink.stamp_runs(data, 0, len(data))
        assert total == len(records) and dict(runs) == stamps
    assert tagged_total > 100  # the probe lines were tagged: the check saw tagged records


# ----------------------------------------------------------------- sink framing


class _Transport:
    """Records what the sink writes (the in-memory side of a socket)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        self.closed = True


def _feed(stream: bytes, cuts: list[int]) -> tuple[_sink.Sink, _Transport]:
    sink = _sink.Sink()
    conn = _sink._Conn(sink)
    tr = _Transport()
    conn.connection_made(tr)
    pos = 0
    for end in sorted(set(cuts)) + [len(stream)]:
        while pos < end and not tr.closed:
            buf = conn.get_buffer(-1)
            n = min(len(buf), end - pos)
            buf[:n] = stream[pos:pos + n]
            del buf
            conn.buffer_updated(n)
            pos += n
    return sink, tr


_FRAMED: list = []


def _three_frames() -> tuple[bytes, list[str], list]:
    if not _FRAMED:
        templates = _loadgen.build_templates(3, seed=9)
        ids = [new_chunk_id() for _ in templates]
        stream = b"".join(_loadgen.frame(t, 100.0 + i, _loadgen.frame_prefix(t, "t"), cid)
                          for i, (t, cid) in enumerate(zip(templates, ids)))
        _FRAMED.extend((stream, ids, templates))
    return _FRAMED[0], _FRAMED[1], _FRAMED[2]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 600_000), max_size=12))
def test_sink_framing_under_arbitrary_reads(cuts):
    stream, ids, templates = _three_frames()
    sink, tr = _feed(stream, [c % len(stream) for c in cuts])
    assert not tr.closed and sink.errors == {}
    assert _unpack_all(bytes(tr.data)) == [{"ack": cid} for cid in ids]
    assert sink.chunks == 3 and sink.records == sink.stamped == 3000
    assert sink.bytes == sum(t.nbytes for t in templates)
    assert sum(sink.hist.values()) == 3000 and sink.rescans == 0


@pytest.mark.parametrize("frame, reason", [
    (msgpack.packb(["t", [[1, {"a": 1}]], {"chunk": "c1"}]), "unsupported_frame"),       # Forward mode
    (msgpack.packb(["t", 1, {"a": 1}]), "unsupported_frame"),                             # Message mode
    (msgpack.packb(["t", b"\x92\x01\x80", {"chunk": "c1", "compressed": "gzip"}], use_bin_type=True),
     "compressed_unsupported"),
    (b"\x93\xa1t\xc6\x10\x00\x00\x00", "frame_too_large"),                              # 256 MiB claimed
    (msgpack.packb(["t", b"\x92\x01\x80", [1]], use_bin_type=True), "bad_options"),
    (msgpack.packb({"not": "a frame"}), "unsupported_frame"),
])
def test_sink_counts_and_closes_on_frames_it_does_not_take(frame, reason):
    sink, tr = _feed(frame + b"\xc0" * 8, [])
    assert tr.closed and sink.errors == {reason: 1} and sink.chunks == 0


def test_sink_acks_frames_with_bin_ids_and_no_options():
    packed = _loadgen.stamp(_loadgen.build_templates(1, seed=1)[0], 50.0)
    stream = (msgpack.packb(["t", packed, {"chunk": b"\x01id\n", "size": 1000}], use_bin_type=True)
              + msgpack.packb(["t", packed], use_bin_type=True))
    sink, tr = _feed(stream, [3, 100])
    assert bytes(tr.data) == encode_ack(b"\x01id\n")  # bin id echoed as bin; no id, no ack
    assert sink.chunks == 2 and sink.records == sink.stamped == 2000 and sink.errors == {}


# ----------------------------------------------------------------- sink process


def test_sink_acks_counts_and_measures_latency():
    sink = bench_e2e.Child([sys.executable, str(BENCH / "_sink.py")], stdin=True)
    try:
        port = sink.next_json(30)["port"]
        templates = _loadgen.build_templates(2, seed=2)
        import socket

        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.settimeout(10)
            conn = ClientConnection()
            sent_at = time.time() - 0.005  # 5 ms "in flight" before sending
            for t in templates:
                s.sendall(conn.send_packed("t", _loadgen.stamp(t, sent_at), t.count, new_chunk_id()))
            acks = 0
            while acks < 2:
                data = s.recv(65536)
                assert data, "sink closed before acking"
                conn.receive_data(data)
                while (ev := conn.next_event()) is not NEED_DATA:
                    assert isinstance(ev, AckReceived)
                    acks += 1
        sink.send("snap")
        snap = sink.next_json(30)
    finally:
        sink.stop(10)
    assert snap["chunks"] == 2 and snap["records"] == 2000 and snap["stamped"] == 2000
    assert snap["rescans"] == 0 and snap["errors"] == {}
    assert snap["cpu_seconds"] == pytest.approx(snap["cpu_user"] + snap["cpu_system"], abs=0.002)
    assert snap["bytes"] == sum(t.nbytes for t in templates)
    assert snap["tagged"] == 0  # nothing went through probetag
    p50 = _sink.percentile({int(k): v for k, v in snap["hist"].items()}, 0.5)
    assert 4.9 <= p50 < 5000


# ----------------------------------------------------------------- whole runs


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout)


def _e2e(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "e2e.json"
    proc = _run([str(BENCH / "bench_e2e.py"), "--seconds", "1", "--warmup", "0.5", "--chunks", "5",
                 "--floor-seconds", "0.3", "--json", str(out), *extra], 120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"wrote {out}" in proc.stdout
    doc = json.loads(out.read_text())
    res = doc["result"]
    assert "error" not in res, res
    assert doc["chunk_records"] == 1000 and doc["targets"]["max"]["records_per_s"] == 300_000
    assert res["delivery_ok"], res
    assert res["records_per_s"] > 100
    assert res["mb_per_s"] == pytest.approx(res["records_per_s"] * res["avg_record_bytes"] / 1e6, rel=0.01, abs=0.002)
    assert 0 < res["latency_p50_ms"] <= res["latency_p99_ms"] <= res["latency_max_ms"] < 60_000
    assert res["cpu_s_per_million"] > 0
    assert res["one_core_records_per_s"] == pytest.approx(1e6 / res["cpu_s_per_million"], rel=0.02)
    assert 0 < res["serve_cpu_util"] <= 2.5 and 0 <= res["serve_runqueue_wait_share"] <= 2.5
    assert 10 < res["peak_rss_mb"] < 4000
    assert res["loadgen"]["unacked_chunks"] == 0 and res["loadgen"]["errors"] == []
    assert len(res["load_avg_start"]) == 3 and len(res["load_avg_end"]) == 3
    # The harness's own CPU in the window (clock ticks: a light load in a
    # short window may round to 0), less than the whole machine.
    hc = res["harness_cores"]
    assert 0 <= hc["loadgen"] < 2.5 and 0 <= hc["sink"] < 2.5
    assert res["harness_cores_total"] == pytest.approx(hc["loadgen"] + hc["sink"], abs=0.002)
    assert 0 <= res["harness_us_per_record"] < 1000
    assert res["loadgen"]["cpu_seconds"] == pytest.approx(
        res["loadgen"]["cpu_user"] + res["loadgen"]["cpu_system"], abs=0.002)
    sink = res["sink"]
    assert sink["records_counted"] == sink["records_total"] and sink["rescans"] == 0 and sink["errors"] == {}
    # Every load connection was accepted by a serve process.
    assert sum(w["connections"] for w in res["per_worker"]) == res["connections"]
    assert all(w["cpu_util"] >= 0 for w in res["per_worker"])
    return res


def test_e2e_max_mode_reports_sane_figures(tmp_path):
    res = _e2e(tmp_path, "--mode", "max")
    # Closed loop at full speed: both harness processes did measurable work.
    assert res["harness_cores"]["loadgen"] > 0 and res["harness_cores"]["sink"] > 0
    assert res["floor_records_per_s"] > 1000
    assert res["floor_ratio"] == pytest.approx(res["records_per_s"] / res["floor_records_per_s"], rel=0.01)
    # Detection is on: about the sent probe share comes back tagged.
    assert res["expected_tagged_share"] == 0.01
    assert 0.002 <= res["tagged_share"] <= 0.012, res["tagged_share"]


def test_e2e_latency_mode_holds_the_rate_and_records_workers_support(tmp_path):
    has = bench_e2e.serve_supports("--workers")
    res = _e2e(tmp_path, "--mode", "latency", "--rate", "10000", "--no-floor", "--workers", "2")
    assert "floor_records_per_s" not in res
    # Open loop: what arrives is what was scheduled (10 chunks/s).
    assert 6000 <= res["records_per_s"] <= 14000, res["records_per_s"]
    assert res["loadgen"]["max_behind_ms"] >= 0
    assert res["workers_supported"] is has
    assert res["connections"] == 8
    assert res["serve_processes"] >= (2 if has else 1)
    assert len(res["per_worker"]) == (2 if has else 1)


def test_e2e_harness_mode_measures_the_harness_alone(tmp_path):
    out = tmp_path / "harness.json"
    proc = _run([str(BENCH / "bench_e2e.py"), "--mode", "harness", "--rate", "50000", "--seconds", "1.5",
                 "--warmup", "0.5", "--chunks", "5", "--json", str(out)], 120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())["result"]
    assert "error" not in res, res
    assert res["delivery_ok"] and res["connections"] == 8
    # Open loop: what arrives is what was scheduled.
    assert 35_000 <= res["records_per_s"] <= 65_000, res["records_per_s"]
    h = res["harness"]
    for part in ("loadgen", "sink"):
        assert h[part]["cores"] == pytest.approx(h[part]["user"] + h[part]["system"], abs=0.002)
        assert 0 <= h[part]["cores"] < 2.5 and h[part]["us_per_record"] >= 0
    assert res["harness_cores_total"] == pytest.approx(h["loadgen"]["cores"] + h["sink"]["cores"], abs=0.002)
    assert res["harness_cores_at_rate"] == pytest.approx(
        res["harness_cores_total"] * 50_000 / res["records_per_s"], rel=0.01, abs=0.002)


def test_e2e_scaling_mode_runs_one_then_n_workers(tmp_path):
    out = tmp_path / "scaling.json"
    proc = _run([str(BENCH / "bench_e2e.py"), "--mode", "scaling", "--workers", "2", "--seconds", "1",
                 "--warmup", "0.5", "--chunks", "5", "--json", str(out)], 240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    res = doc["result"]
    assert "error" not in res, res
    assert doc["targets"]["scaling"]["scaling_ratio"] == 1.8
    assert "scaling_ratio" in doc["verdicts"]
    one, two = res["runs"]
    assert [one["workers_requested"], two["workers_requested"]] == [1, 2]
    assert one["connections"] == two["connections"] == res["connections"] == 8
    assert one["records_per_s"] > 100 and two["records_per_s"] > 100
    assert res["scaling_ratio"] == pytest.approx(two["records_per_s"] / one["records_per_s"], rel=0.01)
    assert res["cpu_per_record_ratio"] == pytest.approx(
        two["cpu_s_per_million"] / one["cpu_s_per_million"], rel=0.02)
    assert res["serve_cpu_ratio"] == pytest.approx(two["serve_cpu_util"] / one["serve_cpu_util"], rel=0.05)
    assert 0 < res["cores_left_for_serve"] <= (doc["cpus"] or 1)
    c1, c2, h = one["cpu_s_per_million"], two["cpu_s_per_million"], two["harness_us_per_record"]
    assert res["projected_ratio_idle"] == pytest.approx(min(doc["cpus"] / (c2 + h), 2 / c2) * c1, rel=0.01)
    assert res["projected_ratio_idle"] <= res["projected_ratio_idle_without_harness"] <= 2 * c1 / c2 + 0.01
    assert res["delivery_ok"]
    split = two["per_worker"]
    assert res["every_worker_loaded"] == all(w["connections"] > 0 for w in split)
    assert len(split) == (2 if res["workers_supported"] else 1)
    assert sum(w["connections"] for w in split) == 8
    assert "scaling" in proc.stdout and "per worker" in proc.stdout


def test_e2e_sources_mode_covers_the_senders(tmp_path):
    # Every record here is a probe line (the slow path), so a chunk takes long
    # enough that a 1 s window can close before the first one arrives: give
    # this mode a window that always holds several chunks.
    res = _e2e(tmp_path, "--mode", "sources", "--sources", "1000", "--no-floor",
               "--seconds", "4", "--warmup", "1")
    assert res["sources"] == 1000 and res["sources_covered"] == 1000
    assert res["expected_tagged_share"] == 1.0
    assert res["tagged_share"] > 0.95  # distinctive lines only: every sender is tracked


def test_explain_bench_times_both_formats(tmp_path):
    out = tmp_path / "explain.json"
    proc = _run([str(BENCH / "bench_explain.py"), "--mb", "0.5", "--cache-dir", str(tmp_path), "--no-cache",
                 "--timeout", "60", "--json", str(out)], 150)
    assert out.exists(), proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["target_mb_per_s"] == 150.0
    assert 500_000 <= doc["file"]["bytes"] < 501_000
    assert "error" not in doc["startup"] and doc["startup"]["seconds"] > 0
    assert 0.005 <= doc["file"]["probe_lines"] / doc["file"]["lines"] <= 0.015
    assert [r["format"] for r in doc["runs"]] == ["jsonl", "text"]
    for r in doc["runs"]:
        assert "error" not in r, r
        assert r["mb_per_s"] == pytest.approx(doc["file"]["bytes"] / 1e6 / r["seconds"], rel=0.01, abs=0.002)
        assert r["output_lines"] >= 1 and r["cpu_seconds"] > 0
    assert not list(tmp_path.glob("probetag-bench-explain-*.log"))  # --no-cache removes it
    assert proc.returncode == 0


def test_generated_syslog_lines_are_rsyslog_file_format(tmp_path):
    import bench_explain

    path = tmp_path / "s.log"
    counts = bench_explain.generate(path, 0.2, probe_rate=0.05, seed=4, pool=50)
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) - 1 == counts["lines"]
    stamps = [ln.split(b" ", 1)[0] for ln in lines[:-1]]
    assert stamps == sorted(stamps)
    assert all(len(s) == 32 and s.endswith(b"+00:00") for s in stamps)
    # Ordinary lines are "TS host ident[pid]: msg"; every other line is a probe.
    benign = re.compile(rb"\S{32} \S+ [\w/-]+\[\d+\]: ")
    probe = [ln for ln in lines[:-1] if not benign.match(ln)]
    assert len(probe) == counts["probe_lines"]
    assert counts["probe_lines"] == pytest.approx(0.05 * counts["lines"], rel=0.35)


def test_stage_cost_runs_the_e2e_chunks_through_the_stage():
    """bench/stage_cost.py (in process, tiny counts): the measured chunks
    go through the stage and some of their probe lines are tagged."""
    out = subprocess.run([sys.executable, str(BENCH / "stage_cost.py"), "--warmup", "20", "--count", "10",
                          "--passes", "1"], capture_output=True, text=True, timeout=300, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["records"] == 10_000
    assert 0 < res["tagged"] < res["records"] * 0.02  # 1 % probe lines, not every record
    assert res["cpu_us_per_record"] > 0
    assert Path(res["tree"]) == BENCH.parent


def test_stage_cost_probe_rate_sets_the_share_of_probe_lines():
    """``--probe-rate``: no probe line at 0, and about five times the
    default's tagged records at 0.05 (the split of a chunk's cost into
    what every chunk costs and what each probe line adds)."""
    def tagged(rate: str) -> int:
        out = subprocess.run([sys.executable, str(BENCH / "stage_cost.py"), "--warmup", "20", "--count", "10",
                              "--passes", "1", "--probe-rate", rate], capture_output=True, text=True, timeout=300,
                             check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])["tagged"]

    assert tagged("0") == 0
    assert 0.03 * 10_000 < tagged("0.05") <= 0.05 * 10_000
