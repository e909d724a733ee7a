import Synchronization

/// The memory an update batch stages its steps in (`Table.applyGradients`), kept between
/// batches: a fresh block of this size would come from `mmap` each time and fault in its
/// pages on every batch. One block per store, lent to one batch at a time; a batch that
/// finds it lent (another thread's update) allocates its own. Grows to the largest batch.
final class StagingBlock: Sendable {
    struct Block: @unchecked Sendable {  // touched only by the batch that took it
        let memory: UnsafeMutableRawPointer
        let bytes: Int
    }
    private let kept = Locked<Block?>(nil)

    init() {}

    deinit { kept.withLock { $0?.memory.deallocate() } }

    /// At least `bytes` bytes (64-byte aligned) for one batch; hand them back with `give`.
    func take(_ bytes: Int) -> Block {
        if let b = kept.withLock({ b -> Block? in
            defer { b = nil }
            return b
        }) {
            if b.bytes >= bytes { return b }
            b.memory.deallocate()
        }
        return Block(memory: .allocate(byteCount: max(bytes, 64), alignment: 64), bytes: max(bytes, 64))
    }

    /// Keeps the larger of the kept block and this one.
    func give(_ block: Block) {
        let spare = kept.withLock { kept -> Block? in
            if let k = kept, k.bytes >= block.bytes { return block }
            defer { kept = block }
            return kept
        }
        spare?.memory.deallocate()
    }
}
