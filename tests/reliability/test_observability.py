"""Observability and reload (issue #5): /metrics and /health while traffic
flows, secrets kept out of metrics and logs, every peer error logged with its
address, and SIGHUP reloading config and catalogue with connections open."""

from __future__ import annotations

import re
import signal
import socket
import time

import msgpack
import pytest

from harness import ServeProcess, parse_metrics, scrape, wait_for
from probetag.forward import ClientSecurity
from util.downstream import Downstream
from util.ports import free_port
from util.upstream import HandshakeError, Upstream, event_time, new_chunk_id

SECRETS = {
    "listen_key": "lk-7Hq2vX9-listen-secret",
    "user_password": "pw-Alice-93kd0s",
    "down_key": "dk-Zp4Lw1-down-secret",
    "out_password": "pw-Out-k2m9Qz",
}
PROBE = {"host": "GET", "ident": "/", "message": "HTTP/1.0#015", "source_address": "203.0.113.77"}


def _series(port: int) -> dict[str, float]:
    status, body = scrape(port)
    assert status == 200
    return parse_metrics(body)


def _total(series: dict[str, float], name: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    full = f"probetag_{name}"
    return sum(v for k, v in series.items()
               if (k == full or k.startswith(full + "{")) and all(w in k for w in want))


def test_metrics_health_and_no_secrets_under_load(tmp_path, figures):
    mport = free_port()
    with Downstream(shared_key=SECRETS["down_key"]) as ds, ServeProcess(tmp_path, {
        "listen": {"shared_key": SECRETS["listen_key"], "self_hostname": "probetag-rel",
                   "users": [{"username": "alice", "password": SECRETS["user_password"]}]},
        "output": {"type": "forward", "address": f"127.0.0.1:{ds.port}", "shared_key": SECRETS["down_key"],
                   "username": "probetag", "password": SECRETS["out_password"],
                   "retry_initial": 0.05, "retry_max": 0.5},
        "log_level": "debug",
    }, metrics_port=mport) as pt:
        status, body = scrape(mport, "/health")
        assert status == 200 and '"ok"' in body
        before = _series(mport)
        good = Upstream(pt.port, security=ClientSecurity(SECRETS["listen_key"], "client-a", "alice",
                                                         SECRETS["user_password"]))
        scrapes: list[dict[str, float]] = []
        chunks = 40
        for c in range(chunks):
            recs = [dict(PROBE, uid=c * 25) if i == 0 else {"uid": c * 25 + i, "message": "ok"}
                    for i in range(25)]
            good.send_chunk("obs.load", recs)
            if c % 10 == 0:
                scrapes.append(_series(mport))
        # A chunk with entries that are not [time, map]: rejected per record.
        bad_entries = msgpack.packb([event_time(time.time()), "not a map"]) * 3
        good.sock.sendall(msgpack.packb(["obs.bad", bad_entries, {"chunk": new_chunk_id()}]))
        assert good.read_acks(chunks, timeout=30) >= chunks
        # Refused peers: wrong password, wrong key, no handshake, garbage.
        refused = 0
        for sec in (ClientSecurity(SECRETS["listen_key"], "client-b", "alice", "wrong-password"),
                    ClientSecurity("wrong-key", "client-c", "alice", SECRETS["user_password"])):
            with pytest.raises(HandshakeError):
                Upstream(pt.port, security=sec)
            refused += 1
        raw = Upstream(pt.port)
        raw.send_chunk("obs.nohandshake", [{"uid": -1}])
        assert raw.peer_closed(5) and not raw.acked_at
        raw.close()
        refused += 1
        assert ds.wait_until(lambda: len(ds.acked_records()) >= chunks * 25, 20)
        status, after_text = scrape(mport)
        after = parse_metrics(after_text)
        good.close()
        rc = pt.stop()
        log = pt.log()
    text = after_text + "\n".join(str(s) for s in scrapes)
    # The named series exist and moved.
    moved = {}
    for name, labels in [("records_in", {}), ("records_out", {}), ("records_tagged", {}),
                         ("probes_matched", {"probe": "GetRequest"}),
                         ("records_rejected", {}), ("acks_sent", {}), ("frames_in", {}),
                         ("handshake_failures", {}), ("frames_rejected", {"reason": "handshake_required"}),
                         ("connections_accepted", {})]:
        moved[name] = _total(after, name, **labels) - _total(before, name, **labels)
        assert moved[name] > 0, (name, labels)
    assert _total(after, "records_in") == chunks * 25 + 3
    assert _total(after, "records_rejected") == 3
    assert _total(after, "records_tagged") == chunks
    assert _total(after, "records_out") == chunks * 25
    assert _total(after, "handshake_failures") == 2
    for gauge in ("inflight_records", "inflight_bytes", "acks_pending", "connections_open"):
        assert f"probetag_{gauge}" in after, gauge
    assert _total(after, "inflight_records") == 0 and _total(after, "acks_pending") == 0
    assert len(scrapes) == 4 and scrapes[-1]["probetag_records_in"] > scrapes[0].get("probetag_records_in", 0)
    # Secrets never appear in metrics or logs (debug level).
    for where, blob in (("metrics", text), ("log", log)):
        for name, secret in SECRETS.items():
            assert secret not in blob, f"{name} leaked into {where}"
    # Every peer error names the peer.
    errors = [ln for ln in log.splitlines() if "level=warning" in ln or "level=error" in ln]
    peer_errors = [ln for ln in errors if "forward_peer_error" in ln]
    assert len(peer_errors) >= refused, errors
    assert all(re.search(r"peer=127\.0\.0\.1:\d+ ", ln) for ln in peer_errors), peer_errors
    figures.add(scrapes=len(scrapes) + 2, records_in=int(_total(after, "records_in")),
                tagged=int(_total(after, "records_tagged")), rejected=int(_total(after, "records_rejected")),
                refused_peers=refused, peer_error_lines=len(peer_errors), secrets_leaked=0, exit=rc)
    assert rc == 0


CANARY = """\
- id: reload-canary
  probe: "reload-canary"
  scanner: canary-scanner
  transport: tcp
  payload: "XCANARY-PROBE-7f3a /status HTTP/1.0\\r\\n"
  match: payload
  provenance: "reliability test"
"""
CANARY_RECORD = {"host": "XCANARY-PROBE-7f3a", "ident": "/status", "message": "HTTP/1.0#015",
                 "source_address": "192.0.2.9"}


def _probe_names(ds: Downstream, tag: str) -> list:
    return [rec.get("probe", {}).get("name") for t, _, rec in ds.acked_records() if t == tag]


def test_sighup_reloads_catalogue_and_config_without_dropping_connections(tmp_path, figures):
    mport = free_port()
    (tmp_path / "canary.yaml").write_text(CANARY)
    with Downstream() as ds:
        base = {"output": {"type": "forward", "address": f"127.0.0.1:{ds.port}",
                           "retry_initial": 0.05, "retry_max": 0.5}}
        with ServeProcess(tmp_path, base, metrics_port=mport) as pt:
            up = Upstream(pt.port)  # opened before the reload, kept open across it
            up.send_chunk("hup.before", [dict(CANARY_RECORD, uid=1)])
            assert up.read_acks(1, 15) == 1
            # Add the catalogue file and a config change that needs a restart.
            pt.write_config({**pt.config, "detect": {"catalogue": [str(tmp_path / "canary.yaml")]},
                             "flow": {"max_inflight_records": 1234}})
            t0 = time.monotonic()
            pt.signal(signal.SIGHUP)
            assert wait_for(lambda: "event=reloaded" in pt.log(), 30), pt.log()[-2000:]
            reload_s = time.monotonic() - t0
            up.send_chunk("hup.after", [dict(CANARY_RECORD, uid=2)])
            assert up.read_acks(2, 15) == 2, "the connection opened before the reload stopped working"
            # A broken file keeps the running config.
            pt.config_path.write_text("listen: [unclosed\n")
            pt.signal(signal.SIGHUP)
            assert wait_for(lambda: "event=reload_failed" in pt.log(), 30)
            up.send_chunk("hup.broken", [dict(CANARY_RECORD, uid=3)])
            assert up.read_acks(3, 15) == 3
            series = _series(mport)
            up.close()
            assert ds.wait_until(lambda: len(ds.acked_records()) >= 3, 10)
            rc = pt.stop()
            log = pt.log()
    assert _probe_names(ds, "hup.before") == [None]
    assert _probe_names(ds, "hup.after") == ["reload-canary"]
    assert _probe_names(ds, "hup.broken") == ["reload-canary"]
    assert _total(series, "reloads", result="ok") == 1
    assert _total(series, "reloads", result="failed") == 1
    assert _total(series, "connections_accepted") >= 1 and "connections_timed_out" not in log
    assert "event=reload_restart_needed sections=flow" in log
    figures.add(reloads_ok=1, reloads_failed=1, reload_s=round(reload_s, 2), connections_kept=1, exit=rc)
    assert rc == 0
