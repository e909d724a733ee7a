// A float32 matrix: rows × columns, row-major, contiguous. Layers own theirs and reuse them
// batch after batch, so a training step allocates nothing once the largest batch has been
// seen. A tensor is used by one thread at a time.

public final class Tensor {
    public private(set) var rows: Int
    public let columns: Int
    /// The storage: `rows × columns` floats (more may be allocated).
    public private(set) var data: UnsafeMutablePointer<Float>
    private var capacity: Int

    /// A zeroed tensor.
    public init(rows: Int, columns: Int) {
        precondition(rows >= 0 && columns > 0, "a tensor needs a column and no negative rows")
        self.rows = rows
        self.columns = columns
        capacity = max(rows * columns, 1)
        data = .allocate(capacity: capacity)
        data.initialize(repeating: 0, count: capacity)
    }

    /// A tensor holding `values` (`rows × columns` of them), row after row.
    public convenience init(rows: Int, columns: Int, values: [Float]) {
        precondition(values.count == rows * columns, "\(values.count) values for a \(rows)×\(columns) tensor")
        self.init(rows: rows, columns: columns)
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit { data.deallocate() }

    public var count: Int { rows * columns }

    /// Changes the number of rows, keeping the first rows' values; new rows are unspecified.
    public func resize(rows newRows: Int) {
        precondition(newRows >= 0)
        if newRows * columns > capacity {
            let bigger = UnsafeMutablePointer<Float>.allocate(capacity: newRows * columns)
            bigger.update(from: data, count: rows * columns)
            (bigger + rows * columns).initialize(repeating: 0, count: (newRows - rows) * columns)
            data.deallocate()
            data = bigger
            capacity = newRows * columns
        }
        rows = newRows
    }

    public func zero() { data.update(repeating: 0, count: count) }

    @inline(__always)
    public func row(_ r: Int) -> UnsafeMutablePointer<Float> { data + r * columns }

    /// One element, bounds-checked. `data` and `row(_:)` are the unchecked ways in, for
    /// loops whose bounds are checked once outside them.
    public subscript(r: Int, c: Int) -> Float {
        get {
            precondition((0..<rows).contains(r) && (0..<columns).contains(c), "element (\(r), \(c)) of a \(rows) × \(columns) tensor")
            return data[r * columns + c]
        }
        set {
            precondition((0..<rows).contains(r) && (0..<columns).contains(c), "element (\(r), \(c)) of a \(rows) × \(columns) tensor")
            data[r * columns + c] = newValue
        }
    }

    /// The values, row after row.
    public var values: [Float] { Array(UnsafeBufferPointer(start: data, count: count)) }

    public func copy(from other: Tensor) {
        precondition(other.columns == columns)
        resize(rows: other.rows)
        data.update(from: other.data, count: count)
    }
}
