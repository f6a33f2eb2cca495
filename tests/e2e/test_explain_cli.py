"""``probetag explain`` on the golden rsyslog fixtures (real captured lines,
tests/fixtures/rsyslog/, ground truth from nmap's trace and the wire).

Runs the real CLI as a subprocess, like a user would. Fast: no nmap here.
Every test runs twice: ``--jobs 1`` (one process) and ``--jobs 2`` (the
reading process and the detecting process, forced on however small the
input): the two must give the same answers.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from e2e_scoring import REPORT, score

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "rsyslog"
FILES = {"traditional": "traditional.log", "rfc3339": "rfc3339.log", "rfc5424": "rfc5424.log", "json": "json.log"}


_JOBS = ["--jobs", "1"]


@pytest.fixture(autouse=True, params=["1", "2"], ids=["jobs1", "jobs2"])
def _jobs(request: pytest.FixtureRequest) -> Any:
    _JOBS[1] = request.param
    yield
    _JOBS[1] = "1"


def _run(*args: str, stdin: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "probetag", "explain", *_JOBS, *args], input=stdin,
                          capture_output=True, timeout=timeout)


def _jsonl(*args: str, stdin: bytes | None = None) -> list[dict[str, Any]]:
    p = _run("--format", "jsonl", *args, stdin=stdin)
    # grep's exit codes: 0 probes found, 1 none
    assert p.returncode == (0 if b'"probe": {' in p.stdout else 1), p.stderr.decode(errors="replace")
    return [json.loads(x) for x in p.stdout.splitlines()]


def _truth(fix: Path = FIX) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (fix / "truth.jsonl").read_text().splitlines()]


def _props(fix: Path = FIX) -> list[dict[str, Any]]:
    return [json.loads(x.decode("utf-8", "surrogateescape"))
            for x in (fix / "json.log").read_bytes().split(b"\n") if x]


#: the same kind of run with rsyslog set up differently (FIELD_GUIDE 2.2, 4)
VARIANT_DIRS = sorted(d for d in (FIX / "variants").glob("*") if d.is_dir())


def test_fixtures_are_aligned() -> None:
    n = len(_truth())
    assert n > 50
    for name in FILES.values():
        assert (FIX / name).read_bytes().count(b"\n") == n, name


@pytest.mark.parametrize("fmt", list(FILES))
def test_golden_fixture_verdicts(fmt: str) -> None:
    out = _jsonl(str(FIX / FILES[fmt]))
    truth = _truth()
    assert [o["line"] for o in out] == list(range(1, len(truth) + 1))
    assert all(set(o) == {"line", "probe"} for o in out)
    s = score(fmt, truth, _props(), [o["probe"] for o in out])
    REPORT.append("golden " + s.line())
    # Never tag a benign or rsyslog-internal line; every probe line the
    # format can carry is named as nmap's trace names it (the same strict
    # bar as tests/e2e/test_rsyslog_nmap.py, on the recorded run).
    assert not s.false_positives, s.false_positives[:10]
    assert not s.misnamed, s.problems()
    assert not s.missed, s.problems()
    assert s.correct > 0


@pytest.mark.parametrize("fmt", list(FILES))
@pytest.mark.parametrize("vdir", VARIANT_DIRS, ids=[d.name for d in VARIANT_DIRS])
def test_golden_variant_verdicts(vdir: Path, fmt: str) -> None:
    truth = _truth(vdir)
    out = _jsonl(str(vdir / FILES[fmt]))
    assert [o["line"] for o in out] == list(range(1, len(truth) + 1))
    s = score(fmt, truth, _props(vdir), [o["probe"] for o in out])
    REPORT.append(f"golden/{vdir.name} " + s.line())
    assert not s.false_positives, s.problems()
    assert not s.misnamed, s.problems()
    assert not s.missed, s.problems()


def test_explicit_input_format_equals_auto() -> None:
    for fmt, name in FILES.items():
        assert _jsonl("--input-format", fmt, str(FIX / name)) == _jsonl(str(FIX / name)), fmt


def test_stdin_and_gzip_give_the_same_answer(tmp_path: Path) -> None:
    src = FIX / "traditional.log"
    gz = tmp_path / "traditional.log.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    plain = _jsonl(str(src))
    assert _jsonl("-", stdin=src.read_bytes()) == plain
    assert _jsonl(str(gz)) == plain
    assert _jsonl("-", stdin=gz.read_bytes()) == plain


def test_several_files_name_the_file_and_restart_numbering() -> None:
    a, b = str(FIX / "traditional.log"), str(FIX / "json.log")
    out = _jsonl(a, b)
    n = len(_truth())
    assert len(out) == 2 * n
    assert [o["file"] for o in out] == [a] * n + [b] * n
    assert [o["line"] for o in out] == list(range(1, n + 1)) * 2
    # the same verdicts as one file at a time
    assert [o["probe"] for o in out[:n]] == [o["probe"] for o in _jsonl(a)]


def test_text_summary_names_scanner_probes_and_listener() -> None:
    out = _jsonl(str(FIX / "json.log"))
    tagged = {o["probe"]["name"] for o in out if o["probe"]}
    p = _run(str(FIX / "json.log"))
    assert p.returncode == 0, p.stderr
    text = p.stdout.decode()
    n = len(_truth())
    assert f"{n} lines (json format)" in text
    assert f"{sum(1 for o in out if o['probe'])} scanner-probe lines" in text
    assert "nmap" in text
    for name in tagged:
        assert name in text
    assert "received by: imtcp" in text or "received by: imudp" in text  # inputname is in the JSON
    assert "to close it:" in text and "127.0.0.1" in text
    trad = _run(str(FIX / "traditional.log")).stdout.decode()
    assert "a syslog network input" in trad  # the plain formats do not say which input


def test_missing_file_is_an_error_other_files_still_read(tmp_path: Path) -> None:
    p = _run("--format", "jsonl", str(tmp_path / "nope.log"), str(FIX / "rfc3339.log"))
    assert p.returncode == 2
    assert b"nope.log" in p.stderr
    assert len(p.stdout.splitlines()) == len(_truth())


def test_edge_input_lines(tmp_path: Path) -> None:
    f = tmp_path / "odd.log"
    # no trailing newline, an empty line, a line that is not syslog at all,
    # invalid UTF-8
    f.write_bytes(b"\nnot syslog at all\n\xff\xfe binary \x00 junk\nNov 27 10:00:00 h app: ok")
    out = _jsonl(str(f))
    assert [o["line"] for o in out] == [1, 2, 3, 4]
    assert all(o["probe"] is None for o in out)
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    assert _jsonl(str(empty)) == []


_RSS_CHILD = (
    "import resource, sys\n"
    "from probetag.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "sys.stdout.flush()\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def _explain_rss(*args: str) -> tuple[bytes, int, float]:
    """(stdout, peak RSS in KiB, seconds) of ``probetag explain`` in a child."""
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", _RSS_CHILD, "explain", *_JOBS, *args], capture_output=True, timeout=300)
    dt = time.monotonic() - t0
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p.stdout, int(p.stderr.split()[-1]), dt


_REPEAT = 12  # about 20 MB


def test_big_file_streams_in_constant_memory(tmp_path: Path) -> None:
    # benign lines with the golden file's lines mixed in
    golden = (FIX / "rfc3339.log").read_bytes()
    benign = b"".join(b"2026-11-27T10:00:%02d.000000+00:00 app01 svc[42]: request id=%06d served in 3 ms\n"
                      % (i % 60, i) for i in range(20_000))
    big = tmp_path / "big.log"
    with open(big, "wb") as f:
        for _ in range(_REPEAT):
            f.write(benign)
            f.write(golden)
    size = big.stat().st_size
    lines = golden.count(b"\n") * _REPEAT + 20_000 * _REPEAT
    _, rss_small, dt_small = _explain_rss("--format", "jsonl", str(FIX / "rfc3339.log"))
    out, rss_big, dt = _explain_rss("--format", "jsonl", str(big))
    assert out.count(b"\n") == lines
    tagged_small = sum(1 for x in _jsonl(str(FIX / "rfc3339.log")) if x["probe"])
    assert out.count(b'"probe": {') >= _REPEAT * tagged_small * 0.9  # correlation across blocks may differ slightly
    _, rss_text, dt_text = _explain_rss(str(big))
    # the text report loads its own parts (plain-word descriptions, the
    # report's tables): its baseline is the same report on the small file
    _, rss_small_text, _ = _explain_rss(str(FIX / "rfc3339.log"))
    # start-up (imports, compiling the catalogue) is measured on the small file
    # and taken out; wall clock, so other load on the machine lowers it
    REPORT.append(f"explain on {size / 1e6:.0f} MB / {lines} lines: jsonl {size / 1e6 / max(dt - dt_small, 1e-3):.0f} MB/s, "
                  f"text {size / 1e6 / max(dt_text - dt_small, 1e-3):.0f} MB/s after start-up ({dt_small:.1f} s); "
                  f"peak RSS {rss_small // 1024} MB (small file) vs {rss_big // 1024} MB (big)")
    # constant memory: the big file costs far less extra than its own size
    assert (rss_big - rss_small) * 1024 < size / 2, (rss_small, rss_big)
    assert (rss_text - rss_small_text) * 1024 < size / 2, (rss_small_text, rss_text)


def test_reader_going_away_stops_quietly(tmp_path: Path) -> None:
    f = tmp_path / "many.log"
    f.write_bytes(b"Nov 27 10:00:00 h app: line\n" * 200_000)
    p = subprocess.Popen([sys.executable, "-m", "probetag", "explain", *_JOBS, "--format", "jsonl", str(f)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    assert p.stdout.readline() == b'{"line": 1, "probe": null}\n'
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=60) == 141
    assert b"Traceback" not in err and b"error" not in err


def test_config_file_sets_the_detection(tmp_path: Path) -> None:
    src = str(FIX / "traditional.log")
    default = [o["probe"] for o in _jsonl(src)]
    strict = tmp_path / "strict.yaml"
    strict.write_text("detect:\n  min_confidence: 0.99\n")
    picky = [o["probe"] for o in _jsonl("--config", str(strict), src)]
    assert sum(p is not None for p in picky) < sum(p is not None for p in default)
    assert all(p is None or p["confidence"] >= 0.99 for p in picky)
    bad = tmp_path / "bad.yaml"
    bad.write_text("detect:\n  no_such_key: 1\n")
    p = _run("--config", str(bad), src)
    assert p.returncode == 2 and b"no_such_key" in p.stderr


@pytest.mark.parametrize("fmt", list(FILES))
def test_text_counts_rsyslog_framing_errors(fmt: str) -> None:
    data = (FIX / FILES[fmt]).read_bytes()
    want = sum(1 for ln in data.split(b"\n")
               if b"Framing Error in received TCP message" in ln or b"Incomplete frame at end of stream" in ln)
    assert want > 0  # the nmap run provokes them (LDAP probes start with '0')
    text = _run(str(FIX / FILES[fmt])).stdout.decode()
    assert f"{want} rsyslog framing-error lines" in text
    # they are never tagged
    out = _jsonl(str(FIX / FILES[fmt]))
    lines = data.split(b"\n")
    assert not [o for o in out if o["probe"] and b"rsyslogd" in lines[o["line"] - 1][:60]]


def test_connection_across_the_sniffed_lines_is_one_batch(tmp_path: Path) -> None:
    # explain sniffs the first 200 lines for the format; a request line there
    # and its lone CR just after it must still be one batch (look-ahead)
    benign = [b"Nov 27 10:00:00 app01 svc[1]: request %d served" % i for i in range(199)]
    probe = [b"Nov 27 10:00:07 GET / HTTP/1.0#015", b"Nov 27 10:00:07 10.1.2.3 #015 "]
    f = tmp_path / "edge.log"
    f.write_bytes(b"\n".join(benign + probe) + b"\n")
    out = _jsonl(str(f))
    assert [o["line"] for o in out] == list(range(1, 202))
    assert all(o["probe"] is None for o in out[:199])
    got = [(o["probe"]["name"], o["probe"]["source"]) for o in out[199:]]
    assert got == [("GetRequest", "10.1.2.3")] * 2
    f.write_bytes(b"\n".join(benign + probe))  # no final LF: same answer
    assert _jsonl(str(f)) == out
