// Multi-task models: one network predicts several labels at once (a rating and a like, a
// click and a purchase), each task with its own tower and output column, the tasks sharing
// what lies below. The trainer weighs each task's loss (`TrainingOptions.tasks`).
//
// Shared-bottom (Caruana 1997): every feature's embedding and the dense features, one MLP
// shared by all tasks, and a small tower per task. MMoE (Ma et al. 2018): the shared MLP is
// replaced by experts, and each task mixes their outputs with a softmax gate of its own, so
// tasks that conflict can lean on different experts.
public import StrataNN

public enum SharedBottom: RecommenderModel {
    public struct Configuration: Codable, Equatable, Sendable {
        public var embeddingDim = 16
        /// The shared MLP.
        public var bottom = [128, 64]
        /// Each task's tower, before its output.
        public var tower = [32]
        public var dropout: Float = 0

        public init() {}
    }

    public static let name = "shared-bottom"
    public static let summary = "multi-task: an MLP over every feature shared by all tasks, a tower per task (Caruana 1997)"
    public static let defaultConfiguration = Configuration()

    public static func problem(_ c: Configuration, schema: FeatureSchema) -> String? {
        settingsProblem(["embedding_dim": [c.embeddingDim], "bottom": c.bottom, "tower": c.tower], dropout: c.dropout)
            ?? MultiTask.featuresProblem(self, schema)
    }

    public static func build(_ c: Configuration, _ b: ModelBuilder) throws -> Graph.Value {
        let x = try MultiTask.features(b, dimension: c.embeddingDim)
        let shared = try b.add("bottom", MLP("bottom", sizes: [x.columns] + c.bottom, last: .relu, dropout: c.dropout), [x])
        return try MultiTask.towers(b, input: { _ in shared }, sizes: c.tower, dropout: c.dropout)
    }
}

public enum MMoE: RecommenderModel {
    public struct Configuration: Codable, Equatable, Sendable {
        public var embeddingDim = 16
        public var experts = 4
        /// Each expert's MLP.
        public var expertMlp = [64, 32]
        /// Each task's tower, before its output.
        public var tower = [32]
        public var dropout: Float = 0

        public init() {}
    }

    public static let name = "mmoe"
    public static let summary = "multi-task: experts mixed by a softmax gate per task, a tower per task (Ma et al. 2018)"
    public static let defaultConfiguration = Configuration()

    public static func problem(_ c: Configuration, schema: FeatureSchema) -> String? {
        if !(1...64).contains(c.experts) { return "mmoe: experts must be between 1 and 64, not \(c.experts)" }
        return settingsProblem(["embedding_dim": [c.embeddingDim], "expert_mlp": c.expertMlp, "tower": c.tower], dropout: c.dropout)
            ?? MultiTask.featuresProblem(self, schema)
    }

    public static func build(_ c: Configuration, _ b: ModelBuilder) throws -> Graph.Value {
        let x = try MultiTask.features(b, dimension: c.embeddingDim)
        let experts = try (0..<c.experts).map { e in
            try b.add("expert\(e)", MLP("expert\(e)", sizes: [x.columns] + c.expertMlp, last: .relu, dropout: c.dropout), [x])
        }
        let width = c.expertMlp.last!
        return try MultiTask.towers(b, input: { task in
            let gate = try b.add("\(task).gate", Linear("\(task).gate", inputs: x.columns, outputs: c.experts), [x])
            return try b.add("\(task).mixture", MixtureOfExperts(experts: c.experts, width: width), [gate] + experts)
        }, sizes: c.tower, dropout: c.dropout)
    }
}

/// What the multi-task models share.
enum MultiTask {
    static func featuresProblem<M: RecommenderModel>(_ model: M.Type, _ schema: FeatureSchema) -> String? {
        schema.categorical.isEmpty && schema.dense.isEmpty ? "\(M.name): the data has no features" : nil
    }

    /// Every feature's embedding (bags pooled as the schema says) and the dense features, side by side.
    static func features(_ b: ModelBuilder, dimension: Int) throws -> Graph.Value {
        var parts = try b.embeddings(b.features.map(\.name), dimension: dimension)
        if let dense = b.dense { parts.append(dense) }
        return try b.concat("features", parts)
    }

    /// A tower of `sizes` and one output per task over `input(task)`, the outputs side by side
    /// in the order of `b.tasks`.
    static func towers(_ b: ModelBuilder, input: (String) throws -> Graph.Value, sizes: [Int], dropout: Float) throws -> Graph.Value {
        let heads = try b.tasks.map { task in
            let x = try input(task)
            return try b.add("\(task).tower", MLP("\(task).tower", sizes: [x.columns] + sizes + [1], dropout: dropout), [x])
        }
        return try b.concat("tasks", heads)
    }
}
