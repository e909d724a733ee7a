enum DiskFull {
    static func run(_ args: [String]) throws -> Int32 { fatalError("disk-full mode: not written yet") }
}
