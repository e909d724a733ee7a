// Walks over a table's last checkpoint, for the offline tools (export, inspect, verify,
// neighbours, evict): LMDB holds every written row as of the last checkpoint, so that is
// what they read, in key order and a batch at a time, in constant memory. Changes made since
// the last checkpoint are not seen (checkpoint first). Each batch is read under the shared
// lock and in one read transaction; the body runs outside both, so a checkpoint may fall
// between two batches.

/// Rows of a table's last checkpoint, decoded. Reused from batch to batch.
public struct CheckpointRows: Sendable {
    public let dimension: Int
    /// Floats of optimizer state per row (0 when the scan skipped it).
    public let stateCount: Int
    public internal(set) var keys: [UInt64] = []
    /// `count × dimension` floats, row after row.
    public internal(set) var values: [Float] = []
    /// `count × stateCount` floats, row after row.
    public internal(set) var state: [Float] = []
    public internal(set) var updateCounts: [UInt64] = []
    /// The generation of the checkpoint that first held each row's last change.
    public internal(set) var changeGenerations: [UInt64] = []

    public var count: Int { keys.count }

    public func values(at i: Int) -> ArraySlice<Float> { values[(i * dimension)..<((i + 1) * dimension)] }

    mutating func removeAll() {
        keys.removeAll(keepingCapacity: true)
        values.removeAll(keepingCapacity: true)
        state.removeAll(keepingCapacity: true)
        updateCounts.removeAll(keepingCapacity: true)
        changeGenerations.removeAll(keepingCapacity: true)
    }
}

/// Something `Table.verify` or `Store.verify` found wrong.
public struct IntegrityProblem: Sendable, Equatable, CustomStringConvertible {
    public let table: String?
    public let key: UInt64?
    public let file: String
    public let detail: String

    public init(table: String?, key: UInt64?, file: String, detail: String) {
        self.table = table
        self.key = key
        self.file = file
        self.detail = detail
    }

    public var description: String {
        var parts: [String] = [file]
        if let table { parts.append("table '\(table)'") }
        if let key { parts.append("key \(key)") }
        return parts.joined(separator: ": ") + ": " + detail
    }
}

extension Table {
    /// How many rows the last checkpoint holds: what `scanCheckpoint` without a filter yields.
    public var checkpointRowCount: Int { persistedRows.load(ordering: .relaxed) }

    /// Calls `body` with the table's rows as of the last checkpoint, in key order, at most
    /// `batchSize` at a time. Rows changed since `changedAfter` (a generation) only, when
    /// given. Without `withState` the optimizer state is not copied. Throws `.corrupted`
    /// naming the key at the first record that fails its checks (`verify` lists them all).
    public func scanCheckpoint(batchSize: Int = 4096, changedAfter: UInt64? = nil, withState: Bool = true,
                               _ body: (CheckpointRows) throws -> Void) throws {
        precondition(batchSize > 0)
        var rows = CheckpointRows(dimension: format.layout.dimension, stateCount: withState ? format.layout.stateCount : 0)
        try walkCheckpoint(batchSize: batchSize) { key, bytes, codec, record throws(StoreError) in
            do throws(RecordProblem) { try codec.decode(bytes, key: key, into: record) } catch {
                throw corruptColdRecord(key, error)
            }
            if let after = changedAfter, record.changeGeneration <= after { return }
            rows.keys.append(key)
            rows.values.append(contentsOf: UnsafeBufferPointer(start: record.values, count: rows.dimension))
            if withState {
                rows.state.append(contentsOf: UnsafeBufferPointer(start: record.state(format.layout), count: rows.stateCount))
            }
            rows.updateCounts.append(record.updateCount)
            rows.changeGenerations.append(record.changeGeneration)
        } flush: {
            if rows.count > 0 { try body(rows) }
            rows.removeAll()
        }
    }

    /// Keys whose rows a checkpoint after `generation` deleted (by `remove`) and that no
    /// later checkpoint wrote again, in key order, with the generation that deleted them.
    public func deletedKeys(after generation: UInt64) throws(StoreError) -> [(key: UInt64, generation: UInt64)] {
        try store.withCheckpointSnapshot { (txn) throws(StoreError) -> [(key: UInt64, generation: UInt64)] in
            guard let deletions = deletionsDatabase, let rows = rowsDatabase else { return [] }
            var found: [(key: UInt64, generation: UInt64)] = []
            var failure: StoreError?
            var lmdbFailure: LMDBError?
            do throws(LMDBError) {
                try txn.forEach(deletions) { key, value in
                    guard value.count == 8 else {
                        failure = .corrupted(file: store.dataPath, detail: "table '\(name)' deletion record of key \(key) is \(value.count) bytes, not 8")
                        return false
                    }
                    let g = value.loadUnaligned(as: UInt64.self)
                    if g > generation { found.append((key, g)) }
                    return true
                }
                // A key written again after its deletion is a change, not a deletion.
                var kept: [(key: UInt64, generation: UInt64)] = []
                for entry in found where try txn.get(rows, entry.key) == nil { kept.append(entry) }
                found = kept
            } catch {
                lmdbFailure = error
            }
            if let lmdbFailure { throw store.lmdbFailure(lmdbFailure) }
            if let failure { throw failure }
            return found
        }
    }

    /// Reads every record of the last checkpoint and every row this process holds in memory
    /// and checks them: each LMDB record's header, checksum, dimension and storage type;
    /// each deletion record's size; each hot and warm slot's key and checksum against the
    /// index. Returns what is wrong, at most `limit` problems.
    public func verify(limit: Int = 1000) throws(StoreError) -> [IntegrityProblem] {
        var problems: [IntegrityProblem] = []
        if warmSlotsDropped > 0 {
            problems.append(IntegrityProblem(
                table: name, key: nil, file: warmPath,
                detail: "\(warmSlotsDropped) warm rows saved at the last close failed their key or checksum check (dropped on open; LMDB's copies are read instead)"))
        }
        do {
            try walkCheckpoint(batchSize: 4096) { key, bytes, codec, record throws(StoreError) in
                guard problems.count < limit else { return }
                do throws(RecordProblem) { try codec.decode(bytes, key: key, into: record) } catch {
                    problems.append(IntegrityProblem(table: name, key: key, file: store.dataPath, detail: error.description))
                }
            } flush: {}
        } catch StoreError.corrupted(let file, let detail) {
            problems.append(IntegrityProblem(table: name, key: nil, file: file, detail: detail))
        } catch let error as StoreError {
            throw error
        } catch {
            preconditionFailure("walkCheckpoint throws only StoreError here")
        }
        do {
            _ = try deletedKeys(after: 0)
        } catch .corrupted(let file, let detail) {
            problems.append(IntegrityProblem(table: name, key: nil, file: file, detail: detail))
        }
        var memory: [IntegrityProblem] = []
        withEachShard { shard in
            for (key, tier, slot) in shard.damagedSlots(self) where memory.count < limit {
                memory.append(IntegrityProblem(
                    table: name, key: key, file: tier == .warm ? warmPath : "hot memory",
                    detail: "slot \(slot) does not hold the row the index says, or fails its checksum"))
            }
        }
        return Array((problems + memory).prefix(limit))
    }

    /// Walks LMDB's records of this table in key order, `batchSize` per read transaction,
    /// calling `row` for each (with a codec and a record to decode into) and `flush` after
    /// each batch, outside the lock and the transaction.
    /// Throws `.corrupted` naming the last key read when LMDB fails on a damaged page, and
    /// when a walk within one checkpoint finds another number of rows than LMDB counts (a
    /// damaged page can drop keys without failing).
    private func walkCheckpoint(
        batchSize: Int,
        _ row: (UInt64, UnsafeRawBufferPointer, inout ColdRecord, RowRecord) throws(StoreError) -> Void,
        flush: () throws -> Void
    ) throws {
        var scratch = BatchScratch(self)
        let record = RowRecord(scratch.record, format.layout)
        let generation = store.generation.load(ordering: .acquiring)
        var next: UInt64? = 0
        var walked = 0, last: UInt64?
        while let start = next {
            next = nil
            try store.withCheckpointSnapshot { (txn) throws(StoreError) in
                guard let db = rowsDatabase else { return }
                var seen = 0
                var failure: StoreError?
                do throws(LMDBError) {
                    try txn.forEach(db, from: start) { key, bytes in
                        if seen == batchSize {
                            next = key
                            return false
                        }
                        seen += 1
                        record.key = key
                        do throws(StoreError) { try row(key, bytes, &scratch.codec, record) } catch {
                            failure = error
                            return false
                        }
                        last = key
                        store.noteMapTraffic(bytes.count)
                        return true
                    }
                } catch {
                    failure = damagedPages(after: last, error)
                }
                if let failure { throw failure }
                walked += seen
            }
            try flush()
        }
        let expected = checkpointRowCount
        if walked != expected && store.generation.load(ordering: .acquiring) == generation {
            throw walkMiscounted(found: walked, counted: expected)
        }
    }

    /// A whole walk of this table's records that found another number than LMDB counts.
    func walkMiscounted(found: Int, counted: Int) -> StoreError {
        .corrupted(file: store.dataPath,
                   detail: "table '\(name)': a walk of LMDB's pages found \(found) rows, its count says \(counted): pages of the table are damaged")
    }

    /// What an LMDB failure in a walk of this table's records means.
    func damagedPages(after key: UInt64?, _ error: LMDBError) -> StoreError {
        damagedPages(key.map { "after key \($0)" } ?? "before its first key", error)
    }

    /// What an LMDB failure in reading `key` means.
    func damagedPages(near key: UInt64, _ error: LMDBError) -> StoreError {
        damagedPages("holding key \(key)", error)
    }

    private func damagedPages(_ place: String, _ error: LMDBError) -> StoreError {
        guard error.isCorruption else { return store.lmdbFailure(error) }
        return .corrupted(file: store.dataPath, detail: "table '\(name)': LMDB's pages \(place) are damaged (\(error))")
    }
}
