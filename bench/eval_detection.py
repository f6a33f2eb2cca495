"""Detection quality on labelled data: how many probe lines are named, and right.

Reads a labelled corpus laid out as ``corpus-dev`` (``labels.jsonl`` with one
ground-truth label per physical line of every rsyslog file,
``fluentd/records.jsonl`` with every record a real Fluentd sent for those
lines, ``sessions.jsonl`` and each run's ``capture.pcap.gz`` for the bytes
that crossed the wire) and runs probetag over it the way a user does:

* files: ``probetag explain --format jsonl FILE`` on every rsyslog file, one
  shape per output format (traditional, RFC 3339 file format, RFC 5424,
  rsyslog JSON) and escaping variant;
* records: every Fluentd variant's records, in the chunks out_forward sent
  them in (``capture.frame``), through the stage ``serve`` runs
  (``Processor.process``), with msgpack str/bin exactly as on the wire; and
  rsyslog's own JSON lines as records (``omfwd``/``omelasticsearch`` style).

A probe line is *named* when its probe map names the probe the label gives,
the NSE script an ``nse:`` label names, or a catalogue entry whose bytes are
exactly what that connection sent (nmap sends some payloads under two names:
skypev2-version's first request is GetRequest's bytes). A *wrong* name is a
probe map on a probe line that is none of those, or one that names a scanner
other than the one that sent it. *Benign tagged* counts probe maps on lines
labelled benign, rsyslogd's own framing-error lines included. A record
stream names some lines only after they left, in the scan summaries'
``named_late``: each such entry is paired with a line of its event time
that left unnamed and judged the same way ("named late (summary)" when
right, else a wrong name or a benign line tagged); an entry that says
``was`` (a line that left named only by its protocol, refined later to a
scanner's probe) is paired with a line of its time that left named so.
"name-recall" counts the names given at once, "name-recall incl. late"
both.

A second layout is read too (``tests/fixtures/corpus-extra``, made by
``tools/corpus/capture_extra.py``): its labels carry ``collector`` (rsyslog,
syslog-ng) and ``source_driver``, and its records (``records/records.jsonl``,
Fluent Bit and Vector records derived by applying those programs' stock
parsers) carry their own labels when they have no source line. Rows from it
are named after the collector (``file: syslog-ng net_default``,
``records: vector_syslog_direct (derived)``).

    python bench/eval_detection.py [--corpus DIR ...] [--by-transport] [--by-run] [--json OUT] [--misses]

``--corpus`` may be given several times; by default ``../shared/corpus-dev``
and ``tests/fixtures/corpus-extra`` are evaluated (those that exist). Prints
one row per shape; ``--by-transport`` splits each row by TCP/UDP and
``--by-run`` by capture run (nmap intensity). ``--misses``
lists every unnamed or misnamed line.
"""

from __future__ import annotations

import argparse
import base64
import collections
import gzip
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "plugin"))

import msgpack  # noqa: E402

from probetag._config import config_from_mapping  # noqa: E402
from probetag._metrics import Metrics  # noqa: E402
from probetag._stage import Processor, event_time, unpacker_for  # noqa: E402
from probetag.detect import load_catalogue  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus-dev"
EXTRA_CORPUS = ROOT / "tests" / "fixtures" / "corpus-extra"
FILE_FORMATS = ("traditional", "fileformat", "proto23", "json")


# -- ground truth ------------------------------------------------------------

def _jsonl(path: Path) -> list[dict[str, Any]] | None:
    """The objects of PATH, or of PATH.gz when only that exists; None if neither."""
    if path.exists():
        text = path.read_text()
    elif path.with_name(path.name + ".gz").exists():
        text = gzip.decompress(path.with_name(path.name + ".gz").read_bytes()).decode()
    else:
        return None
    return [json.loads(x) for x in text.splitlines() if x]


def _wire_payloads(corpus: Path) -> dict[str, set[bytes]]:
    """session -> the payloads that crossed the wire (a TCP connection's
    whole stream, each datagram of a UDP socket), from the runs' captures."""
    for d in (corpus / "scripts", ROOT / "tools" / "corpus"):
        if (d / "pcapflows.py").exists():
            sys.path.insert(0, str(d))
            break
    try:
        import pcapflows  # type: ignore[import-not-found]
    except ImportError:
        return {}
    out: dict[str, set[bytes]] = collections.defaultdict(set)
    for run_json in sorted(corpus.glob("rsyslog/*/run.json")):
        run = run_json.parent.name
        meta = json.loads(run_json.read_text())
        ports = [int(p) for p in _ports(meta)]
        pcap = run_json.parent / "capture.pcap.gz"
        if not pcap.exists():
            continue
        for f in pcapflows.flows(str(pcap), ports):
            key = f"{run}:{f['proto']}:{f['src']}:{f['sport']}->{f['dport']}"
            if f["payload"]:
                out[key].add(bytes(f["payload"]))
    return out


def _ports(meta: dict[str, Any]) -> list[int]:
    ports = []
    for k, v in meta.items():
        if "port" in k and isinstance(v, int):
            ports.append(v)
    return ports or [meta.get("port", 0)]


class Truth:
    def __init__(self, corpus: Path) -> None:
        self.catalogue = {s.id: s for s in load_catalogue()}
        self.wire = _wire_payloads(corpus)

    def right(self, label: str, scanner: str | None, session: str | None, probe: dict[str, Any]) -> bool:
        name = probe.get("name")
        if probe.get("scanner") not in (scanner, None, "unknown") and label != "benign":
            return False
        if name == label or (label.startswith("nse:") and name == label[4:]):
            return True
        sig = self.catalogue.get(probe.get("id", ""))
        if sig is None or session is None:
            return False
        sent = self.wire.get(session, ())
        return sig.payload in sent


# -- running probetag ----------------------------------------------------------

def _explain(path: Path) -> list[dict[str, Any] | None]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "plugin"))
    out = subprocess.run([sys.executable, "-m", "probetag", "explain", "--format", "jsonl", "--jobs", "1",
                          str(path)], capture_output=True, env=env, timeout=600, check=False)
    if out.returncode not in (0, 1):
        raise SystemExit(f"explain {path}: exit {out.returncode}: {out.stderr.decode(errors='replace')}")
    probes: list[dict[str, Any] | None] = []
    for line in out.stdout.splitlines():
        obj = json.loads(line)
        probes.append(obj["probe"])
    return probes


def _value(v: Any, typ: str) -> Any:
    if isinstance(v, dict) and "b64" in v:
        raw = base64.b64decode(v["b64"])
    else:
        raw = v.encode("utf-8")
    return raw if typ.startswith("bin") else raw.decode("utf-8", "surrogateescape")


def _pack(t: list[int], record: dict[str, Any]) -> bytes:
    return msgpack.packb([event_time(t[0], t[1]), record], use_bin_type=True,
                         unicode_errors="surrogateescape")


#: The ``named_late`` entries (time, probe, id, scanner, fragment) of the scan
#: summaries of the last ``_stage`` run: lines named after they had left
LATE: list[dict[str, Any]] = []
LATE_BY_SHAPE: dict[str, list[dict[str, Any]]] = {}


def _stage(chunks: Iterable[tuple[str, list[bytes]]]) -> list[dict[str, Any] | None]:
    """Runs chunks through one Processor (as one serve process would) and
    returns each entry's probe map, in order."""
    proc = Processor(config_from_mapping({}), Metrics())
    LATE.clear()
    out: list[dict[str, Any] | None] = []
    for tag, entries in chunks:
        res = proc.process(tag, b"".join(entries))
        assert res.rejected == 0, res.reject_reasons
        got = []
        for ch in res.chunks:
            if ch.tag.startswith("probetag.") and ch.tag.endswith("summary"):
                continue
            for _, rec in unpacker_for(ch.entries):
                if isinstance(rec, dict) and rec.get("event") == "scan_summary":
                    continue
                got.append(rec.get("probe") if isinstance(rec, dict) else None)
        assert len(got) == len(entries), (tag, len(got), len(entries))
        out.extend(got)
    # what the scan summaries say (process() hands none over: every scan,
    # ended or not, is handed over here)
    for summary in proc.correlator.flush():
        LATE.extend(summary.get("named_late", ()))
    return out


def _fluentd_shapes(corpus: Path) -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any] | None]]]:
    recs = []
    for path in (corpus / "fluentd" / "records.jsonl", corpus / "records" / "records.jsonl"):
        recs += _jsonl(path) or []
    by_variant: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for r in recs:
        by_variant[r["variant"]].append(r)
    shapes = {}
    for variant, rows in sorted(by_variant.items()):
        rows.sort(key=lambda r: (r["capture"]["fluentd_run"], r["capture"]["conn"], r["capture"]["frame"],
                                 r["capture"]["entry"]))
        chunks: list[tuple[str, list[bytes]]] = []
        chunk_runs: list[tuple[str, tuple[str, list[bytes]]]] = []
        rows_in_order: list[dict[str, Any]] = []
        last = None
        for r in rows:
            c = r["capture"]
            key = (c["fluentd_run"], c["conn"], c["frame"], r["tag"])
            record = {k: _value(v, r["value_types"][k]) for k, v in r["record"].items()}
            if key != last:
                chunks.append((r["tag"], []))
                chunk_runs.append((c["fluentd_run"], chunks[-1]))
                last = key
            chunks[-1][1].append(_pack(r["time"], record))
            rows_in_order.append(r)
        # One Processor per source file: each was a Fluentd of its own (and
        # the runs overlap in time from the same sender address).
        probes: list[dict[str, Any] | None] = []
        batched_late: list[dict[str, Any]] = []
        for run in dict.fromkeys(r["capture"]["fluentd_run"] for r in rows):
            mine = [c for c in chunk_runs if c[0] == run]
            probes.extend(_stage([c[1] for c in mine]))
            batched_late.extend(LATE)
        derived = bool(rows[0].get("derived"))
        name = f"records: {variant} (derived)" if derived else f"records: fluentd {variant}"
        shapes[name] = (rows_in_order, probes)
        LATE_BY_SHAPE[name] = batched_late  # (a line a later chunk placed)
        if variant in ("tail_none", "in_syslog_tcp") and not derived:
            # A live stream: Fluentd flushes every line on its own (a scan's
            # lines are seconds apart), so each chunk holds one record.
            probes = []
            late: list[dict[str, Any]] = []
            for run in sorted({r["capture"]["fluentd_run"] for r in rows}):
                recs = [r for r in rows_in_order if r["capture"]["fluentd_run"] == run]
                probes_run = _stage([(r["tag"], [_pack(r["time"], {k: _value(v, r["value_types"][k])
                                                                    for k, v in r["record"].items()})])
                                     for r in recs])
                probes.extend(probes_run)
                late.extend(LATE)
            shapes[f"records, one per chunk: fluentd {variant}"] = (rows_in_order, probes)
            LATE_BY_SHAPE[f"records, one per chunk: fluentd {variant}"] = late
    return shapes


def _rsyslog_json_records(corpus: Path, labels: list[dict[str, Any]]) -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any] | None]]]:
    """rsyslog's JSON lines as records (one chunk per 100 lines per run)."""
    from datetime import datetime

    shapes: dict[str, tuple[list[dict[str, Any]], list[Any]]] = {}
    rows_all: list[dict[str, Any]] = []
    by_file = collections.defaultdict(list)
    for lab in labels:
        if lab["format"] == "json":
            by_file[lab["file"]].append(lab)
    probes: list[Any] = []
    for fname, labs in sorted(by_file.items()):
        chunks = []
        lines = (corpus / fname).read_bytes().split(b"\n")
        for i, lab in enumerate(labs):
            raw = lines[lab["line"] - 1]
            rec = json.loads(raw.decode("utf-8", "surrogateescape"))
            ts = datetime.fromisoformat(rec["timereported"]).timestamp()
            sec = int(ts)
            if i % 100 == 0:
                chunks.append(("syslog", []))
            chunks[-1][1].append(_pack([sec, int((ts - sec) * 1e9)], rec))
            rows_all.append(lab)
        probes.extend(_stage(chunks))  # one Processor per file (one server each)
    shapes["records: rsyslog json (omfwd/jsonf)"] = (rows_all, probes)
    return shapes


# -- scoring -------------------------------------------------------------------

#: An RFC 5424 line whose payload rsyslog's format did not keep: the
#: HOSTNAME is the sender's address and APP-NAME, PROCID, MSGID and MSG are
#: empty (an all-TAG binary line, FIELD_GUIDE 3).
_LOST_5424 = re.compile(r"^<[0-9a-z]+>1 \S+ [0-9.:a-fA-F]+ - - - -\s*$")
#: A ``%TIMESTAMP% %FROMHOST% %msg%`` line with an empty MSG: HOSTNAME and
#: TAG held the whole payload line (a binary line is all TAG), and the
#: template prints neither. Only the line's place among the scan's other
#: lines can name it.
_LOST_FROMHOST = re.compile(r"^[A-Z][a-z]{2} [ 0-9][0-9] [0-9:]{8} \S+ *$")


def payload_lost(label: dict[str, Any]) -> bool:
    if label.get("format") == "fromhost":
        return bool(_LOST_FROMHOST.match(label.get("raw", "")))
    return label.get("format") == "proto23" and bool(_LOST_5424.match(label.get("raw", "")))


class Row:
    def __init__(self, shape: str) -> None:
        self.shape = shape
        self.probe_lines = 0
        self.tagged = 0
        self.named = 0
        self.wrong = 0
        self.benign = 0
        self.benign_tagged = 0
        self.app_traces = 0
        self.lost = 0  # probe lines whose payload the format did not keep
        self.lost_named = 0
        self.late = 0  # unnamed probe lines named right later, in their scan's summary (serve)
        self.late_wrong = 0  # of those named later, wrongly (counted in ``wrong`` too)
        self.wrong_scanner = 0  # named after a scanner that did not send it
        self.by_protocol = 0  # named by protocol only (scanner "unknown")
        self.misses: list[str] = []

    def add(self, truth: Truth, label: dict[str, Any], probe: dict[str, Any] | None, where: str) -> None:
        if label["label"] == "benign":
            self.benign += 1
            if probe is not None and probe.get("seen_in") == "application-log":
                # a scanner's trace in another daemon's log (an nginx line
                # with nmap's user agent): allowed, and counted apart
                self.app_traces += 1
            elif probe is not None:
                self.benign_tagged += 1
                self.misses.append(f"BENIGN-TAGGED {where}: {probe.get('name')} <- {label.get('raw', '')[:100]!r}")
            return
        self.probe_lines += 1
        lost = payload_lost(label)
        self.lost += lost
        if probe is None:
            self.misses.append(f"UNNAMED {where} [{label['label']}]: {label.get('raw', '')[:120]!r}")
            return
        self.tagged += 1
        if probe.get("scanner") not in (label.get("scanner"), "unknown"):
            self.wrong_scanner += 1
        if truth.right(label["label"], label.get("scanner"), label.get("session"), probe):
            self.named += 1
            self.lost_named += lost
        elif probe.get("scanner") == "unknown":
            # named by its protocol (a client's opening bytes), not as the
            # scanner's probe: tagged, but not the probe's name
            self.by_protocol += 1
            self.misses.append(f"PROTOCOL-ONLY {where} [{label['label']}] as {probe.get('name')}: "
                               f"{label.get('raw', '')[:120]!r}")
        else:
            self.wrong += 1
            self.misses.append(f"WRONG {where} [{label['label']}] as {probe.get('name')}/{probe.get('scanner')} via {probe.get('via')}: "
                               f"{label.get('raw', '')[:120]!r}")

    def add_late(self, truth: Truth, label: dict[str, Any], late: dict[str, Any], where: str) -> None:
        """An entry of a scan summary's ``named_late`` for this line, which
        left untagged (``add`` saw it unnamed), or left named by its protocol
        only (the entry says ``was``): judged as a probe map is."""
        probe = {"name": late.get("probe"), "id": late.get("id"), "scanner": late.get("scanner")}
        how = f", refining {late['was']}" if "was" in late else ""
        if label["label"] == "benign":
            self.benign_tagged += 1
            self.misses.append(f"BENIGN-NAMED-LATE {where}: {probe['name']} <- {label.get('raw', '')[:100]!r}")
            return
        if truth.right(label["label"], label.get("scanner"), label.get("session"), probe):
            self.late += 1
            self.misses.append(f"NAMED-LATE {where} [{label['label']}] (in the scan's summary{how})")
            return
        self.late_wrong += 1
        self.wrong += 1
        if probe["scanner"] not in (label.get("scanner"), "unknown"):
            self.wrong_scanner += 1
        self.misses.append(f"WRONG-LATE {where} [{label['label']}] as {probe['name']}/{probe['scanner']}: "
                           f"{label.get('raw', '')[:120]!r}")

    def as_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "probe_lines": self.probe_lines, "tagged": self.tagged,
                "named": self.named, "wrong": self.wrong,
                "name_recall": round(self.named / self.probe_lines, 4) if self.probe_lines else None,
                "payload_lost": self.lost,
                "name_recall_payload_kept": (round((self.named - self.lost_named) / (self.probe_lines - self.lost), 4)
                                             if self.probe_lines > self.lost else None),
                "named_late_in_summary": self.late,
                "named_late_wrong": self.late_wrong,
                "name_recall_incl_late": (round((self.named + self.late) / self.probe_lines, 4)
                                          if self.probe_lines else None),
                "wrong_scanner": self.wrong_scanner,
                "by_protocol_only": self.by_protocol,
                "benign_lines": self.benign, "benign_tagged": self.benign_tagged,
                "application_log_traces": self.app_traces}


SPLIT: set[str] = set()  # "transport", "run": extra row keys (--by-transport, --by-run)


def _split(name: str, lab: dict[str, Any], by_transport: bool) -> str:
    if by_transport or "transport" in SPLIT:
        name = f"{name} [{lab.get('transport') or 'internal'}]"
    if "run" in SPLIT:
        name = f"{name} [{lab.get('run')}]"
    return name


def evaluate(corpus: Path, by_transport: bool = False) -> list[Row]:
    truth = Truth(corpus)
    labels = _jsonl(corpus / "labels.jsonl") or []
    rows: dict[str, Row] = {}
    by_file: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for lab in labels:
        by_file[lab["file"]].append(lab)
    for fname, labs in sorted(by_file.items()):
        fmt = labs[0]["format"]
        variant = labs[0]["variant"]
        if labs[0].get("collector"):
            fmt = f"{labs[0]['collector']} {fmt}"
        shape = f"file: {fmt}" + (" (escaping off)" if variant != "default" else "")
        probes = _explain(corpus / fname)
        for lab in labs:
            name = _split(shape, lab, by_transport)
            row = rows.setdefault(name, Row(name))
            probe = probes[lab["line"] - 1] if lab["line"] - 1 < len(probes) else None
            row.add(truth, lab, probe, f"{fname}:{lab['line']}")
    labels_by_line = {(lab["file"], lab["line"]): lab for lab in labels}
    for shape, (recs, probes) in _fluentd_shapes(corpus).items():
        # in_syslog over the no-escape relay is its own shape (raw CRs chomped)
        # Lines named late, by their record's event time (as the stage reads it)
        late: dict[float, list[dict[str, Any]]] = collections.defaultdict(list)
        for x in LATE_BY_SHAPE.get(shape, ()):
            late[x["time"]].append(x)
        unnamed: dict[float, list[tuple[Row, dict[str, Any], str]]] = collections.defaultdict(list)
        # lines that left named by their protocol only, for entries that say ``was``
        by_protocol: dict[float, list[tuple[Row, dict[str, Any], str]]] = collections.defaultdict(list)
        for r, probe in zip(recs, probes):
            name = shape + (" (escaping off)" if r["escape_variant"] != "default" else "")
            if r.get("source_file") is not None:
                lab = dict(labels_by_line[(r["source_file"], r["source_line"])])
            else:  # a derived record with no log line behind it carries its own label
                lab = {k: r.get(k) for k in ("label", "scanner", "session", "transport", "run")}
            name = _split(name, lab, by_transport)
            row = rows.setdefault(name, Row(name))
            lab["raw"] = json.dumps(r["record"])[:200]
            where = f"{r['variant']} {r['source_file']}:{r['source_line']}"
            row.add(truth, lab, probe, where)
            t = r["time"][0] + r["time"][1] / 1e9
            if t in late:
                if probe is None:
                    unnamed[t].append((row, lab, where))
                elif probe.get("scanner") == "unknown" and not truth.right(
                        lab["label"], lab.get("scanner"), lab.get("session"), probe):
                    by_protocol[t].append((row, lab, where))
        for t, entries in late.items():
            _judge_late(truth, [e for e in entries if "was" not in e], unnamed.get(t, []), shape)
            _judge_late(truth, [e for e in entries if "was" in e], by_protocol.get(t, []), shape)
    for shape, (labs, probes) in _rsyslog_json_records(corpus, labels).items():
        for lab, probe in zip(labs, probes):
            name = _split(shape + (" (escaping off)" if lab["variant"] != "default" else ""), lab, by_transport)
            row = rows.setdefault(name, Row(name))
            row.add(truth, lab, probe, f"{lab['file']}:{lab['line']}")
    return list(rows.values())


def _judge_late(truth: Truth, entries: list[dict[str, Any]], lines: list[tuple[Row, dict[str, Any], str]],
                shape: str) -> None:
    """Pairs the ``named_late`` entries of one event time with the lines of
    that time that left unnamed: each entry with a probe line it names
    right if there is one, then with the other probe lines (a wrong name),
    then with benign lines (a benign line tagged). Refinements (entries that
    say ``was``) are paired so with the lines that left named by protocol."""
    entries = list(entries)
    left = [x for x in lines if x[1]["label"] != "benign"]
    for row, lab, where in list(left):
        for e in entries:
            if truth.right(lab["label"], lab.get("scanner"), lab.get("session"),
                           {"name": e.get("probe"), "id": e.get("id"), "scanner": e.get("scanner")}):
                row.add_late(truth, lab, e, where)
                entries.remove(e)
                left.remove((row, lab, where))
                break
    rest = left + [x for x in lines if x[1]["label"] == "benign"]
    for e, (row, lab, where) in zip(entries, rest):
        row.add_late(truth, lab, e, where)
    if len(entries) > len(rest):
        raise SystemExit(f"{shape}: {len(entries) - len(rest)} late names for no line left unnamed")


def table(rows: list[Row]) -> str:
    out = ["| shape | probe lines | tagged | named right | protocol only | wrong name | wrong scanner | name-recall | payload lost | "
           "name-recall, payload kept | named late (summary) | name-recall incl. late | benign lines | benign tagged | "
           "app-log traces |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    tot = Row("total")
    for r in rows:
        d = r.as_dict()
        kept = d["name_recall_payload_kept"]
        recall = "n/a" if d["name_recall"] is None else f"{d['name_recall']:.3f}"
        kept_s = "n/a" if kept is None else f"{kept:.3f}"
        with_late = "n/a" if d["name_recall_incl_late"] is None else f"{d['name_recall_incl_late']:.3f}"
        out.append(f"| {r.shape} | {r.probe_lines} | {r.tagged} | {r.named} | {r.by_protocol} | {r.wrong} | {r.wrong_scanner} | "
                   f"{recall} | {r.lost} | {kept_s} | {r.late} | {with_late} | {r.benign} | {r.benign_tagged} | "
                   f"{r.app_traces} |")
        tot.probe_lines += r.probe_lines
        tot.tagged += r.tagged
        tot.named += r.named
        tot.wrong += r.wrong
        tot.benign += r.benign
        tot.benign_tagged += r.benign_tagged
        tot.app_traces += r.app_traces
        tot.lost += r.lost
        tot.lost_named += r.lost_named
        tot.late += r.late
        tot.late_wrong += r.late_wrong
        tot.wrong_scanner += r.wrong_scanner
        tot.by_protocol += r.by_protocol
    d = tot.as_dict()
    out.append(f"| **all** | {tot.probe_lines} | {tot.tagged} | {tot.named} | {tot.by_protocol} | {tot.wrong} | {tot.wrong_scanner} | "
               f"{d['name_recall']:.3f} | {tot.lost} | {d['name_recall_payload_kept']:.3f} | {tot.late} | "
               f"{d['name_recall_incl_late']:.3f} | "
               f"{tot.benign} | {tot.benign_tagged} | {tot.app_traces} |")
    return "\n".join(out)


def _has_labels(corpus: Path) -> bool:
    return (corpus / "labels.jsonl").exists() or (corpus / "labels.jsonl.gz").exists()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, action="append",
                    help="a labelled corpus (repeatable; default: $PROBETAG_CORPUS or ../shared/corpus-dev, "
                         "plus tests/fixtures/corpus-extra)")
    ap.add_argument("--by-transport", action="store_true", help="one row per shape and transport (tcp/udp)")
    ap.add_argument("--by-run", action="store_true", help="one row per shape and capture run")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    ap.add_argument("--misses", action="store_true", help="list every unnamed, misnamed or benign-tagged line")
    args = ap.parse_args(argv)
    corpora = args.corpus or [Path(os.environ.get("PROBETAG_CORPUS", DEFAULT_CORPUS)), EXTRA_CORPUS]
    if not args.corpus:
        corpora = [c for c in corpora if _has_labels(c)]
    missing = [c for c in corpora if not _has_labels(c)]
    if missing or not corpora:
        print(f"eval_detection: no labelled corpus at {', '.join(map(str, missing)) or DEFAULT_CORPUS}",
              file=sys.stderr)
        return 2
    if args.by_run:
        SPLIT.add("run")
    t0 = time.monotonic()
    rows = []
    for corpus in corpora:
        rows += evaluate(corpus, args.by_transport)
    print(table(rows))
    print(f"\n(corpus {', '.join(map(str, corpora))}, {time.monotonic() - t0:.1f} s)")
    if args.misses:
        for r in rows:
            for m in r.misses:
                print(f"{r.shape}: {m}")
    if args.json:
        args.json.write_text(json.dumps([r.as_dict() for r in rows], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
