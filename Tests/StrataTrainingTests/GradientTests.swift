// Finite-difference gradient checks for every operation and layer of StrataNN and for DLRM
// end to end, including the interaction and the store-backed embedding with duplicate keys
// in a batch; forwards against float64; the matrix product they run on. The dense
// optimizers and the parameter archive are in GradientTests+DenseState.swift, the helpers in
// GradientCheckSupport.swift.
//
// Method. Each check builds a scalar loss L = Σ output ⊙ R for a fixed random R (so
// dL/doutput = R and `backward(R)` is the analytic gradient), accumulated in Double, and
// compares the analytic gradient with central differences (L(x + h) − L(x − h)) / (x₊ − x₋)
// per coordinate, x₊ and x₋ being the values actually set after rounding. The criterion is
// the issue's: relative error |a − n| / max(|a| + |n|, floor) under 1e-3 (GradientCheck),
// per coordinate. Every check prints its worst error ("gradient check …" lines).
//
// Steps. Linear, the interaction, the embedding's pooling and dropout are linear in any
// single coordinate of their inputs and parameters (the interaction has no self-products),
// so the central difference has no truncation error at any step; these use a large step
// (0.25), which makes float32 rounding noise in L, about 2⁻²⁴·Σ|out·R| / step, negligible.
// The smooth nonlinear checks (activations, MLP, losses, DLRM) use steps of 1e-2 to 2e-2,
// where the truncation error h²·f‴/6 is far below 1e-3 of f′ for these functions at the
// inputs used. ReLU inputs are kept away from 0 by more than the step, and in compositions
// (MLP, DLRM) a step that flips any ReLU's input sign is detected and retried smaller.
//
// Floors. By default 1e-3 of the largest gradient of the tensor checked, and at least 1e-3
// (R, inputs and weights are O(1)): below it a coordinate must agree to 1e-6 of that scale
// in absolute terms, far tighter than any real bug (a missing term, a wrong scale, a
// dropped duplicate) would need. In the compositions (MLP, DLRM) the float32 noise of L
// over a step near 1e-2 is larger than that, so their float32 differences use a floor set
// by that noise (stated at each), and they are also compared, per coordinate at 1e-3, with
// central differences of a float64 reimplementation, which has no visible noise.
//
// BLAS runs on one thread (`Parallel.threads = 1`): a product then sums in one fixed order, so
// rows of the output that a perturbation does not touch come out bit for bit the same and
// cancel exactly in L(x + h) − L(x − h).
import Testing
import StrataNN
import StrataModels
import StrataStore
import StrataTraining
#if canImport(Glibc)
import Glibc
#endif

private typealias GC = GradientCheck

@Suite struct GradientTests {
    init() { Parallel.threads = 1 }

    /// Floor for a tensor of gradients: 1e-3 of its scale, and at least `minimum`.
    static func floor(_ v: [Double], minimum: Double = 1e-3) -> Double { max(minimum, 1e-3 * GC.scale(v)) }

    // MARK: Activation

    @Test(arguments: Activation.allCases)
    func activation(_ f: Activation) {
        var r = GC.Random(seed: 0xAC71 &+ UInt64(Activation.allCases.firstIndex(of: f)!))
        let n = 64
        // |x| in [0.05, 2.5]: away from ReLU's kink by 5 steps, and where sigmoid′ and tanh′
        // are at least 0.07 and 0.027, so one float32 ulp of y is < 1.1e-4 of the difference.
        var x = (0..<n).map { _ in r.awayFromZero(0.05, 2.5) }
        let weights = r.values(n)

        // Forward against float64.
        var y = [Float](repeating: .nan, count: n)
        f.forward(x, &y, count: n)
        let reference: [Double] = x.map { v in
            let d = Double(v)
            switch f {
            case .identity: return d
            case .relu: return max(d, 0)
            case .sigmoid: return 1 / (1 + exp(-d))
            case .tanh: return tanh(d)
            }
        }
        // A few ulps of float32 (expf, tanhf and the division are each within ~1 ulp).
        GC.check("activation \(f) forward", actual: y.map(Double.init), reference: reference, floor: 1e-30, tolerance: 1e-6)
        // In place gives the same values.
        var inPlace = x
        inPlace.withUnsafeMutableBufferPointer { p in f.forward(p.baseAddress!, p.baseAddress!, count: n) }
        #expect(inPlace == y, "\(f) forward in place")

        // Backward from the output, against central differences.
        var dx = [Float](repeating: .nan, count: n)
        f.backward(output: y, weights, &dx, count: n)
        var again = weights
        again.withUnsafeMutableBufferPointer { p in f.backward(output: y, p.baseAddress!, p.baseAddress!, count: n) }
        #expect(again == dx, "\(f) backward in place")

        var scratch = [Float](repeating: 0, count: n)
        let numeric = GC.centralDifferences(
            count: n, step: 1e-2, read: { x[$0] }, write: { x[$0] = $1; return $1 }
        ) {
            f.forward(x, &scratch, count: n)
            var s = 0.0
            for i in 0..<n { s += Double(scratch[i]) * Double(weights[i]) }
            return s
        }
        let analytic = dx.map(Double.init)
        GC.check("activation \(f) backward", analytic: analytic, numeric: numeric, floor: Self.floor(analytic))
    }

    /// The logistic function stays finite and exact at the extremes, where 1 / (1 + e^-x)
    /// would overflow e^-x for large negative x; sigmoid′ and tanh′ from the output are 0 there.
    @Test func activationExtremes() {
        let xs: [Float] = [-Float.greatestFiniteMagnitude, -1e4, -100, -88, -30, 30, 88, 100, 1e4, .greatestFiniteMagnitude]
        for x in xs {
            let s = logistic(x)
            let reference = 1 / (1 + exp(-Double(x)))
            #expect(s.isFinite && s >= 0 && s <= 1, "logistic(\(x)) = \(s)")
            #expect(abs(Double(s) - reference) <= 1e-7 * max(reference, 1e-30) || abs(Double(s) - reference) < 1e-44,
                    "logistic(\(x)) = \(s), float64 \(reference)")
        }
        for f in [Activation.sigmoid, .tanh] {
            var y = [Float](repeating: .nan, count: xs.count)
            f.forward(xs, &y, count: xs.count)
            #expect(y.allSatisfy { $0.isFinite }, "\(f) at the extremes: \(y)")
            var dx = [Float](repeating: .nan, count: xs.count)
            f.backward(output: y, [Float](repeating: 1, count: xs.count), &dx, count: xs.count)
            #expect(dx.allSatisfy { $0.isFinite && abs($0) < 1e-6 }, "\(f)′ at the extremes: \(dx)")
        }
    }

    // MARK: Matrix product

    struct GemmCase: Sendable, CustomStringConvertible {
        var transA: Bool, transB: Bool
        var m: Int, n: Int, k: Int
        var alpha: Float, beta: Float
        var description: String { "\(transA ? "Aᵀ" : "A")·\(transB ? "Bᵀ" : "B") \(m)×\(n)×\(k) α \(alpha) β \(beta)" }
    }

    /// Every transpose combination, shapes on both sides of the kernel's 14-row and 32-column
    /// panels and its 256-deep blocks, and α, β as the layers use them (1, 0 and 1) and not.
    static let gemmCases: [GemmCase] = [(false, false), (false, true), (true, false), (true, true)].flatMap { t in
        [(1, 1, 1, Float(1), Float(0)), (13, 31, 5, 1, 0), (15, 33, 7, 1, 1), (29, 64, 257, 1, 0), (14, 32, 300, 0.5, -2),
         (3, 70, 1, 1, 1), (70, 45, 40, 1, 0), (130, 33, 300, 1, 1)].map { GemmCase(transA: t.0, transB: t.1, m: $0.0, n: $0.1, k: $0.2, alpha: $0.3, beta: $0.4) }
    }

    /// BLAS.gemm, which every Linear forward and backward runs on, against float64, with row
    /// strides wider than the rows. With β = 0 the old C is not read (it holds NaN here).
    @Test(arguments: gemmCases)
    func gemm(_ c: GemmCase) {
        var r = GC.Random(seed: UInt64(c.m * 10_000 + c.n * 100 + c.k) &+ (c.transA ? 7 : 0) &+ (c.transB ? 13 : 0))
        // Stored shapes: A is m×k (k×m when transposed), B k×n (n×k); 3 columns of padding.
        let (aRows, aColumns) = c.transA ? (c.k, c.m) : (c.m, c.k)
        let (bRows, bColumns) = c.transB ? (c.n, c.k) : (c.k, c.n)
        let lda = aColumns + 3, ldb = bColumns + 3, ldc = c.n + 3
        let a = r.values(aRows * lda), b = r.values(bRows * ldb)
        var out = c.beta == 0 ? [Float](repeating: .nan, count: c.m * ldc) : r.values(c.m * ldc)
        let before = out
        BLAS.gemm(c.transA, c.transB, m: c.m, n: c.n, k: c.k, alpha: c.alpha, a, lda: lda, b, ldb: ldb,
                  beta: c.beta, &out, ldc: ldc)
        var worst = 0.0
        for i in 0..<c.m {
            for j in 0..<ldc {
                guard j < c.n else {
                    #expect(out[i * ldc + j].bitPattern == before[i * ldc + j].bitPattern, "\(c): padding [\(i), \(j)] written")
                    continue
                }
                var exact = 0.0, magnitude = 0.0
                for kk in 0..<c.k {
                    let x = Double(c.transA ? a[kk * lda + i] : a[i * lda + kk])
                    let y = Double(c.transB ? b[j * ldb + kk] : b[kk * ldb + j])
                    exact += x * y
                    magnitude += abs(x * y)
                }
                exact *= Double(c.alpha)
                magnitude *= abs(Double(c.alpha))
                if c.beta != 0 {
                    exact += Double(c.beta) * Double(before[i * ldc + j])
                    magnitude += abs(Double(c.beta) * Double(before[i * ldc + j]))
                }
                // A float32 sum of k + 1 terms: within (k + 2)·2⁻²⁴·Σ|terms| (×2 margin).
                let bound = Double(c.k + 2) * 0x1p-24 * 2 * magnitude
                let e = abs(Double(out[i * ldc + j]) - exact)
                worst = max(worst, e / max(magnitude, 1e-30))
                #expect(e <= bound, "\(c) [\(i), \(j)]: \(out[i * ldc + j]) vs float64 \(exact)")
            }
        }
        print("reference check gemm \(c): worst error \(worst) of Σ|terms| (own kernel \(BLAS.usesOwnKernel))")
    }

    /// Products split over threads (in 14-row panels) are the same bits as on one thread.
    @Test(arguments: gemmCases.filter { $0.m >= 64 })
    func gemmThreadsDoNotChangeBits(_ c: GemmCase) {
        var r = GC.Random(seed: UInt64(c.m * 31 + c.n))
        let (aRows, aColumns) = c.transA ? (c.k, c.m) : (c.m, c.k)
        let (bRows, bColumns) = c.transB ? (c.n, c.k) : (c.k, c.n)
        let a = r.values(aRows * aColumns), b = r.values(bRows * bColumns), start = r.values(c.m * c.n)
        var results: [[UInt32]] = []
        for threads in [1, 2, 3] {
            var out = start
            BLAS.gemm(c.transA, c.transB, m: c.m, n: c.n, k: c.k, alpha: c.alpha, a, lda: aColumns, b, ldb: bColumns,
                      beta: c.beta, &out, ldc: c.n, threads: threads)
            results.append(out.map(\.bitPattern))
        }
        #expect(results[1] == results[0] && results[2] == results[0], "\(c): threads change the product")
    }

    // MARK: Linear

    struct LinearCase: Sendable, CustomStringConvertible {
        var batches: [Int]
        var inputs: Int
        var outputs: Int
        var needInputGradient: Bool
        var description: String { "batches \(batches) \(inputs)→\(outputs) inputGradient \(needInputGradient)" }
    }

    static let linearCases = [
        LinearCase(batches: [1], inputs: 5, outputs: 3, needInputGradient: true),
        LinearCase(batches: [4, 9, 2], inputs: 6, outputs: 7, needInputGradient: true),
        LinearCase(batches: [3], inputs: 16, outputs: 1, needInputGradient: true),
        LinearCase(batches: [1], inputs: 4, outputs: 2, needInputGradient: false),
        LinearCase(batches: [6, 3], inputs: 8, outputs: 5, needInputGradient: false),
        // Few inputs, many outputs: the weight gradient is computed transposed.
        LinearCase(batches: [5, 70], inputs: 3, outputs: 40, needInputGradient: true),
    ]

    @Test(arguments: linearCases)
    func linear(_ c: LinearCase) {
        var r = GC.Random(seed: UInt64(c.inputs * 100 + c.outputs) &* 7919 &+ (c.needInputGradient ? 1 : 0))
        // One layer through every batch size: its buffers grow and shrink between them.
        let layer = Linear("check", inputs: c.inputs, outputs: c.outputs)
        let harness = LayerHarness(layer, inputColumns: [c.inputs])
        r.fill(layer.weight.value)
        r.fill(layer.bias.value)
        for b in c.batches {
            let x = r.tensor(b, c.inputs)
            let weights = r.values(b * c.outputs)
            let dy = Tensor(rows: b, columns: c.outputs, values: weights)

            // Forward against float64; a float32 dot product of k terms is within about
            // k·2⁻²⁴·Σ|terms| of the exact one.
            let y = harness.forward([x])
            #expect(y.rows == b && y.columns == c.outputs)
            for s in 0..<b {
                for j in 0..<c.outputs {
                    var exact = Double(layer.bias.value[0, j]), magnitude = abs(exact)
                    for k in 0..<c.inputs {
                        let t = Double(x[s, k]) * Double(layer.weight.value[j, k])
                        exact += t
                        magnitude += abs(t)
                    }
                    let bound = Double(c.inputs + 2) * 0x1p-24 * 2 * magnitude
                    #expect(abs(Double(y[s, j]) - exact) <= bound, "linear forward [\(s), \(j)]: \(y[s, j]) vs \(exact)")
                }
            }

            // Garbage in the gradients first: backward must overwrite them, not add to them.
            layer.weight.gradient.data.update(repeating: 12345, count: layer.weight.gradient.count)
            layer.bias.gradient.data.update(repeating: -777, count: layer.bias.gradient.count)
            harness.backward(dy, need: [c.needInputGradient])
            let dW = GC.doubles(layer.weight.gradient), db = GC.doubles(layer.bias.gradient)
            let dx = c.needInputGradient ? GC.doubles(harness.inputGradients[0]) : []
            if c.needInputGradient { #expect(harness.inputGradients[0].rows == b) }

            let loss = { GC.weightedSum(harness.forward([x]), weights) }
            let name = "linear \(c.inputs)→\(c.outputs) batch \(b)"
            GC.check("\(name) weight", analytic: dW,
                     numeric: GC.centralDifferences(of: layer.weight.value, step: 0.25, loss: loss), floor: Self.floor(dW))
            GC.check("\(name) bias", analytic: db,
                     numeric: GC.centralDifferences(of: layer.bias.value, step: 0.25, loss: loss), floor: Self.floor(db))
            if c.needInputGradient {
                GC.check("\(name) input", analytic: dx,
                         numeric: GC.centralDifferences(of: x, step: 0.25, loss: loss), floor: Self.floor(dx))
            }
        }
    }

    // MARK: MLP

    struct MLPCase: Sendable, CustomStringConvertible {
        var sizes: [Int]
        var activations: [Activation]
        var batch: Int
        var needInputGradient: Bool
        var description: String { "\(sizes) \(activations) batch \(batch) inputGradient \(needInputGradient)" }
    }

    static let mlpCases = [
        MLPCase(sizes: [5, 8, 6, 4, 3], activations: [.tanh, .relu, .sigmoid, .identity], batch: 4, needInputGradient: true),
        MLPCase(sizes: [3, 7, 5, 2], activations: [.relu, .relu, .relu], batch: 1, needInputGradient: false),
        MLPCase(sizes: [4, 6, 1], activations: [.sigmoid, .tanh], batch: 5, needInputGradient: false),
    ]

    @Test(arguments: mlpCases)
    func mlp(_ c: MLPCase) {
        var r = GC.Random(seed: UInt64(c.sizes.reduce(0) { $0 * 31 + $1 }) &+ UInt64(c.batch))
        let mlp = MLP("check", sizes: c.sizes, activations: c.activations)
        let harness = LayerHarness(mlp, inputColumns: [c.sizes[0]])
        var w = WeightInitializer(seed: 99)
        mlp.initialize(&w)
        let x = r.tensor(c.batch, c.sizes[0])
        let weights = r.values(c.batch * c.sizes.last!)
        let dy = Tensor(rows: c.batch, columns: c.sizes.last!, values: weights)
        let name = "mlp \(c.sizes) \(c.activations.map(\.rawValue))"

        // Forward against float64: outputs are O(1), so an absolute 1e-5 (floor 1).
        var reference = ReferenceMLP(mlp)
        let input64 = (0..<c.batch).map { s in (0..<c.sizes[0]).map { Double(x[s, $0]) } }
        var unused: [Bool] = []
        let y = harness.forward([x])
        GC.check("\(name) forward", actual: GC.doubles(y), reference: reference.forward(input64, signs: &unused).flatMap { $0 },
                 floor: 1, tolerance: 1e-5)

        // Garbage in the gradients first: backward overwrites them.
        for p in mlp.parameters { p.gradient.data.update(repeating: 999, count: p.gradient.count) }
        harness.backward(dy, need: [c.needInputGradient])
        let dx = c.needInputGradient ? harness.inputGradients[0] : nil
        let analytic = mlp.parameters.map { GC.doubles($0.gradient) }
        let inputAnalytic = dx.map(GC.doubles)

        // 1. Central differences of the float32 MLP itself. The steps (1e-2) are near the
        // optimum for float32: L's rounding noise, about 2⁻²⁴·Σ|out·R| per evaluation and a
        // few times that through the layers (×8 here), divided by the step, is larger than the
        // truncation error h²·f‴/6. That noise, over the tolerance, is the floor: these
        // gradients (O(0.01–0.1) at the first layers) are then compared to about 1e-4 absolute.
        let magnitude = (0..<y.count).reduce(0.0) { $0 + abs(Double(y.data[$1]) * Double(weights[$1])) }
        let step: Float = 1e-2
        let noiseFloor = 8 * 0x1p-24 * magnitude / Double(step) / GC.tolerance
        let pattern = {
            mlp.layers.indices.filter { c.activations[$0] == .relu }.flatMap { i in
                (i == mlp.layers.count - 1 ? harness.output : mlp.hiddenOutput(i)).values.map { $0 > 0 }
            }
        }
        let loss = { GC.weightedSum(harness.forward([x]), weights) }
        for (p, a) in zip(mlp.parameters, analytic) {
            GC.check("\(name) \(p.name)", analytic: a,
                     numeric: GC.centralDifferences(of: p.value, step: step, pattern: pattern, loss: loss),
                     floor: max(Self.floor(a), noiseFloor), maximumSkipped: p.value.count / 10)
        }
        if let inputAnalytic {
            GC.check("\(name) input", analytic: inputAnalytic,
                     numeric: GC.centralDifferences(of: x, step: step, pattern: pattern, loss: loss),
                     floor: max(Self.floor(inputAnalytic), noiseFloor), maximumSkipped: x.count / 10)
        }

        // 2. Central differences of the float64 reimplementation (checked equal to the
        // float32 forward above), at a step of 1e-6: truncation ~1e-12 and rounding ~1e-10,
        // so the comparison is per coordinate at 1e-3, floored at 1e-3 of the tensor's largest
        // gradient (the float32 backward is only good to ~1e-6 of that).
        var input = input64
        let loss64 = {
            var signs: [Bool] = []
            let out = reference.forward(input, signs: &signs).flatMap { $0 }
            return zip(out, weights).reduce(0.0) { $0 + $1.0 * Double($1.1) }
        }
        let pattern64 = {
            var signs: [Bool] = []
            _ = reference.forward(input, signs: &signs)
            return signs
        }
        for (p, a) in analytic.enumerated() {
            let numeric = GC.centralDifferences64(
                count: a.count, step: 1e-6, read: { reference[p, $0] }, write: { reference[p, $0] = $1 },
                pattern: pattern64, loss: loss64)
            GC.check("\(name) \(mlp.parameters[p].name) vs float64", analytic: a, numeric: numeric,
                     floor: 1e-3 * GC.scale(numeric.gradient))
        }
        if let inputAnalytic {
            let d = c.sizes[0]
            let numeric = GC.centralDifferences64(
                count: inputAnalytic.count, step: 1e-6, read: { input[$0 / d][$0 % d] }, write: { input[$0 / d][$0 % d] = $1 },
                pattern: pattern64, loss: loss64)
            GC.check("\(name) input vs float64", analytic: inputAnalytic, numeric: numeric,
                     floor: 1e-3 * GC.scale(numeric.gradient))
        }
    }

    // MARK: DotInteraction

    struct InteractionCase: Sendable, CustomStringConvertible {
        var vectors: Int
        var dimension: Int
        var description: String { "\(vectors) vectors of \(dimension)" }
    }

    static let interactionCases = [
        InteractionCase(vectors: 2, dimension: 1), InteractionCase(vectors: 3, dimension: 3),
        InteractionCase(vectors: 4, dimension: 16), InteractionCase(vectors: 6, dimension: 1),
        InteractionCase(vectors: 5, dimension: 3), InteractionCase(vectors: 3, dimension: 16),
    ]

    @Test(arguments: interactionCases)
    func dotInteraction(_ c: InteractionCase) {
        var r = GC.Random(seed: UInt64(c.vectors * 1000 + c.dimension))
        let layer = DotInteraction(vectors: c.vectors, dimension: c.dimension)
        let harness = LayerHarness(layer, inputColumns: Array(repeating: c.dimension, count: c.vectors))
        let v = c.vectors, d = c.dimension, pairs = v * (v - 1) / 2
        #expect(layer.pairs == pairs && layer.outputColumns == d + pairs)
        // Batch sizes that grow and then shrink, through one layer; 37 and 16 cross and fill the
        // kernel's 16-sample blocks.
        for b in [1, 5, 37, 16, 3] {
            let inputs = (0..<v).map { _ in r.tensor(b, d) }
            let weights = r.values(b * (d + pairs))
            let y = harness.forward(inputs)
            #expect(y.rows == b && y.columns == d + pairs)

            // Naive double loop in float64: the bottom vector, then <z_i, z_j> for j < i, i
            // ascending (facebookresearch/dlrm, self-interaction off).
            for s in 0..<b {
                for k in 0..<d { #expect(y[s, k] == inputs[0][s, k], "bottom pass-through [\(s), \(k)]") }
                var column = d
                for i in 0..<v {
                    for j in 0..<i {
                        var exact = 0.0, magnitude = 0.0
                        for k in 0..<d {
                            let t = Double(inputs[i][s, k]) * Double(inputs[j][s, k])
                            exact += t
                            magnitude += abs(t)
                        }
                        // A float32 sum of d products: within about d·2⁻²⁴·Σ|products|.
                        let bound = Double(d + 1) * 0x1p-24 * 2 * magnitude
                        #expect(abs(Double(y[s, column]) - exact) <= bound,
                                "\(c) batch \(b) sample \(s) pair (\(i), \(j)) at column \(column): \(y[s, column]) vs \(exact)")
                        column += 1
                    }
                }
                #expect(column == d + pairs)
            }

            harness.backward(Tensor(rows: b, columns: d + pairs, values: weights))
            let analytic = harness.inputGradients.map(GC.doubles)
            #expect(harness.inputGradients.count == v && harness.inputGradients.allSatisfy { $0.rows == b && $0.columns == d })
            let loss = { GC.weightedSum(harness.forward(inputs), weights) }
            for (i, t) in inputs.enumerated() {
                GC.check("interaction \(c) batch \(b) input \(i == 0 ? "bottom" : "embedding \(i)")",
                         analytic: analytic[i], numeric: GC.centralDifferences(of: t, step: 0.25, loss: loss),
                         floor: Self.floor(analytic[i]))
            }
        }
    }

    // MARK: Loss

    static func bce64(_ x: Float, _ y: Float) -> Double {
        let x = Double(x), y = Double(y)
        return max(x, 0) - x * y + log1p(exp(-abs(x)))
    }

    static func sigmoid64(_ x: Float) -> Double {
        let x = Double(x)
        return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x))
    }

    @Test func binaryCrossEntropy() {
        // Ordinary logits and large ones, where e^x or e^-x overflows float32 (|x| > 88.7)
        // or where 1 − σ(x) is lost, with hard and soft targets.
        let logits: [Float] = [-2.3, -0.7, 0.05, 1.4, 3.1, -20, 20, -95, 95, -1000, 1000, -3e4, 3e4, 17, -40]
        let targets: [Float] = [1, 0, 1, 0.3, 0, 1, 0, 0.25, 1, 1, 0, 0.5, 1, 0.9, 0]
        let n = logits.count
        let z = Tensor(rows: n, columns: 1, values: logits)
        let g = Tensor(rows: 0, columns: 1)
        let mean = targets.withUnsafeBufferPointer { Loss.binaryCrossEntropy.evaluate(z, labels: .column($0.baseAddress!, stride: 1), gradient: g) }

        // Value and gradient against float64, sample by sample and for the batch mean. The
        // float32 terms are a handful of roundings of quantities no larger than |x|, so the
        // value is within 1e-6 of max(|term|, 1); the gradient (σ − y)/n within 1e-6 / n.
        var reference = 0.0
        for i in 0..<n {
            let one = Tensor(rows: 1, columns: 1, values: [logits[i]])
            let gi = Tensor(rows: 0, columns: 1)
            let v = [targets[i]].withUnsafeBufferPointer { Loss.binaryCrossEntropy.evaluate(one, labels: .column($0.baseAddress!, stride: 1), gradient: gi) }
            let exact = Self.bce64(logits[i], targets[i])
            reference += exact
            #expect(v.isFinite && abs(v - exact) <= 1e-6 * max(abs(exact), 1), "bce(\(logits[i]), \(targets[i])) = \(v), float64 \(exact)")
            let exactGradient = Self.sigmoid64(logits[i]) - Double(targets[i])
            #expect(gi[0, 0].isFinite && abs(Double(gi[0, 0]) - exactGradient) <= 1e-6,
                    "bce′(\(logits[i]), \(targets[i])) = \(gi[0, 0]), float64 \(exactGradient)")
            #expect(abs(Double(g[i, 0]) - exactGradient / Double(n)) <= 1e-6 / Double(n), "batch gradient [\(i)]")
        }
        reference /= Double(n)
        print("reference check bce mean: \(mean) vs float64 \(reference), relative \(abs(mean - reference) / reference)")
        #expect(abs(mean - reference) <= 1e-6 * reference, "bce mean \(mean) vs float64 \(reference)")

        // Central differences of the mean loss (the function itself, in float32 terms). The
        // step grows with |x| so that x ± h is representable; the loss is smooth and its
        // third derivative is at most 0.1, so truncation is below 2e-6 of its slope.
        var xs = logits
        let numeric = GC.centralDifferences(
            count: n, step: 1, read: { xs[$0] },
            write: { i, v in
                // `step` 1 is scaled here: h = 1e-2 · max(1, |x₀|).
                let x0 = logits[i]
                xs[i] = v == x0 ? x0 : x0 + (v - x0) * 1e-2 * max(1, abs(x0))
                return xs[i]
            }
        ) {
            let t = Tensor(rows: n, columns: 1, values: xs)
            return targets.withUnsafeBufferPointer { Loss.binaryCrossEntropy.evaluate(t, labels: .column($0.baseAddress!, stride: 1), gradient: Tensor(rows: 0, columns: 1)) }
        }
        let analytic = GC.doubles(g)
        // The mean's gradients are O(1/n); the float32 terms of the loss (up to 3e4 here)
        // carry 2⁻²⁴ of their size as noise, 1e-4/n at |x| = 3e4 over a step of 300, so the
        // floor is 1e-2/n: near-zero slopes (σ(±95) − y) must agree within 1e-5/n.
        GC.check("bce gradient", analytic: analytic, numeric: numeric, floor: 1e-2 / Double(n))
    }

    @Test func meanSquaredError() {
        var r = GC.Random(seed: 0x5E)
        let n = 9
        let predictions = r.values(n, -3, 3), targets = r.values(n, -3, 3)
        let z = Tensor(rows: n, columns: 1, values: predictions)
        let g = Tensor(rows: 0, columns: 1)
        let value = targets.withUnsafeBufferPointer { Loss.meanSquaredError.evaluate(z, labels: .column($0.baseAddress!, stride: 1), gradient: g) }
        var exact = 0.0
        for i in 0..<n {
            let e = Double(predictions[i]) - Double(targets[i])
            exact += e * e
            #expect(abs(Double(g[i, 0]) - 2 * e / Double(n)) <= 1e-6 * max(abs(2 * e / Double(n)), 1e-3), "mse′ [\(i)]")
        }
        exact /= Double(n)
        #expect(abs(value - exact) <= 1e-6 * exact, "mse \(value) vs float64 \(exact)")

        var xs = predictions
        let numeric = GC.centralDifferences(count: n, step: 1e-2, read: { xs[$0] }, write: { xs[$0] = $1; return $1 }) {
            let t = Tensor(rows: n, columns: 1, values: xs)
            return targets.withUnsafeBufferPointer { Loss.meanSquaredError.evaluate(t, labels: .column($0.baseAddress!, stride: 1), gradient: Tensor(rows: 0, columns: 1)) }
        }
        // Quadratic: the central difference is exact up to rounding; gradients are O(1/n).
        let analytic = GC.doubles(g)
        GC.check("mse gradient", analytic: analytic, numeric: numeric, floor: Self.floor(analytic, minimum: 1e-3 / Double(n)))
    }

    // MARK: TableLookup

    struct EmbeddingCase: Sendable, CustomStringConvertible {
        var name: String
        var keys: [UInt64]
        var bagStarts: [Int]?
        var pooling: TableLookup.Pooling
        var dimension: Int
        var description: String { "\(name) \(pooling) d=\(dimension)" }
    }

    static let embeddingCases = [
        // One key per sample; 7 three times, 3 twice.
        EmbeddingCase(name: "one key per sample", keys: [7, 3, 7, 7, 11, 3, 5], bagStarts: nil, pooling: .sum, dimension: 3),
        EmbeddingCase(name: "one key per sample", keys: [42, 42, 42, 42], bagStarts: nil, pooling: .sum, dimension: 1),
        // Bags {5, 5, 2}, {9}, {}, {2, 5, 8}, {8, 8}, {4}: duplicates inside bags and across.
        EmbeddingCase(name: "bags", keys: [5, 5, 2, 9, 2, 5, 8, 8, 8, 4], bagStarts: [0, 3, 4, 4, 7, 9, 10],
                      pooling: .sum, dimension: 4),
        EmbeddingCase(name: "bags", keys: [5, 5, 2, 9, 2, 5, 8, 8, 8, 4], bagStarts: [0, 3, 4, 4, 7, 9, 10],
                      pooling: .mean, dimension: 4),
        EmbeddingCase(name: "bags", keys: [1, 1, 1, 1, 2, 1], bagStarts: [0, 4, 5, 6], pooling: .mean, dimension: 3),
    ]

    /// Offsets that end right but overshoot in the middle stop with a precondition before any
    /// key past the end is read (the pooling read out of bounds before), as do the tensor's
    /// checked element accesses.
    @Test func badBagOffsetsAndTensorIndicesStopCleanly() async throws {
        let result = try await #require(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let scratch = try ScratchStore("strata-bad-offsets")
            let layer = TableLookup(table: try scratch.table("e", dimension: 2, seed: 1))
            _ = layer.addUse(pooling: .sum)
            let keys: [UInt64] = [1, 2, 3], offsets: [Int32] = [0, 1_000_000, 3]
            try keys.withUnsafeBufferPointer { k in
                try offsets.withUnsafeBufferPointer { o in try layer.forward(training: false) { _ in UseKeys(keys: k, offsets: o) } }
            }
        }
        #if DEBUG  // -O stops on a failed precondition without printing its message
        let said = String(decoding: result.standardErrorContent, as: UTF8.self)
        #expect(said.contains("bag offsets must not decrease: 1000000 then 3"), "\(said.suffix(400))")
        #else
        _ = result
        #endif
        await #expect(processExitsWith: .failure) {
            let t = Tensor(rows: 2, columns: 3)
            _ = t[2, 0]
        }
    }

    @Test(arguments: embeddingCases)
    func tableLookup(_ c: EmbeddingCase) throws {
        let scratch = try ScratchStore("strata-gradient-embedding")
        let table = try scratch.table("e", dimension: c.dimension, seed: 77)
        let layer = TableLookup(table: table)
        _ = layer.addUse(pooling: c.pooling)
        let d = c.dimension
        let starts = c.bagStarts ?? Array(0...c.keys.count)
        let samples = starts.count - 1
        var distinct: [UInt64] = []
        for k in c.keys where !distinct.contains(k) { distinct.append(k) }
        let rows = try StoreRows(table: table, keys: distinct)
        let row = { (k: UInt64) in distinct.firstIndex(of: k)! }
        var r = GC.Random(seed: 0xE3B &+ UInt64(c.keys.count * 10 + d))
        let weights = r.values(samples * d)

        let offsets = c.bagStarts?.map(Int32.init)
        func forward(training: Bool) throws -> Tensor {
            try c.keys.withUnsafeBufferPointer { (k) throws -> Tensor in
                if let offsets {
                    try offsets.withUnsafeBufferPointer { o in try layer.forward(training: training) { _ in UseKeys(keys: k, offsets: o) } }
                } else {
                    try layer.forward(training: training) { _ in UseKeys(keys: k) }
                }
                return layer.outputs[0]
            }
        }

        // Forward: the pooled rows, against float64.
        let y = try forward(training: true)
        #expect(y.rows == samples && y.columns == d)
        for s in 0..<samples {
            let bag = starts[s]..<starts[s + 1]
            let scale = c.pooling == .mean && !bag.isEmpty ? 1 / Double(bag.count) : 1
            for j in 0..<d {
                var exact = 0.0, magnitude = 0.0
                for i in bag {
                    exact += Double(rows.initial[row(c.keys[i]) * d + j])
                    magnitude += abs(Double(rows.initial[row(c.keys[i]) * d + j]))
                }
                exact *= scale
                #expect(abs(Double(y[s, j]) - exact) <= Double(bag.count + 1) * 0x1p-24 * 2 * magnitude * scale,
                        "\(c) output [\(s), \(j)]: \(y[s, j]) vs \(exact)")
            }
        }
        // Evaluation reads the same rows.
        let trainingOutput = y.values
        #expect(try forward(training: false).values == trainingOutput, "peek and lookup pool the same rows")

        // Backward: one SGD step at learning rate 1, so each distinct row moves by −(its
        // gradient). The difference of two float32s is exact in Double; the step rounds the
        // row to float32, within 2⁻²⁴ of max(|row|, |gradient|).
        _ = try forward(training: true)
        let dy = Tensor(rows: samples, columns: d, values: weights)
        try layer.backward { _ in dy }
        let after = try rows.values()
        let analytic = (0..<rows.count).map { Double(rows.initial[$0]) - Double(after[$0]) }

        // The gradient reaching each distinct row is the sum over its occurrences of the
        // sample's output gradient (× 1/bag length for mean), in float64.
        var expected = [Double](repeating: 0, count: rows.count)
        for s in 0..<samples {
            let bag = starts[s]..<starts[s + 1]
            let scale = c.pooling == .mean ? 1 / Double(bag.count) : 1
            for i in bag {
                for j in 0..<d { expected[row(c.keys[i]) * d + j] += Double(weights[s * d + j]) * scale }
            }
        }
        GC.check("embedding \(c) row gradient = Σ per-sample gradients", actual: analytic, reference: expected,
                 floor: 1e-3, tolerance: 1e-5)

        // And numerically: L as a function of each stored row value, the rows set through the
        // store itself (StoreRows: reset by removal, then one SGD step to the perturbed value).
        try rows.reset()
        let numeric = try GC.centralDifferences(count: rows.count, step: 0.25, read: rows.read, write: rows.write) {
            GC.weightedSum(try forward(training: true), weights)
        }
        GC.check("embedding \(c) row gradient", analytic: analytic, numeric: numeric, floor: Self.floor(analytic))
    }

    // MARK: DLRM end to end

    @Test func dlrm() throws {
        let scratch = try ScratchStore("strata-gradient-dlrm")
        var config = DLRM.Configuration()
        (config.embeddingDim, config.bottomMlp, config.topMlp) = (4, [5], [6])
        let tables = try (0..<3).map { try scratch.table("c\($0)", dimension: 4, seed: 100 + UInt64($0), range: 0.5) }
        let schema = ClickSchema(dense: 3, sparse: 3).features
        let model = try Network(spec: ModelSpec(DLRM.self, config), schema: schema, seed: 42) { request in
            tables[Int(request.name.dropFirst())!]
        }
        #expect(model.tables.map(\.name) == ["c0", "c1", "c2"])
        let bottomMLP = model.graph.layer(named: "bottom")!.layer as! MLP, topMLP = model.graph.layer(named: "top")!.layer as! MLP
        let b = 4
        var r = GC.Random(seed: 0xD1)
        let dense = r.tensor(b, 3)
        // Feature after feature; duplicates within every feature's batch.
        let keys: [UInt64] = [1, 2, 1, 1, /**/ 10, 10, 10, 10, /**/ 7, 8, 9, 7]
        let targets: [Float] = [1, 0, 1, 0]
        let batch = Batch(schema: schema)
        batch.set(rows: b, labels: targets, dense: dense.values,
                  keys: (0..<3).map { f in (0..<b).map { [keys[f * b + $0]] } })
        let rowSets = try (0..<3).map { f in
            var distinct: [UInt64] = []
            for k in keys[(f * b)..<((f + 1) * b)] where !distinct.contains(k) { distinct.append(k) }
            return try StoreRows(table: tables[f], keys: distinct)
        }
        let dLogits = Tensor(rows: 0, columns: 1)
        func loss() throws -> Double {
            batch.dense.update(from: dense.data, count: dense.count)
            let logits = try model.forward(batch, training: true, step: 1)
            return targets.withUnsafeBufferPointer { Loss.binaryCrossEntropy.evaluate(logits, labels: .column($0.baseAddress!, stride: 1), gradient: dLogits) }
        }
        let pattern = {
            var signs: [Bool] = []
            for name in ["bottom", "top"] {
                let (layer, output) = model.graph.layer(named: name)!
                let mlp = layer as! MLP
                for i in mlp.layers.indices where mlp.activations[i] == .relu {
                    signs += (i == mlp.layers.count - 1 ? output : mlp.hiddenOutput(i)).values.map { $0 > 0 }
                }
            }
            return signs
        }

        // Analytic: dense gradients in the parameters, each table's rows moved by −gradient.
        let value = try loss()
        #expect(value.isFinite)
        try model.backward(dLogits, step: 1)
        let denseAnalytic = model.parameters.map { GC.doubles($0.gradient) }
        let sparseAnalytic = try rowSets.map { set in
            let after = try set.values()
            return (0..<set.count).map { Double(set.initial[$0]) - Double(after[$0]) }
        }
        for set in rowSets { try set.reset() }
        #expect(try loss() == value, "the rows are back where they were")

        // 1. Central differences of the float32 model, rows set through the store. The loss
        // is a mean over 4 samples, so gradients are O(0.005–0.3); L's float32 noise is about
        // 1e-7, 5e-6 in the difference quotient at a step of 2e-2, so the floor is 1e-2 (an
        // absolute error under 1e-5 near zero). Given the ReLU pattern the logits are linear in
        // any single weight or row value, and the BCE's curvature bounds the truncation error
        // to about 1e-5 of the slope at this step.
        #expect(model.parameters.count == 8)
        for (p, a) in zip(model.parameters, denseAnalytic) {
            let numeric = try GC.centralDifferences(of: p.value, step: 2e-2, pattern: pattern, loss: loss)
            GC.check("dlrm \(p.name)", analytic: a, numeric: numeric, floor: 1e-2, maximumSkipped: p.value.count / 10)
        }
        for (f, set) in rowSets.enumerated() {
            let numeric = try GC.centralDifferences(count: set.count, step: 2e-2, read: set.read, write: set.write,
                                                    pattern: pattern, loss: loss)
            GC.check("dlrm table \(f) rows \(set.keys)", analytic: sparseAnalytic[f], numeric: numeric, floor: 1e-2,
                     maximumSkipped: set.count / 10)
        }

        // 2. A float64 reimplementation (bottom MLP, lookups, interaction, top MLP, mean BCE)
        // with the same values: its forward must match, and its central differences at a step
        // of 1e-6 (no visible noise) must match every gradient per coordinate at 1e-3, floored
        // at 1e-3 of each tensor's largest gradient.
        var bottom = ReferenceMLP(bottomMLP), top = ReferenceMLP(topMLP)
        var tableRows = rowSets.map { $0.initial.map(Double.init) }
        let d = config.embeddingDim
        let denseRows = (0..<b).map { s in (0..<3).map { Double(dense[s, $0]) } }
        func logits64(_ signs: inout [Bool]) -> [Double] {
            let x = bottom.forward(denseRows, signs: &signs)
            let interactions = (0..<b).map { s in
                var vectors = [x[s]]
                for f in 0..<3 {
                    let r = rowSets[f].keys.firstIndex(of: keys[f * b + s])!
                    vectors.append(Array(tableRows[f][(r * d)..<((r + 1) * d)]))
                }
                return referenceInteraction(vectors)
            }
            return top.forward(interactions, signs: &signs).map { $0[0] }
        }
        func loss64() -> Double {
            var signs: [Bool] = []
            let z = logits64(&signs)
            return (0..<b).reduce(0.0) { $0 + referenceBCE(z[$1], Double(targets[$1])) } / Double(b)
        }
        let pattern64 = { () -> [Bool] in
            var signs: [Bool] = []
            _ = logits64(&signs)
            return signs
        }
        let logits = try model.forward(batch, training: true, step: 1)
        var unused: [Bool] = []
        GC.check("dlrm logits", actual: GC.doubles(logits), reference: logits64(&unused), floor: 1, tolerance: 1e-5)
        #expect(abs(value - loss64()) <= 1e-5 * loss64(), "dlrm loss \(value) vs float64 \(loss64())")

        for (p, a) in denseAnalytic.enumerated() {
            let inBottom = p < bottomMLP.parameters.count
            let q = inBottom ? p : p - bottomMLP.parameters.count
            let numeric = GC.centralDifferences64(
                count: a.count, step: 1e-6,
                read: { inBottom ? bottom[q, $0] : top[q, $0] },
                write: { if inBottom { bottom[q, $0] = $1 } else { top[q, $0] = $1 } },
                pattern: pattern64, loss: loss64)
            GC.check("dlrm \(model.parameters[p].name) vs float64", analytic: a, numeric: numeric,
                     floor: 1e-3 * GC.scale(numeric.gradient))
        }
        for f in 0..<3 {
            let numeric = GC.centralDifferences64(
                count: tableRows[f].count, step: 1e-6, read: { tableRows[f][$0] }, write: { tableRows[f][$0] = $1 },
                pattern: pattern64, loss: loss64)
            GC.check("dlrm table \(f) rows vs float64", analytic: sparseAnalytic[f], numeric: numeric,
                     floor: 1e-3 * GC.scale(numeric.gradient))
        }
    }
}
