// The worker pool under stress: many short tasks back to back, from two threads at once,
// every index run exactly once, and a task's closure never used after forEach returns (Swift
// traps if a closure escapes `withoutActuallyEscaping`). Races in handing out parts showed
// up here as indices run twice or skipped, or as that trap.
import Foundation
import StrataNN
import Synchronization
import Testing

@Suite struct ParallelTests {
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

    @Test func errorsComeBackFromTheLowestIndex() {
        struct Failure: Error, Equatable { var index: Int }
        #expect(throws: Failure(index: 3)) {
            try Parallel.forEach(10) { (i) throws(Failure) in if i == 3 || i == 7 { throw Failure(index: i) } }
        }
    }
}
