"""What happens to a record once a probe has been recognised in it. No I/O.

Theory of operation
-------------------
* ``Actions`` is built once from the validated config; everything that can be
  prepared (allowlist networks, tag templates) is parsed then, so a bad
  template fails at start-up, not on the first probe.
* ``decide(tag, record, probe, source)`` is called by the detection stage for
  every record in which a probe was found; it returns a ``Decision`` with one
  of three outcomes, which the stage counts:

  1. **Allowlist first.** The sender (``source``, an address) inside one of
     ``detect.allowlist.sources`` (addresses or CIDR networks, IPv4 or IPv6)
     or the probe's scanner in ``detect.allowlist.scanners``:
     mode ``pass`` -> ``passed`` with the *same* record object, untouched
     (non-matching and allowed records get no added fields);
     mode ``tag`` -> ``tagged`` with ``probe.allowed = true``; rules are not
     applied, so an allowed probe is never dropped or retagged.
  2. **Rules, first match wins.** A rule matches when every condition it
     sets holds: probe name in ``probe``, scanner in ``scanner``, confidence
     >= ``min_confidence`` (empty lists match anything).
     ``keep`` -> tagged; ``drop`` -> dropped (record returned untouched, the
     stage discards it and counts it); ``retag`` -> tagged under the
     template's tag.
  3. No rule matches -> ``keep``.
* Tagging never mutates the caller's record: the result is a shallow copy
  plus ``{output_field: probe}`` (replacing an older ``output_field`` value,
  which can only be an earlier probetag's verdict), plus ECS maps when
  ``actions.ecs`` is set (merged, never clobbering; see ``_ecs``).
* Templates know ``${tag}``, ``${probe}`` and ``${scanner}``; anything else in
  ``${...}`` is a config error. Substitution is plain string replacement (no
  eval, no format spec). Probe and scanner names are reduced to
  ``[A-Za-z0-9_-]`` (others become ``_``) so a name cannot add tag levels or
  characters Fluentd's ``<match>`` patterns treat specially; ``${tag}`` is
  inserted as is, its dots being the point.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Literal

from .._config import Actions as ActionsConfig
from .._config import Allowlist, ConfigError, Rule
from ._ecs import ecs_fields, merge_ecs

__all__ = ["Actions", "Decision"]

Outcome = Literal["tagged", "passed", "dropped"]


# Not frozen: one is made per tagged record and handed to its caller alone
# (a frozen dataclass's __init__ costs four times as much).
@dataclass(slots=True)
class Decision:
    outcome: Outcome
    tag: str
    record: dict[Any, Any]


_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_TEMPLATE_VARS = ("tag", "probe", "scanner")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _compile_template(template: str, key: str) -> tuple[tuple[str, bool], ...]:
    """-> parts (text, is_variable). Raises ConfigError on an unknown variable."""
    parts: list[tuple[str, bool]] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(template):
        if m.group(1) not in _TEMPLATE_VARS:
            raise ConfigError(f"unknown template variable ${{{m.group(1)}}} "
                              f"(known: {', '.join('${%s}' % v for v in _TEMPLATE_VARS)})", key=key)
        if m.start() > pos:
            parts.append((template[pos:m.start()], False))
        parts.append((m.group(1), True))
        pos = m.end()
    if pos < len(template):
        parts.append((template[pos:], False))
    return tuple(parts)


def _safe(value: Any) -> str:
    return _UNSAFE.sub("_", str(value)) or "_"


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule: Rule
    probes: frozenset[str]
    scanners: frozenset[str]
    template: tuple[tuple[str, bool], ...]

    def matches(self, probe: dict[str, Any]) -> bool:
        if self.probes and probe.get("name") not in self.probes:
            return False
        if self.scanners and probe.get("scanner") not in self.scanners:
            return False
        if self.rule.min_confidence:
            conf = probe.get("confidence")
            if not isinstance(conf, (int, float)) or conf < self.rule.min_confidence:
                return False
        return True

    def render(self, tag: str, probe: dict[str, Any]) -> str:
        values = {"tag": tag, "probe": _safe(probe.get("name", "")),
                  "scanner": _safe(probe.get("scanner", ""))}
        return "".join(values[text] if var else text for text, var in self.template)


class Actions:
    """Allowlist, rules and ECS for tagged records (see the module docstring)."""

    def __init__(self, actions: ActionsConfig, allowlist: Allowlist, output_field: str = "probe") -> None:
        self.config = actions
        self.allowlist = allowlist
        self.output_field = output_field
        nets4: list[ipaddress.IPv4Network] = []
        nets6: list[ipaddress.IPv6Network] = []
        for i, src in enumerate(allowlist.sources):
            try:
                net = ipaddress.ip_network(src.strip(), strict=False)
            except ValueError:
                raise ConfigError(f"not an address or CIDR network: {src!r}",
                                  key=f"detect.allowlist.sources[{i}]") from None
            (nets4 if net.version == 4 else nets6).append(net)  # type: ignore[arg-type]
        self._nets4 = tuple(nets4)
        self._nets6 = tuple(nets6)
        self._allowed_scanners = frozenset(allowlist.scanners)
        # A source string seen before gets its verdict from here: syslog
        # senders repeat, and parsing an address per record is the slow part.
        self._source_cache: dict[str, bool] = {}
        rules = []
        for i, rule in enumerate(actions.rules):
            template: tuple[tuple[str, bool], ...] = ()
            if rule.action == "retag":
                if not rule.tag:
                    raise ConfigError("retag needs a tag template", key=f"actions.rules[{i}].tag")
                template = _compile_template(rule.tag, f"actions.rules[{i}].tag")
            rules.append(_CompiledRule(rule, frozenset(rule.probe), frozenset(rule.scanner), template))
        self._rules = tuple(rules)

    # -- allowlist -----------------------------------------------------------

    def source_allowed(self, source: str | None) -> bool:
        """Is ``source`` (an IPv4/IPv6 address, optionally ``[v6]`` or with a
        ``%zone``) inside an allowlisted network? Host names never match."""
        if not source or not (self._nets4 or self._nets6):
            return False
        hit = self._source_cache.get(source)
        if hit is not None:
            return hit
        text = source.strip().strip("[]").split("%", 1)[0]
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            hit = False
        else:
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped  # ::ffff:10.0.0.1 from a dual-stack listener
            nets = self._nets4 if addr.version == 4 else self._nets6
            hit = any(addr in net for net in nets)
        if len(self._source_cache) >= 65536:
            self._source_cache.clear()  # bounded: a scan of a /16 must not grow it forever
        self._source_cache[source] = hit
        return hit

    def is_allowed(self, probe: dict[str, Any], source: str | None) -> bool:
        return probe.get("scanner") in self._allowed_scanners or self.source_allowed(source)

    # -- decisions -----------------------------------------------------------

    def decide(self, tag: str, record: dict[Any, Any], probe: dict[str, Any],
               source: str | None) -> Decision:
        if self.is_allowed(probe, source):
            if self.allowlist.mode == "pass":
                return Decision("passed", tag, record)
            return Decision("tagged", tag, self._tagged(record, {**probe, "allowed": True}, source))
        for rule in self._rules:
            if not rule.matches(probe):
                continue
            action = rule.rule.action
            if action == "drop":
                return Decision("dropped", tag, record)
            new_tag = rule.render(tag, probe) if action == "retag" else tag
            return Decision("tagged", new_tag, self._tagged(record, probe, source))
        return Decision("tagged", tag, self._tagged(record, probe, source))

    def _tagged(self, record: dict[Any, Any], probe: dict[str, Any], source: str | None) -> dict[Any, Any]:
        out = dict(record)
        out[self.output_field] = probe
        if self.config.ecs:
            merge_ecs(out, ecs_fields(probe, source))
        return out

    # -- summaries -----------------------------------------------------------

    def summary(self, summary: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """A scan summary (from correlation) -> (summary_tag, record), or None
        when summaries are off or the scan's source/scanner is allowlisted in
        ``pass`` mode (allowed scans make no noise)."""
        if not self.config.summaries:
            return None
        source = summary.get("source")
        source = source if isinstance(source, str) else None
        scanner = summary.get("scanner")
        allowed = (scanner in self._allowed_scanners) or self.source_allowed(source)
        if allowed and self.allowlist.mode == "pass":
            return None
        record: dict[str, Any] = {f"{self.output_field}_summary": dict(summary)}
        if allowed:
            record[f"{self.output_field}_summary"]["allowed"] = True
        if self.config.ecs:
            probe = {"name": "scan-summary", "scanner": scanner} if scanner else {"name": "scan-summary"}
            merge_ecs(record, ecs_fields(probe, source, action="scan-summary",
                                         dataset="probetag.summary"))
        return self.config.summary_tag, record
