#if canImport(Glibc)
import Glibc
#endif

/// Losses over a batch of one prediction per row: the mean loss and its gradient.
public enum Loss: String, Sendable, Codable, CaseIterable {
    /// Binary cross-entropy on logits (the sigmoid folded in, stable for any logit).
    case binaryCrossEntropy
    /// Mean squared error.
    case meanSquaredError
    /// Bayesian personalised ranking (Rendle et al. 2009) over groups of rows: the first row
    /// of each group is a positive, the others its sampled negatives, and the loss is the
    /// mean over groups and negatives of −log σ(s⁺ − s⁻). Labels are not read.
    case bpr

    /// Where a loss's targets come from.
    public enum Labels {
        /// Row i's label is `pointer[i * stride]`.
        case column(UnsafePointer<Float>, stride: Int)
        /// Implicit feedback: the first row of each group (a positive) is 1, the others (its
        /// sampled negatives) 0.
        case groups
    }

    /// Returns the mean loss and writes d(loss)/d(prediction) into `gradient`. `groupSize` is
    /// 1 + the negatives per positive (BPR needs ≥ 2; the pointwise losses treat every row
    /// alike, reading its target from `labels`).
    public func evaluate(_ predictions: Tensor, labels: Labels, groupSize: Int = 1, gradient: Tensor) -> Double {
        precondition(predictions.columns == 1, "one prediction per row")
        let n = predictions.rows
        gradient.resize(rows: n)
        let z = predictions.data, g = gradient.data
        func target(_ i: Int) -> Float {
            switch labels {
            case .column(let p, let stride): p[i * stride]
            case .groups: i % groupSize == 0 ? 1 : 0
            }
        }
        var total = 0.0
        switch self {
        case .binaryCrossEntropy:
            let scale = 1 / Float(max(n, 1))
            for i in 0..<n {
                let x = z[i], y = target(i)
                // max(x, 0) - x·y + log(1 + e^-|x|)
                total += Double(max(x, 0) - x * y + log1pf(expf(-abs(x))))
                g[i] = (logistic(x) - y) * scale
            }
            return total / Double(max(n, 1))
        case .meanSquaredError:
            let scale = 1 / Float(max(n, 1))
            for i in 0..<n {
                let e = z[i] - target(i)
                total += Double(e * e)
                g[i] = 2 * e * scale
            }
            return total / Double(max(n, 1))
        case .bpr:
            precondition(groupSize >= 2 && n % groupSize == 0, "BPR needs groups of a positive and its negatives")
            let groups = n / groupSize, negatives = groupSize - 1
            let scale = 1 / Float(max(groups * negatives, 1))
            for group in 0..<groups {
                let first = group * groupSize
                var positive: Float = 0
                for j in 1...negatives {
                    // −log σ(Δ) = softplus(−Δ); its derivative in Δ is −σ(−Δ).
                    let delta = z[first] - z[first + j]
                    total += Double(max(-delta, 0) + log1pf(expf(-abs(delta))))
                    let s = logistic(-delta) * scale
                    positive -= s
                    g[first + j] = s
                }
                g[first] = positive
            }
            return total / Double(max(groups * negatives, 1))
        }
    }
}
