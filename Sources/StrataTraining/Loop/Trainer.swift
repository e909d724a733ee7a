// The training loop: batches from a source (read and prepared ahead on a thread of its own),
// the model's forward and backward passes, the dense optimizer step, the store's sparse steps,
// periodic evaluation, and checkpoints that hold everything a run needs to continue exactly:
// the store's rows and their optimizer state, the dense weights and their optimizer state, the
// step, and the data position, all in one store checkpoint. Nothing in the loop knows which
// model it trains.
import Foundation
public import StrataModels
import StrataNN
public import StrataStore

/// What happened, for progress lines and the metrics file.
public enum TrainingEvent: Sendable {
    case progress(Progress)
    case evaluation(Evaluation)
    case checkpoint(step: Int, generation: UInt64, seconds: Double)

    public struct Progress: Sendable, Codable {
        public var step: Int
        public var samples: Int64
        public var samplesPerSecond: Double
        /// Mean training loss since the last progress event.
        public var loss: Double
        /// Share of lookups and updates served by each tier since the start, over all tables.
        public var hotHitRatio: Double
        public var warmHitRatio: Double
        public var coldHitRatio: Double
    }
}

/// The end of a run.
public struct TrainingSummary: Sendable {
    public var steps: Int
    public var samples: Int64
    public var seconds: Double
    public var samplesPerSecond: Double
    /// The mean training loss of this run's first 100 steps (fewer if it made fewer).
    public var firstLoss: Double
    /// The mean training loss of the last 100 steps (fewer if the run made fewer).
    public var finalLoss: Double
    /// The last evaluation on each split, the final split last.
    public var evaluations: [Evaluation]
    public var resumedFromStep: Int?
    /// Malformed input lines left out (`--on-malformed skip`), counted from the start of the
    /// epoch the run resumed in.
    public var skippedLines: Int64
    public var tables: Tables
    /// The kernel's high-water mark of the process's resident set (VmHWM), if known: it
    /// includes transients inside calls, such as a checkpoint's commit.
    public var peakResidentBytes: Int?
    /// The largest resident set seen between steps while no checkpoint is being written
    /// (sampled every 8 steps and at each checkpoint, once the one before is durable): the
    /// memory training holds, without a checkpoint writer's pages and copies, which only
    /// `peakResidentBytes` sees.
    public var residentBytesBetweenSteps: Int
    /// The largest anonymous memory (RssAnon) and dirty file pages seen at the same moments,
    /// if /proc gives them: what the budgets bound, without the clean page cache of LMDB's
    /// map, which the kernel reclaims under pressure (see `Store.Options.mapResidentBytes`).
    public var anonymousBytesBetweenSteps: Int?
    public var fileDirtyBytesBetweenSteps: Int?

    /// The final evaluation: the last split evaluated at the end.
    public var evaluation: Evaluation? { evaluations.last }

    /// The embedding tables at the end, summed over tables.
    public struct Tables: Sendable, Codable {
        public var rows: Int
        /// Rows × record bytes (values and optimizer state): what all-in-memory would hold.
        public var rowBytes: Int
        /// The largest table's rows × record bytes.
        public var largestTableBytes: Int
        /// Hot and warm budgets per table.
        public var budgetBytesPerTable: Int
        /// Memory beyond the budgets: index, admission state, the list of rows changed since the
        /// last checkpoint, copies of rows a checkpoint being written froze. The most seen.
        public var overheadBytes: Int
        /// Where this run's lookups and updates found their rows.
        public var hotHitRatio: Double, warmHitRatio: Double, coldHitRatio: Double
    }
}

public enum TrainingError: Error, CustomStringConvertible {
    case mismatch(String)
    case checkpoint(String)
    /// A pass over the data yielded no sample (an empty file, or every line malformed).
    case noData(String)
    /// The processes of a run over several disagree about what they did.
    case ranks(String)

    public var description: String {
        switch self {
        case .mismatch(let s): "the model does not fit the data: \(s)"
        case .checkpoint(let s): "cannot resume: \(s)"
        case .noData(let s): "\(s) holds no usable sample"
        case .ranks(let s): "the ranks of the run disagree: \(s)"
        }
    }
}

/// The data a run reads: the training stream, how to evaluate, and the items and users it
/// knows (for negative sampling).
public struct TrainingData {
    public var train: any BatchSource
    /// Evaluated every `evaluateEvery` steps (a validation split, or separate evaluation data;
    /// without one, `test` is).
    public var validation: (any Evaluator)?
    /// Evaluated at the end, after `validation` (a test split).
    public var test: (any Evaluator)?
    /// The items and the users' training items, which negative sampling draws from.
    public var interactions: Interactions?

    public init(train: any BatchSource, validation: (any Evaluator)? = nil, test: (any Evaluator)? = nil,
                interactions: Interactions? = nil) {
        self.train = train
        self.validation = validation
        self.test = test
        self.interactions = interactions
    }
}

public final class Trainer {
    public let store: Store
    public let options: TrainingOptions
    public let resources: TrainingResources
    public let network: Network
    public private(set) var step = 0
    public private(set) var samples: Int64 = 0
    public private(set) var resumedFromStep: Int?
    private var residentBetweenSteps = 0
    private var memoryBetweenSteps: ProcessMemory?
    /// The tables' overhead just before a checkpoint, when the change lists are longest, and
    /// every 8 steps while one is written, as the copies of rows it froze grow.
    private var peakOverhead = 0
    /// The checkpoint being written while training goes on, and the step it holds.
    private var writing: (checkpoint: PendingCheckpoint, step: Int)?

    private var source: any BatchSource
    private let validation: (any Evaluator)?
    private let test: (any Evaluator)?
    private let negatives: NegativeSampler?
    /// The sampled softmax's candidates (`--loss softmax` with negatives), or nil.
    private let sampled: SampledCandidates?
    /// A next-item model's catalog: the full softmax's candidates, and every evaluation's.
    private var catalog: [UInt64] = []
    /// Where a next-item model's candidates' features come from (`Interactions.setCandidates`).
    private var candidateSource: Interactions?
    private let label: Int
    /// A multi-task run's tasks (`TrainingOptions.taskColumns`), [] for a run of one.
    private let tasks: [(column: Int, loss: Loss, weight: Float)]
    /// A run over several processes (`Cluster`): this process trains its part of each batch
    /// on its shard of the tables. Nil: one process.
    private let cluster: Cluster?

    /// Builds the model over `store` (creating the tables it asks for). With `resume`,
    /// continues from the store's last checkpoint if it holds a run (the options must then be
    /// the same). With `cluster`, `store` is this rank's shard, and every rank makes this call
    /// with the same options and data.
    public init(store: Store, options: TrainingOptions, resources: TrainingResources, data: TrainingData, resume: Bool,
                cluster: Cluster? = nil) throws {
        guard data.train.schema == options.schema else {
            throw TrainingError.mismatch("the training data has \(data.train.schema.summary), the options' schema \(options.schema.summary)")
        }
        for case let evaluator? in [data.validation, data.test] where evaluator.schema != options.schema {
            throw TrainingError.mismatch("the \(evaluator.split) data has \(evaluator.schema.summary), the training data \(options.schema.summary)")
        }
        tasks = try options.taskColumns()
        label = try tasks.first?.column ?? options.labelColumn()
        if let n = options.negatives, options.loss == .softmax {
            // The softmax's negatives are the sampled softmax's candidates, not rows. BERT4Rec's
            // masked items come from the whole history, which those need not hold. (Refused
            // before any table is made.)
            guard options.model.name != BERT4Rec.name else {
                throw TrainingError.mismatch("model \(options.model.name) names masked items of the whole history: train it with the full softmax (drop --negatives)")
            }
            guard let interactions = data.interactions else {
                throw TrainingError.mismatch("the sampled softmax needs data that names its users and items (a schema with \"user\" and \"item\")")
            }
            sampled = try SampledCandidates(n, interactions: interactions, seed: options.seed)
            negatives = nil
        } else if let n = options.negatives {
            guard let interactions = data.interactions else {
                throw TrainingError.mismatch("negative sampling needs data that names its users and items (a schema with \"user\" and \"item\")")
            }
            guard n.count >= 1 else { throw TrainingError.mismatch("negative sampling draws at least one negative per sample") }
            // Lines with a binary label of 0 are no interaction to draw negatives for.
            let binary = options.schema.labels.indices.contains(label) && options.schema.labels[label].kind == .binary
            negatives = try NegativeSampler(n, interactions: interactions, seed: options.seed, positivesBy: binary ? label : nil,
                                            schema: options.schema)
            sampled = nil
        } else {
            guard options.loss != .bpr else { throw TrainingError.mismatch("the BPR loss ranks positives above sampled negatives: give negatives") }
            negatives = nil
            sampled = nil
        }
        // Checked before any table is created: a resume with other options must say so, not
        // fail on a table spec.
        let saved = resume ? try CheckpointPayload.decode(store.lastCheckpoint.payload) : nil
        if let saved {
            guard saved.state.options == options else {
                throw TrainingError.checkpoint("the last checkpoint was made with other options (\(options.differences(from: saved.state.options))); resume with the same ones")
            }
            if let identity = saved.state.data, identity != data.train.identity {
                throw TrainingError.checkpoint("the last checkpoint was made on other data (\(identity)), not \(data.train.identity)")
            }
        }
        if let cluster {
            // Every shard must continue from the same step, or all start afresh.
            let steps = try cluster.world.allgather(Int64(saved?.state.step ?? -1))
            guard Set(steps).count == 1 else {
                let listed = steps.enumerated().map { "rank \($0.offset): \($0.element < 0 ? "none" : "step \($0.element)")" }
                throw TrainingError.checkpoint("the shards' last checkpoints are of different steps (\(listed.joined(separator: ", ")))")
            }
        }
        self.cluster = cluster
        self.store = store
        self.options = options
        self.resources = resources
        source = data.train
        validation = data.validation
        test = data.test
        Parallel.threads = resources.threads
        let budget = resources.budget
        network = try options.network { request in try store.createTable(request.name, options.spec(for: request), budget: budget) }
        if network.scoresItems {
            guard let interactions = data.interactions else {
                throw TrainingError.mismatch("model \(options.model.name) predicts the next item, and the data names no items")
            }
            guard options.loss == .softmax else {
                throw TrainingError.mismatch("model \(options.model.name) scores every item: train it with the softmax loss, not \(options.loss)")
            }
            catalog = interactions.items.ids
            candidateSource = interactions
            try interactions.setCandidates(of: network, catalog)
        } else if options.loss == .softmax && tasks.isEmpty {
            throw TrainingError.mismatch("the softmax loss is over the items a next-item model scores; model \(options.model.name) scores one value a row")
        }
        network.exchange = cluster?.rows
        options.denseOptimizer.prepare(network.parameters)
        if let saved {
            try ParameterArchive.decode(saved.archive, into: network.parameters)
            try source.seek(to: saved.state.position)
            step = saved.state.step
            samples = saved.state.samples
            resumedFromStep = saved.state.step
        }
    }

    /// Whether the run has nothing left to do: a resume of a finished run.
    public var isFinished: Bool {
        if let steps = options.steps { return step >= steps }
        return source.position.epoch >= options.epochs
    }

    /// Trains to the end (steps or epochs), reporting as it goes. Denormals are flushed to
    /// zero throughout (`Denormals`).
    public func run(report: (TrainingEvent) throws -> Void) throws -> TrainingSummary {
        try Denormals.flushed { try train(report: report) }
    }

    private func train(report: (TrainingEvent) throws -> Void) throws -> TrainingSummary {
        // With several processes, each reads the global batch and trains on its part.
        let batchSize = options.batchSize * (cluster?.ranks ?? 1)
        var dScores = Tensor(rows: 0, columns: network.scoresItems ? network.candidateKeys.count : max(tasks.count, 1))
        let taskScores = Tensor(rows: 0, columns: 1), taskGradient = Tensor(rows: 0, columns: 1)
        let started = Date()
        let startSamples = samples
        var lossSum = 0.0, lossCount = 0
        var recentLosses = [Double](repeating: 0, count: 100), recentCount = 0
        var firstLosses = 0.0
        var lastReport = Date(), samplesAtReport = samples
        var position = source.position
        var epochsDone = position.epoch
        var evaluations: [String: Evaluation] = [:]
        let preparation = { BatchPreparation(schema: self.options.schema, negatives: self.negatives) }
        let prefetcher = resources.lookahead > 0
            ? Prefetcher(source: source, batchSize: batchSize, depth: resources.lookahead, preparation: preparation(),
                         warming: network, owned: cluster?.owns(network.tables.map(\.name))) : nil
        defer { prefetcher?.stop() }
        let inline = prefetcher == nil ? preparation() : nil
        let local = Batch(schema: options.schema)

        func nextBatch() throws -> PositionedBatch {
            if let prefetcher { return try prefetcher.next() }
            return try inline!.next(&source, size: batchSize, into: local)
        }
        var skippedBefore: Int64 = 0, skippedThisEpoch: Int64 = 0
        let finished = isFinished
        // Where the last checkpoint left the data: the end saves a position past it (a step
        // trained, or an epoch's end read since).
        var checkpointed = resumedFromStep != nil ? position : nil
        // An interval's checkpoint waits for the next read: if that read ends the last epoch,
        // the end's checkpoint is the one (an epoch's end is known only once it is read).
        var pendingCheckpoint: SourcePosition?

        while !finished {
            if let steps = options.steps, step >= steps { break }
            if options.steps == nil && epochsDone >= options.epochs { break }
            let item = try nextBatch()
            if let pending = pendingCheckpoint {
                pendingCheckpoint = nil
                if !(item.endOfEpoch && options.steps == nil && epochsDone + 1 >= options.epochs) {
                    try checkpoint(pending, report)
                    checkpointed = pending
                }
            }
            if item.endOfEpoch {
                // Without this, --steps on an empty file would loop forever.
                guard position.sample > 0 else { throw TrainingError.noData(source.identity) }
                epochsDone += 1
                position = item.after
                skippedBefore += item.skippedLines
                skippedThisEpoch = 0
                continue
            }
            skippedThisEpoch = item.skippedLines
            let batch = item.batch
            if let cluster, batch.count / batch.groupSize < cluster.ranks {
                // A batch with fewer groups than ranks (an epoch's short last one) leaves some
                // rank nothing: every rank skips it alike.
                position = item.after
                prefetcher?.recycle(batch)
                continue
            }
            if let sampled {
                // The whole batch's candidates, on every rank.
                try sampled.prepare(batch, item: network.targetFeature, step: step + 1)
                try candidateSource!.setCandidates(of: network, sampled.keys, offsets: sampled.offsets)
                if dScores.columns != sampled.keys.count { dScores = Tensor(rows: 0, columns: sampled.keys.count) }
            }
            if let cluster {
                let part = cluster.part(of: batch.count, groupSize: batch.groupSize)
                batch.keep(part)
                network.firstRow = part.lowerBound
            }
            let scores = try network.forward(batch, training: true, step: step + 1)
            var loss: Double
            if network.scoresItems {
                loss = try network.withTargetClasses(batch) { classes in
                    let terms = try meanOver(options.loss.terms(scores, labels: .classes(classes)))
                    return options.loss.evaluate(scores, labels: .classes(classes), meanOver: terms, gradient: dScores)
                }
            } else if tasks.isEmpty {
                let labels: Loss.Labels = negatives != nil ? .groups : .column(batch.labels + label, stride: batch.labelColumns)
                let terms = try meanOver(options.loss.terms(scores, labels: labels, groupSize: batch.groupSize))
                loss = options.loss.evaluate(scores, labels: labels, groupSize: batch.groupSize, meanOver: terms, gradient: dScores)
            } else {
                loss = Self.taskLoss(tasks, scores, batch, meanOver: try meanOver(batch.count), scratch: (taskScores, taskGradient),
                                     gradient: dScores)
            }
            try network.backward(dScores, step: step + 1)
            if let cluster {
                try cluster.sumGradients(network.parameters)
                loss = try cluster.sum(loss)
            }
            options.denseOptimizer.step(network.parameters, step: step + 1)
            step += 1
            samples += Int64(item.samples)
            position = item.after
            lossSum += loss
            lossCount += 1
            recentLosses[recentCount % recentLosses.count] = loss
            if recentCount < recentLosses.count { firstLosses += loss }
            recentCount += 1
            prefetcher?.recycle(batch)
            if step % 8 == 0 {
                // The copies of frozen rows that steps change grow as a checkpoint is written.
                if writing != nil { try noteOverhead() } else { sampleResident() }
            }
            if let writing {
                // Several processes end a checkpoint together, at a step all of them agree on.
                let ended = writing.checkpoint.outcome != nil
                if try cluster.map({ try $0.all(ended) }) ?? ended { try checkpointWritten(report) }
            }

            let now = Date()
            if now.timeIntervalSince(lastReport) >= 1 {
                try report(.progress(progress(lossSum / Double(max(lossCount, 1)),
                                          rate: Double(samples - samplesAtReport) / now.timeIntervalSince(lastReport))))
                lastReport = now
                samplesAtReport = samples
                lossSum = 0
                lossCount = 0
            }
            // The end of the run evaluates and checkpoints anyway: not twice.
            let ending = options.steps.map { step >= $0 } ?? false
            if options.evaluateEvery > 0 && step % options.evaluateEvery == 0 && !ending,
               let e = try evaluate(validation ?? test, limit: options.evaluationSamples) {
                evaluations[e.split] = e
                try report(.evaluation(e))
            }
            if options.checkpointEvery > 0 && step % options.checkpointEvery == 0 && !ending {
                pendingCheckpoint = position
            }
        }
        // The last stretch's progress, so that every run's metrics end with one (a run shorter
        // than the reporting interval has no other).
        if samples > samplesAtReport {
            try report(.progress(progress(lossSum / Double(max(lossCount, 1)),
                                      rate: Double(samples - samplesAtReport) / max(Date().timeIntervalSince(lastReport), 1e-9))))
        }
        var order: [String] = []
        for (evaluator, limit) in [(validation, options.evaluationSamples), (test, nil)] {
            // An evaluation at this very step, of as many samples, stands: nothing has changed since.
            if let split = evaluator?.split, let last = evaluations[split], last.step == step, limit == options.evaluationSamples {
                order.append(split)
                continue
            }
            if let e = try evaluate(evaluator, limit: limit) {
                evaluations[e.split] = e
                order.append(e.split)
                try report(.evaluation(e))
            }
        }
        if checkpointed != position { try checkpoint(position, report) }
        try checkpointWritten(report)
        let seconds = Date().timeIntervalSince(started)
        let trained = samples - startSamples
        return TrainingSummary(
            steps: step, samples: samples, seconds: seconds,
            samplesPerSecond: trained > 0 ? Double(trained) / max(seconds, 1e-9) : 0,
            firstLoss: recentCount == 0 ? .nan : firstLosses / Double(min(recentCount, recentLosses.count)),
            finalLoss: recentCount == 0 ? .nan : recentLosses.prefix(recentCount).reduce(0, +) / Double(min(recentCount, recentLosses.count)),
            evaluations: order.compactMap { evaluations[$0] }, resumedFromStep: resumedFromStep,
            skippedLines: skippedBefore + skippedThisEpoch, tables: try tableSummary(), peakResidentBytes: peakResidentBytes(),
            residentBytesBetweenSteps: residentBetweenSteps, anonymousBytesBetweenSteps: memoryBetweenSteps?.anonymous,
            fileDirtyBytesBetweenSteps: memoryBetweenSteps?.fileDirty)
    }

    /// A multi-task step's loss, Σ weight · loss of each task on its output column, and its
    /// gradient, a column per task, into `gradient`.
    private static func taskLoss(_ tasks: [(column: Int, loss: Loss, weight: Float)], _ scores: Tensor, _ batch: Batch, meanOver: Int?,
                                 scratch: (scores: Tensor, gradient: Tensor), gradient: Tensor) -> Double {
        let n = scores.rows, t = tasks.count
        precondition(scores.columns == t, "a multi-task model scores a column per task")
        gradient.resize(rows: n)
        scratch.scores.resize(rows: n)
        var total = 0.0
        for (k, task) in tasks.enumerated() {
            for r in 0..<n { scratch.scores.data[r] = scores.data[r * t + k] }
            let loss = task.loss.evaluate(scratch.scores, labels: .column(batch.labels + task.column, stride: batch.labelColumns),
                                          meanOver: meanOver, gradient: scratch.gradient)
            total += Double(task.weight) * loss
            for r in 0..<n { gradient.data[r * t + k] = task.weight * scratch.gradient.data[r] }
        }
        return total
    }

    /// The count a loss's mean is over: with several processes, the whole batch's (the sum
    /// of every rank's `terms`); nil, this batch's own, with one.
    private func meanOver(_ terms: Int) throws -> Int? {
        guard let cluster else { return nil }
        return Int(try cluster.sum(Int64(terms)))
    }

    /// Starts a checkpoint of this step, written while training goes on, after waiting for
    /// the one before: steps stall only while the store freezes its changed rows.
    private func checkpoint(_ position: SourcePosition, _ report: (TrainingEvent) throws -> Void) throws {
        try noteOverhead()
        try checkpointWritten(report)
        // The change lists at their longest, and no writer beside the steps.
        sampleResident()
        let state = TrainerState(options: options, data: source.identity, step: step, samples: samples, position: position)
        // Several processes write two-phase checkpoints, kept once every shard holds its own.
        writing = (try store.beginCheckpoint(payload: try CheckpointPayload.encode(state, parameters: network.parameters),
                                             twoPhase: cluster != nil), step)
    }

    /// Waits for the checkpoint being written, if any, and reports it; throws its failure.
    private func checkpointWritten(_ report: (TrainingEvent) throws -> Void) throws {
        guard let (checkpoint, at) = writing else { return }
        writing = nil
        let info = try checkpoint.wait()
        if let cluster {
            // Every shard holds it, undecided (a rank that failed has ended the run). Rank 0
            // keeps its own first: from that commit on, the run's checkpoint is this one, and a
            // resume keeps it in every shard (`Cluster.openShard`); the others then keep theirs.
            resources.atCheckpointPoint?(.written, at)
            let generations = try cluster.world.allgather(Int64(info.generation))
            guard Set(generations).count == 1 else {
                throw TrainingError.ranks("the shards wrote checkpoints \(generations.map(String.init).joined(separator: ", ")) at step \(at): each shard's count of checkpoints must be the same")
            }
            if cluster.rank == 0 {
                try store.commitCheckpoint()
                resources.atCheckpointPoint?(.kept, at)
            }
            try cluster.world.barrier()
            if cluster.rank != 0 {
                try store.commitCheckpoint()
                resources.atCheckpointPoint?(.kept, at)
            }
        }
        try report(.checkpoint(step: at, generation: info.generation, seconds: info.durationSeconds))
    }

    private func sampleResident() {
        residentBetweenSteps = max(residentBetweenSteps, residentBytes())
        guard let now = ProcessMemory.current() else { return }
        memoryBetweenSteps = memoryBetweenSteps.map { var m = $0; m.raise(to: now); return m } ?? now
    }

    private func noteOverhead() throws {
        peakOverhead = max(peakOverhead, try network.tables.reduce(0) { $0 + (try $1.statistics().bytes.overhead) })
    }

    private func progress(_ loss: Double, rate: Double) -> TrainingEvent.Progress {
        let t = try? tableSummary()
        return .init(step: step, samples: samples, samplesPerSecond: rate, loss: loss, hotHitRatio: t?.hotHitRatio ?? 0,
                     warmHitRatio: t?.warmHitRatio ?? 0, coldHitRatio: t?.coldHitRatio ?? 0)
    }

    private func tableSummary() throws -> TrainingSummary.Tables {
        var rows = 0, bytes = 0, largest = 0, overhead = 0
        var traffic = TableStatistics.Traffic()
        for table in network.tables {
            let s = try table.statistics()
            rows += s.rows.total
            bytes += s.rows.total * s.recordBytes
            largest = max(largest, s.rows.total * s.recordBytes)
            overhead += s.bytes.overhead
            traffic += s.traffic
        }
        let total = Double(max(traffic.accesses, 1))
        return .init(rows: rows, rowBytes: bytes, largestTableBytes: largest,
                     budgetBytesPerTable: resources.budget.hotBytes + resources.budget.warmBytes,
                     overheadBytes: max(overhead, peakOverhead),
                     hotHitRatio: Double(traffic.hotHits) / total,
                     warmHitRatio: Double(traffic.warmHits + traffic.spillHits) / total,
                     coldHitRatio: Double(traffic.coldHits) / total)
    }

    /// The model on the validation data, else the test data (read-only: nothing moves in the
    /// store).
    public func evaluate() throws -> Evaluation? {
        try Denormals.flushed { try evaluate(validation ?? test, limit: validation == nil ? nil : options.evaluationSamples) }
    }

    private func evaluate(_ evaluator: (any Evaluator)?, limit: Int?) throws -> Evaluation? {
        guard let evaluator, limit.map({ $0 > 0 }) ?? true else { return nil }
        // The sampled softmax leaves a step's candidates; evaluation ranks the catalog.
        if sampled != nil { try candidateSource!.setCandidates(of: network, catalog) }
        return try evaluator.evaluate(network, step: step, limit: limit)
    }
}
