// A trained model read back from a store for inference: the run's options and dense weights
// from the last checkpoint's payload, the embeddings from its tables. Nothing is trained and
// nothing in the store moves: forward passes with `training: false` only `peek`.
public import StrataModels
import StrataNN
public import StrataStore

public final class TrainedModel {
    /// The options of the run that wrote the checkpoint.
    public let options: TrainingOptions
    public let network: Network
    /// The step of the checkpoint.
    public let step: Int

    /// The model of `store`'s last checkpoint. Throws if the checkpoint holds no training run,
    /// or a table the model reads is missing.
    public convenience init(store: Store) throws {
        try self.init(payload: store.lastCheckpoint.payload, source: "the store \(store.path)") { request in
            do { return try store.table(request.name) } catch StoreError.unknownTable {
                throw TrainingError.checkpoint("the store \(store.path) has no table '\(request.name)', which the model reads")
            }
        }
    }

    /// The model a checkpoint's `payload` describes, its tables from `tables`; `source` names
    /// where the payload came from in errors.
    @_spi(Testing) public init(payload: [UInt8], source: String, tables: @escaping TableProvider) throws {
        guard let saved = try CheckpointPayload.decode(payload) else {
            throw TrainingError.checkpoint("\(source) holds no training run (its last checkpoint has no trainer's payload)")
        }
        let options = saved.state.options
        self.options = options
        step = saved.state.step
        network = try options.network(tables: tables)
        options.denseOptimizer.prepare(network.parameters)
        try ParameterArchive.decode(saved.archive, into: network.parameters)
    }
}
