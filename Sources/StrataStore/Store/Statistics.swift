/// What a table holds and how it has been used since the store opened.
public struct TableStatistics: Sendable, Codable, Equatable {
    public struct Rows: Sendable, Codable, Equatable {
        /// Written rows whose newest copy is in each place.
        public var hot = 0, warm = 0, spill = 0, cold = 0
        /// Never-written rows held in hot memory (their value is the initializer's).
        public var initializerInHot = 0
        public var total: Int { hot + warm + spill + cold }
    }

    public struct Bytes: Sendable, Codable, Equatable {
        /// Hot memory in use and allowed.
        public var hotUsed = 0, hotBudget = 0
        /// Warm slots in use and the warm file's size (its budget).
        public var warmUsed = 0, warmFile = 0
        public var spillFile = 0
        /// LMDB pages of this table's rows.
        public var coldOnDisk = 0
        /// Index, admission lists, sketch and change list: memory beyond the budgets.
        public var overhead = 0
    }

    public struct Traffic: Sendable, Codable, Equatable, CustomStringConvertible {
        /// Where lookups and updates found their rows.
        public var hotHits = 0, warmHits = 0, spillHits = 0, coldHits = 0, initializerHits = 0
        /// Rows moved up into hot from warm, spill or LMDB.
        public var promotions: Int { warmHits + spillHits + coldHits }
        /// Rows moved down: hot to warm; to the spill file; dropped (LMDB holds them).
        public var hotToWarm = 0, toSpill = 0, dropped = 0
        public var accesses: Int { hotHits + warmHits + spillHits + coldHits + initializerHits }
        public var hotHitRatio: Double { accesses == 0 ? 0 : Double(hotHits) / Double(accesses) }

        public init() {}

        init(hotHits: Int, warmHits: Int, spillHits: Int, coldHits: Int, initializerHits: Int,
             hotToWarm: Int, toSpill: Int, dropped: Int) {
            (self.hotHits, self.warmHits, self.spillHits, self.coldHits, self.initializerHits) =
                (hotHits, warmHits, spillHits, coldHits, initializerHits)
            (self.hotToWarm, self.toSpill, self.dropped) = (hotToWarm, toSpill, dropped)
        }

        /// Summed over tables, or over openings of a store.
        public static func + (a: Traffic, b: Traffic) -> Traffic {
            Traffic(hotHits: a.hotHits + b.hotHits, warmHits: a.warmHits + b.warmHits, spillHits: a.spillHits + b.spillHits,
                    coldHits: a.coldHits + b.coldHits, initializerHits: a.initializerHits + b.initializerHits,
                    hotToWarm: a.hotToWarm + b.hotToWarm, toSpill: a.toSpill + b.toSpill, dropped: a.dropped + b.dropped)
        }

        public static func += (a: inout Traffic, b: Traffic) { a = a + b }

        public var description: String {
            "hits hot \(hotHits) warm \(warmHits) spill \(spillHits) cold \(coldHits) initializer \(initializerHits); "
                + "hot to warm \(hotToWarm), to spill \(toSpill), dropped \(dropped)"
        }
    }

    public struct Checkpoint: Sendable, Codable, Equatable {
        /// Generation of the store's last checkpoint.
        public var generation: UInt64 = 0
        /// This table's part of the last checkpoint this process took.
        public var rowsWritten = 0, rowsDeleted = 0, bytesWritten = 0
        /// How long that whole checkpoint (all tables) took.
        public var durationSeconds = 0.0
    }

    public var name: String
    public var spec: TableSpec
    public var shards: Int
    public var recordBytes: Int
    public var hotCapacityRows: Int
    public var warmCapacityRows: Int
    public var rows = Rows()
    public var bytes = Bytes()
    /// Since the store opened.
    public var traffic = Traffic()
    /// Of every earlier open of the store, as its last checkpoint saved it.
    public var trafficBeforeOpen = Traffic()
    public var checkpoint = Checkpoint()
}

extension Table {
    /// Traffic since the open, summed over shards (each under its lock).
    func trafficSinceOpen() -> TableStatistics.Traffic {
        var sum = ShardCounters()
        withEachShard { sum = sum + $0.counters }
        return Self.traffic(sum)
    }

    private static func traffic(_ sum: ShardCounters) -> TableStatistics.Traffic {
        .init(hotHits: sum.hotHits, warmHits: sum.warmHits, spillHits: sum.spillHits,
              coldHits: sum.coldHits, initializerHits: sum.initialHits,
              hotToWarm: sum.hotToWarm, toSpill: sum.toSpill, dropped: sum.dropped)
    }

    /// Counts of rows, bytes and traffic, summed over shards.
    public func statistics() throws(StoreError) -> TableStatistics {
        try store.lock.shared { () throws(StoreError) -> TableStatistics in
            try store.ensureOpen()
            var sum = ShardCounters()
            var overhead = 0
            // Under `lastCheckpoint`, which a checkpoint's end holds: the counts and LMDB's
            // record count are of the same moment.
            let (persisted, last) = lastCheckpoint.withLock { last in
                withEachShard { shard in
                    sum = sum + shard.counters
                    overhead += shard.index.bytes + shard.sketch.bytes + shard.dirtyKeys.capacity * 8 + shard.frozenCopies.bytes
                        + (shard.hot.capacity + shard.warm.capacity) * AdmissionPolicy.bytesPerSlot
                }
                return (persistedRows.load(ordering: .relaxed), last)
            }
            let r = format.layout.recordSize
            var s = TableStatistics(
                name: name, spec: spec, shards: shardCount, recordBytes: r,
                hotCapacityRows: hotCapacity, warmCapacityRows: warmCapacity)
            s.rows = .init(hot: sum.hotRows, warm: sum.warmRows, spill: sum.spillRows,
                           cold: persisted - sum.persistedResident - sum.tombstones, initializerInHot: sum.hotVirgins)
            var cold = 0
            if let db = rowsDatabase {
                do throws(LMDBError) {
                    let txn = try store.readers.acquire()
                    cold = try txn.statistics(db).bytes
                    store.readers.release(txn)
                } catch {
                    throw store.lmdbFailure(error)
                }
            }
            s.bytes = .init(hotUsed: (sum.hotRows + sum.hotVirgins) * r, hotBudget: budget.hotBytes,
                            warmUsed: sum.warmRows * r, warmFile: warmCapacity * r, spillFile: spill.bytes,
                            coldOnDisk: cold, overhead: overhead)
            s.traffic = Self.traffic(sum)
            s.trafficBeforeOpen = trafficBeforeOpen
            s.checkpoint = .init(generation: store.generation.load(ordering: .relaxed), rowsWritten: last.written,
                                 rowsDeleted: last.deleted, bytesWritten: last.bytes,
                                 durationSeconds: Double(bitPattern: store.lastCheckpointSeconds.load(ordering: .relaxed)))
            return s
        }
    }
}
