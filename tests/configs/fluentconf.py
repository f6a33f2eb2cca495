"""A small reader for Fluentd's config format (enough for the shipped configs).

Directives are ``<name arg>`` ... ``</name>``; parameters are ``key value``
lines; ``#`` starts a comment unless quoted. Values keep their text (no
type conversion), quotes are removed.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field


@dataclass
class Directive:
    name: str
    arg: str = ""
    params: dict[str, str] = field(default_factory=dict)
    children: list["Directive"] = field(default_factory=list)
    line: int = 0

    def find(self, name: str, **params: str) -> list["Directive"]:
        """Descendants called ``name`` whose params include ``params``."""
        out = []
        for c in self.children:
            if c.name == name and all(c.params.get(k) == v for k, v in params.items()):
                out.append(c)
            out.extend(c.find(name, **params))
        return out

    def child(self, name: str) -> "Directive":
        (c,) = [c for c in self.children if c.name == name]
        return c


_OPEN = re.compile(r"<\s*([A-Za-z_][\w-]*)\s*([^>]*)>\s*$")
_CLOSE = re.compile(r"</\s*([A-Za-z_][\w-]*)\s*>\s*$")


class FluentConfError(ValueError):
    pass


def _strip_comment(line: str) -> str:
    out, quote = [], None
    for ch in line:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        out.append(ch)
    return "".join(out).strip()


def parse(text: str) -> Directive:
    root = Directive("ROOT")
    stack = [root]
    for n, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        if not line:
            continue
        m = _CLOSE.match(line)
        if m:
            if len(stack) == 1 or stack[-1].name != m.group(1):
                raise FluentConfError(f"line {n}: unexpected </{m.group(1)}>")
            stack.pop()
            continue
        m = _OPEN.match(line)
        if m:
            d = Directive(m.group(1), m.group(2).strip(), line=n)
            stack[-1].children.append(d)
            stack.append(d)
            continue
        key, _, value = line.partition(" ")
        value = value.strip()
        if value[:1] in "\"'" and value[-1:] == value[:1]:
            value = shlex.split(value)[0]
        if key in stack[-1].params:
            raise FluentConfError(f"line {n}: {key} given twice")
        stack[-1].params[key] = value
    if len(stack) != 1:
        raise FluentConfError(f"<{stack[-1].name}> opened on line {stack[-1].line} is never closed")
    return root


# -- Fluentd's own rules, as far as a reader can check them ------------------
#
# What Fluentd v1.14 - v1.19 checks when it starts, for the plugins it ships
# (the fluentd gem alone, no bundled gems): the directive nesting, that each
# @type is a known plugin, the parameters that have no default, and the
# sections a plugin takes. Source: the plugins' config_param / config_section
# declarations (lib/fluent/plugin/in_*.rb, out_*.rb, buf_*.rb, parser_*.rb,
# formatter_*.rb) and docs.fluentd.org.


@dataclass(frozen=True)
class Plugin:
    required: tuple[str, ...] = ()
    sections: frozenset[str] = frozenset()
    required_sections: tuple[str, ...] = ()
    #: one of these must be given: a parameter, or "extract.tag_key"
    one_of: tuple[str, ...] = ()


def _p(required=(), sections=(), required_sections=(), one_of=()) -> Plugin:
    return Plugin(tuple(required), frozenset(sections), tuple(required_sections), tuple(one_of))


CORE_INPUTS = {
    "forward": _p(sections=("transport", "security")),
    "syslog": _p(required=("tag",), sections=("transport", "parse")),
    "tail": _p(required=("path", "tag"), sections=("parse",), required_sections=("parse",)),
    "tcp": _p(required=("tag",), sections=("transport", "parse"), required_sections=("parse",)),
    "udp": _p(required=("tag",), sections=("parse",), required_sections=("parse",)),
    "http": _p(sections=("transport", "parse")),
    "exec": _p(required=("command",), sections=("parse", "extract"), one_of=("tag", "extract.tag_key")),
    "sample": _p(), "dummy": _p(), "monitor_agent": _p(), "unix": _p(), "object_space": _p(),
}
_OUT_COMMON = ("buffer", "secondary")
CORE_OUTPUTS = {
    "forward": _p(sections=_OUT_COMMON + ("server", "security", "service_discovery"),
                  required_sections=("server",)),
    "file": _p(required=("path",), sections=_OUT_COMMON + ("format", "inject")),
    "stdout": _p(sections=_OUT_COMMON + ("format", "inject")),
    "null": _p(sections=_OUT_COMMON),
    "copy": _p(sections=("store",), required_sections=("store",)),
    "relabel": _p(required=("@label",)),
    "roundrobin": _p(sections=("store",), required_sections=("store",)),
    "exec": _p(required=("command",), sections=_OUT_COMMON + ("format", "inject")),
    "exec_filter": _p(required=("command",), sections=_OUT_COMMON + ("format", "parse", "inject", "extract"),
                      one_of=("tag", "extract.tag_key")),
    "http": _p(required=("endpoint",), sections=_OUT_COMMON + ("format", "auth")),
    "secondary_file": _p(required=("directory",), sections=("format",)),
}
CORE_FILTERS = {
    "record_transformer": _p(sections=("record",)),
    "grep": _p(sections=("regexp", "exclude", "and", "or")),
    "parser": _p(required=("key_name",), sections=("parse",), required_sections=("parse",)),
    "stdout": _p(sections=("format", "inject")),
}
CORE_PARSERS = {"regexp", "apache2", "apache_error", "nginx", "syslog", "csv", "tsv", "ltsv", "json",
                "msgpack", "multiline", "none"}
CORE_FORMATTERS = {"out_file", "json", "ltsv", "csv", "msgpack", "hash", "single_value", "stdout", "tsv"}
CORE_BUFFERS = {"memory", "file", "file_single"}
#: Default @type of a section when none is given (per plugin where it differs).
_SECTION_DEFAULT = {"parse": None, "format": None, "buffer": "memory"}
#: Third-party outputs allowed only in a documented, switched-on block.
SWITCHED_OUTPUTS = {
    "elasticsearch": _p(sections=_OUT_COMMON + ("inject",)),
    "opensearch": _p(sections=_OUT_COMMON + ("inject",)),
}
_GENERIC = {"@type", "@id", "@label", "@log_level"}


def check(root: Directive, *, extra_outputs: dict[str, Plugin] | None = None) -> list[str]:
    """Every way ``root`` breaks the rules above, as ``line N: message``."""
    outputs = {**CORE_OUTPUTS, **(extra_outputs or {})}
    errors: list[str] = []
    labels = {d.arg for d in root.children if d.name == "label"}

    def err(d: Directive, msg: str) -> None:
        errors.append(f"line {d.line}: <{d.name}{' ' + d.arg if d.arg else ''}>: {msg}")

    def plugin(d: Directive, table: dict[str, Plugin], kind: str) -> None:
        t = d.params.get("@type")
        if t is None:
            err(d, f"no @type")
            return
        spec = table.get(t)
        if spec is None:
            err(d, f"unknown {kind} plugin {t!r} (not a core plugin)")
            return
        for key in spec.required:
            if key not in d.params:
                err(d, f"{kind} {t}: required parameter {key!r} missing")
        if spec.one_of:
            present = [k for k in spec.one_of
                       if (k in d.params if "." not in k else
                           any(c.name == k.split(".")[0] and k.split(".")[1] in c.params for c in d.children))]
            if not present:
                err(d, f"{kind} {t}: one of {', '.join(spec.one_of)} is required")
        for name in spec.required_sections:
            if not any(c.name == name for c in d.children):
                err(d, f"{kind} {t}: a <{name}> section is required")
        for c in d.children:
            if c.name not in spec.sections:
                err(c, f"not a section of {kind} {t}")
            else:
                section(c, t)
        if "@label" in d.params and d.params["@label"] not in labels:
            err(d, f"@label {d.params['@label']} has no <label>")

    def section(d: Directive, owner: str) -> None:
        if d.name == "parse":
            t = d.params.get("@type")
            if t is not None and t not in CORE_PARSERS:
                err(d, f"unknown parser plugin {t!r}")
            if t == "regexp" and "expression" not in d.params:
                err(d, "parser regexp: required parameter 'expression' missing")
        elif d.name == "format":
            t = d.params.get("@type")
            if t is not None and t not in CORE_FORMATTERS:
                err(d, f"unknown formatter plugin {t!r}")
        elif d.name == "buffer":
            t = d.params.get("@type", "file" if owner == "file" else "memory")
            if t not in CORE_BUFFERS:
                err(d, f"unknown buffer plugin {t!r}")
            # buf_file needs a path unless out_file derives it from its own
            if t in ("file", "file_single") and "path" not in d.params and owner != "file":
                err(d, "buffer file: required parameter 'path' missing")
        elif d.name == "server":
            if "host" not in d.params:
                err(d, "server: required parameter 'host' missing")
        elif d.name == "security":
            for key in ("self_hostname", "shared_key"):
                if key not in d.params:
                    err(d, f"security: required parameter {key!r} missing")
        elif d.name == "transport":
            if d.arg not in ("tcp", "udp", "tls"):
                err(d, f"transport must be tcp, udp or tls, got {d.arg!r}")
        elif d.name in ("store",):
            plugin(d, outputs, "output")
            return
        for c in d.children:
            if not (d.name == "security" and c.name in ("user", "client")):
                err(c, f"not a section of <{d.name}>")

    def body(d: Directive, top: bool) -> None:
        for c in d.children:
            if c.name == "source" and top:
                plugin(c, CORE_INPUTS, "input")
            elif c.name == "match":
                if not c.arg:
                    err(c, "a <match> needs a tag pattern")
                plugin(c, outputs, "output")
            elif c.name == "filter":
                plugin(c, CORE_FILTERS, "filter")
            elif c.name == "label" and top:
                if not c.arg.startswith("@"):
                    err(c, "label names start with @")
                body(c, False)
            elif c.name == "system" and top:
                pass
            else:
                err(c, f"not allowed {'at the top level' if top else 'inside a <label>'}")
        for key in d.params:
            errors.append(f"{'top level' if top else f'<label {d.arg}>'}: stray parameter {key!r}")

    body(root, True)
    return errors


_MARK = re.compile(r"^\s*## (output: (?P<out>[\w ]+?) \((?P<state>default|off)\)|alternative: (?P<alt>[\w ]+?)|end) ##")


def variants(text: str) -> dict[str, str]:
    """The config as shipped ("shipped"), and with each documented switch
    applied: ``output: NAME (off)`` blocks uncommented and the default output
    block deleted ("output: NAME"); ``alternative: NAME`` blocks uncommented
    next to the rest ("alternative: NAME")."""
    lines = text.splitlines()
    blocks: list[tuple[str, str, int, int]] = []  # (kind, name, first line, end line)
    i = 0
    while i < len(lines):
        m = _MARK.match(lines[i])
        if m and not lines[i].strip().startswith("## end"):
            j = i + 1
            while not lines[j].strip().startswith("## "):
                j += 1
            kind = "alt" if m.group("alt") else m.group("state")
            blocks.append((kind, m.group("alt") or m.group("out"), i, j))
            i = j
            continue
        i += 1

    def uncomment(rows: list[str]) -> list[str]:
        out = []
        for r in rows:
            body = r.lstrip()
            indent = r[:len(r) - len(body)]
            if body.startswith("# <") or body.startswith("#   ") or body.startswith("# </"):
                out.append(indent + body[2:])
            else:
                out.append(r)  # explanation lines stay comments
        return out

    result = {"shipped": text}
    default = [b for b in blocks if b[0] == "default"]
    for kind, name, a, b in blocks:
        if kind == "off":
            rows = list(lines)
            rows[a + 1:b] = uncomment(lines[a + 1:b])
            for _, _, da, db in default:
                rows[da + 1:db] = ["# (default output removed)"] * (db - da - 1)
            result[f"output: {name}"] = "\n".join(rows) + "\n"
        elif kind == "alt":
            rows = list(lines)
            rows[a + 1:b] = uncomment(lines[a + 1:b])
            result[f"alternative: {name}"] = "\n".join(rows) + "\n"
    return result
