// Intra-op parallelism: one pool of threads (`strata_parallel_for`) for matrix products and
// for the work around them, so that nothing oversubscribes the cores.
import COpenBLAS
import CStrataKernels
import Synchronization

public enum Parallel {
    private static let count = Atomic<Int>(2)

    /// Threads a step uses, the caller included (also OpenBLAS's, where it does the products).
    /// Results never depend on it.
    public static var threads: Int {
        get { count.load(ordering: .relaxed) }
        set {
            count.store(max(1, newValue), ordering: .relaxed)
            openblas_set_num_threads(Int32(max(1, newValue)))
        }
    }

    /// Calls `body(i)` for every i in 0..<`iterations`, spread over `threads` threads, and
    /// returns when all have returned; rethrows the error of the lowest index that threw. Each
    /// index must touch its own data: they run in no fixed order.
    public static func forEach<E: Error>(_ iterations: Int, _ body: (Int) throws(E) -> Void) throws(E) {
        guard iterations > 1 && threads > 1 else {
            for i in 0..<iterations { try body(i) }
            return
        }
        // Error slots on the stack: this runs several times a step, and must not allocate.
        try withUnsafeTemporaryAllocation(of: E?.self, capacity: iterations) { (errors) throws(E) in
            errors.initialize(repeating: nil)
            defer { _ = errors.deinitialize() }
            withoutActuallyEscaping(body) { body in
                // Each index writes only its own error slot.
                var run: (Int) -> Void = { index in
                    do throws(E) { try body(index) } catch { errors[index] = error }
                }
                withUnsafeMutablePointer(to: &run) { pointer in
                    _ = strata_parallel_for(Int32(threads), Int32(iterations), { raw, index in
                        raw!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(Int(index))
                    }, pointer)
                }
            }
            if let error = errors.lazy.compactMap({ $0 }).first { throw error }
        }
    }
}
