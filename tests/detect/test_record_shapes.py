"""Probe lines that reach probetag in record shapes which lose bytes, fields
or whole records, each named from what is left. Real lines: the records
Fluent Bit's stock ``syslog-rfc3164``/``syslog-rfc5424`` parsers and Vector's
syslog source give for rsyslog's lines (``tests/fixtures/corpus-extra``,
its README), the records a real Fluentd ``in_syslog`` sent, and rsyslog's
own files (``tests/fixtures/corpus-dev``, its README).
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from probetag._config import config_from_mapping
from probetag._metrics import Metrics
from probetag._stage import Processor, event_time, unpacker_for
from probetag.decode import rebuild
from probetag.detect import Detector, load_catalogue
from probetag.detect._correlate import Correlator
from probetag.detect._engine import Match, forward_cut
from probetag.detect._openings import hostname_was_payload
from probetag.detect._sequence import load_orders

FIX = Path(__file__).resolve().parents[1] / "fixtures"
EXTRA = FIX / "corpus-extra"
DEV = FIX / "corpus-dev"
DET = Detector(load_catalogue())


def _value(v: object) -> bytes:
    return base64.b64decode(v["b64"]) if isinstance(v, dict) else v.encode()  # type: ignore[index,union-attr]


def _extra_rows(variant: str, run: str) -> list[dict]:
    with gzip.open(EXTRA / "records" / "records.jsonl.gz", "rt") as fh:
        rows = [r for r in map(json.loads, fh) if r["variant"] == variant and r["source_file"] == f"rsyslog/{run}/traditional.log"]
    rows.sort(key=lambda r: (r["capture"]["frame"], r["capture"]["entry"]))
    return rows


FB5424 = _extra_rows("fluentbit_syslog_rfc5424", "sV_all_tcp")
FB3164 = _extra_rows("fluentbit_syslog_rfc3164", "sV_all_tcp")
VECTOR = _extra_rows("vector_syslog_relay", "sV_all_tcp")


def _record(row: dict) -> dict:
    return {k: (_value(v) if row["value_types"][k].startswith("bin") else _value(v).decode("utf-8", "surrogateescape"))
            for k, v in row["record"].items()}


def _row(rows: list[dict], line: int) -> dict:
    return next(r for r in rows if r["source_line"] == line)


def _stage(rows: list[dict]) -> dict[int, dict | None]:
    """The rows as one chunk through the stage ``serve`` runs -> source
    line -> probe map (None: untagged)."""
    proc = Processor(config_from_mapping({}), Metrics())
    data = b"".join(msgpack.packb([event_time(*r["time"]), _record(r)], use_bin_type=True,
                                  unicode_errors="surrogateescape") for r in rows)
    res = proc.process(rows[0]["tag"], data)
    got = [rec.get("probe") for ch in res.chunks if not ch.tag.endswith("summary")
           for _, rec in unpacker_for(ch.entries) if rec.get("event") != "scan_summary"]
    assert len(got) == len(rows)
    return {r["source_line"]: p for r, p in zip(rows, got)}


def _named(got: dict[int, dict | None], rows: list[dict], lines: list[int]) -> dict[int, str | None]:
    return {n: (got[n] or {}).get("name") for n in lines}


def _want(rows: list[dict], lines: list[int]) -> dict[int, str]:
    return {n: _row(rows, n)["label"] for n in lines}


# -- Fluent Bit RFC 5424: records with an empty message are dropped ---------


def test_a_scan_the_collector_left_silent_for_minutes_is_placed_by_its_order() -> None:
    # mongodb at 17:19:09, then no record of the scan until niagara-fox at
    # 17:20:59 but three request lines without a sender (the records in
    # between had an empty message): the scan, ended on silence, goes on in
    # its order, and the three lines take the probes between, in order
    # (metasploit-msgrpc and hazelcast-http leave the same bytes).
    rows = [r for r in FB5424 if 154 <= r["source_line"] <= 190]
    got = _stage(rows)
    lines = [164, 166, 177, 189, 190]
    assert _named(got, rows, lines) == _want(rows, lines)


def test_the_order_resumes_only_forward() -> None:
    order = load_orders()
    sigs = {s.probe: s for s in DET.signatures if s.transport == "tcp" and s.scanner == "nmap"
            and s.family == "service-probe"}
    for first, second, then, resumed in (("hp-pjl", "mongodb", "niagara-fox", True),
                                         ("hp-pjl", "mongodb", "GetRequest", False)):
        c = Correlator(scan_idle=60.0)
        c.position = order.position
        for t, probe in ((0.0, first), (30.0, second), (140.0, then)):
            c.observe("127.0.0.1", t, (Match(sigs[probe], 0, "exact", 0.9, False),))
        assert c.in_order("127.0.0.1") is resumed, (first, second, then)


def test_a_tcp_and_a_udp_scan_of_one_sender_each_go_through_their_own_order() -> None:
    # ``-sS -sV`` and ``-sU -sV`` at once: each goes forward in its own
    # order, and the two together go back and forth between them. A TCP and
    # a UDP probe of one name (Help) are two probes, not one sent again.
    order = load_orders()
    by = {(s.probe, s.transport): s for s in DET.signatures if s.scanner == "nmap" and s.family == "service-probe"}
    tcp = sorted((p for p, tr in by if tr == "tcp" and order.position(by[(p, tr)]) is not None),
                 key=lambda p: order.position(by[(p, "tcp")]))[:6]
    udp = sorted((p for p, tr in by if tr == "udp" and order.position(by[(p, tr)]) is not None),
                 key=lambda p: order.position(by[(p, "udp")]), reverse=True)[:6]
    assert ("Help", "tcp") in by and ("Help", "udp") in by
    c = Correlator(scan_idle=60.0)
    c.position = order.position
    t = 0.0
    for a, b in zip(tcp, udp):
        for sig in (by[(a, "tcp")], by[(b, "udp")]):
            t += 5.0
            c.observe("127.0.0.1", t, (Match(sig, 0, "exact", 0.9, False),))
    # the UDP probes came in reverse order (a scan of several ports, say):
    # the TCP scan still goes through its order and its lines may be placed
    assert c.in_order("127.0.0.1") and c.may_place("127.0.0.1")
    assert c.lines_in_order([by[(p, "tcp")] for p in tcp] + [by[(p, "udp")] for p in udp])
    assert not c.lines_in_order([by[(p, "udp")] for p in udp])
    # the same name over the other transport is no repeat: the scan is one port's
    c2 = Correlator(scan_idle=60.0)
    c2.position = order.position
    for t, key in ((0.0, ("Help", "udp")), (5.0, ("Help", "tcp"))):
        c2.observe("127.0.0.1", t, (Match(by[key], 0, "exact", 0.9, False),))
    assert not c2._sources["127.0.0.1"].repeated


def test_lines_of_a_sender_less_hit_are_read_whatever_their_size() -> None:
    # ``fox a 1 -1 fox hello`` has HOSTNAME ``fox``: no sender. The records
    # after it (``fox.version=s`` + ``1.0``) are longer than a short
    # neighbour and hold no sender the hit could name: read all the same.
    rows = [r for r in FB5424 if 187 <= r["source_line"] <= 190]
    got = _stage(rows)
    assert _named(got, rows, [189]) == {189: "niagara-fox"}


def test_a_sender_less_hit_does_not_read_the_daemon_lines_around_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # A request line whose HOSTNAME is ``GET`` names no sender; the long
    # lines around it are read unless they are a daemon's own (a pid field,
    # ``name[pid]: ``): ordinary traffic must not cost an analysis per line.
    proc = Processor(config_from_mapping({}), Metrics())
    assert proc.enricher is not None
    tail = [{"message": "2026-12-05T10:00:%02d.000000+00:00 app01 backup[%d]: copied %d files to the "
                        "archive volume in 1.2 s, nothing left to do for this run of the job" % (i, 4000 + i, i)}
            for i in range(6)]
    syslog = [{"host": "app01", "ident": "sshd", "pid": str(700 + i), "message": "Accepted publickey for deploy "
               "from 10.0.0.7 port 5214%d ssh2: ED25519 SHA256:abcdefghijklmnopqrstuvwxyz0123456789" % i}
              for i in range(2)]
    plain = {"host": "app01", "ident": "-", "pid": "-", "message": "no tag and no pid here, " + "x" * 120}
    hit = {"message": "2026-12-05T10:00:09.000000+00:00 GET / HTTP/1.0#015"}
    records = [*tail[:3], plain, hit, *tail[3:], *syslog]
    seen: list[dict] = []
    analyse = proc.enricher.analyse
    monkeypatch.setattr(proc.enricher, "analyse", lambda rec, *a, **k: (seen.append(rec), analyse(rec, *a, **k))[1])
    data = b"".join(msgpack.packb([event_time(1_796_000_000 + i, 0), r], use_bin_type=True)
                    for i, r in enumerate(records))
    res = proc.process("syslog", data)
    got = [rec.get("probe") for ch in res.chunks for _, rec in unpacker_for(ch.entries)
           if rec.get("event") != "scan_summary"]
    assert got[records.index(hit)]["name"] == "GetRequest"
    assert hit in seen and plain in seen
    assert not [r for r in tail + syslog if r in seen]


def test_a_lossy_request_line_at_a_scans_head_fits_alone() -> None:
    # GetRequest's ``GET`` + `` HTTP/1.0#015`` at 17:13:45.23; another
    # client's ``ERROR RPC ...`` (also without a sender) in the same second
    rows = [r for r in FB5424 if r["source_line"] <= 77]
    got = _stage(rows)
    assert _named(got, rows, [29]) == {29: "GetRequest"}
    assert not [n for n, p in got.items() if p and _row(rows, n)["label"] == "benign"]


# -- the forwarding template's TAG cut after the 510-byte one --------------


def test_forward_cut_of_ibm_db2() -> None:
    sig = next(s for s in DET.signatures if s.id == "nmap-tcp-ibm-db2")
    head, tail = forward_cut(DET.logged_pieces(sig.id)[0])
    # the relay's wire line: ``#001\xc2...\xb6#0`` (32 bytes) `` `` ``000#004...``
    wire = _value(_row(FB3164, 129)["relay_wire_line"])
    kept = wire.split(b" 127.0.0.1 ", 1)[1]
    assert head == b"\x01\xc2\x00\x00\x00\x04\x00\x00\xb6" and kept.startswith(b"#001\xc2#000")
    assert tail.startswith(b"000\x04\x00\x00@") and kept.endswith(tail[-40:].replace(b"\x00", b"#000")
                                                                    .replace(b"\x04", b"#004")
                                                                    .replace(b"\x01", b"#001"))
    assert forward_cut(b"GET / HTTP/1.0\r") is None  # a TAG that ends early


@pytest.mark.parametrize("rec", [
    _record(_row(FB3164, 129)),  # Fluent Bit: ident "" and the whole rest in message
    {k: _value(v) for k, v in json.loads(next(l for l in (DEV / "fluentd_in_syslog_nmap_sV_all_tcp.jsonl")
                                                .read_text().splitlines()
                                                if json.loads(l)["source_line"] == 79))["record"].items()},
], ids=["fluentbit-rfc3164", "fluentd-in_syslog"])
def test_ibm_db2_cut_twice_is_named(rec: dict) -> None:
    rb = rebuild(rec)
    assert rb is not None and rb.lossy
    _line, matches = DET.match_best((rb.line, *rb.alternatives), lossy=True, transport="tcp")
    assert matches and not matches[0].ambiguous and matches[0].signature.probe == "ibm-db2"


def test_ibm_db2_cut_twice_with_escaping_off() -> None:
    # RFC 5424 with escaping off: only MSG is left, counted from byte 510 of
    # the TAG as rsyslog wrote it (NUL escaped, other control bytes dropped)
    line = (DEV / "noescape_nmap_sV_all" / "proto23.log").read_bytes().split(b"\n")[78]
    assert line.startswith(b"<13>1 ") and b" - - - - #000#000#000\x80" in line
    rb = rebuild({"message": line})
    assert rb is not None and rb.lossy
    _line, matches = DET.match_best((rb.line, *rb.alternatives), lossy=True, transport="tcp")
    assert matches and matches[0].signature.probe == "ibm-db2"


# -- parsers that drop bytes between fields --------------------------------


@pytest.mark.parametrize("line,probe", [(205, "SharpTV"), (128, "ibm-db2-das")])
def test_vector_keeps_one_space_of_each_run(line: int, probe: str) -> None:
    rb = rebuild(_record(_row(VECTOR, line)))
    assert rb is not None and b"   " not in rb.line.split(b"\r")[0]
    _line, matches = DET.match_best((rb.line, *rb.alternatives), lossy=bool(rb.lossy), transport="tcp")
    assert matches and matches[0].signature.probe == probe
    # one letter more where the spaces were is no match
    other = rb.alternatives[0].replace(b" ", b" X", 1)
    assert not any(m.signature.probe == probe for m in DET.match_best((other,), transport="tcp")[1])


@pytest.mark.parametrize("line,probe", [(154, "mongodb"), (189, "niagara-fox")])
def test_fluent_bit_rfc3164_separator_swallowed_the_tag(line: int, probe: str) -> None:
    # ``A#000#000#000: 0...`` read as ident ``A``, message ``0...``;
    # ``fox.version=s: 1.0`` as ident ``fox.version``, message ``1.0``
    rb = rebuild(_record(_row(FB3164, line)))
    assert rb is not None and rb.shape == "fluentd-syslog" and not rb.lossy
    cands = (rb.line, *rb.alternatives)
    assert not [m for m in DET.match_best(cands, transport="tcp")[1] if m.signature.probe == probe]
    _line, matches = DET.match_best(cands, transport="tcp", separator=True)
    assert matches and not matches[0].ambiguous and matches[0].signature.probe == probe


def test_a_swallowed_stretch_ends_at_the_first_colon() -> None:
    # SIPOptions' ``Via: SIP/2.0/...`` with ``: SIP/2.0/TCP nm;branch`` gone
    # would need a separator that went past a colon
    sig = next(s for s in DET.signatures if s.probe == "SIPOptions" and s.transport == "tcp")
    piece = next(p for p in DET.logged_pieces(sig.id) if p.startswith(b"Via:"))
    cut = piece.index(b"=foo")
    assert not [m for m in DET.match_best((b"Via" + piece[cut:],), transport="tcp", separator=True)[1]
                if m.signature.id == sig.id]


def test_one_payload_under_two_names_is_no_doubt() -> None:
    # RPCCheck's TAG cut at 32 bytes: the -sU payload of port 111 has the
    # same bytes; the catalogue's policy names it
    rb = rebuild(_record(_extra_rows("fluentbit_syslog_rfc3164", "sU_sV_udp")[5]))
    assert rb is not None and rb.lossy
    _line, matches = DET.match_best((rb.line, *rb.alternatives), lossy=True, transport="udp")
    assert {m.signature.probe for m in matches} == {"RPCCheck", "udp-scan-payload/111"}
    assert not matches[0].ambiguous and matches[0].signature.probe == "RPCCheck"


# -- the payload-word-sender rule ------------------------------------------


def test_hostname_was_payload() -> None:
    assert hostname_was_payload(b"show info\r", b"info\r", "show")
    assert hostname_was_payload(b"vp3", b"", "vp3")
    assert not hostname_was_payload(b"info\r", b"info\r", "show")
    assert not hostname_was_payload(b"127.0.0.1x", b"x", "127.0.0.1")
    assert not hostname_was_payload(b"show info\r", b"info\r", None)


# -- RFC 5424 with escaping off: APP-NAME of what the NUL rule left --------


def test_escaping_off_app_names_and_the_empty_lines_between() -> None:
    # ``127.0.0.1 #000#000 - - -`` (TerminalServer: \x03\x00\x00\x0b\x06\xe0...
    # with the control bytes after the first NUL dropped), ``#00087``
    # (OpenVPN), then pcworx's and proconos' empty records between OpenVPN
    # and niagara-fox
    path = DEV / "noescape_nmap_sV_all" / "proto23.log"
    labels = {x["line"]: x["label"] for x in map(json.loads, (DEV / "labels.jsonl").read_text().splitlines())
              if x["run"] == "noescape_nmap_sV_all" and x["format"] == "proto23"}
    env = {**os.environ, "PYTHONPATH": str(FIX.parents[1] / "plugin")}
    out = subprocess.run([sys.executable, "-m", "probetag", "explain", "--format", "jsonl", "--jobs", "1",
                          str(path)], capture_output=True, env=env, timeout=300)
    assert out.returncode in (0, 1), out.stderr.decode()[-2000:]
    probes = [json.loads(x)["probe"] for x in out.stdout.decode().splitlines()]
    lines = [50, 134, 135, 136]
    assert {n: labels[n] for n in lines} == {50: "TerminalServer", 134: "OpenVPN", 135: "pcworx", 136: "proconos"}
    assert {n: (probes[n - 1] or {}).get("name") for n in lines} == {n: labels[n] for n in lines}
    assert not [n for n, lab in labels.items() if probes[n - 1] and probes[n - 1]["name"] != lab]


def test_a_tag_cut_at_32_then_a_separator_up_to_a_colon() -> None:
    # escaping off: ``#000Z#000#000#000#000#0006,#000#`` (32 bytes) as ident,
    # `` #000:`` taken by the separator, the rest as message
    rows = {r["source_line"]: r for r in map(json.loads, (DEV / "fluentd_in_syslog_noescape_oracle_tns.jsonl")
                                             .read_text().splitlines())}
    row = rows[60]
    rec = {k: _value(v) for k, v in row["record"].items()}
    assert row["label"] == "oracle-tns" and rec["ident"].endswith(b",#000#") and len(rec["ident"]) == 32
    rb = rebuild(rec)
    assert rb is not None and rb.lossy
    _line, matches = DET.match_best((rb.line, *rb.alternatives), lossy=True, transport="tcp")
    assert matches and not matches[0].ambiguous and matches[0].signature.probe == "oracle-tns"
    for n in (59, 61):  # its neighbours are not it
        rb = rebuild({k: _value(v) for k, v in rows[n]["record"].items()})
        got = DET.match_best((rb.line, *rb.alternatives), lossy=bool(rb.lossy), transport="tcp")[1]
        assert not [m for m in got if m.signature.probe == "oracle-tns"], n


def test_a_few_bytes_after_a_swallowed_stretch_are_named_by_the_lines_around() -> None:
    # ``id=i: 1`` read as ident ``id``, message ``1`` (the line before it is
    # niagara-fox's ``fox.version=s:1.0``); ``CNXN#000...#000 :`` as ident
    # ``CNXN`` and nothing else (between SharpTV and piholeVersion)
    rb = rebuild(_record(_row(FB3164, 190)))
    got = DET.match_best((rb.line, *rb.alternatives), transport="tcp", separator=True)[1]
    assert got and all(m.ambiguous for m in got)  # alone it says nothing
    rows = [r for r in FB3164 if 186 <= r["source_line"] <= 207]
    named = _stage(rows)
    assert _named(named, rows, [190, 206]) == _want(rows, [190, 206]) == {190: "niagara-fox", 206: "adbConnect"}
