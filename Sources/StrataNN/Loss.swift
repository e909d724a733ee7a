#if canImport(Glibc)
import Glibc
#endif

/// Losses over a batch of one output per sample: the mean loss and its gradient.
public enum Loss: String, Sendable, Codable {
    /// Binary cross-entropy on logits (the sigmoid folded in, stable for any logit).
    case binaryCrossEntropy
    /// Mean squared error.
    case meanSquaredError

    /// Returns the mean loss over the batch and writes d(loss)/d(prediction) into `gradient`.
    public func evaluate(_ predictions: Tensor, targets: UnsafePointer<Float>, gradient: Tensor) -> Double {
        precondition(predictions.columns == 1, "one prediction per sample")
        let n = predictions.rows
        gradient.resize(rows: n)
        let z = predictions.data, g = gradient.data
        var total = 0.0
        let scale = 1 / Float(max(n, 1))
        switch self {
        case .binaryCrossEntropy:
            for i in 0..<n {
                let x = z[i], y = targets[i]
                // max(x, 0) - x·y + log(1 + e^-|x|)
                total += Double(max(x, 0) - x * y + log1pf(expf(-abs(x))))
                g[i] = (logistic(x) - y) * scale
            }
        case .meanSquaredError:
            for i in 0..<n {
                let e = z[i] - targets[i]
                total += Double(e * e)
                g[i] = 2 * e * scale
            }
        }
        return total / Double(max(n, 1))
    }
}
