import Testing
import Foundation
@_spi(Testing) import StrataStore

@Test func smoke() throws {
    let dir = NSTemporaryDirectory() + "strata-smoke-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var options = Store.Options()
    options.budget = TierBudget(hotBytes: 4 * 1024, warmBytes: 8 * 1024)
    var store = try Store(path: dir, options: options)
    let spec = TableSpec(dimension: 4, initializer: .init(.uniform(low: -1, high: 1), seed: 7), optimizer: .rowwiseAdagrad(learningRate: 0.1))
    let t = try store.createTable("items", spec)
    let keys: [UInt64] = Array(0..<200)
    let before = try t.lookup(keys)
    try t.applyGradients(keys, [Float](repeating: 0.5, count: keys.count * 4))
    let after = try t.lookup(keys)
    #expect(before != after)
    t.checkInvariants()
    let s = try t.statistics()
    print(s)
    try store.checkpoint(payload: [1, 2, 3])
    t.checkInvariants()
    let again = try t.lookup(keys)
    #expect(again == after)
    try store.close()
    store = try Store(path: dir, options: options)
    let t2 = try store.table("items")
    #expect(try t2.peek(keys) == after)
    #expect(try t2.lookup(keys) == after)
    #expect(store.lastCheckpoint.payload == [1, 2, 3])
    print(try t2.statistics())
    t2.checkInvariants()
}
