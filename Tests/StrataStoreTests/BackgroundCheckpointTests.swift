// A checkpoint written in the background must not hold batches up: here its writer is held
// after its first transaction until every batch below has run, so a batch that waited for
// the writer would never finish (the hold gives up after two minutes, and the test then
// fails). No duration is measured; `strata bench --only checkpoint` measures the stall.
import Testing
@_spi(Testing) import StrataStore
import StrataTestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite struct BackgroundCheckpointTests {
    static let spec = TableSpec(dimension: 8, initializer: .init(.uniform(low: -0.5, high: 0.5), seed: 3),
                                optimizer: .adam(learningRate: 0.01))

    static func key(_ n: Int) -> UInt64 { UInt64(n) &* 0x9E37_79B9_7F4A_7C15 }

    static func gradients(_ keys: [UInt64], salt: UInt64) -> [Float] {
        keys.flatMap { k in (0..<8).map { j in Float(Int((k &* 5 &+ UInt64(j) &* 11 &+ salt) % 97) - 48) / 100 } }
    }

    /// Once armed, holds the writer after its first transaction until released, or two minutes.
    final class WriterHold: Sendable {
        private let state = Monitor((armed: false, held: false, released: false))
        func arm() { state.when({ _ in true }) { $0.armed = true } }
        func hold(after transaction: Int) {
            guard transaction == 1, state.current.armed, !state.current.held else { return }
            state.when({ _ in true }) { $0.held = true }
            for _ in 0..<1200 {
                if state.current.released { return }
                usleep(100_000)
            }
        }
        var isHeld: Bool { state.current.held }
        func release() { state.when({ _ in true }) { $0.released = true } }
    }

    @Test(arguments: [(hot: 64 << 20, warm: 0), (hot: 16 << 10, warm: 16 << 10)])
    func batchesGoOnWhileACheckpointIsWritten(budget: (hot: Int, warm: Int)) throws {
        let directory = temporaryDirectory("strata-background-checkpoint")
        defer { removeDirectory(directory) }
        let hold = WriterHold()
        var options = Store.Options.small(TierBudget(hotBytes: budget.hot, warmBytes: budget.warm))
        options.transactionPagesForTesting = 16
        options.afterCheckpointTransactionForTesting = { n in hold.hold(after: n) }

        // Checkpoint 1: 6000 rows. Then changes for checkpoint 2: updates, new rows, removals.
        let first = (0..<6000).map(Self.key), added = (6000..<9000).map(Self.key)
        let updated = first.filter { $0 % 3 == 0 }, removed = first.filter { $0 % 7 == 1 }
        var reference = ReferenceTable(spec: Self.spec)
        let store = try Store(path: directory, options: options)
        let table = try store.createTable("t", Self.spec)
        try table.applyGradients(first, Self.gradients(first, salt: 1))
        reference.apply(first, Self.gradients(first, salt: 1))
        try store.checkpoint(payload: [1])
        let changed = updated + added
        try table.applyGradients(changed, Self.gradients(changed, salt: 2))
        reference.apply(changed, Self.gradients(changed, salt: 2))
        try table.remove(removed)
        reference.remove(removed)
        let frozen = reference

        hold.arm()
        let pending = try store.beginCheckpoint(payload: [2])
        while !hold.isHeld { usleep(1000) }

        // While the writer is held: batches over frozen rows and others, removals of frozen
        // rows (some new in this checkpoint), rows set outright, and reads of everything.
        for round in 0..<40 {
            let keys = (0..<200).map { Self.key((round * 977 + $0 * 53) % 9500) }
            let distinct = Array(Set(keys)).sorted()
            try table.applyGradients(distinct, Self.gradients(distinct, salt: UInt64(10 + round)))
            reference.apply(distinct, Self.gradients(distinct, salt: UInt64(10 + round)))
            if round % 5 == 0 {
                let gone = distinct.prefix(20).map { $0 }
                try table.remove(gone)
                reference.remove(gone)
            }
            if round % 7 == 3 {
                let set = Array(distinct.suffix(10))
                var values: [Float] = []
                for k in set { for j in 0..<8 { values.append(Float(Int(k % 13) - 6) / 8 + Float(j) / 64) } }
                try set.withUnsafeBufferPointer { k in
                    try values.withUnsafeBufferPointer { v in try table.assign(k, values: v) }
                }
                reference.assign(set, values: values)
            }
            _ = try table.lookup(Array(keys.prefix(64)))
        }
        #expect(pending.outcome == nil, "the checkpoint ended while its writer was held")
        let everyKey = (0..<9500).map(Self.key)
        #expect(bitIdentical(try table.peek(everyKey), reference.values(everyKey)), "rows read during the checkpoint")
        table.checkInvariants()

        hold.release()
        let info = try pending.wait()
        #expect(info.generation == 2)
        #expect(bitIdentical(try table.peek(everyKey), reference.values(everyKey)), "rows read after the checkpoint")
        table.checkInvariants()
        #expect(try table.statistics().rows.total == reference.rows.count)

        // LMDB holds exactly the rows as they were when the checkpoint began.
        var stored: [UInt64: [Float]] = [:]
        try table.scanCheckpoint(withState: false) { rows in
            for i in 0..<rows.count { stored[rows.keys[i]] = Array(rows.values(at: i)) }
        }
        #expect(Set(stored.keys) == Set(frozen.rows.keys), "LMDB's keys after checkpoint 2")
        let mismatched = frozen.rows.keys.filter { !bitIdentical(stored[$0] ?? [], frozen.rows[$0]!.values) }
        #expect(mismatched.isEmpty, "\(mismatched.count) rows in LMDB differ from checkpoint 2")

        // Changes after checkpoint 2 are not kept by a close: it reopens at checkpoint 2 exactly.
        try store.close()
        let reopened = try Store(path: directory, options: options)
        let again = try reopened.table("t")
        #expect(reopened.lastCheckpoint.payload == [2])
        #expect(bitIdentical(try again.peek(everyKey), frozen.values(everyKey)), "rows reopened at checkpoint 2")
        try reopened.close()
    }

    /// A store let go right after `wait()` returns is closed then and there: the writer thread
    /// has dropped its reference before it reports the end, so the store opens again at once
    /// (the differential test's in-flight runs, in release, once found it still locked).
    @Test func aStoreLetGoAfterItsCheckpointEndedOpensAgainAtOnce() throws {
        let directory = temporaryDirectory("strata-background-checkpoint-drop")
        defer { removeDirectory(directory) }
        for round in 0..<300 {
            let store = try Store(path: directory)
            let table = try store.createTable("t", Self.spec)
            let keys = [Self.key(round)]
            try table.applyGradients(keys, Self.gradients(keys, salt: UInt64(round)))
            let info = try store.beginCheckpoint(payload: [UInt8(truncatingIfNeeded: round)]).wait()
            try #require(info.generation == UInt64(round + 1), "round \(round): generation \(info.generation)")
        }
        let store = try Store(path: directory)
        #expect(store.lastCheckpoint.generation == 300)
        try store.close()
    }
}
