// The look-ahead stage: a thread of its own reads batches ahead of training, prepares them
// (negatives, crosses) and brings their rows into the hot tier, so that cold reads overlap
// the step in progress instead of stalling it. It only reads: lookups never change a row's
// value, so results do not depend on how far it looks ahead (or whether it runs at all),
// only how long they take.
import Foundation
public import StrataModels
import StrataStore
#if canImport(Glibc)
import Glibc
#endif

/// A prepared batch with the position of the source just after it: what a checkpoint taken
/// after training on it must record.
public struct PositionedBatch: @unchecked Sendable {
    // @unchecked: the batch belongs to one thread at a time, handed over under the queue's lock.
    public var batch: Batch
    /// Samples read from the source (rows without the negatives).
    public var samples: Int
    public var after: SourcePosition
    /// The epoch ended before this batch could be filled (`samples` is then 0).
    public var endOfEpoch: Bool
    /// The source's `skippedLines` just after it.
    public var skippedLines: Int64
}

/// Reads the next batch of a source and prepares it for a step: the sampled negatives after
/// each positive, then the crosses. One per thread: it keeps a batch of its own to read into.
final class BatchPreparation {
    let negatives: NegativeSampler?
    private let raw: Batch?

    init(schema: FeatureSchema, negatives: NegativeSampler?) {
        self.negatives = negatives
        raw = negatives == nil ? nil : Batch(schema: schema)
    }

    func next(_ source: inout any BatchSource, size: Int, into out: Batch) throws -> PositionedBatch {
        let n: Int
        if let negatives, let raw {
            let before = source.position
            n = try source.next(size, into: raw)
            negatives.expand(raw, startingAt: before, into: out)
        } else {
            n = try source.next(size, into: out)
        }
        out.computeCrosses()
        return PositionedBatch(batch: out, samples: n, after: source.position, endOfEpoch: n == 0,
                               skippedLines: source.skippedLines)
    }
}

/// Reads batches from a source on a background thread, `depth` ahead of the consumer.
final class Prefetcher: @unchecked Sendable {
    // @unchecked: `source` and the queue are only touched under `mutex`, or by the reading
    // thread alone between `start` and the end of `run`.
    private var source: any BatchSource
    private let batchSize: Int
    private let depth: Int
    private let network: Network
    /// Which rows of a read batch are brought to the hot tier: with the tables sharded, those
    /// of the keys this process owns (`Network.warm`).
    private let owned: (@Sendable (Int, UInt64) -> Bool)?
    private let preparation: BatchPreparation
    private var queue: [PositionedBatch] = []
    /// Batches the consumer is done with, refilled instead of allocating new ones.
    private var spare: [Batch] = []
    private var failure: (any Error)?
    private var stopping = false
    private var finished = false
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let changed: UnsafeMutablePointer<pthread_cond_t>

    init(source: any BatchSource, batchSize: Int, depth: Int, preparation: BatchPreparation, warming network: Network,
         owned: (@Sendable (Int, UInt64) -> Bool)? = nil) {
        precondition(depth >= 1)
        self.owned = owned
        self.source = source
        self.batchSize = batchSize
        self.depth = depth
        self.network = network
        self.preparation = preparation
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

    /// Gives back a batch `next` returned, once the step is done with it, to be filled again.
    func recycle(_ batch: Batch) {
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
        var scratch: [Float] = [], kept: [UInt64] = []
        while true {
            pthread_mutex_lock(mutex)
            while queue.count >= depth && !stopping { pthread_cond_wait(changed, mutex) }
            let stop = stopping
            let batch = spare.popLast() ?? Batch(schema: network.schema)
            pthread_mutex_unlock(mutex)
            if stop { break }
            do {
                let item = try preparation.next(&source, size: batchSize, into: batch)
                if item.samples > 0 { try network.warm(item.batch, scratch: &scratch, kept: &kept, owned: owned) }
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
}
