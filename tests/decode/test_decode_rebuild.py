"""rebuild(): every record shape, the HOSTNAME rule, bytes vs str values."""

from __future__ import annotations

import msgpack
from hypothesis import given, settings, strategies as st

from probetag.decode import SHAPES, Rebuilt, parse_syslog_line, rebuild


def _via_msgpack(record):
    """The record as the stage sees it: packed, then decoded with raw=False and
    surrogateescape (bin stays bytes)."""
    packed = msgpack.packb(record, use_bin_type=True, unicode_errors="surrogateescape")
    return msgpack.unpackb(packed, raw=False, unicode_errors="surrogateescape", strict_map_key=False)


def _all(rb: Rebuilt) -> list[bytes]:
    return [rb.line, *rb.alternatives]


# ------------------------------------------------------- HOSTNAME rule ---

def test_hostname_is_first_payload_word():
    rb = rebuild(parse_syslog_line(b"Nov 27 10:00:00 GET / HTTP/1.0#015").record)
    assert rb.line == b"GET / HTTP/1.0\r"
    assert b"/ HTTP/1.0\r" in rb.alternatives  # the other reading
    assert rb.shape == "file-line" and not rb.lossy and rb.dialect == "rsyslog"


def test_hostname_is_sender_address():
    rb = rebuild(parse_syslog_line(b"Nov 27 10:00:00 127.0.0.1 GET / HTTP/1.0#015").record)
    assert rb.line == b"GET / HTTP/1.0\r"
    assert b"127.0.0.1 GET / HTTP/1.0\r" in rb.alternatives


def test_hostname_certainly_payload_when_rest_would_have_been_hostname():
    # 'f  ' then 'oo bar baz': if 'oo' were the sender, rsyslog would have
    # taken 'bar' as HOSTNAME; so 'oo' is the payload's first word.
    rb = rebuild(parse_syslog_line(b"2026-11-27T13:26:31+00:00 oo bar baz").record)
    assert rb.line == b"oo bar baz" and b"bar baz" not in rb.alternatives


def test_hostname_equal_to_source_field_is_sender():
    rec = {"hostname": "web01", "syslogtag": "HELP#015", "msg": "", "fromhost-ip": "10.1.2.3",
           "fromhost": "web01"}
    rb = rebuild(rec)
    assert (rb.line, rb.source, rb.shape) == (b"HELP\r", "10.1.2.3", "rsyslog-json")


def test_hostname_differs_from_source_field_is_payload():
    rec = {"hostname": "GET", "syslogtag": "/", "msg": " HTTP/1.0#015", "fromhost-ip": "192.0.2.7"}
    rb = rebuild(rec)
    assert rb.line == b"GET / HTTP/1.0\r" and rb.source == "192.0.2.7"


def test_whole_line_hostname():
    rb = rebuild(parse_syslog_line(b"2026-11-27T13:26:30.603496+00:00 stats  ").record)
    assert rb.line == b"stats"


def test_all_tag_binary_line_with_trailing_space():
    rb = rebuild(parse_syslog_line(
        b"2026-11-27T13:26:30.754083+00:00 127.0.0.1 #026#003#001#000/#001#000#000+#003#003 ").record)
    assert rb.line == b"\x16\x03\x01\x00/\x01\x00\x00+\x03\x03"
    assert rb.evidence >= 0.9


# ------------------------------------------------------------ lossy shapes ---

def test_lines_that_lost_a_leading_1_space():
    # UDP '1 foo bar baz': rsyslog reads '1 ' as a version field and drops it
    rec = {"hostname": "localhost", "syslogtag": "", "msg": "foo bar baz", "fromhost-ip": "127.0.0.1"}
    assert rebuild(rec).line == b"1 foo bar baz"
    rb = rebuild(parse_syslog_line(b"<13>1 2026-11-27T13:27:51+00:00 localhost  - - - foo bar baz").record)
    assert rb.line == b"1 foo bar baz" and rb.lossy
    rb = rebuild(parse_syslog_line(b"2026-11-27T13:27:51+00:00 localhost  foo bar baz").record)
    assert b"1 foo bar baz" in _all(rb)


def test_rfc5424_empty_record_and_app_name_only():
    rb = rebuild(parse_syslog_line(b"<13>1 2026-11-27T13:26:30.904645+00:00 10.0.0.5 - - - - ").record)
    assert rb.line == b"" and rb.lossy and rb.shape == "file-line"
    rb = rebuild(parse_syslog_line(b"<13>1 2026-11-27T13:26:30+00:00 10.0.0.5 HELP#015 - - - ").record)
    assert rb.line == b"HELP\r" and rb.lossy


def test_rfc5424_invld_pri():
    rb = rebuild(parse_syslog_line(
        b"<invld>1 2026-11-27T13:26:31.356595+00:00 10.0.0.5 - - - - <xml version=1.0>#015").record)
    assert rb.line == b"<xml version=1.0>\r" and rb.lossy


def test_tag_cut_is_lossy():
    body = b"\x80" * 600
    rb = rebuild(parse_syslog_line(b"2026-11-27T13:26:31+00:00 10.0.0.9 " + body[:510] + b" " + body[510:]).record)
    assert rb.line == body and rb.lossy


def test_replacement_characters_make_it_lossy():
    rb = rebuild({"message": "GET / HTTP/1.0#015\ufffd"})
    assert rb.lossy and rb.line == "GET / HTTP/1.0\r\ufffd".encode()


# -------------------------------------------------------------- Fluentd ---

def test_fluentd_host_ident_message_str_and_bin():
    for rec in ({"host": "GET", "ident": "/", "message": "HTTP/1.0#015"},
                {"host": b"GET", "ident": b"/", "message": b"HTTP/1.0#015"}):
        rb = rebuild(_via_msgpack(rec))
        assert rb.line == b"GET / HTTP/1.0\r" and rb.shape == "fluentd-syslog"


def test_fluentd_binary_probe_in_ident():
    rb = rebuild(_via_msgpack({"host": b"10.0.0.5", "ident": b"#026#003#001\x80\x81", "message": b""}))
    assert rb.line == b"\x16\x03\x01\x80\x81"


def test_fluentd_tag_ending_by_colon_with_leading_nul():
    # force.tagEndingByColon: ident '-', data in message, a raw NUL first
    rb = rebuild(_via_msgpack({"host": b"localhost", "ident": b"-", "message": b"\x00HELP#015"}))
    assert rb.line == b"HELP\r"
    rb = rebuild(_via_msgpack({"host": "GET", "ident": "-", "message": "/ HTTP/1.0#015"}))
    assert rb.line == b"GET / HTTP/1.0\r"


def test_fluentd_pid_and_colon_separator():
    rb = rebuild({"host": "web01", "ident": "sshd", "pid": "42", "message": "Accepted key"})
    assert rb.line == b"sshd[42]: Accepted key"
    rb = rebuild({"host": "web01", "ident": "app", "message": "issue #015 fixed"})
    assert b"app: issue #015 fixed" in _all(rb)
    assert rb.dialect is None  # prose kept literal


def test_fluentd_in_tail_surrogates_and_invalid_utf8():
    raw = b"GET / HTTP/1.0\xff#015"
    rec = {"host": "10.0.0.1", "ident": raw.split(b" ")[0].decode("utf-8", "surrogateescape"),
           "message": raw.split(b" ", 1)[1].decode("utf-8", "surrogateescape")}
    rb = rebuild(rec)
    assert rb.line == b"GET / HTTP/1.0\xff\r"


# ------------------------------------------------------ other shapes ---

def test_rawmsg_is_exact():
    rb = rebuild({"rawmsg": "OPTIONS sip:nm SIP/2.0#015#012Via: x", "hostname": "OPTIONS",
                  "syslogtag": "sip:", "msg": "nm SIP/2.0#015#012Via: x", "fromhost-ip": "127.0.0.1"})
    assert rb.line == b"OPTIONS sip:nm SIP/2.0\r\nVia: x"
    assert (rb.shape, rb.source, rb.alternatives) == ("rsyslog-rawmsg", "127.0.0.1", ())


def test_vector_syslog_shape():
    rb = rebuild({"hostname": "GET", "appname": "/", "message": "HTTP/1.0#015", "source_ip": "10.9.9.9"})
    assert rb.shape == "vector-syslog" and rb.source == "10.9.9.9"
    assert b"GET / HTTP/1.0\r" in _all(rb)


def test_file_line_in_message_field():
    rb = rebuild({"message": b"2026-11-27T13:26:30.000876+00:00 GET / HTTP/1.0#015"})
    assert (rb.line, rb.shape) == (b"GET / HTTP/1.0\r", "file-line")
    rb = rebuild({"log": '{"fromhost-ip":"10.0.0.8","rawmsg":"HELP#015"}'})
    assert (rb.line, rb.shape, rb.source) == (b"HELP\r", "file-line", "10.0.0.8")


def test_plain_message_and_configured_fields():
    assert rebuild({"MESSAGE": "stats#015"}).line == b"stats\r"
    rb = rebuild({"payload": "x#015", "message": "other"}, fields=("payload",))
    assert rb.line == b"x\r" and rb.shape == "message"
    rb = rebuild({"a": "GET", "b": "/ HTTP/1.0#015"}, fields=("a", "b"))
    assert rb.line == b"GET / HTTP/1.0\r"
    rb = rebuild({"message": "x", "peer_addr": "10.1.1.1"}, source_fields=("peer_addr",))
    assert rb.source == "10.1.1.1"


def test_no_payload_field():
    assert rebuild({"level": "info", "count": 3}) is None
    assert rebuild({"message": 42}) is None
    assert rebuild([1, 2]) is None  # type: ignore[arg-type]


def test_cstyle_record():
    rb = rebuild({"rawmsg": "\\x0E\\x0F\\e[0m"}, dialects=("rsyslog", "cstyle"))
    assert rb.line == b"\x0e\x0f\x1b[0m" and rb.dialect == "cstyle"


def test_8bit_record():
    rb = rebuild({"rawmsg": "GET /caf#303#251 HTTP/1.0#015"})
    assert rb.line == "GET /café HTTP/1.0\r".encode()


def test_tabs_decoded_low_evidence_with_literal_alternative():
    rb = rebuild({"rawmsg": "app: user=bob#011ip=10.0.0.1"})
    assert rb.line == b"app: user=bob\tip=10.0.0.1" and rb.evidence <= 0.3
    assert b"app: user=bob#011ip=10.0.0.1" in rb.alternatives


def test_literal_prose_with_decoded_alternative():
    rb = rebuild({"rawmsg": "app: issue #015 fixed in build #1234"})
    assert rb.line == b"app: issue #015 fixed in build #1234" and rb.dialect is None
    assert b"app: issue \r fixed in build #1234" in rb.alternatives


_val = st.one_of(st.text(max_size=40), st.binary(max_size=40), st.integers(), st.none(),
                 st.lists(st.integers(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["message", "msg", "log", "rawmsg", "host", "ident", "pid",
                                        "hostname", "syslogtag", "app-name", "appname", "fromhost-ip",
                                        "source_ip", "_spacing", "_format", "procid"]), _val, max_size=6))
def test_never_raises_on_arbitrary_records(rec):
    rb = rebuild(rec)
    if rb is not None:
        assert rb.shape in SHAPES
        assert isinstance(rb.line, bytes) and all(isinstance(a, bytes) for a in rb.alternatives)


def test_space_after_colon_tag():
    # the template prints 'sip:' + ' ' + 'nm ...': a probe's TAG (payload
    # HOSTNAME) drops it, an application's 'app: text' keeps it
    rb = rebuild(parse_syslog_line(b"2026-11-27T13:26:33+00:00 OPTIONS sip: nm SIP/2.0#015#012").record)
    assert rb.line == b"OPTIONS sip:nm SIP/2.0\r\n"
    assert b"OPTIONS sip: nm SIP/2.0\r\n" in rb.alternatives
    rb = rebuild(parse_syslog_line(b"2026-11-27T13:26:33+00:00 10.0.0.1 app: started").record)
    assert rb.line == b"app: started" and b"app:started" in rb.alternatives
    # binary right after the space: the template's (nmap's SNMPv3 and NotesRPC
    # probes in tests/fixtures/rsyslog); text after a binary TAG: the payload's
    # (TerminalServerCookie's 'Cookie: mstshash=')
    rb = rebuild(parse_syslog_line(b"2026-11-27T13:26:33+00:00 10.0.0.1 0: #002#001#003").record)
    assert rb.line == b"0:\x02\x01\x03"
    rb = rebuild(parse_syslog_line(b"2026-11-27T13:26:33+00:00 10.0.0.1 #003\xe0Cookie: mstshash=x").record)
    assert rb.line == b"\x03\xe0Cookie: mstshash=x"
    rb = rebuild(parse_syslog_line(b"2026-11-27T13:26:33+00:00 10.0.0.1 #026\x80: _x").record)
    assert rb.line == b"\x16\x80:_x"


def test_vector_syslog_without_appname():
    # Vector adds 'appname' only when it found one
    rb = rebuild({"hostname": "localhost", "host": "localhost", "message": "#026#003#001",
                  "source_ip": "203.0.113.4", "facility": "user"})
    assert (rb.shape, rb.line, rb.source) == ("vector-syslog", b"\x16\x03\x01", "203.0.113.4")


def test_configured_fields_that_form_a_known_shape():
    rec = {"h": "x", "host": "GET", "ident": "/", "message": "HTTP/1.0#015", "log": "other"}
    rb = rebuild(rec, fields=("host", "ident", "message"))
    assert (rb.line, rb.shape) == (b"GET / HTTP/1.0\r", "fluentd-syslog")


def test_dns_name_hostname_with_a_different_source_ip():
    # rsyslog with DNS lookups on: HOSTNAME is the sender's resolved name
    rec = {"hostname": "scanner.example.net", "syslogtag": "HELP#015", "msg": "",
           "fromhost-ip": "198.51.100.7"}
    rb = rebuild(rec)
    assert rb.line == b"HELP\r" and b"scanner.example.net HELP\r" in rb.alternatives
    rec = {"hostname": "SSH-2.0-OpenSSH_9.2p1", "syslogtag": "Debian-2#015", "msg": "",
           "fromhost-ip": "198.51.100.7"}
    assert rebuild(rec).line == b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r"


def test_bytes_keys():
    rb = rebuild({b"host": b"GET", b"ident": b"/", b"message": b"HTTP/1.0#015", 7: "x"})
    assert rb.line == b"GET / HTTP/1.0\r" and rb.shape == "fluentd-syslog"


def test_fluentd_ident_cut_by_rsyslog_forwarding():
    # RSYSLOG_ForwardFormat prints %syslogtag:1:32%: a 32-byte ident with an
    # empty message may be the front of a longer binary line
    rb = rebuild({"host": "10.0.0.3", "ident": "#026#003#001#000#000#000#000#000", "message": ""})
    assert rb.lossy and rb.line == b"\x16\x03\x01\x00\x00\x00\x00\x00"
    assert not rebuild({"host": "10.0.0.3", "ident": "#026#003", "message": ""}).lossy


def test_application_json_in_message_is_the_payload():
    text = '{"time":"2026-11-27T10:00:05Z","level":"warn","msg":"HELP requested by x"}'
    rb = rebuild({"message": text})
    assert (rb.line, rb.shape, rb.lossy) == (text.encode(), "message", False)


def test_rsyslog_json_line_in_message_uses_its_own_sender():
    line = ('{"fromhost-ip":"198.51.100.9","hostname":"198.51.100.9","syslogtag":"HELP#015",'
            '"msg":""}')
    rb = rebuild({"message": line})
    assert (rb.line, rb.source, rb.shape, rb.alternatives) == (b"HELP\r", "198.51.100.9", "file-line", ())


def test_file_line_sender_is_the_hostname_when_it_is_not_a_payload_word():
    ip = rebuild(parse_syslog_line(b"Nov 27 13:46:14 127.0.0.1 #015 ", "traditional").record)
    assert ip is not None and ip.source == "127.0.0.1" and ip.line == b"\r"
    word = rebuild(parse_syslog_line(b"Nov 27 13:46:19 GET / HTTP/1.0#015", "traditional").record)
    assert word is not None and word.source is None and word.line == b"GET / HTTP/1.0\r"
    # a sender field still wins over the HOSTNAME
    rec = dict(parse_syslog_line(b"Nov 27 13:46:14 10.0.0.1 #015 ", "traditional").record)
    rec["fromhost-ip"] = "192.0.2.1"
    assert rebuild(rec).source == "192.0.2.1"


def test_fluentd_separator_may_have_swallowed_payload_bytes():
    # Fluentd's ``(?:[^:]*:)? *`` ate ':' (NotesRPC) or ' \x00:' (oracle-tns)
    notes = rebuild({"host": b"127.0.0.1", "ident": b"", "message": b"#000#000#000/#000#000"})
    assert notes.lossy and notes.source == "127.0.0.1"
    text = rebuild({"host": "web01", "ident": "sshd", "pid": "42", "message": "Accepted publickey"})
    assert not text.lossy and text.source == "web01"
    # a Windows forwarder's CRLF line had its ordinary separator: not lossy
    win = rebuild({"host": "WIN-FS01", "ident": "EventLog", "message": "service started#015"})
    assert not win.lossy


def test_colon_tag_nul_names_the_hostname_as_sender():
    # force.tagEndingByColon: TAG '-', MSG starting with rsyslog's raw NUL
    # when HOSTNAME is the sender (FIELD_GUIDE 4)
    rb = rebuild(parse_syslog_line(b"Nov 27 14:05:52 127.0.0.1 - \x00#015", "traditional").record)
    assert rb is not None and rb.line == b"\r" and rb.source == "127.0.0.1"


def test_fluent_bit_rfc5424_record_reads_as_rsyslog_rfc5424():
    # Fluent Bit's stock syslog-rfc5424 parser behind an rsyslog relay
    # (RSYSLOG_SyslogProtocol23Format): ident is APP-NAME, message is MSG
    # with its first space; the rest of the TAG is gone (lossy)
    rec = {"pri": "13", "time": "2026-12-05T17:15:25.332830+00:00", "host": "127.0.0.1", "ident": "Via",
           "pid": "-", "msgid": "-", "extradata": "-", "message": " SIP/2.0/TCP nm;branch=foo#015"}
    rb = rebuild(_via_msgpack(rec))
    assert rb.lossy and rb.shape == "fluentd-syslog" and rb.source == "127.0.0.1"
    assert rb.line == b"Via SIP/2.0/TCP nm;branch=foo\r"
    # the same fields without msgid are Fluentd's RFC 3164 reading, not lossy
    del rec["msgid"]
    assert not rebuild(_via_msgpack(rec)).lossy


def test_vector_appname_cut_at_32_bytes_before_a_message_is_lossy():
    # rsyslog's forwarding template prints %syslogtag:1:32%: the rest of a
    # binary TAG (``...Cookie:``) is gone even though MSG follows
    rec = {"message": "mstshash=nmap#015", "hostname": "127.0.0.1", "source_ip": "127.0.0.1",
           "appname": "#003#000#000*%\ufffd#000#000#000#000#000Coo"}
    assert rebuild(rec).lossy
    rec["appname"] = "sshd"
    assert not rebuild(rec).lossy


def test_a_forwarded_line_kept_whole_in_message_is_read_as_a_file_line():
    # Vector's parse_syslog fails on rsyslog's <invld> PRI and keeps the
    # whole RSYSLOG_TraditionalForwardFormat line in message
    rb = rebuild({"message": "<invld>Dec  5 17:16:07 127.0.0.1  < NTP/1.2 >", "host": "127.0.0.1",
                  "source_ip": "127.0.0.1", "source_type": "syslog"})
    assert rb.line == b"< NTP/1.2 >" and rb.shape == "file-line"


def test_vector_message_after_a_colon_only_tag():
    rb = rebuild({"message": "#000#000#000/#000", "hostname": "127.0.0.1", "source_ip": "127.0.0.1",
                  "facility": "user"})
    assert rb.line == b"\x00\x00\x00/\x00" and b":\x00\x00\x00/\x00" in rb.alternatives


def test_fromhost_ip_template_line_with_the_sender_twice():
    # %TIMESTAMP% %FROMHOST-IP% %HOSTNAME% %syslogtag%%msg%: the address
    # again is the HOSTNAME, the rest the line; nothing after it is an empty
    # message (a frame that was only a NUL)
    rb = rebuild(parse_syslog_line(b"Dec  5 17:14:05 127.0.0.1 127.0.0.1 #002").record)
    assert (rb.line, rb.source) == (b"\x02", "127.0.0.1")
    rb = rebuild(parse_syslog_line(b"Dec  5 17:17:23 127.0.0.1 127.0.0.1 ").record)
    assert (rb.line, rb.source) == (b"", "127.0.0.1") and b"127.0.0.1" in rb.alternatives
