// What a sample holds and where its keys go: the contract between data sources and models.
//
// Every categorical feature names a table. The table is also the feature's key namespace:
// data sources hash a value together with its table's name (`FeatureSchema.key`), so features
// that name one table share its rows (an item as the target and in a history), and features
// of different tables never collide. A model decides how it uses the tables (an embedding of
// some dimension, a bias, a wide weight) and each use may be a table of its own (`ModelBuilder`);
// the keys stay the feature's.
public import StrataNN
public import StrataStore

public struct FeatureSchema: Sendable, Codable, Equatable, Hashable {
    /// Whom a feature describes. Ranking builds a candidate's row from the user's features and
    /// the item's; negative sampling replaces the item side.
    public enum Side: String, Sendable, Codable, Hashable, CaseIterable {
        case user, item, context
    }

    public struct Dense: Sendable, Codable, Equatable, Hashable {
        public var name: String
        public var side: Side
        public init(_ name: String, side: Side = .context) {
            self.name = name
            self.side = side
        }
    }

    public struct Categorical: Sendable, Codable, Equatable, Hashable {
        public var name: String
        /// The table whose rows its keys index, and its keys' namespace.
        public var table: String
        /// A bag of keys per sample (genres) rather than one.
        public var multiValued: Bool
        /// How a bag's rows become one vector.
        public var pooling: TableLookup.Pooling
        public var side: Side
        /// For a crossed feature, the features it crosses: its keys are every combination of
        /// theirs (`Batch.computeCrosses`). nil for a feature read from data.
        public var crossOf: [String]?

        public init(_ name: String, table: String? = nil, multiValued: Bool = false, pooling: TableLookup.Pooling = .mean,
                    side: Side = .context, crossOf: [String]? = nil) {
            self.name = name
            self.table = table ?? name
            self.multiValued = multiValued
            self.pooling = pooling
            self.side = side
            self.crossOf = crossOf
        }
    }

    public struct Label: Sendable, Codable, Equatable, Hashable {
        public enum Kind: String, Sendable, Codable, Hashable {
            /// 0 or 1 (a click); a rating thresholded into one.
            case binary
            /// A number to predict (a rating).
            case rating
        }
        public var name: String
        public var kind: Kind
        public init(_ name: String, kind: Kind) {
            self.name = name
            self.kind = kind
        }
    }

    /// Settings of one table that replace what the model and the training options would give it.
    public struct TableSettings: Sendable, Codable, Equatable, Hashable {
        public var dimension: Int?
        public var optimizer: Optimizer?
        public var initializer: Initializer.Distribution?
        public var storage: StorageType?
        public init(dimension: Int? = nil, optimizer: Optimizer? = nil, initializer: Initializer.Distribution? = nil,
                    storage: StorageType? = nil) {
            self.dimension = dimension
            self.optimizer = optimizer
            self.initializer = initializer
            self.storage = storage
        }
    }

    public var dense: [Dense]
    /// Features read from data first, then crosses.
    public var categorical: [Categorical]
    public var labels: [Label]
    /// The features naming the user and the item, for ranking and negative sampling.
    public var user: String?
    public var item: String?
    /// The feature holding each sample's history: the user's earlier items, oldest first, a
    /// bag of keys of the item's table (session models read it as a sequence).
    public var sequence: String?
    /// Settings by table name (the name the model gives the table).
    public var tables: [String: TableSettings]

    public init(dense: [Dense] = [], categorical: [Categorical] = [], labels: [Label] = [], user: String? = nil,
                item: String? = nil, sequence: String? = nil, tables: [String: TableSettings] = [:]) {
        self.sequence = sequence
        self.dense = dense
        self.categorical = categorical
        self.labels = labels
        self.user = user
        self.item = item
        self.tables = tables
    }

    /// Criteo's shape: dense features `i1`…, categorical `c0`… (each its own table, the names
    /// today's stores use), one binary label `click`.
    public static func criteo(dense: Int, sparse: Int) -> FeatureSchema {
        FeatureSchema(dense: (0..<dense).map { Dense("i\($0 + 1)") }, categorical: (0..<sparse).map { Categorical("c\($0)") },
                      labels: [Label("click", kind: .binary)])
    }

    /// "13 dense, 26 categorical (2 multi-valued, 1 cross), 1 label": for messages.
    public var summary: String {
        let bags = categorical.filter(\.multiValued).count, crosses = categorical.count - readFeatures
        var parts: [String] = []
        if bags > 0 { parts.append("\(bags) multi-valued") }
        if crosses > 0 { parts.append("\(crosses) cross\(crosses == 1 ? "" : "es")") }
        let detail = parts.isEmpty ? "" : " (\(parts.joined(separator: ", ")))"
        return "\(dense.count) dense, \(categorical.count) categorical\(detail), \(labels.count) label\(labels.count == 1 ? "" : "s")"
    }

    public func categoricalIndex(_ name: String) -> Int? { categorical.firstIndex { $0.name == name } }
    public func labelIndex(_ name: String) -> Int? { labels.firstIndex { $0.name == name } }

    /// Why this schema cannot describe samples, or nil: names must be unique and non-empty,
    /// crosses must cross existing features read from data, the user and item must be
    /// single-valued categorical features.
    public var problem: String? {
        var seen = Set<String>()
        for name in dense.map(\.name) + categorical.map(\.name) + labels.map(\.name) {
            if name.isEmpty { return "a feature has an empty name" }
            if !seen.insert(name).inserted { return "two features are named '\(name)'" }
        }
        for c in categorical {
            if c.table.isEmpty { return "feature '\(c.name)' names an empty table" }
            guard let parts = c.crossOf else { continue }
            if parts.count < 2 { return "cross '\(c.name)' crosses \(parts.count) feature(s); it needs at least two" }
            for p in parts {
                guard let i = categoricalIndex(p) else { return "cross '\(c.name)' names '\(p)', which is not a categorical feature" }
                if categorical[i].crossOf != nil { return "cross '\(c.name)' crosses '\(p)', itself a cross; cross the features it crosses" }
            }
            if Set(parts).count != parts.count { return "cross '\(c.name)' names a feature twice" }
        }
        let firstCross = categorical.firstIndex { $0.crossOf != nil } ?? categorical.count
        if categorical[firstCross...].contains(where: { $0.crossOf == nil }) { return "crosses must come after the features read from data" }
        for (role, name) in [("user", user), ("item", item)] {
            guard let name else { continue }
            guard let i = categoricalIndex(name) else { return "the \(role) feature '\(name)' is not a categorical feature" }
            if categorical[i].multiValued || categorical[i].crossOf != nil {
                return "the \(role) feature '\(name)' must hold one key per sample"
            }
        }
        if let sequence {
            guard let i = categoricalIndex(sequence) else { return "the sequence feature '\(sequence)' is not a categorical feature" }
            if !categorical[i].multiValued || categorical[i].crossOf != nil {
                return "the sequence feature '\(sequence)' must hold a bag of keys per sample"
            }
        }
        for (table, settings) in tables {
            if let d = settings.dimension, d < 1 || d > 65_536 { return "table '\(table)': dimension \(d) is outside 1...65536" }
        }
        return nil
    }

    /// The features read from data (not crosses).
    public var readFeatures: Int { categorical.prefix { $0.crossOf == nil }.count }

    // MARK: Keys

    /// The key of a value of a feature of `table`: the value's 64-bit hash mixed with the
    /// table's name, so equal values of features of one table share a key and those of
    /// different tables never do (but by a 2⁻⁶⁴ chance).
    @inline(__always)
    public static func key(namespace: UInt64, value: UInt64) -> UInt64 {
        SplitMix64.mix(namespace ^ SplitMix64.mix(value &+ 0x5EED_CAFE_F00D_D00D))
    }

    /// The key of an empty value of a feature of `table` (a missing field).
    public static func missingKey(table: String) -> UInt64 { key(namespace: namespace(table), value: emptyValueHash) }

    /// `valueHash` of no bytes.
    public static let emptyValueHash = valueHash(UnsafeBufferPointer(start: nil, count: 0))

    /// A table name's namespace for `key(namespace:value:)`: the `valueHash` of its UTF-8.
    public static func namespace(_ table: String) -> UInt64 {
        Array(table.utf8).withUnsafeBufferPointer { valueHash($0) }
    }

    /// The hash of a value's bytes, for `key(namespace:value:)` (FNV-1a, mixed).
    @inline(__always)
    public static func valueHash(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in bytes {
            h ^= UInt64(byte)
            h = h &* 0x0000_0100_0000_01B3
        }
        return SplitMix64.mix(h)
    }
}
