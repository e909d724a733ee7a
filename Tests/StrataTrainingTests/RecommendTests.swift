// `strata recommend`: a user's top K items from a store trained on MovieLens-100K. The list
// leaves out every item the user has rated (in any split), holds K distinct items ranked by
// score as the model computes them, and leaves the store exactly as it was; a user the data
// does not have, or data with other features than the model's, is refused.
import Foundation
import StrataModels
import StrataStore
import StrataTestSupport
import StrataTraining
import Testing

@Suite struct RecommendTests {
    /// A model that scores the catalog from one query, trained on data without histories (two-tower
    /// on the top-K protocol), recommends too: it is given the catalog as its candidates.
    @Test func aModelScoringItemsRecommendsOnTopK() throws {
        let directory = temporaryDirectory("strata-recommend-two-tower")
        defer { removeDirectory(directory) }
        let store = directory + "/store"
        let data = "movielens:" + MovieLens.directory
        let trained = try StrataCommand.run(["train", "--model", "two-tower", "--set", "embedding_dim=8", "--set", "tower=[8]",
                                             "--data", data, "--protocol", "topk", "--loss", "softmax", "--negatives", "16",
                                             "--store", store, "--batch-size", "256", "--steps", "20", "--eval-samples", "0"])
        try #require(trained.status == 0, "\(trained.output)")
        let result = try StrataCommand.run(["recommend", store, "--data", data, "--protocol", "topk", "--user", "196", "-k", "5", "--json"])
        try #require(result.status == 0, "\(result.output)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.lines.last!.utf8)) as? [String: Any])
        let items = try #require(object["items"] as? [[String: Any]])
        #expect(Set(items.compactMap { $0["item"] as? String }).count == 5, "\(items)")
    }

    @Test func recommendsUnseenItemsWithoutChangingTheStore() throws {
        let directory = temporaryDirectory("strata-recommend")
        defer { removeDirectory(directory) }
        let store = directory + "/store"
        let data = "movielens:" + MovieLens.directory
        let trained = try StrataCommand.run(["train", "--model", "mf", "--set", "biases=false", "--data", data, "--protocol", "topk",
                                             "--store", store, "--embedding-dim", "16", "--batch-size", "512", "--steps", "60",
                                             "--optimizer", "adam", "--learning-rate", "0.01", "--eval-samples", "0"])
        try #require(trained.status == 0, "\(trained.output)")
        let before = try Self.capture(store)

        let result = try StrataCommand.run(["recommend", store, "--data", data, "--user", "196", "-k", "20", "--json"])
        try #require(result.status == 0, "\(result.output)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.lines.last!.utf8)) as? [String: Any])
        let items = try #require(object["items"] as? [[String: Any]])
        let names = items.compactMap { $0["item"] as? String }, scores = items.compactMap { $0["score"] as? Double }
        #expect(names.count == 20 && Set(names).count == 20, "\(names)")
        #expect(scores == scores.sorted(by: >), "ranked by score: \(scores)")

        // Every item user 196 rated, from the file itself.
        let text = try String(contentsOfFile: MovieLens.directory + "/ml-100k.inter", encoding: .utf8)
        let rated = Set(text.split(separator: "\n").dropFirst().compactMap { line -> String? in
            let fields = line.split(separator: "\t")
            return fields.first == "196" ? String(fields[1]) : nil
        })
        #expect(rated.count == 39 && object["seen"] as? Int == 39)
        #expect(rated.isDisjoint(with: names), "recommended items the user rated: \(rated.intersection(names))")

        // The scores are the model's: the top item's score equals the store's user and item rows'
        // dot product.
        let s = try Store(path: store, options: .small(TierBudget(hotBytes: 1 << 20, warmBytes: 0)))
        let model = try TrainedModel(store: s)
        let userRow = try s.table("user").peek([Self.key("196", table: "user")])
        let itemRow = try s.table("item").peek([Self.key(names[0], table: "item")])
        try s.close()
        _ = model
        let dot = zip(userRow, itemRow).reduce(Float(0)) { $0 + $1.0 * $1.1 }
        #expect(abs(Double(dot) - scores[0]) <= 1e-5 * max(1, abs(scores[0])), "score \(scores[0]), rows' dot product \(dot)")

        // With --include-seen, rated items may come back; the unseen ranking is a subsequence.
        let all = try StrataCommand.run(["recommend", store, "--data", data, "--user", "196", "-k", "100", "--json", "--include-seen"])
        try #require(all.status == 0, "\(all.output)")
        let allNames = ((try JSONSerialization.jsonObject(with: Data(all.lines.last!.utf8)) as? [String: Any])?["items"]
            as? [[String: Any]])?.compactMap { $0["item"] as? String } ?? []
        #expect(allNames.filter { !rated.contains($0) }.prefix(20).elementsEqual(names), "the unseen order differs")

        // Titles from the items' side table.
        let titled = try StrataCommand.run(["recommend", store, "--data", data, "--user", "196", "-k", "3", "--show", "movie_title"])
        #expect(titled.status == 0 && titled.lines.count == 4, "\(titled.output)")

        let after = try Self.capture(store)
        let diff = after.differences(from: before), same = diff.isEmpty
        #expect(same, "recommend changed the store:\n\(diff.joined(separator: "\n"))")
    }

    /// A next-item model recommends from the user's whole history in time order: its scores are
    /// the network's for that history (computed here in process, the history's items looked up
    /// from the file), and the items the user had are left out.
    @Test func aNextItemModelRecommendsAfterTheWholeHistory() throws {
        let directory = temporaryDirectory("strata-recommend-next")
        defer { removeDirectory(directory) }
        let store = directory + "/store"
        let data = "movielens:" + MovieLens.directory
        let trained = try StrataCommand.run(["train", "--model", "gru4rec", "--data", data, "--protocol", "next-item",
                                             "--store", store, "--set", "embedding_dim=8", "--set", "hidden_size=8",
                                             "--set", "max_length=5", "--batch-size", "256", "--steps", "20", "--eval-samples", "0"])
        try #require(trained.status == 0, "\(trained.output)")
        let before = try Self.capture(store)
        let result = try StrataCommand.run(["recommend", store, "--data", data, "--protocol", "next-item", "--user", "196",
                                            "-k", "5", "--json"])
        try #require(result.status == 0, "\(result.output)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.lines.last!.utf8)) as? [String: Any])
        let items = try #require(object["items"] as? [[String: Any]])
        let names = items.compactMap { $0["item"] as? String }, scores = items.compactMap { $0["score"] as? Double }
        #expect(names.count == 5 && scores == scores.sorted(by: >), "\(items)")

        // User 196's items in time order (ties in file order), from the file itself.
        let text = try String(contentsOfFile: MovieLens.directory + "/ml-100k.inter", encoding: .utf8)
        let rows = text.split(separator: "\n").dropFirst().map { $0.split(separator: "\t") }.filter { $0[0] == "196" }
        let history = rows.enumerated().sorted { (Double($0.element[3])!, $0.offset) < (Double($1.element[3])!, $1.offset) }
            .map { String($0.element[1]) }
        #expect(Set(history).isDisjoint(with: names), "recommended items the user had")

        // The same scores in process: the trained network on a one-row batch of the last 5 items.
        let s = try Store(path: store, options: .small(TierBudget(hotBytes: 1 << 20, warmBytes: 0)))
        defer { try? s.close() }
        let model = try TrainedModel(store: s)
        let schema = model.options.schema
        let ids = try MovieLens.data(.nextItem).interactions!.items.ids
        try model.network.setCandidates(ids)
        let batch = Batch(schema: schema)
        // The user's and item's other features: the query reads none of them.
        var keys = schema.categorical.prefix(schema.readFeatures).map { [[FeatureSchema.missingKey(table: $0.table)]] }
        keys[schema.categoricalIndex("user_id")!] = [[Self.key("196", table: "user")]]
        keys[schema.categoricalIndex("item_id")!] = [[ids[0]]]
        keys[schema.categoricalIndex("history")!] = [history.suffix(5).map { Self.key($0, table: "item") }]
        batch.set(rows: 1, labels: [Float](repeating: 0, count: schema.labels.count), dense: [Float](repeating: 0, count: schema.dense.count), keys: keys)
        let out = try model.network.forward(batch, training: false, step: model.step)
        let top = ids.firstIndex(of: Self.key(names[0], table: "item"))!
        #expect(abs(Double(out.data[top]) - scores[0]) <= 1e-6 * max(1, abs(scores[0])), "in process \(out.data[top]), recommend \(scores[0])")
        try s.close()
        let after = try Self.capture(store)
        #expect(after.differences(from: before).isEmpty, "recommend changed the store")
    }

    @Test func refusesWhatItCannotAnswer() throws {
        let directory = temporaryDirectory("strata-recommend-refusals")
        defer { removeDirectory(directory) }
        let store = directory + "/store"
        let data = "movielens:" + MovieLens.directory
        let trained = try StrataCommand.run(["train", "--model", "mf", "--data", data, "--store", store, "--steps", "2",
                                             "--embedding-dim", "4"])
        try #require(trained.status == 0, "\(trained.output)")
        let unknown = try StrataCommand.run(["recommend", store, "--data", data, "--user", "no-such-user"])
        #expect(unknown.status != 0 && unknown.error?.contains("no-such-user") == true, "\(unknown.output)")
        let crossed = try StrataCommand.run(["recommend", store, "--data", data, "--cross", "gender,class", "--user", "1"])
        #expect(crossed.status != 0 && crossed.error?.contains("not the model's") == true, "\(crossed.output)")
        let empty = directory + "/empty"
        _ = try Store(path: empty, options: .small(TierBudget(hotBytes: 1 << 16, warmBytes: 0))).close()
        let untrained = try StrataCommand.run(["recommend", empty, "--data", data, "--user", "1"])
        #expect(untrained.status != 0 && untrained.error?.contains("no training run") == true, "\(untrained.output)")
    }

    static func key(_ value: String, table: String) -> UInt64 {
        Array(value.utf8).withUnsafeBufferPointer { FeatureSchema.key(namespace: FeatureSchema.namespace(table), value: FeatureSchema.valueHash($0)) }
    }

    static func capture(_ path: String) throws -> TrainedState {
        let store = try Store(path: path, options: .small(TierBudget(hotBytes: 1 << 20, warmBytes: 0)))
        defer { try? store.close() }
        return try TrainedState.capture(store)
    }
}
