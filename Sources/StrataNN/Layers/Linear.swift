import CStrataKernels

/// y = x · Wᵀ + b over any number of rows, W stored out × in as in PyTorch: the products of
/// every affine map of a layer (`Linear` and so `MLP`, the position-wise layers, attention's
/// projections), so that each computes them one way, with the same bits.
struct Affine {
    let inputs: Int
    let outputs: Int
    let weight: Parameter
    let bias: Parameter
    private let weightGradientTransposed: Tensor

    /// Parameters `\(name).weight` (`outputs × inputs`) and `\(name).bias` (`1 × outputs`).
    init(_ name: String, inputs: Int, outputs: Int) {
        self.inputs = inputs
        self.outputs = outputs
        weight = Parameter("\(name).weight", rows: outputs, columns: inputs)
        bias = Parameter("\(name).bias", rows: 1, columns: outputs)
        weightGradientTransposed = Tensor(rows: 0, columns: outputs)
    }

    /// y = x · Wᵀ + b for `rows` rows, or max(·, 0) with `relu` (fused into the product).
    func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, relu: Bool = false) {
        BLAS.gemm(false, true, m: rows, n: outputs, k: inputs, x, lda: inputs, weight.value.data, ldb: inputs,
                  y, ldc: outputs, bias: bias.value.data, relu: relu)
    }

    /// Sets the weight and bias gradients (overwriting them) from the input `x` and
    /// dL/d(x · Wᵀ + b), `rows` rows each.
    func parameterGradients(_ x: UnsafePointer<Float>, rows: Int, _ dy: UnsafePointer<Float>) {
        if inputs < 32 && outputs >= 32 {
            // A few inputs (13 dense features): the product's 32-column panels would be mostly
            // padding, so compute dWᵀ = xᵀ · dy and transpose it. Each element is the same sum in
            // the same order, so the bits are too.
            weightGradientTransposed.resize(rows: inputs)
            BLAS.gemm(true, false, m: inputs, n: outputs, k: rows, x, lda: inputs, dy, ldb: outputs,
                      beta: 0, weightGradientTransposed.data, ldc: outputs)
            let t = weightGradientTransposed.data, g = weight.gradient.data
            for i in 0..<inputs { for o in 0..<outputs { g[o * inputs + i] = t[i * outputs + o] } }
        } else {
            BLAS.gemm(true, false, m: outputs, n: inputs, k: rows, dy, lda: outputs, x, ldb: inputs,
                      beta: 0, weight.gradient.data, ldc: inputs)
        }
        strata_column_sums(dy, Int32(rows), Int32(outputs), bias.gradient.data)
    }

    /// dL/dx = dy · W into `dx` (`rows × inputs`), or added to it with `accumulate`; with `mask`
    /// (the input itself, a ReLU's output) kept only where the mask is > 0: ReLU's backward,
    /// fused into the product.
    func inputGradient(_ dy: UnsafePointer<Float>, rows: Int, into dx: UnsafeMutablePointer<Float>, accumulate: Bool = false,
                       mask: UnsafePointer<Float>? = nil) {
        BLAS.gemm(false, false, m: rows, n: inputs, k: outputs, dy, lda: outputs, weight.value.data, ldb: inputs,
                  beta: accumulate ? 1 : 0, dx, ldc: inputs, mask: mask, ldm: inputs)
    }
}

/// y = f(x · Wᵀ + b), with W stored out × in as in PyTorch and f an activation (ReLU fused
/// into the product).
public final class Linear: Layer {
    public var inputs: Int { map.inputs }
    public var outputs: Int { map.outputs }
    public let activation: Activation
    public var weight: Parameter { map.weight }
    public var bias: Parameter { map.bias }
    let map: Affine
    /// dL/d(x · Wᵀ + b), when the activation is not the identity.
    private let preActivationGradient: Tensor

    public init(_ name: String, inputs: Int, outputs: Int, activation: Activation = .identity) {
        precondition(inputs >= 1 && outputs >= 1, "a linear layer needs an input and an output")
        self.activation = activation
        map = Affine(name, inputs: inputs, outputs: outputs)
        preActivationGradient = Tensor(rows: 0, columns: outputs)
    }

    public var parameters: [Parameter] { [weight, bias] }

    public func outputColumns(for inputColumns: [Int]) -> Int? { inputColumns == [inputs] ? outputs : nil }

    /// DLRM's initialization: W ~ N(0, sqrt(2 / (in + out))), b ~ N(0, sqrt(1 / out)).
    public func initialize(_ w: inout WeightInitializer) {
        w.normal(weight, standardDeviation: (2.0 / Double(inputs + outputs)).squareRoot())
        w.normal(bias, standardDeviation: (1.0 / Double(outputs)).squareRoot())
    }

    public func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass) {
        forward(inputs[0], into: output, relu: activation == .relu)
        if activation != .relu && activation != .identity {
            activation.forward(output.data, output.data, count: output.count)
        }
    }

    public func backward(_ inputs: [Tensor], output: Tensor, outputGradient dy: Tensor, inputGradients: [Tensor?], _ pass: Pass) {
        var g = dy
        if activation != .identity {
            preActivationGradient.resize(rows: dy.rows)
            activation.backward(output: output.data, dy.data, preActivationGradient.data, count: dy.count)
            g = preActivationGradient
        }
        backward(inputs[0], g, inputGradient: inputGradients[0])
    }

    // MARK: The products, for this layer and for `MLP`

    /// y = x · Wᵀ + b into `y`, or max(y, 0) with `relu` (fused into the product).
    func forward(_ x: Tensor, into y: Tensor, relu: Bool) {
        precondition(x.columns == inputs && y.columns == outputs && y.rows == x.rows)
        map.forward(x.data, rows: x.rows, into: y.data, relu: relu)
    }

    /// Sets the weight and bias gradients from dL/d(x · Wᵀ + b) (overwriting them) and, if
    /// given, writes the input gradient into `inputGradient`; with `inputMask` (the input itself,
    /// a ReLU's output) it is kept only where the mask is > 0: ReLU's backward, fused into the
    /// product.
    func backward(_ x: Tensor, _ dy: Tensor, inputGradient: Tensor?, inputMask: Tensor? = nil) {
        map.parameterGradients(x.data, rows: x.rows, dy.data)
        if let dx = inputGradient {
            precondition(dx.rows == x.rows && dx.columns == inputs)
            if let inputMask { precondition(inputMask.rows == x.rows && inputMask.columns == inputs) }
            map.inputGradient(dy.data, rows: x.rows, into: dx.data, mask: inputMask.map { UnsafePointer($0.data) })
        }
    }
}

/// Linear layers, each followed by an activation (and, in training, dropout after every
/// hidden one): DLRM's bottom and top MLPs, the towers of the other models.
public final class MLP: Layer {
    public let layers: [Linear]
    public let activations: [Activation]
    /// Dropout after each hidden layer's activation (not after the last layer).
    public let dropout: Float
    /// Each layer's activated output (the last one goes to the graph's output tensor).
    private let activated: [Tensor]
    /// The dropped-out hidden outputs, the next layer's inputs, when dropping.
    private let dropped: [Tensor]
    private let gradients: [Tensor]

    /// `sizes` from input to output (13-512-256-64-16 is four layers); `activations` one per
    /// layer.
    public init(_ name: String, sizes: [Int], activations: [Activation], dropout: Float = 0) {
        precondition(sizes.count >= 2 && activations.count == sizes.count - 1, "an MLP needs sizes and one activation per layer")
        precondition(dropout >= 0 && dropout < 1, "dropout is a probability below 1")
        layers = (0..<(sizes.count - 1)).map { Linear("\(name).\($0)", inputs: sizes[$0], outputs: sizes[$0 + 1]) }
        self.activations = activations
        self.dropout = dropout
        activated = sizes.dropFirst().map { Tensor(rows: 0, columns: $0) }
        dropped = sizes.dropFirst().map { Tensor(rows: 0, columns: $0) }
        gradients = sizes.dropFirst().map { Tensor(rows: 0, columns: $0) }
    }

    /// Hidden layers with ReLU and a last layer with `last`: the usual tower.
    public convenience init(_ name: String, sizes: [Int], last: Activation = .identity, dropout: Float = 0) {
        self.init(name, sizes: sizes, activations: Array(repeating: .relu, count: sizes.count - 2) + [last], dropout: dropout)
    }

    public var parameters: [Parameter] { layers.flatMap(\.parameters) }
    /// Hidden layer i's activated output of the last forward (before dropout), for
    /// inspection; the last layer's is the graph's output.
    public func hiddenOutput(_ i: Int) -> Tensor {
        precondition(i < layers.count - 1, "layer \(i) is not hidden")
        return activated[i]
    }
    public var inputs: Int { layers[0].inputs }
    public var outputs: Int { layers.last!.outputs }

    public func outputColumns(for inputColumns: [Int]) -> Int? { inputColumns == [inputs] ? outputs : nil }

    public func initialize(_ w: inout WeightInitializer) { for l in layers { l.initialize(&w) } }

    private func dropping(_ pass: Pass) -> Bool { pass.training && dropout > 0 }

    public func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass) {
        var h = inputs[0]
        let last = layers.count - 1
        for (i, layer) in layers.enumerated() {
            let z = i == last ? output : activated[i]
            z.resize(rows: h.rows)
            layer.forward(h, into: z, relu: activations[i] == .relu)
            if activations[i] != .relu { activations[i].forward(z.data, z.data, count: z.count) }
            h = z
            if i < last && dropping(pass) {
                dropped[i].resize(rows: z.rows)
                DropoutMask(rate: dropout, pass: pass, stream: UInt64(i), count: z.count).apply(z.data, dropped[i].data, count: z.count)
                h = dropped[i]
            }
        }
    }

    public func backward(_ inputs: [Tensor], output: Tensor, outputGradient dy: Tensor, inputGradients: [Tensor?], _ pass: Pass) {
        let last = layers.count - 1
        let drop = dropping(pass)
        func out(_ i: Int) -> Tensor { i == last ? output : activated[i] }
        func input(_ i: Int) -> Tensor { i == 0 ? inputs[0] : drop ? dropped[i - 1] : activated[i - 1] }
        var g = dy
        var masked = false  // g already went through this layer's ReLU (in the layer above's product)
        for i in stride(from: last, through: 0, by: -1) {
            if !masked && activations[i] != .identity {
                gradients[i].resize(rows: g.rows)
                activations[i].backward(output: out(i).data, g.data, gradients[i].data, count: g.count)
                g = gradients[i]
            }
            let target: Tensor?
            var mask: Tensor? = nil
            if i == 0 {
                target = inputGradients[0]
            } else {
                target = gradients[i - 1]
                target!.resize(rows: g.rows)
                // ReLU's backward fused into the product: its output (after dropout, which
                // zeroes exactly where it dropped) is > 0 exactly where the gradient passes.
                if activations[i - 1] == .relu { mask = input(i) }
            }
            layers[i].backward(input(i), g, inputGradient: target, inputMask: mask)
            guard let target, i > 0 else { break }
            if drop {
                // The kept values' gradients are scaled like the values were.
                DropoutMask(rate: dropout, pass: pass, stream: UInt64(i - 1), count: target.count)
                    .apply(target.data, target.data, count: target.count)
            }
            g = target
            masked = mask != nil
        }
    }
}
