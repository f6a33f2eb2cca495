"""``probetag._accel``: the default matcher is a C one, never the ``re``
reference, and serve and explain say at start which paths they run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from probetag import _accel
from probetag.detect import LiteralSet, available_backends


def test_default_matcher_is_a_fast_one():
    assert _accel.matcher_backend() in ("hyperscan", "ahocorasick")
    assert LiteralSet([b"GET / HTTP"]).backend == _accel.matcher_backend()
    assert available_backends()[-1] == "re"  # still there, as the tests' reference


def test_no_fast_matcher_is_an_error_not_a_slow_fallback(monkeypatch):
    monkeypatch.setattr(_accel, "fast_backends", lambda: ())
    with pytest.raises(ImportError, match="pyahocorasick"):
        LiteralSet([b"GET / HTTP"])
    assert any("no multi-literal matcher" in why for why in _accel.slow_paths())
    assert _accel.describe()["backend"] == "none"


def _explain_stderr(tmp_path, pure: bool) -> str:
    log = tmp_path / "one.log"
    log.write_bytes(b"2026-11-27T13:46:09+00:00 myhost sshd[1]: Accepted publickey for root\n")
    env = {k: v for k, v in os.environ.items() if k != "PROBETAG_PURE"}
    if pure:
        env["PROBETAG_PURE"] = "1"
    p = subprocess.run([sys.executable, "-m", "probetag", "explain", str(log)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr  # a benign file: no probes (grep's exit codes)
    return p.stderr


def test_explain_logs_the_matcher_and_warns_on_the_pure_walker(tmp_path):
    err = _explain_stderr(tmp_path, pure=True)
    assert f"event=matcher backend={_accel.matcher_backend()} walker=python" in err
    assert "event=slow_path" in err and "PROBETAG_PURE" in err
    if _accel.speedups is not None:  # built here: the default run is the fast one, no warning
        err = _explain_stderr(tmp_path, pure=False)
        assert f"event=matcher backend={_accel.matcher_backend()} walker=c" in err
        assert "slow_path" not in err


def test_serve_logs_the_matcher_before_it_listens():
    p = subprocess.Popen([sys.executable, "-m", "probetag", "serve", "--listen", "127.0.0.1:0"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    lines = []
    try:
        assert p.stderr is not None
        for line in p.stderr:
            lines.append(line)
            if "event=serving" in line or len(lines) > 50:
                break
    finally:
        p.terminate()
        p.wait(timeout=30)
    events = [ln.split("event=")[1].split()[0] for ln in lines if "event=" in ln]
    assert events[0] == "matcher" and "serving" in events, lines
    assert f"backend={_accel.matcher_backend()} walker={_accel.WALK_BACKEND}" in lines[0]
