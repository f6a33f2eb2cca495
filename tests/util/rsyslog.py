"""A private rsyslogd for tests and fixture capture (never the system one).

Theory of operation
-------------------
* Everything lives in one temp directory: the config file, the pid file
  (``-i``), rsyslog's work directory, its stderr and the output files. The
  daemon runs in the foreground (``-n``) and is stopped by its own pid, so it
  can never touch a system rsyslog, ``/dev/log`` (imuxsock is not loaded) or
  the kernel log (imklog is not loaded).
* ``imtcp`` and ``imudp`` listen on 127.0.0.1 on the *same* free port number,
  like 514/tcp + 514/udp. Reverse DNS is off, so HOSTNAME falls back to the
  sender's IP (FIELD_GUIDE section 3).
* One ruleset writes every message to one file per output format, so line N
  of every file is the same message: ``traditional.log``
  (RSYSLOG_TraditionalFileFormat), ``rfc3339.log`` (RSYSLOG_FileFormat, the
  Debian default), ``rfc5424.log`` (RSYSLOG_SyslogProtocol23Format) and
  ``json.log`` (one JSON object per line with rawmsg, fromhost-ip, hostname,
  syslogtag, programname, msg, timereported, inputname).
* rsyslog's own messages (start/stop, framing errors) go through the same
  ruleset (``processInternalMessages="on"``), as they do on a host where
  rsyslog is the main syslog daemon.
* ``stop()`` waits (bounded) until the files stop growing, then sends SIGTERM
  and waits for the process to exit; rsyslog flushes its queues on exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .ports import free_port

__all__ = ["FORMATS", "RsyslogError", "PrivateRsyslog", "rsyslogd_path"]

#: output format name -> file name; the order of this dict is the order of
#: the actions in the ruleset.
FORMATS: dict[str, str] = {
    "traditional": "traditional.log",
    "rfc3339": "rfc3339.log",
    "rfc5424": "rfc5424.log",
    "json": "json.log",
}

_TEMPLATES = {
    "traditional": "RSYSLOG_TraditionalFileFormat",
    "rfc3339": "RSYSLOG_FileFormat",
    "rfc5424": "RSYSLOG_SyslogProtocol23Format",
    "json": "pt_json",
}

# NOTE: option.jsonf makes rsyslog emit {"k":"v", ...} with its own JSON
# escaping (", \, / and control characters); bytes >= 0x80 pass through raw,
# so this file can hold invalid UTF-8 (FIELD_GUIDE section 3).
_JSON_TEMPLATE = """template(name="pt_json" type="list" option.jsonf="on") {
  property(outname="rawmsg" name="rawmsg" format="jsonf")
  property(outname="fromhost-ip" name="fromhost-ip" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="syslogtag" name="syslogtag" format="jsonf")
  property(outname="programname" name="programname" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
  property(outname="timereported" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="inputname" name="inputname" format="jsonf")
}"""


class RsyslogError(RuntimeError):
    pass


def rsyslogd_path() -> str | None:
    return shutil.which("rsyslogd") or next(
        (p for p in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd") if os.access(p, os.X_OK)), None
    )


@dataclass(frozen=True, slots=True)
class _Options:
    octet_counting: bool
    extra_global: str


class PrivateRsyslog:
    """``with PrivateRsyslog() as r: send to r.port (tcp and udp) ...``;
    after the block, ``r.files[fmt]`` are complete."""

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        *,
        octet_counting: bool = True,
        extra_global: str = "",
    ) -> None:
        exe = rsyslogd_path()
        if exe is None:
            raise RsyslogError("rsyslogd is not installed (Debian package 'rsyslog')")
        self._exe = exe
        self._own_dir = workdir is None
        self.dir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="pt-rsyslog-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self._opts = _Options(octet_counting, extra_global)
        self.port = 0
        self.files: dict[str, Path] = {fmt: self.dir / name for fmt, name in FORMATS.items()}
        self._proc: subprocess.Popen[bytes] | None = None
        self.pid_file = self.dir / "rsyslogd.pid"
        self.stderr_file = self.dir / "rsyslogd.stderr"
        self.conf_file = self.dir / "rsyslog.conf"

    # -- config ----------------------------------------------------------
    def config_text(self) -> str:
        o = self._opts
        actions = "\n".join(
            f'  action(type="omfile" file="{self.files[fmt]}" template="{_TEMPLATES[fmt]}")' for fmt in FORMATS
        )
        octet = "on" if o.octet_counting else "off"
        return f"""# private rsyslogd for probetag tests (generated)
global(workDirectory="{self.dir}" net.enableDNS="off" processInternalMessages="on" {o.extra_global})
module(load="imtcp")
module(load="imudp")
{_JSON_TEMPLATE}
ruleset(name="pt_out") {{
{actions}
}}
input(type="imtcp" address="127.0.0.1" port="{self.port}" ruleset="pt_out" supportOctetCountedFraming="{octet}")
input(type="imudp" address="127.0.0.1" port="{self.port}" ruleset="pt_out")
# internal messages (start/stop, framing errors) take the default ruleset
call pt_out
"""

    # -- lifecycle -------------------------------------------------------
    def start(self, timeout: float = 5.0) -> "PrivateRsyslog":
        if self._proc is not None:
            raise RsyslogError("already started")
        for attempt in range(3):  # the free port can be taken between choice and bind
            self.port = free_port()
            self.conf_file.write_text(self.config_text())
            err = open(self.stderr_file, "wb")
            try:
                self._proc = subprocess.Popen(
                    [self._exe, "-n", "-C", "-f", str(self.conf_file), "-i", str(self.pid_file)],
                    stdin=subprocess.DEVNULL,
                    stdout=err,
                    stderr=err,
                    cwd=self.dir,
                )
            finally:
                err.close()
            if self._wait_listening(timeout):
                return self
            self._kill()
        raise RsyslogError(f"rsyslogd did not start: {self.stderr_file.read_text(errors='replace')[-2000:]}")

    def _wait_listening(self, timeout: float) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            # the start message is written once the config is active; then the
            # TCP listener must accept (a connection without data logs nothing)
            if self.files["json"].exists() and self.files["json"].stat().st_size > 0:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                        return True
                except OSError:
                    pass
            time.sleep(0.02)
        return False

    def line_count(self, fmt: str = "json") -> int:
        p = self.files[fmt]
        return p.read_bytes().count(b"\n") if p.exists() else 0

    def wait_quiet(self, idle: float = 0.5, timeout: float = 10.0) -> int:
        """Wait until the json file has not grown for ``idle`` seconds (at most
        ``timeout``); returns its line count."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            n = self.files["json"].stat().st_size if self.files["json"].exists() else 0
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since >= idle:
                break
            time.sleep(0.05)
        return self.line_count()

    def stop(self, timeout: float = 10.0) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self.wait_quiet(idle=0.3, timeout=timeout / 2)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                raise RsyslogError("rsyslogd did not exit on SIGTERM")
        self._proc = None

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._proc = None

    def cleanup(self) -> None:
        self._kill()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "PrivateRsyslog":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None
