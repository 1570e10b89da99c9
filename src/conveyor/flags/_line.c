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

typedef struct {
    PyObject *off;        /* the answer when the flag does not take the user (bytes) */
    PyObject *users;      /* frozenset of the ids it always takes (UTF-8 bytes), or NULL */
    int always;           /* it takes everyone */
    int rollout;          /* the percent of users it takes by their hash (0: none) */
    Prefix group;         /* `groupId:`, the rollout hash's prefix (seed 0) */
    Prefix name;          /* `flagName:`, the variant hash's (the variant seed) */
    uint32_t total;       /* the variants' weights added */
    Py_ssize_t n_choices; /* 1: no variant to pick, the answer is choices[0] */
    uint32_t *running;    /* each choice's running weight */
    PyObject **choices;   /* `name=on` or `name=VARIANT` (bytes) */
} Plan;

typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    Plan *plans;
    PyObject *head;     /* what comes before the answers in a header line */
    PyObject *tail;     /* and after them */
} Line;

static void plans_free(Plan *plans, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        Plan *p = &plans[i];
        Py_XDECREF(p->off);
        Py_XDECREF(p->users);
        for (Py_ssize_t j = 0; j < p->n_choices; j++) Py_XDECREF(p->choices[j]);
        PyMem_Free(p->choices);
        PyMem_Free(p->running);
    }
    PyMem_Free(plans);
}

static void Line_dealloc(Line *self) {
    plans_free(self->plans, self->n);
    Py_XDECREF(self->head);
    Py_XDECREF(self->tail);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Line(plans, variant_seed, head, tail): each plan (off, users|None, always, rollout,
 * group, name, total, ((running, answer), ...)), as flags/fastline.py's plan() */
static int Line_init(Line *self, PyObject *args, PyObject *kwds) {
    PyObject *plans, *head, *tail;
    unsigned long seed;  /* the variant hash's */
    if (!PyArg_ParseTuple(args, "O!kSS", &PyTuple_Type, &plans, &seed, &head, &tail))
        return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(plans);
    Plan *out = PyMem_Calloc(n ? n : 1, sizeof(Plan));
    if (!out) return PyErr_NoMemory(), -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        Plan *p = &out[i];
        PyObject *off, *users, *group, *name, *choices;
        int always, rollout;
        unsigned long total;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(plans, i), "SOpiSSkO!", &off, &users, &always,
                              &rollout, &group, &name, &total, &PyTuple_Type, &choices))
            goto fail;
        Py_ssize_t k = PyTuple_GET_SIZE(choices);
        if (users != Py_None && !PyFrozenSet_Check(users)) {
            PyErr_SetString(PyExc_TypeError, "users: a frozenset of bytes, or None");
            goto fail;
        }
        if (k < 1 || (k > 1 && total == 0)) {
            PyErr_SetString(PyExc_ValueError, "a plan needs an answer, its variants a total");
            goto fail;
        }
        p->off = Py_NewRef(off);
        p->users = users == Py_None ? NULL : Py_NewRef(users);
        p->always = always;
        p->rollout = rollout;
        p->group = prefix_of(group, 0);
        p->name = prefix_of(name, (uint32_t)seed);
        p->total = (uint32_t)total;
        p->choices = PyMem_Calloc(k, sizeof(PyObject *));
        p->running = PyMem_Calloc(k, sizeof(uint32_t));
        if (!p->choices || !p->running) {
            PyErr_NoMemory();
            goto fail;
        }
        for (Py_ssize_t j = 0; j < k; j++) {
            unsigned long running;
            PyObject *answer;
            if (!PyArg_ParseTuple(PyTuple_GET_ITEM(choices, j), "kS", &running, &answer))
                goto fail;
            p->running[j] = (uint32_t)running;
            p->choices[j] = Py_NewRef(answer);
            p->n_choices = j + 1;
        }
    }
    plans_free(self->plans, self->n);
    self->plans = out;
    self->n = n;
    Py_XSETREF(self->head, Py_NewRef(head));
    Py_XSETREF(self->tail, Py_NewRef(tail));
    return 0;
fail:
    plans_free(out, n);
    return -1;
}

/* ROOM bytes before a user id in the buffer, for a prefix's leftover bytes */
#define ROOM 3

/* the hash of a prefix and the user id (n bytes at buf + ROOM) */
static inline uint32_t hash_of(const Prefix *prefix, unsigned char *buf, Py_ssize_t n) {
    unsigned char *start = buf + ROOM - prefix->n_rest;
    memcpy(start, prefix->rest, prefix->n_rest);
    return murmur3_from(prefix->h, start, prefix->n_rest + n, prefix->len + n);
}

/* one flag's answer (a borrowed reference), NULL on an error; *id: the UTF-8 id as bytes,
 * made the first time a flag's list of ids needs it */
static PyObject *answer_of(Plan *p, unsigned char *buf, Py_ssize_t n,
                           PyObject **id) {
    if (!p->always) {
        int taken = 0;
        if (p->users) {
            if (!*id) {
                *id = PyBytes_FromStringAndSize((char *)buf + ROOM, n);
                if (!*id) return NULL;
            }
            taken = PySet_Contains(p->users, *id);
            if (taken < 0) return NULL;
        }
        if (!taken && p->rollout > 0)
            taken = hash_of(&p->group, buf, n) % 100 < (uint32_t)p->rollout;
        if (!taken) return p->off;
    }
    if (p->n_choices == 1) return p->choices[0];
    uint32_t bucket = hash_of(&p->name, buf, n) % p->total;
    Py_ssize_t j = 0;
    while (j < p->n_choices - 1 && bucket >= p->running[j]) j++;
    return p->choices[j];
}

/* the answers for the user id in `user` (n bytes, `latin1`: to be read as Latin-1),
 * joined by "; " between head and tail */
static PyObject *line_of(Line *self, const unsigned char *user, Py_ssize_t n, int latin1,
                         PyObject *head, PyObject *tail) {
    unsigned char stack_buf[1024];
    PyObject *stack_answers[64], *id = NULL, *result = NULL;
    Py_ssize_t wide = n;
    if (latin1)
        for (Py_ssize_t i = 0; i < n; i++) wide += user[i] >> 7;
    Py_ssize_t need = ROOM + wide;
    unsigned char *buf = need <= (Py_ssize_t)sizeof stack_buf ? stack_buf : PyMem_Malloc(need);
    PyObject **answers =
        self->n <= 64 ? stack_answers : PyMem_Calloc(self->n, sizeof(PyObject *));
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
    Py_ssize_t size = PyBytes_GET_SIZE(head) + PyBytes_GET_SIZE(tail);
    for (Py_ssize_t i = 0; i < self->n; i++) {
        PyObject *a = answer_of(&self->plans[i], buf, wide, &id);
        if (!a) goto done;
        answers[i] = a;
        size += PyBytes_GET_SIZE(a) + (i ? 2 : 0);
    }
    result = PyBytes_FromStringAndSize(NULL, size);
    if (!result) goto done;
    char *out = PyBytes_AS_STRING(result);
    memcpy(out, PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head));
    out += PyBytes_GET_SIZE(head);
    for (Py_ssize_t i = 0; i < self->n; i++) {
        if (i) {
            memcpy(out, "; ", 2);
            out += 2;
        }
        memcpy(out, PyBytes_AS_STRING(answers[i]), PyBytes_GET_SIZE(answers[i]));
        out += PyBytes_GET_SIZE(answers[i]);
    }
    memcpy(out, PyBytes_AS_STRING(tail), PyBytes_GET_SIZE(tail));
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
    PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
    if (!empty) return NULL;
    PyObject *line = line_of(self, (const unsigned char *)user, n, 0, empty, empty);
    Py_DECREF(empty);
    return line;
}

/* header(raw_id) -> head + answers + tail, the id as the request sent it (Latin-1) */
static PyObject *Line_header(Line *self, PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "header(): a user id as bytes");
        return NULL;
    }
    return line_of(self, (const unsigned char *)PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg),
                   1, self->head, self->tail);
}

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
 * (b"uid="), or None when it names nobody */
static PyObject *Line_cookie_header(Line *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "cookie_header(cookie, key): two bytes");
        return NULL;
    }
    Py_ssize_t len = 0;
    const unsigned char *user = cookie_value(
        (const unsigned char *)PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]),
        (const unsigned char *)PyBytes_AS_STRING(args[1]), PyBytes_GET_SIZE(args[1]), &len);
    if (!user) Py_RETURN_NONE;
    return line_of(self, user, len, 1, self->head, self->tail);
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
