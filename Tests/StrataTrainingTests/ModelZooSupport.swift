// What the model tests share: MovieLens-100K (fetched by tools/setup.sh), one small
// configuration per model with the protocol it is evaluated by, and running a model on it in
// process or as `strata train`.
import Foundation
import StrataModels
import StrataNN
import StrataStore
import StrataTestSupport
import StrataTraining
import Testing

enum MovieLens {
    /// Where tools/movielens.sh puts the data.
    static var directory: String {
        let root = ProcessInfo.processInfo.environment["STRATA_DATA"] ?? NSHomeDirectory() + "/.cache/strata/data"
        return root + "/ml-100k"
    }

    /// The data under a protocol; fails the test, saying what to run, if it is not there.
    static func data(_ p: EvaluationProtocol, seed: UInt64 = 1, crosses: [[String]] = [],
                     sourceLocation: SourceLocation = #_sourceLocation) throws -> TabularData {
        try #require(FileManager.default.fileExists(atPath: directory + "/ml-100k.inter"),
                     "MovieLens-100K is not in \(directory): run tools/setup.sh (or tools/movielens.sh)", sourceLocation: sourceLocation)
        return try TabularData(movieLens: directory, options: TabularData.Options(protocol: p, seed: seed, crosses: crosses))
    }
}

/// One model, small, on the protocol it is measured by.
struct ZooCase: Sendable, CustomTestStringConvertible {
    var model: String
    var `protocol`: EvaluationProtocol
    var settings: [String: JSONValue]
    var loss: Loss
    var negatives = 0
    var distribution = NegativeSampling.Distribution.uniform
    var crosses: [[String]] = []
    /// A multi-task model's tasks (its `loss` is then the first task's).
    var tasks: [TrainingOptions.Task] = []
    var testDescription: String {
        "\(model)\(settings["item_tower"] == nil ? "" : " with an item tower") on \(`protocol`.rawValue)"
            + (tasks.isEmpty ? "" : " (\(tasks.map(\.label).joined(separator: ", ")))")
    }

    /// Each model of the registry once (MF twice: BPR on ranking and MSE on ratings), with
    /// widths small enough for debug builds; models with dropout keep it, so that resumes and
    /// budgets are checked with it.
    static let all: [ZooCase] = [
        ZooCase(model: "mf", protocol: .topk, settings: ["embedding_dim": 16, "biases": false], loss: .bpr, negatives: 1),
        ZooCase(model: "mf", protocol: .ratings, settings: ["embedding_dim": 16], loss: .meanSquaredError),
        ZooCase(model: "neumf", protocol: .topk,
                settings: ["embedding_dim": 8, "mlp_embedding_dim": 8, "mlp": [16, 8], "dropout": 0.1],
                loss: .binaryCrossEntropy, negatives: 2),
        ZooCase(model: "deep", protocol: .click, settings: ["embedding_dim": 8, "mlp": [16], "combine": "product"],
                loss: .binaryCrossEntropy),
        ZooCase(model: "wide-deep", protocol: .click, settings: ["embedding_dim": 8, "mlp": [16]], loss: .binaryCrossEntropy,
                crosses: [["gender", "class"], ["user_id", "release_year"]]),
        ZooCase(model: "deepfm", protocol: .click, settings: ["embedding_dim": 8, "mlp": [16], "dropout": 0.1],
                loss: .binaryCrossEntropy),
        ZooCase(model: "dcn-v2", protocol: .click, settings: ["embedding_dim": 4, "cross_layers": 2, "mlp": [16], "dropout": 0.1],
                loss: .binaryCrossEntropy),
        ZooCase(model: "dlrm", protocol: .click, settings: ["embedding_dim": 4, "top_mlp": [8]], loss: .binaryCrossEntropy),
        ZooCase(model: "gru4rec", protocol: .nextItem, settings: ["embedding_dim": 16, "hidden_size": 16, "max_length": 10],
                loss: .softmax),
        ZooCase(model: "lstm4rec", protocol: .nextItem, settings: ["embedding_dim": 16, "hidden_size": 16, "max_length": 10],
                loss: .softmax),
        // A ranker with the history as a feature: a GRU's last state beside the user's and
        // the item's embeddings, trained on sampled negatives.
        ZooCase(model: "deep", protocol: .nextItem, settings: ["embedding_dim": 8, "mlp": [16], "history": "gru", "max_length": 5],
                loss: .binaryCrossEntropy, negatives: 2),
        ZooCase(model: "sasrec", protocol: .nextItem,
                settings: ["hidden_size": 16, "layers": 1, "heads": 2, "inner_size": 32, "max_length": 10, "dropout": 0.2,
                           "attention_dropout": 0.2],
                loss: .softmax),
        // The Cloze task: masks drawn per position, and half the samples masked at their item alone.
        ZooCase(model: "bert4rec", protocol: .nextItem,
                settings: ["hidden_size": 16, "layers": 1, "heads": 2, "inner_size": 32, "max_length": 10, "dropout": 0.2,
                           "attention_dropout": 0.2],
                loss: .softmax),
        // Two-tower retrieval by the sampled softmax: the batch's items and 64 drawn by
        // popularity as candidates, log-Q corrected.
        ZooCase(model: "two-tower", protocol: .nextItem, settings: ["embedding_dim": 16, "tower": [32]], loss: .softmax, negatives: 64,
                distribution: .popularity(exponent: 1)),
        // An item tower over the item's id and genres, trained by the sampled softmax (the
        // candidates' rows of features composed every step).
        ZooCase(model: "two-tower", protocol: .nextItem, settings: ["embedding_dim": 16, "tower": [32], "item_tower": [32]],
                loss: .softmax, negatives: 64, distribution: .popularity(exponent: 1)),
        // Multi-task: the click (rating ≥ 4) and the rating itself, from one network.
        ZooCase(model: "shared-bottom", protocol: .click, settings: ["embedding_dim": 8, "bottom": [32], "tower": [8], "dropout": 0.1],
                loss: .binaryCrossEntropy, tasks: Self.clickAndRating),
        ZooCase(model: "mmoe", protocol: .click, settings: ["embedding_dim": 8, "experts": 3, "expert_mlp": [16], "tower": [8]],
                loss: .binaryCrossEntropy, tasks: Self.clickAndRating),
    ]

    static let clickAndRating = [TrainingOptions.Task(label: "click", loss: .binaryCrossEntropy),
                                 TrainingOptions.Task(label: "rating", loss: .meanSquaredError, weight: 0.5)]

    static let batchSize = 256

    /// Ratings start 3.5 from MF's global offset, which a rate of 0.01 takes hundreds of steps
    /// to cross.
    var denseRate: Float { `protocol` == .ratings ? 0.05 : 0.01 }

    func options(_ schema: FeatureSchema, steps: Int, checkpointEvery: Int = 0, seed: UInt64 = 3) throws -> TrainingOptions {
        TrainingOptions(
            model: try ModelRegistry.spec(model, settings: settings), schema: schema, batchSize: Self.batchSize, steps: steps,
            denseOptimizer: .adam(learningRate: denseRate), sparseOptimizer: .adam(learningRate: 0.01),
            loss: loss, tasks: tasks.isEmpty ? nil : tasks, negatives: negatives > 0 ? NegativeSampling(count: negatives, distribution: distribution) : nil,
            weightDecay: `protocol` == .ratings ? 0.001 : 0, evaluationSamples: 2000, checkpointEvery: checkpointEvery, seed: seed)
    }

    /// The same run as `strata train` arguments.
    func arguments(store: String, steps: Int, checkpointEvery: Int, seed: UInt64 = 3) -> [String] {
        var a = ["train", "--model", model, "--data", "movielens:" + MovieLens.directory, "--protocol", `protocol`.rawValue,
                 "--store", store, "--batch-size", "\(Self.batchSize)", "--steps", "\(steps)",
                 "--optimizer", "adam", "--learning-rate", "\(denseRate)", "--sparse-learning-rate", "0.01", "--sparse-optimizer", "adam",
                 "--checkpoint-every", "\(checkpointEvery)", "--eval-samples", "0", "--seed", "\(seed)"]
        let name = ["binaryCrossEntropy": "bce", "meanSquaredError": "mse", "bpr": "bpr", "softmax": "softmax"]
        if tasks.isEmpty {
            a += ["--loss", name[loss.rawValue]!, "--negatives", "\(negatives)"]
            if case .popularity(let e) = distribution { a += ["--negative-sampling", "popularity:\(e)"] }
        } else {
            for t in tasks { a += ["--task", "\(t.label):\(name[t.loss.rawValue]!):\(t.weight)"] }
        }
        if `protocol` == .ratings { a += ["--weight-decay", "0.001"] }
        for (key, value) in settings.sorted(by: { $0.key < $1.key }) { a += ["--set", "\(key)=\(value)"] }
        for c in crosses { a += ["--cross", c.joined(separator: ",")] }
        return a
    }

    /// Trains in process into a fresh store; returns the summary, what the run left, and the
    /// trainer's evaluations before training.
    func train(steps: Int, resources: TrainingResources, checkpointEvery: Int = 0,
               sourceLocation: SourceLocation = #_sourceLocation) throws -> (summary: TrainingSummary, state: TrainedState, before: Evaluation?) {
        let directory = temporaryDirectory("strata-zoo")
        defer { removeDirectory(directory) }
        let data = try MovieLens.data(`protocol`, seed: 3, crosses: crosses, sourceLocation: sourceLocation)
        let training = try data.trainingData(protocol: `protocol`, labels: tasks.map(\.label), shuffleBlock: 131_072, seed: 3)
        let options = try options(training.train.schema, steps: steps, checkpointEvery: checkpointEvery)
        let store = try Store(path: directory, options: .small(resources.budget))
        defer { try? store.close() }
        let trainer = try Trainer(store: store, options: options, resources: resources, data: training, resume: false)
        let before = try trainer.evaluate()
        let summary = try trainer.run { _ in }
        var state = try TrainedState.capture(store)
        state.dense = TrainedState.dense(trainer)
        return (summary, state, before)
    }
}
