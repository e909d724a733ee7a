/// `--name value` pairs.
struct Arguments {
    private var values: [String: String] = [:]

    init(_ list: [String]) {
        var i = 0
        while i + 1 < list.count {
            if list[i].hasPrefix("--") { values[String(list[i].dropFirst(2))] = list[i + 1] }
            i += 2
        }
    }

    func string(_ name: String) -> String {
        guard let v = values[name] else { fatalError("missing --\(name)") }
        return v
    }

    func int(_ name: String, default value: Int? = nil) -> Int {
        if let v = values[name], let n = Int(v) { return n }
        guard let value else { fatalError("missing or bad --\(name)") }
        return value
    }
}
