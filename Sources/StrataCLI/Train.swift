import ArgumentParser
import Foundation
import StrataModels
import StrataMPI
import StrataNN
@_spi(Testing) import StrataStore
import StrataTraining
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `strata train`: trains a model on a store.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model whose embedding tables live in a store.",
        discussion: """
            Models (--model): \(ModelRegistry.models.map { "\($0.name): \($0.summary)" }.joined(separator: "; ")).

            A model's settings have defaults; --embedding-dim, --mlp, --dropout, --cross-layers, --combine, \
            --mlp-embedding-dim, --bottom-mlp and --top-mlp change them, and --set KEY=VALUE any other \
            (e.g. --set biases=false for mf).

            Data: criteo:PATH reads Criteo's TSV format (label, 13 integers, 26 hexadecimal categories, \
            tab-separated) as it goes; synthetic:criteo generates data of the same shape from a planted \
            model, so the best reachable AUC is known; movielens reads MovieLens-100K with its users' and \
            items' features; table:PATH reads a CSV or TSV described by --schema. --protocol splits \
            tabular data and evaluates it as RecBole does. A checkpoint holds the store's rows and their \
            optimizer state, the dense weights and theirs, the step and the data position, all at one \
            instant: --resume continues exactly where it was taken.

            Started by Open MPI's mpirun, it trains hybrid-parallel: --store names a shard set, each rank \
            owns a shard of every table, the dense weights are replicated, and --batch-size is per rank \
            (the global batch is that times the ranks). Checkpoints are kept by every shard together; \
            --resume on another number of ranks moves every row to its new owner first.
            """)

    @Option(help: "The model: \(ModelRegistry.names.joined(separator: ", ")).") var model = "dlrm"
    @OptionGroup var input: DataOptions
    @Option(help: "Store directory.") var store = "strata-data/train"

    @Option(parsing: .unconditional, help: "Model setting: the embedding dimension.") var embeddingDim: Int?
    @Option(parsing: .unconditional, help: "Model setting: the MLP's hidden sizes, dash-separated (e.g. 128-64).") var mlp: String?
    @Option(parsing: .unconditional, help: "Model setting: dropout after the MLP's hidden layers.") var dropout: Float?
    @Option(parsing: .unconditional, help: "Model setting (dcn-v2): cross layers.") var crossLayers: Int?
    @Option(help: "Model setting (deep): how user and item embeddings meet: concat or product.") var combine: String?
    @Option(parsing: .unconditional, help: "Model setting (neumf): the MLP tower's embedding dimension.") var mlpEmbeddingDim: Int?
    @Option(parsing: .unconditional, help: "Model setting (dlrm): bottom MLP hidden sizes, dash-separated (its input is the dense features, its output the embedding dimension).")
    var bottomMlp: String?
    @Option(parsing: .unconditional, help: "Model setting (dlrm): top MLP hidden sizes, dash-separated (its output is one logit).") var topMlp: String?
    @Option(name: .customLong("set"), help: "Model setting KEY=VALUE (VALUE as JSON, or text); repeatable.") var settings: [String] = []

    @Option(parsing: .unconditional, help: "Samples per step (before negatives).") var batchSize = 128
    @Option(parsing: .unconditional, help: "Dense learning rate.") var learningRate: Float = 0.1
    @Option(parsing: .unconditional, help: "Embedding learning rate (default: the dense one).") var sparseLearningRate: Float?
    @Option(help: "Dense optimizer: sgd, adagrad, rowwise-adagrad, adam or ftrl (the store's arithmetic).") var optimizer = "sgd"
    @Option(help: "Embedding optimizer in the store: sgd, adagrad, rowwise-adagrad, adam or ftrl (default: like --optimizer).")
    var sparseOptimizer: String?
    @Option(help: "Wide tables' optimizer in the store (wide-deep): ftrl (FTRL-Proximal), or any of the store's.") var wideOptimizer = "ftrl"
    @Option(parsing: .unconditional, help: "Wide tables' learning rate (FTRL's alpha).") var wideLearningRate: Float = 0.05
    @Option(parsing: .unconditional, help: "L2 regularisation of the embedding rows a batch touches (added to their gradients).") var weightDecay: Float = 0
    @Option(help: "Loss: bce (clicks), mse (ratings), bpr (ranking with negatives) or softmax (next-item models, over every item); default: the protocol's.") var loss: String?
    @Option(help: "The label to train on (default: the data's first).") var label: String?
    @Option(help: "A task of a multi-task model (shared-bottom, mmoe), LABEL:LOSS[:WEIGHT]: loss bce or mse, weight 1 unless given. Repeat it for each task; the model's outputs follow their order.")
    var task: [String] = []
    @Option(parsing: .unconditional, help: "Negatives sampled per sample (default: 1 for the topk protocol, else none); with --loss softmax, items drawn per batch for the sampled softmax, beside the batch's own (default: none, the softmax over every item).") var negatives: Int?
    @Option(help: "How negatives are drawn: uniform, or popularity[:EXPONENT] (by training interactions^exponent, default 1).")
    var negativeSampling = "uniform"
    @Option(parsing: .unconditional, help: "Steps to train (default: one epoch, or --epochs).") var steps: Int?
    @Option(parsing: .unconditional, help: "Passes over the data when --steps is not given.") var epochs = 1
    @Option(parsing: .unconditional, help: "Evaluate every N steps (and at the end); 0: only at the end.") var evalEvery = 0
    @Option(parsing: .unconditional, help: "Samples per evaluation during training (ranking: users); the final test evaluates all.") var evalSamples = 100_000
    @Option(parsing: .unconditional, help: "Checkpoint every N steps (and at the end); 0: only at the end.") var checkpointEvery = 0
    @Option(parsing: .unconditional, help: "Seed of the initial weights, the data order and the split.") var seed: UInt64 = 1
    @Flag(help: "Continue from the store's last checkpoint.") var resume = false
    @Flag(help: "Delete the store's contents and start over (without it, a store that holds a checkpoint is refused unless --resume).")
    var overwrite = false

    @Option(parsing: .unconditional, help: "Hot tier budget per table, MiB.") var hotMb: Double = 64
    @Option(parsing: .unconditional, help: "Warm tier budget per table, MiB: a memory-mapped file per table that takes disk blocks as rows reach it, 64 KiB at a time, checking free space first (0: rows leaving the hot tier go to the spill file, or are dropped when LMDB has them).")
    var warmMb: Double = 0
    @Option(parsing: .unconditional, help: "A cap on LMDB's pages mapped in the process, MiB: past half of it they are dropped from its page tables (they stay in the page cache). Default: no cap; they are clean page cache the kernel reclaims under memory pressure, a cgroup's limit included, and a small cap costs time.")
    var mapResidentMb: Double?
    @Option(parsing: .unconditional, help: "Batches read and warmed ahead of the step in progress (0: none).") var lookahead = 4
    @Option(parsing: .unconditional, help: "Threads for matrix products.") var threads = 2

    @Option(help: "Write one JSON object per progress line, evaluation and checkpoint to this file.") var metrics: String?
    @Flag(help: "Print the final summary as JSON.") var json = false
    @Option(name: .customLong("report"), help: """
        Also write DIR/metrics.jsonl (as --metrics), DIR/summary.json and pictures of them: \
        training-loss (loss and samples/s against steps, checkpoints marked) and training-metrics \
        (the evaluation metrics, with the planted model's AUC on synthetic data), PNG and SVG, \
        drawn by tools/plot-report.py with matplotlib.
        """)
    var reportDirectory: String?

    func validate() throws {
        try OptionCheck.require(ModelRegistry.names.contains(model),
                                "--model: unknown model '\(model)'; the models are \(ModelRegistry.names.joined(separator: ", "))")
        // Refused here, not trapped on a precondition deep inside.
        for (flag, value) in [("--hot-mb", hotMb), ("--warm-mb", warmMb), ("--map-resident-mb", mapResidentMb ?? 1)] {
            try OptionCheck.mebibytes(value, flag)
        }
        if let mapResidentMb { try OptionCheck.require(mapResidentMb > 0, "--map-resident-mb must be above 0, not \(mapResidentMb)") }
        _ = try negativeDistribution()
        _ = try tasks()
        try OptionCheck.whole(batchSize, "--batch-size", 1...Self.largestBatch)
        // The sampled softmax draws its negatives once a batch, as candidates, not rows.
        if loss == "softmax" {
            if let negatives { try OptionCheck.whole(negatives, "--negatives", 0...(1 << 20)) }
        } else {
            if let negatives { try OptionCheck.whole(negatives, "--negatives", 0...1000) }
            try OptionCheck.require(batchSize * (1 + (negatives ?? 1)) <= Self.largestBatch,
                        "--batch-size \(batchSize) with \(negatives ?? 1) negatives a sample makes batches of more than \(Self.largestBatch) rows")
        }
        if let embeddingDim { try OptionCheck.whole(embeddingDim, "--embedding-dim", 1...65_536) }
        if let steps { try OptionCheck.whole(steps, "--steps", 1...Int.max) }
        try OptionCheck.whole(epochs, "--epochs", 1...1_000_000)
        try OptionCheck.whole(evalEvery, "--eval-every", 0...Int.max)
        try OptionCheck.whole(evalSamples, "--eval-samples", 0...Int.max)
        try OptionCheck.whole(checkpointEvery, "--checkpoint-every", 0...Int.max)
        try OptionCheck.require(!(resume && overwrite), "--resume and --overwrite exclude each other")
        try OptionCheck.whole(lookahead, "--lookahead", 0...1024)
        try OptionCheck.whole(threads, "--threads", 1...256)
        try OptionCheck.positive(learningRate, "--learning-rate", most: 1e6)
        if let sparseLearningRate { try OptionCheck.positive(sparseLearningRate, "--sparse-learning-rate", most: 1e6) }
        try OptionCheck.positive(wideLearningRate, "--wide-learning-rate", most: 1e6)
        try OptionCheck.number(weightDecay, "--weight-decay", 0...1e6)
        if let dropout { try OptionCheck.require(dropout >= 0 && dropout < 1, "--dropout must be at least 0 and below 1, not \(dropout)") }
    }

    /// Tests only: STRATA_KILL_FOR_TESTING=RANK:POINT:N makes rank RANK kill itself (SIGKILL)
    /// at POINT: `written` or `kept` of the checkpoint of step N
    /// (`TrainingResources.CheckpointPoint`), `transaction` after the first transaction of
    /// the N-th checkpoint this process writes (mid-write), or `resharded` or `switched` of a
    /// re-sharding (`Cluster.atReshardPoint`; N is not read).
    private static func killForTesting(_ cluster: Cluster, _ resources: inout TrainingResources, _ options: inout Store.Options) throws {
        guard let text = ProcessInfo.processInfo.environment["STRATA_KILL_FOR_TESTING"] else { return }
        let parts = text.split(separator: ":").map(String.init)
        let points = ["written", "kept", "transaction", "resharded", "switched"]
        guard parts.count == 3, let target = Int(parts[0]), let n = Int(parts[2]), points.contains(parts[1]) else {
            throw ValidationError("STRATA_KILL_FOR_TESTING must be RANK:POINT:N with POINT one of \(points.joined(separator: ", ")), not \(text)")
        }
        guard target == cluster.rank else { return }
        if parts[1] == "resharded" || parts[1] == "switched" {
            let point = parts[1]
            cluster.atReshardPoint = { if $0 == point { kill(getpid(), SIGKILL) } }
        } else if let point = TrainingResources.CheckpointPoint(rawValue: parts[1]) {
            resources.atCheckpointPoint = { p, step in if p == point && step == n { kill(getpid(), SIGKILL) } }
        } else if parts[1] == "transaction" {
            let started = Mutex(0)
            options.afterCheckpointTransactionForTesting = { t in
                guard t == 1 else { return }
                if started.withLock({ $0 += 1; return $0 }) == n { kill(getpid(), SIGKILL) }
            }
        }
    }

    /// Rows a step may hold, negatives included: bags of up to 1024 keys then stay within the
    /// 2^31 keys a batch's offsets count.
    static let largestBatch = 1 << 20

    /// The store at `path`, emptied first with --overwrite; refused, naming the process, while
    /// another has it.
    private func openStore(_ path: String, _ options: Store.Options) throws -> Store {
        do {
            if overwrite { try Store.remove(at: path) }
            return try Store(path: path, options: options)
        } catch .locked(_, let holder) {
            throw StoreAccess.inUse(path, by: holder, command: "train")
        } catch .system(let error) {
            throw ToolError("--store \(path): \(error)")
        }
    }

    /// Started by mpirun, every process trains its part of each batch on its shard of the
    /// tables (`Cluster`); otherwise one process trains on the store.
    func run() throws {
        guard Communicator.launchedByMPIRun else { return try train(cluster: nil) }
        let world = try Communicator.world()
        do {
            try train(cluster: Cluster(world: world))
            try world.finalize()
        } catch {
            // The other ranks wait for this one in their next exchange: end them all.
            FileHandle.standardError.write(Data("strata train (rank \(world.rank) of \(world.size)): \(error)\n".utf8))
            world.abort(code: 1)
        }
    }

    private func train(cluster: Cluster?) throws {
        // Rank 0 speaks for the run: the others' progress is the same.
        let lead = (cluster?.rank ?? 0) == 0
        if let cluster {
            // Every rank reads the global batch.
            let rows = batchSize * cluster.ranks * (loss == "softmax" ? 1 : 1 + (negatives ?? 1))
            try OptionCheck.require(rows <= Self.largestBatch,
                                    "--batch-size \(batchSize) on \(cluster.ranks) ranks makes global batches of \(rows) rows, more than \(Self.largestBatch)")
        }
        if !lead {
            let null = open("/dev/null", O_WRONLY)
            if null >= 0 { dup2(null, 1); close(null) }
        }
        let tasks = try tasks()
        let loaded = try input.load(seed: seed, tasks: tasks, label: label)
        if let label, loaded.schema.labelIndex(label) == nil {
            throw ValidationError("--label \(label): the data has no such label; its labels are \(loaded.schema.labels.map(\.name).joined(separator: ", "))")
        }
        let options = try trainingOptions(loaded, tasks: tasks)
        if let table = loaded.table, !table.ignoredColumns.isEmpty {
            print("columns not in the schema (read past): \(table.ignoredColumns.joined(separator: ", "))")
        }
        if let table = loaded.table, input.protocol != .none {
            print("\(input.protocol.rawValue) protocol: \(table.counts[0]) training, \(table.counts[1]) validation, \(table.counts[2]) test lines")
        }
        var resources = TrainingResources(
            budget: TierBudget(hotBytes: OptionCheck.bytes(mebibytes: hotMb), warmBytes: OptionCheck.bytes(mebibytes: warmMb)), lookahead: lookahead, threads: threads)

        var storeOptions = Store.Options()
        if let cluster { try Self.killForTesting(cluster, &resources, &storeOptions) }
        storeOptions.budget = resources.budget
        storeOptions.mapResidentBytes = mapResidentMb.map(OptionCheck.bytes(mebibytes:))
        if cluster == nil, let n = try ShardSet.ranks(store) {
            throw ValidationError("--store \(store) is a set of \(n) shards, a run over several processes: continue it with mpirun -np N strata train ... (any N re-shards it)")
        }
        let path = cluster.map { ShardSet.shardPath(store, rank: $0.rank, of: $0.ranks) } ?? store
        let db = try cluster?.openShard(store, resume: resume, overwrite: overwrite, options: storeOptions, open: openStore)
            ?? openStore(path, storeOptions)
        if !resume && db.lastCheckpoint.generation > 0 {
            let generation = db.lastCheckpoint.generation
            try db.close()
            throw ValidationError("the store \(path) holds checkpoint \(generation); --resume continues it, --overwrite starts over")
        }
        if let cluster, let from = cluster.reshardedFrom {
            print("moved every row from \(from) shards to \(cluster.ranks): the global batch is now \(cluster.ranks) × \(batchSize) samples (it was \(from) × \(batchSize))")
        }
        let trainer = try Trainer(store: db, options: options, resources: resources, data: loaded.training, resume: resume, cluster: cluster)
        if let from = trainer.resumedFromStep { print("resumed at step \(from) from checkpoint \(db.lastCheckpoint.generation)") }
        if trainer.isFinished { print("the run is complete: the checkpoint holds its last step; evaluating only") }
        fflush(nil)
        // Warm files take disk as rows arrive, up to their budgets: say when that can pass the free space.
        let warmTotal = db.tableNames.count * resources.budget.warmBytes
        if let free = freeBytes(onFileSystemOf: store), warmTotal > free {
            print("note: the warm tiers may grow to \(byteText(warmTotal)) (\(db.tableNames.count) tables of --warm-mb \(warmMb)), more than the \(byteText(free)) free for \(store); a run that fills the disk stops with 'disk full' and keeps its last checkpoint")
        }

        if let reportDirectory {
            do {
                try FileManager.default.createDirectory(atPath: reportDirectory, withIntermediateDirectories: true)
            } catch {
                throw ValidationError("--report: cannot create \(reportDirectory): \(error.localizedDescription)")
            }
        }
        let log = lead ? try (metrics ?? reportDirectory.map { $0 + "/metrics.jsonl" }).map { try MetricsLog(path: $0) } : nil
        let copy = lead && metrics != nil ? try reportDirectory.map { try MetricsLog(path: $0 + "/metrics.jsonl") } : nil
        let terminal = isatty(1) != 0
        let summary = try trainer.run { event in
            try log?.write(event)
            try copy?.write(event)
            switch event {
            case .progress(let p):
                let line = "step \(p.step)  \(fmt(p.samplesPerSecond)) samples/s  loss \(String(format: "%.4f", p.loss))  "
                    + "hot \(pct(p.hotHitRatio)) warm \(pct(p.warmHitRatio)) cold \(pct(p.coldHitRatio))"
                if terminal { print("\r\u{1B}[K" + line, terminator: ""); fflush(nil) } else { print(line) }
            case .evaluation(let e):
                if terminal { print("") }
                print("eval at step \(e.step) on \(e.samples) \(e.split) \(loaded.ranks ? "users" : "samples"): \(e.text)")
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
        let planted = loaded.synthetic.flatMap { source in summary.evaluation.map { source.plantedAUC(samples: $0.samples) } }
        // Sessions data knows what its planted rule reaches, and popularity, on the test split.
        let references = input.protocol == .nextItem
            ? loaded.sessions.flatMap { s in loaded.training.interactions.map { s.references($0, k: input.topK) } } : nil
        var object = summaryObject(summary)
        object["model"] = options.model.name
        if let cluster {
            // What crossed between processes, a step and a rank on average over the ranks.
            let steps = Double(max(summary.steps - (summary.resumedFromStep ?? 0), 1)), n = Double(cluster.ranks)
            object["ranks"] = cluster.ranks
            object["bytes_sent_per_step_per_rank"] = try cluster.sum(Double(cluster.bytesSent)) / n / steps
            object["bytes_received_per_step_per_rank"] = try cluster.sum(Double(cluster.bytesReceived)) / n / steps
            object["dense_bytes_sent_per_step_per_rank"] = try cluster.sum(Double(cluster.denseBytesSent)) / n / steps
        }
        if let planted { object["planted_auc"] = planted }
        if let references {
            object["planted_hit@\(input.topK)"] = references.planted
            object["popularity_hit@\(input.topK)"] = references.popularity
        }
        if let reportDirectory, lead {
            try writeJSONReport(object, named: "summary.json", in: reportDirectory)
            drawReport("train", reportDirectory)
        }
        if json {
            print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
        } else {
            if let planted, let auc = summary.evaluation?["auc"] {
                print("planted model's AUC on the same samples: \(String(format: "%.4f", planted)) "
                      + "(the model is \(String(format: "%.4f", planted - auc)) below it)")
            }
            if let references {
                print("on the test split, the planted rule (the successor first, then the most popular) has Hit@\(input.topK) "
                      + "\(String(format: "%.4f", references.planted)), popularity alone \(String(format: "%.4f", references.popularity))")
            }
            let t = summary.tables
            print("tables: \(t.rows) rows, \(megabytes(t.rowBytes)) of records (largest table \(megabytes(t.largestTableBytes)), "
                  + "budget \(megabytes(t.budgetBytesPerTable)) a table); lookups hot \(pct(t.hotHitRatio)) "
                  + "warm \(pct(t.warmHitRatio)) cold \(pct(t.coldHitRatio))"
                  + "; resident \(megabytes(summary.residentBytesBetweenSteps)) between steps"
                  + (summary.peakResidentBytes.map { ", peak \(megabytes($0))" } ?? ""))
            let skipped = summary.skippedLines > 0 ? "; skipped \(summary.skippedLines) malformed lines" : ""
            let loss = summary.finalLoss.isNaN ? "none (no step in this run)" : String(format: "%.4f", summary.finalLoss)
            print("trained \(summary.steps) steps, \(summary.samples) samples in \(fmt(summary.seconds)) s: "
                  + "\(fmt(summary.samplesPerSecond)) samples/s; final loss \(loss)" + skipped)
        }
    }

    /// The summary as one JSON object (snake_case keys).
    private func summaryObject(_ s: TrainingSummary) -> [String: Any] {
        let t = s.tables
        var object: [String: Any] = [
            "steps": s.steps, "samples": s.samples, "seconds": s.seconds, "samples_per_second": s.samplesPerSecond,
            "first_loss": s.firstLoss.isNaN ? "nan" : s.firstLoss as Any,
            "final_loss": s.finalLoss.isNaN ? "nan" : s.finalLoss as Any, "skipped_lines": s.skippedLines,
            "resident_bytes_between_steps": s.residentBytesBetweenSteps,
            "tables": ["rows": t.rows, "row_bytes": t.rowBytes, "largest_table_bytes": t.largestTableBytes,
                       "budget_bytes_per_table": t.budgetBytesPerTable, "overhead_bytes": t.overheadBytes,
                       "hot_hit_ratio": t.hotHitRatio, "warm_hit_ratio": t.warmHitRatio, "cold_hit_ratio": t.coldHitRatio],
        ]
        if let e = s.evaluation { object["evaluation"] = e.json }
        object["evaluations"] = s.evaluations.map(\.json)
        if let r = s.resumedFromStep { object["resumed_from_step"] = r }
        if let p = s.peakResidentBytes { object["peak_resident_bytes"] = p }
        if let a = s.anonymousBytesBetweenSteps { object["anonymous_bytes_between_steps"] = a }
        if let d = s.fileDirtyBytesBetweenSteps { object["file_dirty_bytes_between_steps"] = d }
        return object
    }

    /// The run's options from the flags and the data.
    private func trainingOptions(_ loaded: DataOptions.Loaded, tasks: [TrainingOptions.Task]?) throws -> TrainingOptions {
        let lossName = loss ?? (tasks.map { $0[0].loss == .meanSquaredError ? "mse" : "bce" } ?? loaded.defaultLoss)
        let lossValue: Loss = switch lossName {
        case "bce": .binaryCrossEntropy
        case "mse": .meanSquaredError
        case "bpr": .bpr
        case "softmax": .softmax
        default: throw ValidationError("--loss: bce, mse, bpr or softmax, not '\(lossName)'")
        }
        let count = negatives ?? (loaded.ranks && lossValue != .softmax && tasks == nil ? 1 : 0)
        var sampling: NegativeSampling? = nil
        if count > 0 { sampling = NegativeSampling(count: count, distribution: try negativeDistribution()) }
        let spec: ModelSpec
        do { spec = try ModelRegistry.spec(model, settings: try modelSettings()) } catch let error as ModelError {
            // A setting the model does not have is named as the flag that gave it.
            if let given = settingFlags().first(where: { $0.key == error.unknownSetting }) {
                throw ValidationError("\(given.flag) \(given.text): \(error.description)")
            }
            throw ValidationError(error.description)
        }
        if let problem = ModelRegistry.problem(spec, schema: loaded.schema) { throw ValidationError(problem) }
        return TrainingOptions(
            model: spec, schema: loaded.schema, batchSize: batchSize, steps: steps, epochs: epochs,
            denseOptimizer: try storeOptimizer(optimizer, rate: learningRate, flag: "--optimizer"),
            sparseOptimizer: try storeOptimizer(sparseOptimizer ?? optimizer, rate: sparseLearningRate ?? learningRate,
                                                flag: "--sparse-optimizer"),
            wideOptimizer: try storeOptimizer(wideOptimizer, rate: wideLearningRate, flag: "--wide-optimizer"),
            embeddingInitializer: .uniform(low: -0.01, high: 0.01), loss: lossValue, label: label, tasks: tasks, negatives: sampling,
            weightDecay: weightDecay, evaluateEvery: evalEvery, evaluationSamples: evalSamples, checkpointEvery: checkpointEvery,
            seed: seed)
    }

    /// --task, each LABEL:LOSS[:WEIGHT]; nil without one. A multi-task run names its labels and
    /// losses only there.
    private func tasks() throws -> [TrainingOptions.Task]? {
        guard !task.isEmpty else { return nil }
        for (flag, given) in [("--loss", loss), ("--label", label)] where given != nil {
            throw ValidationError("\(flag) \(given!) and --task exclude each other: each task names its label and loss")
        }
        if let negatives, negatives > 0 { throw ValidationError("--negatives and --task exclude each other: a task reads its label from the data") }
        return try task.map { text in
            let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard (2...3).contains(parts.count), !parts[0].isEmpty else {
                throw ValidationError("--task \(text): LABEL:LOSS or LABEL:LOSS:WEIGHT, such as click:bce or rating:mse:0.5")
            }
            let loss: Loss
            switch parts[1] {
            case "bce": loss = .binaryCrossEntropy
            case "mse": loss = .meanSquaredError
            default: throw ValidationError("--task \(text): a task's loss is bce or mse, not '\(parts[1])'")
            }
            var weight: Float = 1
            if parts.count == 3 {
                guard let w = Float(parts[2]), w.isFinite, w > 0 else {
                    throw ValidationError("--task \(text): the weight must be a positive number, not '\(parts[2])'")
                }
                weight = w
            }
            return TrainingOptions.Task(label: parts[0], loss: loss, weight: weight)
        }
    }

    /// --negative-sampling, checked whether or not negatives are drawn.
    private func negativeDistribution() throws -> NegativeSampling.Distribution {
        let parts = negativeSampling.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        switch parts.first ?? "" {
        case "uniform" where parts.count == 1: return .uniform
        case "popularity":
            guard let exponent = parts.count == 2 ? Double(parts[1]) : 1, exponent.isFinite, exponent >= 0 else {
                throw ValidationError("--negative-sampling popularity:EXPONENT wants a number >= 0, got '\(negativeSampling)'")
            }
            return .popularity(exponent: exponent)
        default: throw ValidationError("--negative-sampling: uniform or popularity[:EXPONENT], not '\(negativeSampling)'")
        }
    }

    /// The model-setting flags given: the setting each sets, the flag, its value as typed, and
    /// the setting's value.
    private func settingFlags() -> [(key: String, flag: String, text: String, value: () throws -> JSONValue)] {
        func sizes(_ text: String, _ flag: String) throws -> JSONValue {
            let parts = text.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
            guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) > 0 }) else {
                throw ValidationError("\(flag) wants sizes like 512-256-64, got '\(text)'")
            }
            return .array(parts.map { .number(Double($0!)) })
        }
        let given: [(String, String, String?, () throws -> JSONValue)] = [
            ("embedding_dim", "--embedding-dim", embeddingDim.map { "\($0)" }, { .number(Double(embeddingDim!)) }),
            ("mlp", "--mlp", mlp, { try sizes(mlp!, "--mlp") }),
            ("dropout", "--dropout", dropout.map { "\($0)" }, { .number(Double(dropout!)) }),
            ("cross_layers", "--cross-layers", crossLayers.map { "\($0)" }, { .number(Double(crossLayers!)) }),
            ("combine", "--combine", combine, { .string(combine!) }),
            ("mlp_embedding_dim", "--mlp-embedding-dim", mlpEmbeddingDim.map { "\($0)" }, { .number(Double(mlpEmbeddingDim!)) }),
            ("bottom_mlp", "--bottom-mlp", bottomMlp, { try sizes(bottomMlp!, "--bottom-mlp") }),
            ("top_mlp", "--top-mlp", topMlp, { try sizes(topMlp!, "--top-mlp") }),
        ]
        return given.compactMap { key, flag, text, value in text.map { (key, flag, $0, value) } }
    }

    /// The model settings the flags give, by configuration key.
    private func modelSettings() throws -> [String: JSONValue] {
        var out: [String: JSONValue] = [:]
        for given in settingFlags() { out[given.key] = try given.value() }
        for setting in settings {
            guard let eq = setting.firstIndex(of: "="), eq != setting.startIndex else {
                throw ValidationError("--set wants KEY=VALUE, got '\(setting)'")
            }
            let key = String(setting[..<eq]).replacingOccurrences(of: "-", with: "_"), text = String(setting[setting.index(after: eq)...])
            out[key] = (try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))) ?? .string(text)
        }
        return out
    }

    private func storeOptimizer(_ name: String, rate: Float, flag: String) throws -> Optimizer {
        switch name {
        case "sgd": return .sgd(learningRate: rate)
        case "adagrad": return .adagrad(learningRate: rate)
        case "rowwise-adagrad": return .rowwiseAdagrad(learningRate: rate)
        case "adam": return .adam(learningRate: rate)
        case "ftrl": return .ftrl(alpha: rate)
        case let other: throw ValidationError("\(flag): sgd, adagrad, rowwise-adagrad, adam or ftrl, not '\(other)'")
        }
    }
}

private func pct(_ x: Double) -> String { String(format: "%.1f%%", x * 100) }
private func megabytes(_ bytes: Int) -> String { String(format: "%.1f MB", Double(bytes) / 1e6) }

/// The metrics file: one JSON object per line.
final class MetricsLog {
    let path: String
    private let handle: FileHandle
    private let encoder: JSONEncoder

    init(path: String) throws {
        self.path = path
        // open(2), not FileManager.createFile, which writes a new file and renames it over
        // the path: a log written where the user points, be it a pipe or a device.
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ValidationError("--metrics \(path): cannot write the metrics file: \(String(cString: strerror(errno)))") }
        handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    }

    /// Appends one event's line; throws, naming the file, when it cannot be encoded or written.
    func write(_ event: TrainingEvent) throws {
        var object: [String: Any]
        switch event {
        case .progress(let p):
            do {
                guard let dict = try JSONSerialization.jsonObject(with: try encoder.encode(p)) as? [String: Any] else {
                    throw ToolError("not a JSON object")
                }
                object = dict
            } catch {
                throw ToolError("cannot encode a progress event for the metrics file \(path): \(error)")
            }
            object["event"] = "progress"
        case .evaluation(let e):
            object = e.json
            object["event"] = "evaluation"
        case .checkpoint(let step, let generation, let seconds):
            object = ["event": "checkpoint", "step": step, "generation": generation, "seconds": seconds]
        }
        object["time"] = Date().timeIntervalSince1970
        do {
            // Non-finite numbers (a diverged loss) are not JSON: they are written as strings.
            let line = try JSONSerialization.data(withJSONObject: Self.finite(object), options: [.sortedKeys])
            try handle.write(contentsOf: line + Data("\n".utf8))
        } catch {
            throw ToolError("--metrics \(path): cannot write the metrics file: \(error.localizedDescription)")
        }
    }

    /// `value` with every non-finite number, however deep, replaced by "nan", "inf" or "-inf".
    private static func finite(_ value: Any) -> Any {
        switch value {
        case let x as Double where !x.isFinite: return x.isNaN ? "nan" : x > 0 ? "inf" : "-inf"
        case let x as Float where !x.isFinite: return x.isNaN ? "nan" : x > 0 ? "inf" : "-inf"
        case let d as [String: Any]: return d.mapValues(finite)
        case let a as [Any]: return a.map(finite)
        default: return value
        }
    }
}
