#!/usr/bin/env python3
"""Capture what nmap's service detection and its -sV NSE scripts send, and write
the catalogue files nmap-tcp.yaml, nmap-udp.yaml and nmap-nse.yaml.

Theory of operation
-------------------
* Nothing here reads nmap's data files. Everything comes from running the
  nmap program against recorder.py on 127.0.0.1 and from what nmap prints
  (``--version-trace`` names each probe as it is sent; ``--script-trace``
  gives each NSE socket's source port; ``--script-help version`` lists the
  scripts that -sV loads).
* Runs (each its own recorder journal and nmap output under --work-dir, so
  ``--build-only`` can regenerate the YAML without scanning again):
    - ``tcp-reg`` / ``udp-reg``: ``--version-intensity 0`` over every port.
      nmap always sends a probe to the ports it is registered for, whatever
      the intensity, so this shows each probe's target ports (``ports:``).
    - ``tcp-i1``..``tcp-i9`` / ``udp-i1``..``udp-i9``: one run per intensity,
      each against its own port that no probe is registered for (checked).
      The lowest intensity at which a probe reaches such a port is its
      rarity as observed; default -sV is intensity 7.
    - ``tcp-all`` / ``udp-all``: ``--version-all`` over every port: every
      probe on every port, so the bytes of each name are cross-checked.
    - ``udp-scan``: plain ``-sU`` (no -sV): the per-port payloads nmap's UDP
      port scan sends before any service probe.
    - ``nse-NAME``: each version-category script forced (``+NAME``) against
      two TCP and two UDP ports of its own. Two observations per send show
      which bytes are random (RPC xids, SNMP request ids); such sends become
      ``match: marker`` entries on their longest constant run.
* TCP runs use the recorder's ``--close-after-idle``: a connection closed
  after a probe is a "no match" for nmap, which then sends the next probe
  instead of waiting out the probe's timeout. UDP has no such shortcut.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recorder  # noqa: E402
from capture_common import (  # noqa: E402
    TARGET_BYTES, Entry, Send, constant_marker, pair, parse_nmap_trace, parse_nse_sockets, read_journal, safe_id, sends, write_yaml,
)

REPO = Path(__file__).resolve().parents[2]
CATALOGUE = REPO / "plugin" / "probetag" / "detect" / "catalogue"
LADDER_BASE = 31000  # ladder run N uses port LADDER_BASE + N (tcp and udp); below the ephemeral range
NSE_BASE = 21000  # script i uses ports NSE_BASE + 2i and NSE_BASE + 2i + 1 (below the ephemeral range)
COMMON = ["-Pn", "-n", "--allports", "--max-retries", "1", "--host-timeout", "25m", "--script-trace"]


# --------------------------------------------------------------------------
# Running things
# --------------------------------------------------------------------------


class Recording:
    """recorder.py as a subprocess, started and stopped around a set of scans."""

    def __init__(self, journal: Path, tcp: list[int], udp: list[int], duration: float,
                 close_after_idle: float | None) -> None:
        cmd = [sys.executable, str(Path(recorder.__file__)), "--out", str(journal),
               "--tcp", ",".join(map(str, tcp)), "--udp", ",".join(map(str, udp)),
               "--duration", str(duration)]
        if close_after_idle is not None:
            cmd += ["--close-after-idle", str(close_after_idle)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until bound (or the recorder died)
        if not line.startswith("READY"):
            raise RuntimeError(f"recorder did not start: {line!r}")
        events = read_journal(journal)
        ready = next(e for e in events if e["ev"] == "ready")
        self.tcp, self.udp = ready["tcp"], ready["udp"]
        self.bind_errors = [e for e in events if e["ev"] == "bind_error"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def nmap(args: list[str], out: Path, timeout: float) -> dict:
    cmd = ["nmap", *args, "127.0.0.1"]
    t0 = time.time()
    ports = next((b for a, b in zip(["", *args], args) if a == "-p"), "")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        text, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        text = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        rc = -1
    out.write_text(text, encoding="utf-8")
    return {"cmd": " ".join(cmd), "rc": rc, "seconds": round(time.time() - t0, 1), "output": out.name,
            "t0": t0, "t1": time.time(), "scanned": _ports_arg(ports)}


def _ports_arg(spec: str) -> list[int]:
    """nmap's -p value (with T:/U: prefixes dropped) as a port list."""
    return recorder.parse_ports(re.sub(r"[TU]:", "", spec)) if spec else []


def plist(ports: list[int]) -> str:
    return ",".join(map(str, ports))


def nmap_version() -> str:
    out = subprocess.run(["nmap", "--version"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"Nmap version (\S+)", out)
    return m.group(1) if m else "unknown"


def scan_service(work: Path, proto: str, ports: list[int], parallel: bool) -> dict:
    """The reg, ladder and all-ports runs for one transport."""
    ladder = [LADDER_BASE + n for n in range(1, 10)]
    journal = work / f"{proto}.jsonl"
    kind = ["-sV"] if proto == "tcp" else ["-sU", "-sV"]
    rec = Recording(journal, ports + ladder if proto == "tcp" else [],
                    ports + ladder if proto == "udp" else [], 4 * 3600,
                    0.3 if proto == "tcp" else None)
    bound = rec.tcp if proto == "tcp" else rec.udp
    if rec.bind_errors:
        print(f"  WARNING: not scanned (port in use): {[e['port'] for e in rec.bind_errors]}", flush=True)
    missing = [p for p in ladder if p not in bound]
    if missing:
        rec.stop()
        raise RuntimeError(f"ladder ports not bound: {missing}")
    main_ports = [p for p in bound if p not in ladder]
    runs: dict[str, dict] = {}
    jobs = {f"{proto}-reg": kind + ["--version-intensity", "0", "--version-trace", *COMMON,
                                     "-p", plist(main_ports)]}
    for n in range(1, 10):
        jobs[f"{proto}-i{n}"] = kind + ["--version-intensity", str(n), "--version-trace", *COMMON,
                                        "-p", str(LADDER_BASE + n)]
    try:
        # The reg run and the ladder runs touch disjoint ports; they mostly wait
        # on timeouts, so they run side by side.
        with concurrent.futures.ThreadPoolExecutor(max_workers=10 if parallel else 1) as pool:
            futs = {name: pool.submit(nmap, args, work / f"{name}.out", 3600) for name, args in jobs.items()}
            for name, fut in futs.items():
                runs[name] = fut.result()
                print(f"  {name}: {runs[name]['seconds']} s", flush=True)
        name = f"{proto}-all"
        runs[name] = nmap(kind + ["--version-all", "--version-trace", *COMMON, "-p", plist(main_ports)],
                          work / f"{name}.out", 1500)
        print(f"  {name}: {runs[name]['seconds']} s", flush=True)
    finally:
        rec.stop()
    return {"journal": journal.name, "runs": runs, "ports": main_ports, "ladder": ladder,
            "bind_errors": rec.bind_errors}


def scan_udp_payloads(work: Path, ports: list[int]) -> dict:
    journal = work / "udp-scan.jsonl"
    rec = Recording(journal, [], ports, 3600, None)
    try:
        run = nmap(["-sU", "-Pn", "-n", "--max-retries", "0", "--host-timeout", "10m", "-p", plist(rec.udp)],
                   work / "udp-scan.out", 900)
    finally:
        rec.stop()
    print(f"  udp-scan: {run['seconds']} s", flush=True)
    return {"journal": journal.name, "runs": {"udp-scan": run}, "ports": rec.udp, "bind_errors": rec.bind_errors}


def version_scripts() -> list[str]:
    out = subprocess.run(["nmap", "--script-help", "version"], capture_output=True, text=True, timeout=60).stdout
    names, lines = [], out.splitlines()
    for i, line in enumerate(lines[:-1]):
        if re.fullmatch(r"[a-z0-9][a-z0-9-]*", line) and lines[i + 1].startswith("Categories:"):
            names.append(line)
    return names


def scan_nse(work: Path, parallel: int) -> dict:
    scripts = version_scripts()
    ports = [NSE_BASE + k for k in range(2 * len(scripts))]
    journal = work / "nse.jsonl"
    rec = Recording(journal, ports, ports, 4 * 3600, 0.3)
    runs: dict[str, dict] = {}
    try:
        missing = sorted(set(ports) - set(rec.tcp) | set(ports) - set(rec.udp))
        if missing:
            raise RuntimeError(f"NSE ports not bound: {missing}")

        def one(i: int, name: str) -> tuple[str, dict]:
            a, b = NSE_BASE + 2 * i, NSE_BASE + 2 * i + 1
            args = ["-sS", "-sU", "-Pn", "-n", "--max-retries", "0", "-d", "--script", f"+{name}",
                    "--script-trace", "--script-timeout", "90s", "--host-timeout", "5m",
                    "-p", f"T:{a},{b},U:{a},{b}"]
            res = nmap(args, work / f"nse-{name}.out", 400)
            res["ports"] = [a, b]
            return name, res

        with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
            for name, res in pool.map(lambda t: one(*t), enumerate(scripts)):
                runs[f"nse-{name}"] = res
                print(f"  nse-{name}: {res['seconds']} s", flush=True)
    finally:
        rec.stop()
    return {"journal": journal.name, "runs": runs, "scripts": scripts, "bind_errors": rec.bind_errors}


# --------------------------------------------------------------------------
# Building the catalogue from the recorded runs
# --------------------------------------------------------------------------


def _prov(version: str, run: dict, date: str, extra: str = "") -> str:
    cmd = run["cmd"].replace("nmap ", f"nmap {version} ", 1)
    # The port list of the all-ports runs is recorder.py's DEFAULT_*_PORTS; name it, do not repeat it.
    cmd = re.sub(r"-p (\S+)", lambda m: (f"-p <{len(_ports_arg(m[1]))} ports>"
                                        if len(m[1]) > 40 else m[0]), cmd)
    return (f"observed: {cmd} -> tools/capture/recorder.py on 127.0.0.1 "
            f"(tools/capture/capture_nmap.py), {date}{extra}")


def _confidence(payload: bytes) -> float | None:
    """Lower confidence for bytes any client might send.

    Payloads with under 4 non-whitespace bytes (``\\r\\n\\r\\n``, ``\\x02``,
    ``s``) say almost nothing about who sent them; the catalogue marks them
    0.3 so that only correlation (many probes from one source) tags them.
    """
    if len(payload.strip()) < 4:
        return 0.3
    return None


def build_service(work: Path, proto: str, manifest: dict, version: str, date: str) -> list[Entry]:
    info = manifest[proto]
    observed = sends(read_journal(work / info["journal"]))
    texts = {name: (work / run["output"]).read_text(encoding="utf-8") for name, run in info["runs"].items()}
    traces = {name: parse_nmap_trace(text) for name, text in texts.items()}
    align = proto == "udp"
    # Registered ports: where intensity 0 sends a probe.
    reg: dict[str, set[int]] = defaultdict(set)
    for tp in traces[f"{proto}-reg"]:
        reg[tp.name].add(tp.port)
    # Rarity as observed on an unregistered port.
    rarity: dict[str, int] = {}
    for n in range(9, 0, -1):
        for tp in traces[f"{proto}-i{n}"]:
            rarity[tp.name] = n
    ladder_regs = {p for name, ports in reg.items() if name != "NULL" for p in ports} & set(info["ladder"])
    if ladder_regs:
        print(f"  WARNING: ladder ports {sorted(ladder_regs)} have registered probes", flush=True)
    # Bytes per name, from every run.
    variants: dict[str, Counter] = defaultdict(Counter)
    ports_of: dict[tuple[str, bytes], set[int]] = defaultdict(set)
    mismatched = []
    for name, trace in traces.items():
        run = info["runs"][name]
        scanned = set(run["scanned"])
        # -sV also runs the version NSE scripts; their sockets are not probes.
        nse = parse_nse_sockets(texts[name])
        window = [s for s in observed if run["t0"] <= s.t <= run["t1"] + 1 and s.port in scanned
                  and (s.proto, s.peer_port, s.port) not in nse]
        p = pair(trace, window, align_end=align)
        mismatched += [(name, *m) for m in p.mismatched]
        for tp, s in p.pairs:
            variants[tp.name][s.data] += 1
            ports_of[(tp.name, s.data)].add(s.port)
    for m in mismatched:
        print(f"  left out (probes named != sends seen): {m}", flush=True)
    all_run = info["runs"][f"{proto}-all"]
    n_ports = len(info["ports"])
    entries = []
    for name in sorted(variants, key=str.lower):
        counts = variants[name]
        ordered = counts.most_common()
        for k, (payload, count) in enumerate(ordered):
            pid = f"nmap-{proto}-{safe_id(name)}" + ("" if k == 0 else f"-v{k + 1}")
            r = rarity.get(name)
            if r is None:
                when = "not sent to an unregistered port at any intensity; only to its registered ports"
            elif r <= 7:
                when = f"default -sV sends it to every port (first sent at --version-intensity {r})"
            else:
                when = f"sent to every port only from --version-intensity {r} (default -sV is 7)"
            seen_on = ports_of[(name, payload)]
            notes = when
            if k:
                notes += f"; a variant: these bytes on ports {sorted(seen_on)[:20]}"
            prov = _prov(version, all_run, date,
                         f"; {count} sends with these bytes on {len(seen_on & set(info['ports']))}/{n_ports} ports")
            entries.append(Entry(id=pid, probe=name, scanner="nmap", family="service-probe",
                                 transport=proto, payload=payload, provenance=prov, confidence=_confidence(payload),
                                 ports=tuple(sorted(reg.get(name, ()))), notes=notes))
            for j, line in enumerate(_naming_lines(payload), 1):
                entries.append(Entry(id=f"{pid}-marker-{j}", probe=name, scanner="nmap",
                                     family="service-probe", transport=proto,
                                     payload=line, match="marker", provenance=prov,
                                     ports=tuple(sorted(reg.get(name, ()))),
                                     notes=f"a line of the {name} probe that names nmap; other tools "
                                           "copying it are matched too"))
    return entries


def _naming_lines(payload: bytes) -> list[bytes]:
    """Lines of a probe that name nmap (``Cookie: mstshash=nmap``): worth a
    marker of their own, as they also turn up inside other requests."""
    out = []
    for line in payload.split(b"\n"):
        line = line.rstrip(b"\r")
        if b"nmap" in line.lower() and len(line) >= 8 and line != payload:
            # From the printable stretch around "nmap" (binary framing differs per copy).
            start = line.lower().index(b"nmap")
            lo = start
            while lo > 0 and 0x20 <= line[lo - 1] < 0x7F:
                lo -= 1
            hi = start
            while hi < len(line) and 0x20 <= line[hi] < 0x7F:
                hi += 1
            if hi - lo >= 8:
                out.append(line[lo:hi])
    return out


def build_udp_scan(work: Path, manifest: dict, version: str, date: str) -> list[Entry]:
    info = manifest["udp-scan"]
    run = info["runs"]["udp-scan"]
    by_bytes: dict[bytes, set[int]] = defaultdict(set)
    for s in sends(read_journal(work / info["journal"])):
        if s.proto == "udp" and s.data:
            by_bytes[s.data].add(s.port)
    entries: list[Entry] = []
    for payload, ports in sorted(by_bytes.items(), key=lambda kv: (min(kv[1]), kv[0])):
        port_list = sorted(ports)
        pid = f"nmap-udp-scan-{port_list[0]}"
        n = 2
        while any(e.id == pid for e in entries):
            pid, n = f"nmap-udp-scan-{port_list[0]}-{n}", n + 1
        entries.append(Entry(id=pid, probe=f"udp-scan-payload/{port_list[0]}", scanner="nmap",
                             family="udp-payload",
                             transport="udp", payload=payload, ports=tuple(port_list),
                             confidence=_confidence(payload), provenance=_prov(version, run, date),
                             notes="sent by the UDP port scan (-sU) itself, before any -sV probe; "
                                   "nmap prints no name for it, so it is named by its port"))
    return entries


def _is_text(data: bytes) -> bool:
    return sum(32 <= c < 127 or c in (9, 10, 13) for c in data) >= 0.95 * len(data)


def natural_nse_transports(work: Path, manifest: dict) -> dict[str, set[str]]:
    """Per transport, the scripts -sV ran by itself in the ``-all`` runs
    (nmap -d prints ``NSE: Starting SCRIPT against HOST:PORT``; the tcp run
    scans TCP ports only, the udp run UDP ports only)."""
    out: dict[str, set[str]] = {}
    for proto in ("tcp", "udp"):
        if proto not in manifest:
            continue
        run = manifest[proto]["runs"][f"{proto}-all"]
        text = (work / run["output"]).read_text(encoding="utf-8")
        out[proto] = set(re.findall(r"^NSE: Starting (\S+) against ", text, re.M))
    return out


def build_nse(work: Path, manifest: dict, version: str, date: str,
              known: set[tuple[str, bytes]]) -> tuple[list[Entry], list[str], list[str]]:
    """``known``: (transport, bytes) of the service probes, not repeated here.
    Returns (entries, scripts that sent nothing, ``script/transport`` left out
    as forced-only)."""
    forced_only: list[str] = []
    info = manifest["nse"]
    observed = sends(read_journal(work / info["journal"]))
    entries: list[Entry] = []
    silent: list[str] = []
    natural = natural_nse_transports(work, manifest)
    ran_naturally = set().union(*natural.values()) if natural else set()
    seen_payloads: dict[tuple[str, bytes], str] = {}
    for key, run in info["runs"].items():
        script = key[len("nse-"):]
        text = (work / run["output"]).read_text(encoding="utf-8")
        src = parse_nse_sockets(text)
        a, b = run["ports"]
        per: dict[tuple[str, int], list[Send]] = defaultdict(list)
        for s in observed:
            if s.data and (s.proto, s.peer_port, s.port) in src:
                per[(s.proto, s.port)].append(s)
        made = 0

        def add(proto: str, payload: bytes, match: str, notes: str, k: int,
                confidence: float | None = None) -> None:
            nonlocal made
            if (proto, payload) in seen_payloads:
                return  # the same bytes from another step or script: listed once
            made += 1
            pid = f"nmap-nse-{script}-{proto}-{made}"
            seen_payloads[(proto, payload)] = pid
            extra = f"; send {k + 1} of the script on port {a}"
            entries.append(Entry(id=pid, probe=script, scanner="nmap", family="nse", transport=proto,
                                 payload=payload, match=match,
                                 confidence=confidence if confidence is not None else _confidence(payload),
                                 provenance=_prov(version, run, date, extra), notes=notes))

        for proto in ("tcp", "udp"):
            if script in ran_naturally and script not in natural.get(proto, set()):
                # Forced with "+", a script runs on both transports; left to
                # itself in the -sV runs it ran on the other one only, so these
                # bytes over this transport are a capture artefact.
                forced_only.append(f"{script}/{proto}")
                continue
            first, second = per.get((proto, a), []), per.get((proto, b), [])
            for k, s in enumerate(first):
                other = second[k].data if k < len(second) else None
                if (proto, s.data) in known:
                    continue  # a service probe's bytes (http-server-header's GET): listed there
                if other == s.data:
                    add(proto, s.data, "payload", "", k)
                elif other is None and not _is_text(s.data):
                    continue  # one observation: its random parts cannot be told from its constant ones
                elif _is_text(s.data):
                    # HTTP and the like: the Host line names the port. Keep the
                    # lines both ports' sends share that name no target and say
                    # who sent them: the request line and the User-Agent.
                    shared = set(other.split(b"\n")) if other is not None else None
                    where = "the same on both ports" if other is not None else "seen on one port"
                    for i, line in enumerate(s.data.split(b"\n")):
                        text = line.rstrip(b"\r")
                        if ((shared is not None and line not in shared) or len(text) < 8
                                or any(t in text for t in TARGET_BYTES)):
                            continue
                        if i == 0 and b" / " not in text:
                            # "GET / HTTP/1.1" is every client's; a path is the script's.
                            add(proto, text, "marker", f"the request line; {where}", k, 0.4)
                        elif text.lower().startswith(b"user-agent:"):
                            add(proto, text, "marker", f"the User-Agent line; {where}", k)
                else:
                    assert other is not None  # one binary observation was skipped above
                    found = constant_marker(s.data, other, forbid=b"\n" if proto == "tcp" else b"",
                                            as_logged=True)
                    if found is None:
                        continue  # nothing constant enough to recognise it by
                    lo, marker = found
                    n = min(len(s.data), len(other))
                    varying = [i for i in range(n) if s.data[i] != other[i]]
                    add(proto, marker, "marker",
                        f"bytes {lo}..{lo + len(marker) - 1} of a {len(s.data)}-byte send; bytes at "
                        f"offsets {varying[:12]}{'...' if len(varying) > 12 else ''} differ between "
                        "the two ports' sends (random ids)"
                        + ("; lengths differ too" if len(other) != len(s.data) else ""), k)
        if not any(per.values()):
            silent.append(script)
    return entries, silent, forced_only


def build_nse_natural(work: Path, manifest: dict, version: str, date: str,
                      have: list[Entry]) -> list[Entry]:
    """What NSE sent on its own during the -sV --version-all runs.

    Once service detection has failed, -sV runs version scripts on the port
    by itself; the trace names their sockets but not the scripts. Sends that
    an entry already covers are skipped. Of the rest, requests whose first
    line differs only in digits (a timestamp) give a marker on the shared
    prefix, and binary sends that start alike give their longest constant run.
    """
    def covered(proto: str, data: bytes) -> bool:
        return any(e.transport == proto and (e.payload == data or (e.match == "marker" and e.payload in data))
                   for e in have + out)

    out: list[Entry] = []
    for proto in ("tcp", "udp"):
        if proto not in manifest:
            continue
        info = manifest[proto]
        name = f"{proto}-all"
        run = info["runs"][name]
        nse = parse_nse_sockets((work / run["output"]).read_text(encoding="utf-8"))
        got = [s for s in sends(read_journal(work / info["journal"]))
               if s.data and (s.proto, s.peer_port, s.port) in nse]
        groups: dict[bytes, list[bytes]] = defaultdict(list)
        for s in got:
            if _is_text(s.data):
                # rsyslog logs each line on its own: the request line must be
                # matched by itself, whatever covers the User-Agent line.
                first = s.data.split(b"\n")[0].rstrip(b"\r")
                if not covered(proto, first):
                    groups[b"T" + re.sub(rb"\d+", b"0", first)].append(first)
            elif not covered(proto, s.data):
                groups[b"B" + s.data[:6]].append(s.data)
        for key, items in sorted(groups.items()):
            distinct = sorted(set(items))
            if len(distinct) < 2:
                continue
            a, b = distinct[0], distinct[1]
            if key.startswith(b"T"):
                n = 0
                while n < min(len(a), len(b)) and a[n] == b[n]:
                    n += 1
                marker = a[:n].rstrip(b"0123456789")
                notes = (f"the request line's prefix up to the digits that change between sends "
                         f"({len(items)} sends on {len({x for x in items})} variants)")
                if len(marker) < 12 or b" / " in marker + b" " or any(t in marker for t in TARGET_BYTES):
                    continue
                lo = 0
            else:
                found = constant_marker(a, b, forbid=b"\n" if proto == "tcp" else b"", as_logged=True)
                if found is None:
                    continue
                lo, marker = found
                notes = f"bytes {lo}..{lo + len(marker) - 1} of {len(items)} sends that start alike"
            if covered(proto, marker):
                continue
            out.append(Entry(id=f"nmap-nse-sV-{proto}-{len(out) + 1}", probe="nse-during-sV",
                             scanner="nmap", family="nse", transport=proto, payload=marker, match="marker",
                             provenance=_prov(version, run, date, "; NSE sockets of that run"),
                             notes=notes + "; the trace does not name the script"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/probetag-capture"))
    ap.add_argument("--out-dir", type=Path, default=CATALOGUE)
    ap.add_argument("--phases", default="tcp,udp-scan,udp,nse",
                    help="comma list of tcp, udp-scan, udp, nse")
    ap.add_argument("--build-only", action="store_true", help="rebuild YAML from --work-dir")
    ap.add_argument("--tcp-ports", default=recorder.DEFAULT_TCP_PORTS)
    ap.add_argument("--udp-ports", default=recorder.DEFAULT_UDP_PORTS)
    ap.add_argument("--nse-parallel", type=int, default=6)
    args = ap.parse_args(argv)
    work: Path = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    mpath = work / "manifest.json"
    manifest = json.loads(mpath.read_text()) if mpath.exists() else {}
    if not args.build_only:
        manifest["nmap_version"] = nmap_version()
        manifest["date"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
        for phase in args.phases.split(","):
            print(f"phase {phase}", flush=True)
            t0 = time.time()
            if phase == "tcp":
                manifest["tcp"] = scan_service(work, "tcp", recorder.parse_ports(args.tcp_ports), True)
            elif phase == "udp":
                manifest["udp"] = scan_service(work, "udp", recorder.parse_ports(args.udp_ports), True)
            elif phase == "udp-scan":
                manifest["udp-scan"] = scan_udp_payloads(work, recorder.parse_ports(args.udp_ports))
            elif phase == "nse":
                manifest["nse"] = scan_nse(work, args.nse_parallel)
            else:
                raise SystemExit(f"unknown phase {phase!r}")
            manifest.setdefault("durations", {})[phase] = round(time.time() - t0, 1)
            mpath.write_text(json.dumps(manifest, indent=1))
    version, date = manifest["nmap_version"], manifest["date"]
    header = ("{what}\n"
              "Generated by tools/capture/capture_nmap.py from nmap {version} on the wire, {date};\n"
              "see tools/capture/README.md. Regenerate rather than edit by hand.")
    summary: dict[str, object] = {}
    tcp: list[Entry] = []
    if "tcp" in manifest:
        tcp = build_service(work, "tcp", manifest, version, date)
        write_yaml(args.out_dir / "nmap-tcp.yaml", tcp,
                   header.format(what="nmap -sV service probes over TCP.", version=version, date=date))
        summary["tcp"] = len({e.probe for e in tcp})
    udp: list[Entry] = []
    if "udp" in manifest:
        udp += build_service(work, "udp", manifest, version, date)
        summary["udp"] = len({e.probe for e in udp})
    if "udp-scan" in manifest:
        scan = build_udp_scan(work, manifest, version, date)
        summary["udp-scan"] = len(scan)
        udp += scan
    if udp:
        write_yaml(args.out_dir / "nmap-udp.yaml", udp,
                   header.format(what="nmap -sU -sV service probes and -sU port-scan payloads over UDP.",
                                 version=version, date=date))
    if "nse" in manifest:
        known = {(e.transport, e.payload) for e in (tcp + udp) if e.match == "payload"}
        nse, silent, forced_only = build_nse(work, manifest, version, date, known)
        nse += build_nse_natural(work, manifest, version, date, tcp + udp + nse)
        write_yaml(args.out_dir / "nmap-nse.yaml", nse,
                   header.format(what="What the NSE scripts of -sV (category 'version') send.",
                                 version=version, date=date)
                   + "\nScripts that sent nothing when forced onto a silent port: " + ", ".join(silent)
                   + "\nSends equal to a service probe's bytes are listed only in nmap-tcp/nmap-udp.yaml."
                   + "\nLeft out, forced onto a transport the script never used by itself under -sV: "
                   + ", ".join(forced_only))
        summary["nse_entries"] = len(nse)
        summary["nse_scripts_silent"] = silent
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
