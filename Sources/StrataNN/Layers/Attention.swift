// Multi-head self-attention over padded sequences (`Sequences.swift` has the layout), as
// PyTorch's and RecBole's: SASRec's (causal) and BERT4Rec's (bidirectional).
import CStrataKernels
#if canImport(Glibc)
import Glibc
#endif

/// Multi-head scaled dot-product self-attention. At each position, Q, K, V = x · Wᵀ + b (one
/// projection each, `width × width`); head h (columns [h·w, (h+1)·w), w = width / heads) of a
/// query position i attends to the keys j it may see, softmax_j(Q_i · K_j / √w), those
/// probabilities go through dropout in training, and weight the sum of V_j; the heads side by
/// side go through the output projection. A query may see the real positions of its sequence
/// (padding keys are masked out), and with `causal` only those up to itself (SASRec); every
/// real position sees itself, so no softmax is empty. (RecBole adds −10000 to a masked score
/// instead: its exponential underflows to the same 0.) Output 0 at padding.
///
/// The residual connection and the layer norm after it are not part of this layer (compose
/// `Sum` and `LayerNorm`, or use `TransformerBlock`).
///
/// Inputs: [sequence `rows × steps·width`, lengths `rows × 1`] (or the sequence alone: every
/// position real). Parameters `\(name).query.weight`, `.query.bias`, `.key.weight`,
/// `.key.bias`, `.value.weight`, `.value.bias`, `.output.weight`, `.output.bias` (weights
/// `width × width` stored out × in as in `Linear`, biases `1 × width`); weights initially
/// N(0, 0.02), biases 0 (RecBole's initialization).
///
/// Dropout on the probabilities (`DropoutMask`, stream `dropoutStream`): probability (row r,
/// head h, query i, key j) is value ((r · heads + h) · steps + i) · steps + j of the mask.
public final class SelfAttention: Layer {
    public let width: Int
    public let heads: Int
    public let steps: Int
    public let causal: Bool
    public let dropout: Float
    public let query: (weight: Parameter, bias: Parameter)
    public let key: (weight: Parameter, bias: Parameter)
    public let value: (weight: Parameter, bias: Parameter)
    public let output: (weight: Parameter, bias: Parameter)
    /// The dropout stream of the attention probabilities, apart from every other mask of a step.
    public static let dropoutStream: UInt64 = 0x4154_544E_5052_4F42  // "ATTNPROB"

    private var headWidth: Int { width / heads }
    /// The input with its padding zeroed, and Q, K, V: each (rows·steps) × width.
    private let input, queries, keys, values: Tensor
    /// The heads' weighted sums side by side, (rows·steps) × width, 0 at padding.
    private let context: Tensor
    /// The softmax of each (row, head, query), before dropout: (rows·heads·steps) × steps.
    private let probabilities: Tensor
    /// dy with its padding zeroed, and the gradients of the context, Q, K and V.
    private let outputGradient, contextGradient, queryGradient, keyGradient, valueGradient: Tensor
    /// One score gradient per row, steps wide: rows may run on different threads.
    private let scoreGradient: Tensor

    public init(_ name: String, width: Int, heads: Int, steps: Int, causal: Bool, dropout: Float = 0) {
        precondition(width >= 1 && heads >= 1 && steps >= 1, "attention needs a width, a head and a step")
        precondition(width % heads == 0, "\(heads) heads do not divide the width \(width)")
        precondition(dropout >= 0 && dropout < 1, "dropout is a probability below 1")
        self.width = width
        self.heads = heads
        self.steps = steps
        self.causal = causal
        self.dropout = dropout
        func projection(_ part: String) -> (weight: Parameter, bias: Parameter) {
            (Parameter("\(name).\(part).weight", rows: width, columns: width), Parameter("\(name).\(part).bias", rows: 1, columns: width))
        }
        query = projection("query")
        key = projection("key")
        value = projection("value")
        output = projection("output")
        func matrix() -> Tensor { Tensor(rows: 0, columns: width) }
        (input, queries, keys, values, context) = (matrix(), matrix(), matrix(), matrix(), matrix())
        (outputGradient, contextGradient, queryGradient, keyGradient, valueGradient) = (matrix(), matrix(), matrix(), matrix(), matrix())
        probabilities = Tensor(rows: 0, columns: steps)
        scoreGradient = Tensor(rows: 0, columns: steps)
    }

    public var parameters: [Parameter] {
        [query.weight, query.bias, key.weight, key.bias, value.weight, value.bias, output.weight, output.bias]
    }

    public func outputColumns(for inputColumns: [Int]) -> Int? {
        isSequence(inputColumns, steps: steps, width: width) ? steps * width : nil
    }

    public func initialize(_ w: inout WeightInitializer) {
        for p in [query, key, value, output] {
            w.normal(p.weight, standardDeviation: transformerInitializerRange)
            p.bias.value.zero()
        }
    }

    public func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass) {
        forward(inputs[0], SequenceBatch(inputs, steps: steps), into: output, pass)
    }

    public func backward(_ inputs: [Tensor], output: Tensor, outputGradient dy: Tensor, inputGradients: [Tensor?], _ pass: Pass) {
        backward(SequenceBatch(inputs, steps: steps), dy, inputGradient: inputGradients[0], pass)
    }

    private func mask(_ pass: Pass) -> DropoutMask? {
        pass.training && dropout > 0 ? DropoutMask(rate: dropout, pass: pass, stream: Self.dropoutStream) : nil
    }

    /// 1 / √(head width), the scores' scale.
    private var scale: Float { 1 / Float(headWidth).squareRoot() }

    // MARK: The computation, for this layer and for `TransformerBlock`

    func forward(_ x: Tensor, _ batch: SequenceBatch, into y: Tensor, _ pass: Pass) {
        let positions = batch.rows * steps, d = width, w = headWidth, heads = heads, steps = steps, causal = causal
        input.resize(rows: positions)
        queries.resize(rows: positions)
        keys.resize(rows: positions)
        values.resize(rows: positions)
        context.resize(rows: positions)
        probabilities.resize(rows: batch.rows * heads * steps)
        batch.copyReal(x.data, into: input.data, width: d)
        func project(_ p: (weight: Parameter, bias: Parameter), into out: Tensor) {
            BLAS.gemm(false, true, m: positions, n: d, k: d, input.data, lda: d, p.weight.value.data, ldb: d,
                      out.data, ldc: d, bias: p.bias.value.data)
        }
        project(query, into: queries)
        project(key, into: keys)
        project(value, into: values)
        let q = queries.data, k = keys.data, v = values.data, c = context.data, probability = probabilities.data
        let scale = scale, drop = mask(pass), keep = 1 / (1 - dropout)
        batch.forEachRow(work: positions * steps * d * 2) { r in
            let len = batch.length(r), first = r * steps
            (c + first * d).update(repeating: 0, count: steps * d)
            for h in 0..<heads {
                for i in 0..<len {
                    let p = probability + ((r * heads + h) * steps + i) * steps
                    let seen = causal ? i + 1 : len
                    let qi = q + (first + i) * d + h * w
                    var largest = -Float.infinity
                    for j in 0..<seen {
                        let kj = k + (first + j) * d + h * w
                        var s: Float = 0
                        for e in 0..<w { s += qi[e] * kj[e] }
                        p[j] = s * scale
                        largest = max(largest, p[j])
                    }
                    // Shifted by the largest score: no exponential overflows.
                    var total: Float = 0
                    for j in 0..<seen {
                        p[j] = expf(p[j] - largest)
                        total += p[j]
                    }
                    for j in 0..<seen { p[j] /= total }
                    (p + seen).update(repeating: 0, count: steps - seen)
                    let ci = c + (first + i) * d + h * w
                    let at = ((r * heads + h) * steps + i) * steps
                    for j in 0..<seen {
                        var a = p[j]
                        if let drop { a = drop.kept(at + j) ? a * keep : 0 }
                        let vj = v + (first + j) * d + h * w
                        for e in 0..<w { ci[e] += a * vj[e] }
                    }
                }
            }
        }
        BLAS.gemm(false, true, m: positions, n: d, k: d, c, lda: d, output.weight.value.data, ldb: d,
                  y.data, ldc: d, bias: output.bias.value.data)
        batch.zeroPadding(y.data, width: d)
    }

    /// Overwrites the parameters' gradients and, if given, writes dL/dx (0 at padding), from dy
    /// (its padding ignored) and the last forward.
    func backward(_ batch: SequenceBatch, _ dy: Tensor, inputGradient: Tensor?, _ pass: Pass) {
        let positions = batch.rows * steps, d = width, w = headWidth, heads = heads, steps = steps, causal = causal
        outputGradient.resize(rows: positions)
        contextGradient.resize(rows: positions)
        queryGradient.resize(rows: positions)
        keyGradient.resize(rows: positions)
        valueGradient.resize(rows: positions)
        scoreGradient.resize(rows: batch.rows)
        let g = outputGradient.data
        batch.copyReal(dy.data, into: g, width: d)
        BLAS.gemm(true, false, m: d, n: d, k: positions, g, lda: d, context.data, ldb: d, output.weight.gradient.data, ldc: d)
        strata_column_sums(g, Int32(positions), Int32(d), output.bias.gradient.data)
        BLAS.gemm(false, false, m: positions, n: d, k: d, g, lda: d, output.weight.value.data, ldb: d,
                  contextGradient.data, ldc: d)

        let q = queries.data, k = keys.data, v = values.data, probability = probabilities.data
        let dc = contextGradient.data, dq = queryGradient.data, dk = keyGradient.data, dv = valueGradient.data
        let ds = scoreGradient.data
        let scale = scale, drop = mask(pass), keep = 1 / (1 - dropout)
        batch.forEachRow(work: positions * steps * d * 4) { r in
            let len = batch.length(r), first = r * steps
            (dq + first * d).update(repeating: 0, count: steps * d)
            (dk + first * d).update(repeating: 0, count: steps * d)
            (dv + first * d).update(repeating: 0, count: steps * d)
            let gs = ds + r * steps
            for h in 0..<heads {
                for i in 0..<len {
                    let p = probability + ((r * heads + h) * steps + i) * steps
                    let seen = causal ? i + 1 : len
                    let at = ((r * heads + h) * steps + i) * steps
                    let dci = dc + (first + i) * d + h * w
                    // dL/d(probability j) through dropout, and V's gradient.
                    for j in 0..<seen {
                        let vj = v + (first + j) * d + h * w, dvj = dv + (first + j) * d + h * w
                        var s: Float = 0
                        for e in 0..<w { s += dci[e] * vj[e] }
                        var a = p[j]
                        if let drop {
                            let kept = drop.kept(at + j)
                            a = kept ? a * keep : 0
                            s = kept ? s * keep : 0
                        }
                        gs[j] = s
                        for e in 0..<w { dvj[e] += a * dci[e] }
                    }
                    // Softmax's backward: dL/d(score j) = p_j · (g_j − Σ_l p_l g_l), then the scale.
                    var dot: Float = 0
                    for j in 0..<seen { dot += p[j] * gs[j] }
                    for j in 0..<seen { gs[j] = p[j] * (gs[j] - dot) * scale }
                    let qi = q + (first + i) * d + h * w, dqi = dq + (first + i) * d + h * w
                    for j in 0..<seen {
                        let kj = k + (first + j) * d + h * w, dkj = dk + (first + j) * d + h * w
                        let s = gs[j]
                        for e in 0..<w {
                            dqi[e] += s * kj[e]
                            dkj[e] += s * qi[e]
                        }
                    }
                }
            }
        }
        let x = input.data
        func parameterGradients(_ p: (weight: Parameter, bias: Parameter), from gradient: UnsafeMutablePointer<Float>) {
            BLAS.gemm(true, false, m: d, n: d, k: positions, gradient, lda: d, x, ldb: d, p.weight.gradient.data, ldc: d)
            strata_column_sums(gradient, Int32(positions), Int32(d), p.bias.gradient.data)
        }
        parameterGradients(query, from: dq)
        parameterGradients(key, from: dk)
        parameterGradients(value, from: dv)
        if let dx = inputGradient {
            BLAS.gemm(false, false, m: positions, n: d, k: d, dq, lda: d, query.weight.value.data, ldb: d, beta: 0, dx.data, ldc: d)
            BLAS.gemm(false, false, m: positions, n: d, k: d, dk, lda: d, key.weight.value.data, ldb: d, beta: 1, dx.data, ldc: d)
            BLAS.gemm(false, false, m: positions, n: d, k: d, dv, lda: d, value.weight.value.data, ldb: d, beta: 1, dx.data, ldc: d)
            batch.zeroPadding(dx.data, width: d)
        }
    }
}
