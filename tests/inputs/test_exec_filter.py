"""``probetag exec-filter`` as a subprocess, fed exactly what Fluentd's
out_exec_filter writes (``<inject>`` tag/time keys, then the json or msgpack
formatter)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time

import msgpack
import pytest

PROBE = "GET / HTTP/1.0#015#012#015#012"
CMD = [sys.executable, "-m", "probetag", "exec-filter"]


def yajl(record):
    # Fluentd's formatter_json: Yajl.dump(record) + "\n" (no spaces)
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def run(args, data, timeout=30):
    p = subprocess.run(CMD + args, input=data, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr.decode()


def records_in():
    return [
        {"host": "web1", "ident": "sshd", "message": "Accepted publickey for root",
         "tag": "syslog.auth", "time": 1795773600},
        {"message": PROBE, "source_address": "203.0.113.7", "tag": "syslog.daemon", "time": 1795773601},
        {"host": "web1", "ident": "cron", "message": "job done", "tag": "syslog.cron", "time": 1795773602},
    ]


def test_json_inject_round_trip_and_bad_lines():
    data = b"".join(yajl(r) for r in records_in()[:2]) + b"{broken\n[1,2]\n" + yajl(records_in()[2])
    rc, out, err = run([], data)
    assert rc == 0, err
    lines = [json.loads(l) for l in out.splitlines()]
    assert [l["message"] for l in lines] == [r["message"] for r in records_in()]
    assert lines[0] == records_in()[0]          # untouched: no field added
    assert lines[2] == records_in()[2]
    assert lines[1]["probe"]["scanner"] == "nmap"
    assert lines[1]["tag"] == "syslog.daemon" and lines[1]["time"] == 1795773601  # extract reads these
    assert "bad input rejected" in err and "rejected=2" in err


def test_float_and_string_time_pass_through_untouched():
    recs = [{"message": "a", "tag": "t", "time": 1795773600.123456},
            {"message": "b", "tag": "t", "time": "2026-11-27T10:00:00+00:00"},
            {"message": "c", "tag": "t", "time": "not a time"}]
    rc, out, err = run([], b"".join(yajl(r) for r in recs))
    assert rc == 0, err
    assert [json.loads(l) for l in out.splitlines()] == recs


def test_no_inject_no_tag_added_and_custom_keys():
    recs = [{"message": PROBE, "ts": 1795773600}, {"message": "plain"}]
    rc, out, err = run(["--time-key", "ts"], b"".join(yajl(r) for r in recs))
    assert rc == 0, err
    lines = [json.loads(l) for l in out.splitlines()]
    assert "tag" not in lines[0] and "probe" in lines[0] and lines[0]["ts"] == 1795773600
    assert lines[1] == {"message": "plain"}
    recs = [{"message": PROBE, "@tag": "a.b"}]
    rc, out, err = run(["--tag-key", "@tag"], b"".join(yajl(r) for r in recs))
    assert json.loads(out)["@tag"] == "a.b"


def test_msgpack_stream_with_bin_values():
    # Ruby msgpack packs ASCII-8BIT strings (in_tail values) as bin
    recs = [{"message": PROBE.encode(), "tag": "syslog.daemon", "time": 1795773600.5},
            {"message": b"GET /\xff", "tag": "syslog.daemon", "time": 1795773601.0},
            {"message": "ok", "tag": "x", "time": 1795773602}]
    data = b"".join(msgpack.packb(r, use_bin_type=True) for r in recs)
    rc, out, err = run(["--in-format", "msgpack"], data)
    assert rc == 0, err
    got = list(msgpack.Unpacker(__import__("io").BytesIO(out), raw=False, strict_map_key=False))
    assert [g["message"] for g in got] == [PROBE.encode(), b"GET /\xff", "ok"]  # bin stays bin
    assert got[0]["probe"]["name"] and got[0]["time"] == 1795773600.5
    assert "probe" not in got[1] and "probe" not in got[2]
    # json out from msgpack in: bytes become text, invalid bytes visible as \xHH
    rc, out, err = run(["--in-format", "msgpack", "--out-format", "json"], data)
    lines = [json.loads(l) for l in out.splitlines()]
    assert lines[1]["message"] == "GET /\\xff"


def test_msgpack_non_map_rejected_and_broken_stream_exits_1():
    data = msgpack.packb({"message": "a"}) + msgpack.packb([1, 2]) + msgpack.packb({"message": "b"})
    rc, out, err = run(["--in-format", "msgpack"], data + b"\xc1")  # 0xc1: never used in msgpack
    assert rc == 1 and "cannot be decoded" in err
    assert [r["message"] for r in msgpack.Unpacker(__import__("io").BytesIO(out), raw=False)] == ["a", "b"]
    rc, out, err = run(["--in-format", "msgpack"], data + msgpack.packb({"message": "c"})[:-1])
    assert rc == 0 and "rejected=2" in err


def test_rules_from_config_retag_and_drop(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("actions:\n  rules:\n"
                   "    - {action: drop, scanner: [nmap], probe: [NoSuchProbe]}\n"
                   "    - {action: retag, scanner: [nmap], tag: 'security.${scanner}.${tag}'}\n")
    rc, out, err = run(["-c", str(cfg)], b"".join(yajl(r) for r in records_in()))
    assert rc == 0, err
    lines = [json.loads(l) for l in out.splitlines()]
    assert lines[1]["tag"] == "security.nmap.syslog.daemon"
    assert lines[0]["tag"] == "syslog.auth"
    cfg.write_text("actions:\n  rules:\n    - {action: drop, scanner: [nmap]}\n")
    rc, out, err = run(["-c", str(cfg)], b"".join(yajl(r) for r in records_in()))
    assert [json.loads(l)["message"] for l in out.splitlines()] == ["Accepted publickey for root", "job done"]
    assert "dropped=1" in err


def test_bad_config_exit_2(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("actions:\n  nope: 1\n")
    rc, _, err = run(["-c", str(cfg)], b"")
    assert rc == 2 and "nope" in err


def test_partial_batch_flushed_while_stdin_stays_open():
    p = subprocess.Popen(CMD, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        got = b""
        for i in range(3):  # three separate records, stdin never closed
            p.stdin.write(yajl({"message": PROBE if i == 1 else f"m{i}", "tag": "t", "time": 1795773600}))
            p.stdin.flush()
            deadline = time.monotonic() + 10
            while got.count(b"\n") < i + 1 and time.monotonic() < deadline:
                r, _, _ = select.select([p.stdout], [], [], 0.5)
                if r:
                    got += os.read(p.stdout.fileno(), 65536)
            assert got.count(b"\n") == i + 1, f"record {i} not flushed: {got!r}"
        lines = [json.loads(l) for l in got.splitlines()]
        assert "probe" in lines[1] and "probe" not in lines[0]
    finally:
        p.stdin.close()
        assert p.wait(10) == 0
        p.stdout.close()
        p.stderr.close()


def test_many_records_batched_in_order():
    recs = [{"message": PROBE if i % 7 == 0 else f"line {i}", "tag": f"t{i % 3}", "time": 1795773600 + i}
            for i in range(5000)]
    rc, out, err = run([], b"".join(yajl(r) for r in recs), timeout=60)
    assert rc == 0, err
    lines = [json.loads(l) for l in out.splitlines()]
    assert [l["time"] for l in lines] == [r["time"] for r in recs]
    assert sum("probe" in l for l in lines) == len(range(0, 5000, 7))


def test_scan_summary_at_end_of_input(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("actions:\n  summaries: true\n  summary_tag: security.scan_summary\n")
    now = int(time.time())  # event times of now: the scan is still open at EOF
    recs = [{"message": PROBE, "source_address": "203.0.113.9", "tag": "syslog.daemon", "time": now},
            {"message": "plain", "source_address": "203.0.113.9", "tag": "syslog.daemon", "time": now}]
    rc, out, err = run(["-c", str(cfg)], b"".join(yajl(r) for r in recs))
    assert rc == 0, err
    lines = [json.loads(l) for l in out.splitlines()]
    assert [l.get("message") for l in lines[:2]] == [PROBE, "plain"]
    (summary,) = lines[2:]
    assert summary["tag"] == "security.scan_summary"
    assert summary["probe_summary"]["source"] == "203.0.113.9"
