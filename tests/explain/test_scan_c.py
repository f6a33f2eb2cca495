"""explain's block scan in C (``_speedups.Hits.lines``) against the Python
loop it replaces (``Explainer._scan_lines``) and ``pick``'s own tests.

The C scan returns what the loop returns (line count, framing-error lines,
hit lines with their flags, strong lines), except that a line hit only by a
CR escape may carry ``weak`` 2: "pick skips it as text". That mark may only
be set where ``pick``, given the loop's ``True``, would skip the line too:
the items and the skipped count must come out the same both ways."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probetag._accel import speedups
from probetag._config import load_config
from probetag._explain_scan import _FRAMING_MARKERS, _WORDS, Explainer

ROOT = Path(__file__).resolve().parents[2]
CONFIG = load_config(None)
_DET: list[Any] = []


def _explainer(fmt: str) -> Explainer:
    ex = Explainer(CONFIG, fmt, "-", _DET[0] if _DET else None)
    _DET[:] = [ex.detector]
    return ex


EXPLAINERS = {fmt: _explainer(fmt) for fmt in ("traditional", "rfc3339", "rfc5424", "json")}


def _c_scan(ex: Explainer, data: bytes) -> tuple[int, int, list[Any], list[Any]]:
    assert ex._hit_tables is not None, "hyperscan and the C accelerator are dependencies on this platform"
    handler = speedups.Hits(*ex._hit_tables)
    ex._literals.scan_into(data, handler)
    firsts, most = ex._c_words
    return handler.lines(data, ex._marker_ids, ex._raw_from(), firsts, most, _WORDS)  # type: ignore[no-any-return]


def _same(fmt: str, data: bytes) -> int:
    """Assert the C scan is the loop's; -> how many lines C marked 2."""
    ex = EXPLAINERS[fmt]
    n, framing, picked, strong = _c_scan(ex, data)
    rn, rframing, rpicked, rstrong = ex._scan_lines(bytearray(data))
    assert (n, framing, strong) == (rn, rframing, rstrong)
    assert [p[:3] for p in picked] == [p[:3] for p in rpicked]
    marked2 = 0
    for (_i, _ln, _m, w), (_ri, _rl, _rm, rw) in zip(picked, rpicked):
        if w == 2:
            marked2 += 1
            assert rw is True and type(w) is int
        else:
            assert w is rw
    # pick makes the same items of both (the mark only saves its tests)
    a, b = _explainer(fmt), _explainer(fmt)
    assert a.pick(picked) == b.pick(rpicked)
    assert a.weak_skipped == b.weak_skipped and a._pending == b._pending
    return marked2


HEADS = {
    "traditional": [b"Nov 27 13:25:57 web1 ", b"Dec  7 01:02:03 10.0.0.9 ", b"Nov 27 13:25:57 ", b"Nov 2"],
    "rfc3339": [b"2026-11-27T13:25:57.123456+00:00 web1 ", b"2026-11-27T13:25:57+01:00 10.0.0.9 ",
                b"2026-11-27T13:25:57Z", b""],
    "rfc5424": [b"<13>1 2026-11-27T13:25:57.1Z web1 app 12 - - ", b"<13>1 - - - - - - "],
    "json": [b'{"msg":"', b'{"host":"web1","msg":"'],
}
TEXT = st.sampled_from([
    b"#015", b"\\r", b"\\015", b"#011", b"#000", b"#0", b"\\x", b"\\x00", b"#", b"\\", b": ", b":", b" ",
    b"sshd[812]: ", b"app: ", b"service started on port 8080", b"ab", b"7", b"\xff", b"\xc3\xa9",
    b"GET / HTTP/1.0#015", b"OPTIONS sip:nm SIP/2.0#015", b"#026#003#000#000S#001", b"HELP#015",
    *_FRAMING_MARKERS, b"\n", b"\n\n", b'"}',
])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(HEADS)), st.data())
def test_c_scan_is_the_python_loop(fmt: str, data: st.DataObject) -> None:
    lines = data.draw(st.lists(st.tuples(st.sampled_from(HEADS[fmt]), st.lists(TEXT, max_size=12)), max_size=30))
    block = b"\n".join(h + b"".join(t) for h, t in lines)
    _same(fmt, block)


@pytest.mark.parametrize("name", ["traditional.log", "rfc3339.log", "rfc5424.log", "json.log"])
def test_c_scan_on_the_fixtures(name: str) -> None:
    raw = (ROOT / "tests" / "fixtures" / "rsyslog" / name).read_bytes()
    fmt = name.split(".")[0]
    _same(fmt, raw)


def test_c_scan_marks_the_cr_lines_of_text_pick_skips(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    import bench_explain

    path = tmp_path / "crtab.log"
    bench_explain.generate(path, 0.3, probe_rate=0.02, seed=7, pool=300, crtab=0.3)
    rfc3339 = path.read_bytes()
    # the same lines with traditional timestamps
    traditional = re.sub(rb"(?m)^[0-9]{4}-[0-9]{2}-[0-9]{2}T([0-9:]{8})\S* ", rb"Nov 27 \1 ", rfc3339)
    assert traditional.count(b"\n") == rfc3339.count(b"\n") and traditional[:7] == b"Nov 27 "
    for fmt, raw in (("rfc3339", rfc3339), ("traditional", traditional)):
        # most CR lines of this file are text: C marks them, pick skips them
        assert _same(fmt, raw) > raw.count(b"#015") // 2


def test_c_scan_marks_nothing_where_pick_must_parse() -> None:
    # RFC 5424 and JSON lines: the MSG is not a suffix of the line, so pick
    # parses every CR line itself; and a framing complaint is never skipped
    data = (b"<13>1 2026-11-27T13:25:57Z web1 app 12 - - service started on port 8080#015\n"
            b'{"msg":"service started on port 8080#015"}')
    for fmt in ("rfc5424", "json"):
        assert _same(fmt, data) == 0
    line = b"Nov 27 13:25:57 web1 rsyslogd: " + _FRAMING_MARKERS[0] + b" service started on port http#015"
    assert _same("traditional", line) == 0
    assert _same("traditional", line.replace(_FRAMING_MARKERS[0], b"x")) == 1


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(HEADS)), st.lists(st.one_of(st.binary(max_size=40), TEXT), max_size=40))
def test_c_scan_on_garbage_is_the_python_loop(fmt: str, pieces: list[bytes]) -> None:
    # arbitrary bytes (NULs, lone CRs, invalid UTF-8, LF runs) among literals
    _same(fmt, b"".join(pieces))
