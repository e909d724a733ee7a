// Where a saved index lives and the file calls that keep it whole: the only file of this
// module that calls the C library.
//
//   STORE/indexes/
//     <table>.<metric>.hnsw      the HNSW graph, in hnswlib's own layout (`saveIndex`)
//     <table>.<metric>.json      what it was built from, its size and CRC-32C
//     <name>.partial-<pid>       a file being written by process <pid>, renamed when whole
//
// A save writes both files under partial names, syncs them, renames the index and then the
// metadata into place and syncs the directory: a crash leaves the old pair, the new pair,
// or (between the renames) a new index beside old metadata, which the checksum refuses.
import CStrataSupport
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// What `<table>.<metric>.json` holds.
struct IndexMetadata: Codable, Equatable {
    /// 1 was a FAISS index (before hnswlib); 2 is hnswlib's.
    static let currentFormat = 2

    var format: Int
    var table: String
    var dimension: Int
    var metric: NeighborIndex.Metric
    var m: Int
    var efConstruction: Int
    var efSearch: Int
    var rows: Int
    /// The store's checkpoint generation the rows were read at.
    var generation: UInt64
    /// Seconds since 1970.
    var builtAt: Double
    var buildSeconds: Double
    var indexBytes: Int
    var indexCRC32C: UInt32

    enum CodingKeys: String, CodingKey {
        case format, table, dimension, metric, m, rows, generation
        case efConstruction = "ef_construction", efSearch = "ef_search", builtAt = "built_at"
        case buildSeconds = "build_seconds", indexBytes = "index_bytes", indexCRC32C = "index_crc32c"
    }
}

enum IndexFiles {
    static func directory(store: String) -> String { store + "/indexes" }

    static func paths(store: String, table: String, metric: NeighborIndex.Metric) -> (index: String, metadata: String) {
        let base = directory(store: store) + "/\(table).\(metric.rawValue)"
        return (base + ".hnsw", base + ".json")
    }

    static func partial(_ path: String) -> String { path + ".partial-\(getpid())" }

    /// Whether `path` is a store directory: it holds LMDB's data file.
    static func isStore(_ path: String) -> Bool {
        var info = stat()
        return stat(path + "/rows.mdb", &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    static func makeDirectory(_ path: String) throws(NeighborIndexError) {
        if mkdir(path, 0o755) != 0 && errno != EEXIST { throw failure("mkdir", path) }
    }

    /// Partial files of the same index left by processes that are gone (a crash mid-save).
    static func removeAbandoned(beside path: String) {
        let slash = path.lastIndex(of: "/")!
        let dir = String(path[..<slash]), prefix = String(path[path.index(after: slash)...]) + ".partial-"
        guard let handle = opendir(dir) else { return }
        defer { closedir(handle) }
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard name.hasPrefix(prefix), let pid = pid_t(name.dropFirst(prefix.count)) else { continue }
            if pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH { unlink(dir + "/" + name) }
        }
    }

    /// The size and CRC-32C of the file at `path`, read a MiB at a time.
    static func checksum(_ path: String) throws(NeighborIndexError) -> (bytes: Int, crc: UInt32) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw failure("open", path) }
        defer { close(fd) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buffer.deallocate() }
        var crc: UInt32 = 0, total = 0
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n < 0 {
                if errno == EINTR { continue }
                throw failure("read", path)
            }
            if n == 0 { return (total, crc) }
            crc = strata_crc32c(crc, buffer.baseAddress, n)
            total += n
        }
    }

    /// Writes `bytes` to a new file at `path` and syncs it.
    static func write(_ bytes: [UInt8], to path: String) throws(NeighborIndexError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw failure("open", path) }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, bytes.count - done) }
            if n < 0 {
                if errno == EINTR { continue }
                let error = failure("write", path)
                close(fd)
                throw error
            }
            done += n
        }
        if fsync(fd) != 0 {
            let error = failure("fsync", path)
            close(fd)
            throw error
        }
        guard close(fd) == 0 else { throw failure("close", path) }
    }

    static func read(_ path: String) throws(NeighborIndexError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw failure("open", path) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw failure("read", path)
            }
            if n == 0 { return bytes }
            // Metadata is a few hundred bytes; anything this large is not ours.
            guard bytes.count + n <= 1 << 20 else { throw NeighborIndexError.file(path: path, detail: "larger than any index metadata") }
            bytes += chunk[..<n]
        }
    }

    static func rename(_ from: String, _ to: String) throws(NeighborIndexError) {
        guard Glibc.rename(from, to) == 0 else { throw failure("rename to \(to)", from) }
    }

    /// `fsync` on a directory, so the renames in it are durable.
    static func syncDirectory(_ path: String) throws(NeighborIndexError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw failure("open", path) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw failure("fsync", path) }
    }

    static func remove(_ path: String) { unlink(path) }

    /// Whether an errno says the file system is full (or the user's quota is).
    static func isDiskFull(_ code: Int32) -> Bool { code == ENOSPC || code == EDQUOT || code == EFBIG }

    /// The error of a call that set errno.
    static func failure(_ operation: String, _ path: String) -> NeighborIndexError {
        let code = errno
        return .file(path: path, detail: "\(operation): \(String(cString: strerror(code)))")
    }
}
