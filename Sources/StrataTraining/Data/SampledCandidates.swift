// Items drawn from the catalog, for negative sampling and for the sampled softmax.
//
// The sampled softmax (Jean et al. 2015; with the log-Q correction of Yi et al. 2019) scores a
// step's rows against a few candidates instead of the whole catalog: the batch's own items
// (each row's item is a negative of every other row: in-batch negatives) and `count` items
// drawn for the whole batch. A popular item is a candidate more often than a rare one, so its
// logit is lowered by the log of how often it is expected among the candidates; without that,
// the model learns to push popular items down. Draws come from a counter (seed, step, slot),
// so a resumed run draws the same candidates with no state saved.
import Foundation
public import StrataModels
import StrataStore

/// A distribution over the catalog's items: uniform, or by training popularity^exponent
/// (Walker's alias table). Immutable.
struct ItemDistribution: Sendable {
    let count: Int
    /// Each item's probability.
    let probabilities: [Double]
    /// Popularity sampling: the alias table; empty for uniform.
    private let alias: [(threshold: UInt32, alias: Int32)]

    init(_ distribution: NegativeSampling.Distribution, popularity: [Int64]) throws {
        count = popularity.count
        switch distribution {
        case .uniform:
            alias = []
            probabilities = [Double](repeating: 1 / Double(max(count, 1)), count: count)
        case .popularity(let exponent):
            guard exponent.isFinite && exponent >= 0 else { throw TrainingError.mismatch("the popularity exponent must be finite and >= 0") }
            let weights = popularity.map { pow(Double($0), exponent) }
            let total = weights.reduce(0, +)
            guard total > 0 else { throw TrainingError.mismatch("popularity sampling: no item has a training interaction") }
            probabilities = weights.map { $0 / total }
            alias = Self.aliasTable(probabilities)
        }
    }

    /// The item 64 random bits pick.
    func pick(_ bits: UInt64) -> Int {
        let column = Int((bits >> 32).multipliedFullWidth(by: UInt64(count)).low >> 32)
        guard !alias.isEmpty else { return Int(bits.multipliedFullWidth(by: UInt64(count)).high) }
        let entry = alias[column]
        return UInt32(truncatingIfNeeded: bits) < entry.threshold ? column : Int(entry.alias)
    }

    /// Vose's alias table for `probabilities` (summing to 1): column i is kept when the low
    /// 32 random bits are below its threshold, else its alias is taken.
    static func aliasTable(_ probabilities: [Double]) -> [(threshold: UInt32, alias: Int32)] {
        let n = probabilities.count
        var scaled = probabilities.map { $0 * Double(n) }
        var entries = (0..<n).map { (threshold: UInt32.max, alias: Int32($0)) }
        var small = (0..<n).filter { scaled[$0] < 1 }, large = (0..<n).filter { scaled[$0] >= 1 }
        while let l = small.popLast() {
            guard let g = large.popLast() else { break }
            entries[l] = (UInt32(min(scaled[l] * 0x1p32, 0xFFFF_FFFF)), Int32(g))
            scaled[g] += scaled[l] - 1
            if scaled[g] < 1 { small.append(g) } else { large.append(g) }
        }
        return entries
    }
}

/// A step's candidates for the sampled softmax, with each one's log-Q correction.
@_spi(Testing) public final class SampledCandidates {
    public let options: NegativeSampling
    private let items: SideCatalog
    private let distribution: ItemDistribution
    /// Each item's share of the training interactions: how likely a batch row's item it is.
    private let frequency: [Double]
    private let key: UInt64
    /// The call of `prepare` that last made item i a candidate (no set built per step).
    private var marked: [Int]
    private var calls = 0
    public private(set) var keys: [UInt64] = []
    public private(set) var offsets: [Float] = []
    private var chosen: [Int] = []

    public init(_ options: NegativeSampling, interactions: Interactions, seed: UInt64) throws {
        guard options.count >= 1 else { throw TrainingError.mismatch("the sampled softmax draws at least one item a step") }
        self.options = options
        items = interactions.items
        distribution = try ItemDistribution(options.distribution, popularity: interactions.popularity)
        let total = Double(max(interactions.popularity.reduce(0, +), 1))
        frequency = interactions.popularity.map { Double($0) / total }
        key = SplitMix64.mix(seed ^ 0x534D_5353_4F46_544D)  // "SMSSOFTM"
        marked = [Int](repeating: -1, count: items.count)
    }

    /// Sets `keys` and `offsets` for `step`: the items of `batch`'s rows (feature `item`) in
    /// order of first appearance, then the drawn items not among them; each offset is
    /// −log(expected times the item is a candidate: rows × its frequency + draws × its
    /// probability). Throws naming a row whose item the catalog does not have.
    public func prepare(_ batch: Batch, item feature: Int, step: Int) throws {
        keys.removeAll(keepingCapacity: true)
        offsets.removeAll(keepingCapacity: true)
        chosen.removeAll(keepingCapacity: true)
        calls += 1
        let rowKeys = batch.keys(of: feature)
        for r in 0..<batch.count {
            guard let i = items.entity(id: rowKeys.keys[r]) else {
                throw TrainingError.mismatch("sample \(r) of step \(step) has item key \(rowKeys.keys[r]), which the training data's catalog does not have")
            }
            take(i)
        }
        let h = SplitMix64.mix(key ^ UInt64(bitPattern: Int64(step)))
        for slot in 0..<options.count { take(distribution.pick(SplitMix64.mix(h &+ UInt64(slot) &* 0x9E37_79B9_7F4A_7C15))) }
        let rows = Double(batch.count), draws = Double(options.count)
        for i in chosen {
            keys.append(items.ids[i])
            offsets.append(Float(-log(rows * frequency[i] + draws * distribution.probabilities[i])))
        }
    }

    private func take(_ i: Int) {
        guard marked[i] != calls else { return }
        marked[i] = calls
        chosen.append(i)
    }
}
