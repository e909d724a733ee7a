// The hot tier's memory: one anonymous mapping per table, handed to its shards a chunk of
// 512 records at a time, in order, as they fill. The memory in use is then one dense prefix
// of the mapping, which transparent huge pages back without waste; with a region per shard
// from the start, every shard's first record would cost a whole 2 MiB page.
import Synchronization

final class HotArena: @unchecked Sendable {
    // @unchecked: chunks are handed out through an atomic counter; each then belongs to one
    // shard, used under its lock.
    static let chunkShift = 9
    static let slotsPerChunk = 1 << chunkShift

    private let memory: Mapping
    private let chunkBytes: Int
    private let chunks: Int
    private let next = Atomic<Int>(0)

    /// Room for `shards` shards of `slotsPerShard` records of `recordSize` bytes.
    init(recordSize: Int, shards: Int, slotsPerShard: Int) throws(SystemError) {
        chunkBytes = Self.slotsPerChunk * recordSize
        chunks = shards * Self.chunksPerShard(slotsPerShard)
        memory = try Mapping(anonymous: max(chunks * chunkBytes, 1))
    }

    static func chunksPerShard(_ slots: Int) -> Int { (slots + slotsPerChunk - 1) >> chunkShift }

    /// The next unused chunk's address.
    func takeChunk() -> UInt {
        let i = next.add(1, ordering: .relaxed).oldValue
        precondition(i < chunks, "hot arena handed out more chunks than its shards can use")
        return UInt(bitPattern: memory.base + i * chunkBytes)
    }
}
