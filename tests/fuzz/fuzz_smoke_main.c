/* fuzz_smoke_main.c - a deterministic stand-in for libFuzzer's driver (`make fuzz-smoke`, part of `make test`):
 * linked with one fuzz target (fuzz_load.c, fuzz_image.c) and the ASan/UBSan library, it feeds the target each
 * seed file, then a fixed set of mutations of it drawn from a seeded generator (the same inputs on every run):
 * bit flips, random bytes, 1/2/4/8-byte little-endian fields overwritten with hostile values (0, 1, -1,
 * 2^31, 2^32 - 1, 2^63, sizes near the file's), truncations, a chunk repeated, deleted or copied from
 * elsewhere, and combinations of those. A crash or a sanitizer report fails it (the sanitizer exits non-zero).
 * With $FUZZ_SMOKE_LAST set, each input is first written to that file, so that a run that dies leaves the
 * input that killed it behind (replay it with the libFuzzer build, or with this driver given that file).
 *
 *   fuzz_smoke [-n MUTATIONS_PER_SEED] [-s SEED] [-t MAX_SECONDS] SEED_FILE_OR_DIR...
 */
#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define TP_MIN_SZ(a, b) ((a) < (b) ? (a) : (b))

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t next(rng *r) { /* splitmix64 */
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static size_t below(rng *r, size_t n) { return n ? (size_t)(next(r) % n) : 0; }

typedef struct bytes {
    uint8_t *p;
    size_t n, cap;
} bytes;

static void reserve(bytes *b, size_t n) {
    if (n <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < n) cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) {
        fprintf(stderr, "fuzz_smoke: out of memory\n");
        exit(2);
    }
    b->p = p;
    b->cap = cap;
}

static bool read_file(const char *path, bytes *out) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    out->n = 0;
    uint8_t chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        reserve(out, out->n + got);
        memcpy(out->p + out->n, chunk, got);
        out->n += got;
    }
    fclose(f);
    return true;
}

static void put_le(uint8_t *p, uint64_t v, int width) {
    for (int i = 0; i < width; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* One mutation step on b (which keeps at least one byte of capacity). */
static void mutate_once(rng *r, bytes *b, const bytes *seed) {
    const uint64_t hostile[] = {0,           1,          2,          3,          7,          8,
                                31,          32,         33,         255,        256,        0x7fff,
                                0xffff,      0x7fffffff, 0x80000000, 0xffffffff, 0x100000000ull,
                                (uint64_t)1 << 40,       0x7fffffffffffffffull,  0x8000000000000000ull,
                                0xffffffffffffffffull,   (uint64_t)seed->n,      (uint64_t)seed->n + 1,
                                (uint64_t)seed->n / 2};
    switch (below(r, 8)) {
    case 0: /* flip bits */
        for (size_t k = 1 + below(r, 4); k > 0 && b->n; k--) b->p[below(r, b->n)] ^= (uint8_t)(1u << below(r, 8));
        break;
    case 1: /* random bytes */
        for (size_t k = 1 + below(r, 8); k > 0 && b->n; k--) b->p[below(r, b->n)] = (uint8_t)next(r);
        break;
    case 2:
    case 3: { /* a hostile field, aligned like GGUF's (most fields sit at 4- or 8-byte offsets from some start) */
        static const int widths[4] = {1, 2, 4, 8};
        const int w = widths[below(r, 4)];
        if (b->n < (size_t)w) break;
        size_t off = below(r, b->n - (size_t)w + 1);
        if (below(r, 2)) off &= ~(size_t)3;
        uint64_t v = hostile[below(r, sizeof hostile / sizeof hostile[0])];
        if (below(r, 4) == 0) v += below(r, 5) - 2;
        put_le(b->p + off, v, w);
        break;
    }
    case 4: /* truncate */
        b->n = below(r, b->n + 1);
        break;
    case 5: { /* repeat a chunk in place (insert a copy after it) */
        if (!b->n) break;
        size_t at = below(r, b->n), len = 1 + below(r, TP_MIN_SZ(64, b->n - at));
        reserve(b, b->n + len);
        memmove(b->p + at + len, b->p + at, b->n - at);
        b->n += len;
        break;
    }
    case 6: { /* delete a chunk */
        if (!b->n) break;
        size_t at = below(r, b->n), len = 1 + below(r, TP_MIN_SZ(64, b->n - at));
        memmove(b->p + at, b->p + at + len, b->n - at - len);
        b->n -= len;
        break;
    }
    default: { /* copy a chunk from elsewhere in the seed */
        if (!b->n || !seed->n) break;
        size_t from = below(r, seed->n), to = below(r, b->n);
        size_t len = 1 + below(r, 32);
        if (len > seed->n - from) len = seed->n - from;
        if (len > b->n - to) len = b->n - to;
        memcpy(b->p + to, seed->p + from, len);
        break;
    }
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *g_last;

static void run(const bytes *in) {
    if (g_last) {
        FILE *f = fopen(g_last, "wb");
        if (f) {
            if (in->n) fwrite(in->p, 1, in->n, f);
            fclose(f);
        }
    }
    /* a private copy exactly as long as the input, so that ASan sees reads one past its end */
    uint8_t *copy = malloc(in->n ? in->n : 1);
    if (!copy) exit(2);
    if (in->n) memcpy(copy, in->p, in->n);
    LLVMFuzzerTestOneInput(copy, in->n);
    free(copy);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
    long per_seed = 100;
    uint64_t seed0 = 1;
    double max_s = 0;
    char **files = NULL;
    size_t n_files = 0;
    g_last = getenv("FUZZ_SMOKE_LAST");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) per_seed = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) seed0 = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) max_s = strtod(argv[++i], NULL);
        else {
            struct stat st;
            if (stat(argv[i], &st) != 0) {
                fprintf(stderr, "fuzz_smoke: %s: no such file or directory\n", argv[i]);
                return 2;
            }
            size_t first = n_files;
            if (S_ISDIR(st.st_mode)) {
                DIR *d = opendir(argv[i]);
                struct dirent *e;
                while (d && (e = readdir(d)) != NULL) {
                    if (e->d_name[0] == '.') continue;
                    files = realloc(files, (n_files + 1) * sizeof *files);
                    size_t len = strlen(argv[i]) + strlen(e->d_name) + 2;
                    files[n_files] = malloc(len);
                    snprintf(files[n_files++], len, "%s/%s", argv[i], e->d_name);
                }
                if (d) closedir(d);
            } else {
                files = realloc(files, (n_files + 1) * sizeof *files);
                files[n_files++] = strdup(argv[i]);
            }
            qsort(files + first, n_files - first, sizeof *files, cmp_str); /* readdir's order is not fixed */
        }
    }
    if (n_files == 0) {
        fprintf(stderr, "usage: %s [-n MUTATIONS_PER_SEED] [-s SEED] [-t MAX_SECONDS] SEED_FILE_OR_DIR...\n",
                argv[0]);
        return 2;
    }
    const double t0 = now_s();
    long n_runs = 0;
    bytes seed = {0}, m = {0};
    for (size_t f = 0; f < n_files; f++) {
        if (!read_file(files[f], &seed)) {
            fprintf(stderr, "fuzz_smoke: cannot read %s\n", files[f]);
            return 2;
        }
        run(&seed);
        n_runs++;
        rng r = {seed0 * 0x2545f4914f6cdd1dull + f};
        for (long k = 0; k < per_seed; k++) {
            if (max_s > 0 && now_s() - t0 > max_s) break;
            reserve(&m, seed.n + 1);
            memcpy(m.p, seed.p, seed.n);
            m.n = seed.n;
            for (size_t steps = 1 + below(&r, 3); steps > 0; steps--) mutate_once(&r, &m, &seed);
            run(&m);
            n_runs++;
        }
        free(files[f]);
    }
    printf("fuzz_smoke %s: %ld inputs from %zu seeds in %.1f s, no crash\n", argv[0], n_runs, n_files, now_s() - t0);
    free(files);
    free(seed.p);
    free(m.p);
    return 0;
}
