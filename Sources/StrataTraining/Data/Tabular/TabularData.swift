// A user's tabular data set: an interactions file (CSV or TSV with a header) described by a
// schema, side tables joined by id, and the evaluation protocol's splits.
//
// Opening it reads the headers and the side tables, then, when the data names its users and
// items or a protocol splits it, makes one pass over the interactions (`scan`): it learns the
// users and items with their features (for negative sampling and ranking), and assigns each
// line to a split, seeded and reproducible. Training then streams the file, block by block,
// keeping the lines of its split; it never holds the file. What the pass keeps is one byte a
// line (the split) and, with users and items, their catalogs and each user's items.
import Foundation
public import StrataModels
import StrataStore

/// How tabular data is split and evaluated (`strata train --protocol`).
public enum EvaluationProtocol: String, Sendable, CaseIterable {
    /// Train on every line; evaluate on separate data, if given.
    case none
    /// A random 80/20 split; RMSE and MAE of the predicted rating.
    case ratings
    /// RecBole's top-K protocol: each user's lines split 8:1:1 at random; full ranking over all
    /// items without the user's training items; Recall, NDCG, Hit, MRR and Precision at K.
    case topk
    /// Click-through: the label is rating >= a threshold; a random 8:1:1 split; AUC and logloss.
    case click
    /// Next-item prediction as RecBole evaluates sequential models: each user's interactions
    /// in time order, the last one for test and the one before for validation (leave one
    /// out); full ranking of every item for the held-out one after the user's history, the
    /// history's items left out; Hit, NDCG and MRR at K. Needs the schema's `time` column.
    case nextItem = "next-item"

    public var defaultRatios: [Double] {
        switch self {
        case .none, .nextItem: []
        case .ratings: [0.8, 0.2]
        case .topk, .click: [0.8, 0.1, 0.1]
        }
    }

    /// The loss's command-line name: bce, mse or bpr.
    public var defaultLoss: String {
        switch self {
        case .none, .click: "bce"
        case .ratings: "mse"
        case .topk: "bpr"
        case .nextItem: "softmax"
        }
    }
}

public final class TabularData {
    /// How lines are split into training, validation and test data.
    public enum Splitting: Sendable, Equatable, CustomStringConvertible {
        /// Every line trains.
        case none
        /// The lines shuffled as one set and cut by the ratios (train, then test; or train,
        /// validation, test).
        case random([Double])
        /// Each user's lines shuffled and cut by the ratios, RecBole's rule per user: every
        /// split but training gets ⌊ratio · n⌋, moved up to 1 where that is 0 while training
        /// keeps more than one.
        case perUser([Double])
        /// Each user's last interaction in time for test, the one before for validation, the
        /// rest for training (users with fewer than three interactions train on all of them).
        case leaveOneOut

        public var description: String {
            switch self {
            case .none: "none"
            case .random(let r): "random \(r.map { String($0) }.joined(separator: ":"))"
            case .perUser(let r): "per user \(r.map { String($0) }.joined(separator: ":"))"
            case .leaveOneOut: "leave one out"
            }
        }
    }

    public struct Options: Sendable {
        public var splitting: Splitting
        /// Seeds the split.
        public var seed: UInt64
        public var malformedLines: MalformedLinePolicy
        /// Turns the first rating label into a click: 1 at or above this.
        public var clickThreshold: Double?
        /// Crosses to add to the schema's (feature names).
        public var crosses: [[String]]
        /// Rows the time sort of a log with a time column holds in memory (24 bytes each);
        /// more go to scratch files under `temporaryDirectory`.
        public var runRecords = TimeSort.defaultRunRecords
        /// Where the time sort's scratch files go: nil is $TMPDIR, else /tmp.
        public var temporaryDirectory: String?

        public init(splitting: Splitting = .none, seed: UInt64 = 1, malformedLines: MalformedLinePolicy = .stop,
                    clickThreshold: Double? = nil, crosses: [[String]] = []) {
            self.splitting = splitting
            self.seed = seed
            self.malformedLines = malformedLines
            self.clickThreshold = clickThreshold
            self.crosses = crosses
        }

        /// The options of a protocol: its split (or `ratios`), and for clicks the threshold.
        public init(protocol p: EvaluationProtocol, ratios: [Double]? = nil, seed: UInt64 = 1, clickThreshold: Double = 4,
                    crosses: [[String]] = []) {
            let r = ratios ?? p.defaultRatios
            let splitting: Splitting = switch p {
            case .none: .none
            case .topk: .perUser(r)
            case .ratings, .click: .random(r)
            case .nextItem: .leaveOneOut
            }
            self.init(splitting: splitting, seed: seed, clickThreshold: p == .click ? clickThreshold : nil, crosses: crosses)
        }
    }

    public let path: String
    public let schema: FeatureSchema
    /// The schema file's model, and the directory its relative paths start from.
    private let table: TableSchema
    private let directory: String
    public let options: Options
    /// The interactions' users and items, when the schema names them.
    public let interactions: Interactions?
    /// Header columns the schema does not mention: read past.
    public let ignoredColumns: [String]
    /// Lines per split (train, valid, test); with no splitting, all in train.
    public private(set) var counts = [0, 0, 0]
    private let format: TabularFormat
    private let assignment: SplitAssignment?

    /// Opens the interactions file `path` described by `table`, read from `schemaFile` (whose
    /// relative join paths are relative to `directory`). Throws `DataError` naming the file,
    /// line and reason of the first problem.
    public init(path: String, table: TableSchema, schemaFile: String, directory: String, options: Options = Options()) throws {
        self.path = path
        self.options = options
        self.table = table
        self.directory = directory
        let delimiter = try Self.delimiter(table.delimiter, path: path)
        let header = try Self.header(path, delimiter: delimiter)
        var plan = Plan(table: table, options: options, schemaFile: schemaFile)
        let roles = try plan.roles(for: header, columns: table.columns, file: path, side: nil)
        ignoredColumns = header.filter { table.columns[$0] == nil }
        var joins: [JoinTable] = []
        for join in table.joins ?? [] {
            let file = join.file.hasPrefix("/") ? join.file : directory + "/" + join.file
            guard let on = header.firstIndex(of: join.on) else {
                throw DataError.schema(file: path, reason: "join \(join.file) is on '\(join.on)', which is not a column (the columns are \(header.joined(separator: ", ")))")
            }
            joins.append(try plan.load(join, file: file, on: on))
        }
        schema = try plan.finish()
        // The side tables are part of what the samples are: a resume on edited ones is refused.
        let sides = try joins.map { try ReadOnlyFile(path: $0.file).identity }.joined(separator: ", ")
        format = TabularFormat(schema: schema, identity: "schema \(identityText(table)) options \(options.identity) joins [\(sides)]",
                               delimiter: delimiter, names: header, roles: roles, joins: joins, assignment: nil, split: 0)
        let needsScan = options.splitting != .none || (schema.user != nil && schema.item != nil)
        guard needsScan else {
            interactions = nil
            assignment = nil
            return
        }
        var timeColumn: Int?
        if let time = table.time {
            guard let c = header.firstIndex(of: time) else {
                throw DataError.schema(file: path, reason: "the time column '\(time)' is not in the header (the columns are \(header.joined(separator: ", ")))")
            }
            timeColumn = c
        } else if options.splitting == .leaveOneOut {
            throw DataError.schema(file: path, reason: "the next-item protocol orders each user's interactions by time: name the time column (\"time\") in the schema")
        }
        let scanned = try Self.scan(path: path, format: format, options: options, time: timeColumn.map { ($0, delimiter) })
        interactions = scanned.interactions
        assignment = scanned.assignment
        counts = scanned.counts
    }

    /// MovieLens-100K as RecBole ships it (`ml-100k.inter`, `.user`, `.item` in `directory`,
    /// put there by tools/movielens.sh): ratings of items by users, joined with the users' age,
    /// gender, occupation and zip code and the items' release year and genres (a multi-valued
    /// feature).
    public convenience init(movieLens directory: String, options: Options = Options()) throws {
        try self.init(path: directory + "/ml-100k.inter", table: Self.movieLens, schemaFile: "the MovieLens-100K schema",
                      directory: directory, options: options)
    }

    /// The schema of RecBole's ml-100k atomic files.
    public static let movieLens = TableSchema(
        columns: [
            "user_id": .init(kind: .categorical, table: "user"),
            "item_id": .init(kind: .categorical, table: "item"),
            "rating": .init(kind: .label, type: .rating),
            "timestamp": .init(kind: .ignore),
        ],
        user: "user_id", item: "item_id", time: "timestamp",
        joins: [
            .init(file: "ml-100k.user", on: "user_id", side: .user, columns: [
                "age": .init(kind: .categorical), "gender": .init(kind: .categorical),
                "occupation": .init(kind: .categorical), "zip_code": .init(kind: .categorical),
            ]),
            .init(file: "ml-100k.item", on: "item_id", side: .item, columns: [
                "movie_title": .init(kind: .ignore), "release_year": .init(kind: .categorical, table: "year"),
                "class": .init(kind: .multi, table: "genre", separator: " "),
            ]),
        ])

    /// A stream of the lines of `split` (all lines when the data is not split), shuffled in
    /// blocks of `shuffleBlock` samples with `seed`.
    public func source(_ split: Interactions.Split, shuffleBlock: Int, seed: UInt64) throws -> LineFile {
        var f = format
        if let assignment {
            f = format.only(UInt8(split.rawValue + 1), of: assignment, identity: "split \(split.name)")
        } else if split != .train {
            throw DataError.schema(file: path, reason: "the data is not split, so it has no \(split.name) lines")
        }
        return try LineFile(path: path, lineOptions: .init(format: .tabular(f), shuffleBlock: shuffleBlock, seed: seed,
                                                              malformedLines: options.malformedLines))
    }

    /// What a run on this data under `protocol` reads: the training split, and the evaluation
    /// the protocol makes (pointwise on the validation and test splits, or full ranking at
    /// `topK`). `labels` names the labels scored, a model's output column each (none: the
    /// first label).
    /// (The next-item protocol: samples and evaluations with histories of `historyLength` items.)
    public func trainingData(protocol p: EvaluationProtocol, labels: [String], topK: Int = 10, shuffleBlock: Int,
                             seed: UInt64, historyLength: Int = 50) throws -> TrainingData {
        var training = TrainingData(train: try source(.train, shuffleBlock: shuffleBlock, seed: seed), interactions: interactions)
        let hasValid = counts[1] > 0
        switch p {
        case .none:
            break
        case .ratings, .click:
            if hasValid { training.validation = try evaluator(.valid, labels: labels, shuffleBlock: 0, seed: seed) }
            training.test = try evaluator(.test, labels: labels, shuffleBlock: 0, seed: seed)
        case .topk:
            guard let interactions else {
                throw DataError.schema(file: path, reason: "the topk protocol needs the schema to name its user and item columns")
            }
            if hasValid { training.validation = RankingEvaluator(interactions, split: .valid, k: topK) }
            training.test = RankingEvaluator(interactions, split: .test, k: topK)
        case .nextItem:
            guard let interactions, interactions.hasSequences else {
                throw DataError.schema(file: path, reason: "the next-item protocol needs the schema to name its user, item and time columns")
            }
            training.train = try SequenceSamples(interactions, historyLength: historyLength, seed: seed, identity: training.train.identity)
            if hasValid { training.validation = try NextItemEvaluator(interactions, split: .valid, k: topK, historyLength: historyLength) }
            training.test = try NextItemEvaluator(interactions, split: .test, k: topK, historyLength: historyLength)
        }
        return training
    }

    /// A pointwise evaluator of `split`'s lines on each of `labels` (none: the first): RMSE and
    /// MAE for a rating label, AUC and logloss for a binary one.
    public func evaluator(_ split: Interactions.Split, labels: [String], shuffleBlock: Int, seed: UInt64,
                          split name: String? = nil) throws -> PointwiseEvaluator {
        guard !schema.labels.isEmpty else { throw DataError.schema(file: path, reason: "the data has no label to evaluate") }
        let tasks = try (labels.isEmpty ? [schema.labels[0].name] : labels).map { l in
            guard let i = schema.labelIndex(l) else { throw DataError.schema(file: path, reason: "there is no label '\(l)'") }
            return PointwiseEvaluator.Task(name: l, kind: schema.labels[i].kind == .rating ? .rating : .click, label: i)
        }
        return PointwiseEvaluator(try source(split, shuffleBlock: shuffleBlock, seed: seed), split: name ?? split.name, tasks: tasks)
    }

    /// Each item's text in `column` (nil: the item column's own value), by item key: for
    /// showing recommendations. The column is the interactions file's, or a column of a side
    /// table joined on the item column.
    public func itemText(column: String?) throws -> [UInt64: String] {
        guard let item = schema.item, let feature = schema.categoricalIndex(item) else {
            throw DataError.schema(file: path, reason: "the schema names no item column")
        }
        let namespace = FeatureSchema.namespace(schema.categorical[feature].table)
        var out: [UInt64: String] = [:]
        func read(_ file: String, key keyColumn: String, text textColumn: String, delimiter: UInt8) throws {
            let header = try Self.header(file, delimiter: delimiter)
            guard let k = header.firstIndex(of: keyColumn), let t = header.firstIndex(of: textColumn) else {
                throw DataError.schema(file: file, reason: "no column '\(header.contains(keyColumn) ? textColumn : keyColumn)' (the columns are \(header.joined(separator: ", ")))")
            }
            try forEachLine(of: file) { line, number in
                guard number > 1 else { return }
                var key: UInt64?, text: String?, column = 0
                _ = forEachField(line, delimiter) { field, escaped in
                    if column == k { key = FeatureSchema.key(namespace: namespace, value: hash(field, escaped)) }
                    if column == t { text = unescaped(field, escaped) }
                    column += 1
                    return nil
                }
                if let key, let text, out[key] == nil { out[key] = text }
            }
        }
        if let column, column != item, let join = table.joins?.first(where: { $0.on == item && $0.columns[column] != nil }) {
            let file = join.file.hasPrefix("/") ? join.file : directory + "/" + join.file
            try read(file, key: item, text: column, delimiter: try Self.delimiter(join.delimiter, path: file))
        } else {
            try read(path, key: item, text: column ?? item, delimiter: format.delimiter)
        }
        return out
    }

    // MARK: The pass over the interactions

    private static func scan(path: String, format: TabularFormat, options: Options, time: (column: Int, delimiter: UInt8)?) throws
        -> (interactions: Interactions?, assignment: SplitAssignment?, counts: [Int]) {
        let schema = format.schema
        let interactions = schema.user != nil && schema.item != nil ? try Interactions(schema: schema) : nil
        var reader = try LineFile(path: path, lineOptions: .init(format: .tabular(format), shuffleBlock: 0, seed: 0,
                                                                 malformedLines: options.malformedLines))
        var byLine: [UInt8] = []
        var counts = [0, 0, 0]
        /// Every line the scan passed over that is no sample is malformed to the split readers,
        /// which parse it again (and skip it as empty, or count it as skipped).
        func startAssignment() {
            byLine = [UInt8](repeating: SplitAssignment.malformed, count: Int(reader.linesRead + 1))
            byLine[0] = SplitAssignment.none
        }
        func finish() -> (Interactions?, SplitAssignment?, [Int]) {
            interactions?.finish()
            return (interactions, options.splitting == .none ? nil : SplitAssignment(lines: byLine), counts)
        }
        if let interactions, let time, options.splitting == .none || options.splitting == .leaveOneOut {
            // Split by time, or not at all: in bounded memory. The rows' users and items go to
            // a scratch file as they are read (past `runRecords` of them), then, with their
            // times, through an external sort by user and time, which yields each user's
            // sequence in turn, split as it goes.
            let scratch = ScratchFiles(parent: options.temporaryDirectory)
            let rows = SpilledRecords<TimedRow>(limit: options.runRecords, scratch: scratch, name: "rows")
            try reader.scan { batch, numbers in
                for r in 0..<batch.count {
                    try rows.append(TimedRow(user: Int32(interactions.users.add(batch, row: r)),
                                             item: Int32(interactions.items.add(batch, row: r)), time: 0, order: numbers[r]))
                }
            }
            guard rows.count > 0 else { throw TrainingError.noData(path) }
            let sort = TimeSort(runRecords: options.runRecords, scratch: scratch)
            try rows.startReading()
            var row = try rows.next()
            try forEachTime(path: path, column: time, next: { row?.order }) { t in
                row!.time = t
                try sort.add(row!)
                row = try rows.next()
            }
            guard row == nil else { throw DataError.io(path: path, operation: "read", detail: "the file changed while it was read") }
            startAssignment()
            let leaveOneOut = options.splitting == .leaveOneOut
            try interactions.recordSequences(sort) { user, splits in
                for i in user.indices {
                    // The last interaction tests, the one before validates (of users with three or more).
                    let fromEnd = user.count - 1 - i
                    let split = leaveOneOut && user.count >= 3 && fromEnd < 2 ? 2 - fromEnd : 0
                    splits.append(UInt8(split))
                    interactions.record(user: Int(user[i].user), item: Int(user[i].item), split: Interactions.Split(rawValue: split)!)
                    byLine[Int(user[i].order)] = UInt8(split) + 1
                    counts[split] += 1
                }
            }
            return finish()
        }
        var lines: [Int64] = [], users: [Int32] = [], items: [Int32] = []
        try reader.scan { batch, numbers in
            for r in 0..<batch.count {
                lines.append(numbers[r])
                if let interactions {
                    users.append(Int32(interactions.users.add(batch, row: r)))
                    items.append(Int32(interactions.items.add(batch, row: r)))
                }
            }
        }
        guard !lines.isEmpty else { throw TrainingError.noData(path) }
        let splits = try assign(count: lines.count, users: users, splitting: options.splitting, seed: options.seed, file: path)
        for s in splits { counts[Int(s)] += 1 }
        if let interactions {
            for r in lines.indices {
                interactions.record(user: Int(users[r]), item: Int(items[r]), split: Interactions.Split(rawValue: Int(splits[r]))!)
            }
            if let time {
                // Sequences under a random or per-user split, whose rows are in memory already.
                let sort = TimeSort(runRecords: lines.count, scratch: ScratchFiles(parent: options.temporaryDirectory))
                var r = 0
                try forEachTime(path: path, column: time, next: { r < lines.count ? lines[r] : nil }) { t in
                    try sort.add(TimedRow(user: users[r], item: items[r], time: t, order: Int64(r)))
                    r += 1
                }
                guard r == lines.count else { throw DataError.io(path: path, operation: "read", detail: "the file changed while it was read") }
                try interactions.recordSequences(sort) { user, out in
                    for row in user { out.append(splits[Int(row.order)]) }
                }
            }
        }
        if options.splitting != .none {
            startAssignment()
            for (r, line) in lines.enumerated() { byLine[Int(line)] = splits[r] + 1 }
        }
        return finish()
    }

    /// The split of each row (0 train, 1 valid, 2 test), a function of the seed and the rows'
    /// users alone. Leave-one-out follows time, and is split by the time-ordered scan instead.
    @_spi(Testing) public static func assign(count n: Int, users: [Int32], splitting: Splitting, seed: UInt64, file: String) throws -> [UInt8] {
        var splits = [UInt8](repeating: 0, count: n)
        switch splitting {
        case .none:
            return splits
        case .leaveOneOut:
            throw DataError.schema(file: file, reason: "a leave-one-out split needs the schema to name its user, item and time columns")
        case .random(let ratios):
            var rng = SplitMix64(seed: SplitMix64.mix(seed ^ 0x5350_4C49_5452_4E44))  // "SPLITRND"
            cut(Array(0..<n), ratios: ratios, rng: &rng, into: &splits)
        case .perUser(let ratios):
            guard users.count == n else {
                throw DataError.schema(file: file, reason: "a per-user split needs the schema to name its user and item columns")
            }
            var groups: [[Int]] = []
            for (r, u) in users.enumerated() {
                while groups.count <= Int(u) { groups.append([]) }
                groups[Int(u)].append(r)
            }
            for (u, rows) in groups.enumerated() {
                var rng = SplitMix64(seed: SplitMix64.mix(seed ^ 0x5350_4C49_5455_5352 ^ SplitMix64.mix(UInt64(u))))  // "SPLITUSR"
                cut(rows, ratios: ratios, rng: &rng, into: &splits)
            }
        }
        return splits
    }

    /// Calls `body` with the time of each sample line, in file order, from column
    /// `time.column`: a finite number, or an error naming the file and line. `next()` gives the
    /// next sample line's number (ascending; nil after the last), and is asked again after
    /// each `body`.
    private static func forEachTime(path: String, column time: (column: Int, delimiter: UInt8), next: () -> Int64?,
                                    _ body: (Double) throws -> Void) throws {
        try forEachLine(of: path) { line, number in
            guard next() == number else { return }
            var value: Double?, at = 0
            _ = forEachField(line, time.delimiter) { field, escaped in
                if at == time.column { value = Double(unescaped(field, escaped).trimmingCharacters(in: .whitespaces)) }
                at += 1
                return nil
            }
            guard let value, value.isFinite else {
                throw DataError.malformedLine(file: path, line: Int(number), reason: "the time (column \(time.column + 1)) is not a number")
            }
            try body(value)
        }
    }

    /// Shuffles `rows` and gives the first `counts[0]` training, the next validation (with three
    /// ratios), the rest test.
    private static func cut(_ rows: [Int], ratios: [Double], rng: inout SplitMix64, into splits: inout [UInt8]) {
        var order = rows
        shuffle(&order, &rng)
        let parts: [UInt8] = ratios.count == 2 ? [0, 2] : [0, 1, 2]
        var at = 0
        for (s, c) in splitCounts(rows.count, ratios).enumerated() {
            for r in order[at..<(at + c)] { splits[r] = parts[s] }
            at += c
        }
    }

    /// RecBole's counts for `n` rows cut by `ratios` (normalised): every part but the first
    /// gets ⌊ratio · n⌋; then, from the last part back, a part whose ratio · n is between 0
    /// and 1 gets one row from the first, as long as the first keeps more than one.
    public static func splitCounts(_ n: Int, _ ratios: [Double]) -> [Int] {
        let total = ratios.reduce(0, +)
        let r = ratios.map { $0 / total }
        var counts = r.map { Int($0 * Double(n)) }
        counts[0] = n - counts.dropFirst().reduce(0, +)
        for i in stride(from: r.count - 1, through: 1, by: -1) {
            if counts[0] <= 1 { break }
            let share = r[i] * Double(n)
            if share > 0 && share < 1 {
                counts[i] += 1
                counts[0] -= 1
            }
        }
        return counts
    }

    // MARK: Headers

    static func delimiter(_ given: String?, path: String) throws -> UInt8 {
        if let given {
            guard given.utf8.count == 1 else { throw DataError.schema(file: path, reason: "the delimiter must be one byte, not '\(given)'") }
            return given.utf8.first!
        }
        return path.lowercased().hasSuffix(".csv") ? 0x2C : 0x09
    }

    /// The header's column names. RecBole's atomic files name columns `name:type`; the type
    /// is dropped.
    static func header(_ path: String, delimiter: UInt8) throws -> [String] {
        let file = try ReadOnlyFile(path: path)
        let size = Int(min(try file.size(), 1 << 20))
        var bytes = [UInt8](repeating: 0, count: max(size, 1))
        let got = try bytes.withUnsafeMutableBufferPointer { try file.read(into: $0.baseAddress!, count: size, at: 0) }
        var end = bytes[..<got].firstIndex(of: 0x0A) ?? got
        guard got > 0 else { throw DataError.schema(file: path, reason: "the file is empty; it needs a header line naming its columns") }
        if end > 0 && bytes[end - 1] == 0x0D { end -= 1 }
        var names: [String] = []
        let fault = bytes.withUnsafeBufferPointer { b in
            forEachField(UnsafeBufferPointer(rebasing: b[..<end]), delimiter) { field, escaped in
                names.append(unescaped(field, escaped))
                return nil
            }
        }
        if fault != nil { throw DataError.malformedLine(file: path, line: 1, reason: "the header has a quote that does not close") }
        let types = ["token", "token_seq", "float", "float_seq"]
        if names.allSatisfy({ n in types.contains { n.hasSuffix(":" + $0) } }) {
            names = names.map { String($0[..<$0.lastIndex(of: ":")!]) }
        }
        if let duplicate = names.first(where: { n in names.filter { $0 == n }.count > 1 }) {
            throw DataError.schema(file: path, reason: "the header names column '\(duplicate)' twice")
        }
        return names
    }
}

extension TabularData.Options {
    /// What decides the samples a split holds, for the source's identity.
    var identity: String {
        "split \(splitting) seed \(seed) click threshold \(clickThreshold.map { String($0) } ?? "none") crosses \(crosses)"
    }
}

/// Calls `body` with each line of a file (without `\n` or `\r\n`) and its 1-based number, read
/// in chunks: the memory is a chunk and a line, whatever the file's size. A line longer than
/// 1 MiB is an error naming it.
private func forEachLine(of path: String, _ body: (UnsafeBufferPointer<UInt8>, Int64) throws -> Void) throws {
    let file = try ReadOnlyFile(path: path)
    let chunk = 1 << 20
    var buffer = [UInt8](repeating: 0, count: 2 * chunk)
    var offset: Int64 = 0, kept = 0, number: Int64 = 0
    while true {
        let got = try buffer.withUnsafeMutableBufferPointer { try file.read(into: $0.baseAddress! + kept, count: chunk, at: offset) }
        offset += Int64(got)
        let end = kept + got, last = got < chunk
        var start = 0
        try buffer.withUnsafeBufferPointer { bytes in
            var i = 0
            while i < end {
                guard bytes[i] == 0x0A else {
                    i += 1
                    continue
                }
                number += 1
                let stop = i > start && bytes[i - 1] == 0x0D ? i - 1 : i
                try body(UnsafeBufferPointer(rebasing: bytes[start..<stop]), number)
                i += 1
                start = i
            }
            if last && start < end {
                number += 1
                let stop = bytes[end - 1] == 0x0D ? end - 1 : end
                try body(UnsafeBufferPointer(rebasing: bytes[start..<stop]), number)
                start = end
            }
        }
        if last { return }
        kept = end - start
        guard kept < chunk else { throw DataError.malformedLine(file: path, line: Int(number + 1), reason: "longer than \(chunk) bytes") }
        buffer.withUnsafeMutableBufferPointer { b in
            if kept > 0 { b.baseAddress!.update(from: b.baseAddress! + start, count: kept) }
        }
    }
}

/// Turns a `TableSchema` and the files' headers into column roles and the `FeatureSchema`,
/// numbering features in the headers' order.
private struct Plan {
    let table: TableSchema
    let options: TabularData.Options
    /// Where the schema came from, for messages.
    let schemaFile: String
    var dense: [FeatureSchema.Dense] = []
    var categorical: [FeatureSchema.Categorical] = []
    var labels: [FeatureSchema.Label] = []
    var singles = 0, bags = 0
    var thresholdUsed = false

    init(table: TableSchema, options: TabularData.Options, schemaFile: String) {
        self.table = table
        self.options = options
        self.schemaFile = schemaFile
    }

    /// Why `name` cannot name a table (or the tables the models make of it, with a suffix),
    /// or nil.
    static func tableNameProblem(_ name: String) -> String? {
        let allowed = name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "_-.".contains($0)) }
        return !name.isEmpty && name.utf8.count <= 48 && allowed
            ? nil : "table name '\(name)' must be 1 to 48 characters of A-Z, a-z, 0-9, '_', '-', '.'"
    }

    /// The roles of a file's columns. `side` is a join's; nil for the interactions file.
    mutating func roles(for header: [String], columns: [String: TableSchema.Column], file: String,
                        side joinSide: FeatureSchema.Side?) throws -> [ColumnRole] {
        for name in columns.keys.sorted() where !header.contains(name) {
            throw DataError.schema(file: file, reason: "the schema's column '\(name)' is not in the header (its columns are \(header.joined(separator: ", ")))")
        }
        return try header.map { name in
            guard let c = columns[name] else { return .ignore }
            func problem(_ why: String) -> DataError { .schema(file: file, reason: "column '\(name)': \(why)") }
            let side = joinSide ?? c.side ?? (name == table.user ? .user : name == table.item ? .item : .context)
            let tableName = c.table ?? name
            if c.kind != .ignore && c.kind != .label, let why = Self.tableNameProblem(tableName) { throw problem(why) }
            let namespace = FeatureSchema.namespace(tableName)
            switch c.kind {
            case .ignore:
                return .ignore
            case .categorical:
                categorical.append(.init(name, table: tableName, side: side))
                singles += 1
                return .categorical(slot: singles - 1, namespace: namespace)
            case .multi:
                let separator = c.separator ?? " "
                guard separator.utf8.count == 1 else { throw problem("the separator must be one byte, not '\(separator)'") }
                categorical.append(.init(name, table: tableName, multiValued: true, pooling: c.pooling ?? .mean, side: side))
                bags += 1
                return .multi(bag: bags - 1, namespace: namespace, separator: separator.utf8.first!)
            case .numeric:
                if let b = c.buckets {
                    guard !b.isEmpty, b.allSatisfy(\.isFinite), zip(b, b.dropFirst()).allSatisfy({ $0 < $1 }) else {
                        throw problem("buckets must be finite boundaries in ascending order")
                    }
                    categorical.append(.init(name, table: tableName, side: side))
                    singles += 1
                    return .bucketed(slot: singles - 1, namespace: namespace, boundaries: b)
                }
                dense.append(.init(name, side: side))
                return .dense(index: dense.count - 1, log: (c.transform ?? .none) == .log1p)
            case .label:
                guard joinSide == nil else { throw problem("a joined table cannot hold a label") }
                let type = c.type ?? .rating
                if let t = options.clickThreshold, type == .rating, !thresholdUsed {
                    // The click protocol: label "click" from the first rating, the rating kept
                    // beside it (for multi-task runs, and single-task baselines on the same split).
                    thresholdUsed = true
                    labels.append(.init("click", kind: .binary))
                    labels.append(.init(name, kind: .rating))
                    return .label(index: labels.count - 2, binary: true, threshold: t, value: labels.count - 1)
                }
                if let t = c.threshold, !t.isFinite { throw problem("the threshold must be a finite number") }
                labels.append(.init(name, kind: type == .binary ? .binary : .rating))
                return .label(index: labels.count - 1, binary: type == .binary, threshold: c.threshold, value: nil)
            }
        }
    }

    /// Loads a join's file into a table, giving its columns their places in the samples.
    mutating func load(_ join: TableSchema.Join, file: String, on: Int) throws -> JoinTable {
        let delimiter = try TabularData.delimiter(join.delimiter, path: file)
        let header = try TabularData.header(file, delimiter: delimiter)
        guard let idColumn = header.firstIndex(of: join.on) else {
            throw DataError.schema(file: file, reason: "the join is on '\(join.on)', which is not a column (the columns are \(header.joined(separator: ", ")))")
        }
        var columns = join.columns
        columns[join.on] = nil
        let firstSingle = singles, firstBag = bags, firstDense = dense.count, firstFeature = categorical.count
        var local = Plan(table: table, options: options, schemaFile: schemaFile)
        let roles = try local.roles(for: header, columns: columns, file: file, side: join.side)
        // The same columns, numbered after the interactions' features.
        _ = try self.roles(for: header, columns: columns, file: file, side: join.side)
        let schema = FeatureSchema(dense: local.dense, categorical: local.categorical, labels: [])
        let format = TabularFormat(schema: schema, identity: "", delimiter: delimiter, names: header, roles: roles, joins: [],
                                   assignment: nil, split: 0)
        var records: [UInt64: Int32] = [:], firstLine: [UInt64: Int] = [:]
        var lines: [(Int64, [UInt8])] = []
        try forEachLine(of: file) { line, number in if number > 1 && !line.isEmpty { lines.append((number, Array(line))) } }
        let block = SampleBlock(capacity: max(lines.count, 1), schema: schema)
        var count = 0
        for (number, bytes) in lines {
            try bytes.withUnsafeBufferPointer { line in
                switch format.parse(line, number: number, into: block, slot: count) {
                case .skip: return
                case .fault(let fault):
                    block.rollBack(count)
                    if options.malformedLines == .skip { return }
                    throw DataError.malformedLine(file: file, line: Int(number), reason: format.describe(fault, line: line))
                case .sample:
                    var id: UInt64 = 0, column = 0
                    _ = forEachField(line, delimiter) { field, escaped in
                        if column == idColumn { id = hash(field, escaped) }
                        column += 1
                        return nil
                    }
                    if let first = firstLine[id] {
                        throw DataError.malformedLine(file: file, line: Int(number), reason: "id '\(join.on)' repeats line \(first)'s")
                    }
                    firstLine[id] = Int(number)
                    records[id] = Int32(count)
                    block.commit(count)
                    count += 1
                }
            }
        }
        let added = categorical[firstFeature...]
        return JoinTable(
            file: file, on: on, records: records, block: block, count: count,
            singleSlots: Array(firstSingle..<singles), bagIndexes: Array(firstBag..<bags), denseIndexes: Array(firstDense..<dense.count),
            missingSingles: added.filter { !$0.multiValued }.map { FeatureSchema.missingKey(table: $0.table) },
            missingBags: added.filter(\.multiValued).map { FeatureSchema.missingKey(table: $0.table) })
    }

    /// The feature schema, with the crosses; throws if it is not usable.
    func finish() throws -> FeatureSchema {
        var features = categorical
        for parts in (table.crosses ?? []) + options.crosses {
            guard parts.count >= 2 else {
                throw DataError.schema(file: schemaFile, reason: "cross \(parts) crosses \(parts.count) feature\(parts.count == 1 ? "" : "s"); it needs at least two")
            }
            let name = parts.joined(separator: "_x_")
            if let why = Self.tableNameProblem(name) { throw DataError.schema(file: schemaFile, reason: "cross \(parts): \(why)") }
            features.append(.init(name, table: name, side: .context, crossOf: parts))
        }
        let schema = FeatureSchema(dense: dense, categorical: features, labels: labels, user: table.user, item: table.item,
                                   tables: table.tables ?? [:])
        if let problem = schema.problem {
            let click = options.clickThreshold != nil && problem.contains("'click'") ? " (the click protocol names its label 'click')" : ""
            throw DataError.schema(file: schemaFile, reason: problem + click)
        }
        return schema
    }
}
