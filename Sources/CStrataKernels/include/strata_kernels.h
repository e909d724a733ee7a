// Numeric kernels the Swift code cannot express with the instructions they need.
#ifndef STRATA_KERNELS_H
#define STRATA_KERNELS_H

/// Whether `strata_sgemm` runs on this CPU (it needs AVX-512F).
int strata_sgemm_available(void);

/// C = alpha · op(A) · op(B) + beta · C for row-major matrices, as `cblas_sgemm` with
/// CblasRowMajor: op(A) is m×k, op(B) is k×n, C is m×n; `lda`, `ldb`, `ldc` are row strides
/// of the matrices as stored. Single-threaded; callers split C's rows across threads. Every
/// element of C is computed by one fixed sequence of fused multiply-adds over k, whatever
/// the split, so results do not depend on the number of threads. Returns 0, or -1 when the
/// CPU lacks AVX-512F (nothing is written then).
int strata_sgemm(int transA, int transB, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);

#endif
