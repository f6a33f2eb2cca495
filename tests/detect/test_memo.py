"""The reading memo of ``detect.Enricher`` (rebuild + match, keyed by the
payload fields) changes no result.

Every test runs the same records through two enrichers, one with the memo
and one without, and compares every decision and every metric. The records
are the real rsyslog output of tests/decode/fixtures (as parsed file lines,
as Fluentd's in_tail and in_syslog records with varied senders), the record
shapes of the other forwarders, and random records from pools of field
names and values.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probetag._config import config_from_mapping
from probetag._metrics import Metrics
from probetag.decode import READ_FIELDS, SOURCE_FIELDS, escape, parse_syslog_line, rebuild
from probetag.detect._enrich import MEMO_ENTRIES, build_detection

FIX = Path(__file__).resolve().parents[1] / "decode" / "fixtures"
ESCAPES = {"default": ["rsyslog"], "colon": ["rsyslog"], "cstyle": ["cstyle"],
           "bsoctal": ["backslash-octal"], "8bit": ["rsyslog-8bit", "rsyslog"], "nmap": ["rsyslog"]}
LOGS = sorted(FIX.glob("*.log"))
T0 = 1_800_000_000.0
BATCH = 40


def pair(escapes: list[str] | None = None, **memo: Any) -> tuple[Any, Any, Metrics, Metrics]:
    """Two enrichers on one config: with the memo, and without it."""
    cfg = config_from_mapping({"detect": {"escapes": escapes}} if escapes else {})
    m_on, m_off = Metrics(), Metrics()
    on = build_detection(cfg, m_on)[4]
    off = build_detection(cfg, m_off)[4]
    if memo:
        on.memo_size = memo["size"]
    off.memo_size = 0
    return on, off, m_on, m_off


def run(enricher: Any, records: list[dict[str, Any]], step: float = 0.05, t0: float = T0) -> list[Any]:
    """Batches of ``BATCH`` records in order, times ``step`` apart."""
    out: list[Any] = []
    for k in range(0, len(records), BATCH):
        items = [(t0 + (k + i) * step, r) for i, r in enumerate(records[k:k + BATCH])]
        out += enricher.batch("syslog", items)
    return out


def counters(m: Metrics) -> dict[str, float]:
    return {k: v for k, v in m.snapshot().items() if not k.startswith("detect_memo_")}


def same(on: Any, off: Any, m_on: Metrics, m_off: Metrics, records: list[dict[str, Any]],
         passes: int = 2) -> list[Any]:
    """The records ``passes`` times through both; the second pass is where
    the memo answers."""
    got = []
    for n in range(passes):
        t0 = T0 + n * 10 * len(records)
        a, b = run(on, records, t0=t0), run(off, records, t0=t0)
        assert a == b
        got += a
    assert counters(m_on) == counters(m_off)
    assert off.memo_hits == 0 and off.memo_misses == 0
    return got


def fixture_records(path: Path) -> list[dict[str, Any]]:
    """Each line as a parsed file line (explain's path) and as Fluentd's
    in_tail record; the parsed ones also as in_syslog records whose sender
    is the HOSTNAME, another address, or missing."""
    out: list[dict[str, Any]] = []
    senders = ["10.0.0.1", "10.0.0.2", None]
    for n, raw in enumerate(path.read_bytes().split(b"\n")):
        if not raw:
            continue
        out.append(parse_syslog_line(raw).record)
        out.append({"message": raw.decode("utf-8", "surrogateescape")})
        rec = parse_syslog_line(raw).record
        if "syslogtag" in rec and "hostname" in rec and "msg" in rec:
            host = rec["hostname"].decode("utf-8", "surrogateescape")
            fl = {"host": host, "ident": rec["syslogtag"].decode("utf-8", "surrogateescape").rstrip(":"),
                  "message": rec["msg"].decode("utf-8", "surrogateescape").lstrip(" ")}
            sender = [host, *senders][n % 4]
            if sender is not None:
                fl["source_address"] = sender
            out.append(fl)
    return out


@pytest.mark.parametrize("path", LOGS, ids=[p.name for p in LOGS])
def test_memo_changes_nothing_on_real_rsyslog_output(path: Path) -> None:
    records = fixture_records(path)
    on, off, m_on, m_off = pair(ESCAPES[path.name.split(".")[0]])
    got = same(on, off, m_on, m_off, records)
    assert on.memo_hits >= len(records) // 2, "the second pass should be answered by the memo"
    if path.name.split(".")[1] != "rfc5424":
        assert any(d is not None and d.outcome == "tagged" for d in got), "nothing tagged: no test"


def test_same_payload_other_sender_is_not_taken_from_the_memo() -> None:
    """``10.0.0.1 GET / HTTP/1.0#015``: HOSTNAME equal to the sender field is
    certainly the sender; with another sender it is only probably the
    sender, and rebuild offers the other reading too. One payload, two
    readings: the memo must tell them apart by what rebuild asked."""
    base = {"host": "10.0.0.1", "ident": "GET", "message": "/ HTTP/1.0#015"}
    a = rebuild({**base, "source_address": "10.0.0.1"})
    b = rebuild({**base, "source_address": "10.0.0.9"})
    assert a is not None and b is not None and a.alternatives != b.alternatives  # the premise
    on, off, m_on, m_off = pair()
    records = [{**base, "source_address": s} for s in ("10.0.0.1", "10.0.0.9", "10.0.0.7", "10.0.0.1")]
    got = same(on, off, m_on, m_off, records, passes=1)
    assert all(d is not None for d in got)
    # The first and the last: HOSTNAME is the sender (one key, decode.SENDER);
    # 10.0.0.9 and 10.0.0.7: HOSTNAME 10.0.0.1 is not, and rebuild asked
    # only that about the senders: another key, shared by both.
    assert on.memo_hits == 2 and on.memo_misses == 2


def test_hostname_that_is_the_sender_is_one_key_for_every_sender() -> None:
    """Each scanner's ``#015`` line has its own address as HOSTNAME and as
    the sender field: one entry for all of them. A HOSTNAME that is not the
    record's sender (a relay's forwarded line) keeps its value in the key."""
    direct = [{"host": f"10.2.0.{i}", "ident": "#015", "message": "", "source_address": f"10.2.0.{i}"}
              for i in range(1, 200)]
    relayed = [{"host": f"10.2.0.{i}", "ident": "#015", "message": "", "source_address": "192.0.2.1"}
               for i in range(1, 40)]
    rsyslog = [{"hostname": f"10.3.0.{i}", "syslogtag": "-", "msg": " x", "fromhost-ip": f"10.3.0.{i}"}
               for i in range(1, 40)]
    on, off, m_on, m_off = pair()
    same(on, off, m_on, m_off, direct, passes=1)
    assert on.memo_misses == 1 and on.memo_hits == len(direct) - 1
    same(on, off, m_on, m_off, relayed, passes=1)
    assert on.memo_misses == 1 + len(relayed)
    same(on, off, m_on, m_off, rsyslog, passes=1)
    assert on.memo_misses == 2 + len(relayed)


def test_many_senders_one_probe_is_one_entry() -> None:
    """Scanners send the same bytes: the sender field is not part of the key
    when rebuild never compared it with anything."""
    records = [{"host": "GET", "ident": "/", "message": "HTTP/1.0#015", "source_address": f"10.1.{i // 250}.{i % 250}"}
               for i in range(500)]
    on, off, m_on, m_off = pair()
    got = same(on, off, m_on, m_off, records, passes=1)
    assert on.memo_misses == 1 and on.memo_hits == 499
    assert len({d.record["probe"]["source"] for d in got}) == 500  # each record's own source


def test_other_shapes_and_transports() -> None:
    rng = random.Random(5)
    lines = [b"GET / HTTP/1.0\r", b"\r", b"OPTIONS sip:nm SIP/2.0\r", b"HELP\r", b"\x16\x03\x00\x00S\x01\x00\x00O\x03\x00",
             b"l\x00\x0b\x00\x00\x00\x00\x00\x00\x00\x00", b"\r\n", b"stats\r"]
    records = []
    for i in range(300):
        line = escape(rng.choice(lines), "rsyslog").decode("utf-8", "surrogateescape")
        src = rng.choice(["10.0.0.1", "10.0.0.2", "203.0.113.9"])
        shape = i % 6
        if shape == 0:
            rec: dict[str, Any] = {"hostname": src, "syslogtag": "", "msg": line, "fromhost-ip": src,
                                   "inputname": rng.choice(["imtcp", "imudp"])}
        elif shape == 1:
            rec = {"rawmsg": f"<13>{line}", "fromhost-ip": src, "inputname": "imudp"}
        elif shape == 2:
            rec = {"hostname": src, "message": line, "source_ip": src, "appname": rng.choice(["", "x"])}
        elif shape == 3:
            rec = {"log": line, "host": src}
        elif shape == 4:
            rec = {b"message": line.encode("utf-8", "surrogateescape"), b"host": src.encode()}
        else:
            rec = {"message": "-", "agent": rng.choice(["Nmap Scripting Engine", "curl/8", "masscan/1.3"]),
                   "remote_addr": src}
        records.append(rec)
    on, off, m_on, m_off = pair()
    same(on, off, m_on, m_off, records)
    assert on.memo_hits > 0


def test_file_lines_share_an_entry_whatever_their_timestamp() -> None:
    """Fluentd in_tail / Vector file records hold the whole file line; its
    timestamp is all that differs between two sends of the same probe."""
    stamps = [f"2026-11-27T10:{i // 60:02d}:{i % 60:02d}.{i:06d}+00:00" for i in range(40)]
    stamps += [f"Nov {1 + i % 28:2d} 10:00:{i % 60:02d}" for i in range(40)]
    records = [{"message": f"{ts} GET / HTTP/1.0#015"} for ts in stamps]
    records += [{"message": f"{ts} 203.0.113.5 #015"} for ts in stamps]
    on, off, m_on, m_off = pair()
    got = same(on, off, m_on, m_off, records, passes=1)
    # One reading per format and line: rfc3339 and traditional, two lines.
    assert on.memo_misses == 4 and on.memo_hits == len(records) - 4
    assert sum(d is not None for d in got) >= 80


def test_a_timestamp_that_decides_the_parse_stays_in_the_key() -> None:
    """No HOSTNAME after the timestamp: the line is not read as a file line
    at all, and then the timestamp is part of the payload."""
    records = [{"message": "2026-11-27T10:00:00Z GET"}, {"message": "2026-11-27T10:00:01Z GET"},
               {"message": "Nov 27 10:00:00 GET / HTTP/1.0#015"}, {"message": "Nov 27 10:00:00  GET / HTTP/1.0#015"}]
    on, off, m_on, m_off = pair()
    same(on, off, m_on, m_off, records, passes=1)
    assert on.memo_hits == 0 and on.memo_misses == 4


# -- bounds -----------------------------------------------------------------

def test_memo_is_bounded_and_keeps_the_recently_used() -> None:
    on, off, m_on, m_off = pair(size=8)
    hot = {"host": "GET", "ident": "/", "message": "HTTP/1.0#015", "source_address": "10.0.0.1"}
    records = []
    for i in range(60):
        records.append({"host": "GET", "ident": f"/x{i}", "message": "HTTP/1.0#015", "source_address": "10.0.0.1"})
        records.append(hot)
    same(on, off, m_on, m_off, records, passes=1)
    assert len(on._memo) == 8
    # The hot line, used every other record, was never evicted.
    assert on.memo_misses == 61 and on.memo_hits == 59
    assert m_on.get("detect_memo_hits") == 59 and m_on.get("detect_memo_misses") == 61


def test_long_payloads_are_not_kept() -> None:
    on, off, m_on, m_off = pair()
    long = "GET /" + "a" * 4000 + " HTTP/1.0#015"
    records = [{"message": long, "host": "10.0.0.3"}] * 3
    same(on, off, m_on, m_off, records, passes=1)
    assert len(on._memo) == 0 and on.memo_misses == 3 and on.memo_hits == 0


def test_unhashable_values_are_read_without_the_memo() -> None:
    on, off, m_on, m_off = pair()
    records = [{"message": "GET / HTTP/1.0#015", "host": ["10.0.0.3"], "source_address": "10.0.0.3"}] * 3
    got = same(on, off, m_on, m_off, records, passes=1)
    assert all(d is not None for d in got)
    assert len(on._memo) == 0 and on.memo_hits == 0


def test_memo_size_default() -> None:
    on, _, _, _ = pair()
    assert on.memo_size == MEMO_ENTRIES > 0


# -- immutability ---------------------------------------------------------

def test_a_mutated_result_does_not_leak_into_the_next_hit() -> None:
    on, off, m_on, m_off = pair()
    rec = {"host": "GET", "ident": "/", "message": "HTTP/1.0#015", "source_address": "10.0.0.1"}
    first = run(on, [dict(rec)])[0]
    expected = dict(first.record["probe"])
    # Whatever a rule, an output or a caller does to what it got back...
    first.record["probe"]["name"] = "changed"
    first.record["probe"]["payload"] = "changed"
    first.record["message"] = "changed"
    second = run(on, [dict(rec)])[0]
    assert on.memo_hits == 1
    # ...the next record with the same payload gets its own, intact map.
    assert second.record["probe"] is not first.record["probe"]
    for key in ("name", "scanner", "id", "payload", "kind", "transport", "source", "shape"):
        assert second.record["probe"][key] == expected[key]
    assert second.record["message"] == "HTTP/1.0#015"
    # The memo's values cannot be changed in place at all.
    reading = next(iter(on._memo.values()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        reading.line = b"x"  # type: ignore[misc]
    assert isinstance(reading.matches, tuple) and isinstance(reading.sure, tuple)


# -- the key covers everything rebuild reads -------------------------------

class Watched(dict):
    """A record that notes every field read by name."""

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        self.read: set[Any] = set()

    def get(self, key: Any, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(key)
        return super().__contains__(key)


@pytest.mark.parametrize("path", LOGS[::3], ids=[p.name for p in LOGS[::3]])
def test_rebuild_reads_only_the_key_fields(path: Path) -> None:
    allowed = set(READ_FIELDS) | set(SOURCE_FIELDS)
    extra = {"timereported": "x", "facility": "auth", "bench_sent": 1.5, "pid": "12", "tag": "t"}
    for rec in fixture_records(path)[:300]:
        w = Watched({**extra, **rec})
        rebuild(w)
        assert w.read <= allowed, w.read - allowed


def test_configured_fields_are_the_key() -> None:
    cfg = config_from_mapping({"detect": {"fields": ["payload", "peer_host"]}})
    enricher = build_detection(cfg, Metrics())[4]
    assert enricher._key_fields == ("payload", "peer_host")
    w = Watched({"payload": "GET / HTTP/1.0#015", "peer_host": "GET", "message": "x", "host": "h"})
    rebuild(w, fields=("payload", "peer_host"))
    assert w.read <= {"payload", "peer_host"} | set(SOURCE_FIELDS)


NAMES = [*READ_FIELDS, *SOURCE_FIELDS[:4], "inputname", "agent", "timereported", "other"]
VALUES = st.one_of(
    st.sampled_from(["GET", "/", "HTTP/1.0#015", "GET / HTTP/1.0#015", "#015", "10.0.0.1", "10.0.0.2",
                     "localhost", "imtcp", "imudp", "", "-", " HTTP/1.0#015", "OPTIONS sip:nm SIP/2.0#015",
                     "2026-11-27T10:00:00+00:00 10.0.0.1 GET / HTTP/1.0#015", "colon", "rfc3339",
                     "2026-11-27T11:11:11.5Z 10.0.0.1 GET / HTTP/1.0#015", "Nov 27 10:00:00 GET / HTTP/1.0#015",
                     "Nov  7 23:59:59 GET / HTTP/1.0#015", "Nov 27 10:00:00 10.0.0.1 ", "traditional",
                     "Nmap Scripting Engine", "#026#003#000#000S#001#000#000O#003#000", "HELP#015"]),
    st.binary(max_size=12), st.integers(0, 3), st.none())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=6), min_size=1, max_size=12))
def test_random_records_same_with_and_without_memo(records: list[dict[str, Any]]) -> None:
    on, off, m_on, m_off = pair()
    # Twice: the second time every record can come from the memo.
    later = T0 + 1000
    a = run(on, records, step=0.3) + run(on, records, step=0.3, t0=later)
    b = run(off, records, step=0.3) + run(off, records, step=0.3, t0=later)
    assert a == b
    assert counters(m_on) == counters(m_off)
