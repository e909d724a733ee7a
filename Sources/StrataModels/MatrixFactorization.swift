// Matrix factorisation (Koren et al. 2009): score(u, i) = ⟨p_u, q_i⟩ + b_u + b_i + μ. Trained
// with MSE on ratings (biased SVD, as Surprise's SVD) or with BPR on implicit feedback (BPR-MF,
// Rendle et al. 2009, usually without biases).
public import StrataNN

public enum MatrixFactorization: RecommenderModel {
    public struct Configuration: Codable, Equatable, Sendable {
        public var embeddingDim = 64
        /// The user and item biases and the global offset μ.
        public var biases = true

        public init() {}
    }

    public static let name = "mf"
    public static let summary = "matrix factorisation: user · item (+ user, item and global biases)"
    public static let defaultConfiguration = Configuration()

    public static func problem(_ c: Configuration, schema: FeatureSchema) -> String? {
        settingsProblem(["embedding_dim": [c.embeddingDim]])
    }

    public static func build(_ c: Configuration, _ b: ModelBuilder) throws -> Graph.Value {
        let (user, item) = try b.userAndItem(for: name)
        let p = try b.embedding(user, dimension: c.embeddingDim), q = try b.embedding(item, dimension: c.embeddingDim)
        let dot = try b.add("dot", RowDot(), [p, q])
        guard c.biases else { return dot }
        return try b.add("score", Sum("score", columns: 1, bias: true), [dot, try b.bias(user), try b.bias(item)])
    }
}
