// A training run over the ranks of one `mpirun`: hybrid parallel, as in the DLRM paper and
// TorchRec. The embedding tables are sharded (`ShardedRows`: each key's row lives on one
// rank, in that rank's own store); the dense weights are replicated, and their gradients are
// summed over the ranks every step, in rank order, so that every rank holds the same bits.
//
// The data: every rank reads the same global batch (the per-rank batch times the ranks) and
// trains on its part, rank r the r-th of N equal runs of whole groups. So N ranks see exactly
// the batches one process with the global batch sees, and every rank reaches the same ends
// of epoch and the same checkpoints. The reading (not the training) is repeated on each rank.
//
// The loss is the mean over the global batch: each rank divides its sum by the whole batch's
// count of terms (`Loss.evaluate(meanOver:)`), so that the summed gradients are the one
// process's.
//
// Concurrency: one `Cluster` per process, used from the training thread (see `Communicator`).
import Foundation
public import StrataMPI
import StrataModels
import StrataNN
public import StrataStore

public final class Cluster {
    public let world: Communicator
    let rows: ShardedRows
    /// The dense gradients, packed, and the sums of this rank's share of them.
    private var packed: [Float] = []
    private var share: [Float] = []
    private var denseTraffic = ShardedRows.Traffic()

    /// The number of shards `openShard` moved the rows from, when it re-sharded.
    public private(set) var reshardedFrom: Int?
    /// Tests only: called on every rank at each point of a re-sharding (`resharded`: this
    /// rank's new shard is written; `switched`: rank 0 has switched the manifest), so that a
    /// test can end the process there.
    public var atReshardPoint: (@Sendable (String) -> Void)?

    public init(world: Communicator) {
        self.world = world
        rows = ShardedRows(world: world)
    }

    public var rank: Int { world.rank }
    public var ranks: Int { world.size }

    /// Bytes this rank sent to other ranks and received from them so far: rows, gradients and
    /// their keys (`ShardedRows`), and dense gradients.
    public var bytesSent: Int64 { rows.traffic.bytesSent + denseTraffic.bytesSent }
    public var bytesReceived: Int64 { rows.traffic.bytesReceived + denseTraffic.bytesReceived }
    /// Of `bytesSent`, the dense gradients' share.
    public var denseBytesSent: Int64 { denseTraffic.bytesSent }

    /// Opens this rank's shard of the set at `directory` (`ShardSet.lay`), first re-sharding
    /// a set of another number of ranks when resuming, and settles a two-phase checkpoint a
    /// stopped run left undecided as the run decided it: rank 0 keeps its own first, so rank
    /// 0's last checkpoint is the run's. Rank 0 abandons an undecided one of its own (no rank
    /// can have kept it); every other rank keeps one up to rank 0's generation and abandons a
    /// later one. `open` opens (or creates) a store with the options given. Every rank calls
    /// it; rank 0 decides and the others get its answer, so all fail alike.
    public func openShard(_ directory: String, resume: Bool, overwrite: Bool, options: Store.Options,
                          open: (String, Store.Options) throws -> Store) throws -> Store {
        var answer: [UInt8] = []
        if rank == 0 {
            do {
                let before = try ShardSet.lay(directory, ranks: ranks, resume: resume, overwrite: overwrite)
                answer = withUnsafeBytes(of: Int64(before ?? 0)) { [0] + Array($0) }
            } catch {
                answer = [1] + Array("\(error)".utf8)
            }
        }
        try world.broadcast(&answer, root: 0)
        guard answer.first == 0 else { throw ShardSetError(description: String(decoding: answer.dropFirst(), as: UTF8.self)) }
        let before = Int(answer.dropFirst().withUnsafeBytes { $0.loadUnaligned(as: Int64.self) })
        if before != 0 && before != ranks {
            return try reshard(directory, from: before, options: options, open: open)
        }
        let (_, generation) = try decide(ranks: ranks) { r, decision in
            var o = options
            o.undecidedCheckpoint = decision
            return try open(ShardSet.shardPath(directory, rank: r, of: ranks), o)
        }
        return generation!
    }

    /// Opens shard r of `shards` with the decision above, on rank r % ranks, shards in order;
    /// returns rank 0's generation and, for a set of this run's size, this rank's shard, open.
    private func decide(ranks shards: Int, open: (Int, Store.UndecidedCheckpoint) throws -> Store) throws -> (UInt64, Store?) {
        var mine: Store?
        var first = withUnsafeBytes(of: UInt64(0)) { Array($0) }
        if rank == 0 {
            let store = try open(0, .rollBack)
            first = withUnsafeBytes(of: store.lastCheckpoint.generation) { Array($0) }
            if shards == ranks { mine = store } else { try store.close() }
        }
        try world.broadcast(&first, root: 0)
        let generation = first.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        for r in stride(from: rank == 0 ? ranks : rank, to: shards, by: ranks) where r != 0 {
            let store = try open(r, .commitThrough(generation: generation))
            if shards == ranks { mine = store } else { try store.close() }
        }
        return (generation, mine)
    }

    /// Moves every row of the set of `old` shards at `directory` to its owner among this run's
    /// ranks: each rank writes a new store of its rows (values, optimizer state, update count)
    /// with the run's checkpoint payload, then rank 0 switches `shards.json` to the new set
    /// and removes the old one. Returns this rank's new shard, open.
    private func reshard(_ directory: String, from old: Int, options: Store.Options,
                         open: (String, Store.Options) throws -> Store) throws -> Store {
        // Every old shard at the run's last checkpoint, none undecided.
        _ = try decide(ranks: old) { r, decision in
            var o = options
            o.undecidedCheckpoint = decision
            o.create = false
            let path = ShardSet.shardPath(directory, rank: r, of: old)
            guard FileManager.default.fileExists(atPath: path) else {
                throw ShardSetError(description: "the shard set \(directory) lacks shard \(r) of its \(old) (\(path)): it cannot be re-sharded without every row; bring the shard back")
            }
            return try open(path, o)
        }
        try world.barrier()
        let path = ShardSet.shardPath(directory, rank: rank, of: ranks)
        try Store.remove(at: path)
        let store = try open(path, options)
        var payload: [UInt8]?
        for r in 0..<old {
            let source = try Store(readerAt: ShardSet.shardPath(directory, rank: r, of: old))
            defer { try? source.close() }
            let saved = source.lastCheckpoint.payload
            guard payload == nil || payload == saved else {
                throw ShardSetError(description: "the shards of \(directory) hold different checkpoint payloads (shard \(r)'s differs from shard 0's): they are not one run's")
            }
            payload = saved
            for name in source.tableNames {
                let from = try source.table(name)
                let into = store.tableNames.contains(name) ? try store.table(name) : try store.createTable(name, from.spec)
                let namespace = FeatureSchema.namespace(name)
                try from.scanCheckpoint { rows in
                    var keys: [UInt64] = [], values: [Float] = [], state: [Float] = [], counts: [UInt64] = []
                    for i in 0..<rows.count where KeyOwner.rank(of: rows.keys[i], namespace: namespace, ranks: ranks) == rank {
                        keys.append(rows.keys[i])
                        values += rows.values(at: i)
                        state += rows.state[(i * rows.stateCount)..<((i + 1) * rows.stateCount)]
                        counts.append(rows.updateCounts[i])
                    }
                    try keys.withUnsafeBufferPointer { k in
                        try values.withUnsafeBufferPointer { v in
                            try state.withUnsafeBufferPointer { s in
                                try counts.withUnsafeBufferPointer { c in try into.assign(k, values: v, state: s, updateCounts: c) }
                            }
                        }
                    }
                }
            }
        }
        try store.checkpoint(payload: payload ?? [])
        atReshardPoint?("resharded")
        try world.barrier()
        if rank == 0 {
            try ShardSet.writeManifest(directory, ranks: ranks)
            atReshardPoint?("switched")
            try ShardSet.removeFolder(ShardSet.folder(directory, ranks: old))
        }
        try world.barrier()
        reshardedFrom = old
        return store
    }

    /// This rank's rows of a global batch of `count` rows in groups of `groupSize`: the r-th of
    /// N runs of whole groups, the first `groups % N` ranks one group more.
    public func part(of count: Int, groupSize: Int) -> Range<Int> {
        let groups = count / groupSize, n = ranks, r = rank
        let first = r * (groups / n) + min(r, groups % n)
        let size = groups / n + (r < groups % n ? 1 : 0)
        return (first * groupSize)..<((first + size) * groupSize)
    }

    /// Whether this rank owns a key of table t of `tables` (`KeyOwner`).
    func owns(_ tables: [String]) -> @Sendable (Int, UInt64) -> Bool {
        let namespaces = tables.map(FeatureSchema.namespace), rank = rank, ranks = ranks
        return { t, key in KeyOwner.rank(of: key, namespace: namespaces[t], ranks: ranks) == rank }
    }

    /// Whether `flag` holds on every rank.
    public func all(_ flag: Bool) throws(MPIError) -> Bool {
        var value: [Int32] = [flag ? 1 : 0]
        try value.withUnsafeMutableBufferPointer { (v) throws(MPIError) in try world.allreduce(v, .min) }
        return value[0] == 1
    }

    /// Σ over ranks of `value`, added in rank order: the same bits on every rank.
    public func sum<T: MPIScalar & AdditiveArithmetic>(_ value: T) throws(MPIError) -> T {
        try world.allgather(value).reduce(.zero, +)
    }

    /// Replaces every parameter's gradient by its sum over the ranks, each element added in
    /// rank order, so that every rank gets the same bits whatever MPI's own reduction order:
    /// a reduce-scatter (rank j sums the j-th of N slices: all-to-all-v, then a sum in rank
    /// order), then an all-gather of the sums. Each rank sends and receives (N − 1)/N of the
    /// gradients twice, as a ring all-reduce does.
    func sumGradients(_ parameters: [Parameter]) throws(MPIError) {
        let n = ranks
        let total = parameters.reduce(0) { $0 + $1.gradient.count }
        guard n > 1, total > 0 else { return }
        if packed.count < total { packed = [Float](repeating: 0, count: total) }
        var at = 0
        for p in parameters {
            let g = p.gradient
            packed.withUnsafeMutableBufferPointer { b in (b.baseAddress! + at).update(from: g.data, count: g.count) }
            at += g.count
        }
        let slice = { (r: Int) in (r * total / n)..<((r + 1) * total / n) }
        let mine = slice(rank)
        if share.count < n * mine.count { share = [Float](repeating: 0, count: n * mine.count) }
        var plan = ShardedRows.Exchange()
        try plan.set(ranks: n, send: { slice($0).count }, receive: { _ in mine.count })
        try packed.withUnsafeBufferPointer { (p) throws(MPIError) in
            try share.withUnsafeMutableBufferPointer { (s) throws(MPIError) in
                try plan.run(world, UnsafeBufferPointer(rebasing: p[..<total]), into: UnsafeMutableBufferPointer(rebasing: s[..<(n * mine.count)]))
            }
        }
        // Rank 0's value, plus rank 1's, plus rank 2's...
        packed.withUnsafeMutableBufferPointer { p in
            share.withUnsafeBufferPointer { s in
                for j in 0..<mine.count {
                    var v = s[j]
                    for r in 1..<n { v += s[r * mine.count + j] }
                    p[mine.lowerBound + j] = v
                }
            }
        }
        var gather = ShardedRows.Exchange()
        try gather.set(ranks: n, send: { _ in 0 }, receive: { slice($0).count })
        try share.withUnsafeMutableBufferPointer { (s) throws(MPIError) in
            let out = UnsafeMutableBufferPointer(rebasing: s[..<mine.count])
            _ = packed.withUnsafeBufferPointer { p in out.update(fromContentsOf: p[mine]) }
            try packed.withUnsafeMutableBufferPointer { (p) throws(MPIError) in
                try gather.receiveCounts.withUnsafeBufferPointer { (c) throws(MPIError) in
                    try gather.receiveOffsets.withUnsafeBufferPointer { (o) throws(MPIError) in
                        try world.allgatherv(UnsafeBufferPointer(out), into: UnsafeMutableBufferPointer(rebasing: p[..<total]), counts: c, offsets: o)
                    }
                }
            }
        }
        at = 0
        for p in parameters {
            let g = p.gradient
            packed.withUnsafeBufferPointer { b in g.data.update(from: b.baseAddress! + at, count: g.count) }
            at += g.count
        }
        // Out: the other slices, then this one to every other rank; in: the same amounts.
        let crossed = Int64(4 * (total - mine.count + (n - 1) * mine.count))
        denseTraffic.bytesSent += crossed
        denseTraffic.bytesReceived += crossed
    }
}
