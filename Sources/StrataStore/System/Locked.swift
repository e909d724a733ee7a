import CStrataSupport
import Synchronization

/// A value behind a `Mutex`, whose hand-offs ThreadSanitizer sees.
///
/// Synchronization's `Mutex` waits in futex calls inside the standard library, which is not
/// instrumented, so ThreadSanitizer took every access a `Mutex` guards for a race. Each hold
/// here tells it that the thread acquires, then releases, the lock (calls that are empty in
/// builds without the sanitizer). Otherwise it is `Mutex`: same contract, same cost.
struct Locked<Value: ~Copyable>: ~Copyable, Sendable {
    private let mutex: Mutex<Value>

    init(_ value: consuming sending Value) { mutex = Mutex(value) }

    /// Runs `body` with the value, holding the lock; the same as `Mutex.withLock`.
    @inline(__always)
    borrowing func withLock<Result: ~Copyable, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        // The mutex's own address names the lock (taking the value's would be an access).
        let address = withUnsafePointer(to: mutex) { UnsafeMutableRawPointer(mutating: $0) }
        return try mutex.withLock { (value) throws(E) -> sending Result in
            strata_tsan_acquire(address)
            defer { strata_tsan_release(address) }
            return try body(&value)
        }
    }
}
