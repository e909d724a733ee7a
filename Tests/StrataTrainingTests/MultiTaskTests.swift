// Multi-task training: the mixture-of-experts layer's gradients, rows and threads; a run of one
// task through `--task` is the plain run bit for bit; the options a multi-task run refuses;
// and `strata train` on two tasks reporting each task's metrics.
import Foundation
import StrataModels
import StrataNN
import StrataStore
import StrataTestSupport
import StrataTraining
import Testing

private typealias GC = GradientCheck

@Suite(.serialized) struct MultiTaskTests {
    init() { Parallel.threads = 1 }

    static let experts = 3, width = 4, rows = 5

    /// The mixture in float64: Σₑ softmax(z)ₑ · hₑ per row, for inputs [z, h₁, …].
    static func mixture64(_ inputs: [[Double]]) -> [Double] {
        var out = [Double](repeating: 0, count: rows * width)
        for r in 0..<rows {
            let z = inputs[0][(r * experts)..<((r + 1) * experts)]
            let top = z.max()!
            let e = z.map { Foundation.exp($0 - top) }, sum = e.reduce(0, +)
            for k in 0..<experts {
                for j in 0..<width { out[r * width + j] += e[k] / sum * inputs[1 + k][r * width + j] }
            }
        }
        return out
    }

    /// The analytic gradients of every input against central differences of the float64
    /// mixture (step 1e-6: no visible truncation or rounding), and the forward against it.
    @Test func mixtureOfExpertsGradients() {
        var random = GC.Random(seed: 0x303E)
        let layer = MixtureOfExperts(experts: Self.experts, width: Self.width)
        let columns = [Self.experts] + Array(repeating: Self.width, count: Self.experts)
        // Gate logits spread over ±3: the softmax is far from uniform and from one-hot.
        let inputs = columns.enumerated().map { i, c in
            Tensor(rows: Self.rows, columns: c, values: random.values(Self.rows * c, i == 0 ? -3 : -1, i == 0 ? 3 : 1))
        }
        let weights = random.values(Self.rows * Self.width)
        let h = LayerHarness(layer, inputColumns: columns)
        for g in h.inputGradients { g.resize(rows: Self.rows); g.data.update(repeating: .nan, count: g.count) }
        let y = h.forward(inputs)
        var values = inputs.map(GC.doubles)
        let reference = Self.mixture64(values)
        GC.check("mixture forward", actual: GC.doubles(y), reference: reference, floor: 1e-3, tolerance: 1e-5)
        h.backward(Tensor(rows: Self.rows, columns: Self.width, values: weights))
        let loss = { zip(Self.mixture64(values), weights).reduce(0.0) { $0 + $1.0 * Double($1.1) } }
        for (i, tensor) in inputs.enumerated() {
            let numeric = GC.centralDifferences64(count: tensor.count, step: 1e-6, read: { values[i][$0] },
                                                  write: { values[i][$0] = $1 }, loss: loss)
            GC.check("mixture \(i == 0 ? "gate" : "expert \(i - 1)")", analytic: GC.doubles(h.inputGradients[i]), numeric: numeric,
                     floor: max(1e-4, 1e-3 * GC.scale(numeric.gradient)))
        }
    }

    /// A row's output and gradients do not depend on the other rows, nor on the thread count.
    @Test func mixtureRowsAreIndependent() {
        var random = GC.Random(seed: 0x303F)
        let columns = [Self.experts] + Array(repeating: Self.width, count: Self.experts)
        let inputs = columns.map { Tensor(rows: Self.rows, columns: $0, values: random.values(Self.rows * $0, -2, 2)) }
        let dy = Tensor(rows: Self.rows, columns: Self.width, values: random.values(Self.rows * Self.width))
        func run(_ rows: Range<Int>, threads: Int) -> (y: [UInt32], gradients: [[UInt32]]) {
            Parallel.threads = threads
            defer { Parallel.threads = 1 }
            let h = LayerHarness(MixtureOfExperts(experts: Self.experts, width: Self.width), inputColumns: columns)
            let slice = { (t: Tensor) in Tensor(rows: rows.count, columns: t.columns, values: Array(t.values[(rows.lowerBound * t.columns)..<(rows.upperBound * t.columns)])) }
            let y = h.forward(inputs.map(slice))
            h.backward(slice(dy))
            return (y.values.map(\.bitPattern), h.inputGradients.map { $0.values.map(\.bitPattern) })
        }
        let all = run(0..<Self.rows, threads: 1)
        #expect(run(0..<Self.rows, threads: 2).y == all.y)
        for r in 0..<Self.rows {
            let one = run(r..<(r + 1), threads: 1)
            #expect(one.y == Array(all.y[(r * Self.width)..<((r + 1) * Self.width)]), "row \(r)")
            for (i, c) in columns.enumerated() {
                #expect(one.gradients[i] == Array(all.gradients[i][(r * c)..<((r + 1) * c)]), "row \(r), input \(i)")
            }
        }
    }

    /// A multi-task model's output has a column per task; a model of one output refuses two.
    @Test func outputsFollowTheTasks() throws {
        let data = try MovieLens.data(.click, seed: 3)
        let directory = temporaryDirectory("strata-multitask")
        defer { removeDirectory(directory) }
        let store = try Store(path: directory, options: .small(TierBudget(hotBytes: 1 << 20, warmBytes: 0)))
        defer { try? store.close() }
        let create = { (r: TableRequest) throws -> Table in try store.createTable(r.name, TableSpec(dimension: r.dimension), budget: TierBudget(hotBytes: 1 << 20, warmBytes: 0)) }
        for name in ["shared-bottom", "mmoe"] {
            let network = try Network(spec: ModelRegistry.spec(name), schema: data.schema, seed: 1, tasks: ["click", "rating"], tables: create)
            #expect(network.output.columns == 2 && network.tasks == ["click", "rating"], "\(name)")
            let one = try Network(spec: ModelRegistry.spec(name), schema: data.schema, seed: 1, tables: create)
            #expect(one.output.columns == 1 && one.tasks == ["score"], "\(name)")
        }
        let error = #expect(throws: ModelError.self) {
            try Network(spec: ModelRegistry.spec("deep", settings: ["embedding_dim": 16]), schema: data.schema, seed: 1,
                        tasks: ["click", "rating"], tables: create)
        }
        #expect(error?.description.contains("shared-bottom, mmoe") == true, "\(String(describing: error))")
    }

    /// `--task rating:mse` alone is the run `--label rating --loss mse` makes, bit for bit.
    @Test func oneTaskIsThePlainRun() throws {
        let c = ZooCase(model: "mmoe", protocol: .click, settings: ["embedding_dim": 8, "experts": 2, "expert_mlp": [8], "tower": [4]],
                        loss: .meanSquaredError)
        func run(_ configure: (inout TrainingOptions) -> Void) throws -> (TrainedState, TrainingSummary) {
            let directory = temporaryDirectory("strata-multitask")
            defer { removeDirectory(directory) }
            let data = try MovieLens.data(.click, seed: 3)
            let training = try data.trainingData(protocol: .click, labels: ["rating"], shuffleBlock: 131_072, seed: 3)
            var options = try c.options(training.train.schema, steps: 30)
            configure(&options)
            let store = try Store(path: directory, options: .small(TierBudget(hotBytes: 8 << 20, warmBytes: 0)))
            defer { try? store.close() }
            let trainer = try Trainer(store: store, options: options, resources: TrainingResources(lookahead: 0, threads: 1),
                                      data: training, resume: false)
            let summary = try trainer.run { _ in }
            var state = try TrainedState.capture(store)
            state.dense = TrainedState.dense(trainer)
            return (state, summary)
        }
        let plain = try run { $0.label = "rating" }
        let task = try run { $0.tasks = [TrainingOptions.Task(label: "rating", loss: .meanSquaredError)] }
        // The checkpoints' payloads hold the options, which differ, and the plain run names its
        // tower "score", the task run "rating"; the rows and weights do not differ.
        var b = task.0
        #expect(!b.payload.isEmpty && b.payload != plain.0.payload)
        b.payload = plain.0.payload
        b.dense = b.dense.map { ($0.name.replacingOccurrences(of: "rating.", with: "score."), $0.bits) }
        #expect(b.dense.map(\.name) == plain.0.dense.map(\.name))
        #expect(plain.0.differences(from: b).isEmpty, "\(plain.0.differences(from: b))")
        #expect(plain.1.finalLoss.bitPattern == task.1.finalLoss.bitPattern)
        #expect(plain.1.evaluations == task.1.evaluations)
        #expect(plain.1.evaluation?["rmse"] != nil)
    }

    /// What a multi-task run refuses, each with the reason.
    @Test(arguments: [
        ([TrainingOptions.Task(label: "click", loss: .binaryCrossEntropy), .init(label: "click", loss: .meanSquaredError)], "named twice"),
        ([.init(label: "clicks", loss: .binaryCrossEntropy)], "no such label"),
        ([.init(label: "click", loss: .softmax)], "bce or mse"),
        ([.init(label: "rating", loss: .binaryCrossEntropy)], "holds ratings"),
        ([.init(label: "click", loss: .binaryCrossEntropy, weight: 0)], "positive number"),
        ([.init(label: "click", loss: .binaryCrossEntropy, weight: .nan)], "positive number"),
        ([], "at least one task"),
    ])
    func refusedTasks(_ tasks: [TrainingOptions.Task], _ reason: String) throws {
        let directory = temporaryDirectory("strata-multitask")
        defer { removeDirectory(directory) }
        let data = try MovieLens.data(.click, seed: 3)
        let training = try data.trainingData(protocol: .click, labels: [], shuffleBlock: 131_072, seed: 3)
        var options = try ZooCase.all.first { $0.model == "mmoe" }!.options(training.train.schema, steps: 1)
        options.tasks = tasks
        let store = try Store(path: directory, options: .small(TierBudget(hotBytes: 1 << 20, warmBytes: 0)))
        defer { try? store.close() }
        let error = #expect(throws: TrainingError.self) {
            try Trainer(store: store, options: options, resources: TrainingResources(lookahead: 0, threads: 1), data: training, resume: false)
        }
        #expect(error?.description.contains(reason) == true, "\(String(describing: error))")
    }

    /// `strata train` with two tasks reports each task's metrics, named by the label, and
    /// `strata recommend` ranks by the task given; --task with --loss is refused.
    @Test func commandLineReportsEachTask() throws {
        let store = temporaryDirectory("strata-multitask")
        defer { removeDirectory(store) }
        let base = ["train", "--model", "mmoe", "--data", "movielens:" + MovieLens.directory, "--protocol", "click", "--store", store,
                    "--steps", "20", "--batch-size", "128", "--set", "embedding_dim=4", "--set", "expert_mlp=[8]", "--set", "tower=[4]"]
        let result = try StrataCommand.run(base + ["--task", "click:bce", "--task", "rating:mse:0.5"])
        #expect(result.status == 0, "\(result.output)")
        let test = try #require(result.lines.last { $0.contains("test") && $0.contains("click.auc") }, "\(result.output)")
        #expect(test.contains("rating.rmse") && test.contains("rating.mae") && test.contains("click.logloss"), "\(test)")
        // recommend ranks by the task it is told, and asks for one.
        let data = ["--data", "movielens:" + MovieLens.directory, "--protocol", "click", "--user", "196"]
        let byRating = try StrataCommand.run(["recommend", store] + data + ["--task", "rating", "--json"])
        #expect(byRating.status == 0, "\(byRating.output)")
        let byClick = try StrataCommand.run(["recommend", store] + data + ["--task", "click", "--json"])
        #expect(byClick.status == 0 && byClick.output != byRating.output, "\(byClick.output)")
        let none = try StrataCommand.run(["recommend", store] + data)
        #expect(none.status != 0 && none.error?.contains("--task") == true && none.output.contains("click, rating"), "\(none.output)")
        let unknown = try StrataCommand.run(["recommend", store] + data + ["--task", "likes"])
        #expect(unknown.status != 0 && unknown.error?.contains("--task likes") == true, "\(unknown.output)")
        let refused = try StrataCommand.run(base + ["--overwrite", "--task", "click:bce", "--loss", "mse"])
        #expect(refused.status != 0 && refused.error?.contains("--task") == true, "\(refused.output)")
        let unknownLabel = try StrataCommand.run(base + ["--overwrite", "--task", "likes:bce"])
        #expect(unknownLabel.status != 0 && unknownLabel.output.contains("likes"), "\(unknownLabel.output)")
    }
}
