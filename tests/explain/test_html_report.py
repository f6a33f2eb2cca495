"""``probetag explain --format html``: the page of real captures, loaded in
headless Chromium (tests/util/chromium.py): no console errors, nothing
fetched, one timeline row per source, and a table whose counts are the
jsonl output's; a 100,000-probe-line file gives a page of bounded size."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from probetag import _explain_html

from util.chromium import Page

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = [ROOT / "tests" / "fixtures" / "rsyslog" / "traditional.log",
            ROOT / "tests" / "fixtures" / "corpus-dev" / "mixed_nmap_sV_benign" / "traditional.log"]


def _explain(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "probetag", "explain", "--jobs", "1", *args],
                          capture_output=True, timeout=timeout, env={**os.environ, "TZ": "UTC"})


def _probe_lines(*files: Path) -> list[dict]:
    out = _explain("--format", "jsonl", *map(str, files)).stdout.splitlines()
    rows = [json.loads(x) for x in out]
    return [o for o in rows if o["probe"]]


def _select(page: Page, sel: str, text: str) -> str:
    """Pick the option labelled ``text`` in ``sel`` -> the count line."""
    page.eval(f"""(function(){{var s=document.getElementById({json.dumps(sel)});
        for(var i=0;i<s.options.length;i++)if(s.options[i].textContent==={json.dumps(text)})s.value=s.options[i].value;
        s.dispatchEvent(new Event("change"));}})()""")
    return page.eval('document.getElementById("count").getAttribute("data-shown")')  # type: ignore[no-any-return]


def _rows(page: Page) -> list[list[str]]:
    return page.eval('[...document.querySelectorAll("#rows tr")].map(tr=>[...tr.cells].map(td=>td.textContent))')  # type: ignore[no-any-return]


def test_the_page_of_real_captures_in_chromium(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    p = _explain("--format", "html", "--output", str(out), *map(str, CAPTURES))
    assert p.returncode == 0, p.stderr
    assert p.stdout == b""
    found = _probe_lines(*CAPTURES)
    assert found
    text = out.read_text(encoding="utf-8")
    # one file that fetches nothing: no URL outside the text it quotes
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", text, re.I)
    with Page(tmp_path) as page:
        page.open(out)
        assert page.errors == []
        assert page.requests == [out.resolve().as_uri()]
        # the timeline: one row per source the jsonl names
        rows = page.eval('[...document.querySelectorAll("#timeline g.tl-row")].map(g=>g.dataset.source)')
        sources = {o["probe"].get("source") or "-" for o in found}
        assert sorted(rows) == sorted(sources) and len(rows) == len(set(rows))
        # the table: every probe line, and per probe as many as the jsonl has
        assert page.eval('document.getElementById("count").getAttribute("data-shown")') == str(len(found))
        per_probe = Counter(o["probe"]["name"] for o in found)
        for name, n in per_probe.items():
            assert _select(page, "f-probe", name) == str(n), name
        assert _select(page, "f-probe", "every probe") == str(len(found))
        per_source = Counter(o["probe"].get("source") or "-" for o in found)
        for src, n in per_source.items():
            assert _select(page, "f-source", "sender unknown" if src == "-" else src) == str(n), src
        _select(page, "f-source", "every source")
        # the first page is the file order: file, line, source, probe, words, scanner, confidence
        want = [[o["file"], f'{o["line"]:,}', o["probe"].get("source") or "sender unknown", o["probe"]["name"],
                 _explain_html.describe(o["probe"]["name"]), o["probe"]["scanner"],
                 f'{o["probe"]["confidence"]:.3f}'] for o in found]
        assert _rows(page) == want[:100]
        assert page.eval('document.getElementById("page").getAttribute("data-pages")') == str(-(-len(found) // 100))
        page.eval('document.getElementById("next").click()')
        assert _rows(page) == want[100:200]
        # sorted by line, highest first (a click sorts up, a second down)
        page.eval('document.querySelectorAll("#probe-table th button")[1].click()')
        page.eval('document.querySelectorAll("#probe-table th button")[1].click()')
        top = max(o["line"] for o in found)
        assert _rows(page)[0][1] == f"{top:,}"
        # the filter box: any text in a row
        page.eval('var q=document.getElementById("q"); q.value="SIP OPTIONS"; q.dispatchEvent(new Event("input"))')
        assert page.eval('document.getElementById("count").getAttribute("data-shown")') == \
            str(per_probe["SIPOptions"])
        assert page.errors == []
        # the other figures are there
        assert page.eval('document.querySelectorAll("svg.scan-chart").length') >= 2
        assert "bind imtcp to a trusted address" in page.eval('document.getElementById("fix").parentNode.textContent')


def _many(path: Path, copies: int) -> None:
    """``copies`` of the real capture, 4 minutes apart, from 140 senders."""
    lines = [ln for ln in CAPTURES[0].read_bytes().split(b"\n") if ln]
    base = [(datetime.strptime(ln[:15].decode(), "%b %d %H:%M:%S"), ln[15:]) for ln in lines]
    with path.open("wb") as f:
        for c in range(copies):
            host = b" 10.0.%d.%d " % (c % 7, c % 20 + 1)
            f.write(b"".join((t + timedelta(minutes=4 * c)).strftime("%b %d %H:%M:%S").encode()
                             + rest.replace(b" 127.0.0.1 ", host, 1) + b"\n" for t, rest in base))


def test_a_hundred_thousand_probe_lines_make_a_bounded_page(tmp_path: Path) -> None:
    per_copy = len(_probe_lines(CAPTURES[0]))
    copies = -(-100_000 // per_copy)
    big = tmp_path / "big.log"
    _many(big, copies)
    out = tmp_path / "big.html"
    p = _explain("--format", "html", "-o", str(out), str(big), timeout=900)
    assert p.returncode == 0, p.stderr
    total = per_copy * copies
    assert total >= 100_000
    size = out.stat().st_size
    assert size < 4_000_000, size  # the table's rows are capped, the charts aggregated
    text = out.read_text(encoding="utf-8")
    assert f"{total:,} scanner-probe lines" in text
    data = json.loads(re.search(r'<script type="application/json" id="probe-lines">(.*?)</script>', text).group(1))
    assert len(data["rows"]) == _explain_html.MAX_ROWS
    assert f"the first {_explain_html.MAX_ROWS:,} of {total:,} probe lines" in text
    with Page(tmp_path) as page:
        page.open(out)
        assert page.errors == []
        assert page.eval('document.getElementById("count").getAttribute("data-shown")') == str(_explain_html.MAX_ROWS)
        assert len(_rows(page)) == 100
        assert page.eval('document.querySelectorAll("#timeline g.tl-row").length') == 141  # 140 senders and "-"


def test_what_the_log_says_is_text_on_the_page(tmp_path: Path) -> None:
    # a HOSTNAME is whatever the sender wrote: here markup and a script end
    log = tmp_path / "hostile.log"
    lines = [ln for ln in CAPTURES[0].read_bytes().split(b"\n") if ln]
    evil = b"<img/src=x/onerror=alert(1)></script>"
    log.write_bytes(b"\n".join(ln.replace(b" 127.0.0.1 ", b" " + evil + b" ", 1) for ln in lines) + b"\n")
    out = tmp_path / "r.html"
    assert _explain("--format", "html", "-o", str(out), str(log)).returncode == 0
    text = out.read_text(encoding="utf-8")
    assert "<img" not in text and text.count("</script>") == 2  # the data block's and the script's
    assert "&lt;img/src=x/onerror=alert(1)&gt;&lt;/script&gt;" in text
    with Page(tmp_path) as page:
        page.open(out)
        assert page.errors == []
        assert evil.decode() in page.eval('[...document.querySelectorAll("#timeline g.tl-row")].map(g=>g.dataset.source).join(" ")')


def test_the_page_is_the_same_with_two_processes(tmp_path: Path) -> None:
    pages = []
    for jobs in ("1", "2"):
        out = tmp_path / f"r{jobs}.html"
        p = subprocess.run([sys.executable, "-m", "probetag", "explain", "--jobs", jobs, "--format", "html",
                            "-o", str(out), *map(str, CAPTURES)], capture_output=True, timeout=300)
        assert p.returncode == 0, p.stderr
        pages.append(out.read_bytes())
    assert pages[0] == pages[1]


def test_output_errors(tmp_path: Path) -> None:
    p = _explain("--format", "html", "-o", str(tmp_path / "no" / "such" / "dir.html"), str(CAPTURES[0]))
    assert p.returncode == 2 and b"dir.html" in p.stderr
    # --output works for the other formats too
    out = tmp_path / "r.jsonl"
    assert _explain("--format", "jsonl", "-o", str(out), str(CAPTURES[0])).returncode == 0
    assert out.read_bytes() == _explain("--format", "jsonl", str(CAPTURES[0])).stdout


def test_no_probe_lines_make_a_short_page(tmp_path: Path) -> None:
    log = tmp_path / "quiet.log"
    log.write_bytes(b"Nov 27 13:46:05 web01 nginx: 10.0.0.5 - - \"GET / HTTP/1.1\" 200 612\n")
    out = tmp_path / "q.html"
    p = _explain("--format", "html", "-o", str(out), str(log))
    assert p.returncode == 1
    assert "No scanner-probe lines were found." in out.read_text(encoding="utf-8")
