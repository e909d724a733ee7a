// A checkpoint goes to LMDB in several write transactions, so that no commit holds more
// than a bounded number of dirty pages (they are resident while it commits, and a single
// transaction for millions of changed rows would be gigabytes). Between those transactions
// LMDB holds neither checkpoint, so every row write first saves the value it replaces in an
// undo journal, in the same transaction. The checkpoint's last transaction writes the catalog
// and the checkpoint record and empties the journal. Until then `meta/pending` says a
// checkpoint is under way; opening the store, or the next checkpoint after a failed one, puts
// the saved values back (last first, in bounded transactions too) and drops the databases
// the interrupted checkpoint created.
//
// A two-phase checkpoint (`Store.beginCheckpoint(payload:twoPhase:)`, for runs over several
// processes whose stores must all keep the same checkpoint) ends its last transaction
// undecided instead: the catalog, record and payload are written, `pending` and the journal
// stay, and `meta/prepared` holds the generation and the meta values it replaced. Either end
// is then one transaction: committing empties the journal and removes both markers;
// abandoning puts the meta values back and removes `prepared`, after which the roll-back
// restores the rows as for any interrupted checkpoint.
import CLMDB

@_spi(Testing) public struct CheckpointJournal {
    @_spi(Testing) public static let pendingName = "pending"
    @_spi(Testing) public static let databaseName = "undo"

    /// Which of a table's two databases an entry restores.
    enum Target: UInt8 {
        case rows = 0
        case deletions = 1

        func databaseName(table: Int) -> String { self == .rows ? "rows.\(table)" : "deleted.\(table)" }
    }

    /// An entry: target (1 byte), whether a value was there (1), 2 unused, table id (4),
    /// key (8), then the old value.
    private static let headerSize = 16

    private let database: LMDBDatabase
    /// Tables whose databases this checkpoint creates: a roll-back drops those databases
    /// whole, so their writes need no entries (a training run's first checkpoint writes every
    /// row of every table).
    private let created: Set<Int>
    /// Sequence number of the next entry; entries are keyed by it so that rolling back
    /// walks them last first.
    private(set) var next: UInt64 = 0
    private var entry: [UInt8] = []

    /// Starts a checkpoint's journal in `txn`: creates the journal database and records
    /// `pending` with the generation and the tables whose databases this checkpoint creates.
    static func begin(_ txn: borrowing LMDBWriteTransaction, meta: LMDBDatabase, generation: UInt64,
                      createdTables: [Int]) throws(LMDBError) -> CheckpointJournal {
        let database = try txn.createDatabase(databaseName, integerKeys: true)
        var marker = withUnsafeBytes(of: generation.littleEndian) { Array($0) }
        for id in createdTables { marker += withUnsafeBytes(of: UInt32(id).littleEndian) { Array($0) } }
        try txn.put(meta, name: pendingName, marker)
        return CheckpointJournal(database: database, created: Set(createdTables))
    }

    /// Ends the checkpoint in its last transaction: the journal is emptied and `pending`
    /// removed, so the commit of `txn` is the moment the checkpoint happens.
    func finish(_ txn: borrowing LMDBWriteTransaction, meta: LMDBDatabase) throws(LMDBError) {
        try txn.drop(database, delete: false)
        try txn.delete(meta, name: Self.pendingName)
    }

    @_spi(Testing) public static let preparedName = "prepared"

    /// Saves, in a two-phase checkpoint's last transaction and before they are overwritten,
    /// the meta values `names` hold (absent ones as absent), with the checkpoint's generation.
    static func prepare(_ txn: borrowing LMDBWriteTransaction, meta: LMDBDatabase, generation: UInt64,
                        replacing names: [String]) throws(LMDBError) {
        var blob = withUnsafeBytes(of: generation.littleEndian) { Array($0) }
        func u32(_ v: Int) { withUnsafeBytes(of: UInt32(v).littleEndian) { blob += $0 } }
        u32(names.count)
        for name in names {
            let key = Array(name.utf8)
            u32(key.count)
            blob += key
            if let old = try txn.get(meta, name: name) {
                blob.append(1)
                u32(old.count)
                blob += old
            } else {
                blob.append(0)
            }
        }
        try txn.put(meta, name: preparedName, blob)
    }

    /// The generation of an undecided two-phase checkpoint, or nil when there is none.
    static func preparedGeneration(_ txn: borrowing LMDBWriteTransaction, meta: LMDBDatabase) throws(LMDBError) -> UInt64? {
        guard let blob = try txn.get(meta, name: preparedName) else { return nil }
        guard blob.count >= 12 else { throw LMDBError(code: MDB_CORRUPTED, function: "meta/prepared is \(blob.count) bytes long") }
        return blob.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
    }

    /// Decides an undecided checkpoint: `commit` keeps it (the journal emptied, the markers
    /// removed); otherwise the meta values it replaced come back and `prepared` goes, leaving
    /// `pending` and the journal for `rollBack`.
    static func decidePrepared(_ txn: borrowing LMDBWriteTransaction, meta: LMDBDatabase, commit: Bool) throws(LMDBError) {
        guard let blob = try txn.get(meta, name: preparedName) else { return }
        if commit {
            if let journal = try txn.openDatabase(databaseName, integerKeys: true) { try txn.drop(journal, delete: false) }
            _ = try txn.delete(meta, name: pendingName)
            _ = try txn.delete(meta, name: preparedName)
            return
        }
        var at = 8
        func take(_ n: Int) throws(LMDBError) -> ArraySlice<UInt8> {
            guard n >= 0, blob.count - at >= n else { throw LMDBError(code: MDB_CORRUPTED, function: "meta/prepared ends early") }
            defer { at += n }
            return blob[at..<(at + n)]
        }
        func u32() throws(LMDBError) -> Int { Int(try take(4).reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }) }
        for _ in 0..<(try u32()) {
            let name = String(decoding: try take(try u32()), as: UTF8.self)
            if try take(1).first == 1 {
                try txn.put(meta, name: name, Array(try take(try u32())))
            } else {
                _ = try txn.delete(meta, name: name)
            }
        }
        guard at == blob.count else { throw LMDBError(code: MDB_CORRUPTED, function: "meta/prepared has \(blob.count - at) bytes left over") }
        _ = try txn.delete(meta, name: preparedName)
    }

    /// Writes `value` under `key` in `db`, first saving what it replaces. With `append`, `key`
    /// is past every key in `db` (see `LMDBWriteTransaction.put`), so nothing is replaced.
    mutating func put(_ txn: borrowing LMDBWriteTransaction, _ db: LMDBDatabase, _ target: Target, table: Int,
                      _ key: UInt64, _ value: UnsafeRawBufferPointer, append: Bool = false) throws(LMDBError) {
        try save(txn, db, target, table: table, key, mustExist: false, absent: append)
        try txn.put(db, key, value, append: append)
    }

    /// Deletes `key` from `db`, first saving what was there (nothing when it was absent).
    mutating func delete(_ txn: borrowing LMDBWriteTransaction, _ db: LMDBDatabase, _ target: Target, table: Int,
                         _ key: UInt64) throws(LMDBError) {
        try save(txn, db, target, table: table, key, mustExist: true)
        try txn.delete(db, key)
    }

    private mutating func save(_ txn: borrowing LMDBWriteTransaction, _ db: LMDBDatabase, _ target: Target,
                               table: Int, _ key: UInt64, mustExist: Bool, absent: Bool = false) throws(LMDBError) {
        if created.contains(table) { return }
        let old = absent ? nil : try txn.get(db, key)
        if old == nil && mustExist { return }
        entry.removeAll(keepingCapacity: true)
        entry.append(target.rawValue)
        entry.append(old == nil ? 0 : 1)
        entry += [0, 0]
        withUnsafeBytes(of: UInt32(table).littleEndian) { entry += $0 }
        withUnsafeBytes(of: key.littleEndian) { entry += $0 }
        // Copied before the journal's own put, which may move pages of this transaction.
        if let old { entry += old }
        let failure = entry.withUnsafeBytes { b -> LMDBError? in
            // Entries are numbered upwards from an empty journal.
            do throws(LMDBError) { try txn.put(database, next, b, append: true) } catch { return error }
            return nil
        }
        if let failure { throw failure }
        next += 1
    }

    /// Puts back what an interrupted checkpoint replaced, if `meta/pending` says one was under
    /// way, in transactions of at most `entriesPerTransaction` entries. Returns the number of
    /// entries restored, or nil if there was no interrupted checkpoint. Idempotent: an
    /// interruption of the roll-back itself leaves a journal the next call finishes.
    ///
    /// A checkpoint that failed on a full map left little room, so when a transaction meets a
    /// full map it is undone and tried again with half the entries: each commit frees the
    /// pages of the values and entries it replaced for the next.
    static func rollBack(_ environment: LMDBEnvironment, entriesPerTransaction: Int) throws(LMDBError) -> Int? {
        precondition(entriesPerTransaction > 0)
        var restored: Int? = nil
        var limit = entriesPerTransaction
        while true {
            let step: (restored: Int, finished: Bool)?
            do throws(LMDBError) {
                step = try rollBackStep(environment, limit: limit)
            } catch {
                guard error.isMapFull, limit > 1 else { throw error }
                limit /= 2
                continue
            }
            guard let step else { return restored }
            restored = (restored ?? 0) + step.restored
            if step.finished { return restored }
        }
    }

    /// One transaction of `rollBack`: restores up to `limit` entries, last first, and once the
    /// journal is empty drops the databases the checkpoint created and the marker. Nil when
    /// there is no marker.
    private static func rollBackStep(_ environment: LMDBEnvironment, limit: Int) throws(LMDBError) -> (restored: Int, finished: Bool)? {
        let txn = try environment.beginWrite()
        guard let meta = try txn.openDatabase("meta", integerKeys: false),
              let marker = try txn.get(meta, name: pendingName) else { return nil }
        guard let journal = try txn.openDatabase(databaseName, integerKeys: true) else {
            throw LMDBError(code: MDB_CORRUPTED, function: "a checkpoint is pending but its undo journal is missing")
        }
        var batch: [(sequence: UInt64, entry: [UInt8])] = []
        try txn.forEachFromLast(journal) { sequence, bytes in
            batch.append((sequence, Array(bytes)))
            return batch.count < limit
        }
        var databases: [String: LMDBDatabase] = [:]
        for (sequence, entry) in batch {
            guard entry.count >= headerSize, let target = Target(rawValue: entry[0]) else {
                throw LMDBError(code: MDB_CORRUPTED, function: "undo journal entry \(sequence) is malformed")
            }
            let table = Int(entry.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self)) })
            let key = entry.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) }
            let name = target.databaseName(table: table)
            let db: LMDBDatabase
            if let known = databases[name] {
                db = known
            } else {
                guard let opened = try txn.openDatabase(name, integerKeys: true) else {
                    throw LMDBError(code: MDB_CORRUPTED, function: "undo journal entry \(sequence) names \(name), which is missing")
                }
                db = opened
                databases[name] = opened
            }
            if entry[1] == 1 {
                let failure = entry.withUnsafeBytes { b -> LMDBError? in
                    do throws(LMDBError) { try txn.put(db, key, UnsafeRawBufferPointer(rebasing: b[headerSize...])) } catch { return error }
                    return nil
                }
                if let failure { throw failure }
            } else {
                try txn.delete(db, key)
            }
            try txn.delete(journal, sequence)
        }
        let finished = batch.count < limit
        if finished {
            var ids = marker.dropFirst(8)
            while ids.count >= 4 {
                let id = Int(ids.prefix(4).reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
                ids = ids.dropFirst(4)
                for target in [Target.rows, .deletions] {
                    if let db = try txn.openDatabase(target.databaseName(table: id), integerKeys: true) {
                        try txn.drop(db, delete: true)
                    }
                }
            }
            try txn.delete(meta, name: pendingName)
        }
        try txn.commit()
        return (batch.count, finished)
    }
}
