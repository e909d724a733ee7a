// held-checkpoint --store PATH --signals DIR --checkpoints M [--hold-after K] [--die-at G]
//
// Writes the crash scenario's store (new) so that a test can read it from another process
// at chosen moments: runs the workload to its first checkpoint (prints `done 1 N`, N its
// operations), waits for the file DIR/next, then runs on through checkpoints 2...M. In each
// of those, after its transaction K (default 2: the first that writes rows) it prints
// `holding G` and waits for DIR/go.G, so LMDB holds part of the checkpoint meanwhile; with
// --die-at G it ends the process there instead (exit 0, the checkpoint half written). After
// checkpoint M it waits for DIR/close, closes the store and prints `closed`. A wait that
// lasts five minutes is an error.
@_spi(Testing) import StrataStore
import StrataTestSupport
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

enum HeldCheckpoint {
    static func run(_ args: [String]) throws -> Int32 {
        let a = Arguments(args)
        let signals = a.string("signals")
        let last = a.int("checkpoints")
        let holdAfter = a.int("hold-after", default: 2)
        let dieAt = a.int("die-at", default: 0)
        // The generation being written, once holding is armed (0 before).
        let writing = Mutex(0)
        var options = CrashScenario.options()
        options.afterCheckpointTransactionForTesting = { (transaction) throws(StoreError) in
            let generation = writing.withLock { $0 }
            guard generation > 0, transaction == holdAfter else { return }
            say("holding \(generation)")
            if generation == dieAt { _exit(0) }
            guard awaitFile(signals + "/go.\(generation)") else { throw .closed }
        }
        let (store, tables) = try CrashScenario.open(a.string("store"), options: options)
        var workload = CrashScenario.workload(seed: UInt64(a.int("seed")))
        var index = 0
        while store.lastCheckpoint.generation < last {
            let generation = store.lastCheckpoint.generation + 1
            let op = workload.next()
            if try !CrashScenario.run(op, index: index, on: tables), case .checkpoint = op {
                writing.withLock { $0 = generation > 1 ? Int(generation) : 0 }
                let info = try store.checkpoint(payload: CrashScenario.payload(operations: index + 1))
                say("done \(info.generation) \(index + 1)")
                if info.generation == 1 && last > 1 && !awaitFile(signals + "/next") {
                    say("error no \(signals)/next")
                    return 1
                }
            }
            index += 1
        }
        guard awaitFile(signals + "/close") else {
            say("error no \(signals)/close")
            return 1
        }
        try store.close()
        say("closed")
        return 0
    }

    /// Waits for `path` to exist, up to five minutes.
    private static func awaitFile(_ path: String) -> Bool {
        for _ in 0..<300_000 {
            if access(path, F_OK) == 0 { return true }
            usleep(1000)
        }
        return false
    }
}
