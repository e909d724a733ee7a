// Multi-gate mixture of experts (Ma et al. 2018, MMoE): each task mixes the same experts'
// outputs with weights of its own gate. The gate's softmax is inside the layer so that its
// backward is the softmax's and the mixture's in one pass over the row, allocating nothing.

#if canImport(Glibc)
import Glibc
#endif

/// y = Σₑ softmax(z)ₑ · hₑ per row, for inputs [z, h₁, …, h_E]: z the gate's logits
/// (E columns), each hₑ an expert's output (all of one width). Rows are independent and each
/// is summed in expert order, so results do not depend on threads or batch size.
public final class MixtureOfExperts: Layer {
    public let experts: Int
    public let width: Int
    /// The gate's softmax of the last forward, rows × experts.
    private let weights: Tensor

    public init(experts: Int, width: Int) {
        precondition(experts >= 1 && width >= 1, "a mixture needs an expert and a width")
        self.experts = experts
        self.width = width
        weights = Tensor(rows: 0, columns: experts)
    }

    public func outputColumns(for inputColumns: [Int]) -> Int? {
        inputColumns.count == experts + 1 && inputColumns[0] == experts && inputColumns.dropFirst().allSatisfy { $0 == width }
            ? width : nil
    }

    public func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass) {
        let n = output.rows
        weights.resize(rows: n)
        for r in 0..<n {
            let z = inputs[0].row(r), p = weights.row(r), y = output.row(r)
            var top = -Float.infinity
            for e in 0..<experts { top = max(top, z[e]) }
            var sum: Float = 0
            for e in 0..<experts {
                p[e] = expf(z[e] - top)
                sum += p[e]
            }
            for e in 0..<experts { p[e] /= sum }
            y.update(repeating: 0, count: width)
            for e in 0..<experts {
                let h = inputs[1 + e].row(r), w = p[e]
                for j in 0..<width { y[j] += w * h[j] }
            }
        }
    }

    public func backward(_ inputs: [Tensor], output: Tensor, outputGradient dy: Tensor, inputGradients: [Tensor?], _ pass: Pass) {
        for r in 0..<dy.rows {
            let g = dy.row(r), p = weights.row(r)
            for e in 0..<experts {
                guard let dh = inputGradients[1 + e] else { continue }
                let out = dh.row(r), w = p[e]
                for j in 0..<width { out[j] = w * g[j] }
            }
            guard let dz = inputGradients[0] else { continue }
            // dL/dpₑ = ⟨g, hₑ⟩; through the softmax, dL/dzₑ = pₑ · (dL/dpₑ − Σₗ pₗ · dL/dpₗ).
            let out = dz.row(r)
            var mean: Float = 0
            for e in 0..<experts {
                let h = inputs[1 + e].row(r)
                var s: Float = 0
                for j in 0..<width { s += g[j] * h[j] }
                out[e] = s
                mean += p[e] * s
            }
            for e in 0..<experts { out[e] = p[e] * (out[e] - mean) }
        }
    }
}
