// The cold record: one LMDB value per row.
//
//   offset  size  field
//        0     1  format version (1)
//        1     1  flags: bit 0 payload is LZ4, bit 1 payload is byte-shuffled before LZ4
//        2     1  storage type (0 float32, 1 float16, 2 bfloat16)
//        3     1  optimizer (0 sgd, 1 adagrad, 2 row-wise adagrad, 3 adam, 4 ftrl)
//        4     4  dimension
//        8     4  CRC-32C of the whole value with this field zero
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
enum RecordProblem: Error, CustomStringConvertible {
    case truncated(Int)
    case checksumMismatch
    case newerVersion(UInt8)
    case mismatch(String)
    case undecodable

    var description: String {
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
struct ColdRecord: ~Copyable {
    static let version: UInt8 = 1
    static let headerSize = 32

    let format: RowFormat
    private let scratch: UnsafeMutableRawPointer
    private let payloadSize: Int
    private let valuesSize: Int
    private let bound: Int

    init(format: RowFormat) {
        self.format = format
        valuesSize = format.layout.dimension * format.storage.byteWidth
        payloadSize = valuesSize + 4 * format.layout.stateCount
        bound = Int(LZ4_compressBound(Int32(payloadSize)))
        // plain payload | shuffled payload | header + compressed payload
        scratch = .allocate(byteCount: 2 * payloadSize + Self.headerSize + bound, alignment: 16)
    }

    deinit { scratch.deallocate() }

    /// The largest encoded size, for sizing.
    var maximumSize: Int { Self.headerSize + max(bound, payloadSize) }

    /// Encodes a record. The bytes live in this value's scratch space until the next call.
    mutating func encode(_ record: RowRecord) -> UnsafeRawBufferPointer {
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
        out.storeBytes(of: strata_crc32c(0, out, total), toByteOffset: 8, as: UInt32.self)
        return UnsafeRawBufferPointer(start: out, count: total)
    }

    /// Decodes a whole record (values and state) into `record`, whose key is set by the caller.
    mutating func decode(_ bytes: UnsafeRawBufferPointer, into record: RowRecord) throws(RecordProblem) {
        let payload = try check(bytes)
        let layout = format.layout
        format.storage.decode(payload, count: layout.dimension, into: record.values)
        UnsafeMutableRawPointer(record.state(layout)).copyMemory(from: payload + valuesSize, byteCount: 4 * layout.stateCount)
        record.updateCount = bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
        record.changeGeneration = bytes.loadUnaligned(fromByteOffset: 24, as: UInt64.self)
    }

    /// Decodes only the values into `out`, the read-only path.
    mutating func decodeValues(_ bytes: UnsafeRawBufferPointer, into out: UnsafeMutablePointer<Float>) throws(RecordProblem) {
        let payload = try check(bytes, valuesOnly: true)
        format.storage.decode(payload, count: format.layout.dimension, into: out)
    }

    /// Checks the header and checksum and returns the plain payload (in the record itself
    /// when stored raw, else decompressed into scratch).
    private mutating func check(_ bytes: UnsafeRawBufferPointer, valuesOnly: Bool = false) throws(RecordProblem) -> UnsafeRawPointer {
        guard bytes.count >= Self.headerSize, let base = bytes.baseAddress else { throw .truncated(bytes.count) }
        let version = base.load(as: UInt8.self)
        if version > Self.version { throw .newerVersion(version) }
        let stored = base.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
        var crc = strata_crc32c(0, base, 8)
        let zero: UInt32 = 0
        crc = withUnsafeBytes(of: zero) { strata_crc32c(crc, $0.baseAddress, 4) }
        crc = strata_crc32c(crc, base + 12, bytes.count - 12)
        guard crc == stored, version == Self.version else { throw .checksumMismatch }
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
        let shuffled = scratch + payloadSize
        let want = valuesOnly ? valuesSize : payloadSize
        let got = LZ4_decompress_safe_partial(
            body.assumingMemoryBound(to: CChar.self), shuffled.assumingMemoryBound(to: CChar.self),
            Int32(bodySize), Int32(want), Int32(payloadSize))
        guard got >= want else { throw .undecodable }
        if flags & 2 != 0 { unshuffle(shuffled, into: scratch, valuesOnly: valuesOnly) } else {
            scratch.copyMemory(from: shuffled, byteCount: want)
        }
        return UnsafeRawPointer(scratch)
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
struct RowFormat: Sendable {
    let layout: RowLayout
    let storage: StorageType
    let initializer: Initializer
    let optimizer: Optimizer

    init(_ spec: TableSpec) {
        layout = RowLayout(spec)
        storage = spec.storage
        initializer = spec.initializer
        optimizer = spec.optimizer
    }

    /// Writes the never-written value of `key` into a record: initializer values rounded to
    /// the storage type, fresh optimizer state, no updates.
    func initialize(_ record: RowRecord, key: UInt64) {
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
