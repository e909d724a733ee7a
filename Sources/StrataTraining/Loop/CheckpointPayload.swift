// What a training checkpoint holds besides the store's rows: the store checkpoint's payload.
//
//   "STRN" | JSON length u32 little-endian | JSON (`TrainerState`) | `ParameterArchive`
//
// The JSON's "version" is 2: it names the model and its configuration in "options". Payloads
// written before versions existed (DLRM only) have none; they decode through
// `LegacyTrainingOptions` into today's options, so those runs resume.
import Foundation
import StrataNN

/// The part of a checkpoint's payload that is not dense weights.
struct TrainerState: Codable {
    static let version = 2
    var version = TrainerState.version
    var options: TrainingOptions
    /// The training source's `identity`.
    var data: String?
    var step: Int
    var samples: Int64
    var position: SourcePosition
}

/// The payload of a version-less checkpoint.
private struct LegacyTrainerState: Decodable {
    var options: LegacyTrainingOptions
    var data: String?
    var step: Int
    var samples: Int64
    var position: SourcePosition
}

enum CheckpointPayload {
    static let magic = Array("STRN".utf8)

    static func encode(_ state: TrainerState, parameters: [Parameter]) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json: Data
        do { json = try encoder.encode(state) } catch {
            throw TrainingError.checkpoint("the training state cannot be encoded: \(error)")
        }
        var out = magic
        withUnsafeBytes(of: UInt32(json.count).littleEndian) { out += $0 }
        out += json
        out += ParameterArchive.encode(parameters)
        return out
    }

    /// The run a payload holds, or nil for an empty payload (a store no run has checkpointed).
    static func decode(_ payload: [UInt8]) throws -> (state: TrainerState, archive: ArraySlice<UInt8>)? {
        guard !payload.isEmpty else { return nil }
        guard payload.count >= 8, payload[0..<4].elementsEqual(magic) else {
            throw TrainingError.checkpoint("the store's last checkpoint does not hold a training run")
        }
        let length = Int(payload[4]) | Int(payload[5]) << 8 | Int(payload[6]) << 16 | Int(payload[7]) << 24
        guard payload.count >= 8 + length else {
            throw TrainingError.checkpoint("the training state in the last checkpoint is cut short (\(payload.count - 8) of \(length) bytes)")
        }
        let json = Data(payload[8..<(8 + length)])
        let archive = payload[(8 + length)...]
        struct Version: Decodable { var version: Int? }
        let version: Int?
        do { version = try JSONDecoder().decode(Version.self, from: json).version } catch {
            throw TrainingError.checkpoint("the training state in the last checkpoint is not JSON: \(error)")
        }
        switch version {
        case nil:
            do {
                let legacy = try JSONDecoder().decode(LegacyTrainerState.self, from: json)
                return (TrainerState(options: legacy.options.current, data: legacy.data, step: legacy.step,
                                     samples: legacy.samples, position: legacy.position), archive)
            } catch {
                throw TrainingError.checkpoint("the training state in the last checkpoint (written before version 2) is unreadable: \(error)")
            }
        case TrainerState.version:
            do { return (try JSONDecoder().decode(TrainerState.self, from: json), archive) } catch {
                throw TrainingError.checkpoint("the training state in the last checkpoint is unreadable: \(error)")
            }
        case let v?:
            throw TrainingError.checkpoint("the last checkpoint's training state has version \(v); this strata reads up to \(TrainerState.version): use a newer strata")
        }
    }
}
