// A power cut, not a kill. After kill -9 the kernel still writes back everything the process
// wrote; after a power cut only what reached the disk is there. The crash writer runs once with
// libStrataWriteLog.so preloaded (Tests/WriteLog), which logs every change it makes to the store's
// files. For each moment just after a sync returned, and for the end, the test builds directories
// a power cut at that moment could have left and opens each: the store must come back at the
// checkpoint the writer had reported (or the one it was writing), with exactly its rows.
import Foundation
import Testing
import StrataStore
import StrataTestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite struct PowerLossTests {
    static let seed: UInt64 = 2026_1207
    /// The run ends with the workload's 10th checkpoint, then closes the store.
    static let checkpoints = 10

    @Test(arguments: [false, true])
    func storeOpensAtItsReportedCheckpointAfterAPowerCutAtAnySync(inFlight: Bool) throws {
        let directory = temporaryDirectory("strata-power")
        // Kept when a check fails: the log and the state that failed are there.
        var passed = false
        defer { if passed { removeDirectory(directory) } else { print("power loss: kept \(directory)") } }
        let root = directory + "/store", logPath = directory + "/writes.log"
        try #require(mkdir(root, 0o755) == 0)
        let library = productsDirectory() + "/libStrataWriteLog.so"
        try #require(access(library, R_OK) == 0, "\(library) is missing: it is built by swift build --build-tests")

        let child = try ChildProcess(
            productsDirectory() + "/strata-fault-driver",
            ["crash-writer", "--store", root, "--seed", "\(Self.seed)", "--in-flight", inFlight ? "1" : "0",
             "--operations", "\(Self.operations(throughCheckpoint: Self.checkpoints))", "--close", "1",
             // A map that grows twice in the run, so that growing it is cut into too.
             "--map-bytes", "\(256 << 10)"],
            environment: ["LD_PRELOAD": library, "STRATA_WRITE_LOG": logPath, "STRATA_WRITE_LOG_ROOT": root])
        let lines = child.readAll(timeout: 120)
        let status = try child.wait()
        try #require(status == 0 && lines.suffix(2) == ["closed", "finished"], "the recorded writer failed (status \(status)): \(lines.suffix(5))")

        let log = try WriteLog(contentsOf: logPath)
        // The recorder missed nothing: the whole log replayed is what the writer left.
        let left = try FileTree.read(root)
        let replayed = try log.prefixState(log.records.count)
        try #require(replayed.files == left.files && replayed.directories == left.directories,
                     "replaying the whole log does not give the writer's directory: \(replayed.difference(from: left))")

        var cuts = log.records.indices.filter { log.records[$0].isBarrier }.map { $0 + 1 }
        if cuts.last != log.records.count { cuts.append(log.records.count) }
        var references = ReferenceCache()
        var (opened, insideCheckpoint, rolledBack, unreported, unsynced, dropped) = (0, 0, 0, 0, 0, 0)
        var (unsyncedNames, droppedNames) = (0, 0)
        var generations: ClosedRange<UInt64>?
        var lastPrefix: UInt64 = 0
        for (index, cut) in cuts.enumerated() {
            let expected = log.reported(before: cut)
            if expected.inFlight { insideCheckpoint += 1 }
            for kind in ["prefix", "random-1", "random-2"] {
                let context = "cut \(index) of \(cuts.count) (after log offset \(log.offset(of: cut))), \(kind) state"
                let state: FileTree
                if kind == "prefix" {
                    state = try log.prefixState(cut)
                } else {
                    // Seeded by the cut and kind alone: any one state can be rebuilt from the kept log.
                    var random = SplitMix64(seed: UInt64(cut) << 8 | (kind == "random-1" ? 1 : 2))
                    let made = try log.randomState(cut, &random)
                    (state, unsynced, dropped) = (made.state, unsynced + made.unsynced, dropped + made.dropped)
                    (unsyncedNames, droppedNames) = (unsyncedNames + made.unsyncedNames, droppedNames + made.droppedNames)
                }
                let place = directory + "/cut-\(index)-\(kind)"
                try state.write(to: place)
                let (generation, rolled) = try Self.check(place, expecting: expected, references: &references, context)
                removeDirectory(place)
                // Checkpoints are never taken back: a later moment never has an earlier one.
                if kind == "prefix" {
                    try #require(generation >= lastPrefix, "\(context): opened at generation \(generation), after an earlier cut's \(lastPrefix)")
                    lastPrefix = generation
                }
                opened += 1
                if rolled { rolledBack += 1 }
                if generation > expected.generation { unreported += 1 }
                generations = generations.map { min($0.lowerBound, generation)...max($0.upperBound, generation) } ?? generation...generation
            }
        }
        print("power loss\(inFlight ? " (checkpoints in flight)" : ""): \(log.records.count) records, \(cuts.count) cuts "
              + "(\(insideCheckpoint) inside a checkpoint), \(opened) states opened at generations \(generations.map { "\($0)" } ?? "none"); "
              + "\(rolledBack) rolled a checkpoint back, \(unreported) came back at a checkpoint not yet reported; "
              + "the random states left out \(dropped) of \(unsynced) unsynced write pieces "
              + "and undid \(droppedNames) of \(unsyncedNames) name changes no directory sync covered")
        #expect(generations?.upperBound == UInt64(Self.checkpoints))
        passed = true
    }

    /// Opens the store at `place` and checks it against what the writer had reported; returns
    /// the generation it opened at and whether it rolled a checkpoint back.
    static func check(_ place: String, expecting expected: WriteLog.Reported, references: inout ReferenceCache,
                     _ context: String) throws -> (UInt64, Bool) {
        let opening = Result { try CrashScenario.open(place) }
        let (store, tables) = try #require(try? opening.get(), "\(context): the store does not open: \(opening)")
        let generation = store.lastCheckpoint.generation
        try #require(generation == expected.generation || (expected.inFlight && generation == expected.generation + 1),
                     "\(context): opened at generation \(generation); the writer had reported \(expected.generation)\(expected.inFlight ? " and begun the next" : "")")
        let operations = CrashScenario.operations(in: store.lastCheckpoint)
        try #require(operations == expected.operations[generation],
                     "\(context): generation \(generation) holds \(operations) operations, not \(expected.operations[generation].map(String.init) ?? "?")")
        let rowBytes = CrashScenario.dimension * MemoryLayout<Float>.size
        for (table, reference) in zip(tables, references.tables(after: operations)) {
            let got = try table.peek(CrashScenario.keys)
            // Bit for bit: memcmp, row by row.
            let wrong = got.withUnsafeBytes { got in
                reference.values.withUnsafeBytes { want in
                    CrashScenario.keys.indices.filter { memcmp(got.baseAddress! + $0 * rowBytes, want.baseAddress! + $0 * rowBytes, rowBytes) != 0 }
                }
            }
            try #require(wrong.isEmpty, "\(context), table \(table.name): \(wrong.count) rows differ from generation \(generation), first key \(wrong.first.map { CrashScenario.keys[$0] } ?? 0)")
            try #require(try table.statistics().rows.total == reference.rows, "\(context), table \(table.name): row count")
            let problems = try table.verify()
            try #require(problems.isEmpty, "\(context), table \(table.name): verify found \(problems)")
        }
        try store.close()
        return (generation, store.openReport.contains { $0.hasPrefix("rolled back") })
    }

    /// Operations up to and including the workload's `count`-th checkpoint.
    static func operations(throughCheckpoint count: Int) -> Int {
        var workload = CrashScenario.workload(seed: seed)
        var seen = 0, index = 0
        while seen < count {
            if case .checkpoint = workload.next() { seen += 1 }
            index += 1
        }
        return index
    }
}

/// What each reference table reads for every key, and its row count, after the first N
/// operations of the workload, by N: a random state may open at an earlier checkpoint than the
/// prefix state of the same cut.
struct ReferenceCache {
    private var byCount: [Int: [(values: [Float], rows: Int)]] = [:]

    mutating func tables(after operations: Int) -> [(values: [Float], rows: Int)] {
        if let tables = byCount[operations] { return tables }
        var workload = CrashScenario.workload(seed: PowerLossTests.seed)
        var references = CrashScenario.tables.map { ReferenceTable(spec: $0.spec) }
        for index in 0..<operations { CrashScenario.replay(workload.next(), index: index, into: &references) }
        let tables = references.map { ($0.values(CrashScenario.keys), $0.rows.count) }
        byCount[operations] = tables
        return tables
    }
}

// MARK: The log

/// libStrataWriteLog's log, read whole (the format is in Tests/WriteLog/include/strata_write_log.h).
struct WriteLog {
    enum Record {
        case create(UInt32, String)
        case openExisting(UInt32, String)
        /// `throughMapping`: a page found changed in a shared mapping (a PAGE record).
        case write(UInt32, offset: Int, bytes: ArraySlice<UInt8>, throughMapping: Bool)
        case truncate(UInt32, size: Int)
        case extend(UInt32, size: Int)
        case sync(UInt32)
        case rangeSync(UInt32, offset: Int, length: Int)
        case rename(String, String)
        case unlink(String)
        case mkdir(String)
        case mark(String)
        case unknown(UInt32, String)
        /// A directory's fsync returned: "" the root, ".." the root's parent.
        case directorySync(String)

        var isBarrier: Bool {
            switch self {
            case .sync, .rangeSync, .directorySync: true
            default: false
            }
        }
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    let records: [Record]
    /// Where each record starts in the log, and its end.
    private let offsets: [Int]
    /// For each write record, by index: the index of the first sync after it that covers each of
    /// its pieces (`pieces`), or Int.max.
    private let durable: [Int: [Int]]

    static let page = 4096

    init(contentsOf path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else { throw Failure(description: "cannot read \(path)") }
        let bytes = [UInt8](data)
        var records: [Record] = [], offsets: [Int] = []
        var at = 0
        func take(_ count: Int) throws -> ArraySlice<UInt8> {
            guard count <= bytes.count - at else { throw Failure(description: "\(path) ends inside the record at offset \(offsets.last ?? 0)") }
            defer { at += count }
            return bytes[at..<(at + count)]
        }
        func u32() throws -> UInt32 { try take(4).reversed().reduce(0) { $0 << 8 | UInt32($1) } }
        func u64() throws -> Int { Int(try take(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }) }
        func field() throws -> ArraySlice<UInt8> { try take(Int(try u32())) }
        func text() throws -> String { String(decoding: try field(), as: UTF8.self) }
        while at < bytes.count {
            offsets.append(at)
            let type = try take(1).first!
            switch type {
            case 1: records.append(.create(try u32(), try text()))
            case 2: records.append(.openExisting(try u32(), try text()))
            case 3, 13: records.append(.write(try u32(), offset: try u64(), bytes: try field(), throughMapping: type == 13))
            case 4: records.append(.truncate(try u32(), size: try u64()))
            case 5: records.append(.extend(try u32(), size: try u64()))
            case 6: records.append(.sync(try u32()))
            case 7: records.append(.rangeSync(try u32(), offset: try u64(), length: try u64()))
            case 8: records.append(.rename(try text(), try text()))
            case 9: records.append(.unlink(try text()))
            case 10: records.append(.mkdir(try text()))
            case 11: records.append(.mark(try text()))
            case 12: records.append(.unknown(try u32(), try text()))
            case 14: records.append(.directorySync(try text()))
            default: throw Failure(description: "\(path): unknown record type \(type) at offset \(at - 1)")
            }
        }
        offsets.append(at)
        self.records = records
        self.offsets = offsets
        durable = Self.durability(records)
    }

    /// The log offset where the record at `index` starts (the log's size for the end).
    func offset(of index: Int) -> Int { offsets[index] }

    /// A write split at 4 KiB boundaries of the file: the pieces a power cut may tear it into.
    static func pieces(offset: Int, count: Int) -> [Range<Int>] {
        var pieces: [Range<Int>] = []
        var start = 0
        while start < count {
            let end = min(count, ((offset + start) / page + 1) * page - offset)
            pieces.append(start..<end)
            start = end
        }
        return pieces
    }

    /// Scans backwards, remembering per file the nearest SYNC ahead and per page the nearest
    /// RANGE_SYNC ahead.
    private static func durability(_ records: [Record]) -> [Int: [Int]] {
        var fileSync: [UInt32: Int] = [:]
        var pageSync: [UInt32: [Int: Int]] = [:]
        var durable: [Int: [Int]] = [:]
        for index in records.indices.reversed() {
            switch records[index] {
            case .sync(let inode):
                fileSync[inode] = index
            case .rangeSync(let inode, let offset, let length):
                for number in (offset / page)..<((offset + length + page - 1) / page) { pageSync[inode, default: [:]][number] = index }
            case .write(let inode, let offset, let bytes, _):
                durable[index] = pieces(offset: offset, count: bytes.count).map { piece in
                    min(fileSync[inode] ?? .max, pageSync[inode]?[(offset + piece.lowerBound) / page] ?? .max)
                }
            default:
                break
            }
        }
        return durable
    }

    /// Every record before `cut` applied in order.
    func prefixState(_ cut: Int) throws -> FileTree {
        var tree = FileTree()
        for index in 0..<cut {
            if case .write(let inode, let offset, let bytes, _) = records[index] {
                tree.write(inode, at: offset, bytes)
            } else {
                try tree.apply(records[index], at: offsets[index])
            }
        }
        return tree
    }

    /// What a power cut just before record `cut` may leave: each write piece a sync before the
    /// cut covers; each other piece of a write before the next sync after the cut with
    /// probability 1/2, in log order. Pieces found through a mapping after the cut count too,
    /// since the kernel may write back a mapped page before msync asks; other writes after it
    /// had not been made.
    ///
    /// Names likewise: a file's fsync makes its data durable, not the directory entry naming it
    /// (POSIX promises that only for a sync of the directory; some filesystems happen to journal
    /// a new file's name with its data, which is not to be counted on). So each change to an
    /// entry of directory D before the cut — a name made (CREATE, MKDIR, a RENAME's target) or
    /// removed (UNLINK, a RENAME's source) — holds only if a DIRECTORY_SYNC of D follows it
    /// before the cut; otherwise it happened or not with probability 1/2, each change on its own
    /// (the disk may keep any of them). A file whose name is lost is absent, whatever was written
    /// to it; a directory whose name is lost takes everything under it along. A RENAME's target
    /// names the file the source named in the log's order, even when the source's own creation
    /// was lost: the rename links that file there. Directories are matched by their path when
    /// synced; renaming a directory is applied as it happened (the store renames none).
    /// Also says how many pieces and name changes were left to chance and how many of those
    /// were left out.
    func randomState(_ cut: Int, _ random: inout SplitMix64) throws
        -> (state: FileTree, unsynced: Int, dropped: Int, unsyncedNames: Int, droppedNames: Int) {
        // Contents by inode (and, in `tree`'s names, the names as the log has them), as in the
        // prefix state; `kept` is the names this power cut left, applied to `tree` at the end.
        var tree = FileTree()
        var kept: [String: FileTree.Entry] = [:]
        var (unsynced, dropped, unsyncedNames, droppedNames) = (0, 0, 0, 0)
        // The last sync of each directory before the cut.
        var lastSync: [String: Int] = [:]
        for index in 0..<cut { if case .directorySync(let path) = records[index] { lastSync[path] = index } }
        // Whether the change at `index` to an entry of `path`'s directory happened.
        func happened(_ index: Int, _ path: String) -> Bool {
            let parent = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? ""
            if let synced = lastSync[parent], synced > index { return true }
            unsyncedNames += 1
            if random.next() & 1 == 0 { return true }
            droppedNames += 1
            return false
        }
        let end = records[cut...].firstIndex { $0.isBarrier } ?? records.count
        for index in 0..<end {
            guard case .write(let inode, let offset, let bytes, let throughMapping) = records[index] else {
                guard index < cut else { continue }
                switch records[index] {
                case .create(let inode, let path):
                    if happened(index, path) { kept[path] = .file(inode) }
                case .mkdir(let path):
                    if happened(index, path) { kept[path] = .directory }
                case .unlink(let path):
                    if happened(index, path) { kept[path] = nil }
                case .rename(let from, let to) where from != to:
                    if tree.entry(from) == .directory {
                        for path in Array(kept.keys) where path == to || path.hasPrefix(to + "/") { kept[path] = nil }
                        for (path, entry) in kept where path == from || path.hasPrefix(from + "/") {
                            kept[path] = nil
                            kept[to + path.dropFirst(from.count)] = entry
                        }
                    } else {
                        let moved = tree.entry(from)
                        if happened(index, to) { kept[to] = moved }
                        if happened(index, from) { kept[from] = nil }
                    }
                default:
                    break
                }
                try tree.apply(records[index], at: offsets[index])
                continue
            }
            if index >= cut && !throughMapping { continue }
            for (piece, synced) in zip(Self.pieces(offset: offset, count: bytes.count), durable[index]!) {
                if synced >= cut {
                    unsynced += 1
                    if random.next() & 1 == 0 {
                        dropped += 1
                        continue
                    }
                }
                tree.write(inode, at: offset + piece.lowerBound, bytes.dropFirst(piece.lowerBound).prefix(piece.count))
            }
        }
        tree.setNames(kept)
        return (tree, unsynced, dropped, unsyncedNames, droppedNames)
    }

    /// What the writer had printed before record `cut`.
    struct Reported {
        /// The last checkpoint it reported done (0 before any).
        var generation: UInt64 = 0
        /// Whether it had begun another since.
        var inFlight = false
        /// The operations each checkpoint holds: done ones, and the one begun.
        var operations: [UInt64: Int] = [0: 0]
    }

    func reported(before cut: Int) -> Reported {
        var reported = Reported()
        for case .mark(let text) in records[..<cut] {
            for line in text.split(separator: "\n") {
                let parts = line.split(separator: " ")
                if parts.first == "begin", parts.count == 2 {
                    reported.inFlight = true
                    reported.operations[reported.generation + 1] = Int(parts[1])
                } else if parts.first == "done", parts.count == 3, let g = UInt64(parts[1]) {
                    reported.generation = g
                    reported.inFlight = false
                    reported.operations[g] = Int(parts[2])
                }
            }
        }
        return reported
    }
}

/// Files and directories as records leave them: contents by inode, names by path (relative to
/// the store's directory).
struct FileTree {
    private var contents: [UInt32: [UInt8]] = [:]
    private var names: [String: UInt32] = [:]
    private(set) var directories: Set<String> = []

    /// Each named file's bytes.
    var files: [String: [UInt8]] { names.compactMapValues { contents[$0] } }

    enum Entry: Equatable {
        case file(UInt32)
        case directory
    }

    /// What `path` names, if anything.
    func entry(_ path: String) -> Entry? {
        if let inode = names[path] { return .file(inode) }
        return directories.contains(path) ? .directory : nil
    }

    /// Replaces the names with `entries`, leaving out those whose directory is not among them
    /// (contents stay by inode: a file no name reaches is left out).
    mutating func setNames(_ entries: [String: Entry]) {
        func reachable(_ path: String) -> Bool {
            guard let slash = path.lastIndex(of: "/") else { return true }
            let parent = String(path[..<slash])
            return entries[parent] == .directory && reachable(parent)
        }
        names = [:]
        directories = []
        for (path, entry) in entries where reachable(path) {
            switch entry {
            case .file(let inode): names[path] = inode
            case .directory: directories.insert(path)
            }
        }
    }

    mutating func apply(_ record: WriteLog.Record, at offset: Int) throws {
        func fail(_ what: String) -> WriteLog.Failure { WriteLog.Failure(description: "record at log offset \(offset): \(what)") }
        switch record {
        case .create(let inode, let path):
            contents[inode] = []
            names[path] = inode
        case .openExisting(let inode, let path):
            guard names[path] == inode else { throw fail("\(path) is inode \(inode) for the recorder, \(names[path].map(String.init) ?? "missing") here") }
        case .write(let inode, let at, let bytes, _):
            write(inode, at: at, bytes)
        case .truncate(let inode, let size):
            resize(inode) { _ in size }
        case .extend(let inode, let size):
            resize(inode) { max($0, size) }
        case .rename(let from, let to) where from != to:
            for path in Array(names.keys) + Array(directories) where path == to || path.hasPrefix(to + "/") {
                names[path] = nil
                directories.remove(path)
            }
            for (path, inode) in names where path == from || path.hasPrefix(from + "/") {
                names[path] = nil
                names[to + path.dropFirst(from.count)] = inode
            }
            for path in directories where path == from || path.hasPrefix(from + "/") {
                directories.remove(path)
                directories.insert(to + path.dropFirst(from.count))
            }
        case .unlink(let path):
            names[path] = nil
            directories.remove(path)
        case .mkdir(let path):
            directories.insert(path)
        case .unknown(_, let path):
            throw fail("\(path) was there before recording began, or came from outside: its contents are unknown")
        case .sync, .rangeSync, .mark, .rename, .directorySync:
            break
        }
    }

    /// Writes `bytes` at `offset` of a file (of one that no longer exists at this point of the
    /// log, nothing), growing it as needed.
    mutating func write(_ inode: UInt32, at offset: Int, _ bytes: ArraySlice<UInt8>) {
        guard !bytes.isEmpty, contents[inode] != nil else { return }
        resize(inode) { max($0, offset + bytes.count) }
        contents[inode]!.withUnsafeMutableBytes { file in
            bytes.withUnsafeBytes { (file.baseAddress! + offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        }
    }

    /// Sets a file's size to `size(current)`, with zeros past the old end.
    private mutating func resize(_ inode: UInt32, _ size: (Int) -> Int) {
        guard let old = contents.removeValue(forKey: inode) else { return }
        let new = size(old.count)
        if new == old.count {
            contents[inode] = old
            return
        }
        contents[inode] = [UInt8](unsafeUninitializedCapacity: new) { buffer, count in
            let kept = min(new, old.count)
            old.withUnsafeBytes { if kept > 0 { UnsafeMutableRawPointer(buffer.baseAddress!).copyMemory(from: $0.baseAddress!, byteCount: kept) } }
            if new > kept { memset(buffer.baseAddress! + kept, 0, new - kept) }
            count = new
        }
    }

    /// Creates the directory `root` holding this tree.
    func write(to root: String) throws {
        let manager = FileManager.default
        try manager.createDirectory(atPath: root, withIntermediateDirectories: true)
        for path in directories.sorted() {
            try manager.createDirectory(atPath: root + "/" + path, withIntermediateDirectories: false)
        }
        for (path, bytes) in files {
            guard manager.createFile(atPath: root + "/" + path, contents: Data(bytes)) else {
                throw WriteLog.Failure(description: "cannot write \(root)/\(path)")
            }
        }
    }

    /// The tree of a real directory.
    static func read(_ root: String) throws -> FileTree {
        var tree = FileTree()
        let manager = FileManager.default
        for path in try manager.subpathsOfDirectory(atPath: root) {
            var isDirectory: ObjCBool = false
            _ = manager.fileExists(atPath: root + "/" + path, isDirectory: &isDirectory)
            if isDirectory.boolValue {
                tree.directories.insert(path)
            } else {
                let inode = UInt32(tree.contents.count + 1)
                tree.contents[inode] = [UInt8](manager.contents(atPath: root + "/" + path) ?? Data())
                tree.names[path] = inode
            }
        }
        return tree
    }

    /// What differs from `other`, for a message.
    func difference(from other: FileTree) -> String {
        let (mine, theirs) = (files, other.files)
        var found: [String] = []
        for path in Set(mine.keys).union(theirs.keys).sorted() where mine[path] != theirs[path] {
            guard let a = mine[path], let b = theirs[path] else {
                found.append("\(path) \(mine[path] == nil ? "missing" : "extra")")
                continue
            }
            let first = a.indices.first { $0 >= b.count || a[$0] != b[$0] } ?? a.count
            found.append("\(path) (\(a.count) bytes, not \(b.count); first difference at \(first))")
        }
        for path in directories.symmetricDifference(other.directories).sorted() {
            found.append("directory \(path) \(directories.contains(path) ? "extra" : "missing")")
        }
        return found.joined(separator: ", ")
    }
}
