"""``show_bytes``: a payload as Python shows it inside ``b'...'``, for the
probe map's ``payload``. Its fast form (the bytes' repr) must give what
the table gives, byte for byte, for any bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from probetag.detect import show_bytes


def _by_table(data: bytes) -> str:
    out = []
    for b in data:
        if b == 0x09:
            out.append("\\t")
        elif b == 0x0A:
            out.append("\\n")
        elif b == 0x0D:
            out.append("\\r")
        elif b == 0x5C:
            out.append("\\\\")
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append("\\x%02x" % b)
    return "".join(out)


@settings(max_examples=2000)
@given(st.binary(max_size=64))
def test_any_bytes_show_as_the_table_says(data: bytes) -> None:
    assert show_bytes(data) == _by_table(data)


def test_quotes_and_backslashes_are_shown_as_they_are() -> None:
    # a quote of either kind is no escape here (repr would escape one)
    assert show_bytes(b"it's \"x\"\r\n") == "it's \"x\"\\r\\n"
    assert show_bytes(b'say "hi"') == 'say "hi"'
    assert show_bytes(b"a\\b\x00\xff") == "a\\\\b\\x00\\xff"
    assert show_bytes(b"\x16\x03\x00\x00S") == "\\x16\\x03\\x00\\x00S"
