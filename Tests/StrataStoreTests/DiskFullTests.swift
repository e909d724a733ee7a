// A full disk, made with RLIMIT_FSIZE in a child process (strata-fault-driver disk-full):
// the error is `.diskFull`, says "disk full" and names the file and the checkpoint the store
// remains at; rows written before it still read right in memory; and the store reopens at
// exactly its last successful checkpoint, every row bit-identical to a replay of the batches
// that checkpoint holds.
import Testing
@_spi(Testing) import StrataStore
import StrataTestSupport

@Suite struct DiskFullTests {
    /// Runs the driver and checks what it printed; returns the generation and batch count of
    /// the checkpoint the store must reopen at, and how many batches it attempted.
    func runChild(_ path: String, _ kind: String, recover: Bool = false) throws -> (generation: Int, batches: Int, attempted: Int) {
        var arguments = ["disk-full", "--store", path, "--path", kind]
        if recover { arguments += ["--recover", "1"] }
        let run = try FaultKit.run(arguments, timeout: 120)
        print("disk-full \(kind)\(recover ? " --recover" : ""): " + run.lines.filter { !$0.hasPrefix("checkpoint ") }.joined(separator: " | "))
        #expect(run.status == 0, "\(run)")
        #expect(run.value("error-case") == "diskFull", "\(run)")
        let file = kind == "spill" ? path + "/tables/1/spill.slab" : path + "/rows.mdb"
        #expect(run.value("error-path") == file)

        let last = try #require(run.ints("last"), "\(run)")
        try #require(last.count == 2)
        let (generation, batches) = (last[0], last[1])
        // The last checkpoint the child saw succeed is the one the error names.
        let succeeded = run.lines.filter { $0.hasPrefix("checkpoint ") }.last.map { $0.split(separator: " ").compactMap { Int($0) } }
        #expect(succeeded == [generation, batches])
        #expect(run.int("error-generation") == generation)
        let text = try #require(run.value("error-text"))
        #expect(text.contains("disk full"), "\(text)")
        #expect(text.contains("checkpoint \(generation)"), "\(text)")
        #expect(text.hasPrefix(file), "\(text)")

        // In memory, everything written before the error still read right.
        let check = try #require(run.ints("memory-check"))
        #expect(check.count == 2 && check[0] > 0 && check[1] == 0, "rows read wrong in memory after the error: \(check)")

        let attempted: Int
        let failedIn = try #require(run.value("failed-in"))
        if kind == "spill" {
            #expect(failedIn.hasPrefix("apply "), "\(failedIn)")
            attempted = Int(failedIn.dropFirst(6))! + 1
        } else {
            #expect(failedIn.hasPrefix("checkpoint "), "\(failedIn)")
            attempted = Int(failedIn.dropFirst(11))!
            // The store went on working under the limit until the map had to grow.
            #expect(generation > 3, "the limit was hit before any checkpoint under it: \(generation)")
            // Retrying fails the same way, at the same checkpoint.
            #expect(run.value("retry-case") == "diskFull")
            #expect(run.int("retry-generation") == generation)
        }
        if recover {
            let recovered = try #require(run.ints("recovered"), "\(run)")
            #expect(recovered == [generation + 1, attempted])
            return (generation + 1, attempted, attempted)
        }
        return (generation, batches, attempted)
    }

    /// Reopens the store without any limit and compares every row the child touched with a
    /// replay of the first `batches` batches.
    func expectAtCheckpoint(_ path: String, _ kind: String, _ expected: (generation: Int, batches: Int, attempted: Int)) throws {
        let store = try FaultKit.open(path, DiskFullWorkload.options(kind))
        let checkpoint = store.lastCheckpoint
        #expect(Int(checkpoint.generation) == expected.generation)
        #expect(CheckpointCount.count(in: checkpoint.payload) == expected.batches)
        let table = try store.table("rows")
        var reference = ReferenceTable(spec: DiskFullWorkload.spec)
        for b in 0..<expected.batches {
            let (keys, g) = DiskFullWorkload.batch(b)
            reference.apply(keys, g)
        }
        var keys: [UInt64] = []
        for b in 0..<(expected.attempted + 1) { keys += DiskFullWorkload.batch(b).keys }
        keys = Array(Set(keys))
        let wrong = try FaultKit.wrongRows(table, reference, keys)
        #expect(wrong.isEmpty, "\(wrong.count) of \(keys.count) rows differ from checkpoint \(expected.generation)")
        #expect(try table.statistics().rows.total == reference.rows.count)
        // And it goes on: with room again, a checkpoint succeeds.
        let (k, g) = DiskFullWorkload.batch(expected.attempted + 1)
        try table.applyGradients(k, g)
        #expect(try store.checkpoint().generation == UInt64(expected.generation + 1))
        try store.close()
    }

    /// The checkpoint needs LMDB's reserved map to grow, and the file may not grow.
    @Test func checkpointThatMustGrowTheMap() throws {
        let path = FaultKit.directory("strata-diskfull-map") + "/store"
        defer { FaultKit.remove(String(path.dropLast(6))) }
        let expected = try runChild(path, "checkpoint")
        try expectAtCheckpoint(path, "checkpoint", expected)
    }

    /// A changed row leaving memory must go to the spill file, which may not grow.
    @Test func spillWrite() throws {
        let path = FaultKit.directory("strata-diskfull-spill") + "/store"
        defer { FaultKit.remove(String(path.dropLast(6))) }
        let expected = try runChild(path, "spill")
        try expectAtCheckpoint(path, "spill", expected)
    }

    /// After the error, once there is room again, the same checkpoint call succeeds with
    /// everything that was in memory.
    @Test func checkpointRetriedOnceThereIsRoom() throws {
        let path = FaultKit.directory("strata-diskfull-retry") + "/store"
        defer { FaultKit.remove(String(path.dropLast(6))) }
        let expected = try runChild(path, "checkpoint", recover: true)
        try expectAtCheckpoint(path, "checkpoint", expected)
    }
}
