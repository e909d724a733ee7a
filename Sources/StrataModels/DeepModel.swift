// A deep model over user and item embeddings with side features (the design this project
// follows, between matrix factorisation and DLRM): the user's and the item's embeddings are
// combined by concatenation or element-wise product, the other features' embeddings (genres
// pooled, demographics, crosses) and the dense features are put beside them, and an MLP
// scores the result. Data without a user and an item: every embedding is concatenated. With
// a history of items (`FeatureSchema.sequence`), `history` says how it enters: pooled like
// any bag, as the last state of a GRU over the recent items (the sequence as a feature), or
// not at all.
public import StrataNN

public enum DeepModel: RecommenderModel {
    public enum Combine: String, Codable, Sendable {
        case concat, product
    }

    public enum History: String, Codable, Sendable {
        /// Mean-pooled, like any bag of keys.
        case pool
        /// A GRU's state after the most recent `max_length` items, `embedding_dim` wide.
        case gru
        /// Left out.
        case none
    }

    public struct Configuration: Codable, Equatable, Sendable {
        public var embeddingDim = 32
        /// How the user's and the item's embeddings meet.
        public var combine = Combine.concat
        public var mlp = [128, 64]
        public var dropout: Float = 0
        /// How a history of items enters (data with one).
        public var history = History.pool
        /// The most recent items the GRU reads.
        public var maxLength = 50

        public init() {}
    }

    public static let name = "deep"
    public static let summary = "user and item embeddings (concatenated or multiplied) with side features through an MLP"
    public static let defaultConfiguration = Configuration()

    public static func problem(_ c: Configuration, schema: FeatureSchema) -> String? {
        if let problem = settingsProblem(["embedding_dim": [c.embeddingDim], "mlp": c.mlp, "max_length": [c.maxLength]],
                                         dropout: c.dropout) {
            return problem
        }
        if c.history != .pool && schema.sequence == nil { return "deep: history \(c.history.rawValue) needs data with a history of items (--protocol next-item)" }
        return schema.categorical.isEmpty && schema.dense.isEmpty ? "deep: the data has no features" : nil
    }

    public static func build(_ c: Configuration, _ b: ModelBuilder) throws -> Graph.Value {
        var parts: [Graph.Value] = []
        var others = b.features.map(\.name)
        if let user = b.schema.user, let item = b.schema.item {
            let u = try b.embedding(user, dimension: c.embeddingDim), i = try b.embedding(item, dimension: c.embeddingDim)
            parts.append(c.combine == .concat ? try b.add("user-item", Concat(), [u, i]) : try b.add("user-item", Product(), [u, i]))
            others.removeAll { $0 == user || $0 == item }
        }
        if let history = b.schema.sequence, c.history != .pool {
            others.removeAll { $0 == history }
            if c.history == .gru {
                let (items, lengths) = try b.sequence(history, dimension: c.embeddingDim, steps: c.maxLength)
                let gru = GRU("history", inputs: c.embeddingDim, hidden: c.embeddingDim, steps: c.maxLength, output: .last)
                parts.append(try b.add("history", gru, [items, lengths]))
            }
        }
        parts += try b.embeddings(others, dimension: c.embeddingDim)
        if let dense = b.dense { parts.append(dense) }
        let x = try b.concat("features", parts)
        return try b.add("mlp", MLP("mlp", sizes: [x.columns] + c.mlp + [1], dropout: c.dropout), [x])
    }
}
