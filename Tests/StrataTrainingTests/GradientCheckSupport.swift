// Helpers for the finite-difference gradient checks in GradientTests.swift: seeded random
// values, the scalar loss L = Σ output ⊙ R (accumulated in Double), central differences, the
// relative-error comparison, and a scratch store for the store-backed embedding.
import Testing
import StrataNN
import StrataStore
import StrataTestSupport
#if canImport(Glibc)
import Glibc
#endif

enum GradientCheck {
    /// The acceptance criterion of the issue: relative error under 1e-3 in float32.
    static let tolerance = 1e-3

    // MARK: Random values

    struct Random {
        private var rng: SplitMix64

        init(seed: UInt64) { rng = SplitMix64(seed: seed) }

        mutating func uniform(_ low: Double = -1, _ high: Double = 1) -> Float {
            Float(low + (high - low) * (Double(rng.next() >> 11) * 0x1p-53))
        }

        /// A magnitude in [low, high] with a random sign: kept away from zero (ReLU's kink).
        mutating func awayFromZero(_ low: Double, _ high: Double) -> Float {
            let m = uniform(low, high)
            return rng.next() & 1 == 0 ? m : -m
        }

        mutating func values(_ n: Int, _ low: Double = -1, _ high: Double = 1) -> [Float] {
            (0..<n).map { _ in uniform(low, high) }
        }

        mutating func tensor(_ rows: Int, _ columns: Int, _ low: Double = -1, _ high: Double = 1) -> Tensor {
            Tensor(rows: rows, columns: columns, values: values(rows * columns, low, high))
        }

        mutating func fill(_ t: Tensor, _ low: Double = -1, _ high: Double = 1) {
            for i in 0..<t.count { t.data[i] = uniform(low, high) }
        }

        mutating func next() -> UInt64 { rng.next() }
    }

    // MARK: The scalar loss and its numeric gradient

    /// L = Σ t ⊙ r, accumulated in Double, so dL/dt = r.
    static func weightedSum(_ t: Tensor, _ r: [Float]) -> Double {
        precondition(t.count == r.count, "\(t.count) outputs, \(r.count) weights")
        var s = 0.0
        for i in 0..<r.count { s += Double(t.data[i]) * Double(r[i]) }
        return s
    }

    struct Numeric {
        /// dL/dx per coordinate; NaN where no step kept the ReLU pattern (skipped).
        var gradient: [Double]
        var skipped: Int
        /// The steps actually used (after rounding of x ± h), smallest.
        var smallestStep: Double
    }

    /// Central differences of `loss` with respect to `count` coordinates. `write(i, v)` sets
    /// coordinate i to (about) v and returns the value actually set: the quotient divides by
    /// the difference of the values actually set, not by 2h, so the rounding of x ± h in
    /// float32 (or in the store) adds no error. `pattern`, when given, returns the signs of
    /// every ReLU's input: a step that changes them crosses a kink and is retried 8× smaller
    /// (twice), then the coordinate is skipped. Every coordinate is restored, and `loss` is run
    /// once more at the base point at the end so that layers hold their base-point state.
    static func centralDifferences(
        count: Int, step: Float,
        read: (Int) throws -> Float, write: (Int, Float) throws -> Float,
        pattern: (() -> [Bool])? = nil, loss: () throws -> Double
    ) rethrows -> Numeric {
        _ = try loss()
        let base = pattern?()
        var out = [Double](repeating: .nan, count: count)
        var skipped = 0
        var smallest = Double.infinity
        for i in 0..<count {
            let x0 = try read(i)
            var h = step
            for _ in 0..<3 {
                let xp = try write(i, x0 + h)
                let lp = try loss()
                let keptP = base == nil || pattern!() == base!
                let xm = try write(i, x0 - h)
                let lm = try loss()
                let keptM = base == nil || pattern!() == base!
                let restored = try write(i, x0)
                precondition(restored == x0, "coordinate \(i) not restored: \(restored) != \(x0)")
                if keptP && keptM {
                    out[i] = (lp - lm) / (Double(xp) - Double(xm))
                    smallest = min(smallest, Double(xp) - Double(xm))
                    break
                }
                h /= 8
            }
            if out[i].isNaN { skipped += 1 }
        }
        _ = try loss()
        return Numeric(gradient: out, skipped: skipped, smallestStep: smallest)
    }

    /// Central differences with respect to every value of a tensor.
    static func centralDifferences(
        of t: Tensor, step: Float, pattern: (() -> [Bool])? = nil, loss: () throws -> Double
    ) rethrows -> Numeric {
        try centralDifferences(
            count: t.count, step: step,
            read: { t.data[$0] }, write: { t.data[$0] = $1; return $1 },
            pattern: pattern, loss: loss)
    }

    // MARK: Comparison

    struct Comparison: CustomStringConvertible {
        var name: String
        var worst = 0.0
        var at = -1
        var analytic = 0.0
        var numeric = 0.0
        var checked = 0
        var skipped = 0
        var floor = 0.0
        /// ‖a − n‖₂ / ‖n‖₂ over the checked coordinates.
        var normError = 0.0

        var description: String {
            "\(name): worst relative error \(worst) at [\(at)] (analytic \(analytic), numeric \(numeric)), "
                + "norm error \(normError), \(checked) checked, \(skipped) skipped, floor \(floor)"
        }
    }

    /// Per coordinate, |a − n| / max(|a| + |n|, floor); the worst over the coordinates.
    /// The floor keeps a coordinate whose true gradient is (close to) zero from turning
    /// rounding noise into a failure: below it the comparison is absolute, |a − n| < tolerance
    /// × floor. Each check states why its floor is sound.
    static func compare(_ name: String, analytic: [Double], numeric: [Double], floor: Double, skipped: Int = 0) -> Comparison {
        precondition(analytic.count == numeric.count, "\(name): \(analytic.count) analytic, \(numeric.count) numeric")
        var c = Comparison(name: name, skipped: skipped, floor: floor)
        var diff2 = 0.0, norm2 = 0.0
        for i in 0..<analytic.count where !numeric[i].isNaN {
            let a = analytic[i], n = numeric[i]
            let e = a.isFinite ? abs(a - n) / max(abs(a) + abs(n), floor) : .infinity
            c.checked += 1
            diff2 += (a - n) * (a - n)
            norm2 += n * n
            if e > c.worst || c.at < 0 { (c.worst, c.at, c.analytic, c.numeric) = (e, i, a, n) }
        }
        c.normError = norm2 > 0 ? (diff2 / norm2).squareRoot() : diff2.squareRoot()
        return c
    }

    /// Compares, prints the worst error (the report quotes these lines), and expects it under
    /// `tolerance`, with at most `maximumSkipped` coordinates skipped.
    @discardableResult
    static func check(
        _ name: String, analytic: [Double], numeric: Numeric, floor: Double,
        tolerance: Double = GradientCheck.tolerance, maximumSkipped: Int = 0,
        sourceLocation: SourceLocation = #_sourceLocation
    ) -> Comparison {
        let c = compare(name, analytic: analytic, numeric: numeric.gradient, floor: floor, skipped: numeric.skipped)
        print("gradient check \(c)")
        #expect(c.checked > 0, "\(name): nothing checked", sourceLocation: sourceLocation)
        #expect(c.worst < tolerance, "\(c)", sourceLocation: sourceLocation)
        #expect(c.skipped <= maximumSkipped, "\(c)", sourceLocation: sourceLocation)
        return c
    }

    /// Same, for two exact computations (float32 result against a float64 reference).
    @discardableResult
    static func check(
        _ name: String, actual: [Double], reference: [Double], floor: Double,
        tolerance: Double, sourceLocation: SourceLocation = #_sourceLocation
    ) -> Comparison {
        let c = compare(name, analytic: actual, numeric: reference, floor: floor)
        print("reference check \(c)")
        #expect(c.worst < tolerance, "\(c)", sourceLocation: sourceLocation)
        return c
    }

    static func doubles(_ t: Tensor) -> [Double] { t.values.map(Double.init) }

    /// The largest |v|: gradients here are O(1) by construction; floors are stated relative to it.
    static func scale(_ v: [Double]) -> Double { v.reduce(0) { max($0, $1.isNaN ? 0 : abs($1)) } }
}

/// A store in a fresh temporary directory, removed when released.
final class ScratchStore {
    let directory: String
    let store: Store

    init(_ prefix: String) throws {
        directory = temporaryDirectory(prefix)
        var options = Store.Options()
        options.budget = TierBudget(hotBytes: 1 << 20, warmBytes: 1 << 20)
        options.initialMapBytes = 16 << 20
        store = try Store(path: directory + "/store", options: options)
    }

    /// A table whose SGD step at learning rate 1 is w −= g: the gradient a layer hands the
    /// store is the row's change, negated, and a row can be set to any value v by handing
    /// it the gradient w − v.
    func table(_ name: String, dimension: Int, seed: UInt64, range: Float = 1) throws -> Table {
        try store.createTable(name, TableSpec(
            dimension: dimension, initializer: .init(.uniform(low: -range, high: range), seed: seed),
            optimizer: .sgd(learningRate: 1)))
    }

    deinit {
        try? store.close()
        removeDirectory(directory)
    }
}

/// Rows of a store table as coordinates for `centralDifferences`: coordinate i is value
/// i % dimension of row keys[i / dimension]. Each write first removes every key of the check
/// (a removed row reads as the initializer's value again, exactly), then sets the one row by
/// an SGD step at learning rate 1 with the gradient (initial − v); it returns the value the
/// store then holds (the step rounds), which `centralDifferences` divides by.
struct StoreRows {
    let table: Table
    let keys: [UInt64]
    let initial: [Float]
    var dimension: Int { table.spec.dimension }
    var count: Int { keys.count * dimension }

    init(table: Table, keys: [UInt64]) throws {
        self.table = table
        self.keys = keys
        try table.remove(keys)
        initial = try table.peek(keys)
    }

    func read(_ i: Int) -> Float { initial[i] }

    func write(_ i: Int, _ v: Float) throws -> Float {
        try reset()
        let d = dimension, r = i / d, j = i % d
        if v == initial[i] { return v }
        var g = [Float](repeating: 0, count: d)
        g[j] = initial[i] - v
        try table.applyGradients([keys[r]], g, learningRate: 1)
        let row = try table.peek([keys[r]])
        return row[j]
    }

    /// Every row back to its initial value.
    func reset() throws { try table.remove(keys) }

    /// The current values of the rows.
    func values() throws -> [Float] { try table.peek(keys) }
}

// MARK: Float64 reimplementations

/// An MLP in float64 with the values of a float32 one: the reference the composed checks
/// differentiate numerically (in float64 the difference quotient carries no visible noise).
struct ReferenceMLP {
    var weights: [[Double]]   // per layer, outputs × inputs
    var biases: [[Double]]
    let sizes: [Int]
    let activations: [Activation]

    init(_ mlp: MLP) {
        weights = mlp.layers.map { GradientCheck.doubles($0.weight.value) }
        biases = mlp.layers.map { GradientCheck.doubles($0.bias.value) }
        sizes = [mlp.inputs] + mlp.layers.map(\.outputs)
        activations = mlp.activations
    }

    /// Coordinate i of parameter p, in the order of `MLP.parameters` (weight, bias, …).
    subscript(p: Int, i: Int) -> Double {
        get { p % 2 == 0 ? weights[p / 2][i] : biases[p / 2][i] }
        set { if p % 2 == 0 { weights[p / 2][i] = newValue } else { biases[p / 2][i] = newValue } }
    }

    static func activate(_ f: Activation, _ z: Double) -> Double {
        switch f {
        case .identity: z
        case .relu: max(z, 0)
        case .sigmoid: z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z))
        case .tanh: tanh(z)
        }
    }

    /// Rows of x through the layers; appends the sign of every ReLU input to `signs`.
    func forward(_ x: [[Double]], signs: inout [Bool]) -> [[Double]] {
        var h = x
        for l in 0..<(sizes.count - 1) {
            let n = sizes[l], m = sizes[l + 1]
            h = h.map { row in
                (0..<m).map { j in
                    var z = biases[l][j]
                    for k in 0..<n { z += row[k] * weights[l][j * n + k] }
                    if activations[l] == .relu { signs.append(z > 0) }
                    return Self.activate(activations[l], z)
                }
            }
        }
        return h
    }
}

/// DLRM's interaction in float64: the bottom vector, then <v_i, v_j> for j < i, i ascending.
func referenceInteraction(_ vectors: [[Double]]) -> [Double] {
    var out = vectors[0]
    for i in 1..<vectors.count {
        for j in 0..<i {
            var t = 0.0
            for k in 0..<vectors[i].count { t += vectors[i][k] * vectors[j][k] }
            out.append(t)
        }
    }
    return out
}

/// Binary cross-entropy on a logit, in float64.
func referenceBCE(_ x: Double, _ y: Double) -> Double { max(x, 0) - x * y + log1p(exp(-abs(x))) }

extension GradientCheck {
    /// Central differences in float64 (a float64 reference's gradient), with the same ReLU
    /// pattern guard as the float32 version.
    static func centralDifferences64(
        count: Int, step: Double, read: (Int) -> Double, write: (Int, Double) -> Void,
        pattern: (() -> [Bool])? = nil, loss: () -> Double
    ) -> Numeric {
        _ = loss()
        let base = pattern?()
        var out = [Double](repeating: .nan, count: count)
        var skipped = 0
        for i in 0..<count {
            let x0 = read(i)
            var h = step
            for _ in 0..<3 {
                let xp = x0 + h, xm = x0 - h
                write(i, xp)
                let lp = loss()
                let keptP = base == nil || pattern!() == base!
                write(i, xm)
                let lm = loss()
                let keptM = base == nil || pattern!() == base!
                write(i, x0)
                if keptP && keptM {
                    out[i] = (lp - lm) / (xp - xm)
                    break
                }
                h /= 8
            }
            if out[i].isNaN { skipped += 1 }
        }
        return Numeric(gradient: out, skipped: skipped, smallestStep: step)
    }
}

/// A layer run on its own, as the graph runs it: the harness owns the output and the input
/// gradients, sized to the batch, and passes `pass` (training, step 1, seed 7 by default).
final class LayerHarness {
    let layer: any Layer
    let output: Tensor
    /// The gradients of the inputs after `backward` (those not asked for keep old values).
    let inputGradients: [Tensor]
    var pass = Pass(training: true, step: 1, seed: 7, node: 3)
    private var inputs: [Tensor] = []

    init(_ layer: any Layer, inputColumns: [Int]) {
        self.layer = layer
        guard let columns = layer.outputColumns(for: inputColumns) else { preconditionFailure("the layer does not take \(inputColumns)") }
        output = Tensor(rows: 0, columns: columns)
        inputGradients = inputColumns.map { Tensor(rows: 0, columns: $0) }
    }

    @discardableResult
    func forward(_ inputs: [Tensor]) -> Tensor {
        self.inputs = inputs
        output.resize(rows: inputs[0].rows)
        layer.forward(inputs, into: output, pass)
        return output
    }

    /// Backward from `dy`; `need[i]` false passes no gradient tensor for input i.
    func backward(_ dy: Tensor, need: [Bool]? = nil) {
        let targets: [Tensor?] = inputGradients.enumerated().map { i, g in
            guard need?[i] ?? true else { return nil }
            g.resize(rows: dy.rows)
            return g
        }
        layer.backward(inputs, output: output, outputGradient: dy, inputGradients: targets, pass)
    }
}
