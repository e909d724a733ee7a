// BERT4Rec's parts: the layers it adds (GatherPositions, PositionwiseLinear) against float64
// central differences; the softmax's rows without a class; the Cloze masking of a batch (what
// it masks, at what rates, the same draws for the same step, the mask after the history at
// inference); and the network, whose inference reads the last `max_length − 1` items only and
// whose retrieval query gives the scores `forward` does. Learning, budgets, threads and the
// SIGKILL resume run in the zoo's tests (`ZooCase` "bert4rec").
import Foundation
import StrataModels
import StrataNN
import StrataStore
import StrataTestSupport
import Testing

private typealias GC = GradientCheck

@Suite(.serialized) struct MaskedItemTests {
    init() { Parallel.threads = 1 }

    // MARK: Layers

    /// Rows of 5 positions of width 3, 3 slots: a slot unused, and a position named twice (its
    /// gradient the sum). Positions no slot names hold NaN, and no output or gradient sees it.
    @Test func gatherPositionsGradients() {
        var random = GC.Random(seed: 0xB4_01)
        let (rows, steps, width, slots) = (4, 5, 3, 3)
        let positions: [Float] = [0, 4, -1, 2, 2, 1, -1, -1, -1, 3, 0, 4]
        let x = random.tensor(rows, steps * width)
        var named = Set<Int>()
        for r in 0..<rows {
            for j in 0..<slots where positions[r * slots + j] >= 0 { named.insert(r * steps + Int(positions[r * slots + j])) }
        }
        for r in 0..<rows { for t in 0..<steps where !named.contains(r * steps + t) { for i in 0..<width { x.row(r)[t * width + i] = .nan } } }
        let layer = GatherPositions(width: width, steps: steps, slots: slots)
        let h = LayerHarness(layer, inputColumns: [steps * width, slots])
        let y = h.forward([x, Tensor(rows: rows, columns: slots, values: positions)])
        func reference(_ x: [Double]) -> [Double] {
            (0..<rows).flatMap { r in (0..<slots).flatMap { j -> [Double] in
                let p = Int(positions[r * slots + j])
                return p < 0 ? [Double](repeating: 0, count: width) : (0..<width).map { x[(r * steps + p) * width + $0] }
            } }
        }
        var values = GC.doubles(x)
        #expect(GC.doubles(y) == reference(values), "the gathered states are the named positions' values, zeros for an unused slot")
        let weights = random.values(rows * slots * width)
        h.backward(Tensor(rows: rows, columns: slots * width, values: weights), need: [true, false])
        let gradient = GC.doubles(h.inputGradients[0])
        // Where no slot reads, the gradient is exactly 0; elsewhere it matches the differences.
        for r in 0..<rows { for t in 0..<steps where !named.contains(r * steps + t) {
            #expect((0..<width).allSatisfy { gradient[(r * steps + t) * width + $0] == 0 }, "row \(r) position \(t)")
            for i in 0..<width { values[(r * steps + t) * width + i] = 0 }
        } }
        let numeric = GC.centralDifferences64(count: values.count, step: 1e-6, read: { values[$0] }, write: { values[$0] = $1 }) {
            zip(reference(values), weights).reduce(0.0) { $0 + $1.0 * Double($1.1) }
        }
        GC.check("gather positions", analytic: gradient, numeric: numeric, floor: 1e-4)
    }

    /// y = x · Wᵀ + b at each of 3 positions: x, W and b against float64 central differences.
    @Test func positionwiseLinearGradients() {
        var random = GC.Random(seed: 0xB4_02)
        let (rows, steps, inputs, outputs) = (4, 3, 5, 2)
        let layer = PositionwiseLinear("head", inputs: inputs, outputs: outputs, steps: steps)
        for p in layer.parameters { random.fill(p.value, -0.8, 0.8) }
        let x = random.tensor(rows, steps * inputs)
        let h = LayerHarness(layer, inputColumns: [steps * inputs])
        var values = [GC.doubles(x), GC.doubles(layer.weight.value), GC.doubles(layer.bias.value)]
        func reference() -> [Double] {
            (0..<(rows * steps)).flatMap { p in (0..<outputs).map { o in
                values[2][o] + (0..<inputs).reduce(0.0) { $0 + values[1][o * inputs + $1] * values[0][p * inputs + $1] }
            } }
        }
        let y = h.forward([x])
        GC.check("positionwise linear forward", actual: GC.doubles(y), reference: reference(), floor: 1e-3, tolerance: 1e-5)
        let weights = random.values(rows * steps * outputs)
        h.backward(Tensor(rows: rows, columns: steps * outputs, values: weights))
        let analytic = [GC.doubles(h.inputGradients[0]), GC.doubles(layer.weight.gradient), GC.doubles(layer.bias.gradient)]
        for (i, name) in ["input", "weight", "bias"].enumerated() {
            let numeric = GC.centralDifferences64(count: values[i].count, step: 1e-6, read: { values[i][$0] }, write: { values[i][$0] = $1 }) {
                zip(reference(), weights).reduce(0.0) { $0 + $1.0 * Double($1.1) }
            }
            GC.check("positionwise linear \(name)", analytic: analytic[i], numeric: numeric, floor: max(1e-4, 1e-3 * GC.scale(numeric.gradient)))
        }
    }

    /// A row of class −1 adds nothing: the loss and the other rows' gradients are those of the
    /// batch without it, bit for bit, and its own gradient is 0.
    @Test func softmaxSkipsRowsWithoutAClass() {
        var random = GC.Random(seed: 0xB4_03)
        let z = random.tensor(4, 6, -3, 3)
        let classes: [Int32] = [2, -1, 5, -1]
        let all = Tensor(rows: 0, columns: 6), kept = Tensor(rows: 0, columns: 6)
        let loss = classes.withUnsafeBufferPointer { Loss.softmax.evaluate(z, labels: .classes($0.baseAddress!), gradient: all) }
        let two = Tensor(rows: 2, columns: 6, values: Array(z.values[0..<6]) + Array(z.values[12..<18]))
        let keptClasses: [Int32] = [2, 5]
        let keptLoss = keptClasses.withUnsafeBufferPointer { Loss.softmax.evaluate(two, labels: .classes($0.baseAddress!), gradient: kept) }
        #expect(loss.bitPattern == keptLoss.bitPattern, "\(loss) vs \(keptLoss)")
        let g = all.values.map(\.bitPattern), k = kept.values.map(\.bitPattern)
        #expect(Array(g[0..<6]) == Array(k[0..<6]) && Array(g[12..<18]) == Array(k[6..<12]))
        #expect(g[6..<12].allSatisfy { $0 == 0 } && g[18..<24].allSatisfy { $0 == 0 })
    }

    // MARK: The Cloze masking

    static let schema = FeatureSchema(categorical: [.init("history", table: "item", multiValued: true), .init("item", table: "item")],
                                      labels: [], item: "item", sequence: "history")

    /// `rows` samples: row r has a history of r % 15 items (0 to 14) and its own item, all distinct.
    static func batch(rows: Int) -> Batch {
        let b = Batch(schema: schema)
        let histories = (0..<rows).map { r in (0..<(r % 15)).map { UInt64(r * 100 + $0 + 1) } }
        let items: [[UInt64]] = (0..<rows).map { r in [UInt64(r * 100 + 99)] }
        b.set(rows: rows, labels: [], dense: [], keys: [histories, items])
        return b
    }

    struct Masked: Equatable {
        var keys: [[UInt64]]
        var positions: [[Float]]
        var targets: [[UInt64]]
    }

    static func mask(_ batch: Batch, steps: Int, _ masking: ClozeMasking, training: Bool, step: UInt64, seed: UInt64 = 7) -> Masked {
        let input = ClozeInput(history: 0, target: 1, steps: steps, masking: masking)
        input.prepare(batch, training: training, pass: (step, seed, 0))
        let s = masking.slots
        return Masked(
            keys: (0..<batch.count).map { Array(input.keys[Int(input.offsets[$0])..<Int(input.offsets[$0 + 1])]) },
            positions: (0..<batch.count).map { Array(UnsafeBufferPointer(start: input.positions.row($0), count: s)) },
            targets: training ? (0..<batch.count).map { Array(input.targets[($0 * s)..<(($0 + 1) * s)]) } : [])
    }

    /// Each row: the history's last 9 items then its own; the masked positions hold the mask;
    /// the slots name the last of them, in ascending order, and their targets are the items they
    /// replaced; the rest is the sequence unchanged.
    @Test func trainingMasksTheSequenceOfHistoryAndItem() {
        let rows = 3000, steps = 10, mask = ClozeMasking.maskKey
        let batch = Self.batch(rows: rows)
        let masking = ClozeMasking(ratio: 0.2, lastOnly: 0.5, slots: 2)
        let m = Self.mask(batch, steps: steps, masking, training: true, step: 3)
        var truncated = 0, lastOnly = 0, expectedLastOnly = 0.0
        for r in 0..<rows {
            let history = Array(batch.keys(of: 0, row: r)), item = batch.keys(of: 1, row: r)[0]
            let sequence = Array(history.suffix(steps - 1)) + [item]
            #expect(m.keys[r].count == sequence.count, "row \(r)")
            let used = m.positions[r].filter { $0 >= 0 }.map { Int($0) }
            #expect(used == used.sorted() && Set(used).count == used.count, "row \(r): positions \(m.positions[r])")
            #expect(m.positions[r].prefix(used.count).allSatisfy { $0 >= 0 }, "row \(r): used slots come first")
            let masked = sequence.indices.filter { m.keys[r][$0] == mask }
            #expect(used == Array(masked.suffix(masking.slots)), "row \(r): slots \(used), masked \(masked)")
            for t in sequence.indices where !masked.contains(t) { #expect(m.keys[r][t] == sequence[t], "row \(r) position \(t)") }
            #expect(Array(m.targets[r].prefix(used.count)) == used.map { sequence[$0] }, "row \(r): the targets are the masked items")
            #expect(m.targets[r].dropFirst(used.count).allSatisfy { $0 == mask }, "row \(r): an unused slot has no target")
            if masked.count > masking.slots { truncated += 1 }
            if used == [sequence.count - 1] { lastOnly += 1 }
            // Last position alone: the last-only draw, or the per-position draws masking it alone.
            let n = Double(sequence.count)
            expectedLastOnly += 0.5 + 0.5 * 0.2 * pow(0.8, n - 1)
        }
        #expect(truncated > 0, "no row drew more masks than it keeps")
        let share = Double(lastOnly) / Double(rows), expected = expectedLastOnly / Double(rows)
        #expect(abs(share - expected) < 0.03, "rows masked at their item alone: \(share), expected \(expected)")
    }

    /// Without the last-only draw and with room for every mask, each position is masked with
    /// the ratio's probability.
    @Test(arguments: [Float(0.2), 0.5])
    func positionsAreMaskedAtTheRatio(_ ratio: Float) {
        let batch = Self.batch(rows: 3000)
        let m = Self.mask(batch, steps: 16, ClozeMasking(ratio: ratio, lastOnly: 0, slots: 16), training: true, step: 11)
        let positions = m.keys.reduce(0) { $0 + $1.count }
        let masked = m.keys.reduce(0) { $0 + $1.filter { $0 == ClozeMasking.maskKey }.count }
        let share = Double(masked) / Double(positions)
        #expect(abs(share - Double(ratio)) < 0.02, "masked \(share) of \(positions) positions at ratio \(ratio)")
    }

    /// The draws are a function of (seed, step, row): the same step masks the same positions,
    /// another step or seed others.
    @Test func theSameStepMasksTheSamePositions() {
        let batch = Self.batch(rows: 500)
        let masking = ClozeMasking(ratio: 0.2, lastOnly: 0.5, slots: 3)
        let a = Self.mask(batch, steps: 10, masking, training: true, step: 5)
        #expect(a == Self.mask(batch, steps: 10, masking, training: true, step: 5))
        #expect(a != Self.mask(batch, steps: 10, masking, training: true, step: 6))
        #expect(a != Self.mask(batch, steps: 10, masking, training: true, step: 5, seed: 8))
    }

    /// At inference the sequence is the history's last `steps − 1` items and the mask, and slot
    /// 0 names the mask's position; nothing is drawn.
    @Test func inferenceAppendsTheMask() {
        let batch = Self.batch(rows: 40)
        let masking = ClozeMasking(ratio: 0.2, lastOnly: 0.5, slots: 2)
        let m = Self.mask(batch, steps: 10, masking, training: false, step: 5)
        #expect(m == Self.mask(batch, steps: 10, masking, training: false, step: 9, seed: 1))
        for r in 0..<batch.count {
            let history = Array(batch.keys(of: 0, row: r).suffix(9))
            #expect(m.keys[r] == history + [ClozeMasking.maskKey], "row \(r)")
            #expect(m.positions[r] == [Float(history.count), -1], "row \(r)")
        }
    }

    // MARK: The network

    static func network(_ scratch: ScratchStore) throws -> Network {
        let spec = try ModelRegistry.spec("bert4rec", settings: ["hidden_size": 8, "layers": 1, "heads": 2, "inner_size": 16, "max_length": 6])
        return try Network(spec: spec, schema: schema, seed: 3) { request in
            try scratch.table(request.name, dimension: request.dimension, seed: 1, range: 0.5)
        }
    }

    /// Items before a history's last `max_length − 1` change no score at inference, and the
    /// retrieval query's inner products with the items are `forward`'s scores.
    @Test func inferenceReadsTheRecentItemsAndTheQueryScoresAsForward() throws {
        let scratch = try ScratchStore("strata-bert4rec")
        let network = try Self.network(scratch)
        let catalog = (1...30).map { UInt64($0) }
        try network.setCandidates(catalog)
        let recent: [[UInt64]] = [[3, 4, 5, 6, 7], [9], [], [2, 2, 8, 1, 4]]
        let older: [[UInt64]] = [[11, 12], [], [], [14, 15, 16]]  // only before full windows
        func scores(_ histories: [[UInt64]]) throws -> [UInt32] {
            let b = Batch(schema: Self.schema)
            b.set(rows: histories.count, labels: [], dense: [], keys: [histories, histories.map { _ in [1] }])
            return try network.forward(b, training: false, step: 1).values.map(\.bitPattern)
        }
        let plain = try scores(recent)
        #expect(plain == (try scores(zip(older, recent).map { $0 + $1 })), "items before the last five changed a score")
        #expect(plain.count == recent.count * catalog.count)

        let b = Batch(schema: Self.schema)
        b.set(rows: recent.count, labels: [], dense: [], keys: [recent, recent.map { _ in [1] }])
        let q = try network.query(b, step: 1)
        #expect(q.rows == recent.count && q.columns == 8)
        let items = try network.tables[0].peek(catalog)
        let z = try network.forward(b, training: false, step: 1)
        for r in 0..<q.rows {
            for (c, _) in catalog.enumerated() {
                let dot = (0..<8).reduce(Float(0)) { $0 + q.row(r)[$1] * items[c * 8 + $1] }
                #expect(abs(dot - z[r, c]) <= 1e-5 * max(1, abs(dot)), "row \(r) item \(c): \(dot) vs \(z[r, c])")
            }
        }
    }
}
