"""``probetag serve`` with the Vector inputs wired in: HTTP and NDJSON into one
pipeline, detection on, JSON lines out."""

from __future__ import annotations

import asyncio
import io
import json

from probetag._config import config_from_mapping
from probetag._metrics import Metrics
from probetag._serve import Service

from .test_http_server import read_response, vector_request

PROBE = "GET / HTTP/1.0#015#012#015#012"


def test_service_runs_http_and_ndjson_inputs():
    cfg = config_from_mapping({
        "listen": {"address": "127.0.0.1:0"},
        "http": {"address": "127.0.0.1:0", "default_tag": "vector.syslog"},
        "ndjson": {"address": "127.0.0.1:0"},
        "actions": {"rules": [{"action": "retag", "tag": "security.probe.${tag}"}]},
    })
    out = io.BytesIO()
    metrics = Metrics()

    async def main():
        svc = Service(cfg, metrics, stdout=out)
        await svc.start()
        try:
            http = next(i for i in svc.inputs if type(i).__name__ == "HttpInput")
            nd = next(i for i in svc.inputs if type(i).__name__ == "NdjsonInput")
            r, w = await asyncio.open_connection("127.0.0.1", http.port)
            body = "\n".join(json.dumps(e) for e in [
                {"message": PROBE, "source_ip": "203.0.113.7", "timestamp": "2026-11-27T10:00:00Z"},
                {"message": "session opened for user root", "timestamp": "2026-11-27T10:00:01Z"}]).encode()
            w.write(vector_request(body, ndjson=True, encoding="gzip", port=http.port))
            await w.drain()
            status, _, _ = await read_response(r)
            assert status == 200
            w.close()
            r, w = await asyncio.open_connection("127.0.0.1", nd.port)
            w.write(json.dumps({"message": "plain", "tag": "vec.tcp"}).encode() + b"\n")
            await w.drain()
            w.close()
            for _ in range(300):
                if out.getvalue().count(b"\n") >= 3:
                    break
                await asyncio.sleep(0.01)
        finally:
            assert await svc.stop(drain_timeout=5)

    asyncio.run(asyncio.wait_for(main(), 30))
    lines = [json.loads(l) for l in out.getvalue().splitlines()]
    by_msg = {l["record"]["message"]: l for l in lines}
    assert set(by_msg) == {PROBE, "session opened for user root", "plain"}
    probe = by_msg[PROBE]
    assert probe["tag"] == "security.probe.vector.syslog"
    assert probe["record"]["probe"]["scanner"] == "nmap"
    assert by_msg["plain"]["tag"] == "vec.tcp" and "probe" not in by_msg["plain"]["record"]
    assert metrics.get("records_tagged") == 1 and metrics.get("records_in") == 3
