// Two-tower retrieval (Yi et al. 2019, the design YouTube's and most retrieval stacks use): a
// user tower, an MLP over everything known about the user (the id, the user side's features,
// the history pooled), gives a query whose inner product with an item's vector scores the
// item. The item side is the item table itself, so the catalog's vectors are the store's rows:
// a nearest-neighbour index over that table (`strata index`) retrieves by this model
// exactly as it scores, and `strata recommend --retrieve` uses it. Trained by the softmax over
// every item, or over sampled candidates (`--negatives N` with `--loss softmax`: the batch's
// own items and N drawn ones, log-Q corrected).
public import StrataNN

public enum TwoTower: RecommenderModel {
    public struct Configuration: Codable, Equatable, Sendable {
        /// The item vectors and the query.
        public var embeddingDim = 64
        /// The user tower's hidden layers.
        public var tower = [128]
        public var dropout: Float = 0

        public init() {}
    }

    public static let name = "two-tower"
    public static let summary = "two-tower retrieval (Yi et al. 2019): a user tower's query against the item table, by inner product"
    public static let defaultConfiguration = Configuration()

    public static func problem(_ c: Configuration, schema: FeatureSchema) -> String? {
        if let problem = settingsProblem(["embedding_dim": [c.embeddingDim], "tower": c.tower], dropout: c.dropout) { return problem }
        guard schema.user != nil, schema.item != nil else {
            return "two-tower needs the data to name its user and item features (the schema's \"user\" and \"item\")"
        }
        return nil
    }

    public static func build(_ c: Configuration, _ b: ModelBuilder) throws -> Graph.Value {
        let (user, item) = try b.userAndItem(for: name)
        // The user's side only: what is known before an item is chosen. The history reads the
        // item table, so it pools vectors of the catalog the query searches.
        let features = b.readFeatures.filter { ($0.side == .user || $0.name == user) && $0.name != item }.map(\.name)
        var parts = try b.embeddings(features, dimension: c.embeddingDim)
        if let dense = b.dense, b.schema.dense.allSatisfy({ $0.side == .user }) { parts.append(dense) }
        let x = try b.concat("user", parts)
        let query = try b.add("tower", MLP("tower", sizes: [x.columns] + c.tower + [c.embeddingDim], dropout: c.dropout), [x])
        try b.scoreItems(query, item: item)
        return query
    }
}
