"""``probetag exec-filter`` as a subprocess, fed exactly what Fluentd's
out_exec_filter writes (``<inject>`` tag/time keys, then the json or msgpack
formatter)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time

import msgpack
import pytest

PROBE = "GET / HTTP/1.0#015#012#015#012"
CMD = [sys.executable, "-m", "probetag", "exec-filter"]


def yajl(record):
    # Fluentd's formatter_json: Yajl.dump(record) + "\n" (no spaces)
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def jlines(out):
    """The JSON records of exec-filter's output (blank padding lines skipped)."""
    return [json.loads(l) for l in out.splitlines() if l.strip()]


def run(args, data, timeout=30):
    p = subprocess.run(CMD + args, input=data, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr.decode()


def records_in():
    return [
        {"host": "web1", "ident": "sshd", "message": "Accepted publickey for root",
         "tag": "syslog.auth", "time": 1795773600},
        {"message": PROBE, "source_address": "203.0.113.7", "tag": "syslog.daemon", "time": 1795773601},
        {"host": "web1", "ident": "cron", "message": "job done", "tag": "syslog.cron", "time": 1795773602},
    ]


def test_json_inject_round_trip_and_bad_lines():
    data = b"".join(yajl(r) for r in records_in()[:2]) + b"{broken\n[1,2]\n" + yajl(records_in()[2])
    rc, out, err = run([], data)
    assert rc == 0, err
    lines = jlines(out)
    assert [l["message"] for l in lines] == [r["message"] for r in records_in()]
    assert lines[0] == records_in()[0]          # untouched: no field added
    assert lines[2] == records_in()[2]
    assert lines[1]["probe"]["scanner"] == "nmap"
    assert lines[1]["tag"] == "syslog.daemon" and lines[1]["time"] == 1795773601  # extract reads these
    assert "event=bad_input_rejected" in err and "rejected=2" in err


def test_float_and_string_time_pass_through_untouched():
    recs = [{"message": "a", "tag": "t", "time": 1795773600.123456},
            {"message": "b", "tag": "t", "time": "2026-11-27T10:00:00+00:00"},
            {"message": "c", "tag": "t", "time": "not a time"}]
    rc, out, err = run([], b"".join(yajl(r) for r in recs))
    assert rc == 0, err
    assert jlines(out) == recs


def test_no_inject_no_tag_added_and_custom_keys():
    recs = [{"message": PROBE, "ts": 1795773600}, {"message": "plain"}]
    rc, out, err = run(["--time-key", "ts"], b"".join(yajl(r) for r in recs))
    assert rc == 0, err
    lines = jlines(out)
    assert "tag" not in lines[0] and "probe" in lines[0] and lines[0]["ts"] == 1795773600
    assert lines[1] == {"message": "plain"}
    recs = [{"message": PROBE, "@tag": "a.b"}]
    rc, out, err = run(["--tag-key", "@tag"], b"".join(yajl(r) for r in recs))
    assert jlines(out)[0]["@tag"] == "a.b"


def test_msgpack_stream_with_bin_values():
    # Ruby msgpack packs ASCII-8BIT strings (in_tail values) as bin
    recs = [{"message": PROBE.encode(), "tag": "syslog.daemon", "time": 1795773600.5},
            {"message": b"GET /\xff", "tag": "syslog.daemon", "time": 1795773601.0},
            {"message": "ok", "tag": "x", "time": 1795773602}]
    data = b"".join(msgpack.packb(r, use_bin_type=True) for r in recs)
    rc, out, err = run(["--in-format", "msgpack"], data)
    assert rc == 0, err
    got = list(msgpack.Unpacker(__import__("io").BytesIO(out), raw=False, strict_map_key=False))
    assert [g["message"] for g in got] == [PROBE.encode(), b"GET /\xff", "ok"]  # bin stays bin
    assert got[0]["probe"]["name"] and got[0]["time"] == 1795773600.5
    assert "probe" not in got[1] and "probe" not in got[2]
    # json out from msgpack in: bytes become JSON strings, the bytes that are
    # not UTF-8 written as they are (not as \xHH text)
    rc, out, err = run(["--in-format", "msgpack", "--out-format", "json"], data)
    assert b'"message":"GET /\xff"' in out
    lines = [json.loads(l.decode("utf-8", "surrogateescape")) for l in out.splitlines() if l.strip()]
    assert lines[1]["message"] == "GET /\udcff" and lines[2]["message"] == "ok"


def test_msgpack_non_map_rejected_and_broken_stream_exits_1():
    data = msgpack.packb({"message": "a"}) + msgpack.packb([1, 2]) + msgpack.packb({"message": "b"})
    rc, out, err = run(["--in-format", "msgpack"], data + b"\xc1")  # 0xc1: never used in msgpack
    assert rc == 1 and "event=input_undecodable" in err
    assert [r["message"] for r in msgpack.Unpacker(__import__("io").BytesIO(out), raw=False)] == ["a", "b"]
    rc, out, err = run(["--in-format", "msgpack"], data + msgpack.packb({"message": "c"})[:-1])
    assert rc == 0 and "rejected=2" in err


def test_msgpack_map_with_an_array_key_is_a_broken_stream_not_a_traceback():
    # {{[...]: ...}: ...}: well-framed, but no Python dict holds such a key
    # (found by the exec_filter fuzz target: TypeError out of feed()).
    bad = b"\x81\x81\x91\x01\x01\x01"
    rc, out, err = run(["--in-format", "msgpack"], msgpack.packb({"message": "a"}) + bad)
    assert rc == 1 and "event=input_undecodable" in err and "Traceback" not in err
    assert [r["message"] for r in msgpack.Unpacker(__import__("io").BytesIO(out), raw=False)] == ["a"]


def test_rules_from_config_retag_and_drop(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("actions:\n  rules:\n"
                   "    - {action: drop, scanner: [nmap], probe: [NoSuchProbe]}\n"
                   "    - {action: retag, scanner: [nmap], tag: 'security.${scanner}.${tag}'}\n")
    rc, out, err = run(["-c", str(cfg)], b"".join(yajl(r) for r in records_in()))
    assert rc == 0, err
    lines = jlines(out)
    assert lines[1]["tag"] == "security.nmap.syslog.daemon"
    assert lines[0]["tag"] == "syslog.auth"
    cfg.write_text("actions:\n  rules:\n    - {action: drop, scanner: [nmap]}\n")
    rc, out, err = run(["-c", str(cfg)], b"".join(yajl(r) for r in records_in()))
    assert [l["message"] for l in jlines(out)] == ["Accepted publickey for root", "job done"]
    assert "dropped=1" in err


def test_bad_config_exit_2(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("actions:\n  nope: 1\n")
    rc, _, err = run(["-c", str(cfg)], b"")
    assert rc == 2 and "nope" in err


def test_partial_batch_flushed_while_stdin_stays_open():
    p = subprocess.Popen(CMD, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        got = b""
        for i in range(3):  # three separate records, stdin never closed
            p.stdin.write(yajl({"message": PROBE if i == 1 else f"m{i}", "tag": "t", "time": 1795773600}))
            p.stdin.flush()
            deadline = time.monotonic() + 10
            while len(jlines(got)) < i + 1 and time.monotonic() < deadline:
                r, _, _ = select.select([p.stdout], [], [], 0.5)
                if r:
                    got += os.read(p.stdout.fileno(), 65536)
            assert len(jlines(got)) == i + 1, f"record {i} not flushed: {got!r}"
        lines = jlines(got)
        assert "probe" in lines[1] and "probe" not in lines[0]
    finally:
        p.stdin.close()
        assert p.wait(10) == 0
        p.stdout.close()
        p.stderr.close()


def test_many_records_batched_in_order():
    recs = [{"message": PROBE if i % 7 == 0 else f"line {i}", "tag": f"t{i % 3}", "time": 1795773600 + i}
            for i in range(5000)]
    rc, out, err = run([], b"".join(yajl(r) for r in recs), timeout=60)
    assert rc == 0, err
    lines = jlines(out)
    assert [l["time"] for l in lines] == [r["time"] for r in recs]
    assert sum("probe" in l for l in lines) == len(range(0, 5000, 7))


def test_scan_summary_at_end_of_input(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("actions:\n  summaries: true\n  summary_tag: security.scan_summary\n")
    now = int(time.time())  # event times of now: the scan is still open at EOF
    recs = [{"message": PROBE, "source_address": "203.0.113.9", "tag": "syslog.daemon", "time": now},
            {"message": "plain", "source_address": "203.0.113.9", "tag": "syslog.daemon", "time": now}]
    rc, out, err = run(["-c", str(cfg)], b"".join(yajl(r) for r in recs))
    assert rc == 0, err
    lines = jlines(out)
    assert [l.get("message") for l in lines[:2]] == [PROBE, "plain"]
    (summary,) = lines[2:]
    assert summary["tag"] == "security.scan_summary"
    assert summary["probe_summary"]["source"] == "203.0.113.9"


# -- bytes kept, and nothing held back ----------------------------------------

# Raw bytes that are not UTF-8, as Fluentd's JSON formatter writes in_tail's
# binary strings (and msgpack str/bin from Ruby).
BAD_UTF8 = [
    b'{"host":"web1","ident":"app","message":"caf\xe9 \xa4\xff end","tag":"syslog.user","time":1795773600}',
    b'{"message":"GET / HTTP/1.0#015 \xa4\xff","source_address":"203.0.113.7","tag":"syslog.daemon",'
    b'"time":1795773601.25}',
    b'{"message":"\xc3\x28 plain","nested":{"k\xfe":["\x80",1,2.5,null,true]},"tag":"syslog.user",'
    b'"time":1795773602}',
    b'{"a" : "spaced \\u00e9 \\/ escapes",  "tag":"syslog.user","time":1795773603}',
]


def _surrogates(line: bytes):
    return json.loads(line.decode("utf-8", "surrogateescape"))


def test_json_keeps_every_byte_of_untouched_and_tagged_records():
    rc, out, err = run([], b"\n".join(BAD_UTF8) + b"\n")
    assert rc == 0, err
    lines = [l for l in out.split(b"\n") if l.strip()]
    assert len(lines) == 4
    # untouched records: the very bytes they arrived in
    assert [lines[0], lines[2], lines[3]] == [BAD_UTF8[0], BAD_UTF8[2], BAD_UTF8[3]]
    # the tagged one: every input value's bytes, plus the probe map
    tagged = _surrogates(lines[1])
    assert tagged.pop("probe")["name"] == "GetRequest"
    assert tagged == _surrogates(BAD_UTF8[1])
    assert b'"message":"GET / HTTP/1.0#015 \xa4\xff"' in lines[1]


def test_msgpack_keeps_every_byte_of_untouched_and_tagged_records():
    def str8(b: bytes) -> bytes:  # a non-minimal str header, as some packers write
        return b"\xd9" + bytes([len(b)]) + b
    untouched = (b"\x83" + str8(b"message") + str8(b"caf\xe9 \xa4\xff") + b"\xa3tag\xa6syslog"
                 + b"\xa4time\xcb" + __import__("struct").pack(">d", 1795773600.5))
    probe = msgpack.packb({"message": b"GET / HTTP/1.0#015", "note": b"\xa4\xff",
                           "source_address": "203.0.113.7", "tag": "syslog", "time": 1795773601},
                          use_bin_type=True)
    odd_str = b"\x82\xa7message\xa4\xa4\xff\xfe!\xa3tag\xa6syslog"  # str, not UTF-8
    data = untouched + probe + odd_str
    rc, out, err = run(["--in-format", "msgpack"], data)
    assert rc == 0, err
    up = msgpack.Unpacker(raw=True, strict_map_key=False)
    up.feed(out)
    starts, got = [0], []
    for value in up:
        got.append(value)
        starts.append(up.tell())
    assert len(got) == 3
    assert out[starts[0]:starts[1]] == untouched and out[starts[2]:starts[3]] == odd_str
    # the tagged one: bin stays bin (bytes), str stays str, same bytes
    def typed(b):
        return msgpack.unpackb(b, raw=False, unicode_errors="surrogateescape", strict_map_key=False)
    tagged = typed(out[starts[1]:starts[2]])
    assert tagged.pop("probe")["name"] == "GetRequest"
    assert tagged == typed(probe) and isinstance(tagged["note"], bytes)


def _read_blocks(fd: int, want: int, parse, block: int, deadline: float) -> tuple[list, int]:
    """Fluentd's readers: ``block`` > 0 reads like Yajl's ``io.read(block)``
    (returns only a full block), 0 like ``readpartial``. Stops when ``want``
    records are parsed or at ``deadline``."""
    buf, records, total = b"", [], 0
    pending = b""
    while len(records) < want and time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if not r:
            continue
        data = os.read(fd, 65536 if not block else block - len(pending))
        if not data:
            break
        if block:
            pending += data
            if len(pending) < block:
                continue  # io.read(8192) keeps waiting
            data, pending = pending, b""
        total += len(data)
        buf += data
        buf, new = parse(buf)
        records += new
    return records, total


def _parse_json_stream(buf: bytes):
    dec = json.JSONDecoder()
    text = buf.decode("utf-8", "surrogateescape")
    out, pos = [], 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        try:
            value, end = dec.raw_decode(text, pos)
        except ValueError:
            break
        out.append(value)
        pos = end
    return text[pos:].encode("utf-8", "surrogateescape"), out


def _parse_msgpack_stream(buf: bytes):
    up = msgpack.Unpacker(raw=True, strict_map_key=False)
    up.feed(buf)
    out, used = [], 0
    for value in up:
        out.append(value)
        used = up.tell()
    return buf[used:], out


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_no_record_held_back_after_a_batch(fmt):
    """Two bursts with stdin left open: each comes back whole, read the way
    Fluentd reads the child's stdout (json: Yajl's 8 KB ``io.read``; msgpack:
    ``readpartial``)."""
    p = subprocess.Popen(CMD + ["--in-format", fmt], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        fd = p.stdout.fileno()
        for burst, size in enumerate((37, 5)):
            recs = [{"message": PROBE if i % 5 == 0 else f"burst {burst} line {i} \u00e9",
                     "source_address": "203.0.113.7", "tag": "syslog", "time": 1795773600 + i}
                    for i in range(size)]
            if fmt == "json":
                p.stdin.write(b"".join(yajl(r) for r in recs))
            else:
                p.stdin.write(b"".join(msgpack.packb(r) for r in recs))
            p.stdin.flush()
            got, total = _read_blocks(fd, size, _parse_json_stream if fmt == "json" else _parse_msgpack_stream,
                                      8192 if fmt == "json" else 0, time.monotonic() + 30)
            assert len(got) == size, f"burst {burst}: {len(got)} of {size} records came back"
            if fmt == "json":
                assert total % 8192 == 0
                assert [g["time"] for g in got] == [r["time"] for r in recs]
            else:
                assert [g[b"time"] for g in got] == [r["time"] for r in recs]
    finally:
        p.stdin.close()
        assert p.wait(10) == 0
        p.stdout.close()
        p.stderr.close()


def test_json_padding_can_be_turned_off():
    rc, out, _ = run(["--json-block-size", "0"], yajl(records_in()[0]))
    assert rc == 0 and out == yajl(records_in()[0])
    rc, out, _ = run([], yajl(records_in()[0]))
    assert len(out) == 8192 and out.startswith(yajl(records_in()[0])) and out.endswith(b" \n")
