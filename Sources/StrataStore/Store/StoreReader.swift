// Opening a store for reading while another process writes it (`strata info` beside
// `strata train`): the rules are written down once, with the others, at the top of Store.swift.
#if canImport(Glibc)
import Glibc
#endif

extension Store {
    /// How a store was opened.
    public enum Access: Sendable, Equatable {
        /// `init(path:options:)`: the one process that may write the store; it holds LOCK.
        case writer
        /// `init(readerAt:options:)`: read-only, at one checkpoint (`lastCheckpoint`). `writer`
        /// is the process that had the store open for writing then; nil when none had.
        case reader(writer: Writer?)
    }

    /// The process that has a store open for writing, as it described itself in LOCK.
    public struct Writer: Sendable, Equatable, CustomStringConvertible {
        public let pid: Int32
        /// Its program and, when its first argument is a word (a subcommand), that:
        /// "strata train". Nil when LOCK does not say.
        public let command: String?

        public init(pid: Int32, command: String?) {
            self.pid = pid
            self.command = command
        }

        /// "process 1234 (strata train)".
        public var description: String { "process \(pid)" + (command.map { " (\($0))" } ?? "") }
    }

    public var access: Access { core.access }

    /// Opens the store at `path` read-only, at the last checkpoint its writer completed, while
    /// that writer (another process, `strata train` say) goes on; or at its last checkpoint
    /// when no process has it open. The store stays at that checkpoint, every row, table and
    /// payload of it, until closed: open again to see a later one.
    ///
    /// While a checkpoint is being written LMDB holds part of it, so the open waits for it
    /// to finish (up to `options.readerWaitLimit`; `openReport` says how long it waited).
    /// Waiting costs the writer nothing: the open watches LMDB's last transaction number and
    /// takes a snapshot only when it changes.
    ///
    /// A reader writes nothing of the writer's (see the top of Store.swift): its tables keep
    /// `options`' hot budget in memory of their own and have no warm tier. Every writing call
    /// throws `.openedForReading`. What it costs the writer: while it is open, the pages its
    /// snapshot reads are not reused, so the data file may grow; it never blocks a checkpoint.
    ///
    /// Throws `.noStore` when there is none, `.locked` when this process has the store open
    /// already (LMDB allows one environment per file in a process: read through that store),
    /// `.checkpointInterrupted` when a checkpoint was left half written by a writer that is
    /// gone (opening the store with `init(path:options:)` puts it back first),
    /// `.checkpointInProgress` when a checkpoint was still being written after the wait
    /// limit, and `.newerFormat` or `.corrupted` as an open for writing would. A failed open
    /// leaves nothing behind but LMDB's lock file, which it may have made.
    public convenience init(readerAt path: String, options: Options = Options()) throws(StoreError) {
        let dataPath = path + "/rows.mdb"
        guard fileExists(dataPath) else { throw .noStore(path: path) }
        let registration = try StoreLockFile(readerOf: path + "/LOCK")
        try Self.checkLength(of: dataPath)
        let environment: LMDBEnvironment
        do {
            let mapSize = (max(fileSize(dataPath) ?? 0, 64 << 10) + 0xFFFF) & ~0xFFFF
            environment = try LMDBEnvironment(readingAt: dataPath, mapSize: mapSize, maxDatabases: 4096, maxReaders: 512)
        } catch {
            throw Self.lmdbOpenFailure(error, dataPath)
        }
        let clock = ContinuousClock()
        let started = clock.now
        var attempt = 0
        // Snapshots in a row that found a checkpoint pending with no process holding LOCK
        // after them: two mean its writer died in it (one may be a writer that finished
        // and closed between the snapshot and the look at LOCK).
        var orphaned = 0
        var waitedFor: UInt64?
        while true {
            options.beforeReaderSnapshot?(attempt)
            attempt += 1
            let writerBefore = registration.holder()
            let committed = environment.lastTransactionID
            let snapshot: LMDBReaderPool
            let found: Snapshot
            do {
                snapshot = try LMDBReaderPool(pinningSnapshotOf: environment)
                found = try Self.checkpoint(in: snapshot, dataPath: dataPath)
            } catch {
                throw Self.openFailure(reading: error, dataPath)
            }
            guard case .completed(let meta, let loaded) = found else {
                snapshot.close()
                if case .pending(let generation?) = found { waitedFor = generation }
                if case .undecided(let generation) = found { waitedFor = generation }
                let writerAfter = registration.holder()
                if writerAfter == nil {
                    orphaned += 1
                    if orphaned >= 2, case .undecided(let generation) = found { throw .undecidedCheckpoint(path: path, generation: generation) }
                    if orphaned >= 2 { throw .checkpointInterrupted(path: path) }
                } else {
                    orphaned = 0
                }
                if clock.now - started >= options.readerWaitLimit {
                    throw .checkpointInProgress(path: path, generation: waitedFor, writer: (writerAfter ?? writerBefore)?.description)
                }
                Self.awaitCommit(after: committed, environment, until: started + options.readerWaitLimit)
                continue
            }
            let core = StoreCore(
                path: path, environment: environment, lockFile: registration, generation: loaded.last.generation,
                mapResidentLimit: options.mapResidentBytes, access: .reader(writer: writerBefore), readers: snapshot)
            var report: [String] = []
            if let waitedFor {
                let waited = clock.now - started
                let seconds = Double(waited.components.seconds) + Double(waited.components.attoseconds) * 1e-18
                report.append("waited \(formatSeconds(seconds)) for checkpoint \(waitedFor), which "
                              + "\(writerBefore?.description ?? "the writer") was writing, to finish")
            }
            let tables = try Self.makeTables(loaded, core: core, options: options, report: &report)
            self.init(reader: core, path: path, options: options, meta: meta, loaded: loaded, tables: tables, report: report)
            return
        }
    }

    /// Waits until a transaction after `committed` is committed, looking every 0.1 ms, or
    /// until `deadline`; at most 50 ms, so that LOCK is looked at again (a writer that died
    /// commits nothing more). A checkpoint's last commit is followed by the next one's
    /// first only after an fsync, so a short look catches the moment between them.
    private static func awaitCommit(after committed: Int, _ environment: LMDBEnvironment, until deadline: ContinuousClock.Instant) {
        for _ in 0..<500 {
            if environment.lastTransactionID != committed || ContinuousClock.now >= deadline { return }
            usleep(100)
        }
    }

    /// What a reader's snapshot holds.
    private enum Snapshot {
        case completed(meta: LMDBDatabase, loaded: LoadedCheckpoint)
        /// A checkpoint is half written (of this generation, when the marker says), or the
        /// store is still being made.
        case pending(UInt64?)
        /// A two-phase checkpoint is written and waits for its run to keep or abandon it.
        case undecided(UInt64)
    }

    /// The pinned snapshot of `snapshot`: the last checkpoint, or that one is being written.
    private static func checkpoint(in snapshot: LMDBReaderPool, dataPath: String) throws -> Snapshot {
        let txn = try snapshot.acquire()
        guard let meta = try txn.openDatabase("meta", integerKeys: false) else { return .pending(nil) }
        if let marker = try txn.get(meta, name: CheckpointJournal.preparedName), marker.count >= 8 {
            return .undecided(marker.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) })
        }
        if let marker = try txn.get(meta, name: CheckpointJournal.pendingName) {
            return .pending(marker.count >= 8 ? marker.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) } : nil)
        }
        guard let loaded = try loadCheckpoint(txn, meta: meta, dataPath: dataPath) else { return .pending(nil) }
        return .completed(meta: meta, loaded: loaded)
    }
}

/// "3 ms", "1.2 s", "12 s".
private func formatSeconds(_ seconds: Double) -> String {
    if seconds < 1 { return "\(Int(seconds * 1000)) ms" }
    return seconds < 10 ? "\(Double(Int(seconds * 10)) / 10) s" : "\(Int(seconds)) s"
}
