// read-only --case create|open|while-open --store PATH
//
// When run as root (whom permissions do not stop) this process becomes `nobody` first, so
// the parent can take write permission away by owning files as root; otherwise the parent
// takes it away with chmod.
//   create      tries to create a store at PATH (in, or at, a directory it cannot write)
//   open        tries to open the existing store at PATH, whose files it cannot write
//   while-open  creates a store at PATH as the invoking user, applies SmallWorkload once and
//               checkpoints, applies it again, then loses write permission on the store's
//               directories (privileges dropped when root, chmod 0555 otherwise) and tries to
//               create a table, checkpoint and close.
// Lines: `dropped 0|1`, `opened` or `error-*` (see report); for while-open also
// `checkpoint G N`, `create-table-*`, `checkpoint-after-*`, `close-*`, `last G N`.
import StrataStore
import StrataTestSupport
#if canImport(Glibc)
import Glibc
#endif

enum ReadOnly {
    static func run(_ args: [String]) throws -> Int32 {
        let a = Arguments(args)
        let path = a.string("store")
        switch a.string("case") {
        case "create", "open":
            say("dropped \(dropPrivilegesIfRoot() ? 1 : 0)")
            var options = SmallWorkload.options()
            options.create = a.string("case") == "create"
            do throws(StoreError) {
                let store = try Store(path: path, options: options)
                say("opened")
                try? store.close()
            } catch {
                report(error)
            }
            return 0
        case "while-open":
            return try whileOpen(path)
        default:
            say("unknown case")
            return 2
        }
    }

    private static func whileOpen(_ path: String) throws -> Int32 {
        let store = try Store(path: path, options: SmallWorkload.options())
        let table = try store.createTable("rows", SmallWorkload.spec)
        try table.applyGradients(SmallWorkload.keys, SmallWorkload.gradients)
        let info = try store.checkpoint(payload: CheckpointCount.payload(1))
        say("checkpoint \(info.generation) 1")
        try table.applyGradients(SmallWorkload.keys, SmallWorkload.gradients)

        let dropped = dropPrivilegesIfRoot()
        if !dropped {
            for directory in [path + "/tables/1", path + "/tables", path] { chmod(directory, 0o555) }
        }
        say("dropped \(dropped ? 1 : 0)")

        do throws(StoreError) {
            try store.createTable("later", SmallWorkload.spec)
            say("create-table-ok")
        } catch {
            report(error, prefix: "create-table")
        }
        // The files are open already, so a checkpoint may well succeed; either way it must
        // leave the store at a checkpoint that reopens.
        do throws(StoreError) {
            let info = try store.checkpoint(payload: CheckpointCount.payload(2))
            say("checkpoint-after-ok \(info.generation) 2")
        } catch {
            report(error, prefix: "checkpoint-after")
        }
        let last = store.lastCheckpoint
        say("last \(last.generation) \(CheckpointCount.count(in: last.payload))")
        do throws(StoreError) {
            try store.close()
            say("close-ok")
        } catch {
            report(error, prefix: "close")
        }
        return 0
    }
}
