// A blocked single-precision matrix product for AVX-512, in the style of BLIS (Van Zee and
// van de Geijn 2015): B is packed into panels of 32 columns that stay in L1, A into panels
// of 14 rows that stay in L2, and a 14×32 micro-kernel keeps its 28 accumulators in
// registers, issuing two fused multiply-adds per broadcast element of A.
#include "strata_kernels.h"
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

// MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6).
#define STRATA_FTZ_DAZ 0x8040u

enum { MR = 14, NR = 32, KC = 256, MC = 14 * 16 };

static int available = 0;

__attribute__((constructor)) static void detect(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    available = __builtin_cpu_supports("avx512f");
#endif
}

int strata_sgemm_available(void) { return available; }

int strata_flush_denormals(int on) {
#if defined(__x86_64__)
    unsigned csr = _mm_getcsr();
    _mm_setcsr(on ? csr | STRATA_FTZ_DAZ : csr & ~STRATA_FTZ_DAZ);
    return (csr & STRATA_FTZ_DAZ) == STRATA_FTZ_DAZ;
#else
    return 0;
#endif
}

#if defined(__x86_64__)

// Element (i, kk) of op(A) and (kk, j) of op(B).
#define A_AT(i, kk) (transA ? a[(size_t)(kk) * lda + (i)] : a[(size_t)(i) * lda + (kk)])
#define B_AT(kk, j) (transB ? b[(size_t)(j) * ldb + (kk)] : b[(size_t)(kk) * ldb + (j)])

/// Packs rows [i0, i0 + rows) × depths [k0, k0 + kc) of op(A) in panels of MR rows, depth
/// after depth, zero-padded to a whole panel.
static void pack_a(int transA, const float *a, int lda, int i0, int rows, int k0, int kc, float *out) {
    for (int p = 0; p < rows; p += MR) {
        int h = rows - p < MR ? rows - p : MR;
        for (int kk = 0; kk < kc; kk++) {
            for (int r = 0; r < h; r++) out[r] = A_AT(i0 + p + r, k0 + kk);
            for (int r = h; r < MR; r++) out[r] = 0;
            out += MR;
        }
    }
}

/// Packs depths [k0, k0 + kc) × columns [j0, j0 + cols) of op(B) in panels of NR columns,
/// depth after depth, zero-padded to a whole panel.
static void pack_b(int transB, const float *b, int ldb, int k0, int kc, int j0, int cols, float *out) {
    for (int q = 0; q < cols; q += NR) {
        int w = cols - q < NR ? cols - q : NR;
        for (int kk = 0; kk < kc; kk++) {
            if (!transB && w == NR) {
                memcpy(out, b + (size_t)(k0 + kk) * ldb + j0 + q, NR * sizeof(float));
            } else {
                for (int s = 0; s < w; s++) out[s] = B_AT(k0 + kk, j0 + q + s);
                for (int s = w; s < NR; s++) out[s] = 0;
            }
            out += NR;
        }
    }
}

/// c[0..h) × [0..w) = alpha · (a · b) + beta · c for one MR × NR block.
__attribute__((target("avx512f")))
static void micro(int kc, const float *ap, const float *bp, float alpha, float beta, float *c, int ldc, int h, int w) {
    __m512 acc[MR][2];
    for (int r = 0; r < MR; r++) { acc[r][0] = _mm512_setzero_ps(); acc[r][1] = _mm512_setzero_ps(); }
    for (int kk = 0; kk < kc; kk++) {
        __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16);
#pragma GCC unroll 14
        for (int r = 0; r < MR; r++) {
            __m512 x = _mm512_set1_ps(ap[r]);
            acc[r][0] = _mm512_fmadd_ps(x, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(x, b1, acc[r][1]);
        }
        ap += MR;
        bp += NR;
    }
    __mmask16 m0 = w >= 16 ? 0xFFFF : (__mmask16)((1u << w) - 1);
    __mmask16 m1 = w <= 16 ? 0 : (w >= 32 ? 0xFFFF : (__mmask16)((1u << (w - 16)) - 1));
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int r = 0; r < h; r++) {
        float *row = c + (size_t)r * ldc;
        __m512 v0 = _mm512_mul_ps(va, acc[r][0]), v1 = _mm512_mul_ps(va, acc[r][1]);
        if (beta != 0) {
            v0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, row), v0);
            v1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, row + 16), v1);
        }
        _mm512_mask_storeu_ps(row, m0, v0);
        _mm512_mask_storeu_ps(row + 16, m1, v1);
    }
}

// Packing buffers, one pair per thread, kept between calls: allocating them anew each time
// costs fresh zeroed pages from the kernel on every product.
static __thread float *a_buffer, *b_buffer;
static __thread size_t a_capacity, b_capacity;

static float *scratch(float **buffer, size_t *capacity, size_t floats) {
    if (*capacity < floats) {
        free(*buffer);
        *buffer = aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64);
        *capacity = *buffer ? floats : 0;
    }
    return *buffer;
}

int strata_sgemm(int transA, int transB, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    if (!available) return -1;
    if (m <= 0 || n <= 0) return 0;
    if (k <= 0) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) c[(size_t)i * ldc + j] = beta == 0 ? 0 : beta * c[(size_t)i * ldc + j];
        return 0;
    }
    int npad = (n + NR - 1) / NR * NR;
    float *bp = scratch(&b_buffer, &b_capacity, (size_t)KC * npad);
    float *ap = scratch(&a_buffer, &a_capacity, (size_t)KC * MC);
    if (!bp || !ap) return -1;
    // Whatever thread runs this part: the same arithmetic as the caller's (see strata_flush_denormals).
    unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | STRATA_FTZ_DAZ);
    for (int k0 = 0; k0 < k; k0 += KC) {
        int kc = k - k0 < KC ? k - k0 : KC;
        // After the first depth block, later ones add to what is there.
        float b_now = k0 == 0 ? beta : 1;
        pack_b(transB, b, ldb, k0, kc, 0, n, bp);
        for (int i0 = 0; i0 < m; i0 += MC) {
            int rows = m - i0 < MC ? m - i0 : MC;
            pack_a(transA, a, lda, i0, rows, k0, kc, ap);
            for (int j = 0; j < n; j += NR) {
                int w = n - j < NR ? n - j : NR;
                const float *bpanel = bp + (size_t)(j / NR) * kc * NR;
                for (int p = 0; p < rows; p += MR) {
                    int h = rows - p < MR ? rows - p : MR;
                    micro(kc, ap + (size_t)(p / MR) * kc * MR, bpanel, alpha, b_now, c + (size_t)(i0 + p) * ldc + j, ldc, h, w);
                }
            }
        }
    }
    _mm_setcsr(csr);
    return 0;
}

#else
int strata_sgemm(int transA, int transB, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    return -1;
}
#endif
