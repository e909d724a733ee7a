// Resident memory within budget while a table at least ten times the budget is written,
// checkpointed and read back (strata-fault-driver resident-memory-peak: the resident-memory
// mode, which samples the resident set between batches, plus the kernel's high-water mark of
// the resident set, which also sees peaks inside a call such as a checkpoint). One run of the
// child serves both tests.
//
// The budget is the table's hot and warm bytes plus the store's map-resident bytes; on top
// come the overhead the table reports (index, admission lists, sketch, change list) and a
// fixed slack for what no budget covers:
//   - the Swift runtime's and malloc's arenas growing to the batch sizes: the mode's
//     per-batch arrays (1024 keys, 1024 × 64 floats of gradients and of output, and the
//     copies the array API makes: about 1.5 MiB live), freed memory malloc keeps;
//   - LMDB's own allocations that fill as they are used (its dirty-page and free-page
//     lists, reader slots), and page-granularity rounding of every mapping;
//   - the store's per-batch scratch (hash plan, merged duplicate keys, one record).
//   - the change list's peak: `overhead` is read at the end of the run, when the list of
//     rows changed since the checkpoint is short; between checkpoints it holds up to 65,536
//     keys here (512 KiB).
// Measured in debug builds with 160,000 rows, once lookups of absent keys were counted as
// map traffic too: 2.3 to 4.1 MB above budget plus overhead, sampled between batches. 8 MiB
// leaves room for allocator variance without hiding a tier that outgrows its budget.
import Testing
import StrataStore
import StrataTestSupport

@Suite struct ResidentMemoryTests {
    static let slack = 8 << 20
    static let (rows, hotKB, warmKB, mapKB) = (160_000, 1024, 2048, 1024)

    /// The child's report: run once, the first time a test asks.
    static let report: Result<FaultKit.DriverRun, any Error> = Result {
        let base = FaultKit.directory("strata-resident")
        defer { FaultKit.remove(base) }
        let run = try FaultKit.run(["resident-memory-peak", "--store", base + "/store", "--rows", "\(rows)",
                                    "--hot-kb", "\(hotKB)", "--warm-kb", "\(warmKB)", "--map-kb", "\(mapKB)"], timeout: 300)
        print("resident memory: " + run.lines.joined(separator: " | "))
        return run
    }

    struct Figures {
        var budget = 0, overhead = 0, baseline = 0, growth = 0, cold = 0
        var peak: Int?
        var allowed: Int { budget + overhead + ResidentMemoryTests.slack }
        /// Inside a checkpoint's commit, LMDB (MDB_WRITEMAP) clears a flag in every page the
        /// checkpoint wrote, which maps each of them again until the store drops them right
        /// after the commit: at most the table's LMDB pages (README, "Memory").
        var allowedDuringCheckpoint: Int { allowed + cold }
    }

    /// Checks the run and the table's size; returns the figures.
    func figures() throws -> Figures {
        let run = try Self.report.get()
        #expect(run.status == 0, "\(run)")
        func number(_ name: String) throws -> Int { try #require(run.int(name), "no \(name) in \(run)") }
        #expect(try number("rows") == Self.rows)
        #expect(try number("mismatches") == 0)
        var f = Figures()
        f.budget = try number("hot-budget") + number("warm-budget") + number("map-budget")
        #expect(f.budget == (Self.hotKB + Self.warmKB + Self.mapKB) << 10)
        // The table is at least ten times the budget, in memory terms and on disk.
        let logical = Self.rows * (try number("record-bytes"))
        let cold = try number("cold-bytes")
        #expect(logical >= 10 * f.budget, "the table's rows take \(logical) bytes, less than 10 × \(f.budget)")
        #expect(cold >= 10 * f.budget, "the table takes \(cold) bytes in LMDB, less than 10 × \(f.budget)")
        f.overhead = try number("overhead")
        f.baseline = try number("baseline")
        f.growth = try number("growth")
        f.peak = run.int("peak-resident")
        f.cold = cold
        if f.peak == nil { #expect(run.value("peak-resident") == "unavailable", "\(run)") }
        print("resident memory: table \(logical >> 20) MiB of rows, \(cold >> 20) MiB in LMDB; budget \(f.budget >> 20) MiB "
              + "+ overhead \(f.overhead) + slack \(Self.slack >> 20) MiB = \(f.allowed) allowed; growth sampled between "
              + "batches \(f.growth)" + (f.peak.map { ", high-water mark \($0 - f.baseline)" } ?? ""))
        return f
    }

    @Test func residentMemoryBetweenBatchesStaysWithinBudget() throws {
        let f = try figures()
        #expect(f.growth <= f.allowed,
                "resident memory grew by \(f.growth) bytes, more than budget \(f.budget) + overhead \(f.overhead) + slack \(Self.slack)")
    }

    /// The peak inside calls too, where only a checkpoint's commit may map more: its pages.
    @Test func residentMemoryHighWaterMarkStaysWithinBudget() throws {
        let f = try figures()
        let peak = try #require(f.peak, "the kernel's high-water mark is not available here")
        #expect(peak - f.baseline <= f.allowedDuringCheckpoint,
                "resident memory peaked \(peak - f.baseline) bytes above the baseline, more than budget \(f.budget) + overhead \(f.overhead) + slack \(Self.slack) + the LMDB pages a checkpoint may map \(f.cold)")
    }
}
