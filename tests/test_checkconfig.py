"""``probetag check-config`` checks everything ``serve`` checks, prints every
error as FILE:LINE: KEY: message, and neither command shows a traceback
for a config error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import probetag
from probetag._config import ConfigError, check_config, load_config

_ENV = {**os.environ, "PYTHONPATH": str(Path(probetag.__file__).resolve().parent.parent)}


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "probetag", *args], capture_output=True, text=True,
                          timeout=timeout, env=_ENV, stdin=subprocess.DEVNULL)


BAD = {
    "template": ("actions:\n  rules:\n    - action: retag\n      tag: \"security.${host}\"\n",
                 ":4: actions.rules[0].tag: unknown template variable ${host}"),
    "catalogue": ("detect:\n  catalogue: [/nonexistent/probes.yaml]\n",
                  ":2: detect.catalogue[0]: /nonexistent/probes.yaml: cannot read: No such file"),
    "tls": ("listen:\n  tls:\n    cert_file: /nonexistent/cert.pem\n    key_file: /nonexistent/key.pem\n",
            ":3: listen.tls.cert_file: cannot read /nonexistent/cert.pem"),
    "range": ("detect:\n  min_confidence: 7\n", ":2: detect.min_confidence: must be between 0 and 1, got 7"),
    "rule-range": ("actions:\n  rules:\n    - action: drop\n      min_confidence: 1.5\n",
                   ":4: actions.rules[0].min_confidence: must be between 0 and 1"),
    "zero": ("correlation:\n  window: 0\n", ":2: correlation.window: must be greater than 0, got 0"),
    "output-tls": ("output:\n  type: forward\n  address: 127.0.0.1:1\n  tls:\n    ca_file: /nonexistent/ca.pem\n",
                   ":5: output.tls.ca_file: cannot read /nonexistent/ca.pem"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_check_config_and_serve_refuse_with_a_located_message(tmp_path, name):
    text, want = BAD[name]
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    r = _run("check-config", str(p))
    assert r.returncode == 1, r
    assert f"error: {p}{want}" in r.stderr, r.stderr
    assert "ok:" not in r.stdout and "Traceback" not in r.stderr
    # serve refuses the same file before it starts, without a traceback
    s = _run("serve", "-c", str(p), "--listen", "127.0.0.1:0", timeout=60)
    assert s.returncode == 2, s
    assert f"error: {p}{want}" in s.stderr and "Traceback" not in s.stderr, s.stderr


def test_every_error_of_a_file_is_reported_in_file_order(tmp_path):
    p = tmp_path / "two.yaml"
    p.write_text("listen:\n  adress: 127.0.0.1:1\noutput:\n  type: fowrard\n"
                 "detect:\n  min_confidence: -1\n  escapes: [rsyslg]\n")
    r = _run("check-config", str(p))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert lines == [
        f"error: {p}:2: listen.adress: unknown key (did you mean 'address'?) (known here: address, "
        "auth_failures_per_minute, deny_keepalive, first_frame_timeout, frame_timeout, "
        "handshake_timeout, idle_soft_limit, idle_timeout, max_chunk_entries, max_connections, "
        "max_decompressed_bytes, max_frame_bytes, max_partial_bytes, self_hostname, shared_key, "
        "tag_prefix, tls, udp_heartbeat, users)",
        f"error: {p}:4: output.type: must be one of stdout, forward, ndjson; got 'fowrard' "
        "(did you mean 'forward'?)",
        f"error: {p}:6: detect.min_confidence: must not be negative, got -1",
        f"error: {p}:7: detect.escapes[0]: unknown escape dialect 'rsyslg' (did you mean 'rsyslog'?); "
        "known: rsyslog, cstyle, backslash-octal, rsyslog-8bit",
    ]
    assert f"{p}: 4 errors" in r.stderr


def test_a_good_file_is_ok_and_the_exit_status_counts_any_bad_one(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("detect:\n  min_confidence: 0.7\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("flow:\n  batch_records: 0\n")
    r = _run("check-config", str(good))
    assert r.returncode == 0 and r.stdout == f"ok: {good}\n"
    r = _run("check-config", str(good), str(bad))
    assert r.returncode == 1 and f"ok: {good}" in r.stdout
    assert f"error: {bad}:2: flow.batch_records: must be at least 1, got 0" in r.stderr


def test_catalogue_file_errors_name_that_file_and_line(tmp_path):
    cat = tmp_path / "mine.yaml"
    cat.write_text("- id: x\n  probe: P\n")  # scanner and payload missing
    p = tmp_path / "c.yaml"
    p.write_text(f"detect:\n  catalogue: [{cat}]\n")
    _, errors = check_config(p)
    assert errors and all(e.file == str(cat) and e.line is not None for e in errors), errors


def test_tls_files_that_do_not_load(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    p = tmp_path / "t.yaml"
    p.write_text(f"http:\n  address: 127.0.0.1:0\n  tls:\n    cert_file: {junk}\n    key_file: {junk}\n")
    _, errors = check_config(p)
    assert [(e.line, e.key) for e in errors] == [(3, "http.tls")]
    assert "TLS files do not load" in errors[0].reason


def test_load_config_raises_the_first_error_carrying_all():
    with pytest.raises(ConfigError) as ei:
        load_config(text="flow:\n  batch_records: 0\nworkers: 99\n")
    assert [(e.line, e.key) for e in ei.value.errors] == [(2, "flow.batch_records"), (3, "workers")]
    assert ei.value is ei.value.errors[0]
    # the resource checks are opt-in (serve and check-config turn them on)
    assert load_config(text="detect:\n  catalogue: [/nonexistent.yaml]\n").detect.catalogue
    with pytest.raises(ConfigError):
        load_config(text="detect:\n  catalogue: [/nonexistent.yaml]\n", resources=True)


def test_shipped_probetag_configs_pass_check_config():
    configs = sorted((Path(__file__).resolve().parent.parent / "configs" / "probetag").glob("*.yaml"))
    assert configs
    for path in configs:
        _, errors = check_config(path)
        assert errors == [], (path, [str(e) for e in errors])
