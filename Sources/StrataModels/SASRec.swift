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
        transformerProblem(hiddenSize: c.hiddenSize, layers: c.layers, heads: c.heads, innerSize: c.innerSize, maxLength: c.maxLength,
                           dropout: c.dropout, attentionDropout: c.attentionDropout) ?? historyProblem(schema)
    }

    public static func build(_ c: Configuration, _ b: ModelBuilder) throws -> Graph.Value {
        let (items, lengths) = try b.sequence(b.schema.sequence!, dimension: c.hiddenSize, steps: c.maxLength)
        let x = try b.transformerEncoder(items, lengths, width: c.hiddenSize, layers: c.layers, heads: c.heads, inner: c.innerSize,
                                         steps: c.maxLength, causal: true, dropout: c.dropout, attentionDropout: c.attentionDropout)
        let query = try b.add("last", LastPosition(width: c.hiddenSize, steps: c.maxLength), [x, lengths])
        try b.scoreItems(query, item: b.schema.item!)
        return query
    }
}

extension RecommenderModel {
    /// The settings' problem of a transformer over the user's items (SASRec, BERT4Rec), or nil.
    static func transformerProblem(hiddenSize: Int, layers: Int, heads: Int, innerSize: Int, maxLength: Int, dropout: Float,
                                   attentionDropout: Float) -> String? {
        if let problem = settingsProblem(["hidden_size": [hiddenSize], "layers": [layers], "heads": [heads],
                                          "inner_size": [innerSize], "max_length": [maxLength]], dropout: dropout) {
            return problem
        }
        if !(attentionDropout >= 0 && attentionDropout < 1) { return "\(name): attention_dropout must be in [0, 1), not \(attentionDropout)" }
        if hiddenSize % heads != 0 { return "\(name): hidden_size \(hiddenSize) is not a multiple of heads \(heads)" }
        return nil
    }
}

extension ModelBuilder {
    /// SASRec's and BERT4Rec's encoder: position embeddings added to the items, layer norm and
    /// dropout, then `layers` transformer blocks, causal or bidirectional.
    func transformerEncoder(_ items: Graph.Value, _ lengths: Graph.Value, width: Int, layers: Int, heads: Int, inner: Int, steps: Int,
                            causal: Bool, dropout: Float, attentionDropout: Float) throws -> Graph.Value {
        var x = try add("position", PositionEmbedding("position", width: width, steps: steps), [items, lengths])
        x = try add("norm", LayerNorm("norm", width: width, steps: steps), [x, lengths])
        x = try add("dropout", Dropout(rate: dropout), [x])
        for l in 0..<layers {
            let block = TransformerBlock("block\(l)", width: width, heads: heads, inner: inner, steps: steps,
                                         causal: causal, hiddenDropout: dropout, attentionDropout: attentionDropout)
            x = try add("block\(l)", block, [x, lengths])
        }
        return x
    }
}
