// Which rows a tier keeps. A small FIFO window takes every new row; a CLOCK-managed main
// region holds the rest; when the tier is full, the row leaving the window enters main only
// if it has been used more often than the row CLOCK would evict (TinyLFU admission,
// Einziger et al. 2017). The shard supplies the frequencies: exact counts kept in the index
// entries of rows it holds, and a count-min sketch for rows it does not, all halved after
// `50 × capacity` accesses and every `25 × capacity` after that (TinyLFU's reset), long
// enough to tell apart rows near the cache boundary of a Zipf workload. On Zipf traces this lands within about 1.5 points of the best static cache
// (`strata bench` measures it), where LRU is 10-15 points away.
//
// A hit only sets a bit here: no list is touched on the lookup path.
import CStrataSupport

/// Estimated access counts of keys the shard does not hold: four 8-bit counters per key
/// inside one 64-byte block, so an update touches one cache line.
///
/// It starts small and doubles as the rows it must tell apart grow, up to `capacity / 4`
/// blocks: a sketch sized for a large, mostly empty tier would spread its few counts over
/// pages that every access then faults in.
@_spi(Testing) public struct FrequencySketch: ~Copyable {
    private var words: UnsafeMutablePointer<UInt64>
    private var blockMask: Int
    private let maximumBlocks: Int

    @_spi(Testing) public init(capacity: Int, initial: Int = 1024) {
        var most = 1
        while most * 4 < capacity { most <<= 1 }
        maximumBlocks = most
        var blocks = 1
        while blocks * 4 < min(capacity, initial) { blocks <<= 1 }
        words = zeroedPages(blocks * 8, of: UInt64.self)
        blockMask = blocks - 1
    }

    deinit { freePages(words, (blockMask + 1) * 8) }

    /// Rows the sketch is sized for now.
    var rows: Int { (blockMask + 1) * 4 }

    /// Doubles the width (up to the maximum). Each new block starts as a copy of the block
    /// its keys used to share, so every estimate stays what it was.
    mutating func grow() {
        let blocks = blockMask + 1
        guard blocks < maximumBlocks else { return }
        let wider = zeroedPages(blocks * 16, of: UInt64.self)
        wider.update(from: words, count: blocks * 8)
        (wider + blocks * 8).update(from: words, count: blocks * 8)
        freePages(words, blocks * 8)
        words = wider
        blockMask = blocks * 2 - 1
    }

    @_spi(Testing) public var bytes: Int { (blockMask + 1) * 64 }

    @inline(__always)
    private func positions(_ hash: UInt64) -> (block: UnsafeMutablePointer<UInt8>, offsets: UInt64) {
        let h = hash &* 0x9E37_79B9_7F4A_7C15
        let block = UnsafeMutableRawPointer(words + 8 * (Int(truncatingIfNeeded: h >> 40) & blockMask))
        return (block.assumingMemoryBound(to: UInt8.self), h)
    }

    @inline(__always)
    private static func offset(_ i: Int, _ h: UInt64) -> Int { i * 16 + Int((h >> (4 * UInt64(i))) & 15) }

    /// The estimated recent count of a key (0...255).
    @inline(__always)
    @_spi(Testing) public func estimate(_ hash: UInt64) -> Int {
        let (b, h) = positions(hash)
        var least = 255
        for i in 0..<4 { least = min(least, Int(b[Self.offset(i, h)])) }
        return least
    }

    /// Counts one access (conservative update: only the smallest counters grow).
    @inline(__always)
    @_spi(Testing) public mutating func increment(_ hash: UInt64) {
        let (b, h) = positions(hash)
        var least: UInt8 = 255
        for i in 0..<4 { least = min(least, b[Self.offset(i, h)]) }
        if least < 255 {
            for i in 0..<4 where b[Self.offset(i, h)] == least { b[Self.offset(i, h)] = least + 1 }
        }
    }

    /// Remembers a count kept elsewhere: each counter becomes at least `count` (capped at 255).
    @_spi(Testing) public mutating func raise(_ hash: UInt64, to count: Int) {
        let (b, h) = positions(hash)
        let c = UInt8(min(count, 255))
        for i in 0..<4 where b[Self.offset(i, h)] < c { b[Self.offset(i, h)] = c }
    }

    /// Halves every counter, so old accesses fade.
    @_spi(Testing) public mutating func halve() {
        for i in 0..<(blockMask + 1) * 8 { words[i] = (words[i] >> 1) & 0x7F7F_7F7F_7F7F_7F7F }
    }
}

/// Slot bookkeeping for one tier of one shard: which slots are free, in the window, in main.
@_spi(Testing) public struct AdmissionPolicy: ~Copyable {
    @_spi(Testing) public let capacity: Int
    @_spi(Testing) public let windowCapacity: Int
    @_spi(Testing) public let mainCapacity: Int

    private static let nil32 = UInt32.max
    private static let free: UInt8 = 0, window: UInt8 = 1, main: UInt8 = 2, referenced: UInt8 = 4

    // Per slot, in pages that cost nothing until the tier fills. `links` holds (previous,
    // next) in the slot's list.
    private let links: UnsafeMutablePointer<(UInt32, UInt32)>
    private let marks: UnsafeMutablePointer<UInt8>
    /// The key of each occupied slot, for admission decisions.
    private let keys: UnsafeMutablePointer<UInt64>
    /// Slots released since they were first used, reused last-in first-out.
    private let freeSlots: UnsafeMutablePointer<UInt32>
    private var freeCount = 0
    /// Slots at or above this have never been used.
    private var neverUsed = 0

    private var windowList = (head: nil32, tail: nil32, count: 0)
    private var mainList = (head: nil32, tail: nil32, count: 0)

    @_spi(Testing) public init(capacity: Int) {
        self.capacity = capacity
        windowCapacity = capacity == 0 ? 0 : max(1, capacity / 100)
        mainCapacity = capacity - windowCapacity
        let n = max(capacity, 1)
        links = zeroedPages(n, of: (UInt32, UInt32).self)
        marks = zeroedPages(n, of: UInt8.self)  // zero is `free`
        keys = zeroedPages(n, of: UInt64.self)
        freeSlots = zeroedPages(n, of: UInt32.self)
    }

    deinit {
        let n = max(capacity, 1)
        freePages(links, n)
        freePages(marks, n)
        freePages(keys, n)
        freePages(freeSlots, n)
    }

    /// Bytes of bookkeeping per slot.
    static let bytesPerSlot = MemoryLayout<(UInt32, UInt32)>.stride + 1 + 8 + 4

    @_spi(Testing) public var count: Int { neverUsed - freeCount }
    @_spi(Testing) public var isFull: Bool { count == capacity }

    /// The key of the row in an occupied slot (kept here, in memory, not read from the slot).
    @inline(__always)
    func key(at slot: Int) -> UInt64 { keys[slot] }

    /// Marks a slot as used since CLOCK last passed it.
    @inline(__always)
    @_spi(Testing) public func touch(_ slot: Int) {
        // Read first: a mark already set is not written again, so a hit dirties no line.
        if marks[slot] & Self.referenced == 0 { marks[slot] |= Self.referenced }
    }
    /// A separate function: the same compound assignment inline in the mutating
    /// `chooseEviction` crashes the compiler's thread sanitizer pass (Swift 6.3.1).
    private func clearReferenced(_ slot: Int) { marks[slot] &= ~Self.referenced }

    /// Starts loading slot's mark, which `touch` reads a few rows later.
    func prefetchMark(_ slot: Int) { strata_prefetch(marks + slot) }

    /// Takes a free slot, or nil when the tier is full: a released one first, else the lowest
    /// never used, so a tier that is never full touches few pages.
    @_spi(Testing) public mutating func takeFree() -> Int? {
        if freeCount > 0 {
            freeCount -= 1
            return Int(freeSlots[freeCount])
        }
        guard neverUsed < capacity else { return nil }
        neverUsed += 1
        return neverUsed - 1
    }

    /// Puts a row into a slot taken with `takeFree` or released by `evict`: it joins the
    /// window; if the window overflows, its oldest row moves to main, which has room.
    @_spi(Testing) public mutating func insert(_ slot: Int, key: UInt64) {
        keys[slot] = key
        marks[slot] = Self.window
        Self.append(slot, to: &windowList, links)
        if windowList.count > windowCapacity {
            let oldest = Int(windowList.head)
            Self.unlink(oldest, from: &windowList, links)
            marks[oldest] = Self.main | (marks[oldest] & Self.referenced)
            Self.append(oldest, to: &mainList, links)
        }
    }

    /// Fills a fresh policy with rows already in their slots (a tier reloaded after a clean
    /// close): main first, then the window.
    @_spi(Testing) public mutating func adopt(_ rows: [(slot: Int, key: UInt64)]) {
        precondition(count == 0 && rows.count <= capacity)
        for (slot, key) in rows {
            precondition(marks[slot] == Self.free, "slot adopted twice")
            keys[slot] = key
            if mainList.count < mainCapacity {
                marks[slot] = Self.main
                Self.append(slot, to: &mainList, links)
            } else {
                marks[slot] = Self.window
                Self.append(slot, to: &windowList, links)
            }
        }
        // Free slots below the highest adopted one go on the stack, lowest on top.
        neverUsed = (rows.map(\.slot).max() ?? -1) + 1
        freeCount = 0
        for slot in stride(from: neverUsed - 1, through: 0, by: -1) where marks[slot] == Self.free {
            freeSlots[freeCount] = UInt32(slot)
            freeCount += 1
        }
    }

    /// The decision `evict` carries out when the tier is full.
    @_spi(Testing) public struct Eviction {
        /// The slot whose row must leave the tier.
        @_spi(Testing) public let slot: Int
        /// Whether the window's oldest row moves into main (when main's row lost to it).
        @_spi(Testing) public let admitsCandidate: Bool
    }

    /// Chooses which row leaves a full tier, without changing membership, so the caller can
    /// move that row out first and give up if that fails.
    @_spi(Testing) public mutating func chooseEviction(frequency: (UInt64) -> Int) -> Eviction {
        precondition(isFull && capacity > 0)
        let candidate = Int(windowList.head)
        if mainList.count == 0 { return Eviction(slot: candidate, admitsCandidate: false) }
        // CLOCK: rows used since the last pass get a second chance.
        var victim = Int(mainList.head)
        while marks[victim] & Self.referenced != 0 {
            clearReferenced(victim)
            Self.unlink(victim, from: &mainList, links)
            Self.append(victim, to: &mainList, links)
            victim = Int(mainList.head)
        }
        if frequency(keys[candidate]) > frequency(keys[victim]) {
            return Eviction(slot: victim, admitsCandidate: true)
        }
        return Eviction(slot: candidate, admitsCandidate: false)
    }

    /// Carries out an eviction; its slot is then empty and not free: `insert` fills it.
    @_spi(Testing) public mutating func evict(_ eviction: Eviction) {
        let slot = eviction.slot
        if marks[slot] & 3 == Self.window { Self.unlink(slot, from: &windowList, links) } else { Self.unlink(slot, from: &mainList, links) }
        marks[slot] = Self.free
        if eviction.admitsCandidate {
            let candidate = Int(windowList.head)
            Self.unlink(candidate, from: &windowList, links)
            marks[candidate] = Self.main | (marks[candidate] & Self.referenced)
            Self.append(candidate, to: &mainList, links)
        }
    }

    /// Frees a slot whose row left for another reason (promoted, removed).
    @_spi(Testing) public mutating func release(_ slot: Int) {
        if marks[slot] & 3 == Self.window { Self.unlink(slot, from: &windowList, links) } else { Self.unlink(slot, from: &mainList, links) }
        marks[slot] = Self.free
        freeSlots[freeCount] = UInt32(slot)
        freeCount += 1
    }

    /// Gives a slot from `evict` back to the free list (its incoming row went elsewhere).
    @_spi(Testing) public mutating func returnEvicted(_ slot: Int) {
        freeSlots[freeCount] = UInt32(slot)
        freeCount += 1
    }

    /// Calls `body` with every occupied slot.
    @_spi(Testing) public func forEachOccupied(_ body: (Int) throws -> Void) rethrows {
        var s = windowList.head
        while s != Self.nil32 { try body(Int(s)); s = links[Int(s)].1 }
        s = mainList.head
        while s != Self.nil32 { try body(Int(s)); s = links[Int(s)].1 }
    }

    private typealias List = (head: UInt32, tail: UInt32, count: Int)

    // Static, so the list (a property of self) and the links can be changed in one access.
    private static func append(_ slot: Int, to list: inout List, _ links: UnsafeMutablePointer<(UInt32, UInt32)>) {
        let s = UInt32(slot)
        links[slot] = (list.tail, Self.nil32)
        if list.tail != Self.nil32 { links[Int(list.tail)].1 = s } else { list.head = s }
        list.tail = s
        list.count += 1
    }

    private static func unlink(_ slot: Int, from list: inout List, _ links: UnsafeMutablePointer<(UInt32, UInt32)>) {
        let (prev, next) = links[slot]
        if prev != Self.nil32 { links[Int(prev)].1 = next } else { list.head = next }
        if next != Self.nil32 { links[Int(next)].0 = prev } else { list.tail = prev }
        list.count -= 1
    }

    /// Recounts the lists and checks they agree with the marks and the free list. Only in
    /// builds with STRATA_INVARIANTS (debug); elsewhere it does nothing.
    @_spi(Testing) public func checkInvariants() {
        #if STRATA_INVARIANTS
        var seen = 0
        for (list, mark) in [(windowList, Self.window), (mainList, Self.main)] {
            var n = 0, s = list.head, prev = Self.nil32
            while s != Self.nil32 {
                precondition(marks[Int(s)] & 3 == mark, "slot in wrong list")
                precondition(links[Int(s)].0 == prev, "broken back link")
                prev = s; s = links[Int(s)].1; n += 1
            }
            precondition(n == list.count && prev == list.tail, "list count or tail wrong")
            seen += n
        }
        precondition(windowList.count <= windowCapacity && mainList.count <= mainCapacity, "region over capacity")
        precondition(seen + freeCount == neverUsed && neverUsed <= capacity, "slots lost or double counted")
        #endif
    }
}
