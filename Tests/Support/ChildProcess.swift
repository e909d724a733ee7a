// A child process with its stdout and stderr on one pipe, read a line at a time.
#if canImport(Glibc)
public import Glibc
#endif

public final class ChildProcess {
    public let pid: pid_t
    private let output: Int32
    private var buffer: [UInt8] = []
    private var reaped: Int32?
    public private(set) var lines: [String] = []

    /// Starts `path` with `arguments`, in this process's environment with `environment`'s
    /// variables set (replacing any of the same name).
    public init(_ path: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw ChildError.spawn("pipe: \(errno)") }
        // Other children spawned meanwhile must not inherit this pipe (dup2 in the child
        // clears the flag on its own copies).
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
        posix_spawn_file_actions_addclose(&actions, fds[0])
        posix_spawn_file_actions_addclose(&actions, fds[1])
        defer { posix_spawn_file_actions_destroy(&actions) }
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var inherited: [String] = []
        var at: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> = environ
        while let entry = at.pointee {
            let text = String(cString: entry)
            if environment[String(text.prefix { $0 != "=" })] == nil { inherited.append(text) }
            at += 1
        }
        let envp = (inherited + environment.map { "\($0.key)=\($0.value)" }).map { strdup($0) } + [nil]
        defer { envp.forEach { free($0) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, path, &actions, nil, argv, envp)
        close(fds[1])
        guard rc == 0 else {
            close(fds[0])
            throw ChildError.spawn("posix_spawn \(path): \(String(cString: strerror(rc)))")
        }
        pid = child
        output = fds[0]
    }

    deinit {
        if reaped == nil {
            _ = Glibc.kill(pid, SIGKILL)
            _ = try? wait()
        }
        close(output)
    }

    /// The next line of output, or nil at end of output or after `timeout` seconds.
    public func readLine(timeout: Double = 60) -> String? {
        let deadline = Self.now() + timeout
        while true {
            if let newline = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                lines.append(line)
                return line
            }
            let left = deadline - Self.now()
            if left <= 0 { return nil }
            var p = pollfd(fd: output, events: Int16(POLLIN), revents: 0)
            let ready = poll(&p, 1, Int32(min(left * 1000, 1000)))
            if ready <= 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = read(output, &chunk, chunk.count)
            if n <= 0 {
                if buffer.isEmpty { return nil }
                let line = String(decoding: buffer, as: UTF8.self)
                buffer.removeAll()
                lines.append(line)
                return line
            }
            buffer.append(contentsOf: chunk[..<n])
        }
    }

    /// Reads until end of output; returns every line read so far (including earlier ones).
    @discardableResult
    public func readAll(timeout: Double = 120) -> [String] {
        let deadline = Self.now() + timeout
        while Self.now() < deadline, readLine(timeout: deadline - Self.now()) != nil {}
        return lines
    }

    public func kill(_ signal: Int32 = SIGKILL) {
        _ = Glibc.kill(pid, signal)
    }

    /// Waits for exit; returns the exit status, or 128 + signal if killed.
    @discardableResult
    public func wait() throws -> Int32 {
        if let reaped { return reaped }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { throw ChildError.spawn("waitpid: \(errno)") }
        }
        let code = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        reaped = code
        return code
    }

    public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }
}

public enum ChildError: Error, CustomStringConvertible {
    case spawn(String)
    public var description: String {
        switch self { case .spawn(let s): s }
    }
}

/// The directory holding the test binary, where SwiftPM also puts the package's executables.
public func productsDirectory() -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    let path = String(decoding: buffer[..<max(n, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)])
}

/// A fresh empty directory under the system's temporary directory.
public func temporaryDirectory(_ prefix: String) -> String {
    var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
    guard let p = mkdtemp(&template) else { fatalError("mkdtemp failed: \(errno)") }
    return String(cString: p)
}

/// `rm -rf`.
public func removeDirectory(_ path: String) {
    let child = try? ChildProcess("/bin/rm", ["-rf", path])
    _ = try? child?.wait()
}
