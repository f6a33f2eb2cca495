#!/usr/bin/env python3
"""Copy a capture_extra.py output tree into the fixture layout, gzipping what
only the labelling and deriving steps read, then label and derive there.

    python3 pack_extra.py SRC_DIR [DEST_DIR]   (default DEST tests/fixtures/corpus-extra)

Kept plain: the log files the evaluator runs `probetag explain` on
(traditional, fromhost_ip, fromhost, net_/sys_default, net_/sys_iso),
relay_omfwd.bin, configs, run.json, nmap's XML.  Gzipped: json.log,
*_meta.log, *_trace.txt, *.nmap, benign_manifest.jsonl, relay_chunks.jsonl,
and the generated labels.jsonl, sessions.jsonl, records/*.jsonl.
"""
import gzip
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
GZ_SUFFIXES = ("json.log", "_meta.log", "_trace.txt", ".nmap", "benign_manifest.jsonl", "relay_chunks.jsonl")


def main(argv):
    src = os.path.abspath(argv[0])
    dst = os.path.abspath(argv[1] if len(argv) > 1 else os.path.join(HERE, "..", "..", "tests", "fixtures",
                                                                     "corpus-extra"))
    for sub in ("rsyslog", "syslog-ng"):
        for run in sorted(os.listdir(os.path.join(src, sub))):
            sd, dd = os.path.join(src, sub, run), os.path.join(dst, sub, run)
            if sub == "rsyslog" and not os.path.exists(os.path.join(sd, "run.json")):
                continue
            if os.path.isdir(dd):
                shutil.rmtree(dd)
            os.makedirs(dd)
            for fn in sorted(os.listdir(sd)):
                s = os.path.join(sd, fn)
                if fn.endswith(GZ_SUFFIXES):
                    with open(s, "rb") as fi, gzip.GzipFile(os.path.join(dd, fn + ".gz"), "wb", mtime=0) as fo:
                        shutil.copyfileobj(fi, fo)
                else:
                    shutil.copy(s, os.path.join(dd, fn))
                    os.chmod(os.path.join(dd, fn), 0o644)
    subprocess.run([sys.executable, os.path.join(HERE, "label_extra.py"), "--gzip", dst], check=True)
    subprocess.run([sys.executable, os.path.join(HERE, "derive_records.py"), "--gzip", dst], check=True)


if __name__ == "__main__":
    main(sys.argv[1:])
