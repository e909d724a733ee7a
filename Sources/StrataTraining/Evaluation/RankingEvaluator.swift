// Full ranking, as RecBole evaluates top-K recommendation: for every user with items in the
// split, every item of the catalog is scored, the items the user already has (training, and
// validation when testing) are left out, and the K best are compared with the split's items.
public import StrataModels
import StrataNN

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

    /// Every item's score for user `u`, in catalog order: a multi-task model's prediction of
    /// task `task` (its output column).
    public func scores(user u: Int, network: Network, step: Int, batchSize: Int = 4096, task: Int = 0) throws -> [Float] {
        let n = interactions.items.count
        if scores.count != n { scores = [Float](repeating: 0, count: n) }
        if try scoresTheCatalog(network, task: task) {
            // A model that scores items (two-tower): one row, its query against the catalog.
            try write(user: u, items: 0..<1, network: network, step: step) { _, out in
                scores.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: out.data, count: n) }
            }
            return scores
        }
        try write(user: u, items: 0..<n, network: network, step: step, block: batchSize) { first, out in
            for r in 0..<out.rows { scores[first + r] = out.data[r * out.columns + task] }
        }
        return scores
    }

    /// The scores of `items` (entities of the catalog) for user `u`, in that order:
    /// re-ranking retrieved candidates.
    public func scores(user u: Int, items: [Int32], network: Network, step: Int, task: Int = 0) throws -> [Float] {
        if try scoresTheCatalog(network, task: task) {
            let all = try scores(user: u, network: network, step: step)
            return items.map { all[Int($0)] }
        }
        var result = [Float](repeating: 0, count: items.count)
        try write(user: u, items: 0..<items.count, network: network, step: step, item: { Int(items[$0]) }) { first, out in
            for r in 0..<out.rows { result[first + r] = out.data[r * out.columns + task] }
        }
        return result
    }

    /// Whether `network` scores the catalog from one row (a model that scores items, its
    /// candidates the catalog) rather than a score per (user, item) row; throws if it is
    /// neither, or its candidates are not the catalog.
    private func scoresTheCatalog(_ network: Network, task: Int) throws -> Bool {
        precondition(network.tasks.indices.contains(task), "task \(task) of a model of \(network.tasks.count)")
        guard network.scoresItems else { return false }
        guard network.candidateKeys == interactions.items.ids else {
            throw TrainingError.mismatch("the model scores \(network.candidateKeys.count) candidate items, not the catalog's \(interactions.items.count)")
        }
        return true
    }

    /// Scores user `u` with the items `item(i)` for i in `items` (catalog entities), `block`
    /// rows a forward, handing each block's first i and scores to `body`.
    private func write(user u: Int, items: Range<Int>, network: Network, step: Int, block: Int = 4096, item: (Int) -> Int = { $0 },
                       _ body: (_ first: Int, _ scores: Tensor) throws -> Void) throws {
        var first = items.lowerBound
        while first < items.upperBound {
            let rows = min(block, items.upperBound - first)
            batch.begin(capacity: rows)
            for r in 0..<rows {
                composer.write(batch, row: r, user: .entity(interactions.users, u), item: .entity(interactions.items, item(first + r)),
                               context: .missing, labels: nil)
            }
            batch.end(written: rows)
            batch.computeCrosses()
            try body(first, try network.forward(batch, training: false, step: step))
            first += rows
        }
    }

    public func evaluate(_ network: Network, step: Int, limit: Int?) throws -> Evaluation? {
        try Self.requireOneTask(network)
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

    /// Ranking by one score: a multi-task model is refused (`strata recommend --task` picks one).
    static func requireOneTask(_ network: Network) throws {
        guard network.tasks.count == 1 else {
            throw TrainingError.mismatch("ranking reads one score a row; model \(network.spec.name) predicts \(network.tasks.count) "
                                         + "(\(network.tasks.joined(separator: ", ")))")
        }
    }
}
