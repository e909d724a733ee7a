// The worker pool under stress: many short tasks back to back, from two threads at once,
// every index run exactly once, and a task's closure never used after forEach returns (Swift
// traps if a closure escapes `withoutActuallyEscaping`). Races in handing out parts showed
// up here as indices run twice or skipped, or as that trap.
import Foundation
import StrataNN
import CStrataKernels
import Synchronization
import Testing

@Suite struct ParallelTests {
    /// The matrix product's per-thread packing buffers are freed when their thread exits:
    /// each of 64 threads packs a block of B once and exits, and its buffer is released.
    /// (A count, not resident memory: other suites allocate beside this one.)
    @Test func threadsThatExitLeaveNoPackingBuffersBehind() throws {
        try #require(BLAS.usesOwnKernel, "this machine's product is OpenBLAS's, whose buffers are its own")
        let before = strata_thread_buffers_released()
        for _ in 0..<64 {
            let done = DispatchSemaphore(value: 0)
            Thread {
                Self.product()
                done.signal()
            }.start()
            done.wait()
        }
        // A thread's buffers are freed as it exits, just after it signals: wait for that.
        var released = 0
        for _ in 0..<1000 {
            released = strata_thread_buffers_released() - before
            if released >= 64 { break }
            usleep(10_000)
        }
        #expect(released >= 64, "\(released) of 64 exited threads' buffers were freed")
    }

    /// A 64 × 4096 × 256 product on the calling thread alone: B's packed block is 4 MiB.
    static func product() {
        let (m, n, k) = (64, 4096, 256)
        let a = [Float](repeating: 0.5, count: m * k), b = [Float](repeating: 0.25, count: n * k)
        var c = [Float](repeating: 0, count: m * n)
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                BLAS.gemm(false, true, m: m, n: n, k: k, a.baseAddress!, lda: k, b.baseAddress!, ldb: k, &c, ldc: n, threads: 1)
            }
        }
        precondition(c[0] == 0.125 * Float(k))
    }

    @Test func everyIndexRunsExactlyOnce() throws {
        let rounds = 20_000
        let failures = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 2) { caller in
            var counts = [Int](repeating: 0, count: 64)
            for round in 0..<rounds {
                let n = 1 + (round * 7 + caller) % 40
                counts.withUnsafeMutableBufferPointer { c in
                    for i in 0..<n { c[i] = 0 }
                    let base = c.baseAddress!
                    Parallel.forEach(n) { i in base[i] += 1 }
                    for i in 0..<n where c[i] != 1 { failures.add(1, ordering: .relaxed) }
                }
            }
        }
        #expect(failures.load(ordering: .relaxed) == 0, "indices run other than once")
    }

    /// Indices run in the caller's denormal mode, whichever thread runs them: the workers were
    /// started by a caller in the other mode.
    @Test func indicesRunInTheCallersDenormalMode() {
        let n = 64
        var halves = [Float](repeating: 1, count: n)
        let tiny = [Float](repeating: Float.leastNormalMagnitude, count: n)
        Parallel.forEach(n) { _ in }  // starts the workers, if not yet, outside the flushed mode
        for flushed in [true, false, true] {
            halves.withUnsafeMutableBufferPointer { h in
                tiny.withUnsafeBufferPointer { t in
                    let (out, input) = (h.baseAddress!, t.baseAddress!)
                    let body = { Parallel.forEach(n) { i in out[i] = input[i] * 0.5 } }
                    if flushed { Denormals.flushed(body) } else { body() }
                }
            }
            let zeros = halves.filter { $0 == 0 }.count
            #expect(zeros == (flushed ? n : 0), "flushed \(flushed): \(zeros) of \(n) halves of the smallest normal are 0")
        }
    }

    @Test func errorsComeBackFromTheLowestIndex() {
        struct Failure: Error, Equatable { var index: Int }
        #expect(throws: Failure(index: 3)) {
            try Parallel.forEach(10) { (i) throws(Failure) in if i == 3 || i == 7 { throw Failure(index: i) } }
        }
    }
}
