"""probetag.act: allowlist, ordered rules, templates, ECS, summaries."""

from __future__ import annotations

import pytest

from probetag._config import Actions as ActionsConfig
from probetag._config import Allowlist, ConfigError, Rule, config_from_mapping
from probetag.act import ECS_VERSION, Actions, Decision


def probe(name="GetRequest", scanner="nmap", confidence=0.9, transport="tcp", **extra):
    return {"name": name, "scanner": scanner, "confidence": confidence, "transport": transport,
            "payload": "GET / HTTP/1.0\r\n\r\n", "scan_id": "s-1", **extra}


def acts(rules=(), *, ecs=False, sources=(), scanners=(), mode="tag", summaries=False, field="probe"):
    return Actions(ActionsConfig(rules=tuple(rules), ecs=ecs, summaries=summaries),
                   Allowlist(sources=tuple(sources), scanners=tuple(scanners), mode=mode), field)


REC = {"host": "web1", "ident": "GET", "message": "/ HTTP/1.0#015"}


def test_default_is_keep_and_does_not_mutate_input():
    rec = dict(REC)
    p = probe()
    d = acts().decide("syslog.auth", rec, p, "192.0.2.7")
    assert d == Decision("tagged", "syslog.auth", {**REC, "probe": p})
    assert rec == REC  # caller's record untouched
    assert d.record is not rec


def test_output_field_is_configurable():
    d = acts(field="scanprobe").decide("t", dict(REC), probe(), None)
    assert "scanprobe" in d.record and "probe" not in d.record


def test_keep_rule():
    d = acts([Rule(action="keep", scanner=("nmap",))]).decide("t", dict(REC), probe(), None)
    assert d.outcome == "tagged" and d.tag == "t" and d.record["probe"]["name"] == "GetRequest"


def test_drop_rule_returns_record_untouched():
    rec = dict(REC)
    d = acts([Rule(action="drop", probe=("GetRequest",))]).decide("t", rec, probe(), None)
    assert d.outcome == "dropped" and d.record is rec and "probe" not in rec


def test_retag_template_all_variables():
    r = Rule(action="retag", tag="security.${scanner}.${probe}.${tag}")
    d = acts([r]).decide("syslog.daemon", dict(REC), probe(), None)
    assert d.outcome == "tagged"
    assert d.tag == "security.nmap.GetRequest.syslog.daemon"


def test_retag_sanitises_names_but_not_tag():
    r = Rule(action="retag", tag="sec.${probe}.${scanner}.${tag}")
    d = acts([r]).decide("a.b", dict(REC), probe(name="TLS 1.2 hello/x", scanner="zgrab.v2"), None)
    assert d.tag == "sec.TLS_1_2_hello_x.zgrab_v2.a.b"


def test_template_literal_dollar_and_no_eval():
    r = Rule(action="retag", tag="x$y.${tag}")
    d = acts([r]).decide("__import__('os')", dict(REC), probe(), None)
    assert d.tag == "x$y.__import__('os')"


def test_unknown_template_variable_is_config_error():
    with pytest.raises(ConfigError) as ei:
        acts([Rule(action="retag", tag="sec.${host}")])
    assert "${host}" in str(ei.value) and ei.value.key == "actions.rules[0].tag"


def test_first_match_wins():
    rules = [Rule(action="drop", scanner=("masscan",)),
             Rule(action="retag", probe=("GetRequest",), tag="sec.${tag}"),
             Rule(action="drop", probe=("GetRequest",))]
    a = acts(rules)
    assert a.decide("t", dict(REC), probe(scanner="masscan"), None).outcome == "dropped"
    d = a.decide("t", dict(REC), probe(), None)
    assert (d.outcome, d.tag) == ("tagged", "sec.t")
    # matches no rule -> kept with its own tag
    d = a.decide("t", dict(REC), probe(name="SIPOptions", scanner="sipvicious"), None)
    assert (d.outcome, d.tag) == ("tagged", "t")


def test_rule_conditions_combine_and_min_confidence():
    r = Rule(action="drop", probe=("GetRequest",), scanner=("nmap",), min_confidence=0.8)
    a = acts([r])
    assert a.decide("t", dict(REC), probe(confidence=0.8), None).outcome == "dropped"
    assert a.decide("t", dict(REC), probe(confidence=0.79), None).outcome == "tagged"
    assert a.decide("t", dict(REC), probe(scanner="zgrab"), None).outcome == "tagged"
    assert a.decide("t", dict(REC), probe(name="Other"), None).outcome == "tagged"
    assert a.decide("t", dict(REC), probe(confidence=None), None).outcome == "tagged"


@pytest.mark.parametrize("sources,src,hit", [
    (("192.0.2.7",), "192.0.2.7", True),
    (("192.0.2.7",), "192.0.2.8", False),
    (("10.0.0.0/8",), "10.200.3.4", True),
    (("10.0.0.0/8",), "11.0.0.1", False),
    (("10.0.0.0/8",), "::ffff:10.1.2.3", True),   # dual-stack listener form
    (("2001:db8::/32",), "2001:db8:1::5", True),
    (("2001:db8::/32",), "[2001:db8::1]", True),
    (("2001:db8::/32",), "2001:db9::1", False),
    (("fe80::/10",), "fe80::1%eth0", True),
    (("10.0.0.0/8",), "scanner.example.org", False),  # host names never match
    (("10.0.0.0/8",), None, False),
])
def test_allowlist_sources(sources, src, hit):
    a = acts(sources=sources, mode="pass")
    rec = dict(REC)
    d = a.decide("t", rec, probe(), src)
    assert (d.outcome == "passed") is hit
    if hit:
        assert d.record is rec and "probe" not in rec
    assert a.source_allowed(src) is hit
    assert a.source_allowed(src) is hit  # second time from the cache


def test_allowlist_scanner_name():
    a = acts([Rule(action="drop")], scanners=("openvas",), mode="tag")
    d = a.decide("t", dict(REC), probe(scanner="openvas"), "203.0.113.1")
    assert d.outcome == "tagged" and d.record["probe"]["allowed"] is True
    assert a.decide("t", dict(REC), probe(scanner="nmap"), "203.0.113.1").outcome == "dropped"


def test_allowlist_tag_mode_skips_drop_and_retag():
    rules = [Rule(action="retag", tag="sec.${tag}")]
    p = probe()
    d = acts(rules, sources=("192.0.2.0/24",), mode="tag").decide("t", dict(REC), p, "192.0.2.9")
    assert d.tag == "t" and d.outcome == "tagged"
    assert d.record["probe"] == {**p, "allowed": True}
    assert "allowed" not in p  # probe map given by the caller untouched


def test_bad_allowlist_source_is_config_error():
    with pytest.raises(ConfigError):
        acts(sources=("10.0.0.0/33",))


def test_ecs_shape():
    d = acts(ecs=True).decide("t", dict(REC), probe(id="nmap-get"), "192.0.2.7")
    r = d.record
    assert r["ecs"] == {"version": ECS_VERSION}
    assert r["event"] == {"kind": "alert", "category": ["network", "intrusion_detection"],
                          "type": ["info"], "action": "scanner-probe", "module": "probetag",
                          "dataset": "probetag.probe"}
    assert r["rule"] == {"name": "GetRequest", "id": "nmap-get", "ruleset": "probetag", "category": "nmap"}
    assert r["source"] == {"ip": "192.0.2.7"}
    assert r["network"] == {"transport": "tcp"}


def test_ecs_does_not_clobber_and_merges():
    rec = {**REC, "event": {"kind": "event", "original": "x"}, "source": "syslog-host",
           "network.transport": "udp"}
    d = acts(ecs=True).decide("t", rec, probe(), "192.0.2.7")
    r = d.record
    assert r["event"]["kind"] == "event" and r["event"]["original"] == "x"
    assert r["event"]["category"] == ["network", "intrusion_detection"]
    assert r["source"] == "syslog-host"          # non-map record data kept
    assert "network" not in r and r["network.transport"] == "udp"  # flat dotted key respected
    assert rec["event"] == {"kind": "event", "original": "x"}  # input not mutated


def test_ecs_source_not_ip_and_unknown_transport_left_out():
    r = acts(ecs=True).decide("t", dict(REC), probe(transport="any"), "host.example").record
    assert "source" not in r and "network" not in r


def test_summary_off_and_on():
    s = {"source": "192.0.2.7", "scanner": "nmap", "probes": {"GetRequest": 3}, "first": 1, "last": 9}
    assert acts().summary(s) is None
    tag, rec = acts(summaries=True).summary(s)
    assert tag == "probetag.summary"
    assert rec == {"probe_summary": s}
    cfg = config_from_mapping({"actions": {"summaries": True, "summary_tag": "sec.scan", "ecs": True}})
    a = Actions(cfg.actions, cfg.detect.allowlist, cfg.detect.output_field)
    tag, rec = a.summary(s)
    assert tag == "sec.scan"
    assert rec["event"]["action"] == "scan-summary" and rec["event"]["dataset"] == "probetag.summary"
    assert rec["source"] == {"ip": "192.0.2.7"} and rec["rule"]["category"] == "nmap"


def test_summary_allowlisted():
    s = {"source": "10.1.1.1", "scanner": "nmap"}
    assert acts(summaries=True, sources=("10.0.0.0/8",), mode="pass").summary(s) is None
    tag, rec = acts(summaries=True, sources=("10.0.0.0/8",), mode="tag").summary(s)
    assert rec["probe_summary"]["allowed"] is True and "allowed" not in s
