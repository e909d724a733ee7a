// The contract every dense layer keeps, so that a `Graph` can run any composition of them
// forward and backward without a model wiring gradients by hand.

/// What a layer needs to know about the step it runs in, besides its inputs.
public struct Pass: Sendable {
    /// Training (dropout drops) or inference (everything deterministic, nothing drawn).
    public var training: Bool
    /// The training step, counted from 1: with `seed` and `node` it names every random
    /// number a layer draws, so a resumed run draws the same ones with no state saved.
    public var step: UInt64
    public var seed: UInt64
    /// The layer's place in its graph, set by the graph before each call.
    public var node: Int
    /// Where these rows stand in the whole batch, when they are one process's part of it
    /// (`rows` of its `firstRow ..< firstRow + rows`): what a row draws is named by its row in
    /// the whole batch, so every process draws for its rows what one process training the whole
    /// batch would. Rows 0 ..< rows of a batch of their own by default.
    public var firstRow: Int
    public var rows: Int

    public init(training: Bool, step: UInt64 = 0, seed: UInt64 = 0, node: Int = 0, firstRow: Int = 0, rows: Int = 0) {
        self.training = training
        self.step = step
        self.seed = seed
        self.node = node
        self.firstRow = firstRow
        self.rows = rows
    }
}

/// A differentiable function of one or more row-aligned matrices: input i is
/// `rows × inputColumns[i]`, the output `rows × outputColumns`, and row r of the output depends
/// only on row r of the inputs (samples are independent), so a batch of any size runs.
///
/// The graph owns the output and gradient tensors and sizes them to the batch before each
/// call. A layer keeps whatever else it needs between `forward` and `backward` (the graph calls
/// `backward` only after `forward` on the same inputs). Calls allocate nothing once a layer has
/// seen its largest batch.
public protocol Layer: AnyObject {
    /// The output's columns for inputs of these column counts, or nil if they do not fit
    /// (the graph turns nil into an error naming the layer and the shapes).
    func outputColumns(for inputColumns: [Int]) -> Int?

    /// The trainable parameters; each belongs to this layer alone.
    var parameters: [Parameter] { get }

    /// Draws the initial parameter values. Called once, in graph order, from one seeded
    /// generator: the same seed gives the same weights.
    func initialize(_ w: inout WeightInitializer)

    /// Writes the output of `inputs` into `output` (already `rows × outputColumns`).
    func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass)

    /// From dL/d(output), overwrites every parameter's gradient and writes dL/d(input i) into
    /// `inputGradients[i]` (already sized like input i) where it is not nil.
    func backward(_ inputs: [Tensor], output: Tensor, outputGradient: Tensor, inputGradients: [Tensor?], _ pass: Pass)
}

extension Layer {
    public var parameters: [Parameter] { [] }
    public func initialize(_ w: inout WeightInitializer) {}
}
