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
