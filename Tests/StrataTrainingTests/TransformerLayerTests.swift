// Gradient checks and contract tests for the transformer layers of SASRec and BERT4Rec:
// LayerNorm, PositionEmbedding, GELU, PositionwiseFeedForward, SelfAttention (causal and
// bidirectional), TransformerBlock and LastPosition, each run standalone through
// `LayerHarness` on batches of padded sequences (`Sequences.swift`: rows × T·d, left-aligned,
// the lengths a second input), with mixed lengths: full, 1, in between and 0.
//
// Method (as in LayerGradientTests.swift). L = Σ output ⊙ R for a fixed random R, accumulated
// in Double, so backward from dy = R gives the analytic gradient, compared coordinate by
// coordinate by |a − n| / max(|a| + |n|, floor) < 1e-3 (GradientCheck), with respect to every
// parameter coordinate and every real input coordinate (padding coordinates are checked apart:
// their gradient must be exactly 0). Every check prints its worst error.
//
// The reference. Each layer is reimplemented in float64 with `Bounded` numbers: a value, and a
// bound on how far float32 arithmetic doing the same operations can be from it (a running
// error analysis: each operation adds the propagated errors of its operands and its own
// rounding, u·|result| with u = 2⁻²⁴; a sum or dot product of n terms, in any order and with
// or without fused multiply-adds, γₙ·Σ|terms| with γₙ = nu/(1 − nu); expf and erff within
// 1 ulp, glibc's documented bound, so 2u·|result|; constants such as √2 and 1/(1 − rate)
// carry their own float32 rounding). Second-order terms are kept, so the bounds hold, not just
// to first order. Inputs here are O(1) and far from the denormal range the product kernel
// flushes. Softmax is analysed with the float64 maximum as its shift: a shift cancels in
// exact arithmetic, so only the rounding of the subtraction matters.
//
// Three comparisons per layer and batch:
// 1. Forward: every float32 output within its bound of the float64 value (the bound is
//    a priori, so an error in the forward shows as a violated bound; the worst fraction of the
//    bound is printed: 0.003 to 0.9 here).
// 2. Float32 central differences of the layer itself. Floor per tensor: the worst
//    coordinate's error of the difference quotient, over the tolerance, and at least 1e-3 of
//    the tensor's largest gradient (and 1e-3). The quotient's error has two parts, each
//    evaluated at the very float32 points x₀ ± h the check sets: rounding, the sum of
//    |R|·bound at both points over the outputs whose bits differ between them (the others
//    cancel exactly), over x₊ − x₋; and truncation, measured rather than bounded: the float64
//    reference's own quotient at those points minus its derivative (below). Rounding falls as
//    1/h and truncation grows as h², so each tensor is checked at the step, of 1e-3, 3e-3,
//    1e-2, 3e-2, 0.1 and 0.3, whose floor is lowest (the floors do not look at the analytic
//    gradient). The bounds are worst cases, 10 to 300 times the errors seen (1), so these
//    floors are loose: up to 1 for the single layers, up to 35 for the whole block.
// 3. The float64 reference's central differences (step 1e-6: truncation ~1e-12, rounding
//    ~1e-10), per coordinate: the tight check. Floored at 1e-3 of the tensor's largest
//    gradient and 1e-4 of the layer's: the attention's key bias has a gradient of exactly 0
//    (it adds q·b to every score of a query, and softmax ignores a shift), so its float32
//    value is rounding alone, the cancellation of terms the size of the layer's gradients; it
//    is also expected below 1e-6 of the layer's largest gradient (seen: ~1e-8).
//
// Dropout (attention probabilities, the feed-forward activations, the block's hidden
// dropouts) is a fixed function of (seed, step, node, stream, index), so with one `Pass` the
// layer is an ordinary function of its inputs and parameters and the checks run with dropout
// on, the reference applying the same `DropoutMask`s.
//
// Besides: padding filled with huge values, infinities or NaN (in the input and in dy) leaves
// every output, parameter gradient and real input gradient bit for bit the same, with exact
// zeros at padding; a causal layer's output at a position does not change when later
// positions do (and a bidirectional one's does); 1 and 2 threads give the same bits; rows are
// independent, so a smaller batch after a larger one gives the same rows; the sequence alone
// is the same as every length T; the block is bit for bit the graph of its parts.
import Testing
import StrataNN
#if canImport(Glibc)
import Glibc
#endif

private typealias GC = GradientCheck

/// float32's unit roundoff, 2⁻²⁴.
private let unit = 0x1p-24

/// γₙ = nu / (1 − nu): the relative bound of a float32 sum of n + 1 terms, or of a dot product
/// of n terms.
private func gamma(_ n: Int) -> Double { Double(n) * unit / (1 - Double(n) * unit) }

// MARK: Float64 with a bound on float32's error

/// A float64 value and a bound on the distance from it of the float32 computation of the same
/// expression (same operations, any summation order).
private struct Bounded {
    var value: Double
    var error: Double

    init(_ value: Double, error: Double = 0) {
        self.value = value
        self.error = error
    }

    /// The operation's own rounding, u·|result| (the result as float32 has it: within the
    /// propagated error of the exact one), added to the propagated error.
    private static func rounded(_ v: Double, _ carried: Double, ulps: Double = 0.5) -> Bounded {
        Bounded(v, error: carried + 2 * ulps * unit * (abs(v) + carried))
    }

    static func + (a: Bounded, b: Bounded) -> Bounded { rounded(a.value + b.value, a.error + b.error) }
    static func - (a: Bounded, b: Bounded) -> Bounded { rounded(a.value - b.value, a.error + b.error) }

    static func * (a: Bounded, b: Bounded) -> Bounded {
        rounded(a.value * b.value, abs(a.value) * b.error + abs(b.value) * a.error + a.error * b.error)
    }

    static func / (a: Bounded, b: Bounded) -> Bounded {
        precondition(b.error < abs(b.value), "a divisor within its error of 0")
        let carried = (a.error * abs(b.value) + abs(a.value) * b.error) / (abs(b.value) * (abs(b.value) - b.error))
        return rounded(a.value / b.value, carried)
    }

    /// |√x′ − √x| = |x′ − x| / (√x′ + √x).
    func squareRoot() -> Bounded {
        let v = value.squareRoot()
        return Self.rounded(v, error / (v + max(value - error, 0).squareRoot()))
    }

    /// expf: |e^x′ − e^x| ≤ e^x·(e^|x′−x| − 1), then 1 ulp.
    static func exponential(_ a: Bounded) -> Bounded {
        let v = exp(a.value)
        return rounded(v, v * expm1(a.error), ulps: 1)
    }

    /// erff: slope ≤ 2/√π, then 1 ulp.
    static func errorFunction(_ a: Bounded) -> Bounded {
        rounded(erf(a.value), 2 / Double.pi.squareRoot() * a.error, ulps: 1)
    }

    /// Σ tᵢ in any order: γ_{n−1}·Σ|tᵢ|.
    static func sum(_ t: [Bounded]) -> Bounded {
        let v = t.reduce(0) { $0 + $1.value }, carried = t.reduce(0) { $0 + $1.error }
        let magnitude = t.reduce(0) { $0 + abs($1.value) + $1.error }
        return Bounded(v, error: carried + gamma(max(t.count - 1, 0)) * magnitude)
    }

    /// Σ aᵢ·bᵢ (+ c) in any order, with or without fused multiply-adds: γₙ·Σ|terms| for n terms.
    static func dot(_ a: [Bounded], _ b: [Bounded], plus c: Bounded? = nil) -> Bounded {
        precondition(a.count == b.count)
        var v = 0.0, carried = 0.0, magnitude = 0.0
        for i in a.indices {
            v += a[i].value * b[i].value
            let e = abs(a[i].value) * b[i].error + abs(b[i].value) * a[i].error + a[i].error * b[i].error
            carried += e
            magnitude += abs(a[i].value * b[i].value) + e
        }
        var n = a.count
        if let c {
            v += c.value
            carried += c.error
            magnitude += abs(c.value) + c.error
            n += 1
        }
        return Bounded(v, error: carried + gamma(n) * magnitude)
    }
}

// MARK: The layers in float64

/// A batch of padded sequences: rows × steps positions of `width` values, and the lengths.
private struct Shape {
    let rows: Int
    let steps: Int
    let width: Int
    let lengths: [Int]

    var count: Int { rows * steps * width }
    func position(_ r: Int, _ t: Int) -> Range<Int> { ((r * steps + t) * width)..<((r * steps + t + 1) * width) }
    /// The flat indices of the real positions' values, and of the padding's.
    var real: [Int] { (0..<rows).flatMap { r in (0..<lengths[r]).flatMap { position(r, $0) } } }
    var padding: [Int] { (0..<rows).flatMap { r in (lengths[r]..<steps).flatMap { position(r, $0) } } }
    var lengthsTensor: Tensor { Tensor(rows: rows, columns: 1, values: lengths.map(Float.init)) }
}

private enum Reference {
    static func exact(_ v: [Double]) -> [Bounded] { v.map { Bounded($0) } }

    /// W·x + b at one position, W `outputs × inputs` (as `Linear` stores it).
    static func affine(_ x: [Bounded], _ w: [Bounded], _ b: [Bounded]) -> [Bounded] {
        let n = x.count
        return b.indices.map { j in Bounded.dot(x, Array(w[(j * n)..<((j + 1) * n)]), plus: b[j]) }
    }

    /// `body(position index r·steps + t, values)` at each real position, zeros (exact) at padding.
    static func positionwise(_ x: [Bounded], _ s: Shape, _ body: (Int, [Bounded]) -> [Bounded]) -> [Bounded] {
        var out = [Bounded](repeating: Bounded(0), count: s.count)
        for r in 0..<s.rows {
            for t in 0..<s.lengths[r] {
                let range = s.position(r, t)
                out.replaceSubrange(range, with: body(r * s.steps + t, Array(x[range])))
            }
        }
        return out
    }

    /// LayerNorm at one position, in the float32 layer's order of operations.
    static func normalize(_ x: [Bounded], _ gamma: [Bounded], _ beta: [Bounded], epsilon: Float) -> [Bounded] {
        let n = Bounded(Double(x.count))
        let mean = Bounded.sum(x) / n
        let centred = x.map { $0 - mean }
        let s = Bounded(1) / (Bounded.dot(centred, centred) / n + Bounded(Double(epsilon))).squareRoot()
        return x.indices.map { Bounded.dot([gamma[$0]], [centred[$0] * s], plus: beta[$0]) }
    }

    static func layerNorm(_ t: [[Bounded]], epsilon: Float, _ s: Shape) -> [Bounded] {
        positionwise(t[0], s) { _, x in normalize(x, t[1], t[2], epsilon: epsilon) }
    }

    static func positionEmbedding(_ t: [[Bounded]], _ s: Shape) -> [Bounded] {
        positionwise(t[0], s) { p, x in
            let at = p % s.steps * s.width
            return x.indices.map { x[$0] + t[1][at + $0] }
        }
    }

    /// Float(2).squareRoot(), correctly rounded.
    static let squareRootOfTwo = Bounded(2.0.squareRoot(), error: unit * 2.0.squareRoot())

    /// x · 0.5 · (1 + erf(x / √2)), in that order.
    static func gelu(_ x: Bounded) -> Bounded { x * Bounded(0.5) * (Bounded(1) + Bounded.errorFunction(x / squareRootOfTwo)) }

    static func geluLayer(_ t: [[Bounded]], _ s: Shape) -> [Bounded] { positionwise(t[0], s) { _, x in x.map(gelu) } }

    /// 1 / (1 − rate) as float32 computes it.
    static func keep(_ rate: Float) -> Bounded { Bounded(1) / (Bounded(1) - Bounded(Double(rate))) }

    /// Value i through `mask` (kept: times 1/(1 − rate); dropped: exactly 0).
    static func drop(_ v: Bounded, _ i: Int, _ mask: DropoutMask?) -> Bounded {
        guard let mask else { return v }
        return mask.kept(i) ? v * keep(mask.rate) : Bounded(0)
    }

    /// `t`: x, then the inner weight and bias, the outer weight and bias.
    static func feedForward(_ t: [[Bounded]], inner: Int, mask: DropoutMask?, _ s: Shape) -> [Bounded] {
        positionwise(t[0], s) { p, x in
            let hidden = affine(x, t[1], t[2]).enumerated().map { j, z in drop(gelu(z), p * inner + j, mask) }
            return affine(hidden, t[3], t[4])
        }
    }

    /// `t`: x, then the query, key, value and output weights and biases.
    static func attention(_ t: [[Bounded]], heads: Int, causal: Bool, mask: DropoutMask?, _ s: Shape) -> [Bounded] {
        let d = s.width, w = d / heads, steps = s.steps
        let scale = Bounded(1) / Bounded(Double(w)).squareRoot()
        var out = [Bounded](repeating: Bounded(0), count: s.count)
        for r in 0..<s.rows {
            let len = s.lengths[r]
            let x = (0..<len).map { Array(t[0][s.position(r, $0)]) }
            let q = x.map { affine($0, t[1], t[2]) }, k = x.map { affine($0, t[3], t[4]) }, v = x.map { affine($0, t[5], t[6]) }
            for i in 0..<len {
                var context = [Bounded](repeating: Bounded(0), count: d)
                let seen = causal ? i + 1 : len
                for h in 0..<heads {
                    let columns = (h * w)..<((h + 1) * w)
                    let scores = (0..<seen).map { j in Bounded.dot(Array(q[i][columns]), Array(k[j][columns])) * scale }
                    // The shift: exact (see the header).
                    let largest = Bounded(scores.map(\.value).max()!)
                    let e = scores.map { Bounded.exponential($0 - largest) }
                    let total = Bounded.sum(e)
                    let p = (0..<seen).map { j in drop(e[j] / total, ((r * heads + h) * steps + i) * steps + j, mask) }
                    for c in columns { context[c] = Bounded.dot(p, (0..<seen).map { v[$0][c] }) }
                }
                out.replaceSubrange(s.position(r, i), with: affine(context, t[7], t[8]))
            }
        }
        return out
    }

    /// The block's masks, as the float32 block draws them.
    struct BlockMasks {
        var attention: DropoutMask?
        var first: DropoutMask?
        var second: DropoutMask?
    }

    /// `t`: x, then the block's 16 parameters in its order.
    static func block(_ t: [[Bounded]], heads: Int, inner: Int, causal: Bool, masks: BlockMasks, epsilon: Float, _ s: Shape) -> [Bounded] {
        let attended = attention(Array(t[0...8]), heads: heads, causal: causal, mask: masks.attention, s)
        let first = positionwise(t[0], s) { p, x in
            x.indices.map { x[$0] + drop(attended[p * s.width + $0], p * s.width + $0, masks.first) }
        }
        let normalized = layerNorm([first, t[9], t[10]], epsilon: epsilon, s)
        let fed = feedForward([normalized] + Array(t[11...14]), inner: inner, mask: nil, s)
        let second = positionwise(normalized, s) { p, x in
            x.indices.map { x[$0] + drop(fed[p * s.width + $0], p * s.width + $0, masks.second) }
        }
        return layerNorm([second, t[15], t[16]], epsilon: epsilon, s)
    }

    /// rows × width: the last real position (zeros for length 0), exact.
    static func lastPosition(_ t: [[Bounded]], _ s: Shape) -> [Bounded] {
        (0..<s.rows).flatMap { r in
            s.lengths[r] == 0 ? [Bounded](repeating: Bounded(0), count: s.width) : Array(t[0][s.position(r, s.lengths[r] - 1)])
        }
    }
}

// MARK: The tests

@Suite struct TransformerLayerTests {
    enum Kind: String, CaseIterable, Sendable {
        case layerNorm, positionEmbedding, gelu, feedForward, causalAttention, bidirectionalAttention
        case causalBlock, bidirectionalBlock, lastPosition

        var hasDropout: Bool { [.feedForward, .causalAttention, .bidirectionalAttention, .causalBlock, .bidirectionalBlock].contains(self) }
        var isCausal: Bool { self == .causalAttention || self == .causalBlock }
    }

    /// A layer with random parameters and its float64 reference (of x and the parameters, for a
    /// pass: the pass names the dropout masks).
    fileprivate struct Subject {
        let layer: any Layer
        let outputColumns: Int
        let reference: ([[Bounded]], Pass) -> [Bounded]
    }

    static let epsilon: Float = 1e-12

    static func mask(_ rate: Float, _ pass: Pass, _ stream: UInt64) -> DropoutMask? {
        // The reference runs whole batches (firstRow 0), where the count does not matter.
        pass.training && rate > 0 ? DropoutMask(rate: rate, pass: pass, stream: stream, count: 0) : nil
    }

    /// `kind` for batches of `s`'s steps and width; parameters uniform in ±0.8 (γ included:
    /// any value is a fair test of the algebra).
    fileprivate static func make(_ kind: Kind, _ s: Shape, heads: Int = 2, inner: Int = 6, dropout: Float = 0,
                                 _ random: inout GC.Random) -> Subject {
        let (d, steps) = (s.width, s.steps)
        let layer: any Layer
        let reference: ([[Bounded]], Pass) -> [Bounded]
        switch kind {
        case .layerNorm:
            layer = LayerNorm("norm", width: d, steps: steps, epsilon: epsilon)
            reference = { t, _ in Reference.layerNorm(t, epsilon: epsilon, s) }
        case .positionEmbedding:
            layer = PositionEmbedding("position", width: d, steps: steps)
            reference = { t, _ in Reference.positionEmbedding(t, s) }
        case .gelu:
            layer = GELU(width: d, steps: steps)
            reference = { t, _ in Reference.geluLayer(t, s) }
        case .feedForward:
            layer = PositionwiseFeedForward("ffn", width: d, inner: inner, steps: steps, dropout: dropout)
            reference = { t, pass in
                Reference.feedForward(t, inner: inner, mask: mask(dropout, pass, PositionwiseFeedForward.dropoutStream), s)
            }
        case .causalAttention, .bidirectionalAttention:
            let causal = kind.isCausal
            layer = SelfAttention("attention", width: d, heads: heads, steps: steps, causal: causal, dropout: dropout)
            reference = { t, pass in
                Reference.attention(t, heads: heads, causal: causal, mask: mask(dropout, pass, SelfAttention.dropoutStream), s)
            }
        case .causalBlock, .bidirectionalBlock:
            let causal = kind.isCausal
            layer = TransformerBlock("block", width: d, heads: heads, inner: inner, steps: steps, causal: causal,
                                     hiddenDropout: dropout, attentionDropout: dropout, epsilon: epsilon)
            reference = { t, pass in
                let masks = Reference.BlockMasks(
                    attention: mask(dropout, pass, SelfAttention.dropoutStream),
                    first: mask(dropout, pass, TransformerBlock.attentionDropoutStream),
                    second: mask(dropout, pass, TransformerBlock.feedForwardDropoutStream))
                return Reference.block(t, heads: heads, inner: inner, causal: causal, masks: masks, epsilon: epsilon, s)
            }
        case .lastPosition:
            layer = LastPosition(width: d, steps: steps)
            reference = { t, _ in Reference.lastPosition(t, s) }
        }
        for p in layer.parameters { random.fill(p.value, -0.8, 0.8) }
        return Subject(layer: layer, outputColumns: layer.outputColumns(for: [steps * d, 1])!, reference: reference)
    }

    /// A batch of `s`: real values uniform in ±1, padding filled by `padding` (index → value).
    fileprivate static func batch(_ s: Shape, _ random: inout GC.Random, padding: (Int) -> Float = { _ in 0 }) -> Tensor {
        let x = random.tensor(s.rows, s.steps * s.width)
        for i in s.padding { x.data[i] = padding(i) }
        return x
    }

    static func bits(_ t: Tensor) -> [UInt32] { t.values.map(\.bitPattern) }

    /// The small batch of the checks: T = 4, d = 4 (2 heads of 2), lengths full, 1, 3, 0 and 2.
    fileprivate static let small = Shape(rows: 5, steps: 4, width: 4, lengths: [4, 1, 3, 0, 2])

    // MARK: The three comparisons

    /// Forward against the reference within its bounds, padding exactly 0 in the output and the
    /// input gradient, and every gradient by float32 and float64 central differences (the
    /// header's 1 to 3).
    fileprivate static func check(_ name: String, _ subject: Subject, _ s: Shape, pass: Pass, _ random: inout GC.Random,
                                  steps: [Float] = [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3]) {
        let layer = subject.layer
        // Finite garbage in the padding: it must not matter while the checks perturb the rest.
        let x = batch(s, &random) { _ in Float(37.5) }
        let lengths = s.lengthsTensor
        let inputs = [x, lengths]
        let weights = random.values(s.rows * subject.outputColumns)
        let h = LayerHarness(layer, inputColumns: [s.steps * s.width, 1])
        h.pass = pass

        // Analytic, with garbage in every gradient first (backward must overwrite, not add).
        for p in layer.parameters { p.gradient.data.update(repeating: 12345, count: p.gradient.count) }
        h.inputGradients[0].resize(rows: s.rows)
        h.inputGradients[0].data.update(repeating: .nan, count: h.inputGradients[0].count)
        // And in the output: forward must write every value, padding included.
        h.output.resize(rows: s.rows)
        h.output.data.update(repeating: .nan, count: h.output.count)
        let y = h.forward(inputs)
        h.backward(Tensor(rows: s.rows, columns: y.columns, values: weights), need: [true, false])
        let inputAnalytic = GC.doubles(h.inputGradients[0])
        let analytic = [inputAnalytic] + layer.parameters.map { GC.doubles($0.gradient) }
        #expect(lengths.values == s.lengths.map(Float.init), "\(name): the lengths are not written")
        if subject.outputColumns == s.steps * s.width {
            #expect(s.padding.allSatisfy { y.data[$0] == 0 }, "\(name): output 0 at padding")
        }
        #expect(s.padding.allSatisfy { inputAnalytic[$0] == 0 }, "\(name): input gradient 0 at padding")

        // 1. Forward within the bounds.
        let values = [GC.doubles(x)] + layer.parameters.map { GC.doubles($0.value) }
        let evaluate = { (v: [[Double]]) in subject.reference(v.map(Reference.exact), pass) }
        let loss64 = { (v: [[Double]]) in zip(evaluate(v), weights).reduce(0.0) { $0 + $1.0.value * Double($1.1) } }
        let base = evaluate(values)
        var worst = 0.0, within = true
        for o in base.indices {
            let e = abs(Double(y.data[o]) - base[o].value)
            if e > base[o].error { within = false }
            if base[o].error > 0 { worst = max(worst, e / base[o].error) }
        }
        print("reference check \(name) forward: worst error \(worst) of its rounding bound")
        #expect(within, "\(name): forward outside its rounding bound (\(worst) of it)")

        // 2 and 3, tensor by tensor: the input's real coordinates, every parameter coordinate.
        let tensors = [x] + layer.parameters.map(\.value)
        let coordinates = tensors.indices.map { $0 == 0 ? s.real : Array(0..<tensors[$0].count) }
        var v = values
        let derivatives = tensors.indices.map { t in
            GC.centralDifferences64(
                count: coordinates[t].count, step: 1e-6, read: { v[t][coordinates[t][$0]] },
                write: { v[t][coordinates[t][$0]] = $1 }, loss: { loss64(v) })
        }
        let layerScale = derivatives.map { GC.scale($0.gradient) }.max()!
        for (t, tensor) in tensors.enumerated() {
            let label = t == 0 ? "input" : layer.parameters[t - 1].name
            let a = coordinates[t].map { analytic[t][$0] }
            // Float32 central differences at each candidate step, and the quotient's error at
            // the points each used: the rounding bounds of the outputs whose bits differ
            // between them, plus the truncation. The step with the lowest floor is checked.
            var best: (floor: Double, step: Float, quotient: [Double], rounding: Double, truncation: Double)?
            for step in steps {
                var floor = 0.0, quotient: [Double] = [], worstRounding = 0.0, worstTruncation = 0.0
                for (n, i) in coordinates[t].enumerated() {
                    let x0 = tensor.data[i], points = [x0 + step, x0 - step]
                    var losses: [Double] = [], losses32: [Double] = [], outputs: [[Bounded]] = [], bits: [[UInt32]] = []
                    for point in points {
                        tensor.data[i] = point
                        let y = h.forward(inputs)
                        bits.append(Self.bits(y))
                        losses32.append(GC.weightedSum(y, weights))
                        v[t][i] = Double(point)
                        outputs.append(evaluate(v))
                        losses.append(zip(outputs.last!, weights).reduce(0.0) { $0 + $1.0.value * Double($1.1) })
                    }
                    tensor.data[i] = x0
                    v[t][i] = Double(x0)
                    var rounding = 0.0
                    for o in weights.indices where bits[0][o] != bits[1][o] {
                        rounding += Double(abs(weights[o])) * (outputs[0][o].error + outputs[1][o].error)
                    }
                    let span = Double(points[0]) - Double(points[1])
                    quotient.append((losses32[0] - losses32[1]) / span)
                    let truncation = abs((losses[0] - losses[1]) / span - derivatives[t].gradient[n])
                    floor = max(floor, (rounding / span + truncation) / GC.tolerance)
                    worstRounding = max(worstRounding, rounding / span)
                    worstTruncation = max(worstTruncation, truncation)
                }
                floor = max(1e-3, 1e-3 * GC.scale(a), floor)
                if best == nil || floor < best!.floor { best = (floor, step, quotient, worstRounding, worstTruncation) }
            }
            let chosen = best!
            print("gradient check \(name) \(label): step \(chosen.step), quotient error ≤ rounding \(chosen.rounding) + truncation \(chosen.truncation)")
            GC.check("\(name) \(label)", analytic: a,
                     numeric: GC.Numeric(gradient: chosen.quotient, skipped: 0, smallestStep: 2 * Double(chosen.step)), floor: chosen.floor)
            GC.check("\(name) \(label) vs float64", analytic: a, numeric: derivatives[t],
                     floor: max(1e-3 * GC.scale(derivatives[t].gradient), 1e-4 * layerScale))
            if label.hasSuffix("attention.key.bias") {
                // Zero in exact arithmetic (it adds q·b to every score of a query; softmax
                // ignores a shift): what is left is rounding.
                let largest = GC.scale(a)
                print("gradient check \(name) \(label): largest |gradient| \(largest), \(largest / layerScale) of the layer's")
                #expect(largest <= 1e-6 * layerScale, "\(name) \(label): \(a)")
            }
        }
    }

    /// How many of the values at `indices` `mask` drops and keeps.
    static func dropped(_ mask: DropoutMask, _ indices: [Int]) -> (dropped: Int, kept: Int) {
        let kept = indices.filter(mask.kept).count
        return (indices.count - kept, kept)
    }

    // MARK: Gradient checks

    /// On the small batch (width 4) and on 3 rows of 2 positions of width 5.
    @Test(arguments: [4, 5])
    func layerNorm(width: Int) {
        var random = GC.Random(seed: 0x1A7E &+ UInt64(width))
        let s = width == 4 ? Self.small : Shape(rows: 3, steps: 2, width: 5, lengths: [2, 1, 2])
        Self.check("layer norm width \(width)", Self.make(.layerNorm, s, &random), s,
                   pass: Pass(training: true, step: 1, seed: 7, node: 3), &random)
    }

    @Test func positionEmbedding() {
        var random = GC.Random(seed: 0x9E)
        Self.check("position embedding", Self.make(.positionEmbedding, Self.small, &random), Self.small,
                   pass: Pass(training: true, step: 1, seed: 7, node: 3), &random)
    }

    @Test func gelu() {
        var random = GC.Random(seed: 0x6E1)
        Self.check("gelu", Self.make(.gelu, Self.small, &random), Self.small, pass: Pass(training: true, step: 1, seed: 7, node: 3), &random)
    }

    @Test func lastPosition() {
        var random = GC.Random(seed: 0x1A57)
        Self.check("last position", Self.make(.lastPosition, Self.small, &random), Self.small,
                   pass: Pass(training: true, step: 1, seed: 7, node: 3), &random)
    }

    /// Without dropout, and with dropout 0.3 on in training (the masks must drop some of the
    /// values the batch uses, and keep some).
    @Test(arguments: [Float(0), 0.3])
    func feedForward(dropout: Float) {
        var random = GC.Random(seed: 0xFF0 &+ UInt64(dropout * 10))
        let s = Self.small, inner = 6
        let pass = Pass(training: true, step: 1, seed: 7, node: 3)
        if let mask = Self.mask(dropout, pass, PositionwiseFeedForward.dropoutStream) {
            let used = s.real.filter { $0 % s.width == 0 }.flatMap { i in (0..<inner).map { i / s.width * inner + $0 } }
            let (dropped, kept) = Self.dropped(mask, used)
            #expect(dropped > 0 && kept > 0, "feed-forward dropout: \(dropped) dropped, \(kept) kept")
        }
        Self.check("feed-forward dropout \(dropout)", Self.make(.feedForward, s, inner: inner, dropout: dropout, &random), s,
                   pass: pass, &random)
    }

    /// Causal (SASRec) and bidirectional (BERT4Rec), dropout off and on (0.3 on the
    /// probabilities, in training).
    @Test(arguments: [Kind.causalAttention, .bidirectionalAttention], [Float(0), 0.3])
    func attention(_ kind: Kind, dropout: Float) {
        var random = GC.Random(seed: (kind.isCausal ? 0xA77 : 0xB1D) &+ UInt64(dropout * 10))
        let s = Self.small, heads = 2
        let pass = Pass(training: true, step: 1, seed: 7, node: 3)
        if let mask = Self.mask(dropout, pass, SelfAttention.dropoutStream) {
            var used: [Int] = []
            for r in 0..<s.rows {
                for h in 0..<heads {
                    for i in 0..<s.lengths[r] {
                        for j in 0..<(kind.isCausal ? i + 1 : s.lengths[r]) { used.append(((r * heads + h) * s.steps + i) * s.steps + j) }
                    }
                }
            }
            let (dropped, kept) = Self.dropped(mask, used)
            #expect(dropped > 0 && kept > 0, "attention dropout: \(dropped) dropped, \(kept) kept")
        }
        Self.check("\(kind) dropout \(dropout)", Self.make(kind, s, heads: heads, dropout: dropout, &random), s, pass: pass, &random)
    }

    /// The whole block, with every dropout at 0.2 in training.
    @Test(arguments: [Kind.causalBlock, .bidirectionalBlock])
    func transformerBlock(_ kind: Kind) {
        var random = GC.Random(seed: kind.isCausal ? 0xB10C : 0xB10D)
        let s = Self.small
        let pass = Pass(training: true, step: 1, seed: 7, node: 3)
        for stream in [TransformerBlock.attentionDropoutStream, TransformerBlock.feedForwardDropoutStream] {
            let (dropped, kept) = Self.dropped(Self.mask(0.2, pass, stream)!, s.real)
            #expect(dropped > 0 && kept > 0, "block dropout: \(dropped) dropped, \(kept) kept")
        }
        Self.check("\(kind) dropout 0.2", Self.make(kind, s, dropout: 0.2, &random), s, pass: pass, &random)
    }

    // MARK: Padding, causality, threads, rows

    /// Forward and backward through a fresh harness, with NaN in the output and every gradient
    /// first (each must be written in full): output, input gradient and parameter gradients,
    /// as bits. `dy` fills the output gradient.
    fileprivate static func run(_ subject: Subject, _ x: Tensor, _ lengths: Tensor, pass: Pass, dy: [Float]) -> [[UInt32]] {
        let layer = subject.layer
        let h = LayerHarness(layer, inputColumns: [x.columns, 1])
        h.pass = pass
        for p in layer.parameters { p.gradient.data.update(repeating: 12345, count: p.gradient.count) }
        h.inputGradients[0].resize(rows: x.rows)
        h.inputGradients[0].data.update(repeating: .nan, count: h.inputGradients[0].count)
        h.output.resize(rows: x.rows)
        h.output.data.update(repeating: .nan, count: h.output.count)
        let y = h.forward([x, lengths])
        h.backward(Tensor(rows: x.rows, columns: y.columns, values: dy), need: [true, false])
        return [bits(y), bits(h.inputGradients[0])] + layer.parameters.map { bits($0.gradient) }
    }

    enum Garbage: String, CaseIterable, Sendable { case zeros, finite, huge, infinite, nan }

    static func garbage(_ g: Garbage, _ i: Int) -> Float {
        switch g {
        case .zeros: 0
        case .finite: Float(i % 7) * 13.25 - 40
        case .huge: i % 2 == 0 ? .greatestFiniteMagnitude : -1e30
        case .infinite: i % 2 == 0 ? .infinity : -.infinity
        case .nan: i % 3 == 0 ? -.nan : .nan
        }
    }

    /// Padding holding anything, in the input and in the output gradient: every output, real
    /// input gradient and parameter gradient the same bits as with zeros there, and exact zeros
    /// at padding in the output and the input gradient (dropout on, in training).
    @Test(arguments: Kind.allCases)
    func paddingIsIgnored(_ kind: Kind) {
        var random = GC.Random(seed: 0x9AD &+ UInt64(Kind.allCases.firstIndex(of: kind)!))
        let s = Self.small
        let subject = Self.make(kind, s, dropout: kind.hasDropout ? 0.3 : 0, &random)
        let pass = Pass(training: true, step: 3, seed: 5, node: 2)
        let clean = Self.batch(s, &random)
        let dyClean = random.values(s.rows * subject.outputColumns)
        let lengths = s.lengthsTensor
        let sequenceOutput = subject.outputColumns == s.steps * s.width
        let baseline = Self.run(subject, clean, lengths, pass: pass, dy: dyClean)
        if sequenceOutput { #expect(s.padding.allSatisfy { baseline[0][$0] == 0 }, "\(kind): output +0 at padding") }
        #expect(s.padding.allSatisfy { baseline[1][$0] == 0 }, "\(kind): input gradient +0 at padding")
        #expect(s.real.contains { baseline[1][$0] != 0 }, "\(kind): some real input gradient is not 0")
        for g in Garbage.allCases {
            let x = Tensor(rows: s.rows, columns: clean.columns, values: clean.values)
            var dy = dyClean
            for i in s.padding {
                x.data[i] = Self.garbage(g, i)
                if sequenceOutput { dy[i] = Self.garbage(g, i &* 3) }
            }
            let result = Self.run(subject, x, lengths, pass: pass, dy: dy)
            #expect(result[0] == baseline[0], "\(kind), \(g) padding: output")
            #expect(result[1] == baseline[1], "\(kind), \(g) padding: input gradient")
            for (p, parameter) in subject.layer.parameters.enumerated() {
                #expect(result[2 + p] == baseline[2 + p], "\(kind), \(g) padding: \(parameter.name) gradient")
            }
            #expect(lengths.values == s.lengths.map(Float.init), "\(kind): the lengths are not written")
        }
    }

    /// A causal layer's output at position t of a row does not change (bits) when any later
    /// position of that row changes, nor does another row's; a bidirectional one's does (the
    /// test can tell). Dropout on, in training.
    @Test(arguments: [Kind.causalAttention, .bidirectionalAttention, .causalBlock, .bidirectionalBlock])
    func causalOutputsIgnoreLaterPositions(_ kind: Kind) {
        var random = GC.Random(seed: 0xCA5 &+ UInt64(Kind.allCases.firstIndex(of: kind)!))
        let s = Shape(rows: 3, steps: 5, width: 4, lengths: [5, 3, 4])
        let subject = Self.make(kind, s, dropout: 0.2, &random)
        let h = LayerHarness(subject.layer, inputColumns: [s.steps * s.width, 1])
        let x = Self.batch(s, &random), lengths = s.lengthsTensor
        let before = Self.bits(h.forward([x, lengths]))
        var earlierChanged = 0
        for r in 0..<s.rows {
            for t in 0..<(s.lengths[r] - 1) {
                let changed = Tensor(rows: s.rows, columns: x.columns, values: x.values)
                for later in (t + 1)..<s.lengths[r] { for i in s.position(r, later) { changed.data[i] += random.awayFromZero(0.1, 1) } }
                let after = Self.bits(h.forward([changed, lengths]))
                let unchanged = (0..<s.rows).flatMap { q in (0..<(q == r ? t + 1 : s.steps)).flatMap { s.position(q, $0) } }
                let same = unchanged.allSatisfy { before[$0] == after[$0] }
                if kind.isCausal {
                    #expect(same, "\(kind): row \(r) positions ≤ \(t) changed with later ones")
                } else if !same {
                    earlierChanged += 1
                }
                let others = (0..<s.rows).filter { $0 != r }.flatMap { q in (0..<s.steps).flatMap { s.position(q, $0) } }
                #expect(others.allSatisfy { before[$0] == after[$0] }, "\(kind): another row changed")
            }
        }
        if !kind.isCausal { #expect(earlierChanged == 9, "\(kind): earlier positions see later ones (\(earlierChanged) of 9)") }
    }

    /// The same bits with 1 and 2 threads, for every kind, on a batch large enough that every
    /// per-row loop and every product is split (rows · T · d ≥ 2¹⁵; products of ≥ 56 rows).
    /// One test for all kinds: `Parallel.threads` is process-wide, so its cases must not run
    /// side by side. Other suites set it to 1 in their setup: a run during which it changed
    /// is run again, so that the two runs did use 1 and 2 threads.
    @Test func threadsDoNotChangeBits() {
        let threads = Parallel.threads
        defer { Parallel.threads = threads }
        for kind in Kind.allCases {
            var random = GC.Random(seed: 0x7E4D &+ UInt64(Kind.allCases.firstIndex(of: kind)!))
            let steps = 16
            // Full, 1, 0 and 2 to 14.
            let lengths: [Int] = (0..<80).map { (r: Int) -> Int in r % 4 == 0 ? steps : r % 4 == 1 ? 1 : r % 4 == 2 ? 0 : 2 + r % 13 }
            let s = Shape(rows: 80, steps: steps, width: 32, lengths: lengths)
            let subject = Self.make(kind, s, heads: 4, inner: 64, dropout: kind.hasDropout ? 0.3 : 0, &random)
            let x = Self.batch(s, &random) { _ in .nan }
            let dy = random.values(s.rows * subject.outputColumns)
            let pass = Pass(training: true, step: 2, seed: 9, node: 1)
            func run(threads n: Int) -> [[UInt32]] {
                for _ in 0..<20 {
                    Parallel.threads = n
                    let result = Self.run(subject, x, s.lengthsTensor, pass: pass, dy: dy)
                    if Parallel.threads == n { return result }
                }
                Issue.record("\(kind): Parallel.threads kept changing under the test")
                return []
            }
            let two = run(threads: 2), one = run(threads: 1)
            #expect(one == two, "\(kind): 1 and 2 threads differ")
            #expect(one.allSatisfy { $0.contains { $0 != 0 } } && one.joined().allSatisfy { !Float(bitPattern: $0).isNaN },
                    "\(kind): a result is all zeros or has NaN")
        }
    }

    /// Rows are independent: the first rows of a batch, run alone after the whole batch, give
    /// the same output and input-gradient bits (each layer's scratch shrinks and grows), and
    /// the whole batch again the same bits as the first time.
    @Test(arguments: Kind.allCases)
    func rowsAreIndependent(_ kind: Kind) {
        var random = GC.Random(seed: 0x2095 &+ UInt64(Kind.allCases.firstIndex(of: kind)!))
        let whole = Shape(rows: 9, steps: 4, width: 4, lengths: [4, 1, 3, 0, 2, 4, 4, 1, 3])
        let part = Shape(rows: 4, steps: 4, width: 4, lengths: Array(whole.lengths.prefix(4)))
        let subject = Self.make(kind, whole, dropout: kind.hasDropout ? 0.3 : 0, &random)
        let x = Self.batch(whole, &random) { _ in .nan }
        let dy = random.values(whole.rows * subject.outputColumns)
        let pass = Pass(training: true, step: 1, seed: 7, node: 3)
        let first = Self.run(subject, x, whole.lengthsTensor, pass: pass, dy: dy)
        let prefix = Tensor(rows: part.rows, columns: x.columns, values: Array(x.values.prefix(part.rows * x.columns)))
        let small = Self.run(subject, prefix, part.lengthsTensor, pass: pass, dy: Array(dy.prefix(part.rows * subject.outputColumns)))
        #expect(small[0] == Array(first[0].prefix(small[0].count)), "\(kind): output of the first rows")
        #expect(small[1] == Array(first[1].prefix(small[1].count)), "\(kind): input gradient of the first rows")
        let again = Self.run(subject, x, whole.lengthsTensor, pass: pass, dy: dy)
        #expect(again == first, "\(kind): the whole batch again")
    }

    /// The sequence alone is the sequence with every length T (LastPosition needs the lengths).
    @Test(arguments: Kind.allCases.filter { $0 != .lastPosition })
    func withoutLengthsEveryPositionIsReal(_ kind: Kind) {
        var random = GC.Random(seed: 0xA11 &+ UInt64(Kind.allCases.firstIndex(of: kind)!))
        let s = Shape(rows: 3, steps: 4, width: 4, lengths: [4, 4, 4])
        let subject = Self.make(kind, s, dropout: kind.hasDropout ? 0.3 : 0, &random)
        let x = random.tensor(s.rows, s.steps * s.width)
        let dy = random.tensor(s.rows, s.steps * s.width)
        let pass = Pass(training: true, step: 1, seed: 7, node: 3)
        let withLengths = Self.run(subject, x, s.lengthsTensor, pass: pass, dy: dy.values)
        let h = LayerHarness(subject.layer, inputColumns: [x.columns])
        h.pass = pass
        let y = Self.bits(h.forward([x]))
        h.backward(dy)
        #expect(y == withLengths[0], "\(kind): output")
        #expect(Self.bits(h.inputGradients[0]) == withLengths[1], "\(kind): input gradient")
        for (p, parameter) in subject.layer.parameters.enumerated() {
            #expect(Self.bits(parameter.gradient) == withLengths[2 + p], "\(kind): \(parameter.name) gradient")
        }
    }

    // MARK: Dropout

    /// With dropout in training the result is a function of the pass: the same pass gives the
    /// same bits (also from a second instance: no hidden state), another step others; in
    /// inference it is the layer without dropout, forward and backward.
    @Test(arguments: Kind.allCases.filter(\.hasDropout))
    func dropoutIsAFunctionOfThePass(_ kind: Kind) {
        var random = GC.Random(seed: 0xD409 &+ UInt64(Kind.allCases.firstIndex(of: kind)!))
        let s = Self.small
        let subject = Self.make(kind, s, dropout: 0.3, &random)
        var other = GC.Random(seed: 1)
        let twin = Self.make(kind, s, dropout: 0.3, &other), plain = Self.make(kind, s, dropout: 0, &other)
        for (p, (q, r)) in zip(subject.layer.parameters, zip(twin.layer.parameters, plain.layer.parameters)) {
            q.value.copy(from: p.value)
            r.value.copy(from: p.value)
        }
        let x = Self.batch(s, &random) { _ in .nan }, lengths = s.lengthsTensor
        let dy = random.values(s.rows * subject.outputColumns)
        let pass = Pass(training: true, step: 4, seed: 7, node: 3)
        let trained = Self.run(subject, x, lengths, pass: pass, dy: dy)
        #expect(Self.run(subject, x, lengths, pass: pass, dy: dy) == trained, "\(kind): the same pass, the same bits")
        #expect(Self.run(twin, x, lengths, pass: pass, dy: dy) == trained, "\(kind): another instance, the same bits")
        var next = pass
        next.step = 5
        #expect(Self.run(subject, x, lengths, pass: next, dy: dy)[0] != trained[0], "\(kind): another step, another mask")
        let inference = Pass(training: false, step: 4, seed: 7, node: 3)
        let inferred = Self.run(subject, x, lengths, pass: inference, dy: dy)
        #expect(inferred[0] != trained[0], "\(kind): dropout changes the training output")
        #expect(inferred == Self.run(plain, x, lengths, pass: pass, dy: dy), "\(kind): inference is the layer without dropout")
    }

    // MARK: Composition

    /// In inference the block is bit for bit the graph of its parts: attention, Sum (the
    /// residual), LayerNorm, feed-forward, Sum, LayerNorm; forward, input and parameter
    /// gradients, with the same parameter names.
    @Test(arguments: [true, false])
    func blockIsTheGraphOfItsParts(causal: Bool) throws {
        var random = GC.Random(seed: causal ? 0xB0 : 0xB1)
        let s = Self.small, (d, steps, heads, inner) = (4, 4, 2, 6), columns = steps * d
        let block = TransformerBlock("block", width: d, heads: heads, inner: inner, steps: steps, causal: causal,
                                     hiddenDropout: 0.5, attentionDropout: 0.5)
        var w = WeightInitializer(seed: 3)
        block.initialize(&w)
        for p in block.parameters { random.fill(p.value, -0.8, 0.8) }
        let x = Self.batch(s, &random) { _ in 37.5 }, lengths = s.lengthsTensor
        let dy = random.tensor(s.rows, columns)

        let graph = Graph()
        let xv = graph.input("x", x, trainable: true), lv = graph.input("lengths", lengths, trainable: false)
        let a = try graph.add("attention", SelfAttention("block.attention", width: d, heads: heads, steps: steps, causal: causal), [xv, lv])
        let s1 = try graph.add("residual 1", Sum("residual1", columns: columns, bias: false), [xv, a])
        let n1 = try graph.add("norm 1", LayerNorm("block.attention.norm", width: d, steps: steps), [s1, lv])
        let f = try graph.add("ffn", PositionwiseFeedForward("block.feedforward", width: d, inner: inner, steps: steps), [n1, lv])
        let s2 = try graph.add("residual 2", Sum("residual2", columns: columns, bias: false), [n1, f])
        let out = try graph.add("norm 2", LayerNorm("block.feedforward.norm", width: d, steps: steps), [s2, lv])
        #expect(graph.parameters.map(\.name) == block.parameters.map(\.name))
        for (p, q) in zip(graph.parameters, block.parameters) { p.value.copy(from: q.value) }
        let pass = Pass(training: false)
        graph.forward(rows: s.rows, pass)
        graph.backward([(out, dy)], pass)

        let h = LayerHarness(block, inputColumns: [columns, 1])
        h.pass = pass
        #expect(Self.bits(h.forward([x, lengths])) == Self.bits(graph.tensor(out)), "forward")
        h.backward(dy, need: [true, false])
        #expect(Self.bits(h.inputGradients[0]) == Self.bits(graph.gradient(of: xv)), "input gradient")
        for (p, q) in zip(graph.parameters, block.parameters) { #expect(Self.bits(p.gradient) == Self.bits(q.gradient), "\(q.name)") }
    }

    /// RecBole's SASRec at its defaults on a small batch: item embeddings + positions →
    /// LayerNorm → dropout → 2 causal blocks (2 heads, hidden 64, inner 256, dropouts 0.5) → the
    /// last position; training forward and backward through a `Graph` give finite values, the
    /// parameters RecBole has, zeros for an empty history, and the item embeddings' padding
    /// gradient exactly 0.
    @Test func sasRecStack() throws {
        var random = GC.Random(seed: 0x5A5)
        let (rows, steps, d) = (12, 50, 64)
        let lengthValues = (0..<rows).map { [50, 1, 0, 17, 33, 2][$0 % 6] }
        let s = Shape(rows: rows, steps: steps, width: d, lengths: lengthValues)
        let items = Self.batch(s, &random), lengths = s.lengthsTensor
        let graph = Graph()
        let xv = graph.input("items", items, trainable: true), lv = graph.input("lengths", lengths, trainable: false)
        var h = try graph.add("position", PositionEmbedding("position", width: d, steps: steps), [xv, lv])
        h = try graph.add("norm", LayerNorm("norm", width: d, steps: steps), [h, lv])
        h = try graph.add("dropout", Dropout(rate: 0.5), [h])
        for b in 0..<2 {
            h = try graph.add("block \(b)", TransformerBlock("block\(b)", width: d, heads: 2, inner: 256, steps: steps, causal: true,
                                                           hiddenDropout: 0.5, attentionDropout: 0.5), [h, lv])
        }
        let out = try graph.add("last", LastPosition(width: d, steps: steps), [h, lv])
        graph.initialize(seed: 1)
        // The positions and a norm, then per block 4 projections, 2 norms and the feed-forward network.
        let perBlock: Int = 4 * (d * d + d) + 2 * 2 * d + (256 * d + 256) + (d * 256 + d)
        let count: Int = graph.parameters.reduce(0) { $0 + $1.value.count }
        #expect(count == steps * d + 2 * d + 2 * perBlock)
        let pass = Pass(training: true, step: 1, seed: 2)
        graph.forward(rows: rows, pass)
        let y = graph.tensor(out)
        let finite = y.values.allSatisfy { $0.isFinite }
        #expect(finite)
        #expect((0..<rows).filter { lengthValues[$0] == 0 }.allSatisfy { r in (0..<d).allSatisfy { y[r, $0] == 0 } }, "an empty history gives zeros")
        graph.backward([(out, random.tensor(rows, d))], pass)
        let finiteGradients = graph.parameters.allSatisfy { $0.gradient.values.allSatisfy { $0.isFinite } }
        #expect(finiteGradients)
        let g = graph.gradient(of: xv)
        #expect(s.padding.allSatisfy { g.data[$0] == 0 } && s.real.contains { g.data[$0] != 0 }, "item gradients: 0 at padding")
    }

    // MARK: Shapes, names, initialization

    @Test func shapesNamesAndInitialization() {
        let (d, steps) = (8, 3), columns = d * steps
        let attention = SelfAttention("a", width: d, heads: 2, steps: steps, causal: true)
        let ffn = PositionwiseFeedForward("f", width: d, inner: 16, steps: steps)
        let norm = LayerNorm("n", width: d, steps: steps)
        let position = PositionEmbedding("p", width: d, steps: steps)
        let block = TransformerBlock("b", width: d, heads: 4, inner: 16, steps: steps, causal: false)
        let layers: [any Layer] = [attention, ffn, norm, position, GELU(width: d, steps: steps), block]
        for layer in layers {
            #expect(layer.outputColumns(for: [columns, 1]) == columns && layer.outputColumns(for: [columns]) == columns)
            #expect(layer.outputColumns(for: [columns + 1, 1]) == nil && layer.outputColumns(for: [columns, 2]) == nil
                    && layer.outputColumns(for: [columns, 1, 1]) == nil && layer.outputColumns(for: []) == nil)
        }
        let last = LastPosition(width: d, steps: steps)
        #expect(last.outputColumns(for: [columns, 1]) == d && last.outputColumns(for: [columns]) == nil)
        #expect(attention.parameters.map(\.name) == ["query", "key", "value", "output"].flatMap { ["a.\($0).weight", "a.\($0).bias"] })
        #expect(ffn.parameters.map(\.name) == ["f.inner.weight", "f.inner.bias", "f.outer.weight", "f.outer.bias"])
        #expect(ffn.parameters.map { [$0.value.rows, $0.value.columns] } == [[16, d], [1, 16], [d, 16], [1, d]])
        #expect(norm.parameters.map(\.name) == ["n.weight", "n.bias"] && norm.epsilon == 1e-12)
        #expect(position.parameters.map { [$0.value.rows, $0.value.columns] } == [[steps, d]])
        #expect(block.parameters.map(\.name) == attention.parameters.map { "b.attention" + $0.name.dropFirst() }
                + ["b.attention.norm.weight", "b.attention.norm.bias"] + ffn.parameters.map { "b.feedforward" + $0.name.dropFirst() }
                + ["b.feedforward.norm.weight", "b.feedforward.norm.bias"])
        // RecBole's initialization: weights N(0, 0.02), biases 0, γ = 1, β = 0.
        var w = WeightInitializer(seed: 5)
        for layer in layers { for p in layer.parameters { p.value.data.update(repeating: 9, count: p.value.count) } }
        for layer in layers { layer.initialize(&w) }
        for p in layers.flatMap(\.parameters) {
            let v = p.value.values
            if p.name.hasSuffix("norm.weight") || p.name == "n.weight" {
                #expect(v.allSatisfy { $0 == 1 }, "\(p.name)")
            } else if p.name.hasSuffix("bias") {
                #expect(v.allSatisfy { $0 == 0 }, "\(p.name)")
            } else {
                let deviation = (v.reduce(0) { $0 + Double($1) * Double($1) } / Double(v.count)).squareRoot()
                #expect(deviation > 0.01 && deviation < 0.03 && v.allSatisfy { abs($0) < 0.2 }, "\(p.name): deviation \(deviation)")
            }
        }
    }
}
