// The recurrent layers (GRU, LSTM) over padded sequences: forwards against a float64
// reimplementation, finite-difference gradient checks, and the sequence contract (padding
// never reaches an output or a gradient and gets exactly 0, a row's bits depend on that row
// alone, the thread count changes no bit), each layer in both output modes.
//
// Method (as in LayerGradientTests). L = Σ output ⊙ R for a fixed random R, accumulated in
// Double, so backward from dy = R is the analytic gradient; it is compared per coordinate, by
// |a − n| / max(|a| + |n|, floor) < 1e-3, with central differences of every parameter
// coordinate and every real input coordinate (padding coordinates hold NaN: their analytic
// gradient must be exactly 0, and they are not differentiated). R is nonzero at the output's
// padding positions too: those outputs are the constant 0, so backward must ignore R there.
//
// Two comparisons per tensor, on batches with lengths 0 and T among others.
//
// 2. (run first) The float64 reimplementation's own central differences (step 1e-6), per
// coordinate, floor 1e-3 of the tensor's largest gradient (the float32 backward is good to
// ~1e-6 of that): the tight check, the float64 function has no visible noise.
//
// 1. The float32 layer's own central differences, at a step of 1e-2, 3e-2 or 1e-1, whichever
// gives the lowest floor; the floor is the difference quotient's own error over the
// tolerance, bounded per coordinate and the worst coordinate's taken. Rounding: L(x±) is off
// by at most Σ |R|·E over the outputs that move (the others are the same bits at x₊ and x₋
// and cancel), E the a-priori bound on an output's float32 rounding from the reference's
// running error analysis (`RecurrentReference`), evaluated at the very float32 values x₀ ± h
// the check sets; both points' over x₊ − x₋. Truncation: measured on the float64 reference,
// its quotient at the same two points minus its derivative (from 2.), plus that derivative's
// own error (rounding: the same analysis at float64's unit, 2⁻²⁹ of E, over 2e-6;
// truncation: (1e-6 / h)² ≤ 1e-8 of the one measured). At least 1e-3 of the tensor's largest
// gradient and 1e-3 (R, inputs and weights are O(1)). The a-priori bound assumes the worst
// sign at every rounding and its growth through the recurrence (the forward checks find at
// most a seventh of it), so the floors come out about 0.1 to 0.7 for the LSTM and 1 to 5 for
// the GRU (whose state passes its error on through (1 − z)·tanh′·r·W_hn with no σ′ ≤ ¼ to
// damp it): below the floor a coordinate must agree to 1e-3 × floor absolutely, which a
// missing term or a wrong sign on the larger gradients would still fail; 2. is the check that
// reaches every coordinate. Where truncation dominates a floor, the worst error comes close
// to the tolerance by construction: the quotient's error is then nearly all truncation, which
// the floor holds to ~1e-9, and the margin left is the rounding bound's excess.
//
// `Parallel.threads = 1` (set back after the one test that changes it): a product sums in one
// fixed order (at any thread count, which that test checks).
import Testing
import StrataNN
#if canImport(Glibc)
import Glibc
#endif

private typealias GC = GradientCheck

/// float32's unit roundoff, 2⁻²⁴.
private let unit = 0x1p-24

enum RecurrentKind: String, CaseIterable, Sendable { case gru, lstm }

/// GRU or LSTM in float64 with the values of a float32 one (`t` = input, weight_ih,
/// weight_hh, bias_ih, bias_hh, as the layer's `parameters`), and per output a first-order
/// bound E on the float32 layer's rounding, a running error analysis of its operations:
///
/// - a product's element, n terms and a bias: (n + 1)·u·(|b| + Σ|w·v|) (BLAS.gemm, any order),
///   plus Σ|w|·E(v) carried in with the state;
/// - a sum or product of two values: the errors carried in, each times the other factor, plus
///   u·|result|;
/// - the logistic (`logistic`, expf within 1 ulp = 2u relative, then an addition and a
///   division): σ′·E(a) + 5u·σ; tanhf (within 2 ulp): tanh′·E(a) + 4u·|tanh|.
///
/// Second-order terms (E² ≈ 1e-12) are dropped. Padding outputs are exactly 0 (E = 0).
struct RecurrentReference {
    let kind: RecurrentKind
    let d: Int, H: Int, T: Int
    let mode: RecurrentOutput

    var gates: Int { kind == .gru ? 3 : 4 }
    var width: Int { mode == .last ? H : T * H }

    /// σ(a) and its error, from a and its error.
    static func sigmoid(_ v: (a: Double, e: Double)) -> (Double, Double) {
        let (a, e) = v
        let s = a >= 0 ? 1 / (1 + exp(-a)) : exp(a) / (1 + exp(a))
        return (s, s * (1 - s) * e + 5 * unit * s)
    }

    /// tanh(a) and its error, from a and its error.
    static func tanh(_ v: (a: Double, e: Double)) -> (Double, Double) {
        let (a, e) = v
        let y = Glibc.tanh(a)
        return (y, (1 - y * y) * e + 4 * unit * abs(y))
    }

    func forward(_ t: [[Double]], lengths: [Int]) -> (output: [Double], bound: [Double]) {
        let g = gates * H
        let (wih, whh, bih, bhh) = (t[1], t[2], t[3], t[4])
        var output = [Double](repeating: 0, count: lengths.count * width), bound = output
        for (row, length) in lengths.enumerated() {
            var h = [Double](repeating: 0, count: H), c = h, eh = h, ec = h
            for step in 0..<length {
                let x = (0..<d).map { t[0][(row * T + step) * d + $0] }
                var ih = [Double](repeating: 0, count: g), hh = ih, eih = ih, ehh = ih
                for q in 0..<g {
                    var s = bih[q], m = abs(bih[q])
                    for k in 0..<d {
                        s += wih[q * d + k] * x[k]
                        m += abs(wih[q * d + k] * x[k])
                    }
                    (ih[q], eih[q]) = (s, Double(d + 1) * unit * m)
                    var s2 = bhh[q], m2 = abs(bhh[q]), carried = 0.0
                    for k in 0..<H {
                        s2 += whh[q * H + k] * h[k]
                        m2 += abs(whh[q * H + k] * h[k])
                        carried += abs(whh[q * H + k]) * eh[k]
                    }
                    (hh[q], ehh[q]) = (s2, Double(H + 1) * unit * m2 + carried)
                }
                // The gate pre-activation ih + hh of row q and its error.
                func sum(_ q: Int) -> (a: Double, e: Double) {
                    let a = ih[q] + hh[q]
                    return (a, eih[q] + ehh[q] + unit * abs(a))
                }
                var nh = h, nc = c, neh = eh, nec = ec
                for j in 0..<H {
                    switch kind {
                    case .gru:
                        let (r, er) = Self.sigmoid(sum(j))
                        let (z, ez) = Self.sigmoid(sum(H + j))
                        let hn = hh[2 * H + j], ehn = ehh[2 * H + j]
                        let p = ih[2 * H + j] + r * hn
                        let ep = eih[2 * H + j] + abs(hn) * er + r * ehn + unit * abs(r * hn) + unit * abs(p)
                        let (n, en) = Self.tanh((p, ep))
                        // (h − n)·z + n, as the layer computes h′.
                        let diff = h[j] - n, ediff = eh[j] + en + unit * abs(diff)
                        let product = diff * z, eproduct = z * ediff + abs(diff) * ez + unit * abs(product)
                        nh[j] = product + n
                        neh[j] = eproduct + en + unit * abs(nh[j])
                    case .lstm:
                        let (i, ei) = Self.sigmoid(sum(j))
                        let (f, ef) = Self.sigmoid(sum(H + j))
                        let (gg, eg) = Self.tanh(sum(2 * H + j))
                        let (o, eo) = Self.sigmoid(sum(3 * H + j))
                        let fc = f * c[j], efc = abs(c[j]) * ef + f * ec[j] + unit * abs(fc)
                        let ig = i * gg, eig = abs(gg) * ei + i * eg + unit * abs(ig)
                        nc[j] = fc + ig
                        nec[j] = efc + eig + unit * abs(nc[j])
                        let (tc, etc) = Self.tanh((nc[j], nec[j]))
                        nh[j] = o * tc
                        neh[j] = abs(tc) * eo + o * etc + unit * abs(nh[j])
                    }
                }
                (h, c, eh, ec) = (nh, nc, neh, nec)
                if mode == .sequence {
                    for j in 0..<H {
                        output[row * width + step * H + j] = h[j]
                        bound[row * width + step * H + j] = eh[j]
                    }
                }
            }
            if mode == .last {
                for j in 0..<H {
                    output[row * width + j] = h[j]
                    bound[row * width + j] = eh[j]
                }
            }
        }
        return (output, bound)
    }
}

@Suite struct RecurrentLayerTests {
    init() { Parallel.threads = 1 }

    static let modes: [RecurrentOutput] = [.last, .sequence]

    static func layer(_ kind: RecurrentKind, d: Int, H: Int, T: Int, _ mode: RecurrentOutput) -> any Layer {
        switch kind {
        case .gru: GRU("rnn", inputs: d, hidden: H, steps: T, output: mode)
        case .lstm: LSTM("rnn", inputs: d, hidden: H, steps: T, output: mode)
        }
    }

    /// A batch of sequences: real positions U(−1, 1), padding positions NaN; and the lengths.
    static func batch(_ r: inout GradientCheck.Random, lengths: [Int], T: Int, d: Int) -> (x: Tensor, lengths: Tensor) {
        let x = r.tensor(lengths.count, T * d)
        fillPadding(x, lengths: lengths, T: T, d: d) { _ in .nan }
        return (x, Tensor(rows: lengths.count, columns: 1, values: lengths.map(Float.init)))
    }

    /// Sets every padding value of `x` (rows × T·width, time step t in [t·width, (t+1)·width))
    /// to `value(k)`, k counting the padding values.
    static func fillPadding(_ x: Tensor, lengths: [Int], T: Int, d width: Int, _ value: (Int) -> Float) {
        var k = 0
        for (r, length) in lengths.enumerated() {
            for i in (length * width)..<(T * width) {
                x[r, i] = value(k)
                k += 1
            }
        }
    }

    /// The flat indices of the real (or the padding) positions' values of a rows × T·width tensor.
    static func coordinates(lengths: [Int], T: Int, width: Int, real: Bool = true) -> [Int] {
        lengths.enumerated().flatMap { r, length in
            (real ? 0..<(length * width) : (length * width)..<(T * width)).map { r * T * width + $0 }
        }
    }

    static func randomLengths(_ r: inout GradientCheck.Random, rows: Int, T: Int) -> [Int] {
        // A sequence of length 0 and one of length T in every batch, the rest at random.
        [0, T] + (2..<rows).map { _ in Int(r.next() % UInt64(T + 1)) }
    }

    static func bits(_ t: Tensor) -> [UInt32] { t.values.map(\.bitPattern) }

    // MARK: Gradients

    /// Central differences at x₀ ± `step` of coordinates `indices` of `values[t]` divided by
    /// x₊ − x₋: the worst error the quotient itself can have (rounding and truncation, see the
    /// header), over the tolerance. `derivative` is the float64 reference's, per coordinate.
    static func quotientFloor(
        _ values: [[Double]], _ t: Int, _ indices: [Int], step: Float, derivative: [Double], weights: [Float],
        reference: ([[Double]]) -> (output: [Double], bound: [Double])
    ) -> Double {
        let base = reference(values).output
        var v = values, worst = 0.0
        for (c, i) in indices.enumerated() {
            let x0 = Float(v[t][i]), xp = x0 + step, xm = x0 - step
            var rounding = 0.0, magnitude = 0.0, losses = [0.0, 0.0]
            for (s, point) in [xp, xm].enumerated() {
                v[t][i] = Double(point)
                let (output, bound) = reference(v)
                for o in output.indices where output[o] != base[o] { rounding += Double(abs(weights[o])) * bound[o] }
                losses[s] = zip(output, weights).reduce(0.0) { $0 + $1.0 * Double($1.1) }
                magnitude += zip(bound, weights).reduce(0.0) { $0 + $1.0 * Double(abs($1.1)) }
            }
            v[t][i] = Double(x0)
            let spread = Double(xp - xm)
            let truncation = abs((losses[0] - losses[1]) / spread - derivative[c])
            let derivativeError = magnitude * 0x1p-29 / 2e-6 + 1e-8 * truncation
            worst = max(worst, rounding / spread + truncation + derivativeError)
        }
        return worst / GC.tolerance
    }

    /// Every parameter coordinate and every real input coordinate of GRU and LSTM, both
    /// outputs, on batches of mixed lengths (0 and T among them) whose padding holds NaN;
    /// random weights U(−1, 1) and biases U(−0.5, 0.5), so that every gate is nonlinear at work.
    @Test(arguments: RecurrentKind.allCases, modes)
    func gradients(_ kind: RecurrentKind, _ mode: RecurrentOutput) {
        let d = 3, H = 4, T = 5
        var r = GC.Random(seed: 0x6C0 &+ UInt64(kind == .gru ? 0 : 2) &+ UInt64(mode == .last ? 0 : 1))
        let layer = Self.layer(kind, d: d, H: H, T: T, mode)
        for p in layer.parameters {
            let bound = p.name.hasSuffix("bias_ih") || p.name.hasSuffix("bias_hh") ? 0.5 : 1
            r.fill(p.value, -bound, bound)
        }
        let h = LayerHarness(layer, inputColumns: [T * d, 1])
        let reference = RecurrentReference(kind: kind, d: d, H: H, T: T, mode: mode)

        for lengths in [[3, 0, 5, 1, 4], [2, 5, 0]] {
            let (x, lengthInput) = Self.batch(&r, lengths: lengths, T: T, d: d)
            let rows = lengths.count, width = reference.width
            let weights = r.values(rows * width)
            let name = "\(kind) \(mode) lengths \(lengths)"
            let real = Self.coordinates(lengths: lengths, T: T, width: d)
            let padding = Self.coordinates(lengths: lengths, T: T, width: d, real: false)
            let values = [GC.doubles(x)] + layer.parameters.map { GC.doubles($0.value) }
            let names = ["input"] + layer.parameters.map(\.name)
            let indices = [real] + layer.parameters.map { Array(0..<$0.value.count) }
            let run = { (t: [[Double]]) in reference.forward(t, lengths: lengths) }
            let loss64 = { (t: [[Double]]) in zip(run(t).output, weights).reduce(0.0) { $0 + $1.0 * Double($1.1) } }

            // The forward against float64, within the a-priori rounding bound.
            let y = h.forward([x, lengthInput]).values
            let (exact, bound) = run(values)
            var worst = 0.0
            for i in 0..<y.count {
                let e = abs(Double(y[i]) - exact[i])
                worst = max(worst, bound[i] > 0 ? e / bound[i] : e == 0 ? 0 : .infinity)
                #expect(e <= bound[i], "\(name) forward [\(i)]: \(y[i]) vs float64 \(exact[i]), bound \(bound[i])")
            }
            print("reference check \(name) forward: worst error \(worst) of its rounding bound")

            // The analytic gradients, from garbage in every gradient (backward overwrites), the
            // lengths' gradient not asked for (nil, as the graph passes it).
            for p in layer.parameters { p.gradient.data.update(repeating: 12345, count: p.gradient.count) }
            h.inputGradients[0].resize(rows: rows)
            h.inputGradients[0].data.update(repeating: .nan, count: h.inputGradients[0].count)
            h.backward(Tensor(rows: rows, columns: width, values: weights), need: [true, false])
            let inputGradient = GC.doubles(h.inputGradients[0])
            #expect(padding.allSatisfy { inputGradient[$0] == 0 }, "\(name): the padding positions' gradient is 0")
            let analytic = [real.map { inputGradient[$0] }] + layer.parameters.map { GC.doubles($0.gradient) }

            // 2. The float64 reference's central differences, per coordinate.
            var shifted = values
            var derivatives: [[Double]] = []
            for t in values.indices {
                let numeric = GC.centralDifferences64(
                    count: indices[t].count, step: 1e-6, read: { shifted[t][indices[t][$0]] },
                    write: { shifted[t][indices[t][$0]] = $1 }, loss: { loss64(shifted) })
                GC.check("\(name) \(names[t]) vs float64", analytic: analytic[t], numeric: numeric,
                         floor: 1e-3 * GC.scale(numeric.gradient))
                derivatives.append(numeric.gradient)
            }

            // 1. The float32 layer's central differences, at the step of 1e-2, 3e-2 or 1e-1
            // whose floor (the quotient's own error, header) is lowest: rounding shrinks with the
            // step, truncation grows with its square.
            let loss = { GC.weightedSum(h.forward([x, lengthInput]), weights) }
            let tensors = [x] + layer.parameters.map(\.value)
            for t in values.indices {
                let (step, quotient) = [Float(1e-2), 3e-2, 1e-1].map { step in
                    (step, Self.quotientFloor(values, t, indices[t], step: step, derivative: derivatives[t], weights: weights,
                                              reference: run))
                }.min { $0.1 < $1.1 }!
                let floor = max(1e-3, 1e-3 * GC.scale(analytic[t]), quotient)
                print("gradient check \(name) \(names[t]): step \(step)")
                let numeric = GC.centralDifferences(
                    count: indices[t].count, step: step, read: { tensors[t].data[indices[t][$0]] },
                    write: { tensors[t].data[indices[t][$0]] = $1; return $1 }, loss: loss)
                GC.check("\(name) \(names[t])", analytic: analytic[t], numeric: numeric, floor: floor)
            }
        }
    }

    /// The forward against float64 on a larger batch (products of several 14-row panels, a
    /// hidden width past one 16-float vector), within the a-priori bound of every output.
    @Test(arguments: RecurrentKind.allCases, modes)
    func forwardAgainstFloat64(_ kind: RecurrentKind, _ mode: RecurrentOutput) {
        let d = 6, H = 24, T = 7, rows = 40
        var r = GC.Random(seed: 0xF0A &+ UInt64(kind == .gru ? 0 : 2) &+ UInt64(mode == .last ? 0 : 1))
        let layer = Self.layer(kind, d: d, H: H, T: T, mode)
        var w = WeightInitializer(seed: 5)
        layer.initialize(&w)
        for p in layer.parameters where p.name.contains("bias") { r.fill(p.value, -0.5, 0.5) }
        let lengths = Self.randomLengths(&r, rows: rows, T: T)
        let (x, lengthInput) = Self.batch(&r, lengths: lengths, T: T, d: d)
        let h = LayerHarness(layer, inputColumns: [T * d, 1])
        let y = h.forward([x, lengthInput]).values
        let reference = RecurrentReference(kind: kind, d: d, H: H, T: T, mode: mode)
        let (exact, bound) = reference.forward([GC.doubles(x)] + layer.parameters.map { GC.doubles($0.value) }, lengths: lengths)
        var worst = 0.0, failures = 0
        for i in 0..<y.count {
            let e = abs(Double(y[i]) - exact[i])
            worst = max(worst, bound[i] > 0 ? e / bound[i] : e == 0 ? 0 : .infinity)
            if !(e <= bound[i]) { failures += 1 }  // NaN fails too
        }
        print("reference check \(kind) \(mode) \(rows)×\(T)×\(d)→\(H) forward: worst error \(worst) of its rounding bound")
        #expect(failures == 0, "\(failures) outputs off float64 by more than their bound (worst \(worst) of it)")
        // The padding outputs are exactly +0 (bound 0), and some real ones are not 0.
        #expect(y.contains { $0 != 0 })
    }

    // MARK: The sequence contract

    /// Padding holding zeros, large values, ±∞ and ±greatest finite, NaN (quiet and signalling):
    /// the output, every parameter gradient and the real positions' input gradients are the same
    /// bits, the padding positions' input gradients are +0, the padding outputs +0. The output
    /// gradient at padding outputs (constants) carries the same garbage, and is ignored too. The
    /// lengths' gradient tensor, when one is passed, is left alone. Fails if a padding value
    /// reaches any step (as it would without the lengths).
    @Test(arguments: RecurrentKind.allCases, modes)
    func paddingIsIgnored(_ kind: RecurrentKind, _ mode: RecurrentOutput) {
        let d = 3, H = 8, T = 6, rows = 20
        var r = GC.Random(seed: 0x9AD &+ UInt64(kind == .gru ? 0 : 2) &+ UInt64(mode == .last ? 0 : 1))
        let layer = Self.layer(kind, d: d, H: H, T: T, mode)
        var w = WeightInitializer(seed: 9)
        layer.initialize(&w)
        for p in layer.parameters where p.name.contains("bias") { r.fill(p.value, -0.5, 0.5) }
        let lengths = Self.randomLengths(&r, rows: rows, T: T)
        let (x, lengthInput) = Self.batch(&r, lengths: lengths, T: T, d: d)
        let width = mode == .last ? H : T * H
        let dy = r.tensor(rows, width)
        let outputPadding = mode == .last
            ? lengths.enumerated().flatMap { i, length in length == 0 ? Array((i * H)..<((i + 1) * H)) : [] }
            : Self.coordinates(lengths: lengths, T: T, width: H, real: false)
        let inputPadding = Self.coordinates(lengths: lengths, T: T, width: d, real: false)
        let real = Self.coordinates(lengths: lengths, T: T, width: d)
        let h = LayerHarness(layer, inputColumns: [T * d, 1])

        let huge: [Float] = [.greatestFiniteMagnitude, -.greatestFiniteMagnitude, .infinity, -.infinity, 1e30, -3e28]
        let nans: [Float] = [.nan, -.nan, Float(bitPattern: 0x7FA0_0001), Float(bitPattern: 0xFFC0_1234)]
        var noise = GC.Random(seed: 0xBAD)
        let garbage: [(String, (Int) -> Float)] = [
            ("zeros", { _ in 0 }),
            ("random", { _ in noise.uniform(-1e3, 1e3) }),
            ("huge", { huge[$0 % huge.count] }),
            ("nan", { nans[$0 % nans.count] }),
        ]
        var first: (output: [UInt32], parameters: [[UInt32]], input: [UInt32])?
        for (label, value) in garbage {
            Self.fillPadding(x, lengths: lengths, T: T, d: d, value)
            for i in outputPadding { dy.data[i] = value(i) }
            let y = Self.bits(h.forward([x, lengthInput]))
            #expect(outputPadding.allSatisfy { y[$0] == 0 }, "\(kind) \(mode) \(label): padding outputs are +0")
            for p in layer.parameters { p.gradient.data.update(repeating: .nan, count: p.gradient.count) }
            for g in h.inputGradients {
                g.resize(rows: rows)
                g.data.update(repeating: 42, count: g.count)
            }
            h.backward(dy)
            #expect(h.inputGradients[1].values.allSatisfy { $0 == 42 }, "\(kind) \(mode): the lengths' gradient is not written")
            let dx = Self.bits(h.inputGradients[0])
            #expect(inputPadding.allSatisfy { dx[$0] == 0 }, "\(kind) \(mode) \(label): padding gradients are +0")
            let run = (y, layer.parameters.map { Self.bits($0.gradient) }, real.map { dx[$0] })
            #expect(run.1.allSatisfy { $0.allSatisfy { !Float(bitPattern: $0).isNaN } }, "\(kind) \(mode) \(label): gradients written")
            guard let first else {
                first = run
                continue
            }
            #expect(run.0 == first.output, "\(kind) \(mode) \(label): output")
            for (p, (a, b)) in zip(layer.parameters, zip(run.1, first.parameters)) {
                #expect(a == b, "\(kind) \(mode) \(label): \(p.name) gradient")
            }
            #expect(run.2 == first.input, "\(kind) \(mode) \(label): real positions' input gradient")
        }
    }

    /// A sample's output row and input-gradient row (for the same output-gradient row) are the
    /// same bits whatever batch it is in: alone, or among other rows of other values and
    /// lengths, at other indices (other 14-row panels of the products), in batches of other
    /// longest lengths. Fails if a row's steps depended on the batch's lengths (a row run, or
    /// its state kept, past its own end) or on other rows.
    @Test(arguments: RecurrentKind.allCases, modes)
    func rowsAreIndependent(_ kind: RecurrentKind, _ mode: RecurrentOutput) {
        let d = 4, H = 16, T = 7
        var r = GC.Random(seed: 0x1D3 &+ UInt64(kind == .gru ? 0 : 2) &+ UInt64(mode == .last ? 0 : 1))
        let layer = Self.layer(kind, d: d, H: H, T: T, mode)
        var w = WeightInitializer(seed: 13)
        layer.initialize(&w)
        for p in layer.parameters where p.name.contains("bias") { r.fill(p.value, -0.5, 0.5) }
        let h = LayerHarness(layer, inputColumns: [T * d, 1])
        let width = mode == .last ? H : T * H
        // The samples followed: their lengths, values and output gradients.
        let sampleLengths = [0, 1, 3, 7, 7, 5]
        let samples = sampleLengths.map { _ in r.values(T * d) }
        let sampleGradients = sampleLengths.map { _ in r.values(width) }

        var seen: [[(output: [UInt32], input: [UInt32])]] = Array(repeating: [], count: samples.count)
        // Batch sizes 1 (each sample alone), 9 (shorter others: longest 3), 30 and 70.
        for (rows, longestOther) in [(1, 0), (9, 3), (30, T), (70, T)] {
            let rounds = rows == 1 ? samples.count : 1
            for round in 0..<rounds {
                var lengths = (0..<rows).map { _ in Int(r.next() % UInt64(longestOther + 1)) }
                let x = r.tensor(rows, T * d)
                let dy = r.tensor(rows, width)
                // Where each sample goes: distinct random rows (the one row when alone).
                var places: [Int: Int] = [:]
                for s in (rows == 1 ? [round] : Array(samples.indices)) {
                    var place = Int(r.next() % UInt64(rows))
                    while places.values.contains(place) { place = Int(r.next() % UInt64(rows)) }
                    places[s] = place
                    lengths[place] = sampleLengths[s]
                    for i in 0..<(T * d) { x[place, i] = samples[s][i] }
                    for i in 0..<width { dy[place, i] = sampleGradients[s][i] }
                }
                Self.fillPadding(x, lengths: lengths, T: T, d: d) { _ in .nan }
                let y = h.forward([x, Tensor(rows: rows, columns: 1, values: lengths.map(Float.init))])
                h.backward(dy, need: [true, false])
                for (s, place) in places {
                    seen[s].append(((0..<width).map { y[place, $0].bitPattern },
                                    (0..<(T * d)).map { h.inputGradients[0][place, $0].bitPattern }))
                }
            }
        }
        for (s, runs) in seen.enumerated() {
            #expect(runs.count == 4)
            for run in runs.dropFirst() {
                #expect(run.output == runs[0].output, "\(kind) \(mode) sample \(s) (length \(sampleLengths[s])): output row")
                #expect(run.input == runs[0].input, "\(kind) \(mode) sample \(s) (length \(sampleLengths[s])): input gradient row")
            }
        }
    }

    /// One and two threads give the same bits: output, every parameter gradient, the input
    /// gradient. The batch is large enough that both split: products of more than 56 rows
    /// (BLAS.gemm's threaded kernel), steps of at least 4096 state values (the cells).
    @Test(arguments: RecurrentKind.allCases, modes)
    func threadCountChangesNoBit(_ kind: RecurrentKind, _ mode: RecurrentOutput) {
        defer { Parallel.threads = 1 }
        let d = 5, H = 40, T = 6, rows = 150
        var r = GC.Random(seed: 0x7A2 &+ UInt64(kind == .gru ? 0 : 2) &+ UInt64(mode == .last ? 0 : 1))
        let layer = Self.layer(kind, d: d, H: H, T: T, mode)
        var w = WeightInitializer(seed: 21)
        layer.initialize(&w)
        for p in layer.parameters where p.name.contains("bias") { r.fill(p.value, -0.5, 0.5) }
        let lengths = Self.randomLengths(&r, rows: rows, T: T)
        #expect(lengths.filter { $0 > 0 }.count >= 56)
        let (x, lengthInput) = Self.batch(&r, lengths: lengths, T: T, d: d)
        let dy = r.tensor(rows, mode == .last ? H : T * H)
        let h = LayerHarness(layer, inputColumns: [T * d, 1])
        var runs: [[[UInt32]]] = []
        for threads in [1, 2, 1, 2] {
            Parallel.threads = threads
            let y = Self.bits(h.forward([x, lengthInput]))
            h.backward(dy, need: [true, false])
            runs.append([y, Self.bits(h.inputGradients[0])] + layer.parameters.map { Self.bits($0.gradient) })
        }
        let names = ["output", "input gradient"] + layer.parameters.map { "\($0.name) gradient" }
        for run in runs.dropFirst() {
            for (name, (a, b)) in zip(names, zip(run, runs[0])) { #expect(a == b, "\(kind) \(mode): \(name)") }
        }
    }

    // MARK: Shapes, initialization, lengths

    @Test(arguments: RecurrentKind.allCases)
    func shapesAndInitialization(_ kind: RecurrentKind) {
        let d = 5, H = 6, T = 4, gates = kind == .gru ? 3 : 4
        for mode in Self.modes {
            let layer = Self.layer(kind, d: d, H: H, T: T, mode)
            #expect(layer.outputColumns(for: [T * d, 1]) == (mode == .last ? H : T * H))
            for misfit in [[T * d], [T * d, 1, 1], [T * d + 1, 1], [T * d, 2], [1, T * d], [T * H, 1]] {
                #expect(layer.outputColumns(for: misfit) == nil, "\(kind) \(mode) takes no \(misfit)")
            }
            #expect(layer.parameters.map(\.name) == ["rnn.weight_ih", "rnn.weight_hh", "rnn.bias_ih", "rnn.bias_hh"])
            #expect(layer.parameters.map { [$0.value.rows, $0.value.columns] } == [[gates * H, d], [gates * H, H], [1, gates * H], [1, gates * H]])

            // Xavier-uniform weights over each whole matrix, zero biases; the seed names them.
            for p in layer.parameters { p.value.data.update(repeating: 3, count: p.value.count) }
            var w = WeightInitializer(seed: 4)
            layer.initialize(&w)
            let values = layer.parameters.map(\.value.values)
            for (p, fanIn) in zip(layer.parameters.prefix(2), [d, H]) {
                let bound = Float((6 / Double(fanIn + gates * H)).squareRoot())
                let v = p.value.values
                #expect(v.allSatisfy { abs($0) <= bound }, "\(p.name) within ±\(bound)")
                #expect(v.map(abs).max()! > 0.8 * bound && Set(v).count == v.count, "\(p.name) spread over ±\(bound)")
            }
            #expect(values[2].allSatisfy { $0 == 0 } && values[3].allSatisfy { $0 == 0 }, "biases start at 0")
            var again = WeightInitializer(seed: 4)
            layer.initialize(&again)
            #expect(layer.parameters.map(\.value.values) == values, "the same seed, the same weights")
            var other = WeightInitializer(seed: 5)
            layer.initialize(&other)
            #expect(layer.parameters[0].value.values != values[0], "another seed, other weights")
        }
    }

    /// A length that is not an integer in 0...T stops the forward with a precondition.
    @Test(arguments: [Float(2.5), -1, 5, .nan, .infinity])
    func badLengthsStop(_ bad: Float) async {
        // The bits cross to the child process (its captures are encoded, and JSON has no NaN).
        await #expect(processExitsWith: .failure, "length \(bad)") { [bits = bad.bitPattern as UInt32] in
            let h = LayerHarness(GRU("g", inputs: 1, hidden: 2, steps: 4, output: .last), inputColumns: [4, 1])
            h.forward([Tensor(rows: 2, columns: 4), Tensor(rows: 2, columns: 1, values: [2, Float(bitPattern: bits)])])
        }
    }
}
