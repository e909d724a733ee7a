// The embedding layer backed by a store table. For each batch it collects the keys, keeps
// each distinct key once, gathers those rows with one store call, and pools them per sample;
// backward sums the gradients per distinct row (in batch order) and hands them to the
// store's optimizer in one call.
public import StrataStore

public final class StoreEmbedding {
    public enum Pooling: String, Sendable, Codable {
        case sum, mean
    }

    public let table: Table
    public let dimension: Int
    public let pooling: Pooling
    /// One pooled row per sample.
    public let output: Tensor

    private var distinct = KeyDeduplicator()
    private var rows: [Float] = []        // distinct keys × dimension
    private var rowGradients: [Float] = []
    private var bagStarts: [Int] = []     // samples + 1 offsets into the key positions
    private var samples = 0

    public init(table: Table, pooling: Pooling = .sum) {
        self.table = table
        dimension = table.spec.dimension
        self.pooling = pooling
        output = Tensor(rows: 0, columns: table.spec.dimension)
    }

    /// Looks up one key per sample.
    @discardableResult
    public func forward(keys: UnsafeBufferPointer<UInt64>, training: Bool) throws(StoreError) -> Tensor {
        try forward(keys: keys, bagStarts: nil, training: training)
    }

    /// Looks up bags of keys: sample `s` pools `keys[bagStarts[s] ..< bagStarts[s + 1]]`
    /// (`bagStarts` has samples + 1 entries; nil means one key per sample). In training the
    /// rows come to the hot tier (`lookup`); otherwise nothing moves (`peek`).
    @discardableResult
    public func forward(keys: UnsafeBufferPointer<UInt64>, bagStarts: UnsafeBufferPointer<Int>?,
                        training: Bool) throws(StoreError) -> Tensor {
        let n = keys.count
        samples = bagStarts.map { $0.count - 1 } ?? n
        self.bagStarts.removeAll(keepingCapacity: true)
        if let bagStarts { self.bagStarts.append(contentsOf: bagStarts) } else { self.bagStarts.append(contentsOf: 0...n) }
        let unique = distinct.run(keys)
        let d = dimension
        if rows.count < unique * d { rows = [Float](repeating: 0, count: unique * d) }
        try distinct.uniqueKeys.withUnsafeBufferPointer { (k) throws(StoreError) in
            try rows.withUnsafeMutableBufferPointer { (r) throws(StoreError) in
                let out = UnsafeMutableBufferPointer(rebasing: r[..<(unique * d)])
                if training { try table.lookup(k, into: out) } else { try table.peek(k, into: out) }
            }
        }
        output.resize(rows: samples)
        rows.withUnsafeBufferPointer { r in
            distinct.positions.withUnsafeBufferPointer { at in
                for s in 0..<samples {
                    let o = output.row(s)
                    let start = self.bagStarts[s], end = self.bagStarts[s + 1]
                    if end - start == 1 {
                        o.update(from: r.baseAddress! + Int(at[start]) * d, count: d)
                        continue
                    }
                    o.update(repeating: 0, count: d)
                    for i in start..<end {
                        let src = r.baseAddress! + Int(at[i]) * d
                        for j in 0..<d { o[j] += src[j] }
                    }
                    if pooling == .mean && end > start {
                        let scale = 1 / Float(end - start)
                        for j in 0..<d { o[j] *= scale }
                    }
                }
            }
        }
        return output
    }

    /// Sums the output gradient per distinct row and applies one optimizer step to those
    /// rows in the store (`learningRate` overrides the table's for this batch).
    public func backward(_ dy: Tensor, learningRate: Float? = nil) throws(StoreError) {
        precondition(dy.rows == samples && dy.columns == dimension)
        let d = dimension, unique = distinct.uniqueKeys.count
        if rowGradients.count < unique * d { rowGradients = [Float](repeating: 0, count: unique * d) }
        rowGradients.withUnsafeMutableBufferPointer { g in
            g.baseAddress!.update(repeating: 0, count: unique * d)
            distinct.positions.withUnsafeBufferPointer { at in
                for s in 0..<samples {
                    let start = bagStarts[s], end = bagStarts[s + 1]
                    let src = dy.row(s)
                    let scale: Float = pooling == .mean && end > start ? 1 / Float(end - start) : 1
                    for i in start..<end {
                        let dst = g.baseAddress! + Int(at[i]) * d
                        for j in 0..<d { dst[j] += src[j] * scale }
                    }
                }
            }
        }
        try distinct.uniqueKeys.withUnsafeBufferPointer { (k) throws(StoreError) in
            try rowGradients.withUnsafeBufferPointer { (g) throws(StoreError) in
                try table.applyGradients(k, UnsafeBufferPointer(rebasing: g[..<(unique * d)]), learningRate: learningRate)
            }
        }
    }
}
