@_spi(Testing) import StrataStore
import StrataTestSupport

/// Runs the crash scenario from its last checkpoint until killed or `--operations` are done.
/// Prints `begin N` before the checkpoint holding N operations and `done G N` after
/// checkpoint G completed. With `--in-flight 1`, each checkpoint is written in the background
/// while the operations after it go on (the next waits for it). `--transaction-pages P`
/// splits each checkpoint into transactions of P pages (readers in another process then
/// find it half written for longer). `--map-bytes B` starts a new store's LMDB map at B bytes
/// (a small one grows sooner). With `--close 1` it closes the store after the last
/// checkpoint and prints `closed` (a clean close writes each table's warm.index).
enum CrashWriter {
    static func run(_ args: [String]) throws -> Int32 {
        let a = Arguments(args)
        var options = CrashScenario.options()
        let pages = a.int("transaction-pages", default: 0)
        if pages > 0 { options.transactionPagesForTesting = pages }
        options.initialMapBytes = a.int("map-bytes", default: options.initialMapBytes)
        let (store, tables) = try CrashScenario.open(a.string("store"), options: options)
        let start = CrashScenario.operations(in: store.lastCheckpoint)
        let end = start + a.int("operations", default: Int.max / 2)
        let inFlight = a.int("in-flight", default: 0) != 0
        var workload = CrashScenario.workload(seed: UInt64(a.int("seed")))
        for _ in 0..<start { _ = workload.next() }
        say("resumed \(store.lastCheckpoint.generation) \(start)")
        var writing: (checkpoint: PendingCheckpoint, operations: Int)?
        func written() throws {
            guard let (checkpoint, operations) = writing else { return }
            writing = nil
            say("done \(try checkpoint.wait().generation) \(operations)")
        }
        for index in start..<end {
            if let writing, writing.checkpoint.outcome != nil { try written() }
            let op = workload.next()
            if try !CrashScenario.run(op, index: index, on: tables), case .checkpoint = op {
                try written()
                say("begin \(index + 1)")
                let payload = CrashScenario.payload(operations: index + 1)
                if inFlight {
                    writing = (try store.beginCheckpoint(payload: payload), index + 1)
                } else {
                    let info = try store.checkpoint(payload: payload)
                    say("done \(info.generation) \(index + 1)")
                }
            }
        }
        try written()
        if a.int("close", default: 0) != 0 {
            try store.close()
            say("closed")
        }
        say("finished")
        return 0
    }
}
