// The next-item protocol's data and engine: the leave-one-out split in time order, the
// samples' histories and their resumable order, the evaluator's exclusions, the sequence use
// of a table (layout, truncation, per-position gradients), the softmax loss against a float64
// reference and finite differences, and a next-item network whose scores do not depend on
// history items beyond its length.
import Foundation
@_spi(Testing) import StrataTraining
import StrataModels
import StrataNN
import StrataStore
import StrataTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct SessionDataTests {
    /// Users a (5 interactions, two at one time), b (3), c (2), in a shuffled file.
    static let interactionLog = """
        user\titem\ttime
        a\ti3\t30
        b\ti1\t5
        a\ti1\t10
        c\ti2\t1
        a\ti2\t20
        b\ti4\t7
        a\ti5\t20
        c\ti3\t2
        a\ti4\t40
        b\ti2\t6

        """

    static let table = TableSchema(
        columns: ["user": .init(kind: .categorical, table: "user"), "item": .init(kind: .categorical, table: "item"),
                  "time": .init(kind: .ignore)],
        user: "user", item: "item", time: "time")

    static func data(_ text: String = interactionLog, protocol p: EvaluationProtocol = .nextItem) throws -> TabularData {
        let path = DataTestSupport.file(text)
        return try TabularData(path: path, table: table, schemaFile: "test schema", directory: (path as NSString).deletingLastPathComponent,
                               options: TabularData.Options(protocol: p, seed: 5))
    }

    /// Item names by their entity index.
    static func names(_ data: TabularData) -> [Int32: String] {
        let interactions = data.interactions!
        var out: [Int32: String] = [:]
        for n in 1...5 {
            let key = FeatureSchema.key(namespace: FeatureSchema.namespace("item"),
                                        value: Array("i\(n)".utf8).withUnsafeBufferPointer { FeatureSchema.valueHash($0) })
            if let e = interactions.items.entity(id: key) { out[Int32(e)] = "i\(n)" }
        }
        return out
    }

    static func user(_ data: TabularData, _ name: String) -> Int {
        let key = FeatureSchema.key(namespace: FeatureSchema.namespace("user"),
                                    value: Array(name.utf8).withUnsafeBufferPointer { FeatureSchema.valueHash($0) })
        return data.interactions!.users.entity(id: key)!
    }

    @Test func leaveOneOutHoldsOutEachUsersLastTwoItemsInTime() throws {
        let data = try Self.data()
        let i = data.interactions!, names = Self.names(data)
        func items(_ u: String, _ s: Interactions.Split) -> [String] { i.items(of: Self.user(data, u), in: s).map { names[$0]! }.sorted() }
        // a: i1 (10), i2 and i5 (20, in file order: i2 first), i3 (30), i4 (40).
        #expect(items("a", .test) == ["i4"] && items("a", .valid) == ["i3"] && items("a", .train) == ["i1", "i2", "i5"])
        #expect(i.sequences[Self.user(data, "a")].map { names[$0]! } == ["i1", "i2", "i5", "i3", "i4"])
        #expect(i.trainingLengths[Self.user(data, "a")] == 3)
        #expect(items("b", .test) == ["i4"] && items("b", .valid) == ["i2"] && items("b", .train) == ["i1"])
        // Fewer than three interactions: all train.
        #expect(items("c", .train) == ["i2", "i3"] && items("c", .valid).isEmpty && items("c", .test).isEmpty)
        #expect(data.counts == [6, 2, 2])
    }

    /// A log too large for the time sort's memory (7 rows a run here: hundreds of runs, and the
    /// rows spilled before their times are read) gives what an in-memory sort of the same rows
    /// gives, computed here: each user's sequence by time, ties in file order, the last two
    /// held out; the same lines in each split; and no scratch file left behind.
    @Test(arguments: [EvaluationProtocol.nextItem, .none])
    func aLogLargerThanTheSortsMemoryGivesTheSameSequencesAndSplits(_ p: EvaluationProtocol) throws {
        var rng = SplitMix64(seed: 17)
        var lines = ["user\titem\ttime"]
        var rows: [(user: Int, item: Int, time: Int, line: Int)] = []
        for line in 0..<3000 {
            // Few distinct times, so that ties are common; some users with one or two rows.
            let user = Int(rng.next() % 60), item = Int(rng.next() % 300), time = Int(rng.next() % 40)
            rows.append((user, item, time, line))
            lines.append("u\(user)\ti\(item)\t\(time)")
        }
        let path = DataTestSupport.file(lines.joined(separator: "\n") + "\n")
        defer { DataTestSupport.remove(path) }
        let scratch = temporaryDirectory("strata-time-sort")
        defer { removeDirectory(scratch) }
        func load(runRecords: Int) throws -> TabularData {
            var options = TabularData.Options(protocol: p, seed: 5)
            options.runRecords = runRecords
            options.temporaryDirectory = scratch
            return try TabularData(path: path, table: Self.table, schemaFile: "test schema", directory: (path as NSString).deletingLastPathComponent,
                                   options: options)
        }
        let small = try load(runRecords: 7), whole = try load(runRecords: 1 << 20)
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch).isEmpty)
        let interactions = small.interactions!
        func entity(_ side: SideCatalog, _ table: String, _ name: String) -> Int {
            let key = FeatureSchema.key(namespace: FeatureSchema.namespace(table),
                                        value: Array(name.utf8).withUnsafeBufferPointer { FeatureSchema.valueHash($0) })
            return side.entity(id: key)!
        }
        var counts = [0, 0, 0]
        for u in Set(rows.map(\.user)) {
            let own = rows.filter { $0.user == u }.sorted { ($0.time, $0.line) < ($1.time, $1.line) }
            let e = entity(interactions.users, "user", "u\(u)")
            let want = own.map { Int32(entity(interactions.items, "item", "i\($0.item)")) }
            #expect(interactions.sequences[e] == want, "user u\(u)")
            let held = p == .nextItem && own.count >= 3 ? 2 : 0
            #expect(interactions.trainingLengths[e] == own.count - held, "user u\(u)")
            #expect(interactions.items(of: e, in: .test) == (held > 0 ? [want[own.count - 1]] : []), "user u\(u)")
            #expect(interactions.items(of: e, in: .valid) == (held > 0 ? [want[own.count - 2]] : []), "user u\(u)")
            counts[0] += own.count - held
            counts[1] += held / 2
            counts[2] += held / 2
        }
        #expect(small.counts == counts && whole.counts == counts)
        #expect(whole.interactions!.sequences == interactions.sequences)
        for split in Interactions.Split.allCases where p == .nextItem || split == .train {
            var a = try small.source(split, shuffleBlock: 0, seed: 1), b = try whole.source(split, shuffleBlock: 0, seed: 1)
            let x = Batch(schema: a.schema), y = Batch(schema: b.schema)
            var n = 0
            while true {
                let m = try a.next(64, into: x)
                #expect(try b.next(64, into: y) == m)
                if m == 0 { break }
                for f in 0..<x.schema.categorical.count {
                    for r in 0..<m { #expect(Array(x.keys(of: f, row: r)) == Array(y.keys(of: f, row: r)), "\(split)") }
                }
                n += m
            }
            #expect(n == counts[split.rawValue], "\(split)")
        }
    }

    @Test func aTimeThatIsNoNumberNamesItsLine() throws {
        let text = Self.interactionLog.replacingOccurrences(of: "b\ti4\t7", with: "b\ti4\tseven")
        #expect { try Self.data(text) } throws: { "\($0)".contains(":7: malformed line: the time (column 3) is not a number") }
        let noTime = TableSchema(columns: Self.table.columns, user: "user", item: "item")
        let path = DataTestSupport.file(Self.interactionLog)
        #expect { try TabularData(path: path, table: noTime, schemaFile: "s", directory: "/", options: .init(protocol: .nextItem)) }
            throws: { "\($0)".contains("name the time column") }
    }

    @Test func samplesHoldEachTrainingItemWithTheItemsBeforeIt() throws {
        let data = try Self.data(), names = Self.names(data)
        var source = try SequenceSamples(data.interactions!, historyLength: 1, seed: 9, identity: "t")
        let schema = source.schema
        let history = schema.categoricalIndex("history")!, item = schema.categoricalIndex("item")!
        let batch = Batch(schema: schema)
        var seen: [String] = []
        while try source.next(2, into: batch) > 0 {
            for r in 0..<batch.count {
                let h = batch.keys(of: history, row: r).map { k in names.first { data.interactions!.items.ids[Int($0.key)] == k }!.value }
                let t = names.first { data.interactions!.items.ids[Int($0.key)] == batch.keys(of: item, row: r)[0] }!.value
                seen.append("\(h.joined(separator: ","))>\(t)")
            }
        }
        // a trains on i1 i2 i5: two samples; b on i1 alone: none; c on i2 i3: one. History 1.
        #expect(seen.sorted() == ["i1>i2", "i2>i3", "i2>i5"])
        #expect(source.position == SourcePosition(epoch: 1))
    }

    @Test func theOrderChangesEveryEpochAndASeekReplaysIt() throws {
        let data = try MovieLens.data(.nextItem, seed: 3)
        var source = try SequenceSamples(data.interactions!, historyLength: 5, seed: 3, identity: "ml")
        let first = try DataTestSupport.read(&source, calls: 3, batchSize: 64)
        let position = source.position
        let after = try DataTestSupport.read(&source, calls: 2, batchSize: 64)
        var again = try SequenceSamples(data.interactions!, historyLength: 5, seed: 3, identity: "ml")
        try again.seek(to: position)
        #expect(try DataTestSupport.read(&again, calls: 2, batchSize: 64) == after)
        try again.seek(to: SourcePosition(epoch: 1))
        #expect(try DataTestSupport.read(&again, calls: 3, batchSize: 64) != first)
        #expect(throws: DataError.self) { try again.seek(to: SourcePosition(epoch: 0, sample: Int64(again.count) + 1)) }
    }

    @Test func evaluationLeavesOutTheHistoryButNotTheHeldOutItem() throws {
        let data = try Self.data(), names = Self.names(data)
        let valid = try NextItemEvaluator(data.interactions!, split: .valid, historyLength: 50)
        let test = try NextItemEvaluator(data.interactions!, split: .test, historyLength: 50)
        let a = Self.user(data, "a")
        #expect(valid.excluded(a).map { names[$0]! }.sorted() == ["i1", "i2", "i5"])
        #expect(test.excluded(a).map { names[$0]! }.sorted() == ["i1", "i2", "i3", "i5"])
        #expect(data.interactions!.history(of: a, before: .test).map { names[$0]! } == ["i1", "i2", "i5", "i3"])
        #expect(data.interactions!.history(of: a, before: nil).map { names[$0]! } == ["i1", "i2", "i5", "i3", "i4"])
        #expect(data.interactions!.history(of: a, before: .valid).map { names[$0]! } == ["i1", "i2", "i5"])
    }

    /// A negative is its positive's user and history with a drawn item: the history is of the
    /// user's side, so a ranker learns which item follows that history.
    @Test func negativesKeepThePositivesHistory() throws {
        let data = try MovieLens.data(.nextItem, seed: 3)
        let interactions = data.interactions!
        var source = try SequenceSamples(interactions, historyLength: 6, seed: 3, identity: "ml")
        let schema = source.schema
        let sampler = try NegativeSampler(NegativeSampling(count: 3), interactions: interactions, seed: 4, schema: schema)
        let raw = Batch(schema: schema), out = Batch(schema: schema)
        let n = try source.next(50, into: raw)
        sampler.expand(raw, startingAt: SourcePosition(), into: out)
        #expect(out.count == 4 * n && out.groupSize == 4)
        let history = schema.categoricalIndex("history")!, user = schema.categoricalIndex("user_id")!, item = schema.categoricalIndex("item_id")!
        for r in 0..<n {
            let positive = Array(raw.keys(of: history, row: r))
            #expect((1...6).contains(positive.count))
            for j in 0..<4 {
                let o = 4 * r + j
                #expect(Array(out.keys(of: history, row: o)) == positive, "row \(r), slot \(j)")
                #expect(out.keys(of: user, row: o)[0] == raw.keys(of: user, row: r)[0])
                if j > 0 { #expect(out.keys(of: item, row: o)[0] != raw.keys(of: item, row: r)[0]) }
            }
        }
    }

    // MARK: The sequence use of a table

    @Test func aSequenceUseLaysOutTheLastKeysAndStepsEachPositionsRow() throws {
        let scratch = try ScratchStore("strata-sequence-use")
        let table = try scratch.table("item", dimension: 2, seed: 4)
        let lookup = TableLookup(table: table)
        let use = lookup.addSequenceUse(steps: 3)
        // Sample 0: keys 1 2 3 4 (1 is beyond the 3 positions); sample 1: key 5; sample 2: none.
        let keys: [UInt64] = [1, 2, 3, 4, 5], offsets: [Int32] = [0, 4, 5, 5]
        try keys.withUnsafeBufferPointer { k in
            try offsets.withUnsafeBufferPointer { o in
                try lookup.forward(training: true) { _ in UseKeys(keys: k, offsets: o) }
            }
        }
        let rows = try table.peek([2, 3, 4, 5])
        let out = lookup.outputs[use]
        #expect(out.rows == 3 && out.columns == 6)
        #expect(Array(out.values[0..<6]) == Array(rows[0..<6]))
        #expect(Array(out.values[6..<12]) == Array(rows[6..<8]) + [0, 0, 0, 0])
        #expect(Array(out.values[12..<18]) == [Float](repeating: 0, count: 6))
        #expect(lookup.lengths[use]!.values == [3, 1, 0])
        // Position t's gradient steps its own key's row (SGD at rate 1: w −= g).
        let g = Tensor(rows: 3, columns: 6, values: (0..<18).map { Float($0) })
        try lookup.backward { _ in g }
        let stepped = try table.peek([2, 3, 4, 5])
        let expected: [Float] = [rows[0] - 0, rows[1] - 1, rows[2] - 2, rows[3] - 3, rows[4] - 4, rows[5] - 5, rows[6] - 6, rows[7] - 7]
        #expect(stepped == expected)
        // Key 1, beyond the positions, was never read: it has no row.
        #expect(try table.statistics().rows.total == 4)
    }

    // MARK: The softmax loss

    @Test func softmaxCrossEntropyMatchesAFloat64ReferenceAndItsDifferences() throws {
        var random = GradientCheck.Random(seed: 11)
        let z = random.tensor(4, 7, -3, 3)
        let classes: [Int32] = [0, 6, 3, 3]
        let gradient = Tensor(rows: 0, columns: 7)
        func reference(_ v: [Double]) -> Double {
            var total = 0.0
            for r in 0..<4 {
                let row = v[(r * 7)..<(r * 7 + 7)]
                let top = row.max()!
                total += log(row.reduce(0) { $0 + exp($1 - top) }) + top - row[r * 7 + Int(classes[r])]
            }
            return total / 4
        }
        let loss = classes.withUnsafeBufferPointer { Loss.softmax.evaluate(z, labels: .classes($0.baseAddress!), gradient: gradient) }
        let values = GradientCheck.doubles(z)
        #expect(abs(loss - reference(values)) < 1e-6, "loss \(loss), reference \(reference(values))")
        // Central differences of the float64 reference at step 1e-6: no visible noise.
        var point = values
        let numeric = GradientCheck.centralDifferences64(count: point.count, step: 1e-6, read: { point[$0] },
                                                        write: { point[$0] = $1 }, loss: { reference(point) })
        GradientCheck.check("softmax cross-entropy", analytic: GradientCheck.doubles(gradient), numeric: numeric, floor: 1e-4)
    }

    // MARK: A next-item network

    /// Model scores of histories that differ only in items before the model's last
    /// `max_length` are the same bits, and so are the gradients that reach the store.
    @Test func itemsBeyondTheMaximumLengthDoNotChangeAnyBit() throws {
        let data = try Self.data()
        let interactions = data.interactions!
        let schema = try interactions.sequenceSchema()
        let spec = try ModelRegistry.spec("gru4rec", settings: ["embedding_dim": 4, "hidden_size": 3, "max_length": 2, "dropout": 0.2])
        func run(_ extra: UInt64) throws -> [[Float]] {
            let scratch = try ScratchStore("strata-next-item")
            let network = try Network(spec: spec, schema: schema, seed: 2) { request in
                try scratch.table(request.name, dimension: request.dimension, seed: 8, range: 0.5)
            }
            try network.setCandidates(interactions.items.ids)
            let ids = interactions.items.ids
            let batch = Batch(schema: schema)
            let user = FeatureSchema.missingKey(table: "user")
            // Row 0: an item before the last two differs between runs; row 1: a short history.
            batch.set(rows: 2, labels: [], dense: [], keys: [[[user], [user]], [[ids[0]], [ids[1]]],
                                                             [[extra, ids[2], ids[3]], [ids[4]]]])
            let scores = try network.forward(batch, training: true, step: 1)
            let gradient = Tensor(rows: 0, columns: ids.count)
            _ = try network.withTargetClasses(batch) { Loss.softmax.evaluate(scores, labels: .classes($0), gradient: gradient) }
            try network.backward(gradient, step: 1)
            return [scores.values, try network.tables.flatMap { try $0.peek(ids) }, network.parameters.flatMap { $0.gradient.values }]
        }
        let a = try run(interactions.items.ids[0]), b = try run(interactions.items.ids[4])
        #expect(a.map { $0.map(\.bitPattern) } == b.map { $0.map(\.bitPattern) })
    }
}
