// The files `strata export` writes and `strata import` reads: a table's keys, values and
// (optionally) optimizer state and update counts as
// - npy: a directory of NumPy `.npy` files (format 1.0): keys.npy (uint64, n), values.npy
//   (float32, n × dim), state.npy (float32, n × state), update_counts.npy (uint64, n), and
//   for a delta export deleted_keys.npy (uint64);
// - safetensors: one file with the same tensors by the same names, and the table's name,
//   spec and generation in `__metadata__`;
// - tsv: TensorBoard's embedding projector layout, a directory with vectors.tsv (one row a
//   line, values tab-separated) and metadata.tsv (one key a line, no header: a single
//   column), and deleted.tsv for a delta export. Values are printed as the shortest decimal
//   that reads back as the same float, so a round trip is exact.
// Writers are told the row count first (exports count in a first pass), so every tensor's
// place in the file is known and rows stream to their places; readers read a batch at a time.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why a table file cannot be read or written: the file and what is wrong with it.
public struct TableFileError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

public enum TableFileFormat: String, CaseIterable, Sendable {
    case npy, safetensors, tsv

    /// The format of an existing path: a `.safetensors` file, or a directory holding
    /// values.npy or vectors.tsv.
    public static func detect(_ path: String) -> TableFileFormat? {
        if path.hasSuffix(".safetensors") { return .safetensors }
        if FileManager.default.fileExists(atPath: path + "/values.npy") { return .npy }
        if FileManager.default.fileExists(atPath: path + "/vectors.tsv") { return .tsv }
        return nil
    }
}


/// The element types the files hold.
public enum ElementType: String, Sendable {
    case float32, uint64

    var npyDescr: String { self == .float32 ? "<f4" : "<u8" }
    var safetensorsName: String { self == .float32 ? "F32" : "U64" }
    var size: Int { self == .float32 ? 4 : 8 }
}

/// One tensor of a table file: its name, element type and shape.
public struct TensorShape: Equatable, Sendable {
    public let name: String
    public let type: ElementType
    public let rows: Int
    /// Nil for a vector.
    public let width: Int?
    public var isVector: Bool { width == nil }
    public var columns: Int { width ?? 1 }
    public var bytes: Int { rows * columns * type.size }

    public init(name: String, type: ElementType, rows: Int, columns: Int?) {
        self.name = name
        self.type = type
        self.rows = rows
        width = columns
    }

    /// The shape a file states for tensor `name`, refused unless it has one dimension (keys,
    /// update counts, deleted keys) or two (values, state), none negative, and its bytes fit
    /// in an `Int`.
    static func stated(_ dims: [Int], name: String, type: ElementType, in path: String) throws -> TensorShape {
        let matrix = name == "values" || name == "state"
        guard dims.count == (matrix ? 2 : 1) || (!matrix && dims.count == 2 && dims[1] == 1) else {
            throw TableFileError("\(path): tensor '\(name)' has shape \(dims); it must have \(matrix ? 2 : 1) dimension\(matrix ? "s" : "")")
        }
        guard dims.allSatisfy({ $0 >= 0 }) else { throw TableFileError("\(path): tensor '\(name)' has a negative dimension in its shape \(dims)") }
        var bytes = type.size
        for d in dims {
            let (product, overflow) = bytes.multipliedReportingOverflow(by: d)
            guard !overflow else { throw TableFileError("\(path): tensor '\(name)' of shape \(dims) would be larger than any file") }
            bytes = product
        }
        return TensorShape(name: name, type: type, rows: dims[0], columns: matrix ? dims[1] : nil)
    }
}

// MARK: - Files

/// A file written at offsets, closed when the value ends.
final class OutputFile {
    let path: String
    private let handle: FileHandle

    init(_ path: String) throws {
        self.path = path
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            throw TableFileError("cannot write \(path): \(String(cString: strerror(errno)))")
        }
        self.handle = handle
    }

    deinit { try? handle.close() }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        do {
            try handle.seek(toOffset: UInt64(offset))
            try handle.write(contentsOf: Data(bytes))
        } catch {
            throw TableFileError("cannot write \(path): \(error.localizedDescription)")
        }
    }

    func write(_ bytes: [UInt8], at offset: Int) throws { try bytes.withUnsafeBytes { try write($0, at: offset) } }

    func write<T>(_ values: ArraySlice<T>, at offset: Int) throws {
        try values.withUnsafeBytes { try write($0, at: offset) }
    }

    /// `fsync(2)`: an export is complete on disk when the command says so.
    func sync() throws {
        do { try handle.synchronize() } catch { throw TableFileError("cannot write \(path): \(error.localizedDescription)") }
    }
}

/// A file read at offsets.
final class InputFile {
    let path: String
    private let handle: FileHandle
    let size: Int

    init(_ path: String) throws {
        self.path = path
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw TableFileError("cannot read \(path): \(String(cString: strerror(errno)))")
        }
        self.handle = handle
        size = Int((try? handle.seekToEnd()) ?? 0)
    }

    deinit { try? handle.close() }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws {
        let data: Data
        do {
            try handle.seek(toOffset: UInt64(offset))
            data = try handle.read(upToCount: buffer.count) ?? Data()
        } catch {
            throw TableFileError("cannot read \(path): \(error.localizedDescription)")
        }
        guard data.count == buffer.count else { throw TableFileError("\(path) ends at \(offset + data.count) bytes, before its data does") }
        data.copyBytes(to: buffer)
    }

    func bytes(_ count: Int, at offset: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try read(into: $0, at: offset) }
        return out
    }
}

// MARK: - NumPy

enum NPY {
    /// The header of a `.npy` file (format 1.0) for `shape`, padded so data starts on a
    /// 64-byte boundary.
    static func header(_ shape: TensorShape) -> [UInt8] {
        let dims = shape.isVector ? "(\(shape.rows),)" : "(\(shape.rows), \(shape.columns))"
        var dict = "{'descr': '\(shape.type.npyDescr)', 'fortran_order': False, 'shape': \(dims), }"
        let unpadded = 10 + dict.utf8.count + 1
        dict += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var out: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0]
        let length = UInt16(dict.utf8.count)
        out += [UInt8(length & 0xFF), UInt8(length >> 8)]
        return out + Array(dict.utf8)
    }

    /// Parses a `.npy` header: element type, shape and where the data starts.
    static func read(_ file: InputFile, name: String) throws -> (shape: TensorShape, dataOffset: Int) {
        let start = try file.bytes(min(10, file.size), at: 0)
        guard start.count == 10, start[0] == 0x93, Array(start[1..<6]) == Array("NUMPY".utf8) else {
            throw TableFileError("\(file.path) is not a .npy file")
        }
        let major = start[6]
        var headerLength = Int(start[8]) | Int(start[9]) << 8
        var offset = 10
        if major >= 2 {
            let more = try file.bytes(2, at: 10)
            headerLength |= Int(more[0]) << 16 | Int(more[1]) << 24
            offset = 12
        }
        guard offset + headerLength <= file.size else { throw TableFileError("\(file.path): header runs past the end") }
        let text = String(decoding: try file.bytes(headerLength, at: offset), as: UTF8.self)
        func field(_ key: String) -> String? {
            guard let r = text.range(of: "'\(key)':") else { return nil }
            return String(text[r.upperBound...]).trimmingCharacters(in: .whitespaces)
        }
        guard let descrField = field("descr"), let descr = descrField.split(separator: "'").first.map(String.init) else {
            throw TableFileError("\(file.path): no 'descr' in the header")
        }
        let type: ElementType
        switch descr {
        case "<f4": type = .float32
        case "<u8": type = .uint64
        default: throw TableFileError("\(file.path) holds \(descr) elements; \(name) must be \(name == "keys" ? "uint64 (<u8)" : "float32 (<f4)")")
        }
        if let order = field("fortran_order"), order.hasPrefix("True") {
            throw TableFileError("\(file.path) is in Fortran order; save it C-contiguous")
        }
        guard let shapeField = field("shape"), let open = shapeField.firstIndex(of: "("),
              let close = shapeField[open...].firstIndex(of: ")") else {
            throw TableFileError("\(file.path): no 'shape' in the header")
        }
        var dims: [Int] = []
        for item in shapeField[shapeField.index(after: open)..<close].split(separator: ",") {
            let text = item.trimmingCharacters(in: .whitespaces)
            guard let n = Int(text) else { throw TableFileError("\(file.path): '\(text)' in its shape is not a whole number") }
            dims.append(n)
        }
        let shape = try TensorShape.stated(dims, name: name, type: type, in: file.path)
        let dataOffset = offset + headerLength
        guard shape.bytes <= file.size - dataOffset else {
            throw TableFileError("\(file.path) is \(file.size) bytes; its shape \(dims) needs \(dataOffset + shape.bytes)")
        }
        return (shape, dataOffset)
    }
}

// MARK: - safetensors

enum Safetensors {
    /// A safetensors file's JSON header and where its data starts. The 8-byte length is checked
    /// against the file's size before anything else is read.
    static func header(_ file: InputFile) throws -> (object: [String: Any], dataStart: Int) {
        guard file.size >= 8 else { throw TableFileError("\(file.path) is not a safetensors file (\(file.size) bytes)") }
        let length = try file.bytes(8, at: 0).withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard length > 0, length <= UInt64(file.size - 8) else {
            throw TableFileError("\(file.path) is not a safetensors file: its header length \(length) does not fit its \(file.size) bytes")
        }
        let header = try file.bytes(Int(length), at: 8)
        guard let object = try? JSONSerialization.jsonObject(with: Data(header)) as? [String: Any] else {
            throw TableFileError("\(file.path): its header is not a JSON object")
        }
        return (object, 8 + Int(length))
    }
}

// MARK: - Writers

/// Writes a table file given every tensor's shape up front; rows arrive in order.
public final class TableFileWriter {
    public let format: TableFileFormat
    public let path: String
    private var files: [String: (file: OutputFile, offset: Int)] = [:]
    private var tsv: (vectors: FileHandleWriter, metadata: FileHandleWriter, deleted: FileHandleWriter?)?
    private var written: [String: Int] = [:]
    private let shapes: [TensorShape]

    /// Creates the files. `metadata` goes into a safetensors header.
    public init(format: TableFileFormat, path: String, shapes: [TensorShape], metadata: [String: String]) throws {
        self.format = format
        self.path = path
        self.shapes = shapes
        switch format {
        case .npy:
            try Self.makeDirectory(path)
            try Self.writeMetadata(metadata, path)
            for shape in shapes {
                let file = try OutputFile(path + "/\(shape.name).npy")
                let header = NPY.header(shape)
                try file.write(header, at: 0)
                files[shape.name] = (file, header.count)
            }
        case .safetensors:
            let file = try OutputFile(path)
            var entries: [String] = []
            var offset = 0
            for shape in shapes {
                let dims = shape.isVector ? "[\(shape.rows)]" : "[\(shape.rows),\(shape.columns)]"
                entries.append("\"\(shape.name)\":{\"dtype\":\"\(shape.type.safetensorsName)\",\"shape\":\(dims),\"data_offsets\":[\(offset),\(offset + shape.bytes)]}")
                offset += shape.bytes
            }
            let meta = try String(decoding: JSONSerialization.data(withJSONObject: metadata, options: [.sortedKeys]), as: UTF8.self)
            var header = "{\"__metadata__\":\(meta)," + entries.joined(separator: ",") + "}"
            header += String(repeating: " ", count: (8 - header.utf8.count % 8) % 8)
            var prefix = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { Array($0) }
            prefix += Array(header.utf8)
            try file.write(prefix, at: 0)
            var place = prefix.count
            for shape in shapes {
                files[shape.name] = (file, place)
                place += shape.bytes
            }
        case .tsv:
            try Self.makeDirectory(path)
            try Self.writeMetadata(metadata, path)
            let deleted = shapes.contains { $0.name == "deleted_keys" }
            tsv = (try FileHandleWriter(path + "/vectors.tsv"), try FileHandleWriter(path + "/metadata.tsv"),
                   deleted ? try FileHandleWriter(path + "/deleted.tsv") : nil)
        }
    }

    /// The files an npy or tsv export may write, all removed before one writes: files of an
    /// earlier export into the same directory must not be read as part of this one.
    private static let exportFiles = ["keys.npy", "values.npy", "state.npy", "update_counts.npy", "deleted_keys.npy",
                                      "vectors.tsv", "metadata.tsv", "deleted.tsv", "strata.json"]

    /// Beside the npy and tsv files: what a safetensors file keeps in `__metadata__`.
    private static func writeMetadata(_ metadata: [String: String], _ directory: String) throws {
        let file = try OutputFile(directory + "/strata.json")
        try file.write(Array(try JSONSerialization.data(withJSONObject: metadata, options: [.sortedKeys])) + [0x0A], at: 0)
    }

    /// The metadata `strata export` wrote with a table file, if any.
    public static func metadata(_ path: String, _ format: TableFileFormat) -> [String: String]? {
        if format != .safetensors {
            return (try? Data(contentsOf: URL(fileURLWithPath: path + "/strata.json")))
                .flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: String] }
        }
        guard let file = try? InputFile(path), let (object, _) = try? Safetensors.header(file) else { return nil }
        return object["__metadata__"] as? [String: String]
    }

    private static func makeDirectory(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw TableFileError("cannot create the directory \(path): \(error.localizedDescription)")
        }
        guard access(path, W_OK) == 0 else { throw TableFileError("cannot write in \(path): permission denied") }
        for name in exportFiles where FileManager.default.fileExists(atPath: path + "/" + name) {
            do { try FileManager.default.removeItem(atPath: path + "/" + name) } catch {
                throw TableFileError("cannot replace \(path)/\(name): \(error.localizedDescription)")
            }
        }
    }

    /// Appends rows to the tensor `name` (`values.count` a multiple of its columns).
    public func append<T>(_ name: String, _ values: ArraySlice<T>) throws {
        switch format {
        case .npy, .safetensors:
            guard let (file, base) = files[name] else { return }
            let size = MemoryLayout<T>.stride
            try file.write(values, at: base + (written[name] ?? 0) * size)
            written[name, default: 0] += values.count
        case .tsv:
            guard let tsv else { return }
            if name == "values", let floats = values as? ArraySlice<Float> {
                let columns = shapes.first { $0.name == "values" }!.columns
                var line = ""
                for (i, v) in floats.enumerated() {
                    line += v.description
                    line += (i + 1) % columns == 0 ? "\n" : "\t"
                }
                try tsv.vectors.write(line)
            } else if name == "keys" || name == "deleted_keys", let keys = values as? ArraySlice<UInt64> {
                let text = keys.map { "\($0)\n" }.joined()
                try (name == "keys" ? tsv.metadata : tsv.deleted!).write(text)
            }
        }
    }

    /// Checks every tensor got its rows and makes the files durable.
    public func finish() throws {
        if format != .tsv {
            for shape in shapes where (written[shape.name] ?? 0) != shape.rows * shape.columns {
                throw TableFileError("internal: \(shape.name) got \(written[shape.name] ?? 0) of \(shape.rows * shape.columns) elements")
            }
            for (_, entry) in files { try entry.file.sync() }
        } else if let tsv {
            try tsv.vectors.finish()
            try tsv.metadata.finish()
            try tsv.deleted?.finish()
        }
    }
}

/// Buffered text output.
final class FileHandleWriter {
    private let file: OutputFile
    private var buffer: [UInt8] = []
    private var offset = 0

    init(_ path: String) throws { file = try OutputFile(path) }

    func write(_ text: String) throws {
        buffer += text.utf8
        if buffer.count >= 1 << 20 { try flush() }
    }

    private func flush() throws {
        try file.write(buffer, at: offset)
        offset += buffer.count
        buffer.removeAll(keepingCapacity: true)
    }

    func finish() throws {
        try flush()
        try file.sync()
    }
}

// MARK: - Readers

/// Reads a table file a batch of rows at a time.
public final class TableFileReader {
    public let format: TableFileFormat
    public let rows: Int
    public let dimension: Int
    /// Floats of optimizer state per row, when the file has them.
    public let stateColumns: Int?
    public let hasUpdateCounts: Bool
    private var tensors: [String: (file: InputFile, offset: Int, shape: TensorShape)] = [:]
    private var lines: (vectors: LineReader, metadata: LineReader)?
    private var deletedLines: LineReader?
    private var position = 0, deletedPosition = 0

    public init(path: String, format: TableFileFormat) throws {
        self.format = format
        switch format {
        case .npy:
            for name in ["keys", "values", "state", "update_counts", "deleted_keys"] {
                let file = path + "/\(name).npy"
                guard FileManager.default.fileExists(atPath: file) else {
                    if name == "keys" || name == "values" { throw TableFileError("\(path) has no \(name).npy") }
                    continue
                }
                let input = try InputFile(file)
                let (shape, offset) = try NPY.read(input, name: name)
                tensors[name] = (input, offset, shape)
            }
        case .safetensors:
            let input = try InputFile(path)
            let (object, dataStart) = try Safetensors.header(input)
            for name in ["keys", "values", "state", "update_counts", "deleted_keys"] {
                guard let entry = object[name] as? [String: Any] else {
                    if name == "keys" || name == "values" { throw TableFileError("\(path) has no tensor '\(name)'") }
                    continue
                }
                guard let dtype = entry["dtype"] as? String, let shape = entry["shape"] as? [Int],
                      let offsets = entry["data_offsets"] as? [Int], offsets.count == 2 else {
                    throw TableFileError("\(path): tensor '\(name)' lacks dtype, shape or data_offsets")
                }
                let type: ElementType
                switch dtype {
                case "F32": type = .float32
                case "U64": type = .uint64
                default: throw TableFileError("\(path): tensor '\(name)' is \(dtype); \(["keys", "update_counts", "deleted_keys"].contains(name) ? "U64" : "F32") expected")
                }
                let s = try TensorShape.stated(shape, name: name, type: type, in: path)
                guard offsets[0] >= 0, offsets[0] <= offsets[1], offsets[1] <= input.size - dataStart,
                      offsets[1] - offsets[0] == s.bytes else {
                    throw TableFileError("\(path): tensor '\(name)' of shape \(shape) does not fit its data_offsets \(offsets) "
                        + "in the \(input.size - dataStart) bytes after the header")
                }
                tensors[name] = (input, dataStart + offsets[0], s)
            }
        case .tsv:
            let vectors = try LineReader(path + "/vectors.tsv")
            let metadata = try LineReader(path + "/metadata.tsv")
            // Counted in a first pass: the projector's files carry no shape.
            var count = 0, columns = 0
            let counter = try LineReader(path + "/vectors.tsv")
            while let line = try counter.next() {
                if count == 0 { columns = line.split(separator: "\t", omittingEmptySubsequences: false).count }
                count += 1
            }
            lines = (vectors, metadata)
            if FileManager.default.fileExists(atPath: path + "/deleted.tsv") { deletedLines = try LineReader(path + "/deleted.tsv") }
            rows = count
            dimension = columns
            stateColumns = nil
            hasUpdateCounts = false
            return
        }
        let keys = tensors["keys"]!.shape, values = tensors["values"]!.shape
        guard keys.type == .uint64, keys.isVector else { throw TableFileError("keys must be a uint64 vector") }
        guard values.type == .float32, !values.isVector else { throw TableFileError("values must be a float32 matrix, one row per key") }
        guard keys.rows == values.rows else {
            throw TableFileError("\(keys.rows) keys but \(values.rows) rows of values")
        }
        rows = keys.rows
        dimension = values.columns
        if let state = tensors["state"]?.shape {
            guard state.type == .float32, state.rows == rows else {
                throw TableFileError("state must be float32 with one row per key (\(state.rows) rows for \(rows) keys)")
            }
            stateColumns = state.columns
        } else {
            stateColumns = nil
        }
        if let deleted = tensors["deleted_keys"]?.shape, deleted.type != .uint64 || !deleted.isVector {
            throw TableFileError("deleted_keys must be a uint64 vector")
        }
        if let counts = tensors["update_counts"]?.shape {
            guard counts.type == .uint64, counts.rows == rows else { throw TableFileError("update_counts must be uint64, one per key") }
            hasUpdateCounts = true
        } else {
            hasUpdateCounts = false
        }
    }

    /// The next batch of at most `limit` keys a delta export lists as deleted, or nil at the end.
    public func nextDeleted(limit: Int) throws -> [UInt64]? {
        if let reader = deletedLines {
            var keys: [UInt64] = []
            while keys.count < limit, let line = try reader.next() {
                deletedPosition += 1
                guard let key = UInt64(line.trimmingCharacters(in: .whitespaces)) else {
                    throw TableFileError("deleted.tsv:\(deletedPosition): '\(line)' is not a key")
                }
                keys.append(key)
            }
            return keys.isEmpty ? nil : keys
        }
        guard let (file, offset, shape) = tensors["deleted_keys"], deletedPosition < shape.rows else { return nil }
        let n = min(limit, shape.rows - deletedPosition)
        var keys = [UInt64](repeating: 0, count: n)
        try keys.withUnsafeMutableBytes { try file.read(into: $0, at: offset + deletedPosition * 8) }
        deletedPosition += n
        return keys
    }

    /// The next batch of at most `limit` rows, or nil at the end.
    public func next(limit: Int) throws -> (keys: [UInt64], values: [Float], state: [Float]?, counts: [UInt64]?)? {
        guard position < rows else { return nil }
        let n = min(limit, rows - position)
        defer { position += n }
        if let lines {
            var keys: [UInt64] = [], values: [Float] = []
            keys.reserveCapacity(n)
            values.reserveCapacity(n * dimension)
            for i in 0..<n {
                let line = position + i + 1
                guard let v = try lines.vectors.next(), let k = try lines.metadata.next() else {
                    throw TableFileError("metadata.tsv has fewer lines than vectors.tsv (\(line - 1))")
                }
                guard let key = UInt64(k.trimmingCharacters(in: .whitespaces)) else {
                    throw TableFileError("metadata.tsv:\(line): '\(k)' is not a key (an unsigned 64-bit integer)")
                }
                let fields = v.split(separator: "\t", omittingEmptySubsequences: false)
                guard fields.count == dimension else {
                    throw TableFileError("vectors.tsv:\(line): \(fields.count) values, the first line has \(dimension)")
                }
                for f in fields {
                    guard let x = Float(f) else { throw TableFileError("vectors.tsv:\(line): '\(f)' is not a number") }
                    values.append(x)
                }
                keys.append(key)
            }
            return (keys, values, nil, nil)
        }
        func read<T>(_ name: String, _ type: T.Type, columns: Int) throws -> [T] {
            let (file, offset, _) = tensors[name]!
            let size = MemoryLayout<T>.stride
            var out = [T](unsafeUninitializedCapacity: n * columns) { _, count in count = n * columns }
            try out.withUnsafeMutableBytes { try file.read(into: $0, at: offset + position * columns * size) }
            return out
        }
        let keys = try read("keys", UInt64.self, columns: 1)
        let values = try read("values", Float.self, columns: dimension)
        let state = try stateColumns.map { try read("state", Float.self, columns: $0) }
        let counts = hasUpdateCounts ? try read("update_counts", UInt64.self, columns: 1) : nil
        return (keys, values, state, counts)
    }
}

/// Lines of a text file, read in blocks.
final class LineReader {
    private let file: InputFile
    private var offset = 0
    private var buffer: [UInt8] = []
    private var start = 0

    init(_ path: String) throws { file = try InputFile(path) }

    func next() throws -> String? {
        while true {
            if let newline = buffer[start...].firstIndex(of: 0x0A) {
                defer { start = newline + 1 }
                return String(decoding: buffer[start..<newline], as: UTF8.self)
            }
            guard offset < file.size else {
                guard start < buffer.count else { return nil }
                defer { start = buffer.count }
                return String(decoding: buffer[start...], as: UTF8.self)
            }
            buffer.removeFirst(start)
            start = 0
            let n = min(1 << 20, file.size - offset)
            buffer += try file.bytes(n, at: offset)
            offset += n
        }
    }
}
