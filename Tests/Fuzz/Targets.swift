// One fuzz target per reader of bytes from outside the process. Each takes any bytes; a
// thrown error is a correct answer, a trap, a hang or an unbounded allocation is a finding.
// Where a reader has two paths that must agree, the target checks that they do and traps
// when they do not, so that the fuzzer reports it.
import CStrataSupport
import Foundation
@_spi(Testing) import StrataStore
import StrataNeighbors
import StrataTableFiles
@_spi(Testing) import StrataTraining
import StrataModels

enum FuzzTarget: String, CaseIterable {
    case criteo, tabular, schema, npy, safetensors, tsv
    case coldRecord = "cold-record", warmIndex = "warm-index", slot, payload, catalog
    case hnswIndex = "hnsw-index"

    /// Runs the reader on `data`.
    func run(_ data: [UInt8], _ scratch: Scratch) {
        switch self {
        case .criteo: Self.criteo(data, scratch)
        case .tabular: Self.tabular(data, scratch)
        case .schema: Self.schema(data, scratch)
        case .npy, .safetensors, .tsv: Self.tableFile(self, data, scratch)
        case .coldRecord: Self.coldRecord(data)
        case .warmIndex: _ = StoredBytes.warmIndex(data, sealed: true); _ = StoredBytes.warmIndex(data, sealed: false)
        case .slot: Self.slot(data)
        case .payload: Self.payload(data, scratch)
        case .catalog: _ = try? StoredBytes.catalog(data)
        case .hnswIndex: Self.hnswIndex(data, scratch)
        }
    }

    // MARK: Nearest-neighbour index files

    /// The bytes as a saved index of 4-float rows by inner product, with metadata that agrees
    /// with them (their size and CRC-32C, and the rows, m and ef-construction of hnswlib's
    /// header where it has them), so that the bytes reach the layout and graph checks and,
    /// passing those, a search.
    static func hnswIndex(_ data: [UInt8], _ scratch: Scratch) {
        let store = scratch.emptyDirectory("index-store")
        let files = NeighborIndex.files(store: store, table: "items", metric: .dot)
        _ = scratch.emptyDirectory("index-store/indexes")
        _ = scratch.write("index-store/indexes/" + files.index.split(separator: "/").last!, data)
        func word(_ at: Int) -> Int {
            guard data.count >= at + 8 else { return 0 }
            return Int(truncatingIfNeeded: data[at..<(at + 8)].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        }
        let m = min(max(word(72), 2), 512)
        let metadata: [String: Any] = [
            "format": 2, "table": "items", "dimension": 4, "metric": "dot", "m": m,
            "ef_construction": min(max(word(88), m), 65_536), "ef_search": 16, "rows": min(max(word(16), 0), Int(Int32.max)),
            "generation": 1, "built_at": 0, "build_seconds": 0, "index_bytes": data.count,
            "index_crc32c": Int(data.withUnsafeBytes { strata_crc32c(0, $0.baseAddress, $0.count) }),
        ]
        _ = scratch.write("index-store/indexes/" + files.metadata.split(separator: "/").last!,
                          Array(try! JSONSerialization.data(withJSONObject: metadata)))
        guard let index = try? NeighborIndex.load(from: store, table: "items", metric: .dot, threads: 1) else { return }
        _ = try? index.search([1, 0, -1, 0.5, 0.25, -2, 0, 1], k: 5)
    }

    // MARK: Text data

    /// Every batch of a source, bounded so that a reader that never ends is a hang, not a pass.
    static func drain(_ source: inout some BatchSource, _ schema: FeatureSchema) throws {
        let batch = Batch(schema: schema)
        var batches = 0
        while batches < 10_000, try source.next(64, into: batch) > 0 { batches += 1 }
    }

    static func criteo(_ data: [UInt8], _ scratch: Scratch) {
        let path = scratch.write("day_0", data)
        // Small chunks and lines, so that short inputs cross chunk and line-length limits.
        for policy in [MalformedLinePolicy.stop, .skip] {
            let options = CriteoFile.Options(schema: ClickSchema(dense: 2, sparse: 3), shuffleBlock: 3, seed: 1,
                                             malformedLines: policy, readChunkBytes: 64, maxLineBytes: 256)
            guard var file = try? CriteoFile(path: path, options: options) else { continue }
            try? drain(&file, file.schema)
        }
    }

    /// The fixed side tables the interaction targets join.
    static let users = "user_id:token\tage:float\tgender:token\n1\t24\tM\n2\t53\tF\n3\t23\tM\n"
    static let items = "item_id:token\tclass:token_seq\n10\tDrama Comedy\n20\tAction\n30\t\n"

    static let schemaText = """
        {"columns": {"user_id": {"kind": "categorical", "table": "user", "side": "user"},
                     "item_id": {"kind": "categorical", "table": "item", "side": "item"},
                     "rating": {"kind": "label", "type": "rating"},
                     "timestamp": {"kind": "ignore"}},
         "user": "user_id", "item": "item_id",
         "joins": [{"file": "fuzz.user", "on": "user_id", "side": "user",
                    "columns": {"age": {"kind": "numeric", "transform": "log1p"}, "gender": {"kind": "categorical"}}},
                   {"file": "fuzz.item", "on": "item_id", "side": "item",
                    "columns": {"class": {"kind": "multi", "separator": " "}}}]}
        """

    static let interactions = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "1\t10\t4\t881250949\n2\t20\t3\t891717742\n3\t30\t1\t878887116\n1\t20\t5\t880606923\n2\t10\t2\t886397596\n"

    /// Reads interactions through the schema, split per user, every split drained.
    static func readInteractions(schema: TableSchema, schemaFile: String, data: String, _ scratch: Scratch) {
        for splitting in [TabularData.Splitting.none, .perUser([0.8, 0.1, 0.1])] {
            guard let tabular = try? TabularData(path: data, table: schema, schemaFile: schemaFile, directory: scratch.directory,
                                                 options: .init(splitting: splitting, malformedLines: .skip)) else { continue }
            for split in [Interactions.Split.train, .valid, .test] {
                guard var source = try? tabular.source(split, shuffleBlock: 2, seed: 3) else { continue }
                try? drain(&source, tabular.schema)
            }
        }
    }

    static func tabular(_ data: [UInt8], _ scratch: Scratch) {
        scratch.sideTables()
        let schemaFile = scratch.write("fuzz.json", Array(schemaText.utf8))
        guard let schema = try? TableSchema.load(schemaFile) else { fatalError("the fixed schema does not load") }
        readInteractions(schema: schema, schemaFile: schemaFile, data: scratch.write("fuzz.inter", data), scratch)
    }

    static func schema(_ data: [UInt8], _ scratch: Scratch) {
        scratch.sideTables()
        let schemaFile = scratch.write("fuzz.json", data)
        guard let schema = try? TableSchema.load(schemaFile) else { return }
        readInteractions(schema: schema, schemaFile: schemaFile, data: scratch.write("fuzz.inter", Array(interactions.utf8)), scratch)
    }

    // MARK: Table files

    /// The input split into the files of a table export: the parts between the separator
    /// lines go to the format's files in order.
    static let separator = Array("\n--strata-fuzz-file--\n".utf8)

    static func parts(_ data: [UInt8]) -> [[UInt8]] {
        var out: [[UInt8]] = [], start = 0, i = 0
        while i + separator.count <= data.count {
            if data[i..<(i + separator.count)].elementsEqual(separator) {
                out.append(Array(data[start..<i]))
                i += separator.count
                start = i
            } else {
                i += 1
            }
        }
        out.append(Array(data[start...]))
        return out
    }

    static func tableFile(_ target: FuzzTarget, _ data: [UInt8], _ scratch: Scratch) {
        let path: String
        let format: TableFileFormat
        switch target {
        case .safetensors:
            path = scratch.write("table.safetensors", data)
            format = .safetensors
        case .npy:
            path = scratch.emptyDirectory("npy")
            for (name, bytes) in zip(["keys", "values", "state", "update_counts", "deleted_keys"], parts(data)) {
                _ = scratch.write("npy/\(name).npy", bytes)
            }
            format = .npy
        default:
            path = scratch.emptyDirectory("tsv")
            for (name, bytes) in zip(["vectors", "metadata", "deleted"], parts(data)) { _ = scratch.write("tsv/\(name).tsv", bytes) }
            format = .tsv
        }
        _ = TableFileWriter.metadata(path, format)
        guard let reader = try? TableFileReader(path: path, format: format) else { return }
        for _ in 0..<10_000 {
            guard let batch = try? reader.next(limit: 7) else { break }
            let n = batch.keys.count
            // What a batch promises `strata import`, which hands it to the store unchecked.
            guard batch.values.count == n * reader.dimension, batch.state.map({ $0.count == n * (reader.stateColumns ?? -1) }) ?? true,
                  batch.counts.map({ $0.count == n }) ?? true else {
                fatalError("a batch of \(n) keys came with \(batch.values.count) values of dimension \(reader.dimension)")
            }
        }
        for _ in 0..<10_000 { guard let keys = try? reader.nextDeleted(limit: 7) else { break }; _ = keys }
    }

    // MARK: Store records

    /// The specs records are decoded as; the input's first byte picks one.
    static let specs = [
        TableSpec(dimension: 8),
        TableSpec(dimension: 16, storage: .float16, optimizer: .adagrad()),
        TableSpec(dimension: 5, storage: .bfloat16, optimizer: .adam()),
        TableSpec(dimension: 3, optimizer: .ftrl()),
        TableSpec(dimension: 64, storage: .float16, optimizer: .rowwiseAdagrad()),
    ]
    static let key: UInt64 = 0x0123_4567_89AB_CDEF

    static func coldRecord(_ data: [UInt8]) {
        guard let first = data.first else { return }
        let spec = specs[Int(first) % specs.count]
        let body = Array(data.dropFirst())
        // Sealed, the checks behind the checksum are reached; as given, the checksum is.
        for bytes in [body, StoredBytes.sealColdRecord(body, key: key, table: 1)] {
            let whole = try? StoredBytes.coldRecord(bytes, spec: spec, key: key, table: 1)
            let values = try? StoredBytes.coldRecordValues(bytes, spec: spec, key: key, table: 1)
            // `peek` and `lookup` must agree on every record: both read it, or neither does.
            guard (whole == nil) == (values == nil),
                  whole.map({ w in w.values.map { $0.bitPattern } == values!.map { $0.bitPattern } }) ?? true else {
                fatalError("decode and decodeValues disagree on a record of \(spec)")
            }
        }
    }

    static func slot(_ data: [UInt8]) {
        guard let first = data.first else { return }
        let spec = specs[Int(first) % specs.count]
        for sealed in [false, true] { _ = StoredBytes.slotRecord(Array(data.dropFirst()), spec: spec, key: key, sealed: sealed) }
    }

    static func payload(_ data: [UInt8], _ scratch: Scratch) {
        _ = try? TrainedModel(payload: data, source: "the fuzz payload") { request in try scratch.table(request) }
    }
}
