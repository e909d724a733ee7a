// The one place that multiplies matrices.
//
// Debian 12's OpenBLAS (0.3.21) does not know recent Xeons (family 6, model 207, this
// project's machines) and falls back to its Prescott kernels: about 40 GFLOPS on two cores
// where the hardware does several times that. Where the CPU has AVX-512, products run on
// Strata's own kernel (CStrataKernels), split by rows over `Parallel.threads` threads; elsewhere on
// OpenBLAS with its own threads. The kernel computes each element of C the same way however
// the rows are split, so results do not depend on the thread count.
import COpenBLAS
import CStrataKernels

public enum BLAS {
    /// Whether products run on Strata's AVX-512 kernel (else OpenBLAS).
    public static let usesOwnKernel = strata_sgemm_available() != 0

    /// C = alpha · op(A) · op(B) + beta · C, then + `bias` (n floats added to every row), then
    /// max(·, 0) if `relu`, then 0 wherever `mask` (m × n, row stride `ldm`) is not > 0; all
    /// row-major (`strata_sgemm`, or `cblas_sgemm` and a pass over C). `op` transposes when
    /// asked. A is m×k after op, B is k×n after op, C is m×n; `lda`, `ldb`, `ldc` are the row
    /// strides of the matrices as stored. `threads` only changes the speed.
    @inline(__always)
    public static func gemm(
        _ transA: Bool, _ transB: Bool, m: Int, n: Int, k: Int,
        alpha: Float = 1, _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, _ c: UnsafeMutablePointer<Float>, ldc: Int, bias: UnsafePointer<Float>? = nil,
        relu: Bool = false, mask: UnsafePointer<Float>? = nil, ldm: Int = 0, threads: Int = Parallel.threads
    ) {
        guard m > 0 && n > 0 else { return }
        guard usesOwnKernel else {
            var beta = beta
            if let bias {
                // OpenBLAS has no bias: put beta · C + bias in C first.
                for i in 0..<m {
                    let row = c + i * ldc
                    for j in 0..<n { row[j] = (beta == 0 ? 0 : beta * row[j]) + bias[j] }
                }
                beta = 1
            }
            if k == 0 {
                for i in 0..<m {
                    let row = c + i * ldc
                    if beta == 0 { row.update(repeating: 0, count: n) } else { for j in 0..<n { row[j] *= beta } }
                }
            } else {
                cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                            blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc))
            }
            for i in 0..<m where relu || mask != nil {
                let row = c + i * ldc
                if relu { strata_relu_forward(row, row, n) }
                if let mask { strata_relu_backward(mask + i * ldm, row, row, n) }
            }
            return
        }
        let (ta, tb) = (Int32(transA ? 1 : 0), Int32(transB ? 1 : 0))
        // strata_sgemm_threaded keeps small products on one thread.
        var epilogue = strata_epilogue(bias: bias, relu: relu ? 1 : 0, mask: mask, ldm: Int32(ldm))
        _ = strata_sgemm_threaded(Int32(threads), ta, tb, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c,
                                  Int32(ldc), &epilogue)
    }
}

/// Denormal floats flushed to zero (`strata_set_denormal_mode`), as TensorFlow does in its
/// compute threads: decaying optimizer moments otherwise reach the denormal range, where
/// every operation takes about a hundred cycles. `Parallel.forEach` runs its indices in the
/// caller's mode.
public enum Denormals {
    /// Runs `body` in this thread with flush-to-zero and denormals-are-zero set, then puts
    /// the previous mode back.
    public static func flushed<T>(_ body: () throws -> T) rethrows -> T {
        let before = strata_set_denormal_mode(STRATA_FLUSH_DENORMALS)
        defer { _ = strata_set_denormal_mode(before) }
        return try body()
    }
}
