#!/usr/bin/env python3
"""Writes ``tools/fuzz/corpus/TARGET/NAME``: the hostile inputs of issue 14
(and the fuzzers' earlier finds), scaled to the targets' ``LIMITS``, as the
checked-in seed corpus of every fuzz target. CI starts each bounded fuzz
run from it (``tests/fuzz/test_fuzz_atheris.py``) and replays every file
through its target (``tests/fuzz/test_fuzz_corpus.py``).

Usage: ``python tools/fuzz/make_corpus.py`` (rewrites the files; they are
deterministic, so an unchanged generator gives an unchanged corpus).

The forward targets read their first byte as a chunking choice when its
high bit is set (``targets._pieces``), so each small frame below is
prefixed with one such byte (``\x80``: the frame arrives cut in small
reads). The large ones come whole, after a ``\x00`` (a request that is not
an array: skipped and counted), which keeps the bounded CI runs fast.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import msgpack

OUT = Path(__file__).resolve().parent / "corpus"


def _packed(tag: str, entries: bytes, **opt: object) -> bytes:
    return msgpack.packb([tag, entries, {"chunk": "Y2h1bmsK", **opt}], use_bin_type=True)


def _gzip_members(n: int) -> bytes:
    member = gzip.compress(b"", mtime=0)
    return member * n


def _http(body: bytes, *headers: str, content_length: str | None = None) -> bytes:
    cl = content_length if content_length is not None else str(len(body))
    head = "".join(f"{h}\r\n" for h in headers)
    return (f"POST /v1/vector HTTP/1.1\r\nHost: x\r\n{head}".encode("latin-1")
            + b"Content-Length: " + cl.encode("latin-1") + b"\r\n\r\n" + body)


GOOD = msgpack.packb([1700000000, {"message": "GET / HTTP/1.0#015", "host": "h"}])
# [1, {"message": ..., {"a": 1}: "b"}]: a map as a map key
MAP_KEY_ENTRY = b"\x92\x01\x82\xa7message\xb2GET / HTTP/1.0#015\x81\xa1a\x01\xa1b"
# [Timestamp ext (-1) of 1 byte, {}]: a malformed timestamp
BAD_TIMESTAMP = b"\x92\xd4\xff\x00\x80"

CASES: dict[str, dict[str, bytes]] = {
    "forward": {
        "zeros_packed": b"\x00" + _packed("t", b"\x00" * 30_000),
        "zeros_gzip": b"\x00" + _packed("t", gzip.compress(b"\x00" * 250_000, 9, mtime=0), compressed="gzip"),
        "gzip_empty_members": b"\x00" + _packed("t", _gzip_members(2_000), compressed="gzip"),
        "chunk_id_long": b"\x80" + msgpack.packb(["t", GOOD, {"chunk": "c" * 200}], use_bin_type=True),
        "map_key_entry": b"\x80" + _packed("t", MAP_KEY_ENTRY + GOOD),
        "bad_timestamp_entry": b"\x80" + _packed("t", BAD_TIMESTAMP + GOOD),
        "nested_time": b"\x80" + msgpack.packb(
            ["t", [[[msgpack.ExtType(0, b"\x65\x53\xf1\x00\x00\x00\x00\x00"), {"k": 1}], {"message": "x"}]]],
            use_bin_type=True),
        "empty_tag": b"\x80" + _packed("", GOOD),
    },
    "forward_handshake": {
        "ping_wrong_digest": b"\x80" + msgpack.packb(["PING", "client", b"0" * 16, "f" * 128, "alice", "0" * 128],
                                                      use_bin_type=True),
        "ping_huge_hostname": b"\x80" + msgpack.packb(["PING", "h" * 30_000, b"s", "0" * 128, "", ""],
                                                       use_bin_type=True),
    },
    "http": {
        "content_length_superscript": _http(b"[]", content_length="\xb945"),
        "content_length_plus": _http(b"[]", content_length="+2"),
        "json_array_deep": _http(b"[" * 50_000, "Content-Type: application/json"),
        "ndjson_deep_line": _http(b'{"a":' * 5_000 + b"1" + b"}" * 5_000 + b'\n{"message":"ok"}\n',
                                  "Content-Type: application/x-ndjson"),
        "gzip_empty_members": _http(_gzip_members(5_000), "Content-Type: application/json",
                                    "Content-Encoding: gzip"),
        "deflate_bomb": _http(zlib.compress(b"[" + b" " * 1_000_000 + b"]", 9), "Content-Type: application/json",
                              "Content-Encoding: deflate"),
        "chunked_hex_prefix": (b"POST /v1/vector HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"0x2\r\n[]\r\n0\r\n\r\n"),
        "big_integer": _http(b'[{"message":"x","n":' + b"9" * 40 + b"}]", "Content-Type: application/json"),
        "header_flood": b"POST /v1/vector HTTP/1.1\r\n" + b"X-A: " + b"a" * 20_000 + b"\r\n\r\n",
    },
    "ndjson": {
        "deep_line": b"\x00" + b"[" * 20_000 + b"\n" + b'{"message":"ok"}\n',
        "lone_surrogate": b"\x00" + b'{"message":"\\udeef GET / HTTP/1.0#015"}\n',
        "big_integer": b"\x00" + b'{"n":' + b"9" * 40 + b"}\n",
    },
    "decoders": {
        "octal_flood": b"#015" * 2_000,
        "cstyle_flood": b"\\x16\\x03" * 2_000,
        "json_deep": b"{" + b'"a":{' * 3_000,
    },
    "config": {
        "unknown_tag": b"listen:\n  address: !foo 127.0.0.1:0\n",
        "bad_binary": b"listen:\n  shared_key: !!binary '***'\n",
        "python_tag": b"listen: !!python/object/apply:os.system ['true']\n",
        "deep_nesting": b"listen: " + b"[" * 5_000 + b"]" * 5_000 + b"\n",
        "alias_fanout": (b"a: &a [x, x, x, x, x, x, x, x, x]\n"
                         + b"".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n".encode()
                                    for p, c in zip("abcdefgh", "bcdefghi"))
                         + b"detect:\n  catalogue: *i\n  fields: [*i, *i]\n"),
        "dead_letter_wrong_output": b"output:\n  dead_letter: /tmp/dl.jsonl\n  dead_letter_after: 0\n",
        "correlation_bytes_low": b"correlation:\n  max_bytes: 10\n  max_sources: -1\n",
    },
    "exec_filter": {
        "json_deep": b"\x00" + b"[" * 20_000 + b"\n{}\n",
        "msgpack_map_key": b"\x01" + b"\x81" + b"\x81\xa1a\x01" + b"\xa1b" + msgpack.packb({"message": "x"}),
        "msgpack_broken": b"\x01" + b"\xc1" * 10,
        # found by this target: an array as a map key raised TypeError out of feed()
        "msgpack_array_key": b"\x01" + msgpack.packb({"message": "a"}) + b"\x81\x81\x91\x01\x01\x01",
        "json_not_map": b"\x00" + b"[1,2]\n\"x\"\n{\"time\":\"nope\",\"tag\":\"\"}\n",
    },
}


def main() -> None:
    for target, cases in CASES.items():
        d = OUT / target
        d.mkdir(parents=True, exist_ok=True)
        for name, data in cases.items():
            (d / name).write_bytes(data)
    (OUT / "README.md").write_text(
        "Seed corpus of the fuzz targets (`tools/fuzz/targets.py`), one folder per target,\n"
        "written by `tools/fuzz/make_corpus.py` (see there for what each case is).\n"
        "CI fuzzes from it for a bounded time and replays every file through its target.\n")
    print(json.dumps({t: len(c) for t, c in CASES.items()}))


if __name__ == "__main__":
    main()
