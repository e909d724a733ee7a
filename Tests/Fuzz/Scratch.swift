import Foundation
@_spi(Testing) import StrataStore
import StrataModels

/// A fuzzing process's own directory, for the readers that take paths, and a store for the
/// tables a fuzzed checkpoint payload asks for. Removed when the process ends normally.
final class Scratch {
    let directory: String
    private var store: Store?
    private var sidesWritten = false

    init() {
        let base = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        directory = base + "/strata-fuzz-\(getpid())"
        try? FileManager.default.removeItem(atPath: directory)
        try! FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        scratchDirectory = directory
        atexit { if let d = scratchDirectory { try? FileManager.default.removeItem(atPath: d) } }
    }

    /// Writes `bytes` to `name` in the directory and returns its path.
    func write(_ name: String, _ bytes: [UInt8]) -> String {
        let path = directory + "/" + name
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else { fatalError("cannot write \(path)") }
        return path
    }

    /// `name` in the directory, created empty.
    func emptyDirectory(_ name: String) -> String {
        let path = directory + "/" + name
        try? FileManager.default.removeItem(atPath: path)
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    func sideTables() {
        guard !sidesWritten else { return }
        _ = write("fuzz.user", Array(FuzzTarget.users.utf8))
        _ = write("fuzz.item", Array(FuzzTarget.items.utf8))
        sidesWritten = true
    }

    /// The table a payload's model asks for: made on first use with the asked dimension, in a
    /// store with tiny budgets that is never checkpointed. At most 64 tables, so that inputs
    /// naming ever new tables cannot grow the process without bound.
    func table(_ request: TableRequest) throws -> Table {
        if store == nil {
            var options = Store.Options()
            options.budget = TierBudget(hotBytes: 64 << 10, warmBytes: 0)
            store = try Store(path: directory + "/store", options: options)
        }
        let store = store!
        if store.tableNames.contains(request.name) { return try store.table(request.name) }
        guard store.tableNames.count < 64 else { throw StoreError.unknownTable(request.name) }
        return try store.createTable(request.name, TableSpec(dimension: request.dimension))
    }
}

/// For the exit handler, which cannot capture.
nonisolated(unsafe) var scratchDirectory: String?
