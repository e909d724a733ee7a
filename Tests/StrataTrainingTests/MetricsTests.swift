import Foundation
import StrataStore
import StrataTraining
import Testing

/// AUC by its definition: over all (positive, negative) pairs, 1 if the positive scores
/// higher, ½ on a tie.
private func bruteForceAUC(_ scores: [Double], _ labels: [Float]) -> Double {
    var wins = 0.0, pairs = 0.0
    for i in scores.indices where labels[i] == 1 {
        for j in scores.indices where labels[j] == 0 {
            pairs += 1
            if scores[i] > scores[j] { wins += 1 } else if scores[i] == scores[j] { wins += 0.5 }
        }
    }
    return wins / pairs
}

private func bruteForceLogLoss(logits: [Float], _ labels: [Float]) -> Double {
    var sum = 0.0
    for (z, y) in zip(logits, labels) {
        let p = min(max(1 / (1 + exp(-Double(z))), 1e-7), 1 - 1e-7)
        sum += y == 1 ? -log(p) : -log(1 - p)
    }
    return sum / Double(logits.count)
}

/// Random scores from a small set, so ties are common, and random labels.
private func randomData(_ n: Int, distinct: Int, _ rng: inout SplitMix64) -> (logits: [Float], labels: [Float]) {
    let logits = (0..<n).map { _ in Float(Int(rng.next() % UInt64(distinct)) - distinct / 2) * 0.5 }
    let labels = (0..<n).map { _ in Float(rng.next() % 3 == 0 ? 1 : 0) }
    return (logits, labels)
}

@Suite struct MetricsTests {
    @Test func matchesBruteForceWithTies() {
        var rng = SplitMix64(seed: 1)
        for trial in 0..<60 {
            let n = 2 + trial * 5
            let (logits, labels) = randomData(n, distinct: trial % 2 == 0 ? 5 : 1000, &rng)
            guard labels.contains(1) && labels.contains(0) else { continue }
            var m = Metrics()
            m.add(logits: logits, labels: labels)
            let expected = bruteForceAUC(logits.map(Double.init), labels)
            #expect(abs(m.auc - expected) < 1e-12, "n = \(n)")
            #expect(abs(Metrics.auc(scores: logits, labels: labels) - expected) < 1e-12)
            #expect(abs(m.logLoss - bruteForceLogLoss(logits: logits, labels)) < 1e-9)
            let right = zip(logits, labels).filter { ($0.0 >= 0) == ($0.1 == 1) }.count
            #expect(m.accuracy == Double(right) / Double(n))
            #expect(m.count == n && m.positives == labels.filter { $0 == 1 }.count)

            // Scored by probabilities (which in Float tie where large logits did not).
            let probabilities = logits.map { Float(1 / (1 + exp(-Double($0) / 8))) }
            var p = Metrics()
            p.add(probabilities: probabilities, labels: labels)
            #expect(abs(p.auc - bruteForceAUC(probabilities.map(Double.init), labels)) < 1e-12)
            let loss = zip(probabilities, labels).map { q, y in
                let clipped = min(max(Double(q), 1e-7), 1 - 1e-7)
                return y == 1 ? -log(clipped) : -log(1 - clipped)
            }
            #expect(abs(p.logLoss - loss.reduce(0, +) / Double(n)) < 1e-9)
            #expect(p.accuracy == Double(zip(probabilities, labels).filter { ($0.0 >= 0.5) == ($0.1 == 1) }.count) / Double(n))
        }
    }

    @Test func accumulatesOverBatchesAndMerges() {
        var rng = SplitMix64(seed: 2)
        let (logits, labels) = randomData(1000, distinct: 40, &rng)
        var whole = Metrics()
        whole.add(logits: logits, labels: labels)
        var batched = Metrics(), left = Metrics(), right = Metrics()
        for start in stride(from: 0, to: 1000, by: 64) {
            let end = min(start + 64, 1000)
            batched.add(logits: logits[start..<end], labels: labels[start..<end])
            if start < 500 { left.add(logits: logits[start..<end], labels: labels[start..<end]) } else {
                right.add(logits: logits[start..<end], labels: labels[start..<end])
            }
        }
        left.merge(right)
        for m in [batched, left] {
            #expect(m.auc == whole.auc)
            #expect(abs(m.logLoss - whole.logLoss) < 1e-12)
            #expect(m.accuracy == whole.accuracy && m.count == whole.count && m.positiveRate == whole.positiveRate)
        }
    }

    @Test func edgeCases() {
        // Perfect, reversed and constant scores.
        #expect(Metrics.auc(scores: [0.1, 0.2, 0.8, 0.9], labels: [0, 0, 1, 1]) == 1)
        #expect(Metrics.auc(scores: [0.9, 0.8, 0.2, 0.1], labels: [0, 0, 1, 1]) == 0)
        #expect(Metrics.auc(scores: [3, 3, 3, 3], labels: [0, 1, 0, 1]) == 0.5)
        #expect(Metrics.auc(scores: [-0.0, 0.0], labels: [0, 1]) == 0.5)
        // One class only, NaN scores, nothing at all.
        #expect(Metrics.auc(scores: [1, 2], labels: [1, 1]).isNaN)
        var nan = Metrics()
        nan.add(logits: [1, .nan, -1], labels: [1, 0, 0])
        #expect(nan.auc.isNaN && nan.logLoss.isNaN)
        #expect(Metrics().auc.isNaN && Metrics().logLoss.isNaN && Metrics().accuracy.isNaN)
        // A confident mistake costs −log(1e-7), not infinity; the threshold itself is positive.
        var clipped = Metrics()
        clipped.add(logits: [-100, 100], labels: [1, 0])
        #expect(abs(clipped.logLoss - -log(1e-7)) < 1e-9)
        var threshold = Metrics()
        threshold.add(logits: [0], labels: [1])
        threshold.add(probabilities: [0.5], labels: [1])
        #expect(threshold.accuracy == 1)
    }
}
