"""Hostile input (issue #5): Hypothesis over the forward decoder (with and
without the handshake), the HTTP request parser and body decoding, the NDJSON
splitter, the escape and syslog decoders and the config loader. Each case
runs under a per-case time limit (SIGALRM: a hang fails the test) and with
tracemalloc (its peak is bounded); every case is counted, crashes and hangs
too, and the figures are printed. Oversized and compressed-bomb inputs are
refused before they cost their size in memory."""

from __future__ import annotations

import gzip
import json
import signal
import time
import tracemalloc
import zlib
from collections import Counter
from typing import Callable

import msgpack
import pytest
import zstandard
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

import targets
from probetag.forward import CLOSED, NEED_DATA, Limits, ProtocolError, ServerConnection
from probetag.inputs.http import HttpError, RequestParser, decode_body

CASE_SECONDS = 2.0  # one case taking longer is a hang
PEAK_BOUND = 16 * 1024 * 1024  # bytes any one case may hold (limits are 64-256 KiB)
# No shrinking: a failure is reported with the example that failed, and the
# run stays bounded in time (shrinking a slow case can take minutes).
SETTINGS = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.generate])

_ZSTD = zstandard.ZstdCompressor()
CASES: Counter = Counter()
CRASHES: Counter = Counter()
HANGS: Counter = Counter()
PEAK: dict[str, int] = {}


class Hang(Exception):
    pass


def _alarm(signum, frame):  # noqa: ARG001
    raise Hang()


@pytest.fixture(scope="module", autouse=True)
def _alarm_handler():
    targets.processor()  # build the stage once, outside the measured cases
    old = signal.signal(signal.SIGALRM, _alarm)
    yield
    signal.signal(signal.SIGALRM, old)


def run_case(name: str, fn: Callable[[bytes], None], data: bytes) -> None:
    """One case: counted, under SIGALRM, traced (only the target, not
    Hypothesis' own work) for its peak memory."""
    CASES[name] += 1
    tracemalloc.start()
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    try:
        fn(data)
    except Hang:
        HANGS[name] += 1
        raise AssertionError(f"{name}: no result within {CASE_SECONDS}s for {data[:200]!r}") from None
    except BaseException:
        CRASHES[name] += 1
        raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    PEAK[name] = max(PEAK.get(name, 0), peak)
    assert peak < PEAK_BOUND, (name, peak, data[:200])


def _report(figures, *names: str) -> None:
    for n in names:
        figures.add(**{f"{n}_cases": CASES[n], f"{n}_crashes": CRASHES[n], f"{n}_hangs": HANGS[n],
                       f"{n}_peak_kib": PEAK.get(n, 0) // 1024})
    assert all(CASES[n] > 0 for n in names)
    assert sum(CRASHES[n] + HANGS[n] for n in names) == 0


# ---------------------------------------------------------------- strategies
_text = st.text(max_size=30)
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=True),
                     _text, st.binary(max_size=40))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(_text, st.integers(-2**63, 2**63 - 1)), inner, max_size=4)),
    max_leaves=6)
_probe_lines = st.sampled_from(["GET / HTTP/1.0#015", "OPTIONS sip:nm SIP/2.0#015", "HELP#015",
                                "#026#003#001#000", "\\x16\\x03\\x01", "\\026\\003", "#015", ""])
_records = st.one_of(
    st.dictionaries(st.sampled_from(["message", "host", "ident", "rawmsg", "msg", "source_address",
                                     "fromhost-ip", "log", "hostname", "syslogtag", "pid"]),
                    st.one_of(_probe_lines, _text, st.binary(max_size=20), st.integers(-2**63, 2**64 - 1)), max_size=6),
    _values)
_times = st.one_of(st.integers(0, 2**32), st.floats(allow_nan=True),
                   st.binary(min_size=0, max_size=10).map(lambda b: msgpack.ExtType(0, b)),
                   st.builds(lambda s, n: msgpack.ExtType(0, s.to_bytes(4, "big") + n.to_bytes(4, "big")),
                             st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
                   _values)
_options = st.one_of(st.none(), st.dictionaries(
    st.sampled_from(["chunk", "size", "compressed", "fluent_signal", "metadata", "x"]),
    st.one_of(st.sampled_from(["text", "gzip", "zstd", "bogus"]), _scalars), max_size=4))


def _entries(pairs) -> bytes:
    return b"".join(msgpack.packb([t, r], use_bin_type=True) for t, r in pairs)


@st.composite
def forward_frame(draw) -> bytes:
    tag = draw(st.one_of(st.text(max_size=12), _scalars))
    pairs = draw(st.lists(st.tuples(_times, _records), max_size=5))
    opts = draw(_options)
    mode = draw(st.sampled_from(["message", "forward", "packed", "gzip", "zstd"]))
    if mode == "message":
        obj = [tag, pairs[0][0] if pairs else 0, pairs[0][1] if pairs else {}] + ([opts] if opts is not None else [])
    elif mode == "forward":
        obj = [tag, [list(p) for p in pairs]] + ([opts] if opts is not None else [])
    else:
        entries = _entries(pairs)
        if mode == "gzip":
            entries = gzip.compress(entries)
            opts = dict(opts or {}, compressed="gzip")
        elif mode == "zstd":
            entries = _ZSTD.compress(entries)
            opts = dict(opts or {}, compressed="zstd")
        obj = [tag, entries] + ([opts] if opts is not None else [])
    return msgpack.packb(obj, use_bin_type=draw(st.booleans()))


@st.composite
def mutated(draw, base) -> bytes:
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        if not data:
            data += draw(st.binary(min_size=1, max_size=8))
            continue
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i:i + draw(st.integers(1, 16))]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            data += data[i:]
    return bytes(data)


_stream = st.lists(forward_frame(), min_size=1, max_size=4).map(b"".join)
_ping = st.builds(
    lambda parts: msgpack.packb(parts, use_bin_type=True),
    st.lists(st.one_of(st.just("PING"), _scalars), min_size=0, max_size=7)
    | st.tuples(st.just("PING"), _text, st.binary(max_size=20), _text, _text, _text).map(list))


def _split_prefix(data: bytes, split: int) -> bytes:
    # targets._pieces reads the first byte: >= 0x80 cuts the stream in pieces.
    return bytes([0x80 | split]) + data


# ---------------------------------------------------------------- forward
@settings(max_examples=400, **SETTINGS)
@given(st.binary(max_size=600))
def test_forward_arbitrary_bytes(data):
    run_case("forward", targets.forward, data)


@settings(max_examples=450, **SETTINGS)
@given(mutated(_stream), st.integers(0, 6))
def test_forward_mutated_valid_frames(data, split):
    run_case("forward", targets.forward, _split_prefix(data, split))


@settings(max_examples=200, **SETTINGS)
@given(mutated(st.tuples(_ping, _stream).map(b"".join)), st.integers(0, 6))
def test_forward_handshake(data, split):
    run_case("forward_handshake", targets.forward_handshake, _split_prefix(data, split))


def test_forward_figures(figures):
    _report(figures, "forward", "forward_handshake")


# ---------------------------------------------------------------- http
_header_names = st.sampled_from(["Content-Length", "Transfer-Encoding", "Content-Encoding", "Content-Type",
                                 "Expect", "Connection", "Host", "X-Other"])
_header_values = st.one_of(st.sampled_from(["chunked", "gzip", "deflate", "zstd", "gzip, zstd", "identity",
                                            "application/json", "application/x-ndjson", "100-continue",
                                            "close", "-1", "0", "99999999999", "7"]), _text)


def _compress(coding: str, body: bytes) -> bytes:
    if coding == "gzip":
        return gzip.compress(body)
    if coding == "deflate":
        return zlib.compress(body)
    if coding == "zstd":
        return _ZSTD.compress(body)
    return body


@st.composite
def http_request(draw) -> bytes:
    events = draw(st.lists(st.one_of(_records, st.builds(dict, message=_probe_lines, tag=_text)), max_size=5))
    ndjson = draw(st.booleans())
    body = ("\n".join(json.dumps(e, default=repr) for e in events) if ndjson
            else json.dumps(events, default=repr)).encode()
    coding = draw(st.sampled_from(["", "gzip", "deflate", "zstd"]))
    body = _compress(coding, body)
    headers = [("Host", "x"), ("Content-Type", "application/x-ndjson" if ndjson else "application/json")]
    if coding:
        headers.append(("Content-Encoding", coding))
    chunked = draw(st.booleans())
    if chunked:
        headers.append(("Transfer-Encoding", "chunked"))
        cut = draw(st.integers(1, 64))
        parts = [body[i:i + cut] for i in range(0, len(body), cut)]
        wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    else:
        headers.append(("Content-Length", str(len(body))))
        wire = body
    headers += draw(st.lists(st.tuples(_header_names, _header_values), max_size=3))
    method = draw(st.sampled_from(["POST", "GET", "PUT", "POST"]))
    head = f"{method} /v1/vector HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode("utf-8", "surrogateescape") + wire


@settings(max_examples=250, **SETTINGS)
@given(st.binary(max_size=600))
def test_http_arbitrary_bytes(data):
    run_case("http", targets.http, data)


@settings(max_examples=300, **SETTINGS)
@given(mutated(st.lists(http_request(), min_size=1, max_size=3).map(b"".join)), st.integers(0, 6))
def test_http_mutated_requests(data, split):
    run_case("http", targets.http, _split_prefix(data, split))


def test_http_figures(figures):
    _report(figures, "http")


# ---------------------------------------------------------------- ndjson
_lines = st.lists(st.one_of(_records.map(lambda r: json.dumps(r, default=repr).encode()),
                            st.binary(max_size=40), st.just(b"x" * 9000), st.just(b"")), max_size=8)


@settings(max_examples=300, **SETTINGS)
@given(mutated(st.tuples(_lines, st.sampled_from([b"\n", b"\r\n"])).map(lambda t: t[1].join(t[0]))),
       st.integers(0, 6))
def test_ndjson_lines(data, split):
    run_case("ndjson", targets.ndjson, _split_prefix(data, split))


def test_ndjson_figures(figures):
    _report(figures, "ndjson")


# ---------------------------------------------------------------- decoders
_escapey = st.lists(st.sampled_from([b"#", b"\\", b"0", b"1", b"3", b"7", b"x", b"F", b"r", b"n", b" ", b"\x00",
                                     b"\r", b"\n", b"\xc3", b"\xa9", b"\x1b", b"\x7f", b":", b"<13>", b"[",
                                     b"]", b"GET / HTTP/1.0", b"#015", b"\\r\\n", b"{", b"\"", b"-", b"\xff"]),
                    max_size=60).map(b"".join)
_syslog = st.builds(lambda pri, host, tag, msg: b"<%d>Nov 27 13:00:00 %s %s: %s" % (pri, host, tag, msg),
                    st.integers(0, 300), st.binary(max_size=12), st.binary(max_size=12), _escapey)


@settings(max_examples=600, **SETTINGS)
@given(st.one_of(st.binary(max_size=300), _escapey, _syslog))
def test_decoders(data):
    run_case("decoders", targets.decoders, data)


def test_decoders_figures(figures):
    _report(figures, "decoders")


# ---------------------------------------------------------------- config
_keys = st.sampled_from(["listen", "output", "flow", "detect", "correlation", "actions", "metrics", "http",
                         "ndjson", "log_level", "shutdown_timeout", "address", "shared_key", "users",
                         "tls", "max_connections", "idle_timeout", "type", "rules", "action", "catalogue",
                         "signatures", "payload", "max_inflight_records", "allowlist", "sources", "x"])
_yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10, 2**40), st.floats(allow_nan=True), _text,
              st.sampled_from(["127.0.0.1:0", "[::1]:99999", "forward", "stdout", "10.0.0.0/8", "tag"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=15)


def _yaml_dump(value) -> bytes:
    import yaml
    return yaml.safe_dump(value, allow_unicode=True).encode()


_billion_laughs = (b'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
                   + b"".join(b"%c: &%c [*%c,*%c,*%c,*%c,*%c,*%c,*%c,*%c,*%c]\n" % ((c, c) + (c - 1,) * 9)
                              for c in range(ord("b"), ord("j")))
                   + b"detect: {catalogue: *i}\n")


@settings(max_examples=300, **SETTINGS)
@given(st.one_of(st.dictionaries(_keys, _yaml_values, max_size=5).map(_yaml_dump),
                 mutated(st.dictionaries(_keys, _yaml_values, max_size=5).map(_yaml_dump)),
                 st.binary(max_size=200), st.just(_billion_laughs)))
def test_config_loader(data):
    run_case("config", targets.config, data)


def test_config_figures(figures):
    _report(figures, "config")


# ---------------------------------------------------------------- refused early
def _traced(fn: Callable[[], object]) -> tuple[object, int]:
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _forward_events(data: bytes, limits: Limits) -> list:
    conn = ServerConnection("bomb", limits=limits)
    conn.receive_data(data)
    out = []
    for _ in range(100):
        ev = conn.next_event()
        if ev is NEED_DATA or ev is CLOSED:
            break
        out.append(ev)
        if isinstance(ev, ProtocolError):
            break
    return out


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_forward_compressed_bomb_refused_early(codec, figures):
    limit = 1024 * 1024
    raw = b"\x00" * (64 * 1024 * 1024)  # 64 MiB inflated
    payload = gzip.compress(raw, 9) if codec == "gzip" else zstandard.ZstdCompressor(level=19).compress(raw)
    del raw
    frame = msgpack.packb(["bomb", payload, {"compressed": codec, "chunk": "c1"}], use_bin_type=True)
    events, peak = _traced(lambda: _forward_events(frame, Limits(4 * 1024 * 1024, limit)))
    errors = [e for e in events if isinstance(e, ProtocolError)]
    figures.add(codec=codec, compressed_kib=len(payload) // 1024, inflated_mib=64,
                peak_kib=peak // 1024, reason=errors[0].reason if errors else None)
    assert errors and errors[0].reason == "decompressed_too_large" and errors[0].chunk_id == "c1"
    assert peak < 8 * limit, peak  # refused while inflating, not after


def test_forward_oversized_frame_refused_before_buffering(figures):
    limit = 1024 * 1024
    head = b"\x93\xa3tag\xc6" + (512 * 1024 * 1024).to_bytes(4, "big")  # a 512 MiB bin announced
    events, peak = _traced(lambda: _forward_events(head + b"\x00" * 1000, Limits(limit, limit)))
    figures.add(announced_mib=512, peak_kib=peak // 1024,
                reason=events[0].reason if events and isinstance(events[0], ProtocolError) else None)
    assert isinstance(events[0], ProtocolError) and events[0].reason == "frame_too_large" and events[0].fatal
    assert peak < 4 * limit  # the 512 MiB are never buffered (the parser's own buffer is ~1 MiB)


@pytest.mark.parametrize("coding", ["gzip", "deflate", "zstd"])
def test_http_compressed_bomb_refused_early(coding, figures):
    limit = 1024 * 1024
    body = _compress(coding, b"[" + b" " * (64 * 1024 * 1024) + b"]")

    def decode() -> object:
        try:
            return decode_body(body, coding, limit)
        except HttpError as exc:
            return exc

    err, peak = _traced(decode)
    figures.add(coding=coding, compressed_kib=len(body) // 1024, inflated_mib=64, peak_kib=peak // 1024,
                status=getattr(err, "status", None))
    assert isinstance(err, HttpError) and err.status == 413
    assert peak < 8 * limit, peak


def test_http_oversized_content_length_refused_at_the_head(figures):
    parser = RequestParser(max_body_bytes=1024 * 1024)
    parser.feed(b"POST /v1/vector HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n")
    t0 = time.monotonic()
    with pytest.raises(HttpError) as ei:
        parser.next_event()
    figures.add(content_length_mib=1024, status=ei.value.status, buffered=parser.buffered)
    assert ei.value.status == 413 and time.monotonic() - t0 < 1
