// Dense parameters, their gradients and their optimizer state, and the one way they are
// saved and restored (inside a store checkpoint's payload).
public import StrataStore
#if canImport(Glibc)
import Glibc
#endif

/// A trainable tensor with its gradient and its optimizer's state.
public final class Parameter {
    public let name: String
    public let value: Tensor
    public let gradient: Tensor
    /// The optimizer's state: `Optimizer.stateCount(dimension: value.count)` floats in one
    /// row (Adam: m, then v), or nil when it keeps none.
    public internal(set) var state: Tensor?

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

extension Optimizer {
    /// Gives each parameter the state this optimizer keeps (idempotent): the dense step runs
    /// the store's per-row arithmetic (`Optimizer.apply`) with the whole parameter as one row.
    public func prepare(_ parameters: [Parameter]) {
        for p in parameters {
            let count = stateCount(dimension: p.value.count)
            guard (p.state?.count ?? 0) != count else { continue }
            p.state = count == 0 ? nil : Tensor(rows: 1, columns: count)
            if let state = p.state { initializeState(state.data, dimension: p.value.count) }
        }
    }

    /// One step for every parameter from the gradients now in them; `step` counts steps
    /// including this one (Adam's bias correction).
    public func step(_ parameters: [Parameter], step t: Int) {
        prepare(parameters)
        var none: Float = 0
        for p in parameters {
            func run(_ state: UnsafeMutablePointer<Float>) {
                apply(values: p.value.data, state: state, gradient: p.gradient.data, dimension: p.value.count,
                      step: UInt64(t), learningRate: learningRate)
            }
            if let state = p.state { run(state.data) } else { withUnsafeMutablePointer(to: &none) { run($0) } }
        }
    }
}

/// Saving and restoring parameters (values and optimizer state) as bytes.
///
///   "SPRM" | version u32 | count u32 | per parameter: name length u32, name UTF-8,
///   rows u32, columns u32, state u32, then the values and the state, float32 little-endian
///
/// Version 2 (written now): `state` counts floats (`Parameter.state`). Version 1 (written
/// before the dense step became the store's): `state` counts tensors of the parameter's shape,
/// which read back as one state of that many floats (Adagrad's accumulator; Adam's m then v).
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

    public static let version = 2

    public static func encode(_ parameters: [Parameter]) -> [UInt8] {
        var out: [UInt8] = Array("SPRM".utf8)
        func u32(_ v: Int) { withUnsafeBytes(of: UInt32(v).littleEndian) { out += $0 } }
        func floats(_ t: Tensor) { out += UnsafeRawBufferPointer(start: t.data, count: t.count * 4) }
        u32(version)
        u32(parameters.count)
        for p in parameters {
            let name = Array(p.name.utf8)
            u32(name.count)
            out += name
            u32(p.value.rows)
            u32(p.value.columns)
            u32(p.state?.count ?? 0)
            floats(p.value)
            if let state = p.state { floats(state) }
        }
        return out
    }

    /// Restores values and state into parameters of the same names and shapes, whose state
    /// (`Optimizer.prepare`) must have the saved size. Reads the whole archive first: on any
    /// error no parameter has changed.
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
        let version = try u32()
        guard version == 1 || version == 2 else { throw .malformed("unknown version \(version)") }
        let count = try u32()
        guard count == parameters.count else { throw .mismatch("\(count) parameters saved, the model has \(parameters.count)") }
        // Where each parameter's values and state lie in `bytes`.
        var found: [(value: Int, state: Int)] = []
        for p in parameters {
            let name = String(decoding: try take(try u32()), as: UTF8.self)
            let rows = try u32(), columns = try u32(), state = try u32()
            guard name == p.name, rows == p.value.rows, columns == p.value.columns else {
                throw .mismatch("saved \(name) \(rows)×\(columns), the model has \(p.name) \(p.value.rows)×\(p.value.columns)")
            }
            let stateFloats = version == 1 ? state * rows * columns : state
            guard stateFloats == (p.state?.count ?? 0) else {
                throw .mismatch("\(name) was saved with \(stateFloats) floats of optimizer state, the optimizer keeps \(p.state?.count ?? 0)")
            }
            let value = at
            _ = try take(4 * rows * columns)
            found.append((value, at))
            _ = try take(4 * stateFloats)
        }
        guard at == bytes.endIndex else { throw .malformed("\(bytes.endIndex - at) bytes left over") }
        for (p, place) in zip(parameters, found) {
            func load(_ t: Tensor, from offset: Int) {
                bytes[offset..<(offset + 4 * t.count)].withUnsafeBytes {
                    UnsafeMutableRawPointer(t.data).copyMemory(from: $0.baseAddress!, byteCount: 4 * t.count)
                }
            }
            load(p.value, from: place.value)
            if let state = p.state { load(state, from: place.state) }
        }
    }
}
