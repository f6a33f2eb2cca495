"""``probetag explain``'s text report: line numbers, plain words, samples,
one listener section per kind, grep's exit codes, colour and progress."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from probetag import _explain_report as report
from probetag.detect import load_catalogue

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "rsyslog"
TOOLS = ROOT / "tests" / "fixtures" / "tools"


def _explain(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "probetag", "explain", "--jobs", "1", *args],
                          capture_output=True, timeout=120, env={**os.environ, **(env or {})})


def _rows(text: str) -> dict[tuple[str, str], str]:
    """(source, probe name) -> its row in the report (``n  name  lines  words``)."""
    out = {}
    src = ""
    for ln in text.splitlines():
        head = re.match(r"^  (\S.*?): ", ln)
        if head:
            src = {"sender unknown": "sender"}.get(head.group(1), head.group(1))
            continue
        m = re.match(r"^ {4}\s*(\d+)  (\S+)\s", ln)
        if m:
            out[(src, m.group(2))] = ln
    return out


def test_every_catalogue_probe_has_plain_words() -> None:
    missing = sorted({s.probe for s in load_catalogue() if not report.describe(s.probe)})
    assert missing == []
    assert report.describe("GetRequest") == "HTTP GET / (web servers)"
    assert "SNMP" in report.describe("udp-scan-payload/161")


def test_rows_give_first_lines_plain_words_and_a_sample() -> None:
    path = FIX / "traditional.log"
    jsonl = [json.loads(x) for x in _explain("--format", "jsonl", str(path)).stdout.splitlines()]
    first: dict[tuple[str, str], list[int]] = {}
    for o in jsonl:
        if o["probe"]:
            first.setdefault((o["probe"]["source"] or "sender", o["probe"]["name"]), []).append(o["line"])
    p = _explain(str(path))
    assert p.returncode == 0
    text = p.stdout.decode()
    rows = _rows(text)
    assert set(rows) == set(first)
    for (src, name), lines in first.items():
        row = rows[(src, name)]
        shown = ", ".join(str(n) for n in lines[:3]) + (", …" if len(lines) > 3 else "")
        assert f"  {shown}  " in row, (name, row)
        words = report.describe(name)
        assert words[:20] in row, (name, row)
    assert any("GET / HTTP/1.0\\r" in row for (_s, name), row in rows.items() if name == "GetRequest")
    assert all(len(ln) <= 100 for ln in text.splitlines())  # not a terminal: 100 columns


def test_grammar_and_one_listener_section_per_kind() -> None:
    text = _explain(str(FIX / "traditional.log")).stdout.decode()
    assert "source(s)" not in text and " 1 lines" not in text and "1 sources" not in text
    assert text.count("received by:") == len(set(re.findall(r"received by: (.*)", text)))
    assert text.count("to close it:") == text.count("received by:")
    src = re.findall(r"^  (\S+): nmap", text, re.M)
    assert src and re.search(r"from: " + re.escape(src[0]), text)


def test_exit_codes_as_grep(tmp_path: Path) -> None:
    benign = tmp_path / "benign.log"
    benign.write_text("2026-12-05T17:00:00.000001+00:00 host1 sshd[812]: Accepted publickey for root\n")
    assert _explain(str(FIX / "traditional.log")).returncode == 0
    none = _explain(str(benign))
    assert none.returncode == 1 and b"no scanner-probe lines" in none.stdout
    assert _explain("--format", "jsonl", str(benign)).returncode == 1
    assert _explain(str(tmp_path / "missing.log")).returncode == 2
    # an error wins over found probes, as grep's 2 does
    assert _explain(str(FIX / "traditional.log"), str(tmp_path / "missing.log")).returncode == 2


def test_json_input_without_a_time_shows_no_1970(tmp_path: Path) -> None:
    f = tmp_path / "notime.json"
    f.write_text(json.dumps({"msg": "GET / HTTP/1.0#015", "hostname": "GET", "fromhost-ip": "203.0.113.7"}) + "\n")
    text = _explain("--input-format", "json", str(f)).stdout.decode()
    assert "1970" not in text


def test_color_only_when_asked_or_on_a_terminal() -> None:
    path = str(FIX / "traditional.log")
    assert b"\x1b[" not in _explain(path).stdout  # a pipe: auto is off
    assert b"\x1b[1m" in _explain("--color", "always", path).stdout
    assert b"\x1b[" not in _explain("--color", "never", path).stdout


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_only_on_a_terminal_for_big_input() -> None:
    tty = _Tty()
    p = report.Progress(tty, 200 * 10**6, every=0)
    p.update(50 * 10**6, "big.log")
    assert "50 of 200 MB (25 %)" in tty.getvalue() and "big.log" in tty.getvalue()
    p.close()
    assert tty.getvalue().endswith("\r\x1b[K")
    small, pipe = _Tty(), io.StringIO()
    report.Progress(small, 10**6, every=0).update(10**6)
    report.Progress(pipe, 200 * 10**6, every=0).update(10**6)
    assert small.getvalue() == "" and pipe.getvalue() == ""


@pytest.mark.parametrize("tool", ["masscan-http", "sslscan"])
def test_other_tools_read_in_plain_words(tool: str) -> None:
    text = _explain(str(TOOLS / tool / "rfc3339.log")).stdout.decode()
    rows = _rows(text)
    assert rows and all(report.describe(name)[:15] in row for (_s, name), row in rows.items())
