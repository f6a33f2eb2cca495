"""The things a new user meets first: ``probetag --version``, one log format
for every component (logfmt, or JSON with ``log_format: json``), ``/health``
that says 503 and why when records cannot flow, and the hint after
``--demo``."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

from fluent import sender

from util.downstream import Downstream
from util.ports import free_port, wait_listening
from util.wait import kill_if_running, wait_until

ROOT = Path(__file__).resolve().parents[2]
LOGFMT = re.compile(r"^ts=\S+Z level=(debug|info|warning|error) event=[a-z_]+( |$)")


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "probetag", *args]


def test_version_is_the_package_version():
    want = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for flag in ("--version", "-V"):
        r = subprocess.run(_cmd(flag), capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stdout == f"probetag {want}\n", r


def _health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _serve(tmp_path, config: str) -> tuple[subprocess.Popen, Path]:
    cfg = tmp_path / "p.yaml"
    cfg.write_text(config)
    err = tmp_path / "err.log"
    proc = subprocess.Popen(_cmd("serve", "-c", str(cfg)), stdout=subprocess.DEVNULL,
                            stderr=open(err, "wb"))
    return proc, err


def test_every_component_logs_logfmt_and_health_reports_a_dead_downstream(tmp_path):
    fwd, http, nd, met, dead = (free_port() for _ in range(5))
    proc, err = _serve(tmp_path, f"""
listen: {{address: "127.0.0.1:{fwd}"}}
http: {{address: "127.0.0.1:{http}"}}
ndjson: {{address: "127.0.0.1:{nd}"}}
metrics: {{address: "127.0.0.1:{met}"}}
output: {{type: ndjson, address: "127.0.0.1:{dead}", retry_max: 0.2}}
""")
    try:
        assert wait_listening(met) and wait_listening(nd)
        assert _health(met) == (200, {"status": "ok"})
        s = sender.FluentSender("t", host="127.0.0.1", port=fwd, timeout=3.0)
        assert s.emit("x", {"message": "hello"}), s.last_error
        s.close()
        # nothing listens on the downstream port: /health turns 503 with the reason
        assert wait_until(lambda: _health(met)[0] == 503, 30)
        code, body = _health(met)
        assert body["status"] == "unavailable" and "downstream down" in body["reason"]
        assert f"127.0.0.1:{dead}" in body["reason"]
        # the HTTP input's /health says the same
        code, body = _health(http)
        assert code == 503 and "downstream down" in body["reason"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            kill_if_running(proc)
    lines = err.read_text().splitlines()
    assert lines and all(LOGFMT.match(ln) for ln in lines), [ln for ln in lines if not LOGFMT.match(ln)]
    text = "\n".join(lines)
    for event in ("event=listening input=forward", "event=listening input=http",
                  "event=listening input=ndjson", "event=listening input=metrics", "event=output_error"):
        assert event in text, event


def test_health_recovers_when_the_downstream_comes_back(tmp_path):
    fwd, met = free_port(), free_port()
    down = Downstream()
    down.start()
    port = down.port
    down.stop()  # the port is known, nothing listens on it yet
    proc, err = _serve(tmp_path, f"""
listen: {{address: "127.0.0.1:{fwd}"}}
metrics: {{address: "127.0.0.1:{met}"}}
output: {{type: forward, address: "127.0.0.1:{port}", retry_max: 0.2}}
""")
    try:
        assert wait_listening(met)
        s = sender.FluentSender("t", host="127.0.0.1", port=fwd, timeout=3.0)
        assert s.emit("x", {"message": "hello"}), s.last_error
        s.close()
        assert wait_until(lambda: _health(met)[0] == 503, 30)
        assert "downstream down" in _health(met)[1]["reason"]
        with Downstream(port=port) as back:
            assert wait_until(lambda: any(r.records for r in back.requests), 30)
            assert wait_until(lambda: _health(met) == (200, {"status": "ok"}), 30)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            kill_if_running(proc)


def test_health_reports_the_in_flight_limit():
    import asyncio

    from probetag._config import Flow
    from probetag._metrics import Metrics
    from probetag._runtime import Pipeline

    class Output:
        down = None

    async def main():
        p = Pipeline(None, Output(), Flow(max_inflight_records=10), Metrics())  # type: ignore[arg-type]
        assert p.unhealthy() is None
        p.flow.add(10, 100)
        reason = p.unhealthy()
        p.flow.release(10, 100)
        return reason, p.unhealthy()

    full, after = asyncio.run(main())
    assert full is not None and full.startswith("in-flight limit reached: 10/10 records")
    assert after is None


def test_log_format_json(tmp_path):
    fwd = free_port()
    proc, err = _serve(tmp_path, f'listen: {{address: "127.0.0.1:{fwd}"}}\nlog_format: json\n')
    try:
        assert wait_listening(fwd)
        assert wait_until(lambda: b"serving" in err.read_bytes(), 20)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            kill_if_running(proc)
    objs = [json.loads(ln) for ln in err.read_text().splitlines()]
    assert objs and all({"ts", "level", "event"} <= o.keys() for o in objs)
    listening = next(o for o in objs if o["event"] == "listening")
    assert listening["input"] == "forward" and listening["address"] == f"127.0.0.1:{fwd}"


def test_exec_filter_logs_logfmt(tmp_path):
    r = subprocess.run(_cmd("exec-filter"), input=b'{"message":"a"}\n[1]\n', capture_output=True, timeout=30)
    lines = r.stderr.decode().splitlines()
    assert r.returncode == 0 and lines and all(LOGFMT.match(ln) for ln in lines), lines
    assert any("event=bad_input_rejected" in ln for ln in lines)
    assert any("event=done" in ln and "rejected=1" in ln for ln in lines)


def test_demo_says_where_to_send_records_and_how_to_stop(tmp_path):
    port = free_port()
    err = tmp_path / "err.log"
    proc = subprocess.Popen(_cmd("serve", "--demo", "--listen", f"127.0.0.1:{port}"),
                            stdout=subprocess.DEVNULL, stderr=open(err, "wb"))
    try:
        assert wait_until(lambda: b"event=demo_hint" in err.read_bytes(), 30)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        finally:
            kill_if_running(proc)
    hint = next(ln for ln in err.read_text().splitlines() if "event=demo_hint" in ln)
    assert f"127.0.0.1:{port}" in hint and "Ctrl-C" in hint and "fluent-cat" in hint
