/* attention_plan.h - what the two halves of tp_attention share (ops_attention.c: the op, the
 * query tiles and the scratch layout; ops_attention_decode.c: the one-query decode form). Internal. */
#ifndef TP_ATTENTION_PLAN_H
#define TP_ATTENTION_PLAN_H

#include "tp_kernels.h"

#define ATT_QT 64  /* max queries per work item */
#define ATT_KB 128 /* keys per block (multiple of 16) */
#define ATT_DEC_Q8 32 /* keys per chunk of a decode over a Q8_0 cache (dequantised, all heads, to L1/L2) */

static inline int64_t round16(int64_t n) { return (n + 15) & ~(int64_t)15; }

typedef struct att_dims {
    int64_t D, Dv, Kh, Kw; /* Kh = Kw = 0 without rel-pos */
    int64_t Kpack, Vpack;  /* D / Dv when k / v rows must be packed (not unit-stride F32: F16, or strided), else 0 */
    bool k16, v16;         /* k / v are F16 (a KV cache in half precision) */
    int64_t Kdec, Vdec;    /* decode over a Q8_0 k / v: floats of ATT_DEC_Q8 keys × all kv heads, else 0 */
    bool bf16;             /* BF16 precision: BF16 operands, products on AMX tiles or vdpbf16ps */
    int64_t Dp, Dvp;       /* bf16: D rounded up to 32, Dv to 16 (the BF16 operands zero padded); else D, Dv */
    int64_t Nkp;           /* bf16: keys of the BF16 K / Vt copies (Nk + 32, zero padded) */
    size_t shared;         /* bf16: bytes of those copies (all batches and kv heads) */
} att_dims;
#define ATT_AMX_PAD 32

typedef struct att_scratch {
    float *Qt;  /* [D][ATT_QT]: the query tile transposed, scaled */
    float *St;  /* [ATT_KB][ATT_QT]: logits, then probabilities, key-major */
    float *Ot;  /* [Dvp][ATT_QT]: the output accumulator transposed (rows Dv.. only under bf16: zeros) */
    float *Kp;  /* [ATT_KB][D]: a K block when k's rows are not unit-stride */
    float *Vp;  /* [ATT_KB][Dv]: likewise for V */
    float *RHt; /* [Kh][ATT_QT]: rel_h of the tile transposed */
    float *RWt; /* [Kw][ATT_QT] */
    float *q1;  /* [D]: the query of a one-query tile, scaled */
    uint16_t *Qp, *Pp; /* bf16: Qt (Dp rows, zeros past D) and P as BF16 pair tiles */
    float *m, *l;
    int32_t *lo, *hi; /* per-query key range */
} att_scratch;

typedef struct att_fns {
    void (*qk)(const float *, size_t, const float *, int, float *, int, int, int, int);
    void (*pv)(const float *, int, const float *, size_t, float *, int, int, int, int);
    void (*softmax)(float *, int, int, int, float *, float *, float *, int, int);
    /* optional single-query forms: St[c][0] (lanes 1..15 zeroed) and Ot[e][0] only */
    void (*qk1)(const float *, size_t, const float *, float *, int, int, int);
    void (*pv1)(const float *, int, const float *, size_t, float *, int, int, int);
} att_fns;

/* the thread's part of the op's scratch */
att_scratch att_carve(void *wdata, int ith, const att_dims *d);
/* One row of n elements (F32, F16 or Q8_0 blocks; element stride nb0 bytes) as floats. */
void att_row_f32(const char *src, tp_type type, size_t nb0, int n, float *dst, tp_cpu_path path);
/* exp(x), 0 below −87 (as the vector paths) */
float att_exp_flush(float x);
/* Whether dst (one query per head, no bias / rel-pos / segments: extras false) takes the decode form. */
bool att_decode_ok(const tp_tensor *dst, bool extras);
void att_decode(const tp_compute_params *p, tp_tensor *dst, const att_dims *dims, const att_fns *fns, float scale);

#endif
