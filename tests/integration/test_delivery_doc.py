"""docs/delivery.md states the shutdown and reload behaviour of
``probetag serve``; these checks tie its figures and lists to the code, so
a change on either side that makes them disagree fails here."""

from __future__ import annotations

import re
from pathlib import Path

from probetag import _serve
from probetag._config import Config

DOC = Path(__file__).resolve().parents[2] / "docs" / "delivery.md"


def _section(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    m = re.search(rf"^## {re.escape(title)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"docs/delivery.md has no '## {title}' section"
    return m.group(1)


def test_shutdown_section_matches_the_service():
    doc = _section("Shutdown: SIGTERM / SIGINT drain")
    assert "`shutdown_timeout`" in doc and "`--drain-timeout`" in doc
    default = Config().shutdown_timeout
    assert f"default {default:g}" in doc
    assert f"grace ({_serve.READ_GRACE:g} s" in doc
    # the options the parser really has
    flags = {a.option_strings[-1] for a in _serve._parser()._actions}  # noqa: SLF001
    assert "--drain-timeout" in flags
    for fact in ("stop reading", "not acked", "exit status is 0", "second SIGTERM"):
        assert fact.lower() in " ".join(doc.lower().split()), fact


def test_reload_section_names_exactly_the_restart_sections():
    doc = _section("Reload: SIGHUP")
    line = next(item for item in doc.split("\n* ") if "cannot change" in item)
    named = re.findall(r"`([a-z_]+)`", line.split("cannot change")[0])
    assert named == list(_serve.RESTART_SECTIONS)
    for fact in ("between two chunks", 'reloads{result="failed"}', 'reloads{result="ok"}',
                 "event=reload_restart_needed", "running config"):
        assert fact in " ".join(doc.split()), fact
