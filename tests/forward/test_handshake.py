"""Shared-key handshake: digests are recomputed here from the formula in
SPEC1 "Handshake Messages", independently of the implementation."""

from __future__ import annotations

import hashlib

import msgpack
import pytest

from probetag.forward import (
    CLOSED,
    NEED_DATA,
    Chunk,
    ClientConnection,
    ClientSecurity,
    HandshakeDone,
    HandshakeFailed,
    HandshakePing,
    HandshakeReply,
    ProtocolError,
    ServerConnection,
    ServerSecurity,
)

from .conftest import drain, feed

KEY = "s3cr3t-key"
PASSWORD = "hunter2-pw"


def sha(*parts: bytes) -> str:
    return hashlib.sha512(b"".join(parts)).hexdigest()


def helo_of(conn: ServerConnection) -> dict:
    msg = msgpack.unpackb(conn.initial_bytes(), raw=True)
    assert msg[0] == b"HELO"
    return msg[1]


def server(users=None, anonymous=True, peer="10.1.2.3") -> ServerConnection:
    return ServerConnection(
        peer, security=ServerSecurity(KEY, "collector", users or {}, allow_anonymous_source=anonymous)
    )


def fluentd_ping(nonce: bytes, auth: bytes, host="fluentd-host", key=KEY, user="", password=None) -> tuple[bytes, bytes]:
    salt = b"0123456789abcdef0123456789abcdef"  # SecureRandom.hex(16): 32 hex chars
    pw = sha(auth, user.encode(), password.encode()) if password is not None else ""
    ping = msgpack.packb(["PING", host, salt.decode(), sha(salt, host.encode(), nonce, key.encode()), user, pw])
    return ping, salt


def test_helo_shape_without_user_auth():
    conn = server()
    raw = conn.initial_bytes()
    helo = helo_of(conn)
    assert set(helo) == {b"nonce", b"auth", b"keepalive"}
    assert len(helo[b"nonce"]) == 16 and helo[b"auth"] == b"" and helo[b"keepalive"] is True
    assert b"\xa5nonce\xc4\x10" in raw  # nonce is bin
    assert b"\xa4auth\xa0" in raw  # "" as str
    assert helo_of(server())[b"nonce"] != helo[b"nonce"]  # random per connection


def test_helo_carries_a_bin_auth_salt_with_user_auth():
    raw = server({"alice": PASSWORD}).initial_bytes()
    assert b"\xa4auth\xc4\x10" in raw


def test_no_security_means_no_helo():
    assert ServerConnection("p").initial_bytes() == b""


def test_fluentd_ping_accepted_and_pong_digest_correct():
    conn = server()
    nonce = helo_of(conn)[b"nonce"]
    ping, salt = fluentd_ping(nonce, b"")
    data = msgpack.packb(["app", 1, {"a": 1}])
    evs = feed(conn, ping + data)
    reply = evs[0]
    assert isinstance(reply, HandshakeReply) and reply.ok and reply.reason == ""
    assert msgpack.unpackb(reply.data) == ["PONG", True, "", "collector", sha(salt, b"collector", nonce, KEY.encode())]
    assert isinstance(evs[1], Chunk) and evs[1].tag == "app"
    assert evs[2] is NEED_DATA


def test_fluent_bit_ping_with_non_utf8_str_salt():
    conn = server()
    nonce = helo_of(conn)[b"nonce"]
    salt = b"\xff\xfe\x00\x80" + bytes(range(200, 212))  # 16 raw bytes typed as str
    host = b"fluent-bit"
    digest = sha(salt, host, nonce, KEY.encode()).encode()
    ping = b"\x96\xa4PING" + bytes([0xA0 | len(host)]) + host + b"\xb0" + salt + b"\xd9\x80" + digest + b"\xa0\xa0"
    (reply, _) = feed(conn, ping)
    assert reply.ok
    pong = msgpack.unpackb(reply.data)
    assert pong[4] == sha(salt, b"collector", nonce, KEY.encode())


def test_ping_with_bin_fields_is_accepted():
    conn = server()
    nonce = helo_of(conn)[b"nonce"]
    salt = b"saltsaltsaltsalt"
    ping = msgpack.packb(["PING", b"h", salt, sha(salt, b"h", nonce, KEY.encode()).encode(), b"", b""], use_bin_type=True)
    (reply, _) = feed(conn, ping)
    assert reply.ok


@pytest.mark.parametrize(
    "ping",
    [
        ["PING", "h", "salt", "digest", ""],
        ["PING", "h", "salt", "digest", "", "", "extra"],
        ["PING", "h", 5, "digest", "", ""],
        ["PING", None, "salt", "digest", "", ""],
        ["PING"],
    ],
    ids=["arity 5", "arity 7", "int salt", "nil host", "arity 1"],
)
def test_malformed_ping_gets_fluentd_invalid_ping_pong_then_closed(ping):
    conn = server()
    (reply, closed) = feed(conn, msgpack.packb(ping))
    assert isinstance(reply, HandshakeReply) and not reply.ok
    assert reply.reason == "invalid ping message"
    assert msgpack.unpackb(reply.data) == ["PONG", False, "invalid ping message", "", ""]
    assert closed is CLOSED and conn.next_event() is CLOSED


def test_wrong_shared_key():
    conn = server()
    ping, _ = fluentd_ping(helo_of(conn)[b"nonce"], b"", key="wrong")
    (reply, closed) = feed(conn, ping + msgpack.packb(["app", 1, {}]))
    assert msgpack.unpackb(reply.data) == ["PONG", False, "shared_key mismatch", "", ""]
    assert closed is CLOSED  # nothing after a failed handshake is parsed


def test_digest_must_be_lower_case_hex():
    conn = server()
    nonce = helo_of(conn)[b"nonce"]
    salt = b"a" * 32
    ping = msgpack.packb(["PING", "h", salt.decode(), sha(salt, b"h", nonce, KEY.encode()).upper(), "", ""])
    (reply, _) = feed(conn, ping)
    assert reply.reason == "shared_key mismatch"


def test_user_auth_success_and_failures():
    users = {"alice": PASSWORD, "bob": "other-pass"}
    conn = server(users)
    helo = helo_of(conn)
    ping, _ = fluentd_ping(helo[b"nonce"], helo[b"auth"], user="alice", password=PASSWORD)
    (reply, _) = feed(conn, ping)
    assert reply.ok
    for user, password in (("alice", "bad"), ("mallory", PASSWORD), ("alice", None), ("bob", PASSWORD)):
        conn = server(users)
        helo = helo_of(conn)
        ping, _ = fluentd_ping(helo[b"nonce"], helo[b"auth"], user=user, password=password)
        (reply, _) = feed(conn, ping)
        assert msgpack.unpackb(reply.data) == ["PONG", False, "username/password mismatch", "", ""], user


def test_anonymous_source_denied():
    conn = server(anonymous=False, peer="192.0.2.7")
    ping, _ = fluentd_ping(helo_of(conn)[b"nonce"], b"")
    (reply, _) = feed(conn, ping)
    assert reply.reason == "anonymous source host '192.0.2.7' denied"


@pytest.mark.parametrize(
    "first", [msgpack.packb(["app", 1, {}]), b"\xc0", msgpack.packb({"a": 1}), msgpack.packb(["HELO", {}])],
    ids=["message", "nil", "map", "helo"],
)
def test_data_before_the_handshake_is_fatal(first):
    conn = server()
    evs = feed(conn, first)
    assert isinstance(evs[0], ProtocolError)
    assert (evs[0].reason, evs[0].fatal) == ("handshake_required", True)
    assert evs[1] is CLOSED


def test_heartbeat_connection_without_data_is_a_clean_close():
    # Fluentd's transport heartbeat: connect, maybe handshake, close.
    conn = server()
    ping, _ = fluentd_ping(helo_of(conn)[b"nonce"], b"")
    evs = feed(conn, ping, eof=True)
    assert evs[0].ok and evs[1] is CLOSED
    assert feed(server(), b"", eof=True) == [CLOSED]


def test_secrets_never_appear_in_events_or_reprs():
    sec = ServerSecurity(KEY, "collector", {"alice": PASSWORD})
    csec = ClientSecurity(KEY, "client", "alice", PASSWORD)
    texts = [repr(sec), repr(csec)]
    for key, password in ((KEY, "bad"), ("bad", PASSWORD), (KEY, PASSWORD)):
        conn = ServerConnection("p", security=sec)
        helo = helo_of(conn)
        ping, _ = fluentd_ping(helo[b"nonce"], helo[b"auth"], key=key, user="alice", password=password)
        (reply, _) = feed(conn, ping)
        texts += [repr(reply), reply.reason, reply.data.decode("latin-1")]
    for t in texts:
        assert KEY not in t and PASSWORD not in t


# ------------------------------------------------------------------ client


def pump(cli: ClientConnection, srv: ServerConnection) -> tuple[list, list]:
    """Run a client and a server against each other in memory."""
    cli_events, srv_events = [], []
    to_client = srv.initial_bytes()
    for _ in range(10):
        if not to_client:
            break
        cli.receive_data(to_client)
        to_client = b""
        to_server = b""
        for ev in drain(cli):
            cli_events.append(ev)
            if isinstance(ev, HandshakePing):
                to_server += ev.data
        if to_server:
            srv.receive_data(to_server)
            for ev in drain(srv):
                srv_events.append(ev)
                if isinstance(ev, HandshakeReply):
                    to_client += ev.data
    return cli_events, srv_events


def test_client_and_server_handshake_in_memory():
    cli = ClientConnection(ClientSecurity(KEY, "client-host"))
    srv = server()
    assert not cli.ready
    cli_events, srv_events = pump(cli, srv)
    assert [type(e) for e in cli_events] == [HandshakePing, type(NEED_DATA), HandshakeDone, type(NEED_DATA)]
    assert srv_events[0].ok
    assert cli.ready


def test_client_ping_shape_and_digest():
    cli = ClientConnection(ClientSecurity(KEY, "client-host"))
    conn = server()
    nonce = helo_of(conn)[b"nonce"]
    cli.receive_data(conn.initial_bytes())
    (ping_ev, _) = drain(cli)
    ping = msgpack.unpackb(ping_ev.data)
    assert ping[0] == "PING" and ping[1] == "client-host" and len(ping) == 6
    salt = ping[2]
    assert len(salt) == 32 and all(c in "0123456789abcdef" for c in salt)
    assert ping[3] == sha(salt.encode(), b"client-host", nonce, KEY.encode())
    assert ping[4:] == ["", ""]  # no user digest when HELO auth is empty


def test_client_user_auth_against_server():
    cli = ClientConnection(ClientSecurity(KEY, "c", "alice", PASSWORD))
    cli_events, srv_events = pump(cli, server({"alice": PASSWORD}))
    assert isinstance(cli_events[2], HandshakeDone) and srv_events[0].ok


def test_client_without_credentials_when_server_wants_them():
    cli = ClientConnection(ClientSecurity(KEY, "c"))
    cli_events, srv_events = pump(cli, server({"alice": PASSWORD}))
    assert srv_events[0].reason == "username/password mismatch"
    assert cli_events[2] == HandshakeFailed("authentication failed: username/password mismatch")
    assert cli.next_event() is CLOSED and not cli.ready


def test_client_against_fluentd_helo_with_auth_salt_but_no_user_auth():
    # Fluentd's in_forward always sends a 16-byte auth salt under <security>;
    # its out_forward then sends username "" and sha512_hex(salt + "" + "").
    nonce, auth = b"n" * 16, b"a" * 16
    cli = ClientConnection(ClientSecurity(KEY, "c"))
    (ev, _) = feed(cli, msgpack.packb(["HELO", {"nonce": nonce, "auth": auth, "keepalive": True}], use_bin_type=True))
    ping = msgpack.unpackb(ev.data)
    assert ping[4:] == ["", sha(auth)]
    salt = ping[2].encode()
    (done, _) = feed(cli, msgpack.packb(["PONG", True, "", "fluentd", sha(salt, b"fluentd", nonce, KEY.encode())]))
    assert done == HandshakeDone()


def test_client_reports_server_rejection():
    cli = ClientConnection(ClientSecurity("wrong-key", "c"))
    cli_events, _ = pump(cli, server())
    assert cli_events[2] == HandshakeFailed("authentication failed: shared_key mismatch")


def test_client_accepts_fluent_bit_helo_with_str_nonce():
    nonce = b"\x00\xff" * 8
    helo = b"\x92\xa4HELO\x82\xa5nonce\xb0" + nonce + b"\xa4auth\xa0"  # no keepalive key
    cli = ClientConnection(ClientSecurity(KEY, "c"))
    (ev, _) = feed(cli, helo)
    ping = msgpack.unpackb(ev.data)
    assert ping[3] == sha(ping[2].encode(), b"c", nonce, KEY.encode())


def _client_after_helo() -> tuple[ClientConnection, bytes, bytes]:
    nonce = b"N" * 16
    cli = ClientConnection(ClientSecurity(KEY, "me"))
    (ev, _) = feed(cli, msgpack.packb(["HELO", {"nonce": nonce, "auth": "", "keepalive": True}], use_bin_type=True))
    salt = msgpack.unpackb(ev.data)[2].encode()
    return cli, nonce, salt


@pytest.mark.parametrize(
    "make_pong,reason",
    [
        (lambda n, s: ["PONG", True, "", "srv"], "invalid format for PONG message"),
        (lambda n, s: ["PING", True, "", "srv", "x"], "invalid format for PONG message"),
        (lambda n, s: ["PONG", False, "shared_key mismatch", "", ""], "authentication failed: shared_key mismatch"),
        (lambda n, s: ["PONG", True, "", "me", sha(s, b"me", n, KEY.encode())], "same hostname between input and output: invalid configuration"),
        (lambda n, s: ["PONG", True, "", "srv", sha(s, b"srv", n, b"other")], "shared key mismatch"),
        (lambda n, s: ["PONG", True, "", "srv", sha(s, b"other", n, KEY.encode())], "shared key mismatch"),
    ],
    ids=["arity", "not pong", "auth false", "same host", "wrong key", "wrong host in digest"],
)
def test_client_pong_checks(make_pong, reason):
    cli, nonce, salt = _client_after_helo()
    (ev, closed) = feed(cli, msgpack.packb(make_pong(nonce, salt)))
    assert ev == HandshakeFailed(reason)
    assert closed is CLOSED


def test_client_good_pong():
    cli, nonce, salt = _client_after_helo()
    (ev, _) = feed(cli, msgpack.packb(["PONG", True, "", "srv", sha(salt, b"srv", nonce, KEY.encode())]))
    assert ev == HandshakeDone() and cli.ready


@pytest.mark.parametrize("helo", [msgpack.packb(["HELO"]), msgpack.packb({"a": 1}), msgpack.packb(["HELO", {"auth": ""}])])
def test_client_rejects_bad_helo(helo):
    cli = ClientConnection(ClientSecurity(KEY, "me"))
    (ev, _) = feed(cli, helo)
    assert ev == HandshakeFailed("invalid format for HELO message")


def test_undecodable_first_frame_is_not_a_crash():
    conn = server()
    evs = feed(conn, b"\x96\xa4PING\x81\x80\x01\xa0\xa0\xa0\xa0")
    assert isinstance(evs[0], ProtocolError) and evs[0].fatal and evs[1] is CLOSED


def test_client_undecodable_reply_is_fatal():
    cli = ClientConnection()
    (ev, closed) = feed(cli, b"\x81\x81\x80\x01\x01")
    assert isinstance(ev, ProtocolError) and (ev.reason, ev.fatal) == ("parse_error", True)


def test_deny_keepalive_is_announced_in_the_helo():
    conn = ServerConnection("p", security=ServerSecurity(KEY, "collector"), keepalive=False)
    assert helo_of(conn)[b"keepalive"] is False
