#!/usr/bin/env python3
"""PyTorch's reference DLRM training step, timed: the baseline of tools/compare-pytorch.sh.

A re-implementation (not a copy) of the design of facebookresearch/dlrm's DLRM_Net
(dlrm_s_pytorch.py) with the Criteo Kaggle architecture of its bench/dlrm_s_criteo_kaggle.sh:

  - 26 nn.EmbeddingBag(n, 16, mode="sum", sparse=True) tables with the Kaggle table sizes,
    initialized uniform(-sqrt(1/n), sqrt(1/n)); one index per bag, as in Criteo;
  - bottom MLP 13-512-256-64-16 and top MLP 367-512-256-1, every layer ReLU except the
    last top layer; weights normal(0, sqrt(2/(in+out))), biases normal(0, sqrt(1/out));
  - dot interaction: the strictly lower triangle of Z Zt, Z = [bottom output; 26 embeddings]
    (351 pairs), concatenated after the bottom output (16 + 351 = 367 columns);
  - loss: by default as dlrm does it, a sigmoid on the last top layer and BCELoss (mean);
    --loss logits uses BCEWithLogitsLoss instead (what strata does); the cost is the same;
  - torch.optim.SGD(lr 0.1) over all parameters: the embedding tables get sparse gradients,
    the step adds them into the rows the batch touched.

The step is dlrm's: forward, loss, optimizer.zero_grad(), loss.backward(), optimizer.step(),
and the loss read back to Python. Two differences from dlrm_s_pytorch.py, both in PyTorch's
favour: the interaction's triangle indices are built once instead of at every step, and the
per-step accuracy bookkeeping is left out.

Data has the shape of dlrm's --data-generation=random but is generated before the clock
starts, so that only the training step is timed: dense features uniform in [0, 1), one
categorical id per table drawn from a Zipf distribution (exponent 1.05 by default) over the
table's size with the ranks scrambled by a random permutation per table (the hot rows are
spread over the table, as hashed ids are), and labels random with P(click) = 0.25 (labels
do not change what the step costs). Batches are drawn from a pool of at most --pool-samples
samples, reused in order when the run is longer.

Prints one JSON line:
  {"framework": "pytorch", "torch_version", "batch_size", "steps", "samples_per_second",
   "seconds", "threads", ...}
With --profile, first prints (to stderr) where the time of a step goes: embeddings forward
and backward, the MLPs, the interaction, the loss and the optimizer, measured with
torch.profiler over --profile-steps extra steps run after the timed ones (the timed figure
is not affected by the profiler).

Usage (any Python with torch and numpy; tools/compare-pytorch.sh sets one up):
  python tools/pytorch_dlrm.py --batch-size 2048 --steps 200 [--warmup-steps 20]
                               [--threads 2] [--profile]
"""

import argparse
import json
import math
import sys
import time

import numpy as np
import torch
import torch.nn as nn

# Rows per categorical feature in the Criteo Kaggle (Display Advertising Challenge) data
# set, as in facebookresearch/dlrm's data utilities and PyTorch's DLRM benchmark configs.
KAGGLE_TABLE_SIZES = [
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
]
DENSE_FEATURES = 13
EMBEDDING_DIM = 16
BOTTOM_MLP = [DENSE_FEATURES, 512, 256, 64, EMBEDDING_DIM]
TOP_HIDDEN = [512, 256, 1]


def mlp(sizes, sigmoid_last):
    """Linear layers with dlrm's initialization, ReLU after each (sigmoid after the last if asked)."""
    layers = []
    for i in range(len(sizes) - 1):
        n, m = sizes[i], sizes[i + 1]
        linear = nn.Linear(n, m, bias=True)
        with torch.no_grad():
            linear.weight.normal_(0.0, math.sqrt(2.0 / (m + n)))
            linear.bias.normal_(0.0, math.sqrt(1.0 / m))
        layers.append(linear)
        last = i == len(sizes) - 2
        if last and sigmoid_last:
            layers.append(nn.Sigmoid())
        elif not last:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DLRM(nn.Module):
    def __init__(self, table_sizes, dim, bottom, top_hidden, sigmoid_last, seed):
        super().__init__()
        torch.manual_seed(seed)     # the default generator fills large tables on all threads
        self.embeddings = nn.ModuleList()
        for n in table_sizes:
            bound = math.sqrt(1.0 / n)
            weight = torch.empty(n, dim).uniform_(-bound, bound)
            self.embeddings.append(nn.EmbeddingBag(n, dim, mode="sum", sparse=True, _weight=weight))
        vectors = len(table_sizes) + 1
        self.bottom = mlp(bottom, sigmoid_last=False)
        self.top = mlp([dim + vectors * (vectors - 1) // 2] + top_hidden, sigmoid_last=sigmoid_last)
        # The strictly lower triangle of a vectors x vectors matrix, row by row (dlrm's order).
        li, lj = torch.tril_indices(vectors, vectors, offset=-1)
        self.register_buffer("li", li, persistent=False)
        self.register_buffer("lj", lj, persistent=False)

    def interact(self, x, ly):
        batch, d = x.shape
        t = torch.cat([x] + ly, dim=1).view(batch, -1, d)
        z = torch.bmm(t, t.transpose(1, 2))
        return torch.cat([x, z[:, self.li, self.lj]], dim=1)

    def forward(self, dense, offsets, indices, sections=None):
        # `sections` (profiling only) wraps each part in a profiler range.
        s = sections or _no_sections
        with s("forward: bottom MLP"):
            x = self.bottom(dense)
        with s("forward: embeddings"):
            ly = [e(indices[k], offsets) for k, e in enumerate(self.embeddings)]
        with s("forward: interaction"):
            r = self.interact(x, ly)
        with s("forward: top MLP"):
            return self.top(r)


class _NoSection:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _no_sections(_name):
    return _NoSection()


def zipf_ranks(n, exponent, count, rng):
    """`count` draws of ranks 0..n-1 with P(rank k) proportional to (k+1)^-exponent."""
    if n == 1:
        return np.zeros(count, dtype=np.int64)
    cdf = np.cumsum(np.arange(1, n + 1, dtype=np.float64) ** -exponent)
    cdf /= cdf[-1]
    ranks = np.searchsorted(cdf, rng.random(count), side="right")
    return np.minimum(ranks, n - 1).astype(np.int64)


def make_data(samples, table_sizes, exponent, seed):
    """Dense [samples, 13] float32, indices [tables, samples] int64, labels [samples, 1] float32."""
    rng = np.random.default_rng(seed)
    dense = rng.random((samples, DENSE_FEATURES), dtype=np.float32)
    indices = np.empty((len(table_sizes), samples), dtype=np.int64)
    for k, n in enumerate(table_sizes):
        scramble = rng.permutation(n)            # rank -> row: the hot rows anywhere in the table
        indices[k] = scramble[zipf_ranks(n, exponent, samples, rng)]
    labels = (rng.random((samples, 1)) < 0.25).astype(np.float32)
    return torch.from_numpy(dense), torch.from_numpy(indices), torch.from_numpy(labels)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=1000, help="timed steps")
    p.add_argument("--warmup-steps", type=int, default=20, help="untimed steps first")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--learning-rate", type=float, default=0.1)
    p.add_argument("--loss", choices=["sigmoid-bce", "logits"], default="sigmoid-bce",
                   help="sigmoid-bce: sigmoid + BCELoss, as dlrm; logits: BCEWithLogitsLoss")
    p.add_argument("--zipf", type=float, default=1.05, help="Zipf exponent of the categorical ids")
    p.add_argument("--pool-samples", type=int, default=4_000_000,
                   help="at most this many samples are generated; longer runs reuse them in order")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--profile", action="store_true", help="also print where a step's time goes (stderr)")
    p.add_argument("--profile-steps", type=int, default=20)
    args = p.parse_args()
    if args.batch_size < 1 or args.steps < 1 or args.warmup_steps < 0 or args.threads < 1:
        p.error("--batch-size, --steps and --threads must be positive, --warmup-steps not negative")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    b = args.batch_size
    extra = args.profile_steps if args.profile else 0
    total_batches = args.warmup_steps + args.steps + extra
    pool_batches = max(1, min(total_batches, args.pool_samples // b))

    t0 = time.perf_counter()
    model = DLRM(KAGGLE_TABLE_SIZES, EMBEDDING_DIM, BOTTOM_MLP, TOP_HIDDEN,
                 sigmoid_last=args.loss == "sigmoid-bce", seed=args.seed)
    loss_fn = nn.BCELoss(reduction="mean") if args.loss == "sigmoid-bce" else nn.BCEWithLogitsLoss(reduction="mean")
    optimizer = torch.optim.SGD(model.parameters(), lr=args.learning_rate)
    t1 = time.perf_counter()
    dense, indices, labels = make_data(pool_batches * b, KAGGLE_TABLE_SIZES, args.zipf, args.seed + 1)
    # Per batch: contiguous [b, 13], [tables, b] and [b, 1] tensors, sliced before timing.
    batches = [(dense[i * b:(i + 1) * b],
                indices[:, i * b:(i + 1) * b].contiguous(),
                labels[i * b:(i + 1) * b]) for i in range(pool_batches)]
    offsets = torch.arange(b, dtype=torch.int64)        # one index per bag
    t2 = time.perf_counter()
    print(f"pytorch: model built in {t1 - t0:.1f} s, {pool_batches} batches of {b} generated in {t2 - t1:.1f} s",
          file=sys.stderr)

    def step(i, sections=None):
        x, idx, y = batches[i % pool_batches]
        z = model(x, offsets, idx, sections)
        loss = loss_fn(z, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    for i in range(args.warmup_steps):
        step(i)
    first = args.warmup_steps
    start = time.perf_counter()
    for i in range(first, first + args.steps):
        last_loss = step(i)
    seconds = time.perf_counter() - start
    if not math.isfinite(last_loss):
        print(f"pytorch: the loss is {last_loss}", file=sys.stderr)
        sys.exit(1)

    if args.profile:
        profile(model, loss_fn, optimizer, batches, offsets, first + args.steps, args.profile_steps, pool_batches)

    print(json.dumps({
        "framework": "pytorch",
        "torch_version": torch.__version__,
        "batch_size": b,
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "samples_per_second": args.steps * b / seconds,
        "seconds": seconds,
        "threads": args.threads,
        "loss": args.loss,
        "final_loss": last_loss,
    }), flush=True)


# Backward nodes by what they belong to (the rest are reported by name under "other").
_BACKWARD = {
    "EmbeddingBagBackward0": "embeddings", "EmbeddingBackward0": "embeddings",
    "AddmmBackward0": "MLPs", "ReluBackward0": "MLPs", "ThresholdBackward0": "MLPs", "TBackward0": "MLPs",
    "MmBackward0": "MLPs", "AddBackward0": "MLPs",
    "BmmBackward0": "interaction", "IndexBackward0": "interaction", "CatBackward0": "interaction",
    "ViewBackward0": "interaction", "TransposeBackward0": "interaction", "UnsafeViewBackward0": "interaction",
    "ReshapeAliasBackward0": "interaction",
    "SigmoidBackward0": "loss", "BinaryCrossEntropyBackward0": "loss",
    "BinaryCrossEntropyWithLogitsBackward0": "loss", "MeanBackward0": "loss",
}


def profile(model, loss_fn, optimizer, batches, offsets, first, steps, pool_batches):
    """Where a step's time goes, by torch.profiler over `steps` steps (and, without the
    profiler, the forward / backward / optimizer split by wall clock)."""
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    # Plain timers first: no profiler overhead.
    wall = {"forward + loss": 0.0, "backward": 0.0, "zero_grad + optimizer step": 0.0}
    for i in range(first, first + steps):
        x, idx, y = batches[i % pool_batches]
        a = time.perf_counter()
        loss = loss_fn(model(x, offsets, idx), y)
        b_ = time.perf_counter()
        optimizer.zero_grad()
        loss.backward()
        c = time.perf_counter()
        optimizer.step()
        loss.item()
        d = time.perf_counter()
        wall["forward + loss"] += b_ - a
        wall["backward"] += c - b_
        wall["zero_grad + optimizer step"] += d - c
    # zero_grad is counted with backward above; it only drops references (set_to_none).

    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for i in range(first + steps, first + 2 * steps):
            x, idx, y = batches[i % pool_batches]
            with record_function("step"):
                z = model(x, offsets, idx, record_function)
                with record_function("forward: loss"):
                    loss = loss_fn(z, y)
                with record_function("optimizer: zero_grad"):
                    optimizer.zero_grad()
                with record_function("backward"):
                    loss.backward()
                with record_function("optimizer: step"):
                    optimizer.step()
                loss.item()

    events = prof.events()
    total = {}
    step_us = sum(e.cpu_time_total for e in events if e.name == "step")

    def add(key, us):
        total[key] = total.get(key, 0.0) + us

    for e in events:
        if e.name.startswith("forward: ") or e.name.startswith("optimizer: "):
            add(e.name, e.cpu_time_total)
        elif e.name.startswith("autograd::engine::evaluate_function: "):
            node = e.name.split(": ", 1)[1]
            if node == "torch::autograd::AccumulateGrad":
                add("backward: gradient accumulation", e.cpu_time_total)
            else:
                add("backward: " + _BACKWARD.get(node, "other (" + node + ")"), e.cpu_time_total)
    # The SGD step split by parameter: embedding tables ([n, 16], sparse gradient) or MLPs.
    opt_split = {"embeddings": 0.0, "MLPs": 0.0}
    for e in events:
        if e.name == "optimizer: step":
            for child in _descendants(e):
                if child.name in ("aten::add_", "aten::add") and child.input_shapes:
                    shape = child.input_shapes[0]
                    is_table = len(shape) == 2 and shape[1] == EMBEDDING_DIM and shape[0] != 16
                    # only the outermost add of each parameter
                    if not any(a.name in ("aten::add_", "aten::add") for a in _ancestors(child, e)):
                        opt_split["embeddings" if is_table else "MLPs"] += child.cpu_time_total

    backward_us = sum(e.cpu_time_total for e in events if e.name == "backward")
    groups = {
        "embeddings (forward)": total.get("forward: embeddings", 0.0),
        "embeddings (backward)": total.get("backward: embeddings", 0.0),
        "embeddings (SGD step)": opt_split["embeddings"],
        "MLPs (forward)": total.get("forward: bottom MLP", 0.0) + total.get("forward: top MLP", 0.0),
        "MLPs (backward)": total.get("backward: MLPs", 0.0),
        "MLPs (SGD step)": opt_split["MLPs"],
        "interaction (forward)": total.get("forward: interaction", 0.0),
        "interaction (backward)": total.get("backward: interaction", 0.0),
        "loss (forward + backward)": total.get("forward: loss", 0.0) + total.get("backward: loss", 0.0),
        "gradient accumulation": total.get("backward: gradient accumulation", 0.0),
        "zero_grad": total.get("optimizer: zero_grad", 0.0),
    }
    for k, v in total.items():
        if k.startswith("backward: other"):
            groups[k] = v
    accounted = sum(groups.values())
    groups["unaccounted (Python, autograd engine, SGD bookkeeping)"] = max(step_us - accounted, 0.0)

    out = sys.stderr
    print(f"\npytorch profile, batch {len(offsets)}, {steps} steps (threads {torch.get_num_threads()}):", file=out)
    print("  without profiler, ms/step: " + ", ".join(f"{k} {1000 * v / steps:.2f}" for k, v in wall.items()), file=out)
    print(f"  with torch.profiler: {step_us / 1000 / steps:.2f} ms/step (backward {backward_us / 1000 / steps:.2f})",
          file=out)
    for k, v in groups.items():
        print(f"    {k:<58} {v / 1000 / steps:8.3f} ms  {100 * v / max(step_us, 1e-9):5.1f}%", file=out)
    summary = {
        "profile_steps": steps,
        "wall_ms_per_step": {k: 1000 * v / steps for k, v in wall.items()},
        "profiler_ms_per_step": {k: v / 1000 / steps for k, v in groups.items()},
        "profiler_step_ms": step_us / 1000 / steps,
    }
    print("  " + json.dumps(summary), file=out, flush=True)


def _descendants(e):
    for c in e.cpu_children:
        yield c
        yield from _descendants(c)


def _ancestors(e, stop):
    p = e.cpu_parent
    while p is not None and p is not stop:
        yield p
        p = p.cpu_parent


if __name__ == "__main__":
    main()
