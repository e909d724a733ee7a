import StrataStore
#if canImport(Glibc)
import Glibc
#endif

/// Seconds on the monotonic clock.
func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// The value at quantile `q` (0...1) of a sample, by nearest rank.
func quantile(_ sorted: [Double], _ q: Double) -> Double {
    guard !sorted.isEmpty else { return .nan }
    let rank = Int((q * Double(sorted.count)).rounded(.up)) - 1
    return sorted[min(max(rank, 0), sorted.count - 1)]
}

func median(_ values: [Double]) -> Double { quantile(values.sorted(), 0.5) }

/// Ranks 0..<n drawn with probability proportional to 1/(rank+1)^s, by inverting the CDF.
struct Zipf {
    let exponent: Double
    private let cdf: [Double]

    init(count n: Int, exponent s: Double) {
        exponent = s
        var c = [Double](repeating: 0, count: n)
        var total = 0.0
        for i in 0..<n {
            total += 1 / pow(Double(i + 1), s)
            c[i] = total
        }
        for i in 0..<n { c[i] /= total }
        cdf = c
    }

    mutating func draw(_ rng: inout SplitMix64) -> Int {
        let u = Double(rng.next() >> 11) * 0x1p-53
        var lo = 0, hi = cdf.count - 1
        while lo < hi {
            let mid = (lo + hi) / 2
            if cdf[mid] < u { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// The probability mass of the `k` most likely ranks: the hit ratio of the best static
    /// cache of `k` rows under independent draws.
    func topMass(_ k: Int) -> Double { k <= 0 ? 0 : cdf[min(k, cdf.count) - 1] }
}

/// A fixed scramble of row numbers into keys, so keys look like hashed ids.
func scrambledKey(_ i: Int) -> UInt64 {
    var rng = SplitMix64(seed: UInt64(i) ^ 0x5EED_0F_4B1D)
    return rng.next()
}
