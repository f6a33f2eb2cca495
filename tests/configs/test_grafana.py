"""configs/grafana/probetag.json: every metric a dashboard query names is one
``/metrics`` exports: the core ones read from a real ``serve`` scrape after
real traffic, the ones that need a fault (retries, refusals) from the code
that counts them."""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
from pathlib import Path

import msgpack

from tests.util.service import ServiceThread
from tests.util.upstream import event_time, new_chunk_id

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "configs" / "grafana" / "probetag.json"


def _queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    out = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    out += [v["query"] for v in dash["templating"]["list"] if v.get("type") == "query"]
    return out


def _names(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in re.findall(r"\bprobetag_[a-z_]+", e)}


def _emitted_by_code() -> set[str]:
    """Metric names the code counts or sets (``metrics.inc/set("name"``)."""
    names = set()
    for path in (ROOT / "plugin" / "probetag").rglob("*.py"):
        names |= set(re.findall(r'\.(?:inc|set)\(\s*"([a-z_]+)"', path.read_text()))
    return {f"probetag_{n}" for n in names}


def _recv_ack(s: socket.socket) -> dict:
    u = msgpack.Unpacker(raw=False)
    while True:
        data = s.recv(4096)
        assert data
        u.feed(data)
        for obj in u:
            return obj


def _scrape() -> str:
    with ServiceThread({"listen": {"address": "127.0.0.1:0"}, "metrics": {"address": "127.0.0.1:0"},
                        "actions": {"summaries": True}}) as svc:
        port = svc.service.metrics_server.port
        records = [{"host": "GET", "ident": "/", "message": "HTTP/1.0#015", "source_address": "203.0.113.7"},
                   {"host": "web01", "ident": "sshd", "message": "Accepted publickey for root"}]
        with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as s:
            cid = new_chunk_id()
            entries = b"".join(msgpack.packb([event_time(time.time()), r], use_bin_type=True) for r in records)
            s.sendall(msgpack.packb(["syslog", entries, {"chunk": cid}], use_bin_type=True))
            assert _recv_ack(s) == {"ack": cid}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        return text


def test_every_dashboard_metric_is_exported() -> None:
    queried = _names(_queries())
    assert len(queried) >= 15
    text = _scrape()
    scraped = set(re.findall(r"^(probetag_[a-z_]+)", text, re.M))
    # what real traffic shows at once
    core = {"probetag_records_in", "probetag_records_passed", "probetag_records_tagged",
            "probetag_probes_matched", "probetag_inflight_records", "probetag_healthy",
            "probetag_delivery_seconds_sum", "probetag_delivery_seconds_count", "probetag_connections_open",
            "probetag_connections_accepted"}
    assert core <= queried and core <= scraped, core - scraped
    assert re.search(r'probetag_probes_matched\{[^}]*probe="GetRequest"[^}]*scanner="nmap"', text), text
    assert "probetag_healthy 1" in text
    # the rest appear once their event happens: the code must count them
    missing = queried - scraped - _emitted_by_code()
    assert missing == set()


def test_dashboard_panels_cover_the_issue_s_views() -> None:
    dash = json.loads(DASHBOARD.read_text())
    titles = " | ".join(p["title"] for p in dash["panels"]).lower()
    for want in ("outcome", "probe", "scanner", "scans per minute", "downstream", "in flight", "latency"):
        assert want in titles, want
    exprs = " ".join(_queries())
    for outcome in ("passed", "tagged", "dropped", "rejected"):
        assert f"probetag_records_{outcome}" in exprs
    assert "by (probe, scanner)" in exprs
