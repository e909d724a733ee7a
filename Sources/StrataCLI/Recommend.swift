import ArgumentParser
import Foundation
import StrataModels
import StrataStore
import StrataTraining

/// `strata recommend`: the top-K items for a user from a trained store.
struct Recommend: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The best items for a user, from the model a store's last checkpoint holds.",
        discussion: """
            Scores every item of the data for the user with the trained model (reading the store, \
            changing nothing; a model trained on histories, --protocol next-item, reads the user's \
            whole history, in time order), leaves out the items the user has interacted with in the \
            data (any split), and prints the K best with their scores. Give the data as it was given to \
            `strata train` (the same --data, --schema, --protocol and --cross): its features must be \
            the ones the model was trained on.
            """)

    @OptionGroup var access: StoreAccess
    @OptionGroup var input: DataOptions
    @Option(help: "The user, as the data writes its id.") var user: String
    @Option(name: [.customShort("k"), .long], parsing: .unconditional, help: "How many items.") var count = 10
    @Option(help: "A column of the items to show beside each (default: the item id).") var show: String?
    @Flag(help: "Also rank the items the user has already interacted with.") var includeSeen = false
    @Flag(help: "Print one JSON object.") var json = false

    func validate() throws {
        try OptionCheck.whole(count, "--count", 1...100_000)
    }

    func run() throws {
        let store = try access.openForReading()
        defer { try? store.close() }
        let model = try TrainedModel(store: store)
        let loaded = try input.load(seed: model.options.seed, label: model.options.label)
        guard let table = loaded.table, let interactions = loaded.training.interactions else {
            throw ToolError("recommending needs data that names its users and items (movielens, or table: data whose schema has \"user\" and \"item\")")
        }
        guard loaded.schema == model.options.schema else {
            throw ToolError("the data's features (\(loaded.schema.summary)) are not the model's (\(model.options.schema.summary)): give --data, --schema, --protocol and --cross as for training")
        }
        let userFeature = table.schema.categorical[interactions.users.idFeature]
        let key = Array(user.utf8).withUnsafeBufferPointer {
            FeatureSchema.key(namespace: FeatureSchema.namespace(userFeature.table), value: FeatureSchema.valueHash($0))
        }
        guard let u = interactions.users.entity(id: key) else {
            throw ToolError("--user \(user): no such user in the data's column '\(userFeature.name)'")
        }
        var scores: [Float]
        if model.options.schema.sequence != nil {
            // A model of histories reads the user's whole history, in time order.
            if model.network.scoresItems { try model.network.setCandidates(interactions.items.ids) }
            let evaluator = try NextItemEvaluator(interactions, split: .test, k: count, historyLength: input.history)
            scores = try evaluator.scores(user: u, network: model.network, step: model.step)
        } else {
            scores = try RankingEvaluator(interactions, split: .test, k: count).scores(user: u, network: model.network, step: model.step)
        }
        let seen = Interactions.Split.allCases.flatMap { interactions.items(of: u, in: $0) }
        if !includeSeen { for i in seen { scores[Int(i)] = -.infinity } }
        let top = scores.withUnsafeBufferPointer { RankingMetrics.top(count, of: $0) }
        let names: [UInt64: String]
        do {
            names = try table.itemText(column: show)
        } catch {
            throw show.map { ToolError("--show \($0): \(error)") } ?? error
        }
        let rows = top.map { i -> (name: String, score: Float) in
            (names[interactions.items.ids[Int(i)]] ?? "?", scores[Int(i)])
        }
        if json {
            try printJSON(["user": user, "model": model.options.model.name, "step": model.step, "seen": seen.count,
                           "items": rows.map { ["item": $0.name, "score": Double($0.score)] }])
            return
        }
        print("\(rows.count) items for user \(user) by \(model.options.model.name) at step \(model.step)"
              + (includeSeen ? "" : ", leaving out the \(Set(seen).count) they have seen") + ":")
        for (rank, row) in rows.enumerated() {
            print(String(format: "%4d  %@  %@", rank + 1, String(format: "%.5f", row.score), row.name))
        }
    }
}
