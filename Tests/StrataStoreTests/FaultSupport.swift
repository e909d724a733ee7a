// Helpers for the fault tests: running strata-fault-driver and reading what it printed,
// reference checks of whole tables, and surgery on a closed store's files (raw bytes, or
// LMDB values through the store's own LMDB wrapper, so LMDB itself stays consistent).
import Testing
@_spi(Testing) import StrataStore
import StrataTestSupport
#if canImport(Glibc)
import Glibc
#endif

enum FaultKit {
    // MARK: The driver

    /// What a run of strata-fault-driver printed and how it ended.
    struct DriverRun: CustomStringConvertible {
        let status: Int32
        let lines: [String]

        /// The rest of the first line `name ...`, or nil.
        func value(_ name: String) -> String? {
            lines.first { $0.hasPrefix(name + " ") }.map { String($0.dropFirst(name.count + 1)) }
        }

        func has(_ line: String) -> Bool { lines.contains(line) }

        func int(_ name: String) -> Int? { value(name).flatMap { Int($0) } }

        /// The whitespace-separated integers after `name`.
        func ints(_ name: String) -> [Int]? {
            value(name).map { $0.split(separator: " ").compactMap { Int($0) } }
        }

        var description: String { "exit \(status):\n" + lines.joined(separator: "\n") }
    }

    static var driver: String { productsDirectory() + "/strata-fault-driver" }

    /// Runs the driver to the end (killing it after `timeout` seconds).
    static func run(_ arguments: [String], timeout: Double = 240) throws -> DriverRun {
        let child = try ChildProcess(driver, arguments)
        let started = ChildProcess.now()
        let lines = child.readAll(timeout: timeout)
        // readAll returns at end of output or at the deadline; past the deadline, stop it.
        if ChildProcess.now() - started >= timeout { child.kill() }
        return DriverRun(status: try child.wait(), lines: lines)
    }

    // MARK: Directories

    /// A fresh directory that `nobody` can enter (mkdtemp makes 0700 ones).
    static func directory(_ prefix: String) -> String {
        let d = temporaryDirectory(prefix)
        chmod(d, 0o755)
        return d
    }

    /// `rm -rf`, in this process: spawning /bin/rm would hand a copy of every open LOCK
    /// descriptor of this process to the child until it execs (see `open`).
    static func remove(_ path: String) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        if info.st_mode & S_IFMT == S_IFDIR {
            chmod(path, 0o755)
            for name in entries(path) { remove(path + "/" + name) }
            rmdir(path)
        } else {
            unlink(path)
        }
    }

    /// The names in a directory but `.` and `..` (none when it cannot be read).
    static func entries(_ path: String) -> [String] { (try? directoryEntries(path)) ?? [] }

    /// Copies a directory's files and subdirectories into `to` (created if needed), in this
    /// process (see `remove`).
    static func copyTree(_ from: String, _ to: String) throws {
        if mkdir(to, 0o755) != 0 { try #require(errno == EEXIST, "mkdir \(to): errno \(errno)") }
        for name in entries(from) {
            var info = stat()
            try #require(lstat(from + "/" + name, &info) == 0)
            if info.st_mode & S_IFMT == S_IFDIR {
                try copyTree(from + "/" + name, to + "/" + name)
            } else {
                try copy(from + "/" + name, to + "/" + name)
            }
        }
    }

    /// Copies a file, in this process.
    static func copy(_ from: String, _ to: String) throws {
        let bytes = try read(from)
        let fd = Glibc.open(to, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        try #require(fd >= 0, "create \(to): errno \(errno)")
        close(fd)
        try write(to, bytes, at: 0)
    }

    // MARK: Opening stores

    /// `Store(path:options:)`, with no retry: a store this process just closed must open at
    /// once (`FaultTests.reopenRightAfterCloseWhileAnotherThreadSpawns`).
    static func open(_ path: String, _ options: Store.Options) throws -> Store {
        try Store(path: path, options: options)
    }

    /// The StoreError opening fails with (through `open`).
    static func openError(_ path: String, _ options: Store.Options, sourceLocation: SourceLocation = #_sourceLocation) -> StoreError? {
        storeError({ try open(path, options) }, sourceLocation: sourceLocation)
    }

    // MARK: Files

    static func size(_ path: String) -> Int? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return Int(info.st_size)
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    static func truncate(_ path: String, to length: Int) throws {
        try #require(Glibc.truncate(path, off_t(length)) == 0, "truncate \(path): errno \(errno)")
    }

    static func read(_ path: String) throws -> [UInt8] {
        let fd = Glibc.open(path, O_RDONLY)
        try #require(fd >= 0, "open \(path): errno \(errno)")
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: size(path) ?? 0)
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        try #require(n == bytes.count)
        return bytes
    }

    static func write(_ path: String, _ bytes: [UInt8], at offset: Int) throws {
        let fd = Glibc.open(path, O_WRONLY)
        try #require(fd >= 0, "open \(path): errno \(errno)")
        defer { close(fd) }
        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
        try #require(n == bytes.count)
    }

    /// Inverts the bits of the byte at `offset`.
    static func flip(_ path: String, at offset: Int) throws {
        let fd = Glibc.open(path, O_RDWR)
        try #require(fd >= 0, "open \(path): errno \(errno)")
        defer { close(fd) }
        var b: UInt8 = 0
        try #require(pread(fd, &b, 1, off_t(offset)) == 1, "\(path) has no byte \(offset)")
        b ^= 0xFF
        try #require(pwrite(fd, &b, 1, off_t(offset)) == 1)
    }

    /// Offsets of every occurrence of `needle` in `haystack`.
    static func occurrences(of needle: [UInt8], in haystack: [UInt8]) -> [Int] {
        guard !needle.isEmpty, haystack.count >= needle.count else { return [] }
        var found: [Int] = []
        let first = needle[0]
        var i = 0
        while i <= haystack.count - needle.count {
            if haystack[i] == first && Array(haystack[i..<(i + needle.count)]) == needle { found.append(i) }
            i += 1
        }
        return found
    }

    // MARK: LMDB values of a closed store

    /// Opens the closed store's rows.mdb without changing its size and runs `body` in one
    /// write transaction, committed if `body` returns.
    static func editLMDB(_ store: String, _ body: (borrowing LMDBWriteTransaction) throws -> Void) throws {
        let data = store + "/rows.mdb"
        let size = try #require(self.size(data))
        let environment = try LMDBEnvironment(path: data, mapSize: size, maxDatabases: 4096, maxReaders: 16)
        defer { environment.close() }
        let txn = try environment.beginWrite()
        try body(txn)
        try txn.commit()
    }

    /// The value of `name` in the "meta" database.
    static func meta(_ store: String, _ name: String) throws -> [UInt8]? {
        var value: [UInt8]?
        try editLMDB(store) { txn in
            let meta = try #require(try txn.openDatabase("meta", integerKeys: false))
            value = try txn.get(meta, name: name)
        }
        return value
    }

    static func setMeta(_ store: String, _ name: String, _ value: [UInt8]) throws {
        try editLMDB(store) { txn in
            let meta = try #require(try txn.openDatabase("meta", integerKeys: false))
            try txn.put(meta, name: name, value)
        }
    }

    /// The stored record of `key` in table `id`.
    static func record(_ store: String, table id: Int, key: UInt64) throws -> [UInt8]? {
        var value: [UInt8]?
        try editLMDB(store) { txn in
            let rows = try #require(try txn.openDatabase("rows.\(id)", integerKeys: true))
            value = try txn.get(rows, key).map { Array($0) }
        }
        return value
    }

    static func setRecord(_ store: String, table id: Int, key: UInt64, _ value: [UInt8]) throws {
        try editLMDB(store) { txn in
            let rows = try #require(try txn.openDatabase("rows.\(id)", integerKeys: true))
            try value.withUnsafeBytes { try txn.put(rows, key, $0) }
        }
    }

    // MARK: Checking rows

    /// Rows of `keys` that differ from the reference (values by peek, bit for bit; values,
    /// optimizer state and update count by `row`). Peek and row move nothing.
    static func wrongRows(_ table: Table, _ reference: ReferenceTable, _ keys: [UInt64]) throws -> [UInt64] {
        let d = table.spec.dimension
        let got = try table.peek(keys)
        var wrong: [UInt64] = []
        for (i, key) in keys.enumerated() {
            let want = reference.row(key)
            let row = try table.row(key)
            if !bitIdentical(Array(got[(i * d)..<((i + 1) * d)]), want.values) || !bitIdentical(row.values, want.values)
                || !bitIdentical(row.optimizerState, want.state) || row.updateCount != want.updateCount {
                wrong.append(key)
            }
        }
        return wrong
    }

    /// The error `body` throws as a StoreError (recording an issue and returning nil when it
    /// throws something else or nothing).
    static func storeError<R>(_ body: () throws -> R, sourceLocation: SourceLocation = #_sourceLocation) -> StoreError? {
        do {
            _ = try body()
            Issue.record("expected a StoreError, but the call succeeded", sourceLocation: sourceLocation)
            return nil
        } catch let error as StoreError {
            return error
        } catch {
            Issue.record("expected a StoreError, got \(error)", sourceLocation: sourceLocation)
            return nil
        }
    }
}
