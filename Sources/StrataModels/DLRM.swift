// DLRM (Naumov et al. 2019), as in facebookresearch/dlrm: a bottom MLP over the dense
// features, an embedding per categorical feature, the pairwise dot interaction of the bottom
// output and the embeddings, and a top MLP to one logit. Without dense features the
// interaction runs over the embeddings alone.
public import StrataNN

public enum DLRM: RecommenderModel {
    public struct Configuration: Codable, Equatable, Sendable {
        /// Every table's width, and the bottom MLP's output.
        public var embeddingDim = 16
        /// Hidden sizes of the bottom MLP (13-512-256-64-16 for Criteo: [512, 256, 64]).
        public var bottomMlp = [512, 256, 64]
        /// Hidden sizes of the top MLP, whose output is one logit (512-256-1 for Criteo).
        public var topMlp = [512, 256]

        public init() {}
    }

    public static let name = "dlrm"
    public static let summary = "DLRM (Naumov et al. 2019): bottom MLP, dot interaction of all embeddings, top MLP"
    public static let defaultConfiguration = Configuration()

    public static func problem(_ c: Configuration, schema: FeatureSchema) -> String? {
        if let problem = settingsProblem(["embedding_dim": [c.embeddingDim], "bottom_mlp": c.bottomMlp, "top_mlp": c.topMlp]) {
            return problem
        }
        let vectors = schema.categorical.count + (schema.dense.isEmpty ? 0 : 1)
        return vectors >= 2 ? nil : "dlrm interacts at least two vectors; the data has \(vectors)"
    }

    public static func build(_ c: Configuration, _ b: ModelBuilder) throws -> Graph.Value {
        var vectors = try b.features.map { try b.embedding($0.name, dimension: c.embeddingDim) }
        if let dense = b.dense {
            let bottom = MLP("bottom", sizes: [dense.columns] + c.bottomMlp + [c.embeddingDim], last: .relu)
            vectors.insert(try b.add("bottom", bottom, [dense]), at: 0)
        }
        let interaction = DotInteraction(vectors: vectors.count, dimension: c.embeddingDim, passthrough: b.dense != nil)
        let x = try b.add("interaction", interaction, vectors)
        return try b.add("top", MLP("top", sizes: [x.columns] + c.topMlp + [1]), [x])
    }
}
