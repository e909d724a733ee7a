// `strata-fuzz TARGET ...`: the fuzz targets of Targets.swift.
//
// Built by tools/fuzz.sh with libFuzzer (-D STRATA_FUZZ, coverage and AddressSanitizer), the
// arguments after TARGET go to libFuzzer: `strata-fuzz npy CORPUS -max_total_time=1800`.
// In an ordinary build it replays inputs instead, `strata-fuzz npy FILE|DIR...`, so that the
// test suite runs every seed and every past finding without libFuzzer; and
// `strata-fuzz seed OUT STORE` writes the seeds Seeds.swift makes (tools/fuzz.sh seed).
import Foundation

let arguments = CommandLine.arguments
#if !STRATA_FUZZ
if arguments.count == 4 && arguments[1] == "seed" {
    do { try Seeds.write(to: arguments[2], trainedStore: arguments[3]) } catch {
        FileHandle.standardError.write(Data("strata-fuzz seed: \(error)\n".utf8))
        exit(1)
    }
    exit(0)
}
#endif
// The target is the first argument, passed on in the environment: libFuzzer's -fork mode
// runs this program again with its own arguments only.
let named = arguments.count >= 2 ? FuzzTarget(rawValue: arguments[1]) : nil
if let named { setenv("STRATA_FUZZ_TARGET", named.rawValue, 1) }
guard let target = named ?? ProcessInfo.processInfo.environment["STRATA_FUZZ_TARGET"].flatMap(FuzzTarget.init(rawValue:)) else {
    FileHandle.standardError.write(Data("usage: strata-fuzz TARGET [inputs or libFuzzer options]\ntargets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))\n".utf8))
    exit(64)
}
let scratch = Scratch()

#if STRATA_FUZZ
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

/// The callback cannot capture, so the target and its scratch space are globals, set once
/// before libFuzzer starts and only read after.
nonisolated(unsafe) var fuzzed: (target: FuzzTarget, scratch: Scratch) = (target, scratch)

// libFuzzer sees the program name and the arguments after TARGET.
var argv = [strdup(arguments[0])] + arguments.dropFirst(named == nil ? 1 : 2).map { strdup($0) } + [nil]
var argc = Int32(argv.count - 1)
let status = argv.withUnsafeMutableBufferPointer { buffer in
    var base = buffer.baseAddress!
    return LLVMFuzzerRunDriver(&argc, &base) { data, size in
        fuzzed.target.run(size == 0 ? [] : Array(UnsafeBufferPointer(start: data!, count: size)), fuzzed.scratch)
        return 0
    }
}
exit(status)
#else
var inputs: [String] = []
for path in arguments.dropFirst(2) {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
        FileHandle.standardError.write(Data("strata-fuzz: \(path): no such file or directory\n".utf8))
        exit(66)
    }
    if isDirectory.boolValue {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        inputs += names.filter { !$0.hasPrefix(".") }.sorted().map { path + "/" + $0 }
    } else {
        inputs.append(path)
    }
}
for input in inputs {
    guard let data = FileManager.default.contents(atPath: input) else {
        FileHandle.standardError.write(Data("strata-fuzz: cannot read \(input)\n".utf8))
        exit(66)
    }
    target.run(Array(data), scratch)
}
print("\(target.rawValue): \(inputs.count) inputs ran")
#endif
