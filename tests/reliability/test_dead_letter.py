"""A downstream that keeps refusing one record does not stall everything:
with ``output.dead_letter`` the refused record is found by halving its
batch, written (fsynced) to the dead-letter file, counted, and its upstream
chunk acked only then; every other record is delivered. A downstream that
cannot be reached is not a refusal: nothing is dead-lettered.

Everything runs on loopback in one event loop: a forward upstream (raw
socket, chunk ids, reads acks), the forward input, the pipeline, the forward
output, and a downstream forward server that refuses every request holding
the poison record, by closing the connection or by never acking it."""

from __future__ import annotations

import asyncio
import base64
import json

import msgpack
import pytest

from probetag._config import config_from_mapping
from probetag._metrics import Metrics
from probetag._runtime import Pipeline
from probetag._stage import Processor
from probetag.forward import CLOSED, NEED_DATA, Chunk, Limits, ServerConnection
from probetag.inputs.forward_server import ForwardServer
from probetag.outputs.forward_client import ForwardOutput
from probetag.outputs._deadletter import split_entries

POISON = "poison-record"


class RefusingDownstream:
    """Acks every request except one holding a record whose message is
    POISON: ``mode="close"`` closes the connection on it, ``mode="silent"``
    never answers it (the output's ack timeout fires)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.accepted: list[dict] = []
        self.refused = 0
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, reader, writer) -> None:
        conn = ServerConnection("up", limits=Limits(16 << 20, 64 << 20))
        try:
            while True:
                ev = conn.next_event()
                if ev is NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    continue
                if ev is CLOSED:
                    break
                if isinstance(ev, Chunk):
                    records = _records(ev.entries)
                    if any(r.get("message") == POISON for r in records):
                        self.refused += 1
                        if self.mode == "close":
                            break
                        continue  # silent: read on, never ack it
                    self.accepted.extend(records)
                    writer.write(conn.ack_bytes(ev.chunk_id))
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


def _records(entries: bytes) -> list[dict]:
    up = msgpack.Unpacker(raw=False, strict_map_key=False)
    up.feed(entries)
    return [rec for _t, rec in up]


def _frame(tag: str, records: list[dict], chunk: str) -> bytes:
    entries = b"".join(msgpack.packb([1700000000 + i, r], use_bin_type=True) for i, r in enumerate(records))
    return msgpack.packb([tag, entries, {"chunk": chunk, "size": len(records)}], use_bin_type=True)


async def _read_acks(reader, want: set[str], dead_file, seen_on_ack: dict) -> None:
    up = msgpack.Unpacker(raw=False)
    while want:
        data = await reader.read(65536)
        assert data, f"connection closed with acks missing: {sorted(want)}"
        up.feed(data)
        for msg in up:
            cid = msg["ack"]
            want.discard(cid)
            # What the dead-letter file held when this ack came.
            seen_on_ack[cid] = dead_file.read_text() if dead_file.exists() else ""


@pytest.mark.parametrize("mode", ["close", "silent"])
def test_refused_record_is_dead_lettered_and_the_rest_flows(tmp_path, mode):
    dead = tmp_path / "dead.jsonl"

    async def main():
        down = RefusingDownstream(mode)
        await down.start()
        cfg = config_from_mapping({
            "listen": {"address": "127.0.0.1:0", "udp_heartbeat": False},
            "detect": {"enabled": False},
            "output": {"type": "forward", "address": f"127.0.0.1:{down.port}", "ack_timeout": 0.3,
                       "retry_initial": 0.01, "retry_max": 0.05, "dead_letter": str(dead),
                       "dead_letter_after": 3},
        })
        metrics = Metrics()
        output = ForwardOutput(cfg.output, metrics)
        pipeline = Pipeline(Processor(cfg, metrics), output, cfg.flow, metrics)
        server = ForwardServer(cfg.listen, pipeline, metrics)
        await pipeline.start()
        await server.start()
        try:
            r, w = await asyncio.open_connection("127.0.0.1", server.port)
            # 20 chunks of 16 records; chunk 5 holds the poison record at
            # position 7. Written at once, so the output batches them.
            chunks = {}
            for c in range(20):
                recs = [{"uid": c * 16 + i, "message": f"line {c * 16 + i}"} for i in range(16)]
                if c == 5:
                    recs[7] = {"uid": c * 16 + 7, "message": POISON}
                chunks[f"c{c}"] = recs
            w.write(b"".join(_frame("app.log", recs, cid) for cid, recs in chunks.items()))
            await w.drain()
            seen: dict[str, str] = {}
            await asyncio.wait_for(_read_acks(r, set(chunks), dead, seen), 60)
            # Traffic after the refusal flows as before.
            w.write(_frame("app.log", [{"uid": 1000, "message": "after"}], "late"))
            await w.drain()
            await asyncio.wait_for(_read_acks(r, {"late"}, dead, seen), 30)
            w.close()
            return down, metrics, seen, chunks
        finally:
            await server.stop_accepting()
            await server.close()
            await pipeline.close()
            await down.close()

    down, m, seen, chunks = asyncio.run(asyncio.wait_for(main(), 120))
    lines = dead.read_text().splitlines()
    assert len(lines) == 1, lines
    row = json.loads(lines[0])
    assert row["tag"] == "app.log" and row["reason"] in ("eof", "ack_timeout")
    assert row["reason"] == ("eof" if mode == "close" else "ack_timeout")
    assert row["peer"].startswith("127.0.0.1:") and row["time"] == 1700000007
    t, rec = msgpack.unpackb(base64.b64decode(row["record"]), raw=False)
    assert rec == {"uid": 87, "message": POISON} and t == 1700000007
    # The poison chunk was acked only once its record was on disk.
    assert seen["c5"].strip() == lines[0]
    uids = sorted(r["uid"] for r in down.accepted)
    every = sorted([r["uid"] for recs in chunks.values() for r in recs if r["message"] != POISON] + [1000])
    assert sorted(set(uids)) == every                    # every other record delivered
    assert 87 not in uids
    assert m.get("records_dead_lettered") == 1
    assert m.get("records_dead_lettered", reason=row["reason"]) == 1
    # Every record handed to the output ends delivered or dead-lettered.
    assert m.get("records_in") == 321 == m.get("records_passed")
    assert m.get("records_out") + m.get("records_dead_lettered") == 321
    # Halving: 3 refusals of the batch, then log2-many single tries of the
    # halves holding it, 3 of the record alone (the batch boundaries depend
    # on how the input merged the frames, so a range).
    assert 3 + 3 + 1 <= down.refused <= 3 + 3 + 12, down.refused


def test_unreachable_downstream_is_not_a_refusal(tmp_path):
    dead = tmp_path / "dead.jsonl"

    async def main():
        # A port nothing listens on: every attempt is a connect error.
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        cfg = config_from_mapping({
            "detect": {"enabled": False},
            "output": {"type": "forward", "address": f"127.0.0.1:{port}", "ack_timeout": 0.2,
                       "retry_initial": 0.005, "retry_max": 0.01, "dead_letter": str(dead),
                       "dead_letter_after": 1},
        })
        metrics = Metrics()
        output = ForwardOutput(cfg.output, metrics)
        pipeline = Pipeline(Processor(cfg, metrics), output, cfg.flow, metrics)
        await pipeline.start()
        settled = []
        pipeline.submit("t", msgpack.packb([1700000000, {"message": "m"}]), 10, settled.append)
        for _ in range(2000):
            if metrics.get("downstream_retries") >= 20:
                break
            await asyncio.sleep(0.01)
        await pipeline.close()
        return metrics, settled

    m, settled = asyncio.run(asyncio.wait_for(main(), 60))
    assert m.get("downstream_retries", reason="connect_error") >= 20
    assert m.get("records_dead_lettered") == 0 and not dead.exists()
    assert settled == [False]                               # closed unsettled: never acked


def test_split_entries_finds_every_boundary():
    entries = [msgpack.packb([i, {"m": "x" * i}]) for i in range(50)]
    assert split_entries(b"".join(entries)) == entries
    assert split_entries(b"") == []
