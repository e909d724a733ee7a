import Foundation
import StrataStore
import StrataModels
import StrataTraining
import Testing

private typealias Support = DataTestSupport

/// Pearson's χ² of observed counts against expected probabilities.
private func chiSquare(_ observed: [Int], _ probabilities: [Double]) -> Double {
    let n = Double(observed.reduce(0, +))
    return zip(observed, probabilities).reduce(0) { sum, pair in
        let expected = n * pair.1
        return sum + (Double(pair.0) - expected) * (Double(pair.0) - expected) / expected
    }
}

/// A χ² bound that a correct sampler exceeds with probability far below 1e-6 (the mean plus
/// seven standard deviations), yet a wrong distribution exceeds by orders of magnitude.
private func chiSquareBound(degreesOfFreedom k: Int) -> Double { Double(k) + 7 * (2 * Double(k)).squareRoot() }

@Suite struct SyntheticClicksTests {
    @Test func samplesArePureFunctionsOfSeedAndIndex() throws {
        let options = SyntheticClicks.Options(seed: 5, samplesPerEpoch: 1000, largestKeySpace: 1_000_000)
        var a = SyntheticClicks(options: options)
        var b = SyntheticClicks(options: options)
        var c = SyntheticClicks(options: .init(seed: 6, samplesPerEpoch: 1000, largestKeySpace: 1_000_000))
        let rowsA = try Support.read(&a, calls: 3, batchSize: 100)
        #expect(try Support.read(&b, calls: 3, batchSize: 100) == rowsA)
        #expect(try Support.read(&c, calls: 3, batchSize: 100) != rowsA)

        // Any sample regenerates on its own, with the logit its label was drawn from.
        let batch = Batch(schema: ClickSchema.criteo.features)
        try a.seek(to: SourcePosition(sample: 100))
        _ = try a.next(100, into: batch)
        for i in [100, 101, 150, 199] {
            let s = a.sample(at: Int64(i))
            let row = rowsA[1][i - 100]
            #expect(SampleRow(label: s.label, dense: s.dense, keys: s.keys) == row)
            #expect(s.logit == a.plantedLogit(in: batch, sample: i - 100))
            for j in 0..<13 { #expect(s.dense[j] == (s.counts[j].map { Float(log1p(Double($0))) } ?? 0)) }
            for f in 0..<26 {
                #expect(s.keys[f] == clickKey(column: f, value: s.ids[f]))
                #expect(s.ranks[f] >= 1 && s.ranks[f] <= a.keySpaces[f])
                #expect(a.key(feature: f, rank: s.ranks[f]) == s.keys[f])
            }
        }
    }

    @Test func seekResumesAcrossEpochs() throws {
        for fresh in [false, true] {
            let options = SyntheticClicks.Options(seed: 9, samplesPerEpoch: 37, freshSamplesEachEpoch: fresh)
            var source = SyntheticClicks(options: options)
            let batch = Batch(schema: ClickSchema.criteo.features)
            var positions: [SourcePosition] = [], batches: [[SampleRow]] = []
            for _ in 0..<16 {
                positions.append(source.position)
                _ = try source.next(10, into: batch)
                batches.append(Support.rows(of: batch))
            }
            #expect(source.epoch == 3)
            #expect(batches[4] == [] && batches[4].isEmpty)
            var resumed = SyntheticClicks(options: options)
            for k in [0, 3, 4, 5, 9, 15, 2] {
                try resumed.seek(to: positions[k])
                for j in k..<16 {
                    _ = try resumed.next(10, into: batch)
                    #expect(Support.rows(of: batch) == batches[j], "resumed at \(k), call \(j)")
                }
            }
            let epoch0 = Array(batches[0..<4].joined()), epoch1 = Array(batches[5..<9].joined())
            #expect(epoch0.count == 37)
            if fresh { #expect(epoch0 != epoch1) } else { #expect(epoch0 == epoch1) }
        }
        var source = SyntheticClicks(options: .init(samplesPerEpoch: 10))
        #expect(throws: DataError.self) { try source.seek(to: SourcePosition(sample: 11)) }
        #expect(throws: DataError.self) { try source.seek(to: SourcePosition(sample: 1, detail: [1, 2, 3])) }
        #expect(throws: DataError.self) {
            try source.seek(to: SyntheticClicks(options: .init(samplesPerEpoch: 11)).position)
        }
    }

    @Test func testStreamNeverRepeatsTrainingSamples() throws {
        let options = SyntheticClicks.Options(seed: 3, samplesPerEpoch: 3000)
        var train = SyntheticClicks(options: options, split: .train)
        var test = SyntheticClicks(options: options, split: .test)
        let trainRows = try Support.readEpoch(&train, batchSize: 500)
        let testRows = try Support.readEpoch(&test, batchSize: 500)
        #expect(Set(trainRows.map(\.keys)).isDisjoint(with: testRows.map(\.keys)))
        // Same planted model and key spaces on both sides.
        #expect(train.keySpaces == test.keySpaces && train.plantedBias == test.plantedBias)
    }

    /// Ranks 1 ... 20 one by one, then the rest in buckets of growing width, so that every
    /// cell expects enough draws for χ².
    private static func cells(_ n: Int) -> [ClosedRange<Int>] {
        var cells = (1...min(n, 20)).map { $0...$0 }
        var start = 21
        while start <= n {
            let end = min(n, start * 4)
            cells.append(start...end)
            start = end + 1
        }
        return cells
    }

    private static func checkZipf(counts: [Int], n: Int, exponent: Double, what: String) {
        let p = (1...n).map { pow(Double($0), -exponent) }
        let total = p.reduce(0, +)
        let cells = Self.cells(n)
        let observed = cells.map { counts[($0.lowerBound - 1)...($0.upperBound - 1)].reduce(0, +) }
        let expected = cells.map { p[($0.lowerBound - 1)...($0.upperBound - 1)].reduce(0, +) / total }
        let chi2 = chiSquare(observed, expected)
        print("Zipf \(what) s=\(exponent) n=\(n): χ² = \(String(format: "%.1f", chi2)) on \(cells.count - 1) degrees of freedom")
        #expect(chi2 < chiSquareBound(degreesOfFreedom: cells.count - 1), "\(what), s = \(exponent), n = \(n)")
    }

    @Test func zipfFrequenciesMatchTheory() throws {
        // Key spaces 5 and 224 come from alias tables, 10,000 from rejection-inversion.
        for exponent in [1.05, 1.5] {
            let options = SyntheticClicks.Options(
                schema: ClickSchema(dense: 0, sparse: 3), seed: 21, samplesPerEpoch: 60_000,
                zipfExponent: exponent, smallestKeySpace: 5, largestKeySpace: 10_000)
            var source = SyntheticClicks(options: options)
            #expect(source.keySpaces == [5, 224, 10_000])
            var rankOfKey: [UInt64: Int] = [:]
            for f in 0..<3 {
                for r in 1...source.keySpaces[f] { rankOfKey[source.key(feature: f, rank: r)] = Int(r) }
            }
            var counts = source.keySpaces.map { [Int](repeating: 0, count: Int($0)) }
            let batch = Batch(schema: options.schema.features)
            while try source.next(4096, into: batch) > 0 {
                for f in 0..<3 {
                    for key in batch.keyValues(of: f) { counts[f][rankOfKey[key]! - 1] += 1 }
                }
            }
            for f in 0..<3 {
                Self.checkZipf(counts: counts[f], n: Int(source.keySpaces[f]), exponent: exponent, what: "synthetic feature \(f)")
            }
        }
        // The table-free sampler on its own, small key spaces included, and s = 1 exactly
        // (where its formulas switch to their series). Enough draws to see the ~1% bias of
        // skipping its acceptance test.
        let draws = 400_000
        for (n, exponent) in [(1, 1.05), (2, 1.05), (7, 1.0), (30, 1.05), (30, 2.0), (5000, 0.8), (5000, 1.2)] {
            let zipf = ZipfDistribution(count: Int64(n), exponent: exponent)
            var rng = SplitMix64(seed: UInt64(n))
            var counts = [Int](repeating: 0, count: n)
            for _ in 0..<draws { counts[Int(zipf.sample(&rng)) - 1] += 1 }
            if n == 1 { #expect(counts == [draws]) } else {
                Self.checkZipf(counts: counts, n: n, exponent: exponent, what: "rejection-inversion")
            }
        }
    }

    @Test func zipfSamplerNeedsNoTableForBillionsOfIds() {
        let n: Int64 = 4_000_000_000
        for exponent in [1.0, 1.05, 1.2] {
            let zipf = ZipfDistribution(count: n, exponent: exponent)
            var rng = SplitMix64(seed: 77)
            let draws = 100_000
            var head = [Int](repeating: 0, count: 4), beyondMillion = 0, inRange = true
            for _ in 0..<draws {
                let k = zipf.sample(&rng)
                inRange = inRange && k >= 1 && k <= n
                if k <= 3 { head[Int(k) - 1] += 1 } else { head[3] += 1 }
                if k > 1_000_000 { beyondMillion += 1 }
            }
            #expect(inRange)
            var p = zipf.probabilities(ofFirst: 3)
            p.append(1 - p.reduce(0, +))
            let chi2 = chiSquare(head, p)
            // The share of draws past rank 10^6, against H(10^6, s) / H(n, s).
            let tail = 1 - ZipfDistribution(count: 1_000_000, exponent: exponent).normalizer() / zipf.normalizer()
            let sd = (tail * (1 - tail) / Double(draws)).squareRoot()
            print("Zipf s=\(exponent) n=4e9: χ² of ranks 1, 2, 3, rest = \(String(format: "%.2f", chi2)); past 10^6: \(Double(beyondMillion) / Double(draws)) vs \(tail)")
            #expect(chi2 < chiSquareBound(degreesOfFreedom: 3))
            #expect(abs(Double(beyondMillion) / Double(draws) - tail) < 6 * sd)
        }
    }

    @Test func plantedModelHasModerateSignalAndQuarterPositives() throws {
        for seed: UInt64 in [0, 1, 2] {
            let options = SyntheticClicks.Options(seed: seed, samplesPerEpoch: 1_000_000)
            var test = SyntheticClicks(options: options, split: .test)
            let samples = 30_000
            let batch = Batch(schema: ClickSchema.criteo.features)
            var labels = 0.0, probability = 0.0, seen = 0
            while seen < samples {
                let n = try test.next(3000, into: batch)
                for b in 0..<n {
                    labels += Double(batch.labels[b])
                    probability += 1 / (1 + exp(-test.plantedLogit(in: batch, sample: b)))
                }
                seen += n
            }
            let rate = labels / Double(seen)
            let auc = test.plantedAUC(samples: samples)
            print("synthetic seed \(seed): positive rate \(rate), planted AUC \(auc) on \(samples) test samples")
            #expect(rate > 0.22 && rate < 0.28)
            #expect(auc > 0.74 && auc < 0.82)
            // Labels are drawn with the planted probability: their mean matches its mean.
            let sd = (rate * (1 - rate) / Double(seen)).squareRoot()
            #expect(abs(rate - probability / Double(seen)) < 5 * sd)
        }
        // A stronger signal gives a higher AUC; none gives a coin toss.
        let strong = SyntheticClicks(options: .init(samplesPerEpoch: 20_000, logitScale: 2), split: .test)
        let none = SyntheticClicks(options: .init(samplesPerEpoch: 20_000, logitScale: 0), split: .test)
        #expect(strong.plantedAUC(samples: 20_000) > 0.84)
        #expect(abs(none.plantedAUC(samples: 20_000) - 0.5) < 0.03)
    }

    @Test func keySpacesGrowGeometrically() {
        let source = SyntheticClicks(options: .init(smallestKeySpace: 10, largestKeySpace: 1_000_000_000))
        let spaces = source.keySpaces
        #expect(spaces.count == 26 && spaces.first == 10 && spaces.last == 1_000_000_000)
        for f in 1..<26 {
            let ratio = Double(spaces[f]) / Double(spaces[f - 1])
            #expect(abs(ratio - pow(1e8, 1.0 / 25)) < 0.05 * ratio)
        }
    }
}
