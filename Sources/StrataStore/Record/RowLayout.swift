// The in-memory record of one row, the same bytes in the hot slab, a warm slot and a spill
// slot, so moving a row between them is one copy:
//
//   offset  size  field
//        0  4*dim values, float32 (rounded to the table's storage type)
//    4*dim  4*s   optimizer state, float32
//        h     8  key                         (h: the end of the state rounded up to 8)
//      h+8     8  update count (also Adam's step)
//     h+16     8  generation of the last change: the checkpoint that will hold it
//     h+24     4  CRC-32C of the record with this field zero (kept in warm and spill slots)
//     h+28     4  zero, then padding to the record size (covered by the checksum)
//
// Values come first so that, with records of 256 bytes or more padded to a multiple of 64,
// a lookup touches only the cache lines that hold values.
import CStrataSupport

/// Where the fields of a table's records are.
@_spi(Testing) public struct RowLayout: Sendable, Equatable {
    @_spi(Testing) public let dimension: Int
    @_spi(Testing) public let stateCount: Int
    @_spi(Testing) public let headerOffset: Int
    @_spi(Testing) public let recordSize: Int

    @_spi(Testing) public static let headerSize = 32

    @_spi(Testing) public init(dimension: Int, stateCount: Int) {
        self.dimension = dimension
        self.stateCount = stateCount
        headerOffset = (4 * (dimension + stateCount) + 7) & ~7
        let raw = headerOffset + Self.headerSize
        recordSize = raw >= 256 ? (raw + 63) & ~63 : (raw + 7) & ~7
    }

    @_spi(Testing) public init(_ spec: TableSpec) {
        self.init(dimension: spec.dimension, stateCount: spec.optimizer.stateCount(dimension: spec.dimension))
    }

    @_spi(Testing) public var stateOffset: Int { 4 * dimension }
}

/// Typed access to one record's fields. A view, not an owner.
@_spi(Testing) public struct RowRecord {
    @_spi(Testing) public let base: UnsafeMutableRawPointer
    @_spi(Testing) public let header: UnsafeMutableRawPointer

    @inlinable @_spi(Testing) public init(_ base: UnsafeMutableRawPointer, _ layout: RowLayout) {
        self.base = base
        header = base + layout.headerOffset
    }

    @_spi(Testing) public var key: UInt64 {
        get { header.load(as: UInt64.self) }
        nonmutating set { header.storeBytes(of: newValue, as: UInt64.self) }
    }
    @_spi(Testing) public var updateCount: UInt64 {
        get { header.load(fromByteOffset: 8, as: UInt64.self) }
        nonmutating set { header.storeBytes(of: newValue, toByteOffset: 8, as: UInt64.self) }
    }
    @_spi(Testing) public var changeGeneration: UInt64 {
        get { header.load(fromByteOffset: 16, as: UInt64.self) }
        nonmutating set { header.storeBytes(of: newValue, toByteOffset: 16, as: UInt64.self) }
    }
    @_spi(Testing) public var checksum: UInt32 {
        get { header.load(fromByteOffset: 24, as: UInt32.self) }
        nonmutating set { header.storeBytes(of: newValue, toByteOffset: 24, as: UInt32.self) }
    }
    @inlinable @_spi(Testing) public var values: UnsafeMutablePointer<Float> { base.assumingMemoryBound(to: Float.self) }
    @_spi(Testing) public func state(_ layout: RowLayout) -> UnsafeMutablePointer<Float> {
        (base + layout.stateOffset).assumingMemoryBound(to: Float.self)
    }

    /// The CRC-32C of the record, taken with the checksum field as zero.
    @_spi(Testing) public func computeChecksum(_ layout: RowLayout) -> UInt32 {
        let head = strata_crc32c(0, base, layout.headerOffset + 24)
        let zero: UInt32 = 0
        let withZero = withUnsafeBytes(of: zero) { strata_crc32c(head, $0.baseAddress, 4) }
        return strata_crc32c(withZero, header + 28, layout.recordSize - layout.headerOffset - 28)
    }

    @_spi(Testing) public func seal(_ layout: RowLayout) { checksum = computeChecksum(layout) }
    @_spi(Testing) public func isIntact(_ layout: RowLayout) -> Bool { checksum == computeChecksum(layout) }
}

extension StorageType {
    /// Rounds float32 values to this type's nearest (ties to even) in place.
    @inline(__always)
    public func round(_ values: UnsafeMutablePointer<Float>, count: Int) {
        switch self {
        case .float32:
            return
        case .bfloat16:
            for i in 0..<count { values[i] = Float(bitPattern: UInt32(Self.bfloat16Bits(values[i])) << 16) }
        case .float16:
            for i in 0..<count { values[i] = Float(Float16(values[i])) }
        }
    }

    /// The upper 16 bits of float32 after rounding to nearest even; NaN stays NaN.
    @inline(__always)
    static func bfloat16Bits(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        if x.isNaN { return UInt16(bits >> 16) | 0x40 }
        let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
        return UInt16(rounded >> 16)
    }

    /// Writes `count` values in this type's bytes (little-endian) at `out`.
    func encode(_ values: UnsafePointer<Float>, count: Int, into out: UnsafeMutableRawPointer) {
        switch self {
        case .float32:
            out.copyMemory(from: values, byteCount: 4 * count)
        case .bfloat16:
            for i in 0..<count { out.storeBytes(of: Self.bfloat16Bits(values[i]), toByteOffset: 2 * i, as: UInt16.self) }
        case .float16:
            for i in 0..<count { out.storeBytes(of: Float16(values[i]).bitPattern, toByteOffset: 2 * i, as: UInt16.self) }
        }
    }

    /// Reads `count` values of this type from `bytes` into float32.
    func decode(_ bytes: UnsafeRawPointer, count: Int, into values: UnsafeMutablePointer<Float>) {
        switch self {
        case .float32:
            UnsafeMutableRawPointer(values).copyMemory(from: bytes, byteCount: 4 * count)
        case .bfloat16:
            for i in 0..<count {
                values[i] = Float(bitPattern: UInt32(bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16)
            }
        case .float16:
            for i in 0..<count {
                values[i] = Float(Float16(bitPattern: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
            }
        }
    }
}
