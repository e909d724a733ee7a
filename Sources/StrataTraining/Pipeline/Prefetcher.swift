// The look-ahead stage: a thread of its own reads batches ahead of training and brings their
// rows into the hot tier, so that cold reads overlap the step in progress instead of
// stalling it. It only reads: lookups never change a row's value, so results do not depend
// on how far it looks ahead (or whether it runs at all), only how long they take.
import Foundation
import StrataStore
#if canImport(Glibc)
import Glibc
#endif

/// A batch with the position of the source just after it: what a checkpoint taken after
/// training on it must record.
public struct PositionedBatch: Sendable {
    public var batch: ClickBatch
    public var after: SourcePosition
    /// The epoch ended before this batch could be filled (`batch.count` is then 0).
    public var endOfEpoch: Bool
    /// The source's `skippedLines` just after it.
    public var skippedLines: Int64
}

/// Reads batches from a source on a background thread, `depth` ahead of the consumer.
final class Prefetcher: @unchecked Sendable {
    // @unchecked: `source` and the queue are only touched under `mutex`, or by the reading
    // thread alone between `start` and the end of `run`.
    private var source: any ClickSource
    private let batchSize: Int
    private let depth: Int
    private let tables: [Table]
    private var queue: [PositionedBatch] = []
    /// Batches the consumer is done with, refilled instead of allocating new ones.
    private var spare: [ClickBatch] = []
    private var failure: (any Error)?
    private var stopping = false
    private var finished = false
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let changed: UnsafeMutablePointer<pthread_cond_t>

    init(source: consuming any ClickSource, batchSize: Int, depth: Int, warming tables: [Table]) {
        precondition(depth >= 1)
        self.source = source
        self.batchSize = batchSize
        self.depth = depth
        self.tables = tables
        mutex = .allocate(capacity: 1)
        changed = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(changed, nil)
        let thread = Thread { [self] in run() }
        thread.name = "strata-prefetch"
        thread.start()
    }

    deinit {
        pthread_cond_destroy(changed)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        changed.deallocate()
    }

    /// The next batch in source order; rethrows the reader's error.
    func next() throws -> PositionedBatch {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while queue.isEmpty && failure == nil { pthread_cond_wait(changed, mutex) }
        if queue.isEmpty, let failure { throw failure }
        let item = queue.removeFirst()
        pthread_cond_broadcast(changed)
        return item
    }

    /// Gives back a batch `next` returned once nothing else refers to it, so that the reader
    /// fills its buffers again: writing into a batch the queue still shares would copy it.
    func recycle(_ batch: consuming ClickBatch) {
        pthread_mutex_lock(mutex)
        if spare.count <= depth { spare.append(batch) }
        pthread_mutex_unlock(mutex)
    }

    /// Stops the thread and waits for it; afterwards nothing touches the tables.
    func stop() {
        pthread_mutex_lock(mutex)
        stopping = true
        pthread_cond_broadcast(changed)
        while !finished { pthread_cond_wait(changed, mutex) }
        pthread_mutex_unlock(mutex)
    }

    private func run() {
        var scratch: [Float] = []
        var batch = ClickBatch(schema: source.schema)
        while true {
            pthread_mutex_lock(mutex)
            while queue.count >= depth && !stopping { pthread_cond_wait(changed, mutex) }
            let stop = stopping
            if let reused = spare.popLast() { batch = reused }
            pthread_mutex_unlock(mutex)
            if stop { break }
            do {
                let n = try source.next(batchSize, into: &batch)
                let item = PositionedBatch(batch: batch, after: source.position, endOfEpoch: n == 0,
                                           skippedLines: source.skippedLines)
                if n > 0 { try warm(batch, &scratch) }
                pthread_mutex_lock(mutex)
                queue.append(item)
                pthread_cond_broadcast(changed)
                pthread_mutex_unlock(mutex)
            } catch {
                pthread_mutex_lock(mutex)
                failure = error
                pthread_cond_broadcast(changed)
                pthread_mutex_unlock(mutex)
                break
            }
        }
        pthread_mutex_lock(mutex)
        finished = true
        pthread_cond_broadcast(changed)
        pthread_mutex_unlock(mutex)
    }

    /// Looks up every key of the batch, which brings its rows to the hot tier.
    private func warm(_ batch: ClickBatch, _ scratch: inout [Float]) throws {
        for (f, table) in tables.enumerated() {
            let d = table.spec.dimension
            if scratch.count < batch.count * d { scratch = [Float](repeating: 0, count: batch.count * d) }
            let keys = batch.keys(of: f)
            try keys.withUnsafeBufferPointer { k in
                try scratch.withUnsafeMutableBufferPointer { s in
                    try table.lookup(k, into: UnsafeMutableBufferPointer(rebasing: s[..<(k.count * d)]))
                }
            }
        }
    }
}
