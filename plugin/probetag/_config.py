"""The typed configuration: one frozen object, validated once at load.

Theory of operation
-------------------
* Every setting is a field of a frozen dataclass below. The field's metadata
  holds its description; the default is the dataclass default. That single
  place feeds validation, ``probetag check-config``, ``--help`` and
  ``docs/configuration.md`` (``probetag config-reference`` prints it).
* YAML is composed into nodes (not loaded into dicts) so that every error can
  name the file, the line and the dotted key: ``probetag.yaml:12: output.port:
  expected an integer, got 'abc'``.
* Unknown keys are errors, not warnings: a typo must not silently run with a
  default. A near-miss gets a "did you mean".
* Every error of a file is reported, not just the first: ``load_config``
  raises one ``ConfigError`` whose ``errors`` lists them all, in file order.
  A bad value is reported and its default used, so that the rest of the file
  is still checked.
* Ranges live beside the defaults (field metadata ``min``/``above``/``max``).
* ``load_config(..., resources=True)`` (``serve`` and ``check-config``)
  also checks what the running service would otherwise trip over: rule tag
  templates, catalogue files, TLS certificate and key files. ``serve`` then
  never meets a config error after it has started.
* Values are converted strictly: ``"10"`` is not an integer, ``yes`` is a
  bool only because YAML says so.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

__all__ = [
    "Config",
    "ConfigError",
    "load_config",
    "config_from_mapping",
    "parse_hostport",
    "located",
    "reference",
]


class ConfigError(ValueError):
    """A configuration problem, with the file, line and key it concerns."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.reason = message
        #: Every error found in the same load, this one first (file order).
        self.errors: tuple[ConfigError, ...] = (self,)
        super().__init__(located(message, file=file, line=line, names=(key,)))

    @staticmethod
    def of(errors: list[ConfigError]) -> ConfigError:
        """The first of ``errors``, carrying all of them."""
        first = errors[0]
        first.errors = tuple(errors)
        return first


def located(message: str, *, file: str | None, line: int | None,
            names: tuple[str | None, ...] = ()) -> str:
    """``FILE:LINE: NAME: ...: message``, the one shape every load error takes
    (config keys here, catalogue entries in ``detect._catalogue``)."""
    where = ""
    if file:
        where = f"{file}:{line}: " if line is not None else f"{file}: "
    return where + "".join(f"{n}: " for n in names if n) + message


def _doc(text: str, **extra: Any) -> dict[str, Any]:
    """Field metadata: the description, plus optional ``min`` / ``max``
    (inclusive) and ``above`` (exclusive) bounds checked at load."""
    return {"doc": text, **extra}


def did_you_mean(word: str, known: Any) -> str:
    """`` (did you mean 'x'?)`` for a near-miss among ``known``, else ''."""
    close = difflib.get_close_matches(str(word), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_hostport(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT``, ``[v6]:PORT`` -> (host, port). Raises ValueError."""
    value = value.strip()
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise ValueError(f"expected [HOST]:PORT, got {value!r}")
    else:
        host, sep, port = value.rpartition(":")
        if not sep:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be 0..65535, got {port!r}")
    return (host or default_host), int(port)


# --------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class User:
    username: str = field(metadata=_doc("User name sent in PING."))
    password: str = field(metadata=_doc("Password; never logged.", secret=True))


@dataclass(frozen=True, slots=True)
class TLS:
    cert_file: str | None = field(default=None, metadata=_doc("PEM certificate (chain)."))
    key_file: str | None = field(default=None, metadata=_doc("PEM private key."))
    ca_file: str | None = field(default=None, metadata=_doc(
        "CA bundle. On a listener: require and verify client certificates. "
        "On a client: verify the server against it."))
    verify: bool = field(default=True, metadata=_doc("Client side: verify the server certificate."))
    server_name: str | None = field(default=None, metadata=_doc("Client side: SNI / expected name."))


@dataclass(frozen=True, slots=True)
class Listen:
    """The forward-protocol input (Fluentd / Fluent Bit out_forward, fluent-logger)."""

    address: str = field(default="127.0.0.1:24224", metadata=_doc(
        "HOST:PORT to listen on (TCP, plus the UDP heartbeat on the same port)."))
    shared_key: str | None = field(default=None, metadata=_doc(
        "Enables the HELO/PING/PONG handshake with this key. Never logged.", secret=True))
    self_hostname: str = field(default="probetag", metadata=_doc(
        "Our host name in PONG; must differ from the client's (Fluentd checks)."))
    users: tuple[User, ...] = field(default=(), metadata=_doc(
        "If non-empty, clients must also authenticate with one of these users."))
    tls: TLS | None = field(default=None, metadata=_doc("Serve TLS on the same port."))
    udp_heartbeat: bool = field(default=True, metadata=_doc(
        "Answer UDP heartbeats (0x00 -> 0x00) on the same port."))
    tag_prefix: str | None = field(default=None, metadata=_doc(
        "Prefix added to incoming tags as 'PREFIX.tag' (Fluentd add_tag_prefix)."))
    max_frame_bytes: int = field(default=16 * 1024 * 1024, metadata=_doc(
        "Largest forward frame accepted; a larger one closes the connection. Bytes.", min=1))
    max_decompressed_bytes: int = field(default=64 * 1024 * 1024, metadata=_doc(
        "Largest decompressed payload of one frame (gzip/zstd bomb guard). Bytes.", min=1))
    max_chunk_entries: int = field(default=1024 * 1024, metadata=_doc(
        "Most entries one chunk (a frame, or frames merged) may hold, on every input; a "
        "chunk with more is rejected as a whole, logged and not acked. A Fluentd 8 MiB "
        "chunk_limit_size chunk of records of 8 bytes or more fits. Entries.", min=1))
    max_connections: int = field(default=1024, metadata=_doc(
        "Concurrent TCP connections; more are refused (counted).", min=1))
    idle_timeout: float = field(default=300.0, metadata=_doc(
        "Close a connection that sends nothing for this long. Seconds.", above=0))
    first_frame_timeout: float = field(default=5.0, metadata=_doc(
        "Close a connection that has sent no byte at all this long after it was "
        "accepted (with a shared key: the handshake_timeout applies instead). Seconds.", above=0))
    idle_soft_limit: int = field(default=768, metadata=_doc(
        "Once this many connections are open, each new one closes the connection "
        "that has been idle (nothing buffered, no ack owed) the longest. Connections.", min=1))
    auth_failures_per_minute: int = field(default=10, metadata=_doc(
        "Failed handshakes allowed per peer address and minute; past it, new "
        "connections from that address are closed at once until the minute ends.", min=1))
    handshake_timeout: float = field(default=10.0, metadata=_doc(
        "Close a connection that does not finish the handshake in time. Seconds.", above=0))
    frame_timeout: float = field(default=60.0, metadata=_doc(
        "A frame that has started must be complete within this long, else the "
        "connection is closed (slow-loris guard). Seconds.", above=0))
    max_partial_bytes: int = field(default=256 * 1024 * 1024, metadata=_doc(
        "Bytes of frames that have started and are not complete yet, summed over every "
        "connection; past it, the connection holding the largest such frame is closed "
        "(counted) and its sender resends. At least max_frame_bytes. Bytes.", min=1))
    deny_keepalive: bool = field(default=False, metadata=_doc(
        "Close each connection after its first request (Fluentd deny_keepalive)."))


@dataclass(frozen=True, slots=True)
class HttpInput:
    """Input for Vector's ``http`` sink (JSON array or NDJSON bodies)."""

    address: str | None = field(default=None, metadata=_doc(
        "HOST:PORT; unset disables the HTTP input."))
    path: str = field(default="/v1/vector", metadata=_doc("Request path accepted for POST."))
    default_tag: str = field(default="vector", metadata=_doc(
        "Tag for events without a 'tag' field."))
    tag_field: str = field(default="tag", metadata=_doc("Event field that holds the tag."))
    time_field: str = field(default="timestamp", metadata=_doc("Event field that holds the time."))
    max_body_bytes: int = field(default=16 * 1024 * 1024, metadata=_doc(
        "Largest request body, after decompression. Bytes.", min=1))
    max_partial_bytes: int = field(default=256 * 1024 * 1024, metadata=_doc(
        "Bytes of requests that have started and are not complete yet, summed over every "
        "connection; past it, the connection holding the most is answered 503 and closed "
        "(counted). At least max_body_bytes. Bytes.", min=1))
    header_timeout: float = field(default=10.0, metadata=_doc(
        "A request's line and headers must arrive within this long of its first "
        "byte, else 408 and close (slow-loris guard). Seconds.", above=0))
    body_timeout: float = field(default=30.0, metadata=_doc(
        "A request body must arrive within this long of its headers, plus one "
        "second per min_body_rate bytes received, else 408 and close. Seconds.", above=0))
    min_body_rate: int = field(default=512 * 1024, metadata=_doc(
        "Slowest body transfer allowed past body_timeout (see there). Bytes/second.", min=1))
    tls: TLS | None = field(default=None, metadata=_doc("Serve HTTPS."))


@dataclass(frozen=True, slots=True)
class NdjsonInput:
    """Input for Vector's ``socket`` sink (TCP, newline-delimited JSON). No acks."""

    address: str | None = field(default=None, metadata=_doc(
        "HOST:PORT; unset disables the NDJSON input."))
    default_tag: str = field(default="vector", metadata=_doc(
        "Tag for events without a 'tag' field."))
    tag_field: str = field(default="tag", metadata=_doc("Event field that holds the tag."))
    time_field: str = field(default="timestamp", metadata=_doc("Event field that holds the time."))
    max_line_bytes: int = field(default=1024 * 1024, metadata=_doc(
        "Longest line; a longer one is rejected (counted) and skipped.", min=1))


@dataclass(frozen=True, slots=True)
class Output:
    """Where enriched records go."""

    type: Literal["stdout", "forward", "ndjson"] = field(default="stdout", metadata=_doc(
        "stdout: JSON lines on standard output. forward: Fluentd in_forward or Vector "
        "'fluent' source, acked. ndjson: TCP newline-delimited JSON (Vector 'socket' source), "
        "no acks."))
    address: str | None = field(default=None, metadata=_doc("HOST:PORT of the downstream."))
    shared_key: str | None = field(default=None, metadata=_doc(
        "Forward: do the handshake with this key. Never logged.", secret=True))
    self_hostname: str = field(default="probetag", metadata=_doc("Forward: our name in PING."))
    username: str | None = field(default=None, metadata=_doc("Forward: user name for user auth."))
    password: str | None = field(default=None, metadata=_doc(
        "Forward: password for user auth. Never logged.", secret=True))
    tls: TLS | None = field(default=None, metadata=_doc("Connect with TLS."))
    compress: Literal["text", "gzip"] = field(default="text", metadata=_doc(
        "Forward: 'gzip' sends CompressedPackedForward."))
    require_ack: bool = field(default=True, metadata=_doc(
        "Forward: send a chunk id and wait for the ack before acking upstream."))
    ack_timeout: float = field(default=30.0, metadata=_doc(
        "Forward: seconds to wait for an ack before retrying on a new connection.", above=0))
    connect_timeout: float = field(default=5.0, metadata=_doc("Seconds.", above=0))
    retry_initial: float = field(default=0.1, metadata=_doc("First retry delay. Seconds.", above=0))
    retry_max: float = field(default=5.0, metadata=_doc("Largest retry delay (exponential). Seconds.", above=0))
    keepalive: bool = field(default=True, metadata=_doc("Reuse the connection between chunks."))
    time_as_integer: bool = field(default=False, metadata=_doc(
        "Forward: send integer seconds instead of EventTime."))
    dead_letter: str | None = field(default=None, metadata=_doc(
        "Forward: a file (JSON lines) for records the downstream keeps refusing. A batch "
        "refused dead_letter_after times in a row is split until the refused records are "
        "found; each is appended here (base64 of its bytes, tag, time, reason, peer), "
        "fsynced, counted in records_dead_lettered and then acked upstream. Unset: a "
        "refused batch is retried forever and everything behind it waits."))
    dead_letter_after: int = field(default=5, metadata=_doc(
        "Forward, with dead_letter: refusals (no ack in ack_timeout, the connection closed "
        "or a {} reply, after the request was written) of one batch before it is split, "
        "and of one record before it is dead-lettered. Connect and handshake failures do "
        "not count. Attempts.", min=1))


@dataclass(frozen=True, slots=True)
class Flow:
    """Backpressure: what may be in flight between upstream and downstream."""

    max_inflight_records: int = field(default=200_000, metadata=_doc(
        "Records read but not yet acked downstream; above it inputs stop reading.", min=1))
    max_inflight_bytes: int = field(default=128 * 1024 * 1024, metadata=_doc(
        "Bytes read but not yet acked downstream; above it inputs stop reading.", min=1))
    batch_records: int = field(default=1000, metadata=_doc(
        "Stdout/NDJSON outputs and the HTTP input split work in batches of this size.", min=1))


@dataclass(frozen=True, slots=True)
class Signature:
    """A user-defined probe signature (same fields as a catalogue entry)."""

    id: str = field(metadata=_doc("Unique id, e.g. 'local-healthcheck'."))
    probe: str = field(metadata=_doc("Probe name put in probe.name."))
    scanner: str = field(metadata=_doc("Scanner name put in probe.scanner."))
    payload: str = field(metadata=_doc(
        "The bytes as sent, in Python-escape notation (\\r, \\n, \\xHH)."))
    transport: Literal["tcp", "udp", "any"] = field(default="any", metadata=_doc("tcp, udp or any."))
    match: Literal["prefix", "contains"] = field(default="prefix", metadata=_doc(
        "prefix: the line must start with a fragment of the payload; contains: anywhere."))
    provenance: str = field(default="user config", metadata=_doc("Where the bytes come from."))


@dataclass(frozen=True, slots=True)
class Allowlist:
    sources: tuple[str, ...] = field(default=(), metadata=_doc(
        "Addresses or CIDR networks of the organisation's own scanners."))
    scanners: tuple[str, ...] = field(default=(), metadata=_doc(
        "Scanner names whose probes are allowed (e.g. 'openvas')."))
    mode: Literal["pass", "tag"] = field(default="tag", metadata=_doc(
        "pass: allowlisted probes get no fields; tag: they get probe.allowed = true."))


@dataclass(frozen=True, slots=True)
class Detect:
    enabled: bool = field(default=True, metadata=_doc("Run detection at all."))
    catalogue: tuple[str, ...] = field(default=(), metadata=_doc(
        "Extra catalogue YAML files, loaded after the built-in one."))
    builtin_catalogue: bool = field(default=True, metadata=_doc("Load the bundled catalogue."))
    signatures: tuple[Signature, ...] = field(default=(), metadata=_doc("Inline signatures."))
    allowlist: Allowlist = field(default_factory=Allowlist, metadata=_doc("Own scanners."))
    fields: tuple[str, ...] = field(default=(), metadata=_doc(
        "Record fields that hold the payload, in order. Empty: auto-detect "
        "(rawmsg, message/msg/log, host+ident, HOSTNAME/TAG/MSG...)."))
    source_fields: tuple[str, ...] = field(default=(), metadata=_doc(
        "Record fields that hold the sender address. Empty: auto-detect "
        "(source_address, fromhost-ip, fromhost, host...)."))
    escapes: tuple[str, ...] = field(default=("rsyslog", "cstyle", "backslash-octal"), metadata=_doc(
        "Escape dialects to undo: rsyslog (#ooo), cstyle (\\r, \\xHH), backslash-octal (\\ooo)."))
    min_confidence: float = field(default=0.5, metadata=_doc(
        "Matches below this confidence are not tagged.", min=0.0, max=1.0))
    output_field: str = field(default="probe", metadata=_doc("Name of the added map."))


@dataclass(frozen=True, slots=True)
class Correlation:
    window: float = field(default=5.0, metadata=_doc(
        "Lines of one source this close in time belong to one connection/probe. Seconds.", above=0))
    scan_idle: float = field(default=60.0, metadata=_doc(
        "A source silent this long ends its scan (a summary is emitted). Seconds.", above=0))
    max_sources: int = field(default=100_000, metadata=_doc(
        "Sources tracked at once; the least recently seen is evicted (counted).", min=1))
    max_bytes: int = field(default=64 * 1024 * 1024, metadata=_doc(
        "Memory the per-source state may hold, source strings and scan summaries waiting "
        "to go out included (estimated as it grows); past it the least recently seen "
        "sources are evicted (correlation_evicted{reason=\"bytes\"}) and, in a flood of "
        "new sources, the oldest waiting summaries dropped (correlation_summaries_dropped). "
        "Bytes.", min=1024 * 1024))


@dataclass(frozen=True, slots=True)
class Rule:
    """What happens to tagged records that match (first matching rule wins)."""

    action: Literal["keep", "drop", "retag"] = field(metadata=_doc("keep, drop or retag."))
    probe: tuple[str, ...] = field(default=(), metadata=_doc("Probe names; empty = any."))
    scanner: tuple[str, ...] = field(default=(), metadata=_doc("Scanner names; empty = any."))
    min_confidence: float = field(default=0.0, metadata=_doc("Only matches at least this sure.", min=0.0, max=1.0))
    tag: str | None = field(default=None, metadata=_doc(
        "retag: template, e.g. 'security.probe.${tag}' (${tag}, ${probe}, ${scanner})."))


@dataclass(frozen=True, slots=True)
class Actions:
    rules: tuple[Rule, ...] = field(default=(), metadata=_doc(
        "Rules in order; a tagged record that matches none is kept with its tag."))
    summaries: bool = field(default=False, metadata=_doc(
        "Emit a scan summary record when a source's scan goes idle."))
    summary_tag: str = field(default="probetag.summary", metadata=_doc("Tag of summary records."))
    ecs: bool = field(default=False, metadata=_doc(
        "Also add Elastic Common Schema fields (event.*, source.ip, rule.name...)."))


@dataclass(frozen=True, slots=True)
class Metrics:
    address: str | None = field(default=None, metadata=_doc(
        "HOST:PORT for /metrics (Prometheus text) and /health; unset disables."))


@dataclass(frozen=True, slots=True)
class Config:
    listen: Listen = field(default_factory=Listen, metadata=_doc("Forward input."))
    http: HttpInput = field(default_factory=HttpInput, metadata=_doc("Vector http-sink input."))
    ndjson: NdjsonInput = field(default_factory=NdjsonInput, metadata=_doc("NDJSON TCP input."))
    output: Output = field(default_factory=Output, metadata=_doc("Downstream."))
    flow: Flow = field(default_factory=Flow, metadata=_doc("Backpressure bounds."))
    detect: Detect = field(default_factory=Detect, metadata=_doc("Decoding and matching."))
    correlation: Correlation = field(default_factory=Correlation, metadata=_doc("Per-source state."))
    actions: Actions = field(default_factory=Actions, metadata=_doc("What to do with tagged records."))
    metrics: Metrics = field(default_factory=Metrics, metadata=_doc("Prometheus and health."))
    log_level: Literal["debug", "info", "warning", "error"] = field(default="info", metadata=_doc(
        "Log level of probetag's own logs (stderr)."))
    log_format: Literal["logfmt", "json"] = field(default="logfmt", metadata=_doc(
        "Format of probetag's own log lines on stderr: logfmt (ts=... level=... event=... k=v) "
        "or json (one object per line with the same fields)."))
    shutdown_timeout: float = field(default=10.0, metadata=_doc(
        "On SIGTERM/SIGINT: stop accepting, then wait at most this long for in-flight "
        "records to be acked downstream (and upstream) before exiting. Seconds."))
    workers: int = field(default=1, metadata=_doc(
        "`probetag serve` processes sharing the listen port (SO_REUSEPORT), each with its own "
        "pipeline and downstream connection; correlation state is per worker.", min=1, max=64))

    def validate(self) -> None:
        """Cross-field checks. Raises the first ConfigError (naming the key),
        carrying every one in ``errors``."""
        problems = self.problems()
        if problems:
            raise ConfigError.of(problems)

    def problems(self) -> list[ConfigError]:
        """Every cross-field problem (value ranges are checked at load)."""
        out: list[ConfigError] = []
        addr_fields = [("listen.address", self.listen.address), ("http.address", self.http.address),
                       ("ndjson.address", self.ndjson.address), ("output.address", self.output.address),
                       ("metrics.address", self.metrics.address)]
        for key, value in addr_fields:
            if value is not None:
                try:
                    parse_hostport(value)
                except ValueError as exc:
                    out.append(ConfigError(str(exc), key=key))
        if not 1 <= self.workers <= 64:
            out.append(ConfigError("workers must be between 1 and 64", key="workers"))
        if self.workers > 1 and self.output.type == "stdout":
            out.append(ConfigError("workers > 1 needs a network output (several processes' lines "
                                   "would interleave on one stdout)", key="workers"))
        if self.output.type in ("forward", "ndjson") and not self.output.address:
            out.append(ConfigError(f"output.type {self.output.type!r} needs an address",
                                   key="output.address"))
        if self.output.username and not self.output.shared_key:
            out.append(ConfigError("user auth needs a shared_key (the handshake carries it)",
                                   key="output.username"))
        if self.listen.users and not self.listen.shared_key:
            out.append(ConfigError("users need a shared_key (the handshake carries them)",
                                   key="listen.users"))
        for i, rule in enumerate(self.actions.rules):
            if rule.action == "retag" and not rule.tag:
                out.append(ConfigError("retag needs a tag template", key=f"actions.rules[{i}].tag"))
        for i, src in enumerate(self.detect.allowlist.sources):
            try:
                ipaddress.ip_network(src, strict=False)
            except ValueError:
                out.append(ConfigError(f"not an address or CIDR network: {src!r}",
                                       key=f"detect.allowlist.sources[{i}]"))
        for name in ("max_frame_bytes", "max_decompressed_bytes", "max_connections", "frame_timeout",
                     "max_chunk_entries", "first_frame_timeout", "idle_soft_limit",
                     "auth_failures_per_minute"):
            if getattr(self.listen, name) <= 0:
                out.append(ConfigError("must be > 0", key=f"listen.{name}"))
        if self.listen.max_partial_bytes < self.listen.max_frame_bytes:
            out.append(ConfigError(f"must be at least listen.max_frame_bytes ({self.listen.max_frame_bytes})",
                                   key="listen.max_partial_bytes"))
        for name in ("header_timeout", "body_timeout", "min_body_rate"):
            if getattr(self.http, name) <= 0:
                out.append(ConfigError("must be > 0", key=f"http.{name}"))
        if self.http.max_partial_bytes < self.http.max_body_bytes:
            out.append(ConfigError(f"must be at least http.max_body_bytes ({self.http.max_body_bytes})",
                                   key="http.max_partial_bytes"))
        if self.flow.max_inflight_records <= 0 or self.flow.max_inflight_bytes <= 0:
            out.append(ConfigError("must be > 0", key="flow"))
        if self.output.dead_letter is not None and self.output.type != "forward":
            out.append(ConfigError("only the forward output has refusals to dead-letter "
                                   "(stdout and ndjson have no acks)", key="output.dead_letter"))
        elif self.output.dead_letter is not None and not self.output.require_ack:
            out.append(ConfigError("needs output.require_ack: without acks no request is ever "
                                   "refused", key="output.dead_letter"))
        if self.output.dead_letter == "":
            out.append(ConfigError("must be a file path", key="output.dead_letter"))
        if self.output.retry_max < self.output.retry_initial:
            out.append(ConfigError(f"must be at least retry_initial ({self.output.retry_initial:g})",
                                   key="output.retry_max"))
        for section in ("listen", "http"):
            tls = getattr(self, section).tls
            if tls is not None and not tls.cert_file:
                out.append(ConfigError("a TLS listener needs cert_file (and key_file)",
                                       key=f"{section}.tls.cert_file"))
        tls = self.output.tls
        if tls is not None and tls.key_file and not tls.cert_file:
            out.append(ConfigError("key_file without cert_file", key="output.tls.cert_file"))
        from .decode import DIALECTS  # the decoder owns the dialect names

        for i, dialect in enumerate(self.detect.escapes):
            if dialect not in DIALECTS:
                out.append(ConfigError(f"unknown escape dialect {dialect!r}{did_you_mean(dialect, DIALECTS)}; "
                                       f"known: {', '.join(DIALECTS)}", key=f"detect.escapes[{i}]"))
        return out


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


class _Ctx:
    """Where errors go: raised at once (``collect=False``, the first error
    wins), or appended to ``errors`` and the value's default used."""

    __slots__ = ("file", "errors")

    def __init__(self, file: str | None, collect: bool = False) -> None:
        self.file = file
        self.errors: list[ConfigError] | None = [] if collect else None

    def report(self, exc: ConfigError) -> None:
        if self.errors is None:
            raise exc
        self.errors.append(exc)


class _Reported(Exception):
    """A value whose errors are already in ``_Ctx.errors``: use the default."""


def _err(ctx: _Ctx, node: yaml.Node | None, key: str, msg: str) -> ConfigError:
    mark = node.start_mark if node is not None else None
    line = mark.line + 1 if mark is not None else None
    return ConfigError(msg, file=ctx.file, line=line, key=key or None)


_LOADER = yaml.SafeLoader("")


def _construct(node: yaml.Node) -> Any:
    try:
        return _LOADER.construct_object(node, deep=True)
    except yaml.YAMLError:
        # A failed construction leaves the shared loader's state behind.
        _LOADER.constructed_objects.clear()
        _LOADER.recursive_objects.clear()
        raise


def _convert(ctx: _Ctx, node: yaml.Node, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            if type(None) in args:
                return None
            raise _err(ctx, node, key, "must not be empty")
        if len(non_none) == 1:
            return _convert(ctx, node, non_none[0], key)
        raise TypeError(f"unsupported union {tp}")
    if dataclasses.is_dataclass(tp):
        return _build(ctx, node, tp, key)
    if origin is tuple:
        item_tp = args[0]
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return ()
        if isinstance(node, yaml.ScalarNode) and item_tp is str:
            # A lone string where a list is expected is a one-item list.
            return (_convert(ctx, node, str, key),)
        if not isinstance(node, yaml.SequenceNode):
            raise _err(ctx, node, key, "expected a list")
        items = []
        failed = False
        for i, item in enumerate(node.value):
            try:
                items.append(_convert(ctx, item, item_tp, f"{key}[{i}]"))
            except ConfigError as exc:
                ctx.report(exc)
                failed = True
            except _Reported:
                failed = True
        if failed:
            raise _Reported
        return tuple(items)
    if origin is Literal:
        value = _convert(ctx, node, type(args[0]), key)
        if value not in args:
            raise _err(ctx, node, key, f"must be one of {', '.join(map(str, args))}; got {value!r}"
                                       f"{did_you_mean(value, args)}")
        return value
    if tp is bool:
        value = _construct(node) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(value, bool):
            raise _err(ctx, node, key, f"expected true or false, got {_text(node)}")
        return value
    if tp is int:
        value = _construct(node) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(value, bool) or not isinstance(value, int):
            raise _err(ctx, node, key, f"expected an integer, got {_text(node)}")
        return value
    if tp is float:
        value = _construct(node) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _err(ctx, node, key, f"expected a number, got {_text(node)}")
        if value < 0:
            raise _err(ctx, node, key, f"must not be negative, got {value}")
        return float(value)
    if tp is str:
        if not isinstance(node, yaml.ScalarNode):
            raise _err(ctx, node, key, "expected a string")
        value = _construct(node)
        if isinstance(value, (dict, list)) or value is None:
            raise _err(ctx, node, key, f"expected a string, got {_text(node)}")
        if isinstance(value, bool):
            raise _err(ctx, node, key, f"expected a string, got {_text(node)} (quote it)")
        return str(value) if not isinstance(value, str) else value
    raise TypeError(f"unsupported config type {tp!r} at {key}")


def _text(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return repr(node.value)
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    return "a list"


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    h = _HINTS.get(cls)
    if h is None:
        h = _HINTS[cls] = get_type_hints(cls)
    return h


def _build(ctx: _Ctx, node: yaml.Node | None, cls: type, key: str) -> Any:
    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"):
        # (an empty mapping where the null stood, at its place: an error
        # about a key it lacks names that line)
        node = yaml.MappingNode("tag:yaml.org,2002:map", [], start_mark=getattr(node, "start_mark", None),
                                end_mark=getattr(node, "end_mark", None))
    if not isinstance(node, yaml.MappingNode):
        raise _err(ctx, node, key, f"expected a mapping of settings, got {_text(node)}")
    hints = _hints(cls)
    fields_by_name = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    seen: set[str] = set()
    missing = False
    for knode, vnode in node.value:
        name = knode.value if isinstance(knode, yaml.ScalarNode) else None
        full = f"{key}.{name}" if key else str(name)
        if name not in fields_by_name:
            known = ", ".join(sorted(fields_by_name))
            ctx.report(_err(ctx, knode, full,
                            f"unknown key{did_you_mean(name, fields_by_name)} (known here: {known})"))
            continue
        if name in seen:
            ctx.report(_err(ctx, knode, full, "given twice"))
            continue
        seen.add(name)
        try:
            value = _convert(ctx, vnode, hints[name], full)
            _check_range(ctx, vnode, fields_by_name[name], value, full)
        except ConfigError as exc:
            ctx.report(exc)
        except _Reported:
            pass
        else:
            kwargs[name] = value
    for name, f in fields_by_name.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            if name not in seen:
                ctx.report(_err(ctx, node, f"{key}.{name}" if key else name, "required key missing"))
            missing = True
    if missing:
        raise _Reported
    return cls(**kwargs)


def _check_range(ctx: _Ctx, node: yaml.Node, f: dataclasses.Field, value: Any, key: str) -> None:  # type: ignore[type-arg]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    lo, above, hi = f.metadata.get("min"), f.metadata.get("above"), f.metadata.get("max")
    if lo is not None and hi is not None and not lo <= value <= hi:
        raise _err(ctx, node, key, f"must be between {_num(lo)} and {_num(hi)}, got {_num(value)}")
    if lo is not None and value < lo:
        raise _err(ctx, node, key, f"must be at least {_num(lo)}, got {_num(value)}")
    if above is not None and value <= above:
        raise _err(ctx, node, key, f"must be greater than {_num(above)}, got {_num(value)}")
    if hi is not None and value > hi:
        raise _err(ctx, node, key, f"must be at most {_num(hi)}, got {_num(value)}")


def load_config(path: str | Path | None = None, *, text: str | None = None,
                resources: bool = False) -> Config:
    """Load and validate a YAML config file (or ``text``); no path and no
    text = defaults. Raises the first ConfigError, carrying every error of
    the file in ``errors``. ``resources``: also check templates, catalogue
    files and TLS files (``check_resources``), as ``serve`` needs them."""
    cfg, errors = check_config(path, text=text, resources=resources)
    if errors:
        raise ConfigError.of(errors)
    assert cfg is not None
    return cfg


def check_config(path: str | Path | None = None, *, text: str | None = None,
                 resources: bool = True) -> tuple[Config | None, list[ConfigError]]:
    """(the config or None, every error found, in file order)."""
    file = str(path) if path is not None else ("<config>" if text is not None else None)
    if text is None and path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            return None, [ConfigError(f"cannot read: {exc.strerror}", file=file)]
        except UnicodeDecodeError:
            return None, [ConfigError("not UTF-8 text", file=file)]
    ctx = _Ctx(file, collect=True)
    node = None
    if text is not None:
        deep = _flow_too_deep(text, MAX_FLOW_DEPTH)
        if deep is not None:
            return None, [ConfigError(f"YAML nested too deep (more than {MAX_FLOW_DEPTH} levels of "
                                      f"[ ] or {{ }})", file=file, line=deep)]
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            return None, [ConfigError(f"YAML syntax: {exc.problem}", file=file,
                                      line=mark.line + 1 if mark else None)]
        except yaml.YAMLError as exc:
            return None, [ConfigError(f"YAML: {exc}", file=file)]
        except RecursionError:
            return None, [ConfigError("YAML nested too deep", file=file)]
    assert ctx.errors is not None
    try:
        cfg: Config | None = _build(ctx, node, Config, "")
    except ConfigError as exc:  # the top level itself is not a mapping
        ctx.errors.append(exc)
        cfg = None
    except _Reported:
        cfg = None
    except yaml.MarkedYAMLError as exc:
        # A value that cannot be constructed: an unknown tag (``!foo``), a
        # bad ``!!binary``... Named with its file and line like any error.
        mark = exc.problem_mark or exc.context_mark
        ctx.errors.append(ConfigError(f"YAML: {exc.problem or exc.context}", file=file,
                                      line=mark.line + 1 if mark else None))
        cfg = None
    except yaml.YAMLError as exc:
        ctx.errors.append(ConfigError(f"YAML: {exc}", file=file))
        cfg = None
    except RecursionError:
        ctx.errors.append(ConfigError("YAML nested too deep", file=file))
        cfg = None
    errors = ctx.errors
    if cfg is not None:
        reported = {e.key for e in errors if e.key}
        later = cfg.problems()
        if resources:
            later += check_resources(cfg)
        for exc in later:
            if exc.key and any(exc.key == k or exc.key.startswith(k + ".") or exc.key.startswith(k + "[")
                               for k in reported):
                continue  # a consequence of a value already reported (its default was used)
            if exc.file is None:
                exc = ConfigError(exc.reason, file=file, line=_line_of(node, exc.key) if exc.key else None,
                                  key=exc.key)
            errors.append(exc)
    errors.sort(key=lambda e: (e.file != file, e.line or 0))
    return (cfg if not errors else None), errors


#: Flow collections (``[ ]``, ``{ }``) nested deeper are refused before
#: PyYAML reads them: its scanner re-checks every open level for each token,
#: so its time grows with the square of the depth (5,000 levels: 1.6 s,
#: 50,000: minutes). No config nests more than a few.
MAX_FLOW_DEPTH = 200
_FLOW_TOKENS = re.compile(r"""[\[\]{}"'#\n]""")


def _flow_too_deep(text: str, limit: int) -> int | None:
    """The line where ``[``/``{`` nesting passes ``limit``, or None. One
    linear pass; quoted scalars and comments are skipped, roughly (a quote
    counts only where a scalar can start), which is enough for a bound."""
    depth = 0
    line = 1
    pos = 0
    while True:
        m = _FLOW_TOKENS.search(text, pos)
        if m is None:
            return None
        c, p = m.group(), m.start()
        pos = p + 1
        if c == "\n":
            line += 1
        elif c == "#":
            if p == 0 or text[p - 1] in " \t\n":
                end = text.find("\n", p)
                if end < 0:
                    return None
                pos = end  # the newline itself is counted next
        elif c in "'\"":
            q = p - 1
            while q >= 0 and text[q] in " \t":
                q -= 1
            if q >= 0 and text[q] not in "\n:[{,-?":
                continue  # an apostrophe inside a plain scalar
            end = p
            while True:
                end = text.find(c, end + 1)
                if end < 0:
                    return None  # unterminated: the YAML parser reports it
                if c == "'" or _escaped_backslashes(text, end) % 2 == 0:
                    break
            line += text.count("\n", p, end)
            pos = end + 1
        elif c in "[{":
            depth += 1
            if depth > limit:
                return line
        elif depth:
            depth -= 1


def _escaped_backslashes(text: str, end: int) -> int:
    n = 0
    while end - n - 1 >= 0 and text[end - n - 1] == "\\":
        n += 1
    return n


def check_resources(cfg: Config) -> list[ConfigError]:
    """What ``serve`` reads or compiles beyond the YAML: rule tag templates,
    catalogue files and inline signatures, TLS certificate/key/CA files.
    Errors name the config key (a catalogue file's own errors name that file
    and line)."""
    import ssl

    out: list[ConfigError] = []
    from .act._actions import _compile_template

    for i, rule in enumerate(cfg.actions.rules):
        if rule.tag:
            try:
                _compile_template(rule.tag, f"actions.rules[{i}].tag")
            except ConfigError as exc:
                out.append(exc)
    if cfg.detect.enabled:
        from .detect._catalogue import CatalogueError, load_catalogue

        files_ok = True
        for i, cat in enumerate(cfg.detect.catalogue):
            try:
                load_catalogue([cat], builtin=False)
            except CatalogueError as exc:
                files_ok = False
                if exc.line is None and exc.file == str(Path(cat)):
                    out.append(ConfigError(f"{cat}: {exc.reason}", key=f"detect.catalogue[{i}]"))
                else:
                    out.append(ConfigError(exc.reason, file=exc.file, line=exc.line,
                                           key=".".join(n for n in (exc.entry, exc.key) if n) or None))
        try:
            load_catalogue([], builtin=False, extra=cfg.detect.signatures)
        except CatalogueError as exc:
            files_ok = False
            out.append(ConfigError(exc.reason, key="detect.signatures"))
        if files_ok:
            try:  # ids unique across the built-in catalogue, the files and the signatures
                load_catalogue(cfg.detect.catalogue, builtin=cfg.detect.builtin_catalogue,
                               extra=cfg.detect.signatures)
            except CatalogueError as exc:
                out.append(ConfigError(str(exc), key="detect.catalogue"))
    if cfg.output.dead_letter:
        import os

        parent = Path(cfg.output.dead_letter).parent
        if not parent.is_dir():
            out.append(ConfigError(f"no such directory: {parent}", key="output.dead_letter"))
        elif not os.access(parent, os.W_OK | os.X_OK):
            out.append(ConfigError(f"directory not writable: {parent}", key="output.dead_letter"))
    for section, server in (("listen", True), ("http", True), ("output", False)):
        tls = getattr(cfg, section).tls
        if tls is None:
            continue
        unreadable = False
        for name in ("cert_file", "key_file", "ca_file"):
            value = getattr(tls, name)
            if value is None:
                continue
            try:
                with open(value, "rb"):
                    pass
            except OSError as exc:
                unreadable = True
                out.append(ConfigError(f"cannot read {value}: {exc.strerror}", key=f"{section}.tls.{name}"))
        if unreadable or (server and not tls.cert_file):
            continue
        try:
            if server:
                from .inputs.forward_server import server_ssl_context

                server_ssl_context(tls)
            else:
                from .outputs._common import client_ssl_context

                client_ssl_context(tls)
        except (ssl.SSLError, OSError, ValueError) as exc:
            out.append(ConfigError(f"TLS files do not load: {exc}", key=f"{section}.tls"))
    return out


def config_from_mapping(data: dict[str, Any]) -> Config:
    """Build a Config from a plain mapping (tests, programmatic use)."""
    return load_config(text=yaml.safe_dump(data))


def _line_of(node: yaml.Node | None, dotted: str) -> int | None:
    """Best-effort line of a dotted key (for cross-field errors)."""
    if node is None:
        return None
    cur: yaml.Node = node
    line = node.start_mark.line + 1
    for part in dotted.replace("[", ".[").split("."):
        if not part:
            continue
        if part.startswith("[") and isinstance(cur, yaml.SequenceNode):
            idx = int(part[1:-1])
            if idx >= len(cur.value):
                break
            cur = cur.value[idx]
            line = cur.start_mark.line + 1
            continue
        if not isinstance(cur, yaml.MappingNode):
            break
        for k, v in cur.value:
            if isinstance(k, yaml.ScalarNode) and k.value == part:
                cur = v
                line = k.start_mark.line + 1  # the key's line, also for a mapping value
                break
        else:
            break
    return line


def reference(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every setting, for docs and --help."""
    rows: list[tuple[str, str, str]] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        sub = _dataclass_in(tp)
        if sub is not None and get_origin(tp) is not tuple:
            rows.append((key, "", f.metadata.get("doc", "")))
            rows.extend(reference(sub, key + "."))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = "(required)"
        rows.append((key, "" if default is None else repr(default), f.metadata.get("doc", "") + _bounds(f)))
    return rows


def _bounds(f: dataclasses.Field) -> str:  # type: ignore[type-arg]
    lo, above, hi = f.metadata.get("min"), f.metadata.get("above"), f.metadata.get("max")
    if lo is not None and hi is not None:
        return f" Range: {_num(lo)} to {_num(hi)}."
    if lo is not None:
        return f" At least {_num(lo)}."
    if above is not None:
        return f" Greater than {_num(above)}."
    return ""


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _dataclass_in(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp  # type: ignore[return-value]
    for a in get_args(tp):
        if dataclasses.is_dataclass(a):
            return a  # type: ignore[return-value]
    return None


def replace(cfg: Config, **sections: Any) -> Config:
    """``replace(cfg, listen={'address': ...})``: override fields of sections (CLI flags)."""
    changes = {}
    for name, values in sections.items():
        changes[name] = dataclasses.replace(getattr(cfg, name), **values)
    out = dataclasses.replace(cfg, **changes)
    out.validate()
    return out


_ = typing  # keep import for forward refs in get_type_hints
