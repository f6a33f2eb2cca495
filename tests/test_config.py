import pytest

from probetag._config import Config, ConfigError, load_config, reference


def test_defaults_validate():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.listen.address == "127.0.0.1:24224"
    assert cfg.output.type == "stdout"


def test_unknown_key_names_file_line_key(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("listen:\n  address: 127.0.0.1:1\n  adress: x\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    e = ei.value
    assert e.file == str(p) and e.line == 3 and e.key == "listen.adress"
    assert str(p) in str(e) and ":3:" in str(e) and "unknown key" in str(e)


@pytest.mark.parametrize("text,key,line", [
    ("listen:\n  max_connections: abc\n", "listen.max_connections", 2),
    ("output:\n  type: carrier-pigeon\n", "output.type", 2),
    ("listen:\n  udp_heartbeat: 3\n", "listen.udp_heartbeat", 2),
    ("listen:\n  address: nohost\n", "listen.address", 2),
    ("detect:\n  allowlist:\n    sources: [10.0.0.0/8, not-a-net]\n", "detect.allowlist.sources[1]", 3),
    ("actions:\n  rules:\n    - action: retag\n", "actions.rules[0].tag", 3),
    ("actions:\n  rules:\n    - probe: [x]\n", "actions.rules[0].action", 3),
    # a null where a mapping of settings is expected: its required keys are
    # missing, at the null's line
    ("detect:\n  signatures:\n    - null\n", "detect.signatures[0].id", 3),
    ("actions:\n  rules: [~]\n", "actions.rules[0].action", 2),
])
def test_bad_values(text, key, line):
    with pytest.raises(ConfigError) as ei:
        load_config(text=text)
    assert ei.value.key == key
    assert ei.value.line == line


def test_yaml_syntax_error_has_line():
    with pytest.raises(ConfigError) as ei:
        load_config(text="listen:\n  address: [\n")
    assert ei.value.line is not None and "YAML" in str(ei.value)


def test_reference_covers_every_leaf():
    keys = {k for k, _, _ in reference()}
    assert "listen.shared_key" in keys and "output.ack_timeout" in keys
    assert all(doc for _, _, doc in reference())


@pytest.mark.parametrize("text, line", [
    ("listen:\n  address: !foo 127.0.0.1:0\n", 2),
    ("http:\n  address: 127.0.0.1:0\n  max_body_bytes: !!binary 'not base64!'\n", 3),
    ("flow:\n  batch_records: !!python/object:os.system 1\n", 2),
])
def test_yaml_construction_errors_are_config_errors(tmp_path, text, line):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    assert ei.value.file == str(path) and ei.value.line == line and "YAML" in str(ei.value)
    # The shared loader is left clean: the next load works.
    assert load_config(text="listen:\n  address: 127.0.0.1:0\n").listen.address == "127.0.0.1:0"


def test_yaml_nested_too_deep_is_config_error():
    with pytest.raises(ConfigError):
        load_config(text="a: " + "[" * 100_000)


def test_dead_letter_checked_at_load(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(text="output:\n  dead_letter: /tmp/dl.jsonl\n")
    assert e.value.key == "output.dead_letter" and "forward" in e.value.reason
    missing = tmp_path / "no" / "dl.jsonl"
    cfg = f"output:\n  type: forward\n  address: 127.0.0.1:1\n  dead_letter: {missing}\n"
    with pytest.raises(ConfigError) as e:
        load_config(text=cfg, resources=True)
    assert e.value.key == "output.dead_letter" and e.value.line == 4
    with pytest.raises(ConfigError) as e:
        load_config(text="output:\n  type: forward\n  address: 127.0.0.1:1\n  dead_letter_after: 0\n")
    assert e.value.key == "output.dead_letter_after" and e.value.line == 4
    with pytest.raises(ConfigError) as e:
        load_config(text=f"output:\n  type: forward\n  address: 127.0.0.1:1\n  require_ack: false\n"
                         f"  dead_letter: {tmp_path}/dl\n")
    assert e.value.key == "output.dead_letter" and "require_ack" in e.value.reason
    ok = load_config(text=f"output:\n  type: forward\n  address: 127.0.0.1:1\n  dead_letter: {tmp_path}/dl\n",
                     resources=True)
    assert ok.output.dead_letter == f"{tmp_path}/dl" and ok.output.dead_letter_after == 5


def test_deep_flow_nesting_refused_before_yaml_reads_it():
    # PyYAML's scanner is quadratic in flow depth (50,000 levels: minutes).
    text = "log_level: info\nlisten: " + "[" * 50_000 + "]" * 50_000 + "\n"
    with pytest.raises(ConfigError) as e:
        load_config(text=text)
    assert "nested too deep" in e.value.reason and e.value.line == 2
    # Brackets in quoted strings, comments and shallow lists are not nesting.
    ok = load_config(text='detect:\n  fields: ["' + "[" * 500 + '", b]  # ' + "{" * 500 + "\n"
                     "  source_fields: ['x[[[', \"y\\\"[[[\"]\n")
    assert ok.detect.fields[0] == "[" * 500 and ok.detect.source_fields == ("x[[[", 'y"[[[')
