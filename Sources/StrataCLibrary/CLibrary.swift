// The Swift half of libStrataC.so: each function of strata.h (Sources/StrataC/include) that
// needs the store, exported under its C name with @_cdecl. The contracts (threads, memory,
// what a failure leaves) are stated once, in strata.h; this file keeps them.
//
// A handle is a retained Swift object passed as an opaque pointer: strata_*_release gives
// the retain back. Every call checks its handle's process (fork) and its arguments before
// the store sees them, so nothing a C or Python caller passes can trap.
public import StrataC
import StrataStore
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// An open store and the process that opened it.
final class StoreHandle: Sendable {
    let store: Store
    let pid: pid_t
    /// strata_fork_generation() when opened: it changes in every child of fork, at no cost
    /// per call (getpid is a system call).
    let forks: UInt64

    init(_ store: Store) {
        self.store = store
        pid = getpid()
        forks = strata_fork_generation()
    }
}

/// A table and the store handle it keeps alive.
final class TableHandle: Sendable {
    let table: Table
    let owner: StoreHandle

    init(_ table: Table, _ owner: StoreHandle) {
        self.table = table
        self.owner = owner
    }
}

/// Why a call failed: its status and the message strata_last_error() then gives.
struct Failure: Error {
    let status: strata_status
    let message: String

    init(_ status: strata_status, _ message: String) {
        self.status = status
        self.message = message
    }

    static func argument(_ message: String) -> Failure { Failure(STRATA_E_INVALID_ARGUMENT, message) }

    init(_ error: StoreError) {
        let status: strata_status = switch error {
        case .unknownTable: STRATA_E_UNKNOWN_TABLE
        case .tableExists: STRATA_E_TABLE_EXISTS
        case .invalidTable: STRATA_E_INVALID_TABLE
        case .shapeMismatch: STRATA_E_SHAPE
        case .nonFiniteGradient, .nonFiniteStep: STRATA_E_NON_FINITE
        case .invalidLearningRate: STRATA_E_LEARNING_RATE
        case .invalidRows: STRATA_E_INVALID_ROWS
        case .noStore: STRATA_E_NO_STORE
        case .notEmpty, .foreignFiles: STRATA_E_NOT_EMPTY
        case .locked: STRATA_E_LOCKED
        case .readOnly, .openedForReading: STRATA_E_READ_ONLY
        case .newerFormat, .olderFormat: STRATA_E_FORMAT
        case .corrupted: STRATA_E_CORRUPTED
        case .diskFull: STRATA_E_DISK_FULL
        case .closed: STRATA_E_CLOSED
        case .checkpointInterrupted, .checkpointInProgress, .undecidedCheckpoint: STRATA_E_CHECKPOINT
        case .impossibleBudget: STRATA_E_BUDGET
        case .system, .lmdb: STRATA_E_SYSTEM
        }
        self.init(status, error.description)
    }
}

/// Runs `body`, turning a failure into its status and this thread's message.
@inline(__always)
private func call(_ body: () throws(Failure) -> Void) -> strata_status {
    do throws(Failure) {
        try body()
        return STRATA_OK
    } catch {
        strata_set_last_error(error.message)
        return error.status
    }
}

/// `body`'s StoreError as a Failure.
@inline(__always)
private func store<T>(_ body: () throws(StoreError) -> T) throws(Failure) -> T {
    do throws(StoreError) { return try body() } catch { throw Failure(error) }
}

private func forkCheck(_ owner: StoreHandle, _ what: @autoclosure () -> String) throws(Failure) {
    guard owner.forks == strata_fork_generation() else {
        let (pid, what) = (owner.pid, what())
        throw Failure(STRATA_E_FORKED, "\(what) was opened by process \(pid), and this is process \(getpid()), a child of fork(): "
            + "a handle cannot cross fork (LMDB forbids it); open the store again in this process, with read_only = 1 beside its writer")
    }
}

private func storeHandle(_ pointer: OpaquePointer?) throws(Failure) -> StoreHandle {
    guard let pointer else { throw .argument("the store handle is NULL") }
    let handle = Unmanaged<StoreHandle>.fromOpaque(UnsafeRawPointer(pointer)).takeUnretainedValue()
    try forkCheck(handle, "store \(handle.store.path)")
    return handle
}

private func tableHandle(_ pointer: OpaquePointer?) throws(Failure) -> TableHandle {
    guard let pointer else { throw .argument("the table handle is NULL") }
    let handle = Unmanaged<TableHandle>.fromOpaque(UnsafeRawPointer(pointer)).takeUnretainedValue()
    try forkCheck(handle.owner, "table '\(handle.table.name)' of store \(handle.owner.store.path)")
    return handle
}

private func retained(_ object: AnyObject) -> OpaquePointer {
    OpaquePointer(Unmanaged.passRetained(object).toOpaque())
}

private func text(_ pointer: UnsafePointer<CChar>?, _ what: String) throws(Failure) -> String {
    guard let pointer else { throw .argument("\(what) is NULL") }
    return String(cString: pointer)
}

/// A budget argument: -1 for the default, else at least 0.
private func bytes(_ value: Int64, _ what: String) throws(Failure) -> Int? {
    if value == -1 { return nil }
    guard value >= 0, value <= Int64(Int.max) else { throw .argument("\(what) is \(value): give bytes >= 0, or -1 for the default") }
    return Int(value)
}

/// Copies `bytes` into memory the caller frees with strata_free: one memcpy, as a payload
/// (a model's dense state) can be megabytes.
private func handOver(_ bytes: [UInt8], terminated: Bool) throws(Failure) -> UnsafeMutableRawPointer {
    // withUnsafeBytes does not throw typed errors: out of memory comes out as nil.
    let copy: UnsafeMutableRawPointer? = bytes.withUnsafeBytes { b in
        guard let memory = strata_allocate(b.count + (terminated ? 1 : 0)) else { return nil }
        if let base = b.baseAddress { memory.copyMemory(from: base, byteCount: b.count) }
        if terminated { memory.storeBytes(of: 0, toByteOffset: b.count, as: UInt8.self) }
        return memory
    }
    guard let copy else { throw Failure(STRATA_E_SYSTEM, "out of memory for \(bytes.count) bytes") }
    return copy
}

// MARK: Stores

@_cdecl("strata_store_open")
public func strataStoreOpen(_ path: UnsafePointer<CChar>?, _ options: UnsafePointer<strata_store_options>?,
                            _ out: UnsafeMutablePointer<OpaquePointer?>?) -> strata_status {
    out?.pointee = nil
    return call { () throws(Failure) in
        guard let out else { throw .argument("the output pointer for the store is NULL") }
        let path = try text(path, "the store's path")
        guard !path.isEmpty else { throw .argument("the store's path is empty") }
        var given = strata_store_options()
        strata_store_options_init(&given)
        if let options { given = options.pointee }
        var settings = Store.Options()
        let hot = try bytes(given.hot_bytes, "hot_bytes"), warm = try bytes(given.warm_bytes, "warm_bytes")
        settings.budget = TierBudget(hotBytes: hot ?? settings.budget.hotBytes, warmBytes: warm ?? settings.budget.warmBytes)
        settings.mapResidentBytes = try bytes(given.map_resident_bytes, "map_resident_bytes")
        if let initial = try bytes(given.initial_map_bytes, "initial_map_bytes") { settings.initialMapBytes = initial }
        guard (0...1).contains(given.create), (0...1).contains(given.read_only), (0...1).contains(given.roll_back_undecided) else {
            throw .argument("create, read_only and roll_back_undecided are 0 or 1 (given \(given.create), \(given.read_only), \(given.roll_back_undecided))")
        }
        settings.create = given.create == 1
        settings.undecidedCheckpoint = given.roll_back_undecided == 1 ? .rollBack : .refuse
        let opened = try store { () throws(StoreError) in
            given.read_only == 1 ? try Store(readerAt: path, options: settings) : try Store(path: path, options: settings)
        }
        out.pointee = retained(StoreHandle(opened))
    }
}

@_cdecl("strata_store_close")
public func strataStoreClose(_ handle: OpaquePointer?) -> strata_status {
    call { () throws(Failure) in
        let handle = try storeHandle(handle)
        try store { () throws(StoreError) in try handle.store.close() }
    }
}

@_cdecl("strata_store_release")
public func strataStoreRelease(_ handle: OpaquePointer?) {
    guard let handle else { return }
    let object = Unmanaged<StoreHandle>.fromOpaque(UnsafeRawPointer(handle))
    // In a child of fork the handle is left as it is, deliberately leaked: freeing the last
    // reference would shut the parent's store down here, taking a lock another thread may
    // have held at the fork and closing descriptors whose record locks are this process's.
    guard object.takeUnretainedValue().forks == strata_fork_generation() else { return }
    try? object.takeUnretainedValue().store.close()
    object.release()
}

@_cdecl("strata_checkpoint")
public func strataCheckpoint(_ handle: OpaquePointer?, _ payload: UnsafeRawPointer?, _ size: Int,
                             _ generation: UnsafeMutablePointer<UInt64>?) -> strata_status {
    call { () throws(Failure) in
        let handle = try storeHandle(handle)
        let bytes = try payloadBytes(payload, size)
        let info = try store { () throws(StoreError) in try handle.store.checkpoint(payload: bytes) }
        generation?.pointee = info.generation
    }
}

/// A checkpoint being written, and the store handle it was begun on.
final class PendingHandle: Sendable {
    let pending: PendingCheckpoint
    let owner: StoreHandle

    init(_ pending: PendingCheckpoint, _ owner: StoreHandle) {
        self.pending = pending
        self.owner = owner
    }
}

private func payloadBytes(_ payload: UnsafeRawPointer?, _ size: Int) throws(Failure) -> [UInt8] {
    guard size >= 0, size == 0 || payload != nil else { throw .argument("the payload is NULL or its size (\(size)) is out of range") }
    return size == 0 ? [] : Array(UnsafeRawBufferPointer(start: payload, count: size))
}

@_cdecl("strata_checkpoint_begin")
public func strataCheckpointBegin(_ handle: OpaquePointer?, _ payload: UnsafeRawPointer?, _ size: Int,
                                  _ out: UnsafeMutablePointer<OpaquePointer?>?) -> strata_status {
    out?.pointee = nil
    return call { () throws(Failure) in
        let handle = try storeHandle(handle)
        guard let out else { throw .argument("the output pointer for the pending checkpoint is NULL") }
        let bytes = try payloadBytes(payload, size)
        let pending = try store { () throws(StoreError) in try handle.store.beginCheckpoint(payload: bytes) }
        out.pointee = retained(PendingHandle(pending, handle))
    }
}

private func pendingHandle(_ pointer: OpaquePointer?) throws(Failure) -> PendingHandle {
    guard let pointer else { throw .argument("the pending checkpoint handle is NULL") }
    let handle = Unmanaged<PendingHandle>.fromOpaque(UnsafeRawPointer(pointer)).takeUnretainedValue()
    try forkCheck(handle.owner, "a checkpoint of store \(handle.owner.store.path)")
    return handle
}

@_cdecl("strata_checkpoint_wait")
public func strataCheckpointWait(_ handle: OpaquePointer?, _ generation: UnsafeMutablePointer<UInt64>?) -> strata_status {
    call { () throws(Failure) in
        let pending = try pendingHandle(handle).pending
        let info = try store { () throws(StoreError) in try pending.wait() }
        generation?.pointee = info.generation
    }
}

@_cdecl("strata_checkpoint_done")
public func strataCheckpointDone(_ handle: OpaquePointer?) -> Int32 {
    guard let handle else { return -1 }
    let pending = Unmanaged<PendingHandle>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue()
    // In a child of fork the parent's monitor may have been locked by a thread at the fork.
    guard pending.owner.forks == strata_fork_generation() else { return -1 }
    return pending.pending.outcome == nil ? 0 : 1
}

@_cdecl("strata_pending_checkpoint_release")
public func strataPendingCheckpointRelease(_ handle: OpaquePointer?) {
    guard let handle else { return }
    let object = Unmanaged<PendingHandle>.fromOpaque(UnsafeRawPointer(handle))
    // Leaked in a child of fork, as a store's handle is: it may hold the last reference to the store.
    guard object.takeUnretainedValue().owner.forks == strata_fork_generation() else { return }
    object.release()
}

@_cdecl("strata_last_checkpoint")
public func strataLastCheckpoint(_ handle: OpaquePointer?, _ generation: UnsafeMutablePointer<UInt64>?,
                                 _ payload: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                 _ size: UnsafeMutablePointer<Int>?) -> strata_status {
    payload?.pointee = nil
    size?.pointee = 0
    return call { () throws(Failure) in
        let handle = try storeHandle(handle)
        guard !handle.store.isClosed else { throw Failure(StoreError.closed) }
        let last = handle.store.lastCheckpoint
        generation?.pointee = last.generation
        if let payload, !last.payload.isEmpty {
            payload.pointee = try handOver(last.payload, terminated: false)
        }
        size?.pointee = last.payload.count
    }
}

/// A table's spec as strata.h's struct names its fields.
struct SpecReport: Encodable {
    var dimension: Int
    var dtype: String
    var initializer: String
    var initArgs: [Float]
    var seed: UInt64
    var optimizer: String
    var learningRate: Float
    var epsilon: Float?, initialAccumulator: Float?, beta1: Float?, beta2: Float?
    var ftrlBeta: Float?, l1: Float?, l2: Float?

    init(_ spec: TableSpec) {
        dimension = spec.dimension
        dtype = spec.storage.rawValue
        seed = spec.initializer.seed
        switch spec.initializer.distribution {
        case .zeros: (initializer, initArgs) = ("zeros", [])
        case .constant(let c): (initializer, initArgs) = ("constant", [c])
        case .uniform(let lo, let hi): (initializer, initArgs) = ("uniform", [lo, hi])
        case .normal(let m, let s): (initializer, initArgs) = ("normal", [m, s])
        }
        optimizer = spec.optimizer.name
        switch spec.optimizer {
        case .sgd(let lr): learningRate = lr
        case .adagrad(let lr, let e, let a), .rowwiseAdagrad(let lr, let e, let a):
            (learningRate, epsilon, initialAccumulator) = (lr, e, a)
        case .adam(let lr, let b1, let b2, let e): (learningRate, beta1, beta2, epsilon) = (lr, b1, b2, e)
        case .ftrl(let alpha, let beta, let l1, let l2): (learningRate, ftrlBeta, self.l1, self.l2) = (alpha, beta, l1, l2)
        }
    }
}

struct TableReport: Encodable {
    var spec: SpecReport
    var statistics: TableStatistics
}

struct StoreReport: Encodable {
    struct Checkpoint: Encodable {
        var generation: UInt64
        var time: Double
        var durationSeconds: Double
        var rowsWritten: Int, rowsDeleted: Int, bytesWritten: Int, payloadBytes: Int
    }
    var path: String
    var readOnly: Bool
    var lastCheckpoint: Checkpoint
    var tables: [String: TableReport]
}

private func json(_ value: some Encodable, into out: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) throws(Failure) {
    let encoder = JSONEncoder()
    encoder.keyEncodingStrategy = .convertToSnakeCase
    encoder.outputFormatting = [.sortedKeys]
    // Statistics hold no NaN; a float that is not finite is written as a string, not refused.
    encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    let data: Data
    do { data = try encoder.encode(value) } catch { throw Failure(STRATA_E_SYSTEM, "cannot write the statistics as JSON: \(error)") }
    out.pointee = try handOver([UInt8](data), terminated: true).assumingMemoryBound(to: CChar.self)
}

@_cdecl("strata_store_statistics_json")
public func strataStoreStatisticsJSON(_ handle: OpaquePointer?, _ out: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> strata_status {
    out?.pointee = nil
    return call { () throws(Failure) in
        let handle = try storeHandle(handle)
        guard let out else { throw .argument("the output pointer for the JSON is NULL") }
        let s = handle.store
        guard !s.isClosed else { throw Failure(StoreError.closed) }
        let last = s.lastCheckpoint
        var tables: [String: TableReport] = [:]
        for name in s.tableNames {
            let table = try store { () throws(StoreError) in try s.table(name) }
            tables[name] = TableReport(spec: SpecReport(table.spec),
                                       statistics: try store { () throws(StoreError) in try table.statistics() })
        }
        let isReader = if case .reader = s.access { true } else { false }
        try json(StoreReport(
            path: s.path, readOnly: isReader,
            lastCheckpoint: .init(generation: last.generation, time: last.time, durationSeconds: last.durationSeconds,
                                  rowsWritten: last.rowsWritten, rowsDeleted: last.rowsDeleted,
                                  bytesWritten: last.bytesWritten, payloadBytes: last.payload.count),
            tables: tables), into: out)
    }
}

// MARK: Tables

private func spec(_ c: strata_table_spec) throws(Failure) -> TableSpec {
    let storage: StorageType
    switch c.dtype {
    case Int32(STRATA_FLOAT32.rawValue): storage = .float32
    case Int32(STRATA_FLOAT16.rawValue): storage = .float16
    case Int32(STRATA_BFLOAT16.rawValue): storage = .bfloat16
    default: throw .argument("dtype \(c.dtype) is none of STRATA_FLOAT32 (0), STRATA_FLOAT16 (1), STRATA_BFLOAT16 (2)")
    }
    let distribution: Initializer.Distribution
    switch c.initializer {
    case Int32(STRATA_INIT_ZEROS.rawValue): distribution = .zeros
    case Int32(STRATA_INIT_CONSTANT.rawValue): distribution = .constant(c.init_a)
    case Int32(STRATA_INIT_UNIFORM.rawValue): distribution = .uniform(low: c.init_a, high: c.init_b)
    case Int32(STRATA_INIT_NORMAL.rawValue): distribution = .normal(mean: c.init_a, standardDeviation: c.init_b)
    default: throw .argument("initializer \(c.initializer) is none of STRATA_INIT_ZEROS (0), CONSTANT (1), UNIFORM (2), NORMAL (3)")
    }
    let optimizer: Optimizer
    switch c.optimizer {
    case Int32(STRATA_SGD.rawValue): optimizer = .sgd(learningRate: c.learning_rate)
    case Int32(STRATA_ADAGRAD.rawValue):
        optimizer = .adagrad(learningRate: c.learning_rate, epsilon: c.epsilon, initialAccumulator: c.initial_accumulator)
    case Int32(STRATA_ROWWISE_ADAGRAD.rawValue):
        optimizer = .rowwiseAdagrad(learningRate: c.learning_rate, epsilon: c.epsilon, initialAccumulator: c.initial_accumulator)
    case Int32(STRATA_ADAM.rawValue):
        optimizer = .adam(learningRate: c.learning_rate, beta1: c.beta1, beta2: c.beta2, epsilon: c.epsilon)
    case Int32(STRATA_FTRL.rawValue): optimizer = .ftrl(alpha: c.learning_rate, beta: c.ftrl_beta, l1: c.l1, l2: c.l2)
    default: throw .argument("optimizer \(c.optimizer) is none of STRATA_SGD (0), ADAGRAD (1), ROWWISE_ADAGRAD (2), ADAM (3), FTRL (4)")
    }
    return TableSpec(dimension: Int(c.dimension), storage: storage, initializer: Initializer(distribution, seed: c.init_seed),
                     optimizer: optimizer)
}

@_cdecl("strata_table_create")
public func strataTableCreate(_ handle: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ given: UnsafePointer<strata_table_spec>?,
                              _ hotBytes: Int64, _ warmBytes: Int64, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> strata_status {
    out?.pointee = nil
    return call { () throws(Failure) in
        let handle = try storeHandle(handle)
        guard let out else { throw .argument("the output pointer for the table is NULL") }
        guard let given else { throw .argument("the table spec is NULL") }
        let name = try text(name, "the table's name")
        let tableSpec = try spec(given.pointee)
        let hot = try bytes(hotBytes, "hot_bytes"), warm = try bytes(warmBytes, "warm_bytes")
        let defaults = handle.store.options.budget
        let budget = hot == nil && warm == nil ? nil
            : TierBudget(hotBytes: hot ?? defaults.hotBytes, warmBytes: warm ?? defaults.warmBytes)
        let table = try store { () throws(StoreError) in try handle.store.createTable(name, tableSpec, budget: budget) }
        out.pointee = retained(TableHandle(table, handle))
    }
}

@_cdecl("strata_table_open")
public func strataTableOpen(_ handle: OpaquePointer?, _ name: UnsafePointer<CChar>?,
                            _ out: UnsafeMutablePointer<OpaquePointer?>?) -> strata_status {
    out?.pointee = nil
    return call { () throws(Failure) in
        let handle = try storeHandle(handle)
        guard let out else { throw .argument("the output pointer for the table is NULL") }
        let name = try text(name, "the table's name")
        let table = try store { () throws(StoreError) in try handle.store.table(name) }
        out.pointee = retained(TableHandle(table, handle))
    }
}

@_cdecl("strata_table_get_spec")
public func strataTableGetSpec(_ handle: OpaquePointer?, _ out: UnsafeMutablePointer<strata_table_spec>?) -> strata_status {
    call { () throws(Failure) in
        let handle = try tableHandle(handle)
        guard let out else { throw .argument("the output pointer for the spec is NULL") }
        let s = handle.table.spec
        var c = strata_table_spec()
        strata_table_spec_init(&c, Int32(s.dimension))
        let dtype: strata_dtype = switch s.storage {
        case .float32: STRATA_FLOAT32
        case .float16: STRATA_FLOAT16
        case .bfloat16: STRATA_BFLOAT16
        }
        c.dtype = Int32(dtype.rawValue)
        c.init_seed = s.initializer.seed
        switch s.initializer.distribution {
        case .zeros: c.initializer = Int32(STRATA_INIT_ZEROS.rawValue)
        case .constant(let v): (c.initializer, c.init_a) = (Int32(STRATA_INIT_CONSTANT.rawValue), v)
        case .uniform(let lo, let hi): (c.initializer, c.init_a, c.init_b) = (Int32(STRATA_INIT_UNIFORM.rawValue), lo, hi)
        case .normal(let m, let sd): (c.initializer, c.init_a, c.init_b) = (Int32(STRATA_INIT_NORMAL.rawValue), m, sd)
        }
        switch s.optimizer {
        case .sgd(let lr): (c.optimizer, c.learning_rate) = (Int32(STRATA_SGD.rawValue), lr)
        case .adagrad(let lr, let e, let a):
            (c.optimizer, c.learning_rate, c.epsilon, c.initial_accumulator) = (Int32(STRATA_ADAGRAD.rawValue), lr, e, a)
        case .rowwiseAdagrad(let lr, let e, let a):
            (c.optimizer, c.learning_rate, c.epsilon, c.initial_accumulator) = (Int32(STRATA_ROWWISE_ADAGRAD.rawValue), lr, e, a)
        case .adam(let lr, let b1, let b2, let e):
            (c.optimizer, c.learning_rate, c.beta1, c.beta2, c.epsilon) = (Int32(STRATA_ADAM.rawValue), lr, b1, b2, e)
        case .ftrl(let alpha, let beta, let l1, let l2):
            (c.optimizer, c.learning_rate, c.ftrl_beta, c.l1, c.l2) = (Int32(STRATA_FTRL.rawValue), alpha, beta, l1, l2)
        }
        out.pointee = c
    }
}

@_cdecl("strata_table_statistics_json")
public func strataTableStatisticsJSON(_ handle: OpaquePointer?, _ out: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> strata_status {
    out?.pointee = nil
    return call { () throws(Failure) in
        let handle = try tableHandle(handle)
        guard let out else { throw .argument("the output pointer for the JSON is NULL") }
        let table = handle.table
        try json(TableReport(spec: SpecReport(table.spec), statistics: try store { () throws(StoreError) in try table.statistics() }),
                 into: out)
    }
}

@_cdecl("strata_table_release")
public func strataTableRelease(_ handle: OpaquePointer?) {
    guard let handle else { return }
    let object = Unmanaged<TableHandle>.fromOpaque(UnsafeRawPointer(handle))
    // Leaked in a child of fork, as a store's handle is (strata_store_release): it may hold
    // the last reference to the store.
    guard object.takeUnretainedValue().owner.forks == strata_fork_generation() else { return }
    object.release()
}

// MARK: Rows

/// The keys and, when given, the float buffer of a row call, checked.
private func rows(_ table: Table, _ keys: UnsafePointer<UInt64>?, _ count: Int, _ floats: Int, _ buffer: UnsafeRawPointer?,
                  _ what: String) throws(Failure) -> UnsafeBufferPointer<UInt64> {
    // A count past this is a caller's error, and count × dimension would overflow.
    guard count >= 0, count <= Int.max >> 17, floats >= 0, floats <= Int.max >> 3 else {
        throw .argument("table '\(table.name)': \(count) keys and \(floats) floats are out of range")
    }
    guard count == 0 || keys != nil else { throw .argument("table '\(table.name)': the keys are NULL") }
    guard floats == 0 || buffer != nil else { throw .argument("table '\(table.name)': the \(what) are NULL") }
    return UnsafeBufferPointer(start: count == 0 ? nil : keys, count: count)
}

/// strata_lookup's and strata_peek's one body.
private func read(_ handle: OpaquePointer?, _ keys: UnsafePointer<UInt64>?, _ count: Int,
                  _ out: UnsafeMutablePointer<Float>?, _ floats: Int, peek: Bool) -> strata_status {
    call { () throws(Failure) in
        let table = try tableHandle(handle).table
        let k = try rows(table, keys, count, floats, out, "rows")
        let buffer = UnsafeMutableBufferPointer(start: out, count: floats)
        try store { () throws(StoreError) in peek ? try table.peek(k, into: buffer) : try table.lookup(k, into: buffer) }
    }
}

@_cdecl("strata_lookup")
public func strataLookup(_ handle: OpaquePointer?, _ keys: UnsafePointer<UInt64>?, _ count: Int,
                         _ out: UnsafeMutablePointer<Float>?, _ floats: Int) -> strata_status {
    read(handle, keys, count, out, floats, peek: false)
}

@_cdecl("strata_peek")
public func strataPeek(_ handle: OpaquePointer?, _ keys: UnsafePointer<UInt64>?, _ count: Int,
                       _ out: UnsafeMutablePointer<Float>?, _ floats: Int) -> strata_status {
    read(handle, keys, count, out, floats, peek: true)
}

@_cdecl("strata_apply_gradients")
public func strataApplyGradients(_ handle: OpaquePointer?, _ keys: UnsafePointer<UInt64>?, _ count: Int,
                                 _ gradients: UnsafePointer<Float>?, _ floats: Int,
                                 _ learningRate: UnsafePointer<Float>?) -> strata_status {
    call { () throws(Failure) in
        let table = try tableHandle(handle).table
        let k = try rows(table, keys, count, floats, gradients, "gradients")
        try store { () throws(StoreError) in
            try table.applyGradients(k, UnsafeBufferPointer(start: gradients, count: floats), learningRate: learningRate?.pointee)
        }
    }
}

@_cdecl("strata_remove")
public func strataRemove(_ handle: OpaquePointer?, _ keys: UnsafePointer<UInt64>?, _ count: Int) -> strata_status {
    call { () throws(Failure) in
        let table = try tableHandle(handle).table
        let k = try rows(table, keys, count, 0, nil, "keys")
        try store { () throws(StoreError) in try table.remove(k) }
    }
}

@_cdecl("strata_time_lookups")
public func strataTimeLookups(_ handle: OpaquePointer?, _ keys: UnsafePointer<UInt64>?, _ count: Int,
                              _ out: UnsafeMutablePointer<Float>?, _ floats: Int, _ repeats: Int64, _ freshOutput: Int32,
                              _ seconds: UnsafeMutablePointer<Double>?) -> strata_status {
    call { () throws(Failure) in
        let table = try tableHandle(handle).table
        guard repeats >= 1, (0...1).contains(freshOutput), let seconds else {
            throw .argument("repeats (\(repeats)) must be at least 1, fresh_output (\(freshOutput)) 0 or 1, and seconds not NULL")
        }
        let fresh = freshOutput == 1
        let k = try rows(table, keys, count, floats, fresh ? UnsafeRawPointer(bitPattern: 1) : UnsafeRawPointer(out), "rows")
        let clock = ContinuousClock()
        let start = clock.now
        for _ in 0..<repeats {
            let target = fresh ? strata_allocate(floats * 4)?.assumingMemoryBound(to: Float.self) : out
            defer { if fresh { strata_free(target) } }
            guard let target else { throw Failure(STRATA_E_SYSTEM, "out of memory for \(floats) floats") }
            try store { () throws(StoreError) in
                try table.lookup(k, into: UnsafeMutableBufferPointer(start: target, count: floats))
            }
        }
        let elapsed = clock.now - start
        seconds.pointee = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
    }
}
