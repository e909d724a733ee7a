// DLRM's feature interaction: for each sample, the pairwise dot products of the bottom MLP's
// output and the embeddings, strictly below the diagonal of their Gram matrix (pair (i, j)
// for j < i, in order of i then j, as in facebookresearch/dlrm with self-interaction off),
// concatenated after the bottom MLP's output.
//
// The work is `strata_interaction_forward` / `_backward` (CStrataKernels), which take sixteen
// samples at a time so that every product runs across samples in one vector register; the
// batch is split over `Parallel.threads`.
import CStrataKernels

public final class DotInteraction {
    /// Vectors per sample: the bottom output and one per embedding table.
    public let vectors: Int
    public let dimension: Int
    public var pairs: Int { vectors * (vectors - 1) / 2 }
    public var outputColumns: Int { dimension + pairs }

    public let output: Tensor
    /// Gradients of the inputs: [0] the bottom output, then each embedding.
    public let inputGradients: [Tensor]
    /// The inputs of the last forward pass, which backward needs.
    private var inputs: [Tensor] = []

    public init(vectors: Int, dimension: Int) {
        precondition(vectors >= 2 && dimension >= 1)
        self.vectors = vectors
        self.dimension = dimension
        output = Tensor(rows: 0, columns: dimension + vectors * (vectors - 1) / 2)
        inputGradients = (0..<vectors).map { _ in Tensor(rows: 0, columns: dimension) }
    }

    /// `inputs`: the bottom MLP's output then each embedding, all `batch × dimension`. They
    /// must keep their values until `backward`.
    @discardableResult
    public func forward(_ inputs: [Tensor]) -> Tensor {
        precondition(inputs.count == vectors, "interaction of \(vectors) vectors given \(inputs.count)")
        let b = inputs[0].rows, d = dimension
        for t in inputs { precondition(t.rows == b && t.columns == d, "interaction inputs must all be \(b)×\(d)") }
        self.inputs = inputs
        output.resize(rows: b)
        forEachPart(of: b) { first, count in
            withPointers(inputs, offset: first, { UnsafePointer($0) }) { pointers in
                strata_interaction_forward(Int32(vectors), Int32(d), Int32(count), pointers,
                                           output.data + first * outputColumns, Int32(outputColumns))
            }
        }
        return output
    }

    /// From the gradient of the output, the gradients of every input.
    public func backward(_ dy: Tensor) {
        let b = inputs.first?.rows ?? 0, d = dimension
        precondition(dy.rows == b && dy.columns == outputColumns)
        for t in inputGradients { t.resize(rows: b) }
        forEachPart(of: b) { first, count in
            withPointers(inputs, offset: first, { UnsafePointer($0) }) { pointers in
                withPointers(inputGradients, offset: first, { $0 }) { gradients in
                    strata_interaction_backward(Int32(vectors), Int32(d), Int32(count), pointers,
                                                dy.data + first * outputColumns, Int32(outputColumns), gradients)
                }
            }
        }
    }

    /// Splits `batch` samples over the threads in whole 16-sample blocks.
    private func forEachPart(of batch: Int, _ body: (_ first: Int, _ count: Int) -> Void) {
        let blocks = (batch + 15) / 16, parts = batch >= 256 ? min(Parallel.threads, blocks) : 1
        Parallel.forEach(parts) { part in
            let first = blocks * part / parts * 16, last = min(batch, blocks * (part + 1) / parts * 16)
            if first < last { body(first, last - first) }
        }
    }

    /// The tensors' data pointers as a C array, without allocating per call for Criteo's 27.
    private func withPointers<P, R>(_ tensors: [Tensor], offset row: Int, _ pointer: (UnsafeMutablePointer<Float>) -> P,
                                    _ body: (UnsafePointer<P?>) -> R) -> R {
        withUnsafeTemporaryAllocation(of: P?.self, capacity: tensors.count) { buffer in
            for (i, t) in tensors.enumerated() { buffer[i] = pointer(t.data + row * t.columns) }
            return body(UnsafePointer(buffer.baseAddress!))
        }
    }
}
