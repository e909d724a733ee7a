// DeepFM (Guo et al. 2017): a factorization machine (a weight per key, and the pairwise dot
// products of the features' embeddings) and a deep MLP over the same embeddings, their
// outputs summed into the logit.
public import StrataNN

public enum DeepFM: RecommenderModel {
    public struct Configuration: Codable, Equatable, Sendable {
        public var embeddingDim = 16
        public var mlp = [128, 128, 128]
        public var dropout: Float = 0.2

        public init() {}
    }

    public static let name = "deepfm"
    public static let summary = "DeepFM (Guo et al. 2017): factorization machine and MLP over shared embeddings"
    public static let defaultConfiguration = Configuration()

    public static func problem(_ c: Configuration, schema: FeatureSchema) -> String? {
        if let problem = settingsProblem(["embedding_dim": [c.embeddingDim], "mlp": c.mlp], dropout: c.dropout) { return problem }
        return schema.categorical.count >= 2 ? nil : "deepfm crosses at least two categorical features; the data has \(schema.categorical.count)"
    }

    public static func build(_ c: Configuration, _ b: ModelBuilder) throws -> Graph.Value {
        let names = b.features.map(\.name)
        var logits = try names.map { try b.bias($0) }
        if let dense = b.dense { logits.append(try b.add("linear.dense", Linear("linear.dense", inputs: dense.columns, outputs: 1), [dense])) }
        let embeddings = try b.embeddings(names, dimension: c.embeddingDim)
        logits.append(try b.add("fm", FactorizationMachine(fields: embeddings.count, dimension: c.embeddingDim), embeddings))
        let x = try b.concat("deep.input", embeddings + (b.dense.map { [$0] } ?? []))
        logits.append(try b.add("deep", MLP("deep", sizes: [x.columns] + c.mlp + [1], dropout: c.dropout), [x]))
        return try b.add("logit", Sum("logit", columns: 1, bias: true), logits)
    }
}
