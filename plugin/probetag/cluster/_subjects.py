"""Subjects and partitions of the cluster. No I/O.

Theory of operation
-------------------
* Ingress publishes a batch of one source's records to
  ``<in_prefix>.<source-token>``. NATS subjects are dot-separated tokens and
  ``*``, ``>`` and whitespace are wildcards or separators, so a source
  address is made *subject-safe*: every byte outside ``[A-Za-z0-9_-]``
  becomes ``_`` (``203.0.113.7`` -> ``203_0_113_7``, ``2001:db8::1`` ->
  ``2001_db8__1``). The token is only a routing key; records keep their own
  source fields unchanged. Two sources that map to one token merely share a
  partition.
* The server rewrites ``logs.in.*`` to ``logs.part.{{partition(N,1)}}.{{wildcard(1)}}``
  (configs/nats/mapping.conf). ``partition_of`` mirrors the server's
  function (FNV-1a 32-bit of the token, modulo N: nats-server
  ``server/subject_transform.go``) so tools and tests can tell where a
  source goes without asking the server.
* Records with no sender address share the token ``_unknown``: they need no
  correlation, but they do all land in one partition.
* Tags become ``<out_prefix>.<tag>`` with each dot-separated part made
  subject-safe; the exact tag also travels in the ``Probetag-Tag`` header.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["source_token", "partition_of", "in_subject", "out_subject", "part_filter",
           "UNKNOWN_SOURCE", "MAX_TOKEN"]

UNKNOWN_SOURCE = "_unknown"
#: Longer tokens are cut and suffixed with a hash (subjects stay short; a
#: host name can be 253 bytes).
MAX_TOKEN = 64

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def source_token(source: str | None) -> str:
    """The subject-safe routing token of one sender address."""
    if not source:
        return UNKNOWN_SOURCE
    token = _UNSAFE.sub("_", source)
    if len(token) > MAX_TOKEN:
        digest = hashlib.sha1(source.encode("utf-8", "surrogateescape")).hexdigest()[:12]
        token = token[:MAX_TOKEN - 13] + "-" + digest
    return token


def partition_of(token: str, partitions: int) -> int:
    """The partition the server's ``partition(N,1)`` puts ``token`` in."""
    h = 0x811C9DC5
    for b in token.encode("utf-8"):
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h % partitions


def in_subject(prefix: str, token: str) -> str:
    return f"{prefix}.{token}"


def out_subject(prefix: str, tag: str) -> str:
    parts = [_UNSAFE.sub("_", p) or "_" for p in tag.split(".")]
    return prefix + "." + ".".join(parts)


def part_filter(prefix: str, partition: int) -> str:
    """The consumer filter of one partition's messages."""
    return f"{prefix}.{partition}.*"
