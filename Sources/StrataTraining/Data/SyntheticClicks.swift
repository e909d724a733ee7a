import Glibc
public import StrataModels
import StrataStore

// Click data with known answers. Every sample is a pure function of (seed, sample index), so
// any sample can be regenerated, `seek` is O(1), and a test or benchmark needs no files. The
// labels come from a planted logistic model, so a learner has real signal to find and the
// best reachable AUC is known: the planted model's own.
//
// Shape, modelled on Criteo's display-advertising data:
// - categorical feature f draws a rank from Zipf(s) over its key space of n_f ids (n_f
//   geometric from `smallestKeySpace` to `largestKeySpace` across the features; drawn by
//   rejection-inversion, which needs no table, or from an alias table when n_f ≤ 4096), and
//   the rank is scrambled into a 64-bit id by a bijective hash so that hot ids are spread over
//   the key space; the key is `clickKey(column: f, value: id)`, as for Criteo's files;
// - dense feature j is a count from a discrete Lomax (Pareto II) law, mostly small with a
//   heavy tail, missing (0) at Criteo's missing rates, then log(x + 1);
// - the label is Bernoulli(sigmoid(logit)) with
//       logit = bias + Σ_j v_j · dense_j + Σ_f w_f(key_f),
//   w_f(key) = a_f · g(hash(seed, key)), g approximately standard normal (a sum of four
//   uniforms), a_f and v_j scaled so that every feature carries a share of a logit variance
//   of `logitScale`², and the bias set for a positive rate of `positiveRate`. With the
//   defaults (scale 1.25, rate 0.25) the planted model's AUC is about 0.78, like the best
//   published models on Criteo (~0.80).
//
// Train and test data are disjoint by construction: the training stream is samples 0, 1, 2, …
// of the generator and the test stream samples 2^62, 2^62 + 1, …, same planted model, same
// key spaces.

/// A deterministic generator of click samples with a planted model.
public struct SyntheticClicks: BatchSource, Sendable {
    /// Which of the two disjoint sample streams a source reads.
    public enum Split: String, Sendable, Codable, Hashable {
        /// Samples 0, 1, 2, ...
        case train
        /// Samples 2^62, 2^62 + 1, ...: never any training sample.
        case test
    }

    /// The number of distinct values of each categorical column of Criteo's Kaggle data set
    /// (the DLRM paper's embedding table sizes).
    public static let criteoKaggleKeySpaces: [Int64] = [
        1460, 583, 10_131_227, 2_202_608, 305, 24, 12517, 633, 3, 93145, 5683, 8_351_593, 3194, 27, 14992,
        5_461_306, 10, 5652, 2173, 4, 7_046_547, 18, 15, 286_181, 105, 142_572,
    ]

    public struct Options: Sendable, Codable, Hashable {
        public var schema: ClickSchema
        public var seed: UInt64
        /// Samples per epoch.
        public var samplesPerEpoch: Int64
        /// Zipf's exponent for every categorical feature.
        public var zipfExponent: Double
        /// Key space of the first categorical feature; the others grow geometrically to
        /// `largestKeySpace` (which may be billions: the sampler needs no table).
        public var smallestKeySpace: Int64
        public var largestKeySpace: Int64
        /// Key spaces per categorical feature, replacing the geometric progression when set
        /// (for example Criteo Kaggle's table sizes, `criteoKaggleKeySpaces`).
        public var keySpaces: [Int64]?
        /// When true, epoch e reads samples e·N ..< (e+1)·N (an endless stream, never a
        /// sample twice); when false (the default) every epoch replays samples 0 ..< N, like a
        /// dataset of N samples.
        public var freshSamplesEachEpoch: Bool
        /// Standard deviation of the planted logit: the signal's strength. About 1.0 gives a
        /// planted AUC near 0.74, 1.25 near 0.78, 1.5 near 0.82.
        public var logitScale: Double
        /// The share of positive labels the bias is set for (met within about ±0.02).
        public var positiveRate: Double
        /// The share of the logit's variance carried by the dense features; the categorical
        /// ones carry the rest.
        public var denseShare: Double

        public init(
            schema: ClickSchema = .criteo, seed: UInt64 = 0, samplesPerEpoch: Int64 = 10_000_000,
            zipfExponent: Double = 1.05, smallestKeySpace: Int64 = 10, largestKeySpace: Int64 = 10_000_000,
            freshSamplesEachEpoch: Bool = false, logitScale: Double = 1.25, positiveRate: Double = 0.25,
            denseShare: Double = 0.2
        ) {
            self.schema = schema
            self.seed = seed
            self.samplesPerEpoch = samplesPerEpoch
            self.zipfExponent = zipfExponent
            self.smallestKeySpace = smallestKeySpace
            self.largestKeySpace = largestKeySpace
            keySpaces = nil
            self.freshSamplesEachEpoch = freshSamplesEachEpoch
            self.logitScale = logitScale
            self.positiveRate = positiveRate
            self.denseShare = denseShare
        }
    }

    /// One sample with everything behind it, for inspection, tests and writing TSV files.
    public struct Sample: Sendable, Equatable {
        public var label: Float
        /// log(count + 1), 0 when missing.
        public var dense: [Float]
        /// The raw counts; nil where the value is missing (an empty TSV field).
        public var counts: [Int64?]
        /// The Zipf rank (1 = most frequent) of each categorical value.
        public var ranks: [Int64]
        /// The categorical values (64-bit ids) and their keys, `clickKey(column: f, value: ids[f])`.
        public var ids: [UInt64]
        public var keys: [UInt64]
        /// The planted model's logit; the label was drawn with probability sigmoid(logit).
        public var logit: Double
    }

    public let options: Options
    public let split: Split
    public var identity: String { "synthetic:\(split) \(identityText(options))" }
    public var shape: ClickSchema { options.schema }
    public var schema: FeatureSchema { options.schema.features }
    /// Ids per categorical feature.
    public var keySpaces: [Int64] { model.sparse.map(\.zipf.count) }
    /// The planted model's bias.
    public var plantedBias: Double { model.bias }

    public private(set) var epoch = 0
    /// Samples handed out in this epoch.
    public private(set) var sample: Int64 = 0

    private let model: PlantedModel
    static let testStreamStart: UInt64 = 1 << 62
    private static let positionFormat: Int64 = 0x53_594E  // "SYN"

    public init(options: Options = Options(), split: Split = .train) {
        precondition(options.samplesPerEpoch > 0, "an epoch holds at least one sample")
        precondition(options.schema.dense >= 0 && options.schema.sparse >= 0, "a schema counts columns")
        precondition(options.smallestKeySpace >= 1 && options.largestKeySpace >= options.smallestKeySpace, "key spaces must be 1 ≤ smallest ≤ largest")
        precondition(options.keySpaces.map { $0.count == options.schema.sparse && $0.allSatisfy { $0 >= 1 } } ?? true,
                     "one key space of at least 1 per categorical feature")
        precondition(options.positiveRate > 0 && options.positiveRate < 1, "the positive rate is a probability")
        precondition(options.logitScale >= 0 && options.denseShare >= 0 && options.denseShare <= 1, "scales must be nonnegative")
        self.options = options
        self.split = split
        model = PlantedModel(options)
    }

    // MARK: BatchSource

    /// `detail` is a format tag, the epoch length and the seed, checked by `seek`.
    public var position: SourcePosition {
        SourcePosition(epoch: epoch, sample: sample, detail: [Self.positionFormat, options.samplesPerEpoch, Int64(bitPattern: options.seed)])
    }

    /// Any (epoch, sample) can be reached in O(1). A position without detail is taken as is.
    public mutating func seek(to position: SourcePosition) throws(DataError) {
        let d = position.detail
        if !d.isEmpty {
            guard d.count == 3, d[0] == Self.positionFormat else {
                throw .positionMismatch(source: "synthetic clicks", detail: "not a position of a synthetic source")
            }
            guard d[1] == options.samplesPerEpoch, d[2] == Int64(bitPattern: options.seed) else {
                throw .positionMismatch(
                    source: "synthetic clicks",
                    detail: "made with \(d[1]) samples per epoch and seed \(UInt64(bitPattern: d[2])), this source has \(options.samplesPerEpoch) and \(options.seed)")
            }
        }
        guard position.epoch >= 0, position.sample >= 0, position.sample <= options.samplesPerEpoch else {
            throw .positionMismatch(source: "synthetic clicks", detail: "out of range: \(position)")
        }
        epoch = position.epoch
        sample = position.sample
    }

    public mutating func next(_ size: Int, into batch: Batch) throws(DataError) -> Int {
        precondition(size > 0, "a batch holds at least one sample")
        precondition(batch.schema == schema, "the batch's schema does not match the source's")
        let n = Int(min(Int64(size), options.samplesPerEpoch - sample))
        batch.begin(capacity: size)
        if n == 0 {
            batch.end(written: 0)
            epoch += 1
            sample = 0
            return 0
        }
        let first = streamIndex(epoch: epoch, sample: sample)
        model.generate(first: first, count: n, into: BatchColumns(batch), stride: size, at: 0, details: nil)
        batch.end(written: n)
        sample += Int64(n)
        return n
    }

    // MARK: Samples and the planted model

    /// The generator's index of sample `sample` of epoch `epoch` of this source's stream.
    private func streamIndex(epoch: Int, sample: Int64) -> UInt64 {
        let start: UInt64 = split == .train ? 0 : Self.testStreamStart
        guard options.freshSamplesEachEpoch else { return start + UInt64(sample) }
        let (offset, overflow) = UInt64(epoch).multipliedReportingOverflow(by: UInt64(options.samplesPerEpoch))
        precondition(!overflow && offset < Self.testStreamStart, "epoch \(epoch) runs past the training stream")
        return start + offset + UInt64(sample)
    }

    /// Sample `index` of epoch `epoch` of this source's stream, with its raw counts, ranks,
    /// ids and planted logit: exactly what `next` hands out there.
    public func sample(at index: Int64, epoch: Int = 0) -> Sample {
        precondition(index >= 0 && index < options.samplesPerEpoch, "sample \(index) is outside the epoch")
        let batch = Batch(schema: schema)
        batch.begin(capacity: 1)
        let dense = shape.dense, sparse = shape.sparse
        var counts = [Int64](repeating: 0, count: dense)
        var ranks = [Int64](repeating: 0, count: sparse)
        var ids = [UInt64](repeating: 0, count: sparse)
        var logit = 0.0
        let model = self.model
        let first = streamIndex(epoch: epoch, sample: index)
        counts.withUnsafeMutableBufferPointer { c in
            ranks.withUnsafeMutableBufferPointer { r in
                ids.withUnsafeMutableBufferPointer { i in
                    withUnsafeMutablePointer(to: &logit) { l in
                        let details = SampleDetails(
                            counts: c.baseAddress ?? UnsafeMutablePointer(bitPattern: 8)!,
                            ranks: r.baseAddress ?? UnsafeMutablePointer(bitPattern: 8)!,
                            ids: i.baseAddress ?? UnsafeMutablePointer(bitPattern: 8)!, logit: l)
                        model.generate(first: first, count: 1, into: BatchColumns(batch), stride: 1, at: 0, details: details)
                    }
                }
            }
        }
        batch.end(written: 1)
        return Sample(
            label: batch.labels[0], dense: Array(UnsafeBufferPointer(start: batch.dense, count: dense)),
            counts: counts.map { $0 < 0 ? nil : $0 }, ranks: ranks, ids: ids,
            keys: (0..<sparse).map { batch.keys(of: $0, row: 0)[0] }, logit: logit)
    }

    /// The planted model's logit for sample `sample` of `batch` (a batch this source, or one
    /// made the same way, produced): bias + Σ v_j · dense_j + Σ w_f(key_f). It is the logit
    /// the label was drawn from, bit for bit.
    public func plantedLogit(in batch: Batch, sample b: Int) -> Double {
        precondition(batch.schema == schema && b >= 0 && b < batch.count)
        return model.logit(dense: batch.dense + b * shape.dense, keys: batch.singleKeys + b, keyStride: batch.count)
    }

    /// The planted model's AUC on samples 0 ..< `samples` of this source's stream (epoch 0):
    /// the best AUC any learner can reach on this data, up to the sampling error of `samples`
    /// labels (about ±0.004 at 100,000). Compute it on the test split to compare with a
    /// model's test AUC.
    public func plantedAUC(samples: Int) -> Double {
        precondition(samples > 0 && Int64(samples) <= options.samplesPerEpoch, "between 1 and an epoch's samples")
        var source = self
        source.epoch = 0
        source.sample = 0
        let batch = Batch(schema: schema)
        var metrics = Metrics()
        var logits = [Float]()
        var done = 0
        while done < samples {
            // `next` cannot throw for this source.
            let n = (try? source.next(min(4096, samples - done), into: batch)) ?? 0
            if n == 0 { break }
            logits.removeAll(keepingCapacity: true)
            for b in 0..<n { logits.append(Float(plantedLogit(in: batch, sample: b))) }
            metrics.add(logits: logits, labels: UnsafeBufferPointer(start: batch.labels, count: n))
            done += n
        }
        return metrics.auc
    }

    /// The key of rank `rank` (1-based) of categorical feature `feature`: which key a Zipf
    /// rank becomes.
    public func key(feature: Int, rank: Int64) -> UInt64 {
        precondition(feature >= 0 && feature < shape.sparse && rank >= 1)
        return clickKey(column: feature, value: model.sparse[feature].id(rank: rank))
    }
}

/// Extra outputs of `PlantedModel.generate` for one sample; absent in the hot path.
private struct SampleDetails {
    var counts: UnsafeMutablePointer<Int64>
    var ranks: UnsafeMutablePointer<Int64>
    var ids: UnsafeMutablePointer<UInt64>
    var logit: UnsafeMutablePointer<Double>
}

/// Everything the generator derives from the options once: per-feature distributions, salts
/// and planted weights.
private final class PlantedModel: Sendable {
    struct SparseFeature: Sendable {
        var zipf: ZipfDistribution
        /// Rank r becomes id mix(r + idSalt): a bijection, so n ranks give n distinct ids.
        var idSalt: UInt64
        /// a_f: w_f(key) = a_f · g(key).
        var weightScale: Double
        /// Where the feature's alias table starts in `aliasEntries`, or -1 for a key space
        /// too large for one (drawn by rejection-inversion instead).
        var aliasStart: Int

        @inline(__always)
        func id(rank: Int64) -> UInt64 { SplitMix64.mix(UInt64(rank) &+ idSalt) }
    }

    struct DenseFeature: Sendable {
        /// Missing when the low 32 bits of the draw are below this.
        var missingBelow: UInt64
        /// count = floor(scale · (u^(-1/α) - 1)): Lomax with shape α and scale.
        var scale: Float
        var negativeInverseShape: Float
        /// v_j.
        var weight: Double
    }

    let sparse: [SparseFeature]
    let dense: [DenseFeature]
    /// The alias tables of the small key spaces, one after another.
    let aliasEntries: [AliasEntry]
    let bias: Double
    /// Salts the hash behind the planted weights w_f(key).
    let weightSalt: UInt64
    /// Salts each sample's random stream.
    let streamSalt: UInt64

    // Dense columns modelled on Criteo's I1…I13: the share of empty fields, and a scale of
    // the order of the column's typical values (small for most, thousands for I5).
    private static let criteoMissing: [Double] = [0.45, 0.0, 0.21, 0.22, 0.03, 0.22, 0.04, 0.0005, 0.04, 0.45, 0.04, 0.77, 0.22]
    private static let criteoScale: [Float] = [2, 20, 10, 5, 3000, 50, 5, 8, 40, 0.5, 2, 0.5, 5]

    init(_ options: SyntheticClicks.Options) {
        let seed = options.seed
        weightSalt = SplitMix64.mix(seed ^ 0x5745_4947_4854_5331)  // "WEIGHTS1"
        streamSalt = SplitMix64.mix(seed ^ 0x5354_5245_414D_5331)  // "STREAMS1"
        var rng = SplitMix64(seed: SplitMix64.mix(seed ^ 0x4D4F_4445_4C53_3131))  // "MODELS11"
        let variance = options.logitScale * options.logitScale
        let sparseCount = options.schema.sparse, denseCount = options.schema.dense
        let denseVariance = denseCount == 0 ? 0 : (sparseCount == 0 ? variance : variance * options.denseShare)
        let sparseVariance = variance - denseVariance
        var meanShift = 0.0  // Σ of each feature's mean contribution, removed through the bias

        // Categorical features: each gets a random share of the variance, then a_f scales its
        // weights so that w_f(key_f) has that variance over the Zipf draw of key_f.
        var shares = (0..<sparseCount).map { _ in 0.5 + Double(rng.next() >> 11) * 0x1p-53 }
        let shareSum = shares.reduce(0, +)
        shares = shares.map { $0 / shareSum }
        var sparse: [SparseFeature] = []
        var aliasEntries: [AliasEntry] = []
        for f in 0..<sparseCount {
            let t = sparseCount == 1 ? 1.0 : Double(f) / Double(sparseCount - 1)
            let n = options.keySpaces?[f]
                ?? Int64((Double(options.smallestKeySpace) * pow(Double(options.largestKeySpace) / Double(options.smallestKeySpace), t)).rounded())
            var feature = SparseFeature(
                zipf: ZipfDistribution(count: max(1, n), exponent: options.zipfExponent), idSalt: rng.next(), weightScale: 0,
                aliasStart: -1)
            if feature.zipf.count <= Self.largestAliasTable {
                feature.aliasStart = aliasEntries.count
                aliasEntries += Self.aliasTable(feature.zipf.probabilities(ofFirst: Int(feature.zipf.count)))
            }
            // Moments of g(key_f): exact over the 1024 hottest ranks, and for the rest (whose
            // many weights average out) mean 0 and variance 1.
            let p = feature.zipf.probabilities(ofFirst: 1024)
            var mass = 0.0, mean = 0.0, second = 0.0
            for (i, pr) in p.enumerated() {
                let g = Self.gaussian(SplitMix64.mix(clickKey(column: f, value: feature.id(rank: Int64(i + 1))) ^ weightSalt))
                mass += pr
                mean += pr * g
                second += pr * g * g
            }
            second += max(0, 1 - mass)
            let spread = max(second - mean * mean, 0.05)
            feature.weightScale = (shares[f] * sparseVariance / spread).squareRoot()
            meanShift += feature.weightScale * mean
            sparse.append(feature)
        }
        self.sparse = sparse
        self.aliasEntries = aliasEntries

        // Dense features: equal shares, random signs; moments of log(count + 1) by the
        // midpoint rule over the uniform that makes the count.
        var dense: [DenseFeature] = []
        let table = CriteoTables.shared.logOnePlus
        for j in 0..<denseCount {
            let missing = Self.criteoMissing[j % 13]
            let shape = Float(1.3 + 0.1 * Double(j % 5))
            var feature = DenseFeature(
                missingBelow: UInt64(missing * 0x1p32), scale: Self.criteoScale[j % 13],
                negativeInverseShape: -1 / shape, weight: 0)
            let points = 4096
            var mean = 0.0, second = 0.0
            for i in 0..<points {
                let x = Double(feature.value(uniformBits: UInt64((Double(i) + 0.5) / Double(points) * 0x1p24), table: table))
                mean += x
                second += x * x
            }
            mean = mean / Double(points) * (1 - missing)
            second = second / Double(points) * (1 - missing)
            let spread = max(second - mean * mean, 1e-6)
            let sign: Double = rng.next() & 1 == 0 ? 1 : -1
            feature.weight = sign * (denseVariance / Double(denseCount) / spread).squareRoot()
            meanShift += feature.weight * mean
            dense.append(feature)
        }
        self.dense = dense
        bias = Self.logitMean(positiveRate: options.positiveRate, scale: options.logitScale) - meanShift
    }

    /// μ such that E[sigmoid(μ + σZ)] = rate for standard normal Z (midpoint quadrature,
    /// bisection): the planted logit is close to normal, being a sum of many small terms.
    static func logitMean(positiveRate rate: Double, scale: Double) -> Double {
        func meanSigmoid(_ mu: Double) -> Double {
            let steps = 800
            var total = 0.0, weight = 0.0
            for i in 0..<steps {
                let z = -8 + 16 * (Double(i) + 0.5) / Double(steps)
                let density = exp(-0.5 * z * z)
                total += density / (1 + exp(-(mu + scale * z)))
                weight += density
            }
            return total / weight
        }
        var low = -30.0, high = 30.0
        for _ in 0..<60 {
            let mid = (low + high) / 2
            if meanSigmoid(mid) < rate { low = mid } else { high = mid }
        }
        return (low + high) / 2
    }

    /// An approximately standard normal value from 64 hashed bits: the sum of four 16-bit
    /// uniforms, centred and scaled (Irwin–Hall). Cheaper than Box–Muller by a log, a square
    /// root and a cosine, and shaped closely enough for planted weights.
    @inline(__always)
    static func gaussian(_ h: UInt64) -> Double {
        let sum = (h & 0xFFFF) + (h >> 16 & 0xFFFF) + (h >> 32 & 0xFFFF) + (h >> 48)
        return (Double(sum) - 131_070) * 2.642_912_215_883_768_8e-5  // 1 / sqrt(4 (2^32 - 1) / 12)
    }

    /// w_f(key) / a_f.
    @inline(__always)
    func weight(key: UInt64) -> Double { Self.gaussian(SplitMix64.mix(key ^ weightSalt)) }

    /// The planted logit of a sample's dense values and keys (key f at `keys[f * keyStride]`),
    /// summed in the same order as in `generate`, so it is the same Double.
    func logit(dense values: UnsafePointer<Float>, keys: UnsafePointer<UInt64>, keyStride: Int) -> Double {
        var logit = bias
        for j in 0..<dense.count { logit += dense[j].weight * Double(values[j]) }
        for f in 0..<sparse.count { logit += sparse[f].weightScale * weight(key: keys[f * keyStride]) }
        return logit
    }

    /// Generates samples `first ..< first + count` of the generator into batch slots
    /// `at ..< at + count` (keys at stride `stride`). Sample i draws from its own SplitMix64
    /// stream seeded by a hash of (seed, i): that is what makes it a pure function of both.
    func generate(first: UInt64, count: Int, into out: BatchColumns, stride: Int, at: Int, details: SampleDetails?) {
        let denseCount = dense.count, sparseCount = sparse.count
        let table = CriteoTables.shared.logOnePlus
        let bias = self.bias, weightSalt = self.weightSalt, streamSalt = self.streamSalt
        dense.withUnsafeBufferPointer { denseFeatures in
            sparse.withUnsafeBufferPointer { sparseFeatures in
              aliasEntries.withUnsafeBufferPointer { alias in
                for i in 0..<count {
                    var rng = SplitMix64(seed: SplitMix64.mix(streamSalt ^ (first &+ UInt64(i))))
                    let slot = at + i
                    var logit = bias
                    let denseOut = out.dense + slot * denseCount
                    for j in 0..<denseCount {
                        let feature = denseFeatures[j]
                        let r = rng.next()
                        var value: Float = 0
                        if r & 0xFFFF_FFFF >= feature.missingBelow {
                            let count = feature.count(uniformBits: r >> 40)
                            value = denseFeature(count: count, table: table)
                            details?.counts[j] = Int64(count)
                        } else {
                            details?.counts[j] = -1
                        }
                        denseOut[j] = value
                        logit += feature.weight * Double(value)
                    }
                    for f in 0..<sparseCount {
                        let feature = sparseFeatures[f]
                        let rank: Int64
                        if feature.aliasStart >= 0 {
                            // Top 32 bits pick a column, the low 32 bits keep it or take its alias.
                            let r = rng.next()
                            let column = Int(((r >> 32) &* UInt64(feature.zipf.count)) >> 32)
                            let entry = alias[feature.aliasStart + column]
                            rank = Int64(UInt32(truncatingIfNeeded: r) < entry.threshold ? column : Int(entry.alias)) + 1
                        } else {
                            rank = feature.zipf.sample(&rng)
                        }
                        let id = feature.id(rank: rank)
                        let key = clickKey(column: f, value: id)
                        out.keys[f * stride + slot] = key
                        logit += feature.weightScale * Self.gaussian(SplitMix64.mix(key ^ weightSalt))
                        if let details {
                            details.ranks[f] = rank
                            details.ids[f] = id
                        }
                    }
                    let u = Double(rng.next() >> 11) * 0x1p-53
                    out.labels[slot] = u * (1 + exp(-logit)) < 1 ? 1 : 0  // u < sigmoid(logit)
                    details?.logit.pointee = logit
                }
              }
            }
        }
    }

    // Small key spaces are drawn with Walker's alias method instead of rejection-inversion:
    // one random number, one table lookup and integer arithmetic only, against a log1p and an
    // exp. Half of Criteo-shaped features have small key spaces, so this is about a third of
    // the generator's time; tables of up to 4096 entries (32 KiB) keep them in cache.
    static let largestAliasTable: Int64 = 4096

    /// Column i of an alias table: keep i when the low 32 random bits are below `threshold`,
    /// else take `alias`.
    struct AliasEntry: Sendable {
        var threshold: UInt32
        var alias: UInt32
    }

    /// Vose's construction of an alias table for `probabilities` (summing to 1).
    static func aliasTable(_ probabilities: [Double]) -> [AliasEntry] {
        let n = probabilities.count
        var scaled = probabilities.map { $0 * Double(n) }
        var entries = (0..<n).map { AliasEntry(threshold: 0, alias: UInt32($0)) }
        var small = (0..<n).filter { scaled[$0] < 1 }, large = (0..<n).filter { scaled[$0] >= 1 }
        while let l = small.popLast() {
            guard let g = large.popLast() else { break }
            entries[l] = AliasEntry(threshold: UInt32(min(scaled[l] * 0x1p32, 0xFFFF_FFFF)), alias: UInt32(g))
            scaled[g] += scaled[l] - 1
            if scaled[g] < 1 { small.append(g) } else { large.append(g) }
        }
        // What is left has probability 1 up to rounding: it aliases itself, so it is always kept.
        return entries
    }
}

extension PlantedModel.DenseFeature {
    /// The Lomax count for the top 24 bits of a draw: u in (0, 1), count = floor(scale ·
    /// (u^(-1/α) - 1)). Heavy-tailed (finite mean, infinite variance for α < 2), like
    /// Criteo's counts.
    @inline(__always)
    func count(uniformBits bits: UInt64) -> UInt64 {
        let u = (Float(bits) + 0.5) * 0x1p-24
        return UInt64(scale * (powf(u, negativeInverseShape) - 1))
    }

    /// log(count + 1) of `count(uniformBits:)`.
    func value(uniformBits bits: UInt64, table: UnsafePointer<Float>) -> Float {
        denseFeature(count: count(uniformBits: bits), table: table)
    }
}
