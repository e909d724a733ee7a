import Glibc

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
    /// More bytes before the newline than the line-length limit.
    case tooLong(limit: Int)
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
    if case let .tooLong(limit) = fault { return "longer than \(limit) bytes" }
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
    case .fieldCount, .tooLong:
        return "malformed"  // handled above
    }
}
