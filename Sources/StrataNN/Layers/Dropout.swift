import StrataStore

/// Which values dropout keeps: value i is dropped when hash(seed, step, node, stream, i) falls
/// below `rate`. A counter, not a generator: a resumed run drops the same units with no state
/// saved, backward recomputes the mask instead of keeping it, and threads cannot change it.
/// Values are counted row by row over the whole batch (`Pass.firstRow`), so a process that
/// trains rows of it drops what one process training all of it would.
public struct DropoutMask {
    public let rate: Float
    private let key: UInt64
    private let threshold: UInt64
    private let keep: Float
    /// The whole batch's index of value 0.
    private let first: Int

    /// `stream` tells apart the masks one layer draws in one step (an MLP's hidden layers);
    /// `count` is the values of the tensor it masks, a row of the pass's rows after another.
    public init(rate: Float, pass: Pass, stream: UInt64, count: Int) {
        precondition(rate >= 0 && rate < 1)
        self.rate = rate
        var h = SplitMix64.mix(pass.seed ^ 0x4452_4F50_4F55_5431)  // "DROPOUT1"
        h = SplitMix64.mix(h ^ pass.step)
        h = SplitMix64.mix(h ^ UInt64(pass.node))
        key = SplitMix64.mix(h ^ stream)
        threshold = UInt64(Double(rate) * 0x1p64.nextDown)
        keep = 1 / (1 - rate)
        first = pass.firstRow == 0 || pass.rows == 0 ? 0 : pass.firstRow * (count / pass.rows)
    }

    @inline(__always)
    public func kept(_ i: Int) -> Bool { SplitMix64.mix(key &+ UInt64(first + i) &* 0x9E37_79B9_7F4A_7C15) >= threshold }

    /// y = x · mask / (1 − rate) over `count` values (in place is fine). The same call is the
    /// backward: dx = dy · mask / (1 − rate).
    public func apply(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { y[i] = kept(i) ? x[i] * keep : 0 }
    }
}

/// Zeroes each value with probability `rate` in training and scales the rest by
/// 1 / (1 - rate) (`DropoutMask`); the identity in inference.
public final class Dropout: Layer {
    public let rate: Float

    public init(rate: Float) {
        precondition(rate >= 0 && rate < 1)
        self.rate = rate
    }

    public func outputColumns(for inputColumns: [Int]) -> Int? { inputColumns.count == 1 ? inputColumns[0] : nil }

    public func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass) {
        let x = inputs[0]
        if pass.training && rate > 0 {
            DropoutMask(rate: rate, pass: pass, stream: 0, count: x.count).apply(x.data, output.data, count: x.count)
        } else {
            output.data.update(from: x.data, count: x.count)
        }
    }

    public func backward(_ inputs: [Tensor], output: Tensor, outputGradient dy: Tensor, inputGradients: [Tensor?], _ pass: Pass) {
        guard let dx = inputGradients[0] else { return }
        if pass.training && rate > 0 {
            DropoutMask(rate: rate, pass: pass, stream: 0, count: dy.count).apply(dy.data, dx.data, count: dy.count)
        } else {
            dx.data.update(from: dy.data, count: dy.count)
        }
    }
}
