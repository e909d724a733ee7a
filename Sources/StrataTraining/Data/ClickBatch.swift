import Foundation
import StrataStore

// Click data in the shape of Criteo's: a label, dense numeric features and categorical
// features that become embedding keys. Batches are columnar so that each categorical
// feature's keys are one contiguous run, ready for one store call per table.

/// How many dense and categorical features a sample has.
public struct ClickSchema: Sendable, Codable, Equatable, Hashable {
    public var dense: Int
    public var sparse: Int

    public init(dense: Int, sparse: Int) {
        self.dense = dense
        self.sparse = sparse
    }

    /// Criteo's display-advertising data: 13 integer columns, 26 categorical ones.
    public static let criteo = ClickSchema(dense: 13, sparse: 26)
}

/// A batch of samples, reused from batch to batch without reallocating.
public struct ClickBatch: Sendable {
    public let schema: ClickSchema
    /// Samples in the batch.
    public internal(set) var count = 0
    /// `count` labels, 0 or 1.
    public internal(set) var labels: [Float] = []
    /// `count × schema.dense` values, sample after sample, already transformed (log(x + 1)).
    public internal(set) var dense: [Float] = []
    /// `schema.sparse × count` keys, feature after feature: feature `f`'s keys are
    /// `keys[f * count ..< (f + 1) * count]`.
    public internal(set) var keys: [UInt64] = []

    public init(schema: ClickSchema) { self.schema = schema }

    /// Empties the batch and makes room for `capacity` samples.
    public mutating func reset(capacity: Int) {
        count = 0
        labels.removeAll(keepingCapacity: true)
        dense.removeAll(keepingCapacity: true)
        keys.removeAll(keepingCapacity: true)
        labels.reserveCapacity(capacity)
        dense.reserveCapacity(capacity * schema.dense)
        keys.reserveCapacity(capacity * schema.sparse)
    }

    /// Sets the batch from sample-major arrays (`keys` sample after sample) and transposes the
    /// keys to feature-major.
    public mutating func fill(labels: [Float], dense: [Float], sampleMajorKeys: [UInt64]) {
        let n = labels.count
        precondition(dense.count == n * schema.dense && sampleMajorKeys.count == n * schema.sparse)
        count = n
        self.labels = labels
        self.dense = dense
        keys = [UInt64](repeating: 0, count: n * schema.sparse)
        for b in 0..<n {
            for f in 0..<schema.sparse { keys[f * n + b] = sampleMajorKeys[b * schema.sparse + f] }
        }
    }

    /// Feature `f`'s keys, one per sample.
    public func keys(of feature: Int) -> ArraySlice<UInt64> { keys[(feature * count)..<((feature + 1) * count)] }
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

/// A stream of click samples that can say where it is and go back there.
public protocol ClickSource {
    var schema: ClickSchema { get }
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
    /// Fills `batch` with up to `size` samples and returns how many; 0 means the epoch ended
    /// and the next call starts the next one.
    mutating func next(_ size: Int, into batch: inout ClickBatch) throws -> Int
}

extension ClickSource {
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
