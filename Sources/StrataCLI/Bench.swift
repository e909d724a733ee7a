import ArgumentParser
import Foundation
@_spi(Baseline) import StrataStore

/// `strata bench`: lookup and update speed per tier against plain baselines measured in the
/// same run, batch latency on a Zipf mix, and the hot tier's hit ratio against the best
/// static cache.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure each tier against plain baselines on this machine.",
        discussion: """
            Builds a table of --rows rows (row-wise Adagrad) in a scratch store, then measures, in one run:
              hot lookups vs a gather from one flat array holding as many rows as the hot tier;
              warm and cold reads (the read-only path) vs hot lookups and raw LMDB (mdb_get + copy);
              row-wise Adagrad updates on hot rows vs the same arithmetic on flat arrays;
              batch latency on a Zipf 1.0 mix with hot at 1% and warm at 10% of the rows;
              the hot tier's hit ratio on Zipf traces vs the best static cache of the same size;
              with --only checkpoint (not run by default): the longest a batch of updates waits while
              a checkpoint of --checkpoint-rows changed rows is written, and update throughput with a
              checkpoint every --checkpoint-batches batches, in the background and in place, vs none.
            Ratios, not absolute times, are what compare across machines.
            """)

    @Option(parsing: .unconditional, help: "Rows in the benchmark table.") var rows = 1_000_000
    @Option(parsing: .unconditional, help: "Floats per row.") var dim = 64
    @Option(parsing: .unconditional, help: "Keys per batch.") var batch = 1024
    @Option(parsing: .unconditional, help: "Rows in the hot tier for the hot, update and warm measurements (default: all rows).")
    var hotRows: Int?
    @Option(parsing: .unconditional, help: "Seconds spent on each timed measurement.") var seconds = 1.0
    @Option(help: "Directory for the scratch store (default: a new temporary directory, removed afterwards).")
    var dir: String?
    @Option(help: """
        Measure this existing store instead of building one (with --table). It is never \
        checkpointed: its rows and last checkpoint stay as they were (its warm tier is rebuilt). \
        It must not be open elsewhere.
        """)
    var store: String?
    @Option(help: "The table of --store to measure.") var table: String?
    @Option(parsing: .unconditional, help: "Changed rows in each checkpoint of the checkpoint measurement.") var checkpointRows = 1_500_000
    @Option(parsing: .unconditional, help: "Batches between checkpoints in the checkpoint measurement's throughput runs.")
    var checkpointBatches = 200
    @Option(help: "Measurements to run, comma-separated: hot, update, warm, cold, latency, policy, checkpoint.")
    var only = "hot,update,warm,cold,latency,policy"
    @Flag(help: "Print one JSON object instead of text.") var json = false
    @Option(name: .customLong("report"), help: """
        Also write DIR/bench.json (the figures, with every sampled batch latency) and pictures of         it: latency-cdf (per tier and for the Zipf mix) and hit-ratio (against cache size, with the         static optimum), as PNG and SVG, drawn by tools/plot-report.py with matplotlib.
        """)
    var reportDirectory: String?
    @Flag(help: "Tiny sizes and short timings: checks that the benchmark runs; its figures mean nothing.")
    var quick = false

    func validate() throws {
        try OptionCheck.whole(rows, "--rows", 1...(1 << 31))
        try OptionCheck.whole(dim, "--dim", 1...65_536)
        try OptionCheck.whole(batch, "--batch", 1...(1 << 20))
        if let hotRows { try OptionCheck.whole(hotRows, "--hot-rows", 1...Int.max) }
        try OptionCheck.number(seconds, "--seconds", 0.001...86_400)
        try OptionCheck.whole(checkpointRows, "--checkpoint-rows", 1...(1 << 31))
        try OptionCheck.whole(checkpointBatches, "--checkpoint-batches", 1...Int.max)
        if let table, store == nil { throw ValidationError("--table \(table) measures a table of --store, which is not given") }
        let known: Set = ["hot", "update", "warm", "cold", "latency", "policy", "checkpoint"]
        for name in only.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            try OptionCheck.require(known.contains(name), "--only: '\(name)' is not a measurement; choose from \(known.sorted().joined(separator: ", "))")
        }
    }

    func run() throws {
        // Plain copies: reading an @Option in a loop costs a metadata lookup each time.
        let (batch, json) = (self.batch, self.json)
        let log: (String) -> Void = { if !json { print($0) } }
        let perMeasure = quick ? 0.02 : seconds
        var grads: [Float] = []
        var store: Store
        var table: Table

        // The table: an existing one (never checkpointed here), or one built now with every
        // row written once, then checkpointed.
        let path: String, tableName: String, spec: TableSpec, keys: [UInt64]
        var buildSeconds = 0.0, checkpointSeconds = 0.0
        if let existing = self.store {
            guard let name = self.table else { throw ValidationError("--store \(existing) needs --table, the table to measure") }
            (path, tableName) = (existing, name)
            store = try open(path, hot: 1 << 20, warm: 0, create: false)
            table = try store.table(name)
            spec = table.spec
            keys = try table.storedKeys(limit: quick ? 12_000 : rows)
            try store.close()
            guard !keys.isEmpty else { throw ValidationError("table '\(name)' has no checkpointed rows") }
            grads = gradients(batch * spec.dimension)
        } else {
            (path, tableName) = (dir ?? temporaryPath(), "bench")
            // The user's --dir loses only a store an earlier bench left there: a directory
            // holding anything else is refused, never emptied.
            if let dir {
                do { try Store.remove(at: dir) } catch { throw ToolError("--dir \(dir): \(error)") }
            } else {
                try? FileManager.default.removeItem(atPath: path)
            }
            spec = TableSpec(dimension: dim, initializer: .init(.uniform(low: -0.05, high: 0.05), seed: 1),
                             optimizer: .rowwiseAdagrad(learningRate: 0.01))
            keys = (0..<(quick ? 12_000 : rows)).map(scrambledKey)
            grads = gradients(batch * spec.dimension)
            store = try open(path, hot: 64 << 20, warm: 0)
            table = try store.createTable(tableName, spec)
            var started = now()
            for start in stride(from: 0, to: keys.count, by: batch) {
                let n = min(batch, keys.count - start)
                try table.applyGradients(Array(keys[start..<(start + n)]), Array(grads[..<(n * spec.dimension)]))
            }
            buildSeconds = now() - started
            started = now()
            try store.checkpoint()
            checkpointSeconds = now() - started
            try store.close()
        }
        defer { if self.store == nil && dir == nil { try? FileManager.default.removeItem(atPath: path) } }
        let dim = spec.dimension
        let r = keys.count
        let h = min(quick ? 2_000 : hotRows ?? r, r)
        var report = BenchReport(dim: dim, batch: batch, rows: r, hotRows: h)
        report.buildSeconds = buildSeconds
        report.checkpointSeconds = checkpointSeconds
        store = try open(path, hot: 1 << 20, warm: 0)
        let built = try store.table(tableName).statistics()
        let recordBytes = built.recordBytes
        report.diskBytesPerRow = Double(built.bytes.coldOnDisk) / Double(max(built.rows.total, 1))
        report.diskVsRaw = report.diskBytesPerRow / Double(4 * (dim + spec.optimizer.stateCount(dimension: dim)))
        let origin = self.store == nil ? "built in \(fmt(buildSeconds)) s, checkpoint \(fmt(checkpointSeconds)) s" : path
        log("\(tableName): \(built.rows.total) rows of \(dim) floats, \(spec.optimizer.name) (\(origin)); "
            + "\(fmt(report.diskBytesPerRow)) bytes per row in LMDB (\(fmt(report.diskVsRaw))x the raw values and state)")
        try store.close()

        let phases = Set(only.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        // Batch latencies in microseconds per series, for --report.
        var latencies: [String: [Double]] = [:]
        let sampled = reportDirectory == nil ? 0 : (quick ? 50 : 1000)
        func sampleLatencies(_ body: (Int) throws -> Void) throws -> [Double]? {
            guard sampled > 0 else { return nil }
            return try (0..<sampled).map { b in
                let t0 = now()
                try body(b)
                return (now() - t0) * 1e6
            }
        }
        let hotKeys = Array(keys[..<h])
        var rng = SplitMix64(seed: 42)
        let uniform = (0..<64).map { _ in (0..<batch).map { _ in Int(rng.next() % UInt64(h)) } }
        let uniformKeys = uniform.map { $0.map { hotKeys[$0] } }
        let distinct = (0..<64).map { _ in distinctSample(batch, from: h, &rng) }
        let distinctKeys = distinct.map { $0.map { hotKeys[$0] } }
        var out = [Float](repeating: 0, count: batch * dim)

        // Hot: the first h rows, all in the hot tier; the flat baseline holds the same rows.
        if !phases.isDisjoint(with: ["hot", "update"]) {
            store = try open(path, hot: (h + h / 8 + 1024) * recordBytes, warm: 0)
            table = try store.table(tableName)
            for _ in 0..<2 { for s in stride(from: 0, to: h, by: batch) { _ = try table.lookup(Array(hotKeys[s..<min(s + batch, h)])) } }
            let flat = try table.peek(hotKeys)
            report.hotResident = Double(try table.statistics().rows.hot) / Double(h)
            if phases.contains("hot") {
                let gather = FlatRows(values: flat, dim: dim)
                let pairs = try compare(seconds: perMeasure, batches: uniform.count, rowsPerBatch: batch,
                    baseline: { b in gather.gather(uniform[b], into: &out) },
                    subject: { b in try lookup(table, uniformKeys[b], &out) })
                report.flatGatherNsPerRow = pairs.baseline
                report.hotNsPerRow = pairs.subject
                latencies["hot"] = try sampleLatencies { b in try lookup(table, uniformKeys[b % uniformKeys.count], &out) }
                log("hot lookup \(fmt(report.hotNsPerRow)) ns/row; flat gather \(fmt(report.flatGatherNsPerRow)) ns/row "
                    + "(\(fmt(report.hotNsPerRow / report.flatGatherNsPerRow))x; \(Int(report.hotResident * 100))% of rows hot)")
            }
            if phases.contains("update") {
                var updater = FlatOptimizer(values: flat, spec: spec)
                let updates = try compare(seconds: perMeasure, batches: distinct.count, rowsPerBatch: batch,
                    baseline: { b in updater.step(distinct[b], grads) },
                    subject: { b in try table.applyGradients(distinctKeys[b], grads) })
                report.updateFlatNsPerRow = updates.baseline
                report.updateNsPerRow = updates.subject
                log("\(spec.optimizer.name) on hot rows \(fmt(report.updateNsPerRow)) ns/row; on flat arrays "
                    + "\(fmt(report.updateFlatNsPerRow)) ns/row (\(fmt(report.updateNsPerRow / report.updateFlatNsPerRow))x)")
            }
            try store.close()
        }

        // Warm: the same rows pushed into the warm tier by a tiny hot tier; read without moving them.
        if phases.contains("warm") {
            store = try open(path, hot: 1024 * recordBytes, warm: (h + h / 8 + 1024) * recordBytes)
            table = try store.table(tableName)
            for s in stride(from: 0, to: h, by: batch) { _ = try table.lookup(Array(hotKeys[s..<min(s + batch, h)])) }
            report.warmResident = Double(try table.statistics().rows.warm) / Double(h)
            report.warmNsPerRow = try time(seconds: perMeasure, batches: uniform.count, rowsPerBatch: batch) { b in
                try peek(table, uniformKeys[b], &out)
            }
            latencies["warm"] = try sampleLatencies { b in try peek(table, uniformKeys[b % uniformKeys.count], &out) }
            log("warm read \(fmt(report.warmNsPerRow)) ns/row (\(Int(report.warmResident * 100))% of rows warm; "
                + "\(fmt(report.warmNsPerRow / report.hotNsPerRow))x hot)")
            try store.close()
        }

        // Cold: every row only in LMDB, its pages in the page cache and, like raw LMDB's, mapped.
        if phases.contains("cold") {
            store = try open(path, hot: 1024 * recordBytes, warm: 0)
            table = try store.table(tableName)
            for s in stride(from: 0, to: r, by: batch) { _ = try table.peek(Array(keys[s..<min(s + batch, r)])) }
            let spread = (0..<64).map { _ in (0..<batch).map { _ in keys[Int(rng.next() % UInt64(r))] } }
            var raw = [UInt8](repeating: 0, count: batch * dim * 4)
            let cold = try compare(seconds: perMeasure, batches: spread.count, rowsPerBatch: batch,
                baseline: { b in
                    _ = try spread[b].withUnsafeBufferPointer { k in
                        try raw.withUnsafeMutableBytes { try table.rawColdGather(k, into: $0.baseAddress!, bytesPerRow: dim * 4) }
                    }
                },
                subject: { b in try peek(table, spread[b], &out) })
            report.rawLmdbNsPerRow = cold.baseline
            report.coldNsPerRow = cold.subject
            latencies["cold"] = try sampleLatencies { b in try peek(table, spread[b % spread.count], &out) }
            log("cold read \(fmt(report.coldNsPerRow)) ns/row; raw LMDB get + copy \(fmt(report.rawLmdbNsPerRow)) ns/row "
                + "(\(fmt(report.coldNsPerRow / report.rawLmdbNsPerRow))x)")
            try store.close()

            // Again with LMDB's resident pages capped at 64 MiB: the store drops them from its
            // page tables as reads go, so reads fault them back in.
            report.mapResidentBytes = 64 << 20
            store = try open(path, hot: 1024 * recordBytes, warm: 0, mapResident: report.mapResidentBytes)
            table = try store.table(tableName)
            report.coldCappedNsPerRow = try time(seconds: perMeasure, batches: spread.count, rowsPerBatch: batch) { b in
                try peek(table, spread[b], &out)
            }
            log("cold read with LMDB's resident pages capped at \(report.mapResidentBytes >> 20) MiB: "
                + "\(fmt(report.coldCappedNsPerRow)) ns/row")
            try store.close()
        }

        let order = permutation(r, &rng)

        // Latency of one batch lookup on a Zipf 1.0 mix, hot 1% and warm 10% of the rows.
        if phases.contains("latency") {
            store = try open(path, hot: max(r / 100, 1) * recordBytes, warm: max(r / 10, 1) * recordBytes)
            table = try store.table(tableName)
            var zipf = Zipf(count: r, exponent: 1.0)
            let warmupBatches = quick ? 20 : max(200, 5 * r / batch)
            for _ in 0..<warmupBatches { try lookup(table, (0..<batch).map { _ in keys[order[zipf.draw(&rng)]] }, &out) }
            var mix: [Double] = []
            for _ in 0..<(quick ? 50 : 2000) {
                let k = (0..<batch).map { _ in keys[order[zipf.draw(&rng)]] }
                let t0 = now()
                try lookup(table, k, &out)
                mix.append((now() - t0) * 1e6)
            }
            latencies["zipf 1.0 mix"] = mix
            mix.sort()
            report.p50Us = quantile(mix, 0.5)
            report.p99Us = quantile(mix, 0.99)
            let traffic = try table.statistics().traffic
            log("Zipf 1.0 batch of \(batch): p50 \(fmt(report.p50Us)) us, p99 \(fmt(report.p99Us)) us "
                + "(hot hit ratio \(fmt(traffic.hotHitRatio * 100))%)")
            try store.close()
        }

        // Hit ratio of the hot tier against the best static cache of the same size.
        if phases.contains("policy") {
            for exponent in [0.9, 1.0, 1.1] {
                var z = Zipf(count: r, exponent: exponent)
                // More cache sizes for the report's curve.
                for fraction in reportDirectory == nil ? [0.01, 0.1] : [0.003, 0.01, 0.03, 0.1, 0.3] {
                    store = try open(path, hot: max(Int(Double(r) * fraction), 1) * recordBytes, warm: 0)
                    table = try store.table(tableName)
                    let capacity = try table.statistics().hotCapacityRows
                    let warmup = quick ? 20_000 : max(60 * capacity, 2 * r)
                    let measured = quick ? 20_000 : max(20 * capacity, r)
                    var done = 0
                    while done < warmup {
                        try lookup(table, (0..<batch).map { _ in keys[order[z.draw(&rng)]] }, &out)
                        done += batch
                    }
                    let before = try table.statistics().traffic
                    done = 0
                    while done < measured {
                        try lookup(table, (0..<batch).map { _ in keys[order[z.draw(&rng)]] }, &out)
                        done += batch
                    }
                    let after = try table.statistics().traffic
                    let ratio = Double(after.hotHits - before.hotHits) / Double(after.accesses - before.accesses)
                    let entry = PolicyEntry(zipf: exponent, cacheFraction: fraction, hitRatio: ratio,
                                            staticOptimum: z.topMass(capacity), capacityRows: capacity)
                    report.policy.append(entry)
                    log("Zipf \(exponent), hot \(fmt(fraction * 100))% (\(capacity) rows): hit ratio "
                        + "\(fmt(ratio * 100))%, best static \(fmt(entry.staticOptimum * 100))%")
                    try store.close()
                }
            }
        }

        if phases.contains("checkpoint") {
            report.checkpoint = try measureCheckpoints(path + "-checkpoint", spec: spec, log: log)
        }

        report.finish()
        if let directory = reportDirectory {
            try writeReport(report, latencies: latencies, to: directory)
        }
        if json {
            let encoder = JSONEncoder()
            encoder.keyEncodingStrategy = .convertToSnakeCase
        // Ratios of phases --only left out are 0/0.
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print("hot_vs_flat \(fmt(report.hotVsFlat)) (flat gather \(fmt(report.flatGatherNsPerRow)) ns/row)  warm_vs_hot \(fmt(report.warmVsHot))  "
                  + "cold_vs_raw_lmdb \(fmt(report.coldVsRawLmdb))  update_vs_flat \(fmt(report.updateVsFlat))")
        }
    }

    /// DIR/bench.json and its pictures.
    private func writeReport(_ figures: BenchReport, latencies: [String: [Double]], to directory: String) throws {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        // Ratios of phases --only left out are 0/0.
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        var object = try JSONSerialization.jsonObject(with: try encoder.encode(figures)) as? [String: Any] ?? [:]
        object["latency"] = latencies.mapValues { ["samples_us": $0] }
        object["machine"] = machineDescription()
        try writeJSONReport(object, named: "bench.json", in: directory)
        drawReport("bench", directory)
    }

    /// Batches of updates while checkpoints of many changed rows are written: the longest wait
    /// a batch sees, and throughput with frequent checkpoints, in the background and in place.
    private func measureCheckpoints(_ path: String, spec: TableSpec, log: (String) -> Void) throws -> CheckpointFigures {
        try? FileManager.default.removeItem(atPath: path)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let n = quick ? 20_000 : checkpointRows
        let keys = (0..<n).map(scrambledKey)
        let grads = gradients(batch * spec.dimension)
        var figures = CheckpointFigures(rows: n, batchesBetween: checkpointBatches)
        // Everything hot: the measurement is of the checkpoint, not of tiers.
        let store = try open(path, hot: (n + n / 4 + 4096) * (spec.dimension + 8) * 4 + (64 << 20), warm: 0)
        let table = try store.createTable("checkpoint", spec)
        func changeAll() throws {
            for start in stride(from: 0, to: n, by: batch) {
                let m = min(batch, n - start)
                try table.applyGradients(Array(keys[start..<(start + m)]), Array(grads[..<(m * spec.dimension)]))
            }
        }
        var rng = SplitMix64(seed: 9)
        let batches = (0..<64).map { _ in distinctSample(batch, from: n, &rng).map { keys[$0] } }
        var b = 0
        /// One batch of updates; its seconds.
        func step() throws -> Double {
            let t0 = now()
            try table.applyGradients(batches[b % batches.count], grads)
            b += 1
            return now() - t0
        }
        try changeAll()
        var t0 = now()
        try store.checkpoint()
        figures.firstCheckpointSeconds = now() - t0

        // In place: the batch after it waits for the whole write.
        try changeAll()
        t0 = now()
        try store.checkpoint()
        figures.inPlaceSeconds = now() - t0

        // In the background: batches go on. First, batches alone for comparison.
        var alone = try (0..<200).map { _ in try step() }
        alone.sort()
        figures.batchMedianMs = quantile(alone, 0.5) * 1e3
        figures.batchMaxMs = alone.last! * 1e3
        try changeAll()
        t0 = now()
        let pending = try store.beginCheckpoint()
        figures.freezeMs = (now() - t0) * 1e3
        var during: [Double] = []
        while pending.outcome == nil { during.append(try step()) }
        let info = try pending.wait()
        figures.backgroundSeconds = info.durationSeconds
        figures.batchesDuring = during.count
        during.sort()
        figures.duringMedianMs = during.isEmpty ? 0 : quantile(during, 0.5) * 1e3
        figures.duringMaxMs = during.last.map { $0 * 1e3 } ?? 0
        figures.longestStallMs = max(figures.freezeMs, figures.duringMaxMs)
        log("checkpoint of \(n) changed rows: in place \(fmt(figures.inPlaceSeconds)) s (every batch waits for it); "
            + "in the background \(fmt(figures.backgroundSeconds)) s, freezing \(fmt(figures.freezeMs)) ms, "
            + "\(figures.batchesDuring) batches of \(batch) updates meanwhile: median \(fmt(figures.duringMedianMs)) ms, "
            + "longest \(fmt(figures.duringMaxMs)) ms (alone: median \(fmt(figures.batchMedianMs)) ms, longest \(fmt(figures.batchMaxMs)) ms)")

        // Throughput: the same batches with no checkpoint, a checkpoint every
        // `checkpointBatches` in the background, and in place.
        let rounds = quick ? 2 : 5
        /// Updates per second over the batches, `checkpoint` run after every
        /// `checkpointBatches`, and `finish` (waiting for the last) in the time.
        func rate(_ checkpoint: (() throws -> Void)?, finish: () throws -> Void = {}) throws -> Double {
            let t0 = now()
            for i in 1...(rounds * checkpointBatches) {
                _ = try step()
                if i % checkpointBatches == 0, let checkpoint { try checkpoint() }
            }
            try finish()
            return Double(rounds * checkpointBatches * batch) / (now() - t0)
        }
        var writing: PendingCheckpoint?
        figures.updatesPerSecondNone = try rate(nil)
        figures.updatesPerSecondBackground = try rate({
            _ = try writing?.wait()
            writing = try store.beginCheckpoint()
        }, finish: { _ = try writing?.wait() })
        figures.updatesPerSecondInPlace = try rate { try store.checkpoint() }
        log("updates with a checkpoint every \(checkpointBatches) batches: in the background "
            + "\(fmt(figures.updatesPerSecondBackground / figures.updatesPerSecondNone))x, in place "
            + "\(fmt(figures.updatesPerSecondInPlace / figures.updatesPerSecondNone))x the rate without "
            + "(\(fmt(figures.updatesPerSecondNone / 1e6)) M rows/s)")
        try store.close()
        return figures
    }

    private func open(_ path: String, hot: Int, warm: Int, mapResident: Int? = nil, create: Bool = true) throws -> Store {
        var options = Store.Options()
        options.create = create && self.store == nil
        options.budget = TierBudget(hotBytes: hot, warmBytes: warm)
        if let mapResident { options.mapResidentBytes = mapResident }
        do { return try Store(path: path, options: options) } catch {
            guard let option = self.store != nil ? "--store" : dir != nil ? "--dir" : nil else { throw error }
            throw ToolError("\(option) \(path): \(error)")
        }
    }
}

/// Median nanoseconds per row of `body` over all batches, in rounds until `seconds` is spent.
private func time(seconds: Double, batches: Int, rowsPerBatch: Int, _ body: (Int) throws -> Void) throws -> Double {
    try compare(seconds: seconds, batches: batches, rowsPerBatch: rowsPerBatch, baseline: { _ in }, subject: body).subject
}

/// Runs baseline and subject in alternating rounds over the same batches until `seconds` is
/// spent on each, and returns each one's median nanoseconds per row.
private func compare(seconds: Double, batches: Int, rowsPerBatch: Int,
                     baseline: (Int) throws -> Void, subject: (Int) throws -> Void) throws -> (baseline: Double, subject: Double) {
    var base: [Double] = [], sub: [Double] = []
    var spent = 0.0
    var round = 0
    // One untimed pass of each warms caches and page tables.
    for b in 0..<batches { try baseline(b); try subject(b) }
    while spent < 2 * seconds || round < 3 {
        var t0 = now()
        for b in 0..<batches { try baseline(b) }
        let t1 = now()
        for b in 0..<batches { try subject(b) }
        let t2 = now()
        base.append((t1 - t0) * 1e9 / Double(batches * rowsPerBatch))
        sub.append((t2 - t1) * 1e9 / Double(batches * rowsPerBatch))
        spent += t2 - t0
        round += 1
        t0 = t2
    }
    return (median(base), median(sub))
}

private func lookup(_ table: Table, _ keys: [UInt64], _ out: inout [Float]) throws {
    try keys.withUnsafeBufferPointer { k in
        try out.withUnsafeMutableBufferPointer { o in
            try table.lookup(k, into: UnsafeMutableBufferPointer(rebasing: o[..<(k.count * table.spec.dimension)]))
        }
    }
}

private func peek(_ table: Table, _ keys: [UInt64], _ out: inout [Float]) throws {
    try keys.withUnsafeBufferPointer { k in
        try out.withUnsafeMutableBufferPointer { o in
            try table.peek(k, into: UnsafeMutableBufferPointer(rebasing: o[..<(k.count * table.spec.dimension)]))
        }
    }
}

/// The flat baseline: rows in one contiguous array, gathered by row number.
private struct FlatRows {
    let values: [Float]
    let dim: Int

    func gather(_ ids: [Int], into out: inout [Float]) {
        values.withUnsafeBufferPointer { v in
            out.withUnsafeMutableBufferPointer { o in
                for (j, id) in ids.enumerated() {
                    (o.baseAddress! + j * dim).update(from: v.baseAddress! + id * dim, count: dim)
                }
            }
        }
    }
}

/// The table's optimizer on flat arrays (values, state, step counts), calling the very
/// function the store calls, so the arithmetic is the same.
private struct FlatOptimizer {
    var values: [Float]
    var state: [Float]
    var steps: [UInt64]
    let spec: TableSpec

    init(values: [Float], spec: TableSpec) {
        self.values = values
        self.spec = spec
        let rows = values.count / spec.dimension
        let s = spec.optimizer.stateCount(dimension: spec.dimension)
        state = [Float](repeating: 0, count: max(rows * s, 1))
        steps = [UInt64](repeating: 0, count: rows)
        state.withUnsafeMutableBufferPointer { p in
            for row in 0..<rows where s > 0 { spec.optimizer.initializeState(p.baseAddress! + row * s, dimension: spec.dimension) }
        }
    }

    mutating func step(_ ids: [Int], _ gradients: [Float]) {
        let d = spec.dimension, s = spec.optimizer.stateCount(dimension: d)
        let optimizer = spec.optimizer, rate = optimizer.learningRate
        values.withUnsafeMutableBufferPointer { v in
            state.withUnsafeMutableBufferPointer { a in
                steps.withUnsafeMutableBufferPointer { t in
                    gradients.withUnsafeBufferPointer { g in
                        for (j, id) in ids.enumerated() {
                            t[id] += 1
                            optimizer.apply(values: v.baseAddress! + id * d, state: a.baseAddress! + id * s,
                                            gradient: g.baseAddress! + j * d, dimension: d, step: t[id], learningRate: rate)
                            spec.storage.round(v.baseAddress! + id * d, count: d)
                        }
                    }
                }
            }
        }
    }
}

private func gradients(_ count: Int) -> [Float] {
    (0..<count).map { Float($0 % 97 - 48) / 1000 }
}

private func distinctSample(_ n: Int, from range: Int, _ rng: inout SplitMix64) -> [Int] {
    var seen = Set<Int>()
    var out: [Int] = []
    while out.count < min(n, range) {
        let x = Int(rng.next() % UInt64(range))
        if seen.insert(x).inserted { out.append(x) }
    }
    return out
}

private func permutation(_ n: Int, _ rng: inout SplitMix64) -> [Int] {
    var p = Array(0..<n)
    for i in stride(from: n - 1, to: 0, by: -1) { p.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
    return p
}

private func temporaryPath() -> String {
    NSTemporaryDirectory() + "strata-bench-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
}

func fmt(_ x: Double) -> String {
    if !x.isFinite { return "n/a" }
    if abs(x) >= 100 { return String(format: "%.0f", x) }
    if abs(x) >= 10 { return String(format: "%.1f", x) }
    return String(format: "%.2f", x)
}

struct PolicyEntry: Codable {
    var zipf: Double
    var cacheFraction: Double
    var hitRatio: Double
    var staticOptimum: Double
    var capacityRows: Int
}

struct BenchReport: Codable {
    var dim: Int
    var batch: Int
    var rows: Int
    var hotRows: Int
    var buildSeconds = 0.0, checkpointSeconds = 0.0, diskBytesPerRow = 0.0, diskVsRaw = 0.0
    var hotResident = 0.0, warmResident = 0.0
    var flatGatherNsPerRow = 0.0, hotNsPerRow = 0.0, warmNsPerRow = 0.0, coldNsPerRow = 0.0, rawLmdbNsPerRow = 0.0
    var coldCappedNsPerRow = 0.0, mapResidentBytes = 0
    var updateNsPerRow = 0.0, updateFlatNsPerRow = 0.0
    var hotVsFlat = 0.0, warmVsHot = 0.0, coldVsRawLmdb = 0.0, updateVsFlat = 0.0
    var p50Us = 0.0, p99Us = 0.0
    var policy: [PolicyEntry] = []
    var checkpoint: CheckpointFigures?

    init(dim: Int, batch: Int, rows: Int, hotRows: Int) {
        self.dim = dim
        self.batch = batch
        self.rows = rows
        self.hotRows = hotRows
    }

    mutating func finish() {
        hotVsFlat = hotNsPerRow / flatGatherNsPerRow
        warmVsHot = warmNsPerRow / hotNsPerRow
        coldVsRawLmdb = coldNsPerRow / rawLmdbNsPerRow
        updateVsFlat = updateNsPerRow / updateFlatNsPerRow
    }
}

/// `--only checkpoint`: batches of updates while checkpoints are written.
struct CheckpointFigures: Codable {
    var rows: Int
    var batchesBetween: Int
    var firstCheckpointSeconds = 0.0, inPlaceSeconds = 0.0, backgroundSeconds = 0.0
    /// Batches of updates with no checkpoint: median and longest milliseconds.
    var batchMedianMs = 0.0, batchMaxMs = 0.0
    /// `beginCheckpoint` itself, and the batches while the checkpoint it began was written.
    var freezeMs = 0.0, batchesDuring = 0, duringMedianMs = 0.0, duringMaxMs = 0.0
    /// The longest a batch waited: the freeze, or the slowest batch during the write.
    var longestStallMs = 0.0
    var updatesPerSecondNone = 0.0, updatesPerSecondBackground = 0.0, updatesPerSecondInPlace = 0.0
}
