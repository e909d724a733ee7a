// Next-item evaluation as RecBole runs it for sequential models with full ranking: for every
// user with a held-out item in the split, the model reads the user's history (training's
// items; and validation's when testing), scores every item of the catalog, the items of the
// history are left out, and the K best are compared with the held-out item.
public import StrataModels

public final class NextItemEvaluator: Evaluator {
    public let split: String
    public let schema: FeatureSchema
    private let which: Interactions.Split
    private let interactions: Interactions
    private let k: Int
    private let historyLength: Int
    private let batch: Batch
    private let composer: RowComposer
    private let historyFeature: Int
    private var keys: [UInt64] = []
    private var scores: [Float] = []

    /// `split` is `.valid` or `.test`; histories hold at most `historyLength` items, as the
    /// training samples' do.
    public init(_ interactions: Interactions, split: Interactions.Split, k: Int = 10, historyLength: Int) throws {
        precondition(split != .train, "next-item evaluation predicts held-out items")
        schema = try interactions.sequenceSchema()
        self.interactions = interactions
        which = split
        self.split = split.name
        self.k = k
        self.historyLength = historyLength
        batch = Batch(schema: schema)
        composer = RowComposer(schema: schema, users: interactions.users, items: interactions.items)
        historyFeature = schema.categoricalIndex(schema.sequence!)!
    }

    /// Items user `u` must not be recommended (`Interactions.excluded`).
    @_spi(Testing) public func excluded(_ u: Int) -> [Int32] { interactions.excluded(u, evaluating: which) }

    public func evaluate(_ network: Network, step: Int, limit: Int?) throws -> Evaluation? {
        guard network.scoresItems else {
            throw TrainingError.mismatch("the next-item protocol ranks every item by a model's query; model \(network.spec.name) scores one value a row (train gru4rec, lstm4rec, sasrec or another next-item model)")
        }
        let catalog = interactions.items
        guard network.candidateKeys == catalog.ids else {
            throw TrainingError.mismatch("the model scores \(network.candidateKeys.count) candidate items, not the catalog's \(catalog.count)")
        }
        var metrics = RankingMetrics(k: k)
        var users: [Int] = []
        for u in 0..<interactions.users.count where !interactions.items(of: u, in: which).isEmpty {
            if let limit, users.count >= limit { break }
            users.append(u)
        }
        let rowsPerBatch = 256
        var first = 0
        while first < users.count {
            let rows = min(rowsPerBatch, users.count - first)
            batch.begin(capacity: rows)
            for r in 0..<rows {
                let u = users[first + r]
                let history = interactions.history(of: u, before: which).suffix(historyLength)
                keys.removeAll(keepingCapacity: true)
                for i in history { keys.append(catalog.ids[Int(i)]) }
                // The item's features are the held-out item's: a query never reads them.
                let target = Int(interactions.items(of: u, in: which)[0])
                keys.withUnsafeBufferPointer { h in
                    composer.write(batch, row: r, user: .entity(interactions.users, u), item: .entity(catalog, target),
                                   context: .missing, labels: nil, history: (historyFeature, h))
                }
            }
            batch.end(written: rows)
            batch.computeCrosses()
            let out = try network.forward(batch, training: false, step: step)
            for r in 0..<rows {
                let u = users[first + r]
                scores.removeAll(keepingCapacity: true)
                scores.append(contentsOf: UnsafeBufferPointer(start: out.row(r), count: catalog.count))
                for i in excluded(u) { scores[Int(i)] = -.infinity }
                let top = scores.withUnsafeBufferPointer { RankingMetrics.top(k, of: $0) }
                metrics.add(ranked: top, relevant: interactions.items(of: u, in: which))
            }
            first += rows
        }
        guard metrics.users > 0 else { return nil }
        return Evaluation(step: step, split: split, samples: metrics.users, metrics: metrics.metrics)
    }
}
