// One shard of a table: the rows whose key hash falls in its range, with their index, hot
// slots, warm slots and counters. A shard is only ever reached through its table's Mutex.
//
// How a row moves:
//   lookup or update  -> the row comes to hot (from warm, spill, LMDB, or the initializer)
//   hot is full       -> admission picks a victim: it goes to warm (a never-written row is
//                        simply dropped)
//   warm is full      -> its victim leaves: dropped if LMDB already holds the same bytes,
//                        else written to the spill file until the next checkpoint
//   checkpoint        -> every changed row is written to LMDB; spilled rows are then
//                        dropped from the spill file, as LMDB holds them
// Each step that can fail (a spill write, a cold read) runs before anything changes, so an
// error leaves the shard as it was.
import CStrataSupport

/// Counters of one shard; the table sums them.
struct ShardCounters {
    // Rows by where their newest copy is.
    var hotRows = 0, hotVirgins = 0, warmRows = 0, spillRows = 0
    /// Written rows in hot, warm or spill that LMDB also holds (at the checkpoint's value).
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

/// Per-batch working memory: one record buffer, the cold codec and a lazily begun LMDB read.
struct BatchScratch: ~Copyable {
    let record: UnsafeMutableRawPointer
    var codec: ColdRecord
    var reader: LMDBLazyReader

    init(_ table: Table) {
        record = .allocate(byteCount: table.format.layout.recordSize, alignment: 16)
        codec = ColdRecord(format: table.format)
        reader = LMDBLazyReader(pool: table.store.readers)
    }

    deinit { record.deallocate() }
}

/// @unchecked Sendable: its memory is reached only while holding the shard's Mutex.
struct Shard: ~Copyable, @unchecked Sendable {
    var index: KeyIndex
    var hot: AdmissionPolicy
    var warm: AdmissionPolicy
    var sketch: FrequencySketch
    let hotBase: UnsafeMutableRawPointer
    let warmBase: UnsafeMutableRawPointer?
    let recordSize: Int
    /// Keys whose entries became dirty since the last checkpoint (may repeat).
    var dirtyKeys: [UInt64] = []
    var counters = ShardCounters()

    init(hotCapacity: Int, hotBase: UnsafeMutableRawPointer, warmCapacity: Int,
         warmBase: UnsafeMutableRawPointer?, recordSize: Int) {
        index = KeyIndex(expected: hotCapacity + warmCapacity)
        hot = AdmissionPolicy(capacity: hotCapacity)
        warm = AdmissionPolicy(capacity: warmCapacity)
        sketch = FrequencySketch(capacity: hotCapacity + warmCapacity)
        self.hotBase = hotBase
        self.warmBase = warmBase
        self.recordSize = recordSize
    }

    @inline(__always) func hotRecord(_ slot: Int) -> RowRecord { RowRecord(hotBase + slot &* recordSize) }
    @inline(__always) func warmRecord(_ slot: Int) -> RowRecord { RowRecord(warmBase! + slot &* recordSize) }

    // MARK: Making a row resident

    /// Brings `key`'s row into hot and returns its slot.
    mutating func resident(_ key: UInt64, _ hash: UInt64, _ t: Table, _ scratch: inout BatchScratch) throws(StoreError) -> Int {
        sketch.increment(hash)
        if let p = index.find(key, hash: hash) {
            let e = index[p]
            switch e.tier {
            case .hot:
                hot.touch(e.slot)
                counters.hotHits += 1
                return e.slot
            case .warm:
                let source = warmRecord(e.slot)
                guard source.key == key, source.isIntact(t.format.layout) else {
                    throw t.corruptWarmSlot(e.slot, key: key)
                }
                scratch.record.copyMemory(from: source.base, byteCount: recordSize)
                // The slot just freed takes hot's victim, so making room needs no I/O.
                warm.release(e.slot)
                let slot: Int
                do { slot = try makeHotRoom(t) } catch { preconditionFailure("room was made without I/O: \(error)") }
                counters.warmHits += 1
                return place(key, hash, copying: scratch.record, into: slot)
            case .spill:
                do { try t.spill.read(e.slot, into: scratch.record) } catch { throw t.spillFailure(error) }
                let copy = RowRecord(scratch.record)
                guard copy.key == key, copy.isIntact(t.format.layout) else { throw t.corruptSpillSlot(e.slot, key: key) }
                let slot = try makeHotRoom(t)
                t.spill.release(e.slot)
                counters.spillHits += 1
                return place(key, hash, copying: scratch.record, into: slot)
            case .none:
                let slot = try makeHotRoom(t)
                t.format.initialize(hotRecord(slot), key: key)
                hot.insert(slot, hash: hash)
                relocate(key, hash, to: .hot, slot)
                counters.initialHits += 1
                return slot
            }
        }
        if let bytes = try t.coldGet(key, &scratch) {
            do { try scratch.codec.decode(bytes, into: RowRecord(scratch.record)) } catch { throw t.corruptColdRecord(key, error) }
            RowRecord(scratch.record).key = key
            let slot = try makeHotRoom(t)
            hotRecord(slot).base.copyMemory(from: scratch.record, byteCount: recordSize)
            hot.insert(slot, hash: hash)
            insertEntry(key, hash, IndexEntry.location(.hot, slot), IndexEntry.persisted)
            counters.coldHits += 1
            return slot
        }
        let slot = try makeHotRoom(t)
        t.format.initialize(hotRecord(slot), key: key)
        hot.insert(slot, hash: hash)
        insertEntry(key, hash, IndexEntry.location(.hot, slot), IndexEntry.virgin)
        counters.initialHits += 1
        return slot
    }

    private mutating func place(_ key: UInt64, _ hash: UInt64, copying source: UnsafeRawPointer, into slot: Int) -> Int {
        hotRecord(slot).base.copyMemory(from: source, byteCount: recordSize)
        hot.insert(slot, hash: hash)
        relocate(key, hash, to: .hot, slot)
        return slot
    }

    /// A hot slot for a new row, moving the admission policy's victim down first.
    private mutating func makeHotRoom(_ t: Table) throws(StoreError) -> Int {
        if let slot = hot.takeFree() { return slot }
        let eviction = hot.chooseEviction(sketch)
        try demoteFromHot(eviction.slot, t)
        hot.evict(eviction)
        return eviction.slot
    }

    /// Moves the row in hot slot `slot` to warm (or further down), leaving the slot unused.
    private mutating func demoteFromHot(_ slot: Int, _ t: Table) throws(StoreError) {
        let record = hotRecord(slot)
        let key = record.key, hash = KeyHash.of(key)
        let p = index.find(key, hash: hash)!
        let e = index[p]
        if e.has(IndexEntry.virgin) {
            // Its value is the initializer's: nothing to keep but, for a removed row, the
            // tombstone.
            if e.has(IndexEntry.persisted) { relocate(key, hash, to: .none, 0) } else { removeEntry(at: p) }
            counters.dropped += 1
            return
        }
        guard warm.capacity > 0 else { return try demoteToDisk(record, t) }
        let target: Int
        if let free = warm.takeFree() {
            target = free
        } else {
            let eviction = warm.chooseEviction(sketch)
            try demoteToDisk(warmRecord(eviction.slot), t)
            warm.evict(eviction)
            target = eviction.slot
        }
        let copy = warmRecord(target)
        copy.base.copyMemory(from: record.base, byteCount: recordSize)
        copy.seal(t.format.layout)
        warm.insert(target, hash: hash)
        relocate(key, hash, to: .warm, target)
        counters.hotToWarm += 1
    }

    /// Takes a written row out of memory and the warm file: dropped when LMDB holds the same
    /// bytes, else spilled.
    private mutating func demoteToDisk(_ record: RowRecord, _ t: Table) throws(StoreError) {
        let key = record.key, hash = KeyHash.of(key)
        let p = index.find(key, hash: hash)!
        let e = index[p]
        if !e.has(IndexEntry.dirty) {
            removeEntry(at: p)
            counters.dropped += 1
            return
        }
        record.seal(t.format.layout)
        let slot: Int
        do { slot = try t.spill.write(record.base) } catch { throw t.spillFailure(error) }
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

    private mutating func setFlags(at p: Int, _ flags: UInt32) {
        let old = index[p]
        var new = old
        new.flags = flags
        index[p] = new
        counters.account(old, -1)
        counters.account(new, 1)
        if flags & IndexEntry.dirty != 0 && !old.has(IndexEntry.dirty) { dirtyKeys.append(old.key) }
    }

    private mutating func insertEntry(_ key: UInt64, _ hash: UInt64, _ location: UInt32, _ flags: UInt32) {
        let e = IndexEntry(key: key, location: location, flags: flags)
        index.insert(key, hash: hash, location: location, flags: flags)
        counters.account(e, 1)
        if flags & IndexEntry.dirty != 0 { dirtyKeys.append(key) }
    }

    private mutating func removeEntry(at p: Int) {
        counters.account(index[p], -1)
        index.remove(at: p)
    }

    // MARK: Batch operations (the table calls these with the shard's share of a batch)

    /// Copies the row's values into `out`, bringing the row to hot.
    @inline(__always)
    mutating func lookup(_ key: UInt64, _ hash: UInt64, into out: UnsafeMutablePointer<Float>,
                         _ t: Table, _ scratch: inout BatchScratch) throws(StoreError) {
        let slot = try resident(key, hash, t, &scratch)
        out.update(from: hotRecord(slot).values, count: t.format.layout.dimension)
    }

    /// One optimizer step on the row.
    @inline(__always)
    mutating func apply(_ key: UInt64, _ hash: UInt64, gradient: UnsafePointer<Float>, learningRate: Float,
                        stamp: UInt64, _ t: Table, _ scratch: inout BatchScratch) throws(StoreError) {
        let slot = try resident(key, hash, t, &scratch)
        let record = hotRecord(slot)
        let format = t.format
        let d = format.layout.dimension
        let step = record.updateCount &+ 1
        record.updateCount = step
        format.optimizer.apply(values: record.values, state: record.state(format.layout), gradient: gradient,
                               dimension: d, step: step, learningRate: learningRate)
        format.storage.round(record.values, count: d)
        record.changeGeneration = stamp
        let p = index.find(key, hash: hash)!
        let flags = index[p].flags
        let written = (flags & ~IndexEntry.virgin) | IndexEntry.dirty
        if written != flags { setFlags(at: p, written) }
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
                guard source.key == key, source.isIntact(t.format.layout) else { throw t.corruptWarmSlot(e.slot, key: key) }
                out.update(from: source.values, count: d)
            case .spill:
                do { try t.spill.read(e.slot, into: scratch.record) } catch { throw t.spillFailure(error) }
                let copy = RowRecord(scratch.record)
                guard copy.key == key, copy.isIntact(t.format.layout) else { throw t.corruptSpillSlot(e.slot, key: key) }
                out.update(from: copy.values, count: d)
            case .none:
                t.format.initialValues(out, key: key)
            }
            return
        }
        if let bytes = try t.coldGet(key, &scratch) {
            do { try scratch.codec.decodeValues(bytes, into: out) } catch { throw t.corruptColdRecord(key, error) }
            return
        }
        t.format.initialValues(out, key: key)
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
            case .warm: record.base.copyMemory(from: warmRecord(e.slot).base, byteCount: recordSize); return .warm
            case .spill:
                do { try t.spill.read(e.slot, into: record.base) } catch { throw t.spillFailure(error) }
                return .spill
            case .none: preconditionFailure("a written row always has a copy")
            }
        }
        if let bytes = try t.coldGet(key, &scratch) {
            do { try scratch.codec.decode(bytes, into: record) } catch { throw t.corruptColdRecord(key, error) }
            record.key = key
            return .cold
        }
        t.format.initialize(record, key: key)
        return .initial
    }

    /// Removes the row: it reads as its initializer again.
    mutating func remove(_ key: UInt64, _ hash: UInt64, _ t: Table, _ scratch: inout BatchScratch) throws(StoreError) {
        if let p = index.find(key, hash: hash) {
            let e = index[p]
            switch e.tier {
            case .none: return
            case .hot: hot.release(e.slot)
            case .warm: warm.release(e.slot)
            case .spill: t.spill.release(e.slot)
            }
            if e.has(IndexEntry.persisted) {
                relocate(key, hash, to: .none, 0)
                setFlags(at: index.find(key, hash: hash)!, IndexEntry.virgin | IndexEntry.persisted | IndexEntry.dirty)
            } else {
                removeEntry(at: p)
            }
            return
        }
        if try t.coldGet(key, &scratch) != nil {
            insertEntry(key, hash, IndexEntry.location(.none, 0), IndexEntry.virgin | IndexEntry.persisted | IndexEntry.dirty)
        }
    }

    // MARK: Checkpoint

    /// Writes every change since the last checkpoint into the open LMDB transaction. Changes
    /// nothing in memory: `checkpointCommitted` does that once the commit is durable.
    func writeChanges(_ txn: borrowing LMDBWriteTransaction, rows: LMDBDatabase, deletions: LMDBDatabase,
                      generation: UInt64, _ t: Table, _ scratch: inout BatchScratch,
                      _ totals: inout CheckpointTotals) throws(StoreError) {
        var stamp = generation
        for key in dirtyKeys {
            guard let p = index.find(key, hash: KeyHash.of(key)) else { continue }
            let e = index[p]
            guard e.has(IndexEntry.dirty) else { continue }
            if e.has(IndexEntry.virgin) {
                do throws(LMDBError) {
                    try txn.delete(rows, key)
                    try withUnsafeBytes(of: &stamp) { (b) throws(LMDBError) in try txn.put(deletions, key, b) }
                } catch { throw t.store.lmdbFailure(error) }
                totals.deleted += 1
                totals.bytes += 16
                continue
            }
            let record: RowRecord
            switch e.tier {
            case .hot: record = hotRecord(e.slot)
            case .warm: record = warmRecord(e.slot)
            case .spill:
                do { try t.spill.read(e.slot, into: scratch.record) } catch { throw t.spillFailure(error) }
                record = RowRecord(scratch.record)
            case .none: preconditionFailure("a written row always has a copy")
            }
            let bytes = scratch.codec.encode(record)
            do throws(LMDBError) { try txn.put(rows, key, bytes) } catch { throw t.store.lmdbFailure(error) }
            t.store.noteMapTraffic(bytes.count)
            totals.written += 1
            totals.bytes += bytes.count + 8
        }
    }

    /// After a durable commit: changed rows are now clean copies of LMDB; spilled rows and
    /// tombstones leave the index.
    mutating func checkpointCommitted(_ t: Table) {
        for key in dirtyKeys {
            let hash = KeyHash.of(key)
            guard let p = index.find(key, hash: hash) else { continue }
            let e = index[p]
            guard e.has(IndexEntry.dirty) else { continue }
            if e.has(IndexEntry.virgin) {
                if e.tier == .none { removeEntry(at: p) } else { setFlags(at: p, IndexEntry.virgin) }
            } else if e.tier == .spill {
                t.spill.release(e.slot)
                removeEntry(at: p)
            } else {
                setFlags(at: p, IndexEntry.persisted)
            }
        }
        dirtyKeys.removeAll(keepingCapacity: true)
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

    /// Takes back warm rows saved by a clean close.
    mutating func adoptWarm(_ rows: [(key: UInt64, slot: Int)]) {
        warm.adopt(rows.map { ($0.slot, KeyHash.of($0.key)) })
        for (key, slot) in rows {
            insertEntry(key, KeyHash.of(key), IndexEntry.location(.warm, slot), IndexEntry.persisted)
        }
    }

    #if STRATA_INVARIANTS
    /// Recounts everything from the index and the tiers and traps on any disagreement.
    func checkInvariants(_ t: Table) {
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
                precondition(e.has(IndexEntry.virgin) && e.has(IndexEntry.persisted), "a tombstone that shadows nothing")
            }
            if !e.has(IndexEntry.persisted) && !e.has(IndexEntry.virgin) {
                precondition(e.has(IndexEntry.dirty), "a new row that no checkpoint would write")
            }
            if e.has(IndexEntry.dirty) { precondition(dirtyKeys.contains(e.key), "dirty row not listed") }
        }
        precondition(hotSeen == hot.count && warmSeen == warm.count, "tier slot counts disagree with the index")
        precondition(recount.hotRows == counters.hotRows && recount.hotVirgins == counters.hotVirgins
            && recount.warmRows == counters.warmRows && recount.spillRows == counters.spillRows
            && recount.persistedResident == counters.persistedResident && recount.tombstones == counters.tombstones
            && recount.unpersisted == counters.unpersisted, "row counters drifted")
    }
    #endif
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
