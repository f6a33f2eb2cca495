"""A small reader for Fluentd's config format (enough for the shipped configs).

Directives are ``<name arg>`` ... ``</name>``; parameters are ``key value``
lines; ``#`` starts a comment unless quoted. Values keep their text (no
type conversion), quotes are removed.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field


@dataclass
class Directive:
    name: str
    arg: str = ""
    params: dict[str, str] = field(default_factory=dict)
    children: list["Directive"] = field(default_factory=list)
    line: int = 0

    def find(self, name: str, **params: str) -> list["Directive"]:
        """Descendants called ``name`` whose params include ``params``."""
        out = []
        for c in self.children:
            if c.name == name and all(c.params.get(k) == v for k, v in params.items()):
                out.append(c)
            out.extend(c.find(name, **params))
        return out

    def child(self, name: str) -> "Directive":
        (c,) = [c for c in self.children if c.name == name]
        return c


_OPEN = re.compile(r"<\s*([A-Za-z_][\w-]*)\s*([^>]*)>\s*$")
_CLOSE = re.compile(r"</\s*([A-Za-z_][\w-]*)\s*>\s*$")


class FluentConfError(ValueError):
    pass


def _strip_comment(line: str) -> str:
    out, quote = [], None
    for ch in line:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        out.append(ch)
    return "".join(out).strip()


def parse(text: str) -> Directive:
    root = Directive("ROOT")
    stack = [root]
    for n, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        if not line:
            continue
        m = _CLOSE.match(line)
        if m:
            if len(stack) == 1 or stack[-1].name != m.group(1):
                raise FluentConfError(f"line {n}: unexpected </{m.group(1)}>")
            stack.pop()
            continue
        m = _OPEN.match(line)
        if m:
            d = Directive(m.group(1), m.group(2).strip(), line=n)
            stack[-1].children.append(d)
            stack.append(d)
            continue
        key, _, value = line.partition(" ")
        value = value.strip()
        if value[:1] in "\"'" and value[-1:] == value[:1]:
            value = shlex.split(value)[0]
        if key in stack[-1].params:
            raise FluentConfError(f"line {n}: {key} given twice")
        stack[-1].params[key] = value
    if len(stack) != 1:
        raise FluentConfError(f"<{stack[-1].name}> opened on line {stack[-1].line} is never closed")
    return root
