"""The C walker (``probetag._speedups.walk``) against the reference walk
(``probetag._stage._walk_py``: msgpack's ``Unpacker.skip()``/``tell()`` and
the ``_FAST_ENTRY`` regex).

Chunks are written byte by byte here (from a seeded ``random.Random``:
Hypothesis draws the seeds of chunks and of their damage; its recursive strategies are
far too slow for thousands of cases), not with ``msgpack.packb``, so every
header form appears (a str32 header on a 3-byte string is valid msgpack and
Python's packer never writes one): every msgpack type, every time form the
fast check accepts or rejects, Fluent Bit group markers, nesting at and past
msgpack's depth limit, declared lengths far past the buffer, truncation and
random corruption. Both walks must give the same offsets, slow entries, end
and error for every input.
"""

from __future__ import annotations

import random
import struct

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probetag import _stage

sp = pytest.importorskip("probetag._speedups", reason="the C accelerator was not built (no compiler?)")

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def c_walk(data) -> tuple[list[int], list[int], int, str | None]:
    starts, slow, end, error = _stage._walk_c(data)
    return list(starts), slow, end, error


def agree(data: bytes) -> tuple[list[int], list[int], int, str | None]:
    ref = _stage._walk_py(data)
    got = c_walk(data)
    assert got == ref, (data[:200].hex(), got[1:], ref[1:])
    return got


# -- msgpack written by hand ------------------------------------------------

def _u(n: int, size: int) -> bytes:
    return n.to_bytes(size, "big")


def str_header(n: int, form: int) -> bytes:
    """form 0: the smallest header that fits; 1: str8; 2: str16; 3: str32."""
    if form == 0 and n < 32:
        return bytes([0xA0 | n])
    if form <= 1 and n < 256:
        return b"\xd9" + _u(n, 1)
    if form <= 2 and n < 65536:
        return b"\xda" + _u(n, 2)
    return b"\xdb" + _u(n, 4)


def bin_header(n: int, form: int) -> bytes:
    if form <= 1 and n < 256:
        return b"\xc4" + _u(n, 1)
    if form <= 2 and n < 65536:
        return b"\xc5" + _u(n, 2)
    return b"\xc6" + _u(n, 4)


def ext(code: int, data: bytes, form: int) -> bytes:
    fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
    t = struct.pack("b", code)
    if form == 0 and len(data) in fixed:
        return bytes([fixed[len(data)]]) + t + data
    if form <= 1 and len(data) < 256:
        return b"\xc7" + _u(len(data), 1) + t + data
    if form <= 2 and len(data) < 65536:
        return b"\xc8" + _u(len(data), 2) + t + data
    return b"\xc9" + _u(len(data), 4) + t + data


def array_header(n: int, form: int) -> bytes:
    if form == 0 and n < 16:
        return bytes([0x90 | n])
    if form <= 1 and n < 65536:
        return b"\xdc" + _u(n, 2)
    return b"\xdd" + _u(n, 4)


def map_header(n: int, form: int) -> bytes:
    if form == 0 and n < 16:
        return bytes([0x80 | n])
    if form <= 1 and n < 65536:
        return b"\xde" + _u(n, 2)
    return b"\xdf" + _u(n, 4)


def scalar(rng: random.Random) -> bytes:
    kind = rng.randrange(8)
    form = rng.randrange(4)
    if kind == 0:
        return rng.choice([b"\xc0", b"\xc2", b"\xc3"])
    if kind == 1:
        return bytes([rng.choice([rng.randrange(0x80), rng.randrange(0xE0, 0x100)])])
    if kind == 2:
        code, size = rng.choice([(0xCC, 1), (0xCD, 2), (0xCE, 4), (0xCF, 8), (0xD0, 1), (0xD1, 2),
                                 (0xD2, 4), (0xD3, 8), (0xCA, 4), (0xCB, 8)])
        return bytes([code]) + rng.randbytes(size)
    if kind in (3, 4):
        data = rng.randbytes(rng.choice([0, 1, 5, 31, 32, 40]))
        return (str_header if kind == 3 else bin_header)(len(data), form) + data
    if kind == 5:
        return ext(rng.randrange(-128, 128), rng.randbytes(rng.choice([0, 1, 2, 3, 4, 8, 16, 20])), form)
    if kind == 6:  # a long string: str16/str32, bin16/bin32 headers for real
        data = rng.randbytes(rng.choice([255, 256, 300]))
        return (str_header if rng.random() < 0.5 else bin_header)(len(data), form) + data
    return bytes([rng.randrange(0x80)])


def obj(rng: random.Random, depth: int = 0) -> bytes:
    if depth >= 4 or rng.random() < 0.6:
        return scalar(rng)
    n = rng.randrange(5)
    form = rng.randrange(3)
    if rng.random() < 0.5:
        return array_header(n, form) + b"".join(obj(rng, depth + 1) for _ in range(n))
    return map_header(n, form) + b"".join(obj(rng, depth + 1) + obj(rng, depth + 1) for _ in range(n))


#: Every time form the fast check looks at, on both sides of each bound.
NSECS = [0, 1, 999_999_999, 1_000_000_000, 0x3AFFFFFF, 0x3B000000, 0x3B99FFFF, 0x3B9A0000, 0x3B9AC8FF,
         0x3B9AC900, 0x3B9AC9FF, 0x3B9ACA00, 0x3B9B0000, 0xFFFFFFFF]
SECS = [0, 1, 1_800_000_000, 0xFFFFFFFD, 0xFFFFFFFE, 0xFFFFFFFF, 0xFEFFFFFF, 0xFFFEFFFF, 0xFFFFFEFF]
TIMES = (
    [b"\xd7\x00" + _u(s, 4) + _u(ns, 4) for s in SECS for ns in NSECS]
    + [ext(0, _u(1_800_000_000, 4) + _u(0, 4), form) for form in (1, 2, 3)]      # EventTime, other ext forms
    + [b"\xd7\x01" + _u(1_800_000_000, 8), b"\xd7\xff" + _u(1_800_000_000, 8),   # other ext types
       b"\xd6\x00" + _u(1_800_000_000, 4), b"\xd8\x00" + bytes(16)]
    + [bytes([n]) for n in (0, 1, 0x7F, 0xE0, 0xFF)]                             # fixints
    + [b"\xce" + _u(n, 4) for n in (0, 1, 0x100, 0x10000, 0x1000000, 0xFFFFFFFF)]
    + [b"\xcc\x05", b"\xcd\x00\x05", b"\xcf" + _u(5, 8), b"\xd2" + _u(5, 4)]
    + [b"\xcb" + struct.pack(">d", 1.8e9), b"\xca" + struct.pack(">f", 1.5), b"\xc0", b"\xc2", b"\xa11"]
    + [b"\x92\xd7\x00" + _u(1_800_000_000, 8) + b"\x80",                        # Fluent Bit [[time, meta], record]
       b"\x92\xd7\x00" + _u(0xFFFFFFFF, 4) + _u(0, 4) + b"\x80"]                 # its group marker
)


def record(rng: random.Random) -> bytes:
    if rng.random() < 0.2:
        return obj(rng)
    n = rng.randrange(4)
    return map_header(n, rng.randrange(3)) + b"".join(scalar(rng) + obj(rng, 1) for _ in range(n))


def entry(rng: random.Random) -> bytes:
    shape = rng.randrange(10)
    if shape == 0:
        return obj(rng)  # not an entry at all: the full path rejects it
    head = b"\x92" if shape > 1 else rng.choice([b"\x91", b"\x93", b"\xdc\x00\x02", b"\xdd\x00\x00\x00\x02"])
    n = {b"\x91": 1, b"\x93": 3}.get(head, 2)
    return head + b"".join([rng.choice(TIMES), record(rng), obj(rng)][:n])


def chunk(seed: int) -> bytes:
    rng = random.Random(seed)
    return b"".join(entry(rng) for _ in range(rng.randrange(13)))


seeds = st.integers(0, 2**64)


@settings(max_examples=2500, **SETTINGS)
@given(seeds)
def test_valid_chunks_agree(seed):
    data = chunk(seed)
    starts, _slow, end, error = agree(data)
    assert error is None and end == len(data) and starts[-1] == len(data)


@settings(max_examples=2500, **SETTINGS)
@given(seeds, seeds)
def test_corrupted_chunks_agree(seed, damage):
    buf = bytearray(chunk(seed))
    rng = random.Random(damage)
    for _ in range(rng.randrange(1, 5)):
        how = rng.randrange(4)
        i = rng.randrange(len(buf) + 1)
        if how == 0:                      # truncate
            del buf[i:]
        elif how == 1 and i < len(buf):   # overwrite one byte
            buf[i] = rng.randrange(256)
        elif how == 2:                    # insert the never-used byte
            buf[i:i] = b"\xc1"
        else:                             # insert a header with a huge declared length
            buf[i:i] = rng.choice(HUGE)
    agree(bytes(buf))


HUGE = [b"\xdb\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff", b"\xc9\xff\xff\xff\xfe\x00", b"\xdd\xff\xff\xff\xff",
        b"\xdf\xff\xff\xff\xff", b"\xda\xff\xff", b"\xde\xff\xff", b"\xdc\xff\xff", b"\xc8\xff\xff\x00",
        b"\xd9\xff", b"\xc4\xff", b"\xc7\xff\x00", b"\xdd\x80\x00\x00\x00", b"\xdf\x80\x00\x00\x00"]


@settings(max_examples=1500, **SETTINGS)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_agree(data):
    agree(data)


@pytest.mark.parametrize("head", HUGE)
def test_huge_declared_lengths_are_truncation(head):
    ok = b"\x92\xd7\x00" + _u(1_800_000_000, 4) + _u(0, 4) + b"\x81\xa1m\xa1x"
    starts, slow, end, error = agree(ok + head + b"abc")
    assert (starts, slow, end, error) == ([0, len(ok)], [], len(ok), "entries_truncated")


CONTAINERS = {  # one level of nesting with one open slot, and its kind
    "fixarray": b"\x91", "array16": b"\xdc\x00\x01", "array32": b"\xdd\x00\x00\x00\x01",
    "fixmap": b"\x81\x01", "map16": b"\xde\x00\x01\x01", "map32": b"\xdf\x00\x00\x00\x01\x01",
}
INNER = {"int": b"\x01", "empty-array": b"\x90", "empty-map": b"\x80", "nothing": b"",
         "array16-cut": b"\xdc\x00", "map32-empty": b"\xdf\x00\x00\x00\x00", "bad": b"\xc1"}


@pytest.mark.parametrize("kind", sorted(CONTAINERS))
@pytest.mark.parametrize("inner", sorted(INNER))
def test_nesting_limit_matches_msgpack(kind, inner):
    assert sp.STACK_SIZE == 1024
    for depth in range(sp.STACK_SIZE - 2, sp.STACK_SIZE + 3):
        data = b"\x92\x01\x80" + CONTAINERS[kind] * depth + INNER[inner]
        starts, _slow, _end, error = agree(data)
        if inner == "int" and depth <= sp.STACK_SIZE:
            assert error is None and starts == [0, 3, len(data)]
        if inner == "empty-array" and depth == sp.STACK_SIZE:
            # msgpack checks the depth before looking at the count
            assert error == "entries_undecodable"


def test_ext32_length_wraps_like_msgpack():
    """msgpack counts an ext's type and data as one trail of length + 1 in
    32 bits: 0xFFFFFFFF wraps to an empty trail, so ``c9 ff ff ff ff`` is a
    whole 5-byte object and the next byte starts another one."""
    up = msgpack.Unpacker()
    up.feed(b"\xc9\xff\xff\xff\xff\x05")
    up.skip()
    assert up.tell() == 5
    assert agree(b"\xc9\xff\xff\xff\xff\x05\x92\x05\x80") == ([0, 5, 6, 9], [0, 1], 9, None)


def test_stack_limit_is_msgpacks():
    """The C constant is msgpack's MSGPACK_EMBED_STACK_SIZE: depth N of
    arrays around an int is fine, one more container is a StackError."""
    up = msgpack.Unpacker()
    up.feed(b"\x91" * sp.STACK_SIZE + b"\x01")
    up.skip()
    up = msgpack.Unpacker()
    up.feed(b"\x91" * sp.STACK_SIZE + b"\x90")
    with pytest.raises(msgpack.StackError):
        up.skip()


@pytest.mark.parametrize("t", TIMES, ids=lambda b: b.hex()[:24])
@pytest.mark.parametrize("record", [b"\x80", b"\x81\xa1m\xa1x", b"\xde\x00\x00", b"\xdf\x00\x00\x00\x00", b"\x90",
                                    b"\xa0", b"\xc0"], ids=lambda b: b.hex())
def test_every_time_form(t, record):
    data = b"\x92" + t + record
    starts, slow, end, error = agree(data)
    assert starts == [0, len(data)] and error is None
    assert slow == ([] if _stage._FAST_ENTRY.match(data) else [0])


def test_fast_entry_forms_are_fast():
    """The entries every forwarder sends take no full path."""
    fast = [b"\x92\xd7\x00" + _u(1_800_000_000, 4) + _u(999_999_999, 4) + b"\x81\xa1m\xa1x",
            b"\x92\x05\x80", b"\x92\xce" + _u(1_800_000_000, 4) + b"\xde\x00\x00"]
    slow = [b"\x92\xd7\x00" + _u(0xFFFFFFFF, 4) + _u(0, 4) + b"\x80",  # group marker
            b"\x92\xd7\x00" + _u(1, 4) + _u(1_000_000_000, 4) + b"\x80",  # bad nanoseconds
            b"\x92\x00\x80", b"\x92\xce" + _u(0, 4) + b"\x80", b"\x92\xc0\x80", b"\x92\x05\x90"]
    starts, got_slow, end, error = agree(b"".join(fast + slow))
    assert got_slow == list(range(len(fast), len(fast) + len(slow)))
    assert error is None and len(starts) == len(fast) + len(slow) + 1


def test_buffer_types_and_errors():
    data = b"\x92\x05\x80\x92\x05\x81\xa1m\xa1x"
    ref = c_walk(data)
    assert c_walk(bytearray(data)) == ref == c_walk(memoryview(data))
    assert c_walk(memoryview(b"zz" + data)[2:]) == ref
    assert c_walk(b"") == ([0], [], 0, None)
    with pytest.raises(TypeError):
        sp.walk("not bytes")
    with pytest.raises(TypeError):
        sp.walk(None)


def test_big_chunk_grows_offsets():
    """Thousands of one-byte-ish entries: the offsets array grows past its
    first guess (len / 64) many times."""
    data = b"\x92\x05\x80" * 20_000 + b"\x01" * 5_000 + b"\x92"
    starts, slow, end, error = agree(data)
    assert len(starts) == 25_001 and error == "entries_truncated" and len(slow) == 5_000


def simple_entry(rng: random.Random) -> bytes:
    """[time, map of strings, bins and scalars]: the C walk's one-loop path."""
    n = rng.randrange(20)
    form = rng.randrange(2)  # fixmap or map16: the forms that path takes
    body = b"".join(scalar(rng) + scalar(rng) for _ in range(n))
    return b"\x92" + rng.choice(TIMES) + map_header(n, form) + body


@settings(max_examples=400, **SETTINGS)
@given(seeds)
def test_simple_entries_cut_anywhere_agree(seed):
    rng = random.Random(seed)
    data = b"".join(simple_entry(rng) for _ in range(rng.randrange(1, 4)))
    got = agree(data)
    assert got[3] is None or data[:1] != b"\x92"
    for cut in sorted({rng.randrange(len(data) + 1) for _ in range(12)}):
        agree(data[:cut])


@settings(max_examples=300, **SETTINGS)
@given(seeds)
def test_near_is_the_stages_neighbour_test(seed):
    rng = random.Random(seed)
    parts = [b"\x92\x01\x81\xa1m\xc4" + bytes([n]) + bytes(rng.choice(b"ab.1 ") for _ in range(n))
             for n in (rng.choice([0, 3, 20, 90, 150, 200]) for _ in range(rng.randrange(1, 15)))]
    data = b"".join(parts)
    starts = _stage._walk_c(data)[0]
    count = len(starts) - 1
    needle = rng.choice([b"", b"a.1", b"ab", b"b" * 40])
    short = rng.choice([0, 10, 112])
    for centre in range(count):
        b, a = rng.randrange(5), rng.randrange(8)
        want = [j for j in range(max(0, centre - b), min(count, centre + a + 1))
                if starts[j + 1] - starts[j] <= short or (needle and data.find(needle, starts[j], starts[j + 1]) >= 0)]
        assert sp.near(data, starts, centre, b, a, short, needle) == want


#: Entry bodies around the daemon-line rule's edges: a ``pid`` key with an
#: int, a digit string, a word; ``name[pid]: `` TAGs with and without a name
#: byte before, too many digits, a space or nothing after, cut at the end.
_DAEMON_BITS = [b"\xa3pid\xcd\x01\x02", b"\xa3pid\xa41234", b"\xa3pid\xa3abc", b"\xa3pid\x05", b"\xa3pid",
                b"sshd[123]: Accepted", b" [123]: x", b"cron[12345678901]: x", b"a[1]:  x", b"a[1]: ", b"a[1]:\tx",
                b"x/y-z.q_[7]: go", b"[9]: y", b"GET / HTTP/1.0\r", b"\xff[1]: z", b"k[]: v", b"\xa3pi"]


@settings(max_examples=400, **SETTINGS)
@given(seeds)
def test_near_sender_less_is_the_stages_daemon_rule(seed):
    rng = random.Random(seed)
    parts = []
    for _ in range(rng.randrange(1, 15)):
        body = b"".join(rng.choice(_DAEMON_BITS) for _ in range(rng.randrange(0, 4)))
        body += bytes(rng.choice(b"ab.1 [") for _ in range(rng.choice([0, 3, 40, 120])))
        body = body[:rng.randrange(len(body) + 1)] if rng.random() < 0.3 else body
        parts.append(b"\x92\x01\x81\xa1m\xc5" + len(body).to_bytes(2, "big") + body)
    data = b"".join(parts)
    starts = _stage._walk_c(data)[0]
    count = len(starts) - 1
    short = rng.choice([0, 10, 112])
    for centre in range(count):
        b, a = rng.randrange(9), rng.randrange(7)
        want = [j for j in range(max(0, centre - b), min(count, centre + a + 1))
                if starts[j + 1] - starts[j] <= short or not _stage._daemon_entry(data, starts[j], starts[j + 1])]
        assert sp.near_sender_less(data, starts, centre, b, a, short) == want
    # and the rule says yes somewhere: the test can fail
    assert any(_stage._daemon_entry(d, 0, len(d)) for d in (b"sshd[1]: x", b"\xa3pid\x05\x00"))
