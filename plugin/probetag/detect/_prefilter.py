"""Multi-literal search: every occurrence of a fixed set of byte strings.

Theory of operation
-------------------
* ``LiteralSet(patterns)`` compiles a list of byte literals once;
  ``find(data)`` returns every occurrence as a sorted list of
  ``(start, pattern_index)`` pairs, overlapping occurrences included. That
  one contract is what the line matcher (``_engine``) and the chunk
  prefilter (``Prefilter``) both build on.
* ``LiteralSet(patterns, first_only=True)``: ``find`` returns each
  literal's first occurrence only (sorted the same way), which is all the
  line matcher asks (what a literal is found at the line's start, or
  inside it). A hostile line of one probe piece repeated a million times
  then costs one result, not a million: hyperscan reports each literal
  once (``HS_FLAG_SINGLEMATCH``); the other backends stop after
  ``MAX_RAW_HITS`` occurrences (no real line comes near: ~10 at most).
* Three backends give the same answer (the tests cross-check them):

  - ``hyperscan`` (Intel's SIMD matcher) when importable (a dependency
    on Linux x86_64, where its wheels are). Patterns are
    compiled as regexes with every byte written ``\\xHH``: the binding's
    pure-literal mode stops at the first NUL, and probe bytes have many.
    Literals have a fixed length, so ``start = end - len``. Literals of 2-3
    bytes halve hyperscan's speed; when each holds one of a few 2-byte
    anchors that start with a byte rare in text (the C-style escapes
    ``\\0``, ``\\r``, ``0\\r``), they go to a second database that is scanned
    only if the data holds an anchor (one memchr pass, in C). Compiled
    databases are cached in ``$XDG_CACHE_HOME/probetag/hyperscan`` (see
    ``_hs_cache_load``).
  - ``ahocorasick`` (pyahocorasick, a dependency everywhere). The common wheel is built for ``str``
    keys, so bytes are mapped 1:1 to code points with latin-1.
  - ``re``: the reference the tests check the others against, never picked
    by default (``default_backend``): pyahocorasick is a dependency, and this
    runs some 400 times slower than hyperscan on a chunk. One alternation
    inside a look-ahead, longest literal first, finds the longest literal at
    each position; the literals that are prefixes of it and also start
    there are added from a precomputed table, which makes the result
    complete.
* ``Prefilter`` runs one ``LiteralSet`` over a whole chunk of packed msgpack
  entries. Strings inside msgpack are stored unescaped (raw UTF-8 or raw
  bytes), so a fragment of a logged probe line appears verbatim in the
  chunk. A record whose bytes contain no fragment cannot match and is never
  decoded; the prefilter may over-report (that costs one decode), it must
  never under-report for the shapes the engine recognises.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from array import array
from bisect import bisect_right
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["LiteralSet", "Prefilter", "available_backends", "default_backend"]


def available_backends() -> tuple[str, ...]:
    """Every backend that can run here, the fast ones first and the ``re``
    reference last. Only a fast one is picked by default (``default_backend``)."""
    from .._accel import fast_backends

    return (*fast_backends(), "re")


def default_backend() -> str:
    """hyperscan, else pyahocorasick; ImportError when neither is installed
    (both scan in C; the ``re`` reference is some 400 times slower)."""
    from .._accel import matcher_backend

    return matcher_backend()


class LiteralSet:
    """Every occurrence of a set of byte literals; see the module docstring."""

    __slots__ = ("patterns", "backend", "first_only", "_impl", "_lens", "_prefixes", "_index")

    def __init__(self, patterns: Sequence[bytes], backend: str | None = None, *,
                 first_only: bool = False) -> None:
        self.first_only = first_only
        pats = [bytes(p) for p in patterns]
        if any(not p for p in pats):
            raise ValueError("empty literal")
        self.patterns = tuple(pats)
        self._lens = tuple(len(p) for p in pats)
        if backend is None:
            backend = default_backend()
        self.backend = backend
        if not pats:
            self._impl = None
        elif backend == "hyperscan":
            self._impl = self._build_hyperscan()
        elif backend == "ahocorasick":
            self._impl = self._build_ahocorasick()
        elif backend == "re":
            self._impl = self._build_re()
        else:
            raise ValueError(f"unknown backend {backend!r}")

    # -- backends ----------------------------------------------------------

    def _build_hyperscan(self) -> object:
        pats = self.patterns
        short = [i for i, p in enumerate(pats) if len(p) < _HS_SHORT]
        anchors = _anchors([pats[i] for i in short]) if short and len(short) < len(pats) else None
        single = self.first_only
        if anchors is None:
            return (_hs_database(pats, range(len(pats)), single), None, ())
        # A 2- or 3-byte literal makes hyperscan's literal matcher check
        # far more candidate positions: with the catalogue's three C-style
        # escapes (``\\0``, ``\\r``, ``0\\r``) in the set, a scan of ordinary
        # log records runs at half the speed. They get a database of their
        # own, scanned only when the data holds one of their 2-byte anchors
        # (one memchr pass per anchor's first byte, ``_holds_any``); the
        # ids are the original pattern indices.
        skip = set(short)
        rest = [i for i in range(len(pats)) if i not in skip]
        return (_hs_database(pats, rest, single), _hs_database(pats, short, single), anchors)

    def _build_ahocorasick(self) -> object:
        import ahocorasick

        auto = ahocorasick.Automaton()
        by_text: dict[str, list[int]] = {}
        for i, p in enumerate(self.patterns):
            by_text.setdefault(p.decode("latin-1"), []).append(i)
        for text, ids in by_text.items():
            auto.add_word(text, (len(text), tuple(ids)))
        auto.make_automaton()
        return auto

    def _build_re(self) -> object:
        # Distinct literals, longest first: the alternation then returns the
        # longest literal starting at each position.
        uniq: dict[bytes, list[int]] = {}
        for i, p in enumerate(self.patterns):
            uniq.setdefault(p, []).append(i)
        order = sorted(uniq, key=len, reverse=True)
        self._index = uniq
        # O(total length), not O(n^2): thousands of literals are normal.
        self._prefixes = {p: [p[:k] for k in range(1, len(p)) if p[:k] in uniq] for p in uniq}
        alt = b"|".join(re.escape(p) for p in order)
        return re.compile(b"(?=(" + alt + b"))", re.DOTALL)

    # -- search ------------------------------------------------------------

    def find(self, data: bytes) -> list[tuple[int, int]]:
        """All occurrences as sorted ``(start, pattern_index)`` pairs (with
        ``first_only``: each literal's first occurrence)."""
        impl = self._impl
        if impl is None or not data:
            return []
        out: list[tuple[int, int]] = []
        if self.backend == "hyperscan":
            lens = self._lens
            append = out.append

            def on_match(pid: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
                append((to - lens[pid], pid))

            main, short, anchors = impl  # type: ignore[misc]
            main.scan(data, match_event_handler=on_match)
            if short is not None and _holds_any(data, anchors):
                short.scan(data, match_event_handler=on_match)
        elif self.first_only:
            return self._find_first(data)
        elif self.backend == "ahocorasick":
            for end, (n, ids) in impl.iter(data.decode("latin-1")):  # type: ignore[attr-defined]
                start = end - n + 1
                for pid in ids:
                    out.append((start, pid))
        else:
            index = self._index
            prefixes = self._prefixes
            for m in impl.finditer(data):  # type: ignore[attr-defined]
                start = m.start()
                hit = m.group(1)
                for pid in index[hit]:
                    out.append((start, pid))
                for q in prefixes[hit]:
                    for pid in index[q]:
                        out.append((start, pid))
        out.sort()
        return out

    def _find_first(self, data: bytes) -> list[tuple[int, int]]:
        """``find`` with ``first_only`` on the backends without hyperscan's
        single-match mode: each literal's first occurrence, looked for in
        the first ``MAX_RAW_HITS`` occurrences of any."""
        impl = self._impl
        first: dict[int, int] = {}
        raw = 0
        if self.backend == "ahocorasick":
            for end, (n, ids) in impl.iter(data.decode("latin-1")):  # type: ignore[attr-defined]
                start = end - n + 1
                for pid in ids:
                    if pid not in first or start < first[pid]:
                        first[pid] = start
                raw += len(ids)
                if raw >= MAX_RAW_HITS:
                    break
        else:
            index = self._index
            prefixes = self._prefixes
            for m in impl.finditer(data):  # type: ignore[attr-defined]
                start = m.start()
                hit = m.group(1)
                for q in (hit, *prefixes[hit]):
                    for pid in index[q]:
                        if pid not in first:
                            first[pid] = start
                        raw += 1
                if raw >= MAX_RAW_HITS:
                    break
        return sorted((start, pid) for pid, start in first.items())

    def scan_into(self, data: Any, handler: Any) -> None:
        """hyperscan only: every occurrence in ``data`` to ``handler`` (a
        C match handler, ``_speedups.Hits``), in no particular order. A
        guarded handler (``Hits.guard``) that stops a scan has it go on
        where ``resume()`` says."""
        main, short, anchors = self._impl  # type: ignore[misc]
        _scan_on(main, data, handler)
        if short is not None and _holds_any(data, anchors):
            handler.restart()
            _scan_on(short, data, handler)

    def hit_tables(self, weak: Iterable[int] = ()) -> tuple[bytes, bytes] | None:
        """(pattern lengths, weak flags) for a ``_speedups.Hits`` handler, or
        None when hits cannot be collected in C (no hyperscan, no C
        accelerator, no patterns)."""
        from .._accel import speedups

        if self.backend != "hyperscan" or not self.patterns or speedups is None:
            return None
        weak = set(weak)
        lens = array("I", (len(p) for p in self.patterns)).tobytes()
        return lens, bytes(1 if i in weak else 0 for i in range(len(self.patterns)))

    def starts(self, data: bytes) -> list[int]:
        """Just the start offsets (sorted, possibly repeated): the chunk prefilter."""
        return [s for s, _ in self.find(data)]


class Prefilter:
    """One scan over a chunk's packed bytes -> indices of entries worth decoding.

    ``weak`` literals (the escaped forms of a bare CR: ``#015``) only matter
    next to a probe line of the same sender; ``classify()`` tells the entries
    hit by nothing else apart, so the stage can skip them when no probe
    context is live (a Windows forwarder ends every line with ``#015``)."""

    __slots__ = ("literals", "_weak", "_tables")

    @property
    def weak_ids(self) -> frozenset[int]:
        """Pattern ids (in ``literals``) of the weak literals."""
        return self._weak

    def __init__(self, fragments: Iterable[bytes], backend: str | None = None,
                 weak: Iterable[bytes] = ()) -> None:
        weak_set = set(f for f in weak if f)
        strong = _drop_containing(_drop_redundant(set(f for f in fragments if f) - weak_set))
        weak_list = _drop_redundant(weak_set)
        self.literals = LiteralSet(strong + weak_list, backend)
        self._weak = frozenset(range(len(strong), len(strong) + len(weak_list)))
        #: (pattern lengths, weak flags) for the C match handler
        #: (``_speedups.Hits``), when hyperscan and the accelerator are there
        self._tables = self.literals.hit_tables(self._weak)

    def entries_hit(self, data: bytes, starts: Sequence[int]) -> list[int]:
        """Indices into ``starts`` (sorted entry start offsets, an end sentinel
        allowed) of entries that contain at least one fragment. A hit
        straddling two entries is attributed to the one it starts in
        (over-reporting is harmless)."""
        return self.classify(data, starts)[0]

    def classify(self, data: bytes, starts: Sequence[int]) -> tuple[list[int], set[int]]:
        """(every hit entry, the subset hit only by weak literals)."""
        if self._tables is not None and isinstance(starts, memoryview) and data:
            # The C walk's offsets and hyperscan: hits are collected and
            # mapped to entries in C (``_speedups.Hits``), no Python call
            # per occurrence.
            from .._accel import speedups

            handler = speedups.Hits(*self._tables)  # type: ignore[union-attr]
            # (an entry of thousands of hits, a record of one probe piece
            # over and over, costs ENTRY_HIT_LIMIT of them; one with more
            # counts as hit by a strong literal, on both paths)
            handler.guard(starts, ENTRY_HIT_LIMIT)
            self.literals.scan_into(data, handler)
            return handler.entries(starts)  # type: ignore[no-any-return]
        hits = self.literals.find(data)
        if not hits:
            return [], set()
        out: list[int] = []
        strong: set[int] = set()
        weak = self._weak
        last = -1
        # Hits come sorted and a probe line holds several literals: while
        # they fall in the entry [lo, hi) of the previous hit, no bisect.
        lo = hi = -1
        top = len(starts) - 1
        n = 0
        for off, pid in hits:
            if not lo <= off < hi:
                i = bisect_right(starts, off) - 1
                if i < 0:
                    continue
                lo = starts[i]
                hi = starts[i + 1] if i < top else float("inf")
                if i != last:
                    out.append(i)
                    last = i
                    n = 0
            n += 1
            if pid not in weak or n > ENTRY_HIT_LIMIT:
                # (past the limit, as the C handler reads it: see classify)
                strong.add(last)
        return out, set(out) - strong if weak else set()


def _scan_on(db: Any, data: Any, handler: Any) -> None:
    """One database over ``data``, resumed after each stop of a guarded
    handler (see ``Prefilter.classify``)."""
    from hyperscan import ScanTerminated

    try:
        db.scan(data, match_event_handler=handler)
        return
    except ScanTerminated:
        pass
    view = memoryview(data)
    while (at := handler.resume()) >= 0:
        try:
            db.scan(view[at:], match_event_handler=handler)
            return
        except ScanTerminated:
            continue


#: Hits counted in one entry before the chunk scan moves on to the next
#: entry (``Hits.guard``): a binary probe line has up to ~1,300 (nmap's
#: ``--version-all`` probes as rsyslog escapes them); an entry stopped at
#: is read as if a strong literal hit it, so this only bounds the work.
ENTRY_HIT_LIMIT = 256

#: ``first_only`` without hyperscan: occurrences looked at per ``find``.
MAX_RAW_HITS = 1024

#: Literals shorter than this go to hyperscan's second database (see
#: ``LiteralSet._build_hyperscan``). Measured on 190-byte syslog records with
#: the built-in catalogue: 4 bytes and up scan at ~1.6 GB/s, the full set with
#: its 2-3 byte literals at ~1 GB/s.
_HS_SHORT = 4

#: Bytes too common in log text to start an anchor with.
_COMMON = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;-_/=()[]{}\"'<>#%@+*&?!|$~^`\t")


def _anchors(literals: Sequence[bytes]) -> tuple[bytes, ...] | None:
    """At most four 2-byte strings, each starting with a byte that is rare
    in log text, such that every literal holds one of them (greedy), or
    None: then the short literals stay in the main database. Needs the C
    accelerator's ``contains_any``: ``bytes.find`` with a 2-byte needle is
    slower than the scan it would save."""
    from .._accel import speedups

    if speedups is None:
        return None
    cands = {p: {p[i:i + 2] for i in range(len(p) - 1) if p[i] not in _COMMON} for p in literals}
    left = list(literals)
    chosen: list[bytes] = []
    while left and len(chosen) < 4:
        counts: dict[bytes, int] = {}
        for p in left:
            for a in cands[p]:
                counts[a] = counts.get(a, 0) + 1
        if not counts:
            return None
        best = max(sorted(counts), key=counts.__getitem__)
        chosen.append(best)
        left = [p for p in left if best not in cands[p]]
    return None if left else tuple(chosen)


def _holds_any(data: object, anchors: tuple[bytes, ...]) -> bool:
    from .._accel import speedups

    try:
        return bool(speedups.contains_any(data, anchors))  # type: ignore[union-attr]
    except (TypeError, BufferError):  # not a contiguous buffer: just scan
        return True


def _hs_database(patterns: Sequence[bytes], ids: Iterable[int], single: bool = False) -> object:
    """``single``: each pattern reported once per scan, at its first
    occurrence (``HS_FLAG_SINGLEMATCH``)."""
    import hyperscan

    ids = list(ids)
    mode = hyperscan.HS_MODE_BLOCK
    what = (_CACHE_FORMAT, hyperscan.__version__, mode, ids) + (("single",) if single else ())
    h = hashlib.sha256(repr(what).encode())
    for i in ids:  # length-prefixed: no two lists hash alike
        h.update(len(patterns[i]).to_bytes(4, "big"))
        h.update(patterns[i])
    key = h.hexdigest()
    db = _hs_cache_load(key, mode)
    if db is None:
        # Every byte as \\xHH (hex digits never hold a newline).
        exprs = [b"\\x" + patterns[i].hex("\n").encode().replace(b"\n", b"\\x") for i in ids]
        db = hyperscan.Database(mode=mode)
        db.compile(expressions=exprs, ids=ids, elements=len(exprs),
                   flags=[hyperscan.HS_FLAG_SINGLEMATCH] * len(exprs) if single else 0)
        _hs_cache_store(key, db)
    return db


# -- the compiled-database cache ----------------------------------------------
#
# Compiling the catalogue's ~1,400 literals takes hyperscan 0.15-0.5 s at every
# start (``probetag explain`` on a one-line file spent most of its time
# there); loading the serialized database takes milliseconds. Files are keyed
# by a hash of the expressions, ids, mode and hyperscan version, hold a
# SHA-256 of the serialized bytes (hyperscan itself accepts some damaged
# databases), are written to a temporary name and renamed (workers starting
# together), and at most _CACHE_KEEP of them are kept. Any failure -- no
# cache directory, unwritable, damaged or foreign file, a database built for
# another CPU (DatabasePlatformError) -- falls back to compiling, silently:
# the cache only saves time. PROBETAG_HS_CACHE=0 turns it off.

_CACHE_FORMAT = b"probetag-hs-1\n"
_CACHE_KEEP = 16


def _cache_dir() -> Path | None:
    if os.environ.get("PROBETAG_HS_CACHE", "1") in ("0", "off", "no", ""):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):  # the XDG spec: relative paths are invalid, ignore them
        return None
    return Path(base) / "probetag" / "hyperscan"


def _hs_cache_load(key: str, mode: int) -> object | None:
    import hyperscan

    d = _cache_dir()
    if d is None:
        return None
    try:
        raw = (d / key).read_bytes()
        head, digest, blob = raw[:len(_CACHE_FORMAT)], raw[len(_CACHE_FORMAT):len(_CACHE_FORMAT) + 32], \
            raw[len(_CACHE_FORMAT) + 32:]
        if head != _CACHE_FORMAT or hashlib.sha256(blob).digest() != digest:
            return None
        db = hyperscan.loadb(blob, mode)
        # A deserialized database has no scratch space yet (the binding
        # allocates it in compile()).
        db.scratch = hyperscan.Scratch(db)
        return db
    except (OSError, ValueError, hyperscan.HyperscanError):
        return None


def _hs_cache_store(key: str, db: object) -> None:
    import hyperscan

    d = _cache_dir()
    if d is None:
        return
    tmp = None
    try:
        blob = hyperscan.dumpb(db)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(_CACHE_FORMAT + hashlib.sha256(blob).digest() + blob)
        os.replace(tmp, d / key)
        tmp = None
        files = sorted((p for p in d.iterdir() if not p.name.startswith(".")),
                       key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[_CACHE_KEEP:]:
            old.unlink(missing_ok=True)
    except (OSError, ValueError, hyperscan.HyperscanError):
        pass
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _drop_containing(literals: list[bytes]) -> list[bytes]:
    """Without literals that hold another literal of the list: bytes that
    hold one hold the other inside the same record or line, so the entries
    and lines hit stay the same (a hit is attributed to the entry it starts
    in, and the shorter one starts inside the longer). Of the built-in
    catalogue's ~1,430 strong literals ~600 go, and the chunk scan runs
    ~10 % faster. Needs pyahocorasick (a dependency) to find them in one
    pass per literal; without it the list stays as it is."""
    try:
        import ahocorasick
    except ImportError:  # pragma: no cover - a dependency: a broken install
        return literals
    if len(literals) < 2:
        return literals
    auto = ahocorasick.Automaton()
    for f in literals:
        auto.add_word(f.decode("latin-1"), len(f))
    auto.make_automaton()
    # (one holding an LF stays: explain attributes a hit to the line it
    # starts in, and the shorter literal may start on the next line)
    return [f for f in literals
            if b"\n" in f or not any(n < len(f) for _end, n in auto.iter(f.decode("latin-1")))]


def _drop_redundant(literals: Iterable[bytes]) -> list[bytes]:
    """Sorted, without literals that have another literal as a prefix: they
    add nothing (bytes containing one contain the other), and dropping them
    cuts the full catalogue's set by two thirds, and hyperscan's compile time
    with it."""
    keep: list[bytes] = []
    for f in sorted(literals):
        if keep and f.startswith(keep[-1]):
            continue
        keep.append(f)
    return keep
