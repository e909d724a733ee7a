// Recurrent layers for session recommenders: GRU4Rec's GRU (Hidasi et al. 2016) and an LSTM,
// with PyTorch's formulas and parameter layout, unrolled by one driver (`Unrolled`)
// parameterised by the cell.
//
// Inputs follow the sequence layout of Sequences.swift (whose `SequenceBatch` reads the
// lengths here too): a batch is `rows × (T·d)`, step t of row r in columns [t·d, (t+1)·d), so
// its memory is a `(rows·T) × d` matrix and the input product of every step is one product;
// sequences are left-aligned, padding holds anything (NaN included) and reaches no output at
// a real position, no parameter gradient and no real position's gradient, and the gradient
// written for a padding position is exactly 0. The lengths, `rows × 1`, are required here.
//
// How padding is kept out: rows are put in order of length, longest first (a stable counting
// sort), as PyTorch's packed sequences are, so the rows still running at step t are a prefix
// of that order and step t's recurrent product covers exactly them; a row that has ended is
// in no product and no cell again. A row's state is computed from its own real positions
// alone, and BLAS.gemm's kernel computes each row of C by the same sums whatever the other
// rows and however the rows are split over threads, so a row's output bits depend neither on
// the other rows (nor their lengths), nor on padding, nor on `Parallel.threads`.
import CStrataKernels
#if canImport(Glibc)
import Glibc
#endif

/// What a recurrent layer outputs.
public enum RecurrentOutput: Sendable {
    /// `rows × H`: the hidden state after the last real position (position len − 1), zeros
    /// when len = 0.
    case last
    /// `rows × (T·H)`: the hidden state at every position, exact zeros at padding positions.
    case sequence
}

/// PyTorch's GRU (torch.nn.GRU, one layer, h₀ = 0) over padded sequences (see the sequence
/// contract at the top of this file): inputs `rows × (T·d)` and the lengths `rows × 1`.
///
///   r = σ(W_ir x + b_ir + W_hr h + b_hr)
///   z = σ(W_iz x + b_iz + W_hz h + b_hz)
///   n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
///   h′ = (1 − z) ⊙ n + z ⊙ h, computed as (h − n) ⊙ z + n as PyTorch does
///
/// `weightIH` (3H × d) and `weightHH` (3H × H) hold the gates' rows in the order r, z, n, and
/// the biases (1 × 3H) likewise: PyTorch's weight_ih_l0 and the rest, so weights compare
/// with torch's directly.
public final class GRU: Layer {
    private let unrolled: Unrolled<GRUCell>

    public var inputs: Int { unrolled.inputs }
    public var hidden: Int { unrolled.hidden }
    public var steps: Int { unrolled.steps }
    public var output: RecurrentOutput { unrolled.mode }
    public var weightIH: Parameter { unrolled.weightIH }
    public var weightHH: Parameter { unrolled.weightHH }
    public var biasIH: Parameter { unrolled.biasIH }
    public var biasHH: Parameter { unrolled.biasHH }

    /// Parameters `\(name).weight_ih`, `.weight_hh`, `.bias_ih`, `.bias_hh`.
    public init(_ name: String, inputs d: Int, hidden H: Int, steps T: Int, output: RecurrentOutput) {
        unrolled = Unrolled(name, inputs: d, hidden: H, steps: T, mode: output)
    }

    public var parameters: [Parameter] { unrolled.parameters }

    /// `[T·d, 1]` (the sequences and their lengths) gives H (`.last`) or T·H (`.sequence`).
    public func outputColumns(for inputColumns: [Int]) -> Int? { unrolled.outputColumns(for: inputColumns) }

    /// Xavier-uniform weights and zero biases (`Unrolled.initialize`).
    public func initialize(_ w: inout WeightInitializer) { unrolled.initialize(&w) }

    public func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass) { unrolled.forward(inputs, into: output) }

    /// Back-propagation through time over the real positions.
    public func backward(_ inputs: [Tensor], output: Tensor, outputGradient dy: Tensor, inputGradients: [Tensor?], _ pass: Pass) {
        unrolled.backward(inputs, outputGradient: dy, inputGradient: inputGradients[0])
    }
}

/// PyTorch's LSTM (torch.nn.LSTM, one layer, h₀ = c₀ = 0, no projection) over padded
/// sequences, with GRU's interface and contract; the output is h.
///
///   i = σ(W_ii x + b_ii + W_hi h + b_hi),  f = σ(W_if x + b_if + W_hf h + b_hf)
///   g = tanh(W_ig x + b_ig + W_hg h + b_hg),  o = σ(W_io x + b_io + W_ho h + b_ho)
///   c′ = f ⊙ c + i ⊙ g,  h′ = o ⊙ tanh(c′)
///
/// `weightIH` (4H × d), `weightHH` (4H × H) and the biases (1 × 4H) hold the gates in the
/// order i, f, g, o, as PyTorch's do.
public final class LSTM: Layer {
    private let unrolled: Unrolled<LSTMCell>

    public var inputs: Int { unrolled.inputs }
    public var hidden: Int { unrolled.hidden }
    public var steps: Int { unrolled.steps }
    public var output: RecurrentOutput { unrolled.mode }
    public var weightIH: Parameter { unrolled.weightIH }
    public var weightHH: Parameter { unrolled.weightHH }
    public var biasIH: Parameter { unrolled.biasIH }
    public var biasHH: Parameter { unrolled.biasHH }

    /// Parameters `\(name).weight_ih`, `.weight_hh`, `.bias_ih`, `.bias_hh`.
    public init(_ name: String, inputs d: Int, hidden H: Int, steps T: Int, output: RecurrentOutput) {
        unrolled = Unrolled(name, inputs: d, hidden: H, steps: T, mode: output)
    }

    public var parameters: [Parameter] { unrolled.parameters }

    /// `[T·d, 1]` (the sequences and their lengths) gives H (`.last`) or T·H (`.sequence`).
    public func outputColumns(for inputColumns: [Int]) -> Int? { unrolled.outputColumns(for: inputColumns) }

    /// Xavier-uniform weights and zero biases (`Unrolled.initialize`): no forget-gate bias of
    /// 1, as in PyTorch; set `biasIH`'s f block to add one.
    public func initialize(_ w: inout WeightInitializer) { unrolled.initialize(&w) }

    public func forward(_ inputs: [Tensor], into output: Tensor, _ pass: Pass) { unrolled.forward(inputs, into: output) }

    /// Back-propagation through time over the real positions.
    public func backward(_ inputs: [Tensor], output: Tensor, outputGradient dy: Tensor, inputGradients: [Tensor?], _ pass: Pass) {
        unrolled.backward(inputs, outputGradient: dy, inputGradient: inputGradients[0])
    }
}

// MARK: The cells

/// What GRU and LSTM differ in: their gates, the state they carry from step to step, and one
/// step of one row. `Unrolled` does everything else.
protocol RecurrentCell {
    /// Blocks of H rows in weight_ih and weight_hh.
    static var gates: Int { get }
    /// Blocks of H floats carried from step to step, h first.
    static var carried: Int { get }
    /// Blocks of H floats a step keeps for backward.
    static var kept: Int { get }

    /// One step of one row: `ih` = W_ih x + b_ih and `hh` = W_hh h + b_hh (gates·H each) and
    /// the `previous` carried state give the `next` one and what backward needs (`kept`).
    static func forward(_ H: Int, ih: UnsafePointer<Float>, hh: UnsafePointer<Float>, previous: UnsafePointer<Float>,
                        next: UnsafeMutablePointer<Float>, kept: UnsafeMutablePointer<Float>)

    /// The step backward: from `gradient`, dL/d(the next carried state), writes dL/d(ih) and
    /// dL/d(hh), and overwrites `gradient` with dL/d(previous carried state) through every
    /// path but the product W_hh h (which the driver adds).
    static func backward(_ H: Int, kept: UnsafePointer<Float>, previous: UnsafePointer<Float>,
                         gradient: UnsafeMutablePointer<Float>, ih: UnsafeMutablePointer<Float>, hh: UnsafeMutablePointer<Float>)
}

/// Gates r, z, n; carries h; keeps r, z, n and W_hn h + b_hn.
enum GRUCell: RecurrentCell {
    static var gates: Int { 3 }
    static var carried: Int { 1 }
    static var kept: Int { 4 }

    @inline(__always)
    static func forward(_ H: Int, ih: UnsafePointer<Float>, hh: UnsafePointer<Float>, previous: UnsafePointer<Float>,
                        next: UnsafeMutablePointer<Float>, kept: UnsafeMutablePointer<Float>) {
        for j in 0..<H {
            let r = logistic(ih[j] + hh[j])
            let z = logistic(ih[H + j] + hh[H + j])
            let hn = hh[2 * H + j]
            let n = tanhf(ih[2 * H + j] + r * hn)
            next[j] = (previous[j] - n) * z + n
            kept[j] = r
            kept[H + j] = z
            kept[2 * H + j] = n
            kept[3 * H + j] = hn
        }
    }

    @inline(__always)
    static func backward(_ H: Int, kept: UnsafePointer<Float>, previous: UnsafePointer<Float>,
                         gradient: UnsafeMutablePointer<Float>, ih: UnsafeMutablePointer<Float>, hh: UnsafeMutablePointer<Float>) {
        for j in 0..<H {
            let r = kept[j], z = kept[H + j], n = kept[2 * H + j], hn = kept[3 * H + j]
            let dh = gradient[j]
            let dn = dh * (1 - z) * (1 - n * n)
            let dz = dh * (previous[j] - n) * z * (1 - z)
            let dr = dn * hn * r * (1 - r)
            ih[j] = dr
            ih[H + j] = dz
            ih[2 * H + j] = dn
            hh[j] = dr
            hh[H + j] = dz
            hh[2 * H + j] = dn * r  // r scales W_hn h + b_hn
            gradient[j] = dh * z
        }
    }
}

/// Gates i, f, g, o; carries h then c; keeps i, f, g, o and tanh(c′).
enum LSTMCell: RecurrentCell {
    static var gates: Int { 4 }
    static var carried: Int { 2 }
    static var kept: Int { 5 }

    @inline(__always)
    static func forward(_ H: Int, ih: UnsafePointer<Float>, hh: UnsafePointer<Float>, previous: UnsafePointer<Float>,
                        next: UnsafeMutablePointer<Float>, kept: UnsafeMutablePointer<Float>) {
        for j in 0..<H {
            let i = logistic(ih[j] + hh[j])
            let f = logistic(ih[H + j] + hh[H + j])
            let g = tanhf(ih[2 * H + j] + hh[2 * H + j])
            let o = logistic(ih[3 * H + j] + hh[3 * H + j])
            let c = f * previous[H + j] + i * g
            let tc = tanhf(c)
            next[j] = o * tc
            next[H + j] = c
            kept[j] = i
            kept[H + j] = f
            kept[2 * H + j] = g
            kept[3 * H + j] = o
            kept[4 * H + j] = tc
        }
    }

    @inline(__always)
    static func backward(_ H: Int, kept: UnsafePointer<Float>, previous: UnsafePointer<Float>,
                         gradient: UnsafeMutablePointer<Float>, ih: UnsafeMutablePointer<Float>, hh: UnsafeMutablePointer<Float>) {
        for j in 0..<H {
            let i = kept[j], f = kept[H + j], g = kept[2 * H + j], o = kept[3 * H + j], tc = kept[4 * H + j]
            let dh = gradient[j]
            let dc = gradient[H + j] + dh * o * (1 - tc * tc)
            let di = dc * g * i * (1 - i)
            let df = dc * previous[H + j] * f * (1 - f)
            let dg = dc * i * (1 - g * g)
            let dO = dh * tc * o * (1 - o)
            ih[j] = di
            ih[H + j] = df
            ih[2 * H + j] = dg
            ih[3 * H + j] = dO
            hh[j] = di
            hh[H + j] = df
            hh[2 * H + j] = dg
            hh[3 * H + j] = dO
            gradient[j] = 0  // h reaches the step only through W_hh h
            gradient[H + j] = dc * f
        }
    }
}

// MARK: The unrolling

/// Integers kept between calls, grown (never shrunk) to the largest count asked for.
private final class Indices {
    private(set) var data: UnsafeMutablePointer<Int>
    private var capacity = 1

    init() {
        data = .allocate(capacity: 1)
        data.initialize(to: 0)
    }

    deinit { data.deallocate() }

    func reserve(_ count: Int) {
        guard count > capacity else { return }
        data.deallocate()
        data = .allocate(capacity: count)
        data.initialize(repeating: 0, count: count)
        capacity = count
    }

    subscript(i: Int) -> Int {
        @inline(__always) get { data[i] }
        @inline(__always) set { data[i] = newValue }
    }
}

/// A recurrent layer's parameters and its forward and backward through time, for any cell.
///
/// Layout. Rows are visited in `order` (longest first); at step t the first `active[t]` of
/// them run, and everything kept per step is stored step after step, `active[t]` rows each
/// from row `offsets[t]` ("compact": Σ len rows in all). Position (row r, step t) of the
/// input, of its projection and of its gate gradients is row r·T + t of a (rows·T)-row matrix.
final class Unrolled<Cell: RecurrentCell> {
    let inputs: Int
    let hidden: Int
    let steps: Int
    let mode: RecurrentOutput
    let weightIH: Parameter
    let weightHH: Parameter
    let biasIH: Parameter
    let biasHH: Parameter

    // The batch's arrangement, from its lengths (set by forward, used by backward).
    private var rows = 0
    private var longest = 0
    private let lengths = Indices()
    /// Rows by length, longest first, ties in row order.
    private let order = Indices()
    /// active[t]: the rows with len > t, t in 0...T (active[T] = 0).
    private let active = Indices()
    /// offsets[t]: Σ_{s<t} active[s], t in 0...T.
    private let offsets = Indices()

    /// W_ih x + b_ih at every position, (rows·T) × gates·H; padding positions unread.
    private let projection: Tensor
    /// W_hh h + b_hh of one step, in order.
    private let recurrent: Tensor
    /// Compact: the carried state each step starts from (zeros at step 0).
    private let previous: Tensor
    /// In order: the carried state after a row's last step.
    private let ended: Tensor
    /// Compact: what each step keeps for backward.
    private let kept: Tensor
    /// dL/d(W_ih x + b_ih) at every position, (rows·T) × gates·H, zero at padding positions.
    private let inputGates: Tensor
    /// Compact: dL/d(W_hh h + b_hh).
    private let recurrentGates: Tensor
    /// In order: dL/d(carried state) of the step being differentiated.
    private let stateGradient: Tensor
    /// The input with its padding positions zeroed, for dW_ih: 0 · NaN would be NaN.
    private let maskedInput: Tensor

    init(_ name: String, inputs d: Int, hidden H: Int, steps T: Int, mode: RecurrentOutput) {
        precondition(d >= 1 && H >= 1 && T >= 1, "a recurrent layer needs an input, a hidden unit and a step")
        inputs = d
        hidden = H
        steps = T
        self.mode = mode
        let g = Cell.gates * H
        weightIH = Parameter("\(name).weight_ih", rows: g, columns: d)
        weightHH = Parameter("\(name).weight_hh", rows: g, columns: H)
        biasIH = Parameter("\(name).bias_ih", rows: 1, columns: g)
        biasHH = Parameter("\(name).bias_hh", rows: 1, columns: g)
        projection = Tensor(rows: 0, columns: g)
        recurrent = Tensor(rows: 0, columns: g)
        previous = Tensor(rows: 0, columns: Cell.carried * H)
        ended = Tensor(rows: 0, columns: Cell.carried * H)
        kept = Tensor(rows: 0, columns: Cell.kept * H)
        inputGates = Tensor(rows: 0, columns: g)
        recurrentGates = Tensor(rows: 0, columns: g)
        stateGradient = Tensor(rows: 0, columns: Cell.carried * H)
        maskedInput = Tensor(rows: 0, columns: d)
        active.reserve(T + 1)
        offsets.reserve(T + 1)
    }

    var parameters: [Parameter] { [weightIH, weightHH, biasIH, biasHH] }

    func outputColumns(for inputColumns: [Int]) -> Int? {
        inputColumns == [steps * inputs, 1] ? (mode == .last ? hidden : steps * hidden) : nil
    }

    /// Xavier-uniform weights, U(±√(6 / (fan_in + fan_out))) over each whole matrix as
    /// torch.nn.init.xavier_uniform_ sees it (fan_in its columns, fan_out its rows, every gate
    /// together), which is what RecBole's GRU4Rec does to its GRU's weights. Biases start at 0
    /// (RecBole leaves PyTorch's default U(±1/√H) on them): Keras's default, every gate
    /// unbiased at the start, and nothing drawn for them.
    func initialize(_ w: inout WeightInitializer) {
        let g = Double(Cell.gates * hidden)
        w.uniform(weightIH, bound: (6 / (Double(inputs) + g)).squareRoot())
        w.uniform(weightHH, bound: (6 / (Double(hidden) + g)).squareRoot())
        biasIH.value.zero()
        biasHH.value.zero()
    }

    /// Reads the lengths and orders the rows: a counting sort on length, longest first.
    private func arrange(_ batch: SequenceBatch) {
        let T = steps, count = batch.rows
        rows = count
        lengths.reserve(count)
        order.reserve(count)
        for t in 0...T { active[t] = 0 }
        for r in 0..<count {
            lengths[r] = batch.length(r)
            active[lengths[r]] += 1
        }
        // Counts per length into active[t] = rows longer than t, which is also where the rows
        // of length t start in `order`.
        var longer = 0
        for t in stride(from: T, through: 0, by: -1) {
            let these = active[t]
            active[t] = longer
            longer += these
        }
        for t in 0...T { offsets[t] = active[t] }  // the placing cursors, for a moment
        for r in 0..<count {
            order[offsets[lengths[r]]] = r
            offsets[lengths[r]] += 1
        }
        offsets[0] = 0
        for t in 0..<T { offsets[t + 1] = offsets[t] + active[t] }
        longest = 0
        while longest < T && active[longest] > 0 { longest += 1 }
    }

    /// Runs `body(i)` for i in 0..<count, over the threads when there is enough to share.
    /// Each i touches only its own rows.
    @inline(__always)
    private func each(_ count: Int, _ body: (Int) -> Void) {
        let parts = count * hidden >= 4096 ? min(Parallel.threads, count) : 1
        Parallel.forEach(parts) { p in
            for i in (count * p / parts)..<(count * (p + 1) / parts) { body(i) }
        }
    }

    func forward(_ inputs: [Tensor], into y: Tensor) {
        precondition(inputs.count == 2, "a recurrent layer takes the sequences and their lengths")
        let x = inputs[0], n = x.rows, T = steps, d = self.inputs, H = hidden
        let g = Cell.gates * H, c = Cell.carried * H
        precondition(x.columns == T * d && y.rows == n && y.columns == (mode == .last ? H : T * H))
        let batch = SequenceBatch(rows: n, steps: T, lengths: inputs[1])
        arrange(batch)

        // Every position's input product at once (padding positions' rows are computed from
        // whatever they hold, and never read).
        projection.resize(rows: n * T)
        BLAS.gemm(false, true, m: n * T, n: g, k: d, x.data, lda: d, weightIH.value.data, ldb: d,
                  projection.data, ldc: g, bias: biasIH.value.data)

        // Sized for the whole batch, so that longer sequences later allocate nothing.
        previous.resize(rows: n * T)
        kept.resize(rows: n * T)
        recurrent.resize(rows: n)
        ended.resize(rows: n)
        previous.data.update(repeating: 0, count: active[0] * c)  // h₋₁ = c₋₁ = 0
        for t in 0..<longest {
            let running = active[t], start = offsets[t], continuing = active[t + 1]
            BLAS.gemm(false, true, m: running, n: g, k: H, previous.row(start), lda: c, weightHH.value.data, ldb: H,
                      recurrent.data, ldc: g, bias: biasHH.value.data)
            each(running) { i in
                let r = order[i]
                // A row that goes on starts the next step from here; one that ends leaves its
                // state in `ended`.
                let next = i < continuing ? previous.row(start + running + i) : ended.row(i)
                Cell.forward(H, ih: projection.row(r * T + t), hh: recurrent.row(i), previous: previous.row(start + i),
                             next: next, kept: kept.row(start + i))
                if mode == .sequence { (y.row(r) + t * H).update(from: next, count: H) }
            }
        }
        switch mode {
        case .last:
            for i in 0..<n {
                let r = order[i]
                if lengths[r] > 0 { y.row(r).update(from: ended.row(i), count: H) } else { y.row(r).update(repeating: 0, count: H) }
            }
        case .sequence:
            batch.zeroPadding(y.data, width: H)
        }
    }

    func backward(_ inputs: [Tensor], outputGradient dy: Tensor, inputGradient dx: Tensor?) {
        let x = inputs[0], n = x.rows, T = steps, d = self.inputs, H = hidden
        let g = Cell.gates * H, c = Cell.carried * H
        precondition(n == rows && dy.rows == n, "backward runs on the batch forward ran")
        let batch = SequenceBatch(rows: n, steps: T, lengths: inputs[1])
        let positions = offsets[T]

        stateGradient.resize(rows: n)
        stateGradient.zero()
        if mode == .last {
            // A row's gradient waits, untouched, until its last step comes round.
            for i in 0..<n { stateGradient.row(i).update(from: dy.row(order[i]), count: H) }
        }
        inputGates.resize(rows: n * T)
        recurrentGates.resize(rows: n * T)
        for t in stride(from: longest - 1, through: 0, by: -1) {
            let running = active[t], start = offsets[t]
            each(running) { i in
                let r = order[i], s = stateGradient.row(i)
                if mode == .sequence {
                    let o = dy.row(r) + t * H
                    for j in 0..<H { s[j] += o[j] }
                }
                Cell.backward(H, kept: kept.row(start + i), previous: previous.row(start + i), gradient: s,
                              ih: inputGates.row(r * T + t), hh: recurrentGates.row(start + i))
            }
            // dL/dh_{t−1} += dL/d(W_hh h + b_hh) · W_hh (h₋₁ is a constant).
            if t > 0 {
                BLAS.gemm(false, false, m: running, n: H, k: g, recurrentGates.row(start), lda: g, weightHH.value.data, ldb: H,
                          beta: 1, stateGradient.data, ldc: c)
            }
        }

        // Padding positions add exact zeros to every sum below.
        batch.zeroPadding(inputGates.data, width: g)
        maskedInput.resize(rows: n * T)
        batch.copyReal(x.data, into: maskedInput.data, width: d)
        BLAS.gemm(true, false, m: g, n: d, k: n * T, inputGates.data, lda: g, maskedInput.data, ldb: d,
                  beta: 0, weightIH.gradient.data, ldc: d)
        strata_column_sums(inputGates.data, Int32(n * T), Int32(g), biasIH.gradient.data)
        BLAS.gemm(true, false, m: g, n: H, k: positions, recurrentGates.data, lda: g, previous.data, ldb: c,
                  beta: 0, weightHH.gradient.data, ldc: H)
        strata_column_sums(recurrentGates.data, Int32(positions), Int32(g), biasHH.gradient.data)
        if let dx {
            precondition(dx.rows == n && dx.columns == T * d)
            BLAS.gemm(false, false, m: n * T, n: d, k: g, inputGates.data, lda: g, weightIH.value.data, ldb: d,
                      beta: 0, dx.data, ldc: d)
            batch.zeroPadding(dx.data, width: d)  // exactly 0, whatever the weights hold
        }
    }
}
