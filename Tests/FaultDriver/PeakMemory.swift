// resident-memory-peak ARGS...  (the arguments of resident-memory)
//
// Runs resident-memory, which samples the resident set between batches, and also reports the
// kernel's high-water mark of the resident set (VmHWM, reset first through
// /proc/self/clear_refs), which also catches peaks inside a call, such as a checkpoint.
// Prints what resident-memory prints, then `peak-resident BYTES` (or `peak-resident
// unavailable`).
#if canImport(Glibc)
import Glibc
#endif

enum PeakMemory {
    static func run(_ args: [String]) throws -> Int32 {
        var reset = false
        if let f = fopen("/proc/self/clear_refs", "w") {
            reset = fputs("5", f) >= 0
            reset = fclose(f) == 0 && reset
        }
        let status = try ResidentMemory.run(args)
        if reset, let peak = highWaterMark() {
            say("peak-resident \(peak)")
        } else {
            say("peak-resident unavailable")
        }
        return status
    }

    /// VmHWM from /proc/self/status, in bytes.
    static func highWaterMark() -> Int? {
        guard let f = fopen("/proc/self/status", "r") else { return nil }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 512)
        while fgets(&line, Int32(line.count), f) != nil {
            let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if text.hasPrefix("VmHWM:") {
                return Int(text.filter(\.isNumber)).map { $0 * 1024 }
            }
        }
        return nil
    }
}
