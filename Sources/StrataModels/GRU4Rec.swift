// GRU4Rec (Hidasi et al. 2016), as RecBole builds it: the embeddings of a user's recent items,
// dropout, a recurrent layer, and a linear layer from its hidden state after the last item to
// the query, whose inner product with an item's embedding (the same item table: the
// embeddings are tied) scores that item as the next one. LSTM4Rec is the same with an LSTM.
public import StrataNN

public enum GRU4Rec: RecommenderModel {
    public struct Configuration: Codable, Equatable, Sendable {
        /// The items' embeddings and the query.
        public var embeddingDim = 64
        /// The recurrent layer's state.
        public var hiddenSize = 128
        /// On the history's embeddings.
        public var dropout: Float = 0.3
        /// The most recent items read.
        public var maxLength = 50

        public init() {}
    }

    public static let name = "gru4rec"
    public static let summary = "GRU4Rec (Hidasi et al. 2016): a GRU over the user's recent items predicts the next one"
    public static let defaultConfiguration = Configuration()

    public static func problem(_ c: Configuration, schema: FeatureSchema) -> String? {
        sessionProblem(self, c, schema: schema)
    }

    public static func build(_ c: Configuration, _ b: ModelBuilder) throws -> Graph.Value {
        try buildSession(c, b) { GRU("gru", inputs: c.embeddingDim, hidden: c.hiddenSize, steps: c.maxLength, output: .last) }
    }

    /// Why `c` cannot build session model `M` on `schema`, or nil.
    static func sessionProblem<M: RecommenderModel>(_ model: M.Type, _ c: Configuration, schema: FeatureSchema) -> String? {
        if let problem = M.settingsProblem(["embedding_dim": [c.embeddingDim], "hidden_size": [c.hiddenSize], "max_length": [c.maxLength]],
                                         dropout: c.dropout) {
            return problem
        }
        return M.historyProblem(schema)
    }

    /// The session model with recurrent layer `cell()`.
    static func buildSession(_ c: Configuration, _ b: ModelBuilder, cell: () -> any Layer) throws -> Graph.Value {
        let (items, lengths) = try b.sequence(b.schema.sequence!, dimension: c.embeddingDim, steps: c.maxLength)
        let dropped = try b.add("dropout", Dropout(rate: c.dropout), [items])
        let state = try b.add("recurrent", cell(), [dropped, lengths])
        let query = try b.add("query", Linear("query", inputs: state.columns, outputs: c.embeddingDim), [state])
        try b.scoreItems(query, item: b.schema.item!)
        return query
    }
}

public enum LSTM4Rec: RecommenderModel {
    public typealias Configuration = GRU4Rec.Configuration

    public static let name = "lstm4rec"
    public static let summary = "GRU4Rec with an LSTM: an LSTM over the user's recent items predicts the next one"
    public static let defaultConfiguration = Configuration()

    public static func problem(_ c: Configuration, schema: FeatureSchema) -> String? { GRU4Rec.sessionProblem(self, c, schema: schema) }

    public static func build(_ c: Configuration, _ b: ModelBuilder) throws -> Graph.Value {
        try GRU4Rec.buildSession(c, b) { LSTM("lstm", inputs: c.embeddingDim, hidden: c.hiddenSize, steps: c.maxLength, output: .last) }
    }
}
