// BERT4Rec (Sun et al. 2019), as RecBole builds it: the user's items with some masked
// (`Cloze.swift`), item and position embeddings, layer-normalised, through bidirectional
// transformer blocks (each position attends to every real one); each masked position's state
// goes through an output head (linear, GELU, layer norm) to a query whose inner product with
// an item's embedding (the same item table, where the mask is one more row) scores that item
// as the one masked there. At inference the mask follows the history, and its query scores
// the next item.
public import StrataNN

public enum BERT4Rec: RecommenderModel {
    public struct Configuration: Codable, Equatable, Sendable {
        /// The items' embeddings, the blocks' width and the query.
        public var hiddenSize = 64
        public var layers = 2
        public var heads = 2
        /// The feed-forward networks' inner width.
        public var innerSize = 256
        /// After the embeddings and on each block's sublayers (RecBole's `hidden_dropout_prob`).
        public var dropout: Float = 0.2
        /// On the attention probabilities (RecBole's `attn_dropout_prob`).
        public var attentionDropout: Float = 0.2
        /// The positions read: the most recent `max_length − 1` items and the mask.
        public var maxLength = 50
        /// Each position's chance of being masked in training (RecBole's `mask_ratio`).
        public var maskRatio: Float = 0.2
        /// Each sample's chance of having only its own item masked, after its history
        /// (RecBole's `ft_ratio`).
        public var lastOnlyRatio: Float = 0.5

        public init() {}

        /// The masked positions a sample keeps: RecBole's ⌊mask_ratio · max_length⌋, at least 1.
        var slots: Int { max(1, Int(maskRatio * Float(maxLength))) }
    }

    public static let name = "bert4rec"
    public static let summary = "BERT4Rec (Sun et al. 2019): bidirectional self-attention over the user's items, trained to name masked ones, predicts the next"
    public static let defaultConfiguration = Configuration()

    public static func problem(_ c: Configuration, schema: FeatureSchema) -> String? {
        if let problem = transformerProblem(hiddenSize: c.hiddenSize, layers: c.layers, heads: c.heads, innerSize: c.innerSize,
                                            maxLength: c.maxLength, dropout: c.dropout, attentionDropout: c.attentionDropout) {
            return problem
        }
        if !(c.maskRatio > 0 && c.maskRatio <= 1) { return "\(name): mask_ratio must be in (0, 1], not \(c.maskRatio)" }
        if !(c.lastOnlyRatio >= 0 && c.lastOnlyRatio <= 1) { return "\(name): last_only_ratio must be in [0, 1], not \(c.lastOnlyRatio)" }
        if c.maxLength < 2 { return "\(name): max_length must be at least 2 (an item and the mask), not \(c.maxLength)" }
        return historyProblem(schema)
    }

    public static func build(_ c: Configuration, _ b: ModelBuilder) throws -> Graph.Value {
        let (h, slots, steps) = (c.hiddenSize, c.slots, c.maxLength)
        let masking = ClozeMasking(ratio: c.maskRatio, lastOnly: c.lastOnlyRatio, slots: slots)
        let (items, lengths, positions) = try b.maskedSequence(b.schema.sequence!, target: b.schema.item!, dimension: h,
                                                               steps: steps, masking: masking)
        let x = try b.transformerEncoder(items, lengths, width: h, layers: c.layers, heads: c.heads, inner: c.innerSize, steps: steps,
                                         causal: false, dropout: c.dropout, attentionDropout: c.attentionDropout)
        var query = try b.add("masked", GatherPositions(width: h, steps: steps, slots: slots), [x, positions])
        query = try b.add("head", PositionwiseLinear("head", inputs: h, outputs: h, steps: slots), [query])
        query = try b.add("head.gelu", GELU(width: h, steps: slots), [query])
        query = try b.add("head.norm", LayerNorm("head.norm", width: h, steps: slots), [query])
        try b.scoreItems(query, item: b.schema.item!, slots: slots)
        return query
    }
}
