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

            With --retrieve N, only N candidates are scored: a retrieval model (--retriever STORE2, or \
            STORE itself) gives the user's query vector, a next-item model (gru4rec, lstm4rec, sasrec, bert4rec, \
            two-tower without item_tower) \
            from the user's history or mf from the user's row, and the HNSW index of its item table by \
            inner product (`strata index STORE2 item --metric mips`) returns the N best items the user \
            has not seen; the ranking model in STORE scores those. The retriever must have been trained \
            on the same data. An index built before the retriever's last checkpoint is stale and \
            refused; --rebuild-index builds it (also when there is none).
            """)

    @OptionGroup var access: StoreAccess
    @OptionGroup var input: DataOptions
    @Option(help: "The user, as the data writes its id.") var user: String
    @Option(name: [.customShort("k"), .long], parsing: .unconditional, help: "How many items.") var count = 10
    @Option(help: "A column of the items to show beside each (default: the item id).") var show: String?
    @Flag(help: "Also rank the items the user has already interacted with.") var includeSeen = false
    @Flag(help: "Print one JSON object.") var json = false
    @Option(parsing: .unconditional, help: "Score only this many candidates, retrieved by the index of the retriever's item table.")
    var retrieve: Int?
    @Option(help: "The store of the retrieval model (gru4rec, lstm4rec, sasrec, bert4rec, two-tower without item_tower, or mf) for --retrieve (default: STORE).")
    var retriever: String?
    @Flag(help: "With --retrieve: build the retriever's index first (when it is stale or missing).") var rebuildIndex = false
    @Option(help: "A multi-task model: the task (a label it was trained on with --task) whose prediction ranks the items.")
    var task: String?

    func validate() throws {
        try OptionCheck.whole(count, "--count", 1...100_000)
        if let retrieve {
            try OptionCheck.whole(retrieve, "--retrieve", 1...1_000_000)
            try OptionCheck.require(retrieve >= count, "--retrieve \(retrieve) is fewer candidates than the \(count) items asked for (--count)")
        } else {
            if let retriever { throw ValidationError("--retriever \(retriever) is for --retrieve N, which is not given") }
            try OptionCheck.require(!rebuildIndex, "--rebuild-index is for --retrieve N, which is not given")
        }
    }

    func run() throws {
        let store = try access.openForReading()
        defer { try? store.close() }
        let model = try TrainedModel(store: store)
        let loaded = try input.load(seed: model.options.seed, tasks: model.options.tasks, label: model.options.label)
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
        let tasks = model.network.tasks
        let column: Int
        if let task {
            guard tasks.count > 1, let t = tasks.firstIndex(of: task) else {
                throw ToolError(tasks.count > 1 ? "--task \(task): model \(model.options.model.name) predicts \(tasks.joined(separator: ", "))"
                                : "--task \(task): model \(model.options.model.name) predicts one value a row; --task is for multi-task models")
            }
            column = t
        } else {
            guard tasks.count == 1 else {
                throw ToolError("model \(model.options.model.name) predicts \(tasks.joined(separator: ", ")): give --task with the one to rank by")
            }
            column = 0
        }
        let seen = Interactions.Split.allCases.flatMap { interactions.items(of: u, in: $0) }
        var retrieval: (retriever: Retriever, foreign: Int)?
        // The items scored, in catalog order, or the retrieved candidates, best first.
        var items: [Int32]?
        var retrieverStore: Store?
        defer { try? retrieverStore?.close() }
        if let retrieve {
            let (r, own) = try openRetriever(store: store, model: model, interactions: interactions)
            retrieverStore = own
            let found = try r.candidates(try r.query(user: u, key: key), count: retrieve, seen: includeSeen ? [] : Set(seen),
                                         catalog: interactions.items)
            retrieval = (r, found.foreign)
            items = found.items
        }
        var scores: [Float]
        // A model that scores items ranks the catalog (re-ranking gives it its own candidates).
        if model.network.scoresItems { try interactions.setCandidates(of: model.network, interactions.items.ids) }
        if model.options.schema.sequence != nil {
            // A model of histories reads the user's whole history, in time order.
            let evaluator = try NextItemEvaluator(interactions, split: .test, k: count, historyLength: input.history)
            if let items {
                scores = try evaluator.scores(user: u, items: items, network: model.network, step: model.step)
            } else {
                scores = try evaluator.scores(user: u, network: model.network, step: model.step)
            }
        } else {
            let evaluator = RankingEvaluator(interactions, split: .test, k: count)
            scores = try items.map { try evaluator.scores(user: u, items: $0, network: model.network, step: model.step, task: column) }
                ?? evaluator.scores(user: u, network: model.network, step: model.step, task: column)
        }
        if !includeSeen && items == nil { for i in seen { scores[Int(i)] = -.infinity } }
        // Positions in `scores`; the items they are, of the catalog.
        let best = scores.withUnsafeBufferPointer { RankingMetrics.top(count, of: $0) }
        let names: [UInt64: String]
        do {
            names = try table.itemText(column: show)
        } catch {
            throw show.map { ToolError("--show \($0): \(error)") } ?? error
        }
        let rows = best.map { p -> (name: String, score: Float) in
            (names[interactions.items.ids[Int(items?[Int(p)] ?? p)]] ?? "?", scores[Int(p)])
        }
        if json {
            var object: [String: Any] = ["user": user, "model": model.options.model.name, "step": model.step, "seen": seen.count,
                                         "items": rows.map { ["item": $0.name, "score": Double($0.score)] }]
            if let retrieval, let items {
                let r = retrieval.retriever
                object["retrieval"] = ["retriever": r.model.options.model.name, "step": r.model.step, "candidates": items.count,
                                       "not_in_data": retrieval.foreign, "index": r.indexPath,
                                       "generation": r.index.origin?.generation ?? 0]
            }
            try printJSON(object)
            return
        }
        print("\(rows.count) items for user \(user) by \(model.options.model.name) at step \(model.step)"
              + (includeSeen ? "" : ", leaving out the \(Set(seen).count) they have seen") + ":")
        if let retrieval, let items {
            let r = retrieval.retriever
            print("  of \(items.count) candidates retrieved by \(r.model.options.model.name) at step \(r.model.step) through \(r.indexPath)"
                  + (retrieval.foreign > 0 ? " (\(retrieval.foreign) of the index's items are not the data's)" : ""))
        }
        for (rank, row) in rows.enumerated() {
            print(String(format: "%4d  %@  %@", rank + 1, String(format: "%.5f", row.score), row.name))
        }
    }

    /// The retriever of --retrieve: in --retriever's store (returned, to be closed), or
    /// STORE's own model.
    private func openRetriever(store: Store, model: TrainedModel, interactions: Interactions) throws -> (Retriever, Store?) {
        let path = retriever.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        guard let retriever, path != URL(fileURLWithPath: store.path).standardizedFileURL.path else {
            return (try Retriever(store: store, model: model, interactions: interactions, historyLength: input.history,
                                  rebuild: rebuildIndex), nil)
        }
        var other = access
        other.store = retriever
        let rstore: Store, rmodel: TrainedModel
        do {
            rstore = try other.openForReading()
            rmodel = try TrainedModel(store: rstore)
        } catch {
            throw ToolError("--retriever \(retriever): \(error)")
        }
        do {
            return (try Retriever(store: rstore, model: rmodel, interactions: interactions, historyLength: input.history,
                                  rebuild: rebuildIndex), rstore)
        } catch {
            try? rstore.close()
            throw error
        }
    }
}
