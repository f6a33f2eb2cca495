"""``probetag explain``'s input (see ``probetag.explain``): opening files
(``-`` is stdin, gzip by its magic bytes: ``_Gunzip``), sniffing their first
lines (``_sniff``), cutting them into blocks of whole lines (``_blocks``),
and the reading process of ``--jobs 2`` (``_reader_main``), which also
scans and picks each block's lines (``Explainer.scan``, ``pick``) and sends
them to the detecting process."""

from __future__ import annotations

import argparse
import gzip
import io
import marshal
import os
import queue
import re
import signal
import struct
import sys
import threading
import traceback
import zlib
from typing import IO, Any, Iterator

from . import decode
from ._config import Config
from ._explain_scan import Explainer, FileReport

#: Bytes read per block (whole lines). Bounded memory: one block at a time.
_BLOCK = 4 * 1024 * 1024
#: A single line longer than this is cut (and counted): rsyslog's own
#: maximum message size is 8 KiB by default, so only garbage gets here.
_MAX_LINE = 1024 * 1024
#: gzip input: compressed bytes read, and most bytes inflated, per call;
#: inflated pieces held ready for the reader (``_Gunzip``)
_GZ_IN = 1024 * 1024
_GZ_OUT = 4 * 1024 * 1024
_GZ_AHEAD = 2
#: the first window of a member's compressed bytes zlib gets (``_Gunzip``)
_GZ_WINDOW = 512
#: inflated bytes handed to the reader at once, at least (``_Gunzip``)
_GZ_BATCH = 256 * 1024
_NOT_ZERO = re.compile(rb"[^\x00]")
#: Lines the format detection looks at.
_SNIFF_LINES = 200
#: Pipe buffer between the two processes (F_SETPIPE_SZ; Linux's default is
#: 64 KiB). Each block's message is flushed on its own, so this, one
#: message being written and one being read bound how far the reading
#: process runs ahead: a block's hit lines are some 100 KB at 1 % probe
#: lines, so a few blocks.
_PIPE_BYTES = 256 * 1024

#: The length prefix of a message from the reading process (``marshal`` body).
_HEAD = struct.Struct("<I")


def _open(path: str) -> IO[bytes]:
    raw: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[arg-type,type-var]
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        return io.BufferedReader(_Gunzip(buffered), _GZ_OUT)  # type: ignore[return-value]
    return buffered


class _Gunzip(io.RawIOBase):
    """A gzip stream's members, one after another, inflated.

    What ``gzip.GzipFile`` reads, with its errors (``EOFError`` for a cut
    file, ``BadGzipFile`` for bytes after a member that are neither zeros nor
    another member), but zlib parses the header and checks CRC and size
    itself (``wbits=31``) and gets ``_GZ_IN`` bytes per call instead of 8 KiB:
    GzipFile spent a third of the inflate time again around it. A corrupt
    member is ``BadGzipFile`` with zlib's message.

    zlib lets go of the GIL while it inflates, so a thread inflates up to
    ``_GZ_AHEAD`` pieces ahead of the reader: on two cores the inflating and
    the scanning overlap. Its errors reach the reader in order, after the
    data before them, where GzipFile would have raised them."""

    def __init__(self, src: IO[bytes]) -> None:
        self._src = src
        self._z = zlib.decompressobj(31)
        # The compressed bytes read and how far zlib got in them. zlib gets
        # a window of them at a time: the copies it makes of what it leaves
        # (``unused_data`` at a member's end, ``unconsumed_tail``) are never
        # longer than the window, which starts small for every member and
        # doubles while the member goes on (``_inflate.py``: a copy of the
        # rest of a read per member is quadratic in a file of many members).
        self._buf = b""
        self._pos = 0
        self._window = _GZ_WINDOW
        self._out = memoryview(b"")
        self._done = False
        self._stop = threading.Event()
        self._q: queue.Queue[bytes | BaseException | None] = queue.Queue(_GZ_AHEAD)
        self._thread = threading.Thread(target=self._produce, name="probetag-gunzip", daemon=True)
        self._thread.start()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._out:
            if self._done:
                return 0
            item = self._q.get()
            if item is None or isinstance(item, BaseException):
                self._done = True
                if item is None:
                    return 0
                raise item
            self._out = memoryview(item)
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def close(self) -> None:
        # a reader that stops early: the thread stops at its next piece
        self._stop.set()
        self._thread.join(5.0)
        super().close()

    def _produce(self) -> None:
        # Small pieces (a file of many one-line members) go to the reader
        # together: one hand-over per _GZ_BATCH bytes, not one per member.
        item: bytes | BaseException | None
        batch: list[bytes] = []
        size = 0
        try:
            while not self._stop.is_set():
                item = self._inflate()
                if item is None:
                    break
                if item:
                    batch.append(item)
                    size += len(item)
                    if size >= _GZ_BATCH:
                        self._put(b"".join(batch))  # (one piece: itself, not a copy)
                        batch, size = [], 0
        except Exception as exc:  # the reader raises it, in order
            if batch:
                self._put(b"".join(batch))
            self._put(exc)
            return
        if batch:
            self._put(b"".join(batch))
        self._put(None)

    def _put(self, item: bytes | BaseException | None) -> None:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _inflate(self) -> bytes | None:
        """The next inflated piece (maybe empty); None at the end."""
        z = self._z
        buf, pos = self._buf, self._pos
        if z.eof:
            # A member ended. GzipFile: zero padding is skipped; anything
            # else must be the next member's magic.
            while True:
                m = _NOT_ZERO.search(buf, pos)
                if m is not None:
                    pos = m.start()
                    break
                buf, pos = self._src.read(_GZ_IN), 0
                if not buf:
                    self._buf, self._pos = b"", 0
                    return None
            if len(buf) - pos < 2:
                buf, pos = buf[pos:] + self._src.read(1), 0
            if buf[pos:pos + 2] != b"\x1f\x8b":
                raise gzip.BadGzipFile("Not a gzipped file (%r)" % buf[pos:pos + 2])
            self._z = z = zlib.decompressobj(31)
            self._window = _GZ_WINDOW
        elif pos >= len(buf):
            buf, pos = self._src.read(_GZ_IN), 0
            if not buf:
                raise EOFError("Compressed file ended before the end-of-stream marker was reached")
        window = self._window
        with memoryview(buf) as view, view[pos:pos + window] as data:
            fed = len(data)
            try:
                out = z.decompress(data, _GZ_OUT)
            except zlib.error as exc:
                raise gzip.BadGzipFile(str(exc)) from exc
        tail = len(z.unconsumed_tail)
        pos += fed - tail - len(z.unused_data)
        if not z.eof and not tail and window < _GZ_IN:
            self._window = window * 2
        self._buf, self._pos = buf, pos
        return out


def _fill(f: IO[bytes], view: memoryview) -> int:
    """Read into ``view`` until it is full or the stream ends (a pipe or a
    gzip member boundary may return less per call) -> bytes read."""
    got = 0
    while got < len(view):
        k = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not k:
            break
        got += k
    return got


def _blocks(f: IO[bytes], first: list[bytes], report: FileReport) -> Iterator[bytearray]:
    """Blocks of whole lines joined by LF, without the last LF. A block is
    one detection batch, and a connection's lines split across two batches
    lose the look-ahead (a request line and its lone CR), so the sniffed
    ``first`` lines open the first block rather than making one of their
    own, and a last line without LF joins the block before it. (One block
    is held back for that: memory stays at two blocks.)

    Each block is read straight into its own buffer (``readinto``) behind
    the partial line the previous read left, and cut at its last LF in
    place: the bytes are copied once, by the read."""
    report.cut_lines += getattr(first, "cut", 0)
    rest = b"\n".join(first) + b"\n" if first else b""
    held: bytearray | None = None
    # past a line cut at _MAX_LINE: the rest of that line, up to its LF, is
    # dropped, not read as lines of its own
    skip = False
    while True:
        start = len(rest)
        buf = bytearray(start + _BLOCK)
        buf[:start] = rest
        with memoryview(buf) as view:
            got = _fill(f, view[start:])
        if not got:
            break
        size = start + got
        if skip:
            lf = buf.find(b"\n", 0, size)
            if lf < 0:
                rest = b""
                continue
            skip = False
            del buf[:lf + 1]
            size -= lf + 1
        cut = buf.rfind(b"\n", 0, size)
        if cut < 0:
            if size > _MAX_LINE:
                report.cut_lines += 1
                if held is not None:
                    yield held
                del buf[_MAX_LINE:]
                held, rest, skip = buf, b"", True
            else:
                rest = bytes(buf[:size])
            continue
        rest = bytes(buf[cut + 1:size])
        del buf[cut:]
        if held is not None:
            yield held
        held = buf
    if rest.endswith(b"\n"):
        rest = rest[:-1]  # only the sniffed lines, nothing after them
        if held is None:
            yield bytearray(rest)
            return
    elif rest:
        if held is None:
            held = bytearray(rest)
        else:
            held += b"\n"
            held += rest
    if held is not None:
        yield held


class _Sniffed(list):  # type: ignore[type-arg]
    """The first lines of a file (``_sniff``). ``cut``: how many were over
    ``_MAX_LINE`` and were cut (``_blocks`` counts them)."""
    cut = 0


def _sniff(f: IO[bytes]) -> list[bytes]:
    """Up to ``_SNIFF_LINES`` lines and ``_BLOCK`` bytes; a line over
    ``_MAX_LINE`` is kept cut, and the rest of it is read past (a line is
    never held whole: memory stays at a block)."""
    out = _Sniffed()
    size = 0
    while len(out) < _SNIFF_LINES and size < _BLOCK:
        ln = f.readline(_MAX_LINE + 1)
        if not ln:
            break
        if ln.endswith(b"\n"):
            ln = ln[:-1]
        elif len(ln) > _MAX_LINE:
            out.cut += 1
            ln = ln[:_MAX_LINE]
            while True:  # the rest of the line, a piece at a time
                more = f.readline(_MAX_LINE)
                if not more or more.endswith(b"\n"):
                    break
        out.append(ln)
        size += len(ln) + 1
    return out


# ------------------------------------------------- --jobs 2: the reading process
def _reader_main(w: int, args: argparse.Namespace, config: Config, parent: int,
                 detector: Any) -> None:  # pragma: no cover
    """The reading process of ``_run_pipeline``; never returns."""
    code = 0
    try:
        # Ctrl-C reaches the whole process group: the parent handles it
        # and kills this process.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            import ctypes

            # Linux: die with the parent, even when blocked reading stdin
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:
            os._exit(1)
        # only the parent writes output; a reader of it waits for every copy
        # of the descriptor to close
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
        with open(w, "wb", buffering=_PIPE_BYTES) as wf:
            def send(msg: tuple[Any, ...]) -> None:
                body = marshal.dumps(msg)
                wf.write(_HEAD.pack(len(body)))
                wf.write(body)

            try:
                _read_files(send, wf, args, config, detector)
            except BrokenPipeError:
                raise
            except Exception:
                send(("fail", traceback.format_exc()))
                code = 1
            wf.flush()
    except BrokenPipeError:
        code = 1  # the parent went away
    except BaseException:  # noqa: BLE001 - a child must not unwind into the parent's code
        code = 1
    finally:
        os._exit(code)


def _read_files(send: Any, wf: Any, args: argparse.Namespace, config: Config,
                detector: Any) -> None:  # pragma: no cover
    """``_run``'s loop up to ``Explainer.pick``, for the reading process."""
    for path in args.files:
        try:
            f = _open(path)
        except OSError as exc:
            send(("skip", f"error: {path}: {exc.strerror or exc}"))
            continue
        with f:
            try:
                first = _sniff(f)
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                send(("skip", f"error: {path}: {exc}"))
                continue
            fmt = args.input_format
            if fmt == "auto":
                fmt = decode.detect_file_format(first)
            send(("start", fmt))
            wf.flush()  # the parent sets up its detector meanwhile
            ex = Explainer(config, fmt, path, detector)
            err = None
            try:
                for data in _blocks(f, first, ex.report):
                    n, framing, picked = ex.scan(data)
                    send(("block", n, framing, *ex.pick(picked), len(data)))
                    wf.flush()
            except BrokenPipeError:
                raise
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                err = f"error: {path}: {exc}"
            send(("end", ex.report.cut_lines, err))
            wf.flush()
    send(("done",))

