// Disk hygiene: a store takes the disk its rows need and not much more; it reserves blocks
// only after checking there is room, refusing with the sizes; it never makes a store among a
// user's files, nor deletes them; and a first open that fails leaves nothing behind.
import Foundation
import Testing
@_spi(Testing) import StrataStore
import StrataTestSupport
#if canImport(Glibc)
import Glibc
#endif

private func apparentBytes(_ path: String) -> Int {
    ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? -1
}

private func entries(_ path: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
}

private let spec = TableSpec(dimension: 16, initializer: .init(.uniform(low: -0.1, high: 0.1), seed: 3),
                             optimizer: .rowwiseAdagrad(learningRate: 0.1))

/// Writes `count` rows from `first` on, in batches of 500: one gradient step each.
private func write(_ table: Table, from first: Int = 0, count: Int) throws(StoreError) {
    var k = first
    while k < first + count {
        let keys = (k..<min(k + 500, first + count)).map { UInt64($0) }
        try table.applyGradients(keys, keys.flatMap { key in (0..<16).map { Float(key % 7) * 0.01 + Float($0) * 0.001 } })
        k += keys.count
    }
}

/// A tmpfs of `megabytes` mounted for the test, so that a full disk is real and small.
/// Nil where this process may not mount (not root, or no CAP_SYS_ADMIN).
private final class SmallDisk {
    let path: String
    init?(megabytes: Int) {
        path = temporaryDirectory("strata-small-disk")
        guard let mount = try? ChildProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=\(megabytes)m", "tmpfs", path]),
              (try? mount.wait()) == 0 else {
            removeDirectory(path)
            return nil
        }
    }
    deinit {
        _ = try? ChildProcess("/bin/umount", [path]).wait()
        removeDirectory(path)
    }
    static let available: Bool = getuid() == 0 && SmallDisk(megabytes: 1) != nil
}

@Suite struct DiskHygieneTests {
    /// The open, a checkpoint and a reopen of a three-row table take under 1 MiB of disk,
    /// with a warm budget of 64 MiB per table: nothing is reserved ahead of the rows.
    @Test func aThreeRowStoreTakesUnderOneMiB() throws {
        let directory = temporaryDirectory("strata-disk")
        defer { removeDirectory(directory) }
        let path = directory + "/store"
        var options = Store.Options()
        options.budget = TierBudget(hotBytes: 1 << 20, warmBytes: 64 << 20)
        do {
            let store = try Store(path: path, options: options)
            try write(try store.createTable("three", spec), count: 3)
            try store.checkpoint()
            try store.close()
        }
        let store = try Store(path: path, options: options)
        #expect(try store.table("three").statistics().rows.total == 3)
        try store.checkpoint()
        try store.close()
        let bytes = allocatedBytes(path)
        print("a three-row store: \(bytes) bytes on disk; rows.mdb \(apparentBytes(path + "/rows.mdb")) bytes long")
        #expect(bytes < 1 << 20, "\(bytes) bytes on disk for 3 rows")
        #expect(apparentBytes(path + "/rows.mdb") <= 512 << 10)
    }

    /// LMDB's file grows as checkpoints need, never far past the pages in use, and a compacted
    /// file keeps its size at the next open and grows only a little at the next checkpoint.
    @Test func theMapGrowsAsNeededAndCompactionLasts() throws {
        let directory = temporaryDirectory("strata-disk")
        defer { removeDirectory(directory) }
        let path = directory + "/store", data = path + "/rows.mdb"
        var options = Store.Options()
        options.budget = TierBudget(hotBytes: 64 << 10, warmBytes: 0)
        var sizes: [Int] = []
        do {
            let store = try Store(path: path, options: options)
            let table = try store.createTable("rows", spec)
            sizes.append(apparentBytes(data))
            for round in 0..<6 {
                try write(table, from: round * 4000, count: 4000)
                try store.checkpoint()
                sizes.append(apparentBytes(data))
                // Never far past the pages in use: at most doubled from what the last one needed.
                let inUse = try LMDBEnvironment.bytesInUse(path: data)
                // (A checkpoint asks for room for three times its rows: see `Store.checkpoint`.)
                #expect(sizes.last! <= 3 * inUse + (1 << 20), "round \(round): file \(sizes.last!) bytes, \(inUse) in use")
            }
            // Most rows go; the file keeps its size (LMDB reuses its pages).
            try table.remove((0..<22_000).map { UInt64($0) })
            try store.checkpoint()
            try store.close()
        }
        print("rows.mdb through the checkpoints: \(sizes)")
        #expect(sizes.first! <= 256 << 10, "a new store's file: \(sizes.first!) bytes")
        #expect(sizes.last! > 4 * sizes.first!, "the map never grew: \(sizes)")
        #expect(zip(sizes, sizes.dropFirst()).allSatisfy { $0 <= $1 }, "\(sizes)")

        let report = try Store.compact(path: path)
        #expect(report.fileBytesAfter < report.fileBytesBefore / 2, "\(report)")
        let store = try Store(path: path, options: options)
        #expect(apparentBytes(data) <= (report.fileBytesAfter + 0xFFFF) & ~0xFFFF, "the reopen grew the compacted file")
        let table = try store.table("rows")
        #expect(try table.statistics().rows.total == 2_000)
        try write(table, from: 22_000, count: 10)
        try store.checkpoint()
        try store.close()
        // At most a quarter more (256 KiB for a small file) and LMDB's rounding.
        #expect(apparentBytes(data) <= report.fileBytesAfter + max(256 << 10, report.fileBytesAfter / 4) + (128 << 10),
                "a small checkpoint after compaction: \(apparentBytes(data)) bytes, compacted to \(report.fileBytesAfter)")
    }

    /// A table written in key order over several checkpoints fills its LMDB pages: rows past
    /// the last stored key are appended (MDB_APPEND), which leaves a full page full, where an
    /// ordinary put past the end moves the page's last row to the new page. With records of
    /// at most 548 bytes (128 floats and a row-wise Adagrad accumulator, LZ4 when it helps)
    /// that is 7 rows a 4 KiB page: measured 1006 pages for 7000 rows, against 1174 without
    /// appending and 1745 in a scrambled order (LMDB is deterministic: these do not vary).
    /// Every row reads back bit for bit after a reopen, and updates and new keys below the
    /// last go through ordinary puts.
    @Test func rowsWrittenInKeyOrderFillTheirPages() throws {
        let directory = temporaryDirectory("strata-disk")
        defer { removeDirectory(directory) }
        let rows = 7_000, dim = 128
        let wide = TableSpec(dimension: dim, initializer: .init(.uniform(low: -0.05, high: 0.05), seed: 3),
                             optimizer: .rowwiseAdagrad(learningRate: 0.1))
        var options = Store.Options()
        options.budget = TierBudget(hotBytes: 1 << 20, warmBytes: 0)
        func build(_ name: String, _ key: (Int) -> UInt64) throws -> (pages: Int, store: Store) {
            let store = try Store(path: directory + "/" + name, options: options)
            let table = try store.createTable("rows", wide)
            for round in 0..<4 {
                let keys = (round * rows / 4..<(round + 1) * rows / 4).map(key)
                for start in stride(from: 0, to: keys.count, by: 500) {
                    let part = Array(keys[start..<min(start + 500, keys.count)])
                    try table.applyGradients(part, part.flatMap { k in (0..<dim).map { Float(k % 7) * 0.01 + Float($0) * 0.001 } })
                }
                try store.checkpoint()
            }
            return (try table.statistics().bytes.coldOnDisk / 4096, store)
        }
        let scrambled = try build("scrambled") { UInt64($0 &* 2_654_435_761 % 1_000_003) }
        let (ordered, store) = try build("ordered") { UInt64($0) }
        try scrambled.store.close()
        print("\(rows) rows of 548 bytes in LMDB: \(ordered) pages written in key order, \(scrambled.pages) in a scrambled order")
        #expect(Double(ordered) <= Double(rows) / 6.8, "\(ordered) pages for \(rows) rows written in key order: fewer than 6.8 rows a page")

        let table = try store.table("rows")
        let before = try table.peek((0..<UInt64(rows)).map { $0 })
        let touched: [UInt64] = [5, 4_000, 6_999, 20_000, 20_001]
        try table.applyGradients(touched, [Float](repeating: 0.5, count: touched.count * dim))
        let after = try table.peek(touched)
        try store.checkpoint()
        try store.close()
        let reopened = try Store(path: directory + "/ordered", options: options)
        defer { try? reopened.close() }
        let again = try reopened.table("rows")
        #expect(try again.statistics().rows.total == rows + 2)
        #expect(try again.peek(touched).map(\.bitPattern) == after.map(\.bitPattern))
        let untouched = (0..<UInt64(rows)).filter { !touched.contains($0) }
        let expected = untouched.flatMap { k in before[Int(k) * dim..<Int(k + 1) * dim] }
        #expect(try again.peek(untouched).map(\.bitPattern) == expected.map(\.bitPattern))
    }

    /// The warm file is as long as its budget but takes disk only for the slots rows reached;
    /// kept warm rows read the same after a reopen, and more rows take more blocks.
    @Test func theWarmFileTakesDiskAsRowsArrive() throws {
        let directory = temporaryDirectory("strata-disk")
        defer { removeDirectory(directory) }
        let path = directory + "/store"
        var options = Store.Options()
        options.budget = TierBudget(hotBytes: 64 << 10, warmBytes: 256 << 20)
        let warmFile = path + "/tables/1/warm.slab"
        let keys = (0..<6000).map { UInt64($0) }
        let before: [Float]
        let firstBlocks: Int
        do {
            let store = try Store(path: path, options: options)
            let table = try store.createTable("rows", spec)
            #expect(allocatedBytes(warmFile) < 64 << 10, "blocks reserved before any row: \(allocatedBytes(warmFile))")
            try write(table, count: keys.count)
            let statistics = try table.statistics()
            #expect(statistics.rows.warm > 4000, "\(statistics.rows)")
            before = try table.peek(keys)
            try store.checkpoint()
            try store.close()
            firstBlocks = allocatedBytes(warmFile)
            let recordSize = statistics.bytes.warmUsed / max(statistics.rows.warm, 1)
            print("warm file: \(apparentBytes(warmFile)) bytes long, \(firstBlocks) on disk for \(statistics.rows.warm) rows of \(recordSize) bytes")
            #expect(apparentBytes(warmFile) > 200 << 20)
            #expect(firstBlocks >= statistics.bytes.warmUsed)
            // Slots are reserved 64 KiB at a time, in each of the shards.
            #expect(firstBlocks < statistics.bytes.warmUsed + (8 << 20), "\(firstBlocks) bytes on disk")
        }
        let store = try Store(path: path, options: options)
        let table = try store.table("rows")
        #expect(try table.peek(keys) == before)
        try write(table, from: 6000, count: 20_000)
        try store.checkpoint()
        try store.close()
        #expect(allocatedBytes(warmFile) > firstBlocks + (1 << 20), "20000 more rows took no more warm blocks")
    }

    /// A map the disk cannot hold is refused before anything is written, naming both sizes,
    /// and the failed first open takes away what it made: the directory it created, or the
    /// files it put in an empty one.
    @Test func aMapLargerThanTheFreeSpaceIsRefusedAndLeavesNothing() throws {
        let directory = temporaryDirectory("strata-disk")
        defer { removeDirectory(directory) }
        let free = try #require(freeBytes(onFileSystemOf: directory))
        var options = Store.Options()
        // Past the free space by far more than other processes free meanwhile.
        options.initialMapBytes = free + (4 << 30)
        for (path, existed) in [(directory + "/new", false), (directory + "/empty", true)] {
            if existed { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false) }
            do {
                _ = try Store(path: path, options: options)
                Issue.record("a \(byteText(options.initialMapBytes)) map opened with \(byteText(free)) free")
            } catch {
                guard case .diskFull(let file, _, _) = error else { throw error }
                #expect(file == path + "/rows.mdb")
                let text = "\(error)"
                #expect(text.contains("disk full") && text.contains("reserving ") && text.contains(" free)"), "\(text)")
                #expect(text.contains("reserving \(byteText((options.initialMapBytes + 0xFFFF) & ~0xFFFF)) more"), "\(text)")
            }
            #expect(FileManager.default.fileExists(atPath: path) == existed)
            #expect(entries(path).isEmpty, "the failed open left \(entries(path))")
        }
        // And the same options with room open fine.
        options.initialMapBytes = 256 << 10
        try Store(path: directory + "/new", options: options).close()
    }

    /// Warm slots past the disk's room stop the batch with `.diskFull` naming the warm file:
    /// never a SIGBUS from writing an unreserved page through the mapping. Rows written
    /// before still read back, and the store checkpoints and closes.
    @Test(.enabled(if: SmallDisk.available, "needs root to mount a small tmpfs"))
    func warmSlotsPastTheDiskStopWithDiskFull() throws {
        let disk = try #require(SmallDisk(megabytes: 6))
        let path = disk.path + "/store"
        var options = Store.Options()
        options.budget = TierBudget(hotBytes: 64 << 10, warmBytes: 64 << 20)
        let store = try Store(path: path, options: options)
        let table = try store.createTable("rows", spec)
        var written = 0
        var failure: StoreError?
        while written < 200_000 {
            do throws(StoreError) {
                try write(table, from: written, count: 500)
                written += 500
            } catch {
                failure = error
                break
            }
        }
        let error = try #require(failure, "64 MiB of warm slots fit a 6 MiB disk")
        guard case .diskFull(let file, _, _) = error else { Issue.record("\(error)"); return }
        #expect(file == path + "/tables/1/warm.slab", "\(error)")
        #expect("\(error)".contains("reserving "), "\(error)")
        print("after \(written) rows: \(error)")
        let keys = (0..<written).map { UInt64($0) }
        let values = try table.peek(keys)
        #expect(values.count == keys.count * 16 && values.allSatisfy(\.isFinite))
        _ = try? store.close()  // its warm index may not fit the full disk either
    }

    /// The map grows by a quarter while the disk has room for that, then by only what a
    /// checkpoint needs: checkpoints go on until LMDB's pages themselves fill the disk (more
    /// than 14 of a 16 MiB tmpfs: 15.8 MiB measured; quarter steps alone stopped at 13.2 MiB,
    /// when a quarter of the map no longer fit), and the one that finds no room fails with
    /// `.diskFull`, leaving the last one whole.
    @Test(.enabled(if: SmallDisk.available, "needs root to mount a small tmpfs"))
    func theMapUsesTheLastOfTheDisk() throws {
        let disk = try #require(SmallDisk(megabytes: 16))
        let path = disk.path + "/store"
        var options = Store.Options()
        options.budget = TierBudget(hotBytes: 64 << 20, warmBytes: 0)
        let store = try Store(path: path, options: options)
        let table = try store.createTable("rows", spec)
        var (written, inUse) = (0, 0)
        var failure: StoreError?
        while written < 400_000 && failure == nil {
            do throws(StoreError) {
                try write(table, from: written, count: 2000)
                try store.checkpoint()
                written += 2000
            } catch {
                failure = error
            }
            if failure == nil { inUse = try LMDBEnvironment.bytesInUse(path: path + "/rows.mdb") }
        }
        let error = try #require(failure, "\(written) rows fit a 16 MiB disk")
        guard case .diskFull = error else { Issue.record("\(error)"); return }
        print("a 16 MiB disk: \(written) rows checkpointed, LMDB pages in use \(inUse) bytes; then \(error)")
        #expect(inUse > 14 << 20, "checkpoints stopped with \(inUse) bytes of LMDB pages on a 16 MiB disk")
        try store.close()
        let reopened = try Store(path: path, options: options)
        defer { try? reopened.close() }
        #expect(try reopened.table("rows").statistics().rows.total == written)
    }

    /// A store is never made in a directory of other files, and `Store.remove` deletes a
    /// store and nothing else.
    @Test func otherFilesAreNeverMadeAStoreOrDeleted() throws {
        let directory = temporaryDirectory("strata-disk")
        defer { removeDirectory(directory) }
        let notes = directory + "/notes.txt"
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: notes))
        do {
            _ = try Store(path: directory)
            Issue.record("a store was made among other files")
        } catch {
            guard case .notEmpty(let path, let found) = error else { throw error }
            #expect(path == directory && found == ["notes.txt"])
            #expect("\(error)".contains("not a Strata store, and not empty"))
        }
        #expect(entries(directory) == ["notes.txt"])
        #expect(throws: StoreError.self) { try Store.remove(at: directory) }
        #expect(entries(directory) == ["notes.txt"])

        // A store holding a file of the user's is not deleted either.
        let path = directory + "/store"
        try Store(path: path).close()
        try Data("mine".utf8).write(to: URL(fileURLWithPath: path + "/mine.txt"))
        do {
            try Store.remove(at: path)
            Issue.record("a store holding mine.txt was deleted")
        } catch {
            guard case .foreignFiles(_, let found) = error else { throw error }
            #expect(found == ["mine.txt"])
        }
        #expect(entries(path).contains("rows.mdb") && entries(path).contains("mine.txt"))
        try FileManager.default.removeItem(atPath: path + "/mine.txt")

        // Nor one that is open.
        let open = try Store(path: path)
        do {
            try Store.remove(at: path)
            Issue.record("an open store was deleted")
        } catch {
            guard case .locked = error else { throw error }
        }
        try open.close()
        try Store.remove(at: path)
        #expect(!FileManager.default.fileExists(atPath: path))
        try Store.remove(at: path)
        #expect(entries(directory) == ["notes.txt"])
    }
}
