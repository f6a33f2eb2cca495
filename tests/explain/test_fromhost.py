"""rsyslog's central-server template ``%TIMESTAMP% %FROMHOST% %msg%`` through
``probetag explain``: real nmap scans (``tests/fixtures/corpus-extra``,
labelled from a packet capture), where two thirds of the probe lines keep no
probe byte and only their place in the scan names them."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FX = ROOT / "tests" / "fixtures" / "corpus-extra"
LABELS = [json.loads(x) for x in gzip.decompress((FX / "labels.jsonl.gz").read_bytes()).splitlines()]
RUNS = sorted({x["run"] for x in LABELS})


def explain(path: Path) -> list[dict | None]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugin")}
    out = subprocess.run([sys.executable, "-m", "probetag", "explain", "--format", "jsonl", "--jobs", "1",
                          str(path)], capture_output=True, env=env, timeout=300)
    assert out.returncode in (0, 1), out.stderr.decode()[-2000:]
    return [json.loads(x)["probe"] for x in out.stdout.decode().splitlines()]


def _score(labels: list[dict], probes: list[dict | None]) -> tuple[int, int, list, list]:
    lines = named = 0
    wrong, benign = [], []
    for lab, pr in zip(labels, probes):
        if lab["label"] == "benign":
            if pr is not None:
                benign.append(lab["line"])
            continue
        lines += 1
        if pr is None:
            continue
        if pr["name"] == lab["label"] or lab["label"] == "nse:" + pr["name"] or (
                lab["label"] == "nse:skypev2-version" and pr["name"] == "GetRequest"):
            named += 1
        else:
            wrong.append((lab["line"], lab["label"], pr["name"], pr.get("via")))
    return lines, named, wrong, benign


@pytest.mark.parametrize("run", RUNS)
def test_fromhost_scans_are_named(run: str) -> None:
    labels = [x for x in LABELS if x["run"] == run and x["format"] == "fromhost"]
    probes = explain(FX / "rsyslog" / run / "fromhost.log")
    assert len(probes) == len(labels)
    lines, named, wrong, benign = _score(labels, probes)
    assert benign == [] and wrong == []
    # what stays unnamed is the NSE scripts' lines after the service scan
    assert named / lines >= 0.94, (named, lines)


def test_an_empty_message_from_the_sender_before_the_scan_names_nothing_there(tmp_path: Path) -> None:
    # The start of a scan is counted line by line against the probes before
    # the first named one; one more empty line in that window (a benign
    # empty message from the same address) and the count no longer fits:
    # those lines stay unnamed rather than named by a shifted count.
    src = (FX / "rsyslog" / "sV_tcp" / "fromhost.log").read_bytes().split(b"\n")
    labels = [x for x in LABELS if x["run"] == "sV_tcp" and x["format"] == "fromhost"]
    first = next(x["line"] for x in labels if x["label"] == "GenericLines")
    lines = src[:first - 1] + [src[first - 1][:16] + b"127.0.0.1 "] + src[first - 1:]
    f = tmp_path / "fromhost.log"
    f.write_bytes(b"\n".join(lines))
    probes = explain(f)
    assert probes[first - 1] is None
    labels = [dict(x, line=x["line"] + (x["line"] >= first)) for x in labels]
    got = [probes[x["line"] - 1] for x in labels]
    _lines, named, wrong, benign = _score(labels, got)
    assert wrong == [] and benign == []
    assert all(probes[x["line"] - 1] is None for x in labels if x["label"] in ("GenericLines", "GetRequest"))
    assert named >= 40  # the rest of the scan (53 probe lines) is still named


def test_benign_lines_in_the_fromhost_format_stay_untagged(tmp_path: Path) -> None:
    msgs = ["Bad protocol version identification 'SSH-2.0-Go' from 203.0.113.5 port 40022",
            ' 203.0.113.5 - - [05/Dec/2026:17:00:00 +0000] "GET / HTTP/1.0" 200 612 "-" "curl/8.0"',
            " HTTP/1.0#015", "  #015", " RTSP/1.0 200 OK", " 42 OPTIONS", " mstshash=admin#015",
            " dump 16 03 01 02 00 01 00 01 fc 03 03 32 56", "", " ", " 0#015", " version", " #002` ",
            ' {"method": "GET", "path": "/", "proto": "HTTP/1.0"}#015']
    f = tmp_path / "fromhost.log"
    f.write_text("".join(f"Dec  5 17:00:{i:02d} 10.0.0.{i % 3}  session opened for user root\n"
                         f"Dec  5 17:00:{i:02d} 10.0.0.{i % 3} {m}\n" for i, m in enumerate(msgs)))
    probes = explain(f)
    assert len(probes) == 2 * len(msgs)
    assert [i + 1 for i, p in enumerate(probes) if p is not None] == []


def test_empty_messages_before_a_pause_are_not_the_scan_s_start(tmp_path: Path) -> None:
    # The start of a scan is counted against the probes before its first
    # named line: empty lines of the same sender before a pause (two
    # minutes before the scan) are not its lines and do not spoil the count.
    src = (FX / "rsyslog" / "sU_sV_udp" / "fromhost.log").read_bytes()
    early = b"".join(b"Dec  5 17:11:%02d 127.0.0.1 \n" % (30 + k) for k in range(3))
    f = tmp_path / "fromhost.log"
    f.write_bytes(early + src)
    probes = explain(f)
    assert probes[:3] == [None] * 3
    labels = [dict(x, line=x["line"] + 3) for x in LABELS if x["run"] == "sU_sV_udp" and x["format"] == "fromhost"]
    _lines, _named, wrong, benign = _score(labels, [probes[x["line"] - 1] for x in labels])
    assert wrong == [] and benign == []
    head = [x for x in labels if x["label"] in ("RPCCheck", "DNSVersionBindReq", "DNSStatusRequest")]
    assert head and all(probes[x["line"] - 1] is not None for x in head)


def test_the_text_report_shows_one_scan_per_sender() -> None:
    # most lines are named by their place after the scan went quiet between
    # two lines that named themselves: still one scan
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugin")}
    text = subprocess.run([sys.executable, "-m", "probetag", "explain",
                           str(FX / "rsyslog" / "sV_all_tcp" / "fromhost.log")],
                          capture_output=True, env=env, timeout=300).stdout.decode()
    assert "(fromhost format)" in text
    assert len(re.findall(r"^  127\.0\.0\.1: nmap, ", text, re.M)) == 1, text
