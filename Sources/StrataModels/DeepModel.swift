// A deep model over user and item embeddings with side features (the design this project
// follows, between matrix factorisation and DLRM): the user's and the item's embeddings are
// combined by concatenation or element-wise product, the other features' embeddings (genres
// pooled, demographics, crosses) and the dense features are put beside them, and an MLP
// scores the result. Data without a user and an item: every embedding is concatenated.
public import StrataNN

public enum DeepModel: RecommenderModel {
    public enum Combine: String, Codable, Sendable {
        case concat, product
    }

    public struct Configuration: Codable, Equatable, Sendable {
        public var embeddingDim = 32
        /// How the user's and the item's embeddings meet.
        public var combine = Combine.concat
        public var mlp = [128, 64]
        public var dropout: Float = 0

        public init() {}
    }

    public static let name = "deep"
    public static let summary = "user and item embeddings (concatenated or multiplied) with side features through an MLP"
    public static let defaultConfiguration = Configuration()

    public static func problem(_ c: Configuration, schema: FeatureSchema) -> String? {
        if let problem = settingsProblem(["embedding_dim": [c.embeddingDim], "mlp": c.mlp], dropout: c.dropout) { return problem }
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
        parts += try b.embeddings(others, dimension: c.embeddingDim)
        if let dense = b.dense { parts.append(dense) }
        let x = try b.concat("features", parts)
        return try b.add("mlp", MLP("mlp", sizes: [x.columns] + c.mlp + [1], dropout: c.dropout), [x])
    }
}
