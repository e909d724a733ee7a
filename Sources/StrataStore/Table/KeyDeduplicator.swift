/// Finds a batch's distinct keys in order of first appearance and, for each position, which
/// distinct key it holds. The store uses it to merge duplicate gradients; the embedding layer
/// to look each row up once. Reused batch after batch, it allocates only when a batch is
/// larger than any before.
public struct KeyDeduplicator: Sendable {
    /// The distinct keys of the last batch, in order of first appearance.
    public private(set) var uniqueKeys: [UInt64] = []
    /// For each position of the last batch, the index of its key in `uniqueKeys`.
    public private(set) var positions: [Int32] = []
    /// Open addressing: position + 1 of a key's first appearance, 0 when empty.
    private var table: [Int32] = []

    public init() {}

    /// Processes a batch; returns the number of distinct keys.
    @discardableResult
    public mutating func run(_ keys: UnsafeBufferPointer<UInt64>) -> Int {
        let n = keys.count
        uniqueKeys.removeAll(keepingCapacity: true)
        if positions.count < n { positions = [Int32](repeating: 0, count: n) }
        var size = 16
        while size < 2 * n { size <<= 1 }
        if table.count != size { table = [Int32](repeating: 0, count: size) } else {
            table.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        }
        let mask = size - 1
        // Worked on as locals (moved out, not copied) so no two accesses to self overlap.
        var unique = uniqueKeys, at = positions, slots = table
        uniqueKeys = []; positions = []; table = []
        slots.withUnsafeMutableBufferPointer { t in
            at.withUnsafeMutableBufferPointer { at in
                for i in 0..<n {
                    let k = keys[i]
                    var b = Int(truncatingIfNeeded: KeyHash.of(k)) & mask
                    while true {
                        let first = Int(t[b])
                        if first == 0 {
                            t[b] = Int32(i + 1)
                            at[i] = Int32(unique.count)
                            unique.append(k)
                            break
                        }
                        if keys[first - 1] == k {
                            at[i] = at[first - 1]
                            break
                        }
                        b = (b + 1) & mask
                    }
                }
            }
        }
        uniqueKeys = unique; positions = at; table = slots
        return uniqueKeys.count
    }
}
