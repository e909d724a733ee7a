// Regressions of what review found (commit "Fix what review found: store teardown under
// running batches, damaged warm victims, warm.index parsing"):
// - dropping the last Store reference while batches run on one of its tables;
// - a warm row damaged while the store is open, then pushed out of warm;
// - a warm.index whose checksum is fine but whose entry count is out of range;
// - the change generation an update stamps while checkpoints run beside it.
// Before the fix the first three crashed the process (SIGSEGV in LMDB, a force-unwrap of
// nil, an integer conversion trap), so they run in a child process: strata-fault-driver's
// `store-teardown` mode, or an exit test.
import Testing
@_spi(Testing) import StrataStore
import StrataTestSupport
import CStrataSupport
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

@Suite struct RegressionTests {
    static let spec = TableSpec(dimension: 16, initializer: .init(.uniform(low: -0.5, high: 0.5), seed: 31),
                                optimizer: .adagrad(learningRate: 0.05))

    static func key(_ n: Int) -> UInt64 { UInt64(n) &* 0x9E37_79B9_7F4A_7C15 }

    static func gradients(_ keys: [UInt64], salt: UInt64 = 0, dimension d: Int = 16) -> [Float] {
        keys.flatMap { k in (0..<d).map { j in Float(Int((k &* 7 &+ UInt64(j) &* 13 &+ salt) % 101) - 50) / 100 } }
    }

    // MARK: 1. The store dropped under running reads

    /// Each round opens the store, starts three threads calling peek and lookup on cold rows
    /// and drops the only Store reference while they run: the drop must wait for the batches
    /// in flight, and every later call must throw `.closed`.
    @Test func droppingTheStoreWhileTablesAreReadClosesThemCleanly() throws {
        let path = FaultKit.directory("strata-regress-teardown")
        defer { FaultKit.remove(path) }
        let rounds = 40
        let run = try FaultKit.run(["store-teardown", "--store", path, "--rounds", "\(rounds)", "--threads", "3"], timeout: 120)
        let tail = "exit \(run.status):\n" + run.lines.suffix(6).joined(separator: "\n")
        #expect(run.status == 0, "the driver did not exit cleanly (139 is SIGSEGV): \(tail)")
        #expect(run.int("done") == rounds, "\(tail)")
        #expect((run.int("cold") ?? 0) > 3000, "the rows were not cold, so no LMDB read was in flight: \(tail)")
        let finished = run.lines.filter { $0.hasPrefix("round ") }
        #expect(finished.count == rounds, "\(tail)")
        #expect(finished.allSatisfy { $0.hasSuffix(" closed 3") }, "\(tail)")
        #expect(!run.lines.contains { $0.hasPrefix("error-") }, "\(tail)")
    }

    // MARK: 2. A damaged warm row pushed out of warm

    static func warmOptions() -> Store.Options {
        // 160-byte records: 6 hot rows and 25 warm rows (one shard), so that a few lookups
        // move a row from hot to warm and a few dozen more push it out of warm.
        .small(TierBudget(hotBytes: 1 << 10, warmBytes: 4 << 10))
    }

    /// The byte offset in warm.slab of the slot holding `key`, or nil when the row is not in
    /// warm (from the shard's index, not from the slot's bytes).
    static func warmSlotOffset(_ table: Table, _ key: UInt64) -> Int? {
        let perShard = table.warmCapacity / table.shardCount
        let size = table.format.layout.recordSize
        var shardNumber = 0
        var found: Int?
        table.withEachShard { (shard: inout Shard) in
            if let p = shard.index.find(key, hash: KeyHash.of(key)), shard.index[p].tier == .warm {
                found = (shardNumber * perShard + shard.index[p].slot) * size
            }
            shardNumber += 1
        }
        return found
    }

    /// A row comes to warm, clean (a copy of LMDB's record) or dirty (updated since the last
    /// checkpoint); one byte of its slot is flipped through another descriptor; lookups of
    /// other rows then push it out of warm. A damaged row must never be resealed and kept:
    /// clean, it reads from LMDB again; dirty, the push-out throws `.corrupted` naming
    /// warm.slab and the key, and the row reads as at the last checkpoint. Either way the
    /// store goes on working and a checkpoint and reopen find every row as the reference has
    /// it. Before the fix a damaged key crashed the process (force-unwrap of nil in
    /// `Shard.demoteToDisk`), and a damaged dirty value was resealed, spilled and checkpointed.
    @Test(arguments: [false, true], ["value", "key"])
    func damagedWarmRowPushedOutOfWarm(dirty: Bool, field: String) async {
        // Made and removed here, so that a crashing child leaves nothing behind.
        let path = FaultKit.directory("strata-regress-warm")
        defer { FaultKit.remove(path) }
        await #expect(processExitsWith: .success, "dirty \(dirty), damaged \(field)") { [dirty, field, path = path as String] in
            try Self.damagedWarmRow(dirty: dirty, field: field, in: path)
        }
    }

    static func damagedWarmRow(dirty: Bool, field: String, in path: String) throws {
        let what = "\(dirty ? "dirty" : "clean") row, \(field) byte damaged"
        let options = warmOptions()
        let store = try FaultKit.open(path, options)
        let table = try store.createTable("t", spec)
        var reference = ReferenceTable(spec: spec)
        let keys = (0..<400).map(key)
        for chunk in stride(from: 0, to: keys.count, by: 50) {
            let k = Array(keys[chunk..<(chunk + 50)])
            let g = gradients(k)
            try table.applyGradients(k, g)
            reference.apply(k, g)
        }
        try store.checkpoint(payload: [1])
        // Other rows changed since the checkpoint, which must survive everything below.
        let changed = Array(keys[300..<340])
        let g = gradients(changed, salt: 2)
        try table.applyGradients(changed, g)
        reference.apply(changed, g)

        // The victim comes to hot: updated (dirty) or looked up (a clean copy of LMDB's).
        let victim = keys[7]
        let victimNow: ReferenceRow
        if dirty {
            var updated = reference
            let gv = gradients([victim], salt: 5)
            try table.applyGradients([victim], gv)
            updated.apply([victim], gv)
            victimNow = updated.row(victim)
            // `reference` keeps the checkpoint's value: a lost change reads as that.
        } else {
            victimNow = reference.row(victim)
            _ = try table.lookup([victim])
        }
        try #require(try table.row(victim).placement == .hot, "\(what)")

        // Lookups of rows LMDB holds (never the victim) move it down to warm...
        var cursor = 0
        func next() -> UInt64 {
            cursor += 1
            return keys[100 + cursor % 200]
        }
        var slot: Int?
        for _ in 0..<500 where slot == nil {
            _ = try table.lookup([next()])
            slot = warmSlotOffset(table, victim)
        }
        let offset = try #require(slot, "\(what): the row never reached warm")
        try #require(try table.statistics().rows.warm > 0)
        let before = try table.row(victim)
        try #require(before.placement == .warm && bitIdentical(before.values, victimNow.values), "\(what)")

        // ...where one byte of its slot goes bad under the running store.
        let layout = table.format.layout
        let slab = path + "/tables/\(table.id)/warm.slab"
        try FaultKit.flip(slab, at: offset + (field == "value" ? 4 * 3 + 1 : layout.headerOffset + 2))

        // More lookups push it out of warm.
        var errors: [StoreError] = []
        for _ in 0..<2000 where warmSlotOffset(table, victim) != nil {
            do {
                _ = try table.lookup([next(), next()])
            } catch {
                errors.append(error)
            }
        }
        try #require(warmSlotOffset(table, victim) == nil, "\(what): the row never left warm")
        table.checkInvariants()

        if dirty {
            #expect(errors.count == 1, "\(what): push-out errors \(errors.map(\.description))")
            if let error = errors.first {
                guard case .corrupted(file: slab, let detail) = error else {
                    Issue.record("\(what): \(error)")
                    return
                }
                #expect(detail.contains("key \(victim)") && detail.contains("lost"), "\(what): \(detail)")
            }
        } else {
            #expect(errors.isEmpty, "\(what): \(errors.map(\.description))")
        }

        // The row reads as LMDB has it (for a dirty row, its change is gone), and so does
        // every other row; the store goes on working.
        let after = try table.row(victim)
        #expect(bitIdentical(after.values, reference.row(victim).values), "\(what): \(after.placement) \(after.values)")
        #expect(after.updateCount == reference.row(victim).updateCount, "\(what)")
        #expect(try FaultKit.wrongRows(table, reference, keys).isEmpty, "\(what): rows differ")
        #expect(bitIdentical(try table.lookup(keys), reference.values(keys)), "\(what): lookups differ")
        let more = Array(keys[340..<380]) + [victim]
        let gm = gradients(more, salt: 9)
        try table.applyGradients(more, gm)
        reference.apply(more, gm)
        try store.checkpoint(payload: [2])
        try store.close()

        let reopened = try FaultKit.open(path, options)
        #expect(reopened.lastCheckpoint.payload == [2])
        let wrong = try FaultKit.wrongRows(reopened.table("t"), reference, keys)
        #expect(wrong.isEmpty, "\(what): after a checkpoint and reopen \(wrong.count) rows differ: \(wrong.prefix(4))")
        try reopened.close()
    }

    // MARK: 3. warm.index with an entry count out of range

    /// A warm.index with a valid CRC-32C but an entry count that does not fit an Int, or
    /// whose `56 + 16 × count` overflows: the open succeeds, says what was wrong with the
    /// file, and starts with an empty warm tier. Before the fix: a conversion or overflow trap.
    @Test(arguments: [UInt64(1) << 63, UInt64.max, UInt64(1) << 60, (UInt64(1) << 59) - 1, UInt64(0x0FFF_FFFF_FFFF_FFFF)])
    func warmIndexWithAnEntryCountOutOfRange(_ count: UInt64) async throws {
        let path = FaultKit.directory("strata-regress-index")
        defer { FaultKit.remove(path) }
        let options = Self.warmOptions()
        var reference = ReferenceTable(spec: Self.spec)
        let keys = (0..<300).map(Self.key)
        let id: Int
        do {
            let store = try FaultKit.open(path, options)
            let table = try store.createTable("t", Self.spec)
            let g = Self.gradients(keys)
            try table.applyGradients(keys, g)
            reference.apply(keys, g)
            try store.checkpoint(payload: [1])
            _ = try table.lookup(Array(keys[0..<60]))
            id = table.id
            try store.close()
        }
        let indexPath = path + "/tables/\(id)/warm.index"
        var bytes = try FaultKit.read(indexPath)
        try #require(bytes.count > 60, "no warm rows were saved")
        // The count field rewritten, the checksum made valid again (the layout of
        // WarmIndexFile: 56-byte header, 16-byte entries, CRC-32C of everything before).
        withUnsafeBytes(of: count.littleEndian) { bytes.replaceSubrange(48..<56, with: $0) }
        let crc = bytes.withUnsafeBytes { strata_crc32c(0, $0.baseAddress, $0.count - 4) }
        withUnsafeBytes(of: crc.littleEndian) { bytes.replaceSubrange((bytes.count - 4)..., with: $0) }
        try FaultKit.write(indexPath, bytes, at: 0)

        try await #require(processExitsWith: .success, "entry count \(count)") { [path = path as String] in
            let store = try Store(path: path, options: Self.warmOptions())
            #expect(store.openReport.contains { $0.contains("warm.index") }, "open report: \(store.openReport)")
            #expect(try store.table("t").statistics().rows.warm == 0)
            try store.close()
        }
        // Nothing was lost.
        let store = try FaultKit.open(path, options)
        #expect(try FaultKit.wrongRows(store.table("t"), reference, keys).isEmpty)
        try store.close()
    }

    // MARK: 4. The change generation under concurrent checkpoints

    /// One thread updates fresh rows (each exactly once), another checkpoints in a loop. A
    /// row's change generation must be the checkpoint that first held the change: so, for
    /// every generation, as many rows carry it as that checkpoint wrote; and for every call,
    /// the stamp is after the last checkpoint completed before the call began and no later
    /// than the second one completed after it returned. Before the fix the stamp was read
    /// before the batch took the checkpoint lock: a batch that waited out a checkpoint stamped
    /// its rows with that checkpoint, which did not hold them. The per-call bounds cannot see
    /// that (the checkpoint completed during the call); the per-generation counts can, as
    /// each such batch moves rows to an earlier generation than the checkpoint that wrote them.
    @Test func changeGenerationIsTheCheckpointThatFirstHoldsTheChange() throws {
        let path = FaultKit.directory("strata-regress-generation")
        defer { FaultKit.remove(path) }
        var options = Store.Options()
        options.initialMapBytes = 4 << 20
        options.mapResidentBytes = 4 << 20
        options.budget = TierBudget(hotBytes: 1 << 20, warmBytes: 0)
        let store = try FaultKit.open(path, options)
        let spec = TableSpec(dimension: 8, optimizer: .sgd(learningRate: 0.1))
        let table = try store.createTable("t", spec)

        let log = CheckpointLog()
        let checkpointer = BackgroundLoop {
            do {
                let info = try store.checkpoint()
                log.written.withLock { $0[info.generation] = info.rowsWritten }
                return true
            } catch {
                log.failures.withLock { $0.append("\(error)") }
                return false
            }
        }
        defer { checkpointer.stop() }

        // Every 15 calls wait for one more checkpoint, so 20 or more checkpoints run beside
        // the updates however the threads are scheduled (a count, not a time).
        let perCall = 8
        var brackets: [(keys: [UInt64], before: UInt64, after: UInt64)] = []
        let calls = 300
        for c in 0..<calls {
            if c % 15 == 0 { checkpointer.waitForIteration(after: c / 15) }
            let keys = (0..<perCall).map { Self.key(1 + c * perCall + $0) }
            let before = store.lastCheckpoint.generation
            try table.applyGradients(keys, Self.gradients(keys, dimension: 8))
            let after = store.lastCheckpoint.generation
            brackets.append((keys, before, after))
        }
        checkpointer.stop()
        let failures = log.failures.withLock { $0 }
        try #require(failures.isEmpty, "\(failures)")
        var checkpoints = log.written.withLock { $0 }
        let last = try store.checkpoint()
        checkpoints[last.generation] = last.rowsWritten

        let wrote = checkpoints.filter { $0.value > 0 }
        var carried: [UInt64: Int] = [:]
        var outside: [String] = []
        for (keys, before, after) in brackets {
            for key in keys {
                let g = try table.row(key).changeGeneration
                carried[g, default: 0] += 1
                // After + 2: a checkpoint that froze rows before the call may still be being
                // written after it, and the call's rows are then the next one's.
                if !(g > before && g <= after + 2) && outside.count < 5 {
                    outside.append("key \(key): generation \(g), checkpoints \(before) before the call, \(after) after")
                }
            }
        }
        print("change generations: \(calls) update calls, \(checkpoints.count) checkpoints, \(wrote.count) of them wrote rows")
        #expect(outside.isEmpty, "\(outside)")
        #expect(wrote.count >= 2, "the updates met no checkpoint: \(checkpoints.count) checkpoints")
        let mismatched = Set(carried.keys).union(wrote.keys).sorted().filter { carried[$0, default: 0] != wrote[$0, default: 0] }
        let counts = mismatched.prefix(6).map { "\($0): \(carried[$0, default: 0]) vs \(wrote[$0, default: 0])" }
        #expect(mismatched.isEmpty, "generation: rows carrying it vs rows that checkpoint wrote: \(counts.joined(separator: ", ")) (\(mismatched.count) of \(wrote.count) checkpoints that wrote rows differ)")
        try store.close()
    }
}

/// What the checkpointing thread of `changeGenerationIsTheCheckpointThatFirstHoldsTheChange`
/// saw: rows written by each checkpoint, by generation.
private final class CheckpointLog: Sendable {
    let written = Mutex<[UInt64: Int]>([:])
    let failures = Mutex<[String]>([])
}
