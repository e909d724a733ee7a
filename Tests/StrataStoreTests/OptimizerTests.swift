// The in-store optimizers against the published formulas, recomputed here in Double; the
// initializer's determinism and distributions; and StorageType.round against a reference
// that searches the table of every representable value.
import Testing
@_spi(Testing) import StrataStore
import StrataTestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite struct OptimizerTests {
    static let optimizers: [Optimizer] = [
        .sgd(learningRate: 0.05),
        .adagrad(learningRate: 0.1, epsilon: 1e-8, initialAccumulator: 0),
        .adagrad(learningRate: 0.05, epsilon: 1e-2, initialAccumulator: 0.1),
        .rowwiseAdagrad(learningRate: 0.1, epsilon: 1e-8, initialAccumulator: 0),
        .rowwiseAdagrad(learningRate: 0.2, epsilon: 1e-3, initialAccumulator: 0.5),
        .adam(learningRate: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-8),
        .adam(learningRate: 0.05, beta1: 0.5, beta2: 0.75, epsilon: 1e-3),
        .ftrl(alpha: 0.1, beta: 1, l1: 0, l2: 0),
        .ftrl(alpha: 0.5, beta: 0.5, l1: 0.05, l2: 0.3),
        .ftrl(alpha: 0.05, beta: 1, l1: 2, l2: 1),  // l1 large enough to zero most weights
    ]

    struct Case: Sendable, CustomStringConvertible {
        let optimizer: Optimizer
        let dimension: Int
        let steps: Int
        var description: String { "\(optimizer) d=\(dimension) steps=\(steps)" }
    }

    static let cases: [Case] = optimizers.flatMap { o in
        [1, 4, 9].flatMap { d in [1, 2, 7].map { Case(optimizer: o, dimension: d, steps: $0) } }
    }

    /// |a − b| relative to the size of the quantity (at least 0.1, the scale of the rows here),
    /// so that a coordinate landing near zero does not turn rounding noise into a failure.
    static func relativeError(_ a: Float, _ b: Double) -> Double { abs(Double(a) - b) / max(abs(b), 0.1) }

    @Test(arguments: cases)
    func matchesPublishedFormulas(_ c: Case) {
        let d = c.dimension
        var rng = SplitMix64(seed: UInt64(d * 100 + c.steps) &+ UInt64(c.optimizer.code) &* 1_000_003)
        var w = (0..<d).map { _ in Float.random(in: -1..<1, using: &rng) }
        var state = [Float](repeating: .nan, count: c.optimizer.stateCount(dimension: d))
        state.withUnsafeMutableBufferPointer { s in
            c.optimizer.initializeState(s.baseAddress ?? UnsafeMutablePointer(bitPattern: 8)!, dimension: d)
        }
        // The starting state: the initial accumulator for Adagrad, zeros otherwise.
        let initial: Float = switch c.optimizer {
        case .adagrad(_, _, let a), .rowwiseAdagrad(_, _, let a): a
        default: 0
        }
        #expect(state.allSatisfy { $0 == initial }, "\(c): initial state \(state)")

        var reference = ReferenceOptimizerRow(w: w.map(Double.init), state: state.map(Double.init))
        // The batch's learning rate overrides the optimizer's (FTRL's alpha likewise).
        let lr: Float = c.steps == 2 ? c.optimizer.learningRate * 0.5 : c.optimizer.learningRate
        for t in 1...c.steps {
            let g = (0..<d).map { _ in Float.random(in: -1..<1, using: &rng) }
            w.withUnsafeMutableBufferPointer { wp in
                state.withUnsafeMutableBufferPointer { sp in
                    g.withUnsafeBufferPointer { gp in
                        c.optimizer.apply(values: wp.baseAddress!, state: sp.baseAddress ?? UnsafeMutablePointer(bitPattern: 8)!,
                                          gradient: gp.baseAddress!, dimension: d, step: UInt64(t), learningRate: lr)
                    }
                }
            }
            reference.step(c.optimizer, g.map(Double.init), t: t, lr: Double(lr))
            for i in 0..<d where !(Self.relativeError(w[i], reference.w[i]) < 1e-5) {
                Issue.record("\(c) step \(t): w[\(i)] = \(w[i]), formula gives \(reference.w[i])")
                return
            }
            for i in state.indices where !(Self.relativeError(state[i], reference.state[i]) < 1e-5) {
                Issue.record("\(c) step \(t): state[\(i)] = \(state[i]), formula gives \(reference.state[i])")
                return
            }
        }
    }

    /// Adam's bias correction uses the step passed in (the row's own count): a row first
    /// updated late in training takes the same first step as one updated at the start.
    @Test func adamCorrectsByTheRowsOwnStep() {
        let adam = Optimizer.adam(learningRate: 0.1, beta1: 0.9, beta2: 0.999, epsilon: 1e-8)
        let g: [Float] = [0.3, -2, 0.001]
        var first = [Float](repeating: 1, count: 3), state = [Float](repeating: 0, count: 6)
        adam.apply(values: &first, state: &state, gradient: g, dimension: 3, step: 1, learningRate: 0.1)
        // With t = 1 the corrected step is lr · g / (|g| + ε): a step of about lr per coordinate.
        for i in 0..<3 {
            let expected = 1 - 0.1 * Double(g[i]) / (abs(Double(g[i])) + 1e-8)
            #expect(Self.relativeError(first[i], expected) < 1e-5, "coordinate \(i): \(first[i]) vs \(expected)")
        }
        // The same gradient as a tenth step differs (the correction is not by a global count).
        var tenth = [Float](repeating: 1, count: 3), state10 = [Float](repeating: 0, count: 6)
        adam.apply(values: &tenth, state: &state10, gradient: g, dimension: 3, step: 10, learningRate: 0.1)
        #expect(tenth != first)
    }

    /// Parameters that break rows (a zero epsilon divides 0 by 0 on a fresh row's zero
    /// gradient; FTRL divides by alpha), or are meaningless, are rejected up front: by
    /// `TableSpec.problem`, and by `createTable` as `.invalidTable` with that reason.
    @Test(arguments: [
        Optimizer.adagrad(learningRate: 0.1, epsilon: 0, initialAccumulator: 0),
        .rowwiseAdagrad(learningRate: 0.1, epsilon: 0, initialAccumulator: 0),
        .adam(learningRate: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 0),
        .adagrad(learningRate: 0.1, epsilon: -0.0, initialAccumulator: 0.1),
        .adam(learningRate: 0.01, beta1: 0.9, beta2: 0.999, epsilon: -1e-8),
        .adam(learningRate: 0.01, beta1: 1, beta2: 0.999, epsilon: 1e-8),
        .adam(learningRate: 0.01, beta1: 0.9, beta2: 1, epsilon: 1e-8),
        // Row-wise Adagrad's step lr / (sqrt(a) + eps) would be infinite on a fresh row.
        .rowwiseAdagrad(learningRate: 0.1, epsilon: .leastNonzeroMagnitude, initialAccumulator: 0),
        .rowwiseAdagrad(learningRate: 1000, epsilon: 1e-36, initialAccumulator: 0),
        .ftrl(alpha: 0, beta: 1, l1: 0, l2: 0),
        .ftrl(alpha: -0.1, beta: 1, l1: 0, l2: 0),
        .ftrl(alpha: .nan, beta: 1, l1: 0, l2: 0),
        .sgd(learningRate: .infinity),
        .sgd(learningRate: -0.01),
        .rowwiseAdagrad(learningRate: 0.1, epsilon: 1e-8, initialAccumulator: -1),
    ])
    func brokenParametersAreRejected(_ optimizer: Optimizer) throws {
        let spec = TableSpec(dimension: 3, optimizer: optimizer)
        let problem = try #require(spec.problem, "\(optimizer) must be rejected by validation")
        let directory = temporaryDirectory("strata-optimizer-validation")
        defer { removeDirectory(directory) }
        let store = try Store(path: directory)
        defer { try? store.close() }
        do {
            try store.createTable("t", spec)
            Issue.record("createTable accepted \(optimizer)")
        } catch {
            #expect(error == .invalidTable(name: "t", reason: problem), "\(optimizer): \(error)")
        }
        #expect(store.tableNames.isEmpty)
    }

    /// Whatever parameters validation accepts, down to its edges (the smallest positive
    /// epsilon and alpha, zero rates, beta, accumulators), keep rows finite under finite
    /// gradients, zero gradients included: sparse rows often get them.
    @Test(arguments: [
        Optimizer.adagrad(learningRate: 0.1, epsilon: .leastNonzeroMagnitude, initialAccumulator: 0),
        .adagrad(learningRate: 0, epsilon: 1e-8, initialAccumulator: 0),
        .rowwiseAdagrad(learningRate: 0.1, epsilon: .leastNormalMagnitude, initialAccumulator: 0),
        .rowwiseAdagrad(learningRate: 1000, epsilon: 1e-34, initialAccumulator: 0),
        .adam(learningRate: 0.01, beta1: 0.9, beta2: 0.999, epsilon: .leastNonzeroMagnitude),
        .adam(learningRate: 0.01, beta1: 0, beta2: 0, epsilon: 1e-30),
        .adam(learningRate: 0.01, beta1: Float(1).nextDown, beta2: Float(1).nextDown, epsilon: 1e-8),
        .ftrl(alpha: 0.1, beta: 0, l1: 0, l2: 0),
        .ftrl(alpha: 1e-30, beta: 0, l1: 0, l2: 0),
        .ftrl(alpha: .leastNonzeroMagnitude, beta: 1, l1: 0, l2: 0),
        .sgd(learningRate: 0),
    ])
    func acceptedParametersKeepRowsFinite(_ optimizer: Optimizer) {
        let d = 3
        let spec = TableSpec(dimension: d, optimizer: optimizer)
        #expect(spec.problem == nil, "\(optimizer) should be accepted: \(spec.problem ?? "")")
        let gradients: [[Float]] = [[0, 0, 0], [0, 0.5, 0], [0, 0, 0], [1, -1, 0], [1e-20, 0, -1e-20], [0, 0, 0]]
        var w: [Float] = [0.5, -0.25, 0]
        var state = [Float](repeating: 0, count: max(optimizer.stateCount(dimension: d), 1))
        optimizer.initializeState(&state, dimension: d)
        for (t, g) in gradients.enumerated() {
            optimizer.apply(values: &w, state: &state, gradient: g, dimension: d, step: UInt64(t + 1),
                            learningRate: optimizer.learningRate)
            let finite = w.allSatisfy { $0.isFinite } && state.allSatisfy { $0.isFinite }
            #expect(finite, "\(optimizer), accepted by validation, after gradient \(g) (step \(t + 1)): values \(w), state \(state)")
            if !finite { return }
        }
    }

    /// A batch's learning rate is checked before anything happens: NaN, infinite and
    /// negative rates (and zero for FTRL, whose alpha divides) throw `.invalidLearningRate`
    /// and leave every row as it was; zero is a valid rate for the others.
    @Test(arguments: [
        Optimizer.sgd(learningRate: 0.05),
        .adagrad(learningRate: 0.1, epsilon: 1e-8, initialAccumulator: 0.1),
        .rowwiseAdagrad(learningRate: 0.1, epsilon: 1e-8, initialAccumulator: 0),
        .adam(learningRate: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-8),
        .ftrl(alpha: 0.1, beta: 1, l1: 0.01, l2: 0.1),
    ])
    func invalidLearningRatesAreRejectedAndChangeNothing(_ optimizer: Optimizer) throws {
        let d = 4
        let directory = temporaryDirectory("strata-learning-rate")
        defer { removeDirectory(directory) }
        var options = Store.Options()
        options.budget = TierBudget(hotBytes: 16 * 1024, warmBytes: 16 * 1024)
        let store = try Store(path: directory, options: options)
        defer { try? store.close() }
        let table = try store.createTable("t", TableSpec(dimension: d, initializer: .init(.uniform(low: -1, high: 1), seed: 5),
                                                          optimizer: optimizer))
        // Rows updated before (and one checkpointed), and rows never written.
        let keys: [UInt64] = Array(0..<12)
        var rng = SplitMix64(seed: 31)
        let gradients = (0..<(keys.count * d)).map { _ in Float.random(in: -1..<1, using: &rng) }
        try table.applyGradients(Array(keys.prefix(6)), Array(gradients.prefix(6 * d)))
        try store.checkpoint()
        try table.applyGradients(Array(keys.prefix(3)), Array(gradients.prefix(3 * d)))
        let before = try keys.map { try table.row($0) }

        var bad: [Float] = [.nan, -1, .infinity, -.infinity, -Float.leastNonzeroMagnitude]
        if case .ftrl = optimizer { bad += [0, -0.0] }
        for rate in bad {
            do {
                try table.applyGradients(keys, gradients, learningRate: rate)
                Issue.record("\(optimizer): learning rate \(rate) was accepted")
            } catch {
                guard case .invalidLearningRate(let name, let value, let reason) = error else {
                    Issue.record("\(optimizer): learning rate \(rate) threw \(error)")
                    continue
                }
                #expect(name == "t" && value.bitPattern == rate.bitPattern && !reason.isEmpty,
                        "\(optimizer): \(error)")
            }
            let after = try keys.map { try table.row($0) }
            #expect(after == before, "\(optimizer): a rejected batch (learning rate \(rate)) changed rows")
            #expect(optimizer.learningRateProblem(rate) != nil)
        }

        // The table still takes valid batches; zero is a rate for all but FTRL (values stay,
        // the step is still counted).
        if case .ftrl = optimizer {} else {
            #expect(optimizer.learningRateProblem(0) == nil)
            try table.applyGradients(keys, gradients, learningRate: 0)
            let zeroStep = try keys.map { try table.row($0) }
            #expect(zeroStep.map(\.values) == before.map(\.values), "\(optimizer): learning rate 0 moved values")
            #expect(zeroStep.map(\.updateCount) == before.map { $0.updateCount + 1 })
        }
        try table.applyGradients(keys, gradients, learningRate: optimizer.learningRate * 2)
        let stepped = try keys.map { try table.row($0) }
        #expect(zip(stepped, before).allSatisfy { $0.values != $1.values }, "\(optimizer): a valid batch changed no values")
    }

    // MARK: Initializer

    static let distributions: [Initializer.Distribution] = [
        .zeros, .constant(0.75), .uniform(low: -1, high: 1), .uniform(low: 0, high: 0.001),
        .normal(mean: 0, standardDeviation: 1), .normal(mean: 3, standardDeviation: 0.01),
    ]

    static func fill(_ initializer: Initializer, key: UInt64, dimension: Int) -> [Float] {
        var out = [Float](repeating: .nan, count: dimension)
        out.withUnsafeMutableBufferPointer { initializer.fill($0.baseAddress!, key: key, dimension: dimension) }
        return out
    }

    @Test func initializerIsAFunctionOfSeedAndKey() {
        for dist in Self.distributions {
            for seed: UInt64 in [0, 1, 0xFFFF_FFFF_FFFF_FFFF] {
                let initializer = Initializer(dist, seed: seed)
                var seen: Set<[UInt32]> = []
                let keys: [UInt64] = (0..<UInt64(300)).map { $0 &* 0x1_0000_0001 } + [UInt64.max, UInt64.max - 1]
                for key in keys {
                    let a = Self.fill(initializer, key: key, dimension: 7)
                    let b = Self.fill(initializer, key: key, dimension: 7)
                    #expect(a.bitPatterns == b.bitPatterns, "\(dist) seed \(seed) key \(key): not deterministic")
                    let finite = a.allSatisfy { $0.isFinite }
                    #expect(finite, "\(dist) key \(key): \(a)")
                    // A longer row starts with the same values (the row is a stream per key).
                    #expect(Array(Self.fill(initializer, key: key, dimension: 9).prefix(7)).bitPatterns == a.bitPatterns)
                    seen.insert(a.bitPatterns)
                }
                switch dist {
                case .zeros, .constant: #expect(seen.count == 1)
                default: #expect(seen.count == 302, "\(dist) seed \(seed): different keys gave equal rows")
                }
            }
        }
        // Different seeds give different rows for the same key.
        let a = Self.fill(Initializer(.normal(mean: 0, standardDeviation: 1), seed: 1), key: 5, dimension: 4)
        let b = Self.fill(Initializer(.normal(mean: 0, standardDeviation: 1), seed: 2), key: 5, dimension: 4)
        #expect(a != b)
    }

    @Test func zerosAndConstant() {
        #expect(Self.fill(Initializer(.zeros, seed: 9), key: 3, dimension: 5).bitPatterns == [Float](repeating: 0, count: 5).bitPatterns)
        #expect(Self.fill(Initializer(.constant(-2.5), seed: 9), key: 3, dimension: 5) == [Float](repeating: -2.5, count: 5))
    }

    /// Uniform values lie in [low, high), including ranges narrow next to their magnitude,
    /// where low + (high − low)·u can round up to high.
    @Test(arguments: [(Float(-1), Float(1)), (0, 1), (-0.05, 0.05), (0, 1e-6), (1000, 1000.001), (-3, -2.999), (1, 1.0001)])
    func uniformStaysInHalfOpenRange(_ low: Float, _ high: Float) {
        let initializer = Initializer(.uniform(low: low, high: high), seed: 42)
        var smallest = Float.infinity, largest = -Float.infinity, sum = 0.0, n = 0
        var outside: [Float] = []
        for key in 0..<UInt64(3000) {
            for x in Self.fill(initializer, key: key, dimension: 8) {
                if !(x >= low && x < high) { outside.append(x) }
                smallest = min(smallest, x)
                largest = max(largest, x)
                sum += Double(x)
                n += 1
            }
        }
        let outsideCount = outside.count
        #expect(outsideCount == 0, "[\(low), \(high)): \(outsideCount) of \(n) values outside, e.g. \(outside.prefix(3))")
        // And they cover the range evenly: they come within 1% of its width of either end,
        // or, where floats are that sparse, reach low and high's predecessor.
        let width = Double(high) - Double(low)
        #expect(Double(smallest) - Double(low) < width * 0.01, "smallest \(smallest)")
        #expect(Double(high) - Double(largest) <= max(width * 0.01, Double(high) - Double(high.nextDown)), "largest \(largest)")
        #expect(abs(sum / Double(n) - (Double(low) + Double(high)) / 2) < width * 0.02)
    }

    /// Normal initializers whose draws could overflow a Float (Box-Muller reaches 8.6
    /// standard deviations: |mean| + 8.6·sd must fit) are rejected, by `TableSpec.problem`
    /// and by `createTable` as `.invalidTable`; so are non-finite or negative parameters.
    @Test(arguments: [
        Initializer.Distribution.normal(mean: 0, standardDeviation: 1e38),
        .normal(mean: 3e38, standardDeviation: 1e37),
        .normal(mean: -3e38, standardDeviation: 1e37),
        .normal(mean: 0, standardDeviation: 3.96e37),  // 8.6 sd = 3.406e38: just over
        .normal(mean: 0, standardDeviation: -1),
        .normal(mean: .nan, standardDeviation: 1),
        .normal(mean: 0, standardDeviation: .infinity),
        .uniform(low: 1, high: 0),
        .uniform(low: -.infinity, high: 0),
        .constant(.nan),
    ])
    func overflowingInitializersAreRejected(_ distribution: Initializer.Distribution) throws {
        let spec = TableSpec(dimension: 6, initializer: Initializer(distribution, seed: 3))
        let problem = try #require(spec.problem, "\(distribution) must be rejected by validation")
        let directory = temporaryDirectory("strata-initializer-validation")
        defer { removeDirectory(directory) }
        let store = try Store(path: directory)
        defer { try? store.close() }
        do {
            try store.createTable("t", spec)
            Issue.record("createTable accepted \(distribution)")
        } catch {
            #expect(error == .invalidTable(name: "t", reason: problem), "\(distribution): \(error)")
        }
    }

    /// Initializers that validation accepts, up to its edges, give finite values, in range
    /// for uniform.
    @Test(arguments: [
        Initializer.Distribution.uniform(low: -.greatestFiniteMagnitude, high: .greatestFiniteMagnitude),
        .uniform(low: -3e38, high: 1e38),
        .uniform(low: .greatestFiniteMagnitude.nextDown, high: .greatestFiniteMagnitude),
        .normal(mean: 0, standardDeviation: 3.95e37),  // 8.6 sd = 3.397e38: just under
        .normal(mean: .greatestFiniteMagnitude, standardDeviation: 1),  // rounds back to the mean
        .normal(mean: 3e38, standardDeviation: 4.5e36),
        .normal(mean: -3e38, standardDeviation: 4.5e36),
        .normal(mean: -3.4e38, standardDeviation: 0),
        .constant(.greatestFiniteMagnitude),
    ])
    func acceptedInitializersGiveFiniteValues(_ distribution: Initializer.Distribution) {
        let spec = TableSpec(dimension: 6, initializer: Initializer(distribution, seed: 3))
        #expect(spec.problem == nil, "\(distribution) should be accepted: \(spec.problem ?? "")")
        var bad: [Float] = []
        var total = 0
        for key in 0..<UInt64(2000) {
            for x in Self.fill(spec.initializer, key: key, dimension: 6) {
                total += 1
                var ok = x.isFinite
                if case .uniform(let lo, let hi) = distribution { ok = ok && x >= lo && x < hi }
                if !ok { bad.append(x) }
            }
        }
        let badCount = bad.count
        #expect(badCount == 0, "\(distribution), accepted by validation: \(badCount) of \(total) initial values non-finite or out of range, e.g. \(bad.prefix(3))")
    }

    @Test(arguments: [(Float(0), Float(1)), (3, 0.01), (-2, 5), (0, 0)])
    func normalHasTheRequestedMoments(_ mean: Float, _ sd: Float) {
        let initializer = Initializer(.normal(mean: mean, standardDeviation: sd), seed: 7)
        var values: [Double] = []
        // Odd dimension: the last value of each row comes from a half-used pair.
        for key in 0..<UInt64(4000) { values += Self.fill(initializer, key: key, dimension: 5).map(Double.init) }
        let n = Double(values.count)
        let m = values.reduce(0, +) / n
        let s = (values.map { ($0 - m) * ($0 - m) }.reduce(0, +) / (n - 1)).squareRoot()
        let sdD = Double(sd)
        // 20000 samples: the mean's standard error is sd/141, the sd's about sd/200.
        #expect(abs(m - Double(mean)) <= 0.03 * sdD + 1e-6, "mean \(m), wanted \(mean)")
        #expect(abs(s - sdD) <= 0.03 * sdD + 1e-6, "sd \(s), wanted \(sd)")
        if sd > 0 {
            // Tails: about 4.55% beyond two standard deviations, 0.27% beyond three.
            let beyond2 = Double(values.filter { abs($0 - Double(mean)) > 2 * sdD }.count) / n
            let beyond3 = Double(values.filter { abs($0 - Double(mean)) > 3 * sdD }.count) / n
            #expect(abs(beyond2 - 0.0455) < 0.006, "beyond 2 sd: \(beyond2)")
            #expect(abs(beyond3 - 0.0027) < 0.0015, "beyond 3 sd: \(beyond3)")
        }
    }

    // MARK: StorageType.round

    /// Every non-negative finite value of a 16-bit type, by bit pattern, as Double; then one
    /// more entry, the value the next pattern would have with an unbounded exponent (where
    /// rounding to nearest overflows to infinity).
    struct RepresentableValues: Sendable {
        /// The finite values in pattern order, then the overflow value.
        let all: [Double]
        let bits: @Sendable (Int) -> UInt32  // the float32 bits of pattern i
        var finiteCount: Int { all.count - 1 }
        var overflow: Double { all[finiteCount] }

        static let float16 = RepresentableValues(
            all: (0..<0x7C00).map { Double(Float16(bitPattern: UInt16($0))) } + [65536],
            bits: { Float(Float16(bitPattern: UInt16($0))).bitPattern })
        static let bfloat16 = RepresentableValues(
            all: (0..<0x7F80).map { Double(Float(bitPattern: UInt32($0) << 16)) } + [0x1p128],
            bits: { UInt32($0) << 16 })

        /// The nearest representable value by search, ties to the even pattern; as float32 bits.
        func nearest(_ x: Float) -> UInt32 {
            if x.isNaN { return Float.nan.bitPattern }
            let sign: UInt32 = x.sign == .minus ? 0x8000_0000 : 0
            let a = abs(Double(x))
            if a >= overflow { return sign | Float.infinity.bitPattern }
            // The last index whose value is <= a.
            var lo = 0, hi = finiteCount
            while lo < hi {
                let mid = (lo + hi + 1) / 2
                if all[mid] <= a { lo = mid } else { hi = mid - 1 }
            }
            var pick = lo
            if all[lo] != a {
                let below = a - all[lo], above = all[lo + 1] - a
                if above < below || (above == below && lo % 2 == 1) { pick = lo + 1 }
            }
            if pick == finiteCount { return sign | Float.infinity.bitPattern }
            return sign | bits(pick)
        }
    }

    static func rounded(_ x: Float, _ storage: StorageType) -> Float {
        var v = x
        storage.round(&v, count: 1)
        return v
    }

    static func checkRounding(_ storage: StorageType, _ table: RepresentableValues, _ inputs: [Float]) {
        var failures = 0
        for x in inputs {
            let got = rounded(x, storage)
            let want = table.nearest(x)
            let ok = x.isNaN ? got.isNaN : got.bitPattern == want
            if !ok {
                Issue.record("\(storage).round(\(x) = 0x\(String(x.bitPattern, radix: 16))) = \(got) (0x\(String(got.bitPattern, radix: 16))), nearest is \(Float(bitPattern: want)) (0x\(String(want, radix: 16)))")
                failures += 1
                if failures > 5 { return }
            }
        }
    }

    /// Each representable value, the midpoints to its successor (exact ties) and the floats
    /// either side of those midpoints, both signs.
    static func boundaryInputs(_ table: RepresentableValues, stride step: Int) -> [Float] {
        var inputs: [Float] = []
        let all = table.all
        for i in Swift.stride(from: 0, to: table.finiteCount, by: step) {
            let v = Float(all[i])
            let mid = Float((all[i] + all[i + 1]) / 2)  // exact: a 16-bit type's midpoint fits float32
            for x in [v, mid, mid.nextDown, mid.nextUp] { inputs.append(x); inputs.append(-x) }
        }
        return inputs
    }

    @Test func bfloat16RoundsToNearestEven() {
        let table = RepresentableValues.bfloat16
        Self.checkRounding(.bfloat16, table, Self.boundaryInputs(table, stride: 3))
        var rng = SplitMix64(seed: 16)
        Self.checkRounding(.bfloat16, table, (0..<20000).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())) })
        Self.checkRounding(.bfloat16, table, [0, -0, .infinity, -.infinity, .nan, .greatestFiniteMagnitude,
                                              -.greatestFiniteMagnitude, .leastNonzeroMagnitude, .leastNormalMagnitude, 1, -1, 1 / 3])
        // Two hand-checked ties: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 (even: 1);
        // 1 + 3·2^-8 halfway between 1 + 2^-7 and 1 + 2^-6 (even: 1 + 2^-6).
        #expect(Self.rounded(1 + 0x1p-8, .bfloat16) == 1)
        #expect(Self.rounded(1 + 3 * 0x1p-8, .bfloat16) == 1 + 0x1p-6)
    }

    @Test func float16RoundsToNearestEven() {
        let table = RepresentableValues.float16
        Self.checkRounding(.float16, table, Self.boundaryInputs(table, stride: 3))
        var rng = SplitMix64(seed: 17)
        // Random floats of every magnitude, and many in float16's own range (with subnormals).
        Self.checkRounding(.float16, table, (0..<10000).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())) })
        Self.checkRounding(.float16, table, (0..<10000).map { _ in
            Float(sign: Bool.random(using: &rng) ? .minus : .plus, exponent: Int.random(in: -27...17, using: &rng),
                  significand: Float.random(in: 1..<2, using: &rng))
        })
        Self.checkRounding(.float16, table, [0, -0, .infinity, -.infinity, .nan, 65504, 65519.996, 65520, -65520, 0x1p-25, 0x1p-24, 3 * 0x1p-26])
        #expect(Self.rounded(65520, .float16) == .infinity)
        #expect(Self.rounded(65519, .float16) == 65504)
        #expect(Self.rounded(1 + 0x1p-11, .float16) == 1)
        #expect(Self.rounded(1 + 3 * 0x1p-11, .float16) == 1 + 0x1p-9)
    }

    @Test func float32IsUnchangedAndRoundingIsIdempotent() {
        var rng = SplitMix64(seed: 18)
        let xs = (0..<2000).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())) }.filter { !$0.isNaN }
        #expect(xs.map { Self.rounded($0, .float32) }.bitPatterns == xs.bitPatterns)
        for storage in [StorageType.bfloat16, .float16] {
            let once = xs.map { Self.rounded($0, storage) }
            #expect(once.map { Self.rounded($0, storage) }.bitPatterns == once.bitPatterns, "\(storage)")
        }
        // round touches exactly `count` values.
        var row: [Float] = [1.001, 1.001, 1.001]
        StorageType.bfloat16.round(&row, count: 2)
        #expect(row[0] == 1 && row[1] == 1 && row[2] == 1.001)
    }
}

extension OptimizerTests {
    /// One row's values and state in Double, stepped by the textbook formulas.
    struct ReferenceOptimizerRow {
        var w: [Double]
        var state: [Double]

        /// One step with gradient `g`; `t` is the row's own step number (1 on its first update).
        mutating func step(_ optimizer: Optimizer, _ g: [Double], t: Int, lr: Double) {
            let d = w.count
            switch optimizer {
            case .sgd:
                for i in 0..<d { w[i] -= lr * g[i] }
            case .adagrad(_, let eps, _):
                // Duchi et al. 2011, diagonal: a += g², w -= lr g / (√a + ε).
                for i in 0..<d {
                    state[i] += g[i] * g[i]
                    w[i] -= lr * g[i] / (state[i].squareRoot() + Double(eps))
                }
            case .rowwiseAdagrad(_, let eps, _):
                // One accumulator per row: a += mean(g²).
                state[0] += g.map { $0 * $0 }.reduce(0, +) / Double(d)
                for i in 0..<d { w[i] -= lr * g[i] / (state[0].squareRoot() + Double(eps)) }
            case .adam(_, let b1f, let b2f, let epsf):
                // Kingma & Ba 2015, Algorithm 1, with t the row's step count.
                let b1 = Double(b1f), b2 = Double(b2f), eps = Double(epsf)
                for i in 0..<d {
                    state[i] = b1 * state[i] + (1 - b1) * g[i]
                    state[d + i] = b2 * state[d + i] + (1 - b2) * g[i] * g[i]
                    let mHat = state[i] / (1 - pow(b1, Double(t)))
                    let vHat = state[d + i] / (1 - pow(b2, Double(t)))
                    w[i] -= lr * mHat / (vHat.squareRoot() + eps)
                }
            case .ftrl(_, let betaf, let l1f, let l2f):
                // McMahan et al. 2013, Algorithm 1 (per coordinate), alpha = lr.
                let beta = Double(betaf), l1 = Double(l1f), l2 = Double(l2f), alpha = lr
                for i in 0..<d {
                    let n = state[d + i]
                    let sigma = ((n + g[i] * g[i]).squareRoot() - n.squareRoot()) / alpha
                    state[i] += g[i] - sigma * w[i]
                    state[d + i] = n + g[i] * g[i]
                    let z = state[i]
                    if abs(z) <= l1 {
                        w[i] = 0
                    } else {
                        let sgn: Double = z < 0 ? -1 : 1
                        w[i] = -(z - sgn * l1) / ((beta + state[d + i].squareRoot()) / alpha + l2)
                    }
                }
            }
        }
    }
}
