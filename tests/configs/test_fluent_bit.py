"""The Fluent Bit configs (configs/fluent-bit/, YAML and classic): they say
the same in both formats, use built-in plugins and keys only, pair with
their probetag config, route without loops; and the wire between Fluent Bit
and probetag works with the frames Fluent Bit sends and the ones its
in_forward accepts (Fluent Bit cannot be installed here, so both ends are
played by the test from the protocol facts of its sources)."""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
import threading
import time
from pathlib import Path

import msgpack
import pytest

from probetag._config import load_config, parse_hostport, replace

from .fluentbit import check, matches, parse_classic, parse_yaml, variants

ROOT = Path(__file__).resolve().parents[2]
FB = ROOT / "configs" / "fluent-bit"
STEMS = ("enrich", "filter-noise", "security-index")
OUT_DIR = "/tmp/probetag-fluent-bit"


def _both(stem: str, variant: str = "shipped"):
    y = parse_yaml(variants((FB / f"{stem}.yaml").read_text())[variant])
    c = parse_classic(variants((FB / f"{stem}.conf").read_text())[variant])
    return y, c


def _probetag(stem: str):
    return load_config(ROOT / "configs" / "probetag" / f"fluent-bit-{stem}.yaml")


def test_every_use_case_has_both_formats_and_a_probetag_config():
    for stem in STEMS:
        assert (FB / f"{stem}.yaml").exists() and (FB / f"{stem}.conf").exists()
        for path in (FB / f"{stem}.yaml", FB / f"{stem}.conf"):
            assert f"# probetag config: configs/probetag/fluent-bit-{stem}.yaml" in path.read_text()
        _probetag(stem)


@pytest.mark.parametrize("stem", STEMS)
def test_yaml_and_classic_say_the_same(stem):
    for variant in variants((FB / f"{stem}.yaml").read_text()):
        y, c = _both(stem, variant)
        assert [(s.kind, s.params) for s in y] == [(s.kind, s.params) for s in c], variant


@pytest.mark.parametrize("stem", STEMS)
def test_builtin_plugins_and_keys_only(stem):
    for variant in variants((FB / f"{stem}.yaml").read_text()):
        y, _ = _both(stem, variant)
        assert check(y) == [], variant
    y, _ = _both(stem, "output: elasticsearch")
    assert [s.name for s in y if s.kind == "output"].count("es") >= 1
    assert "file" not in [s.name for s in y if s.kind == "output"]
    y, _ = _both(stem, "alternative: tail")
    (tail,) = [s for s in y if s.name == "tail"]
    assert tail.params["parser"] == "syslog-rfc3164"


def test_checker_catches_what_fluent_bit_refuses():
    bad = parse_yaml("pipeline:\n  inputs:\n    - name: tail\n      tag: x\n"
                     "  outputs:\n    - name: elasticsearch\n      match: '*'\n"
                     "    - name: file\n      pathh: /tmp\n")
    errors = check(bad)
    assert any("tail: path is required" in e for e in errors)
    assert any("'elasticsearch': not a built-in" in e for e in errors)  # the plugin is called es
    assert any("unknown key 'pathh'" in e for e in errors)
    assert any("file: no match" in e for e in errors)


@pytest.mark.parametrize("stem", STEMS)
def test_pairs_with_probetag_and_routes_without_loops(stem):
    cfg = _probetag(stem)
    sections, _ = _both(stem)
    service = sections[0]
    assert service.params["parsers_file"] == "/etc/fluent-bit/parsers.conf"
    (syslog,) = [s for s in sections if s.kind == "input" and s.name == "syslog"]
    assert syslog.params["parser"] == "syslog-rfc3164" and syslog.params["mode"] == "tcp"
    (to_probetag,) = [s for s in sections if s.kind == "output" and s.name == "forward"]
    assert to_probetag.params["require_ack_response"] == "true"
    assert (to_probetag.params["host"], int(to_probetag.params["port"])) == parse_hostport(cfg.listen.address)
    (back,) = [s for s in sections if s.kind == "input" and s.name == "forward"]
    assert int(back.params["port"]) == parse_hostport(cfg.output.address)[1]
    assert cfg.output.type == "forward" and cfg.output.require_ack
    prefix = back.params["tag_prefix"]
    outputs = [s for s in sections if s.kind == "output" and s is not to_probetag]
    # what is sent to probetag: syslog (and the tail alternative's) tags
    assert matches(to_probetag, syslog.params["tag"]) and matches(to_probetag, "syslog.file")
    # what comes back never goes to probetag again, whatever its tag
    returned = [prefix + t for t in ("syslog", "syslog.file", "security.probe.syslog",
                                     cfg.actions.summary_tag, "anything")]
    assert not any(matches(to_probetag, t) for t in returned)
    # retagged records and summaries reach an output of their own and not the
    # normal one (Fluent Bit sends a record to every output that matches)
    from .test_configs import render_retag

    special = [render_retag(r.tag) for r in cfg.actions.rules if r.action == "retag"]
    if cfg.actions.summaries:
        special.append(cfg.actions.summary_tag)
    normal = [o for o in outputs if matches(o, prefix + "syslog")]
    assert len(normal) == 1
    for tag in special:
        hit = [o for o in outputs if matches(o, prefix + tag)]
        assert hit and normal[0] not in hit, tag
    # everything written lives under the directory named at the top
    assert OUT_DIR in (FB / f"{stem}.yaml").read_text().split("\n\n")[0]
    for variant in variants((FB / f"{stem}.yaml").read_text()):
        y, _ = _both(stem, variant)
        written = [s.params[k] for s in y for k in ("path", "db", "storage.path")
                   if k in s.params and not (s.name == "tail" and k == "path")]
        assert all(w.startswith(OUT_DIR) for w in written), written


def test_enrich_routes_probe_records_by_the_probe_field():
    sections, _ = _both("enrich")
    (rw,) = [s for s in sections if s.kind == "filter" and s.name == "rewrite_tag"]
    key, regex, new_tag, keep = rw.params["rule"].split()
    assert key == "$probe['name']" and keep == "true"  # a copy: the enriched stream keeps it
    assert new_tag.startswith("probes.")
    copies = [s for s in sections if s.kind == "output" and matches(s, "probes.probetag.syslog")]
    assert [s.params.get("file") for s in copies] == ["probes.jsonl"]
    assert not matches(rw, "probes.probetag.syslog")  # the copy is not rewritten again


def test_docs_name_the_versions_and_the_rsyslog_template():
    doc = (ROOT / "docs" / "fluent-bit.md").read_text()
    assert "v4.2" in doc and "v5.1" in doc
    assert "<%PRI%>%TIMESTAMP% %HOSTNAME% %syslogtag%%msg:::sp-if-no-1st-sp%%msg%" in doc
    for stem in STEMS:
        assert f"configs/fluent-bit/{stem}.yaml" in doc


# -- the wire: Fluent Bit's frames in, Fluent Bit's in_forward out ---------------


def _map32(d: dict) -> bytes:
    """Fluent Bit packs option maps with a map32 header (df 00 00 00 NN)."""
    return b"\xdf" + struct.pack(">I", len(d)) + b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in d.items())


def _event_time(t: int) -> msgpack.ExtType:
    return msgpack.ExtType(0, struct.pack(">II", t, 0))


def fluent_bit_frame(tag: str, records: list[dict], t: int) -> tuple[bytes, str]:
    """What Fluent Bit's out_forward writes with Require_ack_response on
    (defaults otherwise, v5.x): Forward mode, entries [[EventTime, {}], record]
    (retain_metadata_in_forward_mode), options {size, fluent_signal, chunk}
    in a map32, chunk = base64 of the first 16 bytes of SHA-512 of the entries,
    no trailing newline."""
    entries = [[[_event_time(t + i), {}], r] for i, r in enumerate(records)]
    packed = b"".join(msgpack.packb(e, use_bin_type=False) for e in entries)
    chunk = base64.b64encode(hashlib.sha512(packed).digest()[:16]).decode()
    body = b"\xdd" + struct.pack(">I", len(entries)) + packed  # array32, as flb_mp does
    frame = b"\x93" + msgpack.packb(tag) + body + _map32({"size": len(records), "fluent_signal": 0,
                                                          "chunk": chunk})
    return frame, chunk


class FluentBitInForward:
    """Plays Fluent Bit's in_forward for probetag's output: it closes the
    connection on anything Fluent Bit refuses (non-array root, tag not str,
    options not a map, chunk not str, a frame over buffer_max_size), acks
    {"ack": chunk} like Fluent Bit, and keeps (tag with tag_prefix, records)."""

    def __init__(self, tag_prefix: str, buffer_max_size: int = 32 * 1024 * 1024) -> None:
        self.prefix = tag_prefix
        self.max = buffer_max_size
        self.records: list[tuple[str, dict]] = []
        self.refused: list[str] = []
        self.lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _refuse(self, conn: socket.socket, why: str) -> None:
        with self.lock:
            self.refused.append(why)
        conn.close()

    def _conn(self, conn: socket.socket) -> None:
        up = msgpack.Unpacker(raw=True, strict_map_key=False)
        conn.settimeout(30)
        with conn:
            while not self.stopping:
                try:
                    data = conn.recv(65536)
                except (TimeoutError, OSError):
                    return
                if not data:
                    return
                up.feed(data)
                for frame in up:
                    if not isinstance(frame, list) or len(frame) < 2:
                        return self._refuse(conn, f"root {frame!r}")
                    tag, body, *rest = frame
                    opts = rest[0] if rest else None
                    if not isinstance(tag, bytes):
                        return self._refuse(conn, "tag")
                    if opts is not None and not isinstance(opts, dict):
                        return self._refuse(conn, "options")
                    if isinstance(body, bytes):
                        if len(body) > self.max:
                            return self._refuse(conn, "buffer_max_size")
                        entries = _unpack_all(body)
                    elif isinstance(body, list):
                        entries = body
                    else:  # Message mode
                        entries = [[body, rest[0]]] if rest else []
                    with self.lock:
                        for e in entries:
                            self.records.append((self.prefix + tag.decode(), _decode(e[1])))
                    chunk = (opts or {}).get(b"chunk")
                    if chunk is not None:
                        if not isinstance(chunk, bytes):
                            return self._refuse(conn, "chunk")
                        conn.sendall(b"\x81\xa3ack" + msgpack.packb(chunk.decode()))

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


def _unpack_all(body: bytes) -> list:
    up = msgpack.Unpacker(raw=True, strict_map_key=False, max_buffer_size=len(body) + 1)
    up.feed(body)
    return list(up)


def _decode(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "surrogateescape")
    if isinstance(v, dict):
        return {_decode(k): _decode(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_decode(x) for x in v]
    return v


def _read_ack(sock: socket.socket, timeout: float = 30.0) -> bytes:
    sock.settimeout(timeout)
    up = msgpack.Unpacker(raw=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = sock.recv(4096)
        if not data:
            break
        up.feed(data)
        for obj in up:
            return obj[b"ack"]
    raise AssertionError("no ack from probetag")


# What Fluent Bit's in_syslog with the stock syslog-rfc3164 parser makes of
# rsyslog lines sent with the template above (Time_Keep On: time stays).
SYSLOG_RECORDS = [
    {"pri": "13", "time": "Nov 27 10:00:00", "host": "203.0.113.7", "ident": "GET", "pid": "",
     "message": "/ HTTP/1.0#015"},
    {"pri": "38", "time": "Nov 27 10:00:01", "host": "web1", "ident": "sshd", "pid": "812",
     "message": "Accepted publickey for deploy from 10.0.0.5 port 50122"},
]
# What tail makes of an RSYSLOG_FileFormat line: the stock parser does not match, the line stays in log.
TAIL_RECORD = {"log": "2026-11-27T10:00:02.123456+00:00 203.0.113.7 GET / HTTP/1.0#015"}


@pytest.mark.parametrize("stem", STEMS)
def test_wire_fluent_bit_to_probetag_and_back(stem):
    from util.service import ServiceThread

    sections, _ = _both(stem)
    (back,) = [s for s in sections if s.kind == "input" and s.name == "forward"]
    outputs = [s for s in sections if s.kind == "output" and s.name != "forward"]
    fb_in = FluentBitInForward(back.params["tag_prefix"])
    cfg = replace(_probetag(stem), listen={"address": "127.0.0.1:0"},
                  output={"address": f"127.0.0.1:{fb_in.port}"})
    try:
        with ServiceThread(cfg) as svc:
            with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as s:
                for tag, recs, t in (("syslog", SYSLOG_RECORDS, 1795773600),
                                     ("syslog.file", [TAIL_RECORD], 1795773602)):
                    frame, chunk = fluent_bit_frame(tag, recs, t)
                    s.sendall(frame)
                    # probetag acks only once Fluent Bit's in_forward acked it
                    assert _read_ack(s) == chunk.encode()
            # scan summaries leave when the scan ends (at the latest on stop)
        assert fb_in.refused == []
        got = list(fb_in.records)
    finally:
        fb_in.stop()
    by_ident = {r.get("ident", "tail"): (tag, r) for tag, r in got if "probe_summary" not in r}
    # the sshd line: passed untouched, to the normal output only
    tag, sshd = by_ident["sshd"]
    assert sshd == SYSLOG_RECORDS[1] and [o.params["file"] for o in outputs if matches(o, tag)] == ["syslog.jsonl"]
    probes = [(tag, r) for tag, r in got if "probe" in r]
    if stem == "filter-noise":
        # sure probes are dropped, less sure ones kept for a person to judge;
        # a summary per scan goes to its own output
        (drop,) = [r for r in cfg.actions.rules if r.action == "drop"]
        assert all(r["probe"]["confidence"] < drop.min_confidence for _, r in probes)
        # the request line names its probe surely: dropped, not forwarded
        assert "GET" not in by_ident
        summaries = [(tag, r) for tag, r in got if "probe_summary" in r]
        assert summaries and all([o.params["file"] for o in outputs if matches(o, t)] == ["security-scans.jsonl"]
                                 for t, _ in summaries)
        return
    assert len(probes) == 2  # the syslog probe and the tail line
    for tag, rec in probes:
        assert rec["probe"]["name"] == "GetRequest"
        files = [o.params["file"] for o in outputs if matches(o, tag)]
        if stem == "security-index":
            assert tag.startswith("probetag.security.probe.") and files == ["security-probes.jsonl"]
            assert rec["event"]["kind"] == "alert"
        else:
            assert files == ["syslog.jsonl"]
    assert by_ident["GET"][1]["probe"]["source"] == "203.0.113.7"  # the HOSTNAME is the sender
