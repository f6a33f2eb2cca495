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

import json
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

__all__ = ["FORMATS", "VARIANTS", "Variant", "RsyslogError", "PrivateRsyslog", "rsyslogd_path"]

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

# The harness's own record (not a fixture format): reception time to the
# microsecond, which headerless probe lines share with timereported but
# benign lines with a syslog header do not.
_CAPTURE_TEMPLATE = """template(name="pt_capture" type="list" option.jsonf="on") {
  property(outname="timegenerated" name="timegenerated" dateFormat="unixtimestamp" format="jsonf")
  property(outname="usec" name="timegenerated" dateFormat="subseconds" format="jsonf")
  property(outname="inputname" name="inputname" format="jsonf")
  property(outname="fromhost-ip" name="fromhost-ip" format="jsonf")
  property(outname="rawmsg" name="rawmsg" format="jsonf")
}"""


class RsyslogError(RuntimeError):
    pass


def rsyslogd_path() -> str | None:
    return shutil.which("rsyslogd") or next(
        (p for p in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd") if os.access(p, os.X_OK)), None
    )


@dataclass(frozen=True, slots=True)
class Variant:
    """One rsyslog set-up (FIELD_GUIDE 2.2 and 4); ``escape`` names the
    control-character escaping the ground-truth model applies."""

    name: str
    escape: str = "rsyslog"  # rsyslog | rsyslog-8bit | cstyle | backslash
    octet_counting: bool = True
    tag_ending_by_colon: bool = False

    def global_params(self) -> str:
        return {
            "rsyslog": "",
            "rsyslog-8bit": 'parser.escape8BitCharactersOnReceive="on"',
            "cstyle": 'parser.escapeControlCharactersCStyle="on"',
            "backslash": 'parser.controlCharacterEscapePrefix="\\\\"',
        }[self.escape]


#: the set-ups fixtures are captured with; "default" is Debian's stock rsyslog
VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("default"),
    Variant("cstyle", escape="cstyle"),
    Variant("escape8bit", escape="rsyslog-8bit"),
    Variant("backslash", escape="backslash"),
    Variant("colon-nooctet", octet_counting=False, tag_ending_by_colon=True),
)}


@dataclass(frozen=True, slots=True)
class _Options:
    variant: Variant
    extra_global: str


class PrivateRsyslog:
    """``with PrivateRsyslog() as r: send to r.port (tcp and udp) ...``;
    after the block, ``r.files[fmt]`` are complete."""

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        *,
        variant: Variant | str = "default",
        extra_global: str = "",
        address: str = "127.0.0.1",
        netns: str | None = None,
    ) -> None:
        exe = rsyslogd_path()
        if exe is None:
            raise RsyslogError("rsyslogd is not installed (Debian package 'rsyslog')")
        self._exe = exe
        self._own_dir = workdir is None
        self.dir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="pt-rsyslog-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.variant = VARIANTS[variant] if isinstance(variant, str) else variant
        self._opts = _Options(self.variant, extra_global)
        #: The listeners' address, and the network namespace rsyslogd runs
        #: in (``ip netns exec``; None: this one). A scanner that sends raw
        #: frames (zmap, masscan) needs a real link to a peer: a veth pair
        #: into a namespace of the caller's.
        self.address = address
        self.netns = netns
        self.port = 0
        self.files: dict[str, Path] = {fmt: self.dir / name for fmt, name in FORMATS.items()}
        self._proc: subprocess.Popen[bytes] | None = None
        self.pid_file = self.dir / "rsyslogd.pid"
        self.stderr_file = self.dir / "rsyslogd.stderr"
        self.conf_file = self.dir / "rsyslog.conf"
        self.capture_file = self.dir / "capture.jsonl"

    # -- config ----------------------------------------------------------
    def config_text(self) -> str:
        o = self._opts
        actions = "\n".join(
            f'  action(type="omfile" file="{self.files[fmt]}" template="{_TEMPLATES[fmt]}")' for fmt in FORMATS
        )
        actions += f'\n  action(type="omfile" file="{self.capture_file}" template="pt_capture")'
        v = o.variant
        octet = "on" if v.octet_counting else "off"
        parser, use_parser = "", ""
        if v.tag_ending_by_colon:
            parser = ('parser(name="pt.rfc3164" type="pmrfc3164" force.tagEndingByColon="on" '
                      'remove.msgFirstSpace="on")\n')
            use_parser = ' parser=["rsyslog.rfc5424", "pt.rfc3164"]'
        return f"""# private rsyslogd for probetag tests (generated), variant {v.name}
global(workDirectory="{self.dir}" net.enableDNS="off" processInternalMessages="on" {v.global_params()} {o.extra_global})
module(load="imtcp")
module(load="imudp")
{parser}{_JSON_TEMPLATE}
{_CAPTURE_TEMPLATE}
ruleset(name="pt_out"{use_parser}) {{
{actions}
}}
input(type="imtcp" address="{self.address}" port="{self.port}" ruleset="pt_out" supportOctetCountedFraming="{octet}")
input(type="imudp" address="{self.address}" port="{self.port}" ruleset="pt_out")
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
                prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
                self._proc = subprocess.Popen(
                    [*prefix, self._exe, "-n", "-C", "-f", str(self.conf_file), "-i", str(self.pid_file)],
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
                    with socket.create_connection((self.address, self.port), timeout=0.5):
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


# ------------------------------------------------- what rsyslog makes of bytes
# A model of imtcp/imudp framing and sanitising, written from FIELD_GUIDE
# sections 1 and 2 (observed behaviour of 8.2302). Ground truth uses it only to
# *predict* which log lines a captured payload gives; a predicted line is
# accepted only when rsyslog really wrote a line with exactly these bytes.


_CSTYLE = {0x00: b"\\0", 0x07: b"\\a", 0x08: b"\\b", 0x1B: b"\\e", 0x0C: b"\\f", 0x0A: b"\\n",
           0x0D: b"\\r", 0x09: b"\\t", 0x0B: b"\\v"}


def _esc_table(escape: str) -> list[bytes]:
    table = [bytes((b,)) for b in range(256)]
    for b in range(0x20):
        if escape == "cstyle":
            table[b] = _CSTYLE.get(b, b"\\x%02X" % b)
        elif escape == "backslash":
            table[b] = b"\\%03o" % b
        else:
            table[b] = b"#%03o" % b
    if escape == "rsyslog-8bit":
        for b in range(0x80, 0x100):
            table[b] = b"#%03o" % b
    return table


_TABLES = {e: _esc_table(e) for e in ("rsyslog", "rsyslog-8bit", "cstyle", "backslash")}


def rsyslog_escape(data: bytes, escape: str = "rsyslog") -> bytes:
    """Default: 0x00-0x1F -> ``#ooo``; DEL, bytes >= 0x80 and ``#`` unchanged.
    The other ``escape`` names are the variants of FIELD_GUIDE 2.2."""
    table = _TABLES[escape]
    if escape != "rsyslog-8bit" and not any(b < 0x20 for b in data):
        return data
    return b"".join(table[b] for b in data)


def sanitize(msg: bytes, escape: str = "rsyslog") -> bytes:
    # a NUL that is the last byte goes first, then one trailing LF
    if msg.endswith(b"\x00"):
        msg = msg[:-1]
    if msg.endswith(b"\n"):
        msg = msg[:-1]
    return rsyslog_escape(msg, escape)


@dataclass(frozen=True, slots=True)
class Piece:
    """One message rsyslog should log for a payload: its rawmsg bytes, the
    payload offset of its last byte, and whether it is only logged when the
    connection closes (no LF after it)."""

    rawmsg: bytes
    end: int
    at_close: bool


def tcp_pieces(payload: bytes, octet_counting: bool = True, escape: str = "rsyslog") -> list[Piece]:
    out: list[Piece] = []
    i, n = 0, len(payload)
    while i < n:
        if octet_counting and 0x30 <= payload[i] <= 0x39:
            j = i
            while j < n and 0x30 <= payload[j] <= 0x39:
                j += 1
            if j >= n:
                break  # digits to the end: "Incomplete frame", nothing logged
            count = int(payload[i:j])
            # the byte after the digits is consumed whether or not it is the
            # SP delimiter (a non-SP one only adds a "Framing Error" line)
            if count > 0:
                if j + 1 + count > n:
                    break  # connection ends inside the frame: thrown away
                msg = payload[j + 1 : j + 1 + count]
                if msg:
                    out.append(Piece(sanitize(msg, escape), j + count, False))
                i = j + 1 + count
                continue
            i = j + 1  # "invalid octet count 0": digits and next byte gone, LF framing
        lf = payload.find(b"\n", i)
        if lf < 0:
            msg, end, at_close, i = payload[i:], n - 1, True, n
        else:
            msg, end, at_close, i = payload[i:lf], lf, False, lf + 1
        if msg:
            out.append(Piece(sanitize(msg, escape), end, at_close))
    return out


def udp_pieces(payload: bytes, escape: str = "rsyslog") -> list[Piece]:
    return [Piece(sanitize(payload, escape), len(payload) - 1, False)] if payload else []


def read_json_lines(path: Path) -> list[dict[str, object]]:
    """rsyslog's JSON lines, bytes >= 0x80 kept (as surrogates) so that
    ``s.encode('utf-8', 'surrogateescape')`` gives rsyslog's bytes back."""
    out = []
    for raw in path.read_bytes().split(b"\n"):
        if raw:
            out.append(json.loads(raw.decode("utf-8", "surrogateescape")))
    return out


# -------------------------------------------------------------- benign traffic
def _ts3164(t: float) -> str:
    return time.strftime("%b %e %H:%M:%S", time.localtime(t))


def benign_items(now: float | None = None) -> list[tuple[str, bytes]]:
    """(transport, payload) pairs a normal network sends to a syslog port.
    Several of them deliberately look like probes to a naive matcher."""
    ts = _ts3164(now or time.time())
    tcp = [
        # application logs quoting an HTTP request line
        f'<14>{ts} web01 nginx: 10.0.0.5 - - "GET / HTTP/1.1" 200 612 "-" "curl/8.0.1"\n',
        f'<14>{ts} web01 haproxy[311]: 10.0.0.7:40112 fe be/s1 0/0/1/2/3 200 "OPTIONS / HTTP/1.0"\n',
        # prose with a literal "#015" and other #NNN-looking text
        f"<13>{ts} build01 make: note: rsyslog writes CR as #015 and NUL as #000 (ticket #1234)\n",
        # tab-separated key=value
        f"<13>{ts} app01 audit: user=alice\taction=login\tresult=ok\tsrc=10.0.0.9\n",
        # Windows-style forwarder: CRLF line ends
        f"<13>{ts} WIN-SRV01 EventLog: The Windows Update service entered the running state.\r\n"
        f"<13>{ts} WIN-SRV01 EventLog: The Print Spooler service entered the stopped state.\r\n",
        # UTF-8 text
        f"<14>{ts} app01 app: utilisateur café créé, résumé envoyé; ログイン成功 (日本)\n",
        # a JSON log line, with and without a syslog header
        f'<14>{ts} app01 svc: {{"level":"info","msg":"GET /health ok","status":200,"path":"/"}}\n',
        '{"time":"2026-11-27T10:00:05Z","level":"warn","msg":"HELP requested by client"}\n',
        # headerless line starting with a date: the octet-counting trap
        # (read as a frame length of 2026; swallowed and lost)
        "2026-11-27 10:00:06,123 INFO worker-3 started\n2026-11-27 10:00:06,200 INFO ready\n",
        # sshd, including sshd itself reporting a probe it received
        f"<38>{ts} bastion sshd[1234]: Accepted publickey for deploy from 10.1.2.3 port 52211 ssh2: ED25519 SHA256:Qm9vYmFy\n",
        f"<38>{ts} bastion sshd[1240]: Failed password for invalid user admin from 203.0.113.9 port 4242 ssh2\n",
        f"<38>{ts} bastion sshd[1250]: Bad protocol version identification 'GET / HTTP/1.0' from 198.51.100.7 port 50000\n",
        f"<38>{ts} bastion sshd[1251]: Connection closed by 198.51.100.7 port 50002 [preauth]\n",
    ]
    udp = [
        f"<11>{ts} app02 java: Exception in thread \"main\" java.lang.IllegalStateException: boom\n\tat com.example.Main.run(Main.java:42)\n",
        f"<13>{ts} WIN-SRV02 EventLog: Session logoff for user CORP\\bob\r\n",
        f"<14>{ts} app02 app: SIP OPTIONS keepalive to pbx01 ok; RTSP/1.0 camera cam3 online\n",
        f"<30>{ts} ntp01 chronyd[512]: Selected source 192.0.2.10 (pool.example.org)\n",
        "<13>" + ts + " dev01 logger-test: plain UDP message without newline",
    ]
    return [("tcp", s.encode()) for s in tcp] + [("udp", s.encode()) for s in udp]


def logger_commands(port: int) -> list[tuple[list[str], bytes]]:
    """util-linux ``logger`` invocations, with the message text that marks
    their payload on the wire."""
    exe = shutil.which("logger") or "logger"
    base = [exe, "--server", "127.0.0.1", "--port", str(port)]
    items = [
        (["--tcp", "--rfc3164", "-t", "CRON", "-p", "cron.info"], "(root) CMD (run-parts /etc/cron.hourly)"),
        (["--udp", "--rfc3164", "-t", "kernel"], "eth0: link up, 1000 Mbps, full duplex"),
        (["--tcp", "--rfc5424", "-t", "app", "--msgid", "REQ"], "proxy forwarded GET / HTTP/1.1 for 10.0.0.5"),
        (["--udp", "--rfc5424", "-t", "backup", "--sd-id", "meta@32473", "--sd-param", 'job="nightly"'],
         "backup finished: 12 GiB in 340 s"),
        (["--tcp", "--octet-count", "--rfc5424", "-t", "app"], "octet-counted frame from logger"),
    ]
    return [(base + opts + ["--", msg], msg.encode()) for opts, msg in items]


def send_benign(port: int, *, spread: float = 0.0, deadline: float | None = None) -> list[bytes]:
    """Send every benign item (raw sockets and ``logger``), spaced ``spread``
    seconds apart (bounded by ``deadline``, a time.monotonic() value).
    Returns the byte strings that identify benign payloads on the wire."""
    markers: list[bytes] = []
    jobs: list[object] = [*benign_items(), *logger_commands(port)]
    for k, job in enumerate(jobs):
        if k and spread and (deadline is None or time.monotonic() + spread < deadline):
            time.sleep(spread)
        if isinstance(job[0], str):
            transport, payload = job  # type: ignore[misc]
            if transport == "tcp":
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(payload)
            else:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.sendto(payload, ("127.0.0.1", port))
            markers.append(payload)
        else:
            argv, marker = job  # type: ignore[misc]
            subprocess.run(argv, check=True, timeout=10, stdin=subprocess.DEVNULL)
            markers.append(marker)
    return markers
