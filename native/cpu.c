/* cpu.c - which kernel path this CPU can run, read from CPUID through the compiler's builtins. */
#include "tp_internal.h"

tp_cpu_path tp_cpu_best_path(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
        return TP_CPU_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return TP_CPU_AVX2;
#endif
    return TP_CPU_SCALAR;
}

const char *tp_cpu_path_name(tp_cpu_path path) {
    switch (path) {
    case TP_CPU_SCALAR: return "scalar";
    case TP_CPU_AVX2: return "avx2";
    case TP_CPU_AVX512: return "avx512";
    }
    return "unknown";
}
