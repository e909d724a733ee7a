// A deterministic stream of store operations from a seed, so a test and a child process can
// agree on what was done without talking.
import StrataStore

public enum Operation: Sendable, Equatable {
    case lookup([UInt64])
    case peek([UInt64])
    case apply([UInt64], [Float], learningRate: Float?)
    case remove([UInt64])
    case checkpoint
    /// Close and open again (without a checkpoint first, the changes since are dropped).
    case reopen
}

/// Random batches over a key space where a few keys are hot and most are cold, so rows keep
/// moving between tiers.
public struct Workload: Sendable {
    public let dimension: Int
    public let keySpace: UInt64
    public var allowReopen: Bool
    public var checkpointEvery: Int
    private var rng: SplitMix64

    public init(seed: UInt64, dimension: Int, keySpace: UInt64 = 2000, checkpointEvery: Int = 40, allowReopen: Bool = true) {
        rng = SplitMix64(seed: seed)
        self.dimension = dimension
        self.keySpace = keySpace
        self.checkpointEvery = checkpointEvery
        self.allowReopen = allowReopen
    }

    private mutating func key() -> UInt64 {
        // Half the draws from a hot 2%, the rest uniform; a few keys near UInt64's ends.
        let r = rng.next() % 100
        if r < 2 { return UInt64.max - rng.next() % 4 }
        if r < 50 { return rng.next() % max(1, keySpace / 50) }
        return rng.next() % keySpace
    }

    private mutating func keys() -> [UInt64] {
        let n = Int(1 + rng.next() % 48)
        var k = (0..<n).map { _ in key() }
        if n > 3 && rng.next() % 3 == 0 { k[n - 1] = k[0]; k[n / 2] = k[0] }  // duplicates
        return k
    }

    public mutating func next() -> Operation {
        let r = Int(rng.next() % UInt64(1000))
        if r < 1000 / checkpointEvery { return .checkpoint }
        if allowReopen && r < 1000 / checkpointEvery + 8 { return .reopen }
        switch r % 10 {
        case 0, 1, 2: return .lookup(keys())
        case 3: return .peek(keys())
        case 4: return .remove(keys())
        default:
            let k = keys()
            let g = (0..<(k.count * dimension)).map { _ in Float(Int64(rng.next() % 2001) - 1000) / 997 }
            let lr: Float? = rng.next() % 4 == 0 ? Float(rng.next() % 100 + 1) / 1000 : nil
            return .apply(k, g, learningRate: lr)
        }
    }
}
