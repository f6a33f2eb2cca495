"""Hostile HTTP requests get an answer and a logged reason, never an
exception out of the connection handler, and never hold a slot forever."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest

from probetag._config import config_from_mapping
from probetag._metrics import Metrics
from probetag._runtime import Pipeline
from probetag._stage import Processor
from probetag.inputs._json import MAX_JSON_DEPTH, json_too_deep
from probetag.inputs.http import HttpError, HttpInput, RequestParser, parse_events
from probetag.inputs.ndjson import lines_to_chunks
from probetag.outputs.stdout import StdoutOutput

from .test_http_server import read_response, vector_request


class Harness:
    def __init__(self, **http):
        self.cfg = config_from_mapping({"http": {"address": "127.0.0.1:0", **http},
                                        "detect": {"enabled": False}})
        self.metrics = Metrics()
        self.buf = io.BytesIO()
        self.output = StdoutOutput(self.cfg.output, self.metrics, stream=self.buf)
        self.pipeline = Pipeline(Processor(self.cfg, self.metrics), self.output, self.cfg.flow,
                                 self.metrics)
        self.server = HttpInput(self.cfg, self.metrics, self.pipeline, idle_timeout=30)

    async def __aenter__(self):
        await self.pipeline.start()
        await self.server.start()
        return self

    async def __aexit__(self, *exc):
        await self.server.close()
        await self.pipeline.close()

    async def connect(self):
        return await asyncio.open_connection("127.0.0.1", self.server.port)


@pytest.mark.parametrize("value", ["\u00b945", "\u0664\u0665", "+45", "-1", "4 5", "0x10", "1" * 40])
def test_content_length_ascii_digits_only(value):
    p = RequestParser(1000)
    p.feed(f"POST / HTTP/1.1\r\ncontent-length: {value}\r\n\r\n".encode("utf-8"))
    with pytest.raises(HttpError) as exc:
        p.next_event()
    assert exc.value.status in (400, 413)


@pytest.mark.parametrize("size", [b"-1", b"0x5", b"1_0", b"+5", b"\xd9\xa5"])
def test_chunk_size_hexdig_only(size):
    p = RequestParser(1000)
    p.feed(b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n" + size + b"\r\nhello\r\n0\r\n\r\n")
    with pytest.raises(HttpError) as exc:
        p.next_event()
    assert exc.value.status == 400


def test_depth_bound():
    for d in (1, 10, MAX_JSON_DEPTH):
        assert not json_too_deep("[" * d + "]" * d)
        assert not json_too_deep("[" + ",".join(['{"a":{"b":[1]}}'] * 1000) + "]")
    for d in (2 * MAX_JSON_DEPTH + 1, 100_000):
        assert json_too_deep("[" * d + "]" * d)
        assert json_too_deep('{"a":' * d)
    # Brackets inside strings do not count, escaped quotes included.
    assert not json_too_deep('["' + '[' * 10_000 + '\\"' + '{' * 10_000 + '"]')


def test_deep_bodies_are_400_not_recursion():
    for body in (b"[" * 100_000, b'[{"a":' * 100_000, b"[" * 100_000 + b"]" * 100_000):
        with pytest.raises(HttpError) as exc:
            parse_events(body, "application/json")
        assert exc.value.status == 400
    parsed = parse_events(b'{"m":1}\n' + b'{"a":' * 100_000 + b'\n{"m":2}', "application/x-ndjson")
    assert len(parsed.events) == 2 and parsed.rejected == {"json_too_deep": 1}
    chunks, rejected, first = lines_to_chunks(
        [b'{"m":1}', b"[" * 100_000, b'{"m":' + b"1" * 30 + b"}"],
        default_tag="t", tag_field="tag", time_field="timestamp", batch=10)
    assert rejected == {"json_too_deep": 1, "unpackable": 1} and sum(c[2] for c in chunks) == 1


def test_hostile_requests_answered_over_socket(caplog):
    caplog.set_level(logging.WARNING)

    async def one(h, raw):
        r, w = await h.connect()
        w.write(raw)
        await w.drain()
        status, _, _ = await read_response(r)
        w.close()
        return status

    async def main():
        async with Harness() as h:
            port = h.server.port
            cl = await one(h, b"POST /v1/vector HTTP/1.1\r\ncontent-length: \xc2\xb945\r\n\r\n")
            deep = await one(h, vector_request(b"[" * 100_000, ndjson=False, port=port))
            deep_nd = await one(h, vector_request(b'{"a":' * 100_000, ndjson=True, port=port))
            big_int = await one(h, vector_request(b'[{"a":1' + b"0" * 30 + b"}]", ndjson=False,
                                                  port=port))
            ok = await one(h, vector_request(b'[{"message":"fine"}]', ndjson=False, port=port))
            return cl, deep, deep_nd, big_int, ok, h.metrics

    cl, deep, deep_nd, big_int, ok, m = asyncio.run(asyncio.wait_for(main(), 60))
    assert (cl, deep, deep_nd, big_int, ok) == (400, 400, 400, 400, 200)
    assert m.get("http_internal_errors") == 0
    refused = [r.getMessage() for r in caplog.records if "event=http_request_refused" in r.getMessage()]
    assert len(refused) >= 4 and all("status=400" in line for line in refused)


def test_handler_bug_is_500_and_logged(caplog, monkeypatch):
    caplog.set_level(logging.WARNING)

    async def main():
        async with Harness() as h:
            def broken(req):
                raise KeyError("bug")
            monkeypatch.setattr(h.server, "_decode", broken)
            r, w = await h.connect()
            w.write(vector_request(b'[{"message":"x"}]', ndjson=False, port=h.server.port))
            status, _, _ = await read_response(r)
            w.close()
            return status, h.metrics

    status, m = asyncio.run(asyncio.wait_for(main(), 30))
    assert status == 500 and m.get("http_internal_errors") == 1
    assert any("event=http_internal_error" in r.getMessage() for r in caplog.records)


def test_slow_headers_and_bodies_are_timed_out():
    """Slow-loris headers and a stalled partial body each get a 408 and lose
    their slot after their deadline (timeouts shortened for the test)."""

    async def main():
        async with Harness(header_timeout=0.5, body_timeout=0.5, min_body_rate=1 << 20) as h:
            loris = []
            for _ in range(20):
                r, w = await h.connect()
                w.write(b"POST /v1/vector HTTP/1.1\r\nx-a: ")
                loris.append((r, w))
            r, w = await h.connect()
            w.write(b"POST /v1/vector HTTP/1.1\r\ncontent-type: application/json\r\n"
                    b"content-length: 4000000\r\n\r\n" + b" " * 1_000_000)
            await w.drain()
            bodied = (r, w)
            # Keep the slow-loris connections trickling a byte at a time.
            statuses = []

            async def trickle(rw):
                r, w = rw
                try:
                    for _ in range(100):
                        w.write(b"a")
                        await w.drain()
                        try:
                            return (await asyncio.wait_for(read_response(r), 0.1))[0]
                        except asyncio.TimeoutError:
                            continue
                except (ConnectionError, asyncio.IncompleteReadError):
                    return None
                return None

            statuses = await asyncio.gather(*(trickle(x) for x in loris))
            body_status = (await asyncio.wait_for(read_response(bodied[0]), 20))[0]
            for _, w in loris + [bodied]:
                w.close()
            for _ in range(100):
                if not h.server._conns:
                    break
                await asyncio.sleep(0.05)
            return statuses, body_status, len(h.server._conns), h.metrics

    statuses, body_status, open_conns, m = asyncio.run(asyncio.wait_for(main(), 60))
    assert statuses == [408] * 20
    assert body_status == 408
    assert open_conns == 0
    assert m.get("http_request_timeouts", phase="header") == 20
    assert m.get("http_request_timeouts", phase="body") == 1


def test_big_request_goes_to_the_stage_in_slices():
    """A 3 MB request is handed to the stage in slices of at most
    SLICE_BYTES (the loop serves others between them, as for a forward
    chunk); every event arrives, in order, and the request is answered 200
    once all slices settled."""
    from probetag._runtime import SLICE_BYTES

    n = 30_000
    body = b"".join(b'{"message":"event %06d %s"}\n' % (i, b"x" * 80) for i in range(n))
    assert len(body) > 2 * SLICE_BYTES

    async def main():
        async with Harness() as h:
            calls: list[int] = []
            process = h.pipeline.processor.process

            def counting(tag, entries, *a):
                calls.append(len(entries))
                return process(tag, entries, *a)

            h.pipeline.processor.process = counting
            r, w = await h.connect()
            w.write(vector_request(body, ndjson=True, port=h.server.port))
            await w.drain()
            status, _, _ = await read_response(r)
            w.close()
            return status, calls, h.buf.getvalue()

    status, calls, out = asyncio.run(asyncio.wait_for(main(), 60))
    assert status == 200
    assert len(calls) >= 3 and max(calls) <= SLICE_BYTES
    got = [int(line.split(b"event ")[1][:6]) for line in out.splitlines()]
    assert got == list(range(n))


def test_unfinished_requests_are_bounded_over_all_connections(caplog):
    """Each connection may hold a request body of up to max_body_bytes
    until body_timeout; many doing so at once held GBs. Over
    max_partial_bytes in all, the connections holding the most are shed
    (503 or closed, counted, logged with the peer); an honest request is
    still served."""
    caplog.set_level(logging.WARNING)
    mib = 1024 * 1024
    head = (b"POST /v1/vector HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % mib)
    start = head + b"[" + b" " * (mib * 7 // 8)

    async def main():
        async with Harness(max_body_bytes=mib, max_partial_bytes=3 * mib) as h:
            held = []
            for _ in range(6):
                r, w = await h.connect()
                w.write(start)
                await w.drain()
                held.append((r, w))
            for _ in range(200):                   # the server reads them (bounded wait)
                if h.metrics.get("http_connections_evicted", reason="partial_requests") >= 3:
                    break
                await asyncio.sleep(0.05)
            r, w = await h.connect()
            w.write(vector_request(b'[{"message":"fine"}]', ndjson=False, port=h.server.port))
            await w.drain()
            ok, _, _ = await read_response(r)
            w.close()
            shed = 0
            for hr, hw in held:
                try:
                    data = await asyncio.wait_for(hr.read(), 1)
                    shed += data == b"" or data.startswith(b"HTTP/1.1 503")
                except (asyncio.TimeoutError, ConnectionError):
                    pass
                hw.close()
            total = h.server.partial_total
            for _ in range(100):                   # every connection gone: nothing is held
                if not h.server.partial_total and not h.server._shed:
                    break
                await asyncio.sleep(0.05)
            return ok, shed, h.metrics, total, h.server.partial_total + len(h.server._shed)

    ok, shed, m, total, left = asyncio.run(asyncio.wait_for(main(), 60))
    assert left == 0
    assert ok == 200
    assert m.get("http_connections_evicted", reason="partial_requests") == 3
    assert shed == 3
    assert total <= 3 * 1024 * 1024
    refused = [r.getMessage() for r in caplog.records if "max_partial_bytes" in r.getMessage()]
    assert len(refused) == 3 and all("peer=127.0.0.1" in line for line in refused)
