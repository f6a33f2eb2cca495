"""``_wordy`` (is a CR-escape line's MSG text?) skips its pattern when the
letters and digits outside every possible escape are enough: the answer must
be the one the pattern gives."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from probetag._config import load_config
from probetag._explain_scan import _WORDS, Explainer, _wordy

ESCAPES = Explainer(load_config(None), "rfc3339")._weak_lits


def _reference(msg: bytes, escapes: tuple[bytes, ...]) -> bool:
    pattern = re.compile(b"|".join(re.escape(e) for e in sorted(set(escapes), key=len, reverse=True)))
    rest = pattern.sub(b" ", msg)
    return sum(1 for c in rest if chr(c).isascii() and chr(c).isalnum()) >= _WORDS


PIECES = st.sampled_from([*ESCAPES, b"#", b"\\", b"x", b"7", b" ", b"ab", b"#01", b"\\x1", b"\xff", b"\x00"])


@settings(max_examples=400, deadline=None)
@given(st.lists(PIECES, max_size=24))
def test_wordy_is_the_patterns_answer(pieces: list[bytes]) -> None:
    msg = b"".join(pieces)
    assert _wordy(msg, ESCAPES) is _reference(msg, ESCAPES)


def test_wordy_examples() -> None:
    assert ESCAPES  # the CR escapes are the context marker's literals
    assert _wordy(b" service started on port 8080#015", ESCAPES)
    assert not _wordy(b" #015#015#015#015", ESCAPES)  # escapes' own digits are not words
    assert not _wordy(b" ab#015cd#015", ESCAPES)
    assert _wordy(b" abcd#015efgh#015", ESCAPES)
