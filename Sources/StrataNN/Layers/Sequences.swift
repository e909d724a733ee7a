// Batches of padded sequences, for the sequence layers (recurrent and transformer).
//
// The layout every sequence layer shares: a batch is a tensor of `rows × (T·d)`; row r is one
// sample and its time step t occupies columns [t·d, (t+1)·d), so the memory is exactly a
// `(rows·T) × d` row-major matrix and position-wise products run as one product over rows·T
// rows. Sequences are left-aligned: positions 0..<len[r] are real, the rest padding. The
// lengths come as a second input, `rows × 1`, each an integer in 0...T held as a Float (never
// trainable: its gradient is nil and nothing writes to it); without it every position is real.
//
// Padding holds anything, NaN included, and never reaches an output at a real position, a
// parameter gradient or a real position's input gradient. Every sequence layer writes exact
// zeros to its output and to its input gradient at padding positions, so garbage cannot
// travel through later layers either. Layers skip padding or overwrite it rather than
// multiply it by a zero mask (NaN · 0 is NaN), and copy their input with its padding zeroed
// before a product whose reduction runs over positions (a weight gradient).

/// A batch of padded sequences as a layer sees it in one call: its rows, its steps and where
/// each sequence ends.
struct SequenceBatch {
    let rows: Int
    let steps: Int
    private let lengths: UnsafePointer<Float>?

    /// `inputs[1]`, when given, holds the lengths.
    init(_ inputs: [Tensor], steps: Int) {
        self.init(rows: inputs[0].rows, steps: steps, lengths: inputs.count > 1 ? inputs[1] : nil)
    }

    init(rows: Int, steps: Int, lengths: Tensor?) {
        if let lengths {
            precondition(lengths.columns == 1 && lengths.rows == rows, "lengths are \(lengths.rows) × \(lengths.columns), the batch \(rows) rows")
        }
        self.rows = rows
        self.steps = steps
        self.lengths = lengths.map { UnsafePointer($0.data) }
    }

    /// Row r's number of real positions.
    @inline(__always)
    func length(_ r: Int) -> Int {
        guard let lengths else { return steps }
        let v = lengths[r]
        precondition(v >= 0 && v <= Float(steps) && v.rounded(.towardZero) == v, "sequence length \(v) is not an integer in 0...\(steps)")
        return Int(v)
    }

    /// Copies the real positions of `x` (`rows × steps·width`) into `y` and zeroes `y`'s padding.
    func copyReal(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, width: Int) {
        let stride = steps * width
        for r in 0..<rows {
            let real = length(r) * width
            (y + r * stride).update(from: x + r * stride, count: real)
            (y + r * stride + real).update(repeating: 0, count: stride - real)
        }
    }

    /// Zeroes the padding positions of `y` (`rows × steps·width`).
    func zeroPadding(_ y: UnsafeMutablePointer<Float>, width: Int) {
        let stride = steps * width
        for r in 0..<rows {
            let real = length(r) * width
            (y + r * stride + real).update(repeating: 0, count: stride - real)
        }
    }

    /// Calls `body(r)` for every row, in contiguous parts over the threads when `work` (about
    /// the floats touched) pays for it. Each row's arithmetic is the same whatever the split.
    func forEachRow(work: Int, _ body: (Int) -> Void) {
        let parts = work >= 1 << 15 ? min(Parallel.threads, rows) : 1
        Parallel.forEach(parts) { part in
            for r in (rows * part / parts)..<(rows * (part + 1) / parts) { body(r) }
        }
    }
}

/// Whether `inputColumns` is a sequence of `steps × width` columns, alone or with its lengths.
func isSequence(_ inputColumns: [Int], steps: Int, width: Int) -> Bool {
    inputColumns == [steps * width] || inputColumns == [steps * width, 1]
}

/// RecBole's `initializer_range`: the standard deviation of the transformer layers' initial
/// weights.
let transformerInitializerRange = 0.02

/// x + P[t] at each real position t, P a learned `steps × width` matrix (the position
/// embedding SASRec and BERT4Rec add to the item embeddings); 0 at padding.
///
/// Inputs: [sequence `rows × steps·width`, lengths `rows × 1`] (or the sequence alone: every
/// position real). Parameter `\(name).weight` (`steps × width`), initially N(0, 0.02).
public final class PositionEmbedding: Layer {
    public let width: Int
    public let steps: Int
    public let weight: Parameter

    public init(_ name: String, width: Int, steps: Int) {
        precondition(width >= 1 && steps >= 1, "a position embedding needs a width and a step")
        self.width = width
        self.steps = steps
        weight = Parameter("\(name).weight", rows: steps, columns: width)
    }

    public var parameters: [Parameter] { [weight] }

    public func outputColumns(for inputColumns: [Int]) -> Int? {
        isSequence(inputColumns, steps: steps, width: width) ? steps * width : nil
    }

    public func initialize(_ w: inout WeightInitializer) { w.normal(weight, standardDeviation: transformerInitializerRange) }

    public func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass) {
        let batch = SequenceBatch(inputs, steps: steps)
        let x = inputs[0].data, y = output.data, p = weight.value.data
        let stride = steps * width
        for r in 0..<batch.rows {
            let real = batch.length(r) * width
            for i in 0..<real { y[r * stride + i] = x[r * stride + i] + p[i] }
            (y + r * stride + real).update(repeating: 0, count: stride - real)
        }
    }

    public func backward(_ inputs: [Tensor], output: Tensor, outputGradient dy: Tensor, inputGradients: [Tensor?], _ pass: Pass) {
        let batch = SequenceBatch(inputs, steps: steps)
        let g = dy.data, dp = weight.gradient.data
        let stride = steps * width
        dp.update(repeating: 0, count: stride)
        // Rows in order: the sum does not depend on threads.
        for r in 0..<batch.rows {
            let real = batch.length(r) * width
            for i in 0..<real { dp[i] += g[r * stride + i] }
        }
        if let dx = inputGradients[0] { batch.copyReal(g, into: dx.data, width: width) }
    }
}

/// The last real position of each sequence, `rows × width`: the state SASRec scores the next
/// item from (and BERT4Rec at inference, where that position holds the mask token). A row of
/// length 0 gives zeros.
///
/// Inputs: [sequence `rows × steps·width`, lengths `rows × 1`]. The input gradient is dy at the
/// last real position and 0 everywhere else.
public final class LastPosition: Layer {
    public let width: Int
    public let steps: Int

    public init(width: Int, steps: Int) {
        precondition(width >= 1 && steps >= 1, "a sequence needs a width and a step")
        self.width = width
        self.steps = steps
    }

    public func outputColumns(for inputColumns: [Int]) -> Int? {
        inputColumns == [steps * width, 1] ? width : nil
    }

    public func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass) {
        let batch = SequenceBatch(inputs, steps: steps)
        for r in 0..<batch.rows {
            let len = batch.length(r)
            if len == 0 {
                output.row(r).update(repeating: 0, count: width)
            } else {
                output.row(r).update(from: inputs[0].row(r) + (len - 1) * width, count: width)
            }
        }
    }

    public func backward(_ inputs: [Tensor], output: Tensor, outputGradient dy: Tensor, inputGradients: [Tensor?], _ pass: Pass) {
        guard let dx = inputGradients[0] else { return }
        let batch = SequenceBatch(inputs, steps: steps)
        dx.zero()
        for r in 0..<batch.rows {
            let len = batch.length(r)
            if len > 0 { (dx.row(r) + (len - 1) * width).update(from: dy.row(r), count: width) }
        }
    }
}

/// The states at chosen positions of each sequence, `rows × slots·width`: slot j of row r holds
/// the state at position `positions[r, j]`, or zeros where that is −1 (an unused slot). BERT4Rec
/// reads its masked positions so (in training, up to `slots` a row; at inference one, the
/// mask after the history).
///
/// Inputs: [sequence `rows × steps·width`, positions `rows × slots`, each an integer in
/// −1 ..< steps held as a Float (never trainable)]. The input gradient is each slot's dy at its
/// position (summed, slots in order, where two slots name one position) and 0 elsewhere.
public final class GatherPositions: Layer {
    public let width: Int
    public let steps: Int
    public let slots: Int

    public init(width: Int, steps: Int, slots: Int) {
        precondition(width >= 1 && steps >= 1 && slots >= 1, "gathering needs a width, a step and a slot")
        self.width = width
        self.steps = steps
        self.slots = slots
    }

    public func outputColumns(for inputColumns: [Int]) -> Int? {
        inputColumns == [steps * width, slots] ? slots * width : nil
    }

    /// Row r's slot j: its position, or nil for an unused slot.
    @inline(__always)
    private func position(_ positions: Tensor, _ r: Int, _ j: Int) -> Int? {
        let v = positions.row(r)[j]
        precondition(v >= -1 && v < Float(steps) && v.rounded(.towardZero) == v, "position \(v) is not an integer in -1..<\(steps)")
        return v < 0 ? nil : Int(v)
    }

    public func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass) {
        let x = inputs[0], positions = inputs[1]
        for r in 0..<x.rows {
            for j in 0..<slots {
                let y = output.row(r) + j * width
                if let p = position(positions, r, j) {
                    y.update(from: x.row(r) + p * width, count: width)
                } else {
                    y.update(repeating: 0, count: width)
                }
            }
        }
    }

    public func backward(_ inputs: [Tensor], output: Tensor, outputGradient dy: Tensor, inputGradients: [Tensor?], _ pass: Pass) {
        guard let dx = inputGradients[0] else { return }
        let positions = inputs[1]
        dx.zero()
        for r in 0..<dx.rows {
            for j in 0..<slots {
                guard let p = position(positions, r, j) else { continue }
                let g = dy.row(r) + j * width, d = dx.row(r) + p * width
                for i in 0..<width { d[i] += g[i] }
            }
        }
    }
}
