import Foundation
import StrataModels
import StrataTraining
import Testing

private typealias Support = DataTestSupport

/// Lines of `count` distinct synthetic samples as Criteo TSV, and the rows they must read as.
private func syntheticLines(_ count: Int, seed: UInt64 = 1) -> (lines: [String], rows: [SampleRow]) {
    let source = SyntheticClicks(options: .init(seed: seed, samplesPerEpoch: Int64(count), largestKeySpace: 1_000_000))
    let samples = (0..<count).map { source.sample(at: Int64($0)) }
    return (samples.map { Support.criteoLine($0) }, samples.map { SampleRow(label: $0.label, dense: $0.dense, keys: $0.keys) })
}

private func expectMalformed(
    _ body: () throws(DataError) -> Void, file: String, line: Int, mentioning fragment: String,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    do {
        try body()
        Issue.record("no error for line \(line)", sourceLocation: sourceLocation)
    } catch let .malformedLine(f, l, reason) {
        #expect(f == file, sourceLocation: sourceLocation)
        #expect(l == line, sourceLocation: sourceLocation)
        #expect(reason.contains(fragment), "reason: \(reason)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
    }
}

@Suite struct CriteoFileTests {
    @Test func parsesIntegersHexadecimalAndEmptyFields() throws {
        let ints = ["", "-1", "0", "3", "123456789", "-99999", "7", "", "", "1", "2", "1000000", "4095"]
        var cats = Array(repeating: "68fd1e64", count: 26)
        cats[0] = ""
        cats[1] = "ABCDEF01"
        cats[2] = "fffffffffffffffe"
        cats[3] = "0"
        cats[25] = ""
        let path = Support.file(Support.criteoLine("1", ints: ints, cats: cats) + "\n" + Support.criteoLine("0") + "\n")
        defer { Support.remove(path) }
        var file = try CriteoFile(path: path)
        let batch = Batch(schema: ClickSchema.criteo.features)
        #expect(try file.next(10, into: batch) == 2)
        let rows = Support.rows(of: batch)

        #expect(rows[0].label == 1)
        let counts: [Double] = [0, 0, 0, 3, 123_456_789, 0, 7, 0, 0, 1, 2, 1_000_000, 4095]
        for (j, x) in counts.enumerated() {
            // log(x + 1) computed independently, in Double, then compared at Float precision.
            #expect(abs(Double(rows[0].dense[j]) - log(x + 1)) <= 1e-6 * max(1, log(x + 1)), "column \(j)")
        }
        let values: [UInt64] = [UInt64.max, 0xABCD_EF01, 0xFFFF_FFFF_FFFF_FFFE, 0] + Array(repeating: 0x68FD_1E64, count: 21) + [UInt64.max]
        #expect(rows[0].keys == values.enumerated().map { clickKey(column: $0.offset, value: $0.element) })
        // An empty field has its own key in every column, different across columns.
        #expect(rows[0].keys[0] != rows[0].keys[25])

        #expect(rows[1] == SampleRow(
            label: 0, dense: Array(repeating: Float(log(2.0)), count: 13),
            keys: (0..<26).map { clickKey(column: $0, value: 0xA1B2_C3D4) }))
        #expect(try file.next(10, into: batch) == 0)
        #expect(batch.count == 0)
        #expect(file.linesRead == 2 && file.skippedLines == 0)
    }

    @Test func lineEndsCRLFAndMissingFinalNewline() throws {
        let (lines, rows) = syntheticLines(3)
        let variants = [
            lines.joined(separator: "\n") + "\n",
            lines.joined(separator: "\n"),
            lines.joined(separator: "\r\n") + "\r\n",
            lines.joined(separator: "\r\n"),
            lines.joined(separator: "\r\n") + "\r",
        ]
        for text in variants {
            let path = Support.file(text)
            defer { Support.remove(path) }
            var file = try CriteoFile(path: path)
            #expect(try Support.readEpoch(&file, batchSize: 2) == rows, "\(text.debugDescription.prefix(60))")
            #expect(file.skippedLines == 0)
        }
    }

    /// Each kind of malformed line, with a word its error message must contain.
    static let malformed: [(line: String, mentions: String)] = {
        let good = Support.criteoLine("1")
        func ints(_ j: Int, _ value: String) -> String {
            var ints = Array(repeating: "1", count: 13)
            ints[j] = value
            return Support.criteoLine("1", ints: ints)
        }
        func cats(_ f: Int, _ value: String) -> String {
            var cats = Array(repeating: "a1b2c3d4", count: 26)
            cats[f] = value
            return Support.criteoLine("0", cats: cats)
        }
        return [
            (good.split(separator: "\t", omittingEmptySubsequences: false).dropLast().joined(separator: "\t"), "39 fields"),
            (good + "\tabc", "41 fields"),
            (good + "\t", "41 fields"),
            ("", "empty line"),
            (Support.criteoLine("2"), "label '2'"),
            (Support.criteoLine(""), "label ''"),
            (Support.criteoLine("01"), "label '01'"),
            (ints(3, "12a"), "integer column 4"),
            (ints(0, "1.5"), "integer column 1"),
            (ints(12, "-"), "integer column 13"),
            (ints(5, "+3"), "integer column 6"),
            (ints(6, "1234567890123456789"), "integer column 7"),
            (cats(5, "xyz12345"), "categorical column 6"),
            (cats(25, "12345678901234567"), "categorical column 26"),
            (cats(0, "a1b2 c3d4"), "categorical column 1"),
            (cats(7, "-1"), "categorical column 8"),
        ]
    }()

    @Test func skipModeCountsEveryKindOfMalformedLine() throws {
        let good = Support.criteoLine("1")
        var text = good + "\n"
        for bad in Self.malformed { text += bad.line + "\n" + good + "\n" }
        let path = Support.file(text)
        defer { Support.remove(path) }
        for shuffleBlock in [0, 4] {
            var file = try CriteoFile(path: path, options: .init(shuffleBlock: shuffleBlock, malformedLines: .skip))
            let rows = try Support.readEpoch(&file, batchSize: 3)
            #expect(rows.count == Self.malformed.count + 1)
            #expect(Set(rows).count == 1)
            #expect(file.skippedLines == Int64(Self.malformed.count))
            #expect(file.linesRead == Int64(2 * Self.malformed.count + 1))
        }
    }

    @Test func stopModeNamesFileAndLine() throws {
        let good = Support.criteoLine("1")
        for bad in Self.malformed {
            let path = Support.file([good, good, bad.line, good].joined(separator: "\n") + "\n")
            defer { Support.remove(path) }
            let batch = Batch(schema: ClickSchema.criteo.features)

            // In order: the two good samples come first, then the error, which stays.
            var file = try CriteoFile(path: path)
            #expect(try file.next(10, into: batch) == 2)
            let before = file.position
            for _ in 0..<2 {
                expectMalformed({ () throws(DataError) in _ = try file.next(10, into: batch) }, file: path, line: 3, mentioning: bad.mentions)
                #expect(file.position == before)
            }

            // Shuffled: the block holding the line fails as a whole, and the reader stays put.
            var shuffled = try CriteoFile(path: path, options: .init(shuffleBlock: 4))
            let start = shuffled.position
            expectMalformed({ () throws(DataError) in _ = try shuffled.next(1, into: batch) }, file: path, line: 3, mentioning: bad.mentions)
            #expect(shuffled.position == start)
        }
    }

    @Test func tinyReadChunksSplitLinesAnywhere() throws {
        let (lines, rows) = syntheticLines(60)
        // Mixed line ends and no final newline, so chunk edges also fall between \r and \n.
        var text = ""
        for (i, line) in lines.enumerated() {
            text += line
            if i < lines.count - 1 { text += i % 3 == 0 ? "\r\n" : "\n" }
        }
        let path = Support.file(text)
        defer { Support.remove(path) }
        var reference = try CriteoFile(path: path, options: .init(shuffleBlock: 7, seed: 3))
        let shuffledReference = try Support.read(&reference, calls: 12, batchSize: 13)
        for chunk in [1, 2, 3, 5, 17, 64, 257, 4096] {
            var file = try CriteoFile(path: path, options: .init(readChunkBytes: chunk))
            #expect(try Support.readEpoch(&file, batchSize: 7) == rows, "chunk \(chunk)")
            var shuffled = try CriteoFile(path: path, options: .init(shuffleBlock: 7, seed: 3, readChunkBytes: chunk))
            #expect(try Support.read(&shuffled, calls: 12, batchSize: 13) == shuffledReference, "chunk \(chunk)")
        }
    }

    @Test func overlongLinesAreMalformed() throws {
        let short = "0" + String(repeating: "\t", count: 39)  // every field empty: a valid line
        let long = Support.criteoLine("1", cats: Array(repeating: "1234567812345678", count: 26))
        let path = Support.file([short, long, short, long].joined(separator: "\n"))
        defer { Support.remove(path) }
        var skipping = try CriteoFile(path: path, options: .init(malformedLines: .skip, readChunkBytes: 16, maxLineBytes: 100))
        let rows = try Support.readEpoch(&skipping, batchSize: 8)
        #expect(rows.count == 2)
        #expect(rows[0].keys == (0..<26).map { clickKey(column: $0, value: UInt64.max) })
        #expect(skipping.skippedLines == 2 && skipping.linesRead == 4)

        // The limit is the line's, wherever the read chunks end.
        for chunk in [16, 1 << 20] {
            var stopping = try CriteoFile(path: path, options: .init(readChunkBytes: chunk, maxLineBytes: 100))
            let batch = Batch(schema: ClickSchema.criteo.features)
            #expect(try stopping.next(8, into: batch) == 1)
            expectMalformed({ () throws(DataError) in _ = try stopping.next(8, into: batch) }, file: path, line: 2, mentioning: "longer than 100 bytes")
            var roomy = try CriteoFile(path: path, options: .init(readChunkBytes: chunk, maxLineBytes: long.utf8.count))
            #expect(try Support.readEpoch(&roomy, batchSize: 8).count == 4)
        }
    }

    @Test func shuffleIsDeterministicAndPermutesWithinBlocks() throws {
        let (lines, rows) = syntheticLines(50)
        let path = Support.file(lines.joined(separator: "\n") + "\n")
        defer { Support.remove(path) }
        func epochs(_ options: CriteoFile.Options, _ count: Int) throws -> [[SampleRow]] {
            var file = try CriteoFile(path: path, options: options)
            return try (0..<count).map { _ in try Support.readEpoch(&file, batchSize: 6) }
        }
        let a = try epochs(.init(shuffleBlock: 8, seed: 7), 3)
        #expect(try epochs(.init(shuffleBlock: 8, seed: 7), 3) == a)
        #expect(try epochs(.init(shuffleBlock: 8, seed: 8), 3) != a)
        #expect(a[0] != a[1] && a[1] != a[2])
        for epoch in a {
            #expect(epoch != rows)
            // Block b of the epoch is a permutation of lines 8b ..< 8b + 8.
            for start in stride(from: 0, to: rows.count, by: 8) {
                let end = min(start + 8, rows.count)
                #expect(Set(epoch[start..<end]) == Set(rows[start..<end]))
            }
        }
        for unshuffled in [0, 1] {
            #expect(try epochs(.init(shuffleBlock: unshuffled, seed: 7), 2) == [rows, rows])
        }
    }

    /// Reads `calls` batches noting the position before each, then resumes from every noted
    /// position, in a fresh reader and in the same one, and expects the same batches.
    private func checkResume(path: String, options: CriteoFile.Options, calls: Int, batchSize: Int) throws {
        var file = try CriteoFile(path: path, options: options)
        let batch = Batch(schema: ClickSchema.criteo.features)
        var positions: [SourcePosition] = [], counters: [[Int64]] = [], batches: [[SampleRow]] = []
        for _ in 0..<calls {
            positions.append(file.position)
            _ = try file.next(batchSize, into: batch)
            batches.append(Support.rows(of: batch))
            counters.append([file.linesRead, file.skippedLines])
        }
        #expect(positions.last!.epoch >= 2, "the calls should span epochs")
        #expect(batches.contains([]), "the calls should cross an end of epoch")
        var again = try CriteoFile(path: path, options: options)
        for k in [0, 1, 2, calls / 3, calls / 2, calls - 3, calls - 1] {
            for reader in 0..<2 {
                var resumed = reader == 0 ? try CriteoFile(path: path, options: options) : again
                try resumed.seek(to: positions[k])
                #expect(resumed.position == positions[k], "position \(k)")
                for j in k..<calls {
                    _ = try resumed.next(batchSize, into: batch)
                    #expect(Support.rows(of: batch) == batches[j], "resumed at \(k), call \(j)")
                    #expect([resumed.linesRead, resumed.skippedLines] == counters[j], "resumed at \(k), call \(j)")
                }
                if reader == 1 { again = resumed }
            }
        }
    }

    @Test func seekResumesExactlyAcrossEpochs() throws {
        var (lines, _) = syntheticLines(23)
        lines.insert("garbage", at: 4)
        lines.insert("", at: 11)
        lines.insert(Support.criteoLine("7"), at: 20)
        let path = Support.file(lines.joined(separator: "\n") + "\n")
        defer { Support.remove(path) }
        for shuffleBlock in [0, 5] {
            try checkResume(path: path, options: .init(shuffleBlock: shuffleBlock, seed: 11, malformedLines: .skip, readChunkBytes: 50), calls: 24, batchSize: 4)
        }
        // A block larger than the file, and batches larger than blocks.
        try checkResume(path: path, options: .init(shuffleBlock: 64, seed: 2, malformedLines: .skip), calls: 10, batchSize: 9)
        try checkResume(path: path, options: .init(shuffleBlock: 3, seed: 2, malformedLines: .skip), calls: 10, batchSize: 10)
    }

    @Test func positionsFromElsewhereAreRefused() throws {
        let (lines, rows) = syntheticLines(10)
        let path = Support.file(lines.joined(separator: "\n") + "\n")
        defer { Support.remove(path) }
        var shuffled = try CriteoFile(path: path, options: .init(shuffleBlock: 4, seed: 1))
        let batch = Batch(schema: ClickSchema.criteo.features)
        _ = try shuffled.next(3, into: batch)
        var plain = try CriteoFile(path: path)
        #expect(throws: DataError.self) { try plain.seek(to: shuffled.position) }
        var reseeded = try CriteoFile(path: path, options: .init(shuffleBlock: 4, seed: 2))
        #expect(throws: DataError.self) { try reseeded.seek(to: shuffled.position) }
        var synthetic = SyntheticClicks()
        #expect(throws: DataError.self) { try synthetic.seek(to: shuffled.position) }
        var beyond = plain.position
        beyond.detail[3] = 1 << 40
        #expect(throws: DataError.self) { try plain.seek(to: beyond) }

        // A bare position is the start of that epoch.
        try plain.seek(to: SourcePosition(epoch: 2))
        #expect(plain.epoch == 2)
        #expect(try Support.readEpoch(&plain, batchSize: 4) == rows)
        #expect(plain.epoch == 3)
    }

    @Test func unreadableFilesAreNamed() throws {
        let missing = "/nonexistent/strata/criteo.tsv"
        #expect(throws: DataError.io(path: missing, operation: "open", detail: String(cString: strerror(ENOENT)))) {
            _ = try CriteoFile(path: missing)
        }
        let path = Support.file("")
        defer { Support.remove(path) }
        let directory = (path as NSString).deletingLastPathComponent
        #expect(throws: DataError.io(path: directory, operation: "open", detail: "not a regular file")) {
            _ = try CriteoFile(path: directory)
        }
        // An empty file is an empty epoch, every time.
        var empty = try CriteoFile(path: path)
        let batch = Batch(schema: ClickSchema.criteo.features)
        #expect(try empty.next(4, into: batch) == 0)
        #expect(try empty.next(4, into: batch) == 0)
        #expect(empty.epoch == 2)
    }

    @Test func otherSchemas() throws {
        let path = Support.file("1\t5\t\t\tff\n0\t\t-3\t\t\n")
        defer { Support.remove(path) }
        let schema = ClickSchema(dense: 2, sparse: 2)
        var file = try CriteoFile(path: path, options: .init(schema: schema))
        let batch = Batch(schema: schema.features)
        #expect(try file.next(4, into: batch) == 2)
        #expect(batch.labelValues == [1, 0])
        #expect(batch.denseValues == [Float(log(6.0)), 0, 0, 0])
        #expect(batch.allKeys == [
            clickKey(column: 0, value: UInt64.max), clickKey(column: 0, value: UInt64.max),
            clickKey(column: 1, value: 0xFF), clickKey(column: 1, value: UInt64.max),
        ])
    }
}
