// DLRM's feature interaction: for each sample, the pairwise dot products of the bottom MLP's
// output and the embeddings, strictly below the diagonal of their Gram matrix (pair (i, j)
// for j < i, in order of i then j, as in facebookresearch/dlrm with self-interaction off),
// concatenated after the bottom MLP's output.
//
// The vectors are first laid out feature × dimension × sample, so every product runs over
// consecutive samples: the loops vectorize across the batch instead of over a dimension of
// 16, and no per-sample matrix product is needed.

public final class DotInteraction {
    /// Vectors per sample: the bottom output and one per embedding table.
    public let vectors: Int
    public let dimension: Int
    public var pairs: Int { vectors * (vectors - 1) / 2 }
    public var outputColumns: Int { dimension + pairs }

    public let output: Tensor
    /// Gradients of the inputs: [0] the bottom output, then each embedding.
    public private(set) var inputGradients: [Tensor]

    private var stacked: UnsafeMutablePointer<Float>    // vectors × dimension × batch
    private var stackedGradient: UnsafeMutablePointer<Float>
    private var pairGradient: UnsafeMutablePointer<Float>  // pairs × batch
    private var capacity = 0
    private var batch = 0

    public init(vectors: Int, dimension: Int) {
        precondition(vectors >= 2 && dimension >= 1)
        self.vectors = vectors
        self.dimension = dimension
        output = Tensor(rows: 0, columns: dimension + vectors * (vectors - 1) / 2)
        inputGradients = (0..<vectors).map { _ in Tensor(rows: 0, columns: dimension) }
        stacked = .allocate(capacity: 1)
        stackedGradient = .allocate(capacity: 1)
        pairGradient = .allocate(capacity: 1)
    }

    deinit {
        stacked.deallocate()
        stackedGradient.deallocate()
        pairGradient.deallocate()
    }

    private func reserve(_ b: Int) {
        batch = b
        guard b > capacity else { return }
        stacked.deallocate(); stackedGradient.deallocate(); pairGradient.deallocate()
        stacked = .allocate(capacity: vectors * dimension * b)
        stackedGradient = .allocate(capacity: vectors * dimension * b)
        pairGradient = .allocate(capacity: pairs * b)
        capacity = b
    }

    /// `inputs`: the bottom MLP's output then each embedding, all `batch × dimension`.
    @discardableResult
    public func forward(_ inputs: [Tensor]) -> Tensor {
        precondition(inputs.count == vectors, "interaction of \(vectors) vectors given \(inputs.count)")
        let b = inputs[0].rows, d = dimension
        reserve(b)
        for (v, t) in inputs.enumerated() {
            precondition(t.rows == b && t.columns == d, "interaction inputs must all be \(b)×\(d)")
            let z = stacked + v * d * b
            for s in 0..<b {
                let row = t.row(s)
                for k in 0..<d { z[k * b + s] = row[k] }
            }
        }
        output.resize(rows: b)
        for s in 0..<b { output.row(s).update(from: inputs[0].row(s), count: d) }
        // One pair at a time over all samples, then scattered into the output rows.
        let products = pairGradient  // free until backward: holds pair × sample products
        var pair = 0
        for i in 1..<vectors {
            for j in 0..<i {
                let zi = stacked + i * d * b, zj = stacked + j * d * b, out = products + pair * b
                out.update(repeating: 0, count: b)
                for k in 0..<d {
                    let a = zi + k * b, c = zj + k * b
                    for s in 0..<b { out[s] += a[s] * c[s] }
                }
                pair += 1
            }
        }
        for s in 0..<b {
            let row = output.row(s) + d
            for p in 0..<pairs { row[p] = products[p * b + s] }
        }
        return output
    }

    /// From the gradient of the output, the gradients of every input.
    public func backward(_ dy: Tensor) {
        let b = batch, d = dimension
        precondition(dy.rows == b && dy.columns == outputColumns)
        for s in 0..<b {
            let row = dy.row(s) + d
            for p in 0..<pairs { pairGradient[p * b + s] = row[p] }
        }
        stackedGradient.update(repeating: 0, count: vectors * d * b)
        var pair = 0
        for i in 1..<vectors {
            for j in 0..<i {
                // T_ij = <z_i, z_j>: dz_i += dT_ij · z_j, dz_j += dT_ij · z_i.
                let g = pairGradient + pair * b
                let zi = stacked + i * d * b, zj = stacked + j * d * b
                let gi = stackedGradient + i * d * b, gj = stackedGradient + j * d * b
                for k in 0..<d {
                    let a = zi + k * b, c = zj + k * b, ga = gi + k * b, gc = gj + k * b
                    for s in 0..<b {
                        ga[s] += g[s] * c[s]
                        gc[s] += g[s] * a[s]
                    }
                }
                pair += 1
            }
        }
        for v in 0..<vectors {
            let t = inputGradients[v]
            t.resize(rows: b)
            let gz = stackedGradient + v * d * b
            for s in 0..<b {
                let row = t.row(s)
                for k in 0..<d { row[k] = gz[k * b + s] }
            }
        }
        // The bottom output also passes straight through to the first columns.
        let bottom = inputGradients[0]
        for s in 0..<b {
            let row = bottom.row(s), g = dy.row(s)
            for k in 0..<d { row[k] += g[k] }
        }
    }
}
