/* amx.c - may this process use AMX tiles? Portable C (no tile instruction here: the kernels are in
 * matmul_amx.c, built with the AMX flags and called only when tp_cpu_amx_usable() says yes).
 *
 * Linux hands out the 8 KiB tile-data state only to processes that ask for it:
 * arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) once per process (asking again is harmless);
 * a tile instruction before that raises SIGILL. The request is made lazily, on the first call, under
 * pthread_once: it is a per-process permission, not model state, so this one-time flag is the only
 * global it adds. */
#if defined(__linux__)
#define _GNU_SOURCE /* syscall() */
#endif
#include "tp_internal.h"
#include "tp_matmul.h"

#include <pthread.h>
#include <stdlib.h>

#if defined(__linux__) && defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define TP_ARCH_REQ_XCOMP_PERM 0x1023
#define TP_XFEATURE_XTILEDATA 18
#endif

static pthread_once_t amx_once = PTHREAD_ONCE_INIT;
static bool amx_ok; /* written once under amx_once, read after it */

static void amx_probe(void) {
    amx_ok = false;
#if defined(__linux__) && defined(__x86_64__)
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return;
    const bool amx_bf16 = (edx >> 22) & 1u, amx_tile = (edx >> 24) & 1u;
    if (!amx_bf16 || !amx_tile) return;
    /* the packing code around the tiles is AVX-512 with BF16 conversions */
    if (!tp_cpu_has_avx512_bf16()) return;
    if (syscall(SYS_arch_prctl, TP_ARCH_REQ_XCOMP_PERM, TP_XFEATURE_XTILEDATA) != 0) return;
    amx_ok = true;
#endif
}

bool tp_cpu_amx_usable(void) {
    const char *env = getenv("TILEPASS_AMX"); /* "0": use the AVX512-BF16 fallback (tests, comparisons) */
    if (env && env[0] == '0') return false;
    pthread_once(&amx_once, amx_probe);
    return amx_ok;
}
