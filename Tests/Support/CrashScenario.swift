// The run the crash test kills again and again: three tables of different kinds under budgets
// so small that rows keep moving between hot, warm, spill and LMDB, and an LMDB map small
// enough to grow several times. The run resumes from its last checkpoint after each kill;
// the checkpoint's payload says how many operations it holds.
public import StrataStore

public enum CrashScenario {
    public static let dimension = 8

    public static let tables: [(name: String, spec: TableSpec)] = [
        ("adam", TableSpec(dimension: dimension, initializer: .init(.normal(mean: 0, standardDeviation: 0.1), seed: 3),
                           optimizer: .adam(learningRate: 0.01))),
        ("ftrl-bf16", TableSpec(dimension: dimension, storage: .bfloat16,
                                initializer: .init(.uniform(low: -0.05, high: 0.05), seed: 4),
                                optimizer: .ftrl(alpha: 0.1, beta: 1, l1: 0.001, l2: 0.01))),
        ("rowwise-f16", TableSpec(dimension: dimension, storage: .float16, optimizer: .rowwiseAdagrad(learningRate: 0.05))),
    ]

    public static func options() -> Store.Options {
        .small(TierBudget(hotBytes: 2048, warmBytes: 6144))
    }

    public static func workload(seed: UInt64) -> Workload {
        Workload(seed: seed, dimension: dimension, keySpace: 3000, checkpointEvery: 25, allowReopen: false)
    }

    /// Every key the workload can touch.
    public static var keys: [UInt64] { Array(0..<3000) + (0..<4).map { UInt64.max - $0 } }

    /// Opens (creating if needed) the scenario's store and tables.
    public static func open(_ path: String, options: Store.Options = options()) throws -> (Store, [Table]) {
        let store = try Store(path: path, options: options)
        let tables = try Self.tables.map { try store.createTable($0.name, $0.spec) }
        return (store, tables)
    }

    /// The number of operations a checkpoint holds, from its payload.
    public static func operations(in checkpoint: CheckpointInfo) -> Int {
        checkpoint.payload.count == 8 ? Int(checkpoint.payload.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }) : 0
    }

    public static func payload(operations: Int) -> [UInt8] {
        withUnsafeBytes(of: UInt64(operations)) { Array($0) }
    }

    /// Operation `index` goes to table `index % tables.count`.
    public static func table(for index: Int) -> Int { index % tables.count }

    /// Runs operation `index` on its table if it reads or changes rows; returns false for a
    /// checkpoint or reopening, which the caller does its own way.
    public static func run(_ op: Operation, index: Int, on tables: [Table]) throws -> Bool {
        let table = tables[table(for: index)]
        switch op {
        case .lookup(let keys): _ = try table.lookup(keys)
        case .peek(let keys): _ = try table.peek(keys)
        case .apply(let keys, let g, let lr): try table.applyGradients(keys, g, learningRate: lr)
        case .remove(let keys): try table.remove(keys)
        case .checkpoint, .reopen: return false
        }
        return true
    }

    /// Applies to the references what operation `index` does to rows.
    public static func replay(_ op: Operation, index: Int, into references: inout [ReferenceTable]) {
        switch op {
        case .apply(let keys, let g, let lr): references[table(for: index)].apply(keys, g, learningRate: lr)
        case .remove(let keys): references[table(for: index)].remove(keys)
        case .lookup, .peek, .checkpoint, .reopen: break
        }
    }
}
