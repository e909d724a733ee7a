// A named table: the batch API over its shards.
//
// A batch flows: keys -> (updates only) duplicates summed -> hashes -> keys grouped by shard
// -> each shard, under its lock, serves its keys from hot, warm, spill or LMDB.
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Memory a table may use: `hotBytes` of anonymous memory for hot rows and `warmBytes` of
/// memory-mapped file for warm rows. Index and admission bookkeeping come on top
/// (`TableStatistics.bytes.overhead` reports it).
public struct TierBudget: Sendable, Equatable, Codable {
    public var hotBytes: Int
    public var warmBytes: Int

    public init(hotBytes: Int, warmBytes: Int) {
        precondition(hotBytes >= 0 && warmBytes >= 0, "budgets cannot be negative")
        self.hotBytes = hotBytes
        self.warmBytes = warmBytes
    }
}

/// One table of a store. All methods are safe to call from many threads at once; batches on
/// different shards run in parallel, and a checkpoint waits for batches in flight.
///
/// On error a lookup's output is unspecified. An update batch is checked whole for
/// non-finite gradients before anything is applied; a later failure (a corrupted record, a
/// full disk) can leave rows of shards already visited updated, which a checkpoint would
/// then keep. Durable state only changes at `Store.checkpoint`.
public final class Table: @unchecked Sendable {
    // @unchecked: the shards live behind raw pointers, each reached only through its lock;
    // everything else is immutable or atomic.

    public let name: String
    public let spec: TableSpec
    public let budget: TierBudget
    @_spi(Testing) public let id: Int
    @_spi(Testing) public let format: RowFormat
    let store: StoreCore
    let directory: String
    @_spi(Testing) public let spill: SpillFile

    @_spi(Testing) public let shardCount: Int
    private let shardShift: UInt64
    private let shards: UnsafeMutablePointer<Locked<Shard>>
    let hotArena: HotArena
    private let warm: WarmFile?
    let hotCapacity: Int
    @_spi(Testing) public let warmCapacity: Int
    /// Saved warm rows not taken back at open because their slot did not check out.
    let warmSlotsDropped: Int

    /// LMDB handles once a checkpoint has created this table's databases; `.max` before.
    private let rowsHandle: Atomic<UInt32>
    private let deletionsHandle: Atomic<UInt32>
    /// Rows LMDB holds for this table, as of the last checkpoint.
    let persistedRows: Atomic<Int>
    let lastCheckpoint = Locked(CheckpointTotals())

    /// Traffic of earlier opens, as of the last checkpoint (from `meta/traffic.<id>`).
    let trafficBeforeOpen: TableStatistics.Traffic

    var warmPath: String { directory + "/warm.slab" }
    var warmIndexPath: String { directory + "/warm.index" }

    init(store: StoreCore, id: Int, name: String, spec: TableSpec, budget: TierBudget,
         databases: (rows: LMDBDatabase, deletions: LMDBDatabase)?, persistedRows: Int,
         warmRows: WarmIndexFile.Contents?, trafficBeforeOpen: TableStatistics.Traffic = .init()) throws(StoreError) {
        self.store = store
        self.trafficBeforeOpen = trafficBeforeOpen
        self.id = id
        self.name = name
        self.spec = spec
        self.budget = budget
        format = RowFormat(spec)
        let recordSize = format.layout.recordSize
        directory = store.path + "/tables/\(id)"

        let hotRows = budget.hotBytes / recordSize
        guard hotRows >= 1 else {
            throw .impossibleBudget(table: name, detail: "the hot budget of \(budget.hotBytes) bytes holds no row of \(recordSize) bytes")
        }
        // Up to 16 shards: threads rarely meet on a lock, and a batch's share of each stays
        // large enough to pipeline; at least 128 hot rows a shard keep admission decisions
        // sound. The count follows from the budget alone, so a store reopened on another
        // machine keeps its warm tier; it decides placement, never a value.
        var count = 1
        while count < 16 && count * 2 * 128 <= hotRows { count *= 2 }
        shardCount = count
        shardShift = UInt64(64 - count.trailingZeroBitCount)
        let hotPerShard = hotRows / count
        let warmPerShard = budget.warmBytes / recordSize / count
        guard hotPerShard <= Int(IndexEntry.slotMask), warmPerShard <= Int(IndexEntry.slotMask) else {
            throw .impossibleBudget(table: name, detail: "more than 2^30 rows per shard in one tier")
        }
        hotCapacity = hotPerShard * count
        warmCapacity = warmPerShard * count

        rowsHandle = Atomic(databases?.rows.handle ?? .max)
        deletionsHandle = Atomic(databases?.deletions.handle ?? .max)
        self.persistedRows = Atomic(persistedRows)

        do {
            // A reader's rows never change, and the directory and its spill file are the writer's.
            if store.isReader {
                spill = SpillFile(unbackedFor: directory + "/spill.slab", recordSize: recordSize)
            } else {
                try makeDirectories(directory)
                spill = try SpillFile(path: directory + "/spill.slab", recordSize: recordSize)
            }
            hotArena = try HotArena(recordSize: recordSize, shards: count, slotsPerShard: hotPerShard)
        } catch {
            throw store.fileFailure(error)
        }

        // Warm rows saved by a clean close come back if the saved index describes this file
        // exactly; the index is then consumed, as it stops describing the file once rows move.
        var reused: [[(key: UInt64, slot: Int)]]? = nil
        if warmCapacity > 0 {
            let fits = warmRows?.matches(recordSize: recordSize, shards: count, slotsPerShard: warmPerShard) == true
            do {
                let file = try WarmFile(path: directory + "/warm.slab", bytes: warmCapacity * recordSize, keep: fits)
                if file.kept { reused = warmRows?.rowsByShard }
                warm = file
            } catch {
                throw store.fileFailure(error)
            }
        } else {
            warm = nil
        }
        // Gone for good before any row moves, even across a power cut. Without a warm tier no
        // warm row moves, so the index stays for the next open that has one (the offline
        // tools open stores so).
        if warmCapacity > 0 && fileExists(directory + "/warm.index") {
            do {
                try removeFile(directory + "/warm.index")
                try syncDirectory(directory)
            } catch {
                throw store.fileFailure(error)
            }
        }

        shards = .allocate(capacity: count)
        var dropped = 0
        let warmBase = warm?.base
        for s in 0..<count {
            let shardWarm = warmBase.map { $0 + s * warmPerShard * recordSize }
            var shard = Shard(
                hotCapacity: hotPerShard,
                warmCapacity: warmPerShard, warmBase: shardWarm, warmOffset: s * warmPerShard * recordSize, layout: format.layout)
            if let reused, let shardWarm {
                // Keep only entries that belong to this shard and whose slot holds that key,
                // intact.
                let (layout, shift) = (format.layout, shardShift)
                let rows = reused[s].filter { row in
                    let record = RowRecord(shardWarm + row.slot * recordSize, layout)
                    return (count == 1 || Int(KeyHash.of(row.key) &>> shift) == s)
                        && record.key == row.key && record.isIntact(layout)
                }
                dropped += reused[s].count - rows.count
                shard.adoptWarm(rows)
            }
            (shards + s).initialize(to: Locked(shard))
        }
        warmSlotsDropped = dropped
    }

    deinit {
        shards.deinitialize(count: shardCount)
        shards.deallocate()
    }

    var rowsDatabase: LMDBDatabase? {
        let h = rowsHandle.load(ordering: .relaxed)
        return h == .max ? nil : LMDBDatabase(handle: h)
    }

    var deletionsDatabase: LMDBDatabase? {
        let h = deletionsHandle.load(ordering: .relaxed)
        return h == .max ? nil : LMDBDatabase(handle: h)
    }

    // MARK: Batch API

    /// Copies the rows of `keys` into `out` (`keys.count × dimension` floats, row after row)
    /// and brings them to the hot tier. Rows never written read as the initializer's values.
    public func lookup(_ keys: UnsafeBufferPointer<UInt64>, into out: UnsafeMutableBufferPointer<Float>) throws(StoreError) {
        let d = format.layout.dimension
        try checkShape(keys.count * d, out.count, "a lookup of \(keys.count) keys")
        try forEachGroup(keys) { (shard, group, scratch) throws(StoreError) in
            try shard.lookup(group, into: out.baseAddress!, self, &scratch)
        }
    }

    /// Like `lookup`, but for inference: rows stay where they are and no counter changes.
    public func peek(_ keys: UnsafeBufferPointer<UInt64>, into out: UnsafeMutableBufferPointer<Float>) throws(StoreError) {
        let d = format.layout.dimension
        try checkShape(keys.count * d, out.count, "a lookup of \(keys.count) keys")
        try forEachGroup(keys) { (shard, group, scratch) throws(StoreError) in
            try shard.peek(group, into: out.baseAddress!, self, &scratch)
        }
    }

    /// One optimizer step for the rows of `keys`. `gradients` holds `keys.count × dimension`
    /// floats. A key that appears more than once gets one step with the sum of its gradients
    /// (summed in batch order). If any gradient is NaN or infinite, or a step would make a
    /// value (as stored) or an optimizer state element NaN or infinite, the whole batch is
    /// rejected and nothing changes. `learningRate` overrides the table's for this batch. The
    /// batch holds all its shards' locks while it applies: no reader sees half of it.
    public func applyGradients(_ keys: UnsafeBufferPointer<UInt64>, _ gradients: UnsafeBufferPointer<Float>,
                               learningRate: Float? = nil) throws(StoreError) {
        try store.ensureWritable("applyGradients on table '\(name)'")
        let d = format.layout.dimension
        try checkShape(keys.count * d, gradients.count, "gradients for \(keys.count) keys")
        if let bad = firstNonFinite(gradients) {
            throw .nonFiniteGradient(table: name, key: keys[bad / d], element: bad % d)
        }
        let rate = learningRate ?? format.optimizer.learningRate
        if let reason = format.optimizer.learningRateProblem(rate) {
            throw .invalidLearningRate(table: name, value: rate, reason: reason)
        }
        let unique = UniqueKeys(keys, gradients, dimension: d)
        try unique.withBuffers { (ukeys, ugrads) throws(StoreError) in
            // Finite gradients of a repeated key can still sum to infinity.
            if unique.hasDuplicates, let bad = firstNonFinite(UnsafeBufferPointer(start: ugrads, count: ukeys.count * d)) {
                throw .nonFiniteGradient(table: name, key: ukeys[bad / d], element: bad % d)
            }
            try withGroupsLocked(ukeys) { (shard, group, scratch) throws(StoreError) in
                try shard.stage(group, gradients: ugrads, learningRate: rate, self, &scratch)
            } commit: { (shard, group, scratch) throws(StoreError) in
                // Read under the checkpoint lock, which holds the stamp still.
                try shard.commit(group, stamp: store.changeStamp.load(ordering: .relaxed), self, &scratch)
            }
        }
    }

    /// Sets rows outright, as an import of pretrained or exported embeddings does: row `i`
    /// becomes `values` row `i` (rounded to the storage type), with `state` row `i` and
    /// `updateCounts[i]` when given, else a fresh optimizer state and count 0. Keys must be
    /// distinct; values and state finite. The next checkpoint makes the rows durable.
    public func assign(_ keys: UnsafeBufferPointer<UInt64>, values: UnsafeBufferPointer<Float>,
                       state: UnsafeBufferPointer<Float>? = nil,
                       updateCounts: UnsafeBufferPointer<UInt64>? = nil) throws(StoreError) {
        try store.ensureWritable("assign on table '\(name)'")
        let layout = format.layout
        try checkShape(keys.count * layout.dimension, values.count, "values for \(keys.count) keys")
        if let state { try checkShape(keys.count * layout.stateCount, state.count, "optimizer state for \(keys.count) keys") }
        if let updateCounts { try checkShape(keys.count, updateCounts.count, "update counts for \(keys.count) keys") }
        // Checked as stored: a float16 table turns 70000 into infinity.
        var rounded = Array(values)
        rounded.withUnsafeMutableBufferPointer { format.storage.round($0.baseAddress!, count: $0.count) }
        if let bad = rounded.withUnsafeBufferPointer({ firstNonFinite($0) }) {
            throw .invalidRows(table: name, reason: "value \(bad % layout.dimension) of key \(keys[bad / layout.dimension]) "
                + "(\(values[bad])) is not finite as \(spec.storage.rawValue)")
        }
        if let state, layout.stateCount > 0, let bad = firstNonFinite(state) {
            throw .invalidRows(table: name, reason: "optimizer state \(bad % layout.stateCount) of key \(keys[bad / layout.stateCount]) is not finite")
        }
        var seen = Set<UInt64>(minimumCapacity: keys.count)
        for key in keys where !seen.insert(key).inserted {
            throw .invalidRows(table: name, reason: "key \(key) appears more than once")
        }
        try forEachGroup(keys) { (shard, group, scratch) throws(StoreError) in
            let stamp = store.changeStamp.load(ordering: .relaxed)
            try shard.assign(group, values: values.baseAddress!, state: state?.baseAddress, counts: updateCounts?.baseAddress,
                             stamp: stamp, self, &scratch)
        }
    }

    /// Removes rows: they read as the initializer's values again, and the next checkpoint
    /// deletes them from disk and records their keys as deleted.
    public func remove(_ keys: UnsafeBufferPointer<UInt64>) throws(StoreError) {
        try store.ensureWritable("remove on table '\(name)'")
        try forEachGroup(keys) { (shard, group, scratch) throws(StoreError) in
            for m in group.members {
                let i = group.index(m)
                try shard.remove(group.keys[i], group.hashes[i], self, &scratch)
            }
        }
    }

    /// Everything about one row, without moving it.
    public func row(_ key: UInt64) throws(StoreError) -> RowSnapshot {
        let layout = format.layout
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: layout.recordSize, alignment: 16)
        defer { buffer.deallocate() }
        let record = RowRecord(buffer, layout)
        var placement = RowPlacement.initial
        try [key].withUnsafeBufferPointer { (keys) throws(StoreError) in
            try forEachGroup(keys) { (shard, group, scratch) throws(StoreError) in
                placement = try shard.snapshot(key, group.hashes[0], into: record, self, &scratch)
            }
        }
        return RowSnapshot(
            key: key, placement: placement,
            values: Array(UnsafeBufferPointer(start: record.values, count: layout.dimension)),
            optimizerState: Array(UnsafeBufferPointer(start: record.state(layout), count: layout.stateCount)),
            updateCount: record.updateCount, changeGeneration: record.changeGeneration)
    }

    // MARK: Array conveniences

    public func lookup(_ keys: [UInt64]) throws(StoreError) -> [Float] {
        try withOutput(keys.count) { (out) throws(StoreError) in
            try keys.withUnsafeBufferPointer { (k) throws(StoreError) in try lookup(k, into: out) }
        }
    }

    public func peek(_ keys: [UInt64]) throws(StoreError) -> [Float] {
        try withOutput(keys.count) { (out) throws(StoreError) in
            try keys.withUnsafeBufferPointer { (k) throws(StoreError) in try peek(k, into: out) }
        }
    }

    public func applyGradients(_ keys: [UInt64], _ gradients: [Float], learningRate: Float? = nil) throws(StoreError) {
        try keys.withUnsafeBufferPointer { (k) throws(StoreError) in
            try gradients.withUnsafeBufferPointer { (g) throws(StoreError) in
                try applyGradients(k, g, learningRate: learningRate)
            }
        }
    }

    public func remove(_ keys: [UInt64]) throws(StoreError) {
        try keys.withUnsafeBufferPointer { (k) throws(StoreError) in try remove(k) }
    }

    private func withOutput(_ count: Int, _ body: (UnsafeMutableBufferPointer<Float>) throws(StoreError) -> Void) throws(StoreError) -> [Float] {
        var out = [Float](repeating: 0, count: count * format.layout.dimension)
        try out.withUnsafeMutableBufferPointer { (o) throws(StoreError) in try body(o) }
        return out
    }

    // MARK: Shard traversal

    private func checkShape(_ expected: Int, _ actual: Int, _ what: String) throws(StoreError) {
        if expected != actual { throw .shapeMismatch(table: name, expected: expected, actual: actual, what: what) }
    }

    /// Groups keys by shard and calls `body` once per shard that has keys, under that shard's
    /// lock, with the store's checkpoint lock held shared throughout.
    @inline(__always)
    private func forEachGroup(
        _ keys: UnsafeBufferPointer<UInt64>,
        _ body: (inout Shard, ShardGroup, inout BatchScratch) throws(StoreError) -> Void
    ) throws(StoreError) {
        try planned(keys, staging: false) { (plan, scratch) throws(StoreError) in
            for s in 0..<shardCount where !plan.members(of: s).isEmpty {
                try shards[s].withLock { (shard) throws(StoreError) in try body(&shard, plan.group(s, keys), &scratch) }
            }
        }
    }

    /// Runs `stage` on each shard's share of `keys`, taking the shards' locks in order and
    /// holding them all, then, if none threw, `commit` on each, and only then lets them go:
    /// a batch either changes every row or, when a stage throws, none, and no other call sees
    /// part of it (a commit that fails on I/O leaves the rows committed before it changed).
    /// Locks are taken in ascending order and every other path holds one at a time, so this
    /// cannot deadlock.
    private func withGroupsLocked(
        _ keys: UnsafeBufferPointer<UInt64>,
        stage: (inout Shard, ShardGroup, inout BatchScratch) throws(StoreError) -> Void,
        commit: (inout Shard, ShardGroup, inout BatchScratch) throws(StoreError) -> Void
    ) throws(StoreError) {
        try planned(keys, staging: true) { (plan, scratch) throws(StoreError) in
            /// Locks the first shard from `first` on that has keys, and the rest inside it.
            func lock(from first: Int, _ plan: borrowing ShardPlan) throws(StoreError) {
                var s = first
                while s < shardCount && plan.members(of: s).isEmpty { s += 1 }
                guard s < shardCount else { return }
                let group = plan.group(s, keys)
                try shards[s].withLock { (shard) throws(StoreError) in
                    try stage(&shard, group, &scratch)
                    try lock(from: s + 1, plan)
                    try commit(&shard, group, &scratch)
                }
            }
            try lock(from: 0, plan)
        }
    }

    /// The batch's plan and scratch (with a staging block for an update), under the
    /// checkpoint lock, for `forEachGroup` and `withGroupsLocked`.
    private func planned(_ keys: UnsafeBufferPointer<UInt64>, staging: Bool,
                         _ body: (borrowing ShardPlan, inout BatchScratch) throws(StoreError) -> Void) throws(StoreError) {
        guard !keys.isEmpty else { return }
        try store.lock.shared { () throws(StoreError) in
            try store.ensureOpen()
            let block = staging ? store.staging.take(keys.count * format.layout.recordSize) : nil
            defer { if let block { store.staging.give(block) } }
            var scratch = BatchScratch(self, keys: keys.count, staged: block?.memory)
            let plan = ShardPlan(keys, shardCount: shardCount, shift: shardShift)
            try body(plan, &scratch)
        }
    }

    /// Rows changed or removed since the last checkpoint froze rows (counting repeats): about
    /// what the next one writes.
    var changedRows: Int {
        var count = 0
        withEachShard { count += $0.dirtyKeys.count }
        return count
    }

    /// Runs `body` on every shard in turn (statistics, checkpoints, close).
    @_spi(Testing) public func withEachShard<E: Error>(_ body: (inout Shard) throws(E) -> Void) throws(E) {
        for s in 0..<shardCount {
            try shards[s].withLock { (shard) throws(E) in try body(&shard) }
        }
    }

    // MARK: Checkpoint and close

    /// Freezes the rows changed so far for a checkpoint (the store holds its lock
    /// exclusively); returns their keys, by shard.
    func freeze() -> [[UInt64]] {
        var keys: [[UInt64]] = []
        keys.reserveCapacity(shardCount)
        withEachShard { keys.append($0.freeze()) }
        return keys
    }

    /// The frozen keys, sorted, each once: the order a checkpoint writes them in, so that
    /// consecutive writes share LMDB pages.
    static func writingOrder(_ frozen: [[UInt64]]) -> [UInt64] {
        var keys = Array(frozen.joined())
        keys.sort()
        var unique = 0
        for key in keys where unique == 0 || keys[unique - 1] != key {
            keys[unique] = key
            unique += 1
        }
        keys.removeLast(keys.count - unique)
        return keys
    }

    /// Writes the frozen rows of `keys[start...]` into `txn` through `journal`, until the
    /// transaction has written to `pageLimit` pages. Returns the index of the first key not
    /// written. Changes nothing in memory. Each row is encoded under its shard's lock and
    /// written to LMDB after it, so a batch waits for at most one row's encoding.
    func writeChanges(_ keys: [UInt64], from start: Int, _ txn: borrowing LMDBWriteTransaction,
                      rows: LMDBDatabase, deletions: LMDBDatabase, generation: UInt64, pageLimit: Int,
                      journal: inout CheckpointJournal, totals: inout CheckpointTotals) throws(StoreError) -> Int {
        var scratch = BatchScratch(self)
        var i = start
        // Keys ascend, so those past the table's last stored key go at the end of its B-tree,
        // in full pages (see `LMDBWriteTransaction.put`): a table written in key order.
        let lastStored: UInt64?
        do { lastStored = try txn.lastKey(rows) } catch { throw store.lmdbFailure(error) }
        while i < keys.count && txn.pagesWritten < pageLimit {
            let key = keys[i]
            let s = shardCount == 1 ? 0 : Int(KeyHash.of(key) &>> shardShift)
            let change = try shards[s].withLock { (shard) throws(StoreError) in try shard.frozenChange(key, self, &scratch) }
            do throws(LMDBError) {
                switch change {
                case .none: break
                case .delete:
                    var stamp = generation
                    try journal.delete(txn, rows, .rows, table: id, key)
                    try withUnsafeBytes(of: &stamp) { (b) throws(LMDBError) in
                        try journal.put(txn, deletions, .deletions, table: id, key, b)
                    }
                    store.noteMapTraffic(16)
                    totals.deleted += 1
                    totals.bytes += 16
                case .write(let bytes):
                    try journal.put(txn, rows, .rows, table: id, key, bytes, append: lastStored.map { key > $0 } ?? true)
                    store.noteMapTraffic(bytes.count)
                    totals.written += 1
                    totals.bytes += bytes.count + 8
                }
            } catch {
                throw store.lmdbFailure(error)
            }
            i += 1
        }
        return i
    }

    /// Ends the checkpoint that froze `frozen` (from `freeze`), durable or failed.
    /// Ends the checkpoint that froze `frozen`: durable with `written` (the table's LMDB
    /// handles, its record count and the checkpoint's totals), or failed (nil). Holds
    /// `lastCheckpoint` throughout, as `statistics` does, so counts never mix the new LMDB
    /// with rows not yet marked as written.
    func checkpointEnded(_ frozen: [[UInt64]], written: (rows: LMDBDatabase, deletions: LMDBDatabase, entries: Int,
                                                         totals: CheckpointTotals)?) {
        lastCheckpoint.withLock { last in
            if let written {
                rowsHandle.store(written.rows.handle, ordering: .relaxed)
                deletionsHandle.store(written.deletions.handle, ordering: .relaxed)
                persistedRows.store(written.entries, ordering: .relaxed)
                last = written.totals
            }
            for s in 0..<shardCount {
                // In slices: a batch waits for one slice, not a shard's whole checkpoint.
                for start in stride(from: 0, to: frozen[s].count, by: 4096) {
                    let slice = frozen[s][start..<min(start + 4096, frozen[s].count)]
                    shards[s].withLock { shard in
                        if written != nil { shard.checkpointCommitted(slice, self) } else { shard.checkpointFailed(slice) }
                    }
                }
                shards[s].withLock { $0.settle(durable: written != nil) }
            }
        }
    }

    /// Saves the warm rows that LMDB holds exactly, so the next open starts with them.
    func saveWarmTier(generation: UInt64) throws(StoreError) {
        guard let warm else { return }
        var rows: [[(key: UInt64, slot: Int)]] = []
        withEachShard { shard in rows.append(shard.cleanWarmRows()) }
        do {
            try warm.sync()
            try WarmIndexFile.write(
                WarmIndexFile.Contents(
                    generation: generation, recordSize: format.layout.recordSize, shards: shardCount,
                    slotsPerShard: warmCapacity / shardCount, rowsByShard: rows),
                to: warmIndexPath)
        } catch {
            throw store.fileFailure(error)
        }
    }

    /// Recounts every shard and traps on any disagreement (tests call this; it is O(rows in
    /// memory)). Only in builds with STRATA_INVARIANTS (debug); elsewhere it does nothing.
    public func checkInvariants() {
        #if STRATA_INVARIANTS
        withEachShard { $0.checkInvariants(self) }
        #endif
    }

    // MARK: Errors with file names

    @inline(__always)
    ///
    /// A key LMDB does not find reads as never written, so its absence is checked: the
    /// records either side of it must be sound and in order. A damaged leaf page, where LMDB
    /// can miss a key that is there, throws `.corrupted` instead of serving the initializer.
    func coldGet(_ key: UInt64, _ scratch: inout BatchScratch) throws(StoreError) -> UnsafeRawBufferPointer? {
        guard let db = rowsDatabase else { return nil }
        let bytes: UnsafeRawBufferPointer?
        do { bytes = try scratch.reader.get(db, key) } catch { throw damagedPages(near: key, error) }
        store.noteMapTraffic(bytes?.count ?? 0)
        if bytes == nil && persistedRows.load(ordering: .relaxed) > 0 { try confirmAbsent(key, db, &scratch) }
        return bytes
    }

    private func confirmAbsent(_ key: UInt64, _ db: LMDBDatabase, _ scratch: inout BatchScratch) throws(StoreError) {
        let found: (below: (key: UInt64, value: UnsafeRawBufferPointer)?, above: (key: UInt64, value: UnsafeRawBufferPointer)?)
        do { found = try scratch.reader.neighbours(db, of: key) } catch { throw damagedPages(near: key, error) }
        func damaged(_ detail: String) -> StoreError {
            .corrupted(file: store.dataPath, detail: "table '\(name)': key \(key) is not found, and \(detail): LMDB's pages are damaged")
        }
        guard found.below != nil || found.above != nil else {
            throw damaged("no key is, though the last checkpoint holds \(persistedRows.load(ordering: .relaxed)) rows")
        }
        for (neighbour, isBelow) in [(found.below, true), (found.above, false)] {
            guard let n = neighbour else { continue }
            guard isBelow ? n.key < key : n.key > key else { throw damaged("the key beside it is \(n.key)") }
            do throws(RecordProblem) { try scratch.codec.checkChecksum(n.value, key: n.key) } catch {
                throw damaged("the record of key \(n.key) beside it fails its check (\(error))")
            }
        }
    }

    /// Reserves disk blocks of the warm file for slots about to be written (`Shard`).
    func reserveWarm(from offset: Int, bytes: Int) throws(StoreError) {
        do { try warm!.reserve(from: offset, bytes: bytes) } catch { throw store.fileFailure(error) }
    }

    func corruptWarmSlot(_ slot: Int, key: UInt64) -> StoreError {
        .corrupted(file: warmPath, detail: "table '\(name)' slot \(slot) (key \(key)): checksum or key mismatch")
    }

    func lostWarmRow(_ slot: Int, key: UInt64) -> StoreError {
        .corrupted(file: warmPath, detail: "table '\(name)' slot \(slot) (key \(key)) failed its checksum; the row's "
            + "changes since the last checkpoint are lost and it reads as it was then")
    }

    func corruptSpillSlot(_ slot: Int, key: UInt64) -> StoreError {
        .corrupted(file: spill.path, detail: "table '\(name)' slot \(slot) (key \(key)): checksum or key mismatch")
    }

    func corruptColdRecord(_ key: UInt64, _ problem: RecordProblem) -> StoreError {
        if case .newerVersion(let v) = problem {
            return .newerFormat(file: store.dataPath, found: Int(v), supported: Int(ColdRecord.version))
        }
        return .corrupted(file: store.dataPath, detail: "table '\(name)' key \(key): \(problem)")
    }

    func spillFailure(_ error: SystemError) -> StoreError {
        store.fileFailure(error)
    }
}

/// Everything about one row.
public struct RowSnapshot: Sendable, Equatable, Codable {
    public var key: UInt64
    public var placement: RowPlacement
    public var values: [Float]
    public var optimizerState: [Float]
    public var updateCount: UInt64
    /// The checkpoint generation that holds (or will hold) the row's last change.
    public var changeGeneration: UInt64
}

// MARK: - Batch preparation

/// Keys' hashes and their order grouped by shard (a counting sort), in one allocation.
struct ShardPlan: ~Copyable {
    let hashes: UnsafeMutablePointer<UInt64>
    let order: UnsafeMutablePointer<Int32>
    private let starts: UnsafeMutablePointer<Int>
    private let memory: UnsafeMutableRawPointer

    @inline(__always)
    init(_ keys: UnsafeBufferPointer<UInt64>, shardCount: Int, shift: UInt64) {
        let n = keys.count
        memory = .allocate(byteCount: n * 8 + n * 4 + (shardCount + 1) * 8 + 16, alignment: 16)
        hashes = memory.bindMemory(to: UInt64.self, capacity: n)
        starts = (memory + n * 8).bindMemory(to: Int.self, capacity: shardCount + 1)
        order = (memory + n * 8 + (shardCount + 1) * 8).bindMemory(to: Int32.self, capacity: n)
        for i in 0..<n { hashes[i] = KeyHash.of(keys[i]) }
        if shardCount == 1 {
            starts[0] = 0
            starts[1] = n
            for i in 0..<n { order[i] = Int32(i) }
            return
        }
        starts.initialize(repeating: 0, count: shardCount + 1)
        for i in 0..<n { starts[Int(hashes[i] &>> shift) + 1] += 1 }
        for s in 0..<shardCount { starts[s + 1] += starts[s] }
        // Fill in key order within each shard, using starts[s] as a cursor, then shift back.
        for i in 0..<n {
            let s = Int(hashes[i] &>> shift)
            order[starts[s]] = Int32(i)
            starts[s] += 1
        }
        for s in stride(from: shardCount, to: 0, by: -1) { starts[s] = starts[s - 1] }
        starts[0] = 0
    }

    deinit { memory.deallocate() }

    @inline(__always)
    func members(of shard: Int) -> Range<Int> { starts[shard]..<starts[shard + 1] }

    /// Shard `s`'s share of `keys`, the batch this plan was made for.
    @inline(__always)
    func group(_ s: Int, _ keys: UnsafeBufferPointer<UInt64>) -> ShardGroup {
        ShardGroup(keys: keys.baseAddress!, hashes: hashes, order: order, members: members(of: s))
    }
}

/// An update batch with duplicate keys merged: the keys in order of first appearance and, when
/// there were duplicates, their gradients summed in batch order.
@_spi(Testing) public struct UniqueKeys: ~Copyable {
    private let keys: UnsafeBufferPointer<UInt64>
    private let gradients: UnsafeBufferPointer<Float>
    private var merged: UnsafeMutableRawPointer?
    private var uniqueCount: Int

    @_spi(Testing) public init(_ keys: UnsafeBufferPointer<UInt64>, _ gradients: UnsafeBufferPointer<Float>, dimension d: Int) {
        self.keys = keys
        self.gradients = gradients
        let n = keys.count
        uniqueCount = n
        merged = nil
        guard n > 1 else { return }
        var distinct = KeyDeduplicator()
        let unique = distinct.run(keys)
        guard unique < n else { return }
        uniqueCount = unique
        let memory = UnsafeMutableRawPointer.allocate(byteCount: unique * 8 + unique * d * 4, alignment: 16)
        merged = memory
        let outKeys = memory.bindMemory(to: UInt64.self, capacity: unique)
        let outGrads = (memory + unique * 8).bindMemory(to: Float.self, capacity: unique * d)
        var seen = 0
        for i in 0..<n {
            let u = Int(distinct.positions[i])
            let src = gradients.baseAddress! + i * d, dst = outGrads + u * d
            if u == seen {
                outKeys[u] = keys[i]
                dst.initialize(from: src, count: d)
                seen += 1
            } else {
                for j in 0..<d { dst[j] += src[j] }
            }
        }
    }

    deinit { merged?.deallocate() }

    /// Whether duplicates were summed (else the caller's buffers are used as they are).
    var hasDuplicates: Bool { merged != nil }

    @_spi(Testing) public func withBuffers<R, E: Error>(_ body: (UnsafeBufferPointer<UInt64>, UnsafePointer<Float>) throws(E) -> R) throws(E) -> R {
        guard let merged else { return try body(keys, gradients.baseAddress ?? UnsafePointer(bitPattern: 16)!) }
        let k = UnsafeBufferPointer(start: merged.assumingMemoryBound(to: UInt64.self), count: uniqueCount)
        let g = UnsafePointer((merged + uniqueCount * 8).assumingMemoryBound(to: Float.self))
        return try body(k, g)
    }
}

/// The position of the first NaN or infinity, or nil. Multiplying by zero maps every finite
/// value to zero and the rest to NaN, so a vector sum finds out in one pass.
@_spi(Testing) public func firstNonFinite(_ values: UnsafeBufferPointer<Float>) -> Int? {
    guard let base = values.baseAddress else { return nil }
    let n = values.count
    var acc = SIMD16<Float>(repeating: 0)
    var i = 0
    let raw = UnsafeRawPointer(base)
    while i + 16 <= n {
        acc += raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self) * 0
        i += 16
    }
    var tail: Float = 0
    while i < n { tail += base[i] * 0; i += 1 }
    if !(acc.sum() + tail).isNaN { return nil }
    return values.firstIndex { !$0.isFinite }
}

extension Table {
    /// Keys LMDB holds for this table as of the last checkpoint, in key order, at most
    /// `limit` of them (an LMDB cursor walk). Each key's record must pass its checksum, which
    /// covers the key, and a whole walk must find as many keys as LMDB counts: a damaged page
    /// throws `.corrupted` instead of dropping or inventing keys.
    public func storedKeys(limit: Int = .max) throws(StoreError) -> [UInt64] {
        try store.withCheckpointSnapshot { (txn) throws(StoreError) -> [UInt64] in
            guard let db = rowsDatabase else { return [] }
            var keys: [UInt64] = []
            let codec = ColdRecord(format: format, table: id)
            var damaged: (key: UInt64, problem: RecordProblem)?
            let counted: Int
            do throws(LMDBError) {
                try txn.forEach(db) { key, bytes in
                    do throws(RecordProblem) { try codec.checkChecksum(bytes, key: key) } catch {
                        damaged = (key, error)
                        return false
                    }
                    keys.append(key)
                    return keys.count < limit
                }
                counted = try txn.statistics(db).entries
            } catch { throw damagedPages(after: keys.last, error) }
            if let damaged { throw corruptColdRecord(damaged.key, damaged.problem) }
            if keys.count < limit && keys.count != counted { throw walkMiscounted(found: keys.count, counted: counted) }
            return keys
        }
    }

    /// The baseline that benchmarks compare cold reads with: for each key, `mdb_get` and a copy
    /// of `bytesPerRow` bytes of the stored value, in one read transaction, with no checksum,
    /// decompression or decoding. It ignores hot, warm and spill, so it is not a way to read
    /// rows. Returns how many keys LMDB held. Not API: `strata bench` measures with it.
    @_spi(Baseline) public func rawColdGather(_ keys: UnsafeBufferPointer<UInt64>, into out: UnsafeMutableRawPointer,
                              bytesPerRow: Int) throws(StoreError) -> Int {
        try store.lock.shared { () throws(StoreError) -> Int in
            try store.ensureOpen()
            guard let db = rowsDatabase else { return 0 }
            var reader = LMDBLazyReader(pool: store.readers)
            var found = 0
            for (i, key) in keys.enumerated() {
                let value: UnsafeRawBufferPointer?
                do throws(LMDBError) { value = try reader.get(db, key) } catch { throw store.lmdbFailure(error) }
                if let value {
                    (out + i * bytesPerRow).copyMemory(from: value.baseAddress!, byteCount: min(bytesPerRow, value.count))
                    found += 1
                }
            }
            return found
        }
    }
}
