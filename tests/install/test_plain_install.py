"""What a new user gets: a fresh venv and a plain ``pip install .`` (no extras).

The default install must be the fast one: a multi-literal matcher that scans
in C (hyperscan on Linux x86_64, where its wheels are, else pyahocorasick)
and, where a C compiler and the Python headers are present, the C walker.
The venv is built by ``bench/_plain.py``, the same code ``bench_e2e
--plain`` measures with."""

from __future__ import annotations

import json
import platform
import shutil
import sys
import sysconfig
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import _plain  # noqa: E402


def _can_build_c() -> bool:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) is not None and (Path(sysconfig.get_paths()["include"]) / "Python.h").exists()


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    dest = tmp_path_factory.mktemp("plain")
    return _plain.build(dest), dest


def test_plain_install_starts_on_the_fast_paths(plain):
    python, dest = plain
    fields, slow, out = _plain.startup(python, dest)
    want = "hyperscan" if (sys.platform == "linux" and platform.machine() == "x86_64") else "ahocorasick"
    assert fields.get("backend") == want, fields
    if _can_build_c():
        assert fields.get("walker") == "c", fields
        assert slow == [], slow
    # and it works: the GET line and its lone CR are tagged, the sshd line not
    lines = [json.loads(x) for x in out.splitlines()]
    assert [x["probe"]["name"] if x["probe"] else None for x in lines] == ["GetRequest", "GetRequest", None]


def test_plain_install_has_both_matchers_and_no_pure_default(plain):
    import subprocess

    python, _dest = plain
    code = ("import probetag._accel as a, probetag.detect as d; "
            "print(a.fast_backends(), d.LiteralSet([b'abc']).backend, "
            "hasattr(a.speedups, 'walk'))")
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"}, cwd=_dest)
    assert proc.returncode == 0, proc.stderr
    backends, default, has_c = proc.stdout.strip().rsplit(" ", 2)
    assert "ahocorasick" in backends, backends
    assert default != "re"
    if _can_build_c():
        assert has_c == "True"


def test_log_line_parser():
    fields, slow = _plain.parse_log(
        "ts=x level=info event=matcher backend=hyperscan walker=c\n"
        'ts=x level=warning event=slow_path reason="pure-Python chunk walk: x"\n')
    assert fields == {"backend": "hyperscan", "walker": "c"}
    assert slow == ["pure-Python chunk walk: x"]
