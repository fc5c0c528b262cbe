/* filter.c - greedy choice and transformers' warpers over one logits row (tilepass.h: "Generation policy"):
 * temperature (a float32 division, as torch), top-k (TopKLogitsWarper: keep every logit >= the k-th largest),
 * top-p (TopPLogitsWarper: ascending order, ties by ascending id, drop while the cumulative probability is
 * <= 1 - p, the last kept), and the draw from the softmax of what is left. */
#include "tp_generate.h"

#include <math.h>
#include <stdlib.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Blocks of 64 reduced to their maximum (SSE2 where the target has it: maxps(x, m) is x > m ? x : m, so NaN
 * never wins; else 16 independent scalar lanes), the first block holding the largest value remembered, then the
 * first equal entry looked for from there. */
#define ARGMAX_BLOCK 64
#define ARGMAX_LANES 16
static float block_max(const float *x) {
#if defined(__SSE2__)
    __m128 m0 = _mm_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    for (int k = 0; k < ARGMAX_BLOCK; k += 16) {
        m0 = _mm_max_ps(_mm_loadu_ps(x + k), m0);
        m1 = _mm_max_ps(_mm_loadu_ps(x + k + 4), m1);
        m2 = _mm_max_ps(_mm_loadu_ps(x + k + 8), m2);
        m3 = _mm_max_ps(_mm_loadu_ps(x + k + 12), m3);
    }
    float m[ARGMAX_LANES];
    _mm_storeu_ps(m, m0);
    _mm_storeu_ps(m + 4, m1);
    _mm_storeu_ps(m + 8, m2);
    _mm_storeu_ps(m + 12, m3);
#else
    float m[ARGMAX_LANES];
    for (int j = 0; j < ARGMAX_LANES; j++) m[j] = -INFINITY;
    for (int k = 0; k < ARGMAX_BLOCK; k += ARGMAX_LANES)
        for (int j = 0; j < ARGMAX_LANES; j++) {
            const float v = x[k + j];
            m[j] = v > m[j] ? v : m[j]; /* NaN never wins */
        }
#endif
    float bm = -INFINITY;
    for (int j = 0; j < ARGMAX_LANES; j++) bm = m[j] > bm ? m[j] : bm;
    return bm;
}

int32_t tp_argmax_first(const float *x, int32_t n) {
    float best = -INFINITY;
    int32_t best_at = -1, i = 0;
    for (; i + ARGMAX_BLOCK <= n; i += ARGMAX_BLOCK) {
        const float bm = block_max(x + i);
        if (bm > best) {
            best = bm;
            best_at = i;
        }
    }
    for (; i < n; i++)
        if (x[i] > best) {
            best = x[i];
            best_at = i;
        }
    if (best_at < 0) return -1;
    for (int32_t j = best_at; j < n; j++)
        if (x[j] == best) return j;
    return -1;
}

/* The k-th smallest (0-based) of a[0..n): quickselect, median of three (no NaN in a). */
static float select_kth(float *a, int32_t n, int32_t k) {
    int32_t lo = 0, hi = n - 1;
    while (hi > lo) {
        const int32_t mid = lo + (hi - lo) / 2;
        float x = a[lo], y = a[mid], z = a[hi];
        const float pivot = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        int32_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot) i++;
            while (a[j] > pivot) j--;
            if (i <= j) {
                const float t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return a[k];
    }
    return a[k];
}

/* descending by value, ties by descending id: TopPLogitsWarper's ascending stable order reversed */
static int cmp_desc(const void *a, const void *b) {
    const tp_logit_pair *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return (x->id < y->id) - (x->id > y->id);
}

static int32_t top_p(tp_filter_work *w, int32_t c, float p) {
    float mx = -INFINITY;
    for (int32_t j = 0; j < c; j++) mx = w->val[j] > mx ? w->val[j] : mx;
    double total = 0.0;
    for (int32_t j = 0; j < c; j++) total += exp((double)w->val[j] - (double)mx);
    /* the kept tokens are the head of the descending order: sort only a head holding more than p of the mass */
    const double need = (double)p * total * (1.0 + 1e-9);
    double gap = 8.0;
    int32_t h = 0;
    for (;;) {
        const double bound = (double)mx - gap;
        double mass = 0.0;
        h = 0;
        for (int32_t j = 0; j < c; j++)
            if ((double)w->val[j] >= bound) {
                mass += exp((double)w->val[j] - (double)mx);
                w->pairs[h].v = w->val[j];
                w->pairs[h].id = w->idx[j];
                h++;
            }
        if (mass >= need || h == c) break;
        gap *= 2.0;
    }
    qsort(w->pairs, (size_t)h, sizeof(*w->pairs), cmp_desc);
    /* kept while the mass strictly ahead leaves a cumulative (ascending) probability > 1 - p */
    const float drop = (float)(1.0 - (double)p);
    double ahead = 0.0;
    int32_t m = 0;
    while (m < h) {
        const double cum = 1.0 - ahead / total;
        if (m > 0 && !((float)cum > drop)) break;
        ahead += exp((double)w->pairs[m].v - (double)mx);
        m++;
    }
    const tp_logit_pair last = w->pairs[m - 1];
    int32_t k = 0;
    for (int32_t j = 0; j < c; j++)
        if (w->val[j] > last.v || (w->val[j] == last.v && w->idx[j] >= last.id)) {
            w->val[k] = w->val[j];
            w->idx[k] = w->idx[j];
            k++;
        }
    return k;
}

int32_t tp_filter_candidates(const float *logits, int32_t n, float temperature, int32_t top_k, float top_pv,
                             tp_filter_work *w) {
    int32_t c = 0;
    bool pos_inf = false;
    const float t = temperature > 0.0f ? temperature : 1.0f;
    for (int32_t i = 0; i < n; i++) {
        const float v = logits[i] / t;
        if (isnan(v) || v == -INFINITY) continue;
        pos_inf |= v == INFINITY;
        w->val[c] = v;
        w->idx[c] = i;
        c++;
    }
    if (c == 0) return 0;
    if (pos_inf) { /* +inf (or a logit / temperature overflowing): those tokens only, equally likely */
        int32_t k = 0;
        for (int32_t j = 0; j < c; j++)
            if (w->val[j] == INFINITY) {
                w->val[k] = 0.0f;
                w->idx[k] = w->idx[j];
                k++;
            }
        return k;
    }
    if (top_k > 0 && top_k < c) {
        for (int32_t j = 0; j < c; j++) w->tmp[j] = w->val[j];
        const float kth = select_kth(w->tmp, c, c - top_k);
        int32_t k = 0;
        for (int32_t j = 0; j < c; j++)
            if (w->val[j] >= kth) {
                w->val[k] = w->val[j];
                w->idx[k] = w->idx[j];
                k++;
            }
        c = k;
    }
    if (top_pv < 1.0f) c = top_p(w, c, top_pv);
    return c;
}

int32_t tp_filter_draw(tp_filter_work *w, int32_t n, double u) {
    float mx = -INFINITY;
    for (int32_t j = 0; j < n; j++) mx = w->val[j] > mx ? w->val[j] : mx;
    double total = 0.0;
    for (int32_t j = 0; j < n; j++) total += exp((double)w->val[j] - (double)mx);
    const double target = u * total;
    double cum = 0.0;
    for (int32_t j = 0; j < n; j++) {
        cum += exp((double)w->val[j] - (double)mx);
        if (cum > target) return j;
    }
    return n - 1;
}
