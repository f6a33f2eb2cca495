"""Scoring probetag's verdicts against ground truth (truth.jsonl rows).

The truth never comes from probetag: see tests/util/nmap.py. A probe line is
*named correctly* when the verdict's scanner is the truth's scanner and its
name is the truth's probe or a probe whose bytes on the wire were identical
(``wire_equal``: nmap's skypev2-version script sends exactly GetRequest's
bytes). Lines nmap sent outside its service-probe list (NSE scripts other
than byte-identical ones, UDP port-scan payloads) have no catalogue name to
expect: for them the scanner must be right and the name is reported.

RFC 5424 output (RSYSLOG_SyslogProtocol23Format) prints APP-NAME instead of
the TAG, so whatever rsyslog put into the TAG beyond APP-NAME is gone
(FIELD_GUIDE 3). What a line can carry there is judged from rsyslog's own
properties in the JSON output and the ground truth, never from the detector:

* its bytes survive only when the TAG is the APP-NAME (optionally with its
  ':', which the format drops): otherwise *lost: TAG beyond APP-NAME*;
* surviving bytes name the probe only when no line of another probe's flow
  in the same run survives as the same bytes (a lone ``#015`` ends
  GetRequest, HTTPOptions, RTSPRequest...), unless another line of its own
  flow names it: otherwise *shared: ...*, with the probes that share them.

Lines excluded that way (``unidentifiable``, with the reason) are not
required to be tagged; if they are, the name must still be right.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LOSSY_FORMATS = ("rfc5424",)


def recoverable(fmt: str, props: dict[str, Any]) -> bool:
    if fmt not in LOSSY_FORMATS:
        return True
    tag = str(props.get("syslogtag", ""))
    prog = str(props.get("programname", ""))
    return tag in (prog, prog + ":")


def _surviving(props: dict[str, Any]) -> str:
    """What RFC 5424 output keeps of a recoverable line: APP-NAME then MSG."""
    return str(props.get("programname", "")) + str(props.get("msg", ""))


def identifiable(fmt: str, truth: list[dict[str, Any]], props: list[dict[str, Any]]) -> list[str | None]:
    """Per line: None when the format carries enough to name its probe, else
    the reason it does not (see the module docstring)."""
    out: list[str | None] = [None] * len(truth)
    if fmt not in LOSSY_FORMATS:
        return out
    names: dict[str, set[str]] = {}  # surviving bytes -> probes whose flows log them
    for t, p in zip(truth, props):
        if t["kind"] == "probe" and recoverable(fmt, p):
            names.setdefault(_surviving(p), set()).add(t["probe"])
    own: dict[Any, bool] = {}  # flow -> one of its lines names the probe by itself
    for i, (t, p) in enumerate(zip(truth, props)):
        if t["kind"] != "probe":
            continue
        if not recoverable(fmt, p):
            out[i] = "lost: TAG beyond APP-NAME"
            continue
        equal = {t["probe"], *t.get("wire_equal", [])}
        others = names[_surviving(p)] - equal
        if others:
            out[i] = f"shared: {_surviving(p)!r} also ends {', '.join(sorted(others))}"
        else:
            own[t["flow"]] = True
    for i, t in enumerate(truth):
        if out[i] is not None and out[i].startswith("shared") and own.get(t["flow"]):
            out[i] = None  # its flow's other lines name it
    return out


def same_scanner(verdict: Any, truth: str) -> bool:
    """The catalogue's ``scanner`` is the tool (``nmap`` for its service
    probes, NSE scripts and -sU payloads alike), as in the ground truth."""
    return verdict == truth


def accepted(truth: dict[str, Any]) -> set[str] | None:
    """Names that count as correct; None = any name from the right scanner."""
    probe = truth["probe"]
    names = {probe, *truth.get("wire_equal", [])}
    if probe.startswith(("nse:", "portscan:")):
        rest = names - {probe}
        return rest or None
    return names


@dataclass
class Score:
    fmt: str
    lines: int = 0
    probe_lines: int = 0
    recoverable_probe_lines: int = 0
    tagged: int = 0
    correct: int = 0
    correct_recoverable: int = 0
    false_positives: list[tuple[int, str, Any]] = field(default_factory=list)
    misnamed: list[tuple[int, str, Any]] = field(default_factory=list)
    missed: list[tuple[int, str]] = field(default_factory=list)
    unrecoverable_missed: int = 0
    unidentifiable: dict[str, int] = field(default_factory=dict)  # reason -> lines
    extra_names: dict[str, set[str]] = field(default_factory=dict)

    @property
    def precision(self) -> float:
        return self.correct / self.tagged if self.tagged else 1.0

    @property
    def recall(self) -> float:
        return self.correct_recoverable / self.recoverable_probe_lines if self.recoverable_probe_lines else 1.0

    def problems(self) -> str:
        """One readable paragraph for an assertion message."""
        from collections import Counter

        out = []
        if self.false_positives:
            out.append("tagged but not probes (line, kind, name): " + repr(self.false_positives[:10]))
        if self.misnamed:
            pairs = Counter(f"{t} -> {v[0]}/{v[1]}" for _, t, v in self.misnamed)
            out.append("misnamed (truth -> verdict): " + ", ".join(f"{k} x{c}" for k, c in sorted(pairs.items())))
        if self.missed:
            names = Counter(p for _, p in self.missed)
            out.append("not tagged: " + ", ".join(f"{k} x{c}" for k, c in sorted(names.items()))
                       + f" (lines {[n for n, _ in self.missed][:30]})")
        return f"{self.fmt}: " + "; ".join(out)

    def line(self) -> str:
        return (f"{self.fmt:<12} lines {self.lines:>4}  probe lines {self.probe_lines:>3} "
                f"(recoverable {self.recoverable_probe_lines:>3})  tagged {self.tagged:>3}  "
                f"precision {self.precision:.3f}  recall {self.recall:.3f}  "
                f"false+ {len(self.false_positives)}  misnamed {len(self.misnamed)}  missed {len(self.missed)}"
                + (f"  (unrecoverable, untagged: {self.unrecoverable_missed})" if self.unrecoverable_missed else "")
                + (f"\n{'':12} not identifiable from what the format keeps: "
                   + "; ".join(f"{k} x{c}" for k, c in sorted(self.unidentifiable.items()))
                   if self.unidentifiable else ""))


def score(fmt: str, truth: list[dict[str, Any]], props: list[dict[str, Any]],
          verdicts: list[dict[str, Any] | None]) -> Score:
    assert len(truth) == len(verdicts) == len(props), (len(truth), len(verdicts), len(props))
    s = Score(fmt, lines=len(truth))
    why = identifiable(fmt, truth, props)
    for t, p, v, reason in zip(truth, props, verdicts, why):
        n = t["line"]
        if v is not None:
            s.tagged += 1
        if t["kind"] != "probe":
            if v is not None:
                s.false_positives.append((n, t["kind"], v.get("name")))
            continue
        s.probe_lines += 1
        rec = reason is None
        if not rec:
            key = reason.split(" also ")[0]
            s.unidentifiable[key] = s.unidentifiable.get(key, 0) + 1
        s.recoverable_probe_lines += rec
        if v is None:
            if rec:
                s.missed.append((n, t["probe"]))
            else:
                s.unrecoverable_missed += 1
            continue
        names = accepted(t)
        ok = same_scanner(v.get("scanner"), t["scanner"]) and (names is None or v.get("name") in names)
        if not ok:
            s.misnamed.append((n, t["probe"], (v.get("scanner"), v.get("name"))))
            continue
        s.correct += 1
        s.correct_recoverable += rec
        if names is None:
            s.extra_names.setdefault(t["probe"], set()).add(str(v.get("name")))
    return s


#: lines printed in pytest's terminal summary (see conftest.py)
REPORT: list[str] = []
