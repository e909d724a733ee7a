import ArgumentParser
import Foundation
import StrataStore

/// `strata roundtrip`: the store's whole life on a table larger than its memory budget.
struct Roundtrip: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write, checkpoint, reopen and read back a table larger than the memory budget, tier by tier.",
        discussion: """
            Creates a store (replacing an earlier roundtrip's at --store; any other non-empty directory is \
            refused), writes --rows rows with one row-wise Adagrad \
            step each, checkpoints, closes, reopens and reads every row back twice (once moving rows into the hot \
            tier, once read-only), checking each against the same arithmetic done on its own. Prints what each \
            tier held and did after every phase.
            """)

    @Option(help: "Store directory: new, empty, or an earlier roundtrip's (replaced).") var store = "strata-data/roundtrip"
    @Option(help: "Rows to write.") var rows = 1_500_000
    @Option(help: "Floats per row.") var dim = 64
    @Option(help: "Hot tier budget in MiB.") var hotMb = 8
    @Option(help: "Warm tier budget in MiB.") var warmMb = 24

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
            earlier = db.tableNames == ["embeddings"] && db.lastCheckpoint.payload == Array("roundtrip".utf8)
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
        let (store, rows, dim) = (self.store, self.rows, self.dim)
        try Self.removeEarlierRoundtrip(store)
        var options = Store.Options()
        options.budget = TierBudget(hotBytes: hotMb << 20, warmBytes: warmMb << 20)
        options.mapResidentBytes = 32 << 20
        let spec = TableSpec(dimension: dim, initializer: .init(.uniform(low: -0.05, high: 0.05), seed: 7),
                             optimizer: .rowwiseAdagrad(learningRate: 0.05))
        let batch = 1024
        let baseline = residentBytes()

        var db = try Store(path: store, options: options)
        var table = try db.createTable("embeddings", spec)
        let recordBytes = try table.statistics().recordBytes
        print("store \(store): table 'embeddings', \(rows) rows x \(dim) floats (\(recordBytes) bytes a record), "
              + "budgets hot \(hotMb) MiB, warm \(warmMb) MiB, LMDB map resident \(options.mapResidentBytes >> 20) MiB")
        print("the table is \(fmt(Double(rows * recordBytes) / Double(options.budget.hotBytes + options.budget.warmBytes + options.mapResidentBytes)))x the memory budget")

        var t0 = now()
        for start in stride(from: 0, to: rows, by: batch) {
            let k = keys(start, min(batch, rows - start))
            try table.applyGradients(k, k.flatMap(gradient))
        }
        phase("write", t0, table)
        t0 = now()
        let info = try db.checkpoint(payload: Array("roundtrip".utf8))
        print("checkpoint \(info.generation): \(info.rowsWritten) rows, \(fmt(Double(info.bytesWritten) / 1_048_576)) MiB "
              + "in \(fmt(info.durationSeconds)) s")
        phase("checkpoint", t0, table)
        try db.close()

        t0 = now()
        db = try Store(path: store, options: options)
        table = try db.table("embeddings")
        print("reopened at checkpoint \(db.lastCheckpoint.generation) in \(fmt(now() - t0)) s")
        for note in db.openReport { print("  open: \(note)") }

        var mismatches = 0
        for pass in ["lookup", "peek"] {
            t0 = now()
            for start in stride(from: 0, to: rows, by: batch) {
                let k = keys(start, min(batch, rows - start))
                let got = pass == "lookup" ? try table.lookup(k) : try table.peek(k)
                for (i, key) in k.enumerated() where !same(got, i, expected(key, spec)) { mismatches += 1 }
            }
            phase("read back (\(pass))", t0, table)
        }
        try db.close()
        print("resident memory grew \(fmt(Double(residentBytes() - baseline) / 1_048_576)) MiB over the run")
        if mismatches > 0 {
            print("FAILED: \(mismatches) rows differ from the expected values")
            throw ExitCode.failure
        }
        print("all \(rows) rows read back bit-identical, twice")

        func keys(_ start: Int, _ n: Int) -> [UInt64] { (start..<(start + n)).map(scrambledKey) }
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
}
