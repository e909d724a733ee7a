/// Everything the store reports instead of crashing. Each case says what happened and, where
/// it concerns a file, which one. Misuse that can only be a bug in the caller (a negative
/// capacity, say) traps instead.
public enum StoreError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No table of this name in the store.
    case unknownTable(String)
    /// A table of this name exists with another spec.
    case tableExists(name: String, existing: TableSpec)
    /// The name or spec cannot make a table.
    case invalidTable(name: String, reason: String)
    /// A buffer's size does not match the keys and the table's dimension.
    case shapeMismatch(table: String, expected: Int, actual: Int, what: String)
    /// A gradient holds NaN or infinity. The whole batch was rejected; nothing changed.
    case nonFiniteGradient(table: String, key: UInt64, element: Int)
    /// A step would make a value (as stored: float16 overflows at 65520) or an optimizer
    /// state element of `key` infinite or NaN. The batch was rejected; nothing was applied.
    case nonFiniteStep(table: String, key: UInt64, what: String)
    /// A checkpoint failed part way and LMDB could not be put back at the previous one yet,
    /// so it holds no single checkpoint to read; the next checkpoint, or opening the store
    /// again, puts it back first.
    case checkpointInterrupted(path: String)
    /// Rows given to `assign` cannot be stored (a repeated key, a value that is not finite).
    /// Nothing changed.
    case invalidRows(table: String, reason: String)
    /// A batch's learning rate cannot be used with the table's optimizer.
    case invalidLearningRate(table: String, value: Float, reason: String)
    /// There is no store at this path (and the options did not ask to create one).
    case noStore(path: String)
    /// A store was to be created in a directory that holds files of its own: nothing was
    /// written there.
    case notEmpty(path: String, entries: [String])
    /// A store was to be deleted, but its directory holds files that are not the store's:
    /// nothing was deleted.
    case foreignFiles(path: String, entries: [String])
    /// A file was written by a newer Strata than this one.
    case newerFormat(file: String, found: Int, supported: Int)
    /// A store was written by an older Strata in a format this one does not read. Nothing changed.
    case olderFormat(file: String, found: Int, supported: Int)
    /// A file does not hold what it should.
    case corrupted(file: String, detail: String)
    /// The disk is full (or a size limit or quota was hit). Nothing durable changed: the
    /// store is still at checkpoint `generation`.
    case diskFull(path: String, generation: UInt64, detail: String)
    /// The directory or a file in it cannot be written.
    case readOnly(path: String, detail: String)
    /// Another process (or another `Store` in this one) has the store open.
    case locked(path: String, holder: String)
    /// The store was opened for reading (`Store(readerAt:)`), beside `writer` when a process
    /// had it open for writing then, and `operation` writes. Nothing changed.
    case openedForReading(path: String, writer: String?, operation: String)
    /// A store opened for reading found a checkpoint still being written (of `generation`,
    /// when known, by `writer`, when a process held the store) after waiting as long as
    /// `Store.Options.readerWaitLimit` allows. Nothing changed; open again later.
    case checkpointInProgress(path: String, generation: UInt64?, writer: String?)
    /// The budgets cannot work: no room for a single hot row, or more rows in a shard than a
    /// slot number can name.
    case impossibleBudget(table: String, detail: String)
    /// The store was closed.
    case closed
    /// The store holds a two-phase checkpoint its run never decided (`Store.Options.undecidedCheckpoint`).
    case undecidedCheckpoint(path: String, generation: UInt64)
    /// Any other failed system call.
    case system(SystemError)
    /// Any other LMDB failure.
    case lmdb(LMDBError, file: String)

    /// The first few names of a directory's entries.
    private static func listing(_ entries: [String]) -> String {
        entries.prefix(3).joined(separator: ", ") + (entries.count > 3 ? ", ..." : "")
    }

    public var description: String {
        switch self {
        case .unknownTable(let name):
            "no table named '\(name)'"
        case .tableExists(let name, let spec):
            "table '\(name)' exists with a different spec (dimension \(spec.dimension), \(spec.storage.rawValue), \(spec.optimizer.name))"
        case .invalidTable(let name, let reason):
            "cannot create table '\(name)': \(reason)"
        case .shapeMismatch(let table, let expected, let actual, let what):
            "table '\(table)': \(what) needs \(expected) floats, the buffer has \(actual)"
        case .nonFiniteGradient(let table, let key, let element):
            "table '\(table)': gradient of key \(key) is not finite at element \(element); the batch was rejected, nothing was applied"
        case .nonFiniteStep(let table, let key, let what):
            "table '\(table)': this batch's step would make \(what) of key \(key) non-finite; the batch was rejected, "
                + "nothing was applied (lower the learning rate or clip the gradients)"
        case .checkpointInterrupted(let path):
            "\(path): a checkpoint failed part way and LMDB is not back at the previous one yet; checkpoint again, or reopen the store, before reading it"
        case .invalidRows(let table, let reason):
            "table '\(table)': \(reason); nothing was written"
        case .invalidLearningRate(let table, let value, let reason):
            "table '\(table)': learning rate \(value) rejected: \(reason); nothing was applied"
        case .noStore(let path):
            "\(path): no Strata store here"
        case .notEmpty(let path, let entries):
            "\(path): not a Strata store, and not empty (it holds \(Self.listing(entries))); give an empty or new directory"
        case .foreignFiles(let path, let entries):
            "\(path): holds files that are not the store's (\(Self.listing(entries))); move them out first, nothing was deleted"
        case .newerFormat(let file, let found, let supported):
            "\(file): written in format version \(found); this build reads up to \(supported)"
        case .olderFormat(let file, let found, let supported):
            "\(file): written in format version \(found) by an older Strata; this build reads format \(supported), "
                + "whose record checksums cover each row's key and table. Export its tables with the Strata that "
                + "wrote it (strata export) and import them with this one (strata import)"
        case .corrupted(let file, let detail):
            "\(file): corrupted: \(detail)"
        case .diskFull(let path, let generation, let detail):
            "\(path): disk full (\(detail)); the store remains at checkpoint \(generation)"
        case .readOnly(let path, let detail):
            "\(path): cannot write (\(detail))"
        case .locked(let path, let holder):
            "\(path): the store is in use by \(holder)"
        case .openedForReading(let path, let writer?, let operation):
            "\(path): opened read-only beside \(writer), which writes it; \(operation) needs the store opened for writing, "
                + "once that process has closed it; nothing was changed"
        case .openedForReading(let path, nil, let operation):
            "\(path): opened read-only; \(operation) needs the store opened for writing (Store(path:)); nothing was changed"
        case .checkpointInProgress(let path, let generation, let writer):
            "\(path): \(generation.map { "checkpoint \($0)" } ?? "a checkpoint") is still being written"
                + (writer.map { " by \($0)" } ?? "") + "; its last completed checkpoint can be read once it has finished: try again"
        case .impossibleBudget(let table, let detail):
            "table '\(table)': impossible memory budget: \(detail)"
        case .undecidedCheckpoint(let path, let generation):
            "\(path) holds checkpoint \(generation), written by a run over several processes and not yet kept or abandoned: resume that run (mpirun ... strata train --store SET --resume), which decides it as all its shards agree"
        case .closed:
            "the store is closed"
        case .system(let error):
            error.description
        case .lmdb(let error, let file):
            "\(file): \(error)"
        }
    }
}
