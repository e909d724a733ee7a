// A randomized differential test: one long deterministic stream of lookups, peeks, updates
// (every optimizer, every storage type), removals, checkpoints and reopenings (a clean close,
// and a store dropped without closing) drives a store of several tables, and after every
// operation the store must read exactly (bit for bit) what the in-memory `ReferenceTable`s
// read. The same stream runs under several tier budgets, from everything hot to a few rows of
// hot and warm so that most rows live in LMDB or the spill file; every run must also read
// exactly what the others read.
//
// "In flight" runs write each checkpoint in the background (`beginCheckpoint`) while the
// stream goes on: the writer moves one transaction ahead each time the stream has run two
// more operations, so that rows change, move, spill and go before and after it writes them;
// one checkpoint in five is made to fail part way. Each finished checkpoint must hold in LMDB
// exactly the reference as it was when the checkpoint began, and the stream must read exactly
// what the other runs read.
//
// STRATA_DIFFERENTIAL_SEED, STRATA_DIFFERENTIAL_OPERATIONS and STRATA_DIFFERENTIAL_KEYS change
// the stream, for longer hunts (the coverage expectations assume the defaults).
import Testing
@_spi(Testing) import StrataStore
import StrataTestSupport
import Synchronization
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// Tier budgets for every table, in rows of that table (so tables of different record sizes
/// get the same number of rows).
struct DifferentialBudget: Sendable, CustomTestStringConvertible {
    var name: String
    var hotRows: Int
    var warmRows: Int
    var initialMapBytes = 1 << 30
    var mapResidentBytes = 64 << 20
    var transactionPages: Int? = nil
    /// Recount the touched table's structures after every this many operations (every table
    /// is also recounted at every checkpoint and reopening). Recounting is O(rows in memory ×
    /// changed rows), so big budgets recount less often.
    var invariantsEvery = 1
    /// Checkpoints are written in the background while the stream goes on.
    var inFlight = false

    var testDescription: String { name }

    /// Everything hot: twice the key space per table, so no shard ever fills.
    var everythingHot: Bool { hotRows >= 2 * Differential.keys.count }

    func options() -> Store.Options {
        var o = Store.Options()
        // A table missing from `tableBudgets` would get a hot budget of no row and fail to open.
        o.budget = TierBudget(hotBytes: 0, warmBytes: 0)
        for table in Differential.tables {
            let r = Differential.recordBytes(table.spec)
            o.tableBudgets[table.name] = TierBudget(hotBytes: hotRows * r, warmBytes: warmRows * r)
        }
        o.initialMapBytes = initialMapBytes
        o.mapResidentBytes = mapResidentBytes
        o.transactionPagesForTesting = transactionPages
        return o
    }

    /// This budget with checkpoints in flight, and LMDB transactions as small as they get.
    func inFlightVariant() -> DifferentialBudget {
        var b = self
        b.name += "-in-flight"
        b.inFlight = true
        b.transactionPages = 16
        return b
    }

    static let all: [DifferentialBudget] = [
        // 16 shards, nothing ever leaves hot (rows come from LMDB only after a reopening).
        DifferentialBudget(name: "everything-hot", hotRows: 2 * Differential.keys.count + 64, warmRows: 64,
                           invariantsEvery: 16),
        // One shard of 3 hot and 6 warm rows: nearly every access goes to LMDB or the spill
        // file; LMDB's map starts at 1 MiB and must grow, and is trimmed from memory often.
        DifferentialBudget(name: "tiny-hot-and-warm", hotRows: 3, warmRows: 6,
                           initialMapBytes: 1 << 20, mapResidentBytes: 256 << 10),
        // No warm tier: rows go straight from hot to the spill file or away.
        DifferentialBudget(name: "tiny-hot-no-warm", hotRows: 2, warmRows: 0, initialMapBytes: 1 << 20),
        // 2 shards; hot and warm together hold about half the key space.
        DifferentialBudget(name: "in-between", hotRows: 256, warmRows: 384, invariantsEvery: 4),
        // 4 shards with 16 warm rows each; the map must grow.
        DifferentialBudget(name: "sharded-small-warm", hotRows: 512, warmRows: 64,
                           initialMapBytes: 1 << 20, invariantsEvery: 8),
        // 4 shards, no warm tier.
        DifferentialBudget(name: "sharded-no-warm", hotRows: 520, warmRows: 0, invariantsEvery: 8),
    ]
    static let inFlight: [DifferentialBudget] = all.filter {
        ["tiny-hot-and-warm", "tiny-hot-no-warm", "in-between"].contains($0.name)
    }.map { $0.inFlightVariant() }
}

enum Differential {
    static let seed: UInt64 = setting("STRATA_DIFFERENTIAL_SEED").flatMap(UInt64.init) ?? 2026_0611
    static let operations = setting("STRATA_DIFFERENTIAL_OPERATIONS").flatMap(Int.init) ?? 4000
    static let keySpace: UInt64 = setting("STRATA_DIFFERENTIAL_KEYS").flatMap(UInt64.init) ?? 1200

    static func setting(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }

    /// Every optimizer, every storage type, dimensions 1 to 16, every initializer.
    static let tables: [(name: String, spec: TableSpec)] = [
        ("sgd-f32-d1", TableSpec(dimension: 1, storage: .float32, initializer: .init(.zeros),
                                 optimizer: .sgd(learningRate: 0.05))),
        ("sgd-bf16-d16", TableSpec(dimension: 16, storage: .bfloat16,
                                   initializer: .init(.normal(mean: 0, standardDeviation: 0.2), seed: 15),
                                   optimizer: .sgd())),
        ("adagrad-f16-d3", TableSpec(dimension: 3, storage: .float16, initializer: .init(.constant(0.25)),
                                     optimizer: .adagrad(learningRate: 0.1, epsilon: 1e-6, initialAccumulator: 0.1))),
        ("adagrad-f32-d8", TableSpec(dimension: 8, storage: .float32,
                                     initializer: .init(.uniform(low: -1, high: 1), seed: 1),
                                     optimizer: .adagrad())),
        ("rowwise-bf16-d8", TableSpec(dimension: 8, storage: .bfloat16,
                                      initializer: .init(.uniform(low: -0.5, high: 0.5), seed: 11),
                                      optimizer: .rowwiseAdagrad(learningRate: 0.05))),
        ("adam-f32-d16", TableSpec(dimension: 16, storage: .float32,
                                   initializer: .init(.normal(mean: 0, standardDeviation: 0.1), seed: 12),
                                   optimizer: .adam(learningRate: 0.01))),
        ("adam-f16-d3", TableSpec(dimension: 3, storage: .float16,
                                  initializer: .init(.normal(mean: 0.5, standardDeviation: 1), seed: 14),
                                  optimizer: .adam())),
        ("ftrl-bf16-d8", TableSpec(dimension: 8, storage: .bfloat16,
                                   initializer: .init(.uniform(low: -0.05, high: 0.05), seed: 13),
                                   optimizer: .ftrl(alpha: 0.1, beta: 1, l1: 0.001, l2: 0.01))),
        ("ftrl-f32-d1", TableSpec(dimension: 1, storage: .float32, initializer: .init(.constant(-1)),
                                  optimizer: .ftrl())),
    ]

    /// Every key the workload can touch.
    static let keys: [UInt64] = Array(0..<keySpace) + (0..<4).map { UInt64.max - $0 }
    /// Keys the workload never touches: they must read as their initializer everywhere.
    static let unwritten: [UInt64] = [keySpace, keySpace + 1, 1 << 32, UInt64.max / 2, UInt64.max - 4]

    /// The bytes of a table's in-memory record, as `RowLayout` lays it out (checked against
    /// the table's statistics).
    static func recordBytes(_ spec: TableSpec) -> Int {
        let state = switch spec.optimizer {
        case .sgd: 0
        case .adagrad: spec.dimension
        case .rowwiseAdagrad: 1
        case .adam, .ftrl: 2 * spec.dimension
        }
        return (32 + 4 * (spec.dimension + state) + 7) & ~7
    }

    /// One workload per table (each of its own dimension); operation `i` comes from table
    /// `i % tables.count`'s workload. Checkpoints and reopenings act on the whole store.
    static func workloads() -> [Workload] {
        tables.enumerated().map { i, t in
            Workload(seed: seed &+ UInt64(i) &* 0x1_0000_0001, dimension: t.spec.dimension, keySpace: keySpace,
                     checkpointEvery: 40, allowReopen: true)
        }
    }

    /// What a finished run read, for comparing runs under different budgets.
    struct Outcome: Sendable {
        var digest: UInt64
        var reads: Int
        /// Bit patterns of every table's rows of `keys + unwritten` at the end.
        var finalRows: [[UInt32]]
    }

    /// Outcomes of the runs finished so far, by budget name.
    static let outcomes = Mutex<[String: Outcome]>([:])

    struct Divergence: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    /// FNV-1a over 64-bit words: a fingerprint of everything a run read, in order.
    struct ReadDigest {
        private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325
        private(set) var reads = 0

        mutating func add(_ word: UInt64) {
            value = (value ^ word) &* 0x0000_0100_0000_01B3
        }

        mutating func add(_ floats: [Float]) {
            reads += 1
            add(UInt64(floats.count))
            for f in floats { add(UInt64(f.bitPattern)) }
        }
    }

    /// The size of a file in bytes, or -1.
    static func fileBytes(_ path: String) -> Int {
        let fd = Glibc.open(path, O_RDONLY)
        guard fd >= 0 else { return -1 }
        defer { Glibc.close(fd) }
        return Int(lseek(fd, 0, SEEK_END))
    }

    /// One run of the stream under one budget.
    final class Run {
        let budget: DifferentialBudget
        let directory: String
        let options: Store.Options
        var store: Store?
        var tables: [Table] = []

        var references: [ReferenceTable]
        /// The generation of each written row's last change, as `RowSnapshot.changeGeneration`
        /// must report it: one more than the checkpoints completed when it was changed.
        var changeGenerations: [[UInt64: UInt64]]
        var generation: UInt64 = 0
        /// The state as of the last checkpoint: what a reopened store must hold.
        var checkpoint: (references: [ReferenceTable], changeGenerations: [[UInt64: UInt64]],
                         generation: UInt64, payload: [UInt8])

        /// In-flight runs: the checkpoint being written, what it must hold, and whether it is
        /// made to fail.
        var pending: (checkpoint: PendingCheckpoint, holds: (references: [ReferenceTable], changeGenerations: [[UInt64: UInt64]],
                                                             generation: UInt64, payload: [UInt8]), fails: Bool)?
        let pacing = CheckpointPacing()
        var begun = 0, failed = 0
        /// The generation rows changed now are stamped with.
        var stamp: UInt64 { generation + (pending == nil ? 1 : 2) }

        var digest = ReadDigest()
        var reopenings = 0
        /// Opens that found the store still locked by this process (see `open`).
        /// Traffic summed over every opening of the store (statistics restart at each open).
        var traffic = TableStatistics.Traffic()
        var sampler = SplitMix64(seed: 99)
        /// The operation being checked, for failure messages.
        var context = "start"

        init(_ budget: DifferentialBudget) throws {
            self.budget = budget
            directory = temporaryDirectory("strata-differential-\(budget.name)")
            var options = budget.options()
            if budget.inFlight {
                let pacing = self.pacing
                options.afterCheckpointTransactionForTesting = { (_) throws(StoreError) in try pacing.writerStep() }
            }
            self.options = options
            references = Differential.tables.map { ReferenceTable(spec: $0.spec) }
            changeGenerations = Array(repeating: [:], count: Differential.tables.count)
            checkpoint = (references, changeGenerations, 0, [])
            try open()
            for (table, t) in zip(tables, Differential.tables) {
                let s = try table.statistics()
                try #require(s.recordBytes == Differential.recordBytes(t.spec), "record size of \(t.name)")
                if budget.everythingHot {
                    try #require(s.hotCapacityRows >= Differential.keys.count + Differential.unwritten.count)
                } else {
                    try #require(s.hotCapacityRows <= budget.hotRows && s.hotCapacityRows >= 1)
                }
            }
        }

        deinit { removeDirectory(directory) }

        /// Opens the store and (re)creates its tables: tables created after the last
        /// checkpoint are not in it.
        func open() throws {
            precondition(store == nil && tables.isEmpty)
            let opened: Store
            do { opened = try Store(path: directory, options: options) } catch {
                throw Divergence("\(context): opening the store failed: \(error)")
            }
            for line in opened.openReport {
                // The only repair a run may need: dropping tables that no checkpoint held.
                try #require(line.contains("not in the last checkpoint"), "\(context): open reported '\(line)'")
            }
            tables = try Differential.tables.map { try opened.createTable($0.name, $0.spec) }
            store = opened
        }

        func collectTraffic() throws {
            for table in tables { traffic += try table.statistics().traffic }
        }

        /// Closes cleanly (saving the warm tier's index) or drops the store without closing,
        /// then opens it again. Either way the store must hold exactly the last checkpoint.
        func reopen(clean: Bool) throws {
            try finishCheckpoint()
            try collectTraffic()
            if clean { try store!.close() }
            tables = []
            // The old instance must be gone (its lock released) before the new one opens.
            store = nil
            try open()
            references = checkpoint.references
            changeGenerations = checkpoint.changeGenerations
            generation = checkpoint.generation
            let last = store!.lastCheckpoint
            try #require(last.generation == checkpoint.generation, "\(context): reopened at generation \(last.generation)")
            try #require(last.payload == checkpoint.payload, "\(context): reopened with another checkpoint's payload")
            checkInvariants(all: true)
            try verifyEverything(moving: false)
        }

        func takeCheckpoint(payload: [UInt8]) throws {
            if budget.inFlight { return try beginCheckpoint(payload: payload) }
            let info = try store!.checkpoint(payload: payload)
            generation += 1
            try #require(info.generation == generation, "\(context): checkpoint generation \(info.generation), expected \(generation)")
            checkpoint = (references, changeGenerations, generation, payload)
            checkInvariants(all: true)
            for (i, table) in tables.enumerated() {
                let s = try table.statistics()
                try #require(s.rows.total == references[i].rows.count,
                             "\(context): table \(table.name) counts \(s.rows.total) rows after a checkpoint, the reference \(references[i].rows.count)")
                try #require(s.rows.spill == 0 && s.bytes.spillFile == 0,
                             "\(context): table \(table.name) keeps \(s.rows.spill) spilled rows after a checkpoint")
                try #require(s.checkpoint.generation == generation)
            }
        }

        /// Starts writing a checkpoint in the background, after the one in flight ends.
        func beginCheckpoint(payload: [UInt8]) throws {
            try finishCheckpoint()
            begun += 1
            let fails = begun % 5 == 3
            pacing.start(failing: fails)
            let holds = (references, changeGenerations, generation + 1, payload)
            pending = (try store!.beginCheckpoint(payload: payload), holds, fails)
        }

        /// Waits for the checkpoint in flight, if any, and checks what LMDB holds: exactly the
        /// reference as it was when the checkpoint began (or, for one made to fail, the one before).
        func finishCheckpoint() throws {
            guard let (checkpoint, holds, fails) = pending else { return }
            pacing.mainWaits()
            let outcome = Result { try checkpoint.wait() }
            pending = nil
            switch outcome {
            case .success(let info):
                try #require(!fails, "\(context): a checkpoint made to fail succeeded")
                generation += 1
                try #require(info.generation == generation, "\(context): checkpoint generation \(info.generation), expected \(generation)")
                self.checkpoint = holds
            case .failure(let error):
                try #require(fails, "\(context): checkpoint \(generation + 1) failed: \(error)")
                failed += 1
            }
            checkInvariants(all: true)
            try verifyCheckpointOnDisk()
        }

        /// Compares every table's rows in LMDB, as a scan of the last checkpoint reads them, with
        /// the reference at that checkpoint: the same keys, and each row bit for bit.
        func verifyCheckpointOnDisk() throws {
            for (t, table) in tables.enumerated() {
                let want = checkpoint.references[t]
                var seen = 0
                try table.scanCheckpoint { rows in
                    for i in 0..<rows.count {
                        let key = rows.keys[i]
                        guard let row = want.rows[key] else {
                            throw Divergence("\(context): LMDB holds key \(key) of \(table.name), which checkpoint \(checkpoint.generation) does not")
                        }
                        let state = Array(rows.state[(i * rows.stateCount)..<((i + 1) * rows.stateCount)])
                        guard bitIdentical(Array(rows.values(at: i)), row.values), bitIdentical(state, row.state),
                              rows.updateCounts[i] == row.updateCount,
                              rows.changeGenerations[i] == checkpoint.changeGenerations[t][key] ?? 0 else {
                            throw Divergence("\(context): LMDB holds key \(key) of \(table.name) as \(Array(rows.values(at: i))) "
                                + "(count \(rows.updateCounts[i]), generation \(rows.changeGenerations[i])); checkpoint "
                                + "\(checkpoint.generation) has \(row.values) (count \(row.updateCount), generation "
                                + "\(checkpoint.changeGenerations[t][key] ?? 0))")
                        }
                        seen += 1
                    }
                }
                try #require(seen == want.rows.count, "\(context): LMDB holds \(seen) rows of \(table.name), checkpoint \(checkpoint.generation) \(want.rows.count)")
            }
        }

        /// Recounts every table's structures (`all`) or one table's (they trap on any
        /// disagreement). Debug builds only.
        func checkInvariants(all: Bool, table: Int? = nil) {
            if all {
                for t in tables { t.checkInvariants() }
            } else if let table {
                tables[table].checkInvariants()
            }
        }

        // MARK: Comparisons

        /// Compares rows read from table `t` with the reference, bit for bit.
        func compare(_ got: [Float], _ t: Int, _ keys: [UInt64], _ what: String) throws {
            digest.add(got)
            let want = references[t].values(keys)
            if bitIdentical(got, want) { return }
            let d = Differential.tables[t].spec.dimension
            guard got.count == want.count else {
                throw Divergence("\(context): \(what) of \(keys.count) keys returned \(got.count) floats, expected \(want.count)")
            }
            func row(_ a: [Float], _ i: Int) -> [Float] { Array(a[i * d ..< (i + 1) * d]) }
            let i = (0..<keys.count).first { !bitIdentical(row(got, $0), row(want, $0)) }!
            let written = references[t].rows[keys[i]]
            throw Divergence(
                "\(context): \(what) in table \(Differential.tables[t].name) read key \(keys[i]) (batch position \(i)) as "
                + "\(row(got, i)) (bits \(row(got, i).map(\.bitPattern))), the reference \(row(want, i)) "
                + "(bits \(row(want, i).map(\.bitPattern))); reference row "
                + (written.map { "written \($0.updateCount) times" } ?? "never written"))
        }

        /// Compares `Table.row` with the reference: values, optimizer state, update count,
        /// placement (initializer or not) and the generation of the last change.
        func compareSnapshot(_ t: Int, _ key: UInt64) throws {
            let snapshot = try tables[t].row(key)
            digest.add(snapshot.values)
            digest.add(snapshot.optimizerState)
            digest.add(snapshot.updateCount)
            let want = references[t].row(key)
            let written = references[t].rows[key] != nil
            let generation = changeGenerations[t][key] ?? 0
            let problems = [
                snapshot.key == key ? nil : "key \(snapshot.key)",
                bitIdentical(snapshot.values, want.values) ? nil : "values \(snapshot.values), expected \(want.values)",
                bitIdentical(snapshot.optimizerState, want.state)
                    ? nil : "optimizer state \(snapshot.optimizerState), expected \(want.state)",
                snapshot.updateCount == want.updateCount
                    ? nil : "update count \(snapshot.updateCount), expected \(want.updateCount)",
                (snapshot.placement == .initial) == !written
                    ? nil : "placement \(snapshot.placement) for a row \(written ? "written" : "never written")",
                snapshot.changeGeneration == generation
                    ? nil : "change generation \(snapshot.changeGeneration), expected \(generation)",
            ].compactMap { $0 }
            if !problems.isEmpty {
                throw Divergence("\(context): row(\(key)) of table \(Differential.tables[t].name): "
                                 + problems.joined(separator: "; "))
            }
        }

        /// Peeks (or looks up) every key of every table and compares; then the row counts.
        func verifyEverything(moving: Bool) throws {
            let keys = Differential.keys + Differential.unwritten
            for (t, table) in tables.enumerated() {
                let got = try moving ? table.lookup(keys) : table.peek(keys)
                try compare(got, t, keys, moving ? "lookup of every key" : "peek of every key")
                let s = try table.statistics()
                try #require(s.rows.total == references[t].rows.count,
                             "\(context): table \(table.name) counts \(s.rows.total) rows, the reference \(references[t].rows.count)")
            }
            checkInvariants(all: true)
        }

        // MARK: The run

        func run() throws -> Outcome {
            var workloads = Differential.workloads()
            let n = Differential.tables.count
            for index in 0..<Differential.operations {
                let t = index % n
                let op = workloads[t].next()
                let name = Differential.tables[t].name
                switch op {
                case .lookup(let keys):
                    context = "op \(index) (lookup of \(keys.count) keys in \(name), first \(keys[0]))"
                    try compare(try tables[t].lookup(keys), t, keys, "lookup")
                case .peek(let keys):
                    context = "op \(index) (peek of \(keys.count) keys in \(name), first \(keys[0]))"
                    try compare(try tables[t].peek(keys), t, keys, "peek")
                case .apply(let keys, let gradients, let rate):
                    context = "op \(index) (update of \(keys.count) keys in \(name), first \(keys[0]), "
                        + "learning rate \(rate.map { "\($0)" } ?? "default"))"
                    try tables[t].applyGradients(keys, gradients, learningRate: rate)
                    references[t].apply(keys, gradients, learningRate: rate)
                    for key in keys { changeGenerations[t][key] = stamp }
                    // Read back what was just written, through the path that moves nothing.
                    try compare(try tables[t].peek(keys), t, keys, "peek after update")
                case .remove(let keys):
                    context = "op \(index) (removal of \(keys.count) keys in \(name), first \(keys[0]))"
                    try tables[t].remove(keys)
                    references[t].remove(keys)
                    for key in keys { changeGenerations[t][key] = nil }
                case .checkpoint:
                    context = "op \(index) (checkpoint \(generation + 1))"
                    try takeCheckpoint(payload: withUnsafeBytes(of: UInt64(index)) { Array($0) })
                case .reopen:
                    let clean = reopenings % 2 == 0
                    reopenings += 1
                    context = "op \(index) (\(clean ? "close and reopen" : "drop without closing and reopen") "
                        + "at checkpoint \(checkpoint.generation))"
                    try reopen(clean: clean)
                }

                if index % budget.invariantsEvery == 0 { checkInvariants(all: false, table: t) }
                let s = try tables[t].statistics()
                try #require(s.rows.total == references[t].rows.count,
                             "\(context): table \(name) counts \(s.rows.total) rows, the reference \(references[t].rows.count)")

                // Full snapshots of a few rows: one anywhere in the key space, one never
                // written, one the operation named.
                var sampled = [Differential.keys[Int(sampler.next() % UInt64(Differential.keys.count))],
                               Differential.unwritten[Int(sampler.next() % UInt64(Differential.unwritten.count))]]
                switch op {
                case .lookup(let k), .peek(let k), .remove(let k), .apply(let k, _, _): sampled.append(k[k.count - 1])
                case .checkpoint, .reopen: break
                }
                for key in sampled { try compareSnapshot(t, key) }
                pacing.operationDone()
            }
            try finishCheckpoint()

            // Every key of every table: without moving rows, then moving them all through hot,
            // then every full row; then again after a checkpoint and a clean reopening.
            let everyKey = Differential.keys + Differential.unwritten
            context = "end of the stream"
            try verifyEverything(moving: false)
            try verifyEverything(moving: true)
            for t in tables.indices { for key in everyKey { try compareSnapshot(t, key) } }
            context = "final checkpoint and reopening"
            try takeCheckpoint(payload: [0xFF])
            try reopen(clean: true)
            try verifyCheckpointOnDisk()
            for t in tables.indices { for key in everyKey { try compareSnapshot(t, key) } }
            let finalRows = try tables.map { try $0.peek(everyKey).map(\.bitPattern) }
            try collectTraffic()
            try store!.close()
            return Outcome(digest: digest.value, reads: digest.reads, finalRows: finalRows)
        }
    }
}

/// Paces a background checkpoint writer against the stream (through the store's
/// after-transaction hook): the writer moves one transaction ahead per two operations, or
/// runs free once the stream waits for it, and fails there when told to.
final class CheckpointPacing: Sendable {
    private struct State {
        var operations = 0, released = 0
        var mainWaiting = false, failing = false
    }
    private let state = Monitor(State())

    func start(failing: Bool) {
        state.when({ _ in true }) { s in
            s.failing = failing
            s.mainWaiting = false
            s.released = s.operations
        }
    }

    func operationDone() { state.when({ _ in true }) { $0.operations += 1 } }
    func mainWaits() { state.when({ _ in true }) { $0.mainWaiting = true } }

    /// Called by the writer after each transaction. (A stream that stops with a checkpoint
    /// in flight, as a failing test does, leaves this writer waiting.)
    func writerStep() throws(StoreError) {
        let fail = state.when({ s in s.mainWaiting || (!s.failing && s.operations >= s.released + 2) }) { s in
            if s.mainWaiting { return s.failing }
            s.released = s.operations
            return false
        }
        if fail { throw .diskFull(path: "(test)", generation: 0, detail: "a failure the test injects") }
    }
}

@Suite struct DifferentialTests {
    @Test(arguments: DifferentialBudget.all + DifferentialBudget.inFlight)
    func storeReadsExactlyWhatTheReferenceReads(_ budget: DifferentialBudget) throws {
        let run = try Differential.Run(budget)
        let outcome = try run.run()
        print("differential \(budget.name): \(Differential.operations) operations, \(outcome.reads) reads, "
              + "\(run.generation) checkpoints (\(run.failed) more failed), \(run.reopenings) reopenings; "
              + "traffic \(run.traffic)")

        // The run went where its budget says.
        let traffic = run.traffic
        if budget.everythingHot {
            #expect(traffic.hotToWarm == 0 && traffic.toSpill == 0 && traffic.warmHits == 0 && traffic.spillHits == 0,
                    "everything should have stayed hot: \(traffic)")
        } else {
            #expect(traffic.dropped > 0 && traffic.coldHits > 0, "rows should have left memory and come back: \(traffic)")
            if budget.warmRows > 0 { #expect(traffic.hotToWarm > 0 && traffic.warmHits > 0, "warm unused: \(traffic)") }
            if budget.hotRows + budget.warmRows < 16 {
                #expect(traffic.toSpill > 0 && traffic.spillHits > 0
                            && traffic.coldHits + traffic.spillHits > 2 * (traffic.hotHits + traffic.warmHits),
                        "most rows should have been found in LMDB or the spill file: \(traffic)")
            }
        }
        #expect(run.reopenings >= 4 && run.generation >= 20, "too few reopenings or checkpoints to mean much")
        if budget.inFlight { #expect(run.failed >= 3, "too few failed checkpoints: \(run.failed)") }
        if budget.initialMapBytes < 1 << 21 {
            #expect(Differential.fileBytes(run.directory + "/rows.mdb") > budget.initialMapBytes,
                    "LMDB's map never had to grow")
        }

        // Every other budget's run that has finished read exactly the same, during the stream
        // and at the end: among runs that write checkpoints the same way (in flight, some
        // fail, so reopenings go back to other checkpoints).
        let others = Differential.outcomes.withLock { all in
            all[budget.name] = outcome
            return all.filter { $0.key != budget.name && $0.key.hasSuffix("-in-flight") == budget.inFlight }
        }
        let everyKey = Differential.keys + Differential.unwritten
        for (name, other) in others.sorted(by: { $0.key < $1.key }) {
            #expect(other.reads == outcome.reads, "\(budget.name) and \(name) made different numbers of reads")
            #expect(other.digest == outcome.digest, "\(budget.name) and \(name) read different rows during the stream")
            for (t, table) in Differential.tables.enumerated() {
                let mine = outcome.finalRows[t], theirs = other.finalRows[t]
                let d = table.spec.dimension
                let first = (0..<everyKey.count).first { mine[$0 * d ..< ($0 + 1) * d] != theirs[$0 * d ..< ($0 + 1) * d] }
                let firstKey = first.map { "\(everyKey[$0])" } ?? "-"
                #expect(first == nil, "\(budget.name) and \(name) end with different rows in \(table.name), first key \(firstKey)")
            }
        }
    }

}
