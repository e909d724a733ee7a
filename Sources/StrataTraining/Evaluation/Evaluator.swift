// Evaluation protocols: what a run measures its model by, on which split.
import Foundation
public import StrataModels

/// One evaluation of the model: named metrics, in the order the protocol lists them.
public struct Evaluation: Sendable, Equatable {
    public struct Metric: Sendable, Codable, Equatable {
        public var name: String
        public var value: Double
        public init(_ name: String, _ value: Double) {
            self.name = name
            self.value = value
        }
    }

    public var step: Int
    /// The split evaluated: "valid", "test", or "eval" for separate evaluation data.
    public var split: String
    /// Samples scored; users ranked, for ranking.
    public var samples: Int
    public var metrics: [Metric]

    public init(step: Int, split: String, samples: Int, metrics: [Metric]) {
        self.step = step
        self.split = split
        self.samples = samples
        self.metrics = metrics
    }

    public subscript(_ name: String) -> Double? { metrics.first { $0.name == name }?.value }

    /// "auc 0.7812  logloss 0.4620": for progress lines.
    public var text: String { metrics.map { "\($0.name) \(String(format: "%.4f", $0.value))" }.joined(separator: "  ") }

    /// As one flat JSON object: step, split, samples and every metric by name.
    public var json: [String: Any] {
        var object: [String: Any] = ["step": step, "split": split, "samples": samples]
        for m in metrics { object[m.name] = m.value.isFinite ? m.value : "\(m.value)" }
        return object
    }
}

/// Measures a model on held-out data without changing the store (lookups `peek`).
public protocol Evaluator: AnyObject {
    /// The split it reads.
    var split: String { get }
    /// The features of the samples it scores.
    var schema: FeatureSchema { get }
    /// Evaluates `network` (on at most `limit` samples or users, all when nil); nil when the
    /// split holds nothing to evaluate.
    func evaluate(_ network: Network, step: Int, limit: Int?) throws -> Evaluation?
}

/// Scores held-out samples one by one against their labels: click-through (AUC, logloss,
/// accuracy) or ratings (RMSE, MAE). A multi-task model is scored on each task's label by
/// its own output column, the metrics named "label.metric".
public final class PointwiseEvaluator: Evaluator {
    public enum Kind: String, Sendable {
        /// Binary labels, scores are logits: AUC, logloss, accuracy.
        case click
        /// Numeric labels, scores are predictions: RMSE, MAE.
        case rating
    }

    /// A label scored: its column in the batch, its kind, and its name (metric prefixes).
    public struct Task: Sendable {
        public var name: String
        public var kind: Kind
        public var label: Int
        public init(name: String, kind: Kind, label: Int) {
            self.name = name
            self.kind = kind
            self.label = label
        }
    }

    public let split: String
    public let tasks: [Task]
    public var kind: Kind { tasks[0].kind }
    public var schema: FeatureSchema { source.schema }
    private var source: any BatchSource
    private let batchSize: Int
    private let batch: Batch

    /// Each task is scored by the model's output column of the same place.
    public init(_ source: any BatchSource, split: String, tasks: [Task], batchSize: Int = 4096) {
        precondition(!tasks.isEmpty, "an evaluation scores at least one label")
        self.source = source
        self.split = split
        self.tasks = tasks
        self.batchSize = batchSize
        batch = Batch(schema: source.schema)
    }

    /// `label` is the label column scored against.
    public convenience init(_ source: any BatchSource, split: String, kind: Kind, label: Int, batchSize: Int = 4096) {
        self.init(source, split: split, tasks: [Task(name: "", kind: kind, label: label)], batchSize: batchSize)
    }

    public func evaluate(_ network: Network, step: Int, limit: Int?) throws -> Evaluation? {
        let t = tasks.count
        guard network.tasks.count == t else {
            throw TrainingError.mismatch("the \(split) evaluation scores \(t) label\(t == 1 ? "" : "s"), the model predicts \(network.tasks.count)")
        }
        try source.seek(to: SourcePosition())
        var clicks = [Metrics](repeating: Metrics(), count: t), ratings = [RatingMetrics](repeating: RatingMetrics(), count: t)
        var count = 0
        var labels: [Float] = [], predictions: [Float] = []
        while limit.map({ count < $0 }) ?? true {
            let n = try source.next(min(batchSize, (limit ?? Int.max) - count), into: batch)
            if n == 0 { break }
            batch.computeCrosses()
            let scores = try network.forward(batch, training: false, step: step)
            for (k, task) in tasks.enumerated() {
                labels.removeAll(keepingCapacity: true)
                predictions.removeAll(keepingCapacity: true)
                for r in 0..<n {
                    labels.append(batch.labels[r * batch.labelColumns + task.label])
                    predictions.append(scores.data[r * t + k])
                }
                switch task.kind {
                case .click: clicks[k].add(logits: predictions, labels: labels)
                case .rating: predictions.withUnsafeBufferPointer { ratings[k].add(predictions: $0, labels: labels) }
                }
            }
            count += n
        }
        guard count > 0 else { return nil }
        var metrics: [Evaluation.Metric] = []
        for (k, task) in tasks.enumerated() {
            let prefix = t == 1 ? "" : task.name + "."
            switch task.kind {
            case .click:
                metrics += [.init(prefix + "auc", clicks[k].auc), .init(prefix + "logloss", clicks[k].logLoss),
                            .init(prefix + "accuracy", clicks[k].accuracy)]
            case .rating: metrics += [.init(prefix + "rmse", ratings[k].rmse), .init(prefix + "mae", ratings[k].mae)]
            }
        }
        return Evaluation(step: step, split: split, samples: count, metrics: metrics)
    }
}

/// Root mean squared and mean absolute error of predictions against numeric labels,
/// accumulated in Double.
public struct RatingMetrics: Sendable {
    public private(set) var count = 0
    private var squares = 0.0
    private var absolutes = 0.0

    public init() {}

    public mutating func add(predictions: UnsafeBufferPointer<Float>, labels: [Float]) {
        precondition(predictions.count == labels.count, "\(predictions.count) predictions for \(labels.count) labels")
        for i in 0..<labels.count {
            let e = Double(predictions[i]) - Double(labels[i])
            squares += e * e
            absolutes += abs(e)
        }
        count += labels.count
    }

    public var rmse: Double { count == 0 ? .nan : (squares / Double(count)).squareRoot() }
    public var mae: Double { count == 0 ? .nan : absolutes / Double(count) }
}
