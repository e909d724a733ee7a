// The small deterministic workloads that strata-fault-driver's modes run in a child process
// and that their tests replay afterwards to check what the store kept, and the checkpoint
// payload both sides read. Defined once here, so the driver and the tests cannot disagree.
public import StrataStore

/// The checkpoint payload the fault modes write: one count (of batches, or of applications
/// of a workload) as 8 bytes in this machine's byte order.
public enum CheckpointCount {
    public static func payload(_ n: Int) -> [UInt8] { withUnsafeBytes(of: UInt64(n)) { Array($0) } }

    /// The count `payload` holds, or -1 when it holds none.
    public static func count(in payload: [UInt8]) -> Int {
        payload.count == 8 ? Int(payload.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }) : -1
    }
}

/// The disk-full run: batch `b` updates 64 new rows and revisits 8 earlier ones (duplicates
/// included), 320-byte records (dimension 64, row-wise AdaGrad).
public enum DiskFullWorkload {
    public static let spec = TableSpec(dimension: 64, initializer: .init(.uniform(low: -0.1, high: 0.1), seed: 11),
                                       optimizer: .rowwiseAdagrad(learningRate: 0.05))
    public static let newRowsPerBatch = 64

    public static func key(_ n: Int) -> UInt64 { UInt64(n) &* 0x9E37_79B9_7F4A_7C15 }

    public static func batch(_ b: Int) -> (keys: [UInt64], gradients: [Float]) {
        var keys = (0..<newRowsPerBatch).map { key(b * newRowsPerBatch + $0) }
        let written = (b + 1) * newRowsPerBatch
        keys += (0..<8).map { key((b * 37 + $0 * 101) % written) }
        let d = spec.dimension
        var g = [Float](repeating: 0, count: keys.count * d)
        for (i, k) in keys.enumerated() {
            for j in 0..<d { g[i * d + j] = Float(Int((k &* 31 &+ UInt64(j) &+ UInt64(b) &* 7) % 201) - 100) / 1000 }
        }
        return (keys, g)
    }

    /// `kind` "checkpoint": everything fits in hot memory, so only a checkpoint growing LMDB's
    /// reserved map can meet the limit. "spill": a few dozen rows of memory, so changed
    /// rows go to the spill file between checkpoints.
    public static func options(_ kind: String) -> Store.Options {
        .small(kind == "spill" ? TierBudget(hotBytes: 8 << 10, warmBytes: 16 << 10)
                               : TierBudget(hotBytes: 4 << 20, warmBytes: 0))
    }
}

/// The read-only and second-opener runs: 200 rows of dimension 8 under SGD; application `n`
/// adds the same gradient again.
public enum SmallWorkload {
    public static let spec = TableSpec(dimension: 8, initializer: .init(.uniform(low: -1, high: 1), seed: 5),
                                       optimizer: .sgd(learningRate: 0.1))
    public static let keys: [UInt64] = (0..<200).map { UInt64($0) &* 0x9E37_79B9_7F4A_7C15 }
    public static var gradients: [Float] {
        keys.flatMap { k in (0..<8).map { j in Float(Int((k &+ UInt64(j) &* 7) % 13) - 6) / 10 } }
    }

    public static func options() -> Store.Options {
        var o = Store.Options()
        o.initialMapBytes = 1 << 20
        o.budget = TierBudget(hotBytes: 16 << 10, warmBytes: 16 << 10)
        return o
    }

    /// The reference after `n` applications.
    public static func reference(applications n: Int) -> ReferenceTable {
        var r = ReferenceTable(spec: spec)
        for _ in 0..<n { r.apply(keys, gradients) }
        return r
    }
}
