// SASRec (Kang and McAuley 2018), as RecBole builds it: the embeddings of a user's recent
// items plus learned position embeddings, layer-normalised, through causal transformer
// blocks (each position attends to itself and the items before it); the last real
// position's output is the query, whose inner product with an item's embedding (the same
// item table) scores that item as the next one.
public import StrataNN

public enum SASRec: RecommenderModel {
    public struct Configuration: Codable, Equatable, Sendable {
        /// The items' embeddings, the blocks' width and the query.
        public var hiddenSize = 64
        public var layers = 2
        public var heads = 2
        /// The feed-forward networks' inner width.
        public var innerSize = 256
        /// After the embeddings and on each block's sublayers (RecBole's `hidden_dropout_prob`).
        public var dropout: Float = 0.5
        /// On the attention probabilities (RecBole's `attn_dropout_prob`).
        public var attentionDropout: Float = 0.5
        /// The most recent items read.
        public var maxLength = 50

        public init() {}
    }

    public static let name = "sasrec"
    public static let summary = "SASRec (Kang and McAuley 2018): causal self-attention over the user's recent items predicts the next one"
    public static let defaultConfiguration = Configuration()

    public static func problem(_ c: Configuration, schema: FeatureSchema) -> String? {
        if let problem = settingsProblem(["hidden_size": [c.hiddenSize], "layers": [c.layers], "heads": [c.heads],
                                          "inner_size": [c.innerSize], "max_length": [c.maxLength]], dropout: c.dropout) {
            return problem
        }
        if !(c.attentionDropout >= 0 && c.attentionDropout < 1) { return "\(name): attention_dropout must be in [0, 1), not \(c.attentionDropout)" }
        if c.hiddenSize % c.heads != 0 { return "\(name): hidden_size \(c.hiddenSize) is not a multiple of heads \(c.heads)" }
        return historyProblem(schema)
    }

    public static func build(_ c: Configuration, _ b: ModelBuilder) throws -> Graph.Value {
        let (items, lengths) = try b.sequence(b.schema.sequence!, dimension: c.hiddenSize, steps: c.maxLength)
        var x = try b.add("position", PositionEmbedding("position", width: c.hiddenSize, steps: c.maxLength), [items, lengths])
        x = try b.add("norm", LayerNorm("norm", width: c.hiddenSize, steps: c.maxLength), [x, lengths])
        x = try b.add("dropout", Dropout(rate: c.dropout), [x])
        for l in 0..<c.layers {
            let block = TransformerBlock("block\(l)", width: c.hiddenSize, heads: c.heads, inner: c.innerSize, steps: c.maxLength,
                                         causal: true, hiddenDropout: c.dropout, attentionDropout: c.attentionDropout)
            x = try b.add("block\(l)", block, [x, lengths])
        }
        let query = try b.add("last", LastPosition(width: c.hiddenSize, steps: c.maxLength), [x, lengths])
        try b.scoreItems(query, item: b.schema.item!)
        return query
    }
}
