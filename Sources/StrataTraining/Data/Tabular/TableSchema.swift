// The schema file of a user's tabular data: what each column of a CSV or TSV is, which
// columns to cross, which side tables to join by id. JSON, documented with a worked example
// in the README ("Your own data"):
//
//   {
//     "columns": {
//       "user_id":   {"kind": "categorical", "table": "user"},
//       "item_id":   {"kind": "categorical", "table": "item"},
//       "rating":    {"kind": "label", "type": "rating"},
//       "price":     {"kind": "numeric", "transform": "log1p"},
//       "age":       {"kind": "numeric", "buckets": [18, 25, 35, 45, 56]},
//       "genres":    {"kind": "multi", "separator": "|"},
//       "timestamp": {"kind": "ignore"}
//     },
//     "user": "user_id", "item": "item_id",
//     "crosses": [["age", "genres"]],
//     "joins": [{"file": "items.csv", "on": "item_id", "side": "item", "columns": {...}}],
//     "tables": {"item": {"dimension": 32}}
//   }
//
// Features follow the files' header order (the interactions file's, then each join's), so
// the schema's order in JSON does not matter.
import Foundation
public import StrataModels
public import StrataNN
import StrataStore

public struct TableSchema: Sendable, Codable, Equatable, Hashable {
    public struct Column: Sendable, Codable, Equatable, Hashable {
        public enum Kind: String, Sendable, Codable, Hashable {
            /// One value, hashed into a key of its table.
            case categorical
            /// Several values separated by `separator`, each a key; pooled per sample.
            case multi
            /// A number: a dense feature (after `transform`), or with `buckets` a categorical
            /// feature whose value is the bucket.
            case numeric
            /// What the model learns to predict.
            case label
            /// Read past.
            case ignore
        }
        public enum Transform: String, Sendable, Codable, Hashable {
            case none
            /// log(1 + max(x, 0)): for counts and prices, heavy-tailed and non-negative.
            case log1p
        }
        public enum LabelType: String, Sendable, Codable, Hashable {
            /// 0 or 1, or a number turned into 1 at or above `threshold`.
            case binary
            /// A number to predict.
            case rating
        }

        public var kind: Kind
        /// The table (and key namespace) of a categorical, multi-valued or bucketed column;
        /// its name if not given. Columns naming one table share its rows.
        public var table: String?
        /// Whom the column describes (user, item or context); columns of a join take the
        /// join's side, the user and item columns their own.
        public var side: FeatureSchema.Side?
        /// A multi-valued column's separator (one byte; default a space).
        public var separator: String?
        public var pooling: TableLookup.Pooling?
        public var transform: Transform?
        /// Bucket boundaries, ascending: bucket i holds boundaries[i − 1] ≤ x < boundaries[i].
        public var buckets: [Double]?
        public var type: LabelType?
        /// A binary label from a number: 1 when the value is at least this.
        public var threshold: Double?

        public init(kind: Kind, table: String? = nil, side: FeatureSchema.Side? = nil, separator: String? = nil,
                    pooling: TableLookup.Pooling? = nil, transform: Transform? = nil, buckets: [Double]? = nil,
                    type: LabelType? = nil, threshold: Double? = nil) {
            self.kind = kind
            self.table = table
            self.side = side
            self.separator = separator
            self.pooling = pooling
            self.transform = transform
            self.buckets = buckets
            self.type = type
            self.threshold = threshold
        }
    }

    /// A side table joined to the interactions by an id column.
    public struct Join: Sendable, Codable, Equatable, Hashable {
        /// The file, relative to the schema file's directory unless absolute.
        public var file: String
        /// The interactions' column whose value is looked up in the join's column of the same
        /// name.
        public var on: String
        public var side: FeatureSchema.Side
        public var columns: [String: Column]
        public var delimiter: String?

        public init(file: String, on: String, side: FeatureSchema.Side, columns: [String: Column], delimiter: String? = nil) {
            self.file = file
            self.on = on
            self.side = side
            self.columns = columns
            self.delimiter = delimiter
        }
    }

    public var columns: [String: Column]
    /// The field separator: one byte ("\t" or ","); by default "," for .csv files, else a tab.
    public var delimiter: String?
    public var user: String?
    public var item: String?
    /// The column holding each interaction's time, a number (seconds, or any increasing
    /// count): it orders each user's interactions into a sequence, for the next-item
    /// protocol and session models. Read whatever the column's kind (usually "ignore").
    public var time: String?
    public var crosses: [[String]]?
    public var joins: [Join]?
    public var tables: [String: FeatureSchema.TableSettings]?

    public init(columns: [String: Column], delimiter: String? = nil, user: String? = nil, item: String? = nil, time: String? = nil,
                crosses: [[String]]? = nil, joins: [Join]? = nil, tables: [String: FeatureSchema.TableSettings]? = nil) {
        self.time = time
        self.columns = columns
        self.delimiter = delimiter
        self.user = user
        self.item = item
        self.crosses = crosses
        self.joins = joins
        self.tables = tables
    }

    /// Reads a schema file. Throws `DataError.schema` naming the file and what is wrong.
    public static func load(_ path: String) throws(DataError) -> TableSchema {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw .io(path: path, operation: "read", detail: (error as NSError).localizedDescription)
        }
        do { return try JSONDecoder().decode(TableSchema.self, from: data) } catch let error as DecodingError {
            throw .schema(file: path, reason: Self.describe(error))
        } catch {
            throw .schema(file: path, reason: "\(error)")
        }
    }

    /// A decoding error as a path into the file and what was expected.
    static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [any CodingKey]) -> String {
            let p = keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return p.isEmpty ? "the top level" : String(p.dropFirst(p.hasPrefix(".") ? 1 : 0))
        }
        switch error {
        case .keyNotFound(let key, let c): return "\(path(c.codingPath + [key])) is missing"
        case .typeMismatch(_, let c), .valueNotFound(_, let c): return "\(path(c.codingPath)): \(c.debugDescription)"
        case .dataCorrupted(let c):
            if let underlying = c.underlyingError as NSError?, c.codingPath.isEmpty {
                return "not valid JSON (\(underlying.userInfo[NSDebugDescriptionErrorKey] ?? underlying.localizedDescription))"
            }
            return "\(path(c.codingPath)): \(c.debugDescription)"
        @unknown default: return "\(error)"
        }
    }
}
