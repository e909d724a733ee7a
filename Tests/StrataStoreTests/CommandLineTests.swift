// The `strata` command, run as a user runs it. Timings are printed by the commands, never
// asserted here: these tests only check that the commands work and report what they should.
import Foundation
import Testing
import StrataStore
import StrataTestSupport

@Suite struct CommandLineTests {
    static let strata = productsDirectory() + "/strata"

    static func run(_ arguments: [String]) throws -> (status: Int32, lines: [String]) {
        let child = try ChildProcess(strata, arguments)
        let lines = child.readAll(timeout: 600)
        return (try child.wait(), lines)
    }

    /// Bad option values, each refused before any work with exit status 64 and one `Error:`
    /// line naming the option and the value; never a signal. The traps among them (a zero
    /// batch, a size too large for an Int, a negative value read as a missing one) are the
    /// ones a user met.
    @Test(arguments: [
        (["bench", "--batch", "0"], "--batch", "0"),
        (["bench", "--batch", "-5"], "--batch", "-5"),
        (["bench", "--rows", "0"], "--rows", "0"),
        (["bench", "--hot-rows", "0"], "--hot-rows", "0"),
        (["bench", "--dim", "0"], "--dim", "0"),
        (["bench", "--seconds", "nan"], "--seconds", "nan"),
        (["bench", "--seconds", "-1"], "--seconds", "-1"),
        (["bench", "--checkpoint-rows", "0"], "--checkpoint-rows", "0"),
        (["bench", "--checkpoint-batches", "-1"], "--checkpoint-batches", "-1"),
        (["bench", "--only", "hot,nope"], "--only", "nope"),
        (["info", "STORE", "--hot-mb", "1e300"], "--hot-mb", "1e+300"),
        (["inspect", "STORE", "t", "--hot-mb", "-1"], "--hot-mb", "-1"),
        (["get", "STORE", "t", "1", "--map-resident-mb", "0"], "--map-resident-mb", "0"),
        (["info", "STORE", "--wait", "-3"], "--wait", "-3"),
        (["inspect", "STORE", "t", "--bins", "0"], "--bins", "0"),
        (["export", "STORE", "t", "--format", "npy", "--out", "X", "--batch-size", "0"], "--batch-size", "0"),
        (["import", "STORE", "t", "--from", "X", "--checkpoint-rows", "-4"], "--checkpoint-rows", "-4"),
        (["evict", "STORE", "t", "--max-norm", "-1"], "--max-norm", "-1"),
        (["neighbors", "STORE", "t", "1", "-k", "-2"], "-k", "-2"),
        (["index", "STORE", "t", "--m", "0"], "--m", "0"),
        (["bench-index", "--ef-search", "0"], "--ef-search", "0"),
        (["train", "--data", "synthetic:criteo", "--batch-size", "-5"], "--batch-size", "-5"),
        (["train", "--data", "synthetic:criteo", "--shuffle-block", "3000000000"], "--shuffle-block", "3000000000"),
        (["train", "--data", "synthetic:criteo", "--hot-mb", "1e300"], "--hot-mb", "1e+300"),
        (["train", "--data", "synthetic:criteo", "--warm-mb", "-2"], "--warm-mb", "-2"),
        (["train", "--data", "synthetic:criteo", "--threads", "0"], "--threads", "0"),
        (["train", "--data", "synthetic:criteo", "--lookahead", "-1"], "--lookahead", "-1"),
        (["train", "--data", "synthetic:criteo", "--learning-rate", "-0.1"], "--learning-rate", "-0.1"),
        (["train", "--data", "synthetic:criteo", "--weight-decay", "nan"], "--weight-decay", "nan"),
        (["train", "--data", "synthetic:criteo", "--epochs", "0"], "--epochs", "0"),
        (["train", "--data", "synthetic:criteo", "--steps", "-1"], "--steps", "-1"),
        (["train", "--data", "synthetic:criteo", "--eval-every", "-1"], "--eval-every", "-1"),
        (["train", "--data", "synthetic:criteo", "--negatives", "-1"], "--negatives", "-1"),
        (["train", "--data", "synthetic:criteo", "--dropout", "1"], "--dropout", "1"),
        (["train", "--data", "synthetic:criteo", "--synthetic-samples", "-1"], "--synthetic-samples", "-1"),
        (["train", "--data", "synthetic:criteo", "--synthetic-zipf", "-1"], "--synthetic-zipf", "-1"),
        (["train", "--data", "synthetic:criteo", "--top-k", "0"], "--top-k", "0"),
        (["roundtrip", "--rows", "-1"], "--rows", "-1"),
        (["roundtrip", "--dim", "0"], "--dim", "0"),
        (["roundtrip", "--hot-mb", "-1"], "--hot-mb", "-1"),
        (["roundtrip", "--checkpoint-every", "0"], "--checkpoint-every", "0"),
        (["roundtrip", "--train-batch", "0"], "--train-batch", "0"),
    ])
    func badOptionValuesAreRefusedNamingTheOptionAndValue(_ arguments: [String], _ option: String, _ value: String) throws {
        let directory = temporaryDirectory("strata-bad-option")
        defer { removeDirectory(directory) }
        let resolved = arguments.map { $0 == "STORE" ? directory + "/store" : $0 == "X" ? directory + "/x" : $0 }
        let (status, lines) = try Self.run(resolved)
        #expect(status == 64, "\(arguments): status \(status): \(lines.suffix(3))")
        let error = lines.first { $0.hasPrefix("Error:") }
        #expect(error.map { $0.contains(option) && $0.contains(value) } == true, "\(arguments): \(lines.prefix(3))")
        #expect(!FileManager.default.fileExists(atPath: directory + "/store"), "\(arguments) created a store")
    }

    /// Every option of every subcommand (as `strata --experimental-dump-help` lists them)
    /// with a value it must refuse, given after the arguments that make the rest of the
    /// command sound. A new option without an entry here fails `everyOptionHasABadValue`.
    static let badValues: [String: String] = [
        // Training and its data (recommend shares the data options).
        "train --model": "nope", "train --data": "nope:x", "train --eval-data": "nope:x", "train --schema": "NOFILE",
        "train --protocol": "nope", "train --split": "0.5:nope", "train --click-threshold": "nan", "train --cross": "nope",
        "train --top-k": "0", "train --history": "0", "train --on-malformed": "nope", "train --shuffle-block": "-1",
        "train --synthetic-samples": "0", "train --synthetic-keys": "0.5", "train --synthetic-key-spaces": "nope",
        "train --synthetic-zipf": "-1", "train --session-users": "0", "train --session-items": "1",
        "train --session-length": "5-3", "train --session-rule": "1.5", "train --session-zipf": "0",
        "train --store": "FILE/store", "train --embedding-dim": "0", "train --mlp": "8,nope",
        "train --dropout": "1", "train --cross-layers": "-1", "train --combine": "nope", "train --mlp-embedding-dim": "0",
        "train --bottom-mlp": "0", "train --top-mlp": "-4", "train --set": "nope", "train --batch-size": "0",
        "train --learning-rate": "-0.1", "train --sparse-learning-rate": "inf", "train --optimizer": "nope",
        "train --sparse-optimizer": "nope", "train --wide-optimizer": "nope", "train --wide-learning-rate": "-1",
        "train --weight-decay": "nan", "train --loss": "nope", "train --label": "nope", "train --task": "click:nope", "train --negatives": "-1",
        "train --negative-sampling": "nope", "train --steps": "-1", "train --epochs": "0", "train --eval-every": "-1",
        "train --eval-samples": "-1", "train --checkpoint-every": "-1", "train --seed": "-1", "train --hot-mb": "-1",
        "train --warm-mb": "-2", "train --map-resident-mb": "0", "train --lookahead": "-1", "train --threads": "0",
        "train --metrics": "FILE/metrics.jsonl", "train --report": "FILE/report",
        "recommend --hot-mb": "-1", "recommend --map-resident-mb": "0", "recommend --wait": "-3", "recommend --data": "nope:x",
        "recommend --eval-data": "nope:x", "recommend --schema": "NOFILE", "recommend --protocol": "nope",
        "recommend --split": "nope", "recommend --click-threshold": "nan", "recommend --cross": "nope", "recommend --top-k": "0", "recommend --history": "2000",
        "recommend --on-malformed": "nope", "recommend --shuffle-block": "-1", "recommend --synthetic-samples": "0",
        "recommend --synthetic-keys": "-1", "recommend --synthetic-key-spaces": "nope", "recommend --synthetic-zipf": "nan",
        "recommend --session-users": "-1", "recommend --session-items": "0", "recommend --session-length": "nope",
        "recommend --session-rule": "nan", "recommend --session-zipf": "-2",
        "recommend --user": "nope", "recommend --task": "nope", "recommend --count": "0", "recommend --show": "nope",
        "recommend --retrieve": "0", "recommend --retriever": "NOFILE",
        // The tools, each with the options every store tool takes.
        "info --hot-mb": "-1", "info --map-resident-mb": "-1", "info --wait": "-3",
        "inspect --hot-mb": "-1", "inspect --map-resident-mb": "0", "inspect --wait": "nan", "inspect --bins": "0",
        "get --hot-mb": "nan", "get --map-resident-mb": "0", "get --wait": "-1",
        "export --hot-mb": "-1", "export --map-resident-mb": "0", "export --wait": "-1", "export --format": "nope",
        "export --out": "FILE/out", "export --since": "-1", "export --batch-size": "0",
        "import --hot-mb": "-1", "import --map-resident-mb": "0", "import --wait": "-1", "import --from": "NOFILE",
        "import --format": "nope", "import --storage": "nope", "import --batch-size": "0", "import --checkpoint-rows": "-4",
        "verify --hot-mb": "-1", "verify --map-resident-mb": "0", "verify --wait": "-1", "verify --limit": "0",
        "evict --hot-mb": "-1", "evict --map-resident-mb": "0", "evict --wait": "-1", "evict --not-updated-since": "-1",
        "evict --min-updates": "-1", "evict --max-norm": "-1", "evict --checkpoint-rows": "0",
        "neighbors --hot-mb": "-1", "neighbors --map-resident-mb": "0", "neighbors --wait": "-1", "neighbors -k": "-2",
        "neighbors --metric": "nope",
        "index --hot-mb": "-1", "index --map-resident-mb": "0", "index --wait": "-1", "index --metric": "nope",
        "index --m": "1", "index --ef-construction": "0", "index --ef-search": "0", "index --threads": "-1",
        "bench-index --rows": "0", "bench-index --dim": "0", "bench-index --queries": "0", "bench-index -k": "0",
        "bench-index --metric": "nope", "bench-index --m": "1", "bench-index --ef-construction": "0",
        "bench-index --ef-search": "0", "bench-index --threads": "-1", "bench-index --sweep": "nope", "bench-index --seed": "-1",
        "bench-index --single": "-1", "bench-index --clusters": "-1", "bench-index --store": "NOFILE",
        "bench-index --table": "nope", "bench-index --query-table": "nope",
        "bench --rows": "0", "bench --dim": "0", "bench --batch": "-5", "bench --hot-rows": "0", "bench --seconds": "nan",
        "bench --dir": "FILE/dir", "bench --store": "NOFILE", "bench --table": "nope", "bench --checkpoint-rows": "0",
        "bench --checkpoint-batches": "-1", "bench --only": "nope", "bench --report": "FILE/report",
        "roundtrip --store": "FILE/store", "roundtrip --rows": "-1", "roundtrip --dim": "0", "roundtrip --hot-mb": "-1",
        "roundtrip --warm-mb": "nan", "roundtrip --map-resident-mb": "0", "roundtrip --keys": "nope",
        "roundtrip --checkpoint-rows": "-1", "roundtrip --train-batches": "-1", "roundtrip --train-batch": "0",
        "roundtrip --zipf": "-1", "roundtrip --checkpoint-every": "0",
    ]

    /// Bad values still not refused as the test wants, each for a reason to fix: the test
    /// fails when one of these starts passing (take it out) or another starts failing.
    static let notYetRefused: Set<String> = []

    /// What each subcommand needs besides the option tried: a store the tools can open
    /// (STORE, made once with table t), a store a model was trained into (TRAINED), and the
    /// arguments each requires.
    static func baseArguments(_ command: String) -> [String] {
        switch command {
        case "train": ["train", "--data", "synthetic:criteo", "--steps", "1", "--store", "SCRATCH/store", "--synthetic-keys", "100",
                       "--batch-size", "8", "--embedding-dim", "2", "--bottom-mlp", "4", "--top-mlp", "4", "--eval-samples", "16"]
        case "recommend": ["recommend", "TRAINED", "--data", "movielens", "--user", "1"]
        case "info", "verify": [command, "STORE"]
        case "inspect": ["inspect", "STORE", "t"]
        case "get": ["get", "STORE", "t", "1"]
        case "export": ["export", "STORE", "t", "--format", "npy", "--out", "SCRATCH/out"]
        case "import": ["import", "STORE", "t", "--from", "EXPORT"]
        case "evict": ["evict", "STORE", "t", "--min-updates", "1", "--dry-run"]
        case "neighbors": ["neighbors", "STORE", "t", "1"]
        case "index": ["index", "STORE", "t"]
        case "bench-index": ["bench-index", "--quick"]
        case "bench": ["bench", "--quick"]
        case "roundtrip": ["roundtrip", "--rows", "2000", "--dim", "4", "--store", "SCRATCH/roundtrip"]
        default: [command]
        }
    }

    /// The options `strata` declares, as "subcommand --option".
    static func declaredOptions() throws -> [String] {
        let (status, lines) = try run(["--experimental-dump-help"])
        #expect(status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(lines.joined(separator: "\n").utf8)) as? [String: Any])
        let top = try #require(object["command"] as? [String: Any])
        var found: [String] = []
        for sub in top["subcommands"] as? [[String: Any]] ?? [] {
            let command = sub["commandName"] as? String ?? "?"
            for argument in sub["arguments"] as? [[String: Any]] ?? [] where argument["kind"] as? String == "option" {
                let names = argument["names"] as? [[String: Any]] ?? []
                let long = names.first { $0["kind"] as? String == "long" } ?? names.first
                let name = long?["name"] as? String ?? "?"
                found.append("\(command) \(long?["kind"] as? String == "long" ? "--" : "-")\(name)")
            }
        }
        return found
    }

    @Test func everyOptionHasABadValue() throws {
        let declared = try Self.declaredOptions()
        #expect(declared.count > 100, "\(declared.count) options found")
        let missing = declared.filter { Self.badValues[$0] == nil }
        #expect(missing.isEmpty, "options with no bad value in the table: \(missing)")
        let stale = Set(Self.badValues.keys).subtracting(declared)
        #expect(stale.isEmpty, "entries for options that do not exist: \(stale.sorted())")
    }

    /// Each option of each subcommand given its bad value: exit status 64 (refused before any
    /// work) or 1 (refused when the value was used), one `Error:` line naming the option and
    /// the value, and never a signal.
    @Test func everyOptionRefusesItsBadValue() throws {
        let directory = temporaryDirectory("strata-every-option")
        defer { removeDirectory(directory) }
        // A store with table t (key 1 written) and an export of it, for the tools.
        let store = directory + "/store", export = directory + "/export"
        do {
            let s = try Store(path: store)
            try s.createTable("t", TableSpec(dimension: 4)).applyGradients([1], [0.1, 0.2, 0.3, 0.4])
            try s.checkpoint(payload: [])
            try s.close()
        }
        #expect(try Self.run(["export", store, "t", "--format", "npy", "--out", export]).status == 0)
        let trained = directory + "/trained"
        let training = try Self.run(["train", "--model", "mf", "--data", "movielens", "--steps", "2", "--store", trained])
        try #require(training.status == 0, "\(training.lines.suffix(3))")
        var failures: [String] = []
        for entry in Self.badValues.keys.sorted() {
            let parts = entry.split(separator: " ").map(String.init)
            let (command, option) = (parts[0], parts[1])
            let value = Self.badValues[entry]!
            let scratch = directory + "/scratch-\(failures.count)-\(command)"
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            defer { removeDirectory(scratch) }
            func resolve(_ a: String) -> String {
                a.replacingOccurrences(of: "SCRATCH", with: scratch).replacingOccurrences(of: "NOFILE", with: directory + "/missing/dir")
                    .replacingOccurrences(of: "FILE", with: export + "/keys.npy")
                    .replacingOccurrences(of: "STORE", with: store).replacingOccurrences(of: "EXPORT", with: export)
                    .replacingOccurrences(of: "TRAINED", with: trained)
            }
            let resolvedValue = resolve(value)
            let arguments = Self.baseArguments(command).map(resolve) + [option, resolvedValue]
            let (status, lines) = try Self.run(arguments)
            let errors = lines.filter { $0.hasPrefix("Error:") }
            let named = errors.first.map { $0.contains(option) && $0.contains(resolvedValue) } ?? false
            #expect(status < 128, "\(entry) \(value): ended with signal \(status - 128)")
            if !(status == 64 || status == 1) || errors.count != 1 || !named {
                failures.append("\(entry) \(value): status \(status), \(errors.isEmpty ? lines.suffix(2).joined(separator: " | ") : errors.joined(separator: " | "))")
            }
        }
        let failed = Set(failures.map { $0.split(separator: " ").prefix(2).joined(separator: " ") })
        let unexpected = failures.filter { !Self.notYetRefused.contains($0.split(separator: " ").prefix(2).joined(separator: " ")) }
        #expect(unexpected.isEmpty, "\(unexpected.count) options not refused as they should be:\n\(unexpected.joined(separator: "\n"))")
        let fixed = Self.notYetRefused.subtracting(failed)
        #expect(fixed.isEmpty, "now refused as they should be; take them out of notYetRefused: \(fixed.sorted())")
    }

    /// `bench --dir` is the user's directory: a store an earlier bench left there is replaced,
    /// anything else refused and kept (bench used to delete the directory whole).
    @Test func benchLeavesAForeignDirectoryAlone() throws {
        let directory = temporaryDirectory("strata-bench-dir")
        defer { removeDirectory(directory) }
        let mine = directory + "/notes.txt"
        #expect(FileManager.default.createFile(atPath: mine, contents: Data("keep me".utf8)))
        let (status, lines) = try Self.run(["bench", "--quick", "--only", "hot", "--dir", directory])
        #expect(status == 1, "\(lines.suffix(3))")
        #expect(lines.contains { $0.hasPrefix("Error: --dir \(directory)") }, "\(lines.suffix(3))")
        #expect(FileManager.default.contents(atPath: mine) == Data("keep me".utf8))
        // An earlier bench's store there is replaced.
        let scratch = directory + "/scratch"
        #expect(try Self.run(["bench", "--quick", "--only", "hot", "--dir", scratch]).status == 0)
        #expect(try Self.run(["bench", "--quick", "--only", "hot", "--dir", scratch]).status == 0)
    }

    @Test func benchQuickReportsEveryFigureAsJSON() throws {
        let (status, lines) = try Self.run(["bench", "--quick", "--json"])
        #expect(status == 0, "\(lines.suffix(5))")
        let json = try #require(lines.last { $0.hasPrefix("{") }, "no JSON in \(lines.suffix(5))")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        for key in ["dim", "batch", "rows", "flat_gather_ns_per_row", "hot_ns_per_row", "warm_ns_per_row",
                    "cold_ns_per_row", "raw_lmdb_ns_per_row", "hot_vs_flat", "warm_vs_hot", "cold_vs_raw_lmdb",
                    "update_ns_per_row", "update_vs_flat", "p50_us", "p99_us"] {
            let value = try #require(object[key] as? Double, "\(key) missing from \(json)")
            #expect(value.isFinite && value > 0, "\(key) = \(value)")
        }
        let policy = try #require(object["policy"] as? [[String: Any]])
        #expect(policy.count == 6)
        for entry in policy {
            let hit = try #require(entry["hit_ratio"] as? Double), best = try #require(entry["static_optimum"] as? Double)
            #expect(hit > 0 && hit <= 1 && best > 0 && best <= 1, "\(entry)")
            #expect(entry["zipf"] is Double && entry["cache_fraction"] is Double)
        }
    }

    @Test func benchReportWritesFiguresAndPictures() throws {
        let directory = temporaryDirectory("strata-bench-report")
        defer { removeDirectory(directory) }
        let (status, lines) = try Self.run(["bench", "--quick", "--report", directory + "/report"])
        #expect(status == 0, "\(lines.suffix(5))")
        #expect(!lines.contains { $0.hasPrefix("note: pictures not drawn") }, "\(lines.suffix(5)) (run tools/setup.sh)")
        let data = try #require(FileManager.default.contents(atPath: directory + "/report/bench.json"))
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let latency = try #require(object["latency"] as? [String: [String: [Double]]])
        #expect(Set(latency.keys) == ["hot", "warm", "cold", "zipf 1.0 mix"])
        for (series, samples) in latency { #expect((samples["samples_us"] ?? []).count == 50 && samples["samples_us"]!.allSatisfy { $0 > 0 }, "\(series)") }
        #expect((object["policy"] as? [[String: Any]])?.count == 15)
        for picture in ["latency-cdf", "hit-ratio"] {
            for ext in ["png", "svg"] {
                let size = (try? FileManager.default.attributesOfItem(atPath: directory + "/report/\(picture).\(ext)")[.size] as? Int) ?? 0
                #expect(size > 1000, "\(picture).\(ext): \(size) bytes")
            }
        }
    }

    @Test func trainReportWritesCurves() throws {
        let directory = temporaryDirectory("strata-train-report")
        defer { removeDirectory(directory) }
        let (status, lines) = try Self.run(["train", "--data", "synthetic:criteo", "--synthetic-keys", "100", "--steps", "60",
                                            "--batch-size", "32", "--bottom-mlp", "16", "--top-mlp", "16", "--embedding-dim", "4",
                                            "--eval-every", "20", "--eval-samples", "500", "--checkpoint-every", "30",
                                            "--store", directory + "/store", "--report", directory + "/report"])
        #expect(status == 0, "\(lines.suffix(5))")
        let metrics = (try? String(contentsOfFile: directory + "/report/metrics.jsonl", encoding: .utf8)) ?? ""
        #expect(metrics.split(separator: "\n").filter { $0.contains("\"evaluation\"") }.count == 3, "\(metrics)")
        let summary = try #require(FileManager.default.contents(atPath: directory + "/report/summary.json"))
        #expect((try JSONSerialization.jsonObject(with: summary) as? [String: Any])?["planted_auc"] is Double)
        for picture in ["training-loss.png", "training-metrics.png", "training-loss.svg", "training-metrics.svg"] {
            #expect(FileManager.default.fileExists(atPath: directory + "/report/" + picture), "\(picture): \(lines.suffix(5))")
        }
    }

    @Test func roundtripReadsEveryRowBack() throws {
        let directory = temporaryDirectory("strata-roundtrip")
        defer { removeDirectory(directory) }
        let (status, lines) = try Self.run(["roundtrip", "--store", directory + "/store", "--rows", "30000",
                                            "--hot-mb", "1", "--warm-mb", "2"])
        #expect(status == 0, "\(lines.suffix(5))")
        #expect(lines.contains { $0.hasPrefix("checkpoint 1: 30000 rows") }, "\(lines)")
        #expect(lines.contains("all 30000 rows read back bit-identical, twice"), "\(lines.suffix(5))")
        // A second run replaces the first one's store.
        let again = try Self.run(["roundtrip", "--store", directory + "/store", "--rows", "1000", "--hot-mb", "1", "--warm-mb", "1"])
        #expect(again.status == 0 && again.lines.contains("all 1000 rows read back bit-identical, twice"), "\(again.lines.suffix(5))")
    }

    /// --store is replaced only when it holds an earlier roundtrip's store.
    @Test func roundtripRefusesADirectoryItDidNotMake() throws {
        let directory = temporaryDirectory("strata-roundtrip")
        defer { removeDirectory(directory) }
        let notes = directory + "/notes.txt"
        #expect(FileManager.default.createFile(atPath: notes, contents: Data("keep me".utf8)))
        let (status, lines) = try Self.run(["roundtrip", "--store", directory, "--rows", "100"])
        #expect(status != 0 && status < 128, "\(lines.suffix(3))")
        #expect(lines.contains { $0.contains("other than an earlier roundtrip's store") }, "\(lines.suffix(3))")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["notes.txt"])

        // Nor a store of other tables.
        let other = directory + "/other"
        try Store(path: other).close()
        let refused = try Self.run(["roundtrip", "--store", other, "--rows", "100"])
        #expect(refused.status != 0 && refused.lines.contains { $0.contains("other than an earlier roundtrip's store") }, "\(refused.lines.suffix(3))")
        #expect(FileManager.default.fileExists(atPath: other + "/rows.mdb"))
    }

    @Test func benchOnAMissingStoreSaysSo() throws {
        let (status, lines) = try Self.run(["bench", "--store", "/nonexistent/strata", "--table", "t"])
        #expect(status != 0)
        #expect(lines.contains { $0.contains("no Strata store here") }, "\(lines)")
    }
}
