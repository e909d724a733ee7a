// A store: a directory of named tables with one LMDB environment holding the last
// checkpoint of all of them.
//
//   STORE/
//     LOCK               locked (fcntl record lock) by the process that has the store open for
//                        writing; holds what it is: "process 1234 (strata train)"
//     rows.mdb           LMDB: databases "meta", "rows.<id>", "deleted.<id>", "undo"
//     rows.mdb-lock      LMDB's reader table
//     tables/<id>/
//       warm.slab        warm tier slots (memory-mapped)
//       warm.index       written by a clean close, consumed by the next open
//       spill.slab       changed rows waiting for the next checkpoint (emptied on open)
//     indexes/           nearest-neighbour indexes of tables, StrataNeighbors' (`strata index`)
//
// Concurrency (the GRDB way: written down once, here):
// - Batch calls on tables run in parallel from any threads. Each holds the checkpoint lock
//   shared and one shard lock at a time.
// - A checkpoint has two halves. Its freeze takes the checkpoint turn (one checkpoint at a
//   time), then the lock exclusively, between batches, for as long as it takes to swap each
//   shard's change list and flip its epoch bit. Its write, on a thread of its own for
//   `beginCheckpoint`, holds only one shard lock at a time (for one row), and the lock
//   exclusively only to grow the map; batches go on meanwhile, and a frozen row they change
//   is first copied (FrozenCopies) so the write sees it as frozen. The end of the write marks
//   the rows written under each table's `lastCheckpoint` lock, then gives the turn back.
// - `createTable` and `close` hold the lock exclusively (close takes the turn first, so it
//   waits for a checkpoint being written).
// - LMDB is written only by a checkpoint's write (and by the open's roll-back of a
//   checkpoint that did not finish), by write transactions one after another, each fsynced
//   on commit; an undo journal makes them one atomic step (see CheckpointJournal). Lookups
//   read LMDB through pooled read transactions (MDB_NOTLS), renewed when a checkpoint has
//   committed; scans of the last checkpoint wait for a write in progress, without the lock.
// - Nothing here is async, so no LMDB transaction ever crosses an `await`.
// - Do not use a store across fork(2); open it in the child instead.
// - One process writes a store (it holds LOCK); any number of others may read it at the same
//   time, each through a store opened for reading (`Store(readerAt:)`, one per process):
//   - A reader sees the writer's last completed checkpoint, and only it: it takes one LMDB
//     read snapshot, in which `meta/pending` is absent, and keeps it for its whole life, so
//     every row, table and payload it returns is of that one checkpoint, whatever the
//     writer does meanwhile. To see a later one, open again.
//   - A snapshot taken while a checkpoint is being written (between the commit of its
//     first transaction, which records `pending`, and of its last, which removes it) holds
//     part of it: the open lets it go and takes another once the writer has committed again
//     (it watches LMDB's last transaction number rather than begin transactions). With
//     `beginCheckpoint` back to back that can be most of the time; the moment between one
//     checkpoint's last commit and the next one's first (an fsync at least) is enough.
//   - Its snapshot holds a slot in LMDB's reader table (the environment is opened MDB_RDONLY
//     with the lock file), so the writer does not reuse the pages it may read. It never
//     blocks a checkpoint, but while it is open the pages the writer frees cannot be reused,
//     so the data file may grow. The writer frees the slots of readers that died
//     (`mdb_reader_check`) when it opens and at each checkpoint.
//   - It writes nothing of the writer's: no LOCK, no warm or spill file (its warm budget is
//     0 and its spill file opens nothing), no warm.index, no roll-back, no leftover removal.
//     Its hot tier is its own memory. Every writing call throws `.openedForReading`.
//   - Its batches hold the checkpoint lock exclusively: the one snapshot serves one thread
//     at a time (LMDB read transactions cannot serve two at once).
import FoundationEssentials
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The part of a store its tables share: locks, LMDB, the generation counter.
final class StoreCore: Sendable {
    let path: String
    let dataPath: String
    let access: Store.Access
    let lock: CheckpointLock
    let environment: LMDBEnvironment
    let readers: LMDBReaderPool
    /// Checkpoints completed in this store's life.
    let generation: Atomic<UInt64>
    /// The generation rows changed now are stamped with: the checkpoint that will hold them
    /// (`generation + 1`, or `+ 2` while a checkpoint is being written).
    let changeStamp: Atomic<UInt64>
    /// Held from a checkpoint's freeze until it is durable or has failed.
    let turn = CheckpointTurn()
    /// How long the last checkpoint took (a Double's bits).
    let lastCheckpointSeconds = Atomic<UInt64>(0)
    /// Where update batches stage their steps.
    let staging = StagingBlock()
    /// A checkpoint failed and so did putting LMDB back: LMDB holds part of it until the next
    /// checkpoint (or open) rolls it back, so scans of the last checkpoint refuse to run.
    let checkpointInterrupted = Atomic<Bool>(false)
    /// The generation of a two-phase checkpoint written but not yet committed, or 0.
    let undecided = Atomic<UInt64>(0)
    private let closed = Atomic<Bool>(false)
    /// LOCK, held by a writer; a reader's place in the process-wide set of open stores.
    private let lockFile: StoreLockFile

    // LMDB's map pages are dropped from the resident set when they pass this much; nil when
    // they are left to the kernel.
    private let mapResidentLimit: Int?
    /// Traffic through the map since its resident pages were last measured.
    private let mapTraffic = Atomic<Int>(0)
    /// The process's file-backed resident bytes right after the last trim.
    private let mapBaseline = Locked<Int>(0)
    private let mapRegion = Locked<(base: UInt, length: Int)?>(nil)

    /// A writer's core reads through a pool of fresh snapshots; a reader's through `readers`,
    /// its one pinned snapshot.
    init(path: String, environment: LMDBEnvironment, lockFile: StoreLockFile, generation: UInt64, mapResidentLimit: Int?,
         access: Store.Access = .writer, readers: LMDBReaderPool? = nil) {
        self.path = path
        dataPath = environment.dataPath
        self.access = access
        lock = CheckpointLock(exclusiveOnly: access != .writer)
        self.environment = environment
        self.readers = readers ?? LMDBReaderPool(environment: environment)
        self.lockFile = lockFile
        self.generation = Atomic(generation)
        changeStamp = Atomic(generation + 1)
        self.mapResidentLimit = mapResidentLimit
        refreshMapRegion()
        trimMap()
    }

    /// Runs `body` with the lock held shared and a read snapshot of LMDB at the last completed
    /// checkpoint. Mid-write LMDB holds part of a checkpoint, so the snapshot is begun while
    /// none is being written, waiting (without the lock) for one that is.
    func withCheckpointSnapshot<R>(_ body: (borrowing LMDBReadTransaction) throws(StoreError) -> R) throws(StoreError) -> R {
        while true {
            var result: R?
            try lock.shared { () throws(StoreError) in
                try ensureOpen()
                if checkpointInterrupted.load(ordering: .relaxed) { throw .checkpointInterrupted(path: path) }
                // Under the lock, a free turn stays free: a checkpoint freezes under it exclusively.
                guard !turn.isTaken else { return }
                let txn: LMDBReadTransaction
                do throws(LMDBError) { txn = try readers.acquire() } catch { throw lmdbFailure(error) }
                do throws(StoreError) { result = try body(txn) } catch {
                    readers.release(txn)
                    throw error
                }
                readers.release(txn)
            }
            if let result { return result }
            turn.awaitFree()
        }
    }

    @inline(__always)
    func ensureOpen() throws(StoreError) {
        if closed.load(ordering: .relaxed) { throw .closed }
    }

    var isClosed: Bool { closed.load(ordering: .relaxed) }

    /// Throws `.openedForReading` naming `operation` when the store was opened for reading.
    @inline(__always)
    func ensureWritable(_ operation: @autoclosure () -> String) throws(StoreError) {
        if case .reader(let writer) = access {
            throw .openedForReading(path: path, writer: writer?.description, operation: operation())
        }
    }

    var isReader: Bool { access != .writer }

    /// Closes LMDB and releases the lock. Caller holds `lock` exclusively.
    func shutDown() {
        closed.store(true, ordering: .relaxed)
        readers.close()
        environment.close()
        lockFile.release()
    }

    /// Counts bytes read or written through LMDB's map. Every `mapResidentLimit / 8` of them
    /// it measures the process's file-backed resident set, and once that has grown by half
    /// the limit since the last trim, drops the map's pages from this process's page tables,
    /// so resident memory stays within budget. The pages stay in the page cache (dirty ones
    /// keep their data and are written back as usual).
    ///
    /// Measured, not estimated from the traffic: a read faults in the B-tree pages above its
    /// leaf too, and each fault maps up to 16 neighbouring cached pages (the kernel's
    /// fault-around), so an estimate was off by a factor of four either way.
    @inline(__always)
    func noteMapTraffic(_ bytes: Int) {
        guard let limit = mapResidentLimit else { return }
        let total = mapTraffic.add(bytes + 65536, ordering: .relaxed).newValue
        if total > limit / 8 { checkMapResidence(limit) }
    }

    private func checkMapResidence(_ limit: Int) {
        mapTraffic.store(0, ordering: .relaxed)
        mapBaseline.withLock { baseline in
            guard let now = fileResidentBytes() else {
                // No /proc: trim by traffic alone, every `mapResidentLimit / 8` of it.
                releaseMapPages()
                return
            }
            // Other file pages (warm tiers, libraries) may have left the resident set since
            // the last trim; measured from the lower point, the map's growth is not hidden.
            baseline = min(baseline, now)
            if now - baseline > limit / 2 {
                releaseMapPages()
                baseline = fileResidentBytes() ?? 0
            }
        }
    }

    /// Drops all of the map's pages from this process's page tables now, if they are capped.
    func trimMap() {
        guard mapResidentLimit != nil else { return }
        mapTraffic.store(0, ordering: .relaxed)
        mapBaseline.withLock { baseline in
            releaseMapPages()
            baseline = fileResidentBytes() ?? 0
        }
    }

    private func releaseMapPages() {
        mapRegion.withLock { region in
            if let region, let base = UnsafeMutableRawPointer(bitPattern: region.base) {
                releaseResidentPages(base, region.length)
            }
        }
    }

    func refreshMapRegion() {
        let region = environment.mapRegion().map { (UInt(bitPattern: $0.base), $0.length) }
        mapRegion.withLock { $0 = region }
    }

    // MARK: Error translation

    func lmdbFailure(_ error: LMDBError) -> StoreError {
        if error.isDiskFull {
            return .diskFull(path: dataPath, generation: generation.load(ordering: .relaxed), detail: error.description)
        }
        if error.isPermission { return .readOnly(path: dataPath, detail: error.description) }
        if error.isCorruption { return .corrupted(file: dataPath, detail: error.description) }
        return .lmdb(error, file: dataPath)
    }

    func fileFailure(_ error: SystemError) -> StoreError {
        if error.isDiskFull {
            return .diskFull(path: error.path, generation: generation.load(ordering: .relaxed), detail: error.description)
        }
        if error.isPermission { return .readOnly(path: error.path, detail: error.description) }
        return .system(error)
    }
}

/// `STORE/LOCK`, locked while the store is open for writing: with a POSIX record lock
/// (`fcntl` F_SETLK) against other processes, and in a process-wide set against a second
/// `Store` in this process. It holds what the writer is, "process 1234 (strata train)", for a
/// second opener's error and for readers to quote. A store opened for reading takes no lock
/// and writes nothing here; it joins the set only, as LMDB allows one environment per file in
/// a process. (An `flock` would also be held by any child forked while the store is open,
/// until it execs, making a quick reopen fail at random; record locks are not inherited.)
final class StoreLockFile: Sendable {
    /// Stores open in this process, by process and their directory's device and inode.
    private static let openHere = Locked<Set<String>>([])
    private let descriptor: Atomic<Int32>
    private let registered = Atomic<Bool>(true)
    private let path: String
    private let identity: String

    /// Takes the lock or says who holds it. Runs under the process-wide set's lock from the
    /// first look at the file to the end: a descriptor of LOCK opened and closed here while
    /// another `Store` of this process holds it would drop that store's record lock.
    init(path: String) throws(StoreError) {
        let identity = Self.identity(ofStoreWithLock: path)
        let result: Result<Int32, StoreError> = Self.openHere.withLock { open in
            if open.contains(identity) { return .failure(Self.openInThisProcess(path)) }
            let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            guard fd >= 0 else {
                let e = SystemError("open", path)
                return .failure(e.isPermission ? .readOnly(path: path, detail: e.description) : .system(e))
            }
            var lock = flock()
            lock.l_type = Int16(F_WRLCK)
            lock.l_whence = Int16(SEEK_SET)
            if fcntl(fd, F_SETLK, &lock) != 0 {
                let code = errno
                let who = recordLockHolder(fd).map { Self.writer($0, fd).description } ?? "another process"
                Glibc.close(fd)
                if code == EACCES || code == EAGAIN { return .failure(.locked(path: path, holder: who)) }
                return .failure(.system(SystemError("fcntl(F_SETLK)", path, code: code)))
            }
            open.insert(identity)
            return .success(fd)
        }
        let fd = try result.get()
        let what = processDescription()
        let text = Array("process \(getpid())\(what.isEmpty ? "" : " (\(what))")\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pwrite(fd, text, text.count, 0)
        descriptor = Atomic(fd)
        self.path = path
        self.identity = identity
    }

    /// Joins the process-wide set for a store opened for reading, taking no lock and opening
    /// nothing: refused when a `Store` of this process has the store open.
    init(readerOf path: String) throws(StoreError) {
        let identity = Self.identity(ofStoreWithLock: path)
        let joined = Self.openHere.withLock { open in open.insert(identity).inserted }
        guard joined else { throw Self.openInThisProcess(path) }
        descriptor = Atomic(-1)
        self.path = path
        self.identity = identity
    }

    /// For a reader: the process that holds the lock now, as it describes itself, or nil when
    /// none does. Opens LOCK read-only and closes it, under the set's lock, which this reader's
    /// place in the set keeps every other `Store` of this process off.
    func holder() -> Store.Writer? {
        Self.openHere.withLock { _ in
            let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return nil }
            defer { Glibc.close(fd) }
            return recordLockHolder(fd).map { Self.writer($0, fd) }
        }
    }

    private static func openInThisProcess(_ path: String) -> StoreError {
        .locked(path: path, holder: "this process (\(getpid())), through another Store")
    }

    /// This process and the store's directory's device and inode (its path when it cannot be
    /// read): the same whatever path names it. With the process: a child of fork inherits the
    /// set, but not the stores in it, and may open them again (a DataLoader worker reads one).
    private static func identity(ofStoreWithLock path: String) -> String {
        let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        var info = stat()
        let place = stat(directory.isEmpty ? "/" : directory, &info) == 0 ? "\(info.st_dev):\(info.st_ino)" : directory
        return "\(getpid()):\(place)"
    }

    /// The holder `pid` with its command as it wrote it in the file ("process PID (what)"),
    /// or none when the file says nothing of that process (it is being rewritten, or was
    /// written by an older build).
    private static func writer(_ pid: pid_t, _ fd: Int32) -> Store.Writer {
        var bytes = [UInt8](repeating: 0, count: 256)
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        let line = n > 0 ? String(decoding: bytes[..<n].prefix { $0 != 0x0A }, as: UTF8.self) : ""
        let prefix = "process \(pid) ("
        guard line.hasPrefix(prefix), line.hasSuffix(")"), line.count > prefix.count + 1 else { return Store.Writer(pid: pid, command: nil) }
        return Store.Writer(pid: pid, command: String(line.dropFirst(prefix.count).dropLast()))
    }

    func release() {
        guard registered.exchange(false, ordering: .relaxed) else { return }
        let fd = descriptor.exchange(-1, ordering: .relaxed)
        Self.openHere.withLock { open in
            if fd >= 0 { Glibc.close(fd) }
            open.remove(identity)
        }
    }

    deinit { release() }
}

/// A checkpoint being written in the background (`Store.beginCheckpoint`).
public final class PendingCheckpoint: Sendable {
    private let ending = Monitor<Result<CheckpointInfo, StoreError>?>(nil)

    init() {}

    /// Waits until the checkpoint is durable and returns what it made durable, or throws why
    /// it failed: the store is then at the checkpoint before, and the rows this one froze go
    /// into the next.
    public func wait() throws(StoreError) -> CheckpointInfo {
        try ending.when({ $0 != nil }) { $0! }.get()
    }

    /// How the checkpoint ended, or nil while it is being written. Does not wait.
    public var outcome: Result<CheckpointInfo, StoreError>? { ending.current }

    func finish(_ result: Result<CheckpointInfo, StoreError>) {
        ending.when({ _ in true }) { $0 = result }
    }
}

/// What a checkpoint made durable.
public struct CheckpointInfo: Sendable, Codable, Equatable {
    /// 0 for a new store, then one more per checkpoint.
    public var generation: UInt64
    /// Seconds since 1970 when the checkpoint was taken.
    public var time: Double
    /// Seconds from freezing the changed rows to the end of the checkpoint. As stored (and
    /// read by a later open or a reader), up to the start of its last transaction: the record
    /// is written inside it, so its own commit and `fsync` are not counted.
    public var durationSeconds: Double
    public var rowsWritten: Int
    public var rowsDeleted: Int
    public var bytesWritten: Int
    /// The caller's bytes stored with the checkpoint (a trainer's dense state, say). Kept in
    /// LMDB as raw bytes under `payload`, beside this record's JSON.
    public var payload: [UInt8]

    private enum CodingKeys: String, CodingKey {
        case generation, time, durationSeconds, rowsWritten, rowsDeleted, bytesWritten
    }

    public init(generation: UInt64, time: Double, durationSeconds: Double, rowsWritten: Int,
                rowsDeleted: Int, bytesWritten: Int, payload: [UInt8]) {
        self.generation = generation
        self.time = time
        self.durationSeconds = durationSeconds
        self.rowsWritten = rowsWritten
        self.rowsDeleted = rowsDeleted
        self.bytesWritten = bytesWritten
        self.payload = payload
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        generation = try c.decode(UInt64.self, forKey: .generation)
        time = try c.decode(Double.self, forKey: .time)
        durationSeconds = try c.decode(Double.self, forKey: .durationSeconds)
        rowsWritten = try c.decode(Int.self, forKey: .rowsWritten)
        rowsDeleted = try c.decode(Int.self, forKey: .rowsDeleted)
        bytesWritten = try c.decode(Int.self, forKey: .bytesWritten)
        payload = []
    }
}

public final class Store: Sendable {
    /// 2: cold records' checksums cover their key and table (1 did not; refused on open).
    public static let formatVersion = 2

    /// A two-phase checkpoint (`beginCheckpoint(payload:twoPhase:)`) that was written but
    /// neither committed nor abandoned when its process stopped.
    public enum UndecidedCheckpoint: Sendable, Equatable {
        /// Throw `.undecidedCheckpoint`, changing nothing: only the run knows which way it went.
        case refuse
        /// Abandon it: the store opens at the checkpoint before.
        case rollBack
        /// Keep it if its generation is at most `generation`; else abandon it.
        case commitThrough(generation: UInt64)
    }

    public struct Options: Sendable {
        /// Memory for each table unless `tableBudgets` names it.
        public var budget = TierBudget(hotBytes: 256 << 20, warmBytes: 1 << 30)
        public var tableBudgets: [String: TierBudget] = [:]
        /// A cap on LMDB's map pages resident in this process, or nil (the default) for none.
        /// Those pages are clean page cache but inside a checkpoint's transaction, which
        /// `pagesPerTransaction` bounds; the kernel reclaims them under memory pressure, a
        /// cgroup's limit included, as it does unmapped page cache. With a cap, the store drops
        /// the map's pages from its page tables each time half the cap has been added (they stay
        /// in the page cache), for a resident set that stays within the budgets even where
        /// nothing presses on memory. That costs time: each cold read maps a whole folio of
        /// the file (about 84 pages here) and the B-tree's upper pages fault back in after
        /// every drop. `tools/out-of-core.sh` ran at 0.45 of its all-in-memory throughput with
        /// a 3 MiB cap and 0.89 without.
        public var mapResidentBytes: Int? = nil
        /// The LMDB map of a new store (an existing one opens at its file's size). It grows as
        /// checkpoints need, its disk blocks reserved before (`growMap`): a small store stays
        /// small, and a compacted one stays compacted.
        public var initialMapBytes = 256 << 10
        /// Create the store if the directory holds none.
        public var create = true
        /// What opening for writing does with a two-phase checkpoint left undecided.
        public var undecidedCheckpoint = UndecidedCheckpoint.refuse
        /// Tests only: called after each transaction of a checkpoint but its last commits, with
        /// their count so far; throwing (or ending the process) interrupts the checkpoint there.
        var afterCheckpointTransaction: (@Sendable (Int) throws(StoreError) -> Void)? = nil
        /// How long a store opened for reading (`init(readerAt:)`) waits for a checkpoint
        /// being written to finish before it throws `.checkpointInProgress`: a checkpoint
        /// writes its changed rows, so a large one takes seconds to minutes.
        public var readerWaitLimit: Duration = .seconds(600)
        /// Tests only: called before each snapshot a store opened for reading takes, with the
        /// number taken before (each found a checkpoint half written).
        @_spi(Testing) public var beforeReaderSnapshot: (@Sendable (Int) -> Void)? = nil

        public init() {}

        func budget(for table: String) -> TierBudget { tableBudgets[table] ?? budget }

        /// Pages one transaction of a checkpoint may write to: together they are dirty and
        /// resident while it commits, so they take half the map-resident cap, or 32 MiB.
        var pagesPerTransaction: Int {
            transactionPages ?? max(16, (mapResidentBytes ?? 64 << 20) / Int(sysconf(Int32(_SC_PAGESIZE))) / 2)
        }
        /// Tests only: `pagesPerTransaction`, to make checkpoints of many small transactions.
        var transactionPages: Int? = nil

        /// `afterCheckpointTransaction`, for test programs of their own (strata-fault-driver
        /// holds a writer part way through a checkpoint for readers in another process), which
        /// cannot see internals: `@_spi(Testing) import StrataStore`.
        @_spi(Testing) public var afterCheckpointTransactionForTesting: (@Sendable (Int) throws(StoreError) -> Void)? {
            get { afterCheckpointTransaction }
            set { afterCheckpointTransaction = newValue }
        }
        /// `transactionPages`, for the same programs (a checkpoint of many transactions is
        /// half written for longer).
        @_spi(Testing) public var transactionPagesForTesting: Int? {
            get { transactionPages }
            set { transactionPages = newValue }
        }
    }

    public let path: String
    public let options: Options
    /// Things the open noticed and repaired (a warm index that could not be used, leftovers
    /// of tables created after the last checkpoint).
    public let openReport: [String]

    let core: StoreCore
    private let meta: LMDBDatabase
    private let state: Locked<State>

    private struct State: ~Copyable {
        var tables: [String: Table] = [:]
        var nextID = 1
        var last: CheckpointInfo
    }

    struct CatalogEntry: Codable {
        var id: Int
        var name: String
        var spec: TableSpec
    }

    /// Why `name` and `spec` cannot make a table, or nil.
    static func tableProblem(_ name: String, _ spec: TableSpec) -> String? {
        let allowed = name.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F || c == 0x2D || c == 0x2E
        }
        guard !name.isEmpty, name.utf8.count <= 64, allowed else {
            return "names are 1 to 64 characters of A-Z, a-z, 0-9, '_', '-', '.'"
        }
        return spec.problem
    }

    /// The catalog record's tables, each checked as `createTable` checks a new one, with ids
    /// unique and positive and names unique: nothing read from the file is trusted.
    static func decodeCatalog(_ bytes: [UInt8], dataPath: String) throws(StoreError) -> [CatalogEntry] {
        guard let entries = try? JSONDecoder().decode([CatalogEntry].self, from: Data(bytes)) else {
            throw .corrupted(file: dataPath, detail: "the store's catalog record is unreadable")
        }
        var ids = Set<Int>(), names = Set<String>()
        for entry in entries {
            guard entry.id >= 1, entry.id < 1 << 31, ids.insert(entry.id).inserted else {
                throw .corrupted(file: dataPath, detail: "the catalog lists table id \(entry.id) twice or out of range")
            }
            guard names.insert(entry.name).inserted else {
                throw .corrupted(file: dataPath, detail: "the catalog lists the table name '\(entry.name)' twice")
            }
            if let problem = tableProblem(entry.name, entry.spec) {
                throw .corrupted(file: dataPath, detail: "the catalog's table \(entry.id) cannot be opened: \(problem)")
            }
        }
        return entries
    }

    /// Opens (or creates) the store at `path`. Throws `.locked` if any process has it open,
    /// `.readOnly` if the directory cannot be written, `.newerFormat` or `.corrupted` if its
    /// files are not what this build can read. What was there at the last checkpoint is what
    /// the store holds now; anything changed after it was lost with the process that did it.
    public init(path: String, options: Options = Options()) throws(StoreError) {
        self.path = path
        self.options = options
        var report: [String] = []

        let dataPath = path + "/rows.mdb"
        // A new store is made only in a new or empty directory, and a first open that fails
        // takes away what it made: the user's files are never mixed with or lost to a store.
        let creating = !fileExists(dataPath)
        let madeDirectory = creating && !fileExists(path)
        var opened = false, holdsLock = false
        defer {
            // Only what this open made, holding the lock: a concurrent opener's files stay.
            if creating && holdsLock && !opened {
                for file in [dataPath, dataPath + "-lock", path + "/LOCK"] { try? removeFile(file) }
                if madeDirectory { try? removeTree(path) }
            }
        }
        if creating {
            if fileExists(path + "/tables") {
                throw .corrupted(file: dataPath, detail: "missing, though the store has tables")
            }
            guard options.create else { throw .noStore(path: path) }
            if !madeDirectory {
                let entries = ((try? directoryEntries(path)) ?? []).filter { $0 != "LOCK" }.sorted()
                guard entries.isEmpty else { throw .notEmpty(path: path, entries: entries) }
            }
            do { try makeDirectories(path) } catch { throw Self.openFailure(error) }
        }
        let lockFile = try StoreLockFile(path: path + "/LOCK")
        holdsLock = true
        try Self.checkLength(of: dataPath)
        let environment: LMDBEnvironment
        do {
            // LMDB wants a whole number of pages: the file's size, or the initial size for a new
            // file, rounded up to 64 KiB.
            let mapSize = (max(fileSize(dataPath) ?? options.initialMapBytes, 64 << 10) + 0xFFFF) & ~0xFFFF
            environment = try LMDBEnvironment(path: dataPath, mapSize: mapSize, maxDatabases: 4096, maxReaders: 512)
            try environment.reserve(mapSize)
            // Readers of an earlier run that were killed would keep their pages from reuse.
            _ = try? environment.clearStaleReaders()
        } catch let error as LMDBError {
            throw Self.lmdbOpenFailure(error, dataPath)
        } catch let error as SystemError {
            throw error.isDiskFull ? .diskFull(path: dataPath, generation: 0, detail: error.description) : Self.openFailure(error)
        } catch {
            throw .corrupted(file: dataPath, detail: "\(error)")
        }

        // A checkpoint that stopped part way: put back what it replaced, once the format is
        // known to be this build's (a newer store is refused unchanged).
        var foundFormat = 0
        do throws(LMDBError) {
            let peek = try environment.beginWrite()
            if let metaDB = try peek.openDatabase("meta", integerKeys: false), let format = try peek.get(metaDB, name: "format"),
               format.count == 4 {
                foundFormat = Int(format.withUnsafeBytes { $0.load(as: UInt32.self) })
            }
        } catch {
            throw Self.lmdbOpenFailure(error, dataPath)
        }
        if foundFormat > Self.formatVersion {
            throw .newerFormat(file: dataPath, found: foundFormat, supported: Self.formatVersion)
        }
        if foundFormat != 0 && foundFormat < Self.formatVersion {
            throw .olderFormat(file: dataPath, found: foundFormat, supported: Self.formatVersion)
        }
        // A two-phase checkpoint left undecided: kept or abandoned as the options say (its
        // rows are then rolled back below), or refused with nothing changed.
        var refused: UInt64?
        do throws(LMDBError) {
            let txn = try environment.beginWrite()
            if let meta = try txn.openDatabase("meta", integerKeys: false),
               let generation = try CheckpointJournal.preparedGeneration(txn, meta: meta) {
                switch options.undecidedCheckpoint {
                case .refuse:
                    refused = generation
                case .rollBack, .commitThrough:
                    let commit = if case .commitThrough(let last) = options.undecidedCheckpoint { generation <= last } else { false }
                    try CheckpointJournal.decidePrepared(txn, meta: meta, commit: commit)
                    try txn.commit()
                    report.append(commit ? "kept two-phase checkpoint \(generation)" : "abandoned two-phase checkpoint \(generation)")
                }
            }
        } catch {
            throw Self.lmdbOpenFailure(error, dataPath)
        }
        if let refused { throw .undecidedCheckpoint(path: path, generation: refused) }
        do throws(LMDBError) {
            if let restored = try CheckpointJournal.rollBack(environment, entriesPerTransaction: options.pagesPerTransaction) {
                report.append("rolled back a checkpoint that did not finish: \(restored) values put back")
            }
        } catch {
            throw Self.lmdbOpenFailure(error, dataPath)
        }

        var loaded = LoadedCheckpoint()
        do {
            let txn = try environment.beginWrite()
            let existingMeta = try txn.openDatabase("meta", integerKeys: false)
            let metaDB = try existingMeta ?? txn.createDatabase("meta", integerKeys: false)
            if let found = try Self.loadCheckpoint(txn, meta: metaDB, dataPath: dataPath) {
                loaded = found
            } else {
                // A new store: checkpoint 0, empty.
                try txn.put(metaDB, name: "format", withUnsafeBytes(of: UInt32(Self.formatVersion)) { Array($0) })
                try txn.put(metaDB, name: "catalog", Array(try JSONEncoder().encode([CatalogEntry]())))
                try txn.put(metaDB, name: "checkpoint", Array(try JSONEncoder().encode(loaded.last)))
            }
            try txn.commit()
            meta = metaDB
        } catch {
            throw Self.openFailure(reading: error, dataPath)
        }
        if creating {
            // LMDB syncs its file, not the directory entry naming it: without this, a power cut
            // after the first checkpoints could leave no rows.mdb, and the store reopen empty.
            do {
                try syncDirectory(path)
                if madeDirectory {
                    let slash = path.dropLast().lastIndex(of: "/")
                    try syncDirectory(slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? ".")
                }
            } catch {
                throw Self.openFailure(error)
            }
        }

        core = StoreCore(path: path, environment: environment, lockFile: lockFile, generation: loaded.last.generation,
                         mapResidentLimit: options.mapResidentBytes)

        // Leftovers of tables created after the last checkpoint belong to no checkpoint.
        let known = Set(loaded.catalog.map(\.id))
        if let names = try? directoryEntries(path + "/tables") {
            for name in names where Int(name).map({ !known.contains($0) }) ?? true {
                do { try removeTree(path + "/tables/" + name) } catch { throw core.fileFailure(error) }
                report.append("removed tables/\(name): not in the last checkpoint")
            }
        }

        let tables = try Self.makeTables(loaded, core: core, options: options, report: &report)
        state = Locked(State(tables: tables, nextID: (loaded.catalog.map(\.id).max() ?? 0) + 1, last: loaded.last))
        openReport = report
        opened = true
    }

    /// A store opened for reading (`init(readerAt:options:)`), from the parts its open made.
    init(reader core: StoreCore, path: String, options: Options, meta: LMDBDatabase, loaded: LoadedCheckpoint,
         tables: [String: Table], report: [String]) {
        self.path = path
        self.options = options
        self.core = core
        self.meta = meta
        state = Locked(State(tables: tables, nextID: (loaded.catalog.map(\.id).max() ?? 0) + 1, last: loaded.last))
        openReport = report
    }

    /// The last checkpoint as LMDB's meta records hold it.
    struct LoadedCheckpoint {
        var last = CheckpointInfo(generation: 0, time: 0, durationSeconds: 0, rowsWritten: 0, rowsDeleted: 0, bytesWritten: 0, payload: [])
        var catalog: [CatalogEntry] = []
        /// Each table's databases and rows, by table id.
        var handles: [Int: (rows: LMDBDatabase, deletions: LMDBDatabase, count: Int)] = [:]
        var traffic: [Int: TableStatistics.Traffic] = [:]
    }

    /// Reads the last checkpoint's records from `meta` in `txn`, checks the format and opens
    /// every table's databases; nil when `meta` holds no format record yet (a new store).
    /// Throws `StoreError` or `LMDBError`.
    static func loadCheckpoint<T: LMDBReading & ~Copyable>(_ txn: borrowing T, meta metaDB: LMDBDatabase, dataPath: String) throws
        -> LoadedCheckpoint?
    {
        guard let format = try txn.get(metaDB, name: "format") else { return nil }
        let version = format.count == 4 ? Int(format.withUnsafeBytes { $0.load(as: UInt32.self) }) : -1
        guard version == Self.formatVersion else {
            if version > Self.formatVersion {
                throw StoreError.newerFormat(file: dataPath, found: version, supported: Self.formatVersion)
            }
            if version >= 1 { throw StoreError.olderFormat(file: dataPath, found: version, supported: Self.formatVersion) }
            throw StoreError.corrupted(file: dataPath, detail: "unknown format version \(version)")
        }
        guard let info = try txn.get(metaDB, name: "checkpoint"),
              let decoded = try? JSONDecoder().decode(CheckpointInfo.self, from: Data(info)),
              let list = try txn.get(metaDB, name: "catalog") else {
            throw StoreError.corrupted(file: dataPath, detail: "the store's catalog or checkpoint record is unreadable")
        }
        let entries = try decodeCatalog(list, dataPath: dataPath)
        var loaded = LoadedCheckpoint(last: decoded, catalog: entries)
        loaded.last.payload = try txn.get(metaDB, name: "payload") ?? []
        for entry in entries {
            guard let rows = try txn.openDatabase("rows.\(entry.id)", integerKeys: true),
                  let deleted = try txn.openDatabase("deleted.\(entry.id)", integerKeys: true) else {
                throw StoreError.corrupted(file: dataPath, detail: "table '\(entry.name)' has no rows database")
            }
            loaded.handles[entry.id] = (rows, deleted, try txn.statistics(rows).entries)
            if let saved = try txn.get(metaDB, name: "traffic.\(entry.id)") {
                loaded.traffic[entry.id] = try? JSONDecoder().decode(TableStatistics.Traffic.self, from: Data(saved))
            }
        }
        return loaded
    }

    /// The catalog's tables. A writer takes back the warm rows a clean close saved, noting in
    /// `report` what it could not; a reader has no warm tier.
    static func makeTables(_ loaded: LoadedCheckpoint, core: StoreCore, options: Options, report: inout [String])
        throws(StoreError) -> [String: Table]
    {
        var tables: [String: Table] = [:]
        for entry in loaded.catalog {
            let (rows, deleted, count) = loaded.handles[entry.id]!
            let directory = core.path + "/tables/\(entry.id)"
            var budget = options.budget(for: entry.name)
            var warmRows: WarmIndexFile.Contents? = nil
            if core.isReader {
                budget.warmBytes = 0
            } else {
                let (saved, problem) = WarmIndexFile.read(directory + "/warm.index")
                if let problem { report.append(problem) }
                warmRows = saved
                if let s = saved, s.generation != loaded.last.generation {
                    report.append("tables/\(entry.id)/warm.index is from generation \(s.generation), not \(loaded.last.generation); the warm tier starts empty")
                    warmRows = nil
                }
            }
            let table = try Table(
                store: core, id: entry.id, name: entry.name, spec: entry.spec, budget: budget,
                databases: (rows, deleted), persistedRows: count, warmRows: warmRows,
                trafficBeforeOpen: loaded.traffic[entry.id] ?? .init())
            if table.warmSlotsDropped > 0 {
                report.append("\(table.warmPath): \(table.warmSlotsDropped) saved rows failed their key or checksum check; they are read from LMDB")
            }
            tables[entry.name] = table
        }
        return tables
    }

    /// The names a store's directory holds (see the layout at the top of this file).
    static let ownEntries: Set<String> = ["LOCK", "rows.mdb", "rows.mdb-lock", "tables", "indexes"]

    /// Deletes the store at `path` and nothing else. Refused, deleting nothing, when the
    /// directory is not a store (`.notEmpty`), holds files that are not the store's
    /// (`.foreignFiles`), or is open in some process (`.locked`). A missing path or an empty
    /// directory is no store: the directory goes, if it is there; so does one that holds only
    /// the lock files a store's first open begins with. A failure part way (a file that cannot
    /// be deleted, or the process ended) leaves a store that no longer opens; delete it again:
    /// `rows.mdb` goes last, so what is left is still taken for a store.
    public static func remove(at path: String) throws(StoreError) {
        guard fileExists(path) else { return }
        let entries: [String]
        do { entries = try directoryEntries(path).sorted() } catch { throw openFailure(error) }
        let foreign = entries.filter { !ownEntries.contains($0) }
        let begun = entries.allSatisfy { $0 == "LOCK" || $0 == "rows.mdb-lock" }
        guard entries.contains("rows.mdb") || begun else { throw .notEmpty(path: path, entries: entries) }
        guard foreign.isEmpty else { throw .foreignFiles(path: path, entries: foreign) }
        if !entries.isEmpty {
            // Held while the store's files go: no process opens it half deleted.
            let lock = try StoreLockFile(path: path + "/LOCK")
            defer { lock.release() }
            for name in entries.filter({ $0 != "rows.mdb" }) + entries.filter({ $0 == "rows.mdb" }) where name != "LOCK" {
                do { try removeTree(path + "/" + name) } catch { throw openFailure(error) }
            }
        }
        do { try removeTree(path) } catch { throw openFailure(error) }
    }

    /// Refuses a data file shorter than its pages (LMDB trusts its header's page count; a
    /// file cut short would be SIGBUS on first read). Reads it without changing it.
    static func checkLength(of dataPath: String) throws(StoreError) {
        guard let size = fileSize(dataPath) else { return }
        if size < 2 * 4096 {
            throw .corrupted(file: dataPath, detail: "truncated to \(size) bytes, less than LMDB's two header pages")
        }
        let needed: Int
        do { needed = try LMDBEnvironment.bytesInUse(path: dataPath) } catch { throw Self.lmdbOpenFailure(error, dataPath) }
        if size < needed {
            throw .corrupted(file: dataPath, detail: "truncated: \(size) bytes, but its pages need \(needed)")
        }
    }

    static func openFailure(_ error: SystemError) -> StoreError {
        error.isPermission ? .readOnly(path: error.path, detail: error.description) : .system(error)
    }

    /// What an open's reads of LMDB and its catalog threw, as a StoreError.
    static func openFailure(reading error: any Error, _ dataPath: String) -> StoreError {
        switch error {
        case let error as StoreError: error
        case let error as LMDBError: lmdbOpenFailure(error, dataPath)
        default: .corrupted(file: dataPath, detail: "\(error)")
        }
    }

    static func lmdbOpenFailure(_ error: LMDBError, _ file: String) -> StoreError {
        if error.isPermission { return .readOnly(path: file, detail: error.description) }
        if error.isCorruption || error.isVersionMismatch { return .corrupted(file: file, detail: error.description) }
        if error.isDiskFull { return .diskFull(path: file, generation: 0, detail: error.description) }
        return .lmdb(error, file: file)
    }

    // MARK: Tables

    /// The table called `name`.
    public func table(_ name: String) throws(StoreError) -> Table {
        try core.ensureOpen()
        guard let table = state.withLock({ $0.tables[name] }) else { throw .unknownTable(name) }
        return table
    }

    /// Names of all tables, sorted.
    public var tableNames: [String] { state.withLock { $0.tables.keys.sorted() } }

    /// Creates a table, or returns the existing one if it has the same spec. The table
    /// becomes durable with the next checkpoint.
    @discardableResult
    public func createTable(_ name: String, _ spec: TableSpec, budget: TierBudget? = nil) throws(StoreError) -> Table {
        if let problem = Self.tableProblem(name, spec) { throw .invalidTable(name: name, reason: problem) }
        return try core.lock.exclusive { () throws(StoreError) -> Table in
            try core.ensureOpen()
            try core.ensureWritable("createTable('\(name)')")
            if let existing = state.withLock({ $0.tables[name] }) {
                guard existing.spec == spec else { throw .tableExists(name: name, existing: existing.spec) }
                return existing
            }
            let id = state.withLock { s in
                s.nextID += 1
                return s.nextID - 1
            }
            let table = try Table(
                store: core, id: id, name: name, spec: spec, budget: budget ?? options.budget(for: name),
                databases: nil, persistedRows: 0, warmRows: nil)
            state.withLock { $0.tables[name] = table }
            return table
        }
    }

    // MARK: Checkpoints

    /// The last completed checkpoint.
    public var lastCheckpoint: CheckpointInfo { state.withLock { $0.last } }

    /// Whether `close` has run: every later call but this one and `lastCheckpoint` throws `.closed`.
    public var isClosed: Bool { core.isClosed }

    /// Makes the current state of every table durable, with `payload`, as one atomic step:
    /// after a crash at any moment the store reopens at exactly this checkpoint or the one
    /// before. Batches on other threads go on while it is written (`beginCheckpoint`); this
    /// call returns once it is durable. On failure (a full disk, say) nothing durable changes
    /// and the rows it would have written go into the next checkpoint, so the call can be
    /// retried.
    @discardableResult
    public func checkpoint(payload: [UInt8] = []) throws(StoreError) -> CheckpointInfo {
        try writeFrozen(try freeze(payload, twoPhase: false))
    }

    /// Starts a checkpoint of the current state of every table, with `payload`, and writes it
    /// on a background thread while batches go on; `wait()` on the result says when it is
    /// durable. The state is taken now, between batches (the call waits for batches in
    /// progress, and first for a checkpoint still being written): later batches are not in
    /// it. Batches stall only for that moment, which is proportional to the number of shards,
    /// not rows; a row changed before the checkpoint has written it is first copied (see
    /// FrozenCopies). A failure is reported by `wait()`, with the store as `checkpoint`'s
    /// failure leaves it.
    ///
    /// With `twoPhase`, the checkpoint is written but left undecided (for a run over several
    /// processes, whose stores must keep the same checkpoint): `wait()` returns once it is
    /// durable, and `commitCheckpoint()` then keeps it. Until then an open after a crash
    /// decides it (`Options.undecidedCheckpoint`), and no other checkpoint may begin.
    public func beginCheckpoint(payload: [UInt8] = [], twoPhase: Bool = false) throws(StoreError) -> PendingCheckpoint {
        let frozen = try freeze(payload, twoPhase: twoPhase)
        let pending = PendingCheckpoint()
        // The writer drops its reference to the store before it reports the end, so a caller
        // that waits, then lets the store go, closes it then and there (and frees its lock).
        let writer = Monitor<Store?>(self)
        do {
            try startThread(for: "the checkpoint writer of \(core.path)") {
                let result = Result { () throws(StoreError) in
                    try writer.when({ _ in true }) { store in defer { store = nil }; return store! }.writeFrozen(frozen)
                }
                pending.finish(result)
            }
        } catch {
            // No thread: write it here.
            pending.finish(Result { () throws(StoreError) in try writeFrozen(frozen) })
        }
        return pending
    }

    /// What a checkpoint froze, to be written by `writeFrozen` on any thread.
    private struct Frozen: Sendable {
        let tables: [Table]
        /// The keys of the frozen rows, by table, then shard.
        let keys: [[[UInt64]]]
        let generation: UInt64
        let time: Double
        let started: ContinuousClock.Instant
        let payload: [UInt8]
        let twoPhase: Bool
    }

    /// Takes the turn and, between batches, freezes every table's changed rows.
    private func freeze(_ payload: [UInt8], twoPhase: Bool) throws(StoreError) -> Frozen {
        try core.ensureWritable("checkpoint")
        core.turn.take()
        precondition(core.undecided.load(ordering: .relaxed) == 0, "a checkpoint begun before the two-phase one was committed")
        // Slots of readers in other processes that died would keep the pages they read from
        // reuse for ever. Outside the lock: batches need not wait for it.
        if !core.isClosed { _ = try? core.environment.clearStaleReaders() }
        do {
            return try core.lock.exclusive { () throws(StoreError) -> Frozen in
                try core.ensureOpen()
                let started = ContinuousClock.now
                let time = Date().timeIntervalSince1970
                let tables = state.withLock { $0.tables.values.sorted { $0.id < $1.id } }
                let generation = core.generation.load(ordering: .relaxed) + 1
                // Grown before writing when the changes may not fit: a write that meets a full
                // map is undone and redone whole after the map grows.
                let changes = tables.reduce(0) { $0 + $1.changedRows * ($1.format.layout.recordSize + 64) } + payload.count
                // Best effort: the estimate is generous, and a write that does fit must not fail for
                // want of room for it (a full map below grows again, or reports the full disk).
                // (3x: the rows, the journal's copies of what they replace, and pages freed meanwhile.)
                try? growMap(toHold: core.environment.bytesInUse + 3 * changes + (64 << 10))
                if core.checkpointInterrupted.load(ordering: .relaxed) {
                    try rollBackInterruptedCheckpoint()
                }
                let keys = tables.map { $0.freeze() }
                core.changeStamp.store(generation + 1, ordering: .relaxed)
                return Frozen(tables: tables, keys: keys, generation: generation, time: time, started: started, payload: payload,
                              twoPhase: twoPhase)
            }
        } catch {
            core.turn.giveBack()
            throw error
        }
    }

    /// Writes what `freeze` froze, then gives the turn back. Holds no lock but a shard's, one
    /// row at a time, and the store's exclusively only to grow the map.
    private static func seconds(since start: ContinuousClock.Instant) -> Double {
        let elapsed = start.duration(to: .now)
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
    }

    private func writeFrozen(_ frozen: Frozen) throws(StoreError) -> CheckpointInfo {
        defer { core.turn.giveBack() }
        let written: [Written]
        do throws(StoreError) {
            written = try write(frozen)
        } catch {
            // Put LMDB back at the last checkpoint; if that fails too, the next checkpoint
            // (or open) finishes it.
            do throws(StoreError) { try rollBackInterruptedCheckpoint() } catch {
                core.checkpointInterrupted.store(true, ordering: .relaxed)
            }
            for (table, keys) in zip(frozen.tables, frozen.keys) { table.checkpointEnded(keys, written: nil) }
            core.changeStamp.store(core.generation.load(ordering: .relaxed) + 1, ordering: .relaxed)
            throw error
        }
        // Durable now. Nothing below can fail, so memory never disagrees with LMDB. Reads
        // begun before see the new checkpoint from here on, before any row it wrote can
        // leave memory.
        core.readers.commits.add(1, ordering: .releasing)
        core.trimMap()
        let seconds = Self.seconds(since: frozen.started)
        var total = CheckpointTotals()
        for (w, keys) in zip(written, frozen.keys) {
            w.table.checkpointEnded(keys, written: (w.rows, w.deletions, w.entries, w.totals))
            // Spilled rows it wrote left the spill file; once none is left, the file is emptied (an
            // error doing so only leaves dead bytes, which the next open truncates).
            try? w.table.spill.resetIfUnused()
            total.written += w.totals.written
            total.deleted += w.totals.deleted
            total.bytes += w.totals.bytes
        }
        core.generation.store(frozen.generation, ordering: .relaxed)
        if frozen.twoPhase { core.undecided.store(frozen.generation, ordering: .relaxed) }
        core.lastCheckpointSeconds.store(seconds.bitPattern, ordering: .relaxed)
        let info = CheckpointInfo(
            generation: frozen.generation, time: frozen.time, durationSeconds: seconds, rowsWritten: total.written,
            rowsDeleted: total.deleted, bytesWritten: total.bytes, payload: frozen.payload)
        state.withLock { $0.last = info }
        return info
    }

    /// What one table's part of a checkpoint wrote, and the LMDB handles it used.
    private struct Written {
        let table: Table
        let rows: LMDBDatabase
        let deletions: LMDBDatabase
        let totals: CheckpointTotals
        /// Rows LMDB holds for the table once the transaction commits.
        let entries: Int
    }

    /// Grows the map to hold `bytes`, reserving its disk blocks first: by at least a quarter
    /// (256 KiB for a small map, at most 4 GiB for a large one), so that growing is rare, a
    /// compacted file stays near its size, and no file is more than 4 GiB past what it
    /// needed; by only what `bytes` needs when the disk lacks room for that. Caller holds the
    /// lock exclusively, so no read transaction is live and the reader pool is idle, and no
    /// write transaction is open.
    private func growMap(toHold bytes: Int) throws(StoreError) {
        let current = core.environment.mapSize
        guard current < bytes else { return }
        let needed = (bytes + 0xFFFF) & ~0xFFFF
        var size = (max(bytes, current + max(256 << 10, min(current / 4, 4 << 30))) + 0xFFFF) & ~0xFFFF
        core.readers.drain()
        do throws(SystemError) {
            do { try core.environment.reserve(size) } catch where error.isDiskFull && size > needed {
                size = needed
                try core.environment.reserve(size)
            }
        } catch { throw core.fileFailure(error) }
        do throws(LMDBError) { try core.environment.setMapSize(size) } catch { throw core.lmdbFailure(error) }
        core.refreshMapRegion()
    }

    /// Runs `body` in a write transaction and commits it. When the map fills, the transaction
    /// is undone, the map grown (between batches), and `body` run again, so it must not change
    /// anything outside the transaction but what it returns.
    private func inTransaction<T>(_ body: (borrowing LMDBWriteTransaction) throws(StoreError) -> T) throws(StoreError) -> T {
        while true {
            do throws(StoreError) {
                let txn: LMDBWriteTransaction
                do throws(LMDBError) { txn = try core.environment.beginWrite() } catch { throw core.lmdbFailure(error) }
                let result = try body(txn)
                do throws(LMDBError) { try txn.commit() } catch { throw core.lmdbFailure(error) }
                return result
            } catch {
                guard case .lmdb(let e, _) = error, e.isMapFull else { throw error }
                try core.lock.exclusive { () throws(StoreError) in try growMap(toHold: core.environment.mapSize + 1) }
            }
        }
    }

    /// Writes every table's frozen rows, then the catalog, in transactions of at most
    /// `options.pagesPerTransaction` pages (see `CheckpointJournal`). Nothing in memory changes here;
    /// on failure LMDB may hold part of the checkpoint, which the caller rolls back.
    private func write(_ frozen: Frozen) throws(StoreError) -> [Written] {
        let (tables, generation, time, payload) = (frozen.tables, frozen.generation, frozen.time, frozen.payload)
        func lmdb<T: ~Copyable>(_ body: () throws(LMDBError) -> T) throws(StoreError) -> T {
            do { return try body() } catch { throw core.lmdbFailure(error) }
        }
        let created = tables.filter { $0.rowsDatabase == nil }.map(\.id)
        let (databases, started) = try inTransaction { (txn) throws(StoreError) in
            try lmdb { () throws(LMDBError) in
                var databases: [(rows: LMDBDatabase, deletions: LMDBDatabase)] = []
                for table in tables {
                    if let rows = table.rowsDatabase, let deletions = table.deletionsDatabase {
                        databases.append((rows, deletions))
                    } else {
                        databases.append((try txn.createDatabase("rows.\(table.id)", integerKeys: true),
                                          try txn.createDatabase("deleted.\(table.id)", integerKeys: true)))
                    }
                }
                let journal = try CheckpointJournal.begin(txn, meta: meta, generation: generation, createdTables: created)
                return (databases, journal)
            }
        }
        var journal = started
        var committed = 1
        try options.afterCheckpointTransaction?(committed)
        var totals = [CheckpointTotals](repeating: CheckpointTotals(), count: tables.count)
        let pageLimit = options.pagesPerTransaction
        // Tables share transactions: each fills up to `pageLimit` pages, moving on to the next
        // table when one is done (every commit costs an fsync). Only the current table's
        // sorted change list is held.
        var position = (table: 0, key: 0)
        var current: (table: Int, keys: [UInt64]) = (-1, [])
        func keys(_ t: Int) -> [UInt64] {
            if current.table != t { current = (t, Table.writingOrder(frozen.keys[t])) }
            return current.keys
        }
        while position.table < tables.count {
            let (reached, advanced, parts) = try inTransaction { (txn) throws(StoreError) in
                var j = journal
                var p = position
                var parts: [(table: Int, totals: CheckpointTotals)] = []
                while p.table < tables.count && txn.pagesWritten < pageLimit {
                    let all = keys(p.table)
                    if p.key < all.count {
                        var part = CheckpointTotals()
                        p.key = try tables[p.table].writeChanges(
                            all, from: p.key, txn, rows: databases[p.table].rows, deletions: databases[p.table].deletions,
                            generation: generation, pageLimit: pageLimit, journal: &j, totals: &part)
                        parts.append((p.table, part))
                    }
                    if p.key >= all.count { p = (p.table + 1, 0) }
                }
                return (p, j, parts)
            }
            position = reached
            journal = advanced
            for (t, part) in parts {
                totals[t].written += part.written
                totals[t].deleted += part.deleted
                totals[t].bytes += part.bytes
            }
            committed += 1
            try options.afterCheckpointTransaction?(committed)
        }
        let total = totals.reduce(into: CheckpointTotals()) { t, part in
            t.written += part.written
            t.deleted += part.deleted
            t.bytes += part.bytes
        }
        let catalog = tables.map { CatalogEntry(id: $0.id, name: $0.name, spec: $0.spec) }
        let info = CheckpointInfo(
            generation: generation, time: time, durationSeconds: Self.seconds(since: frozen.started), rowsWritten: total.written,
            rowsDeleted: total.deleted, bytesWritten: total.bytes, payload: payload)
        let catalogJSON: Data, infoJSON: Data
        do {
            catalogJSON = try JSONEncoder().encode(catalog)
            infoJSON = try JSONEncoder().encode(info)
        } catch {
            throw .corrupted(file: core.dataPath, detail: "cannot encode the catalog: \(error)")
        }
        var traffic: [Int: [UInt8]] = [:]
        for table in tables {
            traffic[table.id] = (try? JSONEncoder().encode(table.trafficBeforeOpen + table.trafficSinceOpen())).map { Array($0) }
        }
        let entries = try inTransaction { (txn) throws(StoreError) in
            try lmdb { () throws(LMDBError) in
                if frozen.twoPhase {
                    try CheckpointJournal.prepare(txn, meta: meta, generation: generation,
                                                  replacing: ["format", "catalog", "checkpoint", "payload"] + tables.map { "traffic.\($0.id)" })
                }
                try txn.put(meta, name: "format", withUnsafeBytes(of: UInt32(Self.formatVersion)) { Array($0) })
                try txn.put(meta, name: "catalog", Array(catalogJSON))
                try txn.put(meta, name: "checkpoint", Array(infoJSON))
                try txn.put(meta, name: "payload", payload)
                for table in tables {
                    try txn.put(meta, name: "traffic.\(table.id)", traffic[table.id] ?? [])
                }
                if !frozen.twoPhase { try journal.finish(txn, meta: meta) }
                return try databases.map { (db) throws(LMDBError) in try txn.statistics(db.rows).entries }
            }
        }
        return tables.indices.map {
            Written(table: tables[$0], rows: databases[$0].rows, deletions: databases[$0].deletions,
                    totals: totals[$0], entries: entries[$0])
        }
    }

    /// Keeps the two-phase checkpoint whose `wait()` returned, in one transaction: from its
    /// commit on, no crash can take the store back to the checkpoint before. On failure it
    /// stays undecided, and the call can be retried.
    public func commitCheckpoint() throws(StoreError) {
        try core.ensureWritable("commit a checkpoint")
        core.turn.take()
        defer { core.turn.giveBack() }
        precondition(core.undecided.load(ordering: .relaxed) != 0, "no two-phase checkpoint to commit")
        try inTransaction { (txn) throws(StoreError) in
            do throws(LMDBError) { try CheckpointJournal.decidePrepared(txn, meta: meta, commit: true) } catch { throw core.lmdbFailure(error) }
        }
        core.undecided.store(0, ordering: .relaxed)
    }

    /// Puts LMDB back at the last checkpoint if a checkpoint's transactions stopped part way.
    private func rollBackInterruptedCheckpoint() throws(StoreError) {
        do throws(LMDBError) {
            _ = try CheckpointJournal.rollBack(core.environment, entriesPerTransaction: options.pagesPerTransaction)
        } catch {
            throw core.lmdbFailure(error)
        }
        core.checkpointInterrupted.store(false, ordering: .relaxed)
    }

    // MARK: Closing

    /// Waits for a checkpoint being written, saves the warm tier's index so the next open
    /// keeps it, closes LMDB and releases the lock. Changes since the last checkpoint are not
    /// kept: call `checkpoint` first.
    public func close() throws(StoreError) {
        // After a checkpoint being written, if any: it ends durable or failed first.
        core.turn.take()
        defer { core.turn.giveBack() }
        try core.lock.exclusive { () throws(StoreError) in
            if core.isClosed { return }
            let (tables, generation) = state.withLock { s in (Array(s.tables.values), s.last.generation) }
            var failure: StoreError?
            // Only tables the last checkpoint holds: the others vanish at the next open. A
            // reader has no warm tier, and warm.index is the writer's.
            // Nor while a two-phase checkpoint is undecided: abandoned, its generation would be
            // used again by another checkpoint, which the saved index would wrongly match.
            let undecided = core.undecided.load(ordering: .relaxed) != 0
            for table in tables where table.rowsDatabase != nil && !core.isReader && !undecided {
                do throws(StoreError) { try table.saveWarmTier(generation: generation) } catch { failure = failure ?? error }
            }
            core.shutDown()
            if let failure { throw failure }
        }
    }

    deinit {
        // Tables keep the core alive, not the store: a batch may still be running.
        core.lock.exclusive { if !core.isClosed { core.shutDown() } }
    }
}
