import ArgumentParser

@main
struct Strata: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "strata",
        abstract: "An out-of-core embedding store: tiered tables with in-store sparse optimizers.",
        subcommands: [Roundtrip.self, Bench.self, Train.self])
}
