// Layers that combine several values of a sample: concatenation, sums, element-wise and
// dot products. Each loops over rows in order, so results do not depend on threads.

/// The inputs side by side: [x₁ | x₂ | …].
public final class Concat: Layer {
    public init() {}

    public func outputColumns(for inputColumns: [Int]) -> Int? { inputColumns.isEmpty ? nil : inputColumns.reduce(0, +) }

    public func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass) {
        let c = output.columns
        var offset = 0
        for x in inputs {
            let w = x.columns
            for r in 0..<output.rows { (output.data + r * c + offset).update(from: x.data + r * w, count: w) }
            offset += w
        }
    }

    public func backward(_ inputs: [Tensor], output: Tensor, outputGradient dy: Tensor, inputGradients: [Tensor?], _ pass: Pass) {
        let c = dy.columns
        var offset = 0
        for (x, g) in zip(inputs, inputGradients) {
            let w = x.columns
            if let g { for r in 0..<dy.rows { (g.data + r * w).update(from: dy.data + r * c + offset, count: w) } }
            offset += w
        }
    }
}

/// y = x₁ + x₂ + … (+ b, a learnable row, with `bias`), all of one width: the logit of a sum
/// of towers, or MF's dot product plus biases plus the global mean.
public final class Sum: Layer {
    public let columns: Int
    public let bias: Parameter?

    public init(_ name: String, columns: Int, bias: Bool) {
        self.columns = columns
        self.bias = bias ? Parameter("\(name).bias", rows: 1, columns: columns) : nil
    }

    public var parameters: [Parameter] { bias.map { [$0] } ?? [] }

    public func outputColumns(for inputColumns: [Int]) -> Int? {
        !inputColumns.isEmpty && inputColumns.allSatisfy { $0 == columns } ? columns : nil
    }

    /// The bias starts at 0 (a learnable global offset, as in MF's μ).
    public func initialize(_ w: inout WeightInitializer) { bias?.value.zero() }

    public func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass) {
        let n = output.count, y = output.data
        y.update(from: inputs[0].data, count: n)
        for x in inputs.dropFirst() {
            let v = x.data
            for i in 0..<n { y[i] += v[i] }
        }
        if let b = bias?.value.data {
            for r in 0..<output.rows { for j in 0..<columns { y[r * columns + j] += b[j] } }
        }
    }

    public func backward(_ inputs: [Tensor], output: Tensor, outputGradient dy: Tensor, inputGradients: [Tensor?], _ pass: Pass) {
        for case let g? in inputGradients { g.data.update(from: dy.data, count: dy.count) }
        if let b = bias {
            let g = b.gradient.data
            g.update(repeating: 0, count: columns)
            for r in 0..<dy.rows { for j in 0..<columns { g[j] += dy.data[r * columns + j] } }
        }
    }
}

/// y = a ⊙ b, element-wise: GMF's user-item product.
public final class Product: Layer {
    public init() {}

    public func outputColumns(for inputColumns: [Int]) -> Int? {
        inputColumns.count == 2 && inputColumns[0] == inputColumns[1] ? inputColumns[0] : nil
    }

    public func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass) {
        let a = inputs[0].data, b = inputs[1].data, y = output.data
        for i in 0..<output.count { y[i] = a[i] * b[i] }
    }

    public func backward(_ inputs: [Tensor], output: Tensor, outputGradient dy: Tensor, inputGradients: [Tensor?], _ pass: Pass) {
        let a = inputs[0].data, b = inputs[1].data, g = dy.data
        if let da = inputGradients[0] { for i in 0..<dy.count { da.data[i] = g[i] * b[i] } }
        if let db = inputGradients[1] { for i in 0..<dy.count { db.data[i] = g[i] * a[i] } }
    }
}

/// y = ⟨a, b⟩ per row, one column: matrix factorisation's score.
public final class RowDot: Layer {
    public init() {}

    public func outputColumns(for inputColumns: [Int]) -> Int? {
        inputColumns.count == 2 && inputColumns[0] == inputColumns[1] ? 1 : nil
    }

    public func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass) {
        let d = inputs[0].columns
        for r in 0..<output.rows {
            let a = inputs[0].row(r), b = inputs[1].row(r)
            var s: Float = 0
            for j in 0..<d { s += a[j] * b[j] }
            output.data[r] = s
        }
    }

    public func backward(_ inputs: [Tensor], output: Tensor, outputGradient dy: Tensor, inputGradients: [Tensor?], _ pass: Pass) {
        let d = inputs[0].columns
        func write(_ g: Tensor?, other x: Tensor) {
            guard let g else { return }
            for r in 0..<dy.rows {
                let s = dy.data[r], other = x.row(r), out = g.row(r)
                for j in 0..<d { out[j] = s * other[j] }
            }
        }
        write(inputGradients[0], other: inputs[1])
        write(inputGradients[1], other: inputs[0])
    }
}
