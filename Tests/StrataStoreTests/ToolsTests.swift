// The offline tools (`strata info`, `inspect`, `get`, `export`, `import`, `verify`), run as
// a user runs them, against stores built here through the library with known contents.
// Exports are loaded by the real numpy and safetensors packages (from the virtual environment
// tools/setup.sh makes) and compared with the library's rows value by value.
import Foundation
import Testing
@_spi(Testing) import StrataStore
import StrataTestSupport

@Suite struct ToolsTests {
    static let strata = productsDirectory() + "/strata"

    static func run(_ arguments: [String]) throws -> (status: Int32, lines: [String]) {
        let child = try ChildProcess(strata, arguments)
        let lines = child.readAll(timeout: 600)
        return (try child.wait(), lines)
    }

    /// The JSON object a command printed on its last `{` line.
    static func json(_ lines: [String]) throws -> [String: Any] {
        let line = try #require(lines.last { $0.hasPrefix("{") }, "no JSON in \(lines.suffix(5))")
        return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    }

    /// The Python of tools/setup.sh's virtual environment, with numpy and safetensors.
    static var python: String {
        let venv = ProcessInfo.processInfo.environment["STRATA_PYTHON_VENV"] ?? NSHomeDirectory() + "/.cache/strata/python"
        return venv + "/bin/python"
    }

    static let spec = TableSpec(dimension: 12, initializer: .init(.normal(mean: 0, standardDeviation: 0.1), seed: 9),
                                optimizer: .adagrad(learningRate: 0.05))
    static func key(_ n: Int) -> UInt64 { UInt64(n) &* 0x9E37_79B9_7F4A_7C15 }
    static func gradients(_ keys: [UInt64], salt: UInt64) -> [Float] {
        keys.flatMap { k in (0..<12).map { j in Float(Int((k &* 7 &+ UInt64(j) &* 13 &+ salt) % 101) - 50) / 100 } }
    }

    /// A closed store with table "emb": 3000 rows updated once, 1000 of them twice, 50 removed,
    /// checkpointed twice (generations 1 and 2). Returns the reference and the removed keys.
    static func makeStore(_ path: String, options: Store.Options = .small(TierBudget(hotBytes: 64 << 10, warmBytes: 0)))
        throws -> (reference: ReferenceTable, keys: [UInt64], removed: [UInt64])
    {
        var reference = ReferenceTable(spec: spec)
        let store = try Store(path: path, options: options)
        let table = try store.createTable("emb", spec)
        let keys = (0..<3000).map(key)
        try table.applyGradients(keys, gradients(keys, salt: 1))
        reference.apply(keys, gradients(keys, salt: 1))
        try store.checkpoint()
        let again = Array(keys[0..<1000])
        try table.applyGradients(again, gradients(again, salt: 2))
        reference.apply(again, gradients(again, salt: 2))
        let removed = Array(keys[2000..<2050])
        try table.remove(removed)
        reference.remove(removed)
        try store.checkpoint()
        try store.close()
        return (reference, keys.filter { !removed.contains($0) }, removed)
    }

    // MARK: info, inspect, get

    @Test func infoInspectAndGetReportWhatTheStoreHolds() throws {
        let directory = temporaryDirectory("strata-tools-info")
        defer { removeDirectory(directory) }
        let path = directory + "/store"
        let (reference, keys, removed) = try Self.makeStore(path)

        let info = try Self.run(["info", path, "--json"])
        #expect(info.status == 0, "\(info.lines.suffix(5))")
        let infoObject = try Self.json(info.lines)
        let tables = try #require(infoObject["tables"] as? [[String: Any]])
        #expect(tables.count == 1)
        #expect(tables.first?["rows"] as? Int == keys.count)
        #expect(tables.first?["dimension"] as? Int == 12)
        let checkpoint = try #require(infoObject["checkpoint"] as? [String: Any])
        #expect(checkpoint["generation"] as? Int == 2)
        // The stored record carries the checkpoint's duration (it read 0 before).
        let seconds = try #require(checkpoint["duration_seconds"] as? Double)
        #expect(seconds > 0 && seconds < 600, "duration_seconds \(seconds)")
        // Traffic of the process that wrote the store survives it.
        #expect((tables.first?["accesses"] as? Int ?? 0) >= 4000, "\(tables)")
        let text = try Self.run(["info", path])
        #expect(text.status == 0 && text.lines.contains { $0.hasPrefix("emb") && $0.contains("adagrad") }, "\(text.lines)")

        let inspect = try Self.run(["inspect", path, "emb", "--json"])
        #expect(inspect.status == 0, "\(inspect.lines.suffix(5))")
        let object = try Self.json(inspect.lines)
        let counts = try #require(object["update_count_histogram"] as? [[String: Any]])
        let norms = try #require(object["norm_histogram"] as? [[String: Any]])
        #expect(counts.reduce(0) { $0 + ($1["count"] as? Int ?? 0) } == keys.count)
        #expect(norms.reduce(0) { $0 + ($1["count"] as? Int ?? 0) } == keys.count)
        // 1000 rows were updated twice, the rest once: bins [1] and [2,3].
        let twice = counts.first { ($0["low"] as? Double) == 2 }?["count"] as? Int
        #expect(twice == 1000, "\(counts)")
        let inspectText = try Self.run(["inspect", path, "emb"])
        #expect(inspectText.lines.contains { $0.hasPrefix("update counts") } && inspectText.lines.contains { $0.hasPrefix("row L2 norms") })

        let written = keys[5], never: UInt64 = 12345
        let get = try Self.run(["get", path, "emb", "\(written)", "\(removed[0])", "0x3039", "--json"])
        #expect(get.status == 0, "\(get.lines.suffix(5))")
        let rows = get.lines.filter { $0.hasPrefix("{") }.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        try #require(rows.count == 3)
        let want = reference.row(written)
        #expect(rows[0]["written"] as? Bool == true)
        #expect((rows[0]["values"] as? [Double])?.map(Float.init) == want.values)
        #expect((rows[0]["optimizer_state"] as? [Double])?.map(Float.init) == want.state)
        #expect(rows[0]["update_count"] as? Int == 2 && rows[0]["change_generation"] as? Int == 2)
        for row in rows[1...] {
            #expect(row["written"] as? Bool == false)
        }
        #expect((rows[2]["values"] as? [Double])?.map(Float.init) == reference.initialRow(never).values)
        let getText = try Self.run(["get", path, "emb", "\(never)"])
        #expect(getText.lines.contains { $0.contains("never written") }, "\(getText.lines)")
    }

    /// The tools open stores without a warm tier; a store closed cleanly by a process that had
    /// one keeps its warm rows across a tool's visit.
    @Test func aToolBetweenTwoOpensLeavesTheWarmTierInPlace() throws {
        let directory = temporaryDirectory("strata-tools-warm")
        defer { removeDirectory(directory) }
        let path = directory + "/store"
        let options = Store.Options.small(TierBudget(hotBytes: 8 << 10, warmBytes: 256 << 10))
        _ = try Self.makeStore(path, options: options)
        func warmRows() throws -> Int {
            let store = try Store(path: path, options: options)
            defer { try? store.close() }
            // Reads move rows into warm; the clean close saves them.
            _ = try store.table("emb").lookup((0..<1500).map(Self.key))
            return try store.table("emb").statistics().rows.warm
        }
        let before = try warmRows()
        try #require(before > 500, "the warm tier holds \(before) rows")
        let reopened = try Store(path: path, options: options)
        let kept = try reopened.table("emb").statistics().rows.warm
        try reopened.close()
        #expect(kept == before, "a plain reopen kept \(kept) of \(before) warm rows")
        for arguments in [["info", path], ["export", path, "emb", "--format", "npy", "--out", directory + "/x"], ["verify", path]] {
            let run = try Self.run(arguments)
            #expect(run.status == 0, "\(run.lines.suffix(3))")
        }
        let after = try Store(path: path, options: options)
        #expect(try after.table("emb").statistics().rows.warm == before, "the tools dropped the warm tier")
        #expect(after.openReport.isEmpty, "\(after.openReport)")
        try after.close()
    }

    // MARK: Bad input

    @Test func badInputIsRefusedWithOneLineReasons() throws {
        let directory = temporaryDirectory("strata-tools-bad")
        defer { removeDirectory(directory) }
        let path = directory + "/store"
        _ = try Self.makeStore(path)
        let file = directory + "/a-file"
        FileManager.default.createFile(atPath: file, contents: Data([1]))

        func expectFailure(_ arguments: [String], _ says: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let (status, lines) = try Self.run(arguments)
            #expect(status != 0, "\(arguments) succeeded: \(lines.suffix(3))", sourceLocation: sourceLocation)
            #expect(lines.contains { $0.hasPrefix("Error:") && $0.contains(says) }, "\(arguments): \(lines)", sourceLocation: sourceLocation)
        }
        try expectFailure(["info", directory + "/missing"], "no Strata store")
        try expectFailure(["inspect", directory + "/missing", "emb"], "no Strata store")
        try expectFailure(["inspect", path, "nope"], "no table 'nope'")
        try expectFailure(["get", path, "nope", "1"], "no table 'nope'")
        try expectFailure(["get", path, "emb", "12x"], "'12x' is not a key")
        try expectFailure(["get", path, "emb", "18446744073709551616"], "is not a key")
        try expectFailure(["export", path, "emb", "--format", "npy", "--out", file + "/sub"], "cannot create")
        try expectFailure(["export", path, "emb", "--format", "safetensors", "--out", file + "/x.safetensors"], "cannot write")
        try expectFailure(["export", path, "emb", "--format", "csv", "--out", directory + "/x"], "--format")
        try expectFailure(["export", path, "emb", "--format", "npy", "--out", directory + "/x", "--since", "9"], "last checkpoint is 2")
        try expectFailure(["import", path, "emb", "--from", directory + "/nothing"], "not a .safetensors file")

        // An import whose rows have the wrong width, or the wrong element type.
        let npy = directory + "/wrong"
        let script = """
            import numpy as np, os, sys
            d = sys.argv[1]
            os.makedirs(d + "/narrow", exist_ok=True); os.makedirs(d + "/doubles", exist_ok=True)
            np.save(d + "/narrow/keys.npy", np.arange(5, dtype=np.uint64))
            np.save(d + "/narrow/values.npy", np.zeros((5, 7), dtype=np.float32))
            np.save(d + "/doubles/keys.npy", np.arange(5, dtype=np.uint64))
            np.save(d + "/doubles/values.npy", np.zeros((5, 12), dtype=np.float64))
            """
        let py = try ChildProcess(Self.python, ["-c", script, npy])
        let pyLines = py.readAll()
        try #require(try py.wait() == 0, "python: \(pyLines) (run tools/setup.sh)")
        try expectFailure(["import", path, "emb", "--from", npy + "/narrow"], "has dimension 12")
        try expectFailure(["import", path, "emb", "--from", npy + "/doubles"], "<f8")
    }

    /// Files crafted to break a reader's arithmetic: each import fails with exit status 1 and
    /// an `Error:` line naming the file, never a signal (each trapped before its fix).
    @Test func craftedTableFilesAreRefusedNotCrashed() throws {
        let directory = temporaryDirectory("strata-tools-crafted")
        defer { removeDirectory(directory) }
        let path = directory + "/store"
        _ = try Self.makeStore(path)

        func npy(_ shape: String, descr: String = "<u8", data: Int = 0) -> Data {
            var dict = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shape), }"
            dict += String(repeating: " ", count: (64 - (10 + dict.utf8.count + 1) % 64) % 64) + "\n"
            let n = dict.utf8.count
            return Data([0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(n & 0xFF), UInt8(n >> 8)] + Array(dict.utf8)
                        + [UInt8](repeating: 0, count: data))
        }
        func safetensors(length: UInt64? = nil, _ header: String, data: Int = 0) -> Data {
            let bytes = Array(header.utf8)
            return Data(withUnsafeBytes(of: (length ?? UInt64(bytes.count)).littleEndian) { Array($0) } + bytes
                        + [UInt8](repeating: 0, count: data))
        }
        let goodValues = npy("(2, 12)", descr: "<f4", data: 96)
        var cases: [(name: String, files: [String: Data], says: String)] = [
            ("length-max.safetensors", ["": safetensors(length: .max, "{}")], "header length"),
            ("length-2-63.safetensors", ["": safetensors(length: 1 << 63 | 5, "{}")], "header length"),
            ("shape-overflow.safetensors", ["": safetensors(#"""
                {"keys":{"dtype":"U64","shape":[4611686018427387904],"data_offsets":[0,8]},
                 "values":{"dtype":"F32","shape":[1,12],"data_offsets":[8,56]}}
                """#, data: 56)], "larger than any file"),
            ("negative-offsets.safetensors", ["": safetensors(#"""
                {"keys":{"dtype":"U64","shape":[1],"data_offsets":[-8,0]},
                 "values":{"dtype":"F32","shape":[1,12],"data_offsets":[0,48]}}
                """#, data: 48)], "data_offsets"),
            ("negative-shape.safetensors", ["": safetensors(#"""
                {"keys":{"dtype":"U64","shape":[-1],"data_offsets":[0,0]},
                 "values":{"dtype":"F32","shape":[1,12],"data_offsets":[0,48]}}
                """#, data: 48)], "negative dimension"),
        ]
        for (name, shape) in [("close-before-open", ")2, (1"), ("negative", "(-5,)"),
                              ("overflow", "(4611686018427387904,)"), ("not-a-number", "(2, x)")] {
            cases.append(("npy-" + name, ["keys.npy": npy(shape, data: 16), "values.npy": goodValues],
                          name == "overflow" ? "larger than any file" : name == "negative" ? "negative dimension"
                              : name == "not-a-number" ? "not a whole number" : "no 'shape'"))
        }
        cases.append(("npy-values-overflow", ["keys.npy": npy("(2,)", data: 16),
                                              "values.npy": npy("(2, 2305843009213693952)", descr: "<f4")], "larger than any file"))
        for c in cases {
            let target = directory + "/" + c.name
            if c.files.keys.contains("") {
                FileManager.default.createFile(atPath: target, contents: c.files[""])
            } else {
                try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
                for (file, data) in c.files { FileManager.default.createFile(atPath: target + "/" + file, contents: data) }
            }
            let (status, lines) = try Self.run(["import", path, "crafted", "--from", target])
            #expect(status == 1, "\(c.name): status \(status): \(lines.suffix(3))")
            #expect(lines.contains { $0.hasPrefix("Error:") && $0.contains(c.name) && $0.contains(c.says) },
                    "\(c.name): \(lines.suffix(3))")
        }
    }

    // MARK: export to numpy and safetensors, and back

    @Test func exportsLoadInNumpyAndSafetensorsAndRoundTripBitForBit() throws {
        let directory = temporaryDirectory("strata-tools-export")
        defer { removeDirectory(directory) }
        let path = directory + "/store"
        let (reference, keys, _) = try Self.makeStore(path)
        let sorted = keys.sorted()

        // What numpy must find, as raw little-endian bytes.
        var expected: [UInt8] = []
        for key in sorted { withUnsafeBytes(of: key.littleEndian) { expected += $0 } }
        let values = sorted.flatMap { reference.row($0).values }
        let state = sorted.flatMap { reference.row($0).state }
        let counts = sorted.map { reference.row($0).updateCount }
        values.withUnsafeBytes { expected += $0 }
        state.withUnsafeBytes { expected += $0 }
        counts.withUnsafeBytes { expected += $0 }
        let expectedPath = directory + "/expected.bin"
        FileManager.default.createFile(atPath: expectedPath, contents: Data(expected))

        for (format, out) in [("npy", directory + "/npy"), ("safetensors", directory + "/emb.safetensors"), ("tsv", directory + "/tsv")] {
            var arguments = ["export", path, "emb", "--format", format, "--out", out, "--json", "--batch-size", "700"]
            if format != "tsv" { arguments.append("--with-state") }
            let (status, lines) = try Self.run(arguments)
            #expect(status == 0, "\(format): \(lines.suffix(5))")
            #expect(try Self.json(lines)["rows"] as? Int == keys.count)
        }
        let script = """
            import numpy as np, sys, csv
            from safetensors.numpy import load_file
            d, n, dim, st = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
            raw = open(d + "/expected.bin", "rb").read()
            o = 0
            keys = np.frombuffer(raw, dtype="<u8", count=n, offset=o); o += 8 * n
            values = np.frombuffer(raw, dtype="<f4", count=n * dim, offset=o).reshape(n, dim); o += 4 * n * dim
            state = np.frombuffer(raw, dtype="<f4", count=n * st, offset=o).reshape(n, st); o += 4 * n * st
            counts = np.frombuffer(raw, dtype="<u8", count=n, offset=o)
            def same(name, got, want):
                ok = got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got.view(np.uint8), want.view(np.uint8))
                print(("ok " if ok else "MISMATCH ") + name + " " + str(got.dtype) + " " + str(got.shape))
            for name, want in [("keys", keys), ("values", values), ("state", state), ("update_counts", counts)]:
                same("npy " + name, np.load(d + "/npy/" + name + ".npy"), want)
            t = load_file(d + "/emb.safetensors")
            for name, want in [("keys", keys), ("values", values), ("state", state), ("update_counts", counts)]:
                same("safetensors " + name, t[name], want)
            vec = np.loadtxt(d + "/tsv/vectors.tsv", delimiter="\\t", dtype=np.float32, ndmin=2)
            meta = np.array([int(l) for l in open(d + "/tsv/metadata.tsv")], dtype=np.uint64)
            same("tsv values", vec, values)
            same("tsv keys", meta, keys)
            """
        let py = try ChildProcess(Self.python, ["-c", script, directory, "\(sorted.count)", "12", "\(Self.spec.optimizer.stateCount(dimension: 12))"])
        let out = py.readAll()
        #expect(try py.wait() == 0, "python failed (run tools/setup.sh): \(out.suffix(8))")
        #expect(out.filter { $0.hasPrefix("ok ") }.count == 10, "\(out)")
        #expect(!out.contains { $0.hasPrefix("MISMATCH") }, "\(out)")

        // Export, import into a new store, export again: the same bytes.
        for (format, from) in [("npy", directory + "/npy"), ("safetensors", directory + "/emb.safetensors"), ("tsv", directory + "/tsv")] {
            let copy = directory + "/copy-\(format)"
            let imported = try Self.run(["import", copy, "emb", "--from", from, "--json", "--batch-size", "1000", "--checkpoint-rows", "1500"])
            #expect(imported.status == 0, "\(format): \(imported.lines.suffix(5))")
            #expect(try Self.json(imported.lines)["rows"] as? Int == keys.count)
            let again = directory + "/again-\(format)"
            let withState = format != "tsv"
            let exported = try Self.run(["export", copy, "emb", "--format", "npy", "--out", again] + (withState ? ["--with-state"] : []))
            #expect(exported.status == 0, "\(format): \(exported.lines.suffix(5))")
            for name in ["keys", "values"] + (withState ? ["state", "update_counts"] : []) {
                let a = FileManager.default.contents(atPath: directory + "/npy/\(name).npy")
                let b = FileManager.default.contents(atPath: again + "/\(name).npy")
                #expect(a != nil && a == b, "\(format) round trip: \(name).npy differs")
            }
            // The copy's table has the original's spec (from the export's metadata).
            let store = try Store(path: copy, options: .small(TierBudget(hotBytes: 64 << 10, warmBytes: 0)))
            #expect(try store.table("emb").spec == Self.spec, "\(format)")
            try store.close()
        }
    }

    // MARK: Delta export

    @Test func deltaExportHoldsExactlyTheChangedAndRemovedKeys() throws {
        let directory = temporaryDirectory("strata-tools-delta")
        defer { removeDirectory(directory) }
        let path = directory + "/store"
        // A hot tier of 40 rows, so that the reads below move rows between tiers.
        let options = Store.Options.small(TierBudget(hotBytes: 40 * 160, warmBytes: 0))
        let (_, keys, removedBefore) = try Self.makeStore(path, options: options)
        let full = try Self.run(["export", path, "emb", "--format", "npy", "--out", directory + "/full"])
        try #require(full.status == 0, "\(full.lines)")
        let store = try Store(path: path, options: options)
        let table = try store.table("emb")
        let changed = Array(keys[100..<140]) + (5000..<5020).map(Self.key)
        try table.applyGradients(changed, Self.gradients(changed, salt: 3))
        let removed = Array(keys[2500..<2510])
        try table.remove(removed)
        // Rows read (moved to hot and out again) but not changed are not in the delta.
        for start in stride(from: 1000, to: 1800, by: 100) { _ = try table.lookup(Array(keys[start..<(start + 100)])) }
        // A key removed before and written again is a change, not a deletion.
        try table.applyGradients([removedBefore[0]], Self.gradients([removedBefore[0]], salt: 4))
        try store.checkpoint()
        try store.close()

        let out = directory + "/delta.safetensors"
        let (status, lines) = try Self.run(["export", path, "emb", "--format", "safetensors", "--out", out, "--since", "2", "--json"])
        #expect(status == 0, "\(lines.suffix(5))")
        #expect(try Self.json(lines)["deleted_keys"] as? Int == removed.count)
        let script = """
            import sys
            from safetensors.numpy import load_file
            t = load_file(sys.argv[1])
            print("keys " + " ".join(str(k) for k in t["keys"]))
            print("deleted " + " ".join(str(k) for k in t["deleted_keys"]))
            """
        let py = try ChildProcess(Self.python, ["-c", script, out])
        let printed = py.readAll()
        #expect(try py.wait() == 0, "\(printed)")
        func keysOn(_ prefix: String) -> Set<UInt64> {
            Set((printed.first { $0.hasPrefix(prefix) } ?? "").split(separator: " ").dropFirst().compactMap { UInt64($0) })
        }
        #expect(keysOn("keys ") == Set(changed + [removedBefore[0]]))
        #expect(keysOn("deleted") == Set(removed))
        // A copy made from the full export, then the delta: the table as it is now.
        let copy = directory + "/copy"
        for from in [directory + "/full", out] {
            let imported = try Self.run(["import", copy, "emb", "--from", from])
            #expect(imported.status == 0, "\(imported.lines)")
        }
        for (store, name) in [(path, "now"), (copy, "copied")] {
            let exported = try Self.run(["export", store, "emb", "--format", "npy", "--out", directory + "/" + name])
            #expect(exported.status == 0, "\(exported.lines)")
        }
        for file in ["keys.npy", "values.npy"] {
            let a = FileManager.default.contents(atPath: directory + "/now/" + file)
            #expect(a != nil && a == FileManager.default.contents(atPath: directory + "/copied/" + file),
                    "full export + delta applied to a copy: \(file) differs")
        }
        // Since 1: also what checkpoint 2 changed and removed (minus the key written again).
        let all = try Self.run(["export", path, "emb", "--format", "npy", "--out", directory + "/since1", "--since", "1", "--json"])
        #expect(try Self.json(all.lines)["rows"] as? Int == Set(changed + Array(keys[0..<1000]) + [removedBefore[0]]).count)
        #expect(try Self.json(all.lines)["deleted_keys"] as? Int == removed.count + removedBefore.count - 1)
    }

    // MARK: verify

    @Test func verifyFindsAndNamesACorruptedRecord() throws {
        let directory = temporaryDirectory("strata-tools-verify")
        defer { removeDirectory(directory) }
        let path = directory + "/store"
        let (_, keys, _) = try Self.makeStore(path)
        let clean = try Self.run(["verify", path])
        #expect(clean.status == 0, "\(clean.lines)")
        #expect(clean.lines.contains { $0.hasPrefix("ok: 1 tables, \(keys.count) rows") }, "\(clean.lines)")

        let victim = keys[1234]
        var record = try #require(try FaultKit.record(path, table: 1, key: victim))
        record[record.count - 3] ^= 0x40
        try FaultKit.setRecord(path, table: 1, key: victim, record)
        let (status, lines) = try Self.run(["verify", path])
        #expect(status == 1, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("problem:") && $0.contains("rows.mdb") && $0.contains("table 'emb'") && $0.contains("key \(victim)") },
                "\(lines)")
        #expect(lines.last == "1 problem in \(path)", "\(lines)")
    }

    // MARK: Memory

    /// An export of a table 10 times larger than the memory budget keeps its resident memory
    /// within the budget: the export's high-water mark minus that of an export of a tiny table
    /// from a store opened the same way is at most the budget (hot rows, LMDB pages mapped)
    /// plus the batch buffers.
    @Test func exportOfATableLargerThanItsBudgetStaysWithinIt() throws {
        let directory = temporaryDirectory("strata-tools-memory")
        defer { removeDirectory(directory) }
        let path = directory + "/store"
        let spec = TableSpec(dimension: 64, optimizer: .sgd(learningRate: 0.1))
        let rows = 250_000
        do {
            var options = Store.Options.small(TierBudget(hotBytes: 1 << 20, warmBytes: 0))
            options.mapResidentBytes = 4 << 20
            let store = try Store(path: path, options: options)
            let big = try store.createTable("big", spec)
            let tiny = try store.createTable("tiny", spec)
            for start in stride(from: 0, to: rows, by: 5000) {
                let keys = (start..<(start + 5000)).map(Self.key)
                try big.applyGradients(keys, keys.flatMap { k in (0..<64).map { Float((k &>> UInt64($0 % 60)) & 0xFF) / 256 } })
                if start % 20_000 == 0 { try store.checkpoint() }
            }
            try tiny.applyGradients([1, 2, 3], [Float](repeating: 0.5, count: 192))
            try store.checkpoint()
            try store.close()
        }
        let hotMB = 1, mapMB = 4, batch = 4096
        func export(_ table: String) throws -> (peak: Int, rows: Int) {
            let (status, lines) = try Self.run(["export", path, table, "--format", "npy", "--out", directory + "/\(table)", "--json",
                                                "--hot-mb", "\(hotMB)", "--map-resident-mb", "\(mapMB)", "--batch-size", "\(batch)"])
            try #require(status == 0, "\(lines.suffix(5))")
            let object = try Self.json(lines)
            return (try #require(object["peak_resident_bytes"] as? Int), object["rows"] as? Int ?? -1)
        }
        let baseline = try export("tiny")
        let large = try export("big")
        #expect(large.rows == rows)
        let recordBytes = 64 * 4 + 32
        let tableBytes = rows * recordBytes
        let budget = (hotMB + mapMB) << 20
        // A batch: keys, values and generations in the scan, plus the arrays' doubling.
        let buffers = 2 * batch * (8 + 64 * 4 + 16)
        let slack = 4 << 20
        let growth = large.peak - baseline.peak
        print("export memory: table \(tableBytes / 1_000_000) MB of records, budget \(budget >> 20) MiB; "
              + "peak \(large.peak / 1_000_000) MB, tiny table's \(baseline.peak / 1_000_000) MB: growth \(growth / 1_000_000) MB, "
              + "allowed \((budget + buffers + slack) / 1_000_000) MB")
        #expect(tableBytes >= 5 * (budget + buffers + slack), "the table is too small to show anything")
        #expect(growth <= budget + buffers + slack)
    }

    // MARK: evict, compact, neighbors

    @Test func evictRemovesWhatMeetsTheCriteriaAndCompactGivesTheSpaceBack() throws {
        let directory = temporaryDirectory("strata-tools-evict")
        defer { removeDirectory(directory) }
        let path = directory + "/store"
        let (reference, keys, removed) = try Self.makeStore(path)
        let once = keys.filter { reference.row($0).updateCount == 1 }
        let twice = keys.filter { reference.row($0).updateCount == 2 }

        // By norm, counted from the reference: rows whose norm is at most the median's.
        func norm(_ k: UInt64) -> Double { reference.row(k).values.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot() }
        let median = keys.map(norm).sorted()[keys.count / 2]
        let dry = try Self.run(["evict", path, "emb", "--max-norm", "\(median)", "--dry-run", "--json"])
        #expect(try Self.json(dry.lines)["evicted"] as? Int == keys.filter { norm($0) <= median }.count, "\(dry.lines.suffix(3))")
        let tables = try Self.json(Self.run(["info", path, "--json"]).lines)["tables"] as? [[String: Any]]
        #expect(tables?.first?["rows"] as? Int == keys.count, "a dry run changed the table")

        // By age (not changed after checkpoint 1) and by count (fewer than 2 updates): the same rows.
        let byAge = try Self.run(["evict", path, "emb", "--not-updated-since", "1", "--dry-run", "--json"])
        #expect(try Self.json(byAge.lines)["evicted"] as? Int == once.count)
        let evict = try Self.run(["evict", path, "emb", "--min-updates", "2", "--json", "--checkpoint-rows", "500"])
        #expect(evict.status == 0, "\(evict.lines.suffix(3))")
        let object = try Self.json(evict.lines)
        #expect(object["evicted"] as? Int == once.count && object["rows_after"] as? Int == twice.count, "\(object)")
        let generation = try #require(object["generation"] as? Int)
        #expect(generation > 2)

        // The evicted rows read as the initializer's values; the kept ones are untouched.
        let get = try Self.run(["get", path, "emb", "\(once[0])", "\(twice[0])", "--json"])
        let rows = get.lines.filter { $0.hasPrefix("{") }.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        try #require(rows.count == 2, "\(get.lines)")
        #expect(rows[0]["written"] as? Bool == false)
        #expect((rows[0]["values"] as? [Double])?.map(Float.init) == reference.initialRow(once[0]).values)
        #expect((rows[1]["values"] as? [Double])?.map(Float.init) == reference.row(twice[0]).values)
        // A delta export since checkpoint 2 lists them as deleted, with the rows removed before.
        let delta = try Self.run(["export", path, "emb", "--format", "npy", "--out", directory + "/delta", "--since", "2", "--json"])
        #expect(try Self.json(delta.lines)["deleted_keys"] as? Int == once.count)
        #expect(try Self.json(delta.lines)["rows"] as? Int == 0)
        _ = removed

        // compact refuses a store that is open, then shrinks the closed one's file.
        let open = try Store(path: path, options: .small(TierBudget(hotBytes: 64 << 10, warmBytes: 0)))
        let refused = try Self.run(["compact", path])
        #expect(refused.status != 0 && refused.lines.contains { $0.hasPrefix("Error:") && $0.contains("in use by process \(getpid())") },
                "\(refused.lines)")
        try open.close()
        let compact = try Self.run(["compact", path, "--json"])
        #expect(compact.status == 0, "\(compact.lines.suffix(3))")
        let sizes = try Self.json(compact.lines)
        let before = try #require(sizes["file_bytes_before"] as? Int), after = try #require(sizes["file_bytes_after"] as? Int)
        #expect(after < before / 4, "\(sizes)")
        let verify = try Self.run(["verify", path])
        #expect(verify.status == 0, "\(verify.lines)")
        let reopened = try Store(path: path, options: .small(TierBudget(hotBytes: 64 << 10, warmBytes: 0)))
        var wantAfter = reference
        wantAfter.remove(once)
        let wrong = try FaultKit.wrongRows(reopened.table("emb"), wantAfter, keys)
        #expect(wrong.isEmpty, "\(wrong.count) rows differ after evict and compact")
        #expect(reopened.lastCheckpoint.generation == UInt64(generation))
        try reopened.close()

        let none = try Self.run(["evict", path, "emb"])
        #expect(none.status != 0 && none.lines.contains { $0.contains("--min-updates") }, "\(none.lines)")
    }

    @Test func neighborsAreTheExactNearestRows() throws {
        let directory = temporaryDirectory("strata-tools-neighbors")
        defer { removeDirectory(directory) }
        let path = directory + "/store"
        let (reference, keys, _) = try Self.makeStore(path)
        let query = keys[77]
        let q = reference.row(query).values.map(Double.init)
        func dot(_ k: UInt64) -> Double { zip(reference.row(k).values, q).reduce(0) { $0 + Double($1.0) * $1.1 } }
        func length(_ v: [Double]) -> Double { v.reduce(0) { $0 + $1 * $1 }.squareRoot() }
        func cosine(_ k: UInt64) -> Double { dot(k) / (length(reference.row(k).values.map(Double.init)) * length(q)) }
        for (metric, score) in [("cosine", cosine), ("dot", dot)] as [(String, (UInt64) -> Double)] {
            let want = keys.filter { $0 != query }.sorted { score($0) > score($1) || (score($0) == score($1) && $0 < $1) }.prefix(7)
            let (status, lines) = try Self.run(["neighbors", path, "emb", "\(query)", "-k", "7", "--metric", metric, "--json"])
            #expect(status == 0, "\(lines.suffix(3))")
            let found = try #require(try Self.json(lines)["neighbors"] as? [[String: Any]])
            #expect(found.compactMap { ($0["key"] as? NSNumber)?.uint64Value } == Array(want), "\(metric)")
        }
        let bad = try Self.run(["neighbors", path, "emb", "\(query)", "--metric", "l3"])
        #expect(bad.status != 0 && bad.lines.contains { $0.contains("--metric") })
    }
}
