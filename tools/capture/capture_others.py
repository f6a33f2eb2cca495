#!/usr/bin/env python3
"""Capture what other scanners installed here send (sipvicious, ike-scan,
sslscan, masscan) and write the catalogue file scanners.yaml.

Theory of operation
-------------------
* Each tool runs twice against recorder.py on 127.0.0.1, once per port of its
  own (port A, then port B), so the journal separates the two runs by port.
* Sends of the two runs are paired by order (after dropping exact repeats:
  ike-scan retransmits, sslscan retries). Bytes that are the same in both
  runs are the tool's; bytes that differ are random (SIP Call-IDs and tags,
  IKE cookies, TLS client randoms).
* A send identical in both runs becomes a ``match: payload`` entry. A text
  send (SIP) that differs becomes ``match: marker`` entries for its constant
  header lines that name the tool (``User-Agent: friendly-scanner``). A binary
  send that differs becomes one ``match: marker`` entry on its longest
  constant run; over TCP the run may not contain LF because rsyslog cuts a
  TCP stream at every LF (FIELD_GUIDE 1), so no log line could hold it.
* masscan cannot scan over the loopback interface (see MASSCAN_NOTE); its
  run is still attempted and recorded, and the result is reported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from capture_common import (  # noqa: E402
    TARGET_BYTES, Entry, Send, constant_marker, read_journal, sends, write_yaml,
)
from capture_nmap import CATALOGUE, Recording  # noqa: E402

BASE_PORT = 45000

MASSCAN_NOTE = (
    "masscan 1.3.2 sends through libpcap with its own TCP/IP stack and Ethernet header. On 'lo' it "
    "refuses to start ('failed to detect MAC address of interface \"lo\"', lo's MAC being all zero); "
    "with --adapter-mac and --router-mac set to non-zero values its frames carry a destination MAC "
    "that lo's receive path treats as another host's, so nothing reaches 127.0.0.1 (found=0, "
    "recorder saw no packet); an all-zero --router-mac means 'unset' and triggers an ARP lookup.")


@dataclass(frozen=True, slots=True)
class Tool:
    name: str  # entry id prefix and probe name
    scanner: str
    proto: str
    cmd: tuple[str, ...]  # "{port}" is replaced
    version_cmd: tuple[str, ...]
    markers: tuple[str, ...] = ()  # regexes for constant text lines worth a marker entry
    timeout: float = 120.0


TOOLS = (
    Tool("sipvicious-svmap", "sipvicious", "udp", ("svmap", "127.0.0.1", "-p", "{port}"),
         ("dpkg-query", "-W", "-f", "${Version}", "sipvicious"),
         markers=(r"^User-Agent: ", r'^(From|To): "sipvicious"')),
    Tool("sipvicious-svwar", "sipvicious", "udp",
         ("svwar", "-e100-102", "127.0.0.1", "-p", "{port}"),
         ("dpkg-query", "-W", "-f", "${Version}", "sipvicious"),
         markers=(r"^User-Agent: ",)),
    Tool("ike-scan-main-mode", "ike-scan", "udp",
         ("ike-scan", "--sport=0", "--dport={port}", "127.0.0.1"),
         ("dpkg-query", "-W", "-f", "${Version}", "ike-scan")),
    Tool("ike-scan-aggressive", "ike-scan", "udp",
         ("ike-scan", "-A", "--sport=0", "--dport={port}", "127.0.0.1"),
         ("dpkg-query", "-W", "-f", "${Version}", "ike-scan")),
    Tool("ike-scan-ikev2", "ike-scan", "udp",
         ("ike-scan", "--ikev2", "--sport=0", "--dport={port}", "127.0.0.1"),
         ("dpkg-query", "-W", "-f", "${Version}", "ike-scan")),
    Tool("sslscan", "sslscan", "tcp", ("sslscan", "--no-colour", "127.0.0.1:{port}"),
         ("dpkg-query", "-W", "-f", "${Version}", "sslscan"), timeout=240.0),
    Tool("masscan-banners", "masscan", "tcp",
         ("masscan", "127.0.0.1", "-p{port}", "--banners", "--adapter", "lo",
          "--adapter-ip", "127.0.0.2", "--adapter-mac", "02-00-00-00-00-01",
          "--router-mac", "02-00-00-00-00-02", "--wait", "3"),
         ("dpkg-query", "-W", "-f", "${Version}", "masscan"), timeout=60.0),
)


def _run(cmd: list[str], timeout: float) -> tuple[int, str, float]:
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return p.returncode, p.stdout + p.stderr, time.time() - t0
    except subprocess.TimeoutExpired:
        return -1, "(timed out)", time.time() - t0
    except FileNotFoundError:
        return -2, f"{cmd[0]}: not installed", 0.0


def _unique(seq: list[Send]) -> list[Send]:
    seen, out = set(), []
    for s in seq:
        if s.data and s.data not in seen:
            seen.add(s.data)
            out.append(s)
    return out


def _is_text(data: bytes) -> bool:
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in data)
    return printable >= 0.95 * len(data)


def entries_for(tool: Tool, first: list[Send], second: list[Send], prov: str,
                seen: set[tuple[str, str, bytes]]) -> list[Entry]:
    """``seen``: (scanner, transport, bytes) already written, by this tool or
    an earlier one of the same scanner (svmap and svwar share a User-Agent)."""
    out: list[Entry] = []

    def add(payload: bytes, match: str, notes: str) -> None:
        key = (tool.scanner, tool.proto, payload)
        if key in seen:
            return
        seen.add(key)
        out.append(Entry(id=f"{tool.name}-{len(out) + 1}", probe=tool.name, scanner=tool.scanner,
                         transport=tool.proto, payload=payload, match=match, provenance=prov,
                         notes=notes))

    for k, s in enumerate(first):
        other = second[k].data if k < len(second) else None
        if other == s.data:
            add(s.data, "payload", f"send {k + 1}; identical in both runs")
            continue
        if other is None:
            continue  # seen once only: cannot tell its constant part from its random part
        if _is_text(s.data):
            lines_b = set(other.split(b"\n"))
            for line in s.data.split(b"\n"):
                text = line.rstrip(b"\r")
                if (line in lines_b and not any(t in text for t in TARGET_BYTES)
                        and any(re.match(rx, text.decode("latin-1")) for rx in tool.markers)):
                    add(text, "marker", f"a header line of send {k + 1}, the same in both runs")
            continue
        found = constant_marker(s.data, other, forbid=b"\n" if tool.proto == "tcp" else b"")
        if found is not None:
            off, run = found
            add(run, "marker", f"bytes {off}..{off + len(run) - 1} of send {k + 1} ({len(s.data)} bytes): "
                               "the longest run that is the same in both runs and names no target"
                               + (" and has no LF" if tool.proto == "tcp" else ""))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/probetag-capture-others"))
    ap.add_argument("--out", type=Path, default=CATALOGUE / "scanners.yaml")
    ap.add_argument("--only", default="", help="comma list of tool names")
    args = ap.parse_args(argv)
    work: Path = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    tools = [t for t in TOOLS if not args.only or t.name in args.only.split(",")]
    ports = [BASE_PORT + 2 * i + j for i in range(len(TOOLS)) for j in (0, 1)]
    journal = work / "others.jsonl"
    rec = Recording(journal, ports, ports, 3600, 0.5)
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    report: dict[str, dict] = {}
    windows: dict[str, tuple[float, float]] = {}
    try:
        for tool in tools:
            i = TOOLS.index(tool)
            t0 = time.time()
            for j in (0, 1):
                port = BASE_PORT + 2 * i + j
                cmd = [c.replace("{port}", str(port)) for c in tool.cmd]
                rc, out, secs = _run(cmd, tool.timeout)
                (work / f"{tool.name}-{j}.out").write_text(out, encoding="utf-8")
                report.setdefault(tool.name, {})[f"run{j}"] = {"cmd": " ".join(cmd), "rc": rc,
                                                              "seconds": round(secs, 1)}
            windows[tool.name] = (t0, time.time() + 1)
            print(f"  {tool.name}: {round(time.time() - t0, 1)} s", flush=True)
    finally:
        rec.stop()
    observed = sends(read_journal(journal))
    entries: list[Entry] = []
    seen: set[tuple[str, str, bytes]] = set()
    for tool in tools:
        i = TOOLS.index(tool)
        a, b = BASE_PORT + 2 * i, BASE_PORT + 2 * i + 1
        lo, hi = windows[tool.name]
        first = _unique([s for s in observed if s.port == a and s.proto == tool.proto and lo <= s.t <= hi])
        second = _unique([s for s in observed if s.port == b and s.proto == tool.proto and lo <= s.t <= hi])
        rc, version, _ = _run(list(tool.version_cmd), 30)
        cmd = report[tool.name]["run0"]["cmd"].replace(str(a), "PORT")
        prov = (f"observed: {tool.cmd[0]} {version.strip()} (Debian package), `{cmd}` run twice -> "
                f"tools/capture/recorder.py on 127.0.0.1 (tools/capture/capture_others.py), {date}")
        made = entries_for(tool, first, second, prov, seen)
        report[tool.name].update(sends=[len(first), len(second)], entries=len(made))
        entries += made
    header = ("Other scanners, observed on the wire. Generated by tools/capture/capture_others.py;\n"
              "see tools/capture/README.md. Regenerate rather than edit by hand.")
    write_yaml(args.out, entries, header)
    (work / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
