"""A reader for Fluent Bit's two config formats (YAML and classic), into one
model, plus the checks Fluent Bit makes at start-up as far as a reader can
(plugin names, the keys each plugin takes, ``match`` on filters and outputs)
and its tag routing (``match`` wildcards).

Sources: the Fluent Bit manual, ``administration/configuring-fluent-bit``
(YAML: ``service`` + ``pipeline.inputs/filters/outputs``; classic:
``[SERVICE]``/``[INPUT]``/``[FILTER]``/``[OUTPUT]`` with ``key value`` lines,
keys case-insensitive) and each plugin's page (``pipeline/inputs/*.md``,
``pipeline/outputs/*.md``, ``pipeline/filters/*.md``) for v4.2 - v5.1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml


@dataclass
class Section:
    kind: str  # service | input | filter | output
    params: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.params.get("name", "")


def _text(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def parse_yaml(text: str) -> list[Section]:
    doc = yaml.safe_load(text)
    out = [Section("service", {k.lower(): _text(v) for k, v in (doc.get("service") or {}).items()})]
    pipeline = doc.get("pipeline") or {}
    for kind in ("inputs", "filters", "outputs"):
        for item in pipeline.get(kind) or []:
            out.append(Section(kind[:-1], {k.lower(): _text(v) for k, v in item.items()}))
    unknown = set(doc) - {"service", "pipeline", "parsers", "includes", "env"}
    if unknown:
        raise ValueError(f"unknown top-level sections: {sorted(unknown)}")
    return out


_SECTION = re.compile(r"^\[(SERVICE|INPUT|FILTER|OUTPUT)\]\s*$", re.I)


def parse_classic(text: str) -> list[Section]:
    out: list[Section] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _SECTION.match(line)
        if m:
            out.append(Section(m.group(1).lower()))
            continue
        if not out or not raw[:1].isspace():
            raise ValueError(f"line {n}: a key outside an indented section body: {raw!r}")
        key, _, value = line.partition(" ")
        key = key.lower()
        if key in out[-1].params:
            raise ValueError(f"line {n}: {key} given twice")
        out[-1].params[key] = value.strip()
    return out


_COMMON_IN = {"name", "tag", "alias", "log_level", "mem_buf_limit", "storage.type",
              "storage.pause_on_chunks_overlimit", "threaded", "routable"}
_COMMON_FILTER = {"name", "match", "match_regex", "alias", "log_level"}
_COMMON_OUT = {"name", "match", "match_regex", "alias", "retry_limit", "log_level", "workers",
               "storage.total_limit_size"}
_TLS = {"tls", "tls.verify", "tls.ca_file", "tls.crt_file", "tls.key_file", "tls.vhost"}
#: Built-in plugins and the keys each takes (beyond the common ones).
INPUTS = {
    "syslog": {"mode", "listen", "port", "path", "unix_perm", "parser", "buffer_chunk_size",
               "buffer_max_size", "receive_buffer_size", "source_address_key", "raw_message_key", "format"},
    "tail": {"path", "exclude_path", "db", "db.sync", "db.locking", "parser", "key", "refresh_interval",
             "read_from_head", "path_key", "multiline.parser", "skip_long_lines", "buffer_chunk_size",
             "buffer_max_size", "rotate_wait", "ignore_older"},
    "forward": {"listen", "port", "unix_path", "unix_perm", "tag_prefix", "buffer_chunk_size",
                "buffer_max_size", "shared_key", "self_hostname", "empty_shared_key"} | _TLS,
}
FILTERS = {
    "rewrite_tag": {"rule", "emitter_name", "emitter_storage.type", "emitter_mem_buf_limit"},
    "grep": {"regex", "exclude", "logical_op"},
}
OUTPUTS = {
    "forward": {"host", "port", "require_ack_response", "send_options", "shared_key", "self_hostname",
                "compress", "time_as_integer", "tag", "retain_metadata_in_forward_mode",
                "empty_shared_key", "username", "password"} | _TLS,
    "file": {"path", "file", "format", "mkdir", "delimiter", "label_delimiter", "template"},
    "stdout": {"format", "json_date_key", "json_date_format"},
    "es": {"host", "port", "index", "logstash_format", "logstash_prefix", "suppress_type_name",
           "http_user", "http_passwd", "id_key", "generate_id"} | _TLS,
    "opensearch": {"host", "port", "index", "logstash_format", "logstash_prefix", "suppress_type_name",
                   "http_user", "http_passwd"} | _TLS,
}
SERVICE = {"flush", "log_level", "parsers_file", "storage.path", "storage.sync", "storage.checksum",
           "storage.backlog.mem_limit", "grace", "daemon", "http_server", "http_listen", "http_port"}


def check(sections: list[Section]) -> list[str]:
    errors: list[str] = []
    kinds = {"input": (INPUTS, _COMMON_IN), "filter": (FILTERS, _COMMON_FILTER),
             "output": (OUTPUTS, _COMMON_OUT)}
    services = [s for s in sections if s.kind == "service"]
    if len(services) > 1:
        errors.append("more than one service section")
    for s in services:
        for k in set(s.params) - SERVICE:
            errors.append(f"service: unknown key {k!r}")
    for s in sections:
        if s.kind == "service":
            continue
        table, common = kinds[s.kind]
        if s.name not in table:
            errors.append(f"{s.kind} {s.name!r}: not a built-in plugin")
            continue
        for k in set(s.params) - table[s.name] - common:
            errors.append(f"{s.kind} {s.name}: unknown key {k!r}")
        if s.kind in ("filter", "output") and not ({"match", "match_regex"} & set(s.params)):
            errors.append(f"{s.kind} {s.name}: no match (it would get no records)")
        if s.kind == "input" and s.name == "tail" and "path" not in s.params:
            errors.append("input tail: path is required")
        if s.kind == "filter" and s.name == "rewrite_tag" and len(s.params.get("rule", "").split()) != 4:
            errors.append("filter rewrite_tag: rule must be '$KEY REGEX NEW_TAG KEEP'")
    return errors


def matches(s: Section, tag: str) -> bool:
    """Fluent Bit routing: ``match`` is a wildcard pattern over the whole tag
    (``*`` any characters, dots included), ``match_regex`` a regex search."""
    if "match_regex" in s.params:
        return re.search(s.params["match_regex"], tag) is not None
    pattern = s.params.get("match", "")
    return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("*")), tag) is not None


_MARK = re.compile(r"^\s*## (output: (?P<out>[\w ]+?) \((?P<state>default|off)\)|alternative: (?P<alt>[\w ]+?)|end) ##")
_CONFIG_LINE = re.compile(r"^(\s*)# ((?:- |\[|  ).*)$")


def variants(text: str) -> dict[str, str]:
    """As shipped, and with each documented switch applied (the same markers
    as the Fluentd configs: ``## output: NAME (off) ##`` uncommented with the
    default output block removed, ``## alternative: NAME ##`` uncommented)."""
    lines = text.splitlines()
    blocks: list[tuple[str, str, int, int]] = []
    i = 0
    while i < len(lines):
        m = _MARK.match(lines[i])
        if m and not lines[i].strip().startswith("## end"):
            j = i + 1
            while not lines[j].strip().startswith("## "):
                j += 1
            blocks.append(("alt" if m.group("alt") else m.group("state"), m.group("alt") or m.group("out"), i, j))
            i = j
            continue
        i += 1

    def uncomment(rows: list[str]) -> list[str]:
        out = []
        for r in rows:
            m = _CONFIG_LINE.match(r)
            out.append(m.group(1) + m.group(2) if m else r)
        return out

    result = {"shipped": text}
    default = [b for b in blocks if b[0] == "default"]
    for kind, name, a, b in blocks:
        rows = list(lines)
        rows[a + 1:b] = uncomment(lines[a + 1:b])
        if kind == "off":
            for _, _, da, db in default:
                rows[da + 1:db] = ["# (default output removed)"] * (db - da - 1)
            result[f"output: {name}"] = "\n".join(rows) + "\n"
        else:
            result[f"alternative: {name}"] = "\n".join(rows) + "\n"
    return result
