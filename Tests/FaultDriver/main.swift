// strata-fault-driver: runs a store in a process of its own, so that tests can kill it with
// SIGKILL, limit its file sizes or take away its permissions, and then look at what is left.
//
//   strata-fault-driver MODE ARGUMENTS...
//
// Each mode prints what the parent needs on stdout, one fact a line, and exits 0 unless the
// mode's own expectations failed. Modes live in the files beside this one.
#if canImport(Glibc)
import Glibc
#endif

let modes: [String: ([String]) throws -> Int32] = [
    "crash-writer": CrashWriter.run,
    "resident-memory": ResidentMemory.run,
    "disk-full": DiskFull.run,
    "read-only": ReadOnly.run,
    "open-store": OpenStore.run,
    "resident-memory-peak": PeakMemory.run,
    "store-teardown": StoreTeardown.run,
    "held-checkpoint": HeldCheckpoint.run,
]

let arguments = Array(CommandLine.arguments.dropFirst())
guard let name = arguments.first, let mode = modes[name] else {
    let names = modes.keys.sorted().joined(separator: ", ")
    say("usage: strata-fault-driver MODE ARGS... (modes: \(names))")
    exit(2)
}
do {
    exit(try mode(Array(arguments.dropFirst())))
} catch {
    say("error \(error)")
    exit(1)
}

/// Writes one line to stdout unbuffered, so a parent sees it even if this process is killed
/// right after.
@Sendable func say(_ line: String) {
    var bytes = Array((line + "\n").utf8)
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeMutableBytes { write(1, $0.baseAddress! + done, $0.count - done) }
        if n <= 0 { return }
        done += n
    }
}
