"""Input for Vector's ``http`` sink: HTTP/1.1 POSTs of JSON-array or NDJSON bodies.

Theory of operation
-------------------
The module has two halves. The first is sans-I/O: ``RequestParser`` takes
bytes and hands back ``Request`` events, ``decode_body`` undoes
``Content-Encoding``, ``parse_events`` turns a body into Vector events and
``render_response`` builds response bytes. The second half, ``HttpInput``,
is a thin asyncio server that moves bytes between a socket and those
functions and hands records to the pipeline.

Rules it keeps (what Vector's ``http`` sink sends and expects, FORWARD_NOTES
§4.1):

* ``POST <http.path>`` with ``codec: json`` carries a JSON array
  (``Content-Type: application/json``); with ``framing.method:
  newline_delimited`` it carries NDJSON *without* a trailing newline
  (``application/x-ndjson``). The body kind is picked by Content-Type, and
  when that says neither, by the first non-space byte (``[`` = array).
* ``Content-Encoding``: ``gzip``, ``deflate`` (Vector's ``compression: zlib``
  sends zlib data labelled deflate; raw deflate is accepted too), ``zstd``,
  ``identity``. Anything else is 415. The size bound ``http.max_body_bytes``
  applies to the body as received *and* while decompressing, so a small
  bomb cannot grow past it; over the bound is 413.
* Status codes follow Vector's retry policy: it retries 408, 429 and 5xx
  (but 501) and drops the batch on any other status. So:
  200 = every record of the request is settled downstream (written or acked);
  429 = the pipeline is full, nothing of this request was taken, retry;
  503 = the downstream output is closed/shutting down, retry later;
  400 = the body can never parse (not JSON, or an NDJSON body in which no
  line parses); 413 too large; 415 unknown encoding; 404 other path; 405
  other method on the path. ``GET /health`` answers 200.
* **One bad NDJSON line does not cost the batch.** Vector never retries a
  400, so rejecting a whole request for one bad line would lose every good
  record beside it. Bad lines (and array members that are not objects) are
  counted as ``records_rejected{reason=...}`` (and ``records_in``, so the
  accounting invariant holds), logged once per request with the peer, and
  the rest is processed. Only a body with nothing usable in it is a 400.
* A lone surrogate escape (``"\\ud800"``) does not cost the event either:
  the stage packs it as U+FFFD (``\\udc80``..``\\udcff`` as that byte) and
  the request counts each one in ``json_surrogates_replaced{input="http"}``
  (see ``_vector``).
* Header block bounded (``MAX_HEADER_BYTES``); bodies by Content-Length or
  chunked transfer coding, bounded by ``max_body_bytes``; open connections
  bounded by ``listen.max_connections`` (more get 503 and are closed). Keep-alive is the
  HTTP/1.1 default; ``Connection: close`` and HTTP/1.0 without keep-alive
  close after the response. Requests on one connection are answered in
  order (no pipelining of processing).
* A request's records may carry several tags; each tag becomes one chunk.
  The pipeline is asked for room *before* anything of the request is
  submitted: either all of it goes in, or none of it and the answer is 429.
  That is what makes Vector's retry after 429 free of duplicates.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import ssl
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .._config import Config, parse_hostport
from .._inflate import InflateError, inflate, unzstd
from .._metrics import Metrics
from .._runtime import slice_cuts
from .._logging import log_event
from .._chunk import pack_entry
from ._listener import admit, close_listener, close_writer, peer_label
from ._json import MAX_JSON_DEPTH, json_too_deep
from .._vector import event_to_entry, lone_surrogate_escapes

if TYPE_CHECKING:
    from .._runtime import Pipeline

__all__ = [
    "HttpError", "Request", "ExpectContinue", "NEED_DATA", "RequestParser",
    "decode_body", "parse_events", "render_response", "ParsedBody",
    "build_chunks", "HttpInput", "MAX_HEADER_BYTES",
]

log = logging.getLogger("probetag.inputs.http")

MAX_HEADER_BYTES = 16 * 1024
_DIGITS = re.compile(r"[0-9]+")
_HEXDIGITS = re.compile(rb"[0-9A-Fa-f]{1,16}")
#: Request bodies larger than this are decoded in a worker thread.
OFFLOAD_BYTES = 256 * 1024
_REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
            413: "Content Too Large", 415: "Unsupported Media Type", 429: "Too Many Requests",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported"}


# ==========================================================================
# Sans-I/O part
# ==========================================================================


class HttpError(Exception):
    """The peer sent something we answer with ``status`` (and then close when
    ``close`` is set: framing is lost or the body was not read)."""

    def __init__(self, status: int, reason: str, *, close: bool = True) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.close = close


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]  # names lower-cased, in order
    body: bytes
    keep_alive: bool

    def header(self, name: str) -> str | None:
        """Last value of a header (names are case-insensitive)."""
        value = None
        for k, v in self.headers:
            if k == name:
                value = v
        return value


@dataclass(frozen=True, slots=True)
class ExpectContinue:
    """The head asked for ``100 Continue`` before sending its body."""


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


class RequestParser:
    """HTTP/1.1 request framing. ``feed(bytes)``, then ``next_event()`` until it
    returns ``NEED_DATA``. Raises ``HttpError`` for a request we refuse."""

    def __init__(self, max_body_bytes: int, max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self.max_body = max_body_bytes
        self.max_header = max_header_bytes
        self._buf = bytearray()
        self._head: tuple[str, str, str, tuple[tuple[str, str], ...]] | None = None
        self._length: int | None = None  # Content-Length of the current request
        self._chunked = False
        self._chunks = bytearray()
        self._continue_sent = False
        self.closed = False

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def in_body(self) -> bool:
        """The header block of the current request has been read."""
        return self._head is not None

    @property
    def body_received(self) -> int:
        """Bytes of the current request's body received so far."""
        return len(self._buf) + len(self._chunks) if self._head is not None else 0

    def next_event(self) -> Request | ExpectContinue | _NeedData:
        if self._head is None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > self.max_header:
                    raise HttpError(431, "header block too large")
                return NEED_DATA
            if end + 4 > self.max_header:
                raise HttpError(431, "header block too large")
            head = bytes(self._buf[:end])
            del self._buf[:end + 4]
            self._start(head)
            assert self._head is not None
            if self._wants_continue():
                self._continue_sent = True
                return ExpectContinue()
        body = self._body()
        if body is None:
            return NEED_DATA
        method, target, version, headers = self._head
        req = Request(method, target, version, headers, body, self._keep_alive(version, headers))
        self._head = None
        self._length = None
        self._chunked = False
        self._chunks = bytearray()
        self._continue_sent = False
        return req

    def _start(self, head: bytes) -> None:
        # Blank lines before a request line are allowed (RFC 9112 §2.2).
        lines = head.lstrip(b"\r\n").split(b"\r\n")
        try:
            method, target, version = lines[0].decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            raise HttpError(400, "malformed request line") from None
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise HttpError(505, f"unsupported version {version[:16]!r}")
        headers: list[tuple[str, str]] = []
        for raw in lines[1:]:
            name, sep, value = raw.partition(b":")
            if not sep or not name or name != name.strip() or raw[:1] in (b" ", b"\t"):
                # Obsolete line folding and space before the colon are errors (RFC 9112 §5.1-5.2).
                raise HttpError(400, "malformed header line")
            try:
                headers.append((name.decode("ascii").lower(), value.strip(b" \t").decode("latin-1")))
            except UnicodeDecodeError:
                raise HttpError(400, "non-ASCII header name") from None
        hdrs = tuple(headers)
        te = [v.lower() for k, v in hdrs if k == "transfer-encoding"]
        cl = [v for k, v in hdrs if k == "content-length"]
        if te:
            if cl:
                # RFC 9112 §6.1: both present is a smuggling risk; refuse.
                raise HttpError(400, "both Transfer-Encoding and Content-Length")
            if te[-1].split(",")[-1].strip() != "chunked":
                raise HttpError(501, "unsupported transfer coding")
            self._chunked = True
        elif cl:
            # ASCII digits only (RFC 9110 §8.6): str.isdigit() also accepts
            # "\xb9" and other digits int() refuses or reads differently.
            if len(set(cl)) != 1 or not _DIGITS.fullmatch(cl[0]):
                raise HttpError(400, "bad Content-Length")
            if len(cl[0].lstrip("0")) > 18:
                raise HttpError(413, f"body exceeds {self.max_body} bytes")
            self._length = int(cl[0])
            if self._length > self.max_body:
                raise HttpError(413, f"body of {self._length} bytes exceeds {self.max_body}")
        else:
            self._length = 0
        self._head = (method, target, version, hdrs)

    def _wants_continue(self) -> bool:
        assert self._head is not None
        for k, v in self._head[3]:
            if k == "expect" and v.lower() == "100-continue":
                return self._head[2] == "HTTP/1.1" and not self._continue_sent
        return False

    def _body(self) -> bytes | None:
        if not self._chunked:
            assert self._length is not None
            if len(self._buf) < self._length:
                return None
            body = bytes(self._buf[:self._length])
            del self._buf[:self._length]
            return body
        while True:  # chunked: bounded by the data already buffered
            line_end = self._buf.find(b"\r\n")
            if line_end < 0:
                if len(self._buf) > 1024:
                    raise HttpError(400, "chunk size line too long")
                return None
            size_text = bytes(self._buf[:line_end]).split(b";", 1)[0].strip(b" \t")
            # HEXDIG only (RFC 9112 §7.1): int(x, 16) would also take "-1",
            # "0x1f", "1_0" and surrounding whitespace.
            if not _HEXDIGITS.fullmatch(size_text):
                raise HttpError(400, "bad chunk size")
            size = int(size_text, 16)
            if size == 0:
                # Trailer section: skip fields up to the empty line.
                trailer_end = self._buf.find(b"\r\n\r\n", line_end)
                if self._buf[line_end:line_end + 4] == b"\r\n\r\n":
                    trailer_end = line_end
                if trailer_end < 0:
                    if len(self._buf) > self.max_header:
                        raise HttpError(431, "trailer too large")
                    return None
                del self._buf[:trailer_end + 4]
                return bytes(self._chunks)
            if len(self._chunks) + size > self.max_body:
                raise HttpError(413, f"chunked body exceeds {self.max_body} bytes")
            if len(self._buf) < line_end + 2 + size + 2:
                return None
            start = line_end + 2
            if self._buf[start + size:start + size + 2] != b"\r\n":
                raise HttpError(400, "chunk not followed by CRLF")
            self._chunks += self._buf[start:start + size]
            del self._buf[:start + size + 2]

    @staticmethod
    def _keep_alive(version: str, headers: tuple[tuple[str, str], ...]) -> bool:
        tokens = {t.strip().lower() for k, v in headers if k == "connection" for t in v.split(",")}
        if version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


def render_response(status: int, body: bytes = b"", *, keep_alive: bool = True,
                    content_type: str = "application/json",
                    extra: tuple[tuple[str, str], ...] = (), head_only: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    if status != 100:
        lines.append(f"Content-Length: {len(body)}")
        if body:
            lines.append(f"Content-Type: {content_type}")
        if not keep_alive:
            lines.append("Connection: close")
    lines.extend(f"{k}: {v}" for k, v in extra)
    out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return out if head_only or status == 100 else out + body


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    # gzip allows several members back to back (RFC 1952 §2.2); zlib and raw
    # deflate are one stream. Linear in the number of members (``_inflate``).
    try:
        return inflate(data, wbits, limit, members=wbits == 16 + zlib.MAX_WBITS)
    except InflateError as exc:
        if exc.reason == "too_large":
            raise HttpError(413, f"decompressed body exceeds {limit} bytes", close=False) from None
        if exc.reason == "trailing":
            raise HttpError(400, "trailing data after compressed body", close=False) from None
        raise HttpError(400, "truncated compressed body", close=False) from None


def decode_body(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo Content-Encoding with the size bound enforced while decompressing."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    # Codings are listed in the order applied; undo them in reverse (RFC 9110 §8.4).
    for coding in reversed(codings):
        try:
            if coding == "identity":
                continue
            if coding in ("gzip", "x-gzip"):
                body = _inflate(body, 16 + zlib.MAX_WBITS, limit)
            elif coding == "deflate":
                # "deflate" is zlib-wrapped (RFC 9110 §8.4.1.2); some clients send raw
                # deflate, so try that when the zlib header is missing.
                try:
                    body = _inflate(body, zlib.MAX_WBITS, limit)
                except zlib.error:
                    body = _inflate(body, -zlib.MAX_WBITS, limit)
            elif coding == "zstd":
                body = _unzstd(body, limit)
            else:
                raise HttpError(415, f"unsupported Content-Encoding {coding!r}", close=False)
        except zlib.error as exc:
            raise HttpError(400, f"bad {coding} data: {exc}", close=False) from None
    if len(body) > limit:
        raise HttpError(413, f"body exceeds {limit} bytes", close=False)
    return body


def _unzstd(body: bytes, limit: int) -> bytes:
    import zstandard

    try:
        return unzstd(body, limit)
    except InflateError as exc:
        if exc.reason == "too_large":
            raise HttpError(413, f"decompressed body exceeds {limit} bytes", close=False) from None
        raise HttpError(400, "truncated zstd body", close=False) from None
    except zstandard.ZstdError as exc:
        raise HttpError(400, f"bad zstd data: {exc}", close=False) from None


@dataclass(slots=True)
class ParsedBody:
    events: list[Any]                 # decoded JSON values, in order (objects expected)
    rejected: dict[str, int]          # reason -> count of members/lines that are not usable
    first_error: str | None = None    # for the log
    #: Lone-surrogate escapes in the JSON that yielded events (see
    #: ``_vector.lone_surrogate_escapes``); the stage replaces each one.
    surrogates: int = 0


def _looks_like_array(body: bytes, content_type: str | None) -> bool:
    ct = (content_type or "").split(";", 1)[0].strip().lower()
    if ct in ("application/x-ndjson", "application/ndjson", "application/jsonl",
              "application/x-jsonlines", "application/jsonlines"):
        return False
    first = body.lstrip(b" \t\r\n")[:1]
    if ct == "application/json":
        return first == b"[" or first != b"{"
    return first == b"["


def parse_events(body: bytes, content_type: str | None) -> ParsedBody:
    """Body -> events. Raises HttpError(400) when nothing in it is usable."""
    # surrogateescape: bytes that are not UTF-8 survive into the record and are
    # re-encoded byte for byte (the same rule as the msgpack side).
    text = body.decode("utf-8", "surrogateescape")
    if _looks_like_array(body, content_type):
        if json_too_deep(text):
            raise HttpError(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels", close=False)
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise HttpError(400, f"body is not a JSON array: {exc}", close=False) from None
        if not isinstance(value, list):
            value = [value]
        parsed = ParsedBody([], {})
        for v in value:
            if isinstance(v, dict):
                parsed.events.append(v)
            else:
                parsed.rejected["event_not_object"] = parsed.rejected.get("event_not_object", 0) + 1
                parsed.first_error = parsed.first_error or "array member is not an object"
        if value and not parsed.events:
            raise HttpError(400, "no JSON object in the array", close=False)
        if parsed.events:
            # Counted over the whole array: members that are not objects
            # are rare, and the body is one JSON text.
            parsed.surrogates = lone_surrogate_escapes(text)
        return parsed
    parsed = ParsedBody([], {})
    for n, line in enumerate(text.split("\n"), 1):
        line = line.strip(" \t\r")
        if not line:
            continue
        if json_too_deep(line):
            parsed.rejected["json_too_deep"] = parsed.rejected.get("json_too_deep", 0) + 1
            parsed.first_error = parsed.first_error or f"line {n}: nested deeper than {MAX_JSON_DEPTH}"
            continue
        try:
            v = json.loads(line)
        except (ValueError, RecursionError) as exc:
            parsed.rejected["bad_json"] = parsed.rejected.get("bad_json", 0) + 1
            parsed.first_error = parsed.first_error or f"line {n}: {exc}"
            continue
        if not isinstance(v, dict):
            parsed.rejected["event_not_object"] = parsed.rejected.get("event_not_object", 0) + 1
            parsed.first_error = parsed.first_error or f"line {n}: not a JSON object"
            continue
        parsed.events.append(v)
        parsed.surrogates += lone_surrogate_escapes(line)
    if parsed.rejected and not parsed.events:
        raise HttpError(400, f"no line of the NDJSON body parses ({parsed.first_error})", close=False)
    return parsed


def build_chunks(events: list[dict[str, Any]], *, default_tag: str, tag_field: str,
                 time_field: str) -> tuple[list[tuple[str, bytes, int]], dict[str, int]]:
    """Events -> [(tag, packed entries, count)] in first-seen tag order, and
    the count of time notes ("missing"/"unparsed")."""
    by_tag: dict[str, list[bytes]] = {}
    notes: dict[str, int] = {}
    for ev in events:
        m = event_to_entry(ev, default_tag=default_tag, tag_field=tag_field, time_field=time_field)
        by_tag.setdefault(m.tag, []).append(pack_entry(m.time, m.record))
        if m.time_note:
            notes[m.time_note] = notes.get(m.time_note, 0) + 1
    return [(tag, b"".join(parts), len(parts)) for tag, parts in by_tag.items()], notes


# ==========================================================================
# asyncio part
# ==========================================================================


class HttpInput:
    """The asyncio server. ``await start()``, ``await close()``."""

    def __init__(self, config: Config, metrics: Metrics, pipeline: "Pipeline", *,
                 idle_timeout: float | None = None) -> None:
        self.config = config
        self.cfg = config.http
        self.metrics = metrics
        self.pipeline = pipeline
        self.idle_timeout = idle_timeout if idle_timeout is not None else config.listen.idle_timeout
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[None]] = set()
        #: bytes of unfinished requests per connection, and their sum
        #: (``_hold``; bounded by ``http.max_partial_bytes``)
        self._held: dict[asyncio.Task[None], tuple[int, str]] = {}
        self.partial_total = 0
        self._shed: set[asyncio.Task[None]] = set()
        self.port: int | None = None

    async def start(self) -> None:
        assert self.cfg.address is not None, "http.address is not set"
        host, port = parse_hostport(self.cfg.address)
        ssl_ctx = _server_ssl(self.cfg.tls) if self.cfg.tls else None
        self._server = await asyncio.start_server(self._client, host, port, ssl=ssl_ctx,
                                                  limit=64 * 1024)
        self.port = self._server.sockets[0].getsockname()[1]
        log_event(logging.INFO, "listening", log, input="http", address=f"{host}:{self.port}", path=self.cfg.path)

    async def close(self) -> None:
        await close_listener(self._server, self._conns)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task, admitted = admit(self._conns, self.config.listen.max_connections)
        peer_s = peer_label(writer)
        self.metrics.inc("http_connections")
        if not admitted:
            # Each connection may buffer up to max_body_bytes: bound how many.
            self.metrics.inc("http_connections_refused")
            log_event(logging.WARNING, "http_refused", log, peer=peer_s, connections=len(self._conns))
            writer.write(render_response(503, _err_body("too many connections"), keep_alive=False,
                                         extra=(("Retry-After", "1"),)))
            writer.close()
            return
        parser = RequestParser(self.cfg.max_body_bytes)
        loop = asyncio.get_running_loop()
        started: float | None = None    # first byte of the current request
        head_done: float | None = None  # end of its header block
        answered = False                # a response to the current request was written
        try:
            while True:
                try:
                    ev = parser.next_event()
                except HttpError as err:
                    self._count_status(err.status)
                    _log_refusal(peer_s, err.status, err.reason)
                    answered = True
                    writer.write(render_response(err.status, _err_body(err.reason), keep_alive=False))
                    await writer.drain()
                    return
                if ev is NEED_DATA:
                    if self._hold(task, parser.body_received if parser.in_body else parser.buffered, peer_s):
                        self._count_status(503)
                        answered = True
                        writer.write(render_response(503, _err_body("busy, retry"), keep_alive=False,
                                                     extra=(("Retry-After", "1"),)))
                        await writer.drain()
                        return
                    # Deadlines (RFC 9110 §15.5.9 408): the idle wait between
                    # requests, the header block, then the body with a
                    # minimum rate (Apache mod_reqtimeout's body=...,MinRate=).
                    now = loop.time()
                    if parser.in_body:
                        head_done = head_done or now
                        phase = "body"
                        deadline = (head_done + self.cfg.body_timeout
                                    + parser.body_received / self.cfg.min_body_rate)
                    elif parser.buffered:
                        started = started or now
                        phase = "header"
                        deadline = started + self.cfg.header_timeout
                    else:
                        phase = "idle"
                        deadline = now + self.idle_timeout
                    try:
                        data = await asyncio.wait_for(reader.read(64 * 1024), max(0.0, deadline - now))
                    except asyncio.TimeoutError:
                        if phase == "idle":
                            self.metrics.inc("http_idle_closed")
                            return
                        self.metrics.inc("http_request_timeouts", phase=phase)
                        self._count_status(408)
                        _log_refusal(peer_s, 408, f"{phase} not received in time")
                        answered = True
                        writer.write(render_response(408, _err_body(f"{phase} timeout"), keep_alive=False))
                        await writer.drain()
                        return
                    if not data:
                        return
                    parser.feed(data)
                    continue
                started = head_done = None
                if isinstance(ev, ExpectContinue):
                    writer.write(render_response(100))
                    await writer.drain()
                    continue
                assert isinstance(ev, Request)
                status, body, extra = await self._handle(ev, peer_s)
                self._count_status(status)
                keep = ev.keep_alive and status not in (413,)
                writer.write(render_response(status, body, keep_alive=keep, extra=extra,
                                             head_only=ev.method == "HEAD"))
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            self.metrics.inc("http_connection_errors")
            log_event(logging.DEBUG, "http_connection_error", log, peer=peer_s, reason=exc)
        except asyncio.CancelledError:
            # close() cancels open connections. Ending normally here keeps
            # asyncio's start_server callback from logging the cancellation
            # as an error (it calls task.exception() on the finished task).
            pass
        except Exception:
            # Our bug, not the peer's: answer 500 (if nothing was answered
            # yet), log it with its traceback, never let it escape into
            # asyncio's client_connected_cb (which drops the connection
            # without a word).
            self.metrics.inc("http_internal_errors")
            log.exception("event=http_internal_error peer=%s", peer_s)
            if not answered and not writer.is_closing():
                self._count_status(500)
                try:
                    writer.write(render_response(500, _err_body("internal error"), keep_alive=False))
                except Exception:  # noqa: BLE001 - the transport is already broken
                    pass
        finally:
            self._hold(task, 0, peer_s)
            self._conns.discard(task)
            await close_writer(writer)

    def _hold(self, task: "asyncio.Task[None]", nbytes: int, peer: str) -> bool:
        """The connection ``task`` now holds ``nbytes`` of a request that has
        not ended. Past ``http.max_partial_bytes`` over all connections, the
        ones holding the most are shed until the rest fit: True when that
        is this one (the caller answers 503), and others are cancelled
        (closed without an answer: they sent part of a request only).
        Each one shed is counted and logged with its peer, once."""
        if task in self._shed:
            if not nbytes:
                self._shed.discard(task)  # its connection ends
            return True  # (shed while it had bytes to parse; its cancel is due)
        old = self._held.pop(task, (0, peer))[0]
        if nbytes:
            self._held[task] = (nbytes, peer)
        self.partial_total += nbytes - old
        if self.partial_total <= self.cfg.max_partial_bytes:
            return False
        shed_self = False
        for other, (held, who) in sorted(self._held.items(), key=lambda kv: kv[1][0], reverse=True):
            if self.partial_total <= self.cfg.max_partial_bytes:
                break
            del self._held[other]
            self.partial_total -= held
            self.metrics.inc("http_connections_evicted", reason="partial_requests")
            _log_refusal(who, 503, f"{held} bytes of an unfinished request, over http.max_partial_bytes")
            if other is task:
                shed_self = True
            else:
                self._shed.add(other)
                other.cancel()
        return shed_self

    def _decode(self, req: Request) -> tuple[ParsedBody, list[tuple[str, bytes, int]], dict[str, int]]:
        body = decode_body(req.body, req.header("content-encoding"), self.cfg.max_body_bytes)
        parsed = parse_events(body, req.header("content-type"))
        chunks, notes = build_chunks(parsed.events, default_tag=self.cfg.default_tag,
                                     tag_field=self.cfg.tag_field, time_field=self.cfg.time_field)
        return parsed, chunks, notes

    def _count_status(self, status: int) -> None:
        self.metrics.inc("http_requests", status=str(status))

    async def _handle(self, req: Request, peer: str) -> tuple[int, bytes, tuple[tuple[str, str], ...]]:
        path = req.target.split("?", 1)[0]
        if path == "/health":
            if req.method in ("GET", "HEAD"):
                reason = self.pipeline.unhealthy() if hasattr(self.pipeline, "unhealthy") else None
                if reason is None:
                    return 200, b'{"status":"ok"}', ()
                return 503, json.dumps({"status": "unavailable", "reason": reason}).encode(), ()
            return 405, _err_body("use GET"), (("Allow", "GET, HEAD"),)
        if path != self.cfg.path:
            return 404, _err_body(f"no such path; POST to {self.cfg.path}"), ()
        if req.method == "HEAD":  # Vector's optional healthcheck.uri request
            return 200, b"", ()
        if req.method != "POST":
            return 405, _err_body("use POST"), (("Allow", "POST, HEAD"),)
        try:
            if len(req.body) > OFFLOAD_BYTES:
                # Decompressing and decoding megabytes takes a while: do it in a
                # thread so other connections (and forward heartbeats) keep going.
                parsed, chunks, notes = await asyncio.to_thread(self._decode, req)
            else:
                parsed, chunks, notes = self._decode(req)
        except HttpError as err:
            _log_refusal(peer, err.status, err.reason)
            return err.status, _err_body(err.reason), ()
        except (RecursionError, ValueError, OverflowError) as exc:
            # A value the body parser let through that the packer refuses
            # (an integer past 64 bits): the peer's data, so 400, logged.
            _log_refusal(peer, 400, f"unusable body: {exc}")
            return 400, _err_body("unusable body"), ()
        bad = sum(parsed.rejected.values())
        if bad:
            log_event(logging.WARNING, "http_events_rejected", log, peer=peer, rejected=bad, first=parsed.first_error)
        # Room is checked once for the whole request and nothing is awaited
        # between the check and the first submit, so a request is either
        # taken entirely or not at all (429): Vector's retry then sends
        # nothing twice. (A big request goes in slices, the loop serving
        # others between them; once started, it goes on to its end.)
        most = self.config.listen.max_chunk_entries
        if any(count > most for _tag, _entries, count in chunks):
            self.metrics.inc("chunks_rejected", reason="too_many_entries")
            _log_refusal(peer, 413, f"more than {most} events of one tag")
            return 413, _err_body(f"more than {most} events of one tag"), ()
        if self.pipeline.flow.blocked(peer):
            self.metrics.inc("http_busy")
            return 429, _err_body("pipeline full, retry"), (("Retry-After", "1"),)
        for reason, n in parsed.rejected.items():
            self.metrics.inc("records_in", n)
            self.metrics.inc("records_rejected", n, reason=reason)
        for note, n in notes.items():
            self.metrics.inc("vector_time_receipt", n, reason=note)
        if parsed.surrogates:
            self.metrics.inc("json_surrogates_replaced", parsed.surrogates, input="http")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[bool]] = []
        for tag, entries, _count in chunks:
            fut: asyncio.Future[bool] = loop.create_future()
            futures.append(fut)
            cuts, walked = slice_cuts(entries, most)
            if cuts is None:
                self.pipeline.submit(tag, entries, len(entries), _settler(fut), walked, peer=peer, owner=peer)
            else:
                await self.pipeline.submit_sliced(tag, entries, cuts, _settler(fut), peer=peer, owner=peer)
        results = await asyncio.gather(*futures)
        if not all(results):
            # Part of the request may have been delivered; Vector's retry will
            # repeat it. Counted so the duplicates are visible.
            self.metrics.inc("http_unsettled")
            return 503, _err_body("output closed before the batch was settled"), (("Retry-After", "5"),)
        self.metrics.inc("http_events", len(parsed.events))
        return 200, b"", ()


def _log_refusal(peer: str, status: int, reason: str) -> None:
    log_event(logging.WARNING, "http_request_refused", log, peer=peer, status=status, reason=reason)




def _settler(fut: "asyncio.Future[bool]") -> Callable[[bool], None]:
    def settled(ok: bool) -> None:
        if not fut.done():
            fut.set_result(ok)
    return settled


def _err_body(reason: str) -> bytes:
    return json.dumps({"error": reason}).encode()


def _server_ssl(tls: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.ca_file:
        ctx.load_verify_locations(tls.ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
