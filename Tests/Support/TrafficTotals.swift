// Tier traffic summed over tables (and over openings of a store): the evidence a test gives
// that rows really moved between tiers.
public import StrataStore

public struct TrafficTotals: CustomStringConvertible, Sendable {
    public var hotHits = 0, warmHits = 0, spillHits = 0, coldHits = 0, initializerHits = 0
    public var hotToWarm = 0, toSpill = 0, dropped = 0

    public init() {}

    /// The traffic of `tables` since their store opened.
    public init(_ tables: [Table]) throws {
        for t in tables { add(try t.statistics().traffic) }
    }

    public mutating func add(_ t: TableStatistics.Traffic) {
        hotHits += t.hotHits
        warmHits += t.warmHits
        spillHits += t.spillHits
        coldHits += t.coldHits
        initializerHits += t.initializerHits
        hotToWarm += t.hotToWarm
        toSpill += t.toSpill
        dropped += t.dropped
    }

    public var description: String {
        "hits hot \(hotHits) warm \(warmHits) spill \(spillHits) cold \(coldHits) initializer \(initializerHits); "
            + "hot to warm \(hotToWarm), to spill \(toSpill), dropped \(dropped)"
    }
}
