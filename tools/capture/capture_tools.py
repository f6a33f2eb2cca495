#!/usr/bin/env python3
"""Point real clients and scanners at a private rsyslogd and keep what it logs,
labelled by the tool that sent each line (``tests/fixtures/tools/``).

Theory of operation
-------------------
* One private rsyslogd per tool (``tests/util/rsyslog.py``: imtcp + imudp on
  one free port of 127.0.0.1, default escaping, reverse DNS off), so every
  line of a tool's files came from that tool or from rsyslogd itself (its
  start/stop lines and framing complaints: ``rsyslogd`` lines, labelled as
  such, expected untagged). Nothing else sends to that port.
* Each tool runs with a time limit against 127.0.0.1 only. rsyslog never
  answers, so clients that wait for a server reply give up on their own
  timeouts; what they sent before that is what a syslog listener sees.
* Kept per tool: ``traditional.log`` (RSYSLOG_TraditionalFileFormat) and
  ``rfc3339.log`` (RSYSLOG_FileFormat), line N of both being the same
  message. ``labels.jsonl`` has one object per line of every file: ``file``,
  ``line`` (1-based), ``label`` (the protocol of the bytes, or the
  catalogue's probe name when the tool has its own entry; null for
  rsyslogd's own lines), ``scanner`` (the tool that sent it, ``rsyslogd``
  for its own lines) and ``raw`` (the line as logged, latin-1).
* Labels come from which tool ran, never from probetag's detector.
* ``clients.jsonl`` (the raw material of ``detect/catalogue/clients/``) holds
  the TLS ClientHellos each TLS client sent, taken from a recorder that
  answers nothing (``recorder.py``'s journal), with JA3/JA4 computed from them.

Usage: ``python3 tools/capture/capture_tools.py [--only TOOL,...] [OUTDIR]``
(default ``tests/fixtures/tools``). Needs Debian's sslscan, testssl.sh,
hydra, whatweb, sqlmap, ike-scan, sipvicious, curl, openssl, openssh-client,
dnsutils, masscan, zmap, golang-go and iproute2, and root.

* zmap and masscan send raw frames with their own Ethernet header and (for
  masscan) their own TCP stack, so they cannot scan 127.0.0.1: those tools
  run across a veth pair into a network namespace made for the run
  (``NetnsLink``), where the private rsyslogd listens on the peer address.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.util.rsyslog import PrivateRsyslog  # noqa: E402

#: The two file formats kept (FIELD_GUIDE 3: both print HOSTNAME, TAG, MSG).
KEPT = {"traditional": "traditional.log", "rfc3339": "rfc3339.log"}


@dataclass(frozen=True, slots=True)
class Tool:
    name: str  # directory name
    scanner: str  # the true sender
    label: str  # the protocol (or catalogue probe) its lines are
    cmd: tuple[str, ...]  # "{port}" is replaced
    timeout: float = 60.0
    stdin: bytes = b""
    #: Sends raw frames with its own stack (zmap, masscan): run across a veth
    #: link into a network namespace (``NetnsLink``), not over 127.0.0.1.
    #: "{addr}", "{mac}", "{dev}", "{src}" and "{spare}" are replaced.
    raw: bool = False


#: zmap's UDP payload files (Debian package zmap, examples/udp-probes/):
#: file -> the protocol of its bytes. zmap sends one file's payload per run.
#: (zmap 2.1.1 aborts on snmp1_161.pkt; masscan's --hello=ssl sent nothing to
#: a port it has no TLS rule for, so it is not kept either.)
ZMAP_PROBES = "/usr/share/doc/zmap/examples/udp-probes"
ZMAP_FILES: dict[str, str] = {
    "citrix_1604.pkt": "citrix-discovery", "db2disco_523.pkt": "db2-discovery",
    "digi1_2362.pkt": "digi-addp", "dns_53.pkt": "dns-query", "ipmi_623.pkt": "ipmi-rmcp",
    "mdns_5353.pkt": "dns-query", "mssql_1434.pkt": "mssql-browser", "natpmp_5351.pkt": "nat-pmp",
    "netbios_137.pkt": "netbios-ns", "ntp_123.pkt": "ntp-request", "ntp_123_monlist.pkt": "ntp-monlist",
    "pca_nq_5632.pkt": "pcanywhere", "portmap_111.pkt": "sunrpc-portmap", "ripv1_520.pkt": "rip-request",
    "sentinel_5093.pkt": "sentinel-license", "snmp2_161.pkt": "snmp-get",
    "upnp_1900.pkt": "upnp-msearch", "wdbrpc_17185.pkt": "wdbrpc", "wsd_3702.pkt": "ws-discovery",
}


TOOLS: tuple[Tool, ...] = (
    Tool("openssl-s_client", "openssl", "tls-client-hello",
         ("openssl", "s_client", "-connect", "127.0.0.1:{port}"), timeout=4),
    Tool("curl-https", "curl", "tls-client-hello",
         ("curl", "-sk", "--max-time", "3", "https://127.0.0.1:{port}/"), timeout=6),
    Tool("curl-http", "curl", "http-request",
         ("curl", "-s", "--max-time", "3", "http://127.0.0.1:{port}/"), timeout=6),
    Tool("python-ssl", "python", "tls-client-hello",
         (sys.executable, "-c",
          "import socket,ssl\n"
          "c=ssl.create_default_context();c.check_hostname=False;c.verify_mode=ssl.CERT_NONE\n"
          "s=socket.create_connection(('127.0.0.1',{port}),timeout=2)\n"
          "try:\n c.wrap_socket(s,server_hostname='localhost')\nexcept Exception:\n pass\n"), timeout=6),
    Tool("sslscan", "sslscan", "tls-client-hello",
         ("sslscan", "--no-colour", "--connect-timeout=1", "--timeout=1", "127.0.0.1:{port}"), timeout=120),
    Tool("testssl", "testssl.sh", "tls-client-hello",
         ("testssl", "--warnings", "batch", "--connect-timeout", "2", "--openssl-timeout", "2",
          "--fast", "--quiet", "--color", "0", "127.0.0.1:{port}"), timeout=180),
    Tool("hydra-http-get", "hydra", "http-request",
         ("hydra", "-l", "admin", "-p", "secret", "-s", "{port}", "-t", "1", "-w", "2", "-W", "1",
          "-f", "127.0.0.1", "http-get", "/"), timeout=20),
    Tool("hydra-redis", "hydra", "redis-command",
         ("hydra", "-P", "{passfile}", "-s", "{port}", "-t", "1", "-w", "2", "-W", "1",
          "-f", "127.0.0.1", "redis"), timeout=20),
    Tool("whatweb", "whatweb", "http-request",
         ("whatweb", "--open-timeout", "2", "--read-timeout", "2", "--color=never",
          "http://127.0.0.1:{port}/"), timeout=30),
    Tool("sqlmap", "sqlmap", "http-request",
         ("sqlmap", "-u", "http://127.0.0.1:{port}/?id=1", "--batch", "--timeout=2", "--retries=0",
          "--flush-session", "--output-dir={work}/sqlmap"), timeout=60),
    Tool("ike-scan-aggressive-id", "ike-scan", "ike-scan-aggressive",
         ("ike-scan", "-A", "--id=GROUP", "--sport=0", "--dport={port}", "127.0.0.1"), timeout=20),
    Tool("svmap", "sipvicious", "sipvicious-svmap",
         ("svmap", "127.0.0.1", "-p", "{port}"), timeout=30),
    Tool("svwar", "sipvicious", "sipvicious-svmap",
         ("svwar", "-e", "100-102", "-p", "{port}", "127.0.0.1"), timeout=30),
    Tool("ssh", "openssh", "ssh-banner",
         ("ssh", "-p", "{port}", "-o", "BatchMode=yes", "-o", "ConnectTimeout=2",
          "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "127.0.0.1"), timeout=5),
    Tool("dig-udp", "dig", "dns-query",
         ("dig", "@127.0.0.1", "-p", "{port}", "+tries=1", "+time=1", "example.org", "A"), timeout=5),
    Tool("dig-tcp", "dig", "dns-query",
         ("dig", "+tcp", "@127.0.0.1", "-p", "{port}", "+tries=1", "+time=1", "example.org", "A"), timeout=5),
    # A client written in Go with the standard library's defaults (crypto/tls,
    # net/http): tools/capture/goclient, built here with Debian's golang-go.
    Tool("go-https", "go", "tls-client-hello", ("{goclient}", "https", "127.0.0.1:{port}"), timeout=10),
    Tool("go-http", "go", "http-request", ("{goclient}", "http", "127.0.0.1:{port}"), timeout=10),
    # masscan: its own TCP stack completes the handshake and sends its hello
    # (--banners); it needs an address of its own on the link ("{spare}").
    Tool("masscan-http", "masscan", "http-request",
         ("masscan", "{addr}", "-p", "{port}", "--banners", "--hello=http", "-e", "{dev}",
          "--adapter-ip", "{spare}", "--router-mac", "{mac}", "--wait", "3", "--rate", "100"), timeout=30, raw=True),
    Tool("zmap-udp", "zmap", "http-request",  # zmap's default UDP payload: an HTTP request
         ("zmap", "-M", "udp", "-p", "{port}", "-i", "{dev}", "-G", "{mac}", "-S", "{src}", "-b", "/dev/null",
          "-c", "1", "-r", "10", "{addr}/32"), timeout=30, raw=True),
    *(Tool(f"zmap-udp-{name.rsplit('.', 1)[0]}", "zmap", proto,
           ("zmap", "-M", "udp", "-p", "{port}", f"--probe-args=file:{ZMAP_PROBES}/{name}", "-i", "{dev}",
            "-G", "{mac}", "-S", "{src}", "-b", "/dev/null", "-c", "1", "-r", "10", "{addr}/32"),
           timeout=30, raw=True)
      for name, proto in ZMAP_FILES.items()),
)


class NetnsLink:
    """A veth pair from this namespace into a new one (``ip netns``): the
    listener runs in the namespace at ``addr``, the tool sends from ``dev``
    (``src``) to the peer's MAC ``mac``; ``spare`` is a free address of the
    link for a tool with its own TCP stack. Removed on exit."""

    def __init__(self, name: str = "pt-capture", net: str = "10.77.0") -> None:
        self.ns, self.dev, self.peer = name, f"{name[:8]}0", f"{name[:8]}1"
        self.src, self.addr, self.spare = f"{net}.1", f"{net}.2", f"{net}.3"
        self.mac = ""

    def __enter__(self) -> "NetnsLink":
        self._down()
        run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
        run("ip", "netns", "add", self.ns)
        run("ip", "link", "add", self.dev, "type", "veth", "peer", "name", self.peer)
        run("ip", "link", "set", self.peer, "netns", self.ns)
        run("ip", "addr", "add", f"{self.src}/24", "dev", self.dev)
        run("ip", "link", "set", self.dev, "up")
        run("ip", "netns", "exec", self.ns, "ip", "addr", "add", f"{self.addr}/24", "dev", self.peer)
        run("ip", "netns", "exec", self.ns, "ip", "link", "set", self.peer, "up")
        run("ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up")
        self.mac = subprocess.run(["ip", "netns", "exec", self.ns, "cat", f"/sys/class/net/{self.peer}/address"],
                                  check=True, capture_output=True, text=True).stdout.strip()
        return self

    def _down(self) -> None:
        subprocess.run(["ip", "link", "del", self.dev], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)

    def __exit__(self, *exc: object) -> None:
        self._down()


def run_tool(tool: Tool, out: Path, work: Path) -> dict[str, object]:
    if tool.raw:
        with NetnsLink() as link:
            return _run_tool(tool, out, work, link)
    return _run_tool(tool, out, work, None)


def _run_tool(tool: Tool, out: Path, work: Path, link: NetnsLink | None) -> dict[str, object]:
    if link is None:
        rs = PrivateRsyslog(work / tool.name)
        where: dict[str, str] = {}
    else:
        rs = PrivateRsyslog(work / tool.name, address=link.addr, netns=link.ns)
        where = {"addr": link.addr, "mac": link.mac, "dev": link.dev, "src": link.src, "spare": link.spare}
    rs.start()
    passfile = work / "passwords.txt"
    passfile.write_text("secret\nredis\n")
    goclient = _go_client(work) if "{goclient}" in tool.cmd else ""
    cmd = [a.format(port=rs.port, passfile=passfile, work=work, goclient=goclient, **where) for a in tool.cmd]
    t0 = time.time()
    try:
        p = subprocess.run(cmd, input=tool.stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=tool.timeout)
        rc: int | None = p.returncode
        output = p.stdout
    except subprocess.TimeoutExpired as e:
        rc, output = None, e.stdout or b""
    except FileNotFoundError as e:
        rc, output = -1, str(e).encode()
    took = time.time() - t0
    rs.stop()
    dest = out / tool.name
    dest.mkdir(parents=True, exist_ok=True)
    for fmt, name in KEPT.items():
        shutil.copyfile(rs.files[fmt], dest / name)
    return {"tool": tool.name, "scanner": tool.scanner, "cmd": [a.replace(str(work), "WORK") for a in cmd],
            "rc": rc, "seconds": round(took, 1), "output_tail": output[-400:].decode("utf-8", "replace")}


def _go_client(work: Path) -> str:
    """Build tools/capture/goclient once (Debian's golang-go; no network)."""
    exe = work / "goclient"
    if not exe.exists():
        src = Path(__file__).resolve().parent / "goclient" / "main.go"
        env = {**os.environ, "GOCACHE": str(work / "gocache"), "GOPATH": str(work / "gopath"),
               "GO111MODULE": "off", "GOFLAGS": "-mod=mod"}
        subprocess.run(["go", "build", "-o", str(exe), str(src)], check=True, env=env, capture_output=True)
    return str(exe)


def is_rsyslogd(line: bytes) -> bool:
    """rsyslogd's own messages (FIELD_GUIDE 1: TAG ``rsyslogd:``)."""
    parts = line.split(b" ", 5 if line[:1].isalpha() else 3)
    return any(p.startswith(b"rsyslogd:") or p.startswith(b"rsyslogd[") for p in parts)


def labels(out: Path, tools: tuple[Tool, ...]) -> list[dict[str, object]]:
    rows = []
    for tool in tools:
        for name in KEPT.values():
            path = out / tool.name / name
            if not path.exists():
                continue
            data = path.read_bytes()
            for n, line in enumerate(data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"), 1):
                own = is_rsyslogd(line)
                rows.append({"file": f"{tool.name}/{name}", "line": n,
                             "label": None if own else tool.label,
                             "scanner": "rsyslogd" if own else tool.scanner,
                             "raw": line.decode("latin-1")})
    return rows


#: The tools that are scanners (the others are general clients and libraries).
SCANNERS = frozenset({"sslscan", "testssl.sh", "hydra", "whatweb", "sqlmap", "ike-scan", "sipvicious", "nmap",
                      "masscan", "zmap"})
CLIENTS_YAML = ROOT / "plugin" / "probetag" / "detect" / "catalogue" / "clients" / "known-clients.yaml"


def _explain(path: Path) -> list[dict[str, object] | None]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugin")}
    proc = subprocess.run([sys.executable, "-m", "probetag", "explain", "--format", "jsonl", str(path)],
                          capture_output=True, env=env)
    if proc.returncode not in (0, 1):  # 0: probes found, 1: none
        raise RuntimeError(f"explain {path}: {proc.stderr.decode(errors='replace')[-2000:]}")
    out = proc.stdout.decode()
    return [json.loads(x)["probe"] for x in out.splitlines()]


def build_clients(out: Path, versions: dict[str, str]) -> list[dict[str, object]]:
    """Known-client entries from the captured lines: per tool, every JA4 and
    JA3 (whole hellos) and JA4 cipher part (truncated hellos) its lines
    gave, the product token of its HTTP User-Agent and its SSH banner's
    software; plus nmap's TLS probes from the catalogue. A value that
    several tools gave is listed for each (the table then names none)."""
    sys.path.insert(0, str(ROOT / "plugin"))
    from probetag.detect._clients import recognise
    from probetag.detect import load_catalogue

    seen: dict[tuple[str, str], dict[str, set[str]]] = {}

    def add(kind: str, value: str, client: str, where: str) -> None:
        seen.setdefault((kind, value), {}).setdefault(client, set()).add(where)

    rows = [json.loads(x) for x in (out / "labels.jsonl").read_text().splitlines()]
    truth = {(r["file"], r["line"]): r["scanner"] for r in rows}
    for tool in TOOLS:
        path = out / tool.name / "rfc3339.log"
        if not path.exists():
            continue
        for n, probe in enumerate(_explain(path), 1):
            if not probe or truth.get((f"{tool.name}/rfc3339.log", n)) != tool.scanner:
                continue
            where = f"tests/fixtures/tools/{tool.name}"
            if probe.get("ja4"):
                add("ja4", str(probe["ja4"]), tool.scanner, where)
                add("ja3", str(probe["ja3"]), tool.scanner, where)
            if probe.get("ja4_b"):
                # also for whole hellos: a truncated hello with the same cipher
                # list must see that the list is shared
                add("ja4_b", str(probe["ja4_b"]), tool.scanner, where)
            ua = probe.get("user_agent")
            if isinstance(ua, str) and ua and probe.get("protocol", "").startswith("http"):
                token = ua.split(" ")[0] if "(" not in ua else ua
                add("user_agent_prefix", token.split("/")[0] + "/" if "(" not in ua else token, tool.scanner, where)
            ssh = probe.get("ssh_client")
            if isinstance(ssh, str) and ssh:
                add("ssh_client_prefix", ssh.split("_")[0] + "_", tool.scanner, where)
    for sig in load_catalogue():
        if sig.scanner == "nmap" and sig.match == "payload":
            op = recognise(sig.payload)
            if op is not None and op.protocol == "tls-client-hello" and op.fields.get("ja4"):
                add("ja4", op.fields["ja4"], "nmap", f"catalogue {sig.id}")
                add("ja3", op.fields["ja3"], "nmap", f"catalogue {sig.id}")
                add("ja4_b", op.fields["ja4_b"], "nmap", f"catalogue {sig.id}")
    entries = []
    for (kind, value), clients in sorted(seen.items()):
        for client, wheres in sorted(clients.items()):
            ver = versions.get(client, "")
            entries.append({
                "id": f"{client}-{kind}-{value[:24]}".replace("/", "").replace(" ", "-"),
                "client": client, "kind": kind, "value": value, "scanner": client in SCANNERS,
                "provenance": (f"observed: {client} {ver}".rstrip() + " on the wire on 127.0.0.1 "
                               f"(tools/capture/capture_nmap.py): the payload of {', '.join(sorted(wheres))}")
                if all(w.startswith("catalogue") for w in wheres) else
                (f"observed: {client} {ver}".rstrip() + " -> private rsyslogd on 127.0.0.1 "
                 f"(tools/capture/capture_tools.py); {', '.join(sorted(wheres))}"),
                **({"notes": "also seen from " + ", ".join(sorted(set(clients) - {client}))}
                   if len(clients) > 1 else {}),
            })
    return entries


def write_clients(entries: list[dict[str, object]]) -> None:
    import yaml

    head = ("# Known clients: evidence in a client's opening bytes -> who sent it (detect/_clients.py,\n"
            "# KnownClients). Generated by tools/capture/capture_tools.py --clients from the lines\n"
            "# each tool sent to a private rsyslogd (tests/fixtures/tools/); nmap's hellos from its\n"
            "# catalogue payloads. A value listed under several clients names none of them; a value\n"
            "# listed under one is unique among the clients observed here, not among all software.\n")
    CLIENTS_YAML.parent.mkdir(parents=True, exist_ok=True)
    CLIENTS_YAML.write_text(head + yaml.safe_dump(entries, sort_keys=False, width=200, allow_unicode=False))


def tool_versions() -> dict[str, str]:
    """Debian package versions of the tools (provenance)."""
    pkgs = {"curl": "curl", "openssl": "openssl", "python": "python3", "sslscan": "sslscan",
            "testssl.sh": "testssl.sh", "hydra": "hydra", "whatweb": "whatweb", "sqlmap": "sqlmap",
            "openssh": "openssh-client", "dig": "bind9-dnsutils", "ike-scan": "ike-scan",
            "sipvicious": "sipvicious", "nmap": "nmap", "masscan": "masscan", "zmap": "zmap",
            "go": "golang-go"}
    out = {}
    for client, pkg in pkgs.items():
        p = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True)
        if p.returncode == 0 and p.stdout:
            out[client] = f"{p.stdout.decode()} (Debian package {pkg})"
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated tool names")
    ap.add_argument("--clients", action="store_true",
                    help="only rebuild the known-client table from OUTDIR's captured lines")
    ap.add_argument("outdir", nargs="?", default=str(ROOT / "tests" / "fixtures" / "tools"))
    args = ap.parse_args(argv)
    only = {s for s in args.only.split(",") if s}
    tools = tuple(t for t in TOOLS if not only or t.name in only)
    out = Path(args.outdir)
    if args.clients:
        write_clients(build_clients(out, tool_versions()))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pt-tools-"))
    manifest_path = out / "manifest.jsonl"
    old = {}
    if manifest_path.exists():
        for ln in manifest_path.read_text().splitlines():
            row = json.loads(ln)
            old[row["tool"]] = row
    try:
        for tool in tools:
            row = run_tool(tool, out, work)
            old[tool.name] = row
            print(f"{tool.name}: rc={row['rc']} {row['seconds']}s", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with open(manifest_path, "w") as f:
        for name in sorted(old):
            f.write(json.dumps(old[name]) + "\n")
    all_tools = tuple(t for t in TOOLS if (out / t.name).is_dir())
    with open(out / "labels.jsonl", "w") as f:
        for row in labels(out, all_tools):
            f.write(json.dumps(row) + "\n")
    write_clients(build_clients(out, tool_versions()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
