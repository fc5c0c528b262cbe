/* ops_attention_decode.c - tp_attention's decode form (one query per head over a KV cache): the
 * contracts and the shared scratch layout are in attention_plan.h; the query-tile form and the op's
 * constructor are in ops_attention.c. */
#include "tp_kernels.h"
#include "tp_matmul.h"
#include "tp_attention.h"
#include "attention_plan.h"

#include <math.h>

/* Rows with unit element stride in their own type (F32 or F16), rows and heads whole elements apart;
 * Q8_0 rows are whole blocks (kv_type_ok). */
static bool unit_rows_any(const tp_tensor *t) {
    if (t->type == TP_TYPE_Q8_0) return true;
    const size_t es = t->type == TP_TYPE_F16 ? sizeof(uint16_t) : sizeof(float);
    return t->nb[0] == es && t->nb[1] % es == 0 && t->nb[2] % es == 0;
}

/* ---- decode: one query per head (Nq = 1, B = 1, no bias / rel-pos / segments) ----
 * Flash-decoding: each thread takes a contiguous range of keys for all heads at once (the cache rows
 * hold every head of a key side by side, so K and V are streamed once in memory order), keeps per
 * head the online-softmax state (m, l) and an unnormalised output O[h][Dv] in its own scratch
 * (Qt holds the scaled queries [H][D], St the logits [key][head], Ot the outputs [H][Dv]); after a
 * barrier every thread merges its share of heads over all threads' partials:
 *   out = Σ_i e^(m_i − M) O_i / Σ_i e^(m_i − M) l_i,  M = max_i m_i. The softmax step is the
 * vector one of the tiles, run over heads instead of queries. */
/* Element i of a cache row of F32 or F16 values. */
static inline float kv_at(const void *row, size_t i, bool f16) {
    return f16 ? tp_f16_to_f32(((const uint16_t *)row)[i]) : ((const float *)row)[i];
}

/* St[c][h] = Σ_d K[c·ldk + (h/group)·ldh + d] · Q[h·D + d] for h < H; 0 for H <= h < nq (strides in elements). */
static void dec_qk_any(const void *K, bool f16, size_t ldk, size_t ldh, int group, const float *Q, float *St, int lds,
                       int nc, int H, int nq, int D) {
    const size_t es = f16 ? sizeof(uint16_t) : sizeof(float);
    for (int c = 0; c < nc; c++) {
        for (int h = 0; h < nq; h++) {
            float s = 0.0f;
            if (h < H) {
                const char *kr = (const char *)K + ((size_t)c * ldk + (size_t)(h / group) * ldh) * es;
                const float *qh = Q + (size_t)h * D;
                for (int d = 0; d < D; d++) s += kv_at(kr, (size_t)d, f16) * qh[d];
            }
            St[(size_t)c * lds + h] = s;
        }
    }
}

/* O[h·Dv + e] += Σ_c Pt[c·ldp + h] · V[c·ldv + (h/group)·ldh + e], in order of c. */
static void dec_pv_any(const float *Pt, int ldp, const void *V, bool f16, size_t ldv, size_t ldh, int group, float *O,
                       int nc, int H, int Dv) {
    const size_t es = f16 ? sizeof(uint16_t) : sizeof(float);
    for (int c = 0; c < nc; c++)
        for (int h = 0; h < H; h++) {
            const float pr = Pt[(size_t)c * ldp + h];
            const char *vr = (const char *)V + ((size_t)c * ldv + (size_t)(h / group) * ldh) * es;
            for (int e = 0; e < Dv; e++) O[(size_t)h * Dv + e] += pr * kv_at(vr, (size_t)e, f16);
        }
}

/* How a chunk of cache rows is read: F32 or F16 values, or Q8_0 blocks in place (the fused AVX-512 kernels;
 * on other paths a Q8_0 chunk is first dequantised and then read as F32). */
typedef enum { KV_F32, KV_F16, KV_Q8 } kv_kind;

/* St[c][h] over one chunk (the contract of dec_qk_any) on the path's kernel for the rows' kind */
static void dec_qk(tp_cpu_path path, kv_kind kind, const void *K, size_t ldk, size_t ldh, int group, const float *Q,
                   float *St, int lds, int nc, int H, int nq, int D) {
#if defined(__x86_64__) || defined(__i386__)
    if (path >= TP_CPU_AVX512) {
        if (kind == KV_Q8) tp_attn_dec_qk_q8_avx512(K, ldk, ldh, group, Q, St, lds, nc, H, nq, D);
        else if (kind == KV_F16) tp_attn_dec_qk_f16_avx512(K, ldk, ldh, group, Q, St, lds, nc, H, nq, D);
        else tp_attn_dec_qk_avx512(K, ldk, ldh, group, Q, St, lds, nc, H, nq, D);
        return;
    }
    if (path == TP_CPU_AVX2) {
        tp_attn_dec_qk_avx2(K, kind == KV_F16, ldk, ldh, group, Q, St, lds, nc, H, nq, D);
        return;
    }
#else
    TP_UNUSED(path);
#endif
    dec_qk_any(K, kind == KV_F16, ldk, ldh, group, Q, St, lds, nc, H, nq, D);
}

/* O[h][e] += over one chunk (the contract of dec_pv_any) on the path's kernel for the rows' kind */
static void dec_pv(tp_cpu_path path, kv_kind kind, const float *Pt, int ldp, const void *V, size_t ldv, size_t ldh,
                   int group, float *O, int nc, int H, int Dv) {
#if defined(__x86_64__) || defined(__i386__)
    if (path >= TP_CPU_AVX512) {
        if (kind == KV_Q8) tp_attn_dec_pv_q8_avx512(Pt, ldp, V, ldv, ldh, group, O, nc, H, Dv);
        else if (kind == KV_F16) tp_attn_dec_pv_f16_avx512(Pt, ldp, V, ldv, ldh, group, O, nc, H, Dv);
        else tp_attn_dec_pv_avx512(Pt, ldp, V, ldv, ldh, group, O, nc, H, Dv);
        return;
    }
    if (path == TP_CPU_AVX2) {
        tp_attn_dec_pv_avx2(Pt, ldp, V, kind == KV_F16, ldv, ldh, group, O, nc, H, Dv);
        return;
    }
#else
    TP_UNUSED(path);
#endif
    dec_pv_any(Pt, ldp, V, kind == KV_F16, ldv, ldh, group, O, nc, H, Dv);
}

bool att_decode_ok(const tp_tensor *dst, bool extras) {
    const tp_tensor *q = dst->src[0];
    return !extras && q->ne[1] == 1 && q->ne[3] == 1 && q->ne[2] <= ATT_QT && unit_rows_any(dst->src[1]) &&
           unit_rows_any(dst->src[2]);
}

/* Keys [j0, j0 + nc) of a Q8_0 k or v, every kv head, as floats: dst[c][hk][0..ne0). */
static void dequant_chunk(const tp_tensor *t, int64_t j0, int nc, float *dst, tp_cpu_path path) {
    const int64_t n = t->ne[0], hkv = t->ne[2];
    for (int c = 0; c < nc; c++)
        for (int64_t hk = 0; hk < hkv; hk++)
            att_row_f32(tp_row_ptr(t, j0 + c, hk, 0), TP_TYPE_Q8_0, 0, (int)n, dst + ((size_t)c * (size_t)hkv + (size_t)hk) * (size_t)n,
                    path);
}

void att_decode(const tp_compute_params *p, tp_tensor *dst, const att_dims *dims, const att_fns *fns,
                             float scale) {
    const tp_tensor *q = dst->src[0], *k = dst->src[1], *v = dst->src[2];
    const int D = (int)dims->D, Dv = (int)dims->Dv;
    const int H = (int)q->ne[2], nq = (int)round16(H), group = (int)(q->ne[2] / k->ne[2]);
    const int64_t Nk = k->ne[1];
    att_scratch sc = att_carve(p->wdata, p->ith, dims);
    for (int h = 0; h < H; h++) {
        const char *qr = tp_row_ptr(q, 0, h, 0);
        for (int d = 0; d < D; d++) sc.Qt[(size_t)h * D + d] = *(const float *)(qr + (size_t)d * q->nb[0]) * scale;
    }
    for (int h = 0; h < nq; h++) sc.m[h] = -INFINITY, sc.l[h] = 0.0f;
    memset(sc.Ot, 0, sizeof(float) * (size_t)H * (size_t)Dv);
    /* element strides. A Q8_0 k / v: on AVX-512 read in place (strides in bytes), else from its
     * dequantised chunk ([key][kv head][D] floats) */
    const int Hkv = (int)k->ne[2];
#if defined(__x86_64__) || defined(__i386__)
    const bool q8_fused = p->path >= TP_CPU_AVX512;
#else
    const bool q8_fused = false;
#endif
    const bool kdq = dims->Kdec && !q8_fused, vdq = dims->Vdec && !q8_fused;
    const kv_kind kkind = dims->Kdec ? (kdq ? KV_F32 : KV_Q8) : dims->k16 ? KV_F16 : KV_F32;
    const kv_kind vkind = dims->Vdec ? (vdq ? KV_F32 : KV_Q8) : dims->v16 ? KV_F16 : KV_F32;
    const size_t esk = dims->k16 ? sizeof(uint16_t) : dims->Kdec ? 1 : sizeof(float);
    const size_t esv = dims->v16 ? sizeof(uint16_t) : dims->Vdec ? 1 : sizeof(float);
    const size_t ldk = kdq ? (size_t)Hkv * (size_t)D : k->nb[1] / esk, ldhk = kdq ? (size_t)D : k->nb[2] / esk;
    const size_t ldv = vdq ? (size_t)Hkv * (size_t)Dv : v->nb[1] / esv, ldhv = vdq ? (size_t)Dv : v->nb[2] / esv;
    const int64_t step = kdq || vdq ? ATT_DEC_Q8 : ATT_KB;
    int64_t j0, j1;
    tp_split_range(Nk, p->ith, p->nth, &j0, &j1);
    for (int64_t jb = j0; jb < j1; jb += step) {
        const int nc = (int)TP_MIN(step, j1 - jb);
        const char *kb = (const char *)k->data + (size_t)jb * k->nb[1];
        if (kdq) {
            dequant_chunk(k, jb, nc, sc.Kp, p->path);
            kb = (const char *)sc.Kp;
        }
        dec_qk(p->path, kkind, kb, ldk, ldhk, group, sc.Qt, sc.St, ATT_QT, nc, H, nq, D);
        float mo[ATT_QT];
        memcpy(mo, sc.m, sizeof(float) * (size_t)H);
        fns->softmax(sc.St, ATT_QT, nc, nq, sc.m, sc.l, sc.Ot, ATT_QT, 0); /* Ot rescaled below, [H][Dv] here */
        for (int h = 0; h < H; h++) {
            const float ms = sc.m[h] == -INFINITY ? 0.0f : sc.m[h];
            const float alpha = att_exp_flush(mo[h] - ms);
            if (alpha != 1.0f)
                for (int e = 0; e < Dv; e++) sc.Ot[(size_t)h * Dv + e] *= alpha;
        }
        const char *vb = (const char *)v->data + (size_t)jb * v->nb[1];
        if (vdq) {
            dequant_chunk(v, jb, nc, sc.Vp, p->path);
            vb = (const char *)sc.Vp;
        }
        dec_pv(p->path, vkind, sc.St, ATT_QT, vb, ldv, ldhv, group, sc.Ot, nc, H, Dv);
    }
    tp_barrier(p->pool);
    int64_t h0, h1;
    tp_split_range(H, p->ith, p->nth, &h0, &h1);
    for (int64_t h = h0; h < h1; h++) {
        float M = -INFINITY;
        for (int i = 0; i < p->nth; i++) {
            const att_scratch o = att_carve(p->wdata, i, dims);
            M = o.m[h] > M ? o.m[h] : M;
        }
        float *out = (float *)dst->data + (size_t)h * Dv;
        float l = 0.0f;
        for (int e = 0; e < Dv; e++) out[e] = 0.0f;
        if (M != -INFINITY)
            for (int i = 0; i < p->nth; i++) {
                const att_scratch o = att_carve(p->wdata, i, dims);
                const float w = att_exp_flush(o.m[h] - M);
                if (w == 0.0f) continue;
                l += w * o.l[h];
                for (int e = 0; e < Dv; e++) out[e] += w * o.Ot[(size_t)h * Dv + e];
            }
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        for (int e = 0; e < Dv; e++) out[e] *= inv;
    }
}
