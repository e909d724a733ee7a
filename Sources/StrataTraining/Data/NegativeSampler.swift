// Negative sampling inside the data pipeline. For every sample, `count` items are drawn by a
// counter (seed, epoch, sample, slot, attempt), not a generator: the draw depends only on the
// sample's place in the data, so the look-ahead warms the negatives with the batch and a
// resumed run draws the same ones with no state saved.
import Foundation
public import StrataModels
import StrataStore

public final class NegativeSampler: Sendable {
    public let options: NegativeSampling
    private let interactions: Interactions
    private let composer: RowComposer
    private let key: UInt64
    /// The binary label column whose 0s are not interactions (their lines get no group), or nil.
    private let positivesBy: Int?
    private let distribution: ItemDistribution
    /// Redraws of an item the user has seen before one is taken anyway (a user who has seen
    /// almost every item must not stall the pipeline).
    static let attempts = 32

    /// `positivesBy` is a binary label column: lines labelled 0 there are left out. `schema` is
    /// the samples' (nil: the data's), which may add features no catalog holds, such as a
    /// history: a negative copies them from its positive when they are of the user's side.
    public init(_ options: NegativeSampling, interactions: Interactions, seed: UInt64, positivesBy: Int? = nil,
                schema: FeatureSchema? = nil) throws {
        guard interactions.items.count >= 2 else {
            throw TrainingError.mismatch("negative sampling needs at least two items; the data has \(interactions.items.count)")
        }
        self.options = options
        self.interactions = interactions
        self.positivesBy = positivesBy
        composer = RowComposer(schema: schema ?? interactions.schema, users: interactions.users, items: interactions.items)
        key = SplitMix64.mix(seed ^ 0x4E45_4741_5449_5645)  // "NEGATIVE"
        distribution = try ItemDistribution(options.distribution, popularity: interactions.popularity)
    }

    /// Writes `raw`'s rows into `out`, each followed by its negatives: the same user and
    /// context, a drawn item with its features. Every row is an interaction, a positive of
    /// implicit feedback (but rows whose `positivesBy` label is 0, which are left out); the
    /// loss takes its targets from the groups, so the labels are copied as they are.
    /// `position` is the source's position before `raw` was read: row r is sample
    /// `position.sample + r` of epoch `position.epoch`.
    @_spi(Testing) public func expand(_ raw: Batch, startingAt position: SourcePosition, into out: Batch) {
        let k = options.count, n = raw.count
        out.begin(capacity: n * (1 + k), groupSize: 1 + k)
        let userFeature = interactions.users.idFeature, itemFeature = interactions.items.idFeature
        var o = 0
        for r in 0..<n {
            if let l = positivesBy, raw.labels[r * raw.labelColumns + l] < 0.5 { continue }
            composer.write(out, row: o, user: .row(raw, r), item: .row(raw, r), context: .row(raw, r),
                           labels: raw.labels + r * raw.labelColumns)
            o += 1
            let seen = interactions.users.entity(id: raw.keys(of: userFeature, row: r)[0])
                .map { interactions.train[$0] } ?? []
            let positive = interactions.items.entity(id: raw.keys(of: itemFeature, row: r)[0])
            let sample = UInt64(bitPattern: position.sample) &+ UInt64(r)
            for slot in 0..<k {
                let item = draw(epoch: position.epoch, sample: sample, slot: slot, avoiding: seen, positive: positive)
                composer.write(out, row: o, user: .row(raw, r), item: .entity(interactions.items, item),
                               context: .row(raw, r), labels: nil)
                o += 1
            }
        }
        out.end(written: o)
    }

    /// The negative of (epoch, sample, slot): the first draw that is neither the positive nor,
    /// with `excludeSeen`, a training item of the user; after `attempts` draws, the last.
    @_spi(Testing) public func draw(epoch: Int, sample: UInt64, slot: Int, avoiding seen: [Int32], positive: Int?) -> Int {
        var h = SplitMix64.mix(key ^ UInt64(bitPattern: Int64(epoch)))
        h = SplitMix64.mix(h ^ sample)
        h = SplitMix64.mix(h ^ UInt64(slot))
        var item = 0
        for attempt in 0..<Self.attempts {
            let bits = SplitMix64.mix(h &+ UInt64(attempt) &* 0x9E37_79B9_7F4A_7C15)
            item = distribution.pick(bits)
            if item == positive { continue }
            if options.excludeSeen && seen.sortedContains(Int32(item)) { continue }
            break
        }
        return item
    }
}
