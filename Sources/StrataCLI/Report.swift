// `--report DIR` of `strata bench` and `strata train`: the figures as JSON, and pictures of
// them drawn by tools/plot-report.py with matplotlib in the Python environment tools/setup.sh
// makes. A missing Python or script costs the pictures, not the figures: it is said on
// stderr and the command still succeeds.
import Foundation

/// Writes `object` as DIR/name (creating DIR).
func writeJSONReport(_ object: Any, named name: String, in directory: String) throws {
    do {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        try data.write(to: URL(fileURLWithPath: directory + "/" + name))
    } catch {
        throw ToolError("--report \(directory): cannot write the report there: \(error.localizedDescription)")
    }
}

/// Runs `plot-report.py KIND DIR`; its lines ("wrote DIR/x.png") go to stdout.
func drawReport(_ kind: String, _ directory: String) {
    let environment = ProcessInfo.processInfo.environment
    let venv = environment["STRATA_PYTHON_VENV"] ?? NSHomeDirectory() + "/.cache/strata/python"
    let python = venv + "/bin/python"
    guard let script = plotScript() else {
        FileHandle.standardError.write(Data("note: pictures not drawn: tools/plot-report.py not found (run from the repository, or set STRATA_PLOT_SCRIPT)\n".utf8))
        return
    }
    guard FileManager.default.isExecutableFile(atPath: python) else {
        FileHandle.standardError.write(Data("note: pictures not drawn: no \(python) (tools/setup.sh makes it)\n".utf8))
        return
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: python)
    process.arguments = [script, kind, directory]
    do {
        try process.run()
        process.waitUntilExit()
        if process.terminationStatus != 0 {
            FileHandle.standardError.write(Data("note: pictures not drawn: plot-report.py exited with \(process.terminationStatus)\n".utf8))
        }
    } catch {
        FileHandle.standardError.write(Data("note: pictures not drawn: \(error.localizedDescription)\n".utf8))
    }
}

/// $STRATA_PLOT_SCRIPT, else tools/plot-report.py in the current directory or above the
/// executable (a build inside the repository).
private func plotScript() -> String? {
    if let path = ProcessInfo.processInfo.environment["STRATA_PLOT_SCRIPT"] { return path }
    var candidates = [FileManager.default.currentDirectoryPath]
    let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var directory = URL(fileURLWithPath: executable).deletingLastPathComponent()
    for _ in 0..<6 {
        candidates.append(directory.path)
        directory = directory.deletingLastPathComponent()
    }
    return candidates.map { $0 + "/tools/plot-report.py" }.first { FileManager.default.fileExists(atPath: $0) }
}

/// "2 CPUs (model), 23 GiB" from /proc.
func machineDescription() -> String {
    let cpus = ProcessInfo.processInfo.activeProcessorCount
    let model = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
        .split(separator: "\n").first { $0.hasPrefix("model name") }?
        .split(separator: ":", maxSplits: 1).last?.trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
    let gib = Double(ProcessInfo.processInfo.physicalMemory) / Double(1 << 30)
    return "\(cpus) CPUs (\(model)), \(Int(gib.rounded())) GiB"
}
