"""Real tools' lines (tests/fixtures/tools, labelled by the tool that sent
each) through ``probetag explain --format jsonl``: lines tagged, and no
line named after a scanner that did not send it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "tools"
LABELS = [json.loads(x) for x in (FIXTURE / "labels.jsonl").read_text().splitlines()]
FILES = sorted({r["file"] for r in LABELS})


def explain(*paths: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugin")}
    out = subprocess.run([sys.executable, "-m", "probetag", "explain", "--format", "jsonl", *map(str, paths)],
                         capture_output=True, env=env, timeout=300)
    # grep's exit codes: 0 probes found, 1 none
    assert out.returncode == (0 if b'"probe": {' in out.stdout else 1), out.stderr.decode()[-2000:]
    return [json.loads(x) for x in out.stdout.decode().splitlines()]


@pytest.fixture(scope="module")
def results() -> dict[tuple[str, int], dict | None]:
    out = {}
    for f in FILES:
        for row in explain(FIXTURE / f):
            out[(f, row["line"])] = row["probe"]
    return out


def test_labels_cover_every_line(results):
    assert set(results) == {(r["file"], r["line"]) for r in LABELS}
    assert {r["scanner"] for r in LABELS} >= {"curl", "openssl", "sslscan", "testssl.sh", "hydra", "whatweb",
                                              "sqlmap", "ike-scan", "sipvicious", "python", "openssh", "dig",
                                              "masscan", "zmap"}


def test_tools_lines_are_tagged(results):
    per_tool: dict[str, Counter] = defaultdict(Counter)
    for r in LABELS:
        if r["scanner"] == "rsyslogd":
            continue
        probe = results[(r["file"], r["line"])]
        per_tool[r["scanner"]]["lines"] += 1
        if probe is not None:
            per_tool[r["scanner"]]["tagged"] += 1
    total = sum(c["lines"] for c in per_tool.values())
    tagged = sum(c["tagged"] for c in per_tool.values())
    assert tagged / total >= 0.9, {k: dict(v) for k, v in per_tool.items()}
    # and every tool has most of its lines tagged, not just the loud ones
    for tool, c in per_tool.items():
        assert c["tagged"] / c["lines"] >= 0.75, (tool, dict(c))


def test_no_line_named_after_a_tool_that_did_not_send_it(results):
    wrong = []
    for r in LABELS:
        probe = results[(r["file"], r["line"])]
        if probe is None:
            continue
        if r["scanner"] == "rsyslogd" or probe["scanner"] not in ("unknown", r["scanner"]):
            wrong.append((r["file"], r["line"], r["scanner"], probe["scanner"], probe["name"]))
    assert wrong == []


def test_lines_name_the_protocol_or_the_tools_own_probe(results):
    for r in LABELS:
        probe = results[(r["file"], r["line"])]
        if probe is None or r["label"] is None:
            continue
        if probe["scanner"] == "unknown" and r["scanner"] in probe.get("sent_by", ()):
            # bytes several scanners send (zmap sends some of nmap's UDP
            # payloads): the probe is named, and every scanner that sends it
            continue
        if probe["scanner"] == "unknown" or probe.get("protocol"):
            # named by protocol: the label's protocol family
            assert _family(probe["name"]) == _family(r["label"]), (r["file"], r["line"], probe["name"], r["label"])
        assert probe["seen_in"] == "syslog-listener"


def _family(name: str) -> str:
    """tls-client-hello and sslv2-client-hello are one family (testssl.sh
    sends both); http-request and http-header too."""
    head = name.split("-")[0]
    return {"sslv2": "tls"}.get(head, head)


def test_accept_star_line_is_not_masscan(results):
    for r in LABELS:
        probe = results[(r["file"], r["line"])]
        if "Accept: */*#015" in r["raw"]:
            assert probe is not None and probe["confidence"] <= 0.9
            assert (probe["scanner"] == "masscan") == (r["scanner"] == "masscan"), (r["file"], r["line"])


def test_an_http_requests_client_names_every_line_of_it(results):
    # One request's lines (request line, headers, the empty line) were sent
    # by one client: the one its User-Agent names (the known-client table or
    # the catalogue), the lines before that header as well as after it.
    for tool, folder in (("sqlmap", "sqlmap"), ("hydra", "hydra-http-get"), ("curl", "curl-http"),
                         ("whatweb", "whatweb"), ("go", "go-http")):
        rows = [r for r in LABELS if r["file"].startswith(folder + "/") and r["scanner"] == tool]
        assert len(rows) >= 4, tool
        got = [(r["file"], r["line"], (results[(r["file"], r["line"])] or {}).get("scanner")) for r in rows]
        assert all(x[2] == tool for x in got), got


def test_a_hellos_piece_with_a_tab_and_words_is_read_with_the_rest(results):
    # curl's ClientHello, cut at its LF bytes: one piece holds an escaped TAB
    # (#011) among its random bytes, which read as words; it is no text
    # line with a TAB (explain skips those unread) but a binary piece, and
    # with it the hello is whole: its fingerprint names curl.
    rows = [r for r in LABELS if r["file"].startswith("curl-https/") and r["scanner"] == "curl"]
    assert len(rows) == 10 and any("#011" in r["raw"] for r in rows)
    got = [(r["file"], r["line"], (results[(r["file"], r["line"])] or {}).get("scanner")) for r in rows]
    assert all(x[2] == "curl" for x in got), got


def test_a_hello_two_tools_send_alike_is_named_after_the_senders_own_tool(results):
    # sslscan and testssl.sh send some ClientHellos byte for byte: such a
    # hello names both as candidates. The sender's other hellos of the run
    # name sslscan alone: this one is sslscan's too.
    for f in ("sslscan/traditional.log", "sslscan/rfc3339.log"):
        alike = [r for r in LABELS if r["file"] == f and r["line"] in (23, 24, 25)]
        assert [r["scanner"] for r in alike] == ["sslscan"] * 3
        assert all(results[(f, r["line"])]["scanner"] == "sslscan" for r in alike), f


def test_a_hellos_last_piece_in_a_tag_cut_at_510_bytes_ends_it(results):
    # testssl.sh's hellos end in long runs of NULs: rsyslog cut the last
    # piece's TAG (no space in it) at 510 bytes, and the line is marked lossy
    # for the space the template puts at the cut. It misses no byte of the
    # hello, so it still completes it, and the hello's fingerprint names it.
    for f in ("testssl/traditional.log", "testssl/rfc3339.log"):
        rows = [r for r in LABELS if r["file"] == f and r["line"] in (10, 24, 29, 37)]
        assert [r["scanner"] for r in rows] == ["testssl.sh"] * 4
        got = [results[(f, r["line"])] for r in rows]
        assert all(p is not None and (p["name"], p["scanner"]) == ("tls-client-hello", "testssl.sh") for p in got), got


def test_masscan_and_zmap_are_named_from_their_own_bytes(results):
    # Real masscan (--banners --hello=http) and zmap (UDP module, every
    # payload file of its examples) across a veth link into a namespace.
    masscan = [results[(r["file"], r["line"])] for r in LABELS
               if r["scanner"] == "masscan" and r["file"].endswith("rfc3339.log")]
    assert len(masscan) == 4 and all(p is not None and p["scanner"] == "masscan" for p in masscan)
    zmap = {r["file"]: results[(r["file"], r["line"])] for r in LABELS
            if r["scanner"] == "zmap" and r["file"].endswith("rfc3339.log")}
    assert len(zmap) >= 18
    shared = {f for f, p in zmap.items() if p is not None and p.get("sent_by")}
    # NTP, IPMI, DNS-SD and Citrix are nmap's payloads byte for byte
    assert {"zmap-udp-ntp_123/rfc3339.log", "zmap-udp-ipmi_623/rfc3339.log"} <= shared
    for f, p in zmap.items():
        if p is None:
            continue
        if f in shared:
            assert p["scanner"] == "unknown" and p["sent_by"] == ["nmap", "zmap"], (f, p)
        else:
            assert p["scanner"] == "zmap", (f, p)


BENIGN = [
    "2026-12-05T17:00:00.000001+00:00 host1 sshd[812]: Bad protocol version identification 'SSH-2.0-Go' from 203.0.113.5 port 40022",
    '2026-12-05T17:00:00.000002+00:00 host1 nginx: 203.0.113.5 - - [05/Dec/2026:17:00:00 +0000] "GET / HTTP/1.0" 200 612 "-" "curl/8.0"',
    "2026-12-05T17:00:00.000003+00:00 host2 MSWinEventLog#0111#011Security#011123#011Sat Dec 05 17:00:00 2026#015",
    '2026-12-05T17:00:00.000004+00:00 host3 app[1]: {"method": "GET", "path": "/", "proto": "HTTP/1.0"}#015',
    "2026-12-05T17:00:00.000005+00:00 host3 app[1]: dump 16 03 01 02 00 01 00 01 fc 03 03 32 56",
    "2026-12-05T17:00:00.000006+00:00 host3 app[1]: payload=FgMBAgABAAH8AwMyVrlehw==",
    "2026-12-05T17:00:00.000007+00:00 host4 haproxy[9]: 203.0.113.5:5000 [05/Dec/2026:17:00:00] fe be/s1 GET / HTTP/1.1",
    "2026-12-05T17:00:00.000008+00:00 host4 winlogbeat: Host: dc01.example.org#015",
    "2026-12-05T17:00:00.000009+00:00 host5 kernel: [1.0] #026#003#001 seen in buffer",
]


def test_benign_near_misses_stay_untagged(tmp_path):
    f = tmp_path / "benign.log"
    f.write_text("\n".join(BENIGN) + "\n")
    rows = explain(f)
    assert len(rows) == len(BENIGN)
    assert [r["line"] for r in rows if r["probe"] is not None] == []


def test_scanner_user_agent_in_an_access_log_is_an_application_log_trace(tmp_path):
    f = tmp_path / "nginx.log"
    f.write_text(
        '2026-12-05T17:00:00.000001+00:00 web1 nginx: 203.0.113.5 - - [05/Dec/2026:17:00:00 +0000] '
        '"GET /nmaplowercheck1764954000 HTTP/1.1" 404 153 "-" "Mozilla/5.0 (compatible; Nmap Scripting Engine; '
        'https://nmap.org/book/nse.html)"\n'
        "2026-12-05T17:00:01.000001+00:00 127.0.0.1 User-Agent: Mozilla/5.0 (compatible; Nmap Scripting Engine; "
        "https://nmap.org/book/nse.html)#015\n")
    rows = explain(f)
    assert rows[0]["probe"]["scanner"] == "nmap" and rows[0]["probe"]["seen_in"] == "application-log"
    assert rows[1]["probe"]["scanner"] == "nmap" and rows[1]["probe"]["seen_in"] == "syslog-listener"


def test_probe_line_in_the_hostname_slot_is_not_its_sender(tmp_path):
    # "show info\r" (nmap's tarantool probe) is logged as HOSTNAME "show":
    # that word is the payload's, the line names no sender.
    f = tmp_path / "slot.log"
    f.write_text("2026-12-05T17:00:00.100000+00:00 show info#015\n"
                 "2026-12-05T17:00:03.100000+00:00 web01 sshd[1]: Accepted publickey for root\n")
    rows = explain(f)
    assert rows[0]["probe"]["name"] == "tarantool" and rows[0]["probe"]["source"] is None
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugin")}
    text = subprocess.run([sys.executable, "-m", "probetag", "explain", str(f)], capture_output=True, env=env,
                          timeout=120).stdout.decode()
    assert "show:" not in text and "nmap" in text
