#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An `errno` from a POSIX call, with the call and the path it was about.
public struct SystemError: Error, Sendable, Equatable, CustomStringConvertible {
    public let code: Int32
    public let operation: String
    public let path: String

    init(_ operation: String, _ path: String, code: Int32 = errno) {
        self.code = code
        self.operation = operation
        self.path = path
    }

    public var description: String {
        "\(operation) \(path): \(String(cString: strerror(code)))"
    }

    /// No space left, a file-size limit or a quota: all mean the disk cannot take more.
    var isDiskFull: Bool { code == ENOSPC || code == EFBIG || code == EDQUOT }
    /// The directory or file system refuses writes.
    var isPermission: Bool { code == EROFS || code == EACCES || code == EPERM }
}

/// An open file descriptor, closed when the value ends. Every call retries on `EINTR`.
struct OpenFile: ~Copyable {
    let descriptor: Int32
    let path: String

    /// Opens with `open(2)`; `flags` as for `open` (`O_CLOEXEC` is always added).
    init(path: String, flags: Int32, mode: mode_t = 0o644) throws(SystemError) {
        var fd: Int32
        repeat { fd = Glibc.open(path, flags | O_CLOEXEC, mode) } while fd < 0 && errno == EINTR
        guard fd >= 0 else { throw SystemError("open", path) }
        descriptor = fd
        self.path = path
    }

    deinit { _ = Glibc.close(descriptor) }

    /// Reads `buffer.count` bytes at `offset` with `pread(2)`; returns fewer only at end of file.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(SystemError) -> Int {
        var done = 0
        while done < buffer.count {
            let n = pread(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError("pread", path)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Writes all of `bytes` at `offset` with `pwrite(2)`.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(SystemError) {
        var done = 0
        while done < bytes.count {
            let n = pwrite(descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError("pwrite", path)
            }
            done += n
        }
    }

    /// The file's size from `fstat(2)`.
    func size() throws(SystemError) -> Int {
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { throw SystemError("fstat", path) }
        return Int(info.st_size)
    }

    /// Sets the size with `ftruncate(2)`; growing leaves a hole.
    func truncate(to length: Int) throws(SystemError) {
        var rc: Int32
        repeat { rc = ftruncate(descriptor, off_t(length)) } while rc != 0 && errno == EINTR
        guard rc == 0 else { throw SystemError("ftruncate", path) }
    }

    /// Reserves disk blocks for `[offset, offset + length)` (`reserveBlocks`).
    func reserve(from offset: Int = 0, _ length: Int) throws(SystemError) {
        try reserveBlocks(descriptor, path, from: offset, length: length)
    }

    /// Flushes data and metadata with `fsync(2)`.
    func sync() throws(SystemError) {
        guard fsync(descriptor) == 0 else { throw SystemError("fsync", path) }
    }
}

/// The process holding a POSIX record lock that conflicts with a write lock on the whole of
/// the open file `descriptor` (`fcntl` F_GETLK), or nil when none does or it cannot be asked.
/// Locks of this process never conflict with its own, so they are not seen.
func recordLockHolder(_ descriptor: Int32) -> pid_t? {
    var probe = flock()
    probe.l_type = Int16(F_WRLCK)
    probe.l_whence = Int16(SEEK_SET)
    guard fcntl(descriptor, F_GETLK, &probe) == 0, probe.l_type != Int16(F_UNLCK) else { return nil }
    return probe.l_pid
}

/// What this process is, for others to read: the name of its program and, when the first
/// argument is a word rather than an option or a path, that argument (a subcommand), as in
/// "strata train"; from `/proc/self/cmdline`. Empty where there is none.
func processDescription() -> String {
    let fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return "" }
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: 4096)
    let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    guard n > 0 else { return "" }
    let arguments = bytes[..<n].split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
    guard let program = arguments.first?.split(separator: "/").last.map(String.init) else { return "" }
    if arguments.count > 1, let first = arguments[1].first, first.isLetter, arguments[1].count <= 32,
       arguments[1].allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) {
        return program + " " + arguments[1]
    }
    return program
}

/// Reserves disk blocks for `[offset, offset + length)` of an open file with
/// `posix_fallocate(3)`, so that writes through a mapping can never meet a full disk (which
/// would be SIGBUS, not an error). First checks that the file system has room for the blocks
/// not yet allocated: if not, throws ENOSPC saying how much was wanted and how much is free,
/// having reserved nothing.
/// The bytes an unprivileged process may still write on the file system holding `path`
/// (`statvfs`'s f_bavail), or nil if it cannot be asked.
public func freeBytes(onFileSystemOf path: String) -> Int? {
    var fs = statvfs()
    return statvfs(path, &fs) == 0 ? availableBytes(fs) : nil
}

private func availableBytes(_ fs: statvfs) -> Int { Int(fs.f_bavail) &* Int(fs.f_frsize) }

func reserveBlocks(_ descriptor: Int32, _ path: String, from offset: Int, length: Int) throws(SystemError) {
    var info = stat()
    var fs = statvfs()
    if fstat(descriptor, &info) == 0, fstatvfs(descriptor, &fs) == 0 {
        let allocated = Int(info.st_blocks) * 512
        // The file system allocates whole blocks: the range widened to them.
        let block = max(Int(fs.f_frsize), 512)
        let start = offset / block * block, end = (offset + length + block - 1) / block * block
        // An upper bound on the bytes the range still needs. A file reserved from its start
        // (LMDB's) holds its allocated blocks first, so the range needs what lies past them.
        // A file reserved in pieces (a warm file, one region per shard) says nothing about
        // this range through its blocks elsewhere: all of it counts.
        let wanted = start == 0 ? max(end - allocated, 0) : end - start
        let free = availableBytes(fs)
        guard wanted <= free else {
            throw SystemError("reserving \(byteText(wanted)) more (the file system has \(byteText(free)) free) for", path, code: ENOSPC)
        }
    }
    let rc = posix_fallocate(descriptor, off_t(offset), off_t(length))
    guard rc == 0 else { throw SystemError("posix_fallocate", path, code: rc) }
}

/// Bytes as people read them: "1.5 GiB".
public func byteText(_ bytes: Int) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes), unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(bytes) bytes" : "\((value * 10).rounded() / 10) \(units[unit])"
}

/// A `mmap(2)` region, unmapped when the value ends.
struct Mapping: ~Copyable {
    let base: UnsafeMutableRawPointer
    let length: Int

    /// Maps `length` bytes of `file` shared and writable (`mmap(2)` with `MAP_SHARED`).
    init(length: Int, file: borrowing OpenFile) throws(SystemError) {
        try self.init(length: length, flags: MAP_SHARED, descriptor: file.descriptor, what: file.path)
    }

    /// Maps `length` bytes of private anonymous memory; pages cost nothing until touched.
    /// Asks for transparent huge pages (`madvise(MADV_HUGEPAGE)`): random reads over a large
    /// region then miss the TLB far less. Where the kernel does not do them, nothing changes.
    init(anonymous length: Int) throws(SystemError) {
        try self.init(length: length, flags: MAP_PRIVATE | MAP_ANONYMOUS, descriptor: -1, what: "anonymous memory")
        _ = madvise(base, length, MADV_HUGEPAGE)
    }

    private init(length: Int, flags: Int32, descriptor: Int32, what: String) throws(SystemError) {
        precondition(length > 0)
        let address = mmap(nil, length, PROT_READ | PROT_WRITE, flags, descriptor, 0)
        guard let address, address != MAP_FAILED else { throw SystemError("mmap", what) }
        base = address
        self.length = length
    }

    deinit { munmap(base, length) }

    /// Writes dirty pages back with `msync(2)` and waits.
    func sync(path: String) throws(SystemError) {
        guard msync(base, length, MS_SYNC) == 0 else { throw SystemError("msync", path) }
    }
}

/// Drops the pages of `[address, address+length)` from this process's page tables with
/// `madvise(MADV_DONTNEED)`. For shared file mappings the data stays in the page cache; the
/// next touch maps it again. Used to keep resident memory within budget.
func releaseResidentPages(_ address: UnsafeMutableRawPointer, _ length: Int) {
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    let start = Int(bitPattern: address) & ~(page - 1)
    let end = Int(bitPattern: address) + length
    _ = madvise(UnsafeMutableRawPointer(bitPattern: start), end - start, MADV_DONTNEED)
}

/// Creates `path` and its parents like `mkdir -p`.
func makeDirectories(_ path: String) throws(SystemError) {
    var prefix = path.hasPrefix("/") ? "/" : ""
    for part in path.split(separator: "/") {
        prefix += part
        if mkdir(prefix, 0o755) != 0 && errno != EEXIST { throw SystemError("mkdir", prefix) }
        prefix += "/"
    }
}

/// `fsync(2)` on a directory, so that a rename or unlink in it is durable.
public func syncDirectory(_ path: String) throws(SystemError) {
    let dir = try OpenFile(path: path, flags: O_RDONLY | O_DIRECTORY)
    try dir.sync()
}

/// Replaces the file at `path` (in a directory, not the working one alone) with `bytes` in
/// one step that survives a power cut: written to `path.tmp` and synced, renamed over
/// `path`, and the directory synced. A failure before the rename leaves `path` as it was.
public func replaceFileDurably(_ path: String, with bytes: [UInt8]) throws(SystemError) {
    let temporary = path + ".tmp"
    do {
        let file = try OpenFile(path: temporary, flags: O_WRONLY | O_CREAT | O_TRUNC)
        var failure: SystemError?
        bytes.withUnsafeBytes { b in
            do throws(SystemError) { try file.write(b, at: 0) } catch { failure = error }
        }
        if let failure { throw failure }
        try file.sync()
    }
    try renameFile(temporary, path)
    try syncDirectory(path.lastIndex(of: "/").map { String(path[..<$0]) } ?? ".")
}

/// `rename(2)`.
func renameFile(_ from: String, _ to: String) throws(SystemError) {
    guard rename(from, to) == 0 else { throw SystemError("rename", from) }
}

/// `unlink(2)`; a missing file is not an error.
func removeFile(_ path: String) throws(SystemError) {
    guard unlink(path) == 0 || errno == ENOENT else { throw SystemError("unlink", path) }
}

func fileExists(_ path: String) -> Bool {
    access(path, F_OK) == 0
}

/// Resident set size of this process in bytes, from `/proc/self/statm`.
public func residentBytes() -> Int { residentPages()?.resident ?? 0 }

/// Resident pages of file mappings (and shared memory) of this process in bytes, from
/// `/proc/self/statm`: what the LMDB map adds to the resident set, among the rest. Nil where
/// there is no /proc.
func fileResidentBytes() -> Int? { residentPages()?.shared }

/// The resident and shared (file-backed) fields of `/proc/self/statm`, in bytes. One
/// open-read-close, with no allocation: cheap enough to check every few LMDB reads.
private func residentPages() -> (resident: Int, shared: Int)? {
    let fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 128) { buffer -> (Int, Int)? in
        let n = read(fd, buffer.baseAddress, buffer.count)
        guard n > 0 else { return nil }
        // Fields: size resident shared text lib data dt, in pages.
        var fields = (0, 0, 0), index = 0, value = 0, inNumber = false
        for byte in buffer.prefix(n) {
            if byte >= 0x30 && byte <= 0x39 {
                value = value * 10 + Int(byte - 0x30)
                inNumber = true
            } else if inNumber {
                switch index {
                case 0: fields.0 = value
                case 1: fields.1 = value
                default: fields.2 = value
                }
                index += 1
                value = 0
                inNumber = false
                if index == 3 { break }
            }
        }
        guard index == 3 else { return nil }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        return (fields.1 * page, fields.2 * page)
    }
}

/// The kernel's high-water mark of this process's resident set (VmHWM in
/// `/proc/self/status`) in bytes, or nil where there is none. Writing "5" to
/// `/proc/self/clear_refs` resets it.
public func peakResidentBytes() -> Int? { procKilobyteFields("/proc/self/status", ["VmHWM:"])["VmHWM:"] }

/// This process's resident memory by kind: what a cgroup's memory limit counts, and which of
/// it the kernel can reclaim without writing.
public struct ProcessMemory: Sendable, Equatable {
    /// Anonymous pages (RssAnon): heap, stacks, the hot tier. Never reclaimable without swap.
    public var anonymous: Int
    /// Pages of mapped files (RssFile), clean or dirty: LMDB's map, the warm and spill files,
    /// the binary and its libraries.
    public var fileBacked: Int
    /// Dirty pages of mapped files (Private_Dirty + Shared_Dirty - Anonymous in
    /// `/proc/self/smaps_rollup`): the part of `fileBacked` the kernel must write back before
    /// it can reclaim it.
    public var fileDirty: Int
    /// The resident set's high-water mark (VmHWM).
    public var peak: Int

    public init(anonymous: Int, fileBacked: Int, fileDirty: Int, peak: Int) {
        (self.anonymous, self.fileBacked, self.fileDirty, self.peak) = (anonymous, fileBacked, fileDirty, peak)
    }

    /// Raises each field to `other`'s where that is larger: the most of each kind seen.
    public mutating func raise(to other: ProcessMemory) {
        anonymous = max(anonymous, other.anonymous)
        fileBacked = max(fileBacked, other.fileBacked)
        fileDirty = max(fileDirty, other.fileDirty)
        peak = max(peak, other.peak)
    }

    /// Read from `/proc/self/status` and `/proc/self/smaps_rollup`; nil where they are
    /// missing. smaps_rollup walks the page tables: call it every few seconds, not per batch.
    public static func current() -> ProcessMemory? {
        let status = procKilobyteFields("/proc/self/status", ["RssAnon:", "RssFile:", "RssShmem:", "VmHWM:"])
        let rollup = procKilobyteFields("/proc/self/smaps_rollup", ["Private_Dirty:", "Shared_Dirty:", "Anonymous:"])
        guard let anonymous = status["RssAnon:"], let file = status["RssFile:"], let peak = status["VmHWM:"],
              let privateDirty = rollup["Private_Dirty:"], let sharedDirty = rollup["Shared_Dirty:"],
              let anonymousMapped = rollup["Anonymous:"] else { return nil }
        return ProcessMemory(anonymous: anonymous, fileBacked: file + (status["RssShmem:"] ?? 0),
                             fileDirty: max(0, privateDirty + sharedDirty - anonymousMapped), peak: peak)
    }
}

/// The `name: N kB` fields of a /proc file, in bytes, for the names asked (each with its colon).
private func procKilobyteFields(_ path: String, _ names: [String]) -> [String: Int] {
    guard let f = fopen(path, "r") else { return [:] }
    defer { fclose(f) }
    var found: [String: Int] = [:]
    var line = [CChar](repeating: 0, count: 512)
    while fgets(&line, Int32(line.count), f) != nil {
        let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let name = names.first(where: { text.hasPrefix($0) }) else { continue }
        found[name] = Int(text.dropFirst(name.count).filter(\.isNumber)).map { $0 * 1024 }
    }
    return found
}

/// Disk blocks allocated to `path` and, for a directory, everything under it (st_blocks, as
/// `du` counts them; symbolic links are not followed). 0 for a missing path.
public func allocatedBytes(_ path: String) -> Int {
    var info = stat()
    guard lstat(path, &info) == 0 else { return 0 }
    var total = Int(info.st_blocks) * 512
    if info.st_mode & S_IFMT == S_IFDIR, let names = try? directoryEntries(path) {
        for name in names { total += allocatedBytes(path + "/" + name) }
    }
    return total
}

/// The names in a directory (`opendir`, `readdir`), without "." and "..".
@_spi(Testing) public func directoryEntries(_ path: String) throws(SystemError) -> [String] {
    guard let dir = opendir(path) else { throw SystemError("opendir", path) }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

/// Deletes a directory and everything under it, like `rm -r`.
func removeTree(_ path: String) throws(SystemError) {
    var info = stat()
    guard lstat(path, &info) == 0 else {
        if errno == ENOENT { return }
        throw SystemError("lstat", path)
    }
    if info.st_mode & S_IFMT == S_IFDIR {
        for name in try directoryEntries(path) { try removeTree(path + "/" + name) }
        guard rmdir(path) == 0 else { throw SystemError("rmdir", path) }
    } else {
        try removeFile(path)
    }
}

/// The size of the file at `path`, or nil if it does not exist.
func fileSize(_ path: String) -> Int? {
    var info = stat()
    guard stat(path, &info) == 0 else { return nil }
    return Int(info.st_size)
}

/// `count` zeroed values of `T` in anonymous memory (`mmap`): pages cost nothing until used,
/// so bookkeeping sized for a large capacity costs memory only as the capacity fills.
func zeroedPages<T>(_ count: Int, of: T.Type) -> UnsafeMutablePointer<T> {
    let bytes = max(count * MemoryLayout<T>.stride, 1)
    guard let memory = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), memory != MAP_FAILED else {
        fatalError("out of address space for \(bytes) bytes of bookkeeping")
    }
    return memory.bindMemory(to: T.self, capacity: count)
}

/// Returns memory from `zeroedPages`.
func freePages<T>(_ pointer: UnsafeMutablePointer<T>, _ count: Int) {
    munmap(pointer, max(count * MemoryLayout<T>.stride, 1))
}

/// Runs `body` on a new detached thread (`pthread_create`); `purpose` names it in an error.
func startThread(for purpose: String, _ body: @escaping @Sendable () -> Void) throws(SystemError) {
    final class Box: @unchecked Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { context in
        let box = Unmanaged<Box>.fromOpaque(context!).takeRetainedValue()
        box.body()
        return nil
    }, box)
    guard rc == 0 else {
        Unmanaged<Box>.fromOpaque(box).release()
        throw SystemError("pthread_create", purpose, code: rc)
    }
    pthread_detach(thread)
}
