// Orders an interaction log's rows by user and time in bounded memory: an external merge sort
// (sorted runs of a fixed size written to files, then merged), so that a log of any length
// becomes users' sequences with a working set of `runRecords` records and a buffer a run.
import Glibc
import StrataStore

/// One row of an interaction log as the time sort sees it. 24 bytes, no padding.
struct TimedRow: Equatable {
    var user: Int32
    var item: Int32
    var time: Double
    /// The row's place in the file (its line number): ties in time keep the file's order.
    var order: Int64

    /// The order of a user's sequence: by user, then time, then place in the file.
    @inline(__always)
    static func precedes(_ a: TimedRow, _ b: TimedRow) -> Bool {
        if a.user != b.user { return a.user < b.user }
        if a.time != b.time { return a.time < b.time }
        return a.order < b.order
    }
}

/// A file of fixed-size records in a directory of its own, written then read through once,
/// in order, a block at a time. The directory's owner (`TimeSort`) removes it.
struct RecordFile<Record> {
    let path: String
    private var descriptor: Int32

    /// Records a block: enough to make each read or write a large one.
    static var blockRecords: Int { max(1, (256 << 10) / MemoryLayout<Record>.stride) }

    /// Creates the file (it must not exist).
    init(creating path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw RecordFile.failure(path, "open") }
        self.path = path
        descriptor = fd
    }

    /// Writes `records` at the end, first checking that the file system has room for them.
    func append(_ records: UnsafeBufferPointer<Record>) throws {
        let bytes = records.count * MemoryLayout<Record>.stride
        if let free = freeBytes(onFileSystemOf: path), free < bytes {
            throw DataError.io(path: path, operation: "write", detail: "the file system has \(free) bytes free, the sort needs "
                               + "\(bytes) more; set TMPDIR to a directory with room for 24 bytes a line of the data")
        }
        var done = 0
        let raw = UnsafeRawBufferPointer(records)
        while done < bytes {
            let n = Glibc.write(descriptor, raw.baseAddress! + done, bytes - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw RecordFile.failure(path, "write")
            }
            done += n
        }
    }

    /// Closes the file after writing; reopens it for reading from its start.
    mutating func rewind() throws {
        Glibc.close(descriptor)
        descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw RecordFile.failure(path, "open") }
    }

    /// Reads up to `buffer.count` records; returns how many (0 at the end).
    func read(into buffer: UnsafeMutableBufferPointer<Record>) throws -> Int {
        let raw = UnsafeMutableRawBufferPointer(buffer)
        var done = 0
        while done < raw.count {
            let n = Glibc.read(descriptor, raw.baseAddress! + done, raw.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw RecordFile.failure(path, "read")
            }
            if n == 0 { break }
            done += n
        }
        guard done % MemoryLayout<Record>.stride == 0 else {
            throw DataError.io(path: path, operation: "read", detail: "the file ends inside a record (was it changed while the data was read?)")
        }
        return done / MemoryLayout<Record>.stride
    }

    func close() { Glibc.close(descriptor) }

    static func failure(_ path: String, _ operation: String) -> DataError {
        .io(path: path, operation: operation, detail: String(cString: strerror(errno)))
    }
}

/// A directory of its own under the temporary directory ($TMPDIR, else /tmp) for a reader's
/// scratch files, made on first use; it and the files it named are removed with it (a crash
/// leaves it behind, named strata-sort-*).
final class ScratchFiles {
    private let parent: String
    private var directory: String?
    private var files: [String] = []

    init(parent: String? = nil) {
        if let parent {
            self.parent = parent
        } else if let t = getenv("TMPDIR"), t.pointee != 0 {
            self.parent = String(cString: t)
        } else {
            self.parent = "/tmp"
        }
    }

    deinit {
        for file in files { unlink(file) }
        if let directory { rmdir(directory) }
    }

    /// A new file's path in the directory.
    func path(_ name: String) throws -> String {
        if directory == nil {
            var template = Array((parent + "/strata-sort-XXXXXX").utf8CString)
            guard let made = mkdtemp(&template) else {
                throw DataError.io(path: parent, operation: "mkdtemp", detail: String(cString: strerror(errno)) + "; set TMPDIR to a writable directory")
            }
            directory = String(cString: made)
        }
        let file = directory! + "/" + name
        files.append(file)
        return file
    }
}

/// Records kept in memory up to a limit, then in a scratch file, read back in the order added.
final class SpilledRecords<Record> {
    private let limit: Int
    private let scratch: ScratchFiles
    private let name: String
    private var memory: [Record] = []
    private var file: RecordFile<Record>?
    private(set) var count = 0

    init(limit: Int, scratch: ScratchFiles, name: String) {
        precondition(limit >= 1)
        self.limit = limit
        self.scratch = scratch
        self.name = name
    }

    deinit { file?.close() }

    func append(_ record: Record) throws {
        memory.append(record)
        count += 1
        if memory.count >= limit { try flush() }
    }

    private func flush() throws {
        if file == nil { file = try RecordFile(creating: try scratch.path(name)) }
        try memory.withUnsafeBufferPointer { try file!.append($0) }
        memory.removeAll(keepingCapacity: true)
    }

    private var reading = 0
    private var block: [Record] = []

    /// Ends the appends: `next` then gives the records in the order added, once.
    func startReading() throws {
        guard var file else { return }
        if !memory.isEmpty { try flush() }
        memory = []
        try file.rewind()
        self.file = file
    }

    /// The next record, or nil after the last.
    func next() throws -> Record? {
        guard let file else {
            guard reading < memory.count else { return nil }
            reading += 1
            return memory[reading - 1]
        }
        if reading == block.count {
            block = try Array(unsafeUninitializedCapacity: RecordFile<Record>.blockRecords) { buffer, count in
                count = try file.read(into: buffer)
            }
            reading = 0
            if block.isEmpty { return nil }
        }
        reading += 1
        return block[reading - 1]
    }
}

/// Sorts `TimedRow`s by user, time and file order, holding at most `runRecords` of them in
/// memory: each full run is sorted and written to a scratch file; `merge` then reads the runs
/// a block at a time through a heap. With everything in one run, nothing is written. Used
/// once: `add` every row, then `merge`.
final class TimeSort {
    /// 96 MiB of rows: few runs for a billion-line log, small beside the sequences it yields.
    static let defaultRunRecords = 1 << 22

    private let runRecords: Int
    private let scratch: ScratchFiles
    private var buffer: [TimedRow] = []
    private var runs: [RecordFile<TimedRow>] = []

    init(runRecords: Int = defaultRunRecords, scratch: ScratchFiles) {
        precondition(runRecords >= 1)
        self.runRecords = runRecords
        self.scratch = scratch
    }

    deinit { for run in runs { run.close() } }

    func add(_ row: TimedRow) throws {
        buffer.append(row)
        if buffer.count == runRecords { try spill() }
    }

    private func spill() throws {
        buffer.sort(by: TimedRow.precedes)
        var run = try RecordFile<TimedRow>(creating: try scratch.path("run-\(runs.count)"))
        do {
            try buffer.withUnsafeBufferPointer { try run.append($0) }
            try run.rewind()
        } catch {
            run.close()
            throw error
        }
        runs.append(run)
        buffer.removeAll(keepingCapacity: true)
    }

    /// Calls `body` with every row, in order.
    func merge(_ body: (TimedRow) throws -> Void) throws {
        if runs.isEmpty {
            buffer.sort(by: TimedRow.precedes)
            for row in buffer { try body(row) }
            buffer = []
            return
        }
        if !buffer.isEmpty { try spill() }
        buffer = []
        // Each run's block, the position in it, and a heap of runs by their current row.
        let block = RecordFile<TimedRow>.blockRecords
        let blocks = UnsafeMutableBufferPointer<TimedRow>.allocate(capacity: block * runs.count)
        defer { blocks.deallocate() }
        var at = [Int](repeating: 0, count: runs.count), filled = at
        func head(_ r: Int) -> TimedRow { blocks[r * block + at[r]] }
        func refill(_ r: Int) throws -> Bool {
            filled[r] = try runs[r].read(into: UnsafeMutableBufferPointer(rebasing: blocks[(r * block)..<((r + 1) * block)]))
            at[r] = 0
            return filled[r] > 0
        }
        var heap: [Int] = []
        for r in runs.indices where try refill(r) { heap.append(r) }
        func less(_ a: Int, _ b: Int) -> Bool { TimedRow.precedes(head(heap[a]), head(heap[b])) }
        func down(_ from: Int) {
            var i = from
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count && less(l, m) { m = l }
                if r < heap.count && less(r, m) { m = r }
                if m == i { return }
                heap.swapAt(i, m)
                i = m
            }
        }
        for i in stride(from: heap.count / 2 - 1, through: 0, by: -1) { down(i) }
        while let r = heap.first {
            try body(head(r))
            at[r] += 1
            if at[r] == filled[r], !(try refill(r)) {
                heap[0] = heap[heap.count - 1]
                heap.removeLast()
            }
            if !heap.isEmpty { down(0) }
        }
    }
}
