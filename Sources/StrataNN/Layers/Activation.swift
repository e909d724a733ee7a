import CStrataKernels
#if canImport(Glibc)
import Glibc
#endif

/// An elementwise nonlinearity. The backward passes use the forward's output, which is all
/// these need.
public enum Activation: String, Sendable, Codable, CaseIterable {
    case identity, relu, sigmoid, tanh

    /// y = f(x) over `count` floats (in place is fine).
    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        switch self {
        case .identity: if UnsafePointer(y) != x { y.update(from: x, count: count) }
        case .relu: Self.inParts(count) { first, n in strata_relu_forward(x + first, y + first, n) }
        case .sigmoid: for i in 0..<count { y[i] = logistic(x[i]) }
        case .tanh: for i in 0..<count { y[i] = tanhf(x[i]) }
        }
    }

    /// dx = dy · f'(x), from y = f(x) (in place on dy is fine).
    public func backward(output y: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, count: Int) {
        switch self {
        case .identity: if UnsafePointer(dx) != dy { dx.update(from: dy, count: count) }
        case .relu: Self.inParts(count) { first, n in strata_relu_backward(y + first, dy + first, dx + first, n) }
        case .sigmoid: for i in 0..<count { dx[i] = dy[i] * y[i] * (1 - y[i]) }
        case .tanh: for i in 0..<count { dx[i] = dy[i] * (1 - y[i] * y[i]) }
        }
    }
}

extension Activation {
    /// Splits `count` elements over the threads when there are enough to pay for it.
    static func inParts(_ count: Int, _ body: (_ first: Int, _ count: Int) -> Void) {
        let parts = count >= 1 << 16 ? Parallel.threads : 1
        Parallel.forEach(parts) { part in
            let first = count * part / parts, last = count * (part + 1) / parts
            body(first, last - first)
        }
    }
}

/// 1 / (1 + e^-x), without overflow for large |x|.
@inline(__always)
public func logistic(_ x: Float) -> Float {
    if x >= 0 { return 1 / (1 + expf(-x)) }
    let e = expf(x)
    return e / (1 + e)
}
