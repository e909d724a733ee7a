// One shard of a table: the rows whose key hash falls in its range, with their index, hot
// slots, warm slots and counters. A shard is only ever reached through its own lock.
//
// How a row moves:
//   lookup or update  -> the row comes to hot (from warm, spill, LMDB, or the initializer)
//   hot is full       -> admission picks a victim: it goes to warm (a never-written row is
//                        simply dropped)
//   warm is full      -> its victim leaves: dropped if LMDB already holds the same bytes,
//                        else written to the spill file until the next checkpoint
//   checkpoint        -> the changed rows are frozen; the checkpoint writes them to LMDB
//                        while batches go on (a frozen row changed before it is written is
//                        copied first, see FrozenCopies); once it is durable, spilled rows
//                        it wrote leave the spill file, as LMDB holds them
// Each step that can fail (a spill write, a cold read) runs before any row moves, so an
// error leaves every row where it was (access counts and CLOCK bits may have changed). The
// exception is a warm slot found damaged: its row is dropped first, then the error says so.
import CStrataSupport

/// Counters of one shard; the table sums them.
struct ShardCounters {
    // Rows by where their newest copy is.
    var hotRows = 0, hotVirgins = 0, warmRows = 0, spillRows = 0
    /// Written rows in hot, warm or spill that LMDB also holds (at the last checkpoint's value,
    /// which may be older).
    var persistedResident = 0
    /// Removed rows whose LMDB record the next checkpoint deletes.
    var tombstones = 0
    /// Written rows that LMDB does not hold yet.
    var unpersisted = 0

    // Where lookups and updates found their rows.
    var hotHits = 0, warmHits = 0, spillHits = 0, coldHits = 0, initialHits = 0
    var hotToWarm = 0, toSpill = 0, dropped = 0

    @inline(__always)
    mutating func account(_ e: IndexEntry, _ sign: Int) {
        let virgin = e.has(IndexEntry.virgin), persisted = e.has(IndexEntry.persisted)
        switch e.tier {
        case .hot: if virgin { hotVirgins += sign } else { hotRows += sign }
        case .warm: warmRows += sign
        case .spill: spillRows += sign
        case .none: break
        }
        if virgin {
            if persisted { tombstones += sign }
        } else if persisted {
            persistedResident += sign
        } else {
            unpersisted += sign
        }
    }

    static func + (a: Self, b: Self) -> Self {
        var r = a
        r.hotRows += b.hotRows; r.hotVirgins += b.hotVirgins; r.warmRows += b.warmRows; r.spillRows += b.spillRows
        r.persistedResident += b.persistedResident; r.tombstones += b.tombstones; r.unpersisted += b.unpersisted
        r.hotHits += b.hotHits; r.warmHits += b.warmHits; r.spillHits += b.spillHits
        r.coldHits += b.coldHits; r.initialHits += b.initialHits
        r.hotToWarm += b.hotToWarm; r.toSpill += b.toSpill; r.dropped += b.dropped
        return r
    }
}

/// Per-batch working memory: one record buffer, the hot slot and index position found for
/// each key, the cold codec and a lazily begun LMDB read.
struct BatchScratch: ~Copyable {
    let record: UnsafeMutableRawPointer
    let slots: UnsafeMutablePointer<Int32>
    let positions: UnsafeMutablePointer<Int32>
    /// For an update batch: a record per key (by member), where its steps are computed and
    /// checked before any row changes. Lent by the caller.
    let staged: UnsafeMutableRawPointer?
    var codec: ColdRecord
    var reader: LMDBLazyReader

    init(_ table: Table, keys: Int = 1, staged: UnsafeMutableRawPointer? = nil) {
        record = .allocate(byteCount: table.format.layout.recordSize, alignment: 64)
        slots = .allocate(capacity: 2 * max(keys, 1))
        positions = slots + max(keys, 1)
        self.staged = staged
        codec = ColdRecord(format: table.format, table: table.id)
        reader = LMDBLazyReader(pool: table.store.readers)
    }

    deinit {
        record.deallocate()
        slots.deallocate()
    }
}

/// A shard's share of a batch: positions `members` of the plan's order.
struct ShardGroup {
    let keys: UnsafePointer<UInt64>
    let hashes: UnsafePointer<UInt64>
    let order: UnsafePointer<Int32>
    let members: Range<Int>

    @inline(__always) func index(_ m: Int) -> Int { Int(order[m]) }
}

/// @unchecked Sendable: its memory is reached only while holding the shard's lock.
@_spi(Testing) public struct Shard: ~Copyable, @unchecked Sendable {
    @_spi(Testing) public var index: KeyIndex
    var hot: AdmissionPolicy
    var warm: AdmissionPolicy
    var sketch: FrequencySketch
    /// Addresses of this shard's hot chunks (0 until used); slot s is record s % 512 of
    /// chunk s / 512.
    private let hotChunks: UnsafeMutablePointer<UInt>
    private let hotChunkCount: Int
    let warmBase: UnsafeMutableRawPointer?
    /// Where this shard's warm slots start in the warm file, and how many of them have their
    /// disk blocks reserved (the file is sparse: a shard's slots are reserved as it fills them).
    let warmOffset: Int
    private var warmReserved = 0
    let layout: RowLayout
    var recordSize: Int { layout.recordSize }
    /// Keys whose entries became dirty since the last checkpoint froze rows (may repeat).
    var dirtyKeys: [UInt64] = []
    /// While a checkpoint is in flight, the `dirty` and `odd` bits of an entry it froze and has
    /// not taken yet (`isFrozen`); never matched otherwise.
    private var frozenMatch: UInt32 = .max
    /// The `odd` bit of rows changed now; it flips when a checkpoint freezes them.
    private var epoch: UInt32 = 0
    /// Frozen rows changed before the checkpoint wrote them, as it froze them.
    var frozenCopies: FrozenCopies
    var counters = ShardCounters()
    /// Accesses since access counts were last halved, and how many between halvings.
    private var accesses = 0
    private let agingPeriod: Int

    init(hotCapacity: Int, warmCapacity: Int,
         warmBase: UnsafeMutableRawPointer?, warmOffset: Int, layout: RowLayout) {
        // The index starts small and doubles as rows arrive.
        index = KeyIndex(expected: min(hotCapacity + warmCapacity, 1024))
        hot = AdmissionPolicy(capacity: hotCapacity)
        warm = AdmissionPolicy(capacity: warmCapacity)
        sketch = FrequencySketch(capacity: hotCapacity + warmCapacity)
        agingPeriod = 50 * max(hotCapacity + warmCapacity, 16)
        hotChunkCount = HotArena.chunksPerShard(hotCapacity)
        hotChunks = zeroedPages(max(hotChunkCount, 1), of: UInt.self)
        self.warmBase = warmBase
        self.warmOffset = warmOffset
        self.layout = layout
        frozenCopies = FrozenCopies(recordSize: layout.recordSize)
    }

    deinit { freePages(hotChunks, max(hotChunkCount, 1)) }

    @inline(__always) func hotRecord(_ slot: Int) -> RowRecord {
        let chunk = hotChunks[slot &>> HotArena.chunkShift]
        let offset = UInt(slot & (HotArena.slotsPerChunk - 1)) &* UInt(layout.recordSize)
        return RowRecord(UnsafeMutableRawPointer(bitPattern: chunk &+ offset)!, layout)
    }
    @inline(__always) func warmRecord(_ slot: Int) -> RowRecord { RowRecord(warmBase! + slot &* layout.recordSize, layout) }

    // MARK: Making a row resident

    /// Brings `key`'s row into hot and returns its slot.
    mutating func resident(_ key: UInt64, _ hash: UInt64, _ t: Table, _ scratch: inout BatchScratch) throws(StoreError) -> Int {
        if let p = index.find(key, hash: hash) {
            countAccess(at: p)
            let e = index[p]
            switch e.tier {
            case .hot:
                hot.touch(e.slot)
                counters.hotHits += 1
                return e.slot
            case .warm:
                let source = warmRecord(e.slot)
                guard source.key == key, source.isIntact(t.format.layout) else {
                    guard Self.lmdbHoldsExactly(e) else { throw t.corruptWarmSlot(e.slot, key: key) }
                    // LMDB holds this row's bytes: drop the damaged copy and read it there.
                    warm.release(e.slot)
                    removeEntry(at: p)
                    return try resident(key, hash, t, &scratch)
                }
                scratch.record.copyMemory(from: source.base, byteCount: recordSize)
                // The slot just freed takes hot's victim, so making room needs no I/O.
                warm.release(e.slot)
                let slot: Int
                do { slot = try makeHotRoom(t) } catch { preconditionFailure("room was made without I/O: \(error)") }
                counters.warmHits += 1
                return place(key, hash, copying: scratch.record, into: slot)
            case .spill:
                try readSpill(e.slot, key: key, into: RowRecord(scratch.record, layout), t)
                let slot = try makeHotRoom(t)
                t.spill.release(e.slot)
                counters.spillHits += 1
                return place(key, hash, copying: scratch.record, into: slot)
            case .none:
                let slot = try makeHotRoom(t)
                t.format.initialize(hotRecord(slot), key: key)
                hot.insert(slot, key: key)
                relocate(key, hash, to: .hot, slot)
                counters.initialHits += 1
                return slot
            }
        }
        sketch.increment(hash)
        tick()
        if let bytes = try t.coldGet(key, &scratch) {
            do { try scratch.codec.decode(bytes, key: key, into: RowRecord(scratch.record, layout)) } catch { throw t.corruptColdRecord(key, error) }
            let slot = try makeHotRoom(t)
            hotRecord(slot).base.copyMemory(from: scratch.record, byteCount: recordSize)
            hot.insert(slot, key: key)
            insertEntry(key, hash, IndexEntry.location(.hot, slot), IndexEntry.persisted)
            counters.coldHits += 1
            return slot
        }
        let slot = try makeHotRoom(t)
        t.format.initialize(hotRecord(slot), key: key)
        hot.insert(slot, key: key)
        insertEntry(key, hash, IndexEntry.location(.hot, slot), IndexEntry.virgin)
        counters.initialHits += 1
        return slot
    }

    private mutating func place(_ key: UInt64, _ hash: UInt64, copying source: UnsafeRawPointer, into slot: Int) -> Int {
        hotRecord(slot).base.copyMemory(from: source, byteCount: recordSize)
        hot.insert(slot, key: key)
        relocate(key, hash, to: .hot, slot)
        return slot
    }

    /// A hot slot for a new row, moving the admission policy's victim down first.
    private mutating func makeHotRoom(_ t: Table) throws(StoreError) -> Int {
        if let slot = hot.takeFree() {
            let chunk = slot &>> HotArena.chunkShift
            if hotChunks[chunk] == 0 { hotChunks[chunk] = t.hotArena.takeChunk() }
            return slot
        }
        let eviction = hot.chooseEviction { [counts = index.reader] in counts.count($0) }
        try demoteFromHot(eviction.slot, t)
        hot.evict(eviction)
        return eviction.slot
    }

    /// Moves the row in hot slot `slot` to warm (or further down), leaving the slot unused.
    private mutating func demoteFromHot(_ slot: Int, _ t: Table) throws(StoreError) {
        let record = hotRecord(slot)
        let key = hot.key(at: slot), hash = KeyHash.of(key)
        let p = index.find(key, hash: hash)!
        let e = index[p]
        if e.has(IndexEntry.virgin) {
            // Its value is the initializer's: nothing to keep but, for a removed row, the
            // tombstone.
            if Self.isTombstone(e) { relocate(key, hash, to: .none, 0) } else { removeEntry(at: p) }
            counters.dropped += 1
            return
        }
        guard warm.capacity > 0 else {
            record.seal(t.format.layout)
            return try demoteToDisk(record, key: key, t)
        }
        let target: Int
        if let free = warm.takeFree() {
            if free >= warmReserved {
                // A slot never used: its blocks come first, 64 KiB of slots at a
                // time, so that writing it through the mapping cannot meet a full disk.
                let reserved = min(warm.capacity, max(free + 1, warmReserved + max(1, (64 << 10) / recordSize)))
                do throws(StoreError) {
                    try t.reserveWarm(from: warmOffset + warmReserved * recordSize, bytes: (reserved - warmReserved) * recordSize)
                } catch {
                    warm.returnEvicted(free)
                    throw error
                }
                warmReserved = reserved
            }
            target = free
        } else {
            let eviction = warm.chooseEviction { [counts = index.reader] in counts.count($0) }
            let victimKey = warm.key(at: eviction.slot)
            let victim = warmRecord(eviction.slot)
            if victim.key == victimKey && victim.isIntact(layout) {
                try demoteToDisk(victim, key: victimKey, t)
            } else {
                // A damaged warm slot: its row leaves without being copied anywhere.
                let q = index.find(victimKey, hash: KeyHash.of(victimKey))!
                let lost = !Self.lmdbHoldsExactly(index[q])
                removeEntry(at: q)
                if lost {
                    warm.evict(eviction)
                    warm.returnEvicted(eviction.slot)
                    throw t.lostWarmRow(eviction.slot, key: victimKey)
                }
            }
            warm.evict(eviction)
            target = eviction.slot
        }
        let copy = warmRecord(target)
        copy.base.copyMemory(from: record.base, byteCount: recordSize)
        copy.seal(t.format.layout)
        warm.insert(target, key: key)
        relocate(key, hash, to: .warm, target)
        counters.hotToWarm += 1
    }

    /// Takes a written row, already sealed, out of memory and the warm file: dropped when
    /// LMDB holds the same bytes, else spilled.
    private mutating func demoteToDisk(_ record: RowRecord, key: UInt64, _ t: Table) throws(StoreError) {
        let hash = KeyHash.of(key)
        let p = index.find(key, hash: hash)!
        if !index[p].has(IndexEntry.dirty) {
            removeEntry(at: p)
            counters.dropped += 1
            return
        }
        let slot: Int
        do { slot = try t.spill.write(record.base) } catch { throw t.spillFailure(error) }
        guard slot <= Int(IndexEntry.slotMask) else {
            t.spill.release(slot)
            throw .impossibleBudget(table: t.name, detail: "more than 2^30 changed rows spilled since the last checkpoint; checkpoint more often")
        }
        relocate(key, hash, to: .spill, slot)
        counters.toSpill += 1
    }

    // MARK: Index bookkeeping (every change goes through here, so counters stay exact)

    private mutating func relocate(_ key: UInt64, _ hash: UInt64, to tier: Tier, _ slot: Int) {
        let p = index.find(key, hash: hash)!
        let old = index[p]
        var new = old
        new.location = IndexEntry.location(tier, slot)
        index[p] = new
        counters.account(old, -1)
        counters.account(new, 1)
    }

    /// Sets the flag bits of an entry, keeping its access count.
    private mutating func setFlags(at p: Int, _ flags: UInt32) {
        let old = index[p]
        var new = old
        new.flags = (old.flags & ~IndexEntry.flagMask) | (flags & IndexEntry.flagMask)
        index[p] = new
        counters.account(old, -1)
        counters.account(new, 1)
        if flags & IndexEntry.dirty != 0 && !old.has(IndexEntry.dirty) { dirtyKeys.append(old.key) }
    }

    /// Adds an entry whose access count starts from the sketch's memory of the key.
    private mutating func insertEntry(_ key: UInt64, _ hash: UInt64, _ location: UInt32, _ flags: UInt32) {
        if index.count >= sketch.rows { sketch.grow() }
        let e = IndexEntry(key: key, location: location, flags: flags | UInt32(sketch.estimate(hash)) << 16)
        index.insert(key, hash: hash, location: location, flags: e.flags)
        counters.account(e, 1)
        if flags & IndexEntry.dirty != 0 { dirtyKeys.append(key) }
    }

    /// Removes an entry; the sketch keeps its access count.
    private mutating func removeEntry(at p: Int) {
        let e = index[p]
        counters.account(e, -1)
        sketch.raise(KeyHash.of(e.key), to: e.count)
        index.remove(at: p)
    }

    /// Counts an access to an indexed row.
    @inline(__always)
    private mutating func countAccess(at p: Int) {
        index.entries[p].countAccess()
        tick()
    }

    /// Every `agingPeriod` accesses, all counts halve, so admission follows recent use.
    @inline(__always)
    private mutating func tick() {
        accesses &+= 1
        if accesses >= agingPeriod {
            sketch.halve()
            index.halveCounts()
            accesses = agingPeriod / 2
        }
    }

    // MARK: Batch operations (the table calls these with the shard's share of a batch)

    // Rows found in memory are served in two passes over chunks of 64 members. The first finds
    // each member's slot, its index bucket fetched 16 members ahead, and starts fetching its
    // row; the second serves the rows found. The finding loop is short, so the CPU runs far
    // ahead through it with many rows in flight, and by the second pass they have arrived.
    // Rows and buckets are prefetched with `strata_prefetch_l2`: a level-1 prefetch holds one
    // of the few level-1 miss buffers until its line arrives, which capped the fetches in
    // flight. `strata bench --only hot` on this project's AMD EPYC machines gave hot_vs_flat
    // 1.63-1.65 with one interleaved pass and level-1 prefetches, 1.47-1.57 with level-2 ones,
    // 1.67-1.70 with two passes and level-1 ones, and 1.12-1.25 with both changes.
    //
    // A hit touches only its index entry (which also holds its access count), its slot's CLOCK
    // bit and its row; nothing moves, so the slots found stay valid until the misses are
    // served, after every hit. The order changes only where rows end up, never a value.

    private static let bucketDistance = 16, chunkMembers = 64

    /// Members of `g` in chunks of `chunkMembers`.
    @inline(__always)
    private static func chunks(_ g: ShardGroup) -> some Sequence<Range<Int>> {
        let end = g.members.upperBound
        return stride(from: g.members.lowerBound, to: end, by: chunkMembers).lazy.map { $0..<min($0 + chunkMembers, end) }
    }

    /// Finds the members of `chunk`: `scratch.slots[m]` becomes the slot of a row in
    /// hot, `-2 - slot` of one in warm when `warm` is true, else -1; `scratch.positions[m]`
    /// its index position. Prefetches the first `rowBytes` bytes of each row found, and the
    /// index buckets of the members 16 ahead.
    @inline(__always)
    private func find(_ g: ShardGroup, _ chunk: Range<Int>, rowBytes: Int, warm: Bool,
                      _ scratch: borrowing BatchScratch) {
        let end = g.members.upperBound
        if chunk.lowerBound == g.members.lowerBound {
            for m in chunk.lowerBound..<min(chunk.lowerBound + Self.bucketDistance, end) { prefetchBucket(g, m) }
        }
        for m in chunk {
            if m + Self.bucketDistance < end { prefetchBucket(g, m + Self.bucketDistance) }
            let i = g.index(m)
            scratch.slots[m] = -1
            guard let p = index.find(g.keys[i], hash: g.hashes[i]) else { continue }
            let e = index[p]
            let row: UnsafeMutableRawPointer
            switch e.tier {
            case .hot:
                scratch.slots[m] = Int32(truncatingIfNeeded: e.slot)
                row = hotRecord(e.slot).base
                hot.prefetchMark(e.slot)
            case .warm where warm:
                scratch.slots[m] = -2 - Int32(truncatingIfNeeded: e.slot)
                row = warmRecord(e.slot).base
                strata_prefetch_l2(warmRecord(e.slot).header)
            default:
                continue
            }
            scratch.positions[m] = Int32(truncatingIfNeeded: p)
            var offset = 0
            while offset < rowBytes {
                strata_prefetch_l2(row + offset)
                offset &+= 64
            }
        }
    }

    @inline(__always)
    private func prefetchBucket(_ g: ShardGroup, _ m: Int) {
        strata_prefetch_l2(index.bucket(g.hashes[g.index(m)]))
    }

    /// Finds the members in hot and hands each, counted, to `serve(&shard, member, slot,
    /// position)`. Members not in hot keep slot -1 in `scratch.slots` for the caller to serve after.
    @inline(__always)
    private mutating func serveHits(_ g: ShardGroup, rowBytes: Int, _ scratch: borrowing BatchScratch,
                                    _ serve: (inout Shard, Int, Int, Int) -> Void) {
        var hits = 0
        for chunk in Self.chunks(g) {
            find(g, chunk, rowBytes: rowBytes, warm: false, scratch)
            for k in chunk where scratch.slots[k] >= 0 {
                let slot = Int(scratch.slots[k]), p = Int(scratch.positions[k])
                hot.touch(slot)
                countAccess(at: p)
                serve(&self, k, slot, p)
                hits += 1
            }
        }
        counters.hotHits += hits
    }

    /// Copies each key's values to `out` (row `i` of the batch at `out + i * d`), bringing
    /// rows to hot.
    mutating func lookup(_ g: ShardGroup, into out: UnsafeMutablePointer<Float>, _ t: Table,
                         _ scratch: inout BatchScratch) throws(StoreError) {
        let d = t.format.layout.dimension
        serveHits(g, rowBytes: 4 * d, scratch) { shard, k, slot, _ in
            (out + g.index(k) &* d).update(from: shard.hotRecord(slot).values, count: d)
        }
        for m in g.members where scratch.slots[m] < 0 {
            let i = g.index(m)
            let slot = try resident(g.keys[i], g.hashes[i], t, &scratch)
            (out + i &* d).update(from: hotRecord(slot).values, count: d)
        }
    }

    /// Computes one optimizer step for each (distinct) key into `scratch.staged` (member m's
    /// record at `m * recordSize`), gradients row `i` at `gradients + i * d`, bringing the rows
    /// to hot; changes no row. Throws `nonFiniteStep` if a step would make a value (as stored)
    /// or a state element non-finite.
    mutating func stage(_ g: ShardGroup, gradients: UnsafePointer<Float>, learningRate: Float,
                        _ t: Table, _ scratch: inout BatchScratch) throws(StoreError) {
        let format = t.format
        let staged = scratch.staged!
        var bad = -1
        serveHits(g, rowBytes: format.layout.recordSize, scratch) { shard, k, slot, _ in
            if !shard.stageStep(slot, into: staged + k &* format.layout.recordSize, gradients + g.index(k) &* format.layout.dimension,
                                learningRate, format), bad < 0 { bad = k }
        }
        var moved = false
        for m in g.members where scratch.slots[m] < 0 {
            let i = g.index(m)
            let slot = try resident(g.keys[i], g.hashes[i], t, &scratch)
            if !stageStep(slot, into: staged + m &* format.layout.recordSize, gradients + i &* format.layout.dimension,
                          learningRate, format), bad < 0 { bad = m }
            moved = true
        }
        // With every row a hit nothing moved, and `commit` can use the slots found here.
        if moved { for m in g.members { scratch.slots[m] = -1 } }
        if bad >= 0 {
            let values = (staged + bad &* format.layout.recordSize).assumingMemoryBound(to: Float.self)
            let j = (0..<(format.layout.dimension + format.layout.stateCount)).first { !values[$0].isFinite }!
            let what = j < format.layout.dimension ? "value \(j)" : "optimizer state element \(j - format.layout.dimension)"
            throw .nonFiniteStep(table: t.name, key: g.keys[g.index(bad)], what: what)
        }
    }

    /// Writes the records `stage` computed into the rows, which are still in hot unless a
    /// later member of the same batch pushed them out; then they come back first, which can
    /// fail as any lookup can (a spilled row unreadable, the disk full), leaving the rows
    /// before it changed.
    mutating func commit(_ g: ShardGroup, stamp: UInt64, _ t: Table, _ scratch: inout BatchScratch) throws(StoreError) {
        let size = layout.recordSize
        for m in g.members {
            let p: Int
            if scratch.slots[m] >= 0 {
                p = Int(scratch.positions[m])
            } else {
                let i = g.index(m)
                if let q = index.find(g.keys[i], hash: g.hashes[i]), index[q].tier == .hot {
                    p = q
                } else {
                    _ = try resident(g.keys[i], g.hashes[i], t, &scratch)
                    p = index.find(g.keys[i], hash: g.hashes[i])!
                }
            }
            let record = hotRecord(index[p].slot)
            if isFrozen(index[p]) { keepFrozen(at: p, index[p].has(IndexEntry.virgin) ? nil : record.base) }
            record.base.copyMemory(from: scratch.staged! + m &* size, byteCount: size)
            markChanged(record, position: p, stamp)
        }
    }

    /// Row `slot`'s record with one step applied, into `target`; the row is unchanged.
    /// Returns whether every value and state element is finite.
    @inline(__always)
    private func stageStep(_ slot: Int, into target: UnsafeMutableRawPointer, _ gradient: UnsafePointer<Float>,
                           _ learningRate: Float, _ format: RowFormat) -> Bool {
        let d = format.layout.dimension, n = d + format.layout.stateCount
        target.copyMemory(from: hotRecord(slot).base, byteCount: format.layout.recordSize)
        let record = RowRecord(target, format.layout)
        let count = record.updateCount &+ 1
        record.updateCount = count
        format.optimizer.apply(values: record.values, state: record.state(format.layout), gradient: gradient,
                               dimension: d, step: count, learningRate: learningRate)
        format.storage.round(record.values, count: d)
        // x - x is 0 for a finite x and NaN otherwise; the sum vectorizes. Values and state
        // are contiguous floats at the record's start.
        var sum: Float = 0
        for j in 0..<n { sum += record.values[j] - record.values[j] }
        return sum == 0
    }

    private mutating func markChanged(_ record: RowRecord, position p: Int, _ stamp: UInt64) {
        record.changeGeneration = stamp
        let flags = index[p].flags
        let written = (flags & ~(IndexEntry.virgin | IndexEntry.odd)) | IndexEntry.dirty | epoch
        if written != flags { setFlags(at: p, written) }
    }

    /// Sets each key's row to row `i` of `values` (rounded to the storage type), of `state`
    /// and `counts` when given, else zero state and count.
    mutating func assign(_ g: ShardGroup, values: UnsafePointer<Float>, state: UnsafePointer<Float>?,
                         counts: UnsafePointer<UInt64>?, stamp: UInt64, _ t: Table,
                         _ scratch: inout BatchScratch) throws(StoreError) {
        let layout = t.format.layout
        let (d, n) = (layout.dimension, layout.stateCount)
        for m in g.members {
            let i = g.index(m)
            let slot = try resident(g.keys[i], g.hashes[i], t, &scratch)
            let record = hotRecord(slot)
            let p = index.find(g.keys[i], hash: g.hashes[i])!
            if isFrozen(index[p]) { keepFrozen(at: p, index[p].has(IndexEntry.virgin) ? nil : record.base) }
            record.values.update(from: values + i &* d, count: d)
            t.format.storage.round(record.values, count: d)
            if let state { record.state(layout).update(from: state + i &* n, count: n) } else {
                record.state(layout).update(repeating: 0, count: n)
            }
            record.updateCount = counts?[i] ?? 0
            markChanged(record, position: p, stamp)
        }
    }

    /// Copies each key's values to `out` without moving rows or counting accesses. Rows in
    /// hot and warm are served by the same two passes as lookups. Warm slots are checked in
    /// full (checksum) when a clean close's warm tier is taken back and when a row is
    /// promoted; a read here checks the key.
    func peek(_ g: ShardGroup, into out: UnsafeMutablePointer<Float>, _ t: Table,
              _ scratch: inout BatchScratch) throws(StoreError) {
        let d = t.format.layout.dimension
        for chunk in Self.chunks(g) {
            find(g, chunk, rowBytes: 4 * d, warm: true, scratch)
            for k in chunk where scratch.slots[k] != -1 {
                let slot = Int(scratch.slots[k])
                let record = slot >= 0 ? hotRecord(slot) : warmRecord(-2 - slot)
                if slot >= 0 || record.key == g.keys[g.index(k)] {
                    (out + g.index(k) &* d).update(from: record.values, count: d)
                    scratch.slots[k] = 0
                } else {
                    scratch.slots[k] = -1  // the careful path below says what is wrong
                }
            }
        }
        for m in g.members where scratch.slots[m] < 0 {
            let i = g.index(m)
            try peek(g.keys[i], g.hashes[i], into: out + i &* d, t, &scratch)
        }
    }

    /// Copies the row's values into `out` without moving it or counting the access.
    func peek(_ key: UInt64, _ hash: UInt64, into out: UnsafeMutablePointer<Float>,
              _ t: Table, _ scratch: inout BatchScratch) throws(StoreError) {
        let d = t.format.layout.dimension
        if let p = index.find(key, hash: hash) {
            let e = index[p]
            switch e.tier {
            case .hot:
                out.update(from: hotRecord(e.slot).values, count: d)
            case .warm:
                let source = warmRecord(e.slot)
                guard source.key == key, source.isIntact(t.format.layout) else {
                    guard Self.lmdbHoldsExactly(e) else { throw t.corruptWarmSlot(e.slot, key: key) }
                    return try peekCold(key, into: out, t, &scratch)
                }
                out.update(from: source.values, count: d)
            case .spill:
                let copy = RowRecord(scratch.record, layout)
                try readSpill(e.slot, key: key, into: copy, t)
                out.update(from: copy.values, count: d)
            case .none:
                t.format.initialValues(out, key: key)
            }
            return
        }
        try peekCold(key, into: out, t, &scratch)
    }

    private func peekCold(_ key: UInt64, into out: UnsafeMutablePointer<Float>, _ t: Table,
                          _ scratch: inout BatchScratch) throws(StoreError) {
        if let bytes = try t.coldGet(key, &scratch) {
            do { try scratch.codec.decodeValues(bytes, key: key, into: out) } catch { throw t.corruptColdRecord(key, error) }
            return
        }
        t.format.initialValues(out, key: key)
    }

    /// Whether the entry is a removed row that must stay in the index to hide LMDB's record
    /// (at the last checkpoint, or the one in flight).
    @inline(__always)
    static func isTombstone(_ e: IndexEntry) -> Bool {
        e.has(IndexEntry.virgin) && e.flags & (IndexEntry.persisted | IndexEntry.shadows) != 0
    }

    /// Whether LMDB's record of this row has the same bytes as its copy here (so a damaged
    /// copy can be dropped and the row read from LMDB).
    private static func lmdbHoldsExactly(_ e: IndexEntry) -> Bool {
        e.has(IndexEntry.persisted) && !e.has(IndexEntry.dirty) && !e.has(IndexEntry.virgin)
    }

    /// Reads a spilled row into `record` and checks it.
    private func readSpill(_ slot: Int, key: UInt64, into record: RowRecord, _ t: Table) throws(StoreError) {
        do { try t.spill.read(slot, into: record.base) } catch { throw t.spillFailure(error) }
        guard record.key == key, record.isIntact(layout) else { throw t.corruptSpillSlot(slot, key: key) }
    }

    /// The whole record (values, state, counts) and where it is, without moving it. Returns
    /// nil tier for a row that reads as its initializer.
    func snapshot(_ key: UInt64, _ hash: UInt64, into record: RowRecord, _ t: Table,
                  _ scratch: inout BatchScratch) throws(StoreError) -> RowPlacement {
        if let p = index.find(key, hash: hash) {
            let e = index[p]
            if e.has(IndexEntry.virgin) {
                t.format.initialize(record, key: key)
                return .initial
            }
            switch e.tier {
            case .hot: record.base.copyMemory(from: hotRecord(e.slot).base, byteCount: recordSize); return .hot
            case .warm:
                let source = warmRecord(e.slot)
                if source.key == key && source.isIntact(layout) {
                    record.base.copyMemory(from: source.base, byteCount: recordSize)
                    return .warm
                }
                guard Self.lmdbHoldsExactly(e) else { throw t.corruptWarmSlot(e.slot, key: key) }
            case .spill:
                try readSpill(e.slot, key: key, into: record, t)
                return .spill
            case .none: preconditionFailure("a written row always has a copy")
            }
        }
        if let bytes = try t.coldGet(key, &scratch) {
            do { try scratch.codec.decode(bytes, key: key, into: record) } catch { throw t.corruptColdRecord(key, error) }
            return .cold
        }
        t.format.initialize(record, key: key)
        return .initial
    }

    /// Removes the row: it reads as its initializer again.
    mutating func remove(_ key: UInt64, _ hash: UInt64, _ t: Table, _ scratch: inout BatchScratch) throws(StoreError) {
        if let p = index.find(key, hash: hash) {
            let e = index[p]
            if e.tier == .none { return }
            // A frozen row is kept as it was, and LMDB will hold it: its removal is a tombstone.
            let frozen = isFrozen(e)
            if frozen {
                var source: UnsafeRawPointer?
                if !e.has(IndexEntry.virgin) {
                    switch e.tier {
                    case .hot: source = UnsafeRawPointer(hotRecord(e.slot).base)
                    case .warm:
                        let record = warmRecord(e.slot)
                        guard record.key == key, record.isIntact(layout) else { throw t.corruptWarmSlot(e.slot, key: key) }
                        source = UnsafeRawPointer(record.base)
                    case .spill:
                        try readSpill(e.slot, key: key, into: RowRecord(scratch.record, layout), t)
                        source = UnsafeRawPointer(scratch.record)
                    case .none: break
                    }
                }
                keepFrozen(at: p, source)
            }
            switch e.tier {
            case .none: break
            case .hot: hot.release(e.slot)
            case .warm: warm.release(e.slot)
            case .spill: t.spill.release(e.slot)
            }
            // LMDB holds a record of it, or will once the checkpoint in flight is durable.
            let holds = index[p].flags & (IndexEntry.persisted | IndexEntry.shadows)
            if holds != 0 {
                relocate(key, hash, to: .none, 0)
                setFlags(at: index.find(key, hash: hash)!, IndexEntry.virgin | IndexEntry.dirty | epoch | holds)
            } else {
                removeEntry(at: p)
            }
            return
        }
        if try t.coldGet(key, &scratch) != nil {
            insertEntry(key, hash, IndexEntry.location(.none, 0), IndexEntry.virgin | IndexEntry.persisted | IndexEntry.dirty | epoch)
        }
    }

    // MARK: Checkpoint

    /// Whether the entry is one a checkpoint in flight froze and has not taken yet.
    @inline(__always)
    func isFrozen(_ e: IndexEntry) -> Bool { e.flags & (IndexEntry.dirty | IndexEntry.odd) == frozenMatch }

    /// Starts a checkpoint (the store holds its lock exclusively): the rows changed so far are
    /// frozen, and their keys handed over; rows changed from now on are the next one's.
    mutating func freeze() -> [UInt64] {
        precondition(frozenMatch == .max && frozenCopies.isEmpty, "a checkpoint froze rows while another was in flight")
        var keys: [UInt64] = []
        swap(&keys, &dirtyKeys)
        frozenMatch = IndexEntry.dirty | epoch
        epoch ^= IndexEntry.odd
        return keys
    }

    /// Before a frozen row first changes: keeps a copy of it as it was frozen (`source`, or
    /// nil for a removed row), and makes its entry the next checkpoint's.
    @inline(never)
    private mutating func keepFrozen(at p: Int, _ source: UnsafeRawPointer?) {
        let e = index[p]
        frozenCopies.keep(e.key, source, persisted: e.has(IndexEntry.persisted))
        // A row LMDB gets only from this checkpoint: removing it now needs a tombstone.
        let shadows = source != nil && !e.has(IndexEntry.persisted) ? IndexEntry.shadows : 0
        setFlags(at: p, (e.flags & ~IndexEntry.odd) | epoch | shadows)
        dirtyKeys.append(e.key)
    }

    /// What the checkpoint in flight writes for a frozen key. (@unchecked Sendable: the bytes
    /// are in the writer's own scratch, out of the shard.)
    enum FrozenChange: @unchecked Sendable {
        /// Nothing: the key was listed, but its change was undone before the checkpoint began.
        case none
        case delete
        /// The encoded record, valid until the scratch encodes again.
        case write(UnsafeRawBufferPointer)
    }

    /// The frozen state of `key`, encoded. Changes nothing.
    func frozenChange(_ key: UInt64, _ t: Table, _ scratch: inout BatchScratch) throws(StoreError) -> FrozenChange {
        if let p = index.find(key, hash: KeyHash.of(key)), isFrozen(index[p]) {
            let e = index[p]
            if e.has(IndexEntry.virgin) { return .delete }
            let record: RowRecord
            switch e.tier {
            case .hot: record = hotRecord(e.slot)
            case .warm:
                record = warmRecord(e.slot)
                // A damaged copy must not become durable with a fresh checksum.
                guard record.key == key, record.isIntact(layout) else { throw t.corruptWarmSlot(e.slot, key: key) }
            case .spill:
                record = RowRecord(scratch.record, layout)
                try readSpill(e.slot, key: key, into: record, t)
            case .none: preconditionFailure("a written row always has a copy")
            }
            return .write(scratch.codec.encode(record))
        }
        switch frozenCopies.copy(of: key, layout: layout)?.copy {
        case nil: return .none
        case .removed: return .delete
        case .record(let record): return .write(scratch.codec.encode(record))
        }
    }

    /// After the checkpoint that froze `keys` is durable: the rows it wrote are clean copies
    /// of LMDB; spilled ones and tombstones leave the index. Called in slices, so batches get
    /// the shard between them; `settle` ends it.
    mutating func checkpointCommitted(_ keys: ArraySlice<UInt64>, _ t: Table) {
        for key in keys {
            guard let p = index.find(key, hash: KeyHash.of(key)), isFrozen(index[p]) else { continue }
            let e = index[p]
            if e.has(IndexEntry.virgin) {
                if e.tier == .none { removeEntry(at: p) } else { setFlags(at: p, IndexEntry.virgin) }
            } else if e.tier == .spill {
                t.spill.release(e.slot)
                removeEntry(at: p)
            } else {
                setFlags(at: p, IndexEntry.persisted)
            }
        }
    }

    /// After the checkpoint that froze `keys` failed (LMDB is back at the one before): every
    /// frozen row is the next checkpoint's again. In slices, as `checkpointCommitted`.
    mutating func checkpointFailed(_ keys: ArraySlice<UInt64>) {
        for key in keys {
            guard let p = index.find(key, hash: KeyHash.of(key)), isFrozen(index[p]) else { continue }
            setFlags(at: p, (index[p].flags & ~IndexEntry.odd) | epoch)
            // (A frozen row changed since is listed already.)
            dirtyKeys.append(key)
        }
    }

    /// Ends the checkpoint in flight, after every slice of its keys: rows changed since it
    /// froze now know whether LMDB holds them.
    mutating func settle(durable: Bool) {
        if durable {
            settleCopies { copy, _ in
                if case .record = copy { true } else { false }
            }
        } else {
            settleCopies { _, persistedBefore in persistedBefore }
        }
    }

    /// Ends the checkpoint in flight: each row changed after it froze gets `held(copy,
    /// persisted before)`, whether LMDB now holds a record of it, and the copies go. A
    /// tombstone of a key LMDB does not hold has nothing to delete and goes too.
    private mutating func settleCopies(_ held: (FrozenCopies.Copy, Bool) -> Bool) {
        var settled: [(key: UInt64, holds: Bool)] = []
        settled.reserveCapacity(frozenCopies.count)
        frozenCopies.forEachKey { key in
            let (copy, persisted) = frozenCopies.copy(of: key, layout: layout)!
            settled.append((key, held(copy, persisted)))
        }
        for (key, holds) in settled {
            guard let p = index.find(key, hash: KeyHash.of(key)) else { continue }
            let e = index[p]
            if e.has(IndexEntry.virgin) && !holds {
                if e.tier == .none { removeEntry(at: p) } else { setFlags(at: p, IndexEntry.virgin) }
            } else {
                setFlags(at: p, (e.flags & ~(IndexEntry.persisted | IndexEntry.shadows)) | (holds ? IndexEntry.persisted : 0))
            }
        }
        frozenCopies.removeAll()
        frozenMatch = .max
        index.shrink(keepingRoomFor: hot.count + warm.count)
    }

    // MARK: Warm tier across a clean close

    /// Warm rows LMDB holds exactly: what a reopened store can keep.
    func cleanWarmRows() -> [(key: UInt64, slot: Int)] {
        var rows: [(key: UInt64, slot: Int)] = []
        index.forEachPosition { p in
            let e = index[p]
            if e.tier == .warm && !e.has(IndexEntry.dirty) { rows.append((e.key, e.slot)) }
        }
        return rows
    }

    /// Hot and warm slots that do not hold the key their index entry names, or (warm) fail
    /// their checksum: for `Table.verify`.
    func damagedSlots(_ t: Table) -> [(key: UInt64, tier: Tier, slot: Int)] {
        var damaged: [(key: UInt64, tier: Tier, slot: Int)] = []
        index.forEachPosition { p in
            let e = index[p]
            switch e.tier {
            case .hot:
                if hotRecord(e.slot).key != e.key { damaged.append((e.key, .hot, e.slot)) }
            case .warm:
                let record = warmRecord(e.slot)
                if record.key != e.key || !record.isIntact(layout) { damaged.append((e.key, .warm, e.slot)) }
            case .spill, .none:
                break
            }
        }
        return damaged
    }

    /// Takes back warm rows saved by a clean close.
    mutating func adoptWarm(_ rows: [(key: UInt64, slot: Int)]) {
        warm.adopt(rows.map { ($0.slot, $0.key) })
        // Slots are reserved in order from the first, so all up to the highest kept one are.
        warmReserved = (rows.lazy.map(\.slot).max() ?? -1) + 1
        for (key, slot) in rows {
            insertEntry(key, KeyHash.of(key), IndexEntry.location(.warm, slot), IndexEntry.persisted)
        }
    }

    /// Recounts everything from the index and the tiers and traps on any disagreement. Only in
    /// builds with STRATA_INVARIANTS (debug); elsewhere it does nothing.
    func checkInvariants(_ t: Table) {
        #if STRATA_INVARIANTS
        hot.checkInvariants()
        warm.checkInvariants()
        var recount = ShardCounters()
        var hotSeen = 0, warmSeen = 0
        index.forEachPosition { p in
            let e = index[p]
            precondition(index.find(e.key, hash: KeyHash.of(e.key)) == p, "entry not reachable from its bucket")
            recount.account(e, 1)
            switch e.tier {
            case .hot:
                precondition(hotRecord(e.slot).key == e.key, "hot slot holds another key")
                hotSeen += 1
            case .warm:
                precondition(warmRecord(e.slot).key == e.key, "warm slot holds another key")
                precondition(!e.has(IndexEntry.virgin), "a never-written row in warm")
                warmSeen += 1
            case .spill:
                precondition(e.has(IndexEntry.dirty) && !e.has(IndexEntry.virgin), "a clean row in spill")
            case .none:
                precondition(Self.isTombstone(e), "a tombstone that shadows nothing")
            }
            if !e.has(IndexEntry.persisted) && !e.has(IndexEntry.virgin) {
                precondition(e.has(IndexEntry.dirty), "a new row that no checkpoint would write")
            }
            if e.has(IndexEntry.dirty) && !isFrozen(e) { precondition(dirtyKeys.contains(e.key), "dirty row not listed") }
            if e.has(IndexEntry.shadows) {
                guard case .record = frozenCopies.copy(of: e.key, layout: layout)?.copy else {
                    preconditionFailure("a row shadows no frozen copy")
                }
            }
        }
        precondition(hotSeen == hot.count && warmSeen == warm.count, "tier slot counts disagree with the index")
        precondition(recount.hotRows == counters.hotRows && recount.hotVirgins == counters.hotVirgins
            && recount.warmRows == counters.warmRows && recount.spillRows == counters.spillRows
            && recount.persistedResident == counters.persistedResident && recount.tombstones == counters.tombstones
            && recount.unpersisted == counters.unpersisted, "row counters drifted")
        #endif
    }
}

/// Totals of one checkpoint.
struct CheckpointTotals {
    var written = 0
    var deleted = 0
    var bytes = 0
}

/// Where a row's newest copy is, as reported to users.
public enum RowPlacement: String, Sendable, Codable {
    case hot, warm, spill, cold
    /// Never written (or removed): the value is the initializer's.
    case initial
}
