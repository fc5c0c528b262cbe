/* peak.c - the machine's arithmetic peak, measured: n threads each run 12 independent chains of
 * 512-bit FMAs (vfmadd, 32 FLOP each) and, where the CPU has AVX512-BF16, of vdpbf16ps (64 FLOP
 * each); best of 5. Prints "fma GFLOP/s" and "bf16 GFLOP/s" (0 without AVX512-BF16). A count from
 * cpuinfo's clock and a guessed number of FMA units is wrong on some CPUs (Zen 4 runs one 512-bit FMA
 * per cycle, Sapphire Rapids two), so the GEMM figures are compared with this instead.
 * Built by bench_kernels.py with -O2 -mavx512f -mavx512bf16; usage: peak N_THREADS */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ITERS 20000000L

typedef struct job {
    int bf16;
    float out;
} job;

/* distinct starting values: identical chains would be folded into one by the compiler */
#define CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define DECL(i) __m512 a##i = _mm512_set1_ps((float)(i));
#define FMA(i) a##i = _mm512_fmadd_ps(a##i, f, g);
#define DP(i) a##i = _mm512_dpbf16_ps(a##i, x, y);
#define SUM(i) s = _mm512_add_ps(s, a##i);

static void *worker(void *arg) {
    job *j = arg;
    CHAINS(DECL)
    const __m512 f = _mm512_set1_ps(0.999f), g = _mm512_set1_ps(1e-3f);
    const __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80), y = (__m512bh)_mm512_set1_epi32(0x3a803a80);
    if (j->bf16)
        for (long i = 0; i < ITERS; i++) { CHAINS(DP) }
    else
        for (long i = 0; i < ITERS; i++) { CHAINS(FMA) }
    __m512 s = _mm512_setzero_ps();
    CHAINS(SUM)
    j->out = _mm512_reduce_add_ps(s);
    return NULL;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double gflops(int nt, int bf16) {
    pthread_t th[256];
    job jobs[256];
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now();
        for (int t = 0; t < nt; t++) {
            jobs[t].bf16 = bf16;
            pthread_create(&th[t], NULL, worker, &jobs[t]);
        }
        for (int t = 0; t < nt; t++) pthread_join(th[t], NULL);
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    return (double)nt * ITERS * 12 * (bf16 ? 64 : 32) / best / 1e9;
}

int main(int argc, char **argv) {
    int nt = argc > 1 ? atoi(argv[1]) : 1;
    if (nt < 1 || nt > 256) return 2;
    __builtin_cpu_init();
    printf("fma %.1f\n", gflops(nt, 0));
    printf("bf16 %.1f\n", __builtin_cpu_supports("avx512bf16") ? gflops(nt, 1) : 0.0);
    return 0;
}
