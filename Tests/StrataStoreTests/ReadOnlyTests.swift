// Directories and files the process cannot write (strata-fault-driver read-only): the error is
// `.readOnly` naming the path, nothing is created or changed, and the store, once writable
// again, opens at its last checkpoint with every row intact. As root (whom permissions do not
// stop) the child becomes `nobody` and the test owns the files; otherwise the test takes
// write permission away with chmod.
import Testing
@_spi(Testing) import StrataStore
import StrataTestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite struct ReadOnlyTests {
    static var root: Bool { geteuid() == 0 }

    /// A closed store at `path` with SmallWorkload applied once and checkpointed.
    func makeStore(_ path: String) throws {
        let store = try FaultKit.open(path, SmallWorkload.options())
        let table = try store.createTable("rows", SmallWorkload.spec)
        try table.applyGradients(SmallWorkload.keys, SmallWorkload.gradients)
        try store.checkpoint(payload: CheckpointCount.payload(1))
        try store.close()
    }

    func expectIntact(_ path: String, applications: Int, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let store = try FaultKit.open(path, SmallWorkload.options())
        #expect(CheckpointCount.count(in: store.lastCheckpoint.payload) == applications, sourceLocation: sourceLocation)
        #expect(store.tableNames == ["rows"], sourceLocation: sourceLocation)
        let wrong = try FaultKit.wrongRows(store.table("rows"), SmallWorkload.reference(applications: applications), SmallWorkload.keys)
        #expect(wrong.isEmpty, "\(wrong.count) rows differ", sourceLocation: sourceLocation)
        try store.close()
    }

    func expectReadOnly(_ run: FaultKit.DriverRun, path: String, prefix: String = "error",
                        sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(run.status == 0, "\(run)", sourceLocation: sourceLocation)
        #expect(run.value("dropped") == (Self.root ? "1" : "0"), sourceLocation: sourceLocation)
        #expect(run.value(prefix + "-case") == "readOnly", "\(run)", sourceLocation: sourceLocation)
        #expect(run.value(prefix + "-path") == path, "\(run)", sourceLocation: sourceLocation)
        #expect(run.value(prefix + "-text")?.hasPrefix(path + ": cannot write") == true, "\(run)", sourceLocation: sourceLocation)
    }

    @Test func creatingAStoreInADirectoryThatCannotBeWritten() throws {
        let base = FaultKit.directory("strata-readonly-create")
        defer { FaultKit.remove(base) }
        let locked = base + "/locked"
        mkdir(locked, 0o755)
        chmod(locked, 0o555)
        defer { chmod(locked, 0o755) }

        // A new directory inside it, and the directory itself.
        let inside = try FaultKit.run(["read-only", "--case", "create", "--store", locked + "/store"], timeout: 60)
        expectReadOnly(inside, path: locked + "/store")
        let at = try FaultKit.run(["read-only", "--case", "create", "--store", locked], timeout: 60)
        expectReadOnly(at, path: locked + "/LOCK")
        #expect(!FaultKit.exists(locked + "/store") && !FaultKit.exists(locked + "/LOCK") && !FaultKit.exists(locked + "/rows.mdb"))
    }

    @Test func openingAStoreWhoseFilesCannotBeWritten() throws {
        let base = FaultKit.directory("strata-readonly-open")
        defer { FaultKit.remove(base) }
        let path = base + "/store"
        try makeStore(path)
        let files = ["LOCK", "rows.mdb", "rows.mdb-lock", "tables/1/warm.slab", "tables/1/warm.index", "tables/1/spill.slab"]
        let directories = [path, path + "/tables", path + "/tables/1"]
        let kept = ["rows.mdb", "tables/1/warm.slab", "tables/1/warm.index"]
        let before = try kept.map { try FaultKit.read(path + "/" + $0) }

        // Nothing writable: the lock file is the first thing refused.
        if !Self.root {
            for f in files { chmod(path + "/" + f, 0o444) }
            for d in directories { chmod(d, 0o555) }
        }
        let run = try FaultKit.run(["read-only", "--case", "open", "--store", path], timeout: 60)
        expectReadOnly(run, path: path + "/LOCK")

        // The lock file writable, LMDB's files not: LMDB refuses.
        if Self.root { chown(path + "/LOCK", 65534, 65534) } else { chmod(path + "/LOCK", 0o644) }
        let second = try FaultKit.run(["read-only", "--case", "open", "--store", path], timeout: 60)
        expectReadOnly(second, path: path + "/rows.mdb")

        // Writable again: nothing was changed, nothing was lost.
        if Self.root { chown(path + "/LOCK", 0, 0) }
        for f in files { chmod(path + "/" + f, 0o644) }
        for d in directories { chmod(d, 0o755) }
        #expect(try kept.map { try FaultKit.read(path + "/" + $0) } == before, "the refused opens changed the store's files")
        try expectIntact(path, applications: 1)
    }

    /// The directories lose write permission under an open store (the files stay open): a new
    /// table cannot be made, close cannot save the warm index, and either may be reported;
    /// the store reopens at its last checkpoint.
    @Test func directoryBecomesReadOnlyWhileOpen() throws {
        let base = FaultKit.directory("strata-readonly-open-store")
        defer { FaultKit.remove(base) }
        let path = base + "/store"
        let run = try FaultKit.run(["read-only", "--case", "while-open", "--store", path], timeout: 60)
        print("read-only while open: " + run.lines.joined(separator: " | "))
        #expect(run.status == 0, "\(run)")
        #expect(run.value("checkpoint") == "1 1")
        #expect(run.value("create-table-case") == "readOnly", "\(run)")
        #expect(run.value("create-table-path")?.hasPrefix(path + "/tables/") == true, "\(run)")
        // The files are open, so the checkpoint may succeed; if it fails it says why.
        if let failed = run.value("checkpoint-after-case") {
            #expect(["readOnly", "diskFull"].contains(failed), "\(run)")
        }
        #expect(run.value("close-case") == "readOnly", "\(run)")
        #expect(run.value("close-path")?.hasPrefix(path + "/tables/1/warm.index") == true, "\(run)")
        let last = try #require(run.ints("last"))
        try #require(last.count == 2)

        if !Self.root { for d in [path, path + "/tables", path + "/tables/1"] { chmod(d, 0o755) } }
        let store = try FaultKit.open(path, SmallWorkload.options())
        #expect(Int(store.lastCheckpoint.generation) == last[0])
        try store.close()
        try expectIntact(path, applications: last[1])
    }
}
