// The store options most tests want: small budgets, and LMDB small too, so that rows move
// between tiers and through LMDB after a few hundred operations.
public import StrataStore

extension Store.Options {
    /// `budget` per table, LMDB's file starting at 1 MiB (it grows as checkpoints need) and
    /// 1 MiB of its pages kept mapped.
    public static func small(_ budget: TierBudget) -> Store.Options {
        var o = Store.Options()
        o.initialMapBytes = 1 << 20
        o.mapResidentBytes = 1 << 20
        o.budget = budget
        return o
    }
}
