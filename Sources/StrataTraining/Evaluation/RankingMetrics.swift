import Foundation

// Top-K ranking metrics as RecBole computes them for full ranking: per user, from the
// user's K best-scored items and the user's relevant items, then averaged over users.

/// Recall, NDCG, hit rate, MRR and precision at K, averaged over the users added.
///
/// For a user with relevant items R and top-K list L (best first), with hits at 1-based ranks
/// i ≤ K:
/// - Recall@K = |hits| / |R| (all of R, even when |R| > K);
/// - Precision@K = |hits| / K;
/// - Hit@K = 1 if any hit;
/// - MRR@K = 1 / the rank of the first hit (0 without one);
/// - NDCG@K = Σ_hits 1/log₂(i + 1) / Σ_{i=1…min(|R|, K)} 1/log₂(i + 1): the ideal list holds
///   min(|R|, K) hits.
public struct RankingMetrics: Sendable {
    public let k: Int
    public private(set) var users = 0
    private var recall = 0.0, precision = 0.0, hit = 0.0, mrr = 0.0, ndcg = 0.0

    public init(k: Int) {
        precondition(k >= 1, "K is at least 1")
        self.k = k
    }

    /// Adds one user: `ranked` holds the user's best items, best first (at least the first K
    /// are read; fewer when there are fewer candidates), `relevant` the user's relevant items,
    /// ascending. A user without relevant items counts for nothing and is not added.
    public mutating func add(ranked: some Collection<Int32>, relevant: [Int32]) {
        guard !relevant.isEmpty else { return }
        var hits = 0, dcg = 0.0, firstHit = 0
        for (i, item) in ranked.prefix(k).enumerated() where relevant.sortedContains(item) {
            hits += 1
            dcg += 1 / log2(Double(i + 2))
            if firstHit == 0 { firstHit = i + 1 }
        }
        var ideal = 0.0
        for i in 0..<min(relevant.count, k) { ideal += 1 / log2(Double(i + 2)) }
        users += 1
        recall += Double(hits) / Double(relevant.count)
        precision += Double(hits) / Double(k)
        hit += hits > 0 ? 1 : 0
        mrr += firstHit > 0 ? 1 / Double(firstHit) : 0
        ndcg += dcg / ideal
    }

    private func mean(_ total: Double) -> Double { users == 0 ? .nan : total / Double(users) }
    public var recallAtK: Double { mean(recall) }
    public var precisionAtK: Double { mean(precision) }
    public var hitAtK: Double { mean(hit) }
    public var mrrAtK: Double { mean(mrr) }
    public var ndcgAtK: Double { mean(ndcg) }

    /// The metrics, named as RecBole names them ("recall@10", ...).
    public var metrics: [Evaluation.Metric] {
        [.init("recall@\(k)", recallAtK), .init("ndcg@\(k)", ndcgAtK), .init("hit@\(k)", hitAtK),
         .init("mrr@\(k)", mrrAtK), .init("precision@\(k)", precisionAtK)]
    }

    /// The indices of the `k` largest scores, largest first; ties go to the lower index (so the
    /// result is a function of the scores alone). Scores of -infinity are never taken; NaN
    /// ranks below everything.
    public static func top(_ k: Int, of scores: UnsafeBufferPointer<Float>) -> [Int32] {
        // A min-heap of the best k so far, by (score, -index), NaN below every number.
        func better(_ a: Int32, _ b: Int32) -> Bool {
            let x = scores[Int(a)], y = scores[Int(b)]
            if x.isNaN || y.isNaN { return x.isNaN == y.isNaN ? a < b : y.isNaN }
            return x > y || (x == y && a < b)
        }
        var heap: [Int32] = []
        heap.reserveCapacity(k)
        func siftDown(_ start: Int) {
            var i = start
            while true {
                let l = 2 * i + 1, r = l + 1
                var worst = i
                if l < heap.count && better(heap[worst], heap[l]) { worst = l }
                if r < heap.count && better(heap[worst], heap[r]) { worst = r }
                if worst == i { return }
                heap.swapAt(i, worst)
                i = worst
            }
        }
        for i in 0..<scores.count where scores[i] != -.infinity {
            let item = Int32(i)
            if heap.count < k {
                heap.append(item)
                var c = heap.count - 1
                while c > 0 {
                    let p = (c - 1) / 2
                    guard better(heap[p], heap[c]) else { break }
                    heap.swapAt(p, c)
                    c = p
                }
            } else if better(item, heap[0]) {
                heap[0] = item
                siftDown(0)
            }
        }
        return heap.sorted(by: better)
    }
}
