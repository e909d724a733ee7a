// A shard's copy-on-write side of a checkpoint in flight. The checkpoint writes each row as
// it was when the checkpoint began (it was "frozen"); batches go on changing rows meanwhile.
// The first change to a frozen row that the checkpoint has not written yet first copies the
// row here, as it was, and the checkpoint writes the copy instead. So a checkpoint costs, in
// memory, one record per row both frozen and changed again before it is written; the copies
// go when the checkpoint ends.

/// Copies of frozen rows, by key: a record, or the mark of a removed row (the checkpoint
/// deletes it). Each also keeps whether LMDB held the key before the checkpoint, so that a
/// failed checkpoint can put the row's flags back.
struct FrozenCopies: ~Copyable {
    /// key -> slot in `records` (tier `.hot`) or a removed row (tier `.none`); flags hold
    /// `IndexEntry.persisted` as it was.
    private var index = KeyIndex(expected: 0)
    private var records: UnsafeMutableRawPointer?
    private var capacity = 0, used = 0
    let recordSize: Int

    init(recordSize: Int) { self.recordSize = recordSize }

    deinit { records?.deallocate() }

    var isEmpty: Bool { index.count == 0 }
    var count: Int { index.count }
    /// Memory held, for the statistics' overhead.
    var bytes: Int { isEmpty ? 0 : index.bytes + capacity * recordSize }

    enum Copy {
        case record(RowRecord)
        case removed
    }

    /// The copy of `key`, and whether LMDB held it before the checkpoint; nil if none.
    func copy(of key: UInt64, layout: RowLayout) -> (copy: Copy, persisted: Bool)? {
        guard let p = index.find(key, hash: KeyHash.of(key)) else { return nil }
        let e = index[p]
        let persisted = e.has(IndexEntry.persisted)
        if e.tier == .none { return (.removed, persisted) }
        return (.record(RowRecord(records! + e.slot * recordSize, layout)), persisted)
    }

    /// Keeps a copy of `record` (or, with nil, the mark of a removed row) for `key`, which
    /// has none yet.
    mutating func keep(_ key: UInt64, _ record: UnsafeRawPointer?, persisted: Bool) {
        let flags = persisted ? IndexEntry.persisted : 0
        guard let record else {
            index.insert(key, hash: KeyHash.of(key), location: IndexEntry.location(.none, 0), flags: flags)
            return
        }
        if used == capacity { grow() }
        (records! + used * recordSize).copyMemory(from: record, byteCount: recordSize)
        index.insert(key, hash: KeyHash.of(key), location: IndexEntry.location(.hot, used), flags: flags)
        used += 1
    }

    /// Calls `body` with every key that has a copy.
    func forEachKey(_ body: (UInt64) -> Void) {
        index.forEachPosition { body(index[$0].key) }
    }

    /// Lets every copy go, with the memory.
    mutating func removeAll() {
        guard capacity > 0 || index.count > 0 else { return }
        index = KeyIndex(expected: 0)
        records?.deallocate()
        records = nil
        (capacity, used) = (0, 0)
    }

    private mutating func grow() {
        let larger = max(64, capacity * 2)
        let moved = UnsafeMutableRawPointer.allocate(byteCount: larger * recordSize, alignment: 64)
        if let records {
            moved.copyMemory(from: records, byteCount: used * recordSize)
            records.deallocate()
        }
        records = moved
        capacity = larger
    }
}
