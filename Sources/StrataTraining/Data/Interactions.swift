// Users, items and who interacted with what: what negative sampling and ranking need beyond
// the stream of samples. Built by one pass over the data (`TabularData`), held in memory:
// a catalog per side with each entity's features, and per user the items of each split.
public import StrataModels

/// The users or the items of the data, each with the features of its side (a user's
/// demographics, an item's genres), as the first row that named it had them: rows are built
/// by joins on the id, so every row names the same ones. Immutable once built.
public final class SideCatalog: @unchecked Sendable {
    // @unchecked: written only while `Interactions` builds it, then only read.
    public let schema: FeatureSchema
    public let side: FeatureSchema.Side
    /// The id feature (the schema's user or item).
    public let idFeature: Int
    /// The categorical features read from data of this side, and its dense columns.
    public let features: [Int]
    public let denseColumns: [Int]

    /// Each entity's id key, in order of first appearance.
    public private(set) var ids: [UInt64] = []
    private var index: [UInt64: Int32] = [:]
    /// Entity e's keys of its k-th feature: keys[offsets[e·F + k] ..< offsets[e·F + k + 1]].
    private var keys: [UInt64] = []
    private var offsets: [Int] = [0]
    private var dense: [Float] = []

    init(schema: FeatureSchema, side: FeatureSchema.Side, idFeature: Int) {
        self.schema = schema
        self.side = side
        self.idFeature = idFeature
        features = (0..<schema.readFeatures).filter { schema.categorical[$0].side == side || $0 == idFeature }
        denseColumns = schema.dense.indices.filter { schema.dense[$0].side == side }
    }

    public var count: Int { ids.count }

    /// The entity of an id key, if the data has it.
    public func entity(id: UInt64) -> Int? { index[id].map(Int.init) }

    /// Adds the entity of `batch`'s row r if it is new; returns its index.
    @discardableResult
    func add(_ batch: Batch, row r: Int) -> Int {
        let id = batch.keys(of: idFeature, row: r)[0]
        if let e = index[id] { return Int(e) }
        let e = ids.count
        ids.append(id)
        index[id] = Int32(e)
        for f in features {
            keys.append(contentsOf: batch.keys(of: f, row: r))
            offsets.append(keys.count)
        }
        for j in denseColumns { dense.append(batch.dense[r * schema.dense.count + j]) }
        return e
    }

    /// Entity e's keys of its k-th feature (`features[k]`).
    @inline(__always)
    func keys(_ e: Int, _ k: Int) -> ArraySlice<UInt64> {
        let at = e * features.count + k
        return keys[offsets[at]..<offsets[at + 1]]
    }

    @inline(__always)
    func dense(_ e: Int, _ k: Int) -> Float { dense[e * denseColumns.count + k] }
}

/// Everything known about users, items and their interactions, per split.
public final class Interactions: @unchecked Sendable {
    // @unchecked: built by one thread, then only read.
    public let schema: FeatureSchema
    public let users: SideCatalog
    public let items: SideCatalog
    /// Per user, the items of each split, ascending (an item once even if repeated).
    public private(set) var train: [[Int32]] = []
    public private(set) var valid: [[Int32]] = []
    public private(set) var test: [[Int32]] = []
    /// Per item, its training interactions (repeats counted).
    public private(set) var popularity: [Int64] = []
    /// Per user, the items of training, then of validation, then of test, each in time order
    /// (repeats kept), when the data has a time column: the histories of session models.
    /// Empty otherwise.
    public private(set) var sequences: [[Int32]] = []
    /// Per user, how many of `sequences[u]`'s items are training's, and training's and
    /// validation's.
    public private(set) var trainingLengths: [Int] = []
    private var validationEnds: [Int] = []
    public var hasSequences: Bool { !sequences.isEmpty }

    public enum Split: Int, Sendable, CaseIterable {
        case train, valid, test
        public var name: String { ["train", "valid", "test"][rawValue] }
    }

    /// Needs the schema's user and item.
    init(schema: FeatureSchema) throws {
        guard let u = schema.user.flatMap(schema.categoricalIndex), let i = schema.item.flatMap(schema.categoricalIndex) else {
            throw TrainingError.mismatch("the data does not name its user and item features")
        }
        self.schema = schema
        users = SideCatalog(schema: schema, side: .user, idFeature: u)
        items = SideCatalog(schema: schema, side: .item, idFeature: i)
    }

    /// Records an interaction of user `u` with item `i` (entities of the catalogs) in `split`.
    func record(user u: Int, item i: Int, split: Split) {
        while train.count < users.count {
            train.append([])
            valid.append([])
            test.append([])
        }
        while popularity.count < items.count { popularity.append(0) }
        switch split {
        case .train:
            train[u].append(Int32(i))
            popularity[i] += 1
        case .valid: valid[u].append(Int32(i))
        case .test: test[u].append(Int32(i))
        }
    }

    /// Builds each user's sequence from `sort`'s rows, which come by user, then time: the
    /// items of training, then of validation, then of test, each in time order. `split` gets
    /// one user's rows at a time and appends each row's split (0 train, 1 valid, 2 test).
    /// Holds one user's rows at a time besides the sequences.
    func recordSequences(_ sort: TimeSort, split: ([TimedRow], inout [UInt8]) throws -> Void) throws {
        sequences = [[Int32]](repeating: [], count: users.count)
        trainingLengths = [Int](repeating: 0, count: users.count)
        validationEnds = trainingLengths
        var rows: [TimedRow] = [], splits: [UInt8] = []
        func flush() throws {
            guard let u = rows.first.map({ Int($0.user) }) else { return }
            splits.removeAll(keepingCapacity: true)
            try split(rows, &splits)
            var sequence: [Int32] = []
            sequence.reserveCapacity(rows.count)
            for s in 0..<3 {
                for (row, rowSplit) in zip(rows, splits) where rowSplit == s { sequence.append(row.item) }
                if s == 0 { trainingLengths[u] = sequence.count }
                if s == 1 { validationEnds[u] = sequence.count }
            }
            sequences[u] = sequence
            rows.removeAll(keepingCapacity: true)
        }
        try sort.merge { row in
            if let first = rows.first, first.user != row.user { try flush() }
            rows.append(row)
        }
        try flush()
    }

    /// User u's items, oldest first, before the held-out items of `split`: training's for
    /// validation (and training), training's and validation's for test; nil: all of them
    /// (what the user had when the data ends, for recommending).
    public func history(of u: Int, before split: Split?) -> ArraySlice<Int32> {
        switch split {
        case .train?, .valid?: sequences[u][..<trainingLengths[u]]
        case .test?: sequences[u][..<validationEnds[u]]
        case nil: sequences[u][...]
        }
    }

    /// Sorts and de-duplicates the per-user lists once every row is in.
    func finish() {
        for u in train.indices {
            train[u] = Array(Set(train[u])).sorted()
            valid[u] = Array(Set(valid[u])).sorted()
            test[u] = Array(Set(test[u])).sorted()
        }
        while popularity.count < items.count { popularity.append(0) }
    }

    /// Items user `u` must not be recommended when `split` is evaluated: training's, and
    /// validation's when testing, unless they are among the split's own.
    public func excluded(_ u: Int, evaluating split: Split) -> [Int32] {
        var seen = train[u]
        if split == .test { seen = Array(Set(seen).union(valid[u])).sorted() }
        let positives = Set(items(of: u, in: split))
        return seen.filter { !positives.contains($0) }
    }

    public func items(of user: Int, in split: Split) -> [Int32] {
        switch split {
        case .train: train[user]
        case .valid: valid[user]
        case .test: test[user]
        }
    }
}

extension Array where Element == Int32 {
    /// Whether this ascending array holds `x` (binary search): a user's items.
    func sortedContains(_ x: Int32) -> Bool {
        var low = 0, high = count
        while low < high {
            let mid = (low + high) / 2
            if self[mid] < x { low = mid + 1 } else { high = mid }
        }
        return low < count && self[low] == x
    }
}

/// Writes rows that pair a user with an item no row of the data may pair them in: a
/// sample's user and context with a sampled negative item, or a user with every candidate
/// item for ranking. Each feature of the row comes from the part of its side.
struct RowComposer {
    enum Part {
        /// A row of a batch: all its features of this side.
        case row(Batch, Int)
        /// An entity of a catalog of this side.
        case entity(SideCatalog, Int)
        /// Nothing known: categorical features get their table's key of an empty value,
        /// dense ones 0.
        case missing
    }

    let schema: FeatureSchema
    /// Per feature read from data: its index among its side's catalog features.
    private let catalogPlace: [Int]
    private let denseCatalogPlace: [Int]
    private let missingKeys: [UInt64]

    init(schema: FeatureSchema, users: SideCatalog?, items: SideCatalog?) {
        self.schema = schema
        // A feature no catalog holds (a history) keeps -1: `write` is given its keys.
        var place = [Int](repeating: -1, count: schema.readFeatures)
        var densePlace = [Int](repeating: -1, count: schema.dense.count)
        for catalog in [users, items].compactMap({ $0 }) {
            for (k, f) in catalog.features.enumerated() { place[f] = k }
            for (k, j) in catalog.denseColumns.enumerated() { densePlace[j] = k }
        }
        catalogPlace = place
        denseCatalogPlace = densePlace
        missingKeys = schema.categorical.prefix(schema.readFeatures).map { FeatureSchema.missingKey(table: $0.table) }
    }

    /// The part a feature of `side` (and the user and item ids, whose side may be declared
    /// otherwise) is taken from.
    private func part(_ side: FeatureSchema.Side, feature: Int?, user: Part, item: Part, context: Part) -> Part {
        if let feature {
            if schema.categorical[feature].name == schema.user { return user }
            if schema.categorical[feature].name == schema.item { return item }
        }
        switch side {
        case .user: return user
        case .item: return item
        case .context: return context
        }
    }

    /// Appends row `o` of `out` (rows are written in order after `out.begin`): every feature
    /// read from data from its side's part, labels from `labels` (nil: zeros); `history`,
    /// if given, is the bag of feature `history.feature`, which no catalog holds.
    func write(_ out: Batch, row o: Int, user: Part, item: Part, context: Part, labels: UnsafePointer<Float>?,
               history: (feature: Int, keys: UnsafeBufferPointer<UInt64>)? = nil) {
        let l = out.labelColumns
        if let labels { (out.labels + o * l).update(from: labels, count: l) } else { (out.labels + o * l).update(repeating: 0, count: l) }
        let d = schema.dense.count
        for j in 0..<d {
            let value: Float = switch part(schema.dense[j].side, feature: nil, user: user, item: item, context: context) {
            case .row(let b, let r): b.dense[r * d + j]
            case .entity(let c, let e): c.dense(e, denseCatalogPlace[j])
            case .missing: 0
            }
            out.dense[o * d + j] = value
        }
        for f in 0..<schema.readFeatures {
            if let history, history.feature == f {
                out.appendBag(f, history.keys)
                continue
            }
            let bag = out.isBag(f)
            switch part(schema.categorical[f].side, feature: f, user: user, item: item, context: context) {
            case .row(let b, let r):
                let k = b.keys(of: f, row: r)
                if bag { out.appendBag(f, k) } else { out.keySlot(f, row: o).pointee = k[0] }
            case .entity(let c, let e):
                let k = c.keys(e, catalogPlace[f])
                if bag { k.withUnsafeBufferPointer { out.appendBag(f, $0) } } else { out.keySlot(f, row: o).pointee = k.first! }
            case .missing:
                if bag { out.appendBag(f, key: missingKeys[f]) } else { out.keySlot(f, row: o).pointee = missingKeys[f] }
            }
        }
    }
}

extension Interactions {
    /// Makes `keys`, items of the catalog, the items `network` scores (`Network.setCandidates`,
    /// each score plus its `offsets` entry); for a model with an item tower, writes each one's
    /// features into `network.candidateRows` first (the item's side from the catalog, the rest
    /// missing). Throws naming a key that is no item of the data.
    public func setCandidates(of network: Network, _ keys: [UInt64], offsets: [Float] = []) throws {
        if let rows = network.candidateRows {
            // Checked whole first: a throw leaves the rows and the candidates as they were.
            let entities = try keys.map { k in
                guard let e = items.entity(id: k) else { throw TrainingError.mismatch("candidate item key \(k) is not an item of the data") }
                return e
            }
            let composer = RowComposer(schema: network.schema, users: users, items: items)
            rows.begin(capacity: keys.count)
            for (i, e) in entities.enumerated() {
                composer.write(rows, row: i, user: .missing, item: .entity(items, e), context: .missing, labels: nil)
            }
            rows.end(written: keys.count)
            rows.computeCrosses()
        }
        try network.setCandidates(keys, offsets: offsets)
    }
}
