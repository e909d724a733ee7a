// One block of parsed samples, between a file's bytes and a batch: labels, dense values and
// single-valued keys in fixed slots, and the bags of multi-valued features in one pool. A
// format parses a line into a slot; the reader commits the slot or rolls it back (a malformed
// line leaves nothing behind); the reader then copies samples out in its shuffled order.
import StrataModels

final class SampleBlock: @unchecked Sendable {
    // @unchecked: owned by one reader at a time (`LineBuffers` copies it before writing).
    let capacity: Int
    let schema: FeatureSchema
    let labelColumns: Int
    let denseColumns: Int
    /// Single-valued features read from data, in schema order (the batch's single slots).
    let singles: Int
    /// Multi-valued features read from data: their feature indices.
    let bagFeatures: [Int]

    let labels: UnsafeMutablePointer<Float>
    let dense: UnsafeMutablePointer<Float>
    let keys: UnsafeMutablePointer<UInt64>
    /// The file line each slot came from (1-based), set by the reader.
    let lines: UnsafeMutablePointer<Int64>
    /// Slot s's bag b ends at pool[bagEnds[s · bags + b]]; it starts where the one before ends.
    private let bagEnds: UnsafeMutablePointer<Int>
    private var pool: UnsafeMutablePointer<UInt64>
    private var poolCapacity = 64
    /// The end of the committed slots' bags, and of the slot being written.
    private var committed = 0
    private var written = 0

    init(capacity: Int, schema: FeatureSchema) {
        self.capacity = capacity
        self.schema = schema
        labelColumns = schema.labels.count
        denseColumns = schema.dense.count
        let read = schema.readFeatures
        let probe = Batch(schema: schema)
        bagFeatures = (0..<read).filter { probe.isBag($0) }
        singles = read - bagFeatures.count
        labels = .allocate(capacity: max(1, capacity * labelColumns))
        dense = .allocate(capacity: max(1, capacity * denseColumns))
        keys = .allocate(capacity: max(1, capacity * singles))
        lines = .allocate(capacity: max(1, capacity))
        bagEnds = .allocate(capacity: max(1, capacity * bagFeatures.count))
        pool = .allocate(capacity: poolCapacity)
    }

    deinit {
        labels.deallocate()
        dense.deallocate()
        keys.deallocate()
        lines.deallocate()
        bagEnds.deallocate()
        pool.deallocate()
    }

    func copy() -> SampleBlock {
        let c = SampleBlock(capacity: capacity, schema: schema)
        c.labels.update(from: labels, count: capacity * labelColumns)
        c.dense.update(from: dense, count: capacity * denseColumns)
        c.keys.update(from: keys, count: capacity * singles)
        c.lines.update(from: lines, count: capacity)
        c.bagEnds.update(from: bagEnds, count: capacity * bagFeatures.count)
        c.reservePool(written)
        c.pool.update(from: pool, count: written)
        c.committed = committed
        c.written = written
        return c
    }

    /// Empties the block.
    func clear() {
        committed = 0
        written = 0
    }

    // MARK: Writing a slot

    /// Appends a key to the bag being written.
    @inline(__always)
    func appendBagKey(_ key: UInt64) {
        if written == poolCapacity { reservePool(written + 1) }
        pool[written] = key
        written += 1
    }

    /// Ends slot `slot`'s bag `b` (bags in order) after the keys appended since the last.
    @inline(__always)
    func endBag(_ slot: Int, _ b: Int) { bagEnds[slot * bagFeatures.count + b] = written }

    /// Keeps the slot just parsed.
    func commit(_ slot: Int) { committed = written }

    /// Drops what a failed parse of a slot appended.
    func rollBack(_ slot: Int) { written = committed }

    private func reservePool(_ count: Int) {
        guard count > poolCapacity else { return }
        let bigger = max(count, poolCapacity * 2)
        let grown = UnsafeMutablePointer<UInt64>.allocate(capacity: bigger)
        grown.update(from: pool, count: written)
        pool.deallocate()
        pool = grown
        poolCapacity = bigger
    }

    // MARK: Reading

    /// Slot s's bag b.
    func bag(_ s: Int, _ b: Int) -> UnsafeBufferPointer<UInt64> {
        let at = s * bagFeatures.count + b
        let start = at == 0 ? 0 : bagEnds[at - 1]
        return UnsafeBufferPointer(start: pool + start, count: bagEnds[at] - start)
    }

    /// Copies `n` samples to batch rows `at ..< at + n` (in order, after rows before `at`):
    /// sample `order[i]` (or `first + i` without an order) to row `at + i`.
    func copy(_ n: Int, order: UnsafePointer<Int32>?, from first: Int, into batch: Batch, at: Int) {
        let l = labelColumns, d = denseColumns, s = singles, bags = bagFeatures.count
        let stride = batch.capacity, out = batch.singleKeys
        for i in 0..<n {
            let src = order.map { Int($0[i]) } ?? first + i
            let dst = at + i
            for j in 0..<l { batch.labels[dst * l + j] = labels[src * l + j] }
            // A plain loop: 13 floats are too few for a memmove call to pay off.
            let from = dense + src * d, to = batch.dense + dst * d
            for j in 0..<d { to[j] = from[j] }
            let k = keys + src * s
            for f in 0..<s { out[f * stride + dst] = k[f] }
            for b in 0..<bags { batch.appendBag(bagFeatures[b], bag(src, b)) }
        }
    }
}
