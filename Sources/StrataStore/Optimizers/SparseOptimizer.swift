// The per-row arithmetic of the in-store optimizers. Each function updates one row in place;
// the same function runs whatever tier the row came from, so results cannot depend on placement.
#if canImport(Glibc)
import Glibc
#endif

extension Optimizer {
    /// Sets a new row's optimizer state.
    public func initializeState(_ state: UnsafeMutablePointer<Float>, dimension: Int) {
        let count = stateCount(dimension: dimension)
        switch self {
        case .adagrad(_, _, let a), .rowwiseAdagrad(_, _, let a):
            state.update(repeating: a, count: count)
        case .sgd, .adam, .ftrl:
            state.update(repeating: 0, count: count)
        }
    }

    /// One optimizer step on one row. `step` counts this row's updates including this one,
    /// so it is 1 on the first. `gradient` is already summed over the batch's duplicates.
    @inline(__always)
    public func apply(values w: UnsafeMutablePointer<Float>, state: UnsafeMutablePointer<Float>,
               gradient g: UnsafePointer<Float>, dimension d: Int, step: UInt64, learningRate lr: Float) {
        switch self {
        case .sgd:
            for i in 0..<d { w[i] -= lr * g[i] }

        case .adagrad(_, let eps, _):
            for i in 0..<d {
                let a = state[i] + g[i] * g[i]
                state[i] = a
                w[i] -= lr * g[i] / (a.squareRoot() + eps)
            }

        case .rowwiseAdagrad(_, let eps, _):
            var sum: Float = 0
            for i in 0..<d { sum += g[i] * g[i] }
            let a = state[0] + sum / Float(d)
            state[0] = a
            let rate = lr / (a.squareRoot() + eps)
            for i in 0..<d { w[i] -= rate * g[i] }

        case .adam(_, let b1, let b2, let eps):
            let t = Float(step)
            let c1 = 1 - powf(b1, t)
            let c2 = 1 - powf(b2, t)
            let m = state, v = state + d
            for i in 0..<d {
                let mi = b1 * m[i] + (1 - b1) * g[i]
                let vi = b2 * v[i] + (1 - b2) * g[i] * g[i]
                m[i] = mi
                v[i] = vi
                w[i] -= lr * (mi / c1) / ((vi / c2).squareRoot() + eps)
            }

        case .ftrl(_, let beta, let l1, let l2):
            let z = state, n = state + d
            for i in 0..<d {
                let gi = g[i]
                let nOld = n[i]
                let nNew = nOld + gi * gi
                let sigma = (nNew.squareRoot() - nOld.squareRoot()) / lr
                // w = 0 is FTRL's usual state; skipping the product keeps a huge sigma from
                // making 0 × inf = NaN.
                let zi = z[i] + gi - (w[i] == 0 ? 0 : sigma * w[i])
                z[i] = zi
                n[i] = nNew
                if abs(zi) <= l1 {
                    w[i] = 0
                } else {
                    let sign: Float = zi < 0 ? -1 : 1
                    w[i] = -(zi - sign * l1) / ((beta + nNew.squareRoot()) / lr + l2)
                }
            }
        }
    }
}

extension Initializer {
    /// Writes the initial values of row `key` into `out` (before rounding to a storage type).
    public func fill(_ out: UnsafeMutablePointer<Float>, key: UInt64, dimension d: Int) {
        let base = mix64(seed ^ mix64(key &+ 0x632B_E59B_D9B4_E019))
        switch distribution {
        case .zeros:
            out.update(repeating: 0, count: d)
        case .constant(let c):
            out.update(repeating: c, count: d)
        case .uniform(let lo, let hi):
            // In Double, so a wide range cannot overflow; clamped, so rounding to Float cannot
            // reach `high`.
            let low = Double(lo), width = Double(hi) - Double(lo)
            let top = hi > lo ? hi.nextDown : hi
            for i in 0..<d {
                let u = Double(mix64(base &+ UInt64(i) &* 0x9E37_79B9_7F4A_7C15) >> 11) * 0x1p-53
                out[i] = min(Float(low + width * u), top)
            }
        case .normal(let mean, let sd):
            // Box-Muller over pairs, in Double so the tails are right.
            var i = 0
            while i < d {
                let h1 = mix64(base &+ UInt64(i) &* 0x9E37_79B9_7F4A_7C15)
                let h2 = mix64(h1 ^ 0xD6E8_FEB8_6659_FD93)
                let u1 = (Double(h1 >> 11) + 1) * 0x1p-53
                let u2 = Double(h2 >> 11) * 0x1p-53
                let r = (-2 * log(u1)).squareRoot()
                out[i] = Float(Double(mean) + Double(sd) * r * cos(2 * Double.pi * u2))
                if i + 1 < d { out[i + 1] = Float(Double(mean) + Double(sd) * r * sin(2 * Double.pi * u2)) }
                i += 2
            }
        }
    }
}

/// SplitMix64 (Steele, Lea and Flood 2014): a small, fast generator that gives the same
/// sequence for a seed everywhere. The store's initializers hash with its finalizer; data
/// generators, benchmarks and tests draw from it so their streams can be replayed.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return mix64(state)
    }

    /// The generator's output function on its own: a bijective mix of 64 bits, for hashing.
    @inline(__always)
    public static func mix(_ x: UInt64) -> UInt64 { mix64(x) }
}

/// SplitMix64's finalizer: a bijective mix of 64 bits.
@inline(__always)
func mix64(_ x: UInt64) -> UInt64 {
    var z = x
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}
