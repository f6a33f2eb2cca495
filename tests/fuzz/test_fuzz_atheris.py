"""A short, bounded coverage-guided run of every fuzz target with atheris
(libFuzzer): ``tools/fuzz/fuzz.py``, each seeded with a valid input and the
checked-in corpus (``tools/fuzz/corpus/TARGET``: the hostile inputs of
issue 14), with libFuzzer's own hang (-timeout) and memory (-rss_limit_mb)
limits. Runs, crashes (0) and the run time are printed with the other
figures. The same run, longer: ``fuzz.py TARGET DIR -max_total_time=600``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest

import targets

FUZZ = Path(__file__).resolve().parents[2] / "tools" / "fuzz" / "fuzz.py"
CORPUS = FUZZ.parent / "corpus"
RUNS, SECONDS = 10_000, 2


def _seeds() -> dict[str, list[bytes]]:
    entries = b"".join(msgpack.packb([1700000000 + i, {"message": "GET / HTTP/1.0#015", "host": "h"}])
                       for i in range(2))
    frame = msgpack.packb(["t.x", entries, {"chunk": "Y2h1bmsK", "size": 2}], use_bin_type=True)
    ping = msgpack.packb(["PING", "client", b"0" * 16, "0" * 128, "", ""], use_bin_type=True)
    body = b'[{"message":"GET / HTTP/1.0#015","host":"h"}]'
    http = (b"POST /v1/vector HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    return {
        "forward": [frame, b"\xc0" + frame],
        "forward_handshake": [ping + frame],
        "http": [http],
        "ndjson": [json.dumps({"message": "HELP#015", "tag": "a"}).encode() + b"\n{}\n"],
        "decoders": [b"<13>Nov 27 13:00:00 GET / HTTP/1.0#015", b"\\x16\\x03\\x01#015"],
        "config": [b"listen:\n  address: 127.0.0.1:0\n  shared_key: k\nflow:\n  max_inflight_records: 10\n"],
        "exec_filter": [b"\x00" + json.dumps({"message": "GET / HTTP/1.0#015", "tag": "a", "time": 1}).encode()
                        + b"\n", b"\x01" + msgpack.packb({"message": "HELP#015", "time": 1.5})],
    }


@pytest.mark.parametrize("target", sorted(targets.TARGETS))
def test_atheris_bounded_run(target, tmp_path, figures):
    pytest.importorskip("atheris", reason="atheris is in the 'test' extra; pip install -e '.[test]'")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(_seeds()[target]):
        (corpus / f"seed{i}").write_bytes(seed)
    checked_in = sorted((CORPUS / target).iterdir())
    assert checked_in, f"no corpus for {target} in {CORPUS}"
    for f in checked_in:  # copied: libFuzzer adds what it finds to its corpus folder
        (corpus / f.name).write_bytes(f.read_bytes())
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(FUZZ), target, str(corpus), f"-runs={RUNS}", f"-max_total_time={SECONDS}",
         "-timeout=5", "-rss_limit_mb=1024", f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
        capture_output=True, text=True, timeout=SECONDS + 60, cwd=tmp_path)
    elapsed = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    m = re.search(r"Done (\d+) runs", out)
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-")))
    cov = re.findall(r"cov: (\d+)", out)
    figures.add(target=target, runs=int(m.group(1)) if m else 0, crashes=len(crashes),
                coverage=int(cov[-1]) if cov else 0, seconds=round(elapsed, 1))
    assert proc.returncode == 0 and not crashes, (crashes, out[-3000:])
    assert m and int(m.group(1)) >= 200, out[-2000:]  # a real run, even on a loaded machine
