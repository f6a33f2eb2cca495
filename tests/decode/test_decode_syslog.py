"""parse_syslog_line / detect_file_format on real-looking rsyslog lines."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings, strategies as st

from probetag.decode import (FORMATS, FramingError, detect_file_format, parse_framing_error,
                             parse_syslog_line, split_tag)


def test_traditional_first_word_is_hostname():
    p = parse_syslog_line(b"Nov 27 10:00:00 GET / HTTP/1.0#015\n")
    assert (p.fmt, p.time, p.host, p.tag, p.msg) == (
        "traditional", "Nov 27 10:00:00", b"GET", b"/", b" HTTP/1.0#015")
    assert p.record["hostname"] == b"GET" and p.record["syslogtag"] == b"/"
    assert not p.lossy


def test_rfc3339_all_tag_binary_line_drops_template_space():
    p = parse_syslog_line(b"2026-11-27T13:26:30.754083+00:00 127.0.0.1 #026#003#001#000/#001 ")
    assert (p.fmt, p.host, p.tag, p.msg) == ("rfc3339", b"127.0.0.1", b"#026#003#001#000/#001", b"")


def test_colon_tag_space_is_ambiguous():
    p = parse_syslog_line(b"2026-11-27T13:26:33.617413+00:00 OPTIONS sip: nm SIP/2.0#015#012")
    assert (p.tag, p.msg, p.record["_spacing"]) == (b"sip:", b" nm SIP/2.0#015#012", "colon")


def test_empty_tag_lines():
    # '{' / '[' / invalid-PRI lines: the template added the space
    p = parse_syslog_line(b"2026-11-27T13:26:32.863550+00:00 localhost  {\"a\": 1}")
    assert (p.tag, p.msg, p.record["_spacing"]) == (b"", b"{\"a\": 1}", "lead")
    p = parse_syslog_line(b"2026-11-27T13:26:31.968800+00:00 localhost  foo bar baz")
    assert (p.tag, p.msg, p.record["_spacing"]) == (b"", b" foo bar baz", "empty-tag")
    p = parse_syslog_line(b"2026-11-27T13:26:31.968800+00:00 localhost  ")
    assert (p.tag, p.msg) == (b"", b"")


def test_tag_cut_at_510_bytes():
    body = b"\x80" * 600
    p = parse_syslog_line(b"2026-11-27T13:26:31+00:00 10.0.0.9 " + body[:510] + b" " + body[510:])
    assert len(p.tag) == 510 and p.msg == body[510:] and p.lossy
    assert p.record["_spacing"] == "cut"
    assert split_tag(body) == (body[:510], body[510:])


def test_rfc5424_invld_and_empty_records():
    p = parse_syslog_line(b"<invld>1 2026-11-27T13:26:31.356595+00:00 localhost - - - - <xml version=1.0>#015")
    assert (p.fmt, p.record["pri"], p.host, p.tag, p.msg) == (
        "rfc5424", b"invld", b"localhost", b"", b"<xml version=1.0>#015")
    assert p.lossy
    p = parse_syslog_line(b"<13>1 2026-11-27T13:26:30.904645+00:00 localhost - - - - ")
    assert (p.fmt, p.tag, p.msg) == ("rfc5424", b"", b"")
    # APP-NAME empty (two spaces) after rsyslog dropped a leading '1 '
    p = parse_syslog_line(b"<13>1 2026-11-27T13:27:51.968800+00:00 localhost  - - - foo bar baz")
    assert (p.record["app-name"], p.msg) == (b"", b"foo bar baz")


def test_json_line_with_raw_8bit_bytes():
    line = (b'{"timegenerated":"2026-11-27T13:26:30+00:00", "fromhost-ip":"127.0.0.1", '
            b'"hostname":"localhost", "syslogtag":"M\x80#000", "msg":"", "rawmsg":"M\x80#000\\/"}')
    p = parse_syslog_line(line)
    assert p.fmt == "json" and p.host == b"localhost" and p.tag == b"M\x80#000"
    assert p.record["rawmsg"] == b"M\x80#000/"
    assert p.time == "2026-11-27T13:26:30+00:00"


def test_raw_and_forced_formats():
    p = parse_syslog_line(b"GET / HTTP/1.0\r")
    assert (p.fmt, p.msg, p.record["message"]) == ("raw", b"GET / HTTP/1.0\r", b"GET / HTTP/1.0\r")
    assert parse_syslog_line(b"Nov 27 10:00:00 h x", "rfc5424").fmt == "raw"
    assert parse_syslog_line(b"{broken json", "auto").fmt == "raw"
    with pytest.raises(ValueError):
        parse_syslog_line(b"x", "xml")


def test_detect_file_format_majority():
    lines = [b"2026-11-27T13:26:30+00:00 localhost #015 "] * 5 + [b"garbage"] * 2
    assert detect_file_format(lines) == "rfc3339"
    assert detect_file_format([]) == "raw"
    assert detect_file_format([b"Nov 27 10:00:00 h x"] * 3) == "traditional"


def test_fromhost_template_lines():
    # %TIMESTAMP% %FROMHOST% %msg%: no HOSTNAME, no TAG; MSG as rsyslog kept it
    p = parse_syslog_line(b"Dec  5 17:13:45 127.0.0.1  HTTP/1.0#015", "fromhost")
    assert (p.fmt, p.host, p.tag, p.msg, p.lossy) == ("fromhost", b"127.0.0.1", b"", b" HTTP/1.0#015", True)
    assert p.record == {"timereported": b"Dec  5 17:13:45", "fromhost": b"127.0.0.1", "msg": b" HTTP/1.0#015",
                        "_format": "fromhost"}
    assert parse_syslog_line(b"2026-12-05T17:13:45+00:00 10.0.0.5 ", "fromhost").msg == b""
    # never chosen for a single line: it reads as traditional too
    assert parse_syslog_line(b"Dec  5 17:13:45 127.0.0.1  HTTP/1.0#015").fmt == "traditional"


def test_detect_fromhost_by_the_space_after_the_sender():
    apps = [b"Dec  5 17:13:%02d 10.0.0.%d  error: disk %d full" % (i, i, i) for i in range(20)]
    words = [b"Dec  5 17:14:%02d 10.0.0.%d Bad protocol version %d" % (i, i, i) for i in range(20)]
    assert detect_file_format(apps + words) == "fromhost"
    assert detect_file_format(apps[:9] + words) == "traditional"  # too few to tell
    traditional = [b"Dec  5 17:13:%02d web%d sshd[%d]: Accepted publickey" % (i, i, i) for i in range(40)]
    assert detect_file_format(traditional + apps[:5]) == "traditional"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(("auto", *FORMATS)))
def test_never_raises_on_bytes(data, fmt):
    p = parse_syslog_line(data, fmt)
    assert p.fmt in FORMATS


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_never_raises_after_a_timestamp(data):
    for prefix in (b"Nov 27 10:00:00 ", b"2026-11-27T10:00:00+00:00 ", b"<13>1 2026-11-27T10:00:00Z h "):
        p = parse_syslog_line(prefix + data)
        assert p.fmt in FORMATS


def test_framing_errors_from_rsyslog_internal_messages():
    # the exact texts rsyslogd 8.2302 printed for the fixtures' '0\x84...' and
    # '1 f...' style payloads (tests/decode/fixtures/capture.py run)
    e = parse_framing_error(
        b"2026-11-27T13:26:31+00:00 host rsyslogd: imtcp imtcp: Framing Error in received TCP message "
        b"from peer: (hostname) scanner.example, (ip) 192.0.2.9: delimiter is not SP but has ASCII "
        b"value -124. [v8.2302.0]")
    assert e == FramingError("delimiter", "scanner.example", "192.0.2.9", 0x84)
    e = parse_framing_error("imtcp imtcp: Framing Error in received TCP message from peer: (hostname) "
                            "localhost, (ip) localhost: invalid octet count 0. [v8.2302.0]")
    assert e == FramingError("zero-count", "localhost", "localhost", None)
    e = parse_framing_error(b"imtcp: Incomplete frame at end of stream in session 0x7f00 - ignoring "
                            b"extra data (a message may be lost).")
    assert e is not None and e.kind == "incomplete" and e.ip is None
    assert parse_framing_error(b"GET / HTTP/1.0#015") is None
    assert parse_framing_error(b"\xff Frame") is None


def _payload_text(record) -> bool:
    """A plain payload field holding text: then ``rebuild`` must return a
    line (its docstring: None only "when the record has no payload field")."""
    from probetag.decode import PAYLOAD_FIELDS, to_bytes

    return any(to_bytes(record[k]) is not None for k in PAYLOAD_FIELDS if k in record)


def _check_rebuilds(line: bytes) -> None:
    from probetag.decode import SHAPES, rebuild

    parsed = parse_syslog_line(line)
    rb = rebuild(parsed.record)
    if parsed.fmt != "json" or _payload_text(parsed.record):
        # Text formats always carry their message in a payload field.
        assert rb is not None, (line, parsed.record)
    # else: an application's JSON line may have nothing to rebuild (None).
    assert rb is None or rb.shape in SHAPES


@settings(max_examples=200, deadline=None)
@example(b'{"":""}')  # a JSON line with no payload field: nothing to rebuild
@example(b'{"msg":"x"}')
@given(st.binary(max_size=200))
def test_every_parsed_line_rebuilds(data):
    for prefix in (b"", b"Nov 27 10:00:00 h ", b"2026-11-27T10:00:00+00:00 10.0.0.1 ",
                   b"<13>1 2026-11-27T10:00:00Z h - - - - ", b'{"rawmsg":"'):
        _check_rebuilds(prefix + data)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(("", "a", "msg", "message", "log", "MESSAGE", "rawmsg", "hostname",
                                        "syslogtag", "app-name", "ident", "host", "appname", "source_ip")),
                       st.one_of(st.text(max_size=20), st.integers(), st.none(), st.booleans()), max_size=5))
def test_every_json_line_rebuilds_when_it_has_a_payload(record):
    import json

    _check_rebuilds(json.dumps(record).encode())


def test_json_line_without_payload_field_does_not_rebuild():
    from probetag.decode import rebuild

    for line in (b'{"":""}', b"{}", b'{"a": 1}', b'{"msg": 7}'):
        parsed = parse_syslog_line(line)
        assert parsed.fmt == "json" and rebuild(parsed.record) is None, line
    assert rebuild(parse_syslog_line(b'{"msg": ""}').record).line == b""


# -- strip_time: the parse does not depend on the timestamp -------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from probetag.decode import strip_time  # noqa: E402

_RFC3339_STAMPS = st.builds(
    lambda y, mo, d, h, mi, s, frac, tz: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}{tz}",
    st.integers(0, 9999), st.integers(0, 99), st.integers(0, 99), st.integers(0, 99), st.integers(0, 99),
    st.integers(0, 99), st.sampled_from(["", ".5", ".123456", ".000000001"]),
    st.sampled_from(["Z", "+00:00", "-05:30"]))
_TRAD_STAMPS = st.builds(lambda m, d, t: f"{m} {d:>2} {t}", st.sampled_from(["Nov", "Jan", "Xyz"]),
                         st.integers(0, 99), st.sampled_from(["00:00:00", "23:59:59", "99:99:99"]))
_RESTS = st.one_of(
    st.sampled_from(["10.0.0.1 GET / HTTP/1.0#015", "GET / HTTP/1.0#015", "host sshd[1]: ok", "h  x",
                     "h {\"a\": 1}", "h - x", "h :x", "h x\n", "h " + "t" * 600 + " m", "h #015", "h ",
                     "10.0.0.1 #026#003#000"]),
    st.text(alphabet=" abc:[]{}<>#015\t\r\x00\udcff\u00a0\x85", max_size=20))


def _parsed(line: str):
    got = parse_syslog_line(line.encode("utf-8", "surrogateescape"))
    record = {k: v for k, v in got.record.items() if k != "timereported"}
    return got.fmt, got.host, got.tag, got.msg, got.lossy, record


@settings(max_examples=300, deadline=None)
@given(st.one_of(_RFC3339_STAMPS, _TRAD_STAMPS), st.one_of(_RFC3339_STAMPS, _TRAD_STAMPS), _RESTS)
def test_strip_time_says_when_the_timestamp_does_not_matter(a: str, b: str, rest: str) -> None:
    line = f"{a} {rest}"
    got = strip_time(line)
    as_bytes = strip_time(line.encode("utf-8", "surrogateescape"))
    assert (got is None) == (as_bytes is None)  # the same verdict for str and bytes
    if got is None:
        return
    fmt, rest_text = got
    assert rest_text == rest and as_bytes == (fmt, rest.encode("utf-8", "surrogateescape"))
    assert _parsed(line)[0] == fmt
    other = f"{b} {rest}"
    if strip_time(other) is not None and strip_time(other)[0] == fmt:
        # Another timestamp of the same format: the very same record.
        assert _parsed(other) == _parsed(line)


def test_strip_time_needs_a_hostname_and_its_space() -> None:
    assert strip_time("Nov 27 10:00:00 host x") == ("traditional", "host x")
    assert strip_time(b"2026-11-27T10:00:00.5+01:00 h  x") == ("rfc3339", b"h  x")
    for line in ("Nov 27 10:00:00 host", "Nov 27 10:00:00  host x", "2026-11-27T10:00:00 h x",
                 "<13>1 2026-11-27T10:00:00Z h a - - - x", '{"msg": "x"}', "", 7, None):
        assert strip_time(line) is None, line
