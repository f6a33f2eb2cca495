"""Undo (and redo) the escaping rsyslog applies to control bytes.

Theory of operation
-------------------
* rsyslog sanitises every received message before parsing it (FIELD_GUIDE
  section 2). Four dialects are known:

  ``rsyslog``          0x00-0x1F -> ``#ooo`` (the default); ``#`` itself, DEL
                       and 0x80-0xFF are left raw.
  ``rsyslog-8bit``     as ``rsyslog``, and 0x80-0xFF -> ``#200``-``#377``
                       (``parser.escape8BitCharactersOnReceive``).
  ``cstyle``           ``\\0 \\a \\b \\e \\f \\n \\r \\t \\v``, other control bytes
                       ``\\xHH`` with upper-case hex
                       (``parser.escapeControlCharactersCStyle``).
  ``backslash-octal``  0x00-0x1F -> ``\\ooo`` (``controlCharacterEscapePrefix``
                       set to a backslash).

  ``escape()`` is that forward transform, byte for byte.
* The escape character itself is never escaped, so the transform is not
  injective: ``#015`` typed in application prose reads exactly like an
  escaped CR. ``unescape()`` therefore scores how likely the escapes in a line
  are real (``evidence``) and, below ``DECODE_MIN``, keeps the line literally
  (``dialect=None``). The score is built from what rsyslog can and cannot
  produce: runs of escapes, NUL and other control bytes, a CR/LF at the end of
  the line score high; TAB scores low (tabs in key=value logs are real but
  carry no probe signal); an escape standing alone as a word inside prose
  (``issue #015 fixed``) scores near zero, and such prose-like escapes do not
  add up. Octal escapes of printable ASCII (``#123``, ``#1234``) are never
  decoded at all: rsyslog does not write them (FIELD_GUIDE 2.1 gives the
  outer bound ``#[0-3][0-7][0-7]``; 0x20-0x7F is cut out of it).
* One line is decoded with one dialect: the one with the highest evidence
  (ties go to the earlier one in ``dialects``).
* Decoding uses one compiled ``split`` per dialect and a lookup table; a line
  without ``#`` and ``\\`` returns at once. Decoding never raises: any bytes or
  str (including lone surrogates) are accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DIALECTS", "DECODE_MIN", "Unescaped", "escape", "unescape", "unescape_as", "to_bytes"]

DIALECTS = ("rsyslog", "cstyle", "backslash-octal", "rsyslog-8bit")
DEFAULT_DIALECTS = ("rsyslog", "cstyle", "backslash-octal")

#: Below this evidence a line is kept literally.
DECODE_MIN = 0.1

_REPLACEMENT = "\ufffd".encode()


@dataclass(frozen=True, slots=True)
class Unescaped:
    """data: the bytes with one dialect's escapes undone (the input itself
    when ``dialect`` is None); escapes: how many were undone; replaced: U+FFFD
    sequences seen (bytes a lossy UTF-8 hop destroyed); evidence in [0, 1]:
    how likely the escapes are real rather than literal text."""

    data: bytes
    dialect: str | None
    escapes: int
    replaced: int
    evidence: float


def to_bytes(value: object) -> bytes | None:
    """A record value as the exact bytes it stands for; None for non-text.

    str values come from msgpack decoded with ``surrogateescape`` (invalid
    UTF-8 survives as U+DC80..U+DCFF); other lone surrogates cannot be bytes
    we received, so they are kept as their UTF-8 ``surrogatepass`` form rather
    than raising.
    """
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogatepass")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return None


# ---------------------------------------------------------------- forward ---

def _octal_table(prefix: bytes, high: bool) -> list[bytes]:
    table = [bytes([b]) for b in range(256)]
    for b in range(0x20):
        table[b] = prefix + b"%03o" % b
    if high:
        for b in range(0x80, 0x100):
            table[b] = prefix + b"%03o" % b
    return table


_C_NAMED = {0x00: b"\\0", 0x07: b"\\a", 0x08: b"\\b", 0x09: b"\\t", 0x0A: b"\\n",
            0x0B: b"\\v", 0x0C: b"\\f", 0x0D: b"\\r", 0x1B: b"\\e"}


def _cstyle_table() -> list[bytes]:
    table = [bytes([b]) for b in range(256)]
    for b in range(0x20):
        table[b] = _C_NAMED.get(b, b"\\x%02X" % b)
    return table


_FORWARD = {
    "rsyslog": _octal_table(b"#", False),
    "rsyslog-8bit": _octal_table(b"#", True),
    "backslash-octal": _octal_table(b"\\", False),
    "cstyle": _cstyle_table(),
}
_CTRL = re.compile(rb"[\x00-\x1f]")
_CTRL_8BIT = re.compile(rb"[\x00-\x1f\x80-\xff]")


def escape(data: bytes, dialect: str = "rsyslog") -> bytes:
    """The bytes rsyslog writes for ``data`` under ``dialect``."""
    try:
        table = _FORWARD[dialect]
    except KeyError:
        raise ValueError(f"unknown escape dialect {dialect!r}; known: {', '.join(DIALECTS)}") from None
    pattern = _CTRL_8BIT if dialect == "rsyslog-8bit" else _CTRL
    return pattern.sub(lambda m: table[m.group()[0]], data)


# ---------------------------------------------------------------- reverse ---

# Each dialect: (prefix byte that must be present, compiled pattern with one
# group, table group -> byte value). The octal patterns follow FIELD_GUIDE 2.1
# ('#' and three octal digits, the first 0-3; a fourth digit is literal) minus
# the printable range #040-#177, which rsyslog never escapes: '#123' or '#1234'
# is always text. rsyslog-8bit output decodes with the same pattern.
_OCT = {b"%03o" % v: v for v in range(256)}
_CSTY = {b"0": 0x00, b"a": 0x07, b"b": 0x08, b"t": 0x09, b"n": 0x0A, b"v": 0x0B, b"f": 0x0C,
         b"r": 0x0D, b"e": 0x1B}
for _v in range(256):
    for _h in {b"x%02X" % _v, b"x%02x" % _v, b"x%X%x" % (_v >> 4, _v & 15), b"x%x%X" % (_v >> 4, _v & 15)}:
        _CSTY[_h] = _v
_OCT_RE = re.compile(rb"#(0[0-3][0-7]|[23][0-7][0-7])")
_BS_OCT_RE = re.compile(rb"\\(0[0-3][0-7]|[23][0-7][0-7])")
_CSTY_RE = re.compile(rb"\\([0abefnrtv]|x[0-9A-Fa-f]{2})")

_REVERSE: dict[str, tuple[bytes, re.Pattern[bytes], dict[bytes, int]]] = {
    "rsyslog": (b"#", _OCT_RE, _OCT),
    "rsyslog-8bit": (b"#", _OCT_RE, _OCT),
    "backslash-octal": (b"\\", _BS_OCT_RE, _OCT),
    "cstyle": (b"\\", _CSTY_RE, _CSTY),
}
_BYTE = [bytes([v]) for v in range(256)]

# Two escapes of control or 8-bit values back to back: rsyslog writes these
# for binary data, prose does not (escaped printable ASCII such as '#123#124'
# cannot come from rsyslog and does not count).
_O = rb"(?:0[0-3]|[23][0-7])[0-7]"
_C = rb"(?:[0abefnrtv]|x[01389a-fA-F][0-9A-Fa-f])"
_RUN = {
    "rsyslog": re.compile(rb"#" + _O + rb"#" + _O),
    "backslash-octal": re.compile(rb"\\" + _O + rb"\\" + _O),
    "cstyle": re.compile(rb"\\" + _C + rb"\\" + _C),
}
_RUN["rsyslog-8bit"] = _RUN["rsyslog"]

_HIGH_OCT = re.compile(rb"#[23][0-7][0-7]")
_SPACE_BEFORE = frozenset(b" \t(\"'")
_WORD_AFTER = frozenset(b" .,;:!?)\"'")
_ALNUM = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def _score(data: bytes, start: int, end: int, value: int, dialect: str, code: bytes) -> float:
    """How likely one isolated escape is real (see the module docstring)."""
    n = len(data)
    if value == 0x09:
        s = 0.3
    elif value in (0x0D, 0x0A):
        s = 0.9 if end == n else 0.5
    elif value < 0x20:
        s = 0.8
    elif value >= 0x80:
        s = 0.5 if dialect != "cstyle" else 0.3
    else:
        # rsyslog never escapes printable ASCII (nor 0x7F): '#123' is text.
        return 0.02
    if dialect == "cstyle" and len(code) == 1:
        after = data[end] if end < n else None
        before = data[start - 1] if start else None
        # '\0' followed by a digit is octal notation, not C-style; a named
        # escape glued between letters ('C:\temp\new') is a path or prose.
        if code == b"0" and after is not None and 0x30 <= after <= 0x39:
            s = min(s, 0.1)
        elif code != b"0" and after in _ALNUM and (before in _ALNUM or before == 0x3A):
            if not (code == b"r" and end == n):
                s = min(s, 0.03)
    # Standing alone as a word inside text ('issue #015 fixed'): prose.
    if start == 0 or data[start - 1] in _SPACE_BEFORE:
        if end < n and data[end] in _WORD_AFTER and any(c in _ALNUM for c in data[end:end + 3]):
            s = min(s, 0.05)
    return s


def _evidence(data: bytes, dialect: str) -> tuple[float, int, list[bytes]]:
    """(evidence, number of escapes, ``pattern.split`` parts) for one dialect."""
    prefix, pattern, table = _REVERSE[dialect]
    if prefix not in data:
        return 0.0, 0, []
    parts = pattern.split(data)
    count = len(parts) >> 1
    if count == 0:
        return 0.0, 0, parts
    if count > 1 and _RUN[dialect].search(data):
        # A run of control/8-bit escapes: binary data, not prose.
        return 0.95, count, parts
    miss = 1.0
    weak = 0.0
    tabs_only = True
    # Positions come from the split parts: no second scan of the line.
    pos = 0
    plen = len(prefix)
    for i in range(count):
        start = pos + len(parts[2 * i])
        code = parts[2 * i + 1]
        pos = start + plen + len(code)
        value = table[code]
        tabs_only = tabs_only and value == 0x09
        s = _score(data, start, pos, value, dialect, code)
        if s < DECODE_MIN:
            # Prose-like escapes do not add up: a note that quotes '#015'
            # three times is still a note.
            weak = max(weak, s)
        else:
            miss *= 1.0 - s
        if i >= 16:
            break
    ev = 1.0 - miss if miss < 1.0 else weak
    if tabs_only:
        # Tabs in key=value logs are real escapes but say nothing about probes.
        ev = min(ev, 0.3)
    return round(min(ev, 0.99), 4), count, parts


def unescape_as(data: bytes, dialect: str | None) -> bytes:
    """Undo ``dialect`` unconditionally (None: return ``data`` unchanged)."""
    if dialect is None:
        return data
    try:
        prefix, pattern, table = _REVERSE[dialect]
    except KeyError:
        raise ValueError(f"unknown escape dialect {dialect!r}; known: {', '.join(DIALECTS)}") from None
    if prefix not in data:
        return data
    parts = pattern.split(data)
    if len(parts) == 1:
        return data
    parts[1::2] = [_BYTE[table[c]] for c in parts[1::2]]
    return b"".join(parts)


def unescape(data: bytes | str, dialects: tuple[str, ...] = DEFAULT_DIALECTS, *,
             assume_escaped: bool = False) -> Unescaped:
    """Undo the escaping of one line, choosing the dialect by evidence.

    ``assume_escaped=True`` decodes with the best dialect (the first given
    one when no escapes are found) whatever the evidence: for callers that
    know the text was escaped, and for exact round trips.
    """
    raw = to_bytes(data)
    if raw is None:
        raw = b""
    replaced = raw.count(_REPLACEMENT) if b"\xef\xbf\xbd" in raw else 0
    if b"#" not in raw and b"\\" not in raw:
        return Unescaped(raw, None, 0, replaced, 0.0)
    best: tuple[float, int, str, list[bytes]] | None = None
    for d in dialects:
        rev = _REVERSE.get(d)
        if rev is None:
            raise ValueError(f"unknown escape dialect {d!r}; known: {', '.join(DIALECTS)}")
        if rev[0] not in raw:
            continue  # no escape character of this dialect (_evidence: no escapes)
        ev, n, parts = _evidence(raw, d)
        if n and (best is None or ev > best[0]):
            best = (ev, n, d, parts)
    if best is None:
        return Unescaped(raw, None, 0, replaced, 0.0)
    ev, n, d, parts = best
    if ev < DECODE_MIN and not assume_escaped:
        return Unescaped(raw, None, 0, replaced, ev)
    if d == "rsyslog" and "rsyslog-8bit" in dialects and _HIGH_OCT.search(raw):
        d = "rsyslog-8bit"  # same decoding; the label tells the matcher UTF-8 was escaped too
    table = _REVERSE[d][2]
    parts[1::2] = [_BYTE[table[c]] for c in parts[1::2]]
    return Unescaped(b"".join(parts), d, n, replaced, ev)
