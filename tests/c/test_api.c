/* test_api.c - the public API used from C as another runtime would: misuse returns a status
 * with a message and never crashes; a small graph computes the right numbers. Built against
 * the ASan+UBSan library by `make test`. */
#include "tilepass.h"
#include "tp_check.h"

#include <math.h>
#include <stdio.h>
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

int main(void) {
    test_version();
    test_null_handles();
    test_misuse_in_context();
    test_small_graph();
    test_linear();
    printf("test_api: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail == 0 ? 0 : 1;
}
