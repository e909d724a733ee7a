import Glibc
public import StrataModels
import StrataStore

// A text file of one sample per line, streamed: the file is read with pread(2) in large
// chunks into one buffer, lines are found with memchr and parsed in place by the file's
// format (Criteo's TSV, a CSV or TSV with a schema), and at most one shuffle block of parsed
// samples is held in memory, whatever the file's size.
//
// Shuffling permutes samples within blocks of `shuffleBlock` consecutive samples (not lines:
// skipped lines do not shorten a block), with a permutation drawn from (seed, epoch, block
// index). That is the usual compromise for data too large to shuffle: sequential reads,
// bounded memory, and an order that differs every epoch yet replays exactly.
//
// A position is the block's start (byte offset, line number, lines skipped so far) and the
// index within the block: seeking re-reads and re-permutes that one block and skips into it.

/// What to do with a line that cannot be a sample.
public enum MalformedLinePolicy: String, Sendable, Codable, Hashable {
    /// Leave it out and count it in `skippedLines`.
    case skip
    /// Throw `DataError.malformedLine` naming the file and the 1-based line number.
    case stop
}

/// What a format makes of one line.
enum LineOutcome {
    /// A sample, written into the block's slot.
    case sample
    /// Not a sample and not an error: a header, or a line of another split.
    case skip
    /// Malformed: why, for the error message.
    case fault(LineFault)
}

/// How the lines of a file become samples: Criteo's TSV, or a CSV or TSV with a schema.
enum LineFormat: Sendable {
    case criteo(CriteoFormat)
    case tabular(TabularFormat)

    var schema: FeatureSchema {
        switch self {
        case .criteo(let f): f.schema
        case .tabular(let f): f.schema
        }
    }

    /// The file kind, the file, and the format's options that decide the samples: the
    /// source's identity but for the shuffle.
    func identity(file: String) -> String {
        switch self {
        case .criteo(let f): "criteo:\(file) \(f.identity)"
        case .tabular(let f): "table:\(file) \(f.identity)"
        }
    }

    /// Parses line `number` (1-based, counting every line) into slot `slot` of `block`. On a
    /// fault the slot is left unspecified (the reader rolls its bags back).
    @inline(__always)
    func parse(_ line: UnsafeBufferPointer<UInt8>, number: Int64, into block: SampleBlock, slot: Int) -> LineOutcome {
        switch self {
        case .criteo(let f): f.parse(line, into: block, slot: slot)
        case .tabular(let f): f.parse(line, number: number, into: block, slot: slot)
        }
    }

    /// The fault in words, quoting the line. Only called on the way to an error.
    func describe(_ fault: LineFault, line: UnsafeBufferPointer<UInt8>) -> String {
        switch self {
        case .criteo(let f): f.describe(fault, line: line)
        case .tabular(let f): f.describe(fault, line: line)
        }
    }
}

/// A file of one sample per line as a `BatchSource`: Criteo's TSV (`CriteoFile`), or a CSV
/// or TSV described by a schema (`TabularData`).
///
/// Lines end with `\n` or `\r\n`; the last line may lack its newline. The file must be a
/// regular file (it is read with `pread`, so pipes and compressed files are not supported:
/// decompress first). Copies of a `LineFile` are independent readers of the same open file.
public struct LineFile: BatchSource, Sendable {
    public typealias MalformedLinePolicy = StrataTraining.MalformedLinePolicy

    public struct Options: Sendable {
        /// How lines become samples.
        var format: LineFormat
        /// Samples read contiguously and then handed out in a permuted order; 0 or 1 reads
        /// the file in order. Memory is about 270 bytes per sample of block for Criteo.
        public var shuffleBlock: Int
        /// Seeds the block permutations (with the epoch and the block's index).
        public var seed: UInt64
        public var malformedLines: MalformedLinePolicy
        /// Bytes per `pread`. Large reads keep the system-call cost per sample negligible.
        public var readChunkBytes: Int
        /// A line longer than this is malformed; bounds the memory a file without newlines
        /// (a binary or compressed file given by mistake) can take.
        public var maxLineBytes: Int

        init(format: LineFormat, shuffleBlock: Int, seed: UInt64, malformedLines: MalformedLinePolicy,
             readChunkBytes: Int = 4 << 20, maxLineBytes: Int = 1 << 20) {
            self.format = format
            self.shuffleBlock = shuffleBlock
            self.seed = seed
            self.malformedLines = malformedLines
            self.readChunkBytes = readChunkBytes
            self.maxLineBytes = maxLineBytes
        }
    }

    public let path: String
    public let options: Options
    var format: LineFormat { options.format }
    public var schema: FeatureSchema { options.format.schema }
    /// Passes over the file completed.
    public private(set) var epoch = 0
    /// Lines parsed in the current pass over the file, good or bad; once `next` has returned
    /// 0, those of the pass just completed, until the next call starts another. The reader
    /// parses a whole block ahead of the samples it has handed out, so this runs up to one
    /// block ahead of `position`.
    public var linesRead: Int64 { frontierLine }
    /// Malformed lines skipped in the same pass, as far as `linesRead`.
    public var skippedLines: Int64 { frontierSkipped }
    /// The file (its full path, size and modification time) and the options that decide the
    /// sample order (not the malformed-line policy or buffer sizes, which do not).
    public var identity: String {
        "\(format.identity(file: file.identity)) shuffle block \(options.shuffleBlock) seed \(options.seed)"
    }

    /// Samples per block. Unshuffled reading still parses in blocks, of identity order, so
    /// that the parse loop runs without a per-sample call back into `next`.
    private let blockSize: Int
    private let shuffled: Bool
    private static var unshuffledBlock: Int { 1024 }

    private let file: ReadOnlyFile
    private var buffers: LineBuffers

    // The read buffer holds file bytes [bufferOffset, bufferOffset + bufferEnd); the
    // unparsed ones start at bufferStart.
    private var bufferOffset: Int64 = 0
    private var bufferStart = 0
    private var bufferEnd = 0
    private var atEndOfFile = false
    /// Lines consumed and skipped up to the first unparsed byte (the parse frontier).
    private var frontierLine: Int64 = 0
    private var frontierSkipped: Int64 = 0

    // The current block: where it starts in the file, how many samples of this epoch came
    // before it, how many it holds and how many of them have been handed out.
    private var blockStart = FilePoint(offset: 0, line: 0, skipped: 0)
    private var blockSampleStart: Int64 = 0
    private var blockCount = 0
    private var blockNext = 0
    /// `next` returned 0: `epoch` has been counted, and the next call rewinds to the top.
    private var epochEnded = false

    /// Opens `path`. Throws `DataError.io` naming the path if it cannot be opened or is not a
    /// regular file.
    init(path: String, lineOptions options: Options) throws(DataError) {
        precondition(options.readChunkBytes > 0 && options.maxLineBytes > 0, "sizes must be positive")
        precondition(options.shuffleBlock >= 0 && options.shuffleBlock <= Int(Int32.max), "shuffleBlock is a sample count below 2^31")
        self.path = path
        self.options = options
        shuffled = options.shuffleBlock > 1
        blockSize = shuffled ? options.shuffleBlock : Self.unshuffledBlock
        file = try ReadOnlyFile(path: path)
        buffers = LineBuffers(
            byteCapacity: options.readChunkBytes + min(options.maxLineBytes, 64 << 10),
            block: SampleBlock(capacity: blockSize, schema: options.format.schema))
    }

    // MARK: Position

    /// Everything that says where the reader is, without allocating.
    private struct ResumePoint {
        var epoch: Int
        var sample: Int64
        var start: FilePoint
        var index: Int
    }

    private var resumePoint: ResumePoint {
        if epochEnded { return ResumePoint(epoch: epoch, sample: 0, start: FilePoint(offset: 0, line: 0, skipped: 0), index: 0) }
        if blockNext == blockCount {
            // The block is used up: resume from the parse frontier, no block to re-read.
            return ResumePoint(
                epoch: epoch, sample: blockSampleStart + Int64(blockCount),
                start: FilePoint(offset: frontierOffset, line: frontierLine, skipped: frontierSkipped), index: 0)
        }
        return ResumePoint(epoch: epoch, sample: blockSampleStart + Int64(blockNext), start: blockStart, index: blockNext)
    }

    private var frontierOffset: Int64 { bufferOffset + Int64(bufferStart) }

    private static let positionFormat: Int64 = 1

    /// `detail`: format, shuffle block (0 when not shuffling), seed, then the block's byte
    /// offset, line number and skipped lines at its start, and the index within the block.
    public var position: SourcePosition {
        let r = resumePoint
        return SourcePosition(epoch: r.epoch, sample: r.sample, detail: [
            Self.positionFormat, Int64(shuffled ? blockSize : 0), Int64(bitPattern: options.seed),
            r.start.offset, r.start.line, r.start.skipped, Int64(r.index),
        ])
    }

    /// Resumes at `position`, re-reading the block it is in. Throws `positionMismatch` for a
    /// position made by a reader with other shuffle options, or one past the file's end.
    /// A position with no detail and sample 0 (`SourcePosition(epoch: e)`) is the start of
    /// epoch `e`.
    public mutating func seek(to position: SourcePosition) throws(DataError) {
        let d = position.detail
        func mismatch(_ why: String) -> DataError { .positionMismatch(source: path, detail: why) }
        if d.isEmpty && position.sample == 0 && position.epoch >= 0 {
            // `SourcePosition(epoch: e)`: the start of epoch e, for callers that know no more.
            try resume(at: ResumePoint(epoch: position.epoch, sample: 0, start: FilePoint(offset: 0, line: 0, skipped: 0), index: 0))
            return
        }
        guard d.count == 7, d[0] == Self.positionFormat else { throw mismatch("not a position of a file reader") }
        // The seed matters only to a shuffled reader.
        guard d[1] == Int64(shuffled ? blockSize : 0), !shuffled || d[2] == Int64(bitPattern: options.seed) else {
            throw mismatch("made with shuffle block \(d[1]) and seed \(UInt64(bitPattern: d[2])), this reader has \(shuffled ? blockSize : 0) and \(options.seed)")
        }
        let start = FilePoint(offset: d[3], line: d[4], skipped: d[5])
        let index = d[6]
        guard position.epoch >= 0, start.offset >= 0, start.line >= 0, start.skipped >= 0, start.skipped <= start.line,
            index >= 0, index <= Int64(blockSize), position.sample >= index
        else { throw mismatch("out of range: \(position)") }
        // A block starts after a whole number of blocks; only the frontier after the short
        // last block of the file (index 0) is anywhere else.
        guard !shuffled || index == 0 || (position.sample - index) % Int64(blockSize) == 0 else {
            throw mismatch("sample \(position.sample) is not \(index) past a block start")
        }
        let size = try file.size()
        guard start.offset <= size else { throw mismatch("byte offset \(start.offset) is past the end of the file (\(size) bytes)") }
        try resume(at: ResumePoint(epoch: position.epoch, sample: position.sample, start: start, index: Int(index)))
    }

    private mutating func resume(at point: ResumePoint) throws(DataError) {
        epochEnded = false
        epoch = point.epoch
        blockSampleStart = point.sample - Int64(point.index)
        blockCount = 0
        blockNext = 0
        bufferOffset = point.start.offset
        bufferStart = 0
        bufferEnd = 0
        atEndOfFile = false
        frontierLine = point.start.line
        frontierSkipped = point.start.skipped
        blockStart = point.start
        if point.index > 0 {
            try loadBlock()
            guard point.index <= blockCount else {
                throw .positionMismatch(source: path, detail: "the block at byte \(point.start.offset) holds \(blockCount) samples, not \(point.index)")
            }
            blockNext = point.index
        }
    }

    // MARK: Reading

    /// Fills `batch` with up to `size` samples. Returns 0 at the end of the file, and the next
    /// call starts the next epoch from the top. If it throws (a malformed line in stop mode,
    /// a read error), the reader is back where it was before the call, and stays at a
    /// malformed line however often it is called.
    ///
    /// Stop mode reading in order hands out every sample before a malformed line (the call
    /// that reaches it returns a short batch) and throws on the next call. Shuffled, the
    /// error comes as soon as the block holding the line is read.
    public mutating func next(_ size: Int, into batch: Batch) throws(DataError) -> Int {
        precondition(size > 0, "a batch holds at least one sample")
        precondition(batch.schema == schema, "the batch's schema does not match the file's")
        if epochEnded { try resume(at: resumePoint) }
        let before = resumePoint
        batch.begin(capacity: size)
        var written = 0
        do {
            while written < size {
                if blockNext == blockCount {
                    try loadBlock()
                    if blockCount == 0 { break }
                }
                let take = min(size - written, blockCount - blockNext)
                copyOut(take, into: batch, at: written)
                blockNext += take
                written += take
            }
        } catch {
            if case .malformedLine = error, !shuffled, written > 0 {
                // The reader stopped at the bad line with samples in hand: they come first, the
                // error with the next call.
                batch.end(written: written)
                return written
            }
            batch.end(written: 0)
            try? resume(at: before)
            throw error
        }
        batch.end(written: written)
        if written == 0 {
            // The pass is over. The next one starts with the next call, so that the counters
            // of this one can still be read.
            epoch += 1
            epochEnded = true
        }
        return written
    }

    /// Reads the whole file once, in order, from the top: `body` gets each block of samples as a
    /// batch, with the line each row came from. Leaves the reader at the end of the pass.
    mutating func scan(_ body: (Batch, UnsafeBufferPointer<Int64>) throws -> Void) throws {
        try resume(at: ResumePoint(epoch: epoch, sample: 0, start: FilePoint(offset: 0, line: 0, skipped: 0), index: 0))
        let batch = Batch(schema: schema)
        while true {
            try loadBlock()
            if blockCount == 0 { return }
            batch.begin(capacity: blockCount)
            buffers.block.copy(blockCount, order: nil, from: 0, into: batch, at: 0)
            batch.end(written: blockCount)
            batch.computeCrosses()
            blockNext = blockCount
            try body(batch, UnsafeBufferPointer(start: buffers.block.lines, count: blockCount))
        }
    }

    /// Copies samples `blockNext ..< blockNext + n` of the block (in permuted order) to batch
    /// rows `at ..< at + n`.
    private func copyOut(_ n: Int, into batch: Batch, at: Int) {
        let block = buffers.block, first = blockNext
        let order = shuffled ? buffers.order : nil
        block.copy(n, order: order.map { $0 + first }, from: first, into: batch, at: at)
    }

    /// Parses the next block from the frontier and permutes it.
    ///
    /// At a malformed line in stop mode the frontier goes back to the start of that line, so
    /// that whoever reads on meets it again. Unshuffled, the block then ends early and the
    /// good samples before the line are handed out first; the error comes from the next load,
    /// which starts at the line. Shuffled, it throws at once (a short block would shift every
    /// later block's permutation), and `next` restores the position it started from.
    private mutating func loadBlock() throws(DataError) {
        blockSampleStart += Int64(blockCount)
        blockStart = FilePoint(offset: frontierOffset, line: frontierLine, skipped: frontierSkipped)
        blockCount = 0
        blockNext = 0
        if !isKnownUniquelyReferenced(&buffers) { buffers = buffers.copy() }
        let b = buffers, block = b.block
        block.clear()
        let skipBad = options.malformedLines == .skip
        while blockCount < blockSize {
            let lineStart = FilePoint(offset: frontierOffset, line: frontierLine, skipped: frontierSkipped)
            let reason: String
            switch try nextLine() {
            case .endOfFile:
                if shuffled { permuteBlock() }
                return
            case .tooLong:
                frontierLine += 1
                if skipBad {
                    frontierSkipped += 1
                    continue
                }
                reason = "longer than \(options.maxLineBytes) bytes"
            case let .line(start, end):
                frontierLine += 1
                let text = UnsafeBufferPointer(start: b.bytes + start, count: end - start)
                switch format.parse(text, number: frontierLine, into: block, slot: blockCount) {
                case .sample:
                    block.lines[blockCount] = frontierLine
                    block.commit(blockCount)
                    blockCount += 1
                    continue
                case .skip:
                    block.rollBack(blockCount)
                    continue
                case .fault(let fault):
                    block.rollBack(blockCount)
                    if skipBad {
                        frontierSkipped += 1
                        continue
                    }
                    reason = format.describe(fault, line: text)
                }
            }
            let error = DataError.malformedLine(file: path, line: Int(frontierLine), reason: reason)
            rewind(to: lineStart)
            if !shuffled && blockCount > 0 { return }
            throw error
        }
        if shuffled { permuteBlock() }
    }

    /// Puts the parse frontier at `point` (the buffer is refilled from there when next needed).
    private mutating func rewind(to point: FilePoint) {
        bufferOffset = point.offset
        bufferStart = 0
        bufferEnd = 0
        atEndOfFile = false
        frontierLine = point.line
        frontierSkipped = point.skipped
    }

    /// Draws the block's order from (seed, epoch, block index) with Fisher–Yates.
    private func permuteBlock() {
        let order = buffers.order
        for i in 0..<blockCount { order[i] = Int32(i) }
        let blockIndex = UInt64(blockSampleStart / Int64(blockSize))
        var h = SplitMix64.mix(options.seed ^ 0x5348_5546_464C_4531)  // "SHUFFLE1"
        h = SplitMix64.mix(h ^ UInt64(epoch))
        h = SplitMix64.mix(h ^ blockIndex)
        var rng = SplitMix64(seed: h)
        var slots = UnsafeMutableBufferPointer(start: order, count: blockCount)
        shuffle(&slots, &rng)
    }

    private enum NextLine {
        /// Buffer indexes of the line's bytes, without `\n` or `\r\n`.
        case line(Int, Int)
        /// More than `maxLineBytes` bytes before the newline; the whole line is consumed.
        case tooLong
        case endOfFile
    }

    /// Finds the next line in the buffer, reading more of the file as needed. The indexes
    /// stay valid until the next call. Whether a line is too long depends only on the line,
    /// never on where the read chunks happen to end.
    private mutating func nextLine() throws(DataError) -> NextLine {
        var searchFrom = bufferStart
        let limit = options.maxLineBytes
        while true {
            // Reloaded on every pass: `refill` may move the buffer.
            let bytes = buffers.bytes
            if let newline = memchr(bytes + searchFrom, 0x0A, bufferEnd - searchFrom) {
                let end = bytes.distance(to: newline.assumingMemoryBound(to: UInt8.self))
                let start = bufferStart
                bufferStart = end + 1
                if end - start > limit { return .tooLong }
                return .line(start, end > start && bytes[end - 1] == 0x0D ? end - 1 : end)
            }
            if atEndOfFile {
                guard bufferStart < bufferEnd else { return .endOfFile }
                let start = bufferStart, end = bufferEnd
                bufferStart = bufferEnd
                if end - start > limit { return .tooLong }
                return .line(start, bytes[end - 1] == 0x0D ? end - 1 : end)
            }
            if bufferEnd - bufferStart > limit {
                // Too long already: drop it without holding it all.
                bufferStart = bufferEnd
                try discardRestOfLine()
                return .tooLong
            }
            let scanned = bufferEnd - bufferStart
            try refill()
            searchFrom = bufferStart + scanned
        }
    }

    /// Drops bytes up to and including the next newline (the rest of an over-long line).
    private mutating func discardRestOfLine() throws(DataError) {
        while true {
            let bytes = buffers.bytes
            if let newline = memchr(bytes + bufferStart, 0x0A, bufferEnd - bufferStart) {
                bufferStart = bytes.distance(to: newline.assumingMemoryBound(to: UInt8.self)) + 1
                return
            }
            bufferStart = bufferEnd
            if atEndOfFile { return }
            try refill()
        }
    }

    /// Moves the unparsed bytes to the front of the buffer and reads the next chunk after
    /// them, growing the buffer only for a line longer than its free space.
    private mutating func refill() throws(DataError) {
        let keep = bufferEnd - bufferStart
        if bufferStart > 0 {
            if keep > 0 { memmove(buffers.bytes, buffers.bytes + bufferStart, keep) }
            bufferOffset += Int64(bufferStart)
            bufferStart = 0
            bufferEnd = keep
        }
        let chunk = options.readChunkBytes
        if buffers.byteCapacity - bufferEnd < chunk { buffers.growBytes(to: bufferEnd + chunk, keeping: bufferEnd) }
        let got = try file.read(into: buffers.bytes + bufferEnd, count: chunk, at: bufferOffset + Int64(bufferEnd))
        if got < chunk { atEndOfFile = true }
        bufferEnd += got
    }
}

/// Fisher–Yates with `rng`: the same permutation for the same generator state, everywhere.
func shuffle<C: MutableCollection & RandomAccessCollection>(_ c: inout C, _ rng: inout SplitMix64) where C.Index == Int {
    var i = c.count - 1
    while i > 0 {
        // Multiply-high maps 64 random bits onto 0...i with a bias below i / 2^64.
        let j = Int(rng.next().multipliedFullWidth(by: UInt64(i + 1)).high)
        c.swapAt(c.startIndex + i, c.startIndex + j)
        i -= 1
    }
}

/// A place in the file between lines: the byte offset, and the lines read and skipped before it.
private struct FilePoint {
    var offset: Int64
    var line: Int64
    var skipped: Int64
}

/// The reader's memory: the read buffer, one block of parsed samples and its permutation,
/// as raw memory so the parser works on pointers. Shared copy-on-write between copies of a
/// `LineFile`.
private final class LineBuffers: @unchecked Sendable {
    // @unchecked: a reader mutates its buffers only after making them uniquely referenced
    // (`isKnownUniquelyReferenced`), so no two values ever write the same memory.
    private(set) var bytes: UnsafeMutablePointer<UInt8>
    private(set) var byteCapacity: Int
    let block: SampleBlock
    /// The block's permutation: slot `i` hands out sample `order[i]`.
    let order: UnsafeMutablePointer<Int32>

    init(byteCapacity: Int, block: SampleBlock) {
        self.byteCapacity = byteCapacity
        self.block = block
        bytes = .allocate(capacity: byteCapacity)
        order = .allocate(capacity: block.capacity)
    }

    func copy() -> LineBuffers {
        let c = LineBuffers(byteCapacity: byteCapacity, block: block.copy())
        c.bytes.update(from: bytes, count: byteCapacity)
        c.order.update(from: order, count: block.capacity)
        return c
    }

    func growBytes(to capacity: Int, keeping: Int) {
        let grown = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
        grown.update(from: bytes, count: keeping)
        bytes.deallocate()
        bytes = grown
        byteCapacity = capacity
    }

    deinit {
        bytes.deallocate()
        order.deallocate()
    }
}

/// A file open for reading with `pread`, which keeps no file offset, so copies of a reader can
/// share it. Closed when the last reader goes.
final class ReadOnlyFile: Sendable {
    let descriptor: Int32
    let path: String

    init(path: String) throws(DataError) {
        var fd: Int32
        repeat { fd = open(path, O_RDONLY | O_CLOEXEC) } while fd < 0 && errno == EINTR
        guard fd >= 0 else { throw .io(path: path, operation: "open", detail: String(cString: strerror(errno))) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let code = errno
            close(fd)
            throw .io(path: path, operation: "fstat", detail: String(cString: strerror(code)))
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw .io(path: path, operation: "open", detail: "not a regular file")
        }
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)
        descriptor = fd
        self.path = path
    }

    deinit { close(descriptor) }

    /// Reads up to `count` bytes at `offset`; fewer only at the end of the file.
    func read(into buffer: UnsafeMutablePointer<UInt8>, count: Int, at offset: Int64) throws(DataError) -> Int {
        var done = 0
        while done < count {
            let n = pread(descriptor, buffer + done, count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(path: path, operation: "read", detail: String(cString: strerror(errno)))
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// The resolved path (`realpath`), size and modification time: the same file however it
    /// was named, and a different one after it changed.
    var identity: String {
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { return path }
        let resolved = realpath(path, nil).map { p in defer { free(p) }; return String(cString: p) } ?? path
        return "\(resolved) (\(info.st_size) bytes, modified \(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec))"
    }

    func size() throws(DataError) -> Int64 {
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            throw .io(path: path, operation: "fstat", detail: String(cString: strerror(errno)))
        }
        return Int64(info.st_size)
    }
}
