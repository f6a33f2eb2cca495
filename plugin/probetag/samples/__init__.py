"""The bundled demo sample and the sender ``probetag serve --demo`` uses.

``demo.jsonl`` holds a few syslog records as Fluentd builds them from
rsyslog's files (the RFC 3164 parser's ``host``/``ident``/``message``, where
a probe's first word lands in ``host``: FORWARD_NOTES §8) and as rsyslog's
own JSON properties (``rawmsg``, ``fromhost-ip``), among them Nmap ``-sV``
probe lines (``GET / HTTP/1.0#015``, a lone ``#015``, ``OPTIONS sip:nm
SIP/2.0#015``) next to ordinary log lines. They are sent with the real
fluent-logger client, exactly as an application would.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from typing import Any

__all__ = ["load_demo", "send_demo"]


def load_demo() -> list[tuple[str, dict[str, Any]]]:
    text = resources.files(__package__).joinpath("demo.jsonl").read_text(encoding="utf-8")
    out = []
    for line in text.splitlines():
        if line.strip():
            obj = json.loads(line)
            out.append((obj["tag"], obj["record"]))
    return out


def send_demo(host: str, port: int) -> int:
    """Send the sample to a forward server; returns the number of records sent."""
    try:
        from fluent import sender  # fluent-logger, the reference Python client
    except ImportError:
        return _send_plain(host, port)
    # fluent-logger builds the tag as "<prefix>.<label>" (FLP), so split ours.
    senders: dict[str, Any] = {}
    sent = 0
    try:
        for tag, record in load_demo():
            prefix, _, label = tag.partition(".")
            s = senders.get(prefix)
            if s is None:
                s = senders[prefix] = sender.FluentSender(
                    prefix, host=host, port=port, nanosecond_precision=True, timeout=3.0)
            if not s.emit_with_time(label, time.time(), record):
                raise OSError(f"demo: send failed: {s.last_error}")
            sent += 1
    finally:
        for s in senders.values():
            s.close()
    return sent


def _send_plain(host: str, port: int) -> int:
    """Without fluent-logger: the same Message-mode frames it would send
    (``[tag, EventTime, record]``, FLP ``nanosecond_precision``)."""
    import socket

    import msgpack

    frames = []
    for tag, record in load_demo():
        ns = time.time_ns()
        et = msgpack.ExtType(0, (ns // 10**9).to_bytes(4, "big") + (ns % 10**9).to_bytes(4, "big"))
        frames.append(msgpack.packb([tag, et, record], use_bin_type=True))
    with socket.create_connection((host, port), timeout=3.0) as sock:
        sock.sendall(b"".join(frames))
    return len(frames)
