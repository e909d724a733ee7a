import Glibc
public import StrataStore

/// Zipf's law on the ranks 1...n: P(k) = k^-s / H(n, s).
///
/// Sampled by rejection-inversion (Hörmann and Derflinger, "Rejection-inversion to generate
/// variates from monotone discrete distributions", 1996), in the form Apache Commons RNG uses:
/// invert the integral of the hat function x^-s, round to the nearest rank, and accept with a
/// cheap test that almost always passes. Time and memory are O(1) whatever n is, so key
/// spaces of billions of ids need no table; a draw costs one log1p and one exp (plus, rarely,
/// a few more for the acceptance test).
public struct ZipfDistribution: Sendable, Hashable, Codable {
    /// n: ranks run from 1 to `count`.
    public let count: Int64
    /// s > 0. Criteo's categorical columns look like s between 1 and 1.2.
    public let exponent: Double

    private let hIntegralX1: Double
    private let hIntegralN: Double
    /// 1 / (1 - s), so the hot path multiplies instead of dividing (unused when s = 1).
    private let inverseOneMinusS: Double
    /// Ranks within this distance below the inverted point are accepted without the full test.
    private let squeeze: Double

    public init(count: Int64, exponent: Double) {
        precondition(count >= 1, "Zipf needs at least one rank")
        precondition(exponent > 0 && exponent.isFinite, "Zipf's exponent must be positive")
        self.count = count
        self.exponent = exponent
        inverseOneMinusS = exponent == 1 ? 0 : 1 / (1 - exponent)
        hIntegralX1 = Self.hIntegral(1.5, exponent) - 1
        hIntegralN = Self.hIntegral(Double(count) + 0.5, exponent)
        squeeze = 2 - Self.hIntegralInverse(Self.hIntegral(2.5, exponent) - Self.h(2, exponent), exponent)
    }

    /// A rank in 1...count, drawn with uniforms from `rng`.
    @inline(__always)
    public func sample(_ rng: inout SplitMix64) -> Int64 {
        while true {
            let uniform = Double(rng.next() >> 11) * 0x1p-53
            let u = hIntegralN + uniform * (hIntegralX1 - hIntegralN)
            // H⁻¹(u) = exp(log1p(u (1 - s)) / (1 - s)), its series where u (1 - s) is tiny.
            let t = max(u * (1 - exponent), -1)
            let x = abs(t) > 1e-8 ? exp(log1p(t) * inverseOneMinusS) : exp(u * (1 - t * (0.5 - t * (1.0 / 3 - 0.25 * t))))
            let rounded = x + 0.5
            let k: Int64 = rounded < 1 ? 1 : (rounded >= Double(count) ? count : Int64(rounded))
            let kd = Double(k)
            if kd - x <= squeeze || u >= Self.hIntegral(kd + 0.5, exponent) - Self.h(kd, exponent) {
                return k
            }
        }
    }

    /// H(n, s), the normalizer: exact for the first 4096 ranks, the Euler–Maclaurin midpoint
    /// integral for the rest (relative error far below 1e-9 there).
    public func normalizer() -> Double {
        let exact = min(count, 4096)
        var sum = 0.0
        for k in stride(from: exact, through: 1, by: -1) { sum += pow(Double(k), -exponent) }
        if count > exact {
            sum += Self.hIntegral(Double(count) + 0.5, exponent) - Self.hIntegral(Double(exact) + 0.5, exponent)
        }
        return sum
    }

    /// P(1), ..., P(min(ranks, count)).
    public func probabilities(ofFirst ranks: Int) -> [Double] {
        let h = normalizer()
        return (1...max(1, min(Int64(ranks), count))).map { pow(Double($0), -exponent) / h }
    }

    // The hat function h(x) = x^-s and its integral H(x) = (x^(1-s) - 1) / (1 - s), written
    // with log1p/expm1 helpers so that s = 1 (H = log x) needs no special case.

    @inline(__always)
    private static func h(_ x: Double, _ s: Double) -> Double { exp(-s * log(x)) }

    @inline(__always)
    private static func hIntegral(_ x: Double, _ s: Double) -> Double {
        let logX = log(x)
        return expm1OverX((1 - s) * logX) * logX
    }

    @inline(__always)
    private static func hIntegralInverse(_ x: Double, _ s: Double) -> Double {
        var t = x * (1 - s)
        if t < -1 { t = -1 }  // rounding can push it past the domain's edge
        return exp(log1pOverX(t) * x)
    }

    /// log(1 + x) / x, with its series near 0.
    @inline(__always)
    private static func log1pOverX(_ x: Double) -> Double {
        abs(x) > 1e-8 ? log1p(x) / x : 1 - x * (0.5 - x * (1.0 / 3 - 0.25 * x))
    }

    /// (e^x - 1) / x, with its series near 0.
    @inline(__always)
    private static func expm1OverX(_ x: Double) -> Double {
        abs(x) > 1e-8 ? expm1(x) / x : 1 + x * 0.5 * (1 + x / 3 * (1 + 0.25 * x))
    }
}
