import Glibc

// Binary classification metrics for click models, accumulated over batches.
//
// AUC needs every score (it is a statement about their order), so the accumulator keeps the
// scores: 8 bytes per sample, split by label so that the exact Mann–Whitney count is two sorts
// and one merge, with ties counted as half. Logloss and accuracy need only running sums.

/// AUC, logloss and accuracy of scores against 0/1 labels, accumulated batch by batch.
///
/// Scores are logits (`add(logits:labels:)`) or probabilities (`add(probabilities:labels:)`);
/// either way AUC depends only on their order. Labels are 0 or 1 as Float; anything ≥ 0.5 is a
/// positive. A NaN score makes AUC and logloss NaN: a model that outputs NaN should not look
/// good.
public struct Metrics: Sendable {
    /// Probabilities are clipped to [ε, 1 − ε] before the log, so one confident mistake costs
    /// at most −log ε ≈ 16.1 instead of infinity.
    public static let probabilityClip = 1e-7

    /// Samples added.
    public private(set) var count = 0
    /// Positive labels among them.
    public var positives: Int { positiveScores.count + nanPositives }

    /// Scores as logits (probabilities are mapped through log(p / (1 − p)), which keeps their
    /// order), by label.
    private var positiveScores: [Double] = []
    private var negativeScores: [Double] = []
    private var nanPositives = 0
    private var nanScores = 0
    private var logLossSum = 0.0
    private var correct = 0

    public init() {}

    /// Adds samples scored by logits: sigmoid(logit) is the predicted click probability.
    public mutating func add<Logits: Collection<Float>, Labels: Collection<Float>>(logits: Logits, labels: Labels) {
        precondition(logits.count == labels.count, "\(logits.count) scores for \(labels.count) labels")
        Self.withBuffers(logits, labels) { add(logits: $0, labels: $1) }
    }

    /// Adds samples scored by probabilities in [0, 1].
    public mutating func add<Probabilities: Collection<Float>, Labels: Collection<Float>>(probabilities: Probabilities, labels: Labels) {
        precondition(probabilities.count == labels.count, "\(probabilities.count) scores for \(labels.count) labels")
        Self.withBuffers(probabilities, labels) { add(probabilities: $0, labels: $1) }
    }

    /// Runs `body` on contiguous copies (or the storage itself) of two collections: the generic
    /// entry points are not specialized across modules, so the loops run on concrete buffers.
    private static func withBuffers<A: Collection<Float>, B: Collection<Float>>(
        _ a: A, _ b: B, _ body: (UnsafeBufferPointer<Float>, UnsafeBufferPointer<Float>) -> Void
    ) {
        func second(_ first: UnsafeBufferPointer<Float>) {
            if b.withContiguousStorageIfAvailable({ body(first, $0) }) == nil { Array(b).withUnsafeBufferPointer { body(first, $0) } }
        }
        if a.withContiguousStorageIfAvailable({ second($0) }) == nil { Array(a).withUnsafeBufferPointer { second($0) } }
    }

    private mutating func add(logits: UnsafeBufferPointer<Float>, labels: UnsafeBufferPointer<Float>) {
        for i in 0..<logits.count { add(logit: Double(logits[i]), label: labels[i]) }
    }

    private mutating func add(probabilities: UnsafeBufferPointer<Float>, labels: UnsafeBufferPointer<Float>) {
        for i in 0..<probabilities.count {
            let p = probabilities[i], label = labels[i]
            let positive = label >= 0.5
            let clipped = min(max(Double(p), Self.probabilityClip), 1 - Self.probabilityClip)
            record(score: log(Double(p)) - log1p(-Double(p)), positive: positive,
                   loss: positive ? -log(clipped) : -log1p(-clipped), predictedPositive: p >= 0.5)
        }
    }

    /// Adds one sample scored by a logit.
    public mutating func add(logit: Double, label: Float) {
        let positive = label >= 0.5
        let p = min(max(1 / (1 + exp(-logit)), Self.probabilityClip), 1 - Self.probabilityClip)
        record(score: logit, positive: positive, loss: positive ? -log(p) : -log1p(-p), predictedPositive: logit >= 0)
    }

    private mutating func record(score: Double, positive: Bool, loss: Double, predictedPositive: Bool) {
        count += 1
        if score.isNaN {
            nanScores += 1
            if positive { nanPositives += 1 }
            logLossSum = .nan
            return
        }
        if positive { positiveScores.append(score) } else { negativeScores.append(score) }
        logLossSum += loss
        if predictedPositive == positive { correct += 1 }
    }

    /// Adds everything `other` accumulated (for metrics gathered on several threads).
    public mutating func merge(_ other: Metrics) {
        count += other.count
        positiveScores += other.positiveScores
        negativeScores += other.negativeScores
        nanPositives += other.nanPositives
        nanScores += other.nanScores
        logLossSum += other.logLossSum
        correct += other.correct
    }

    /// The probability that a random positive scores above a random negative, ties counting
    /// one half (the Mann–Whitney U statistic over n₊ · n₋). NaN without both classes, or if
    /// any score was NaN. Sorts copies of the scores: O(n log n) per call.
    public var auc: Double {
        guard nanScores == 0 else { return .nan }
        return Self.auc(positives: positiveScores.sorted(), negatives: negativeScores.sorted())
    }

    /// Mean logloss (natural log) with clipped probabilities.
    public var logLoss: Double { count == 0 ? .nan : logLossSum / Double(count) }

    /// Share of samples whose label is predicted by probability ≥ 0.5 (logit ≥ 0).
    public var accuracy: Double { count == 0 ? .nan : Double(correct) / Double(count) }

    /// Share of positive labels.
    public var positiveRate: Double { count == 0 ? .nan : Double(positives) / Double(count) }

    /// AUC of `scores` (any monotone score: logits, probabilities) against `labels`.
    public static func auc<Scores: Collection<Float>, Labels: Collection<Float>>(scores: Scores, labels: Labels) -> Double {
        precondition(scores.count == labels.count, "\(scores.count) scores for \(labels.count) labels")
        var positives: [Double] = [], negatives: [Double] = []
        for (s, y) in zip(scores, labels) {
            if s.isNaN { return .nan }
            if y >= 0.5 { positives.append(Double(s)) } else { negatives.append(Double(s)) }
        }
        positives.sort()
        negatives.sort()
        return auc(positives: positives, negatives: negatives)
    }

    /// Mann–Whitney over two ascending arrays: for each run of equal positive scores, the
    /// negatives below it count 1 and those equal to it ½. Counted in halves as integers, so
    /// the result is exact up to the final division.
    private static func auc(positives: [Double], negatives: [Double]) -> Double {
        guard !positives.isEmpty && !negatives.isEmpty else { return .nan }
        var twiceWins: UInt64 = 0
        var below = 0  // negatives strictly below the current positive score
        var i = 0
        while i < positives.count {
            let score = positives[i]
            var run = 1
            while i + run < positives.count && positives[i + run] == score { run += 1 }
            while below < negatives.count && negatives[below] < score { below += 1 }
            var equal = 0
            while below + equal < negatives.count && negatives[below + equal] == score { equal += 1 }
            twiceWins += UInt64(run) * UInt64(2 * below + equal)
            i += run
        }
        return Double(twiceWins) / (2 * Double(positives.count) * Double(negatives.count))
    }
}
