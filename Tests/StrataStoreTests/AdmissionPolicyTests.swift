// AdmissionPolicy (FIFO window + CLOCK main + TinyLFU admission) against a plain model that
// keeps the same lists in arrays, walked exhaustively over short operation sequences for
// capacities 0...6 and randomly over long ones, with exact per-key access counts as the
// frequencies (what the shard gives it: index entry counts, the sketch for the rest);
// FrequencySketch against exact counts (counting, halve, raise); and the access counts kept
// in index entries (IndexEntry.countAccess, KeyIndex.halveCounts, KeyIndex.Reader).
import Testing
@_spi(Testing) import StrataStore
import StrataTestSupport

@Suite struct AdmissionPolicyTests {
    enum Op: CustomStringConvertible {
        /// `age` halves every access count, as the shard does every aging period.
        case admitCold, admitHot, evictReturn, touch(Int), release(Int), age
        var description: String {
            switch self {
            case .admitCold: "admitCold"
            case .admitHot: "admitHot"
            case .evictReturn: "evictReturn"
            case .touch(let i): "touch(\(i))"
            case .release(let i): "release(\(i))"
            case .age: "age"
            }
        }
    }

    static func apply(_ op: Op, _ h: inout PolicyHarness) {
        switch op {
        case .admitCold: h.admit(hot: false)
        case .admitHot: h.admit(hot: true)
        case .evictReturn: h.evictAndReturn()
        case .touch(let i): h.touch(i)
        case .release(let i): h.release(i)
        case .age: h.age()
        }
    }

    /// How a walk starts: empty, filled by admissions, or reloaded with adopt.
    enum Start: CaseIterable { case empty, filled, adopted }

    static func prepare(_ start: Start, _ h: inout PolicyHarness) {
        let c = h.model.capacity
        switch start {
        case .empty: break
        case .filled: for _ in 0..<c { h.admit(hot: false) }
        case .adopted:
            // Every slot, highest first, keyed so that some rows are hot.
            h.adopt((0..<c).reversed().map { (slot: $0, key: UInt64($0 % 4)) })
        }
    }

    /// Every sequence of `depth` operations from each start, for capacities 0...6.
    @Test(arguments: 0...6)
    func exhaustiveShortSequences(capacity: Int) {
        var alphabet: [Op] = [.admitCold, .admitHot, .evictReturn]
        // Touch and release by position in the model's occupied order (window, then main).
        for i in 0..<capacity { alphabet.append(.touch(i)); alphabet.append(.release(i)) }
        var failures = 0
        for start in capacity == 0 ? [.empty] : Start.allCases {
            // Deep enough from empty to fill the tier and evict; from a full tier, to evict,
            // release and refill.
            let depth = start == .empty ? [0: 4, 1: 6, 2: 5, 3: 4, 4: 4, 5: 3, 6: 3][capacity]!
                                        : [1: 5, 2: 4, 3: 4, 4: 3, 5: 3, 6: 3][capacity]!
            var total = 1
            for _ in 0..<depth { total *= alphabet.count }
            for code in 0..<total {
                var h = PolicyHarness(capacity: capacity)
                Self.prepare(start, &h)
                var c = code
                for _ in 0..<depth {
                    Self.apply(alphabet[c % alphabet.count], &h)
                    c /= alphabet.count
                    if h.problem != nil { break }
                }
                if let p = h.problem {
                    Issue.record("capacity \(capacity), start \(start): \(p)")
                    failures += 1
                    if failures > 2 { return }
                }
            }
        }
    }

    /// Long random sequences, for small capacities and ones with a window of several rows.
    @Test(arguments: [0, 1, 2, 3, 4, 5, 6, 150, 420])
    func randomSequences(capacity: Int) {
        var rng = SplitMix64(seed: UInt64(capacity) &+ 77)
        let runs = capacity <= 6 ? 150 : 3
        let length = capacity <= 6 ? 80 : 2 * capacity
        for run in 0..<runs {
            var h = PolicyHarness(capacity: capacity)
            if run % 3 == 2 && capacity > 0 {
                // Start from an adopt of a random subset in random order.
                let n = Int.random(in: 0...capacity, using: &rng)
                let slots = Array((0..<capacity).shuffled(using: &rng).prefix(n))
                h.adopt(slots.map { (slot: $0, key: UInt64.random(in: 0..<8, using: &rng)) })
            }
            for _ in 0..<length {
                let n = max(h.model.occupied.count, 1)
                let op: Op = switch Int.random(in: 0..<41, using: &rng) {
                case 0..<12: .admitCold
                case 12..<16: .admitHot
                case 16..<20: .evictReturn
                case 20..<32: .touch(Int.random(in: 0..<n, using: &rng))
                case 32..<40: .release(Int.random(in: 0..<n, using: &rng))
                default: .age
                }
                Self.apply(op, &h)
                if let p = h.problem {
                    Issue.record("capacity \(capacity) run \(run): \(p)")
                    return
                }
            }
        }
    }

    /// adopt for every subset of slots, in increasing, decreasing and a shuffled order: main
    /// fills first, then the window; the free slots are handed out lowest first.
    @Test(arguments: 0...6)
    func adoptEverySubset(capacity: Int) {
        var rng = SplitMix64(seed: 5)
        for subset in 0..<(1 << capacity) {
            let slots = (0..<capacity).filter { subset & (1 << $0) != 0 }
            for order in [slots, slots.reversed(), slots.shuffled(using: &rng)] {
                var h = PolicyHarness(capacity: capacity)
                h.adopt(order.map { (slot: $0, key: UInt64($0)) })
                // Hand out every free slot, then keep going with admissions (which now evict).
                let freeSlots = (0..<capacity).filter { !slots.contains($0) }
                var got: [Int] = []
                while got.count < freeSlots.count, let s = h.policy.takeFree() { got.append(s) }
                #expect(got == freeSlots, "capacity \(capacity) adopt \(order)")
                for s in got.reversed() { h.policy.returnEvicted(s) }  // put them back as they were
                for _ in 0..<(capacity + 2) { h.admit(hot: false) }
                if let p = h.problem { Issue.record("capacity \(capacity) adopt \(order): \(p)") }
            }
        }
    }

    /// Fresh policies hand out the lowest slots first and never the same slot twice.
    @Test(arguments: [0, 1, 2, 5, 6, 100, 1000])
    func freshPolicyHandsOutEachSlotOnceLowestFirst(capacity: Int) {
        var policy = AdmissionPolicy(capacity: capacity)
        #expect(policy.windowCapacity + policy.mainCapacity == capacity)
        #expect(policy.windowCapacity == (capacity == 0 ? 0 : max(1, capacity / 100)))
        var got: [Int] = []
        while let s = policy.takeFree() { got.append(s) }
        #expect(got == Array(0..<capacity))
        let full = policy.isFull, count = policy.count
        #expect(full)
        #expect(count == capacity)
    }

    // MARK: FrequencySketch

    /// The shard's aging period for a capacity: 50 × capacity, with capacities below 16
    /// counted as 16. The sketch itself no longer ages; the tests run past this to show it.
    static func agingPeriod(_ capacity: Int) -> Int { 50 * max(capacity, 16) }

    /// Estimates never fall below the true count (capped at 255) and never decrease, however
    /// many increments: the sketch only counts (halving is the shard's job, through `halve`).
    @Test(arguments: [0, 1, 6, 16, 64, 1000])
    func sketchNeverUndercountsOrDecays(capacity: Int) {
        var sketch = FrequencySketch(capacity: capacity)
        var rng = SplitMix64(seed: UInt64(capacity) + 3)
        let keys = (0..<UInt64(max(40, capacity / 4))).map { $0 &* 7919 }
        var counts = [Int](repeating: 0, count: keys.count)
        var previous = [Int](repeating: 0, count: keys.count)
        let steps = 3 * Self.agingPeriod(capacity)
        for step in 0..<steps {
            // Skewed: low indices far more often.
            let u = Double.random(in: 0..<1, using: &rng)
            let i = min(keys.count - 1, Int(Double(keys.count) * u * u * u))
            sketch.increment(KeyHash.of(keys[i]))
            counts[i] += 1
            // Around where the sketch used to halve itself (and its later halvings), and
            // regularly elsewhere.
            let nearOldHalving = (-2...2).contains { (step - Self.agingPeriod(capacity) / 2 + $0) % (Self.agingPeriod(capacity) / 2) == 0 }
            if step % 97 == 0 || nearOldHalving || step == steps - 1 {
                for (j, k) in keys.enumerated() {
                    let e = sketch.estimate(KeyHash.of(k))
                    if e < min(counts[j], 255) {
                        Issue.record("capacity \(capacity) step \(step): key \(k) estimated \(e), counted \(counts[j])")
                        return
                    }
                    if e < previous[j] || e > 255 {
                        Issue.record("capacity \(capacity) step \(step): key \(k) went from \(previous[j]) to \(e) with no halve()")
                        return
                    }
                    previous[j] = e
                }
            }
        }
        #expect(counts.max()! > 255, "the walk should reach the counters' top")
        #expect(sketch.estimate(KeyHash.of(keys[0])) == 255, "the most frequent key stays saturated")
    }

    /// A lone key reads exactly its count up to 255 and stays there.
    @Test func sketchSaturatesAt255() {
        var sketch = FrequencySketch(capacity: 100)
        let h = KeyHash.of(42)
        for n in 1...400 {
            sketch.increment(h)
            let e = sketch.estimate(h)
            if e != min(n, 255) {
                Issue.record("after \(n) increments the estimate is \(e)")
                return
            }
        }
        #expect(sketch.estimate(KeyHash.of(43)) <= 255)
    }

    /// A sketch loaded with a spread of counts, some saturated, and the keys to read it by:
    /// `keys` were incremented, `others` not (they read whatever they share with `keys`).
    static func load(_ sketch: inout FrequencySketch, seed: UInt64) -> (keys: [UInt64], others: [UInt64]) {
        let capacity = sketch.bytes / 16  // four counters of the sketch's per row of capacity
        var rng = SplitMix64(seed: seed)
        let keys = (0..<UInt64(2 * max(capacity, 16))).map { $0 &* 0x9E37_79B9 &+ 17 }
        let chosen = [0, 1, 2, 3, 127, 128, 255, 256, 300]
        for (n, k) in keys.enumerated() {
            // The edges first, then random counts.
            let times = n < chosen.count ? chosen[n] : Int.random(in: 0...300, using: &rng)
            for _ in 0..<times { sketch.increment(KeyHash.of(k)) }
        }
        let others = (0..<UInt64(200)).map { ($0 &+ 1) &* 0x1_0000_0001 &+ 5 }
        return (keys, others)
    }

    /// `halve()` halves every counter, rounding down, with no bit carried between
    /// neighbouring counters: every estimate (the least of four counters) becomes exactly
    /// half of what it was, rounded down, for keys counted and keys never seen alike.
    @Test(arguments: [0, 1, 16, 100, 1000])
    func halveHalvesEveryCounter(capacity: Int) {
        var sketch = FrequencySketch(capacity: capacity)
        let (keys, others) = Self.load(&sketch, seed: UInt64(capacity) &+ 11)
        let universe = keys + others
        var before = universe.map { sketch.estimate(KeyHash.of($0)) }
        #expect(before.contains(255) && before.contains { $0 > 1 && $0 % 2 == 1 }, "the load should hold saturated and odd counts")
        // Halve until everything is zero: 255 needs 8 halvings.
        for round in 1...9 {
            sketch.halve()
            let after = universe.map { sketch.estimate(KeyHash.of($0)) }
            for (j, k) in universe.enumerated() where after[j] != before[j] >> 1 {
                Issue.record("capacity \(capacity) halving \(round): key \(k) went \(before[j]) -> \(after[j]), expected \(before[j] >> 1)")
                return
            }
            before = after
        }
        #expect(before.allSatisfy { $0 == 0 }, "capacity \(capacity): nine halvings should clear every counter")
        // Counting starts again from zero.
        let k = keys[7]
        for n in 1...3 {
            sketch.increment(KeyHash.of(k))
            #expect(sketch.estimate(KeyHash.of(k)) == n)
        }
    }

    /// Halving a saturated counter gives 127, and counting on from there works.
    @Test func halvingASaturatedKeyThenCountingOn() {
        var sketch = FrequencySketch(capacity: 64)
        let h = KeyHash.of(99)
        for _ in 0..<300 { sketch.increment(h) }
        #expect(sketch.estimate(h) == 255)
        sketch.halve()
        #expect(sketch.estimate(h) == 127)
        for _ in 0..<10 { sketch.increment(h) }
        #expect(sketch.estimate(h) == 137)
        sketch.halve()
        #expect(sketch.estimate(h) == 68)
    }

    /// `raise(h, to: c)` makes each of the key's four counters at least min(c, 255): the key
    /// then reads max(before, min(c, 255)) exactly; no estimate falls, and none rises past
    /// that value (only counters the key shares can have grown).
    @Test(arguments: [0, 1, 16, 100])
    func raiseSetsAFloorForTheKey(capacity: Int) {
        var sketch = FrequencySketch(capacity: capacity)
        let (keys, others) = Self.load(&sketch, seed: UInt64(capacity) &+ 23)
        let universe = keys + others
        var rng = SplitMix64(seed: UInt64(capacity) &+ 29)
        var before = universe.map { sketch.estimate(KeyHash.of($0)) }
        let targets: [Int] = [0, 1, 2, 7, 100, 254, 255, 256, 1000, 65535]
        var raisedToTop = false
        for step in 0..<400 {
            let j = step < universe.count ? (step * 7) % universe.count : Int.random(in: 0..<universe.count, using: &rng)
            let key = universe[j]
            let count = step < targets.count ? targets[step] : targets.randomElement(using: &rng)!
            sketch.raise(KeyHash.of(key), to: count)
            let capped = min(count, 255)
            let want = max(before[j], capped)
            let after = universe.map { sketch.estimate(KeyHash.of($0)) }
            if after[j] != want {
                Issue.record("capacity \(capacity): raise(key \(key), to: \(count)) from \(before[j]) reads \(after[j]), expected \(want)")
                return
            }
            for (i, k) in universe.enumerated() where after[i] < before[i] || after[i] > max(before[i], capped) {
                Issue.record("capacity \(capacity): raise(key \(key), to: \(count)) moved key \(k) from \(before[i]) to \(after[i])")
                return
            }
            if count >= 255 { raisedToTop = true }
            before = after
        }
        #expect(raisedToTop)
    }

    /// Raising below the current count, or to zero, changes nothing; raising a key that was
    /// never counted makes it read the count (the shard's way of remembering the count of a
    /// row leaving the index), and later increments count on from there.
    @Test func raiseRemembersACountOnlyUpwards() {
        var sketch = FrequencySketch(capacity: 1000)
        let h = KeyHash.of(12345)
        #expect(sketch.estimate(h) == 0)
        sketch.raise(h, to: 0)
        #expect(sketch.estimate(h) == 0)
        sketch.raise(h, to: 40)
        #expect(sketch.estimate(h) == 40)
        sketch.raise(h, to: 10)
        #expect(sketch.estimate(h) == 40, "raise must never lower a count")
        sketch.increment(h)
        #expect(sketch.estimate(h) == 41)
        sketch.raise(h, to: 70_000)
        #expect(sketch.estimate(h) == 255, "counts above 255 are capped")
        sketch.halve()
        #expect(sketch.estimate(h) == 127)
    }

    @Test func sketchSizeCoversCapacity() {
        for capacity in [0, 1, 4, 5, 16, 17, 100, 1000] {
            let sketch = FrequencySketch(capacity: capacity)
            // Four counters per row of capacity, 64 counters (one cache line) per block.
            #expect(sketch.bytes >= 64 && sketch.bytes >= capacity && sketch.bytes & (sketch.bytes - 1) == 0,
                    "capacity \(capacity): \(sketch.bytes) bytes")
        }
    }

    // MARK: Access counts in index entries

    static let flagCombinations: [UInt32] = [
        0, IndexEntry.dirty, IndexEntry.persisted, IndexEntry.virgin,
        IndexEntry.dirty | IndexEntry.persisted, IndexEntry.persisted | IndexEntry.virgin,
        IndexEntry.dirty | IndexEntry.persisted | IndexEntry.virgin,
        IndexEntry.flagMask,  // every bit the flags may ever use
    ]

    /// The count lives in the high 16 bits: each access adds one, up to 65535, where it stays;
    /// the flag bits, key and location never change.
    @Test(arguments: flagCombinations)
    func countAccessCountsUpToSaturation(_ flags: UInt32) {
        #expect(IndexEntry.flagMask == 0xFFFF && IndexEntry.countUnit == 1 << 16)
        let location = IndexEntry.location(.warm, 12345)
        var e = IndexEntry(key: 77, location: location, flags: flags)
        #expect(e.count == 0)
        for n in 1...65_540 {
            e.countAccess()
            if e.count != min(n, 65_535) || e.flags & IndexEntry.flagMask != flags || e.key != 77 || e.location != location {
                Issue.record("flags \(flags) after \(n) accesses: count \(e.count), flags \(String(e.flags, radix: 16)), key \(e.key), location \(e.location)")
                return
            }
        }
        #expect(e.flags == 0xFFFF_0000 | flags)
        #expect(e.tier == .warm && e.slot == 12345)
        // Starting just below the top.
        var f = IndexEntry(key: 1, location: 0, flags: (65_533 << 16) | flags)
        for want in [65_534, 65_535, 65_535, 65_535] {
            f.countAccess()
            #expect(f.count == want && f.flags & IndexEntry.flagMask == flags, "flags \(flags): \(f.count), wanted \(want)")
        }
    }

    /// An index of `n` keys with random flags and counts, and what each entry should hold.
    static func fill(_ index: inout KeyIndex, _ n: Int, seed: UInt64) -> [UInt64: IndexEntry] {
        var rng = SplitMix64(seed: seed)
        var expected: [UInt64: IndexEntry] = [:]
        let edges: [UInt32] = [0, 1, 2, 3, 65_534, 65_535]
        for i in 0..<n {
            let key = UInt64(i) &* 0x9E37_79B9_7F4A_7C15 &+ 3
            let count = i < edges.count ? edges[i] : UInt32.random(in: 0...65_535, using: &rng)
            let flags = flagCombinations[i % flagCombinations.count] | count << 16
            let tier: Tier = [.hot, .warm, .spill, .none][i % 4]
            let location = IndexEntry.location(tier, Int.random(in: 0...Int(IndexEntry.slotMask), using: &rng))
            index.insert(key, hash: KeyHash.of(key), location: location, flags: flags)
            expected[key] = IndexEntry(key: key, location: location, flags: flags)
        }
        return expected
    }

    /// Checks every entry of the index against `expected`; nil when they agree.
    static func countProblem(_ index: borrowing KeyIndex, _ expected: [UInt64: IndexEntry], after what: String) -> String? {
        if index.count != expected.count { return "\(what): count \(index.count), expected \(expected.count)" }
        var seen = 0
        for p in 0..<index.capacity where index[p].location != IndexEntry.vacant {
            seen += 1
            let e = index[p]
            guard let want = expected[e.key] else { return "\(what): unexpected key \(e.key) at \(p)" }
            if e.location != want.location || e.flags != want.flags {
                return "\(what): key \(e.key) has location \(e.location) flags 0x\(String(e.flags, radix: 16)), expected \(want.location) 0x\(String(want.flags, radix: 16))"
            }
        }
        if seen != expected.count { return "\(what): \(seen) occupied positions, expected \(expected.count)" }
        for (k, want) in expected {
            guard let p = index.find(k, hash: KeyHash.of(k)) else { return "\(what): key \(k) not found" }
            if index[p].count != want.count { return "\(what): key \(k) count \(index[p].count), expected \(want.count)" }
        }
        return nil
    }

    /// halveCounts halves every entry's count (rounding down) and leaves keys, locations and
    /// flag bits alone, including after removals have moved entries about; sixteen halvings
    /// clear every count.
    @Test(arguments: [1, 5, 12, 13, 200, 3000])
    func halveCountsKeepsFlagsAndLocations(_ n: Int) {
        var index = KeyIndex(expected: max(n / 2, 1))  // grows on the way
        var expected = Self.fill(&index, n, seed: UInt64(n))
        if let p = Self.countProblem(index, expected, after: "insertion") { Issue.record("\(p)"); return }
        // Remove every third key, so backward shifts have moved entries and vacated
        // positions once held keys with counts and flags.
        for (i, k) in expected.keys.sorted().enumerated() where i % 3 == 1 {
            index.remove(at: index.find(k, hash: KeyHash.of(k))!)
            expected[k] = nil
        }
        if let p = Self.countProblem(index, expected, after: "removals") { Issue.record("\(p)"); return }
        for round in 1...17 {
            index.halveCounts()
            for (k, e) in expected {
                var h = e
                h.flags = UInt32(e.count >> 1) << 16 | (e.flags & IndexEntry.flagMask)
                expected[k] = h
            }
            if let p = Self.countProblem(index, expected, after: "halving \(round)") { Issue.record("\(p)"); return }
        }
        #expect(expected.values.allSatisfy { $0.count == 0 })
        // Counting works on from zero.
        if let k = expected.keys.first, let p = index.find(k, hash: KeyHash.of(k)) {
            index.entries[p].countAccess()
            #expect(index[p].count == 1 && index[p].flags & IndexEntry.flagMask == expected[k]!.flags & IndexEntry.flagMask)
        }
    }

    /// An exact halving on hand-picked values: odd counts round down; saturated 65535 → 32767.
    @Test func halveCountsOnChosenEntries() {
        var index = KeyIndex(expected: 8)
        let rows: [(key: UInt64, count: UInt32, flags: UInt32, half: Int)] = [
            (10, 0, IndexEntry.dirty, 0), (11, 1, IndexEntry.virgin | IndexEntry.persisted, 0),
            (12, 3, 0, 1), (13, 65_535, IndexEntry.flagMask, 32_767), (14, 65_534, IndexEntry.dirty, 32_767),
            (15, 2, IndexEntry.persisted, 1),
        ]
        for (i, r) in rows.enumerated() {
            index.insert(r.key, hash: KeyHash.of(r.key), location: IndexEntry.location(.spill, i), flags: r.count << 16 | r.flags)
        }
        index.halveCounts()
        for (i, r) in rows.enumerated() {
            let e = index[index.find(r.key, hash: KeyHash.of(r.key))!]
            #expect(e.count == r.half && e.flags & IndexEntry.flagMask == r.flags && e.tier == .spill && e.slot == i,
                    "key \(r.key): count \(e.count) flags 0x\(String(e.flags, radix: 16)) at \(e.tier) \(e.slot)")
        }
    }

    /// The reader finds what the index finds and gives each key's count, 0 for keys not in
    /// the index; being a view, it sees counts changed after it was taken.
    @Test(arguments: [1, 7, 100, 2000])
    func readerGivesCounts(_ n: Int) {
        var index = KeyIndex(expected: max(n / 2, 1))
        var expected = Self.fill(&index, n, seed: UInt64(n) &+ 1)
        // Some entries go, so some keys are absent and runs have been shifted.
        for (i, k) in expected.keys.sorted().enumerated() where i % 4 == 2 {
            index.remove(at: index.find(k, hash: KeyHash.of(k))!)
            expected[k] = nil
        }
        let reader = index.reader
        let copy = reader  // a copyable value: copies read the same memory
        #expect(reader.mask == index.mask)
        let absent = (0..<UInt64(300)).map { $0 &* 31 &+ 1 }.filter { expected[$0] == nil }
        for (k, e) in expected {
            let p = reader.find(k, hash: KeyHash.of(k))
            if p == nil || p != index.find(k, hash: KeyHash.of(k)) || reader.count(k) != e.count || copy.count(k) != e.count {
                Issue.record("key \(k): reader finds \(String(describing: p)), index \(String(describing: index.find(k, hash: KeyHash.of(k)))); count \(reader.count(k)), expected \(e.count)")
                return
            }
        }
        for k in absent where reader.count(k) != 0 || reader.find(k, hash: KeyHash.of(k)) != nil {
            Issue.record("absent key \(k): count \(reader.count(k))")
            return
        }
        // Counts changed through the index show through a reader taken before.
        for k in expected.keys.sorted().prefix(20) {
            let p = index.find(k, hash: KeyHash.of(k))!
            let before = index[p].count
            index.entries[p].countAccess()
            #expect(copy.count(k) == min(before + 1, 65_535), "key \(k)")
        }
        index.halveCounts()
        for (k, _) in expected.prefix(20) {
            let p = index.find(k, hash: KeyHash.of(k))!
            #expect(copy.count(k) == index[p].count)
        }
    }
}

extension AdmissionPolicyTests {
    /// The policy as arrays: what each operation should do, spelled out.
    struct PolicyModel {
        let capacity: Int
        let windowCapacity: Int
        let mainCapacity: Int
        var window: [Int] = []  // oldest first
        var main: [Int] = []  // CLOCK order: the hand is at the front
        var referenced: Set<Int> = []
        var keys: [Int: UInt64] = [:]  // the key in each occupied slot
        var free: [Int]  // a stack: the last is handed out next
        /// Slots handed out by takeFree or evict and not yet filled or returned.
        var taken: Set<Int> = []
        var evicted: Set<Int> = []

        init(capacity: Int) {
            self.capacity = capacity
            windowCapacity = capacity == 0 ? 0 : max(1, capacity / 100)
            mainCapacity = capacity - windowCapacity
            free = Array((0..<capacity).reversed())
        }

        var occupied: [Int] { window + main }
        var count: Int { capacity - free.count }
        var isFull: Bool { free.isEmpty }

        mutating func takeFree() -> Int? {
            guard let slot = free.popLast() else { return nil }
            taken.insert(slot)
            return slot
        }

        mutating func insert(_ slot: Int, key: UInt64) {
            precondition(taken.remove(slot) != nil, "model: inserting a slot that was not handed out")
            evicted.remove(slot)
            keys[slot] = key
            referenced.remove(slot)
            window.append(slot)
            if window.count > windowCapacity { main.append(window.removeFirst()) }
        }

        mutating func touch(_ slot: Int) { referenced.insert(slot) }

        /// `frequency` gives a key's recent access count.
        mutating func chooseEviction(_ frequency: (UInt64) -> Int) -> (slot: Int, admitsCandidate: Bool) {
            let candidate = window[0]
            if main.isEmpty { return (candidate, false) }
            while referenced.contains(main[0]) {
                referenced.remove(main[0])
                main.append(main.removeFirst())
            }
            let victim = main[0]
            if frequency(keys[candidate]!) > frequency(keys[victim]!) { return (victim, true) }
            return (candidate, false)
        }

        mutating func evict(_ slot: Int, admitsCandidate: Bool) {
            if let i = window.firstIndex(of: slot) { window.remove(at: i) } else { main.removeAll { $0 == slot } }
            referenced.remove(slot)
            keys[slot] = nil
            taken.insert(slot)
            evicted.insert(slot)
            if admitsCandidate { main.append(window.removeFirst()) }
        }

        mutating func release(_ slot: Int) {
            if let i = window.firstIndex(of: slot) { window.remove(at: i) } else { main.removeAll { $0 == slot } }
            referenced.remove(slot)
            keys[slot] = nil
            free.append(slot)
        }

        mutating func returnEvicted(_ slot: Int) {
            taken.remove(slot)
            evicted.remove(slot)
            free.append(slot)
        }

        mutating func adopt(_ rows: [(slot: Int, key: UInt64)]) {
            for (slot, key) in rows {
                keys[slot] = key
                if main.count < mainCapacity { main.append(slot) } else { window.append(slot) }
            }
            let used = Set(rows.map(\.slot))
            free = (0..<capacity).reversed().filter { !used.contains($0) }
        }
    }

    /// One policy and its model driven in lockstep, with exact access counts by key as the
    /// frequencies both see; every step is checked.
    struct PolicyHarness: ~Copyable {
        var policy: AdmissionPolicy
        var model: PolicyModel
        /// Recent accesses per key: what the shard's index entries (and sketch) count.
        var counts: [UInt64: Int] = [:]
        var problem: String?
        var log: [Event] = []
        var nextKey: UInt64 = 1_000
        /// Keys that were counted often before the run.
        static let hotKeys: [UInt64] = [1, 2, 3]

        enum Event: CustomStringConvertible {
            case admit(UInt64), evictReturn, touch(Int), release(Int), adopt([Int]), age
            var description: String {
                switch self {
                case .admit(let k): "admit(key \(k))"
                case .evictReturn: "evictReturn"
                case .touch(let s): "touch(\(s))"
                case .release(let s): "release(\(s))"
                case .adopt(let s): "adopt(\(s))"
                case .age: "age"
                }
            }
        }

        init(capacity: Int) {
            policy = AdmissionPolicy(capacity: capacity)
            model = PolicyModel(capacity: capacity)
            for (i, k) in Self.hotKeys.enumerated() { counts[k] = 4 + 3 * i }
        }

        mutating func fail(_ message: String) {
            if problem == nil { problem = message + "\n  after: " + log.map(\.description).joined(separator: "; ") }
        }

        /// Compares everything observable with the model.
        mutating func check() {
            if problem != nil { return }
            let m = model
            if policy.capacity != m.capacity || policy.windowCapacity != m.windowCapacity || policy.mainCapacity != m.mainCapacity {
                return fail("capacities \(policy.capacity)/\(policy.windowCapacity)/\(policy.mainCapacity)")
            }
            if policy.windowCapacity + policy.mainCapacity != policy.capacity { return fail("regions do not add up") }
            if policy.count != m.count { return fail("count \(policy.count), model \(m.count)") }
            if policy.isFull != m.isFull { return fail("isFull \(policy.isFull), model \(m.isFull)") }
            if m.window.count > m.windowCapacity || m.main.count > m.mainCapacity { return fail("model region over capacity") }
            var occupied: [Int] = []
            occupied.reserveCapacity(m.capacity)
            policy.forEachOccupied { occupied.append($0) }
            if occupied != m.occupied { return fail("occupied \(occupied), model window \(m.window) main \(m.main)") }
            // Free, taken and occupied slots partition the slots: none is in two places or lost.
            var place = [UInt8](repeating: 0, count: m.capacity)
            for s in occupied { place[s] += 1 }
            for s in m.free { place[s] += 1 }
            for s in m.taken { place[s] += 1 }
            if place.contains(where: { $0 != 1 }) {
                return fail("slots double counted or lost: occupied \(occupied) free \(m.free) taken \(m.taken)")
            }
            #if DEBUG
            policy.checkInvariants()
            #endif
        }

        mutating func access(_ key: UInt64) { counts[key, default: 0] += 1 }

        /// Every count halves (the shard's aging), which makes ties common.
        mutating func age() {
            log.append(.age)
            for (k, c) in counts { counts[k] = c >> 1 }
            check()
        }

        /// A new row arrives: a free slot, or the policy's victim leaves first (the shard's path).
        mutating func admit(hot: Bool) {
            let key: UInt64
            if hot {
                key = Self.hotKeys[Int(nextKey % 3)]
                nextKey += 1
            } else {
                key = nextKey
                nextKey += 1
            }
            access(key)
            log.append(.admit(key))
            if model.capacity == 0 {
                if policy.takeFree() != nil { fail("capacity 0 handed out a slot") }
                if !policy.isFull { fail("capacity 0 is not full") }
                return
            }
            let slot: Int
            if let free = policy.takeFree() {
                guard let expected = model.takeFree() else { return fail("takeFree gave \(free) when full") }
                if free != expected { return fail("takeFree gave \(free), model \(expected)") }
                if model.occupied.contains(free) || model.taken.count != 1 { return fail("slot \(free) handed out twice") }
                slot = free
            } else {
                if !model.isFull { return fail("takeFree nil with \(model.free.count) free") }
                slot = evictOne()
                if problem != nil { return }
            }
            policy.insert(slot, key: key)
            model.insert(slot, key: key)
            check()
        }

        /// chooseEviction + evict on a full tier; returns the emptied slot.
        mutating func evictOne() -> Int {
            precondition(model.isFull && model.capacity > 0)
            if !policy.isFull { fail("evicting when not full"); return -1 }
            let counts = self.counts
            var asked: [UInt64] = []
            let choice = policy.chooseEviction { key in
                asked.append(key)
                return counts[key] ?? 0
            }
            // The policy may only ask about rows it holds (the shard answers from their index
            // entries).
            let held = Set(model.occupied.map { model.keys[$0]! })
            if let stranger = asked.first(where: { !held.contains($0) }) {
                fail("chooseEviction asked the frequency of key \(stranger), which no slot holds (held: \(held.sorted()))")
                return -1
            }
            let expected = model.chooseEviction { counts[$0] ?? 0 }
            if choice.slot != expected.slot || choice.admitsCandidate != expected.admitsCandidate {
                fail("chooseEviction (\(choice.slot), \(choice.admitsCandidate)), model \(expected)")
                return -1
            }
            policy.evict(choice)
            model.evict(choice.slot, admitsCandidate: choice.admitsCandidate)
            var stillThere = false
            policy.forEachOccupied { if $0 == choice.slot { stillThere = true } }
            if stillThere { fail("evicted slot \(choice.slot) still occupied") }
            return choice.slot
        }

        /// A row leaves because the tier is full, but its replacement goes elsewhere.
        mutating func evictAndReturn() {
            guard model.isFull && model.capacity > 0 else { return }
            log.append(.evictReturn)
            let slot = evictOne()
            if problem != nil { return }
            policy.returnEvicted(slot)
            model.returnEvicted(slot)
            check()
        }

        mutating func touch(_ i: Int) {
            let occ = model.occupied
            guard i < occ.count else { return }
            let slot = occ[i]
            log.append(.touch(slot))
            access(model.keys[slot]!)
            policy.touch(slot)
            model.touch(slot)
            check()
        }

        mutating func release(_ i: Int) {
            let occ = model.occupied
            guard i < occ.count else { return }
            let slot = occ[i]
            log.append(.release(slot))
            policy.release(slot)
            model.release(slot)
            check()
        }

        mutating func adopt(_ rows: [(slot: Int, key: UInt64)]) {
            log.append(.adopt(rows.map(\.slot)))
            policy.adopt(rows)
            model.adopt(rows)
            check()
        }
    }
}
