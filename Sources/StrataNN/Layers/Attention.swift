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
    public var query: (weight: Parameter, bias: Parameter) { (queryMap.weight, queryMap.bias) }
    public var key: (weight: Parameter, bias: Parameter) { (keyMap.weight, keyMap.bias) }
    public var value: (weight: Parameter, bias: Parameter) { (valueMap.weight, valueMap.bias) }
    public var output: (weight: Parameter, bias: Parameter) { (outputMap.weight, outputMap.bias) }
    private let queryMap, keyMap, valueMap, outputMap: Affine
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
        func projection(_ part: String) -> Affine { Affine("\(name).\(part)", inputs: width, outputs: width) }
        (queryMap, keyMap, valueMap, outputMap) = (projection("query"), projection("key"), projection("value"), projection("output"))
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

    /// The probabilities' mask: `rows × heads × steps × steps` values.
    private func mask(_ pass: Pass, rows: Int) -> DropoutMask? {
        pass.training && dropout > 0 ? DropoutMask(rate: dropout, pass: pass, stream: Self.dropoutStream, count: rows * heads * steps * steps) : nil
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
        queryMap.forward(input.data, rows: positions, into: queries.data)
        keyMap.forward(input.data, rows: positions, into: keys.data)
        valueMap.forward(input.data, rows: positions, into: values.data)
        let q = queries.data, k = keys.data, v = values.data, c = context.data, probability = probabilities.data
        let scale = scale, drop = mask(pass, rows: batch.rows), keep = 1 / (1 - dropout)
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
        outputMap.forward(c, rows: positions, into: y.data)
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
        outputMap.parameterGradients(context.data, rows: positions, g)
        outputMap.inputGradient(g, rows: positions, into: contextGradient.data)

        let q = queries.data, k = keys.data, v = values.data, probability = probabilities.data
        let dc = contextGradient.data, dq = queryGradient.data, dk = keyGradient.data, dv = valueGradient.data
        let ds = scoreGradient.data
        let scale = scale, drop = mask(pass, rows: batch.rows), keep = 1 / (1 - dropout)
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
        queryMap.parameterGradients(x, rows: positions, dq)
        keyMap.parameterGradients(x, rows: positions, dk)
        valueMap.parameterGradients(x, rows: positions, dv)
        if let dx = inputGradient {
            queryMap.inputGradient(dq, rows: positions, into: dx.data)
            keyMap.inputGradient(dk, rows: positions, into: dx.data, accumulate: true)
            valueMap.inputGradient(dv, rows: positions, into: dx.data, accumulate: true)
            batch.zeroPadding(dx.data, width: d)
        }
    }
}
