// Candidate generation (`strata recommend --retrieve N`) on MovieLens-100K: the HNSW index of a
// trained model's item table finds what exact inner-product search finds for the model's own
// user queries; re-ranking the retrieved candidates gives the full ranking's answer when every
// item is a candidate; a stale or missing index is refused, naming what rebuilds it.
import Foundation
import StrataModels
import StrataNeighbors
import StrataStore
import StrataTestSupport
import StrataTraining
import Testing

@Suite(.serialized) struct RetrievalTests {
    static let data = "movielens:" + MovieLens.directory

    /// Recall@10 of the index against brute force over a trained GRU4Rec's item table, for
    /// every user's query: the network's output after the user's whole history (what
    /// `recommend --retrieve` searches with). Then the command: with every item a candidate,
    /// the answer is the full ranking's; a stale index is refused until rebuilt.
    @Test func theIndexFindsTheExactTopTenOfTrainedQueries() throws {
        let directory = temporaryDirectory("strata-retrieval-recall")
        defer { removeDirectory(directory) }
        let store = directory + "/gru4rec"
        let trained = try StrataCommand.run(["train", "--model", "gru4rec", "--data", Self.data, "--protocol", "next-item", "--store", store,
                                             "--set", "embedding_dim=32", "--set", "hidden_size=32", "--set", "max_length=20",
                                             "--batch-size", "256", "--steps", "300", "--optimizer", "adam", "--learning-rate", "0.005",
                                             "--eval-samples", "0"], timeout: 900)
        try #require(trained.status == 0, "\(trained.output)")
        do {
            let s = try Store(path: store, options: .small(TierBudget(hotBytes: 1 << 22, warmBytes: 0)))
            defer { try? s.close() }
            let model = try TrainedModel(store: s)
            let interactions = try #require(try MovieLens.data(.nextItem).interactions)
            let evaluator = try NextItemEvaluator(interactions, split: .test, historyLength: 50)
            var queries: [Float] = []
            for u in 0..<interactions.users.count { queries += try evaluator.query(user: u, network: model.network, step: model.step) }
            let items = try s.table("item")
            var keys: [UInt64] = [], rows: [Float] = []
            try items.scanCheckpoint(withState: false) { batch in
                keys += batch.keys
                rows += batch.values
            }
            let d = items.spec.dimension, k = 10, users = interactions.users.count
            #expect(queries.count == users * d)
            var exact: [Set<UInt64>] = [], scores = [Float](repeating: 0, count: keys.count)
            for q in 0..<users {
                for r in 0..<keys.count {
                    var dot: Float = 0
                    for j in 0..<d { dot += queries[q * d + j] * rows[r * d + j] }
                    scores[r] = dot
                }
                exact.append(Set(scores.indices.sorted { scores[$0] > scores[$1] }.prefix(k).map { keys[$0] }))
            }
            // Both graphs by inner product, `strata index`'s default parameters on one thread.
            var recall: [NeighborIndex.Metric: Double] = [:]
            for metric in [NeighborIndex.Metric.mips, .dot] {
                let index = try NeighborIndex(table: items, metric: metric, parameters: .init(threads: 1))
                let found = try index.search(queries, k: k)
                let hits = zip(found, exact).map { f, e in f.filter { e.contains($0.key) }.count }.reduce(0, +)
                recall[metric] = Double(hits) / Double(users * k)
            }
            print("recall@10 against brute force, \(keys.count) GRU4Rec item rows (dimension \(d)), \(users) users' queries: "
                  + "mips " + String(format: "%.4f", recall[.mips]!) + ", dot " + String(format: "%.4f", recall[.dot]!))
            #expect(recall[.mips]! >= 0.95, "recall@10 \(recall)")
        }

        // No index yet: refused, saying how to build one.
        let recommend = ["recommend", store, "--data", Self.data, "--protocol", "next-item", "--user", "196", "-k", "10", "--json"]
        let missing = try StrataCommand.run(recommend + ["--retrieve", "2000"])
        #expect(missing.status == 1 && missing.error?.contains("strata index \(store) item --metric mips") == true
                && missing.error?.contains("--rebuild-index") == true, "\(missing.output)")
        let index = try StrataCommand.run(["index", store, "item", "--metric", "mips"])
        try #require(index.status == 0, "\(index.output)")

        // Every item a candidate: the full ranking's answer.
        let full = try Self.items(try StrataCommand.run(recommend))
        let all = try StrataCommand.run(recommend + ["--retrieve", "2000"])
        let retrieved = try Self.items(all)
        #expect(retrieved.map(\.name) == full.map(\.name), "\(retrieved) against \(full)")
        #expect(zip(retrieved, full).allSatisfy { abs($0.score - $1.score) <= 1e-5 * max(1, abs($1.score)) }, "\(retrieved) against \(full)")
        let retrieval = try #require(Self.object(all)["retrieval"] as? [String: Any])
        #expect(retrieval["candidates"] as? Int == 1682 - 39 && retrieval["retriever"] as? String == "gru4rec", "\(retrieval)")
        // Fifty candidates: the same ten, or nearly (the index is approximate).
        let fifty = try Self.items(try StrataCommand.run(recommend + ["--retrieve", "50"]))
        #expect(Set(fifty.map(\.name)).intersection(full.map(\.name)).count >= 9, "\(fifty) against \(full)")

        // Another checkpoint makes the index stale: refused, then rebuilt on request.
        try Self.checkpointAgain(store)
        let stale = try StrataCommand.run(recommend + ["--retrieve", "50"])
        #expect(stale.status == 1 && stale.error?.contains("--rebuild-index") == true && stale.error?.contains("strata index") == true,
                "\(stale.output)")
        let rebuilt = try StrataCommand.run(recommend + ["--retrieve", "50", "--rebuild-index"])
        #expect(rebuilt.status == 0 && rebuilt.lines.contains { $0.hasPrefix("note: built \(store)/indexes/item.mips.hnsw") }, "\(rebuilt.output)")
        #expect(try Self.items(rebuilt).map(\.name) == fifty.map(\.name))
        #expect(try StrataCommand.run(recommend + ["--retrieve", "50"]).status == 0)

        // A two-tower with an item tower: its vectors are no table's rows, so it cannot retrieve.
        let tower = directory + "/tower"
        let towerTrained = try StrataCommand.run(["train", "--model", "two-tower", "--data", Self.data, "--protocol", "next-item",
                                                  "--store", tower, "--set", "embedding_dim=8", "--set", "tower=[8]",
                                                  "--set", "item_tower=[8]", "--batch-size", "256", "--steps", "5", "--eval-samples", "0"],
                                                 timeout: 600)
        try #require(towerTrained.status == 0, "\(towerTrained.output)")
        let refused = try StrataCommand.run(recommend + ["--retrieve", "50", "--retriever", tower])
        #expect(refused.status == 1 && refused.error?.contains("item tower") == true && refused.error?.contains("item_tower") == true,
                "\(refused.output)")
    }

    /// An MF retriever (the user's row is the query) for a NeuMF ranker trained on the same
    /// data, and what is refused: a ranker that cannot retrieve for itself, a retriever that
    /// is not a store, bad values.
    @Test func anotherModelRetrievesAndTheRankerRanks() throws {
        let directory = temporaryDirectory("strata-retrieval-mf")
        defer { removeDirectory(directory) }
        let (mf, neumf) = (directory + "/mf", directory + "/neumf")
        let trainMF = try StrataCommand.run(["train", "--model", "mf", "--set", "biases=false", "--data", Self.data, "--protocol", "topk",
                                             "--store", mf, "--embedding-dim", "16", "--batch-size", "512", "--steps", "300",
                                             "--optimizer", "adam", "--learning-rate", "0.01", "--sparse-optimizer", "adam",
                                             "--eval-samples", "0"], timeout: 600)
        try #require(trainMF.status == 0, "\(trainMF.output)")
        let trainNeuMF = try StrataCommand.run(["train", "--model", "neumf", "--data", Self.data, "--protocol", "topk", "--store", neumf,
                                                "--embedding-dim", "8", "--mlp-embedding-dim", "8", "--mlp", "16-8", "--batch-size", "512",
                                                "--steps", "100", "--optimizer", "adam", "--learning-rate", "0.01", "--eval-samples", "0"],
                                               timeout: 600)
        try #require(trainNeuMF.status == 0, "\(trainNeuMF.output)")
        try #require(try StrataCommand.run(["index", mf, "item", "--metric", "mips"]).status == 0)

        let base = ["--data", Self.data, "--protocol", "topk", "--user", "196", "--json"]
        // Every unseen item, ranked by NeuMF: each candidate's score must be this one.
        let ranked = try Self.items(try StrataCommand.run(["recommend", neumf, "-k", "2000"] + base))
        #expect(ranked.count == 1682 - 39)
        let score = Dictionary(uniqueKeysWithValues: ranked.map { ($0.name, $0.score) })
        let everything = try Self.items(try StrataCommand.run(["recommend", neumf, "-k", "10", "--retriever", mf, "--retrieve", "2000"] + base))
        #expect(everything.map(\.name) == ranked.prefix(10).map(\.name), "\(everything)")
        let result = try StrataCommand.run(["recommend", neumf, "-k", "10", "--retriever", mf, "--retrieve", "100"] + base)
        let hundred = try Self.items(result)
        #expect(hundred.count == 10 && Set(hundred.map(\.name)).count == 10, "\(hundred)")
        for item in hundred {
            let full = try #require(score[item.name], "\(item.name) is not an unseen item")
            #expect(abs(full - item.score) <= 1e-5 * max(1, abs(full)), "\(item.name): \(item.score), full ranking \(full)")
        }
        #expect(hundred.map(\.score) == hundred.map(\.score).sorted(by: >))
        let retrieval = try #require(Self.object(result)["retrieval"] as? [String: Any])
        #expect(retrieval["candidates"] as? Int == 100 && retrieval["retriever"] as? String == "mf", "\(retrieval)")

        // MF retrieving for itself: its ten best, or nearly (the index is approximate).
        let exact = try Self.items(try StrataCommand.run(["recommend", mf, "-k", "10"] + base)).map(\.name)
        let viaIndex = try Self.items(try StrataCommand.run(["recommend", mf, "-k", "10", "--retrieve", "10"] + base)).map(\.name)
        #expect(Set(exact).intersection(viaIndex).count >= 9, "\(viaIndex) against \(exact)")

        // Refusals, each naming what is wrong.
        let own = try StrataCommand.run(["recommend", neumf, "--retrieve", "50"] + base)
        #expect(own.status == 1 && own.error?.contains("neumf cannot retrieve") == true, "\(own.output)")
        let nowhere = try StrataCommand.run(["recommend", neumf, "--retrieve", "50", "--retriever", directory + "/none"] + base)
        #expect(nowhere.status == 1 && nowhere.error?.contains("--retriever \(directory)/none") == true, "\(nowhere.output)")
        let few = try StrataCommand.run(["recommend", neumf, "--retrieve", "5", "-k", "10"] + base)
        #expect(few.status == 64 && few.error?.contains("--retrieve 5") == true, "\(few.output)")
        let alone = try StrataCommand.run(["recommend", neumf, "--rebuild-index"] + base)
        #expect(alone.status == 64 && alone.error?.contains("--rebuild-index") == true, "\(alone.output)")
    }

    static func object(_ result: StrataCommand.Result) throws -> [String: Any] {
        try #require(result.status == 0, "\(result.output)")
        let line = try #require(result.lines.last)
        return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    }

    static func items(_ result: StrataCommand.Result) throws -> [(name: String, score: Double)] {
        let items = try #require(try object(result)["items"] as? [[String: Any]])
        return items.map { ($0["item"] as? String ?? "?", $0["score"] as? Double ?? .nan) }
    }

    /// One more checkpoint of the same model: the store's generation moves on.
    static func checkpointAgain(_ path: String) throws {
        let s = try Store(path: path, options: .small(TierBudget(hotBytes: 1 << 20, warmBytes: 0)))
        try s.checkpoint(payload: s.lastCheckpoint.payload)
        try s.close()
    }
}
