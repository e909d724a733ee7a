// The seeds of the targets whose inputs Strata itself writes: made by the store's own
// encoders and read from a store `strata train` wrote (tools/fuzz.sh seed runs it).
import Foundation
@_spi(Testing) import StrataStore
import StrataNeighbors
import StrataTraining

enum Seeds {
    static func write(to out: String, trainedStore: String) throws {
        func put(_ target: FuzzTarget, _ name: String, _ bytes: [UInt8]) throws {
            let directory = out + "/" + target.rawValue
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try Data(bytes).write(to: URL(fileURLWithPath: directory + "/" + name))
        }
        // Records of every spec: zeros, a short pattern (compresses), and pseudo-random values.
        var rng: UInt64 = 0x9E37_79B9_7F4A_7C15
        for (index, spec) in FuzzTarget.specs.enumerated() {
            let state = spec.optimizer.stateCount(dimension: spec.dimension)
            let rows: [(String, [Float], [Float])] = [
                ("zeros", [Float](repeating: 0, count: spec.dimension), [Float](repeating: 0, count: state)),
                ("pattern", (0..<spec.dimension).map { Float($0 % 3) * 0.5 }, (0..<state).map { Float($0 % 2) }),
                ("random", (0..<spec.dimension).map { _ in Self.next(&rng) }, (0..<state).map { _ in abs(Self.next(&rng)) }),
            ]
            for (name, values, stateValues) in rows {
                let row = StoredBytes.Row(values: values, state: stateValues, updateCount: 3, changeGeneration: 2)
                let prefix = [UInt8(index)]
                try put(.coldRecord, "\(index)-\(name)",
                        prefix + StoredBytes.encodeColdRecord(row, spec: spec, key: FuzzTarget.key, table: 1))
                try put(.slot, "\(index)-\(name)", prefix + StoredBytes.encodeSlotRecord(row, spec: spec, key: FuzzTarget.key))
            }
        }
        // RecBole's atomic-file layout, and schemas: the target's own and MovieLens-100K's.
        try put(.tabular, "recbole", Array(FuzzTarget.interactions.utf8))
        try put(.schema, "joins", Array(FuzzTarget.schemaText.utf8))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try put(.schema, "movielens", Array(try encoder.encode(TabularData.movieLens)))
        // What a trained store holds: its checkpoint's payload, catalog and warm indexes.
        let store = try Store(readerAt: trainedStore)
        try put(.payload, "trained", store.lastCheckpoint.payload)
        try put(.catalog, "trained", StoredBytes.encodeCatalog(try store.tableNames.map { name in (name, try store.table(name).spec) }))
        try store.close()
        let tables = trainedStore + "/tables"
        // The three largest are enough: every index has the same layout.
        let indexes = try FileManager.default.contentsOfDirectory(atPath: tables).compactMap { id in
            FileManager.default.contents(atPath: tables + "/" + id + "/warm.index").map { (id, Array($0)) }
        }
        for (id, bytes) in indexes.sorted(by: { ($0.1.count, $0.0) > ($1.1.count, $1.0) }).prefix(3) {
            try put(.warmIndex, "table-\(id)", bytes)
        }
        // A saved nearest-neighbour index: 300 rows of 4 floats, small m so that rows reach
        // upper levels, built on one thread (the same bytes every time).
        let indexed = FileManager.default.temporaryDirectory.path + "/strata-hnsw-seed-\(getpid())"
        try? FileManager.default.removeItem(atPath: indexed)
        defer { try? FileManager.default.removeItem(atPath: indexed) }
        let small = try Store(path: indexed)
        let items = try small.createTable("items", TableSpec(dimension: 4))
        let keys = (0..<300).map { UInt64($0) * 7 + 1 }, values = (0..<1200).map { _ in Self.next(&rng) }
        try keys.withUnsafeBufferPointer { k in try values.withUnsafeBufferPointer { v in try items.assign(k, values: v) } }
        try small.checkpoint()
        let saved = try NeighborIndex(table: items, metric: .dot, parameters: .init(m: 3, efConstruction: 16, efSearch: 16, threads: 1))
            .save(to: indexed)
        try small.close()
        try put(.hnswIndex, "items", Array(try Data(contentsOf: URL(fileURLWithPath: saved))))
    }

    /// SplitMix64 as a float in [-1, 1).
    static func next(_ state: inout UInt64) -> Float {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Float((z ^ (z >> 31)) >> 40) / Float(1 << 23) - 1
    }
}
