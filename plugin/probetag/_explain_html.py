"""``probetag explain --format html``: the report as one self-contained page.

Theory of operation
-------------------
* Input: per probe line, what ``explain.Explainer.detect`` found (``Lines.add``,
  called only when the HTML report is asked for), and per file its
  ``explain.FileReport`` (the correlator's scan summaries). Output: one HTML
  page written to a stream (``write_html``); no other I/O.
* The page fetches nothing: CSS and JS are inline, the charts are SVG drawn
  here, and a Content-Security-Policy allows only the page's own style and
  script (by hash) and nothing from the network.
* Bounded at any input size. The charts are aggregates: one row per source
  (``_MAX_SOURCES``), per scan one row per kind of probe (``_MAX_KINDS``,
  ``_MAX_SCANS`` scans), top lists. The table holds the first ``MAX_ROWS``
  probe lines (the page says how many more there were; ``--format jsonl``
  has them all) as compact JSON with every string in a table of its own,
  drawn a page at a time by the script.
* Every string from the log (a HOSTNAME, a probe name) is attacker
  controlled: it is escaped in the HTML, ``<``-escaped in the JSON, and the
  script writes it with ``textContent`` only.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, Callable

from ._explain_report import describe, listener_kinds

__all__ = ["Lines", "write_html", "MAX_ROWS"]

#: Probe lines embedded in the table (some 25 bytes each in the JSON).
MAX_ROWS = 50_000
#: Rows of the timeline (the sources with the most probe lines).
_MAX_SOURCES = 200
#: Scans drawn in "probes per scan" (the biggest), and kinds of probe per scan.
_MAX_SCANS = 12
_MAX_KINDS = 60
#: Entries of each breakdown chart.
_MAX_BARS = 20
#: Table rows per page (the script's).
_PAGE = 100

_W = 1000  # SVG width
_LABEL = 190  # label column of the timeline and the per-scan charts
_ROW = 22


@dataclass(slots=True)
class _Kind:
    """One kind of probe within one scan."""

    count: int
    first_t: float
    last_t: float
    first_line: int


@dataclass(slots=True)
class _Scan:
    file: int
    source: str
    kinds: dict[str, _Kind] = field(default_factory=dict)  # in the order first sent


class Lines:
    """What the HTML report needs of each probe line, collected as
    ``Explainer.detect`` finds it: the table's first ``max_rows`` rows and
    the aggregates of all of them."""

    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        self.max_rows = max_rows
        self.files: list[str] = []
        self.fmts: list[str] = []
        self.reports: list[Any] = []
        self.total = 0
        #: (file, line, source, probe, scanner, confidence in thousandths):
        #: string columns are indices into ``strings``
        self.rows: list[tuple[int, int, int, int, int, int]] = []
        self.strings: dict[str, int] = {}
        self.scans: dict[tuple[int, str], _Scan] = {}
        self.scanners: Counter[str] = Counter()
        self.probes: Counter[str] = Counter()
        #: (file, transport, input name, seen in) -> probe lines
        self.listeners: Counter[tuple[int, str, str, str]] = Counter()

    def _s(self, text: str) -> int:
        i = self.strings.get(text)
        if i is None:
            i = self.strings[text] = len(self.strings)
        return i

    def file(self, name: str, fmt: str) -> Callable[[int, float, dict[str, Any], dict[Any, Any]], None]:
        """Start a file -> the ``add`` to call for each of its probe lines."""
        f = len(self.files)
        self.files.append(name)
        self.fmts.append(fmt)
        return lambda line, t, probe, record: self.add(f, line, t, probe, record)

    def finish_file(self, report: Any) -> None:
        self.reports.append(report)

    def add(self, f: int, line: int, t: float, probe: dict[str, Any], record: dict[Any, Any]) -> None:
        """Probe line ``line`` (1-based) of file ``f`` at event time ``t``;
        ``record``: the line's decoded record (its input name)."""
        self.total += 1
        src = str(probe.get("source") or "-")
        name = str(probe.get("name"))
        scanner = str(probe.get("scanner") or "unknown")
        if len(self.rows) < self.max_rows:
            conf = probe.get("confidence")
            c = int(round(float(conf) * 1000)) if isinstance(conf, (int, float)) else -1
            self.rows.append((f, line, self._s(src), self._s(name), self._s(scanner), c))
        self.scanners[scanner] += 1
        self.probes[name] += 1
        key = (f, str(probe.get("scan_id") or "-"))
        scan = self.scans.get(key)
        if scan is None:
            scan = self.scans[key] = _Scan(f, src)
        k = scan.kinds.get(name)
        if k is None:
            scan.kinds[name] = _Kind(1, t, t, line)
        else:
            k.count += 1
            k.first_t = min(k.first_t, t)
            k.last_t = max(k.last_t, t)
        inp = record.get("inputname") if isinstance(record, dict) else None
        if isinstance(inp, bytes):
            inp = inp.decode("utf-8", "replace")
        self.listeners[(f, str(probe.get("transport") or ""), str(inp or ""), str(probe.get("seen_in") or ""))] += 1


# ------------------------------------------------------------------ helpers
def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


def _cut(text: str, room: int) -> str:
    return text if len(text) <= room else text[:room - 1] + "…"


def _src_name(src: str) -> str:
    return "sender unknown" if src == "-" else src


def _clock(t: float, with_date: bool, step: float = 1) -> str:
    """A time of day, with the date when ``with_date``; as a tick ``step``
    seconds from the next, without the digits that never change."""
    d = datetime.fromtimestamp(t).astimezone()
    if step >= 86400:
        return d.strftime("%Y-%m-%d")
    if with_date:
        return d.strftime("%m-%d %H:%M" if step >= 60 else "%m-%d %H:%M:%S") if step > 1 else \
            d.strftime("%Y-%m-%d %H:%M:%S")
    return d.strftime("%H:%M" if step >= 60 else "%H:%M:%S")


def _span(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min" if s % 3600 // 60 else f"{s // 3600} h"
    return f"{s // 86400} d {s % 86400 // 3600} h" if s % 86400 // 3600 else f"{s // 86400} d"


#: Tick steps of a time axis, in seconds.
_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
          172800, 604800)


def _step(t0: float, t1: float, most: int) -> int:
    return next((s for s in _STEPS if (t1 - t0) / s <= most), _STEPS[-1])


def _ticks(t0: float, t1: float, most: int = 8) -> list[float]:
    step = _step(t0, t1, most)
    # align to the local clock (a whole minute, hour...)
    off = datetime.fromtimestamp(t0).astimezone().utcoffset()
    shift = off.total_seconds() if off is not None else 0.0
    first = math.ceil((t0 + shift) / step) * step - shift
    out = []
    t = first
    while t <= t1 and len(out) < 4 * most:
        out.append(t)
        t += step
    return out


def _listener_label(transport: str, inp: str, seen_in: str, fmt: str,
                    listener: Callable[[Any, str], tuple[str, list[str]]]) -> str:
    if seen_in == "application-log":
        return "another program's log (no syslog listener)"
    return listener(_Heard({transport} if transport else set(), {inp} if inp else set()), fmt)[0]


@dataclass(slots=True)
class _Heard:
    """What ``listener`` reads of a source's ``explain._SourceInfo``."""

    transports: set[str]
    inputs: set[str]


# ------------------------------------------------------------------- charts
def _timeline(lines: Lines) -> tuple[str, int]:
    """One SVG row per source, each scan a bar on a shared time axis ->
    (svg, sources left out)."""
    per: dict[str, list[dict[str, Any]]] = {}
    for rep in lines.reports:
        for s in rep.summaries:
            per.setdefault(str(s["source"]), []).append(s)
    order = sorted(per, key=lambda src: -sum(s["lines"] for s in per[src]))
    shown = order[:_MAX_SOURCES]
    left = len(order) - len(shown)
    shown.sort(key=lambda src: (min(s["first_seen"] for s in per[src]), src))
    timed = [s for src in shown for s in per[src] if s["first_seen"] > 0]
    t0 = min((s["first_seen"] for s in timed), default=0.0)
    t1 = max((s["last_seen"] for s in timed), default=0.0)
    if t1 - t0 < 10:
        t0, t1 = t0 - 5, t1 + 5
    plot = _W - _LABEL - 60
    top = 24
    h = top + _ROW * len(shown) + 8

    def x(t: float) -> float:
        return _LABEL + (t - t0) / (t1 - t0) * plot

    out = [f'<svg id="timeline" class="chart" viewBox="0 0 {_W} {h}" width="{_W}" height="{h}" '
           f'role="img" aria-label="scans per source over time">']
    if timed:
        with_date = datetime.fromtimestamp(t0).date() != datetime.fromtimestamp(t1).date()
        most = 6 if with_date else 8
        step = _step(t0, t1, most)
        for t in _ticks(t0, t1, most):
            out.append(f'<line class="grid" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top - 4}" y2="{h - 8}"/>'
                       f'<text class="tick" x="{x(t):.1f}" y="{top - 8}" text-anchor="middle">'
                       f'{_e(_clock(t, with_date, step))}</text>')
    for i, src in enumerate(shown):
        y = top + i * _ROW
        out.append(f'<g class="tl-row" data-source="{_e(src)}">')
        out.append(f'<text class="label" x="{_LABEL - 8}" y="{y + 15}" text-anchor="end">'
                   f'{_e(_cut(_src_name(src), 28))}</text>')
        row = sorted(per[src], key=lambda s: s["first_seen"])
        for j, s in enumerate(row):
            scanners = ", ".join(s.get("scanners") or [s.get("scanner") or "unknown"])
            if s["first_seen"] <= 0:
                out.append(f'<text class="note" x="{_LABEL}" y="{y + 15}">{_n(s["lines"], "probe line")}, '
                           f'time not recorded in the file</text>')
                continue
            a, b = x(s["first_seen"]), x(s["last_seen"])
            w = max(b - a, 3.0)
            # the count beside the bar when it fits before the next bar
            room = (x(row[j + 1]["first_seen"]) if j + 1 < len(row) else _W) - (a + w + 4)
            label = f"{s['lines']:,}"
            tip = (f'{_src_name(src)}: {scanners}, {_clock(s["first_seen"], True)}, '
                   f'{_span(s["last_seen"] - s["first_seen"])}, {_n(s["lines"], "probe line")}, '
                   f'{_n(len(s["probes"]), "kind")} of probe')
            out.append(f'<rect class="scan" x="{a:.1f}" y="{y + 4}" width="{w:.1f}" height="{_ROW - 8}" rx="2">'
                       f'<title>{_e(tip)}</title></rect>')
            if room >= 7 * len(label) + 2:
                out.append(f'<text class="count" x="{a + w + 4:.1f}" y="{y + 15}">{label}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "".join(out), left


def _scan_chart(scan: _Scan) -> str:
    """One scan's kinds of probe in the order it first sent them: a bar from
    the first to the last line of each kind, seconds from the scan's start."""
    kinds = list(scan.kinds.items())
    more = len(kinds) - _MAX_KINDS
    kinds = kinds[:_MAX_KINDS]
    start = min(k.first_t for k in scan.kinds.values())
    end = max(k.last_t for k in scan.kinds.values())
    dur = max(end - start, 1.0)
    plot = _W - _LABEL - 60
    top = 20
    h = top + 16 * len(kinds) + 6

    def x(t: float) -> float:
        return _LABEL + (t - start) / dur * plot

    out = [f'<svg class="chart scan-chart" viewBox="0 0 {_W} {h}" width="{_W}" height="{h}" role="img" '
           f'aria-label="probes of one scan in the order sent">']
    for t in _ticks(0, dur, 6):
        out.append(f'<line class="grid" x1="{x(start + t):.1f}" x2="{x(start + t):.1f}" y1="{top - 4}" '
                   f'y2="{h - 4}"/><text class="tick" x="{x(start + t):.1f}" y="{top - 7}" '
                   f'text-anchor="middle">+{_e(_span(t))}</text>')
    for i, (name, k) in enumerate(kinds):
        y = top + i * 16
        a, b = x(k.first_t), x(k.last_t)
        words = describe(name)
        tip = f"{name}: {words}; " if words else f"{name}: "
        tip += f"{_n(k.count, 'line')}, first at line {k.first_line:,}"
        out.append(f'<g class="kind"><title>{_e(tip)}</title>'
                   f'<text class="label" x="{_LABEL - 8}" y="{y + 11}" text-anchor="end">{_e(_cut(name, 28))}</text>'
                   f'<rect class="kind-bar" x="{a:.1f}" y="{y + 3}" width="{max(b - a, 0) + 6:.1f}" height="9" '
                   f'rx="4"/><text class="count" x="{max(b, a) + 10:.1f}" y="{y + 11}">{k.count:,}</text></g>')
    out.append("</svg>")
    note = f'<p class="note">and {_n(more, "more kind")} of probe</p>' if more > 0 else ""
    if start <= 0:
        note += '<p class="note">The file records no times: the kinds are in the order sent, without a time.</p>'

    return "".join(out) + note


def _bars(items: list[tuple[str, int, str]], total: int, aria: str) -> str:
    """A horizontal bar per (label, count, tooltip)."""
    label = 430
    plot = _W - label - 90
    h = 18 * len(items) + 4
    top = max((c for _l, c, _t in items), default=1) or 1
    out = [f'<svg class="chart bars" viewBox="0 0 {_W} {h}" width="{_W}" height="{h}" role="img" '
           f'aria-label="{_e(aria)}">']
    for i, (text, count, tip) in enumerate(items):
        y = i * 18 + 2
        w = max(count / top * plot, 1.0)
        share = f" ({100 * count / total:.0f} %)" if total else ""
        out.append(f'<g class="bar"><title>{_e(tip or text)}: {count:,}{share}</title>'
                   f'<text class="label" x="{label - 8}" y="{y + 12}" text-anchor="end">{_e(_cut(text, 66))}</text>'
                   f'<rect x="{label}" y="{y + 2}" width="{w:.1f}" height="12" rx="2"/>'
                   f'<text class="count" x="{label + w + 6:.1f}" y="{y + 12}">{count:,}{share}</text></g>')
    out.append("</svg>")
    return "".join(out)


# -------------------------------------------------------------------- page
_CSS = """
:root{--fg:#1d2433;--dim:#5b6475;--line:#d9dde6;--bar:#3b6fd8;--bar2:#e0803a;--bg:#fff;--head:#f3f5f9}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);
margin:0 auto;max-width:1060px;padding:20px 24px 60px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid var(--line);
padding-bottom:4px}h3{font-size:14px;margin:16px 0 4px}
.dim,.note{color:var(--dim)}.note{font-size:13px}
ul.files{margin:6px 0;padding-left:20px}
svg.chart{display:block;max-width:100%;height:auto;font-size:12px}
svg .label{fill:var(--fg)}svg .tick,svg .count,svg .note{fill:var(--dim)}
svg .grid{stroke:var(--line);stroke-width:1}
svg .scan{fill:var(--bar)}svg .kind-bar{fill:var(--bar2)}svg .bar rect{fill:var(--bar)}
svg g.tl-row:hover .label,svg g.kind:hover .label,svg g.bar:hover .label{font-weight:bold}
.controls{display:flex;flex-wrap:wrap;gap:8px;align-items:center;margin:8px 0}
.controls input[type=search]{flex:1;min-width:200px;padding:5px 8px}
.controls select,.controls button,.controls input{font:inherit}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--head);position:sticky;top:0}
th button{all:unset;cursor:pointer;font-weight:bold}th button:hover{text-decoration:underline}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font:12px ui-monospace,Menlo,Consolas,monospace}
pre{background:var(--head);padding:6px 10px;white-space:pre-wrap}
.fix li{margin:4px 0}
"""

_JS = r"""
(function(){
"use strict";
var D=JSON.parse(document.getElementById("probe-lines").textContent);
var S=D.strings, W=D.words, F=D.files, R=D.rows, PAGE=D.page;
var COLS=[function(r){return F[r[0]];},function(r){return r[1];},function(r){return S[r[2]];},
  function(r){return S[r[3]];},function(r){return W[r[3]]||"";},function(r){return S[r[4]];},
  function(r){return r[5];}];
var state={sort:-1,desc:false,page:0,view:null};
var q=document.getElementById("q"), selP=document.getElementById("f-probe"),
  selS=document.getElementById("f-source"), selC=document.getElementById("f-scanner"),
  body=document.getElementById("rows"), count=document.getElementById("count"),
  pageEl=document.getElementById("page");
function fill(sel,col){
  var seen={},vals=[];
  for(var i=0;i<R.length;i++){var v=R[i][col];if(!seen[v]){seen[v]=1;vals.push(v);}}
  vals.sort(function(a,b){return S[a]<S[b]?-1:S[a]>S[b]?1:0;});
  for(var j=0;j<vals.length;j++){var o=document.createElement("option");o.value=String(vals[j]);
    o.textContent=S[vals[j]]==="-"?"sender unknown":S[vals[j]];sel.appendChild(o);}
}
fill(selP,3);fill(selS,2);fill(selC,4);
function apply(){
  var text=q.value.trim().toLowerCase(), p=selP.value, s=selS.value, c=selC.value, v=[];
  for(var i=0;i<R.length;i++){
    var r=R[i];
    if(p!==""&&String(r[3])!==p)continue;
    if(s!==""&&String(r[2])!==s)continue;
    if(c!==""&&String(r[4])!==c)continue;
    if(text){var hay=(F[r[0]]+"\u0000"+r[1]+"\u0000"+S[r[2]]+"\u0000"+S[r[3]]+"\u0000"+(W[r[3]]||"")+"\u0000"+S[r[4]]).toLowerCase();
      if(hay.indexOf(text)<0)continue;}
    v.push(i);
  }
  if(state.sort>=0){
    var get=COLS[state.sort], d=state.desc?-1:1;
    v.sort(function(a,b){var x=get(R[a]),y=get(R[b]);return x<y?-d:x>y?d:a-b;});
  }
  state.view=v;state.page=0;draw();
}
function draw(){
  var v=state.view, pages=Math.max(1,Math.ceil(v.length/PAGE));
  if(state.page>=pages)state.page=pages-1;
  var from=state.page*PAGE, to=Math.min(v.length,from+PAGE), frag=document.createDocumentFragment();
  for(var i=from;i<to;i++){
    var r=R[v[i]], tr=document.createElement("tr");
    var cells=[F[r[0]],r[1].toLocaleString("en-US"),S[r[2]]==="-"?"sender unknown":S[r[2]],S[r[3]],W[r[3]]||"",
      S[r[4]],r[5]<0?"":(r[5]/1000).toFixed(3)];
    for(var k=0;k<cells.length;k++){var td=document.createElement("td");td.textContent=cells[k];
      if(k===1||k===6)td.className="num";tr.appendChild(td);}
    frag.appendChild(tr);
  }
  body.textContent="";body.appendChild(frag);
  count.textContent=v.length.toLocaleString("en-US")+" of "+R.length.toLocaleString("en-US")+" probe lines";
  count.setAttribute("data-shown",String(v.length));
  pageEl.textContent="page "+(state.page+1)+" of "+pages;
  pageEl.setAttribute("data-pages",String(pages));
}
var heads=document.querySelectorAll("#probe-table th button");
for(var h=0;h<heads.length;h++){(function(i){heads[i].addEventListener("click",function(){
  state.desc=state.sort===i?!state.desc:false;state.sort=i;
  for(var j=0;j<heads.length;j++)heads[j].parentNode.removeAttribute("aria-sort");
  heads[i].parentNode.setAttribute("aria-sort",state.desc?"descending":"ascending");apply();});})(h);}
q.addEventListener("input",apply);
selP.addEventListener("change",apply);selS.addEventListener("change",apply);selC.addEventListener("change",apply);
document.getElementById("prev").addEventListener("click",function(){if(state.page>0){state.page--;draw();}});
document.getElementById("next").addEventListener("click",function(){state.page++;draw();});
apply();
})();
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def _json_for_script(obj: Any) -> str:
    # inside <script>: no "<" at all (no "</script>" or "<!--" can end it)
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c")


def write_html(out: IO[str], lines: Lines, *,
               listener: Callable[[Any, str], tuple[str, list[str]]], max_line: int = 0) -> None:
    """The page for everything ``lines`` collected (one ``finish_file`` per file)."""
    reps = lines.reports
    total_lines = sum(r.lines for r in reps)
    probe_lines = sum(r.probe_lines for r in reps)
    sources = {str(s["source"]) for r in reps for s in r.summaries}
    w = out.write
    title = f"probetag explain: {_n(probe_lines, 'scanner-probe line')} from {_n(len(sources), 'source')}"
    w("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n")
    w(f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
      f"style-src {_csp_hash(_CSS)}; script-src {_csp_hash(_JS)}; img-src data:; base-uri 'none'; "
      f"form-action 'none'\">\n")
    w('<meta name="viewport" content="width=device-width, initial-scale=1">\n')
    w(f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head><body>\n")
    w(f"<h1>{_e(title)}</h1>\n")
    w(f'<p class="dim">{_n(total_lines, "line")} read from {_n(len(reps), "file")}; '
      f"made by <code>probetag explain --format html</code>.</p>\n<ul class=\"files\">\n")
    for r in reps:
        tail = f", {_n(r.framing_errors, 'rsyslog framing-error line')}" if r.framing_errors else ""
        cut = f", {_n(r.cut_lines, 'over-long line')} cut at {max_line:,} bytes" if r.cut_lines else ""
        if r.scans_dropped:
            cut += (f", {_n(r.scans_dropped, 'scan')} not listed (more sources than "
                    "correlation.max_bytes holds)")
        w(f"<li><code>{_e(r.name)}</code>: {_n(r.lines, 'line')} ({_e(r.fmt)} format), "
          f"{_n(r.probe_lines, 'scanner-probe line')}, {_n(r.benign_lines, 'other line')}{tail}{cut}</li>\n")
    w("</ul>\n")
    if not probe_lines:
        w("<p>No scanner-probe lines were found.</p>\n</body></html>\n")
        return

    # the timeline
    svg, left = _timeline(lines)
    w('<h2 id="when">Scans per source</h2>\n<p class="note">One row per source; each bar is a scan, from its '
      "first to its last probe line, with its number of probe lines. Hover for details.</p>\n")
    w(svg + "\n")
    if left:
        w(f'<p class="note">{_n(left, "source")} with fewer probe lines not drawn.</p>\n')

    # probes per scan
    summaries = {(i, str(s.get("scan_id") or "-")): s for i, r in enumerate(reps) for s in r.summaries}
    scans = sorted(lines.scans.items(), key=lambda kv: -sum(k.count for k in kv[1].kinds.values()))
    w('<h2 id="order">Probes per scan, in the order sent</h2>\n<p class="note">One row per kind of probe, '
      "in the order the scan first sent it; the bar runs from its first to its last line, in seconds "
      "from the scan's start.</p>\n")
    for key, scan in scans[:_MAX_SCANS]:
        s = summaries.get(key)
        who = ", ".join(s.get("scanners") or [s.get("scanner") or "unknown"]) if s else ""
        n = sum(k.count for k in scan.kinds.values())
        where = f" in <code>{_e(lines.files[scan.file])}</code>" if len(lines.files) > 1 else ""
        when = ""
        if s and s["first_seen"] > 0:
            when = f", {_e(_clock(s['first_seen'], True))}, {_e(_span(s['last_seen'] - s['first_seen']))}"
        w(f"<h3>{_e(_src_name(scan.source))}{where}: {_e(who)}{when}, {_n(n, 'probe line')}, "
          f"{_n(len(scan.kinds), 'kind')} of probe</h3>\n")
        w(_scan_chart(scan) + "\n")
    if len(scans) > _MAX_SCANS:
        w(f'<p class="note">{_n(len(scans) - _MAX_SCANS, "smaller scan")} not drawn.</p>\n')

    # breakdowns
    w('<h2 id="breakdown">Scanners, listeners and probes</h2>\n<h3>Probe lines per scanner</h3>\n')
    w(_bars([(k, c, "") for k, c in lines.scanners.most_common(_MAX_BARS)], lines.total, "probe lines per scanner"))
    where: Counter[str] = Counter()
    for (f, tr, inp, seen), c in lines.listeners.items():
        where[_listener_label(tr, inp, seen, lines.fmts[f], listener)] += c
    w("\n<h3>Probe lines per listener that received them</h3>\n")
    w(_bars([(k, c, "") for k, c in where.most_common(_MAX_BARS)], lines.total, "probe lines per listener"))
    kinds = lines.probes.most_common(_MAX_BARS)
    w(f"\n<h3>Kinds of probe ({'the ' + str(len(kinds)) + ' most frequent of ' if len(lines.probes) > len(kinds) else ''}"
      f"{len(lines.probes)})</h3>\n")
    w(_bars([(k, c, f"{k}: {describe(k)}" if describe(k) else k) for k, c in kinds], lines.total,
            "probe lines per kind of probe"))
    w("\n")

    # the table
    names = sorted(lines.strings, key=lines.strings.__getitem__)
    data = {"files": lines.files, "strings": names, "words": [describe(s) for s in names],
            "rows": lines.rows, "page": _PAGE}
    w('<h2 id="lines">Every probe line</h2>\n')
    if lines.total > len(lines.rows):
        w(f'<p class="note" id="left-out">The table holds the first {len(lines.rows):,} of '
          f"{lines.total:,} probe lines; {lines.total - len(lines.rows):,} are left out to keep this page "
          "small (<code>--format jsonl</code> lists them all).</p>\n")
    w('<div class="controls"><input type="search" id="q" placeholder="filter: any text in a row" '
      'aria-label="filter"><select id="f-probe" aria-label="probe"><option value="">every probe</option>'
      '</select><select id="f-source" aria-label="source"><option value="">every source</option></select>'
      '<select id="f-scanner" aria-label="scanner"><option value="">every scanner</option></select></div>\n')
    w('<div class="controls"><span id="count"></span><button id="prev" type="button">&larr; previous</button>'
      '<span id="page"></span><button id="next" type="button">next &rarr;</button></div>\n')
    w('<table id="probe-table"><thead><tr>')
    for h in ("file", "line", "source", "probe", "what it asks for", "scanner", "confidence"):
        w(f'<th><button type="button">{h}</button></th>')
    w('</tr></thead><tbody id="rows"></tbody></table>\n')
    w(f'<script type="application/json" id="probe-lines">{_json_for_script(data)}</script>\n')

    # what to do
    kinds_by_where: dict[str, tuple[list[str], list[str]]] = {}
    for r in reps:
        listener_kinds(r, listener, kinds_by_where)
    w('<h2 id="fix">What received them, and how to close it</h2>\n')
    if not kinds_by_where:
        w("<p>The scanners were seen in other programs' log lines only (an access log's user agent): "
          "they talked to those programs, not to a syslog listener.</p>\n")
    for place, (how, srcs) in kinds_by_where.items():
        w(f"<h3>Received by: {_e(place)}</h3>\n<p>From: {_e(', '.join(srcs))}</p>\n")
        if how:
            w('<p>To close it:</p><ul class="fix">' + "".join(f"<li>{_e(h)}</li>" for h in how) + "</ul>\n")
    w(f"<script>{_JS}</script>\n</body></html>\n")
