// How Criteo-shaped sources (every categorical feature single-valued) write a `Batch` in a
// tight loop: raw pointers to the columns as `Batch.begin(capacity:)` sized them, keys
// feature-major at the row stride of the capacity; `Batch.end(written:)` packs them.
import StrataModels

/// The batch's arrays as raw pointers, for sources that fill them in a tight loop.
struct BatchColumns {
    var labels: UnsafeMutablePointer<Float>
    var dense: UnsafeMutablePointer<Float>
    /// Feature f's key of row r at `keys[f * capacity + r]`.
    var keys: UnsafeMutablePointer<UInt64>

    init(_ batch: Batch) {
        labels = batch.labels
        dense = batch.dense
        keys = batch.singleKeys
    }
}
