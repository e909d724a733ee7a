// Next-item samples from users' time-ordered interactions, as RecBole trains sequential
// models: every training item after a user's first is a target, and its history is the items
// the user had before it (the last `historyLength`). A sample's row holds the user's and the
// item's features as the data has them, and the history as a bag of the item table's keys,
// oldest first (`FeatureSchema.sequence`).
public import StrataModels
import StrataStore

extension Interactions {
    /// The schema of next-item samples: the data's, with the history feature (a bag of the
    /// item table's keys, of the user's side) after the features read from data.
    public func sequenceSchema() throws -> FeatureSchema {
        var schema = self.schema
        let name = "history"
        guard schema.categoricalIndex(name) == nil, schema.dense.allSatisfy({ $0.name != name }),
              schema.labels.allSatisfy({ $0.name != name }) else {
            throw TrainingError.mismatch("the data has a feature named '\(name)', the name of the items a user had before")
        }
        let item = schema.categorical[items.idFeature]
        schema.categorical.insert(.init(name, table: item.table, multiValued: true, pooling: .mean, side: .user),
                                  at: schema.readFeatures)
        schema.sequence = name
        return schema
    }
}

/// The training split's next-item samples, in an order shuffled anew every epoch from the
/// seed: a resumed run reads the very same samples in the same order.
public struct SequenceSamples: BatchSource {
    public let schema: FeatureSchema
    public let identity: String
    public let historyLength: Int
    public private(set) var position = SourcePosition()
    private let interactions: Interactions
    private let composer: RowComposer
    private let historyFeature: Int
    private let seed: UInt64
    /// User u's samples are s in firsts[u] ..< firsts[u + 1], one for each training item after
    /// the first: sample s is item s − firsts[u] + 1 of u's sequence. 8 bytes a user, not a sample.
    private let firsts: [Int]
    private var order: [Int32] = []
    private var keys: [UInt64] = []

    /// `identity` names the data (the training split's source identity).
    public init(_ interactions: Interactions, historyLength: Int, seed: UInt64, identity: String) throws {
        precondition(historyLength >= 1, "a history holds at least one item")
        guard interactions.hasSequences else {
            throw TrainingError.mismatch("next-item samples need each user's interactions in time order: the schema's time column")
        }
        schema = try interactions.sequenceSchema()
        self.interactions = interactions
        self.historyLength = historyLength
        self.seed = seed
        self.identity = "next-item samples (history \(historyLength)) of \(identity)"
        composer = RowComposer(schema: schema, users: interactions.users, items: interactions.items)
        historyFeature = schema.categoricalIndex(schema.sequence!)!
        var firsts = [0]
        firsts.reserveCapacity(interactions.users.count + 1)
        for u in 0..<interactions.users.count { firsts.append(firsts[u] + max(0, interactions.trainingLengths[u] - 1)) }
        self.firsts = firsts
        shuffleEpoch()
    }

    /// Samples an epoch holds.
    public var count: Int { firsts[firsts.count - 1] }

    /// The user of sample s: the last u with firsts[u] ≤ s (users without samples share theirs
    /// with the next).
    private func user(of s: Int) -> Int {
        var low = 0, high = firsts.count - 1
        while low < high {
            let mid = (low + high) / 2
            if firsts[mid + 1] <= s { low = mid + 1 } else { high = mid }
        }
        return low
    }

    public mutating func seek(to position: SourcePosition) throws {
        guard position.epoch >= 0, position.sample >= 0, position.sample <= Int64(count), position.detail.isEmpty else {
            throw DataError.positionMismatch(source: identity, detail: "sample \(position.sample) of epoch \(position.epoch) is not a position of \(count) samples an epoch")
        }
        self.position = position
        shuffleEpoch()
    }

    public mutating func next(_ size: Int, into batch: Batch) throws -> Int {
        let n = min(size, count - Int(position.sample))
        guard n > 0 else {
            position = SourcePosition(epoch: position.epoch + 1)
            shuffleEpoch()
            return 0
        }
        batch.begin(capacity: n)
        for r in 0..<n {
            let s = Int(order[Int(position.sample) + r])
            let u = user(of: s), p = s - firsts[u] + 1
            let sequence = interactions.sequences[u]
            keys.removeAll(keepingCapacity: true)
            for i in max(0, p - historyLength)..<p { keys.append(interactions.items.ids[Int(sequence[i])]) }
            keys.withUnsafeBufferPointer { history in
                composer.write(batch, row: r, user: .entity(interactions.users, u), item: .entity(interactions.items, Int(sequence[p])),
                               context: .missing, labels: nil, history: (historyFeature, history))
            }
        }
        batch.end(written: n)
        batch.computeCrosses()
        position.sample += Int64(n)
        return n
    }

    /// The order of the current epoch's samples: a permutation drawn from (seed, epoch).
    private mutating func shuffleEpoch() {
        if order.count != count { order = (0..<Int32(count)).map { $0 } } else {
            for i in 0..<count { order[i] = Int32(i) }
        }
        var rng = SplitMix64(seed: SplitMix64.mix(seed ^ 0x5345_5153_4841_4645 ^ SplitMix64.mix(UInt64(position.epoch))))  // "SEQSHAFE"
        shuffle(&order, &rng)
    }
}
