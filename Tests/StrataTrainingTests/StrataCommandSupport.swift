// Running the `strata` executable (built for the tests, beside the test bundle) as a child.
import Foundation
import StrataStore
import StrataTestSupport
#if canImport(Glibc)
import Glibc
#endif

enum StrataCommand {
    static var path: String { productsDirectory() + "/strata" }

    struct Result {
        /// Exit status, or 128 + signal.
        var status: Int32
        var lines: [String]
        var output: String { lines.joined(separator: "\n") }
        /// ArgumentParser's "Error: ..." line, if any.
        var error: String? { lines.first { $0.hasPrefix("Error:") } }
    }

    /// Runs `strata` to its end (killing it after `timeout` seconds). With `cgroupProcs` (a
    /// cgroup's `cgroup.procs`), a shell writes its pid there and then becomes `strata`, so
    /// that everything `strata` allocates from its first page on is charged to that cgroup.
    static func run(_ arguments: [String], timeout: Double = 120, cgroupProcs: String? = nil) throws -> Result {
        let child = try cgroupProcs.map { procs in
            try ChildProcess("/bin/sh", ["-c", #"echo $$ > "$0" && exec "$@""#, procs, path] + arguments)
        } ?? ChildProcess(path, arguments)
        let deadline = ChildProcess.now() + timeout
        var ended = false
        while ChildProcess.now() < deadline {
            if child.readLine(timeout: deadline - ChildProcess.now()) == nil {
                // nil is the end of output, or the deadline.
                ended = ChildProcess.now() < deadline
                break
            }
        }
        if !ended { child.kill() }
        let status = try child.wait()
        return Result(status: ended ? status : -1, lines: child.lines)
    }

    /// The tiny model and data every `strata train` test uses.
    static let tinyModel = ["--embedding-dim", "4", "--bottom-mlp", "8", "--top-mlp", "8"]

    /// A Criteo TSV line: label, 13 integers, 26 hexadecimal categories (small values, so
    /// that keys repeat).
    static func criteoLine(_ rng: inout SplitMix64) -> String {
        let label = rng.next() % 4 == 0 ? "1" : "0"
        let ints = (0..<13).map { _ in String(rng.next() % 50) }
        let cats = (0..<26).map { _ in String(rng.next() % 40, radix: 16) }
        return ([label] + ints + cats).joined(separator: "\t")
    }
}
