/* The embedded router's flags in C: one request's X-Conveyor-Flags line.
 *
 * flags/fastline.py describes each flag as a plan of constants (Line's argument below)
 * and uses this when the package was built with it (hatch_build.py), else its generated
 * Python; both give the same bytes (tests/flags/test_compiled.py). The hash is the
 * Unleash specification's: murmur3 (x86, 32 bits) of `prefix + user id`, the prefix
 * `groupId:` (seed 0: the rollout) or `flagName:` (the variant seed); checked against the
 * mmh3 library on random input (tests/flags/test_line.py).
 *
 * A user id arrives as the request carries it, read as Latin-1 (as the Python router reads
 * it), and is hashed as UTF-8 (as the SDKs hash a string): each byte from 0x80 is two.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

static inline uint32_t scramble(uint32_t k) {
    k *= 0xcc9e2d51U;
    k = rotl32(k, 15);
    return k * 0x1b873593U;
}

/* murmur3_x86_32 from state h (the blocks before p mixed in) over the n bytes at p, of
 * `total` bytes in all */
static uint32_t murmur3_from(uint32_t h, const unsigned char *p, Py_ssize_t n,
                             Py_ssize_t total) {
    uint32_t k;
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        memcpy(&k, p + i, 4); /* murmur3 reads little-endian blocks: x86 and ARM are */
        h ^= scramble(k);
        h = rotl32(h, 13);
        h = h * 5 + 0xe6546b64U;
    }
    k = 0;
    switch (n & 3) {
    case 3:
        k ^= (uint32_t)p[i + 2] << 16; /* fall through */
    case 2:
        k ^= (uint32_t)p[i + 1] << 8; /* fall through */
    case 1:
        k ^= p[i];
        h ^= scramble(k);
    }
    h ^= (uint32_t)total;
    h ^= h >> 16;
    h *= 0x85ebca6bU;
    h ^= h >> 13;
    h *= 0xc2b2ae35U;
    h ^= h >> 16;
    return h;
}

static uint32_t murmur3(const unsigned char *p, Py_ssize_t n, uint32_t seed) {
    return murmur3_from(seed, p, n, n);
}

/* A hash prefix (`groupId:`, `flagName:`) mixed once: the state after its whole blocks,
 * and the bytes left over (0-3), written before the user id when it is hashed */
typedef struct {
    uint32_t h;
    unsigned char rest[4];
    Py_ssize_t n_rest, len;
} Prefix;

static Prefix prefix_of(PyObject *bytes, uint32_t seed) {
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(bytes);
    Py_ssize_t n = PyBytes_GET_SIZE(bytes), whole = n & ~(Py_ssize_t)3;
    Prefix out = {.h = seed, .n_rest = n - whole, .len = n};
    for (Py_ssize_t i = 0; i < whole; i += 4) {
        uint32_t k;
        memcpy(&k, p + i, 4);
        out.h ^= scramble(k);
        out.h = rotl32(out.h, 13);
        out.h = out.h * 5 + 0xe6546b64U;
    }
    memcpy(out.rest, p + whole, out.n_rest);
    return out;
}

/* a piece of the arena: `len` bytes from `at` */
typedef struct {
    uint32_t at, len;
} Span;

/* the ids a flag always takes are compared in place up to this many; more, in a set */
#define FEW_IDS 16

typedef struct {
    Span off;             /* the answer when the flag does not take the user */
    int always;           /* it takes everyone */
    int rollout;          /* the percent of users it takes by their hash (0: none) */
    Prefix group;         /* `groupId:`, the rollout hash's prefix (seed 0) */
    Prefix name;          /* `flagName:`, the variant hash's (the variant seed) */
    uint32_t total;       /* the variants' weights added */
    uint32_t n_choices;   /* 1: no variant to pick */
    uint32_t choice;      /* its first choice in Line.choices */
    uint32_t n_ids, id;   /* its ids (UTF-8) in Line.ids, if FEW_IDS or fewer */
    PyObject *id_set;     /* else: a frozenset of them (bytes) */
    int guarded;          /* under a guarded rollout: its answer is counted */
} Plan;

typedef struct {
    uint32_t running; /* the running weight up to this variant */
    Span answer;      /* `name=on` or `name=VARIANT` */
} Choice;

typedef struct {
    PyObject_HEAD
    Py_ssize_t n, n_guarded;
    Plan *plans;
    Choice *choices;
    Span *ids;
    char *arena;        /* every answer and id, one after another */
    Span head, tail;    /* what comes before the answers in a header line, and after */
} Line;

/* what Line_init builds before it replaces a Line's */
typedef struct {
    Plan *plans;
    Py_ssize_t n;
    Choice *choices;
    Py_ssize_t n_choices, cap_choices;
    Span *ids;
    Py_ssize_t n_ids, cap_ids;
    char *arena;
    Py_ssize_t used, cap;
} Build;

static void build_free(Build *b) {
    for (Py_ssize_t i = 0; i < b->n; i++) Py_XDECREF(b->plans[i].id_set);
    PyMem_Free(b->plans);
    PyMem_Free(b->choices);
    PyMem_Free(b->ids);
    PyMem_Free(b->arena);
}

static int grow(void **items, Py_ssize_t *cap, Py_ssize_t need, size_t size) {
    if (need <= *cap) return 0;
    Py_ssize_t cap2 = Py_MAX(need, *cap * 2 + 16);
    if (cap2 > UINT32_MAX / 2) return PyErr_SetString(PyExc_ValueError, "flags too large"), -1;
    void *more = PyMem_Realloc(*items, cap2 * size);
    if (!more) return PyErr_NoMemory(), -1;
    *items = more;
    *cap = cap2;
    return 0;
}

/* bytes into the arena; -1 on an error */
static int keep(Build *b, PyObject *bytes, Span *out) {
    Py_ssize_t n = PyBytes_GET_SIZE(bytes);
    if (grow((void **)&b->arena, &b->cap, b->used + n, 1) < 0) return -1;
    memcpy(b->arena + b->used, PyBytes_AS_STRING(bytes), n);
    *out = (Span){(uint32_t)b->used, (uint32_t)n};
    b->used += n;
    return 0;
}

static void Line_dealloc(Line *self) {
    Build old = {.plans = self->plans, .n = self->n, .choices = self->choices,
                 .ids = self->ids, .arena = self->arena};
    build_free(&old);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int plan_of(Build *b, PyObject *item, uint32_t seed, Plan *p) {
    PyObject *off, *users, *group, *name, *choices;
    int always, rollout;
    unsigned long total;
    if (!PyArg_ParseTuple(item, "SOpiSSkO!", &off, &users, &always, &rollout, &group, &name,
                          &total, &PyTuple_Type, &choices))
        return -1;
    Py_ssize_t k = PyTuple_GET_SIZE(choices);
    if (users != Py_None && !PyFrozenSet_Check(users))
        return PyErr_SetString(PyExc_TypeError, "users: a frozenset of bytes, or None"), -1;
    if (k < 1 || (k > 1 && total == 0))
        return PyErr_SetString(PyExc_ValueError, "a plan needs an answer, its variants a total"),
               -1;
    if (keep(b, off, &p->off) < 0) return -1;
    p->always = always;
    p->rollout = rollout;
    p->group = prefix_of(group, 0);
    p->name = prefix_of(name, seed);
    p->total = (uint32_t)total;
    p->choice = (uint32_t)b->n_choices;
    p->n_choices = (uint32_t)k;
    if (grow((void **)&b->choices, &b->cap_choices, b->n_choices + k, sizeof(Choice)) < 0)
        return -1;
    for (Py_ssize_t j = 0; j < k; j++) {
        unsigned long running;
        PyObject *answer;
        Choice *c = &b->choices[b->n_choices + j];
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(choices, j), "kS", &running, &answer) ||
            keep(b, answer, &c->answer) < 0)
            return -1;
        c->running = (uint32_t)running;
    }
    b->n_choices += k;
    Py_ssize_t n_ids = users == Py_None ? 0 : PySet_GET_SIZE(users);
    p->id = (uint32_t)b->n_ids;
    if (n_ids > FEW_IDS) {
        p->id_set = Py_NewRef(users);
        return 0;
    }
    if (grow((void **)&b->ids, &b->cap_ids, b->n_ids + n_ids, sizeof(Span)) < 0) return -1;
    PyObject *it = n_ids ? PyObject_GetIter(users) : NULL, *id;
    if (n_ids && !it) return -1;
    while (it && (id = PyIter_Next(it))) {
        int bad = !PyBytes_Check(id) || keep(b, id, &b->ids[b->n_ids + p->n_ids]) < 0;
        if (!PyBytes_Check(id)) PyErr_SetString(PyExc_TypeError, "users: a frozenset of bytes");
        Py_DECREF(id);
        if (bad) {
            Py_DECREF(it);
            return -1;
        }
        p->n_ids++;
    }
    Py_XDECREF(it);
    if (PyErr_Occurred()) return -1;
    b->n_ids += p->n_ids;
    return 0;
}

/* Line(plans, variant_seed, head, tail, guarded=()): each plan (off, users|None, always,
 * rollout, group, name, total, ((running, answer), ...)), as flags/fastline.py's plan();
 * guarded: the positions of the plans whose answers are counted */
static int Line_init(Line *self, PyObject *args, PyObject *kwds) {
    PyObject *plans, *head, *tail, *guarded = NULL;
    unsigned long seed; /* the variant hash's */
    if (!PyArg_ParseTuple(args, "O!kSS|O!", &PyTuple_Type, &plans, &seed, &head, &tail,
                          &PyTuple_Type, &guarded))
        return -1;
    Build b = {0};
    Span head_at, tail_at;
    b.plans = PyMem_Calloc(PyTuple_GET_SIZE(plans) + 1, sizeof(Plan));
    if (!b.plans) return PyErr_NoMemory(), -1;
    if (keep(&b, head, &head_at) < 0 || keep(&b, tail, &tail_at) < 0) goto fail;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(plans); i++) {
        b.n = i + 1;
        if (plan_of(&b, PyTuple_GET_ITEM(plans, i), (uint32_t)seed, &b.plans[i]) < 0)
            goto fail;
    }
    Py_ssize_t n_guarded = 0;
    for (Py_ssize_t i = 0; guarded && i < PyTuple_GET_SIZE(guarded); i++) {
        Py_ssize_t at = PyLong_AsSsize_t(PyTuple_GET_ITEM(guarded, i));
        if (at < 0 || at >= b.n) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_IndexError, "guarded: no such plan");
            goto fail;
        }
        n_guarded += !b.plans[at].guarded;
        b.plans[at].guarded = 1;
    }
    Build old = {.plans = self->plans, .n = self->n, .choices = self->choices,
                 .ids = self->ids, .arena = self->arena};
    build_free(&old);
    self->plans = b.plans;
    self->n = b.n;
    self->n_guarded = n_guarded;
    self->choices = b.choices;
    self->ids = b.ids;
    self->arena = b.arena;
    self->head = head_at;
    self->tail = tail_at;
    return 0;
fail:
    build_free(&b);
    return -1;
}

/* ROOM bytes before a user id in the buffer, for a prefix's leftover bytes */
#define ROOM 3

/* the hash of a prefix and the user id (n bytes at buf + ROOM) */
static inline uint32_t hash_of(const Prefix *prefix, unsigned char *buf, Py_ssize_t n) {
    unsigned char *start = buf + ROOM - prefix->n_rest;
    for (Py_ssize_t i = 0; i < prefix->n_rest; i++) start[i] = prefix->rest[i];
    return murmur3_from(prefix->h, start, prefix->n_rest + n, prefix->len + n);
}

/* whether a flag always takes this id (n bytes at buf + ROOM): -1 on an error; *id: the
 * id as bytes, made the first time a set of ids needs it */
static int listed(Line *self, Plan *p, unsigned char *buf, Py_ssize_t n, PyObject **id) {
    if (p->id_set) {
        if (!*id && !(*id = PyBytes_FromStringAndSize((char *)buf + ROOM, n))) return -1;
        return PySet_Contains(p->id_set, *id);
    }
    for (uint32_t i = 0; i < p->n_ids; i++) {
        Span s = self->ids[p->id + i];
        if (s.len == n && memcmp(self->arena + s.at, buf + ROOM, n) == 0) return 1;
    }
    return 0;
}

/* one flag's answer; its length 0 (none is) on an error */
static Span answer_of(Line *self, Plan *p, unsigned char *buf, Py_ssize_t n, PyObject **id) {
    if (!p->always) {
        int taken = p->n_ids || p->id_set ? listed(self, p, buf, n, id) : 0;
        if (taken < 0) return (Span){0, 0};
        if (!taken && p->rollout > 0)
            taken = hash_of(&p->group, buf, n) % 100 < (uint32_t)p->rollout;
        if (!taken) return p->off;
    }
    Choice *c = &self->choices[p->choice];
    if (p->n_choices == 1) return c->answer;
    uint32_t bucket = hash_of(&p->name, buf, n) % p->total, j = 0;
    while (j < p->n_choices - 1 && bucket >= c[j].running) j++;
    return c[j].answer;
}

/* the answers for the user id in `user` (n bytes, `latin1`: to be read as Latin-1),
 * joined by "; ", after `before` (b bytes) and head, before tail and `after` (a bytes);
 * with `counted`, returned as (line, (the answer of each guarded plan, ...)) */
static PyObject *line_of(Line *self, const unsigned char *user, Py_ssize_t n, int latin1,
                         int framed, const char *before, Py_ssize_t b, const char *after,
                         Py_ssize_t a, int counted) {
    unsigned char stack_buf[1024];
    Span stack_answers[64], *answers = stack_answers;
    PyObject *id = NULL, *result = NULL;
    Py_ssize_t wide = n;
    if (latin1)
        for (Py_ssize_t i = 0; i < n; i++) wide += user[i] >> 7;
    Py_ssize_t need = ROOM + wide;
    unsigned char *buf = need <= (Py_ssize_t)sizeof stack_buf ? stack_buf : PyMem_Malloc(need);
    if (self->n > 64) answers = PyMem_Calloc(self->n, sizeof(Span));
    if (!buf || !answers) {
        PyErr_NoMemory();
        goto done;
    }
    unsigned char *w = buf + ROOM;
    if (latin1 && wide != n) {
        for (Py_ssize_t i = 0; i < n; i++) {
            if (user[i] < 0x80) {
                *w++ = user[i];
            } else {
                *w++ = 0xc0 | (user[i] >> 6);
                *w++ = 0x80 | (user[i] & 0x3f);
            }
        }
    } else {
        memcpy(w, user, n);
    }
    Span head = framed ? self->head : (Span){0, 0}, tail = framed ? self->tail : (Span){0, 0};
    Py_ssize_t size = b + head.len + tail.len + a;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        Span s = answer_of(self, &self->plans[i], buf, wide, &id);
        if (s.len == 0) goto done;
        answers[i] = s;
        size += s.len + (i ? 2 : 0);
    }
    result = PyBytes_FromStringAndSize(NULL, size);
    if (!result) goto done;
    char *out = PyBytes_AS_STRING(result);
    memcpy(out, before, b);
    out += b;
    memcpy(out, self->arena + head.at, head.len);
    out += head.len;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        if (i) {
            memcpy(out, "; ", 2);
            out += 2;
        }
        memcpy(out, self->arena + answers[i].at, answers[i].len);
        out += answers[i].len;
    }
    memcpy(out, self->arena + tail.at, tail.len);
    memcpy(out + tail.len, after, a);
    if (counted) {
        PyObject *answered = PyTuple_New(self->n_guarded);
        for (Py_ssize_t i = 0, k = 0; answered && i < self->n; i++) {
            if (!self->plans[i].guarded) continue;
            PyObject *one =
                PyBytes_FromStringAndSize(self->arena + answers[i].at, answers[i].len);
            if (!one) Py_CLEAR(answered);
            else PyTuple_SET_ITEM(answered, k++, one);
        }
        PyObject *pair = answered ? PyTuple_Pack(2, result, answered) : NULL;
        Py_XDECREF(answered);
        Py_SETREF(result, pair);
    }
done:
    Py_XDECREF(id);
    if (buf && buf != stack_buf) PyMem_Free(buf);
    if (answers && answers != stack_answers) PyMem_Free(answers);
    return result;
}

/* line(utf8_id) -> b"a=on; b=off; c=x" */
static PyObject *Line_call(Line *self, PyObject *args, PyObject *kwds) {
    const char *user;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "y#", &user, &n)) return NULL;
    return line_of(self, (const unsigned char *)user, n, 0, 0, "", 0, "", 0, 0);
}

/* the header line for an id as a request sent it (Latin-1); `counted`: as line_of's */
static PyObject *line_of_raw(Line *self, PyObject *raw, int counted) {
    if (!PyBytes_Check(raw)) {
        PyErr_SetString(PyExc_TypeError, "a user id as bytes");
        return NULL;
    }
    return line_of(self, (const unsigned char *)PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw),
                   1, 1, "", 0, "", 0, counted);
}

/* header(raw_id) -> head + answers + tail */
static PyObject *Line_header(Line *self, PyObject *raw) { return line_of_raw(self, raw, 0); }

/* counted(raw_id) -> (header(raw_id), (the answer of each guarded plan, ...)) */
static PyObject *Line_counted(Line *self, PyObject *raw) { return line_of_raw(self, raw, 1); }

static int is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* the value of cookie `key` (b"uid=") in a Cookie header, as flags/header.py's
 * _cookie_value: trimmed of whitespace then of quotes; NULL if absent or empty */
static const unsigned char *cookie_value(const unsigned char *c, Py_ssize_t n,
                                         const unsigned char *key, Py_ssize_t k,
                                         Py_ssize_t *len) {
    for (Py_ssize_t i = 0; k > 0 && i + k <= n; i++) {
        if (memcmp(c + i, key, k) != 0 || (i > 0 && c[i - 1] != ' ' && c[i - 1] != ';'))
            continue;
        Py_ssize_t start = i + k, end = i; /* the first ';' from the key on, as find() */
        while (end < n && c[end] != ';') end++;
        if (end < start) return NULL;
        while (start < end && is_space(c[start])) start++;
        while (end > start && is_space(c[end - 1])) end--;
        while (start < end && c[start] == '"') start++;
        while (end > start && c[end - 1] == '"') end--;
        *len = end - start;
        return end > start ? c + start : NULL;
    }
    return NULL;
}

/* cookie_header(cookie, key) -> the header line for the user its cookie `key` names
 * (b"uid="), or None when it names nobody; cookie_header(cookie, key, head): a request's
 * head (ending in its blank line) with that line added last, or None */
static PyObject *Line_cookie_header(Line *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 2 || nargs > 3 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1]) ||
        (nargs == 3 && (!PyBytes_Check(args[2]) || PyBytes_GET_SIZE(args[2]) < 2))) {
        PyErr_SetString(PyExc_TypeError, "cookie_header(cookie, key[, head]): bytes");
        return NULL;
    }
    Py_ssize_t len = 0, b = nargs == 3 ? PyBytes_GET_SIZE(args[2]) - 2 : 0;
    const char *before = nargs == 3 ? PyBytes_AS_STRING(args[2]) : "";
    const unsigned char *user = cookie_value(
        (const unsigned char *)PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]),
        (const unsigned char *)PyBytes_AS_STRING(args[1]), PyBytes_GET_SIZE(args[1]), &len);
    if (!user) Py_RETURN_NONE;
    return line_of(self, user, len, 1, 1, before, b, before + b, nargs == 3 ? 2 : 0, 0);
}

/* murmur3(data, seed=0): as mmh3.hash(data, seed, signed=False), for the tests */
static PyObject *murmur3_py(PyObject *module, PyObject *args) {
    Py_buffer data;
    unsigned long seed = 0;
    if (!PyArg_ParseTuple(args, "y*|k", &data, &seed)) return NULL;
    uint32_t h = murmur3(data.buf, data.len, (uint32_t)seed);
    PyBuffer_Release(&data);
    return PyLong_FromUnsignedLong(h);
}

static PyMethodDef Line_methods[] = {
    {"header", (PyCFunction)Line_header, METH_O,
     "header(raw_id) -> head + the answers + tail, for an id as a request sent it"},
    {"counted", (PyCFunction)Line_counted, METH_O,
     "counted(raw_id) -> (header(raw_id), (the answer of each guarded plan, ...))"},
    {"cookie_header", (PyCFunction)(void (*)(void))Line_cookie_header, METH_FASTCALL,
     "cookie_header(cookie, key) -> the header line for the user the cookie names, or None"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "conveyor.flags._line.Line",
    .tp_basicsize = sizeof(Line),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Line_init,
    .tp_dealloc = (destructor)Line_dealloc,
    .tp_call = (ternaryfunc)Line_call,
    .tp_methods = Line_methods,
    .tp_doc = "Line(plans, variant_seed, head, tail)(utf8_id) -> the answers for that id",
};

static PyMethodDef methods[] = {
    {"murmur3", murmur3_py, METH_VARARGS, "murmur3(data, seed=0) -> the unsigned 32-bit hash"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_line", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__line(void) {
    if (PyType_Ready(&LineType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Line", (PyObject *)&LineType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
