// Finite-difference gradient checks for the graph-era layers of StrataNN, each run standalone
// through `LayerHarness` (as a `Graph` runs it): the combining layers (Concat, Sum, Product,
// RowDot), the feature crossings (FactorizationMachine, CrossNetwork), Linear with an
// activation, MLP with counter-based dropout, the Dropout layer, the BPR loss and the strided
// labels of the pointwise losses, and `Graph`'s automatic backward (a diamond, a value fed
// twice to one layer, a dead branch, shape errors).
//
// Method (as in GradientTests.swift). L = Σ output ⊙ R for a fixed random R, accumulated in
// Double, so dL/d(output) = R and backward from dy = R is the analytic gradient; it is
// compared, coordinate by coordinate, with the central differences (L(x₊) − L(x₋)) / (x₊ − x₋)
// of every input and every parameter coordinate, by the relative error |a − n| / max(|a| +
// |n|, floor) < 1e-3 (GradientCheck). Every check prints its worst error.
//
// Steps. Concat, Sum, Product, RowDot and Dropout are linear in any single coordinate, and the
// factorization machine's float32 form ½(‖Σv‖² − Σ‖v‖²) quadratic in one: their central
// differences have no truncation error, so they use 0.25, which keeps float32 rounding noise
// small. The cross network is linear in any single weight or bias (x₀ fixed, every layer
// affine in its input) but a polynomial of degree layers + 1 in a coordinate of x₀; the smooth
// nonlinear checks use 1e-2, where the truncation h²·L‴/6 is bounded at each check.
//
// Floors. At least 1e-3 of the tensor's largest gradient and 1e-3 (R, inputs and weights are
// O(1)): below it a coordinate must agree to 1e-6 of that scale in absolute terms. Where the
// difference quotient's own error can exceed that, the floor is that error over the
// tolerance. Rounding: L(x₊) and L(x₋) are each off by at most Σ |R|·E over the outputs the
// coordinate changes (the others are the same bits and cancel), E an a-priori bound on an
// output's float32 rounding (a running error analysis, evaluated in float64 at the very
// values the check sets: `roundingFloor`), so the quotient by at most their sum over x₊ − x₋.
// Truncation: for the smooth checks, h²/6 times a bound on |L‴| within h of the point (zero
// where L is linear or quadratic in the coordinate). The MLP with dropout follows the MLP
// check in GradientTests instead (about 8 roundings of Σ|y·R| per evaluation). Below a
// floor a coordinate must still agree to 1e-3 × floor absolutely, far tighter than a missing
// term, a wrong scale or a sign would give; and where the floor is loose (the steps of 1e-2),
// a float64 reimplementation's central differences (step 1e-6, no visible noise) are also
// compared per coordinate at 1e-3 of the tensor's largest gradient, as the MLP and DLRM
// checks do.
//
// `Parallel.threads = 1`: products sum in one fixed order, so outputs a perturbation does not
// touch come out bit for bit the same and cancel exactly in L(x₊) − L(x₋).
import Testing
import StrataNN
import StrataStore
#if canImport(Glibc)
import Glibc
#endif

private typealias GC = GradientCheck

/// float32's unit roundoff, 2⁻²⁴.
private let unit = 0x1p-24

@Suite struct LayerGradientTests {
    init() { Parallel.threads = 1 }

    /// Floor for a tensor of gradients: 1e-3 of its scale, and at least `minimum`.
    static func floor(_ v: [Double], minimum: Double = 1e-3) -> Double { max(minimum, 1e-3 * GC.scale(v)) }

    /// The floor set by the difference quotient's own error: L off by at most `noise` at each
    /// of x ± h, over the difference 2h, plus h²/6·`third` (a bound on |L‴| within h), over
    /// the tolerance.
    static func quotientFloor(noise: Double, third: Double = 0, step: Float) -> Double {
        let h = Double(step)
        return (2 * noise / (2 * h) + h * h / 6 * third) / GC.tolerance
    }

    /// The floor set by the difference quotient's own error, coordinate by coordinate of
    /// `tensors[t]`: at the float32 values x₀ ± h the check sets, `reference` (float64) gives
    /// the outputs and a bound E on each one's float32 rounding; L is then off by at most
    /// Σ |R|·E over the outputs that differ from the base point's (the others are computed
    /// from the same bits and cancel), so the quotient by the sum of both over x₊ − x₋; plus
    /// h²/6·third(i), a bound on |L‴| within h. The worst coordinate's, over the tolerance.
    static func roundingFloor(
        _ tensors: [[Double]], _ t: Int, step: Float, weights: [Float],
        reference: ([[Double]]) -> (output: [Double], bound: [Double]), third: ((Int) -> Double)? = nil
    ) -> Double {
        let base = reference(tensors).output
        var values = tensors, worst = 0.0
        for i in 0..<values[t].count {
            let x0 = Float(values[t][i])
            let xp = x0 + step, xm = x0 - step
            var e = 0.0
            for v in [xp, xm] {
                values[t][i] = Double(v)
                let (output, bound) = reference(values)
                for o in output.indices where output[o] != base[o] { e += Double(abs(weights[o])) * bound[o] }
            }
            values[t][i] = Double(x0)
            let h = Double(step)
            worst = max(worst, e / Double(xp - xm) + h * h / 6 * (third?(i) ?? 0))
        }
        return worst / GC.tolerance
    }

    /// Forward and backward (dy = `weights`) through `h`, with garbage in every gradient first
    /// (backward must overwrite, not add): the analytic input and parameter gradients.
    static func analytic(_ h: LayerHarness, _ inputs: [Tensor], _ weights: [Float]) -> (inputs: [[Double]], parameters: [[Double]]) {
        let rows = inputs[0].rows
        for p in h.layer.parameters { p.gradient.data.update(repeating: 12345, count: p.gradient.count) }
        for g in h.inputGradients {
            g.resize(rows: rows)
            g.data.update(repeating: .nan, count: g.count)
        }
        let y = h.forward(inputs)
        h.backward(Tensor(rows: y.rows, columns: y.columns, values: weights))
        #expect(h.inputGradients.allSatisfy { $0.rows == rows })
        return (h.inputGradients.map(GC.doubles), h.layer.parameters.map { GC.doubles($0.gradient) })
    }

    /// Checks every input and parameter gradient of L = Σ y ⊙ R through `h` against central
    /// differences of the layer's own float32 forward; floors per input and per parameter.
    /// With `pattern`, a step that changes a ReLU's side is retried smaller, and up to a tenth
    /// of the coordinates may be skipped. Returns the analytic gradients (inputs, parameters).
    @discardableResult
    static func checkLayer(
        _ name: String, _ h: LayerHarness, inputs: [Tensor], weights: [Float],
        inputStep: Float, parameterStep: Float,
        inputFloor: (_ input: Int, _ analytic: [Double]) -> Double,
        parameterFloor: (_ parameter: Int, _ analytic: [Double]) -> Double,
        pattern: (() -> [Bool])? = nil
    ) -> (inputs: [[Double]], parameters: [[Double]]) {
        let (inputAnalytic, parameterAnalytic) = analytic(h, inputs, weights)
        let loss = { GC.weightedSum(h.forward(inputs), weights) }
        for (i, x) in inputs.enumerated() {
            let a = inputAnalytic[i]
            GC.check("\(name) input \(i)", analytic: a,
                     numeric: GC.centralDifferences(of: x, step: inputStep, pattern: pattern, loss: loss),
                     floor: inputFloor(i, a), maximumSkipped: pattern == nil ? 0 : x.count / 10)
        }
        for (p, (parameter, a)) in zip(h.layer.parameters, parameterAnalytic).enumerated() {
            GC.check("\(name) \(parameter.name)", analytic: a,
                     numeric: GC.centralDifferences(of: parameter.value, step: parameterStep, pattern: pattern, loss: loss),
                     floor: parameterFloor(p, a), maximumSkipped: pattern == nil ? 0 : parameter.value.count / 10)
        }
        return (inputAnalytic, parameterAnalytic)
    }

    /// Compares analytic gradients with the central differences (step 1e-6: truncation ~1e-12,
    /// rounding ~1e-10 of L) of a float64 function of the same values: `tensors[t]` holds the
    /// values of the tensor whose gradient is `analytic[t]`; `loss` evaluates the reference at
    /// them, `pattern` its ReLU signs. Per coordinate at 1e-3, floored at 1e-3 of the tensor's
    /// largest gradient (the float32 backward is good to ~1e-6 of that).
    static func checkFloat64(
        _ name: String, names: [String], analytic: [[Double]], tensors: [[Double]],
        pattern: (([[Double]]) -> [Bool])? = nil, loss: ([[Double]]) -> Double
    ) {
        var values = tensors
        for t in tensors.indices {
            let numeric = GC.centralDifferences64(
                count: values[t].count, step: 1e-6, read: { values[t][$0] }, write: { values[t][$0] = $1 },
                pattern: pattern.map { p in { p(values) } }, loss: { loss(values) })
            GC.check("\(name) \(names[t]) vs float64", analytic: analytic[t], numeric: numeric,
                     floor: 1e-3 * GC.scale(numeric.gradient), maximumSkipped: pattern == nil ? 0 : values[t].count / 10)
        }
    }

    // MARK: Combining layers

    enum CombineCase: String, CaseIterable, Sendable { case concat, sum, sumWithBias, product, rowDot }

    /// The combining layers in float64 (`t` holds the inputs, then Sum's bias), and per output
    /// a bound on the float32 rounding: a sum of k terms is off by ≤ (k − 1)·u·Σ|terms|, a
    /// product by u·|y|, a copy not at all.
    static func combine64(_ c: CombineCase, _ t: [[Double]], widths: [Int]) -> (output: [Double], bound: [Double]) {
        let rows = t[0].count / widths[0]
        var output: [Double] = [], bound: [Double] = []
        for s in 0..<rows {
            switch c {
            case .concat:
                for (i, w) in widths.enumerated() { output += t[i][(s * w)..<((s + 1) * w)] }
                bound += [Double](repeating: 0, count: widths.reduce(0, +))
            case .sum, .sumWithBias:
                let w = widths[0], terms = c == .sum ? widths.count : widths.count + 1
                for j in 0..<w {
                    let values = (0..<widths.count).map { t[$0][s * w + j] } + (c == .sum ? [] : [t[widths.count][j]])
                    output.append(values.reduce(0, +))
                    bound.append(Double(terms - 1) * unit * values.reduce(0) { $0 + abs($1) })
                }
            case .product:
                let w = widths[0]
                for j in 0..<w {
                    output.append(t[0][s * w + j] * t[1][s * w + j])
                    bound.append(unit * abs(output.last!))
                }
            case .rowDot:
                let w = widths[0], products = (0..<w).map { t[0][s * w + $0] * t[1][s * w + $0] }
                output.append(products.reduce(0, +))
                bound.append(Double(w) * unit * products.reduce(0) { $0 + abs($1) })
            }
        }
        return (output, bound)
    }

    /// Concat, Sum (with and without its bias), Product and RowDot: one layer instance through
    /// growing and shrinking batches; forwards bit for bit equal to the naive float32
    /// computation in the same order, gradients by central differences at 0.25 (each is linear
    /// in any single coordinate: no truncation), floors from `combine64`'s rounding bounds.
    @Test(arguments: CombineCase.allCases)
    func combine(_ c: CombineCase) {
        var r = GC.Random(seed: 0xC0B1 &+ UInt64(CombineCase.allCases.firstIndex(of: c)!))
        let layer: any Layer
        let widths: [Int]
        switch c {
        case .concat: (layer, widths) = (Concat(), [2, 5, 1])
        case .sum: (layer, widths) = (Sum("sum", columns: 4, bias: false), [4, 4, 4])
        case .sumWithBias: (layer, widths) = (Sum("sum", columns: 4, bias: true), [4, 4, 4])
        case .product: (layer, widths) = (Product(), [6, 6])
        case .rowDot: (layer, widths) = (RowDot(), [5, 5])
        }
        let sumBias = (layer as? Sum)?.bias
        #expect((sumBias != nil) == (c == .sumWithBias))
        #expect(layer.parameters.count == (c == .sumWithBias ? 1 : 0))
        if let b = sumBias {
            // The bias starts at 0 (a global offset), then takes random values for the check.
            b.value.data.update(repeating: 3, count: b.value.count)
            var w = WeightInitializer(seed: 1)
            layer.initialize(&w)
            #expect(b.value.values == [0, 0, 0, 0], "Sum's bias starts at 0")
            r.fill(b.value)
        }
        let h = LayerHarness(layer, inputColumns: widths)
        let out = h.output.columns
        #expect(out == (c == .concat ? 8 : c == .rowDot ? 1 : widths[0]))

        for b in [1, 7, 3, 12, 2] {
            let inputs = widths.map { r.tensor(b, $0) }
            let weights = r.values(b * out)
            let y = h.forward(inputs)
            #expect(y.rows == b && y.columns == out)
            var naive = [Float]()
            for s in 0..<b {
                switch c {
                case .concat:
                    for x in inputs { for k in 0..<x.columns { naive.append(x[s, k]) } }
                case .sum, .sumWithBias:
                    for j in 0..<out {
                        var v = inputs[0][s, j]
                        for x in inputs.dropFirst() { v += x[s, j] }
                        if let bias = sumBias { v += bias.value[0, j] }
                        naive.append(v)
                    }
                case .product:
                    for j in 0..<out { naive.append(inputs[0][s, j] * inputs[1][s, j]) }
                case .rowDot:
                    var v: Float = 0
                    for j in 0..<widths[0] { v += inputs[0][s, j] * inputs[1][s, j] }
                    naive.append(v)
                }
            }
            let exact = y.values.map(\.bitPattern) == naive.map(\.bitPattern)
            #expect(exact, "\(c) batch \(b) forward: \(y.values) vs naive \(naive)")

            let values = inputs.map(GC.doubles) + layer.parameters.map { GC.doubles($0.value) }
            let reference = { (t: [[Double]]) in Self.combine64(c, t, widths: widths) }
            let floor = { (t: Int, a: [Double]) in
                max(Self.floor(a), Self.roundingFloor(values, t, step: 0.25, weights: weights, reference: reference))
            }
            Self.checkLayer("\(c) batch \(b)", h, inputs: inputs, weights: weights, inputStep: 0.25, parameterStep: 0.25,
                            inputFloor: { floor($0, $1) }, parameterFloor: { floor(widths.count + $0, $1) })
        }

        // An input whose gradient is not asked for (nil in the list) is left alone.
        let inputs = widths.map { r.tensor(3, $0) }
        h.forward(inputs)
        for g in h.inputGradients {
            g.resize(rows: 3)
            g.data.update(repeating: 42, count: g.count)
        }
        h.backward(r.tensor(3, out), need: widths.indices.map { $0 != 1 })
        let untouched = h.inputGradients[1].values.allSatisfy { $0 == 42 }
        #expect(untouched, "\(c): the gradient of an input not asked for is not written")
        let written = h.inputGradients[0].values.allSatisfy { $0 != 42 }
        #expect(written, "\(c): the gradients asked for are written")
    }

    // MARK: Factorization machine

    /// Σ_{i<j} ⟨v_i, v_j⟩ per row in float64 (`t[i]` is field i, rows × d), and a bound on the
    /// float32 ½(‖s‖² − Σ_i ‖v_i‖²), s = Σ_i v_i: each s_j is off by ≤ (fields − 1)·u·A_j (A_j =
    /// Σ_i |v_ij|), so ‖s‖² by ≤ (2·fields + d)·u·Σ_j A_j² with its own d additions; Σ‖v_i‖²,
    /// fields·d terms, by ≤ (fields·d + 1)·u·Σ‖v_i‖²; the difference and the ½ add
    /// u·|y| ≤ u·½(Σ_j A_j² + Σ‖v_i‖²).
    static func factorizationMachine64(_ t: [[Double]], dimension d: Int) -> (output: [Double], bound: [Double]) {
        let fields = t.count, rows = t[0].count / d
        var output: [Double] = [], bound: [Double] = []
        for s in 0..<rows {
            var a2 = 0.0, squares = 0.0, y = 0.0
            for j in 0..<d {
                var a = 0.0
                for v in t {
                    a += abs(v[s * d + j])
                    squares += v[s * d + j] * v[s * d + j]
                }
                a2 += a * a
            }
            for i in 0..<fields { for j in (i + 1)..<fields { for k in 0..<d { y += t[i][s * d + k] * t[j][s * d + k] } } }
            output.append(y)
            bound.append(unit * (0.5 * Double(2 * fields + d + 1) * a2 + 0.5 * Double(fields * d + 2) * squares))
        }
        return (output, bound)
    }

    /// y = Σ_{i<j} ⟨v_i, v_j⟩ per row, against the naive pairwise sum in float64, and its
    /// gradients (Σ_j v_j − v_i) by central differences at 0.25 (the float32 form is quadratic
    /// in any one coordinate: exact up to rounding).
    @Test(arguments: [2, 3, 6], [1, 4])
    func factorizationMachine(fields: Int, dimension d: Int) {
        var r = GC.Random(seed: 0xF3 &* UInt64(fields * 10 + d))
        let layer = FactorizationMachine(fields: fields, dimension: d)
        #expect(layer.outputColumns(for: Array(repeating: d, count: fields)) == 1)
        #expect(layer.outputColumns(for: Array(repeating: d, count: fields - 1)) == nil)
        #expect(layer.outputColumns(for: Array(repeating: d + 1, count: fields)) == nil)
        let h = LayerHarness(layer, inputColumns: Array(repeating: d, count: fields))
        let step: Float = 0.25

        for b in [1, 5, 3] {
            let inputs = (0..<fields).map { _ in r.tensor(b, d) }
            let weights = r.values(b)
            let name = "fm \(fields)×\(d) batch \(b)"
            let y = h.forward(inputs)
            #expect(y.rows == b && y.columns == 1)

            // Forward against float64, within the a-priori bound.
            let values = inputs.map(GC.doubles)
            let (exact, bound) = Self.factorizationMachine64(values, dimension: d)
            var worst = 0.0
            for s in 0..<b {
                let e = abs(Double(y[s, 0]) - exact[s])
                worst = max(worst, e / bound[s])
                #expect(e <= bound[s], "\(name) row \(s): \(y[s, 0]) vs float64 \(exact[s])")
            }
            print("reference check \(name) forward: worst error \(worst) of its rounding bound")

            let reference = { (t: [[Double]]) in Self.factorizationMachine64(t, dimension: d) }
            let (analytic, _) = Self.checkLayer(
                name, h, inputs: inputs, weights: weights, inputStep: step, parameterStep: step,
                inputFloor: { i, a in
                    max(Self.floor(a), Self.roundingFloor(values, i, step: step, weights: weights, reference: reference))
                },
                parameterFloor: { _, _ in 0 })

            // And against the float64 pairwise sum's own central differences.
            Self.checkFloat64(name, names: (0..<fields).map { "input \($0)" }, analytic: analytic, tensors: values) { t in
                zip(Self.factorizationMachine64(t, dimension: d).output, weights).reduce(0.0) { $0 + $1.0 * Double($1.1) }
            }
        }
    }

    // MARK: Cross network

    /// DCN-v2's cross network in float64 with the values of a float32 one: `t[0]` is x₀ (rows ×
    /// columns), then each layer's weight (columns × columns) and bias. x_{l+1} = x₀ ⊙ (W_l x_l
    /// + b_l) + x_l per row, and per output a bound on the float32 forward's rounding, by a
    /// running error analysis: u_l = W_l x_l + b_l, a sum of columns + 1 terms, is off by
    /// Σ_k |W_ik|·E_k (carried in) plus (columns + 1)·u·(|b_i| + Σ_k |W_ik x_k|); x₀ᵢ scales that;
    /// the product and the sum add u·|x₀ᵢ u_i| and u·(|x₀ᵢ u_i| + |x_i|).
    static func crossNetwork64(_ t: [[Double]], columns n: Int) -> (output: [Double], bound: [Double]) {
        let rows = t[0].count / n, layers = (t.count - 1) / 2
        var output: [Double] = [], bound: [Double] = []
        for s in 0..<rows {
            let x0 = Array(t[0][(s * n)..<((s + 1) * n)])
            var x = x0, e = [Double](repeating: 0, count: n)
            for l in 0..<layers {
                let w = t[1 + 2 * l], b = t[2 + 2 * l]
                var next = x, nextE = e
                for i in 0..<n {
                    var u = b[i], magnitude = abs(b[i]), carried = 0.0
                    for k in 0..<n {
                        u += w[i * n + k] * x[k]
                        magnitude += abs(w[i * n + k] * x[k])
                        carried += abs(w[i * n + k]) * e[k]
                    }
                    next[i] = x0[i] * u + x[i]
                    nextE[i] = abs(x0[i]) * (carried + Double(n + 1) * unit * magnitude) + e[i]
                        + unit * (2 * abs(x0[i] * u) + abs(x[i]))
                }
                (x, e) = (next, nextE)
            }
            output += x
            bound += e
        }
        return (output, bound)
    }

    @Test(arguments: [1, 3])
    func crossNetwork(layers: Int) {
        let width = 5
        var r = GC.Random(seed: 0xDC2 &+ UInt64(layers))
        let layer = CrossNetwork("cross", columns: width, layers: layers)
        #expect(layer.parameters.count == 2 * layers)
        #expect(layer.outputColumns(for: [width]) == width && layer.outputColumns(for: [width + 1]) == nil
                && layer.outputColumns(for: [width, width]) == nil)
        // The paper's initialization: W like a linear layer's, b = 0.
        var w = WeightInitializer(seed: 3)
        layer.initialize(&w)
        #expect(layer.layers.allSatisfy { $0.bias.value.values.allSatisfy { $0 == 0 } }, "biases start at 0")
        // Random weights and biases for the check (nonzero biases exercise their path), small
        // enough that three layers keep x_l O(1).
        for p in layer.parameters { r.fill(p.value, -0.5, 0.5) }
        let h = LayerHarness(layer, inputColumns: [width])
        let names = ["input"] + layer.parameters.map(\.name)
        let reference = { (t: [[Double]]) in Self.crossNetwork64(t, columns: width) }

        for b in [3, 6, 2] {
            let x = r.tensor(b, width)
            let weights = r.values(b * width)
            let name = "cross \(layers) layers batch \(b)"
            let values = [GC.doubles(x)] + layer.parameters.map { GC.doubles($0.value) }
            let loss64 = { (t: [[Double]]) in zip(reference(t).output, weights).reduce(0.0) { $0 + $1.0 * Double($1.1) } }

            // Forward against float64, within the a-priori bound.
            let (exact, bound) = reference(values)
            let y = h.forward([x]).values
            var worst = 0.0
            for i in 0..<y.count {
                let e = abs(Double(y[i]) - exact[i])
                worst = max(worst, e / bound[i])
                #expect(e <= bound[i], "\(name) forward [\(i)]: \(y[i]) vs float64 \(exact[i])")
            }
            print("reference check \(name) forward: worst error \(worst) of its rounding bound")

            // 1. Central differences of the float32 layer: 1e-2 for x₀ and 0.25 for the
            // parameters (L is linear in any one of them: no truncation). For x₀, L is a
            // polynomial of degree layers + 1 ≤ 4 in the coordinate, so the quotient is off by
            // exactly h²/6·L‴(x), and L‴(x) is exactly the float64 third difference
            // (L(x+2k) − 2L(x+k) + 2L(x−k) − L(x−2k)) / 2k³ (its error, k²·L⁽⁵⁾/4, is 0).
            var t = values
            let third = (0..<(b * width)).map { i -> Double in
                let x0 = t[0][i], k = 0.1
                func at(_ v: Double) -> Double { t[0][i] = v; return loss64(t) }
                defer { t[0][i] = x0 }
                return abs(at(x0 + 2 * k) - 2 * at(x0 + k) + 2 * at(x0 - k) - at(x0 - 2 * k)) / (2 * k * k * k)
            }
            let (inputAnalytic, parameterAnalytic) = Self.checkLayer(
                name, h, inputs: [x], weights: weights, inputStep: 1e-2, parameterStep: 0.25,
                inputFloor: { _, a in
                    max(Self.floor(a), Self.roundingFloor(values, 0, step: 1e-2, weights: weights, reference: reference) { third[$0] })
                },
                parameterFloor: { p, a in
                    max(Self.floor(a), Self.roundingFloor(values, 1 + p, step: 0.25, weights: weights, reference: reference))
                })

            // 2. The float64 reimplementation's central differences, per coordinate.
            Self.checkFloat64(name, names: names, analytic: inputAnalytic + parameterAnalytic, tensors: values, loss: loss64)
        }
    }

    // MARK: Linear with an activation

    static func activate64(_ f: Activation, _ z: Double) -> Double {
        switch f {
        case .identity: z
        case .relu: max(z, 0)
        case .sigmoid: z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z))
        case .tanh: tanh(z)
        }
    }

    /// A bound on |f‴| within `step` of the point where f = y: tanh‴ = −2(1 − y²)(1 − 3y²),
    /// σ‴ = σ(1 − σ)(1 − 6σ(1 − σ)), plus max|f⁗|·step (≤ 4.09 for tanh, 0.128 for σ). ReLU
    /// and the identity are linear (given ReLU's side).
    static func thirdDerivative(_ f: Activation, output y: Double, step: Double) -> Double {
        switch f {
        case .identity, .relu: 0
        case .tanh: abs(2 * (1 - y * y) * (1 - 3 * y * y)) + 4.1 * step
        case .sigmoid: abs(y * (1 - y) * (1 - 6 * y * (1 - y))) + 0.13 * step
        }
    }

    /// f(x·Wᵀ + b) in float64 (`t` is x, W, b), and per output a bound on the float32 one's
    /// rounding: the pre-activation, a sum of inputs + 1 terms in any order, is off by ≤
    /// (inputs + 1)·u·(|b_j| + Σ_k |x_k W_jk|), which f passes on times |f′(z)| (to first order:
    /// the error is ~1e-6, f″ ≤ 1); tanhf (≤ 2 ulp) and the logistic's expf, addition and
    /// division add ≤ 4u·|y|; ReLU adds nothing.
    static func linear64(_ t: [[Double]], inputs n: Int, outputs m: Int, _ f: Activation) -> (output: [Double], bound: [Double]) {
        let b = t[0].count / n
        var output: [Double] = [], bound: [Double] = []
        for s in 0..<b {
            for j in 0..<m {
                var z = t[2][j], magnitude = abs(t[2][j])
                for k in 0..<n {
                    z += t[0][s * n + k] * t[1][j * n + k]
                    magnitude += abs(t[0][s * n + k] * t[1][j * n + k])
                }
                let y = activate64(f, z)
                let slope = switch f {
                case .identity: 1.0
                case .relu: z > 0 ? 1.0 : 0
                case .tanh: 1 - y * y
                case .sigmoid: y * (1 - y)
                }
                output.append(y)
                bound.append(slope * Double(n + 1) * unit * magnitude + (f == .tanh || f == .sigmoid ? 4 * unit * abs(y) : 0))
            }
        }
        return (output, bound)
    }

    /// Per coordinate of x, W and b (`t`), a bound on |L‴| within `step`: Σ_j R_sj f‴ W_jk³ for
    /// x_sk, Σ_s R_sj f‴ x_sk³ for W_jk, Σ_s R_sj f‴ for b_j (|f‴| from `thirdDerivative`).
    static func linearThird(_ t: [[Double]], inputs n: Int, outputs m: Int, _ f: Activation, _ weights: [Float],
                            step: Float) -> [[Double]] {
        let b = t[0].count / n, y = linear64(t, inputs: n, outputs: m, f).output
        let f3 = (0..<(b * m)).map { Double(abs(weights[$0])) * thirdDerivative(f, output: y[$0], step: Double(step)) }
        let input = (0..<(b * n)).map { c in (0..<m).reduce(0.0) { $0 + f3[c / n * m + $1] * pow(abs(t[1][$1 * n + c % n]), 3) } }
        let weight = (0..<(m * n)).map { c in (0..<b).reduce(0.0) { $0 + f3[$1 * m + c / n] * pow(abs(t[0][$1 * n + c % n]), 3) } }
        let bias = (0..<m).map { j in (0..<b).reduce(0.0) { $0 + f3[$1 * m + j] } }
        return [input, weight, bias]
    }

    /// y = f(x·Wᵀ + b) with ReLU fused into the product, tanh and sigmoid applied after it;
    /// backward through the activation from the output.
    @Test(arguments: [Activation.relu, .tanh, .sigmoid])
    func linearActivation(_ f: Activation) {
        let inputs = 6, outputs = 5
        var r = GC.Random(seed: 0x11AC &+ UInt64(Activation.allCases.firstIndex(of: f)!))
        let layer = Linear("dense", inputs: inputs, outputs: outputs, activation: f)
        #expect(layer.activation == f && layer.parameters.count == 2)
        let h = LayerHarness(layer, inputColumns: [inputs])
        let step: Float = 1e-2
        r.fill(layer.weight.value)

        for b in [4, 9, 1] {
            // Pre-activations at least 0.05 from 0 (redrawn until so, from the seeded stream):
            // a step of 1e-2 in any x, W or b (all |·| ≤ 1) moves one by at most 1e-2, so no
            // ReLU changes side and L is linear in the coordinate then (none is skipped).
            var x = r.tensor(b, inputs)
            var z: [[Double]] = []
            func preActivations() -> [[Double]] {
                (0..<b).map { s in
                    (0..<outputs).map { j in
                        (0..<inputs).reduce(Double(layer.bias.value[0, j])) { $0 + Double(x[s, $1]) * Double(layer.weight.value[j, $1]) }
                    }
                }
            }
            for attempt in 0... {
                precondition(attempt < 1000, "no draw keeps the pre-activations away from 0")
                r.fill(layer.bias.value)
                z = preActivations()
                if z.joined().allSatisfy({ abs($0) >= 0.05 }) { break }
                x = r.tensor(b, inputs)
            }
            let weights = r.values(b * outputs)
            let name = "linear \(inputs)→\(outputs) \(f) batch \(b)"

            // Forward against float64, within the a-priori bound.
            let values = [GC.doubles(x), GC.doubles(layer.weight.value), GC.doubles(layer.bias.value)]
            let reference = { (t: [[Double]]) in Self.linear64(t, inputs: inputs, outputs: outputs, f) }
            let (exact, bound) = reference(values)
            let y = h.forward([x]).values
            for i in 0..<y.count {
                #expect(abs(Double(y[i]) - exact[i]) <= bound[i], "\(name) forward [\(i)]: \(y[i]) vs \(exact[i])")
            }
            if f == .relu {
                let signs = z.joined().map { $0 > 0 } == y.map { $0 > 0 }
                #expect(signs, "\(name): ReLU keeps the positive pre-activations")
            }

            // 1. Central differences of the float32 layer at 1e-2; floors from the rounding
            // bound and f‴ (the truncation, h²/6·|L‴| ≤ 1.7e-5·|L‴|).
            let third = Self.linearThird(values, inputs: inputs, outputs: outputs, f, weights, step: step)
            let floor = { (t: Int, a: [Double]) in
                max(Self.floor(a), Self.roundingFloor(values, t, step: step, weights: weights, reference: reference) { third[t][$0] })
            }
            let pattern = f == .relu ? { h.output.values.map { $0 > 0 } } : nil
            let (inputAnalytic, parameterAnalytic) = Self.checkLayer(
                name, h, inputs: [x], weights: weights, inputStep: step, parameterStep: step,
                inputFloor: { floor(0, $1) }, parameterFloor: { floor(1 + $0, $1) }, pattern: pattern)

            // 2. Float64's central differences, per coordinate (no ReLU within 1e-6 of its kink).
            Self.checkFloat64(name, names: ["input", "weight", "bias"], analytic: inputAnalytic + parameterAnalytic,
                              tensors: values) { t in
                zip(reference(t).output, weights).reduce(0.0) { $0 + $1.0 * Double($1.1) }
            }
        }
    }

    // MARK: MLP with dropout

    /// An MLP in float64 with the float32 one's dropout masks: hidden layer i's value q (row
    /// after row) is kept, times the float32 1/(1 − rate), where `masks[i]` keeps q. `t` holds x,
    /// then each layer's weight and bias; the ReLU signs go to `signs`.
    static func mlp64(_ t: [[Double]], sizes: [Int], activations: [Activation], masks: [DropoutMask], keep: Float,
                      signs: inout [Bool]) -> [Double] {
        let b = t[0].count / sizes[0]
        var h = t[0]
        for l in 0..<(sizes.count - 1) {
            let n = sizes[l], m = sizes[l + 1], w = t[1 + 2 * l], bias = t[2 + 2 * l]
            var next = [Double](repeating: 0, count: b * m)
            for s in 0..<b {
                for j in 0..<m {
                    var z = bias[j]
                    for k in 0..<n { z += h[s * n + k] * w[j * n + k] }
                    if activations[l] == .relu { signs.append(z > 0) }
                    var v = activate64(activations[l], z)
                    if l < masks.count { v = masks[l].kept(s * m + j) ? v * Double(keep) : 0 }
                    next[s * m + j] = v
                }
            }
            h = next
        }
        return h
    }

    /// In training, dropout after each hidden layer with a mask named by (seed, step, node,
    /// layer): with the same `Pass` every forward draws the same mask, so L is an ordinary
    /// function of x and the parameters and central differences through forward are valid.
    @Test func mlpDropoutGradients() {
        var r = GC.Random(seed: 0xD20)
        let sizes = [5, 8, 6, 3], b = 4, rate: Float = 0.3
        let activations: [Activation] = [.relu, .tanh, .identity]
        let mlp = MLP("tower", sizes: sizes, activations: activations, dropout: rate)
        var w = WeightInitializer(seed: 17)
        mlp.initialize(&w)
        let h = LayerHarness(mlp, inputColumns: [sizes[0]])
        #expect(h.pass.training)
        let x = r.tensor(b, sizes[0])
        let weights = r.values(b * sizes.last!)
        let name = "mlp \(sizes) dropout \(rate)"

        // The check must see dropout at work: the masks of both hidden layers drop some values.
        let masks = (0..<(sizes.count - 2)).map { DropoutMask(rate: rate, pass: h.pass, stream: UInt64($0), count: b * sizes[$0 + 1]) }
        for (i, width) in sizes.dropFirst().dropLast().enumerated() {
            let dropped = (0..<(b * width)).filter { !masks[i].kept($0) }.count
            #expect(dropped > 0 && dropped < b * width, "hidden layer \(i): \(dropped) of \(b * width) dropped")
        }
        let trained = h.forward([x]).values
        h.pass.training = false
        let inferred = h.forward([x]).values
        h.pass.training = true
        #expect(trained != inferred, "dropout changes the training output")
        #expect(h.forward([x]).values.map(\.bitPattern) == trained.map(\.bitPattern), "the same pass draws the same mask")

        // The float64 reimplementation with the same masks gives the same forward (outputs
        // O(1): an absolute 1e-5, floor 1, as the MLP check).
        let keep: Float = 1 / (1 - rate)
        let values = [GC.doubles(x)] + mlp.parameters.map { GC.doubles($0.value) }
        var unused: [Bool] = []
        GC.check("\(name) forward", actual: trained.map(Double.init),
                 reference: Self.mlp64(values, sizes: sizes, activations: activations, masks: masks, keep: keep, signs: &unused),
                 floor: 1, tolerance: 1e-5)

        // 1. As the MLP check in GradientTests: step 1e-2, the floor set by L's float32 noise,
        // about 8 roundings of Σ|y·R| per evaluation over the step, over the tolerance; a step
        // that changes the ReLU layer's side is retried smaller.
        let magnitude = zip(trained, weights).reduce(0.0) { $0 + abs(Double($1.0) * Double($1.1)) }
        let step: Float = 1e-2
        let noiseFloor = 8 * unit * magnitude / Double(step) / GC.tolerance
        let (inputAnalytic, parameterAnalytic) = Self.checkLayer(
            name, h, inputs: [x], weights: weights, inputStep: step, parameterStep: step,
            inputFloor: { max(Self.floor($1), noiseFloor) }, parameterFloor: { max(Self.floor($1), noiseFloor) },
            pattern: { mlp.hiddenOutput(0).values.map { $0 > 0 } })

        // 2. The float64 reimplementation's central differences, per coordinate.
        Self.checkFloat64(
            name, names: ["input"] + mlp.parameters.map(\.name), analytic: inputAnalytic + parameterAnalytic, tensors: values,
            pattern: { t in
                var signs: [Bool] = []
                _ = Self.mlp64(t, sizes: sizes, activations: activations, masks: masks, keep: keep, signs: &signs)
                return signs
            }
        ) { t in
            var signs: [Bool] = []
            let out = Self.mlp64(t, sizes: sizes, activations: activations, masks: masks, keep: keep, signs: &signs)
            return zip(out, weights).reduce(0.0) { $0 + $1.0 * Double($1.1) }
        }
    }

    /// The mask is a function of the pass: another step draws another; inference draws none
    /// and equals the MLP without dropout.
    @Test func mlpDropoutMasks() {
        var r = GC.Random(seed: 0xD21)
        let sizes = [6, 16, 12, 2], b = 8
        let mlp = MLP("tower", sizes: sizes, last: .sigmoid, dropout: 0.3)
        let plain = MLP("plain", sizes: sizes, last: .sigmoid)
        var w = WeightInitializer(seed: 18)
        mlp.initialize(&w)
        for (p, q) in zip(plain.parameters, mlp.parameters) { p.value.copy(from: q.value) }
        let h = LayerHarness(mlp, inputColumns: [sizes[0]])
        let x = r.tensor(b, sizes[0])

        let step1 = h.forward([x]).values.map(\.bitPattern)
        h.pass.step = 2
        let step2 = h.forward([x]).values.map(\.bitPattern)
        #expect(step1 != step2, "another step draws another mask")
        h.pass.step = 1
        #expect(h.forward([x]).values.map(\.bitPattern) == step1, "back at step 1, the first mask again")

        // The masks themselves: over 4096 values, step, seed, node and stream each change them.
        let base = Pass(training: true, step: 1, seed: 7, node: 3)
        func kept(_ p: Pass, stream: UInt64 = 0) -> [Bool] {
            let m = DropoutMask(rate: 0.3, pass: p, stream: stream, count: 4096)
            return (0..<4096).map(m.kept)
        }
        let reference = kept(base)
        #expect(kept(base) == reference, "the same pass gives the same mask")
        #expect(kept(Pass(training: true, step: 2, seed: 7, node: 3)) != reference, "step")
        #expect(kept(Pass(training: true, step: 1, seed: 8, node: 3)) != reference, "seed")
        #expect(kept(Pass(training: true, step: 1, seed: 7, node: 4)) != reference, "node")
        #expect(kept(base, stream: 1) != reference, "stream")

        // Inference: deterministic whatever the step, and the same bits as without dropout.
        h.pass.training = false
        let inference = h.forward([x]).values.map(\.bitPattern)
        h.pass.step = 99
        #expect(h.forward([x]).values.map(\.bitPattern) == inference, "inference does not depend on the step")
        let plainHarness = LayerHarness(plain, inputColumns: [sizes[0]])
        #expect(plainHarness.forward([x]).values.map(\.bitPattern) == inference, "inference is the MLP without dropout")
        // And so is its backward.
        let dy = r.tensor(b, sizes.last!)
        h.backward(dy)
        plainHarness.backward(dy)
        #expect(h.inputGradients[0].values.map(\.bitPattern) == plainHarness.inputGradients[0].values.map(\.bitPattern))
        for (p, q) in zip(mlp.parameters, plain.parameters) {
            #expect(p.gradient.values.map(\.bitPattern) == q.gradient.values.map(\.bitPattern), "inference \(p.name) gradient")
        }
    }

    // MARK: Dropout

    @Test func dropoutLayer() {
        var r = GC.Random(seed: 0xD0D0)
        let rows = 40, columns = 50, n = rows * columns
        let rate: Float = 0.3
        let keep: Float = 1 / (1 - rate)
        let layer = Dropout(rate: rate)
        #expect(layer.outputColumns(for: [columns]) == columns && layer.outputColumns(for: [columns, columns]) == nil)
        let h = LayerHarness(layer, inputColumns: [columns])
        // Away from zero so that a dropped value (0) is told apart from a kept one.
        let x = Tensor(rows: rows, columns: columns, values: (0..<n).map { _ in r.awayFromZero(0.1, 2) })
        let weights = r.values(n)

        let y = h.forward([x]).values
        let mask = DropoutMask(rate: rate, pass: h.pass, stream: 0, count: n)
        var dropped = 0, scaled = true, named = true
        for i in 0..<n {
            if y[i] == 0 { dropped += 1 } else if y[i] != x.data[i] * keep { scaled = false }
            if (y[i] != 0) != mask.kept(i) { named = false }
        }
        #expect(scaled, "kept values are scaled by 1/(1 − rate)")
        #expect(named, "the layer drops what DropoutMask names")
        // 2000 draws at rate 0.3: 600 expected, σ = √(2000·0.3·0.7) = 20.5; ±5σ = ±102 (the
        // draws are fixed by the pass, so this either always or never passes).
        print("dropout: dropped \(dropped) of \(n) at rate \(rate)")
        #expect(abs(dropped - 600) <= 102, "dropped \(dropped) of \(n) at rate 0.3")

        // Backward is the mask: dy · 1/(1 − rate) where kept, 0 where dropped.
        h.backward(Tensor(rows: rows, columns: columns, values: weights))
        let dx = h.inputGradients[0].values
        let maskedGradient = (0..<n).allSatisfy { dx[$0] == (mask.kept($0) ? weights[$0] * keep : 0) }
        #expect(maskedGradient, "dropout backward is dy times the mask")
        // And by central differences (linear in x for a fixed pass: exact at 0.25).
        let numeric = GC.centralDifferences(of: x, step: 0.25) { GC.weightedSum(h.forward([x]), weights) }
        GC.check("dropout input", analytic: dx.map(Double.init), numeric: numeric, floor: 1e-3)

        // No hidden state: a second harness with an equal pass gives the same bits, even after
        // the first ran another step in between.
        let other = LayerHarness(Dropout(rate: rate), inputColumns: [columns])
        h.pass.step = 5
        h.forward([x])
        h.pass.step = 1
        let again = h.forward([x]).values.map(\.bitPattern)
        let fresh = other.forward([x]).values.map(\.bitPattern)
        #expect(again == y.map(\.bitPattern) && fresh == again, "equal passes, equal bits")
        let dy = Tensor(rows: rows, columns: columns, values: weights)
        h.backward(dy)
        other.backward(dy)
        #expect(h.inputGradients[0].values.map(\.bitPattern) == other.inputGradients[0].values.map(\.bitPattern))

        // Inference is the identity both ways.
        h.pass.training = false
        #expect(h.forward([x]).values == x.values, "inference forward is the identity")
        h.backward(dy)
        #expect(h.inputGradients[0].values == weights, "inference backward is the identity")
        // Rate 0 is the identity in training too.
        let none = LayerHarness(Dropout(rate: 0), inputColumns: [columns])
        #expect(none.forward([x]).values == x.values, "rate 0 is the identity")
    }

    // MARK: Losses

    static func softplus64(_ x: Double) -> Double { max(x, 0) + log1p(exp(-abs(x))) }
    static func sigmoid64(_ x: Double) -> Double { x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)) }

    /// BPR over groups (positive first, then its negatives): the mean over groups and negatives
    /// of −log σ(s⁺ − s⁻) = softplus(s⁻ − s⁺).
    @Test(arguments: [2, 4])
    func bpr(groupSize: Int) {
        var r = GC.Random(seed: 0xB9B &+ UInt64(groupSize))
        let groups = 5, n = groups * groupSize, negatives = groupSize - 1
        let terms = Double(groups * negatives)
        let scores = r.values(n, -3, 3)
        // Labels are not read: NaN would poison the loss if they were.
        let labels = [Float](repeating: .nan, count: n)
        func evaluate(_ s: [Float], gradient: Tensor) -> Double {
            labels.withUnsafeBufferPointer {
                Loss.bpr.evaluate(Tensor(rows: n, columns: 1, values: s), labels: .column($0.baseAddress!, stride: 1), groupSize: groupSize, gradient: gradient)
            }
        }
        let g = Tensor(rows: 0, columns: 1)
        let value = evaluate(scores, gradient: g)
        #expect(g.rows == n)

        // float64: value and closed-form gradient (d/ds⁺ = −Σ σ(−Δ)/terms, d/ds⁻ = σ(−Δ)/terms).
        // Each float32 term softplus(−Δ) is off by ≤ u·(|Δ| + 3 + |term|): Δ's rounding (slope
        // ≤ 1), expf and log1pf (≤ 1 ulp of values ≤ 1 each), the final add; the mean, summed
        // in Double, by no more than the largest. Per row: the bound on L's error from the
        // terms it is in (|Δ| grown by the step), and on |L‴|, Σ (|σ″(−Δ)| + h·max|σ‴|) / terms.
        let step: Float = 1e-2
        var exact = 0.0, expected = [Double](repeating: 0, count: n), largestDelta = 0.0
        var rowNoise = [Double](repeating: 0, count: n), rowThird = [Double](repeating: 0, count: n)
        for q in 0..<groups {
            let first = q * groupSize
            for j in 1...negatives {
                let delta = Double(scores[first]) - Double(scores[first + j])
                largestDelta = max(largestDelta, abs(delta))
                let term = Self.softplus64(-delta)
                exact += term
                let sg = Self.sigmoid64(-delta)
                expected[first] -= sg / terms
                expected[first + j] += sg / terms
                for row in [first, first + j] {
                    rowNoise[row] += unit * (abs(delta) + Double(step) + 3 + term + Double(step)) / terms
                    rowThird[row] += (abs(sg * (1 - sg) * (1 - 2 * sg)) + 0.125 * Double(step)) / terms
                }
            }
        }
        exact /= terms
        let valueBound = unit * (2 * largestDelta + 4)
        print("reference check bpr group \(groupSize): \(value) vs float64 \(exact), error \(abs(value - exact)), bound \(valueBound)")
        #expect(abs(value - exact) <= valueBound, "bpr \(value) vs float64 \(exact)")
        // The gradient: σ in float32 is a few ulps, the 1/terms scale one more, the positive
        // sums ≤ 3 of them: well within 1e-5 of the largest gradient.
        let analytic = GC.doubles(g)
        GC.check("bpr group \(groupSize) gradient closed form", actual: analytic, reference: expected,
                 floor: GC.scale(expected), tolerance: 1e-5)

        // Central differences at 1e-2; a row changes only the terms of its group.
        var s = scores
        let numeric = GC.centralDifferences(count: n, step: step, read: { s[$0] }, write: { s[$0] = $1; return $1 }) {
            evaluate(s, gradient: Tensor(rows: 0, columns: 1))
        }
        GC.check("bpr group \(groupSize) gradient", analytic: analytic, numeric: numeric,
                 floor: max(Self.floor(analytic, minimum: 1e-3 / terms),
                            Self.quotientFloor(noise: rowNoise.max()!, third: rowThird.max()!, step: step)))
    }

    /// The pointwise losses read row i's label at labels[i·stride] (a label column in a wider
    /// row) and treat every row alike whatever `groupSize` (no precondition: 7 rows are not
    /// whole groups of 2 or 3).
    @Test(arguments: [Loss.binaryCrossEntropy, .meanSquaredError])
    func pointwiseStrideAndGroups(_ loss: Loss) {
        var r = GC.Random(seed: 0x57 &+ UInt64(Loss.allCases.firstIndex(of: loss)!))
        let n = 7, stride = 3
        let predictions = r.values(n, -3, 3)
        let targets = loss == .binaryCrossEntropy ? r.values(n, 0, 1) : r.values(n, -3, 3)
        // Every third float is a label, the others NaN; nothing past the last label.
        var strided = [Float](repeating: .nan, count: stride * (n - 1) + 1)
        for i in 0..<n { strided[i * stride] = targets[i] }

        let z = Tensor(rows: n, columns: 1, values: predictions)
        let compactGradient = Tensor(rows: 0, columns: 1)
        let compact = targets.withUnsafeBufferPointer { loss.evaluate(z, labels: .column($0.baseAddress!, stride: 1), gradient: compactGradient) }
        func stridedEvaluate(_ z: Tensor, groupSize: Int, gradient: Tensor) -> Double {
            strided.withUnsafeBufferPointer { loss.evaluate(z, labels: .column($0.baseAddress!, stride: stride), groupSize: groupSize, gradient: gradient) }
        }
        for groupSize in [1, 2, 3] {
            let g = Tensor(rows: 0, columns: 1)
            let v = stridedEvaluate(z, groupSize: groupSize, gradient: g)
            #expect(v.bitPattern == compact.bitPattern, "\(loss) stride \(stride) group \(groupSize): \(v) vs \(compact)")
            #expect(g.values.map(\.bitPattern) == compactGradient.values.map(\.bitPattern), "\(loss) gradient, group \(groupSize)")
        }

        // Against float64. Each float32 term is off by at most: MSE, e = x − y (u·|e|) squared
        // (2|e|·u|e| + u·e²): 3u·e²; BCE, max(x, 0) − x·y + log1pf(expf(−|x|)): the product,
        // the difference, expf and log1pf (≤ 1 ulp of values ≤ 1) and the final add,
        // u·(2|xy| + |x| + 2 + |term|). The mean (in Double) by no more than the largest.
        // Computed with |x| grown by the step, for the central differences below.
        let step: Float = 1e-2
        var exact = 0.0, third = 0.0, termBound = 0.0
        for i in 0..<n {
            let x = Double(predictions[i]), y = Double(targets[i]), h = Double(step)
            if loss == .binaryCrossEntropy {
                let term = Self.softplus64(x) - x * y
                exact += term
                termBound = max(termBound, unit * (2 * (abs(x) + h) * abs(y) + abs(x) + h + 2 + abs(term) + h))
                let sg = Self.sigmoid64(x)
                third = max(third, (abs(sg * (1 - sg) * (1 - 2 * sg)) + 0.125 * h) / Double(n))
            } else {
                exact += (x - y) * (x - y)
                termBound = max(termBound, 3 * unit * (abs(x - y) + h) * (abs(x - y) + h))
            }
        }
        exact /= Double(n)
        print("reference check \(loss) stride \(stride): \(compact) vs float64 \(exact), error \(abs(compact - exact)), bound \(termBound)")
        #expect(abs(compact - exact) <= termBound, "\(loss) \(compact) vs float64 \(exact)")

        // Central differences of the strided loss at 1e-2: MSE is quadratic (no truncation),
        // BCE's L‴ is σ″(x)/n; a coordinate changes one term, so L by ≤ termBound / n.
        var xs = predictions
        let numeric = GC.centralDifferences(count: n, step: step, read: { xs[$0] }, write: { xs[$0] = $1; return $1 }) {
            stridedEvaluate(Tensor(rows: n, columns: 1, values: xs), groupSize: 1, gradient: Tensor(rows: 0, columns: 1))
        }
        let analytic = GC.doubles(compactGradient)
        GC.check("\(loss) stride \(stride) gradient", analytic: analytic, numeric: numeric,
                 floor: max(Self.floor(analytic, minimum: 1e-3 / Double(n)),
                            Self.quotientFloor(noise: termBound / Double(n), third: third, step: step)))
    }

    // MARK: Graph

    /// x → A (linear), x → B (linear, tanh), Sum(A, B) + bias, x a trainable input: the graph's
    /// gradient of x sums both branches, and equals the central differences of the whole graph.
    @Test func graphDiamond() throws {
        var r = GC.Random(seed: 0x61A)
        let b = 3
        let x = r.tensor(b, 4)
        let graph = Graph()
        let a = Linear("a", inputs: 4, outputs: 3)
        let bLayer = Linear("b", inputs: 4, outputs: 3, activation: .tanh)
        let sum = Sum("sum", columns: 3, bias: true)
        let xv = graph.input("x", x, trainable: true)
        let av = try graph.add("a", a, [xv])
        let bv = try graph.add("b", bLayer, [xv])
        let out = try graph.add("sum", sum, [av, bv])
        graph.initialize(seed: 11)
        let bias = try #require(sum.bias)
        r.fill(bias.value)  // nonzero, to check its gradient
        #expect(graph.parameters.map(\.name) == ["a.weight", "a.bias", "b.weight", "b.bias", "sum.bias"])
        let pass = Pass(training: true, step: 1, seed: 7)
        let weights = r.values(b * 3)
        let dy = Tensor(rows: b, columns: 3, values: weights)

        graph.forward(rows: b, pass)
        let y = graph.tensor(out).values
        for p in graph.parameters { p.gradient.data.update(repeating: 12345, count: p.gradient.count) }
        graph.backward([(out, dy)], pass)
        let gx = GC.doubles(graph.gradient(of: xv))
        let parameterAnalytic = graph.parameters.map { GC.doubles($0.gradient) }

        // The forward is A(x) + B(x) + bias, bit for bit, and the gradient of x is A's plus B's
        // (each from dy, as Sum passes it on), summed in consumer order.
        let ha = LayerHarness(a, inputColumns: [4]), hb = LayerHarness(bLayer, inputColumns: [4])
        let ya = ha.forward([x]).values, yb = hb.forward([x]).values
        let naive: [Float] = (0..<(b * 3)).map { ya[$0] + yb[$0] + bias.value.data[$0 % 3] }
        #expect(y.map(\.bitPattern) == naive.map(\.bitPattern), "diamond forward")
        ha.backward(dy)
        hb.backward(dy)
        let da = ha.inputGradients[0].values, db = hb.inputGradients[0].values
        #expect(gx == (0..<(b * 4)).map { Double(da[$0] + db[$0]) }, "x's gradient is the sum of both branches'")

        // 1. Central differences of the whole graph at 1e-2. The rounding bound of an output
        // adds A's and B's (`linear64`) and Sum's two additions, u·|y_A + y_B| + u·|y|; the
        // truncation is B's (tanh, `linearThird`; A and Sum are linear).
        let step: Float = 1e-2
        let values = [GC.doubles(x)] + graph.parameters.map { GC.doubles($0.value) }
        let reference = { (t: [[Double]]) -> (output: [Double], bound: [Double]) in
            let (ya, ea) = Self.linear64([t[0], t[1], t[2]], inputs: 4, outputs: 3, .identity)
            let (yb, eb) = Self.linear64([t[0], t[3], t[4]], inputs: 4, outputs: 3, .tanh)
            let output = (0..<ya.count).map { ya[$0] + yb[$0] + t[5][$0 % 3] }
            let bound = (0..<ya.count).map { ea[$0] + eb[$0] + unit * (2 * abs(ya[$0]) + 2 * abs(yb[$0]) + abs(t[5][$0 % 3])) }
            return (output, bound)
        }
        let thirdB = Self.linearThird([values[0], values[3], values[4]], inputs: 4, outputs: 3, .tanh, weights, step: step)
        let third: [[Double]?] = [thirdB[0], nil, nil, thirdB[1], thirdB[2], nil]
        let floor = { (t: Int, a: [Double]) in
            max(Self.floor(a), Self.roundingFloor(values, t, step: step, weights: weights, reference: reference) { third[t]?[$0] ?? 0 })
        }
        let loss = { () -> Double in
            graph.forward(rows: b, pass)
            return GC.weightedSum(graph.tensor(out), weights)
        }
        GC.check("graph diamond x", analytic: gx, numeric: GC.centralDifferences(of: x, step: step, loss: loss), floor: floor(0, gx))
        for (p, (parameter, analytic)) in zip(graph.parameters, parameterAnalytic).enumerated() {
            GC.check("graph diamond \(parameter.name)", analytic: analytic,
                     numeric: GC.centralDifferences(of: parameter.value, step: step, loss: loss), floor: floor(1 + p, analytic))
        }

        // 2. The float64 graph's central differences, per coordinate.
        Self.checkFloat64("graph diamond", names: ["x"] + graph.parameters.map(\.name), analytic: [gx] + parameterAnalytic,
                          tensors: values) { t in
            zip(reference(t).output, weights).reduce(0.0) { $0 + $1.0 * Double($1.1) }
        }
    }

    /// A value fed to one layer twice: Product(x, x) = x², whose gradient 2·x·dy is the sum of
    /// the two edges' x·dy (exact: doubling rounds nothing); through two batch sizes.
    @Test func graphValueFedTwice() throws {
        var r = GC.Random(seed: 0x2F)
        let b = 5
        let x = r.tensor(b, 4)
        let graph = Graph()
        let xv = graph.input("x", x, trainable: true)
        let out = try graph.add("square", Product(), [xv, xv])
        let pass = Pass(training: false)
        let dy = r.tensor(b, 4)
        for rows in [b, 2] {
            x.resize(rows: rows)
            dy.resize(rows: rows)
            graph.forward(rows: rows, pass)
            #expect(graph.tensor(out).values == x.values.map { $0 * $0 })
            graph.backward([(out, dy)], pass)
            let g = graph.gradient(of: xv).values
            let expected = (0..<(rows * 4)).map { 2 * x.data[$0] * dy.data[$0] }
            #expect(g.map(\.bitPattern) == expected.map(\.bitPattern), "rows \(rows): gradient \(g) vs 2·x·dy \(expected)")
        }
    }

    /// A branch that does not reach the seeded output: its parameters' gradients are zero after
    /// backward (garbage before), its values' gradients are zero, and the shared input's
    /// gradient is the live branch's alone.
    @Test func graphDeadBranch() throws {
        var r = GC.Random(seed: 0xDEAD)
        let b = 4
        let x = r.tensor(b, 4)
        let graph = Graph()
        let live = Linear("live", inputs: 4, outputs: 2)
        let dead = Linear("dead", inputs: 4, outputs: 3, activation: .relu)
        let deader = Linear("deader", inputs: 3, outputs: 1)
        let xv = graph.input("x", x, trainable: true)
        let lv = try graph.add("live", live, [xv])
        let dv = try graph.add("dead", dead, [xv])
        let ddv = try graph.add("deader", deader, [dv])
        graph.initialize(seed: 12)
        let pass = Pass(training: true, step: 1, seed: 7)
        let dy = r.tensor(b, 2)

        graph.forward(rows: b, pass)
        for p in graph.parameters { p.gradient.data.update(repeating: 12345, count: p.gradient.count) }
        graph.backward([(lv, dy)], pass)
        for p in dead.parameters + deader.parameters {
            #expect(p.gradient.values.allSatisfy { $0 == 0 }, "\(p.name) gradient after backward: \(p.gradient.values)")
        }
        for v in [dv, ddv] {
            let g = graph.gradient(of: v)
            #expect(g.rows == b && g.values.allSatisfy { $0 == 0 }, "gradient of a value nothing downstream used")
        }
        #expect(live.parameters.allSatisfy { p in !p.gradient.values.contains(12345) }, "the live branch's gradients are written")
        let h = LayerHarness(live, inputColumns: [4])
        h.forward([x])
        h.backward(dy)
        #expect(graph.gradient(of: xv).values == h.inputGradients[0].values, "x's gradient is the live branch's alone")
    }

    /// Shapes that do not fit throw `GraphError` naming the layer (no trap); the graph stays
    /// usable.
    @Test func graphShapeErrors() throws {
        let graph = Graph()
        let x = Tensor(rows: 2, columns: 4, values: (0..<8).map(Float.init))
        let v4 = graph.input("x", x, trainable: false)
        let v3 = graph.input("x3", Tensor(rows: 2, columns: 3, values: [Float](repeating: 1, count: 6)), trainable: false)
        let misfits: [(String, any Layer, [Graph.Value])] = [
            ("linear", Linear("linear", inputs: 3, outputs: 2), [v4]),
            ("linear two inputs", Linear("linear2", inputs: 4, outputs: 2), [v4, v4]),
            ("sum", Sum("sum", columns: 4, bias: false), [v4, v3]),
            ("product", Product(), [v4, v3]),
            ("product one input", Product(), [v4]),
            ("rowdot", RowDot(), [v3, v4]),
            ("concat of nothing", Concat(), []),
            ("fm", FactorizationMachine(fields: 3, dimension: 4), [v4, v4]),
            ("fm width", FactorizationMachine(fields: 2, dimension: 4), [v4, v3]),
            ("cross", CrossNetwork("cross", columns: 3, layers: 2), [v4]),
            ("mlp", MLP("mlp", sizes: [3, 2]), [v4]),
            ("dropout", Dropout(rate: 0.5), [v4, v4]),
        ]
        for (name, layer, inputs) in misfits {
            #expect(throws: GraphError.self, "\(name)") { _ = try graph.add(name, layer, inputs) }
            do {
                _ = try graph.add(name, layer, inputs)
            } catch {
                #expect(error.description.contains(name), "the error names the layer: \(error)")
            }
        }
        // Nothing was added: a fitting layer still goes in and the graph runs.
        let out = try graph.add("fits", Concat(), [v4, v3])
        #expect(out.columns == 7)
        graph.forward(rows: 2, Pass(training: false))
        #expect(graph.tensor(out).values == [0, 1, 2, 3, 1, 1, 1, 4, 5, 6, 7, 1, 1, 1])
    }

    /// Implicit feedback's targets come from the groups: the first row of each group 1, the
    /// others 0, the same bits as an explicit label column holding them.
    @Test func groupLabelsAreThePositiveThenItsNegatives() {
        let z = Tensor(rows: 6, columns: 1, values: [0.3, -1.2, 2.0, 0.7, 0.1, -0.4])
        let explicit: [Float] = [1, 0, 0, 1, 0, 0]
        for loss in [Loss.binaryCrossEntropy, .meanSquaredError] {
            let a = Tensor(rows: 0, columns: 1), b = Tensor(rows: 0, columns: 1)
            let fromGroups = loss.evaluate(z, labels: .groups, groupSize: 3, gradient: a)
            let fromColumn = explicit.withUnsafeBufferPointer { loss.evaluate(z, labels: .column($0.baseAddress!, stride: 1), gradient: b) }
            #expect(fromGroups.bitPattern == fromColumn.bitPattern, "\(loss)")
            #expect(a.values.map(\.bitPattern) == b.values.map(\.bitPattern), "\(loss) gradient")
        }
    }
}
