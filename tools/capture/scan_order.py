"""The order in which a scanner sends its probes, from its own trace output.

nmap's ``--version-trace`` prints one ``Service scan sending probe NAME to
HOST:PORT (PROTO)`` line per probe it sends. This tool reads such output
(nmap run as a program; none of nmap's data files are read) and writes the
observed send order as a sequence file of the catalogue
(``plugin/probetag/detect/catalogue/sequences/*.yaml``), which the detector
uses to name a line that its bytes alone leave ambiguous by where it falls
in its source's scan.

    python3 tools/capture/scan_order.py --out nmap.yaml \
        --provenance "observed: ..." TRACE [TRACE ...]

Each trace gives one sequence per (port, protocol). A probe sent to several
ports keeps the position of its first sending. nmap sends the probes whose
port list names the target port first; the traces used here scanned ports
that no probe names, so the order is nmap's general order.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

_SEND = re.compile(r"^Service scan sending probe (\S+) to (\S+):(\d+) \((tcp|udp)\)")
_NSE_START = re.compile(r"^NSE: Starting (\S+) M:\S+ against \S+:(\d+)\.")
_NSE_END = re.compile(r"^NSE: Finished (\S+) M:\S+ against \S+:(\d+)\.")
_NSE_DATA = re.compile(r"^NSE: (TCP|UDP) \S+ > \S+:(\d+) \| ([0-9a-f]{8}: .*)$")
_HEX_ROW = re.compile(r"^([0-9a-f]{8}): (.*)$")


def orders(text: str) -> dict[tuple[int, str], list[str]]:
    out: dict[tuple[int, str], list[str]] = {}
    for line in text.splitlines():
        m = _SEND.match(line)
        if m is None:
            continue
        name, port, proto = m.group(1), int(m.group(3)), m.group(4)
        seq = out.setdefault((port, proto), [])
        if name != "NULL" and name not in seq:
            seq.append(name)
    return out


def _hex_row(row: str) -> bytes:
    """The bytes of one row of nmap's hex dump (``00000010: 00 01 86 a0 ...``,
    16 columns of 3 characters, then the printable column)."""
    m = _HEX_ROW.match(row)
    if m is None:
        return b""
    return bytes(int(x, 16) for x in m.group(2)[:48].split())


def nse_sends(text: str) -> dict[tuple[int, str], list[tuple[str, bytes]]]:
    """(port, proto) -> [(script, first send)] in the order the scripts
    started on that port."""
    out: dict[tuple[int, str], list[tuple[str, bytes]]] = {}
    running: dict[int, list[str]] = {}
    unclear: set[tuple[int, str]] = set()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        m = _NSE_START.match(line)
        if m is not None:
            running.setdefault(int(m.group(2)), []).append(m.group(1))
            continue
        m = _NSE_END.match(line)
        if m is not None:
            names = running.get(int(m.group(2)), [])
            if m.group(1) in names:
                names.remove(m.group(1))
            continue
        m = _NSE_DATA.match(line)
        if m is None:
            continue
        proto, port = m.group(1).lower(), int(m.group(2))
        data = _hex_row(m.group(3))
        while i < len(lines) and _HEX_ROW.match(lines[i]):
            data += _hex_row(lines[i])
            i += 1
        names = running.get(port, [])
        seq = out.setdefault((port, proto), [])
        if len(names) != 1:
            # two scripts at once on this port: whose bytes these are is not known
            unclear.update((name, proto) for name in names)
            continue
        if names[0] not in (x[0] for x in seq):
            seq.append((names[0], data))
    return {k: [x for x in v if (x[0], k[1]) not in unclear] for k, v in out.items()}


def nse_steps(per_port: list[list[tuple[str, bytes]]]) -> list[tuple[str, bytes, list[int]]]:
    """One list of (script, first send, offsets that differ between ports)
    from every port's (longest first; a script's bytes from its first port)."""
    per_port = sorted(per_port, key=len, reverse=True)
    steps: list[tuple[str, bytes, list[int]]] = []
    for seq in per_port:
        for name, data in seq:
            for k, (n, d, varies) in enumerate(steps):
                if n == name:
                    if len(d) == len(data):
                        varies = sorted(set(varies) | {j for j in range(len(d)) if d[j] != data[j]})
                    steps[k] = (n, d, varies)
                    break
            else:
                steps.append((name, data, []))
    return steps


def _yaml_bytes(data: bytes) -> str:
    out = []
    for b in data:
        c = chr(b)
        if c == "\\" or c == '"':
            out.append("\\" + c)
        elif 0x20 <= b < 0x7f:
            out.append(c)
        else:
            out.append("\\x%02x" % b)
    return '"' + "".join(out) + '"'


def merge(seqs: list[list[str]]) -> list[str]:
    """One order holding every sequence's probes (longest first; a probe
    missing from it is placed after its predecessor in its own sequence)."""
    seqs = sorted(seqs, key=len, reverse=True)
    merged = list(seqs[0]) if seqs else []
    for seq in seqs[1:]:
        prev = None
        for name in seq:
            if name not in merged:
                merged.insert(merged.index(prev) + 1 if prev in merged else 0, name)
            prev = name
    return merged


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("traces", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--scanner", default="nmap")
    ap.add_argument("--provenance", required=True)
    args = ap.parse_args(argv)
    by_proto: dict[str, list[list[str]]] = {}
    nse_by_proto: dict[str, list[list[tuple[str, bytes]]]] = {}
    for path in args.traces:
        text = path.read_text(errors="replace")
        for (_port, proto), seq in orders(text).items():
            by_proto.setdefault(proto, []).append(seq)
        for (_port, proto), sends in nse_sends(text).items():
            nse_by_proto.setdefault(proto, []).append(sends)
    lines = [f"# The order {args.scanner} sends its probes in, observed from its own trace output.",
             "# Generated by tools/capture/scan_order.py; regenerate rather than edit by hand.", ""]
    for proto in sorted(by_proto):
        order = merge(by_proto[proto])
        lines.append(f"- scanner: {args.scanner}")
        lines.append(f"  transport: {proto}")
        lines.append(f"  provenance: \"{args.provenance}\"")
        lines.append("  order:")
        lines.extend(f"    - \"{name}\"" for name in order)
        steps = nse_steps(nse_by_proto.get(proto, []))
        if steps:
            lines.append("  nse:")
            for name, data, varies in steps:
                lines.append(f"    - script: \"{name}\"")
                lines.append(f"      sends: {_yaml_bytes(data)}")
                lines.append(f"      varies: {varies}")
        lines.append("")
    args.out.write_text("\n".join(lines))
    print(f"{args.out}: {', '.join(f'{p} {len(merge(s))} probes' for p, s in sorted(by_proto.items()))}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
