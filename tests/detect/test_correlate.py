"""Per-source correlation: ambiguous lines, interleaving, idle summaries, bounds."""

from __future__ import annotations

from probetag._metrics import Metrics
from probetag.detect._catalogue import Signature
from probetag.detect._correlate import Correlator
from probetag.detect._engine import Detector


def _sig(probe: str, payload: bytes) -> Signature:
    return Signature(id=f"t-{probe}", probe=probe, scanner="nmap", transport="tcp", payload=payload,
                     match="payload", confidence=None, ports=(), provenance="test", notes="", source="test")


# A fixed catalogue: these tests are about correlation, not catalogue contents.
DET = Detector([_sig("GetRequest", b"GET / HTTP/1.0\r\n\r\n"), _sig("HTTPOptions", b"OPTIONS / HTTP/1.0\r\n\r\n"),
                _sig("X11Probe", b"l\0\x0b\0\0\0\0\0\0\0\0\0"),
                _sig("HelpThenVersion", b"HELP\r\nVERSION-QUERY 1.2\r\n")])
GET = b"GET / HTTP/1.0\r"
OPT = b"OPTIONS / HTTP/1.0\r"
CR = b"\r"


def obs(c: Correlator, source, t, line, **kw):
    return c.observe(source, t, DET.match(line), **kw)


def test_ambiguous_line_inherits_from_preceding_line_of_same_source():
    c = Correlator(window=5, scan_idle=60)
    v1 = obs(c, "10.0.0.9", 100.0, GET)
    v2 = obs(c, "10.0.0.9", 100.2, CR)
    assert v1 is not None and v2 is not None
    assert v2.inherited and not v1.inherited
    assert v2.match.signature.probe == "GetRequest" and v2.match.fragment == 1
    assert v2.confidence >= 0.5 > DET.match(CR)[0].confidence
    assert v2.scan_id == v1.scan_id
    assert (v1.group, v1.group_lines) == (v2.group, 1) and v2.group_lines == 2


def test_ambiguous_line_alone_or_late_stays_untagged():
    c = Correlator(window=5, scan_idle=60)
    assert obs(c, "10.0.0.9", 100.0, CR) is None  # no context at all
    assert len(c) == 0  # and it created no state
    obs(c, "10.0.0.9", 100.0, GET)
    assert obs(c, "10.0.0.9", 106.0, CR) is None  # outside the window


def test_other_sources_do_not_lend_context():
    c = Correlator(window=5, scan_idle=60)
    obs(c, "10.0.0.9", 100.0, GET)
    assert obs(c, "10.0.0.10", 100.1, CR) is None


def test_interleaved_sources_keep_their_own_probe():
    c = Correlator(window=5, scan_idle=60)
    a1 = obs(c, "a", 1.0, GET)
    b1 = obs(c, "b", 1.1, OPT)
    b2 = obs(c, "b", 1.2, CR)
    a2 = obs(c, "a", 1.3, CR)
    assert a2.match.signature.probe == "GetRequest" and b2.match.signature.probe == "HTTPOptions"
    assert a1.scan_id == a2.scan_id != b1.scan_id == b2.scan_id


def test_lookahead_within_chunk():
    # "HELP\r" says nothing alone; the next line of the same source is the
    # distinctive second piece of the same payload.
    nxt = DET.match(b"VERSION-QUERY 1.2\r")[0]
    assert nxt.fragment == 1 and not nxt.ambiguous
    help_matches = DET.match(b"HELP\r")
    assert help_matches and all(m.ambiguous for m in help_matches)
    c = Correlator(window=5, scan_idle=60)
    v = c.observe("a", 1.0, help_matches, following=nxt)
    assert v is not None and v.inherited and v.match.signature.probe == "HelpThenVersion"
    assert v.match.fragment == 0
    # A line logged before fragment 0 of a payload cannot belong to it.
    get = DET.match(GET)[0]
    assert get.fragment == 0
    assert obs(Correlator(), "a", 1.0, CR, following=get) is None
    # Nor can a following match of a probe the line is no piece of.
    other = [m for m in DET.signatures if m.probe == "X11Probe"]
    x11 = DET.match(other[0].payload[:-1])[0]
    assert obs(Correlator(), "a", 1.0, CR, following=x11) is None


def test_new_group_when_probe_restarts():
    c = Correlator(window=5, scan_idle=60)
    v1 = obs(c, "a", 1.0, GET)
    obs(c, "a", 1.1, CR)
    v3 = obs(c, "a", 1.2, GET)  # second connection, same probe
    v4 = obs(c, "a", 1.3, OPT)
    assert v3.group == v1.group + 1 and v3.group_lines == 1
    assert v4.group == v3.group + 1
    assert len({v1.scan_id, v3.scan_id, v4.scan_id}) == 1


def test_idle_summary_uses_event_time():
    c = Correlator(window=5, scan_idle=60)
    obs(c, "a", 1000.0, GET)
    obs(c, "a", 1000.1, CR)
    obs(c, "a", 1010.0, OPT)
    obs(c, "b", 1050.0, GET)
    # Wall clock is irrelevant: only the given time counts.
    assert c.expire(1069.0) == []
    out = c.expire(1070.0)
    assert len(out) == 1
    s = out[0]
    assert s["source"] == "a" and s["first_seen"] == 1000.0 and s["last_seen"] == 1010.0
    assert s["probes"] == {"GetRequest": 2, "HTTPOptions": 1} and s["lines"] == 3
    assert s["scanner"] == "nmap" and s["scanners"] == ["nmap"]
    assert len(c) == 1
    assert [x["source"] for x in c.expire(1110.0)] == ["b"]


def test_scan_id_stable_on_replay_and_new_after_idle():
    def run():
        c = Correlator(window=5, scan_idle=60)
        v1 = obs(c, "a", 500.0, GET)
        v2 = obs(c, "a", 700.0, GET)  # silent for 200 s: a new scan
        return c, v1, v2
    c, v1, v2 = run()
    _, w1, w2 = run()
    assert (v1.scan_id, v2.scan_id) == (w1.scan_id, w2.scan_id)
    assert v1.scan_id != v2.scan_id
    ended = c.expire(0.0)  # the first scan ended when the second began
    assert [e["scan_id"] for e in ended] == [v1.scan_id]


def test_eviction_is_bounded_and_counted():
    m = Metrics()
    c = Correlator(window=5, scan_idle=60, max_sources=3, metrics=m)
    for i in range(10):
        obs(c, f"10.0.0.{i}", 1.0 + i, GET)
        assert len(c) <= 3
    assert m.get("correlation_evicted") == 7
    # Evicted scans still produce summaries: nothing disappears silently.
    ended = c.expire(2.0)
    assert sorted(e["source"] for e in ended) == [f"10.0.0.{i}" for i in range(7)]
    # LRU: touching a source keeps it.
    c2 = Correlator(window=5, scan_idle=60, max_sources=2, metrics=m)
    obs(c2, "x", 1.0, GET)
    obs(c2, "y", 1.1, GET)
    obs(c2, "x", 1.2, GET)
    obs(c2, "z", 1.3, GET)
    assert [e["source"] for e in c2.expire(0.0)] == ["y"]


def test_flush_ends_everything():
    c = Correlator()
    obs(c, "a", 1.0, GET)
    obs(c, "b", 1.0, GET)
    assert sorted(s["source"] for s in c.flush()) == ["a", "b"] and len(c) == 0


def test_whole_probe_line_tagged_during_a_scan_of_its_scanner():
    det = Detector([_sig("Help", b"HELP\r\n"), _sig("GetRequest", b"GET / HTTP/1.0\r\n\r\n"),
                    _sig("HTTPOptions", b"OPTIONS / HTTP/1.0\r\n\r\n")])
    help_m = det.match(b"HELP\r")
    assert help_m and all(m.ambiguous for m in help_m)
    c = Correlator(window=5, scan_idle=60)
    # No scan yet: a lone HELP line is nothing.
    assert c.observe("a", 1.0, help_m, whole=help_m) is None
    c.observe("a", 2.0, det.match(b"GET / HTTP/1.0\r"))
    assert c.observe("a", 10.0, help_m, whole=help_m) is None  # one probe is not yet a scan
    c.observe("a", 12.0, det.match(b"OPTIONS / HTTP/1.0\r"))
    v = c.observe("a", 20.0, help_m, whole=help_m)
    assert v is not None and v.via == "scan" and v.match.signature.probe == "Help"
    assert 0.5 <= v.confidence < 0.9
    # Another source, or the same one after the scan went idle: nothing.
    assert c.observe("b", 20.0, help_m, whole=help_m) is None
    assert c.observe("a", 200.0, help_m, whole=help_m) is None


def test_line_after_a_sender_less_request_line_inherits_it_soon_after_only():
    # 'GET / HTTP/1.0#015' logged with HOSTNAME GET names no sender; its CR,
    # in the next batch, names 10.0.0.9
    c = Correlator(window=5, scan_idle=60)
    assert obs(c, None, 100.0, GET) is not None
    v = obs(c, "10.0.0.9", 100.4, CR)
    assert v is not None and v.inherited and v.via == "context"
    assert (v.match.signature.probe, v.match.fragment) == ("GetRequest", 1)
    c2 = Correlator(window=5, scan_idle=60)
    obs(c2, None, 100.0, GET)
    assert obs(c2, "10.0.0.9", 102.5, CR) is None  # too late to be the same connection
    assert obs(c2, "10.0.0.9", 102.6, b"HELP\r") is None  # not a piece of that payload
