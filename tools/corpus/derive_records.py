#!/usr/bin/env python3
"""Derive Fluent Bit and Vector records for the extra corpus by APPLYING THEIR
DOCUMENTED PARSERS to captured bytes.  Neither program ran: these records are
what the stock parsers produce by their published definitions, not captures.

    python3 derive_records.py [--gzip] [CORPUS_DIR]   # -> CORPUS_DIR/records/records.jsonl(.gz), dropped.jsonl(.gz)

Inputs per run (written by capture_extra.py, labelled by label_extra.py):
  rsyslog/<run>/relay_omfwd.bin   rsyslog's omfwd stream (RSYSLOG_TraditionalForwardFormat,
                                  LF framing): one line per message, same order as the
                                  run's traditional.log
  rsyslog/<run>/json.log          the same messages' properties (RFC 5424 relay form)
  rsyslog/<run>/capture.pcap.gz   the scanner's own bytes (direct exposure)

Variants:
  fluentbit_syslog_rfc3164   Fluent Bit in_syslog (mode tcp, LF-separated) with the stock
                             `syslog-rfc3164` parser of conf/parsers.conf, fed by the rsyslog
                             relay.  Regex (Onigmo, Ruby syntax):
                               ^\\<(?<pri>[0-9]+)\\>(?<time>[^ ]* {1,2}[^ ]* [^ ]*) (?<host>[^ ]*)
                               (?<ident>[a-zA-Z0-9_\\/\\.\\-]*)(?:\\[(?<pid>[0-9]+)\\])?(?:[^\\:]*\\:)? *(?<message>.*)$
                             Keys in group order, unmatched optional groups left out;
                             Time_Key time, Time_Format %b %d %H:%M:%S (current year, UTC),
                             Time_Keep On (stock), so `time` stays in the record.  A line
                             the regex rejects is dropped (in_syslog logs a warning).
  fluentbit_syslog_rfc5424   the same with the stock `syslog-rfc5424` parser, fed by an
                             rsyslog relay using RSYSLOG_SyslogProtocol23Format (rebuilt
                             from json.log: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID
                             SD MSG; SD is `-` unless the sender's own RFC 5424 header had
                             one).  Regex:
                               ^\\<(?<pri>[0-9]{1,5})\\>1 (?<time>[^ ]+) (?<host>[^ ]+) (?<ident>[^ ]+)
                               (?<pid>[-0-9]+) (?<msgid>[^ ]+) (?<extradata>(\\[(.*)\\]|-)) (?<message>.+)$
                             (Time_Keep On).  Lines with an empty MSG do not match and are dropped.
  vector_syslog_relay        Vector `syslog` source (tcp) fed by the rsyslog relay.  As its
                             source code does (src/sources/syslog.rs, lib/codecs): TCP frames
                             come from the octet-counting framer, which falls back to tokio's
                             LinesCodec (frames end at LF, one trailing CR removed, a frame
                             that is not valid UTF-8 is an error and dropped); each frame is
                             trimmed and parsed with syslog_loose's parse_message_with_year_exact:
                             RFC 5424 first, then RFC 3164 (optional <PRI>, a timestamp
                             required, up to two header words that become hostname and
                             appname[procid], optional `:`, optional structured data, rest =
                             message); a frame neither parses is an error and **dropped**
                             (the "whole line becomes message" fallback is only in the
                             non-exact parse_message, which the source does not use).  Fields: message, hostname, appname, procid, msgid,
                             facility, severity, timestamp, version (5424 only), plus the
                             source's host (hostname if parsed, else the peer address),
                             source_ip, source_type "syslog".  As probetag's Vector input
                             maps events (docs/vector.md), `timestamp` becomes the entry's
                             time and leaves the record; the tag is `vector`.
  vector_syslog_direct       the Vector syslog source exposed to the scanner itself (the bytes
                             of every flow to the rsyslog port, from the capture), framed and
                             parsed as above: TCP through the octet-counting framer (a frame
                             starting with 1-9 is read as `LEN SP DATA`: a LEN that is no
                             number is discarded up to its space, DATA not all there is lost
                             at close) and LinesCodec (bytes left at close form a last frame);
                             UDP one datagram per frame, decoded as UTF-8 with U+FFFD for
                             invalid sequences (the deserializer's default `lossy`).  A probe
                             has no syslog timestamp, so almost every probe frame is dropped
                             (dropped.jsonl).
Records are emitted as Fluentd-style entries (tag, [sec, nsec], map) so the
evaluator's record path can run them; all values are msgpack str.
"""
import base64
import datetime
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pcapflows  # noqa: E402
from label_extra import read_bytes, write_text  # noqa: E402

YEAR = 2026

FB_3164 = re.compile(r"^\<(?P<pri>[0-9]+)\>(?P<time>[^ ]* {1,2}[^ ]* [^ ]*) (?P<host>[^ ]*) "
                     r"(?P<ident>[a-zA-Z0-9_\/\.\-]*)(?:\[(?P<pid>[0-9]+)\])?(?:[^\:]*\:)? *(?P<message>.*)$")
FB_5424 = re.compile(r"^\<(?P<pri>[0-9]{1,5})\>1 (?P<time>[^ ]+) (?P<host>[^ ]+) (?P<ident>[^ ]+) "
                     r"(?P<pid>[-0-9]+) (?P<msgid>[^ ]+) (?P<extradata>(\[(.*)\]|-)) (?P<message>.+)$")
FB_GROUPS_3164 = ["pri", "time", "host", "ident", "pid", "message"]
FB_GROUPS_5424 = ["pri", "time", "host", "ident", "pid", "msgid", "extradata", "message"]

FAC = ["kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
       "ntp", "audit", "alert", "clockd"] + ["local%d" % i for i in range(8)]
SEV = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]
MONTHS = {m: i + 1 for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())}

TS3164 = re.compile(r"([A-Za-z]{3}) +(\d{1,2}) (\d{2}):(\d{2}):(\d{2})")
TS3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})")
SD_RE = re.compile(r'(?:\[[^\s\]=\[]+(?: [^\s=\]]+="(?:[^"\\]|\\.)*")*\])+')
V5424 = re.compile(r"^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (-|" + SD_RE.pattern + r")(?: (.*))?$", re.S)


def b2s(b):
    """bytes -> str with every byte kept (latin-1 view), for byte-wise regexes."""
    return b.decode("latin-1")


def s2b(s):
    return s.encode("latin-1")


def val(b):
    """JSON form of a value: str when valid UTF-8, else {"b64": ...}."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(b).decode()}


def vtype(b):
    n = len(b)
    return "str(fixstr)" if n < 32 else "str8" if n < 256 else "str16" if n < 65536 else "str32"


def ts3164(s):
    m = TS3164.match(s.strip())
    if not m or m.group(1).title() not in MONTHS:
        return None
    try:
        d = datetime.datetime(YEAR, MONTHS[m.group(1).title()], int(m.group(2)), int(m.group(3)), int(m.group(4)),
                              int(m.group(5)), tzinfo=datetime.timezone.utc)
    except ValueError:
        return None
    return d.timestamp()


def ts3339(s):
    try:
        return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def etime(t):
    sec = int(t)
    return [sec, int(round((t - sec) * 1e9))]


# ------------------------------------------------------------------ Fluent Bit

def fluentbit(line, rx, groups, t_recv):
    s = b2s(line)
    m = rx.match(s)
    if not m:
        return None, None
    rec, types = {}, {}
    for g in groups:
        v = m.group(g)
        if v is None:
            continue
        rec[g] = val(s2b(v))
        types[g] = vtype(s2b(v))
    t = ts3164(m.group("time")) if rx is FB_3164 else ts3339(m.group("time"))
    return rec, types, (t if t is not None else t_recv)


# ------------------------------------------------------------------ Vector (syslog_loose)

#: Rust's ``char::is_whitespace`` (Unicode White_Space), what ``str::trim`` strips.
RUST_WS = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"


def loose(text):
    """syslog_loose's parse_message_with_year_exact on a str (trimmed as the
    source does): a dict of parsed fields, or None when neither RFC 5424 nor
    RFC 3164 parses."""
    s = text.strip(RUST_WS)
    m = V5424.match(s)
    if m:
        pri = int(m.group(1))
        out = {"facility": FAC[pri >> 3] if pri >> 3 < len(FAC) else None, "severity": SEV[pri & 7],
               "version": 1, "timestamp": m.group(2), "hostname": m.group(3), "appname": m.group(4),
               "procid": m.group(5), "msgid": m.group(6), "message": m.group(8) or ""}
        return {k: v for k, v in out.items() if v not in (None, "-")}
    m = re.match(r"^(?:<(\d+)>)?", s)
    pri = int(m.group(1)) if m.group(1) else None
    rest = s[m.end():].lstrip(" ")
    tm = TS3164.match(rest) or TS3339.match(rest)
    if not tm:
        return None  # parse_message_with_year_exact fails: the source drops the frame
    ts = tm.group(0)
    rest = rest[tm.end():]
    fields = []
    for _ in range(2):
        fm = re.match(r"^ +([^\s:]+)", rest)
        if not fm:
            break
        fields.append(fm.group(1))
        rest = rest[fm.end():]
    host = app = procid = None
    systag = re.compile(r"^([^\s:\[]*)\[([^\]]+)\]$")
    if len(fields) == 2:
        host = fields[0]
        st = systag.match(fields[1])
        app, procid = (st.group(1), st.group(2)) if st else (fields[1], None)
    elif len(fields) == 1:
        st = systag.match(fields[0])
        if st:
            app, procid = st.group(1), st.group(2)
        else:
            host = fields[0]
    rest = rest.lstrip(" ")
    if rest.startswith(":"):
        rest = rest[1:]
    rest = rest.lstrip(" ")
    sdm = SD_RE.match(rest)
    if sdm:
        rest = rest[sdm.end():].lstrip(" ")
    out = {"message": rest, "timestamp": ts}
    if pri is not None:
        out["facility"] = FAC[pri >> 3] if pri >> 3 < len(FAC) else None
        out["severity"] = SEV[pri & 7]
    for k, v in (("hostname", host), ("appname", app), ("procid", procid)):
        if v not in (None, "-"):
            out[k] = v
    return {k: v for k, v in out.items() if v is not None}


def vector_record(text, peer_ip, t_recv):
    p = loose(text)
    if p is None:
        return None
    t = None
    if "timestamp" in p:
        t = ts3164(p["timestamp"]) if TS3164.match(p["timestamp"]) else ts3339(p["timestamp"])
    t = t if t is not None else t_recv
    rec = dict(p)
    rec.pop("timestamp", None)  # the event time (probetag's Vector input takes `timestamp` as time)
    rec["host"] = p.get("hostname", peer_ip)
    rec["source_ip"] = peer_ip
    rec["source_type"] = "syslog"
    if "version" in rec:
        rec["version"] = str(rec["version"])
    enc = {k: v.encode("utf-8") for k, v in rec.items()}
    return {k: val(v) for k, v in enc.items()}, {k: vtype(v) for k, v in enc.items()}, t


def utf8(b):
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return None


def vector_frames(flow):
    """(time, text or None, bytes) frames Vector's syslog source makes of one
    flow: text None when the framer drops the frame (not valid UTF-8 over
    TCP)."""
    if flow["proto"] == "udp":
        d = flow["payload"]
        return [(flow["t_first_data"], d.decode("utf-8", "replace"), d)] if d else []
    out = []
    segs = flow["segments"]
    data = b"".join(s for _, s in segs)
    times = []
    for ts, s in segs:
        times += [ts] * len(s)
    t_close = flow["t_end"] or (times[-1] if times else flow["t_first_data"])
    i = 0
    while i < len(data):
        if 0x31 <= data[i] <= 0x39:
            # OctetCountingDecoder: LEN SP DATA (a first byte 1-9)
            sp = data.find(b" ", i)
            if sp < 0:
                nl = data.find(b"\n", i)
                if nl < 0:
                    break  # waits for a space that never comes: lost at close
                i = nl + 1  # no length: discarded to the end of the line
                continue
            try:
                n = int(data[i:sp].decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                i = sp + 1  # not a number: discarded up to its space
                continue
            start = sp + 1
            if start + n > len(data):
                break  # incomplete octet-counted frame: lost
            fr = data[start:start + n]
            out.append((times[start + n - 1], utf8(fr), fr))
            i = start + n
            continue
        # tokio LinesCodec: to LF, one trailing CR removed, UTF-8 or an error
        j = data.find(b"\n", i)
        fr, t = (data[i:], t_close) if j < 0 else (data[i:j], times[j])
        if fr.endswith(b"\r"):
            fr = fr[:-1]
        out.append((t, utf8(fr), fr))
        if j < 0:
            break
        i = j + 1
    return [x for x in out if x[2]]


# ------------------------------------------------------------------ driver

def main(argv):
    argv = [a for a in argv if a != "--gzip"]
    corpus = os.path.abspath(argv[0] if argv else os.path.join(HERE, "..", "..", "tests", "fixtures", "corpus-extra"))
    labels = [json.loads(x) for x in read_bytes(os.path.join(corpus, "labels.jsonl")).splitlines() if x]
    by_line = {(l["file"], l["line"]): l for l in labels}
    sessions = {s["session"]: s for s in
                (json.loads(x) for x in read_bytes(os.path.join(corpus, "sessions.jsonl")).splitlines() if x)}
    rows, dropped = [], []
    runs = sorted(d for d in os.listdir(os.path.join(corpus, "rsyslog"))
                  if os.path.exists(os.path.join(corpus, "rsyslog", d, "run.json")))
    copy = ("label", "scanner", "session", "transport", "input", "origin", "msg_index", "run", "caused_by")
    for run in runs:
        rdir = os.path.join(corpus, "rsyslog", run)
        meta = json.load(open(os.path.join(rdir, "run.json")))
        relay = read_bytes(os.path.join(rdir, "relay_omfwd.bin")).split(b"\n")
        if relay and relay[-1] == b"":
            relay.pop()
        jrecs = [json.loads(x.decode("utf-8", "surrogateescape")) for x in
                 read_bytes(os.path.join(rdir, "json.log")).split(b"\n") if x]
        trad = "rsyslog/%s/traditional.log" % run
        if len(relay) != len(jrecs):
            print("WARNING %s: %d relay lines, %d messages" % (run, len(relay), len(jrecs)))
            continue

        def emit(variant, k, tag, rec_types, src_file, src_line, lab, extra=None):
            rec, types, t = rec_types
            row = {"variant": variant, "source_file": src_file, "source_line": src_line, "tag": tag,
                   "time": etime(t), "record": rec, "value_types": types,
                   "capture": {"fluentd_run": "%s:%s" % (variant, run), "conn": 1, "frame": k // 100, "entry": k % 100},
                   "derived": True, "escape_variant": "default"}
            for c in copy:
                if lab.get(c) is not None:
                    row[c] = lab[c]
            row["run"] = run
            if extra:
                row.update(extra)
            rows.append(row)

        for k, (line, jr) in enumerate(zip(relay, jrecs)):
            lab = by_line[(trad, k + 1)]
            t_recv = datetime.datetime.fromisoformat(jr["timegenerated"]).timestamp()
            got = fluentbit(line, FB_3164, FB_GROUPS_3164, t_recv)
            if got[0] is None:
                dropped.append({"variant": "fluentbit_syslog_rfc3164", "source_file": trad, "source_line": k + 1,
                                "reason": "regex did not match", "wire_line": val(line), "label": lab["label"],
                                "run": run})
            else:
                emit("fluentbit_syslog_rfc3164", k, "fb.syslog", got, trad, k + 1, lab, {"relay_wire_line": val(line)})
            # RFC 5424 relay line rebuilt from the message's properties
            raw = jr["rawmsg"].encode("utf-8", "surrogateescape")
            sdm = V5424.match(b2s(raw))
            sd = sdm.group(7) if sdm else "-"
            l5424 = ("<%s>1 %s %s %s %s %s %s %s" % (jr["pri"], jr["timereported"], jr["hostname"] or "-",
                                                    jr["app_name"] or "-", jr["procid"] or "-", jr["msgid"] or "-",
                                                    sd, jr["msg"])).encode("utf-8", "surrogateescape")
            got = fluentbit(l5424, FB_5424, FB_GROUPS_5424, t_recv)
            if got[0] is None:
                dropped.append({"variant": "fluentbit_syslog_rfc5424", "source_file": trad, "source_line": k + 1,
                                "reason": "regex did not match", "wire_line": val(l5424), "label": lab["label"],
                                "run": run})
            else:
                emit("fluentbit_syslog_rfc5424", k, "fb.syslog", got, trad, k + 1, lab, {"relay_wire_line": val(l5424)})
            # the relay is one TCP connection: LinesCodec frames (rsyslog's
            # forward lines start with '<', never octet-counted)
            text = utf8(line[:-1] if line.endswith(b"\r") else line)
            got = vector_record(text, "127.0.0.1", t_recv) if text is not None else None
            if got is None:
                dropped.append({"variant": "vector_syslog_relay", "source_file": trad, "source_line": k + 1,
                                "reason": "not valid UTF-8" if text is None else "not parsed as syslog",
                                "wire_line": val(line), "label": lab["label"], "run": run})
            else:
                emit("vector_syslog_relay", k, "vector", got, trad, k + 1, lab, {"relay_wire_line": val(line)})
        # direct exposure: the scanner's and senders' bytes to the rsyslog port
        flows = pcapflows.flows(os.path.join(rdir, "capture.pcap.gz"), [meta["port_rsyslog"]])
        seen, k = {}, 0
        for f in flows:
            key = (f["proto"], f["src"], f["sport"], f["dport"])
            base = "%s:%s:%s:%d->%d" % ((run,) + key)
            if f["proto"] == "tcp":
                seen[key] = seen.get(key, 0) + 1
                sess = base + ("" if seen[key] == 1 else "#%d" % seen[key])
            else:
                sess = base
            if not f["payload"]:
                continue
            s = sessions.get(sess)
            if s is None:
                continue
            lab = {"label": s["label"], "scanner": s["scanner"], "session": sess, "transport": f["proto"],
                   "input": "main", "origin": "network"}
            for t, text, fr in vector_frames(f):
                got = vector_record(text, f["src"], t) if text is not None else None
                if got is None:
                    dropped.append({"variant": "vector_syslog_direct", "session": sess,
                                    "reason": "not valid UTF-8" if text is None else "not parsed as syslog",
                                    "wire_frame": val(fr), "label": lab["label"], "run": run})
                    continue
                emit("vector_syslog_direct", k, "vector", got, None, None, lab, {"wire_frame": val(fr)})
                k += 1
    rows.sort(key=lambda r: (r["variant"], r["run"], r["capture"]["frame"], r["capture"]["entry"]))
    od = os.path.join(corpus, "records")
    os.makedirs(od, exist_ok=True)
    gz = "--gzip" in sys.argv
    write_text(os.path.join(od, "records.jsonl"),
               "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows), gz)
    write_text(os.path.join(od, "dropped.jsonl"), "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in dropped), gz)
    import collections
    c = collections.Counter((r["variant"], r["label"] not in ("benign",)) for r in rows)
    for (v, probe), n in sorted(c.items()):
        print("%-28s %-6s %d" % (v, "probe" if probe else "benign", n))
    print("dropped", collections.Counter((d["variant"], d["label"] != "benign") for d in dropped))


if __name__ == "__main__":
    main(sys.argv[1:])
