// A blocked single-precision matrix product for AVX-512, in the style of BLIS (Van Zee and
// van de Geijn 2015): B is packed into panels of 32 columns that stay in L1, A into panels
// of 14 rows that stay in L2, and a 14×32 micro-kernel keeps its 28 accumulators in
// registers, issuing two fused multiply-adds per broadcast element of A.
#include "strata_kernels.h"
#include "sgemm_parts.h"
#include "thread_buffers.h"
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

enum { MR = STRATA_MR, NR = STRATA_NR, KC = STRATA_KC, MC = STRATA_MR * 16 };

static int available = 0;

__attribute__((constructor)) static void detect(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    available = __builtin_cpu_supports("avx512f");
#endif
}

int strata_sgemm_available(void) { return available; }

unsigned strata_denormal_mode(void) {
#if defined(__x86_64__)
    return _mm_getcsr() & STRATA_FLUSH_DENORMALS;
#else
    return 0;
#endif
}

unsigned strata_set_denormal_mode(unsigned mode) {
#if defined(__x86_64__)
    unsigned csr = _mm_getcsr();
    _mm_setcsr((csr & ~STRATA_FLUSH_DENORMALS) | (mode & STRATA_FLUSH_DENORMALS));
    return csr & STRATA_FLUSH_DENORMALS;
#else
    return 0;
#endif
}

#if defined(__x86_64__)

#define PD(x) _mm512_castps_pd(x)
#define PS(x) _mm512_castpd_ps(x)

/// Transposes the 16 × 16 matrix whose rows are r[0..16).
__attribute__((target("avx512f"))) static inline void transpose16(__m512 r[16]) {
    __m512 t[16], u[16], v[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        u[4 * i] = PS(_mm512_unpacklo_pd(PD(t[4 * i]), PD(t[4 * i + 2])));
        u[4 * i + 1] = PS(_mm512_unpackhi_pd(PD(t[4 * i]), PD(t[4 * i + 2])));
        u[4 * i + 2] = PS(_mm512_unpacklo_pd(PD(t[4 * i + 1]), PD(t[4 * i + 3])));
        u[4 * i + 3] = PS(_mm512_unpackhi_pd(PD(t[4 * i + 1]), PD(t[4 * i + 3])));
    }
    for (int i = 0; i < 4; i++) {
        v[i] = _mm512_shuffle_f32x4(u[i], u[i + 4], 0x88);
        v[i + 4] = _mm512_shuffle_f32x4(u[i], u[i + 4], 0xdd);
        v[i + 8] = _mm512_shuffle_f32x4(u[i + 8], u[i + 12], 0x88);
        v[i + 12] = _mm512_shuffle_f32x4(u[i + 8], u[i + 12], 0xdd);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(v[i], v[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(v[i], v[i + 8], 0xdd);
    }
}

/// Loads 16 depths (fewer at the end: the rest reads as 0) of `count` ≤ 16 rows of a
/// row-major matrix, rows past `count` as 0, and transposes them: r[t] holds depth t.
__attribute__((target("avx512f"))) static inline void load_transposed(const float *first, size_t stride, int count,
                                                                       int depths, __m512 r[16]) {
    __mmask16 m = (__mmask16)((1u << depths) - 1);
    for (int i = 0; i < 16; i++) r[i] = i < count ? _mm512_maskz_loadu_ps(m, first + i * stride) : _mm512_setzero_ps();
    transpose16(r);
}

/// pack_a for A as stored (not transposed), 16 depths at a time through registers: each
/// depth of a panel gathers one element from each of MR rows, which one at a time is a
/// strided scalar copy.
__attribute__((target("avx512f")))
static void pack_a_rows(const float *a, int lda, int i0, int rows, int k0, int kc, float *out) {
    for (int p = 0; p < rows; p += MR) {
        int h = rows - p < MR ? rows - p : MR;
        const float *panel = a + (size_t)(i0 + p) * lda + k0;
        for (int kk = 0; kk < kc; kk += 16) {
            int d = kc - kk < 16 ? kc - kk : 16;
            __m512 r[16];
            load_transposed(panel + kk, (size_t)lda, h, d, r);
            for (int t = 0; t < d; t++) _mm512_mask_storeu_ps(out + (size_t)(kk + t) * MR, (1u << MR) - 1, r[t]);
        }
        out += (size_t)kc * MR;
    }
}

/// pack_b for B stored transposed (n × k), the same way: 16 depths of 16 columns at a time.
__attribute__((target("avx512f")))
static void pack_b_columns(const float *b, int ldb, int k0, int kc, int j0, int cols, float *out) {
    for (int q = 0; q < cols; q += NR) {
        int w = cols - q < NR ? cols - q : NR;
        for (int kk = 0; kk < kc; kk += 16) {
            int d = kc - kk < 16 ? kc - kk : 16;
            for (int half = 0; half < NR / 16; half++) {
                int count = w - half * 16;
                __m512 r[16];
                load_transposed(b + (size_t)(j0 + q + half * 16) * ldb + k0 + kk, (size_t)ldb,
                                count < 0 ? 0 : count > 16 ? 16 : count, d, r);
                for (int t = 0; t < d; t++) _mm512_storeu_ps(out + (size_t)(kk + t) * NR + half * 16, r[t]);
            }
        }
        out += (size_t)kc * NR;
    }
}

/// Packs rows [i0, i0 + rows) × depths [k0, k0 + kc) of op(A) for A stored transposed
/// (k × m): each depth of a panel is MR consecutive floats, zero-padded to a whole panel.
__attribute__((target("avx512f")))
static void pack_a_columns(const float *a, int lda, int i0, int rows, int k0, int kc, float *out) {
    for (int p = 0; p < rows; p += MR) {
        int h = rows - p < MR ? rows - p : MR;
        __mmask16 m = (__mmask16)((1u << h) - 1);
        const float *panel = a + (size_t)k0 * lda + i0 + p;
        for (int kk = 0; kk < kc; kk++)
            _mm512_mask_storeu_ps(out + (size_t)kk * MR, (1u << MR) - 1, _mm512_maskz_loadu_ps(m, panel + (size_t)kk * lda));
        out += (size_t)kc * MR;
    }
}

/// Packs depths [k0, k0 + kc) × columns [j0, j0 + cols) of op(B) for B as stored (k × n) in
/// panels of NR columns, depth after depth, zero-padded to a whole panel.
__attribute__((target("avx512f")))
static void pack_b_rows(const float *b, int ldb, int k0, int kc, int j0, int cols, float *out) {
    for (int q = 0; q < cols; q += NR) {
        int w = cols - q < NR ? cols - q : NR;
        __mmask16 m0 = w >= 16 ? 0xFFFF : (__mmask16)((1u << w) - 1);
        __mmask16 m1 = w <= 16 ? 0 : (__mmask16)((1u << (w - 16)) - 1);
        if (w == NR) m1 = 0xFFFF;
        const float *panel = b + (size_t)k0 * ldb + j0 + q;
        for (int kk = 0; kk < kc; kk++) {
            const float *row = panel + (size_t)kk * ldb;
            _mm512_storeu_ps(out, _mm512_maskz_loadu_ps(m0, row));
            _mm512_storeu_ps(out + 16, _mm512_maskz_loadu_ps(m1, row + 16));
            out += NR;
        }
    }
}

/// c[0..h) × [0..w) = alpha · (a · b) + beta · c for one MR × NR block, then the epilogue's
/// bias (`bias`: this block's columns, or NULL), ReLU and mask (`mask`: this block's first
/// element, or NULL) when `last` (the sum is complete).
__attribute__((target("avx512f")))
static void micro(int kc, const float *ap, const float *bp, float alpha, float beta, const float *bias, int relu,
                  const float *mask, int ldm, float *c, int ldc, int h, int w) {
    __m512 acc[MR][2];
    // Unrolled, so the accumulators start in registers rather than as a zeroed stack array.
#pragma GCC unroll 14
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
    __m512 bias0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
    __m512 bias1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
    // Unrolled with constant indices, so that no accumulator lives on the stack.
#pragma GCC unroll 14
    for (int r = 0; r < MR; r++) {
        if (r >= h) break;
        float *row = c + (size_t)r * ldc;
        __m512 v0 = _mm512_mul_ps(va, acc[r][0]), v1 = _mm512_mul_ps(va, acc[r][1]);
        if (beta != 0) {
            v0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, row), v0);
            v1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, row + 16), v1);
        }
        if (bias) {
            v0 = _mm512_add_ps(v0, bias0);
            v1 = _mm512_add_ps(v1, bias1);
        }
        if (relu) {
            v0 = _mm512_max_ps(v0, _mm512_setzero_ps());
            v1 = _mm512_max_ps(v1, _mm512_setzero_ps());
        }
        if (mask) {
            const float *mr = mask + (size_t)r * ldm;
            v0 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(m0, mr), _mm512_setzero_ps(), _CMP_GT_OQ), v0);
            v1 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(m1, mr + 16), _mm512_setzero_ps(), _CMP_GT_OQ), v1);
        }
        _mm512_mask_storeu_ps(row, m0, v0);
        _mm512_mask_storeu_ps(row + 16, m1, v1);
    }
}

void strata_pack_b_block(int transB, const float *b, int ldb, int n, int k0, int kc, int first, int count, float *block) {
    int j0 = first * NR, cols = (first + count) * NR < n ? count * NR : n - j0;
    if (cols <= 0) return;
    float *out = block + (size_t)first * kc * NR;
    if (transB) pack_b_columns(b, ldb, k0, kc, j0, cols, out); else pack_b_rows(b, ldb, k0, kc, j0, cols, out);
}

int strata_sgemm_rows(int transA, int first, int rows, int n, int k, int k0, int kc, float alpha, const float *a, int lda,
                      const float *block, float beta, float *c, int ldc, const strata_epilogue *epilogue) {
    float *ap = strata_thread_buffer(STRATA_BUFFER_PACKED_A, (size_t)KC * MC * sizeof(float));
    if (!ap) abort();  // out of memory for a packing buffer of 224 KiB
    const float *bias = epilogue ? epilogue->bias : NULL, *mask = epilogue ? epilogue->mask : NULL;
    int relu = epilogue ? epilogue->relu : 0, ldm = epilogue ? epilogue->ldm : 0;
    // After the first depth block, later ones add to what is there. The bias goes in with the
    // first depth block, ReLU and mask on the last.
    float b_now = k0 == 0 ? beta : 1;
    int last = k0 + kc == k;
    // Products always flush denormals, whatever thread runs them (see strata_set_denormal_mode).
    unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | STRATA_FLUSH_DENORMALS);
    for (int i0 = first; i0 < first + rows; i0 += MC) {
        int part = first + rows - i0 < MC ? first + rows - i0 : MC;
        if (transA) pack_a_columns(a, lda, i0, part, k0, kc, ap); else pack_a_rows(a, lda, i0, part, k0, kc, ap);
        for (int j = 0; j < n; j += NR) {
            int w = n - j < NR ? n - j : NR;
            const float *bpanel = block + (size_t)(j / NR) * kc * NR;
            for (int p = 0; p < part; p += MR) {
                int h = part - p < MR ? part - p : MR;
                micro(kc, ap + (size_t)(p / MR) * kc * MR, bpanel, alpha, b_now, k0 == 0 && bias ? bias + j : NULL,
                      last && relu, last && mask ? mask + (size_t)(i0 + p) * ldm + j : NULL, ldm,
                      c + (size_t)(i0 + p) * ldc + j, ldc, h, w);
            }
        }
    }
    _mm_setcsr(csr);
    return 0;
}

int strata_sgemm_edge(int m, int n, int k, float beta, float *c, int ldc, const strata_epilogue *epilogue) {
    if (m <= 0 || n <= 0) return 1;
    if (k > 0) return 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float v = beta == 0 ? 0 : beta * c[(size_t)i * ldc + j];
            if (epilogue && epilogue->bias) v += epilogue->bias[j];
            if (epilogue && epilogue->relu) v = v > 0 ? v : 0;
            if (epilogue && epilogue->mask && !(epilogue->mask[(size_t)i * epilogue->ldm + j] > 0)) v = 0;
            c[(size_t)i * ldc + j] = v;
        }
    return 1;
}

int strata_sgemm(int transA, int transB, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                 int ldb, float beta, float *c, int ldc, const strata_epilogue *epilogue) {
    if (!available) return -1;
    if (strata_sgemm_edge(m, n, k, beta, c, ldc, epilogue)) return 0;
    int panels = (n + NR - 1) / NR;
    float *block = strata_thread_buffer(STRATA_BUFFER_PACKED_B, (size_t)KC * panels * NR * sizeof(float));
    if (!block) abort();
    for (int k0 = 0; k0 < k; k0 += KC) {
        int kc = k - k0 < KC ? k - k0 : KC;
        strata_pack_b_block(transB, b, ldb, n, k0, kc, 0, panels, block);
        if (strata_sgemm_rows(transA, 0, m, n, k, k0, kc, alpha, a, lda, block, beta, c, ldc, epilogue) != 0) return -1;
    }
    return 0;
}

#else
int strata_sgemm(int transA, int transB, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                 int ldb, float beta, float *c, int ldc, const strata_epilogue *epilogue) {
    return -1;
}
void strata_pack_b_block(int transB, const float *b, int ldb, int n, int k0, int kc, int first, int count, float *block) {}
int strata_sgemm_rows(int transA, int first, int rows, int n, int k, int k0, int kc, float alpha, const float *a, int lda,
                      const float *block, float beta, float *c, int ldc, const strata_epilogue *epilogue) {
    return -1;
}
int strata_sgemm_edge(int m, int n, int k, float beta, float *c, int ldc, const strata_epilogue *epilogue) { return 1; }
#endif
