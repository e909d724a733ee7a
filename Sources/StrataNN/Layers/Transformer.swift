/// One transformer encoder block as RecBole's `TransformerLayer` (post-norm, as in BERT, SASRec
/// and BERT4Rec), on padded sequences (`Sequences.swift` has the layout):
///
///     a = LayerNorm(x + dropout(SelfAttention(x)))
///     y = LayerNorm(a + dropout(PositionwiseFeedForward(a)))
///
/// `hiddenDropout` is RecBole's `hidden_dropout_prob` (both dropouts above), `attentionDropout`
/// its `attn_dropout_prob` (on the attention probabilities). Output and input gradient are 0 at
/// padding.
///
/// Inputs: [sequence `rows × steps·width`, lengths `rows × 1`] (or the sequence alone).
/// Parameters: the attention's (`\(name).attention.…`), the first norm's
/// (`\(name).attention.norm.…`), the feed-forward network's (`\(name).feedforward.…`) and
/// the second norm's (`\(name).feedforward.norm.…`), in that order.
///
/// The two hidden dropouts use streams `attentionDropoutStream` and `feedForwardDropoutStream`
/// (value i of the `rows × steps·width` tensor), apart from the sublayers' own.
public final class TransformerBlock: Layer {
    public let width: Int
    public let steps: Int
    public let hiddenDropout: Float
    public let attention: SelfAttention
    public let attentionNorm: LayerNorm
    public let feedForward: PositionwiseFeedForward
    public let feedForwardNorm: LayerNorm
    public static let attentionDropoutStream: UInt64 = 0x424C_4B5F_4154_544E  // "BLK_ATTN"
    public static let feedForwardDropoutStream: UInt64 = 0x424C_4B5F_4646_4E5F  // "BLK_FFN_"

    /// The attention's output, then dropped out; the first residual sum; the first norm's
    /// output; the feed-forward output, then dropped out; the second residual sum. Each
    /// rows × steps·width, 0 at padding.
    private let attended, dropped, firstSum, normalized, fed, fedDropped, secondSum: Tensor
    /// Gradients: of the second sum, of the feed-forward output, of the first norm's output,
    /// of the first sum, of the attention's output, of the attention's input.
    private let secondSumGradient, fedGradient, normalizedGradient, firstSumGradient, attendedGradient, attentionInputGradient: Tensor
    /// All of the above, to resize them together.
    private let scratch: [Tensor]

    public init(_ name: String, width: Int, heads: Int, inner: Int, steps: Int, causal: Bool,
                hiddenDropout: Float = 0, attentionDropout: Float = 0, epsilon: Float = 1e-12) {
        precondition(hiddenDropout >= 0 && hiddenDropout < 1, "dropout is a probability below 1")
        self.width = width
        self.steps = steps
        self.hiddenDropout = hiddenDropout
        attention = SelfAttention("\(name).attention", width: width, heads: heads, steps: steps, causal: causal, dropout: attentionDropout)
        attentionNorm = LayerNorm("\(name).attention.norm", width: width, steps: steps, epsilon: epsilon)
        feedForward = PositionwiseFeedForward("\(name).feedforward", width: width, inner: inner, steps: steps)
        feedForwardNorm = LayerNorm("\(name).feedforward.norm", width: width, steps: steps, epsilon: epsilon)
        func sequence() -> Tensor { Tensor(rows: 0, columns: steps * width) }
        (attended, dropped, firstSum, normalized, fed, fedDropped, secondSum) =
            (sequence(), sequence(), sequence(), sequence(), sequence(), sequence(), sequence())
        (secondSumGradient, fedGradient, normalizedGradient, firstSumGradient, attendedGradient, attentionInputGradient) =
            (sequence(), sequence(), sequence(), sequence(), sequence(), sequence())
        scratch = [attended, dropped, firstSum, normalized, fed, fedDropped, secondSum,
                   secondSumGradient, fedGradient, normalizedGradient, firstSumGradient, attendedGradient, attentionInputGradient]
    }

    public var parameters: [Parameter] {
        attention.parameters + attentionNorm.parameters + feedForward.parameters + feedForwardNorm.parameters
    }

    public func outputColumns(for inputColumns: [Int]) -> Int? {
        isSequence(inputColumns, steps: steps, width: width) ? steps * width : nil
    }

    public func initialize(_ w: inout WeightInitializer) {
        attention.initialize(&w)
        attentionNorm.initialize(&w)
        feedForward.initialize(&w)
        feedForwardNorm.initialize(&w)
    }

    /// A mask of the block's `rows × steps × width` values.
    private func mask(_ pass: Pass, stream: UInt64, rows: Int) -> DropoutMask? {
        pass.training && hiddenDropout > 0 ? DropoutMask(rate: hiddenDropout, pass: pass, stream: stream, count: rows * steps * width) : nil
    }

    /// `a` + `b` into `sum`, over `count` floats.
    private static func add(_ a: Tensor, _ b: Tensor, into sum: Tensor) {
        let x = a.data, y = b.data, s = sum.data
        for i in 0..<sum.count { s[i] = x[i] + y[i] }
    }

    public func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass) {
        let batch = SequenceBatch(inputs, steps: steps)
        for t in scratch { t.resize(rows: batch.rows) }
        attention.forward(inputs[0], batch, into: attended, pass)
        var a = attended
        if let drop = mask(pass, stream: Self.attentionDropoutStream, rows: batch.rows) {
            drop.apply(attended.data, dropped.data, count: attended.count)
            a = dropped
        }
        // The input's padding may hold anything: copy its real positions, then add.
        batch.copyReal(inputs[0].data, into: firstSum.data, width: width)
        Self.add(firstSum, a, into: firstSum)
        attentionNorm.forward(firstSum, batch, into: normalized)
        feedForward.forward(normalized, batch, into: fed, pass)
        var f = fed
        if let drop = mask(pass, stream: Self.feedForwardDropoutStream, rows: batch.rows) {
            drop.apply(fed.data, fedDropped.data, count: fed.count)
            f = fedDropped
        }
        Self.add(normalized, f, into: secondSum)
        feedForwardNorm.forward(secondSum, batch, into: output)
    }

    public func backward(_ inputs: [Tensor], output: Tensor, outputGradient dy: Tensor, inputGradients: [Tensor?], _ pass: Pass) {
        let batch = SequenceBatch(inputs, steps: steps)
        feedForwardNorm.backward(batch, dy, inputGradient: secondSumGradient)
        var g = secondSumGradient
        if let drop = mask(pass, stream: Self.feedForwardDropoutStream, rows: batch.rows) {
            drop.apply(secondSumGradient.data, fedGradient.data, count: fedGradient.count)
            g = fedGradient
        }
        feedForward.backward(batch, g, inputGradient: normalizedGradient, pass)
        Self.add(normalizedGradient, secondSumGradient, into: normalizedGradient)
        attentionNorm.backward(batch, normalizedGradient, inputGradient: firstSumGradient)
        g = firstSumGradient
        if let drop = mask(pass, stream: Self.attentionDropoutStream, rows: batch.rows) {
            drop.apply(firstSumGradient.data, attendedGradient.data, count: attendedGradient.count)
            g = attendedGradient
        }
        let dx = inputGradients[0]
        attention.backward(batch, g, inputGradient: dx == nil ? nil : attentionInputGradient, pass)
        // Both terms are 0 at padding.
        if let dx { Self.add(attentionInputGradient, firstSumGradient, into: dx) }
    }
}
