// The batch helpers of Table.swift: UniqueKeys (duplicates merged, gradients summed in batch
// order) and firstNonFinite (the vectorized NaN/infinity check).
import Testing
@_spi(Testing) import StrataStore
import StrataTestSupport

@Suite struct BatchPreparationTests {
    // MARK: UniqueKeys

    /// The model: keys in order of first appearance; each key's gradient the left-to-right
    /// Float sum of its rows in batch order.
    static func model(_ keys: [UInt64], _ gradients: [Float], _ d: Int) -> (keys: [UInt64], gradients: [Float]) {
        var order: [UInt64] = []
        var sums: [UInt64: [Float]] = [:]
        for (i, k) in keys.enumerated() {
            let g = Array(gradients[i * d ..< (i + 1) * d])
            if let s = sums[k] {
                sums[k] = zip(s, g).map { $0 + $1 }
            } else {
                sums[k] = g
                order.append(k)
            }
        }
        return (order, order.flatMap { sums[$0]! })
    }

    static func merged(_ keys: [UInt64], _ gradients: [Float], _ d: Int) -> (keys: [UInt64], gradients: [Float]) {
        keys.withUnsafeBufferPointer { k in
            gradients.withUnsafeBufferPointer { g in
                let unique = UniqueKeys(k, g, dimension: d)
                return unique.withBuffers { uk, ug in (Array(uk), Array(UnsafeBufferPointer(start: ug, count: uk.count * d))) }
            }
        }
    }

    /// Gradient values whose sum depends on the order of addition in Float.
    static let orderSensitive: [Float] = [1e8, 1, -1e8, 0.1, 3e-8, -0.5, 7]

    /// Every batch of up to six keys over an alphabet of three (two of them colliding in the
    /// merge's hash table), for dimensions 1...3.
    @Test(arguments: 1...3)
    func everySmallBatch(dimension d: Int) {
        let colliding = KeyIndexTests.keys(homing: 5, count: 2)  // same bucket of a 16-entry table
        let alphabet = colliding + [KeyIndexTests.keys(homing: 6, count: 1)[0]]
        var failures = 0
        for n in 0...6 {
            var total = 1
            for _ in 0..<n { total *= alphabet.count }
            for code in 0..<total {
                var c = code
                var keys: [UInt64] = []
                for _ in 0..<n { keys.append(alphabet[c % alphabet.count]); c /= alphabet.count }
                let gradients = (0..<(n * d)).map { Self.orderSensitive[($0 * 5 + code) % Self.orderSensitive.count] }
                let got = Self.merged(keys, gradients, d)
                let want = Self.model(keys, gradients, d)
                if got.keys != want.keys || got.gradients.bitPatterns != want.gradients.bitPatterns {
                    Issue.record("keys \(keys) gradients \(gradients): got \(got), want \(want)")
                    failures += 1
                    if failures > 3 { return }
                }
            }
        }
    }

    /// Summing in batch order matters and is what happens: (1e8 + 1) + −1e8 is 0 in Float,
    /// where any other order gives 1.
    @Test func sumsInBatchOrder() {
        let got = Self.merged([7, 9, 7, 7], [1e8, 5, 1, -1e8], 1)
        #expect(got.keys == [7, 9])
        #expect(got.gradients.bitPatterns == [Float(0), 5].bitPatterns)
        let reversed = Self.merged([7, 7, 9, 7], [-1e8, 1, 5, 1e8], 1)
        #expect(reversed.gradients.bitPatterns == [Float(0), 5].bitPatterns)
        let other = Self.merged([7, 7, 7], [1e8, -1e8, 1], 1)
        #expect(other.gradients == [1])
    }

    /// Larger batches: many duplicates, keys crowding a few buckets of the merge's table,
    /// the extreme keys.
    @Test func largeRandomBatches() {
        var rng = SplitMix64(seed: 404)
        for round in 0..<60 {
            let n = Int.random(in: 2...600, using: &rng)
            let d = Int.random(in: 1...5, using: &rng)
            let universe = (0..<Int.random(in: 1...80, using: &rng)).map { i -> UInt64 in
                switch i % 4 {
                case 0: UInt64.max - UInt64(i)
                case 1: UInt64(i)
                default: rng.next()
                }
            }
            let keys = (0..<n).map { _ in universe.randomElement(using: &rng)! }
            let gradients = (0..<(n * d)).map { _ in Float.random(in: -1000..<1000, using: &rng) }
            let got = Self.merged(keys, gradients, d)
            let want = Self.model(keys, gradients, d)
            if got.keys != want.keys || got.gradients.bitPatterns != want.gradients.bitPatterns {
                Issue.record("round \(round): n \(n) d \(d): merged keys or sums differ")
                return
            }
        }
    }

    /// With no duplicates (or a single key, or none) the batch is passed through unchanged.
    @Test func batchesWithoutDuplicatesPassThrough() {
        #expect(Self.merged([], [], 4).keys.isEmpty)
        #expect(Self.merged([3], [1, 2], 2) == ([3], [1, 2]))
        let keys: [UInt64] = Array(0..<100).reversed()
        let gradients = (0..<200).map { Float($0) }
        let got = Self.merged(keys, gradients, 2)
        #expect(got.keys == keys && got.gradients == gradients)
    }

    // MARK: firstNonFinite

    static func firstNonFinite(_ values: [Float], offset: Int = 0) -> Int? {
        values.withUnsafeBufferPointer { StrataStore.firstNonFinite(UnsafeBufferPointer(rebasing: $0[offset...])) }
    }

    /// Finite values whose plain sum overflows, underflows or cancels; the check must not
    /// see anything in them.
    static func finiteFiller(_ n: Int, _ variant: Int) -> [Float] {
        let pool: [Float] = [.greatestFiniteMagnitude, -.greatestFiniteMagnitude, 3e38, 1, -0.0, .leastNonzeroMagnitude,
                             -.leastNormalMagnitude, 65504, 1e-30, .greatestFiniteMagnitude]
        return (0..<n).map { pool[($0 + variant) % pool.count] }
    }

    static let nonFinite: [Float] = [.nan, -.nan, .signalingNaN, .infinity, -.infinity, Float(bitPattern: 0x7FC0_1234)]

    /// Every length up to 50 (zero, one and more full 16-lane blocks, every tail), every
    /// position, every kind of non-finite value, alone and followed by another.
    @Test func findsEveryNonFiniteAtItsIndex() {
        var failures = 0
        for n in 0...50 {
            let finite = Self.finiteFiller(n, n)
            if let got = Self.firstNonFinite(finite) {
                Issue.record("length \(n): all finite, reported \(got)")
                failures += 1
            }
            for p in 0..<n {
                for (k, bad) in Self.nonFinite.enumerated() {
                    var values = finite
                    values[p] = bad
                    if k % 2 == 1 && p + 1 < n { values[n - 1] = Self.nonFinite[(k + 1) % Self.nonFinite.count] }  // a later one too
                    let got = Self.firstNonFinite(values)
                    if got != p {
                        Issue.record("length \(n): \(bad) at \(p), reported \(String(describing: got))")
                        failures += 1
                        if failures > 5 { return }
                    }
                }
            }
        }
    }

    /// The same from unaligned starting addresses, and in long buffers.
    @Test func unalignedAndLongBuffers() {
        for offset in 1...3 {
            for n in [15, 16, 17, 33, 1000] {
                var values = Self.finiteFiller(n + offset, offset)
                #expect(Self.firstNonFinite(values, offset: offset) == nil, "offset \(offset) length \(n)")
                for p in [0, n / 2, n - 1] {
                    let saved = values[offset + p]
                    values[offset + p] = .infinity
                    #expect(Self.firstNonFinite(values, offset: offset) == p, "offset \(offset) length \(n): inf at \(p)")
                    values[offset + p] = saved
                }
            }
        }
        // A million values that sum to infinity many times over: none reported.
        let huge = [Float](repeating: .greatestFiniteMagnitude, count: 1 << 20)
        #expect(Self.firstNonFinite(huge) == nil)
    }
}
