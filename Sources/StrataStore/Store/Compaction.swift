// Giving disk space back after rows were removed. LMDB reuses freed pages but never shrinks
// its file, and the store reserves the whole map; so a closed store's data file is
// copied with only the pages in use (`mdb_env_copy2` with MDB_CP_COMPACT), then the copy
// replaces the file by rename. A crash leaves either the old file or the new one, never a
// mix: the rename is atomic and the copy is synced before it.
#if canImport(Glibc)
import Glibc
#endif

/// What `Store.compact` did.
public struct CompactionReport: Sendable, Equatable {
    /// The data file's size before and after, and the bytes of pages in use before.
    public let fileBytesBefore: Int, fileBytesAfter: Int, bytesInUseBefore: Int
}

extension Store {
    /// Rewrites the closed store at `path` with its data file holding only the pages in use.
    /// Throws `.locked` if the store is open anywhere, `.noStore` if there is none. The next
    /// open maps the file at its new size, so the gain lasts until checkpoints need more.
    public static func compact(path: String) throws(StoreError) -> CompactionReport {
        let dataPath = path + "/rows.mdb"
        guard let before = fileSize(dataPath) else { throw .noStore(path: path) }
        let lock = try StoreLockFile(path: path + "/LOCK")
        defer { lock.release() }
        let copy = dataPath + ".compacting"
        try? removeFile(copy)
        let inUse: Int
        do throws(LMDBError) {
            inUse = try LMDBEnvironment.bytesInUse(path: dataPath)
            let environment = try LMDBEnvironment(path: dataPath, mapSize: max(before, 1 << 20), maxDatabases: 4096, maxReaders: 8)
            defer { environment.close() }
            // An interrupted checkpoint is rolled back first, so that the copy is a checkpoint.
            _ = try CheckpointJournal.rollBack(environment, entriesPerTransaction: 4096)
            try environment.copyCompacted(to: copy)
        } catch {
            try? removeFile(copy)
            if error.isDiskFull { throw .diskFull(path: copy, generation: 0, detail: error.description) }
            throw .lmdb(error, file: dataPath)
        }
        do throws(SystemError) {
            let file = try OpenFile(path: copy, flags: O_RDWR)
            try file.sync()
            try renameFile(copy, dataPath)
            try syncDirectory(path)
        } catch {
            try? removeFile(copy)
            if error.isDiskFull { throw .diskFull(path: copy, generation: 0, detail: error.description) }
            throw .system(error)
        }
        // LMDB's lock file describes the old file's readers; the next open makes a new one.
        try? removeFile(dataPath + "-lock")
        return CompactionReport(fileBytesBefore: before, fileBytesAfter: fileSize(dataPath) ?? 0, bytesInUseBefore: inUse)
    }
}
