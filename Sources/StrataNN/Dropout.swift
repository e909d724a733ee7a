public import StrataStore

/// Zeroes each value with probability `rate` in training and scales the rest by
/// 1 / (1 - rate). The mask comes from a seeded generator whose state is part of a training
/// checkpoint, so a resumed run drops the same values.
public final class Dropout {
    public let rate: Float
    public var generator: SplitMix64
    public let output: Tensor
    private var mask: [Float] = []

    public init(rate: Float, columns: Int, seed: UInt64) {
        precondition(rate >= 0 && rate < 1)
        self.rate = rate
        generator = SplitMix64(seed: seed)
        output = Tensor(rows: 0, columns: columns)
    }

    @discardableResult
    public func forward(_ x: Tensor, training: Bool) -> Tensor {
        output.resize(rows: x.rows)
        let n = x.count
        if !training || rate == 0 {
            output.data.update(from: x.data, count: n)
            return output
        }
        if mask.count < n { mask = [Float](repeating: 0, count: n) }
        let keep = 1 / (1 - rate)
        let threshold = UInt64(Double(rate) * 0x1p64.nextDown)
        for i in 0..<n {
            mask[i] = generator.next() < threshold ? 0 : keep
            output.data[i] = x.data[i] * mask[i]
        }
        return output
    }

    /// dx = dy · mask, in place.
    public func backward(_ dy: Tensor, training: Bool) {
        guard training && rate > 0 else { return }
        for i in 0..<dy.count { dy.data[i] *= mask[i] }
    }
}
