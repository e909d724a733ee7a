// The trainer learns: a small DLRM on synthetic data with a planted model comes close to the
// planted model's own AUC on held-out samples. A wrong sign or a lost gradient anywhere (dense
// layers, interaction, store updates) leaves it near 0.5 or far below the planted AUC.
import StrataModels
import StrataNN
import StrataStore
import StrataTestSupport
import StrataTraining
import Testing

@Suite struct LearningTests {
    @Test func smallDLRMApproachesThePlantedAUC() throws {
        let directory = temporaryDirectory("strata-learning")
        defer { removeDirectory(directory) }
        var storeOptions = Store.Options()
        storeOptions.initialMapBytes = 4 << 20
        let store = try Store(path: directory, options: storeOptions)
        defer { try? store.close() }
        // Small key spaces, so that every id is seen often enough to be learned.
        let data = SyntheticClicks.Options(seed: 9, samplesPerEpoch: 1_000_000, largestKeySpace: 100)
        let options = TrainingOptions(
            model: ModelSpec(DLRM.self) { $0.embeddingDim = 8; $0.bottomMlp = [32]; $0.topMlp = [32] },
            batchSize: 256, steps: 600, denseOptimizer: .adam(learningRate: 0.003),
            sparseOptimizer: .adagrad(learningRate: 0.1), evaluationSamples: 20_000, seed: 4)
        let test = SyntheticClicks(options: data, split: .test)
        let trainer = try Trainer(store: store, options: options, resources: TrainingResources(lookahead: 2, threads: 2),
                                  data: TrainingData(train: SyntheticClicks(options: data, split: .train),
                                                     validation: PointwiseEvaluator(test, split: "eval", kind: .click, label: 0)),
                                  resume: false)
        let before = try #require(try trainer.evaluate())
        let summary = try trainer.run { _ in }
        let after = try #require(summary.evaluation)
        let planted = test.plantedAUC(samples: after.samples)
        let (beforeAUC, afterAUC) = (before["auc"]!, after["auc"]!)
        print("learning: AUC \(beforeAUC) before, \(afterAUC) after \(summary.samples) samples; planted \(planted)")
        #expect(beforeAUC < 0.6, "an untrained model already scores \(beforeAUC)")
        #expect(afterAUC > planted - 0.02, "AUC \(afterAUC) after training, the planted model's is \(planted)")
        #expect(after["logloss"]! < before["logloss"]!)
    }
}
