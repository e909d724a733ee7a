// Bad input to the API: every case gets its StoreError, nothing changes in the table (values,
// optimizer state, update counts, where rows are, even the access counters), and the store
// goes on working and reopens at its last checkpoint with every row bit-identical to a
// reference. Also: a store written by a newer format, and a second opener.
//
// Files: CorruptionTests (truncated and corrupted files), DiskFullTests, ReadOnlyTests,
// ResidentMemoryTests; FaultSupport has the helpers.
import Testing
@_spi(Testing) import StrataStore
import StrataTestSupport
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

@Suite struct FaultTests {
    static func options() -> Store.Options {
        // 128-byte Adam records of dimension 8: 32 hot and 32 warm rows, so that a few hundred
        // rows sit in every tier.
        .small(TierBudget(hotBytes: 4 << 10, warmBytes: 4 << 10))
    }

    static let adam = TableSpec(dimension: 8, initializer: .init(.normal(mean: 0, standardDeviation: 0.1), seed: 3),
                                optimizer: .adam(learningRate: 0.01))

    static func gradients(_ keys: [UInt64], _ d: Int, salt: UInt64 = 0) -> [Float] {
        keys.flatMap { k in (0..<d).map { j in Float(Int((k &* 131 &+ UInt64(j) &* 17 &+ salt) % 199) - 99) / 250 } }
    }

    /// Table "t" with rows in hot, warm, spill and LMDB: 300 rows checkpointed, then 120 of
    /// them and 60 new ones updated again.
    static func populated(_ store: Store) throws -> (Table, ReferenceTable, [UInt64]) {
        let table = try store.createTable("t", adam)
        var reference = ReferenceTable(spec: adam)
        let first = (0..<300).map { UInt64($0) &* 0x9E37_79B9_7F4A_7C15 }
        for chunk in stride(from: 0, to: first.count, by: 50) {
            let keys = Array(first[chunk..<(chunk + 50)])
            let g = gradients(keys, 8)
            try table.applyGradients(keys, g)
            reference.apply(keys, g)
        }
        try store.checkpoint(payload: [1])
        let second = Array(first[100..<220]) + (300..<360).map { UInt64($0) &* 0x9E37_79B9_7F4A_7C15 }
        for chunk in stride(from: 0, to: second.count, by: 30) {
            let keys = Array(second[chunk..<(chunk + 30)])
            let g = gradients(keys, 8, salt: 5)
            try table.applyGradients(keys, g)
            reference.apply(keys, g)
        }
        return (table, reference, first + second.suffix(60))
    }

    // MARK: Unknown tables, invalid tables, existing tables

    @Test func unknownTable() throws {
        let path = FaultKit.directory("strata-fault-unknown")
        defer { FaultKit.remove(path) }
        let store = try FaultKit.open(path, Self.options())
        #expect(throws: StoreError.unknownTable("nope")) { try store.table("nope") }
        try store.createTable("items", Self.adam)
        #expect(throws: StoreError.unknownTable("Items")) { try store.table("Items") }
        #expect(throws: StoreError.unknownTable("")) { try store.table("") }
        #expect(StoreError.unknownTable("nope").description.contains("'nope'"))
        try store.checkpoint()
        try store.close()
        let reopened = try FaultKit.open(path, Self.options())
        #expect(throws: StoreError.unknownTable("nope")) { try reopened.table("nope") }
        #expect(reopened.tableNames == ["items"])
        try reopened.close()
    }

    @Test func invalidTableNamesAndSpecs() throws {
        let path = FaultKit.directory("strata-fault-invalid")
        defer { FaultKit.remove(path) }
        let store = try FaultKit.open(path, Self.options())
        let good = TableSpec(dimension: 4)
        for name in ["", "a b", "a/b", "../x", "naïve", "tab\tle", "x\0y", String(repeating: "x", count: 65)] {
            let error = FaultKit.storeError { try store.createTable(name, good) }
            guard case .invalidTable(let n, let reason) = error else {
                Issue.record("name \(name.debugDescription): \(String(describing: error))")
                continue
            }
            #expect(n == name)
            #expect(!reason.isEmpty)
        }
        #expect(throws: Never.self) { try store.createTable(String(repeating: "x", count: 64), good) }

        let specs: [(String, TableSpec)] = [
            ("dimension 0", TableSpec(dimension: 0)),
            ("dimension -1", TableSpec(dimension: -1)),
            ("dimension 65537", TableSpec(dimension: 65_537)),
            ("NaN constant", TableSpec(dimension: 4, initializer: .init(.constant(.nan)))),
            ("infinite constant", TableSpec(dimension: 4, initializer: .init(.constant(.infinity)))),
            ("uniform low > high", TableSpec(dimension: 4, initializer: .init(.uniform(low: 1, high: 0)))),
            ("uniform to infinity", TableSpec(dimension: 4, initializer: .init(.uniform(low: 0, high: .infinity)))),
            ("normal, negative deviation", TableSpec(dimension: 4, initializer: .init(.normal(mean: 0, standardDeviation: -1)))),
            ("normal, NaN mean", TableSpec(dimension: 4, initializer: .init(.normal(mean: .nan, standardDeviation: 1)))),
            ("sgd, negative rate", TableSpec(dimension: 4, optimizer: .sgd(learningRate: -0.1))),
            ("sgd, NaN rate", TableSpec(dimension: 4, optimizer: .sgd(learningRate: .nan))),
            ("adagrad, infinite epsilon", TableSpec(dimension: 4, optimizer: .adagrad(learningRate: 0.1, epsilon: .infinity))),
            ("adam, beta1 1", TableSpec(dimension: 4, optimizer: .adam(beta1: 1))),
            ("adam, beta2 1.5", TableSpec(dimension: 4, optimizer: .adam(beta2: 1.5))),
            ("ftrl, negative l1", TableSpec(dimension: 4, optimizer: .ftrl(l1: -1))),
        ]
        for (what, spec) in specs {
            let error = FaultKit.storeError { try store.createTable("bad", spec) }
            guard case .invalidTable("bad", let reason) = error else {
                Issue.record("\(what): \(String(describing: error))")
                continue
            }
            #expect(error!.description.contains("'bad'") && !reason.isEmpty, "\(what)")
        }

        // A budget that holds no row is its own error.
        let tooSmall = FaultKit.storeError {
            try store.createTable("big", TableSpec(dimension: 1024), budget: TierBudget(hotBytes: 100, warmBytes: 0))
        }
        guard case .impossibleBudget(table: "big", _) = tooSmall else {
            Issue.record("impossible budget: \(String(describing: tooSmall))")
            return
        }

        #expect(store.tableNames == [String(repeating: "x", count: 64)])
        try store.checkpoint()
        try store.close()
        let reopened = try FaultKit.open(path, Self.options())
        #expect(reopened.tableNames == [String(repeating: "x", count: 64)])
        try reopened.close()
    }

    @Test func existingTableWithAnotherSpec() throws {
        let path = FaultKit.directory("strata-fault-exists")
        defer { FaultKit.remove(path) }
        var store = try FaultKit.open(path, Self.options())
        let spec = TableSpec(dimension: 4, optimizer: .adagrad())
        let table = try store.createTable("t", spec)
        #expect(try store.createTable("t", spec) === table)
        for other in [TableSpec(dimension: 8, optimizer: .adagrad()), TableSpec(dimension: 4, storage: .float16, optimizer: .adagrad()),
                      TableSpec(dimension: 4, optimizer: .adam()), TableSpec(dimension: 4, initializer: .init(.zeros, seed: 1), optimizer: .adagrad())] {
            #expect(throws: StoreError.tableExists(name: "t", existing: spec)) { try store.createTable("t", other) }
        }
        try table.applyGradients([7], [1, 2, 3, 4])
        var reference = ReferenceTable(spec: spec)
        reference.apply([7], [1, 2, 3, 4])
        try store.checkpoint()
        try store.close()

        // The spec is durable: the clash is found after reopening too, and the row survives it.
        store = try FaultKit.open(path, Self.options())
        #expect(throws: StoreError.tableExists(name: "t", existing: spec)) { try store.createTable("t", TableSpec(dimension: 5)) }
        #expect(try FaultKit.wrongRows(store.table("t"), reference, [7, 8]).isEmpty)
        try store.close()
    }

    // MARK: Buffers that do not match

    @Test func shapeMismatch() throws {
        let path = FaultKit.directory("strata-fault-shape")
        defer { FaultKit.remove(path) }
        let store = try FaultKit.open(path, Self.options())
        let (table, reference, keys) = try Self.populated(store)
        let before = try table.statistics()
        let some = Array(keys.prefix(3)) + [keys[150], keys.last!]  // 5 keys, 40 floats
        let d = 8

        for count in [0, 39, 41, 5, 400] {
            var out = [Float](repeating: -7, count: count)
            for peek in [false, true] {
                let error = FaultKit.storeError {
                    try some.withUnsafeBufferPointer { k in
                        try out.withUnsafeMutableBufferPointer { o in
                            peek ? try table.peek(k, into: o) : try table.lookup(k, into: o)
                        }
                    }
                }
                #expect(error.map { if case .shapeMismatch("t", 40, count, _) = $0 { true } else { false } } == true,
                        "\(peek ? "peek" : "lookup") into \(count) floats: \(String(describing: error))")
                #expect(error?.description.contains("'t'") == true)
            }
            #expect(out.allSatisfy { $0 == -7 }, "the output buffer was written")

            let error = FaultKit.storeError { try table.applyGradients(some, [Float](repeating: 0.5, count: count)) }
            #expect(error.map { if case .shapeMismatch("t", 40, count, _) = $0 { true } else { false } } == true,
                    "gradients of \(count) floats: \(String(describing: error))")
        }
        // No keys but some gradients, and the other way round.
        #expect(throws: StoreError.self) { try table.applyGradients([], [1, 2, 3, 4, 5, 6, 7, 8]) }
        #expect(throws: StoreError.self) { try table.applyGradients([keys[0]], []) }
        // And gradients for the right number of keys of another dimension.
        #expect(throws: StoreError.self) { try table.applyGradients(some, [Float](repeating: 0.5, count: some.count * (d + 1))) }

        let after = try table.statistics()
        #expect(after.traffic == before.traffic, "a rejected call touched rows")
        #expect(after.rows == before.rows)
        #expect(try FaultKit.wrongRows(table, reference, keys).isEmpty)
        try store.close()
    }

    // MARK: Non-finite gradients

    /// A finite gradient whose step would overflow (a float32 row pushed past 3.4e38 by a
    /// huge learning rate; a float16 row past 65504) rejects the whole batch: no value, state
    /// or update count changes, in any tier, and the table takes good batches after. Before,
    /// the step wrote infinity into the row, which kept it through checkpoints.
    @Test func stepThatWouldOverflowRejectsTheWholeBatch() throws {
        let path = FaultKit.directory("strata-fault-overflow")
        defer { FaultKit.remove(path) }
        let store = try FaultKit.open(path, Self.options())
        var (table, reference, keys) = try Self.populated(store)
        // 41 keys over every tier, more than the 32 hot slots: staging pushes staged rows out
        // of hot before they are written back.
        let batch = Array(keys.prefix(10)) + Array(keys[95..<115]) + Array(keys.suffix(6)) + [1, 2, 3, 4, 5]
        func state(_ keys: [UInt64]) throws -> [[Float]] {
            try keys.map { let r = try table.row($0); return r.values + r.optimizerState + [Float(r.updateCount)] }
        }
        // Adam moves each value by a few times the learning rate at most: 1e37 leaves rows
        // finite, the largest finite rate does not.
        let huge = Float.greatestFiniteMagnitude
        let first = Array(batch.prefix(3))
        let g1 = Self.gradients(first, 8, salt: 7)
        try table.applyGradients(first, g1, learningRate: 1e37)
        reference.apply(first, g1, learningRate: 1e37)
        let before = try state(keys + [1, 2, 3, 4, 5])
        let g = Self.gradients(batch, 8, salt: 7)
        let error = FaultKit.storeError { try table.applyGradients(batch, g, learningRate: huge) }
        guard case .nonFiniteStep(table: "t", key: let key, what: let what) = error else {
            Issue.record("expected nonFiniteStep, got \(String(describing: error))")
            return
        }
        #expect(batch.contains(key) && what.hasPrefix("value"), "\(key) \(what)")
        #expect(error?.description.contains("nothing was applied") == true)
        #expect(try state(keys + [1, 2, 3, 4, 5]) == before, "a rejected batch changed rows")
        #expect(try FaultKit.wrongRows(table, reference, keys + [1, 2, 3, 4, 5]).isEmpty)

        // A good batch over the same keys still applies, staged rows pushed out of hot and back.
        let good = Self.gradients(batch, 8, salt: 11)
        try table.applyGradients(batch, good)
        reference.apply(batch, good)
        #expect(try FaultKit.wrongRows(table, reference, keys + [1, 2, 3, 4, 5]).isEmpty)

        // float16: a row at 60000 given a gradient of -70000 by SGD would store infinity.
        let half = try store.createTable("half", TableSpec(dimension: 4, storage: .float16,
            initializer: .init(.uniform(low: -0.1, high: 0.1), seed: 1), optimizer: .sgd(learningRate: 1)))
        let (ids, initial): ([UInt64], [Float]) = ([7, 8], [60000, 1, 2, 3, 4, 5, 6, 7])
        try ids.withUnsafeBufferPointer { k in try initial.withUnsafeBufferPointer { v in try half.assign(k, values: v) } }
        let rows = try [7, 8].map { try half.row($0).values }
        #expect(throws: StoreError.nonFiniteStep(table: "half", key: 7, what: "value 0")) {
            try half.applyGradients([8, 7], [0.5, 0.5, 0.5, 0.5, -70000, 0, 0, 0])
        }
        #expect(try [7, 8].map { try half.row($0).values } == rows)
        try half.applyGradients([8, 7], [0.5, 0.5, 0.5, 0.5, -5000, 0, 0, 0])
        #expect(try half.row(7).values[0] == 64992 && half.row(8).values[0] == 3.5)  // 65000 rounds to 64992 as float16
        try store.close()
    }

    @Test(arguments: [Float.nan, .infinity, -.infinity, .signalingNaN, -Float.nan])
    func nonFiniteGradientRejectsTheWholeBatch(_ bad: Float) throws {
        let path = FaultKit.directory("strata-fault-nonfinite")
        defer { FaultKit.remove(path) }
        let options = Self.options()
        var store = try FaultKit.open(path, options)
        var (table, reference, keys) = try Self.populated(store)
        let placements = Set(try keys.map { try table.row($0).placement })
        #expect(placements.isSuperset(of: [.hot, .warm, .spill, .cold]), "rows are only in \(placements)")

        // Batches of keys from every tier, with a duplicate (first key again at the end) and
        // keys never written; 41 keys make 328 floats, so positions fall both in the vector
        // part of the scan and in its tail.
        let d = 8
        let batch = Array(keys.prefix(10)) + Array(keys[95..<115]) + Array(keys.suffix(6)) + [1, 2, 3, 4] + [keys[0]]
        #expect(batch.count == 41)
        let positions = [0, 1, d - 1, d, 17 * d + 3, 40 * d - 1, 40 * d, 41 * d - 1, 320 + 2]
        for position in positions {
            let rows = try batch.map { try table.row($0) }
            let traffic = try table.statistics().traffic
            var g = Self.gradients(batch, d, salt: UInt64(position))
            g[position] = bad
            let error = FaultKit.storeError { try table.applyGradients(batch, g) }
            #expect(error == .nonFiniteGradient(table: "t", key: batch[position / d], element: position % d),
                    "position \(position): \(String(describing: error))")
            #expect(error?.description.contains("nothing was applied") == true)
            // Nothing changed, and no row even moved.
            #expect(try batch.map { try table.row($0) } == rows, "position \(position): rows changed")
            #expect(try table.statistics().traffic == traffic, "position \(position): rows were touched")

            // The same through the buffer API with a learning-rate override.
            let again = FaultKit.storeError {
                try batch.withUnsafeBufferPointer { k in
                    try g.withUnsafeBufferPointer { gp in try table.applyGradients(k, gp, learningRate: 0.5) }
                }
            }
            #expect(again == error)
        }
        // Several bad values: the first one is named.
        var g = Self.gradients(batch, d)
        g[100] = bad
        g[5] = -.infinity
        #expect(throws: StoreError.nonFiniteGradient(table: "t", key: batch[0], element: 5)) { try table.applyGradients(batch, g) }
        #expect(try FaultKit.wrongRows(table, reference, keys + [1, 2, 3, 4]).isEmpty)

        // The table still takes good batches, and the store reopens at its checkpoint.
        let good = Self.gradients(batch, d, salt: 99)
        try table.applyGradients(batch, good)
        reference.apply(batch, good)
        #expect(try FaultKit.wrongRows(table, reference, keys + [1, 2, 3, 4]).isEmpty)
        try store.checkpoint(payload: [2])
        try store.close()
        store = try FaultKit.open(path, options)
        table = try store.table("t")
        #expect(store.lastCheckpoint.payload == [2])
        #expect(try FaultKit.wrongRows(table, reference, keys + [1, 2, 3, 4]).isEmpty)
        #expect(try table.statistics().rows.total == reference.rows.count)
        try store.close()
    }

    /// Finite gradients of a repeated key whose sum is infinite: the step the store would take
    /// is the sum's, so it is a non-finite gradient too.
    @Test func duplicateGradientsSummingToInfinityAreRejected() throws {
        let path = FaultKit.directory("strata-fault-overflow")
        defer { FaultKit.remove(path) }
        let store = try FaultKit.open(path, Self.options())
        let spec = TableSpec(dimension: 4, optimizer: .sgd(learningRate: 0.1))
        let table = try store.createTable("t", spec)
        let reference = ReferenceTable(spec: spec)
        let huge = Float.greatestFiniteMagnitude
        let error = FaultKit.storeError { try table.applyGradients([5, 5], [huge, 1, 1, 1, huge, 1, 1, 1]) }
        #expect(error.map { if case .nonFiniteGradient("t", 5, 0) = $0 { true } else { false } } == true,
                "\(String(describing: error))")
        let row = try table.row(5)
        let finite = row.values.allSatisfy { $0.isFinite }
        #expect(finite, "row 5 is now \(row.values)")
        #expect(try FaultKit.wrongRows(table, reference, [5]).isEmpty)
        try store.close()
    }

    // MARK: A closed store

    @Test func closedStore() throws {
        let path = FaultKit.directory("strata-fault-closed")
        defer { FaultKit.remove(path) }
        let store = try FaultKit.open(path, Self.options())
        let (table, _, keys) = try Self.populated(store)
        var reference = ReferenceTable(spec: Self.adam)
        // The durable state: the first 300 rows as the populating checkpoint left them.
        for chunk in stride(from: 0, to: 300, by: 50) {
            let k = Array(keys[chunk..<(chunk + 50)])
            reference.apply(k, Self.gradients(k, 8))
        }
        try store.close()

        #expect(throws: StoreError.closed) { try store.table("t") }
        #expect(throws: StoreError.closed) { try store.createTable("u", Self.adam) }
        #expect(throws: StoreError.closed) { try store.checkpoint() }
        #expect(throws: StoreError.closed) { try table.lookup([1, 2]) }
        #expect(throws: StoreError.closed) { try table.peek([1, 2]) }
        #expect(throws: StoreError.closed) { try table.applyGradients([1], [Float](repeating: 1, count: 8)) }
        #expect(throws: StoreError.closed) { try table.remove([1]) }
        #expect(throws: StoreError.closed) { try table.row(1) }
        #expect(throws: StoreError.closed) { try table.statistics() }
        // Closing again is harmless.
        #expect(throws: Never.self) { try store.close() }
        #expect(StoreError.closed.description == "the store is closed")

        let reopened = try FaultKit.open(path, Self.options())
        #expect(reopened.lastCheckpoint.payload == [1])
        #expect(try FaultKit.wrongRows(reopened.table("t"), reference, keys).isEmpty)
        try reopened.close()
    }

    // MARK: A newer format

    @Test func storeWrittenByANewerFormat() throws {
        let path = FaultKit.directory("strata-fault-newer")
        defer { FaultKit.remove(path) }
        let store = try FaultKit.open(path, Self.options())
        let (_, _, keys) = try Self.populated(store)
        try store.checkpoint(payload: [9])
        // What was durable, read back before any tampering.
        let table = try store.table("t")
        let durable = try table.peek(keys)
        try store.close()

        let data = path + "/rows.mdb"
        let original = try #require(try FaultKit.meta(path, "format"))
        #expect(original == [2, 0, 0, 0])
        for version: UInt32 in [3, 7, 1 << 20] {
            try FaultKit.setMeta(path, "format", withUnsafeBytes(of: version) { Array($0) })
            let error = FaultKit.openError(path, Self.options())
            #expect(error == .newerFormat(file: data, found: Int(version), supported: 2), "\(String(describing: error))")
            #expect(error?.description.contains("rows.mdb") == true && error?.description.contains("version \(version)") == true)
        }
        // Format 1 (record checksums without the key) is refused, saying how to move its tables.
        try FaultKit.setMeta(path, "format", [1, 0, 0, 0])
        let older = FaultKit.openError(path, Self.options())
        #expect(older == .olderFormat(file: data, found: 1, supported: 2), "\(String(describing: older))")
        #expect(older?.description.contains("strata export") == true)
        // A format value that is no version at all.
        for bad: [UInt8] in [[0, 0, 0, 0], [1, 0, 0], [1, 0, 0, 0, 0], []] {
            try FaultKit.setMeta(path, "format", bad)
            let error = FaultKit.openError(path, Self.options())
            guard case .corrupted(file: data, _) = error else {
                Issue.record("format \(bad): \(String(describing: error))")
                continue
            }
        }

        // Put back, the store opens with everything (the failed opens changed nothing and let
        // go of the lock).
        try FaultKit.setMeta(path, "format", original)
        let reopened = try FaultKit.open(path, Self.options())
        #expect(reopened.lastCheckpoint.payload == [9])
        #expect(bitIdentical(try reopened.table("t").peek(keys), durable))
        try reopened.close()
    }

    @Test func unreadableCatalogOrCheckpointRecord() throws {
        let path = FaultKit.directory("strata-fault-catalog")
        defer { FaultKit.remove(path) }
        let store = try FaultKit.open(path, Self.options())
        let (table, _, keys) = try Self.populated(store)
        try store.checkpoint(payload: [4])
        let durable = try table.peek(keys)
        try store.close()
        let data = path + "/rows.mdb"
        for name in ["catalog", "checkpoint"] {
            let original = try #require(try FaultKit.meta(path, name))
            for bad: [UInt8] in [[], Array("{\"not\": \"it\"}".utf8), Array(original.prefix(original.count / 2))] {
                try FaultKit.setMeta(path, name, bad)
                let error = FaultKit.openError(path, Self.options())
                guard case .corrupted(file: data, let detail) = error else {
                    Issue.record("\(name) = \(bad.count) bytes: \(String(describing: error))")
                    continue
                }
                #expect(detail.contains("catalog") || detail.contains("checkpoint"), "\(detail)")
            }
            try FaultKit.setMeta(path, name, original)
        }
        let reopened = try FaultKit.open(path, Self.options())
        #expect(reopened.lastCheckpoint.payload == [4])
        #expect(bitIdentical(try reopened.table("t").peek(keys), durable))
        try reopened.close()
    }

    /// One record written by a newer Strata (its version byte 2, nothing else changed).
    @Test func recordOfANewerVersion() throws {
        let path = FaultKit.directory("strata-fault-newer-record")
        defer { FaultKit.remove(path) }
        let store = try FaultKit.open(path, Self.options())
        let (table, _, keys) = try Self.populated(store)
        try store.checkpoint()
        let durable = try table.peek(keys)
        let id = table.id
        try store.close()
        // Without the warm index every row comes from LMDB.
        unlink(path + "/tables/\(id)/warm.index")

        let victim = keys[42]
        let original = try #require(try FaultKit.record(path, table: id, key: victim))
        #expect(original[0] == 2)
        var newer = original
        newer[0] = 3
        try FaultKit.setRecord(path, table: id, key: victim, newer)

        let reopened = try FaultKit.open(path, Self.options())
        let t = try reopened.table("t")
        let data = path + "/rows.mdb"
        let calls: [(String, () throws -> Any)] = [
            ("peek", { try t.peek([victim]) }), ("row", { try t.row(victim) }), ("lookup", { try t.lookup([victim]) }),
            ("lookup in a batch", { try t.lookup(Array(keys[30..<60])) }),
            ("update", { try t.applyGradients([victim], [Float](repeating: 0.1, count: 8)) }),
        ]
        for (what, call) in calls {
            let error = FaultKit.storeError(call)
            switch error {
            case .newerFormat(file: data, found: 3, supported: 2): break
            case .corrupted(file: data, let detail) where detail.contains("\(victim)"): break
            default: Issue.record("\(what): \(String(describing: error))")
            }
        }
        // Every other row reads as it was.
        let others = keys.filter { $0 != victim }
        let d = 8
        let expected = keys.enumerated().filter { $0.element != victim }.flatMap { Array(durable[($0.offset * d)..<(($0.offset + 1) * d)]) }
        #expect(bitIdentical(try t.peek(others), expected))
        #expect(bitIdentical(try t.lookup(others), expected))
        try reopened.checkpoint()
        try reopened.close()

        // Nothing was lost: with the byte put back the row is there, as it was.
        try FaultKit.setRecord(path, table: id, key: victim, original)
        let again = try FaultKit.open(path, Self.options())
        #expect(bitIdentical(try again.table("t").peek(keys), durable))
        try again.close()
    }

    // MARK: A second opener

    /// A `.locked` error naming the LOCK file of `path`, with a holder naming `pid`.
    static func expectLocked(_ error: StoreError?, _ path: String, by pid: pid_t,
                             sourceLocation: SourceLocation = #_sourceLocation) {
        guard case .locked(let file, let holder) = error, file == path + "/LOCK" else {
            Issue.record("expected .locked naming \(path)/LOCK, got \(String(describing: error))", sourceLocation: sourceLocation)
            return
        }
        #expect(holder.contains("\(pid)"), "holder '\(holder)' does not name process \(pid)", sourceLocation: sourceLocation)
        #expect(error!.description.contains("in use by") && error!.description.contains("\(pid)"), sourceLocation: sourceLocation)
    }

    /// A child process tries to open the store; it must be told who holds it.
    static func expectChildLockedOut(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let run = try FaultKit.run(["open-store", "--store", path], timeout: 60)
        #expect(run.status == 0, "\(run)", sourceLocation: sourceLocation)
        #expect(run.value("opened") == nil, "a second process opened the store in use: \(run)", sourceLocation: sourceLocation)
        #expect(run.value("error-case") == "locked", "\(run)", sourceLocation: sourceLocation)
        #expect(run.value("error-path") == path + "/LOCK", sourceLocation: sourceLocation)
        // "process PID (the command it runs)", as the holder wrote it in LOCK.
        #expect(run.value("error-holder")?.hasPrefix("process \(getpid()) (") == true, "\(run)", sourceLocation: sourceLocation)
        #expect(run.value("error-text")?.contains("in use by process \(getpid())") == true, sourceLocation: sourceLocation)
    }

    @Test func secondOpenerInTheSameProcess() throws {
        let path = FaultKit.directory("strata-fault-lock")
        defer { FaultKit.remove(path) }
        let store = try FaultKit.open(path, Self.options())
        var (table, reference, keys) = try Self.populated(store)
        for _ in 0..<3 {
            Self.expectLocked(FaultKit.storeError { try Store(path: path, options: Self.options()) }, path, by: getpid())
        }
        var readOnly = Self.options()
        readOnly.create = false
        Self.expectLocked(FaultKit.storeError { try Store(path: path, options: readOnly) }, path, by: getpid())

        // The first store is unharmed.
        let g = Self.gradients(keys, 8, salt: 77)
        try table.applyGradients(keys, g)
        reference.apply(keys, g)
        try store.checkpoint(payload: [3])
        try store.close()
        let reopened = try FaultKit.open(path, Self.options())
        table = try reopened.table("t")
        #expect(reopened.lastCheckpoint.payload == [3])
        #expect(try FaultKit.wrongRows(table, reference, keys).isEmpty)
        try reopened.close()
    }

    @Test func secondOpenerInAnotherProcess() throws {
        let path = FaultKit.directory("strata-fault-lock2")
        defer { FaultKit.remove(path) }
        let store = try FaultKit.open(path, SmallWorkload.options())
        let table = try store.createTable("rows", SmallWorkload.spec)
        try table.applyGradients(SmallWorkload.keys, SmallWorkload.gradients)
        try store.checkpoint(payload: CheckpointCount.payload(1))

        try Self.expectChildLockedOut(path)
        try Self.expectChildLockedOut(path)
        // The failed openers changed nothing: the store goes on.
        try table.applyGradients(SmallWorkload.keys, SmallWorkload.gradients)
        try store.checkpoint(payload: CheckpointCount.payload(2))
        try store.close()
        let reopened = try FaultKit.open(path, SmallWorkload.options())
        #expect(CheckpointCount.count(in: reopened.lastCheckpoint.payload) == 2)
        #expect(try FaultKit.wrongRows(reopened.table("rows"), SmallWorkload.reference(applications: 2), SmallWorkload.keys).isEmpty)
        try reopened.close()
    }

    /// A process that holds a store and fails to open it a second time (another `Store` for
    /// the same path) still holds it against every other process. (Done with the child as
    /// the holder: if the lock were lost, this process's open would reset the holder's warm
    /// and spill files under it, which is the corruption the lock exists to prevent.)
    @Test func failedSecondOpenDoesNotReleaseTheLock() throws {
        let path = FaultKit.directory("strata-fault-lock4")
        defer { FaultKit.remove(path) }
        let child = try ChildProcess(FaultKit.driver, ["open-store", "--store", path, "--hold", "60", "--second-open", "1"])
        while let line = child.readLine(timeout: 60), line != "holding", !line.hasPrefix("error") {}
        try #require(child.lines.last == "holding", "the child did not open the store: \(child.lines)")
        #expect(child.lines.contains("second-error-case locked"), "\(child.lines)")

        var opened: Store?
        let error = FaultKit.storeError {
            opened = try Store(path: path, options: SmallWorkload.options())
        }
        Self.expectLocked(error, path, by: child.pid)
        if let opened {
            Issue.record("opened a store another process holds, after that process failed to open it a second time")
            try? opened.close()
        }
        child.kill()
        _ = try child.wait()
    }

    @Test func openingAStoreAnotherProcessHolds() throws {
        let path = FaultKit.directory("strata-fault-lock3")
        defer { FaultKit.remove(path) }
        let child = try ChildProcess(FaultKit.driver, ["open-store", "--store", path, "--hold", "60"])
        var pid: String?
        while let line = child.readLine(timeout: 60) {
            if line.hasPrefix("opened ") { pid = String(line.dropFirst(7)) }
            if line == "holding" || line.hasPrefix("error") { break }
        }
        let holder = try #require(pid, "the child did not open the store: \(child.lines)")
        #expect(holder == "\(child.pid)")

        Self.expectLocked(FaultKit.storeError { try Store(path: path, options: SmallWorkload.options()) }, path, by: child.pid)

        // Once the holder is gone (even killed), the store opens.
        child.kill()
        _ = try child.wait()
        let store = try FaultKit.open(path, SmallWorkload.options())
        #expect(store.lastCheckpoint.generation == 0)
        try store.close()
    }

    /// A store closed in this process must be free to open again at once, even while another
    /// thread starts a child process (a trainer launching a data loader, another test).
    /// The LOCK file is flock(2)ed; posix_spawn's child holds a copy of every descriptor until
    /// it execs (O_CLOEXEC closes it only then), and with it the flock, so the reopen can fail
    /// with `.locked` naming this very process.
    @Test func reopenRightAfterCloseWhileAnotherThreadSpawns() throws {
        let path = FaultKit.directory("strata-fault-lock-race")
        defer { FaultKit.remove(path) }
        let spawner = BackgroundLoop {
            let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
            defer { free(argv[0]) }
            var pid: pid_t = 0
            guard posix_spawn(&pid, "/bin/true", nil, nil, argv, environ) == 0 else { return false }
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            return true
        }
        defer { spawner.stop() }
        var refused: [StoreError] = []
        // Every 10 opens wait for one more child, so children come and go beside the opens
        // however the threads are scheduled (a count, not a time).
        for attempt in 0..<200 where refused.count < 3 {
            if attempt % 10 == 0 { spawner.waitForIteration(after: attempt / 10) }
            do throws(StoreError) {
                let store = try Store(path: path, options: SmallWorkload.options())
                try store.close()
            } catch {
                refused.append(error)
            }
        }
        let spawned = spawner.iterations
        spawner.stop()
        #expect(spawned >= 20, "posix_spawn failed: \(spawned) children")
        #expect(refused.isEmpty, "opens refused right after a close in this process: \(refused.map(\.description))")
    }
}
