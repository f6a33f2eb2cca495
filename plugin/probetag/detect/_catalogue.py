"""The probe catalogue: signature records loaded from YAML data files.

Theory of operation
-------------------
* The catalogue is data, not code. Each entry in ``detect/catalogue/*.yaml`` is
  one signature: a stable id, the probe's name, the scanner that sends it, the
  transport, the exact bytes it puts on the wire, how those bytes are matched,
  and where the bytes come from (provenance). The matching engine compiles
  the loaded tuple once; this module does no matching.
* Payloads are written as YAML double-quoted strings. YAML already defines
  ``\\xHH``, ``\\r``, ``\\n``, ``\\0``, ``\\t``; every character of the resulting
  string must be U+0000..U+00FF and is taken as one byte (latin-1). A plain
  or single-quoted scalar containing a backslash is rejected: YAML would keep
  ``\\r`` as two characters there, silently giving the wrong bytes.
* The YAML is composed into nodes rather than loaded into dicts, so every
  error names the file, the line, the entry id and the key
  (``nmap-tcp.yaml:41: nmap-tcp-GetRequest: transport: must be one of ...``).
* Unknown keys are errors (a typo such as ``provenence`` must not load as an
  entry without provenance). Ids are unique across all files, and a
  duplicate names both places.
* Naming policy. ``scanner`` is the tool that sends the bytes (``nmap`` for
  its -sV service probes, its NSE scripts and its -sU port-scan payloads
  alike); ``family`` says which part of the tool (for nmap:
  ``service-probe``, ``nse``, ``udp-payload``); ``probe`` is the name the
  tool itself prints: nmap's probe name from ``--version-trace``
  (``GetRequest``), the NSE script's name (``snmp-info``), or
  ``udp-scan-payload/PORT`` for a -sU payload nmap does not name.
* Several entries can hold the same bytes (nmap's snmp-info script sends
  exactly the SNMPv3GetRequest probe's bytes). The engine then prefers, the
  same way every time, the entry whose ``family`` ranks first in
  ``FAMILY_RANK``: a service probe, then an NSE script, then a -sU payload,
  then entries without a family (other tools), and the id last. A line
  identified by such bytes names the service probe, which is what nmap's
  trace calls it.
* Inline signatures from the user's config (``probetag._config.Signature``,
  payload in Python escape notation, ``match: prefix|contains``) are converted
  into the same ``Signature`` so the engine sees one kind of record.
"""

from __future__ import annotations

import codecs
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import yaml

from .._config import located

if TYPE_CHECKING:  # pragma: no cover - import only for type checkers
    from .._config import Signature as ConfigSignature

__all__ = [
    "Signature",
    "CatalogueError",
    "TRANSPORTS",
    "MATCH_MODES",
    "FAMILY_RANK",
    "builtin_catalogue_paths",
    "load_catalogue",
    "parse_catalogue",
    "format_payload",
]

#: ``any`` is for bytes a scanner sends the same way over TCP and UDP.
TRANSPORTS = ("tcp", "udp", "any")
#: ``payload``: log lines are LF-split fragments of these bytes (rsyslog cuts a
#: TCP stream at every LF, see FIELD_GUIDE 1). ``marker``: a distinctive
#: substring that may appear anywhere in a line (a User-Agent, a cookie).
MATCH_MODES = ("payload", "marker")

_REQUIRED = ("id", "probe", "scanner", "transport", "payload", "provenance")
_OPTIONAL = ("family", "match", "confidence", "ports", "notes")
#: ``family`` values, in the order the engine prefers them when entries share
#: bytes (see the naming policy above); entries without one rank after these.
FAMILY_RANK = {"service-probe": 0, "nse": 1, "udp-payload": 2}
_KEYS = _REQUIRED + _OPTIONAL

_CATALOGUE_DIR = Path(__file__).resolve().parent / "catalogue"
# libyaml's parser when present: same nodes, styles and marks, about 15x faster
# on the bundled files (the pure-Python one takes over a second).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class Signature:
    """One catalogue entry, with its payload as bytes."""

    id: str
    probe: str
    scanner: str
    transport: str
    payload: bytes
    match: str
    confidence: float | None
    ports: tuple[int, ...]
    provenance: str
    notes: str = ""
    source: str = ""  # "file:line" of the entry, or "config:detect.signatures[i]"
    family: str = ""  # see FAMILY_RANK; "" for tools with one kind of probe
    #: Other scanners whose entries hold exactly these bytes (zmap sends
    #: some of nmap's UDP payloads byte for byte): the bytes name the probe,
    #: not the scanner (``with_shared``).
    shared_with: tuple[str, ...] = ()

    @property
    def rank(self) -> tuple[int, str]:
        """Sort key among entries with the same bytes: lower is preferred."""
        return FAMILY_RANK.get(self.family, len(FAMILY_RANK)), self.id


class CatalogueError(ValueError):
    """A catalogue problem, naming the file, line, entry id and key."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 entry: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.line = line
        self.entry = entry
        self.key = key
        self.reason = message
        super().__init__(located(message, file=file, line=line, names=(entry, key)))


def builtin_catalogue_paths() -> tuple[Path, ...]:
    """Every ``*.yaml`` file of the bundled catalogue, sorted by name."""
    return tuple(sorted(_CATALOGUE_DIR.glob("*.yaml")))


def load_catalogue(paths: Iterable[Path | str] | None = None, *, builtin: bool = True,
                   extra: Iterable[ConfigSignature] = ()) -> tuple[Signature, ...]:
    """Load the built-in catalogue (unless ``builtin=False``), then ``paths``,
    then the config's inline signatures ``extra``. Raises CatalogueError."""
    files: list[Path] = list(builtin_catalogue_paths()) if builtin else []
    files.extend(Path(p) for p in (paths or ()))
    out: list[Signature] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CatalogueError(f"cannot read: {exc.strerror}", file=str(path)) from None
        except UnicodeDecodeError:
            raise CatalogueError("not UTF-8 text", file=str(path)) from None
        out.extend(parse_catalogue(text, file=str(path)))
    for i, sig in enumerate(extra):
        out.append(_from_config(sig, i))
    _check_unique(out)
    return with_shared(out)


def with_shared(sigs: Iterable[Signature]) -> tuple[Signature, ...]:
    """``sigs`` with ``shared_with`` filled in: for a ``payload`` entry, the
    other scanners with a ``payload`` entry of exactly the same bytes."""
    sigs = tuple(sigs)
    senders: dict[bytes, set[str]] = {}
    for s in sigs:
        if s.match == "payload":
            senders.setdefault(s.payload, set()).add(s.scanner)
    out = []
    for s in sigs:
        others = senders.get(s.payload, set()) - {s.scanner} if s.match == "payload" else set()
        out.append(replace(s, shared_with=tuple(sorted(others))) if others else s)
    return tuple(out)


def parse_catalogue(text: str, *, file: str = "<catalogue>") -> tuple[Signature, ...]:
    """Parse one catalogue file's text (ids checked unique within it)."""
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise CatalogueError(f"YAML syntax: {exc.problem}", file=file,
                             line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise CatalogueError(f"YAML: {exc}", file=file) from None
    if root is None:
        return ()  # an empty file (or only comments) is an empty catalogue
    if not isinstance(root, yaml.SequenceNode):
        raise CatalogueError("expected a list of entries", file=file, line=_line(root))
    sigs = tuple(_entry(node, file) for node in root.value)
    _check_unique(sigs)
    return sigs


def format_payload(data: bytes) -> str:
    """``data`` as a YAML double-quoted scalar that ``parse_catalogue`` reads back
    byte for byte (printable ASCII kept, ``\\r \\n \\t`` named, rest ``\\xHH``).
    NUL is ``\\x00``, not YAML's ``\\0``, so that a following digit cannot be misread."""
    named = {0x0D: "\\r", 0x0A: "\\n", 0x09: "\\t", 0x22: '\\"', 0x5C: "\\\\"}
    parts = []
    for b in data:
        if b in named:
            parts.append(named[b])
        elif 0x20 <= b < 0x7F:
            parts.append(chr(b))
        else:
            parts.append(f"\\x{b:02x}")
    return '"' + "".join(parts) + '"'


# --------------------------------------------------------------------------
# Entries
# --------------------------------------------------------------------------


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _entry(node: yaml.Node, file: str) -> Signature:
    if not isinstance(node, yaml.MappingNode):
        raise CatalogueError("each entry must be a mapping of keys", file=file, line=_line(node))
    values: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for knode, vnode in node.value:
        name = knode.value if isinstance(knode, yaml.ScalarNode) else None
        if not isinstance(name, str) or name not in _KEYS:
            raise CatalogueError(f"unknown key (known: {', '.join(_KEYS)})", file=file,
                                 line=_line(knode), entry=_id_of(node), key=str(name))
        if name in values:
            raise CatalogueError("given twice", file=file, line=_line(knode),
                                 entry=_id_of(node), key=name)
        values[name] = (knode, vnode)
    entry_id = _id_of(node)
    for name in _REQUIRED:
        if name not in values:
            raise CatalogueError("required key missing", file=file, line=_line(node),
                                 entry=entry_id, key=name)

    def err(name: str, msg: str) -> CatalogueError:
        return CatalogueError(msg, file=file, line=_line(values[name][1]), entry=entry_id, key=name)

    def text(name: str, *, required: bool = True) -> str:
        if name not in values:
            return ""
        vnode = values[name][1]
        if not isinstance(vnode, yaml.ScalarNode) or vnode.tag != "tag:yaml.org,2002:str":
            raise err(name, "expected a string (quote it)")
        if required and not vnode.value.strip():
            raise err(name, "must not be empty")
        return vnode.value

    sid = text("id")
    probe = text("probe")
    scanner = text("scanner")
    family = text("family", required=False)
    if family and family not in FAMILY_RANK:
        raise err("family", f"must be one of {', '.join(FAMILY_RANK)}; got {family!r}")
    transport = text("transport")
    if transport not in TRANSPORTS:
        raise err("transport", f"must be one of {', '.join(TRANSPORTS)}; got {transport!r}")
    match = text("match") if "match" in values else "payload"
    if match not in MATCH_MODES:
        raise err("match", f"must be one of {', '.join(MATCH_MODES)}; got {match!r}")
    provenance = text("provenance")
    notes = text("notes", required=False)
    payload = _payload(values["payload"][1], err)
    confidence = _confidence(values, err)
    ports = _ports(values, err)
    return Signature(id=sid, probe=probe, scanner=scanner, transport=transport, payload=payload,
                     match=match, confidence=confidence, ports=ports, provenance=provenance,
                     notes=notes, source=f"{file}:{_line(node)}", family=family)


def _id_of(node: yaml.MappingNode) -> str | None:
    for knode, vnode in node.value:
        if isinstance(knode, yaml.ScalarNode) and knode.value == "id" and isinstance(vnode, yaml.ScalarNode):
            return vnode.value or None
    return None


def _payload(vnode: yaml.Node, err: Any) -> bytes:
    if not isinstance(vnode, yaml.ScalarNode) or vnode.tag != "tag:yaml.org,2002:str":
        raise err("payload", "expected a double-quoted string")
    if vnode.style != '"' and "\\" in vnode.value:
        # In plain and single-quoted scalars YAML keeps backslashes literally.
        raise err("payload", "contains a backslash but is not double-quoted; "
                             "escapes like \\r or \\xHH only work in \"...\"")
    value: str = vnode.value
    if not value:
        raise err("payload", "must not be empty")
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError as exc:
        bad = value[exc.start]
        raise err("payload", f"character {bad!r} (U+{ord(bad):04X}) is not a byte; "
                             "write bytes as \\xHH") from None


def _confidence(values: dict[str, tuple[yaml.Node, yaml.Node]], err: Any) -> float | None:
    if "confidence" not in values:
        return None
    vnode = values["confidence"][1]
    value = _scalar(vnode)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise err("confidence", f"expected a number between 0 and 1, got {vnode.value!r}")
    if not 0.0 <= value <= 1.0:
        raise err("confidence", f"must be between 0 and 1, got {value}")
    return float(value)


def _ports(values: dict[str, tuple[yaml.Node, yaml.Node]], err: Any) -> tuple[int, ...]:
    if "ports" not in values:
        return ()
    vnode = values["ports"][1]
    if not isinstance(vnode, yaml.SequenceNode):
        raise err("ports", "expected a list of port numbers")
    ports = []
    for item in vnode.value:
        value = _scalar(item)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
            raise err("ports", f"expected port numbers 0..65535, got {getattr(item, 'value', item)!r}")
        ports.append(value)
    return tuple(ports)


_CONSTRUCTOR = yaml.SafeLoader("")


def _scalar(node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        return None
    return _CONSTRUCTOR.construct_object(node, deep=True)


def _check_unique(sigs: Iterable[Signature]) -> None:
    seen: dict[str, Signature] = {}
    for sig in sigs:
        first = seen.get(sig.id)
        if first is not None:
            file, _, line = sig.source.rpartition(":")
            raise CatalogueError(f"duplicate id (first defined at {first.source})",
                                 file=file or sig.source,
                                 line=int(line) if line.isdigit() else None, entry=sig.id, key="id")
        seen[sig.id] = sig


# --------------------------------------------------------------------------
# Inline signatures from the user's config
# --------------------------------------------------------------------------

# The config speaks of where a fragment may sit in a line; the catalogue of
# what the bytes are. "prefix" lines start with a fragment of the payload.
_CONFIG_MATCH = {"prefix": "payload", "contains": "marker"}


def _from_config(sig: ConfigSignature, index: int) -> Signature:
    source = f"config:detect.signatures[{index}]"
    try:
        # Python escape notation (\r, \n, \xHH, \\, octal); other text as UTF-8.
        payload = codecs.escape_decode(sig.payload.encode("utf-8"))[0]
    except ValueError as exc:
        raise CatalogueError(f"bad escape in payload: {exc}", file=source, entry=sig.id,
                             key="payload") from None
    if not payload:
        raise CatalogueError("must not be empty", file=source, entry=sig.id, key="payload")
    if sig.transport not in TRANSPORTS:
        raise CatalogueError(f"must be one of {', '.join(TRANSPORTS)}", file=source,
                             entry=sig.id, key="transport")
    match = _CONFIG_MATCH.get(sig.match)
    if match is None:
        raise CatalogueError(f"must be one of {', '.join(_CONFIG_MATCH)}", file=source,
                             entry=sig.id, key="match")
    return Signature(id=sig.id, probe=sig.probe, scanner=sig.scanner, transport=sig.transport,
                     payload=payload, match=match, confidence=None, ports=(),
                     provenance=sig.provenance, notes="", source=source)
