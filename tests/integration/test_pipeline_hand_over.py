"""The pipeline hands chunks to an output with ``send_nowait`` without a task
per chunk: order, settling, failures and shutdown must be what they were
with the task (``Pipeline._deliver``)."""

from __future__ import annotations

import asyncio

from probetag._chunk import OutChunk
from probetag._config import Flow
from probetag._metrics import Metrics
from probetag._runtime import Pipeline
from probetag.outputs import OutputClosed


class _Output:
    """Queues what it is given; the test settles the futures."""

    down = None

    def __init__(self) -> None:
        self.queued: list[tuple[OutChunk, asyncio.Future[None]]] = []

    def send_nowait(self, chunk: OutChunk) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queued.append((chunk, fut))
        return fut

    async def close(self) -> None:
        pass


def _chunks(*tags: str) -> list[OutChunk]:
    return [OutChunk(t, b"\x92\x01\x80", 1) for t in tags]


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_chunks_are_queued_in_order_and_settle_when_all_are_acked():
    async def main():
        out = _Output()
        p = Pipeline(None, out, Flow(max_inflight_records=100), Metrics())  # type: ignore[arg-type]
        settled: list[tuple[str, bool]] = []
        p._dispatch(_chunks("a1", "a2"), 10, lambda ok: settled.append(("a", ok)))
        p._dispatch(_chunks("b"), 5, lambda ok: settled.append(("b", ok)))
        # Queued at once, in the order they were processed.
        assert [c.tag for c, _ in out.queued] == ["a1", "a2", "b"]
        assert (p.flow.records, p.flow.bytes) == (3, 15)
        out.queued[2][1].set_result(None)
        out.queued[0][1].set_result(None)
        await _settle()
        assert settled == [("b", True)]  # "a" waits for its second chunk
        out.queued[1][1].set_result(None)
        await _settle()
        return settled, (p.flow.records, p.flow.bytes), p.metrics

    settled, inflight, metrics = asyncio.run(main())
    assert settled == [("b", True), ("a", True)]
    assert inflight == (0, 0)
    assert metrics.get("delivery_seconds_count") == 2


def test_a_failed_chunk_settles_its_group_once_as_not_delivered():
    async def main():
        out = _Output()
        p = Pipeline(None, out, Flow(max_inflight_records=100), Metrics())  # type: ignore[arg-type]
        settled: list[bool] = []
        p._dispatch(_chunks("a1", "a2"), 10, settled.append)
        out.queued[0][1].set_exception(RuntimeError("bug"))
        await _settle()
        first = list(settled)
        out.queued[1][1].set_result(None)
        await _settle()
        return first, settled, (p.flow.records, p.flow.bytes), p.metrics

    first, settled, inflight, metrics = asyncio.run(main())
    assert first == [False] and settled == [False]
    assert inflight == (0, 0)
    assert metrics.get("internal_errors", where="output") == 1


def test_output_closed_marks_the_output_failed():
    async def main():
        out = _Output()
        p = Pipeline(None, out, Flow(max_inflight_records=100), Metrics())  # type: ignore[arg-type]
        settled: list[bool] = []
        p._dispatch(_chunks("a"), 1, settled.append)
        out.queued[0][1].set_exception(OutputClosed("gone"))
        await _settle()
        return settled, p.output_failed.is_set()

    assert asyncio.run(main()) == ([False], True)


def test_close_settles_what_is_still_queued_as_not_delivered():
    async def main():
        out = _Output()
        p = Pipeline(None, out, Flow(max_inflight_records=100), Metrics())  # type: ignore[arg-type]
        settled: list[bool] = []
        p._dispatch(_chunks("a"), 1, settled.append)
        p._dispatch(_chunks("b"), 1, settled.append)
        out.queued[0][1].set_result(None)
        await _settle()
        await p.close()
        return settled, [f.cancelled() for _, f in out.queued], (p.flow.records, p.flow.bytes)

    settled, cancelled, inflight = asyncio.run(main())
    assert settled == [True, False]
    assert cancelled == [False, True]
    assert inflight == (0, 0)
