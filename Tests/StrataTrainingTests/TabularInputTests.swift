// A user's own data: a CSV or TSV with a header, described by a JSON schema (`TableSchema`),
// with side tables joined by id (`TabularData`). Good input is checked value by value against
// keys computed here from the documented hashing (`FeatureSchema.key` of the table's namespace
// and the value's bytes), so that a change to what a column becomes shows up as a wrong key,
// not as a slightly different loss. Bad input must be refused with a message naming the file,
// the line where there is one, and what is wrong, because a user's data is where mistakes are.
import Foundation
import StrataModels
import StrataStore
import StrataTestSupport
import StrataTraining
import Testing

// MARK: Support

/// The key a value of a feature of `table` must have: the hash of its UTF-8 bytes in the
/// table's namespace.
private func key(_ table: String, _ value: String) -> UInt64 {
    Array(value.utf8).withUnsafeBufferPointer {
        FeatureSchema.key(namespace: FeatureSchema.namespace(table), value: FeatureSchema.valueHash($0))
    }
}

private func missing(_ table: String) -> UInt64 { FeatureSchema.missingKey(table: table) }

/// The key of a combination of a cross: the parts' keys hashed in order into the cross's
/// namespace (the rule `Batch.computeCrosses` documents).
private func crossKey(_ table: String, _ parts: [UInt64]) -> UInt64 {
    parts.reduce(FeatureSchema.namespace(table)) { SplitMix64.mix($0 ^ $1) }
}

private func log1pFloat(_ x: Double) -> Float { Float(Foundation.log1p(max(x, 0))) }

/// A directory for one test's files, removed afterwards.
private struct TableScratch: ~Copyable {
    let directory = temporaryDirectory("strata-tabular")

    /// Writes `text` to `name` in the directory; returns its path.
    @discardableResult
    func write(_ name: String, _ text: String) -> String {
        let path = directory + "/" + name
        precondition(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)), "cannot write \(path)")
        return path
    }

    /// Writes the schema and the data, and opens the data as `strata train` does: the schema
    /// read from its file, join paths relative to its directory.
    func open(schema json: String, data: String, name: String = "data.csv",
              options: TabularData.Options = .init()) throws -> TabularData {
        let schemaPath = write("schema.json", json)
        let path = write(name, data)
        return try TabularData(path: path, table: try TableSchema.load(schemaPath), schemaFile: schemaPath, directory: directory,
                               options: options)
    }

    deinit { removeDirectory(directory) }
}

/// Reads `split` of `data` to its end in batches of `batchSize` (one Batch object reused, as
/// training does), computing the crosses of each batch; `check` sees every batch.
@discardableResult
private func readAll(_ data: TabularData, _ split: Interactions.Split = .train, batchSize: Int = 64,
                     check: (Batch) throws -> Void = { _ in }) throws -> (rows: Int, source: LineFile) {
    var source = try data.source(split, shuffleBlock: 0, seed: 1)
    let batch = Batch(schema: data.schema)
    var rows = 0
    while true {
        let n = try source.next(batchSize, into: batch)
        if n == 0 { break }
        batch.computeCrosses()
        try check(batch)
        rows += n
    }
    return (rows, source)
}

/// The one batch holding a whole small file.
private func readBatch(_ data: TabularData) throws -> Batch {
    var source = try data.source(.train, shuffleBlock: 0, seed: 1)
    let batch = Batch(schema: data.schema)
    _ = try source.next(1000, into: batch)
    batch.computeCrosses()
    #expect(try source.next(1000, into: Batch(schema: data.schema)) == 0, "the file should fit one batch")
    return batch
}

fileprivate extension Batch {
    func featureIndex(_ name: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> Int {
        try #require(schema.categoricalIndex(name), "no categorical feature '\(name)' in \(schema.categorical.map(\.name))",
                     sourceLocation: sourceLocation)
    }

    /// Feature `name`'s keys row by row, read through `keys(of:)` (a single-valued feature's
    /// row is a bag of one).
    func bags(_ name: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [[UInt64]] {
        let use = keys(of: try featureIndex(name, sourceLocation: sourceLocation))
        guard let offsets = use.offsets else { return use.keys.map { [$0] } }
        #expect(offsets.count == count + 1, sourceLocation: sourceLocation)
        return (0..<count).map { r in Array(use.keys[Int(offsets[r])..<Int(offsets[r + 1])]) }
    }

    /// A single-valued feature's keys.
    func singles(_ name: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [UInt64] {
        let f = try featureIndex(name, sourceLocation: sourceLocation)
        #expect(!isBag(f), "'\(name)' should hold one key per row", sourceLocation: sourceLocation)
        return Array(keys(of: f).keys)
    }

    func denseColumn(_ name: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [Float] {
        let j = try #require(schema.dense.firstIndex { $0.name == name }, "no dense feature '\(name)'", sourceLocation: sourceLocation)
        return (0..<count).map { dense[$0 * denseColumns + j] }
    }
}

/// Expects `body` to throw a `DataError` or `TrainingError` whose description holds every
/// fragment ("$FILE" in a fragment: any of `files`, for errors that may name either).
private func expectRefused(_ what: String, mentioning fragments: [String], files: [String] = [],
                           sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
    let text: String
    do {
        try body()
        Issue.record("\(what): no error", sourceLocation: sourceLocation)
        return
    } catch let error as DataError {
        text = error.description
    } catch let error as TrainingError {
        text = error.description
    } catch {
        Issue.record("\(what): unexpected error \(type(of: error)): \(error)", sourceLocation: sourceLocation)
        return
    }
    for f in fragments {
        if f == "$FILE" {
            #expect(files.contains { text.contains($0) }, "\(what): names none of the files \(files): \(text)",
                    sourceLocation: sourceLocation)
        } else {
            #expect(text.contains(f), "\(what): does not mention '\(f)': \(text)", sourceLocation: sourceLocation)
        }
    }
}

// MARK: Cases

/// A schema (or its data, or a side table) that must be refused before any sample is read.
struct BadSchemaCase: Sendable, CustomTestStringConvertible {
    var name: String
    var schema: String
    var data = "a,b,y\n1,2,1\n3,4,0\n"
    /// Side tables, by file name in the schema's directory.
    var files: [String: String] = [:]
    /// Fragments of the message; "$DATA", "$SCHEMA" and "$DIR" stand for those paths, and a
    /// fragment that is exactly "$FILE" for the data's or the schema's path, whichever the
    /// message names.
    var mentions: [String]
    var testDescription: String { name }
}

/// A data line that cannot be a sample, with what its message must say.
struct BadLineCase: Sendable, CustomTestStringConvertible {
    var name: String
    var line: String
    var mentions: [String]
    var testDescription: String { name }
}

@Suite struct TabularInputTests {
    // MARK: Good input

    /// Every kind of column, in a CSV, a TSV and a file with a delimiter of its own.
    static let mainSchema = #"""
        {
          "columns": {
            "user_id": {"kind": "categorical", "table": "user"},
            "item_id": {"kind": "categorical", "table": "item"},
            "genres":  {"kind": "multi", "separator": "|", "pooling": "sum"},
            "price":   {"kind": "numeric", "transform": "log1p"},
            "score":   {"kind": "numeric"},
            "age":     {"kind": "numeric", "buckets": [18, 25, 35]},
            "click":   {"kind": "label", "type": "binary"},
            "rating":  {"kind": "label", "type": "rating"},
            "note":    {"kind": "ignore"}
          },
          "user": "user_id", "item": "item_id"DELIMITER
        }
        """#

    static let mainRows: [[String]] = [
        ["user_id", "item_id", "genres", "price", "score", "age", "click", "rating", "note", "extra"],
        ["u1", "i1", "a|b|c", "0", "-2.5", "17.9", "1", "4.5", "n1", "e1"],
        ["u2", "i2", "", "9", "3", "18", "0", "3", "n2", "e2"],
        ["u1", "i3", "b", "2.5", "0", "24.99", "1", "1", "", ""],
        ["u3", "i1", "c||a", "1e3", "7", "25", "0", "5", "n4", "e4"],
        ["u2", "i2", "a", "-3", " 1 ", "", "1", "2", "n5", "e5"],
    ]

    @Test(arguments: [("data.csv", ",", false), ("data.tsv", "\t", false), ("DATA.CSV", ",", false), ("data.txt", ";", true)])
    func everyKindOfColumn(name: String, delimiter: String, declared: Bool) throws {
        let scratch = TableScratch()
        // The delimiter comes from the extension (.csv: comma, else tab) unless the schema says.
        let schema = Self.mainSchema.replacingOccurrences(of: "DELIMITER", with: declared ? #", "delimiter": "\#(delimiter)""# : "")
        let text = Self.mainRows.map { $0.joined(separator: delimiter) + "\n" }.joined()
        let data = try scratch.open(schema: schema, data: text, name: name)

        // Features in the header's order whatever the JSON's order; the undeclared column is
        // reported, the declared "ignore" one is not.
        #expect(data.schema.categorical.map(\.name) == ["user_id", "item_id", "genres", "age"])
        #expect(data.schema.dense.map(\.name) == ["price", "score"])
        #expect(data.schema.labels == [.init("click", kind: .binary), .init("rating", kind: .rating)])
        #expect(data.ignoredColumns == ["extra"])
        let genres = try #require(data.schema.categoricalIndex("genres"))
        #expect(data.schema.categorical[genres].multiValued && data.schema.categorical[genres].pooling == .sum)
        #expect(data.schema.categorical.map(\.side) == [.user, .item, .context, .context])
        #expect(data.schema.user == "user_id" && data.schema.item == "item_id")
        // Naming the user and item makes the scan learn them.
        let interactions = try #require(data.interactions)
        #expect(interactions.users.count == 3 && interactions.items.count == 3)
        #expect(data.counts == [5, 0, 0])

        let batch = try readBatch(data)
        #expect(batch.count == 5)
        #expect(try batch.singles("user_id") == ["u1", "u2", "u1", "u3", "u2"].map { key("user", $0) })
        #expect(try batch.singles("item_id") == ["i1", "i2", "i3", "i1", "i2"].map { key("item", $0) })
        // One bag per row; an empty field is one key, the table's missing key; empty values
        // between separators are dropped.
        #expect(try batch.bags("genres") == [
            ["a", "b", "c"].map { key("genres", $0) }, [missing("genres")], [key("genres", "b")],
            [key("genres", "c"), key("genres", "a")], [key("genres", "a")],
        ])
        #expect(try batch.denseColumn("price") == [0, log1pFloat(9), log1pFloat(2.5), log1pFloat(1000), 0])
        #expect(try batch.denseColumn("score") == [-2.5, 3, 0, 7, 1])
        #expect(try batch.labelColumn("click") == [1, 0, 1, 0, 1])
        #expect(try batch.labelColumn("rating") == [4.5, 3, 1, 5, 2])

        // Buckets [18, 25, 35]: 17.9 | 18, 24.99 | 25; bucket i holds boundaries[i-1] <= x <
        // boundaries[i], so a boundary belongs to the bucket above it.
        let age = try batch.singles("age")
        #expect(age[1] == age[2], "18 and 24.99 share the bucket [18, 25)")
        #expect(age[0] != age[1], "17.9 and 18 are in different buckets: the lower boundary is inclusive")
        #expect(age[2] != age[3], "24.99 and 25 are in different buckets")
        #expect(Set([age[0], age[1], age[3]]).count == 3)
        #expect(age[4] == missing("age"), "an empty bucketed field is the missing key")
        #expect(!age[0..<4].contains(missing("age")))
    }

    @Test func clickThresholdTurnsTheFirstRatingIntoAClick() throws {
        let scratch = TableScratch()
        let schema = #"{"columns": {"u": {"kind": "categorical"}, "r": {"kind": "label"}, "s": {"kind": "label", "type": "rating"}}}"#
        let data = try scratch.open(schema: schema, data: "u,r,s\na,4.5,4.5\nb,3,3\nc,4,4\nd,3.99,3.99\n",
                                    options: .init(clickThreshold: 4))
        #expect(data.schema.labels == [.init("click", kind: .binary), .init("r", kind: .rating), .init("s", kind: .rating)])
        let batch = try readBatch(data)
        // At or above the threshold is a click; only the first rating label is turned, and it
        // is kept beside the click.
        #expect(try batch.labelColumn("click") == [1, 0, 1, 0])
        #expect(try batch.labelColumn("r") == [4.5, 3, 4, 3.99])
        #expect(try batch.labelColumn("s") == [4.5, 3, 4, 3.99])
        // A column already named "click" is refused, saying where the second one comes from.
        let clash = #"{"columns": {"click": {"kind": "categorical"}, "r": {"kind": "label"}}}"#
        expectRefused("a click column under the click protocol", mentioning: ["'click'", "the click protocol names its label"]) {
            _ = try scratch.open(schema: clash, data: "click,r\na,4\n", options: .init(clickThreshold: 4))
        }
    }

    @Test(arguments: ["\n", "\r\n"], [true, false])
    func quotedFieldsAndLineEnds(lineEnd: String, finalNewline: Bool) throws {
        let scratch = TableScratch()
        let schema = #"""
            {"columns": {"name": {"kind": "categorical"}, "city": {"kind": "categorical"},
                         "tags": {"kind": "multi", "separator": "|"}, "count": {"kind": "numeric"},
                         "blank": {"kind": "categorical"}}}
            """#
        let lines = [
            #""name",city,tags,count,blank"#,  // a quoted header name is read without its quotes
            #""Smith, J.","say ""hi""","a|""b""|c","4","""#,
            #"plain,x,,5,z"#,
            #""""",",",,"-1.5e1",plain"#,
        ]
        let text = lines.joined(separator: lineEnd) + (finalNewline ? lineEnd : "")
        let data = try scratch.open(schema: schema, data: text)
        let batch = try readBatch(data)
        #expect(batch.count == 3)
        // The delimiter inside quotes is text; "" inside quotes is one quote, hashed as such.
        #expect(try batch.singles("name") == [key("name", "Smith, J."), key("name", "plain"), key("name", "\"")])
        #expect(try batch.singles("city") == [key("city", "say \"hi\""), key("city", "x"), key("city", ",")])
        #expect(try batch.bags("tags") == [["a", "\"b\"", "c"].map { key("tags", $0) }, [missing("tags")], [missing("tags")]])
        #expect(try batch.denseColumn("count") == [4, 5, -15])
        // "" is an empty field: the missing key.
        #expect(try batch.singles("blank") == [missing("blank"), key("blank", "z"), key("blank", "plain")])
    }

    @Test func joinsAddTheSideTablesColumns() throws {
        let scratch = TableScratch()
        scratch.write("items.csv", """
            title,item_id,genre,price,maker
            Alpha,i1,x|y,10,acme
            Beta,i2,,0,
            Gamma,i3,z,2,bolt

            """)
        // CRLF and no final newline in the side table too; given by absolute path.
        let users = scratch.write("users.tsv", "user_id\tage\tcountry\r\nu1\t30\tfr\r\nu2\t40\tde")
        let schema = #"""
            {
              "columns": {
                "user_id": {"kind": "categorical", "table": "user"},
                "item_id": {"kind": "categorical", "table": "item"},
                "last_item": {"kind": "categorical", "table": "item"},
                "rating": {"kind": "label", "type": "rating"}
              },
              "user": "user_id", "item": "item_id",
              "joins": [
                {"file": "items.csv", "on": "item_id", "side": "item", "columns": {
                   "item_id": {"kind": "categorical"},
                   "title": {"kind": "ignore"}, "genre": {"kind": "multi", "separator": "|"},
                   "price": {"kind": "numeric", "transform": "log1p"}, "maker": {"kind": "categorical", "table": "company"}}},
                {"file": "USERS", "on": "user_id", "side": "user", "columns": {
                   "age": {"kind": "numeric"}, "country": {"kind": "categorical"}}}
              ]
            }
            """#.replacingOccurrences(of: "USERS", with: users)
        let data = try scratch.open(schema: schema, data: """
            user_id,item_id,last_item,rating
            u1,i1,i2,5
            u2,i9,i1,3
            u1,i2,i2,4
            u3,i1,,1

            """)
        // The id column is the interactions'; the side tables' features follow, in the joins'
        // order, each side's header order, on the join's side.
        #expect(data.schema.categorical.map(\.name) == ["user_id", "item_id", "last_item", "genre", "maker", "country"])
        #expect(data.schema.categorical.map(\.side) == [.user, .item, .context, .item, .item, .user])
        #expect(data.schema.dense == [.init("price", side: .item), .init("age", side: .user)])
        #expect(data.ignoredColumns.isEmpty)

        let batch = try readBatch(data)
        #expect(try batch.labelColumn("rating") == [5, 3, 4, 1])
        let items = try batch.singles("item_id"), last = try batch.singles("last_item")
        #expect(items == ["i1", "i9", "i2", "i1"].map { key("item", $0) })
        // Two features of table "item": equal values, equal keys.
        #expect(last == [key("item", "i2"), key("item", "i1"), key("item", "i2"), missing("item")])
        #expect(items[0] == last[1] && items[2] == last[0])
        // i9 is not in items.csv: the join's missing keys and 0. i2's empty genre and maker
        // are empty values, the same missing keys.
        #expect(try batch.bags("genre") == [[key("genre", "x"), key("genre", "y")], [missing("genre")], [missing("genre")],
                                             [key("genre", "x"), key("genre", "y")]])
        #expect(try batch.singles("maker") == [key("company", "acme"), missing("company"), missing("company"), key("company", "acme")])
        #expect(try batch.denseColumn("price") == [log1pFloat(10), 0, 0, log1pFloat(10)])
        // u3 is not in users.tsv.
        #expect(try batch.singles("country") == [key("country", "fr"), key("country", "de"), key("country", "fr"), missing("country")])
        #expect(try batch.denseColumn("age") == [30, 40, 30, 0])
    }

    @Test func crossesGiveEveryCombinationPerBatch() throws {
        let scratch = TableScratch()
        let schema = #"""
            {"columns": {"country": {"kind": "categorical"}, "device": {"kind": "categorical"},
                         "genres": {"kind": "multi", "separator": "|"}, "click": {"kind": "label", "type": "binary"}},
             "crosses": [["country", "genres"]]}
            """#
        let rows = [("fr", "ios", ["a", "b"]), ("de", "web", ["c"]), ("fr", "web", ["a", "b", "c"]), ("us", "ios", []), ("de", "ios", ["b"])]
        let text = "country,device,genres,click\n" + rows.map { "\($0.0),\($0.1),\($0.2.joined(separator: "|")),1\n" }.joined()
        // One cross from the schema, one from the options (--cross).
        let data = try scratch.open(schema: schema, data: text, options: .init(crosses: [["country", "device"]]))
        #expect(data.schema.categorical.map(\.name) == ["country", "device", "genres", "country_x_genres", "country_x_device"])
        #expect(data.schema.categorical[3].crossOf == ["country", "genres"])

        // Batches of 2 into one Batch object: each batch's crosses must be its own rows'.
        var seen = 0
        try readAll(data, batchSize: 2) { batch in
            let part = rows[seen..<(seen + batch.count)]
            // Single x multi: a bag of every combination (the genres' order); an empty genres
            // field is one value, the missing key, so the bag has one key.
            #expect(batch.isBag(3))
            let bags = part.map { r in
                let c = key("country", r.0)
                return (r.2.isEmpty ? [missing("genres")] : r.2.map { key("genres", $0) }).map { crossKey("country_x_genres", [c, $0]) }
            }
            let crossBags = try batch.bags("country_x_genres")
            #expect(crossBags == bags, "rows \(seen)...")
            // Single x single: one key per row.
            #expect(!batch.isBag(4))
            let singles = part.map { crossKey("country_x_device", [key("country", $0.0), key("device", $0.1)]) }
            let crossSingles = try batch.singles("country_x_device")
            #expect(crossSingles == singles, "rows \(seen)...")
            seen += batch.count
        }
        #expect(seen == rows.count)
    }

    @Test func unseenValuesHashAndRecBoleHeadersAreRead() throws {
        let scratch = TableScratch()
        let schema = #"""
            {"columns": {"user_id": {"kind": "categorical", "table": "user"}, "item_id": {"kind": "categorical", "table": "item"},
                         "rating": {"kind": "label"}, "timestamp": {"kind": "ignore"}},
             "user": "user_id", "item": "item_id"}
            """#
        // RecBole's atomic files: `name:type` headers, tab-separated (.inter is not .csv).
        let data = try scratch.open(schema: schema, data: """
            user_id:token\titem_id:token\trating:float\ttimestamp:float
            1\t10\t3\t881250949
            2\t20\t5\t881250950

            """, name: "ml.inter")
        #expect(data.schema.categorical.map(\.name) == ["user_id", "item_id"])
        #expect(data.ignoredColumns.isEmpty)
        let batch = try readBatch(data)
        #expect(try batch.singles("user_id") == [key("user", "1"), key("user", "2")])

        // Other data with the same schema: values the first file never had still get their
        // keys, the hash of their bytes: no vocabulary to fall out of.
        let other = scratch.write("other.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\nstranger-9000\tcafé\t1\t0\n")
        let unseen = try TabularData(path: other, table: try TableSchema.load(scratch.directory + "/schema.json"),
                                     schemaFile: scratch.directory + "/schema.json", directory: scratch.directory)
        #expect(unseen.schema == data.schema)
        let b = try readBatch(unseen)
        #expect(try b.singles("user_id") == [key("user", "stranger-9000")])
        #expect(try b.singles("item_id") == [key("item", "café")])
    }

    @Test func emptyFieldsAreMissingValues() throws {
        let scratch = TableScratch()
        let schema = #"""
            {"columns": {"cat": {"kind": "categorical"}, "shared": {"kind": "categorical", "table": "things"},
                         "num": {"kind": "numeric"}, "log": {"kind": "numeric", "transform": "log1p"},
                         "bucket": {"kind": "numeric", "buckets": [1, 10]}, "multi": {"kind": "multi"},
                         "y": {"kind": "label", "type": "binary"}}}
            """#
        let data = try scratch.open(schema: schema, data: "cat,shared,num,log,bucket,multi,y\n,,,,,,1\nv,w,2,3,4,p q,0\n")
        let batch = try readBatch(data)
        #expect(try batch.singles("cat") == [missing("cat"), key("cat", "v")])
        // The missing key is the table's, not the column's.
        #expect(try batch.singles("shared") == [missing("things"), key("things", "w")])
        #expect(try batch.denseColumn("num") == [0, 2])
        #expect(try batch.denseColumn("log") == [0, log1pFloat(3)])
        #expect(try batch.singles("bucket")[0] == missing("bucket"))
        #expect(try batch.singles("bucket")[1] != missing("bucket"))
        // The default separator is a space.
        #expect(try batch.bags("multi") == [[missing("multi")], [key("multi", "p"), key("multi", "q")]])
        #expect(try batch.labelColumn("y") == [1, 0])
    }

    @Test func splitsPartitionTheLines() throws {
        let scratch = TableScratch()
        let schema = #"{"columns": {"u": {"kind": "categorical"}, "i": {"kind": "categorical"}, "r": {"kind": "label"}}, "user": "u", "item": "i"}"#
        let text = "u,i,r\n" + (0..<40).map { "u\($0 % 5),i\($0 % 7),\($0 % 5 + 1)\n" }.joined()
        let data = try scratch.open(schema: schema, data: text, options: .init(protocol: .click))
        #expect(data.counts == [32, 4, 4])
        var items = Set<UInt64>()
        for split in Interactions.Split.allCases {
            let (n, _) = try readAll(data, split, batchSize: 7) { batch in
                // Threshold 4 of the click protocol: every click is 0 or 1, and the rating is
                // kept beside it.
                let clicks = try batch.labelColumn("click"), ratings = try batch.labelColumn("r")
                #expect(clicks.allSatisfy { $0 == 0 || $0 == 1 })
                #expect(zip(clicks, ratings).allSatisfy { $0 == ($1 >= 4 ? 1 : 0) && (1...5).contains($1) })
                items.formUnion(try batch.singles("i"))
            }
            #expect(n == data.counts[split.rawValue], "\(split.name)")
        }
        #expect(items.count == 7)
    }

    // MARK: Bad schemas

    static let badSchemas: [BadSchemaCase] = {
        let base = #""a": {"kind": "categorical"}, "b": {"kind": "numeric"}, "y": {"kind": "label"}"#
        func columns(_ a: String = #""a": {"kind": "categorical"}"#, _ more: String = "") -> String {
            #"{"columns": {\#(a), "b": {"kind": "numeric"}, "y": {"kind": "label"}}\#(more)}"#
        }
        func join(_ file: String, on: String = "a", _ cols: String) -> String {
            #", "joins": [{"file": "\#(file)", "on": "\#(on)", "side": "item", "columns": {\#(cols)}}]"#
        }
        return [
            .init(name: "not JSON", schema: #"{"columns": {"a": {"kind": "categorical"}"#, mentions: ["$SCHEMA", "not valid JSON"]),
            .init(name: "empty schema file", schema: "", mentions: ["$SCHEMA", "not valid JSON"]),
            .init(name: "column without kind", schema: #"{"columns": {"a": {"table": "t"}}}"#,
                  mentions: ["$SCHEMA", "columns.a.kind", "missing"]),
            .init(name: "unknown kind", schema: #"{"columns": {"a": {"kind": "text"}}}"#, mentions: ["$SCHEMA", "columns.a.kind", "text"]),
            .init(name: "buckets not a list", schema: #"{"columns": {"b": {"kind": "numeric", "buckets": "1,2"}}}"#,
                  mentions: ["$SCHEMA", "columns.b.buckets"]),
            .init(name: "column not in the header", schema: #"{"columns": {\#(base), "price": {"kind": "numeric"}}}"#,
                  mentions: ["$DATA", "'price'", "not in the header", "a, b, y"]),
            .init(name: "table name with a space", schema: columns(#""a": {"kind": "categorical", "table": "my table"}"#),
                  mentions: ["$DATA", "column 'a'", "table name 'my table'"]),
            .init(name: "table name with a slash", schema: columns(#""a": {"kind": "multi", "table": "../x"}"#),
                  mentions: ["$DATA", "column 'a'", "table name '../x'"]),
            .init(name: "empty table name", schema: columns(#""a": {"kind": "categorical", "table": ""}"#),
                  mentions: ["$DATA", "column 'a'", "table name ''"]),
            .init(name: "buckets descending", schema: #"{"columns": {"b": {"kind": "numeric", "buckets": [10, 5]}}}"#,
                  mentions: ["$DATA", "column 'b'", "ascending"]),
            .init(name: "buckets repeated", schema: #"{"columns": {"b": {"kind": "numeric", "buckets": [1, 1]}}}"#,
                  mentions: ["$DATA", "column 'b'", "ascending"]),
            .init(name: "separator of two bytes", schema: columns(#""a": {"kind": "multi", "separator": "||"}"#),
                  mentions: ["$DATA", "column 'a'", "one byte", "'||'"]),
            .init(name: "separator of one two-byte character", schema: columns(#""a": {"kind": "multi", "separator": "é"}"#),
                  mentions: ["$DATA", "column 'a'", "one byte"]),
            .init(name: "delimiter of two bytes", schema: columns(#""a": {"kind": "categorical"}"#, #", "delimiter": ",,""#),
                  mentions: ["$DATA", "delimiter", "one byte", "',,'"]),
            .init(name: "cross naming an unknown feature", schema: columns(#""a": {"kind": "categorical"}"#, #", "crosses": [["a", "nope"]]"#),
                  mentions: ["$FILE", "'nope'", "not a categorical feature"]),
            .init(name: "cross of one feature", schema: columns(#""a": {"kind": "categorical"}"#, #", "crosses": [["a"]]"#),
                  mentions: ["$FILE", "crosses 1 feature"]),
            .init(name: "user naming a numeric column", schema: columns(#""a": {"kind": "categorical"}"#, #", "user": "b""#),
                  mentions: ["$FILE", "user feature 'b'", "not a categorical feature"]),
            .init(name: "user naming a missing column", schema: columns(#""a": {"kind": "categorical"}"#, #", "user": "nobody""#),
                  mentions: ["$FILE", "user feature 'nobody'"]),
            .init(name: "item naming a multi-valued column", schema: columns(#""a": {"kind": "multi"}"#, #", "item": "a""#),
                  mentions: ["$FILE", "item feature 'a'", "one key per sample"]),
            .init(name: "label in a joined table", schema: columns(#""a": {"kind": "categorical"}"#, join("items.csv", #""score": {"kind": "label"}"#)),
                  files: ["items.csv": "a,score\n1,5\n"], mentions: ["$DIR/items.csv", "column 'score'", "joined table cannot hold a label"]),
            .init(name: "join on a column the interactions lack",
                  schema: columns(#""a": {"kind": "categorical"}"#, join("items.csv", on: "sku", #""color": {"kind": "categorical"}"#)),
                  files: ["items.csv": "sku,color\n1,red\n"], mentions: ["$DATA", "items.csv", "'sku'", "not a column", "a, b, y"]),
            .init(name: "join on a column the side table lacks",
                  schema: columns(#""a": {"kind": "categorical"}"#, join("items.csv", #""color": {"kind": "categorical"}"#)),
                  files: ["items.csv": "id,color\n1,red\n"], mentions: ["$DIR/items.csv", "'a'", "not a column", "id, color"]),
            .init(name: "join file missing", schema: columns(#""a": {"kind": "categorical"}"#, join("nothere.csv", #""c": {"kind": "categorical"}"#)),
                  mentions: ["$DIR/nothere.csv", "open"]),
            .init(name: "duplicated id in a join file",
                  schema: columns(#""a": {"kind": "categorical"}"#, join("items.csv", #""color": {"kind": "categorical"}"#)),
                  files: ["items.csv": "a,color\n1,red\n2,blue\n1,green\n"], mentions: ["$DIR/items.csv:4:", "'a'", "line 2"]),
            .init(name: "bad line in a join file",
                  schema: columns(#""a": {"kind": "categorical"}"#, join("items.csv", #""weight": {"kind": "numeric"}"#)),
                  files: ["items.csv": "a,weight\n1,2\n2,heavy\n"], mentions: ["$DIR/items.csv:3:", "'weight'", "'heavy'", "not a number"]),
            .init(name: "header naming a column twice", schema: columns(), data: "a,b,a,y\n1,2,3,1\n", mentions: ["$DATA", "'a' twice"]),
            .init(name: "side table header naming a column twice",
                  schema: columns(#""a": {"kind": "categorical"}"#, join("items.csv", #""c": {"kind": "categorical"}"#)),
                  files: ["items.csv": "a,c,c\n1,2,3\n"], mentions: ["$DIR/items.csv", "'c' twice"]),
            .init(name: "empty data file", schema: columns(), data: "", mentions: ["$DATA", "empty"]),
            .init(name: "unclosed quote in the header", schema: columns(), data: "\"a,b,y\n1,2,1\n", mentions: ["$DATA:1:", "quote"]),
        ]
    }()

    @Test(arguments: badSchemas)
    func badSchemaIsRefused(_ bad: BadSchemaCase) throws {
        let scratch = TableScratch()
        for (name, text) in bad.files { scratch.write(name, text) }
        let schemaPath = scratch.write("schema.json", bad.schema)
        let dataPath = scratch.write("data.csv", bad.data)
        let mentions = bad.mentions.map {
            $0 == "$FILE" ? $0 : $0.replacingOccurrences(of: "$DATA", with: dataPath)
                .replacingOccurrences(of: "$SCHEMA", with: schemaPath).replacingOccurrences(of: "$DIR", with: scratch.directory)
        }
        expectRefused(bad.name, mentioning: mentions, files: [dataPath, schemaPath]) {
            _ = try TabularData(path: dataPath, table: try TableSchema.load(schemaPath), schemaFile: schemaPath, directory: scratch.directory)
        }
    }

    @Test func headerOnlyDataHoldsNoSample() throws {
        let scratch = TableScratch()
        let schema = #"{"columns": {"u": {"kind": "categorical"}, "i": {"kind": "categorical"}}, "user": "u", "item": "i"}"#
        let path = scratch.directory + "/data.csv"
        expectRefused("header only", mentioning: [path, "no usable sample"]) {
            _ = try scratch.open(schema: schema, data: "u,i\n")
        }
    }

    // MARK: Bad lines

    static let lineSchema = #"""
        {"columns": {"user_id": {"kind": "categorical"}, "price": {"kind": "numeric"},
                     "click": {"kind": "label", "type": "binary"}, "rating": {"kind": "label", "type": "rating"}}}
        """#
    static let goodLine = "u1,1.5,1,4"

    static let badLines: [BadLineCase] = [
        .init(name: "too few fields", line: "u1,1.5,1", mentions: ["3 fields", "the header has 4"]),
        .init(name: "too many fields", line: "u1,1.5,1,4,extra", mentions: ["5 fields", "the header has 4"]),
        .init(name: "text in a numeric column", line: "u1,abc,1,4", mentions: ["column 2 'price'", "'abc'", "not a number"]),
        .init(name: "number with trailing text", line: "u1,1.5x,1,4", mentions: ["column 2 'price'", "'1.5x'", "not a number"]),
        .init(name: "not a finite number", line: "u1,nan,1,4", mentions: ["column 2 'price'", "'nan'", "not a number"]),
        .init(name: "a number beyond Float's range", line: "u1,1e39,1,4", mentions: ["column 2 'price'", "'1e39'", "within ±3.4e38"]),
        .init(name: "a rating beyond Float's range", line: "u1,1.5,1,-1e40", mentions: ["column 4 'rating'", "'-1e40'", "within ±3.4e38"]),
        .init(name: "binary label 2", line: "u1,1.5,2,4", mentions: ["column 3 'click'", "'2'", "not 0 or 1"]),
        .init(name: "binary label 0.5", line: "u1,1.5,0.5,4", mentions: ["column 3 'click'", "'0.5'", "not 0 or 1"]),
        .init(name: "empty binary label", line: "u1,1.5,,4", mentions: ["column 3 'click'", "''", "not 0 or 1"]),
        .init(name: "empty rating label", line: "u1,1.5,1,", mentions: ["column 4 'rating'", "''", "not a number"]),
        .init(name: "unclosed quote", line: "\"u1,1.5,1,4", mentions: ["quoted field does not close"]),
        .init(name: "unclosed quote at the end", line: "u1,1.5,1,\"4", mentions: ["quoted field does not close"]),
        .init(name: "text after a closing quote", line: "\"u1\"x,1.5,1,4", mentions: ["text follows its closing quote"]),
        .init(name: "line longer than 1 MiB", line: "u" + String(repeating: "x", count: 1 << 20) + ",1.5,1,4",
              mentions: ["longer than 1048576 bytes"]),
    ]

    /// Stop mode: read in order, the good lines before the bad one come first, then the error
    /// naming the file and line 4 (line 1 is the header). With a split, the scan meets the
    /// line when the data is opened.
    @Test(arguments: badLines, [false, true])
    func badLineStopsNamingFileAndLine(_ bad: BadLineCase, split: Bool) throws {
        let scratch = TableScratch()
        let text = ["user_id,price,click,rating", Self.goodLine, Self.goodLine, bad.line, Self.goodLine].joined(separator: "\n") + "\n"
        let path = scratch.directory + "/data.csv"
        let mentions = ["\(path):4:", "malformed line"] + bad.mentions
        if split {
            expectRefused("\(bad.name), opening", mentioning: mentions) {
                _ = try scratch.open(schema: Self.lineSchema, data: text, options: .init(splitting: .random([0.5, 0.5])))
            }
            return
        }
        let data = try scratch.open(schema: Self.lineSchema, data: text)
        var source = try data.source(.train, shuffleBlock: 0, seed: 1)
        let batch = Batch(schema: data.schema)
        #expect(try source.next(10, into: batch) == 2)
        for _ in 0..<2 {
            // The error stays: the reader does not move past the line.
            expectRefused("\(bad.name), reading", mentioning: mentions) { _ = try source.next(10, into: batch) }
        }
    }

    /// Skip mode: the same lines are left out and counted, and the good ones all read.
    @Test(arguments: [false, true])
    func skipModeTrainsOnTheGoodLines(split: Bool) throws {
        let scratch = TableScratch()
        var lines = ["user_id,price,click,rating", Self.goodLine]
        for bad in Self.badLines { lines += [bad.line, Self.goodLine] }
        // Empty lines (a blank last line is common) are no samples and no malformed lines.
        lines += ["", ""]
        let goods = Self.badLines.count + 1
        var options = TabularData.Options(malformedLines: .skip)
        if split { options.splitting = .random([0.5, 0.5]) }
        let data = try scratch.open(schema: Self.lineSchema, data: lines.joined(separator: "\r\n"), options: options)
        if split {
            #expect(data.counts.reduce(0, +) == goods)
            var total = 0
            for s in [Interactions.Split.train, .test] {
                let (n, source) = try readAll(data, s, batchSize: 4)
                #expect(n == data.counts[s.rawValue])
                #expect(source.skippedLines == Int64(Self.badLines.count), "\(s.name)")
                total += n
            }
            #expect(total == goods)
        } else {
            let (n, source) = try readAll(data, batchSize: 4) { batch in
                let users = try batch.singles("user_id"), ratings = try batch.labelColumn("rating")
                #expect(users.allSatisfy { $0 == key("user_id", "u1") })
                #expect(ratings.allSatisfy { $0 == 4 })
            }
            #expect(n == goods)
            #expect(source.skippedLines == Int64(Self.badLines.count))
            // The last "" only ends the line before it with a line break.
            #expect(source.linesRead == Int64(lines.count - 1))
        }
    }

    // MARK: strata train

    /// Expects a refusal: a clean non-zero exit with an "Error:" line holding every fragment.
    private func expectCommandRefusal(_ result: StrataCommand.Result, mentioning fragments: [String], _ what: String,
                                      sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(result.status != -1 && result.status != 0 && result.status < 128,
                "\(what): status \(result.status): \(result.lines.suffix(4))", sourceLocation: sourceLocation)
        let error = result.error ?? ""
        #expect(!error.isEmpty, "\(what): no 'Error:' line: \(result.lines.prefix(4))", sourceLocation: sourceLocation)
        for f in fragments {
            #expect(error.contains(f), "\(what): error does not mention '\(f)': \(error)", sourceLocation: sourceLocation)
        }
    }

    static let ratingsSchema = #"""
        {"columns": {"user_id": {"kind": "categorical", "table": "user"}, "item_id": {"kind": "categorical", "table": "item"},
                     "rating": {"kind": "label", "type": "rating"}, "genres": {"kind": "multi", "separator": "|"},
                     "price": {"kind": "numeric", "transform": "log1p"}}DETAILS}
        """#

    /// `count` lines of ratings 1 to 5 by 6 users of 9 items.
    static func ratingLines(_ count: Int) -> [String] {
        var rng = SplitMix64(seed: 5)
        let genres = ["drama", "comedy", "noir"]
        return (0..<count).map { _ in
            "u\(rng.next() % 6),i\(rng.next() % 9),\(rng.next() % 5 + 1),\(genres[Int(rng.next() % 3)])|\(genres[Int(rng.next() % 3)]),\(rng.next() % 100)"
        }
    }

    @Test func trainRefusesTableDataWithoutASchema() throws {
        let scratch = TableScratch()
        let path = scratch.write("data.csv", "user_id,item_id,rating\nu1,i1,5\n")
        let result = try StrataCommand.run(["train", "--data", "table:" + path, "--store", scratch.directory + "/store"])
        expectCommandRefusal(result, mentioning: ["--schema"], "no --schema")
    }

    @Test func trainRefusesAMissingSchemaFile() throws {
        let scratch = TableScratch()
        let path = scratch.write("data.csv", "user_id,item_id,rating\nu1,i1,5\n")
        let schema = scratch.directory + "/no-such-schema.json"
        let result = try StrataCommand.run(["train", "--data", "table:" + path, "--schema", schema, "--store", scratch.directory + "/store"])
        expectCommandRefusal(result, mentioning: [schema], "missing schema file")
    }

    @Test func trainRefusesTopKWithoutUserAndItem() throws {
        let scratch = TableScratch()
        let path = scratch.write("data.csv", "user_id,item_id,rating,genres,price\n" + Self.ratingLines(20).map { $0 + "\n" }.joined())
        let schema = scratch.write("schema.json", Self.ratingsSchema.replacingOccurrences(of: "DETAILS", with: ""))
        let result = try StrataCommand.run(["train", "--data", "table:" + path, "--schema", schema, "--protocol", "topk",
                                            "--store", scratch.directory + "/store", "--steps", "1"])
        expectCommandRefusal(result, mentioning: [path, "user and item"], "topk without user and item")
    }

    @Test func trainRefusesABadSplit() throws {
        let scratch = TableScratch()
        let path = scratch.write("data.csv", "user_id,item_id,rating,genres,price\n" + Self.ratingLines(20).map { $0 + "\n" }.joined())
        let schema = scratch.write("schema.json", Self.ratingsSchema.replacingOccurrences(of: "DETAILS", with: #", "user": "user_id", "item": "item_id""#))
        let result = try StrataCommand.run(["train", "--data", "table:" + path, "--schema", schema, "--protocol", "click",
                                            "--split", "0.8:x", "--store", scratch.directory + "/store", "--steps", "1"])
        expectCommandRefusal(result, mentioning: ["--split", "0.8:x"], "--split 0.8:x")
    }

    /// A small table trains with the deep model under the click protocol (rating >= 4 is a
    /// click), and the split it reports covers the file's data lines; with bad lines and
    /// --on-malformed skip, the good ones.
    @Test(arguments: [false, true])
    func trainDeepModelOnASmallTableWithTheClickProtocol(withBadLines: Bool) throws {
        let scratch = TableScratch()
        var lines = Self.ratingLines(60)
        if withBadLines {
            lines.insert("u1,i1", at: 7)
            lines.insert("u2,i2,five,drama,3", at: 20)
            lines.insert("\"u3,i3,4,drama,3", at: 41)
        }
        let path = scratch.write("ratings.csv", "user_id,item_id,rating,genres,price\n" + lines.map { $0 + "\n" }.joined())
        let schema = scratch.write("schema.json", Self.ratingsSchema.replacingOccurrences(of: "DETAILS", with: #", "user": "user_id", "item": "item_id""#))
        let result = try StrataCommand.run(
            ["train", "--data", "table:" + path, "--schema", schema, "--model", "deep", "--protocol", "click",
             "--steps", "5", "--eval-samples", "0", "--batch-size", "4", "--embedding-dim", "4", "--mlp", "8",
             "--store", scratch.directory + "/store"] + (withBadLines ? ["--on-malformed", "skip"] : []))
        try #require(result.status == 0, "\(result.output)")
        let line = try #require(result.lines.first { $0.hasPrefix("click protocol: ") }, "\(result.output)")
        let numbers = line.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        try #require(numbers.count == 3, "\(line)")
        #expect(numbers.reduce(0, +) == 60, "\(line)")
        #expect(numbers.allSatisfy { $0 > 0 }, "\(line)")
        #expect(line.hasSuffix("\(numbers[0]) training, \(numbers[1]) validation, \(numbers[2]) test lines"), "\(line)")
    }

    // MARK: Bounds

    /// A multi-valued field holds at most 1024 values, and a cross of bags at most 1024
    /// combinations a line: beyond, the line is malformed and the message says which.
    @Test func bagsAndCrossesAreBounded() throws {
        let scratch = TableScratch()
        let schema = #"""
            {"columns": {"u": {"kind": "categorical"}, "tags": {"kind": "multi", "separator": "|"},
                         "more": {"kind": "multi", "separator": "|"}, "y": {"kind": "label", "type": "binary"}},
             "crosses": [["tags", "more"]]}
            """#
        let many = (0..<1025).map { "t\($0)" }.joined(separator: "|")
        let half = (0..<33).map { "m\($0)" }.joined(separator: "|")   // 33 × 32 = 1056 combinations
        let fine = (0..<32).map { "m\($0)" }.joined(separator: "|")    // 32 × 32 = 1024
        let thirtyTwo = (0..<32).map { "t\($0)" }.joined(separator: "|")
        let ok = try scratch.open(schema: schema, data: "u,tags,more,y\nu1,\(thirtyTwo),\(fine),1\n")
        #expect(try readAll(ok).rows == 1)
        for (line, fragment) in [("u1,\(many),a,1", "column 2 'tags' holds more than 1024 values"),
                                 ("u1,\(thirtyTwo),\(half),1", "cross 'tags_x_more' would hold 1056 combinations")] {
            expectRefused(fragment, mentioning: ["data.csv:2:", fragment]) {
                _ = try readAll(try scratch.open(schema: schema, data: "u,tags,more,y\n\(line)\n"))
            }
        }
    }

    /// A resume checks the side tables too: an edited one is other data.
    @Test func editedSideTableIsOtherData() throws {
        let scratch = TableScratch()
        scratch.write("items.csv", "item,color\ni1,red\n")
        let schema = #"""
            {"columns": {"item": {"kind": "categorical"}, "y": {"kind": "label", "type": "binary"}},
             "joins": [{"file": "items.csv", "on": "item", "side": "item", "columns": {"color": {"kind": "categorical"}}}]}
            """#
        let before = try scratch.open(schema: schema, data: "item,y\ni1,1\n")
        let identity = try before.source(.train, shuffleBlock: 0, seed: 1).identity
        // The same size, another time: identities compare size and modification time.
        usleep(20_000)
        scratch.write("items.csv", "item,color\ni1,tan\n")
        let after = try scratch.open(schema: schema, data: "item,y\ni1,1\n")
        #expect(try after.source(.train, shuffleBlock: 0, seed: 1).identity != identity)
    }
}
