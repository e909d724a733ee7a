// open-store --store PATH [--hold SECONDS] [--second-open 1]
//
// Opens the store at PATH (creating it if needed) and prints `opened PID`, or the StoreError
// (`error-*`, see report). With --second-open it then tries to open the store a second time
// in this process and prints how that failed (`second-error-*`) or `second-opened`. With
// --hold it then keeps the store open for that long (or until killed), printing `holding`
// first, so that a test can try to open it from elsewhere.
import StrataStore
import StrataTestSupport
#if canImport(Glibc)
import Glibc
#endif

enum OpenStore {
    static func run(_ args: [String]) throws -> Int32 {
        let a = Arguments(args)
        let hold = a.int("hold", default: 0)
        let store: Store
        do throws(StoreError) {
            store = try Store(path: a.string("store"), options: SmallWorkload.options())
        } catch {
            report(error)
            return 0
        }
        say("opened \(getpid())")
        if a.int("second-open", default: 0) != 0 {
            do throws(StoreError) {
                let again = try Store(path: a.string("store"), options: SmallWorkload.options())
                say("second-opened")
                try? again.close()
            } catch {
                report(error, prefix: "second-error")
            }
        }
        if hold > 0 {
            say("holding")
            sleep(UInt32(hold))
        }
        try store.close()
        say("closed")
        return 0
    }
}
