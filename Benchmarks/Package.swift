// swift-tools-version: 6.1
// Micro-benchmarks for Strata, kept in their own package so that the benchmark package and its
// dependencies (malloc interposer, histogram, ...) never reach the main package's graph.
//
// Run from this directory:
//   swift package benchmark
// See README.md.
import PackageDescription

let package = Package(
    name: "StrataBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Strata", path: ".."),
        // MallocInterposer (Swift 6.3+) gives mallocCountTotal; no system library is needed.
        .package(url: "https://github.com/ordo-one/benchmark", exact: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // The benchmark plugin finds targets whose directory sits in a directory named
        // `Benchmarks`, hence Benchmarks/Benchmarks/<Name>.
        .executableTarget(
            name: "StoreLookups",
            dependencies: [
                .product(name: "StrataStore", package: "Strata"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/StoreLookups",
            plugins: [
                .plugin(name: "BenchmarkPlugin", package: "benchmark"),
            ]),
    ]
)
