// Session data with a planted next-item rule, for tests and benchmarks: users' interactions
// (user, item, time) where each item follows from the one before by a fixed function with
// probability p, and is otherwise a draw by popularity. It is written as a TSV and read back
// through `TabularData`, so the next-item protocol's split, `SequenceSamples` and
// `NextItemEvaluator` run on it exactly as on any interaction log.
//
// Every user's session is a pure function of (seed, user), and the rule of (seed): the same
// options give the same bytes whatever the thread, the time or the order users are made in.
//
// The rule: the items form one cycle in a seeded random order, and `successor(i)` is the item
// after i on it (a single cycle: no item is its own successor, and a chain of rule steps
// never comes back to an item before it has gone round every item). An item's first is a
// Zipf draw; each later one is the previous item's successor with probability p, otherwise a
// Zipf(s) draw over the items (rank k is item k − 1, so item 0 is the most popular).
//
// Why that is a known ceiling: the leave-one-out test item is the rule's successor of the
// item before it (the last one a model reads) with probability p, and a Zipf draw otherwise.
// A model that learned the rule ranks that successor first, so its Hit@10 is at least about
// p; ranking the Zipf head after it adds about (1 − p) times the head's share, and that
// ranking is the ceiling to expect (`references` scores it on the test split). A popularity
// model ignores the history: it hits only when the item is one of the ten most frequent,
// which are the Zipf head and the head's first successors, so its Hit@10 stays near their
// share of the data (0.35 with the defaults, against 0.74 for the rule: `strata train`
// prints both).
import Foundation
import Glibc
public import StrataModels
import StrataStore

public struct SyntheticSessions: Sendable {
    public struct Options: Sendable, Hashable, Codable {
        public var users: Int
        public var items: Int
        /// How many interactions each user has, drawn uniformly from this range. Users with
        /// fewer than three train on all of them under the next-item protocol.
        public var interactions: ClosedRange<Int>
        /// p: the probability that an item is the previous one's successor.
        public var rule: Double
        /// s of the Zipf law the other items are drawn from: the popularity skew.
        public var zipfExponent: Double
        public var seed: UInt64

        public init(users: Int = 1000, items: Int = 500, interactions: ClosedRange<Int> = 20...50, rule: Double = 0.5,
                    zipfExponent: Double = 1.0, seed: UInt64 = 1) {
            self.users = users
            self.items = items
            self.interactions = interactions
            self.rule = rule
            self.zipfExponent = zipfExponent
            self.seed = seed
        }

        /// The most interactions the data may hold: `TabularData` keeps a few bytes a line
        /// in memory, and items and lines are counted in 32 bits.
        public static let largestTotal = 1 << 31

        /// What is wrong with the options, naming the field, or nil.
        public var problem: String? {
            if users < 1 || users > 100_000_000 { return "users must be between 1 and 100000000, not \(users)" }
            // One item would be its own successor.
            if items < 2 || items > 100_000_000 { return "items must be between 2 and 100000000, not \(items)" }
            if interactions.lowerBound < 1 || interactions.upperBound > 1_000_000 {
                return "interactions per user must be between 1 and 1000000, not \(interactions.lowerBound)-\(interactions.upperBound)"
            }
            // Both bounded above, the product fits an Int.
            if users * interactions.upperBound > Self.largestTotal {
                return "\(users) users of up to \(interactions.upperBound) interactions may make more than \(Self.largestTotal) lines"
            }
            if !(rule >= 0 && rule <= 1) { return "the rule's probability must be between 0 and 1, not \(rule)" }
            if !(zipfExponent > 0 && zipfExponent <= 100) { return "the Zipf exponent must be above 0 and at most 100, not \(zipfExponent)" }
            return nil
        }
    }

    /// Options that cannot make data.
    public struct InvalidOptions: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public let options: Options
    /// successor[i]: the item the rule puts after item i.
    public let successors: [Int32]
    private let zipf: ZipfDistribution

    public init(_ options: Options) throws(InvalidOptions) {
        if let problem = options.problem { throw InvalidOptions(description: "synthetic sessions: \(problem)") }
        self.options = options
        zipf = ZipfDistribution(count: Int64(options.items), exponent: options.zipfExponent)
        var order = (0..<Int32(options.items)).map { $0 }
        var rng = SplitMix64(seed: SplitMix64.mix(options.seed ^ 0x5355_4343_4553_534F))  // "SUCCESSO"
        shuffle(&order, &rng)
        var successors = [Int32](repeating: 0, count: options.items)
        for k in order.indices { successors[Int(order[k])] = order[(k + 1) % order.count] }
        self.successors = successors
    }

    public func successor(of item: Int) -> Int { Int(successors[item]) }

    /// User u's interactions in time order: items, and times strictly increasing (seconds).
    public func session(ofUser u: Int) -> (items: [Int32], times: [Int64]) {
        precondition(u >= 0 && u < options.users, "user \(u) of \(options.users)")
        var rng = SplitMix64(seed: SplitMix64.mix(options.seed ^ 0x5345_5353_494F_4E53 ^ SplitMix64.mix(UInt64(u))))  // "SESSIONS"
        let range = options.interactions
        let n = range.lowerBound + Int(rng.next().multipliedFullWidth(by: UInt64(range.count)).high)
        var items = [Int32](), times = [Int64]()
        items.reserveCapacity(n)
        times.reserveCapacity(n)
        // Users start within 30 days of one another; interactions are 1 s to 1 h apart.
        var time = 1_700_000_000 + Int64(rng.next() % (30 * 86_400))
        var item = Int32(zipf.sample(&rng) - 1)
        for t in 0..<n {
            if t > 0 {
                let uniform = Double(rng.next() >> 11) * 0x1p-53
                item = uniform < options.rule ? successors[Int(item)] : Int32(zipf.sample(&rng) - 1)
                time += 1 + Int64(rng.next() % 3600)
            }
            items.append(item)
            times.append(time)
        }
        return (items, times)
    }

    // MARK: As a table

    /// The schema of the TSV `write` makes: user, item and time columns.
    public static let table = TableSchema(
        columns: ["user": .init(kind: .categorical, table: "user"), "item": .init(kind: .categorical, table: "item"),
                  "time": .init(kind: .ignore)],
        user: "user", item: "item", time: "time")

    public static func userName(_ u: Int) -> String { "u\(u)" }
    public static func itemName(_ i: Int) -> String { "i\(i)" }

    /// A file name that differs for every set of options: data made with other options is
    /// never mistaken for these.
    public var fileName: String {
        let o = options
        return "sessions-seed\(o.seed)-users\(o.users)-items\(o.items)-length\(o.interactions.lowerBound)-\(o.interactions.upperBound)"
            + "-rule\(o.rule)-zipf\(o.zipfExponent).tsv"
    }

    /// The TSV's bytes, whole lines in chunks of about 1 MiB, header first.
    func forEachChunk(_ body: ([UInt8]) throws -> Void) rethrows {
        var chunk = Array("user\titem\ttime\n".utf8)
        chunk.reserveCapacity(1 << 20 + 4096)
        for u in 0..<options.users {
            let (items, times) = session(ofUser: u)
            let user = Array((Self.userName(u) + "\t").utf8)
            for (item, time) in zip(items, times) {
                chunk += user
                chunk += Self.itemName(Int(item)).utf8
                chunk.append(0x09)
                chunk += String(time).utf8
                chunk.append(0x0A)
            }
            if chunk.count >= 1 << 20 {
                try body(chunk)
                chunk.removeAll(keepingCapacity: true)
            }
        }
        if !chunk.isEmpty { try body(chunk) }
    }

    /// Writes the sessions as a TSV with a header (`table`'s columns) at `path`. A file that
    /// already holds these very bytes is left as it is, so that its identity (size and
    /// modification time), which a checkpoint records, stays the same and a run resumes on it.
    public func write(to path: String) throws(DataError) {
        if holds(path) { return }
        let temporary = path + ".partial-\(getpid())"
        guard FileManager.default.createFile(atPath: temporary, contents: nil), let handle = FileHandle(forWritingAtPath: temporary) else {
            throw .io(path: temporary, operation: "create", detail: "cannot create the file")
        }
        do {
            defer { try? handle.close() }
            try forEachChunk { try handle.write(contentsOf: $0) }
            try handle.synchronize()
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw .io(path: temporary, operation: "write", detail: (error as NSError).localizedDescription)
        }
        // A reader never sees half a file.
        guard rename(temporary, path) == 0 else {
            let why = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: temporary)
            throw .io(path: path, operation: "rename", detail: why)
        }
    }

    /// Whether the file at `path` holds exactly the sessions' bytes.
    private func holds(_ path: String) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        struct Differs: Error {}
        do {
            try forEachChunk { chunk in
                guard let read = try handle.read(upToCount: chunk.count), read.elementsEqual(chunk) else { throw Differs() }
            }
            return try handle.read(upToCount: 1)?.isEmpty ?? true
        } catch {
            return false
        }
    }

    /// The sessions as tabular data: written to `directory` (made if need be) under
    /// `fileName`, then opened like a `table:` file with `options`' split.
    public func data(directory: String, options: TabularData.Options) throws -> TabularData {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw DataError.io(path: directory, operation: "create the directory", detail: (error as NSError).localizedDescription)
        }
        let path = directory + "/" + fileName
        try write(to: path)
        return try TabularData(path: path, table: Self.table, schemaFile: "the synthetic sessions' schema", directory: directory,
                               options: options)
    }

    // MARK: What a model can reach

    /// The catalog entity of each item (nil for an item the data never holds).
    public func entities(in interactions: Interactions) -> [Int32?] {
        let namespace = FeatureSchema.namespace(Self.table.columns["item"]!.table!)
        return (0..<options.items).map { i in
            let value = Array(Self.itemName(i).utf8).withUnsafeBufferPointer { FeatureSchema.valueHash($0) }
            return interactions.items.entity(id: FeatureSchema.key(namespace: namespace, value: value)).map(Int32.init)
        }
    }

    /// Hit@k on `split` (valid or test) of two rankings with the evaluator's exclusions (the
    /// history's items but the held-out one): the planted one, which knows the rule (the last
    /// item's successor first, then every item by its Zipf probability: the most likely next
    /// items in order), and popularity (by training interactions, what a model without the
    /// history can do). A model's Hit@k is expected between the two, near the first.
    public func references(_ interactions: Interactions, split: Interactions.Split = .test, k: Int = 10)
        -> (planted: Double, popularity: Double) {
        let entities = entities(in: interactions)
        var item = [Int32](repeating: -1, count: interactions.items.count)
        for (i, e) in entities.enumerated() { if let e { item[Int(e)] = Int32(i) } }
        // Zipf order is the items' own order; popularity's ties go to the lower entity.
        let byZipf = entities.compactMap { $0 }
        let byPopularity = interactions.popularity.indices.sorted {
            interactions.popularity[$0] > interactions.popularity[$1] || (interactions.popularity[$0] == interactions.popularity[$1] && $0 < $1)
        }.map { Int32($0) }
        var planted = RankingMetrics(k: k), popularity = RankingMetrics(k: k)
        var ranked: [Int32] = []
        for u in 0..<interactions.users.count {
            let relevant = interactions.items(of: u, in: split)
            guard !relevant.isEmpty else { continue }
            let excluded = interactions.excluded(u, evaluating: split)
            func fill(from order: [Int32]) {
                for e in order {
                    if ranked.count == k { return }
                    if !excluded.sortedContains(e) && !ranked.contains(e) { ranked.append(e) }
                }
            }
            ranked.removeAll(keepingCapacity: true)
            if let last = interactions.history(of: u, before: split).last, let next = entities[successor(of: Int(item[Int(last)]))],
               !excluded.sortedContains(next) {
                ranked.append(next)
            }
            fill(from: byZipf)
            planted.add(ranked: ranked, relevant: relevant)
            ranked.removeAll(keepingCapacity: true)
            fill(from: byPopularity)
            popularity.add(ranked: ranked, relevant: relevant)
        }
        return (planted.hitAtK, popularity.hitAtK)
    }
}
