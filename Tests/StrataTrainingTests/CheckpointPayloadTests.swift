// The checkpoint payload across versions: a payload written before models had a registry
// (no "version", DLRM options of their own shape, a version-1 dense archive) still resumes,
// both in process and through `strata train --resume`; a payload of a newer version, or of
// another model or configuration, is refused saying what differs.
import Foundation
import StrataModels
import StrataNN
import StrataStore
import StrataTestSupport
import StrataTraining
import Testing

@Suite struct CheckpointPayloadTests {
    /// The JSON header of a real checkpoint written by the code before version 2 (commit
    /// e2eab66), by `strata train --data synthetic:criteo --embedding-dim 2 --bottom-mlp 3
    /// --top-mlp 3 --batch-size 16 --steps 12 --checkpoint-every 6 --eval-samples 0
    /// --synthetic-keys 50 --optimizer adam --learning-rate 0.01 --sparse-optimizer adagrad
    /// --seed 7`, read out of its store with mdb_dump.
    static let legacyHeader = #"""
        {"samples":192,"position":{"epoch":0,"sample":192,"detail":[5462350,10000000,7]},"options":{"embeddingInitializer":{"uniform":{"low":-0.01,"high":0.01}},"sparseOptimizer":{"adagrad":{"learningRate":0.01,"initialAccumulator":0,"epsilon":1e-08}},"evaluateEvery":0,"model":{"sparseFeatures":26,"embeddingDimension":2,"bottomHidden":[3],"denseFeatures":13,"topHidden":[3]},"steps":12,"epochs":1,"loss":"binaryCrossEntropy","checkpointEvery":6,"denseOptimizer":{"adam":{"learningRate":0.01,"beta1":0.9,"beta2":0.999,"epsilon":1e-08}},"batchSize":16,"evaluationSamples":0,"seed":7},"data":"synthetic:train {\"denseShare\":0.2,\"freshSamplesEachEpoch\":false,\"largestKeySpace\":50,\"logitScale\":1.25,\"positiveRate\":0.25,\"samplesPerEpoch\":10000000,\"schema\":{\"dense\":13,\"sparse\":26},\"seed\":7,\"smallestKeySpace\":10,\"zipfExponent\":1.05}","step":12}
        """#

    static let arguments = [
        "--data", "synthetic:criteo", "--embedding-dim", "2", "--bottom-mlp", "3", "--top-mlp", "3", "--batch-size", "16",
        "--steps", "12", "--checkpoint-every", "6", "--eval-samples", "0", "--synthetic-keys", "50", "--optimizer", "adam",
        "--learning-rate", "0.01", "--sparse-optimizer", "adagrad", "--seed", "7", "--hot-mb", "1",
    ]

    /// The options the command line above makes now.
    static var options: TrainingOptions {
        TrainingOptions(model: ModelSpec(DLRM.self) { $0.embeddingDim = 2; $0.bottomMlp = [3]; $0.topMlp = [3] }, batchSize: 16, steps: 12,
                        denseOptimizer: .adam(learningRate: 0.01), sparseOptimizer: .adagrad(learningRate: 0.01),
                        evaluationSamples: 0, checkpointEvery: 6, seed: 7)
    }

    static var data: SyntheticClicks {
        SyntheticClicks(options: .init(seed: 7, samplesPerEpoch: 10_000_000, largestKeySpace: 50))
    }

    /// DLRM's dense parameters for the options above: names, shapes, and a version-1 archive of
    /// them (Adam's m and v as two tensors) with the values 0.001 · i.
    static func legacyArchive() -> (archive: [UInt8], shapes: [(String, Int, Int)]) {
        let interaction = 2 + 27 * 26 / 2
        let shapes = [("bottom.0.weight", 3, 13), ("bottom.0.bias", 1, 3), ("bottom.1.weight", 2, 3), ("bottom.1.bias", 1, 2),
                      ("top.0.weight", 3, interaction), ("top.0.bias", 1, 3), ("top.1.weight", 1, 3), ("top.1.bias", 1, 1)]
        var out: [UInt8] = Array("SPRM".utf8)
        func u32(_ v: Int) { withUnsafeBytes(of: UInt32(v).littleEndian) { out += $0 } }
        u32(1)
        u32(shapes.count)
        var i = 0
        for (name, rows, columns) in shapes {
            u32(name.utf8.count)
            out += Array(name.utf8)
            u32(rows)
            u32(columns)
            u32(2)
            for _ in 0..<(3 * rows * columns) {
                withUnsafeBytes(of: (Float(i) * 0.001).bitPattern.littleEndian) { out += $0 }
                i += 1
            }
        }
        return (out, shapes)
    }

    static func legacyPayload() -> [UInt8] {
        let json = Array(legacyHeader.utf8)
        var out = Array("STRN".utf8)
        withUnsafeBytes(of: UInt32(json.count).littleEndian) { out += $0 }
        return out + json + legacyArchive().archive
    }

    /// A store whose last checkpoint holds `payload`, as a run of the old code left it.
    static func store(_ directory: String, payload: [UInt8]) throws {
        let store = try Store(path: directory, options: .small(TierBudget(hotBytes: 1 << 20, warmBytes: 0)))
        try store.checkpoint(payload: payload)
        try store.close()
    }

    @Test func legacyPayloadResumesInProcess() throws {
        let directory = temporaryDirectory("strata-payload-legacy")
        defer { removeDirectory(directory) }
        try Self.store(directory, payload: Self.legacyPayload())
        let store = try Store(path: directory, options: .small(TierBudget(hotBytes: 1 << 20, warmBytes: 0)))
        defer { try? store.close() }
        let trainer = try Trainer(store: store, options: Self.options, resources: TrainingResources(lookahead: 0, threads: 1),
                                  data: TrainingData(train: Self.data), resume: true)
        #expect(trainer.resumedFromStep == 12 && trainer.samples == 192)
        #expect(trainer.isFinished)
        // Every value and both Adam moments came back, in the store's layout (m, then v).
        let shapes = Self.legacyArchive().shapes
        #expect(trainer.network.parameters.map(\.name) == shapes.map(\.0))
        var i = 0
        for p in trainer.network.parameters {
            let n = p.value.count
            let value = (0..<n).map { Float(i + $0) * 0.001 }
            let state = (0..<(2 * n)).map { Float(i + n + $0) * 0.001 }
            #expect(p.value.values == value, "\(p.name) values")
            #expect(p.state?.values == state, "\(p.name) Adam state")
            i += 3 * n
        }
    }

    @Test func legacyPayloadResumesOnTheCommandLine() throws {
        let directory = temporaryDirectory("strata-payload-legacy-cli")
        defer { removeDirectory(directory) }
        try Self.store(directory, payload: Self.legacyPayload())
        let result = try StrataCommand.run(["train", "--store", directory, "--resume"] + Self.arguments)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.lines.contains { $0.hasPrefix("resumed at step 12 ") }, "\(result.output)")
        #expect(result.lines.contains { $0.contains("run is complete") }, "\(result.output)")

        // Another model, or another setting of this one, is refused naming what differs.
        let other = try StrataCommand.run(["train", "--store", directory, "--resume"] + Self.arguments + ["--top-mlp", "4"])
        #expect(other.status != 0 && other.output.contains("top_mlp") && other.output.contains("[3]"), "\(other.output)")
        let model = try StrataCommand.run(["train", "--store", directory, "--resume", "--model", "deepfm"]
                                          + Self.arguments.filter { !["--bottom-mlp", "--top-mlp", "3"].contains($0) })
        #expect(model.status != 0 && model.output.contains("--model deepfm vs dlrm"), "\(model.output)")
    }

    @Test func newerPayloadIsRefused() throws {
        let directory = temporaryDirectory("strata-payload-newer")
        defer { removeDirectory(directory) }
        let json = Array(#"{"version":3}"#.utf8)
        var payload = Array("STRN".utf8)
        withUnsafeBytes(of: UInt32(json.count).littleEndian) { payload += $0 }
        try Self.store(directory, payload: payload + json)
        let store = try Store(path: directory, options: .small(TierBudget(hotBytes: 1 << 20, warmBytes: 0)))
        defer { try? store.close() }
        do {
            _ = try Trainer(store: store, options: Self.options, resources: TrainingResources(lookahead: 0, threads: 1),
                            data: TrainingData(train: Self.data), resume: true)
            Issue.record("a payload of version 3 was accepted")
        } catch {
            #expect("\(error)".contains("version 3") && "\(error)".contains("newer"), "\(error)")
        }
    }
}
