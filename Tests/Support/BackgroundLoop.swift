// A body run again and again on a thread of its own, beside a test's main work.
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Runs `body` in a loop on its own pthread until `stop()` or until `body` returns false.
///
/// A dedicated thread, not a Dispatch worker: under a loaded test run (the suites run in
/// parallel on 2 cores) a block sent to `DispatchQueue.global()` may not start until the
/// test that waits for it has finished, so the test sees no concurrency at all.
public final class BackgroundLoop: @unchecked Sendable {
    private var thread = pthread_t()
    private let body: @Sendable () -> Bool
    private let stopping = Atomic<Bool>(false)
    private let count = Atomic<Int>(0)
    private let ended = Atomic<Bool>(false)
    private var joined = false

    public init(_ body: @escaping @Sendable () -> Bool) {
        self.body = body
        let me = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { p in
            let loop = Unmanaged<BackgroundLoop>.fromOpaque(p!).takeRetainedValue()
            while !loop.stopping.load(ordering: .relaxed) {
                guard loop.body() else { break }
                loop.count.add(1, ordering: .releasing)
            }
            loop.ended.store(true, ordering: .releasing)
            return nil
        }, me)
        precondition(rc == 0, "pthread_create: \(rc)")
    }

    /// How many times `body` has completed.
    public var iterations: Int { count.load(ordering: .acquiring) }

    /// Blocks until `body` has completed more than `count` times (or the loop has ended), so
    /// the caller's work and the loop's are sure to overlap however the threads are scheduled.
    public func waitForIteration(after count: Int) {
        while iterations <= count && !ended.load(ordering: .acquiring) { sched_yield() }
    }

    /// Ends the loop after the current iteration and joins the thread. Idempotent; the
    /// owner calls it, never `body`.
    public func stop() {
        stopping.store(true, ordering: .relaxed)
        if !joined {
            joined = true
            pthread_join(thread, nil)
        }
    }
}
