// Parsing a line of a CSV or TSV described by a `TableSchema`, straight from the read buffer:
// fields found in one pass (RFC 4180 quotes: a field in double quotes may hold the delimiter,
// and "" stands for one quote), each column written where its role says, then the side
// tables joined by id. No String and no allocation for a good line.
import Foundation
import Glibc
import StrataModels
import StrataStore

/// What one column of a file becomes.
enum ColumnRole: Sendable {
    case ignore
    /// The key of the value in `namespace`, into single-valued slot `slot`.
    case categorical(slot: Int, namespace: UInt64)
    /// Keys of the values between `separator`s, into bag `bag`.
    case multi(bag: Int, namespace: UInt64, separator: UInt8)
    /// The key of the bucket the number falls in.
    case bucketed(slot: Int, namespace: UInt64, boundaries: [Double])
    /// The number (log(1 + max(x, 0)) with `log`), into dense column `index`.
    case dense(index: Int, log: Bool)
    /// The number, into label column `index`; with `threshold` 1 at or above it, else 0; with
    /// `binary` and no threshold it must be 0 or 1. With `value`, the number itself also into
    /// label column `value` (the click protocol keeps the rating beside the click).
    case label(index: Int, binary: Bool, threshold: Double?, value: Int?)

    /// What the column must hold, for an error message.
    var expectation: String {
        switch self {
        case .ignore, .categorical, .multi: "any text"
        case .bucketed: "a number"
        case .dense: "a number within ±3.4e38"
        case .label(_, let binary, let threshold, _): binary && threshold == nil ? "0 or 1" : "a number within ±3.4e38"
        }
    }
}

/// A side table joined by id, loaded whole: for each id value, the record's features.
final class JoinTable: Sendable {
    let file: String
    /// The interactions' column whose value is looked up.
    let on: Int
    /// Records by the hash of their id value.
    private let records: [UInt64: Int32]
    /// Per record: the join's single keys, bags and dense values, in the join's own order.
    private let singles: [UInt64]
    private let bagKeys: [UInt64]
    private let bagOffsets: [Int]
    private let dense: [Float]
    /// Where the join's features go in the interactions' samples.
    private let singleSlots: [Int], bagIndexes: [Int], denseIndexes: [Int]
    /// The keys of an empty value, for an id the join does not have.
    private let missingSingles: [UInt64], missingBags: [UInt64]

    init(file: String, on: Int, records: [UInt64: Int32], block: SampleBlock, count: Int,
         singleSlots: [Int], bagIndexes: [Int], denseIndexes: [Int], missingSingles: [UInt64], missingBags: [UInt64]) {
        self.file = file
        self.on = on
        self.records = records
        let s = block.singles, d = block.denseColumns, b = block.bagFeatures.count
        singles = Array(UnsafeBufferPointer(start: block.keys, count: count * s))
        dense = Array(UnsafeBufferPointer(start: block.dense, count: count * d))
        var keys: [UInt64] = [], offsets = [0]
        for r in 0..<count {
            for k in 0..<b {
                keys += block.bag(r, k)
                offsets.append(keys.count)
            }
        }
        bagKeys = keys
        bagOffsets = offsets
        self.singleSlots = singleSlots
        self.bagIndexes = bagIndexes
        self.denseIndexes = denseIndexes
        self.missingSingles = missingSingles
        self.missingBags = missingBags
    }

    /// Writes the record of id hash `id` (or missing values) into slot `slot` of `block`.
    /// The join's bags must be the next ones of the slot.
    @inline(__always)
    func write(id: UInt64, into block: SampleBlock, slot: Int) {
        let ss = block.singles, dd = block.denseColumns
        if let r32 = records[id] {
            let r = Int(r32)
            for (k, s) in singleSlots.enumerated() { block.keys[slot * ss + s] = singles[r * singleSlots.count + k] }
            for (k, j) in denseIndexes.enumerated() { block.dense[slot * dd + j] = dense[r * denseIndexes.count + k] }
            for (k, b) in bagIndexes.enumerated() {
                let at = r * bagIndexes.count + k
                for i in bagOffsets[at]..<bagOffsets[at + 1] { block.appendBagKey(bagKeys[i]) }
                block.endBag(slot, b)
            }
        } else {
            for (k, s) in singleSlots.enumerated() { block.keys[slot * ss + s] = missingSingles[k] }
            for j in denseIndexes { block.dense[slot * dd + j] = 0 }
            for (k, b) in bagIndexes.enumerated() {
                block.appendBagKey(missingBags[k])
                block.endBag(slot, b)
            }
        }
    }
}

/// Which split each line of a file belongs to, from the data's scan: `Interactions.Split.rawValue
/// + 1`, or `malformed` (a line the scan skipped), or `none` (the header, an empty line, and
/// any line past the scan's end: the file changed since).
final class SplitAssignment: Sendable {
    static let none: UInt8 = 0
    static let malformed: UInt8 = 0xFF
    let lines: [UInt8]
    init(lines: [UInt8]) { self.lines = lines }
    @inline(__always)
    func split(ofLine number: Int64) -> UInt8 { number < lines.count ? lines[Int(number)] : Self.none }
}

struct TabularFormat: Sendable {
    /// The most keys a bag may hold: a multi-valued field's values, a cross's combinations. A
    /// batch of up to 2^20 rows then holds fewer than 2^31 keys in each feature's bags.
    static let largestBag = 1024

    let schema: FeatureSchema
    /// The schema and options that decide the samples, as text.
    let identity: String
    let delimiter: UInt8
    /// The header's column names, and what each column becomes.
    let names: [String]
    let roles: [ColumnRole]
    let joins: [JoinTable]
    /// With an assignment, only the lines of `split` are samples.
    let assignment: SplitAssignment?
    let split: UInt8
    /// Per cross of a multi-valued feature: its index and its parts' bags in the block.
    private let bagCrosses: [(feature: Int, bags: [Int])]

    init(schema: FeatureSchema, identity: String, delimiter: UInt8, names: [String], roles: [ColumnRole], joins: [JoinTable],
         assignment: SplitAssignment?, split: UInt8) {
        self.schema = schema
        self.identity = identity
        self.delimiter = delimiter
        self.names = names
        self.roles = roles
        self.joins = joins
        self.assignment = assignment
        self.split = split
        let bags = schema.categorical.indices.prefix(schema.readFeatures).filter { schema.categorical[$0].multiValued }
        bagCrosses = schema.categorical.indices.dropFirst(schema.readFeatures).compactMap { f in
            let parts = schema.categorical[f].crossOf!.compactMap { p in bags.firstIndex(of: schema.categoricalIndex(p)!) }
            return parts.isEmpty ? nil : (f, parts)
        }
    }

    /// This format reading only the lines of `split` (`Interactions.Split.rawValue + 1`).
    func only(_ split: UInt8, of assignment: SplitAssignment, identity: String) -> TabularFormat {
        TabularFormat(schema: schema, identity: self.identity + " " + identity, delimiter: delimiter, names: names, roles: roles,
                      joins: joins, assignment: assignment, split: split)
    }

    /// The header and empty lines are no samples (an empty last line is common); the lines of
    /// other splits are passed over.
    func parse(_ line: UnsafeBufferPointer<UInt8>, number: Int64, into block: SampleBlock, slot: Int) -> LineOutcome {
        if number == 1 || line.isEmpty { return .skip }
        // A line of another split is passed over; one of none (the scan found it malformed,
        // and skipped it) is parsed again, so that this pass counts it as skipped too.
        if let assignment {
            let s = assignment.split(ofLine: number)
            if s != SplitAssignment.malformed && s != split { return .skip }
        }
        let roles = self.roles
        var bag = 0
        // The id values the joins look up, by join.
        return withUnsafeTemporaryAllocation(of: UInt64.self, capacity: max(joins.count, 1)) { joinIDs in
            var column = 0
            let fault = forEachField(line, delimiter) { field, escaped in
                guard column < roles.count else {
                    column += 1
                    return nil
                }
                defer { column += 1 }
                for (j, join) in joins.enumerated() where join.on == column { joinIDs[j] = hash(field, escaped) }
                return write(field, escaped, roles[column], column, into: block, slot: slot, bag: &bag)
            }
            if let fault { return .fault(fault) }
            guard column == roles.count else { return .fault(.columnCount(found: column)) }
            for (j, join) in joins.enumerated() { join.write(id: joinIDs[j], into: block, slot: slot) }
            for (f, parts) in bagCrosses {
                var count = 1
                for b in parts { count *= block.bag(slot, b).count }
                if count > Self.largestBag { return .fault(.combinations(feature: f, count: count)) }
            }
            return .sample
        }
    }

    /// Writes one field in its role; returns the fault if it does not fit.
    @inline(__always)
    private func write(_ field: UnsafeBufferPointer<UInt8>, _ escaped: Bool, _ role: ColumnRole, _ column: Int,
                       into block: SampleBlock, slot: Int, bag: inout Int) -> LineFault? {
        switch role {
        case .ignore:
            return nil
        case let .categorical(s, namespace):
            block.keys[slot * block.singles + s] = FeatureSchema.key(namespace: namespace, value: hash(field, escaped))
            return nil
        case let .multi(b, namespace, separator):
            precondition(b == bag, "bags out of order")
            var values = 0
            forEachValue(field, escaped, separator) { value in
                block.appendBagKey(FeatureSchema.key(namespace: namespace, value: value))
                values += 1
            }
            if values > Self.largestBag { return .values(column: column) }
            if values == 0 { block.appendBagKey(FeatureSchema.key(namespace: namespace, value: FeatureSchema.emptyValueHash)) }
            block.endBag(slot, b)
            bag += 1
            return nil
        case let .bucketed(s, namespace, boundaries):
            let key: UInt64
            if field.isEmpty {
                key = FeatureSchema.key(namespace: namespace, value: FeatureSchema.emptyValueHash)
            } else {
                guard let x = number(field, escaped) else { return .column(column) }
                var bucket = 0
                while bucket < boundaries.count && x >= boundaries[bucket] { bucket += 1 }
                key = FeatureSchema.key(namespace: namespace, value: Self.bucketValue(bucket))
            }
            block.keys[slot * block.singles + s] = key
            return nil
        case let .dense(index, log):
            var x = 0.0
            if !field.isEmpty {
                guard let v = number(field, escaped) else { return .column(column) }
                x = log ? log1p(max(v, 0)) : v
            }
            // A number beyond Float's range would train on infinity.
            guard Float(x).isFinite else { return .column(column) }
            block.dense[slot * block.denseColumns + index] = Float(x)
            return nil
        case let .label(index, binary, threshold, value):
            guard let v = number(field, escaped) else { return .column(column) }
            let y: Double
            if let threshold { y = v >= threshold ? 1 : 0 } else if binary {
                guard v == 0 || v == 1 else { return .column(column) }
                y = v
            } else {
                y = v
            }
            guard Float(y).isFinite, Float(v).isFinite || value == nil else { return .column(column) }
            block.labels[slot * block.labelColumns + index] = Float(y)
            if let value { block.labels[slot * block.labelColumns + value] = Float(v) }
            return nil
        }
    }

    /// The value a bucket's key is made from.
    static func bucketValue(_ bucket: Int) -> UInt64 { SplitMix64.mix(UInt64(bucket) ^ 0x4255_434B_4554_5331) }  // "BUCKETS1"

    func describe(_ fault: LineFault, line: UnsafeBufferPointer<UInt8>) -> String {
        var fields: [String] = []
        _ = forEachField(line, delimiter) { field, escaped in
            fields.append(unescaped(field, escaped))
            return nil
        }
        func quoted(_ text: String) -> String { text.count > 40 ? "'\(text.prefix(40))...'" : "'\(text)'" }
        switch fault {
        case .quote:
            return "a quoted field does not close, or text follows its closing quote"
        case .columnCount(let found):
            return line.isEmpty ? "empty line, expected \(roles.count) fields" : "\(found) fields, the header has \(roles.count)"
        case .column(let c):
            let text = c < fields.count ? fields[c] : ""
            return "column \(c + 1) '\(names[c])': \(quoted(text)) is not \(roles[c].expectation)"
        case .values(let c):
            return "column \(c + 1) '\(names[c])' holds more than \(Self.largestBag) values"
        case .combinations(let f, let count):
            return "cross '\(schema.categorical[f].name)' would hold \(count) combinations, more than \(Self.largestBag)"
        case .fieldCount, .label, .integer, .hex:
            return "malformed"
        }
    }
}

// MARK: Fields

/// Calls `body` with each field of `line` (without quotes; `escaped` when it held "" to be read
/// as one quote); stops at the first fault `body` returns. Returns that fault, or `.quote` for
/// a quote that does not close.
@inline(__always)
func forEachField(_ line: UnsafeBufferPointer<UInt8>, _ delimiter: UInt8,
                  _ body: (UnsafeBufferPointer<UInt8>, Bool) -> LineFault?) -> LineFault? {
    guard let base = line.baseAddress else { return body(line, false) }
    let end = line.count
    var i = 0
    while true {
        if i < end && base[i] == 0x22 {
            // A quoted field: up to the quote not followed by another.
            var j = i + 1, escaped = false
            while true {
                guard j < end else { return .quote }
                if base[j] == 0x22 {
                    if j + 1 < end && base[j + 1] == 0x22 {
                        escaped = true
                        j += 2
                        continue
                    }
                    break
                }
                j += 1
            }
            if let fault = body(UnsafeBufferPointer(start: base + i + 1, count: j - i - 1), escaped) { return fault }
            j += 1
            if j == end { return nil }
            guard base[j] == delimiter else { return .quote }
            i = j + 1
            continue
        }
        var j = i
        while j < end && base[j] != delimiter { j += 1 }
        if let fault = body(UnsafeBufferPointer(start: base + i, count: j - i), false) { return fault }
        if j == end { return nil }
        i = j + 1
    }
}

/// The FNV-1a hash of a field's value (with "" read as one quote when `escaped`), mixed:
/// `FeatureSchema.valueHash` of the unescaped bytes.
@inline(__always)
func hash(_ field: UnsafeBufferPointer<UInt8>, _ escaped: Bool) -> UInt64 {
    guard escaped else { return FeatureSchema.valueHash(field) }
    return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(field.count, 1)) { out in
        FeatureSchema.valueHash(UnsafeBufferPointer(rebasing: out[..<unescape(field, into: out)]))
    }
}

/// Calls `body` with the hash of each non-empty value between `separator`s.
@inline(__always)
func forEachValue(_ field: UnsafeBufferPointer<UInt8>, _ escaped: Bool, _ separator: UInt8, _ body: (UInt64) -> Void) {
    func split(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard let base = bytes.baseAddress else { return }
        var start = 0
        for i in 0...bytes.count where i == bytes.count || base[i] == separator {
            if i > start { body(FeatureSchema.valueHash(UnsafeBufferPointer(start: base + start, count: i - start))) }
            start = i + 1
        }
    }
    guard escaped else { return split(field) }
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(field.count, 1)) { out in
        split(UnsafeBufferPointer(rebasing: out[..<unescape(field, into: out)]))
    }
}

/// The number a field holds (decimal or exponent notation, surrounding spaces allowed), or
/// nil if it holds anything else or nothing.
@inline(__always)
func number(_ field: UnsafeBufferPointer<UInt8>, _ escaped: Bool) -> Double? {
    guard !field.isEmpty, field.count < 64 else { return nil }
    return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { text in
        let base = text.baseAddress!
        for i in 0..<field.count { base[i] = CChar(bitPattern: field[i]) }
        base[field.count] = 0
        var end: UnsafeMutablePointer<CChar>? = nil
        let x = strtod(base, &end)
        guard var stop = end, stop != base else { return nil }
        while stop.pointee == 0x20 { stop += 1 }
        return stop.pointee == 0 && x.isFinite ? x : nil
    }
}

/// Copies a field to `out` with "" read as one quote; returns the bytes written.
private func unescape(_ field: UnsafeBufferPointer<UInt8>, into out: UnsafeMutableBufferPointer<UInt8>) -> Int {
    var n = 0, i = 0
    while i < field.count {
        out[n] = field[i]
        n += 1
        i += field[i] == 0x22 && i + 1 < field.count && field[i + 1] == 0x22 ? 2 : 1
    }
    return n
}

/// A field as text, for messages.
func unescaped(_ field: UnsafeBufferPointer<UInt8>, _ escaped: Bool) -> String {
    let text = String(decoding: field, as: UTF8.self)
    return escaped ? text.replacingOccurrences(of: "\"\"", with: "\"") : text
}
