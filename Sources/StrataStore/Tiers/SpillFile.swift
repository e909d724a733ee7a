// Where dirty rows go when hot and warm are full before the next checkpoint. They cannot go
// to LMDB yet, which must hold exactly the last checkpoint, so they wait here in fixed-size
// slots. The file is never synced and is emptied when the store opens: after a crash its
// contents belong to no checkpoint.
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

@_spi(Testing) public final class SpillFile: Sendable {
    @_spi(Testing) public let path: String
    @_spi(Testing) public let recordSize: Int
    /// Nil for a store opened for reading: its rows never change, so none is ever spilled,
    /// and the file at `path` is the writer's.
    private let file: OpenFile?
    /// Whether `file` is there (a noncopyable optional cannot be looked into without a borrow).
    private let backed: Bool
    private let slots = Locked<(free: [Int], end: Int)>(([], 0))

    /// Opens the file empty.
    init(path: String, recordSize: Int) throws(SystemError) {
        self.path = path
        self.recordSize = recordSize
        file = try OpenFile(path: path, flags: O_RDWR | O_CREAT | O_TRUNC)
        backed = true
    }

    /// A spill file that opens nothing, for a store opened for reading: a write is refused.
    init(unbackedFor path: String, recordSize: Int) {
        self.path = path
        self.recordSize = recordSize
        file = nil
        backed = false
    }

    /// Writes a record to a new slot and returns it; on failure no slot is used.
    func write(_ record: UnsafeRawPointer) throws(SystemError) -> Int {
        guard backed else { throw SystemError("spilling a row of a store opened for reading to", path, code: EROFS) }
        let slot = slots.withLock { s in
            if let free = s.free.popLast() { return free }
            s.end += 1
            return s.end - 1
        }
        do {
            try file?.write(UnsafeRawBufferPointer(start: record, count: recordSize), at: slot * recordSize)
        } catch {
            release(slot)
            throw error
        }
        return slot
    }

    /// Reads the record in `slot`.
    func read(_ slot: Int, into record: UnsafeMutableRawPointer) throws(SystemError) {
        let n = try file?.read(into: UnsafeMutableRawBufferPointer(start: record, count: recordSize), at: slot * recordSize) ?? 0
        if n != recordSize { throw SystemError("pread", path, code: EIO) }
    }

    func release(_ slot: Int) {
        slots.withLock { $0.free.append(slot) }
    }

    /// Empties the file if no slot is in use (after a checkpoint moved every row out, and
    /// no row was spilled since it froze them).
    func resetIfUnused() throws(SystemError) {
        try slots.withLock { (s) throws(SystemError) in
            guard s.free.count == s.end, s.end > 0 else { return }
            s = ([], 0)
            try file?.truncate(to: 0)
        }
    }

    /// Bytes the file occupies.
    var bytes: Int { slots.withLock { $0.end } * recordSize }
}
