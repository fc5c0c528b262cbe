/* tp_check.h - the pass/fail counters and CHECK macro of the C tests (each test is its own program). */
#ifndef TP_CHECK_H
#define TP_CHECK_H

#include <stdio.h>

static int n_pass, n_fail;

#define CHECK(cond, what)                                                                          \
    do {                                                                                           \
        if (cond) {                                                                                \
            n_pass++;                                                                              \
        } else {                                                                                   \
            n_fail++;                                                                              \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, what);                         \
        }                                                                                          \
    } while (0)

#endif
