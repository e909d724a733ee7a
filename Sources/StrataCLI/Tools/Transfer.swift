// `strata export` and `strata import`: tables to and from numpy, safetensors and the
// TensorBoard projector's TSV (see Formats/TableFiles.swift), streaming in batches.
import ArgumentParser
import Foundation
import StrataStore
import StrataTableFiles

/// `strata export STORE TABLE --format F --out PATH`.
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a table's keys and values (and optimizer state) to npy, safetensors or TSV files.",
        discussion: """
            npy: PATH is a directory of keys.npy (uint64), values.npy (float32, rows x dim), and with \
            --with-state state.npy (float32) and update_counts.npy (uint64). safetensors: PATH is one file \
            with the same tensors. tsv: PATH is a directory with vectors.tsv and metadata.tsv, the layout \
            of TensorBoard's embedding projector. --since G exports only rows changed after checkpoint G, \
            plus the keys deleted since (deleted_keys / deleted.tsv), so a serving copy can apply the delta. \
            Rows are those of the last checkpoint, in key order; memory stays constant whatever the size. \
            Given a shard set (a run over several processes), it exports every shard's rows, shard after \
            shard, each in key order.
            """)

    @OptionGroup var access: StoreAccess
    @Argument(help: "The table.") var table: String
    @Option(help: "npy, safetensors or tsv.") var format: String
    @Option(help: "Where to write: a directory (npy, tsv) or a file (safetensors).") var out: String
    @Flag(help: "Also write the optimizer state and update counts (npy and safetensors).") var withState = false
    @Option(parsing: .unconditional, help: "Only rows changed after this checkpoint generation, and the keys deleted since.") var since: UInt64?
    @Option(parsing: .unconditional, help: "Rows per batch.") var batchSize = 8192
    @Flag(help: "Print the summary as JSON.") var json = false

    func validate() throws {
        guard let f = TableFileFormat(rawValue: format) else { throw ValidationError("--format: npy, safetensors or tsv, not '\(format)'") }
        if f == .tsv && withState { throw ValidationError("--with-state: the TSV layout has no place for optimizer state; use npy or safetensors") }
        try OptionCheck.whole(batchSize, "--batch-size", 1...(1 << 24))
    }

    func run() throws {
        try access.withShardsForReading { stores in try export(stores) }
    }

    /// Exports the table from every store: a shard set's shards one after the other, each's
    /// rows in key order.
    private func export(_ stores: [Store]) throws {
        let format = TableFileFormat(rawValue: format)!
        let tables = try stores.map { try StoreAccess.table($0, table) }
        let generation = stores[0].lastCheckpoint.generation
        if let other = stores.first(where: { $0.lastCheckpoint.generation != generation }) {
            throw ToolError("the shards are at different checkpoints (\(stores[0].path) at \(generation), \(other.path) at \(other.lastCheckpoint.generation)): resume the run (mpirun ... strata train --resume) to bring them to one")
        }
        if let since, since > generation {
            throw ToolError("--since \(since): the store's last checkpoint is \(generation)")
        }
        let t = tables[0]
        // How many rows, so that every tensor's place in the file is known: a delta needs a
        // counting pass.
        var rows = 0
        for table in tables {
            if let since {
                try table.scanCheckpoint(batchSize: batchSize, changedAfter: since, withState: false) { rows += $0.count }
            } else {
                rows += table.checkpointRowCount
            }
        }
        let deleted = try since.map { since in try tables.flatMap { try $0.deletedKeys(after: since).map(\.key) } } ?? []
        let d = t.spec.dimension, stateCount = t.spec.optimizer.stateCount(dimension: d)
        var shapes = [TensorShape(name: "keys", type: .uint64, rows: rows, columns: nil),
                      TensorShape(name: "values", type: .float32, rows: rows, columns: d)]
        if withState {
            shapes.append(TensorShape(name: "state", type: .float32, rows: rows, columns: max(stateCount, 0)))
            shapes.append(TensorShape(name: "update_counts", type: .uint64, rows: rows, columns: nil))
        }
        if since != nil { shapes.append(TensorShape(name: "deleted_keys", type: .uint64, rows: deleted.count, columns: nil)) }
        let spec = String(decoding: try JSONEncoder().encode(t.spec), as: UTF8.self)
        var metadata = ["table": table, "generation": "\(generation)", "spec": spec, "format": "strata-table-1"]
        if let since { metadata["since"] = "\(since)" }
        if stores.count > 1 { metadata["shards"] = "\(stores.count)" }
        let writer: TableFileWriter
        do { writer = try TableFileWriter(format: format, path: out, shapes: shapes, metadata: metadata) } catch {
            throw ToolError("--out \(out): \(error)")
        }
        var written = 0
        for table in tables {
            try table.scanCheckpoint(batchSize: batchSize, changedAfter: since, withState: withState) { batch in
                guard written + batch.count <= rows else { throw ToolError("the table changed during the export") }
                try writer.append("keys", batch.keys[...])
                try writer.append("values", batch.values[...])
                if withState {
                    try writer.append("state", batch.state[...])
                    try writer.append("update_counts", batch.updateCounts[...])
                }
                written += batch.count
            }
        }
        if since != nil { try writer.append("deleted_keys", deleted[...]) }
        try writer.finish()
        if json {
            try printJSON(["table": table, "format": format.rawValue, "out": out, "rows": rows, "dimension": d,
                           "deleted_keys": since == nil ? NSNull() : deleted.count as Any, "generation": generation,
                           "shards": stores.count, "with_state": withState,
                           "peak_resident_bytes": peakResidentBytes() ?? NSNull() as Any])
        } else {
            let delta = since.map { ", rows changed after checkpoint \($0) and \(deleted.count) deleted keys" } ?? ""
            let shards = stores.count > 1 ? " from \(stores.count) shards" : ""
            print("exported \(rows) rows of '\(table)'\(shards) (dimension \(d)\(withState ? ", with optimizer state" : "")\(delta)) "
                  + "as of checkpoint \(generation) to \(out) (\(format.rawValue))")
        }
    }
}

/// `strata import STORE TABLE --from PATH`.
struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Load keys and values (and optimizer state) from npy, safetensors or TSV files into a table.",
        discussion: """
            The format is found from PATH (a .safetensors file, or a directory with values.npy or \
            vectors.tsv) unless --format says it. The keys a delta export (--since) lists as deleted \
            are removed, so importing a full export and then its deltas in order reproduces the table. A missing table is created with the file's dimension \
            (and, for files written by strata export, its spec); an existing one must have the file's \
            dimension. Optimizer state and update counts are taken when the file has them, else start \
            fresh. The rows are checkpointed every --checkpoint-rows and at the end.
            """)

    @OptionGroup var access: StoreAccess
    @Argument(help: "The table.") var table: String
    @Option(help: "The file (safetensors) or directory (npy, tsv) to read.") var from: String
    @Option(help: "npy, safetensors or tsv (default: found from the path).") var format: String?
    @Option(help: "Storage of a table created here: float32, float16 or bfloat16.") var storage = "float32"
    @Option(parsing: .unconditional, help: "Rows per batch.") var batchSize = 8192
    @Option(parsing: .unconditional, help: "Checkpoint after this many rows, and at the end.") var checkpointRows = 1_000_000
    @Flag(help: "Print the summary as JSON.") var json = false

    func validate() throws {
        if let format, TableFileFormat(rawValue: format) == nil { throw ValidationError("--format: npy, safetensors or tsv, not '\(format)'") }
        guard StorageType(rawValue: storage) != nil else { throw ValidationError("--storage: float32, float16 or bfloat16, not '\(storage)'") }
        try OptionCheck.whole(batchSize, "--batch-size", 1...(1 << 24))
        try OptionCheck.whole(checkpointRows, "--checkpoint-rows", 1...(1 << 31))
    }

    func run() throws {
        guard let format = format.flatMap(TableFileFormat.init(rawValue:)) ?? TableFileFormat.detect(from) else {
            throw ToolError("--from \(from): not a .safetensors file nor a directory with values.npy or vectors.tsv; say --format")
        }
        let reader = try TableFileReader(path: from, format: format)
        let store = try access.open(create: true, for: "import")
        defer { try? store.close() }
        let t: Table
        if store.tableNames.contains(table) {
            t = try store.table(table)
            guard t.spec.dimension == reader.dimension || (reader.rows == 0 && format == .tsv) else {
                throw ToolError("'\(table)' has dimension \(t.spec.dimension); \(from) holds rows of \(reader.dimension) values")
            }
        } else {
            var spec = TableSpec(dimension: reader.dimension, storage: StorageType(rawValue: storage)!)
            if let text = TableFileWriter.metadata(from, format)?["spec"],
               let saved = try? JSONDecoder().decode(TableSpec.self, from: Data(text.utf8)), saved.dimension == reader.dimension {
                spec = saved
            }
            t = try store.createTable(table, spec)
        }
        let stateCount = t.spec.optimizer.stateCount(dimension: t.spec.dimension)
        if let columns = reader.stateColumns, columns != stateCount {
            throw ToolError("\(from) holds \(columns) floats of optimizer state a row; '\(table)' (\(describe(t.spec).optimizer)) keeps \(stateCount)")
        }
        var imported = 0, sinceCheckpoint = 0
        while let batch = try reader.next(limit: batchSize) {
            let state = batch.state ?? [], counts = batch.counts ?? []
            try batch.keys.withUnsafeBufferPointer { keys in
                try batch.values.withUnsafeBufferPointer { values in
                    try state.withUnsafeBufferPointer { s in
                        try counts.withUnsafeBufferPointer { c in
                            try t.assign(keys, values: values, state: batch.state == nil ? nil : s,
                                         updateCounts: batch.counts == nil ? nil : c)
                        }
                    }
                }
            }
            imported += batch.keys.count
            sinceCheckpoint += batch.keys.count
            if sinceCheckpoint >= checkpointRows {
                try store.checkpoint(payload: store.lastCheckpoint.payload)
                sinceCheckpoint = 0
            }
        }
        // A delta export's deleted keys are removed, as a serving copy applying it would.
        var removed = 0
        while let keys = try reader.nextDeleted(limit: batchSize) {
            try t.remove(keys)
            removed += keys.count
            sinceCheckpoint += keys.count
            if sinceCheckpoint >= checkpointRows {
                try store.checkpoint(payload: store.lastCheckpoint.payload)
                sinceCheckpoint = 0
            }
        }
        let info = try store.checkpoint(payload: store.lastCheckpoint.payload)
        if json {
            try printJSON(["table": table, "from": from, "format": format.rawValue, "rows": imported, "removed": removed,
                           "dimension": reader.dimension, "generation": info.generation,
                           "with_state": reader.stateColumns != nil])
        } else {
            let deltas = removed > 0 ? ", removed \(removed) keys the file lists as deleted" : ""
            print("imported \(imported) rows of dimension \(reader.dimension) into '\(table)' from \(from) (\(format.rawValue))\(deltas); checkpoint \(info.generation)")
        }
    }
}
