// The checks every command's options go through. A value from the command line never traps:
// each check refuses it with one line naming the flag, the value and what is allowed (exit
// status 64). Numeric options parse `.unconditional`, so that `--batch-size -5` reaches these
// checks as -5 instead of being read as a missing value.
import ArgumentParser

enum OptionCheck {
    static func require(_ ok: Bool, _ message: @autoclosure () -> String) throws {
        if !ok { throw ValidationError(message()) }
    }

    /// A whole-number option inside `range`.
    static func whole(_ value: Int, _ flag: String, _ range: ClosedRange<Int>) throws {
        try require(range.contains(value), range.upperBound == .max
            ? "\(flag) must be at least \(range.lowerBound), not \(value)"
            : "\(flag) must be between \(range.lowerBound) and \(range.upperBound), not \(value)")
    }

    /// A finite number inside `range`.
    static func number<T: BinaryFloatingPoint & LosslessStringConvertible>(_ value: T, _ flag: String, _ range: ClosedRange<T>) throws {
        try require(value.isFinite && range.contains(value),
                    "\(flag) must be a number between \(text(range.lowerBound)) and \(text(range.upperBound)), not \(text(value))")
    }

    /// A finite number above 0 and at most `most`.
    static func positive<T: BinaryFloatingPoint & LosslessStringConvertible>(_ value: T, _ flag: String, most: T) throws {
        try require(value.isFinite && value > 0 && value <= most, "\(flag) must be a number above 0 and at most \(text(most)), not \(text(value))")
    }

    /// Whole numbers without a fraction ("4398046511103", not "4398046511103.0"); others as
    /// their type prints them (a Float's -0.1 as "-0.1").
    private static func text<T: BinaryFloatingPoint & LosslessStringConvertible>(_ x: T) -> String {
        x.isFinite && x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : x.description
    }

    /// The largest size option, MiB: its bytes fit an `Int` with room for a sum of many.
    static let largestMebibytes = Double(Int.max >> 21)

    /// A size in MiB (fractions allowed), 0 or more and at most `largestMebibytes`.
    static func mebibytes(_ value: Double, _ flag: String) throws {
        try number(value, flag, 0...largestMebibytes)
    }

    /// The bytes of a size `mebibytes` has accepted.
    static func bytes(mebibytes value: Double) -> Int { Int(value * 1_048_576) }
}
