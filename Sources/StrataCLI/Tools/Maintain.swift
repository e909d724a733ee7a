// `strata evict`, `strata compact` and `strata neighbors`: feature eviction, giving the space
// back, and nearest rows (exact, or from the saved index of `strata index`).
import ArgumentParser
import Foundation
import StrataNeighbors
import StrataStore

/// `strata evict STORE TABLE --not-updated-since G | --min-updates N | --max-norm X`.
struct Evict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove rows by age, update count or norm (feature eviction); they read as the initializer's value again.",
        discussion: """
            A row is evicted when it meets every criterion given: --not-updated-since G, its last change \
            is in checkpoint G or an earlier one (the rows `strata export --since G` leaves out); --min-updates N, it was updated fewer than N times; --max-norm X, \
            its L2 norm is at most X. The removal is checkpointed; `strata export --since` lists the keys as \
            deleted. LMDB reuses the freed pages; `strata compact` gives them back to the file system.
            """)

    @OptionGroup var access: StoreAccess
    @Argument(help: "The table.") var table: String
    @Option(parsing: .unconditional, help: "Evict rows not changed after this checkpoint generation.") var notUpdatedSince: UInt64?
    @Option(parsing: .unconditional, help: "Evict rows updated fewer than this many times.") var minUpdates: UInt64?
    @Option(parsing: .unconditional, help: "Evict rows whose L2 norm is at most this.") var maxNorm: Double?
    @Flag(help: "Count what would be evicted; change nothing.") var dryRun = false
    @Option(parsing: .unconditional, help: "Checkpoint after this many removals, and at the end.") var checkpointRows = 1_000_000
    @Flag(help: "Print the summary as JSON.") var json = false

    func validate() throws {
        guard notUpdatedSince != nil || minUpdates != nil || maxNorm != nil else {
            throw ValidationError("give --not-updated-since, --min-updates or --max-norm")
        }
        if let maxNorm { try OptionCheck.require(maxNorm >= 0, "--max-norm must be 0 or more, not \(maxNorm)") }
        try OptionCheck.whole(checkpointRows, "--checkpoint-rows", 1...(1 << 31))
    }

    func run() throws {
        let store = try access.open(for: "evict")
        defer { try? store.close() }
        let t = try StoreAccess.table(store, table)
        let before = try t.statistics()
        var evicted = 0, pending: [UInt64] = []
        func flush(checkpoint: Bool) throws {
            if !pending.isEmpty && !dryRun { try t.remove(pending) }
            pending.removeAll(keepingCapacity: true)
            if checkpoint && !dryRun { try store.checkpoint(payload: store.lastCheckpoint.payload) }
        }
        var sinceCheckpoint = 0
        // Keys are collected a batch at a time and removed after the batch: the scan reads the
        // last checkpoint, which removals do not change until the checkpoint at the end.
        try t.scanCheckpoint(withState: false) { batch in
            for i in 0..<batch.count {
                if let g = notUpdatedSince, batch.changeGenerations[i] > g { continue }
                if let n = minUpdates, batch.updateCounts[i] >= n { continue }
                if let x = maxNorm, norm(batch.values(at: i)) > x { continue }
                pending.append(batch.keys[i])
            }
            evicted += pending.count
            sinceCheckpoint += pending.count
            try flush(checkpoint: false)
            if sinceCheckpoint >= checkpointRows {
                try flush(checkpoint: true)
                sinceCheckpoint = 0
            }
        }
        let recordBytes = evicted * before.recordBytes
        try flush(checkpoint: sinceCheckpoint > 0)
        let after = try t.statistics()
        if json {
            try printJSON(["table": table, "evicted": evicted, "rows_before": before.rows.total, "rows_after": after.rows.total,
                           "record_bytes": recordBytes, "lmdb_bytes_before": before.bytes.coldOnDisk,
                           "lmdb_bytes_after": after.bytes.coldOnDisk, "dry_run": dryRun,
                           "generation": store.lastCheckpoint.generation])
        } else if dryRun {
            print("would evict \(evicted) of \(before.rows.total) rows of '\(table)' (\(humanBytes(recordBytes)) of records)")
        } else {
            print("evicted \(evicted) of \(before.rows.total) rows of '\(table)' (\(humanBytes(recordBytes)) of records); "
                  + "LMDB pages of the table \(humanBytes(before.bytes.coldOnDisk)) -> \(humanBytes(after.bytes.coldOnDisk)); "
                  + "checkpoint \(store.lastCheckpoint.generation)")
        }
    }
}

/// `strata compact STORE`.
struct Compact: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rewrite a closed store's data file with only the pages in use, giving freed space back.",
        discussion: "The store must not be open anywhere. The file keeps its new size until checkpoints need more room.")

    @Argument(help: "The store directory.") var store: String
    @Flag(help: "Print the summary as JSON.") var json = false

    func run() throws {
        let report: CompactionReport
        do {
            report = try Store.compact(path: store)
        } catch .locked(_, let holder) {
            throw StoreAccess.inUse(store, by: holder, command: "compact")
        }
        if json {
            try printJSON(["store": store, "file_bytes_before": report.fileBytesBefore, "file_bytes_after": report.fileBytesAfter,
                           "bytes_in_use_before": report.bytesInUseBefore])
        } else {
            print("compacted \(store)/rows.mdb: \(humanBytes(report.fileBytesBefore)) -> \(humanBytes(report.fileBytesAfter)) "
                  + "(\(humanBytes(report.bytesInUseBefore)) of pages were in use, free ones included)")
        }
    }
}

/// `strata neighbors STORE TABLE KEY -k 10 --metric dot|cosine [--index [--rebuild]]`.
struct Neighbors: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The rows nearest to a key's row, by exact search over the table or from its saved index.",
        discussion: """
            Without --index, streams over the rows of the last checkpoint in constant memory. With \
            --index, searches the approximate index `strata index` saved in the store for the table \
            and metric (building and saving it first when there is none); an index built before the \
            store's last checkpoint is refused unless --rebuild, which builds it again. A key never \
            written is searched with the initializer's value.
            """)

    @OptionGroup var access: StoreAccess
    @Argument(help: "The table.") var table: String
    @Argument(help: "The key whose neighbours to find.") var key: String
    @Option(name: .customShort("k"), parsing: .unconditional, help: "How many neighbours.") var count = 10
    @Option(help: "dot, mips (the inner product, as dot; for --index) or cosine.") var metric = "cosine"
    @Flag(help: "Search the table's saved approximate index (strata index) instead of every row.") var index = false
    @Flag(help: "With --index: build the index again first, with `strata index`'s default parameters (a stale one is refused otherwise).")
    var rebuild = false
    @Flag(help: "Print one JSON object.") var json = false

    func validate() throws {
        _ = try parseKey(key)
        try OptionCheck.whole(count, "-k", 1...1_000_000)
        _ = try parseMetric(metric)
        try OptionCheck.require(!rebuild || index, "--rebuild rebuilds the index --index searches: give --index too")
    }

    func run() throws {
        let query = try parseKey(key)
        let store = try access.openForReading()
        defer { try? store.close() }
        let t = try StoreAccess.table(store, table)
        let row = try t.row(query)
        var best: [(key: UInt64, score: Double)] = []
        var scanned = 0
        if index {
            let saved = try SavedIndex.open(store, t, metric: try parseMetric(metric), rebuild: rebuild)
            // One more than asked: the query's own row is not its neighbour.
            let found = try saved.search(row.values, k: min(count + 1, Int(Int32.max)))[0]
            best = found.filter { $0.key != query }.prefix(count).map { ($0.key, Double($0.score)) }
            scanned = saved.rows
        } else {
            (best, scanned) = try exact(t, query: query, row: row)
        }
        if json {
            try printJSON(["key": query, "written": row.placement != .initial, "metric": metric, "rows_scanned": scanned,
                           "neighbors": best.map { ["key": $0.key, "score": $0.score] }])
            return
        }
        print("\(best.count) nearest rows to key \(query)\(row.placement == .initial ? " (never written: its initializer value)" : "") "
              + "by \(metric), of \(scanned) rows:")
        for (rank, n) in best.enumerated() {
            print("\(String(rank + 1).leftPadded(4))  \(String(n.key).leftPadded(20))  \(String(format: "%.6f", n.score))")
        }
    }

    /// The `count` best rows other than `query`'s, best first (ties by key), by a pass over
    /// every row of the last checkpoint; and how many rows it read.
    private func exact(_ t: Table, query: UInt64, row: RowSnapshot) throws -> (best: [(key: UInt64, score: Double)], scanned: Int) {
        let q = row.values.map(Double.init)
        let qNorm = q.reduce(0) { $0 + $1 * $1 }.squareRoot()
        // The best `count` so far, best first; a sorted array beats a heap at these sizes.
        var best: [(key: UInt64, score: Double)] = []
        var scanned = 0
        let byDot = metric != "cosine"
        try t.scanCheckpoint(withState: false) { batch in
            let d = batch.dimension
            batch.values.withUnsafeBufferPointer { v in
                for i in 0..<batch.count where batch.keys[i] != query {
                    var dot = 0.0, n2 = 0.0
                    for j in 0..<d {
                        let x = Double(v[i * d + j])
                        dot += x * q[j]
                        n2 += x * x
                    }
                    let score = byDot ? dot : (n2 == 0 || qNorm == 0 ? 0 : dot / (n2.squareRoot() * qNorm))
                    if best.count < count || score > best[best.count - 1].score {
                        let at = best.firstIndex { score > $0.score || (score == $0.score && batch.keys[i] < $0.key) } ?? best.count
                        best.insert((batch.keys[i], score), at: at)
                        if best.count > count { best.removeLast() }
                    }
                }
            }
            scanned += batch.count
        }
        return (best, scanned)
    }
}
