// What the fault modes share: printing a StoreError so the parent can parse it, dropping
// root's privileges, and the small deterministic workloads that a mode and its test replay
// independently (Tests/StrataStoreTests/FaultScenarios.swift holds the same definitions;
// the two must agree, and the tests fail loudly when they do not).
import StrataStore
#if canImport(Glibc)
import Glibc
#endif

/// The case of a StoreError, as a word (its name in the enum).
func caseName(_ error: StoreError) -> String {
    if case .closed = error { return "closed" }
    return Mirror(reflecting: error).children.first?.label ?? "\(error)"
}

/// Prints `<prefix>-case`, `<prefix>-path` (the file or directory the error names, if any),
/// `<prefix>-generation` and `<prefix>-holder` where they apply, and `<prefix>-text`.
func report(_ error: any Error, prefix: String = "error") {
    guard let e = error as? StoreError else {
        say("\(prefix)-case other")
        say("\(prefix)-text \(error)")
        return
    }
    say("\(prefix)-case \(caseName(e))")
    switch e {
    case .newerFormat(let file, _, _), .corrupted(let file, _): say("\(prefix)-path \(file)")
    case .diskFull(let path, let generation, _):
        say("\(prefix)-path \(path)")
        say("\(prefix)-generation \(generation)")
    case .readOnly(let path, _): say("\(prefix)-path \(path)")
    case .locked(let path, let holder):
        say("\(prefix)-path \(path)")
        say("\(prefix)-holder \(holder)")
    case .lmdb(_, let file): say("\(prefix)-path \(file)")
    case .system(let s): say("\(prefix)-path \(s.path)")
    default: break
    }
    say("\(prefix)-text \(e.description)")
}

/// When running as root, becomes `nobody` (65534) for good, so that file permissions apply.
/// Returns whether privileges were dropped.
func dropPrivilegesIfRoot() -> Bool {
    guard geteuid() == 0 else { return false }
    guard setgroups(0, nil) == 0, setgid(65534) == 0, setuid(65534) == 0 else {
        say("cannot drop privileges: errno \(errno)")
        exit(3)
    }
    return true
}

/// The size of the largest regular file under `path`.
func largestFile(under path: String) -> Int {
    guard let dir = opendir(path) else { return 0 }
    defer { closedir(dir) }
    var largest = 0
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        if name == "." || name == ".." { continue }
        let full = path + "/" + name
        var info = stat()
        guard lstat(full, &info) == 0 else { continue }
        if info.st_mode & S_IFMT == S_IFDIR {
            largest = max(largest, largestFile(under: full))
        } else if info.st_mode & S_IFMT == S_IFREG {
            largest = max(largest, Int(info.st_size))
        }
    }
    return largest
}

/// A checkpoint payload holding one count.
func countPayload(_ n: Int) -> [UInt8] { withUnsafeBytes(of: UInt64(n)) { Array($0) } }

func count(in payload: [UInt8]) -> Int {
    payload.count == 8 ? Int(payload.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }) : -1
}

/// The disk-full run: batch `b` updates 64 new rows and revisits 8 earlier ones (duplicates
/// included), 296-byte records (dimension 64, row-wise AdaGrad).
enum DiskFullWorkload {
    static let spec = TableSpec(dimension: 64, initializer: .init(.uniform(low: -0.1, high: 0.1), seed: 11),
                                optimizer: .rowwiseAdagrad(learningRate: 0.05))
    static let newRowsPerBatch = 64

    static func key(_ n: Int) -> UInt64 { UInt64(n) &* 0x9E37_79B9_7F4A_7C15 }

    static func batch(_ b: Int) -> (keys: [UInt64], gradients: [Float]) {
        var keys = (0..<newRowsPerBatch).map { key(b * newRowsPerBatch + $0) }
        let written = (b + 1) * newRowsPerBatch
        keys += (0..<8).map { key((b * 37 + $0 * 101) % written) }
        let d = spec.dimension
        var g = [Float](repeating: 0, count: keys.count * d)
        for (i, k) in keys.enumerated() {
            for j in 0..<d { g[i * d + j] = Float(Int((k &* 31 &+ UInt64(j) &+ UInt64(b) &* 7) % 201) - 100) / 1000 }
        }
        return (keys, g)
    }

    /// `checkpoint`: everything fits in hot memory, so only a checkpoint growing LMDB's
    /// preallocated map can meet the limit. `spill`: a few dozen rows of memory, so changed
    /// rows go to the spill file between checkpoints.
    static func options(_ path: String) -> Store.Options {
        var o = Store.Options()
        o.initialMapBytes = 1 << 20
        o.mapResidentBytes = 1 << 20
        o.budget = path == "spill" ? TierBudget(hotBytes: 8 << 10, warmBytes: 16 << 10)
                                   : TierBudget(hotBytes: 4 << 20, warmBytes: 0)
        return o
    }
}

/// The read-only runs: 200 rows of dimension 8 under SGD; application `n` adds the same
/// gradient again.
enum SmallWorkload {
    static let spec = TableSpec(dimension: 8, initializer: .init(.uniform(low: -1, high: 1), seed: 5),
                                optimizer: .sgd(learningRate: 0.1))
    static let keys: [UInt64] = (0..<200).map { UInt64($0) &* 0x9E37_79B9_7F4A_7C15 }
    static var gradients: [Float] {
        keys.flatMap { k in (0..<8).map { j in Float(Int((k &+ UInt64(j) &* 7) % 13) - 6) / 10 } }
    }

    static func options() -> Store.Options {
        var o = Store.Options()
        o.initialMapBytes = 1 << 20
        o.budget = TierBudget(hotBytes: 16 << 10, warmBytes: 16 << 10)
        return o
    }
}

/// FNV-1a over keys and gradient bits, printed by the modes so a test can check that its copy
/// of a workload is the same as the driver's.
func fingerprint(_ keys: [UInt64], _ gradients: [Float]) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for k in keys { h = (h ^ k) &* 0x100_0000_01b3 }
    for g in gradients { h = (h ^ UInt64(g.bitPattern)) &* 0x100_0000_01b3 }
    return h
}
