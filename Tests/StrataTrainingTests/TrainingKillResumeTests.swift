// "Another kills training mid-run (SIGKILL), resumes, and gets the weights of an
// uninterrupted run": `strata train` runs once uninterrupted into store U, then into store K
// where it is killed with SIGKILL again and again (at random moments, and just after a
// checkpoint lands) and resumed with --resume each time, until it finishes. U and K must end
// with the same checkpoint payload (trainer state and dense weights with their optimizer
// state) and the same rows, bit for bit.
//
// The kills aimed at a checkpoint watch the --metrics file, which gets one line per event as
// it happens: the command's standard output is block-buffered when it is a pipe, so its
// "checkpoint" lines only arrive when the process exits.
import Foundation
import StrataStore
import StrataTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite struct TrainingKillResumeTests {
    /// STRATA_TRAIN_KILLS sets the number of kills (default 6).
    static var kills: Int { Int(getenv("STRATA_TRAIN_KILLS").map { String(cString: $0) } ?? "") ?? 6 }

    /// Enough steps for every kill to land mid-run.
    static var steps: Int { max(300, (kills * 50 + 19) / 20 * 20) }
    static let checkpointEvery = 20

    /// Dense Adam (its bias correction needs the step) and sparse Adam (per-row step counts).
    static func arguments(_ store: String, _ metrics: String) -> [String] {
        ["train", "--data", "synthetic:criteo", "--store", store, "--metrics", metrics]
            + StrataCommand.tinyModel
            + ["--batch-size", "32", "--steps", "\(steps)", "--eval-samples", "0", "--lookahead", "2",
               "--synthetic-keys", "20000", "--checkpoint-every", "\(checkpointEvery)",
               "--optimizer", "adam", "--learning-rate", "0.01", "--sparse-optimizer", "adam",
               "--hot-mb", "1", "--warm-mb", "1", "--seed", "3"]
    }

    /// Steps of the checkpoints the metrics file records so far.
    static func checkpointSteps(_ metrics: String) -> [Int] {
        guard let text = try? String(contentsOfFile: metrics, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
                  object["event"] as? String == "checkpoint" else { return nil }
            return object["step"] as? Int
        }
    }

    static func openStore(_ path: String) throws -> Store {
        var options = Store.Options()
        options.create = false
        options.budget = TierBudget(hotBytes: 1 << 20, warmBytes: 0)
        return try Store(path: path, options: options)
    }

    @Test func killedRunsResumeToTheWeightsOfAnUninterruptedRun() throws {
        let (a, _) = try Self.killAndResume(kills: Self.kills, steps: Self.steps, checkpointEvery: Self.checkpointEvery,
                                            arguments: Self.arguments)
        #expect(a.rowCount > 5_000, "U holds only \(a.rowCount) rows")
        #expect(a.tables.count == 26)
    }

    /// Every model of the zoo on MovieLens-100K, killed three times.
    @Test(arguments: ZooCase.all)
    func zooModelsResumeToTheWeightsOfAnUninterruptedRun(_ c: ZooCase) throws {
        let steps = 160, every = 20
        let (a, _) = try Self.killAndResume(kills: 3, steps: steps, checkpointEvery: every) { store, metrics in
            c.arguments(store: store, steps: steps, checkpointEvery: every) + ["--metrics", metrics, "--lookahead", "2",
                                                                               "--hot-mb", "0.05", "--warm-mb", "0.05"]
        }
        #expect(a.rowCount > 500, "\(c.testDescription): U holds only \(a.rowCount) rows")
    }

    /// Runs `arguments` uninterrupted into store U, then into store K killed `kills` times and
    /// resumed until it finishes; expects U and K bit-identical and returns what they hold.
    static func killAndResume(kills: Int, steps: Int, checkpointEvery: Int,
                              arguments: (_ store: String, _ metrics: String) -> [String]) throws -> (TrainedState, TrainedState) {
        let directory = temporaryDirectory("strata-train-kill")
        defer { removeDirectory(directory) }
        let u = directory + "/U", k = directory + "/K"

        // The uninterrupted run.
        let started = ChildProcess.now()
        let whole = try StrataCommand.run(arguments(u, directory + "/U.jsonl"))
        let duration = ChildProcess.now() - started
        try #require(whole.status == 0, "uninterrupted run failed: \(whole.output)")
        #expect(whole.lines.last?.hasPrefix("trained \(steps) steps") == true, "\(whole.lines.suffix(2))")

        // The run killed again and again.
        var rng = SplitMix64(seed: 2026_1130)
        var attempt = 0, killedMidRun = 0, finished = false
        var lastCheckpoint = 0  // the step of K's newest checkpoint, as its metrics files tell
        var log: [String] = []
        // A run can go faster than the uninterrupted one did and finish, or write its last
        // checkpoint, before a kill lands; then K starts over, with kills aimed three times earlier.
        var reach = 1.0, restarts = 0
        while attempt < kills && !finished {
            let metrics = directory + "/K-\(restarts)-\(attempt).jsonl"
            let child = try ChildProcess(StrataCommand.path, arguments(k, metrics) + (attempt > 0 ? ["--resume"] : []))
            let remaining = (steps - lastCheckpoint) / checkpointEvery  // checkpoints still to come
            var how: String
            if attempt % 2 == 1 && remaining >= 2 {
                // Just after the n-th checkpoint of this attempt lands (never the last one).
                let n = 1 + Int(rng.next() % UInt64(min(3, remaining - 1)))
                let deadline = ChildProcess.now() + 60
                while Self.checkpointSteps(metrics).count < n && ChildProcess.now() < deadline { usleep(1_000) }
                usleep(useconds_t(rng.next() % 3_000))
                how = "after checkpoint \(n) of the attempt"
            } else {
                // Anywhere: in a step, a look-ahead lookup, a spill, a checkpoint, or start-up.
                // Start-up and up to about 120 steps.
                let perStep = duration / Double(steps)
                let ms = 20 + rng.next() % UInt64(150 + 120 * perStep * 1000 * reach)
                usleep(useconds_t(ms * 1000))
                how = "after \(ms) ms"
            }
            child.kill()
            let status = try child.wait()
            let lines = child.readAll(timeout: 10)
            let checkpoints = Self.checkpointSteps(metrics)
            if let last = checkpoints.last { lastCheckpoint = last }
            log.append("attempt \(attempt): killed \(how), status \(status), checkpoints at \(checkpoints)")
            if (status == 0 || lastCheckpoint >= steps) && killedMidRun < kills / 2 && restarts < 3 {
                log.append("finished before enough kills landed; K starts over")
                removeDirectory(k)
                reach /= 3
                restarts += 1
                attempt = 0
                killedMidRun = 0
                lastCheckpoint = 0
                continue
            } else if status == 0 {
                finished = true
            } else {
                try #require(status == 128 + SIGKILL, "attempt \(attempt) failed by itself (status \(status)): \(lines.suffix(5))")
                if lastCheckpoint < steps { killedMidRun += 1 }
            }
            attempt += 1
        }
        if !finished {
            let last = try StrataCommand.run(arguments(k, directory + "/K-last.jsonl") + ["--resume"])
            try #require(last.status == 0, "final resume failed: \(last.output)\n\(log.joined(separator: "\n"))")
            #expect(last.lines.last?.hasPrefix("trained \(steps) steps") == true, "\(last.lines.suffix(2))")
            if lastCheckpoint > 0 {
                // A kill between a checkpoint's commit and its metrics line leaves the store one
                // checkpoint ahead of what the metrics say.
                let resumed = last.lines.first { $0.hasPrefix("resumed at step ") }
                    .flatMap { Int($0.split(separator: " ")[3]) }
                #expect(resumed.map { $0 >= lastCheckpoint } == true,
                        "final resume did not start from step \(lastCheckpoint) or later: \(last.lines.prefix(2))")
            }
            log.append("final resume from step \(lastCheckpoint): checkpoints at \(Self.checkpointSteps(directory + "/K-last.jsonl"))")
        }
        print("train kill test: \(log.joined(separator: "; "))")
        #expect(killedMidRun >= kills / 2, "too few kills landed mid-run: \(log)")

        // Compare U and K, bit for bit.
        let su = try Self.openStore(u), sk = try Self.openStore(k)
        defer {
            try? su.close()
            try? sk.close()
        }
        let a = try TrainedState.capture(su), b = try TrainedState.capture(sk)
        let header = TrainerPayload(b.payload)?.header
        #expect(header?["step"] as? Int == steps, "K's last checkpoint is not at the end: \(String(describing: header))")
        let diff = b.differences(from: a), same = diff.isEmpty
        #expect(same, "killed and resumed run differs from the uninterrupted one:\n\(diff.joined(separator: "\n"))\n\(log.joined(separator: "\n"))")
        return (a, b)
    }
}
