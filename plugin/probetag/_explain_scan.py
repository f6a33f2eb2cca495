"""``probetag explain``'s scan and detection (see ``probetag.explain``):
blocks of whole lines in, one probe map (or None) per line out.

``Explainer.scan`` finds the lines a prefilter literal hits (and their
neighbours), ``pick`` parses them into detection items, ``detect`` runs
them through ``Enricher.batch`` and keeps the file's report
(``FileReport``). ``scan`` and ``pick`` need no detection state: the reading
process of ``--jobs 2`` runs them (``_explain_read``)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from . import decode
from ._config import Config
from ._explain_report import _FIRST_LINES, Example
from ._metrics import Metrics

#: rsyslog's internal messages when octet counting meets a non-syslog client
_FRAMING_MARKERS = (b"Framing Error in received TCP message", b"Incomplete frame at end of stream")

#: An RFC 3339 timestamp with a fraction of 1-6 digits and an offset (what
#: rsyslog's date-rfc3339 writes): see ``Explainer._time``.
_ISO_FRACTION = re.compile(rb"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})\.([0-9]{1,6})(Z|[+-][0-9]{2}:[0-9]{2})")

#: The field ``decode.parse_syslog_line`` puts a line's timestamp in, and
#: the records ``Explainer._analysed`` keeps readings of (how many; how
#: long their values may be, together: a few MB at most).
_TIME_FIELD = "timereported"
_READS = 8192
_READ_KEY_CHARS = 512


def _key_size(key: tuple[tuple[Any, Any], ...]) -> int:
    """Bytes or characters of the values in a record's key (other values: 8)."""
    return sum(len(v) if isinstance(v, (bytes, str)) else 8 for _k, v in key)

#: What ``pick`` hands detection in place of a line it knows matches nothing.
_NOTHING: dict[Any, Any] = {}
#: Letters and digits a CR-escape line's MSG must hold, besides its CR
#: escapes, to count as text (``_wordy``).
_WORDS = 8
_ALNUM = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _wordy(msg: bytes, escapes: tuple[bytes, ...]) -> bool:
    """Does ``msg`` hold ``_WORDS`` letters or digits besides ``escapes``?"""
    if len(msg) < _WORDS:
        return False
    words = len(msg) - len(msg.translate(None, _ALNUM))
    if words < _WORDS:
        return False
    # Each escape the pattern removes takes at most ``most`` letters and
    # digits, and each starts at its own byte among ``firsts`` (the escapes'
    # first bytes, ``#`` and ``\\``): when enough are left even if every
    # such byte began one, the pattern need not run (most CR lines).
    firsts, most = _escape_words(escapes)
    starts = 0
    for c in firsts:
        starts += msg.count(c)
    if words - starts * most >= _WORDS:
        return True
    msg = _escapes_re(escapes).sub(b" ", msg)
    return len(msg) - len(msg.translate(None, _ALNUM)) >= _WORDS


def _binary(msg: bytes) -> bool:
    """Does ``msg`` hold an escaped control byte besides TAB and CR (rsyslog's
    ``#000``-``#037``, C-style ``\\xHH``)? Then it is a binary payload's
    piece (a TLS ClientHello cut at its LF bytes), not text with a CR: it
    matches no catalogue entry alone, but the hello it belongs to needs it.
    Only for a line with a byte past ASCII: random bytes (a hello's random,
    its key share) have them, the CR and TAB lines of text that explain
    skips (a third of some files) mostly do not, and ``isascii`` is cheap."""
    if msg.isascii():
        return False
    n = msg.count(b"#0")
    return (n > 0 and n > msg.count(b"#011") + msg.count(b"#015")) or b"\\x" in msg


def _text_after_host(line: bytes, first_space: int, escapes: tuple[bytes, ...]) -> bool:
    """Is the text after the last ``": "`` past HOSTNAME of a plain-header
    file line (``first_space``: 16, traditional; 0, RFC 3339) words
    (``_wordy``) and no binary piece (``_binary``)? In those formats MSG is
    a suffix of the line, so such a line's MSG is text too."""
    host_end = line.find(b" ", line.find(b" ", first_space) + 1 if first_space == 0 else first_space)
    q = line.rfind(b": ")
    return 0 <= host_end < q and _wordy(line[q + 2:], escapes) and not _binary(line[q + 2:])


@functools.lru_cache(maxsize=8)
def _escape_words(escapes: tuple[bytes, ...]) -> tuple[tuple[bytes, ...], int]:
    """(the first bytes of the escapes that hold letters or digits, the most
    letters and digits one of them holds)."""
    words = [(e[:1], len(e) - len(e.translate(None, _ALNUM))) for e in escapes]
    return tuple(sorted({c for c, w in words if w})), max((w for _c, w in words), default=0)


@functools.lru_cache(maxsize=8)
def _escapes_re(escapes: tuple[bytes, ...]) -> re.Pattern[bytes]:
    """One pattern for every escape (longest first: what one pass of
    ``bytes.replace`` per escape, in that order, would remove)."""
    return re.compile(b"|".join(re.escape(e) for e in sorted(set(escapes), key=len, reverse=True)))

_MONTHS = {m.encode(): i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def _json_escaped(fragment: bytes) -> bytes:
    # rsyslog's jsonf/json property formats escape these three (FIELD_GUIDE 3)
    return fragment.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"/", b"\\/")


@dataclass(slots=True)
class _SourceInfo:
    transports: set[str] = field(default_factory=set)
    inputs: set[str] = field(default_factory=set)
    #: lines where a syslog input logged the probe's bytes, and lines where
    #: another program's log quoted a scanner (``seen_in``)
    listener_lines: int = 0
    app_lines: int = 0


@dataclass(slots=True)
class FileReport:
    """What one file held; ``summaries`` are the correlator's scan summaries."""

    name: str
    fmt: str = "raw"
    lines: int = 0
    probe_lines: int = 0
    framing_errors: int = 0
    cut_lines: int = 0
    #: scan summaries the correlator dropped at its memory bound (a flood of
    #: new sources): those sources' scans are missing from the report
    scans_dropped: int = 0
    summaries: list[dict[str, Any]] = field(default_factory=list)
    sources: dict[str, _SourceInfo] = field(default_factory=dict)
    #: source -> probe name -> its first lines and a sample (the text report)
    examples: dict[str, dict[str, Example]] = field(default_factory=dict)

    @property
    def benign_lines(self) -> int:
        return self.lines - self.probe_lines - self.framing_errors


#: Lines read around a line a strong literal hit: a probe's other lines
#: (a bare ``HELP`` rsyslog took for a HOSTNAME, an RFC 5424 record whose
#: payload was all TAG) hold no literal, and the sequence pass names them
#: by their place between the lines that do.
_NEIGHBOURS_BEFORE = 3
_NEIGHBOURS_AFTER = 6

#: Skipped lines ``pick`` holds for their time at most (``_settle_pending``)
_PENDING_MAX = 4096


#: A neighbour line of a file format with a plain header (traditional,
#: RFC 3339) is read when what follows its timestamp is at most this long or
#: holds the strong line's HOSTNAME word: a scan's lines, not the ordinary
#: logs around them (the stage's rule, ``_stage._NEIGHBOUR_BYTES``).
_NEIGHBOUR_REST = 96
#: A TAG as a daemon writes it, ``name[pid]: `` then text: what a payload
#: piece never looks like.
_PROGRAM_TAG = re.compile(rb"[A-Za-z0-9_./-]{1,48}\[[0-9]{1,10}\]: \S")


def _host_word(line: bytes | bytearray, host_at: int) -> tuple[int, bytes]:
    """(offset past the timestamp, HOSTNAME word) of a plain-header line
    (``host_at``: 16 for traditional, 0 for RFC 3339: after the first space)."""
    h = line.find(b" ") + 1 if host_at == 0 else host_at
    if h <= 0 or h > len(line):
        return len(line), b""
    e = line.find(b" ", h)
    return h, bytes(line[h:e if e >= 0 else len(line)])


def _with_neighbours(data: bytes | bytearray, picked: list[tuple[int, bytes, bool, bool]],
                     strong: list[tuple[int, int, int]], host_at: int = -1) -> list[tuple[int, bytes, bool, bool]]:
    """``picked`` plus the lines around each of ``strong`` (line index,
    start, end offsets), in line order. ``host_at`` >= 0 (a plain-header
    format, see ``_host_word``): only neighbours that are short or hold the
    strong line's HOSTNAME word."""
    have = {x[0] for x in picked}
    extra: list[tuple[int, bytes, bool, bool]] = []
    n = len(data)
    filtered = host_at >= 0
    find, rfind = data.find, data.rfind
    tag_match = _PROGRAM_TAG.match
    # With many probe lines most lines are some strong line's neighbour, and
    # a line turned down is looked at again by the next strong line near it:
    # what does not depend on the strong line is worked out once per line,
    # in place in ``data`` (no line is copied before it is taken).
    # line index -> (offset past the timestamp, a daemon's own line)
    known: dict[int, tuple[int, bool]] = {}

    def wanted(i: int, b: int, e: int, needle: bytes) -> bool:
        got = known.get(i)
        if got is None:
            # _host_word(data[b:e], host_at), then the daemon's TAG after it
            if host_at == 0:
                h = find(b" ", b, e) + 1
                if h <= 0:
                    h = e
            else:
                h = b + host_at
                if h > e:
                    h = e
            he = find(b" ", h, e) if h < e else -1
            if he < 0:
                he = e
            got = known[i] = (h, tag_match(data, he + 1, e) is not None)
        h, daemon = got
        if daemon:
            return False  # a daemon's own line (``sshd[812]: ...``), no payload piece
        return e - h <= _NEIGHBOUR_REST or (bool(needle) and find(needle, h, e) >= 0)

    for idx, start, end in strong:
        needle = _host_word(data[start:end], host_at)[1] if filtered else b""
        s = start
        for k in range(1, _NEIGHBOURS_BEFORE + 1):
            if s == 0:
                break
            b = rfind(b"\n", 0, s - 1) + 1
            i = idx - k
            if i not in have and (not filtered or wanted(i, b, s - 1, needle)):
                ln = bytes(data[b:s - 1])
                have.add(i)
                extra.append((i, ln, any(m in ln for m in _FRAMING_MARKERS), False))
            s = b
        e = end
        for k in range(1, _NEIGHBOURS_AFTER + 1):
            if e >= n:
                break
            f = find(b"\n", e + 1)
            if f < 0:
                f = n
            i = idx + k
            if i not in have and (not filtered or wanted(i, e + 1, f, needle)):
                ln = bytes(data[e + 1:f])
                have.add(i)
                extra.append((i, ln, any(m in ln for m in _FRAMING_MARKERS), False))
            e = f
    if not extra:
        return picked
    return sorted(picked + extra, key=lambda x: x[0])


#: A ``fromhost`` line with an empty MSG: the sender and nothing else.
_EMPTY_MSG = re.compile(rb"(?:[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2}|[0-9]{4}-[0-9]{2}-[0-9]{2}T\S+)"
                        rb" \S+ +")


def _with_empty_msgs(data: bytes | bytearray, picked: list[tuple[int, bytes, bool, bool]]
                     ) -> list[tuple[int, bytes, bool, bool]]:
    """``picked`` plus every line of a ``fromhost`` file whose MSG is empty,
    in line order. A binary probe line that rsyslog took whole into the TAG
    leaves such a line (``%FROMHOST% %msg%`` prints no TAG): no literal can
    hit it, and only its place among the scan's other lines names it. They
    are rare in ordinary logs (a message with no text)."""
    have = {x[0] for x in picked}
    extra: list[tuple[int, bytes, bool, bool]] = []
    idx = pos = 0
    n = len(data)
    off = data.find(b" \n")
    ends = []
    while off >= 0:
        ends.append(off + 1)
        off = data.find(b" \n", off + 1)
    if data.endswith(b" "):
        ends.append(n)
    for end in ends:
        start = data.rfind(b"\n", 0, end) + 1
        ln = bytes(data[start:end])
        if _EMPTY_MSG.fullmatch(ln) is None:
            continue
        idx += data.count(b"\n", pos, start)
        pos = start
        if idx not in have:
            extra.append((idx, ln, False, False))
    if not extra:
        return picked
    return sorted(picked + extra, key=lambda x: x[0])


#: syslog-ng files (``decode.SYSLOG_NG_FORMATS``): the lines around a strong
#: hit are read on while they look like pieces of a probe
#: (``_fragment_like``) or come within ``_SNG_REACH`` seconds of the last
#: line that did: syslog-ng cuts a TCP stream at every NUL, so one binary
#: probe is dozens of lines of a few bytes (``SSLSessionReq``: 25), none of
#: which holds a prefilter literal, and a scan's probes, some seconds
#: apart, may all be such lines; a UDP message with LFs spans several
#: lines. A walk reads at most ``_SNG_WALK`` lines.
_SNG_WALK = 2048
_SNG_REACH = 12.0
#: A payload this short, or one holding a control byte, or a line without
#: a header (a continuation), is fragment-like.
_SNG_SHORT = 16
_CONTROL_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_SNG_HEAD = re.compile(rb"(?:([A-Z][a-z]{2}) ([ 0-9][0-9]) |[0-9]{4}-([0-9]{2})-([0-9]{2})T)"
                       rb"([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})? \S+ ")


def _sng_clock(m: re.Match[bytes]) -> float:
    """Seconds since the start of the year (months of 31 days) of a header:
    for differences between nearby lines only."""
    if m.group(1) is not None:
        mon, day = _MONTHS.get(m.group(1), 0), int(m.group(2))
    else:
        mon, day = int(m.group(3)), int(m.group(4))
    return (((mon * 31 + day) * 24 + int(m.group(5))) * 60 + int(m.group(6))) * 60 + int(m.group(7))


def _fragment_like(data: bytes | bytearray, m: re.Match[bytes] | None, end: int) -> bool:
    """A syslog-ng line of ``data`` that ends at ``end`` (``m``: its header,
    matched in ``data``) that can be a piece of a cut probe."""
    if m is None:
        return True  # a continuation line
    return end - m.end() <= _SNG_SHORT or _CONTROL_BYTE.search(data, m.end(), end) is not None


def _syslog_ng_neighbours(data: bytes | bytearray, picked: list[tuple[int, bytes, bool, bool]],
                          strong: list[tuple[int, int, int]]) -> list[tuple[int, bytes, bool, bool]]:
    """``_with_neighbours`` for syslog-ng files: the walks go on as long as
    ``_SNG_REACH`` says, and a continuation line's message is read back to
    its header line.

    One walk per direction reads each line once: a walk that comes to
    another strong hit with a header goes on from there as that hit's own
    walk would (its state starts afresh: as many lines still to take, its
    time, no line read yet). This walk would take no line the hit's own
    does not: that one starts with at least as many lines to take and a time
    no further from the lines ahead (timestamps that go forward), and from
    its first fragment-like line on both read the same time. A hit without
    a header (a continuation line) has no time of its own: the walk goes
    through it and goes on from it as that hit's own walk would, with as
    many lines still to take and a walk bound counted afresh, and keeps its
    time (the hit's own walk has none until its first line with a header,
    and reads no line this one does not). A scan's dense run of hits (every
    line of a cut probe, or thousands of headerless lines) costs one pass,
    not one pass per hit."""
    have = {x[0] for x in picked}
    extra: list[tuple[int, bytes, bool, bool]] = []
    n = len(data)
    hits = sorted(strong)
    at = {idx: (start, end) for idx, start, end in hits}

    def take(i: int, b: int, e: int) -> None:
        if i not in have:
            ln = bytes(data[b:e])
            have.add(i)
            extra.append((i, ln, any(m in ln for m in _FRAMING_MARKERS), False))

    for step in (-1, 1):
        done = None  # the furthest line a walk of this direction has got to
        fresh = _NEIGHBOURS_BEFORE if step < 0 else _NEIGHBOURS_AFTER
        for idx, start, end in (reversed(hits) if step < 0 else hits):
            if done is not None and (idx >= done if step < 0 else idx <= done):
                continue  # a walk went through it, and on from it as its own would
            i = idx
            while True:
                # (a fresh walk from strong hit i)
                h = _SNG_HEAD.match(data, start)
                last_t = _sng_clock(h) if h is not None else None
                pos = start if step < 0 else end
                k, left = 0, fresh
                cont = step < 0 and h is None
                again = None
                while k < _SNG_WALK:
                    if step < 0:
                        if pos <= 0:
                            break
                        b = data.rfind(b"\n", 0, pos - 1) + 1
                        e = pos - 1
                    else:
                        if pos >= n:
                            break
                        b = pos + 1
                        e = data.find(b"\n", b)
                        if e < 0:
                            e = n
                    m = _SNG_HEAD.match(data, b, e)
                    t = _sng_clock(m) if m is not None else last_t
                    near = t is not None and last_t is not None and abs(t - last_t) <= _SNG_REACH
                    if not (left > 0 or cont or near):
                        break
                    k += 1
                    j = i + step * k
                    if j in at:
                        if m is not None:
                            again = j  # another strong hit: its own walk goes on from here
                            break
                        # a hit without a header: on from it as its own walk would
                        i, k, left = j, 0, fresh + 1
                    take(j, b, e)
                    left -= 1
                    if _fragment_like(data, m, e):
                        last_t = t if t is not None else last_t
                        left = max(left, 1)
                    cont = step < 0 and m is None
                    pos = b if step < 0 else e
                if again is None:
                    reached = i + step * k
                    done = reached if done is None else (min(done, reached) if step < 0 else max(done, reached))
                    break
                i = again
                start, end = at[i]
    if not extra:
        return picked
    return sorted(picked + extra, key=lambda x: x[0])


class Explainer:
    """The sans-I/O core of ``explain``: blocks of lines in, one probe map (or
    None) per line out. One instance per file."""

    def __init__(self, config: Config, fmt: str, name: str = "-", detector: Any = None) -> None:
        # the same construction the stage uses (probetag._stage)
        from .detect import Prefilter, build_detection, prefilter_fragments
        from .detect._enrich import MAX_LINE_BYTES

        self.config = config
        self.fmt = fmt
        #: a syslog-ng message's continuation lines join it up to this (``pick``)
        self._max_message = MAX_LINE_BYTES
        self.metrics = Metrics()
        det, pre, self.correlator, _actions, self.enricher = build_detection(config, self.metrics, detector=detector)
        self.detector = det
        # a block is a whole part of the file, and its lines are written
        # when it is done: nothing is named late
        self.enricher.late = False
        if fmt in ("json", "auto"):
            frags = prefilter_fragments(det, config.detect.escapes)
            pre = Prefilter(sorted(set(frags) | {_json_escaped(f) for f in frags}), det.backend)
        elif fmt in decode.SYSLOG_NG_FORMATS:
            # the payload as received, nothing escaped: syslog-ng's pieces too
            frags = prefilter_fragments(det, config.detect.escapes)
            pre = Prefilter(sorted(set(frags) | set(det.syslog_ng_fragments())), det.backend)
        self.use_prefilter(pre)
        self.output_field = config.detect.output_field
        self.report = FileReport(name, fmt)
        self._tcache: dict[bytes, float] = {}
        self._last_t = 0.0
        self._year = datetime.now().year
        #: called with (1-based line, event time, probe map, record) for
        #: each probe line when a report needs every line (``--format html``)
        self.on_probe: Callable[[int, float, dict[str, Any], dict[Any, Any]], None] | None = None

    def use_prefilter(self, pre: Any) -> None:
        """Pick lines with ``pre``'s literals (a ``probetag.detect.Prefilter``)."""
        from .detect import LiteralSet

        self.prefilter = pre
        # The scan also looks for rsyslog's framing markers: one pass over
        # the block instead of one bytes.find pass per marker. Their ids
        # come after the prefilter's, whose own ids are kept.
        self._marker_ids = len(pre.literals.patterns)
        self._literals = LiteralSet([*pre.literals.patterns, *_FRAMING_MARKERS], pre.literals.backend)
        # The context marker's ids (a bare CR's escapes: ``Prefilter``'s
        # weak literals) and the escapes themselves (``_weak_matters``).
        self._weak_ids = frozenset(getattr(pre, "_weak", ()))
        self._weak_lits = tuple(pre.literals.patterns[i] for i in sorted(self._weak_ids))
        #: the C scan's tables (``_speedups.Hits``), or None: the Python loop;
        #: and ``_wordy``'s quick bound for it (the escapes' first bytes
        #: joined, the most letters and digits one escape holds)
        self._hit_tables = self._literals.hit_tables(self._weak_ids)
        firsts, most = _escape_words(self._weak_lits)
        self._c_words = (b"".join(firsts), most)
        #: lines hit only by the context marker that ``pick`` did not decode
        #: (``skip_weak``: whether it may; tests compare both ways)
        self.weak_skipped = 0
        self.skip_weak = True
        self._nothing_read: Any = None  # what analyse makes of _NOTHING
        #: a record's fields but its time -> what analyse made of it (``_analysed``)
        self._reads: dict[tuple[Any, ...], Any] = {}
        self._pending: list[bytes] = []  # skipped lines not parsed since the last parsed one

    # -- event time ----------------------------------------------------------
    def _time(self, sl: decode.SyslogLine) -> float:
        ts = sl.time
        if not ts:
            return self._last_t
        key = ts.encode() if isinstance(ts, str) else ts
        m = _ISO_FRACTION.fullmatch(key)
        if m is not None:
            # Microseconds make every RFC 3339 stamp distinct, but the lines
            # of one second share the rest: parse that once. An aware
            # datetime's timestamp() is (whole seconds * 10**6 + us) / 10**6
            # (CPython's timedelta.total_seconds): the same float.
            whole = m.group(1) + m.group(3)
            base = self._tcache.get(whole)
            if base is None:
                base = self._cache_time(whole)
            t = base if base != base else (int(base) * 1_000_000 + int(m.group(2).ljust(6, b"0"))) / 1_000_000
        else:
            cached = self._tcache.get(key)
            t = self._cache_time(key) if cached is None else cached
        if t != t or t <= 0:  # unparsable: keep the previous line's time
            return self._last_t
        self._last_t = t
        return t

    def _time_after(self, sl: decode.SyslogLine) -> float:
        """``_time(sl)`` after lines ``pick`` skipped unparsed: their times
        matter only if ``sl`` has none of its own, and only then are they
        parsed, in order."""
        base = self._last_t
        self._last_t = float("nan")
        t = self._time(sl)
        if t != t:
            self._last_t = base
            self._settle_pending()
            t = self._time(sl)
        self._pending.clear()
        return t

    def _settle_pending(self) -> None:
        """The time the skipped lines held so far leave behind (the last one
        that has one), read from the last back; ``pick`` calls it too, so a
        file of nothing but skipped lines holds ``_PENDING_MAX`` of them at
        most."""
        base = self._last_t
        for line in reversed(self._pending):
            self._last_t = float("nan")
            t = self._time(decode.parse_syslog_line(line, self.fmt))
            if t == t:
                break
        else:
            self._last_t = base
        self._pending.clear()

    def _cache_time(self, key: bytes) -> float:
        if len(self._tcache) > 100_000:
            self._tcache.clear()
        t = self._tcache[key] = self._parse_time(key)
        return t

    def _parse_time(self, ts: bytes) -> float:
        try:
            if ts[:1].isdigit():
                return datetime.fromisoformat(ts.decode("ascii").replace("Z", "+00:00")).timestamp()
            # "Nov 27 13:25:57": no year in the traditional format; only
            # differences matter to correlation, so the current year will do
            mon = _MONTHS[ts[:3]]
            day, hms = int(ts[4:6]), ts[7:15].split(b":")
            return datetime(self._year, mon, day, int(hms[0]), int(hms[1]), int(hms[2])).timestamp()
        except (ValueError, KeyError, IndexError, UnicodeDecodeError):
            return float("nan")

    # -- one block -------------------------------------------------------------
    def block(self, data: bytes | bytearray) -> tuple[int, dict[int, dict[str, Any]]]:
        """``data``: whole lines joined by LF (no final LF) -> (number of
        lines, {0-based line index: probe map}) for the lines that are probes.

        Only lines the prefilter hits are split out and decoded; the others
        are never touched one by one (that is what makes big files fast)."""
        n, framing, picked = self.scan(data)
        return self.detect(n, framing, *self.pick(picked))

    def scan(self, data: bytes | bytearray) -> tuple[int, int, list[tuple[int, bytes, bool, bool]]]:
        """The first half of ``block``, which needs no detection state (the
        reading process of ``--jobs 2`` runs it): -> (number of lines,
        framing-error lines, [(0-based line index, line, holds a framing
        marker, hit only by the context marker)] for the lines a prefilter
        literal hit)."""
        tables = self._hit_tables
        if tables is not None:
            # the loop below, in C (``_speedups.Hits.lines``); it also tells
            # the CR lines ``pick`` skips (``weak`` 2), where it can
            from ._accel import speedups

            handler = speedups.Hits(*tables)  # type: ignore[union-attr]
            self._literals.scan_into(data, handler)
            firsts, most = self._c_words
            n, framing, picked, strong_lines = handler.lines(
                data, self._marker_ids, self._raw_from() if self.skip_weak else -1, firsts, most, _WORDS)
        else:
            n, framing, picked, strong_lines = self._scan_lines(data)
        if strong_lines:
            if self.fmt in decode.SYSLOG_NG_FORMATS:
                picked = _syslog_ng_neighbours(data, picked, strong_lines)
            else:
                picked = _with_neighbours(data, picked, strong_lines, self._raw_from())
        if self.fmt == "fromhost":
            picked = _with_empty_msgs(data, picked)
        return n, framing, picked

    def _raw_from(self) -> int:
        """Where HOSTNAME's search starts in a line of a file format whose MSG
        is a suffix of the line (16: traditional; 0: RFC 3339, after the
        first space), else -1: see ``pick``."""
        return 16 if self.fmt == "traditional" else 0 if self.fmt == "rfc3339" else -1

    def _scan_lines(self, data: bytes | bytearray
                    ) -> tuple[int, int, list[tuple[int, bytes, bool, bool]], list[tuple[int, int, int]]]:
        """``scan`` before the neighbours, in Python: -> (number of lines,
        framing-error lines, hit lines, (line index, start, end) of those a
        strong literal hit)."""
        # One pass of LF counting over the block: the line index of each hit
        # line is counted from the previous hit line, and the block's line
        # count from the last one. A line's hits are consecutive (sorted by
        # offset); it is split out once they are all seen, if a prefilter
        # literal hit it.
        picked: list[tuple[int, bytes, bool, bool]] = []
        framing = 0
        marker_ids = self._marker_ids
        weak_ids = self._weak_ids
        # (line index, start, end) of lines a strong literal hit: their
        # neighbours are read too (see _with_neighbours)
        strong_lines: list[tuple[int, int, int]] = []
        idx, pos, start, end = 0, 0, 0, -1
        probe = marked = strong = False
        count, rfind, find = data.count, data.rfind, data.find
        # (every LiteralSet backend takes a bytearray: tests/explain)
        hits = self._literals.find(data)  # type: ignore[arg-type]
        hits.append((len(data) + 1, -1))  # a sentinel ends the last line
        for off, pid in hits:
            if off <= end:
                if pid >= marker_ids:
                    marked = True
                else:
                    probe = True
                    if pid not in weak_ids:
                        strong = True
                continue
            if marked:
                # rsyslog's own complaints about bytes a client sent
                # (FIELD_GUIDE 1): counted, whatever else the line holds
                framing += 1
            if probe:
                picked.append((idx, bytes(data[start:end]), marked, not strong))
                if strong:
                    strong_lines.append((idx, start, end))
            if pid < 0:
                break
            idx += count(b"\n", pos, off)
            pos = off
            start = rfind(b"\n", 0, off) + 1
            end = find(b"\n", off)
            if end < 0:
                end = len(data)
            marked = pid >= marker_ids
            probe = not marked
            strong = probe and pid not in weak_ids
        return idx + count(b"\n", pos) + 1, framing, picked, strong_lines

    def pick(self, picked: list[tuple[int, bytes, bool, bool]]) -> tuple[list[tuple[float, dict[Any, Any]]], list[int]]:
        """The middle of ``block`` (the reading process of ``--jobs 2`` runs
        it too): ``scan``'s hit lines -> (detection items: (event time,
        record) in line order, their 0-based line indices). Event time runs
        on from line to line within the file (``_time``). Lines hit only by
        the context marker go on only when they are nothing but a CR."""
        items: list[tuple[float, dict[Any, Any]]] = []
        where: list[int] = []
        fmt, parse = self.fmt, decode.parse_syslog_line
        lits = self._weak_lits
        # File formats whose MSG is a suffix of the line: there the text
        # after the last ": " past HOSTNAME lies inside MSG, and words in it
        # are words in MSG, so the line need not even be parsed (its time is
        # read later, only if a line after it needs it: ``_time_after``).
        first_space = self._raw_from()
        raw_ok = self.skip_weak and first_space >= 0
        pending = self._pending
        sng = fmt in decode.SYSLOG_NG_FORMATS
        head: tuple[int, int, dict[Any, Any]] | None = None  # syslog-ng: (line, item, record) of the last message
        for idx, line, marked, weak_only in picked:
            if sng:
                sl = parse(line, fmt)
                rec = sl.record
                if (rec.get("_continuation") and head is not None and head[0] == idx - 1
                        and len(head[2]["msg"]) + len(rec["msg"]) < self._max_message):
                    # a raw LF inside the message above (a UDP datagram):
                    # its text joins that message, and the line takes the
                    # message's verdict (``detect``). Up to a datagram's
                    # 64 KiB: past that the lines are no datagram's, and
                    # the next one opens a message of its own.
                    hrec = head[2]
                    hrec["msg"] = hrec["msg"] + b"\n" + rec["msg"]
                    items.append((self._last_t, {"_continues": head[1]}))
                    where.append(idx)
                    head = (idx, head[1], hrec)
                    continue
                head = (idx, len(items), rec)
                items.append((self._time(sl) if not pending else self._time_after(sl), rec))
                where.append(idx)
                continue
            # (weak 2: the C scan's mark, ``_speedups.Hits.lines``, for a
            # line these tests pass)
            if weak_only == 2 or (weak_only and raw_ok and not marked and _text_after_host(line, first_space, lits)):
                self.weak_skipped += 1
                if len(pending) >= _PENDING_MAX:
                    self._settle_pending()
                pending.append(line)
                items.append((self._last_t, _NOTHING))
                where.append(idx)
                continue
            sl = parse(line, fmt)
            if not (marked and sl.tag == b"rsyslogd:" and any(m in sl.msg for m in _FRAMING_MARKERS)):
                # every line's time in order: a line without one takes the
                # one before
                t = self._time_after(sl) if pending else self._time(sl)
                if weak_only:
                    # Hit only by a bare CR's escape (``#015``: every line of
                    # a CRLF sender such as a Windows event forwarder). Such
                    # a line holds no other catalogue fragment (the
                    # prefilter never under-reports), and a bare CR matches
                    # only a line that is nothing else: one whose MSG holds
                    # words beside the CR (``_WORDS``) matches nothing, so it
                    # is not decoded. (Placeholders such as a nil TAG ``-``
                    # or a NUL do not count as words: the rebuilt line of
                    # ``127.0.0.1 - #000#015`` is a lone CR.) It keeps its
                    # place in the batch as an empty record, which reads as
                    # nothing as the line would have: the look-ahead counts
                    # places, so every verdict stays the same.
                    if self.skip_weak and _wordy(sl.msg, lits) and not _binary(sl.msg):
                        self.weak_skipped += 1
                        items.append((t, _NOTHING))
                        where.append(idx)
                        continue
                items.append((t, sl.record))
                where.append(idx)
            # else rsyslog's own line, counted by scan; never a probe
        return items, where

    def detect(self, n: int, framing: int, items: list[tuple[float, dict[Any, Any]]],
               where: list[int]) -> tuple[int, dict[int, dict[str, Any]]]:
        """The last part of ``block``: ``scan``'s counts and ``pick``'s
        items -> (n, {0-based line index: probe map})."""
        rep = self.report
        base = rep.lines + 1  # 1-based number of the block's first line
        rep.lines += n
        rep.framing_errors += framing
        found: dict[int, dict[str, Any]] = {}
        if not items:
            return n, found
        by_item: dict[int, dict[str, Any]] = {}
        by_message: dict[int, dict[str, Any]] = {}
        for k, d in enumerate(self.enricher.batch("explain", items, self._analysed(items))):
            rec = items[k][1]
            if "_continues" in rec:
                # a continuation line of a syslog-ng message: the message's
                # verdict, and the line it starts on instead of its payload
                # (a message of thousands of lines would repeat it as often)
                head = rec["_continues"]
                probe = by_message.get(head)  # type: ignore[assignment]
                if probe is None:
                    first = by_item.get(head)
                    if first is None:
                        continue
                    probe = by_message[head] = {**{f: v for f, v in first.items() if f != "payload"},
                                                "continues": base + where[head]}
            else:
                if d is None or d.outcome != "tagged":
                    continue
                probe = d.record.get(self.output_field)
                if not isinstance(probe, dict):
                    continue
                by_item[k] = probe
            found[where[k]] = probe
            rep.probe_lines += 1
            if self.on_probe is not None:
                self.on_probe(base + where[k], items[k][0], probe, rec)
            src = str(probe.get("source") or "-")
            name = str(probe.get("name"))
            ex = rep.examples.setdefault(src, {}).get(name)
            if ex is None:
                ex = rep.examples[src][name] = Example(payload=str(probe.get("payload") or ""))
            ex.count += 1
            if len(ex.lines) < _FIRST_LINES:
                ex.lines.append(base + where[k])
            info = rep.sources.setdefault(src, _SourceInfo())
            if probe.get("seen_in") == "application-log":
                info.app_lines += 1
            else:
                info.listener_lines += 1
            if probe.get("transport"):
                info.transports.add(str(probe["transport"]))
            inp = items[k][1].get("inputname")
            if inp:
                info.inputs.add(inp.decode("utf-8", "replace") if isinstance(inp, bytes) else str(inp))
        return n, found

    def _analysed(self, items: list[tuple[float, dict[Any, Any]]]) -> list[Any]:
        """``Enricher.analyse(record, True)`` of each item, in order, as
        ``Enricher.batch`` would call it, with what a line of the file said
        before taken from ``_reads``. A probe-heavy file repeats the same few
        probe lines from the same few senders, each with its own timestamp:
        the reading and the sender depend on every field of the record but
        the time (rebuild never reads it, ``decode.memo_key``), so a record
        equal to an earlier one in all other fields reads the same. Only
        readings with matches are kept: for one without, analyse looks for
        markers in every field, the time too. A skipped line's record is
        always the same empty one: analysed once (in both processes of
        ``--jobs 2``: the detecting one gets a copy of it)."""
        analyse = self.enricher.analyse
        reads = self._reads
        nothing = self._nothing_read
        pre: list[Any] = []
        add = pre.append
        for _t, rec in items:
            # (``_NOTHING``, or its copy from the reading process of --jobs 2:
            # no line's record is empty, each holds at least its format)
            if not rec:
                if nothing is None:
                    nothing = self._nothing_read = analyse(_NOTHING, True)
                add(nothing)
                continue
            key: Any = tuple([kv for kv in rec.items() if kv[0] != _TIME_FIELD])
            try:
                got = reads.get(key)
            except TypeError:  # a list or map among a JSON record's values
                got = key = None
            if got is None:
                got = analyse(rec, True)
                if key is not None and got is not None and got[0].matches and _key_size(key) <= _READ_KEY_CHARS:
                    if len(reads) >= _READS:
                        reads.clear()
                    reads[key] = got
            add(got)
        return pre

    def finish(self) -> FileReport:
        self.report.summaries = _merge_overlapping(self.correlator.flush())
        self.report.scans_dropped = int(self.metrics.get("correlation_summaries_dropped"))
        return self.report


def _merge_overlapping(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One scan per source and stretch of time in the report. The correlator
    ends a scan after ``scan_idle`` without a named line; where most lines
    are named by their place in the scan afterwards (a ``%FROMHOST% %msg%``
    file), a later named line reopens the source as a new scan whose time
    then reaches back over the first: such overlapping scans are one."""
    out: list[dict[str, Any]] = []
    for s in sorted(summaries, key=lambda s: (str(s["source"]), s["first_seen"])):
        prev = out[-1] if out else None
        if prev is None or prev["source"] != s["source"] or s["first_seen"] > prev["last_seen"]:
            out.append(dict(s, probes=dict(s["probes"])))
            continue
        prev["last_seen"] = max(prev["last_seen"], s["last_seen"])
        prev["lines"] += s["lines"]
        for name, n in s["probes"].items():
            prev["probes"][name] = prev["probes"].get(name, 0) + n
        prev["probes"] = dict(sorted(prev["probes"].items()))
        prev["probe_count"] = len(prev["probes"])
        scanners = list(dict.fromkeys([*prev.get("scanners", ()), *s.get("scanners", ())]))
        # "unknown": bytes several scanners send only; a part named after a
        # scanner by bytes it alone sends names the whole scan
        known = [x for x in scanners if x != "unknown"]
        prev["scanners"] = known or scanners
        if known and prev.get("scanner") not in known:
            prev["scanner"] = known[0]
        if s.get("named_late"):
            prev["named_late"] = [*prev.get("named_late", ()), *s["named_late"]]
    return out


