"""escape/unescape: the rsyslog dialects, the evidence rule, round trips."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings, strategies as st

from probetag.decode import DECODE_MIN, DIALECTS, escape, to_bytes, unescape, unescape_as


# ------------------------------------------------------------- forward ---

def test_rsyslog_escapes_control_bytes_only():
    # FIELD_GUIDE 2.1: 0x00-0x1F -> #ooo; DEL, 0x80-0xFF and '#' stay raw.
    assert escape(b"GET / HTTP/1.0\r") == b"GET / HTTP/1.0#015"
    assert escape(b"\x00\x09\x1b\x1f") == b"#000#011#033#037"
    assert escape(b"#\x7f\x80\xff") == b"#\x7f\x80\xff"


def test_cstyle_named_and_hex_escapes():
    # the observed rsyslog 8.2302 output: \x0E upper-case hex, named escapes
    assert escape(b"\x0e\x0f\x1b[0m\x7f", "cstyle") == b"\\x0E\\x0F\\e[0m\x7f"
    assert escape(b"\x00\x07\x08\x09\x0a\x0b\x0c\x0d", "cstyle") == b"\\0\\a\\b\\t\\n\\v\\f\\r"
    assert escape(b"\x1e\\", "cstyle") == b"\\x1E\\"


def test_backslash_octal_and_8bit():
    assert escape(b"\x16\x03", "backslash-octal") == b"\\026\\003"
    assert escape("é".encode(), "rsyslog-8bit") == b"#303#251"
    assert escape(b"\x01\xff", "rsyslog-8bit") == b"#001#377"


def test_unknown_dialect_is_a_value_error():
    with pytest.raises(ValueError, match="unknown escape dialect"):
        escape(b"x", "yaml")
    with pytest.raises(ValueError, match="unknown escape dialect"):
        unescape(b"#015", ("yaml",))


# ------------------------------------------------------------- reverse ---

def test_crlf_probe_line():
    u = unescape(b"GET / HTTP/1.0#015")
    assert (u.data, u.dialect, u.escapes) == (b"GET / HTTP/1.0\r", "rsyslog", 1)
    assert u.evidence >= 0.8


def test_digit_after_escape_is_literal_and_only_first_digit_0_to_3():
    assert unescape(b"#0009#000", assume_escaped=True).data == b"\x009\x00"
    # '#400' is not an escape (first digit 0-3 only), nor is the printable
    # range rsyslog never escapes ('#101' would be 'A')
    assert unescape(b"#400#001#002").data == b"#400\x01\x02"
    assert unescape(b"#101#001#002").data == b"#101\x01\x02"


def test_binary_run_scores_high():
    u = unescape(b"#026#003#001#000/#001#000#000+#003#003")
    assert u.data == b"\x16\x03\x01\x00/\x01\x00\x00+\x03\x03"
    assert u.evidence >= 0.9 and u.escapes == 9


def test_literal_hash_numbers_in_prose_stay_literal():
    for text in (b"app: issue #015 fixed in build #1234", b"lone #1234", b"see ticket #012, thanks",
                 b"#123#124 are printable", b"CR is #015 and LF is #012, TAB is #011 here"):
        u = unescape(text)
        assert u.data == text, text
        assert u.dialect is None and u.escapes == 0
        assert u.evidence < DECODE_MIN


def test_tabs_in_key_value_logs_decode_with_low_evidence():
    u = unescape(b"user=bob#011ip=10.0.0.1#011action=login")
    assert u.data == b"user=bob\tip=10.0.0.1\taction=login"
    assert u.dialect == "rsyslog"
    assert DECODE_MIN <= u.evidence <= 0.3


def test_cstyle_hex_vs_named():
    u = unescape(b"\\x0E\\x0F\\e[0m")
    assert (u.data, u.dialect) == (b"\x0e\x0f\x1b[0m", "cstyle")
    u = unescape(b"HELP\\r")
    assert (u.data, u.dialect) == (b"HELP\r", "cstyle")
    assert u.evidence >= 0.8


def test_windows_path_is_not_cstyle():
    u = unescape(b"opened C:\\temp\\new\\file.txt")
    assert u.data == b"opened C:\\temp\\new\\file.txt" and u.dialect is None


def test_backslash_octal_beats_cstyle_on_octal_runs():
    u = unescape(b"\\000\\001\\002")
    assert (u.data, u.dialect) == (b"\x00\x01\x02", "backslash-octal")


def test_8bit_utf8():
    u = unescape(b"caf#303#251")
    assert u.data == "café".encode() and u.evidence >= 0.9
    assert unescape(b"caf#303#251", DIALECTS).dialect == "rsyslog-8bit"
    assert unescape(b"caf#303#251", ("rsyslog",)).dialect == "rsyslog"


def test_one_dialect_per_line():
    # both '#015' and '\r' present: only the stronger dialect is undone
    u = unescape(b"#026#003 and \\r")
    assert u.dialect == "rsyslog" and u.data == b"\x16\x03 and \\r"


def test_replacement_characters_counted():
    u = unescape("GET / HTTP/1.0#015 \ufffd\ufffd".encode())
    assert u.replaced == 2
    assert unescape(b"plain").replaced == 0


def test_surrogate_escaped_str_gives_original_bytes():
    s = b"\x80\xff#015".decode("utf-8", "surrogateescape")
    u = unescape(s)
    assert u.data == b"\x80\xff\r"
    assert to_bytes("\ud800x") == "\ud800x".encode("utf-8", "surrogatepass")


def test_fast_path_and_unescape_as():
    u = unescape(b"no escapes here")
    assert (u.data, u.dialect, u.escapes, u.evidence) == (b"no escapes here", None, 0, 0.0)
    assert unescape_as(b"a#015", None) == b"a#015"
    assert unescape_as(b"a#015", "rsyslog") == b"a\r"


def test_assume_escaped_overrides_evidence():
    assert unescape(b"issue #015 fixed").data == b"issue #015 fixed"
    assert unescape(b"issue #015 fixed", assume_escaped=True).data == b"issue \r fixed"


# ------------------------------------------------------------ hypothesis ---

# Inputs whose escaped form is ambiguous by construction (the escape prefix
# followed by what reads as an escape) cannot round-trip; FIELD_GUIDE 2.1.
_AMBIGUOUS = {
    "rsyslog": re.compile(rb"#[0-3][0-7][0-7]"),
    "rsyslog-8bit": re.compile(rb"#[0-3][0-7][0-7]"),
    "backslash-octal": re.compile(rb"\\[0-3][0-7][0-7]"),
    "cstyle": re.compile(rb"\\([0abefnrtv]|x[0-9A-Fa-f]{2})"),
}
_bytes = st.binary(max_size=200) | st.lists(
    st.sampled_from([b"#", b"\\", b"0", b"1", b"7", b"x", b"E", b"r", b" ", b"\x00", b"\r", b"\xc3",
                     b"\xa9", b"\x1b", b"\x7f", b"n"]), max_size=60).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(_bytes, st.sampled_from(DIALECTS))
def test_round_trip(data, dialect):
    if _AMBIGUOUS[dialect].search(data):
        return
    esc = escape(data, dialect)
    assert unescape(esc, (dialect,), assume_escaped=True).data == data


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=100)), st.sets(st.sampled_from(DIALECTS), min_size=1))
def test_never_raises(data, dialects):
    u = unescape(data, tuple(sorted(dialects)))
    assert isinstance(u.data, bytes)
    assert 0.0 <= u.evidence <= 1.0
    if u.dialect is None:
        assert u.data == to_bytes(data)


def test_speed_is_bounded():
    # Not a benchmark: a guard against an accidental quadratic path.
    line = b"#026#003#001#000/#001#000#000+#003#003" * 5 + b"GET / HTTP/1.0#015"
    t0 = time.perf_counter()
    for _ in range(2000):
        unescape(line)
    assert time.perf_counter() - t0 < 2.0


def test_config_rejects_unknown_dialects():
    from probetag import ConfigError, load_config

    with pytest.raises(ConfigError, match="unknown escape dialect") as exc:
        load_config(text="detect:\n  escapes: [rsyslog, yaml]\n")
    assert "detect.escapes[1]" in str(exc.value)
    assert load_config(text="detect:\n  escapes: [rsyslog-8bit, cstyle]\n").detect.escapes == (
        "rsyslog-8bit", "cstyle")
