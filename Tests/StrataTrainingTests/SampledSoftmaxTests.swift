// The sampled softmax's candidates: the batch's items first, then drawn ones, never twice;
// the same draws for the same (seed, step) and others for another step; draws that follow the
// distribution; and each candidate's log-Q correction, recomputed here from the counts.
import Foundation
import StrataModels
import StrataStore
@_spi(Testing) import StrataTraining
import Testing

@Suite struct SampledSoftmaxTests {
    static func data() throws -> (interactions: Interactions, source: any BatchSource) {
        let data = try MovieLens.data(.nextItem, seed: 3)
        let training = try data.trainingData(protocol: .nextItem, labels: [], shuffleBlock: 0, seed: 3)
        return (try #require(training.interactions), training.train)
    }

    @Test func candidatesAreTheBatchsItemsThenDrawnOnes() throws {
        var (interactions, source) = try Self.data()
        let batch = Batch(schema: source.schema)
        let n = try source.next(256, into: batch)
        let item = try #require(source.schema.item.flatMap(source.schema.categoricalIndex))
        let sampler = try SampledCandidates(NegativeSampling(count: 100, distribution: .popularity(exponent: 1)),
                                            interactions: interactions, seed: 5)
        try sampler.prepare(batch, item: item, step: 7)
        let keys = sampler.keys, offsets = sampler.offsets
        #expect(Set(keys).count == keys.count, "a candidate twice")
        var rowItems: [UInt64] = []
        for r in 0..<n where !rowItems.contains(batch.keys(of: item).keys[r]) { rowItems.append(batch.keys(of: item).keys[r]) }
        #expect(Array(keys.prefix(rowItems.count)) == rowItems, "the batch's items come first, in order")
        #expect(keys.count > rowItems.count && keys.count <= rowItems.count + 100)

        // The correction: −log(rows × frequency + draws × probability), from the counts.
        let total = Double(interactions.popularity.reduce(0, +))
        for (k, key) in keys.enumerated() {
            let i = try #require(interactions.items.entity(id: key))
            let p = Double(interactions.popularity[i]) / total
            let expected = -Foundation.log(Double(n) * p + 100 * p)
            #expect(abs(Double(offsets[k]) - expected) <= 1e-6 * max(1, abs(expected)), "item \(key)")
        }

        // The same step draws the same; another step draws others.
        try sampler.prepare(batch, item: item, step: 7)
        #expect(sampler.keys == keys && sampler.offsets == offsets)
        try sampler.prepare(batch, item: item, step: 8)
        #expect(sampler.keys != keys)
        #expect(Array(sampler.keys.prefix(rowItems.count)) == rowItems)
    }

    /// Over many steps, uniform draws reach every part of the catalog alike and popularity
    /// draws favour popular items: the drawn share of the 100 most popular items is close to
    /// their share of the interactions.
    @Test func drawsFollowTheDistribution() throws {
        var (interactions, source) = try Self.data()
        let batch = Batch(schema: source.schema)
        _ = try source.next(1, into: batch)
        let item = try #require(source.schema.item.flatMap(source.schema.categoricalIndex))
        let own = batch.keys(of: item).keys[0]
        let top = Set(interactions.popularity.indices.sorted { interactions.popularity[$0] > interactions.popularity[$1] }.prefix(100)
            .map { interactions.items.ids[$0] })
        let share = Double(top.map { interactions.popularity[interactions.items.entity(id: $0)!] }.reduce(0, +))
            / Double(interactions.popularity.reduce(0, +))
        for (distribution, expected) in [(NegativeSampling.Distribution.popularity(exponent: 1), share),
                                         (.uniform, 100 / Double(interactions.items.count))] {
            let sampler = try SampledCandidates(NegativeSampling(count: 1, distribution: distribution), interactions: interactions, seed: 9)
            var hits = 0, draws = 0
            for step in 1...4000 {
                try sampler.prepare(batch, item: item, step: step)
                // A draw of the row's own item adds no candidate.
                guard sampler.keys.count == 2 else { continue }
                draws += 1
                if top.contains(sampler.keys[1]) { hits += 1 }
                #expect(sampler.keys[0] == own)
            }
            let seen = Double(hits) / Double(draws)
            // 4000 draws: the standard error of a share near 0.4 is under 0.008.
            #expect(abs(seen - expected) < 0.04, "\(distribution): \(seen) of draws in the top 100, expected \(expected)")
        }
    }

    /// Two-tower on the top-K protocol (no history: the user tower reads the id and the
    /// demographics) by the sampled softmax: full-ranking evaluation scores the catalog from one
    /// row a user, and 150 steps beat the untrained model's NDCG@10 twice over.
    @Test func twoTowerRanksTheCatalogOnTopK() throws {
        let c = ZooCase(model: "two-tower", protocol: .topk, settings: ["embedding_dim": 16, "tower": [32]], loss: .softmax,
                        negatives: 64, distribution: .popularity(exponent: 1))
        let run = try c.train(steps: 150, resources: TrainingResources(budget: TierBudget(hotBytes: 8 << 20, warmBytes: 0),
                                                                      lookahead: 2, threads: 2))
        let before = try #require(run.before), after = try #require(run.summary.evaluation)
        print("two-tower on topk: before \(before.text); after \(after.text)")
        #expect(after["ndcg@10"]! > 2 * before["ndcg@10"]! && after["ndcg@10"]! > 0.05, "\(before.text) → \(after.text)")
    }
}
