// Full ranking, as RecBole evaluates top-K recommendation: for every user with items in the
// split, every item of the catalog is scored, the items the user already has (training, and
// validation when testing) are left out, and the K best are compared with the split's items.
public import StrataModels

public final class RankingEvaluator: Evaluator {
    public let split: String
    public var schema: FeatureSchema { interactions.schema }
    private let which: Interactions.Split
    private let interactions: Interactions
    private let k: Int
    private let batch: Batch
    private let composer: RowComposer
    private var scores: [Float] = []

    /// `split` is `.valid` or `.test`.
    public init(_ interactions: Interactions, split: Interactions.Split, k: Int = 10) {
        precondition(split != .train, "ranking evaluates held-out items")
        self.interactions = interactions
        which = split
        self.split = split.name
        self.k = k
        batch = Batch(schema: interactions.schema)
        composer = RowComposer(schema: interactions.schema, users: interactions.users, items: interactions.items)
    }

    /// Items user `u` must not be recommended (`Interactions.excluded`).
    @_spi(Testing) public func excluded(_ u: Int) -> [Int32] { interactions.excluded(u, evaluating: which) }

    /// Every item's score for user `u`, in catalog order.
    public func scores(user u: Int, network: Network, step: Int, batchSize: Int = 4096) throws -> [Float] {
        let n = interactions.items.count
        if scores.count != n { scores = [Float](repeating: 0, count: n) }
        var first = 0
        while first < n {
            let rows = min(batchSize, n - first)
            batch.begin(capacity: rows)
            for r in 0..<rows {
                composer.write(batch, row: r, user: .entity(interactions.users, u), item: .entity(interactions.items, first + r),
                               context: .missing, labels: nil)
            }
            batch.end(written: rows)
            batch.computeCrosses()
            let out = try network.forward(batch, training: false, step: step)
            for r in 0..<rows { scores[first + r] = out.data[r] }
            first += rows
        }
        return scores
    }

    public func evaluate(_ network: Network, step: Int, limit: Int?) throws -> Evaluation? {
        var metrics = RankingMetrics(k: k)
        for u in 0..<interactions.users.count {
            if let limit, metrics.users >= limit { break }
            let relevant = interactions.items(of: u, in: which)
            guard !relevant.isEmpty else { continue }
            var s = try scores(user: u, network: network, step: step)
            for i in excluded(u) { s[Int(i)] = -.infinity }
            let top = s.withUnsafeBufferPointer { RankingMetrics.top(k, of: $0) }
            metrics.add(ranked: top, relevant: relevant)
        }
        guard metrics.users > 0 else { return nil }
        return Evaluation(step: step, split: split, samples: metrics.users, metrics: metrics.metrics)
    }
}
