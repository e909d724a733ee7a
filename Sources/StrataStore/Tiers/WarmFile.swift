// The warm tier's file: fixed-size record slots, memory-mapped, so reading a warm row is a
// copy from memory with no system call. Each shard owns a contiguous run of slots.
//
// The file holds no checkpoint state: LMDB does. What makes it worth keeping across a clean
// close is `warm.index`, written by `Store.close` and consumed (deleted) by the next open. It
// lists the warm rows whose bytes LMDB holds exactly, for the generation it names.
import CStrataSupport
#if canImport(Glibc)
import Glibc
#endif

final class WarmFile: @unchecked Sendable {
    // @unchecked: the mapping is written only under shard locks, each to its own slots.
    let path: String
    private let file: OpenFile
    private let memory: Mapping

    var base: UnsafeMutableRawPointer { memory.base }
    /// Whether the file's contents were kept (asked for, and it had the expected size).
    let kept: Bool

    /// Opens the slot file at `bytes` long. With `keep` its contents stay; otherwise it starts
    /// empty. The file is sparse: the shards reserve the blocks of their slots (`reserve`)
    /// before they first write them, so that a write through the mapping never meets a full
    /// disk (that would be SIGBUS, not an error), and the file takes disk only for the slots
    /// that were used.
    init(path: String, bytes: Int, keep: Bool) throws(SystemError) {
        self.path = path
        file = try OpenFile(path: path, flags: O_RDWR | O_CREAT)
        let size = try file.size()
        kept = keep && size == bytes
        if !kept {
            try file.truncate(to: 0)
            try file.truncate(to: bytes)
        }
        memory = try Mapping(length: bytes, file: file)
    }

    /// Reserves the blocks of `[offset, offset + bytes)`; refused with the sizes, reserving
    /// nothing, when the file system lacks the room.
    func reserve(from offset: Int, bytes: Int) throws(SystemError) { try file.reserve(from: offset, bytes) }

    /// Writes dirty pages to disk (`msync`).
    func sync() throws(SystemError) { try memory.sync(path: path) }
}

/// `warm.index`: which warm slots hold which rows after a clean close.
///
///   offset  size  field
///        0     8  magic "STRATAWI"
///        8     4  version (1)
///       12     4  zero
///       16     8  generation: LMDB's checkpoint these rows match
///       24     8  record size
///       32     8  shards
///       40     8  slots per shard
///       48     8  entries
///       56  16*n  entries: key (8), shard (4), slot (4)
///        .     4  CRC-32C of everything before
enum WarmIndexFile {
    static let magic: UInt64 = 0x4957_4154_4152_5453  // "STRATAWI" little-endian
    static let version: UInt32 = 1

    struct Contents {
        var generation: UInt64
        var recordSize: Int
        var shards: Int
        var slotsPerShard: Int
        var rowsByShard: [[(key: UInt64, slot: Int)]]

        func matches(recordSize: Int, shards: Int, slotsPerShard: Int) -> Bool {
            self.recordSize == recordSize && self.shards == shards && self.slotsPerShard == slotsPerShard
        }
    }

    /// Writes atomically: a temporary file, fsync, rename, fsync of the directory.
    static func write(_ contents: Contents, to path: String) throws(SystemError) {
        let count = contents.rowsByShard.reduce(0) { $0 + $1.count }
        var bytes = [UInt8](repeating: 0, count: 56 + 16 * count + 4)
        bytes.withUnsafeMutableBytes { b in
            b.storeBytes(of: magic, toByteOffset: 0, as: UInt64.self)
            b.storeBytes(of: version, toByteOffset: 8, as: UInt32.self)
            b.storeBytes(of: contents.generation, toByteOffset: 16, as: UInt64.self)
            b.storeBytes(of: UInt64(contents.recordSize), toByteOffset: 24, as: UInt64.self)
            b.storeBytes(of: UInt64(contents.shards), toByteOffset: 32, as: UInt64.self)
            b.storeBytes(of: UInt64(contents.slotsPerShard), toByteOffset: 40, as: UInt64.self)
            b.storeBytes(of: UInt64(count), toByteOffset: 48, as: UInt64.self)
            var at = 56
            for (shard, rows) in contents.rowsByShard.enumerated() {
                for (key, slot) in rows {
                    b.storeBytes(of: key, toByteOffset: at, as: UInt64.self)
                    b.storeBytes(of: UInt32(shard), toByteOffset: at + 8, as: UInt32.self)
                    b.storeBytes(of: UInt32(slot), toByteOffset: at + 12, as: UInt32.self)
                    at += 16
                }
            }
            b.storeBytes(of: strata_crc32c(0, b.baseAddress, at), toByteOffset: at, as: UInt32.self)
        }
        try replaceFileDurably(path, with: bytes)
    }

    /// Reads a saved index; nil with the reason when it is missing or unusable.
    static func read(_ path: String) -> (Contents?, String?) {
        guard fileExists(path) else { return (nil, nil) }
        guard let file = try? OpenFile(path: path, flags: O_RDONLY), let size = try? file.size(), size >= 60 else {
            return (nil, "\(path): unreadable or truncated; the warm tier starts empty")
        }
        var bytes = [UInt8](repeating: 0, count: size)
        guard (try? bytes.withUnsafeMutableBytes { (b) throws(SystemError) in try file.read(into: b, at: 0) }) == size else {
            return (nil, "\(path): short read; the warm tier starts empty")
        }
        return parse(bytes, path: path)
    }

    /// Decodes the bytes of a saved index, as `read`.
    static func parse(_ bytes: [UInt8], path: String) -> (Contents?, String?) {
        let size = bytes.count
        guard size >= 60 else { return (nil, "\(path): truncated; the warm tier starts empty") }
        return bytes.withUnsafeBytes { b -> (Contents?, String?) in
            // The checksum first: nothing below trusts a field it does not cover.
            guard b.loadUnaligned(fromByteOffset: size - 4, as: UInt32.self) == strata_crc32c(0, b.baseAddress, size - 4) else {
                return (nil, "\(path): checksum mismatch or truncated; the warm tier starts empty")
            }
            guard b.loadUnaligned(fromByteOffset: 0, as: UInt64.self) == magic else { return (nil, "\(path): not a warm index") }
            guard b.loadUnaligned(fromByteOffset: 8, as: UInt32.self) == version else {
                return (nil, "\(path): warm index version \(b.loadUnaligned(fromByteOffset: 8, as: UInt32.self)) not read by this build")
            }
            func field(_ offset: Int) -> Int? { Int(exactly: b.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) }
            guard let count = field(48), count <= (size - 60) / 16, size == 56 + 16 * count + 4,
                  let recordSize = field(24), let shards = field(32), let slotsPerShard = field(40),
                  shards >= 1, shards <= 1 << 16, slotsPerShard <= 1 << 32, recordSize >= 1, recordSize <= 1 << 30 else {
                return (nil, "\(path): header fields out of range; the warm tier starts empty")
            }
            var rows = [[(key: UInt64, slot: Int)]](repeating: [], count: shards)
            var seen = Set<Int>()
            for i in 0..<count {
                let at = 56 + 16 * i
                let shard = Int(b.loadUnaligned(fromByteOffset: at + 8, as: UInt32.self))
                let slot = Int(b.loadUnaligned(fromByteOffset: at + 12, as: UInt32.self))
                guard shard < shards, slot < slotsPerShard, seen.insert(shard * slotsPerShard + slot).inserted else {
                    return (nil, "\(path): entry \(i) names slot \(slot) of shard \(shard), outside the file or twice")
                }
                rows[shard].append((b.loadUnaligned(fromByteOffset: at, as: UInt64.self), slot))
            }
            return (Contents(
                generation: b.loadUnaligned(fromByteOffset: 16, as: UInt64.self), recordSize: recordSize,
                shards: shards, slotsPerShard: slotsPerShard, rowsByShard: rows), nil)
        }
    }
}
