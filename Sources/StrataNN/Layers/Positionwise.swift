// Layers applied to each real position of a sequence on its own (`Sequences.swift` has the
// layout): the exact GELU and the transformer's position-wise feed-forward network.
import CStrataKernels
#if canImport(Glibc)
import Glibc
#endif

private let squareRootOfTwo = Float(2).squareRoot()
/// 1 / √(2π), the standard normal density at 0.
private let normalDensityScale: Float = 0.398_942_28

/// GELU in its exact form, x · Φ(x) = x · ½ · (1 + erf(x / √2)) (RecBole's and BERT's "gelu",
/// not the tanh approximation), in the order RecBole writes it.
@inline(__always)
func gelu(_ x: Float) -> Float { x * 0.5 * (1 + erff(x / squareRootOfTwo)) }

/// d gelu / dx = Φ(x) + x · φ(x).
@inline(__always)
func geluDerivative(_ x: Float) -> Float {
    0.5 * (1 + erff(x / squareRootOfTwo)) + x * normalDensityScale * expf(-0.5 * x * x)
}

/// y = gelu(x) at each real position (`gelu`: the exact erf form), 0 at padding: the
/// activation of BERT4Rec's output head.
///
/// Inputs: [sequence `rows × steps·width`, lengths `rows × 1`] (or the sequence alone: every
/// position real; with `steps` 1 that is a plain `rows × width` matrix).
public final class GELU: Layer {
    public let width: Int
    public let steps: Int

    public init(width: Int, steps: Int) {
        precondition(width >= 1 && steps >= 1, "a sequence needs a width and a step")
        self.width = width
        self.steps = steps
    }

    public func outputColumns(for inputColumns: [Int]) -> Int? {
        isSequence(inputColumns, steps: steps, width: width) ? steps * width : nil
    }

    public func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass) {
        let batch = SequenceBatch(inputs, steps: steps)
        let x = inputs[0].data, y = output.data, stride = steps * width
        batch.forEachRow(work: batch.rows * stride * 8) { r in
            let real = batch.length(r) * width
            for i in (r * stride)..<(r * stride + real) { y[i] = gelu(x[i]) }
            (y + r * stride + real).update(repeating: 0, count: stride - real)
        }
    }

    public func backward(_ inputs: [Tensor], output: Tensor, outputGradient dy: Tensor, inputGradients: [Tensor?], _ pass: Pass) {
        guard let dx = inputGradients[0]?.data else { return }
        let batch = SequenceBatch(inputs, steps: steps)
        let x = inputs[0].data, g = dy.data, stride = steps * width
        batch.forEachRow(work: batch.rows * stride * 8) { r in
            let real = batch.length(r) * width
            for i in (r * stride)..<(r * stride + real) { dx[i] = g[i] * geluDerivative(x[i]) }
            (dx + r * stride + real).update(repeating: 0, count: stride - real)
        }
    }
}

/// The transformer's position-wise feed-forward network: at each real position,
/// y = W₂ · dropout(gelu(W₁ · x + b₁)) + b₂ (`gelu` the exact erf form), 0 at padding. Both
/// products run once over all rows·steps positions (padding zeroed first).
///
/// Inputs: [sequence `rows × steps·width`, lengths `rows × 1`] (or the sequence alone).
/// Parameters `\(name).inner.weight` (`inner × width`), `\(name).inner.bias` (`1 × inner`),
/// `\(name).outer.weight` (`width × inner`), `\(name).outer.bias` (`1 × width`), stored out × in
/// as in `Linear`; weights initially N(0, 0.02), biases 0 (RecBole's initialization).
///
/// `dropout` applies to the activations in training (`DropoutMask`, stream `dropoutStream`,
/// value (position · inner + j) of the batch's positions in row order); RecBole's SASRec and
/// BERT4Rec have none there (0) and drop the layer's output instead (`TransformerBlock`).
public final class PositionwiseFeedForward: Layer {
    public let width: Int
    public let inner: Int
    public let steps: Int
    public let dropout: Float
    public var innerWeight: Parameter { innerMap.weight }
    public var innerBias: Parameter { innerMap.bias }
    public var outerWeight: Parameter { outerMap.weight }
    public var outerBias: Parameter { outerMap.bias }
    private let innerMap: Affine
    private let outerMap: Affine
    /// The dropout stream of the activations, apart from every other mask of a step.
    public static let dropoutStream: UInt64 = 0x4646_4E5F_4745_4C55  // "FFN_GELU"

    /// The input with its padding zeroed, (rows·steps) × width.
    private let input: Tensor
    /// W₁ · x + b₁, (rows·steps) × inner.
    private let preActivation: Tensor
    /// dropout(gelu(·)), (rows·steps) × inner, 0 at padding.
    private let hidden: Tensor
    /// dy with its padding zeroed, (rows·steps) × width.
    private let outputGradient: Tensor
    /// dL/d(hidden), then dL/d(preActivation), (rows·steps) × inner.
    private let hiddenGradient: Tensor

    public init(_ name: String, width: Int, inner: Int, steps: Int, dropout: Float = 0) {
        precondition(width >= 1 && inner >= 1 && steps >= 1, "a feed-forward network needs a width, an inner width and a step")
        precondition(dropout >= 0 && dropout < 1, "dropout is a probability below 1")
        self.width = width
        self.inner = inner
        self.steps = steps
        self.dropout = dropout
        innerMap = Affine("\(name).inner", inputs: width, outputs: inner)
        outerMap = Affine("\(name).outer", inputs: inner, outputs: width)
        input = Tensor(rows: 0, columns: width)
        preActivation = Tensor(rows: 0, columns: inner)
        hidden = Tensor(rows: 0, columns: inner)
        outputGradient = Tensor(rows: 0, columns: width)
        hiddenGradient = Tensor(rows: 0, columns: inner)
    }

    public var parameters: [Parameter] { [innerWeight, innerBias, outerWeight, outerBias] }

    public func outputColumns(for inputColumns: [Int]) -> Int? {
        isSequence(inputColumns, steps: steps, width: width) ? steps * width : nil
    }

    public func initialize(_ w: inout WeightInitializer) {
        w.normal(innerWeight, standardDeviation: transformerInitializerRange)
        innerBias.value.zero()
        w.normal(outerWeight, standardDeviation: transformerInitializerRange)
        outerBias.value.zero()
    }

    public func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass) {
        forward(inputs[0], SequenceBatch(inputs, steps: steps), into: output, pass)
    }

    public func backward(_ inputs: [Tensor], output: Tensor, outputGradient dy: Tensor, inputGradients: [Tensor?], _ pass: Pass) {
        backward(SequenceBatch(inputs, steps: steps), dy, inputGradient: inputGradients[0], pass)
    }

    /// The activations' mask: `rows × steps × inner` values.
    private func mask(_ pass: Pass, rows: Int) -> DropoutMask? {
        pass.training && dropout > 0 ? DropoutMask(rate: dropout, pass: pass, stream: Self.dropoutStream, count: rows * steps * inner) : nil
    }

    // MARK: The computation, for this layer and for `TransformerBlock`

    func forward(_ x: Tensor, _ batch: SequenceBatch, into output: Tensor, _ pass: Pass) {
        let positions = batch.rows * steps, (d, m) = (width, inner)
        input.resize(rows: positions)
        preActivation.resize(rows: positions)
        hidden.resize(rows: positions)
        outputGradient.resize(rows: positions)
        hiddenGradient.resize(rows: positions)
        batch.copyReal(x.data, into: input.data, width: d)
        innerMap.forward(input.data, rows: positions, into: preActivation.data)
        let z = preActivation.data, h = hidden.data, drop = mask(pass, rows: batch.rows), keep = 1 / (1 - dropout)
        batch.forEachRow(work: positions * m * 8) { r in
            let len = batch.length(r)
            for i in (r * steps * m)..<((r * steps + len) * m) {
                let a = gelu(z[i])
                if let drop { h[i] = drop.kept(i) ? a * keep : 0 } else { h[i] = a }
            }
            (h + (r * steps + len) * m).update(repeating: 0, count: (steps - len) * m)
        }
        outerMap.forward(h, rows: positions, into: output.data)
        batch.zeroPadding(output.data, width: d)
    }

    /// Overwrites the parameters' gradients and, if given, writes dL/dx (0 at padding), from dy
    /// (its padding ignored) and the last forward.
    func backward(_ batch: SequenceBatch, _ dy: Tensor, inputGradient: Tensor?, _ pass: Pass) {
        let positions = batch.rows * steps, (d, m) = (width, inner)
        let g = outputGradient.data, gh = hiddenGradient.data, z = preActivation.data
        let drop = mask(pass, rows: batch.rows), keep = 1 / (1 - dropout)
        batch.copyReal(dy.data, into: g, width: d)
        outerMap.parameterGradients(hidden.data, rows: positions, g)
        outerMap.inputGradient(g, rows: positions, into: gh)
        batch.forEachRow(work: positions * m * 8) { r in
            let len = batch.length(r)
            for i in (r * steps * m)..<((r * steps + len) * m) {
                // Dropout's backward is its mask (`DropoutMask.apply`), then gelu's slope.
                var v = gh[i]
                if let drop { v = drop.kept(i) ? v * keep : 0 }
                gh[i] = v * geluDerivative(z[i])
            }
            (gh + (r * steps + len) * m).update(repeating: 0, count: (steps - len) * m)
        }
        innerMap.parameterGradients(input.data, rows: positions, gh)
        if let dx = inputGradient {
            innerMap.inputGradient(gh, rows: positions, into: dx.data)
            batch.zeroPadding(dx.data, width: d)
        }
    }
}

/// y = x · Wᵀ + b at each of `steps` positions of a row (every position real, no lengths): one
/// product over rows·steps rows. BERT4Rec's output head applies it to each masked position's
/// state.
///
/// Input: `rows × steps·inputs`. Parameters `\(name).weight` (`outputs × inputs`, stored out ×
/// in as in `Linear`, initially N(0, 0.02)) and `\(name).bias` (`1 × outputs`, initially 0):
/// RecBole's initialization of a transformer's linear layers.
public final class PositionwiseLinear: Layer {
    public var inputs: Int { map.inputs }
    public var outputs: Int { map.outputs }
    public let steps: Int
    public var weight: Parameter { map.weight }
    public var bias: Parameter { map.bias }
    private let map: Affine

    public init(_ name: String, inputs: Int, outputs: Int, steps: Int) {
        precondition(inputs >= 1 && outputs >= 1 && steps >= 1, "a linear layer needs an input, an output and a step")
        self.steps = steps
        map = Affine(name, inputs: inputs, outputs: outputs)
    }

    public var parameters: [Parameter] { [weight, bias] }

    public func outputColumns(for inputColumns: [Int]) -> Int? { inputColumns == [steps * inputs] ? steps * outputs : nil }

    public func initialize(_ w: inout WeightInitializer) {
        w.normal(weight, standardDeviation: transformerInitializerRange)
        bias.value.zero()
    }

    public func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass) {
        map.forward(inputs[0].data, rows: inputs[0].rows * steps, into: output.data)
    }

    public func backward(_ inputs: [Tensor], output: Tensor, outputGradient dy: Tensor, inputGradients: [Tensor?], _ pass: Pass) {
        let positions = inputs[0].rows * steps
        map.parameterGradients(inputs[0].data, rows: positions, dy.data)
        if let dx = inputGradients[0] { map.inputGradient(dy.data, rows: positions, into: dx.data) }
    }
}
