"""Headless Chromium driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: JSON messages ended by NUL on fds 3 and 4),
so no websocket client and no port are needed.

``Page.errors`` collects what a person would see in the console as errors:
uncaught exceptions, ``console.error``/``console.assert`` and the browser's
own error entries (a Content-Security-Policy violation, a failed load);
``Page.requests`` every URL the page asked for."""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio"]


class Page:
    def __init__(self, tmp: Path, width: int = 1100, height: int = 900, timeout: float = 120.0) -> None:
        """``tmp``: where the browser's new, empty profile goes."""
        assert CHROMIUM, "chromium is not installed (scripts/test installs it)"
        self.timeout = timeout
        self._dir = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp)
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()

        def fds() -> None:  # Chromium reads commands on fd 3 and writes on fd 4
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self._dir}", f"--window-size={width},{height}",
             "--remote-debugging-pipe", "about:blank"],
            preexec_fn=fds, close_fds=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.session = ""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.call(domain + ".enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    # -- the protocol ----------------------------------------------------------
    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed its pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        o: dict[str, Any] = json.loads(msg)
        if "method" in o:
            self._event(o)
        return o

    def _event(self, o: dict[str, Any]) -> None:
        self.events.append(o)
        m, p = o["method"], o.get("params", {})
        if m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            self.errors.append(f"{d.get('text')} {d.get('exception', {}).get('description', '')}".strip())
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
        elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
            self.errors.append(p["entry"].get("text", ""))
        elif m == "Network.requestWillBeSent":
            self.requests.append(p["request"]["url"])

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            o = self._read(deadline)
            if o.get("id") == self._id:
                if "error" in o:
                    raise RuntimeError(f"{method}: {o['error']}")
                return o.get("result", {})  # type: ignore[no-any-return]

    def wait_for(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        for o in self.events:
            if o["method"] == method:
                return o
        while True:
            o = self._read(deadline)
            if o.get("method") == method:
                return o

    # -- what the tests use -------------------------------------------------------
    def open(self, path: Path) -> None:
        """Load a file and wait until its load event (the inline script has run)."""
        self.events.clear()
        self.call("Page.navigate", url=path.resolve().as_uri())
        self.wait_for("Page.loadEventFired")

    def eval(self, expr: str) -> Any:
        got = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        if "exceptionDetails" in got:
            raise RuntimeError(f"{expr}: {got['exceptionDetails']}")
        return got["result"].get("value")

    def screenshot(self, path: Path, full: bool = False) -> None:
        params: dict[str, Any] = {"format": "png"}
        if full:
            params["captureBeyondViewport"] = True
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", **params)["data"]))

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.session = ""
                try:
                    self.call("Browser.close")
                except (OSError, EOFError, TimeoutError, RuntimeError):
                    pass
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(30)
        finally:
            for fd in (self._r, self._w):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "Page":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
