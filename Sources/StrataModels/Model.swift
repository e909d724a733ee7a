// The model protocol and the registry `strata train --model NAME` looks models up in.
//
// A model is a configuration and a function that builds its graph from layers (each with its
// own backward pass) over the embeddings the builder gives it. It never wires a backward by
// hand and never touches the engine: lookups, the graph run, the sparse and dense optimizer
// steps and checkpoints are the same for every model.
public import StrataNN

/// A recommender model: a file under Sources/StrataModels/ with a `Codable` configuration.
public protocol RecommenderModel: Sendable {
    associatedtype Configuration: Codable & Equatable & Sendable
    /// What `--model` calls it.
    static var name: String { get }
    /// One line for `strata train --help`: the model and its paper.
    static var summary: String { get }
    static var defaultConfiguration: Configuration { get }
    /// Why the configuration cannot build a model on `schema`, or nil (checked before any
    /// table is created).
    static func problem(_ configuration: Configuration, schema: FeatureSchema) -> String?
    /// Builds the graph; returns the value holding one score (a logit, or a rating) per row.
    static func build(_ configuration: Configuration, _ builder: ModelBuilder) throws -> Graph.Value
}

extension RecommenderModel {
    public static func problem(_ configuration: Configuration, schema: FeatureSchema) -> String? { nil }

    /// The settings' usual problem: a width (dimension, layer size, layer count) outside
    /// 1...16384 (a 16384-wide layer already holds 1 GiB of weights), or a dropout outside
    /// [0, 1); nil if there is none.
    public static func settingsProblem(_ widths: [String: [Int]], dropout: Float? = nil) -> String? {
        for (setting, values) in widths.sorted(by: { $0.key < $1.key }) {
            if let bad = values.first(where: { !(1...16_384).contains($0) }) {
                return "\(name): \(setting) must be between 1 and 16384, not \(bad)"
            }
        }
        if let dropout, !(dropout >= 0 && dropout < 1) { return "\(name): dropout must be in [0, 1), not \(dropout)" }
        return nil
    }

    /// A next-item model's problem with `schema`: it has no history of items (`FeatureSchema.sequence`).
    public static func historyProblem(_ schema: FeatureSchema) -> String? {
        guard schema.sequence != nil, schema.item != nil else {
            return "\(name) reads each sample's history of items: train it on data with one (--protocol next-item)"
        }
        return nil
    }
}

/// A model by name with its configuration as JSON: what training options and checkpoints hold.
public struct ModelSpec: Sendable, Codable, Equatable, Hashable {
    public var name: String
    public var configuration: JSONValue

    public init(name: String, configuration: JSONValue) {
        self.name = name
        self.configuration = configuration
    }

    /// A spec of model `M` with `configuration`.
    public init<M: RecommenderModel>(_ model: M.Type, _ configuration: M.Configuration) {
        name = M.name
        self.configuration = try! JSONValue(encoding: configuration)
    }

    /// A spec of model `M` with its default configuration changed by `configure`.
    public init<M: RecommenderModel>(_ model: M.Type, _ configure: (inout M.Configuration) -> Void) {
        var configuration = M.defaultConfiguration
        configure(&configuration)
        self.init(model, configuration)
    }
}

public struct ModelError: Error, CustomStringConvertible, Sendable {
    public let description: String
    /// The configuration key the model does not have, when that is the error.
    public let unknownSetting: String?
    public init(_ description: String, unknownSetting: String? = nil) {
        self.description = description
        self.unknownSetting = unknownSetting
    }
}

public enum ModelRegistry {
    /// Every model, in the order the documentation lists them.
    public static let models: [any RecommenderModel.Type] = [
        MatrixFactorization.self, NeuMF.self, DeepModel.self, WideAndDeep.self, DeepFM.self, DCNv2.self, DLRM.self,
        GRU4Rec.self, LSTM4Rec.self, SASRec.self, BERT4Rec.self, TwoTower.self, SharedBottom.self, MMoE.self,
    ]

    public static var names: [String] { models.map { $0.name } }

    public static func model(named name: String) throws(ModelError) -> any RecommenderModel.Type {
        guard let m = models.first(where: { $0.name == name }) else {
            throw ModelError("unknown model '\(name)'; the models are \(names.joined(separator: ", "))")
        }
        return m
    }

    /// The spec of model `name` with its default configuration changed by `settings`
    /// (configuration keys to values). A key the model does not have is refused, naming the
    /// model's keys.
    public static func spec(_ name: String, settings: [String: JSONValue] = [:]) throws(ModelError) -> ModelSpec {
        let model = try model(named: name)
        return try spec(model, settings: settings)
    }

    private static func spec<M: RecommenderModel>(_ model: M.Type, settings: [String: JSONValue]) throws(ModelError) -> ModelSpec {
        guard case .object(var fields) = try! JSONValue(encoding: M.defaultConfiguration) else {
            preconditionFailure("\(M.name)'s configuration is not a JSON object")
        }
        for (key, value) in settings.sorted(by: { $0.key < $1.key }) {
            guard fields[key] != nil else {
                throw ModelError("model \(M.name) has no setting '\(key)'; its settings are \(fields.keys.sorted().joined(separator: ", "))",
                                 unknownSetting: key)
            }
            fields[key] = value
        }
        let configuration: M.Configuration
        do { configuration = try JSONValue.object(fields).decode(M.Configuration.self) } catch {
            throw ModelError("model \(M.name): \(error)")
        }
        return ModelSpec(M.self, configuration)
    }

    /// Why `spec` cannot build a model on `schema`, or nil.
    public static func problem(_ spec: ModelSpec, schema: FeatureSchema) -> String? {
        do {
            let m = try model(named: spec.name)
            return try problem(m, spec.configuration, schema)
        } catch { return "\(error)" }
    }

    private static func problem<M: RecommenderModel>(_ model: M.Type, _ json: JSONValue, _ schema: FeatureSchema) throws -> String? {
        M.problem(try json.decode(M.Configuration.self), schema: schema)
    }

    /// Builds `spec`'s graph with `builder`.
    static func build(_ spec: ModelSpec, _ builder: ModelBuilder) throws -> Graph.Value {
        try build(try model(named: spec.name), spec.configuration, builder)
    }

    private static func build<M: RecommenderModel>(_ model: M.Type, _ json: JSONValue, _ builder: ModelBuilder) throws -> Graph.Value {
        try M.build(try json.decode(M.Configuration.self), builder)
    }
}
