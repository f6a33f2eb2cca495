"""Elastic Common Schema (ECS 8.x) fields for tagged records. No I/O.

Theory of operation
-------------------
* ECS is opt-in (``actions.ecs``). The fields are nested maps (``event``,
  ``rule``, ``source``, ``network``, ``ecs``), which is how Elasticsearch
  documents and the ECS reference spell them; a record that already uses the
  flat dotted form (a literal ``"source.ip"`` key) keeps its own value.
* Nothing the record already has is overwritten: existing maps are merged
  key by key (``setdefault``), and a top-level key that holds a non-map
  (``"event": "login"``) is left alone; that branch of ECS is skipped.
  The record's own data always wins over ours.
* Values follow the ECS allowed-value lists:
  ``event.kind`` = ``alert`` (a rule of ours flagged the event, the way an
  IDS does), ``event.category`` = ``["network", "intrusion_detection"]``,
  ``event.type`` = ``["info"]`` (allowed for both categories),
  ``network.transport`` lower-case IANA name. ``observer.*`` is not set:
  the observer is the host that wrote the syslog line, which probetag does
  not know better than the record itself.
"""

from __future__ import annotations

import ipaddress
from typing import Any

__all__ = ["ECS_VERSION", "ecs_fields", "merge_ecs"]

#: The ECS release whose field names and allowed values are used below.
ECS_VERSION = "8.11.0"

MODULE = "probetag"


def _ip_or_none(source: str | None) -> str | None:
    if not source:
        return None
    try:
        return str(ipaddress.ip_address(source.strip("[]")))
    except ValueError:
        return None


def ecs_fields(probe: dict[str, Any], source: str | None, *, action: str = "scanner-probe",
               dataset: str = "probetag.probe") -> dict[str, dict[str, Any]]:
    """The ECS maps for one probe (or summary). Keys with no value are left out."""
    fields: dict[str, dict[str, Any]] = {
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": "alert",
            "category": ["network", "intrusion_detection"],
            "type": ["info"],
            "action": action,
            "module": MODULE,
            "dataset": dataset,
        },
    }
    rule: dict[str, Any] = {"ruleset": MODULE}
    name = probe.get("name")
    if name is not None:
        rule["name"] = name
    rid = probe.get("id", name)
    if rid is not None:
        rule["id"] = rid
    scanner = probe.get("scanner")
    if scanner is not None:
        # rule.category: "a categorization value used by the entity using the
        # rule" (ECS); the scanner family is that category here.
        rule["category"] = scanner
    fields["rule"] = rule
    ip = _ip_or_none(source)
    if ip is not None:
        fields["source"] = {"ip": ip}
    transport = probe.get("transport")
    if isinstance(transport, str) and transport in ("tcp", "udp"):
        fields["network"] = {"transport": transport}
    return fields


def merge_ecs(record: dict[Any, Any], fields: dict[str, dict[str, Any]]) -> None:
    """Merge ``fields`` into ``record`` (a copy the caller owns) without clobbering."""
    for top, sub in fields.items():
        existing = record.get(top)
        if existing is None and top not in record:
            # Respect the flat dotted spelling: skip keys the record already has.
            record[top] = {k: v for k, v in sub.items() if f"{top}.{k}" not in record}
            if not record[top]:
                del record[top]
            continue
        if not isinstance(existing, dict):
            continue  # a non-map under an ECS name is the record's own data
        merged = dict(existing)
        for k, v in sub.items():
            if k not in merged and f"{top}.{k}" not in record:
                merged[k] = v
        record[top] = merged
