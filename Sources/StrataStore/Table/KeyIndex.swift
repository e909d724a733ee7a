#if canImport(Glibc)
import Glibc
#endif

// The per-shard map from key to where the row's newest copy is. Open addressing with linear
// probing and backward-shift deletion (no tombstones in the table), 16 bytes an entry.

/// Where a row's newest copy lives, and what the next checkpoint owes it.
@_spi(Testing) public struct IndexEntry {
    @_spi(Testing) public var key: UInt64
    @_spi(Testing) public var location: UInt32
    @_spi(Testing) public var flags: UInt32

    /// The memberwise initializer, spelled out to be visible to tests.
    @_spi(Testing) public init(key: UInt64, location: UInt32, flags: UInt32) {
        self.key = key
        self.location = location
        self.flags = flags
    }

    @_spi(Testing) public static let vacant: UInt32 = .max

    // location: tier in the top two bits, slot below.
    @usableFromInline static let tierShift: UInt32 = 30
    @_spi(Testing) public static let slotMask: UInt32 = (1 << 30) - 1

    /// The next checkpoint must write or delete this row in LMDB.
    @_spi(Testing) public static let dirty: UInt32 = 1
    /// LMDB holds a record of this key (from the last checkpoint).
    @_spi(Testing) public static let persisted: UInt32 = 2
    /// The row reads as its initializer: never written, or removed since the checkpoint.
    @_spi(Testing) public static let virgin: UInt32 = 4
    /// Which checkpoint a dirty row's change is for: the bit of the shard's epoch when it
    /// changed. A checkpoint freezes the rows of one epoch while the next one's change.
    static let odd: UInt32 = 8
    /// LMDB does not hold this key yet but will once the checkpoint in flight, which froze
    /// its row written, is durable: removing the row leaves a tombstone (`isTombstone`).
    /// The checkpoint's end turns it into `persisted`, or clears it if that checkpoint failed.
    static let shadows: UInt32 = 16
    /// The low bits hold the flags above; the high 16 bits count recent accesses (halved as
    /// they age), which admission compares.
    @_spi(Testing) public static let flagMask: UInt32 = 0xFFFF
    @_spi(Testing) public static let countUnit: UInt32 = 1 << 16

    @inlinable @_spi(Testing) public var count: Int { Int(flags >> 16) }

    @inlinable @_spi(Testing) public var tier: Tier { Tier(rawValue: UInt8(location >> Self.tierShift))! }
    @inlinable @_spi(Testing) public var slot: Int { Int(location & Self.slotMask) }

    @inlinable @_spi(Testing) public static func location(_ tier: Tier, _ slot: Int) -> UInt32 {
        UInt32(tier.rawValue) << tierShift | UInt32(slot)
    }

    func has(_ flag: UInt32) -> Bool { flags & flag != 0 }

    /// One more access, saturating.
    @inline(__always)
    @_spi(Testing) public mutating func countAccess() { if flags < 0xFFFF_0000 { flags &+= Self.countUnit } }
}

/// Where an indexed row is.
@_spi(Testing) public enum Tier: UInt8 {
    case hot = 0, warm = 1, spill = 2
    /// No copy in memory or files: a removed row, whose LMDB record must go at the next checkpoint.
    case none = 3
}

@_spi(Testing) public struct KeyIndex: ~Copyable {
    @_spi(Testing) public private(set) var entries: UnsafeMutablePointer<IndexEntry>
    @_spi(Testing) public private(set) var mask: Int
    @_spi(Testing) public private(set) var count = 0

    @_spi(Testing) public init(expected: Int) {
        var capacity = 16
        while capacity * 3 < expected * 4 { capacity <<= 1 }
        entries = Self.allocate(capacity)
        mask = capacity - 1
        Self.clear(entries, capacity)
    }

    deinit { Self.free(entries, capacity) }

    @_spi(Testing) public var capacity: Int { mask + 1 }

    /// Tables of 2 MiB or more come straight from mmap with transparent huge pages asked
    /// for: probes land anywhere in them, and 4 KiB pages would make most of them TLB misses.
    private static let hugeThreshold = 2 << 20

    private static func allocate(_ capacity: Int) -> UnsafeMutablePointer<IndexEntry> {
        let bytes = capacity * MemoryLayout<IndexEntry>.stride
        guard bytes >= hugeThreshold else { return .allocate(capacity: capacity) }
        guard let memory = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              memory != MAP_FAILED else { fatalError("out of memory for a key index of \(bytes) bytes") }
        _ = madvise(memory, bytes, MADV_HUGEPAGE)
        return memory.bindMemory(to: IndexEntry.self, capacity: capacity)
    }

    private static func free(_ entries: UnsafeMutablePointer<IndexEntry>, _ capacity: Int) {
        let bytes = capacity * MemoryLayout<IndexEntry>.stride
        if bytes >= hugeThreshold { munmap(entries, bytes) } else { entries.deallocate() }
    }
    @_spi(Testing) public var bytes: Int { capacity * MemoryLayout<IndexEntry>.stride }

    private static func clear(_ p: UnsafeMutablePointer<IndexEntry>, _ n: Int) {
        p.initialize(repeating: IndexEntry(key: 0, location: IndexEntry.vacant, flags: 0), count: n)
    }

    /// The bucket a hash starts probing at, for prefetching.
    @inline(__always)
    func bucket(_ hash: UInt64) -> UnsafeMutablePointer<IndexEntry> { entries + (Int(truncatingIfNeeded: hash) & mask) }

    /// The position of `key`, or nil.
    @inline(__always)
    @_spi(Testing) public func find(_ key: UInt64, hash: UInt64) -> Int? { reader.find(key, hash: hash) }

    /// A copyable view for reading while another part of the shard is being changed.
    @_spi(Testing) public var reader: Reader { Reader(entries: entries, mask: mask) }

    @_spi(Testing) public struct Reader {
        let entries: UnsafeMutablePointer<IndexEntry>
        @_spi(Testing) public let mask: Int

        @inline(__always)
        @_spi(Testing) public func find(_ key: UInt64, hash: UInt64) -> Int? {
            var i = Int(truncatingIfNeeded: hash) & mask
            while true {
                let e = entries[i]
                if e.location == IndexEntry.vacant { return nil }
                if e.key == key { return i }
                i = (i + 1) & mask
            }
        }

        /// The access count of an indexed key (0 if absent).
        @inline(__always)
        @_spi(Testing) public func count(_ key: UInt64) -> Int {
            find(key, hash: KeyHash.of(key)).map { entries[$0].count } ?? 0
        }
    }

    @inline(__always)
    @_spi(Testing) public subscript(position: Int) -> IndexEntry {
        get { entries[position] }
        nonmutating set { entries[position] = newValue }
    }

    /// Adds a key that is not present; returns its position.
    @discardableResult
    @_spi(Testing) public mutating func insert(_ key: UInt64, hash: UInt64, location: UInt32, flags: UInt32) -> Int {
        if (count + 1) * 4 > capacity * 3 { grow() }
        var i = Int(truncatingIfNeeded: hash) & mask
        while entries[i].location != IndexEntry.vacant {
            assert(entries[i].key != key, "key inserted twice")
            i = (i + 1) & mask
        }
        entries[i] = IndexEntry(key: key, location: location, flags: flags)
        count += 1
        return i
    }

    /// Removes the entry at `position`, shifting later members of its run back.
    @_spi(Testing) public mutating func remove(at position: Int) {
        var hole = position
        var i = (position + 1) & mask
        while entries[i].location != IndexEntry.vacant {
            let home = Int(truncatingIfNeeded: KeyHash.of(entries[i].key)) & mask
            // Move entry i into the hole unless its home lies cyclically in (hole, i].
            let distanceToHole = (i - hole) & mask
            let distanceToHome = (i - home) & mask
            if distanceToHome >= distanceToHole {
                entries[hole] = entries[i]
                hole = i
            }
            i = (i + 1) & mask
        }
        entries[hole].location = IndexEntry.vacant
        count -= 1
    }

    private mutating func grow() { rehash(capacity * 2) }

    /// Gives memory back after a burst (spilled rows leave at a checkpoint): shrinks to twice
    /// what `floor` entries need when the table is four times larger than that.
    mutating func shrink(keepingRoomFor floor: Int) {
        var target = 16
        while target * 3 < max(count, floor) * 4 * 2 { target <<= 1 }
        if capacity >= 4 * target { rehash(target) }
    }

    private mutating func rehash(_ newCapacity: Int) {
        let oldEntries = entries, oldCapacity = capacity
        entries = Self.allocate(newCapacity)
        mask = newCapacity - 1
        Self.clear(entries, newCapacity)
        for j in 0..<oldCapacity where oldEntries[j].location != IndexEntry.vacant {
            var i = Int(truncatingIfNeeded: KeyHash.of(oldEntries[j].key)) & mask
            while entries[i].location != IndexEntry.vacant { i = (i + 1) & mask }
            entries[i] = oldEntries[j]
        }
        Self.free(oldEntries, oldCapacity)
    }

    /// Halves every entry's access count.
    @_spi(Testing) public mutating func halveCounts() {
        for i in 0...mask where entries[i].location != IndexEntry.vacant {
            let f = entries[i].flags
            entries[i].flags = ((f >> 17) << 16) | (f & IndexEntry.flagMask)
        }
    }

    /// Calls `body` with the position of every entry. `body` must not insert or remove.
    @_spi(Testing) public func forEachPosition(_ body: (Int) throws -> Void) rethrows {
        for i in 0...mask where entries[i].location != IndexEntry.vacant { try body(i) }
    }
}

/// The hash every per-key structure uses: the shard from the top bits, the index bucket
/// from the bottom bits, the frequency sketch from a second mix.
@_spi(Testing) public enum KeyHash {
    @inline(__always)
    @_spi(Testing) public static func of(_ key: UInt64) -> UInt64 { mix64(key ^ 0x5851_F42D_4C95_7F2D) }
}
