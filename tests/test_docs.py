"""The output shown in the docs is what probetag really prints: each
example is produced again here and compared, so the docs cannot drift."""

from __future__ import annotations

import json
import math
import re
import os
import subprocess
import sys
from pathlib import Path

from probetag._config import config_from_mapping, load_config
from probetag._metrics import Metrics
from probetag._stage import Processor, pack_entry, unpacker_for

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: The probe record the examples are made of, and its event time (2026-11-27T10:00:00Z).
RECORD = {"host": "GET", "ident": "/", "message": "HTTP/1.0#015", "source_address": "203.0.113.7"}
T = 1795773600


def _fenced(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", text, re.S | re.M)


def _real(cfg, record=RECORD, t=T) -> tuple[list[dict], list[tuple[str, dict]]]:
    proc = Processor(cfg, Metrics())
    res = proc.process("syslog.daemon.info", pack_entry(t, record))
    out = [r for ch in res.chunks for _, r in unpacker_for(ch.entries)]
    summaries = [(ch.tag, r) for ch in proc.expire(math.inf) for _, r in unpacker_for(ch.entries)]
    return out, summaries


def test_configuration_md_is_the_config_reference():
    ref = subprocess.run([sys.executable, "-m", "probetag", "config-reference"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    (block,) = [b for b in _fenced((DOCS / "configuration.md").read_text(), "") if b.startswith("listen\n")]
    assert block == ref, "docs/configuration.md is stale: paste `probetag config-reference` into it"


def test_enrichment_example_is_real_output():
    (block,) = _fenced((DOCS / "use-case-enrichment.md").read_text(), "json")
    shown = json.loads(block)
    (real,), _ = _real(load_config(ROOT / "configs" / "probetag" / "fluentd-enrich.yaml"))
    assert shown == real


def test_readme_probe_map_is_real_output():
    text = (ROOT / "README.md").read_text()
    m = re.search(r'^\s+"probe": (\{.*?\.\.\.\})$', text, re.S | re.M)
    assert m, "README: the probe map example is gone"
    shown = json.loads(m.group(1).replace(", ...}", "}"))
    (real,), _ = _real(load_config(ROOT / "configs" / "probetag" / "fluentd-enrich.yaml"))
    assert shown == {k: real["probe"][k] for k in shown}


def test_actions_md_summary_fields_are_real():
    text = (DOCS / "actions.md").read_text()
    m = re.search(r'`\{"probe_summary": \{(.*?)\}\}`', text, re.S)
    assert m
    shown = re.findall(r'"(\w+)"', m.group(1))
    cfg = config_from_mapping({"detect": {"source_fields": ["source_address"]},
                               "actions": {"summaries": True}})
    _, summaries = _real(cfg)
    ((tag, summary),) = summaries
    assert tag == "probetag.summary" and "default `probetag.summary`" in text
    assert shown == list(summary["probe_summary"])


def test_documented_exec_filter_flags_exist():
    from probetag.inputs.exec_filter import _parser

    text = (DOCS / "fluentd.md").read_text()
    (usage,) = [b for b in _fenced(text, "") if b.startswith("probetag exec-filter")]
    flags = set(re.findall(r"(--[a-z-]+|-c)\b", usage))
    known = {o for a in _parser()._actions for o in a.option_strings}
    assert flags and flags <= known, flags - known
    assert {o for o in known if o.startswith("--") and o not in ("--help", "--config")} <= flags  # none missing


def test_readme_commands_exist():
    from probetag.cli import _COMMANDS

    text = (ROOT / "README.md").read_text()
    shown = set(re.findall(r"^\| `probetag ([a-z-]+)", text, re.M))
    assert shown == set(_COMMANDS)


def test_probetag_config_snippets_in_docs_pass_check_config():
    from probetag._config import Config, check_config

    sections = {f for f in Config.__dataclass_fields__}
    seen = 0
    for path in sorted(DOCS.glob("*.md")):
        for block in _fenced(path.read_text(), "yaml"):
            import yaml

            doc = yaml.safe_load(block)
            if not isinstance(doc, dict) or not set(doc) <= sections:
                continue  # a Vector or cluster snippet, not a probetag config
            seen += 1
            _, errors = check_config(text=block)
            assert errors == [], (path.name, [str(e) for e in errors])
    assert seen >= 3


def test_explain_report_in_docs_is_real_output():
    (shown,) = _fenced((DOCS / "explain.md").read_text(), "text")
    path = ROOT / "tests" / "fixtures" / "rsyslog" / "traditional.log"
    p = subprocess.run([sys.executable, "-m", "probetag", "explain", "--color", "never", str(path)],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "TZ": "UTC"})
    assert p.returncode == 0, p.stderr
    assert shown == p.stdout.replace(str(path), "/var/log/syslog", 1)


def test_explain_options_are_documented():
    usage = subprocess.run([sys.executable, "-m", "probetag", "explain", "--help"], capture_output=True,
                           text=True, timeout=60, check=True).stdout
    text = (DOCS / "explain.md").read_text()
    opts = set(re.findall(r"(--[a-z-]+)", usage)) - {"--help", "--config"}
    assert opts and all(f"`{o}" in text for o in opts), [o for o in opts if f"`{o}" not in text]
    assert "exit status" in usage and "| 2 |" in text
