// How sources write into a `ClickBatch` without allocating once the batch has grown to its
// size: the arrays are resized in place, and keys are written feature-major with the row
// stride of the batch size asked for, then packed if fewer samples came (the end of an epoch).

extension ClickBatch {
    /// Sizes the arrays for `capacity` samples, keeping their storage. Keys are laid out with
    /// stride `capacity`: feature `f`'s key for sample `b` goes to `keys[f * capacity + b]`.
    /// Contents are unspecified until written.
    mutating func beginWriting(capacity: Int) {
        count = 0
        resize(&labels, to: capacity)
        resize(&dense, to: capacity * schema.dense)
        resize(&keys, to: capacity * schema.sparse)
    }

    /// Finishes a batch begun with `beginWriting(capacity:)` that received `written` samples:
    /// packs the keys to stride `written` and trims the arrays.
    mutating func endWriting(capacity: Int, written: Int) {
        precondition(written >= 0 && written <= capacity)
        if written < capacity {
            let sparse = schema.sparse
            keys.withUnsafeMutableBufferPointer { k in
                // Feature f moves from f * capacity to f * written: never to a higher address,
                // so copying front to back is safe even when the ranges overlap.
                for f in 1..<max(sparse, 1) {
                    let from = f * capacity, to = f * written
                    for b in 0..<written { k[to + b] = k[from + b] }
                }
            }
            resize(&labels, to: written)
            resize(&dense, to: written * schema.dense)
            resize(&keys, to: written * sparse)
        }
        count = written
    }
}

/// The batch's arrays as raw pointers, for sources that fill them in a tight loop.
struct BatchColumns {
    var labels: UnsafeMutablePointer<Float>
    var dense: UnsafeMutablePointer<Float>
    var keys: UnsafeMutablePointer<UInt64>
}

extension ClickBatch {
    /// Runs `body` with pointers to the arrays as sized by `beginWriting(capacity:)`.
    mutating func withColumns<R, E: Error>(_ body: (BatchColumns) throws(E) -> R) throws(E) -> R {
        var labels = self.labels, dense = self.dense, keys = self.keys
        // Move the arrays out so each is uniquely referenced while written, then put them back.
        self.labels = []
        self.dense = []
        self.keys = []
        defer {
            self.labels = labels
            self.dense = dense
            self.keys = keys
        }
        let result: Result<R, E> = labels.withUnsafeMutableBufferPointer { l in
            dense.withUnsafeMutableBufferPointer { d in
                keys.withUnsafeMutableBufferPointer { k in
                    // An empty array's base address may be nil; any non-null pointer will do as
                    // nothing is written through it.
                    let columns = BatchColumns(
                        labels: l.baseAddress ?? UnsafeMutablePointer(bitPattern: 8)!,
                        dense: d.baseAddress ?? UnsafeMutablePointer(bitPattern: 8)!,
                        keys: k.baseAddress ?? UnsafeMutablePointer(bitPattern: 8)!)
                    do throws(E) { return .success(try body(columns)) } catch { return .failure(error) }
                }
            }
        }
        return try result.get()
    }
}

/// Sets `array.count` to `count`, keeping its storage; new elements are zero.
@inline(__always)
private func resize<T: Numeric>(_ array: inout [T], to count: Int) {
    if array.count > count {
        array.removeLast(array.count - count)
    } else if array.count < count {
        array.append(contentsOf: repeatElement(0, count: count - array.count))
    }
}
