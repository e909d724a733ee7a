import StrataStore
import StrataTestSupport

/// Runs the crash scenario from its last checkpoint until killed or `--operations` are done.
/// Prints `begin N` before the checkpoint holding N operations and `done G N` after
/// checkpoint G completed.
enum CrashWriter {
    static func run(_ args: [String]) throws -> Int32 {
        let a = Arguments(args)
        let (store, tables) = try CrashScenario.open(a.string("store"))
        let start = CrashScenario.operations(in: store.lastCheckpoint)
        let end = start + a.int("operations", default: Int.max / 2)
        var workload = CrashScenario.workload(seed: UInt64(a.int("seed")))
        for _ in 0..<start { _ = workload.next() }
        say("resumed \(store.lastCheckpoint.generation) \(start)")
        for index in start..<end {
            let table = tables[CrashScenario.table(for: index)]
            switch workload.next() {
            case .lookup(let keys): _ = try table.lookup(keys)
            case .peek(let keys): _ = try table.peek(keys)
            case .apply(let keys, let g, let lr): try table.applyGradients(keys, g, learningRate: lr)
            case .remove(let keys): try table.remove(keys)
            case .reopen: break
            case .checkpoint:
                say("begin \(index + 1)")
                let info = try store.checkpoint(payload: CrashScenario.payload(operations: index + 1))
                say("done \(info.generation) \(index + 1)")
            }
        }
        say("finished")
        return 0
    }
}
