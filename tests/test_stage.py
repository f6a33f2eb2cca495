"""The processing stage: packed entries in, OutChunks out, with detection.

Records are shaped like rsyslog output carried by a forwarder: the logged
line (escaped by ``probetag.decode.escape``, as rsyslog does) in ``message``
and the sender in ``source_address``.
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probetag._config import config_from_mapping
from probetag._metrics import Metrics
from probetag._stage import Processor, event_time, pack_entry, unpacker_for
from probetag.decode import escape

BASE = {"detect": {"fields": ["message"], "source_fields": ["source_address"]}}


def make(extra: dict | None = None, metrics: Metrics | None = None) -> Processor:
    cfg = dict(BASE)
    for k, v in (extra or {}).items():
        cfg[k] = {**cfg.get(k, {}), **v}
    return Processor(config_from_mapping(cfg), metrics or Metrics())


def line(raw: bytes) -> str:
    """A probe line as rsyslog logs it (default #ooo escaping), as a str."""
    return escape(raw, "rsyslog").decode("utf-8", "surrogateescape")


def rec(msg: str, src: str = "192.0.2.7", **more) -> dict:
    return {"host": "web1", "source_address": src, "message": msg, **more}


def et(sec: int, nsec: int = 0) -> msgpack.ExtType:
    return event_time(sec, nsec)


def split(data: bytes) -> list[bytes]:
    up = unpacker_for(data)
    out, start = [], 0
    for _ in up:
        end = up.tell()
        out.append(data[start:end])
        start = end
    assert start == len(data)
    return out


def decode_all(data: bytes) -> list:
    return list(unpacker_for(data))


BENIGN = [
    rec("Accepted publickey for root from 10.0.0.5 port 50122 ssh2"),
    rec('10.0.0.1 - - [27/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 612'),
    rec("key=value#011user=alice#011ok"),
    rec("the sequence #015 is how rsyslog writes a carriage return"),
    rec("\u00e9v\u00e9nement enregistr\u00e9 \u2014 caf\u00e9"),
    rec('{"level":"info","msg":"GET / HTTP/1.0"}'),
    {"log": "plain fluent-bit record", "stream": "stdout"},
    {"message": "bytes \udcff\udcfe not utf-8"},  # surrogateescape: raw invalid UTF-8
    {"message": b"bin \x00\x01 field", "n": 3, "f": 1.5, "nested": {"a": [1, 2]}},
]


def benign_chunk(times=None) -> bytes:
    times = times or [et(1_800_000_000, 5), 1_800_000_001, et(1_800_000_002, 999_999_999)]
    return b"".join(pack_entry(times[i % len(times)], r) for i, r in enumerate(BENIGN))


# -- pass-through -----------------------------------------------------------------

def test_non_matching_records_leave_byte_identical():
    m = Metrics()
    p = make(metrics=m)
    data = benign_chunk()
    res = p.process("syslog", data)
    assert [c.tag for c in res.chunks] == ["syslog"]
    assert res.chunks[0].entries == data
    assert res.chunks[0].count == len(BENIGN) == res.passed
    assert (res.tagged, res.dropped, res.rejected) == (0, 0, 0)
    assert m.get("records_in") == m.get("records_passed") == len(BENIGN)


def test_probe_record_gets_probe_map_and_others_untouched():
    p = make()
    probe = pack_entry(et(1_800_000_010), rec(line(b"GET / HTTP/1.0\r"), src="198.51.100.4"))
    data = benign_chunk() + probe + benign_chunk()
    res = p.process("syslog", data)
    assert (res.passed, res.tagged) == (2 * len(BENIGN), 1)
    out = split(res.chunks[0].entries)
    ins = split(data)
    assert len(out) == len(ins)
    changed = [i for i, (a, b) in enumerate(zip(ins, out)) if a != b]
    assert changed == [len(BENIGN)]
    t, r = msgpack.unpackb(out[len(BENIGN)], raw=False)
    pr = r["probe"]
    assert (pr["name"], pr["scanner"], pr["id"]) == ("GetRequest", "nmap", "nmap-tcp-GetRequest")
    assert pr["confidence"] >= 0.5 and pr["fragment"] == 0 and pr["transport"] == "tcp"
    assert pr["payload"] == "GET / HTTP/1.0\\r"
    assert pr["source"] == "198.51.100.4" and pr["scan_id"]
    assert "shape" in pr and pr["lossy"] is False
    assert t == et(1_800_000_010)
    # Every other field of the record is unchanged.
    assert {k: v for k, v in r.items() if k != "probe"} == rec(line(b"GET / HTTP/1.0\r"), src="198.51.100.4")


def test_ambiguous_cr_line_follows_its_source():
    p = make()
    parts = [
        pack_entry(et(100), rec(line(b"\r"), src="198.51.100.4")),  # before its context: no
        pack_entry(et(100), rec(line(b"GET / HTTP/1.0\r"), src="198.51.100.4")),
        pack_entry(et(100), rec(line(b"\r"), src="203.0.113.9")),  # a Windows forwarder elsewhere
        pack_entry(et(101), rec(line(b"\r"), src="198.51.100.4")),
    ]
    res = p.process("syslog", b"".join(parts))
    assert (res.tagged, res.passed) == (2, 2)
    out = decode_all(res.chunks[0].entries)
    assert [r.get("probe", {}).get("name") for _, r in out] == [None, "GetRequest", None, "GetRequest"]
    assert out[3][1]["probe"]["inherited"] is True and out[1][1]["probe"]["inherited"] is False
    assert out[3][1]["probe"]["scan_id"] == out[1][1]["probe"]["scan_id"]
    ins = split(b"".join(parts))
    outs = split(res.chunks[0].entries)
    assert (outs[0], outs[2]) == (ins[0], ins[2])
    # GetRequest's payload logs two lines and both were seen: a third CR
    # from that source is not part of it.
    res2 = p.process("syslog", pack_entry(et(102), rec(line(b"\r"), src="198.51.100.4")))
    assert res2.tagged == 0
    # Next chunk: the context carries over (look-behind across chunks).
    q = make()
    assert q.process("syslog", pack_entry(et(200), rec(line(b"GET / HTTP/1.0\r"), src="198.51.100.4"))).tagged == 1
    res3 = q.process("syslog", pack_entry(et(201), rec(line(b"\r"), src="198.51.100.4")))
    assert res3.tagged == 1


def test_ambiguous_first_line_tagged_by_lookahead_in_chunk():
    from probetag.detect import Detector, Signature
    sig = Signature(id="t-help-version", probe="HelpThenVersion", scanner="test", transport="tcp",
                    payload=b"HELP\r\nVERSION-QUERY 1.2\r\n", match="payload", confidence=None,
                    ports=(), provenance="test", notes="", source="test")
    p = Processor(config_from_mapping(BASE), Metrics(), detector=Detector([sig]))
    first = pack_entry(et(100), rec(line(b"HELP\r"), src="198.51.100.4"))
    second = pack_entry(et(100), rec(line(b"VERSION-QUERY 1.2\r"), src="198.51.100.4"))
    res = p.process("syslog", first + second)
    out = decode_all(res.chunks[0].entries)
    assert [r["probe"]["fragment"] for _, r in out] == [0, 1]
    assert out[0][1]["probe"]["inherited"] is True
    # Split over two chunks, the first line cannot wait for the second.
    p2 = Processor(config_from_mapping(BASE), Metrics(), detector=Detector([sig]))
    assert p2.process("syslog", first).tagged == 0
    assert p2.process("syslog", second).tagged == 1


def test_literal_hash_015_in_prose_is_not_tagged():
    p = make()
    data = pack_entry(et(5), rec("operator typed #015 into the form"))
    res = p.process("syslog", data)
    assert res.passed == 1 and res.chunks[0].entries == data


# -- validation, normalisation, accounting -------------------------------------------

def test_nested_time_entries_normalised():
    p = make()
    nested = msgpack.packb([[et(1_800_000_000, 7), {"k": "v"}], {"message": "hello"}], use_bin_type=True)
    res = p.process("t", nested)
    assert res.passed == 1
    (t, r), = decode_all(res.chunks[0].entries)
    assert t == et(1_800_000_000, 7) and r == {"message": "hello"}


def test_nested_time_probe_record_tagged():
    p = make()
    nested = msgpack.packb([[et(1_800_000_000), {}], rec(line(b"OPTIONS / RTSP/1.0\r"))], use_bin_type=True)
    res = p.process("t", nested)
    assert res.tagged == 1
    (t, r), = decode_all(res.chunks[0].entries)
    assert t == et(1_800_000_000) and r["probe"]["name"] == "RTSPRequest"


def test_rejects_markers_and_invariant():
    m = Metrics()
    p = make(metrics=m)
    good = pack_entry(1_800_000_000, {"message": "ok"})
    parts = [
        good,
        msgpack.packb([1, 2, 3]),  # not a pair
        msgpack.packb([1_800_000_000, "not a map"]),
        msgpack.packb([-5, {}]),  # time out of range
        msgpack.packb([msgpack.ExtType(0, b"\0\0\0\1\xff\xff\xff\xff"), {}]),  # nsec >= 1e9
        msgpack.packb([msgpack.ExtType(0, b"\xff\xff\xff\xff\0\0\0\0"), {}]),  # group marker
        pack_entry(0, {"message": "time zero -> now"}),
        pack_entry(1.5, {"message": "float time"}),
        pack_entry(et(1_800_000_000), rec(line(b"GET / HTTP/1.0\r"))),
        good,
    ]
    data = b"".join(parts) + b"\x92\xce\x00"  # truncated tail
    res = p.process("t", data)
    assert res.reject_reasons == {"entry_not_pair": 1, "record_not_map": 1, "time_out_of_range": 1,
                                  "bad_event_time": 1, "entries_truncated": 1}
    assert res.markers == 1
    assert (res.passed, res.tagged, res.rejected) == (4, 1, 5)
    assert res.chunks[0].count == 5
    out = split(res.chunks[0].entries)
    assert out[0] == good and out[-1] == good
    assert len(decode_all(res.chunks[0].entries)) == 5
    assert m.get("records_in") == sum(m.get(f"records_{o}") for o in ("passed", "tagged", "dropped", "rejected"))
    assert m.get("records_rejected", reason="entries_truncated") == 1
    assert m.get("group_markers") == 1


def test_undecodable_garbage_counted():
    p = make()
    res = p.process("t", pack_entry(1_800_000_000, {"a": 1}) + b"\xc1\xc1\xc1")
    assert res.passed == 1 and res.reject_reasons == {"entries_undecodable": 1}


# -- actions ---------------------------------------------------------------------------

def test_retag_and_drop_via_actions():
    p = make({"actions": {"rules": [
        {"action": "drop", "probe": ["HTTPOptions"]},
        {"action": "retag", "probe": ["GetRequest"], "tag": "security.${probe}"},
    ]}})
    parts = [
        pack_entry(et(1), {"message": "benign"}),
        pack_entry(et(2), rec(line(b"GET / HTTP/1.0\r"))),
        pack_entry(et(3), rec(line(b"OPTIONS / HTTP/1.0\r"))),
        pack_entry(et(4), rec(line(b"OPTIONS / RTSP/1.0\r"))),
    ]
    res = p.process("syslog", b"".join(parts))
    assert (res.passed, res.tagged, res.dropped) == (1, 2, 1)
    tags = [(c.tag, c.count) for c in res.chunks]
    assert tags == [("syslog", 2), ("security.GetRequest", 1)]
    main = decode_all(res.chunks[0].entries)
    assert main[0][1] == {"message": "benign"} and main[1][1]["probe"]["name"] == "RTSPRequest"
    (t, r), = decode_all(res.chunks[1].entries)
    assert r["probe"]["name"] == "GetRequest" and t == et(2)


def test_allowlisted_source_in_pass_mode_is_untouched():
    p = make({"detect": {**BASE["detect"], "allowlist": {"sources": ["198.51.100.0/24"], "mode": "pass"}}})
    data = pack_entry(et(1), rec(line(b"GET / HTTP/1.0\r"), src="198.51.100.4"))
    res = p.process("syslog", data)
    assert res.passed == 1 and res.tagged == 0 and res.chunks[0].entries == data


def test_detection_disabled_passes_everything():
    p = make({"detect": {**BASE["detect"], "enabled": False}})
    data = pack_entry(et(1), rec(line(b"GET / HTTP/1.0\r")))
    res = p.process("syslog", data)
    assert res.passed == 1 and res.chunks[0].entries == data


def test_expire_emits_scan_summary():
    m = Metrics()
    p = make({"actions": {"summaries": True}}, metrics=m)
    p.process("syslog", b"".join([
        pack_entry(et(1000), rec(line(b"GET / HTTP/1.0\r"), src="198.51.100.4")),
        pack_entry(et(1000), rec(line(b"\r"), src="198.51.100.4")),
        pack_entry(et(1001), rec(line(b"OPTIONS / HTTP/1.0\r"), src="198.51.100.4")),
    ]))
    assert p.expire(1030.0) == []
    chunks = p.expire(1061.0 + 60)
    assert len(chunks) == 1 and chunks[0].tag == "probetag.summary" and chunks[0].count == 1
    (t, r), = decode_all(chunks[0].entries)
    s = r["probe_summary"]
    assert s["source"] == "198.51.100.4" and s["lines"] == 3
    assert s["probes"] == {"GetRequest": 2, "HTTPOptions": 1}
    assert t == et(1001)
    assert m.get("scan_summaries") == 1


# -- properties ---------------------------------------------------------------------------

PROBE_LINES = [b"GET / HTTP/1.0\r", b"OPTIONS / HTTP/1.0\r", b"\r", b"OPTIONS / RTSP/1.0\r",
               b"l\x00\x0b\x00\x00\x00\x00\x00\x00\x00\x00"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 8), st.sampled_from(["a", "b"]),
                          st.integers(1, 4_000_000_000)), min_size=1, max_size=30))
def test_untagged_entries_byte_identical_and_invariant(spec):
    m = Metrics()
    p = make(metrics=m)
    parts = []
    for is_probe, k, src, t in spec:
        if is_probe:
            r = rec(line(PROBE_LINES[k % len(PROBE_LINES)]), src=src)
        else:
            r = BENIGN[k % len(BENIGN)]
        parts.append(pack_entry(t, r))
    res = p.process("x", b"".join(parts))
    assert res.total == len(spec)
    out = split(res.chunks[0].entries)
    assert len(out) == len(parts)
    for a, b in zip(parts, out):
        rb = msgpack.unpackb(b, raw=False, unicode_errors="surrogateescape", strict_map_key=False)[1]
        if "probe" not in rb or rb is None:
            assert a == b
        else:
            assert rb["probe"]["name"]
    assert m.get("records_in") == m.get("records_passed") + m.get("records_tagged")


# -- the fast entry check agrees with the full path ---------------------------------------

from probetag._stage import _FAST_ENTRY, is_group_marker, normalize_time  # noqa: E402

_times = st.one_of(
    st.integers(-2**40, 2**40),
    st.sampled_from([0, 2**32 - 1, 2**32, 2**64 - 1, -1]),
    st.floats(allow_nan=True),
    st.none(),
    st.text(max_size=3),
    st.builds(lambda s, ns: msgpack.ExtType(0, s.to_bytes(4, "big") + ns.to_bytes(4, "big")),
              st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0xFFFFFFFF, 0xFFFFFFFE])),
              st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 999_999_999, 1_000_000_000]))),
    st.builds(lambda c, d: msgpack.ExtType(c, d), st.integers(0, 5), st.binary(max_size=10)),
)
_ints = st.integers(-2**63, 2**63 - 1)
_records = st.one_of(st.dictionaries(st.text(max_size=3), _ints, max_size=3),
                     st.dictionaries(st.text(max_size=2), _ints, min_size=16, max_size=20),
                     _ints, st.text(max_size=4), st.lists(_ints, max_size=2), st.none())


@settings(max_examples=400, deadline=None)
@given(t=_times, r=_records, nested=st.booleans())
def test_fast_entry_check_only_vouches_for_entries_passed_unchanged(t, r, nested):
    raw = msgpack.packb([[t, {}] if nested else t, r], use_bin_type=True)
    if _FAST_ENTRY.match(raw) is None:
        return
    # The full path must pass this entry as is: valid time, no marker, a map.
    assert not nested and isinstance(r, dict)
    assert not is_group_marker(t)
    nt, reason = normalize_time(t)
    assert reason is None and nt is t


@pytest.mark.parametrize("t", [1, 127, 1_800_000_000, et(1_800_000_000, 999_999_999), et(0xFFFFFFFD, 0)])
def test_fast_entry_check_accepts_ordinary_entries(t):
    assert _FAST_ENTRY.match(pack_entry(t, {"a": 1})) is not None
    assert _FAST_ENTRY.match(pack_entry(t, {str(i): i for i in range(20)})) is not None


# -- lines several probes share -----------------------------------------------------------

def _names(res):
    return [r.get("probe", {}).get("name") for _, r in decode_all(res.chunks[0].entries)]


def test_shared_first_line_resolved_by_following_lines():
    # nmap's GetRequest is "GET / HTTP/1.0\r\n\r\n": its line names nmap
    # when the bare CR that ends it follows, or when nothing follows yet.
    p = make()
    res = p.process("s", b"".join(pack_entry(et(10), rec(line(x), src="198.51.100.2"))
                                   for x in (b"GET / HTTP/1.0\r", b"\r")))
    assert _names(res) == ["GetRequest", "GetRequest"]
    res = p.process("s", pack_entry(et(10), rec(line(b"GET / HTTP/1.0\r"), src="198.51.100.3")))
    assert _names(res) == ["GetRequest"]


def test_shared_lines_of_another_client_name_the_protocol_not_a_scanner():
    # masscan's banner request (documented.yaml, observed from masscan
    # 1.3.2): its User-Agent line is its own; the request line is nmap's too,
    # "Accept: */*" curl's and every other client's. They are read as an
    # HTTP request, not as nmap's probe, and the request's User-Agent names
    # the client that sent all its lines.
    from probetag.detect import load_catalogue
    ua = next(s for s in load_catalogue() if s.id == "masscan-user-agent")
    lines = [b"GET / HTTP/1.0\r", b"User-Agent: masscan/1.3 " + ua.payload + b"\r", b"Accept: */*\r", b"\r"]
    p = make()
    res = p.process("s", b"".join(pack_entry(et(10), rec(line(x), src="198.51.100.1")) for x in lines))
    probes = [r.get("probe") for _, r in decode_all(res.chunks[0].entries)]
    assert [x["name"] for x in probes] == ["http-request", "masscan-http-hello", "http-request", "http-request"]
    assert [x["scanner"] for x in probes] == ["masscan"] * 4
    # curl's request: no line of it is masscan's or nmap's, all are curl's
    curl = [b"GET / HTTP/1.1\r", b"Host: 127.0.0.1:8080\r", b"User-Agent: curl/7.88.1\r", b"Accept: */*\r", b"\r"]
    res = p.process("s", b"".join(pack_entry(et(20), rec(line(x), src="198.51.100.9")) for x in curl))
    probes = [r.get("probe") for _, r in decode_all(res.chunks[0].entries)]
    assert [x["name"] for x in probes] == ["http-request"] * 5
    assert [x["scanner"] for x in probes] == ["curl"] * 5


def test_a_request_whose_lines_name_two_clients_names_neither_on_the_others():
    # two clients' requests from one sender in the same second, interleaved
    # by the logger: the lines that name no client stay the protocol's
    p = make()
    lines = [b"GET / HTTP/1.1\r", b"User-Agent: curl/7.88.1\r", b"User-Agent: Go-http-client/1.1\r", b"\r"]
    res = p.process("s", b"".join(pack_entry(et(30), rec(line(x), src="198.51.100.7")) for x in lines))
    probes = [r.get("probe") for _, r in decode_all(res.chunks[0].entries)]
    assert [x["name"] for x in probes] == ["http-request"] * 4
    assert [x["scanner"] for x in probes[:3]] == ["unknown", "curl", "go"]


def test_input_transport_from_record_limits_signatures():
    # rsyslog's inputname says which input a line came in on: a TCP probe's
    # line received over UDP is not that probe.
    p = make()
    tcp = pack_entry(et(1), rec(line(b"GET / HTTP/1.0\r"), src="198.51.100.8", inputname="imtcp"))
    udp = pack_entry(et(1), rec(line(b"GET / HTTP/1.0\r"), src="198.51.100.9", inputname="imudp"))
    res = p.process("s", tcp + udp)
    # over UDP it is still an HTTP request line, but not nmap's probe
    assert _names(res) == ["GetRequest", "http-request"]
    probe = decode_all(res.chunks[0].entries)[1][1]["probe"]
    assert (probe["scanner"], probe["transport"]) == ("unknown", "udp")


def test_expire_defaults_to_event_time_and_flush_ends_all():
    p = make({"actions": {"summaries": True}})
    p.process("syslog", pack_entry(et(5000), rec(line(b"GET / HTTP/1.0\r"), src="198.51.100.4")))
    p.process("syslog", pack_entry(et(5100), rec(line(b"OPTIONS / HTTP/1.0\r"), src="198.51.100.5")))
    # High-water event time 5100: the first source has been idle 100 s.
    chunks = p.expire()
    assert [decode_all(c.entries)[0][1]["probe_summary"]["source"] for c in chunks] == ["198.51.100.4"]
    chunks = p.flush()
    assert [decode_all(c.entries)[0][1]["probe_summary"]["source"] for c in chunks] == ["198.51.100.5"]
    assert p.flush() == []


def test_marker_in_another_field_of_a_parsed_access_log():
    from probetag.detect import load_catalogue
    nikto = next(s for s in load_catalogue() if s.id == "nikto-user-agent")
    p = make()
    r = {"remote": "198.51.100.20", "method": "GET", "path": "/cgi-bin/test.cgi", "code": "404",
         "agent": "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000003)"}
    assert nikto.payload.decode() in r["agent"]
    res = p.process("nginx", pack_entry(et(1), r) + pack_entry(et(1), {"agent": "curl/8.0.1", "path": "/"}))
    out = decode_all(res.chunks[0].entries)
    pr = out[0][1]["probe"]
    assert (pr["id"], pr["kind"], pr["shape"]) == ("nikto-user-agent", "marker", "field:agent")
    assert pr["seen_in"] == "application-log"  # a trace in another daemon's log, not a probe received
    assert "probe" not in out[1][1]


def test_crlf_lines_without_probe_context_are_not_decoded():
    m = Metrics()
    p = make(metrics=m)
    windows = b"".join(pack_entry(et(500 + i), rec(line(b"Service started\r"), src="203.0.113.9"))
                       for i in range(20))
    lone_cr = pack_entry(et(521), rec(line(b"\r"), src="203.0.113.9"))
    res = p.process("syslog", windows + lone_cr)
    assert res.chunks[0].entries == windows + lone_cr and res.passed == 21
    assert m.get("prefilter_skipped_no_context") == 21 and m.get("prefilter_hits") == 0
    # Once a probe context is live, bare-CR lines near it in time are looked
    # at (and the one that continues the probe is tagged); older ones are not.
    p.process("syslog", pack_entry(et(600), rec(line(b"GET / HTTP/1.0\r"), src="198.51.100.4")))
    res = p.process("syslog", windows + pack_entry(et(601), rec(line(b"\r"), src="198.51.100.4")))
    assert res.tagged == 1 and res.passed == 20
    assert m.get("prefilter_hits") == 1 + 1
    assert m.get("prefilter_skipped_no_context") == 21 + 20


ORDINARY = [
    {"host": "web-03", "ident": "sshd", "pid": "812", "message": "Accepted publickey for deploy from 10.1.4.22 port 50122 ssh2"},
    {"host": "web-03", "ident": "CRON", "pid": "9911", "message": "pam_unix(cron:session): session closed for user root"},
    {"hostname": "db-1", "syslogtag": "kernel:", "msg": " eth0: link up, 1000Mbps, full-duplex",
     "fromhost-ip": "127.0.0.1", "rawmsg": "<6>Nov 27 10:00:00 db-1 kernel: eth0: link up, 1000Mbps, full-duplex"},
    {"appname": "app", "hostname": "k8s-node-7", "message": '{"level":"info","ts":"2026-11-27T10:00:00Z","msg":"ok"}',
     "source_ip": "10.0.3.8"},
    {"log": '10.0.0.5 - - [27/Nov/2026:10:00:00 +0000] "POST /api/v1/items HTTP/1.1" 201 88 "-" '
            '"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0"'},
    {"message": "connect from localhost[127.0.0.1] to 0.0.0.0:25 (HTTP/1.0 proxy disabled)"},
    {"message": "user=alice action=login result=ok src=192.0.2.10 agent=Mozilla/5.0"},
]


def test_ordinary_logs_do_not_reach_the_decoder():
    # The hot path's premise: ordinary records hit none of the prefilter's
    # literals, whatever the catalogue holds (a literal like "HTTP/1.1" or
    # "Mozilla/5.0" would send every access log through the slow path).
    m = Metrics()
    p = make(metrics=m)
    data = b"".join(pack_entry(et(1_800_000_000 + i), r) for i, r in enumerate(ORDINARY * 20))
    res = p.process("syslog", data)
    assert res.passed == len(ORDINARY) * 20 and res.chunks[0].entries == data
    assert m.get("prefilter_hits") == 0


def test_client_hello_pieces_across_chunks_get_its_fingerprint():
    # A ClientHello cut at its 0x0a bytes (extension 0x000a, cipher 0xc00a):
    # its last piece is logged when the client gives up, seconds later, and
    # arrives in a later chunk. Every piece is tagged; the pieces of the
    # chunk that completes it carry its JA3/JA4.
    from tests.detect.test_clients import SPEC_CIPHERS, SPEC_EXTS, SPEC_SIGS, hello, rsyslog_tcp_pieces

    raw = hello([0xC00A] + SPEC_CIPHERS, SPEC_EXTS, groups=(0x001D, 0x0017), sig_algs=SPEC_SIGS)
    pieces = rsyslog_tcp_pieces(raw)
    assert len(pieces) >= 3
    p = make()
    first = p.process("s", b"".join(pack_entry(et(100), rec(line(x), src="198.51.100.40")) for x in pieces[:-1]))
    last = p.process("s", pack_entry(et(103), rec(line(pieces[-1]), src="198.51.100.40")))
    probes = [r.get("probe") for _, r in decode_all(first.chunks[0].entries)]
    probes += [r.get("probe") for _, r in decode_all(last.chunks[0].entries)]
    assert all(x is not None and x["name"] == "tls-client-hello" and x["scanner"] == "unknown" for x in probes)
    assert probes[-1]["ja4"].startswith("t13d1616h2_")  # 16 ciphers, 16 extensions, ALPN h2
    assert "ja4" not in probes[0] and probes[0]["ja4_b"] == probes[-1]["ja4_b"]
    assert probes[-1]["seen_in"] == "syslog-listener"


def test_a_request_line_of_no_sender_is_no_piece_of_another_clients_hello():
    # Source A's ClientHello, cut at its LF bytes: its first piece, then,
    # the same second, another client's request line with no sender (a file
    # line whose HOSTNAME was the payload's first word), then A's next
    # pieces. A piece of a hello is binary (a control byte): the request
    # line is not counted as one, so A's pieces still add up to the hello
    # and the last one carries its fingerprint.
    from tests.detect.test_clients import SPEC_CIPHERS, SPEC_EXTS, SPEC_SIGS, hello, rsyslog_tcp_pieces

    raw = hello([0xC00A] + SPEC_CIPHERS, SPEC_EXTS, groups=(0x001D, 0x0017), sig_algs=SPEC_SIGS)
    pieces = rsyslog_tcp_pieces(raw)
    assert len(pieces) == 3 and len(pieces[1]) > 40  # (room for the request line after the first)
    a = "198.51.100.40"
    senderless = {"message": "Dec  5 13:00:55 OPTIONS / HTTP/1.0#015"}  # Fluentd in_tail, none parser
    p = make()
    first = p.process("s", pack_entry(et(100), rec(line(pieces[0]), src=a))
                      + pack_entry(et(100, 200_000_000), senderless)
                      + pack_entry(et(100, 300_000_000), rec(line(pieces[1]), src=a)))
    last = p.process("s", pack_entry(et(103), rec(line(pieces[2]), src=a)))
    got = [r for _, r in decode_all(first.chunks[0].entries)]
    assert got[1] is not None and (got[1].get("probe") or {}).get("name") != "tls-client-hello"
    probes = [got[0].get("probe"), got[2].get("probe")] + [r.get("probe") for _, r in decode_all(last.chunks[0].entries)]
    assert all(x is not None and x["name"] == "tls-client-hello" for x in probes), probes
    assert probes[-1]["ja4"].startswith("t13d1616h2_")


def test_a_hit_whose_record_does_not_decode_is_rejected_alone():
    # The chunk's fast hits are read in one pass; when one of them does not
    # decode (here: made to raise as msgpack does on a record it refuses),
    # the chunk goes through the entry loop, which rejects that entry alone
    # and tags the other hits.
    class Refusing(Processor):
        def _read_fast(self, entries, starts, i):
            if i == 1:
                raise ValueError("refused")
            return super()._read_fast(entries, starts, i)

    m = Metrics()
    p = Refusing(config_from_mapping(BASE), m)
    hits = [rec(line(b"GET / HTTP/1.0\r")), rec(line(b"OPTIONS / HTTP/1.0\r")), rec(line(b"\x16\x03\x01\x00\xa5\x01"))]
    data = b"".join(pack_entry(et(1_800_000_000 + k), r) for k, r in enumerate(hits + BENIGN))
    res = p.process("syslog", data)
    assert res.rejected == 1 and res.reject_reasons == {"entry_undecodable": 1}
    assert res.tagged + res.passed == len(hits) + len(BENIGN) - 1
    out = [r for _, r in decode_all(b"".join(c.entries for c in res.chunks))]
    assert len(out) == len(hits) + len(BENIGN) - 1 and "OPTIONS" not in repr(out)
    assert out[0].get("probe") is not None
