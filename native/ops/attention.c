/* ops_attention.c - fused attention with an online softmax (flash-attention style).
 *
 * Never materialises an Nq×Nk matrix. Work items are (batch, head, tile of up to ATT_QT = 64
 * queries), handed out to threads dynamically (an atomic counter in the op's scratch). Everything
 * inside a tile is laid out query-innermost so that vectors run over 16 (AVX-512) or 8 (AVX2)
 * queries and no K transposition or horizontal reduction is needed:
 *   Qt[d][r] = scale · q[d, i0 + r]                      (once per tile; padded to 16 queries)
 *   for each block of up to ATT_KB = 128 keys inside the tile's key range:
 *     St[c][r] = Σ_d K[j0 + c][d] · Qt[d][r]              (K rows read in place, broadcast)
 *     St += bias + rel_h + rel_w (rel tables transposed once per tile); masked entries = −inf
 *     per query: m' = max(m, max_c St), St = exp(St − m'), l = l·e^(m−m') + Σ_c St, Ot ·= e^(m−m')
 *     Ot[e][r] += Σ_c V[j0 + c][e] · St[c][r]             (V rows read in place, broadcast)
 *   out[e, h, i0 + r, b] = Ot[e][r] / l[r] (a query that sees no key at all gives 0).
 * A one-query tile uses dot-product forms instead (qk1/pv1) to not waste 15 lanes. The decode form
 * (one query per head over a KV cache, keys split across threads) is in ops_attention_decode.c.
 * The pieces exist as scalar C here and as AVX2 / AVX-512 versions in attention_avx2.c /
 * attention_avx512.c, picked by p->path; every path sums in the same order per element, so they
 * agree within rounding (exp differs by an ulp or so; exp of arguments below −87 is 0 on all).
 *
 * Sources: q, k, v in src[0..2]; the optional bias, rel_h, rel_w and segments take the slots
 * src[3..5] in that order as present (op_params say which slot holds which), so at most three of
 * the four can be combined in one call (TP_ERR_UNSUPPORTED otherwise).
 *
 * TP_PRECISION_BF16 on AVX-512 with AMX or AVX512-BF16 (D a multiple of 32, Dv of 16, k/v rows
 * unit-stride): all threads first convert K to BF16 rows and V to BF16 transposed (Vt[e][key]) in the
 * shared scratch, then St = K·Qt and Ot += Vt·P run with q·scale and P rounded to BF16 (F32
 * accumulation) on AMX tiles (attention_amx.c), else on vdpbf16ps (attention_avx512.c); the softmax,
 * masks and additive terms stay F32. Single-query tiles keep the F32 forms.
 *
 * K and V may be F16 (a half-precision KV cache): the decode form reads the F16 rows directly
 * (F16C conversion in the vector paths), the tiled form converts each block of keys to F32 in the
 * thread's pack buffer (as for strided rows); AMX then is not used. */
#include "tp_kernels.h"
#include "tp_matmul.h"
#include "tp_attention.h"
#include "attention_plan.h"

#include <math.h>


enum { AP_SCALE, AP_CAUSAL, AP_BIAS, AP_RELH, AP_RELW, AP_SEG };

tp_attention_opts tp_attention_default_opts(void) {
    tp_attention_opts o;
    memset(&o, 0, sizeof o);
    return o;
}

static bool dim_fits(int64_t n, int64_t want) { return n == 1 || n == want; }

/* k / v element types: F32, F16, or Q8_0 (a quantised KV cache) whose rows are whole blocks */
static bool kv_type_ok(const tp_tensor *t) {
    return t->type == TP_TYPE_F32 || t->type == TP_TYPE_F16 ||
           (t->type == TP_TYPE_Q8_0 && t->ne[0] % TP_QK == 0 && t->nb[0] == sizeof(tp_block_q8_0));
}

tp_tensor *tp_attention(tp_context *ctx, tp_tensor *q, tp_tensor *k, tp_tensor *v,
                        const tp_attention_opts *opts) {
    if (!TP_CHECK_INPUTS(ctx, "tp_attention", q, k, v)) return NULL;
    tp_attention_opts o = opts ? *opts : tp_attention_default_opts();
    tp_tensor *opt_t[4] = {o.bias, o.rel_h, o.rel_w, o.segments};
    for (int i = 0; i < 4; i++)
        if (opt_t[i] && !TP_CHECK_INPUTS(ctx, "tp_attention", opt_t[i])) return NULL;
    char s1[96], s2[96], s3[96];
    if (q->type != TP_TYPE_F32 || !kv_type_ok(k) || !kv_type_ok(v)) {
        tp_ctx_set_error(ctx, TP_ERR_TYPE,
                         "tp_attention: q must be F32, k and v F32, F16 or Q8_0 with rows of whole blocks (got %s, %s, %s)",
                         tp_type_name(q->type), tp_type_name(k->type), tp_type_name(v->type));
        return NULL;
    }
    int64_t D = q->ne[0], Nq = q->ne[1], H = q->ne[2], B = q->ne[3];
    int64_t Nk = k->ne[1], Hkv = k->ne[2], Dv = v->ne[0];
    if (k->ne[0] != D || v->ne[1] != Nk || v->ne[2] != Hkv || k->ne[3] != B || v->ne[3] != B || H % Hkv != 0) {
        tp_ctx_set_error(ctx, TP_ERR_SHAPE,
                         "tp_attention: q %s, k %s, v %s do not fit ([D, Nq, H, B], [D, Nk, Hkv, B], [Dv, Nk, Hkv, B], H %% Hkv == 0)",
                         tp_shape_str(q, s1, sizeof s1), tp_shape_str(k, s2, sizeof s2), tp_shape_str(v, s3, sizeof s3));
        return NULL;
    }
    if (Nq > INT32_MAX || Nk > INT32_MAX || D > INT32_MAX / ATT_KB || Dv > INT32_MAX / ATT_QT) {
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_attention: sizes too large");
        return NULL;
    }
    float scale = o.scale == 0.0f ? 1.0f / sqrtf((float)D) : o.scale;
    if (!isfinite(scale)) {
        tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT, "tp_attention: scale is not finite");
        return NULL;
    }
    for (int i = 0; i < 3; i++) {
        tp_tensor *t = opt_t[i];
        if (t && t->type != TP_TYPE_F32) {
            tp_ctx_set_error(ctx, TP_ERR_TYPE, "tp_attention: %s must be F32 (got %s)",
                             i == 0 ? "bias" : i == 1 ? "rel_h" : "rel_w", tp_type_name(t->type));
            return NULL;
        }
    }
    if (o.bias && (o.bias->ne[0] != Nk || o.bias->ne[1] != Nq || !dim_fits(o.bias->ne[2], H) ||
                   !dim_fits(o.bias->ne[3], B))) {
        tp_ctx_set_error(ctx, TP_ERR_SHAPE, "tp_attention: bias %s is not [Nk=%lld, Nq=%lld, H=%lld or 1, B=%lld or 1]",
                         tp_shape_str(o.bias, s1, sizeof s1), (long long)Nk, (long long)Nq, (long long)H, (long long)B);
        return NULL;
    }
    if ((o.rel_h == NULL) != (o.rel_w == NULL)) {
        tp_ctx_set_error(ctx, TP_ERR_INVALID_ARGUMENT, "tp_attention: rel_h and rel_w go together");
        return NULL;
    }
    if (o.rel_h) {
        tp_tensor *rh = o.rel_h, *rw = o.rel_w;
        if (rh->ne[0] * rw->ne[0] != Nk || rh->ne[1] != Nq || rw->ne[1] != Nq || !dim_fits(rh->ne[2], H) ||
            !dim_fits(rw->ne[2], H) || !dim_fits(rh->ne[3], B) || !dim_fits(rw->ne[3], B)) {
            tp_ctx_set_error(ctx, TP_ERR_SHAPE,
                             "tp_attention: rel_h %s / rel_w %s are not [Kh, Nq=%lld, H, B] / [Kw, Nq, H, B] with Kh·Kw = Nk = %lld",
                             tp_shape_str(rh, s1, sizeof s1), tp_shape_str(rw, s2, sizeof s2), (long long)Nq,
                             (long long)Nk);
            return NULL;
        }
    }
    if (o.segments) {
        tp_tensor *sg = o.segments;
        if (sg->type != TP_TYPE_I32) {
            tp_ctx_set_error(ctx, TP_ERR_TYPE, "tp_attention: segments must be I32 (got %s)", tp_type_name(sg->type));
            return NULL;
        }
        if (sg->ne[0] < 2 || sg->ne[1] != 1 || sg->ne[2] != 1 || sg->ne[3] != 1 || Nq != Nk) {
            tp_ctx_set_error(ctx, TP_ERR_SHAPE,
                             "tp_attention: segments %s must be [n_seg + 1 >= 2] with Nq == Nk (Nq %lld, Nk %lld)",
                             tp_shape_str(sg, s1, sizeof s1), (long long)Nq, (long long)Nk);
            return NULL;
        }
    }
    int n_opt = 0;
    for (int i = 0; i < 4; i++) n_opt += opt_t[i] != NULL;
    if (n_opt > TP_MAX_SRC - 3) {
        tp_ctx_set_error(ctx, TP_ERR_UNSUPPORTED,
                         "tp_attention: bias, rel_h/rel_w and segments cannot all be used in one call (fold the bias "
                         "into the rel tables or split the call)");
        return NULL;
    }
    /* the kernel reads bias/rel rows with unit element stride */
    for (int i = 0; i < 3; i++)
        if (opt_t[i] && opt_t[i]->nb[0] != sizeof(float)) {
            opt_t[i] = tp_cont(ctx, opt_t[i]);
            if (!opt_t[i]) return NULL;
        }

    int64_t ne[TP_MAX_DIMS] = {Dv, H, Nq, B};
    tp_tensor *t = tp_new_op_tensor(ctx, TP_TYPE_F32, 4, ne, TP_OP_ATTENTION, q, k, v);
    if (!t) return NULL;
    tp_set_op_param_f32(t, AP_SCALE, scale);
    t->op_params[AP_CAUSAL] = o.causal ? 1 : 0;
    int slot = 3;
    for (int i = 0; i < 4; i++) {
        t->op_params[AP_BIAS + i] = opt_t[i] ? slot : -1;
        if (opt_t[i]) t->src[slot++] = opt_t[i];
    }
    return t;
}

/* ---- scratch layout ---- */

static size_t pad64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Rows of a tensor usable in place as float rows ld floats apart (unit element stride). */
static bool unit_rows(const tp_tensor *t) {
    return t->type == TP_TYPE_F32 && t->nb[0] == sizeof(float) && t->nb[1] % sizeof(float) == 0;
}

/* One row of n elements (F32 or F16, element stride nb0 bytes) as floats; F16 rows with unit stride
 * go through the path's F16C converter. */
void att_row_f32(const char *src, tp_type type, size_t nb0, int n, float *dst, tp_cpu_path path) {
    TP_UNUSED(path);
    if (type == TP_TYPE_Q8_0) { /* whole blocks (kv_type_ok) */
#if defined(__x86_64__) || defined(__i386__)
        if (path >= TP_CPU_AVX512) {
            tp_attn_q8_0_to_f32_avx512(src, dst, n);
            return;
        }
#endif
        tp_dequantize_row(TP_TYPE_Q8_0, src, dst, n);
        return;
    }
    if (type == TP_TYPE_F16) {
        if (nb0 == sizeof(uint16_t)) {
#if defined(__x86_64__) || defined(__i386__)
            if (path >= TP_CPU_AVX512) {
                tp_attn_f16_to_f32_avx512((const uint16_t *)src, dst, n);
                return;
            }
            if (path == TP_CPU_AVX2) {
                tp_attn_f16_to_f32_avx2((const uint16_t *)src, dst, n);
                return;
            }
#endif
        }
        for (int i = 0; i < n; i++) dst[i] = tp_f16_to_f32(*(const uint16_t *)(src + (size_t)i * nb0));
        return;
    }
    for (int i = 0; i < n; i++) dst[i] = *(const float *)(src + (size_t)i * nb0);
}

/* Kp / Vp: a block of packed rows (tiles), or the dequantised keys / values of a Q8_0 decode chunk */
static size_t kp_floats(const att_dims *d) { return TP_MAX((size_t)ATT_KB * (size_t)d->Kpack, (size_t)d->Kdec); }
static size_t vp_floats(const att_dims *d) { return TP_MAX((size_t)ATT_KB * (size_t)d->Vpack, (size_t)d->Vdec); }

static size_t per_thread_bytes(const att_dims *d) {
    const size_t f = sizeof(float);
    return pad64(f * (size_t)d->D * ATT_QT) + pad64(f * ATT_KB * ATT_QT) + pad64(f * (size_t)d->Dvp * ATT_QT) +
           pad64(f * kp_floats(d)) + pad64(f * vp_floats(d)) + pad64(f * (size_t)d->Kh * ATT_QT) +
           pad64(f * (size_t)d->Kw * ATT_QT) + pad64(f * (size_t)d->D) + 2 * pad64(f * ATT_QT) + 2 * pad64(sizeof(int32_t) * ATT_QT) +
           (d->bf16 ? pad64(2 * (size_t)d->Dp * ATT_QT) + pad64(2 * (size_t)ATT_KB * ATT_QT) : 0);
}

/* bf16: the caller's verdict on BF16 precision + AVX-512 + (AMX or AVX512-BF16). Any head size: the
 * BF16 copies of q and k are zero padded along D to Dp (a multiple of 32, the tiles' depth; zeros add
 * nothing to q·k), those of v and the accumulator Ot along Dv to Dvp (a multiple of 16: the padded
 * rows of Vt are zeros, so Ot's rows Dv..Dvp stay 0 and are never stored). */
static att_dims dims_of(const tp_tensor *dst, bool bf16) {
    att_dims d;
    d.D = dst->src[0]->ne[0];
    d.Dv = dst->src[2]->ne[0];
    d.Kh = dst->op_params[AP_RELH] >= 0 ? dst->src[dst->op_params[AP_RELH]]->ne[0] : 0;
    d.Kw = dst->op_params[AP_RELW] >= 0 ? dst->src[dst->op_params[AP_RELW]]->ne[0] : 0;
    d.Kpack = unit_rows(dst->src[1]) ? 0 : d.D;
    d.Vpack = unit_rows(dst->src[2]) ? 0 : d.Dv;
    d.k16 = dst->src[1]->type == TP_TYPE_F16;
    d.v16 = dst->src[2]->type == TP_TYPE_F16;
    const int64_t hkv = dst->src[1]->ne[2];
    const bool one_query = dst->src[0]->ne[1] == 1;
    d.Kdec = one_query && dst->src[1]->type == TP_TYPE_Q8_0 ? ATT_DEC_Q8 * hkv * d.D : 0;
    d.Vdec = one_query && dst->src[2]->type == TP_TYPE_Q8_0 ? ATT_DEC_Q8 * hkv * d.Dv : 0;
    d.bf16 = bf16 && d.Kpack == 0 && d.Vpack == 0 && dst->src[0]->ne[1] > 1;
    d.Dp = d.bf16 ? (d.D + 31) & ~(int64_t)31 : d.D;
    d.Dvp = d.bf16 ? round16(d.Dv) : d.Dv;
    d.Nkp = 0;
    d.shared = 0;
    if (d.bf16) {
        const tp_tensor *k = dst->src[1];
        d.Nkp = k->ne[1] + ATT_AMX_PAD;
        d.shared = 2 * pad64(2 * (size_t)(k->ne[2] * k->ne[3]) * (size_t)d.Nkp * (size_t)TP_MAX(d.Dp, d.Dvp));
    }
    return d;
}

static bool bf16_wanted(tp_cpu_path path, int precision) {
    return precision == TP_PRECISION_BF16 && path == TP_CPU_AVX512 &&
           (tp_cpu_amx_usable() || tp_cpu_has_avx512_bf16());
}

size_t tp_work_size_attention(const tp_tensor *dst, int nth) {
    att_dims d = dims_of(dst, false);
    size_t bytes = 64 + (size_t)nth * per_thread_bytes(&d);
    if (bf16_wanted(tp_context_cpu_path(dst->ctx), tp_context_precision(dst->ctx))) {
        att_dims da = dims_of(dst, true);
        bytes = TP_MAX(bytes, 64 + da.shared + (size_t)nth * per_thread_bytes(&da));
    }
    return bytes;
}

att_scratch att_carve(void *wdata, int ith, const att_dims *d) {
    const size_t f = sizeof(float);
    char *base = (char *)wdata + 64 + d->shared + (size_t)ith * per_thread_bytes(d);
    att_scratch s;
    s.Qt = (float *)base; base += pad64(f * (size_t)d->D * ATT_QT);
    s.St = (float *)base; base += pad64(f * ATT_KB * ATT_QT);
    s.Ot = (float *)base; base += pad64(f * (size_t)d->Dvp * ATT_QT);
    s.Kp = (float *)base; base += pad64(f * kp_floats(d));
    s.Vp = (float *)base; base += pad64(f * vp_floats(d));
    s.RHt = (float *)base; base += pad64(f * (size_t)d->Kh * ATT_QT);
    s.RWt = (float *)base; base += pad64(f * (size_t)d->Kw * ATT_QT);
    s.q1 = (float *)base; base += pad64(f * (size_t)d->D);
    s.m = (float *)base; base += pad64(f * ATT_QT);
    s.l = (float *)base; base += pad64(f * ATT_QT);
    s.lo = (int32_t *)base; base += pad64(sizeof(int32_t) * ATT_QT);
    s.hi = (int32_t *)base; base += pad64(sizeof(int32_t) * ATT_QT);
    s.Qp = s.Pp = NULL;
    if (d->bf16) {
        s.Qp = (uint16_t *)base; base += pad64(2 * (size_t)d->Dp * ATT_QT);
        s.Pp = (uint16_t *)base;
    }
    return s;
}

/* ---- scalar microkernels. Layouts are key-major / transposed so that the vector versions work
 * on vectors of 16 (8) queries: St[c][r], Qt[d][r], Ot[e][r]. nq is a multiple of 16. ---- */

/* St[c][r] = Σ_d K[c][d] · Qt[d][r]  (c < nc, r < nq; K rows ldk floats apart) */
static void qk_scalar(const float *K, size_t ldk, const float *Qt, int ldq, float *St, int lds, int nc, int nq, int D) {
    for (int c = 0; c < nc; c++) {
        float *srow = St + (size_t)c * lds;
        const float *kr = K + (size_t)c * ldk;
        for (int r = 0; r < nq; r++) srow[r] = 0.0f;
        for (int d = 0; d < D; d++) {
            float kv = kr[d];
            const float *qt = Qt + (size_t)d * ldq;
            for (int r = 0; r < nq; r++) srow[r] += kv * qt[r];
        }
    }
}

/* Ot[e][r] += Σ_c V[c][e] · Pt[c][r]  (in order of c) */
static void pv_scalar(const float *Pt, int ldp, const float *V, size_t ldv, float *Ot, int ldo, int nc, int nq, int Dv) {
    for (int e = 0; e < Dv; e++) {
        float *orow = Ot + (size_t)e * ldo;
        for (int c = 0; c < nc; c++) {
            float vv = V[(size_t)c * ldv + e];
            const float *pr = Pt + (size_t)c * ldp;
            for (int r = 0; r < nq; r++) orow[r] += vv * pr[r];
        }
    }
}

/* The online-softmax step for a block of nc keys, per query r: m' = max(m, max_c St[c][r]),
 * St[c][r] = exp(St[c][r] − m'), l = l·e^(m − m') + Σ_c St[c][r], Ot[·][r] ·= e^(m − m').
 * A query whose logits are all −inf so far keeps m = −inf and gets p = 0. exp of arguments below
 * −87 is flushed to 0 (as the vector paths do). */
float att_exp_flush(float x) { return x < -87.0f ? 0.0f : expf(x); }

static void softmax_scalar(float *St, int lds, int nc, int nq, float *m, float *l, float *Ot, int ldo, int Dv) {
    for (int r = 0; r < nq; r++) {
        float mx = -INFINITY;
        for (int c = 0; c < nc; c++) mx = St[(size_t)c * lds + r] > mx ? St[(size_t)c * lds + r] : mx;
        float m_new = m[r] > mx ? m[r] : mx;
        float m_safe = m_new == -INFINITY ? 0.0f : m_new;
        float alpha = att_exp_flush(m[r] - m_safe);
        float sum = 0.0f;
        for (int c = 0; c < nc; c++) {
            float e = att_exp_flush(St[(size_t)c * lds + r] - m_safe);
            St[(size_t)c * lds + r] = e;
            sum += e;
        }
        l[r] = l[r] * alpha + sum;
        m[r] = m_new;
        if (alpha != 1.0f)
            for (int e = 0; e < Dv; e++) Ot[(size_t)e * ldo + r] *= alpha;
    }
}

static att_fns pick_fns(tp_cpu_path path) {
    att_fns f = {qk_scalar, pv_scalar, softmax_scalar, NULL, NULL};
#if defined(__x86_64__) || defined(__i386__)
    if (path >= TP_CPU_AVX512) {
        f.qk = tp_attn_qk_avx512;
        f.pv = tp_attn_pv_avx512;
        f.softmax = tp_attn_softmax_avx512;
        f.qk1 = tp_attn_qk1_avx512;
        f.pv1 = tp_attn_pv1_avx512;
    } else if (path == TP_CPU_AVX2) {
        f.qk = tp_attn_qk_avx2;
        f.pv = tp_attn_pv_avx2;
        f.softmax = tp_attn_softmax_avx2;
        f.qk1 = tp_attn_qk1_avx2;
        f.pv1 = tp_attn_pv1_avx2;
    }
#else
    TP_UNUSED(path);
#endif
    return f;
}

/* Segment offsets valid: seg[0] = 0, non-decreasing, seg[n] = N. */
static bool segments_valid(const tp_tensor *sg, int64_t N) {
    int64_t n = sg->ne[0];
    int32_t prev = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t s = *(const int32_t *)((const char *)sg->data + i * sg->nb[0]);
        if ((i == 0 && s != 0) || s < prev || s > N) return false;
        prev = s;
    }
    return prev == N;
}

/* The segment [start, end) holding token i (binary search over the offsets). */
static void segment_of(const tp_tensor *sg, int64_t i, int32_t *start, int32_t *end) {
    int64_t lo = 0, hi = sg->ne[0] - 1; /* seg[lo] <= i < seg[hi] */
    const char *d = sg->data;
    size_t nb = sg->nb[0];
#define SEG(j) (*(const int32_t *)(d + (size_t)(j) * nb))
    while (hi - lo > 1) {
        int64_t mid = (lo + hi) / 2;
        if (SEG(mid) <= i) lo = mid; else hi = mid;
    }
    *start = SEG(lo);
    *end = SEG(hi);
#undef SEG
}

void tp_kernel_attention(const tp_compute_params *p, tp_tensor *dst) {
    const tp_tensor *q = dst->src[0], *k = dst->src[1], *v = dst->src[2];
    const tp_tensor *bias = dst->op_params[AP_BIAS] >= 0 ? dst->src[dst->op_params[AP_BIAS]] : NULL;
    const tp_tensor *rel_h = dst->op_params[AP_RELH] >= 0 ? dst->src[dst->op_params[AP_RELH]] : NULL;
    const tp_tensor *rel_w = dst->op_params[AP_RELW] >= 0 ? dst->src[dst->op_params[AP_RELW]] : NULL;
    const tp_tensor *seg = dst->op_params[AP_SEG] >= 0 ? dst->src[dst->op_params[AP_SEG]] : NULL;
    const bool causal = dst->op_params[AP_CAUSAL] != 0;
    const float scale = tp_get_op_param_f32(dst, AP_SCALE);
    att_dims dims = dims_of(dst, bf16_wanted(p->path, p->precision));
    if (dims.bf16 && 64 + dims.shared + (size_t)p->nth * per_thread_bytes(&dims) > p->wsize)
        dims = dims_of(dst, false); /* planned for another path */
    const bool amx = dims.bf16 && tp_cpu_amx_usable();
    const int D = (int)dims.D, Dv = (int)dims.Dv, Dp = (int)dims.Dp, Dvp = (int)dims.Dvp;
    const int64_t Nq = q->ne[1], H = q->ne[2], B = q->ne[3], Nk = k->ne[1], Hkv = k->ne[2];
    const int64_t group = H / Hkv;
    const int64_t causal_off = Nk - Nq;
    const att_fns fns = pick_fns(p->path);

    if (seg && !segments_valid(seg, Nq)) {
        tp_report_bad_data(p);
        int64_t n = tp_nelements(dst), e0, e1;
        tp_split_range(n, p->ith, p->nth, &e0, &e1);
        for (int64_t e = e0; e < e1; e++) ((float *)dst->data)[e] = 0.0f;
        return;
    }

    if (!dims.bf16 && att_decode_ok(dst, bias || rel_h || seg)) {
        att_decode(p, dst, &dims, &fns, scale);
        return;
    }

    /* tiles of ATT_QT queries (a multiple of 16; the last one shorter) */
    const int64_t n_tiles = (Nq + ATT_QT - 1) / ATT_QT;
    const int64_t n_items = B * H * n_tiles;

    atomic_int_fast64_t *counter = (atomic_int_fast64_t *)p->wdata;
    if (p->ith == 0) atomic_store(counter, 0);
    /* bf16: K as BF16 rows [b][hk][Nkp][Dp], V as BF16 transposed [b][hk][Dvp][Nkp], zero padded (keys
     * Nk.., columns D.. of K, rows Dv.. of Vt) */
    uint16_t *K16 = NULL, *Vt16 = NULL;
    if (dims.bf16) {
        K16 = (uint16_t *)((char *)p->wdata + 64);
        Vt16 = (uint16_t *)((char *)K16 + dims.shared / 2);
        const int64_t Nkp = dims.Nkp, n_chunks = (Nkp + 63) / 64;
        int64_t u0, u1;
        tp_split_range(B * Hkv * n_chunks, p->ith, p->nth, &u0, &u1);
        for (int64_t u = u0; u < u1; u++) {
            const int64_t bh = u / n_chunks, c0 = (u % n_chunks) * 64, c1 = TP_MIN(c0 + 64, Nkp);
            const int64_t hk = bh % Hkv, b = bh / Hkv;
            uint16_t *kd = K16 + (size_t)bh * (size_t)Nkp * (size_t)Dp;
            uint16_t *vd = Vt16 + (size_t)bh * (size_t)Dvp * (size_t)Nkp;
            for (int64_t c = c0; c < c1; c++) {
                uint16_t *kr = kd + (size_t)c * (size_t)Dp;
                int filled = 0;
                if (c < Nk) {
                    tp_attn_bf16_rows((const float *)tp_row_ptr(k, c, hk, b), D, kr);
                    filled = D;
                }
                if (filled < Dp) memset(kr + filled, 0, sizeof(uint16_t) * (size_t)(Dp - filled));
            }
            for (int e = Dv; e < Dvp; e++) /* Vt's padding rows */
                memset(vd + (size_t)e * (size_t)Nkp + c0, 0, sizeof(uint16_t) * (size_t)(c1 - c0));
            if (v->nb[0] == sizeof(float) && v->nb[1] % sizeof(float) == 0) /* 16x16 transposes */
                tp_attn_bf16_vt_avx512((const float *)tp_row_ptr(v, 0, hk, b), v->nb[1] / sizeof(float), Nk, c0, c1,
                                       (int)Dv, vd, (size_t)Nkp);
            else
                for (int64_t c = c0; c < c1; c++) {
                    const float *vr = c < Nk ? (const float *)tp_row_ptr(v, c, hk, b) : NULL;
                    for (int e = 0; e < Dv; e++) vd[(size_t)e * Nkp + c] = vr ? tp_f32_to_bf16(vr[e]) : 0;
                }
        }
    }
    tp_barrier(p->pool);

    att_scratch sc = att_carve(p->wdata, p->ith, &dims);
    const bool k_unit = dims.Kpack == 0, v_unit = dims.Vpack == 0;
    /* the tile's transposes in 16x16 blocks where q's rows are unit-stride floats */
    const bool q_rows = p->path >= TP_CPU_AVX512 && q->nb[0] == sizeof(float) && q->nb[1] % sizeof(float) == 0;
    if (amx) tp_attn_amx_begin();

    for (;;) {
        int64_t item = atomic_fetch_add(counter, 1);
        if (item >= n_items) break;
        const int64_t t = item % n_tiles, h = (item / n_tiles) % H, b = item / (n_tiles * H);
        const int64_t hk = h / group;
        const int64_t i0 = t * ATT_QT, i1 = TP_MIN(i0 + ATT_QT, Nq);
        const int nr = (int)(i1 - i0), nq = (int)round16(nr);
        const bool one = nr == 1 && fns.qk1 != NULL;

        /* Qt[d][r] = scale · q[d, i0 + r] (padding queries 0) */
        if (q_rows)
            tp_attn_load_qt_avx512((const float *)tp_row_ptr(q, 0, h, b), q->nb[1] / sizeof(float), i0, nr, nq, (int)D,
                                   scale, sc.Qt, ATT_QT);
        else
            for (int r = 0; r < nq; r++) {
                if (r < nr) {
                    const char *qr = tp_row_ptr(q, i0 + r, h, b);
                    for (int d = 0; d < D; d++)
                        sc.Qt[(size_t)d * ATT_QT + r] = *(const float *)(qr + (size_t)d * q->nb[0]) * scale;
                } else {
                    for (int d = 0; d < D; d++) sc.Qt[(size_t)d * ATT_QT + r] = 0.0f;
                }
            }
        if (one)
            for (int d = 0; d < D; d++) sc.q1[d] = sc.Qt[(size_t)d * ATT_QT];
        const bool tiles = dims.bf16 && !one;
        if (tiles) tp_attn_bf16_pack_pairs(sc.Qt, ATT_QT, D, Dp, nq, sc.Qp); /* rows D..Dp zeros */
        /* per-query key ranges; the tile's key range is their union */
        int64_t jlo = Nk, jhi = 0;
        for (int r = 0; r < nq; r++) {
            int32_t lo = 0, hi = (int32_t)Nk;
            if (r < nr) {
                int64_t i = i0 + r;
                if (seg) segment_of(seg, i, &lo, &hi);
                if (causal) {
                    int64_t lim = i + causal_off + 1;
                    if (lim < hi) hi = (int32_t)(lim < 0 ? 0 : lim);
                }
                if (hi < lo) hi = lo;
                if (lo < hi) {
                    jlo = TP_MIN(jlo, lo);
                    jhi = TP_MAX(jhi, hi);
                }
            }
            sc.lo[r] = lo;
            sc.hi[r] = hi;
            sc.m[r] = -INFINITY;
            sc.l[r] = 0.0f;
        }
        for (int e = 0; e < Dvp; e++) memset(sc.Ot + (size_t)e * ATT_QT, 0, sizeof(float) * (size_t)nq);
        /* rel-pos tables of this tile, transposed: RHt[jh][r] = rel_h[jh, i0 + r] */
        if (rel_h) {
            for (int r = 0; r < nq; r++) {
                int64_t i = i0 + (r < nr ? r : 0);
                const float *rh = tp_row_ptr(rel_h, i, h % rel_h->ne[2], b % rel_h->ne[3]);
                const float *rw = tp_row_ptr(rel_w, i, h % rel_w->ne[2], b % rel_w->ne[3]);
                for (int64_t j = 0; j < dims.Kh; j++) sc.RHt[(size_t)j * ATT_QT + r] = rh[j];
                for (int64_t j = 0; j < dims.Kw; j++) sc.RWt[(size_t)j * ATT_QT + r] = rw[j];
            }
        }

        const char *kbase = (const char *)k->data + hk * k->nb[2] + b * k->nb[3];
        const char *vbase = (const char *)v->data + hk * v->nb[2] + b * v->nb[3];
        for (int64_t j0 = jlo; j0 < jhi; j0 += ATT_KB) {
            const int nc = (int)TP_MIN((int64_t)ATT_KB, jhi - j0);
            const float *Kb;
            size_t ldk;
            if (k_unit) {
                Kb = (const float *)(kbase + (size_t)j0 * k->nb[1]);
                ldk = k->nb[1] / sizeof(float);
            } else {
                for (int c = 0; c < nc; c++)
                    att_row_f32(kbase + (size_t)(j0 + c) * k->nb[1], k->type, k->nb[0], D, sc.Kp + (size_t)c * D, p->path);
                Kb = sc.Kp;
                ldk = (size_t)D;
            }
            if (tiles) {
                const uint16_t *kb16 = K16 + ((size_t)(b * Hkv + hk) * (size_t)dims.Nkp + (size_t)j0) * (size_t)Dp;
                if (amx) tp_attn_amx_qk(kb16, (size_t)Dp, sc.Qp, sc.St, ATT_QT, nc, nq, Dp);
                else tp_attn_bf16_qk_avx512(kb16, (size_t)Dp, sc.Qp, sc.St, ATT_QT, nc, nq, Dp);
            }
            else if (one)
                fns.qk1(Kb, ldk, sc.q1, sc.St, ATT_QT, nc, D);
            else
                fns.qk(Kb, ldk, sc.Qt, ATT_QT, sc.St, ATT_QT, nc, nq, D);

            /* additive terms */
            if (bias) {
                for (int r = 0; r < nr; r++) {
                    const float *br = (const float *)tp_row_ptr(bias, i0 + r, h % bias->ne[2], b % bias->ne[3]) + j0;
                    for (int c = 0; c < nc; c++) sc.St[(size_t)c * ATT_QT + r] += br[c];
                }
            }
            if (rel_h && p->path >= TP_CPU_AVX512) {
                tp_attn_add_rel_avx512(sc.St, ATT_QT, nc, nq, sc.RHt, sc.RWt, ATT_QT, (int)(j0 / dims.Kw),
                                       (int)(j0 % dims.Kw), (int)dims.Kw);
            } else if (rel_h) {
                const int64_t Kw = dims.Kw;
                int64_t jh = j0 / Kw, jw = j0 % Kw;
                for (int c = 0; c < nc; c++) {
                    float *srow = sc.St + (size_t)c * ATT_QT;
                    const float *a = sc.RHt + (size_t)jh * ATT_QT, *w = sc.RWt + (size_t)jw * ATT_QT;
                    for (int r = 0; r < nq; r++) srow[r] += a[r] + w[r];
                    if (++jw == Kw) {
                        jw = 0;
                        jh++;
                    }
                }
            }
            /* masks (causal / segments): only where a query's range cuts this block */
            for (int r = 0; r < nr; r++) {
                int64_t lo = sc.lo[r] - j0, hi = sc.hi[r] - j0;
                if (lo <= 0 && hi >= nc) continue;
                if (hi < lo) hi = lo;
                for (int c = 0; c < nc; c++)
                    if (c < lo || c >= hi) sc.St[(size_t)c * ATT_QT + r] = -INFINITY;
            }
            if (tiles) /* also packs the probabilities for the P·V tiles */
                tp_attn_bf16_softmax_pack(sc.St, ATT_QT, nc, nq, sc.m, sc.l, sc.Ot, ATT_QT, Dv, sc.Pp);
            else
                fns.softmax(sc.St, ATT_QT, nc, nq, sc.m, sc.l, sc.Ot, ATT_QT, Dv);

            const float *Vb;
            size_t ldv;
            if (v_unit) {
                Vb = (const float *)(vbase + (size_t)j0 * v->nb[1]);
                ldv = v->nb[1] / sizeof(float);
            } else {
                for (int c = 0; c < nc; c++)
                    att_row_f32(vbase + (size_t)(j0 + c) * v->nb[1], v->type, v->nb[0], Dv, sc.Vp + (size_t)c * Dv, p->path);
                Vb = sc.Vp;
                ldv = (size_t)Dv;
            }
            if (tiles) {
                const uint16_t *vt16 = Vt16 + (size_t)(b * Hkv + hk) * (size_t)Dvp * (size_t)dims.Nkp + (size_t)j0;
                if (amx) tp_attn_amx_pv(vt16, (size_t)dims.Nkp, sc.Pp, sc.Ot, ATT_QT, nc, nq, Dvp);
                else tp_attn_bf16_pv_avx512(vt16, (size_t)dims.Nkp, sc.Pp, sc.Ot, ATT_QT, nc, nq, Dvp);
            } else if (one)
                fns.pv1(sc.St, ATT_QT, Vb, ldv, sc.Ot, ATT_QT, nc, Dv);
            else
                fns.pv(sc.St, ATT_QT, Vb, ldv, sc.Ot, ATT_QT, nc, nq, Dv);
        }

        /* out[e, h, i, b] = Ot[e][r] / l[r] (a query that saw no key gives 0) */
        if (p->path >= TP_CPU_AVX512) {
            tp_attn_store_out_avx512(sc.Ot, ATT_QT, sc.l, nr, (int)Dv,
                                     (float *)dst->data + (((size_t)b * Nq + (size_t)i0) * H + (size_t)h) * Dv,
                                     (size_t)H * (size_t)Dv);
            continue;
        }
        for (int r = 0; r < nr; r++) {
            float *out = (float *)dst->data + (((size_t)b * Nq + (size_t)(i0 + r)) * H + (size_t)h) * Dv;
            float inv = sc.l[r] > 0.0f ? 1.0f / sc.l[r] : 0.0f;
            for (int e = 0; e < Dv; e++) out[e] = sc.Ot[(size_t)e * ATT_QT + r] * inv;
        }
    }
    if (amx) tp_attn_amx_end();
}
