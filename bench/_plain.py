"""A fresh venv with a plain ``pip install .`` of this source tree: what a new
user gets. bench_e2e (``--plain``) runs serve from it and tests/install
checks that it starts on the fast paths.

Theory of operation
-------------------
* The tree is copied first (git's tracked and untracked-but-not-ignored
  files, else everything but build output), so nothing built in the work
  tree (an in-place ``_speedups`` build, ``build/``, egg-info) leaks into
  the install, and the install writes nothing into the work tree.
* ``pip install SRC`` with no extras and no flags: the dependencies and
  their environment markers decide what comes along, and setup.py builds
  the C accelerator when a compiler and the Python headers are there.
* ``startup(python)`` runs ``probetag explain`` on a three-line file and
  returns the fields of its ``event=matcher`` line and any ``slow_path``
  warnings: the backend and walker that serve and explain run with.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_IGNORE = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", "*.so",
                                 ".pytest_cache", ".hypothesis", "results", ".venv")

SAMPLE = (b"2026-11-27T13:46:08+00:00 GET / HTTP/1.0#015\n"
          b"2026-11-27T13:46:08+00:00 127.0.0.1 #015\n"
          b"2026-11-27T13:46:09+00:00 myhost sshd[1]: Accepted publickey for root\n")


def copy_tree(root: Path, dest: Path) -> Path:
    src = dest / "src"
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, check=True, timeout=60).stdout
        files = [f for f in out.decode().split("\0") if f]
    except (OSError, subprocess.SubprocessError):
        files = []
    if not files:
        shutil.copytree(root, src, ignore=_IGNORE)
        return src
    for f in files:
        p = root / f
        if not p.is_file():
            continue  # deleted in the work tree
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, src / f)
    return src


def build(dest: Path | None = None, root: Path = ROOT, timeout: float = 900) -> Path:
    """-> the venv's python, after ``python -m venv`` and ``pip install SRC``."""
    dest = Path(dest or tempfile.mkdtemp(prefix="probetag-plain-"))
    src = copy_tree(root, dest)
    venv = dest / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PROBETAG_PURE")}
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", str(src)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"pip install failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return py


def startup(python: Path, workdir: Path) -> tuple[dict[str, str], list[str], bytes]:
    """-> (fields of ``event=matcher``, ``slow_path`` reasons, jsonl output)
    of ``probetag explain`` run by ``python`` on ``SAMPLE``."""
    sample = workdir / "sample.log"
    sample.write_bytes(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PROBETAG_PURE")}
    proc = subprocess.run([str(python), "-m", "probetag", "explain", "--format", "jsonl", str(sample)],
                          env=env, capture_output=True, timeout=120, cwd=workdir)
    if proc.returncode not in (0, 1):  # 0: probes found, 1: none (grep's codes)
        raise RuntimeError(f"explain failed: {proc.stderr.decode(errors='replace')[-3000:]}")
    return parse_log(proc.stderr.decode(errors="replace")) + (proc.stdout,)


def parse_log(text: str) -> tuple[dict[str, str], list[str]]:
    fields: dict[str, str] = {}
    slow: list[str] = []
    for line in text.splitlines():
        if " event=matcher " in f" {line} ":
            fields = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line.split("event=matcher", 1)[1]))
        elif " event=slow_path " in f" {line} ":
            m = re.search(r'reason=("[^"]*"|\S+)', line)
            slow.append(m.group(1).strip('"') if m else line)
    return fields, slow
