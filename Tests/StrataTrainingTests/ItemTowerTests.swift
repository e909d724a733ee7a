// Two-tower's item tower: an item's vector is an MLP over its id and the item side's features,
// run over the candidates' rows of features (`Network.candidateRows`). A candidate's scores
// follow its own features and no other candidate's; candidates without their rows are refused;
// a value of one graph is no input of the other; and `recommend --retrieve` refuses a tower,
// whose vectors no table holds. Learning, budgets, threads and the SIGKILL resume run in the
// zoo's tests (`ZooCase` "two-tower" with `item_tower`).
import Foundation
import StrataModels
import StrataNN
import StrataStore
import StrataTestSupport
import Testing

@Suite(.serialized) struct ItemTowerTests {
    init() { Parallel.threads = 1 }

    static let schema = FeatureSchema(
        categorical: [.init("user", side: .user), .init("item", side: .item), .init("genre", side: .item)],
        labels: [], user: "user", item: "item")

    static func network(_ scratch: ScratchStore) throws -> Network {
        let spec = try ModelRegistry.spec("two-tower", settings: ["embedding_dim": 4, "tower": [8], "item_tower": [8]])
        return try Network(spec: spec, schema: schema, seed: 3) { request in
            try scratch.table(request.name, dimension: request.dimension, seed: 1, range: 0.5)
        }
    }

    /// Writes candidate rows of `items` with `genres` and makes them the candidates.
    static func setCandidates(_ network: Network, _ items: [UInt64], genres: [UInt64]) throws {
        let rows = try #require(network.candidateRows)
        rows.set(rows: items.count, labels: [], dense: [], keys: [items.map { _ in [0] }, items.map { [$0] }, genres.map { [$0] }])
        try network.setCandidates(items)
    }

    static func scores(_ network: Network, users: [UInt64]) throws -> Tensor {
        let b = Batch(schema: schema)
        b.set(rows: users.count, labels: [], dense: [], keys: [users.map { [$0] }, users.map { _ in [1] }, users.map { _ in [7] }])
        return try network.forward(b, training: false, step: 1)
    }

    /// Changing candidate 2's genre changes its column of scores and leaves every other column's
    /// bits; the same features give the same bits again.
    @Test func eachCandidatesScoresFollowItsOwnFeatures() throws {
        let scratch = try ScratchStore("strata-item-tower")
        let network = try Self.network(scratch)
        let items: [UInt64] = [11, 12, 13, 14], users: [UInt64] = [1, 2, 3]
        try Self.setCandidates(network, items, genres: [100, 100, 101, 102])
        let a = try Self.scores(network, users: users).values
        try Self.setCandidates(network, items, genres: [100, 100, 109, 102])
        let b = try Self.scores(network, users: users).values
        for r in users.indices {
            for c in items.indices {
                let (x, y) = (a[r * items.count + c], b[r * items.count + c])
                if c == 2 { #expect(x != y, "user \(r): candidate 2's score did not follow its genre") } else {
                    #expect(x.bitPattern == y.bitPattern, "user \(r), candidate \(c): \(x) became \(y)")
                }
            }
        }
        try Self.setCandidates(network, items, genres: [100, 100, 101, 102])
        #expect(try Self.scores(network, users: users).values.map(\.bitPattern) == a.map(\.bitPattern))
    }

    /// Candidates whose rows are missing, too few or of other items are refused by name.
    @Test func candidatesWithoutTheirRowsAreRefused() throws {
        let scratch = try ScratchStore("strata-item-tower")
        let network = try Self.network(scratch)
        #expect(throws: ModelError.self) { try network.setCandidates([11, 12]) }
        let rows = try #require(network.candidateRows)
        rows.set(rows: 2, labels: [], dense: [], keys: [[[0], [0]], [[11], [12]], [[100], [100]]])
        var message = "accepted"
        do { try network.setCandidates([11, 13]) } catch { message = "\(error)" }
        #expect(message.contains("candidate 1 is item key 13"), "candidates of other items than their rows: \(message)")
        #expect(throws: ModelError.self) { try network.setCandidates([11, 12, 13]) }
        try network.setCandidates([11, 12])
    }
}
