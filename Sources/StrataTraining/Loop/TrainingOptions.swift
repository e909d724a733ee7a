public import StrataModels
public import StrataNN
public import StrataStore

/// Everything that decides what a training run computes. Two runs with equal options, data
/// and seed end with the same weights, bit for bit, whatever their memory budgets and
/// look-ahead (which are not options of the run but of the machine it runs on).
public struct TrainingOptions: Sendable, Codable, Equatable {
    public var model: DLRMConfig
    public var batchSize: Int
    /// Stop after this many steps; nil trains for `epochs` passes over the data.
    public var steps: Int?
    public var epochs: Int
    public var denseOptimizer: DenseOptimizer
    /// The store's optimizer for the embedding tables.
    public var sparseOptimizer: Optimizer
    /// Embedding rows never trained start from this.
    public var embeddingInitializer: Initializer.Distribution
    public var loss: Loss
    /// Evaluate every this many steps (and at the end); 0 only at the end.
    public var evaluateEvery: Int
    /// Samples of the evaluation data used per evaluation.
    public var evaluationSamples: Int
    /// Checkpoint every this many steps (and at the end); 0 only at the end.
    public var checkpointEvery: Int
    public var seed: UInt64

    public init(model: DLRMConfig = .criteoKaggle, batchSize: Int = 128, steps: Int? = 1000, epochs: Int = 1,
                denseOptimizer: DenseOptimizer = .sgd(learningRate: 0.1), sparseOptimizer: Optimizer = .sgd(learningRate: 0.1),
                embeddingInitializer: Initializer.Distribution = .uniform(low: -0.01, high: 0.01),
                loss: Loss = .binaryCrossEntropy, evaluateEvery: Int = 0, evaluationSamples: Int = 100_000,
                checkpointEvery: Int = 0, seed: UInt64 = 1) {
        self.model = model
        self.batchSize = batchSize
        self.steps = steps
        self.epochs = epochs
        self.denseOptimizer = denseOptimizer
        self.sparseOptimizer = sparseOptimizer
        self.embeddingInitializer = embeddingInitializer
        self.loss = loss
        self.evaluateEvery = evaluateEvery
        self.evaluationSamples = evaluationSamples
        self.checkpointEvery = checkpointEvery
        self.seed = seed
    }
}

/// How a run uses the machine; none of it changes the result.
public struct TrainingResources: Sendable {
    /// Memory for each embedding table.
    public var budget: TierBudget
    /// Batches read and warmed ahead of the step in progress; 0 reads in the training thread.
    public var lookahead: Int
    /// Threads for matrix products.
    public var threads: Int

    public init(budget: TierBudget = TierBudget(hotBytes: 256 << 20, warmBytes: 1 << 30), lookahead: Int = 4, threads: Int = 2) {
        self.budget = budget
        self.lookahead = lookahead
        self.threads = threads
    }
}

extension TrainingOptions {
    /// The names of the options that differ from `other`'s, for an error message.
    func differences(from other: TrainingOptions) -> String {
        let mine = Mirror(reflecting: self).children, theirs = Mirror(reflecting: other).children
        let names = zip(mine, theirs).filter { "\($0.value)" != "\($1.value)" }.compactMap(\.0.label)
        return names.isEmpty ? "none found" : names.joined(separator: ", ") + " differ"
    }
}
