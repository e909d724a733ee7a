/// What a table is: fixed when the table is created and stored with it.
public struct TableSpec: Sendable, Codable, Equatable, Hashable {
    /// Floats per row.
    public var dimension: Int
    /// How row values are stored. Values are rounded to this type after every update, in
    /// every tier, so a row reads the same wherever it lives.
    public var storage: StorageType
    /// The value of a row that was never written.
    public var initializer: Initializer
    /// The sparse optimizer whose state lives beside each row.
    public var optimizer: Optimizer

    public init(dimension: Int, storage: StorageType = .float32,
                initializer: Initializer = .init(.zeros), optimizer: Optimizer = .sgd()) {
        self.dimension = dimension
        self.storage = storage
        self.initializer = initializer
        self.optimizer = optimizer
    }

    /// Why this spec cannot make a table, or nil.
    @_spi(Testing) public var problem: String? {
        if dimension < 1 || dimension > 65_536 { return "dimension \(dimension) is outside 1...65536" }
        return initializer.problem ?? optimizer.problem
    }
}

/// The element type of stored row values. Optimizer state is always float32.
public enum StorageType: String, Sendable, Codable, CaseIterable {
    case float32, float16, bfloat16

    @_spi(Testing) public var byteWidth: Int { self == .float32 ? 4 : 2 }

    /// A stable number for the on-disk record header.
    @_spi(Testing) public var code: UInt8 {
        switch self {
        case .float32: 0
        case .float16: 1
        case .bfloat16: 2
        }
    }
}

/// A row's value before its first update: a function of (seed, key) alone, so it is the same
/// every time it is read, in any process.
public struct Initializer: Sendable, Codable, Equatable, Hashable {
    public enum Distribution: Sendable, Codable, Equatable, Hashable {
        case zeros
        case constant(Float)
        case uniform(low: Float, high: Float)
        case normal(mean: Float, standardDeviation: Float)
    }

    public var distribution: Distribution
    public var seed: UInt64

    public init(_ distribution: Distribution, seed: UInt64 = 0) {
        self.distribution = distribution
        self.seed = seed
    }

    var problem: String? {
        switch distribution {
        case .zeros: nil
        case .constant(let c): c.isFinite ? nil : "initializer constant must be finite"
        case .uniform(let lo, let hi):
            lo.isFinite && hi.isFinite && lo <= hi ? nil : "uniform initializer needs finite low <= high"
        case .normal(let m, let s):
            // Box-Muller draws stay within 8.6 standard deviations (its uniform is at least 2^-53).
            m.isFinite && s.isFinite && s >= 0
                && Double(abs(m)) + 8.6 * Double(s) <= Double(Float.greatestFiniteMagnitude)
                ? nil : "normal initializer needs a finite mean and a standard deviation >= 0 whose draws fit in a Float"
        }
    }
}

/// A sparse optimizer applied inside the store. Its state is stored in the row's record.
public enum Optimizer: Sendable, Codable, Equatable, Hashable {
    /// w -= lr * g
    case sgd(learningRate: Float = 0.01)
    /// Per coordinate: a += g², w -= lr * g / (sqrt(a) + eps).
    case adagrad(learningRate: Float = 0.01, epsilon: Float = 1e-8, initialAccumulator: Float = 0)
    /// One accumulator per row, FBGEMM's default: a += mean(g²), w -= lr * g / (sqrt(a) + eps).
    case rowwiseAdagrad(learningRate: Float = 0.01, epsilon: Float = 1e-8, initialAccumulator: Float = 0)
    /// Adam with a per-row step count (lazy Adam): rows are corrected for their own number
    /// of updates, not the global step.
    case adam(learningRate: Float = 0.001, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8)
    /// FTRL-Proximal (McMahan et al. 2013), the optimizer of the wide part of Wide & Deep.
    case ftrl(alpha: Float = 0.05, beta: Float = 1, l1: Float = 0, l2: Float = 0)

    public var name: String {
        switch self {
        case .sgd: "sgd"
        case .adagrad: "adagrad"
        case .rowwiseAdagrad: "rowwise-adagrad"
        case .adam: "adam"
        case .ftrl: "ftrl"
        }
    }

    /// A stable number for the on-disk record header.
    @_spi(Testing) public var code: UInt8 {
        switch self {
        case .sgd: 0
        case .adagrad: 1
        case .rowwiseAdagrad: 2
        case .adam: 3
        case .ftrl: 4
        }
    }

    /// Floats of state per row.
    public func stateCount(dimension: Int) -> Int {
        switch self {
        case .sgd: 0
        case .adagrad: dimension
        case .rowwiseAdagrad: 1
        case .adam, .ftrl: 2 * dimension
        }
    }

    /// Why `rate` cannot be a batch's learning rate, or nil.
    @_spi(Testing) public func learningRateProblem(_ rate: Float) -> String? {
        switch self {
        case .ftrl:
            return rate.isFinite && rate > 0 ? nil : "ftrl's alpha must be finite and positive"
        case .rowwiseAdagrad(_, let e, _) where rate.isFinite && !(rate / e).isFinite:
            return "the learning rate / epsilon overflows"
        default:
            return rate.isFinite && rate >= 0 ? nil : "the learning rate must be finite and non-negative"
        }
    }

    /// The learning rate (FTRL's alpha), which a batch may override.
    public var learningRate: Float {
        switch self {
        case .sgd(let lr), .adagrad(let lr, _, _), .rowwiseAdagrad(let lr, _, _), .adam(let lr, _, _, _): lr
        case .ftrl(let alpha, _, _, _): alpha
        }
    }

    var problem: String? {
        let values: [Float] = switch self {
        case .sgd(let lr): [lr]
        case .adagrad(let lr, let e, let a), .rowwiseAdagrad(let lr, let e, let a): [lr, e, a]
        case .adam(let lr, let b1, let b2, let e): [lr, b1, b2, e]
        case .ftrl(let a, let b, let l1, let l2): [a, b, l1, l2]
        }
        if values.contains(where: { !$0.isFinite || $0 < 0 }) {
            return "optimizer \(name) parameters must be finite and non-negative"
        }
        switch self {
        case .adam(_, let b1, let b2, _) where b1 >= 1 || b2 >= 1:
            return "adam betas must be below 1"
        case .rowwiseAdagrad(let lr, let e, _):
            // The row's step is lr / (sqrt(a) + eps); it must stay finite even when a = 0.
            if !(e > 0) { return "\(name) epsilon must be positive" }
            return (lr / e).isFinite ? nil : "\(name) learning rate / epsilon overflows"
        case .adagrad(_, let e, _), .adam(_, _, _, let e):
            // A zero gradient on a fresh row would divide zero by zero.
            return e > 0 ? nil : "\(name) epsilon must be positive"
        case .ftrl(let alpha, _, _, _):
            return alpha > 0 ? nil : "ftrl alpha must be positive"
        case .sgd:
            return nil
        }
    }
}
