/* probetag._speedups: the stage's per-entry walk in C (optional accelerator).
 *
 * Theory of operation
 * -------------------
 * walk(buffer) frames a chunk of packed msgpack entries exactly as the
 * stage's reference loop does with msgpack.Unpacker.skip()/tell() and the
 * _FAST_ENTRY regex (probetag/_stage.py, _walk_py), without building a
 * Python object per entry. It returns
 *
 *     (offsets, slow, end, error)
 *
 *   offsets  bytes: native uint64 start offset of every whole entry, then
 *            the end of the last whole entry (the sentinel); the stage reads
 *            it through memoryview(offsets).cast("Q").
 *   slow     list of the indices of entries that fail the fast entry check,
 *            or hold what msgpack-python's unpacker refuses although the
 *            skipper frames it: a map or an array as a map key, an ext of
 *            a reserved type (-128..-2), a Timestamp ext (type -1) of a bad
 *            length or with nanoseconds >= 10**9.
 *            The stage's full path then rejects them (entry_undecodable)
 *            instead of forwarding a record no peer can decode.
 *   end      offset just past the last whole entry.
 *   error    None, "entries_truncated", "entries_undecodable", or
 *            "too_many_entries" when an entry past max_entries (if given,
 *            >= 0) is met; the walk stops there.
 *
 * The skipper follows msgpack-python's unpack_template.h (construct off,
 * i.e. what Unpacker.skip() runs):
 *   - every object is read front to back, byte by byte in the same order, so
 *     the first failure met is the one msgpack meets;
 *   - an object that runs past the buffer (a header, a length field or a
 *     payload) is OutOfData -> "entries_truncated";
 *   - 0xc1 (never used) is FormatError -> "entries_undecodable";
 *   - a container header (any count, 0 included) met while STACK_SIZE
 *     containers are open is StackError -> "entries_undecodable". msgpack
 *     checks the depth after reading a 16/32-bit count, so a truncated count
 *     is OutOfData first;
 *   - an ext32 of declared length 0xFFFFFFFF is 5 bytes long (msgpack's
 *     trail counter wraps, see case 0xc9);
 *   - skip mode calls no callbacks, so no length limit (max_str_len...) and
 *     no ext/timestamp validation applies: those never fail here either.
 *
 * contains_any(buffer, needles) says whether any of a few short byte strings
 * occurs in the buffer: memchr for each distinct first byte, then compares. For a
 * 2-byte needle, bytes.find and glibc's memmem both crawl at ~1 byte/ns;
 * this runs at memchr speed when the first byte is rare. The prefilter gates
 * its short-literal scan on it.
 *
 * Hits(lens, weak) collects the prefilter's literal hits and maps them to
 * entries (probetag/detect/_prefilter.py, Prefilter.classify). hyperscan's
 * Python binding calls its match handler once per occurrence; a binary
 * probe line holds dozens of escapes, so a Python handler (a frame and a
 * tuple per occurrence, then a sort and a bisect per entry) cost more than
 * the scan's own work on a chunk with a few probe lines. A Hits object is
 * that handler in C: each call stores (end offset, pattern id) in an array,
 * and entries(starts) finds each hit's entry by binary search and returns
 * (sorted indices of every hit entry, set of those hit only by weak
 * literals), the answer classify() gives in Python. lens: native uint32
 * length per pattern id; weak: one byte per pattern id, non-zero for a weak
 * literal. A hit starting before 0 (impossible for a literal found in the
 * data) is dropped, like the Python path's bisect does.
 *
 * hyperscan's binding calls the handler per occurrence, ~0.15 us each: a
 * record of a few MB holding a probe piece over and over (or a binary probe
 * line in a line of its own) would take that per piece. Hits.guard(starts,
 * limit) counts the hits per entry as they come; the limit + 1st hit in one
 * entry stops the scan (the handler returns True), resume() says where to
 * scan on (the next entry's start, added to every later offset) and that
 * entry counts as hit by a strong literal: it is decoded and read anyway,
 * and its other hits would change nothing.
 *
 * Every read is bounds-checked against the buffer's length; lengths are
 * compared as remaining-byte counts, so no offset arithmetic can overflow.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE /* memmem */
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* msgpack-python's MSGPACK_EMBED_STACK_SIZE (1024 in msgpack 1.x). The test
 * suite checks this bound against the installed msgpack. */
#define STACK_SIZE 1024

enum { OK = 0, TRUNCATED = 1, UNDECODABLE = 2, TOO_MANY = 3 };

static inline uint32_t be16(const unsigned char *p) { return ((uint32_t)p[0] << 8) | p[1]; }
static inline uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Skip one msgpack object starting at d[*pos] (n = buffer length).
 * On OK, *pos is just past it. */
/* Would msgpack-python's unpacker (raw=False, strict_map_key=False) refuse
 * the ext at d[p] of type -1 (a Timestamp)? data/len: its payload. 4 bytes
 * is always valid; 8 and 12 need nanoseconds < 10**9; any other length
 * raises ValueError. The caller has checked that the payload is there. */
static int bad_timestamp(const unsigned char *data, uint64_t len) {
    if (len == 4)
        return 0;
    if (len == 8)
        return (be32(data) >> 2) > 999999999u; /* top 30 bits of 64 */
    if (len == 12)
        return be32(data) > 999999999u;
    return 1;
}

static int skip_object(const unsigned char *d, size_t n, size_t *pos, uint64_t *stack,
                       unsigned char *ismap, int *poison) {
    size_t p = *pos;
    size_t top = 0;
    for (;;) {
        if (p >= n)
            return TRUNCATED;
        unsigned char b = d[p];
        size_t rest = n - p; /* bytes from the header byte on, >= 1 */
        /* Fast path: fixstr and positive fixint are most of a log record
         * (keys, short values). Same checks as the general path below. */
        if ((b & 0xe0) == 0xa0) {
            size_t len = (size_t)(b & 0x1f);
            if (rest - 1 < len)
                return TRUNCATED;
            p += 1 + len;
            goto value_done;
        }
        if (b <= 0x7f) {
            p += 1;
            goto value_done;
        }
        uint64_t payload = 0; /* bytes after a header of `head` bytes */
        size_t head = 1;
        uint64_t count = 0;   /* container elements (maps: 2 per pair) */
        int container = 0;
        if (b <= 0x7f || b >= 0xe0 || (b >= 0xc0 && b <= 0xc3)) {
            /* fixint, negative fixint, nil, (0xc1 below), false, true */
            if (b == 0xc1)
                return UNDECODABLE;
        } else if (b <= 0x8f) {           /* fixmap */
            container = 1;
            count = 2u * (uint64_t)(b & 0x0f);
        } else if (b <= 0x9f) {           /* fixarray */
            container = 1;
            count = b & 0x0f;
        } else if (b <= 0xbf) {           /* fixstr */
            payload = b & 0x1f;
        } else {
            switch (b) {
            case 0xc4: case 0xd9:          /* bin8, str8 */
                if (rest < 2) return TRUNCATED;
                head = 2; payload = d[p + 1];
                break;
            case 0xc5: case 0xda:          /* bin16, str16 */
                if (rest < 3) return TRUNCATED;
                head = 3; payload = be16(d + p + 1);
                break;
            case 0xc6: case 0xdb:          /* bin32, str32 */
                if (rest < 5) return TRUNCATED;
                head = 5; payload = be32(d + p + 1);
                break;
            case 0xc7:                     /* ext8: len, type, data */
                if (rest < 2) return TRUNCATED;
                head = 3; payload = d[p + 1];
                break;
            case 0xc8:                     /* ext16 */
                if (rest < 3) return TRUNCATED;
                head = 4; payload = be16(d + p + 1);
                break;
            case 0xc9:                     /* ext32 */
                if (rest < 5) return TRUNCATED;
                head = 6; payload = be32(d + p + 1);
                if (payload == 0xFFFFFFFFu) {
                    /* msgpack reads type + data as one trail of len + 1
                     * bytes in an unsigned int: 0xFFFFFFFF + 1 wraps to 0,
                     * which it takes as an empty trail, so the object ends
                     * after the length and the type byte starts the next
                     * one (unpack_template.h, case 0xc9). Same outcome. */
                    head = 5; payload = 0;
                }
                break;
            case 0xca: payload = 4; break;  /* float32 */
            case 0xcb: payload = 8; break;  /* float64 */
            case 0xcc: case 0xd0: payload = 1; break; /* (u)int8 */
            case 0xcd: case 0xd1: payload = 2; break; /* (u)int16 */
            case 0xce: case 0xd2: payload = 4; break; /* (u)int32 */
            case 0xcf: case 0xd3: payload = 8; break; /* (u)int64 */
            case 0xd4: payload = 2; break;  /* fixext1: type + 1 */
            case 0xd5: payload = 3; break;  /* fixext2 */
            case 0xd6: payload = 5; break;  /* fixext4 */
            case 0xd7: payload = 9; break;  /* fixext8 */
            case 0xd8: payload = 17; break; /* fixext16 */
            case 0xdc:                     /* array16 */
                if (rest < 3) return TRUNCATED;
                head = 3; container = 1; count = be16(d + p + 1);
                break;
            case 0xdd:                     /* array32 */
                if (rest < 5) return TRUNCATED;
                head = 5; container = 1; count = be32(d + p + 1);
                break;
            case 0xde:                     /* map16 */
                if (rest < 3) return TRUNCATED;
                head = 3; container = 1; count = 2u * (uint64_t)be16(d + p + 1);
                break;
            case 0xdf:                     /* map32 */
                if (rest < 5) return TRUNCATED;
                head = 5; container = 1; count = 2u * (uint64_t)be32(d + p + 1);
                break;
            default:
                return UNDECODABLE; /* not reached: every byte is covered */
            }
        }
        if (container) {
            if (top >= STACK_SIZE)
                return UNDECODABLE;
            /* A map or an array as a map key: well framed, but Python cannot
             * hold it (unhashable list/dict); the entry goes to the full
             * path, which rejects it. A map frame's remaining count is even
             * exactly when its next element is a key. */
            if (top && ismap[top - 1] && (stack[top - 1] & 1) == 0)
                *poison = 1;
            p += head;
            if (count) {
                ismap[top] = (b >= 0x80 && b <= 0x8f) || b == 0xde || b == 0xdf;
                stack[top++] = count;
                continue;
            }
        } else {
            /* ext8/16/32 have the type byte inside `head` after the length:
             * msgpack reads length and type together, so a missing type
             * byte is a truncation like a missing length byte. */
            if ((uint64_t)rest < (uint64_t)head || (uint64_t)(rest - head) < payload)
                return TRUNCATED;
            /* Ext types -128..-2 are reserved: ExtType() refuses them
             * ("code must be 0~127"); -1 is a Timestamp, checked. */
            if (b >= 0xd4 && b <= 0xd8) {          /* fixext: type, data */
                unsigned char t = d[p + 1];
                if (t >= 0x80 && (t != 0xff || bad_timestamp(d + p + 2, payload - 1)))
                    *poison = 1;
            } else if (b >= 0xc7 && b <= 0xc9 && !(b == 0xc9 && head == 5)) {  /* ext8/16/32, not the wrap */
                unsigned char t = d[p + head - 1];
                if (t >= 0x80 && (t != 0xff || bad_timestamp(d + p + head, payload)))
                    *poison = 1;
            }
            p += head + (size_t)payload;
        }
    value_done:
        /* One value completed: close every container it completes. */
        while (top && --stack[top - 1] == 0)
            top--;
        if (!top) {
            *pos = p;
            return OK;
        }
    }
}

/* The stage's _FAST_ENTRY regex, byte for byte: a 2-array; a time needing
 * no normalisation (EventTime with seconds not 0xFFFFFFFE/0xFFFFFFFF and
 * nanoseconds < 10**9, a positive fixint, or a non-zero uint32); then a map
 * header. `e` is the entry's end (the entry is well formed, so every byte
 * looked at lies inside it; the bound is kept anyway). */
static int fast_entry(const unsigned char *d, size_t p, size_t e) {
    size_t k;
    if (e - p < 3 || d[p] != 0x92)
        return 0;
    unsigned char t = d[p + 1];
    if (t >= 0x01 && t <= 0x7f) {
        k = p + 2;
    } else if (t == 0xce) {
        if (e - p < 7 || be32(d + p + 2) == 0)
            return 0;
        k = p + 6;
    } else if (t == 0xd7) {
        if (e - p < 12 || d[p + 2] != 0x00)
            return 0;
        uint32_t sec = be32(d + p + 3);
        if (sec == 0xFFFFFFFFu || sec == 0xFFFFFFFEu)
            return 0;
        if (be32(d + p + 7) > 999999999u)
            return 0;
        k = p + 11;
    } else {
        return 0;
    }
    unsigned char m = d[k];
    return (m >= 0x80 && m <= 0x8f) || m == 0xde || m == 0xdf;
}

/* The common entry in one tight loop: [time, map] whose time is a positive
 * fixint, a uint32 or a fixext8 of a non-negative type, and whose map (fixmap
 * or map16) holds only strings, bins up to 16-bit lengths and scalars (ints,
 * floats, nil, booleans). Such an entry holds no container below the map and
 * no ext below the time, so skip_object would frame it the same way and find
 * no poison in it. Returns 1 with *end set, or 0 when the entry is anything
 * else or does not fit in the buffer: then skip_object frames it (and reports
 * a truncation exactly as msgpack does). */
static int skip_simple_entry(const unsigned char *d, size_t n, size_t p, size_t *end) {
    size_t rest = n - p;
    if (rest < 3 || d[p] != 0x92)
        return 0;
    unsigned char t = d[p + 1];
    size_t q;
    if (t <= 0x7f) {
        q = p + 2;
    } else if (t == 0xce) {
        q = p + 6;
    } else if (t == 0xd7) {
        if (rest < 3 || d[p + 2] >= 0x80)
            return 0;
        q = p + 11;
    } else {
        return 0;
    }
    if (q >= n)
        return 0;
    unsigned char m = d[q];
    size_t count;
    if (m >= 0x80 && m <= 0x8f) {
        count = 2u * (size_t)(m & 0x0f);
        q += 1;
    } else if (m == 0xde) {
        if (n - q < 3)
            return 0;
        count = 2u * (size_t)be16(d + q + 1);
        q += 3;
    } else {
        return 0;
    }
    while (count--) {
        if (q >= n)
            return 0;
        unsigned char b = d[q];
        size_t len; /* the whole object's length */
        if ((b & 0xe0) == 0xa0)
            len = 1 + (size_t)(b & 0x1f);
        else if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
            len = 1;
        else if (b == 0xd9 || b == 0xc4) {
            if (n - q < 2)
                return 0;
            len = 2 + (size_t)d[q + 1];
        } else if (b == 0xda || b == 0xc5) {
            if (n - q < 3)
                return 0;
            len = 3 + (size_t)be16(d + q + 1);
        } else if (b == 0xcb || b == 0xcf || b == 0xd3)
            len = 9;
        else if (b == 0xca || b == 0xce || b == 0xd2)
            len = 5;
        else if (b == 0xcd || b == 0xd1)
            len = 3;
        else if (b == 0xcc || b == 0xd0)
            len = 2;
        else
            return 0;
        if (n - q < len)
            return 0;
        q += len;
    }
    *end = q;
    return 1;
}

static PyObject *walk(PyObject *self, PyObject *args) {
    Py_buffer view;
    PyObject *arg;
    Py_ssize_t max_entries = -1;
    if (!PyArg_ParseTuple(args, "O|n:walk", &arg, &max_entries))
        return NULL;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *d = (const unsigned char *)view.buf;
    size_t n = (size_t)view.len;
    PyObject *slow = NULL, *offsets = NULL, *result = NULL;
    uint64_t *stack = NULL;
    uint64_t *offs = NULL;
    unsigned char *ismap = NULL;
    PyObject *poisoned = NULL; /* indices of entries Python cannot hold */
    /* An entry takes at least one byte: n + 1 slots always suffice, but a
     * chunk is usually ~200 bytes an entry, so grow instead of reserving. */
    size_t cap = n / 64 + 16, used = 0;
    int error = OK;
    size_t pos = 0;

    slow = PyList_New(0);
    poisoned = PyList_New(0);
    stack = PyMem_RawMalloc(STACK_SIZE * sizeof(uint64_t));
    ismap = PyMem_RawMalloc(STACK_SIZE);
    offs = PyMem_RawMalloc(cap * sizeof(uint64_t));
    if (!slow || !poisoned || !stack || !ismap || !offs) {
        PyErr_NoMemory();
        goto done;
    }
    /* The GIL is kept: a chunk takes microseconds, less than handing the
     * GIL over would cost. Slow entries are collected after the loop. */
    while (pos < n) {
        size_t end = pos;
        int poison = 0;
        if (!skip_simple_entry(d, n, pos, &end)) {
            error = skip_object(d, n, &end, stack, ismap, &poison);
            if (error != OK)
                break;
        }
        if (poison) {
            PyObject *ix = PyLong_FromSize_t(used);
            if (!ix || PyList_Append(poisoned, ix) < 0) {
                Py_XDECREF(ix);
                goto done;
            }
            Py_DECREF(ix);
        }
        if (max_entries >= 0 && used >= (size_t)max_entries) {
            /* One entry more than allowed: stop before the offsets and the
             * slow list grow with a hostile chunk (16 MB of 0x00 is 16M
             * entries). */
            error = TOO_MANY;
            break;
        }
        if (used + 1 >= cap) {
            size_t ncap = cap * 2;
            uint64_t *grown = PyMem_RawRealloc(offs, ncap * sizeof(uint64_t));
            if (!grown) {
                error = -1;
                break;
            }
            offs = grown;
            cap = ncap;
        }
        offs[used++] = pos;
        pos = end;
    }
    if (error == -1) {
        PyErr_NoMemory();
        goto done;
    }
    offs[used] = pos; /* the sentinel; used + 1 <= cap holds */
    Py_ssize_t next_poison = 0, n_poison = PyList_GET_SIZE(poisoned);
    for (size_t i = 0; i < used; i++) {
        int bad = 0;
        if (next_poison < n_poison
            && PyLong_AsSize_t(PyList_GET_ITEM(poisoned, next_poison)) == i) {
            bad = 1;
            next_poison++;
        }
        if (bad || !fast_entry(d, (size_t)offs[i], (size_t)offs[i + 1])) {
            PyObject *ix = PyLong_FromSize_t(i);
            if (!ix || PyList_Append(slow, ix) < 0) {
                Py_XDECREF(ix);
                goto done;
            }
            Py_DECREF(ix);
        }
    }
    offsets = PyBytes_FromStringAndSize((const char *)offs, (Py_ssize_t)((used + 1) * sizeof(uint64_t)));
    if (!offsets)
        goto done;
    result = Py_BuildValue("(OOns)", offsets, slow, (Py_ssize_t)pos,
                           error == TRUNCATED ? "entries_truncated"
                           : error == UNDECODABLE ? "entries_undecodable"
                           : error == TOO_MANY ? "too_many_entries" : NULL);
done:
    Py_XDECREF(offsets);
    Py_XDECREF(slow);
    Py_XDECREF(poisoned);
    PyMem_RawFree(ismap);
    PyMem_RawFree(stack);
    PyMem_RawFree(offs);
    PyBuffer_Release(&view);
    return result;
}

/* Does any needle occur in d[0:n]? One memchr pass per distinct first byte;
 * at each candidate every needle starting with that byte is compared. */
static int find_any(const unsigned char *d, size_t n, PyObject *needles) {
    Py_ssize_t k = PyTuple_GET_SIZE(needles);
    for (Py_ssize_t i = 0; i < k; i++) {
        const unsigned char *ni = (const unsigned char *)PyBytes_AS_STRING(PyTuple_GET_ITEM(needles, i));
        int seen = 0;
        for (Py_ssize_t j = 0; j < i && !seen; j++)
            seen = PyBytes_AS_STRING(PyTuple_GET_ITEM(needles, j))[0] == (char)ni[0];
        if (seen)
            continue; /* this first byte had its pass */
        const unsigned char *p = d, *end = d + n;
        while (p < end) {
            const unsigned char *q = memchr(p, ni[0], (size_t)(end - p));
            if (!q)
                break;
            for (Py_ssize_t j = i; j < k; j++) {
                PyObject *nj = PyTuple_GET_ITEM(needles, j);
                size_t m = (size_t)PyBytes_GET_SIZE(nj);
                const unsigned char *bj = (const unsigned char *)PyBytes_AS_STRING(nj);
                if (bj[0] == ni[0] && (size_t)(end - q) >= m && memcmp(q, bj, m) == 0)
                    return 1;
            }
            p = q + 1;
        }
    }
    return 0;
}

static PyObject *contains_any(PyObject *self, PyObject *args) {
    Py_buffer view;
    PyObject *needles;
    if (!PyArg_ParseTuple(args, "y*O!:contains_any", &view, &PyTuple_Type, &needles))
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(needles); i++) {
        PyObject *nd = PyTuple_GET_ITEM(needles, i);
        if (!PyBytes_Check(nd) || PyBytes_GET_SIZE(nd) == 0) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_TypeError, "needles must be non-empty bytes");
            return NULL;
        }
    }
    int found = find_any((const unsigned char *)view.buf, (size_t)view.len, needles);
    PyBuffer_Release(&view);
    return PyBool_FromLong(found);
}

/* The entries j in [centre - before, centre + after] (within the chunk)
 * that are at most `shortlen` bytes long or pass `test`, in order, as a
 * list: the stage's neighbour windows (probetag/_stage.py,
 * Processor._with_neighbours), one call per strong hit instead of a Python
 * loop per entry. offs: the walk's uint64 offsets with their end sentinel.
 * `name` prefixes the errors. */
typedef int (*entry_test)(const unsigned char *d, uint64_t a, uint64_t b, const Py_buffer *arg);

static PyObject *window(const char *name, const Py_buffer *data, const Py_buffer *offs, Py_ssize_t centre,
                        Py_ssize_t before, Py_ssize_t after, Py_ssize_t shortlen, entry_test test,
                        const Py_buffer *arg) {
    if (offs->len % 8 != 0 || before < 0 || after < 0) {
        PyErr_Format(PyExc_ValueError, "%s: bad offsets or window", name);
        return NULL;
    }
    const uint64_t *starts = (const uint64_t *)offs->buf;
    Py_ssize_t count = offs->len / 8 - 1; /* entries; the last offset is the sentinel */
    const unsigned char *d = (const unsigned char *)data->buf;
    PyObject *out = PyList_New(0);
    if (!out || count <= 0)
        return out;
    Py_ssize_t lo = centre - before < 0 ? 0 : centre - before;
    Py_ssize_t hi = centre + after + 1 > count ? count : centre + after + 1;
    for (Py_ssize_t j = lo; j < hi; j++) {
        uint64_t a = starts[j], b = starts[j + 1];
        if (b < a || b > (uint64_t)data->len) {
            PyErr_Format(PyExc_ValueError, "%s: offsets outside the buffer", name);
            Py_DECREF(out);
            return NULL;
        }
        if (b - a <= (uint64_t)shortlen || test(d, a, b, arg)) {
            PyObject *ix = PyLong_FromSsize_t(j);
            if (!ix || PyList_Append(out, ix) < 0) {
                Py_XDECREF(ix);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(ix);
        }
    }
    return out;
}

/* The entry holds the needle (an empty needle: no entry does). */
static int holds_needle(const unsigned char *d, uint64_t a, uint64_t b, const Py_buffer *needle) {
    return needle->len > 0 && (uint64_t)needle->len <= b - a &&
           memmem(d + a, (size_t)(b - a), needle->buf, (size_t)needle->len) != NULL;
}

/* near(buffer, starts, centre, before, after, short, needle) -> the window's
 * entries that are short or hold `needle`. */
static PyObject *near(PyObject *self, PyObject *args) {
    Py_buffer data, offs, needle;
    Py_ssize_t centre, before, after, shortlen;
    if (!PyArg_ParseTuple(args, "y*y*nnnny*:near", &data, &offs, &centre, &before, &after, &shortlen, &needle))
        return NULL;
    PyObject *out = window("near", &data, &offs, centre, before, after, shortlen, holds_needle, &needle);
    PyBuffer_Release(&data);
    PyBuffer_Release(&offs);
    PyBuffer_Release(&needle);
    return out;
}

/* A daemon's own line (probetag/_stage.py, _daemon_entry): a msgpack
 * "pid" key (its first occurrence) whose value is an int or a string of 1
 * to 10 bytes starting with a digit, or a TAG "name[pid]: " in the text:
 * "[", 1 to 10 digits, "]: ", a byte that is not ASCII whitespace, with a
 * name byte before the "[". */
static int is_name_byte(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '/' || c == '-';
}

static int is_space_byte(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int daemon_entry(const unsigned char *d, size_t a, size_t b) {
    const unsigned char *k = b > a ? memmem(d + a, b - a, "\xa3pid", 4) : NULL;
    if (k != NULL && (size_t)(k - d) + 5 < b) {
        unsigned char v = k[4];
        if (v <= 0x7F || (v >= 0xCC && v <= 0xCE) || (v >= 0xA1 && v <= 0xAA && k[5] >= '0' && k[5] <= '9'))
            return 1;
    }
    for (size_t p = a; p < b; p++) {
        const unsigned char *q = memchr(d + p, '[', b - p);
        if (q == NULL)
            break;
        p = (size_t)(q - d);
        size_t e = p + 1, digits = 0;
        while (e < b && digits < 11 && d[e] >= '0' && d[e] <= '9') {
            e++;
            digits++;
        }
        if (digits >= 1 && digits <= 10 && e + 4 <= b && d[e] == ']' && d[e + 1] == ':' && d[e + 2] == ' ' &&
            !is_space_byte(d[e + 3]) && p > a && is_name_byte(d[p - 1]))
            return 1;
    }
    return 0;
}

static int not_daemon_entry(const unsigned char *d, uint64_t a, uint64_t b, const Py_buffer *unused) {
    (void)unused;
    return !daemon_entry(d, (size_t)a, (size_t)b);
}

/* near_sender_less(buffer, starts, centre, before, after, short) -> the
 * window's entries that are short or no daemon's own line (daemon_entry):
 * the window of a hit that names no sender. */
static PyObject *near_sender_less(PyObject *self, PyObject *args) {
    Py_buffer data, offs;
    Py_ssize_t centre, before, after, shortlen;
    if (!PyArg_ParseTuple(args, "y*y*nnnn:near_sender_less", &data, &offs, &centre, &before, &after, &shortlen))
        return NULL;
    PyObject *out = window("near_sender_less", &data, &offs, centre, before, after, shortlen, not_daemon_entry, NULL);
    PyBuffer_Release(&data);
    PyBuffer_Release(&offs);
    return out;
}

/* -- Hits: the prefilter's match handler ---------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *lens_obj;   /* bytes: native uint32 per pattern id */
    PyObject *weak_obj;   /* bytes: one flag byte per pattern id */
    const uint32_t *lens;
    const unsigned char *weak;
    Py_ssize_t npat;
    uint64_t *ends;       /* end offset of each hit */
    uint32_t *ids;        /* its pattern id */
    size_t used, cap;
    /* guard(starts, limit): the entries' offsets, held while guarded */
    Py_buffer gview;
    int guarded;
    const uint64_t *gstarts;
    size_t gns;
    Py_ssize_t limit;     /* hits counted per entry before the scan is stopped */
    uint64_t base;        /* offset in the data of the buffer being scanned */
    size_t cur;           /* entry of the last hit counted, if cur_valid */
    int cur_valid;
    Py_ssize_t stopped;   /* entry whose hits passed limit, or -1 */
    uint32_t *counts;     /* per entry: hits counted (more than limit: stopped there) */
} Hits;

static void Hits_unguard(Hits *self) {
    if (self->guarded) {
        PyBuffer_Release(&self->gview);
        self->guarded = 0;
    }
    PyMem_RawFree(self->counts);
    self->counts = NULL;
    self->gstarts = NULL;
    self->gns = 0;
    self->base = 0;
    self->cur_valid = 0;
    self->stopped = -1;
}

static void Hits_dealloc(Hits *self) {
    Hits_unguard(self);
    Py_XDECREF(self->lens_obj);
    Py_XDECREF(self->weak_obj);
    PyMem_RawFree(self->ends);
    PyMem_RawFree(self->ids);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Hits_init(Hits *self, PyObject *args, PyObject *kwds) {
    PyObject *lens, *weak;
    if (kwds && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "Hits() takes no keyword arguments");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "O!O!:Hits", &PyBytes_Type, &lens, &PyBytes_Type, &weak))
        return -1;
    Py_ssize_t npat = PyBytes_GET_SIZE(weak);
    if (PyBytes_GET_SIZE(lens) != npat * (Py_ssize_t)sizeof(uint32_t)) {
        PyErr_SetString(PyExc_ValueError, "lens must hold one uint32 per byte of weak");
        return -1;
    }
    Py_INCREF(lens);
    Py_INCREF(weak);
    Py_XSETREF(self->lens_obj, lens);
    Py_XSETREF(self->weak_obj, weak);
    self->lens = (const uint32_t *)PyBytes_AS_STRING(lens);
    self->weak = (const unsigned char *)PyBytes_AS_STRING(weak);
    self->npat = npat;
    self->used = 0;
    Hits_unguard(self);
    return 0;
}

/* hyperscan's binding calls handler(id, from, to, flags, context). */
static PyObject *Hits_call(Hits *self, PyObject *args, PyObject *kwds) {
    if (!PyTuple_Check(args) || PyTuple_GET_SIZE(args) < 3) {
        PyErr_SetString(PyExc_TypeError, "Hits(id, from, to, ...)");
        return NULL;
    }
    unsigned long id = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(args, 0));
    if (id == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    unsigned long long to = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(args, 2));
    if (to == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if ((Py_ssize_t)id >= self->npat) {
        PyErr_SetString(PyExc_ValueError, "pattern id out of range");
        return NULL;
    }
    if (to > UINT64_MAX - self->base) {
        PyErr_SetString(PyExc_ValueError, "offset out of range");
        return NULL;
    }
    to += self->base;
    if (self->guarded && to >= self->lens[id]) {
        /* Count the hit against its entry; past the limit, stop the scan. */
        uint64_t off = to - self->lens[id];
        const uint64_t *st = self->gstarts;
        size_t ns = self->gns;
        if (!(self->cur_valid && st[self->cur] <= off && (self->cur + 1 >= ns || off < st[self->cur + 1]))) {
            size_t lo = 0, hi = ns;
            while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (st[mid] <= off)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            self->cur_valid = lo > 0;
            self->cur = lo ? lo - 1 : 0;
        }
        if (self->cur_valid) {
            uint32_t *c = &self->counts[self->cur];
            if (*c < UINT32_MAX)
                (*c)++;
            if ((Py_ssize_t)*c > self->limit) {
                self->stopped = (Py_ssize_t)self->cur;
                Py_RETURN_TRUE; /* a true result stops hyperscan's scan */
            }
        }
    }
    if (self->used == self->cap) {
        size_t ncap = self->cap ? self->cap * 2 : 256;
        uint64_t *e = PyMem_RawRealloc(self->ends, ncap * sizeof(uint64_t));
        if (!e)
            return PyErr_NoMemory();
        self->ends = e;
        uint32_t *i = PyMem_RawRealloc(self->ids, ncap * sizeof(uint32_t));
        if (!i)
            return PyErr_NoMemory();
        self->ids = i;
        self->cap = ncap;
    }
    self->ends[self->used] = (uint64_t)to;
    self->ids[self->used] = (uint32_t)id;
    self->used++;
    Py_RETURN_NONE;
}

/* A C-contiguous buffer of native uint64 (the walk's offsets with their end
 * sentinel); 0, or -1 with an exception set. */
static int get_starts(PyObject *arg, Py_buffer *view) {
    if (PyObject_GetBuffer(arg, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    if (view->itemsize != 8 || (view->format && strcmp(view->format, "Q") != 0 && strcmp(view->format, "@Q") != 0
                                && strcmp(view->format, "L") != 0 && strcmp(view->format, "@L") != 0)) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_TypeError, "starts must be a buffer of uint64");
        return -1;
    }
    return 0;
}

/* guard(starts, limit): from now on each hit is counted against its entry
 * (as entries(starts) will place it), and the hit that takes an entry past
 * limit hits stops the scan (the handler returns True; hyperscan's binding
 * raises ScanTerminated). resume() then says where to scan on. Such an
 * entry counts as hit by a strong literal in entries(). */
static PyObject *Hits_guard(Hits *self, PyObject *args) {
    PyObject *arg;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "On:guard", &arg, &limit))
        return NULL;
    if (limit < 0) {
        PyErr_SetString(PyExc_ValueError, "limit must be >= 0");
        return NULL;
    }
    Py_buffer view;
    if (get_starts(arg, &view) < 0)
        return NULL;
    size_t ns = (size_t)view.len / 8;
    uint32_t *counts = PyMem_RawCalloc(ns ? ns : 1, sizeof(uint32_t));
    if (!counts) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    Hits_unguard(self);
    self->gview = view;
    self->guarded = 1;
    self->gstarts = (const uint64_t *)view.buf;
    self->gns = ns;
    self->counts = counts;
    self->limit = limit;
    Py_RETURN_NONE;
}

/* resume() -> the offset to scan on from after a stopped scan (its base:
 * the hits of that scan are offsets from there), or -1 when the scan was not
 * stopped or no entry is left. The entry it stopped in counts as hit by a
 * strong literal in entries(): it is decoded and read, as any entry with a
 * strong hit, without the rest of its hits. */
static PyObject *Hits_resume(Hits *self, PyObject *unused) {
    if (!self->guarded || self->stopped < 0)
        return PyLong_FromLong(-1);
    size_t i = (size_t)self->stopped;
    self->stopped = -1;
    self->cur_valid = 0;
    if (i + 1 >= self->gns)
        return PyLong_FromLong(-1);
    self->base = self->gstarts[i + 1];
    return PyLong_FromUnsignedLongLong(self->base);
}

/* restart(): the next scan covers the data from its start (another
 * database over the same data); the hits counted so far stay counted. */
static PyObject *Hits_restart(Hits *self, PyObject *unused) {
    self->base = 0;
    self->cur_valid = 0;
    self->stopped = -1;
    Py_RETURN_NONE;
}

/* entries(starts) -> (hit entry indices, sorted; set of the weak-only ones).
 * starts: a C-contiguous buffer of native uint64 (the walk's offsets with
 * their end sentinel). */
static PyObject *Hits_entries(Hits *self, PyObject *arg) {
    Py_buffer view;
    if (get_starts(arg, &view) < 0)
        return NULL;
    const uint64_t *starts = (const uint64_t *)view.buf;
    size_t ns = (size_t)view.len / 8;
    PyObject *out = NULL, *weak = NULL, *result = NULL;
    unsigned char *flag = NULL; /* per entry: 1 hit, 2 hit by a strong literal */
    out = PyList_New(0);
    weak = PySet_New(NULL);
    if (!out || !weak)
        goto done;
    int any_forced = 0;
    for (size_t i = 0; self->counts && i < self->gns && i < ns && !any_forced; i++)
        any_forced = (Py_ssize_t)self->counts[i] > self->limit;
    if (ns == 0 || (self->used == 0 && !any_forced))
        goto build;
    flag = PyMem_RawCalloc(ns, 1);
    if (!flag) {
        PyErr_NoMemory();
        goto done;
    }
    for (size_t i = 0; any_forced && i < self->gns && i < ns; i++)
        if ((Py_ssize_t)self->counts[i] > self->limit)
            flag[i] = 3;
    for (size_t h = 0; h < self->used; h++) {
        uint32_t id = self->ids[h];
        uint64_t len = self->lens[id];
        if (self->ends[h] < len)
            continue; /* starts before the data: no entry (bisect gives -1) */
        uint64_t off = self->ends[h] - len;
        /* bisect_right(starts, off) - 1 */
        size_t lo = 0, hi = ns;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (starts[mid] <= off)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo == 0)
            continue;
        size_t i = lo - 1;
        flag[i] |= self->weak[id] ? 1 : 3;
    }
build:
    for (size_t i = 0; flag && i < ns; i++) {
        if (!flag[i])
            continue;
        PyObject *ix = PyLong_FromSize_t(i);
        if (!ix)
            goto done;
        int bad = PyList_Append(out, ix) < 0 || (flag[i] == 1 && PySet_Add(weak, ix) < 0);
        Py_DECREF(ix);
        if (bad)
            goto done;
    }
    result = PyTuple_Pack(2, out, weak);
done:
    Py_XDECREF(out);
    Py_XDECREF(weak);
    PyMem_RawFree(flag);
    PyBuffer_Release(&view);
    return result;
}

/* One hit as lines() sorts them: by start offset, then pattern id (the
 * order of the Python scan's sorted (offset, id) pairs). */
typedef struct {
    uint64_t off;
    uint32_t id;
} StartId;

static int start_id_cmp(const void *a, const void *b) {
    const StartId *x = a, *y = b;
    if (x->off != y->off)
        return x->off < y->off ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static size_t count_lf(const unsigned char *d, size_t a, size_t b) {
    size_t n = 0;
    while (a < b) {
        const unsigned char *p = memchr(d + a, '\n', b - a);
        if (!p)
            break;
        n++;
        a = (size_t)(p - d) + 1;
    }
    return n;
}

static const unsigned char *rfind_lf(const unsigned char *d, size_t end) {
    return end ? memrchr(d, '\n', end) : NULL;
}

/* A line hit only by weak literals that explain's pick would skip: the text
 * after its last ": " past HOSTNAME holds enough letters and digits even if
 * every byte among firsts began an escape (need letters and digits left
 * when each takes most), and no byte past ASCII (see
 * _explain_scan._wordy and _binary). Only ever says yes when pick would;
 * a no leaves the line to pick's own tests. */
static int text_line(const unsigned char *l, size_t n, Py_ssize_t first_space,
                     const unsigned char *firsts, Py_ssize_t nfirsts, Py_ssize_t most, Py_ssize_t need) {
    size_t from;
    if (first_space == 0) {
        const unsigned char *sp = memchr(l, ' ', n);
        from = sp ? (size_t)(sp - l) + 1 : 0;
    } else {
        from = (size_t)first_space;
    }
    if (from > n)
        return 0;
    const unsigned char *he = memchr(l + from, ' ', n - from);
    if (!he)
        return 0;
    size_t host_end = (size_t)(he - l);
    /* rfind(b": ") */
    size_t q = n;
    for (size_t i = n; i >= 2; i--) {
        if (l[i - 2] == ':' && l[i - 1] == ' ') {
            q = i - 2;
            break;
        }
    }
    if (q == n || host_end >= q)
        return 0;
    const unsigned char *m = l + q + 2;
    size_t mn = n - q - 2;
    if ((Py_ssize_t)mn < need)
        return 0;
    Py_ssize_t words = 0, starts = 0;
    for (size_t i = 0; i < mn; i++) {
        unsigned char c = m[i];
        if (c >= 0x80)
            return 0;
        if ((c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'))
            words++;
        for (Py_ssize_t k = 0; k < nfirsts; k++)
            if (c == firsts[k])
                starts++;
    }
    return words >= need && words - starts * most >= need;
}

/* lines(data, marker_from, first_space, firsts, most, need)
 *   -> (lines, framing, picked, strong)
 * explain's scan of one block (probetag/_explain_scan.py, Explainer.scan,
 * before the neighbours are added) over the hits collected from it:
 *   lines    the block's line count (LFs + 1);
 *   framing  lines holding a hit of a pattern id >= marker_from;
 *   picked   [(line index, line bytes, marked, weak)] for each line a
 *            pattern id < marker_from hit, in line order; weak is False
 *            when a strong literal hit it, else True, or 2 when first_space
 *            >= 0, the line is not marked and text_line() says pick skips it;
 *   strong   [(line index, start, end)] of the lines a strong literal hit.
 */
static PyObject *Hits_lines(Hits *self, PyObject *args) {
    Py_buffer view, fv;
    Py_ssize_t marker_from, first_space, most, need;
    if (!PyArg_ParseTuple(args, "y*nny*nn:lines", &view, &marker_from, &first_space, &fv, &most, &need))
        return NULL;
    PyObject *picked = NULL, *strong = NULL, *result = NULL;
    StartId *hs = NULL;
    const unsigned char *d = view.buf;
    size_t n = (size_t)view.len;
    picked = PyList_New(0);
    strong = PyList_New(0);
    if (!picked || !strong)
        goto done;
    size_t used = self->used;
    if (used) {
        hs = PyMem_RawMalloc(used * sizeof(StartId));
        if (!hs) {
            PyErr_NoMemory();
            goto done;
        }
    }
    size_t k = 0;
    for (size_t h = 0; h < used; h++) {
        uint32_t id = self->ids[h];
        uint64_t len = self->lens[id];
        if (self->ends[h] < len)
            continue;
        hs[k].off = self->ends[h] - len;
        hs[k].id = id;
        k++;
    }
    if (k > 1)
        qsort(hs, k, sizeof(StartId), start_id_cmp);
    size_t idx = 0, pos = 0, start = 0, end = 0, framing = 0;
    int have = 0, probe = 0, marked = 0, strong_hit = 0;
    for (size_t h = 0; h <= k; h++) {
        int last = h == k;
        uint64_t off = last ? (uint64_t)n + 1 : hs[h].off;
        uint32_t id = last ? 0 : hs[h].id;
        if (have && off <= end) {
            if ((Py_ssize_t)id >= marker_from)
                marked = 1;
            else {
                probe = 1;
                if (!self->weak[id])
                    strong_hit = 1;
            }
            continue;
        }
        if (have) {
            if (marked)
                framing++;
            if (probe) {
                /* False, True, or 2 for a line pick skips (new references) */
                PyObject *weak = strong_hit ? PyBool_FromLong(0)
                                 : first_space >= 0 && !marked
                                       && text_line(d + start, end - start, first_space, fv.buf, fv.len, most, need)
                                     ? PyLong_FromLong(2) : PyBool_FromLong(1);
                if (!weak)
                    goto done;
                PyObject *t = Py_BuildValue("(ny#ON)", (Py_ssize_t)idx, (const char *)d + start,
                                            (Py_ssize_t)(end - start), marked ? Py_True : Py_False, weak);
                if (!t || PyList_Append(picked, t) < 0) {
                    Py_XDECREF(t);
                    goto done;
                }
                Py_DECREF(t);
                if (strong_hit) {
                    t = Py_BuildValue("(nnn)", (Py_ssize_t)idx, (Py_ssize_t)start, (Py_ssize_t)end);
                    if (!t || PyList_Append(strong, t) < 0) {
                        Py_XDECREF(t);
                        goto done;
                    }
                    Py_DECREF(t);
                }
            }
        }
        if (last)
            break;
        if (off > n) /* past the data: cannot happen for a match */
            break;
        idx += count_lf(d, pos, (size_t)off);
        pos = (size_t)off;
        const unsigned char *lf = rfind_lf(d, (size_t)off);
        start = lf ? (size_t)(lf - d) + 1 : 0;
        const unsigned char *f = (size_t)off < n ? memchr(d + off, '\n', n - (size_t)off) : NULL;
        end = f ? (size_t)(f - d) : n;
        have = 1;
        marked = (Py_ssize_t)id >= marker_from;
        probe = !marked;
        strong_hit = probe && !self->weak[id];
    }
    idx += count_lf(d, pos, n);
    result = Py_BuildValue("(nnOO)", (Py_ssize_t)(idx + 1), (Py_ssize_t)framing, picked, strong);
done:
    PyMem_RawFree(hs);
    Py_XDECREF(picked);
    Py_XDECREF(strong);
    PyBuffer_Release(&view);
    PyBuffer_Release(&fv);
    return result;
}

static PyObject *Hits_len(Hits *self, PyObject *unused) {
    return PyLong_FromSize_t(self->used);
}

static PyMethodDef Hits_methods[] = {
    {"guard", (PyCFunction)Hits_guard, METH_VARARGS,
     "guard(starts, limit): count hits per entry; stop the scan at an entry's limit + 1st hit"},
    {"resume", (PyCFunction)Hits_resume, METH_NOARGS,
     "resume() -> offset to scan on from after a stopped scan, or -1"},
    {"restart", (PyCFunction)Hits_restart, METH_NOARGS,
     "restart(): the next scan covers the data from its start"},
    {"entries", (PyCFunction)Hits_entries, METH_O,
     "entries(starts) -> (sorted indices of the entries hit, set of those hit only by weak literals)"},
    {"lines", (PyCFunction)Hits_lines, METH_VARARGS,
     "lines(data, marker_from, first_space, firsts, most, need) -> (lines, framing, picked, strong): explain's scan of a block"},
    {"count", (PyCFunction)Hits_len, METH_NOARGS, "count() -> hits collected so far"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject HitsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "probetag._speedups.Hits",
    .tp_basicsize = sizeof(Hits),
    .tp_dealloc = (destructor)Hits_dealloc,
    .tp_call = (ternaryfunc)Hits_call,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Hits(lens, weak): the prefilter's match handler; see the module comment.",
    .tp_methods = Hits_methods,
    .tp_init = (initproc)Hits_init,
    .tp_new = PyType_GenericNew,
};

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS,
     "walk(buffer, max_entries=-1) -> (offsets, slow, end, error): frame a chunk of packed msgpack entries.\n\n"
     "offsets: bytes of native uint64 entry start offsets plus an end sentinel; slow: indices\n"
     "of entries failing the stage's fast entry check; end: end of the last whole entry;\n"
     "error: None, 'entries_truncated' or 'entries_undecodable'."},
    {"near", near, METH_VARARGS,
     "near(buffer, starts, centre, before, after, short, needle) -> entries around centre that are short or hold needle"},
    {"near_sender_less", near_sender_less, METH_VARARGS,
     "near_sender_less(buffer, starts, centre, before, after, short) -> entries around centre that are short or no daemon's line"},
    {"contains_any", contains_any, METH_VARARGS,
     "contains_any(buffer, needles: tuple[bytes, ...]) -> bool: does any needle occur in buffer?"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "probetag._speedups",
    "Optional C accelerator for the processing stage (see probetag._stage).", -1, methods,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    if (PyType_Ready(&HitsType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m) {
        Py_INCREF(&HitsType);
        if (PyModule_AddObject(m, "Hits", (PyObject *)&HitsType) < 0) {
            Py_DECREF(&HitsType);
            Py_DECREF(m);
            return NULL;
        }
    }
    /* Bumped when the functions or their results change: probetag ignores
     * a stale build (an editable install is not rebuilt by a git pull). */
    if (m && (PyModule_AddIntConstant(m, "STACK_SIZE", STACK_SIZE) < 0 ||
              PyModule_AddIntConstant(m, "API_VERSION", 7) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
