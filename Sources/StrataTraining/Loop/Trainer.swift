// The training loop: batches from a source (read ahead on a thread of its own), DLRM's
// forward and backward passes, the dense optimizer step, the store's sparse steps, periodic
// evaluation, and checkpoints that hold everything a run needs to continue exactly: the
// store's rows and their optimizer state, the dense weights and their optimizer state, the
// step, and the data position, all in one store checkpoint.
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

    public struct Evaluation: Sendable, Codable {
        public var step: Int
        public var samples: Int
        public var auc: Double
        public var logloss: Double
        public var accuracy: Double
    }
}

/// The end of a run.
public struct TrainingSummary: Sendable, Codable {
    public var steps: Int
    public var samples: Int64
    public var seconds: Double
    public var samplesPerSecond: Double
    /// The mean training loss of the last 100 steps (fewer if the run made fewer).
    public var finalLoss: Double
    public var evaluation: TrainingEvent.Evaluation?
    public var resumedFromStep: Int?
    /// Malformed input lines left out (`--on-malformed skip`), counted from the start of the
    /// epoch the run resumed in.
    public var skippedLines: Int64
    public var tables: Tables
    /// The kernel's high-water mark of the process's resident set (VmHWM), if known: it
    /// includes transients inside calls, such as a checkpoint's commit.
    public var peakResidentBytes: Int?
    /// The largest resident set seen between steps (sampled every 8 steps and before each
    /// checkpoint): the memory training holds, without a checkpoint commit's transient.
    public var residentBytesBetweenSteps: Int

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
        /// last checkpoint. The most seen, just before a checkpoint or at the end.
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

    public var description: String {
        switch self {
        case .mismatch(let s): "the model does not fit the data: \(s)"
        case .checkpoint(let s): "cannot resume: \(s)"
        case .noData(let s): "\(s) holds no usable sample"
        }
    }
}

/// The part of a checkpoint's payload that is not dense weights.
struct TrainerState: Codable {
    var options: TrainingOptions
    /// The training source's `identity` (absent in checkpoints written before it was kept).
    var data: String?
    var step: Int
    var samples: Int64
    var position: SourcePosition
}

public final class Trainer {
    public let store: Store
    public let options: TrainingOptions
    public let resources: TrainingResources
    public let model: DLRM
    public private(set) var step = 0
    public private(set) var samples: Int64 = 0
    public private(set) var resumedFromStep: Int?
    private var residentBetweenSteps = 0
    /// The tables' overhead just before a checkpoint, when the change lists are longest.
    private var peakOverhead = 0

    private var source: any ClickSource
    private let evaluationSource: (any ClickSource)?
    private let tables: [Table]

    /// Builds the model over `store` (creating one table per categorical feature, `c0`,
    /// `c1`, ...). With `resume`, continues from the store's last checkpoint if it holds a
    /// run (the options must then be the same).
    public init(store: Store, options: TrainingOptions, resources: TrainingResources,
                train: any ClickSource, evaluate: (any ClickSource)?, resume: Bool) throws {
        let schema = train.schema
        guard schema.dense == options.model.denseFeatures, schema.sparse == options.model.sparseFeatures else {
            throw TrainingError.mismatch("the data has \(schema.dense) dense and \(schema.sparse) categorical features, "
                + "the model expects \(options.model.denseFeatures) and \(options.model.sparseFeatures)")
        }
        if let e = evaluate, e.schema != schema {
            throw TrainingError.mismatch("the evaluation data's features differ from the training data's")
        }
        // Checked before any table is created: a resume with other options must say so, not
        // fail on a table spec.
        let saved = resume ? try Self.savedRun(store) : nil
        if let saved {
            guard saved.state.options == options else {
                throw TrainingError.checkpoint("the last checkpoint was made with other options (\(options.differences(from: saved.state.options))); resume with the same ones")
            }
            if let data = saved.state.data, data != train.identity {
                throw TrainingError.checkpoint("the last checkpoint was made on other data (\(data)), not \(train.identity)")
            }
        }
        self.store = store
        self.options = options
        self.resources = resources
        source = train
        evaluationSource = evaluate
        let spec = TableSpec(dimension: options.model.embeddingDimension,
                             initializer: Initializer(options.embeddingInitializer, seed: options.seed),
                             optimizer: options.sparseOptimizer)
        tables = try (0..<options.model.sparseFeatures).map { try store.createTable("c\($0)", spec, budget: resources.budget) }
        Parallel.threads = resources.threads
        model = DLRM(config: options.model, tables: tables, seed: options.seed)
        options.denseOptimizer.prepare(model.parameters)
        if let saved {
            try ParameterArchive.decode(saved.archive, into: model.parameters)
            try source.seek(to: saved.state.position)
            step = saved.state.step
            samples = saved.state.samples
            resumedFromStep = saved.state.step
        }
    }

    /// A checkpoint payload is this, a little-endian UInt32 length, that many bytes of
    /// `TrainerState` JSON, then the `ParameterArchive` of the dense parameters.
    private static let payloadMagic = Array("STRN".utf8)

    /// The run the store's last checkpoint holds, if any: its state and dense archive.
    private static func savedRun(_ store: Store) throws -> (state: TrainerState, archive: ArraySlice<UInt8>)? {
        let payload = store.lastCheckpoint.payload
        guard !payload.isEmpty else { return nil }
        guard payload.count >= 8, payload[0..<4].elementsEqual(Self.payloadMagic) else {
            throw TrainingError.checkpoint("the store's last checkpoint does not hold a training run")
        }
        let length = Int(payload[4]) | Int(payload[5]) << 8 | Int(payload[6]) << 16 | Int(payload[7]) << 24
        guard payload.count >= 8 + length,
              let state = try? JSONDecoder().decode(TrainerState.self, from: Data(payload[8..<(8 + length)])) else {
            throw TrainingError.checkpoint("the training state in the last checkpoint is unreadable")
        }
        return (state, payload[(8 + length)...])
    }

    private func payload(position: SourcePosition) -> [UInt8] {
        let state = TrainerState(options: options, data: source.identity, step: step, samples: samples, position: position)
        let json = (try? JSONEncoder().encode(state)) ?? Data()
        var out = Self.payloadMagic
        withUnsafeBytes(of: UInt32(json.count).littleEndian) { out += $0 }
        out += json
        out += ParameterArchive.encode(model.parameters)
        return out
    }

    /// Trains to the end (steps or epochs), reporting as it goes. Denormals are flushed to
    /// zero throughout (`Denormals`).
    public func run(report: (TrainingEvent) -> Void) throws -> TrainingSummary {
        try Denormals.flushed { try train(report: report) }
    }

    private func train(report: (TrainingEvent) -> Void) throws -> TrainingSummary {
        let batchSize = options.batchSize
        let dense = Tensor(rows: batchSize, columns: options.model.denseFeatures)
        let dLogits = Tensor(rows: batchSize, columns: 1)
        let started = Date()
        let startSamples = samples
        var lossSum = 0.0, lossCount = 0
        var recentLosses = [Double](repeating: 0, count: 100), recentCount = 0
        var lastReport = Date(), samplesAtReport = samples
        var epochsDone = 0
        var position = source.position
        var lastEvaluation: TrainingEvent.Evaluation?
        let prefetcher = resources.lookahead > 0
            ? Prefetcher(source: source, batchSize: batchSize, depth: resources.lookahead, warming: tables) : nil
        defer { prefetcher?.stop() }
        var local = ClickBatch(schema: source.schema)

        func nextBatch() throws -> PositionedBatch {
            if let prefetcher { return try prefetcher.next() }
            let n = try source.next(batchSize, into: &local)
            return PositionedBatch(batch: local, after: source.position, endOfEpoch: n == 0,
                                   skippedLines: source.skippedLines)
        }
        var skippedBefore: Int64 = 0, skippedThisEpoch: Int64 = 0

        while true {
            if let steps = options.steps, step >= steps { break }
            if options.steps == nil && epochsDone >= options.epochs { break }
            var item = try nextBatch()
            if item.endOfEpoch {
                // Without this, --steps on an empty file would loop forever.
                guard position.sample > 0 else {
                    throw TrainingError.noData(source.identity)
                }
                epochsDone += 1
                position = item.after
                skippedBefore += item.skippedLines
                skippedThisEpoch = 0
                continue
            }
            skippedThisEpoch = item.skippedLines
            // Taken out of the item, so that it is the only reference when it goes back.
            let batch = item.batch
            item.batch = ClickBatch(schema: batch.schema)
            dense.resize(rows: batch.count)
            batch.dense.withUnsafeBufferPointer { dense.data.update(from: $0.baseAddress!, count: $0.count) }
            let logits = try batch.keys.withUnsafeBufferPointer { keys in
                try model.forward(dense: dense, keys: keys, training: true)
            }
            let loss = batch.labels.withUnsafeBufferPointer { options.loss.evaluate(logits, targets: $0.baseAddress!, gradient: dLogits) }
            try model.backward(dLogits)
            options.denseOptimizer.step(model.parameters, step: step + 1)
            step += 1
            samples += Int64(batch.count)
            position = item.after
            lossSum += loss
            lossCount += 1
            recentLosses[recentCount % recentLosses.count] = loss
            recentCount += 1
            prefetcher?.recycle(consume batch)
            if step % 8 == 0 { residentBetweenSteps = max(residentBetweenSteps, residentBytes()) }

            let now = Date()
            if now.timeIntervalSince(lastReport) >= 1 {
                report(.progress(progress(lossSum / Double(max(lossCount, 1)),
                                          rate: Double(samples - samplesAtReport) / now.timeIntervalSince(lastReport))))
                lastReport = now
                samplesAtReport = samples
                lossSum = 0
                lossCount = 0
            }
            let finishing = options.steps.map { step >= $0 } ?? false
            if options.evaluateEvery > 0 && step % options.evaluateEvery == 0 && !finishing, let e = try evaluation() {
                lastEvaluation = e
                report(.evaluation(e))
            }
            if options.checkpointEvery > 0 && step % options.checkpointEvery == 0 && !finishing {
                try checkpoint(position, report)
            }
        }
        // The last stretch's progress, so that every run's metrics end with one (a run shorter
        // than the reporting interval has no other).
        if samples > samplesAtReport {
            report(.progress(progress(lossSum / Double(max(lossCount, 1)),
                                      rate: Double(samples - samplesAtReport) / max(Date().timeIntervalSince(lastReport), 1e-9))))
        }
        if let e = try evaluation() {
            lastEvaluation = e
            report(.evaluation(e))
        }
        try checkpoint(position, report)
        let seconds = Date().timeIntervalSince(started)
        return TrainingSummary(
            steps: step, samples: samples, seconds: seconds,
            samplesPerSecond: Double(samples - startSamples) / max(seconds, 1e-9), finalLoss: recentCount == 0 ? .nan : recentLosses.prefix(recentCount).reduce(0, +) / Double(min(recentCount, recentLosses.count)),
            evaluation: lastEvaluation, resumedFromStep: resumedFromStep, skippedLines: skippedBefore + skippedThisEpoch,
            tables: try tableSummary(), peakResidentBytes: peakResidentBytes(),
            residentBytesBetweenSteps: residentBetweenSteps)
    }

    private func checkpoint(_ position: SourcePosition, _ report: (TrainingEvent) -> Void) throws {
        residentBetweenSteps = max(residentBetweenSteps, residentBytes())
        peakOverhead = max(peakOverhead, try tables.reduce(0) { $0 + (try $1.statistics().bytes.overhead) })
        let info = try store.checkpoint(payload: payload(position: position))
        report(.checkpoint(step: step, generation: info.generation, seconds: info.durationSeconds))
    }

    private func progress(_ loss: Double, rate: Double) -> TrainingEvent.Progress {
        let t = try? tableSummary()
        return .init(step: step, samples: samples, samplesPerSecond: rate, loss: loss, hotHitRatio: t?.hotHitRatio ?? 0,
                     warmHitRatio: t?.warmHitRatio ?? 0, coldHitRatio: t?.coldHitRatio ?? 0)
    }

    private func tableSummary() throws -> TrainingSummary.Tables {
        var rows = 0, bytes = 0, largest = 0, overhead = 0
        var traffic = TableStatistics.Traffic()
        for table in tables {
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

    /// The model on the evaluation data (read-only: nothing moves in the store).
    public func evaluate() throws -> TrainingEvent.Evaluation? {
        try Denormals.flushed { try evaluation() }
    }

    private func evaluation() throws -> TrainingEvent.Evaluation? {
        guard var data = evaluationSource, options.evaluationSamples > 0 else { return nil }
        try data.seek(to: SourcePosition())
        var batch = ClickBatch(schema: data.schema)
        let dense = Tensor(rows: options.batchSize, columns: options.model.denseFeatures)
        var metrics = Metrics()
        while metrics.count < options.evaluationSamples {
            let n = try data.next(min(options.batchSize, options.evaluationSamples - metrics.count), into: &batch)
            if n == 0 { break }
            dense.resize(rows: n)
            batch.dense.withUnsafeBufferPointer { dense.data.update(from: $0.baseAddress!, count: $0.count) }
            let logits = try batch.keys.withUnsafeBufferPointer { try model.forward(dense: dense, keys: $0, training: false) }
            metrics.add(logits: UnsafeBufferPointer(start: logits.data, count: n), labels: batch.labels)
        }
        guard metrics.count > 0 else { return nil }
        return .init(step: step, samples: metrics.count, auc: metrics.auc, logloss: metrics.logLoss, accuracy: metrics.accuracy)
    }
}

