import Glibc
import StrataModels

// Parsing one line of Criteo's TSV straight from the bytes in the read buffer: no String, no
// allocation, one pass, one comparison per byte in the digit loops. Only a line that is
// rejected in stop mode is turned into text, to say what is wrong with it.

/// Why a line is not a sample. A small enum so that skipping bad lines allocates nothing; the
/// message is built only when the line becomes an error.
enum LineFault: Equatable, Sendable {
    /// Too few or too many tab-separated fields (or an empty line).
    case fieldCount
    /// The first field is not exactly `0` or `1`.
    case label
    /// Dense column `column` (0-based) is not an optionally negative decimal of at most 18 digits.
    case integer(column: Int)
    /// Categorical column `column` (0-based) is not a hexadecimal value of at most 16 digits.
    case hex(column: Int)
    /// A table's line has a number of fields other than its header's.
    case columnCount(found: Int)
    /// A table's column (0-based) does not hold what its schema says.
    case column(Int)
    /// A table's line has a quote that does not close, or text after a closing quote.
    case quote
    /// A table's multi-valued column (0-based) holds more than `TabularFormat.largestBag` values.
    case values(column: Int)
    /// A cross (feature index) of this line would have more than `largestBag` combinations.
    case combinations(feature: Int, count: Int)
}

/// The constant tables the parser reads, allocated once for the process.
struct CriteoTables: @unchecked Sendable {
    // @unchecked: the pointers are written once, in `shared`'s initializer, and only read after.

    /// log(x + 1) as Float for the small counts that make up most of Criteo's integer columns,
    /// computed with the same expression as the fallback, so a value reads the same either way.
    let logOnePlus: UnsafePointer<Float>
    static let logTableCount: UInt64 = 1 << 12
    /// Hexadecimal digit values by byte; 0xFF for anything that is not a hex digit.
    let hexValue: UnsafePointer<UInt8>

    static let shared = CriteoTables()

    private init() {
        let logs = UnsafeMutablePointer<Float>.allocate(capacity: Int(Self.logTableCount))
        for x in 0..<Int(Self.logTableCount) { logs[x] = logOnePlusCount(UInt64(x)) }
        logOnePlus = UnsafePointer(logs)
        let hex = UnsafeMutablePointer<UInt8>.allocate(capacity: 256)
        hex.initialize(repeating: 0xFF, count: 256)
        for (i, c) in "0123456789".utf8.enumerated() { hex[Int(c)] = UInt8(i) }
        for (i, c) in "abcdef".utf8.enumerated() { hex[Int(c)] = UInt8(10 + i) }
        for (i, c) in "ABCDEF".utf8.enumerated() { hex[Int(c)] = UInt8(10 + i) }
        hexValue = UnsafePointer(hex)
    }
}

/// The dense transform: log(x + 1) of a (clipped, nonnegative) count, rounded once to Float.
@inline(__always)
func logOnePlusCount(_ x: UInt64) -> Float { Float(log1p(Double(x))) }

/// `logOnePlusCount` through the table for small counts: the same value, faster. The
/// synthetic source uses it too, so its samples written as TSV read back bit for bit.
@inline(__always)
func denseFeature(count x: UInt64, table: UnsafePointer<Float>) -> Float {
    x < CriteoTables.logTableCount ? table[Int(x)] : logOnePlusCount(x)
}

/// Where one parsed sample goes: a label, `dense` floats and `sparse` keys.
struct SampleSlot {
    var label: UnsafeMutablePointer<Float>
    var dense: UnsafeMutablePointer<Float>
    var keys: UnsafeMutablePointer<UInt64>
}

private let tab: UInt8 = 0x09

/// Parses the line `[start, end)` (no newline, no carriage return) into `slot`.
///
/// Integer fields: empty is 0, a negative value is clipped to 0, then log(x + 1). Categorical
/// fields: the hex value `v` becomes `clickKey(column: f, value: v)`; an empty field becomes
/// `emptyKeys[f]`. Returns why the line is rejected, or nil; on rejection `slot` holds garbage.
@inline(__always)
func parseCriteoLine(
    _ start: UnsafePointer<UInt8>, _ end: UnsafePointer<UInt8>,
    dense denseCount: Int, sparse sparseCount: Int,
    into slot: SampleSlot, emptyKeys: UnsafePointer<UInt64>, tables: CriteoTables
) -> LineFault? {
    var p = start
    // Label: exactly one byte, 0 or 1.
    guard p < end else { return .fieldCount }
    let first = p.pointee
    guard first == 0x30 || first == 0x31 else { return .label }
    slot.label.pointee = first == 0x31 ? 1 : 0
    p += 1
    guard p == end || p.pointee == tab else { return .label }

    let logs = tables.logOnePlus
    for j in 0..<denseCount {
        guard p < end else { return .fieldCount }
        p += 1  // the tab
        var negative = false
        if p < end && p.pointee == 0x2D {
            negative = true
            p += 1
        }
        let digitsStart = p
        var value: UInt64 = 0
        while p < end {
            let digit = p.pointee &- 0x30
            if digit > 9 { break }
            value = value &* 10 &+ UInt64(digit)
            p += 1
        }
        let digits = p - digitsStart
        if (p < end && p.pointee != tab) || digits > 18 || (negative && digits == 0) {
            return .integer(column: j)
        }
        slot.dense[j] = negative ? 0 : denseFeature(count: value, table: logs)
    }

    let hex = tables.hexValue
    for f in 0..<sparseCount {
        guard p < end else { return .fieldCount }
        p += 1  // the tab
        let digitsStart = p
        var value: UInt64 = 0
        while p < end {
            let nibble = hex[Int(p.pointee)]
            if nibble > 15 { break }
            value = value << 4 | UInt64(nibble)
            p += 1
        }
        let digits = p - digitsStart
        if (p < end && p.pointee != tab) || digits > 16 { return .hex(column: f) }
        slot.keys[f] = digits == 0 ? emptyKeys[f] : clickKey(column: f, value: value)
    }
    // Anything left is an extra field.
    return p == end ? nil : .fieldCount
}

/// What is wrong with a rejected line, in words, quoting the offending field. Only called on
/// the way to an error, so it may allocate.
func describe(_ fault: LineFault, line: UnsafeBufferPointer<UInt8>, schema: ClickSchema) -> String {
    let fields = line.split(separator: tab, omittingEmptySubsequences: false)
    let expected = 1 + schema.dense + schema.sparse
    if fields.count != expected || fault == .fieldCount {
        return line.isEmpty ? "empty line, expected \(expected) fields" : "\(fields.count) fields, expected \(expected)"
    }
    func quoted(_ i: Int) -> String {
        let text = String(decoding: fields[i].prefix(40), as: UTF8.self)
        return fields[i].count > 40 ? "'\(text)...'" : "'\(text)'"
    }
    switch fault {
    case .label:
        return "label \(quoted(0)) is not 0 or 1"
    case let .integer(column):
        return "integer column \(column + 1) (field \(column + 2)): \(quoted(column + 1)) is not a decimal integer of at most 18 digits"
    case let .hex(column):
        let field = 1 + schema.dense + column
        return "categorical column \(column + 1) (field \(field + 1)): \(quoted(field)) is not a hexadecimal value of at most 16 digits"
    case .fieldCount, .columnCount, .column, .quote, .values, .combinations:
        return "malformed"  // handled above, or not Criteo's
    }
}

/// Criteo's display-advertising TSV: a label (`0` or `1`), `shape.dense` integer fields and
/// `shape.sparse` hexadecimal categorical fields, tab-separated. Any integer or categorical
/// field may be empty.
/// - Integers: empty is 0, negative values are clipped to 0, then log(x + 1) as Float.
/// - Categorical column `c` (0-based among the categorical columns) with value `v` becomes the
///   key `clickKey(column: c, value: v)`. An empty field becomes
///   `clickKey(column: c, value: UInt64.max)`: one "missing" key per column, so a model learns
///   an embedding for absence itself. (A 16-digit `ffffffffffffffff` would share it; Criteo's
///   values have 8 digits.)
struct CriteoFormat: Sendable {
    let shape: ClickSchema
    let schema: FeatureSchema
    /// Per-column key of an empty categorical field.
    private let emptyKeys: [UInt64]

    init(shape: ClickSchema) {
        precondition(shape.dense >= 0 && shape.sparse >= 0, "a schema counts columns")
        self.shape = shape
        schema = shape.features
        emptyKeys = (0..<shape.sparse).map { clickKey(column: $0, value: UInt64.max) }
    }

    var identity: String { "schema \(identityText(shape))" }

    @inline(__always)
    func parse(_ line: UnsafeBufferPointer<UInt8>, into block: SampleBlock, slot: Int) -> LineOutcome {
        let start = line.baseAddress ?? UnsafePointer(bitPattern: 8)!
        let fault = emptyKeys.withUnsafeBufferPointer { empty in
            parseCriteoLine(
                start, start + line.count, dense: shape.dense, sparse: shape.sparse,
                into: SampleSlot(label: block.labels + slot, dense: block.dense + slot * shape.dense,
                                 keys: block.keys + slot * shape.sparse),
                emptyKeys: empty.baseAddress ?? UnsafePointer(bitPattern: 8)!, tables: CriteoTables.shared)
        }
        return fault.map { .fault($0) } ?? .sample
    }

    func describe(_ fault: LineFault, line: UnsafeBufferPointer<UInt8>) -> String { StrataTraining.describe(fault, line: line, schema: shape) }
}

/// Criteo's TSV (`CriteoFormat`) as a `BatchSource`: a `LineFile` of that format.
public typealias CriteoFile = LineFile

extension LineFile.Options {
    /// Options of a Criteo file: columns per line (Criteo's 13 integer and 26 categorical by
    /// default) and how to read it.
    public init(schema: ClickSchema = .criteo, shuffleBlock: Int = 0, seed: UInt64 = 0,
                malformedLines: MalformedLinePolicy = .stop, readChunkBytes: Int = 4 << 20, maxLineBytes: Int = 1 << 20) {
        self.init(format: .criteo(CriteoFormat(shape: schema)), shuffleBlock: shuffleBlock, seed: seed,
                  malformedLines: malformedLines, readChunkBytes: readChunkBytes, maxLineBytes: maxLineBytes)
    }
}

extension LineFile {
    /// Opens a Criteo file. Throws `DataError.io` naming the path if it cannot be opened or is
    /// not a regular file.
    public init(path: String, options: Options = Options()) throws(DataError) {
        try self.init(path: path, lineOptions: options)
    }
}
