"""Records built to make detection expensive cost what honest records of
their size cost: a field over MAX_LINE_BYTES is no syslog line and is not
unescaped or matched (counted), and a record of one probe piece repeated
is read once per literal. Counted in work done, not in seconds."""

from __future__ import annotations

import msgpack

from probetag._config import config_from_mapping
from probetag._metrics import Metrics
from probetag._stage import Processor
from probetag.decode import _rebuild
from probetag.detect._enrich import MAX_LINE_BYTES

SRC = "203.0.113.7"


def _entries(records):
    return b"".join(msgpack.packb([1700000000 + i, r]) for i, r in enumerate(records))


def test_a_field_over_the_line_bound_is_passed_unread_and_counted(monkeypatch):
    unescaped: list[int] = []
    real = _rebuild.unescape

    def counting(data, *a, **k):
        unescaped.append(len(data))
        return real(data, *a, **k)

    monkeypatch.setattr(_rebuild, "unescape", counting)
    m = Metrics()
    proc = Processor(config_from_mapping({}), m)
    flood = "GET / HTTP/1.0#015" * (MAX_LINE_BYTES // 18 + 10)          # just over the bound
    res = proc.process("syslog.user", _entries([
        {"host": "GET", "ident": "/", "message": "HTTP/1.0#015", "source_address": SRC},
        {"message": flood, "source_address": SRC},
        {"host": "GET", "ident": "/", "message": "HTTP/1.0#015", "source_address": "203.0.113.8"},
    ]))
    assert res.tagged == 2 and res.passed == 1 and res.rejected == 0
    assert m.get("detect_skipped", reason="line_too_long") == 1
    assert unescaped and max(unescaped) < MAX_LINE_BYTES               # the flood was never unescaped
    # The records themselves go on untouched: the flood is passed as it came.
    out = b"".join(c.entries for c in res.chunks)
    assert msgpack.packb(flood) in out


def test_a_record_of_one_probe_piece_repeated_is_read_once_per_literal():
    from probetag.detect import _prefilter

    finds: list[int] = []
    real = _prefilter.LiteralSet.find

    def counting(self, data):
        out = real(self, data)
        finds.append(len(out))
        return out

    m = Metrics()
    proc = Processor(config_from_mapping({}), m)
    piece = "\x00\x0c\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00\x00"
    _prefilter.LiteralSet.find = counting
    try:
        res = proc.process("syslog.user", _entries([{"message": piece * 4000, "source_address": SRC}]))
    finally:
        _prefilter.LiteralSet.find = real
    assert res.passed + res.tagged == 1
    assert finds and max(finds) < 100          # was ~24,000 hits for this 52 KB line
