"""JSON depth bound shared by the JSON inputs (HTTP, NDJSON socket, exec-filter).

``json.loads`` recurses once per nesting level: ``[`` x 100,000 is a
``RecursionError`` (not a ``ValueError``) after a deep C recursion, and a
record a few hundred levels deep parses but cannot be packed (msgpack stops
at 511). ``json_too_deep`` decides before parsing, in C-speed passes over the
text, so a hostile line costs what an honest line of its size costs.
"""

from __future__ import annotations

import re

__all__ = ["MAX_JSON_DEPTH", "json_too_deep"]

#: Deepest JSON nesting a request may carry (arrays and objects, counting the
#: body's own array). Deeper is 400: Python's json would raise RecursionError
#: near 1000 levels, and msgpack refuses to pack past 511. Vector's events are
#: a few levels deep.
MAX_JSON_DEPTH = 64
# A JSON string, possessive so that an unterminated one costs linear time.
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.S)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]++")


def json_too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the arrays/objects of ``text`` may nest deeper than ``limit``,
    decided before ``json.loads`` recurses into them, in C-speed passes.

    False for every text nesting at most ``limit`` deep; True for every text
    nesting more than ``2 * limit`` deep, and for unbalanced brackets past the
    cheap count (JSON would reject those anyway). Strings are cut out first,
    then each pass deletes the innermost ``[]``/``{}`` pairs, which lowers
    the depth by at least one."""
    if text.count("[") + text.count("{") <= limit:
        return False
    skel = _NOT_BRACKETS.sub("", _JSON_STRING.sub("", text))
    for _ in range(limit):
        if not skel:
            return False
        shorter = skel.replace("[]", "").replace("{}", "")
        if len(shorter) == len(skel):
            return True
        skel = shorter
    return bool(skel)
