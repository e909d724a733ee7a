// StrataNeighbors: the HNSW index (hnswlib) of a table, against exact search (recall@10), through
// a save and a load, damaged files, staleness, and `strata index` / `strata neighbors --index`
// run as a user runs them.
import CStrataSupport
import Foundation
import StrataNeighbors
import StrataStore
import StrataTestSupport
import Testing

@Suite struct NeighborIndexTests {
    static let strata = productsDirectory() + "/strata"

    static func run(_ arguments: [String]) throws -> (status: Int32, lines: [String]) {
        let child = try ChildProcess(strata, arguments)
        let lines = child.readAll(timeout: 600)
        return (try child.wait(), lines)
    }

    /// Enough effort for recall well above 0.95 on these sizes (0.997 on the random vectors),
    /// with a build of a few seconds on an idle machine.
    static let parameters = NeighborIndex.Parameters(m: 32, efConstruction: 64, efSearch: 256)

    /// `count` standard normal floats (Box-Muller), from `rng`.
    static func normals(_ count: Int, _ rng: inout SplitMix64) -> [Float] {
        (0..<count).map { _ in
            let u = (Double(rng.next() >> 11) + 0.5) * 0x1p-53, v = Double(rng.next() >> 11) * 0x1p-53
            return Float((-2 * log(u)).squareRoot() * cos(2 * .pi * v))
        }
    }

    /// Each query's `k` best keys by inner product (or cosine), by a pass over every vector.
    static func exact(keys: [UInt64], vectors: [Float], queries: [Float], dimension d: Int, k: Int,
                      metric: NeighborIndex.Metric) -> [[UInt64]] {
        let n = keys.count
        var norms = [Float](repeating: 1, count: n)
        if metric == .cosine {
            for i in 0..<n { norms[i] = (0..<d).reduce(Float(0)) { $0 + vectors[i * d + $1] * vectors[i * d + $1] }.squareRoot() }
        }
        return vectors.withUnsafeBufferPointer { x in
            (0..<(queries.count / d)).map { q in
                let query = Array(queries[(q * d)..<((q + 1) * d)])
                var scored: [(score: Float, key: UInt64)] = []
                scored.reserveCapacity(n)
                for i in 0..<n {
                    var dot: Float = 0
                    for j in 0..<d { dot += x[i * d + j] * query[j] }
                    scored.append((norms[i] == 0 ? 0 : dot / norms[i], keys[i]))
                }
                return scored.sorted { $0.score > $1.score }.prefix(k).map(\.key)
            }
        }
    }

    /// The share of the exact top k that the index returned, over all queries.
    static func recall(_ found: [[(key: UInt64, score: Float)]], _ truth: [[UInt64]]) -> Double {
        var hits = 0, total = 0
        for (f, t) in zip(found, truth) {
            let wanted = Set(t)
            hits += f.filter { wanted.contains($0.key) }.count
            total += t.count
        }
        return Double(hits) / Double(total)
    }

    /// A store at `path` with table `name`: `rows` rows of dimension `d` drawn around 50
    /// Gaussian cluster centres (spread 0.3 around centres of spread 1), checkpointed once.
    /// Returns the keys and values written.
    @discardableResult
    static func clusteredStore(_ path: String, name: String = "items", rows: Int, d: Int, seed: UInt64 = 5) throws
        -> (keys: [UInt64], values: [Float])
    {
        var rng = SplitMix64(seed: seed)
        let centres = normals(50 * d, &rng)
        let keys = (0..<rows).map { UInt64($0) &* 0x9E37_79B9_7F4A_7C15 &+ 1 }
        let noise = normals(rows * d, &rng)
        var values = [Float](repeating: 0, count: rows * d)
        for i in 0..<rows {
            let c = Int(rng.next() % 50)
            for j in 0..<d { values[i * d + j] = centres[c * d + j] + 0.3 * noise[i * d + j] }
        }
        let store = try Store(path: path, options: .small(TierBudget(hotBytes: 1 << 20, warmBytes: 0)))
        let table = try store.createTable(name, TableSpec(dimension: d))
        try keys.withUnsafeBufferPointer { k in try values.withUnsafeBufferPointer { v in try table.assign(k, values: v) } }
        try store.checkpoint()
        try store.close()
        return (keys, values)
    }

    // MARK: Recall

    @Test(arguments: [NeighborIndex.Metric.dot, .cosine])
    func recallOnRandomVectorsIsAtLeast95Percent(_ metric: NeighborIndex.Metric) throws {
        let (n, d, m) = (20_000, 64, 100)
        var rng = SplitMix64(seed: 11)
        let vectors = Self.normals(n * d, &rng), queries = Self.normals(m * d, &rng)
        let keys = (0..<n).map { UInt64($0) * 7 + 3 }
        let index = try NeighborIndex(keys: keys, vectors: vectors, dimension: d, metric: metric, parameters: Self.parameters)
        #expect(index.rows == n && index.dimension == d && index.origin == nil)
        let found = try index.search(queries, k: 10)
        #expect(found.count == m && found.allSatisfy { $0.count == 10 })
        // Scores are what they say: inner products (of unit vectors, for cosine), best first.
        for (q, results) in found.enumerated() {
            #expect(zip(results, results.dropFirst()).allSatisfy { $0.score >= $1.score })
            let row = Int((results[0].key - 3) / 7)
            let x = Array(vectors[(row * d)..<((row + 1) * d)]), y = Array(queries[(q * d)..<((q + 1) * d)])
            var want = zip(x, y).reduce(Float(0)) { $0 + $1.0 * $1.1 }
            if metric == .cosine {
                want /= (x.reduce(Float(0)) { $0 + $1 * $1 }.squareRoot() * y.reduce(Float(0)) { $0 + $1 * $1 }.squareRoot())
            }
            #expect(abs(results[0].score - want) <= 1e-3 * max(1, abs(want)), "query \(q): \(results[0].score) vs \(want)")
        }
        let truth = Self.exact(keys: keys, vectors: vectors, queries: queries, dimension: d, k: 10, metric: metric)
        let r = Self.recall(found, truth)
        print("NeighborIndexTests: random \(n) × \(d), \(metric): recall@10 \(r), built in \(index.buildSeconds) s")
        #expect(r >= 0.95, "recall@10 \(r)")
    }

    @Test(arguments: [NeighborIndex.Metric.dot, .cosine, .mips])
    func recallOnAClusteredTableIsAtLeast95Percent(_ metric: NeighborIndex.Metric) throws {
        let directory = temporaryDirectory("strata-ann-clustered")
        defer { removeDirectory(directory) }
        let (n, d) = (10_000, 32)
        let (keys, values) = try Self.clusteredStore(directory + "/store", rows: n, d: d)
        let store = try Store(path: directory + "/store")
        defer { try? store.close() }
        let index = try NeighborIndex(table: try store.table("items"), metric: metric, parameters: Self.parameters)
        #expect(index.rows == n && index.dimension == d)
        #expect(index.origin == NeighborIndex.Origin(table: "items", generation: 1))
        // Queries: rows of the table, moved a little, and fresh points of the clusters' spread.
        var rng = SplitMix64(seed: 99)
        let noise = Self.normals(200 * d, &rng)
        var queries = [Float](repeating: 0, count: 200 * d)
        for q in 0..<200 {
            let row = q * 37 % n
            for j in 0..<d { queries[q * d + j] = values[row * d + j] + 0.2 * noise[q * d + j] }
        }
        let found = try index.search(queries, k: 10)
        let truth = Self.exact(keys: keys, vectors: values, queries: queries, dimension: d, k: 10, metric: metric)
        let r = Self.recall(found, truth)
        print("NeighborIndexTests: clustered table \(n) × \(d), \(metric): recall@10 \(r)")
        #expect(r >= 0.95, "recall@10 \(r)")
        let foundKeys = found.flatMap { results in results.map { $0.key } }
        #expect(Set(foundKeys).isSubset(of: Set(keys)))
    }

    /// A mips index: its scores are the plain inner products, a saved one loads with the
    /// table's dimension, and on rows whose norms differ by a factor of 30 it finds the best
    /// inner products. (Their directions are random, where dot's graph does better: 1.0 to
    /// mips' 0.93. On trained item tables it is the other way round: the README's figures.)
    @Test func mipsSearchesRowsOfUnequalNormByInnerProduct() throws {
        let directory = temporaryDirectory("strata-ann-mips")
        defer { removeDirectory(directory) }
        let path = directory + "/store"
        let (n, d, m) = (5000, 16, 200)
        var rng = SplitMix64(seed: 5)
        var values = Self.normals(n * d, &rng)
        for row in 0..<n {
            let scale = 0.1 + 2.9 * Float(rng.next() % 1000) / 1000
            for j in 0..<d { values[row * d + j] *= scale }
        }
        let keys = (0..<n).map { UInt64($0) * 5 + 1 }
        let store = try Store(path: path)
        defer { try? store.close() }
        let table = try store.createTable("items", TableSpec(dimension: d))
        try keys.withUnsafeBufferPointer { k in try values.withUnsafeBufferPointer { v in try table.assign(k, values: v) } }
        try store.checkpoint()
        let queries = Self.normals(m * d, &rng)
        let truth = Self.exact(keys: keys, vectors: values, queries: queries, dimension: d, k: 10, metric: .dot)
        // One thread: the same graph every run.
        var parameters = Self.parameters
        parameters.threads = 1
        let index = try NeighborIndex(table: try store.table("items"), metric: .mips, parameters: parameters)
        #expect(index.rows == n && index.dimension == d)
        let found = try index.search(queries, k: 10)
        for (q, results) in found.enumerated() {
            let row = Int((results[0].key - 1) / 5)
            let want = (0..<d).reduce(Float(0)) { $0 + values[row * d + $1] * queries[q * d + $1] }
            #expect(abs(results[0].score - want) <= 1e-4 * max(1, abs(want)), "query \(q): \(results[0].score) vs \(want)")
        }
        let r = Self.recall(found, truth)
        let dot = Self.recall(try NeighborIndex(table: try store.table("items"), metric: .dot, parameters: parameters)
            .search(queries, k: 10), truth)
        print("NeighborIndexTests: \(n) × \(d) rows of unequal norm: recall@10 mips \(r), dot \(dot)")
        #expect(r >= 0.9, "recall@10 \(r)")
        try index.save(to: path)
        let loaded = try NeighborIndex.load(from: path, table: "items", metric: .mips)
        #expect(loaded.dimension == d && loaded.metric == .mips)
        #expect(try loaded.search(queries, k: 10).map { r in r.map { $0.key } } == found.map { r in r.map { $0.key } })
        #expect(throws: NeighborIndexError.self) { _ = try loaded.search([1, 2, 3], k: 1) }
        // More than ef-search asked for: ef-search is widened for the search, not returned short.
        #expect(try loaded.search(Array(queries[0..<d]), k: 1000).first?.count == 1000)
        #expect(loaded.parameters.efSearch == Self.parameters.efSearch)
    }

    // MARK: Files

    @Test func saveThenLoadSearchesIdentically() throws {
        let directory = temporaryDirectory("strata-ann-save")
        defer { removeDirectory(directory) }
        let path = directory + "/store"
        let (n, d) = (3000, 16)
        try Self.clusteredStore(path, rows: n, d: d)
        let store = try Store(path: path)
        defer { try? store.close() }
        let built = try NeighborIndex(table: try store.table("items"), metric: .cosine,
                                      parameters: .init(m: 16, efConstruction: 64, efSearch: 48))
        let saved = try built.save(to: path)
        #expect(saved == path + "/indexes/items.cosine.hnsw")
        #expect(FileManager.default.fileExists(atPath: path + "/indexes/items.cosine.json"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: path + "/indexes").sorted() == ["items.cosine.hnsw", "items.cosine.json"])
        let loaded = try NeighborIndex.load(from: path, table: "items", metric: .cosine)
        #expect(loaded.rows == n && loaded.dimension == d && loaded.metric == .cosine)
        #expect(loaded.parameters == built.parameters && loaded.origin == built.origin)
        var rng = SplitMix64(seed: 3)
        let queries = Self.normals(50 * d, &rng)
        let a = try built.search(queries, k: 10), b = try loaded.search(queries, k: 10)
        #expect(a.map { r in r.map { $0.key } } == b.map { r in r.map { $0.key } })
        #expect(a.map { r in r.map { $0.score } } == b.map { r in r.map { $0.score } })
        // On one thread the build is deterministic: the same rows, the same file, byte for byte.
        var one = built.parameters
        one.threads = 1
        var files: [Data] = []
        for _ in 0..<2 {
            try NeighborIndex(table: try store.table("items"), metric: .cosine, parameters: one).save(to: path)
            files.append(try Data(contentsOf: URL(fileURLWithPath: saved)))
        }
        #expect(files[0] == files[1] && files[0].count > 3000 * d * 4)
        // efSearch changes with the call; a bad one is refused.
        try loaded.setEfSearch(200)
        #expect(loaded.parameters.efSearch == 200)
        #expect(throws: NeighborIndexError.self) { try loaded.setEfSearch(0) }
    }

    /// Every way a saved index can be unusable is an error naming the file and what to run;
    /// none is a crash, including files whose checksum was fixed up to pass, which reach the
    /// layout and graph checks.
    @Test func damagedIndexFilesAreRefusedByName() throws {
        let directory = temporaryDirectory("strata-ann-damaged")
        defer { removeDirectory(directory) }
        let path = directory + "/store"
        try Self.clusteredStore(path, rows: 2000, d: 8)
        let store = try Store(path: path)
        let index = try NeighborIndex(table: try store.table("items"), metric: .dot, parameters: .init(m: 8, efConstruction: 32, efSearch: 32))
        try store.close()
        let file = try index.save(to: path)
        let metadataFile = path + "/indexes/items.dot.json"
        let original = try Data(contentsOf: URL(fileURLWithPath: file))
        let originalMetadata = try Data(contentsOf: URL(fileURLWithPath: metadataFile))

        func expectDamaged(_ what: String, file named: String, _ detail: String) {
            do {
                _ = try NeighborIndex.load(from: path, table: "items", metric: .dot)
                Issue.record("\(what): loaded")
            } catch {
                guard case .damaged(let f, let table, _, let why) = error else { Issue.record("\(what): \(error)"); return }
                #expect(f == named && table == "items", "\(what): \(error)")
                #expect(detail.isEmpty || why.contains(detail), "\(what): \(why)")
                #expect(error.description.contains("strata index STORE items --metric dot"), "\(what): \(error)")
            }
        }
        func write(_ data: Data, _ to: String) throws { try data.write(to: URL(fileURLWithPath: to)) }
        /// The metadata rewritten to match `data`'s size and CRC-32C, so that the file is read.
        func fixMetadata(for data: Data) throws {
            var object = try #require(try JSONSerialization.jsonObject(with: originalMetadata) as? [String: Any])
            object["index_bytes"] = data.count
            object["index_crc32c"] = Int(data.withUnsafeBytes { strata_crc32c(0, $0.baseAddress, $0.count) })
            try write(try JSONSerialization.data(withJSONObject: object), metadataFile)
        }

        // Cut short.
        try write(original.prefix(original.count / 2), file)
        expectDamaged("truncated", file: file, "bytes but")
        // A flipped byte in the middle.
        var flipped = original
        flipped[flipped.count / 2] ^= 0x40
        try write(flipped, file)
        expectDamaged("flipped", file: file, "CRC-32C")
        // The same, with checksums that agree: the layout and graph checks see them.
        for (what, bytes) in [("truncated", original.prefix(original.count / 2)), ("garbage", Data(repeating: 0x5A, count: 4096)),
                              ("empty", Data()), ("header only", original.prefix(96)), ("a byte more", original + [0])] {
            try write(Data(bytes), file)
            try fixMetadata(for: Data(bytes))
            expectDamaged("\(what), checksum fixed", file: file, "")
        }
        // hnswlib's layout: a 96-byte header, then a block a row: a 4-byte link count (low 16
        // bits; byte 2 is the deleted mark), 2m 4-byte links, the vector, the 8-byte key.
        let m = 8, d = 8
        let block = 4 + 2 * m * 4 + d * 4 + 8
        func row(_ r: Int) -> Int { 96 + r * block }
        func damage(_ what: String, _ detail: String, _ change: (inout Data) -> Void) throws {
            var bytes = original
            change(&bytes)
            try write(bytes, file)
            try fixMetadata(for: bytes)
            expectDamaged(what, file: file, detail)
        }
        func put<T>(_ value: T, at offset: Int, in data: inout Data) {
            data.replaceSubrange(offset..<(offset + MemoryLayout<T>.size), with: withUnsafeBytes(of: value) { Data($0) })
        }
        try damage("a link out of range", "links to") { put(UInt32(1 << 30), at: row(10) + 4, in: &$0) }
        try damage("more links than 2m", "links at level 0") { put(UInt16(2 * m + 1), at: row(10), in: &$0) }
        try damage("a row marked deleted", "marked deleted") { $0[row(10) + 2] = 1 }
        try damage("a key twice", "more than one row") {
            let key = row(10) + 4 + 2 * m * 4 + d * 4
            $0.replaceSubrange((key + block)..<(key + block + 8), with: original[key..<(key + 8)])
        }
        try damage("a vector holding NaN", "not finite") { put(Float.nan, at: row(12) + 4 + 2 * m * 4, in: &$0) }
        try damage("another m in the header", "link counts") { put(UInt64(m + 1), at: 72, in: &$0) }
        try damage("a row count past the file", "row counts") { put(UInt64(1 << 40), at: 16, in: &$0) }
        try damage("an entry point out of range", "entry point") { put(UInt32(1 << 30), at: 52, in: &$0) }
        try damage("an upper level of odd size", "upper levels") { put(UInt32(3), at: row(2000), in: &$0) }

        // Metadata: unreadable, of another table, missing.
        try write(original, file)
        try write(Data("{ not json".utf8), metadataFile)
        expectDamaged("metadata garbage", file: metadataFile, "not readable")
        var other = try #require(try JSONSerialization.jsonObject(with: originalMetadata) as? [String: Any])
        other["format"] = 1
        try write(try JSONSerialization.data(withJSONObject: other), metadataFile)
        expectDamaged("a FAISS index's metadata", file: metadataFile, "format is 1")
        other["format"] = 2
        other["table"] = "users"
        try write(try JSONSerialization.data(withJSONObject: other), metadataFile)
        expectDamaged("other table", file: metadataFile, "table 'users'")
        try FileManager.default.removeItem(atPath: metadataFile)
        expectDamaged("metadata missing", file: file, "metadata file")
        try FileManager.default.removeItem(atPath: file)
        #expect {
            _ = try NeighborIndex.load(from: path, table: "items", metric: .dot)
        } throws: { error in
            guard case .missing(let f, "items", .dot) = error as? NeighborIndexError else { return false }
            return f == file && "\(error)".contains("strata index")
        }
        // Put back whole, it loads again.
        try write(original, file)
        try write(originalMetadata, metadataFile)
        #expect(try NeighborIndex.load(from: path, table: "items", metric: .dot).rows == 2000)
    }

    @Test func saveIsRefusedOutsideAStoreAndForVectorsInMemory() throws {
        let directory = temporaryDirectory("strata-ann-refused")
        defer { removeDirectory(directory) }
        try Self.clusteredStore(directory + "/store", rows: 500, d: 4)
        let store = try Store(path: directory + "/store")
        let index = try NeighborIndex(table: try store.table("items"), metric: .cosine, parameters: .init(m: 8, efConstruction: 16, efSearch: 16))
        try store.close()
        let notAStore = directory + "/elsewhere"
        try FileManager.default.createDirectory(atPath: notAStore, withIntermediateDirectories: true)
        #expect {
            try index.save(to: notAStore)
        } throws: { error in
            guard case .notAStore(let p) = error as? NeighborIndexError else { return false }
            return p == notAStore
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: notAStore).isEmpty)
        let inMemory = try NeighborIndex(keys: [1, 2], vectors: [1, 0, 0, 1], dimension: 2, metric: .dot)
        #expect {
            try inMemory.save(to: directory + "/store")
        } throws: { error in
            if case .noTable = error as? NeighborIndexError { return true }
            return false
        }
        // The store with its index is still a store to `Store.remove`.
        try index.save(to: directory + "/store")
        try Store.remove(at: directory + "/store")
        #expect(!FileManager.default.fileExists(atPath: directory + "/store"))
    }

    @Test func badArgumentsThrowAndKeyMaxIsAResult() throws {
        #expect(throws: NeighborIndexError.self) {
            _ = try NeighborIndex(keys: [1], vectors: [1, 2], dimension: 2, metric: .dot, parameters: .init(m: 1))
        }
        #expect(throws: NeighborIndexError.self) { _ = try NeighborIndex(keys: [1, 2], vectors: [1, 2], dimension: 2, metric: .dot) }
        #expect(throws: NeighborIndexError.self) { _ = try NeighborIndex(keys: [1], vectors: [.nan, 2], dimension: 2, metric: .dot) }
        // A key twice, within a batch or across the 65,536-row batches a build adds.
        #expect(throws: NeighborIndexError.self) { _ = try NeighborIndex(keys: [1, 1], vectors: [1, 0, 0, 1], dimension: 2, metric: .dot) }
        let many = (0..<70_000).map { UInt64($0 % 69_999) }
        #expect(throws: NeighborIndexError.self) {
            _ = try NeighborIndex(keys: many, vectors: [Float](repeating: 1, count: many.count), dimension: 1, metric: .dot,
                                  parameters: .init(m: 2, efConstruction: 2, efSearch: 2))
        }
        // 2^64-1 (-1 as a signed id, a "no result" to some libraries) comes back as a key.
        let index = try NeighborIndex(keys: [.max, 5, 6], vectors: [1, 0, 0, 1, -1, 0], dimension: 2, metric: .cosine)
        let found = try index.search([2, 0.1], k: 10)
        #expect(found.count == 1 && found[0].count == 3 && found[0][0].key == .max, "\(found)")
        #expect(throws: NeighborIndexError.self) { _ = try index.search([1, 2, 3], k: 1) }
        #expect(throws: NeighborIndexError.self) { _ = try index.search([1, 2], k: 0) }
        #expect(throws: NeighborIndexError.self) { _ = try index.search([.infinity, 2], k: 1) }
        #expect(try index.search([], k: 3).isEmpty)
        // An empty index answers with nothing.
        let empty = try NeighborIndex(keys: [], vectors: [], dimension: 3, metric: .dot)
        #expect(try empty.search([1, 2, 3], k: 4).map { $0.count } == [0])
    }

    @Test func anEmptyTableIndexesToNothing() throws {
        let directory = temporaryDirectory("strata-ann-empty")
        defer { removeDirectory(directory) }
        let path = directory + "/store"
        let store = try Store(path: path)
        defer { try? store.close() }
        let table = try store.createTable("none", TableSpec(dimension: 5))
        try store.checkpoint()
        let index = try NeighborIndex(table: table, metric: .cosine)
        #expect(index.rows == 0)
        try index.save(to: path)
        let loaded = try NeighborIndex.load(from: path, table: "none", metric: .cosine)
        #expect(loaded.rows == 0 && loaded.dimension == 5)
        #expect(try loaded.search([1, 2, 3, 4, 5], k: 3).map { $0.count } == [0])
    }

    // MARK: Staleness

    @Test func anIndexIsStaleOnceTheStoreCheckpointsAgain() throws {
        let directory = temporaryDirectory("strata-ann-stale")
        defer { removeDirectory(directory) }
        let path = directory + "/store"
        try Self.clusteredStore(path, rows: 1000, d: 8)
        let store = try Store(path: path)
        defer { try? store.close() }
        let table = try store.table("items")
        let index = try NeighborIndex(table: table, metric: .dot, parameters: .init(m: 8, efConstruction: 32, efSearch: 32))
        try index.save(to: path)
        #expect(!index.isStale(store: store))
        #expect(try !NeighborIndex.load(from: path, table: "items", metric: .dot).isStale(store: store))
        try table.applyGradients([42], [Float](repeating: 0.1, count: 8))
        try store.checkpoint()
        #expect(index.isStale(store: store))
        #expect(try NeighborIndex.load(from: path, table: "items", metric: .dot).isStale(store: store))
        #expect(try NeighborIndex(table: table, metric: .dot).isStale(store: store) == false)
    }

    // MARK: The command

    @Test func indexAndNeighborsIndexThroughTheCommand() throws {
        let directory = temporaryDirectory("strata-ann-command")
        defer { removeDirectory(directory) }
        let path = directory + "/store"
        let (reference, keys, _) = try ToolsTests.makeStore(path)
        _ = reference
        let query = keys[77]

        let built = try Self.run(["index", path, "emb", "--metric", "cosine", "--json"])
        #expect(built.status == 0, "\(built.lines.suffix(3))")
        let object = try ToolsTests.json(built.lines)
        #expect(object["rows"] as? Int == keys.count && object["dimension"] as? Int == 12 && object["generation"] as? Int == 2)
        #expect(object["path"] as? String == path + "/indexes/emb.cosine.hnsw")
        let text = try Self.run(["index", path, "emb", "--m", "16", "--ef-search", "64"])
        #expect(text.status == 0 && text.lines.first?.hasPrefix("indexed \(keys.count) rows of 'emb' (dimension 12) by cosine in ") == true,
                "\(text.lines)")
        #expect(text.lines.contains { $0.contains("HNSW m 16, ef-construction 200, ef-search 64") }, "\(text.lines)")

        // The index finds what exact search finds (on 2950 rows, HNSW misses next to nothing),
        // printed the same way.
        let exact = try Self.run(["neighbors", path, "emb", "\(query)", "-k", "7", "--json"])
        let approximate = try Self.run(["neighbors", path, "emb", "\(query)", "-k", "7", "--index", "--json"])
        #expect(exact.status == 0 && approximate.status == 0, "\(approximate.lines.suffix(3))")
        let want = try #require(try ToolsTests.json(exact.lines)["neighbors"] as? [[String: Any]]).compactMap { ($0["key"] as? NSNumber)?.uint64Value }
        let got = try #require(try ToolsTests.json(approximate.lines)["neighbors"] as? [[String: Any]]).compactMap { ($0["key"] as? NSNumber)?.uint64Value }
        #expect(got.count == 7 && !got.contains(query) && Set(got).intersection(want).count >= 6, "\(got) vs \(want)")
        let lines = try Self.run(["neighbors", path, "emb", "\(query)", "-k", "7", "--index"])
        #expect(lines.lines.first == "7 nearest rows to key \(query) by cosine, of \(keys.count) rows:", "\(lines.lines)")
        #expect(lines.lines.count == 8)

        // A metric with no index yet: built, saved, noted.
        let dot = try Self.run(["neighbors", path, "emb", "\(query)", "--metric", "dot", "--index"])
        #expect(dot.status == 0 && dot.lines.contains { $0.hasPrefix("note: built \(path)/indexes/emb.dot.hnsw") }, "\(dot.lines)")

        // Another checkpoint: the index is stale, refused with what to run; --rebuild rebuilds.
        do {
            let store = try Store(path: path)
            try store.table("emb").applyGradients([keys[0]], [Float](repeating: 0.5, count: 12))
            try store.checkpoint()
            try store.close()
        }
        let stale = try Self.run(["neighbors", path, "emb", "\(query)", "--index"])
        #expect(stale.status == 1, "\(stale.lines)")
        let error = stale.lines.first { $0.hasPrefix("Error:") } ?? ""
        #expect(error.contains("built at checkpoint 2") && error.contains("checkpoint 3")
                && error.contains("strata index \(path) emb --metric cosine") && error.contains("--rebuild"), "\(stale.lines)")
        let rebuilt = try Self.run(["neighbors", path, "emb", "\(query)", "--index", "--rebuild"])
        #expect(rebuilt.status == 0 && rebuilt.lines.contains { $0.hasPrefix("note: built") }, "\(rebuilt.lines)")
        #expect(try Self.run(["neighbors", path, "emb", "\(query)", "--index"]).status == 0)

        // A damaged index is an error naming it, not a crash; --rebuild replaces it.
        let file = path + "/indexes/emb.cosine.hnsw"
        try Data(repeating: 7, count: 100).write(to: URL(fileURLWithPath: file))
        let damaged = try Self.run(["neighbors", path, "emb", "\(query)", "--index"])
        #expect(damaged.status == 1 && damaged.lines.contains { $0.hasPrefix("Error: \(file)") }, "\(damaged.lines)")
        #expect(try Self.run(["neighbors", path, "emb", "\(query)", "--index", "--rebuild"]).status == 0)

        let lone = try Self.run(["neighbors", path, "emb", "\(query)", "--rebuild"])
        #expect(lone.status == 64 && lone.lines.contains { $0.contains("--rebuild") }, "\(lone.lines)")
    }

    /// A write that runs out of room (a file size limit, with SIGXFSZ ignored, so the write
    /// fails with EFBIG as on a full disk) is an error saying so, and leaves no index, whole
    /// or partial.
    @Test func anIndexThatDoesNotFitLeavesNothingBehind() throws {
        let directory = temporaryDirectory("strata-ann-full")
        defer { removeDirectory(directory) }
        let path = directory + "/store"
        _ = try ToolsTests.makeStore(path)
        let child = try ChildProcess("/bin/bash", ["-c", "trap '' XFSZ; exec prlimit --fsize=50000 \"$0\" index \"$1\" emb", Self.strata, path])
        let lines = child.readAll(timeout: 600)
        let status = try child.wait()
        #expect(status == 1, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("Error: not enough space for \(path)/indexes/emb.cosine.hnsw") }, "\(lines)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: path + "/indexes").isEmpty)
        // With room, the same command works.
        #expect(try Self.run(["index", path, "emb"]).status == 0)
    }

    @Test func benchIndexQuickReportsItsFigures() throws {
        let (status, lines) = try Self.run(["bench-index", "--quick", "--rows", "3000", "--queries", "50", "--sweep", "32", "--json"])
        #expect(status == 0, "\(lines.suffix(5))")
        let object = try ToolsTests.json(lines)
        #expect(object["rows"] as? Int == 3000 && object["queries"] as? Int == 50)
        #expect((object["build_seconds"] as? Double ?? 0) > 0 && (object["exact_queries_per_second"] as? Double ?? 0) > 0)
        #expect(object["single_queries"] as? Int == 50 && (object["exact_single_queries_per_second"] as? Double ?? 0) > 0)
        let results = try #require(object["index"] as? [[String: Any]])
        #expect(results.map { $0["ef_search"] as? Int } == [128, 32])
        for r in results {
            let recall = try #require(r["recall"] as? Double)
            #expect(recall > 0.5 && recall <= 1, "\(r)")
            #expect((r["speedup_vs_exact"] as? Double ?? 0) > 0 && (r["single_speedup_vs_exact"] as? Double ?? 0) > 0)
        }
    }
}
