// Approximate nearest rows of a table, by hnswlib's HNSW graph (Malkov and Yashunin 2016): the
// candidates a recommender ranks, found in a fraction of a millisecond instead of a pass over
// every row. Built from the table's last checkpoint, saved beside the store, and stale once
// the store has checkpointed again.
import FoundationEssentials
public import StrataStore

/// An HNSW index over the rows of one table's last checkpoint (or over vectors given in
/// memory), searched by inner product or cosine similarity; results are the table's keys.
///
/// Cosine similarity is the inner product of unit vectors: rows are normalised here, in
/// Swift, before hnswlib sees them, and so are queries; a zero row stays zero and scores 0
/// against everything, as `strata neighbors`' exact search scores it.
///
/// The inner product is not a metric, and an HNSW graph linked by it (`.dot`) can leave rows
/// of small norm unreachable: on a trained item table, recall@10 stalls near 0.96 however wide
/// the search. `.mips` gives each row one more coordinate, √(M² − ‖x‖²) with M the largest
/// norm (Bachrach et al. 2014): every row then has norm M, where the best inner product is the
/// nearest neighbour, and queries get a 0 there, which leaves every score q · x as it was. On
/// vectors whose norms hardly differ (i.i.d. normal ones) the extra coordinate only blurs
/// the graph, and `.dot` does better.
///
/// Threading: not `Sendable`. Use an index from one thread at a time; each build and search
/// runs on `parameters.threads` threads of its own.
public final class NeighborIndex {
    public enum Metric: String, Codable, CaseIterable, Sendable, CustomStringConvertible {
        /// The inner product, through a graph linked by it (hnswlib's inner-product space).
        case dot
        /// The cosine of the angle: the inner product of rows and queries normalised.
        case cosine
        /// The inner product, through a graph of the rows made equal in norm (see above): the
        /// same scores as `dot`, a graph that reaches rows of small norm.
        case mips
        public var description: String { rawValue }
    }

    /// The graph's shape and effort (hnswlib's names).
    public struct Parameters: Equatable, Sendable {
        /// Links per node (twice as many on the bottom level): more is higher recall, more
        /// memory (8 × m bytes a row) and a slower build. 2...512.
        public var m: Int
        /// Candidates kept while linking each row in: more is a better graph, a slower build.
        /// At least `m`, at most 65,536.
        public var efConstruction: Int
        /// Candidates kept while searching (at least `k` are): more is higher recall, slower
        /// queries. 1...65,536. Saved with the index; `setEfSearch` changes it.
        public var efSearch: Int
        /// Threads for a build or search; 0 is one a core. A build with 1 thread is
        /// deterministic: the same rows give the same graph. Not saved.
        public var threads: Int

        public init(m: Int = 32, efConstruction: Int = 200, efSearch: Int = 128, threads: Int = 0) {
            self.m = m
            self.efConstruction = efConstruction
            self.efSearch = efSearch
            self.threads = threads
        }

        /// What is out of range, naming the parameter, or nil.
        public var problem: String? {
            if !(2...512).contains(m) { return "m must be between 2 and 512, not \(m)" }
            if !(1...65_536).contains(efConstruction) || efConstruction < m {
                return "ef_construction must be between m (\(m)) and 65536, not \(efConstruction)"
            }
            if !(1...65_536).contains(efSearch) { return "ef_search must be between 1 and 65536, not \(efSearch)" }
            if !(0...4096).contains(threads) { return "threads must be between 0 and 4096, not \(threads)" }
            return nil
        }
    }

    /// What an index read from a table was built from.
    public struct Origin: Equatable, Sendable {
        public var table: String
        /// The store's checkpoint generation whose rows it holds.
        public var generation: UInt64

        public init(table: String, generation: UInt64) {
            self.table = table
            self.generation = generation
        }
    }

    public let dimension: Int
    public let metric: Metric
    public private(set) var parameters: Parameters
    public let rows: Int
    /// Nil for an index over vectors given in memory.
    public let origin: Origin?
    /// Seconds the build took (reading the rows included), as measured when it was built.
    public let buildSeconds: Double
    /// Seconds since 1970 at the end of the build.
    public let builtAt: Double

    private let graph: HNSWGraph

    /// Rows are added to the graph this many at a time: enough to spread each batch over the
    /// threads, few enough that the copy is small.
    private static let addBatch = 65_536

    private init(graph: HNSWGraph, metric: Metric, parameters: Parameters, rows: Int, origin: Origin?,
                 buildSeconds: Double, builtAt: Double) {
        self.graph = graph
        dimension = graph.dimension - Self.extraColumns(metric)
        self.metric = metric
        self.parameters = parameters
        self.rows = rows
        self.origin = origin
        self.buildSeconds = buildSeconds
        self.builtAt = builtAt
    }

    /// Builds the index of `table`'s last checkpoint: every written row (never-written keys
    /// have no row to find), streamed a batch at a time with `scanCheckpoint`. Throws
    /// `.checkpointDuringBuild` if the store checkpoints meanwhile (the rows would belong to
    /// two checkpoints); build again.
    public convenience init(table: Table, metric: Metric, parameters: Parameters = Parameters()) throws(NeighborIndexError) {
        if let problem = parameters.problem { throw .invalidArgument(problem) }
        let start = ContinuousClock.now
        let generation = try Self.generation(table)
        let dimension = table.spec.dimension
        let graph: HNSWGraph
        do {
            graph = try HNSWGraph(dimension: dimension + Self.extraColumns(metric), capacity: Self.addBatch, m: parameters.m,
                                  efConstruction: parameters.efConstruction, efSearch: parameters.efSearch)
        } catch {
            throw .library(table: table.name, detail: error.description)
        }
        // The inner product's extra coordinate needs the largest norm first: one more pass.
        var largest = 0.0
        if metric == .mips {
            do {
                try table.scanCheckpoint(withState: false) { batch in
                    largest = max(largest, Self.largestSquaredNorm(batch.values, dimension: dimension))
                }
            } catch let error as StoreError {
                throw .store(table: table.name, error)
            } catch {
                throw .library(table: table.name, detail: "\(error)")
            }
        }
        var scratch: [Float] = []
        var keys: [UInt64] = [], vectors: [Float] = []
        keys.reserveCapacity(Self.addBatch)
        vectors.reserveCapacity(Self.addBatch * dimension)
        var rows = 0
        func flush() throws(NeighborIndexError) {
            do {
                try Self.add(graph, keys: keys, vectors: &vectors, metric: metric, largest: largest, scratch: &scratch,
                             threads: parameters.threads)
            } catch {
                throw .library(table: table.name, detail: error.description)
            }
            rows += keys.count
            keys.removeAll(keepingCapacity: true)
            vectors.removeAll(keepingCapacity: true)
        }
        do {
            try table.scanCheckpoint(withState: false) { batch in
                keys += batch.keys
                vectors += batch.values
                if keys.count >= Self.addBatch { try flush() }
            }
            try flush()
        } catch let error as NeighborIndexError {
            throw error
        } catch let error as StoreError {
            throw .store(table: table.name, error)
        } catch {
            throw .library(table: table.name, detail: "\(error)")
        }
        let after = try Self.generation(table)
        guard after == generation else { throw .checkpointDuringBuild(table: table.name, from: generation, to: after) }
        self.init(graph: graph, metric: metric, parameters: parameters, rows: rows,
                  origin: Origin(table: table.name, generation: generation),
                  buildSeconds: Self.seconds(since: start), builtAt: Date().timeIntervalSince1970)
    }

    /// Builds an index of `keys.count` vectors (`keys.count × dimension` floats, row after
    /// row, all finite). It can be searched, not saved: it belongs to no store.
    public convenience init(keys: [UInt64], vectors: [Float], dimension: Int, metric: Metric,
                            parameters: Parameters = Parameters()) throws(NeighborIndexError) {
        if let problem = parameters.problem { throw .invalidArgument(problem) }
        guard (1...65_536).contains(dimension), vectors.count == keys.count * dimension else {
            throw .invalidArgument("\(vectors.count) floats are not \(keys.count) vectors of dimension \(dimension)")
        }
        guard vectors.allSatisfy(\.isFinite) else { throw .invalidArgument("the vectors hold a value that is not finite") }
        let start = ContinuousClock.now
        let graph: HNSWGraph
        do {
            graph = try HNSWGraph(dimension: dimension + Self.extraColumns(metric), capacity: keys.count, m: parameters.m,
                                  efConstruction: parameters.efConstruction, efSearch: parameters.efSearch)
            let largest = metric == .mips ? Self.largestSquaredNorm(vectors, dimension: dimension) : 0
            var batch: [Float] = [], scratch: [Float] = []
            for from in stride(from: 0, to: keys.count, by: Self.addBatch) {
                let to = min(from + Self.addBatch, keys.count)
                batch.removeAll(keepingCapacity: true)
                batch += vectors[(from * dimension)..<(to * dimension)]
                try Self.add(graph, keys: Array(keys[from..<to]), vectors: &batch, metric: metric, largest: largest,
                             scratch: &scratch, threads: parameters.threads)
            }
        } catch {
            throw .library(table: "(vectors in memory)", detail: error.description)
        }
        self.init(graph: graph, metric: metric, parameters: parameters, rows: keys.count, origin: nil,
                  buildSeconds: Self.seconds(since: start), builtAt: Date().timeIntervalSince1970)
    }

    /// Adds rows: normalised first for cosine; for mips, each with its extra coordinate
    /// √(`largest` − ‖x‖²) (`largest`: the largest squared norm of all rows), in `scratch`.
    private static func add(_ graph: HNSWGraph, keys: [UInt64], vectors: inout [Float], metric: Metric, largest: Double,
                            scratch: inout [Float], threads: Int) throws(HNSWError) {
        if keys.isEmpty { return }
        switch metric {
        case .dot: break
        case .cosine: normalise(&vectors, dimension: graph.dimension)
        case .mips:
            let d = graph.dimension - 1
            scratch.removeAll(keepingCapacity: true)
            scratch.reserveCapacity(keys.count * (d + 1))
            for row in 0..<keys.count {
                var sum = 0.0
                for j in 0..<d {
                    let x = vectors[row * d + j]
                    scratch.append(x)
                    sum += Double(x) * Double(x)
                }
                scratch.append(Float(max(largest - sum, 0).squareRoot()))
            }
            swap(&vectors, &scratch)
        }
        try keys.withUnsafeBufferPointer { (k) throws(HNSWError) in
            try vectors.withUnsafeBufferPointer { (v) throws(HNSWError) in try graph.add(keys: k, vectors: v, threads: threads) }
        }
    }

    /// Columns the graph holds beyond the rows': the inner product's extra coordinate.
    static func extraColumns(_ metric: Metric) -> Int { metric == .mips ? 1 : 0 }

    /// The largest squared norm of the rows of `vectors` (summed in Double).
    static func largestSquaredNorm(_ vectors: [Float], dimension d: Int) -> Double {
        vectors.withUnsafeBufferPointer { v in
            var largest = 0.0
            for row in 0..<(v.count / d) {
                var sum = 0.0
                for j in 0..<d { sum += Double(v[row * d + j]) * Double(v[row * d + j]) }
                largest = max(largest, sum)
            }
            return largest
        }
    }

    /// Each row scaled to unit length (its norm summed in Double); zero rows left as they are.
    static func normalise(_ vectors: inout [Float], dimension d: Int) {
        vectors.withUnsafeMutableBufferPointer { v in
            for row in 0..<(v.count / d) {
                var sum = 0.0
                for j in 0..<d { sum += Double(v[row * d + j]) * Double(v[row * d + j]) }
                guard sum > 0 else { continue }
                let scale = Float(1 / sum.squareRoot())
                for j in 0..<d { v[row * d + j] *= scale }
            }
        }
    }

    private static func generation(_ table: Table) throws(NeighborIndexError) -> UInt64 {
        do { return try table.statistics().checkpoint.generation } catch { throw .store(table: table.name, error) }
    }

    private static func seconds(since start: ContinuousClock.Instant) -> Double {
        let d = ContinuousClock.now - start
        return Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }

    // MARK: Search

    /// The `k` best rows for each query (`queries` holds `m × dimension` floats, all finite),
    /// best first: by inner product, or for `.cosine` by the cosine of the angle. Fewer than
    /// `k` when the index holds fewer rows. Approximate: a true neighbour may be missed (see
    /// `parameters.efSearch`, widened to `k` when smaller).
    public func search(_ queries: [Float], k: Int) throws(NeighborIndexError) -> [[(key: UInt64, score: Float)]] {
        guard k >= 1 else { throw .invalidArgument("k must be at least 1, not \(k)") }
        guard queries.count % dimension == 0 else {
            throw .invalidArgument("\(queries.count) floats are not whole queries of dimension \(dimension)")
        }
        guard queries.allSatisfy(\.isFinite) else { throw .invalidArgument("a query holds a value that is not finite") }
        let m = queries.count / dimension
        if m == 0 { return [] }
        if rows == 0 { return Array(repeating: [], count: m) }
        var q = queries
        switch metric {
        case .dot: break
        case .cosine: Self.normalise(&q, dimension: dimension)
        case .mips:
            // 0 in the rows' extra coordinate: the scores are the queries' own inner products.
            q = []
            q.reserveCapacity(m * (dimension + 1))
            for i in 0..<m {
                q += queries[(i * dimension)..<((i + 1) * dimension)]
                q.append(0)
            }
        }
        do {
            // hnswlib keeps max(ef-search, k) candidates.
            return try q.withUnsafeBufferPointer { (b) throws(HNSWError) in
                try graph.search(b, k: min(k, rows), threads: parameters.threads)
            }
        } catch {
            throw .library(table: origin?.table ?? "(vectors in memory)", detail: error.description)
        }
    }

    /// Changes the candidates a search keeps (`Parameters.efSearch`).
    public func setEfSearch(_ ef: Int) throws(NeighborIndexError) {
        var changed = parameters
        changed.efSearch = ef
        if let problem = changed.problem { throw .invalidArgument(problem) }
        do { try graph.setEfSearch(ef) } catch { throw .library(table: origin?.table ?? "(vectors in memory)", detail: error.description) }
        parameters = changed
    }

    /// Whether `store` has checkpointed since the rows were read: its last checkpoint's
    /// generation is not the one the index was built at. Any checkpoint counts, whichever
    /// tables it changed. An index over vectors in memory is always stale.
    public func isStale(store: Store) -> Bool {
        guard let origin else { return true }
        return store.lastCheckpoint.generation != origin.generation
    }

    // MARK: Files

    /// Where the index of `table` by `metric` is saved in the store at `store`:
    /// `STORE/indexes/<table>.<metric>.hnsw` and its metadata, `.json` beside it.
    public static func files(store: String, table: String, metric: Metric) -> (index: String, metadata: String) {
        IndexFiles.paths(store: store, table: table, metric: metric)
    }

    /// Saves the index into `store`, the directory of the store it was built from, replacing
    /// an earlier one of the same table and metric (see IndexFiles.swift for how a crash
    /// leaves it). Refused when `store` is not a store directory, when the index was built
    /// from vectors in memory, and, before anything is written, when the file system lacks
    /// room for the index. Returns the index file's path.
    @discardableResult
    public func save(to store: String) throws(NeighborIndexError) -> String {
        guard let origin else { throw .noTable }
        guard IndexFiles.isStore(store) else { throw .notAStore(path: store) }
        let directory = IndexFiles.directory(store: store)
        try IndexFiles.makeDirectory(directory)
        let final = IndexFiles.paths(store: store, table: origin.table, metric: metric)
        IndexFiles.removeAbandoned(beside: final.index)
        IndexFiles.removeAbandoned(beside: final.metadata)
        let needed = Int(graph.shape.file_bytes) + (64 << 10)
        if let free = freeBytes(onFileSystemOf: directory), free < needed {
            throw .diskFull(path: final.index, needed: needed, free: free)
        }
        let partial = (index: IndexFiles.partial(final.index), metadata: IndexFiles.partial(final.metadata))
        do throws(NeighborIndexError) {
            do { try graph.write(path: partial.index) } catch {
                if case .file(let code) = error.kind, IndexFiles.isDiskFull(code) {
                    throw NeighborIndexError.diskFull(path: final.index, needed: needed, free: freeBytes(onFileSystemOf: directory) ?? 0)
                }
                throw NeighborIndexError.file(path: partial.index, detail: error.description)
            }
            // The checksum is of the bytes on disk, read back, not of what was meant to be written.
            let (bytes, crc) = try IndexFiles.checksum(partial.index)
            let metadata = IndexMetadata(
                format: IndexMetadata.currentFormat, table: origin.table, dimension: dimension, metric: metric,
                m: parameters.m, efConstruction: parameters.efConstruction, efSearch: parameters.efSearch, rows: rows,
                generation: origin.generation, builtAt: builtAt, buildSeconds: buildSeconds, indexBytes: bytes, indexCRC32C: crc)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let json: Data
            do { json = try encoder.encode(metadata) } catch { throw NeighborIndexError.file(path: partial.metadata, detail: "\(error)") }
            try IndexFiles.write(Array(json) + [0x0A], to: partial.metadata)
            try IndexFiles.rename(partial.index, final.index)
            try IndexFiles.rename(partial.metadata, final.metadata)
            try IndexFiles.syncDirectory(directory)
        } catch {
            IndexFiles.remove(partial.index)
            IndexFiles.remove(partial.metadata)
            throw error
        }
        return final.index
    }

    /// Reads the index of `table` by `metric` that `save` wrote into `store`. Throws
    /// `.missing` when there is none, `.damaged` (naming the file and what is wrong) when its
    /// metadata is unreadable or of another table or metric, when the index file is not the
    /// size or checksum its metadata gives (cut short, damaged, or a save interrupted between
    /// its two renames), or when its layout or graph does not hold together (checked before a
    /// search can follow a link). Never traps on a file's contents. `threads` is
    /// `Parameters.threads` for its searches.
    public static func load(from store: String, table: String, metric: Metric, threads: Int = 0) throws(NeighborIndexError) -> NeighborIndex {
        guard (0...4096).contains(threads) else { throw .invalidArgument("threads must be between 0 and 4096, not \(threads)") }
        let paths = IndexFiles.paths(store: store, table: table, metric: metric)
        func damaged(_ file: String, _ detail: String) -> NeighborIndexError {
            .damaged(file: file, table: table, metric: metric, detail: detail)
        }
        guard IndexFiles.exists(paths.metadata) else {
            if IndexFiles.exists(paths.index) { throw damaged(paths.index, "its metadata file \(paths.metadata) is missing") }
            throw .missing(file: paths.index, table: table, metric: metric)
        }
        guard IndexFiles.exists(paths.index) else { throw .missing(file: paths.index, table: table, metric: metric) }
        let metadata: IndexMetadata
        do {
            metadata = try JSONDecoder().decode(IndexMetadata.self, from: Data(try IndexFiles.read(paths.metadata)))
        } catch let error as NeighborIndexError {
            throw error
        } catch {
            throw damaged(paths.metadata, "its metadata is not readable JSON of an index")
        }
        guard metadata.format == IndexMetadata.currentFormat else {
            throw damaged(paths.metadata, "its format is \(metadata.format); this Strata reads format \(IndexMetadata.currentFormat)")
        }
        guard metadata.table == table, metadata.metric == metric else {
            throw damaged(paths.metadata, "it describes table '\(metadata.table)' by \(metadata.metric)")
        }
        let parameters = Parameters(m: metadata.m, efConstruction: metadata.efConstruction, efSearch: metadata.efSearch, threads: threads)
        if let problem = parameters.problem { throw damaged(paths.metadata, "its parameters are out of range: \(problem)") }
        guard metadata.rows >= 0, (1...65_536).contains(metadata.dimension) else {
            throw damaged(paths.metadata, "its row count or dimension is out of range")
        }
        let (bytes, crc) = try IndexFiles.checksum(paths.index)
        guard bytes == metadata.indexBytes else {
            throw damaged(paths.index, "it is \(bytes) bytes but \(metadata.indexBytes) were written (cut short, or replaced)")
        }
        guard crc == metadata.indexCRC32C else {
            throw damaged(paths.index, "its bytes do not match the CRC-32C written beside it (damaged, or its save was interrupted)")
        }
        let graph: HNSWGraph
        do {
            graph = try HNSWGraph.read(path: paths.index, dimension: metadata.dimension + extraColumns(metric))
        } catch {
            throw damaged(paths.index, error.description)
        }
        let shape = graph.shape
        guard Int(shape.dimension) == metadata.dimension + extraColumns(metric), Int(shape.rows) == metadata.rows, Int(shape.m) == metadata.m,
              Int(shape.ef_construction) == metadata.efConstruction
        else {
            throw damaged(paths.index, "it holds \(shape.rows) rows of dimension \(shape.dimension) (m \(shape.m)), "
                          + "not the \(metadata.rows) of dimension \(metadata.dimension) (m \(metadata.m)) its metadata gives")
        }
        do { try graph.setEfSearch(metadata.efSearch) } catch { throw damaged(paths.index, error.description) }
        return NeighborIndex(graph: graph, metric: metric, parameters: parameters, rows: metadata.rows,
                             origin: Origin(table: table, generation: metadata.generation),
                             buildSeconds: metadata.buildSeconds, builtAt: metadata.builtAt)
    }
}
