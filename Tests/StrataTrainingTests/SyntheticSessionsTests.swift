// Synthetic sessions with a planted next-item rule: the same seed makes the same bytes, the
// rule holds at its rate, the data goes through the next-item protocol like any interaction
// log, bad options are errors, and a session model learns the rule: its Hit@10 ends near the
// planted ceiling, far above popularity's.
import Foundation
import StrataModels
import StrataNN
import StrataStore
import StrataTestSupport
import StrataTraining
import Testing

// Serialized: `Parallel.threads` is process-wide and a trainer sets it.
@Suite(.serialized) struct SyntheticSessionsTests {
    /// Sessions made on many threads.
    final class Made: @unchecked Sendable {
        private let lock = NSLock()
        private var sessions: [Int: [Int32]] = [:]
        func set(_ u: Int, _ s: [Int32]) { lock.withLock { sessions[u] = s } }
        func get(_ u: Int) -> [Int32]? { lock.withLock { sessions[u] } }
    }

    static func bytes(_ sessions: SyntheticSessions) -> [UInt8] {
        var out: [UInt8] = []
        let directory = temporaryDirectory("strata-sessions")
        defer { removeDirectory(directory) }
        let path = directory + "/s.tsv"
        try! sessions.write(to: path)
        out = Array(FileManager.default.contents(atPath: path)!)
        return out
    }

    @Test func theSameSeedMakesTheSameBytesAndAnotherSeedOthers() throws {
        let options = SyntheticSessions.Options(users: 300, items: 80, interactions: 3...12, rule: 0.6, seed: 7)
        let a = try SyntheticSessions(options), b = try SyntheticSessions(options)
        let bytes = Self.bytes(a)
        #expect(bytes == Self.bytes(b))
        #expect(bytes.count > 300 * 3 * 10)
        #expect(Array(bytes.prefix(15)) == Array("user\titem\ttime\n".utf8))
        // Users made concurrently, in any order, are the same sessions.
        let users = (0..<options.users).reversed().map { $0 }
        let made = Made()
        DispatchQueue.concurrentPerform(iterations: users.count) { k in made.set(users[k], a.session(ofUser: users[k]).items) }
        #expect((0..<options.users).allSatisfy { made.get($0) == b.session(ofUser: $0).items })
        var other = options
        other.seed = 8
        let c = try SyntheticSessions(other)
        #expect(Self.bytes(c) != bytes)
        #expect(c.successors != a.successors)
    }

    /// Writing again leaves an identical file as it is (its modification time is part of a
    /// checkpoint's data identity), and replaces one that differs.
    @Test func writingAgainKeepsAnIdenticalFile() throws {
        let directory = temporaryDirectory("strata-sessions")
        defer { removeDirectory(directory) }
        let sessions = try SyntheticSessions(.init(users: 50, items: 20, interactions: 3...6, seed: 2))
        let path = directory + "/" + sessions.fileName
        try sessions.write(to: path)
        let before = try FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as! Date
        usleep(20_000)
        try sessions.write(to: path)
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as! Date == before)
        let good = FileManager.default.contents(atPath: path)!
        var bad = good
        bad[bad.count - 2] ^= 1
        try bad.write(to: URL(fileURLWithPath: path))
        try sessions.write(to: path)
        #expect(FileManager.default.contents(atPath: path)! == good)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == [sessions.fileName])
    }

    /// Over about 16,000 transitions, the share that follows the rule is p plus the small
    /// chance that a popularity draw lands on the successor (about (1 − p) / items, by the
    /// permutation being random): within ±0.025 of p, over 6 standard deviations of the
    /// binomial's. Lengths, items and times keep to their ranges.
    @Test(arguments: [0.0, 0.3, 0.8, 1.0])
    func theRuleHoldsAtItsRate(_ p: Double) throws {
        let sessions = try SyntheticSessions(.init(users: 800, items: 300, interactions: 10...30, rule: p, zipfExponent: 1.1, seed: 11))
        var transitions = 0, followed = 0, counts = [Int](repeating: 0, count: 300)
        for u in 0..<800 {
            let (items, times) = sessions.session(ofUser: u)
            #expect((10...30).contains(items.count))
            #expect(zip(times, times.dropFirst()).allSatisfy { $0 < $1 }, "user \(u)'s times do not increase")
            for (a, b) in zip(items, items.dropFirst()) {
                transitions += 1
                if sessions.successor(of: Int(a)) == Int(b) { followed += 1 }
            }
            for i in items { counts[Int(i)] += 1 }
        }
        let rate = Double(followed) / Double(transitions)
        #expect(transitions > 10_000)
        #expect(abs(rate - p) < 0.025, "p \(p): the rule held on \(rate) of \(transitions) transitions")
        if p == 1 { #expect(followed == transitions) }
        // The successor is one cycle through every item: never an item itself.
        #expect((0..<300).allSatisfy { sessions.successor(of: $0) != $0 })
        var seen = Set<Int>(), at = 0
        while seen.insert(at).inserted { at = sessions.successor(of: at) }
        #expect(seen.count == 300)
        // Without the rule, items are Zipf draws: item 0 the most frequent.
        if p == 0 { #expect(counts[0] == counts.max()!) }
    }

    /// The data is an interaction log like any other: the next-item protocol's sequences are
    /// the generated sessions in time order (the file lists users in order, so time, not the
    /// file, decides), each user's last item is test and the one before validation.
    @Test func theNextItemProtocolReadsTheSessionsInTimeOrder() throws {
        let directory = temporaryDirectory("strata-sessions")
        defer { removeDirectory(directory) }
        let sessions = try SyntheticSessions(.init(users: 120, items: 40, interactions: 1...9, rule: 0.7, seed: 4))
        let data = try sessions.data(directory: directory + "/made/here", options: .init(protocol: .nextItem))
        let interactions = try #require(data.interactions)
        let entities = sessions.entities(in: interactions)
        let users = try #require(interactions.users.count == 120 ? interactions.users : nil)
        var held = 0
        for u in 0..<120 {
            let key = FeatureSchema.key(namespace: FeatureSchema.namespace("user"),
                                        value: Array(SyntheticSessions.userName(u).utf8).withUnsafeBufferPointer { FeatureSchema.valueHash($0) })
            let e = try #require(users.entity(id: key))
            let expected = sessions.session(ofUser: u).items.map { entities[Int($0)]! }
            #expect(interactions.sequences[e] == expected, "user \(u)")
            if expected.count >= 3 {
                #expect(interactions.items(of: e, in: .test) == [expected.last!])
                #expect(interactions.items(of: e, in: .valid) == [expected[expected.count - 2]])
                held += 1
            }
        }
        #expect(data.counts[1] == held && data.counts[2] == held && held > 50)
    }

    @Test(arguments: [
        (SyntheticSessions.Options(users: 0), "users"),
        (SyntheticSessions.Options(items: 1), "items"),
        (SyntheticSessions.Options(interactions: 0...5), "interactions"),
        (SyntheticSessions.Options(interactions: 1...2_000_000), "interactions"),
        (SyntheticSessions.Options(users: 100_000_000, interactions: 10...1000), "lines"),
        (SyntheticSessions.Options(rule: 1.5), "probability"),
        (SyntheticSessions.Options(rule: .nan), "probability"),
        (SyntheticSessions.Options(zipfExponent: 0), "Zipf"),
        (SyntheticSessions.Options(zipfExponent: -.infinity), "Zipf"),
    ])
    func badOptionsAreErrorsNamingWhatIsWrong(_ options: SyntheticSessions.Options, _ named: String) {
        #expect { try SyntheticSessions(options) } throws: { "\($0)".contains(named) }
    }

    /// The command line: bad values are refused naming the option, session options with other
    /// data are refused, and a run prints the planted ceiling and resumes on the same file.
    @Test func theCommandLineGeneratesChecksAndResumes() throws {
        let directory = temporaryDirectory("strata-sessions-cli")
        defer { removeDirectory(directory) }
        let base = ["train", "--model", "gru4rec", "--data", "sessions:" + directory + "/data", "--protocol", "next-item",
                    "--store", directory + "/store", "--session-users", "60", "--session-items", "30", "--session-length", "4-8",
                    "--session-rule", "0.9", "--steps", "3", "--batch-size", "16", "--embedding-dim", "4",
                    "--set", "hidden_size=4", "--set", "max_length=3"]
        for (option, value, message) in [("--session-length", "5-3", "MIN-MAX"), ("--session-rule", "1.5", "between 0 and 1"),
                                         ("--session-users", "0", "between 1"), ("--session-items", "1", "between 2"),
                                         ("--session-zipf", "nan", "above 0"), ("--protocol", "ratings", "next-item")] {
            let r = try StrataCommand.run(base + [option, value])
            #expect(r.status == 64 && r.error?.contains(option) == true && r.error?.contains(value) == true
                    && r.error?.contains(message) == true, "\(option) \(value): \(r.status) \(r.lines.suffix(2))")
        }
        let other = try StrataCommand.run(["train", "--data", "synthetic:criteo", "--session-rule", "0.5", "--store", directory + "/x"])
        #expect(other.status == 64 && other.error?.contains("--session-rule 0.5 applies to --data sessions") == true,
                "\(other.lines.suffix(2))")
        #expect(!FileManager.default.fileExists(atPath: directory + "/store"))

        let first = try StrataCommand.run(base)
        #expect(first.status == 0, "\(first.lines.suffix(5))")
        #expect(first.lines.contains { $0.hasPrefix("on the test split, the planted rule") && $0.contains("Hit@10") }, "\(first.lines.suffix(5))")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory + "/data")
        #expect(files.count == 1 && files[0].hasSuffix(".tsv"), "\(files)")
        // The same data again: the file is kept, so the checkpoint's data identity holds.
        let again = try StrataCommand.run(base + ["--resume"])
        #expect(again.status == 0 && again.output.contains("the run is complete"), "\(again.lines.suffix(5))")
        // Other sessions are other data.
        let changed = try StrataCommand.run(base.map { $0 == "0.9" ? "0.8" : $0 } + ["--resume"])
        #expect(changed.status != 0 && changed.output.contains("other data"), "\(changed.lines.suffix(3))")
    }

    /// A GRU4Rec, small, trained 300 steps on 400 users' sessions (rule p = 0.8, 100 items)
    /// reaches test Hit@10 near the planted ceiling, far above popularity and the untrained
    /// model (which ranks at random: about 10 of 100 items). A model that does not learn the
    /// rule cannot pass: the margin over popularity is 0.3.
    @Test func gru4recLearnsThePlantedRule() throws {
        let directory = temporaryDirectory("strata-sessions-learn")
        defer { removeDirectory(directory) }
        let p = 0.8
        let sessions = try SyntheticSessions(.init(users: 800, items: 300, interactions: 10...20, rule: p, seed: 3))
        let data = try sessions.data(directory: directory + "/data", options: .init(protocol: .nextItem, seed: 3))
        let training = try data.trainingData(protocol: .nextItem, labels: [], shuffleBlock: 0, seed: 3, historyLength: 5)
        let references = sessions.references(try #require(training.interactions))
        // The data's own ceiling: the rule's successor first makes about p, plus the head of
        // the rest; popularity stays far below.
        #expect(references.planted > p - 0.05 && references.popularity < p / 2, "\(references)")
        let spec = ModelSpec(GRU4Rec.self) {
            $0.embeddingDim = 16
            $0.hiddenSize = 16
            $0.maxLength = 5
            $0.dropout = 0.1
        }
        let options = TrainingOptions(model: spec, schema: training.train.schema, batchSize: 128, steps: 300,
                                      denseOptimizer: .adam(learningRate: 0.01), sparseOptimizer: .adam(learningRate: 0.01),
                                      loss: .softmax, evaluationSamples: 400, seed: 3)
        let resources = TrainingResources(budget: TierBudget(hotBytes: 8 << 20, warmBytes: 0), lookahead: 2, threads: 2)
        let store = try Store(path: directory + "/store", options: .small(resources.budget))
        defer { try? store.close() }
        let trainer = try Trainer(store: store, options: options, resources: resources, data: training, resume: false)
        let before = try #require(try trainer.evaluate())["hit@10"]!
        let summary = try trainer.run { _ in }
        let after = try #require(summary.evaluation)
        #expect(after.split == "test")
        let hit = after["hit@10"]!
        print("sessions: gru4rec Hit@10 \(before) untrained, \(hit) after 300 steps; planted \(references.planted), popularity \(references.popularity)")
        #expect(before < 0.2, "untrained Hit@10 \(before)")
        #expect(hit > references.popularity + 0.3 && hit > 0.75 * p, "Hit@10 \(hit); popularity's \(references.popularity)")
        #expect(hit <= references.planted + 0.05, "Hit@10 \(hit) above the planted ceiling \(references.planted)")
    }
}
