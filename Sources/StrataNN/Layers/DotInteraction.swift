// DLRM's feature interaction: for each sample, the pairwise dot products of its vectors,
// strictly below the diagonal of their Gram matrix (pair (i, j) for j < i, in order of i then
// j, as in facebookresearch/dlrm with self-interaction off), after the first vector itself
// when `passthrough` (the bottom MLP's output, in DLRM).
//
// The work is `strata_interaction_forward` / `_backward` (CStrataKernels), which take sixteen
// samples at a time so that every product runs across samples in one vector register; the
// batch is split over `Parallel.threads`.
import CStrataKernels

public final class DotInteraction: Layer {
    /// Vectors per sample (inputs of the layer).
    public let vectors: Int
    public let dimension: Int
    /// Whether the first input is copied to the front of the output.
    public let passthrough: Bool
    public var pairs: Int { vectors * (vectors - 1) / 2 }
    public var outputColumns: Int { (passthrough ? dimension : 0) + pairs }

    public init(vectors: Int, dimension: Int, passthrough: Bool = true) {
        precondition(vectors >= 2 && dimension >= 1)
        self.vectors = vectors
        self.dimension = dimension
        self.passthrough = passthrough
    }

    public func outputColumns(for inputColumns: [Int]) -> Int? {
        inputColumns.count == vectors && inputColumns.allSatisfy { $0 == dimension } ? outputColumns : nil
    }

    public func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass) {
        let b = output.rows, d = dimension, ldo = outputColumns, first = Int32(passthrough ? 1 : 0)
        forEachPart(of: b) { start, count in
            withPointers(inputs, offset: start, { UnsafePointer($0) }) { pointers in
                strata_interaction_forward(Int32(vectors), Int32(d), Int32(count), pointers, first,
                                           output.data + start * ldo, Int32(ldo))
            }
        }
    }

    public func backward(_ inputs: [Tensor], output: Tensor, outputGradient dy: Tensor, inputGradients: [Tensor?], _ pass: Pass) {
        let b = output.rows, d = dimension, ldo = outputColumns, first = Int32(passthrough ? 1 : 0)
        // The kernel writes every input's gradient; inputs that want none get scratch.
        for (i, g) in inputGradients.enumerated() where g == nil { scratch(i, rows: b) }
        forEachPart(of: b) { start, count in
            withPointers(inputs, offset: start, { UnsafePointer($0) }) { pointers in
                withPointers(inputGradients, offset: start) { gradients in
                    strata_interaction_backward(Int32(vectors), Int32(d), Int32(count), pointers, first,
                                                dy.data + start * ldo, Int32(ldo), gradients)
                }
            }
        }
    }

    /// Stand-ins for the gradients of inputs that want none.
    private var scratch: [Tensor?] = []

    private func scratch(_ i: Int, rows: Int) {
        if scratch.count <= i { scratch += [Tensor?](repeating: nil, count: i + 1 - scratch.count) }
        if scratch[i] == nil { scratch[i] = Tensor(rows: 0, columns: dimension) }
        scratch[i]!.resize(rows: rows)
    }

    /// Splits `batch` samples over the threads in whole 16-sample blocks.
    private func forEachPart(of batch: Int, _ body: (_ first: Int, _ count: Int) -> Void) {
        let blocks = (batch + 15) / 16, parts = batch >= 256 ? min(Parallel.threads, blocks) : 1
        Parallel.forEach(parts) { part in
            let first = blocks * part / parts * 16, last = min(batch, blocks * (part + 1) / parts * 16)
            if first < last { body(first, last - first) }
        }
    }

    /// The gradient tensors' data pointers (scratch where nil) as a C array.
    private func withPointers<R>(_ tensors: [Tensor?], offset row: Int, _ body: (UnsafePointer<UnsafeMutablePointer<Float>?>) -> R) -> R {
        withUnsafeTemporaryAllocation(of: UnsafeMutablePointer<Float>?.self, capacity: tensors.count) { buffer in
            for (i, t) in tensors.enumerated() {
                let tensor = t ?? scratch[i]!
                buffer[i] = tensor.data + row * tensor.columns
            }
            return body(UnsafePointer(buffer.baseAddress!))
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
