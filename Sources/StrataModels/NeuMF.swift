// NeuMF (He et al. 2017): generalized matrix factorisation (the element-wise product of a
// user and an item embedding) beside an MLP over another pair of embeddings, fused by one
// linear layer into the score. The two towers have tables of their own (`gmf.*`, `mlp.*`).
public import StrataNN

public enum NeuMF: RecommenderModel {
    public struct Configuration: Codable, Equatable, Sendable {
        /// The GMF tower's embeddings.
        public var embeddingDim = 64
        /// The MLP tower's embeddings.
        public var mlpEmbeddingDim = 64
        public var mlp = [128, 64]
        public var dropout: Float = 0.1

        public init() {}
    }

    public static let name = "neumf"
    public static let summary = "NeuMF (He et al. 2017): GMF and MLP towers fused"
    public static let defaultConfiguration = Configuration()

    public static func problem(_ c: Configuration, schema: FeatureSchema) -> String? {
        if c.mlp.isEmpty { return "neumf: mlp needs at least one layer (its tower's output is fused with GMF's)" }
        return settingsProblem(["embedding_dim": [c.embeddingDim], "mlp_embedding_dim": [c.mlpEmbeddingDim], "mlp": c.mlp],
                               dropout: c.dropout)
    }

    public static func build(_ c: Configuration, _ b: ModelBuilder) throws -> Graph.Value {
        let (user, item) = try b.userAndItem(for: name)
        let gmf = try b.add("gmf", Product(), [try b.embedding(user, dimension: c.embeddingDim, prefix: "gmf"),
                                               try b.embedding(item, dimension: c.embeddingDim, prefix: "gmf")])
        let pair = try b.add("mlp.input", Concat(), [try b.embedding(user, dimension: c.mlpEmbeddingDim, prefix: "mlp"),
                                                     try b.embedding(item, dimension: c.mlpEmbeddingDim, prefix: "mlp")])
        let tower = try b.add("mlp", MLP("mlp", sizes: [pair.columns] + c.mlp, last: .relu, dropout: c.dropout), [pair])
        let fused = try b.add("fused", Concat(), [gmf, tower])
        return try b.add("predict", Linear("predict", inputs: fused.columns, outputs: 1), [fused])
    }
}
