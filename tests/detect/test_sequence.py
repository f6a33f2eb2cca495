"""Lines named by their place in a scan (``detect._sequence``).

Unit tests of the scan order and the pass, then real nmap scans as rsyslog
wrote them (``tests/fixtures/corpus-dev``, labelled from a packet capture)
through the real ``probetag explain``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from probetag.detect import Detector, load_catalogue
from probetag.detect._catalogue import CatalogueError
from probetag.detect._sequence import SequenceNamer, load_orders

FX = Path(__file__).resolve().parent.parent / "fixtures" / "corpus-dev"
CAT = load_catalogue()
BY_ID = {s.id: s for s in CAT}
DET = Detector(CAT)
ORDER = load_orders()


def test_bundled_order_names_catalogue_probes_only():
    names = {(s.scanner, s.transport, s.probe) for s in CAT}
    assert ORDER.positions, "no sequence file loaded"
    for (scanner, transport), order in ORDER.positions.items():
        assert len(order) > 20
        for probe in order:
            assert (scanner, transport, probe) in names, probe
    # nmap's first TCP probes, as its trace showed them
    tcp = ORDER.positions[("nmap", "tcp")]
    assert tcp["GenericLines"] < tcp["GetRequest"] < tcp["HTTPOptions"]


def test_bad_sequence_file_names_the_file(tmp_path: Path):
    bad = tmp_path / "x.yaml"
    bad.write_text("- scanner: nmap\n  transport: tcp\n  provenance: p\n  order: 7\n")
    with pytest.raises(CatalogueError) as e:
        load_orders([bad])
    assert "order" in str(e.value) and e.value.file == str(bad)


def _line(t, src, core, matches=(), lossy=False):
    return (t, src, core, matches, lossy, False)


def _named(probe, frag=0):
    return (BY_ID[f"nmap-tcp-{probe}"], frag)


def test_one_cr_before_the_first_probe_is_not_generic_lines():
    namer = SequenceNamer(DET, ORDER)
    lines = [_line(10.0, "a", b"\r", DET.match(b"\r")), _line(15.0, "a", b"GET / HTTP/1.0\r")]
    got = namer.name(lines, [None, _named("GetRequest")], lambda s: None)
    assert got[0] is None


def test_two_crs_before_the_first_probe_are_generic_lines():
    namer = SequenceNamer(DET, ORDER)
    cr = DET.match(b"\r")
    lines = [_line(10.0, "a", b"\r", cr), _line(10.0, "a", b"\r", cr), _line(15.0, "a", b"GET / HTTP/1.0\r")]
    got = namer.name(lines, [None, None, _named("GetRequest")], lambda s: None)
    assert [g and (g[0].probe, g[1]) for g in got[:2]] == [("GenericLines", 0), ("GenericLines", 1)]


def test_two_crs_then_another_programs_line_from_the_same_relay():
    # corpus-dev mixed run, rsyslog JSON: the sender address of the scan is
    # also the relay of a benign sshd line 0.7 s after GenericLines' CRs
    namer = SequenceNamer(DET, ORDER)
    cr = DET.match(b"\r")
    lines = [_line(10.0, "a", b"\r", cr), _line(10.0, "a", b"\r", cr),
             _line(10.7, "a", b"<38>1 2026-12-05T13:13:34+00:00 vm sshd 3105 - - Unable to negotiate"),
             _line(15.0, "a", b"GET / HTTP/1.0\r")]
    got = namer.name(lines, [None, None, None, _named("GetRequest")], lambda s: None)
    assert [g and (g[0].probe, g[1]) for g in got[:3]] == [("GenericLines", 0), ("GenericLines", 1), None]
    # one CR and the other line: still not GenericLines
    got = namer.name([lines[0], lines[2], lines[3]], [None, None, _named("GetRequest")], lambda s: None)
    assert got[0] is None


def test_a_bare_word_between_two_probes_takes_the_one_probe_that_fits():
    # nmap's HELP4STOMP sends "HELP\n\n\0": rsyslog takes HELP for a HOSTNAME
    namer = SequenceNamer(DET, ORDER)
    tcp = ORDER.positions[("nmap", "tcp")]
    before = max((p for p in tcp if tcp[p] < tcp["HELP4STOMP"]), key=tcp.get)
    after = min((p for p in tcp if tcp[p] > tcp["HELP4STOMP"]), key=tcp.get)
    lines = [_line(0.0, "a", b"x"), _line(5.0, None, b"HELP"), _line(10.0, "a", b"y")]
    got = namer.name(lines, [_named(before), None, _named(after)], lambda s: None)
    assert got[1] is not None and got[1][0].probe == "HELP4STOMP" and got[1][2] == "a"
    # the same word with no scan around it stays untagged
    assert namer.name([_line(5.0, None, b"HELP")], [None], lambda s: None) == [None]


def test_the_last_probe_before_the_order_starts_again():
    # insteonPLM (#002`) is nmap's last TCP probe; the line after it is an
    # NSE script's GetRequest, which starts the order again: no upper bound.
    namer = SequenceNamer(DET, ORDER)
    tcp = ORDER.positions[("nmap", "tcp")]
    last = max(tcp, key=tcp.get)
    assert last == "insteonPLM"
    before = max((p for p in tcp if tcp[p] < tcp[last]), key=tcp.get)
    core = b"\x02`"
    lines = [_line(0.0, "a", b"x"), _line(5.0, "a", core, DET.match(core)), _line(5.0, "a", b"GET / HTTP/1.0\r")]
    got = namer.name(lines, [_named(before), None, _named("GetRequest")], lambda s: None)
    assert got[1] is not None and got[1][0].probe == "insteonPLM"
    # the same next anchor at the same place as the previous one bounds all
    lines[2] = _line(5.0, "a", b"y")
    assert namer.name(lines, [_named(before), None, _named(before)], lambda s: None)[1] is None


def test_another_source_does_not_lend_its_scan():
    namer = SequenceNamer(DET, ORDER)
    tcp = ORDER.positions[("nmap", "tcp")]
    before = max((p for p in tcp if tcp[p] < tcp["HELP4STOMP"]), key=tcp.get)
    lines = [_line(0.0, "a", b"x"), _line(5.0, "b", b"HELP")]
    assert namer.name(lines, [_named(before), None], lambda s: None)[1] is None


# -- real scans -------------------------------------------------------------

LABELS = [json.loads(x) for x in (FX / "labels.jsonl").read_text().splitlines() if x]


def _explain(path: Path) -> list[dict | None]:
    p = subprocess.run([sys.executable, "-m", "probetag", "explain", "--format", "jsonl", "--jobs", "1",
                        str(path)], capture_output=True, timeout=300)
    assert p.returncode in (0, 1), p.stderr.decode(errors="replace")
    return [json.loads(x)["probe"] for x in p.stdout.splitlines()]


def _score(run: str, fmt: str) -> tuple[int, int, int, list]:
    labs = [x for x in LABELS if x["run"] == run and x["format"] == fmt]
    probes = _explain(FX / run / f"{fmt}.log")
    assert len(probes) == len(labs)
    lines = named = benign_tagged = 0
    wrong = []
    for lab, pr in zip(labs, probes):
        if lab["label"] == "benign":
            # a scanner's trace quoted in another daemon's line may be
            # tagged, as such; nothing else
            benign_tagged += pr is not None and pr.get("seen_in") != "application-log"
            continue
        lines += 1
        if pr is None:
            continue
        if pr["name"] == lab["label"] or lab["label"] == "nse:" + pr["name"] or (
                lab["label"] == "nse:skypev2-version" and pr["name"] == "GetRequest"):
            named += 1
        else:
            wrong.append((lab["line"], lab["label"], pr["name"], pr["via"]))
    return lines, named, benign_tagged, wrong


@pytest.mark.parametrize("run,fmt,floor", [
    ("nmap_sV_all_tcp", "traditional", 0.99),
    ("nmap_sU_sV_int9", "traditional", 0.95),
    ("noescape_nmap_sV_all", "traditional", 0.98),
    ("mixed_nmap_sV_benign", "traditional", 0.97),
    ("nmap_sV_all_tcp", "proto23", 0.90),
])
def test_real_scans_are_named(run: str, fmt: str, floor: float):
    lines, named, benign_tagged, wrong = _score(run, fmt)
    assert benign_tagged == 0
    assert named / lines >= floor, (named, lines)
    if fmt == "traditional":
        assert wrong == []


# -- records a real Fluentd sent ---------------------------------------------

def _fluentd_records(name: str) -> list[dict]:
    return [json.loads(x) for x in (FX / name).read_text().splitlines() if x]


def _value(v, typ):
    import base64
    raw = base64.b64decode(v["b64"]) if isinstance(v, dict) else v.encode()
    return raw if typ.startswith("bin") else raw.decode("utf-8", "surrogateescape")


def _through_stage(rows: list[dict]) -> list[dict | None]:
    import msgpack

    from probetag._config import config_from_mapping
    from probetag._metrics import Metrics
    from probetag._stage import Processor, event_time, unpacker_for

    proc = Processor(config_from_mapping({}), Metrics())
    out: list[dict | None] = []
    frames: dict[int, list[dict]] = {}
    for r in rows:
        frames.setdefault(r["capture"]["frame"], []).append(r)
    for _, chunk in sorted(frames.items()):
        data = b"".join(msgpack.packb([event_time(*r["time"]), {k: _value(v, r["value_types"][k])
                                                                for k, v in r["record"].items()}],
                                      use_bin_type=True) for r in chunk)
        res = proc.process(chunk[0]["tag"], data)
        assert res.rejected == 0
        got = [rec.get("probe") for ch in res.chunks for _, rec in unpacker_for(ch.entries)]
        assert len(got) == len(chunk)
        out.extend(got)
    return out


def test_in_syslog_records_with_the_tag_cut_at_32_bytes_are_named():
    rows = _fluentd_records("fluentd_in_syslog_nmap_sV_all_tcp.jsonl")
    probes = _through_stage(rows)
    cut = [(r, p) for r, p in zip(rows, probes) if r["relay_tag_truncated"] and r["label"] != "benign"]
    assert len(cut) > 40
    named = [(r, p) for r, p in cut if p is not None and p["name"] == r["label"]]
    assert len(named) >= 0.9 * len(cut), [(r["source_line"], r["label"], p and p["name"]) for r, p in cut]
    # the cut front of a binary line is a prefix of the probe's line
    ssl = [p for r, p in cut if r["label"] == "SSLSessionReq" and r["record"]["ident"].startswith("#026")]
    assert ssl and all(p is not None and p["name"] == "SSLSessionReq" and p.get("truncated") for p in ssl)
    # ``/nice%20ports%2C/Tri%6Eity.txt%2`` lost its ``e``: still FourOhFourRequest
    four = [p for r, p in cut if r["label"] == "FourOhFourRequest" and r["record"]["host"] == "GET"]
    assert four and all(p is not None and p["name"] == "FourOhFourRequest" for p in four)
    # nothing benign tagged, no other scanner named
    for r, p in zip(rows, probes):
        if r["label"] == "benign":
            assert p is None, r
        elif p is not None:
            assert p["scanner"] == "nmap"


def test_a_payload_word_in_the_hostname_slot_is_not_the_source():
    # ``show info#015`` (nmap's tarantool probe): rsyslog took ``show`` for a
    # HOSTNAME; it is the payload's first word, not who sent it
    probes = _explain(FX / "nmap_sV_all_tcp" / "traditional.log")
    lines = (FX / "nmap_sV_all_tcp" / "traditional.log").read_bytes().split(b"\n")
    k = next(i for i, ln in enumerate(lines) if b" show info#015" in ln)
    assert probes[k] is not None and probes[k]["name"] == "tarantool"
    assert probes[k]["source"] != "show"


def test_explain_gives_no_listener_remediation_for_a_trace_in_another_programs_log():
    # the mixed run holds an nginx access line with the Nmap Scripting
    # Engine's user agent (a benign sender's line) next to a real scan
    p = subprocess.run([sys.executable, "-m", "probetag", "explain", "--jobs", "1",
                        str(FX / "mixed_nmap_sV_benign" / "traditional.log")], capture_output=True, timeout=300)
    assert p.returncode in (0, 1), p.stderr.decode(errors="replace")
    sections = p.stdout.decode().split("\n\n")
    app = [s for s in sections if "nse-during-sV" in s]
    assert app and all("seen in another program's log lines" in s and "to close it" not in s for s in app)
    app_src = app[0].strip().split(":", 1)[0]
    scan = [s for s in sections if "GetRequest" in s]
    scan_src = scan[0].strip().split(":", 1)[0]
    # the listener advice, once at the end, names the scan's sender and not
    # the one whose trace is in another program's log
    advice = [s for s in sections if "to close it" in s]
    assert advice and all(f"from: {scan_src}" in s and app_src not in s for s in advice)


def test_two_connections_in_the_same_second_are_cut_apart():
    # RFC 5424 output (nmap_sV_all_tcp/proto23.log 112-120): kumo-server's
    # record kept nothing, metasploit-msgrpc's request line (its path lost
    # with the TAG) and CR came 0.1 ms after it; hazelcast-http's request
    # line is the same bytes, minecraft-ping's record kept nothing.
    namer = SequenceNamer(DET, ORDER)
    tcp = ORDER.positions[("nmap", "tcp")]
    order = ["vp3", "kumo-server", "metasploit-msgrpc", "hazelcast-http", "minecraft-ping", "erlang-node"]
    assert [tcp[p] for p in order] == sorted(tcp[p] for p in order)
    get = b"GET  HTTP/1.0\r"
    cr = DET.match(b"\r")
    lines = [_line(0.0, "a", b"vp3"),
             _line(5.0434, "a", b"", lossy=True),
             _line(5.0435, "a", get, DET.match(get, lossy=True), lossy=True),
             _line(5.0435, "a", b"\r", cr, lossy=True),
             _line(10.0, "a", get, DET.match(get, lossy=True), lossy=True),
             _line(10.0, "a", b"\r", cr, lossy=True),
             _line(10.0, "a", b"\r", cr, lossy=True),
             _line(20.0, "a", b"", lossy=True),
             _line(25.0, "a", b"x")]
    named = [_named("vp3")] + [None] * 7 + [_named("erlang-node")]
    got = namer.name(lines, named, lambda s: None)
    assert [g and g[0].probe for g in got[1:8]] == [
        "kumo-server", "metasploit-msgrpc", "metasploit-msgrpc",
        "hazelcast-http", "hazelcast-http", "hazelcast-http", "minecraft-ping"]
    # one more empty record than there are probes: no single cut, so the
    # empty records are not named
    lines.insert(2, _line(5.0434, "a", b"", lossy=True))
    got = namer.name(lines, [_named("vp3")] + [None] * 8 + [_named("erlang-node")], lambda s: None)
    assert got[1] is None and got[2] is None and got[8] is None


def test_a_last_piece_the_engine_read_through_the_nul_rule_continues_its_probe():
    # escaping off, RSYSLOG_FileFormat (corpus-dev noescape fileformat.log
    # 17-19): TerminalServerCookie's last piece \x01\x00\x08\x00\x03\x00\x00
    # is logged as four NULs when the connection closes, 5.005 s later.
    namer = SequenceNamer(DET, ORDER)
    nuls = b"\x00" * 4
    matches = DET.match(nuls, transport="tcp")
    assert any(m.signature.probe == "TerminalServerCookie" and m.fragment == 1 for m in matches)
    lines = [_line(0.0, "a", b"x"), _line(5.005, "a", nuls, matches), _line(5.006, "a", b"y")]
    got = namer.name(lines, [_named("TerminalServerCookie"), None, _named("TLSSessionReq")], lambda s: None)
    assert got[1] is not None and (got[1][0].probe, got[1][1], got[1][3]) == ("TerminalServerCookie", 1, "continuation")


def test_a_probe_the_scan_counts_from_this_very_line_is_still_open():
    # in_syslog, -sU (corpus-dev nmap_sU_sV_int9 line 10): NTPRequest's ident
    # cut at 32 bytes matched too unsure to be tagged, but the correlator
    # counted NTPRequest as sent; the sequence pass must not rule it out
    namer = SequenceNamer(DET, ORDER)
    udp = lambda p: (BY_ID[f"nmap-udp-{p}"], 0)  # noqa: E731
    core = b"\xe3\x00\x04\xfa\x00\x01\x00\x00\x00"
    matches = DET.match(core, lossy=True)
    assert any(m.signature.probe == "NTPRequest" and not m.ambiguous for m in matches)
    lines = [_line(0.0, "a", b"x"), _line(5.0, "a", core, matches, lossy=True), _line(10.0, "a", b"y")]
    ctx = lambda s: (0.0, BY_ID["nmap-udp-Sqlping"], 0, frozenset({"Sqlping", "NTPRequest"}))  # noqa: E731
    got = namer.name(lines, [udp("Sqlping"), None, udp("SNMPv1public")], ctx)
    assert got[1] is not None and got[1][0].probe == "NTPRequest"
    # a probe another line was named after stays sent
    lines[1] = _line(5.0, "a", core, (), lossy=True)
    got = namer.name(lines, [udp("Sqlping"), None, udp("SNMPv1public")], ctx)
    assert got[1] is None


def test_an_empty_record_is_the_last_piece_of_the_probe_before_it():
    # RFC 5424 (corpus-dev nmap_sV_all_tcp/proto23.log 23-25): Kerberos' last
    # piece, logged when the connection closed 5 s later, kept no byte
    namer = SequenceNamer(DET, ORDER)
    assert len(DET.logged_cores("nmap-tcp-Kerberos")) == 2
    lines = [_line(0.0, "a", b"x"), _line(5.0, "a", b"", lossy=True), _line(10.0, "a", b"y")]
    got = namer.name(lines, [_named("Kerberos"), None, _named("SMBProgNeg")], lambda s: None)
    assert got[1] is not None and (got[1][0].probe, got[1][1], got[1][3]) == ("Kerberos", 1, "continuation")
    # after a payload of one piece it is no continuation (and no other probe
    # lies between the two anchors)
    assert len(DET.logged_cores("nmap-tcp-SMBProgNeg")) == 1
    got = namer.name(lines, [_named("SMBProgNeg"), None, _named("X11Probe")], lambda s: None)
    assert got[1] is None


def test_a_senderless_probe_line_between_two_anchors_is_counted():
    # RFC 5424 (corpus-dev nmap_sV_all_tcp/proto23.log 108-111): riak-pbc,
    # then tarantool's 'show info' (HOSTNAME 'show': no sender), then
    # couchbase-data's record that kept nothing, then epmd
    namer = SequenceNamer(DET, ORDER)
    tcp = ORDER.positions[("nmap", "tcp")]
    assert tcp["riak-pbc"] < tcp["tarantool"] < tcp["couchbase-data"] < tcp["epmd"]
    lines = [_line(0.0, "a", b"x"), _line(0.1, None, b"show info\r"), _line(10.0, "a", b"", lossy=True),
             _line(15.0, "a", b"y")]
    named = [_named("riak-pbc"), _named("tarantool"), None, _named("epmd")]
    got = namer.name(lines, named, lambda s: None)
    assert got[2] is not None and got[2][0].probe == "couchbase-data"
    # without tarantool's line, two probes for one record: nothing
    lines[1] = None
    named[1] = None
    assert namer.name(lines, named, lambda s: None)[2] is None


def test_the_rest_of_a_senderless_line_from_its_sender():
    # RFC 5424, escaping off (corpus-dev noescape proto23.log 4-7): the
    # request line's HOSTNAME was 'OPTIONS' (no sender); the record of its
    # lone CR, from the sender, kept nothing
    namer = SequenceNamer(DET, ORDER)
    lines = [_line(0.0, "a", b"x"), _line(5.0, None, b"OPTIONS  HTTP/1.0\r"), _line(5.0, "a", b"", lossy=True)]
    got = namer.name(lines, [_named("GetRequest", 1), _named("HTTPOptions"), None], lambda s: None)
    assert got[2] is not None and (got[2][0].probe, got[2][1]) == ("HTTPOptions", 1)
    # a line with bytes more than a second after it: not the same connection's
    # (a record that kept nothing may be its last piece up to close)
    lines[2] = _line(6.5, "a", b"\r", DET.match(b"\r"))
    got = namer.name(lines, [_named("GetRequest", 1), _named("HTTPOptions"), None], lambda s: None)
    assert got[2] is None or got[2][0].probe != "HTTPOptions"


def test_two_empty_records_before_the_first_probe_are_generic_lines():
    # RFC 5424, escaping off (corpus-dev noescape proto23.log 2-4): the two
    # raw CRs kept nothing
    namer = SequenceNamer(DET, ORDER)
    empty = _line(10.0, "a", b"", lossy=True)
    lines = [empty, empty, _line(15.0, "a", b"GET / HTTP/1.0\r")]
    got = namer.name(lines, [None, None, _named("GetRequest")], lambda s: None)
    assert [g and (g[0].probe, g[1]) for g in got[:2]] == [("GenericLines", 0), ("GenericLines", 1)]
    # one: not the whole probe; before a later first anchor: several fit
    assert namer.name(lines[1:], [None, _named("GetRequest")], lambda s: None)[0] is None
    got = namer.name([empty, empty, _line(15.0, "a", b"y")], [None, None, _named("RPCCheck")], lambda s: None)
    assert got[:2] == [None, None]


def test_an_empty_record_before_the_later_piece_of_its_payload():
    # RFC 5424, escaping off (corpus-dev noescape proto23.log 15-16):
    # SSLSessionReq's first piece kept nothing, its last was logged at close
    namer = SequenceNamer(DET, ORDER)
    assert len(DET.logged_cores("nmap-tcp-SSLSessionReq")) == 2
    lines = [_line(0.0, "a", b"x"), _line(5.0, "a", b"", lossy=True), _line(10.0, "a", b"y")]
    got = namer.name(lines, [_named("Help"), None, _named("SSLSessionReq", 1)], lambda s: None)
    assert got[1] is not None and (got[1][0].probe, got[1][1]) == ("SSLSessionReq", 0)
    # a sender-less line between them (a payload's first piece whose
    # HOSTNAME was its first word): the empty record is not placed so
    lines.insert(2, _line(9.9, None, b"zzz"))
    got = namer.name(lines, [_named("Help"), None, None, _named("SSLSessionReq", 1)], lambda s: None)
    assert got[1] is None or got[1][0].probe != "SSLSessionReq"


def test_a_senderless_request_line_before_the_rest_of_its_payload():
    # RFC 5424 (corpus-dev nmap_sV_all_tcp/proto23.log 96-97): apple-iphoto's
    # request line lost its path with the TAG and has no sender (HOSTNAME
    # 'GET'); the header line after it, at the same time, is its next piece
    namer = SequenceNamer(DET, ORDER)
    get = b"GET  HTTP/1.1\r"
    matches = DET.match(get, lossy=True)
    assert len({m.signature.probe for m in matches}) > 1  # several GET probes fit
    lines = [_line(0.0, "a", b"x"), _line(5.0, None, get, matches, lossy=True), _line(5.0, "a", b"y")]
    got = namer.name(lines, [_named("ibm-mqseries", 2), None, _named("apple-iphoto", 1)], lambda s: None)
    assert got[1] is not None and (got[1][0].probe, got[1][1]) == ("apple-iphoto", 0)
    # a second later it is another connection's
    lines[1] = _line(3.9, None, get, matches, lossy=True)
    got = namer.name(lines, [_named("ibm-mqseries", 2), None, _named("apple-iphoto", 1)], lambda s: None)
    assert got[1] is None or got[1][0].probe != "apple-iphoto"


def test_a_short_lossy_line_goes_on_its_payload_with_bytes_lost_inside():
    # RFC 5424 (corpus-dev nmap_sV_all_tcp/proto23.log 139-141): niagara-fox's
    # 'id=i:1' prints APP-NAME 'id=i' and MSG '1': too short to name alone
    namer = SequenceNamer(DET, ORDER)
    assert b"id=i:1" in DET.logged_cores("nmap-tcp-niagara-fox")
    lines = [_line(0.0, "a", b"fox.version=s:1.0"), _line(0.0, "a", b"id=i1", lossy=True)]
    got = namer.name(lines, [_named("niagara-fox", 2), None], lambda s: None)
    assert got[1] is not None and (got[1][0].probe, got[1][1]) == ("niagara-fox", 3)
    # a space where the bytes went missing: no TAG remainder
    lines[1] = _line(0.0, "a", b"id=i 1", lossy=True)
    assert namer.name(lines, [_named("niagara-fox", 2), None], lambda s: None)[1] is None


def test_an_empty_record_after_a_senderless_line_until_close():
    # RFC 5424 (proto23.log 72-73): HELP4STOMP's 'HELP' had no sender, its
    # NUL frame (an empty record) came from the sender 5 s later
    namer = SequenceNamer(DET, ORDER)
    lines = [_line(0.0, "a", b"x"), _line(0.001, None, b"HELP"), _line(5.0, "a", b"", lossy=True)]
    got = namer.name(lines, [_named("ms-sql-s"), _named("HELP4STOMP"), None], lambda s: None)
    assert got[2] is not None and (got[2][0].probe, got[2][3]) == ("HELP4STOMP", "continuation")


# -- the NSE scripts after the service probes ---------------------------------

def _sng(t, src, core):
    return (t, src, core, DET.match(core, collector="syslog-ng"), False, False, True, False)


def _msg(t, src, core):
    return (t, src, core, DET.match_msg(core) if core else (), False, False, False, True)


def _nse_names(got):
    return [g and (g[0].probe, g[1]) for g in got]


def test_bundled_nse_steps_follow_the_order():
    tcp = ORDER.nse[("nmap", "tcp")]
    assert [s.script for s in tcp] == ["skypev2-version", "rpc-grind"]
    # skypev2-version's request is GetRequest's bytes; rpc-grind's XID is random
    assert tcp[0].sends == BY_ID["nmap-tcp-GetRequest"].payload and not tcp[0].varies
    assert tcp[1].varies == frozenset({4, 5, 6, 7}) and tcp[1].sends[:4] == b"\x80\x00\x00\x28"
    assert [s.script for s in ORDER.nse[("nmap", "udp")]] == ["rpc-grind"]


def test_bad_nse_step_names_the_file(tmp_path: Path):
    bad = tmp_path / "x.yaml"
    bad.write_text("- scanner: nmap\n  transport: tcp\n  provenance: p\n  order: [GetRequest]\n"
                   "  nse:\n    - script: rpc-grind\n      sends: \"\\u0100\"\n")
    with pytest.raises(CatalogueError) as e:
        load_orders([bad])
    assert "nse step 0" in str(e.value) and e.value.file == str(bad)


def test_scan_order_reads_the_nse_scripts_and_their_random_bytes():
    sys.path.insert(0, str(FX.parent.parent.parent / "tools" / "capture"))
    import scan_order

    # nmap 7.93 -sV --script-trace against tools/capture/recorder.py (two ports)
    trace = """NSE: Starting runlevel 1 (of 2) scan.
NSE: Starting skypev2-version M:562356885ec8 against 127.0.0.1:6615.
NSE: TCP 127.0.0.1:51096 > 127.0.0.1:6615 | CONNECT
NSE: TCP 127.0.0.1:51096 > 127.0.0.1:6615 | 00000000: 47 45 54 20 2f 20 48 54 54 50 2f 31 2e 30 0d 0a GET / HTTP/1.0  
00000010: 0d 0a                                             

NSE: Finished skypev2-version M:562356885ec8 against 127.0.0.1:6615.
NSE: Starting runlevel 2 (of 2) scan.
NSE: Starting rpc-grind M:56235692e0f8 against 127.0.0.1:6615.
NSE: Starting rpc-grind M:56235692c508 against 127.0.0.1:6614.
NSE: TCP 127.0.0.1:841 > 127.0.0.1:6615 | 00000000: 80 00 00 28 10 50 95 01 00 00 00 00 00 00 00 02    ( P          
00000010: 00 01 86 a0 00 00 00 02 00 00 00 00 00 00 00 00                 
00000020: 00 00 00 00 00 00 00 00 00 00 00 00                         

NSE: TCP 127.0.0.1:558 > 127.0.0.1:6614 | 00000000: 80 00 00 28 08 ee 40 dc 00 00 00 00 00 00 00 02    (  @         
00000010: 00 01 86 a0 00 00 00 02 00 00 00 00 00 00 00 00                 
00000020: 00 00 00 00 00 00 00 00 00 00 00 00                         

NSE: Finished rpc-grind M:56235692e0f8 against 127.0.0.1:6615.
"""
    sends = scan_order.nse_sends(trace)
    assert [name for name, _ in sends[(6615, "tcp")]] == ["skypev2-version", "rpc-grind"]
    steps = scan_order.nse_steps(list(sends.values()))
    assert steps[0] == ("skypev2-version", b"GET / HTTP/1.0\r\n\r\n", [])
    assert steps[1][0] == "rpc-grind" and len(steps[1][1]) == 44 and steps[1][2] == [4, 5, 6, 7]


def test_fromhost_lines_after_the_last_probe_are_the_nse_scripts():
    # rsyslog %FROMHOST% %msg% (corpus-extra sV_tcp/fromhost.log 104-108):
    # afp, giop (MSG empty), skypev2-version's GetRequest bytes (' HTTP/1.0#015',
    # then an empty MSG) and rpc-grind's call (all TAG: an empty MSG) 8 s later
    namer = SequenceNamer(DET, ORDER)
    lines = [_msg(965.0, "a", b""), _msg(970.0, "a", b""), _msg(970.0, "a", b"HTTP/1.0\r"),
             _msg(970.0, "a", b""), _msg(978.0, "a", b"")]
    got = namer.name(lines, [_named("afp"), None, None, None, None], lambda s: None)
    assert _nse_names(got[1:]) == [("giop", 0), ("GetRequest", 0), ("GetRequest", 1), ("rpc-grind", 0)]
    # another sender's empty line after the scan is nobody's
    lines[4] = _msg(978.0, "b", b"")
    assert namer.name(lines, [_named("afp"), None, None, None, None], lambda s: None)[4] is None


def test_an_empty_record_is_no_nse_script_while_the_order_goes_on():
    # RFC 5424: an empty record after afp, at default intensity giop is
    # still to come; the next probe's own line bounds the order
    namer = SequenceNamer(DET, ORDER)
    lines = [_line(0.0, "a", b"x"), _line(5.0, "a", b"", lossy=True), _line(10.0, "a", b"y")]
    got = namer.name(lines, [_named("ms-sql-s"), None, _named("giop")], lambda s: None)
    assert got[1] is None or got[1][0].probe != "rpc-grind"
    got = namer.name(lines[:2], [_named("ms-sql-s"), None], lambda s: None)
    assert got[1] is None


def test_rfc5424_skypev2_request_then_rpc_grind_after_giop():
    # corpus-dev mixed_nmap_sV_benign/proto23.log 153-156: giop, then
    # 'GET - - - -  HTTP/1.0#015' (the path went with the TAG; HOSTNAME GET:
    # no sender), '127.0.0.1 #015', and 8 s later rpc-grind's record that
    # kept no byte
    namer = SequenceNamer(DET, ORDER)
    req = b"GET  HTTP/1.0\r"
    lines = [_line(0.0, "a", b"x"), _line(0.0, None, req, DET.match(req, lossy=True), lossy=True),
             _line(0.0, "a", b"\r", DET.match(b"\r"), lossy=True), _line(8.0, "a", b"", lossy=True)]
    got = namer.name(lines, [_named("giop"), None, None, None], lambda s: None)
    assert _nse_names(got[1:]) == [("GetRequest", 0), ("GetRequest", 1), ("rpc-grind", 0)]
    # the request line alone is GetRequest's again, but the empty record
    # could be either script's: both are still to come
    got = namer.name(lines[:1] + lines[3:], [_named("giop"), None], lambda s: None)
    assert got[1] is None


def test_syslog_ng_pieces_of_rpc_grinds_call():
    # corpus-extra syslog-ng/sV_tcp/net_default.log 370-379: giop, skypev2's
    # request (GetRequest's bytes), then rpc-grind's call cut at every NUL:
    # the record marker's 0x80, '(' + the random XID, 2, 100000, 2
    namer = SequenceNamer(DET, ORDER)
    pieces = [b"\x80", b"(\x07w{\xda", b"\x02", b"\x01\x86\xa0", b"\x02"]
    lines = [_sng(965.0, "a", b"x"), _sng(970.0, "a", b"GET / HTTP/1.0")] + [_sng(977.0, "a", p) for p in pieces]
    named = [_named("giop"), _named("GetRequest")] + [None] * 5
    got = namer.name(lines, named, lambda s: None)
    assert _nse_names(got[2:]) == [("rpc-grind", k) for k in range(5)]
    # RPCCheck's own call (its fixed XID) there is not rpc-grind's
    rpccheck = BY_ID["nmap-tcp-RPCCheck"].payload
    xid = rpccheck[rpccheck.index(b"(") + 1:][:4]
    lines[3] = _sng(977.0, "a", b"(" + xid)
    got = namer.name(lines, named, lambda s: None)
    assert got[3] is None or got[3][0].probe != "rpc-grind"


def test_syslog_ng_datagram_of_rpc_grind_after_the_last_udp_probe():
    # corpus-extra syslog-ng/sU_sV_udp/net_default.log 111-113: QUIC (the
    # last UDP probe at the default intensity), then rpc-grind's datagram:
    # a random XID, the call's fields, trailing NULs left off
    namer = SequenceNamer(DET, ORDER)
    quic = BY_ID["nmap-udp-QUIC"]
    line = b",\xb4\x033\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01\x86\xa0\x00\x00\x00\x02"
    lines = [_sng(909.0, "a", b"x"), _sng(914.0, "a", line)]
    got = namer.name(lines, [(quic, 0), None], lambda s: None)
    assert _nse_names(got) == [None, ("rpc-grind", 0)] and got[1][0].transport == "udp"
    # one of the call's fixed bytes changed: not rpc-grind's
    lines[1] = _sng(914.0, "a", line[:-1] + b"\x03")
    assert namer.name(lines, [(quic, 0), None], lambda s: None)[1] is None


def test_a_relays_tag_cut_after_rpc_grinds_xid():
    # corpus-extra Fluent Bit syslog-rfc3164 record (sV_tcp traditional.log
    # 108): rsyslog's forwarding template cut the TAG at 32 characters, the
    # parser took it for the message: the record marker, XID, then 3 NULs
    namer = SequenceNamer(DET, ORDER)
    core = b"\x80\x00\x00(\x053\\\x7f\x00\x00\x00"
    req = b"GET / HTTP/1.0\r"
    lines = [_line(965.0, "a", b"x"), _line(970.0, None, req, DET.match(req), lossy=True),
             _line(970.0, "a", b"\r", DET.match(b"\r"), lossy=True), _line(978.0, "a", core, lossy=True)]
    got = namer.name(lines, [_named("giop"), _named("GetRequest"), _named("GetRequest", 1), None],
                     lambda s: None)
    assert _nse_names(got)[3] == ("rpc-grind", 0)
