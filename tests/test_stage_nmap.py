"""Golden test: a real nmap -sV/-sU run against rsyslog, through the stage.

``tests/fixtures/rsyslog`` (see its README) holds what rsyslog 8.2302 logged
while real nmap scans and benign senders talked to it, in four output
formats, with per-line ground truth (``truth.jsonl``) and every flow's bytes
(``wire.jsonl``) established without probetag. Records are fed with their
real reception times, as a forwarder would deliver them: the JSON output as
rsyslog's JSON records, the file formats as whole lines in ``message``
(Fluentd in_tail ``none`` parser, Vector ``file`` source).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from probetag._config import config_from_mapping
from probetag._metrics import Metrics
from probetag._stage import Processor, event_time, pack_entry, unpacker_for
from probetag.detect import load_catalogue

FX = Path(__file__).resolve().parent / "fixtures" / "rsyslog"
TRUTH = [json.loads(x) for x in (FX / "truth.jsonl").read_text().splitlines() if x.strip()]
WIRE = {w["flow"]: bytes.fromhex(w["payload_hex"])
        for w in map(json.loads, (FX / "wire.jsonl").read_text().splitlines()) if w}
CATALOGUE = load_catalogue()
BY_ID = {s.id: s for s in CATALOGUE}
CATALOGUED = {s.payload for s in CATALOGUE}
FORMATS = ("json", "rfc3339", "traditional", "rfc5424")


def _when(fmt: str, raw: bytes, rec: dict) -> float:
    if fmt == "json":
        text = rec["timereported"]
    elif fmt == "traditional":
        return datetime.strptime("2026 " + raw[:15].decode(), "%Y %b %d %H:%M:%S").replace(
            tzinfo=timezone.utc).timestamp()
    elif fmt == "rfc5424":
        text = raw.split(b" ", 2)[1].decode()
    else:
        text = raw.split(b" ", 1)[0].decode()
    return datetime.fromisoformat(text).timestamp()


def _run(fmt: str):
    raws = (FX / f"{fmt}.log").read_bytes().split(b"\n")
    assert raws[len(TRUTH):] in ([], [b""]), "fixture and truth out of step"
    entries = []
    recs = []
    for raw in raws[:len(TRUTH)]:
        rec = (json.loads(raw.decode("utf-8", "surrogateescape")) if fmt == "json"
               else {"message": raw.decode("utf-8", "surrogateescape")})
        t = _when(fmt, raw, rec)
        sec = int(t)
        entries.append(pack_entry(event_time(sec, int(round((t - sec) * 1e9)) % 1_000_000_000), rec))
        recs.append(rec)
    proc = Processor(config_from_mapping({}), Metrics())
    res = proc.process("syslog", b"".join(entries))
    assert res.total == len(TRUTH) and res.rejected == 0
    out = [r for _, r in unpacker_for(res.chunks[0].entries)]
    return recs, out


def _right(truth: dict, probe: dict) -> bool:
    """Tagged with the probe nmap sent, or with a signature of exactly the
    bytes that crossed the wire (nmap's -sU port-scan payloads and some -sV
    probes are the same bytes under two names)."""
    if probe["name"] == truth["probe"] or probe["name"] in truth["wire_equal"]:
        return True
    if truth["probe"].startswith("nse:") and probe["name"] == truth["probe"][len("nse:"):]:
        return True  # an NSE script's entry is named by the script (rpc-grind's markers)
    if probe.get("protocol") and probe["scanner"] in ("unknown", "nmap"):
        # a line the catalogue did not name (RFC 5424 output lost its bytes),
        # named by the protocol its bytes open (detect/_clients.py)
        return True
    return BY_ID[probe["id"]].payload == WIRE.get(truth["flow"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_benign_or_internal_line_is_tagged(fmt):
    recs, out = _run(fmt)
    bad = [(t["line"], t["kind"], r["probe"]["name"]) for t, r in zip(TRUTH, out)
           if t["kind"] != "probe" and "probe" in r]
    assert bad == []
    # And they leave exactly as they came.
    for t, rec, r in zip(TRUTH, recs, out):
        if t["kind"] != "probe":
            assert r == rec


def _consistent(truth: dict, rec: dict) -> bool:
    """For a record that lost bytes (RFC 5424 output): the line that is left
    is also what the bytes really sent would leave. Checked with a detector
    that knows only those bytes."""
    from probetag.decode import rebuild
    from probetag.detect import Detector, Signature

    sent = Signature(id="sent", probe="sent", scanner="wire", transport=truth["transport"],
                     payload=WIRE[truth["flow"]], match="payload", confidence=None, ports=(),
                     provenance="wire.jsonl", notes="", source="wire.jsonl")
    rb = rebuild(rec)
    return bool(Detector([sent]).match(rb.line, alternatives=rb.alternatives, lossy=True))


@pytest.mark.parametrize("fmt", FORMATS)
def test_tagged_probe_lines_name_the_right_probe(fmt):
    recs, out = _run(fmt)
    wrong = [(t["line"], t["probe"], r["probe"]["name"]) for t, rec, r in zip(TRUTH, recs, out)
             if t["kind"] == "probe" and "probe" in r and not _right(t, r["probe"])
             and not (r["probe"]["lossy"] and _consistent(t, rec))]
    assert wrong == []


@pytest.mark.parametrize("fmt", ("json", "rfc3339", "traditional"))
def test_probes_in_the_catalogue_are_found(fmt):
    """Every line of a flow whose bytes are a catalogue payload is tagged,
    except lines of under 4 bytes with no distinctive line of their payload
    to lean on (nmap's GenericLines is nothing but two lone CRs; Sqlping is
    one byte). A single word that is a whole probe (``HELP\\r``) is found
    from the ongoing scan."""
    recs, out = _run(fmt)
    from probetag.decode import rebuild

    missed = []
    for t, rec, r in zip(TRUTH, recs, out):
        if t["kind"] != "probe" or WIRE.get(t["flow"]) not in CATALOGUED or "probe" in r:
            continue
        line = rebuild(rec).line.strip(b" \r\n")
        if len(line) >= 4:
            missed.append((t["line"], t["probe"], line[:40]))
    assert missed == []
    found = sum(1 for t, r in zip(TRUTH, out) if t["kind"] == "probe" and "probe" in r)
    catalogued = sum(1 for t in TRUTH if t["kind"] == "probe" and WIRE.get(t["flow"]) in CATALOGUED)
    assert found >= 0.8 * catalogued


def test_rfc5424_output_still_yields_probes():
    # The lossy format drops the TAG beyond APP-NAME (up to the first '/',
    # ':', '[' or non-printable byte): lines are matched with that one gap.
    recs, out = _run("rfc5424")
    probe_lines = [(t, r) for t, r in zip(TRUTH, out) if t["kind"] == "probe"]
    found = [r for t, r in probe_lines if "probe" in r]
    assert len(found) >= len(probe_lines) // 2
    assert any(r["probe"]["kind"] == "damaged" and r["probe"]["lossy"] for r in found)


@pytest.mark.parametrize("fmt", FORMATS)
def test_prefilter_loses_nothing_on_real_scan(fmt):
    from probetag.detect import Prefilter

    raws = (FX / f"{fmt}.log").read_bytes().split(b"\n")[:len(TRUTH)]
    recs = [json.loads(x.decode("utf-8", "surrogateescape")) if fmt == "json"
            else {"message": x.decode("utf-8", "surrogateescape")} for x in raws]
    data = b"".join(pack_entry(1_800_000_000 + i, r) for i, r in enumerate(recs))
    fast = Processor(config_from_mapping({}), Metrics())
    full = Processor(config_from_mapping({}), Metrics())
    full.prefilter = Prefilter([b"\x92"])  # every entry starts with 0x92: decode all
    a, b = fast.process("s", data), full.process("s", data)
    assert [c.entries for c in a.chunks] == [c.entries for c in b.chunks]
    assert a.tagged == b.tagged > 0
