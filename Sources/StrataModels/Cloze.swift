// BERT4Rec's Cloze task (Sun et al. 2019): the model reads a user's items with some of them
// replaced by a mask, and learns to name the masked ones from both sides. The masking happens
// on keys, before the lookup, so the mask is a row of the item table as in RecBole (its
// `mask_token`), trained like any item's row.
//
// In training, sample r's sequence is its history's last `steps − 1` items followed by its own
// item (the target). With probability `lastOnly` only the last position (the target) is
// masked, the very task of inference (RecBole's `ft_ratio`); otherwise each position is masked
// with probability `ratio`, and the last `slots` masked positions are predicted (RecBole
// predicts the last ⌊ratio · steps⌋; earlier ones stay masked in the input). At inference the
// sequence is the history's last `steps − 1` items followed by the mask, whose state scores the
// next item.
//
// The draws are a counter of (seed, step, row, position), as dropout's: a resumed run masks the
// same positions, and neither threads nor look-ahead change them.
public import StrataNN
import StrataStore

/// How BERT4Rec masks its input (`ModelBuilder.maskedSequence`).
public struct ClozeMasking: Sendable, Equatable {
    /// Each position's chance of being masked in training (RecBole's `mask_ratio`).
    public var ratio: Float
    /// Each sample's chance of having only its last position, the target, masked instead
    /// (RecBole's `ft_ratio`, which it draws per batch).
    public var lastOnly: Float
    /// The most masked positions a sample predicts in training, the last ones.
    public var slots: Int

    public init(ratio: Float, lastOnly: Float, slots: Int) {
        self.ratio = ratio
        self.lastOnly = lastOnly
        self.slots = slots
    }

    /// The item table's key of the mask: the largest key. Data keys are 64-bit hashes
    /// (`FeatureSchema.key`), so one equal to it is a 2⁻⁶⁴ chance; training refuses it by name.
    public static let maskKey = UInt64.max
}

/// A masked sequence's keys for one batch, and which positions hold the masks. Used by one
/// thread at a time (the network's).
public final class ClozeInput {
    /// The features of the history and of the sample's own item.
    public let history: Int
    public let target: Int
    public let steps: Int
    public let masking: ClozeMasking
    /// Per row and slot, the masked position, or −1: the graph input `GatherPositions` reads.
    public let positions: Tensor
    /// The sequences to look up, as bags: row r's are `keys[offsets[r] ..< offsets[r + 1]]`.
    public private(set) var keys: [UInt64] = []
    public private(set) var offsets: [Int32] = [0]
    /// Per row and slot (training), the masked item, or `ClozeMasking.maskKey` for an unused slot.
    public private(set) var targets: [UInt64] = []
    private var masked: [Int] = []

    public init(history: Int, target: Int, steps: Int, masking: ClozeMasking) {
        precondition(steps >= 2, "a masked sequence has room for an item and the mask")
        precondition(masking.slots >= 1 && masking.ratio >= 0 && masking.ratio <= 1 && masking.lastOnly >= 0 && masking.lastOnly <= 1)
        self.history = history
        self.target = target
        self.steps = steps
        self.masking = masking
        positions = Tensor(rows: 0, columns: masking.slots)
    }

    /// Calls `body` with the sequences `prepare` built, as the lookup reads a bag feature.
    func withUseKeys<R, E: Error>(_ body: (UseKeys) throws(E) -> R) throws(E) -> R {
        try keys.withUnsafeBufferPointer { (k) throws(E) in
            try offsets.withUnsafeBufferPointer { (o) throws(E) in try body(UseKeys(keys: k, offsets: o)) }
        }
    }

    /// Builds `batch`'s sequences, the masks' positions and (in training) their items.
    /// Sample r draws its masks as row `pass.firstRow + r` of the whole batch (`Pass.firstRow`).
    public func prepare(_ batch: Batch, training: Bool, pass: (step: UInt64, seed: UInt64, firstRow: Int)) {
        let rows = batch.count, slots = masking.slots, mask = ClozeMasking.maskKey
        keys.removeAll(keepingCapacity: true)
        offsets.removeAll(keepingCapacity: true)
        offsets.append(0)
        targets.removeAll(keepingCapacity: true)
        positions.resize(rows: rows)
        let items = batch.keys(of: target).keys
        var key = SplitMix64.mix(pass.seed ^ 0x434C_4F5A_455F_4D53)  // "CLOZE_MS"
        key = SplitMix64.mix(key ^ pass.step)
        let ratio = UInt64(Double(masking.ratio) * 0x1p64.nextDown), lastOnly = UInt64(Double(masking.lastOnly) * 0x1p64.nextDown)
        for r in 0..<rows {
            let history = batch.keys(of: self.history, row: r)
            let kept = history.suffix(steps - 1)
            let start = keys.count
            keys.append(contentsOf: kept)
            let p = positions.row(r)
            p.update(repeating: -1, count: slots)
            guard training else {
                keys.append(mask)
                offsets.append(Int32(keys.count))
                p[0] = Float(kept.count)
                continue
            }
            keys.append(items[r])
            let length = kept.count + 1
            let row = SplitMix64.mix(key ^ UInt64(pass.firstRow + r) &* 0x9E37_79B9_7F4A_7C15)
            masked.removeAll(keepingCapacity: true)
            if SplitMix64.mix(row) < lastOnly {
                masked.append(length - 1)
            } else {
                for t in 0..<length where SplitMix64.mix(row &+ UInt64(t + 1) &* 0xD1B5_4A32_D192_ED03) < ratio { masked.append(t) }
            }
            for (j, t) in masked.suffix(slots).enumerated() {
                p[j] = Float(t)
                targets.append(keys[start + t])
            }
            for _ in min(masked.count, slots)..<slots { targets.append(mask) }
            for t in masked { keys[start + t] = mask }
            offsets.append(Int32(keys.count))
        }
    }
}
