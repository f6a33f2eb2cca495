"""``probetag explain FILE...``: what are these syslog lines?

Theory of operation
-------------------
* Input is rsyslog or syslog-ng output files (``-`` is stdin; gzip is recognised by its
  magic bytes and inflated by zlib in large reads, ``_Gunzip``). The format is detected once per file from its first lines
  (``probetag.decode.detect_file_format``) unless ``--input-format`` names it.
* The file is read in blocks of whole lines (``_BLOCK`` bytes), so memory
  stays constant however big the file is. Per block, the *same* code as
  ``probetag serve`` decides:

  1. the chunk prefilter's literal set (one multi-literal scan over the
     block's bytes, as the stage does over a chunk) picks the lines worth
     decoding; the other lines are never split out one by one. For JSON
     files the fragments are also searched the way rsyslog's JSON escaping
     writes them (``\\/``, ``\\"``, ``\\\\``);
  2. each picked line goes through ``probetag.decode.parse_syslog_line``,
     whose ``record`` takes the network path: ``Enricher.batch`` (rebuild,
     match, correlate, actions) in line order, with the line's own time as
     event time. Lines the prefilter skips are benign by construction.
     Correlation looks ahead inside a block, as the stage does inside a
     chunk, and back across blocks.

* Cost per block, besides detection: one read into a fresh buffer, one
  literal scan (the prefilter's literals and rsyslog's framing markers) and
  one pass of LF counting (the line numbers of the hit lines and of the
  block are counted from hit line to hit line). Nothing is done per benign
  line, not even in the jsonl output (``_JsonlWriter``).

* syslog-ng files (``decode.SYSLOG_NG_FORMATS``, docs/collectors.md): the
  lines around a strong hit are read further (``_syslog_ng_neighbours``:
  syslog-ng cuts a binary probe at its NULs into lines no literal hits),
  and a line without a header joins the message above it in ``pick`` (a
  UDP datagram with LFs): that message is detected whole, and each of its
  lines gets its verdict in ``detect`` (the continuation lines travel as
  ``{"_continues": item}`` records, which read as nothing).

* rsyslog's own "Framing Error" / "Incomplete frame" lines are counted
  (they mean octet counting ate the start of some bytes) and never tagged. A
  "line" longer than ``_MAX_LINE`` without LF is cut and counted.

* Output: ``jsonl`` is one object per input line, in order:
  ``{"line": N, "probe": {...}}`` or ``{"line": N, "probe": null}`` (N is
  1-based per file; ``"file"`` is added when several files are given),
  byte for byte what one ``json.dumps`` per line writes (the null lines
  with its defaults, the probe lines with ``ensure_ascii=False``), encoded
  as ``sys.stdout`` would.
  ``text`` is a per-source summary (scanner, probes, first/last seen, lines,
  the listener that received them and how to close it) and a count of the
  other lines, from the correlator's scan summaries.
  ``html`` is the same report as one page with charts and a table of the
  probe lines (``_explain_html``); only then does ``Explainer.detect`` hand
  each probe line to a collector (``on_probe``). ``--output`` names the file.
* Each file gets its own correlator: correlation runs on event time, and two
  files are two time lines. The compiled detector is shared.

* ``--jobs 2`` (``_run_pipeline``) splits the same work over two processes
  for the two cores: a forked reading process opens, sniffs and cuts the
  files (``_blocks``), scans each block and parses its hit lines
  (``Explainer.scan`` and ``pick``), and sends per block the line count,
  the framing-error count and the (event time, record) of its hit lines
  through a pipe of bounded size; this process runs ``Explainer.detect``
  in block order and writes the output. Same functions, same order: the
  output, the error messages and the exit status are those of ``--jobs 1``,
  which stays the reference (tests/explain runs every comparison both
  ways). The fork comes before any thread (the gzip reader's thread lives
  in the reading process); where fork is missing or a thread runs, it is
  one process. On a 1 GB file the reading process has some 4 CPU s of work
  and this one 5 (jsonl) or 4.4 (text), against 8.5 in one process.
* ``--jobs`` defaults to 2 when there are two or more CPUs and the files
  (stdin if it is a regular file) hold at least ``_PIPELINE_MIN_BYTES``
  (32 MiB) on disk: below that, the fork and the second process's start
  cost about as much as the overlap saves (measured on 5, 10 and 20 MB
  files, within 0.1 s either way).

* Where the parts live: this module is the command (arguments, the file
  loop of ``_run``, the detecting side of ``_run_pipeline``);
  ``_explain_read`` opens, sniffs and cuts the files and is the reading
  process of ``--jobs 2``; ``_explain_scan`` holds ``Explainer`` (scan,
  pick, detect) and ``FileReport``; ``_explain_write`` writes jsonl and the
  text report; ``_explain_report`` and ``_explain_html`` lay out the text
  and HTML reports.
"""

from __future__ import annotations

import argparse
import gzip
import marshal
import os
import signal
import sys
import threading
import time
from typing import Any

from . import _explain_html, decode
from ._accel import log_start
from ._config import Config, ConfigError, load_config
# The parts of explain live beside it: input (_explain_read), scan and
# detection (_explain_scan), output (_explain_write). Their names are
# importable from here as they always were.
from ._explain_read import (_BLOCK, _GZ_AHEAD, _GZ_IN, _GZ_OUT, _HEAD, _MAX_LINE,  # noqa: F401
                            _PIPE_BYTES, _SNIFF_LINES, _blocks, _fill, _Gunzip, _open, _read_files,
                            _reader_main, _sniff)
from ._explain_report import Progress
from ._explain_scan import (_FRAMING_MARKERS, _NEIGHBOUR_REST, _NEIGHBOURS_AFTER,  # noqa: F401
                            _NEIGHBOURS_BEFORE, _NOTHING, Explainer, FileReport, _host_word,
                            _merge_overlapping, _SourceInfo, _syslog_ng_neighbours, _with_empty_msgs,
                            _with_neighbours, _wordy)
from ._explain_write import _binary, _JsonlWriter, _listener, _probe_encoder, _text_file, _TextSink  # noqa: F401
from ._logging import setup_logging
from ._metrics import Metrics

__all__ = ["main", "Explainer", "FileReport", "INPUT_FORMATS"]

INPUT_FORMATS = ("auto", *decode.FORMATS)
#: ``--jobs`` default: the two-process pipeline (``_run_pipeline``) from this
#: many input bytes on (files' sizes on disk; stdin counts when it is a
#: regular file). Below it, the fork and the reading process's own
#: detector set-up cost more wall time than the overlap wins (measured:
#: see the module docstring).
_PIPELINE_MIN_BYTES = 32 * 1024 * 1024
#: Seconds the detecting process waits for the reading process to exit
#: once it has said it is done, before killing it.
_CHILD_WAIT = 5.0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="probetag explain",
                                 description="Tell what scanner-probe lines in rsyslog output files are.",
                                 epilog="exit status: 0 when probe lines were found, 1 when none were, "
                                        "2 on an error (as grep)")
    ap.add_argument("files", nargs="+", metavar="FILE", help="syslog files ('-' = stdin; .gz is read too)")
    ap.add_argument("--format", choices=("text", "jsonl", "html"), default="text",
                    help="output: the report, one JSON object per line, or the report as one HTML page "
                         "(default: text)")
    ap.add_argument("-o", "--output", metavar="FILE",
                    help="write the output to FILE (default: stdout; html is not written to a terminal)")
    ap.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                    help="colour in the text report (default: auto, when the output is a terminal "
                         "and NO_COLOR is not set)")
    ap.add_argument("--input-format", choices=INPUT_FORMATS, default="auto",
                    help="how the files were written (default: detected per file)")
    ap.add_argument("-c", "--config", metavar="FILE", help="probetag config (detect/correlation settings)")
    ap.add_argument("--jobs", type=_positive, default=None, metavar="N",
                    help="processes: 2 reads and scans in one process while another detects and writes; 1 "
                         "does all in one (default: 2 when there are 2 or more CPUs and the input is at least "
                         f"{_PIPELINE_MIN_BYTES // (1024 * 1024)} MiB on disk, else 1; more than 2 is 2)")
    args = ap.parse_args(argv)
    try:
        config = load_config(args.config) if args.config else load_config(None)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.format == "html" and not args.output and sys.stdout.isatty():
        print("error: --format html writes a page: give --output FILE or redirect stdout", file=sys.stderr)
        return 2
    try:
        args.out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    except OSError as exc:
        print(f"error: {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, timestamps=False)
    log_start()
    args.found = 0
    args.html = _explain_html.Lines() if args.format == "html" else None
    try:
        failed = _run_pipeline(args, config) if _jobs(args) >= 2 else _run(args, config)
        if args.html is not None:
            _explain_html.write_html(args.out, args.html, listener=_listener, max_line=_MAX_LINE)
            args.out.flush()
        # grep's exit codes: 0 probes found, 1 none, 2 an error
        return 2 if failed else 0 if args.found else 1
    except BrokenPipeError:
        # the reader went away (``| head``): stop quietly, like other filters
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        if args.out is not sys.stdout:
            args.out.close()


def _output(args: argparse.Namespace, ex: Explainer) -> None:
    """Hook ``ex`` to the HTML report's collection when it is asked for."""
    lines = getattr(args, "html", None)
    if lines is not None:
        ex.on_probe = lines.file(ex.report.name, ex.fmt)


def _finished(args: argparse.Namespace, rep: FileReport) -> None:
    lines = getattr(args, "html", None)
    if lines is not None:
        lines.finish_file(rep)


def _run(args: argparse.Namespace, config: Config) -> int:
    out = getattr(args, "out", sys.stdout)
    detector = None
    status = 0
    several = len(args.files) > 1
    progress = Progress(sys.stderr, _input_bytes(args.files))
    for path in args.files:
        try:
            f = _open(path)
        except OSError as exc:
            print(f"error: {path}: {exc.strerror or exc}", file=sys.stderr)
            status = 1
            continue
        with f:
            try:
                first = _sniff(f)
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                # a file too damaged to find its format in
                print(f"error: {path}: {exc}", file=sys.stderr)
                status = 1
                continue
            fmt = args.input_format
            if fmt == "auto":
                fmt = decode.detect_file_format(first)
            ex = Explainer(config, fmt, path, detector)
            detector = ex.detector
            _output(args, ex)
            jsonl = _JsonlWriter(*_binary(out), path if several else None) if args.format == "jsonl" else None
            try:
                base = 0
                for data in _blocks(f, first, ex.report):
                    n, found = ex.block(data)
                    if jsonl is not None:
                        jsonl.block(n, found, base)
                    base += n
                    progress.update(len(data), path)
            except BrokenPipeError:
                raise
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                print(f"error: {path}: {exc}", file=sys.stderr)
                status = 1
            rep = ex.finish()
        _finished(args, rep)
        args.found += rep.probe_lines
        if args.format == "text":
            _text_file(out, rep, first=path is args.files[0], args=args)
    progress.close()
    out.flush()
    return status


# ------------------------------------------------------ --jobs 2: two processes
def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _input_bytes(paths: list[str]) -> int:
    """The input's size on disk, as far as it is known (0 for a pipe)."""
    total = 0
    for path in paths:
        try:
            st = os.fstat(0) if path == "-" else os.stat(path)
        except OSError:
            continue  # reported when it is opened
        if (st.st_mode & 0o170000) == 0o100000:  # a regular file
            total += st.st_size
    return total


def _jobs(args: argparse.Namespace) -> int:
    """1 or 2. The pipeline needs fork, and fork needs a process without
    threads (a thread's locks would be copied held): else it is 1."""
    if args.jobs is not None:
        n = args.jobs
    else:
        n = 2 if (os.cpu_count() or 1) >= 2 and _input_bytes(args.files) >= _PIPELINE_MIN_BYTES else 1
    if n >= 2 and (not hasattr(os, "fork") or threading.active_count() > 1):
        n = 1
    return min(n, 2)




class _ReaderDied(Exception):
    """The reading process ended without saying it was done."""


def _run_pipeline(args: argparse.Namespace, config: Config) -> int:
    """``_run`` in two processes: a forked reading process opens each file,
    sniffs it, cuts its blocks (``_blocks``) and runs ``Explainer.scan`` and
    ``pick`` on them; this process gets per block only the line count, the
    framing-error count and ``pick``'s items and line indices (``marshal``,
    length-prefixed, through a pipe) and runs ``Explainer.detect`` and the
    output in block order. Both run the
    same functions as ``_run`` in the same order, so the output, messages
    and exit status are the same. Messages from the reading process:

    * ``("skip", message)``: the file could not be opened or sniffed;
    * ``("start", fmt)``, then ``("block", lines, framing errors, items,
      line indices)`` per block, then ``("end", cut lines, message or None)``;
    * ``("done",)`` after the last file, or ``("fail", traceback)``.

    The reading process never outlives this one: it dies with its parent
    (``PR_SET_PDEATHSIG`` where there is one; otherwise its next write
    fails), and it is killed and reaped when this function leaves early
    (``| head``, Ctrl-C, an error)."""
    out = getattr(args, "out", sys.stdout)
    # The compiled detector (most of the set-up) is built once, before the
    # fork: both processes start from it, the reading one for free.
    from .detect import build_detection

    detector = build_detection(config, Metrics())[0]
    if threading.active_count() > 1:  # pragma: no cover - set-up started a thread: no fork then
        return _run(args, config)
    out.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_BYTES)
    except (ImportError, OSError):
        pass  # the default pipe size only bounds the look-ahead more tightly
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child (tests/explain check it)
        os.close(r)
        _reader_main(w, args, config, parent, detector)
    os.close(w)
    done = False
    try:
        with open(r, "rb", buffering=_PIPE_BYTES) as rf:
            status = _detect_from(rf, args, config, pid, detector)
        done = True
        return status
    finally:
        _reap(pid, _CHILD_WAIT if done else 0.0)


def _reap(pid: int, wait: float) -> int | None:
    """Wait up to ``wait`` seconds for the child, then kill it -> its wait status."""
    deadline = time.monotonic() + wait
    while True:
        try:
            got, st = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if got:
            return st
        if time.monotonic() >= deadline:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                return os.waitpid(pid, 0)[1]
            except ChildProcessError:
                return None
        time.sleep(0.005)


def _receive(rf: Any, pid: int) -> tuple[Any, ...]:
    head = rf.read(_HEAD.size)
    if len(head) == _HEAD.size:
        (size,) = _HEAD.unpack(head)
        body = rf.read(size)
        if len(body) == size:
            return marshal.loads(body)  # type: ignore[no-any-return]
    st = _reap(pid, 1.0)
    if st is None:
        why = "it is gone"
    elif os.WIFSIGNALED(st):
        why = f"killed by signal {os.WTERMSIG(st)}"
    else:
        why = f"exit status {os.waitstatus_to_exitcode(st)}"
    raise _ReaderDied(f"the reading process ended before the end of the input ({why})")


def _detect_from(rf: Any, args: argparse.Namespace, config: Config, pid: int, detector: Any) -> int:
    """The detecting half of ``_run_pipeline``: ``_run``'s loop, fed by messages."""
    out = getattr(args, "out", sys.stdout)
    status = 0
    several = len(args.files) > 1
    progress = Progress(sys.stderr, _input_bytes(args.files))
    for path in args.files:
        try:
            msg = _receive(rf, pid)
        except _ReaderDied as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 1
        if msg[0] == "fail":
            raise RuntimeError("explain's reading process failed:\n" + msg[1])
        if msg[0] == "skip":
            print(msg[1], file=sys.stderr)
            status = 1
            continue
        ex = Explainer(config, msg[1], path, detector)
        detector = ex.detector
        _output(args, ex)
        jsonl = _JsonlWriter(*_binary(out), path if several else None) if args.format == "jsonl" else None
        base = 0
        died = None
        while True:
            try:
                msg = _receive(rf, pid)
            except _ReaderDied as exc:
                died = exc
                break
            if msg[0] != "block":
                break
            n, found = ex.detect(msg[1], msg[2], msg[3], msg[4])
            if jsonl is not None:
                jsonl.block(n, found, base)
            base += n
            progress.update(msg[5], path)
        if died is not None:
            print(f"error: {path}: {died}", file=sys.stderr)
            status = 1
        elif msg[0] == "fail":
            raise RuntimeError("explain's reading process failed:\n" + msg[1])
        else:
            ex.report.cut_lines = msg[1]
            if msg[2] is not None:
                print(msg[2], file=sys.stderr)
                status = 1
        rep = ex.finish()
        _finished(args, rep)
        args.found += rep.probe_lines
        if args.format == "text":
            _text_file(out, rep, first=path is args.files[0], args=args)
        if died is not None:
            break  # nothing reads the files after it
    progress.close()
    out.flush()
    return status



if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
