"""Rebuilding a probe from the pieces syslog-ng cut it into.

Theory of operation
-------------------
* syslog-ng's ``network()`` source cuts a TCP stream at every NUL as well as
  every LF, drops empty frames and trailing CRs, and logs each piece as a
  message of its own (docs/collectors.md): nmap's ``SSLSessionReq`` is 25
  lines, most of them one or two bytes (``\\x16``, ``f``, ``\\x03\\x01``) that
  a dozen probes share and no line alone can name. The lines of one
  connection are logged together, from the same sender, in the order sent;
  the bytes after the payload's last NUL or LF only when the connection
  closes, up to ``CLOSE_WAIT`` seconds later.
* ``FragmentRuns.name`` takes a batch's syslog-ng lines (sender, time and
  payload, spacing aside) and, per sender, looks for *runs*: a line equal to
  the first piece of a payload as syslog-ng logs it
  (``Detector.syslog_ng_cores``), then that payload's other pieces, in order,
  each on a later line of the same sender within ``SAME_CONNECTION``
  seconds of the previous one (the last piece within ``CLOSE_WAIT``; a
  piece on the very next line of that sender within ``STALL``: a busy
  daemon stamps the later pieces of one read seconds after the first),
  stepping over at most ``SKIP`` (``SKIP_LAST`` before the last piece) lines
  of that sender that are not the next piece (another client's, or a benign
  line). The last piece can come later still: the daemon reads a
  connection's close and the next connections' data in no fixed order, so
  the pieces of the probes after it can come first. Once every whole run
  has its lines, a run that lacks only its last piece looks for it up to
  ``SKIP_LAST_FAR`` lines on, among the lines no run took. Only a *whole*
  payload counts, and it must be worth a name: two pieces or more whose
  bytes together are distinctive (``_engine.distinctive``), or binary
  pieces that are not (``DNSStatusRequestTCP``'s ``\x0c`` ``\x10``) on the
  sender's very next lines within ``SAME_CONNECTION``, nothing stepped
  over: one read of one connection, which no other client's lines
  interleave (a later close's last piece of the probe before would be a
  line between).
* Several payloads can fit the same lines: the one that covers the most
  lines wins; payloads that leave the same pieces (the same bytes sent
  under two names) are ranked by the catalogue's naming policy
  (``Signature.rank``); two different payloads covering the same lines
  name nothing. A run is not taken when one of its lines names, on its
  own, a probe the run's payload is not.
* Lines are claimed once; a run's lines are named with the payload and
  their piece index, and the correlator then treats them as distinctive
  matches (``via: reassembled``).
* No I/O; state lives in one call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ._catalogue import Signature
from ._engine import distinctive

__all__ = ["FragmentRuns", "SAME_CONNECTION", "CLOSE_WAIT"]

#: Seconds between two pieces of one connection (file timestamps are whole
#: seconds), and before the last piece (logged when the connection closes).
SAME_CONNECTION = 1.0
CLOSE_WAIT = 15.0
#: Seconds between two pieces when the second is the very next line of that
#: sender: a busy logger stamps a read's later pieces when it gets to them
#: (syslog-ng parses a read ten messages at a time), seconds after the first
#: ones, and nothing else of that sender came between.
STALL = CLOSE_WAIT
#: Lines of the same sender a run may step over between two pieces, and
#: before its last piece.
SKIP = 2
SKIP_LAST = 8
#: Lines of the same sender before the last piece, once the whole runs have
#: their lines (``FragmentRuns.name``'s second pass).
SKIP_LAST_FAR = 160


def _binary_piece(core: bytes) -> bool:
    """A piece with a control byte or one past ASCII: no log line's text."""
    return any(b < 0x20 or b >= 0x7F for b in core)


@dataclass(frozen=True, slots=True)
class RunLine:
    """One line as the pass reads it: time, sender, payload (spacing aside),
    and the probe ids it names on its own (its distinctive matches)."""

    t: float
    source: str | None
    core: bytes
    sure: frozenset[str]


class FragmentRuns:
    """Names syslog-ng lines by the whole payload a run of them rebuilds."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector
        # first piece -> [(signature, its pieces)], payloads of 2+ pieces
        self._by_first: dict[bytes, list[tuple[Signature, tuple[bytes, ...]]]] = {}
        #: payloads whose pieces together are not distinctive (``\x0c``
        #: ``\x10``): a run of them must be whole on consecutive lines
        self._tight: set[tuple[bytes, ...]] = set()
        for sig in detector.signatures:
            if sig.match != "payload" or sig.transport not in ("tcp", "any"):
                continue
            cores = detector.syslog_ng_cores(sig.id)
            if len(cores) < 2:
                continue
            if not distinctive(b"".join(cores)):
                if not all(_binary_piece(c) for c in cores):
                    continue
                self._tight.add(cores)
            self._by_first.setdefault(cores[0], []).append((sig, cores))

    def name(self, lines: Sequence[RunLine | None]) -> list[tuple[Signature, int] | None]:
        """Per line: (signature, piece index) for a line of a run, else None."""
        n = len(lines)
        out: list[tuple[Signature, int] | None] = [None] * n
        by_source: dict[str | None, list[int]] = {}
        for i, ln in enumerate(lines):
            if ln is not None:
                by_source.setdefault(ln.source, []).append(i)
        for skip_last in (SKIP_LAST, SKIP_LAST_FAR):
            for idx in by_source.values():
                for pos in range(len(idx)):
                    if out[idx[pos]] is None:
                        got = self._best(lines, idx, pos, out, skip_last)
                        if got is not None:
                            sig, taken = got
                            for k, j in enumerate(taken):
                                out[j] = (sig, k)
        return out

    def _best(self, lines: Sequence[RunLine | None], idx: list[int], pos: int,
              out: Sequence[Any], skip_last: int = SKIP_LAST) -> tuple[Signature, list[int]] | None:
        first = lines[idx[pos]]
        assert first is not None
        cands = self._by_first.get(first.core)
        if not cands:
            return None
        fits: list[tuple[int, Signature, tuple[bytes, ...], list[int]]] = []
        for sig, cores in cands:
            taken = self._follow(lines, idx, pos, cores, out, skip_last, tight=cores in self._tight)
            if taken is None:
                continue
            if any(lines[j].sure and sig.id not in lines[j].sure for j in taken):  # type: ignore[union-attr]
                continue  # a line names another probe on its own
            fits.append((len(taken), sig, cores, taken))
        if not fits:
            return None
        top = max(f[0] for f in fits)
        best = [f for f in fits if f[0] == top]
        if len({(f[2], tuple(f[3])) for f in best}) > 1:
            return None  # different payloads fit the same lines: no name
        _n, sig, _cores, taken = min(best, key=lambda f: f[1].rank)
        return sig, taken

    @staticmethod
    def _follow(lines: Sequence[RunLine | None], idx: list[int], pos: int, cores: tuple[bytes, ...],
                out: Sequence[Any], skip_last: int = SKIP_LAST, tight: bool = False) -> list[int] | None:
        """The lines (batch indices) that hold ``cores`` in order from
        ``idx[pos]`` on, or None. ``tight``: on the sender's very next
        lines, each within ``SAME_CONNECTION`` of the one before (one read
        of one connection), nothing stepped over."""
        taken = [idx[pos]]
        prev = lines[idx[pos]]
        assert prev is not None
        p = pos + 1
        last = len(cores) - 1
        for k in range(1, len(cores)):
            want = cores[k]
            limit = 0 if tight else skip_last if k == last else SKIP
            wait = CLOSE_WAIT if k == last and not tight else SAME_CONNECTION
            skipped = 0
            while True:
                if p >= len(idx):
                    return None
                j = idx[p]
                ln = lines[j]
                assert ln is not None
                if ln.t < prev.t - SAME_CONNECTION:
                    return None
                fits = out[j] is None and ln.core == want
                if ln.t - prev.t > wait and (tight or not (fits and not skipped and ln.t - prev.t <= STALL)):
                    return None
                p += 1
                if fits:
                    taken.append(j)
                    prev = ln
                    break
                skipped += 1
                if skipped > limit:
                    return None
        return taken
