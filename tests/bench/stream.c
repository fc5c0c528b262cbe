/* stream.c - a plain streaming read: n threads each XOR-reduce their share of a 1 GiB buffer
 * (64-bit words, auto-vectorised), best of 20 runs (best of 5 read up to a tenth low on this
 * shared machine, below what our own GEMV reached). Prints GB/s. The bound the decode figures
 * are compared with. Usage: stream N_THREADS */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct job {
    const uint64_t *p;
    size_t n;
    uint64_t out;
} job;

static void *reader(void *arg) {
    job *j = arg;
    uint64_t acc[8] = {0};
    for (size_t i = 0; i + 8 <= j->n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] ^= j->p[i + k];
    j->out = acc[0] ^ acc[1] ^ acc[2] ^ acc[3] ^ acc[4] ^ acc[5] ^ acc[6] ^ acc[7];
    return NULL;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    int nt = argc > 1 ? atoi(argv[1]) : 1;
    if (nt < 1 || nt > 64) return 2;
    size_t bytes = (size_t)1 << 30, n = bytes / 8;
    uint64_t *buf = malloc(bytes);
    if (!buf) return 1;
    memset(buf, 1, bytes);
    pthread_t th[64];
    job jobs[64];
    double best = 1e9;
    uint64_t sink = 0;
    for (int rep = 0; rep < 20; rep++) {
        double t0 = now();
        for (int t = 0; t < nt; t++) {
            jobs[t].p = buf + n / nt * t;
            jobs[t].n = n / nt;
            pthread_create(&th[t], NULL, reader, &jobs[t]);
        }
        for (int t = 0; t < nt; t++) {
            pthread_join(th[t], NULL);
            sink ^= jobs[t].out;
        }
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    printf("%.3f\n", (double)bytes / best / 1e9);
    free(buf);
    return sink == 42 ? 3 : 0;
}
