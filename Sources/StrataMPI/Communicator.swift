// The MPI calls Strata makes, over Open MPI's C library, and nothing more: each call's return
// code becomes an `MPIError` (the world communicator is switched from MPI's default, abort
// on any error, to returning codes), and buffers are Swift buffer pointers.
//
// Concurrency: MPI is initialised for one thread (MPI_THREAD_FUNNELED). Every call on a
// `Communicator` is made from the thread that created it; other threads may run, but never
// call MPI. Collective calls are made by every rank, in the same order, with counts that
// agree: a rank that skips one, or calls another, leaves the others waiting forever.
public import CMPI
import Foundation

/// An MPI call that failed: which call, MPI's error code and Open MPI's text for it.
public struct MPIError: Error, CustomStringConvertible, Sendable {
    public let call: String
    public let code: Int32
    public let message: String

    public var description: String { "\(call) failed (MPI error \(code)): \(message)" }

    init(_ call: String, code: Int32) {
        self.call = call
        self.code = code
        var text = [CChar](repeating: 0, count: Int(strata_mpi_max_error_string()) + 1)
        var length: Int32 = 0
        message = MPI_Error_string(code, &text, &length) == strata_mpi_success()
            ? String(decoding: text.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self) : "unknown error"
    }

    /// A request MPI's 32-bit counts cannot express, refused before any call.
    public init(_ call: String, refused: String) {
        self.call = call
        code = -1
        message = refused
    }
}

/// A scalar MPI carries, with its MPI datatype.
public protocol MPIScalar: BitwiseCopyable {
    static var datatype: MPI_Datatype { get }
}

extension UInt8: MPIScalar { public static var datatype: MPI_Datatype { strata_mpi_byte() } }
extension Int32: MPIScalar { public static var datatype: MPI_Datatype { strata_mpi_int32() } }
extension Int64: MPIScalar { public static var datatype: MPI_Datatype { strata_mpi_int64() } }
extension UInt64: MPIScalar { public static var datatype: MPI_Datatype { strata_mpi_uint64() } }
extension Float: MPIScalar { public static var datatype: MPI_Datatype { strata_mpi_float() } }
extension Double: MPIScalar { public static var datatype: MPI_Datatype { strata_mpi_double() } }

/// The processes one `mpirun` started (MPI_COMM_WORLD), as this one sees them.
public final class Communicator: @unchecked Sendable {
    /// This process's place, 0 ..< size.
    public let rank: Int
    public let size: Int
    private let comm: MPI_Comm?
    /// Whether `finalize` has run: a call after it fails in MPI, so it is refused here.
    private var finalized = false

    public enum Operation: Sendable {
        case sum, min, max
        var op: MPI_Op {
            switch self {
            case .sum: strata_mpi_sum()
            case .min: strata_mpi_min()
            case .max: strata_mpi_max()
            }
        }
    }

    /// Whether Open MPI's `mpirun` (or `mpiexec`) started this process: it sets
    /// OMPI_COMM_WORLD_SIZE. A process started otherwise runs alone and never starts MPI.
    public static var launchedByMPIRun: Bool { ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"] != nil }

    /// Starts MPI for this process (the calling thread is the one that may call MPI from then
    /// on) and returns the world. Once per process: MPI cannot be started again after
    /// `finalize`, and a second call is a programmer error.
    public static func world() throws(MPIError) -> Communicator {
        var started: Int32 = 0
        try check("MPI_Initialized", MPI_Initialized(&started))
        precondition(started == 0, "MPI is started once per process")
        var provided: Int32 = 0
        try check("MPI_Init_thread", MPI_Init_thread(nil, nil, strata_mpi_thread_funneled(), &provided))
        let comm = strata_mpi_comm_world()
        try check("MPI_Comm_set_errhandler", MPI_Comm_set_errhandler(comm, strata_mpi_errors_return()))
        guard provided >= strata_mpi_thread_funneled() else {
            throw MPIError("MPI_Init_thread", refused: "this MPI library cannot be called from one thread while others run (it provides thread level \(provided))")
        }
        var rank: Int32 = 0, size: Int32 = 0
        try check("MPI_Comm_rank", MPI_Comm_rank(comm, &rank))
        try check("MPI_Comm_size", MPI_Comm_size(comm, &size))
        return Communicator(comm: comm, rank: Int(rank), size: Int(size))
    }

    private init(comm: MPI_Comm?, rank: Int, size: Int) {
        self.comm = comm
        self.rank = rank
        self.size = size
    }

    /// Ends MPI for this process, after every rank's last collective call. A rank that ends
    /// without it is taken by `mpirun` for a failure, and the job is ended.
    public func finalize() throws(MPIError) {
        guard !finalized else { return }
        finalized = true
        try Self.check("MPI_Finalize", MPI_Finalize())
    }

    /// Ends every rank's process now, with `code`: for a rank that cannot go on while the
    /// others wait for it in a collective call.
    public func abort(code: Int32) -> Never {
        _ = MPI_Abort(comm, code)
        exit(code)
    }

    /// Returns once every rank has called it.
    public func barrier() throws(MPIError) {
        try call("MPI_Barrier") { MPI_Barrier(comm) }
    }

    /// Every rank's `value`, in rank order.
    public func allgather<T: MPIScalar>(_ value: T) throws(MPIError) -> [T] {
        let mine = [value]
        var all = [T](repeating: value, count: size)
        try mine.withUnsafeBufferPointer { (one) throws(MPIError) in
            try all.withUnsafeMutableBufferPointer { (out) throws(MPIError) in try allgather(one, into: out) }
        }
        return all
    }

    /// Reduces `values` element by element over every rank, in place. MPI chooses the order
    /// in which ranks' values are combined: for floating-point sums that need the same bits
    /// every run, sum in rank order instead (`StrataTraining`'s dense reduction).
    public func allreduce<T: MPIScalar>(_ values: UnsafeMutableBufferPointer<T>, _ operation: Operation) throws(MPIError) {
        let count = try Self.count("MPI_Allreduce", values.count)
        try call("MPI_Allreduce") {
            MPI_Allreduce(strata_mpi_in_place(), Self.address(values), count, T.datatype, operation.op, comm)
        }
    }

    /// Sends `send[r·n ..< (r+1)·n]` to rank r, where n = send.count / size, and receives rank
    /// r's n values into `receive[r·n ..< (r+1)·n]`. Both hold size · n values.
    public func alltoall<T: MPIScalar>(_ send: UnsafeBufferPointer<T>, into receive: UnsafeMutableBufferPointer<T>) throws(MPIError) {
        precondition(send.count % size == 0 && receive.count == send.count, "all-to-all sends the same count to every rank")
        let n = try Self.count("MPI_Alltoall", send.count / size)
        try call("MPI_Alltoall") {
            MPI_Alltoall(Self.address(send), n, T.datatype, Self.address(receive), n, T.datatype, comm)
        }
    }

    /// Sends `sendCounts[r]` values, from `send` at `sendOffsets[r]`, to rank r, and receives
    /// `receiveCounts[r]` values from rank r into `receive` at `receiveOffsets[r]`. The counts
    /// each pair of ranks gives must agree (exchange them first with `alltoall`).
    public func alltoallv<T: MPIScalar>(_ send: UnsafeBufferPointer<T>, counts sendCounts: UnsafeBufferPointer<Int32>,
                                        offsets sendOffsets: UnsafeBufferPointer<Int32>,
                                        into receive: UnsafeMutableBufferPointer<T>, counts receiveCounts: UnsafeBufferPointer<Int32>,
                                        offsets receiveOffsets: UnsafeBufferPointer<Int32>) throws(MPIError) {
        precondition(sendCounts.count == size && sendOffsets.count == size && receiveCounts.count == size && receiveOffsets.count == size,
                     "all-to-all-v takes a count and an offset per rank")
        try call("MPI_Alltoallv") {
            MPI_Alltoallv(Self.address(send), sendCounts.baseAddress, sendOffsets.baseAddress, T.datatype,
                          Self.address(receive), receiveCounts.baseAddress, receiveOffsets.baseAddress, T.datatype, comm)
        }
    }

    /// Every rank's `send` (of the same count on every rank) into `receive`, rank after rank.
    public func allgather<T: MPIScalar>(_ send: UnsafeBufferPointer<T>, into receive: UnsafeMutableBufferPointer<T>) throws(MPIError) {
        precondition(receive.count == send.count * size, "all-gather receives every rank's values")
        let n = try Self.count("MPI_Allgather", send.count)
        try call("MPI_Allgather") {
            MPI_Allgather(Self.address(send), n, T.datatype, Self.address(receive), n, T.datatype, comm)
        }
    }

    /// Every rank's `send` into `receive`, rank r's `counts[r]` values at `offsets[r]`.
    public func allgatherv<T: MPIScalar>(_ send: UnsafeBufferPointer<T>, into receive: UnsafeMutableBufferPointer<T>,
                                         counts: UnsafeBufferPointer<Int32>, offsets: UnsafeBufferPointer<Int32>) throws(MPIError) {
        precondition(counts.count == size && offsets.count == size && Int(counts[rank]) == send.count,
                     "all-gather-v takes a count and an offset per rank, this rank's its own")
        try call("MPI_Allgatherv") {
            MPI_Allgatherv(Self.address(send), counts[rank], T.datatype, Self.address(receive), counts.baseAddress,
                           offsets.baseAddress, T.datatype, comm)
        }
    }

    /// Root's `bytes` on every rank (another rank's are replaced, whatever their length).
    public func broadcast(_ bytes: inout [UInt8], root: Int) throws(MPIError) {
        var length = [Int64(bytes.count)]
        try length.withUnsafeMutableBufferPointer { (l) throws(MPIError) in
            try call("MPI_Bcast") { MPI_Bcast(Self.address(l), 1, Int64.datatype, Int32(root), comm) }
        }
        let n = try Self.count("MPI_Bcast", Int(length[0]))
        if rank != root { bytes = [UInt8](repeating: 0, count: Int(n)) }
        try bytes.withUnsafeMutableBufferPointer { (b) throws(MPIError) in
            try call("MPI_Bcast") { MPI_Bcast(Self.address(b), n, UInt8.datatype, Int32(root), comm) }
        }
    }

    // MARK: The thin layer

    private func call(_ name: String, _ body: () -> Int32) throws(MPIError) {
        precondition(!finalized, "\(name) after MPI_Finalize")
        try Self.check(name, body())
    }

    private static func check(_ name: String, _ code: Int32) throws(MPIError) {
        if code != strata_mpi_success() { throw MPIError(name, code: code) }
    }

    /// MPI counts are C ints.
    static func count(_ call: String, _ n: Int) throws(MPIError) -> Int32 {
        guard let c = Int32(exactly: n) else {
            throw MPIError(call, refused: "\(n) values in one call: MPI counts stop at \(Int32.max)")
        }
        return c
    }

    /// A buffer's address, never nil: some MPI builds refuse a null buffer even for no values.
    private static func address<T>(_ b: UnsafeBufferPointer<T>) -> UnsafeRawPointer {
        b.baseAddress.map(UnsafeRawPointer.init) ?? UnsafeRawPointer(emptyBuffer)
    }

    private static func address<T>(_ b: UnsafeMutableBufferPointer<T>) -> UnsafeMutableRawPointer {
        b.baseAddress.map(UnsafeMutableRawPointer.init) ?? emptyBuffer
    }

    nonisolated(unsafe) private static let emptyBuffer = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 16)
}
