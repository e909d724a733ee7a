// The pieces of strata_sgemm that threads.c runs in parallel: B packed once per depth block
// into a buffer all threads share, then rows of C split finely, each part packing only its
// own rows of A. Results are the same bits as strata_sgemm's.
#ifndef STRATA_SGEMM_PARTS_H
#define STRATA_SGEMM_PARTS_H
#include "strata_kernels.h"

enum { STRATA_MR = 14, STRATA_NR = 32, STRATA_KC = 256 };

/// Packs panels [first, first + count) (STRATA_NR columns each) of depth block [k0, k0 + kc)
/// of op(B) into `block`, where panel q starts at q · kc · STRATA_NR.
void strata_pack_b_block(int transB, const float *b, int ldb, int n, int k0, int kc, int first, int count, float *block);

/// Rows [first, first + rows) of C for depth block [k0, k0 + kc) of a product of depth k,
/// from B's block packed by strata_pack_b_block. Returns 0; aborts without memory.
int strata_sgemm_rows(int transA, int first, int rows, int n, int k, int k0, int kc, float alpha, const float *a, int lda,
                      const float *block, float beta, float *c, int ldc, const strata_epilogue *epilogue);

/// Handles an empty C (nothing to do) or k = 0 (C = beta · C, then the epilogue); returns 1
/// if it did, 0 if there is a product to compute.
int strata_sgemm_edge(int m, int n, int k, float beta, float *c, int ldc, const strata_epilogue *epilogue);

#endif
