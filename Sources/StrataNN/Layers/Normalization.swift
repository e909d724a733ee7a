/// Layer normalization of each real position of a sequence (`Sequences.swift` has the layout):
/// x̂ = (x − mean) / √(variance + ε) over the position's `width` values, with the biased
/// variance (as PyTorch's `nn.LayerNorm`), then y = γ ⊙ x̂ + β; 0 at padding.
///
/// Inputs: [sequence `rows × steps·width`, lengths `rows × 1`] (or the sequence alone: every
/// position real; with `steps` 1 that is a plain `rows × width` matrix). Parameters
/// `\(name).weight` (γ, initially 1) and `\(name).bias` (β, initially 0), each `1 × width`.
/// ε defaults to RecBole's `layer_norm_eps`, 1e-12.
public final class LayerNorm: Layer {
    public let width: Int
    public let steps: Int
    public let epsilon: Float
    public let weight: Parameter
    public let bias: Parameter
    /// x̂ of the last forward, `rows × steps·width` (padding unspecified).
    private let normalized: Tensor
    /// 1 / √(variance + ε) of each position of the last forward, `rows × steps`.
    private let inverseDeviation: Tensor

    public init(_ name: String, width: Int, steps: Int, epsilon: Float = 1e-12) {
        precondition(width >= 1 && steps >= 1, "a layer norm needs a width and a step")
        precondition(epsilon >= 0)
        self.width = width
        self.steps = steps
        self.epsilon = epsilon
        weight = Parameter("\(name).weight", rows: 1, columns: width)
        bias = Parameter("\(name).bias", rows: 1, columns: width)
        normalized = Tensor(rows: 0, columns: steps * width)
        inverseDeviation = Tensor(rows: 0, columns: steps)
    }

    public var parameters: [Parameter] { [weight, bias] }

    public func outputColumns(for inputColumns: [Int]) -> Int? {
        isSequence(inputColumns, steps: steps, width: width) ? steps * width : nil
    }

    public func initialize(_ w: inout WeightInitializer) {
        weight.value.data.update(repeating: 1, count: width)
        bias.value.zero()
    }

    public func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass) {
        forward(inputs[0], SequenceBatch(inputs, steps: steps), into: output)
    }

    public func backward(_ inputs: [Tensor], output: Tensor, outputGradient dy: Tensor, inputGradients: [Tensor?], _ pass: Pass) {
        backward(SequenceBatch(inputs, steps: steps), dy, inputGradient: inputGradients[0])
    }

    // MARK: The computation, for this layer and for `TransformerBlock`

    func forward(_ input: Tensor, _ batch: SequenceBatch, into output: Tensor) {
        let d = width, n = Float(width), epsilon = epsilon
        normalized.resize(rows: batch.rows)
        inverseDeviation.resize(rows: batch.rows)
        let x = input.data, y = output.data, xh = normalized.data, rstd = inverseDeviation.data
        let gamma = weight.value.data, beta = bias.value.data
        batch.forEachRow(work: batch.rows * steps * d) { r in
            let len = batch.length(r)
            for t in 0..<len {
                let at = (r * steps + t) * d
                var sum: Float = 0
                for j in 0..<d { sum += x[at + j] }
                let mean = sum / n
                var squares: Float = 0
                for j in 0..<d {
                    let c = x[at + j] - mean
                    squares += c * c
                }
                let s = 1 / (squares / n + epsilon).squareRoot()
                rstd[r * steps + t] = s
                for j in 0..<d {
                    let v = (x[at + j] - mean) * s
                    xh[at + j] = v
                    y[at + j] = gamma[j] * v + beta[j]
                }
            }
            (y + (r * steps + len) * d).update(repeating: 0, count: (steps - len) * d)
        }
    }

    /// Overwrites γ's and β's gradients and, if given, writes dL/dx (0 at padding), from dy
    /// (read at real positions only) and the last forward.
    func backward(_ batch: SequenceBatch, _ dy: Tensor, inputGradient: Tensor?) {
        let d = width, n = Float(width)
        let g = dy.data, xh = normalized.data, rstd = inverseDeviation.data, gamma = weight.value.data
        let dGamma = weight.gradient.data, dBeta = bias.gradient.data
        dGamma.update(repeating: 0, count: d)
        dBeta.update(repeating: 0, count: d)
        // Positions in order: the sums do not depend on threads.
        for r in 0..<batch.rows {
            for t in 0..<batch.length(r) {
                let at = (r * steps + t) * d
                for j in 0..<d {
                    dGamma[j] += g[at + j] * xh[at + j]
                    dBeta[j] += g[at + j]
                }
            }
        }
        guard let dx = inputGradient?.data else { return }
        batch.forEachRow(work: batch.rows * steps * d) { r in
            let len = batch.length(r)
            for t in 0..<len {
                let at = (r * steps + t) * d
                // dx = s · (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂)), ĝ = dy ⊙ γ.
                var sum: Float = 0, dot: Float = 0
                for j in 0..<d {
                    let gh = g[at + j] * gamma[j]
                    sum += gh
                    dot += gh * xh[at + j]
                }
                let mean = sum / n, meanDot = dot / n, s = rstd[r * steps + t]
                for j in 0..<d { dx[at + j] = s * (g[at + j] * gamma[j] - mean - xh[at + j] * meanDot) }
            }
            (dx + (r * steps + len) * d).update(repeating: 0, count: (steps - len) * d)
        }
    }
}
