#!/usr/bin/env python3
"""Label every line of the extra collector corpus (capture_extra.py output).

    python3 label_extra.py [--gzip] [CORPUS_DIR]     (default tests/fixtures/corpus-extra)

Writes CORPUS_DIR/labels.jsonl (labels.jsonl.gz with --gzip) (one object per physical line of every log
file, same fields as corpus-dev's labels.jsonl plus `collector` and
`source_driver`), sessions.jsonl and label_report.json.

How a line gets its label (no nmap-service-probes file is used):
  1. The run's capture (rsyslog/<run>/capture.pcap.gz) is rebuilt into client
     flows (one per TCP connection, one per UDP datagram; sessions are TCP
     connections / UDP source sockets).
  2. Each flow: no payload -> nothing to log; a benign sender (source
     127.0.9.x, or a syslog message `<PRI>...`) -> benign; otherwise, while
     nmap ran, the probe nmap's `--version-trace -d` output names for that
     port at the time of the flow's first write (`Service scan sending probe
     NAME to 127.0.0.1:PORT`, or `nse:SCRIPT` while a version-category NSE
     script ran against the port).  nsock's clock is aligned to the capture
     by the first nmap write.
  3. Each daemon message is joined to a flow: same transport, destination
     port and source address, time inside the flow's life, and the logged
     bytes found in the flow's payload (rsyslog's `#ooo` escapes undone
     first); if no payload contains them, the nearest flow in time. An
     empty TCP message goes to the flow with a frame that is only a NUL
     that closed nearest its time (rsyslog logs that frame at the close).
     rsyslog messages come from json.log (properties incl. rawmsg), syslog-ng
     messages from <src>_meta.log (base64 of RAWMSG, HOST, MSGHDR, MSG).
  4. Daemon-internal messages are benign, origin `<daemon>-internal`, with
     `caused_by` naming the flow they are about where the text says so
     (syslog-ng: `client='AF_INET(ip:port)'`; rsyslog: `(ip) A` framing
     errors, nearest flow in time; syslog-ng `Invalid frame header`: the
     nearest TCP flow to the syslog() port).
  5. Physical lines: every message is one line in the rsyslog files (default
     escaping: no raw LF).  syslog-ng writes control bytes raw, so a message
     whose HOST/MSGHDR/MSG holds LFs (UDP datagrams) spans 1 + (number of
     LFs) lines; continuation lines get `continuation: true`.
"""
import base64
import collections
import datetime
import gzip
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pcapflows  # noqa: E402

SYSLOG_RE = re.compile(rb"^(\d+ )?<\d{1,3}>")
BENIGN_SRC_PREFIX = "127.0.9."
RSYSLOG_FILES = ["traditional", "fromhost_ip", "fromhost"]
SNG_FILES = {"network": ["net_default", "net_iso"], "syslog": ["sys_default", "sys_iso"]}
ESC_RE = re.compile(rb"#([0-3][0-7][0-7])")
TS_PREFIX = re.compile(rb"^(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d) ")


def read_bytes(path):
    """A file's bytes; PATH.gz is read when only the compressed copy exists
    (the committed fixture keeps labelling inputs gzipped)."""
    if os.path.exists(path):
        with open(path, "rb") as fh:
            return fh.read()
    with gzip.open(path + ".gz", "rb") as fh:
        return fh.read()


def exists(path):
    return os.path.exists(path) or os.path.exists(path + ".gz")


def write_text(path, text, gz=False):
    """Write PATH (or PATH.gz), removing the other form."""
    for p in (path, path + ".gz"):
        if os.path.exists(p):
            os.unlink(p)
    if gz:
        with gzip.open(path + ".gz", "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)


def unescape_rs(b):
    return ESC_RE.sub(lambda m: bytes([int(m.group(1), 8)]), b)


def valid_utf8(raw):
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


class Run:
    def __init__(self, corpus, name):
        self.corpus, self.name = corpus, name
        self.rdir = os.path.join(corpus, "rsyslog", name)
        self.sdir = os.path.join(corpus, "syslog-ng", name)
        with open(os.path.join(self.rdir, "run.json")) as fh:
            self.meta = json.load(fh)
        m = self.meta
        self.p_rs, self.p_net, self.p_sys = m["port_rsyslog"], m["port_syslog_ng_network"], m["port_syslog_ng_syslog"]
        self.report = collections.Counter()
        self.flows = [f for f in pcapflows.flows(os.path.join(self.rdir, "capture.pcap.gz"),
                                                 [self.p_rs, self.p_net, self.p_sys])]
        self._sessions()

    # ---------------------------------------------------------- flows
    def _sessions(self):
        seen = collections.Counter()
        for f in self.flows:
            key = (f["proto"], f["src"], f["sport"], f["dport"])
            base = "%s:%s:%s:%d->%d" % ((self.name,) + key)
            if f["proto"] == "tcp":
                seen[key] += 1
                f["session"] = base + ("" if seen[key] == 1 else "#%d" % seen[key])
            else:
                f["session"] = base
            f["data"] = bool(f["payload"])
        nm = [s for s in self.meta["steps"] if s.get("scanner") == "nmap"]
        self.nmap_win = (nm[0]["t_start"] - 0.5, nm[0]["t_end"] + 0.5) if nm else (0, 0)
        self._trace()
        for f in self.flows:
            self.classify(f)

    def _trace(self):
        ev = []
        for fn in sorted(os.listdir(self.rdir)):
            if not fn.endswith(("_trace.txt", "_trace.txt.gz")) or (
                    fn.endswith(".gz") and os.path.exists(os.path.join(self.rdir, fn[:-3]))):
                continue
            active, cur = set(), {}
            text = read_bytes(os.path.join(self.rdir, fn[:-3] if fn.endswith(".gz") else fn))
            for line in text.decode("utf-8", "replace").splitlines():
                m = re.match(r"NSE: (Starting|Finished) (\S+) .*against 127\.0\.0\.1:(\d+)", line)
                if m:
                    (active.add if m.group(1) == "Starting" else active.discard)((m.group(2), int(m.group(3))))
                    continue
                m = re.match(r"Service scan sending probe (\S+) to 127\.0\.0\.1:(\d+) \((tcp|udp)\)", line)
                if m:
                    cur[int(m.group(2))] = m.group(1)
                    continue
                m = re.search(r"\[(\d+\.\d+)s\] nsock_(?:write|sendto)\(\): \w+ request for (\d+) bytes "
                              r"to IOD #\d+ EID \d+ \[127\.0\.0\.1:(\d+)\]", line)
                if m:
                    port = int(m.group(3))
                    scr = sorted(n for n, p in active if p == port)
                    ctx = ("nse:" + scr[0]) if scr else ("probe:" + cur.get(port, "?"))
                    ev.append((float(m.group(1)), port, int(m.group(2)), ctx))
        self.events = ev
        nmap_flows = [f for f in self.flows if f["data"] and not self._benign(f)
                      and self.nmap_win[0] <= f["t_start"] <= self.nmap_win[1]]
        self.toff = None
        if ev and nmap_flows:
            first = min(nmap_flows, key=lambda g: g["t_first_data"])
            self.toff = first["t_first_data"] - min(e[0] for e in ev)

    def _benign(self, f):
        pl = f["payload"]
        return f["src"].startswith(BENIGN_SRC_PREFIX) or bool(SYSLOG_RE.match(pl or b""))

    def classify(self, f):
        f["scanner"] = None
        if not f["data"]:
            f["label"], f["method"] = "no-data", "no-data"
            return
        if self._benign(f):
            f["label"], f["method"] = "benign", "benign-sender"
            return
        if not (self.nmap_win[0] <= f["t_start"] <= self.nmap_win[1]) or self.toff is None:
            f["label"], f["method"] = "unknown", "none"
            return
        f["scanner"] = "nmap"
        n0 = len(f["segments"][0][1])
        cands = [e for e in self.events if e[1] == f["dport"]]
        best = min(cands, key=lambda e: abs(e[0] + self.toff - f["t_first_data"]) + (0 if e[2] == n0 else 0.5),
                   default=None)
        if best is None or abs(best[0] + self.toff - f["t_first_data"]) > 1.0:
            f["label"], f["method"] = "nmap-unidentified", "pcap+nmap-trace-nomatch"
            self.report["trace_nomatch"] += 1
            return
        f["trace_dt"] = round(best[0] + self.toff - f["t_first_data"], 4)
        f["trace_size_equal"] = best[2] == n0
        self.report["trace_size_equal" if best[2] == n0 else "trace_size_differs"] += 1
        ctx = best[3]
        if ctx.startswith("nse:"):
            f["label"], f["method"] = ctx, "pcap+nmap-trace-nse"
        else:
            f["label"], f["method"] = ctx[6:], "pcap+nmap-trace"

    def assign(self, proto, dport, src, t, content, cuts=b"\n"):
        cands = [f for f in self.flows if f["proto"] == proto and f["dport"] == dport
                 and f["src"] == src and f["data"]]

        def dist(f):
            lo = f["t_first_data"] - 0.05
            hi = (f["t_end"] if f["t_end"] else f["t_last_data"]) + 2.0
            return 0.0 if lo <= t <= hi else min(abs(t - lo), abs(t - hi))

        # syslog-ng drops NULs at both ends of a UDP message: compare without them too
        if not isinstance(content, list):
            content = [content]
        if proto == "tcp" and not any(content):
            # An empty message: rsyslog logs a TCP frame that is only a NUL
            # so (FIELD_GUIDE 2.1), and a last frame without LF when the
            # connection closes. Every payload "contains" no bytes, and the
            # next connection may start in the same instant: take the flow
            # with such a frame that closed nearest the message's time.
            nul = [f for f in cands if b"\n\x00\n" in b"\n" + f["payload"] + b"\n" and f["t_end"]
                   and abs(f["t_end"] - t) < 2.0]
            if nul:
                nul.sort(key=lambda f: abs(f["t_end"] - t))
                return nul[0], "nul-frame"
        def closed_with(f, c):
            # The bytes after a stream's last delimiter (``cuts``) are logged
            # when the connection closes, which can be the instant the next
            # one opens: a short last piece (``\x04``) found in both payloads
            # is the one of the flow that closed then.
            if proto != "tcp" or not f["t_end"] or abs(f["t_end"] - t) > 1.0 or f.get("tail_logged"):
                return False
            tail = re.split(b"[" + re.escape(cuts) + b"]", f["payload"])[-1]
            return c in (tail, tail.rstrip(b"\r"))

        for c in [x for c in content for x in (c, c.strip(b"\0"))]:
            hit = [f for f in cands if c and c in f["payload"] and dist(f) < 30]
            if hit:
                hit.sort(key=lambda f: (not closed_with(f, c), dist(f), abs(f["t_first_data"] - t)))
                if closed_with(hit[0], c):
                    hit[0]["tail_logged"] = True  # (once: the same bytes may come again in the next flow)
                return hit[0], "content"
        if cands:
            cands.sort(key=lambda f: (dist(f), abs(f["t_first_data"] - t)))
            if dist(cands[0]) < 30:
                return cands[0], "time"
        return None, "none"

    def flow_by_client(self, sport, dport, t):
        c = [f for f in self.flows if f["proto"] == "tcp" and f["sport"] == sport and f["dport"] == dport]
        c.sort(key=lambda f: abs(f["t_start"] - t))
        return c[0] if c else None

    def cause(self, f):
        if f is None:
            return None
        f["internal"] = f.get("internal", 0) + 1
        return {"session": f["session"], "label": f["label"], "scanner": f["scanner"]}

    # ---------------------------------------------------------- rsyslog
    def rsyslog_msgs(self):
        out = []
        for k, ln in enumerate(l for l in read_bytes(os.path.join(self.rdir, "json.log")).split(b"\n") if l):
            r = json.loads(ln.decode("utf-8", "surrogateescape"))
            r = {a: v.encode("utf-8", "surrogateescape") for a, v in r.items()}
            inp = r["inputname"].decode()
            t = datetime.datetime.fromisoformat(r["timegenerated"].decode()).timestamp()
            m = {"msg_index": k, "inputname": inp, "collector": "rsyslog"}
            if inp.startswith(("tcp", "udp")):
                proto = inp[:3]
                content = unescape_rs(r["rawmsg"])
                f, how = self.assign(proto, int(inp[3:]), r["fromhost_ip"].decode(), t, content)
                m.update(transport=proto, input="main", origin="network", source_driver="im" + proto)
                self._set_flow(m, f, how)
            else:
                cb = None
                msg = r["msg"]
                mm = re.search(rb"imtcp tcp(\d+): .*\(ip\) ([0-9.]+)", msg)
                if mm:
                    c = [f for f in self.flows if f["proto"] == "tcp" and f["src"] == mm.group(2).decode()
                         and f["dport"] == int(mm.group(1)) and f["data"] and f["t_first_data"] <= t + 0.5]
                    c.sort(key=lambda f: abs(f["t_first_data"] - t))
                    cb = self.cause(c[0] if c else None)
                elif b"Incomplete frame at end of stream" in msg:
                    c = [f for f in self.flows if f["proto"] == "tcp" and f["dport"] == self.p_rs and f["data"]
                         and f["t_end"] and abs(f["t_end"] - t) < 10 and not self._benign(f)
                         and f["payload"][:1].isdigit()]
                    c.sort(key=lambda f: abs(f["t_end"] - t))
                    cb = self.cause(c[0] if c else None)
                m.update(transport=None, input="internal", origin="rsyslogd-internal", source_driver="internal",
                         label="benign", scanner=None, session=None, label_method="internal")
                if cb:
                    m["caused_by"] = cb
            out.append(m)
        return out

    def _set_flow(self, m, f, how):
        if f is None:
            m.update(label="unknown", scanner=None, session=None, label_method="unmatched")
            self.report["unmatched"] += 1
            return
        m.update(label=f["label"], scanner=f["scanner"], session=f["session"],
                 label_method=f["method"] + "+" + how)
        f["lines"] = f.get("lines", 0) + 1
        self.report["assign_" + m["collector"] + "_" + how] += 1

    # ---------------------------------------------------------- syslog-ng
    def sng_msgs(self, src):
        out = []
        path = os.path.join(self.sdir, src[:3] + "_meta.log")
        rows = [l for l in read_bytes(path).split(b"\n") if l]
        for k, ln in enumerate(rows):
            c = ln.split(b"\t")
            t, proto, sip, dport, source = float(c[0]), c[1].decode(), c[2].decode(), c[3].decode(), c[4].decode()
            raw, host, hdr, msg = (base64.b64decode(x) for x in c[5:9])
            m = {"msg_index": k, "collector": "syslog-ng", "spanbytes": host + b" " + hdr + msg}
            if source == "s_int":
                cb = None
                mm = re.search(rb"client='AF_INET\(([0-9.]+):(\d+)\)', local='AF_INET\(127\.0\.0\.1:(\d+)\)'", msg)
                if mm:
                    cb = self.cause(self.flow_by_client(int(mm.group(2)), int(mm.group(3)), t))
                elif b"Invalid frame header" in msg:
                    cc = [f for f in self.flows if f["proto"] == "tcp" and f["dport"] == self.p_sys and f["data"]
                          and f["t_first_data"] <= t + 0.5]
                    cc.sort(key=lambda f: abs(f["t_first_data"] - t))
                    cb = self.cause(cc[0] if cc else None)
                m.update(transport=None, input="internal", origin="syslog-ng-internal", source_driver="internal",
                         label="benign", scanner=None, session=None, label_method="internal")
                if cb:
                    m["caused_by"] = cb
            else:
                tr = {"6": "tcp", "17": "udp"}.get(proto)
                # RAWMSG stops at the first NUL: the parsed fields carry the rest
                f, how = self.assign(tr, int(dport), sip, t, [raw, hdr + msg, msg], cuts=b"\n\0")
                m.update(transport=tr, input="main", origin="network", source_driver=src)
                self._set_flow(m, f, how)
            out.append(m)
        return out

    # ---------------------------------------------------------- lines
    def lines(self):
        out = []
        jobs = [("rsyslog", self.rdir, RSYSLOG_FILES, self.rsyslog_msgs(), None)]
        for src, files in SNG_FILES.items():
            jobs.append(("syslog-ng", self.sdir, files, self.sng_msgs(src), src))
        self.msgs = []
        for collector, d, files, msgs, src in jobs:
            self.msgs += msgs
            for fmt in files:
                path = os.path.join(d, fmt + ".log")
                with open(path, "rb") as fh:
                    phys = fh.read().split(b"\n")
                if phys and phys[-1] == b"":
                    phys.pop()
                fmsgs = self.file_order(msgs, phys, fmt)
                if fmsgs is None:
                    self.report["misaligned_" + fmt] += 1
                    continue
                spans = [1 + m["spanbytes"].count(b"\n") if "spanbytes" in m else 1 for m in fmsgs]
                if sum(spans) != len(phys):
                    print("WARNING %s %s: %d lines, %d expected" % (self.name, fmt, len(phys), sum(spans)))
                    self.report["misaligned_" + fmt] += 1
                    continue
                ln = 0
                for m, span in zip(fmsgs, spans):
                    for j in range(span):
                        raw = phys[ln]
                        ln += 1
                        rec = {"run": self.name, "variant": "default", "collector": collector,
                               "source_driver": m["source_driver"],
                               "file": os.path.relpath(path, self.corpus), "format": fmt, "line": ln,
                               "raw": raw.decode("utf-8", "replace"), "utf8_valid": valid_utf8(raw),
                               "label": m["label"], "scanner": m["scanner"], "session": m["session"],
                               "transport": m["transport"], "input": m["input"], "origin": m["origin"],
                               "msg_index": m["msg_index"], "label_method": m["label_method"]}
                        if j:
                            rec["continuation"] = True
                        if not rec["utf8_valid"]:
                            rec["raw_b64"] = base64.b64encode(raw).decode()
                        if m.get("caused_by"):
                            rec["caused_by"] = m["caused_by"]
                        out.append(rec)
        return out

    def file_order(self, msgs, phys, fmt):
        """The messages in the order a file holds them.  rsyslog writes all of
        a run's files from one ruleset, in one order.  syslog-ng's internal()
        and network log paths reach a file in an order of their own, so each
        syslog-ng line is matched by content: the line after its timestamp
        is HOST SP MSGHDR MSG, continued on the next lines when MSG holds
        LFs.  Identical messages keep their relative order."""
        if not msgs or "spanbytes" not in msgs[0]:
            return msgs
        pending, out, i = list(msgs), [], 0
        while i < len(phys):
            body = TS_PREFIX.sub(b"", phys[i], count=1)
            for k, m in enumerate(pending):
                parts = m["spanbytes"].split(b"\n")
                if parts[0] == body and phys[i + 1:i + len(parts)] == parts[1:]:
                    break
            else:
                print("WARNING %s %s: line %d matches no message" % (self.name, fmt, i + 1))
                return None
            if k:
                self.report["syslog-ng_lines_out_of_meta_order_" + fmt] += 1
            out.append(pending.pop(k))
            i += len(parts)
        if pending:
            print("WARNING %s %s: %d messages not in the file" % (self.name, fmt, len(pending)))
            return None
        return out

    def sessions(self):
        rows = []
        for f in self.flows:
            if not f["data"]:
                continue
            rows.append({"run": self.name, "session": f["session"], "transport": f["proto"], "src": f["src"],
                         "sport": f["sport"], "dport": f["dport"],
                         "collector": {self.p_rs: "rsyslog", self.p_net: "syslog-ng-network",
                                       self.p_sys: "syslog-ng-syslog"}[f["dport"]],
                         "label": f["label"], "scanner": f["scanner"], "method": f["method"],
                         "t_start": round(f["t_start"], 6), "payload_len": len(f["payload"]),
                         "trace_dt": f.get("trace_dt"), "trace_size_equal": f.get("trace_size_equal"),
                         "messages_logged": f.get("lines", 0), "internal_messages_caused": f.get("internal", 0)})
        return rows


def main(argv):
    argv = [a for a in argv if a != "--gzip"]
    corpus = os.path.abspath(argv[0] if argv else os.path.join(HERE, "..", "..", "tests", "fixtures", "corpus-extra"))
    runs = sorted(d for d in os.listdir(os.path.join(corpus, "rsyslog"))
                  if os.path.exists(os.path.join(corpus, "rsyslog", d, "run.json")))
    lines, sessions, report = [], [], {}
    for name in runs:
        r = Run(corpus, name)
        ls = r.lines()
        lines += ls
        sessions += r.sessions()
        per = collections.Counter((m["collector"] + ":" + m["source_driver"], m["label"] if m["label"] in
                                   ("benign", "unknown") else "probe") for m in r.msgs)
        report[name] = {"diagnostics": dict(r.report),
                        "messages": {"%s/%s" % k: v for k, v in sorted(per.items())},
                        "probe_flows": sum(1 for f in r.flows if f["scanner"] == "nmap"),
                        "probe_flows_not_logged": sorted(collections.Counter(
                            "%s:%s:%d" % (f["label"], f["proto"], f["dport"]) for f in r.flows
                            if f["scanner"] == "nmap" and not f.get("lines")).items())}
        print(name, json.dumps(report[name]["diagnostics"]), json.dumps(report[name]["messages"]))
    gz = "--gzip" in sys.argv
    write_text(os.path.join(corpus, "labels.jsonl"),
               "".join(json.dumps(l, ensure_ascii=False, separators=(",", ":")) + "\n" for l in lines), gz)
    write_text(os.path.join(corpus, "sessions.jsonl"), "".join(json.dumps(s) + "\n" for s in sessions), gz)
    with open(os.path.join(corpus, "label_report.json"), "w") as fh:
        json.dump(report, fh, indent=1)
    print("lines:", len(lines), "sessions:", len(sessions))


if __name__ == "__main__":
    main(sys.argv[1:])
