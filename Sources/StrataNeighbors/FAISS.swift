// The one place that calls FAISS, through CStrataFAISS's C surface. Every return code becomes
// a `FAISSError` naming the C function; buffers are checked here before C sees them.
import CStrataFAISS

/// A non-zero return code from a strata_faiss function, with its message.
struct FAISSError: Error, CustomStringConvertible {
    enum Kind {
        case invalidArgument, library, outOfMemory, notOurs, other
        /// A file call failed with this errno.
        case file(errno: Int32)
    }

    let kind: Kind
    let function: String
    let message: String

    init(_ code: Int32, _ function: String, _ error: strata_faiss_error) {
        switch code {
        case Int32(STRATA_FAISS_INVALID_ARGUMENT): kind = .invalidArgument
        case Int32(STRATA_FAISS_LIBRARY): kind = .library
        case Int32(STRATA_FAISS_OUT_OF_MEMORY): kind = .outOfMemory
        case Int32(STRATA_FAISS_FILE): kind = .file(errno: error.code)
        case Int32(STRATA_FAISS_NOT_OURS): kind = .notOurs
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

/// Runs a strata_faiss call with a fresh error record, throwing what it reports.
private func call(_ function: String, _ body: (UnsafeMutablePointer<strata_faiss_error>) -> Int32) throws(FAISSError) {
    var error = strata_faiss_error()
    let rc = body(&error)
    if rc != Int32(STRATA_FAISS_OK) { throw FAISSError(rc, function, error) }
}

/// An HNSW graph over flat vectors by inner product whose results are keys
/// (`strata_faiss_index`). Not thread-safe: one call at a time.
final class FAISSIndex {
    private let handle: OpaquePointer
    let dimension: Int

    private init(handle: OpaquePointer) {
        self.handle = handle
        dimension = Int(strata_faiss_describe(handle).dimension)
    }

    deinit { strata_faiss_free(handle) }

    /// `strata_faiss_create`: an empty index.
    convenience init(dimension: Int, m: Int, efConstruction: Int, efSearch: Int) throws(FAISSError) {
        var made: OpaquePointer?
        try call("strata_faiss_create") {
            strata_faiss_create(Int32(clamping: dimension), Int32(clamping: m), Int32(clamping: efConstruction),
                                Int32(clamping: efSearch), &made, $0)
        }
        self.init(handle: made!)
    }

    /// `strata_faiss_read`: the index a `write` wrote, its graph checked.
    static func read(path: String) throws(FAISSError) -> FAISSIndex {
        var made: OpaquePointer?
        try call("strata_faiss_read") { strata_faiss_read(path, &made, $0) }
        return FAISSIndex(handle: made!)
    }

    var shape: strata_faiss_shape { strata_faiss_describe(handle) }

    /// `strata_faiss_add`: `keys.count` rows of `vectors` (`keys.count × dimension` floats).
    func add(keys: UnsafeBufferPointer<UInt64>, vectors: UnsafeBufferPointer<Float>, threads: Int) throws(FAISSError) {
        precondition(vectors.count == keys.count * dimension, "checked by the caller")
        try call("strata_faiss_add") {
            strata_faiss_add(handle, Int64(keys.count), vectors.baseAddress, keys.baseAddress, Int32(clamping: threads), $0)
        }
    }

    /// `strata_faiss_set_ef_search`.
    func setEfSearch(_ ef: Int) throws(FAISSError) {
        try call("strata_faiss_set_ef_search") { strata_faiss_set_ef_search(handle, Int32(clamping: ef), $0) }
    }

    /// `strata_faiss_search`: for each of the `queries.count / dimension` queries, its best
    /// `k` keys and inner products, best first (fewer when the graph reaches fewer).
    func search(_ queries: UnsafeBufferPointer<Float>, k: Int, threads: Int) throws(FAISSError) -> [[(key: UInt64, score: Float)]] {
        precondition(k > 0 && queries.count % dimension == 0, "checked by the caller")
        let m = queries.count / dimension
        var scores = [Float](repeating: 0, count: m * k)
        var keys = [UInt64](repeating: 0, count: m * k)
        var found = [Int64](repeating: 0, count: m)
        try call("strata_faiss_search") { error in
            strata_faiss_search(handle, Int64(m), queries.baseAddress, Int64(k), Int32(clamping: threads),
                                &scores, &keys, &found, error)
        }
        return (0..<m).map { q in
            (0..<Int(found[q])).map { j in (keys[q * k + j], scores[q * k + j]) }
        }
    }

    /// `strata_faiss_write`: the index to `path`, synced.
    func write(path: String) throws(FAISSError) {
        try call("strata_faiss_write") { strata_faiss_write(handle, path, $0) }
    }
}
