// Reading a store while another process writes it (`Store(readerAt:)`): the writer is a child
// process running the crash scenario (strata-fault-driver), which says what each checkpoint
// holds ("done G N": checkpoint G holds its first N operations), and this process replays the
// same deterministic operations into reference tables. Every value a reader returns must be
// the reference's at the checkpoint it says it reads, and that checkpoint must be the last
// one completed when it opened. No duration is measured or asserted.
import Foundation
import Testing
@_spi(Testing) import StrataStore
import StrataTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The crash scenario replayed in this process, forward to any number of operations.
struct ScenarioReplay {
    private var workload: Workload
    private(set) var references = CrashScenario.tables.map { ReferenceTable(spec: $0.spec) }
    private(set) var replayed = 0

    init(seed: UInt64) { workload = CrashScenario.workload(seed: seed) }

    mutating func advance(to operations: Int) throws {
        try #require(operations >= replayed, "a reader went back from \(replayed) operations to \(operations)")
        while replayed < operations {
            CrashScenario.replay(workload.next(), index: replayed, into: &references)
            replayed += 1
        }
    }

    var totalRows: Int { references.reduce(0) { $0 + $1.rows.count } }
}

/// A child process writing the crash scenario's store, and what it has said.
final class ScenarioWriter {
    let child: ChildProcess
    /// Operations of each checkpoint it reported done, by generation.
    private(set) var operations: [UInt64: Int] = [:]
    private(set) var lastDone: UInt64 = 0
    private(set) var holding: UInt64?

    init(_ arguments: [String]) throws {
        child = try ChildProcess(FaultKit.driver, arguments)
    }

    /// The crash scenario written at `path` with checkpoints in flight, each begun as soon as
    /// the last is durable, in transactions of 2 pages.
    static func checkpointingContinuously(at path: String) throws -> ScenarioWriter {
        try ScenarioWriter(["crash-writer", "--store", path, "--seed", "\(ReaderChecks.seed)", "--in-flight", "1", "--transaction-pages", "2"])
    }

    var description: String { "process \(child.pid)" }

    private func take(_ line: String) {
        let parts = line.split(separator: " ")
        if parts.first == "done", parts.count == 3, let g = UInt64(parts[1]), let n = Int(parts[2]) {
            operations[g] = n
            lastDone = max(lastDone, g)
        }
        if parts.first == "holding", parts.count == 2 { holding = UInt64(parts[1]) }
    }

    /// Takes what the writer printed so far, without waiting for more.
    func catchUp() {
        while let line = child.readLine(timeout: 0.001) { take(line) }
    }

    /// Reads until `done(self)` holds; false at the end of output or after `timeout` seconds.
    @discardableResult
    func waitFor(timeout: Double = 300, _ done: (ScenarioWriter) -> Bool) -> Bool {
        let deadline = ChildProcess.now() + timeout
        while !done(self) {
            guard let line = child.readLine(timeout: max(0, deadline - ChildProcess.now())) else { return false }
            take(line)
        }
        return true
    }

    /// The operations of checkpoint `generation`, once the writer has reported it.
    func operations(of generation: UInt64) throws -> Int {
        try #require(waitFor { $0.operations[generation] != nil }, "the writer never reported checkpoint \(generation): \(child.lines.suffix(5))")
        return operations[generation]!
    }

    var errors: [String] { child.lines.filter { $0.hasPrefix("error") } }
}

enum ReaderChecks {
    static let seed: UInt64 = 2026_1206

    /// Whether `store` holds exactly what `replay` says, table by table: every key's values
    /// (by peek, and by lookup on the second table, which moves rows into the reader's hot
    /// tier), the row counts, and a scan of the first table with its optimizer state.
    static func expectHolds(_ store: Store, _ replay: ScenarioReplay, _ context: String,
                            sourceLocation: SourceLocation = #_sourceLocation) throws {
        let d = CrashScenario.dimension
        let keys = CrashScenario.keys
        for (index, (spec, reference)) in zip(CrashScenario.tables, replay.references).enumerated() {
            let table = try store.table(spec.name)
            let want = reference.values(keys)
            var reads = [try table.peek(keys)]
            if index == 1 { reads.append(try table.lookup(keys)) }
            for got in reads {
                let wrong = keys.indices.filter { i in !bitIdentical(Array(got[(i * d)..<((i + 1) * d)]), Array(want[(i * d)..<((i + 1) * d)])) }
                #expect(wrong.isEmpty, "\(context): table \(spec.name): \(wrong.count) rows differ, first key \(wrong.first.map { keys[$0] } ?? 0)",
                        sourceLocation: sourceLocation)
            }
            #expect(table.checkpointRowCount == reference.rows.count, "\(context): table \(spec.name): row count",
                    sourceLocation: sourceLocation)
        }
        let table = try store.table(CrashScenario.tables[0].name)
        let reference = replay.references[0]
        var scanned: [UInt64] = []
        var differing = 0
        try table.scanCheckpoint { batch in
            for i in 0..<batch.count {
                let row = reference.row(batch.keys[i])
                let state = Array(batch.state[(i * batch.stateCount)..<((i + 1) * batch.stateCount)])
                if !bitIdentical(Array(batch.values(at: i)), row.values) || !bitIdentical(state, row.state)
                    || batch.updateCounts[i] != row.updateCount {
                    differing += 1
                }
            }
            scanned += batch.keys
        }
        #expect(scanned == reference.rows.keys.sorted(), "\(context): the scan's keys", sourceLocation: sourceLocation)
        #expect(differing == 0, "\(context): \(differing) scanned rows differ", sourceLocation: sourceLocation)
    }

    /// What a plain LMDB snapshot of the store holds now, through the store's LMDB wrapper:
    /// the generation `meta/pending` names, and the undo journal's entries (values that a
    /// checkpoint under way overwrote).
    static func rawSnapshot(_ path: String) throws -> (pending: UInt64?, journaled: Int) {
        let environment = try LMDBEnvironment(readingAt: path + "/rows.mdb", mapSize: 1 << 20, maxDatabases: 64, maxReaders: 8)
        defer { environment.close() }
        let pool = try LMDBReaderPool(pinningSnapshotOf: environment)
        defer { pool.close() }
        let txn = try pool.acquire()
        let meta = try #require(try txn.openDatabase("meta", integerKeys: false))
        let marker = try txn.get(meta, name: CheckpointJournal.pendingName)
        let pending = marker.map { m in m.prefix(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) } }
        let journaled = try txn.openDatabase(CheckpointJournal.databaseName, integerKeys: true).map { try txn.statistics($0).entries } ?? 0
        return (pending, journaled)
    }

    /// Options for readers: a hot tier of a few rows, so reads go through LMDB.
    static func readerOptions() -> Store.Options {
        .small(TierBudget(hotBytes: 4096, warmBytes: 1 << 20))
    }

    /// Every call that writes, refused with `.openedForReading` naming the writer.
    static func expectWritesRefused(_ store: Store, writer: String?, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let table = try store.table(CrashScenario.tables[0].name)
        let g = [Float](repeating: 0.5, count: CrashScenario.dimension)
        let attempts: [(String, () throws(StoreError) -> Void)] = [
            ("applyGradients", { () throws(StoreError) in try table.applyGradients([1], g) }),
            ("assign", { () throws(StoreError) in
                try [UInt64(1)].withUnsafeBufferPointer { (k) throws(StoreError) in
                    try g.withUnsafeBufferPointer { (v) throws(StoreError) in try table.assign(k, values: v) }
                }
            }),
            ("remove", { () throws(StoreError) in try table.remove([1]) }),
            ("createTable", { () throws(StoreError) in _ = try store.createTable("new", TableSpec(dimension: 4)) }),
            ("checkpoint", { () throws(StoreError) in _ = try store.checkpoint() }),
            ("beginCheckpoint", { () throws(StoreError) in _ = try store.beginCheckpoint() }),
        ]
        for (name, attempt) in attempts {
            let error = FaultKit.storeError(attempt)
            guard case .openedForReading(let path, let named, _) = error else {
                Issue.record("\(name) on a reader: expected .openedForReading, got \(String(describing: error))", sourceLocation: sourceLocation)
                continue
            }
            #expect(path == store.path && named == writer, "\(name): \(error!)", sourceLocation: sourceLocation)
            #expect(error!.description.contains("nothing was changed"), sourceLocation: sourceLocation)
        }
    }
}

@Suite struct ReadWhileWritingTests {
    /// The writer is held part way through checkpoints 2 and 3 (after their first
    /// transaction that writes rows): a reader open from before stays at checkpoint 1
    /// throughout, even as 2 completes; a reader opened mid-checkpoint refuses at once when
    /// it may not wait, and otherwise waits and reads checkpoint 3 only once it is complete.
    @Test func readersNeverSeeAHalfWrittenCheckpoint() throws {
        let directory = FaultKit.directory("strata-read-held")
        defer { FaultKit.remove(directory) }
        let path = directory + "/store", signals = directory + "/signals"
        try #require(mkdir(signals, 0o755) == 0)
        func signal(_ name: String) { _ = FileManager.default.createFile(atPath: signals + "/" + name, contents: nil) }
        let writer = try ScenarioWriter(["held-checkpoint", "--store", path, "--signals", signals, "--checkpoints", "3",
                                         "--seed", "\(ReaderChecks.seed)"])
        let named = Store.Writer(pid: writer.child.pid, command: "strata-fault-driver held-checkpoint")
        var replay = ScenarioReplay(seed: ReaderChecks.seed)

        let first = try writer.operations(of: 1)
        let early = try Store(readerAt: path, options: ReaderChecks.readerOptions())
        #expect(early.access == .reader(writer: named))
        #expect(early.lastCheckpoint.generation == 1 && CrashScenario.operations(in: early.lastCheckpoint) == first)
        try replay.advance(to: first)
        let atFirst = replay
        try ReaderChecks.expectHolds(early, atFirst, "checkpoint 1")
        try ReaderChecks.expectWritesRefused(early, writer: named.description)

        signal("next")
        try #require(writer.waitFor { $0.holding == 2 }, "the writer did not reach checkpoint 2: \(writer.child.lines.suffix(5))")
        try ReaderChecks.expectHolds(early, atFirst, "checkpoint 1, while 2 is half written")
        signal("go.2")
        _ = try writer.operations(of: 2)
        try #require(writer.waitFor { $0.holding == 3 }, "the writer did not reach checkpoint 3: \(writer.child.lines.suffix(5))")
        // The writer completed checkpoint 2 while this reader was open; it still reads 1.
        try ReaderChecks.expectHolds(early, atFirst, "checkpoint 1, after 2 completed")
        #expect(early.lastCheckpoint.generation == 1)
        try early.close()

        // What any snapshot taken now holds: checkpoint 3 under way, rows it overwrote journaled.
        let now = try ReaderChecks.rawSnapshot(path)
        #expect(now.pending == 3 && now.journaled > 0, "LMDB holds no half-written checkpoint: \(now)")

        // Checkpoint 3 is half written: no waiting allowed, a clear refusal.
        var impatient = ReaderChecks.readerOptions()
        impatient.readerWaitLimit = .zero
        let refused = FaultKit.storeError { try Store(readerAt: path, options: impatient) }
        #expect(refused == .checkpointInProgress(path: path, generation: 3, writer: named.description))
        #expect(refused?.description.contains("checkpoint 3 is still being written by \(named)") == true, "\(String(describing: refused))")
        let tool = try ToolsTests.run(["info", path, "--wait", "0"])
        #expect(tool.status == 1 && tool.lines.contains { $0.hasPrefix("Error:") && $0.contains("checkpoint 3 is still being written") },
                "\(tool.lines)")

        // Waiting: the writer is let go only once the reader has found checkpoint 3 pending.
        var patient = ReaderChecks.readerOptions()
        let go = signals + "/go.3"
        patient.beforeReaderSnapshot = { attempt in
            if attempt == 1 { _ = FileManager.default.createFile(atPath: go, contents: nil) }
        }
        let late = try Store(readerAt: path, options: patient)
        #expect(FileManager.default.fileExists(atPath: go), "the reader found no checkpoint being written")
        #expect(late.lastCheckpoint.generation == 3, "read checkpoint \(late.lastCheckpoint.generation)")
        #expect(late.openReport.contains { $0.hasPrefix("waited") && $0.contains("checkpoint 3") }, "\(late.openReport)")
        let third = try writer.operations(of: 3)
        #expect(CrashScenario.operations(in: late.lastCheckpoint) == third)
        try replay.advance(to: third)
        try ReaderChecks.expectHolds(late, replay, "checkpoint 3, waited for")

        signal("close")
        #expect(writer.waitFor { $0.child.lines.contains("closed") }, "\(writer.child.lines.suffix(5))")
        #expect(try writer.child.wait() == 0 && writer.errors.isEmpty, "\(writer.child.lines.suffix(5))")
        // The writer is gone; the reader reads on, unchanged.
        try ReaderChecks.expectHolds(late, replay, "checkpoint 3, its writer closed")
        try late.close()
        let closed = try Store(readerAt: path, options: ReaderChecks.readerOptions())
        #expect(closed.access == .reader(writer: nil) && closed.lastCheckpoint.generation == 3)
        try ReaderChecks.expectWritesRefused(closed, writer: nil)
        try closed.close()
    }

    /// A writer that dies part way through a checkpoint leaves it half written: a reader
    /// refuses it (`.checkpointInterrupted`) rather than reading it or waiting for ever, and
    /// an open for writing rolls it back to the checkpoint before.
    @Test func aCheckpointLeftHalfWrittenIsNotRead() throws {
        let directory = FaultKit.directory("strata-read-dead")
        defer { FaultKit.remove(directory) }
        let path = directory + "/store", signals = directory + "/signals"
        try #require(mkdir(signals, 0o755) == 0)
        let writer = try ScenarioWriter(["held-checkpoint", "--store", path, "--signals", signals, "--checkpoints", "2",
                                         "--die-at", "2", "--seed", "\(ReaderChecks.seed)"])
        let first = try writer.operations(of: 1)
        _ = FileManager.default.createFile(atPath: signals + "/next", contents: nil)
        writer.waitFor { _ in false }
        #expect(try writer.child.wait() == 0 && writer.child.lines.contains("holding 2"), "\(writer.child.lines.suffix(5))")

        let error = FaultKit.storeError { try Store(readerAt: path, options: ReaderChecks.readerOptions()) }
        #expect(error == .checkpointInterrupted(path: path), "\(String(describing: error))")
        let repaired = try Store(path: path, options: CrashScenario.options())
        #expect(repaired.openReport.contains { $0.contains("rolled back") }, "\(repaired.openReport)")
        #expect(repaired.lastCheckpoint.generation == 1)
        try repaired.close()
        var replay = ScenarioReplay(seed: ReaderChecks.seed)
        try replay.advance(to: first)
        let reader = try Store(readerAt: path, options: ReaderChecks.readerOptions())
        try ReaderChecks.expectHolds(reader, replay, "checkpoint 1 after the roll-back")
        try reader.close()
    }

    /// A writer checkpoints continuously in the background (`beginCheckpoint`, the next
    /// begun as soon as the last is durable) while readers open one after another: each reads
    /// the checkpoint last completed when it opened, or a later one, never an earlier one,
    /// and exactly what that checkpoint holds. One reader stays open while the writer
    /// completes several more checkpoints, and still reads its own.
    @Test func readersBesideAWriterCheckpointingContinuously() throws {
        let directory = FaultKit.directory("strata-read-continuous")
        defer { FaultKit.remove(directory) }
        let path = directory + "/store"
        let writer = try ScenarioWriter.checkpointingContinuously(at: path)
        defer { writer.child.kill() }
        let named = Store.Writer(pid: writer.child.pid, command: "strata-fault-driver crash-writer")
        var replay = ScenarioReplay(seed: ReaderChecks.seed)
        try #require(writer.waitFor { $0.lastDone >= 2 }, "the writer made no checkpoint: \(writer.child.lines.suffix(5))")

        var attempts = 0
        for round in 0..<8 {
            writer.catchUp()
            let completed = writer.lastDone
            let snapshots = Counter()
            var options = ReaderChecks.readerOptions()
            options.beforeReaderSnapshot = { _ in snapshots.add() }
            let reader = try Store(readerAt: path, options: options)
            attempts += snapshots.value
            let generation = reader.lastCheckpoint.generation
            #expect(generation >= completed, "round \(round): read checkpoint \(generation), but \(completed) was complete")
            #expect(reader.access == .reader(writer: named))
            let operations = try writer.operations(of: generation)
            #expect(CrashScenario.operations(in: reader.lastCheckpoint) == operations)
            try replay.advance(to: operations)
            try ReaderChecks.expectHolds(reader, replay, "round \(round), checkpoint \(generation)")
            if round == 0 {
                // Held open while the writer completes three more checkpoints.
                try #require(writer.waitFor { $0.lastDone >= generation + 3 }, "the writer stopped: \(writer.child.lines.suffix(5))")
                try ReaderChecks.expectHolds(reader, replay, "checkpoint \(generation), three checkpoints later")
                try ReaderChecks.expectWritesRefused(reader, writer: named.description)
            }
            try reader.close()
        }
        writer.catchUp()
        #expect(writer.errors.isEmpty, "\(writer.errors)")
        print("read while writing: 8 readers took \(attempts) snapshots to find a completed checkpoint; the writer completed \(writer.lastDone)")
    }

    /// LMDB allows one environment per file in a process: a reader beside this process's
    /// own writer (or a writer beside its reader) is refused, naming this process.
    @Test func oneOpenPerProcess() throws {
        let directory = FaultKit.directory("strata-read-same")
        defer { FaultKit.remove(directory) }
        let path = directory + "/store"
        let (store, _) = try CrashScenario.open(path)
        try store.checkpoint()
        let error = FaultKit.storeError { try Store(readerAt: path, options: ReaderChecks.readerOptions()) }
        guard case .locked(_, let holder) = error else {
            Issue.record("expected .locked, got \(String(describing: error))")
            return
        }
        #expect(holder.contains("this process"))
        try store.close()
        let reader = try Store(readerAt: path, options: ReaderChecks.readerOptions())
        let second = FaultKit.storeError { try Store(path: path, options: CrashScenario.options()) }
        #expect({ if case .locked = second { true } else { false } }(), "\(String(describing: second))")
        try reader.close()
        #expect(FaultKit.storeError { try Store(readerAt: directory + "/none") } == .noStore(path: directory + "/none"))
    }
}

/// A count shared with a `@Sendable` hook.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func add() { lock.withLock { count += 1 } }
    var value: Int { lock.withLock { count } }
}

/// The command-line tools against a store another process writes and checkpoints without
/// pause: those that read report the writer and read its last completed checkpoint, value
/// for value; those that write are refused, naming it.
@Suite struct ReadWhileWritingToolsTests {
    static func json(_ line: String) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
    }

    /// The generation a tool's "note: ... read-only at its last completed checkpoint, G" names.
    static func notedGeneration(_ lines: [String]) -> UInt64? {
        guard let note = lines.first(where: { $0.hasPrefix("note:") && $0.contains("read-only at its last completed checkpoint, ") }) else {
            return nil
        }
        let tail = note[note.range(of: "checkpoint, ")!.upperBound...]
        return UInt64(tail.prefix { $0.isNumber })
    }

    /// The data of a `.npy` file (format 1.0), past its header.
    static func npyData(_ path: String) throws -> Data {
        let data = try #require(FileManager.default.contents(atPath: path), "\(path) missing")
        try #require(data.count >= 10 && data.prefix(6) == Data([0x93]) + Data("NUMPY".utf8))
        let header = Int(data[8]) | Int(data[9]) << 8
        return data.dropFirst(10 + header)
    }

    @Test func toolsReadAStoreAnotherProcessWrites() throws {
        let directory = FaultKit.directory("strata-read-tools")
        defer { FaultKit.remove(directory) }
        let path = directory + "/store"
        let writer = try ScenarioWriter.checkpointingContinuously(at: path)
        defer { writer.child.kill() }
        let named = "process \(writer.child.pid) (strata-fault-driver crash-writer)"
        var replay = ScenarioReplay(seed: ReaderChecks.seed)
        try #require(writer.waitFor { $0.lastDone >= 2 }, "the writer made no checkpoint: \(writer.child.lines.suffix(5))")
        let table = CrashScenario.tables[0].name
        let adam = 0

        /// Runs a tool after taking what the writer said; checks the checkpoint it read is
        /// at least the last one completed before, and replays the references to it.
        func read(_ arguments: [String], generation: ([String]) -> UInt64?) throws -> [String] {
            writer.catchUp()
            let completed = writer.lastDone
            let run = try ToolsTests.run(arguments)
            #expect(run.status == 0, "\(arguments.first!): \(run.lines.suffix(5))")
            let g = try #require(generation(run.lines), "\(arguments.first!) named no checkpoint: \(run.lines.suffix(5))")
            #expect(g >= completed, "\(arguments.first!) read checkpoint \(g), but \(completed) was complete")
            try replay.advance(to: try writer.operations(of: g))
            return run.lines
        }

        // info: the writer, the checkpoint, each table's rows.
        let info = try read(["info", path, "--json"]) { lines in
            (lines.last { $0.hasPrefix("{") }.flatMap(Self.json)?["checkpoint"] as? [String: Any])?["generation"] as? UInt64
        }
        let infoObject = try #require(info.last { $0.hasPrefix("{") }.flatMap(Self.json))
        #expect(infoObject["read_only"] as? Bool == true)
        let writerObject = infoObject["writer"] as? [String: Any]
        #expect(writerObject?["pid"] as? Int == Int(writer.child.pid) && writerObject?["command"] as? String == "strata-fault-driver crash-writer",
                "\(infoObject)")
        let rows = (infoObject["tables"] as? [[String: Any]])?.map { ($0["name"] as? String ?? "", $0["rows"] as? Int ?? -1) }
        #expect(rows?.map(\.0) == CrashScenario.tables.map(\.name).sorted())
        for (name, count) in rows ?? [] {
            let t = try #require(CrashScenario.tables.firstIndex { $0.name == name })
            #expect(count == replay.references[t].rows.count, "info: table \(name)")
        }
        let text = try read(["info", path]) { lines in
            lines.first { $0.hasPrefix("open for writing in \(named); read-only at its last completed checkpoint, ") }
                .flatMap { UInt64($0.split(separator: " ").last!) }
        }
        #expect(text.contains { $0.hasPrefix("adam") }, "\(text)")

        // get: values, state and update counts of written and unwritten keys.
        let keys: [UInt64] = [0, 1, 2, 7, 30, 2999, UInt64.max]
        let got = try read(["get", path, table, "--json"] + keys.map(String.init), generation: Self.notedGeneration)
        let objects = got.filter { $0.hasPrefix("{") }.compactMap(Self.json)
        try #require(objects.count == keys.count, "\(got.suffix(5))")
        for (key, object) in zip(keys, objects) {
            let want = replay.references[adam].row(key)
            #expect((object["values"] as? [Double])?.map(Float.init) == want.values, "get \(key)")
            #expect((object["optimizer_state"] as? [Double])?.map(Float.init) == want.state, "get \(key)")
            #expect(object["update_count"] as? UInt64 == want.updateCount, "get \(key)")
            #expect(object["written"] as? Bool == (replay.references[adam].rows[key] != nil), "get \(key)")
        }

        // inspect: the rows it counted.
        let inspect = try read(["inspect", path, table, "--json"], generation: Self.notedGeneration)
        let inspected = try #require(inspect.last { $0.hasPrefix("{") }.flatMap(Self.json))
        #expect(inspected["rows"] as? Int == replay.references[adam].rows.count)
        #expect((inspected["checkpoint"] as? [String: Any])?["generation"] as? UInt64 == Self.notedGeneration(inspect))

        // export: every row, in key order, bit for bit.
        let out = directory + "/export"
        let export = try read(["export", path, table, "--format", "npy", "--out", out, "--json"]) { lines in
            lines.last { $0.hasPrefix("{") }.flatMap(Self.json)?["generation"] as? UInt64
        }
        #expect(Self.notedGeneration(export) != nil)
        let reference = replay.references[adam]
        let exportedKeys = try Self.npyData(out + "/keys.npy").withUnsafeBytes { Array($0.bindMemory(to: UInt64.self)) }
        let exportedValues = try Self.npyData(out + "/values.npy").withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        #expect(exportedKeys == reference.rows.keys.sorted())
        #expect(bitIdentical(exportedValues, exportedKeys.flatMap { reference.row($0).values }), "export: values differ")

        // neighbors: the same search over the reference's rows.
        let query: UInt64 = 3
        let near = try read(["neighbors", path, table, "\(query)", "-k", "5", "--json"], generation: Self.notedGeneration)
        let found = try #require(near.last { $0.hasPrefix("{") }.flatMap(Self.json))
        let q = replay.references[adam].row(query).values.map(Double.init)
        let qNorm = q.reduce(0) { $0 + $1 * $1 }.squareRoot()
        var scored: [(key: UInt64, score: Double)] = []
        for (key, row) in replay.references[adam].rows where key != query {
            var dot = 0.0, n2 = 0.0
            for j in 0..<q.count {
                let x = Double(row.values[j])
                dot += x * q[j]
                n2 += x * x
            }
            scored.append((key, n2 == 0 || qNorm == 0 ? 0 : dot / (n2.squareRoot() * qNorm)))
        }
        scored.sort { $0.score > $1.score || ($0.score == $1.score && $0.key < $1.key) }
        let best = Array(scored.prefix(5))
        let listed = (found["neighbors"] as? [[String: Any]]) ?? []
        let listedKeys = listed.map { $0["key"] as? UInt64 ?? 0 }
        let listedScores = listed.map { $0["score"] as? Double ?? .nan }
        // Scores pass through JSON, which may round the last bit.
        #expect(listedKeys == best.map(\.key) && zip(listedScores, best).allSatisfy { abs($0 - $1.score) <= 1e-12 }, "\(found) vs \(best)")
        #expect(found["rows_scanned"] as? Int == replay.references[adam].rows.count)

        // verify: every record of the checkpoint checked.
        let verify = try read(["verify", path], generation: Self.notedGeneration)
        #expect(verify.contains("ok: 3 tables, \(replay.totalRows) rows, every record checked"), "\(verify.suffix(3))")

        // Those that write: refused, naming the writer; nothing changed.
        for (command, arguments) in [("import", ["import", path, table, "--from", out]),
                                     ("evict", ["evict", path, table, "--min-updates", "2"]),
                                     ("compact", ["compact", path]),
                                     ("train", ["train", "--data", "synthetic:criteo", "--synthetic-keys", "100", "--steps", "2",
                                                "--batch-size", "4", "--eval-samples", "0", "--embedding-dim", "4",
                                                "--bottom-mlp", "8", "--top-mlp", "8", "--store", path, "--resume"])] {
            let run = try ToolsTests.run(arguments)
            #expect(run.status == 1, "\(command): \(run.lines.suffix(3))")
            #expect(run.lines.contains { $0.hasPrefix("Error:") && $0.contains("in use by \(named)") && $0.contains("\(command) writes the store") },
                    "\(command): \(run.lines.suffix(3))")
        }
        writer.catchUp()
        #expect(writer.errors.isEmpty, "\(writer.errors)")
        #expect(writer.child.lines.last != "finished")
    }
}
