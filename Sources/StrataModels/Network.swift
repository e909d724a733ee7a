// The engine every model runs on. A model builds a graph over what the builder gives it
// (the dense features, embeddings of categorical features); the network then runs a step the
// same way for all of them:
//
//   batch ─▶ per table: keys of every use de-duplicated, one store lookup (tables in parallel)
//         ─▶ graph forward (layers in order) ─▶ score per row
//   dL/dscore ─▶ graph backward (layers in reverse) ─▶ dense gradients in the parameters
//             ─▶ per table: row gradients summed over uses, one store optimizer step (in parallel)
//
// A next-item model scores a query per row against the candidate items' vectors (their rows,
// or an item tower's outputs: a second graph run over one row per candidate).
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
    /// The graph layers go to: the network's, or the item tower's while `itemTower` builds it.
    public var graph: Graph { buildingTower ? towerGraph : mainGraph }
    let mainGraph = Graph()
    /// The item tower's layers, run over the candidate items (`itemTower`).
    let towerGraph = Graph()
    private var buildingTower = false
    private let provider: TableProvider
    private let weightDecay: Float

    struct Lookup {
        var lookup: TableLookup
        var role: TableRole
        /// Per use: the feature it reads (`candidatesUse`: the candidate items; `clozeUse`: the
        /// masked sequence), the graph input holding its pooled rows or its sequence (nil: the
        /// candidates), whether it is a sequence, and whether it reads the candidate items'
        /// rows for the item tower instead of the batch's.
        var features: [Int] = []
        var values: [Graph.Value?] = []
        var sequences: [Bool] = []
        var candidateSide: [Bool] = []

        mutating func append(feature: Int, value: Graph.Value?, sequence: Bool, candidateSide: Bool = false) {
            features.append(feature)
            values.append(value)
            sequences.append(sequence)
            self.candidateSide.append(candidateSide)
        }
    }
    private(set) var lookups: [Lookup] = []
    let denseTensor: Tensor?
    /// The dense features, one row per sample, or nil when the schema has none.
    public let dense: Graph.Value?

    /// The tasks the model predicts, one output column each, in order: the labels of a
    /// multi-task run, or ["score"] (one column) for a run of one.
    public let tasks: [String]

    init(schema: FeatureSchema, weightDecay: Float, tasks: [String], provider: @escaping TableProvider) {
        self.schema = schema
        self.tasks = tasks.isEmpty ? ["score"] : tasks
        self.provider = provider
        self.weightDecay = weightDecay
        if schema.dense.isEmpty {
            denseTensor = nil
            dense = nil
        } else {
            let t = Tensor(rows: 0, columns: schema.dense.count)
            denseTensor = t
            dense = mainGraph.input("dense", t, trainable: false)
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

    /// Feature `name`'s bag as a sequence (a history, oldest first) of embeddings of
    /// `dimension`: `items` holds its last `steps` rows per sample, left-aligned with zero
    /// padding, `lengths` the real positions per sample (`TableLookup.addSequenceUse`).
    public func sequence(_ name: String, dimension: Int, steps: Int, prefix: String? = nil) throws
        -> (items: Graph.Value, lengths: Graph.Value) {
        let (l, f) = try sequenceTable(name, dimension: dimension, prefix: prefix)
        let (items, lengths, _) = sequenceUse(l, feature: f, use: f, steps: steps, suffix: "")
        return (items, lengths)
    }

    /// Feature `name`'s table for a sequence use, refusing a feature that is not a bag and the
    /// item tower (which reads one row per candidate).
    private func sequenceTable(_ name: String, dimension: Int, prefix: String?) throws -> (lookup: Int, feature: Int) {
        guard !buildingTower else { throw ModelError("the item tower reads the candidate items' features, not a sequence") }
        let (l, f) = try table(name, role: .embedding, dimension: dimension, prefix: prefix)
        guard Batch.isBag(schema.categorical[f], in: schema) else {
            throw ModelError("the model reads feature '\(name)' as a sequence; it must hold a bag of keys per sample")
        }
        return (l, f)
    }

    /// A sequence use of lookup `l` for feature `f`, its keys read as `use` says (`Lookup.features`).
    /// Returns the graph inputs and the name they go by.
    private func sequenceUse(_ l: Int, feature f: Int, use: Int, steps: Int, suffix: String)
        -> (items: Graph.Value, lengths: Graph.Value, name: String) {
        let lookup = lookups[l].lookup
        let u = lookup.addSequenceUse(steps: steps)
        let name = "\(lookup.table.name)[\(schema.categorical[f].name)\(suffix)]"
        let items = graph.input(name, lookup.outputs[u], trainable: true)
        let lengths = graph.input(name + ".lengths", lookup.lengths[u]!, trainable: false)
        lookups[l].append(feature: use, value: items, sequence: true)
        return (items, lengths, name)
    }

    /// Makes the model a next-item model: its output is `query`, one vector per sample, and an
    /// item's score is the inner product of the query with the item's embedding (feature
    /// `item`'s table, of the query's width), so that scoring every item of the catalog, or
    /// sampled ones, is one product, and retrieval can search the item table. Training
    /// then minimises the softmax cross-entropy of each sample's own item (`Loss.softmax`).
    ///
    /// A model over a masked sequence (`maskedSequence`) gives a query per slot, `slots`
    /// side by side: training scores every slot against its masked item; inference reads slot 0,
    /// the mask after the history.
    ///
    /// With an item tower (`itemTower`), an item's vector is the tower's output for it instead
    /// of its embedding.
    public func scoreItems(_ query: Graph.Value, item: String, slots: Int = 1) throws {
        precondition(candidates == nil, "the items are scored once")
        precondition(!buildingTower, "the items are scored by the network, not by the item tower")
        precondition(slots >= 1 && query.columns % slots == 0, "a query per slot")
        precondition(slots == (cloze?.masking.slots ?? 1), "a query per slot of the masked sequence")
        let width = query.columns / slots
        guard let f = schema.categoricalIndex(item), !Batch.isBag(schema.categorical[f], in: schema) else {
            throw ModelError("the model scores feature '\(item)' as the item; the data must have it, one key per sample")
        }
        if let tower {
            guard tower.columns == width else { throw ModelError("the query has \(width) columns, the item tower's vectors \(tower.columns)") }
            candidates = Candidates(lookup: nil, target: f, query: query, slots: slots, vectors: tower)
            return
        }
        let (l, _) = try table(item, role: .embedding, dimension: width, prefix: nil)
        guard lookups[l].lookup.dimension == width else {
            throw ModelError("the query has \(width) columns, the item table '\(lookups[l].lookup.table.name)' \(lookups[l].lookup.dimension)")
        }
        candidates = Candidates(lookup: (l, lookups[l].lookup.addUse(pooling: .sum)), target: f, query: query, slots: slots, vectors: nil)
        lookups[l].append(feature: Self.candidatesUse, value: nil, sequence: false)
    }

    /// The items a next-item model scores: a use of the item table outside the graph (the
    /// lookup and its use), or the item tower's output.
    struct Candidates {
        var lookup: (table: Int, use: Int)?
        /// The feature holding each sample's own item.
        var target: Int
        var query: Graph.Value
        /// Queries a sample: 1, or a masked sequence's slots.
        var slots: Int
        /// The item tower's output, one vector per candidate.
        var vectors: Graph.Value?
    }
    private(set) var candidates: Candidates?

    /// Builds the item tower: `build` adds layers (`add`, `embedding`, `concat`) over the
    /// features of the candidate items, one row per candidate, with the item side's features
    /// and the item id (`FeatureSchema.Side.item`; a table is one table whichever side reads
    /// it, and its rows get one optimizer step a batch), and returns their vectors, which
    /// `scoreItems` then scores queries against. The callers give each candidate's features
    /// (`Network.candidateRows`).
    public func itemTower(_ build: () throws -> Graph.Value) throws -> Graph.Value {
        precondition(!buildingTower && tower == nil && candidates == nil, "one item tower, built before the items are scored")
        buildingTower = true
        defer { buildingTower = false }
        let vectors = try build()
        tower = vectors
        return vectors
    }
    private(set) var tower: Graph.Value?

    /// BERT4Rec's input (`Cloze.swift`): feature `history`'s last `steps − 1` items and one
    /// more position, the sample's own item (feature `target`) in training and the mask at
    /// inference, with positions masked as `masking` says, as a sequence of embeddings of
    /// `dimension` (the layout of `sequence`); and `positions`, per sample and slot, where the
    /// masks are (−1: none), for `GatherPositions`. Both features read the item table.
    public func maskedSequence(_ history: String, target: String, dimension: Int, steps: Int, masking: ClozeMasking) throws
        -> (items: Graph.Value, lengths: Graph.Value, positions: Graph.Value) {
        precondition(cloze == nil, "one masked sequence a model")
        let (l, f) = try sequenceTable(history, dimension: dimension, prefix: nil)
        guard let t = schema.categoricalIndex(target), !Batch.isBag(schema.categorical[t], in: schema) else {
            throw ModelError("the model masks feature '\(target)' as the item; the data must have it, one key per sample")
        }
        guard schema.categorical[t].table == schema.categorical[f].table else {
            throw ModelError("the model masks items of one table; '\(history)' reads table '\(schema.categorical[f].table)', '\(target)' table '\(schema.categorical[t].table)'")
        }
        let (items, lengths, name) = sequenceUse(l, feature: f, use: Self.clozeUse, steps: steps, suffix: ", masked")
        let input = ClozeInput(history: f, target: t, steps: steps, masking: masking)
        let positions = graph.input(name + ".positions", input.positions, trainable: false)
        cloze = input
        return (items, lengths, positions)
    }
    private(set) var cloze: ClozeInput?

    /// `Lookup.features` of the uses that read no feature of the batch.
    static let candidatesUse = -1, clozeUse = -2

    /// The lookup of feature `name`'s table for `role` (created on first use) and the feature.
    private func table(_ name: String, role: TableRole, dimension: Int, prefix: String?) throws -> (lookup: Int, feature: Int) {
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
            return (l, f)
        }
        let t = try provider(TableRequest(name: table, role: role, dimension: width))
        guard t.spec.dimension == width else {
            throw ModelError("table '\(table)' has dimension \(t.spec.dimension), the model wants \(width)")
        }
        lookups.append(Lookup(lookup: TableLookup(table: t, weightDecay: role == .wide ? 0 : weightDecay), role: role))
        return (lookups.count - 1, f)
    }

    private func use(_ name: String, role: TableRole, dimension: Int, prefix: String?) throws -> Graph.Value {
        if buildingTower, let f = schema.categoricalIndex(name), schema.categorical[f].side != .item && name != schema.item {
            throw ModelError("the item tower reads the candidate items' own features; '\(name)' is a feature of the \(schema.categorical[f].side) side")
        }
        let (l, f) = try table(name, role: role, dimension: dimension, prefix: prefix)
        // The same feature read twice from one table (on one side) is one use.
        let lookup = lookups[l]
        if let u = lookup.features.indices.first(where: {
            lookup.features[$0] == f && !lookup.sequences[$0] && lookup.candidateSide[$0] == buildingTower
        }) {
            return lookup.values[u]!
        }
        let table = lookup.lookup
        let u = table.addUse(pooling: schema.categorical[f].pooling)
        let value = graph.input("\(table.table.name)[\(schema.categorical[f].name)\(buildingTower ? ", candidates" : "")]",
                                table.outputs[u], trainable: true)
        lookups[l].append(feature: f, value: value, sequence: false, candidateSide: buildingTower)
        return value
    }
}

/// A model ready to train: its graph, its tables and the engine's step.
public final class Network {
    public let spec: ModelSpec
    public let schema: FeatureSchema
    public let graph: Graph
    /// The score per row (a multi-task model: a column per task); a next-item model's query
    /// vector per row, or per row and slot (`ModelBuilder.scoreItems`).
    public let output: Graph.Value
    /// What each output column predicts (`ModelBuilder.tasks`).
    public let tasks: [String]
    /// The dense parameters, in graph order (the item tower's after the network's).
    public let parameters: [Parameter]
    /// Every table the model reads, in the order it asked for them.
    public var tables: [Table] { lookups.map(\.lookup.table) }
    public let seed: UInt64

    private let lookups: [ModelBuilder.Lookup]
    /// The lookups' layers, in the same order.
    private let tableLookups: [TableLookup]
    /// Set when the tables are sharded over processes: every lookup's rows and sparse steps
    /// go through it (`RowExchange`). Nil: each table is this process's store's.
    public var exchange: (any RowExchange)?
    /// Where the next batch's rows stand in the whole batch, when they are this process's
    /// part of it: dropout and the Cloze masks draw by the whole batch's rows (`Pass.firstRow`).
    public var firstRow = 0
    /// The rows of the batch the last `forward` ran.
    private var batchRows = 0
    private let denseTensor: Tensor?
    private let scoring: ItemScoring?
    private let cloze: ClozeInput?
    /// The item tower's layers (`ModelBuilder.itemTower`), run over `candidateRows`.
    private let towerGraph: Graph?

    /// A model with an item tower: the candidate items' features, row i for candidate i (an
    /// item's side from the data's catalog, the rest missing). Whoever sets the candidates
    /// writes them first (`Interactions.setCandidates`); nil for other models.
    public let candidateRows: Batch?

    /// A next-item model's scores: the query of each sample against the candidate items.
    private final class ItemScoring {
        let candidates: ModelBuilder.Candidates
        var keys: [UInt64] = []
        var place: [UInt64: Int32] = [:]
        /// Added to each candidate's column, or empty (`setCandidates`).
        var offsets: [Float] = []
        var logits = Tensor(rows: 0, columns: 1)
        var targets: [Int32] = []
        let queryGradient: Tensor
        let itemGradient: Tensor
        /// Each sample's query at inference, when it has several slots (slot 0).
        let queries: Tensor
        /// The item table's width.
        var width: Int { candidates.query.columns / candidates.slots }

        init(_ candidates: ModelBuilder.Candidates) {
            self.candidates = candidates
            let width = candidates.query.columns / candidates.slots
            queryGradient = Tensor(rows: 0, columns: candidates.query.columns)
            itemGradient = Tensor(rows: 0, columns: width)
            queries = Tensor(rows: 0, columns: width)
        }
    }

    /// Builds model `spec` on `schema`: `tables` gives the store tables the model asks for;
    /// the dense weights are drawn from `seed`. `weightDecay` is the L2 regularisation of
    /// embedding and bias rows (`TableLookup.weightDecay`). `tasks` names the labels of a
    /// multi-task run, whose output has a column per task (empty: one column).
    public init(spec: ModelSpec, schema: FeatureSchema, seed: UInt64, weightDecay: Float = 0, tasks: [String] = [],
                tables: @escaping TableProvider) throws {
        if let problem = schema.problem { throw ModelError("the feature schema is not usable: \(problem)") }
        if let problem = ModelRegistry.problem(spec, schema: schema) { throw ModelError(problem) }
        let builder = ModelBuilder(schema: schema, weightDecay: weightDecay, tasks: tasks, provider: tables)
        let output: Graph.Value
        do { output = try ModelRegistry.build(spec, builder) } catch let error as GraphError {
            let set = schema.tables.filter { $0.value.dimension != nil }.keys.sorted()
            guard !set.isEmpty else { throw ModelError("model \(spec.name): \(error)") }
            throw ModelError("model \(spec.name): \(error): the schema sets the dimension of table \(set.joined(separator: ", ")), "
                             + "and \(spec.name) may need its embeddings of one width; drop the setting, or train a model that "
                             + "concatenates embeddings (deep, wide-deep, dcn-v2)")
        }
        if let candidates = builder.candidates {
            guard output == candidates.query else { throw ModelError("model \(spec.name) scores items with a query that is not its output") }
            guard tasks.count <= 1 else { throw ModelError("model \(spec.name) predicts the next item, one task, not \(tasks.count)") }
            scoring = ItemScoring(candidates)
        } else {
            guard output.columns == builder.tasks.count else {
                guard builder.tasks.count > 1 else { throw ModelError("model \(spec.name) scores \(output.columns) columns a row, not 1") }
                throw ModelError("model \(spec.name) predicts one value a row, and the run has \(builder.tasks.count) tasks "
                                 + "(\(builder.tasks.joined(separator: ", "))); train a multi-task model (shared-bottom, mmoe)")
            }
            scoring = nil
        }
        if builder.tower != nil && builder.candidates?.vectors == nil {
            throw ModelError("model \(spec.name) builds an item tower and scores no items with it")
        }
        self.tasks = builder.tasks
        self.spec = spec
        self.schema = schema
        self.seed = seed
        graph = builder.mainGraph
        self.output = output
        lookups = builder.lookups
        tableLookups = builder.lookups.map(\.lookup)
        denseTensor = builder.denseTensor
        cloze = builder.cloze
        towerGraph = builder.tower == nil ? nil : builder.towerGraph
        candidateRows = builder.tower == nil ? nil : Batch(schema: schema)
        graph.initialize(seed: seed)
        towerGraph?.initialize(seed: Self.towerSeed(seed))
        parameters = graph.parameters + (towerGraph?.parameters ?? [])
    }

    /// The item tower's seed, for its weights and its dropout: apart from the network's.
    private static func towerSeed(_ seed: UInt64) -> UInt64 { SplitMix64.mix(seed ^ 0x4954_454D_544F_5752) }  // "ITEMTOWR"

    /// Whether the model scores items by a query vector (a next-item model), rather than one
    /// score per row: its `forward` gives every sample's score of every candidate item.
    public var scoresItems: Bool { scoring != nil }

    /// The items a next-item model scores, in the order of the scores' columns.
    public var candidateKeys: [UInt64] { scoring?.keys ?? [] }

    /// The feature holding each sample's own item, of a next-item model (-1 for others).
    public var targetFeature: Int { scoring?.candidates.target ?? -1 }

    /// Sets the items a next-item model scores: every item of the catalog (full softmax and
    /// full ranking), or a step's sample of it (the sampled softmax), each item's score then
    /// plus its `offsets` entry (the log-Q correction). Throws if a key repeats.
    public func setCandidates(_ keys: [UInt64], offsets: [Float] = []) throws(ModelError) {
        guard let scoring else { throw ModelError("model \(spec.name) scores one value a row, not items") }
        guard !keys.isEmpty else { throw ModelError("model \(spec.name) scores items, and the data has none") }
        precondition(offsets.isEmpty || offsets.count == keys.count, "an offset per candidate, or none")
        if let rows = candidateRows {
            guard rows.count == keys.count else {
                throw ModelError("model \(spec.name) has \(rows.count) rows of candidate items' features for \(keys.count) candidates")
            }
            let ids = rows.keys(of: scoring.candidates.target).keys
            for i in keys.indices where ids[i] != keys[i] {
                throw ModelError("candidate \(i) is item key \(keys[i]), and its row of features is item key \(ids[i])")
            }
        }
        scoring.place.removeAll(keepingCapacity: true)
        scoring.place.reserveCapacity(keys.count)
        for (i, k) in keys.enumerated() where scoring.place.updateValue(Int32(i), forKey: k) != nil {
            scoring.keys = []
            throw ModelError("item key \(k) is a candidate twice")
        }
        scoring.keys = keys
        scoring.offsets = offsets
        if scoring.logits.columns != keys.count { scoring.logits = Tensor(rows: 0, columns: keys.count) }
    }

    /// Calls `body` with each row's own item as a column of the scores (a next-item model's
    /// classes, valid only inside `body`); a masked sequence's: each slot's masked item, −1
    /// for an unused slot, after the training `forward` of this batch. Throws naming the first
    /// row whose item is not a candidate.
    public func withTargetClasses<R>(_ batch: Batch, _ body: (UnsafePointer<Int32>) throws -> R) throws -> R {
        guard let scoring else { preconditionFailure("the target classes of a model that does not score items") }
        precondition(batch.count > 0, "an empty batch has no classes")
        scoring.targets.removeAll(keepingCapacity: true)
        let keys = batch.keys(of: scoring.candidates.target)
        if let cloze {
            precondition(cloze.targets.count == batch.count * cloze.masking.slots, "the classes of a batch the training forward did not read")
            for r in 0..<batch.count where keys.keys[r] == ClozeMasking.maskKey {
                throw ModelError("sample \(r) of the batch has item key \(keys.keys[r]), the key that stands for the mask")
            }
            for (i, k) in cloze.targets.enumerated() {
                guard k != ClozeMasking.maskKey else {
                    scoring.targets.append(-1)
                    continue
                }
                guard let c = scoring.place[k] else {
                    throw ModelError("sample \(i / cloze.masking.slots) of the batch has masked item key \(k), which is not among the \(scoring.keys.count) candidate items")
                }
                scoring.targets.append(c)
            }
            return try scoring.targets.withUnsafeBufferPointer { try body($0.baseAddress!) }
        }
        for r in 0..<batch.count {
            guard let c = scoring.place[keys.keys[r]] else {
                throw ModelError("sample \(r) of the batch has item key \(keys.keys[r]), which is not among the \(scoring.keys.count) candidate items")
            }
            scoring.targets.append(c)
        }
        return try scoring.targets.withUnsafeBufferPointer { try body($0.baseAddress!) }
    }

    /// The scores of a batch: `batch.count × 1`, or for a next-item model `batch.count ×
    /// candidates` (the inner products of each query with each candidate item; a masked
    /// sequence's in training: `batch.count · slots × candidates`, slot after slot). In
    /// training, rows come to the hot tier (`lookup`) and dropout drops; otherwise nothing in
    /// the store moves (`peek`).
    @discardableResult
    public func forward(_ batch: Batch, training: Bool, step: Int) throws -> Tensor {
        let rows = batch.count
        guard let scoring else {
            try run(batch, training: training, step: step, candidates: Self.noKeys, tower: false)
            return graph.tensor(output)
        }
        precondition(!scoring.keys.isEmpty, "a next-item model scores items: setCandidates first")
        try scoring.keys.withUnsafeBufferPointer { keys in
            try run(batch, training: training, step: step, candidates: UseKeys(keys: keys), tower: true)
        }
        // logits = Q · Eᵀ: rows × candidates (training a masked sequence: every slot's query a
        // row; inference: slot 0 alone).
        let q = graph.tensor(output), e = itemVectors(scoring), c = scoring.keys.count, d = scoring.width
        let slots = scoring.candidates.slots, m = training ? rows * slots : rows
        scoring.logits.resize(rows: m)
        BLAS.gemm(false, true, m: m, n: c, k: d, q.data, lda: training ? d : slots * d, e.data, ldb: d, scoring.logits.data, ldc: c)
        if !scoring.offsets.isEmpty {
            scoring.offsets.withUnsafeBufferPointer { o in
                for r in 0..<m {
                    let row = scoring.logits.row(r)
                    for j in 0..<c { row[j] += o[j] }
                }
            }
        }
        return scoring.logits
    }

    /// A next-item model's query vectors for a batch (`batch.count × query width`), scoring
    /// no item: what retrieval searches the item table with (an item's score is the query's
    /// inner product with its row). Not training: nothing in the store moves.
    public func query(_ batch: Batch, step: Int) throws -> Tensor {
        guard let scoring else { throw ModelError("model \(spec.name) scores one value a row; it has no query to retrieve items with") }
        guard towerGraph == nil else {
            throw ModelError("model \(spec.name) scores items by its item tower's vectors, not by its item table's rows; its query retrieves nothing from that table")
        }
        // The candidates' use looks up no keys, and the item tower does not run: only the
        // network's own inputs are read.
        try run(batch, training: false, step: step, candidates: Self.noKeys, tower: false)
        let q = graph.tensor(output), d = scoring.width
        guard scoring.candidates.slots > 1 else { return q }
        scoring.queries.resize(rows: q.rows)
        for r in 0..<q.rows { scoring.queries.row(r).update(from: q.row(r), count: d) }
        return scoring.queries
    }

    private static var noKeys: UseKeys { UseKeys(keys: UnsafeBufferPointer(start: nil, count: 0)) }

    /// Looks up every table's rows for `batch` (the candidates' use: `candidates`; with
    /// `tower`, the item tower's uses: `candidateRows`, which it then runs over) and runs the
    /// graph forward.
    private func run(_ batch: Batch, training: Bool, step: Int, candidates: UseKeys, tower: Bool) throws {
        precondition(batch.schema == schema, "the batch's schema is not the model's")
        batchRows = batch.count
        if let d = denseTensor {
            d.resize(rows: batch.count)
            d.data.update(from: batch.dense, count: batch.count * d.columns)
        }
        let keys = { (lookup: ModelBuilder.Lookup, u: Int, masked: UseKeys) -> UseKeys in
            switch lookup.features[u] {
            case ModelBuilder.candidatesUse: candidates
            case ModelBuilder.clozeUse: masked
            case let f where lookup.candidateSide[u]: tower ? self.candidateRows!.keys(of: f) : Self.noKeys
            case let f: batch.keys(of: f)
            }
        }
        // Tables are independent: each is looked up by one thread, in the same order every run.
        // Sharded, the exchange fetches every table's rows at once, between the threads'
        // phases.
        let lookUp = { (masked: UseKeys) throws in
            guard let exchange = self.exchange else {
                return try Parallel.forEach(self.lookups.count) { (l) throws(StoreError) in
                    try self.lookups[l].lookup.forward(training: training) { u in keys(self.lookups[l], u, masked) }
                }
            }
            Parallel.forEach(self.lookups.count) { l in self.lookups[l].lookup.collect { u in keys(self.lookups[l], u, masked) } }
            try exchange.fetch(self.tableLookups, training: training)
            Parallel.forEach(self.lookups.count) { l in self.lookups[l].lookup.pool() }
        }
        if let cloze {
            cloze.prepare(batch, training: training, pass: (UInt64(max(step, 0)), seed, firstRow))
            try cloze.withUseKeys(lookUp)
        } else {
            try lookUp(Self.noKeys)
        }
        graph.forward(rows: batch.count, pass(training, step))
        if tower, let towerGraph {
            precondition(candidateRows!.count == scoring!.keys.count, "the candidate rows were changed after setCandidates")
            towerGraph.forward(rows: candidateRows!.count, pass(training, step, seed: Self.towerSeed(seed)))
        }
    }

    /// The candidate items' vectors, as the last `forward` made them: the item table's rows,
    /// or the item tower's outputs.
    private func itemVectors(_ scoring: ItemScoring) -> Tensor {
        if let vectors = scoring.candidates.vectors { return towerGraph!.tensor(vectors) }
        let (l, u) = scoring.candidates.lookup!
        return lookups[l].lookup.outputs[u]
    }

    /// Backward from d(loss)/d(score) after `forward`: dense gradients into the parameters,
    /// then one sparse optimizer step per table in the store.
    /// (A next-item model: from d(loss)/d(scores), `batch.count × candidates`, or
    /// `batch.count · slots × candidates`.)
    public func backward(_ gradient: Tensor, step: Int, sparseLearningRate: Float? = nil) throws {
        if let scoring {
            // dQ = dS · E and dE = dSᵀ · Q, a row per query (slot).
            let q = graph.tensor(output), e = itemVectors(scoring), c = scoring.keys.count, d = scoring.width
            let n = q.rows * scoring.candidates.slots
            precondition(gradient.rows == n && gradient.columns == c, "the scores' gradient has the wrong shape")
            scoring.queryGradient.resize(rows: q.rows)
            scoring.itemGradient.resize(rows: c)
            BLAS.gemm(false, false, m: n, n: d, k: c, gradient.data, lda: c, e.data, ldb: d, scoring.queryGradient.data, ldc: d)
            BLAS.gemm(true, false, m: c, n: d, k: n, gradient.data, lda: c, q.data, ldb: d, scoring.itemGradient.data, ldc: d)
            graph.backward([(output, scoring.queryGradient)], pass(true, step))
            if let vectors = scoring.candidates.vectors {
                towerGraph!.backward([(vectors, scoring.itemGradient)], pass(true, step, seed: Self.towerSeed(seed)))
            }
        } else {
            graph.backward([(output, gradient)], pass(true, step))
        }
        let gradient = { (lookup: ModelBuilder.Lookup, u: Int) -> Tensor in
            lookup.values[u].map { lookup.candidateSide[u] ? self.towerGraph!.gradient(of: $0) : self.graph.gradient(of: $0) }
                ?? self.scoring!.itemGradient
        }
        guard let exchange else {
            return try Parallel.forEach(lookups.count) { (l) throws(StoreError) in
                try lookups[l].lookup.backward(learningRate: sparseLearningRate) { u in gradient(lookups[l], u) }
            }
        }
        Parallel.forEach(lookups.count) { l in
            lookups[l].lookup.sumGradients(addingWeightDecay: false) { u in gradient(lookups[l], u) }
        }
        try exchange.step(tableLookups, learningRate: sparseLearningRate)
    }

    /// Brings the rows a batch will read to the hot tier, computing nothing (the look-ahead).
    /// With `owned`, only the keys it keeps (`owned(table, key)`): a shard's own. `scratch` and
    /// `kept` are the caller's; this may run on another thread than training.
    public func warm(_ batch: Batch, scratch: inout [Float], kept: inout [UInt64],
                     owned: ((Int, UInt64) -> Bool)? = nil) throws(StoreError) {
        for (l, lookup) in lookups.enumerated() {
            for (u, f) in lookup.features.enumerated() where !lookup.candidateSide[u] {
                // A masked sequence reads its history (and the mask, and the target: candidates).
                let read = f == ModelBuilder.clozeUse ? cloze!.history : f
                guard read >= 0 else { continue }
                let keys = batch.keys(of: read).keys
                guard let owned else {
                    try TableLookup.warm(lookup.lookup.table, keys, scratch: &scratch)
                    continue
                }
                kept.removeAll(keepingCapacity: true)
                for key in keys where owned(l, key) { kept.append(key) }
                try kept.withUnsafeBufferPointer { (k) throws(StoreError) in try TableLookup.warm(lookup.lookup.table, k, scratch: &scratch) }
            }
        }
    }

    /// The main graph's pass names its rows by the whole batch's (`firstRow`); the item
    /// tower's rows are the candidates, the same for every process.
    private func pass(_ training: Bool, _ step: Int, seed: UInt64? = nil) -> Pass {
        seed == nil
            ? Pass(training: training, step: UInt64(max(step, 0)), seed: self.seed, firstRow: firstRow, rows: batchRows)
            : Pass(training: training, step: UInt64(max(step, 0)), seed: seed!)
    }
}
