// Every fuzz target's seeds and every input a fuzzer found a fault with, replayed through an
// ordinary build of strata-fuzz (tools/fuzz.sh fuzzes; Tests/Fuzz/Findings keeps each finding
// once it is fixed). A trap, a crash or a hang of the replay fails here.
import Foundation
import StrataTestSupport
import Testing

@Suite struct FuzzRegressionTests {
    static let targets = ["criteo", "tabular", "schema", "npy", "safetensors", "tsv", "cold-record", "warm-index", "slot",
                          "payload", "catalog", "hnsw-index"]
    static let fuzzDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz").path

    @Test(arguments: targets)
    func seedsAndFindingsReplayCleanly(_ target: String) throws {
        let corpus = Self.fuzzDirectory + "/Corpus/" + target
        let findings = Self.fuzzDirectory + "/Findings/" + target
        let seeds = (try? FileManager.default.contentsOfDirectory(atPath: corpus)) ?? []
        #expect(!seeds.isEmpty, "\(target) has no seed corpus in \(corpus)")
        let inputs = [corpus] + (FileManager.default.fileExists(atPath: findings) ? [findings] : [])
        let child = try ChildProcess(productsDirectory() + "/strata-fuzz", [target] + inputs)
        let lines = child.readAll(timeout: 300)
        let status = try child.wait()
        #expect(status == 0, "strata-fuzz \(target) ended with \(status): \(lines.suffix(20).joined(separator: "\n"))")
        #expect(lines.last?.hasPrefix("\(target): ") == true && lines.last?.hasSuffix(" inputs ran") == true, "\(lines.suffix(5))")
    }

    /// The set of targets here is the program's.
    @Test func everyTargetIsReplayed() throws {
        let child = try ChildProcess(productsDirectory() + "/strata-fuzz", [])
        let lines = child.readAll(timeout: 60)
        #expect(try child.wait() == 64)
        let listed = lines.first { $0.hasPrefix("targets: ") }.map { $0.dropFirst("targets: ".count).components(separatedBy: ", ") }
        #expect(listed == Self.targets)
    }
}
