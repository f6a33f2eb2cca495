"""probetag serve with the stdout output, fed by the real fluent-logger client;
plus the JSON encoding of awkward msgpack values."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import msgpack
import pytest
from fluent import sender

from probetag._jsonenc import record_line, to_jsonable
from util.ports import free_port, wait_listening
from util.service import ServiceThread
from util.wait import kill_if_running, wait_until

N = 300


def test_jsonenc_awkward_values():
    rec = {
        "ascii": "GET / HTTP/1.0#015",
        "bad_str": b"ab\xff\xfe".decode("utf-8", "surrogateescape"),
        "utf8_bin": "héllo".encode(),
        "bad_bin": b"\x16\x03\x01\x00\xa5",
        1: "int key",
        b"bkey": [1.5, float("nan"), None, True],
        "ext": msgpack.ExtType(5, b"\x01\x02"),
    }
    out = to_jsonable(rec)
    assert out["ascii"] == "GET / HTTP/1.0#015"
    assert out["bad_str"] == "ab\\xff\\xfe"
    assert out["utf8_bin"] == "héllo"
    assert out["bad_bin"] == "\x16\x03\x01\x00\\xa5"
    assert out[1] == "int key" and out["bkey"] == [1.5, "NaN", None, True]
    assert out["ext"] == {"msgpack_extension_code": 5, "bytes": "0102"}
    line = record_line("t", msgpack.ExtType(0, (7).to_bytes(4, "big") + (500_000_000).to_bytes(4, "big")), rec)
    obj = json.loads(line)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert obj["time"] == 7.5 and obj["tag"] == "t" and obj["record"]["1"] == "int key"


def test_fluent_logger_to_stdout_in_process():
    with ServiceThread({"listen": {"address": "127.0.0.1:0"}}) as svc:
        s = sender.FluentSender("app", host="127.0.0.1", port=svc.port, nanosecond_precision=True)
        t0 = time.time()
        for i in range(N):
            assert s.emit_with_time("web", t0 + i / 1000, {"seq": i, "message": f"hello {i}"}), s.last_error
        s.close()
        assert wait_until(lambda: len(svc.stdout.lines()) >= N, 15.0)
        lines = svc.stdout.lines()
        assert svc.metrics.get("frames_in", mode="message") == N
    objs = [json.loads(x) for x in lines]
    assert len(objs) == N
    assert sorted(o["record"]["seq"] for o in objs) == list(range(N))
    for o in objs:
        assert o["tag"] == "app.web"
        assert o["record"]["message"] == f"hello {o['record']['seq']}"
        assert abs(o["time"] - (t0 + o["record"]["seq"] / 1000)) < 1e-3
    assert svc.drained is True


def _serve_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "probetag", "serve", *args]


def test_subprocess_serve_stdout_and_sigterm(tmp_path):
    port = free_port()
    out_path = tmp_path / "out.jsonl"
    with open(out_path, "wb") as out_file:
        proc = subprocess.Popen(_serve_cmd("--listen", f"127.0.0.1:{port}"), stdout=out_file,
                                stderr=subprocess.PIPE)
        try:
            assert wait_listening(port), "server did not come up"
            s = sender.FluentSender("sub", host="127.0.0.1", port=port, timeout=3.0)
            assert s.emit("probe", {"seq": -1}), s.last_error
            for i in range(N):
                assert s.emit("probe", {"seq": i, "message": f"line {i}"}), s.last_error
            s.close()
            assert wait_until(lambda: out_path.read_bytes().count(b"\n") >= N + 1, 20)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
        finally:
            kill_if_running(proc)
    assert proc.returncode == 0, err.decode(errors="replace")
    objs = [json.loads(x) for x in out_path.read_bytes().splitlines() if x]
    seqs = sorted(o["record"]["seq"] for o in objs)
    assert seqs == [-1] + list(range(N))
    assert all(o["tag"] == "sub.probe" for o in objs)
    assert b"event=listening" in err and b"event=stopped" in err and b"drained=True" in err


def test_config_error_exit_2(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("listen:\n  adress: 1.2.3.4:5\n")
    r = subprocess.run(_serve_cmd("-c", str(p)), capture_output=True, timeout=30)
    assert r.returncode == 2
    assert f"error: {p}:2: listen.adress: unknown key".encode() in r.stderr


def test_bad_flag_value_exit_2():
    r = subprocess.run(_serve_cmd("--forward-to", "nohost"), capture_output=True, timeout=30)
    assert r.returncode == 2
    assert b"error:" in r.stderr and b"output.address" in r.stderr


def test_subprocess_demo_prints_enriched_sample(tmp_path):
    from probetag.samples import load_demo

    sample = load_demo()
    port = free_port()
    out_path = tmp_path / "out.jsonl"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(_serve_cmd("--demo", "--listen", f"127.0.0.1:{port}"),
                                stdout=out, stderr=subprocess.PIPE)
        try:
            assert wait_until(lambda: out_path.read_bytes().count(b"\n") >= len(sample), 20)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=20)
        finally:
            kill_if_running(proc)
    assert proc.returncode == 0, err
    assert b"event=demo_sent records=%d" % len(sample) in err
    objs = [json.loads(x) for x in out_path.read_bytes().splitlines()]
    assert [o["tag"] for o in objs] == [t for t, _ in sample]
    for o, (_, rec) in zip(objs, sample):
        assert {k: v for k, v in o["record"].items() if k != "probe"} == rec
    # Probe lines are tagged (which scanner is the detector's call: several
    # send the same bytes); the sshd login line is not.
    get_line = next(o for o in objs if o["record"].get("rawmsg") == "GET / HTTP/1.0#015")
    assert get_line["record"]["probe"]["scanner"]
    assert "probe" not in objs[0]["record"]


def test_subprocess_exits_when_stdout_closes():
    port = free_port()
    proc = subprocess.Popen(_serve_cmd("--listen", f"127.0.0.1:{port}"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert wait_listening(port)
        proc.stdout.close()  # the reader goes away, as `probetag serve | head -1` would
        s = sender.FluentSender("gone", host="127.0.0.1", port=port, timeout=3.0)
        assert s.emit("x", {"seq": 1}), s.last_error
        s.close()
        rc = proc.wait(20)
        err = proc.stderr.read()
    finally:
        kill_if_running(proc)
    assert rc == 1
    assert b"event=output_closed" in err and b'reason="output closed"' in err


def test_flags_override_the_file(tmp_path):
    from probetag._serve import _parser, build_config

    p = tmp_path / "c.yaml"
    p.write_text("listen:\n  address: 127.0.0.1:1111\n  tag_prefix: edge\n"
                 "output:\n  type: stdout\n  ack_timeout: 7\n")
    cfg = build_config(_parser().parse_args(["-c", str(p), "--listen", "127.0.0.1:2222",
                                             "--forward-to", "10.0.0.1:24224"]))
    assert cfg.listen.address == "127.0.0.1:2222" and cfg.listen.tag_prefix == "edge"
    assert (cfg.output.type, cfg.output.address, cfg.output.ack_timeout) == ("forward", "10.0.0.1:24224", 7.0)
    assert build_config(_parser().parse_args(["-c", str(p)])).output.type == "stdout"
