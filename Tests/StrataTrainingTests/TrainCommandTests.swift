// `strata train`'s error handling, run as a child process: malformed Criteo lines (stop names
// the file and line, skip leaves them out and counts them), data that does not fit the model,
// data that yields no sample, impossible budgets, unknown or invalid options, and resumes
// with other options. Every refusal must be an "Error: ..." line saying what is wrong and an
// exit status that is not 0 and not a crash (a signal: 128 + n).
import Foundation
import StrataModels
import StrataStore
import StrataTestSupport
import StrataTraining
import Testing

private typealias Command = StrataCommand

/// A fresh store directory and a data file, removed afterwards.
private struct Scratch: ~Copyable {
    let directory = temporaryDirectory("strata-train-cli")
    var store: String { directory + "/store" }

    /// Writes `lines` (each followed by a newline) to a file in the directory.
    func file(_ lines: [String], name: String = "data.tsv") -> String {
        let path = directory + "/" + name
        let text = lines.map { $0 + "\n" }.joined()
        precondition(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)))
        return path
    }

    deinit { removeDirectory(directory) }
}

/// `count` good Criteo lines.
private func goodLines(_ count: Int, seed: UInt64 = 1) -> [String] {
    var rng = SplitMix64(seed: seed)
    return (0..<count).map { _ in Command.criteoLine(&rng) }
}

/// Expects a refusal: a clean non-zero exit with an error line holding every fragment.
private func expectRefusal(_ result: StrataCommand.Result, mentioning fragments: [String], _ what: String,
                           sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(result.status != -1, "\(what): still running after the timeout (killed): \(result.lines.suffix(3))",
            sourceLocation: sourceLocation)
    #expect(result.status != 0, "\(what): exit status 0: \(result.lines.suffix(3))", sourceLocation: sourceLocation)
    #expect(result.status < 128, "\(what): crashed (status \(result.status)) instead of an error: \(result.lines.prefix(3))",
            sourceLocation: sourceLocation)
    let error = result.error ?? ""
    #expect(!error.isEmpty, "\(what): no 'Error:' line: \(result.lines.prefix(4))", sourceLocation: sourceLocation)
    for f in fragments {
        #expect(error.localizedCaseInsensitiveContains(f), "\(what): error does not mention '\(f)': \(error)",
                sourceLocation: sourceLocation)
    }
}

/// The `--json` summary line.
private func summary(_ result: StrataCommand.Result) -> [String: Any]? {
    result.lines.reversed().lazy.compactMap { line in
        (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
    }.first
}

@Suite struct TrainCommandTests {
    static func criteoArguments(_ path: String, store: String) -> [String] {
        ["train", "--data", "criteo:" + path, "--store", store, "--eval-samples", "0", "--batch-size", "4"] + Command.tinyModel
    }

    static func syntheticArguments(store: String) -> [String] {
        ["train", "--data", "synthetic:criteo", "--store", store, "--eval-samples", "0", "--batch-size", "16",
         "--steps", "3", "--synthetic-keys", "1000"] + Command.tinyModel
    }

    // MARK: Malformed lines

    @Test(arguments: [0, 2])
    func malformedLineStopsWithTheFileAndLineNumber(lookahead: Int) throws {
        let scratch = Scratch()
        var lines = goodLines(20)
        lines.insert("1\t2\t3", at: 4)  // line 5
        let path = scratch.file(lines)
        let result = try Command.run(Self.criteoArguments(path, store: scratch.store) + ["--lookahead", "\(lookahead)"])
        expectRefusal(result, mentioning: ["\(path):5:", "malformed", "3 fields, expected 40"], "--on-malformed stop")
        // stop is the default: the same without the flag.
        let explicit = try Command.run(Self.criteoArguments(path, store: scratch.store)
                                       + ["--lookahead", "\(lookahead)", "--on-malformed", "stop"])
        #expect(explicit.error == result.error)
    }

    @Test func malformedFieldIsNamed() throws {
        let scratch = Scratch()
        var lines = goodLines(10)
        var fields = lines[7].split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        fields[3] = "12x"  // integer column 3
        lines[7] = fields.joined(separator: "\t")
        let path = scratch.file(lines)
        let result = try Command.run(Self.criteoArguments(path, store: scratch.store))
        expectRefusal(result, mentioning: ["\(path):8:", "integer column 3", "'12x'"], "a bad integer")
    }

    @Test func skipModeLeavesMalformedLinesOut() throws {
        let scratch = Scratch()
        var lines = goodLines(20)
        lines.insert("1\t2\t3", at: 4)
        lines.insert("not a sample", at: 12)
        let path = scratch.file(lines)
        let result = try Command.run(Self.criteoArguments(path, store: scratch.store) + ["--on-malformed", "skip", "--json"])
        try #require(result.status == 0, "\(result.output)")
        let s = summary(result)
        // 20 good samples in batches of 4: 5 steps, the two bad lines are not samples.
        #expect(s?["samples"] as? Int == 20, "\(result.output)")
        #expect(s?["steps"] as? Int == 5, "\(result.output)")
    }

    /// "is skipped and counted": the count must reach the user.
    @Test(arguments: [false, true])
    func skipModeReportsHowManyLinesItSkipped(json: Bool) throws {
        let scratch = Scratch()
        var lines = goodLines(20)
        lines.insert("1\t2\t3", at: 4)
        lines.insert("not a sample", at: 12)
        let path = scratch.file(lines)
        let result = try Command.run(Self.criteoArguments(path, store: scratch.store)
                                     + ["--on-malformed", "skip"] + (json ? ["--json"] : []))
        try #require(result.status == 0, "\(result.output)")
        // Some line mentions skipped (or malformed) lines and the number 2.
        let reported = result.lines.contains { line in
            let l = line.lowercased()
            let numbers = l.split { !$0.isNumber }.map(String.init)
            return (l.contains("skip") || l.contains("malformed")) && numbers.contains("2")
        }
        #expect(reported, "the output does not say that 2 malformed lines were skipped:\n\(result.output)")
    }

    // MARK: Data that does not fit the model, or no data

    @Test func linesWithTheWrongNumberOfColumnsAreRefused() throws {
        let scratch = Scratch()
        // 13 integer and 16 categorical columns: not Criteo's 13 and 26.
        let lines = goodLines(12).map { $0.split(separator: "\t").prefix(30).joined(separator: "\t") }
        let path = scratch.file(lines)
        let result = try Command.run(Self.criteoArguments(path, store: scratch.store))
        expectRefusal(result, mentioning: ["\(path):1:", "30 fields, expected 40"], "30-column file")
    }

    /// With skip, a file none of whose lines fits the schema must not "train" on nothing
    /// and report success.
    @Test func aFileWithNoUsableLineIsAnErrorEvenWhenSkipping() throws {
        let scratch = Scratch()
        let lines = goodLines(12).map { $0.split(separator: "\t").prefix(30).joined(separator: "\t") }
        let path = scratch.file(lines)
        let result = try Command.run(Self.criteoArguments(path, store: scratch.store) + ["--on-malformed", "skip"],
                                     timeout: 20)
        expectRefusal(result, mentioning: [path], "30-column file with --on-malformed skip")
    }

    /// An empty file with --steps: every read ends the epoch at once.
    @Test(arguments: [0, 2])
    func emptyDataWithStepsEndsWithAnError(lookahead: Int) throws {
        let scratch = Scratch()
        let path = scratch.file([])
        let result = try Command.run(Self.criteoArguments(path, store: scratch.store)
                                     + ["--steps", "5", "--lookahead", "\(lookahead)"], timeout: 10)
        expectRefusal(result, mentioning: [path], "empty file with --steps 5")
    }

    @Test func modelAndDataMismatchInProcess() throws {
        let directory = temporaryDirectory("strata-train-mismatch")
        defer { removeDirectory(directory) }
        var storeOptions = Store.Options()
        storeOptions.initialMapBytes = 1 << 20
        storeOptions.budget = TierBudget(hotBytes: 1 << 16, warmBytes: 0)
        let store = try Store(path: directory, options: storeOptions)
        defer { try? store.close() }
        let data = SyntheticClicks(options: .init(samplesPerEpoch: 1000, largestKeySpace: 100))
        var options = TrainingOptions(model: ModelSpec(DLRM.self) { $0.embeddingDim = 4; $0.bottomMlp = [8]; $0.topMlp = [8] },
                                      schema: ClickSchema(dense: 13, sparse: 20).features, steps: 2)
        let resources = TrainingResources(budget: storeOptions.budget, lookahead: 0, threads: 1)
        do {
            _ = try Trainer(store: store, options: options, resources: resources, data: TrainingData(train: data), resume: false)
            Issue.record("a model of 20 categorical features accepted data with 26")
        } catch let error as TrainingError {
            let text = "\(error)"
            #expect(text.contains("26") && text.contains("20"), "\(text)")
        }
        // Evaluation data of another shape.
        options.schema = ClickSchema.criteo.features
        let other = SyntheticClicks(options: .init(schema: ClickSchema(dense: 13, sparse: 10), samplesPerEpoch: 100,
                                                   largestKeySpace: 100))
        #expect(throws: TrainingError.self) {
            _ = try Trainer(store: store, options: options, resources: resources,
                            data: TrainingData(train: data, validation: PointwiseEvaluator(other, split: "eval", kind: .click, label: 0)),
                            resume: false)
        }
    }

    // MARK: Options

    struct BadOption: CustomTestStringConvertible, Sendable {
        var arguments: [String]
        var fragments: [String]
        var testDescription: String { arguments.joined(separator: " ") }
    }

    /// Options the command itself rejects.
    static let refusedOptions: [BadOption] = [
        BadOption(arguments: ["--hot-mb", "0"], fragments: ["impossible memory budget", "hot budget of 0 bytes"]),
        BadOption(arguments: ["--optimizer", "rmsprop"], fragments: ["--optimizer", "rmsprop"]),
        BadOption(arguments: ["--sparse-optimizer", "rmsprop"], fragments: ["--sparse-optimizer", "rmsprop"]),
        BadOption(arguments: ["--model", "wide-and-shallow"], fragments: ["unknown model", "wide-and-shallow", "wide-deep"]),
        BadOption(arguments: ["--model", "wide-deep"], fragments: ["wide-deep", "bottom_mlp"]),
        BadOption(arguments: ["--data", "csv:/tmp/x"], fragments: ["criteo:PATH", "csv:/tmp/x"]),
        BadOption(arguments: ["--data", "criteo:/nonexistent/strata.tsv"], fragments: ["/nonexistent/strata.tsv", "open"]),
        BadOption(arguments: ["--eval-data", "criteo:/nonexistent/eval.tsv"], fragments: ["/nonexistent/eval.tsv"]),
        BadOption(arguments: ["--bottom-mlp", "8-x"], fragments: ["--bottom-mlp", "8-x"]),
        BadOption(arguments: ["--top-mlp", "0"], fragments: ["--top-mlp"]),
        BadOption(arguments: ["--embedding-dim", "0"], fragments: ["--embedding-dim must be between 1 and 65536, not 0"]),
        BadOption(arguments: ["--synthetic-key-spaces", "zipf"], fragments: ["--synthetic-key-spaces", "zipf"]),
        BadOption(arguments: ["--hot-mb", "100000000"], fragments: ["impossible memory budget"]),
        BadOption(arguments: ["--batch-size", "4611686018427387904"], fragments: ["--batch-size", "1048576"]),
        BadOption(arguments: ["--batch-size", "600000", "--negatives", "1"], fragments: ["--batch-size", "negatives", "1048576"]),
        BadOption(arguments: ["--negatives", "1", "--negative-sampling", ""], fragments: ["--negative-sampling"]),
        BadOption(arguments: ["--negatives", "1", "--negative-sampling", "popularity:x"], fragments: ["popularity:x"]),
        BadOption(arguments: ["--set", "top_mlp=[100000]"], fragments: ["top_mlp", "16384", "100000"]),
        BadOption(arguments: ["--set", "cross_layers=2"], fragments: ["dlrm has no setting 'cross_layers'"]),
        BadOption(arguments: ["--shuffle-block", "2147483647"], fragments: ["--shuffle-block"]),
        BadOption(arguments: ["--top-k", "0"], fragments: ["--top-k"]),
        BadOption(arguments: ["--protocol", "topk"], fragments: ["--protocol", "movielens"]),
        BadOption(arguments: ["--model", "gru4rec"], fragments: ["gru4rec", "bottom_mlp"]),
        BadOption(arguments: ["--loss", "softmax"], fragments: ["softmax", "dlrm"]),
        BadOption(arguments: ["--loss", "hinge"], fragments: ["--loss", "hinge", "softmax"]),
    ]

    /// Session models and the softmax need histories: other data, or another loss, is refused
    /// naming what to give.
    @Test(arguments: [
        BadOption(arguments: ["--model", "gru4rec", "--protocol", "topk"], fragments: ["gru4rec", "history", "--protocol next-item"]),
        BadOption(arguments: ["--model", "sasrec", "--protocol", "next-item", "--loss", "bpr"], fragments: ["sasrec", "softmax", "bpr"]),
        BadOption(arguments: ["--model", "mf", "--protocol", "next-item"], fragments: ["softmax", "mf"]),
        BadOption(arguments: ["--model", "deep", "--protocol", "topk", "--set", "history=gru"], fragments: ["history gru", "--protocol next-item"]),
        BadOption(arguments: ["--model", "bert4rec", "--protocol", "next-item", "--negatives", "16"], fragments: ["bert4rec", "full softmax", "--negatives"]),
        BadOption(arguments: ["--model", "bert4rec", "--protocol", "next-item", "--set", "mask_ratio=0"], fragments: ["bert4rec", "mask_ratio", "(0, 1]"]),
        BadOption(arguments: ["--model", "bert4rec", "--protocol", "next-item", "--set", "last_only_ratio=1.5"], fragments: ["bert4rec", "last_only_ratio"]),
        BadOption(arguments: ["--model", "bert4rec", "--protocol", "next-item", "--set", "max_length=1"], fragments: ["bert4rec", "max_length", "at least 2"]),
    ])
    func sessionModelsRefuseDataWithoutHistories(_ bad: BadOption) throws {
        let scratch = Scratch()
        let result = try Command.run(["train", "--data", "movielens:" + MovieLens.directory, "--store", scratch.store, "--steps", "1"]
                                     + bad.arguments)
        expectRefusal(result, mentioning: bad.fragments, bad.testDescription)
    }

    @Test(arguments: refusedOptions)
    func badOptionIsRefusedClearly(_ bad: BadOption) throws {
        let scratch = Scratch()
        let result = try Command.run(Self.syntheticArguments(store: scratch.store) + bad.arguments)
        expectRefusal(result, mentioning: bad.fragments, bad.testDescription)
    }

    /// A metrics file that cannot take a line stops the run with an error naming it, instead
    /// of dropping the events (or trapping inside FileHandle, as it did). /dev/full fails
    /// every write with ENOSPC.
    @Test func metricsThatCannotBeWrittenStopTheRun() throws {
        let scratch = Scratch()
        let result = try Command.run(Self.syntheticArguments(store: scratch.store) + ["--metrics", "/dev/full"])
        expectRefusal(result, mentioning: ["--metrics /dev/full", "metrics file"], "--metrics /dev/full")
        #expect(FileManager.default.fileExists(atPath: "/dev/full"))
    }

    /// An epoch run whose last step falls on an evaluation and checkpoint interval evaluates
    /// and checkpoints once there (it wrote an extra, empty checkpoint before); a run of two
    /// epochs still checkpoints at the end of the first.
    @Test(arguments: [1, 2])
    func epochRunEndingOnAnIntervalCheckpointsOnce(epochs: Int) throws {
        let scratch = Scratch()
        let result = try Command.run(["train", "--data", "synthetic:criteo", "--store", scratch.store, "--synthetic-samples", "4000",
                                      "--synthetic-keys", "1000", "--batch-size", "100", "--epochs", "\(epochs)",
                                      "--eval-every", "20", "--checkpoint-every", "20", "--eval-samples", "200"] + Command.tinyModel)
        #expect(result.status == 0, "\(result.lines.suffix(3))")
        let checkpoints = result.lines.filter { $0.hasPrefix("checkpoint ") }.map { $0.components(separatedBy: " (")[0] }
        let steps = 40 * epochs
        #expect(checkpoints == (1...(steps / 20)).map { "checkpoint \($0) at step \($0 * 20)" },
                "\(checkpoints)")
        let evaluations = result.lines.filter { $0.hasPrefix("eval at step \(steps) ") }
        #expect(evaluations.count == 1, "\(evaluations)")
    }

    @Test func unknownMalformedPolicyIsRefused() throws {
        let scratch = Scratch()
        let path = scratch.file(goodLines(8))
        let result = try Command.run(Self.criteoArguments(path, store: scratch.store) + ["--on-malformed", "maybe"])
        expectRefusal(result, mentioning: ["--on-malformed", "maybe"], "--on-malformed maybe")
    }

    /// Numbers no run can use: they must be refused with an error, not trap on a
    /// precondition deep inside.
    static let impossibleNumbers: [BadOption] = [
        BadOption(arguments: ["--hot-mb=-1"], fragments: ["hot"]),
        BadOption(arguments: ["--warm-mb=-1"], fragments: ["warm"]),
        BadOption(arguments: ["--hot-mb", "9000000000000"], fragments: ["hot"]),
        BadOption(arguments: ["--batch-size", "0"], fragments: ["batch"]),
        BadOption(arguments: ["--synthetic-keys", "5"], fragments: ["synthetic-keys"]),
        BadOption(arguments: ["--synthetic-samples", "0"], fragments: ["synthetic-samples"]),
    ]

    @Test(arguments: impossibleNumbers)
    func impossibleNumberIsRefusedWithoutCrashing(_ bad: BadOption) throws {
        let scratch = Scratch()
        let result = try Command.run(Self.syntheticArguments(store: scratch.store) + bad.arguments)
        expectRefusal(result, mentioning: bad.fragments, bad.testDescription)
    }

    // MARK: Resume

    struct ResumeChange: CustomTestStringConvertible, Sendable {
        var arguments: [String]
        var testDescription: String { arguments.joined(separator: " ") }
    }

    /// Changes to what the run computes: a resume with them must be refused, saying why.
    static let resumeChanges: [ResumeChange] = [
        ResumeChange(arguments: ["--batch-size", "8"]),
        ResumeChange(arguments: ["--steps", "30"]),
        ResumeChange(arguments: ["--learning-rate", "0.05"]),
        ResumeChange(arguments: ["--embedding-dim", "8", "--bottom-mlp", "8"]),
        ResumeChange(arguments: ["--seed", "2"]),
        // Other data: a resume would continue on samples the checkpoint's position does not describe.
        ResumeChange(arguments: ["--synthetic-keys", "2000"]),
    ]

    static func resumable(store: String) -> [String] {
        ["train", "--data", "synthetic:criteo", "--store", store, "--eval-samples", "0", "--batch-size", "16",
         "--steps", "20", "--checkpoint-every", "5", "--synthetic-keys", "1000", "--embedding-dim", "4",
         "--bottom-mlp", "8", "--top-mlp", "8"]
    }

    @Test(arguments: resumeChanges)
    func resumeWithOtherOptionsIsRefused(_ change: ResumeChange) throws {
        let scratch = Scratch()
        let base = try Command.run(Self.resumable(store: scratch.store))
        try #require(base.status == 0, "\(base.output)")
        let result = try Command.run(Self.resumable(store: scratch.store) + change.arguments + ["--resume"])
        expectRefusal(result, mentioning: ["resume"], "--resume with \(change.testDescription)")
        // The store is still good for a resume with the right options.
        let again = try Command.run(Self.resumable(store: scratch.store) + ["--resume"])
        #expect(again.status == 0 && again.lines.contains { $0.hasPrefix("resumed at step 20 ") }, "\(again.output)")
    }

    /// Budgets, look-ahead and threads are the machine's, not the run's: a resume may change them.
    @Test func resumeWithOtherResourcesIsAccepted() throws {
        let scratch = Scratch()
        let first = try Command.run(Self.resumable(store: scratch.store) + ["--steps", "20"])
        try #require(first.status == 0, "\(first.output)")
        let result = try Command.run(Self.resumable(store: scratch.store)
                                     + ["--resume", "--hot-mb", "2", "--warm-mb", "0", "--lookahead", "0", "--threads", "1"])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.lines.contains { $0.hasPrefix("resumed at step 20 ") }, "\(result.output)")
    }

    /// A store holding a run is never thrown away without being asked.
    @Test func aStoreWithACheckpointIsKeptUnlessOverwriteIsGiven() throws {
        let scratch = Scratch()
        let first = try Command.run(Self.resumable(store: scratch.store))
        try #require(first.status == 0, "\(first.output)")
        let again = try Command.run(Self.resumable(store: scratch.store))
        expectRefusal(again, mentioning: ["holds checkpoint", "--resume", "--overwrite"], "a second run without --resume")
        // Still resumable: the refusal changed nothing.
        let resumed = try Command.run(Self.resumable(store: scratch.store) + ["--resume"])
        #expect(resumed.lines.contains { $0.hasPrefix("resumed at step 20 ") }, "\(resumed.output)")
        let over = try Command.run(Self.resumable(store: scratch.store) + ["--overwrite"])
        #expect(over.status == 0 && !over.lines.contains { $0.hasPrefix("resumed") }, "\(over.output)")
    }

    /// --overwrite deletes a store, never some other directory given by mistake.
    @Test func overwriteRefusesADirectoryThatIsNotAStore() throws {
        let scratch = Scratch()
        let precious = scratch.file(["keep me"], name: "notes.txt")
        let result = try Command.run(Self.resumable(store: scratch.directory) + ["--overwrite"])
        expectRefusal(result, mentioning: ["not a Strata store"], "--overwrite on a directory of other files")
        #expect(FileManager.default.fileExists(atPath: precious), "--overwrite deleted a file that is not a store's")
    }

    /// Nor is a store made among a user's files (where --overwrite could later delete them),
    /// and a store holding a file of the user's is not deleted with it.
    @Test func aStoreIsNeverMadeOrDeletedAmongOtherFiles() throws {
        let scratch = Scratch()
        let precious = scratch.file(["keep me"], name: "notes.txt")
        let result = try Command.run(Self.resumable(store: scratch.directory))
        expectRefusal(result, mentioning: ["not a Strata store, and not empty", "notes.txt"], "train into a directory of other files")
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.directory) == ["notes.txt"])

        let first = try Command.run(Self.resumable(store: scratch.store))
        try #require(first.status == 0, "\(first.output)")
        let mine = scratch.store + "/mine.txt"
        #expect(FileManager.default.createFile(atPath: mine, contents: Data("mine".utf8)))
        let over = try Command.run(Self.resumable(store: scratch.store) + ["--overwrite"])
        expectRefusal(over, mentioning: ["not the store's", "mine.txt", "nothing was deleted"], "--overwrite on a store holding a user's file")
        #expect(FileManager.default.fileExists(atPath: mine) && FileManager.default.fileExists(atPath: precious))
        #expect(FileManager.default.fileExists(atPath: scratch.store + "/rows.mdb"))
    }

    @Test func resumeOfAStoreWithoutATrainingRunIsRefused() throws {
        let scratch = Scratch()
        // A store whose last checkpoint's payload is not a trainer's.
        do {
            let store = try Store(path: scratch.store)
            try store.checkpoint(payload: Array("something else".utf8))
            try store.close()
        }
        let result = try Command.run(Self.syntheticArguments(store: scratch.store) + ["--resume"])
        expectRefusal(result, mentioning: ["cannot resume", "does not hold a training run"], "--resume on a foreign store")
    }

    /// A rating label trains with MSE unless told otherwise, and BCE on it is refused.
    @Test func ratingLabelsTrainWithMeanSquaredError() throws {
        let scratch = Scratch()
        let data = ["--model", "mf", "--embedding-dim", "4", "--data", "movielens:" + MovieLens.directory, "--steps", "3"]
        let mse = try Command.run(["train", "--store", scratch.store] + data)
        #expect(mse.status == 0, "\(mse.output)")
        let bce = try Command.run(["train", "--store", scratch.store, "--overwrite", "--loss", "bce"] + data)
        #expect(bce.status != 0 && bce.output.contains("holds ratings") && bce.output.contains("--loss mse"), "\(bce.output)")
    }

    /// An epoch-based run whose last step is also a checkpoint's still saves the end of the
    /// epoch: resumed, it is complete and does not train again.
    @Test func epochRunEndingOnACheckpointResumesComplete() throws {
        let scratch = Scratch()
        let example = DocumentedExampleTests.example
        let arguments = ["train", "--store", scratch.store, "--model", "deep", "--data", "table:\(example)/clicks.csv",
                         "--schema", "\(example)/schema.json", "--protocol", "click", "--epochs", "1", "--batch-size", "32",
                         "--checkpoint-every", "10"]
        let first = try Command.run(arguments)
        #expect(first.status == 0 && first.lines.last?.hasPrefix("trained 10 steps") == true, "\(first.output)")
        let again = try Command.run(arguments + ["--resume"])
        #expect(again.status == 0 && again.lines.contains { $0.contains("run is complete") }, "\(again.output)")
        #expect(!again.lines.contains { $0.hasPrefix("checkpoint ") }, "a complete run checkpointed again: \(again.output)")
    }

    // MARK: Reading while it trains

    /// While `strata train` writes a store, `strata info` names it (pid and command, from
    /// LOCK) and the checkpoint it reads, `get` reads a row of it, and the commands that
    /// write (another `train`, `import`) are refused naming it. The values read are checked
    /// against the checkpoints in ReadWhileWritingTests; here it is a real trainer.
    @Test func toolsReadAStoreWhileItTrains() throws {
        let scratch = Scratch()
        let trainer = try ChildProcess(Command.path, [
            "train", "--data", "synthetic:criteo", "--synthetic-keys", "1000", "--steps", "100000000", "--batch-size", "16",
            "--eval-samples", "0", "--checkpoint-every", "20", "--store", scratch.store] + Command.tinyModel)
        defer {
            trainer.kill()
            _ = try? trainer.wait()
        }
        let named = "process \(trainer.pid) (strata train)"
        // Until the trainer has completed a checkpoint (its output read on, so it never blocks).
        var info: [String: Any]?
        for _ in 0..<600 where info == nil {
            while trainer.readLine(timeout: 0.001) != nil {}
            try #require(!trainer.lines.contains { $0.hasPrefix("Error") }, "the trainer failed: \(trainer.lines.suffix(3))")
            let run = try Command.run(["info", scratch.store, "--json"])
            if let object = summary(run), ((object["checkpoint"] as? [String: Any])?["generation"] as? Int ?? 0) >= 1 {
                info = object
            } else {
                usleep(100_000)
            }
        }
        let object = try #require(info, "no checkpoint to read: \(trainer.lines.suffix(3))")
        let writer = object["writer"] as? [String: Any]
        #expect(object["read_only"] as? Bool == true)
        #expect(writer?["pid"] as? Int == Int(trainer.pid) && writer?["command"] as? String == "strata train", "\(object)")

        let text = try Command.run(["info", scratch.store])
        #expect(text.status == 0, "\(text.output)")
        #expect(text.lines.contains { $0.hasPrefix("open for writing in \(named); read-only at its last completed checkpoint, ") },
                "\(text.output)")
        let table = try #require((object["tables"] as? [[String: Any]])?.first?["name"] as? String)
        let get = try Command.run(["get", scratch.store, table, "1", "--json"])
        #expect(get.status == 0 && get.lines.contains { $0.hasPrefix("{") }, "\(get.output)")
        #expect(get.lines.contains { $0.hasPrefix("note: ") && $0.contains("open for writing in \(named)") }, "\(get.output)")

        let export = scratch.directory + "/export"
        let exported = try Command.run(["export", scratch.store, table, "--format", "npy", "--out", export])
        #expect(exported.status == 0, "\(exported.output)")
        for (command, arguments) in [("train", Self.syntheticArguments(store: scratch.store) + ["--resume"]),
                                     ("import", ["import", scratch.store, table, "--from", export])] {
            let refused = try Command.run(arguments)
            expectRefusal(refused, mentioning: ["in use by \(named)", "\(command) writes the store"], "\(command) while training")
        }
        while trainer.readLine(timeout: 0.001) != nil {}
        #expect(!trainer.lines.contains { $0.hasPrefix("Error") }, "\(trainer.lines.suffix(3))")
    }
}
