"""HTTP input over a real socket, driven with the bytes Vector's http sink sends.

The pipeline behind it is the real one (Processor + runtime Pipeline + the
stdout output writing into a pipe or buffer).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import threading
import time
import zlib

import pytest
import zstandard

from probetag._config import config_from_mapping
from probetag._metrics import Metrics
from probetag._runtime import Pipeline
from probetag._stage import Processor
from probetag.inputs.http import HttpInput
from probetag.outputs.stdout import StdoutOutput


def vector_request(body: bytes, *, ndjson: bool, encoding: str | None = None, path="/v1/vector",
                   port=0, extra: str = "") -> bytes:
    """What Vector's http sink (hyper) writes: lower-case header names,
    content-length framing, keep-alive."""
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "deflate":
        body = zlib.compress(body)       # Vector's `compression: zlib`
    elif encoding == "zstd":
        body = zstandard.ZstdCompressor().compress(body)
    head = (f"POST {path} HTTP/1.1\r\n"
            f"content-type: {'application/x-ndjson' if ndjson else 'application/json'}\r\n"
            + (f"content-encoding: {encoding}\r\n" if encoding else "")
            + "user-agent: Vector/0.47.0 (x86_64-unknown-linux-gnu)\r\n"
            "accept-encoding: zstd,gzip,deflate,br\r\n"
            f"host: 127.0.0.1:{port}\r\n" + extra +
            f"content-length: {len(body)}\r\n\r\n")
    return head.encode() + body


def events(n, start=0, tag=None):
    out = []
    for i in range(start, start + n):
        ev = {"host": "web1", "message": f"line {i}", "source_type": "syslog",
              "timestamp": "2026-11-27T10:00:00.123456Z"}
        if tag:
            ev["tag"] = tag
        out.append(ev)
    return out


def ndjson_body(evs):
    # NDJSON without a trailing newline, as Vector's newline_delimited framing writes it
    return "\n".join(json.dumps(e, sort_keys=True) for e in evs).encode()


async def read_response(reader):
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.lower() == b"content-length":
            length = int(v)
    body = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
    return status, head, body


class Harness:
    def __init__(self, stream, **flow):
        self.cfg = config_from_mapping({"http": {"address": "127.0.0.1:0"},
                                        "flow": {"batch_records": 100, **flow},
                                        "detect": {"enabled": False}})
        self.metrics = Metrics()
        self.output = StdoutOutput(self.cfg.output, self.metrics, stream=stream)
        self.pipeline = Pipeline(Processor(self.cfg, self.metrics), self.output, self.cfg.flow, self.metrics)
        self.server = HttpInput(self.cfg, self.metrics, self.pipeline, idle_timeout=5)

    async def __aenter__(self):
        await self.pipeline.start()
        await self.server.start()
        return self

    async def __aexit__(self, *exc):
        await self.server.close()
        await self.pipeline.close()

    async def connect(self):
        return await asyncio.open_connection("127.0.0.1", self.server.port)


def out_lines(buf: io.BytesIO):
    return [json.loads(l) for l in buf.getvalue().splitlines()]


@pytest.mark.parametrize("ndjson", [True, False])
@pytest.mark.parametrize("encoding", [None, "gzip", "deflate", "zstd"])
def test_vector_batches_keepalive(ndjson, encoding):
    buf = io.BytesIO()

    async def main():
        async with Harness(buf) as h:
            r, w = await h.connect()
            for b in range(3):  # three batches on one keep-alive connection
                evs = events(5, b * 5, tag="syslog.daemon")
                body = ndjson_body(evs) if ndjson else json.dumps(evs).encode()
                w.write(vector_request(body, ndjson=ndjson, encoding=encoding, port=h.server.port))
                await w.drain()
                status, head, _ = await read_response(r)
                assert status == 200, head
            w.close()
            return h.metrics

    m = asyncio.run(asyncio.wait_for(main(), 30))
    lines = out_lines(buf)
    assert [l["record"]["message"] for l in lines] == [f"line {i}" for i in range(15)]
    assert lines[0]["tag"] == "syslog.daemon"
    assert lines[0]["record"] == {"host": "web1", "message": "line 0", "source_type": "syslog"}
    assert abs(lines[0]["time"] - 1795773600.123456) < 1e-3
    assert m.get("records_in") == 15 and m.get("http_requests", status="200") == 3


def test_bad_line_counted_rest_delivered_and_garbage_400():
    buf = io.BytesIO()

    async def main():
        async with Harness(buf) as h:
            r, w = await h.connect()
            body = b'{"message":"a"}\n{not json\n{"message":"b"}'
            w.write(vector_request(body, ndjson=True, port=h.server.port))
            status, _, _ = await read_response(r)
            assert status == 200
            w.write(vector_request(b"\x00\x01garbage", ndjson=True, port=h.server.port))
            status, _, body = await read_response(r)
            assert status == 400 and b"no line" in body
            w.write(vector_request(b"[{broken", ndjson=False, port=h.server.port))
            status, _, _ = await read_response(r)
            assert status == 400
            w.write(vector_request(b"xx", ndjson=True, encoding=None, port=h.server.port,
                                   extra="content-encoding: br\r\n"))
            status, _, _ = await read_response(r)
            assert status == 415
            # the connection still works after 400/415
            w.write(vector_request(b'{"message":"c"}', ndjson=True, port=h.server.port))
            status, _, _ = await read_response(r)
            assert status == 200
            w.close()
            return h.metrics

    m = asyncio.run(asyncio.wait_for(main(), 30))
    assert [l["record"]["message"] for l in out_lines(buf)] == ["a", "b", "c"]
    assert m.get("records_rejected", reason="bad_json") == 1
    assert m.get("records_in") == m.get("records_passed") + m.get("records_rejected") == 4
    assert m.get("http_requests", status="400") == 2 and m.get("http_requests", status="415") == 1


def test_status_codes_paths_methods_health_and_413():
    async def main():
        async with Harness(io.BytesIO()) as h:
            port = h.server.port
            r, w = await h.connect()
            w.write(vector_request(b"[]", ndjson=False, path="/other", port=port))
            assert (await read_response(r))[0] == 404
            w.write(b"GET /v1/vector HTTP/1.1\r\nhost: x\r\n\r\n")
            status, head, _ = await read_response(r)
            assert status == 405 and b"Allow: POST, HEAD" in head
            w.write(b"HEAD /v1/vector HTTP/1.1\r\nhost: x\r\n\r\n")
            assert (await read_response(r))[0] == 200
            w.write(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            status, _, body = await read_response(r)
            assert status == 200 and json.loads(body) == {"status": "ok"}
            w.write(b"POST /v1/vector HTTP/1.1\r\ncontent-length: 999999999\r\n\r\n")
            status, head, _ = await read_response(r)
            assert status == 413 and b"Connection: close" in head
            assert await asyncio.wait_for(r.read(), 5) == b""  # closed after 413
            w.close()

    asyncio.run(asyncio.wait_for(main(), 30))


class SlowPipe:
    """A real pipe whose reader drains slowly: a slow downstream."""

    def __init__(self, delay: float):
        rfd, wfd = os.pipe()
        self.stream = open(wfd, "wb", buffering=0)
        self._r = open(rfd, "rb", buffering=0)
        self.data = bytearray()
        self.delay = delay
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while True:
            piece = self._r.read(4096)
            if not piece:
                return
            self.data += piece
            time.sleep(self.delay)

    def close(self):
        self.stream.close()
        self._t.join(10)


def test_slow_downstream_429_retries_no_loss_no_duplicates():
    pipe = SlowPipe(0.002)
    n_batches, per_batch = 30, 50

    async def sender(h, first):
        r, w = await h.connect()
        retries = 0
        for b in range(first, n_batches, 3):
            body = ndjson_body(events(per_batch, b * per_batch))
            for _ in range(400):  # bounded retry loop, like Vector's retry policy
                w.write(vector_request(body, ndjson=True, encoding="gzip", port=h.server.port))
                await w.drain()
                status, _, _ = await read_response(r)
                if status == 200:
                    break
                assert status == 429
                retries += 1
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("batch never accepted")
        w.close()
        return retries

    async def main():
        async with Harness(pipe.stream, max_inflight_records=60) as h:
            retries = await asyncio.gather(*(sender(h, i) for i in range(3)))
            return h.metrics, sum(retries)

    m, retries = asyncio.run(asyncio.wait_for(main(), 50))
    pipe.close()
    msgs = [json.loads(l)["record"]["message"] for l in pipe.data.splitlines()]
    assert sorted(msgs, key=lambda s: int(s.split()[1])) == [f"line {i}" for i in range(n_batches * per_batch)]
    assert len(msgs) == len(set(msgs))  # no duplicates
    assert retries > 0 and m.get("http_busy") == retries == m.get("http_requests", status="429")
    assert m.get("records_in") == n_batches * per_batch  # a 429'd request was never counted in


def test_closed_output_is_503():
    async def main():
        async with Harness(io.BytesIO()) as h:
            await h.pipeline.close()
            r, w = await h.connect()
            w.write(vector_request(ndjson_body(events(2)), ndjson=True, port=h.server.port))
            status, head, _ = await read_response(r)
            w.close()
            return status, head

    status, head = asyncio.run(asyncio.wait_for(main(), 30))
    assert status == 503 and b"Retry-After" in head


def test_https_with_vector_tls_client(tmp_path):
    import ssl
    import subprocess

    key, crt = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(crt), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=30)
    buf = io.BytesIO()

    async def main():
        h = Harness(buf)
        h.cfg = config_from_mapping({"http": {"address": "127.0.0.1:0",
                                              "tls": {"cert_file": str(crt), "key_file": str(key)}},
                                     "detect": {"enabled": False}})
        h.server = HttpInput(h.cfg, h.metrics, h.pipeline, idle_timeout=5)
        async with h:
            ctx = ssl.create_default_context(cafile=str(crt))
            r, w = await asyncio.open_connection("127.0.0.1", h.server.port, ssl=ctx,
                                                 server_hostname="127.0.0.1")
            w.write(vector_request(ndjson_body(events(3)), ndjson=True, encoding="zstd", port=h.server.port))
            await w.drain()
            status, _, _ = await read_response(r)
            w.close()
            # plain HTTP to the TLS port is not a request: no 200, nothing taken
            r, w = await h.connect()
            w.write(vector_request(ndjson_body(events(1, 99)), ndjson=True, port=h.server.port))
            await w.drain()
            try:
                reply = await asyncio.wait_for(r.read(), 5)
            except ConnectionError:
                reply = b""
            assert not reply.startswith(b"HTTP/1.1 200")
            w.close()
            return status

    assert asyncio.run(asyncio.wait_for(main(), 30)) == 200
    assert [json.loads(l)["record"]["message"] for l in buf.getvalue().splitlines()] == ["line 0", "line 1", "line 2"]


def test_connection_limit_503():
    async def main():
        h = Harness(io.BytesIO())
        h.cfg = config_from_mapping({"http": {"address": "127.0.0.1:0"}, "listen": {"max_connections": 2},
                                     "detect": {"enabled": False}})
        h.server = HttpInput(h.cfg, h.metrics, h.pipeline, idle_timeout=5)
        async with h:
            held = [await h.connect() for _ in range(2)]
            for _, w in held:  # make sure both are accepted and counted
                w.write(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            for r, _ in held:
                assert (await read_response(r))[0] == 200
            r, w = await h.connect()
            status, head, _ = await read_response(r)
            assert status == 503 and b"Connection: close" in head
            w.close()
            for r, w in held:
                w.close()
            return h.metrics.get("http_connections_refused")

    assert asyncio.run(asyncio.wait_for(main(), 30)) == 1


def test_503_then_the_same_batch_resent_to_a_restarted_instance():
    first, second = io.BytesIO(), io.BytesIO()
    body = ndjson_body(events(4))

    async def send(h):
        r, w = await h.connect()
        w.write(vector_request(body, ndjson=True, encoding="gzip", port=h.server.port))
        await w.drain()
        status, _, _ = await read_response(r)
        w.close()
        return status

    async def main():
        async with Harness(first) as h:
            await h.output.close()        # downstream gone: nothing can settle
            assert await send(h) == 503
            m1 = h.metrics
        async with Harness(second) as h:  # Vector retries against the restarted instance
            assert await send(h) == 200
            return m1, h.metrics

    m1, m2 = asyncio.run(asyncio.wait_for(main(), 30))
    assert first.getvalue() == b"" and m1.get("http_unsettled") == 1
    assert [json.loads(l)["record"]["message"] for l in second.getvalue().splitlines()] == \
        [f"line {i}" for i in range(4)]


def test_large_body_decoded_off_the_loop():
    buf = io.BytesIO()
    n = 8000
    body = ndjson_body(events(n))
    assert len(body) > 256 * 1024  # takes the worker-thread path

    async def main():
        async with Harness(buf) as h:
            r, w = await h.connect()
            w.write(vector_request(body, ndjson=True, port=h.server.port))
            await w.drain()
            # the loop stays responsive while the body is decoded
            r2, w2 = await h.connect()
            w2.write(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            assert (await read_response(r2))[0] == 200
            w2.close()
            status, _, _ = await read_response(r)
            w.close()
            return status

    assert asyncio.run(asyncio.wait_for(main(), 40)) == 200
    msgs = [json.loads(l)["record"]["message"] for l in buf.getvalue().splitlines()]
    assert msgs == [f"line {i}" for i in range(n)]


@pytest.mark.parametrize("ndjson", [True, False])
def test_lone_surrogate_escapes_delivered_replaced_and_counted(ndjson):
    buf = io.BytesIO()
    # Written by hand: json.dumps would pair nothing here either, but the
    # raw 0xff byte (not UTF-8, kept byte for byte) must not be counted.
    lines = [b'{"message":"a\\ud800b","n":0}', b'{"message":"\\ud83d\\ude00","n":1}',
             b'{"message":"c\\udcff\xffd","n":2}']
    body = b"\n".join(lines) if ndjson else b"[" + b",".join(lines) + b"]"

    async def main():
        async with Harness(buf) as h:
            r, w = await h.connect()
            w.write(vector_request(body, ndjson=ndjson, port=h.server.port))
            status, head, _ = await read_response(r)
            assert status == 200, head
            w.close()
            return h.metrics

    m = asyncio.run(asyncio.wait_for(main(), 30))
    got = {json.loads(l)["record"]["n"]: l for l in buf.getvalue().splitlines()}
    assert sorted(got) == [0, 1, 2]
    assert json.loads(got[0])["record"]["message"] == "a\ufffdb"
    assert json.loads(got[1])["record"]["message"] == "\U0001F600"
    assert m.get("json_surrogates_replaced", input="http") == 2
    assert m.get("records_in") == m.get("records_passed") == 3
