// Tables sharded over the ranks of an MPI run. Every key of a table has one owner rank, and
// only the owner's store holds its row and optimizer state. A step exchanges, for all of the
// network's tables at once:
//
//   fetch  each rank sends its distinct keys to their owners (one all-to-all of the counts,
//          one all-to-all-v of the keys); an owner looks up the distinct keys it was sent,
//          in one store call a table, and sends each requester its rows back.
//   step   each rank sends its summed gradient of every key it fetched to the key's owner;
//          the owner adds them up in rank order (rank 0's first), adds λ · row once, and
//          applies one optimizer step a table.
//
// So a row gets one optimizer step a batch, from the sum of every rank's gradients, as in a
// run of one process over the whole batch. The sum's order is fixed (ranks in order, each
// rank's own sum over its samples in order), so a run is the same bits every time; it is
// not the one process's order over the batch, so it can differ from it in the last bits.
import StrataMPI
import StrataModels
import StrataNN
import StrataStore

/// Which rank owns a key of a table: Lamping and Veach's jump consistent hash ("A fast,
/// minimal memory, consistent hash algorithm", 2014) of the key mixed with the table's
/// namespace. Stable across runs and builds; going from n to n + 1 ranks moves 1/(n + 1) of
/// the keys, the fewest any scheme can.
public enum KeyOwner {
    public static func rank(of key: UInt64, namespace: UInt64, ranks: Int) -> Int {
        var k = SplitMix64.mix(namespace ^ key)
        var b: Int64 = -1, j: Int64 = 0
        while j < Int64(ranks) {
            b = j
            k = k &* 2_862_933_555_777_941_757 &+ 1
            j = Int64(Double(b + 1) * (Double(Int64(1) << 31) / Double((k >> 33) + 1)))
        }
        return Int(b)
    }
}

final class ShardedRows: RowExchange {
    private let world: Communicator
    /// Bytes this rank sent to and received from other ranks, over the training steps'
    /// exchanges (an evaluation's are not counted).
    private(set) var traffic = Traffic()
    /// Whether the exchange in progress is a training step's.
    private var counting = false

    struct Traffic: Sendable {
        var bytesSent: Int64 = 0
        var bytesReceived: Int64 = 0
    }

    // The last fetch's plan, which the step's gradients follow back. Counts by (rank, table) are
    // at rank · tables + table.
    private var tables = 0
    private var namespaces: [UInt64] = []
    private var dimensions: [Int] = []
    /// Keys this rank sends to each (owner, table), and keys each (requester, table) sent it.
    private var sentCounts: [Int32] = []
    private var receivedCounts: [Int32] = []
    /// Per rank: keys sent and received, and floats (rows or gradients) for them.
    private var keyCounts = Exchange(), floatCounts = Exchange()
    /// The keys sent, owner by owner, table by table, each table's in distinct-key order; and
    /// each one's index among its table's distinct keys.
    private var sentKeys: [UInt64] = []
    private var sentSlots: [Int32] = []
    private var owners: [Int32] = []
    private var receivedKeys: [UInt64] = []
    private var outgoing: [Float] = []
    private var incoming: [Float] = []
    /// The owner's side, a table each, and where each (requester, table)'s first key is among
    /// that table's received keys.
    private var served: [Served] = []
    private var servedStarts: [Int] = []

    /// What this rank serves of one table in a step. The tables' store calls run on threads
    /// of their own (`Parallel`), each on its own `Served`.
    final class Served {
        let table: Table
        let dimension: Int
        let weightDecay: Float
        /// The keys received, requester by requester, then kept once.
        var keys: [UInt64] = []
        var distinct = KeyDeduplicator()
        /// Rows of the distinct keys, then their summed gradients.
        var rows: [Float] = []
        var gradients: [Float] = []

        init(_ lookup: TableLookup) {
            table = lookup.table
            dimension = lookup.dimension
            weightDecay = lookup.weightDecay
        }

        /// The distinct keys' rows from the store.
        func fetch(training: Bool) throws(StoreError) {
            let n = keys.withUnsafeBufferPointer { distinct.run($0) } * dimension
            if rows.count < n { rows = [Float](repeating: 0, count: n) }
            try distinct.uniqueKeys.withUnsafeBufferPointer { (k) throws(StoreError) in
                try rows.withUnsafeMutableBufferPointer { (all) throws(StoreError) in
                    let r = UnsafeMutableBufferPointer(rebasing: all[..<n])
                    if training { try table.lookup(k, into: r) } else { try table.peek(k, into: r) }
                }
            }
        }

        /// Each received key's distinct row, and the rows (or the summed gradients).
        func withBuffers(gradients: Bool, _ body: (UnsafeBufferPointer<Int32>, UnsafeMutableBufferPointer<Float>) -> Void) {
            distinct.positions.withUnsafeBufferPointer { at in
                if gradients { self.gradients.withUnsafeMutableBufferPointer { body(at, $0) } } else { rows.withUnsafeMutableBufferPointer { body(at, $0) } }
            }
        }

        /// Zeroes the summed gradients of the distinct keys.
        func clearGradients() {
            let n = distinct.uniqueKeys.count * dimension
            if gradients.count < n { gradients = [Float](repeating: 0, count: n) }
            gradients.withUnsafeMutableBufferPointer { $0[..<n].update(repeating: 0) }
        }

        /// λ · row added once, then one optimizer step of the distinct rows.
        func step(learningRate: Float?) throws(StoreError) {
            let n = distinct.uniqueKeys.count * dimension
            if weightDecay != 0 {
                gradients.withUnsafeMutableBufferPointer { g in
                    rows.withUnsafeBufferPointer { r in for i in 0..<n { g[i] += weightDecay * r[i] } }
                }
            }
            try distinct.uniqueKeys.withUnsafeBufferPointer { (k) throws(StoreError) in
                try gradients.withUnsafeBufferPointer { (g) throws(StoreError) in
                    try table.applyGradients(k, UnsafeBufferPointer(rebasing: g[..<n]), learningRate: learningRate)
                }
            }
        }
    }

    /// Counts and offsets of one all-to-all-v, both directions.
    struct Exchange {
        var sendCounts: [Int32] = [], sendOffsets: [Int32] = []
        var receiveCounts: [Int32] = [], receiveOffsets: [Int32] = []

        mutating func set(ranks: Int, send: (Int) -> Int, receive: (Int) -> Int) throws(MPIError) {
            func fill(_ counts: inout [Int32], _ offsets: inout [Int32], _ count: (Int) -> Int) throws(MPIError) {
                counts.removeAll(keepingCapacity: true)
                offsets.removeAll(keepingCapacity: true)
                var at = 0
                for r in 0..<ranks {
                    let n = count(r)
                    guard let c = Int32(exactly: n), let o = Int32(exactly: at) else {
                        throw MPIError("MPI_Alltoallv", refused: "\(at + n) values in one exchange: MPI counts stop at \(Int32.max); use a smaller batch")
                    }
                    counts.append(c)
                    offsets.append(o)
                    at += n
                }
            }
            try fill(&sendCounts, &sendOffsets, send)
            try fill(&receiveCounts, &receiveOffsets, receive)
        }

        /// The all-to-all-v of `send` (sendTotal values) into `receive` (receiveTotal).
        func run<T: MPIScalar>(_ world: Communicator, _ send: UnsafeBufferPointer<T>, into receive: UnsafeMutableBufferPointer<T>) throws(MPIError) {
            try sendCounts.withUnsafeBufferPointer { (sc) throws(MPIError) in
                try sendOffsets.withUnsafeBufferPointer { (so) throws(MPIError) in
                    try receiveCounts.withUnsafeBufferPointer { (rc) throws(MPIError) in
                        try receiveOffsets.withUnsafeBufferPointer { (ro) throws(MPIError) in
                            try world.alltoallv(send, counts: sc, offsets: so, into: receive, counts: rc, offsets: ro)
                        }
                    }
                }
            }
        }

        var sendTotal: Int { Int(sendOffsets.last ?? 0) + Int(sendCounts.last ?? 0) }
        var receiveTotal: Int { Int(receiveOffsets.last ?? 0) + Int(receiveCounts.last ?? 0) }
    }

    init(world: Communicator) {
        self.world = world
    }

    func fetch(_ lookups: [TableLookup], training: Bool) throws {
        let n = world.size
        counting = training
        prepare(lookups)
        // Each distinct key's owner, and the keys laid out owner by owner, table by table.
        sentCounts = [Int32](repeating: 0, count: n * tables)
        owners.removeAll(keepingCapacity: true)
        for (t, lookup) in lookups.enumerated() {
            lookup.withDistinct { keys, _, _ in
                for key in keys {
                    let o = KeyOwner.rank(of: key, namespace: namespaces[t], ranks: n)
                    owners.append(Int32(o))
                    sentCounts[o * tables + t] += 1
                }
            }
        }
        var cursor = [Int](repeating: 0, count: n * tables)
        var at = 0
        for i in 0..<(n * tables) {
            cursor[i] = at
            at += Int(sentCounts[i])
        }
        resize(&sentKeys, at)
        resize(&sentSlots, at)
        var i = 0
        for (t, lookup) in lookups.enumerated() {
            lookup.withDistinct { keys, _, _ in
                for (slot, key) in keys.enumerated() {
                    let c = Int(owners[i]) * tables + t
                    sentKeys[cursor[c]] = key
                    sentSlots[cursor[c]] = Int32(slot)
                    cursor[c] += 1
                    i += 1
                }
            }
        }
        receivedCounts = [Int32](repeating: 0, count: n * tables)
        try sentCounts.withUnsafeBufferPointer { (s) throws(MPIError) in
            try receivedCounts.withUnsafeMutableBufferPointer { (r) throws(MPIError) in try world.alltoall(s, into: r) }
        }
        count(bytes: 4 * n * tables)
        let t = tables
        try keyCounts.set(ranks: n, send: { r in (0..<t).reduce(0) { $0 + Int(self.sentCounts[r * t + $1]) } },
                          receive: { r in (0..<t).reduce(0) { $0 + Int(self.receivedCounts[r * t + $1]) } })
        try floatCounts.set(ranks: n, send: { r in (0..<t).reduce(0) { $0 + Int(self.sentCounts[r * t + $1]) * self.dimensions[$1] } },
                            receive: { r in (0..<t).reduce(0) { $0 + Int(self.receivedCounts[r * t + $1]) * self.dimensions[$1] } })
        resize(&receivedKeys, keyCounts.receiveTotal)
        try exchange(sentKeys, into: &receivedKeys, keyCounts)

        // The owner's side: each table's keys from every requester, kept once, looked up once.
        resize(&outgoing, floatCounts.receiveTotal)
        for t in 0..<tables {
            served[t].keys.removeAll(keepingCapacity: true)
            for s in 0..<n {
                let start = start(of: s, table: t)
                servedStarts[s * tables + t] = served[t].keys.count
                served[t].keys.append(contentsOf: receivedKeys[start..<(start + Int(receivedCounts[s * tables + t]))])
            }
        }
        let owned = served
        try Parallel.forEach(owned.count) { (t) throws(StoreError) in try owned[t].fetch(training: training) }
        // Rows back in the order their keys came: requester by requester, table by table.
        outgoing.withUnsafeMutableBufferPointer { out in
            eachReceived(gradients: false) { rows, at, f, d in
                for c in 0..<d { out[f + c] = rows[at + c] }
            }
        }
        resize(&incoming, floatCounts.sendTotal)
        try exchange(outgoing, into: &incoming, floatCounts.reversed)
        // Each row into its lookup's slot.
        incoming.withUnsafeBufferPointer { into in
            eachSent(lookups, gradients: false) { rows, at, f, d in
                for c in 0..<d { rows[at + c] = into[f + c] }
            }
        }
    }

    func step(_ lookups: [TableLookup], learningRate: Float?) throws {
        precondition(lookups.count == tables, "a step follows the fetch of the same lookups")
        // Each distinct key's summed gradient, in the order its key was sent.
        resize(&incoming, floatCounts.sendTotal)
        incoming.withUnsafeMutableBufferPointer { out in
            eachSent(lookups, gradients: true) { gradients, at, f, d in
                for c in 0..<d { out[f + c] = gradients[at + c] }
            }
        }
        resize(&outgoing, floatCounts.receiveTotal)
        try exchange(incoming, into: &outgoing, floatCounts)
        // The owner's sums, requester by requester (rank order), then the decay, then one step.
        let owned = served
        for table in owned { table.clearGradients() }
        outgoing.withUnsafeBufferPointer { from in
            eachReceived(gradients: true) { sums, at, f, d in
                for c in 0..<d { sums[at + c] += from[f + c] }
            }
        }
        try Parallel.forEach(owned.count) { (t) throws(StoreError) in try owned[t].step(learningRate: learningRate) }
    }

    // MARK: Parts

    /// Sizes the per-table state for these lookups (the same every step of a run).
    private func prepare(_ lookups: [TableLookup]) {
        guard tables != lookups.count || served.map({ ObjectIdentifier($0.table) }) != lookups.map({ ObjectIdentifier($0.table) }) else { return }
        tables = lookups.count
        namespaces = lookups.map { FeatureSchema.namespace($0.table.name) }
        dimensions = lookups.map(\.dimension)
        served = lookups.map(Served.init)
        servedStarts = [Int](repeating: 0, count: world.size * tables)
    }

    /// Walks the keys the last fetch sent, in the order sent (owner by owner, table by table),
    /// calling `body` with the key's lookup's rows (or, with `gradients`, its summed
    /// gradients), the key's row in them, its row's place among the floats exchanged, and the
    /// dimension.
    private func eachSent(_ lookups: [TableLookup], gradients: Bool,
                          _ body: (UnsafeMutableBufferPointer<Float>, Int, Int, Int) -> Void) {
        var f = 0, k = 0
        for r in 0..<world.size {
            for (t, lookup) in lookups.enumerated() {
                let d = dimensions[t]
                lookup.withDistinct { _, rows, sums in
                    for _ in 0..<Int(sentCounts[r * tables + t]) {
                        body(gradients ? sums : rows, Int(sentSlots[k]) * d, f, d)
                        f += d
                        k += 1
                    }
                }
            }
        }
    }

    /// Walks the keys the last fetch received, in the order received (requester by requester,
    /// table by table), calling `body` with the key's table's served rows (or, with
    /// `gradients`, its summed gradients), the key's distinct row in them, its row's place among
    /// the floats exchanged, and the dimension.
    private func eachReceived(gradients: Bool, _ body: (UnsafeMutableBufferPointer<Float>, Int, Int, Int) -> Void) {
        var f = 0
        for s in 0..<world.size {
            for (t, table) in served.enumerated() {
                let d = table.dimension, first = servedStarts[s * served.count + t], count = Int(receivedCounts[s * served.count + t])
                table.withBuffers(gradients: gradients) { at, values in
                    for j in 0..<count {
                        body(values, Int(at[first + j]) * d, f, d)
                        f += d
                    }
                }
            }
        }
    }

    /// Where requester s's keys of table t start among the received keys.
    private func start(of s: Int, table t: Int) -> Int {
        var at = Int(keyCounts.receiveOffsets[s])
        for u in 0..<t { at += Int(receivedCounts[s * tables + u]) }
        return at
    }

    private func exchange<T: MPIScalar>(_ send: [T], into receive: inout [T], _ plan: Exchange) throws(MPIError) {
        try send.withUnsafeBufferPointer { (s) throws(MPIError) in
            try receive.withUnsafeMutableBufferPointer { (r) throws(MPIError) in
                try plan.run(world, UnsafeBufferPointer(rebasing: s[..<plan.sendTotal]),
                             into: UnsafeMutableBufferPointer(rebasing: r[..<plan.receiveTotal]))
            }
        }
        // What crossed to other ranks: this rank's own share stays in the process.
        guard counting else { return }
        let size = MemoryLayout<T>.stride
        traffic.bytesSent += Int64((plan.sendTotal - Int(plan.sendCounts[world.rank])) * size)
        traffic.bytesReceived += Int64((plan.receiveTotal - Int(plan.receiveCounts[world.rank])) * size)
    }

    private func count(bytes: Int) {
        guard counting else { return }
        let others = Int64(bytes * (world.size - 1) / max(world.size, 1))
        traffic.bytesSent += others
        traffic.bytesReceived += others
    }

    private func resize<T: Numeric>(_ a: inout [T], _ n: Int) {
        if a.count < n { a.append(contentsOf: repeatElement(0, count: n - a.count)) }
    }
}

extension ShardedRows.Exchange {
    /// The same exchange the other way.
    var reversed: Self {
        Self(sendCounts: receiveCounts, sendOffsets: receiveOffsets, receiveCounts: sendCounts, receiveOffsets: sendOffsets)
    }
}
