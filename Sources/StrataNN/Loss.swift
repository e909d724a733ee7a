#if canImport(Glibc)
import Glibc
#endif

/// Losses over a batch of one prediction per row (the softmax: of one score per class and
/// row): the mean loss and its gradient.
public enum Loss: String, Sendable, Codable, CaseIterable {
    /// Binary cross-entropy on logits (the sigmoid folded in, stable for any logit).
    case binaryCrossEntropy
    /// Mean squared error.
    case meanSquaredError
    /// Bayesian personalised ranking (Rendle et al. 2009) over groups of rows: the first row
    /// of each group is a positive, the others its sampled negatives, and the loss is the
    /// mean over groups and negatives of −log σ(s⁺ − s⁻). Labels are not read.
    case bpr
    /// Softmax cross-entropy over the columns of each row (a next-item model's scores of
    /// the candidate items): the mean over rows of −log softmax(row)[class], the class from
    /// `Labels.classes`. A row of class −1 has none (a BERT4Rec slot no item was masked in):
    /// it adds nothing, its gradient is 0, and the mean is over the other rows.
    case softmax

    /// Where a loss's targets come from.
    public enum Labels {
        /// Row i's label is `pointer[i * stride]`.
        case column(UnsafePointer<Float>, stride: Int)
        /// Implicit feedback: the first row of each group (a positive) is 1, the others (its
        /// sampled negatives) 0.
        case groups
        /// Row i's class, a column of the predictions, or −1 for none: `pointer[i]` (the
        /// softmax's labels).
        case classes(UnsafePointer<Int32>)
    }

    /// Returns the mean loss and writes d(loss)/d(prediction) into `gradient`. `groupSize` is
    /// 1 + the negatives per positive (BPR needs ≥ 2; the pointwise losses treat every row
    /// alike, reading its target from `labels`). `meanOver`, when given, is the count the sum
    /// is divided by instead of this batch's `terms`: a whole batch's, of which these rows are
    /// one process's part.
    public func evaluate(_ predictions: Tensor, labels: Labels, groupSize: Int = 1, meanOver: Int? = nil, gradient: Tensor) -> Double {
        let terms = meanOver ?? terms(predictions, labels: labels, groupSize: groupSize)
        if self == .softmax {
            guard case .classes(let classes) = labels else { preconditionFailure("the softmax reads classes") }
            return Self.softmaxCrossEntropy(predictions, classes: classes, terms: terms, gradient: gradient)
        }
        precondition(predictions.columns == 1 && gradient.columns == 1, "one prediction per row")
        let n = predictions.rows
        gradient.resize(rows: n)
        let z = predictions.data, g = gradient.data
        func target(_ i: Int) -> Float {
            switch labels {
            case .column(let p, let stride): p[i * stride]
            case .groups: i % groupSize == 0 ? 1 : 0
            case .classes: preconditionFailure("\(self) reads no classes")
            }
        }
        var total = 0.0
        switch self {
        case .binaryCrossEntropy:
            let scale = 1 / Float(max(terms, 1))
            for i in 0..<n {
                let x = z[i], y = target(i)
                // max(x, 0) - x·y + log(1 + e^-|x|)
                total += Double(max(x, 0) - x * y + log1pf(expf(-abs(x))))
                g[i] = (logistic(x) - y) * scale
            }
            return total / Double(max(terms, 1))
        case .meanSquaredError:
            let scale = 1 / Float(max(terms, 1))
            for i in 0..<n {
                let e = z[i] - target(i)
                total += Double(e * e)
                g[i] = 2 * e * scale
            }
            return total / Double(max(terms, 1))
        case .bpr:
            precondition(groupSize >= 2 && n % groupSize == 0, "BPR needs groups of a positive and its negatives")
            let groups = n / groupSize, negatives = groupSize - 1
            let scale = 1 / Float(max(terms, 1))
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
            return total / Double(max(terms, 1))
        case .softmax:
            preconditionFailure("handled above")
        }
    }

    /// How many terms the loss of these predictions is the mean of: the rows; BPR's groups ×
    /// negatives; the softmax's rows with a class.
    public func terms(_ predictions: Tensor, labels: Labels, groupSize: Int = 1) -> Int {
        switch self {
        case .binaryCrossEntropy, .meanSquaredError:
            return predictions.rows
        case .bpr:
            return groupSize >= 2 ? predictions.rows / groupSize * (groupSize - 1) : 0
        case .softmax:
            guard case .classes(let classes) = labels else { preconditionFailure("the softmax reads classes") }
            var counted = 0
            for r in 0..<predictions.rows where classes[r] >= 0 { counted += 1 }
            return counted
        }
    }

    /// Mean over the rows with a class of log Σⱼ e^{zⱼ} − z_class (stable: the row's maximum
    /// taken out), and the gradient (softmax − one-hot) / those rows (0 for a row of class −1).
    private static func softmaxCrossEntropy(_ z: Tensor, classes: UnsafePointer<Int32>, terms counted: Int, gradient: Tensor) -> Double {
        let n = z.rows, c = z.columns
        precondition(gradient.columns == c, "the gradient has \(gradient.columns) columns, the scores \(c)")
        gradient.resize(rows: n)
        let scale = 1 / Float(max(counted, 1))
        var total = 0.0
        for r in 0..<n {
            let row = z.row(r), g = gradient.row(r), k = Int(classes[r])
            if k == -1 {
                g.update(repeating: 0, count: c)
                continue
            }
            precondition((0..<c).contains(k), "class \(k) of row \(r) is not one of \(c) columns")
            var top = -Float.infinity
            for j in 0..<c { top = max(top, row[j]) }
            var sum: Float = 0
            for j in 0..<c {
                let e = expf(row[j] - top)
                g[j] = e
                sum += e
            }
            total += Double(logf(sum) + top - row[k])
            let inverse = scale / sum
            for j in 0..<c { g[j] *= inverse }
            g[k] -= scale
        }
        return total / Double(max(counted, 1))
    }
}
