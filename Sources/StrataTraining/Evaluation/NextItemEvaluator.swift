// Next-item evaluation as RecBole runs it for sequential models with full ranking: for every
// user with a held-out item in the split, the model reads the user's history (training's
// items; and validation's when testing), scores every item of the catalog, the items of the
// history are left out, and the K best are compared with the held-out item. A next-item model
// scores the catalog from one query a user; a model of one score a row (a ranker reading the
// history as a feature) scores a row per item.
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
    private var rowScores: [Float] = []

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

    /// Every item's score for user `u` after the user's whole history (every split's items),
    /// in catalog order: what to recommend next.
    public func scores(user u: Int, network: Network, step: Int) throws -> [Float] {
        try check(network)
        try score([u], history: { interactions.history(of: $0, before: nil) }, network: network, step: step) { _, row in
            scores = Array(row)
        }
        return scores
    }

    /// A next-item model's query for user `u` after the user's whole history: the vector
    /// whose inner product with an item's row is the item's score, for retrieval.
    public func query(user u: Int, network: Network, step: Int) throws -> [Float] {
        try checkHistories()
        batch.begin(capacity: 1)
        setHistory(interactions.history(of: u, before: nil))
        writeRow(0, user: u, item: 0)
        batch.end(written: 1)
        batch.computeCrosses()
        let q = try network.query(batch, step: step)
        return Array(UnsafeBufferPointer(start: q.row(0), count: q.columns))
    }

    /// The scores of `items` (entities of the catalog) for user `u` after the user's whole
    /// history, in that order: re-ranking retrieved candidates. A next-item model is given
    /// them as its candidates, in place of the catalog.
    public func scores(user u: Int, items: [Int32], network: Network, step: Int) throws -> [Float] {
        try checkHistories()
        try RankingEvaluator.requireOneTask(network)
        if items.isEmpty { return [] }
        setHistory(interactions.history(of: u, before: nil))
        if network.scoresItems {
            try interactions.setCandidates(of: network, items.map { interactions.items.ids[Int($0)] })
            batch.begin(capacity: 1)
            writeRow(0, user: u, item: 0)
            batch.end(written: 1)
            batch.computeCrosses()
            let out = try network.forward(batch, training: false, step: step)
            return Array(UnsafeBufferPointer(start: out.row(0), count: items.count))
        }
        var result = [Float](repeating: 0, count: items.count)
        var first = 0
        while first < items.count {
            let rows = min(4096, items.count - first)
            batch.begin(capacity: rows)
            for r in 0..<rows { writeRow(r, user: u, item: Int(items[first + r])) }
            batch.end(written: rows)
            batch.computeCrosses()
            let out = try network.forward(batch, training: false, step: step)
            for r in 0..<rows { result[first + r] = out.data[r] }
            first += rows
        }
        return result
    }

    private func checkHistories() throws {
        guard interactions.hasSequences else {
            throw TrainingError.mismatch("reading a user's history needs the data's time column (the schema's \"time\")")
        }
    }

    /// The history `writeRow` writes: its last `historyLength` items' keys.
    private func setHistory(_ history: ArraySlice<Int32>) {
        keys.removeAll(keepingCapacity: true)
        for i in history.suffix(historyLength) { keys.append(interactions.items.ids[Int(i)]) }
    }

    /// Writes row `r`: user `u`, catalog item `item`, and the history `setHistory` set.
    private func writeRow(_ r: Int, user u: Int, item: Int) {
        keys.withUnsafeBufferPointer { h in
            composer.write(batch, row: r, user: .entity(interactions.users, u), item: .entity(interactions.items, item),
                           context: .missing, labels: nil, history: (historyFeature, h))
        }
    }

    public func evaluate(_ network: Network, step: Int, limit: Int?) throws -> Evaluation? {
        try check(network)
        var metrics = RankingMetrics(k: k)
        var users: [Int] = []
        for u in 0..<interactions.users.count where !interactions.items(of: u, in: which).isEmpty {
            if let limit, users.count >= limit { break }
            users.append(u)
        }
        try score(users, history: { interactions.history(of: $0, before: which) }, network: network, step: step) { u, row in
            scores.removeAll(keepingCapacity: true)
            scores.append(contentsOf: row)
            for i in excluded(u) { scores[Int(i)] = -.infinity }
            let top = scores.withUnsafeBufferPointer { RankingMetrics.top(k, of: $0) }
            metrics.add(ranked: top, relevant: interactions.items(of: u, in: which))
        }
        guard metrics.users > 0 else { return nil }
        return Evaluation(step: step, split: split, samples: metrics.users, metrics: metrics.metrics)
    }

    private func check(_ network: Network) throws {
        try RankingEvaluator.requireOneTask(network)
        guard network.scoresItems else { return }
        guard network.candidateKeys == interactions.items.ids else {
            throw TrainingError.mismatch("the model scores \(network.candidateKeys.count) candidate items, not the catalog's \(interactions.items.count)")
        }
    }

    /// Scores every item for each of `users` after `history(u)` (its last `historyLength`
    /// items), in batches; `body` gets each user and their scores in catalog order.
    private func score(_ users: [Int], history: (Int) -> ArraySlice<Int32>, network: Network, step: Int,
                       _ body: (Int, UnsafeBufferPointer<Float>) -> Void) throws {
        let catalog = interactions.items
        guard network.scoresItems else {
            return try scoreRows(users, history: history, network: network, step: step, body)
        }
        let rowsPerBatch = 256
        var first = 0
        while first < users.count {
            let rows = min(rowsPerBatch, users.count - first)
            batch.begin(capacity: rows)
            for r in 0..<rows {
                let u = users[first + r]
                keys.removeAll(keepingCapacity: true)
                for i in history(u).suffix(historyLength) { keys.append(catalog.ids[Int(i)]) }
                // The item's features are a placeholder's (the catalog's first item): a next-item
                // model's query never reads them.
                keys.withUnsafeBufferPointer { h in
                    composer.write(batch, row: r, user: .entity(interactions.users, u), item: .entity(catalog, 0),
                                   context: .missing, labels: nil, history: (historyFeature, h))
                }
            }
            batch.end(written: rows)
            batch.computeCrosses()
            let out = try network.forward(batch, training: false, step: step)
            for r in 0..<rows { body(users[first + r], UnsafeBufferPointer(start: out.row(r), count: catalog.count)) }
            first += rows
        }
    }

    /// `score` for a model of one score a row: a row per item of the catalog for each user,
    /// with the user's history.
    private func scoreRows(_ users: [Int], history: (Int) -> ArraySlice<Int32>, network: Network, step: Int,
                           _ body: (Int, UnsafeBufferPointer<Float>) -> Void) throws {
        let catalog = interactions.items, n = catalog.count
        if rowScores.count != n { rowScores = [Float](repeating: 0, count: n) }
        for u in users {
            keys.removeAll(keepingCapacity: true)
            for i in history(u).suffix(historyLength) { keys.append(catalog.ids[Int(i)]) }
            var first = 0
            while first < n {
                let rows = min(4096, n - first)
                batch.begin(capacity: rows)
                keys.withUnsafeBufferPointer { h in
                    for r in 0..<rows {
                        composer.write(batch, row: r, user: .entity(interactions.users, u), item: .entity(catalog, first + r),
                                       context: .missing, labels: nil, history: (historyFeature, h))
                    }
                }
                batch.end(written: rows)
                batch.computeCrosses()
                let out = try network.forward(batch, training: false, step: step)
                for r in 0..<rows { rowScores[first + r] = out.data[r] }
                first += rows
            }
            rowScores.withUnsafeBufferPointer { body(u, $0) }
        }
    }
}
