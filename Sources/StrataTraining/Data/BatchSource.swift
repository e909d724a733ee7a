import Foundation
public import StrataModels
import StrataStore

// Where batches come from: a source fills a `Batch` (StrataModels) with samples of its
// `FeatureSchema`, says where it is in its stream, and can go back there.

/// The shape of Criteo-like click data: a label, `dense` numeric and `sparse` categorical
/// features, each categorical feature a table of its own (`FeatureSchema.criteo`).
public struct ClickSchema: Sendable, Codable, Equatable, Hashable {
    public var dense: Int
    public var sparse: Int

    public init(dense: Int, sparse: Int) {
        self.dense = dense
        self.sparse = sparse
    }

    /// Criteo's display-advertising data: 13 integer columns, 26 categorical ones.
    public static let criteo = ClickSchema(dense: 13, sparse: 26)

    public var features: FeatureSchema { .criteo(dense: dense, sparse: sparse) }
}

/// Where a source is in its stream; `seek` to it resumes the very same samples in the same
/// order. What the numbers mean is up to the source.
public struct SourcePosition: Sendable, Codable, Equatable, Hashable {
    /// Passes over the data completed.
    public var epoch: Int
    /// Samples handed out in this epoch.
    public var sample: Int64
    /// Whatever else the source needs to resume (a byte offset, a line number, ...).
    public var detail: [Int64]

    public init(epoch: Int = 0, sample: Int64 = 0, detail: [Int64] = []) {
        self.epoch = epoch
        self.sample = sample
        self.detail = detail
    }
}

/// A stream of samples that can say where it is and go back there.
public protocol BatchSource {
    var schema: FeatureSchema { get }
    /// What the stream is, as text: sources with equal identities hand out the same samples in
    /// the same order. A resume checks it, so that a checkpoint's position is never applied
    /// to other data.
    var identity: String { get }
    /// Malformed input skipped in the current pass (sources that skip nothing: 0).
    var skippedLines: Int64 { get }
    /// Where the next sample will come from.
    var position: SourcePosition { get }
    /// Resumes at a position this source (or one made the same way) reported.
    mutating func seek(to position: SourcePosition) throws
    /// Fills `batch` (of this source's schema) with up to `size` samples and returns how many;
    /// 0 means the epoch ended and the next call starts the next one.
    mutating func next(_ size: Int, into batch: Batch) throws -> Int
}

extension BatchSource {
    public var skippedLines: Int64 { 0 }
}

/// Options as sorted-key JSON: part of a source's identity.
func identityText<T: Encodable>(_ value: T) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "\(value)"
}

/// The embedding key of a categorical value: the value hashed together with its column, so
/// equal values in different columns never share a key even in one table.
@inline(__always)
public func clickKey(column: Int, value: UInt64) -> UInt64 {
    SplitMix64.mix(value ^ (UInt64(column) &* 0x9E37_79B9_7F4A_7C15) ^ 0xC0FF_EE00_D15E_A5E5)
}
