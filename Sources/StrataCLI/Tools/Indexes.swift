// `strata index`: an approximate nearest-neighbour index (hnswlib's HNSW) of a table's last
// checkpoint, saved in the store as indexes/<table>.<metric>.hnsw; and how `strata
// neighbors --index` finds it, builds it or refuses it as stale.
import ArgumentParser
import Foundation
import StrataNeighbors
import StrataStore

/// The HNSW options `strata index` and `strata bench-index` share.
struct GraphOptions: ParsableArguments {
    @Option(name: .customLong("m"), parsing: .unconditional, help: "Links per node (twice as many on the bottom level), 2 to 512.")
    var m = 32
    @Option(parsing: .unconditional, help: "Candidates kept while linking a row in, from --m to 65536.") var efConstruction = 200
    @Option(parsing: .unconditional, help: "Candidates kept while searching, 1 to 65536 (saved with the index).") var efSearch = 128
    @Option(parsing: .unconditional, help: "Threads for the build and searches; 0 is one a core. With 1 the build is deterministic.")
    var threads = 0

    func validate() throws {
        try OptionCheck.whole(m, "--m", 2...512)
        try OptionCheck.whole(efConstruction, "--ef-construction", max(m, 1)...65_536)
        try OptionCheck.whole(efSearch, "--ef-search", 1...65_536)
        try OptionCheck.whole(threads, "--threads", 0...4096)
    }

    var parameters: NeighborIndex.Parameters {
        .init(m: m, efConstruction: efConstruction, efSearch: efSearch, threads: threads)
    }
}

/// A --metric value: dot, mips or cosine.
func parseMetric(_ text: String) throws -> NeighborIndex.Metric {
    guard let metric = NeighborIndex.Metric(rawValue: text) else { throw ValidationError("--metric: dot, mips or cosine, not '\(text)'") }
    return metric
}

/// `strata index STORE TABLE --metric dot|cosine [--m 32 --ef-construction 200 --ef-search 128]`.
struct IndexCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "index",
        abstract: "Build the approximate nearest-neighbour index of a table and save it in the store.",
        discussion: """
            Reads every row of the table's last checkpoint (streamed) into an HNSW graph (hnswlib), and \
            saves it as STORE/indexes/TABLE.METRIC.hnsw (hnswlib's own file layout) with TABLE.METRIC.json beside it (what it was \
            built from: table, dimension, metric, parameters, rows, the checkpoint generation, size and \
            checksum), replacing an earlier one. `strata neighbors --index` searches it. It is stale once \
            the store checkpoints again (any checkpoint): run this again. Cosine indexes hold the rows \
            normalised to unit length. mips is the inner product, as dot, searched through a graph of \
            the rows made equal in norm by one more coordinate: better on trained embeddings, whose \
            norms vary (what `strata recommend --retrieve` searches), worse on vectors of one norm.
            """)

    @OptionGroup var access: StoreAccess
    @Argument(help: "The table.") var table: String
    @Option(help: "dot, mips (the inner product over norm-equalised rows) or cosine.") var metric = "cosine"
    @OptionGroup var graph: GraphOptions
    @Flag(help: "Print one JSON object.") var json = false

    func validate() throws {
        _ = try parseMetric(metric)
    }

    func run() throws {
        let store = try access.openForReading()
        defer { try? store.close() }
        let t = try StoreAccess.table(store, table)
        let index = try NeighborIndex(table: t, metric: try parseMetric(metric), parameters: graph.parameters)
        let path = try index.save(to: store.path)
        let bytes = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        let p = index.parameters
        if json {
            try printJSON(["table": table, "metric": metric, "rows": index.rows, "dimension": index.dimension,
                           "seconds": index.buildSeconds, "generation": index.origin?.generation ?? 0, "path": path,
                           "bytes": bytes, "m": p.m, "ef_construction": p.efConstruction, "ef_search": p.efSearch])
            return
        }
        print("indexed \(index.rows) rows of '\(table)' (dimension \(index.dimension)) by \(metric) in "
              + String(format: "%.2f", index.buildSeconds) + " s, as of checkpoint \(index.origin?.generation ?? 0)")
        print("  HNSW m \(p.m), ef-construction \(p.efConstruction), ef-search \(p.efSearch)")
        print("  saved to \(path) (\(humanBytes(bytes)))")
    }
}

enum SavedIndex {
    /// The saved index of `table` by `metric` in `store`, for a search: built (with the
    /// default parameters) and saved when there is none (unless `buildMissing` is false:
    /// then refused, saying how to build it), or with `rebuild`; refused when the store has
    /// checkpointed since it was built, naming the command that rebuilds it and the
    /// command's own `rebuildFlag`. A build that cannot be saved (a store another user owns,
    /// a full disk) is still searched, with a note.
    static func open(_ store: Store, _ table: Table, metric: NeighborIndex.Metric, rebuild: Bool, buildMissing: Bool = true,
                     rebuildFlag: String = "--rebuild") throws -> NeighborIndex {
        let build = "`strata index \(store.path) \(table.name) --metric \(metric)`"
        if !rebuild {
            do {
                let index = try NeighborIndex.load(from: store.path, table: table.name, metric: metric)
                guard !index.isStale(store: store) else {
                    throw ToolError("the index \(NeighborIndex.files(store: store.path, table: table.name, metric: metric).index) "
                                    + "was built at checkpoint \(index.origin?.generation ?? 0), and \(store.path) is now at checkpoint "
                                    + "\(store.lastCheckpoint.generation): rebuild it with \(build), or add \(rebuildFlag)")
                }
                return index
            } catch NeighborIndexError.missing(let file, _, _) {
                // Built below, if it may be.
                guard buildMissing else {
                    throw ToolError("no index of table '\(table.name)' by \(metric) in \(store.path) (\(file)): build it with \(build), "
                                    + "or add \(rebuildFlag)")
                }
            }
        }
        let index = try NeighborIndex(table: table, metric: metric)
        do {
            let path = try index.save(to: store.path)
            StoreAccess.note("built \(path): \(index.rows) rows in " + String(format: "%.2f", index.buildSeconds) + " s")
        } catch {
            StoreAccess.note("built the index of '\(table.name)' by \(metric) but did not save it: \(error)")
        }
        return index
    }
}
