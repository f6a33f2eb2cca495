"""Decompression of many members costs what the input costs (linear), with
the output bound kept. Work is measured as the bytes handed to the
decompressors, not as time."""

from __future__ import annotations

import gzip
import zlib

import pytest
import zstandard

from probetag import _inflate
from probetag._inflate import InflateError, inflate, unzstd
from probetag.forward._wire import BadPayload, gunzip_bounded, unzstd_bounded
from probetag.inputs.http import HttpError, decode_body

EMPTY_GZ = gzip.compress(b"", mtime=0)
EMPTY_ZST = zstandard.ZstdCompressor().compress(b"")


class _Counting:
    """Stands in for the zlib module / a ZstdDecompressor and adds up the
    input bytes every decompress() call is given (each call copies at most
    that much into unused_data / unconsumed_tail)."""

    def __init__(self, factory):
        self.factory = factory
        self.fed = 0

    def make(self, *args):
        inner = self.factory(*args)
        outer = self

        class Obj:
            def decompress(self, data, *rest):
                outer.fed += len(data)
                return inner.decompress(data, *rest)

            def __getattr__(self, name):
                return getattr(inner, name)

        return Obj()


def test_gzip_members_linear(monkeypatch):
    counting = _Counting(zlib.decompressobj)

    class Z:
        MAX_WBITS = zlib.MAX_WBITS
        error = zlib.error
        decompressobj = staticmethod(counting.make)

    monkeypatch.setattr(_inflate, "zlib", Z)
    data = EMPTY_GZ * 200_000  # 4 MB, the 15 s quadratic case before
    assert inflate(data, 31, 1 << 20) == b""
    assert counting.fed <= 32 * len(data)


def test_zstd_frames_linear(monkeypatch):
    counting = _Counting(zstandard.ZstdDecompressor().decompressobj)
    real = zstandard.ZstdDecompressor

    class D:
        def __init__(self):
            self.inner = real()

        def stream_reader(self, *a, **kw):
            return self.inner.stream_reader(*a, **kw)

        def decompressobj(self):
            return counting.make()

    monkeypatch.setattr(zstandard, "ZstdDecompressor", D)
    data = EMPTY_ZST * 200_000
    assert unzstd(data, 1 << 20) == b""
    assert counting.fed <= 64 * len(data)


def test_members_concatenate_and_bound():
    parts = [gzip.compress(bytes([i]) * (i * 1000), mtime=0) for i in range(1, 40)]
    want = b"".join(bytes([i]) * (i * 1000) for i in range(1, 40))
    assert gunzip_bounded(b"".join(parts), len(want)) == want
    with pytest.raises(BadPayload) as exc:
        gunzip_bounded(b"".join(parts), len(want) - 1)
    assert exc.value.reason == "decompressed_too_large"
    zparts = b"".join(zstandard.ZstdCompressor().compress(bytes([i]) * 5000) for i in range(30))
    assert len(unzstd_bounded(zparts, 150_000)) == 150_000
    with pytest.raises(BadPayload) as exc:
        unzstd_bounded(zparts, 149_999)
    assert exc.value.reason == "decompressed_too_large"


def test_truncated_and_trailing():
    big = gzip.compress(bytes(range(256)) * 4000, mtime=0)
    with pytest.raises(BadPayload) as exc:
        gunzip_bounded(EMPTY_GZ * 3 + big[:-5], 1 << 22)
    assert exc.value.reason == "bad_gzip" and "#4" in exc.value.detail
    z = zstandard.ZstdCompressor().compress(bytes(range(256)) * 4000)
    with pytest.raises(BadPayload) as exc:
        unzstd_bounded(EMPTY_ZST * 3 + z[:-3], 1 << 22)
    assert exc.value.reason == "bad_zstd"
    with pytest.raises(InflateError) as ierr:
        inflate(zlib.compress(b"abc") + b"x", zlib.MAX_WBITS, 100, members=False)
    assert ierr.value.reason == "trailing"


def test_http_many_members_and_bomb():
    assert decode_body(EMPTY_GZ * 100_000 + gzip.compress(b"[]"), "gzip", 1000) == b"[]"
    assert decode_body(EMPTY_ZST * 100_000 + zstandard.ZstdCompressor().compress(b"[]"),
                       "zstd", 1000) == b"[]"
    bomb = gzip.compress(b"\0" * (8 << 20))
    with pytest.raises(HttpError) as exc:
        decode_body(bomb, "gzip", 1 << 20)
    assert exc.value.status == 413
    with pytest.raises(HttpError) as exc:
        decode_body(zlib.compress(b"[]") + b"junk", "deflate", 1000)
    assert exc.value.status == 400
