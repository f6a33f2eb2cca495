"""Fluentd's in_tail and in_syslog ``chomp`` a line's final CR. With rsyslog's
escaping off that CR was raw, so a probe's request line arrives without it
(``Enricher._restore_cr``, ``Detector.fragments``).

Real records: ``tests/fixtures/corpus-dev/fluentd_tail_rfc3164_noescape_head.jsonl``
(its README).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import msgpack

from probetag._config import config_from_mapping
from probetag._metrics import Metrics
from probetag._stage import Processor, event_time, unpacker_for
from probetag.detect import Detector, load_catalogue

FX = Path(__file__).resolve().parents[1] / "fixtures" / "corpus-dev" / "fluentd_tail_rfc3164_noescape_head.jsonl"
ROWS = [json.loads(x) for x in FX.read_text().splitlines() if x.strip()]


def _value(v: Any, typ: str) -> Any:
    raw = base64.b64decode(v["b64"]) if isinstance(v, dict) else v.encode("utf-8")
    return raw if typ.startswith("bin") else raw.decode("utf-8", "surrogateescape")


def _entry(row: dict[str, Any]) -> bytes:
    rec = {k: _value(v, row["value_types"][k]) for k, v in row["record"].items()}
    return msgpack.packb([event_time(*row["time"]), rec], use_bin_type=True, unicode_errors="surrogateescape")


def _names(rows: list[dict[str, Any]], proc: Processor | None = None) -> dict[int, str | None]:
    proc = proc or Processor(config_from_mapping({}), Metrics())
    res = proc.process(rows[0]["tag"], b"".join(_entry(r) for r in rows))
    out = [rec.get("probe") for _, rec in unpacker_for(res.chunks[0].entries)]
    assert len(out) == len(rows)
    return {r["source_line"]: (p or {}).get("name") for r, p in zip(rows, out)}


def _line(n: int) -> dict[str, Any]:
    return next(r for r in ROWS if r["source_line"] == n)


def test_the_fixture_lost_its_crs() -> None:
    assert _line(41)["record"] == {"host": "127.0.0.1", "ident": "To", "message": "<sip:nm2@nm2>"}
    assert _line(2)["record"]["ident"] == "\r"  # a raw CR: the stream does not escape


def test_sip_headers_without_their_cr_are_named() -> None:
    names = _names(ROWS)
    for n in range(38, 49):
        assert _line(n)["label"] == "SIPOptions"
        assert names[n] == "SIPOptions", (n, _line(n)["record"])
    assert names[27] == "FourOhFourRequest"


def test_no_benign_line_tagged() -> None:
    names = _names(ROWS)
    for r in ROWS:
        if r["label"] == "benign":
            assert names[r["source_line"]] is None, r["record"]


def test_without_a_raw_cr_in_the_stream_the_cr_is_not_put_back() -> None:
    # The same request line alone: nothing says its CR was there, so it is
    # only an HTTP request (the CR-less line an application quotes).
    rows = [_line(27)]
    assert _names(rows)[27] != "FourOhFourRequest"
    # once the tag carried a raw CR (the lone CR ending RTSPRequest, read
    # beside the RPCCheck line after it), it is
    proc = Processor(config_from_mapping({}), Metrics())
    _names([_line(n) for n in range(8, 11)], proc)
    assert _names(rows, proc)[27] == "FourOhFourRequest"



def test_an_escaped_cr_is_no_evidence() -> None:
    # The same lone CR as rsyslog escapes it by default (``#015``): the
    # stream keeps its CRs, so a CR-less request line after it had none.
    proc = Processor(config_from_mapping({}), Metrics())
    escaped = []
    for n in range(8, 11):
        row = _line(n)
        rec = {}
        for k, v in row["record"].items():
            raw = base64.b64decode(v["b64"]) if isinstance(v, dict) else v.encode("utf-8")
            rec[k] = {"b64": base64.b64encode(raw.replace(b"\r", b"#015")).decode()}
        escaped.append({**row, "record": rec})
    assert any(b"#015" in base64.b64decode(v["b64"]) for r in escaped for v in r["record"].values())
    _names(escaped, proc)
    assert _names([_line(27)], proc)[27] != "FourOhFourRequest"
    # the raw CRs of the very same lines are
    _names([_line(n) for n in range(8, 11)], proc)
    assert _names([_line(27)], proc)[27] == "FourOhFourRequest"

def test_another_tag_does_not_inherit_the_evidence() -> None:
    proc = Processor(config_from_mapping({}), Metrics())
    _names([_line(n) for n in range(8, 11)], proc)
    other = dict(_line(27), tag="other.tag")
    assert _names([other], proc)[27] != "FourOhFourRequest"


def test_fragments_hold_cr_less_tokens_but_no_protocol_words() -> None:
    frags = set(Detector(load_catalogue()).fragments())
    assert b"nm2@nm2>\r" in frags and b"nm2@nm2>" in frags
    assert b"nm;branch=foo" in frags
    for word in (b"HTTP/1.0", b"HTTP/1.1", b"RTSP/1.0", b"SIP/2.0", b"OPTIONS"):
        assert word not in frags


def test_the_scan_start_is_read_before_the_first_literal() -> None:
    # GenericLines, GetRequest, HTTPOptions, RTSPRequest: eight lines, none
    # with a literal once the CRs are raw and chomped; RPCCheck's binary line
    # (10) is the first hit, and the stage reads the lines before it.
    names = _names(ROWS)
    for n in range(2, 10):
        assert names[n] == _line(n)["label"], (n, _line(n)["record"], names[n])


def test_a_cut_ident_and_a_lost_cr_together() -> None:
    # in_syslog (RSYSLOG_TraditionalForwardFormat cut the TAG at 32 bytes)
    # with escaping off: FourOhFourRequest's path cut and its CR chomped
    proc = Processor(config_from_mapping({}), Metrics())
    _names([_line(n) for n in range(8, 11)], proc)
    row = dict(_line(27), record={"host": "GET", "ident": "/nice%20ports%2C/Tri%6Eity.txt%2",
                                  "message": "HTTP/1.0", "source_ip": "127.0.0.1"},
               value_types={"host": "bin8", "ident": "bin8", "message": "bin8", "source_ip": "bin8"})
    assert _names([row], proc)[27] == "FourOhFourRequest"


def test_a_cr_after_spaces_is_chomped_too() -> None:
    # SharpTV: 'TVNM1   \rMNRD1   \rSWVN1   \rIPPV1   \r' arrives without
    # the spaces after the HOSTNAME (Fluentd's ' *') and without its last CR
    names = _names(ROWS + [_spaced])
    assert names[155] == "SharpTV"


_spaced = {"tag": ROWS[0]["tag"], "time": [ROWS[-1]["time"][0] + 1, 0], "label": "SharpTV", "source_line": 155,
           "record": {"host": "TVNM1", "ident": "", "message": "\rMNRD1   \rSWVN1   \rIPPV1   "},
           "value_types": {"host": "bin8", "ident": "bin8", "message": "bin8"}}
