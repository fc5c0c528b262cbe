/* ops_mul_mat_id.c - tp_mul_mat_id: the mixture-of-experts matmul.
 *
 * experts [K, M, E], x [K, n_x, T] (n_x = 1 or n_used), ids I32 [n_used, T] -> [M, n_used, T].
 * The kernel runs in three phases on all threads:
 *   1. thread 0 groups the (token, slot) pairs by expert (a counting sort; out-of-range ids are
 *      reported and their columns zero-filled); barrier;
 *   2. the activations of every routed pair are gathered in expert order into the scratch area:
 *      F32 rows, or 8-bit blocks (tp_block_q8a) when the weights are quantised (as tp_mul_mat does);
 *      barrier;
 *   3. work units of MMID_ROW_CHUNK weight rows of one expert: each unit reads its rows once and
 *      takes the dot products with all the tokens routed to that expert (the SIMD row-dot routines
 *      of tp_matmul.h, or a portable loop).
 * So each selected expert's weights are read once per computation, whatever the token count. */
#include "tp_kernels.h"
#include "tp_matmul.h"

#define MMID_ROW_CHUNK 64 /* = 2 TP_QG_ROWS panels of the int8 GEMM */
#define MMID_TOK_CHUNK 64 /* tokens per quantised SIMD call (per-thread scratch of 64 x 64 floats) */
#define MMID_QGEMM_MIN 4  /* tokens of one expert from which the int8 GEMM (packed panels) is used */

typedef struct {
    bool quant;
    int64_t K, M, E, n_used, n_x, T, n_pairs;
    size_t act_row;      /* bytes of one gathered activation */
    size_t off_counts;   /* int64 [E + 1] offsets of each expert's pairs */
    size_t off_pairs;    /* int32 [n_pairs] pair index (t * n_used + s), grouped by expert */
    size_t off_units;    /* int64 [E + 1] first work unit of each expert */
    size_t off_act;      /* [n_pairs] activations in grouped order */
    size_t off_xs;       /* quant: float [n_pairs][K/32] d·Σq per activation block (int8 GEMM) */
    size_t thread_off;   /* per-thread scratch (K floats) */
    size_t thread_bytes;
} mmid_plan;

static size_t align64(size_t x) { return (x + 63) & ~(size_t)63; }

static void mmid_make_plan(const tp_tensor *dst, mmid_plan *pl) {
    const tp_tensor *w = dst->src[0], *x = dst->src[1], *ids = dst->src[2];
    memset(pl, 0, sizeof *pl);
    pl->quant = tp_is_quantized(w->type);
    pl->K = w->ne[0];
    pl->M = w->ne[1];
    pl->E = w->ne[2];
    pl->n_used = ids->ne[0];
    pl->T = ids->ne[1];
    pl->n_x = x->ne[1];
    pl->n_pairs = pl->n_used * pl->T;
    pl->act_row = pl->quant ? (size_t)(pl->K / TP_QK) * sizeof(tp_block_q8a) : (size_t)pl->K * sizeof(float);
    size_t off = 0;
    pl->off_counts = off;
    off = align64(off + (size_t)(pl->E + 1) * sizeof(int64_t));
    pl->off_pairs = off;
    off = align64(off + (size_t)pl->n_pairs * sizeof(int32_t));
    pl->off_units = off;
    off = align64(off + (size_t)(pl->E + 1) * sizeof(int64_t));
    pl->off_act = off;
    off = align64(off + (size_t)pl->n_pairs * pl->act_row);
    pl->off_xs = off;
    if (pl->quant) off = align64(off + (size_t)pl->n_pairs * (size_t)(pl->K / TP_QK) * sizeof(float));
    pl->thread_off = off;
    size_t tb = align64((size_t)TP_MAX(pl->K, MMID_TOK_CHUNK * MMID_ROW_CHUNK) * sizeof(float));
    if (pl->quant) tb += 2 * tp_qgemm_panel_bytes(pl->K) + tp_qgemm_pack_tmp_bytes(pl->K);
    pl->thread_bytes = align64(tb);
}

size_t tp_work_size_mul_mat_id(const tp_tensor *dst, int nth) {
    mmid_plan pl;
    mmid_make_plan(dst, &pl);
    return pl.thread_off + (size_t)nth * pl.thread_bytes + 64;
}

tp_tensor *tp_mul_mat_id(tp_context *ctx, tp_tensor *experts, tp_tensor *x, tp_tensor *ids) {
    if (!TP_CHECK_INPUTS(ctx, "tp_mul_mat_id", experts, x, ids)) return NULL;
    char sa[96], sb[96], sc[96];
    tp_type wt = experts->type;
    if (!(wt == TP_TYPE_F32 || wt == TP_TYPE_F16 || wt == TP_TYPE_BF16 || tp_is_quantized(wt))) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE, "tp_mul_mat_id: experts must be F32/F16/BF16/quantised (got %s)",
                         tp_type_name(wt));
        return NULL;
    }
    if (x->type != TP_TYPE_F32) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE, "tp_mul_mat_id: x must be F32 (got %s)", tp_type_name(x->type));
        return NULL;
    }
    if (ids->type != TP_TYPE_I32) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE, "tp_mul_mat_id: ids must be I32 (got %s)", tp_type_name(ids->type));
        return NULL;
    }
    const int64_t n_used = ids->ne[0], T = ids->ne[1];
    if (experts->ne[3] != 1 || x->ne[0] != experts->ne[0] || x->ne[2] != T || x->ne[3] != 1 ||
        (x->ne[1] != 1 && x->ne[1] != n_used) || ids->ne[2] != 1 || ids->ne[3] != 1) {
        tp_ctx_set_error(ctx, TP_ERR_SHAPE,
                         "tp_mul_mat_id: experts %s, x %s, ids %s: need experts [K, M, E], x [K, 1 or n_used, T], "
                         "ids [n_used, T]",
                         tp_shape_str(experts, sa, sizeof sa), tp_shape_str(x, sb, sizeof sb),
                         tp_shape_str(ids, sc, sizeof sc));
        return NULL;
    }
    if (tp_is_quantized(wt) && !tp_rows_contiguous(experts)) {
        tp_ctx_set_error(ctx, TP_ERR_UNSUPPORTED, "tp_mul_mat_id: quantised experts %s must have contiguous rows",
                         tp_shape_str(experts, sa, sizeof sa));
        return NULL;
    }
    int64_t ne[4] = {experts->ne[1], n_used, T, 1};
    return tp_new_op_tensor(ctx, TP_TYPE_F32, 3, ne, TP_OP_MUL_MAT_ID, experts, x, ids);
}

static float dot_f32(const float *a, const float *b, int64_t k) {
    float s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= k; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
    float t = 0.0f;
    for (; i < k; i++) t += a[i] * b[i];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7])) + t;
}

void tp_kernel_mul_mat_id(const tp_compute_params *p, tp_tensor *dst) {
    mmid_plan pl;
    mmid_make_plan(dst, &pl);
    const tp_tensor *w = dst->src[0], *x = dst->src[1], *ids = dst->src[2];
    char *ws = (char *)p->wdata;
    int64_t *offs = (int64_t *)(ws + pl.off_counts);
    int32_t *pairs = (int32_t *)(ws + pl.off_pairs);
    int64_t *units = (int64_t *)(ws + pl.off_units);
    char *act = ws + pl.off_act;
    float *tmp = (float *)(ws + pl.thread_off + (size_t)p->ith * pl.thread_bytes);
    const int64_t K = pl.K, M = pl.M, E = pl.E, n_used = pl.n_used;
    const int64_t chunks = (M + MMID_ROW_CHUNK - 1) / MMID_ROW_CHUNK;

    /* phase 1: group pairs by expert */
    if (p->ith == 0) {
        for (int64_t e = 0; e <= E; e++) offs[e] = 0;
        for (int64_t t = 0; t < pl.T; t++)
            for (int64_t s = 0; s < n_used; s++) {
                int32_t e = *(const int32_t *)((const char *)ids->data + (size_t)s * ids->nb[0] +
                                               (size_t)t * ids->nb[1]);
                if (e < 0 || e >= E) {
                    tp_report_bad_data(p);
                    memset((float *)dst->data + (size_t)(t * n_used + s) * (size_t)M, 0, (size_t)M * sizeof(float));
                    continue;
                }
                offs[e + 1]++;
            }
        for (int64_t e = 0; e < E; e++) offs[e + 1] += offs[e];
        /* fill (offs[e] is advanced, then shifted back) */
        for (int64_t t = 0; t < pl.T; t++)
            for (int64_t s = 0; s < n_used; s++) {
                int32_t e = *(const int32_t *)((const char *)ids->data + (size_t)s * ids->nb[0] +
                                               (size_t)t * ids->nb[1]);
                if (e < 0 || e >= E) continue;
                pairs[offs[e]++] = (int32_t)(t * n_used + s);
            }
        for (int64_t e = E; e > 0; e--) offs[e] = offs[e - 1];
        offs[0] = 0;
        units[0] = 0;
        for (int64_t e = 0; e < E; e++) units[e + 1] = units[e] + (offs[e + 1] > offs[e] ? chunks : 0);
    }
    tp_barrier(p->pool);

    /* phase 2: gather activations in grouped order */
    const int64_t n_routed = offs[E];
    int64_t u0, u1;
    tp_split_range(n_routed, p->ith, p->nth, &u0, &u1);
    for (int64_t i = u0; i < u1; i++) {
        int64_t pr = pairs[i], t = pr / n_used, s = pr % n_used;
        const char *row = (const char *)x->data + (size_t)(s % pl.n_x) * x->nb[1] + (size_t)t * x->nb[2];
        const float *src = (const float *)row;
        if (x->nb[0] != sizeof(float)) {
            for (int64_t k = 0; k < K; k++) tmp[k] = *(const float *)(row + (size_t)k * x->nb[0]);
            src = tmp;
        }
        char *d = act + (size_t)i * pl.act_row;
        if (pl.quant) {
            tp_block_q8a *qd = (tp_block_q8a *)d;
            if (p->path == TP_CPU_AVX512) tp_quantize_row_q8a_avx512(src, qd, K);
            else if (p->path == TP_CPU_AVX2) tp_quantize_row_q8a_avx2(src, qd, K);
            else tp_quantize_row_q8a(src, qd, K);
            float *xs = (float *)(ws + pl.off_xs) + i * (K / TP_QK);
            for (int64_t j = 0; j < K / TP_QK; j++) xs[j] = qd[j].d * (float)(qd[j].s[0] + qd[j].s[1]);
        } else {
            memcpy(d, src, (size_t)K * sizeof(float));
        }
    }
    tp_barrier(p->pool);

    /* phase 3: per expert, chunks of rows against all its tokens */
    const bool vnni = p->path == TP_CPU_AVX512 && tp_cpu_has_avx512_vnni();
    const bool qgemm = pl.quant && vnni && tp_qgemm_type_ok(w->type);
    const bool simd_rows = !pl.quant && p->path != TP_CPU_SCALAR && tp_rows_contiguous(w);
    tp_split_range(units[E], p->ith, p->nth, &u0, &u1);
    int64_t e = 0;
    for (int64_t u = u0; u < u1; u++) {
        while (units[e + 1] <= u) e++;
        const int64_t m0 = (u - units[e]) * MMID_ROW_CHUNK;
        const int64_t nrows = TP_MIN(MMID_ROW_CHUNK, M - m0);
        const char *arow = (const char *)w->data + (size_t)m0 * w->nb[1] + (size_t)e * w->nb[2];
        if (!pl.quant && !simd_rows) {
            /* portable: each weight row converted once, then dotted with every routed token */
            for (int64_t r = 0; r < nrows; r++) {
                const char *row = arow + (size_t)r * w->nb[1];
                const float *wr = tmp;
                if (w->type == TP_TYPE_F32 && w->nb[0] == sizeof(float)) wr = (const float *)row;
                else if (tp_rows_contiguous(w)) tp_row_to_f32(w->type, row, tmp, K);
                else
                    for (int64_t k = 0; k < K; k++) tp_row_to_f32(w->type, row + (size_t)k * w->nb[0], &tmp[k], 1);
                for (int64_t i = offs[e]; i < offs[e + 1]; i++)
                    ((float *)dst->data)[(size_t)pairs[i] * (size_t)M + (size_t)(m0 + r)] =
                        dot_f32(wr, (const float *)(act + (size_t)i * pl.act_row), K);
            }
            continue;
        }
        if (qgemm && offs[e + 1] - offs[e] >= MMID_QGEMM_MIN) {
            /* many tokens: the rows packed once into panels, then the int8 GEMM writes every token's row */
            const size_t pbytes = tp_qgemm_panel_bytes(K);
            uint8_t *panels = (uint8_t *)(tmp + MMID_TOK_CHUNK * MMID_ROW_CHUNK);
            for (int64_t r = 0; r < nrows; r += TP_QG_ROWS)
                tp_qgemm_pack_avx512(w->type, arow + (size_t)r * w->nb[1], w->nb[1], TP_MIN(TP_QG_ROWS, nrows - r), K,
                                     panels + (size_t)(r / TP_QG_ROWS) * pbytes, panels + 2 * pbytes);
            tp_qgemm_avx512(w->type, panels, nrows, K, (const tp_block_q8a *)(act + (size_t)offs[e] * pl.act_row),
                            (const float *)(ws + pl.off_xs) + offs[e] * (K / TP_QK), offs[e + 1] - offs[e],
                            (float *)dst->data + m0, M, pairs + offs[e], NULL, 0);
            continue;
        }
        if (pl.quant && p->path == TP_CPU_AVX512) {
            /* several tokens per call (weight rows reused in registers), then scattered */
            const int64_t nblk = K / TP_QK;
            for (int64_t i0 = offs[e]; i0 < offs[e + 1]; i0 += MMID_TOK_CHUNK) {
                const int64_t nt = TP_MIN(MMID_TOK_CHUNK, offs[e + 1] - i0);
                tp_mm_qdot_avx512(w->type, arow, w->nb[1], nrows, (const tp_block_q8a *)(act + (size_t)i0 * pl.act_row),
                                  nblk, nt, K, tmp, MMID_ROW_CHUNK, vnni);
                for (int64_t j = 0; j < nt; j++)
                    memcpy((float *)dst->data + (size_t)pairs[i0 + j] * (size_t)M + m0, tmp + j * MMID_ROW_CHUNK,
                           (size_t)nrows * sizeof(float));
            }
            continue;
        }
        for (int64_t i = offs[e]; i < offs[e + 1]; i++) {
            const char *xa = act + (size_t)i * pl.act_row;
            float *out = (float *)dst->data + (size_t)pairs[i] * (size_t)M + m0;
            if (pl.quant) {
                if (p->path == TP_CPU_AVX2)
                    tp_mm_qdot_avx2(w->type, arow, w->nb[1], nrows, (const tp_block_q8a *)xa, K, out);
                else
                    for (int64_t r = 0; r < nrows; r++)
                        out[r] = tp_vec_dot_q8a(w->type, arow + (size_t)r * w->nb[1], (const tp_block_q8a *)xa, K);
            } else if (p->path == TP_CPU_AVX512) {
                tp_mm_dot_rows_avx512(w->type, arow, w->nb[1], nrows, (const float *)xa, K, out);
            } else {
                tp_mm_dot_rows_avx2(w->type, arow, w->nb[1], nrows, (const float *)xa, K, out);
            }
        }
    }
}
