"""The shipped configs: probetag's pass check-config, and each Fluentd/Vector
config points at the ports, paths and formats of the probetag config it pairs
with (named in its header comment)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from probetag._config import load_config, parse_hostport

from .fluentconf import SWITCHED_OUTPUTS, FluentConfError, check, parse, variants

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
PROBETAG = sorted((CONFIGS / "probetag").glob("*.yaml"))
FLUENTD = sorted((CONFIGS / "fluentd").glob("*.conf"))
VECTOR = sorted((CONFIGS / "vector").glob("*.yaml"))


def paired(path: Path):
    m = re.search(r"^# probetag config: (\S+)$", path.read_text(), re.M)
    assert m, f"{path.name}: no '# probetag config: ...' header"
    target = ROOT / m.group(1)
    assert target.exists(), f"{path.name}: {m.group(1)} does not exist"
    return target, load_config(target)


def test_there_are_configs_for_every_use_case():
    for stem in ("enrich", "filter-noise", "security-index"):
        assert (CONFIGS / "fluentd" / f"{stem}.conf").exists()
        assert (CONFIGS / "vector" / f"{stem}.yaml").exists()
        assert (CONFIGS / "probetag" / f"fluentd-{stem}.yaml").exists()
        assert (CONFIGS / "probetag" / f"vector-{stem}.yaml").exists()
    assert (CONFIGS / "fluentd" / "exec-filter.conf").exists()


def test_check_config_accepts_every_probetag_config():
    p = subprocess.run([sys.executable, "-m", "probetag", "check-config", *map(str, PROBETAG)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("ok: ") == len(PROBETAG) >= 7


def test_check_config_rejects_a_broken_copy(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(PROBETAG[0].read_text() + "\nhttp:\n  adress: x\n")
    p = subprocess.run([sys.executable, "-m", "probetag", "check-config", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "adress" in p.stderr


@pytest.mark.parametrize("path", PROBETAG, ids=lambda p: p.name)
def test_rules_and_templates_build(path):
    from probetag._config import Actions  # noqa: F401  (config types are what Actions takes)
    from probetag.act import Actions as Acts
    cfg = load_config(path)
    Acts(cfg.actions, cfg.detect.allowlist, cfg.detect.output_field)  # templates compile


def test_fluent_reader_rejects_unbalanced():
    with pytest.raises(FluentConfError):
        parse("<match **>\n  @type null\n")
    with pytest.raises(FluentConfError):
        parse("</match>\n")
    root = parse('<source>\n  @type forward # c\n  tag "a b"\n</source>\n')
    assert root.children[0].params == {"@type": "forward", "tag": "a b"}


@pytest.mark.parametrize("path", [p for p in FLUENTD if p.name != "exec-filter.conf"], ids=lambda p: p.name)
def test_fluentd_forward_pairs(path):
    _, cfg = paired(path)
    root = parse(path.read_text())
    # out_forward to probetag's listener, at-least-once
    (fwd,) = root.find("match", **{"@type": "forward"})
    assert fwd.params["require_ack_response"] == "true"
    server = fwd.child("server")
    assert (server.params["host"], int(server.params["port"])) == parse_hostport(cfg.listen.address)
    # in_forward receiving probetag's output, into its own label
    assert cfg.output.type == "forward" and cfg.output.require_ack
    (back,) = root.find("source", **{"@type": "forward"})
    assert int(back.params["port"]) == parse_hostport(cfg.output.address)[1]
    label = back.params["@label"]
    assert [d for d in root.children if d.name == "label" and d.arg == label]
    # the label is not where records are sent to probetag: no loop
    assert fwd not in root.find("label")[0].find("match")
    # the sender address the probetag config looks for is what in_syslog writes
    (syslog,) = root.find("source", **{"@type": "syslog"})
    assert syslog.params["source_address_key"] in cfg.detect.source_fields
    # retagged records and summaries reach a specific <match> in the label,
    # not the catch-all: the first pattern that matches them (Fluentd's order)
    label_matches = [m.arg for m in root.find("label")[0].children if m.name == "match"]
    tags = [render_retag(rule.tag) for rule in cfg.actions.rules if rule.action == "retag"]
    if cfg.actions.summaries:
        tags.append(cfg.actions.summary_tag)
    for tag in tags:
        first = next(p for p in label_matches if fluent_match(p, tag))
        assert first != "**", f"{path.name}: {tag} only reaches the catch-all"
    assert fluent_match(label_matches[-1], "syslog.auth.info")  # the rest is indexed too


def render_retag(template: str) -> str:
    from probetag._config import Actions as ActionsCfg, Allowlist, Rule
    from probetag.act import Actions
    acts = Actions(ActionsCfg(rules=(Rule(action="retag", tag=template),)), Allowlist())
    return acts.decide("syslog.auth.info", {}, {"name": "GetRequest", "scanner": "nmap"}, None).tag


def fluent_match(pattern: str, tag: str) -> bool:
    """Fluentd <match> patterns: '*' one tag part, '**' zero or more parts,
    '{a,b}' alternatives, several patterns separated by spaces."""
    for pat in pattern.split():
        rx, i = "", 0
        while i < len(pat):
            if pat.startswith(".**", i):
                rx += r"(?:\..*)?"
                i += 3
            elif pat.startswith("**", i):
                rx += ".*"
                i += 2
            elif pat[i] == "*":
                rx += r"[^.]+"
                i += 1
            elif pat[i] == "{":
                j = pat.index("}", i)
                rx += "(?:" + "|".join(re.escape(a) for a in pat[i + 1:j].split(",")) + ")"
                i = j + 1
            else:
                rx += re.escape(pat[i])
                i += 1
        if re.fullmatch(rx, tag):
            return True
    return False


def test_fluent_match_semantics():
    assert fluent_match("security.**", "security.probe.syslog.auth")
    assert fluent_match("security.**", "security")
    assert not fluent_match("security.**", "securityx.a")
    assert fluent_match("a.*", "a.b") and not fluent_match("a.*", "a.b.c")
    assert fluent_match("{x,y}.z", "y.z") and fluent_match("a b", "b")


def test_fluentd_exec_filter_pair():
    path = CONFIGS / "fluentd" / "exec-filter.conf"
    target, cfg = paired(path)
    root = parse(path.read_text())
    (m,) = root.find("match", **{"@type": "exec_filter"})
    argv = shlex.split(m.params["command"])
    assert argv[:2] == ["probetag", "exec-filter"]
    opts = dict(zip(argv[2::2], argv[3::2]))
    assert opts["--in-format"] == m.child("format").params["@type"]
    assert opts["--out-format"] == m.child("parse").params["@type"]
    inject, extract = m.child("inject").params, m.child("extract").params
    assert opts["--tag-key"] == inject["tag_key"] == extract["tag_key"]
    assert opts["--time-key"] == inject["time_key"] == extract["time_key"]
    assert Path(opts["-c"]).name == target.name
    assert m.params["@label"] in [d.arg for d in root.children if d.name == "label"]
    # the command line really parses
    from probetag.inputs.exec_filter import _parser
    _parser().parse_args(argv[2:])


@pytest.mark.parametrize("path", VECTOR, ids=lambda p: p.name)
def test_vector_pairs(path):
    _, cfg = paired(path)
    doc = yaml.safe_load(path.read_text())
    assert doc["acknowledgements"]["enabled"] is True
    (sink,) = [s for s in doc["sinks"].values() if s["type"] == "http"]
    url = urlsplit(sink["uri"])
    assert (url.hostname, url.port) == parse_hostport(cfg.http.address)
    assert url.path == cfg.http.path
    assert sink["encoding"]["codec"] == "json"
    assert sink.get("framing", {}).get("method", "newline_delimited") in ("newline_delimited", "character_delimited")
    assert sink.get("compression", "none") in ("none", "gzip", "zlib", "zstd")
    assert sink["batch"]["max_bytes"] <= cfg.http.max_body_bytes
    (src,) = [s for n, s in doc["sources"].items() if s["type"] == "fluent"]
    assert cfg.output.type == "forward" and not cfg.output.shared_key  # fluent source has no shared key
    assert parse_hostport(src["address"])[1] == parse_hostport(cfg.output.address)[1]
    # nothing that comes back from probetag is sent to probetag again
    fluent_name = [n for n, s in doc["sources"].items() if s["type"] == "fluent"][0]
    assert fluent_name not in sink["inputs"]
    # every sink/transform input exists
    names = set(doc["sources"]) | {f"{t}.{r}" for t, v in doc.get("transforms", {}).items()
                                    for r in list(v.get("route", {})) + ["_unmatched"]}
    names |= set(doc.get("transforms", {}))
    for s in list(doc["sinks"].values()) + list(doc.get("transforms", {}).values()):
        for i in s["inputs"]:
            assert i in names, f"{path.name}: unknown input {i}"
    # retagged events and summaries have a route of their own: a route
    # condition names a string literal the tag starts with
    literals = [lit for t in doc.get("transforms", {}).values() if t["type"] == "route"
                for cond in t["route"].values() for lit in re.findall(r'"([^"]*)"', cond)]
    tags = [render_retag(r.tag) for r in cfg.actions.rules if r.action == "retag"]
    if cfg.actions.summaries:
        tags.append(cfg.actions.summary_tag)
    for tag in tags:
        assert any(lit and tag.startswith(lit) for lit in literals), f"{path.name}: no route for {tag}"
    # Vector's syslog source puts the peer address in source_ip
    assert "source_ip" in cfg.detect.source_fields


def test_vector_security_config_routes_a_vector_syslog_probe():
    """The shipped Vector security-index config, run for real (addresses moved
    to free ports, output to stdout): a probe event as Vector's syslog source
    shapes it comes back retagged for the security route; a normal one not."""
    import asyncio
    import gzip
    import io
    import json

    from probetag._config import replace
    from probetag._metrics import Metrics
    from probetag._serve import Service

    cfg = load_config(CONFIGS / "probetag" / "vector-security-index.yaml")
    cfg = replace(cfg, listen={"address": "127.0.0.1:0"}, http={"address": "127.0.0.1:0"},
                  output={"type": "stdout", "address": None})
    base = {"facility": "user", "host": "127.0.0.1:40000", "hostname": "web1", "severity": "notice",
            "source_ip": "203.0.113.7", "source_type": "syslog", "timestamp": "2026-11-27T10:00:00Z"}
    events = [{**base, "appname": "GET", "message": "/ HTTP/1.0#015#012#015#012"},
              {**base, "appname": "sshd", "procid": 812, "message": "Accepted publickey for deploy"}]
    body = gzip.compress("\n".join(json.dumps(e, sort_keys=True) for e in events).encode())
    out = io.BytesIO()

    async def main():
        svc = Service(cfg, Metrics(), stdout=out)
        await svc.start()
        try:
            http = svc.inputs[0]
            r, w = await asyncio.open_connection("127.0.0.1", http.port)
            w.write((f"POST {cfg.http.path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-ndjson\r\n"
                     f"content-encoding: gzip\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body)
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            w.close()
            return head
        finally:
            await svc.stop(drain_timeout=5)

    head = asyncio.run(asyncio.wait_for(main(), 30))
    assert head.startswith(b"HTTP/1.1 200")
    decoded = [json.loads(l) for l in out.getvalue().splitlines()]
    lines = {d["record"]["appname"]: d for d in decoded if "appname" in d["record"]}
    # the scan (event time long past) is already idle: its summary follows
    summaries = [d for d in decoded if d["tag"] == cfg.actions.summary_tag]
    assert len(decoded) == 3 and len(summaries) == 1
    assert summaries[0]["record"]["probe_summary"]["probes"] == {"GetRequest": 1}
    assert lines["GET"]["tag"] == "security.probe.vector.syslog"
    rec = lines["GET"]["record"]
    assert rec["probe"]["scanner"] == "nmap" and rec["source"] == {"ip": "203.0.113.7"}
    assert rec["event"]["kind"] == "alert"
    assert lines["sshd"]["tag"] == "vector.syslog" and "probe" not in lines["sshd"]["record"]


# -- Fluentd configs start on a stock Fluentd ---------------------------------

FLUENTD_VARIANTS = [(p, name) for p in FLUENTD for name in variants(p.read_text())]


@pytest.mark.parametrize("path,variant", FLUENTD_VARIANTS, ids=lambda v: getattr(v, "name", v))
def test_fluentd_config_follows_fluentds_rules(path, variant):
    """Each config as shipped uses core plugins only, nests its sections as
    Fluentd does and gives every required parameter; so does each documented
    switch (the Elasticsearch block, the in_tail alternative)."""
    text = variants(path.read_text())[variant]
    extra = SWITCHED_OUTPUTS if variant.startswith("output:") else None
    assert check(parse(text), extra_outputs=extra) == []
    if variant == "output: elasticsearch":
        root = parse(text)
        assert root.find("match", **{"@type": "elasticsearch"})
        assert not root.find("match", **{"@type": "file"})  # the switch replaces the file outputs


@pytest.mark.parametrize("path", FLUENTD, ids=lambda p: p.name)
def test_fluentd_config_writes_only_under_its_called_out_directory(path):
    text = path.read_text()
    assert "/tmp/probetag-fluentd/" in text.split("\n\n")[0]  # named in the header
    for name, variant in variants(text).items():
        root = parse(variant)
        written = [d.params["path"] for d in root.find("buffer") if "path" in d.params]
        written += [d.params["path"] for d in root.find("match", **{"@type": "file"})]
        written += [d.params["pos_file"] for d in root.find("source", **{"@type": "tail"})]
        assert written or name != "shipped"
        assert all(w.startswith("/tmp/probetag-fluentd/") for w in written), written
        assert len(set(written)) == len(written), "two plugins share a buffer path"
    assert "v1.14 - v1.19" in text


def test_fluentd_rules_reader_catches_what_fluentd_refuses():
    old = ("<source>\n  @type syslog\n  port 5140\n</source>\n"
           "<source>\n  @type tail\n  path /x\n  tag t\n</source>\n"
           "<match **>\n  @type elasticsearch\n</match>\n"
           "<match a>\n  @type forward\n  <buffer>\n    @type file\n  </buffer>\n</match>\n"
           "<match b>\n  @type file\n  path /tmp/x\n  <server>\n    host h\n  </server>\n</match>\n"
           "<match c>\n  @type stdout\n  @label @NOPE\n</match>\n"
           "<label @L>\n  <source>\n    @type forward\n  </source>\n</label>\n")
    errors = check(parse(old))
    want = ["syslog: required parameter 'tag' missing", "tail: a <parse> section is required",
            "unknown output plugin 'elasticsearch'", "forward: a <server> section is required",
            "buffer file: required parameter 'path' missing", "not a section of output file",
            "@label @NOPE has no <label>", "not allowed inside a <label>"]
    for w in want:
        assert any(w in e for e in errors), (w, errors)
    assert len(errors) == len(want)


def test_fluentd_in_tail_alternative_reads_both_rsyslog_file_formats():
    """The in_tail alternative uses the none parser: the record is the whole
    line, and probetag reads it, RFC 3339 time (RSYSLOG_FileFormat, Debian's
    default) or traditional."""
    from probetag._metrics import Metrics
    from probetag._stage import Processor, pack_entry, unpacker_for

    root = parse(variants((CONFIGS / "fluentd" / "enrich.conf").read_text())["alternative: in_tail"])
    (tail,) = root.find("source", **{"@type": "tail"})
    assert tail.child("parse").params["@type"] == "none"
    cfg = load_config(CONFIGS / "probetag" / "fluentd-enrich.yaml")
    proc = Processor(cfg, Metrics())
    lines = [b"2026-11-27T13:46:08.123456+00:00 GET / HTTP/1.0#015",
             b"Nov 27 13:46:08 GET / HTTP/1.0#015",
             b"2026-11-27T13:46:09.000001+00:00 web1 sshd[812]: Accepted publickey for deploy"]
    # in_tail values are msgpack bin (FORWARD_NOTES 8)
    entries = b"".join(pack_entry(1795773600 + i, {"message": line}) for i, line in enumerate(lines))
    res = proc.process(tail.params["tag"], entries)
    out = [rec for ch in res.chunks for _, rec in unpacker_for(ch.entries)]
    assert [r.get("probe", {}).get("name") for r in out] == ["GetRequest", "GetRequest", None]


def test_rsyslog_template_in_docs_and_configs_keeps_the_whole_tag():
    template = "<%PRI%>%TIMESTAMP% %HOSTNAME% %syslogtag%%msg:::sp-if-no-1st-sp%%msg%"
    doc = (ROOT / "docs" / "fluentd.md").read_text()
    assert template in doc and "RSYSLOG_SyslogProtocol23Format" in doc
    assert "syslogtag:1:32" in doc  # the default it replaces, and why
    for path in FLUENTD:
        if path.name != "exec-filter.conf":
            assert template in path.read_text()
