import CStrataKernels

/// y = x · Wᵀ + b, with W stored out × in as in PyTorch.
public final class Linear {
    public let inputs: Int
    public let outputs: Int
    public let weight: Parameter
    public let bias: Parameter
    public let output: Tensor
    /// Gradient with respect to the input, when asked for.
    public let inputGradient: Tensor
    private var input: Tensor?
    private let weightGradientTransposed: Tensor

    public init(_ name: String, inputs: Int, outputs: Int) {
        self.inputs = inputs
        self.outputs = outputs
        weight = Parameter("\(name).weight", rows: outputs, columns: inputs)
        bias = Parameter("\(name).bias", rows: 1, columns: outputs)
        output = Tensor(rows: 0, columns: outputs)
        inputGradient = Tensor(rows: 0, columns: inputs)
        weightGradientTransposed = Tensor(rows: 0, columns: outputs)
    }

    public var parameters: [Parameter] { [weight, bias] }

    /// DLRM's initialization: W ~ N(0, sqrt(2 / (in + out))), b ~ N(0, sqrt(1 / out)).
    public func initialize(_ w: inout WeightInitializer) {
        w.normal(weight, standardDeviation: (2.0 / Double(inputs + outputs)).squareRoot())
        w.normal(bias, standardDeviation: (1.0 / Double(outputs)).squareRoot())
    }

    /// y = x · Wᵀ + b, or max(y, 0) with `relu` (fused into the product).
    @discardableResult
    public func forward(_ x: Tensor, relu: Bool = false) -> Tensor {
        precondition(x.columns == inputs, "linear layer of \(inputs) inputs given \(x.columns)")
        input = x
        let b = x.rows
        output.resize(rows: b)
        BLAS.gemm(false, true, m: b, n: outputs, k: inputs, x.data, lda: inputs, weight.value.data, ldb: inputs,
                  output.data, ldc: outputs, bias: bias.value.data, relu: relu)
        return output
    }

    /// Sets the weight and bias gradients from `dy` (overwriting them) and, if asked, the
    /// input gradient; with `inputMask` (the input itself, a ReLU's output) the input gradient
    /// is kept only where the mask is > 0: ReLU's backward, fused into the product.
    public func backward(_ dy: Tensor, needInputGradient: Bool = true, inputMask: Tensor? = nil) {
        guard let x = input else { preconditionFailure("backward before forward") }
        let b = x.rows
        if inputs < 32 && outputs >= 32 {
            // A few inputs (13 dense features): the product's 32-column panels would be mostly
            // padding, so compute dWᵀ = xᵀ · dy and transpose it. Each element is the same sum in
            // the same order, so the bits are too.
            weightGradientTransposed.resize(rows: inputs)
            BLAS.gemm(true, false, m: inputs, n: outputs, k: b, x.data, lda: inputs, dy.data, ldb: outputs,
                      beta: 0, weightGradientTransposed.data, ldc: outputs)
            let t = weightGradientTransposed.data, g = weight.gradient.data
            for i in 0..<inputs { for o in 0..<outputs { g[o * inputs + i] = t[i * outputs + o] } }
        } else {
            BLAS.gemm(true, false, m: outputs, n: inputs, k: b, dy.data, lda: outputs, x.data, ldb: inputs,
                      beta: 0, weight.gradient.data, ldc: inputs)
        }
        strata_column_sums(dy.data, Int32(b), Int32(outputs), bias.gradient.data)
        if needInputGradient {
            inputGradient.resize(rows: b)
            if let inputMask { precondition(inputMask.rows == b && inputMask.columns == inputs) }
            BLAS.gemm(false, false, m: b, n: inputs, k: outputs, dy.data, lda: outputs, weight.value.data, ldb: inputs,
                      beta: 0, inputGradient.data, ldc: inputs, mask: inputMask.map { UnsafePointer($0.data) }, ldm: inputs)
        }
    }
}

/// Linear layers, each followed by an activation: DLRM's bottom and top MLPs.
public final class MLP {
    public let layers: [Linear]
    public let activations: [Activation]
    private let activated: [Tensor]
    private let gradients: [Tensor]

    /// `sizes` from input to output (13-512-256-64-16 is four layers); `activations` one per
    /// layer.
    public init(_ name: String, sizes: [Int], activations: [Activation]) {
        precondition(sizes.count >= 2 && activations.count == sizes.count - 1, "an MLP needs sizes and one activation per layer")
        layers = (0..<(sizes.count - 1)).map { Linear("\(name).\($0)", inputs: sizes[$0], outputs: sizes[$0 + 1]) }
        self.activations = activations
        activated = sizes.dropFirst().map { Tensor(rows: 0, columns: $0) }
        gradients = sizes.dropFirst().map { Tensor(rows: 0, columns: $0) }
    }

    public var parameters: [Parameter] { layers.flatMap(\.parameters) }
    public var inputs: Int { layers[0].inputs }
    public var outputs: Int { layers.last!.outputs }

    public func initialize(_ w: inout WeightInitializer) { for l in layers { l.initialize(&w) } }

    @discardableResult
    public func forward(_ x: Tensor) -> Tensor {
        var h = x
        for (i, layer) in layers.enumerated() {
            if activations[i] == .relu {
                h = layer.forward(h, relu: true)
                continue
            }
            let z = layer.forward(h)
            activated[i].resize(rows: z.rows)
            activations[i].forward(z.data, activated[i].data, count: z.count)
            h = activated[i]
        }
        return h
    }

    /// Layer i's activated output (ReLU's is the layer's own output: it is fused).
    private func output(_ i: Int) -> Tensor { activations[i] == .relu ? layers[i].output : activated[i] }

    /// Backward from the gradient of the output; returns the input gradient if asked.
    @discardableResult
    public func backward(_ dy: Tensor, needInputGradient: Bool = true) -> Tensor? {
        var g = dy
        var masked = false  // g already went through this layer's ReLU (in the layer above's product)
        for i in stride(from: layers.count - 1, through: 0, by: -1) {
            if !masked {
                gradients[i].resize(rows: g.rows)
                activations[i].backward(output: output(i).data, g.data, gradients[i].data, count: g.count)
                g = gradients[i]
            }
            let first = i == 0
            let mask = !first && activations[i - 1] == .relu ? output(i - 1) : nil
            layers[i].backward(g, needInputGradient: !first || needInputGradient, inputMask: mask)
            g = layers[i].inputGradient
            masked = mask != nil
        }
        return needInputGradient ? layers[0].inputGradient : nil
    }
}
