// What the fault modes share: printing a StoreError so the parent can parse it, dropping
// root's privileges, and finding the largest file of a store. The workloads a mode runs and
// its test replays are in StrataTestSupport (Tests/Support/FaultScenarios.swift).
import StrataStore
#if canImport(Glibc)
import Glibc
#endif

/// The case of a StoreError, as a word (its name in the enum).
func caseName(_ error: StoreError) -> String {
    if case .closed = error { return "closed" }
    return Mirror(reflecting: error).children.first?.label ?? "\(error)"
}

/// Prints `<prefix>-case`, `<prefix>-path` (the file or directory the error names, if any),
/// `<prefix>-generation` and `<prefix>-holder` where they apply, and `<prefix>-text`.
func report(_ error: any Error, prefix: String = "error") {
    guard let e = error as? StoreError else {
        say("\(prefix)-case other")
        say("\(prefix)-text \(error)")
        return
    }
    say("\(prefix)-case \(caseName(e))")
    switch e {
    case .newerFormat(let file, _, _), .corrupted(let file, _): say("\(prefix)-path \(file)")
    case .diskFull(let path, let generation, _):
        say("\(prefix)-path \(path)")
        say("\(prefix)-generation \(generation)")
    case .readOnly(let path, _): say("\(prefix)-path \(path)")
    case .locked(let path, let holder):
        say("\(prefix)-path \(path)")
        say("\(prefix)-holder \(holder)")
    case .lmdb(_, let file): say("\(prefix)-path \(file)")
    case .system(let s): say("\(prefix)-path \(s.path)")
    default: break
    }
    say("\(prefix)-text \(e.description)")
}

/// When running as root, becomes `nobody` (65534) for good, so that file permissions apply.
/// Returns whether privileges were dropped.
func dropPrivilegesIfRoot() -> Bool {
    guard geteuid() == 0 else { return false }
    guard setgroups(0, nil) == 0, setgid(65534) == 0, setuid(65534) == 0 else {
        say("cannot drop privileges: errno \(errno)")
        exit(3)
    }
    return true
}

/// The size of the largest regular file under `path`.
func largestFile(under path: String) -> Int {
    guard let dir = opendir(path) else { return 0 }
    defer { closedir(dir) }
    var largest = 0
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        if name == "." || name == ".." { continue }
        let full = path + "/" + name
        var info = stat()
        guard lstat(full, &info) == 0 else { continue }
        if info.st_mode & S_IFMT == S_IFDIR {
            largest = max(largest, largestFile(under: full))
        } else if info.st_mode & S_IFMT == S_IFREG {
            largest = max(largest, Int(info.st_size))
        }
    }
    return largest
}
