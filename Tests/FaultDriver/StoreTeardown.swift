// store-teardown --store PATH [--rounds N] [--threads T]
//
// Drops the last reference to a Store while other threads run peek and lookup on one of its
// tables, round after round. The table's rows are cold (a few dozen rows of memory for
// thousands of rows in LMDB), so nearly every call is inside an LMDB read transaction when
// the store goes. Each call must either finish or throw `.closed`; after the drop every call
// throws `.closed`. None may crash the process (before the fix, the store's deinit closed
// LMDB under the running reads: SIGSEGV within a few rounds).
//
// Lines: `cold N` (rows in LMDB after setup), then per round `round R calls C closed K`
// (K threads saw `.closed`, twice in a row); `error-*` (see report) for a call that failed
// otherwise; `done R` at the end. Exits 0 when every thread of every round ended on
// `.closed`, 1 otherwise.
import StrataStore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

enum StoreTeardown {
    static let spec = TableSpec(dimension: 16, initializer: .init(.uniform(low: -1, high: 1), seed: 9),
                                optimizer: .adagrad(learningRate: 0.05))
    static let rows = 4000
    static let batch = 48

    static func key(_ n: Int) -> UInt64 { UInt64(n) &* 0x9E37_79B9_7F4A_7C15 }

    static func options() -> Store.Options {
        var o = Store.Options()
        o.initialMapBytes = 4 << 20
        o.mapResidentBytes = 1 << 20
        o.budget = TierBudget(hotBytes: 4 << 10, warmBytes: 0)
        return o
    }

    static func run(_ args: [String]) throws -> Int32 {
        let a = Arguments(args)
        let path = a.string("store")
        let rounds = a.int("rounds", default: 40)
        let threads = a.int("threads", default: 3)

        // Setup: every row written and checkpointed, then a clean close.
        do {
            let store = try Store(path: path, options: options())
            let table = try store.createTable("t", spec)
            for start in stride(from: 0, to: rows, by: 200) {
                let keys = (start..<min(rows, start + 200)).map(key)
                let g = keys.flatMap { k in (0..<16).map { j in Float(Int((k &+ UInt64(j) &* 7) % 17) - 8) / 10 } }
                try table.applyGradients(keys, g)
            }
            try store.checkpoint(payload: [1])
            try store.close()
        }

        var rng = SplitMix64(seed: 2026)
        var failed = false
        for round in 0..<rounds {
            var readers: [Reader] = []
            do {
                let store = try Store(path: path, options: options())
                let table = try store.table("t")
                if round == 0 { say("cold \(try table.statistics().rows.cold)") }
                readers = (0..<threads).map { Reader(table: table, peeks: $0 % 2 == 0, seed: rng.next()) }
                withExtendedLifetime(store) {
                    // Every reader under way (or finished, which only an error ends), then a
                    // moment more so the drop lands at a different point of their batches.
                    while readers.contains(where: { !$0.finished.load(ordering: .acquiring) && $0.calls.load(ordering: .relaxed) < 2 }) {
                        usleep(50)
                    }
                    usleep(useconds_t(rng.next() % 1500))
                }
            }
            // The store is gone: its deinit ran above.
            var calls = 0, closed = 0
            for reader in readers {
                reader.join()
                calls += reader.calls.load(ordering: .relaxed)
                switch reader.outcome {
                case .closed?: closed += 1
                case let error?:
                    report(error)
                    failed = true
                case nil:
                    say("error-case other")
                    say("error-text a call succeeded after another had thrown .closed")
                    failed = true
                }
            }
            say("round \(round) calls \(calls) closed \(closed)")
            if failed { break }
        }
        say("done \(failed ? -1 : rounds)")
        return failed ? 1 : 0
    }
}

/// One thread calling peek (or lookup) with batches of random keys until a call fails; then
/// one more call, which must fail with `.closed` as well.
private final class Reader: @unchecked Sendable {
    // @unchecked: `outcome` is written by the thread and read only after `join`.
    let table: Table
    let peeks: Bool
    let calls = Atomic<Int>(0)
    let finished = Atomic<Bool>(false)
    /// The error that ended the loop; nil if a call succeeded after one threw `.closed`.
    var outcome: StoreError?
    private var rng: SplitMix64
    private var thread = pthread_t()

    init(table: Table, peeks: Bool, seed: UInt64) {
        self.table = table
        self.peeks = peeks
        rng = SplitMix64(seed: seed)
        let me = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { p in
            let reader = Unmanaged<Reader>.fromOpaque(p!).takeRetainedValue()
            reader.loop()
            return nil
        }, me)
    }

    private func call(_ keys: [UInt64]) throws(StoreError) {
        if peeks { _ = try table.peek(keys) } else { _ = try table.lookup(keys) }
    }

    private func loop() {
        defer { finished.store(true, ordering: .releasing) }
        while true {
            let keys = (0..<StoreTeardown.batch).map { _ in StoreTeardown.key(Int(rng.next() % UInt64(StoreTeardown.rows))) }
            do throws(StoreError) {
                try call(keys)
                calls.add(1, ordering: .relaxed)
            } catch {
                outcome = error
                guard case .closed = error else { return }
                do throws(StoreError) {
                    try call(keys)
                    outcome = nil
                } catch {
                    if case .closed = error {} else { outcome = error }
                }
                return
            }
        }
    }

    func join() { pthread_join(thread, nil) }
}
