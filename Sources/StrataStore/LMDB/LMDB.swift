// The one place that calls LMDB. Every return code becomes an `LMDBError`; every function
// names the C call underneath. Reads (`mdb_get`, `mdb_cursor_get`) go through the guarded
// wrappers of strata_lmdb_guard.h, so that a damaged page is an error, not a signal.
// Concurrency rules (from lmdb.h, and how Strata keeps them):
// - The environment is shared by all threads.
// - It is opened with MDB_NOTLS, so a read transaction is not tied to the thread that began
//   it; Strata still uses each one from a single thread at a time.
// - Write transactions are begun and committed on one thread, and only while the store
//   holds its checkpoint lock exclusively (or is being opened), so there is never more than
//   one at a time.
// - A store opened for reading beside another process's writer opens the environment
//   MDB_RDONLY with the lock file, so its one snapshot holds a slot in the reader table and
//   the writer does not reuse the pages it reads (`init(readingAt:)`, `LMDBReaderPool`).
// - LMDB allows one environment per data file in a process (its locks are fcntl locks, which
//   any close of the file drops); `StoreLockFile` keeps to that.
// - Transactions never cross an `await`: nothing in the store is async.
import CLMDB
import CStrataSupport
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A non-zero return code from an LMDB function.
public struct LMDBError: Error, Sendable, Equatable, CustomStringConvertible {
    public let code: Int32
    public let function: String

    public var description: String {
        switch code {
        case STRATA_MDB_FAULT: "\(function): LMDB faulted reading a damaged page of the data file"
        case STRATA_MDB_OUTSIDE_MAP: "\(function): LMDB returned a value that cannot be read (a damaged page)"
        case STRATA_MDB_BAD_KEY: "\(function): a key of the wrong size or out of order (a damaged page)"
        default: "\(function): \(String(cString: mdb_strerror(code)))"
        }
    }

    /// The map is full: grow it with `mdb_env_set_mapsize` and retry.
    var isMapFull: Bool { code == MDB_MAP_FULL }
    var isDiskFull: Bool { code == ENOSPC || code == EFBIG || code == EDQUOT }
    var isPermission: Bool { code == EACCES || code == EROFS || code == EPERM }
    /// The file is not a database or its pages do not hold together.
    var isCorruption: Bool {
        code == MDB_INVALID || code == MDB_CORRUPTED || code == MDB_PAGE_NOTFOUND || code == MDB_PANIC
            || code == STRATA_MDB_FAULT || code == STRATA_MDB_OUTSIDE_MAP || code == STRATA_MDB_BAD_KEY
    }
    var isVersionMismatch: Bool { code == MDB_VERSION_MISMATCH }
}

@inline(__always)
private func check(_ rc: Int32, _ function: String) throws(LMDBError) {
    if rc != 0 { throw LMDBError(code: rc, function: function) }
}

/// A database handle (`MDB_dbi`) inside an environment.
@_spi(Testing) public struct LMDBDatabase: Sendable, Equatable {
    let handle: MDB_dbi
}

/// Page counts and entries of one database (`MDB_stat`).
@_spi(Testing) public struct LMDBStatistics: Sendable {
    var pageSize: Int
    var branchPages: Int
    var leafPages: Int
    var overflowPages: Int
    @_spi(Testing) public var entries: Int
    var bytes: Int { pageSize * (branchPages + leafPages + overflowPages) }
}

/// An LMDB environment: one data file and its lock file, shared by every thread.
@_spi(Testing) public final class LMDBEnvironment: @unchecked Sendable {
    let handle: OpaquePointer
    /// The path of the data file, for error messages.
    let dataPath: String

    /// Creates and opens an environment (`mdb_env_create`, `mdb_env_set_mapsize`,
    /// `mdb_env_set_maxdbs`, `mdb_env_set_maxreaders`, `mdb_env_open`) at the file `path`
    /// (MDB_NOSUBDIR: the lock file is `path-lock`). The caller then reserves the map's disk
    /// blocks with `reserve`.
    ///
    /// Flags, and why:
    /// - MDB_WRITEMAP: a write transaction's dirty pages are pages of the file mapping, which
    ///   the store can drop from its resident set, instead of malloc'd pages that LMDB keeps
    ///   for reuse and never returns. The data file's blocks are reserved for the whole map
    ///   (`reserve`), so a write through the map never meets a full disk, which would be
    ///   SIGBUS: a full disk shows up as an error from `reserve` instead.
    /// - MDB_NOTLS: read transactions are pooled and not tied to threads.
    /// - MDB_NORDAHEAD: random reads of a file larger than memory gain nothing from read-ahead.
    @_spi(Testing) public init(path: String, mapSize: Int, maxDatabases: Int, maxReaders: Int) throws(LMDBError) {
        handle = try Self.open(path, mapSize: mapSize, maxDatabases: maxDatabases, maxReaders: maxReaders,
                               access: UInt32(MDB_WRITEMAP))
        dataPath = path
    }

    /// Opens an existing environment read-only beside a writer that may be in another process
    /// (`mdb_env_open` with MDB_RDONLY, and the lock file: each read transaction takes a
    /// slot in its reader table, and the writer reuses no page a live slot may read). Writes
    /// nothing but LMDB's lock file. The map starts at `mapSize`; `beginSnapshot` follows the
    /// writer when it grows.
    @_spi(Testing) public init(readingAt path: String, mapSize: Int, maxDatabases: Int, maxReaders: Int) throws(LMDBError) {
        handle = try Self.open(path, mapSize: mapSize, maxDatabases: maxDatabases, maxReaders: maxReaders,
                               access: UInt32(MDB_RDONLY))
        dataPath = path
    }

    /// `mdb_env_open` with the flags both opens share and `access` (MDB_WRITEMAP or
    /// MDB_RDONLY); on failure nothing stays open.
    private static func open(_ path: String, mapSize: Int, maxDatabases: Int, maxReaders: Int,
                             access: UInt32) throws(LMDBError) -> OpaquePointer {
        var env: OpaquePointer?
        try check(mdb_env_create(&env), "mdb_env_create")
        do {
            try check(strata_mdb_guard_assertions(UnsafeMutableRawPointer(env)), "mdb_env_set_assert")
            try check(mdb_env_set_mapsize(env, mapSize), "mdb_env_set_mapsize")
            try check(mdb_env_set_maxdbs(env, MDB_dbi(maxDatabases)), "mdb_env_set_maxdbs")
            try check(mdb_env_set_maxreaders(env, UInt32(maxReaders)), "mdb_env_set_maxreaders")
            try check(mdb_env_open(env, path, UInt32(MDB_NOSUBDIR | MDB_NOTLS | MDB_NORDAHEAD) | access, 0o644), "mdb_env_open")
        } catch {
            mdb_env_close(env)
            throw error
        }
        // LMDB leaves its data file open across exec; a child process has no use for it.
        var fd: Int32 = -1
        if mdb_env_get_fd(env, &fd) == 0 && fd >= 0 { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return env!
    }

    /// Bytes of pages an existing data file's header says are in use, read by opening it
    /// read-only without the lock file (`mdb_env_open` with MDB_RDONLY | MDB_NOLOCK), which
    /// never changes the file. (A writable MDB_WRITEMAP open would first extend a truncated
    /// file with zeros, hiding the damage.)
    @_spi(Testing) public static func bytesInUse(path: String) throws(LMDBError) -> Int {
        var env: OpaquePointer?
        try check(mdb_env_create(&env), "mdb_env_create")
        defer { mdb_env_close(env) }
        try check(mdb_env_set_maxdbs(env, 8), "mdb_env_set_maxdbs")
        try check(mdb_env_open(env, path, UInt32(MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK), 0o644), "mdb_env_open")
        var info = MDB_envinfo()
        var stat = MDB_stat()
        mdb_env_info(env, &info)
        mdb_env_stat(env, &stat)
        return (info.me_last_pgno + 1) * Int(stat.ms_psize)
    }

    /// Allocates disk blocks for the whole map (`mdb_env_get_fd`, `reserveBlocks`): refused
    /// with the sizes when the file system lacks the room.
    func reserve(_ bytes: Int) throws(SystemError) {
        var fd: Int32 = -1
        mdb_env_get_fd(handle, &fd)
        try reserveBlocks(fd, dataPath, from: 0, length: bytes)
    }

    private let closed = Atomic<Bool>(false)

    deinit { close() }

    /// Closes the environment (`mdb_env_close`). The caller guarantees no transaction is live.
    @_spi(Testing) public func close() {
        if !closed.exchange(true, ordering: .relaxed) { mdb_env_close(handle) }
    }

    /// Bytes of the map in use: up to the last page ever allocated (`mdb_env_info`,
    /// `mdb_env_stat`).
    var bytesInUse: Int {
        var info = MDB_envinfo()
        var stat = MDB_stat()
        mdb_env_info(handle, &info)
        mdb_env_stat(handle, &stat)
        return (info.me_last_pgno + 1) * Int(stat.ms_psize)
    }

    /// The size of the memory map (`mdb_env_info`).
    var mapSize: Int {
        var info = MDB_envinfo()
        mdb_env_info(handle, &info)
        return info.me_mapsize
    }

    /// Grows the map (`mdb_env_set_mapsize`). The caller guarantees that no transaction of
    /// this process is live: LMDB does not check, and live readers would keep stale pointers.
    func setMapSize(_ bytes: Int) throws(LMDBError) {
        try check(mdb_env_set_mapsize(handle, bytes), "mdb_env_set_mapsize")
    }

    /// The last transaction committed to the file by any process (`mdb_env_info`, read from
    /// the lock file's shared memory): a store opened for reading watches it to learn that
    /// its writer committed, without beginning a transaction.
    var lastTransactionID: Int {
        var info = MDB_envinfo()
        mdb_env_info(handle, &info)
        return info.me_last_txnid
    }

    /// Frees the reader-table slots of processes that ended without closing the environment
    /// (`mdb_reader_check`), so a killed reader does not keep its snapshot's pages from
    /// being reused. Returns how many it freed.
    @discardableResult
    func clearStaleReaders() throws(LMDBError) -> Int {
        var dead: Int32 = 0
        try check(mdb_reader_check(handle, &dead), "mdb_reader_check")
        return Int(dead)
    }

    /// Begins a read transaction (`mdb_txn_begin` with MDB_RDONLY). When another process has
    /// grown the map past this one's (MDB_MAP_RESIZED), adopts its size
    /// (`mdb_env_set_mapsize` with 0) and begins again. The caller guarantees that no other
    /// transaction of this process is live, as resizing wants.
    func beginSnapshot() throws(LMDBError) -> OpaquePointer {
        while true {
            var txn: OpaquePointer?
            let rc = mdb_txn_begin(handle, nil, UInt32(MDB_RDONLY), &txn)
            if rc == MDB_MAP_RESIZED {
                try check(mdb_env_set_mapsize(handle, 0), "mdb_env_set_mapsize")
                continue
            }
            try check(rc, "mdb_txn_begin")
            return txn!
        }
    }

    /// Writes a copy of the environment to the file `path` with free pages left out and the
    /// pages renumbered (`mdb_env_copy2` with MDB_CP_COMPACT). Runs in a read transaction of
    /// its own; the caller makes sure no write is under way if the copy must be of one instant.
    func copyCompacted(to path: String) throws(LMDBError) {
        try check(mdb_env_copy2(handle, path, UInt32(MDB_CP_COMPACT)), "mdb_env_copy2")
    }

    /// Begins the single write transaction (`mdb_txn_begin`).
    @_spi(Testing) public func beginWrite() throws(LMDBError) -> LMDBWriteTransaction {
        var txn: OpaquePointer?
        try check(mdb_txn_begin(handle, nil, 0, &txn), "mdb_txn_begin")
        return LMDBWriteTransaction(txn!)
    }

    /// The address range of the data file's memory map, read from `/proc/self/maps`
    /// (LMDB does not expose it without MDB_FIXEDMAP). Nil if not found.
    func mapRegion() -> (base: UnsafeMutableRawPointer, length: Int)? {
        guard let resolved = realpath(dataPath, nil) else { return nil }
        let wanted = String(decoding: UnsafeRawBufferPointer(start: resolved, count: strlen(resolved)), as: UTF8.self)
        free(resolved)
        let fd = Glibc.open("/proc/self/maps", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var text: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n <= 0 { break }
            text.append(contentsOf: chunk[..<n])
        }
        for line in text.split(separator: 0x0A) {
            let fields = line.split(separator: 0x20, omittingEmptySubsequences: true)
            guard fields.count >= 6, String(decoding: Array(fields[5...].joined(separator: [0x20])), as: UTF8.self) == wanted else { continue }
            let range = fields[0].split(separator: 0x2D)
            guard range.count == 2,
                  let lo = UInt(String(decoding: range[0], as: UTF8.self), radix: 16),
                  let hi = UInt(String(decoding: range[1], as: UTF8.self), radix: 16),
                  let base = UnsafeMutableRawPointer(bitPattern: lo) else { continue }
            return (base, Int(hi - lo))
        }
        return nil
    }

}

/// What both kinds of transaction can do: read.
@_spi(Testing) public protocol LMDBReading: ~Copyable {
    var txn: OpaquePointer { get }
}

extension LMDBReading where Self: ~Copyable {
    /// Opens a named database that must exist (`mdb_dbi_open`); nil when it does not.
    @_spi(Testing) public func openDatabase(_ name: String, integerKeys: Bool) throws(LMDBError) -> LMDBDatabase? {
        var dbi = MDB_dbi()
        let rc = mdb_dbi_open(txn, name, integerKeys ? UInt32(MDB_INTEGERKEY) : 0, &dbi)
        if rc == MDB_NOTFOUND { return nil }
        try check(rc, "mdb_dbi_open(\(name))")
        return LMDBDatabase(handle: dbi)
    }

    /// The value stored under an integer key (`mdb_get`), or nil. The bytes point into the
    /// memory map and stay valid until the transaction ends or writes.
    @inline(__always)
    @_spi(Testing) public func get(_ db: LMDBDatabase, _ key: UInt64) throws(LMDBError) -> UnsafeRawBufferPointer? {
        try lmdbGet(txn, db, key)
    }

    /// The value stored under a string key (`mdb_get`), copied out, or nil.
    @_spi(Testing) public func get(_ db: LMDBDatabase, name: String) throws(LMDBError) -> [UInt8]? {
        var dataVal = MDB_val()
        var nameBytes = Array(name.utf8)
        let rc = nameBytes.withUnsafeMutableBytes { kb in
            var keyVal = MDB_val(mv_size: kb.count, mv_data: kb.baseAddress)
            return strata_mdb_get(UnsafeMutableRawPointer(txn), db.handle, &keyVal, &dataVal)
        }
        if rc == MDB_NOTFOUND { return nil }
        try check(rc, "mdb_get(\(name))")
        return Array(UnsafeRawBufferPointer(start: dataVal.mv_data, count: dataVal.mv_size))
    }

    /// Page counts and entries (`mdb_stat`).
    @_spi(Testing) public func statistics(_ db: LMDBDatabase) throws(LMDBError) -> LMDBStatistics {
        var s = MDB_stat()
        try check(mdb_stat(txn, db.handle, &s), "mdb_stat")
        return LMDBStatistics(
            pageSize: Int(s.ms_psize), branchPages: s.ms_branch_pages, leafPages: s.ms_leaf_pages,
            overflowPages: s.ms_overflow_pages, entries: s.ms_entries)
    }

    /// The largest key of an integer-keyed database (`mdb_cursor_get` with MDB_LAST), or nil
    /// when it is empty.
    func lastKey(_ db: LMDBDatabase) throws(LMDBError) -> UInt64? {
        var last: UInt64?
        try forEachFromLast(db) { key, _ in
            last = key
            return false
        }
        return last
    }

    /// Calls `body` for each entry of an integer-keyed database from the last key down
    /// (`mdb_cursor_get` with MDB_LAST then MDB_PREV). `body` returns false to stop.
    func forEachFromLast(_ db: LMDBDatabase, _ body: (UInt64, UnsafeRawBufferPointer) -> Bool) throws(LMDBError) {
        var cursor: OpaquePointer?
        try check(mdb_cursor_open(txn, db.handle, &cursor), "mdb_cursor_open")
        defer { mdb_cursor_close(cursor) }
        var keyVal = MDB_val()
        var dataVal = MDB_val()
        var rc = strata_mdb_cursor_get(UnsafeMutableRawPointer(cursor), &keyVal, &dataVal, Int32(MDB_LAST.rawValue))
        var previous: UInt64?
        while rc == 0 {
            let key = try integerKey(keyVal, after: previous, ascending: false)
            if !body(key, UnsafeRawBufferPointer(start: dataVal.mv_data, count: dataVal.mv_size)) { return }
            previous = key
            rc = strata_mdb_cursor_get(UnsafeMutableRawPointer(cursor), &keyVal, &dataVal, Int32(MDB_PREV.rawValue))
        }
        if rc != MDB_NOTFOUND { try check(rc, "mdb_cursor_get") }
    }

    /// Calls `body` for each entry of an integer-keyed database in key order, starting at
    /// `start` (`mdb_cursor_open`, `mdb_cursor_get` with MDB_SET_RANGE then MDB_NEXT).
    /// `body` returns false to stop.
    func forEach(
        _ db: LMDBDatabase, from start: UInt64 = 0,
        _ body: (UInt64, UnsafeRawBufferPointer) -> Bool
    ) throws(LMDBError) {
        var cursor: OpaquePointer?
        try check(mdb_cursor_open(txn, db.handle, &cursor), "mdb_cursor_open")
        defer { mdb_cursor_close(cursor) }
        var first = start
        var keyVal = MDB_val()
        var dataVal = MDB_val()
        var rc = withUnsafeMutablePointer(to: &first) { fp in
            keyVal = MDB_val(mv_size: 8, mv_data: fp)
            return strata_mdb_cursor_get(UnsafeMutableRawPointer(cursor), &keyVal, &dataVal, Int32(MDB_SET_RANGE.rawValue))
        }
        var previous: UInt64?
        while rc == 0 {
            let key = try integerKey(keyVal, after: previous, ascending: true)
            if !body(key, UnsafeRawBufferPointer(start: dataVal.mv_data, count: dataVal.mv_size)) { return }
            previous = key
            rc = strata_mdb_cursor_get(UnsafeMutableRawPointer(cursor), &keyVal, &dataVal, Int32(MDB_NEXT.rawValue))
        }
        if rc != MDB_NOTFOUND { try check(rc, "mdb_cursor_get") }
    }
}

/// The integer key a cursor found. A damaged page can give a key of another size, or one
/// out of order (a walk that would revisit pages without end).
@inline(__always)
private func integerKey(_ value: MDB_val, after previous: UInt64?, ascending: Bool) throws(LMDBError) -> UInt64 {
    guard value.mv_size == 8, let bytes = value.mv_data else {
        throw LMDBError(code: STRATA_MDB_BAD_KEY, function: "mdb_cursor_get (a key of \(value.mv_size) bytes)")
    }
    let key = UnsafeRawPointer(bytes).loadUnaligned(as: UInt64.self)
    if let previous, ascending ? key <= previous : key >= previous {
        throw LMDBError(code: STRATA_MDB_BAD_KEY, function: "mdb_cursor_get (key \(key) after \(previous))")
    }
    return key
}

/// A read-only snapshot (`MDB_txn` begun with MDB_RDONLY) from a pool, given back to it when
/// the value ends, on every path (an error included).
@_spi(Testing) public struct LMDBReadTransaction: ~Copyable, LMDBReading {
    @_spi(Testing) public let txn: OpaquePointer
    private let pool: LMDBReaderPool

    fileprivate init(_ txn: OpaquePointer, pool: LMDBReaderPool) {
        self.txn = txn
        self.pool = pool
    }

    deinit { pool.releaseRaw(txn) }
}

/// The write transaction; aborted when the value ends unless `commit` consumed it.
@_spi(Testing) public struct LMDBWriteTransaction: ~Copyable, LMDBReading {
    @_spi(Testing) public let txn: OpaquePointer
    /// Pages that integer-keyed values were written to, for `commit`. A pointer, not a class:
    /// `commit` can only `discard self` with trivially destroyed properties.
    private let written: UnsafeMutablePointer<WrittenPages>

    fileprivate init(_ txn: OpaquePointer) {
        self.txn = txn
        written = .allocate(capacity: 1)
        written.initialize(to: WrittenPages())
    }

    deinit {
        mdb_txn_abort(txn)
        written.deinitialize(count: 1)
        written.deallocate()
    }

    /// Opens a named database, creating it if needed (`mdb_dbi_open` with MDB_CREATE).
    /// The handle is valid in other transactions once this one commits.
    func createDatabase(_ name: String, integerKeys: Bool) throws(LMDBError) -> LMDBDatabase {
        var dbi = MDB_dbi()
        let flags = UInt32(MDB_CREATE) | (integerKeys ? UInt32(MDB_INTEGERKEY) : 0)
        try check(mdb_dbi_open(txn, name, flags, &dbi), "mdb_dbi_open(\(name))")
        return LMDBDatabase(handle: dbi)
    }

    /// Stores a value under an integer key, replacing any (`mdb_put` with MDB_RESERVE, then a
    /// copy into the reserved space, whose page `commit` makes present first).
    ///
    /// With `append`, `key` must be greater than every key in `db` (MDB_APPEND; else the put
    /// fails with MDB_KEYEXIST and writes nothing): the pair goes at the end without a search,
    /// and a full last page keeps all its entries, where an ordinary put past the end moves
    /// the last one to the new page (with 548-byte records, 6 rows a page instead of 7).
    @inline(__always)
    @_spi(Testing) public func put(_ db: LMDBDatabase, _ key: UInt64, _ value: UnsafeRawBufferPointer, append: Bool = false) throws(LMDBError) {
        var k = key
        var dataVal = MDB_val(mv_size: value.count, mv_data: nil)
        let flags = UInt32(MDB_RESERVE) | (append ? UInt32(MDB_APPEND) : 0)
        let rc = withUnsafeMutablePointer(to: &k) { kp in
            var keyVal = MDB_val(mv_size: 8, mv_data: kp)
            return mdb_put(txn, db.handle, &keyVal, &dataVal, flags)
        }
        try check(rc, "mdb_put")
        guard let target = dataVal.mv_data, value.count > 0 else { return }
        target.copyMemory(from: value.baseAddress!, byteCount: value.count)
        written.pointee.note(target)
    }

    /// Stores a value under a string key (`mdb_put`).
    @_spi(Testing) public func put(_ db: LMDBDatabase, name: String, _ value: [UInt8]) throws(LMDBError) {
        var nameBytes = Array(name.utf8)
        var v = value
        let rc = nameBytes.withUnsafeMutableBytes { kb in
            v.withUnsafeMutableBytes { vb in
                var keyVal = MDB_val(mv_size: kb.count, mv_data: kb.baseAddress)
                var dataVal = MDB_val(mv_size: vb.count, mv_data: vb.baseAddress)
                return mdb_put(txn, db.handle, &keyVal, &dataVal, 0)
            }
        }
        try check(rc, "mdb_put(\(name))")
    }

    /// Deletes an integer key (`mdb_del`); false if it was not there.
    @discardableResult
    func delete(_ db: LMDBDatabase, _ key: UInt64) throws(LMDBError) -> Bool {
        var k = key
        let rc = withUnsafeMutablePointer(to: &k) { kp in
            var keyVal = MDB_val(mv_size: 8, mv_data: kp)
            return mdb_del(txn, db.handle, &keyVal, nil)
        }
        if rc == MDB_NOTFOUND { return false }
        try check(rc, "mdb_del")
        return true
    }

    /// Deletes a string key (`mdb_del`); false if it was not there.
    @discardableResult
    func delete(_ db: LMDBDatabase, name: String) throws(LMDBError) -> Bool {
        var nameBytes = Array(name.utf8)
        let rc = nameBytes.withUnsafeMutableBytes { kb in
            var keyVal = MDB_val(mv_size: kb.count, mv_data: kb.baseAddress)
            return mdb_del(txn, db.handle, &keyVal, nil)
        }
        if rc == MDB_NOTFOUND { return false }
        try check(rc, "mdb_del(\(name))")
        return true
    }

    /// Empties a database, or deletes it and closes its handle when `delete` is true
    /// (`mdb_drop`). Frees its pages without reading its leaves.
    func drop(_ db: LMDBDatabase, delete: Bool) throws(LMDBError) {
        try check(mdb_drop(txn, db.handle, delete ? 1 : 0), "mdb_drop")
    }

    /// Distinct pages the values of `put` went to so far: what this transaction will hold
    /// resident while it commits, give or take the branch pages above them.
    var pagesWritten: Int { written.pointee.count }

    /// Makes every change durable (`mdb_txn_commit`, which fsyncs the data file).
    ///
    /// With MDB_WRITEMAP the commit clears a flag on every page the transaction dirtied, a
    /// read-modify-write. The store drops map pages from its page tables as it writes (its
    /// resident cap), so each such read would be a read fault, and the kernel maps up to 16
    /// neighbouring cached pages with it: a commit of a few thousand scattered rows mapped
    /// most of the file. The pages written to are therefore made present first with write
    /// faults, which map one page each.
    @_spi(Testing) public consuming func commit() throws(LMDBError) {
        let raw = txn
        written.pointee.touchAll()
        written.deinitialize(count: 1)
        written.deallocate()
        discard self
        try check(mdb_txn_commit(raw), "mdb_txn_commit")
    }
}

/// The pages a write transaction's values went to, once each.
private struct WrittenPages {
    private static let pageMask = UInt(sysconf(Int32(_SC_PAGESIZE))) - 1
    private var pages = Set<UInt>()
    /// The last page noted, to skip the set for runs of values on one page.
    private var last: UInt = 0

    var count: Int { pages.count }

    @inline(__always)
    mutating func note(_ address: UnsafeMutableRawPointer) {
        let page = UInt(bitPattern: address) & ~Self.pageMask
        if page != last {
            pages.insert(page)
            last = page
        }
    }

    /// Write-faults each page in (`strata_touch_for_write`), in address order.
    mutating func touchAll() {
        for page in pages.sorted() { strata_touch_for_write(UnsafeMutableRawPointer(bitPattern: page)) }
        pages = []
        last = 0
    }
}

/// Read transactions kept reset between uses, so a batch pays `mdb_txn_renew` rather than
/// `mdb_txn_begin`; or, for a store opened for reading, one snapshot pinned for the pool's
/// whole life, which every acquire returns.
@_spi(Testing) public final class LMDBReaderPool: Sendable {
    private let environment: LMDBEnvironment
    /// Checkpoints made durable while this pool served: a lazy reader begun before the last
    /// one renews its snapshot before its next read (`LMDBLazyReader`).
    let commits = Atomic<Int>(0)
    /// A reset `MDB_txn`, used by one thread at a time (MDB_NOTLS allows moving it).
    private struct Idle: @unchecked Sendable { let raw: OpaquePointer }
    private let idle = Locked<[Idle]>([])
    /// The pinned snapshot; nil once `close` ended it, and for a pool of fresh snapshots.
    private let pinned: Locked<Idle?>
    let isPinned: Bool

    init(environment: LMDBEnvironment) {
        self.environment = environment
        pinned = Locked(nil)
        isPinned = false
    }

    /// A pool of one snapshot, begun now (`LMDBEnvironment.beginSnapshot`) and ended by
    /// `close` or when the pool ends. Its users take turns: LMDB lets a read transaction move
    /// between threads (MDB_NOTLS) but not serve two at once; the store opened for reading
    /// holds its checkpoint lock exclusively around every use.
    @_spi(Testing) public init(pinningSnapshotOf environment: LMDBEnvironment) throws(LMDBError) {
        self.environment = environment
        pinned = Locked(Idle(raw: try environment.beginSnapshot()))
        isPinned = true
    }

    deinit {
        close()
    }

    /// A snapshot: the pinned one, or a fresh one (from the pool when one is idle).
    @_spi(Testing) public func acquire() throws(LMDBError) -> LMDBReadTransaction {
        LMDBReadTransaction(try acquireRaw(), pool: self)
    }

    /// Gives a transaction back (ending its value does the same).
    func release(_ transaction: consuming LMDBReadTransaction) {}

    fileprivate func acquireRaw() throws(LMDBError) -> OpaquePointer {
        if isPinned {
            guard let raw = pinned.withLock({ $0?.raw }) else { throw LMDBError(code: EINVAL, function: "a closed snapshot") }
            return raw
        }
        if let raw = idle.withLock({ $0.popLast()?.raw }) {
            let rc = mdb_txn_renew(raw)
            if rc == 0 { return raw }
            mdb_txn_abort(raw)
            throw LMDBError(code: rc, function: "mdb_txn_renew")
        }
        var txn: OpaquePointer?
        try check(mdb_txn_begin(environment.handle, nil, UInt32(MDB_RDONLY), &txn), "mdb_txn_begin")
        return txn!
    }

    /// Takes back a live read transaction (`mdb_txn_reset`); the pinned one stays as it is.
    fileprivate func releaseRaw(_ raw: OpaquePointer) {
        if isPinned { return }
        mdb_txn_reset(raw)
        let entry = Idle(raw: raw)
        idle.withLock { $0.append(entry) }
    }

    /// Aborts every idle transaction, as `mdb_env_set_mapsize` wants none alive.
    func drain() {
        idle.withLock { list in
            for t in list { mdb_txn_abort(t.raw) }
            list.removeAll()
        }
    }

    /// Aborts every idle transaction and the pinned snapshot, before the environment closes.
    /// The caller guarantees none is in use.
    @_spi(Testing) public func close() {
        drain()
        if let snapshot = pinned.withLock({ p -> Idle? in defer { p = nil }; return p }) { mdb_txn_abort(snapshot.raw) }
    }
}

/// A read transaction begun on first use, for batches that may never need LMDB. Returned
/// to its pool when the value ends.
struct LMDBLazyReader: ~Copyable {
    private let pool: LMDBReaderPool
    private var raw: OpaquePointer?
    /// `pool.commits` when the snapshot was taken.
    private var seen = 0

    init(pool: LMDBReaderPool) {
        self.pool = pool
    }

    deinit {
        if let raw { pool.releaseRaw(raw) }
    }

    /// The value under an integer key (`mdb_get`), or nil; valid while this reader lives.
    @inline(__always)
    mutating func get(_ db: LMDBDatabase, _ key: UInt64) throws(LMDBError) -> UnsafeRawBufferPointer? {
        let commits = pool.commits.load(ordering: .acquiring)
        if raw == nil {
            raw = try pool.acquireRaw()
            seen = commits
        } else if commits != seen {
            // A checkpoint became durable since: rows it wrote may have left memory, and must
            // be read as it wrote them.
            mdb_txn_reset(raw!)
            let rc = mdb_txn_renew(raw!)
            guard rc == 0 else {
                mdb_txn_abort(raw!)
                raw = nil
                throw LMDBError(code: rc, function: "mdb_txn_renew")
            }
            seen = commits
        }
        return try lmdbGet(raw!, db, key)
    }

    /// The entries either side of `key` in an integer-keyed database, in the transaction of
    /// the last `get` (which must have come first): the last below it and the first at or
    /// above it, each nil at an end.
    func neighbours(_ db: LMDBDatabase, of key: UInt64) throws(LMDBError)
        -> (below: (key: UInt64, value: UnsafeRawBufferPointer)?, above: (key: UInt64, value: UnsafeRawBufferPointer)?)
    {
        var cursor: OpaquePointer?
        try check(mdb_cursor_open(raw!, db.handle, &cursor), "mdb_cursor_open")
        defer { mdb_cursor_close(cursor) }
        var target = key
        var keyVal = MDB_val()
        var dataVal = MDB_val()
        func step(_ op: MDB_cursor_op) -> Int32 {
            strata_mdb_cursor_get(UnsafeMutableRawPointer(cursor), &keyVal, &dataVal, Int32(op.rawValue))
        }
        var rc = withUnsafeMutablePointer(to: &target) { p in
            keyVal = MDB_val(mv_size: 8, mv_data: p)
            return step(MDB_SET_RANGE)
        }
        var above: (key: UInt64, value: UnsafeRawBufferPointer)?
        if rc == 0 {
            above = (try integerKey(keyVal, after: nil, ascending: true), UnsafeRawBufferPointer(start: dataVal.mv_data, count: dataVal.mv_size))
            rc = step(MDB_PREV)
        } else if rc == MDB_NOTFOUND {
            rc = step(MDB_LAST)
        }
        if rc == MDB_NOTFOUND { return (nil, above) }
        try check(rc, "mdb_cursor_get")
        return ((try integerKey(keyVal, after: nil, ascending: true), UnsafeRawBufferPointer(start: dataVal.mv_data, count: dataVal.mv_size)), above)
    }
}

/// `mdb_get` under an integer key.
@inline(__always)
private func lmdbGet(_ txn: OpaquePointer, _ db: LMDBDatabase, _ key: UInt64) throws(LMDBError) -> UnsafeRawBufferPointer? {
    var k = key
    var dataVal = MDB_val()
    let rc = withUnsafeMutablePointer(to: &k) { kp in
        var keyVal = MDB_val(mv_size: 8, mv_data: kp)
        return strata_mdb_get(UnsafeMutableRawPointer(txn), db.handle, &keyVal, &dataVal)
    }
    if rc == MDB_NOTFOUND { return nil }
    try check(rc, "mdb_get")
    return UnsafeRawBufferPointer(start: dataVal.mv_data, count: dataVal.mv_size)
}
