"""Free loopback ports, chosen by the kernel (bind to port 0)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free *and* whose UDP twin is free (the forward
    listener binds both). Races with other processes are possible but rare."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair found")


def wait_listening(port: int, host: str = "127.0.0.1", timeout: float = 20.0) -> bool:
    """True once a TCP connect to (host, port) succeeds (the connection is
    closed at once, which a forward server sees as a transport heartbeat)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            time.sleep(0.05)
    return False
