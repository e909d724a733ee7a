// The dense side of a training step after the gradients: the store's `Optimizer` applied to
// dense parameters (each parameter one row) against the published formulas recomputed in
// float64, and ParameterArchive, which saves and restores the dense parameters with their
// optimizer state (version 2, and version 1 as checkpoints before it wrote them).
import Testing
import StrataNN
import StrataStore
#if canImport(Glibc)
import Glibc
#endif

extension GradientTests {
    // MARK: The dense step

    struct DenseOptimizerCase: Sendable, CustomStringConvertible {
        var optimizer: Optimizer
        var steps: Int
        var description: String { "\(optimizer) × \(steps)" }
    }

    static let denseOptimizerCases: [DenseOptimizerCase] = [
        Optimizer.sgd(learningRate: 0.1),
        .adagrad(learningRate: 0.1),
        .adagrad(learningRate: 0.05, epsilon: 1e-3, initialAccumulator: 0.1),
        .rowwiseAdagrad(learningRate: 0.1, epsilon: 1e-3, initialAccumulator: 0.2),
        .adam(learningRate: 0.01),
        .adam(learningRate: 0.05, beta1: 0.5, beta2: 0.75, epsilon: 1e-3),
        .ftrl(alpha: 0.1, beta: 1, l1: 0.01, l2: 0.1),
    ].flatMap { o in [1, 5].map { DenseOptimizerCase(optimizer: o, steps: $0) } }

    /// One parameter's values and optimizer state, updated in float64 with the optimizer's
    /// float32 hyperparameters taken exactly. The state is laid out as the store keeps it:
    /// Adam's m then v, FTRL's z then n.
    struct ReferenceDenseState {
        var w: [Double]
        var state: [Double]

        mutating func step(_ o: Optimizer, gradient g: [Double], step t: Int) {
            let d = w.count
            switch o {
            case .sgd(let lr):
                for i in w.indices { w[i] -= Double(lr) * g[i] }
            case .adagrad(let lr, let eps, _):
                // a += g², w −= lr · g / (√a + ε)   (PyTorch's Adagrad, no decay)
                for i in w.indices {
                    state[i] += g[i] * g[i]
                    w[i] -= Double(lr) * g[i] / (state[i].squareRoot() + Double(eps))
                }
            case .rowwiseAdagrad(let lr, let eps, _):
                // One accumulator for the whole row: a += mean(g²) (FBGEMM's row-wise Adagrad).
                state[0] += g.reduce(0) { $0 + $1 * $1 } / Double(d)
                for i in w.indices { w[i] -= Double(lr) * g[i] / (state[0].squareRoot() + Double(eps)) }
            case .adam(let lr, let b1f, let b2f, let eps):
                // m = β₁m + (1−β₁)g, v = β₂v + (1−β₂)g², w −= lr · m̂ / (√v̂ + ε) with
                // m̂ = m / (1 − β₁ᵗ), v̂ = v / (1 − β₂ᵗ)   (Kingma & Ba, Algorithm 1)
                let b1 = Double(b1f), b2 = Double(b2f)
                let c1 = 1 - pow(b1, Double(t)), c2 = 1 - pow(b2, Double(t))
                for i in w.indices {
                    state[i] = b1 * state[i] + (1 - b1) * g[i]
                    state[d + i] = b2 * state[d + i] + (1 - b2) * g[i] * g[i]
                    w[i] -= Double(lr) * (state[i] / c1) / ((state[d + i] / c2).squareRoot() + Double(eps))
                }
            case .ftrl(let alphaF, let betaF, let l1F, let l2F):
                // McMahan et al. 2013, Algorithm 1: σ = (√(n + g²) − √n) / α, z += g − σw,
                // n += g², w = 0 if |z| ≤ λ₁ else −(z − sgn(z)λ₁) / ((β + √n)/α + λ₂).
                let alpha = Double(alphaF), beta = Double(betaF), l1 = Double(l1F), l2 = Double(l2F)
                for i in w.indices {
                    let n = state[d + i], next = n + g[i] * g[i]
                    let sigma = (next.squareRoot() - n.squareRoot()) / alpha
                    state[i] += g[i] - sigma * w[i]
                    state[d + i] = next
                    let z = state[i]
                    w[i] = abs(z) <= l1 ? 0 : -(z - (z < 0 ? -1 : 1) * l1) / ((beta + next.squareRoot()) / alpha + l2)
                }
            }
        }
    }

    @Test(arguments: denseOptimizerCases)
    func denseOptimizer(_ c: DenseOptimizerCase) {
        var r = GradientCheck.Random(seed: UInt64(c.steps) &* 0x9E37 &+ UInt64(c.description.utf8.count))
        let parameters = [Parameter("a.weight", rows: 2, columns: 3), Parameter("a.bias", rows: 1, columns: 4)]
        for p in parameters { r.fill(p.value) }

        // State: none for SGD, the accumulator (at its initial value) per value for Adagrad and
        // one for row-wise Adagrad, m and v (zero) for Adam, z and n for FTRL; preparing twice
        // changes nothing.
        c.optimizer.prepare(parameters)
        let (perValue, initial): (Int, Float) = switch c.optimizer {
        case .sgd: (0, 0)
        case .adagrad(_, _, let a): (1, a)
        case .rowwiseAdagrad(_, _, let a): (-1, a)
        case .adam, .ftrl: (2, 0)
        }
        for p in parameters {
            let expected = perValue < 0 ? 1 : perValue * p.value.count
            #expect((p.state?.count ?? 0) == expected, "\(c): \(p.state?.count ?? 0) floats of state")
            #expect(p.state?.values.allSatisfy { $0 == initial } ?? true, "\(c): initial state")
        }
        let stateObjects = parameters.map { $0.state.map(ObjectIdentifier.init) }
        c.optimizer.prepare(parameters)
        #expect(parameters.map { $0.state.map(ObjectIdentifier.init) } == stateObjects, "prepare is idempotent")

        var reference = parameters.map { p in
            ReferenceDenseState(w: GradientCheck.doubles(p.value), state: p.state.map { GradientCheck.doubles($0) } ?? [])
        }
        var worstValue = 0.0, worstState = 0.0
        for t in 1...c.steps {
            for (i, p) in parameters.enumerated() {
                r.fill(p.gradient)
                reference[i].step(c.optimizer, gradient: GradientCheck.doubles(p.gradient), step: t)
            }
            c.optimizer.step(parameters, step: t)
            // A handful of float32 roundings per step: within 1e-5 of max(|w|, 0.1) after 5
            // steps (values are O(1); an error in a formula moves them by O(lr) ≥ 1e-2).
            for (p, ref) in zip(parameters, reference) {
                for i in 0..<p.value.count {
                    let e = abs(Double(p.value.data[i]) - ref.w[i]) / max(abs(ref.w[i]), 0.1)
                    worstValue = max(worstValue, e)
                    #expect(e < 1e-5, "\(c) step \(t) \(p.name)[\(i)]: \(p.value.data[i]) vs float64 \(ref.w[i])")
                }
                if let s = p.state {
                    // m (and FTRL's z) is a running sum of terms as large as the tensor's largest
                    // value and can cancel to near zero: its float32 error is a few ulps of that
                    // scale, not of m, so below 1/10 of it the error is relative to that tenth.
                    let floor = 0.1 * ref.state.reduce(0) { max($0, abs($1)) }
                    for i in 0..<s.count {
                        let e = abs(Double(s.data[i]) - ref.state[i]) / max(abs(ref.state[i]), floor)
                        worstState = max(worstState, e)
                        #expect(e < 1e-5, "\(c) step \(t) \(p.name) state[\(i)]: \(s.data[i]) vs float64 \(ref.state[i])")
                    }
                }
            }
        }
        print("reference check dense optimizer \(c): worst relative error values \(worstValue), state \(worstState)")
    }

    // MARK: ParameterArchive

    /// Parameters with every kind of float32 value (signed zeros, subnormals, infinities,
    /// NaNs with payloads) and Adam's state (12, 6 floats) on two of them, none on the third.
    static func archiveParameters() -> [Parameter] {
        let ps = [Parameter("bottom.0.weight", rows: 2, columns: 3), Parameter("bottom.0.bias", rows: 1, columns: 3),
                  Parameter("top.0.weight", rows: 3, columns: 2)]
        Optimizer.adam(learningRate: 0.01).prepare(Array(ps[0...1]))
        let special: [Float] = [0, -0.0, .nan, Float(bitPattern: 0x7FC1_2345), Float(bitPattern: 0x7F80_0001),
                                Float(bitPattern: 0xFFFF_FFFF), .infinity, -.infinity, .leastNonzeroMagnitude,
                                -.leastNormalMagnitude, .greatestFiniteMagnitude, 1 / 3]
        var r = GradientCheck.Random(seed: 0xA4C)
        var k = 0
        for p in ps {
            for t in [p.value] + (p.state.map { [$0] } ?? []) {
                for i in 0..<t.count {
                    t.data[i] = k < special.count ? special[k] : r.uniform(-5, 5)
                    k += 1
                }
            }
        }
        return ps
    }

    static func bits(_ ps: [Parameter]) -> [[UInt32]] {
        ps.map { p in ([p.value] + (p.state.map { [$0] } ?? [])).flatMap { $0.values.map(\.bitPattern) } }
    }

    static func decodeProblem(_ bytes: ArraySlice<UInt8>, _ ps: [Parameter]) -> ParameterArchive.Problem? {
        do {
            try ParameterArchive.decode(bytes, into: ps)
            return nil
        } catch {
            return error
        }
    }

    @Test func parameterArchiveRoundTrip() {
        let saved = Self.archiveParameters()
        let bytes = ParameterArchive.encode(saved)
        // Into fresh parameters of the same names and shapes, holding other values and state
        // of the same size: values and state come back bit for bit.
        let restored = [Parameter("bottom.0.weight", rows: 2, columns: 3), Parameter("bottom.0.bias", rows: 1, columns: 3),
                        Parameter("top.0.weight", rows: 3, columns: 2)]
        Optimizer.adam(learningRate: 0.5).prepare(Array(restored[0...1]))
        for p in restored { p.value.data.update(repeating: 42, count: p.value.count) }
        let problem = Self.decodeProblem(bytes[...], restored)
        #expect(problem == nil, "\(String(describing: problem))")
        #expect(restored.map { $0.state?.count ?? 0 } == [12, 6, 0])
        #expect(Self.bits(restored) == Self.bits(saved), "values and state bit for bit")
        #expect(ParameterArchive.encode(restored) == bytes, "re-encoding gives the same bytes")

        // From a slice that does not start at index 0 (as inside a checkpoint payload).
        let padded: [UInt8] = [0xAA, 0xBB, 0xCC] + bytes + [0xDD]
        let again = Self.archiveParameters()
        for p in again { for t in [p.value] + (p.state.map { [$0] } ?? []) { t.data.update(repeating: -1, count: t.count) } }
        #expect(Self.decodeProblem(padded[3..<(3 + bytes.count)], again) == nil)
        #expect(Self.bits(again) == Self.bits(saved), "decoded from a slice")

        // No parameters at all.
        #expect(Self.decodeProblem(ParameterArchive.encode([])[...], []) == nil)
    }

    /// Version 1, as checkpoints before version 2 wrote it: the state counted in tensors of the
    /// parameter's shape (Adam's m, then v), which is the layout of version 2's one state.
    @Test func parameterArchiveVersion1() {
        let saved = Self.archiveParameters()
        var v1: [UInt8] = Array("SPRM".utf8)
        func u32(_ v: Int) { withUnsafeBytes(of: UInt32(v).littleEndian) { v1 += $0 } }
        u32(1)
        u32(saved.count)
        for p in saved {
            u32(p.name.utf8.count)
            v1 += Array(p.name.utf8)
            u32(p.value.rows)
            u32(p.value.columns)
            u32((p.state?.count ?? 0) / p.value.count)
            v1 += UnsafeRawBufferPointer(start: p.value.data, count: 4 * p.value.count)
            if let s = p.state { v1 += UnsafeRawBufferPointer(start: s.data, count: 4 * s.count) }
        }
        let restored = [Parameter("bottom.0.weight", rows: 2, columns: 3), Parameter("bottom.0.bias", rows: 1, columns: 3),
                        Parameter("top.0.weight", rows: 3, columns: 2)]
        Optimizer.adam(learningRate: 0.01).prepare(Array(restored[0...1]))
        let problem = Self.decodeProblem(v1[...], restored)
        #expect(problem == nil, "\(String(describing: problem))")
        #expect(Self.bits(restored) == Self.bits(saved), "version 1 values and state bit for bit")
        // A version-1 archive whose state tensors the optimizer does not keep is refused.
        let adagrad = [Parameter("bottom.0.weight", rows: 2, columns: 3), Parameter("bottom.0.bias", rows: 1, columns: 3),
                       Parameter("top.0.weight", rows: 3, columns: 2)]
        Optimizer.adagrad(learningRate: 0.1).prepare(adagrad)
        if case .mismatch(let why)? = Self.decodeProblem(v1[...], adagrad) {
            #expect(why.contains("state"), "\(why)")
        } else {
            Issue.record("an archive with Adam's state decoded into Adagrad's parameters")
        }
    }

    @Test func parameterArchiveErrors() {
        let saved = Self.archiveParameters()
        let bytes = ParameterArchive.encode(saved)
        func isMismatch(_ p: ParameterArchive.Problem?) -> Bool { if case .mismatch = p { true } else { false } }
        func isMalformed(_ p: ParameterArchive.Problem?) -> Bool { if case .malformed = p { true } else { false } }
        func model(_ shapes: [(String, Int, Int)]) -> [Parameter] { shapes.map { Parameter($0.0, rows: $0.1, columns: $0.2) } }

        // A different number of parameters.
        let fewer = model([("bottom.0.weight", 2, 3), ("bottom.0.bias", 1, 3)])
        var p = Self.decodeProblem(bytes[...], fewer)
        #expect(isMismatch(p), "count mismatch: \(String(describing: p))")
        // A different name.
        p = Self.decodeProblem(bytes[...], model([("bottom.0.weight", 2, 3), ("bottom.0.bias", 1, 3), ("top.1.weight", 3, 2)]))
        #expect(isMismatch(p), "name mismatch: \(String(describing: p))")
        // The same names in another order.
        p = Self.decodeProblem(bytes[...], model([("bottom.0.bias", 1, 3), ("bottom.0.weight", 2, 3), ("top.0.weight", 3, 2)]))
        #expect(isMismatch(p), "order mismatch: \(String(describing: p))")
        // The same count of values in another shape, and another size.
        p = Self.decodeProblem(bytes[...], model([("bottom.0.weight", 3, 2), ("bottom.0.bias", 1, 3), ("top.0.weight", 3, 2)]))
        #expect(isMismatch(p), "shape mismatch: \(String(describing: p))")
        p = Self.decodeProblem(bytes[...], model([("bottom.0.weight", 2, 3), ("bottom.0.bias", 1, 3), ("top.0.weight", 3, 3)]))
        #expect(isMismatch(p), "size mismatch: \(String(describing: p))")

        // Every truncation, including inside a name and inside the floats, is malformed.
        let target = model([("bottom.0.weight", 2, 3), ("bottom.0.bias", 1, 3), ("top.0.weight", 3, 2)])
        Optimizer.adam(learningRate: 0.01).prepare(Array(target[0...1]))
        for n in 0..<bytes.count {
            let q = Self.decodeProblem(bytes[..<n], target)
            #expect(isMalformed(q), "truncated to \(n) of \(bytes.count) bytes: \(String(describing: q))")
        }
        // A byte too many, another magic, another version, a name length past the end.
        p = Self.decodeProblem((bytes + [0])[...], target)
        #expect(isMalformed(p), "trailing byte: \(String(describing: p))")
        var bad = bytes
        bad[0] = UInt8(ascii: "X")
        #expect(isMalformed(Self.decodeProblem(bad[...], target)), "magic")
        bad = bytes
        bad[4] = 3
        #expect(isMalformed(Self.decodeProblem(bad[...], target)), "version")
        bad = bytes
        for i in 12..<16 { bad[i] = 0xFF }  // the first name's length
        p = Self.decodeProblem(bad[...], target)
        #expect(isMalformed(p), "name length past the end: \(String(describing: p))")
    }
}
