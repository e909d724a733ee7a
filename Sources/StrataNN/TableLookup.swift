// The embedding layer over one store table. Every feature that reads the table is a use of
// it (an item as the target and in a history; the positive and the sampled negatives). Per
// batch the lookup collects the keys of all uses, keeps each distinct key once, gathers
// those rows with one store call and pools them per sample and use; backward sums each
// distinct row's gradient over every use (uses in order, samples in order) and hands them to
// the store's optimizer in one call. So a row shared by two features gets one optimizer step
// a batch, as if the features were one.
public import StrataStore

/// The keys one use of a table reads in a batch, valid for the duration of a call.
public struct UseKeys {
    public var keys: UnsafeBufferPointer<UInt64>
    /// Bags: sample s pools `keys[offsets[s] ..< offsets[s + 1]]` (samples + 1 offsets,
    /// from 0, non-decreasing, ending at `keys.count`). nil: one key per sample.
    public var offsets: UnsafeBufferPointer<Int32>?

    public init(keys: UnsafeBufferPointer<UInt64>, offsets: UnsafeBufferPointer<Int32>? = nil) {
        self.keys = keys
        self.offsets = offsets
    }

    public var samples: Int { offsets.map { $0.count - 1 } ?? keys.count }
}

/// Where a network's rows come from, and where its sparse steps go, when its tables are
/// sharded over several processes: each process's `TableLookup`s hold the distinct keys of its
/// own part of the batch, and the exchange gets their rows from (and sends their gradients to)
/// the processes that own them. It is called with every lookup of the network at once, on the
/// training thread, by every process at the same point of every step.
public protocol RowExchange: AnyObject {
    /// Writes each lookup's distinct keys' rows (`withDistinct`) after its `collect`. In
    /// training the owners' rows come to their hot tier; otherwise nothing moves.
    func fetch(_ lookups: [TableLookup], training: Bool) throws
    /// Applies one optimizer step to every row the lookups' last fetch read, by the sum of
    /// every process's gradients for it (`sumGradients` without the decay ran: the owner adds
    /// λ · row once).
    func step(_ lookups: [TableLookup], learningRate: Float?) throws
}

public final class TableLookup {
    public enum Pooling: String, Sendable, Codable {
        case sum, mean
    }

    public let table: Table
    public let dimension: Int
    /// L2 regularisation of the rows a batch touches: λ · w is added to each distinct row's
    /// summed gradient before the optimizer step (lazy weight decay, as sparse optimizers do).
    public let weightDecay: Float
    /// Per use, one pooled row per sample, or a sequence use's `steps × dimension` per sample.
    public private(set) var outputs: [Tensor] = []
    /// Per use: a sequence use's lengths (samples × 1, the number of real positions as a
    /// float), nil for a pooled use.
    public private(set) var lengths: [Tensor?] = []
    private var poolings: [Pooling] = []
    /// Per use: the positions of a sequence use, 0 for a pooled use.
    private var steps: [Int] = []

    private var distinct = KeyDeduplicator()
    /// All uses' keys one after the other, when there are several uses.
    private var allKeys: [UInt64] = []
    /// Where each use's keys start in the deduplicated sequence.
    private var useStarts: [Int] = []
    /// Each use's bag offsets (empty: one key per sample), kept for backward.
    private var useOffsets: [[Int32]] = []
    private var rows: [Float] = []        // distinct keys × dimension
    private var rowGradients: [Float] = []

    public init(table: Table, weightDecay: Float = 0) {
        self.table = table
        dimension = table.spec.dimension
        self.weightDecay = weightDecay
    }

    /// Adds a use and returns its index; its pooled rows will be `outputs[index]`.
    public func addUse(pooling: Pooling) -> Int {
        addUse(pooling: pooling, steps: 0, columns: dimension)
    }

    /// Adds a use that keeps each sample's bag as a sequence instead of pooling it, and returns
    /// its index. The sequence contract of the layers that read it: `outputs[index]` holds
    /// `steps × dimension` floats a sample, position t at columns t·dimension ..< (t+1)·dimension;
    /// the bag's last `steps` keys (a history, oldest first, keeps its most recent items) fill
    /// positions 0 ..< length, left-aligned, and the padding positions after them are zeros;
    /// `lengths[index]` holds each sample's length. Keys before the last `steps` are not read,
    /// so their rows get no optimizer step.
    public func addSequenceUse(steps: Int) -> Int {
        precondition(steps >= 1, "a sequence has at least one position")
        return addUse(pooling: .sum, steps: steps, columns: steps * dimension)
    }

    private func addUse(pooling: Pooling, steps: Int, columns: Int) -> Int {
        outputs.append(Tensor(rows: 0, columns: columns))
        lengths.append(steps > 0 ? Tensor(rows: 0, columns: 1) : nil)
        poolings.append(pooling)
        self.steps.append(steps)
        useOffsets.append([])
        useStarts.append(0)
        return outputs.count - 1
    }

    public var uses: Int { outputs.count }

    /// Looks up every use's keys (`keys(u)` for use u). In training the rows come to the hot
    /// tier (`lookup`); otherwise nothing moves (`peek`). Throws the store's error, leaving
    /// the outputs unspecified.
    public func forward(training: Bool, keys: (Int) -> UseKeys) throws(StoreError) {
        collect(keys: keys)
        try fetch(training: training)
        pool()
    }

    /// Sums every use's output gradient (`gradient(u)`, samples × dimension) per distinct row,
    /// adds the weight decay, and applies one optimizer step to those rows in the store
    /// (`learningRate` overrides the table's for this batch).
    public func backward(learningRate: Float? = nil, gradient: (Int) -> Tensor) throws(StoreError) {
        sumGradients(addingWeightDecay: true, gradient: gradient)
        try step(learningRate: learningRate)
    }

    // MARK: The phases, for a `RowExchange` to run the store calls between

    /// Forward's first phase: every use's keys (`keys(u)` for use u), each distinct key kept
    /// once, in the order of first use.
    public func collect(keys: (Int) -> UseKeys) {
        precondition(uses > 0, "a table lookup without uses")
        let unique: Int
        if uses == 1 && steps[0] == 0 {
            let k = keys(0)
            remember(k, use: 0, start: 0)
            unique = distinct.run(k.keys)
        } else {
            allKeys.removeAll(keepingCapacity: true)
            for u in 0..<uses {
                let k = keys(u)
                remember(k, use: u, start: allKeys.count)
                if steps[u] > 0 { appendSequenceKeys(k, use: u) } else { allKeys.append(contentsOf: k.keys) }
            }
            unique = allKeys.withUnsafeBufferPointer { distinct.run($0) }
        }
        if rows.count < unique * dimension { rows = [Float](repeating: 0, count: unique * dimension) }
    }

    /// Forward's second phase in one process: the distinct keys' rows from the store.
    public func fetch(training: Bool) throws(StoreError) {
        try withDistinct { (k, r, _) throws(StoreError) in
            if training { try table.lookup(k, into: r) } else { try table.peek(k, into: r) }
        }
    }

    /// Forward's last phase: pools (or lays out) every use's rows into its output.
    public func pool() {
        for u in 0..<uses { pool(use: u) }
    }

    /// Backward's first phase: every use's output gradient (`gradient(u)`, samples ×
    /// dimension) summed per distinct row (uses in order, samples in order), and with
    /// `addingWeightDecay` λ · row added. (Sharded, the decay is added once, by the row's owner.)
    public func sumGradients(addingWeightDecay: Bool, gradient: (Int) -> Tensor) {
        let d = dimension, unique = distinct.uniqueKeys.count
        // No key (a rank's part of a batch can have only empty bags): nothing to sum.
        guard unique > 0 else { return }
        if rowGradients.count < unique * d { rowGradients = [Float](repeating: 0, count: unique * d) }
        rowGradients.withUnsafeMutableBufferPointer { g in
            let sums = g.baseAddress!
            sums.update(repeating: 0, count: unique * d)
            distinct.positions.withUnsafeBufferPointer { at in
                for u in 0..<uses {
                    let dy = gradient(u), start = useStarts[u]
                    let samples = samplesOf(u)
                    let sequence = steps[u] > 0
                    precondition(dy.rows == samples && dy.columns == outputs[u].columns, "gradient of use \(u) has the wrong shape")
                    useOffsets[u].withUnsafeBufferPointer { offsets in
                        for s in 0..<samples {
                            let (first, end) = offsets.isEmpty ? (s, s + 1) : (Int(offsets[s]), Int(offsets[s + 1]))
                            let src = dy.row(s)
                            let scale: Float = poolings[u] == .mean && end > first && !sequence ? 1 / Float(end - first) : 1
                            for i in first..<end {
                                // A sequence's position i − first has its own gradient; a pool's
                                // keys share the sample's.
                                let g = sequence ? src + (i - first) * d : src
                                let dst = sums + Int(at[start + i]) * d
                                for j in 0..<d { dst[j] += g[j] * scale }
                            }
                        }
                    }
                }
            }
            if weightDecay != 0 && addingWeightDecay {
                rows.withUnsafeBufferPointer { r in
                    for i in 0..<(unique * d) { sums[i] += weightDecay * r[i] }
                }
            }
        }
    }

    /// Backward's last phase in one process: one optimizer step of the distinct rows by their
    /// summed gradients (`learningRate` overrides the table's for this batch).
    public func step(learningRate: Float?) throws(StoreError) {
        try withDistinct { (k, _, g) throws(StoreError) in
            try table.applyGradients(k, UnsafeBufferPointer(g), learningRate: learningRate)
        }
    }

    /// The distinct keys of the last `collect`, their rows (written by a fetch, `distinct ×
    /// dimension`) and their summed gradients (after `sumGradients`), valid for the call.
    public func withDistinct<R, E: Error>(
        _ body: (UnsafeBufferPointer<UInt64>, UnsafeMutableBufferPointer<Float>, UnsafeMutableBufferPointer<Float>) throws(E) -> R
    ) throws(E) -> R {
        let n = distinct.uniqueKeys.count * dimension
        if rowGradients.count < n { rowGradients = [Float](repeating: 0, count: n) }
        return try distinct.uniqueKeys.withUnsafeBufferPointer { (k) throws(E) in
            try rows.withUnsafeMutableBufferPointer { (r) throws(E) in
                try rowGradients.withUnsafeMutableBufferPointer { (g) throws(E) in
                    try body(k, UnsafeMutableBufferPointer(rebasing: r[..<n]), UnsafeMutableBufferPointer(rebasing: g[..<n]))
                }
            }
        }
    }

    /// Brings the rows of these keys to the hot tier, without computing anything: the
    /// look-ahead's warming of a batch before its step. `scratch` is the caller's.
    public static func warm(_ table: Table, _ keys: UnsafeBufferPointer<UInt64>, scratch: inout [Float]) throws(StoreError) {
        let d = table.spec.dimension
        if scratch.count < keys.count * d { scratch = [Float](repeating: 0, count: keys.count * d) }
        try scratch.withUnsafeMutableBufferPointer { (s) throws(StoreError) in
            try table.lookup(keys, into: UnsafeMutableBufferPointer(rebasing: s[..<(keys.count * d)]))
        }
    }

    private func samplesOf(_ use: Int) -> Int { useOffsets[use].isEmpty ? outputs[use].rows : useOffsets[use].count - 1 }

    /// A sequence use's keys: each bag's last `steps` keys into `allKeys`, and the use's
    /// offsets (checked by `remember`) rewritten to the kept keys.
    private func appendSequenceKeys(_ k: UseKeys, use u: Int) {
        let limit = steps[u], samples = k.samples
        let lengths = self.lengths[u]!
        lengths.resize(rows: samples)
        var kept: Int32 = 0
        for s in 0..<samples {
            let (first, end) = k.offsets.map { (Int($0[s]), Int($0[s + 1])) } ?? (s, s + 1)
            let from = max(first, end - limit)
            for i in from..<end { allKeys.append(k.keys[i]) }
            if !useOffsets[u].isEmpty { useOffsets[u][s] = kept }
            kept += Int32(end - from)
            lengths.row(s)[0] = Float(end - from)
        }
        if useOffsets[u].isEmpty {
            // One key a sample: a sequence of length 1 each, offsets implied.
            return
        }
        useOffsets[u][samples] = kept
    }

    private func remember(_ k: UseKeys, use: Int, start: Int) {
        useStarts[use] = start
        useOffsets[use].removeAll(keepingCapacity: true)
        if let offsets = k.offsets {
            // Checked whole before any is used: a bad offset in the middle would otherwise
            // read past the keys.
            precondition(offsets.count >= 1 && offsets[0] == 0 && Int(offsets[offsets.count - 1]) == k.keys.count,
                         "bag offsets must run from 0 to the number of keys (\(k.keys.count))")
            for s in 1..<offsets.count {
                precondition(offsets[s - 1] <= offsets[s], "bag offsets must not decrease: \(offsets[s - 1]) then \(offsets[s]) at sample \(s)")
            }
            useOffsets[use].append(contentsOf: offsets)
        }
        outputs[use].resize(rows: k.samples)
    }

    /// Pools use u's rows into its output (a sequence use: lays them out by position).
    private func pool(use u: Int) {
        if steps[u] > 0 { return layOut(use: u) }
        let d = dimension, output = outputs[u], start = useStarts[u], mean = poolings[u] == .mean
        rows.withUnsafeBufferPointer { r in
            distinct.positions.withUnsafeBufferPointer { at in
                useOffsets[u].withUnsafeBufferPointer { offsets in
                    for s in 0..<output.rows {
                        let o = output.row(s)
                        let (first, end) = offsets.isEmpty ? (s, s + 1) : (Int(offsets[s]), Int(offsets[s + 1]))
                        if end - first == 1 {
                            o.update(from: r.baseAddress! + Int(at[start + first]) * d, count: d)
                            continue
                        }
                        o.update(repeating: 0, count: d)
                        for i in first..<end {
                            let src = r.baseAddress! + Int(at[start + i]) * d
                            for j in 0..<d { o[j] += src[j] }
                        }
                        if mean && end > first {
                            let scale = 1 / Float(end - first)
                            for j in 0..<d { o[j] *= scale }
                        }
                    }
                }
            }
        }
    }

    /// A sequence use's rows into its output: sample s's position t holds its key t's row,
    /// padding positions zeros.
    private func layOut(use u: Int) {
        let d = dimension, output = outputs[u], start = useStarts[u], limit = steps[u]
        rows.withUnsafeBufferPointer { r in
            distinct.positions.withUnsafeBufferPointer { at in
                useOffsets[u].withUnsafeBufferPointer { offsets in
                    for s in 0..<output.rows {
                        let o = output.row(s)
                        let (first, end) = offsets.isEmpty ? (s, s + 1) : (Int(offsets[s]), Int(offsets[s + 1]))
                        for i in first..<end {
                            (o + (i - first) * d).update(from: r.baseAddress! + Int(at[start + i]) * d, count: d)
                        }
                        (o + (end - first) * d).update(repeating: 0, count: (limit - (end - first)) * d)
                    }
                }
            }
        }
    }
}
