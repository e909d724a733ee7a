// Dense parameters, their gradients and their optimizer state, and the one way they are
// saved and restored (inside a store checkpoint's payload).
import StrataStore
#if canImport(Glibc)
import Glibc
#endif

/// A trainable tensor with its gradient and its optimizer's state.
public final class Parameter {
    public let name: String
    public let value: Tensor
    public let gradient: Tensor
    /// Optimizer state, as many tensors of the same shape as the optimizer needs.
    public internal(set) var state: [Tensor] = []

    public init(_ name: String, rows: Int, columns: Int) {
        self.name = name
        value = Tensor(rows: rows, columns: columns)
        gradient = Tensor(rows: rows, columns: columns)
    }
}

/// Draws initial weights, deterministically from a seed.
public struct WeightInitializer {
    private var rng: SplitMix64

    public init(seed: UInt64) { rng = SplitMix64(seed: seed) }

    /// Normal(0, std) into every value.
    public mutating func normal(_ p: Parameter, standardDeviation std: Double) {
        for i in 0..<p.value.count { p.value.data[i] = Float(gaussian() * std) }
    }

    /// Uniform(-bound, bound) into every value.
    public mutating func uniform(_ p: Parameter, bound: Double) {
        for i in 0..<p.value.count {
            p.value.data[i] = Float((Double(rng.next() >> 11) * 0x1p-53 * 2 - 1) * bound)
        }
    }

    private mutating func gaussian() -> Double {
        let u1 = (Double(rng.next() >> 11) + 1) * 0x1p-53
        let u2 = Double(rng.next() >> 11) * 0x1p-53
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
}

/// An optimizer for dense parameters. `step` applies the gradients now in the parameters.
public enum DenseOptimizer: Sendable, Codable, Equatable {
    case sgd(learningRate: Float)
    case adagrad(learningRate: Float, epsilon: Float = 1e-10, initialAccumulator: Float = 0)
    case adam(learningRate: Float, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8)

    public var name: String {
        switch self {
        case .sgd: "sgd"
        case .adagrad: "adagrad"
        case .adam: "adam"
        }
    }

    var stateTensors: Int {
        switch self {
        case .sgd: 0
        case .adagrad: 1
        case .adam: 2
        }
    }

    /// Gives each parameter the state this optimizer needs (idempotent).
    public func prepare(_ parameters: [Parameter]) {
        for p in parameters where p.state.count != stateTensors {
            p.state = (0..<stateTensors).map { _ in Tensor(rows: p.value.rows, columns: p.value.columns) }
            if case .adagrad(_, _, let a) = self { p.state[0].data.update(repeating: a, count: p.value.count) }
        }
    }

    /// One step for every parameter; `step` counts steps including this one (Adam's bias
    /// correction).
    public func step(_ parameters: [Parameter], step t: Int) {
        prepare(parameters)
        for p in parameters {
            let w = p.value.data, g = p.gradient.data, n = p.value.count
            switch self {
            case .sgd(let lr):
                for i in 0..<n { w[i] -= lr * g[i] }
            case .adagrad(let lr, let eps, _):
                let a = p.state[0].data
                for i in 0..<n {
                    a[i] += g[i] * g[i]
                    w[i] -= lr * g[i] / (a[i].squareRoot() + eps)
                }
            case .adam(let lr, let b1, let b2, let eps):
                let m = p.state[0].data, v = p.state[1].data
                let c1 = 1 - powf(b1, Float(t)), c2 = 1 - powf(b2, Float(t))
                for i in 0..<n {
                    m[i] = b1 * m[i] + (1 - b1) * g[i]
                    v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
                    w[i] -= lr * (m[i] / c1) / ((v[i] / c2).squareRoot() + eps)
                }
            }
        }
    }
}

/// Saving and restoring parameters (values and optimizer state) as bytes.
///
///   "SPRM" | version u32 | count u32 | per parameter: name length u32, name UTF-8,
///   rows u32, columns u32, state tensors u32, then values and each state tensor as float32
public enum ParameterArchive {
    public enum Problem: Error, CustomStringConvertible {
        case malformed(String)
        case mismatch(String)
        public var description: String {
            switch self {
            case .malformed(let s): "dense state archive: \(s)"
            case .mismatch(let s): "dense state does not fit this model: \(s)"
            }
        }
    }

    public static func encode(_ parameters: [Parameter]) -> [UInt8] {
        var out: [UInt8] = Array("SPRM".utf8)
        func u32(_ v: Int) { withUnsafeBytes(of: UInt32(v).littleEndian) { out += $0 } }
        func floats(_ t: Tensor) { out += UnsafeRawBufferPointer(start: t.data, count: t.count * 4) }
        u32(1)
        u32(parameters.count)
        for p in parameters {
            let name = Array(p.name.utf8)
            u32(name.count)
            out += name
            u32(p.value.rows)
            u32(p.value.columns)
            u32(p.state.count)
            floats(p.value)
            for s in p.state { floats(s) }
        }
        return out
    }

    /// Restores values and state into parameters of the same names and shapes. Reads the
    /// whole archive first: on any error no parameter has changed.
    public static func decode(_ bytes: ArraySlice<UInt8>, into parameters: [Parameter]) throws(Problem) {
        var at = bytes.startIndex
        func take(_ n: Int) throws(Problem) -> ArraySlice<UInt8> {
            guard n >= 0, bytes.endIndex - at >= n else { throw .malformed("ends early") }
            defer { at += n }
            return bytes[at..<(at + n)]
        }
        func u32() throws(Problem) -> Int {
            let b = try take(4)
            return Int(UInt32(b[b.startIndex]) | UInt32(b[b.startIndex + 1]) << 8 | UInt32(b[b.startIndex + 2]) << 16
                | UInt32(b[b.startIndex + 3]) << 24)
        }
        guard Array(try take(4)) == Array("SPRM".utf8) else { throw .malformed("not a parameter archive") }
        guard try u32() == 1 else { throw .malformed("unknown version") }
        let count = try u32()
        guard count == parameters.count else { throw .mismatch("\(count) parameters saved, the model has \(parameters.count)") }
        // Where each parameter's value and state tensors lie in `bytes`.
        var found: [(value: Int, states: [Int])] = []
        for p in parameters {
            let name = String(decoding: try take(try u32()), as: UTF8.self)
            let rows = try u32(), columns = try u32(), states = try u32()
            guard name == p.name, rows == p.value.rows, columns == p.value.columns else {
                throw .mismatch("saved \(name) \(rows)×\(columns), the model has \(p.name) \(p.value.rows)×\(p.value.columns)")
            }
            let n = 4 * rows * columns
            let value = at
            _ = try take(n)
            var offsets: [Int] = []
            for _ in 0..<states {
                offsets.append(at)
                _ = try take(n)
            }
            found.append((value, offsets))
        }
        guard at == bytes.endIndex else { throw .malformed("\(bytes.endIndex - at) bytes left over") }
        for (p, place) in zip(parameters, found) {
            let n = p.value.count
            func load(_ t: Tensor, from offset: Int) {
                bytes[offset..<(offset + 4 * n)].withUnsafeBytes {
                    UnsafeMutableRawPointer(t.data).copyMemory(from: $0.baseAddress!, byteCount: 4 * n)
                }
            }
            load(p.value, from: place.value)
            p.state = place.states.map { offset in
                let t = Tensor(rows: p.value.rows, columns: p.value.columns)
                load(t, from: offset)
                return t
            }
        }
    }
}
