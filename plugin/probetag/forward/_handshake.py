"""The shared-key handshake (SPEC1 "Handshake Messages"): HELO, PING, PONG.

Pure functions over decoded messages; the connection classes call them.

* Digests are SHA-512 over the raw bytes concatenated in the spec's order,
  with no separators, as lower-case hex (128 chars):
  ``sha512_hex(salt + hostname + nonce + shared_key)`` for the shared key and
  ``sha512_hex(auth_salt + username + password)`` for user auth.
* Salts and nonces are bytes whatever the peer typed them as: Fluentd sends
  bin nonces and a 32-hex-char str salt; Fluent Bit sends 16 raw random bytes
  typed as *str*, which need not be UTF-8 (decoded with surrogateescape, so
  ``to_bytes`` gives the original bytes back).
* Checks follow Fluentd's ``in_forward#check_ping`` and
  ``out_forward/handshake_protocol.rb#check_pong`` in order and wording, and
  compare digests with ``hmac.compare_digest``. Reasons never contain a key,
  a password or a digest.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import msgpack

from ._events import ClientSecurity, ServerSecurity
from ._wire import to_bytes

__all__ = [
    "sha512_hex",
    "build_helo",
    "check_ping",
    "build_pong",
    "parse_helo",
    "build_ping",
    "check_pong",
    "REASON_INVALID_PING",
    "REASON_KEY_MISMATCH",
    "REASON_USER_MISMATCH",
]

# Fluentd in_forward's failure reasons, verbatim (peers may log or match them).
REASON_INVALID_PING = "invalid ping message"
REASON_KEY_MISMATCH = "shared_key mismatch"
REASON_USER_MISMATCH = "username/password mismatch"

_packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")


def sha512_hex(*parts: bytes) -> str:
    h = hashlib.sha512()
    for part in parts:
        h.update(part)
    return h.hexdigest()


def _same(a: str | bytes, b: str | bytes) -> bool:
    return hmac.compare_digest(to_bytes(a), to_bytes(b))


def _is_text(value: Any) -> bool:
    return isinstance(value, (str, bytes))


# ------------------------------------------------------------------ server


def build_helo(nonce: bytes, auth_salt: bytes, keepalive: bool = True) -> bytes:
    """``["HELO", {"nonce": bin, "auth": bin salt or "", "keepalive": bool}]``
    as Fluentd's in_forward writes it (nonce and salt as bin; ``auth`` is the
    empty str when user auth is off)."""
    return _packer.pack(
        ["HELO", {"nonce": nonce, "auth": auth_salt if auth_salt else "", "keepalive": keepalive}]
    )


def build_pong(ok: bool, reason: str, hostname: str, digest: str) -> bytes:
    return _packer.pack(["PONG", ok, reason, hostname, digest])


def check_ping(
    msg: Any, security: ServerSecurity, peer: str, nonce: bytes, auth_salt: bytes
) -> tuple[bool, str, bytes]:
    """(ok, reason, pong bytes) for a decoded PING.

    ``["PING", hostname, salt, sha512_hex(salt+hostname+nonce+key), username,
    sha512_hex(auth_salt+username+password) or ""]``.
    """
    if (
        not isinstance(msg, list)
        or len(msg) != 6
        or not all(_is_text(x) for x in msg)
        or to_bytes(msg[0]) != b"PING"
    ):
        return _fail(REASON_INVALID_PING)
    _, hostname, salt, key_digest, username, pass_digest = (to_bytes(x) for x in msg)
    if not security.allow_anonymous_source:
        # Fluentd: a source not matched by any <client> entry is anonymous;
        # we have no <client> list, so every source is anonymous.
        return _fail(f"anonymous source host '{peer}' denied")
    key = security.shared_key.encode()
    expected = sha512_hex(salt, hostname, nonce, key)
    if not _same(expected, key_digest):
        return _fail(REASON_KEY_MISMATCH)
    if security.users:
        # Like Fluentd, try every user so the time taken does not depend on
        # which name matched.
        ok = False
        for name, password in security.users.items():
            digest = sha512_hex(auth_salt, username, password.encode())
            ok |= _same(name.encode(), username) & _same(digest, pass_digest)
        if not ok:
            return _fail(REASON_USER_MISMATCH)
    ours = security.self_hostname.encode()
    pong = build_pong(True, "", security.self_hostname, sha512_hex(salt, ours, nonce, key))
    return True, "", pong


def _fail(reason: str) -> tuple[bool, str, bytes]:
    return False, reason, build_pong(False, reason, "", "")


# ------------------------------------------------------------------ client


def parse_helo(msg: Any) -> tuple[bytes, bytes, bool] | str:
    """(nonce, auth salt, keepalive) from a HELO, or a failure reason.
    Fluentd's client accepts only ``["HELO", map]``."""
    if not isinstance(msg, list) or len(msg) != 2 or not _is_text(msg[0]) or to_bytes(msg[0]) != b"HELO":
        return "invalid format for HELO message"
    opts = msg[1]
    if not isinstance(opts, dict):
        return "invalid format for HELO message"
    nonce = opts.get("nonce")
    auth = opts.get("auth", b"")
    if not _is_text(nonce) or not _is_text(auth):
        return "invalid format for HELO message"
    # Fluent Bit sends no keepalive key; absent means allowed.
    keepalive = opts.get("keepalive", True) is not False
    return to_bytes(nonce), to_bytes(auth), keepalive


def build_ping(security: ClientSecurity, nonce: bytes, auth: bytes) -> tuple[bytes, bytes]:
    """(PING bytes, shared-key salt). The salt is 32 hex chars like Fluentd's
    ``SecureRandom.hex(16)``.

    User credentials go out only when the HELO carries an auth salt. Fluentd's
    in_forward sends one whenever ``<security>`` is on, even without
    ``user_auth``; Fluentd's out_forward then sends its default empty
    username and password, i.e. ``""`` and ``sha512_hex(auth_salt)``. We do
    the same when we have no credentials: a server without user auth ignores
    them and one with user auth answers "username/password mismatch"."""
    salt = secrets.token_hex(16)
    host = security.self_hostname
    key = security.shared_key.encode()
    digest = sha512_hex(salt.encode(), host.encode(), nonce, key)
    username = ""
    pass_digest = ""
    if auth:
        username = security.username or ""
        password = security.password or ""
        pass_digest = sha512_hex(auth, username.encode(), password.encode())
    ping = _packer.pack(["PING", host, salt, digest, username, pass_digest])
    return ping, salt.encode()


def check_pong(msg: Any, security: ClientSecurity, salt: bytes, nonce: bytes) -> str | None:
    """None if the PONG is good, else the reason (Fluentd's checks, in order)."""
    if not isinstance(msg, list) or len(msg) != 5 or not _is_text(msg[0]) or to_bytes(msg[0]) != b"PONG":
        return "invalid format for PONG message"
    _, auth_ok, reason, hostname, digest = msg
    if auth_ok is not True:
        text = reason if isinstance(reason, str) else repr(reason)
        return f"authentication failed: {text[:200]}"
    if not _is_text(hostname) or not _is_text(digest):
        return "invalid format for PONG message"
    if to_bytes(hostname) == security.self_hostname.encode():
        return "same hostname between input and output: invalid configuration"
    expected = sha512_hex(salt, to_bytes(hostname), nonce, security.shared_key.encode())
    if not _same(expected, digest):
        return "shared key mismatch"
    return None
