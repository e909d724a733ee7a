// Two-tower retrieval (Yi et al. 2019, the design YouTube's and most retrieval stacks use): a
// user tower, an MLP over everything known about the user (the id, the user side's features,
// the history pooled), gives a query whose inner product with an item's vector scores the
// item. The item tower gives that vector: by default the item's embedding itself, so the
// catalog's vectors are the store's rows and a nearest-neighbour index over that table
// (`strata index`) retrieves by this model exactly as it scores (`strata recommend
// --retrieve`); with `item_tower` layers, an MLP over the item's id embedding and the item
// side's features (genres, year), which also scores items by what they are. Trained by the
// softmax over every item, or over sampled candidates (`--negatives N` with `--loss softmax`:
// the batch's own items and N drawn ones, log-Q corrected).
public import StrataNN

public enum TwoTower: RecommenderModel {
    public struct Configuration: Codable, Equatable, Sendable {
        /// The item vectors and the query.
        public var embeddingDim = 64
        /// The user tower's hidden layers.
        public var tower = [128]
        /// The item tower's hidden layers; none: an item's vector is its embedding.
        public var itemTower: [Int] = []
        public var dropout: Float = 0

        public init() {}
    }

    public static let name = "two-tower"
    public static let summary = "two-tower retrieval (Yi et al. 2019): a user tower's query against the item table, by inner product"
    public static let defaultConfiguration = Configuration()

    public static func problem(_ c: Configuration, schema: FeatureSchema) -> String? {
        if let problem = settingsProblem(["embedding_dim": [c.embeddingDim], "tower": c.tower, "item_tower": c.itemTower],
                                         dropout: c.dropout) { return problem }
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
        if !c.itemTower.isEmpty {
            // What is known of the item itself: its id and the item side's features.
            let itemFeatures = b.readFeatures.filter { $0.side == .item || $0.name == item }.map(\.name)
            _ = try b.itemTower {
                let y = try b.concat("item", try b.embeddings(itemFeatures, dimension: c.embeddingDim))
                return try b.add("item_tower", MLP("item_tower", sizes: [y.columns] + c.itemTower + [c.embeddingDim], dropout: c.dropout), [y])
            }
        }
        try b.scoreItems(query, item: item)
        return query
    }
}
