// The README's worked example of users' own data (docs/example: clicks.csv, items.csv,
// schema.json) runs as documented: `strata train` on it, then `strata recommend`.
import Foundation
import StrataTestSupport
import Testing

@Suite struct DocumentedExampleTests {
    /// docs/example in this checkout.
    static var example: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/example").path
    }

    @Test func exampleTrainsAndRecommends() throws {
        let directory = temporaryDirectory("strata-example")
        defer { removeDirectory(directory) }
        let store = directory + "/store"
        let data = ["--data", "table:\(Self.example)/clicks.csv", "--schema", "\(Self.example)/schema.json"]
        let train = try StrataCommand.run(["train", "--model", "wide-deep"] + data + [
            "--protocol", "click", "--store", store, "--epochs", "5", "--batch-size", "32", "--optimizer", "adam",
            "--learning-rate", "0.01", "--sparse-optimizer", "adam"])
        #expect(train.status == 0, "\(train.output)")
        #expect(train.lines.contains("click protocol: 320 training, 40 validation, 40 test lines"), "\(train.output)")
        #expect(train.lines.contains { $0.hasPrefix("columns not in the schema") } == false, "\(train.output)")
        let recommend = try StrataCommand.run(["recommend", store] + data + ["--protocol", "click", "--user", "u2", "-k", "2", "--include-seen",
                                                                             "--show", "category"])
        #expect(recommend.status == 0 && recommend.lines.count == 3, "\(recommend.output)")
    }
}
