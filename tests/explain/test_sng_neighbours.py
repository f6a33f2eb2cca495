"""explain's walks around strong hits in syslog-ng files (``_explain_scan.
_syslog_ng_neighbours``): one walk per direction, which takes on the walk of
every strong hit it comes to, picks the lines that one walk per hit picks,
whatever the file (timestamps going forward, as a daemon writes them)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from probetag._explain_scan import (_FRAMING_MARKERS, _NEIGHBOURS_AFTER, _NEIGHBOURS_BEFORE, _SNG_HEAD,
                                    _SNG_REACH, _SNG_WALK, _fragment_like, _sng_clock, _syslog_ng_neighbours)


def _per_hit(data: bytes, picked: list, strong: list) -> list:
    """The reference: one walk per strong hit and direction."""
    have = {x[0] for x in picked}
    extra = []
    n = len(data)
    for idx, start, end in strong:
        h = _SNG_HEAD.match(data, start)
        t0 = _sng_clock(h) if h is not None else None
        for step in (-1, 1):
            pos = start if step < 0 else end
            last_t, k, left = t0, 0, (_NEIGHBOURS_BEFORE if step < 0 else _NEIGHBOURS_AFTER)
            cont = step < 0 and h is None
            while k < _SNG_WALK:
                if step < 0:
                    if pos <= 0:
                        break
                    b = data.rfind(b"\n", 0, pos - 1) + 1
                    e = pos - 1
                else:
                    if pos >= n:
                        break
                    b = pos + 1
                    e = data.find(b"\n", b)
                    if e < 0:
                        e = n
                m = _SNG_HEAD.match(data, b, e)
                t = _sng_clock(m) if m is not None else last_t
                near = t is not None and last_t is not None and abs(t - last_t) <= _SNG_REACH
                if not (left > 0 or cont or near):
                    break
                k += 1
                ln = bytes(data[b:e])
                if idx + step * k not in have:
                    have.add(idx + step * k)
                    extra.append((idx + step * k, ln, any(x in ln for x in _FRAMING_MARKERS), False))
                left -= 1
                if _fragment_like(data, m, e):
                    last_t = t if t is not None else last_t
                    left = max(left, 1)
                cont = step < 0 and m is None
                pos = b if step < 0 else e
    return sorted(picked + extra, key=lambda x: x[0])


_PAYLOADS = [b"\x16", b"\x03\x01", b"GET / HTTP/1.0", b"f", b"",
             b"connection from 203.0.113.7 closed, after a long and ordinary session",
             b"backup finished: 12 files, 0 errors, all of them checked twice over"]
# (gap in seconds to the line before, payload index, has a header, is a strong hit)
_LINE = st.tuples(st.sampled_from([0, 0, 0, 1, 3, 13, 40]), st.integers(0, len(_PAYLOADS) - 1),
                  st.booleans() | st.just(True), st.integers(0, 5))


def _file(spec: list) -> tuple[bytes, list, list]:
    t, lines, hits = 0, [], []
    for gap, p, header, hit in spec:
        t += gap
        body = _PAYLOADS[p]
        if header or not lines:
            lines.append(b"Dec  7 %02d:%02d:%02d 127.0.0.1 " % (t // 3600 % 24, t // 60 % 60, t % 60) + body)
        else:
            lines.append(body)  # a continuation (a UDP message's next line)
        if hit == 0:
            hits.append(len(lines) - 1)
    data = b"\n".join(lines)
    offs, o = [], 0
    for ln in lines:
        offs.append(o)
        o += len(ln) + 1
    strong = [(i, offs[i], offs[i] + len(lines[i])) for i in hits]
    picked = [(i, lines[i], False, False) for i in hits]
    return data, picked, strong


@settings(max_examples=400, deadline=None)
@given(st.lists(_LINE, min_size=1, max_size=120))
def test_one_walk_per_direction_picks_what_one_walk_per_hit_does(spec: list) -> None:
    data, picked, strong = _file(spec)
    assert _syslog_ng_neighbours(data, list(picked), strong) == _per_hit(data, list(picked), strong)


def test_a_walk_that_comes_to_another_hit_goes_on_as_that_hits_walk() -> None:
    # hit 0's forward walk takes its 6 lines and stops (ordinary long lines,
    # minutes apart); hit 3, inside it, takes 6 lines from line 3 on: up to 9
    long = 5
    spec = [(0, 0, True, 0)] + [(40, long, True, 1)] * 2 + [(40, long, True, 0)] + [(40, long, True, 1)] * 10
    data, picked, strong = _file(spec)
    got = [x[0] for x in _syslog_ng_neighbours(data, list(picked), strong)]
    assert got == [x[0] for x in _per_hit(data, list(picked), strong)] == list(range(10))
    # and backwards: hit 9's walk takes 3 lines (6..8), hit 6 inside it 3 more
    spec = [(40, long, True, 1)] * 6 + [(40, long, True, 0)] + [(40, long, True, 1)] * 2 + [(40, long, True, 0)]
    data, picked, strong = _file(spec)
    got = [x[0] for x in _syslog_ng_neighbours(data, list(picked), strong)]
    assert got == [x[0] for x in _per_hit(data, list(picked), strong)] == list(range(3, 10))


def _counting_header_reads(data: bytes, picked: list, strong: list) -> tuple[list, int]:
    """``_syslog_ng_neighbours``' result, and how many lines' headers it read."""
    reads = 0
    real_match = _SNG_HEAD.match

    class Counting:
        def match(self, *a):  # noqa: ANN001, ANN202
            nonlocal reads
            reads += 1
            return real_match(*a)

    import probetag._explain_scan as mod
    mod._SNG_HEAD, saved = Counting(), mod._SNG_HEAD
    try:
        got = _syslog_ng_neighbours(data, list(picked), strong)
    finally:
        mod._SNG_HEAD = saved
    return got, reads


def test_a_dense_scan_is_read_once_per_direction() -> None:
    # every line of a cut probe a strong hit: the per-hit walks read each
    # line once per hit before it in reach; the joined walk once in all
    spec = [(0, 0, True, 0)] * 3000
    data, picked, strong = _file(spec)
    got, reads = _counting_header_reads(data, picked, strong)
    assert [x[0] for x in got] == list(range(3000))
    assert reads <= 4 * 3000, reads


def test_a_run_of_hits_without_a_header_is_read_once_per_direction() -> None:
    # syslog-ng lines with no header (continuations) that a strong literal
    # hits, thousands in a row: each used to walk on its own (up to
    # _SNG_WALK lines each way), now the walk through them goes on from
    # each as its own would
    spec = [(0, 2, True, 0)] + [(0, 2, False, 0)] * 600
    data, picked, strong = _file(spec)
    got, reads = _counting_header_reads(data, picked, strong)
    assert got == _per_hit(data, list(picked), strong)
    assert [x[0] for x in got] == list(range(601))
    assert reads <= 4 * 601, reads


def test_a_message_of_more_lines_than_a_datagram_holds_is_cut_into_messages(tmp_path) -> None:
    # A syslog-ng line with a header, then thousands of lines without one
    # (read as the message's continuations): past 64 KiB, the next line
    # opens a message of its own, so each is matched, not one too long to be.
    import json
    import subprocess
    import sys

    log = tmp_path / "sng.log"
    log.write_bytes(b"Nov 27 13:00:00 web01 syslog-ng[123]: syslog-ng starting up; version='3.38.1'\n"
                    b"Nov 27 13:00:01 203.0.113.7 GET / HTTP/1.0\n" + b"GET / HTTP/1.0\n" * 8000)
    p = subprocess.run([sys.executable, "-m", "probetag", "explain", "--format", "jsonl", str(log)],
                       capture_output=True, timeout=300)
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    assert len(lines) == 8002
    assert sum(1 for x in lines if x["probe"]) == 8001
    # a continuation line names the line its message starts on, and does not
    # repeat the message's payload (thousands of lines would, each in full)
    starts = {x["probe"].get("continues", x["line"]) for x in lines if x["probe"]}
    assert 2 in starts and len(starts) >= 2
    assert all("payload" not in x["probe"] for x in lines if x["probe"] and "continues" in x["probe"])
    assert len(p.stdout) < 100 * len(log.read_bytes())
