// Where a run over several processes keeps its tables: one directory, the shard set, holding
// `shards.json` (how many ranks the keys are spread over) and a folder of one store per rank,
// `N-shards/shard-R`. Each shard is an ordinary store, with its own tiers, budgets and
// checkpoints: the tools open one as they open any store, or the whole set.
//
// Resuming on another number of ranks re-shards the set (`Cluster.openShard`): the new
// shards are written into a folder of their own beside the old one, each with every row its
// rank now owns (values, optimizer state, update count) and the run's checkpoint payload,
// and `shards.json` is then replaced in one rename. A crash before that leaves the old set as
// it was; after it, the new one. The folder the manifest does not name is removed the next
// time the set is opened.
import Foundation
import StrataStore
#if canImport(Glibc)
import Glibc
#endif

public enum ShardSet {
    public static let manifestName = "shards.json"

    /// What `shards.json` holds.
    struct Manifest: Codable, Equatable {
        /// 1: keys owned by `KeyOwner.rank(of:namespace:ranks:)`, shards in `N-shards/shard-R`.
        var format = 1
        var ranks: Int
    }

    /// Rank `rank`'s store in the set of `ranks` shards at `directory`.
    public static func shardPath(_ directory: String, rank: Int, of ranks: Int) -> String {
        "\(folder(directory, ranks: ranks))/shard-\(rank)"
    }

    static func folder(_ directory: String, ranks: Int) -> String {
        (directory as NSString).appendingPathComponent("\(ranks)-shards")
    }

    /// The stores of the set at `directory`, rank by rank, or nil when it is not a set.
    public static func shards(_ directory: String) throws -> [String]? {
        try ranks(directory).map { n in (0..<n).map { shardPath(directory, rank: $0, of: n) } }
    }

    /// The number of shards of the set at `directory`, or nil when it is not one.
    public static func ranks(_ directory: String) throws -> Int? {
        let path = (directory as NSString).appendingPathComponent(manifestName)
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let manifest: Manifest
        do {
            manifest = try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw ShardSetError(description: "\(path) is damaged (\(error)); it says how many shards the set at \(directory) has")
        }
        guard manifest.format == 1, manifest.ranks >= 1 else {
            throw ShardSetError(description: "\(path) says format \(manifest.format) and \(manifest.ranks) ranks: this build reads format 1 with at least one rank")
        }
        return manifest.ranks
    }

    /// Makes `directory` a set of `ranks` shards, or checks what it holds, and removes the
    /// folder of an interrupted re-sharding. Returns the set's number of shards before: nil
    /// for a new set, `ranks` for the same, another number for a set `resume` re-shards.
    /// Refused: a directory that holds anything but a shard set (nothing in it is touched),
    /// and a set of another number of shards without `resume` or `overwrite`. `overwrite`
    /// removes the set's stores first, as `Store.remove` removes one (refusing anything that
    /// is not a store's); a failure part way leaves some removed: run it again.
    static func lay(_ directory: String, ranks: Int, resume: Bool, overwrite: Bool) throws -> Int? {
        let files = FileManager.default
        let entries = (try? files.contentsOfDirectory(atPath: directory)) ?? []
        var existing = try self.ranks(directory)
        if existing == nil && !entries.isEmpty {
            throw ShardSetError(description: "\(directory) is not a set of shards (it has no \(manifestName)) and is not empty: name a new directory (a store of one process trains without mpirun)")
        }
        // Folders the manifest does not name: an interrupted re-sharding's.
        for entry in entries where entry.hasSuffix("-shards") && entry != existing.map({ "\($0)-shards" }) {
            try removeFolder((directory as NSString).appendingPathComponent(entry))
        }
        if let n = existing, overwrite {
            try removeFolder(folder(directory, ranks: n))
            existing = nil
        }
        if let n = existing {
            guard n == ranks || resume else {
                throw ShardSetError(description: "\(directory) holds a set of \(n) shards, not \(ranks): --resume moves its rows to \(ranks) ranks, --overwrite starts over")
            }
            return n
        }
        try writeManifest(directory, ranks: ranks)
        return nil
    }

    /// Replaces `shards.json` in one rename, durably (`replaceFileDurably`), after syncing the
    /// set's folder of `ranks` shards, if it is there, so that a power cut after the switch
    /// finds the shards it names.
    static func writeManifest(_ directory: String, ranks: Int) throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let folder = folder(directory, ranks: ranks)
            if FileManager.default.fileExists(atPath: folder) { try syncDirectory(folder) }
            try replaceFileDurably((directory as NSString).appendingPathComponent(manifestName),
                                   with: Array(try JSONEncoder().encode(Manifest(ranks: ranks))))
        } catch {
            throw ShardSetError(description: "cannot write the shard set \(directory)'s \(manifestName): \(error)")
        }
    }

    /// Removes a folder of shards: each `shard-R` as `Store.remove` removes a store, then the
    /// folder, which must then be empty.
    static func removeFolder(_ path: String) throws {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        for entry in entries.sorted() {
            guard entry.hasPrefix("shard-") else {
                throw ShardSetError(description: "\(path) holds \(entry), which is not a shard: move it away, then run again")
            }
            try Store.remove(at: (path as NSString).appendingPathComponent(entry))
        }
        guard rmdir(path) == 0 || errno == ENOENT else {
            throw ShardSetError(description: "cannot remove \(path): \(String(cString: strerror(errno)))")
        }
    }
}

public struct ShardSetError: Error, CustomStringConvertible {
    public let description: String
}
