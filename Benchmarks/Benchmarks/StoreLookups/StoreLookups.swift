// Batch lookups and updates against each tier of a Strata table, beside a flat-array gather
// of the same rows.
//
// Every benchmark works on one table: dimension 64, float32, row-wise Adagrad, `rowCount`
// rows (keys 0..<rowCount). One iteration is one batch of 1024 distinct keys; the batches
// are slices of a fixed random permutation of the keys, used in turn, so a cycle of
// `rowCount / 1024` batches touches every row once and the rows touched are spread over the
// whole table (and far beyond the CPU caches).
//
// Fixtures are built in each benchmark's setup closure, in a fresh temporary directory, and
// torn down (store closed, directory removed) after it.
import Benchmark
import Foundation
import StrataStore

// MARK: Shape of the workload

let dimension = 64
let batchSize = 1024
/// 256 Ki rows: 74 MiB of records, 64 MiB of raw float32 values for the flat baseline.
let rowCount = 1 << 18
let spec = TableSpec(dimension: dimension, initializer: .init(.uniform(low: -0.05, high: 0.05), seed: 7),
                     optimizer: .rowwiseAdagrad(learningRate: 0.01))
/// Bytes of one stored row of `spec`: 32 header + 4 × (64 values + 1 accumulator), rounded to 8.
let recordBytes = 320  // dimension 64 and row-wise Adagrad: values, state and header, padded to 64
/// Room for every row, with the shards' hash imbalance to spare.
let roomyBytes = 2 * rowCount * recordBytes
/// 256 rows: the smallest hot tier the table will take without complaint, so almost all rows
/// live elsewhere.
let tinyBytes = 256 * recordBytes

// MARK: Deterministic inputs

/// The batches of keys, each `batchSize` distinct keys, together covering every row once.
let keyBatches: [[UInt64]] = {
    var rng = SplitMix64(seed: 42)
    var keys = (0..<UInt64(rowCount)).map { $0 }
    keys.shuffle(using: &rng)
    return stride(from: 0, to: rowCount, by: batchSize).map { Array(keys[$0..<$0 + batchSize]) }
}()

/// Small gradients for one batch, so repeated steps keep the rows finite and moving.
func makeGradients(seed: UInt64) -> [Float] {
    var rng = SplitMix64(seed: seed)
    return (0..<batchSize * dimension).map { _ in Float(Int64(bitPattern: rng.next() >> 40) - (1 << 23)) * 0x1p-30 }
}

// MARK: Fixtures

enum FixtureError: Error, CustomStringConvertible {
    case placement(String)
    var description: String {
        switch self { case .placement(let s): s }
    }
}

/// One store in its own temporary directory, plus the buffers a batch needs.
final class StoreFixture: @unchecked Sendable {
    let directory: String
    var store: Store
    var table: Table
    var output: [Float]
    var gradients: [Float]
    var next = 0

    init(budget: TierBudget) throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("strata-bench-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var options = Store.Options()
        options.budget = budget
        store = try Store(path: directory + "/store", options: options)
        table = try store.createTable("items", spec)
        output = [Float](repeating: 0, count: batchSize * dimension)
        gradients = makeGradients(seed: 1)
    }

    /// Gives every row one optimizer step, so that all of them are written rows (a row never
    /// written is dropped, not demoted, when it leaves hot).
    func writeAllRows() throws {
        for (b, keys) in keyBatches.enumerated() {
            let g = makeGradients(seed: UInt64(b) + 100)
            try table.applyGradients(keys, g)
        }
    }

    /// Checkpoints, closes and reopens the store with `budget`, leaving the rows in LMDB alone.
    func reopen(budget: TierBudget, mapResidentBytes: Int? = nil) throws {
        try store.checkpoint()
        try store.close()
        var options = Store.Options()
        options.budget = budget
        options.create = false
        if let mapResidentBytes { options.mapResidentBytes = mapResidentBytes }
        store = try Store(path: directory + "/store", options: options)
        table = try store.table("items")
    }

    func expect(_ what: String, _ ok: (TableStatistics.Rows) -> Bool) throws {
        let rows = try table.statistics().rows
        guard ok(rows) else {
            throw FixtureError.placement("\(what): hot \(rows.hot), warm \(rows.warm), spill \(rows.spill), cold \(rows.cold)")
        }
    }

    /// The next batch of keys, round-robin.
    func nextKeys() -> [UInt64] {
        defer { next = next + 1 == keyBatches.count ? 0 : next + 1 }
        return keyBatches[next]
    }

    func tearDown() {
        try? store.close()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Every row in hot; warm unused.
func hotFixture() throws -> StoreFixture {
    let f = try StoreFixture(budget: TierBudget(hotBytes: roomyBytes, warmBytes: 0))
    try f.writeAllRows()
    try f.expect("all rows hot") { $0.hot == rowCount && $0.warm == 0 }
    return f
}

/// A 256-row hot tier; every other row in warm (memory-mapped slots, checksummed on read).
func warmFixture() throws -> StoreFixture {
    let f = try StoreFixture(budget: TierBudget(hotBytes: tinyBytes, warmBytes: roomyBytes))
    try f.writeAllRows()
    try f.expect("rows warm") { $0.hot <= 256 && $0.hot + $0.warm == rowCount && $0.spill == 0 }
    return f
}

/// Rows only in LMDB: written, checkpointed, closed, reopened with a 256-row hot tier and no
/// warm tier. Peeks read LMDB and decode the values, moving nothing.
///
/// By default the store drops LMDB's map pages from its resident set after every 64 MiB read
/// through it (`Store.Options.mapResidentBytes`; a cold read counts its bytes plus a page), so
/// every ~15 batches the next reads page-fault the map back in. `mapResident: true` raises
/// that budget past the file's size, which leaves the B-tree walk and decode alone.
func coldFixture(mapResident: Bool = false) throws -> StoreFixture {
    let f = try StoreFixture(budget: TierBudget(hotBytes: roomyBytes, warmBytes: 0))
    try f.writeAllRows()
    try f.reopen(budget: TierBudget(hotBytes: tinyBytes, warmBytes: 0), mapResidentBytes: mapResident ? 1 << 40 : nil)
    try f.expect("rows cold") { $0.cold == rowCount && $0.hot == 0 && $0.warm == 0 }
    return f
}

/// The baseline: the same rows as plain float32 values in one array, gathered by id.
final class FlatFixture: @unchecked Sendable {
    var values: [Float]
    var output: [Float]
    var next = 0

    init() {
        var rng = SplitMix64(seed: 9)
        values = (0..<rowCount * dimension).map { _ in Float(rng.next() >> 40) * 0x1p-24 }
        output = [Float](repeating: 0, count: batchSize * dimension)
    }

    func nextKeys() -> [UInt64] {
        defer { next = next + 1 == keyBatches.count ? 0 : next + 1 }
        return keyBatches[next]
    }
}

/// Lets a teardown closure reach what its setup made.
final class Holder<T>: @unchecked Sendable {
    var value: T?
}

// MARK: Benchmarks

let benchmarks: @Sendable () -> Void = {
    // One iteration = one batch of 1024 keys: throughput is batches per second, the time
    // metrics are per batch (divide by 1024 for per row). Each benchmark stops at whichever
    // limit comes first; the whole suite takes about a minute after setup.
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        warmupIterations: 20,
        scalingFactor: .one,
        maxDuration: .seconds(6),
        maxIterations: 20_000)

    /// A read benchmark: `lookup` (moves rows to hot) or `peek` (read-only) over a fixture.
    func reads(_ name: String, peek: Bool, _ fixture: @escaping @Sendable () throws -> StoreFixture) {
        let holder = Holder<StoreFixture>()
        Benchmark(name) { (benchmark: Benchmark, f: StoreFixture) in
            for _ in benchmark.scaledIterations {
                let keys = f.nextKeys()
                try keys.withUnsafeBufferPointer { k in
                    try f.output.withUnsafeMutableBufferPointer { o in
                        if peek { try f.table.peek(k, into: o) } else { try f.table.lookup(k, into: o) }
                    }
                }
                blackHole(f.output[0])
            }
        } setup: {
            holder.value = try fixture()
            return holder.value!
        } teardown: {
            holder.value?.tearDown()
            holder.value = nil
        }
    }

    reads("Hot lookup (1024 keys, dim 64)", peek: false) { try hotFixture() }
    reads("Warm peek (1024 keys, dim 64)", peek: true) { try warmFixture() }
    reads("Cold peek (1024 keys, dim 64)", peek: true) { try coldFixture() }
    reads("Cold peek, LMDB map kept resident (1024 keys, dim 64)", peek: true) { try coldFixture(mapResident: true) }

    let update = Holder<StoreFixture>()
    Benchmark("Hot applyGradients (1024 keys, dim 64, row-wise Adagrad)") { (benchmark: Benchmark, f: StoreFixture) in
        for _ in benchmark.scaledIterations {
            let keys = f.nextKeys()
            try keys.withUnsafeBufferPointer { k in
                try f.gradients.withUnsafeBufferPointer { g in try f.table.applyGradients(k, g) }
            }
        }
    } setup: {
        update.value = try hotFixture()
        return update.value!
    } teardown: {
        try update.value?.expect("rows still hot after updates") { $0.hot == rowCount }
        update.value?.tearDown()
        update.value = nil
    }

    Benchmark("Flat array gather (1024 ids, dim 64, baseline)") { (benchmark: Benchmark, f: FlatFixture) in
        for _ in benchmark.scaledIterations {
            let keys = f.nextKeys()
            f.values.withUnsafeBufferPointer { v in
                f.output.withUnsafeMutableBufferPointer { o in
                    let source = v.baseAddress!, target = o.baseAddress!
                    for i in 0..<keys.count {
                        (target + i * dimension).update(from: source + Int(keys[i]) * dimension, count: dimension)
                    }
                }
            }
            blackHole(f.output[0])
        }
    } setup: {
        FlatFixture()
    }
}
