// The one place that calls hnswlib, through CStrataHNSW's C surface. Every return code
// becomes an `HNSWError` naming the C function; buffers are checked here before C sees them.
import CStrataHNSW

/// A non-zero return code from a strata_hnsw function, with its message.
struct HNSWError: Error, CustomStringConvertible {
    enum Kind {
        case invalidArgument, library, outOfMemory, notOurs, other
        /// A file call failed with this errno.
        case file(errno: Int32)
    }

    let kind: Kind
    let function: String
    let message: String

    init(_ code: Int32, _ function: String, _ error: strata_hnsw_error) {
        switch code {
        case Int32(STRATA_HNSW_INVALID_ARGUMENT): kind = .invalidArgument
        case Int32(STRATA_HNSW_LIBRARY): kind = .library
        case Int32(STRATA_HNSW_OUT_OF_MEMORY): kind = .outOfMemory
        case Int32(STRATA_HNSW_FILE): kind = .file(errno: error.code)
        case Int32(STRATA_HNSW_NOT_OURS): kind = .notOurs
        default: kind = .other
        }
        self.function = function
        var text = error
        message = withUnsafeBytes(of: &text.message) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    var description: String { "\(function): \(message)" }
}

/// Runs a strata_hnsw call with a fresh error record, throwing what it reports.
private func call(_ function: String, _ body: (UnsafeMutablePointer<strata_hnsw_error>) -> Int32) throws(HNSWError) {
    var error = strata_hnsw_error()
    let rc = body(&error)
    if rc != Int32(STRATA_HNSW_OK) { throw HNSWError(rc, function, error) }
}

/// An HNSW graph over vectors by inner product whose results are keys
/// (`strata_hnsw_index`). Not thread-safe: one call at a time.
final class HNSWGraph {
    private let handle: OpaquePointer
    let dimension: Int

    private init(handle: OpaquePointer) {
        self.handle = handle
        dimension = Int(strata_hnsw_describe(handle).dimension)
    }

    deinit { strata_hnsw_free(handle) }

    /// `strata_hnsw_create`: an empty graph with room for `capacity` rows.
    convenience init(dimension: Int, capacity: Int, m: Int, efConstruction: Int, efSearch: Int) throws(HNSWError) {
        var made: OpaquePointer?
        try call("strata_hnsw_create") {
            strata_hnsw_create(Int32(clamping: dimension), Int64(capacity), Int32(clamping: m), Int32(clamping: efConstruction),
                               Int32(clamping: efSearch), &made, $0)
        }
        self.init(handle: made!)
    }

    /// `strata_hnsw_read`: the graph a `write` wrote, of vectors of `dimension` floats, checked.
    static func read(path: String, dimension: Int) throws(HNSWError) -> HNSWGraph {
        var made: OpaquePointer?
        try call("strata_hnsw_read") { strata_hnsw_read(path, Int32(clamping: dimension), &made, $0) }
        return HNSWGraph(handle: made!)
    }

    var shape: strata_hnsw_shape { strata_hnsw_describe(handle) }

    /// `strata_hnsw_add`: `keys.count` rows of `vectors` (`keys.count × dimension` floats).
    func add(keys: UnsafeBufferPointer<UInt64>, vectors: UnsafeBufferPointer<Float>, threads: Int) throws(HNSWError) {
        precondition(vectors.count == keys.count * dimension, "checked by the caller")
        try call("strata_hnsw_add") {
            strata_hnsw_add(handle, Int64(keys.count), vectors.baseAddress, keys.baseAddress, Int32(clamping: threads), $0)
        }
    }

    /// `strata_hnsw_set_ef_search`.
    func setEfSearch(_ ef: Int) throws(HNSWError) {
        try call("strata_hnsw_set_ef_search") { strata_hnsw_set_ef_search(handle, Int32(clamping: ef), $0) }
    }

    /// `strata_hnsw_search`: for each of the `queries.count / dimension` queries, its best
    /// `k` keys and inner products, best first (fewer when the graph holds fewer rows).
    func search(_ queries: UnsafeBufferPointer<Float>, k: Int, threads: Int) throws(HNSWError) -> [[(key: UInt64, score: Float)]] {
        precondition(k > 0 && queries.count % dimension == 0, "checked by the caller")
        let m = queries.count / dimension
        var scores = [Float](repeating: 0, count: m * k)
        var keys = [UInt64](repeating: 0, count: m * k)
        var found = [Int64](repeating: 0, count: m)
        try call("strata_hnsw_search") { error in
            strata_hnsw_search(handle, Int64(m), queries.baseAddress, Int64(k), Int32(clamping: threads),
                               &scores, &keys, &found, error)
        }
        return (0..<m).map { q in
            (0..<Int(found[q])).map { j in (keys[q * k + j], scores[q * k + j]) }
        }
    }

    /// `strata_hnsw_write`: the graph to `path`, synced.
    func write(path: String) throws(HNSWError) {
        try call("strata_hnsw_write") { strata_hnsw_write(handle, path, $0) }
    }
}
