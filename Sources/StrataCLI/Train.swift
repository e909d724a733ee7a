import ArgumentParser
import Foundation
import StrataModels
import StrataNN
import StrataStore
import StrataTraining
#if canImport(Glibc)
import Glibc
#endif

/// `strata train`: trains a model on a store.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model whose embedding tables live in a store.",
        discussion: """
            Data: criteo:PATH reads Criteo's TSV format (label, 13 integers, 26 hexadecimal categories, \
            tab-separated) as it goes; synthetic:criteo generates data of the same shape from a planted \
            model, so the best reachable AUC is known. A checkpoint holds the store's rows and their \
            optimizer state, the dense weights and theirs, the step and the data position, all at one \
            instant: --resume continues exactly where it was taken.
            """)

    @Option(help: "The model (dlrm).") var model = "dlrm"
    @Option(help: "Training data: criteo:PATH or synthetic:criteo.") var data: String
    @Option(help: "Evaluation data: criteo:PATH or synthetic:criteo (default for synthetic data: its held-out stream).")
    var evalData: String?
    @Option(help: "Store directory.") var store = "strata-data/train"

    @Option(help: "Embedding dimension.") var embeddingDim = 16
    @Option(help: "Bottom MLP hidden sizes, dash-separated (its input is the dense features, its output the embedding dimension).")
    var bottomMlp = "512-256-64"
    @Option(help: "Top MLP hidden sizes, dash-separated (its output is one logit).") var topMlp = "512-256"

    @Option(help: "Samples per step.") var batchSize = 128
    @Option(help: "Dense learning rate.") var learningRate: Float = 0.1
    @Option(help: "Embedding learning rate (default: the dense one).") var sparseLearningRate: Float?
    @Option(help: "Dense optimizer: sgd, adagrad or adam.") var optimizer = "sgd"
    @Option(help: "Embedding optimizer in the store: sgd, adagrad, rowwise-adagrad, adam or ftrl (default: like --optimizer).")
    var sparseOptimizer: String?
    @Option(help: "Steps to train (default: one epoch, or --epochs).") var steps: Int?
    @Option(help: "Passes over the data when --steps is not given.") var epochs = 1
    @Option(help: "Evaluate every N steps (and at the end); 0: only at the end.") var evalEvery = 0
    @Option(help: "Samples per evaluation.") var evalSamples = 100_000
    @Option(help: "Checkpoint every N steps (and at the end); 0: only at the end.") var checkpointEvery = 0
    @Option(help: "Seed of the initial weights and of the data order.") var seed: UInt64 = 1
    @Flag(help: "Continue from the store's last checkpoint.") var resume = false
    @Flag(help: "Delete the store's contents and start over (without it, a store that holds a checkpoint is refused unless --resume).")
    var overwrite = false

    @Option(help: "Hot tier budget per table, MiB.") var hotMb: Double = 64
    @Option(help: "Warm tier budget per table, MiB: a memory-mapped file reserved on disk for every table when the store opens (0: rows leaving the hot tier go to the spill file, or are dropped when LMDB has them).")
    var warmMb: Double = 0
    @Option(help: "LMDB pages kept mapped in the process before they are dropped (they stay in the page cache), MiB.")
    var mapResidentMb: Double = 64
    @Option(help: "Batches read and warmed ahead of the step in progress (0: none).") var lookahead = 4
    @Option(help: "Threads for matrix products.") var threads = 2

    @Option(help: "Write one JSON object per progress line, evaluation and checkpoint to this file.") var metrics: String?
    @Option(help: "A malformed input line: skip (and count) or stop.") var onMalformed = "stop"
    @Flag(help: "Print the final summary as JSON.") var json = false
    @Option(name: .customLong("report"), help: """
        Also write DIR/metrics.jsonl (as --metrics), DIR/summary.json and pictures of them:         training-loss (loss and samples/s against steps, checkpoints marked) and training-metrics         (evaluation AUC and logloss, with the planted model's AUC on synthetic data), PNG and SVG,         drawn by tools/plot-report.py with matplotlib.
        """)
    var reportDirectory: String?

    @Option(help: "Synthetic data: samples per epoch.") var syntheticSamples: Int64 = 10_000_000
    @Option(help: "Synthetic data: the largest key space of a categorical feature (others shrink geometrically to 10).")
    var syntheticKeys: Double = 1e7
    @Option(help: "Synthetic data: key spaces of the categorical features: geometric (see --synthetic-keys) or kaggle (Criteo Kaggle's table sizes).")
    var syntheticKeySpaces = "geometric"
    @Option(help: "Synthetic data: Zipf exponent of the categorical ids.") var syntheticZipf = 1.05
    @Option(help: "Criteo data: samples read together and shuffled (0: file order).") var shuffleBlock = 0

    func validate() throws {
        // Refused here, not trapped on a precondition deep inside.
        func require(_ ok: Bool, _ message: String) throws { if !ok { throw ValidationError(message) } }
        let mebibytes = Double(Int.max >> 21)
        for (flag, value) in [("--hot-mb", hotMb), ("--warm-mb", warmMb), ("--map-resident-mb", mapResidentMb)] {
            try require((0...mebibytes).contains(value), "\(flag) must be between 0 and \(Int(mebibytes)), not \(value)")
        }
        try require(batchSize >= 1, "--batch-size must be at least 1, not \(batchSize)")
        try require(embeddingDim >= 1, "--embedding-dim: a dimension 0 table holds nothing; give at least 1")
        try require(steps.map { $0 >= 1 } ?? true, "--steps must be at least 1")
        try require(epochs >= 1, "--epochs must be at least 1, not \(epochs)")
        try require(evalEvery >= 0 && evalSamples >= 0 && checkpointEvery >= 0,
                    "--eval-every, --eval-samples and --checkpoint-every cannot be negative")
        try require(!(resume && overwrite), "--resume and --overwrite exclude each other")
        try require(lookahead >= 0, "--lookahead cannot be negative")
        try require((1...256).contains(threads), "--threads must be between 1 and 256, not \(threads)")
        try require(shuffleBlock >= 0, "--shuffle-block cannot be negative")
        try require(learningRate.isFinite && learningRate > 0, "--learning-rate must be positive, not \(learningRate)")
        try require(sparseLearningRate.map { $0.isFinite && $0 > 0 } ?? true, "--sparse-learning-rate must be positive")
        try require(syntheticSamples >= 1, "--synthetic-samples must be at least 1, not \(syntheticSamples)")
        try require(syntheticKeys >= 10 && syntheticKeys <= Double(Int64.max / 2),
                    "--synthetic-keys must be at least 10 (the smallest feature's key space), not \(syntheticKeys)")
        try require(syntheticZipf.isFinite && syntheticZipf > 0, "--synthetic-zipf must be positive, not \(syntheticZipf)")
    }

    func run() throws {
        guard model == "dlrm" else { throw ValidationError("unknown model '\(model)' (this version has dlrm)") }
        let bottom = try sizes(bottomMlp, "--bottom-mlp"), top = try sizes(topMlp, "--top-mlp")
        let (train, eval) = try sources()
        let schema = train.schema
        let options = TrainingOptions(
            model: DLRMConfig(denseFeatures: schema.dense, sparseFeatures: schema.sparse, embeddingDimension: embeddingDim,
                              bottomHidden: bottom, topHidden: top),
            batchSize: batchSize, steps: steps, epochs: epochs, denseOptimizer: try denseOptimizer(),
            sparseOptimizer: try sparseStoreOptimizer(), embeddingInitializer: .uniform(low: -0.01, high: 0.01),
            evaluateEvery: evalEvery, evaluationSamples: evalSamples, checkpointEvery: checkpointEvery, seed: seed)
        let resources = TrainingResources(
            budget: TierBudget(hotBytes: Int(hotMb * 1048576), warmBytes: Int(warmMb * 1048576)), lookahead: lookahead, threads: threads)

        var storeOptions = Store.Options()
        storeOptions.budget = resources.budget
        storeOptions.mapResidentBytes = Int(mapResidentMb * 1048576)
        if overwrite { try removeStore() }
        let db = try Store(path: store, options: storeOptions)
        if !resume && db.lastCheckpoint.generation > 0 {
            let generation = db.lastCheckpoint.generation
            try db.close()
            throw ValidationError("the store \(store) holds checkpoint \(generation); --resume continues it, --overwrite starts over")
        }
        let trainer = try Trainer(store: db, options: options, resources: resources, train: train, evaluate: eval, resume: resume)
        if let from = trainer.resumedFromStep { print("resumed at step \(from) from checkpoint \(db.lastCheckpoint.generation)") }

        if let reportDirectory {
            do {
                try FileManager.default.createDirectory(atPath: reportDirectory, withIntermediateDirectories: true)
            } catch {
                throw ValidationError("--report: cannot create \(reportDirectory): \(error.localizedDescription)")
            }
        }
        let log = try (metrics ?? reportDirectory.map { $0 + "/metrics.jsonl" }).map { try MetricsLog(path: $0) }
        let copy = try metrics == nil ? nil : reportDirectory.map { try MetricsLog(path: $0 + "/metrics.jsonl") }
        let terminal = isatty(1) != 0
        let summary = try trainer.run { event in
            log?.write(event)
            copy?.write(event)
            switch event {
            case .progress(let p):
                let line = "step \(p.step)  \(fmt(p.samplesPerSecond)) samples/s  loss \(String(format: "%.4f", p.loss))  "
                    + "hot \(pct(p.hotHitRatio)) warm \(pct(p.warmHitRatio)) cold \(pct(p.coldHitRatio))"
                if terminal { print("\r\u{1B}[K" + line, terminator: ""); fflush(nil) } else { print(line) }
            case .evaluation(let e):
                if terminal { print("") }
                print("eval at step \(e.step) on \(e.samples) samples: AUC \(String(format: "%.4f", e.auc))  "
                      + "logloss \(String(format: "%.4f", e.logloss))  accuracy \(String(format: "%.4f", e.accuracy))")
            case .checkpoint(let step, let generation, let seconds):
                if terminal { print("") }
                print("checkpoint \(generation) at step \(step) (\(String(format: "%.2f", seconds)) s)")
            }
            // Into files and pipes too, so that `tail -f` and a watching process see each line
            // as it happens.
            fflush(nil)
        }
        try db.close()
        // Synthetic data knows the best reachable AUC: the planted model's, on the very
        // samples the evaluation used.
        let planted = (eval as? SyntheticClicks).flatMap { source in
            summary.evaluation.map { source.plantedAUC(samples: $0.samples) }
        }
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        // A resume with no step left has no loss: "nan", not a failure.
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        var object = try JSONSerialization.jsonObject(with: encoder.encode(summary)) as? [String: Any] ?? [:]
        if let planted { object["planted_auc"] = planted }
        if let reportDirectory {
            try writeJSONReport(object, named: "summary.json", in: reportDirectory)
            drawReport("train", reportDirectory)
        }
        if json {
            print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
        } else {
            if let planted, let auc = summary.evaluation?.auc {
                print("planted model's AUC on the same samples: \(String(format: "%.4f", planted)) "
                      + "(the model is \(String(format: "%.4f", planted - auc)) below it)")
            }
            let t = summary.tables
            print("tables: \(t.rows) rows, \(megabytes(t.rowBytes)) of records (largest table \(megabytes(t.largestTableBytes)), "
                  + "budget \(megabytes(t.budgetBytesPerTable)) a table); lookups hot \(pct(t.hotHitRatio)) "
                  + "warm \(pct(t.warmHitRatio)) cold \(pct(t.coldHitRatio))"
                  + "; resident \(megabytes(summary.residentBytesBetweenSteps)) between steps"
                  + (summary.peakResidentBytes.map { ", peak \(megabytes($0))" } ?? ""))
            let skipped = summary.skippedLines > 0 ? "; skipped \(summary.skippedLines) malformed lines" : ""
            print("trained \(summary.steps) steps, \(summary.samples) samples in \(fmt(summary.seconds)) s: "
                  + "\(fmt(summary.samplesPerSecond)) samples/s; final loss \(String(format: "%.4f", summary.finalLoss))" + skipped)
        }
    }

    /// Deletes `store` for --overwrite: only a store (or nothing), and only once opening it has
    /// shown that no other process holds it.
    private func removeStore() throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: store, isDirectory: &isDirectory) else { return }
        let entries = isDirectory.boolValue ? (try? FileManager.default.contentsOfDirectory(atPath: store)) ?? [] : ["?"]
        guard entries.isEmpty || entries.contains("rows.mdb") else {
            throw ValidationError("--overwrite: \(store) is not a Strata store; not deleting it")
        }
        var options = Store.Options()
        options.create = false
        if !entries.isEmpty { try Store(path: store, options: options).close() }
        try FileManager.default.removeItem(atPath: store)
    }

    private func sizes(_ text: String, _ flag: String) throws -> [Int] {
        let parts = text.split(separator: "-").map { Int($0) }
        guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) > 0 }) else {
            throw ValidationError("\(flag) wants sizes like 512-256-64, got '\(text)'")
        }
        return parts.map { $0! }
    }

    private func denseOptimizer() throws -> DenseOptimizer {
        switch optimizer {
        case "sgd": return .sgd(learningRate: learningRate)
        case "adagrad": return .adagrad(learningRate: learningRate)
        case "adam": return .adam(learningRate: learningRate)
        default: throw ValidationError("--optimizer: sgd, adagrad or adam, not '\(optimizer)'")
        }
    }

    private func sparseStoreOptimizer() throws -> Optimizer {
        let rate = sparseLearningRate ?? learningRate
        switch sparseOptimizer ?? optimizer {
        case "sgd": return .sgd(learningRate: rate)
        case "adagrad": return .adagrad(learningRate: rate)
        case "rowwise-adagrad": return .rowwiseAdagrad(learningRate: rate)
        case "adam": return .adam(learningRate: rate)
        case "ftrl": return .ftrl(alpha: rate)
        case let other: throw ValidationError("--sparse-optimizer: sgd, adagrad, rowwise-adagrad, adam or ftrl, not '\(other)'")
        }
    }

    /// The training source and the evaluation source (synthetic data evaluates on its
    /// held-out stream unless told otherwise).
    private func sources() throws -> (any ClickSource, (any ClickSource)?) {
        let train = try source(data, split: .train)
        if let evalData { return (train, try source(evalData, split: .test)) }
        return (train, data.hasPrefix("synthetic:") ? try source(data, split: .test) : nil)
    }

    private func source(_ spec: String, split: SyntheticClicks.Split) throws -> any ClickSource {
        if spec == "synthetic:criteo" {
            var o = SyntheticClicks.Options(seed: seed, samplesPerEpoch: syntheticSamples, zipfExponent: syntheticZipf,
                                            largestKeySpace: Int64(syntheticKeys))
            switch syntheticKeySpaces {
            case "geometric": break
            case "kaggle": o.keySpaces = SyntheticClicks.criteoKaggleKeySpaces
            default: throw ValidationError("--synthetic-key-spaces: geometric or kaggle, not '\(syntheticKeySpaces)'")
            }
            return SyntheticClicks(options: o, split: split)
        }
        if spec.hasPrefix("criteo:") {
            let policy: CriteoFile.MalformedLinePolicy
            switch onMalformed {
            case "skip": policy = .skip
            case "stop": policy = .stop
            default: throw ValidationError("--on-malformed: skip or stop, not '\(onMalformed)'")
            }
            return try CriteoFile(path: String(spec.dropFirst("criteo:".count)),
                                  options: .init(shuffleBlock: shuffleBlock, seed: seed, malformedLines: policy))
        }
        throw ValidationError("data must be criteo:PATH or synthetic:criteo, not '\(spec)'")
    }
}

private func pct(_ x: Double) -> String { String(format: "%.1f%%", x * 100) }
private func megabytes(_ bytes: Int) -> String { String(format: "%.1f MB", Double(bytes) / 1e6) }

/// The metrics file: one JSON object per line.
final class MetricsLog {
    private let handle: FileHandle
    private let encoder: JSONEncoder

    init(path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil),
              let h = FileHandle(forWritingAtPath: path) else {
            throw ValidationError("cannot write the metrics file \(path)")
        }
        handle = h
        encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
    }

    func write(_ event: TrainingEvent) {
        var object: [String: Any] = [:]
        func merge<T: Encodable>(_ kind: String, _ value: T) {
            guard let data = try? encoder.encode(value),
                  let dict = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { return }
            object = dict
            object["event"] = kind
        }
        switch event {
        case .progress(let p): merge("progress", p)
        case .evaluation(let e): merge("evaluation", e)
        case .checkpoint(let step, let generation, let seconds):
            object = ["event": "checkpoint", "step": step, "generation": generation, "seconds": seconds]
        }
        object["time"] = Date().timeIntervalSince1970
        guard let line = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        handle.write(line + Data("\n".utf8))
    }
}
