// What can go wrong while reading training data. Every case names the file (or source) so
// that a failure deep inside a multi-day run says which input to look at.

/// An error from a data source.
public enum DataError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A line of a TSV file cannot be a sample. `line` is 1-based and counts every line of the
    /// file, good or bad; `reason` says what is wrong with it.
    case malformedLine(file: String, line: Int, reason: String)
    /// A system call on a data file failed: `operation` is the call (or what was attempted),
    /// `detail` the system's reason.
    case io(path: String, operation: String, detail: String)
    /// `seek` was given a position this source did not make (another file, other options, or
    /// a position past the end).
    case positionMismatch(source: String, detail: String)
    /// A schema file, or the data against it, is not usable: `reason` says what is wrong.
    case schema(file: String, reason: String)

    public var description: String {
        switch self {
        case let .malformedLine(file, line, reason): "\(file):\(line): malformed line: \(reason)"
        case let .io(path, operation, detail): "\(path): \(operation) failed: \(detail)"
        case let .positionMismatch(source, detail): "\(source): cannot seek: \(detail)"
        case let .schema(file, reason): "\(file): \(reason)"
        }
    }
}
