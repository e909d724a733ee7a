// A checkpoint goes to LMDB in several transactions (`CheckpointJournal`). These tests stop
// one after each of its transactions but the last, in every way it can stop: the process
// ends there (an exit test, like a SIGKILL: nothing is cleaned up), or the transaction's
// successor fails in-process (as a full disk would). Either way the store must hold exactly
// the previous checkpoint afterwards, and the next checkpoint must hold exactly the changes.
// Every stopping point of the run is walked, not a sample.
import Testing
@_spi(Testing) import StrataStore
import StrataTestSupport
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

@Suite struct CheckpointJournalTests {
    static let spec = TableSpec(dimension: 8, initializer: .init(.uniform(low: -0.5, high: 0.5), seed: 7),
                                optimizer: .adagrad(learningRate: 0.05))

    /// 16 pages per transaction, so the second checkpoint below takes a dozen or so.
    static func options() -> Store.Options {
        var o = Store.Options.small(TierBudget(hotBytes: 4 << 10, warmBytes: 0))
        o.mapResidentBytes = 32 * Int(sysconf(Int32(_SC_PAGESIZE)))
        return o
    }

    static func key(_ n: Int) -> UInt64 { UInt64(n) &* 0x9E37_79B9_7F4A_7C15 }

    static func gradients(_ keys: [UInt64], salt: UInt64) -> [Float] {
        keys.flatMap { k in (0..<8).map { j in Float(Int((k &* 7 &+ UInt64(j) &* 13 &+ salt) % 101) - 50) / 100 } }
    }

    /// Rows of the first checkpoint, in a fresh table (whose databases that checkpoint creates).
    static let first = (0..<2000).map(key)
    /// The second checkpoint's changes: rows updated, rows new, rows removed, and a table created.
    static let updated = (0..<2000).filter { $0 % 3 == 0 }.map(key)
    static let added = (2000..<2600).map(key)
    static let removed = (0..<2000).filter { $0 % 7 == 1 }.map(key)
    static var all: [UInt64] { first + added }

    /// Builds the first checkpoint at `path`; returns the reference of each checkpoint.
    static func prepare(_ path: String) throws -> (first: ReferenceTable, second: ReferenceTable) {
        var reference = ReferenceTable(spec: spec)
        let store = try FaultKit.open(path, options())
        let table = try store.createTable("t", spec)
        let g = gradients(first, salt: 1)
        try table.applyGradients(first, g)
        reference.apply(first, g)
        try store.checkpoint(payload: [1])
        try store.close()
        let before = reference
        secondChanges(&reference)
        return (before, reference)
    }

    static func secondChanges(_ reference: inout ReferenceTable) {
        reference.apply(updated + added, gradients(updated + added, salt: 2))
        reference.remove(removed)
    }

    /// Makes the second checkpoint's changes in `store` (the table `u` is new).
    static func makeSecondChanges(_ store: Store) throws {
        let table = try store.table("t")
        try table.applyGradients(updated + added, gradients(updated + added, salt: 2))
        try table.remove(removed)
        let u = try store.createTable("u", spec)
        try u.applyGradients(added, gradients(added, salt: 3))
    }

    /// Checks that the store at `path` holds the first checkpoint exactly, then makes and
    /// checkpoints the second and checks that it holds it after a reopen.
    static func expectFirstThenSecond(_ path: String, _ references: (first: ReferenceTable, second: ReferenceTable),
                                      _ what: String) throws {
        let store = try FaultKit.open(path, options())
        #expect(store.lastCheckpoint.payload == [1], "\(what)")
        #expect(store.tableNames == ["t"], "\(what): the interrupted checkpoint's table is visible")
        let wrong = try FaultKit.wrongRows(store.table("t"), references.first, all)
        #expect(wrong.isEmpty, "\(what): \(wrong.count) rows differ from the first checkpoint")
        #expect(try store.table("t").statistics().rows.total == first.count, "\(what)")
        try makeSecondChanges(store)
        try store.checkpoint(payload: [2])
        try store.close()
        let reopened = try FaultKit.open(path, options())
        #expect(reopened.lastCheckpoint.payload == [2], "\(what)")
        #expect(reopened.openReport.isEmpty, "\(what): \(reopened.openReport)")
        let wrongAfter = try FaultKit.wrongRows(reopened.table("t"), references.second, all)
        #expect(wrongAfter.isEmpty, "\(what): \(wrongAfter.count) rows differ from the second checkpoint")
        // The table the second checkpoint created (its writes are not journaled: a roll-back
        // drops its databases whole).
        var u = ReferenceTable(spec: spec)
        u.apply(added, gradients(added, salt: 3))
        let wrongU = try FaultKit.wrongRows(reopened.table("u"), u, added + first.prefix(50))
        #expect(wrongU.isEmpty, "\(what): \(wrongU.count) rows of the new table differ")
        try reopened.close()
    }

    /// How many transactions the second checkpoint takes (all but the last reach the hook).
    static func transactions(_ pristine: String) throws -> Int {
        let path = FaultKit.directory("strata-journal-count")
        defer { FaultKit.remove(path) }
        try FaultKit.copyTree(pristine, path)
        let seen = Mutex(0)
        var options = options()
        options.afterCheckpointTransactionForTesting = { n in seen.withLock { $0 = n } }
        let store = try FaultKit.open(path, options)
        try makeSecondChanges(store)
        try store.checkpoint(payload: [2])
        try store.close()
        return seen.withLock { $0 }
    }

    @Test func processEndingAfterEachTransactionOfACheckpoint() async throws {
        let pristine = FaultKit.directory("strata-journal-pristine")
        defer { FaultKit.remove(pristine) }
        let references = try Self.prepare(pristine)
        let stops = try Self.transactions(pristine)
        print("checkpoint journal: the second checkpoint takes \(stops + 1) transactions")
        try #require(stops >= 6, "the checkpoint took \(stops + 1) transactions; the test needs several")
        for stop in 1...stops {
            let path = FaultKit.directory("strata-journal-exit")
            defer { FaultKit.remove(path) }
            try FaultKit.copyTree(pristine, path)
            await #expect(processExitsWith: .exitCode(0), "stop after transaction \(stop)") { [path = path as String, stop = stop as Int] in
                var options = Self.options()
                options.afterCheckpointTransactionForTesting = { n in if n == stop { _exit(0) } }
                let store = try Store(path: path, options: options)
                try Self.makeSecondChanges(store)
                try store.checkpoint(payload: [2])
                _exit(3)  // the hook was never reached
            }
            let store = try FaultKit.open(path, Self.options())
            #expect(store.openReport.contains { $0.contains("rolled back a checkpoint") } == true,
                    "stop \(stop): \(store.openReport)")
            try store.close()
            try Self.expectFirstThenSecond(path, references, "process ended after transaction \(stop) of \(stops + 1)")
        }
    }

    @Test func failureAfterEachTransactionOfACheckpoint() throws {
        let pristine = FaultKit.directory("strata-journal-pristine")
        defer { FaultKit.remove(pristine) }
        let references = try Self.prepare(pristine)
        let stops = try Self.transactions(pristine)
        for stop in 1...stops {
            let path = FaultKit.directory("strata-journal-fail")
            defer { FaultKit.remove(path) }
            try FaultKit.copyTree(pristine, path)
            var options = Self.options()
            let armed = Mutex(true)
            options.afterCheckpointTransactionForTesting = { (n) throws(StoreError) in
                if n == stop, armed.withLock({ $0 }) { throw .closed }
            }
            let store = try FaultKit.open(path, options)
            try Self.makeSecondChanges(store)
            let error = FaultKit.storeError { try store.checkpoint(payload: [2]) }
            #expect(error == .closed, "stop \(stop)")
            // Memory still holds every change; LMDB holds the first checkpoint.
            let wrong = try FaultKit.wrongRows(store.table("t"), references.second, Self.all)
            #expect(wrong.isEmpty, "stop \(stop): \(wrong.count) rows in memory changed by the failed checkpoint")
            #expect(store.lastCheckpoint.payload == [1])
            try store.close()
            try Self.expectFirstThenSecond(path, references, "failure after transaction \(stop) of \(stops + 1)")

            // The same failure, then the same call again: it succeeds with everything.
            let again = FaultKit.directory("strata-journal-retry")
            defer { FaultKit.remove(again) }
            try FaultKit.copyTree(pristine, again)
            armed.withLock { $0 = true }
            let retried = try FaultKit.open(again, options)
            try Self.makeSecondChanges(retried)
            #expect(FaultKit.storeError { try retried.checkpoint(payload: [2]) } == .closed)
            armed.withLock { $0 = false }
            try retried.checkpoint(payload: [2])
            try retried.close()
            let reopened = try FaultKit.open(again, Self.options())
            #expect(reopened.lastCheckpoint.payload == [2])
            #expect(reopened.tableNames == ["t", "u"])
            let wrongAfter = try FaultKit.wrongRows(reopened.table("t"), references.second, Self.all)
            #expect(wrongAfter.isEmpty, "retry after stop \(stop): \(wrongAfter.count) rows differ")
            try reopened.close()
        }
    }

    /// A two-phase checkpoint written, then the process ended before it was committed: the
    /// next open refuses it by default, and otherwise keeps or abandons it as told, leaving
    /// exactly the one checkpoint or the other. One committed before the end stands.
    @Test(arguments: [Store.UndecidedCheckpoint.refuse, .rollBack, .commitThrough(generation: 1), .commitThrough(generation: 2),
                      .commitThrough(generation: 9)])
    func twoPhaseCheckpointsAreKeptOrAbandonedAsTheOpenSays(_ decision: Store.UndecidedCheckpoint) async throws {
        let pristine = FaultKit.directory("strata-two-phase-pristine")
        defer { FaultKit.remove(pristine) }
        let references = try Self.prepare(pristine)
        let path = FaultKit.directory("strata-two-phase")
        defer { FaultKit.remove(path) }
        try FaultKit.copyTree(pristine, path)
        await #expect(processExitsWith: .exitCode(0)) { [path = path as String] in
            let store = try Store(path: path, options: Self.options())
            try Self.makeSecondChanges(store)
            let info = try store.beginCheckpoint(payload: [2], twoPhase: true).wait()
            _exit(info.generation == 2 ? 0 : 3)
        }
        var options = Self.options()
        options.undecidedCheckpoint = decision
        if decision == .refuse {
            let error = FaultKit.storeError { _ = try Store(path: path, options: options) }
            #expect(error == .undecidedCheckpoint(path: path, generation: 2))
            // Refused with nothing changed: a reader says the same, and the roll-back still works.
            let reading = FaultKit.storeError { _ = try Store(readerAt: path) }
            #expect(reading == .undecidedCheckpoint(path: path, generation: 2))
            options.undecidedCheckpoint = .rollBack
        }
        let store = try Store(path: path, options: options)
        let kept = if case .commitThrough(let g) = decision { g >= 2 } else { false }
        #expect(store.openReport.contains { $0.contains(kept ? "kept two-phase checkpoint 2" : "abandoned two-phase checkpoint 2") },
                "\(store.openReport)")
        try store.close()
        if kept {
            let reopened = try FaultKit.open(path, Self.options())
            #expect(reopened.lastCheckpoint.payload == [2])
            #expect(reopened.lastCheckpoint.generation == 2)
            #expect(reopened.tableNames == ["t", "u"])
            let wrong = try FaultKit.wrongRows(reopened.table("t"), references.second, Self.all)
            #expect(wrong.isEmpty, "\(wrong.count) rows differ from the kept checkpoint")
            try reopened.close()
        } else {
            try Self.expectFirstThenSecond(path, references, "two-phase checkpoint abandoned (\(decision))")
        }
    }

    @Test func aCommittedTwoPhaseCheckpointStands() async throws {
        let pristine = FaultKit.directory("strata-two-phase-pristine")
        defer { FaultKit.remove(pristine) }
        let references = try Self.prepare(pristine)
        await #expect(processExitsWith: .exitCode(0)) { [path = pristine as String] in
            let store = try Store(path: path, options: Self.options())
            try Self.makeSecondChanges(store)
            _ = try store.beginCheckpoint(payload: [2], twoPhase: true).wait()
            try store.commitCheckpoint()
            _exit(0)
        }
        // Opened with the default, which refuses an undecided one: this one is decided.
        let store = try FaultKit.open(pristine, Self.options())
        #expect(store.openReport.isEmpty, "\(store.openReport)")
        #expect(store.lastCheckpoint.payload == [2])
        let wrong = try FaultKit.wrongRows(store.table("t"), references.second, Self.all)
        #expect(wrong.isEmpty, "\(wrong.count) rows differ from the committed checkpoint")
        // The next checkpoint, one-phase, holds later changes as usual.
        try store.table("t").applyGradients(Array(Self.first.prefix(10)), Self.gradients(Array(Self.first.prefix(10)), salt: 9))
        try store.checkpoint(payload: [3])
        try store.close()
        let reopened = try FaultKit.open(pristine, Self.options())
        #expect(reopened.lastCheckpoint.payload == [3] && reopened.lastCheckpoint.generation == 3)
        try reopened.close()
    }
}
