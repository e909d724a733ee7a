// The evaluation protocols against RecBole 1.2.1's definitions: the ranking metrics and the
// top-K selection, the per-user split counts, the splits of MovieLens-100K under each
// protocol, full ranking's exclusion of seen items, negative sampling, and the pointwise
// metrics' ties.
import Foundation
import StrataModels
import StrataStore
import StrataTestSupport
@_spi(Testing) import StrataTraining
import Testing

/// One line of the interactions as a sample: its user's and item's id keys and its label.
private struct Line: Hashable, Comparable {
    var user: UInt64
    var item: UInt64
    var label: Float

    static func < (a: Line, b: Line) -> Bool { (a.user, a.item, a.label) < (b.user, b.item, b.label) }
    var pair: Pair { Pair(user: user, item: item) }
}

private struct Pair: Hashable {
    var user: UInt64
    var item: UInt64
}

/// Every sample of one epoch of `source`, in the order it hands them out.
private func readLines(_ source: inout LineFile) throws -> [Line] {
    let schema = source.schema
    let u = schema.categoricalIndex(schema.user!)!, i = schema.categoricalIndex(schema.item!)!
    let batch = Batch(schema: schema)
    var out: [Line] = []
    while try source.next(4096, into: batch) > 0 {
        let users = batch.keys(of: u).keys, items = batch.keys(of: i).keys
        for r in 0..<batch.count { out.append(Line(user: users[r], item: items[r], label: batch.labels[r * batch.labelColumns])) }
    }
    return out
}

private func readLines(_ data: TabularData, _ split: Interactions.Split, seed: UInt64 = 5) throws -> [Line] {
    var source = try data.source(split, shuffleBlock: 4096, seed: seed)
    return try readLines(&source)
}

/// RecBole's per-user counts for ratios [0.8, 0.1, 0.1], as the table states them.
private func recBoleCounts3(_ n: Int) -> [Int] {
    switch n {
    case 1: [1, 0, 0]
    case 2: [1, 0, 1]
    case 3..<10: [n - 2, 1, 1]
    default: [n - 2 * (n / 10), n / 10, n / 10]
    }
}

/// RecBole's counts for [0.8, 0.2]: the second part ⌊0.2n⌋, moved up to 1 where 0 < 0.2n < 1
/// while the first keeps more than one.
private func recBoleCounts2(_ n: Int) -> [Int] {
    if n == 1 { return [1, 0] }
    if n < 5 { return [n - 1, 1] }
    return [n - n / 5, n / 5]
}

/// The indices of the k best scores by a plain sort: -infinity left out, NaN below every
/// number, ties to the lower index.
private func referenceTop(_ k: Int, _ scores: [Float]) -> [Int32] {
    let candidates = scores.indices.filter { scores[$0] != -.infinity }
    let sorted = candidates.sorted { a, b in
        let x = scores[a], y = scores[b]
        if x.isNaN != y.isNaN { return y.isNaN }
        if !x.isNaN && x != y { return x > y }
        return a < b
    }
    return sorted.prefix(k).map(Int32.init)
}

/// 1 / log₂(rank + 1), the gain of a hit at 1-based `rank`.
private func gain(_ rank: Int) -> Double { 1 / log2(Double(rank + 1)) }

private func close(_ a: Double, _ b: Double, _ tolerance: Double = 1e-12) -> Bool { abs(a - b) <= tolerance }

@Suite struct EvaluationProtocolTests {
    // MARK: 1. Ranking metrics by hand

    @Test func rankingMetricsByHand() {
        // User A: relevant {5, 7}, K = 10, hits at ranks 1 and 3.
        //   DCG = 1/log2(2) + 1/log2(4) = 1 + 0.5 = 1.5
        //   IDCG = 1/log2(2) + 1/log2(3) = 1 + 0.63093 = 1.63093   (min(|R|, K) = 2 positions)
        //   NDCG = 1.5 / 1.63093 = 0.91972; recall 2/2 = 1; precision 2/10; hit 1; MRR 1/1.
        var a = RankingMetrics(k: 10)
        a.add(ranked: [5, 1, 7, 2, 3, 4, 6, 8, 9, 10] as [Int32], relevant: [5, 7])
        #expect(a.users == 1)
        #expect(close(a.ndcgAtK, (1 + 1 / log2(4.0)) / (1 + 1 / log2(3.0))))
        #expect(close(a.ndcgAtK, 0.919720, 1e-6))
        #expect(a.recallAtK == 1 && close(a.precisionAtK, 0.2) && a.hitAtK == 1 && a.mrrAtK == 1)

        // User B: fewer relevant than K. Relevant {3}, K = 5, hit at rank 3.
        //   DCG = 1/log2(4) = 0.5; IDCG = 1/log2(2) = 1 (one position); NDCG = 0.5.
        //   recall 1/1; precision 1/5; hit 1; MRR 1/3.
        var b = RankingMetrics(k: 5)
        b.add(ranked: [9, 8, 3, 1, 2] as [Int32], relevant: [3])
        #expect(close(b.ndcgAtK, 0.5) && b.recallAtK == 1 && close(b.precisionAtK, 0.2) && b.hitAtK == 1)
        #expect(close(b.mrrAtK, 1.0 / 3))

        // User C: more relevant than K. Relevant {1, ..., 20}, K = 5, hits at ranks 1, 3, 5.
        //   recall = 3 / 20 = 0.15 (the denominator is all 20, not K);
        //   precision = 3/5; MRR = 1;
        //   NDCG = (1/log2 2 + 1/log2 4 + 1/log2 6) / (1/log2 2 + 1/log2 3 + 1/log2 4 + 1/log2 5 + 1/log2 6)
        //        = (1 + 0.5 + 0.38685) / (1 + 0.63093 + 0.5 + 0.43068 + 0.38685) = 1.88685 / 2.94846 = 0.63994.
        var c = RankingMetrics(k: 5)
        c.add(ranked: [1, 30, 2, 31, 3] as [Int32], relevant: Array(1...20))
        #expect(close(c.recallAtK, 0.15) && close(c.precisionAtK, 0.6) && c.mrrAtK == 1 && c.hitAtK == 1)
        let cNDCG = (gain(1) + gain(3) + gain(5)) / (1...5).map(gain).reduce(0, +)
        #expect(close(c.ndcgAtK, cNDCG))
        #expect(close(c.ndcgAtK, 0.63994, 1e-5))

        // User D: no hit. Every metric is 0.
        var d = RankingMetrics(k: 3)
        d.add(ranked: [4, 5, 6] as [Int32], relevant: [1, 2])
        #expect(d.users == 1)
        #expect(d.recallAtK == 0 && d.precisionAtK == 0 && d.hitAtK == 0 && d.mrrAtK == 0 && d.ndcgAtK == 0)

        // A hit beyond K does not count: relevant {2}, K = 2, the item at rank 3.
        var beyond = RankingMetrics(k: 2)
        beyond.add(ranked: [7, 8, 2] as [Int32], relevant: [2])
        #expect(beyond.hitAtK == 0 && beyond.recallAtK == 0 && beyond.mrrAtK == 0)

        // Fewer candidates than K: relevant {2}, K = 10, ranked [2] only. Precision still divides
        // by K (1/10); NDCG = 1/1.
        var short = RankingMetrics(k: 10)
        short.add(ranked: [2] as [Int32], relevant: [2])
        #expect(close(short.precisionAtK, 0.1) && short.ndcgAtK == 1 && short.recallAtK == 1)
    }

    @Test func rankingMetricsAverageOverUsersWithRelevantItems() {
        // Users A (K = 10 case above, but at K = 5: hits at ranks 1 and 3 still), B, D at K = 5,
        // and one user without relevant items, who is not counted.
        //   A: recall 1,   precision 2/5, hit 1, MRR 1,   NDCG (1 + 0.5)/(1 + 0.63093)
        //   B: recall 1,   precision 1/5, hit 1, MRR 1/3, NDCG 0.5
        //   D: recall 0,   precision 0,   hit 0, MRR 0,   NDCG 0
        //   means over 3 users: recall 2/3, precision (0.4 + 0.2)/3 = 0.2, hit 2/3,
        //   MRR (1 + 1/3)/3 = 4/9, NDCG (0.91972 + 0.5)/3 = 0.47324.
        var m = RankingMetrics(k: 5)
        #expect(m.users == 0 && m.recallAtK.isNaN && m.ndcgAtK.isNaN)
        m.add(ranked: [5, 1, 7, 2, 3] as [Int32], relevant: [5, 7])
        m.add(ranked: [9, 8, 3, 1, 2] as [Int32], relevant: [3])
        m.add(ranked: [1, 2, 3] as [Int32], relevant: [])  // no relevant item: not a user of the mean
        m.add(ranked: [4, 5, 6, 8, 9] as [Int32], relevant: [1, 2])
        #expect(m.users == 3)
        let ndcgA = (gain(1) + gain(3)) / (gain(1) + gain(2))
        #expect(close(m.recallAtK, 2.0 / 3))
        #expect(close(m.precisionAtK, 0.2))
        #expect(close(m.hitAtK, 2.0 / 3))
        #expect(close(m.mrrAtK, 4.0 / 9))
        #expect(close(m.ndcgAtK, (ndcgA + 0.5) / 3))
        #expect(close(m.ndcgAtK, 0.47324, 1e-5))
        #expect(m.metrics.map(\.name) == ["recall@5", "ndcg@5", "hit@5", "mrr@5", "precision@5"])
        #expect(m.metrics.map(\.value) == [m.recallAtK, m.ndcgAtK, m.hitAtK, m.mrrAtK, m.precisionAtK])
    }

    // MARK: 2. top(k, of:)

    private func top(_ k: Int, _ scores: [Float]) -> [Int32] {
        scores.withUnsafeBufferPointer { RankingMetrics.top(k, of: $0) }
    }

    @Test func topBreaksTiesByLowerIndexAndSkipsMinusInfinity() {
        // Ties go to the lower index.
        #expect(top(2, [1, 3, 3, 2, 3]) == [1, 2])
        #expect(top(3, [1, 3, 3, 2, 3]) == [1, 2, 4])
        #expect(top(5, [1, 3, 3, 2, 3]) == [1, 2, 4, 3, 0])
        #expect(top(3, [0, 0, 0, 0, 0, 0]) == [0, 1, 2])
        #expect(top(4, [-0.0, 0.0, -0.0, 0.0]) == [0, 1, 2, 3])  // -0 == 0: a tie
        // k larger than the count: every candidate, best first.
        #expect(top(5, [2, 1]) == [0, 1])
        #expect(top(10, []) == [])
        // -infinity is never taken, even when fewer than k candidates remain.
        #expect(top(3, [-.infinity, 5, -.infinity, 1]) == [1, 3])
        #expect(top(2, [-.infinity, -.infinity]) == [])
        #expect(top(4, [-.infinity, -Float.greatestFiniteMagnitude, -.infinity]) == [1])
        // NaN ranks below every number (but is still a candidate, unlike -infinity); NaNs tie.
        #expect(top(10, [.nan, 1, .nan, -5, -.infinity]) == [1, 3, 0, 2])
        #expect(top(1, [.nan, -1e30]) == [1])
        #expect(top(2, [.nan, .infinity, .nan]) == [1, 0])
    }

    @Test func topMatchesASortWithTies() {
        var rng = SplitMix64(seed: 0x70B)
        for trial in 0..<300 {
            let n = Int(rng.next() % 60)
            let scores: [Float] = (0..<n).map { _ in
                switch rng.next() % 10 {
                case 0: -.infinity
                case 1: .nan
                case 2: .infinity
                default: Float(Int(rng.next() % 7) - 3)
                }
            }
            for k in [1, 2, 5, 10, n, n + 3] where k >= 1 {
                #expect(top(k, scores) == referenceTop(k, scores), "trial \(trial), k \(k), scores \(scores)")
            }
        }
    }

    /// "NaN ranks below everything": also below the lowest finite Float. `top` maps NaN to
    /// -greatestFiniteMagnitude, so a NaN at a lower index ties with, and beats, that score.
    @Test func nanRanksBelowTheLowestFiniteScore() {
        #expect(top(1, [.nan, -Float.greatestFiniteMagnitude]) == [1])
        #expect(top(2, [.nan, -Float.greatestFiniteMagnitude]) == [1, 0])
    }

    // MARK: 3. Split counts

    @Test func splitCountsFollowRecBole() {
        for n in 1...40 {
            #expect(TabularData.splitCounts(n, [0.8, 0.1, 0.1]) == recBoleCounts3(n), "n = \(n)")
            #expect(TabularData.splitCounts(n, [0.8, 0.2]) == recBoleCounts2(n), "n = \(n)")
            // Unnormalised ratios mean the same.
            #expect(TabularData.splitCounts(n, [8, 1, 1]) == recBoleCounts3(n), "n = \(n)")
        }
        // The table's examples.
        #expect(TabularData.splitCounts(1, [0.8, 0.1, 0.1]) == [1, 0, 0])
        #expect(TabularData.splitCounts(2, [0.8, 0.1, 0.1]) == [1, 0, 1])
        #expect(TabularData.splitCounts(9, [0.8, 0.1, 0.1]) == [7, 1, 1])
        #expect(TabularData.splitCounts(20, [0.8, 0.1, 0.1]) == [16, 2, 2])
        #expect(TabularData.splitCounts(29, [0.8, 0.1, 0.1]) == [25, 2, 2])
        #expect(TabularData.splitCounts(100_000, [0.8, 0.2]) == [80_000, 20_000])
        #expect(TabularData.splitCounts(100_000, [0.8, 0.1, 0.1]) == [80_000, 10_000, 10_000])
    }

    @Test func perUserAssignmentFollowsSplitCounts() throws {
        // Users 0..39 with 1...40 rows, interleaved.
        var users: [Int32] = []
        for round in 0..<40 { for u in 0..<40 where round <= u { users.append(Int32(u)) } }
        let splitting = TabularData.Splitting.perUser([0.8, 0.1, 0.1])
        let a = try TabularData.assign(count: users.count, users: users, splitting: splitting, seed: 9, file: "test")
        var counts = [[Int]](repeating: [0, 0, 0], count: 40)
        for (r, u) in users.enumerated() { counts[Int(u)][Int(a[r])] += 1 }
        for u in 0..<40 { #expect(counts[u] == recBoleCounts3(u + 1), "user \(u)") }
        // Reproducible, and another seed another assignment.
        #expect(try TabularData.assign(count: users.count, users: users, splitting: splitting, seed: 9, file: "test") == a)
        #expect(try TabularData.assign(count: users.count, users: users, splitting: splitting, seed: 10, file: "test") != a)
        // A user's rows are cut the same whoever else is in the data.
        let only = users.indices.filter { users[$0] == 30 }
        let alone = try TabularData.assign(count: only.count, users: only.map { users[$0] }, splitting: splitting, seed: 9, file: "test")
        #expect(alone == only.map { a[$0] })
    }

    // MARK: 4. MovieLens-100K splits

    @Test(arguments: [EvaluationProtocol.ratings, .click, .topk])
    func movieLensSplitsAreDisjointAndCoverEveryLine(_ p: EvaluationProtocol) throws {
        let all = try readLines(try MovieLens.data(.none), .train)
        let allPairs = Set(all.map(\.pair))
        try #require(all.count == 100_000 && allPairs.count == 100_000, "MovieLens-100K has 100,000 distinct (user, item) lines")
        let ratingOf = Dictionary(uniqueKeysWithValues: all.map { ($0.pair, $0.label) })

        let data = try MovieLens.data(p, seed: 1)
        #expect(data.counts.reduce(0, +) == 100_000)
        let splits = try Interactions.Split.allCases.map { try readLines(data, $0) }
        #expect(splits.map(\.count) == data.counts)
        let sets = splits.map { Set($0.map(\.pair)) }
        #expect(sets.map(\.count) == data.counts, "no line twice in a split")
        #expect(sets[0].isDisjoint(with: sets[1]) && sets[0].isDisjoint(with: sets[2]) && sets[1].isDisjoint(with: sets[2]))
        #expect(sets[0].union(sets[1]).union(sets[2]) == allPairs)

        // Labels: the rating, or for clicks rating >= 4.
        for line in splits.joined() {
            let rating = ratingOf[line.pair]!
            let expected: Float = p == .click ? (rating >= 4 ? 1 : 0) : rating
            if line.label != expected { Issue.record("\(line): label \(line.label), expected \(expected)"); break }
        }

        let interactions = try #require(data.interactions)
        // The interactions hold the same per-user items.
        for (s, lines) in splits.enumerated() {
            var byUser: [Int: Set<Int32>] = [:]
            for l in lines {
                byUser[interactions.users.entity(id: l.user)!, default: []].insert(Int32(interactions.items.entity(id: l.item)!))
            }
            for u in 0..<interactions.users.count {
                let items = interactions.items(of: u, in: Interactions.Split(rawValue: s)!)
                if items != (byUser[u] ?? []).sorted() { Issue.record("user \(u) split \(s): interactions differ from the lines"); break }
            }
        }
        switch p {
        case .ratings:
            #expect(data.counts == [80_000, 0, 20_000])
        case .click:
            #expect(data.counts == [80_000, 10_000, 10_000])
        default:
            // Per user, the counts of splitCounts of the user's lines.
            var perUser: [UInt64: [Int]] = [:]
            for (s, lines) in splits.enumerated() { for l in lines { perUser[l.user, default: [0, 0, 0]][s] += 1 } }
            #expect(perUser.count == 943)
            var expectedTotals = [0, 0, 0]
            for (user, c) in perUser {
                let n = c.reduce(0, +)
                #expect(c == TabularData.splitCounts(n, [0.8, 0.1, 0.1]), "user key \(user): \(c) of \(n)")
                #expect(c == recBoleCounts3(n))
                for s in 0..<3 { expectedTotals[s] += c[s] }
            }
            #expect(data.counts == expectedTotals)
        }

        // The same seed, the same assignment (the lines of each split, as the per-user items
        // the scan records); another seed, another.
        let heldOut = p == .ratings ? Interactions.Split.test : .valid
        let again = try #require(try MovieLens.data(p, seed: 1).interactions)
        #expect(again.train == interactions.train && again.valid == interactions.valid && again.test == interactions.test)
        let other = try #require(try MovieLens.data(p, seed: 2).interactions)
        #expect(other.train != interactions.train)
        // Independent draws of the held-out lines overlap by about the split's share (10 or 20%).
        var shared = 0, held = 0
        for u in 0..<interactions.users.count {
            let mine = Set(interactions.items(of: u, in: heldOut))
            let theirs = other.items(of: u, in: heldOut)
            held += theirs.count
            shared += theirs.filter(mine.contains).count
        }
        #expect(held == data.counts[heldOut.rawValue])
        #expect(Double(shared) / Double(held) < 0.5, "overlap \(shared) of \(held)")

        // Reading a split twice gives the same samples: a second epoch of one source holds the
        // same lines, and a second source with the same seed (the one read above) the same
        // lines in the same order.
        var source = try data.source(heldOut, shuffleBlock: 4096, seed: 5)
        let first = try readLines(&source), second = try readLines(&source)
        #expect(first.count == data.counts[heldOut.rawValue])
        #expect(first == splits[heldOut.rawValue])
        #expect(first.sorted() == second.sorted())
    }

    // MARK: 5. Full ranking leaves out seen items

    @Test func rankingExcludesSeenItems() throws {
        let data = try MovieLens.data(.topk, seed: 1)
        let interactions = try #require(data.interactions)
        // Per user entity, the item entities of each split, from the lines themselves.
        var items = [[Set<Int32>]](repeating: [[], [], []], count: interactions.users.count)
        for split in Interactions.Split.allCases {
            for l in try readLines(data, split) {
                items[interactions.users.entity(id: l.user)!][split.rawValue].insert(Int32(interactions.items.entity(id: l.item)!))
            }
        }
        let valid = RankingEvaluator(interactions, split: .valid), test = RankingEvaluator(interactions, split: .test)
        let n = interactions.items.count
        var rng = SplitMix64(seed: 55)
        for u in 0..<interactions.users.count {
            let train = items[u][0], validItems = items[u][1], testItems = items[u][2]
            #expect(valid.excluded(u) == train.subtracting(validItems).sorted(), "user \(u)")
            #expect(valid.excluded(u) == train.sorted())
            #expect(test.excluded(u) == train.union(validItems).subtracting(testItems).sorted(), "user \(u)")
            guard u % 97 == 0 else { continue }
            // A scorer that puts every excluded item first: once the evaluator sets them to
            // -infinity, none is recommended, even when asking for every item.
            for (evaluator, positives) in [(valid, validItems), (test, testItems)] {
                let excluded = evaluator.excluded(u)
                var scores = (0..<n).map { _ in Float(rng.next() % 1000) / 1000 }
                for i in excluded { scores[Int(i)] = 100 + Float(i) }
                for i in excluded { scores[Int(i)] = -.infinity }
                let best = top(10, scores)
                #expect(best.count == 10 && Set(best).isDisjoint(with: excluded))
                #expect(best == referenceTop(10, scores))
                let everything = top(n, scores)
                #expect(everything.count == n - excluded.count)
                #expect(Set(everything).isDisjoint(with: excluded) && positives.isSubset(of: Set(everything)))
            }
        }
    }

    @Test func rankingEvaluatorEndToEnd() throws {
        let zoo = ZooCase.all[0]
        try #require(zoo.model == "mf" && zoo.protocol == .topk)
        let data = try MovieLens.data(.topk, seed: 3)
        let interactions = try #require(data.interactions)
        let options = try zoo.options(data.schema, steps: 40)
        let directory = temporaryDirectory("strata-ranking")
        defer { removeDirectory(directory) }
        let resources = TrainingResources(budget: TierBudget(hotBytes: 8 << 20, warmBytes: 0), lookahead: 0, threads: 1)
        let store = try Store(path: directory, options: .small(resources.budget))
        defer { try? store.close() }
        let training = try data.trainingData(protocol: .topk, labels: [], topK: 10, shuffleBlock: 4096, seed: options.seed)
        let trainer = try Trainer(store: store, options: options, resources: resources, data: training, resume: false)
        _ = try trainer.run { _ in }
        let evaluator = try #require(training.test as? RankingEvaluator)
        let evaluation = try #require(try evaluator.evaluate(trainer.network, step: trainer.step, limit: nil))

        // Users with at least one test line, from the lines.
        var lines = [[Set<Int32>]](repeating: [[], [], []], count: interactions.users.count)
        for split in Interactions.Split.allCases {
            for l in try readLines(data, split) {
                lines[interactions.users.entity(id: l.user)!][split.rawValue].insert(Int32(interactions.items.entity(id: l.item)!))
            }
        }
        let testUsers = lines.indices.filter { !lines[$0][2].isEmpty }
        #expect(evaluation.samples == testUsers.count)
        #expect(evaluation.samples == 943, "every MovieLens user has at least 20 lines, so at least 2 test lines")
        #expect(evaluation.split == "test")
        #expect(evaluation.metrics.map(\.name) == ["recall@10", "ndcg@10", "hit@10", "mrr@10", "precision@10"])

        // The same metrics from the model's scores, excluding training and validation items
        // found in the lines, ranking by a sort, and RecBole's formulas.
        // Over the first 150 users (the evaluator ranks users in order), to keep the test short.
        let some = 150
        let limited = try #require(try evaluator.evaluate(trainer.network, step: trainer.step, limit: some))
        #expect(limited.samples == some)
        var recall = 0.0, ndcg = 0.0, hit = 0.0, mrr = 0.0, precision = 0.0
        for u in testUsers.prefix(some) {
            var scores = try evaluator.scores(user: u, network: trainer.network, step: trainer.step)
            for i in lines[u][0].union(lines[u][1]) { scores[Int(i)] = -.infinity }
            let ranked = referenceTop(10, scores)
            let relevant = lines[u][2]
            let hits = ranked.enumerated().filter { relevant.contains($0.element) }.map { $0.offset + 1 }
            recall += Double(hits.count) / Double(relevant.count)
            precision += Double(hits.count) / 10
            hit += hits.isEmpty ? 0 : 1
            mrr += hits.first.map { 1 / Double($0) } ?? 0
            ndcg += hits.map(gain).reduce(0, +) / (1...min(relevant.count, 10)).map(gain).reduce(0, +)
        }
        let users = Double(some)
        for (name, value) in [("recall@10", recall), ("ndcg@10", ndcg), ("hit@10", hit), ("mrr@10", mrr), ("precision@10", precision)] {
            let got = try #require(limited[name])
            #expect(abs(got - value / users) < 1e-9, "\(name): \(got) vs \(value / users)")
        }

        // Validation ranks users with validation lines.
        let validation = try #require(training.validation as? RankingEvaluator)
        #expect(try validation.evaluate(trainer.network, step: trainer.step, limit: 7)?.samples == 7)
        #expect(validation.split == "valid")
    }

    // MARK: 6. Negative sampling

    @Test func negativeDrawsAvoidThePositiveAndSeenItemsAndArePure() throws {
        let data = try MovieLens.data(.topk, seed: 1)
        let interactions = try #require(data.interactions)
        let mostPopular = interactions.popularity.indices.max { interactions.popularity[$0] < interactions.popularity[$1] }!
        for distribution in [NegativeSampling.Distribution.uniform, .popularity(exponent: 1)] {
            let sampler = try NegativeSampler(NegativeSampling(count: 4, distribution: distribution, excludeSeen: true),
                                              interactions: interactions, seed: 11)
            let twin = try NegativeSampler(NegativeSampling(count: 4, distribution: distribution, excludeSeen: true),
                                           interactions: interactions, seed: 11)
            let loose = try NegativeSampler(NegativeSampling(count: 4, distribution: distribution, excludeSeen: false),
                                            interactions: interactions, seed: 11)
            var draws = 0, sameAcrossSlots = 0, positiveHitsLoose = 0
            for u in 0..<interactions.users.count {
                let seen = interactions.train[u]
                try #require(seen.count < 1000)
                let seenSet = Set(seen)
                // The positive: one of the user's training items, and (for excludeSeen false)
                // the most popular item, which popularity sampling draws often.
                let positive = Int(seen[u % seen.count])
                for sample in UInt64(0)..<12 {
                    let s = sample &* 7919 &+ UInt64(u) &* 104_729
                    for slot in 0..<4 {
                        let item = sampler.draw(epoch: 1, sample: s, slot: slot, avoiding: seen, positive: positive)
                        draws += 1
                        #expect(item != positive && !seenSet.contains(Int32(item)) && item >= 0 && item < interactions.items.count)
                        #expect(twin.draw(epoch: 1, sample: s, slot: slot, avoiding: seen, positive: positive) == item)
                        #expect(sampler.draw(epoch: 1, sample: s, slot: slot, avoiding: seen, positive: positive) == item)
                        if sampler.draw(epoch: 1, sample: s, slot: slot + 1, avoiding: seen, positive: positive) == item {
                            sameAcrossSlots += 1
                        }
                        let free = loose.draw(epoch: 1, sample: s, slot: slot, avoiding: seen, positive: mostPopular)
                        #expect(free != mostPopular)
                        if loose.draw(epoch: 1, sample: s, slot: slot, avoiding: [], positive: nil) == mostPopular { positiveHitsLoose += 1 }
                    }
                }
            }
            // Another slot is another draw: equal only by chance (≈ Σ p² ≤ 1% of the time here).
            #expect(Double(sameAcrossSlots) / Double(draws) < 0.02, "\(distribution): \(sameAcrossSlots) of \(draws)")
            // Without a positive to avoid, the most popular item does come up: the check above
            // was not vacuous.
            #expect(positiveHitsLoose > 0, "\(distribution)")
            // Another epoch, another draw (mostly).
            var sameAcrossEpochs = 0
            for sample in UInt64(0)..<2000 where sampler.draw(epoch: 0, sample: sample, slot: 0, avoiding: [], positive: nil)
                == sampler.draw(epoch: 1, sample: sample, slot: 0, avoiding: [], positive: nil) { sameAcrossEpochs += 1 }
            #expect(sameAcrossEpochs < 40)
        }
    }

    @Test func popularityDrawsFollowPopularity() throws {
        let data = try MovieLens.data(.topk, seed: 1)
        let interactions = try #require(data.interactions)
        let n = interactions.items.count
        let popularity = interactions.popularity.map(Double.init)
        let total = popularity.reduce(0, +)
        #expect(Int(total) == data.counts[0], "popularity counts the training lines")

        let draws = 200_000
        for (distribution, weights) in [(NegativeSampling.Distribution.popularity(exponent: 1), popularity),
                                        (.uniform, [Double](repeating: 1, count: n))] {
            let sampler = try NegativeSampler(NegativeSampling(count: 1, distribution: distribution, excludeSeen: false),
                                              interactions: interactions, seed: 21)
            var observed = [Double](repeating: 0, count: n)
            for s in 0..<draws { observed[sampler.draw(epoch: 0, sample: UInt64(s), slot: 0, avoiding: [], positive: nil)] += 1 }
            let sum = weights.reduce(0, +)
            let expected = weights.map { Double(draws) * $0 / sum }
            // Each count is binomial(N, p): within 6 standard deviations (+3 for the smallest
            // expectations, where the normal approximation is poor). Over 1,682 items the chance
            // of any excursion is below 1e-5 (Bonferroni).
            var outliers: [String] = []
            for i in 0..<n {
                let p = expected[i] / Double(draws)
                let sigma = (Double(draws) * p * (1 - p)).squareRoot()
                if abs(observed[i] - expected[i]) > 6 * sigma + 3 { outliers.append("item \(i): \(observed[i]) vs \(expected[i])") }
                if weights[i] == 0 && observed[i] != 0 { outliers.append("item \(i) has no training line but was drawn \(observed[i]) times") }
            }
            #expect(outliers.isEmpty, "\(distribution): \(outliers.prefix(10))")
            // Pearson correlation of the counts with the expectations.
            if case .popularity = distribution {
                let mo = observed.reduce(0, +) / Double(n), me = expected.reduce(0, +) / Double(n)
                var cov = 0.0, vo = 0.0, ve = 0.0
                for i in 0..<n {
                    cov += (observed[i] - mo) * (expected[i] - me)
                    vo += (observed[i] - mo) * (observed[i] - mo)
                    ve += (expected[i] - me) * (expected[i] - me)
                }
                let r = cov / (vo * ve).squareRoot()
                #expect(r > 0.99, "correlation \(r)")
                // The 10 most popular items are each drawn far more than the median item: with
                // ≈1,000 draws expected for them and ≈30 for the median, 5× is a safe bound.
                let byPopularity = (0..<n).sorted { popularity[$0] > popularity[$1] }
                let median = observed[byPopularity[n / 2]]
                let topTen = byPopularity.prefix(10).map { observed[$0] }
                #expect(topTen.allSatisfy { $0 > 5 * max(median, 1) }, "top 10 \(topTen), median \(median)")
            }
        }
    }

    @Test func expandWritesPositivesFollowedByTheirNegatives() throws {
        let data = try MovieLens.data(.topk, seed: 1)
        let interactions = try #require(data.interactions)
        let schema = data.schema
        let userFeature = schema.categoricalIndex("user_id")!, itemFeature = schema.categoricalIndex("item_id")!
        let readFeatures = 0..<schema.readFeatures
        let itemSide = readFeatures.filter { schema.categorical[$0].side == .item || $0 == itemFeature }
        let userSide = readFeatures.filter { schema.categorical[$0].side == .user || $0 == userFeature }
        #expect(Set(itemSide.map { schema.categorical[$0].name }) == ["item_id", "class", "release_year"])
        #expect(Set(userSide.map { schema.categorical[$0].name }) == ["user_id", "age", "gender", "occupation", "zip_code"])
        #expect(itemSide.count + userSide.count == schema.readFeatures, "MovieLens has no context features")

        // Each item's features, from the lines (every line of an item has the same).
        var itemFeatures: [UInt64: [[UInt64]]] = [:]
        let batch = Batch(schema: schema)
        for split in Interactions.Split.allCases {
            var all = try data.source(split, shuffleBlock: 0, seed: 0)
            while try all.next(4096, into: batch) > 0 {
                for r in 0..<batch.count {
                    let features = itemSide.map { Array(batch.keys(of: $0, row: r)) }
                    let id = batch.keys(of: itemFeature, row: r)[0]
                    if let known = itemFeatures[id], known != features { Issue.record("item \(id) has two sets of features") }
                    itemFeatures[id] = features
                }
            }
        }
        #expect(itemFeatures.count == interactions.items.count)

        let k = 3
        let sampler = try NegativeSampler(NegativeSampling(count: k, distribution: .popularity(exponent: 1), excludeSeen: true),
                                          interactions: interactions, seed: 31)
        var source = try data.source(.train, shuffleBlock: 4096, seed: 5)
        let raw = Batch(schema: schema), out = Batch(schema: schema)
        for call in 0..<4 {
            let position = source.position
            let rows = try source.next(97, into: raw)
            try #require(rows == 97)
            if call > 0 { #expect(position.sample == Int64(97 * call)) }
            sampler.expand(raw, startingAt: position, into: out)
            #expect(out.count == rows * (1 + k) && out.groupSize == 1 + k)
            for r in 0..<rows {
                let g = r * (1 + k)
                // The positive: the raw row itself, labels and all (the loss takes its target,
                // 1, from its place in the group).
                #expect((0..<out.labelColumns).allSatisfy { out.labels[g * out.labelColumns + $0] == raw.labels[r * raw.labelColumns + $0] })
                for f in readFeatures where Array(out.keys(of: f, row: g)) != Array(raw.keys(of: f, row: r)) {
                    Issue.record("row \(r): the positive's \(schema.categorical[f].name) differs from the sample's")
                }
                let user = interactions.users.entity(id: raw.keys(of: userFeature, row: r)[0])!
                let positive = interactions.items.entity(id: raw.keys(of: itemFeature, row: r)[0])!
                let seen = Set(interactions.train[user])
                for slot in 0..<k {
                    let o = g + 1 + slot
                    #expect((0..<out.labelColumns).allSatisfy { out.labels[o * out.labelColumns + $0] == 0 })
                    for f in userSide where Array(out.keys(of: f, row: o)) != Array(raw.keys(of: f, row: r)) {
                        Issue.record("row \(r) slot \(slot): the negative's \(schema.categorical[f].name) is not the user's")
                    }
                    let itemKey = out.keys(of: itemFeature, row: o)[0]
                    let drawn = try #require(interactions.items.entity(id: itemKey))
                    #expect(drawn == sampler.draw(epoch: position.epoch, sample: UInt64(position.sample) + UInt64(r), slot: slot,
                                                  avoiding: interactions.train[user], positive: positive))
                    #expect(drawn != positive && !seen.contains(Int32(drawn)))
                    let features = itemSide.map { Array(out.keys(of: $0, row: o)) }
                    #expect(features == itemFeatures[itemKey], "row \(r) slot \(slot): the negative's item features are not its item's")
                }
            }
        }
    }

    // MARK: Pointwise metrics: ties AUC's other tests leave out

    @Test func aucTiesAcrossClassesByHand() {
        // Positives {1, 2, 2}, negatives {2, 0, 2, 3}; a pair counts 1 if the positive is higher, ½ on a tie:
        //   positive 1: vs 2 → 0, vs 0 → 1, vs 2 → 0, vs 3 → 0      = 1
        //   positive 2: vs 2 → ½, vs 0 → 1, vs 2 → ½, vs 3 → 0      = 2  (twice)
        //   AUC = (1 + 2 + 2) / (3 · 4) = 5/12.
        let scores: [Float] = [1, 2, 2, 2, 0, 2, 3], labels: [Float] = [1, 1, 1, 0, 0, 0, 0]
        #expect(close(Metrics.auc(scores: scores, labels: labels), 5.0 / 12))
        var m = Metrics()
        for i in scores.indices.reversed() { m.add(logit: Double(scores[i]), label: labels[i]) }
        #expect(close(m.auc, 5.0 / 12))
        // All tied, unbalanced classes: ½ whatever the balance.
        #expect(Metrics.auc(scores: [7, 7, 7, 7, 7, 7], labels: [1, 0, 0, 0, 0, 0]) == 0.5)
        #expect(Metrics.auc(scores: [-2, -2, -2], labels: [1, 1, 0]) == 0.5)
        // A tie in one class only does not count as half: positives {1, 1}, negative {0} → 1.
        #expect(Metrics.auc(scores: [1, 1, 0], labels: [1, 1, 0]) == 1)
        // Probabilities 0 and 1 are logits −∞ and +∞, which tie with themselves:
        //   positive 0 vs negatives {0, 1}: ½ + 0; positive 1: 1 + ½ → 2 / 4 = ½.
        var p = Metrics()
        p.add(probabilities: [0, 0, 1, 1] as [Float], labels: [0, 1, 0, 1] as [Float])
        #expect(p.auc == 0.5)
        // And the clipped logloss: two mistakes at −log(1e-7), two right at −log(1 − 1e-7).
        #expect(close(p.logLoss, (2 * -log(1e-7) + 2 * -log1p(-1e-7)) / 4, 1e-9))
    }

    @Test func ratingMetricsByHand() {
        // Errors −1, 0, −2, 0.5: RMSE = √((1 + 0 + 4 + 0.25)/4) = √1.3125; MAE = 3.5/4 = 0.875.
        var m = RatingMetrics()
        #expect(m.rmse.isNaN && m.mae.isNaN)
        let predictions: [Float] = [1, 2, 3, 4.5], labels: [Float] = [2, 2, 5, 4]
        predictions.prefix(3).withUnsafeBufferPointer { m.add(predictions: $0, labels: Array(labels.prefix(3))) }
        predictions.suffix(1).withUnsafeBufferPointer { m.add(predictions: $0, labels: Array(labels.suffix(1))) }
        #expect(m.count == 4)
        #expect(close(m.rmse, 1.3125.squareRoot()) && close(m.mae, 0.875))
    }
}
