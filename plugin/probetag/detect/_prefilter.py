"""Multi-literal search: every occurrence of a fixed set of byte strings.

Theory of operation
-------------------
* ``LiteralSet(patterns)`` compiles a list of byte literals once;
  ``find(data)`` returns every occurrence as a sorted list of
  ``(start, pattern_index)`` pairs, overlapping occurrences included. That
  one contract is what the line matcher (``_engine``) and the chunk
  prefilter (``Prefilter``) both build on.
* Three backends give the same answer (the tests cross-check them):

  - ``hyperscan`` (Intel's SIMD matcher) when importable. Patterns are
    compiled as regexes with every byte written ``\\xHH``: the binding's
    pure-literal mode stops at the first NUL, and probe bytes have many.
    Literals have a fixed length, so ``start = end - len``.
  - ``ahocorasick`` (pyahocorasick). The common wheel is built for ``str``
    keys, so bytes are mapped 1:1 to code points with latin-1.
  - ``re``: a pure-Python fallback. One alternation inside a look-ahead,
    longest literal first, finds the longest literal at each position; the
    literals that are prefixes of it and also start there are added from a
    precomputed table, which makes the result complete.
* ``Prefilter`` runs one ``LiteralSet`` over a whole chunk of packed msgpack
  entries. Strings inside msgpack are stored unescaped (raw UTF-8 or raw
  bytes), so a fragment of a logged probe line appears verbatim in the
  chunk. A record whose bytes contain no fragment cannot match and is never
  decoded; the prefilter may over-report (that costs one decode), it must
  never under-report for the shapes the engine recognises.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import Iterable, Sequence

__all__ = ["LiteralSet", "Prefilter", "available_backends"]


def available_backends() -> tuple[str, ...]:
    out = []
    try:
        import hyperscan  # noqa: F401
        out.append("hyperscan")
    except ImportError:  # pragma: no cover - depends on the machine
        pass
    try:
        import ahocorasick  # noqa: F401
        out.append("ahocorasick")
    except ImportError:  # pragma: no cover
        pass
    out.append("re")
    return tuple(out)


class LiteralSet:
    """Every occurrence of a set of byte literals; see the module docstring."""

    __slots__ = ("patterns", "backend", "_impl", "_lens", "_prefixes", "_index")

    def __init__(self, patterns: Sequence[bytes], backend: str | None = None) -> None:
        pats = [bytes(p) for p in patterns]
        if any(not p for p in pats):
            raise ValueError("empty literal")
        self.patterns = tuple(pats)
        self._lens = tuple(len(p) for p in pats)
        if backend is None:
            backend = available_backends()[0]
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
        import hyperscan

        exprs = [b"".join(b"\\x%02x" % c for c in p) for p in self.patterns]
        db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        db.compile(expressions=exprs, ids=list(range(len(exprs))), elements=len(exprs), flags=0)
        return db

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
        """All occurrences as sorted ``(start, pattern_index)`` pairs."""
        impl = self._impl
        if impl is None or not data:
            return []
        out: list[tuple[int, int]] = []
        if self.backend == "hyperscan":
            lens = self._lens
            append = out.append

            def on_match(pid: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
                append((to - lens[pid], pid))

            impl.scan(data, match_event_handler=on_match)  # type: ignore[attr-defined]
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

    def starts(self, data: bytes) -> list[int]:
        """Just the start offsets (sorted, possibly repeated): the chunk prefilter."""
        return [s for s, _ in self.find(data)]


class Prefilter:
    """One scan over a chunk's packed bytes -> indices of entries worth decoding.

    ``weak`` literals (the escaped forms of a bare CR: ``#015``) only matter
    next to a probe line of the same sender; ``classify()`` tells the entries
    hit by nothing else apart, so the stage can skip them when no probe
    context is live (a Windows forwarder ends every line with ``#015``)."""

    __slots__ = ("literals", "_weak")

    def __init__(self, fragments: Iterable[bytes], backend: str | None = None,
                 weak: Iterable[bytes] = ()) -> None:
        weak_set = set(f for f in weak if f)
        strong = _drop_redundant(set(f for f in fragments if f) - weak_set)
        weak_list = _drop_redundant(weak_set)
        self.literals = LiteralSet(strong + weak_list, backend)
        self._weak = frozenset(range(len(strong), len(strong) + len(weak_list)))

    def entries_hit(self, data: bytes, starts: Sequence[int]) -> list[int]:
        """Indices into ``starts`` (sorted entry start offsets, an end sentinel
        allowed) of entries that contain at least one fragment. A hit
        straddling two entries is attributed to the one it starts in
        (over-reporting is harmless)."""
        return self.classify(data, starts)[0]

    def classify(self, data: bytes, starts: Sequence[int]) -> tuple[list[int], set[int]]:
        """(every hit entry, the subset hit only by weak literals)."""
        hits = self.literals.find(data)
        if not hits:
            return [], set()
        out: list[int] = []
        strong: set[int] = set()
        weak = self._weak
        last = -1
        for off, pid in hits:
            i = bisect_right(starts, off) - 1
            if i < 0:
                continue
            if i != last:
                out.append(i)
                last = i
            if pid not in weak:
                strong.add(i)
        return out, set(out) - strong if weak else set()


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
