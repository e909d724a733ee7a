// DLRM's dot interaction, sixteen samples at a time: each block's vectors are transposed
// into registers' shape (vector × dimension × 16 lanes, 27 KB for Criteo's shape, so it stays
// in L1) and every pair's dot product is sixteen lanes of fused multiply-adds. Laid out over
// the whole batch instead, the pair loops stream the batch from L2 or memory once per pair.
#include "strata_kernels.h"
#include "thread_buffers.h"
#include <stdlib.h>
#include <string.h>

typedef float lanes __attribute__((vector_size(64), aligned(64)));
enum { L = 16 };
#define INLINE static inline __attribute__((always_inline))

// Samples [s0, s0 + n) of every input into z[v * dim + k], lane s; lanes from n on are 0.
INLINE void load(int vectors, int dim, const float *const *inputs, int s0, int n, lanes *z) {
    if (n < L) memset(z, 0, sizeof(lanes) * (size_t)vectors * dim);
    for (int v = 0; v < vectors; v++)
        for (int s = 0; s < n; s++) {
            const float *row = inputs[v] + (size_t)(s0 + s) * dim;
            for (int k = 0; k < dim; k++) ((float *)&z[v * dim + k])[s] = row[k];
        }
}

INLINE void forward_body(int vectors, int dim, int batch, const float *const *inputs, int passthrough, float *out, int ldo) {
    int pairs = vectors * (vectors - 1) / 2;
    lanes *z = strata_thread_buffer(STRATA_BUFFER_TILES, ((size_t)vectors * dim + pairs) * sizeof(lanes));
    if (!z) abort();
    lanes *products = z + (size_t)vectors * dim;
    for (int s0 = 0; s0 < batch; s0 += L) {
        int n = batch - s0 < L ? batch - s0 : L;
        load(vectors, dim, inputs, s0, n, z);
        int p = 0;
        for (int i = 1; i < vectors; i++)
            for (int j = 0; j < i; j++) {
                lanes sum = {0};
                for (int k = 0; k < dim; k++) sum += z[i * dim + k] * z[j * dim + k];
                products[p++] = sum;
            }
        for (int s = 0; s < n; s++) {
            float *row = out + (size_t)(s0 + s) * ldo;
            if (passthrough) memcpy(row, inputs[0] + (size_t)(s0 + s) * dim, sizeof(float) * dim);
            float *tail = row + (passthrough ? dim : 0);
            for (int q = 0; q < pairs; q++) tail[q] = ((const float *)&products[q])[s];
        }
    }
}

INLINE void backward_body(int vectors, int dim, int batch, const float *const *inputs, int passthrough, const float *dy,
                          int lddy, float *const *gradients) {
    int pairs = vectors * (vectors - 1) / 2;
    lanes *z = strata_thread_buffer(STRATA_BUFFER_TILES, (2 * (size_t)vectors * dim + pairs) * sizeof(lanes));
    if (!z) abort();
    lanes *gz = z + (size_t)vectors * dim, *g = gz + (size_t)vectors * dim;
    for (int s0 = 0; s0 < batch; s0 += L) {
        int n = batch - s0 < L ? batch - s0 : L;
        load(vectors, dim, inputs, s0, n, z);
        if (n < L) memset(g, 0, sizeof(lanes) * pairs);
        for (int s = 0; s < n; s++) {
            const float *row = dy + (size_t)(s0 + s) * lddy + (passthrough ? dim : 0);
            for (int q = 0; q < pairs; q++) ((float *)&g[q])[s] = row[q];
        }
        memset(gz, 0, sizeof(lanes) * (size_t)vectors * dim);
        // T_ij = <z_i, z_j>: dz_i += dT_ij · z_j, dz_j += dT_ij · z_i, pairs in output order.
        int p = 0;
        for (int i = 1; i < vectors; i++)
            for (int j = 0; j < i; j++) {
                lanes t = g[p++];
                for (int k = 0; k < dim; k++) {
                    gz[i * dim + k] += t * z[j * dim + k];
                    gz[j * dim + k] += t * z[i * dim + k];
                }
            }
        for (int v = 0; v < vectors; v++)
            for (int s = 0; s < n; s++) {
                float *row = gradients[v] + (size_t)(s0 + s) * dim;
                for (int k = 0; k < dim; k++) row[k] = ((const float *)&gz[v * dim + k])[s];
            }
        // The bottom output also passes straight through to the first columns.
        for (int s = 0; s < n && passthrough; s++) {
            float *row = gradients[0] + (size_t)(s0 + s) * dim;
            const float *d = dy + (size_t)(s0 + s) * lddy;
            for (int k = 0; k < dim; k++) row[k] += d[k];
        }
    }
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static void forward_avx512(int v, int d, int b, const float *const *in, int pass, float *out,
                                                              int ldo) {
    forward_body(v, d, b, in, pass, out, ldo);
}
__attribute__((target("avx512f"))) static void backward_avx512(int v, int d, int b, const float *const *in, int pass,
                                                               const float *dy, int lddy, float *const *g) {
    backward_body(v, d, b, in, pass, dy, lddy, g);
}
#endif

void strata_interaction_forward(int vectors, int dim, int batch, const float *const *inputs, int passthrough, float *out,
                                int ldo) {
#if defined(__x86_64__)
    if (strata_sgemm_available()) { forward_avx512(vectors, dim, batch, inputs, passthrough, out, ldo); return; }
#endif
    forward_body(vectors, dim, batch, inputs, passthrough, out, ldo);
}

void strata_interaction_backward(int vectors, int dim, int batch, const float *const *inputs, int passthrough,
                                 const float *dy, int lddy, float *const *gradients) {
#if defined(__x86_64__)
    if (strata_sgemm_available()) { backward_avx512(vectors, dim, batch, inputs, passthrough, dy, lddy, gradients); return; }
#endif
    backward_body(vectors, dim, batch, inputs, passthrough, dy, lddy, gradients);
}
