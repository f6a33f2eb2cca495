"""Where enriched records leave: the ``Output`` interface and its factory.

Theory of operation
-------------------
* An output takes one ``OutChunk`` (tag, packed ``[time, record]`` entries,
  count) at a time through ``await send(chunk)``. ``send`` returns only when
  every record of the chunk is *settled*: acked by the downstream forward
  server, or written and flushed to stdout. The runtime acks the upstream
  only after that, which is what makes acks end to end.
* ``send`` never gives up on a delivery failure (it retries forever with
  back-off); the un-acked upstream is the backpressure. It raises only when
  the output is closed (``OutputClosed``) or cancelled.
* Outputs are picked by ``config.output.type`` in ``make_output``; each module
  is imported only when used.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from .._config import Config
from .._metrics import Metrics
from .._chunk import OutChunk

__all__ = ["Output", "OutputClosed", "make_output"]


class OutputClosed(RuntimeError):
    """``send`` was called on, or interrupted by, a closed output."""


class Output(Protocol):
    async def start(self) -> None: ...

    async def send(self, chunk: OutChunk) -> None: ...

    async def close(self) -> None: ...


# output.type -> (module, class). The class is built as cls(config.output, metrics).
_OUTPUTS: dict[str, tuple[str, str]] = {
    "stdout": ("probetag.outputs.stdout", "StdoutOutput"),
    "forward": ("probetag.outputs.forward_client", "ForwardOutput"),
    "ndjson": ("probetag.outputs.ndjson_client", "NdjsonOutput"),
}


def make_output(config: Config, metrics: Metrics) -> Output:
    module, cls = _OUTPUTS[config.output.type]
    return getattr(importlib.import_module(module), cls)(config.output, metrics)  # type: ignore[no-any-return]
