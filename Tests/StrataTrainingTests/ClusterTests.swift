// Hybrid-parallel training under Open MPI's mpirun, on this machine's cores (--oversubscribe
// lets 4 ranks share 2): `strata train` on N ranks with a per-rank batch b against one
// process with the global batch N·b.
//
// What must hold, and why:
// - N ranks twice: the same bits (every sum's order is fixed: `Cluster`, `ShardedRows`).
// - 1 rank under mpirun: the bits of a plain run (a one-rank sum is the plain sum).
// - N ranks against one process: the same keys, the same update counts and checkpoint
//   generations, and values within a bound. Not the same bits: a row's gradient is summed
//   rank by rank (each rank's samples in order, then the ranks in order) where one process
//   sums the samples in order, and a dense gradient's matrix products sum the batch in N
//   blocks instead of one; float addition is not associative. The bound is what that rounding
//   can grow to over the run (`bound`, `zooBound`), relative to a value's size (or to 0.01
//   for smaller values): 1e-5 with SGD, 1e-2 with Adam, which magnifies it.
import Foundation
import StrataModels
import StrataNN
import StrataStore
import StrataTestSupport
import StrataTraining
import Testing
#if canImport(Glibc)
import Glibc
#endif

enum MPIRun {
    /// mpirun starting `strata ARGUMENTS` on `ranks` ranks, with `environment` passed to them.
    static func start(ranks: Int, _ arguments: [String], environment: [String: String] = [:]) throws -> ChildProcess {
        // Root needs --allow-run-as-root; --oversubscribe lets more ranks than cores run.
        try ChildProcess("/usr/bin/mpirun", ["--allow-run-as-root", "--oversubscribe", "-np", "\(ranks)"]
                            + environment.keys.sorted().flatMap { ["-x", $0] } + [StrataCommand.path] + arguments,
                         environment: environment)
    }

    /// `strata ARGUMENTS` on `ranks` ranks of one mpirun, to its end.
    static func strata(ranks: Int, _ arguments: [String], environment: [String: String] = [:], timeout: Double = 300) throws -> StrataCommand.Result {
        let child = try start(ranks: ranks, arguments, environment: environment)
        let lines = child.readAll(timeout: timeout)
        return StrataCommand.Result(status: try child.wait(), lines: lines)
    }

    /// The processes whose parent is `pid` (mpirun's ranks are its children).
    static func children(of pid: pid_t) -> [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { entry -> pid_t? in
            guard let child = pid_t(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return nil }
            // After "pid (comm)": state, then the parent's pid.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 && pid_t(fields[1]) == pid ? child : nil
        }.sorted()
    }

    /// The trained state of every shard of the set at `directory`, as one store's. Without
    /// `generations`, the rows' change generations are left out (a re-sharded set's restart).
    static func capture(shards directory: String, generations: Bool = true) throws -> TrainedState {
        let shards = try #require(try ShardSet.shards(directory))
        let ranks = shards.count
        var merged = TrainedState()
        for r in 0..<ranks {
            let store = try TrainingKillResumeTests.openStore(shards[r])
            defer { try? store.close() }
            let s = try TrainedState.capture(store)
            if r == 0 {
                merged.generation = s.generation
                merged.payload = s.payload
            } else {
                #expect(s.generation == merged.generation, "shard \(r) is at checkpoint \(s.generation), shard 0 at \(merged.generation)")
                #expect(s.payload == merged.payload, "shard \(r)'s checkpoint payload (dense weights, step) differs from shard 0's")
            }
            var misplaced: [String] = [], doubled: [String] = []
            for (name, rows) in s.tables {
                let namespace = FeatureSchema.namespace(name)
                for (key, var row) in rows {
                    if !generations { row.changeGeneration = 0 }
                    if KeyOwner.rank(of: key, namespace: namespace, ranks: ranks) != r { misplaced.append("\(name) \(key)") }
                    if merged.tables[name, default: [:]].updateValue(row, forKey: key) != nil { doubled.append("\(name) \(key)") }
                }
            }
            #expect(misplaced.isEmpty, "shard \(r) holds \(misplaced.count) rows another shard owns, such as \(misplaced.prefix(3))")
            #expect(doubled.isEmpty, "\(doubled.count) rows of shard \(r) are in another shard too, such as \(doubled.prefix(3))")
        }
        return merged
    }
}

@Suite(.serialized) struct ClusterTests {
    static let steps = 40

    /// DLRM on synthetic Criteo, with Adam both dense and sparse and weight decay, so that the
    /// optimizer state and the owner's decay are compared too.
    static func arguments(_ store: String, batch: Int, optimizer: String = "adam", steps: Int = steps, extra: [String] = []) -> [String] {
        ["train", "--data", "synthetic:criteo", "--store", store] + StrataCommand.tinyModel
            + ["--batch-size", "\(batch)", "--steps", "\(steps)", "--eval-samples", "500", "--synthetic-keys", "3000",
               "--optimizer", optimizer, "--learning-rate", optimizer == "adam" ? "0.01" : "0.1", "--weight-decay", "0.001",
               "--threads", "1", "--lookahead", "2", "--seed", "5"] + extra
    }

    /// How far N ranks may be from one process after `steps` steps, relative to a value's
    /// size (or to 0.01 for smaller values). SGD carries the rounding through linearly; Adam's
    /// first steps move a weight by ±lr whatever its gradient's size, so a gradient summed from
    /// nearly cancelling parts, whose last bits differ, moves it differently (measured: 4.7e-7
    /// with SGD, 9.9e-4 with Adam).
    static let bound: [String: Float] = ["sgd": 1e-5, "adam": 1e-2]

    /// Largest differences of values and optimizer state between two runs with the same keys.
    static func distance(_ a: TrainedState, _ b: TrainedState) -> (values: Float, state: Float, other: [String]) {
        var worst: Float = 0, worstState: Float = 0
        var other: [String] = []
        func scaled(_ x: Float, _ y: Float) -> Float {
            let d = abs(x - y) / max(abs(x), abs(y), 1e-2)
            return d
        }
        for (name, rows) in a.tables {
            let theirs = b.tables[name] ?? [:]
            if Set(rows.keys) != Set(theirs.keys) { other.append("table \(name): the key sets differ (\(rows.count) vs \(theirs.count))") }
            for (key, row) in rows {
                guard let t = theirs[key] else { continue }
                if row.updateCount != t.updateCount { other.append("table \(name) key \(key): \(row.updateCount) updates vs \(t.updateCount)") }
                for (x, y) in zip(row.values, t.values) { worst = max(worst, scaled(Float(bitPattern: x), Float(bitPattern: y))) }
                for (x, y) in zip(row.state, t.state) { worstState = max(worstState, scaled(Float(bitPattern: x), Float(bitPattern: y))) }
            }
        }
        if let x = TrainerPayload(a.payload)?.tensors, let y = TrainerPayload(b.payload)?.tensors {
            for (p, q) in zip(x, y) {
                for (u, v) in zip(p.bits[0], q.bits[0]) { worst = max(worst, scaled(Float(bitPattern: u), Float(bitPattern: v))) }
                for (u, v) in zip(p.bits[1], q.bits[1]) { worstState = max(worstState, scaled(Float(bitPattern: u), Float(bitPattern: v))) }
            }
        } else {
            other.append("a checkpoint payload does not parse")
        }
        if a.generation != b.generation { other.append("checkpoint \(a.generation) vs \(b.generation)") }
        return (worst, worstState, other)
    }

    @Test(arguments: ["sgd", "adam"])
    func ranksTrainTheModelOfOneProcessWithTheGlobalBatch(_ optimizer: String) throws {
        let directory = temporaryDirectory("strata-cluster")
        defer { removeDirectory(directory) }
        let one = try StrataCommand.run(Self.arguments(directory + "/one", batch: 128, optimizer: optimizer), timeout: 300)
        try #require(one.status == 0, "\(one.output)")
        let reference = try TrainedState.capture(try TrainingKillResumeTests.openStore(directory + "/one"))

        for ranks in [2, 4] {
            let run = try MPIRun.strata(ranks: ranks, Self.arguments(directory + "/n\(ranks)", batch: 128 / ranks, optimizer: optimizer))
            try #require(run.status == 0, "\(ranks) ranks: \(run.output)")
            let sharded = try MPIRun.capture(shards: directory + "/n\(ranks)")
            let d = Self.distance(sharded, reference)
            print("\(optimizer), \(ranks) ranks against one process: largest relative difference \(d.values) in values, \(d.state) in optimizer state")
            #expect(d.other.isEmpty, "\(ranks) ranks: \(d.other.prefix(5))")
            let bound = Self.bound[optimizer]!
            #expect(d.values <= bound && d.state <= bound, "\(ranks) ranks: values differ by up to \(d.values), state by \(d.state)")
            #expect(sharded.rowCount == reference.rowCount)
            #expect(sharded.rowCount > 1_000)

            if ranks == 2 && optimizer == "adam" {
                // The same run again: the same bits, whatever the timing of its messages.
                let again = try MPIRun.strata(ranks: 2, Self.arguments(directory + "/again", batch: 64, optimizer: optimizer))
                try #require(again.status == 0, "\(again.output)")
                let repeated = try MPIRun.capture(shards: directory + "/again")
                let differences = repeated.differences(from: sharded)
                #expect(differences.isEmpty, "two runs on 2 ranks differ: \(differences)")
            }
        }
        if optimizer == "sgd" {
            // One rank under mpirun sums as one process does: the same bits as the plain run.
            let single = try MPIRun.strata(ranks: 1, Self.arguments(directory + "/n1", batch: 128, optimizer: optimizer))
            try #require(single.status == 0, "\(single.output)")
            let differences = try MPIRun.capture(shards: directory + "/n1").differences(from: reference)
            #expect(differences.isEmpty, "one rank under mpirun differs from one process: \(differences)")
        }
    }

    /// A rank killed (SIGKILL) at each point of a checkpoint's two phases, and in the middle of
    /// a run, then the run resumed with --resume each time: it ends with the bits of a run
    /// never interrupted. The resumes start where the protocol says: an undecided checkpoint
    /// counts once rank 0 has kept it, and not before.
    @Test func aRankKilledAtAnyPointResumesToTheBitsOfAnUninterruptedRun() throws {
        let directory = temporaryDirectory("strata-cluster-kill")
        defer { removeDirectory(directory) }
        let steps = 80
        func arguments(_ store: String) -> [String] {
            Self.arguments(store, batch: 32, steps: steps, extra: ["--checkpoint-every", "10", "--eval-samples", "0",
                                                                  "--metrics", store + ".jsonl"])
        }
        let whole = try MPIRun.strata(ranks: 2, arguments(directory + "/U"))
        try #require(whole.status == 0, "\(whole.output)")

        let k = directory + "/K"
        // (which rank, where, and the step the next resume must start from)
        let kills: [(spec: String, resumeAt: Int)] = [
            ("1:transaction:2", 10),  // rank 1 in the middle of writing the checkpoint of step 20
            ("1:written:20", 10),     // rank 1 holds step 20 undecided; rank 0 never kept it
            ("0:kept:20", 20),        // rank 0 kept step 20 and died before rank 1 kept it
            ("0:written:30", 20),     // rank 0 holds step 30 undecided
            ("1:kept:30", 30),        // rank 1 died just after keeping it
        ]
        var log: [String] = []
        for (attempt, kill) in kills.enumerated() {
            let run = try MPIRun.strata(ranks: 2, arguments(k) + (attempt > 0 ? ["--resume"] : []),
                                        environment: ["STRATA_KILL_FOR_TESTING": kill.spec])
            log.append("\(kill.spec): status \(run.status)")
            #expect(run.status != 0, "the run with \(kill.spec) was not killed: \(run.output)")
            if attempt > 0 {
                let from = kills[attempt - 1].resumeAt
                #expect(run.output.contains("resumed at step \(from) "), "after \(kills[attempt - 1].spec): \(run.output)")
            }
        }
        // Killed mid-run from outside, at a random moment past a checkpoint.
        var rng = SplitMix64(seed: 2026_1207)
        let child = try MPIRun.start(ranks: 2, arguments(k) + ["--resume"])
        let deadline = ChildProcess.now() + 120
        while !TrainingKillResumeTests.checkpointSteps(k + ".jsonl").contains(50) && ChildProcess.now() < deadline {
            usleep(1_000)
        }
        usleep(useconds_t(rng.next() % 20_000))
        let ranks = MPIRun.children(of: child.pid)
        try #require(ranks.count == 2, "mpirun's ranks: \(ranks)")
        Glibc.kill(ranks[1], SIGKILL)
        let status = try child.wait()
        log.append("killed rank 1 (pid \(ranks[1])) mid-run: status \(status)")

        let last = try MPIRun.strata(ranks: 2, arguments(k) + ["--resume"])
        #expect([50, 60, 70].contains { last.output.contains("resumed at step \($0) ") }, "\(last.output)")
        try #require(last.status == 0, "final resume: \(last.output)\n\(log.joined(separator: "\n"))")
        let differences = try MPIRun.capture(shards: k).differences(from: try MPIRun.capture(shards: directory + "/U"))
        #expect(differences.isEmpty, "killed and resumed differs from uninterrupted: \(differences)\n\(log.joined(separator: "\n"))")
    }
}

extension ClusterTests {
    /// A run on 4 ranks resumed on 2, then on 3: each time every row moves to its new owner
    /// with its values, optimizer state and update count, none lost or doubled, and the
    /// dense weights and trainer state (the checkpoint payload) come along.
    @Test func reshardingFourToTwoToThreeMovesEveryRowWithItsState() throws {
        let directory = temporaryDirectory("strata-cluster-reshard")
        defer { removeDirectory(directory) }
        let set = directory + "/set"
        let trained = try MPIRun.strata(ranks: 4, Self.arguments(set, batch: 16))
        try #require(trained.status == 0, "\(trained.output)")
        let four = try MPIRun.capture(shards: set, generations: false)
        #expect(four.rowCount > 1_000)
        // Killed once the new shards are written, before the switch: the set is the old one.
        let before = try MPIRun.strata(ranks: 2, Self.arguments(set, batch: 16) + ["--resume"],
                                       environment: ["STRATA_KILL_FOR_TESTING": "1:resharded:0"])
        #expect(before.status != 0, "\(before.output)")
        #expect(try ShardSet.ranks(set) == 4)
        // Killed just after the switch, before the old shards are removed: the set is the new
        // one, and the next open removes the old folder.
        let after = try MPIRun.strata(ranks: 2, Self.arguments(set, batch: 16) + ["--resume"],
                                      environment: ["STRATA_KILL_FOR_TESTING": "0:switched:0"])
        #expect(after.status != 0, "\(after.output)")
        #expect(try ShardSet.ranks(set) == 2)
        for ranks in [2, 3] {
            // The run is finished: the resume only re-shards and evaluates.
            let run = try MPIRun.strata(ranks: ranks, Self.arguments(set, batch: 16) + ["--resume"])
            try #require(run.status == 0, "\(ranks) ranks: \(run.output)")
            #expect(run.output.contains("the run is complete"), "\(run.output)")
            #expect(try ShardSet.ranks(set) == ranks)
            let entries = try FileManager.default.contentsOfDirectory(atPath: set).sorted()
            #expect(entries == ["\(ranks)-shards", ShardSet.manifestName], "the old set's folder is left: \(entries)")
            let moved = try MPIRun.capture(shards: set, generations: false)
            var expected = four
            expected.generation = 1  // the new shards' first checkpoint
            let differences = moved.differences(from: expected)
            #expect(differences.isEmpty, "after re-sharding to \(ranks): \(differences)")
        }
    }

    /// What a shard set refuses, naming the way out: a directory that holds other things, a
    /// set of another size without --resume, and an ordinary store.
    @Test func shardSetsRefuseWhatTheyCannotUse() throws {
        let directory = temporaryDirectory("strata-cluster-refusals")
        defer { removeDirectory(directory) }
        let other = directory + "/other"
        try FileManager.default.createDirectory(atPath: other, withIntermediateDirectories: true)
        try Data("mine".utf8).write(to: URL(fileURLWithPath: other + "/notes.txt"))
        let refused = try MPIRun.strata(ranks: 2, Self.arguments(other, batch: 16, steps: 2))
        #expect(refused.status != 0)
        #expect(refused.output.contains("is not a set of shards"), "\(refused.output)")
        #expect(try String(contentsOfFile: other + "/notes.txt", encoding: .utf8) == "mine")

        let set = directory + "/set"
        let made = try MPIRun.strata(ranks: 2, Self.arguments(set, batch: 16, steps: 2))
        try #require(made.status == 0, "\(made.output)")
        let resized = try MPIRun.strata(ranks: 3, Self.arguments(set, batch: 16, steps: 2))
        #expect(resized.status != 0)
        #expect(resized.output.contains("holds a set of 2 shards, not 3: --resume moves its rows to 3 ranks"), "\(resized.output)")

        // An ordinary store is not a shard set, and a shard set is not a store.
        let plain = try StrataCommand.run(Self.arguments(directory + "/plain", batch: 16, steps: 2))
        try #require(plain.status == 0, "\(plain.output)")
        let asSet = try MPIRun.strata(ranks: 2, Self.arguments(directory + "/plain", batch: 16, steps: 2) + ["--resume"])
        #expect(asSet.output.contains("is not a set of shards"), "\(asSet.output)")
        let asStore = try StrataCommand.run(Self.arguments(set, batch: 16, steps: 2) + ["--resume"])
        #expect(asStore.status != 0, "\(asStore.output)")
    }
}

extension ClusterTests {
    /// info, get, export and verify read a whole shard set; verify finds rows in a shard that
    /// does not own them; one shard reads as any store.
    @Test func theToolsReadAShardSetAsAWhole() throws {
        let directory = temporaryDirectory("strata-cluster-tools")
        defer { removeDirectory(directory) }
        let set = directory + "/set"
        let trained = try MPIRun.strata(ranks: 2, Self.arguments(set, batch: 32, steps: 10))
        try #require(trained.status == 0, "\(trained.output)")
        let state = try MPIRun.capture(shards: set)
        let rows = try #require(state.tables["c3"])

        let info = try StrataCommand.run(["info", set, "--json"])
        try #require(info.status == 0, "\(info.output)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(info.output.utf8)) as? [String: Any])
        #expect((object["shards"] as? [Any])?.count == 2)

        let verify = try StrataCommand.run(["verify", set])
        #expect(verify.status == 0 && verify.output.contains("in 2 shards, each row in its owner's"), "\(verify.output)")

        let key = try #require(rows.keys.sorted().first)
        let get = try StrataCommand.run(["get", set, "c3", "\(key)", "--json"])
        try #require(get.status == 0, "\(get.output)")
        let row = try #require(try JSONSerialization.jsonObject(with: Data(get.output.utf8)) as? [String: Any])
        let values = try #require(row["values"] as? [Double])
        let stored = rows[key]!.values.map { Double(Float(bitPattern: $0)) }
        #expect(values.count == stored.count && zip(values, stored).allSatisfy { abs($0 - $1) <= 1e-6 * max(1, abs($1)) },
                "\(get.output) vs \(stored)")

        let out = directory + "/c3"
        let export = try StrataCommand.run(["export", set, "c3", "--format", "npy", "--out", out, "--json"])
        try #require(export.status == 0, "\(export.output)")
        let exported = try #require(try JSONSerialization.jsonObject(with: Data(export.output.utf8)) as? [String: Any])
        #expect(exported["rows"] as? Int == rows.count && exported["shards"] as? Int == 2, "\(export.output)")

        // One shard is an ordinary store.
        let one = try StrataCommand.run(["verify", ShardSet.shardPath(set, rank: 1, of: 2)])
        #expect(one.status == 0, "\(one.output)")

        // Shards swapped: every row is where its owner is not.
        let a = ShardSet.shardPath(set, rank: 0, of: 2), b = ShardSet.shardPath(set, rank: 1, of: 2)
        try FileManager.default.moveItem(atPath: a, toPath: a + ".x")
        try FileManager.default.moveItem(atPath: b, toPath: a)
        try FileManager.default.moveItem(atPath: a + ".x", toPath: b)
        let swapped = try StrataCommand.run(["verify", set])
        #expect(swapped.status != 0 && swapped.output.contains("and its owner is shard"), "\(swapped.output)")
    }
}

extension ClusterTests {
    /// Every model of the zoo trains on 2 ranks (MovieLens-100K, each rank half of the zoo
    /// tests' batch) as one process trains it on the whole batch: the same keys and update
    /// counts, values and optimizer state within `zooBound` (the reason for a bound is at the
    /// top of this file), and a shard set that verifies. Dropout, the Cloze masks and the
    /// sampled softmax's candidates are drawn by the whole batch's rows. SGD on both sides:
    /// Adam's first steps move a weight by ±lr whatever its gradient's size, so a gradient that
    /// sums to nearly 0 can change sign with its last bit (measured with Adam: 2.4e-2 for
    /// SASRec, 2.0 for the item tower, 6.3e-4 at most for the others).
    @Test(arguments: ZooCase.all)
    func everyZooModelOnTwoRanksTrainsAsOneProcess(_ c: ZooCase) throws {
        let directory = temporaryDirectory("strata-cluster-zoo")
        defer { removeDirectory(directory) }
        let extra = ["--threads", "1", "--lookahead", "2", "--optimizer", "sgd", "--sparse-optimizer", "sgd"]
        let one = try StrataCommand.run(c.arguments(store: directory + "/one", steps: 20, checkpointEvery: 10) + extra)
        try #require(one.status == 0, "\(c.testDescription): \(one.output)")
        var arguments = c.arguments(store: directory + "/set", steps: 20, checkpointEvery: 10) + extra
        let at = try #require(arguments.firstIndex(of: "--batch-size"))
        arguments[at + 1] = "\(ZooCase.batchSize / 2)"
        let run = try MPIRun.strata(ranks: 2, arguments)
        try #require(run.status == 0, "\(c.testDescription): \(run.output)")
        let verify = try StrataCommand.run(["verify", directory + "/set"])
        #expect(verify.status == 0, "\(c.testDescription): \(verify.output)")
        let sharded = try MPIRun.capture(shards: directory + "/set")
        let d = Self.distance(sharded, try TrainedState.capture(try TrainingKillResumeTests.openStore(directory + "/one")))
        print("\(c.testDescription), 2 ranks against one process: largest relative difference \(d.values) in values, \(d.state) in optimizer state")
        #expect(d.other.isEmpty, "\(c.testDescription): \(d.other.prefix(5))")
        #expect(d.values <= Self.zooBound && d.state <= Self.zooBound, "\(c.testDescription): values differ by up to \(d.values), state by \(d.state)")
        #expect(sharded.rowCount > 100)
    }

    static let zooBound: Float = 1e-5
}

/// The parts of a run over several processes that need no MPI.
@Suite struct ClusterPartsTests {
    /// Owners are stable (these values are what every build must give: a change would move
    /// every saved shard's rows to ranks that do not hold them), spread evenly, and going from
    /// n to n + 1 ranks moves keys only to the new rank.
    @Test func keyOwnersAreStableBalancedAndMoveLittle() {
        let namespace = FeatureSchema.namespace("c1")
        #expect((0..<8).map { KeyOwner.rank(of: UInt64($0), namespace: namespace, ranks: 4) } == [2, 0, 3, 0, 2, 3, 3, 3])
        #expect(KeyOwner.rank(of: 0xDEAD_BEEF, namespace: FeatureSchema.namespace("item"), ranks: 16) == 15)
        let keys = (0..<40_000).map { UInt64($0) &* 0x9E37_79B9_7F4A_7C15 }
        for ranks in 1...6 {
            var counts = [Int](repeating: 0, count: ranks)
            for key in keys { counts[KeyOwner.rank(of: key, namespace: namespace, ranks: ranks)] += 1 }
            let expected = Double(keys.count) / Double(ranks)
            #expect(counts.allSatisfy { abs(Double($0) - expected) < 0.05 * expected }, "\(ranks) ranks: \(counts)")
            guard ranks > 1 else { continue }
            var moved = 0
            for key in keys {
                let before = KeyOwner.rank(of: key, namespace: namespace, ranks: ranks - 1)
                let after = KeyOwner.rank(of: key, namespace: namespace, ranks: ranks)
                if before != after {
                    moved += 1
                    #expect(after == ranks - 1, "key \(key) moved from rank \(before) to \(after), not to the new rank")
                }
            }
            #expect(abs(Double(moved) - Double(keys.count) / Double(ranks)) < 0.05 * Double(keys.count) / Double(ranks))
        }
        // The same key in another table has its own owner.
        let other = FeatureSchema.namespace("c2")
        #expect(keys.prefix(1000).contains { KeyOwner.rank(of: $0, namespace: namespace, ranks: 4) != KeyOwner.rank(of: $0, namespace: other, ranks: 4) })
    }

    /// A rank's part of a global batch: whole groups, labels, dense values, single keys and
    /// bags with their offsets all moved together, in order.
    @Test func aBatchKeepsItsPartInOrder() throws {
        let schema = FeatureSchema(dense: [.init("d0"), .init("d1")],
                                   categorical: [.init("a", table: "a"), .init("b", table: "b", multiValued: true), .init("c", table: "c")],
                                   labels: [.init("y", kind: .binary)])
        let batch = Batch(schema: schema)
        let n = 9
        let labels = (0..<n).map { Float($0) }
        let dense = (0..<(2 * n)).map { Float(100 + $0) }
        let single = (0..<n).map { [UInt64(1000 + $0)] }
        let bags = (0..<n).map { r in (0..<(r % 3)).map { UInt64(2000 + 10 * r + $0) } }
        let other = (0..<n).map { [UInt64(3000 + $0)] }
        // Groups of 3 (a positive and two negatives), parts of whole groups.
        for (first, end) in [(0, 9), (3, 6), (6, 9), (0, 3), (3, 9), (3, 3)] {
            batch.set(rows: n, labels: labels, dense: dense, keys: [single, bags, other], groupSize: 3)
            batch.keep(first..<end)
            #expect(batch.count == end - first && batch.groupSize == 3)
            for r in 0..<batch.count {
                #expect(batch.labels[r] == labels[first + r])
                #expect(batch.dense[2 * r] == dense[2 * (first + r)] && batch.dense[2 * r + 1] == dense[2 * (first + r) + 1])
                #expect(Array(batch.keys(of: 0, row: r)) == single[first + r])
                #expect(Array(batch.keys(of: 1, row: r)) == bags[first + r], "rows \(first)..<\(end), row \(r)")
                #expect(Array(batch.keys(of: 2, row: r)) == other[first + r], "rows \(first)..<\(end), row \(r)")
            }
            #expect(Array(batch.keys(of: 2).keys) == other[first..<end].map { $0[0] })
            let all = batch.keys(of: 1)
            #expect(all.offsets?.first == 0 && Int(all.offsets!.last!) == all.keys.count)
        }
    }

    /// A process's rows of a batch draw the dropout masks those rows draw in the whole batch.
    @Test func dropoutDrawsByTheWholeBatchsRows() {
        let width = 7, rows = 10
        let whole = DropoutMask(rate: 0.4, pass: Pass(training: true, step: 3, seed: 5, node: 2, rows: rows), stream: 1, count: rows * width)
        for (first, count) in [(0, 4), (4, 3), (7, 3)] {
            let part = DropoutMask(rate: 0.4, pass: Pass(training: true, step: 3, seed: 5, node: 2, firstRow: first, rows: count),
                                   stream: 1, count: count * width)
            #expect((0..<(count * width)).map(part.kept) == ((first * width)..<((first + count) * width)).map(whole.kept))
        }
        // Not the same as a batch of its own: the rows are the whole batch's.
        let own = DropoutMask(rate: 0.4, pass: Pass(training: true, step: 3, seed: 5, node: 2, rows: 3), stream: 1, count: 3 * width)
        let part = DropoutMask(rate: 0.4, pass: Pass(training: true, step: 3, seed: 5, node: 2, firstRow: 7, rows: 3), stream: 1, count: 3 * width)
        #expect((0..<(3 * width)).map(own.kept) != (0..<(3 * width)).map(part.kept))
    }

    /// A loss over one process's rows, divided by the whole batch's count: the shares of two
    /// halves add up to the whole batch's loss and gradient.
    @Test(arguments: [Loss.binaryCrossEntropy, .meanSquaredError])
    func lossSharesAddUpToTheWholeBatch(_ loss: Loss) {
        var rng = SplitMix64(seed: 11)
        let n = 10
        let predictions = Tensor(rows: n, columns: 1), labels = (0..<n).map { _ in Float(rng.next() % 2) }
        for i in 0..<n { predictions.data[i] = Float(Int(rng.next() % 200) - 100) / 50 }
        let whole = Tensor(rows: 0, columns: 1)
        let total = labels.withUnsafeBufferPointer { loss.evaluate(predictions, labels: .column($0.baseAddress!, stride: 1), gradient: whole) }
        var sum = 0.0
        for half in [0..<4, 4..<n] {
            let part = Tensor(rows: half.count, columns: 1), gradient = Tensor(rows: 0, columns: 1)
            for (j, i) in half.enumerated() { part.data[j] = predictions.data[i] }
            sum += labels.withUnsafeBufferPointer {
                loss.evaluate(part, labels: .column($0.baseAddress! + half.lowerBound, stride: 1), meanOver: n, gradient: gradient)
            }
            for (j, i) in half.enumerated() { #expect(gradient.data[j] == whole.data[i], "row \(i)") }
        }
        #expect(abs(sum - total) < 1e-12 * max(1, abs(total)))
    }
}
