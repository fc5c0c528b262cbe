/* test_gguf_fuzz.c - the GGUF reader against mutated files. Self-contained: a small valid GGUF
 * (every value type, a string array, a nested array, F32/F16/Q8_0 tensors, the last tensor ending
 * exactly at the end of the file) is written by hand to a temporary file; then
 *   - the valid file must open and read back exactly;
 *   - every truncation must fail with TP_ERR_FORMAT and a message naming the file;
 *   - every length/count/size field overwritten with hostile values, and 2000 seeded random
 *     mutations, must either open (then every accessor is exercised and every tensor byte read)
 *     or fail with TP_ERR_FORMAT/TP_ERR_IO and a message - never crash, hang or leak.
 * Built against the ASan+UBSan library by `make ctest`. */
#include "tilepass.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N_RANDOM 2000

static int n_pass, n_fail, n_opened;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            n_pass++;                                                                              \
        } else {                                                                                   \
            n_fail++;                                                                              \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* ---- building the file ---- */

typedef struct buf {
    uint8_t data[4096];
    size_t n;
    /* offsets of the u32/u64 fields worth overwriting, with their widths */
    size_t field_off[128];
    int field_w[128];
    int n_fields;
} buf;

static void put(buf *b, const void *p, size_t n) {
    memcpy(b->data + b->n, p, n);
    b->n += n;
}
static void mark(buf *b, int width) {
    if (b->n_fields < 128) {
        b->field_off[b->n_fields] = b->n;
        b->field_w[b->n_fields] = width;
        b->n_fields++;
    }
}
static void put_u8(buf *b, uint8_t v) { put(b, &v, 1); }
static void put_u32(buf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, x, 4);
}
static void put_u64(buf *b, uint64_t v) {
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}
static void put_mu32(buf *b, uint32_t v) { mark(b, 4); put_u32(b, v); }
static void put_mu64(buf *b, uint64_t v) { mark(b, 8); put_u64(b, v); }
static void put_str(buf *b, const char *s) {
    put_mu64(b, strlen(s));
    put(b, s, strlen(s));
}
static void put_f32(buf *b, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(b, u);
}
static void put_key(buf *b, const char *k, uint32_t type) {
    put_str(b, k);
    put_mu32(b, type);
}
static void put_tinfo(buf *b, const char *name, int n_dims, const int64_t *ne, uint32_t type, uint64_t off) {
    put_str(b, name);
    put_mu32(b, (uint32_t)n_dims);
    for (int i = 0; i < n_dims; i++) put_mu64(b, (uint64_t)ne[i]);
    put_mu32(b, type);
    put_mu64(b, off);
}

static const float F32_VALUES[12] = {1, -2, 3.5f, 0, 1e-3f, 7, 8, 9, -10, 11, 12, 13};
static const uint16_t F16_VALUES[16] = {0x3c00, 0xc000, 0x3800, 0, 0x4200, 0x4400, 0x3555, 0x7bff,
                                        0x0001, 0x8400, 0x3c01, 0x4000, 0x4900, 0x5000, 0xbc00, 0x3e00};

static void build(buf *b) {
    memset(b, 0, sizeof(*b));
    put(b, "GGUF", 4);
    put_mu32(b, 3);
    put_mu64(b, 3);  /* tensors */
    put_mu64(b, 11); /* kv */
    put_key(b, "general.architecture", TP_GGUF_STRING);
    put_str(b, "fuzz");
    put_key(b, "general.alignment", TP_GGUF_UINT32);
    put_u32(b, 32);
    put_key(b, "f.u32", TP_GGUF_UINT32);
    put_u32(b, 7);
    put_key(b, "f.i8", TP_GGUF_INT8);
    put_u8(b, (uint8_t)-3);
    put_key(b, "f.f32", TP_GGUF_FLOAT32);
    put_f32(b, 1.5f);
    put_key(b, "f.bool", TP_GGUF_BOOL);
    put_u8(b, 1);
    put_key(b, "f.u64", TP_GGUF_UINT64);
    put_u64(b, (uint64_t)1 << 40);
    put_key(b, "f.f64", TP_GGUF_FLOAT64);
    double d = 0.25;
    uint64_t du;
    memcpy(&du, &d, 8);
    put_u64(b, du);
    put_key(b, "f.strs", TP_GGUF_ARRAY);
    put_mu32(b, TP_GGUF_STRING);
    put_mu64(b, 3);
    put_str(b, "alpha");
    put_str(b, "");
    put_str(b, "gamma");
    put_key(b, "f.arr_f32", TP_GGUF_ARRAY);
    put_mu32(b, TP_GGUF_FLOAT32);
    put_mu64(b, 4);
    for (int i = 0; i < 4; i++) put_f32(b, 0.5f * (float)i);
    put_key(b, "f.nested", TP_GGUF_ARRAY);
    put_mu32(b, TP_GGUF_ARRAY);
    put_mu64(b, 2);
    put_mu32(b, TP_GGUF_UINT8);
    put_mu64(b, 2);
    put_u8(b, 1);
    put_u8(b, 2);
    put_mu32(b, TP_GGUF_UINT8);
    put_mu64(b, 1);
    put_u8(b, 3);

    int64_t ne_a[2] = {4, 3}, ne_b[2] = {8, 2}, ne_c[1] = {32};
    put_tinfo(b, "t.f32", 2, ne_a, TP_TYPE_F32, 0);  /* 48 bytes */
    put_tinfo(b, "t.f16", 2, ne_b, TP_TYPE_F16, 64); /* 32 bytes */
    put_tinfo(b, "t.q8", 1, ne_c, TP_TYPE_Q8_0, 96); /* 34 bytes */
    while (b->n % 32) put_u8(b, 0);
    size_t data = b->n;
    for (int i = 0; i < 12; i++) put_f32(b, F32_VALUES[i]);
    while (b->n < data + 64) put_u8(b, 0);
    for (int i = 0; i < 16; i++) {
        uint8_t x[2] = {(uint8_t)F16_VALUES[i], (uint8_t)(F16_VALUES[i] >> 8)};
        put(b, x, 2);
    }
    /* Q8_0 block: f16 scale 1.0, then 32 int8 */
    put_u8(b, 0x00);
    put_u8(b, 0x3c);
    for (int i = 0; i < 32; i++) put_u8(b, (uint8_t)(int8_t)(i - 16));
}

/* ---- running ---- */

static char g_path[512];

static int write_file(const uint8_t *p, size_t n) {
    FILE *f = fopen(g_path, "wb");
    if (!f) return -1;
    size_t w = n ? fwrite(p, 1, n, f) : 0;
    int rc = fclose(f);
    return (w == n && rc == 0) ? 0 : -1;
}

static volatile uint64_t g_sink; /* keeps the byte reads */

/* Every accessor on an open file; returns false on an inconsistency. */
static bool exercise(tp_gguf *g) {
    bool ok = true;
    int64_t n_kv = tp_gguf_n_kv(g);
    for (int64_t i = 0; i < n_kv; i++) {
        const char *key = tp_gguf_key(g, i);
        if (!key || tp_gguf_find_key(g, key) != i) ok = false;
        if (!key) continue;
        int t = tp_gguf_kv_type(g, i);
        if (t < 0 || t > TP_GGUF_FLOAT64) ok = false;
        uint32_t u;
        int64_t v;
        float f;
        bool bo;
        const char *s;
        size_t len;
        (void)tp_gguf_get_u32(g, key, &u);
        (void)tp_gguf_get_i64(g, key, &v);
        (void)tp_gguf_get_f32(g, key, &f);
        (void)tp_gguf_get_bool(g, key, &bo);
        if (tp_gguf_get_str(g, key, &s, &len) == TP_OK) {
            for (size_t k = 0; k < len; k++) g_sink += (uint8_t)s[k];
        }
        if (t == TP_GGUF_ARRAY) {
            int64_t n = tp_gguf_arr_n(g, i);
            if (n < 0) ok = false;
            for (int64_t j = 0; j < n && j < 100000; j++) {
                (void)tp_gguf_get_arr_i64(g, key, j, &v);
                (void)tp_gguf_get_arr_f32(g, key, j, &f);
                if (tp_gguf_get_arr_str(g, key, j, &s, &len) == TP_OK) {
                    for (size_t k = 0; k < len; k++) g_sink += (uint8_t)s[k];
                }
            }
            if (tp_gguf_get_arr_i64(g, key, n, &v) == TP_OK) ok = false; /* one past the end */
        }
    }
    tp_context *ctx = NULL;
    if (tp_context_create(NULL, &ctx, NULL) != TP_OK) return false;
    int64_t n_t = tp_gguf_n_tensors(g);
    for (int64_t i = 0; i < n_t; i++) {
        const char *name = tp_gguf_tensor_name(g, i);
        if (!name || tp_gguf_find_tensor(g, name) != i) ok = false;
        const uint8_t *p = tp_gguf_tensor_data(g, i);
        size_t nb = tp_gguf_tensor_nbytes(g, i);
        for (size_t k = 0; k < nb; k++) g_sink += p[k];
        if (!name) continue;
        tp_context_clear_error(ctx);
        tp_tensor *t = tp_gguf_load_tensor(g, ctx, name);
        if (!t) {
            /* allowed only for shapes the context refuses (sizes beyond its limits) */
            if (tp_context_status(ctx) == TP_OK) ok = false;
            continue;
        }
        int64_t ne = tp_tensor_nelements(t);
        if (ne > 0 && ne <= (1 << 24)) {
            float *dst = malloc((size_t)ne * sizeof(float));
            if (dst) {
                (void)tp_tensor_get_f32(t, dst, ne);
                free(dst);
            }
        }
    }
    tp_context_free(ctx);
    return ok;
}

/* One file: opens and reads cleanly, or fails cleanly. Returns the status. */
static tp_status try_open(const uint8_t *p, size_t n, const char *what, long id) {
    if (write_file(p, n) != 0) {
        CHECK(0, "cannot write %s", g_path);
        return TP_ERR_IO;
    }
    tp_gguf *g = (tp_gguf *)0x1;
    tp_error err;
    memset(&err, 0, sizeof(err));
    tp_status st = tp_gguf_open(g_path, &g, &err);
    if (st == TP_OK) {
        n_opened++;
        CHECK(g != NULL && exercise(g), "%s %ld: opened but inconsistent", what, id);
        tp_gguf_close(g);
    } else {
        size_t pl = strlen(g_path);
        bool named = strncmp(err.message, g_path, pl) == 0 && strncmp(err.message + pl, ": ", 2) == 0 &&
                     strlen(err.message) > pl + 5;
        CHECK((st == TP_ERR_FORMAT || st == TP_ERR_IO) && g == NULL && named,
              "%s %ld: status %d, message '%s'", what, id, (int)st, err.message);
    }
    return st;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static const uint64_t HOSTILE[] = {0, 1, 2, 3, 4, 5, 13, 31, 33, 255, 0x7fffffffull, 0x80000000ull,
                                   0xffffffffull, 0x100000000ull, 0x7fffffffffffffffull,
                                   0x8000000000000000ull, 0xffffffffffffffffull};
#define N_HOSTILE (sizeof(HOSTILE) / sizeof(HOSTILE[0]))

static void store(uint8_t *p, size_t off, size_t n_total, uint64_t v, int width) {
    for (int k = 0; k < width && off + (size_t)k < n_total; k++) p[off + (size_t)k] = (uint8_t)(v >> (8 * k));
}

int main(void) {
    const char *tmpdir = getenv("TMPDIR");
    if (!tmpdir || !*tmpdir) tmpdir = "/tmp";
    snprintf(g_path, sizeof(g_path), "%s/tp_gguf_fuzz_XXXXXX", tmpdir);
    int fd = mkstemp(g_path);
    if (fd < 0) {
        fprintf(stderr, "cannot create a temporary file in %s\n", tmpdir);
        return 1;
    }
    close(fd);

    static buf b;
    build(&b);
    static uint8_t m[sizeof(b.data)];

    /* 1. the valid file reads back exactly */
    CHECK(write_file(b.data, b.n) == 0, "write");
    tp_gguf *g = NULL;
    tp_error err;
    memset(&err, 0, sizeof(err));
    tp_status st = tp_gguf_open(g_path, &g, &err);
    CHECK(st == TP_OK, "valid file opens: %s", err.message);
    if (st == TP_OK) {
        uint32_t u = 0;
        int64_t v = 0;
        float f = 0;
        bool bo = false;
        const char *s = NULL;
        size_t len = 0;
        CHECK(tp_gguf_n_kv(g) == 11 && tp_gguf_n_tensors(g) == 3, "counts");
        CHECK(tp_gguf_get_u32(g, "f.u32", &u) == TP_OK && u == 7, "u32");
        CHECK(tp_gguf_get_i64(g, "f.i8", &v) == TP_OK && v == -3, "i8 as i64");
        CHECK(tp_gguf_get_u32(g, "f.i8", &u) == TP_ERR_TYPE, "negative i8 as u32");
        CHECK(tp_gguf_get_i64(g, "f.u64", &v) == TP_OK && v == ((int64_t)1 << 40), "u64");
        CHECK(tp_gguf_get_f32(g, "f.f32", &f) == TP_OK && f == 1.5f, "f32");
        CHECK(tp_gguf_get_f32(g, "f.f64", &f) == TP_OK && f == 0.25f, "f64 as f32");
        CHECK(tp_gguf_get_bool(g, "f.bool", &bo) == TP_OK && bo, "bool");
        CHECK(tp_gguf_get_i64(g, "f.bool", &v) == TP_ERR_TYPE, "bool is not an integer");
        CHECK(tp_gguf_get_str(g, "general.architecture", &s, &len) == TP_OK && len == 4 &&
                  memcmp(s, "fuzz", 4) == 0, "str");
        CHECK(tp_gguf_get_arr_str(g, "f.strs", 2, &s, &len) == TP_OK && len == 5 && memcmp(s, "gamma", 5) == 0,
              "arr str");
        CHECK(tp_gguf_get_arr_str(g, "f.strs", 1, &s, &len) == TP_OK && len == 0, "empty arr str");
        CHECK(tp_gguf_get_arr_f32(g, "f.arr_f32", 3, &f) == TP_OK && f == 1.5f, "arr f32");
        CHECK(tp_gguf_arr_type(g, tp_gguf_find_key(g, "f.nested")) == TP_GGUF_ARRAY &&
                  tp_gguf_arr_n(g, tp_gguf_find_key(g, "f.nested")) == 2, "nested");
        CHECK(tp_gguf_get_u32(g, "missing", &u) == TP_ERR_INVALID_ARGUMENT, "missing key");
        tp_context *ctx = NULL;
        CHECK(tp_context_create(NULL, &ctx, NULL) == TP_OK, "context");
        float out[16];
        tp_tensor *ta = tp_gguf_load_tensor(g, ctx, "t.f32");
        CHECK(ta && tp_tensor_ne(ta, 0) == 4 && tp_tensor_ne(ta, 1) == 3 &&
                  strcmp(tp_tensor_name(ta), "t.f32") == 0, "t.f32 shape and name");
        CHECK(ta && tp_tensor_get_f32(ta, out, 12) == TP_OK && memcmp(out, F32_VALUES, sizeof(F32_VALUES)) == 0,
              "t.f32 values");
        tp_tensor *tb = tp_gguf_load_tensor(g, ctx, "t.f16");
        CHECK(tb && tp_tensor_get_f32(tb, out, 16) == TP_OK && out[0] == 1.0f && out[1] == -2.0f &&
                  out[7] == 65504.0f, "t.f16 values");
        tp_tensor *tc = tp_gguf_load_tensor(g, ctx, "t.q8");
        CHECK(tc && tp_tensor_type(tc) == TP_TYPE_Q8_0 && tp_tensor_nbytes(tc) == 34, "t.q8");
        CHECK(tp_gguf_load_tensor(g, ctx, "absent") == NULL &&
                  tp_context_status(ctx) == TP_ERR_INVALID_ARGUMENT &&
                  strstr(tp_context_error(ctx), "absent") != NULL, "absent tensor: context error");
        tp_context_free(ctx);
        CHECK(exercise(g), "exercise the valid file");
        tp_gguf_close(g);
    }

    /* 2. every truncation fails (the last tensor ends at the end of the file) */
    int n_trunc = 0;
    for (size_t cut = 0; cut < b.n; cut++) {
        st = try_open(b.data, cut, "truncation", (long)cut);
        CHECK(st == TP_ERR_FORMAT, "truncation at %zu opened (status %d)", cut, (int)st);
        n_trunc++;
    }

    /* 3. every recorded field x every hostile value */
    int n_fields = 0;
    for (int fi = 0; fi < b.n_fields; fi++) {
        for (size_t h = 0; h < N_HOSTILE; h++) {
            memcpy(m, b.data, b.n);
            store(m, b.field_off[fi], b.n, HOSTILE[h], b.field_w[fi]);
            try_open(m, b.n, "field", fi * 100 + (long)h);
            n_fields++;
        }
    }

    /* 4. seeded random mutations (bytes, bit flips, hostile values, cuts) */
    for (long it = 0; it < N_RANDOM; it++) {
        memcpy(m, b.data, b.n);
        size_t n = b.n;
        int k = 1 + (int)(rnd() % 4);
        for (int j = 0; j < k; j++) {
            size_t pos = (size_t)(rnd() % n);
            switch (rnd() % 5) {
            case 0: m[pos] = (uint8_t)rnd(); break;
            case 1: m[pos] ^= (uint8_t)(1u << (rnd() % 8)); break;
            case 2: store(m, pos, n, HOSTILE[rnd() % N_HOSTILE], (rnd() & 1) ? 8 : 4); break;
            case 3: {
                int fi = (int)(rnd() % (uint64_t)b.n_fields);
                store(m, b.field_off[fi], n, HOSTILE[rnd() % N_HOSTILE] + (rnd() % 3), b.field_w[fi]);
                break;
            }
            default: n = pos + 1; break; /* truncate */
            }
        }
        try_open(m, n, "mutation", it);
    }

    unlink(g_path);
    printf("gguf fuzz: %d truncations, %d field overwrites, %d random mutations (%d mutated files opened)\n",
           n_trunc, n_fields, N_RANDOM, n_opened);
    printf("gguf fuzz: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail == 0 ? 0 : 1;
}
