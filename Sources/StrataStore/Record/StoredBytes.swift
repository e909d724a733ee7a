// The store's decoders of on-disk bytes, run on bytes the caller supplies exactly as the
// store runs them, for the fuzz targets (Tests/Fuzz) and tests. Not API: the SPI may change
// with any build.
import CStrataSupport
import FoundationEssentials

@_spi(Testing) public enum StoredBytes {
    /// A decoded cold record.
    public struct Row: Equatable, Sendable {
        public var values: [Float]
        public var state: [Float]
        public var updateCount: UInt64
        public var changeGeneration: UInt64

        public init(values: [Float], state: [Float], updateCount: UInt64, changeGeneration: UInt64) {
            self.values = values
            self.state = state
            self.updateCount = updateCount
            self.changeGeneration = changeGeneration
        }
    }

    /// Decodes `bytes` as LMDB's record of `key` in table `table` with `spec`, or throws the
    /// problem a lookup would report.
    public static func coldRecord(_ bytes: [UInt8], spec: TableSpec, key: UInt64, table: Int) throws -> Row {
        let format = RowFormat(spec)
        var codec = ColdRecord(format: format, table: table)
        let memory = UnsafeMutableRawPointer.allocate(byteCount: format.layout.recordSize, alignment: 64)
        defer { memory.deallocate() }
        let record = RowRecord(memory, format.layout)
        let problem = bytes.withUnsafeBytes { b -> RecordProblem? in
            do throws(RecordProblem) { try codec.decode(b, key: key, into: record) } catch { return error }
            return nil
        }
        if let problem { throw problem }
        return Row(values: Array(UnsafeBufferPointer(start: record.values, count: format.layout.dimension)),
                   state: Array(UnsafeBufferPointer(start: record.state(format.layout), count: format.layout.stateCount)),
                   updateCount: record.updateCount, changeGeneration: record.changeGeneration)
    }

    /// The values only, through the read-only path `peek` takes.
    public static func coldRecordValues(_ bytes: [UInt8], spec: TableSpec, key: UInt64, table: Int) throws -> [Float] {
        var codec = ColdRecord(format: RowFormat(spec), table: table)
        var out = [Float](repeating: 0, count: spec.dimension)
        let problem = bytes.withUnsafeBytes { b -> RecordProblem? in
            out.withUnsafeMutableBufferPointer { o -> RecordProblem? in
                do throws(RecordProblem) { try codec.decodeValues(b, key: key, into: o.baseAddress!) } catch { return error }
                return nil
            }
        }
        if let problem { throw problem }
        return out
    }

    /// `row` encoded as LMDB's record of `key` in table `table`, as a checkpoint writes it.
    public static func encodeColdRecord(_ row: Row, spec: TableSpec, key: UInt64, table: Int) -> [UInt8] {
        let format = RowFormat(spec)
        var codec = ColdRecord(format: format, table: table)
        return withRecord(row, format.layout, key: key) { Array(codec.encode($0)) }
    }

    /// `row` as a warm or spill slot holds it.
    public static func encodeSlotRecord(_ row: Row, spec: TableSpec, key: UInt64) -> [UInt8] {
        let layout = RowLayout(spec)
        return withRecord(row, layout, key: key) { record in
            record.seal(layout)
            return Array(UnsafeRawBufferPointer(start: record.base, count: layout.recordSize))
        }
    }

    private static func withRecord<R>(_ row: Row, _ layout: RowLayout, key: UInt64, _ body: (RowRecord) -> R) -> R {
        precondition(row.values.count == layout.dimension && row.state.count == layout.stateCount, "a row of another spec")
        let memory = UnsafeMutableRawPointer.allocate(byteCount: layout.recordSize, alignment: 64)
        defer { memory.deallocate() }
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: layout.recordSize)
        let record = RowRecord(memory, layout)
        record.values.update(from: row.values, count: layout.dimension)
        record.state(layout).update(from: row.state, count: layout.stateCount)
        record.key = key
        record.updateCount = row.updateCount
        record.changeGeneration = row.changeGeneration
        return body(record)
    }

    /// A catalog record of these tables, ids from 1 in order.
    public static func encodeCatalog(_ tables: [(name: String, spec: TableSpec)]) throws -> [UInt8] {
        Array(try JSONEncoder().encode(tables.enumerated().map { Store.CatalogEntry(id: $0.offset + 1, name: $0.element.name, spec: $0.element.spec) }))
    }

    /// `bytes` with a correct checksum for `key` and `table`, so that a fuzzer gets past it.
    public static func sealColdRecord(_ bytes: [UInt8], key: UInt64, table: Int) -> [UInt8] {
        guard bytes.count >= ColdRecord.headerSize else { return bytes }
        var out = bytes
        let crc = bytes.withUnsafeBytes { ColdRecord.checksum($0, key: key, table: UInt64(table)) }
        withUnsafeBytes(of: crc.littleEndian) { for i in 0..<4 { out[8 + i] = $0[i] } }
        return out
    }

    /// A warm or spill slot's record for `key`, as a lookup checks it before serving it:
    /// the values when its key and checksum are right, nil when the slot would be refused.
    public static func slotRecord(_ bytes: [UInt8], spec: TableSpec, key: UInt64, sealed: Bool) -> [Float]? {
        let layout = RowLayout(spec)
        let memory = UnsafeMutableRawPointer.allocate(byteCount: layout.recordSize, alignment: 64)
        defer { memory.deallocate() }
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: layout.recordSize)
        bytes.withUnsafeBytes { memory.copyMemory(from: $0.baseAddress!, byteCount: min($0.count, layout.recordSize)) }
        let record = RowRecord(memory, layout)
        if sealed { record.seal(layout) }
        guard record.key == key, record.isIntact(layout) else { return nil }
        return Array(UnsafeBufferPointer(start: record.values, count: layout.dimension))
    }

    /// Decodes `bytes` as a `warm.index`: the rows it places, or why the store would ignore it.
    /// `sealed` rewrites the trailing checksum first.
    public static func warmIndex(_ bytes: [UInt8], sealed: Bool) -> (rows: Int?, problem: String?) {
        var b = bytes
        if sealed, b.count >= 4 {
            let crc = b.withUnsafeBytes { strata_crc32c(0, $0.baseAddress, $0.count - 4) }
            withUnsafeBytes(of: crc.littleEndian) { for i in 0..<4 { b[b.count - 4 + i] = $0[i] } }
        }
        let (contents, problem) = WarmIndexFile.parse(b, path: "warm.index")
        return (contents.map { $0.rowsByShard.reduce(0) { $0 + $1.count } }, problem)
    }

    /// Decodes `bytes` as the catalog record: the tables' names, or the store's error.
    public static func catalog(_ bytes: [UInt8]) throws -> [String] {
        try Store.decodeCatalog(bytes, dataPath: "data.mdb").map(\.name)
    }
}
