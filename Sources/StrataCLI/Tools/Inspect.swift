// `strata info`, `strata inspect` and `strata get`: what a store holds, read-only in effect
// (they checkpoint nothing).
import ArgumentParser
import Foundation
import StrataModels
import StrataStore
import StrataTraining

/// `strata info STORE`: the store's tables and its last checkpoint.
struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List a store's tables and its last checkpoint.")

    @OptionGroup var access: StoreAccess
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        try access.withShardsForReading(quiet: true) { stores in
            let set = access.isShardSet
            if json {
                let objects = try stores.map(object)
                try printJSON(set ? ["shard_set": access.store, "shards": objects] as [String: Any] : objects[0])
                return
            }
            if set {
                let rows = try stores.reduce(0) { total, store in
                    try store.tableNames.reduce(total) { $0 + (try store.table($1).statistics().rows.total) }
                }
                print("shard set \(access.store): \(stores.count) shards, \(rows) rows in all (each key in its owner's shard)")
            }
            for (rank, store) in stores.enumerated() {
                if set { print("\nshard \(rank):") }
                try show(store)
            }
        }
    }

    private func object(_ store: Store) throws -> [String: Any] {
        let statistics = try tables(store)
        var writer: Any = NSNull()
        if case .reader(let w?) = store.access { writer = ["pid": Int(w.pid), "command": w.command ?? NSNull()] as [String: Any] }
        return ["store": store.path, "checkpoint": checkpointSummary(store.lastCheckpoint), "tables": statistics.map(tableSummary),
                "read_only": store.access != .writer, "writer": writer]
    }

    /// The tables' statistics, c2 before c10.
    private func tables(_ store: Store) throws -> [TableStatistics] {
        try store.tableNames.sorted { $0.compare($1, options: .numeric) == .orderedAscending }.map { try store.table($0).statistics() }
    }

    private func show(_ store: Store) throws {
        let last = store.lastCheckpoint
        let statistics = try tables(store)
        print("store \(store.path)")
        if case .reader(let writer) = store.access {
            // Which process trains it, and which of its checkpoints this reads.
            print(writer.map { "open for writing in \($0); read-only at its last completed checkpoint, \(last.generation)" }
                  ?? "read-only at its last checkpoint, \(last.generation)")
            for line in store.openReport { print("  \(line)") }
        }
        print("last checkpoint: " + checkpointLine(last))
        if statistics.isEmpty {
            print("no tables")
            return
        }
        let header = ["table", "dim", "storage", "optimizer", "rows", "LMDB bytes", "updates (all opens)"]
        let rows = statistics.map { s in
            let d = describe(s.spec)
            return [s.name, "\(s.spec.dimension)", d.storage, d.optimizer, "\(s.rows.total)", humanBytes(s.bytes.coldOnDisk),
                    "\((s.trafficBeforeOpen + s.traffic).accesses)"]
        }
        printTable(header, rows)
    }
}

func checkpointSummary(_ c: CheckpointInfo) -> [String: Any] {
    ["generation": c.generation, "time": c.time, "duration_seconds": c.durationSeconds, "rows_written": c.rowsWritten,
     "rows_deleted": c.rowsDeleted, "bytes_written": c.bytesWritten, "payload_bytes": c.payload.count]
}

func checkpointLine(_ c: CheckpointInfo) -> String {
    guard c.generation > 0 else { return "none (generation 0: nothing written yet)" }
    let date = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: c.time))
    return "generation \(c.generation) at \(date), "
        + "wrote \(c.rowsWritten) rows (\(humanBytes(c.bytesWritten))), deleted \(c.rowsDeleted); payload \(humanBytes(c.payload.count))"
}

func tableSummary(_ s: TableStatistics) -> [String: Any] {
    let d = describe(s.spec)
    let t = s.trafficBeforeOpen + s.traffic
    return ["name": s.name, "dimension": s.spec.dimension, "storage": d.storage, "optimizer": d.optimizer,
            "initializer": d.initializer, "record_bytes": s.recordBytes, "rows": s.rows.total,
            "rows_hot": s.rows.hot, "rows_warm": s.rows.warm, "rows_spill": s.rows.spill, "rows_cold": s.rows.cold,
            "lmdb_bytes": s.bytes.coldOnDisk, "hot_bytes": s.bytes.hotUsed, "warm_bytes": s.bytes.warmUsed,
            "accesses": t.accesses, "hot_hits": t.hotHits, "warm_hits": t.warmHits, "spill_hits": t.spillHits,
            "cold_hits": t.coldHits, "initializer_hits": t.initializerHits, "promotions": t.promotions,
            "hot_to_warm": t.hotToWarm, "to_spill": t.toSpill, "dropped": t.dropped]
}

func printTable(_ header: [String], _ rows: [[String]]) {
    let widths = header.indices.map { c in ([header[c]] + rows.map { $0[c] }).map(\.count).max()! }
    func line(_ cells: [String]) -> String {
        cells.indices.map { c in c == 0 ? cells[c].padding(toLength: widths[c], withPad: " ", startingAt: 0) : cells[c].leftPadded(widths[c]) }
            .joined(separator: "  ")
    }
    print(line(header))
    rows.forEach { print(line($0)) }
}

/// `strata inspect STORE TABLE`: one table in detail, with distributions over its rows.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show one table: spec, rows and bytes per tier, traffic, and histograms of update counts and row norms.",
        discussion: """
            Traffic (hits per tier, promotions, evictions) is summed over every earlier open of the store, \
            as of its last checkpoint. The histograms stream over the rows of the last checkpoint.
            """)

    @OptionGroup var access: StoreAccess
    @Argument(help: "The table.") var table: String
    @Option(parsing: .unconditional, help: "Bins of the row-norm histogram.") var bins = 10
    @Flag(help: "Print one JSON object.") var json = false

    func validate() throws {
        try OptionCheck.whole(bins, "--bins", 1...1000)
    }

    func run() throws {
        try access.withShardsForReading { stores in
            let tables = try stores.map { try StoreAccess.table($0, table) }
            // Two passes over every shard's rows: the first finds the ranges, the second fills the bins.
            var maxCount: UInt64 = 0, minNorm = Double.infinity, maxNorm = 0.0, rows = 0
            for t in tables {
                try t.scanCheckpoint(withState: false) { batch in
                    for i in 0..<batch.count {
                        maxCount = max(maxCount, batch.updateCounts[i])
                        let n = norm(batch.values(at: i))
                        minNorm = min(minNorm, n)
                        maxNorm = max(maxNorm, n)
                    }
                    rows += batch.count
                }
            }
            var counts = TextHistogram(powersOfTwoUpTo: maxCount)
            var norms = TextHistogram(low: rows == 0 ? 0 : minNorm, high: maxNorm, bins: bins)
            for t in tables {
                try t.scanCheckpoint(withState: false) { batch in
                    for i in 0..<batch.count {
                        counts.add(Double(batch.updateCounts[i]))
                        norms.add(norm(batch.values(at: i)))
                    }
                }
            }
            let statistics = try tables.map { try $0.statistics() }
            if json {
                var objects = statistics.map(tableSummary)
                for i in objects.indices { objects[i]["checkpoint"] = checkpointSummary(stores[i].lastCheckpoint) }
                var object = access.isShardSet ? ["shard_set": access.store, "shards": objects] as [String: Any] : objects[0]
                object["update_count_histogram"] = counts.json
                object["norm_histogram"] = norms.json
                try printJSON(object)
                return
            }
            if access.isShardSet { print("table '\(table)' in the shard set \(access.store): \(stores.count) shards, \(rows) rows") }
            for (i, s) in statistics.enumerated() {
                if access.isShardSet { print("\nshard \(i):") }
                show(s, in: stores[i])
            }
            print("update counts (rows of the last checkpoint\(access.isShardSet ? ", every shard" : "")):")
            counts.lines(integers: true).forEach { print($0) }
            print("row L2 norms:")
            norms.lines(integers: false).forEach { print($0) }
        }
    }

    private func show(_ s: TableStatistics, in store: Store) {
        let d = describe(s.spec)
        let traffic = s.trafficBeforeOpen + s.traffic
        func pct(_ x: Int) -> String { traffic.accesses == 0 ? "-" : String(format: "%.1f%%", 100 * Double(x) / Double(traffic.accesses)) }
        print("table '\(s.name)' in \(store.path)")
        print("  dimension \(s.spec.dimension), storage \(d.storage), optimizer \(d.optimizer), initializer \(d.initializer)")
        print("  record \(s.recordBytes) bytes (values and optimizer state)")
        print("rows: \(s.rows.total) written; hot \(s.rows.hot), warm \(s.rows.warm), spill \(s.rows.spill), LMDB only \(s.rows.cold)")
        print("bytes: LMDB \(humanBytes(s.bytes.coldOnDisk)), hot \(humanBytes(s.bytes.hotUsed)), warm \(humanBytes(s.bytes.warmUsed))")
        print("traffic, all opens to the last checkpoint: \(traffic.accesses) row accesses; hits hot \(pct(traffic.hotHits)), "
              + "warm \(pct(traffic.warmHits)), spill \(pct(traffic.spillHits)), LMDB \(pct(traffic.coldHits)), "
              + "never written \(pct(traffic.initializerHits))")
        print("  promotions to hot \(traffic.promotions); evictions: hot to warm \(traffic.hotToWarm), to spill \(traffic.toSpill), dropped \(traffic.dropped)")
        print("last checkpoint: " + checkpointLine(store.lastCheckpoint))
    }
}

func norm(_ values: ArraySlice<Float>) -> Double {
    var sum = 0.0
    for v in values { sum += Double(v) * Double(v) }
    return sum.squareRoot()
}

/// `strata get STORE TABLE KEY...`: rows in full.
struct Get: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print rows: values, optimizer state, tier, update count and last change.",
        discussion: "A key never written (or removed) shows the initializer's value, and says so.")

    @OptionGroup var access: StoreAccess
    @Argument(help: "The table.") var table: String
    @Argument(help: "Keys: unsigned 64-bit integers, decimal or 0x-hexadecimal.") var keys: [String]
    @Flag(help: "Print one JSON object per key.") var json = false

    func validate() throws {
        guard !keys.isEmpty else { throw ValidationError("give at least one key") }
        for k in keys { _ = try parseKey(k) }
    }

    func run() throws {
        let parsed = try keys.map(parseKey)
        try access.withShardsForReading { stores in
            let tables = try stores.map { try StoreAccess.table($0, table) }
            // In a shard set, each key from its owner's shard.
            let namespace = FeatureSchema.namespace(table)
            try show(parsed) { try tables[KeyOwner.rank(of: $0, namespace: namespace, ranks: tables.count)].row($0) }
        }
    }

    private func show(_ parsed: [UInt64], _ rowOf: (UInt64) throws -> RowSnapshot) throws {
        for key in parsed {
            let row = try rowOf(key)
            let written = row.placement != .initial
            if json {
                try printJSON(["key": key, "written": written, "tier": row.placement.rawValue, "values": row.values,
                               "optimizer_state": row.optimizerState, "update_count": row.updateCount,
                               "change_generation": row.changeGeneration])
                continue
            }
            print("key \(key):")
            if written {
                print("  tier \(row.placement.rawValue == "cold" ? "LMDB" : row.placement.rawValue), updated \(row.updateCount) times, "
                      + "last change in checkpoint \(row.changeGeneration)")
            } else {
                print("  never written (or removed): the initializer's value")
            }
            print("  values: " + row.values.map(\.description).joined(separator: " "))
            if !row.optimizerState.isEmpty {
                print("  optimizer state: " + row.optimizerState.map(\.description).joined(separator: " "))
            }
        }
    }
}

/// `strata verify STORE`: every record checked.
struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check every record of every tier: headers, checksums, dimensions, the index.",
        discussion: "Exits 0 when nothing is wrong, 1 when something is, naming the table, key and file.")

    @OptionGroup var access: StoreAccess
    @Option(parsing: .unconditional, help: "Stop listing after this many problems.") var limit = 100
    @Flag(help: "Print one JSON object.") var json = false

    func validate() throws { try OptionCheck.whole(limit, "--limit", 1...Int.max) }

    func run() throws {
        try access.withShardsForReading { stores in
            var problems: [IntegrityProblem] = []
            var rows = 0
            for (rank, store) in stores.enumerated() {
                for name in store.tableNames {
                    let t = try store.table(name)
                    problems += try t.verify(limit: limit)
                    rows += try t.statistics().rows.total
                    if stores.count > 1 { problems += try misplaced(t, rank: rank, of: stores.count, in: store) }
                }
                // One run's shards: its checkpoint, the same in each.
                if rank > 0 && (store.lastCheckpoint.generation != stores[0].lastCheckpoint.generation
                                || store.lastCheckpoint.payload != stores[0].lastCheckpoint.payload) {
                    problems.append(IntegrityProblem(table: nil, key: nil, file: store.path,
                        detail: "at checkpoint \(store.lastCheckpoint.generation) with \(store.lastCheckpoint.payload.count) payload bytes; shard 0 is at \(stores[0].lastCheckpoint.generation) with \(stores[0].lastCheckpoint.payload.count): not the same checkpoint of the run"))
                }
            }
            let tables = Set(stores.flatMap(\.tableNames)).count
            let what = access.isShardSet ? "the shard set \(access.store) (\(stores.count) shards)" : stores[0].path
            if json {
                try printJSON(["store": access.isShardSet ? access.store : stores[0].path, "shards": stores.count, "tables": tables,
                               "rows": rows, "repaired_on_open": stores.flatMap(\.openReport), "problems": problems.map(\.description)])
            } else {
                for line in stores.flatMap(\.openReport) { print("repaired on open: \(line)") }
                for p in problems.prefix(limit) { print("problem: \(p)") }
                print(problems.isEmpty
                      ? "ok: \(tables) tables, \(rows) rows\(access.isShardSet ? " in \(stores.count) shards, each row in its owner's" : ""), every record checked"
                      : "\(problems.count) problem\(problems.count == 1 ? "" : "s") in \(what)")
            }
            if !problems.isEmpty { throw ExitCode(1) }
        }
    }

    /// Rows of shard `rank` that another rank owns (`KeyOwner`): a run would never read them.
    private func misplaced(_ t: Table, rank: Int, of ranks: Int, in store: Store) throws -> [IntegrityProblem] {
        var found: [IntegrityProblem] = []
        let namespace = FeatureSchema.namespace(t.name)
        try t.scanCheckpoint(withState: false) { batch in
            for key in batch.keys where found.count < limit {
                let owner = KeyOwner.rank(of: key, namespace: namespace, ranks: ranks)
                if owner != rank {
                    found.append(IntegrityProblem(table: t.name, key: key, file: store.path,
                                                  detail: "the row is in shard \(rank), and its owner is shard \(owner) of \(ranks)"))
                }
            }
        }
        return found
    }
}
