"""What a JetStream message of the cluster carries. No I/O.

Theory of operation
-------------------
* Input messages (``logs.in.<token>``) come in two shapes:

  - from probetag's ingress: header ``Probetag-Tag`` = the tag, body = the
    batch's packed ``[time, record]`` entries, exactly the bytes the
    upstream sent (the stage's input shape);
  - from Vector's ``nats`` sink (``jetstream: true``): no such header, body =
    one JSON event (``encoding.codec: json``), or NDJSON lines. Events map to
    entries as the HTTP input maps them (``probetag._vector.event_to_entry``:
    ``tag`` and ``timestamp`` fields).

  A body that is neither raises ``BadMessage`` (the worker counts it and
  terminates the message: redelivering it would only fail again).
* Output messages (``logs.out.<tag>``) come in the shape ``out_format``
  says:

  - ``packed`` (the default): the stage's output chunk as it is, the same
    shape as an ingress message (header ``Probetag-Tag``, ``Probetag-Count``,
    body = packed ``[time, record]`` entries) plus ``Probetag-Format:
    packed``. A message whose records nobody changed goes out as the bytes
    it came in (the stage's splice-through), and the egress forwards the
    body as it is: no record is decoded or encoded on the way.
  - ``ndjson``: one JSON event per record, the lines the NDJSON output
    writes (``tag`` and ``timestamp`` fields added), for Vector's ``nats``
    source (``json`` codec, ``newline_delimited`` framing). Costs a
    rendering per record; the egress maps the lines back to entries.
"""

from __future__ import annotations

import json
from typing import Mapping

from .._chunk import OutChunk, pack_entry
from .._vector import event_to_entry
from ..outputs.ndjson_client import render_ndjson

__all__ = ["BadMessage", "TAG_HEADER", "COUNT_HEADER", "WORKER_HEADER", "MSG_ID_HEADER", "FORMAT_HEADER",
           "decode_input", "encode_output", "output_message", "decode_output"]

TAG_HEADER = "Probetag-Tag"
COUNT_HEADER = "Probetag-Count"
WORKER_HEADER = "Probetag-Worker"
MSG_ID_HEADER = "Nats-Msg-Id"
FORMAT_HEADER = "Probetag-Format"


class BadMessage(ValueError):
    """A message body that is neither packed entries with a tag nor JSON events."""


def _json_entries(data: bytes, default_tag: str) -> list[tuple[str, bytes, int]]:
    groups: dict[str, list[bytes]] = {}
    for n, line in enumerate(data.splitlines()):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
            mapped = event_to_entry(event, default_tag=default_tag)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadMessage(f"line {n + 1}: {exc}") from None
        groups.setdefault(mapped.tag, []).append(pack_entry(mapped.time, mapped.record))
    return [(tag, b"".join(parts), len(parts)) for tag, parts in groups.items()]


def decode_input(headers: Mapping[str, str] | None, data: bytes,
                 default_tag: str = "vector") -> list[tuple[str, bytes, int]]:
    """-> [(tag, packed entries, record count or -1 if unknown)]."""
    tag = headers.get(TAG_HEADER) if headers else None
    if tag:
        count = headers.get(COUNT_HEADER, "") if headers else ""
        return [(tag, data, int(count) if count.isdigit() else -1)]
    if data[:1] in (b"{", b" ", b"\n", b"\t"):
        out = _json_entries(data, default_tag)
        if out:
            return out
    raise BadMessage("no Probetag-Tag header and not JSON events")


def encode_output(chunk: OutChunk) -> bytes:
    """The NDJSON body of an output message (``out_format: ndjson``)."""
    return render_ndjson(chunk)


def output_message(chunk: OutChunk, fmt: str = "packed") -> tuple[bytes, dict[str, str]]:
    """(body, headers) of one output message; the caller adds the message id."""
    if fmt == "packed":
        return chunk.entries, {TAG_HEADER: chunk.tag, COUNT_HEADER: str(chunk.count), FORMAT_HEADER: "packed"}
    return render_ndjson(chunk), {TAG_HEADER: chunk.tag}


def decode_output(data: bytes, default_tag: str = "probetag",
                  headers: Mapping[str, str] | None = None) -> list[tuple[str, bytes, int]]:
    """An output message -> [(tag, packed entries, count)] (for the egress).
    A packed one is returned as it is (count -1 if the header lacks it)."""
    if headers and headers.get(FORMAT_HEADER) == "packed" and headers.get(TAG_HEADER):
        count = headers.get(COUNT_HEADER, "")
        return [(headers[TAG_HEADER], data, int(count) if count.isdigit() else -1)]
    return _json_entries(data, default_tag)
