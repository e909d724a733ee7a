// disk-full --store PATH --path checkpoint|spill [--recover 1]
//
// Opens a store with a 1 MiB LMDB map, writes and checkpoints a few batches, then limits the
// size of every file this process writes (RLIMIT_FSIZE, SIGXFSZ ignored so the limit shows
// up as EFBIG) to just above the largest file the store has, and keeps writing until a
// `StoreError.diskFull` arrives:
//   --path checkpoint  budgets hold every row in memory and each batch is checkpointed, so the
//                      error comes from a checkpoint that must grow LMDB's reserved map;
//   --path spill       budgets hold a few dozen rows and no checkpoint is taken, so the error
//                      comes from a spill-file write.
// Then it prints the error and the last good checkpoint, checks that every row written so far
// still reads right in memory (the batch the error interrupted excepted: the store documents
// that it may be partly applied), retries the checkpoint (--path checkpoint: it must fail the
// same way, or with --recover 1 succeed once the limit is lifted), and closes.
//
// Lines: `checkpoint G N` (checkpoint G holds batches 0..<N), `limit BYTES`, `failed-in
// apply B` or `failed-in checkpoint N`, `error-*` (see report), `last G N`, `memory-check
// OK BAD`, `retry-*`, `recovered G N`, `closed` or `close-error-*`.
import StrataStore
import StrataTestSupport
#if canImport(Glibc)
import Glibc
#endif

enum DiskFull {
    static func run(_ args: [String]) throws -> Int32 {
        let a = Arguments(args)
        let path = a.string("store")
        let kind = a.string("path")
        guard kind == "checkpoint" || kind == "spill" else {
            say("--path must be checkpoint or spill")
            return 2
        }
        let recover = a.int("recover", default: 0) != 0
        let spec = DiskFullWorkload.spec
        let store = try Store(path: path, options: DiskFullWorkload.options(kind))
        let table = try store.createTable("rows", spec)
        var reference = ReferenceTable(spec: spec)

        // Before the limit: everything succeeds.
        let before = 3
        for b in 0..<before {
            let (keys, g) = DiskFullWorkload.batch(b)
            try table.applyGradients(keys, g)
            reference.apply(keys, g)
            let info = try store.checkpoint(payload: CheckpointCount.payload(b + 1))
            say("checkpoint \(info.generation) \(b + 1)")
        }

        let limit = largestFile(under: path) + (64 << 10)
        signal(SIGXFSZ, SIG_IGN)
        var rl = rlimit()
        getrlimit(fileSizeLimit, &rl)
        rl.rlim_cur = rlim_t(limit)
        guard setrlimit(fileSizeLimit, &rl) == 0 else {
            say("setrlimit failed: errno \(errno)")
            return 1
        }
        say("limit \(limit)")

        var failure: StoreError?
        var interrupted: Int?  // the batch the error cut short, if it came from an update
        var b = before
        let maxBatches = 2000
        while b < maxBatches {
            let (keys, g) = DiskFullWorkload.batch(b)
            do throws(StoreError) { try table.applyGradients(keys, g) } catch {
                failure = error
                interrupted = b
                break
            }
            reference.apply(keys, g)
            b += 1
            if kind == "checkpoint" {
                do throws(StoreError) {
                    let info = try store.checkpoint(payload: CheckpointCount.payload(b))
                    say("checkpoint \(info.generation) \(b)")
                } catch {
                    failure = error
                    break
                }
            }
        }
        guard let failure else {
            say("no error after \(b) batches under a limit of \(limit) bytes")
            return 1
        }
        say(interrupted.map { "failed-in apply \($0)" } ?? "failed-in checkpoint \(b)")
        report(failure)
        let last = store.lastCheckpoint
        say("last \(last.generation) \(CheckpointCount.count(in: last.payload))")

        // Rows written so far still read right from memory and the spill file (peek moves
        // nothing, so it needs no room; lookup too when nothing has to be spilled).
        let skip = Set(interrupted.map { DiskFullWorkload.batch($0).keys } ?? [])
        var good = 0, bad = 0
        for batch in 0..<b {
            let keys = DiskFullWorkload.batch(batch).keys.filter { !skip.contains($0) }
            let got = try table.peek(keys)
            let d = spec.dimension
            for (i, key) in keys.enumerated() {
                let want = reference.row(key)
                let row = try table.row(key)
                if bitIdentical(Array(got[(i * d)..<((i + 1) * d)]), want.values), row.values == want.values,
                   row.updateCount == want.updateCount { good += 1 } else { bad += 1 }
            }
            if kind == "checkpoint" {
                let again = try table.lookup(keys)
                if !bitIdentical(again, reference.values(keys)) { bad += 1 }
            }
        }
        say("memory-check \(good) \(bad)")

        if kind == "checkpoint" {
            do throws(StoreError) {
                let info = try store.checkpoint(payload: CheckpointCount.payload(b))
                say("retry-ok \(info.generation)")
            } catch {
                report(error, prefix: "retry")
            }
            if recover {
                rl.rlim_cur = rl.rlim_max
                guard setrlimit(fileSizeLimit, &rl) == 0 else {
                    say("setrlimit failed: errno \(errno)")
                    return 1
                }
                let info = try store.checkpoint(payload: CheckpointCount.payload(b))
                say("recovered \(info.generation) \(b)")
            }
        }
        do throws(StoreError) {
            try store.close()
            say("closed")
        } catch {
            report(error, prefix: "close-error")
        }
        if case .diskFull = failure, bad == 0 { return 0 }
        return 1
    }
}

/// RLIMIT_FSIZE as the type Glibc's functions take.
private let fileSizeLimit = __rlimit_resource_t(RLIMIT_FSIZE.rawValue)
