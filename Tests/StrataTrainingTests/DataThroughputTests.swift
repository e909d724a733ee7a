import Foundation
import StrataModels
import StrataTraining
import Testing

private typealias Support = DataTestSupport

/// Measures and prints how fast the sources run; asserts nothing about time (debug builds and
/// shared machines make timings meaningless as pass/fail). For real figures run in release
/// with more samples:
///
///     STRATA_DATA_BENCH_SAMPLES=2000000 swift test -c release --filter DataThroughputTests
@Suite struct DataThroughputTests {
    static let samples = ProcessInfo.processInfo.environment["STRATA_DATA_BENCH_SAMPLES"].flatMap(Int.init) ?? 20_000

    private static func seconds(_ body: () throws -> Void) rethrows -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        try body()
        let elapsed = clock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
    }

    @Test func syntheticSamplesPerSecond() throws {
        var source = SyntheticClicks(options: .init(samplesPerEpoch: Int64(Self.samples), largestKeySpace: 1_000_000_000))
        let batch = Batch(schema: ClickSchema.criteo.features)
        var total = 0
        let time = try Self.seconds { while true { let n = try source.next(4096, into: batch); if n == 0 { break }; total += n } }
        #expect(total == Self.samples)
        print("synthetic: \(total) samples in \(String(format: "%.3f", time)) s: \(String(format: "%.0f", Double(total) / time)) samples/s on one core")
    }

    @Test func criteoParseRate() throws {
        // Criteo-like lines: 8 hex digits per categorical value, as in the real files (about
        // 240 bytes a line).
        let source = SyntheticClicks(options: .init(samplesPerEpoch: 50_000, largestKeySpace: 10_000_000))
        var text = ""
        for i in 0..<min(Self.samples, 50_000) {
            text += Support.criteoLine(source.sample(at: Int64(i)), idDigits: 8) + "\n"
        }
        var bytes = Array(text.utf8)
        let lines = min(Self.samples, 50_000)
        // Repeat the lines to reach the requested sample count without generating them all.
        let copies = max(1, Self.samples / lines)
        if copies > 1 { bytes = Array([[UInt8]](repeating: bytes, count: copies).joined()) }
        let path = Support.file(bytes)
        defer { Support.remove(path) }

        for shuffleBlock in [0, 65_536] {
            var file = try CriteoFile(path: path, options: .init(shuffleBlock: shuffleBlock))
            let batch = Batch(schema: ClickSchema.criteo.features)
            var total = 0
            let time = try Self.seconds { while true { let n = try file.next(4096, into: batch); if n == 0 { break }; total += n } }
            #expect(total == lines * copies && file.skippedLines == 0)
            let fields = Double(total * 40)
            print(String(
                format: "criteo (shuffle block %d): %.1f MB in %.3f s: %.0f MB/s, %.0f samples/s, %.1f ns per field (%.0f bytes a line)",
                shuffleBlock, Double(bytes.count) / 1e6, time, Double(bytes.count) / 1e6 / time, Double(total) / time,
                time * 1e9 / fields, Double(bytes.count) / Double(total)))
        }
    }
}
