import Foundation
import StrataModels
import StrataTestSupport
import StrataTraining
import Testing

extension Batch {
    /// The labels, row by row.
    var labelValues: [Float] { Array(UnsafeBufferPointer(start: labels, count: count * labelColumns)) }
    /// Label `name`'s values, row by row.
    func labelColumn(_ name: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [Float] {
        let j = try #require(schema.labelIndex(name), "no label '\(name)'", sourceLocation: sourceLocation)
        return (0..<count).map { labels[$0 * labelColumns + j] }
    }
    /// The dense values, row by row.
    var denseValues: [Float] { Array(UnsafeBufferPointer(start: dense, count: count * denseColumns)) }
    /// Feature f's keys (a bag's all in a row).
    func keyValues(of f: Int) -> [UInt64] { Array(keys(of: f).keys) }
    /// Every single-valued feature's keys, feature after feature.
    var allKeys: [UInt64] { (0..<schema.categorical.count).flatMap { keyValues(of: $0) } }
}

/// One sample, sample-major, so that streams can be compared sample by sample.
struct SampleRow: Hashable, CustomStringConvertible {
    var label: Float
    var dense: [Float]
    var keys: [UInt64]

    var description: String { "(\(label), \(dense), \(keys.map { String($0, radix: 16) }))" }
}

enum DataTestSupport {
    /// The batch's samples, keys gathered from their feature-major layout.
    static func rows(of batch: Batch) -> [SampleRow] {
        let d = batch.denseColumns
        return (0..<batch.count).map { b in
            SampleRow(
                label: batch.labels[b],
                dense: Array(UnsafeBufferPointer(start: batch.dense + b * d, count: d)),
                keys: (0..<batch.schema.categorical.count).map { batch.keys(of: $0, row: b)[0] })
        }
    }

    /// Reads batches until the source reports the end of an epoch.
    static func readEpoch(_ source: inout some BatchSource, batchSize: Int) throws -> [SampleRow] {
        let batch = Batch(schema: source.schema)
        var rows: [SampleRow] = []
        while try source.next(batchSize, into: batch) > 0 { rows += DataTestSupport.rows(of: batch) }
        return rows
    }

    /// `calls` calls of `next`, each call's samples (an empty list where an epoch ended).
    static func read(_ source: inout some BatchSource, calls: Int, batchSize: Int) throws -> [[SampleRow]] {
        let batch = Batch(schema: source.schema)
        var out: [[SampleRow]] = []
        for _ in 0..<calls {
            let n = try source.next(batchSize, into: batch)
            precondition(n == batch.count)
            out.append(rows(of: batch))
        }
        return out
    }

    /// Writes `bytes` to a new file in a new temporary directory; returns its path.
    static func file(_ bytes: [UInt8], name: String = "data.tsv") -> String {
        let dir = temporaryDirectory("strata-data")
        let path = dir + "/" + name
        precondition(FileManager.default.createFile(atPath: path, contents: Data(bytes)), "cannot write \(path)")
        return path
    }

    static func file(_ text: String, name: String = "data.tsv") -> String { file(Array(text.utf8), name: name) }

    static func remove(_ path: String) {
        try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent)
    }

    /// A Criteo TSV line (no newline) holding exactly this synthetic sample: counts as
    /// decimals (missing ones empty), ids as 16 hex digits. With fewer digits, only the low
    /// bits of each id are written (for files shaped like Criteo's, not for round trips).
    static func criteoLine(_ sample: SyntheticClicks.Sample, idDigits: Int = 16) -> String {
        var fields = [sample.label == 1 ? "1" : "0"]
        fields += sample.counts.map { $0.map(String.init) ?? "" }
        fields += sample.ids.map { id in
            let hex = String(idDigits == 16 ? id : id & ((1 << (4 * UInt64(idDigits))) - 1), radix: 16)
            return String(repeating: "0", count: idDigits - hex.count) + hex
        }
        return fields.joined(separator: "\t")
    }

    /// A hand-written Criteo line: label, 13 integer fields, 26 categorical fields.
    static func criteoLine(
        _ label: String, ints: [String] = Array(repeating: "1", count: 13),
        cats: [String] = Array(repeating: "a1b2c3d4", count: 26)
    ) -> String {
        ([label] + ints + cats).joined(separator: "\t")
    }
}
