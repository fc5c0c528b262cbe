/* gguf.c - a memory-mapped, fully validated GGUF (v2/v3, little-endian) reader.
 *
 * The whole header (key/value pairs and tensor infos) is parsed and checked once at open time:
 * every length, count, offset and size is bounded against the file size with overflow-safe
 * arithmetic before it is used, and nothing is allocated from a count that was not first bounded
 * by the bytes left in the file. After tp_gguf_open the object is immutable, so any number of
 * threads may read it concurrently.
 *
 * Memory: the file is mapped PROT_READ / MAP_PRIVATE. Values (strings, array elements, tensor
 * data) are read straight from the mapping; keys and tensor names are copied once so that they
 * can be handed out NUL-terminated. Keys and tensor names are indexed by a sorted table (duplicate
 * detection and lookups in O(log n), so a hostile file with millions of keys cannot make open
 * quadratic).
 */
#define _DEFAULT_SOURCE /* madvise(MADV_DONTNEED): posix_madvise ignores DONTNEED on glibc */
#include "tp_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_MAX_ARRAY_DEPTH 3   /* an array of arrays of arrays at most */
#define GGUF_MAX_NAME (TP_NAME_LEN - 1) /* tensor names: as ggml, shorter than GGML_MAX_NAME = 64 */
#define GGUF_N_VALUE_TYPES 13
/* The smallest possible encodings, used to bound counts before anything is allocated. */
#define GGUF_MIN_KV_BYTES 13     /* u64 key length + u32 type + a 1-byte value */
#define GGUF_MIN_TINFO_BYTES 32  /* u64 name length + u32 n_dims + u64 ne + u32 type + u64 offset */
#define GGUF_HEADER_BYTES 24     /* magic, version, n_tensors, n_kv */

typedef struct gguf_kv {
    char *key;             /* NUL-terminated copy */
    uint32_t type;
    uint32_t arr_type;     /* arrays only */
    uint64_t arr_n;        /* arrays only */
    const uint8_t *val;    /* scalars: the value; strings: the first byte; arrays: the first element */
    uint64_t str_len;      /* strings only */
    uint64_t *str_offs;    /* arrays of strings: byte offset from val of each element's u64 length */
} gguf_kv;

typedef struct gguf_tinfo {
    char *name;
    int type;
    int n_dims;
    int64_t ne[TP_MAX_DIMS];
    uint64_t offset; /* relative to the data section */
    size_t nbytes;
    const uint8_t *data;
} gguf_tinfo;

typedef struct name_idx {
    const char *name;
    int64_t idx;
} name_idx;

struct tp_gguf {
    char path[256];
    uint8_t *map;
    size_t size;
    uint32_t version;
    uint32_t alignment;
    size_t data_offset;
    int64_t n_kv;
    int64_t n_tensors;
    gguf_kv *kv;
    gguf_tinfo *ti;
    name_idx *kv_sorted;
    name_idx *ti_sorted;
};

/* ---- reading the mapping ---- */

typedef struct reader {
    const uint8_t *p;
    size_t size;
    size_t pos;
    const char *path;
    tp_error *err;
    bool failed;
    tp_status status; /* TP_ERR_FORMAT, or TP_ERR_OUT_OF_MEMORY */
} reader;

static void fail(reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(reader *r, const char *fmt, ...) {
    if (r->failed) return;
    r->failed = true;
    if (r->status == TP_OK) r->status = TP_ERR_FORMAT;
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    tp_error_set(r->err, r->status, "%s: %s", r->path, buf);
}

static size_t remaining(const reader *r) { return r->size - r->pos; }

/* n more bytes must exist at the cursor; `what` names them for the message. */
static bool need(reader *r, uint64_t n, const char *what) {
    if (n > (uint64_t)remaining(r)) {
        fail(r, "%s (%llu bytes at offset %zu) runs past the end of the file (%zu bytes)", what,
             (unsigned long long)n, r->pos, r->size);
        return false;
    }
    return true;
}

static uint32_t load_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t load_u64(const uint8_t *p) { return (uint64_t)load_u32(p) | (uint64_t)load_u32(p + 4) << 32; }

static bool read_u32(reader *r, uint32_t *out, const char *what) {
    if (!need(r, 4, what)) return false;
    *out = load_u32(r->p + r->pos);
    r->pos += 4;
    return true;
}
static bool read_u64(reader *r, uint64_t *out, const char *what) {
    if (!need(r, 8, what)) return false;
    *out = load_u64(r->p + r->pos);
    r->pos += 8;
    return true;
}

/* A gguf string: u64 length + bytes. *data points into the mapping. `what` names the value;
 * elem >= 0 says it is element `elem` of an array. Messages are formatted only on failure. */
static bool read_str_el(reader *r, const uint8_t **data, uint64_t *len, const char *what, int64_t elem) {
    char el[48] = "";
    if (elem >= 0) snprintf(el, sizeof(el), "element %lld of ", (long long)elem);
    if (remaining(r) < 8) {
        fail(r, "%s%s: the string length at offset %zu runs past the end of the file (%zu bytes)", el,
             what, r->pos, r->size);
        return false;
    }
    *len = load_u64(r->p + r->pos);
    r->pos += 8;
    if (*len > (uint64_t)remaining(r)) {
        fail(r, "%s%s: string of %llu bytes at offset %zu runs past the end of the file (%zu bytes)", el,
             what, (unsigned long long)*len, r->pos, r->size);
        return false;
    }
    *data = r->p + r->pos;
    r->pos += (size_t)*len;
    return true;
}
static bool read_str(reader *r, const uint8_t **data, uint64_t *len, const char *what) {
    return read_str_el(r, data, len, what, -1);
}

/* A NUL-terminated copy of a string that must not contain NUL bytes itself. */
static char *copy_name(reader *r, const uint8_t *data, uint64_t len, const char *what) {
    if (memchr(data, 0, (size_t)len)) {
        fail(r, "%s contains a NUL byte", what);
        return NULL;
    }
    char *s = malloc((size_t)len + 1);
    if (!s) {
        r->status = TP_ERR_OUT_OF_MEMORY;
        fail(r, "out of memory copying %s", what);
        return NULL;
    }
    memcpy(s, data, (size_t)len);
    s[len] = '\0';
    return s;
}

static size_t scalar_size(uint32_t type) {
    switch (type) {
    case TP_GGUF_UINT8: case TP_GGUF_INT8: case TP_GGUF_BOOL: return 1;
    case TP_GGUF_UINT16: case TP_GGUF_INT16: return 2;
    case TP_GGUF_UINT32: case TP_GGUF_INT32: case TP_GGUF_FLOAT32: return 4;
    case TP_GGUF_UINT64: case TP_GGUF_INT64: case TP_GGUF_FLOAT64: return 8;
    default: return 0; /* strings, arrays, unknown */
    }
}

static const char *value_type_name(uint32_t type) {
    static const char *const names[GGUF_N_VALUE_TYPES] = {"u8",  "i8",   "u16",   "i16", "u32",
                                                          "i32", "f32",  "bool",  "str", "array",
                                                          "u64", "i64",  "f64"};
    return type < GGUF_N_VALUE_TYPES ? names[type] : "unknown";
}

static bool skip_value(reader *r, uint32_t type, int depth, const char *what);

/* The body of an array (after its element type and count were read and checked). */
static bool skip_array_body(reader *r, uint32_t etype, uint64_t n, int depth, const char *what) {
    size_t es = scalar_size(etype);
    if (es) {
        /* n * es <= remaining, without overflow */
        if (n > (uint64_t)remaining(r) / es) {
            fail(r, "%s: array of %llu %s elements at offset %zu runs past the end of the file (%zu bytes)",
                 what, (unsigned long long)n, value_type_name(etype), r->pos, r->size);
            return false;
        }
        r->pos += (size_t)(n * es);
        return true;
    }
    for (uint64_t j = 0; j < n; j++) {
        if (!skip_value(r, etype, depth, what)) return false;
    }
    return true;
}

/* Read an array header: element type and count, with the count bounded by the bytes left. */
static bool read_array_header(reader *r, uint32_t *etype, uint64_t *n, int depth, const char *what) {
    if (depth > GGUF_MAX_ARRAY_DEPTH) {
        fail(r, "%s: arrays nested more than %d deep", what, GGUF_MAX_ARRAY_DEPTH);
        return false;
    }
    char w[160];
    snprintf(w, sizeof(w), "the element type of %s", what);
    if (!read_u32(r, etype, w)) return false;
    if (*etype >= GGUF_N_VALUE_TYPES) {
        fail(r, "%s: unknown array element type %u at offset %zu", what, *etype, r->pos - 4);
        return false;
    }
    snprintf(w, sizeof(w), "the element count of %s", what);
    if (!read_u64(r, n, w)) return false;
    /* Each element takes at least 1 byte (scalars), 8 (strings) or 12 (arrays). */
    uint64_t min_elem = *etype == TP_GGUF_STRING ? 8 : *etype == TP_GGUF_ARRAY ? 12 : scalar_size(*etype);
    if (*n > (uint64_t)remaining(r) / min_elem) {
        fail(r, "%s: array of %llu %s elements at offset %zu cannot fit in the file (%zu bytes)", what,
             (unsigned long long)*n, value_type_name(*etype), r->pos, r->size);
        return false;
    }
    return true;
}

static bool skip_value(reader *r, uint32_t type, int depth, const char *what) {
    if (type == TP_GGUF_STRING) {
        const uint8_t *d;
        uint64_t len;
        return read_str(r, &d, &len, what);
    }
    if (type == TP_GGUF_ARRAY) {
        uint32_t etype;
        uint64_t n;
        if (!read_array_header(r, &etype, &n, depth + 1, what)) return false;
        return skip_array_body(r, etype, n, depth + 1, what);
    }
    size_t s = scalar_size(type);
    if (!s) {
        fail(r, "%s: unknown value type %u", what, type);
        return false;
    }
    if (s > remaining(r)) {
        fail(r, "%s: a %s value at offset %zu runs past the end of the file (%zu bytes)", what,
             value_type_name(type), r->pos, r->size);
        return false;
    }
    r->pos += s;
    return true;
}

/* ---- sorted name index ---- */

static int cmp_name_idx(const void *a, const void *b) {
    return strcmp(((const name_idx *)a)->name, ((const name_idx *)b)->name);
}

static int64_t lookup(const name_idx *tab, int64_t n, const char *name) {
    if (!tab || !name || n <= 0) return -1;
    name_idx key = {name, 0};
    const name_idx *hit = bsearch(&key, tab, (size_t)n, sizeof(*tab), cmp_name_idx);
    return hit ? hit->idx : -1;
}

/* ---- parsing ---- */

static bool parse_kv(reader *r, tp_gguf *g, int64_t i) {
    gguf_kv *kv = &g->kv[i];
    char what[160];
    snprintf(what, sizeof(what), "key %lld", (long long)i);
    const uint8_t *kd;
    uint64_t klen;
    if (!read_str(r, &kd, &klen, what)) return false;
    kv->key = copy_name(r, kd, klen, what);
    if (!kv->key) return false;
    snprintf(what, sizeof(what), "key %lld ('%.100s')", (long long)i, kv->key);

    char w[200];
    snprintf(w, sizeof(w), "the value type of %s", what);
    if (!read_u32(r, &kv->type, w)) return false;
    if (kv->type >= GGUF_N_VALUE_TYPES) {
        fail(r, "%s: unknown value type %u at offset %zu", what, kv->type, r->pos - 4);
        return false;
    }
    if (kv->type == TP_GGUF_STRING) {
        if (!read_str(r, &kv->val, &kv->str_len, what)) return false;
        return true;
    }
    if (kv->type != TP_GGUF_ARRAY) {
        kv->val = r->p + r->pos;
        return skip_value(r, kv->type, 0, what);
    }
    if (!read_array_header(r, &kv->arr_type, &kv->arr_n, 1, what)) return false;
    kv->val = r->p + r->pos;
    if (kv->arr_type == TP_GGUF_STRING) {
        /* arr_n <= remaining / 8 (checked above), so this allocation is bounded by the file size */
        kv->str_offs = malloc((size_t)(kv->arr_n ? kv->arr_n : 1) * sizeof(uint64_t));
        if (!kv->str_offs) {
            r->status = TP_ERR_OUT_OF_MEMORY;
            fail(r, "%s: out of memory indexing %llu strings", what, (unsigned long long)kv->arr_n);
            return false;
        }
        size_t start = r->pos;
        for (uint64_t j = 0; j < kv->arr_n; j++) {
            kv->str_offs[j] = (uint64_t)(r->pos - start);
            const uint8_t *d;
            uint64_t len;
            if (!read_str_el(r, &d, &len, what, (int64_t)j)) return false;
        }
        return true;
    }
    return skip_array_body(r, kv->arr_type, kv->arr_n, 1, what);
}

static bool parse_tensor_info(reader *r, tp_gguf *g, int64_t i) {
    gguf_tinfo *t = &g->ti[i];
    char what[160];
    snprintf(what, sizeof(what), "tensor %lld", (long long)i);
    const uint8_t *nd;
    uint64_t nlen;
    if (!read_str(r, &nd, &nlen, what)) return false;
    t->name = copy_name(r, nd, nlen, what);
    if (!t->name) return false;
    snprintf(what, sizeof(what), "tensor %lld ('%.100s')", (long long)i, t->name);
    if (nlen > GGUF_MAX_NAME) {
        fail(r, "%s: the name is %llu bytes long, more than %d", what, (unsigned long long)nlen,
             GGUF_MAX_NAME);
        return false;
    }
    char w[220];
    uint32_t n_dims;
    snprintf(w, sizeof(w), "the dimension count of %s", what);
    if (!read_u32(r, &n_dims, w)) return false;
    if (n_dims < 1 || n_dims > TP_MAX_DIMS) {
        fail(r, "%s: %u dimensions (must be 1..%d)", what, n_dims, TP_MAX_DIMS);
        return false;
    }
    t->n_dims = (int)n_dims;
    int64_t nel = 1;
    for (int d = 0; d < TP_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        uint64_t v;
        snprintf(w, sizeof(w), "ne[%u] of %s", d, what);
        if (!read_u64(r, &v, w)) return false;
        if (v == 0 || v > (uint64_t)INT64_MAX) {
            fail(r, "%s: ne[%u] = %llu is out of range (1..2^63-1)", what, d, (unsigned long long)v);
            return false;
        }
        t->ne[d] = (int64_t)v;
        if (nel > INT64_MAX / t->ne[d]) {
            fail(r, "%s: the element count overflows (ne[%u] = %llu)", what, d, (unsigned long long)v);
            return false;
        }
        nel *= t->ne[d];
    }
    uint32_t type;
    snprintf(w, sizeof(w), "the type of %s", what);
    if (!read_u32(r, &type, w)) return false;
    if (type > (uint32_t)INT32_MAX || !tp_type_is_valid((int)type)) {
        fail(r, "%s: unknown or unsupported tensor type %u", what, type);
        return false;
    }
    t->type = (int)type;
    int64_t blck = tp_type_block_elements(t->type);
    if (t->ne[0] % blck != 0) {
        fail(r, "%s: ne[0] = %lld is not a multiple of %s's block of %lld elements", what,
             (long long)t->ne[0], tp_type_name(t->type), (long long)blck);
        return false;
    }
    /* bytes = (ne0 / blck) * block_bytes * ne1 * ne2 * ne3, every product checked */
    uint64_t nbytes = (uint64_t)(t->ne[0] / blck);
    uint64_t bb = tp_type_block_bytes(t->type);
    if (nbytes > UINT64_MAX / bb) goto too_big;
    nbytes *= bb;
    for (int d = 1; d < TP_MAX_DIMS; d++) {
        if (nbytes > UINT64_MAX / (uint64_t)t->ne[d]) goto too_big;
        nbytes *= (uint64_t)t->ne[d];
    }
    if (nbytes > (uint64_t)SIZE_MAX) goto too_big;
    t->nbytes = (size_t)nbytes;
    snprintf(w, sizeof(w), "the data offset of %s", what);
    if (!read_u64(r, &t->offset, w)) return false;
    return true;
too_big:
    fail(r, "%s: its size in bytes overflows", what);
    return false;
}

/* Tensors ordered by data offset (for the overlap check). */
typedef struct off_idx {
    uint64_t offset;
    int64_t idx;
} off_idx;
static int cmp_off_idx(const void *a, const void *b) {
    uint64_t x = ((const off_idx *)a)->offset, y = ((const off_idx *)b)->offset;
    if (x != y) return x < y ? -1 : 1;
    int64_t i = ((const off_idx *)a)->idx, j = ((const off_idx *)b)->idx;
    return i < j ? -1 : i > j ? 1 : 0;
}

static bool parse(reader *r, tp_gguf *g) {
    if (r->size < GGUF_HEADER_BYTES) {
        if (r->size < 4 || memcmp(r->p, "GGUF", 4) != 0) {
            fail(r, "not a GGUF file (%zu bytes, no \"GGUF\" magic)", r->size);
        } else {
            fail(r, "truncated GGUF header (%zu bytes, need %d)", r->size, GGUF_HEADER_BYTES);
        }
        return false;
    }
    if (memcmp(r->p, "GGUF", 4) != 0) {
        fail(r, "not a GGUF file (magic %02x %02x %02x %02x, expected \"GGUF\")", r->p[0], r->p[1],
             r->p[2], r->p[3]);
        return false;
    }
    r->pos = 4;
    uint32_t version = load_u32(r->p + 4);
    if (version == 1) {
        fail(r, "GGUF version 1 is not supported (only 2 and 3)");
        return false;
    }
    if (version == 0x02000000u || version == 0x03000000u) {
        fail(r, "big-endian GGUF files are not supported");
        return false;
    }
    if (version != 2 && version != 3) {
        fail(r, "unsupported GGUF version %u (only 2 and 3)", version);
        return false;
    }
    g->version = version;
    uint64_t n_tensors = load_u64(r->p + 8);
    uint64_t n_kv = load_u64(r->p + 16);
    r->pos = GGUF_HEADER_BYTES;
    uint64_t rest = remaining(r);
    if (n_tensors > rest / GGUF_MIN_TINFO_BYTES) {
        fail(r, "n_tensors = %llu is more than a file of %zu bytes could hold",
             (unsigned long long)n_tensors, r->size);
        return false;
    }
    if (n_kv > (rest - n_tensors * GGUF_MIN_TINFO_BYTES) / GGUF_MIN_KV_BYTES) {
        fail(r, "n_kv = %llu is more than a file of %zu bytes could hold", (unsigned long long)n_kv,
             r->size);
        return false;
    }
    /* Both counts are now bounded by the file size. */
    g->kv = calloc((size_t)(n_kv ? n_kv : 1), sizeof(*g->kv));
    g->ti = calloc((size_t)(n_tensors ? n_tensors : 1), sizeof(*g->ti));
    g->kv_sorted = calloc((size_t)(n_kv ? n_kv : 1), sizeof(*g->kv_sorted));
    g->ti_sorted = calloc((size_t)(n_tensors ? n_tensors : 1), sizeof(*g->ti_sorted));
    if (!g->kv || !g->ti || !g->kv_sorted || !g->ti_sorted) {
        r->status = TP_ERR_OUT_OF_MEMORY;
        fail(r, "out of memory for %llu keys and %llu tensors", (unsigned long long)n_kv,
             (unsigned long long)n_tensors);
        return false;
    }

    for (uint64_t i = 0; i < n_kv; i++) {
        g->n_kv = (int64_t)i + 1; /* so that close frees what was allocated so far */
        if (!parse_kv(r, g, (int64_t)i)) return false;
    }
    g->n_kv = (int64_t)n_kv;
    for (int64_t i = 0; i < g->n_kv; i++) g->kv_sorted[i] = (name_idx){g->kv[i].key, i};
    if (g->n_kv > 1) qsort(g->kv_sorted, (size_t)g->n_kv, sizeof(name_idx), cmp_name_idx);
    for (int64_t i = 1; i < g->n_kv; i++) {
        if (strcmp(g->kv_sorted[i - 1].name, g->kv_sorted[i].name) == 0) {
            fail(r, "duplicate key '%.200s' (keys %lld and %lld)", g->kv_sorted[i].name,
                 (long long)TP_MIN(g->kv_sorted[i - 1].idx, g->kv_sorted[i].idx),
                 (long long)TP_MAX(g->kv_sorted[i - 1].idx, g->kv_sorted[i].idx));
            return false;
        }
    }

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t ai = lookup(g->kv_sorted, g->n_kv, "general.alignment");
    if (ai >= 0) {
        if (g->kv[ai].type != TP_GGUF_UINT32) {
            fail(r, "general.alignment has type %s (must be u32)", value_type_name(g->kv[ai].type));
            return false;
        }
        uint32_t a = load_u32(g->kv[ai].val);
        if (a == 0 || (a & (a - 1)) != 0) {
            fail(r, "general.alignment = %u is not a power of 2", a);
            return false;
        }
        g->alignment = a;
    }

    for (uint64_t i = 0; i < n_tensors; i++) {
        g->n_tensors = (int64_t)i + 1;
        if (!parse_tensor_info(r, g, (int64_t)i)) return false;
    }
    g->n_tensors = (int64_t)n_tensors;
    for (int64_t i = 0; i < g->n_tensors; i++) g->ti_sorted[i] = (name_idx){g->ti[i].name, i};
    if (g->n_tensors > 1) qsort(g->ti_sorted, (size_t)g->n_tensors, sizeof(name_idx), cmp_name_idx);
    for (int64_t i = 1; i < g->n_tensors; i++) {
        if (strcmp(g->ti_sorted[i - 1].name, g->ti_sorted[i].name) == 0) {
            fail(r, "duplicate tensor name '%s' (tensors %lld and %lld)", g->ti_sorted[i].name,
                 (long long)TP_MIN(g->ti_sorted[i - 1].idx, g->ti_sorted[i].idx),
                 (long long)TP_MAX(g->ti_sorted[i - 1].idx, g->ti_sorted[i].idx));
            return false;
        }
    }

    /* The data section starts at the next multiple of the alignment after the header. */
    size_t header_end = r->pos;
    size_t pad = (g->alignment - header_end % g->alignment) % g->alignment;
    if (pad > SIZE_MAX - header_end) {
        fail(r, "the data section offset overflows");
        return false;
    }
    g->data_offset = header_end + pad;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        gguf_tinfo *t = &g->ti[i];
        if (t->offset % g->alignment != 0) {
            fail(r, "tensor '%s' data offset %llu is not a multiple of the alignment %u", t->name,
                 (unsigned long long)t->offset, g->alignment);
            return false;
        }
        if (g->data_offset > r->size || t->offset > (uint64_t)(r->size - g->data_offset) ||
            t->nbytes > (r->size - g->data_offset) - (size_t)t->offset) {
            fail(r,
                 "tensor '%s' data (offset %llu in the data section at %zu, %zu bytes) runs past the "
                 "end of the file (%zu bytes)",
                 t->name, (unsigned long long)t->offset, g->data_offset, t->nbytes, r->size);
            return false;
        }
        t->data = r->p + g->data_offset + (size_t)t->offset;
    }

    /* No two tensors may share bytes. */
    if (g->n_tensors > 1) {
        off_idx *order = malloc((size_t)g->n_tensors * sizeof(*order));
        if (!order) {
            r->status = TP_ERR_OUT_OF_MEMORY;
            fail(r, "out of memory checking %lld tensors for overlaps", (long long)g->n_tensors);
            return false;
        }
        for (int64_t i = 0; i < g->n_tensors; i++) order[i] = (off_idx){g->ti[i].offset, i};
        qsort(order, (size_t)g->n_tensors, sizeof(*order), cmp_off_idx);
        for (int64_t k = 1; k < g->n_tensors; k++) {
            const gguf_tinfo *a = &g->ti[order[k - 1].idx], *b = &g->ti[order[k].idx];
            /* a->offset + a->nbytes fits: both lie inside the file */
            if (a->nbytes > 0 && a->offset + a->nbytes > b->offset) {
                fail(r, "tensors '%s' (offset %llu, %zu bytes) and '%s' (offset %llu) overlap", a->name,
                     (unsigned long long)a->offset, a->nbytes, b->name, (unsigned long long)b->offset);
                free(order);
                return false;
            }
        }
        free(order);
    }
    return true;
}

static void gguf_free(tp_gguf *g) {
    if (!g) return;
    if (g->kv) {
        for (int64_t i = 0; i < g->n_kv; i++) {
            free(g->kv[i].key);
            free(g->kv[i].str_offs);
        }
    }
    if (g->ti) {
        for (int64_t i = 0; i < g->n_tensors; i++) free(g->ti[i].name);
    }
    free(g->kv);
    free(g->ti);
    free(g->kv_sorted);
    free(g->ti_sorted);
    if (g->map) munmap(g->map, g->size);
    free(g);
}

tp_status tp_gguf_open(const char *path, tp_gguf **out, tp_error *err) {
    if (out) *out = NULL;
    if (!path || !out) {
        tp_error_set(err, TP_ERR_INVALID_ARGUMENT, "tp_gguf_open: %s is NULL", !path ? "path" : "out");
        return TP_ERR_INVALID_ARGUMENT;
    }
    /* O_NONBLOCK: opening a FIFO must not hang (it is then rejected as not a regular file). */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        char msg[128] = "unknown error";
        (void)strerror_r(e, msg, sizeof(msg));
        tp_error_set(err, TP_ERR_IO, "%s: cannot open: %s", path, msg);
        return TP_ERR_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        char msg[128] = "unknown error";
        (void)strerror_r(e, msg, sizeof(msg));
        close(fd);
        tp_error_set(err, TP_ERR_IO, "%s: cannot stat: %s", path, msg);
        return TP_ERR_IO;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        tp_error_set(err, TP_ERR_IO, "%s: not a regular file", path);
        return TP_ERR_IO;
    }
    if (st.st_size < 0 || (uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        tp_error_set(err, TP_ERR_IO, "%s: file size %lld cannot be mapped", path, (long long)st.st_size);
        return TP_ERR_IO;
    }
    tp_gguf *g = calloc(1, sizeof(*g));
    if (!g) {
        close(fd);
        tp_error_set(err, TP_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
        return TP_ERR_OUT_OF_MEMORY;
    }
    snprintf(g->path, sizeof(g->path), "%s", path);
    g->size = (size_t)st.st_size;
    if (g->size > 0) {
        void *m = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            char msg[128] = "unknown error";
            (void)strerror_r(e, msg, sizeof(msg));
            close(fd);
            free(g);
            tp_error_set(err, TP_ERR_IO, "%s: cannot map %zu bytes: %s", path, (size_t)st.st_size, msg);
            return TP_ERR_IO;
        }
        g->map = m;
    }
    close(fd); /* the mapping stays valid */

    static const uint8_t empty[1] = {0};
    reader r = {g->map ? g->map : empty, g->size, 0, path, err, false, TP_OK};
    if (!parse(&r, g)) {
        gguf_free(g);
        return r.status != TP_OK ? r.status : TP_ERR_FORMAT;
    }
    *out = g;
    return TP_OK;
}

void tp_gguf_close(tp_gguf *g) { gguf_free(g); }

/* ---- key/value access ---- */

int64_t tp_gguf_n_kv(const tp_gguf *g) { return g ? g->n_kv : 0; }

int64_t tp_gguf_find_key(const tp_gguf *g, const char *key) {
    return g ? lookup(g->kv_sorted, g->n_kv, key) : -1;
}

static const gguf_kv *kv_at(const tp_gguf *g, int64_t i) {
    return g && i >= 0 && i < g->n_kv ? &g->kv[i] : NULL;
}

const char *tp_gguf_key(const tp_gguf *g, int64_t i) {
    const gguf_kv *kv = kv_at(g, i);
    return kv ? kv->key : NULL;
}

int tp_gguf_kv_type(const tp_gguf *g, int64_t i) {
    const gguf_kv *kv = kv_at(g, i);
    return kv ? (int)kv->type : -1;
}

int tp_gguf_arr_type(const tp_gguf *g, int64_t i) {
    const gguf_kv *kv = kv_at(g, i);
    return kv && kv->type == TP_GGUF_ARRAY ? (int)kv->arr_type : -1;
}

int64_t tp_gguf_arr_n(const tp_gguf *g, int64_t i) {
    const gguf_kv *kv = kv_at(g, i);
    return kv && kv->type == TP_GGUF_ARRAY ? (int64_t)kv->arr_n : -1;
}

/* An integer value of type `type` at p as int64; false if the type is not an integer or the
 * value does not fit. */
static bool int_value(uint32_t type, const uint8_t *p, int64_t *out) {
    switch (type) {
    case TP_GGUF_UINT8: *out = p[0]; return true;
    case TP_GGUF_INT8: *out = (int8_t)p[0]; return true;
    case TP_GGUF_UINT16: *out = (uint16_t)(p[0] | p[1] << 8); return true;
    case TP_GGUF_INT16: *out = (int16_t)(uint16_t)(p[0] | p[1] << 8); return true;
    case TP_GGUF_UINT32: *out = load_u32(p); return true;
    case TP_GGUF_INT32: *out = (int32_t)load_u32(p); return true;
    case TP_GGUF_UINT64: {
        uint64_t v = load_u64(p);
        if (v > (uint64_t)INT64_MAX) return false;
        *out = (int64_t)v;
        return true;
    }
    case TP_GGUF_INT64: *out = (int64_t)load_u64(p); return true;
    default: return false;
    }
}

static bool float_value(uint32_t type, const uint8_t *p, float *out) {
    if (type == TP_GGUF_FLOAT32) {
        uint32_t b = load_u32(p);
        memcpy(out, &b, sizeof(*out));
        return true;
    }
    if (type == TP_GGUF_FLOAT64) {
        uint64_t b = load_u64(p);
        double d;
        memcpy(&d, &b, sizeof(d));
        *out = (float)d;
        return true;
    }
    return false;
}

static tp_status find_kv(const tp_gguf *g, const char *key, const void *out, const gguf_kv **kv) {
    if (!g || !key || !out) return TP_ERR_INVALID_ARGUMENT;
    int64_t i = tp_gguf_find_key(g, key);
    if (i < 0) return TP_ERR_INVALID_ARGUMENT;
    *kv = &g->kv[i];
    return TP_OK;
}

tp_status tp_gguf_get_i64(const tp_gguf *g, const char *key, int64_t *out) {
    const gguf_kv *kv;
    tp_status st = find_kv(g, key, out, &kv);
    if (st != TP_OK) return st;
    return int_value(kv->type, kv->val, out) ? TP_OK : TP_ERR_TYPE;
}

tp_status tp_gguf_get_u32(const tp_gguf *g, const char *key, uint32_t *out) {
    int64_t v;
    tp_status st = tp_gguf_get_i64(g, key, &v);
    if (st != TP_OK) return st;
    if (v < 0 || v > (int64_t)UINT32_MAX) return TP_ERR_TYPE;
    *out = (uint32_t)v;
    return TP_OK;
}

tp_status tp_gguf_get_f32(const tp_gguf *g, const char *key, float *out) {
    const gguf_kv *kv;
    tp_status st = find_kv(g, key, out, &kv);
    if (st != TP_OK) return st;
    return float_value(kv->type, kv->val, out) ? TP_OK : TP_ERR_TYPE;
}

tp_status tp_gguf_get_bool(const tp_gguf *g, const char *key, bool *out) {
    const gguf_kv *kv;
    tp_status st = find_kv(g, key, out, &kv);
    if (st != TP_OK) return st;
    if (kv->type != TP_GGUF_BOOL) return TP_ERR_TYPE;
    *out = kv->val[0] != 0;
    return TP_OK;
}

tp_status tp_gguf_get_str(const tp_gguf *g, const char *key, const char **data, size_t *len) {
    const gguf_kv *kv;
    tp_status st = find_kv(g, key, data, &kv);
    if (st != TP_OK) return st;
    if (!len) return TP_ERR_INVALID_ARGUMENT;
    if (kv->type != TP_GGUF_STRING) return TP_ERR_TYPE;
    *data = (const char *)kv->val;
    *len = (size_t)kv->str_len;
    return TP_OK;
}

/* The array `key` with elements satisfying the caller's type test, and j in range. */
static tp_status find_arr(const tp_gguf *g, const char *key, int64_t j, const void *out, const gguf_kv **kv) {
    tp_status st = find_kv(g, key, out, kv);
    if (st != TP_OK) return st;
    if ((*kv)->type != TP_GGUF_ARRAY) return TP_ERR_TYPE;
    if (j < 0 || (uint64_t)j >= (*kv)->arr_n) return TP_ERR_INVALID_ARGUMENT;
    return TP_OK;
}

tp_status tp_gguf_get_arr_i64(const tp_gguf *g, const char *key, int64_t j, int64_t *out) {
    const gguf_kv *kv;
    tp_status st = find_arr(g, key, j, out, &kv);
    if (st != TP_OK) return st;
    size_t es = scalar_size(kv->arr_type);
    if (!es || kv->arr_type == TP_GGUF_BOOL || kv->arr_type == TP_GGUF_FLOAT32 ||
        kv->arr_type == TP_GGUF_FLOAT64)
        return TP_ERR_TYPE;
    return int_value(kv->arr_type, kv->val + (size_t)j * es, out) ? TP_OK : TP_ERR_TYPE;
}

tp_status tp_gguf_get_arr_f32(const tp_gguf *g, const char *key, int64_t j, float *out) {
    const gguf_kv *kv;
    tp_status st = find_arr(g, key, j, out, &kv);
    if (st != TP_OK) return st;
    size_t es = scalar_size(kv->arr_type);
    if (!es) return TP_ERR_TYPE;
    return float_value(kv->arr_type, kv->val + (size_t)j * es, out) ? TP_OK : TP_ERR_TYPE;
}

tp_status tp_gguf_get_arr_str(const tp_gguf *g, const char *key, int64_t j, const char **data,
                              size_t *len) {
    const gguf_kv *kv;
    tp_status st = find_arr(g, key, j, data, &kv);
    if (st != TP_OK) return st;
    if (!len) return TP_ERR_INVALID_ARGUMENT;
    if (kv->arr_type != TP_GGUF_STRING) return TP_ERR_TYPE;
    const uint8_t *p = kv->val + kv->str_offs[j];
    *len = (size_t)load_u64(p);
    *data = (const char *)(p + 8);
    return TP_OK;
}

/* ---- tensors ---- */

int64_t tp_gguf_n_tensors(const tp_gguf *g) { return g ? g->n_tensors : 0; }

int64_t tp_gguf_find_tensor(const tp_gguf *g, const char *name) {
    return g ? lookup(g->ti_sorted, g->n_tensors, name) : -1;
}

static const gguf_tinfo *ti_at(const tp_gguf *g, int64_t i) {
    return g && i >= 0 && i < g->n_tensors ? &g->ti[i] : NULL;
}

const char *tp_gguf_tensor_name(const tp_gguf *g, int64_t i) {
    const gguf_tinfo *t = ti_at(g, i);
    return t ? t->name : NULL;
}

int tp_gguf_tensor_type(const tp_gguf *g, int64_t i) {
    const gguf_tinfo *t = ti_at(g, i);
    return t ? t->type : -1;
}

int tp_gguf_tensor_n_dims(const tp_gguf *g, int64_t i) {
    const gguf_tinfo *t = ti_at(g, i);
    return t ? t->n_dims : 0;
}

int64_t tp_gguf_tensor_ne(const tp_gguf *g, int64_t i, int dim) {
    const gguf_tinfo *t = ti_at(g, i);
    if (!t || dim < 0 || dim >= TP_MAX_DIMS) return 0;
    return t->ne[dim];
}

size_t tp_gguf_tensor_nbytes(const tp_gguf *g, int64_t i) {
    const gguf_tinfo *t = ti_at(g, i);
    return t ? t->nbytes : 0;
}

const void *tp_gguf_tensor_data(const tp_gguf *g, int64_t i) {
    const gguf_tinfo *t = ti_at(g, i);
    return t ? t->data : NULL;
}

tp_tensor *tp_gguf_load_tensor(tp_gguf *g, tp_context *ctx, const char *name) {
    if (!ctx) return NULL;
    if (!g || !name) {
        tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT, "tp_gguf_load_tensor: %s is NULL",
                         !g ? "the GGUF file" : "the tensor name");
        return NULL;
    }
    int64_t i = tp_gguf_find_tensor(g, name);
    if (i < 0) {
        tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT, "tp_gguf_load_tensor: %s has no tensor '%s'",
                         g->path, name);
        return NULL;
    }
    const gguf_tinfo *t = &g->ti[i];
    /* The mapping is read-only: the tensor is a leaf that kernels only read. */
    tp_tensor *out = tp_new_tensor_external(ctx, t->type, t->n_dims, t->ne, (void *)t->data, t->nbytes);
    if (!out) return NULL;
    tp_tensor_set_name(out, t->name);
    return out;
}

void tp_gguf_drop_pages(tp_gguf *g) {
    /* a read-only private file mapping: dropped pages are read from the file again when touched */
    if (g && g->map && g->size > 0) madvise(g->map, g->size, MADV_DONTNEED);
}
