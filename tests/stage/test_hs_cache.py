"""The cache of compiled hyperscan databases (``detect._prefilter``): a
second build loads the stored database instead of compiling, finds the
same occurrences, and every cache problem falls back to compiling."""

from __future__ import annotations

import os

import pytest

from probetag.detect import LiteralSet, available_backends

pytestmark = pytest.mark.skipif("hyperscan" not in available_backends(), reason="hyperscan not installed")

LITS = [b"GET / HTTP/1.0#015", b"#015", b"\\r", b"\\0", b"OPTIONS ", b"\x16\x03\x00\x00S\x01"]
DATA = b"xx GET / HTTP/1.0#015 yy \\r\\0 OPTIONS \x16\x03\x00\x00S\x01 #015"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("PROBETAG_HS_CACHE", raising=False)
    return tmp_path / "probetag" / "hyperscan"


def _files(d):
    return {p.name: p.stat().st_mtime_ns for p in d.iterdir()} if d.exists() else {}


def test_second_build_loads_the_stored_database(cache):
    want = LiteralSet(LITS, "re").find(DATA)
    first = LiteralSet(LITS, "hyperscan")
    stored = _files(cache)
    assert len(stored) >= 1 and not any(n.startswith(".tmp") for n in stored)
    second = LiteralSet(LITS, "hyperscan")
    assert _files(cache) == stored  # loaded, not compiled and written again
    assert first.find(DATA) == second.find(DATA) == want and want


def test_damaged_files_are_recompiled_and_replaced(cache):
    LiteralSet(LITS, "hyperscan")
    for p in cache.iterdir():
        raw = p.read_bytes()
        p.write_bytes(raw[:-7] + b"garbage")  # hyperscan would accept some of these
    again = LiteralSet(LITS, "hyperscan")
    assert again.find(DATA) == LiteralSet(LITS, "re").find(DATA)
    for p in cache.iterdir():
        assert not p.read_bytes().endswith(b"garbage")


def test_unusable_cache_directory_is_ignored(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert LiteralSet(LITS, "hyperscan").find(DATA) == LiteralSet(LITS, "re").find(DATA)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # invalid per the XDG spec
    assert LiteralSet(LITS, "hyperscan").find(DATA) == LiteralSet(LITS, "re").find(DATA)
    assert not (tmp_path / "relative").exists() and not os.path.exists("relative/path")


def test_cache_can_be_turned_off(cache, monkeypatch):
    monkeypatch.setenv("PROBETAG_HS_CACHE", "0")
    assert LiteralSet(LITS, "hyperscan").find(DATA)
    assert not cache.exists()


def test_cache_is_bounded(cache):
    from probetag.detect import _prefilter

    for k in range(_prefilter._CACHE_KEEP + 5):
        LiteralSet([b"literal-%d" % k, b"other"], "hyperscan")
    assert len(_files(cache)) == _prefilter._CACHE_KEEP
