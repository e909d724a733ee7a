// KeyIndex: open addressing with linear probing and backward-shift deletion. The tests walk
// every insert/remove order of small key sets whose keys were searched out to land in chosen
// buckets (the same bucket, runs that wrap past the end of the table, runs whose members have
// homes inside the gap a deletion opens), and check the index against a Dictionary and the
// probing invariant after every single step.
import Testing
@_spi(Testing) import StrataStore
import StrataTestSupport

@Suite struct KeyIndexTests {
    // MARK: Helpers

    static func home(_ key: UInt64, mask: Int) -> Int { Int(truncatingIfNeeded: KeyHash.of(key)) & mask }

    /// `count` distinct keys (in increasing order, from `start` on) whose home bucket under
    /// `mask` is `bucket`, skipping `excluding`.
    static func keys(homing bucket: Int, mask: Int = 15, count: Int, from start: UInt64 = 1,
                     excluding: Set<UInt64> = []) -> [UInt64] {
        var found: [UInt64] = []
        var k = start
        while found.count < count {
            if home(k, mask: mask) == bucket && !excluding.contains(k) { found.append(k) }
            k += 1
        }
        return found
    }

    /// Keys with the given home buckets (in a capacity-16 index), all distinct.
    static func keys(homes: [Int]) -> [UInt64] {
        var used: Set<UInt64> = []
        var result: [UInt64] = []
        for h in homes {
            let k = keys(homing: h, count: 1, excluding: used)[0]
            used.insert(k)
            result.append(k)
        }
        return result
    }

    /// Checks everything about the index against the model; nil when all is well.
    static func problem(_ index: borrowing KeyIndex, _ model: [UInt64: UInt32], probing universe: [UInt64]) -> String? {
        let mask = index.mask
        guard index.capacity == mask + 1, index.capacity >= 16, index.capacity & mask == 0 else {
            return "capacity \(index.capacity) is not a power of two >= 16"
        }
        if index.count != model.count { return "count \(index.count), model has \(model.count)" }
        if index.count * 4 > index.capacity * 3 { return "load factor above 3/4: \(index.count)/\(index.capacity)" }
        var occupied = 0
        for p in 0...mask {
            let e = index[p]
            if e.location == IndexEntry.vacant { continue }
            occupied += 1
            guard let location = model[e.key] else { return "position \(p) holds key \(e.key), which was removed or never inserted" }
            if e.location != location { return "key \(e.key) has location \(e.location), expected \(location)" }
            // Linear probing: no vacancy between the key's home and its position.
            var q = home(e.key, mask: mask)
            while q != p {
                if index[q].location == IndexEntry.vacant {
                    return "key \(e.key) at \(p) is unreachable from its home \(home(e.key, mask: mask)): \(q) is vacant"
                }
                q = (q + 1) & mask
            }
        }
        // With every occupied key in the model, equal counts also rule out a key stored twice
        // (some other key would then be missing, which `find` below reports).
        if occupied != model.count { return "\(occupied) occupied positions, model has \(model.count)" }
        for k in universe {
            let p = index.find(k, hash: KeyHash.of(k))
            switch (p, model[k]) {
            case (nil, nil): break
            case (nil, let l?): return "find(\(k)) is nil, expected location \(l)"
            case (let p?, nil): return "find(\(k)) is \(p), expected nil"
            case (let p?, let l?):
                if index[p].key != k || index[p].location != l {
                    return "find(\(k)) = \(p) holds key \(index[p].key) location \(index[p].location), expected location \(l)"
                }
            }
        }
        return nil
    }

    /// Runs `ops` (true: insert, false: remove, of `keys[i]`) on a fresh index, checking after
    /// every step. Returns a description of the first problem.
    static func run(_ ops: [(insert: Bool, key: UInt64)], universe: [UInt64], expected: Int = 0) -> String? {
        var index = KeyIndex(expected: expected)
        var model: [UInt64: UInt32] = [:]
        var nextLocation: UInt32 = 0
        for (step, op) in ops.enumerated() {
            let hash = KeyHash.of(op.key)
            if op.insert {
                if model[op.key] != nil { continue }
                let location = nextLocation
                nextLocation += 1
                let p = index.insert(op.key, hash: hash, location: location, flags: UInt32(step))
                if index[p].key != op.key || index[p].location != location || index[p].flags != UInt32(step) {
                    return "step \(step): insert(\(op.key)) returned position \(p), which does not hold it"
                }
                model[op.key] = location
            } else {
                guard let p = index.find(op.key, hash: hash) else {
                    if model[op.key] != nil { return "step \(step): find(\(op.key)) nil before removing" }
                    continue
                }
                index.remove(at: p)
                model[op.key] = nil
            }
            if let problem = problem(index, model, probing: universe) {
                return "after step \(step) of \(ops.map { ($0.insert ? "+" : "-") + "\($0.key)" }): \(problem)"
            }
        }
        return nil
    }

    static func permutations<T>(_ items: [T]) -> [[T]] {
        if items.count <= 1 { return [items] }
        var result: [[T]] = []
        for i in items.indices {
            var rest = items
            let first = rest.remove(at: i)
            for p in permutations(rest) { result.append([first] + p) }
        }
        return result
    }

    /// Small key sets by home bucket (capacity 16): one bucket; a run wrapping past the end;
    /// runs where a removal must leave members whose home lies inside the gap; two clusters
    /// that merge.
    static let keySets: [(name: String, homes: [Int])] = [
        ("all in bucket 3", [3, 3, 3, 3, 3]),
        ("all in bucket 15 (wraps)", [15, 15, 15, 15, 15]),
        ("wrapping run", [14, 15, 14, 0, 15]),
        ("homes inside the gap", [13, 14, 13, 15, 1]),
        ("merging clusters", [2, 3, 2, 4, 3]),
        ("spread with wrap", [15, 0, 15, 1, 0]),
    ]

    // MARK: Tests

    @Test func collidingKeysReallyCollide() {
        for set in Self.keySets {
            let keys = Self.keys(homes: set.homes)
            #expect(keys.map { Self.home($0, mask: 15) } == set.homes, "\(set.name)")
            #expect(Set(keys).count == keys.count)
        }
    }

    /// Every order of inserting a set, followed by every order of removing it.
    @Test(arguments: keySets.map(\.name))
    func everyInsertOrderThenEveryRemoveOrder(_ name: String) {
        let homes = Self.keySets.first { $0.name == name }!.homes
        let keys = Self.keys(homes: homes)
        let universe = keys + Self.keys(homing: homes[0], count: 2, from: 100_000)  // absent, same bucket
        let orders = Self.permutations(keys)
        var failures = 0
        for insertOrder in orders {
            for removeOrder in orders {
                let ops = insertOrder.map { (insert: true, key: $0) } + removeOrder.map { (insert: false, key: $0) }
                if let problem = Self.run(ops, universe: universe) {
                    Issue.record("\(name): \(problem)")
                    failures += 1
                    if failures > 3 { return }
                }
            }
        }
    }

    /// Every sequence of six toggles (insert if absent, else remove) over the set's five keys:
    /// interleaved inserts and removals, reinsertion after removal, and so on.
    @Test(arguments: keySets.map(\.name))
    func everyInterleavingOfSixToggles(_ name: String) {
        let homes = Self.keySets.first { $0.name == name }!.homes
        let keys = Self.keys(homes: homes)
        let universe = keys + Self.keys(homing: homes[0], count: 1, from: 100_000)
        let k = keys.count, length = 6
        var total = 1
        for _ in 0..<length { total *= k }
        var failures = 0
        for code in 0..<total {
            var c = code
            var present: Set<UInt64> = []
            var ops: [(insert: Bool, key: UInt64)] = []
            for _ in 0..<length {
                let key = keys[c % k]
                c /= k
                ops.append((insert: !present.contains(key), key: key))
                if present.contains(key) { present.remove(key) } else { present.insert(key) }
            }
            if let problem = Self.run(ops, universe: universe) {
                Issue.record("\(name): \(problem)")
                failures += 1
                if failures > 3 { return }
            }
        }
    }

    /// Removing from the middle of a full-looking cluster, for every position of the removed
    /// key, with 12 keys (the most a capacity-16 index holds) in two adjacent homes.
    @Test func removeEachMemberOfALongCluster() {
        let keys = Self.keys(homing: 14, count: 6) + Self.keys(homing: 15, count: 6)
        for victim in keys {
            for reinsert in [false, true] {
                var ops = keys.map { (insert: true, key: $0) }
                ops.append((insert: false, key: victim))
                if reinsert { ops.append((insert: true, key: victim)) }
                if let problem = Self.run(ops, universe: keys) { Issue.record("\(problem)") }
            }
        }
    }

    @Test func initialCapacityIsTheSmallestThatHoldsExpected() {
        for expected in 0...300 {
            let index = KeyIndex(expected: expected)
            let c = index.capacity
            #expect(c >= 16 && c & (c - 1) == 0, "expected \(expected): capacity \(c)")
            #expect(c * 3 >= expected * 4, "expected \(expected): capacity \(c) is over 3/4 full")
            #expect(c == 16 || (c / 2) * 3 < expected * 4, "expected \(expected): capacity \(c) is not the smallest")
            #expect(index.count == 0)
            #expect(index.bytes == c * MemoryLayout<IndexEntry>.stride)
        }
    }

    /// Inserting the expected number of keys never grows; one more than 3/4 does, exactly then.
    @Test func growsExactlyWhenPastThreeQuarters() {
        for expected in [0, 1, 12, 13, 24, 25, 100] {
            var index = KeyIndex(expected: expected)
            let initial = index.capacity
            var model: [UInt64: UInt32] = [:]
            var key: UInt64 = 0
            while model.count < initial * 3 / 4 {
                key += 1
                index.insert(key, hash: KeyHash.of(key), location: UInt32(key), flags: 0)
                model[key] = UInt32(key)
                #expect(index.capacity == initial, "grew at \(model.count) of \(initial)")
            }
            key += 1
            index.insert(key, hash: KeyHash.of(key), location: UInt32(key), flags: 0)
            model[key] = UInt32(key)
            #expect(index.capacity == 2 * initial, "did not double past 3/4: \(model.count) in \(index.capacity)")
            if let p = Self.problem(index, model, probing: Array(0...key + 5)) { Issue.record("\(p)") }
        }
    }

    /// Growth with a table full of colliding keys: 12 keys homing at bucket 7 of 16, which
    /// split between 7 and 23 of 32, then removals in every one of a few orders after growth.
    @Test func growthRedistributesCollidingKeys() {
        let same = Self.keys(homing: 7, count: 16)
        #expect(Set(same.map { Self.home($0, mask: 31) }).count == 2, "want keys that split on growth")
        var rng = SplitMix64(seed: 11)
        for _ in 0..<200 {
            let inserts = same.shuffled(using: &rng)
            let removals = inserts.shuffled(using: &rng)
            var ops = inserts.map { (insert: true, key: $0) }
            for (i, k) in removals.enumerated() {
                ops.append((insert: false, key: k))
                if i % 3 == 0 { ops.append((insert: true, key: k)) }  // and back again
            }
            if let problem = Self.run(ops, universe: same) {
                Issue.record("\(problem)")
                return
            }
        }
    }

    /// A long random walk over a universe large enough to grow several times, keys drawn
    /// mostly from a few buckets so runs are long.
    @Test func randomWalkAgainstDictionary() {
        var rng = SplitMix64(seed: 2024)
        let clustered = (0..<6).flatMap { Self.keys(homing: $0 * 5, mask: 63, count: 20, from: 1) }
        let scattered = (0..<100).map { _ in rng.next() }
        let universe = Array(Set(clustered + scattered))
        var index = KeyIndex(expected: 0)
        var model: [UInt64: UInt32] = [:]
        var location: UInt32 = 0
        for step in 0..<3000 {
            let key = universe.randomElement(using: &rng)!
            // Bias toward inserting early, removing late, so the size sweeps up and down.
            let insertBias = step < 1500 ? 0.7 : 0.3
            let wantInsert = Double.random(in: 0..<1, using: &rng) < insertBias
            if let p = index.find(key, hash: KeyHash.of(key)) {
                if !wantInsert {
                    index.remove(at: p)
                    model[key] = nil
                } else {
                    // Update in place through the subscript, as the shard does.
                    var e = index[p]
                    location += 1
                    e.location = location
                    index[p] = e
                    model[key] = location
                }
            } else if model[key] != nil {
                Issue.record("step \(step): \(key) lost")
                return
            } else if wantInsert {
                location += 1
                index.insert(key, hash: KeyHash.of(key), location: location, flags: 0)
                model[key] = location
            }
            if let problem = Self.problem(index, model, probing: universe) {
                Issue.record("step \(step): \(problem)")
                return
            }
        }
        #expect(index.capacity >= 256, "the walk should have grown the index: \(index.capacity)")
        var visited: [UInt64] = []
        index.forEachPosition { visited.append(index[$0].key) }
        #expect(Set(visited) == Set(model.keys) && visited.count == model.count)
    }
}
