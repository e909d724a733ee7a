public import StrataStore

/// Why a neighbour index cannot be built, saved, loaded or searched. Each message names the
/// file or table and says what to do.
public enum NeighborIndexError: Error, CustomStringConvertible {
    /// A parameter out of range, or queries that do not fit the index.
    case invalidArgument(String)
    /// Reading the table's last checkpoint failed.
    case store(table: String, StoreError)
    /// The store checkpointed while the index was being built from it, so the rows read may
    /// belong to two checkpoints.
    case checkpointDuringBuild(table: String, from: UInt64, to: UInt64)
    /// hnswlib failed while building or searching.
    case library(table: String, detail: String)
    /// The index was built from vectors, not a table, and has nowhere to be saved.
    case noTable
    /// A directory given as a store is not one.
    case notAStore(path: String)
    /// No saved index there.
    case missing(file: String, table: String, metric: NeighborIndex.Metric)
    /// A saved index that cannot be used: damaged, cut short, not Strata's, or not of this
    /// table and metric.
    case damaged(file: String, table: String, metric: NeighborIndex.Metric, detail: String)
    /// Not enough free space for the index file.
    case diskFull(path: String, needed: Int, free: Int)
    /// A file operation failed.
    case file(path: String, detail: String)

    public var description: String {
        switch self {
        case .invalidArgument(let detail): detail
        case .store(let table, let error): "reading table '\(table)': \(error)"
        case .checkpointDuringBuild(let table, let from, let to):
            "the store checkpointed (generation \(from) to \(to)) while the index of table '\(table)' was built from it; build it again"
        case .library(let table, let detail): "hnswlib failed on the index of table '\(table)': \(detail)"
        case .noTable: "this index was built from vectors given in memory, not a table: only an index built from a table is saved in its store"
        case .notAStore(let path): "\(path) is not a Strata store (it has no rows.mdb): an index is saved in the store it was built from"
        case .missing(let file, let table, let metric):
            "no index of table '\(table)' by \(metric) at \(file): build it with `strata index STORE \(table) --metric \(metric)`"
        case .damaged(let file, let table, let metric, let detail):
            "\(file), the index of table '\(table)' by \(metric), cannot be used: \(detail); "
                + "build it again with `strata index STORE \(table) --metric \(metric)`"
        case .diskFull(let path, let needed, let free):
            "not enough space for \(path): the index needs up to \(byteText(needed)), the file system has \(byteText(free)) free"
        case .file(let path, let detail): "\(path): \(detail)"
        }
    }
}
