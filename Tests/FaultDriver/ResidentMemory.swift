import StrataStore
import StrataTestSupport

/// Writes a table many times larger than the store's memory budgets, checkpoints, then reads
/// every row back twice (lookup and read-only peek), checking each against the arithmetic
/// done in isolation. Prints the resident set's growth over the run, the budgets and the
/// table's size on disk.
enum ResidentMemory {
    static func run(_ args: [String]) throws -> Int32 {
        let a = Arguments(args)
        let rows = a.int("rows")
        let batch = 1024
        var options = Store.Options()
        options.budget = TierBudget(hotBytes: a.int("hot-kb") << 10, warmBytes: a.int("warm-kb") << 10)
        options.mapResidentBytes = a.int("map-kb") << 10
        options.initialMapBytes = 8 << 20
        let spec = TableSpec(dimension: 64, initializer: .init(.uniform(low: -0.1, high: 0.1), seed: 11),
                             optimizer: .rowwiseAdagrad(learningRate: 0.05))
        let store = try Store(path: a.string("store"), options: options)
        let table = try store.createTable("big", spec)
        let d = spec.dimension

        func gradient(_ key: UInt64) -> [Float] {
            (0..<d).map { Float(Int((key &* 31 &+ UInt64($0)) % 201) - 100) / 1000 }
        }
        func expected(_ key: UInt64) -> [Float] {
            var reference = ReferenceTable(spec: spec)
            reference.apply([key], gradient(key))
            return reference.row(key).values
        }

        var keys = [UInt64](repeating: 0, count: batch)
        var grads = [Float](repeating: 0, count: batch * d)
        var out = [Float](repeating: 0, count: batch * d)
        let baseline = residentBytes()
        var peak = baseline
        var mismatches = 0

        for start in stride(from: 0, to: rows, by: batch) {
            let n = min(batch, rows - start)
            for i in 0..<n {
                keys[i] = UInt64(start + i) &* 0x9E37_79B9_7F4A_7C15
                let g = gradient(keys[i])
                for j in 0..<d { grads[i * d + j] = g[j] }
            }
            try table.applyGradients(Array(keys[..<n]), Array(grads[..<(n * d)]))
            if (start / batch) % 64 == 63 { try store.checkpoint() }
            peak = max(peak, residentBytes())
        }
        try store.checkpoint()
        peak = max(peak, residentBytes())

        for pass in 0..<2 {
            for start in stride(from: 0, to: rows, by: batch) {
                let n = min(batch, rows - start)
                let k = (0..<n).map { UInt64(start + $0) &* 0x9E37_79B9_7F4A_7C15 }
                out = pass == 0 ? try table.lookup(k) : try table.peek(k)
                // Checking every 7th batch keeps the reference arithmetic off the profile.
                if (start / batch) % 7 == 0 {
                    for i in 0..<n where !bitIdentical(Array(out[(i * d)..<((i + 1) * d)]), expected(k[i])) { mismatches += 1 }
                }
                peak = max(peak, residentBytes())
            }
        }
        let stats = try table.statistics()
        say("rows \(stats.rows.total)")
        say("baseline \(baseline)")
        say("growth \(peak - baseline)")
        say("hot-budget \(options.budget.hotBytes)")
        say("warm-budget \(options.budget.warmBytes)")
        say("map-budget \(options.mapResidentBytes ?? 0)")
        say("overhead \(stats.bytes.overhead)")
        say("cold-bytes \(stats.bytes.coldOnDisk)")
        say("record-bytes \(stats.recordBytes)")
        say("mismatches \(mismatches)")
        try store.close()
        return mismatches == 0 ? 0 : 1
    }
}
