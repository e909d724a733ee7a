// The engine every model runs on. A model builds a graph over what the builder gives it
// (the dense features, embeddings of categorical features); the network then runs a step the
// same way for all of them:
//
//   batch ─▶ per table: keys of every use de-duplicated, one store lookup (tables in parallel)
//         ─▶ graph forward (layers in order) ─▶ score per row
//   dL/dscore ─▶ graph backward (layers in reverse) ─▶ dense gradients in the parameters
//             ─▶ per table: row gradients summed over uses, one store optimizer step (in parallel)
public import StrataNN
public import StrataStore

/// What a table is for in a model, which decides its default spec (`TableRequest`).
public enum TableRole: String, Sendable, Codable {
    /// Embedding vectors: the sparse optimizer and the embedding initializer.
    case embedding
    /// A learned scalar per key (MF's user and item biases, FM's first-order weights): the
    /// sparse optimizer, starting at zero.
    case bias
    /// A wide linear model's weights (Wide & Deep): the wide optimizer (FTRL by default),
    /// starting at zero.
    case wide
}

/// A table a model asks for: the provider creates it (or opens it) with the spec the
/// training options and the schema's table settings give this role and dimension.
public struct TableRequest: Sendable, Equatable {
    public var name: String
    public var role: TableRole
    public var dimension: Int
}

public typealias TableProvider = (TableRequest) throws -> Table

/// What a model file uses to build its graph.
public final class ModelBuilder {
    public let schema: FeatureSchema
    public let graph = Graph()
    private let provider: TableProvider
    private let weightDecay: Float

    struct Lookup {
        var lookup: TableLookup
        var role: TableRole
        /// Per use: the feature it reads, and the graph input holding its pooled rows.
        var features: [Int] = []
        var values: [Graph.Value] = []
    }
    private(set) var lookups: [Lookup] = []
    let denseTensor: Tensor?
    /// The dense features, one row per sample, or nil when the schema has none.
    public let dense: Graph.Value?

    init(schema: FeatureSchema, weightDecay: Float, provider: @escaping TableProvider) {
        self.schema = schema
        self.provider = provider
        self.weightDecay = weightDecay
        if schema.dense.isEmpty {
            denseTensor = nil
            dense = nil
        } else {
            let t = Tensor(rows: 0, columns: schema.dense.count)
            denseTensor = t
            dense = graph.input("dense", t, trainable: false)
        }
    }

    /// Every categorical feature (read from data, then crosses).
    public var features: [FeatureSchema.Categorical] { schema.categorical }
    /// The categorical features read from data (not crosses).
    public var readFeatures: [FeatureSchema.Categorical] { Array(schema.categorical.prefix(schema.readFeatures)) }
    /// The crosses.
    public var crosses: [FeatureSchema.Categorical] { Array(schema.categorical.dropFirst(schema.readFeatures)) }

    /// The user and item features, or an error saying the data does not name them.
    public func userAndItem(for model: String) throws -> (user: String, item: String) {
        guard let u = schema.user, let i = schema.item else {
            throw ModelError("\(model) needs the data to name its user and item features (the schema's \"user\" and \"item\")")
        }
        return (u, i)
    }

    /// Feature `name`'s embedding: one vector per row (a bag pooled as the schema says), from
    /// the table `prefix.table` (the feature's table, or one of its own per prefix, such as
    /// NeuMF's two towers), of `dimension` unless the schema's table settings say otherwise.
    public func embedding(_ name: String, dimension: Int, prefix: String? = nil) throws -> Graph.Value {
        try use(name, role: .embedding, dimension: dimension, prefix: prefix)
    }

    /// Feature `name`'s learned scalar per key (table `table.bias`).
    public func bias(_ name: String) throws -> Graph.Value { try use(name, role: .bias, dimension: 1, prefix: nil) }

    /// Feature `name`'s wide weight per key (table `table.wide`).
    public func wide(_ name: String) throws -> Graph.Value { try use(name, role: .wide, dimension: 1, prefix: nil) }

    /// Embeddings of `dimension` for each of `features` (names), in that order.
    public func embeddings(_ features: [String], dimension: Int) throws -> [Graph.Value] {
        try features.map { try embedding($0, dimension: dimension) }
    }

    /// The values side by side (the value itself if there is one): a deep tower's input.
    public func concat(_ name: String, _ values: [Graph.Value]) throws -> Graph.Value {
        precondition(!values.isEmpty, "nothing to concatenate")
        return values.count == 1 ? values[0] : try add(name, Concat(), values)
    }

    /// `graph.add`, for brevity in model files.
    public func add(_ name: String, _ layer: any Layer, _ inputs: [Graph.Value]) throws -> Graph.Value {
        try graph.add(name, layer, inputs)
    }

    private func use(_ name: String, role: TableRole, dimension: Int, prefix: String?) throws -> Graph.Value {
        guard let f = schema.categoricalIndex(name) else {
            throw ModelError("the model reads feature '\(name)', which the data does not have")
        }
        let feature = schema.categorical[f]
        let base = prefix.map { "\($0).\(feature.table)" } ?? feature.table
        let table = switch role {
        case .embedding: base
        case .bias: "\(base).bias"
        case .wide: "\(base).wide"
        }
        let width = schema.tables[table]?.dimension ?? dimension
        if let l = lookups.firstIndex(where: { $0.lookup.table.name == table }) {
            guard lookups[l].role == role, lookups[l].lookup.dimension == width else {
                throw ModelError("table '\(table)' is asked for as \(role) of dimension \(width) and as \(lookups[l].role) of dimension \(lookups[l].lookup.dimension)")
            }
            // The same feature read twice from one table is one use.
            if let u = lookups[l].features.firstIndex(of: f) { return lookups[l].values[u] }
            return addUse(l, feature: f)
        }
        let t = try provider(TableRequest(name: table, role: role, dimension: width))
        guard t.spec.dimension == width else {
            throw ModelError("table '\(table)' has dimension \(t.spec.dimension), the model wants \(width)")
        }
        lookups.append(Lookup(lookup: TableLookup(table: t, weightDecay: role == .wide ? 0 : weightDecay), role: role))
        return addUse(lookups.count - 1, feature: f)
    }

    private func addUse(_ l: Int, feature f: Int) -> Graph.Value {
        let lookup = lookups[l].lookup
        let u = lookup.addUse(pooling: schema.categorical[f].pooling)
        let value = graph.input("\(lookup.table.name)[\(schema.categorical[f].name)]", lookup.outputs[u], trainable: true)
        lookups[l].features.append(f)
        lookups[l].values.append(value)
        return value
    }
}

/// A model ready to train: its graph, its tables and the engine's step.
public final class Network {
    public let spec: ModelSpec
    public let schema: FeatureSchema
    public let graph: Graph
    /// The score per row.
    public let output: Graph.Value
    /// The dense parameters, in graph order.
    public let parameters: [Parameter]
    /// Every table the model reads, in the order it asked for them.
    public var tables: [Table] { lookups.map(\.lookup.table) }
    public let seed: UInt64

    private let lookups: [ModelBuilder.Lookup]
    private let denseTensor: Tensor?

    /// Builds model `spec` on `schema`: `tables` gives the store tables the model asks for;
    /// the dense weights are drawn from `seed`. `weightDecay` is the L2 regularisation of
    /// embedding and bias rows (`TableLookup.weightDecay`).
    public init(spec: ModelSpec, schema: FeatureSchema, seed: UInt64, weightDecay: Float = 0,
                tables: @escaping TableProvider) throws {
        if let problem = schema.problem { throw ModelError("the feature schema is not usable: \(problem)") }
        if let problem = ModelRegistry.problem(spec, schema: schema) { throw ModelError(problem) }
        let builder = ModelBuilder(schema: schema, weightDecay: weightDecay, provider: tables)
        let output: Graph.Value
        do { output = try ModelRegistry.build(spec, builder) } catch let error as GraphError {
            let set = schema.tables.filter { $0.value.dimension != nil }.keys.sorted()
            guard !set.isEmpty else { throw ModelError("model \(spec.name): \(error)") }
            throw ModelError("model \(spec.name): \(error): the schema sets the dimension of table \(set.joined(separator: ", ")), "
                             + "and \(spec.name) may need its embeddings of one width; drop the setting, or train a model that "
                             + "concatenates embeddings (deep, wide-deep, dcn-v2)")
        }
        guard output.columns == 1 else { throw ModelError("model \(spec.name) scores \(output.columns) columns a row, not 1") }
        self.spec = spec
        self.schema = schema
        self.seed = seed
        graph = builder.graph
        self.output = output
        lookups = builder.lookups
        denseTensor = builder.denseTensor
        graph.initialize(seed: seed)
        parameters = graph.parameters
    }

    /// The scores of a batch (`batch.count × 1`). In training, rows come to the hot tier
    /// (`lookup`) and dropout drops; otherwise nothing in the store moves (`peek`).
    @discardableResult
    public func forward(_ batch: Batch, training: Bool, step: Int) throws(StoreError) -> Tensor {
        precondition(batch.schema == schema, "the batch's schema is not the model's")
        let rows = batch.count
        if let d = denseTensor {
            d.resize(rows: rows)
            d.data.update(from: batch.dense, count: rows * d.columns)
        }
        // Tables are independent: each is looked up by one thread, in the same order every run.
        try Parallel.forEach(lookups.count) { (l) throws(StoreError) in
            let lookup = lookups[l]
            try lookup.lookup.forward(training: training) { u in batch.keys(of: lookup.features[u]) }
        }
        graph.forward(rows: rows, pass(training, step))
        return graph.tensor(output)
    }

    /// Backward from d(loss)/d(score) after `forward`: dense gradients into the parameters,
    /// then one sparse optimizer step per table in the store.
    public func backward(_ gradient: Tensor, step: Int, sparseLearningRate: Float? = nil) throws(StoreError) {
        graph.backward([(output, gradient)], pass(true, step))
        try Parallel.forEach(lookups.count) { (l) throws(StoreError) in
            let lookup = lookups[l]
            try lookup.lookup.backward(learningRate: sparseLearningRate) { u in graph.gradient(of: lookup.values[u]) }
        }
    }

    /// Brings the rows a batch will read to the hot tier, computing nothing (the look-ahead).
    /// `scratch` is the caller's; this may run on another thread than training.
    public func warm(_ batch: Batch, scratch: inout [Float]) throws(StoreError) {
        for lookup in lookups {
            for f in lookup.features { try TableLookup.warm(lookup.lookup.table, batch.keys(of: f).keys, scratch: &scratch) }
        }
    }

    private func pass(_ training: Bool, _ step: Int) -> Pass { Pass(training: training, step: UInt64(max(step, 0)), seed: seed) }
}
