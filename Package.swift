// swift-tools-version: 6.1
// Strata: an out-of-core embedding store and recommender trainer.
//
// Modules follow the data flow, each using only the ones above it in this list:
//   CLMDB, CLZ4, COpenBLAS, CMPI, C libraries (Open MPI's too), and the pieces Swift cannot
//     CStrataSupport,             write: CRC-32C and prefetch hints; an AVX-512 matrix-product
//     CStrataKernels,             kernel; a C surface over hnswlib's C++ (HNSW), which catches
//     CStrataHNSW                 its exceptions and checks the files it reads
//   StrataStore                   the tiered store: lookup, sparse optimizer step, checkpoints
//   StrataMPI                     the MPI calls a run over several processes makes, with typed errors
//   StrataTableFiles              the files tables export to and import from: npy,
//                                 safetensors, the embedding projector's TSV
//   StrataNeighbors               approximate nearest rows of a table's last checkpoint
//                                 (hnswlib's HNSW), saved beside the store and checked for staleness
//   StrataNN                      tensors, layers with their backward passes, losses, dense
//                                 optimizers, the store-backed embedding layer
//   StrataModels                  the model zoo (DLRM first)
//   StrataTraining                data (Criteo TSV, synthetic), the prefetch pipeline, the
//                                 training loop with checkpoints and exact resume, and its
//                                 hybrid-parallel form over MPI (tables sharded over ranks,
//                                 dense weights replicated)
//   StrataCLI (`strata`)          the command-line tool
import PackageDescription

let strictness: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    // Expensive structural checks (index and tier counters recounted) in debug builds only.
    .define("STRATA_INVARIANTS", .when(configuration: .debug)),
]

let package = Package(
    name: "Strata",
    products: [
        .library(name: "StrataStore", targets: ["StrataStore"]),
        .library(name: "StrataTraining", targets: ["StrataTraining"]),
        // libStrataC.so: the store from C (Sources/StrataC/include/strata.h) and from Python.
        .library(name: "StrataC", type: .dynamic, targets: ["StrataCLibrary"]),
        .executable(name: "strata", targets: ["StrataCLI"]),
        // Loaded with LD_PRELOAD into a child of the power-loss test, to record its file writes.
        // No target may depend on it: its definitions of pwrite, msync and the rest would then
        // replace libc's in that target's process.
        .library(name: "StrataWriteLog", type: .dynamic, targets: ["CStrataWriteLog"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CLMDB", pkgConfig: "lmdb",
            providers: [.apt(["liblmdb-dev"])]),
        .systemLibrary(
            name: "CLZ4", pkgConfig: "liblz4",
            providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(
            name: "COpenBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(
            name: "CMPI", pkgConfig: "ompi-c",
            providers: [.apt(["libopenmpi-dev"])]),
        .target(name: "CStrataSupport"),
        .target(name: "CStrataKernels"),
        // hnswlib (Debian's libhnswlib-dev) is header-only: its search and build are compiled
        // here, optimised in every configuration, as a debug build at -O0 runs them many times
        // slower and the tests build a graph of 20,000 rows.
        .target(
            name: "CStrataHNSW",
            cxxSettings: [.unsafeFlags(["-O2"])],
            linkerSettings: [.linkedLibrary("stdc++")]),
        .target(
            name: "StrataStore",
            dependencies: ["CLMDB", "CLZ4", "CStrataSupport"],
            swiftSettings: strictness),
        // strata.h and the library's C half (per-thread errors, defaults); its Swift half is
        // StrataCLibrary.
        .target(name: "StrataC"),
        .target(
            name: "StrataCLibrary",
            dependencies: ["StrataStore", "StrataC"],
            swiftSettings: strictness),
        .target(
            name: "StrataMPI",
            dependencies: ["CMPI"],
            swiftSettings: strictness),
        .target(
            name: "StrataTableFiles",
            swiftSettings: strictness),
        .target(
            name: "StrataNeighbors",
            dependencies: ["StrataStore", "CStrataHNSW", "CStrataSupport"],
            swiftSettings: strictness),
        .target(
            name: "StrataNN",
            dependencies: ["StrataStore", "COpenBLAS", "CStrataKernels"],
            swiftSettings: strictness),
        .target(
            name: "StrataModels",
            dependencies: ["StrataNN"],
            swiftSettings: strictness),
        .target(
            name: "StrataTraining",
            dependencies: ["StrataModels", "StrataMPI"],
            swiftSettings: strictness),
        .executableTarget(
            name: "StrataCLI",
            dependencies: [
                "StrataStore",
                "StrataTableFiles",
                "StrataNeighbors",
                "StrataTraining",
                "StrataMPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictness),
        // Drives a store in a child process so that tests can kill it, starve it of disk
        // or take away its write permission.
        .executableTarget(
            name: "strata-fault-driver",
            dependencies: ["StrataStore", "StrataTestSupport"],
            path: "Tests/FaultDriver",
            swiftSettings: strictness),
        // The fuzz targets: libFuzzer drives them in tools/fuzz.sh's build, the tests replay
        // their seeds and past findings through an ordinary build.
        .executableTarget(
            name: "strata-fuzz",
            dependencies: ["StrataStore", "StrataTableFiles", "StrataNeighbors", "StrataTraining"],
            path: "Tests/Fuzz",
            exclude: ["Corpus", "Findings", "lsan.supp"],
            swiftSettings: strictness),
        // The recorder behind the StrataWriteLog product (Tests/WriteLog/include has its log format).
        .target(
            name: "CStrataWriteLog",
            path: "Tests/WriteLog",
            linkerSettings: [.linkedLibrary("dl")]),
        .target(
            name: "StrataTestSupport",
            dependencies: ["StrataStore"],
            path: "Tests/Support",
            swiftSettings: strictness),
        .testTarget(
            name: "StrataTrainingTests",
            dependencies: ["StrataTraining", "StrataTestSupport", "StrataCLI"],
            swiftSettings: strictness),
        .testTarget(
            name: "StrataStoreTests",
            // The executables are dependencies so that they are built for the tests that run them.
            dependencies: ["StrataStore", "StrataNeighbors", "StrataTestSupport", "strata-fault-driver", "strata-fuzz", "StrataCLI"],
            swiftSettings: strictness),
    ]
)
