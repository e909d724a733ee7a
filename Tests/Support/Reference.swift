// A plain in-memory model of a table: a dictionary of rows and the same per-row arithmetic.
// The store must read exactly (bit for bit) what this model reads, whatever its budgets.
public import StrataStore

public struct ReferenceRow: Equatable, Sendable {
    public var values: [Float]
    public var state: [Float]
    public var updateCount: UInt64
}

public struct ReferenceTable: Sendable {
    public let spec: TableSpec
    public private(set) var rows: [UInt64: ReferenceRow] = [:]

    public init(spec: TableSpec) { self.spec = spec }

    var stateCount: Int {
        switch spec.optimizer {
        case .sgd: 0
        case .adagrad: spec.dimension
        case .rowwiseAdagrad: 1
        case .adam, .ftrl: 2 * spec.dimension
        }
    }

    /// The never-written row of `key`.
    public func initialRow(_ key: UInt64) -> ReferenceRow {
        var values = [Float](repeating: 0, count: spec.dimension)
        values.withUnsafeMutableBufferPointer {
            spec.initializer.fill($0.baseAddress!, key: key, dimension: spec.dimension)
            spec.storage.round($0.baseAddress!, count: spec.dimension)
        }
        var state = [Float](repeating: 0, count: stateCount)
        state.withUnsafeMutableBufferPointer {
            if let base = $0.baseAddress { spec.optimizer.initializeState(base, dimension: spec.dimension) }
        }
        return ReferenceRow(values: values, state: state, updateCount: 0)
    }

    public func row(_ key: UInt64) -> ReferenceRow { rows[key] ?? initialRow(key) }

    public func values(_ keys: [UInt64]) -> [Float] { keys.flatMap { row($0).values } }

    /// Duplicates summed in batch order, then one step per key, as the store documents.
    public mutating func apply(_ keys: [UInt64], _ gradients: [Float], learningRate: Float? = nil) {
        let d = spec.dimension
        var order: [UInt64] = []
        var sums: [UInt64: [Float]] = [:]
        for (i, key) in keys.enumerated() {
            let g = Array(gradients[i * d ..< (i + 1) * d])
            if var s = sums[key] {
                for j in 0..<d { s[j] += g[j] }
                sums[key] = s
            } else {
                sums[key] = g
                order.append(key)
            }
        }
        let rate = learningRate ?? spec.optimizer.learningRate
        for key in order {
            var r = row(key)
            r.updateCount += 1
            let g = sums[key]!
            let count = r.updateCount
            r.values.withUnsafeMutableBufferPointer { v in
                r.state.withUnsafeMutableBufferPointer { s in
                    g.withUnsafeBufferPointer { gp in
                        spec.optimizer.apply(
                            values: v.baseAddress!, state: s.baseAddress ?? UnsafeMutablePointer(bitPattern: 8)!,
                            gradient: gp.baseAddress!, dimension: d, step: count, learningRate: rate)
                    }
                }
                spec.storage.round(v.baseAddress!, count: d)
            }
            rows[key] = r
        }
    }

    public mutating func remove(_ keys: [UInt64]) {
        for key in keys { rows[key] = nil }
    }

    /// Rows set outright, as `Table.assign` without state or counts: the values rounded to
    /// the storage type, a fresh optimizer state, count 0.
    public mutating func assign(_ keys: [UInt64], values: [Float]) {
        let d = spec.dimension
        for (i, key) in keys.enumerated() {
            var r = initialRow(key)
            r.values = Array(values[i * d ..< (i + 1) * d])
            r.values.withUnsafeMutableBufferPointer { spec.storage.round($0.baseAddress!, count: d) }
            rows[key] = r
        }
    }
}

/// Bit-level comparison: NaN payloads and signed zeros count.
public func bitIdentical(_ a: [Float], _ b: [Float]) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern }
}
