// Explicit feature crossing: the factorization machine's second-order term (DeepFM) and the
// cross network of DCN-v2.

/// The second-order term of a factorization machine over `fields` embeddings of one width:
/// y = Σ_{i<j} ⟨v_i, v_j⟩ = ½ (‖Σ_i v_i‖² − Σ_i ‖v_i‖²), one column (Rendle 2010, in O(fields ·
/// dimension) per sample).
public final class FactorizationMachine: Layer {
    public let fields: Int
    public let dimension: Int
    /// Σ_i v_i per row, kept for backward.
    private let sums: Tensor

    public init(fields: Int, dimension: Int) {
        precondition(fields >= 2 && dimension >= 1, "a factorization machine crosses at least two fields")
        self.fields = fields
        self.dimension = dimension
        sums = Tensor(rows: 0, columns: dimension)
    }

    public func outputColumns(for inputColumns: [Int]) -> Int? {
        inputColumns.count == fields && inputColumns.allSatisfy { $0 == dimension } ? 1 : nil
    }

    public func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass) {
        let d = dimension
        sums.resize(rows: output.rows)
        for r in 0..<output.rows {
            let s = sums.row(r)
            s.update(repeating: 0, count: d)
            var squares: Float = 0
            for v in inputs {
                let x = v.row(r)
                for j in 0..<d {
                    s[j] += x[j]
                    squares += x[j] * x[j]
                }
            }
            var total: Float = 0
            for j in 0..<d { total += s[j] * s[j] }
            output.data[r] = 0.5 * (total - squares)
        }
    }

    /// dy/dv_i = Σ_j v_j − v_i.
    public func backward(_ inputs: [Tensor], output: Tensor, outputGradient dy: Tensor, inputGradients: [Tensor?], _ pass: Pass) {
        let d = dimension
        for (v, g) in zip(inputs, inputGradients) {
            guard let g else { continue }
            for r in 0..<dy.rows {
                let s = sums.row(r), x = v.row(r), out = g.row(r), k = dy.data[r]
                for j in 0..<d { out[j] = k * (s[j] - x[j]) }
            }
        }
    }
}

/// DCN-v2's cross network (Wang et al. 2021, full-rank): x_{l+1} = x₀ ⊙ (W_l x_l + b_l) + x_l
/// for l = 0 ..< layers, where x₀ is the input.
public final class CrossNetwork: Layer {
    public let columns: Int
    public let layers: [Linear]
    /// x_0 … x_{L−1} (x_L is the output) and u_l = W_l x_l + b_l.
    private let states: [Tensor]
    private let projections: [Tensor]
    /// dL/dx_l while going back, and dL/du_l ⊙ x₀.
    private let gradient: Tensor
    private let nextGradient: Tensor
    private let scaled: Tensor

    public init(_ name: String, columns: Int, layers: Int) {
        precondition(columns >= 1 && layers >= 1, "a cross network needs a width and a layer")
        self.columns = columns
        self.layers = (0..<layers).map { Linear("\(name).\($0)", inputs: columns, outputs: columns) }
        states = (0..<layers).map { _ in Tensor(rows: 0, columns: columns) }
        projections = (0..<layers).map { _ in Tensor(rows: 0, columns: columns) }
        gradient = Tensor(rows: 0, columns: columns)
        nextGradient = Tensor(rows: 0, columns: columns)
        scaled = Tensor(rows: 0, columns: columns)
    }

    public var parameters: [Parameter] { layers.flatMap(\.parameters) }

    public func outputColumns(for inputColumns: [Int]) -> Int? { inputColumns == [columns] ? columns : nil }

    /// W like any linear layer's; b = 0, as in the paper's code.
    public func initialize(_ w: inout WeightInitializer) {
        for l in layers {
            l.initialize(&w)
            l.bias.value.zero()
        }
    }

    public func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass) {
        let x0 = inputs[0], n = x0.count
        states[0].copy(from: x0)
        for (l, layer) in layers.enumerated() {
            let x = states[l], u = projections[l]
            u.resize(rows: x.rows)
            layer.forward(x, into: u, relu: false)
            let next = l + 1 < layers.count ? states[l + 1] : output
            next.resize(rows: x.rows)
            for i in 0..<n { next.data[i] = x0.data[i] * u.data[i] + x.data[i] }
        }
    }

    public func backward(_ inputs: [Tensor], output: Tensor, outputGradient dy: Tensor, inputGradients: [Tensor?], _ pass: Pass) {
        let x0 = inputs[0], n = x0.count, rows = x0.rows
        // dL/dx₀ collects x₀'s direct uses (x₀ ⊙ u_l for every l) and, at the end, the x_0 path.
        let dx0 = inputGradients[0]
        dx0?.zero()
        gradient.copy(from: dy)
        scaled.resize(rows: rows)
        nextGradient.resize(rows: rows)
        for l in stride(from: layers.count - 1, through: 0, by: -1) {
            let u = projections[l]
            for i in 0..<n { scaled.data[i] = gradient.data[i] * x0.data[i] }
            if let dx0 { for i in 0..<n { dx0.data[i] += gradient.data[i] * u.data[i] } }
            // dL/dx_l = W_lᵀ (g ⊙ x₀) + g, and W_l's gradients from (g ⊙ x₀).
            layers[l].backward(states[l], scaled, inputGradient: nextGradient)
            for i in 0..<n { gradient.data[i] += nextGradient.data[i] }
        }
        if let dx0 { for i in 0..<n { dx0.data[i] += gradient.data[i] } }
    }
}
