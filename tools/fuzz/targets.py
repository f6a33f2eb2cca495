"""Fuzz targets: one function per input surface, ``target(data: bytes)``.

Theory of operation
-------------------
* Each target feeds arbitrary bytes to a sans-I/O part the way the server
  would (split in pieces, then EOF), consumes every event, and hands what
  gets through to the processing stage, so the decoders behind it are fuzzed
  too. The expected refusals (``ProtocolError`` events, ``HttpError``,
  ``ConfigError``, rejected records) are normal results; *any other
  exception* is a crash, and a loop that does not end is a hang.
* Limits are small on purpose (``LIMITS``): a target must never hold much
  more memory than its limits allow, which the callers check with
  tracemalloc.
* The same functions are driven by Hypothesis (``tests/fuzz``) and by
  atheris/libFuzzer (``tools/fuzz/fuzz.py``): one definition of "correct
  behaviour" for both.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from probetag._config import ConfigError, config_from_mapping, load_config
from probetag._metrics import Metrics
from probetag._stage import Processor
from probetag.decode import DIALECTS, FORMATS, escape, parse_syslog_line, rebuild, unescape, unescape_as
from probetag.forward import (
    CLOSED, NEED_DATA, Chunk, HandshakeReply, Heartbeat, Limits, ProtocolError, ServerConnection,
    ServerSecurity,
)
from probetag.inputs.http import ExpectContinue, HttpError, Request, RequestParser, build_chunks, \
    decode_body, parse_events
from probetag.inputs.exec_filter import ExecFilterCore, StreamBroken
from probetag.inputs.ndjson import LineSplitter, lines_to_chunks

__all__ = ["TARGETS", "LIMITS", "forward", "forward_handshake", "http", "ndjson", "decoders", "config",
           "exec_filter"]

#: Limits every target runs with: frames, decompressed payloads, bodies, lines.
LIMITS = {"frame": 64 * 1024, "decompressed": 256 * 1024, "body": 256 * 1024, "line": 8 * 1024}
#: No input may produce more events than this; more means a loop that does
#: not consume its input (a hang in disguise).
MAX_EVENTS = 100_000

_processor: Processor | None = None


def processor() -> Processor:
    """One processing stage for every case (building it compiles the catalogue)."""
    global _processor
    if _processor is None:
        _processor = Processor(config_from_mapping({"correlation": {"max_sources": 256}}), Metrics())
    return _processor


def _pieces(data: bytes) -> list[bytes]:
    # The first byte chooses how the stream is cut, so the fuzzer also
    # explores frames split across reads.
    if not data:
        return []
    step = (data[0] % 7) + 1 if data[0] & 0x80 else len(data)
    body = data[1:] if data[0] & 0x80 else data
    return [body[i:i + step * 13] for i in range(0, len(body), step * 13)] or [b""]


def _drain_forward(conn: ServerConnection, data: bytes, security: bool) -> int:
    events = 0
    proc = processor()
    for piece in _pieces(data) + [b""]:
        if conn.closed:
            break
        conn.receive_data(piece)
        while True:
            ev = conn.next_event()
            events += 1
            if events > MAX_EVENTS:
                raise AssertionError("next_event() does not make progress")
            if ev is NEED_DATA or ev is CLOSED:
                break
            if isinstance(ev, Chunk):
                assert not conn.handshake_pending, "a chunk before the handshake"
                assert isinstance(ev.tag, str) and isinstance(ev.entries, (bytes, bytearray))
                assert len(ev.entries) <= LIMITS["decompressed"] + LIMITS["frame"]
                proc.process(ev.tag, bytes(ev.entries))
                if ev.chunk_id is not None:
                    conn.ack_bytes(ev.chunk_id)
            elif isinstance(ev, ProtocolError):
                assert ev.reason
                if ev.fatal:
                    return events
            elif isinstance(ev, HandshakeReply):
                assert security
                if not ev.ok:
                    return events
            elif not isinstance(ev, Heartbeat):
                raise AssertionError(f"unexpected event {ev!r}")
        if ev is CLOSED:
            break
    return events


def forward(data: bytes) -> None:
    """The forward decoder (every mode, compression) and the stage behind it."""
    conn = ServerConnection("fuzz", limits=Limits(LIMITS["frame"], LIMITS["decompressed"]))
    _drain_forward(conn, data, security=False)


def forward_handshake(data: bytes) -> None:
    """The same with ``shared_key`` and user auth: HELO/PING/PONG parsing."""
    sec = ServerSecurity("fuzz-key", "probetag", users={"alice": "pw"})
    conn = ServerConnection("fuzz", limits=Limits(LIMITS["frame"], LIMITS["decompressed"]), security=sec)
    conn.initial_bytes()
    _drain_forward(conn, data, security=True)


def http(data: bytes) -> None:
    """HTTP/1.1 framing, Content-Encoding, JSON/NDJSON bodies, the stage."""
    parser = RequestParser(LIMITS["body"], max_header_bytes=8 * 1024)
    proc = processor()
    events = 0
    try:
        for piece in _pieces(data):
            parser.feed(piece)
            while True:
                ev = parser.next_event()
                events += 1
                if events > MAX_EVENTS:
                    raise AssertionError("next_event() does not make progress")
                if isinstance(ev, ExpectContinue):
                    continue
                if not isinstance(ev, Request):
                    break
                assert len(ev.body) <= LIMITS["body"]
                try:
                    body = decode_body(ev.body, ev.header("content-encoding"), LIMITS["body"])
                    assert len(body) <= LIMITS["body"]
                    parsed = parse_events(body, ev.header("content-type"))
                except HttpError as exc:
                    assert 400 <= exc.status < 600
                    continue
                try:
                    chunks, _ = build_chunks(parsed.events, default_tag="vector", tag_field="tag",
                                             time_field="timestamp")
                except (RecursionError, ValueError, OverflowError):
                    # What the server answers 400 (``_handle``): a value the
                    # JSON parser let through that msgpack cannot hold.
                    continue
                for tag, entries, _count in chunks:
                    proc.process(tag, entries)
    except HttpError as exc:
        assert 400 <= exc.status < 600


def ndjson(data: bytes) -> None:
    """The NDJSON line splitter, JSON events, the stage."""
    splitter = LineSplitter(LIMITS["line"])
    lines: list[Any] = []
    for piece in _pieces(data):
        lines.extend(splitter.feed(piece))
    lines.extend(splitter.eof())
    for line in lines:
        if isinstance(line, bytes):
            assert len(line) <= LIMITS["line"] and b"\n" not in line
    chunks, rejected, _ = lines_to_chunks(lines, default_tag="vector", tag_field="tag",
                                          time_field="timestamp", batch=100)
    proc = processor()
    for tag, entries, _count in chunks:
        proc.process(tag, entries)


def decoders(data: bytes) -> None:
    """Escape dialects, rsyslog line formats and record rebuilding."""
    # (The round trip itself is a property test in tests/decode; here: no
    # exception, right types, bounded output, for any bytes.)
    for dialect in DIALECTS:
        assert isinstance(unescape_as(data, dialect), bytes)
        assert len(escape(data, dialect)) <= 4 * len(data)
    for value in (data, data.decode("utf-8", "surrogateescape")):
        u = unescape(value)
        assert isinstance(u.data, bytes) and len(u.data) <= len(data) + 1
    for fmt in ("auto",) + tuple(FORMATS):
        parse_syslog_line(data, fmt)
    text = data.decode("utf-8", "surrogateescape")
    parts = text.split("\x00")
    names = ("message", "host", "ident", "rawmsg", "msg", "hostname", "syslogtag", "source_address",
             "fromhost-ip", "appname", "log")
    record: dict[str, Any] = {names[i % len(names)]: p for i, p in enumerate(parts)}
    rebuild(record)
    if text[:1] in ("{", "["):
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return  # (this target's own parse; the inputs bound depth first)
        if isinstance(value, dict):
            rebuild(value)


def config(data: bytes) -> None:
    """The YAML config loader: a ``Config`` or a ``ConfigError``, nothing else."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    try:
        load_config(text=text)
    except ConfigError as exc:
        assert exc.reason


def exec_filter(data: bytes) -> None:
    """``probetag exec-filter``'s core: JSON lines or a msgpack stream in
    (the first byte's low bit chooses), formatted records out."""
    if not data:
        return
    fmt = "msgpack" if data[0] & 1 else "json"
    core = ExecFilterCore(_EXEC_CONFIG, _EXEC_METRICS, in_format=fmt, processor=processor())
    try:
        for piece in _pieces(data[1:]):
            core.feed(piece)
        core.eof()
    except StreamBroken:
        pass  # an undecodable msgpack stream: counted, the filter stops reading
    out = core.flush(final=True)
    assert isinstance(out, bytes)


_EXEC_CONFIG = config_from_mapping({})
_EXEC_METRICS = Metrics()


TARGETS: dict[str, Callable[[bytes], None]] = {
    "forward": forward,
    "forward_handshake": forward_handshake,
    "http": http,
    "ndjson": ndjson,
    "decoders": decoders,
    "config": config,
    "exec_filter": exec_filter,
}
