public import StrataModels
public import StrataNN
public import StrataStore

/// Everything that decides what a training run computes. Two runs with equal options, data
/// and seed end with the same weights, bit for bit, whatever their memory budgets, look-ahead
/// and threads (which are not options of the run but of the machine it runs on).
public struct TrainingOptions: Sendable, Codable, Equatable {
    /// The model by name, with its configuration.
    public var model: ModelSpec
    /// The features the data holds and the tables they name.
    public var schema: FeatureSchema
    /// Samples per step (before negatives are added).
    public var batchSize: Int
    /// Stop after this many steps; nil trains for `epochs` passes over the data.
    public var steps: Int?
    public var epochs: Int
    /// The optimizer of the dense weights: the store's per-row arithmetic with each parameter
    /// as one row.
    public var denseOptimizer: Optimizer
    /// The store's optimizer for embedding and bias tables.
    public var sparseOptimizer: Optimizer
    /// The store's optimizer for wide tables (Wide & Deep's linear part).
    public var wideOptimizer: Optimizer
    /// Embedding rows never trained start from this.
    public var embeddingInitializer: Initializer.Distribution
    public var loss: Loss
    /// The label the loss reads (nil: the schema's first).
    public var label: String?
    /// Several labels trained at once: a multi-task model's output has a column per task, in
    /// this order, and the loss is the tasks' weighted sum. nil: one task, `loss` on `label`.
    public var tasks: [Task]?
    /// Negatives sampled for every positive (BPR, or implicit feedback with BCE).
    public var negatives: NegativeSampling?
    /// L2 regularisation of embedding and bias rows touched by a batch (`TableLookup`).
    public var weightDecay: Float
    /// Evaluate every this many steps (and at the end); 0 only at the end.
    public var evaluateEvery: Int
    /// Samples (ranking: users) per evaluation during training.
    public var evaluationSamples: Int
    /// Checkpoint every this many steps (and at the end); 0 only at the end.
    public var checkpointEvery: Int
    public var seed: UInt64

    /// The wide optimizer a run gets unless told otherwise: FTRL-Proximal, as in Wide & Deep.
    public static let defaultWideOptimizer = Optimizer.ftrl(alpha: 0.05, beta: 1, l1: 0, l2: 0)

    public init(model: ModelSpec = ModelSpec(DLRM.self, DLRM.defaultConfiguration), schema: FeatureSchema = ClickSchema.criteo.features,
                batchSize: Int = 128, steps: Int? = 1000, epochs: Int = 1,
                denseOptimizer: Optimizer = .sgd(learningRate: 0.1), sparseOptimizer: Optimizer = .sgd(learningRate: 0.1),
                wideOptimizer: Optimizer = TrainingOptions.defaultWideOptimizer,
                embeddingInitializer: Initializer.Distribution = .uniform(low: -0.01, high: 0.01),
                loss: Loss = .binaryCrossEntropy, label: String? = nil, tasks: [Task]? = nil, negatives: NegativeSampling? = nil,
                weightDecay: Float = 0, evaluateEvery: Int = 0, evaluationSamples: Int = 100_000,
                checkpointEvery: Int = 0, seed: UInt64 = 1) {
        self.model = model
        self.schema = schema
        self.batchSize = batchSize
        self.steps = steps
        self.epochs = epochs
        self.denseOptimizer = denseOptimizer
        self.sparseOptimizer = sparseOptimizer
        self.wideOptimizer = wideOptimizer
        self.embeddingInitializer = embeddingInitializer
        self.loss = loss
        self.label = label
        self.tasks = tasks
        self.negatives = negatives
        self.weightDecay = weightDecay
        self.evaluateEvery = evaluateEvery
        self.evaluationSamples = evaluationSamples
        self.checkpointEvery = checkpointEvery
        self.seed = seed
    }

    /// The spec of the table a model asks for.
    public func spec(for request: TableRequest) -> TableSpec {
        let settings = schema.tables[request.name]
        let (optimizer, distribution): (Optimizer, Initializer.Distribution) = switch request.role {
        case .embedding: (sparseOptimizer, embeddingInitializer)
        case .bias: (sparseOptimizer, .zeros)
        case .wide: (wideOptimizer, .zeros)
        }
        return TableSpec(dimension: request.dimension, storage: settings?.storage ?? .float32,
                         initializer: Initializer(settings?.initializer ?? distribution, seed: seed),
                         optimizer: settings?.optimizer ?? optimizer)
    }

    /// The run's model, its tables from `tables` (training and reading a checkpoint back
    /// build it alike).
    func network(tables: @escaping TableProvider) throws -> Network {
        try Network(spec: model, schema: schema, seed: seed, weightDecay: weightDecay, tasks: tasks?.map(\.label) ?? [], tables: tables)
    }

    /// The label column the loss reads (with negatives, the column whose binary 0s are left
    /// out, if any), or why the data cannot be trained on with this loss.
    func labelColumn() throws -> Int {
        var column = 0
        if let label {
            guard let i = schema.labelIndex(label) else { throw TrainingError.mismatch("the data has no label '\(label)'") }
            column = i
        }
        // With negatives the targets are the groups' (positive 1, negatives 0); the softmax's
        // are the samples' items.
        guard negatives == nil && loss != .bpr && loss != .softmax else { return column }
        guard column < schema.labels.count else {
            throw TrainingError.mismatch("the data has no label to train on; implicit feedback needs negatives (--negatives)")
        }
        try Self.check(loss, on: schema.labels[column])
        return column
    }

    /// BCE reads clicks; a rating label trains with MSE.
    private static func check(_ loss: Loss, on l: FeatureSchema.Label) throws {
        if loss == .binaryCrossEntropy && l.kind == .rating {
            throw TrainingError.mismatch("label '\(l.name)' holds ratings: train it with --loss mse, or make clicks of it (--protocol click)")
        }
    }

    /// A multi-task run's tasks with their label columns, or [] for a run of one task; or why
    /// the data and the other options do not allow them.
    func taskColumns() throws -> [(column: Int, loss: Loss, weight: Float)] {
        guard let tasks else { return [] }
        guard !tasks.isEmpty else { throw TrainingError.mismatch("a multi-task run names at least one task") }
        guard negatives == nil else {
            throw TrainingError.mismatch("a multi-task run reads every task's label from the data; it samples no negatives")
        }
        guard label == nil else { throw TrainingError.mismatch("a multi-task run names its labels in its tasks, not with --label") }
        var seen = Set<String>()
        return try tasks.map { task in
            guard seen.insert(task.label).inserted else { throw TrainingError.mismatch("task '\(task.label)' is named twice") }
            guard let column = schema.labelIndex(task.label) else {
                throw TrainingError.mismatch("task '\(task.label)': the data has no such label; its labels are "
                                             + schema.labels.map(\.name).joined(separator: ", "))
            }
            guard task.loss == .binaryCrossEntropy || task.loss == .meanSquaredError else {
                throw TrainingError.mismatch("task '\(task.label)': a task's loss is bce or mse, one value a row, not \(task.loss)")
            }
            guard task.weight.isFinite && task.weight > 0 else {
                throw TrainingError.mismatch("task '\(task.label)': the weight must be a positive number, not \(task.weight)")
            }
            try Self.check(task.loss, on: schema.labels[column])
            return (column, task.loss, task.weight)
        }
    }

    /// A label a multi-task run trains on: `loss` on its output column, times `weight`.
    public struct Task: Sendable, Codable, Equatable, Hashable, CustomStringConvertible {
        public var label: String
        public var loss: Loss
        public var weight: Float

        public init(label: String, loss: Loss, weight: Float = 1) {
            self.label = label
            self.loss = loss
            self.weight = weight
        }

        /// "click binaryCrossEntropy ×0.5": for messages.
        public var description: String { "\(label) \(loss.rawValue) ×\(weight)" }
    }
}

/// Negative sampling: for every training sample, `count` items drawn by a counter-based
/// generator from (seed, epoch, sample, slot), so they replay exactly on resume.
public struct NegativeSampling: Sendable, Codable, Equatable, Hashable {
    public enum Distribution: Sendable, Codable, Equatable, Hashable {
        /// Every item alike.
        case uniform
        /// By training popularity: an item's chance ∝ (its training interactions)^exponent.
        case popularity(exponent: Double)
    }
    public var count: Int
    public var distribution: Distribution
    /// Redraw (up to a bound) an item the user interacted with in training, as RecBole does.
    public var excludeSeen: Bool

    public init(count: Int, distribution: Distribution = .uniform, excludeSeen: Bool = true) {
        self.count = count
        self.distribution = distribution
        self.excludeSeen = excludeSeen
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

    /// Tests only: called as a checkpoint of a run over several processes passes each point of
    /// its commit (`Trainer.checkpointWritten`), with its step, so that a test can end the
    /// process exactly there.
    public var atCheckpointPoint: (@Sendable (CheckpointPoint, Int) -> Void)?

    public enum CheckpointPoint: String, Sendable {
        /// This rank's shard holds it, undecided.
        case written
        /// This rank's shard has kept it.
        case kept
    }

    public init(budget: TierBudget = TierBudget(hotBytes: 256 << 20, warmBytes: 1 << 30), lookahead: Int = 4, threads: Int = 2) {
        self.budget = budget
        self.lookahead = lookahead
        self.threads = threads
    }
}

extension TrainingOptions {
    /// What differs from `other`, as the command-line options that set it with both values
    /// (this run's first), for an error message.
    func differences(from other: TrainingOptions) -> String {
        var out: [String] = []
        func compare<T: Equatable>(_ name: String, _ a: T, _ b: T) { if a != b { out.append("\(name) \(a) vs \(b)") } }
        if model.name != other.model.name {
            out.append("--model \(model.name) vs \(other.model.name)")
        } else if model.configuration != other.model.configuration {
            if case .object(let a) = model.configuration, case .object(let b) = other.model.configuration {
                for key in Set(a.keys).union(b.keys).sorted() where a[key] != b[key] {
                    out.append("model setting \(key) \(a[key]?.description ?? "none") vs \(b[key]?.description ?? "none")")
                }
            } else {
                out.append("model configuration \(model.configuration) vs \(other.model.configuration)")
            }
        }
        if schema != other.schema { out.append("the feature schema (the data's columns or --schema)") }
        compare("--batch-size", batchSize, other.batchSize)
        compare("--steps", steps.map(String.init) ?? "none", other.steps.map(String.init) ?? "none")
        compare("--epochs", epochs, other.epochs)
        compare("--optimizer/--learning-rate", "\(denseOptimizer)", "\(other.denseOptimizer)")
        compare("--sparse-optimizer/--sparse-learning-rate", "\(sparseOptimizer)", "\(other.sparseOptimizer)")
        compare("--wide-optimizer/--wide-learning-rate", "\(wideOptimizer)", "\(other.wideOptimizer)")
        compare("the embedding initializer", "\(embeddingInitializer)", "\(other.embeddingInitializer)")
        compare("--loss", loss.rawValue, other.loss.rawValue)
        compare("--label", label ?? "first", other.label ?? "first")
        compare("--task", tasks.map { $0.map(\.description).joined(separator: " ") } ?? "none",
                other.tasks.map { $0.map(\.description).joined(separator: " ") } ?? "none")
        compare("--negatives", negatives.map { "\($0)" } ?? "none", other.negatives.map { "\($0)" } ?? "none")
        compare("--weight-decay", weightDecay, other.weightDecay)
        compare("--eval-every", evaluateEvery, other.evaluateEvery)
        compare("--eval-samples", evaluationSamples, other.evaluationSamples)
        compare("--checkpoint-every", checkpointEvery, other.checkpointEvery)
        compare("--seed", seed, other.seed)
        return out.isEmpty ? "none found" : out.joined(separator: "; ")
    }
}

/// The options of checkpoints written before models had a registry (DLRM only, Criteo-shaped
/// data): read so that those runs can still be resumed.
struct LegacyTrainingOptions: Decodable {
    struct Model: Decodable {
        var denseFeatures: Int
        var sparseFeatures: Int
        var embeddingDimension: Int
        var bottomHidden: [Int]
        var topHidden: [Int]
    }
    var model: Model
    var batchSize: Int
    var steps: Int?
    var epochs: Int
    /// Encoded like `Optimizer`'s sgd, adagrad and adam cases, so it decodes as one.
    var denseOptimizer: Optimizer
    var sparseOptimizer: Optimizer
    var embeddingInitializer: Initializer.Distribution
    var loss: Loss
    var evaluateEvery: Int
    var evaluationSamples: Int
    var checkpointEvery: Int
    var seed: UInt64

    var current: TrainingOptions {
        TrainingOptions(
            model: ModelSpec(DLRM.self) {
                $0.embeddingDim = model.embeddingDimension
                $0.bottomMlp = model.bottomHidden
                $0.topMlp = model.topHidden
            },
            schema: ClickSchema(dense: model.denseFeatures, sparse: model.sparseFeatures).features,
            batchSize: batchSize, steps: steps, epochs: epochs, denseOptimizer: denseOptimizer,
            sparseOptimizer: sparseOptimizer, embeddingInitializer: embeddingInitializer, loss: loss,
            evaluateEvery: evaluateEvery, evaluationSamples: evaluationSamples, checkpointEvery: checkpointEvery, seed: seed)
    }
}
