// "A test trains a small DLRM twice under different hot/warm budgets and look-ahead depths
// and gets bit-identical weights": the same tiny run (Criteo-shaped synthetic data with small
// key spaces, embedding dimension 4, checkpoints along the way) under a hot tier that holds
// everything and no look-ahead, under budgets of a few dozen rows with deep look-ahead (rows
// keep moving hot → warm → spill → LMDB and back), under a middle budget with look-ahead 1,
// and with one BLAS thread instead of two (`TrainingResources`: "none of it changes the
// result"). Every dense parameter and its optimizer state, the checkpoint payload, and every
// stored row with its optimizer state must be the same bits.
import Foundation
import StrataModels
import StrataNN
import StrataStore
import StrataTestSupport
import StrataTraining
import Testing

// Serialized: `Parallel.threads` is process-wide and a trainer sets it.
@Suite(.serialized) struct TrainingDeterminismTests {
    static let dimension = 4

    static func options() -> TrainingOptions {
        TrainingOptions(
            model: ModelSpec(DLRM.self) { $0.embeddingDim = dimension; $0.bottomMlp = [8]; $0.topMlp = [8] },
            // 128 rows: large enough for the AVX-512 kernel to split products over two threads.
            batchSize: 128, steps: 36, denseOptimizer: .adam(learningRate: 0.01),
            sparseOptimizer: .adam(learningRate: 0.02), evaluateEvery: 12, evaluationSamples: 256,
            checkpointEvery: 10, seed: 11)
    }

    static func data(_ split: SyntheticClicks.Split) -> SyntheticClicks {
        SyntheticClicks(options: .init(seed: 5, samplesPerEpoch: 1_000_000, largestKeySpace: 20_000), split: split)
    }

    static func trainingData() -> TrainingData {
        TrainingData(train: data(.train), validation: PointwiseEvaluator(data(.test), split: "eval", kind: .click, label: 0))
    }

    /// Bytes of `rows` records of this test's tables (dimension 4, Adam: 2 × 4 floats of state).
    static func rows(_ n: Int) -> Int {
        let record = (4 * (dimension + 2 * dimension) + 7) / 8 * 8 + 32
        return n * record
    }

    struct Run {
        var state: TrainedState
        var summary: TrainingSummary
        var movement: TableStatistics.Traffic
        var events: [String]
    }

    /// Trains from scratch into a fresh store and captures what it left.
    static func train(_ resources: TrainingResources, reopen: Bool = false) throws -> Run {
        let directory = temporaryDirectory("strata-determinism")
        defer { removeDirectory(directory) }
        let storeOptions = Store.Options.small(resources.budget)
        let store = try Store(path: directory, options: storeOptions)
        let trainer = try Trainer(store: store, options: options(), resources: resources, data: trainingData(), resume: false)
        var events: [String] = []
        let summary = try trainer.run { event in
            switch event {
            case .checkpoint(let step, let generation, _): events.append("checkpoint \(generation) at \(step)")
            case .evaluation(let e): events.append("eval at \(e.step): auc \(e["auc"]!.bitPattern) logloss \(e["logloss"]!.bitPattern)")
            case .progress: break
            }
        }
        let tables = try store.tableNames.map { try store.table($0) }
        let movement = try tables.reduce(TableStatistics.Traffic()) { $0 + (try $1.statistics().traffic) }
        var state = try TrainedState.capture(store)
        state.dense = TrainedState.dense(trainer)
        try store.close()

        if reopen {
            // The store reopened and a trainer resumed on it holds the same weights.
            let again = try Store(path: directory, options: storeOptions)
            defer { try? again.close() }
            let resumed = try Trainer(store: again, options: options(), resources: resources, data: trainingData(), resume: true)
            #expect(resumed.resumedFromStep == options().steps)
            var reread = try TrainedState.capture(again)
            reread.dense = TrainedState.dense(resumed)
            let diff = reread.differences(from: state), same = diff.isEmpty
            #expect(same, "reopened store differs from the run that wrote it:\n\(diff.joined(separator: "\n"))")
        }
        return Run(state: state, summary: summary, movement: movement, events: events)
    }

    @Test func weightsDoNotDependOnBudgetsLookAheadOrThreads() throws {
        // A: a hot tier that holds every row, no look-ahead, two threads.
        let a = try Self.train(TrainingResources(budget: TierBudget(hotBytes: 8 << 20, warmBytes: 0), lookahead: 0, threads: 2))
        // B: 24 hot and 48 warm rows a table (tables reach a few thousand rows), look-ahead 4.
        let b = try Self.train(TrainingResources(budget: TierBudget(hotBytes: Self.rows(24), warmBytes: Self.rows(48)),
                                                 lookahead: 4, threads: 2), reopen: true)
        // C: a middle budget (two shards), look-ahead 1, one thread.
        let c = try Self.train(TrainingResources(budget: TierBudget(hotBytes: Self.rows(600), warmBytes: Self.rows(1500)),
                                                 lookahead: 1, threads: 1))
        // D: A with one thread: only the matrix products' threading differs.
        let d = try Self.train(TrainingResources(budget: TierBudget(hotBytes: 8 << 20, warmBytes: 0), lookahead: 0, threads: 1))

        // The runs did what they should for the comparison to mean something.
        #expect(a.state.rowCount > 5_000, "tables hold only \(a.state.rowCount) rows")
        #expect(a.movement.hotToWarm == 0 && a.movement.toSpill == 0 && a.movement.coldHits == 0, "A: \(a.movement)")
        #expect(b.movement.hotToWarm > 1_000 && b.movement.toSpill > 1_000 && b.movement.coldHits > 100
                    && b.movement.warmHits + b.movement.spillHits > 100, "B: rows hardly moved: \(b.movement)")
        #expect(a.events.filter { $0.hasPrefix("checkpoint") }.count == 4, "\(a.events)")
        #expect(a.summary.evaluation != nil)
        print("determinism: \(a.state.rowCount) rows; A \(a.movement); B \(b.movement); C \(c.movement); BLAS own kernel: \(BLAS.usesOwnKernel)")

        for (label, run) in [("B (tiny budgets, look-ahead 4)", b), ("C (middle budget, look-ahead 1, 1 thread)", c),
                             ("D (A with 1 BLAS thread)", d)] {
            let diff = run.state.differences(from: a.state), same = diff.isEmpty
            #expect(same, "\(label) differs from A:\n\(diff.joined(separator: "\n"))")
            // Each kind in its order; not interleaved, since a background checkpoint is
            // reported when the trainer notices it is durable, which depends on timing.
            for kind in ["checkpoint", "eval"] {
                let mine = run.events.filter { $0.hasPrefix(kind) }, theirs = a.events.filter { $0.hasPrefix(kind) }
                #expect(mine == theirs, "\(label): \(kind) events differ from A: \(mine) vs \(theirs)")
            }
            #expect(run.summary.finalLoss.bitPattern == a.summary.finalLoss.bitPattern, "\(label): final loss")
            #expect(run.summary.steps == a.summary.steps && run.summary.samples == a.summary.samples)
        }
    }
}
