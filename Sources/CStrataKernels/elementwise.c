// The loops around the matrix products, in C so that they get AVX-512 where the CPU has it
// (the Swift modules are compiled for baseline x86-64) and no branches: the ReLU mask of a
// trained layer is close to random, and a branch per element mispredicted half the time
// cost more than the arithmetic. Each function is compiled twice, for AVX-512F and for the
// baseline, from one body.
#include "strata_kernels.h"
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

INLINE void relu_forward_body(const float *x, float *y, long n) {
    for (long i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : 0;
}

INLINE void relu_backward_body(const float *y, const float *dy, float *dx, long n) {
    for (long i = 0; i < n; i++) dx[i] = y[i] > 0 ? dy[i] : 0;
}

INLINE void column_sums_body(const float *x, int rows, int columns, float *sums) {
    memset(sums, 0, sizeof(float) * columns);
    for (int r = 0; r < rows; r++) {
        const float *row = x + (size_t)r * columns;
        for (int j = 0; j < columns; j++) sums[j] += row[j];
    }
}

#if defined(__x86_64__)
#define AVX512 __attribute__((target("avx512f")))
AVX512 static void relu_forward_avx512(const float *x, float *y, long n) { relu_forward_body(x, y, n); }
AVX512 static void relu_backward_avx512(const float *y, const float *dy, float *dx, long n) { relu_backward_body(y, dy, dx, n); }
AVX512 static void column_sums_avx512(const float *x, int rows, int columns, float *sums) {
    column_sums_body(x, rows, columns, sums);
}
#define DISPATCH(avx512_call, baseline_call) \
    do { if (strata_sgemm_available()) { avx512_call; } else { baseline_call; } } while (0)
#else
#define DISPATCH(avx512_call, baseline_call) baseline_call
#endif

void strata_relu_forward(const float *x, float *y, long n) {
    DISPATCH(relu_forward_avx512(x, y, n), relu_forward_body(x, y, n));
}

void strata_relu_backward(const float *y, const float *dy, float *dx, long n) {
    DISPATCH(relu_backward_avx512(y, dy, dx, n), relu_backward_body(y, dy, dx, n));
}

void strata_column_sums(const float *x, int rows, int columns, float *sums) {
    DISPATCH(column_sums_avx512(x, rows, columns, sums), column_sums_body(x, rows, columns, sums));
}
