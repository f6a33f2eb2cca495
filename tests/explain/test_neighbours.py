"""explain reads the lines around a strong hit: short ones and ones that hold
the hit's HOSTNAME word, not the ordinary long logs in between."""

from __future__ import annotations

from probetag.explain import _NEIGHBOUR_REST, _host_word, _with_neighbours

HIT = b"2026-11-27T12:00:01.718049+00:00 203.0.113.38 GET / HTTP/1.0#015"
SHORT = b"2026-11-27T12:00:01.719159+00:00 203.0.113.9 #015 "
LONG = (b"2026-11-27T12:00:01.719474+00:00 app-06 dockerd[64456]: time=\"2026-11-27T10:00:00Z\" "
        b"level=info msg=\"ignoring event\" container=d6772dc55073c0ed19 module=libcontainerd")
SAME_HOST = (b"2026-11-27T12:00:01.719500+00:00 203.0.113.38 " + b"x" * (_NEIGHBOUR_REST + 10))


def _lines(*lines: bytes) -> tuple[bytes, list[tuple[int, int, int]]]:
    data = b"\n".join(lines)
    start = data.index(HIT)
    return data, [(lines.index(HIT), start, start + len(HIT))]


def test_host_word() -> None:
    assert _host_word(HIT, 0) == (33, b"203.0.113.38")
    trad = b"Nov 27 13:46:08 myhost GET / HTTP/1.0#015"
    assert _host_word(trad, 16) == (16, b"myhost")


def test_plain_header_reads_short_and_same_host_neighbours_only() -> None:
    data, strong = _lines(LONG, SHORT, HIT, LONG, SAME_HOST)
    got = _with_neighbours(data, [(2, HIT, False, False)], strong, host_at=0)
    assert [x[0] for x in got] == [1, 2, 4]
    assert got[0][1] == SHORT and got[2][1] == SAME_HOST


def test_daemon_lines_are_not_read_even_when_short() -> None:
    daemon = b"2026-11-27T12:00:01.720761+00:00 app-01 systemd[30851]: Started Session 16033 of User root."
    data, strong = _lines(daemon, HIT, SHORT)
    got = _with_neighbours(data, [(1, HIT, False, False)], strong, host_at=0)
    assert [x[0] for x in got] == [1, 2]


def test_other_formats_read_every_neighbour() -> None:
    data, strong = _lines(LONG, SHORT, HIT, LONG, SAME_HOST)
    got = _with_neighbours(data, [(2, HIT, False, False)], strong)
    assert [x[0] for x in got] == [0, 1, 2, 3, 4]
