"""NDJSON TCP input (Vector's socket sink): splitter, mapping, loopback server."""

from __future__ import annotations

import asyncio
import io
import json

from hypothesis import given, settings, strategies as st

from probetag._config import config_from_mapping
from probetag._metrics import Metrics
from probetag._runtime import Pipeline
from probetag._stage import Processor, unpacker_for
from probetag.inputs.ndjson import LineSplitter, LineTooLong, NdjsonInput, lines_to_chunks
from probetag.outputs.stdout import StdoutOutput

from .test_http_server import SlowPipe


def split_all(sp, pieces):
    out = []
    for p in pieces:
        out += list(sp.feed(p))
    return out + list(sp.eof())


def test_splitter_basic_crlf_and_eof():
    assert split_all(LineSplitter(100), [b'{"a":1}\n{"b"', b':2}\r\n', b"tail"]) == \
        [b'{"a":1}', b'{"b":2}', b"tail"]


def test_splitter_long_lines_skipped_bounded():
    sp = LineSplitter(10)
    out = split_all(sp, [b"short\n", b"x" * 8, b"y" * 8, b"z" * 1000, b"\nok\n", b"q" * 11 + b"\nend"])
    assert out[0] == b"short" and out[2] == b"ok" and out[4] == b"end"
    assert isinstance(out[1], LineTooLong) and out[1].length == 1016
    assert isinstance(out[3], LineTooLong) and out[3].length == 11
    assert len(sp._buf) == 0  # nothing of the long lines was kept


@given(st.lists(st.binary(max_size=30).filter(lambda b: b"\n" not in b and not b.endswith(b"\r")),
                max_size=20), st.lists(st.integers(1, 17), min_size=1, max_size=10))
@settings(max_examples=100, deadline=None)
def test_splitter_arbitrary_chunking(lines, cuts):
    data = b"".join(l + b"\n" for l in lines)
    pieces, pos, i = [], 0, 0
    while pos < len(data):
        c = cuts[i % len(cuts)]
        pieces.append(data[pos:pos + c])
        pos += c
        i += 1
    assert split_all(LineSplitter(30), pieces) == lines


def test_lines_to_chunks_batches_tags_and_rejects():
    lines = [b'{"tag":"a","n":1}', b"{bad", b'{"n":2}', b"[1]", LineTooLong(99), b"",
             b'{"tag":"a","n":3}', b'{"tag":"a","n":4}']
    chunks, rejected, first = lines_to_chunks(lines, default_tag="d", tag_field="tag",
                                              time_field="timestamp", batch=2)
    # full batches leave as they fill; the remainders follow in first-seen order
    assert [(t, c) for t, _, c in chunks] == [("a", 2), ("d", 1), ("a", 1)]
    assert [r["n"] for _, r in unpacker_for(chunks[0][1])] == [1, 3]
    assert rejected == {"bad_json": 1, "event_not_object": 1, "line_too_long": 1}
    assert first.startswith("not JSON")


def run_server(stream, scenario, **cfg):
    config = config_from_mapping({"ndjson": {"address": "127.0.0.1:0", **cfg.pop("ndjson", {})},
                                  "listen": cfg.pop("listen", {}),
                                  "flow": {"batch_records": 50, **cfg.pop("flow", {})},
                                  "detect": {"enabled": False}})
    metrics = Metrics()
    pipeline = Pipeline(Processor(config, metrics), StdoutOutput(config.output, metrics, stream=stream),
                        config.flow, metrics)
    server = NdjsonInput(config, metrics, pipeline)

    async def main():
        await pipeline.start()
        await server.start()
        try:
            await scenario(server.port)
            for _ in range(500):  # wait (bounded) for the connection to be read and drained
                if not server._conns and await pipeline.drain(0.01):
                    break
                await asyncio.sleep(0.01)
            assert await pipeline.drain(20)
        finally:
            await server.close()
            await pipeline.close()

    asyncio.run(asyncio.wait_for(main(), 50))
    return metrics


def test_vector_socket_sink_session_with_bad_lines(caplog):
    buf = io.BytesIO()

    async def scenario(port):
        # Vector's healthcheck: connect, close, no data
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.close()
        r, w = await asyncio.open_connection("127.0.0.1", port)
        for i in range(20):
            ev = {"host": "h", "message": f"m{i}", "timestamp": "2026-11-27T10:00:00Z", "tag": "vec.sys"}
            w.write(json.dumps(ev, sort_keys=True).encode() + b"\n")
        w.write(b"{garbage\n" + b"x" * 5000 + b"\n" + b'"just a string"\n')
        w.write(b'{"message":"last"}\n')
        await w.drain()
        w.close()

    with caplog.at_level("WARNING", logger="probetag.inputs.ndjson"):
        m = run_server(buf, scenario, ndjson={"max_line_bytes": 1024})
    lines = [json.loads(l) for l in buf.getvalue().splitlines()]
    assert [l["record"]["message"] for l in lines] == [f"m{i}" for i in range(20)] + ["last"]
    assert lines[0]["tag"] == "vec.sys" and lines[-1]["tag"] == "vector"
    assert m.get("records_rejected") == 3
    assert m.get("records_rejected", reason="line_too_long") == 1
    assert m.get("records_in") == 24 == m.get("records_passed") + m.get("records_rejected")
    assert m.get("vector_time_receipt", reason="missing") == 1  # the "last" line has no timestamp
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("event=ndjson_bad_line" in w for w in warnings) == 1  # once per connection
    assert any("peer=127.0.0.1:" in w and "bad_lines=3" in w for w in warnings)


def test_slow_downstream_backpressure_nothing_lost():
    pipe = SlowPipe(0.002)
    n = 3000

    async def scenario(port):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        for i in range(0, n, 100):
            w.write(b"".join(json.dumps({"message": f"m{j}"}).encode() + b"\n" for j in range(i, i + 100)))
            await asyncio.wait_for(w.drain(), 30)
        w.close()

    m = run_server(pipe.stream, scenario, flow={"max_inflight_records": 100})
    pipe.close()
    msgs = [json.loads(l)["record"]["message"] for l in pipe.data.splitlines()]
    assert msgs == [f"m{i}" for i in range(n)]
    assert m.get("backpressure_waits") > 0


def test_connection_limit():
    buf = io.BytesIO()

    async def scenario(port):
        held = []
        for i in range(2):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(json.dumps({"message": f"held{i}"}).encode() + b"\n")
            await w.drain()
            held.append((r, w))
        for _ in range(200):  # both accepted and read
            if buf.getvalue().count(b"\n") >= 2:
                break
            await asyncio.sleep(0.01)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b'{"message":"refused"}\n')
        try:  # closed by the server (a reset, since our line was never read)
            assert await asyncio.wait_for(r.read(), 5) == b""
        except ConnectionResetError:
            pass
        w.close()
        for _, hw in held:
            hw.close()

    m = run_server(buf, scenario, listen={"max_connections": 2})
    assert sorted(json.loads(l)["record"]["message"] for l in buf.getvalue().splitlines()) == ["held0", "held1"]
    assert m.get("ndjson_connections_refused") == 1


def test_lone_surrogate_escapes_counted_per_line():
    lines = [b'{"m":"\\ud800","n":0}', b'{"m":"\\ud800\\udc00","n":1}', b'{"m":"\\\\ud800","n":2}',
             b'"\\ud800"', b'{"m":"\xff","n":3}', b'{"\\udfff":"\\udbff","n":4}']
    stats: dict[str, int] = {}
    chunks, rejected, _ = lines_to_chunks(lines, default_tag="d", tag_field="tag",
                                          time_field="timestamp", batch=100, stats=stats)
    # the rejected line (not an object) yields no record: its escape is not counted
    assert rejected == {"event_not_object": 1}
    assert stats == {"json_surrogates_replaced": 3}
    assert [r["n"] for _, r in unpacker_for(chunks[0][1])] == [0, 1, 2, 3, 4]
    # and no stats dict: nothing to add up, still no error
    assert lines_to_chunks(lines, default_tag="d", tag_field="tag", time_field="timestamp",
                           batch=100)[1] == rejected


def test_socket_session_counts_lone_surrogates():
    buf = io.BytesIO()

    async def scenario(port):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b'{"message":"x\\udbffy"}\n{"message":"ok"}\n{"message":"\\udc00\\ud800"}\n')
        await w.drain()
        w.close()

    m = run_server(buf, scenario)
    msgs = [json.loads(l)["record"]["message"] for l in buf.getvalue().splitlines()]
    assert msgs == ["x\ufffdy", "ok", "\ufffd\ufffd"]
    assert m.get("json_surrogates_replaced", input="ndjson") == 3
