"""Bounded waiting for loopback tests: poll a condition, reap a subprocess.

Every wait here has a deadline, so a test that goes wrong fails instead of
hanging.
"""

from __future__ import annotations

import subprocess
import time
from typing import Callable


def wait_until(pred: Callable[[], bool], timeout: float) -> bool:
    """Poll ``pred`` every 20 ms for up to ``timeout`` seconds; its last
    answer (checked once more at the deadline) is returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def kill_if_running(proc: subprocess.Popen) -> None:
    """The ``finally`` of a test that runs ``probetag serve``: a process the
    test did not end (an assertion failed first) is killed and reaped."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)
