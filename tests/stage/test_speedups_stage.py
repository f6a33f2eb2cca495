"""The stage gives the same results with and without the C accelerator, and
``PROBETAG_PURE=1`` really selects the pure-Python walk.

* Seeded mixes of ordinary records, rsyslog-escaped probe lines, ``#015``
  lines, entries only the full path handles (nested and float times, group
  markers, rejects) and damaged chunk tails go through two fresh
  ``Processor``s, one walking with ``probetag._speedups`` and one with the
  reference ``_walk_py``: every ``StageResult`` and the metrics must match,
  and match again when every entry is sent down the full path.
* The stage's own test modules run again in a subprocess with
  ``PROBETAG_PURE=1``: their assertions hold on the pure path too.
* A bounded atheris (libFuzzer) run feeds arbitrary bytes to the C walk and
  compares it with the reference; it must never crash or disagree.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probetag import _stage
from probetag._config import config_from_mapping
from probetag._metrics import Metrics
from probetag._stage import Processor, event_time, pack_entry
from probetag.decode import escape

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

sp = pytest.importorskip("probetag._speedups", reason="the C accelerator was not built (no compiler?)")

CFG = {"detect": {"fields": ["message"], "source_fields": ["source_address"]}}
PROBES = [b"GET / HTTP/1.0\r", b"\r", b"OPTIONS / HTTP/1.0\r", b"OPTIONS / RTSP/1.0\r", b"HELP\r",
          b"\x16\x03\x00\x00S\x01\x00\x00O\x03\x00", b"l\x00\x0b\x00\x00\x00\x00\x00\x00\x00\x00",
          b"OPTIONS sip:nm SIP/2.0\r", b"Via: SIP/2.0/TCP nm;branch=foo\r"]
BENIGN = ["Accepted publickey for root from 10.0.0.5 port 50122 ssh2", "session opened for user alice",
          'GET /api/v1/items?page=3 HTTP/1.1" 200 5120', "eth0: link up, 1000Mbps#015"]


def _time(rng: random.Random, base: int):
    """A time in a form some forwarder sends, ``now``-free (time 0 and nil
    become the current time, which two runs cannot share)."""
    k = rng.randrange(8)
    if k < 4:
        return event_time(base, rng.randrange(10**9))
    if k == 4:
        return base
    if k == 5:
        return base + 0.25
    if k == 6:
        return [event_time(base, 5), {}]  # Fluent Bit 2.1+ nested form
    return rng.choice([event_time(0xFFFFFFFF), -5, "x", msgpack.ExtType(0, b"\x00" * 8 + b"\x01"),
                       event_time(base, 10**9 + 1)])  # group marker and rejects


def _entry(rng: random.Random, base: int) -> bytes:
    k = rng.randrange(10)
    src = rng.choice(["203.0.113.5", "203.0.113.6", "10.0.0.9"])
    if k < 5:
        record = {"host": "web1", "source_address": src, "message": rng.choice(BENIGN)}
    elif k < 9:
        line = escape(rng.choice(PROBES), "rsyslog").decode("utf-8", "surrogateescape")
        record = {"host": "web1", "source_address": src, "message": line}
    else:
        record = rng.choice([["not", "a", "map"], "str", None])
    if rng.random() < 0.03:
        return msgpack.packb([1, {"a": 1}, 3])  # not a pair
    return pack_entry(_time(rng, base), record)


def _chunks(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for c in range(rng.randrange(1, 5)):
        data = b"".join(_entry(rng, 1_800_000_000 + c * 7) for _ in range(rng.randrange(0, 40)))
        if data and rng.random() < 0.2:  # a damaged tail
            data = data[:rng.randrange(len(data))] + rng.choice([b"", b"\xc1", b"\xdb\xff\xff\xff\xff"])
        out.append(data)
    return out


def _run(chunks: list[bytes], walk) -> tuple[list, dict]:
    old = _stage.walk_entries
    _stage.walk_entries = walk
    try:
        metrics = Metrics()
        proc = Processor(config_from_mapping(CFG), metrics)
        results = []
        for data in chunks:
            r = proc.process("syslog.in", data)
            results.append(([(c.tag, c.entries, c.count) for c in r.chunks], r.passed, r.tagged, r.dropped,
                            r.rejected, r.markers, dict(r.reject_reasons)))
        results.append([(c.tag, c.entries, c.count) for c in proc.flush()])
        return results, metrics.snapshot()
    finally:
        _stage.walk_entries = old


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**64))
def test_stage_results_identical_with_and_without_accelerator(seed):
    chunks = _chunks(seed)
    with_c = _run(chunks, _stage._walk_c)
    pure = _run(chunks, _stage._walk_py)
    assert with_c == pure
    # Entries the fast check vouches for skip the full path's checks; with
    # every entry sent down the full path the results are the same.
    assert _run(chunks, _all_slow) == with_c


def _all_slow(entries: bytes):
    starts, _slow, end, error = _stage._walk_c(entries)
    return starts, list(range(len(starts) - 1)), end, error


def test_tagged_records_keep_the_full_paths_bytes_whatever_the_time_form():
    """A tagged fast entry is re-encoded after its time's bytes; they must be
    what packing the decoded time gives (the full path's bytes): an
    EventTime, a positive fixint and uint32s, one of them in a longer form
    than msgpack's own (``0xce`` for 5)."""
    line = escape(b"GET / HTTP/1.0\r", "rsyslog").decode()
    record = msgpack.packb({"host": "web1", "source_address": "203.0.113.5", "message": line})
    heads = [b"\x92" + msgpack.packb(event_time(1_800_000_000, 5)), b"\x92\x07", b"\x92\xce\x00\x00\x00\x05",
             b"\x92\xce\x6b\x49\xd2\x00"]
    chunk = b"".join(h + record for h in heads)
    fast = _run([chunk], _stage._walk_c)
    assert _stage._walk_c(chunk)[1] == []  # every entry takes the fast path
    assert fast == _run([chunk], _all_slow)
    out = fast[0][0][0][0][1]
    assert fast[0][0][2] == len(heads)  # all tagged
    assert out.startswith(heads[0]) and b"\x92\x05\x84" in out and b"\xce\x00\x00\x00\x05" not in out


def test_the_mix_exercises_every_outcome():
    """The seeded mix above is not all one kind: it tags, passes, rejects
    (for several reasons), removes markers and meets damaged tails."""
    seen: dict[str, float] = {}
    for seed in range(40):
        for name, v in _run(_chunks(seed), _stage._walk_c)[1].items():
            seen[name] = seen.get(name, 0) + v
    flat = " ".join(k for k, v in seen.items() if v)
    for want in ("records_tagged", "records_passed", "group_markers", "entries_truncated",
                 "entries_undecodable", "entry_not_pair", "record_not_map", "bad_event_time"):
        assert want in flat, (want, sorted(seen))


def _backend(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PROBETAG_PURE"}
    if env_value is not None:
        env["PROBETAG_PURE"] = env_value
    out = subprocess.run([sys.executable, "-c", "import probetag._stage as s; "
                          "print(s.WALK_BACKEND, s.walk_entries.__name__)"],
                         env=env, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def test_pure_path_is_used_when_forced():
    assert _backend("1") == "python _walk_py"
    assert _backend(None) == "c _walk_c"
    assert _backend("0") == "c _walk_c"
    assert _stage.WALK_BACKEND == ("python" if os.environ.get("PROBETAG_PURE", "") not in ("", "0") else "c")


def test_stage_suites_pass_on_the_pure_path(tmp_path):
    env = {**os.environ, "PROBETAG_PURE": "1"}
    suites = ["tests/test_stage.py", "tests/test_stage_golden.py", "tests/test_stage_nmap.py"]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *suites],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    m = re.search(r"(\d+) passed", proc.stdout)
    assert m and int(m.group(1)) >= 50, proc.stdout[-1000:]


def test_atheris_walk_never_crashes_or_disagrees(tmp_path):
    pytest.importorskip("atheris", reason="atheris is in the 'test' extra")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "seed0").write_bytes(b"".join(_chunks(1)))
    (corpus / "seed1").write_bytes(b"\x92\xd7\x00" + bytes(8) + b"\x81\xa1m\xa1x" + b"\x91" * 30 + b"\xc0")
    proc = subprocess.run(
        [sys.executable, str(HERE / "fuzz_walk.py"), str(corpus), "-runs=30000", "-max_total_time=8",
         "-timeout=5", "-rss_limit_mb=1024", f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    crashes = [p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-"))]
    assert proc.returncode == 0 and not crashes, (crashes, out[-3000:])
    m = re.search(r"Done (\d+) runs", out)
    assert m and int(m.group(1)) >= 1000, out[-2000:]
