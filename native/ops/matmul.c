/* ops_matmul.c - tp_mul_mat and tp_linear: the constructors, scratch planning and the portable driver.
 *
 * One op runs in two phases on all threads:
 *   1. the activations b (any strides) are converted once into the scratch area: F32 rows, F32 or
 *      BF16 panels of TP_MM_NR tokens packed for the GEMM micro-kernels, BF16 rows for the AMX
 *      GEMM, or 8-bit blocks (tp_block_q8a) for quantised weights; then a barrier (a single token
 *      on the dot-product paths instead is converted by every thread into its own scratch: a
 *      microsecond of duplicated work, one barrier less per decode matmul);
 *   2. the multiply: a packed, cache-blocked GEMM (many tokens, F32/F16/BF16 weights, SIMD paths),
 *      the AMX tile GEMM (matmul_amx.c), or dot products of weight rows (decode / scalar path /
 *      quantised weights with integer dots).
 * Precision: BF16 weights on the AVX512-BF16 GEMM always round the activations to BF16 (as ggml does).
 * Under TP_PRECISION_BF16 with N >= MM_AMX_MIN_N, F32/F16 weights do too: on the AMX tile GEMM, else on
 * the AVX512-BF16 vdpbf16ps GEMM; without either (or with fewer tokens), the F32 paths run.
 * Threads own disjoint output tiles whose rows start on 16-float (64-byte) boundaries.
 * tp_linear is the same op with an epilogue (bias, then gelu / quick_gelu): the int8 GEMM and the packed
 * float GEMM apply it to each output tile once its last k-block is stored (still in L1); the dot-product
 * and AMX paths in one pass over their rows after a barrier. */
#include "tp_kernels.h"
#include "tp_matmul.h"

typedef enum { ACT_F32_ROWS, ACT_F32_PACKED, ACT_BF16_PACKED, ACT_BF16_AMX, ACT_Q8A } act_kind;

typedef struct {
    act_kind act;
    tp_cpu_path path;
    bool vnni;
    bool qgemm;                  /* ACT_Q8A on the VNNI int8 GEMM (packed weight panels) */
    size_t xs_off;               /* qgemm: offset in a batch of the d·Σq table [N][K/32] */
    int64_t qg_group;            /* qgemm: work units packed together, then run over the tokens chunk by chunk */
    int64_t qg_chunk;            /* qgemm: tokens per chunk (their activations stay in L2 across the group) */
    int64_t K, M, N, nbatch, Kp; /* Kp: K padded (even for BF16 pairs, a multiple of 32 for AMX) */
    int64_t Np;                  /* AMX: N padded to TP_AMX_NB */
    bool merged;                 /* weights shared by all batches: one GEMM over N·nbatch tokens (AMX, packed) */
    bool private_act;            /* one token (decode): every thread converts it into its own scratch, no barrier */
    int64_t npanels;             /* packed: token panels per batch */
    size_t batch_bytes;          /* activation bytes per batch (64-aligned) */
    size_t act_bytes;            /* all batches */
    size_t thread_bytes;         /* per-thread scratch (64-aligned) */
} mm_plan;

#define MM_ROW_CHUNK 64 /* weight rows per work unit on the dot-product paths */
#define MM_GEMM_MIN_N 8 /* fewer tokens than this: dot products (bandwidth-bound decode) */
#define MM_GEMM_MIN_M 16 /* fewer weight rows than this: dot products. SAM's windowed rel-pos products are
                          * 4,200 GEMMs of 14 × 14 × 64, where packing each costs more than the products */
#define MM_AMX_MIN_N 32 /* TP_PRECISION_BF16: BF16 products (AMX or vdpbf16ps) from this many tokens */
#define MM_QGEMM_MIN_N 6 /* quantised weights: the int8 GEMM from this many tokens */
#define MM_QGEMM_ROWS (2 * TP_QG_ROWS) /* weight rows per int8 GEMM work unit (packed per thread) */
#define MM_QGEMM_GROUP_BYTES (2u << 20) /* packed panels a thread keeps for one pass over the tokens */
#define MM_QGEMM_CHUNK_BYTES (256u << 10) /* activation blocks of one token chunk (L2-resident) */

static size_t align64(size_t x) { return (x + 63) & ~(size_t)63; }

enum { MM_ACT = 0 }; /* op_params: tp_linear's activation (0 = TP_ACT_NONE for tp_mul_mat); src[2]: its bias */

/* token rows and batches a GEMM runs over: with merged batches, all of them in one */
static inline int64_t mm_rows(const mm_plan *pl) { return pl->merged ? pl->N * pl->nbatch : pl->N; }
static inline int64_t mm_batches(const mm_plan *pl) { return pl->merged ? 1 : pl->nbatch; }

static void mm_make_plan(const tp_tensor *dst, tp_cpu_path path, int precision, bool amx_ok, mm_plan *pl) {
    const tp_tensor *a = dst->src[0], *b = dst->src[1];
    const bool bf16_prec = precision == TP_PRECISION_BF16 && path == TP_CPU_AVX512 && b->ne[1] >= MM_AMX_MIN_N &&
                           a->ne[1] >= MM_GEMM_MIN_M &&
                           (a->type == TP_TYPE_F32 || a->type == TP_TYPE_F16 || a->type == TP_TYPE_BF16);
    memset(pl, 0, sizeof *pl);
    pl->path = path;
    pl->vnni = path == TP_CPU_AVX512 && tp_cpu_has_avx512_vnni();
    pl->K = a->ne[0];
    pl->M = a->ne[1];
    pl->N = b->ne[1];
    pl->nbatch = b->ne[2] * b->ne[3];
    pl->Kp = pl->K;
    size_t per_batch, thread = 0;
    /* one weight matrix for every batch of b (SAM's windows): on the GEMM paths the batches are just more
     * token rows (dst is contiguous), so the weights are packed once, not once per batch */
    const bool one_weight = a->ne[2] * a->ne[3] == 1 && pl->nbatch > 1;
    if (tp_is_quantized(a->type)) {
        pl->act = ACT_Q8A;
        thread = (size_t)pl->K * sizeof(float); /* a gathered strided activation row */
        pl->qgemm = pl->vnni && pl->N >= MM_QGEMM_MIN_N && tp_qgemm_type_ok(a->type);
        pl->merged = pl->qgemm && one_weight; /* each panel packed once for all windows, not once per window */
        per_batch = (size_t)mm_rows(pl) * (size_t)(pl->K / TP_QK) * sizeof(tp_block_q8a);
        if (pl->qgemm) {
            pl->xs_off = align64(per_batch);
            per_batch = pl->xs_off + (size_t)mm_rows(pl) * (size_t)(pl->K / TP_QK) * sizeof(float);
            /* SAM's MLP over a gundam page's 13,696 tokens: streaming every token's activations once per
             * 64 weight rows from memory cost ~20 %; a group of units packed once, run over token chunks
             * that stay in L2, reads them once per group */
            const size_t unit = (size_t)(MM_QGEMM_ROWS / TP_QG_ROWS) * tp_qgemm_panel_bytes(pl->K);
            const int64_t units = (pl->M + MM_QGEMM_ROWS - 1) / MM_QGEMM_ROWS;
            pl->qg_group = TP_MAX(1, TP_MIN(units, (int64_t)(MM_QGEMM_GROUP_BYTES / unit)));
            const size_t row = (size_t)(pl->K / TP_QK) * (sizeof(tp_block_q8a) + sizeof(float));
            pl->qg_chunk = TP_MAX(16, (int64_t)(MM_QGEMM_CHUNK_BYTES / row) & ~(int64_t)3);
            thread = TP_MAX(thread, (size_t)pl->qg_group * unit + tp_qgemm_pack_tmp_bytes(pl->K));
        }
    } else if (bf16_prec && amx_ok && pl->N >= MM_AMX_MIN_N) {
        pl->act = ACT_BF16_AMX;
        pl->Kp = (pl->K + TP_AMX_KT - 1) / TP_AMX_KT * TP_AMX_KT;
        pl->merged = one_weight;
        pl->Np = (mm_rows(pl) + TP_AMX_NB - 1) / TP_AMX_NB * TP_AMX_NB;
        per_batch = (size_t)pl->Np * (size_t)pl->Kp * sizeof(uint16_t);
        thread = tp_amx_thread_bytes(pl->K, pl->Kp);
    } else if (path != TP_CPU_SCALAR && pl->N >= MM_GEMM_MIN_N && pl->M >= MM_GEMM_MIN_M) {
        pl->merged = one_weight;
        pl->npanels = (mm_rows(pl) + TP_MM_NR - 1) / TP_MM_NR;
        if ((a->type == TP_TYPE_BF16 || bf16_prec) && path == TP_CPU_AVX512 && tp_cpu_has_avx512_bf16()) {
            pl->act = ACT_BF16_PACKED;
            pl->Kp = (pl->K + 1) & ~(int64_t)1;
            per_batch = (size_t)pl->npanels * (size_t)pl->Kp * TP_MM_NR * sizeof(uint16_t);
            thread = (size_t)TP_MM_MC * TP_MM_KC_BF16 * sizeof(uint16_t);
        } else {
            pl->act = ACT_F32_PACKED;
            per_batch = (size_t)pl->npanels * (size_t)pl->K * TP_MM_NR * sizeof(float);
            thread = path == TP_CPU_AVX2 ? (size_t)TP_MM_MC_AVX2 * TP_MM_KC_AVX2 * sizeof(float)
                                         : (size_t)TP_MM_MC * TP_MM_KC * sizeof(float);
        }
    } else {
        pl->act = ACT_F32_ROWS;
        per_batch = (size_t)pl->N * (size_t)pl->K * sizeof(float);
        thread = (size_t)pl->K * sizeof(float); /* a weight row converted to F32 */
    }
    thread = TP_MAX(thread, (size_t)pl->K * sizeof(float)); /* also holds a gathered strided b row */
    pl->batch_bytes = align64(per_batch);
    pl->act_bytes = pl->batch_bytes * (size_t)mm_batches(pl);
    pl->thread_bytes = align64(thread);
    /* one token, one batch, on the dot-product paths: converting it (K values) costs less than the
     * barrier that sharing it would need, so each thread converts it into the end of its own scratch */
    pl->private_act = pl->N == 1 && pl->nbatch == 1 && (pl->act == ACT_F32_ROWS || (pl->act == ACT_Q8A && !pl->qgemm));
    if (pl->private_act) {
        pl->thread_bytes += pl->batch_bytes;
        pl->act_bytes = 0;
    }
}

static size_t mm_plan_bytes(const mm_plan *pl, int nth) { return pl->act_bytes + (size_t)nth * pl->thread_bytes + 64; }

size_t tp_work_size_mul_mat(const tp_tensor *dst, int nth) {
    mm_plan pl;
    const tp_cpu_path path = tp_context_cpu_path(dst->ctx);
    const int prec = tp_context_precision(dst->ctx);
    /* sized for the plan with and without AMX: the kernel asks tp_cpu_amx_usable() again */
    mm_make_plan(dst, path, prec, false, &pl);
    size_t bytes = mm_plan_bytes(&pl, nth);
    if (prec == TP_PRECISION_BF16 && path == TP_CPU_AVX512 && tp_cpu_amx_usable()) {
        mm_make_plan(dst, path, prec, true, &pl);
        bytes = TP_MAX(bytes, mm_plan_bytes(&pl, nth));
    }
    return bytes;
}

static bool mm_weight_type_ok(tp_type t) {
    return t == TP_TYPE_F32 || t == TP_TYPE_F16 || t == TP_TYPE_BF16 || tp_is_quantized(t);
}

tp_tensor *tp_mul_mat(tp_context *ctx, tp_tensor *a, tp_tensor *b) {
    if (!TP_CHECK_INPUTS(ctx, "tp_mul_mat", a, b)) return NULL;
    char sa[96], sb[96];
    if (!mm_weight_type_ok(a->type)) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE, "tp_mul_mat: weights must be F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/Q4_K/Q5_K/Q6_K (got %s)",
                         tp_type_name(a->type));
        return NULL;
    }
    if (b->type != TP_TYPE_F32) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE, "tp_mul_mat: activations must be F32 (got %s)", tp_type_name(b->type));
        return NULL;
    }
    if (a->ne[0] != b->ne[0]) {
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_mul_mat: K mismatch: a %s, b %s (ne0 must be equal)",
                         tp_shape_str(a, sa, sizeof sa), tp_shape_str(b, sb, sizeof sb));
        return NULL;
    }
    if (b->ne[2] % a->ne[2] != 0 || b->ne[3] % a->ne[3] != 0) {
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_mul_mat: a %s cannot be broadcast over b %s (dims 2, 3)",
                         tp_shape_str(a, sa, sizeof sa), tp_shape_str(b, sb, sizeof sb));
        return NULL;
    }
    if (tp_is_quantized(a->type) && !tp_rows_contiguous(a)) {
        tp_ctx_set_error(ctx, TP_ERR_UNSUPPORTED, "tp_mul_mat: quantised weights %s must have contiguous rows",
                         tp_shape_str(a, sa, sizeof sa));
        return NULL;
    }
    int64_t ne[4] = {a->ne[1], b->ne[1], b->ne[2], b->ne[3]};
    int nd = TP_MAX(2, TP_MAX(a->n_dims, b->n_dims));
    return tp_new_op_tensor(ctx, TP_TYPE_F32, nd, ne, TP_OP_MUL_MAT, a, b, NULL);
}

tp_tensor *tp_linear(tp_context *ctx, tp_tensor *a, tp_tensor *b, tp_tensor *bias, tp_act act) {
    if (bias && !TP_CHECK_INPUTS(ctx, "tp_linear", bias)) return NULL;
    if ((int)act < TP_ACT_NONE || (int)act > TP_ACT_GELU_TANH) {
        tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT, "tp_linear: unknown activation %d", (int)act);
        return NULL;
    }
    tp_tensor *y = tp_mul_mat(ctx, a, b);
    if (!y) return NULL;
    if (bias) {
        char sb[96];
        if (bias->type != TP_TYPE_F32 || bias->ne[0] != y->ne[0] || tp_nelements(bias) != y->ne[0] ||
            bias->nb[0] != sizeof(float)) {
            tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_linear: bias must be F32 [%lld] with unit stride (got %s %s)",
                             (long long)y->ne[0], tp_type_name(bias->type), tp_shape_str(bias, sb, sizeof sb));
            return NULL;
        }
    }
    y->src[2] = bias;
    y->op_params[MM_ACT] = (int32_t)act;
    return y;
}

void tp_mm_epilogue_row(const tp_mm_epilogue *ep, float *out, int64_t m0, int64_t n) {
    if (ep->bias)
        for (int64_t i = 0; i < n; i++) out[i] = out[i] + ep->bias[m0 + i]; /* as tp_add */
    if (ep->act == TP_ACT_GELU) tp_act_row(TP_ACT_ROW_GELU, out, n, ep->path); /* as tp_gelu */
    else if (ep->act == TP_ACT_QUICK_GELU) tp_act_row(TP_ACT_ROW_QUICK_GELU, out, n, ep->path);
    else if (ep->act == TP_ACT_GELU_TANH) tp_act_row(TP_ACT_ROW_GELU_TANH, out, n, ep->path); /* as tp_gelu_tanh */
}

/* ---------------------------------------------------------------------------------------------
 * Phase 1: activations
 * ------------------------------------------------------------------------------------------- */

static inline const float *b_row(const tp_tensor *b, int64_t n, int64_t bi, float *tmp) {
    int64_t i2 = bi % b->ne[2], i3 = bi / b->ne[2];
    const char *row = tp_row_ptr(b, n, i2, i3);
    if (b->nb[0] == sizeof(float)) return (const float *)row;
    for (int64_t k = 0; k < b->ne[0]; k++) tmp[k] = *(const float *)(row + k * b->nb[0]);
    return tmp;
}

/* token row n of batch bi, or of the merged batches (n runs over all of them) */
static const float *mm_token_row(const tp_tensor *b, const mm_plan *pl, int64_t n, int64_t bi, float *tmp) {
    return pl->merged ? b_row(b, n % pl->N, n / pl->N, tmp) : b_row(b, n, bi, tmp);
}

static void mm_convert_acts(const tp_compute_params *p, const mm_plan *pl, const tp_tensor *b, char *act,
                            float *tmp) {
    const int64_t K = pl->K, N = pl->N;
    int64_t u0, u1;
    switch (pl->act) {
    case ACT_F32_ROWS:
    case ACT_Q8A: {
        tp_split_range(pl->nbatch * N, p->ith, p->nth, &u0, &u1);
        for (int64_t u = u0; u < u1; u++) {
            int64_t bi = u / N, n = u % N;
            const float *src = b_row(b, n, bi, tmp);
            /* merged: all batches are one run of token rows in batch 0's area */
            char *base = act + (pl->merged ? 0 : (size_t)bi * pl->batch_bytes);
            const int64_t slot = pl->merged ? u : n;
            if (pl->act == ACT_F32_ROWS) {
                float *d = (float *)base + n * K;
                if (src != d) memcpy(d, src, (size_t)K * sizeof(float));
            } else {
                tp_block_q8a *d = (tp_block_q8a *)base + slot * (K / TP_QK);
                if (pl->path == TP_CPU_AVX512) tp_quantize_row_q8a_avx512(src, d, K);
                else if (pl->path == TP_CPU_AVX2) tp_quantize_row_q8a_avx2(src, d, K);
                else tp_quantize_row_q8a(src, d, K);
                if (pl->qgemm) {
                    float *xs = (float *)(base + pl->xs_off) + slot * (K / TP_QK);
                    for (int64_t j = 0; j < K / TP_QK; j++) xs[j] = d[j].d * (float)(d[j].s[0] + d[j].s[1]);
                }
            }
        }
        return;
    }
    case ACT_BF16_AMX: {
        const int64_t rows = mm_rows(pl);
        tp_split_range(mm_batches(pl) * pl->Np, p->ith, p->nth, &u0, &u1);
        const int64_t KT = pl->Kp / TP_AMX_KT;
        for (int64_t u = u0; u < u1; u++) {
            int64_t bi = u / pl->Np, n = u % pl->Np;
            uint16_t *d = (uint16_t *)(act + (size_t)bi * pl->batch_bytes) +
                          ((size_t)(n / 16) * (size_t)KT * 512 + (size_t)(n % 16) * 32); /* A-tile layout */
            if (n < rows) tp_amx_row_to_tiles(mm_token_row(b, pl, n, bi, tmp), K, pl->Kp, d);
            else
                for (int64_t t = 0; t < KT; t++) memset(d + (size_t)t * 512, 0, 32 * sizeof(uint16_t));
        }
        return;
    }
    case ACT_F32_PACKED:
    case ACT_BF16_PACKED: {
        const int64_t rows = mm_rows(pl);
        const bool bf16 = pl->act == ACT_BF16_PACKED;
        const size_t panel_bytes = (size_t)(bf16 ? pl->Kp * (int64_t)sizeof(uint16_t) : K * (int64_t)sizeof(float)) *
                                   TP_MM_NR;
        tp_split_range(mm_batches(pl) * pl->npanels, p->ith, p->nth, &u0, &u1);
        for (int64_t u = u0; u < u1; u++) {
            int64_t bi = u / pl->npanels, np = u % pl->npanels;
            char *panel = act + (size_t)bi * pl->batch_bytes + (size_t)np * panel_bytes;
            if ((pl->path == TP_CPU_AVX512 || (pl->path == TP_CPU_AVX2 && !bf16)) && b->nb[0] == sizeof(float)) {
                const char *tok[TP_MM_NR]; /* rows read in place: no tmp */
                for (int j = 0; j < TP_MM_NR; j++) {
                    const int64_t n = np * TP_MM_NR + j;
                    tok[j] = n < rows ? (const char *)mm_token_row(b, pl, n, bi, tmp) : NULL;
                }
                if (pl->path == TP_CPU_AVX512) tp_mm_pack_tokens_avx512(tok, K, pl->Kp, bf16, panel);
                else tp_mm_pack_tokens_avx2(tok, K, (float *)panel);
                continue;
            }
            for (int j = 0; j < TP_MM_NR; j++) {
                int64_t n = np * TP_MM_NR + j;
                const float *src = n < rows ? mm_token_row(b, pl, n, bi, tmp) : NULL;
                if (!bf16) {
                    float *d = (float *)panel + j;
                    if (src)
                        for (int64_t k = 0; k < K; k++) d[k * TP_MM_NR] = src[k];
                    else
                        for (int64_t k = 0; k < K; k++) d[k * TP_MM_NR] = 0.0f;
                } else {
                    uint16_t *d = (uint16_t *)panel + 2 * j;
                    for (int64_t k = 0; k < pl->Kp; k++) {
                        float v = src && k < K ? src[k] : 0.0f;
                        d[(k >> 1) * 2 * TP_MM_NR + (k & 1)] = tp_f32_to_bf16(v);
                    }
                }
            }
        }
        return;
    }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Phase 2a: packed GEMM
 * ------------------------------------------------------------------------------------------- */

/* Pack weight rows [m0, m0+mc) × k [k0, k0+kc) into micro-panels of MR rows (zero padded). */
static void pack_a_f32(const tp_tensor *a, int64_t ia2, int64_t ia3, int64_t m0, int64_t mc, int64_t k0,
                       int64_t kc, float *Ap) {
    const int64_t M = a->ne[1];
    for (int64_t mp = 0; mp < mc; mp += TP_MM_MR) {
        float *panel = Ap + (size_t)(mp / TP_MM_MR) * (size_t)kc * TP_MM_MR;
        for (int r = 0; r < TP_MM_MR; r++) {
            int64_t m = m0 + mp + r;
            float *d = panel + r;
            if (mp + r >= mc || m >= M) {
                for (int64_t k = 0; k < kc; k++) d[k * TP_MM_MR] = 0.0f;
                continue;
            }
            const char *row = tp_row_ptr(a, m, ia2, ia3);
            const size_t s = a->nb[0];
            switch (a->type) {
            case TP_TYPE_F32:
                for (int64_t k = 0; k < kc; k++) d[k * TP_MM_MR] = *(const float *)(row + (k0 + k) * s);
                break;
            case TP_TYPE_F16:
                for (int64_t k = 0; k < kc; k++)
                    d[k * TP_MM_MR] = tp_f16_to_f32(*(const uint16_t *)(row + (k0 + k) * s));
                break;
            default: /* BF16 */
                for (int64_t k = 0; k < kc; k++)
                    d[k * TP_MM_MR] = tp_bf16_to_f32(*(const uint16_t *)(row + (k0 + k) * s));
                break;
            }
        }
    }
}

/* BF16 weights (or F32/F16 rounded to BF16) into [kc/2][MR][2] pairs; k0 and kc even except a final odd
 * tail (zero padded). */
static void pack_a_bf16(const tp_tensor *a, int64_t ia2, int64_t ia3, int64_t m0, int64_t mc, int64_t k0,
                        int64_t kc, uint16_t *Ap) {
    const int64_t M = a->ne[1], K = a->ne[0];
    const int64_t kc2 = (kc + 1) / 2;
    for (int64_t mp = 0; mp < mc; mp += TP_MM_MR) {
        uint16_t *panel = Ap + (size_t)(mp / TP_MM_MR) * (size_t)kc2 * 2 * TP_MM_MR;
        for (int r = 0; r < TP_MM_MR; r++) {
            int64_t m = m0 + mp + r;
            uint16_t *d = panel + 2 * r;
            if (mp + r >= mc || m >= M) {
                for (int64_t k = 0; k < kc2; k++) d[k * 2 * TP_MM_MR] = d[k * 2 * TP_MM_MR + 1] = 0;
                continue;
            }
            const char *row = tp_row_ptr(a, m, ia2, ia3);
            const size_t s = a->nb[0];
            for (int64_t k = 0; k < 2 * kc2; k++) {
                int64_t kk = k0 + k;
                uint16_t v = 0;
                if (kk < K) {
                    const char *e = row + kk * s;
                    if (a->type == TP_TYPE_BF16) v = *(const uint16_t *)e;
                    else if (a->type == TP_TYPE_F16) v = tp_f32_to_bf16(tp_f16_to_f32(*(const uint16_t *)e));
                    else v = tp_f32_to_bf16(*(const float *)e); /* F32 under TP_PRECISION_BF16 */
                }
                d[(k >> 1) * 2 * TP_MM_MR + (k & 1)] = v;
            }
        }
    }
}

/* The same panels as pack_a_f32 / pack_a_bf16, by the AVX-512 or (F32 panels) AVX2 transposing pack
 * (contiguous rows). */
static void pack_a_simd(const tp_tensor *a, int64_t ia2, int64_t ia3, int64_t m0, int64_t mc, int64_t k0,
                        int64_t kc, bool bf16, tp_cpu_path path, char *Ap) {
    const int64_t M = a->ne[1];
    const size_t panel_bytes = bf16 ? (size_t)((kc + 1) / 2) * 2 * TP_MM_MR * sizeof(uint16_t)
                                    : (size_t)kc * TP_MM_MR * sizeof(float);
    for (int64_t mp = 0; mp < mc; mp += TP_MM_MR) {
        const char *rows[TP_MM_MR];
        for (int r = 0; r < TP_MM_MR; r++) {
            const int64_t m = m0 + mp + r;
            rows[r] = mp + r < mc && m < M ? tp_row_ptr(a, m, ia2, ia3) : NULL;
        }
        char *panel = Ap + (size_t)(mp / TP_MM_MR) * panel_bytes;
        if (path == TP_CPU_AVX512) tp_mm_pack_panel_avx512(a->type, rows, a->ne[0], k0, kc, bf16, panel);
        else tp_mm_pack_panel_avx2(a->type, rows, a->ne[0], k0, kc, (float *)panel);
    }
}

static void mm_gemm_packed(const tp_compute_params *p, const mm_plan *pl, tp_tensor *dst, const char *act,
                           char *scratch, const tp_mm_epilogue *ep) {
    const tp_tensor *a = dst->src[0], *b = dst->src[1];
    const int64_t M = pl->M, K = pl->K;
    const int64_t N = mm_rows(pl), nbatch = mm_batches(pl);
    const bool bf16 = pl->act == ACT_BF16_PACKED;
    const int64_t m_panels = (M + TP_MM_MR - 1) / TP_MM_MR;
    /* 2-D thread grid gm × gn: split the weights' rows while each thread keeps >= 2 micro-panels */
    int gm = p->nth;
    while (gm > 1 && (m_panels < 2 * gm || p->nth % gm != 0)) gm--;
    const int gn = p->nth / gm;
    const int tm = p->ith % gm, tn = p->ith / gm;
    int64_t pm0, pm1, pn0, pn1;
    tp_split_range(m_panels, tm, gm, &pm0, &pm1);
    tp_split_range(pl->npanels, tn, gn, &pn0, &pn1);
    if (p->ith >= gm * gn) return;
    const int64_t m_begin = pm0 * TP_MM_MR, m_end = TP_MIN(M, pm1 * TP_MM_MR);
    const int64_t r2 = b->ne[2] / a->ne[2], r3 = b->ne[3] / a->ne[3];
    const bool avx2 = pl->path == TP_CPU_AVX2;
    const int64_t KC = bf16 ? TP_MM_KC_BF16 : avx2 ? TP_MM_KC_AVX2 : TP_MM_KC;
    const int64_t MC = avx2 ? TP_MM_MC_AVX2 : TP_MM_MC;
    const bool fast_pack = (pl->path == TP_CPU_AVX512 || (avx2 && !bf16)) && a->nb[0] == tp_type_block_bytes(a->type);

    for (int64_t bi = 0; bi < nbatch; bi++) {
        const int64_t i2 = bi % b->ne[2], i3 = bi / b->ne[2];
        const char *abase = act + (size_t)bi * pl->batch_bytes;
        float *cbase = (float *)dst->data + (size_t)bi * (size_t)N * (size_t)M;
        for (int64_t m0 = m_begin; m0 < m_end; m0 += MC) {
            const int64_t mc = TP_MIN(MC, m_end - m0);
            for (int64_t k0 = 0; k0 < K; k0 += KC) {
                const int64_t kc = TP_MIN(KC, K - k0);
                if (fast_pack) pack_a_simd(a, i2 / r2, i3 / r3, m0, mc, k0, kc, bf16, pl->path, scratch);
                else if (bf16) pack_a_bf16(a, i2 / r2, i3 / r3, m0, mc, k0, kc, (uint16_t *)scratch);
                else pack_a_f32(a, i2 / r2, i3 / r3, m0, mc, k0, kc, (float *)scratch);
                for (int64_t np = pn0; np < pn1; np++) {
                    const int nr = (int)TP_MIN(TP_MM_NR, N - np * TP_MM_NR);
                    float *crow = cbase + (size_t)(np * TP_MM_NR) * (size_t)M;
                    for (int64_t mp = 0; mp < mc; mp += TP_MM_MR) {
                        const int mr = (int)TP_MIN(TP_MM_MR, mc - mp);
                        float *C = crow + m0 + mp;
                        if (bf16) {
                            const int64_t kc2 = (kc + 1) / 2;
                            const uint16_t *Bp = (const uint16_t *)abase +
                                                 (size_t)np * (size_t)pl->Kp * TP_MM_NR + (size_t)k0 * TP_MM_NR;
                            const uint16_t *Ap = (const uint16_t *)scratch + (size_t)(mp / TP_MM_MR) * kc2 * 2 * TP_MM_MR;
                            tp_mm_kernel_bf16_avx512(kc2, Ap, Bp, C, M, mr, nr, k0 > 0);
                        } else {
                            const float *Bp = (const float *)abase + (size_t)np * (size_t)K * TP_MM_NR +
                                              (size_t)k0 * TP_MM_NR;
                            const float *Ap = (const float *)scratch + (size_t)(mp / TP_MM_MR) * kc * TP_MM_MR;
                            if (pl->path == TP_CPU_AVX512)
                                tp_mm_kernel_f32_avx512(kc, Ap, Bp, C, M, mr, nr, k0 > 0);
                            else
                                tp_mm_kernel_f32_avx2(kc, Ap, Bp, C, M, mr, nr, k0 > 0);
                        }
                        if (ep && k0 + kc >= K) /* the tile is complete and still in L1 */
                            for (int t = 0; t < nr; t++) tp_mm_epilogue_row(ep, C + (size_t)t * (size_t)M, m0 + mp, mr);
                    }
                }
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Phase 2b: dot products (decode, scalar path, quantised weights)
 * ------------------------------------------------------------------------------------------- */

static float dot_f32(const float *x, const float *y, int64_t k) {
    /* 8 partial sums: deterministic and vectorisable without -ffast-math */
    float s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= k; i += 8)
        for (int j = 0; j < 8; j++) s[j] += x[i + j] * y[i + j];
    float t = 0.0f;
    for (; i < k; i++) t += x[i] * y[i];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7])) + t;
}

static void mm_dot_rows(const tp_compute_params *p, const mm_plan *pl, tp_tensor *dst, const char *act,
                        float *scratch) {
    const tp_tensor *a = dst->src[0], *b = dst->src[1];
    const int64_t M = pl->M, N = pl->N, K = pl->K;
    const int64_t chunks = (M + MM_ROW_CHUNK - 1) / MM_ROW_CHUNK;
    const int64_t r2 = b->ne[2] / a->ne[2], r3 = b->ne[3] / a->ne[3];
    const bool quant = pl->act == ACT_Q8A;
    const bool simd_rows = !quant && pl->path != TP_CPU_SCALAR && tp_rows_contiguous(a);
    int64_t u0, u1;
    tp_split_range(pl->nbatch * chunks, p->ith, p->nth, &u0, &u1);
    for (int64_t u = u0; u < u1; u++) {
        const int64_t bi = u / chunks, m0 = (u % chunks) * MM_ROW_CHUNK;
        const int64_t nrows = TP_MIN(MM_ROW_CHUNK, M - m0);
        const int64_t i2 = bi % b->ne[2], i3 = bi / b->ne[2];
        const char *arow = tp_row_ptr(a, m0, i2 / r2, i3 / r3);
        const char *abase = act + (size_t)bi * pl->batch_bytes;
        float *cbase = (float *)dst->data + (size_t)bi * (size_t)N * (size_t)M + m0;
        if (quant) {
            const int64_t nblk = K / TP_QK;
            if (pl->path == TP_CPU_AVX512) {
                /* tokens in chunks that stay in L2 while the weight rows are reused across them */
                for (int64_t n0 = 0; n0 < N; n0 += 256)
                    tp_mm_qdot_avx512(a->type, arow, a->nb[1], nrows, (const tp_block_q8a *)abase + n0 * nblk,
                                      nblk, TP_MIN(256, N - n0), K, cbase + (size_t)n0 * (size_t)M, M, pl->vnni);
                continue;
            }
            int64_t n = 0;
            /* several tokens (a batch of sequences decoding together): rows against 4 tokens at a time, each
             * token's sums in the same order as alone (the same bits) */
            if (pl->path == TP_CPU_AVX2 && tp_mm_qdot4_avx2_type_ok(a->type))
                for (; n + 4 <= N; n += 4)
                    tp_mm_qdot4_avx2(a->type, arow, a->nb[1], nrows, (const tp_block_q8a *)abase + n * nblk, nblk, K,
                                     cbase + (size_t)n * (size_t)M, M);
            for (; n < N; n++) {
                const tp_block_q8a *x = (const tp_block_q8a *)abase + n * nblk;
                float *out = cbase + (size_t)n * (size_t)M;
                if (pl->path == TP_CPU_AVX2)
                    tp_mm_qdot_avx2(a->type, arow, a->nb[1], nrows, x, K, out);
                else
                    for (int64_t r = 0; r < nrows; r++)
                        out[r] = tp_vec_dot_q8a(a->type, arow + (size_t)r * a->nb[1], x, K);
            }
        } else if (simd_rows) {
            for (int64_t n = 0; n < N; n++) {
                const float *x = (const float *)abase + n * K;
                float *out = cbase + (size_t)n * (size_t)M;
                if (pl->path == TP_CPU_AVX512) tp_mm_dot_rows_avx512(a->type, arow, a->nb[1], nrows, x, K, out);
                else tp_mm_dot_rows_avx2(a->type, arow, a->nb[1], nrows, x, K, out);
            }
        } else {
            for (int64_t r = 0; r < nrows; r++) {
                const char *row = arow + (size_t)r * a->nb[1];
                const float *w = scratch;
                if (a->type == TP_TYPE_F32 && a->nb[0] == sizeof(float)) w = (const float *)row;
                else if (tp_rows_contiguous(a)) tp_row_to_f32(a->type, row, scratch, K);
                else
                    for (int64_t k = 0; k < K; k++) tp_row_to_f32(a->type, row + k * a->nb[0], &scratch[k], 1);
                for (int64_t n = 0; n < N; n++)
                    cbase[(size_t)n * (size_t)M + r] = dot_f32(w, (const float *)abase + n * K, K);
            }
        }
    }
}

/* Quantised weights × many tokens on the int8 GEMM: units of MM_QGEMM_ROWS weight rows, split over
 * the threads; each thread packs its units a group at a time into its scratch, then runs the group
 * over the batch's tokens chunk by chunk (a chunk's activations read from memory once per group). */
static void mm_qgemm(const tp_compute_params *p, const mm_plan *pl, tp_tensor *dst, const char *act, char *scratch,
                     const tp_mm_epilogue *ep) {
    const tp_tensor *a = dst->src[0], *b = dst->src[1];
    const int64_t M = pl->M, N = mm_rows(pl), K = pl->K;
    const int64_t units = (M + MM_QGEMM_ROWS - 1) / MM_QGEMM_ROWS;
    const int64_t r2 = b->ne[2] / a->ne[2], r3 = b->ne[3] / a->ne[3];
    const size_t pbytes = tp_qgemm_panel_bytes(K), ubytes = (size_t)(MM_QGEMM_ROWS / TP_QG_ROWS) * pbytes;
    const int64_t nb = K / TP_QK;
    uint8_t *panels = (uint8_t *)scratch;
    void *tmp = scratch + (size_t)pl->qg_group * ubytes;
    int64_t u0, u1;
    tp_split_range(mm_batches(pl) * units, p->ith, p->nth, &u0, &u1);
    for (int64_t g0 = u0, g1; g0 < u1; g0 = g1) {
        const int64_t bi = g0 / units; /* a group stays in one batch */
        g1 = TP_MIN(TP_MIN(u1, (bi + 1) * units), g0 + pl->qg_group);
        const int64_t i2 = bi % b->ne[2], i3 = bi / b->ne[2];
        for (int64_t u = g0; u < g1; u++) {
            const int64_t m0 = (u % units) * MM_QGEMM_ROWS, nrows = TP_MIN(MM_QGEMM_ROWS, M - m0);
            const char *arow = tp_row_ptr(a, m0, i2 / r2, i3 / r3);
            for (int64_t r = 0; r < nrows; r += TP_QG_ROWS)
                tp_qgemm_pack_avx512(a->type, arow + (size_t)r * a->nb[1], a->nb[1], TP_MIN(TP_QG_ROWS, nrows - r),
                                     K, panels + (size_t)(u - g0) * ubytes + (size_t)(r / TP_QG_ROWS) * pbytes, tmp);
        }
        const char *abase = act + (size_t)bi * pl->batch_bytes;
        const tp_block_q8a *x = (const tp_block_q8a *)abase;
        const float *xs = (const float *)(abase + pl->xs_off);
        float *cbase = (float *)dst->data + (size_t)bi * (size_t)N * (size_t)M;
        for (int64_t n0 = 0; n0 < N; n0 += pl->qg_chunk) {
            const int64_t nc = TP_MIN(pl->qg_chunk, N - n0);
            for (int64_t u = g0; u < g1; u++) {
                const int64_t m0 = (u % units) * MM_QGEMM_ROWS, nrows = TP_MIN(MM_QGEMM_ROWS, M - m0);
                tp_qgemm_avx512(a->type, panels + (size_t)(u - g0) * ubytes, nrows, K, x + n0 * nb, xs + n0 * nb, nc,
                                cbase + (size_t)n0 * (size_t)M + m0, M, NULL, ep, m0);
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Phase 2c: AMX tiles
 * ------------------------------------------------------------------------------------------- */

static void mm_gemm_amx(const tp_compute_params *p, const mm_plan *pl, tp_tensor *dst, const char *act,
                        char *scratch) {
    const tp_tensor *a = dst->src[0], *b = dst->src[1];
    const int64_t M = pl->M, N = mm_rows(pl), nbatch = mm_batches(pl);
    const int64_t m_blocks = (M + TP_AMX_MB - 1) / TP_AMX_MB, n_blocks = pl->Np / TP_AMX_NB;
    /* 2-D grid gm × gn: split the weights' rows (each weight block packed once) while each thread keeps
     * >= 4 blocks of 32 rows; the rest over tokens */
    int gm = p->nth;
    while (gm > 1 && (m_blocks < 4 * gm || p->nth % gm != 0)) gm--;
    const int gn = p->nth / gm;
    const int tm = p->ith % gm, tn = p->ith / gm;
    int64_t bm0, bm1, bn0, bn1;
    tp_split_range(m_blocks, tm, gm, &bm0, &bm1);
    tp_split_range(n_blocks, tn, gn, &bn0, &bn1);
    const int64_t m0 = bm0 * TP_AMX_MB, m1 = TP_MIN(M, bm1 * TP_AMX_MB);
    const int64_t n0 = bn0 * TP_AMX_NB, n1 = TP_MIN(N, bn1 * TP_AMX_NB);
    const int64_t r2 = b->ne[2] / a->ne[2], r3 = b->ne[3] / a->ne[3];
    for (int64_t bi = 0; bi < nbatch; bi++) {
        const int64_t i2 = bi % b->ne[2], i3 = bi / b->ne[2];
        const uint16_t *abase = (const uint16_t *)(act + (size_t)bi * pl->batch_bytes);
        float *cbase = (float *)dst->data + (size_t)bi * (size_t)N * (size_t)M;
        tp_mm_amx_thread(a, i2 / r2, i3 / r3, m0, m1, abase, pl->Kp, n0, n1, cbase, M, scratch);
    }
}

/* tp_linear's epilogue over the whole result, each thread over whole rows once all are written */
static void mm_epilogue_pass(const tp_compute_params *p, tp_tensor *dst, const tp_mm_epilogue *ep) {
    tp_barrier(p->pool);
    const int64_t M = dst->ne[0], rows = tp_nelements(dst) / M;
    int64_t r0, r1;
    tp_split_range(rows, p->ith, p->nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) tp_mm_epilogue_row(ep, (float *)dst->data + r * M, 0, M);
}

void tp_kernel_mul_mat(const tp_compute_params *p, tp_tensor *dst) {
    mm_plan pl;
    const bool amx = p->precision == TP_PRECISION_BF16 && p->path == TP_CPU_AVX512 && tp_cpu_amx_usable();
    mm_make_plan(dst, p->path, p->precision, amx, &pl);
    if (amx && mm_plan_bytes(&pl, p->nth) > p->wsize) /* planned while TILEPASS_AMX=0 */
        mm_make_plan(dst, p->path, p->precision, false, &pl);
    char *act = (char *)p->wdata;
    char *scratch = act + pl.act_bytes + (size_t)p->ith * pl.thread_bytes;
    if (pl.private_act) {
        tp_compute_params self = *p;
        self.ith = 0;
        self.nth = 1;
        act = scratch + pl.thread_bytes - pl.batch_bytes;
        mm_convert_acts(&self, &pl, dst->src[1], act, (float *)scratch);
    } else {
        mm_convert_acts(p, &pl, dst->src[1], act, (float *)scratch);
        tp_barrier(p->pool);
    }
    const tp_mm_epilogue epilogue = {dst->src[2] ? (const float *)dst->src[2]->data : NULL, dst->op_params[MM_ACT],
                                     p->path};
    const tp_mm_epilogue *ep = epilogue.bias || epilogue.act != TP_ACT_NONE ? &epilogue : NULL;
    /* the two GEMMs run the epilogue on each finished output tile; the AMX and dot-product paths in a pass after */
    if (pl.act == ACT_F32_PACKED || pl.act == ACT_BF16_PACKED) {
        mm_gemm_packed(p, &pl, dst, act, scratch, ep);
    } else if (pl.qgemm) {
        mm_qgemm(p, &pl, dst, act, scratch, ep);
    } else {
        if (pl.act == ACT_BF16_AMX) mm_gemm_amx(p, &pl, dst, act, scratch);
        else mm_dot_rows(p, &pl, dst, act, (float *)scratch);
        if (ep) mm_epilogue_pass(p, dst, ep);
    }
}
