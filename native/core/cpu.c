/* cpu.c - which kernel path this CPU can run, read from CPUID through the compiler's builtins. */
#include "tp_internal.h"
#include "tp_matmul.h"

tp_cpu_path tp_cpu_best_path(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx2"))
        return TP_CPU_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        return TP_CPU_AVX2;
#endif
    return TP_CPU_SCALAR;
}

/* AVX512-BF16 (vdpbf16ps) and AVX512-VNNI (vpdpbusd): used inside the AVX-512 path when present. */
bool tp_cpu_has_avx512_bf16(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return tp_cpu_best_path() == TP_CPU_AVX512 && __builtin_cpu_supports("avx512bf16");
#else
    return false;
#endif
}

bool tp_cpu_has_avx512_vnni(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return tp_cpu_best_path() == TP_CPU_AVX512 && __builtin_cpu_supports("avx512vnni");
#else
    return false;
#endif
}

bool tp_cpu_is_intel(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_is("intel");
#else
    return false;
#endif
}

const char *tp_cpu_path_name(tp_cpu_path path) {
    switch (path) {
    case TP_CPU_SCALAR: return "scalar";
    case TP_CPU_AVX2: return "avx2";
    case TP_CPU_AVX512: return "avx512";
    }
    return "unknown";
}
