public import ArgumentParser
import Foundation
import StrataModels
import StrataTraining

extension EvaluationProtocol: ExpressibleByArgument {}

/// Where the data comes from and how it is split and evaluated: shared by `strata train` and
/// `strata recommend`.
struct DataOptions: ParsableArguments {
    @Option(help: """
        Training data: criteo:PATH (Criteo's TSV), synthetic:criteo (generated with a planted model), \
        movielens[:DIR] (MovieLens-100K as RecBole ships it; tools/movielens.sh fetches it), sessions[:DIR] \
        (users' sessions generated with a planted next-item rule, see --session-*, written to DIR), or table:PATH \
        (a CSV or TSV with a header, described by --schema).
        """)
    var data: String
    @Option(help: "Evaluation data of the same kind as --data (default for synthetic data: its held-out stream).")
    var evalData: String?
    @Option(help: "The schema file (JSON) of table: data: each column's kind, crosses, joins (see the README).")
    var schema: String?
    @Option(help: "Tabular data: none, ratings (80/20, RMSE/MAE), topk (8:1:1 per user, full ranking), click (label rating >= --click-threshold, 8:1:1, AUC/logloss) or next-item (each user's last item in time for test, the one before for validation; full ranking after the history; needs the schema's time column).")
    var `protocol` = EvaluationProtocol.none
    @Option(help: "Tabular data: the split's ratios, train:test or train:valid:test (default: the protocol's).")
    var split: String?
    @Option(parsing: .unconditional, help: "The click protocol: a rating at or above this is a click.") var clickThreshold = 4.0
    @Option(help: "Tabular data: a cross of features for the wide part, as A,B (repeatable).") var cross: [String] = []
    @Option(parsing: .unconditional, help: "Ranking metrics at this K.") var topK = 10
    @Option(parsing: .unconditional, help: "The next-item protocol: the most recent items of a user's history a sample holds.")
    var history = 50
    @Option(help: "A malformed input line: skip (and count) or stop.") var onMalformed = "stop"
    @Option(parsing: .unconditional, help: "Samples read together and shuffled (0: file order; default 0 for Criteo files, 131072 for tables).")
    var shuffleBlock: Int?

    @Option(parsing: .unconditional, help: "Synthetic data: samples per epoch.") var syntheticSamples: Int64 = 10_000_000
    @Option(parsing: .unconditional, help: "Synthetic data: the largest key space of a categorical feature (others shrink geometrically to 10).")
    var syntheticKeys: Double = 1e7
    @Option(help: "Synthetic data: key spaces of the categorical features: geometric (see --synthetic-keys) or kaggle (Criteo Kaggle's table sizes).")
    var syntheticKeySpaces = "geometric"
    @Option(parsing: .unconditional, help: "Synthetic data: Zipf exponent of the categorical ids.") var syntheticZipf = 1.05

    @Option(parsing: .unconditional, help: "Sessions data: users (default 1000).") var sessionUsers: Int?
    @Option(parsing: .unconditional, help: "Sessions data: items (default 500).") var sessionItems: Int?
    @Option(help: "Sessions data: interactions per user, MIN-MAX or N (default 20-50).") var sessionLength: String?
    @Option(parsing: .unconditional, help: "Sessions data: the probability p that an item is the planted successor of the one before (otherwise a popularity draw); a model that learned the rule reaches Hit@10 of about p (default 0.5).")
    var sessionRule: Double?
    @Option(parsing: .unconditional, help: "Sessions data: Zipf exponent of the items drawn by popularity (default 1).") var sessionZipf: Double?

    func validate() throws {
        for (option, value) in [("--data", data), ("--eval-data", evalData)] {
            guard let value else { continue }
            try OptionCheck.require(Self.dataKinds.contains { value == $0 || value.hasPrefix($0 + ":") },
                                    "\(option): criteo:PATH, synthetic:criteo, movielens[:DIR], sessions[:DIR] or table:PATH, not '\(value)'")
        }
        try validateSessions()
        if !isTabular {
            // What only tabular data reads is refused, not ignored.
            if let schema { throw ValidationError("--schema \(schema) is for table: data, not --data \(data)") }
            if let split { throw ValidationError("--split \(split) applies to movielens, sessions and table: data, not --data \(data)") }
            if let first = cross.first { throw ValidationError("--cross \(first) applies to movielens, sessions and table: data, not --data \(data)") }
            if `protocol` != .none { throw ValidationError("--protocol \(`protocol`.rawValue) applies to movielens, sessions and table: data, not --data \(data)") }
        }
        if let split { _ = try parseRatios(split) }
        _ = try parsedCrosses()
        if let schema, data.hasPrefix("movielens") || isSessions {
            throw ValidationError("--schema \(schema) is for table: data; --data \(data) has its own")
        }
        try OptionCheck.require(["geometric", "kaggle"].contains(syntheticKeySpaces),
                                "--synthetic-key-spaces: geometric or kaggle, not '\(syntheticKeySpaces)'")
        try OptionCheck.whole(topK, "--top-k", 1...100_000)
        try OptionCheck.whole(history, "--history", 1...1024)
        // A block is held in memory.
        if let shuffleBlock { try OptionCheck.whole(shuffleBlock, "--shuffle-block", 0...(1 << 24)) }
        try OptionCheck.require(clickThreshold.isFinite, "--click-threshold must be a number, not \(clickThreshold)")
        try OptionCheck.whole(Int(syntheticSamples), "--synthetic-samples", 1...Int.max)
        try OptionCheck.require(syntheticKeys >= 10 && syntheticKeys <= Double(Int64.max / 2),
                    "--synthetic-keys must be at least 10 (the smallest feature's key space), not \(syntheticKeys)")
        try OptionCheck.positive(syntheticZipf, "--synthetic-zipf", most: 100)
        try OptionCheck.require(["skip", "stop"].contains(onMalformed), "--on-malformed: skip or stop, not '\(onMalformed)'")
    }

    var malformedLines: MalformedLinePolicy { onMalformed == "skip" ? .skip : .stop }

    /// The kinds of --data, each alone or followed by ":" and its argument.
    private static let dataKinds = ["criteo", "synthetic", "movielens", "sessions", "table"]

    private var isTabular: Bool { data.hasPrefix("movielens") || data.hasPrefix("table:") || isSessions }
    private var isSessions: Bool { data == "sessions" || data.hasPrefix("sessions:") }

    /// The --session-* options' values, checked, then what they make together; refused with
    /// data of another kind, which would not read them.
    private func validateSessions() throws {
        if let sessionUsers { try OptionCheck.whole(sessionUsers, "--session-users", 1...100_000_000) }
        // One item would be its own successor.
        if let sessionItems { try OptionCheck.whole(sessionItems, "--session-items", 2...100_000_000) }
        if let sessionLength { _ = try Self.lengths(sessionLength) }
        if let sessionRule { try OptionCheck.number(sessionRule, "--session-rule", 0...1) }
        if let sessionZipf { try OptionCheck.positive(sessionZipf, "--session-zipf", most: 100) }
        let given = [("--session-users", sessionUsers.map { "\($0)" }), ("--session-items", sessionItems.map { "\($0)" }),
                     ("--session-length", sessionLength), ("--session-rule", sessionRule.map { "\($0)" }),
                     ("--session-zipf", sessionZipf.map { "\($0)" })]
        if !isSessions, let (flag, value) = given.first(where: { $0.1 != nil }) {
            throw ValidationError("\(flag) \(value!) applies to --data sessions, not --data \(data)")
        }
        guard isSessions else { return }
        let o = try sessionOptions(seed: 1)
        try OptionCheck.require(o.users * o.interactions.upperBound <= SyntheticSessions.Options.largestTotal,
                                "--session-users \(o.users) with --session-length up to \(o.interactions.upperBound) may make more than \(SyntheticSessions.Options.largestTotal) interactions")
        // Sessions have no label: they are ranked.
        try OptionCheck.require(`protocol` == .nextItem || `protocol` == .topk,
                                "--data \(data) holds sessions without labels: give --protocol next-item (or topk), not \(`protocol`.rawValue)")
    }

    /// --session-length: MIN-MAX or N.
    private static func lengths(_ text: String) throws -> ClosedRange<Int> {
        let parts = text.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false).map { Int($0) }
        guard let low = parts.first ?? nil, let high = parts.last ?? nil, 1 <= low, low <= high, high <= 1_000_000 else {
            throw ValidationError("--session-length wants MIN-MAX (or N) with 1 <= MIN <= MAX <= 1000000, not '\(text)'")
        }
        return low...high
    }

    /// The generator's options (the defaults where not given); `seed` is the run's.
    func sessionOptions(seed: UInt64) throws -> SyntheticSessions.Options {
        var o = SyntheticSessions.Options(seed: seed)
        if let sessionUsers { o.users = sessionUsers }
        if let sessionItems { o.items = sessionItems }
        if let sessionLength { o.interactions = try Self.lengths(sessionLength) }
        if let sessionRule { o.rule = sessionRule }
        if let sessionZipf { o.zipfExponent = sessionZipf }
        return o
    }

    /// What the training run reads, and what the data is (tabular data also for recommending).
    struct Loaded {
        var training: TrainingData
        var schema: FeatureSchema
        var table: TabularData?
        /// The loss the data's protocol trains with unless --loss says otherwise.
        var defaultLoss: String
        /// Whether the protocol ranks users' items (BPR then draws negatives).
        var ranks: Bool
        /// Synthetic data's held-out stream, which knows its planted model's AUC.
        var synthetic: SyntheticClicks? = nil
        /// Sessions data's generator, which knows its planted rule's Hit@K.
        var sessions: SyntheticSessions? = nil
    }

    /// `tasks` (a multi-task run's), or else `label`, names the labels the evaluation reads,
    /// the model's output column each (neither: the first label).
    func load(seed: UInt64, tasks: [TrainingOptions.Task]?, label: String?) throws -> Loaded {
        let labels = tasks?.map(\.label) ?? label.map { [$0] } ?? []
        if isTabular { return try loadTable(seed: seed, labels: labels) }
        let train = try clickSource(data, split: .train, seed: seed)
        let evaluation = try evalData.map { try clickSource($0, split: .test, seed: seed) }
            ?? (data.hasPrefix("synthetic:") ? try clickSource(data, split: .test, seed: seed) : nil)
        let evaluator = evaluation.map { PointwiseEvaluator($0, split: "eval", kind: .click, label: 0) }
        return Loaded(training: TrainingData(train: train, validation: evaluator), schema: train.schema, table: nil,
                      defaultLoss: "bce", ranks: false, synthetic: evalData == nil ? evaluation as? SyntheticClicks : nil)
    }

    private func clickSource(_ spec: String, split: SyntheticClicks.Split, seed: UInt64) throws -> any BatchSource {
        if spec == "synthetic:criteo" {
            var o = SyntheticClicks.Options(seed: seed, samplesPerEpoch: syntheticSamples, zipfExponent: syntheticZipf,
                                            largestKeySpace: Int64(syntheticKeys))
            switch syntheticKeySpaces {
            case "geometric": break
            case "kaggle": o.keySpaces = SyntheticClicks.criteoKaggleKeySpaces
            default: throw ValidationError("--synthetic-key-spaces: geometric or kaggle, not '\(syntheticKeySpaces)'")
            }
            return SyntheticClicks(options: o, split: split)
        }
        if spec.hasPrefix("criteo:") {
            return try CriteoFile(path: String(spec.dropFirst("criteo:".count)),
                                  options: .init(shuffleBlock: shuffleBlock ?? 0, seed: seed, malformedLines: malformedLines))
        }
        throw ValidationError("data must be criteo:PATH, synthetic:criteo, movielens[:DIR], sessions[:DIR] or table:PATH, not '\(spec)'")
    }

    private func loadTable(seed: UInt64, labels: [String]) throws -> Loaded {
        if `protocol` == .none && split != nil { throw ValidationError("--split needs a --protocol") }
        guard evalData == nil || `protocol` == .none else {
            throw ValidationError("--eval-data and --protocol exclude each other: the protocol evaluates on its own split")
        }
        let crosses = try parsedCrosses()
        var options = TabularData.Options(protocol: `protocol`, ratios: try split.map(parseRatios), seed: seed,
                                          clickThreshold: clickThreshold, crosses: crosses)
        options.malformedLines = malformedLines
        let sessions = isSessions ? try SyntheticSessions(try sessionOptions(seed: seed)) : nil
        let table = try tableData(data, options: options, sessions: sessions)
        let block = shuffleBlock ?? 131_072
        var training = try table.trainingData(protocol: `protocol`, labels: labels, topK: topK, shuffleBlock: block, seed: seed,
                                              historyLength: history)
        if let evalData {
            let other = try tableData(evalData, options: TabularData.Options(malformedLines: malformedLines, crosses: crosses))
            guard other.schema == table.schema else { throw ValidationError("--eval-data has other columns than --data") }
            training.validation = try other.evaluator(.train, labels: labels, shuffleBlock: 0, seed: seed, split: "eval")
        }
        // Without a protocol, the label decides: MSE for a rating, BCE for a click.
        let labelKind = table.schema.labels.first { $0.name == labels.first }?.kind ?? table.schema.labels.first?.kind
        let loss = `protocol` == .none ? (labelKind == .rating ? "mse" : "bce") : `protocol`.defaultLoss
        return Loaded(training: training, schema: training.train.schema, table: table, defaultLoss: loss,
                      ranks: `protocol` == .topk || `protocol` == .nextItem, sessions: sessions)
    }

    /// `sessions` generates sessions data.
    private func tableData(_ spec: String, options: TabularData.Options, sessions: SyntheticSessions? = nil) throws -> TabularData {
        if spec == "sessions" || spec.hasPrefix("sessions:") {
            guard let sessions else { throw ValidationError("--eval-data \(spec): sessions data is evaluated by its protocol's split") }
            let directory = spec == "sessions" ? Self.dataDirectory + "/sessions" : String(spec.dropFirst("sessions:".count))
            return try sessions.data(directory: directory, options: options)
        }
        if spec == "movielens" || spec.hasPrefix("movielens:") {
            guard schema == nil else { throw ValidationError("--schema is for table: data; movielens has its own") }
            let directory = spec == "movielens" ? Self.movieLensDirectory : String(spec.dropFirst("movielens:".count))
            guard FileManager.default.fileExists(atPath: directory + "/ml-100k.inter") else {
                throw ValidationError("no MovieLens-100K in \(directory): run tools/movielens.sh, which fetches it there")
            }
            return try TabularData(movieLens: directory, options: options)
        }
        guard spec.hasPrefix("table:") else { throw ValidationError("data must be movielens[:DIR] or table:PATH, not '\(spec)'") }
        guard let schema else { throw ValidationError("table: data needs --schema FILE saying what its columns are") }
        let table = try TableSchema.load(schema)
        let directory = URL(fileURLWithPath: schema).deletingLastPathComponent().path
        return try TabularData(path: String(spec.dropFirst("table:".count)), table: table, schemaFile: schema, directory: directory,
                               options: options)
    }

    /// Where tools/movielens.sh puts MovieLens-100K.
    static var movieLensDirectory: String { dataDirectory + "/ml-100k" }

    /// Where data is fetched or generated: $STRATA_DATA, or ~/.cache/strata/data.
    static var dataDirectory: String {
        ProcessInfo.processInfo.environment["STRATA_DATA"] ?? NSHomeDirectory() + "/.cache/strata/data"
    }

    private func parsedCrosses() throws -> [[String]] {
        try cross.map { text -> [String] in
            let parts = text.split(separator: ",").map { String($0) }
            guard parts.count >= 2 else { throw ValidationError("--cross wants features like age,genre, got '\(text)'") }
            return parts
        }
    }

    private func parseRatios(_ text: String) throws -> [Double] {
        let parts = text.split(separator: ":").map { Double($0) }
        guard (2...3).contains(parts.count), parts.allSatisfy({ ($0 ?? 0) > 0 && $0!.isFinite }) else {
            throw ValidationError("--split wants positive ratios like 0.8:0.2 or 0.8:0.1:0.1, got '\(text)'")
        }
        return parts.map { $0! }
    }
}
