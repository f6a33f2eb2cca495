"""Property tests: rsyslog's RFC 3164 split and file template, modelled from
FIELD_GUIDE 3 (and checked against real output in test_decode_golden.py),
applied to random payload lines; rebuild() must recover every payload among
its readings, from the file line and from the JSON properties."""

from __future__ import annotations

import re

from hypothesis import assume, given, settings, strategies as st

from probetag.decode import escape, parse_syslog_line, rebuild

SENDER = b"192.0.2.10"
_HOSTWORD = re.compile(rb"[A-Za-z0-9._-]*[A-Za-z0-9]")


def rsyslog_split(payload: bytes) -> tuple[bytes, bytes, bytes]:
    """(HOSTNAME, TAG, MSG) as pmrfc3164 makes them (FIELD_GUIDE 3.3, 3.4)."""
    esc = escape(payload)
    sp = esc.find(b" ")
    word = esc if sp < 0 else esc[:sp]
    if word and _HOSTWORD.fullmatch(word):
        host, rest = word, (b"" if sp < 0 else esc[sp + 1:])
    else:
        host, rest = SENDER, esc
    if not rest or rest[:1] in (b" ", b"{", b"["):
        return host, b"", rest
    m = re.search(rb"[ :]", rest)
    if m is None:
        return host, rest, b""
    end = m.end() if m.group() == b":" else m.start()
    return host, rest[:end], rest[end:]


def file_line(host: bytes, tag: bytes, msg: bytes) -> bytes:
    # RSYSLOG_FileFormat: ... HOSTNAME SP TAG msg:::sp-if-no-1st-sp msg
    return (b"2026-11-27T10:00:00.000001+00:00 " + host + b" " + tag
            + (b"" if msg.startswith(b" ") else b" ") + msg)


_ALPHABET = (list(b"abcXYZ019 :[{/-._=") + [0x00, 0x01, 0x09, 0x0D, 0x1B, 0x7F, 0x80, 0xC3, 0xA9, 0xFF])
payloads = st.lists(st.sampled_from(_ALPHABET), min_size=1, max_size=60).map(bytes)


def _usable(p: bytes) -> bool:
    # Outside the model: an empty message, a trailing NUL (removed before
    # parsing), '1 ' (version field), '<' (PRI). A trailing space is lost
    # for good: after a HOSTNAME word rsyslog drops it, and a file template
    # prints TAG+' '+'' and TAG+''+' ' alike.
    return bool(p.strip()) and not p.endswith((b"\x00", b" ")) and not p.startswith((b"1 ", b"<"))


@settings(max_examples=400, deadline=None)
@given(payloads)
def test_file_line_rebuilds_payload(payload):
    assume(_usable(payload))
    host, tag, msg = rsyslog_split(payload)
    line = file_line(host, tag, msg)
    rb = rebuild(parse_syslog_line(line).record)
    assert payload in (rb.line, *rb.alternatives), (line, rb)


@settings(max_examples=400, deadline=None)
@given(payloads)
def test_json_properties_rebuild_payload(payload):
    assume(_usable(payload))
    host, tag, msg = rsyslog_split(payload)
    rec = {"hostname": host.decode("utf-8", "surrogateescape"),
           "syslogtag": tag.decode("utf-8", "surrogateescape"),
           "msg": msg.decode("utf-8", "surrogateescape"), "fromhost-ip": SENDER.decode()}
    rb = rebuild(rec)
    assert payload in (rb.line, *rb.alternatives), (rec, rb)
    if not re.fullmatch(rb"(?:[A-Za-z0-9-]+\.)+[A-Za-z][A-Za-z0-9-]*", host):
        # exact properties and a known sender: no guessing left
        assert rb.line == payload or rb.evidence < 0.5, (rec, rb)
