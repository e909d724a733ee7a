// Wide & Deep (Cheng et al. 2016): a wide linear model over the sparse features and their
// crosses, which memorises, trained jointly with a deep MLP over embeddings, which
// generalises; their logits are summed. The wide weights are dimension-1 tables (`*.wide`)
// trained by the wide optimizer (FTRL-Proximal by default), the embeddings by the sparse one.
public import StrataNN

public enum WideAndDeep: RecommenderModel {
    public struct Configuration: Codable, Equatable, Sendable {
        public var embeddingDim = 16
        public var mlp = [256, 128]
        public var dropout: Float = 0

        public init() {}
    }

    public static let name = "wide-deep"
    public static let summary = "Wide & Deep (Cheng et al. 2016): FTRL-trained wide weights and crosses plus a deep MLP"
    public static let defaultConfiguration = Configuration()

    public static func problem(_ c: Configuration, schema: FeatureSchema) -> String? {
        if let problem = settingsProblem(["embedding_dim": [c.embeddingDim], "mlp": c.mlp], dropout: c.dropout) { return problem }
        return schema.categorical.isEmpty ? "wide-deep: the data has no categorical feature" : nil
    }

    public static func build(_ c: Configuration, _ b: ModelBuilder) throws -> Graph.Value {
        // Wide: a weight per key of every feature and cross, and a linear term of the dense.
        var logits = try b.features.map { try b.wide($0.name) }
        if let dense = b.dense { logits.append(try b.add("wide.dense", Linear("wide.dense", inputs: dense.columns, outputs: 1), [dense])) }
        // Deep: the embeddings of the features read from data, and the dense features.
        var deep = try b.embeddings(b.readFeatures.map(\.name), dimension: c.embeddingDim)
        if let dense = b.dense { deep.append(dense) }
        let x = try b.concat("deep.input", deep)
        logits.append(try b.add("deep", MLP("deep", sizes: [x.columns] + c.mlp + [1], dropout: c.dropout), [x]))
        return try b.add("logit", Sum("logit", columns: 1, bias: true), logits)
    }
}
