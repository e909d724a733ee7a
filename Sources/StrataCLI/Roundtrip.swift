import ArgumentParser
import Foundation
import StrataStore
import StrataTraining

/// `strata roundtrip`: the store's whole life on a table larger than its memory budget.
struct Roundtrip: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write, checkpoint, reopen, read back and train a table larger than the memory budget, tier by tier.",
        discussion: """
            Creates a store (replacing an earlier roundtrip's at --store; any other non-empty directory is \
            refused), writes --rows rows with one row-wise Adagrad step each (checkpointing every \
            --checkpoint-rows rows beside the writes, and at the end), closes, reopens and reads every row \
            back twice (once moving rows into the hot tier, once read-only), checking each against the same \
            arithmetic done on its own. With --train-batches, then trains: each batch looks up --train-batch \
            keys drawn from a Zipf law over the rows and applies a gradient step to them, with a checkpoint \
            every --checkpoint-every batches written beside the batches that follow; and reopens once more. \
            Prints what each tier held and did after every phase, and the process's resident memory by kind \
            (anonymous, file-backed, dirty file pages), sampled every second. tools/larger-than-ram.sh runs \
            it on a table larger than the machine's memory.
            """)

    enum KeyOrder: String, ExpressibleByArgument, CaseIterable {
        /// 64-bit ids scattered over the key space, as hashed ids are: LMDB inserts them at
        /// random places, which leaves its pages about 70% full.
        case hashed
        /// Keys 0..<rows, written in key order, as row indices are: LMDB's pages fill.
        case dense
    }

    @Option(help: "Store directory: new, empty, or an earlier roundtrip's (replaced).") var store = "strata-data/roundtrip"
    @Option(parsing: .unconditional, help: "Rows to write.") var rows = 1_500_000
    @Option(parsing: .unconditional, help: "Floats per row.") var dim = 64
    @Option(parsing: .unconditional, help: "Hot tier budget in MiB.") var hotMb = 8
    @Option(parsing: .unconditional, help: "Warm tier budget in MiB.") var warmMb = 24
    @Option(parsing: .unconditional, help: "LMDB map pages kept resident, MiB.") var mapResidentMb = 32
    @Option(help: "Keys: \(KeyOrder.allCases.map(\.rawValue).joined(separator: " or ")).") var keys = KeyOrder.hashed
    @Option(parsing: .unconditional, help: "Rows written between checkpoints while writing (0: one checkpoint, after the last row).")
    var checkpointRows = 0
    @Option(parsing: .unconditional, help: "Training batches after the read-back (0: none).") var trainBatches = 0
    @Option(parsing: .unconditional, help: "Keys per training batch.") var trainBatch = 4096
    @Option(parsing: .unconditional, help: "Zipf exponent of the training keys.") var zipf = 1.05
    @Option(parsing: .unconditional, help: "Training batches between checkpoints.") var checkpointEvery = 1000
    @Flag(help: "End with one line of JSON holding every figure.") var json = false

    func validate() throws {
        try OptionCheck.whole(rows, "--rows", 1...Int.max)
        try OptionCheck.whole(dim, "--dim", 1...65_536)
        for (flag, value) in [("--hot-mb", hotMb), ("--warm-mb", warmMb)] {
            try OptionCheck.whole(value, flag, 0...(Int.max >> 21))
        }
        try OptionCheck.whole(mapResidentMb, "--map-resident-mb", 1...(Int.max >> 21))
        try OptionCheck.whole(checkpointRows, "--checkpoint-rows", 0...Int.max)
        try OptionCheck.whole(trainBatches, "--train-batches", 0...Int.max)
        try OptionCheck.whole(trainBatch, "--train-batch", 1...(1 << 20))
        try OptionCheck.require(zipf > 0 && zipf.isFinite, "--zipf must be a positive number, not \(zipf)")
        try OptionCheck.whole(checkpointEvery, "--checkpoint-every", 1...Int.max)
    }

    /// Removes the store an earlier roundtrip left at `path`, and nothing else: a directory
    /// that holds other files, or a store of other tables, is refused.
    static func removeEarlierRoundtrip(_ path: String) throws {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        guard !entries.isEmpty else { return }
        var options = Store.Options()
        options.create = false
        var earlier = false
        do {
            let db = try Store(path: path, options: options)
            earlier = db.tableNames == ["embeddings"] && db.lastCheckpoint.payload == payload
            try db.close()
        } catch {
            guard case .noStore = error else { throw error }
        }
        guard earlier else {
            throw ValidationError("--store \(path) holds something other than an earlier roundtrip's store; give a new or empty directory")
        }
        try Store.remove(at: path)
    }

    func run() throws {
        // Plain copies: reading an @Option in a per-row loop costs a metadata lookup each time.
        let (store, rows, dim, order) = (self.store, self.rows, self.dim, self.keys)
        try Self.removeEarlierRoundtrip(store)
        var options = Store.Options()
        options.budget = TierBudget(hotBytes: hotMb << 20, warmBytes: warmMb << 20)
        options.mapResidentBytes = mapResidentMb << 20
        let spec = TableSpec(dimension: dim, initializer: .init(.uniform(low: -0.05, high: 0.05), seed: 7),
                             optimizer: .rowwiseAdagrad(learningRate: 0.05))
        let batch = 1024
        let baseline = residentBytes()
        var figures: [String: Double] = ["rows": Double(rows), "dim": Double(dim)]
        var memory = MemorySamples()

        var db: Store
        do { db = try Store(path: store, options: options) } catch { throw ToolError("--store \(store): \(error)") }
        var table = try db.createTable("embeddings", spec)
        let recordBytes = try table.statistics().recordBytes
        let budget = options.budget.hotBytes + options.budget.warmBytes + (mapResidentMb << 20)
        print("store \(store): table 'embeddings', \(rows) rows x \(dim) floats (\(recordBytes) bytes a record, "
              + "\(order.rawValue) keys), budgets hot \(hotMb) MiB, warm \(warmMb) MiB, LMDB map resident \(mapResidentMb) MiB")
        print("the table is \(fmt(Double(rows * recordBytes) / Double(budget)))x the memory budget; its records take "
              + "\(byteText(rows * recordBytes)), its values and optimizer state \(byteText(rows * 4 * (dim + 1)))")
        figures["record_bytes"] = Double(recordBytes)
        figures["budget_bytes"] = Double(budget)

        var checkpoints = CheckpointTally()
        var t0 = now()
        var sinceCheckpoint = 0
        var longestBatch = 0.0
        for start in stride(from: 0, to: rows, by: batch) {
            let b0 = now()
            let k = keys(start, min(batch, rows - start))
            try table.applyGradients(k, k.flatMap(gradient))
            sinceCheckpoint += k.count
            var pacing = 0.0
            if checkpointRows > 0 && sinceCheckpoint >= checkpointRows {
                pacing = try checkpoints.begin(db)
                sinceCheckpoint = 0
            }
            longestBatch = max(longestBatch, now() - b0 - pacing)
            memory.sample()
        }
        try checkpoints.settle()
        figures["write_rows_per_second"] = Double(rows) / (now() - t0)
        figures["write_longest_batch_seconds"] = longestBatch
        figures["write_checkpoint_wait_seconds"] = checkpoints.waited
        phase("write", t0, table)
        let c0 = now()
        let info = try checkpoints.final(db)
        print("checkpoint \(info.generation): \(info.rowsWritten) rows, \(fmt(Double(info.bytesWritten) / 1_048_576)) MiB "
              + "in \(fmt(info.durationSeconds)) s")
        if checkpoints.count > 1 {
            print("checkpoints while writing: \(checkpoints); writes waited \(fmt(checkpoints.waited)) s in all for the one before "
                  + "to end, longest batch otherwise \(fmt(longestBatch * 1e3)) ms")
        }
        figures["write_seconds"] = now() - t0
        figures["write_checkpoints"] = Double(checkpoints.count)
        figures["write_checkpoint_seconds_total"] = checkpoints.seconds
        figures["write_checkpoint_seconds_longest"] = checkpoints.longest
        figures["final_checkpoint_seconds"] = now() - c0
        phase("checkpoint", c0, table)
        try db.close()

        t0 = now()
        db = try Store(path: store, options: options)
        table = try db.table("embeddings")
        figures["reopen_seconds"] = now() - t0
        print("reopened at checkpoint \(db.lastCheckpoint.generation) in \(fmt(now() - t0)) s")
        for note in db.openReport { print("  open: \(note)") }

        var mismatches = 0
        for pass in ["lookup", "peek"] {
            t0 = now()
            for start in stride(from: 0, to: rows, by: batch) {
                let k = keys(start, min(batch, rows - start))
                let got = pass == "lookup" ? try table.lookup(k) : try table.peek(k)
                for (i, key) in k.enumerated() where !same(got, i, expected(key, spec)) { mismatches += 1 }
                memory.sample()
            }
            figures["read_\(pass)_rows_per_second"] = Double(rows) / (now() - t0)
            phase("read back (\(pass))", t0, table)
        }
        if mismatches > 0 {
            print("FAILED: \(mismatches) rows differ from the expected values")
            throw ExitCode.failure
        }
        print("all \(rows) rows read back bit-identical, twice")

        if trainBatches > 0 {
            try train(db, table, &figures, &memory)
            t0 = now()
            db = try Store(path: store, options: options)
            figures["reopen_after_training_seconds"] = now() - t0
            print("reopened at checkpoint \(db.lastCheckpoint.generation) in \(fmt(now() - t0)) s")
        }
        let stats = try db.table("embeddings").statistics()
        try db.close()
        let disk = allocatedBytes(store)
        figures["lmdb_bytes_per_row"] = Double(stats.bytes.coldOnDisk) / Double(max(stats.rows.total, 1))
        figures["disk_bytes"] = Double(disk)
        figures["disk_bytes_per_row"] = Double(disk) / Double(max(stats.rows.total, 1))
        figures["disk_vs_values_and_state"] = Double(disk) / Double(stats.rows.total * 4 * (dim + 1))
        print("disk: \(byteText(disk)) for \(stats.rows.total) rows, \(fmt(Double(disk) / Double(max(stats.rows.total, 1)))) bytes a row "
              + "(\(fmt(figures["disk_vs_values_and_state"]!))x the values and optimizer state); LMDB pages "
              + "\(fmt(figures["lmdb_bytes_per_row"]!)) bytes a row")
        print("resident memory grew \(fmt(Double(residentBytes() - baseline) / 1_048_576)) MiB over the run; \(memory)")
        memory.report(into: &figures)
        if json {
            let object = figures.mapValues { $0.isFinite ? $0 : 0 }
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        }

        func keys(_ start: Int, _ n: Int) -> [UInt64] { (start..<(start + n)).map { key(of: $0, order) } }
        func gradient(_ key: UInt64) -> [Float] { (0..<dim).map { Float(Int((key >> UInt64($0 % 48)) & 127) - 64) / 640 } }
        func same(_ got: [Float], _ i: Int, _ want: [Float]) -> Bool {
            (0..<dim).allSatisfy { got[i * dim + $0].bitPattern == want[$0].bitPattern }
        }
        func expected(_ key: UInt64, _ spec: TableSpec) -> [Float] {
            var values = [Float](repeating: 0, count: dim)
            var state: [Float] = [0]
            let g = gradient(key)
            values.withUnsafeMutableBufferPointer { v in
                spec.initializer.fill(v.baseAddress!, key: key, dimension: dim)
                state.withUnsafeMutableBufferPointer { s in
                    spec.optimizer.initializeState(s.baseAddress!, dimension: dim)
                    g.withUnsafeBufferPointer { gp in
                        spec.optimizer.apply(values: v.baseAddress!, state: s.baseAddress!, gradient: gp.baseAddress!,
                                             dimension: dim, step: 1, learningRate: spec.optimizer.learningRate)
                    }
                }
            }
            return values
        }
        func phase(_ name: String, _ start: Double, _ table: Table) {
            guard let s = try? table.statistics() else { return }
            let t = s.traffic
            print("\(name): \(fmt(now() - start)) s; rows hot \(s.rows.hot), warm \(s.rows.warm), spill \(s.rows.spill), "
                  + "cold \(s.rows.cold); hits hot \(t.hotHits), warm \(t.warmHits), spill \(t.spillHits), cold \(t.coldHits), "
                  + "new \(t.initializerHits); moved hot->warm \(t.hotToWarm), to spill \(t.toSpill), dropped \(t.dropped); "
                  + "LMDB \(fmt(Double(s.bytes.coldOnDisk) / 1_048_576)) MiB; resident \(fmt(Double(residentBytes() - baseline) / 1_048_576)) MiB above start")
        }
    }

    /// Zipf-skewed training on the written rows: rank r (from 0) is row r x a fixed prime mod
    /// rows, so that the hot rows spread over the whole table and its pages.
    private func train(_ db: Store, _ table: Table, _ figures: inout [String: Double], _ memory: inout MemorySamples) throws {
        let (rows, dim, n, order) = (self.rows, self.dim, trainBatch, self.keys)
        let law = ZipfDistribution(count: Int64(rows), exponent: zipf)
        let prime: UInt64 = rows % 2_654_435_761 == 0 ? 4_294_967_291 : 2_654_435_761
        var rng = SplitMix64(seed: 11)
        var batchKeys = [UInt64](repeating: 0, count: n)
        var out = [Float](repeating: 0, count: n * dim)
        let grads = (0..<(n * dim)).map { Float($0 % 97 - 48) / 1000 }
        var latencies: [Double] = []
        latencies.reserveCapacity(trainBatches)
        var checkpoints = CheckpointTally()
        let before = try table.statistics().traffic
        let t0 = now()
        for b in 1...trainBatches {
            for i in 0..<n {
                let rank = UInt64(law.sample(&rng) - 1)
                let row = UInt64(rows).dividingFullWidth(rank.multipliedFullWidth(by: prime)).remainder
                batchKeys[i] = key(of: Int(row), order)
            }
            let b0 = now()
            try batchKeys.withUnsafeBufferPointer { k in
                try out.withUnsafeMutableBufferPointer { try table.lookup(k, into: $0) }
                try grads.withUnsafeBufferPointer { try table.applyGradients(k, $0) }
            }
            let pacing = b % checkpointEvery == 0 ? try checkpoints.begin(db) : 0
            latencies.append(now() - b0 - pacing)
            memory.sample()
        }
        try checkpoints.settle()
        let c0 = now()
        _ = try checkpoints.final(db)
        let seconds = now() - t0
        let t = try table.statistics().traffic
        let accesses = Double(max(t.accesses - before.accesses, 1))
        latencies.sort()
        figures["train_keys_per_second"] = Double(trainBatches * n) / seconds
        figures["train_keys_per_second_without_final_checkpoint"] = Double(trainBatches * n) / (c0 - t0)
        figures["train_batch_p50_seconds"] = quantile(latencies, 0.5)
        figures["train_batch_p99_seconds"] = quantile(latencies, 0.99)
        figures["train_batch_longest_seconds"] = latencies.last ?? 0
        figures["train_checkpoint_wait_seconds"] = checkpoints.waited
        figures["train_checkpoints"] = Double(checkpoints.count)
        figures["train_checkpoint_rows_mean"] = Double(checkpoints.rows) / Double(max(checkpoints.count, 1))
        figures["train_checkpoint_bytes_mean"] = Double(checkpoints.bytes) / Double(max(checkpoints.count, 1))
        figures["train_checkpoint_seconds_mean"] = checkpoints.seconds / Double(max(checkpoints.count, 1))
        figures["train_checkpoint_seconds_longest"] = checkpoints.longest
        figures["train_hit_hot"] = Double(t.hotHits - before.hotHits) / accesses
        figures["train_hit_warm_and_spill"] = Double(t.warmHits + t.spillHits - before.warmHits - before.spillHits) / accesses
        figures["train_hit_lmdb"] = Double(t.coldHits - before.coldHits) / accesses
        print("train: \(trainBatches) batches of \(n) Zipf(\(zipf)) keys in \(fmt(seconds)) s, \(fmt(figures["train_keys_per_second"]! / 1e6))M keys/s "
              + "(lookup and gradient step); batch p50 \(fmt(figures["train_batch_p50_seconds"]! * 1e3)) ms, p99 "
              + "\(fmt(figures["train_batch_p99_seconds"]! * 1e3)) ms, longest \(fmt(figures["train_batch_longest_seconds"]! * 1e3)) ms; "
              + "hits hot \(fmt(figures["train_hit_hot"]! * 100))%, warm and spill \(fmt(figures["train_hit_warm_and_spill"]! * 100))%, "
              + "LMDB \(fmt(figures["train_hit_lmdb"]! * 100))%")
        print("checkpoints while training: \(checkpoints); batches waited \(fmt(checkpoints.waited)) s in all for the one before to end")
        try db.close()
    }
}

/// The row of `index` under `order`'s keys.
private func key(of index: Int, _ order: Roundtrip.KeyOrder) -> UInt64 {
    order == .dense ? UInt64(index) : scrambledKey(index)
}

/// What an earlier roundtrip's checkpoints carry, so that the next one knows its store.
private let payload = Array("roundtrip".utf8)

/// The checkpoints of a phase, each written beside the batches that follow and begun once
/// the one before is durable: how many, their rows, bytes and seconds, and how long the
/// batches waited for one to end before the next could begin.
private struct CheckpointTally: CustomStringConvertible {
    var count = 0, rows = 0, bytes = 0
    var seconds = 0.0, longest = 0.0, waited = 0.0
    private var pending: PendingCheckpoint?

    /// Waits for the checkpoint being written, then begins the next; returns the seconds
    /// waited, which are pacing, not a stall (the freeze is).
    mutating func begin(_ db: Store) throws -> Double {
        let w0 = now()
        try settle()
        let wait = now() - w0
        waited += wait
        pending = try db.beginCheckpoint(payload: payload)
        return wait
    }

    /// Waits for the checkpoint being written, if any.
    mutating func settle() throws {
        if let p = pending { add(try p.wait()) }
        pending = nil
    }

    /// The phase's last checkpoint, in place.
    mutating func final(_ db: Store) throws -> CheckpointInfo {
        let info = try db.checkpoint(payload: payload)
        add(info)
        return info
    }

    private mutating func add(_ info: CheckpointInfo) {
        count += 1
        rows += info.rowsWritten + info.rowsDeleted
        bytes += info.bytesWritten
        seconds += info.durationSeconds
        longest = max(longest, info.durationSeconds)
    }

    var description: String {
        "\(count), \(rows) rows and \(byteText(bytes)) in all, \(fmt(seconds / Double(max(count, 1)))) s each on average, "
            + "longest \(fmt(longest)) s"
    }
}

/// The largest resident memory of each kind, sampled at most once a second.
private struct MemorySamples: CustomStringConvertible {
    var largest = ProcessMemory(anonymous: 0, fileBacked: 0, fileDirty: 0, peak: 0)
    var last = 0.0

    mutating func sample() {
        let t = now()
        guard t - last >= 1, let m = ProcessMemory.current() else { return }
        last = t
        largest.raise(to: m)
    }

    func report(into figures: inout [String: Double]) {
        figures["resident_anonymous_bytes_max"] = Double(largest.anonymous)
        figures["resident_file_bytes_max"] = Double(largest.fileBacked)
        figures["resident_file_dirty_bytes_max"] = Double(largest.fileDirty)
        figures["resident_peak_bytes"] = Double(largest.peak)
    }

    var description: String {
        "largest resident memory sampled: anonymous \(byteText(largest.anonymous)), file-backed \(byteText(largest.fileBacked)) "
            + "(dirty \(byteText(largest.fileDirty))); high-water mark \(byteText(largest.peak))"
    }
}
