// What a finished training run leaves behind, captured bit for bit so that two runs can be
// compared: the dense parameters (values and optimizer state), the last checkpoint's payload
// (the trainer's JSON header and the dense archive after it), and every stored row of every
// table (values, optimizer state, update count, change generation). Used by the determinism
// tests (in-process runs under different budgets, look-ahead and threads) and the kill/resume
// test (`strata train` in child processes).
import Foundation
import StrataStore
import StrataTestSupport
import StrataTraining
import Testing

/// One embedding row as bits.
struct RowBits: Equatable {
    var values: [UInt32]
    var state: [UInt32]
    var updateCount: UInt64
    var changeGeneration: UInt64
}

/// The checkpoint payload `Trainer` writes: "STRN", a little-endian UInt32 length, that many
/// bytes of JSON (version, options, step, samples, data position), then a `ParameterArchive`.
struct TrainerPayload {
    var json: [UInt8]
    var archive: [UInt8]

    init?(_ payload: [UInt8]) {
        guard payload.count >= 8, Array(payload[0..<4]) == Array("STRN".utf8) else { return nil }
        let length = Int(payload[4]) | Int(payload[5]) << 8 | Int(payload[6]) << 16 | Int(payload[7]) << 24
        guard payload.count >= 8 + length else { return nil }
        json = Array(payload[8..<(8 + length)])
        archive = Array(payload[(8 + length)...])
    }

    /// The JSON header as an object (key order does not matter).
    var header: NSDictionary? { (try? JSONSerialization.jsonObject(with: Data(json))) as? NSDictionary }

    /// The archive's tensors by name: the value, then the optimizer state, as bits.
    /// Follows the format documented at `ParameterArchive`; nil if it does not parse.
    var tensors: [(name: String, bits: [[UInt32]])]? {
        var at = 0
        let b = archive
        func u32() -> Int? {
            guard at + 4 <= b.count else { return nil }
            defer { at += 4 }
            return Int(UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24)
        }
        func floats(_ n: Int) -> [UInt32]? {
            var out: [UInt32] = []
            for _ in 0..<n {
                guard let v = u32() else { return nil }
                out.append(UInt32(v))
            }
            return out
        }
        guard b.count >= 4, Array(b[0..<4]) == Array("SPRM".utf8) else { return nil }
        at = 4
        // Version 2: the state's float count; version 1: its tensor count.
        guard let version = u32(), version == 1 || version == 2, let count = u32() else { return nil }
        var out: [(String, [[UInt32]])] = []
        for _ in 0..<count {
            guard let nameLength = u32(), at + nameLength <= b.count else { return nil }
            let name = String(decoding: b[at..<(at + nameLength)], as: UTF8.self)
            at += nameLength
            guard let rows = u32(), let columns = u32(), let state = u32() else { return nil }
            guard let value = floats(rows * columns), let stateFloats = floats(version == 1 ? state * rows * columns : state)
            else { return nil }
            out.append((name, [value, stateFloats]))
        }
        return at == b.count ? out : nil
    }
}

/// Everything a run leaves that must not depend on how it ran.
struct TrainedState {
    /// Dense parameters of the live model (in-process runs only): name → [value, state...].
    var dense: [(name: String, bits: [[UInt32]])] = []
    var generation: UInt64 = 0
    var payload: [UInt8] = []
    /// Table name → key → row.
    var tables: [String: [UInt64: RowBits]] = [:]

    /// Reads the store's last checkpoint and every stored row of every table.
    static func capture(_ store: Store) throws -> TrainedState {
        var s = TrainedState()
        s.generation = store.lastCheckpoint.generation
        s.payload = store.lastCheckpoint.payload
        for name in store.tableNames {
            let table = try store.table(name)
            let keys = try table.storedKeys()
            let values = try table.peek(keys)
            let d = table.spec.dimension
            var rows: [UInt64: RowBits] = [:]
            for (i, key) in keys.enumerated() {
                let row = try table.row(key)
                let peeked = values[(i * d)..<((i + 1) * d)].map(\.bitPattern)
                // `row` and `peek` read the same place; a difference is a bug of its own.
                #expect(row.values.map(\.bitPattern) == peeked, "table \(name) key \(key): row() and peek() disagree")
                rows[key] = RowBits(values: peeked, state: row.optimizerState.map(\.bitPattern),
                                    updateCount: row.updateCount, changeGeneration: row.changeGeneration)
            }
            s.tables[name] = rows
        }
        return s
    }

    static func dense(_ trainer: Trainer) -> [(name: String, bits: [[UInt32]])] {
        trainer.network.parameters.map { p in
            (p.name, ([p.value] + (p.state.map { [$0] } ?? [])).map { t in (0..<t.count).map { t.data[$0].bitPattern } })
        }
    }

    var rowCount: Int { tables.values.reduce(0) { $0 + $1.count } }

    /// What differs from `other`, at most a few lines per kind; empty when bit-identical.
    func differences(from other: TrainedState, limit: Int = 6) -> [String] {
        // At most `limit` lines about each of dense parameters, payload and rows.
        var sections: [[String]] = [[], [], []]
        var section = 0
        func note(_ s: String) { sections[section].append(s) }

        // Live dense parameters (when both sides have them).
        if !dense.isEmpty && !other.dense.isEmpty {
            if dense.map(\.name) != other.dense.map(\.name) {
                note("dense parameter names differ: \(dense.map(\.name)) vs \(other.dense.map(\.name))")
            } else {
                for (a, b) in zip(dense, other.dense) where a.bits != b.bits {
                    for (t, (x, y)) in zip(a.bits, b.bits).enumerated() where x != y {
                        let n = zip(x, y).filter { $0 != $1 }.count
                        let i = x.indices.first { x[$0] != y[$0] }!
                        note("dense \(a.name) \(t == 0 ? "value" : "state \(t - 1)"): \(n) of \(x.count) elements differ, "
                             + "first at \(i): \(Float(bitPattern: x[i])) vs \(Float(bitPattern: y[i]))")
                    }
                }
            }
        }

        // The checkpoint payload: header by content, archive by bits.
        section = 1
        switch (TrainerPayload(payload), TrainerPayload(other.payload)) {
        case let (a?, b?):
            if a.header == nil || a.header != b.header {
                note("payload headers differ: \(String(decoding: a.json, as: UTF8.self)) vs \(String(decoding: b.json, as: UTF8.self))")
            }
            if a.archive != b.archive {
                if let ta = a.tensors, let tb = b.tensors, ta.map(\.name) == tb.map(\.name) {
                    for (x, y) in zip(ta, tb) where x.bits != y.bits {
                        let n = zip(x.bits.joined(), y.bits.joined()).filter { $0 != $1 }.count
                        note("payload archive: \(x.name) differs in \(n) floats")
                    }
                } else {
                    note("payload archives differ (\(a.archive.count) vs \(b.archive.count) bytes)")
                }
            }
        default:
            note("a payload is not a trainer's (\(payload.count) and \(other.payload.count) bytes)")
        }

        // Rows.
        section = 2
        if Set(tables.keys) != Set(other.tables.keys) {
            note("tables differ: \(tables.keys.sorted()) vs \(other.tables.keys.sorted())")
        }
        for name in tables.keys.sorted() {
            guard let mine = tables[name], let theirs = other.tables[name] else { continue }
            let onlyMine = Set(mine.keys).subtracting(theirs.keys), onlyTheirs = Set(theirs.keys).subtracting(mine.keys)
            if !onlyMine.isEmpty || !onlyTheirs.isEmpty {
                note("table \(name): \(onlyMine.count) keys only in the first run, \(onlyTheirs.count) only in the second "
                     + "(of \(mine.count) and \(theirs.count))")
            }
            var values = 0, states = 0, counts = 0, generations = 0
            var first: UInt64?
            for (key, a) in mine {
                guard let b = theirs[key] else { continue }
                if a.values != b.values { values += 1 }
                if a.state != b.state { states += 1 }
                if a.updateCount != b.updateCount { counts += 1 }
                if a.changeGeneration != b.changeGeneration { generations += 1 }
                if a != b && first.map({ key < $0 }) ?? true { first = key }
            }
            if let first {
                let a = mine[first]!, b = theirs[first]!
                note("table \(name): rows differ in values \(values), optimizer state \(states), update count \(counts), "
                     + "change generation \(generations) (of \(mine.count)); key \(first): "
                     + "\(a.values.map { Float(bitPattern: $0) }) state \(a.state.map { Float(bitPattern: $0) }) n \(a.updateCount) g \(a.changeGeneration) vs "
                     + "\(b.values.map { Float(bitPattern: $0) }) state \(b.state.map { Float(bitPattern: $0) }) n \(b.updateCount) g \(b.changeGeneration)")
            }
        }
        return sections.flatMap { $0.count > limit ? $0.prefix(limit) + ["... \($0.count - limit) more"] : $0 }
    }
}
