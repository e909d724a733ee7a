// ColdRecord: the LMDB value of one row. Round trips for every optimizer × storage type × a
// few dimensions, for rows that compress and rows that don't; the header checked field by
// field against the documented layout (with an independent CRC-32C); every single-byte
// corruption and every truncation detected. And the in-memory record (RowLayout, RowRecord)
// against its documented layout: values at 0, then state, then a 32-byte header, records of
// 256 bytes or more padded to a multiple of 64.
import Testing
@_spi(Testing) import StrataStore
import StrataTestSupport

/// CRC-32C (Castagnoli, reflected 0x82F63B78), bit by bit: independent of the C helper.
fileprivate func referenceCRC32C(_ bytes: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for b in bytes {
        crc ^= UInt32(b)
        for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
    }
    return ~crc
}

extension Array where Element == Float {
    /// The bit patterns, for comparisons where NaN payloads and signed zeros count.
    var bitPatterns: [UInt32] { map(\.bitPattern) }
}

fileprivate func loadLE<T: FixedWidthInteger>(_ bytes: [UInt8], _ offset: Int, as: T.Type) -> T {
    var v: T = 0
    for i in 0..<MemoryLayout<T>.size { v |= T(bytes[offset + i]) << (8 * i) }
    return v
}

@Suite struct ColdRecordTests {
    static let optimizers: [Optimizer] = [.sgd(), .adagrad(), .rowwiseAdagrad(), .adam(), .ftrl()]
    static let dimensions = [1, 3, 8, 64, 300]

    enum Row: CaseIterable { case zeros, repeated, random }

    /// The bytes of one stored value, little-endian, computed here independently.
    static func storedBytes(_ x: Float, _ storage: StorageType) -> [UInt8] {
        switch storage {
        case .float32: withUnsafeBytes(of: x.bitPattern.littleEndian, Array.init)
        case .bfloat16: withUnsafeBytes(of: UInt16(x.bitPattern >> 16).littleEndian, Array.init)
        case .float16: withUnsafeBytes(of: Float16(x).bitPattern.littleEndian, Array.init)
        }
    }

    static func randomFinite(_ rng: inout SplitMix64) -> Float {
        while true {
            let x = Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))
            if x.isFinite { return x }
        }
    }

    /// A record of the given kind, with values already rounded to the storage type (as every
    /// record in the store is).
    static func makeRecord(_ format: RowFormat, _ kind: Row, _ rng: inout SplitMix64) -> RecordBuffer {
        let layout = format.layout
        let buffer = RecordBuffer(layout)
        let r = buffer.record
        r.key = rng.next()
        r.updateCount = rng.next()
        r.changeGeneration = rng.next()
        let v = r.values, s = r.state(layout)
        for i in 0..<layout.dimension {
            v[i] = switch kind {
            case .zeros: 0
            case .repeated: [0.25, -1.5, 3][i % 3]
            case .random: i % 2 == 0 ? randomFinite(&rng) : Float.random(in: -2..<2, using: &rng)
            }
        }
        format.storage.round(v, count: layout.dimension)
        for i in 0..<layout.stateCount {
            s[i] = switch kind {
            case .zeros: 0
            case .repeated: 0.125
            case .random: randomFinite(&rng)
            }
        }
        return buffer
    }

    struct Case: CustomStringConvertible, Sendable {
        let optimizer: Optimizer
        let storage: StorageType
        let dimension: Int
        var description: String { "\(optimizer.name) \(storage) d=\(dimension)" }
        var spec: TableSpec { TableSpec(dimension: dimension, storage: storage, optimizer: optimizer) }
    }

    static let cases: [Case] = optimizers.flatMap { o in
        StorageType.allCases.flatMap { s in dimensions.map { Case(optimizer: o, storage: s, dimension: $0) } }
    }

    /// The key and table every record here is encoded for.
    static let key: UInt64 = 0x5EED_0000_0000_0042
    static let table = 7

    /// The CRC-32C a record's header holds: of the key and the table id, then the record with its checksum field zero.
    static func expectedChecksum(_ bytes: [UInt8], key: UInt64 = key, table: Int = table) -> UInt32 {
        var zeroed = bytes
        zeroed.replaceSubrange(8..<12, with: [0, 0, 0, 0])
        return referenceCRC32C(withUnsafeBytes(of: key.littleEndian, Array.init) + withUnsafeBytes(of: UInt64(table).littleEndian, Array.init) + zeroed)
    }

    /// Encodes `record` as the row of `key`.
    static func encode(_ codec: inout ColdRecord, _ record: RowRecord) -> [UInt8] {
        record.key = key
        return Array(codec.encode(record))
    }

    /// Decodes; returns the problem thrown, or nil.
    static func decodeProblem(_ codec: inout ColdRecord, _ bytes: [UInt8], key: UInt64 = key, into buffer: RecordBuffer) -> RecordProblem? {
        do {
            try bytes.withUnsafeBytes { b in try codec.decode(b, key: key, into: buffer.record) }
            return nil
        } catch let problem as RecordProblem {
            return problem
        } catch {
            fatalError("not a RecordProblem: \(error)")
        }
    }

    static func decodeValuesProblem(_ codec: inout ColdRecord, _ bytes: [UInt8], key: UInt64 = key, into out: inout [Float]) -> RecordProblem? {
        do {
            try bytes.withUnsafeBytes { b in
                try out.withUnsafeMutableBufferPointer { o in try codec.decodeValues(b, key: key, into: o.baseAddress!) }
            }
            return nil
        } catch let problem as RecordProblem {
            return problem
        } catch {
            fatalError("not a RecordProblem: \(error)")
        }
    }

    @Test(arguments: cases)
    func roundTripAndHeader(_ c: Case) throws {
        let format = RowFormat(c.spec)
        let layout = format.layout
        var codec = ColdRecord(format: format, table: Self.table)
        var rng = SplitMix64(seed: UInt64(c.dimension) &* 31 &+ UInt64(format.optimizer.code) &* 7 &+ UInt64(format.storage.code))
        let payloadSize = c.dimension * c.storage.byteWidth + 4 * layout.stateCount
        for kind in Row.allCases {
            let source = Self.makeRecord(format, kind, &rng)
            let bytes = Self.encode(&codec, source.record)
            let what = "\(c) \(kind)"

            // Never larger than header + raw payload; raw exactly that.
            #expect(bytes.count <= ColdRecord.headerSize + payloadSize, "\(what): \(bytes.count) bytes")
            #expect(bytes.count <= codec.maximumSize)
            // The header, field by field.
            #expect(bytes[0] == 2, "\(what): version")
            let flags = bytes[1]
            #expect(flags == 0 || flags == 0b11, "\(what): flags \(flags)")
            #expect(bytes[2] == c.storage.code && bytes[3] == c.optimizer.code, "\(what): codes")
            #expect(loadLE(bytes, 4, as: UInt32.self) == UInt32(c.dimension), "\(what): dimension")
            #expect(loadLE(bytes, 12, as: UInt32.self) == UInt32(payloadSize), "\(what): payload length")
            #expect(loadLE(bytes, 16, as: UInt64.self) == source.record.updateCount, "\(what): update count")
            #expect(loadLE(bytes, 24, as: UInt64.self) == source.record.changeGeneration, "\(what): generation")
            #expect(loadLE(bytes, 8, as: UInt32.self) == Self.expectedChecksum(bytes), "\(what): CRC-32C")
            if flags == 0 {
                #expect(bytes.count == ColdRecord.headerSize + payloadSize, "\(what): raw size")
                // Raw payload: values in the storage type, then the state as float32, little-endian.
                let expected = source.values.flatMap { Self.storedBytes($0, c.storage) }
                    + source.state.flatMap { Self.storedBytes($0, .float32) }
                #expect(Array(bytes[ColdRecord.headerSize...]) == expected, "\(what): raw payload bytes")
            } else {
                #expect(bytes.count < ColdRecord.headerSize + payloadSize, "\(what): compressed but not smaller")
            }
            // Rows of zeros or a short repeated pattern compress once there is enough of them.
            if kind != .random && payloadSize >= 64 {
                #expect(flags == 0b11, "\(what): a compressible row of \(payloadSize) bytes was stored raw")
            }

            // Decode into a buffer full of garbage: every field comes back bit for bit.
            let target = RecordBuffer(layout, fill: 0xA5)
            let problem = Self.decodeProblem(&codec, bytes, into: target)
            #expect(problem == nil, "\(what): \(String(describing: problem))")
            #expect(target.values.bitPatterns == source.values.bitPatterns, "\(what): values")
            #expect(target.state.bitPatterns == source.state.bitPatterns, "\(what): state")
            #expect(target.record.updateCount == source.record.updateCount, "\(what): update count")
            #expect(target.record.changeGeneration == source.record.changeGeneration, "\(what): generation")
            #expect(target.record.key == Self.key, "\(what): key")

            // The read-only path: the same values.
            var values = [Float](repeating: .nan, count: c.dimension)
            let valuesProblem = Self.decodeValuesProblem(&codec, bytes, into: &values)
            #expect(valuesProblem == nil, "\(what): \(String(describing: valuesProblem))")
            #expect(values.bitPatterns == source.values.bitPatterns, "\(what): decodeValues")

            // Encoding is a function of the record (the scratch space leaks nothing between calls).
            #expect(Self.encode(&codec, source.record) == bytes, "\(what): encoding again differs")
        }
    }

    /// Every single-byte change and every truncation or extension throws, from both decoders.
    @Test(arguments: cases)
    func corruptionIsDetected(_ c: Case) throws {
        let format = RowFormat(c.spec)
        var codec = ColdRecord(format: format, table: Self.table)
        var rng = SplitMix64(seed: UInt64(c.dimension) &+ 1000)
        let target = RecordBuffer(format.layout)
        var values = [Float](repeating: 0, count: c.dimension)
        var failures = 0
        for kind in Row.allCases {
            let bytes = Self.encode(&codec, Self.makeRecord(format, kind, &rng).record)
            let what = "\(c) \(kind) (\(bytes.count) bytes, flags \(bytes[1]))"
            // Large records: every header byte and every fifth payload byte.
            let positions = bytes.count <= 1200 ? Array(bytes.indices) : Array(0..<32) + stride(from: 32, to: bytes.count, by: 5)
            let patterns: [UInt8] = [0x01, 0x80, 0xFF, 0x5A, 0x10, 0x02, 0x7E]
            for p in positions {
                var bad = bytes
                bad[p] ^= patterns[p % patterns.count]
                let a = Self.decodeProblem(&codec, bad, into: target)
                let b = Self.decodeValuesProblem(&codec, bad, into: &values)
                if a == nil || b == nil {
                    Issue.record("\(what): byte \(p) ^ \(patterns[p % patterns.count]) not detected (decode \(String(describing: a)), decodeValues \(String(describing: b)))")
                    failures += 1
                    if failures > 5 { return }
                }
            }
            for n in 0..<bytes.count where n < 64 || n % 3 == 0 || n > bytes.count - 16 {
                let short = Array(bytes[..<n])
                if Self.decodeProblem(&codec, short, into: target) == nil || Self.decodeValuesProblem(&codec, short, into: &values) == nil {
                    Issue.record("\(what): truncation to \(n) bytes not detected")
                    failures += 1
                    if failures > 5 { return }
                }
            }
            if Self.decodeProblem(&codec, bytes + [0], into: target) == nil {
                Issue.record("\(what): a trailing byte was not detected")
            }
        }
    }

    /// A record from a newer format version is reported as such, whether or not its checksum
    /// is right (a newer version may checksum differently).
    @Test(arguments: [UInt8(3), 4, 255])
    func newerVersionIsReported(_ version: UInt8) throws {
        let format = RowFormat(TableSpec(dimension: 16, storage: .float16, optimizer: .adam()))
        var codec = ColdRecord(format: format, table: Self.table)
        var rng = SplitMix64(seed: 1)
        for kind in Row.allCases {
            var bytes = Self.encode(&codec, Self.makeRecord(format, kind, &rng).record)
            bytes[0] = version
            let target = RecordBuffer(format.layout)
            var values = [Float](repeating: 0, count: 16)
            for fixCRC in [false, true] {
                if fixCRC {
                    bytes.replaceSubrange(8..<12, with: withUnsafeBytes(of: Self.expectedChecksum(bytes).littleEndian, Array.init))
                }
                for problem in [Self.decodeProblem(&codec, bytes, into: target), Self.decodeValuesProblem(&codec, bytes, into: &values)] {
                    guard case .newerVersion(let v)? = problem else {
                        Issue.record("version \(version) (CRC fixed: \(fixCRC)): \(String(describing: problem))")
                        continue
                    }
                    #expect(v == version)
                }
            }
        }
    }

    /// Records of older versions are not this format, whether their checksum is right by
    /// this version's rule or by version 1's (the value alone).
    @Test(arguments: [UInt8(0), 1])
    func olderVersionIsRejected(_ version: UInt8) {
        let format = RowFormat(TableSpec(dimension: 4))
        var codec = ColdRecord(format: format, table: Self.table)
        var rng = SplitMix64(seed: 2)
        var bytes = Self.encode(&codec, Self.makeRecord(format, .random, &rng).record)
        bytes[0] = version
        bytes.replaceSubrange(8..<12, with: withUnsafeBytes(of: Self.expectedChecksum(bytes).littleEndian, Array.init))
        #expect(Self.decodeProblem(&codec, bytes, into: RecordBuffer(format.layout)) != nil)
        var versionOne = bytes
        versionOne.replaceSubrange(8..<12, with: [0, 0, 0, 0])
        versionOne.replaceSubrange(8..<12, with: withUnsafeBytes(of: referenceCRC32C(versionOne).littleEndian, Array.init))
        #expect(Self.decodeProblem(&codec, versionOne, into: RecordBuffer(format.layout)) != nil)
    }

    /// The checksum covers the key and the table: a sound record read as another key's, or
    /// as a row of another table with the same spec, is reported, by both decoders.
    @Test func recordUnderAnotherKeyOrTableIsReported() {
        let format = RowFormat(TableSpec(dimension: 8, storage: .float16, optimizer: .adagrad()))
        var codec = ColdRecord(format: format, table: Self.table)
        var other = ColdRecord(format: format, table: Self.table + 1)
        var rng = SplitMix64(seed: 4)
        var values = [Float](repeating: 0, count: 8)
        for kind in Row.allCases {
            let bytes = Self.encode(&codec, Self.makeRecord(format, kind, &rng).record)
            let target = RecordBuffer(format.layout)
            #expect(Self.decodeProblem(&codec, bytes, into: target) == nil)
            for wrong in [Self.key ^ 1, Self.key &+ 1 << 32, 0] {
                #expect(Self.decodeProblem(&codec, bytes, key: wrong, into: target) == .checksumMismatch, "\(kind) as key \(wrong)")
                #expect(Self.decodeValuesProblem(&codec, bytes, key: wrong, into: &values) == .checksumMismatch, "\(kind) as key \(wrong)")
            }
            #expect(Self.decodeProblem(&other, bytes, into: target) == .checksumMismatch, "\(kind) in another table")
            #expect(Self.decodeValuesProblem(&other, bytes, into: &values) == .checksumMismatch, "\(kind) in another table")
        }
    }

    /// A well-formed record of another table's format is a mismatch, not garbage.
    @Test func otherFormatsAreMismatches() {
        var rng = SplitMix64(seed: 3)
        let specs = [
            TableSpec(dimension: 8, storage: .float32, optimizer: .adagrad()),
            TableSpec(dimension: 9, storage: .float32, optimizer: .adagrad()),
            TableSpec(dimension: 8, storage: .bfloat16, optimizer: .adagrad()),
            TableSpec(dimension: 8, storage: .float32, optimizer: .adam()),
            TableSpec(dimension: 16, storage: .float16, optimizer: .adagrad()),  // same payload size as the first
        ]
        for writer in specs {
            var encoder = ColdRecord(format: RowFormat(writer), table: Self.table)
            let bytes = Self.encode(&encoder, Self.makeRecord(RowFormat(writer), .random, &rng).record)
            for reader in specs where reader != writer {
                var decoder = ColdRecord(format: RowFormat(reader), table: Self.table)
                let problem = Self.decodeProblem(&decoder, bytes, into: RecordBuffer(RowFormat(reader).layout))
                guard case .mismatch? = problem else {
                    Issue.record("\(writer) read as \(reader): \(String(describing: problem))")
                    continue
                }
            }
        }
    }

    /// The in-memory record, field by field against the layout documented in RowLayout.swift:
    ///
    ///   0 values (4·dim) | 4·dim state (4·s) | h key, h+8 update count, h+16 generation,
    ///   h+24 CRC-32C, h+28 zero | padding to the record size
    ///
    /// with h the end of the state rounded up to 8, and the record size h + 32 rounded up to
    /// 8, or to 64 once it is 256 bytes or more.
    @Test(arguments: [(1, 0), (1, 1), (2, 0), (3, 2), (5, 5), (8, 16), (55, 1), (56, 0), (56, 1), (57, 0),
                      (64, 0), (64, 1), (64, 128), (300, 600), (1000, 1)])
    func inMemoryLayoutMatchesTheDocumentation(_ dimension: Int, _ stateCount: Int) {
        let layout = RowLayout(dimension: dimension, stateCount: stateCount)
        let stateEnd = 4 * (dimension + stateCount)
        let h = (stateEnd + 7) / 8 * 8
        let raw = h + 32
        let size = raw >= 256 ? (raw + 63) / 64 * 64 : (raw + 7) / 8 * 8
        let what = "dim \(dimension) state \(stateCount)"
        #expect(RowLayout.headerSize == 32)
        #expect(layout.stateOffset == 4 * dimension, "\(what): state at \(layout.stateOffset)")
        #expect(layout.headerOffset == h, "\(what): header at \(layout.headerOffset), documented \(h)")
        #expect(layout.recordSize == size, "\(what): record of \(layout.recordSize) bytes, documented \(size)")
        #expect(layout.recordSize >= layout.headerOffset + 32 && layout.headerOffset % 8 == 0 && layout.recordSize % 8 == 0)
        if layout.recordSize >= 256 { #expect(layout.recordSize % 64 == 0, "\(what): \(layout.recordSize)") }

        // Write every field through RowRecord and read the raw bytes back.
        let buffer = RecordBuffer(layout, fill: 0xEE)
        let r = buffer.record
        #expect(r.base == buffer.base && r.header == buffer.base + h)
        #expect(UnsafeMutableRawPointer(r.values) == buffer.base, "\(what): values are not at offset 0")
        #expect(UnsafeMutableRawPointer(r.state(layout)) == buffer.base + 4 * dimension)
        var rng = SplitMix64(seed: UInt64(dimension &* 1000 &+ stateCount))
        let key = rng.next(), count = rng.next(), generation = rng.next()
        r.key = key
        r.updateCount = count
        r.changeGeneration = generation
        for i in 0..<dimension { r.values[i] = Float(i) + 0.5 }
        for i in 0..<stateCount { r.state(layout)[i] = -Float(i) - 0.25 }
        // The documented zero field and padding (RowFormat.initialize zeroes the record).
        for i in (h + 28)..<layout.recordSize { buffer.base.storeBytes(of: 0, toByteOffset: i, as: UInt8.self) }
        for i in stateEnd..<h { buffer.base.storeBytes(of: 0, toByteOffset: i, as: UInt8.self) }
        r.checksum = 0
        var bytes = Array(UnsafeRawBufferPointer(start: buffer.base, count: layout.recordSize))
        #expect(loadLE(bytes, h, as: UInt64.self) == key, "\(what): key")
        #expect(loadLE(bytes, h + 8, as: UInt64.self) == count, "\(what): update count")
        #expect(loadLE(bytes, h + 16, as: UInt64.self) == generation, "\(what): generation")
        #expect(loadLE(bytes, h + 24, as: UInt32.self) == 0 && loadLE(bytes, h + 28, as: UInt32.self) == 0)
        for i in 0..<dimension where loadLE(bytes, 4 * i, as: UInt32.self) != (Float(i) + 0.5).bitPattern {
            Issue.record("\(what): value \(i) not at offset \(4 * i)")
            break
        }
        for i in 0..<stateCount where loadLE(bytes, 4 * (dimension + i), as: UInt32.self) != (-Float(i) - 0.25).bitPattern {
            Issue.record("\(what): state \(i) not at offset \(4 * (dimension + i))")
            break
        }
        // The checksum: CRC-32C of the whole record with its own field zero, stored at h+24.
        let crc = referenceCRC32C(bytes)
        #expect(r.computeChecksum(layout) == crc, "\(what): checksum")
        r.seal(layout)
        bytes = Array(UnsafeRawBufferPointer(start: buffer.base, count: layout.recordSize))
        #expect(loadLE(bytes, h + 24, as: UInt32.self) == crc && r.isIntact(layout), "\(what): sealed")
        // It covers every byte of the record: values, state, header and padding.
        var undetected: [Int] = []
        for i in 0..<layout.recordSize where !(h + 24..<h + 28).contains(i) {
            let old = bytes[i]
            buffer.base.storeBytes(of: old ^ 0x40, toByteOffset: i, as: UInt8.self)
            if r.isIntact(layout) { undetected.append(i) }
            buffer.base.storeBytes(of: old, toByteOffset: i, as: UInt8.self)
        }
        #expect(undetected.isEmpty, "\(what): changes at offsets \(undetected.prefix(8)) not detected")
        #expect(r.isIntact(layout))
    }

    /// A table's record from its spec: the state is the optimizer's.
    @Test(arguments: cases)
    func layoutFromSpec(_ c: Case) {
        let layout = RowFormat(c.spec).layout
        #expect(layout == RowLayout(dimension: c.dimension, stateCount: c.optimizer.stateCount(dimension: c.dimension)))
        #expect(layout.stateCount == c.optimizer.stateCount(dimension: c.dimension) && layout.dimension == c.dimension)
    }

    /// The independent CRC agrees with the helper's published check value.
    @Test func referenceCRCCheckValue() {
        #expect(referenceCRC32C(Array("123456789".utf8)) == 0xE306_9283)
    }
}

extension ColdRecordTests {
    /// An owned, zeroed record buffer.
    final class RecordBuffer {
        let layout: RowLayout
        let base: UnsafeMutableRawPointer

        init(_ layout: RowLayout, fill: UInt8 = 0) {
            self.layout = layout
            base = .allocate(byteCount: layout.recordSize, alignment: 16)
            base.initializeMemory(as: UInt8.self, repeating: fill, count: layout.recordSize)
        }

        deinit { base.deallocate() }

        var record: RowRecord { RowRecord(base, layout) }
        var values: [Float] { Array(UnsafeBufferPointer(start: record.values, count: layout.dimension)) }
        var state: [Float] { Array(UnsafeBufferPointer(start: record.state(layout), count: layout.stateCount)) }
    }
}
