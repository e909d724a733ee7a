// DCN-v2 (Wang et al. 2021), stacked: the features' embeddings and the dense features,
// concatenated, go through a full-rank cross network (explicit feature crosses of bounded
// degree), then an MLP to the logit.
public import StrataNN

public enum DCNv2: RecommenderModel {
    public struct Configuration: Codable, Equatable, Sendable {
        public var embeddingDim = 16
        public var crossLayers = 3
        public var mlp = [256, 256]
        public var dropout: Float = 0.2

        public init() {}
    }

    public static let name = "dcn-v2"
    public static let summary = "DCN-v2 (Wang et al. 2021): a cross network stacked with an MLP"
    public static let defaultConfiguration = Configuration()

    public static func problem(_ c: Configuration, schema: FeatureSchema) -> String? {
        if let problem = settingsProblem(["embedding_dim": [c.embeddingDim], "cross_layers": [c.crossLayers], "mlp": c.mlp],
                                         dropout: c.dropout) { return problem }
        return schema.categorical.isEmpty && schema.dense.isEmpty ? "dcn-v2: the data has no features" : nil
    }

    public static func build(_ c: Configuration, _ b: ModelBuilder) throws -> Graph.Value {
        let embeddings = try b.embeddings(b.features.map(\.name), dimension: c.embeddingDim)
        let x = try b.concat("input", embeddings + (b.dense.map { [$0] } ?? []))
        let crossed = try b.add("cross", CrossNetwork("cross", columns: x.columns, layers: c.crossLayers), [x])
        return try b.add("deep", MLP("deep", sizes: [x.columns] + c.mlp + [1], dropout: c.dropout), [crossed])
    }
}
