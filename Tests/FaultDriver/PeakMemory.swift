// resident-memory-peak ARGS...  (the arguments of resident-memory)
//
// Runs resident-memory, which samples the resident set between batches, and also reports the
// kernel's high-water mark of the resident set (VmHWM, reset first through
// /proc/self/clear_refs), which also catches peaks inside a call, such as a checkpoint.
// Prints what resident-memory prints, then `peak-resident BYTES` (or `peak-resident
// unavailable`).
import StrataStore
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
        if reset, let peak = peakResidentBytes() {
            say("peak-resident \(peak)")
        } else {
            say("peak-resident unavailable")
        }
        return status
    }
}
