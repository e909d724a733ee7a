// `strata recommend --retrieve N`: candidate generation. A retrieval model turns the user
// into a query vector whose inner product with an item's row is the item's score; the HNSW
// index of its item table by inner product (mips: trained item rows differ in norm, which a
// graph linked by the plain inner product handles badly) returns the N best unseen items; the
// ranking model scores only those. Retrievers are the models whose item score is exactly that inner product: the
// next-item models (their query is the network's output after the user's history) and MF
// (the user's row; with biases, the item bias is not in the index).
import Foundation
import StrataModels
import StrataNeighbors
import StrataStore
import StrataTraining

struct Retriever {
    enum Kind {
        /// gru4rec, lstm4rec, sasrec, bert4rec, two-tower: the query is the network's output after the history.
        case nextItem(NextItemEvaluator)
        /// mf: the query is the user's row of this table.
        case factorisation(userTable: Table)
    }

    let model: TrainedModel
    let kind: Kind
    let itemTable: Table
    let index: NeighborIndex
    /// Where the index is, for the output.
    let indexPath: String

    /// The retriever in `store` (holding `model`) for data `interactions` (what the ranker
    /// reads): refused, saying why, when the model cannot retrieve or was
    /// trained on other users or items, and when its index is missing or stale (unless
    /// `rebuild`, which builds it first).
    init(store: Store, model: TrainedModel, interactions: Interactions, historyLength: Int, rebuild: Bool) throws {
        self.model = model
        let name = model.options.model.name, own = model.options.schema
        let retriever = "the retriever (\(name) in \(store.path))"
        // Keys are hashed in their table's namespace: the same table names mean the same keys.
        func sameTable(_ side: String, _ feature: String?, _ data: Int) throws -> String {
            let dataTable = interactions.schema.categorical[data].table
            guard let feature, let f = own.categoricalIndex(feature) else {
                throw ToolError("\(retriever) has no \(side) feature: it cannot retrieve for a user")
            }
            guard own.categorical[f].table == dataTable else {
                throw ToolError("\(retriever) reads its \(side)s from table '\(own.categorical[f].table)', the data's are keys of table "
                                + "'\(dataTable)': train the retriever on the same --data as the ranking model")
            }
            return dataTable
        }
        let itemName = try sameTable("item", own.item, interactions.items.idFeature)
        if model.network.scoresItems {
            guard model.network.candidateRows == nil else {
                throw ToolError("\(retriever) scores items by its item tower's vectors, which no table holds, so an index of its item "
                                + "table would not retrieve as it scores; retrieve with a model whose item vectors are its item table's "
                                + "rows (two-tower without item_tower, gru4rec, lstm4rec, sasrec, bert4rec, mf)")
            }
            let evaluator = try NextItemEvaluator(interactions, split: .test, historyLength: historyLength)
            guard evaluator.schema == own else {
                throw ToolError("\(retriever) was trained on features (\(own.summary)), and the data with its history has "
                                + "(\(evaluator.schema.summary)): give the --data, --schema and --cross it was trained on")
            }
            guard interactions.hasSequences else {
                throw ToolError("\(retriever) reads a user's history in time order, and the data has no time column (the schema's \"time\")")
            }
            kind = .nextItem(evaluator)
        } else if name == MatrixFactorization.name {
            let userName = try sameTable("user", own.user, interactions.users.idFeature)
            kind = .factorisation(userTable: try StoreAccess.table(store, userName))
            if model.network.tables.contains(where: { $0.name.hasSuffix(".bias") }) {
                StoreAccess.note("\(name) with biases: the index ranks by user · item alone, without the item's bias")
            }
        } else {
            throw ToolError("\(name) cannot retrieve: a retriever scores an item by the inner product of a query with the item's row "
                            + "(gru4rec, lstm4rec, sasrec, bert4rec, two-tower, mf); give --retriever a store trained with one of them")
        }
        itemTable = try StoreAccess.table(store, itemName)
        index = try SavedIndex.open(store, itemTable, metric: .mips, rebuild: rebuild, buildMissing: false, rebuildFlag: "--rebuild-index")
        indexPath = NeighborIndex.files(store: store.path, table: itemName, metric: .mips).index
    }

    /// User `u`'s query (`key` is the user's key).
    func query(user u: Int, key: UInt64) throws -> [Float] {
        switch kind {
        case .nextItem(let evaluator):
            return try evaluator.query(user: u, network: model.network, step: model.step)
        case .factorisation(let users):
            guard try users.row(key).placement != .initial else {
                throw ToolError("the retriever's table '\(users.name)' has no row of this user: it was not trained on them")
            }
            return try users.peek([key])
        }
    }

    /// The `count` best items of the catalog for `query` by the index, best first, leaving out
    /// `seen`; and how many of the keys the index returned are not items of the data.
    func candidates(_ query: [Float], count: Int, seen: Set<Int32>, catalog: SideCatalog) throws -> (items: [Int32], foreign: Int) {
        guard query.count == index.dimension else {
            throw ToolError("the retriever's query has \(query.count) values, its index \(indexPath) rows of \(index.dimension)")
        }
        // Seen items come back too and are dropped: ask for enough to leave `count` (and one
        // more: a bert4rec item table holds the mask's row, which is no item).
        let k = min(index.rows, count + seen.count + 1)
        guard k > 0 else { return ([], 0) }
        let found = try index.search(query, k: k)[0]
        var items: [Int32] = [], foreign = 0
        items.reserveCapacity(count)
        for hit in found where items.count < count && hit.key != ClozeMasking.maskKey {
            guard let i = catalog.entity(id: hit.key) else {
                foreign += 1
                continue
            }
            if !seen.contains(Int32(i)) { items.append(Int32(i)) }
        }
        if items.isEmpty && foreign > 0 {
            throw ToolError("none of the \(found.count) items the index \(indexPath) returned is an item of the data: "
                            + "the retriever was trained on other data than the ranking model")
        }
        return (items, foreign)
    }
}
