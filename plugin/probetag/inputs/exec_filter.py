"""``probetag exec-filter``: records on stdin, enriched records on stdout, for
Fluentd's ``out_exec_filter``.

Theory of operation
-------------------
* What Fluentd writes (``lib/fluent/plugin/out_exec_filter.rb``, v1): each
  record is passed through ``<inject>`` and then the ``<format>`` plugin.
  With ``<format> @type json`` that is one JSON object per line; with
  ``@type msgpack`` a bare stream of msgpack maps (no framing, no newline).
  The tag and the time are *only* in the record if ``<inject>`` puts them
  there (``tag_key``, ``time_key``; ``out_exec_filter`` defaults the inject
  ``time_type`` to ``unixtime``, i.e. integer seconds; ``float`` and
  formatted strings are also possible). Our keys default to ``tag`` and
  ``time`` (``--tag-key``, ``--time-key``).
* What Fluentd reads back: the ``<parse>`` plugin over our stdout (json: one
  object per line; msgpack: a stream of maps), then ``<extract>`` takes the
  tag and time out of the record. So we answer in the format we were given
  (``--out-format`` defaults to ``--in-format``), and:

  - the time field is left in the record exactly as it arrived (int, float
    or string), so ``<extract>`` reads back what ``<inject>`` wrote, whatever
    its ``time_type``;
  - the tag field is written back only on records that arrived with one,
    holding the record's tag after ``retag`` rules. Records that came without
    it get no field added (and Fluentd uses its ``tag`` parameter).

  Whatever the routing, the ``<match>`` that receives our output must not be
  the one that feeds us, or records loop forever (FORWARD_NOTES §8): the
  ready configs send it to a ``@label``.
* ``ExecFilterCore`` is the sans-I/O part: ``feed(bytes)`` decodes records
  into a pending batch; ``flush()`` runs the batch through ``Processor`` and
  returns the output bytes. Consecutive records with the same tag (and the
  same presence of the tag field) form one chunk, so the output order is the
  input order, minus dropped records.
* Bytes are kept. A record that the processor leaves alone goes back as the
  very bytes it arrived in (its JSON line or msgpack map), when the output
  format is the input format. A changed record is written again with every
  value's bytes intact: JSON input may hold raw bytes that are not UTF-8
  (Fluentd's JSON formatter writes in_tail's binary strings as they are);
  they are decoded with surrogate escapes and written back as the same raw
  bytes, not as ``\\xHH`` text. NOTE: Fluentd's JSON reader (Yajl, UTF-8
  checked) refuses such bytes; only the msgpack form carries them through
  Fluentd, which is why the shipped config uses msgpack both ways.
* JSON out is padded to Fluentd's read block. out_exec_filter reads a JSON
  child with ``parser_json#parse_io``: ``Yajl::Parser#parse(io, 8192)``,
  which calls ``io.read(8192)`` and so blocks until 8192 bytes (or EOF)
  have arrived (``stream_buffer_size``, default 8192). The last records of
  a batch would stay in Fluentd until more output came. So each flush ends
  with spaces and a newline up to the next multiple of ``json_block`` bytes
  of output (JSON allows whitespace between values; ``--json-block-size``,
  0 turns it off). The msgpack reader uses ``readpartial`` and needs none.
* ``main`` is the thin I/O loop: it reads stdin with ``select``, flushes when
  ``flow.batch_records`` records are pending, when stdin has been quiet for
  ``IDLE_FLUSH`` seconds, or when the oldest pending record is ``MAX_DELAY``
  seconds old, so a partial batch never waits for more input forever. Each
  flush writes and flushes stdout (Fluentd reads the pipe as it comes).
* Bad input is counted and logged (stderr), never passed on silently: a JSON
  line that does not parse or is not an object is rejected and skipped; a
  msgpack value that is not a map is rejected; a msgpack stream that cannot
  be decoded cannot be resynchronised, so the filter logs it, writes what it
  has and exits with status 1 (Fluentd's ``child_respawn`` restarts it).
* Scan summaries (``actions.summaries``) leave under ``actions.summary_tag``
  in the tag field, when a scan goes idle and, for every open scan, at the
  end of input.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import select
import sys
import time as _time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .._config import Config, ConfigError, load_config
from .._logging import log_event, setup_logging
from .._jsonenc import to_jsonable
from .._metrics import Metrics
from .._chunk import OutChunk, event_time_now, pack_entry, unpacker_for
from .._stage import Processor
from .._vector import parse_timestamp
from ._json import MAX_JSON_DEPTH, json_too_deep

__all__ = ["ExecFilterCore", "main", "IDLE_FLUSH", "MAX_DELAY"]

log = logging.getLogger("probetag.exec_filter")

IDLE_FLUSH = 0.2   # seconds of quiet stdin before a partial batch is processed
MAX_DELAY = 1.0    # a pending record never waits longer than this
MAX_LINE = 16 * 1024 * 1024
#: parser_json's ``stream_buffer_size`` default: Yajl reads Fluentd's pipe in
#: blocks of this many bytes (see above).
JSON_BLOCK = 8192

_json_out = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_packer = msgpack.Packer(unicode_errors="surrogateescape", use_bin_type=True)


class StreamBroken(Exception):
    """The msgpack input cannot be decoded any further."""


@dataclass(slots=True)
class _Run:
    tag: str
    had_tag: bool
    entries: list[bytes] = field(default_factory=list)
    #: packed entry -> the input bytes of the records packed to it, in order
    raw: dict[bytes, deque[bytes]] = field(default_factory=dict)


class ExecFilterCore:
    """Sans-I/O: bytes of Fluentd's formatted records in, formatted records out."""

    def __init__(self, config: Config, metrics: Metrics, *, in_format: str = "json",
                 out_format: str | None = None, tag_key: str = "tag", time_key: str = "time",
                 default_tag: str = "exec_filter", processor: Processor | None = None,
                 json_block: int = JSON_BLOCK) -> None:
        if in_format not in ("json", "msgpack"):
            raise ValueError(f"in_format must be json or msgpack, got {in_format!r}")
        self.in_format = in_format
        self.out_format = out_format or in_format
        if self.out_format not in ("json", "msgpack"):
            raise ValueError(f"out_format must be json or msgpack, got {self.out_format!r}")
        self.metrics = metrics
        self.processor = processor or Processor(config, metrics)
        self.tag_key = tag_key
        self.time_key = time_key
        self.default_tag = default_tag
        self._runs: list[_Run] = []
        self.pending = 0
        self.oldest: float | None = None  # monotonic time of the oldest pending record
        self._line = bytearray()
        self._skipping_line = False
        self._unpacker = unpacker_for(None, max_size=MAX_LINE) if in_format == "msgpack" else None
        self._fed = 0
        self._complete = 0
        self._mbuf = bytearray()  # msgpack input from offset _mbase on, for the raw bytes
        self._mbase = 0
        self.json_block = json_block if self.out_format == "json" else 0
        self.written = 0  # output bytes so far (for the JSON block padding)
        self.first_error: str | None = None

    # -- input ---------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._unpacker is not None:
            self._fed += len(data)
            self._unpacker.feed(data)
            self._mbuf += data
            try:
                for value in self._unpacker:
                    # tell() also counts bytes of a value still incomplete, so
                    # remember where the last whole one ended.
                    start = self._complete - self._mbase
                    self._complete = self._unpacker.tell()
                    self._record(value, bytes(self._mbuf[start:self._complete - self._mbase]))
            except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, TypeError) as exc:
                # TypeError: a map or an array as a map key (well-framed, but
                # Python cannot hold it, and the unpacker cannot skip it).
                self._reject("undecodable_stream", f"msgpack stream undecodable: {exc}")
                raise StreamBroken(str(exc)) from None
            del self._mbuf[:self._complete - self._mbase]
            self._mbase = self._complete
            return
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                if not self._skipping_line:
                    self._line += data[start:]
                    if len(self._line) > MAX_LINE:
                        self._reject("line_too_long", f"line over {MAX_LINE} bytes")
                        self._line.clear()
                        self._skipping_line = True
                return
            if self._skipping_line:
                self._skipping_line = False
            else:
                self._line += data[start:nl]
                self._json_line(bytes(self._line))
                self._line.clear()
            start = nl + 1

    def eof(self) -> None:
        """End of input: a final JSON line without a newline still counts; a
        msgpack value cut short is rejected."""
        if self._line:
            self._json_line(bytes(self._line))
            self._line.clear()
        if self._unpacker is not None and self._complete < self._fed:
            self._reject("truncated", "msgpack input ended inside a value")

    def _json_line(self, line: bytes) -> None:
        line = line.strip(b" \t\r")
        if not line:
            return
        text = line.decode("utf-8", "surrogateescape")
        if json_too_deep(text):
            self._reject("json_too_deep", f"nested deeper than {MAX_JSON_DEPTH} levels")
            return
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as exc:
            self._reject("bad_json", f"not JSON: {exc}")
            return
        self._record(value, line)

    def _record(self, value: Any, raw: bytes) -> None:
        if not isinstance(value, dict):
            self._reject("record_not_map", f"a {type(value).__name__} is not a record")
            return
        raw_tag = value.get(self.tag_key)
        had_tag = isinstance(raw_tag, str) and bool(raw_tag)
        tag: str = raw_tag if isinstance(raw_tag, str) and raw_tag else self.default_tag
        t: Any = None
        raw_time = value.get(self.time_key)
        if raw_time is not None:
            try:
                sec, nsec = parse_timestamp(raw_time)
                t = msgpack.ExtType(0, sec.to_bytes(4, "big") + nsec.to_bytes(4, "big"))
            except ValueError:
                self.metrics.inc("exec_filter_time_unparsed")
        if t is None:
            t = event_time_now()
        if not self._runs or self._runs[-1].tag != tag or self._runs[-1].had_tag != had_tag:
            self._runs.append(_Run(tag, had_tag))
        run = self._runs[-1]
        entry = pack_entry(t, value)
        run.entries.append(entry)
        if self.out_format == self.in_format:
            run.raw.setdefault(entry, deque()).append(raw)
        self.pending += 1
        if self.oldest is None:
            self.oldest = _time.monotonic()

    def _reject(self, reason: str, why: str) -> None:
        self.metrics.inc("records_in")
        self.metrics.inc("records_rejected", reason=reason)
        if self.first_error is None:
            self.first_error = why
            log_event(logging.WARNING, "bad_input_rejected", log, reason=why,
                      note="further ones are only counted")

    # -- output --------------------------------------------------------------

    def flush(self, final: bool = False) -> bytes:
        """Process the pending batch; the formatted output records. ``final``
        (end of input) also ends every open scan, so no summary is lost."""
        runs, self._runs = self._runs, []
        self.pending = 0
        self.oldest = None
        out: list[bytes] = []
        for run in runs:
            result = self.processor.process(run.tag, b"".join(run.entries))
            for chunk in result.chunks:
                self._render(chunk, run.had_tag, out, run)
        expire = getattr(self.processor, "expire", None)
        if expire is not None:
            for chunk in expire(math.inf if final else _time.time()) or ():
                self._render(chunk, True, out, None)
        data = b"".join(out)
        self.written += len(data)
        if self.json_block and self.written % self.json_block:
            pad = self.json_block - self.written % self.json_block
            data += b" " * (pad - 1) + b"\n"
            self.written += pad
        return data

    def _render(self, chunk: OutChunk, with_tag: bool, out: list[bytes], run: _Run | None) -> None:
        entries = chunk.entries
        starts = _entry_starts(entries) if run is not None and run.raw else None
        for i, (_t, record) in enumerate(unpacker_for(entries)):
            self.metrics.inc("records_out")
            if starts is not None and run is not None and chunk.tag == run.tag:
                same = run.raw.get(entries[starts[i]:starts[i + 1]])
                if same:  # untouched: the bytes it arrived in
                    out.append(same.popleft())
                    if self.out_format == "json":
                        out.append(b"\n")
                    continue
            if with_tag:
                record[self.tag_key] = chunk.tag
            if self.out_format == "json":
                out.append(_json_bytes(record))
                out.append(b"\n")
            else:
                out.append(_packer.pack(record))


def _entry_starts(entries: bytes) -> list[int]:
    """Offsets of each msgpack entry in ``entries``, plus the end."""
    up = msgpack.Unpacker(raw=True, strict_map_key=False, max_buffer_size=len(entries) + 1)
    up.feed(entries)
    starts = [0]
    for _ in up:
        starts.append(up.tell())
    return starts


def _keep_bytes(value: Any) -> Any:
    """A decoded record for JSON with every byte kept: bin and str that was
    not UTF-8 become str with surrogate escapes, which ``_json_bytes`` writes
    back as the raw bytes (JSON strings are UTF-8; these bytes are passed
    through as they came, not re-encoded)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "surrogateescape")
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(k, (bytes, bytearray)):
                k = bytes(k).decode("utf-8", "surrogateescape")
            elif not isinstance(k, (str, int, float, bool)) and k is not None:
                k = str(k)
            out[k] = _keep_bytes(v)
        return out
    if isinstance(value, (list, tuple)):
        return [_keep_bytes(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return to_jsonable(value)
    if isinstance(value, msgpack.ExtType):
        return to_jsonable(value)
    return value


def _json_bytes(record: Any) -> bytes:
    text = _json_out.encode(_keep_bytes(record))
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        # A surrogate that did not come from a raw byte (a JSON "\ud800"
        # escape): no byte to restore, so write JSON's ASCII escapes instead.
        return json.dumps(_keep_bytes(record), ensure_ascii=True, allow_nan=False,
                          separators=(",", ":")).encode("ascii")


# -- the I/O loop -------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="probetag exec-filter",
        description="Read records as Fluentd's out_exec_filter writes them on stdin, write the "
                    "enriched records on stdout in the same format.")
    ap.add_argument("-c", "--config", metavar="CONFIG.yaml", help="probetag config (detect/actions)")
    ap.add_argument("--in-format", choices=("json", "msgpack"), default="json",
                    help="<format> @type of the out_exec_filter (default json)")
    ap.add_argument("--out-format", choices=("json", "msgpack"), default=None,
                    help="<parse> @type of the out_exec_filter (default: same as --in-format)")
    ap.add_argument("--tag-key", default="tag", help="<inject>/<extract> tag_key (default tag)")
    ap.add_argument("--time-key", default="time", help="<inject>/<extract> time_key (default time)")
    ap.add_argument("--default-tag", default="exec_filter",
                    help="tag for records without the tag key (for rules and ${tag})")
    ap.add_argument("--json-block-size", type=int, default=JSON_BLOCK, metavar="BYTES",
                    help="JSON out: pad each batch's output with whitespace to a multiple of this many "
                         "bytes, Fluentd's <parse> stream_buffer_size (default 8192; 0: no padding). "
                         "Without it Fluentd holds a batch's last records until more output comes.")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging("info")
    try:
        cfg = load_config(args.config, resources=True)
    except ConfigError as exc:
        for e in exc.errors:
            print(f"error: {e}", file=sys.stderr)
        return 2
    setup_logging(cfg.log_level, fmt=cfg.log_format)
    metrics = Metrics()
    core = ExecFilterCore(cfg, metrics, in_format=args.in_format, out_format=args.out_format,
                          tag_key=args.tag_key, time_key=args.time_key, default_tag=args.default_tag,
                          json_block=max(0, args.json_block_size))
    return run(core, cfg.flow.batch_records, sys.stdin.buffer.fileno(), sys.stdout.buffer)


def run(core: ExecFilterCore, batch: int, in_fd: int, out: Any) -> int:
    status = 0
    try:
        while True:
            timeout = IDLE_FLUSH if core.pending else None
            if core.pending and core.oldest is not None:
                timeout = max(0.0, min(IDLE_FLUSH, core.oldest + MAX_DELAY - _time.monotonic()))
            readable, _, _ = select.select([in_fd], [], [], timeout)
            if not readable:
                _write(out, core.flush())
                continue
            data = os.read(in_fd, 256 * 1024)
            if not data:
                core.eof()
                break
            try:
                core.feed(data)
            except StreamBroken as exc:
                log_event(logging.ERROR, "input_undecodable", log, format="msgpack", reason=exc,
                          action="exit")
                status = 1
                break
            if core.pending >= batch or (core.oldest is not None
                                         and _time.monotonic() - core.oldest >= MAX_DELAY):
                _write(out, core.flush())
        _write(out, core.flush(final=True))
    except BrokenPipeError:
        log_event(logging.ERROR, "output_closed", log, reason="stdout closed by the reader")
        return 1
    except KeyboardInterrupt:
        return 130
    m = core.metrics
    log_event(logging.INFO, "done", log, records_in=int(m.get("records_in")), passed=int(m.get("records_passed")),
              tagged=int(m.get("records_tagged")), dropped=int(m.get("records_dropped")),
              rejected=int(m.get("records_rejected")))
    return status


def _write(out: Any, data: bytes) -> None:
    if data:
        out.write(data)
    out.flush()
