// A batch of samples as a model reads it: labels and dense values row by row, and each
// categorical feature's keys as one contiguous run (single-valued features feature after
// feature; multi-valued ones as bags with offsets), ready for one store call per table.
//
// A batch is a reference: sources fill it, the look-ahead hands it to training and gets it
// back to fill again, so its memory is allocated once. One thread uses it at a time; the
// hand-over is the synchronisation (the look-ahead's queue). Pointers it gives stay valid
// until it is next written.
public import StrataNN
import StrataStore

public final class Batch: @unchecked Sendable {
    public let schema: FeatureSchema
    /// Rows of the batch.
    public private(set) var count = 0
    /// Rows per group: 1, or a positive followed by its sampled negatives (BPR).
    public internal(set) var groupSize = 1

    /// Where each categorical feature's keys live.
    private enum Slot { case single(Int), bag(Int) }
    private let slots: [Slot]
    public let labelColumns: Int
    public let denseColumns: Int
    private let singleCount: Int

    /// Rows the batch has room for since `begin(capacity:)`: the row stride of `singleKeys` while writing.
    public private(set) var capacity = 0
    /// Row stride of the single-valued keys: the capacity while writing, `count` after.
    private var stride = 0
    private var labelStorage = Storage<Float>()
    private var denseStorage = Storage<Float>()
    private var singleStorage = Storage<UInt64>()
    private var bags: [Bag] = []

    private final class Bag {
        var keys = Storage<UInt64>()
        var offsets = Storage<Int32>()
        /// Rows appended since `begin`.
        var rows = 0
        deinit {
            keys.free()
            offsets.free()
        }
    }

    public init(schema: FeatureSchema) {
        self.schema = schema
        var singles = 0, bagCount = 0
        slots = schema.categorical.map { feature in
            if Self.isBag(feature, in: schema) {
                defer { bagCount += 1 }
                return .bag(bagCount)
            }
            defer { singles += 1 }
            return .single(singles)
        }
        singleCount = singles
        bags = (0..<bagCount).map { _ in Bag() }
        labelColumns = schema.labels.count
        denseColumns = schema.dense.count
        begin(capacity: 0)
        end(written: 0)
    }

    deinit {
        labelStorage.free()
        denseStorage.free()
        singleStorage.free()
    }

    /// A feature holds bags if it is multi-valued or crosses one that is.
    public static func isBag(_ feature: FeatureSchema.Categorical, in schema: FeatureSchema) -> Bool {
        if feature.multiValued { return true }
        guard let parts = feature.crossOf else { return false }
        return parts.contains { p in schema.categorical.first { $0.name == p }?.multiValued ?? false }
    }

    public func isBag(_ feature: Int) -> Bool { if case .bag = slots[feature] { true } else { false } }

    // MARK: Reading

    /// Row r's labels: `labelColumns` floats.
    public var labels: UnsafeMutablePointer<Float> { labelStorage.pointer }
    /// Row r's dense values at `dense + r * denseColumns`.
    public var dense: UnsafeMutablePointer<Float> { denseStorage.pointer }

    /// Feature f's keys: one per row, or bags with offsets.
    public func keys(of feature: Int) -> UseKeys {
        switch slots[feature] {
        case .single(let s):
            return UseKeys(keys: UnsafeBufferPointer(start: singleStorage.pointer + s * stride, count: count))
        case .bag(let b):
            let bag = bags[b]
            let total = Int(bag.offsets.pointer[count])
            return UseKeys(keys: UnsafeBufferPointer(start: bag.keys.pointer, count: total),
                           offsets: UnsafeBufferPointer(start: bag.offsets.pointer, count: count + 1))
        }
    }

    /// Row r's keys of feature f.
    public func keys(of feature: Int, row r: Int) -> UnsafeBufferPointer<UInt64> {
        switch slots[feature] {
        case .single(let s):
            return UnsafeBufferPointer(start: singleStorage.pointer + s * stride + r, count: 1)
        case .bag(let b):
            let o = bags[b].offsets.pointer
            return UnsafeBufferPointer(start: bags[b].keys.pointer + Int(o[r]), count: Int(o[r + 1] - o[r]))
        }
    }

    // MARK: Writing

    /// Empties the batch and makes room for `capacity` rows. Rows are then written in order
    /// (every row's labels, dense values and keys of every feature read from data), and
    /// `end(written:)` closes the batch; crosses are computed by `computeCrosses()` after.
    public func begin(capacity: Int, groupSize: Int = 1) {
        precondition(capacity >= 0 && groupSize >= 1)
        self.capacity = capacity
        count = 0
        stride = capacity
        self.groupSize = groupSize
        labelStorage.reserve(capacity * labelColumns)
        denseStorage.reserve(capacity * denseColumns)
        singleStorage.reserve(capacity * singleCount)
        for bag in bags {
            bag.offsets.reserve(capacity + 1)
            bag.offsets.pointer[0] = 0
            bag.rows = 0
        }
    }

    /// The single-valued keys while writing: the s-th single-valued feature's key of row r is
    /// at `singleKeys + s * capacity + r` (for sources whose features are all single-valued,
    /// s is the feature's index).
    public var singleKeys: UnsafeMutablePointer<UInt64> { singleStorage.pointer }

    /// Where row r's single-valued key of feature f goes while writing.
    @inline(__always)
    public func keySlot(_ feature: Int, row r: Int) -> UnsafeMutablePointer<UInt64> {
        guard case .single(let s) = slots[feature] else { preconditionFailure("feature \(feature) holds bags") }
        return singleStorage.pointer + s * stride + r
    }

    /// Appends the next row's bag of feature f (rows in order, from 0).
    public func appendBag(_ feature: Int, _ keys: UnsafeBufferPointer<UInt64>) {
        guard case .bag(let b) = slots[feature] else { preconditionFailure("feature \(feature) holds one key per row") }
        let bag = bags[b]
        precondition(bag.rows < capacity, "more bags than rows")
        let start = Int(bag.offsets.pointer[bag.rows])
        precondition(start + keys.count <= Int(Int32.max), "a batch's bags hold more than 2^31 keys")
        bag.keys.reserve(start + keys.count, keeping: start)
        if keys.count > 0 { (bag.keys.pointer + start).update(from: keys.baseAddress!, count: keys.count) }
        bag.rows += 1
        bag.offsets.pointer[bag.rows] = Int32(start + keys.count)
    }

    /// Appends one key as the next row's bag of feature f.
    public func appendBag(_ feature: Int, key: UInt64) {
        var k = key
        withUnsafePointer(to: &k) { appendBag(feature, UnsafeBufferPointer(start: $0, count: 1)) }
    }

    /// Closes a batch begun with `begin(capacity:)` that received `written` rows: packs the
    /// single-valued keys to stride `written`.
    public func end(written: Int) {
        precondition(written >= 0 && written <= capacity)
        if written < stride {
            let k = singleStorage.pointer
            // Feature s moves from s * capacity to s * written: never to a higher address, so
            // copying front to back is safe even where the ranges overlap.
            for s in 1..<max(singleCount, 1) {
                let from = s * stride, to = s * written
                for r in 0..<written { k[to + r] = k[from + r] }
            }
        }
        for (f, slot) in slots.enumerated() {
            guard case .bag(let b) = slot, schema.categorical[f].crossOf == nil else { continue }
            precondition(bags[b].rows == written, "feature \(schema.categorical[f].name): \(bags[b].rows) bags for \(written) rows")
        }
        stride = written
        count = written
    }

    /// Sets the batch to `rows` rows: labels and dense values row by row, and per feature read
    /// from data one bag of keys per row (of one key for single-valued features); then
    /// computes the crosses. For tests and small sources.
    public func set(rows n: Int, labels: [Float], dense: [Float], keys: [[[UInt64]]], groupSize: Int = 1) {
        precondition(labels.count == n * labelColumns && dense.count == n * denseColumns, "labels or dense values do not fit the schema")
        precondition(keys.count == schema.readFeatures && keys.allSatisfy { $0.count == n }, "one key list per feature read from data")
        begin(capacity: n, groupSize: groupSize)
        labelStorage.pointer.update(from: labels, count: labels.count)
        denseStorage.pointer.update(from: dense, count: dense.count)
        for (f, rows) in keys.enumerated() {
            for (r, bag) in rows.enumerated() {
                if isBag(f) {
                    bag.withUnsafeBufferPointer { appendBag(f, $0) }
                } else {
                    precondition(bag.count == 1, "feature \(schema.categorical[f].name) holds one key per row")
                    keySlot(f, row: r).pointee = bag[0]
                }
            }
        }
        end(written: n)
        computeCrosses()
    }

    /// Keeps rows `range` of the batch, whole groups, and drops the rest: a rank's part of a
    /// global batch. The rows move to the front in order; nothing is allocated.
    public func keep(_ range: Range<Int>) {
        let first = range.lowerBound, n = range.count
        precondition(first >= 0 && range.upperBound <= count && first % groupSize == 0 && n % groupSize == 0,
                     "a batch keeps whole groups of its rows")
        // Every value moves to a lower address or stays: copying front to back is safe.
        func move<T>(_ p: UnsafeMutablePointer<T>, from: Int, to: Int, count: Int) {
            for i in 0..<count { p[to + i] = p[from + i] }
        }
        move(labelStorage.pointer, from: first * labelColumns, to: 0, count: n * labelColumns)
        move(denseStorage.pointer, from: first * denseColumns, to: 0, count: n * denseColumns)
        for s in 0..<singleCount { move(singleStorage.pointer, from: s * stride + first, to: s * n, count: n) }
        for bag in bags {
            let o = bag.offsets.pointer, base = o[first]
            move(bag.keys.pointer, from: Int(base), to: 0, count: Int(o[first + n] - base))
            for i in 0...n { o[i] = o[first + i] - base }
            bag.rows = n
        }
        stride = n
        count = n
    }

    // MARK: Crosses

    /// Fills every cross feature from the features it crosses: for a row, every combination
    /// of their keys (the last part varying fastest), each combination's key the parts' keys
    /// hashed in order into the cross's table namespace: h = mix(… mix(mix(ns ⊕ k₁) ⊕ k₂) …).
    public func computeCrosses() {
        let first = schema.readFeatures
        guard first < schema.categorical.count else { return }
        for f in first..<schema.categorical.count {
            let cross = schema.categorical[f]
            let parts = cross.crossOf!.map { schema.categoricalIndex($0)! }
            let namespace = FeatureSchema.namespace(cross.table)
            switch slots[f] {
            case .single:
                for r in 0..<count {
                    var h = namespace
                    for p in parts { h = SplitMix64.mix(h ^ keys(of: p, row: r)[0]) }
                    keySlot(f, row: r).pointee = h
                }
            case .bag(let b):
                let bag = bags[b]
                bag.offsets.reserve(count + 1)
                bag.offsets.pointer[0] = 0
                for r in 0..<count {
                    var total = 1
                    for p in parts { total *= keys(of: p, row: r).count }
                    let start = Int(bag.offsets.pointer[r])
                    bag.keys.reserve(start + total, keeping: start)
                    for c in 0..<total {
                        // c's digits in the mixed radix of the parts' bag sizes, last part lowest.
                        var h = namespace, radix = total
                        for p in parts {
                            let k = keys(of: p, row: r)
                            radix /= k.count
                            h = SplitMix64.mix(h ^ k[(c / radix) % k.count])
                        }
                        bag.keys.pointer[start + c] = h
                    }
                    bag.offsets.pointer[r + 1] = Int32(start + total)
                }
                bag.rows = count
            }
        }
    }
}

/// Manually managed storage that grows and never shrinks: pointers stay valid until it grows.
struct Storage<T> {
    private(set) var pointer: UnsafeMutablePointer<T> = .allocate(capacity: 1)
    private(set) var capacity = 1

    /// Room for `count` elements, keeping the first `keeping`.
    mutating func reserve(_ count: Int, keeping: Int = 0) {
        guard count > capacity else { return }
        let grown = UnsafeMutablePointer<T>.allocate(capacity: max(count, capacity * 2))
        if keeping > 0 { grown.moveInitialize(from: pointer, count: keeping) }
        pointer.deallocate()
        pointer = grown
        capacity = max(count, capacity * 2)
    }

    func free() { pointer.deallocate() }
}
