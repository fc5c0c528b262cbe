/* test_api.c - the public API used from C as another runtime would: misuse returns a status
 * with a message and never crashes; a small graph computes the right numbers; the vision API (info, image
 * modes, pages of views, stages) on the tiny llama.cpp-written files of ../shared/fixtures (TP_FIXTURES
 * overrides the folder) when they are there. Built against the ASan+UBSan library by `make test`. */
#include "tilepass.h"
#include "tp_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static void test_version(void) {
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", TILEPASS_VERSION_MAJOR, TILEPASS_VERSION_MINOR,
             TILEPASS_VERSION_PATCH);
    CHECK(strcmp(tp_version(), want) == 0, "version string matches the macros");
    for (int s = 0; s <= TP_ERR_INTERNAL; s++)
        CHECK(strlen(tp_status_string((tp_status)s)) > 0, "every status has a message");
}

static void test_null_handles(void) {
    tp_error err;
    memset(&err, 0, sizeof err);
    CHECK(tp_context_create(NULL, NULL, &err) == TP_ERR_INVALID_ARGUMENT, "NULL out rejected");
    CHECK(strlen(err.message) > 0, "with a message");
    tp_threadpool_params tpp = tp_threadpool_default_params();
    tpp.n_threads = 0;
    tp_threadpool *pool = NULL;
    CHECK(tp_threadpool_create(&tpp, &pool, &err) == TP_ERR_INVALID_ARGUMENT && pool == NULL,
          "0 threads rejected");
    CHECK(strstr(err.message, "n_threads") != NULL, "message names n_threads");
    tp_context_free(NULL);
    tp_threadpool_free(NULL);
    tp_graph_free(NULL);
    CHECK(tp_add(NULL, NULL, NULL) == NULL, "op on NULL context");
    CHECK(tp_graph_compute(NULL, NULL) == TP_ERR_INVALID_ARGUMENT, "compute NULL graph");
    CHECK(tp_tensor_ne(NULL, 0) == 0, "accessor on NULL tensor");
}

static void test_misuse_in_context(void) {
    tp_context *ctx = NULL;
    CHECK(tp_context_create(NULL, &ctx, NULL) == TP_OK, "context");
    int64_t ne_a[2] = {3, 2}, ne_b[2] = {4, 2};
    tp_tensor *a = tp_new_tensor(ctx, TP_TYPE_F32, 2, ne_a);
    tp_tensor *b = tp_new_tensor(ctx, TP_TYPE_F32, 2, ne_b);
    CHECK(tp_new_tensor(ctx, 999, 2, ne_a) == NULL, "unknown type rejected");
    CHECK(tp_context_status(ctx) == TP_ERR_TYPE, "status is TP_ERR_TYPE");
    CHECK(strstr(tp_context_error(ctx), "999") != NULL, "message names the type");
    tp_context_clear_error(ctx);
    CHECK(tp_add(ctx, a, b) == NULL, "shape mismatch rejected");
    CHECK(tp_context_status(ctx) == TP_ERR_SHAPE, "status is TP_ERR_SHAPE");
    CHECK(tp_gelu(ctx, NULL) == NULL, "NULL input gives NULL");
    CHECK(tp_context_status(ctx) == TP_ERR_SHAPE, "the first error is kept");
    tp_context_clear_error(ctx);
    int64_t bad[2] = {3, -1};
    CHECK(tp_new_tensor(ctx, TP_TYPE_F32, 2, bad) == NULL, "negative size rejected");
    CHECK(tp_new_tensor(ctx, TP_TYPE_F32, 5, ne_a) == NULL, "5 dims rejected");
    int64_t q8[1] = {33};
    tp_context_clear_error(ctx);
    CHECK(tp_new_tensor(ctx, TP_TYPE_Q8_0, 1, q8) == NULL, "row not a multiple of the block");
    tp_context_clear_error(ctx);
    int64_t resh[2] = {5, 2};
    CHECK(tp_reshape(ctx, a, 2, resh) == NULL, "reshape to another element count");
    tp_context_clear_error(ctx);
    CHECK(tp_permute(ctx, a, 0, 0, 1, 2) == NULL, "permute that is no permutation");
    tp_context_clear_error(ctx);
    size_t nb[2] = {4, 12};
    int64_t big[2] = {3, 3};
    CHECK(tp_view(ctx, a, 2, big, nb, 0) == NULL, "view past the end of its source");
    tp_context_clear_error(ctx);
    tp_graph *g = tp_graph_new(ctx);
    CHECK(tp_graph_add_output(g, NULL) != TP_OK, "NULL output rejected");
    tp_context_clear_error(ctx);
    CHECK(tp_graph_plan(g) == TP_ERR_INVALID_ARGUMENT, "empty graph rejected");
    tp_context_clear_error(ctx);

    tp_context *other = NULL;
    tp_context_create(NULL, &other, NULL);
    tp_tensor *c = tp_new_tensor(other, TP_TYPE_F32, 2, ne_a);
    CHECK(tp_add(ctx, a, c) == NULL, "tensors of two contexts rejected");
    CHECK(strstr(tp_context_error(ctx), "another context") != NULL, "message says so");
    tp_context_free(other);
    tp_context_free(ctx); /* frees g too */
}

/* a fresh context and a pool of 2 threads */
static void context_and_pool(tp_context **ctx, tp_threadpool **pool) {
    tp_threadpool_params tpp = tp_threadpool_default_params();
    tpp.n_threads = 2;
    CHECK(tp_context_create(NULL, ctx, NULL) == TP_OK, "context");
    CHECK(tp_threadpool_create(&tpp, pool, NULL) == TP_OK, "pool of 2");
}

static void test_small_graph(void) {
    tp_context *ctx = NULL;
    tp_threadpool *pool = NULL;
    context_and_pool(&ctx, &pool);
    int64_t ne[2] = {5, 3};
    tp_tensor *x = tp_new_tensor(ctx, TP_TYPE_F32, 2, ne);
    float v[15];
    for (int i = 0; i < 15; i++) v[i] = (float)i - 7.0f;
    CHECK(tp_tensor_set_f32(x, v, 15) == TP_OK, "set data");
    CHECK(tp_tensor_set_f32(x, v, 14) == TP_ERR_SHAPE, "wrong count rejected");
    tp_context_clear_error(ctx);
    tp_tensor *y = tp_scale(ctx, tp_add(ctx, x, x), 0.25f);
    tp_tensor *z = tp_cont(ctx, tp_transpose(ctx, y));
    tp_graph *g = tp_graph_new(ctx);
    CHECK(tp_graph_add_output(g, z) == TP_OK, "output");
    CHECK(tp_graph_compute(g, pool) == TP_OK, "compute");
    float out[15];
    CHECK(tp_tensor_get_f32(z, out, 15) == TP_OK, "read");
    int bad = 0;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 5; c++)
            if (fabsf(out[c * 3 + r] - 0.5f * v[r * 5 + c]) > 1e-6f) bad++;
    CHECK(bad == 0, "transpose(scale(x + x)) is right");
    /* computing twice gives the same result (buffers reused, no stale state) */
    CHECK(tp_graph_compute(g, pool) == TP_OK, "compute again");
    tp_tensor_get_f32(z, out, 15);
    CHECK(fabsf(out[1] - 0.5f * v[5]) < 1e-6f, "same result");
    tp_threadpool_free(pool);
    tp_context_free(ctx);
}

/* tp_linear from C: gelu(x·wᵀ + b) against the formula with libm's erf */
static void test_linear(void) {
    tp_context *ctx = NULL;
    tp_threadpool *pool = NULL;
    context_and_pool(&ctx, &pool);
    enum { K = 4, M = 3, N = 2 };
    float w[M * K], x[N * K], b[M] = {0.5f, -1.0f, 0.25f};
    for (int i = 0; i < M * K; i++) w[i] = 0.1f * (float)(i % 7) - 0.3f;
    for (int i = 0; i < N * K; i++) x[i] = 0.2f * (float)i - 0.5f;
    int64_t ne_w[2] = {K, M}, ne_x[2] = {K, N}, ne_b[1] = {M};
    tp_tensor *tw = tp_new_tensor(ctx, TP_TYPE_F32, 2, ne_w), *tx = tp_new_tensor(ctx, TP_TYPE_F32, 2, ne_x);
    tp_tensor *tb = tp_new_tensor(ctx, TP_TYPE_F32, 1, ne_b);
    tp_tensor_set_f32(tw, w, M * K);
    tp_tensor_set_f32(tx, x, N * K);
    tp_tensor_set_f32(tb, b, M);
    CHECK(tp_linear(NULL, tw, tx, tb, TP_ACT_GELU) == NULL, "NULL context");
    CHECK(tp_linear(ctx, tw, tx, tw, TP_ACT_GELU) == NULL && tp_context_status(ctx) == TP_ERR_SHAPE,
          "a bias of the wrong shape is refused");
    tp_context_clear_error(ctx);
    tp_tensor *y = tp_linear(ctx, tw, tx, tb, TP_ACT_GELU);
    tp_graph *g = tp_graph_new(ctx);
    CHECK(y != NULL && tp_graph_add_output(g, y) == TP_OK && tp_graph_compute(g, pool) == TP_OK, "compute");
    float out[N * M];
    CHECK(tp_tensor_get_f32(y, out, N * M) == TP_OK, "read");
    int bad = 0;
    for (int n = 0; n < N; n++)
        for (int m = 0; m < M; m++) {
            double h = b[m];
            for (int k = 0; k < K; k++) h += (double)x[n * K + k] * w[m * K + k];
            double want = 0.5 * h * (1.0 + erf(h / sqrt(2.0)));
            if (fabs(out[n * M + m] - want) > 1e-5 * (1.0 + fabs(want))) bad++;
        }
    CHECK(bad == 0, "gelu(x·wᵀ + b) is right");
    tp_threadpool_free(pool);
    tp_context_free(ctx);
}

/* ---- the vision API ---- */

static void test_vision_null_handles(void) {
    tp_error err;
    memset(&err, 0, sizeof err);
    tp_vision_model *m = (tp_vision_model *)&err; /* must be reset to NULL on failure */
    CHECK(tp_vision_load("/nonexistent/mmproj.gguf", NULL, &m, &err) != TP_OK && m == NULL, "missing file");
    CHECK(strstr(err.message, "nonexistent") != NULL, "message names the file");
    CHECK(tp_vision_load(NULL, NULL, &m, &err) == TP_ERR_INVALID_ARGUMENT, "NULL path");
    tp_vision_info info;
    tp_preprocess_params p;
    CHECK(tp_vision_get_info(NULL, &info) == TP_ERR_INVALID_ARGUMENT, "info of a NULL model");
    CHECK(tp_vision_mode_name(NULL, 0) == NULL, "mode name of a NULL model");
    CHECK(tp_vision_preprocess_params(NULL, NULL, &p) == TP_ERR_INVALID_ARGUMENT, "params of a NULL model");
    CHECK(tp_vision_page_n_tokens(NULL, NULL) == -1, "tokens of a NULL page");
    CHECK(tp_vision_get_stage(NULL, "proj", 0, NULL, 0, NULL, &err) == TP_ERR_INVALID_ARGUMENT, "stage, NULL model");
    CHECK(tp_vision_encode(NULL, NULL, 1, NULL, &err) == TP_ERR_INVALID_ARGUMENT, "encode, NULL model");
    CHECK(tp_vision_last_compute_bytes(NULL) == 0, "compute bytes of a NULL model");
    size_t plan = 1;
    CHECK(tp_vision_plan_bytes(NULL, NULL, 1, &plan, &err) == TP_ERR_INVALID_ARGUMENT && plan == 0,
          "plan bytes, NULL model");
    tp_vision_trim(NULL);
    tp_vision_free(NULL);
}

/* One mode a family must have: its name and view parameters, and the tokens of a 900 x 1300 page in it. */
typedef struct want_mode {
    const char *name;
    int fit;
    int32_t view_size, tile_size;
    int64_t page_tokens;
} want_mode;

typedef struct want_family {
    const char *dir, *family, *projector_type, *second_stage; /* second_stage: after "sam" */
    int32_t n_modes, min_tiles, max_tiles;
    want_mode modes[6];
} want_family;

static const want_family FAMILIES[] = {
    /* DeepSeek-OCR v1: gundam 2x3 tiles of 640 (10 x 10 tokens + a newline per row) + the 1024 view
     * (16 x 17) + the separator = 903 (fixture README); auto makes gundam's views */
    {"llamacpp-tiny-v1", "deepseek_ocr", "deepseekocr", "clip", 6, 2, 9,
     {{"gundam", TP_FIT_PAD, 1024, 640, 903}, {"tiny", TP_FIT_STRETCH, 512, 0, 73},
      {"small", TP_FIT_STRETCH, 640, 0, 111}, {"base", TP_FIT_PAD, 1024, 0, 273},
      {"large", TP_FIT_PAD, 1280, 0, 421}, {"auto", TP_FIT_PAD, 1024, 640, 903}}},
    /* DeepSeek-OCR-2: 6 tiles of 768 (144 queries) + 1024 view (256) + separator = 1121; base: one 768
     * view, 145 */
    {"llamacpp-tiny-ocr2", "deepseek_ocr2", "deepseekocr2", "encoder", 2, 2, 6,
     {{"gundam", TP_FIT_PAD_FLOOR, 1024, 768, 1121}, {"base", TP_FIT_PAD_FLOOR, 768, 0, 145}}},
};

static void test_vision_family(const char *fixtures, const want_family *f) {
    char path[1024], what[256];
    snprintf(path, sizeof path, "%s/%s/mmproj-f32.gguf", fixtures, f->dir);
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        printf("test_api: %s missing, vision checks of %s skipped\n", path, f->family);
        return;
    }
    fclose(probe);
    tp_error err;
    memset(&err, 0, sizeof err);
    tp_vision_params vp = tp_vision_default_params();
    vp.n_threads = 2;
    vp.keep_stages = true;
    tp_vision_model *m = NULL;
    CHECK(tp_vision_load(path, &vp, &m, &err) == TP_OK && m != NULL, "vision model loaded");
    if (!m) return;
    tp_vision_info info;
    CHECK(tp_vision_get_info(m, &info) == TP_OK, "info");
    CHECK(strcmp(info.family, f->family) == 0 && strcmp(info.projector_type, f->projector_type) == 0, "family");
    CHECK(info.n_embd == 32 && info.precision == TP_PRECISION_F32, "width 32, F32");
    CHECK(info.no_repeat_ngram > 0 && info.no_repeat_window > 0, "no-repeat rule");
    CHECK(info.n_modes == f->n_modes, "mode count");
    CHECK(tp_vision_mode_name(m, -1) == NULL && tp_vision_mode_name(m, info.n_modes) == NULL, "mode out of range");
    tp_preprocess_params def, p;
    CHECK(tp_vision_preprocess_params(m, NULL, &def) == TP_OK, "default mode's params");
    CHECK(tp_vision_preprocess_params(m, "no-such-mode", &p) == TP_ERR_INVALID_ARGUMENT, "unknown mode refused");
    CHECK(tp_vision_preprocess_params(m, "gundam", NULL) == TP_ERR_INVALID_ARGUMENT, "NULL out refused");

    /* a 900 x 1300 page (the fixtures' page.png size), pixels of no importance here */
    enum { W = 900, H = 1300 };
    uint8_t *rgb = malloc((size_t)W * H * 3);
    CHECK(rgb != NULL, "image");
    if (!rgb) {
        tp_vision_free(m);
        return;
    }
    for (size_t i = 0; i < (size_t)W * H * 3; i++) rgb[i] = (uint8_t)(i * 7 % 251);
    tp_rgb_image img = {rgb, W, H, 0};
    for (int32_t i = 0; i < f->n_modes; i++) {
        const want_mode *w = &f->modes[i];
        const char *name = tp_vision_mode_name(m, i);
        snprintf(what, sizeof what, "%s mode %d is %s", f->family, (int)i, w->name);
        CHECK(name && strcmp(name, w->name) == 0, what);
        CHECK(tp_vision_preprocess_params(m, w->name, &p) == TP_OK, "mode's params");
        snprintf(what, sizeof what, "%s %s: fit, view, tiles, limits, pad colour, mean/std", f->family, w->name);
        CHECK(p.fit == w->fit && p.view_size == w->view_size && p.tile_size == w->tile_size &&
                  p.min_tiles == f->min_tiles && p.max_tiles == f->max_tiles && p.pad_color == 127 &&
                  p.image_mean[0] == 0.5f && p.image_std[2] == 0.5f,
              what);
        if (i == 0) CHECK(memcmp(&p, &def, sizeof p) == 0, "NULL names mode 0");
        tp_page *page = NULL;
        CHECK(tp_page_from_rgb(&img, &p, &page, &err) == TP_OK, "page");
        if (!page) continue;
        const tp_page_views *v = tp_page_get_views(page);
        snprintf(what, sizeof what, "%s %s: %lld tokens, want %lld", f->family, w->name,
                 (long long)tp_vision_page_n_tokens(m, v), (long long)w->page_tokens);
        CHECK(tp_vision_page_n_tokens(m, v) == w->page_tokens, what);
        if (w->tile_size > 0)
            CHECK(v->n_views == 7 && v->grid_cols == 2 && v->grid_rows == 3, "2 x 3 tiles, then the view");
        else
            CHECK(v->n_views == 1 && v->grid_cols == 0 && v->grid_rows == 0, "one view");
        tp_page_free(page);
    }

    /* pages this model cannot encode */
    static float px[100 * 100 * 3];
    tp_image_view odd = {px, 100, 100};
    tp_page_views bad = {&odd, 1, 0, 0};
    CHECK(tp_vision_page_n_tokens(m, &bad) == -1, "a 100 px view is refused");
    float *tok = NULL;
    CHECK(tp_vision_encode(m, &bad, 1, &tok, &err) == TP_ERR_INVALID_ARGUMENT, "encode refuses it");
    size_t bad_plan = 1;
    CHECK(tp_vision_plan_bytes(m, &bad, 1, &bad_plan, &err) == TP_ERR_INVALID_ARGUMENT && bad_plan == 0,
          "plan bytes refuses it too");

    /* encode the page of the first one-view mode (v1: tiny, OCR-2: base) and read its stages */
    const want_mode *small = &f->modes[0];
    for (int32_t i = f->n_modes - 1; i >= 0; i--)
        if (f->modes[i].tile_size == 0) small = &f->modes[i];
    tp_preprocess_params sp;
    tp_vision_preprocess_params(m, small->name, &sp);
    tp_page *page = NULL;
    CHECK(tp_page_from_rgb(&img, &sp, &page, &err) == TP_OK, "one-view page");
    if (!page) {
        free(rgb);
        tp_vision_free(m);
        return;
    }
    const tp_page_views *v = tp_page_get_views(page);
    tp_image_view two[2] = {v->views[0], v->views[0]};
    tp_page_views no_grid = {two, 2, 0, 0};
    CHECK(tp_vision_page_n_tokens(m, &no_grid) == -1, "two views need a grid");
    int64_t n_tok = tp_vision_page_n_tokens(m, v);
    CHECK(tp_vision_get_stage(m, "proj", 0, NULL, 0, NULL, &err) == TP_ERR_INVALID_ARGUMENT,
          "no stages before an encode");
    float *out = malloc((size_t)(n_tok > 0 ? n_tok : 1) * 32 * sizeof(float));
    size_t planned = 0;
    CHECK(tp_vision_plan_bytes(m, v, 1, &planned, &err) == TP_OK && planned > 0, "plan bytes");
    CHECK(out && tp_vision_encode(m, v, 1, &out, &err) == TP_OK, "encode");
    CHECK(tp_vision_last_compute_bytes(m) == planned, "the encode needs what the plan said");
    int bad_vals = 0;
    for (int64_t i = 0; out && i < n_tok * 32; i++) bad_vals += !isfinite(out[i]);
    CHECK(bad_vals == 0, "finite tokens");
    /* the view's own tokens ("proj") and how many of them open the page: OCR-2's page is [view ; separator];
     * v1 lays q x q tokens (q = side / 64: SAM patch 16, two stride-2 convs) a row at a time, each row
     * followed by a newline */
    const bool v1 = strcmp(f->family, "deepseek_ocr") == 0;
    const int64_t q = small->view_size / 64, view_tokens = v1 ? q * q : n_tok - 1, lead = v1 ? q : view_tokens;
    int64_t n = 0;
    CHECK(tp_vision_get_stage(m, "proj", 0, NULL, 0, &n, &err) == TP_OK && n == view_tokens * 32, "proj size");
    float *proj = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    CHECK(proj && tp_vision_get_stage(m, "proj", 0, proj, n - 1, &n, &err) == TP_ERR_INVALID_ARGUMENT,
          "a short buffer is refused");
    CHECK(proj && tp_vision_get_stage(m, "proj", 0, proj, n, &n, &err) == TP_OK, "proj read");
    CHECK(proj && out && memcmp(proj, out, (size_t)lead * 32 * sizeof(float)) == 0,
          "the page opens with the view's projected tokens");
    CHECK(tp_vision_get_stage(m, "sam", 0, NULL, 0, &n, &err) == TP_OK && n > 0, "sam stage");
    CHECK(tp_vision_get_stage(m, f->second_stage, 0, NULL, 0, &n, &err) == TP_OK && n > 0, "the family's stage");
    CHECK(tp_vision_get_stage(m, "no-such-stage", 0, NULL, 0, &n, &err) == TP_ERR_INVALID_ARGUMENT &&
              strstr(err.message, "no-such-stage") != NULL,
          "unknown stage named");
    CHECK(tp_vision_get_stage(m, "proj", 1, NULL, 0, &n, &err) == TP_ERR_INVALID_ARGUMENT, "view out of range");
    CHECK(tp_vision_last_compute_bytes(m) > 0, "compute bytes");
    tp_vision_trim(m);
    free(proj);
    free(out);
    tp_page_free(page);
    free(rgb);
    tp_vision_free(m);
}

int main(void) {
    test_version();
    test_null_handles();
    test_misuse_in_context();
    test_small_graph();
    test_linear();
    test_vision_null_handles();
    const char *fixtures = getenv("TP_FIXTURES") ? getenv("TP_FIXTURES") : "../shared/fixtures";
    for (size_t i = 0; i < sizeof FAMILIES / sizeof FAMILIES[0]; i++) test_vision_family(fixtures, &FAMILIES[i]);
    printf("test_api: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail == 0 ? 0 : 1;
}
