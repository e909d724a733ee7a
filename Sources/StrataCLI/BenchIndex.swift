// `strata bench-index`: what the approximate index buys over exact search, measured in one
// run on one machine: build time, recall@k against exact search, and queries a second of
// each.
import ArgumentParser
import Foundation
import StrataNN
import StrataNeighbors
import StrataStore

struct BenchIndex: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-index",
        abstract: "Measure the nearest-neighbour index against exact search, on random vectors or a store's table.",
        discussion: """
            Draws --rows vectors and --queries queries of --dim standard normal floats (seeded; with \
            --clusters N, around N standard normal centres instead, at a spread of 0.3), builds \
            the HNSW index over the vectors in memory (no store), and finds each query's --k best rows \
            both ways: exactly, by BLAS matrix products (StrataNN's sgemm, blocks of 16384 rows) and a \
            top-k pass, and through the index at --ef-search and at each --sweep value. Reports the \
            build time, recall@k (the share of the exact top k the index returns, averaged over \
            queries) and queries a second, each way on the same --threads, and their ratio: for all \
            queries in one batch (exact search at its best, one matrix product a block), and one query \
            at a time for the first --single of them (a request as a server sees it). With --store and \
            --table, the vectors are the rows of that table's last checkpoint instead (a trained item \
            table, say), and the queries --queries rows of --query-table (drawn by --seed; by default \
            the table's own rows: item-to-item), e.g. an MF model's user table; the store is only read.
            """)

    @Option(parsing: .unconditional, help: "Vectors indexed.") var rows = 1_000_000
    @Option(parsing: .unconditional, help: "Floats per vector.") var dim = 64
    @Option(parsing: .unconditional, help: "Queries searched (drawn apart from the vectors).") var queries = 1000
    @Option(name: .customShort("k"), parsing: .unconditional, help: "Neighbours per query.") var count = 10
    @Option(help: "dot, mips (the inner product over norm-equalised rows) or cosine.") var metric = "cosine"
    @OptionGroup var graph: GraphOptions
    @Option(help: "Further --ef-search values to measure, comma-separated (e.g. 64,256,512).") var sweep = ""
    @Option(parsing: .unconditional, help: "Queries also searched one at a time, each way (0: none).") var single = 100
    @Option(parsing: .unconditional, help: "Draw vectors and queries around this many centres (0: no clusters).") var clusters = 0
    @Option(parsing: .unconditional, help: "Seed of the random vectors.") var seed = 1
    @Option(help: "Measure on the rows of a table of this store (with --table) instead of random vectors.") var store: String?
    @Option(help: "With --store: the table indexed.") var table: String?
    @Option(help: "With --store: the table whose rows are the queries (default: --table's own rows).") var queryTable: String?
    @Flag(help: "20,000 vectors and 100 queries: checks that the benchmark runs.") var quick = false
    @Flag(help: "Print one JSON object instead of text.") var json = false

    func validate() throws {
        try OptionCheck.whole(rows, "--rows", 1...(1 << 30))
        try OptionCheck.whole(dim, "--dim", 1...4096)
        try OptionCheck.whole(queries, "--queries", 1...1_000_000)
        try OptionCheck.whole(count, "-k", 1...1000)
        _ = try parseMetric(metric)
        _ = try sweepValues()
        try OptionCheck.whole(single, "--single", 0...1_000_000)
        try OptionCheck.whole(clusters, "--clusters", 0...1_000_000)
        try OptionCheck.whole(seed, "--seed", 0...Int.max)
        if let store { try OptionCheck.require(table != nil, "--store \(store) needs --table, the table to index") }
        if let table { try OptionCheck.require(store != nil, "--table \(table) needs --store, the store it is in") }
        if let queryTable { try OptionCheck.require(store != nil && table != nil, "--query-table \(queryTable) needs --store and --table") }
    }

    private func sweepValues() throws -> [Int] {
        try sweep.split(separator: ",").map { part in
            let text = part.trimmingCharacters(in: .whitespaces)
            guard let ef = Int(text), (1...65_536).contains(ef) else {
                throw ValidationError("--sweep: '\(text)' is not an ef-search value between 1 and 65536")
            }
            return ef
        }
    }

    func run() throws {
        let metric = try parseMetric(self.metric)
        let threads = graph.threads > 0 ? graph.threads : ProcessInfo.processInfo.activeProcessorCount
        Parallel.threads = threads
        var parameters = graph.parameters
        parameters.threads = threads
        let json = self.json
        let log: (String) -> Void = { if !json { print($0) } }
        var rng = SplitMix64(seed: UInt64(seed))
        var (n, d, m, k) = (quick ? min(rows, 20_000) : rows, dim, quick ? min(queries, 100) : queries, count)
        var data: [Float], q: [Float], keys: [UInt64]
        if let store, let table {
            (keys, data, q, d) = try Self.read(store, table: table, queryTable: queryTable ?? table, queries: m, &rng)
            (n, m) = (keys.count, q.count / d)
            guard n > 0, m > 0 else { throw ToolError("--table \(table): \(n) rows and \(m) queries in \(store): nothing to measure") }
            log("bench-index: the \(n) rows of '\(table)' in \(store) (dimension \(d)), \(metric); \(m) queries: rows of '\(queryTable ?? table)' "
                + "(seed \(seed)), k \(k); \(threads) threads")
        } else {
            log("bench-index: \(n) random vectors (" + (clusters == 0 ? "standard normal" : "\(clusters) clusters") + ", seed \(seed)), "
                + "dimension \(d), \(metric); "
                + "\(m) queries, k \(k); \(threads) threads")
            let centres = Self.normals(clusters * d, &rng)
            data = Self.draw(n, d, centres: centres, &rng)
            q = Self.draw(m, d, centres: centres, &rng)
            keys = (0..<n).map(scrambledKey)
        }

        var start = now()
        let index = try NeighborIndex(keys: keys, vectors: data, dimension: d, metric: metric, parameters: parameters)
        let buildSeconds = now() - start
        log("build: " + String(format: "%.1f", buildSeconds) + " s (HNSW m \(parameters.m), ef-construction \(parameters.efConstruction))")

        // Exact search sees what the index sees: unit vectors for cosine.
        if metric == .cosine {
            Self.normalise(&data, d)
            Self.normalise(&q, d)
        }
        start = now()
        let exact = Self.exactSearch(data: data, queries: q, dimension: d, k: min(k, n))
        let exactSeconds = now() - start
        let exactQPS = Double(m) / exactSeconds
        log("exact (BLAS sgemm + top-\(k)): \(m) queries in " + String(format: "%.2f", exactSeconds) + " s, "
            + String(format: "%.1f", exactQPS) + " queries/s")
        let ones = min(single, m)
        start = now()
        for i in 0..<ones { _ = Self.exactSearch(data: data, queries: Array(q[(i * d)..<((i + 1) * d)]), dimension: d, k: min(k, n)) }
        let exactSingleQPS = ones == 0 ? 0 : Double(ones) / (now() - start)
        if ones > 0 { log("exact, one query at a time: " + String(format: "%.1f", exactSingleQPS) + " queries/s (\(ones) queries)") }
        data = []

        var results: [[String: Any]] = []
        for ef in [parameters.efSearch] + (try sweepValues()) {
            try index.setEfSearch(ef)
            // A first search pages the graph in and starts OpenMP's threads; it is not timed.
            _ = try index.search(Array(q[0..<d]), k: k)
            start = now()
            let found = try index.search(q, k: k)
            let seconds = now() - start
            var hits = 0
            for i in 0..<m {
                let truth = Set(exact[i].map { keys[$0] })
                hits += found[i].filter { truth.contains($0.key) }.count
            }
            let recall = Double(hits) / Double(m * min(k, n))
            let qps = Double(m) / seconds
            start = now()
            for i in 0..<ones { _ = try index.search(Array(q[(i * d)..<((i + 1) * d)]), k: k) }
            let singleQPS = ones == 0 ? 0 : Double(ones) / (now() - start)
            log("ef-search \(ef): recall@\(k) " + String(format: "%.4f", recall) + ", \(m) queries in "
                + String(format: "%.3f", seconds) + " s, " + String(format: "%.1f", qps) + " queries/s, "
                + String(format: "%.1f", qps / exactQPS) + "x exact"
                + (ones == 0 ? "" : "; one at a time " + String(format: "%.1f", singleQPS) + " queries/s, "
                   + String(format: "%.1f", singleQPS / exactSingleQPS) + "x exact"))
            var result: [String: Any] = ["ef_search": ef, "recall": recall, "seconds": seconds, "queries_per_second": qps,
                                         "speedup_vs_exact": qps / exactQPS]
            if ones > 0 {
                result["single_queries_per_second"] = singleQPS
                result["single_speedup_vs_exact"] = singleQPS / exactSingleQPS
            }
            results.append(result)
        }
        if json {
            try printJSON(["rows": n, "dim": d, "queries": m, "k": k, "metric": metric.rawValue, "threads": threads,
                           "store": store ?? NSNull(), "table": table ?? NSNull(), "query_table": store == nil ? NSNull() : queryTable ?? table!,
                           "m": parameters.m, "ef_construction": parameters.efConstruction, "seed": seed, "clusters": clusters,
                           "build_seconds": buildSeconds, "exact_seconds": exactSeconds, "exact_queries_per_second": exactQPS,
                           "single_queries": ones, "exact_single_queries_per_second": exactSingleQPS, "index": results])
        }
    }

    /// Every row of `table` in the store at `path` (its last checkpoint; the store is only
    /// read) and `queries` rows of `queryTable` drawn at random (all of them if it has fewer).
    static func read(_ path: String, table: String, queryTable: String, queries: Int, _ rng: inout SplitMix64) throws
        -> (keys: [UInt64], rows: [Float], queries: [Float], dimension: Int) {
        var options = Store.Options()
        options.create = false
        options.budget = TierBudget(hotBytes: 4 << 20, warmBytes: 0)
        let store: Store
        do {
            do { store = try Store(path: path, options: options) } catch .locked { store = try Store(readerAt: path, options: options) }
        } catch {
            throw ToolError("--store \(path): \(error)")
        }
        defer { try? store.close() }
        func rows(_ name: String) throws -> (keys: [UInt64], values: [Float], dimension: Int) {
            let t = try StoreAccess.table(store, name)
            var keys: [UInt64] = [], values: [Float] = []
            try t.scanCheckpoint(withState: false) { batch in
                keys += batch.keys
                values += batch.values
            }
            return (keys, values, t.spec.dimension)
        }
        let indexed = try rows(table)
        let asked = queryTable == table ? indexed : try rows(queryTable)
        guard asked.dimension == indexed.dimension else {
            throw ToolError("--query-table \(queryTable) has rows of dimension \(asked.dimension), --table \(table) of \(indexed.dimension)")
        }
        // A seeded partial shuffle picks the query rows.
        let d = indexed.dimension, total = asked.keys.count, m = min(queries, total)
        var order = Array(0..<total)
        for i in 0..<m { order.swapAt(i, i + Int(rng.next() % UInt64(total - i))) }
        var q: [Float] = []
        q.reserveCapacity(m * d)
        for i in order.prefix(m) { q += asked.values[(i * d)..<((i + 1) * d)] }
        return (indexed.keys, indexed.values, q, d)
    }

    /// `count` vectors: standard normal, or with `centres`, each a random centre plus normal
    /// noise of standard deviation 0.3.
    static func draw(_ count: Int, _ d: Int, centres: [Float], _ rng: inout SplitMix64) -> [Float] {
        var v = normals(count * d, &rng)
        let k = centres.count / d
        guard k > 0 else { return v }
        for i in 0..<count {
            let c = Int(rng.next() % UInt64(k))
            for j in 0..<d { v[i * d + j] = centres[c * d + j] + 0.3 * v[i * d + j] }
        }
        return v
    }

    /// `count` standard normal floats (Box-Muller).
    static func normals(_ count: Int, _ rng: inout SplitMix64) -> [Float] {
        var out = [Float](repeating: 0, count: count)
        var i = 0
        while i < count {
            let u = (Double(rng.next() >> 11) + 0.5) * 0x1p-53, v = Double(rng.next() >> 11) * 0x1p-53
            let r = (-2 * log(u)).squareRoot()
            out[i] = Float(r * cos(2 * .pi * v))
            if i + 1 < count { out[i + 1] = Float(r * sin(2 * .pi * v)) }
            i += 2
        }
        return out
    }

    static func normalise(_ v: inout [Float], _ d: Int) {
        for row in 0..<(v.count / d) {
            var sum = 0.0
            for j in 0..<d { sum += Double(v[row * d + j] * v[row * d + j]) }
            if sum > 0 { for j in 0..<d { v[row * d + j] /= Float(sum.squareRoot()) } }
        }
    }

    /// Each query's `k` best rows by inner product, best first: blocks of rows against all
    /// queries by one matrix product each, then every query's top k kept, queries split over
    /// `Parallel.threads`.
    static func exactSearch(data: [Float], queries: [Float], dimension d: Int, k: Int) -> [[Int]] {
        let n = data.count / d, m = queries.count / d
        let block = 16_384
        var scores = [Float](repeating: 0, count: m * block)
        var best = [Float](repeating: -.infinity, count: m * k)
        var rows = [Int](repeating: -1, count: m * k)
        data.withUnsafeBufferPointer { x in
            queries.withUnsafeBufferPointer { q in
                scores.withUnsafeMutableBufferPointer { s in
                    best.withUnsafeMutableBufferPointer { best in
                        rows.withUnsafeMutableBufferPointer { rows in
                            for from in stride(from: 0, to: n, by: block) {
                                let b = min(block, n - from)
                                BLAS.gemm(false, true, m: m, n: b, k: d, q.baseAddress!, lda: d, x.baseAddress! + from * d, ldb: d,
                                          s.baseAddress!, ldc: b)
                                let chunk = (m + Parallel.threads - 1) / Parallel.threads
                                Parallel.forEach(Parallel.threads) { t in
                                    for i in (t * chunk)..<min(m, (t + 1) * chunk) {
                                        let top = best.baseAddress! + i * k, at = rows.baseAddress! + i * k
                                        for j in 0..<b where s[i * b + j] > top[k - 1] {
                                            let score = s[i * b + j]
                                            var p = k - 1
                                            while p > 0 && top[p - 1] < score {
                                                top[p] = top[p - 1]
                                                at[p] = at[p - 1]
                                                p -= 1
                                            }
                                            top[p] = score
                                            at[p] = from + j
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return (0..<m).map { i in Array(rows[(i * k)..<((i + 1) * k)]) }
    }
}
