#if canImport(Glibc)
import Glibc
#endif

/// The store-wide reader-writer lock that makes checkpoints consistent: every batch call holds
/// it shared; `checkpoint`, `close` and table creation hold it exclusively, so they see every
/// table between batches, never in the middle of one. Writers are preferred, so a stream of
/// lookups cannot starve a checkpoint. Not recursive: nothing holding it calls back into the
/// public API. A store opened for reading takes it exclusively for batches too: its one LMDB
/// snapshot serves one thread at a time.
final class CheckpointLock: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>
    private let exclusiveOnly: Bool

    init(exclusiveOnly: Bool = false) {
        self.exclusiveOnly = exclusiveOnly
        lock = .allocate(capacity: 1)
        var attributes = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attributes)
        pthread_rwlockattr_setkind_np(&attributes, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        pthread_rwlock_init(lock, &attributes)
        pthread_rwlockattr_destroy(&attributes)
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    @inline(__always)
    func shared<R: ~Copyable, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        if exclusiveOnly { pthread_rwlock_wrlock(lock) } else { pthread_rwlock_rdlock(lock) }
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    func exclusive<R: ~Copyable, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}

/// A value guarded by a mutex, with a condition to wait on until it changes: what the
/// checkpoint writer hands between threads (a turn taken on one thread and given back on
/// another, which a mutex cannot be).
@_spi(Testing) public final class Monitor<State>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private var state: State

    @_spi(Testing) public init(_ state: State) {
        self.state = state
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    /// Waits until `ready(state)`, then runs `body` on the state and wakes every waiter.
    @_spi(Testing) public func when<R>(_ ready: (State) -> Bool, _ body: (inout State) -> R) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while !ready(state) { pthread_cond_wait(condition, mutex) }
        let result = body(&state)
        pthread_cond_broadcast(condition)
        return result
    }

    /// The state now, without waiting.
    @_spi(Testing) public var current: State {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return state
    }
}

/// The right to write a checkpoint: taken when a checkpoint freezes rows, given back (maybe
/// on another thread) once it is durable or has failed. One checkpoint at a time.
final class CheckpointTurn: Sendable {
    private let taken = Monitor(false)

    /// Waits for the checkpoint in flight, if any, to end, and takes the turn.
    func take() { taken.when({ !$0 }) { $0 = true } }
    func giveBack() { taken.when({ _ in true }) { $0 = false } }
    /// Waits for the checkpoint in flight, if any, to end.
    func awaitFree() { taken.when({ !$0 }) { _ in } }
    /// Whether a checkpoint is being frozen or written now.
    var isTaken: Bool { taken.current }
}
