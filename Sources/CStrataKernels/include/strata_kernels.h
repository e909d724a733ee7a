// Numeric kernels the Swift code cannot express with the instructions they need.
#ifndef STRATA_KERNELS_H
#define STRATA_KERNELS_H

#include <stddef.h>

/// Whether `strata_sgemm` runs on this CPU (it needs AVX-512F).
int strata_sgemm_available(void);

/// MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6) together.
#define STRATA_FLUSH_DENORMALS 0x8040u

/// The calling thread's flush-to-zero and denormals-are-zero bits (0 off x86-64). Training
/// runs with both set: optimizer moments and the gradients of idle units decay into
/// denormals, which cost x86 about a hundred cycles per operation and slowed Adam runs
/// fivefold. `strata_parallel_for` runs every index in the caller's mode, and products
/// always flush, so results never depend on which thread ran what.
unsigned strata_denormal_mode(void);

/// Sets the calling thread's two bits to those of `mode` (STRATA_FLUSH_DENORMALS, 0, or what
/// an earlier call returned) and returns the previous ones.
unsigned strata_set_denormal_mode(unsigned mode);

/// What happens to each element of C once its sum is complete, after alpha and beta: add a
/// bias (n floats, the same for every row), then ReLU, then keep it only where `mask` (m × n,
/// row stride `ldm`) is > 0 (ReLU's backward through the layer below). Fusing them saves a
/// pass over C each.
typedef struct {
    const float *bias;
    int relu;
    const float *mask;
    int ldm;
} strata_epilogue;

/// C = alpha · op(A) · op(B) + beta · C, then `epilogue` (none when NULL), for row-major
/// matrices, as `cblas_sgemm` with CblasRowMajor: op(A) is m×k, op(B) is k×n, C is m×n; `lda`, `ldb`, `ldc` are row strides
/// of the matrices as stored. Single-threaded; callers split C's rows across threads. Every
/// element of C is computed by one fixed sequence of fused multiply-adds over k, whatever
/// the split, so results do not depend on the number of threads. Denormal inputs and
/// results are flushed to zero. Aborts if it cannot allocate its packing buffers. Returns 0, or -1 when the
/// CPU lacks AVX-512F (nothing is written then).
int strata_sgemm(int transA, int transB, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                 int ldb, float beta, float *c, int ldc, const strata_epilogue *epilogue);


/// Runs body(context, i) for every i in [0, count) over up to `threads` threads: the caller
/// and workers the process keeps (started on first use; they spin for a fraction of a
/// millisecond after each task, then sleep). Returns when every call has returned. Indices
/// go to threads in no fixed order, so bodies must not depend on which runs first. A call
/// made while another is in flight (from another thread, or from inside a body) runs every
/// index on the calling thread, in order. Returns 0.
int strata_parallel_for(int threads, int count, void (*body)(void *context, int index), void *context);

/// `strata_sgemm` with C's rows split, in whole 14-row panels, over `threads` threads
/// (`strata_parallel_for`); products of fewer than 56 rows stay on the calling thread, where
/// splitting would cost more than it saves. The result is the same bits as `strata_sgemm`'s. Returns what
/// `strata_sgemm` returns.
int strata_sgemm_threaded(int threads, int transA, int transB, int m, int n, int k, float alpha,
                          const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc,
                          const strata_epilogue *epilogue);

/// y = max(x, 0) over `n` floats (y may be x).
void strata_relu_forward(const float *x, float *y, long n);

/// dx = y > 0 ? dy : 0 over `n` floats, from ReLU's output y (dx may be dy).
void strata_relu_backward(const float *y, const float *dy, float *dx, long n);

/// sums[j] = Σ_r x[r][j] over a row-major `rows × columns` matrix, adding rows in order (a
/// bias gradient).
void strata_column_sums(const float *x, int rows, int columns, float *sums);

/// DLRM's dot interaction for `batch` samples of `vectors` inputs, each `batch × dim`
/// row-major (`inputs[0]` the bottom MLP's output, then the embeddings): row s of `out`
/// (stride `ldo`) gets, if `passthrough`, inputs[0]'s row s, then <z_i, z_j> for every pair
/// j < i in order of i then j. Each product sums over the dimension in order.
/// Single-threaded; uses AVX-512F when the CPU has it.
void strata_interaction_forward(int vectors, int dim, int batch, const float *const *inputs, int passthrough, float *out,
                                int ldo);

/// The gradients of the interaction's inputs from `dy` (`batch` rows of (passthrough ? dim :
/// 0) + pairs columns, stride `lddy`): gradients[v] (`batch × dim`, overwritten) = Σ over v's
/// pairs of dy_pair · the other vector, summed in output order, plus, if `passthrough`, dy's
/// first `dim` columns for v = 0.
void strata_interaction_backward(int vectors, int dim, int batch, const float *const *inputs, int passthrough,
                                 const float *dy, int lddy, float *const *gradients);

/// How many per-thread scratch buffers (the products' packing buffers, the interaction's
/// tiles) have been freed as their threads exited, since the process started. For tests.
size_t strata_thread_buffers_released(void);

#endif
