// A static graph of layers: built once, then run forward and backward every step.
//
// Nodes are added in an order where every input comes before its consumer, so that order is
// the forward order and its reverse the backward order. Backward is automatic: each layer
// writes the gradients of its own inputs; where a value feeds several consumers the graph
// gives each its own gradient tensor and sums them in consumer order (a fixed order, so the
// bits do not depend on anything but the graph). Branches that reach nothing trainable are
// skipped.

/// An error in a graph's construction: inputs whose widths do not fit a layer. (Adding one
/// layer twice is a programmer's error, and traps.)
public struct GraphError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public final class Graph {
    /// A value in the graph: the output of a node. `columns` is its width.
    public struct Value: Hashable, Sendable {
        public let node: Int
        public let columns: Int
        /// The graph it belongs to: a value of another graph is no input here.
        let graph: ObjectIdentifier
    }

    private final class Node {
        let name: String
        let layer: (any Layer)?
        let inputs: [Int]
        /// A layer's output, owned by the graph; an input's, owned by whoever feeds it.
        let output: Tensor
        /// dL/d(output), during backward.
        let gradient: Tensor
        /// Inputs: whether anything upstream wants their gradient (embedding outputs do;
        /// dense features do not). Layers: whether backward must run at all.
        var needsGradient: Bool
        /// One gradient per consumer edge when there are several, summed into `gradient`.
        var edgeGradients: [Tensor] = []
        var consumers = 0
        /// The arguments of `forward` and `backward`, built once.
        var inputTensors: [Tensor] = []
        var inputGradients: [Tensor?] = []
        /// Whether `gradient` holds this pass's value.
        var hasGradient = false

        init(name: String, layer: (any Layer)?, inputs: [Int], output: Tensor, needsGradient: Bool) {
            self.name = name
            self.layer = layer
            self.inputs = inputs
            self.output = output
            gradient = Tensor(rows: 0, columns: output.columns)
            self.needsGradient = needsGradient
        }
    }

    private var nodes: [Node] = []
    private var sealed = false
    private var rows = 0

    public init() {}

    /// A value fed from outside: `tensor` is read as it is at each `forward` (its owner fills
    /// it with the batch's rows first). With `trainable`, backward computes its gradient,
    /// which `gradient(of:)` then gives.
    public func input(_ name: String, _ tensor: Tensor, trainable: Bool) -> Value {
        precondition(!sealed, "the graph already ran: add inputs before the first forward")
        nodes.append(Node(name: name, layer: nil, inputs: [], output: tensor, needsGradient: trainable))
        return Value(node: nodes.count - 1, columns: tensor.columns, graph: ObjectIdentifier(self))
    }

    /// Adds `layer` applied to `inputs`; its parameters are named by the layer. Throws if the
    /// inputs' widths do not fit the layer.
    public func add(_ name: String, _ layer: any Layer, _ inputs: [Value]) throws(GraphError) -> Value {
        precondition(!sealed, "the graph already ran: add layers before the first forward")
        precondition(!nodes.contains { $0.layer === layer }, "layer \(name) added twice")
        precondition(inputs.allSatisfy { $0.graph == ObjectIdentifier(self) && $0.node < nodes.count }, "an input of \(name) is not in this graph")
        let widths = inputs.map(\.columns)
        guard let columns = layer.outputColumns(for: widths), columns > 0 else {
            throw GraphError("layer \(name) does not take inputs of \(widths.map(String.init).joined(separator: ", ")) columns")
        }
        let trainable = !layer.parameters.isEmpty || inputs.contains { nodes[$0.node].needsGradient }
        nodes.append(Node(name: name, layer: layer, inputs: inputs.map(\.node), output: Tensor(rows: 0, columns: columns),
                          needsGradient: trainable))
        return Value(node: nodes.count - 1, columns: columns, graph: ObjectIdentifier(self))
    }

    /// Every layer's parameters, in graph order.
    public var parameters: [Parameter] { nodes.flatMap { $0.layer?.parameters ?? [] } }

    /// Initializes every layer's parameters from one generator, in graph order.
    public func initialize(seed: UInt64) {
        var w = WeightInitializer(seed: seed)
        for node in nodes { node.layer?.initialize(&w) }
    }

    /// The layer added under `name` and its output tensor, for inspection.
    public func layer(named name: String) -> (layer: any Layer, output: Tensor)? {
        guard let node = nodes.first(where: { $0.name == name }), let layer = node.layer else { return nil }
        return (layer, node.output)
    }

    /// The value's tensor after `forward`.
    public func tensor(_ value: Value) -> Tensor {
        precondition(value.graph == ObjectIdentifier(self), "a value of another graph")
        return nodes[value.node].output
    }

    /// dL/d(value) after `backward`, for a trainable input or any layer's output (zeros if
    /// nothing downstream reached it).
    public func gradient(of value: Value) -> Tensor {
        precondition(value.graph == ObjectIdentifier(self), "a value of another graph")
        let node = nodes[value.node]
        if !node.hasGradient {
            node.gradient.resize(rows: rows)
            node.gradient.zero()
        }
        return node.gradient
    }

    /// Runs every layer in graph order on inputs of `rows` rows (every input tensor must hold
    /// that many).
    public func forward(rows: Int, _ pass: Pass) {
        seal()
        self.rows = rows
        var pass = pass
        for (i, node) in nodes.enumerated() {
            guard let layer = node.layer else {
                precondition(node.output.rows == rows, "input \(node.name) holds \(node.output.rows) rows, the batch \(rows)")
                continue
            }
            node.output.resize(rows: rows)
            pass.node = i
            layer.forward(node.inputTensors, into: node.output, pass)
        }
    }

    /// Backward from the gradients of some values (usually the model's output: dL/d(logits)),
    /// after `forward`. Overwrites every parameter's gradient. A seeded value must be an
    /// output: nothing in the graph may consume it (its gradient would come from both).
    public func backward(_ seeds: [(value: Value, gradient: Tensor)], _ pass: Pass) {
        precondition(sealed, "backward before forward")
        for node in nodes { node.hasGradient = false }
        for (value, g) in seeds {
            let node = nodes[value.node]
            precondition(node.consumers == 0, "seeded value \(node.name) is consumed by other layers; seed outputs only")
            precondition(g.rows == rows && g.columns == node.output.columns, "seed gradient of \(node.name) has the wrong shape")
            node.gradient.copy(from: g)
            node.hasGradient = true
        }
        var pass = pass
        for i in stride(from: nodes.count - 1, through: 0, by: -1) {
            let node = nodes[i]
            gatherGradient(node)
            guard let layer = node.layer, node.needsGradient else { continue }
            guard node.hasGradient else {
                // Nothing downstream used this value: no gradient for its parameters, and
                // zeros for its inputs (another consumer of theirs may have written theirs).
                for p in layer.parameters { p.gradient.zero() }
                for case let g? in node.inputGradients {
                    g.resize(rows: rows)
                    g.zero()
                }
                continue
            }
            for (slot, producer) in node.inputs.enumerated() where node.inputGradients[slot] != nil {
                node.inputGradients[slot]!.resize(rows: rows)
                nodes[producer].hasGradient = true
            }
            pass.node = i
            layer.backward(node.inputTensors, output: node.output, outputGradient: node.gradient,
                           inputGradients: node.inputGradients, pass)
        }
    }

    /// Sums the gradients of a value's consumer edges into its gradient (when it has more
    /// than one consumer; with one, the consumer wrote it directly).
    private func gatherGradient(_ node: Node) {
        guard node.edgeGradients.count > 1, node.hasGradient else { return }
        node.gradient.resize(rows: rows)
        let n = rows * node.output.columns
        let out = node.gradient.data
        out.update(from: node.edgeGradients[0].data, count: n)
        for e in node.edgeGradients.dropFirst() {
            let g = e.data
            for j in 0..<n { out[j] += g[j] }
        }
    }

    /// Builds the argument lists once the graph is complete.
    private func seal() {
        guard !sealed else { return }
        sealed = true
        for node in nodes { for p in node.inputs { nodes[p].consumers += 1 } }
        for node in nodes where node.consumers > 1 && node.needsGradient {
            node.edgeGradients = (0..<node.consumers).map { _ in Tensor(rows: 0, columns: node.output.columns) }
        }
        var edgeUsed = [Int](repeating: 0, count: nodes.count)
        for node in nodes {
            node.inputTensors = node.inputs.map { nodes[$0].output }
            node.inputGradients = node.inputs.map { p in
                let producer = nodes[p]
                guard producer.needsGradient else { return nil }
                if producer.consumers == 1 { return producer.gradient }
                defer { edgeUsed[p] += 1 }
                return producer.edgeGradients[edgeUsed[p]]
            }
        }
    }
}
