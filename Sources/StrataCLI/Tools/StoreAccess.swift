// What the offline tools share: how they open a store, and how they print.
//
// The tools read the last checkpoint. Those that only read (info, inspect, get, export,
// neighbors, verify, recommend) open the store as its writer when no process has it open,
// and otherwise read-only beside the process that has (`strata train`, say), at its last
// completed checkpoint (`Store(readerAt:)`). Writer first, because an open for writing
// checks and repairs what a reader cannot (an interrupted checkpoint is rolled back, verify
// sees the warm files), and a store nobody trains reads the same either way. Those that
// write (import, evict, compact, train) are refused while another process has the store,
// naming it. They keep their memory small: a few MiB of hot rows per table, no warm tier (a
// warm tier saved by a clean close stays for the next open that has one), and LMDB's
// resident pages capped.
import ArgumentParser
import Foundation
import StrataStore
import StrataTraining

struct StoreAccess: ParsableArguments {
    @Argument(help: "The store directory, or a shard set's (a run over several processes): the tools that read a whole set read every shard.")
    var store: String
    @Option(parsing: .unconditional, help: "Hot tier budget per table while the command runs, MiB.") var hotMb: Double = 4
    @Option(parsing: .unconditional, help: "LMDB pages kept mapped while the command runs (they stay in the page cache), MiB.")
    var mapResidentMb: Double = 16

    @Option(parsing: .unconditional, help: "While another process writes the store: how long to wait for a checkpoint it is writing, seconds.")
    var wait: Double = 600

    func validate() throws {
        try OptionCheck.mebibytes(hotMb, "--hot-mb")
        try OptionCheck.mebibytes(mapResidentMb, "--map-resident-mb")
        try OptionCheck.require(mapResidentMb > 0, "--map-resident-mb must be more than 0")
        try OptionCheck.number(wait, "--wait", 0...1e9)
    }

    private func options(create: Bool) -> Store.Options {
        var options = Store.Options()
        options.create = create
        options.budget = TierBudget(hotBytes: OptionCheck.bytes(mebibytes: hotMb), warmBytes: 0)
        options.mapResidentBytes = OptionCheck.bytes(mebibytes: mapResidentMb)
        options.readerWaitLimit = .milliseconds(Int64(wait * 1000))
        return options
    }

    /// Opens the store for `command`, which writes it: refused while another process has it.
    func open(create: Bool = false, for command: String) throws -> Store {
        if let n = try ShardSet.ranks(store) {
            throw ToolError("\(store) is a set of \(n) shards; \(command) writes one store: name one of its shards, such as \(ShardSet.shardPath(store, rank: 0, of: n))")
        }
        do {
            return try Store(path: store, options: options(create: create))
        } catch .locked(_, let holder) {
            throw Self.inUse(store, by: holder, command: command)
        }
    }

    /// Opens the store for a tool that only reads (see the top of this file). Read-only, it
    /// says on standard error which process writes the store and which checkpoint it reads,
    /// unless `quiet`. A shard set is refused, naming its shards: the tools that read a whole
    /// set open them with `openShardsForReading`.
    func openForReading(quiet: Bool = false) throws -> Store {
        if let n = try ShardSet.ranks(store) {
            throw ToolError("\(store) is a set of \(n) shards; this command reads one of them, such as \(ShardSet.shardPath(store, rank: 0, of: n))")
        }
        return try Self.openForReading(store, options: options(create: false), quiet: quiet)
    }

    /// The stores `store` names, opened for reading: itself, or a shard set's shards, rank by
    /// rank (`ShardSet`). Each is closed when `body` returns.
    func withShardsForReading<R>(quiet: Bool = false, _ body: ([Store]) throws -> R) throws -> R {
        var stores: [Store] = []
        defer { for s in stores { try? s.close() } }
        for path in try ShardSet.shards(store) ?? [store] {
            stores.append(try Self.openForReading(path, options: options(create: false), quiet: quiet))
        }
        return try body(stores)
    }

    /// Whether `store` is a shard set.
    var isShardSet: Bool { (try? ShardSet.ranks(store)) != nil }

    private static func openForReading(_ path: String, options: Store.Options, quiet: Bool) throws -> Store {
        // Twice at most: a writer that died mid-checkpoint leaves it for an open for writing to roll back.
        for attempt in 0..<2 {
            do {
                return try Store(path: path, options: options)
            } catch {
                guard case .locked(_, let holder) = error, !holder.hasPrefix("this process") else { throw error }
            }
            let reader: Store
            do {
                reader = try Store(readerAt: path, options: options)
            } catch {
                if case .checkpointInterrupted = error, attempt == 0 { continue }
                throw error
            }
            if !quiet { Self.note(Self.readingLine(reader) + reader.openReport.map { "; " + $0 }.joined()) }
            return reader
        }
        return try Store(path: path, options: options)
    }

    /// "STORE is open for writing in process N (cmd); read-only at its last completed
    /// checkpoint, G", for a store opened for reading; empty for one opened for writing.
    static func readingLine(_ store: Store) -> String {
        guard case .reader(let writer) = store.access else { return "" }
        let generation = store.lastCheckpoint.generation
        guard let writer else { return "\(store.path): read-only at its last checkpoint, \(generation)" }
        return "\(store.path) is open for writing in \(writer); read-only at its last completed checkpoint, \(generation)"
    }

    /// Writes `line` to standard error as a note.
    static func note(_ line: String) {
        FileHandle.standardError.write(Data(("note: " + line + "\n").utf8))
    }

    /// The error of a writing command refused because `holder` has the store.
    static func inUse(_ store: String, by holder: String, command: String) -> ToolError {
        ToolError("\(store) is in use by \(holder); \(command) writes the store, which one process at a time may do: "
                  + "run it once that process has closed the store (info, inspect, get, export, neighbors and verify can read it meanwhile)")
    }

    /// The table called `name`, or an error listing the tables there are.
    static func table(_ store: Store, _ name: String) throws -> Table {
        do {
            return try store.table(name)
        } catch .unknownTable {
            let names = store.tableNames
            throw ToolError("no table '\(name)' in \(store.path) (tables: \(names.isEmpty ? "none" : names.joined(separator: ", ")))")
        }
    }
}

/// A failure while a tool runs: printed as one `Error:` line, exit status 1.
struct ToolError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Keys as users type them: decimal, or hexadecimal with 0x.
func parseKey(_ text: String) throws -> UInt64 {
    let parsed = text.hasPrefix("0x") || text.hasPrefix("0X") ? UInt64(text.dropFirst(2), radix: 16) : UInt64(text)
    guard let key = parsed else { throw ValidationError("'\(text)' is not a key: keys are unsigned 64-bit integers (decimal, or hexadecimal with 0x)") }
    return key
}

/// Prints a JSON object on one line.
func printJSON(_ object: Any) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}

/// Bytes for people: 1.2 MB.
func humanBytes(_ bytes: Int) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"]
    var value = Double(bytes), unit = 0
    while value >= 1000 && unit < units.count - 1 {
        value /= 1000
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
}

func describe(_ spec: TableSpec) -> (storage: String, optimizer: String, initializer: String) {
    let optimizer: String
    switch spec.optimizer {
    case .sgd(let lr): optimizer = "sgd(lr \(lr))"
    case .adagrad(let lr, _, _): optimizer = "adagrad(lr \(lr))"
    case .rowwiseAdagrad(let lr, _, _): optimizer = "rowwise-adagrad(lr \(lr))"
    case .adam(let lr, _, _, _): optimizer = "adam(lr \(lr))"
    case .ftrl(let alpha, let beta, let l1, let l2): optimizer = "ftrl(alpha \(alpha), beta \(beta), l1 \(l1), l2 \(l2))"
    }
    let initializer: String
    switch spec.initializer.distribution {
    case .zeros: initializer = "zeros"
    case .constant(let c): initializer = "constant(\(c))"
    case .uniform(let low, let high): initializer = "uniform(\(low), \(high)), seed \(spec.initializer.seed)"
    case .normal(let mean, let sd): initializer = "normal(\(mean), \(sd)), seed \(spec.initializer.seed)"
    }
    return (spec.storage.rawValue, optimizer, initializer)
}

/// A text histogram with `bins` equal-width bins over [low, high], or log2 bins for counts.
struct TextHistogram {
    private(set) var counts: [Int]
    let edges: [Double]
    private(set) var total = 0

    init(low: Double, high: Double, bins: Int) {
        let hi = high > low ? high : low + 1
        edges = (0...bins).map { low + (hi - low) * Double($0) / Double(bins) }
        counts = Array(repeating: 0, count: bins)
    }

    /// Bins [0], [1], [2,3], [4,7], ... up to `maximum`.
    init(powersOfTwoUpTo maximum: UInt64) {
        var e: [Double] = [0, 1]
        var bound: UInt64 = 2
        while bound <= maximum {
            e.append(Double(bound))
            if bound > UInt64.max / 2 { break }
            bound *= 2
        }
        e.append(Double(max(bound, 2)))
        edges = e
        counts = Array(repeating: 0, count: e.count - 1)
    }

    mutating func add(_ x: Double) {
        total += 1
        var i = edges.count - 2
        // Last bin holds x == the top edge.
        while i > 0 && x < edges[i] { i -= 1 }
        counts[i] += 1
    }

    /// One line a bin, empty bins before the first and after the last full one left out.
    func lines(integers: Bool) -> [String] {
        let peak = max(counts.max() ?? 1, 1)
        guard let first = counts.firstIndex(where: { $0 > 0 }), let last = counts.lastIndex(where: { $0 > 0 }) else {
            return ["  (no rows)"]
        }
        return (first...last).map { i in
            let range: String
            if integers {
                let lo = UInt64(edges[i]), hi = UInt64(edges[i + 1]) - 1
                range = lo >= hi ? "\(lo)" : "\(lo)-\(hi)"
            } else {
                range = String(format: "%.4g – %.4g", edges[i], edges[i + 1])
            }
            let bar = String(repeating: "#", count: Int((Double(counts[i]) / Double(peak) * 40).rounded(.up)))
            return "  \(range.padding(toLength: 24, withPad: " ", startingAt: 0)) \(String(counts[i]).leftPadded(10))  \(bar)"
        }
    }

    var json: [[String: Any]] {
        counts.indices.map { ["low": edges[$0], "high": edges[$0 + 1], "count": counts[$0]] }
    }
}

extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
