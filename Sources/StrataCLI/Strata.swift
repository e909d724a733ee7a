import ArgumentParser

@main
struct Strata: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "strata",
        abstract: "An out-of-core embedding store: tiered tables with in-store sparse optimizers.",
        subcommands: [Train.self, Recommend.self, Info.self, Inspect.self, Get.self, Export.self, Import.self, Verify.self, Evict.self, Compact.self,
                      Neighbors.self, IndexCommand.self, Bench.self, BenchIndex.self, Roundtrip.self])
}
