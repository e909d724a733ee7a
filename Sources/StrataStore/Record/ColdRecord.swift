// The cold record: one LMDB value per row.
//
//   offset  size  field
//        0     1  format version (2)
//        1     1  flags: bit 0 payload is LZ4, bit 1 payload is byte-shuffled before LZ4
//        2     1  storage type (0 float32, 1 float16, 2 bfloat16)
//        3     1  optimizer (0 sgd, 1 adagrad, 2 row-wise adagrad, 3 adam, 4 ftrl)
//        4     4  dimension
//        8     4  CRC-32C of the row's key and table id (8 bytes each, little-endian), then
//                 the whole value with this field zero: a record under another key fails it
//       12     4  payload length once decoded
//       16     8  update count
//       24     8  generation of the last change
//       32     .  payload: values in the storage type, then optimizer state as float32,
//                 little-endian; LZ4-compressed only when that makes it smaller
//
// Byte shuffling puts the first bytes of every number together, then the second bytes, and
// so on, which is what lets LZ4 find the repeats in float data.
import CLZ4
import CStrataSupport

/// What is wrong with a stored record.
@_spi(Testing) public enum RecordProblem: Error, Equatable, CustomStringConvertible {
    case truncated(Int)
    case checksumMismatch
    case newerVersion(UInt8)
    case mismatch(String)
    case undecodable

    @_spi(Testing) public var description: String {
        switch self {
        case .truncated(let n): "record is \(n) bytes, too short for its header and payload"
        case .checksumMismatch: "checksum mismatch"
        case .newerVersion(let v): "record format version \(v) is newer than this build reads (\(ColdRecord.version))"
        case .mismatch(let what): what
        case .undecodable: "compressed payload does not decode"
        }
    }
}

/// Encodes and decodes cold records for one table; holds the scratch space for it.
@_spi(Testing) public struct ColdRecord: ~Copyable {
    /// 1 was a checksum of the value alone; stores of that format are refused on open.
    static let version: UInt8 = 2
    @_spi(Testing) public static let headerSize = 32

    let format: RowFormat
    /// The table's id in the catalog, covered by every record's checksum.
    let table: UInt64
    private let scratch: UnsafeMutableRawPointer
    private let payloadSize: Int
    private let valuesSize: Int
    private let bound: Int

    @_spi(Testing) public init(format: RowFormat, table: Int) {
        self.format = format
        self.table = UInt64(table)
        valuesSize = format.layout.dimension * format.storage.byteWidth
        payloadSize = valuesSize + 4 * format.layout.stateCount
        bound = Int(LZ4_compressBound(Int32(payloadSize)))
        // plain payload | shuffled payload | header + compressed payload
        scratch = .allocate(byteCount: 2 * payloadSize + Self.headerSize + bound, alignment: 16)
    }

    deinit { scratch.deallocate() }

    /// The largest encoded size, for sizing.
    @_spi(Testing) public var maximumSize: Int { Self.headerSize + max(bound, payloadSize) }

    /// Encodes a record. The bytes live in this value's scratch space until the next call.
    @_spi(Testing) public mutating func encode(_ record: RowRecord) -> UnsafeRawBufferPointer {
        let layout = format.layout
        let plain = scratch
        let shuffled = scratch + payloadSize
        let out = scratch + 2 * payloadSize
        format.storage.encode(record.values, count: layout.dimension, into: plain)
        (plain + valuesSize).copyMemory(from: record.state(layout), byteCount: 4 * layout.stateCount)

        shuffle(plain, into: shuffled)
        let packed = LZ4_compress_default(
            shuffled.assumingMemoryBound(to: CChar.self), (out + Self.headerSize).assumingMemoryBound(to: CChar.self),
            Int32(payloadSize), Int32(bound))
        let flags: UInt8
        let bodySize: Int
        if packed > 0 && Int(packed) < payloadSize {
            flags = 0b11
            bodySize = Int(packed)
        } else {
            flags = 0
            bodySize = payloadSize
            (out + Self.headerSize).copyMemory(from: plain, byteCount: payloadSize)
        }
        out.storeBytes(of: Self.version, as: UInt8.self)
        out.storeBytes(of: flags, toByteOffset: 1, as: UInt8.self)
        out.storeBytes(of: format.storage.code, toByteOffset: 2, as: UInt8.self)
        out.storeBytes(of: format.optimizer.code, toByteOffset: 3, as: UInt8.self)
        out.storeBytes(of: UInt32(layout.dimension), toByteOffset: 4, as: UInt32.self)
        out.storeBytes(of: UInt32(0), toByteOffset: 8, as: UInt32.self)
        out.storeBytes(of: UInt32(payloadSize), toByteOffset: 12, as: UInt32.self)
        out.storeBytes(of: record.updateCount, toByteOffset: 16, as: UInt64.self)
        out.storeBytes(of: record.changeGeneration, toByteOffset: 24, as: UInt64.self)
        let total = Self.headerSize + bodySize
        out.storeBytes(of: Self.checksum(UnsafeRawBufferPointer(start: out, count: total), key: record.key, table: table),
                       toByteOffset: 8, as: UInt32.self)
        return UnsafeRawBufferPointer(start: out, count: total)
    }

    /// Decodes the whole record of `key` (values and state) into `record`.
    @_spi(Testing) public mutating func decode(_ bytes: UnsafeRawBufferPointer, key: UInt64, into record: RowRecord) throws(RecordProblem) {
        let payload = try check(bytes, key: key)
        record.key = key
        let layout = format.layout
        format.storage.decode(payload, count: layout.dimension, into: record.values)
        UnsafeMutableRawPointer(record.state(layout)).copyMemory(from: payload + valuesSize, byteCount: 4 * layout.stateCount)
        record.updateCount = bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
        record.changeGeneration = bytes.loadUnaligned(fromByteOffset: 24, as: UInt64.self)
    }

    /// Decodes only the values into `out`, the read-only path.
    @_spi(Testing) public mutating func decodeValues(_ bytes: UnsafeRawBufferPointer, key: UInt64, into out: UnsafeMutablePointer<Float>) throws(RecordProblem) {
        let payload = try check(bytes, key: key, valuesOnly: true)
        format.storage.decode(payload, count: format.layout.dimension, into: out)
    }

    /// Checks the header and checksum and returns the plain payload (in the record itself
    /// when stored raw, else decompressed into scratch).
    private mutating func check(_ bytes: UnsafeRawBufferPointer, key: UInt64, valuesOnly: Bool = false) throws(RecordProblem)
        -> UnsafeRawPointer
    {
        try checkChecksum(bytes, key: key)
        let base = bytes.baseAddress!
        let flags = base.load(fromByteOffset: 1, as: UInt8.self)
        let storage = base.load(fromByteOffset: 2, as: UInt8.self)
        let optimizer = base.load(fromByteOffset: 3, as: UInt8.self)
        let dimension = Int(base.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        let length = Int(base.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
        guard storage == format.storage.code, optimizer == format.optimizer.code,
              dimension == format.layout.dimension, length == payloadSize else {
            throw .mismatch("record holds dimension \(dimension), storage \(storage), optimizer \(optimizer), "
                + "payload \(length) bytes; the table has dimension \(format.layout.dimension), storage "
                + "\(format.storage.code), optimizer \(format.optimizer.code), payload \(payloadSize)")
        }
        let body = base + Self.headerSize
        let bodySize = bytes.count - Self.headerSize
        if flags & 1 == 0 {
            guard bodySize == payloadSize else { throw .truncated(bytes.count) }
            return body
        }
        // The whole payload is decompressed even for the values alone: a stream that ends
        // inside the state must fail `peek` as it fails `lookup`.
        let shuffled = scratch + payloadSize
        let got = LZ4_decompress_safe(
            body.assumingMemoryBound(to: CChar.self), shuffled.assumingMemoryBound(to: CChar.self),
            Int32(bodySize), Int32(payloadSize))
        guard got == payloadSize else { throw .undecodable }
        if flags & 2 != 0 { unshuffle(shuffled, into: scratch, valuesOnly: valuesOnly) } else {
            scratch.copyMemory(from: shuffled, byteCount: valuesOnly ? valuesSize : payloadSize)
        }
        return UnsafeRawPointer(scratch)
    }

    /// Checks the version and the checksum only, which covers the key and table: enough to
    /// know that `bytes` are `key`'s record, as a walk of keys alone needs.
    func checkChecksum(_ bytes: UnsafeRawBufferPointer, key: UInt64) throws(RecordProblem) {
        guard bytes.count >= Self.headerSize, let base = bytes.baseAddress else { throw .truncated(bytes.count) }
        let version = base.load(as: UInt8.self)
        if version > Self.version { throw .newerVersion(version) }
        let stored = base.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
        guard stored == Self.checksum(bytes, key: key, table: table), version == Self.version else { throw .checksumMismatch }
    }

    /// The checksum of a record of at least `headerSize` bytes, taken with its checksum field as zero.
    static func checksum(_ bytes: UnsafeRawBufferPointer, key: UInt64, table: UInt64) -> UInt32 {
        let base = bytes.baseAddress!
        let ids = (key.littleEndian, table.littleEndian)
        var crc = withUnsafeBytes(of: ids) { strata_crc32c(0, $0.baseAddress, 16) }
        crc = strata_crc32c(crc, base, 8)
        let zero: UInt32 = 0
        crc = withUnsafeBytes(of: zero) { strata_crc32c(crc, $0.baseAddress, 4) }
        return strata_crc32c(crc, base + 12, bytes.count - 12)
    }

    /// Byte planes, values and state each on their own, so that the values are a prefix.
    private func shuffle(_ input: UnsafeRawPointer, into output: UnsafeMutableRawPointer) {
        let w = format.storage.byteWidth, n = format.layout.dimension
        transpose(input, output, width: w, count: n)
        transpose(input + valuesSize, output + valuesSize, width: 4, count: format.layout.stateCount)
    }

    private func unshuffle(_ input: UnsafeRawPointer, into output: UnsafeMutableRawPointer, valuesOnly: Bool) {
        let w = format.storage.byteWidth, n = format.layout.dimension
        untranspose(input, output, width: w, count: n)
        if !valuesOnly {
            untranspose(input + valuesSize, output + valuesSize, width: 4, count: format.layout.stateCount)
        }
    }
}

@inline(__always)
private func transpose(_ input: UnsafeRawPointer, _ output: UnsafeMutableRawPointer, width: Int, count: Int) {
    let src = input.assumingMemoryBound(to: UInt8.self), dst = output.assumingMemoryBound(to: UInt8.self)
    for b in 0..<width { for i in 0..<count { dst[b * count + i] = src[i * width + b] } }
}

@inline(__always)
private func untranspose(_ input: UnsafeRawPointer, _ output: UnsafeMutableRawPointer, width: Int, count: Int) {
    let src = input.assumingMemoryBound(to: UInt8.self), dst = output.assumingMemoryBound(to: UInt8.self)
    for b in 0..<width { for i in 0..<count { dst[i * width + b] = src[b * count + i] } }
}

/// A table's row semantics: layout, storage type, initializer and optimizer together.
@_spi(Testing) public struct RowFormat: Sendable {
    @_spi(Testing) public let layout: RowLayout
    @_spi(Testing) public let storage: StorageType
    let initializer: Initializer
    @_spi(Testing) public let optimizer: Optimizer

    @_spi(Testing) public init(_ spec: TableSpec) {
        layout = RowLayout(spec)
        storage = spec.storage
        initializer = spec.initializer
        optimizer = spec.optimizer
    }

    /// Writes the never-written value of `key` into a record: initializer values rounded to
    /// the storage type, fresh optimizer state, no updates.
    @_spi(Testing) public func initialize(_ record: RowRecord, key: UInt64) {
        record.base.initializeMemory(as: UInt8.self, repeating: 0, count: layout.recordSize)
        record.key = key
        initialValues(record.values, key: key)
        optimizer.initializeState(record.state(layout), dimension: layout.dimension)
    }

    /// The never-written values of `key`.
    func initialValues(_ out: UnsafeMutablePointer<Float>, key: UInt64) {
        initializer.fill(out, key: key, dimension: layout.dimension)
        storage.round(out, count: layout.dimension)
    }
}
