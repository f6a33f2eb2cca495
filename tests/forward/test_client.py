"""ClientConnection: PackedForward frames, acks, and the round trip through
ServerConnection."""

from __future__ import annotations

import base64
import gzip
import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probetag.forward import (
    CLOSED,
    NEED_DATA,
    AckReceived,
    Chunk,
    ClientConnection,
    ClientSecurity,
    Limits,
    LocalProtocolError,
    ProtocolError,
    ServerConnection,
    ServerSecurity,
    encode_nack,
    handle_udp_heartbeat,
    new_chunk_id,
)

from .conftest import event_time, feed

ENTRIES = b"\x92" + event_time(1700000000, 1) + msgpack.packb({"msg": "GET / HTTP/1.0#015"}) + b"\x92\x05\x81\xa1k\xc4\x02\xff\x00"


def test_new_chunk_id_shape():
    ids = {new_chunk_id() for _ in range(100)}
    assert len(ids) == 100
    for cid in ids:
        assert len(cid) == 24 and "\n" not in cid
        assert len(base64.b64decode(cid, validate=True)) == 16


def test_send_packed_text_frame_shape():
    cli = ClientConnection()
    assert cli.ready
    frame = cli.send_packed("probe.out", ENTRIES, 2, "Y2h1bmstaWQtMDAwMDAwMA==")
    tag, payload, option = msgpack.unpackb(frame, raw=False)
    assert (tag, payload) == ("probe.out", ENTRIES)
    assert option == {"size": 2, "chunk": "Y2h1bmstaWQtMDAwMDAwMA=="}  # no "compressed": text
    # entries travel as bin (SPEC1), the tag as str
    assert frame[0] == 0x93 and frame[1] == 0xA9 and frame[11] == 0xC4


def test_send_packed_gzip_and_no_chunk():
    cli = ClientConnection()
    frame = cli.send_packed("t", ENTRIES, 2, None, compress="gzip")
    _, payload, option = msgpack.unpackb(frame)
    assert option == {"size": 2, "compressed": "gzip"}
    assert gzip.decompress(payload) == ENTRIES
    assert cli.outstanding == ()


@pytest.mark.parametrize("compress", ["text", "gzip"])
def test_round_trip_through_server_and_ack(compress):
    cli = ClientConnection()
    srv = ServerConnection("127.0.0.1")
    cid = new_chunk_id()
    (chunk, _) = feed(srv, cli.send_packed("tag.x", ENTRIES, 2, cid, compress=compress))
    assert isinstance(chunk, Chunk)
    assert (chunk.tag, chunk.entries, chunk.chunk_id, chunk.size_hint) == ("tag.x", ENTRIES, cid, 2)
    assert chunk.mode == ("compressed" if compress == "gzip" else "packed")
    assert cli.outstanding == (cid,)
    (ack, marker) = feed(cli, srv.ack_bytes(chunk.chunk_id))
    assert ack == AckReceived(cid) and marker is NEED_DATA
    assert cli.outstanding == ()


def test_pipelined_acks_in_any_order_and_split_bytes():
    cli = ClientConnection()
    ids = [new_chunk_id() for _ in range(3)]
    for cid in ids:
        cli.send_packed("t", ENTRIES, 2, cid)
    acks = b"".join(msgpack.packb({"ack": cid}) for cid in reversed(ids))
    got = []
    for i in range(len(acks)):
        got += [e for e in feed(cli, acks[i:i + 1]) if e is not NEED_DATA]
    assert got == [AckReceived(c) for c in reversed(ids)]


def test_bin_ack_for_a_str_chunk_is_matched_by_bytes():
    cli = ClientConnection()
    cli.send_packed("t", ENTRIES, 2, "abc")
    (ev, _) = feed(cli, msgpack.packb({"ack": b"abc"}, use_bin_type=True))
    assert ev == AckReceived("abc")


def test_nack_is_fatal_so_the_caller_resends():
    cli = ClientConnection()
    cli.send_packed("t", ENTRIES, 2, "abc")
    (ev, closed) = feed(cli, encode_nack())
    assert encode_nack() == b"\x80"
    assert isinstance(ev, ProtocolError) and (ev.reason, ev.fatal) == ("nack", True)
    assert closed is CLOSED
    assert cli.outstanding == ("abc",)  # still unacked: resend it


@pytest.mark.parametrize(
    "reply,reason",
    [
        (msgpack.packb({"ack": "zzz"}), "unexpected_ack"),
        (msgpack.packb({"ack": 5}), "bad_ack"),
        (msgpack.packb({"nack": "abc"}), "bad_ack"),
        (msgpack.packb(["abc"]), "bad_ack"),
        (b"\xc1", "parse_error"),
    ],
)
def test_bad_replies_are_fatal(reply, reason):
    cli = ClientConnection()
    cli.send_packed("t", ENTRIES, 2, "abc")
    (ev, closed) = feed(cli, reply)
    assert isinstance(ev, ProtocolError) and (ev.reason, ev.fatal) == (reason, True)
    assert closed is CLOSED


def test_eof_without_ack_is_closed():
    cli = ClientConnection()
    cli.send_packed("t", ENTRIES, 2, "abc")
    assert feed(cli, b"", eof=True) == [CLOSED]
    cli = ClientConnection()
    (ev, closed) = feed(cli, b"\x81\xa3ac", eof=True)
    assert ev.reason == "truncated_frame" and closed is CLOSED


def test_misuse_raises_local_errors():
    with pytest.raises(LocalProtocolError):
        ClientConnection(ClientSecurity("k", "h")).send_packed("t", ENTRIES, 2, None)
    cli = ClientConnection()
    cli.send_packed("t", ENTRIES, 2, "dup")
    with pytest.raises(LocalProtocolError):
        cli.send_packed("t", ENTRIES, 2, "dup")
    with pytest.raises(LocalProtocolError):
        cli.send_packed("t", ENTRIES, 2, None, compress="zstd")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        cli.send_packed("", ENTRIES, 2, None)


def test_send_packed_is_what_vector_expects():
    # Vector's FluentMessageOptions: size u64, chunk String, compressed String;
    # PackedForward payload as bytes. Check the types on the wire.
    frame = ClientConnection().send_packed("t", ENTRIES, 2, "cid", compress="gzip")
    up = msgpack.Unpacker(raw=True)
    up.feed(frame)
    assert up.read_array_header() == 3
    assert up.unpack() == b"t"
    payload = up.unpack()
    option = up.unpack()
    assert isinstance(option[b"size"], int) and option[b"chunk"] == b"cid" and option[b"compressed"] == b"gzip"
    assert gzip.decompress(payload) == ENTRIES
    # the option map keys and string values are msgpack str, not bin
    assert b"\xa4size" in frame and b"\xa5chunk\xa3cid" in frame and b"\xaacompressed\xa4gzip" in frame


def test_udp_heartbeat():
    assert handle_udp_heartbeat(b"\x00") == b"\x00"
    for other in (b"", b"\x00\x00", b"ping", b"\x01"):
        assert handle_udp_heartbeat(other) is None


def test_size_hint_only_for_non_negative_ints():
    srv = ServerConnection("p")
    for size, hint in ((5, 5), (-1, None), ("3", None), (True, None), (2**40, 2**40)):
        (chunk, _) = feed(srv, msgpack.packb(["t", b"", {"size": size}], use_bin_type=True))
        assert chunk.size_hint == hint, size


def test_large_entries_round_trip_at_the_frame_limit():
    big = (b"\x92" + event_time(1, 0) + msgpack.packb({"m": "x" * 1000})) * 8000  # ~8 MiB
    frame = ClientConnection().send_packed("t", big, 8000, "c")
    srv = ServerConnection("p")
    got = []
    for i in range(0, len(frame), 65536):
        got += [e for e in feed(srv, frame[i:i + 65536]) if e is not NEED_DATA]
    (chunk,) = got
    assert chunk.entries == big and chunk.frame_bytes == len(frame)
    assert frame[3] == 0xC6 and struct.unpack(">I", frame[4:8])[0] == len(big)  # bin32 header


# ------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None)
@given(
    tag=st.text(min_size=1, max_size=40),
    entries=st.binary(max_size=2000),
    count=st.integers(0, 2**32),
    with_chunk=st.booleans(),
    compress=st.sampled_from(["text", "gzip"]),
)
def test_send_packed_round_trip_property(tag, entries, count, with_chunk, compress):
    cli = ClientConnection()
    cid = new_chunk_id() if with_chunk else None
    frame = cli.send_packed(tag, entries, count, cid, compress=compress)
    (chunk, marker) = feed(ServerConnection("p"), frame)
    assert marker is NEED_DATA
    assert isinstance(chunk, Chunk), chunk
    assert (chunk.tag, chunk.entries, chunk.chunk_id, chunk.size_hint) == (tag, entries, cid, count)


def test_settings_are_validated():
    for bad in (0, -1, 10, True, 1.5):
        with pytest.raises(ValueError):
            Limits(max_frame_bytes=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ClientSecurity("k", "h", username="u")
    with pytest.raises(ValueError):
        ServerSecurity("k", "")
    with pytest.raises(TypeError):
        ServerSecurity("k", "h", {"u": 1})  # type: ignore[dict-item]
    sec = ServerSecurity("k", "h", {"u": "p"})
    with pytest.raises(TypeError):
        sec.users["v"] = "q"  # type: ignore[index]


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65_535, 65_536, 300_000])
def test_send_packed_in_parts_is_byte_for_byte_what_msgpack_packs(size):
    # The frame is laid out by hand (one copy of the entries); it must be the
    # bytes msgpack itself produces, across the bin 8/16/32 header sizes.
    entries = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    conn = ClientConnection()
    for n, parts in enumerate(([entries], [entries[:size // 3], entries[size // 3:]], entries)):
        cid = f"id-{size}-{n}"
        frame = conn.send_packed("a.tag", parts, 7, cid)
        assert frame == msgpack.packb(["a.tag", entries, {"size": 7, "chunk": cid}], use_bin_type=True)
    gz = conn.send_packed("a.tag", [entries[:10], entries[10:]], 7, None, compress="gzip")
    tag, payload, option = msgpack.unpackb(gz, raw=False)
    assert (tag, option) == ("a.tag", {"size": 7, "compressed": "gzip"})
    assert gzip.decompress(payload) == entries
