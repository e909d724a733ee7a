enum ReadOnly {
    static func run(_ args: [String]) throws -> Int32 { fatalError("read-only mode: not written yet") }
}
