"""NDJSON output (towards Vector's socket source), received by the NDJSON input."""

from __future__ import annotations

import asyncio
import io
import json
import socket

import msgpack

from probetag._config import config_from_mapping
from probetag._metrics import Metrics
from probetag._runtime import Pipeline
from probetag._stage import OutChunk, Processor, pack_entry
from probetag.inputs.ndjson import NdjsonInput
from probetag.outputs import OutputClosed, make_output
from probetag.outputs.ndjson_client import NdjsonOutput, render_ndjson
from probetag.outputs.stdout import StdoutOutput

T = msgpack.ExtType(0, (1795773600).to_bytes(4, "big") + (123).to_bytes(4, "big"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chunk(tag, msgs):
    return OutChunk(tag, b"".join(pack_entry(T, {"message": m, "probe": {"name": "GetRequest"}})
                                  for m in msgs), len(msgs))


def test_render_is_vector_mapping_inverse():
    raw = render_ndjson(OutChunk("sec.probe", pack_entry(T, {"message": b"GET /\xff"}), 1))
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    assert json.loads(raw) == {"message": "GET /\\xff", "tag": "sec.probe",
                               "timestamp": "2026-11-27T10:00:00.000000123Z"}


def test_make_output_picks_ndjson_client():
    cfg = config_from_mapping({"output": {"type": "ndjson", "address": "127.0.0.1:9"}})
    assert isinstance(make_output(cfg, Metrics()), NdjsonOutput)


def test_round_trip_reconnect_and_backoff():
    port = free_port()
    out_cfg = config_from_mapping({"output": {"type": "ndjson", "address": f"127.0.0.1:{port}",
                                              "retry_initial": 0.05, "retry_max": 0.2}})
    in_cfg = config_from_mapping({"ndjson": {"address": f"127.0.0.1:{port}"},
                                  "detect": {"enabled": False}})
    buf = io.BytesIO()
    m_out, m_in = Metrics(), Metrics()

    async def receiver():
        pipeline = Pipeline(Processor(in_cfg, m_in), StdoutOutput(in_cfg.output, m_in, stream=buf),
                            in_cfg.flow, m_in)
        server = NdjsonInput(in_cfg, m_in, pipeline)
        await pipeline.start()
        await server.start()
        return pipeline, server

    async def wait_lines(n):
        for _ in range(500):
            if buf.getvalue().count(b"\n") >= n:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"expected {n} lines, got {buf.getvalue().splitlines()!r}")

    async def main():
        out = NdjsonOutput(out_cfg.output, m_out)
        await out.start()
        # nothing listens yet: send keeps retrying with backoff until it does
        send = asyncio.create_task(out.send(chunk("a.b", ["m0", "m1"])))
        await asyncio.sleep(0.3)
        assert not send.done() and m_out.get("output_retries") >= 2
        pipeline, server = await receiver()
        await asyncio.wait_for(send, 5)
        await wait_lines(2)
        # receiver restarts: the output notices the closed peer and reconnects
        await server.close()
        await pipeline.close()
        await asyncio.sleep(0.05)
        pipeline, server = await receiver()
        await asyncio.wait_for(out.send(chunk("c", ["m2"])), 5)
        await wait_lines(3)
        await out.close()
        try:
            await out.send(chunk("c", ["x"]))
            raise AssertionError("send after close must fail")
        except OutputClosed:
            pass
        await server.close()
        await pipeline.close()

    asyncio.run(asyncio.wait_for(main(), 30))
    lines = [json.loads(l) for l in buf.getvalue().splitlines()]
    assert [(l["tag"], l["record"]["message"]) for l in lines] == [("a.b", "m0"), ("a.b", "m1"), ("c", "m2")]
    assert lines[0]["record"]["probe"] == {"name": "GetRequest"}
    assert abs(lines[0]["time"] - 1795773600.0000001) < 1e-6
    assert m_out.get("records_out") == 3 and m_out.get("output_connects") == 2
