// DLRM (Naumov et al. 2019), as in facebookresearch/dlrm: a bottom MLP over the dense
// features, one embedding table per categorical feature, the pairwise dot interaction of
// the bottom output and the embeddings, and a top MLP to one logit.
public import StrataNN
public import StrataStore

public struct DLRMConfig: Sendable, Codable, Equatable {
    public var denseFeatures: Int
    public var sparseFeatures: Int
    public var embeddingDimension: Int
    /// Hidden sizes of the bottom MLP; its input is the dense features and its output the
    /// embedding dimension (13-512-256-64-16 for Criteo: hidden [512, 256, 64]).
    public var bottomHidden: [Int]
    /// Hidden sizes of the top MLP; its input is the interaction and its output one logit
    /// (512-256-1 for Criteo: hidden [512, 256]).
    public var topHidden: [Int]

    public init(denseFeatures: Int = 13, sparseFeatures: Int = 26, embeddingDimension: Int = 16,
                bottomHidden: [Int] = [512, 256, 64], topHidden: [Int] = [512, 256]) {
        self.denseFeatures = denseFeatures
        self.sparseFeatures = sparseFeatures
        self.embeddingDimension = embeddingDimension
        self.bottomHidden = bottomHidden
        self.topHidden = topHidden
    }

    /// The Criteo Kaggle architecture of the DLRM paper's benchmarks.
    public static let criteoKaggle = DLRMConfig()

    public var bottomSizes: [Int] { [denseFeatures] + bottomHidden + [embeddingDimension] }
    public var interactionColumns: Int {
        let v = sparseFeatures + 1
        return embeddingDimension + v * (v - 1) / 2
    }
    public var topSizes: [Int] { [interactionColumns] + topHidden + [1] }
}

public final class DLRM {
    public let config: DLRMConfig
    public let bottom: MLP
    public let embeddings: [StoreEmbedding]
    public let interaction: DotInteraction
    public let top: MLP

    /// `tables` holds one store table per categorical feature, of the embedding dimension.
    public init(config: DLRMConfig, tables: [Table], seed: UInt64) {
        precondition(tables.count == config.sparseFeatures, "DLRM needs one table per categorical feature")
        precondition(tables.allSatisfy { $0.spec.dimension == config.embeddingDimension }, "tables must have the embedding dimension")
        self.config = config
        bottom = MLP("bottom", sizes: config.bottomSizes, activations: Array(repeating: .relu, count: config.bottomSizes.count - 1))
        embeddings = tables.map { StoreEmbedding(table: $0) }
        interaction = DotInteraction(vectors: config.sparseFeatures + 1, dimension: config.embeddingDimension)
        top = MLP("top", sizes: config.topSizes,
                  activations: Array(repeating: .relu, count: config.topSizes.count - 2) + [.identity])
        var w = WeightInitializer(seed: seed)
        bottom.initialize(&w)
        top.initialize(&w)
    }

    /// The dense parameters (the sparse ones live in the store).
    public var parameters: [Parameter] { bottom.parameters + top.parameters }

    /// Logits for a batch: `dense` is batch × dense features; `keys` holds the categorical
    /// keys feature after feature (feature f's keys at f × batch ..< (f + 1) × batch).
    @discardableResult
    public func forward(dense: Tensor, keys: UnsafeBufferPointer<UInt64>, training: Bool) throws(StoreError) -> Tensor {
        let b = dense.rows
        precondition(dense.columns == config.denseFeatures && keys.count == b * config.sparseFeatures,
                     "batch shape does not fit the model")
        let x = bottom.forward(dense)
        // Tables are independent: each is looked up by one thread, in the same order every run.
        try Parallel.forEach(embeddings.count) { (f) throws(StoreError) in
            _ = try embeddings[f].forward(keys: UnsafeBufferPointer(rebasing: keys[(f * b)..<((f + 1) * b)]), training: training)
        }
        return top.forward(interaction.forward([x] + embeddings.map(\.output)))
    }

    /// Backward from d(loss)/d(logits): dense gradients into the parameters, one sparse
    /// optimizer step per table in the store.
    public func backward(_ dLogits: Tensor, sparseLearningRate: Float? = nil) throws(StoreError) {
        let dInteraction = top.backward(dLogits)!
        interaction.backward(dInteraction)
        bottom.backward(interaction.inputGradients[0], needInputGradient: false)
        try Parallel.forEach(embeddings.count) { (f) throws(StoreError) in
            try embeddings[f].backward(interaction.inputGradients[f + 1], learningRate: sparseLearningRate)
        }
    }
}
