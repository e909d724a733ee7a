#!/usr/bin/env python3
"""Training throughput of a PyTorch DLRM whose embedding tables are Strata tables
(strata.torch.EmbeddingBag), against the same model with nn.EmbeddingBag(sparse=True), in one
process and one run, on the same pre-built batches.

The model is python/tests/strata_dlrm.py's DLRM (the one the strata.torch tests train):
bottom MLP 8-32-16 over the dense features, one sum-bag per table, pairwise dot products
of the dense vector and the bags, top MLP to one logit, binary cross-entropy. It is given
--tables tables of --rows rows each, dimension 16.

Three runs, each a fresh model (dense layers from the same seed) on the same batches:
  torch            nn.EmbeddingBag(rows, 16, mode="sum", sparse=True) tables (uniform
                   init), torch.optim.SGD(lr) over every parameter;
  strata memory    Strata tables (SGD at lr in the store, stepped during backward;
                   torch.optim.SGD(lr) for the dense part), a hot budget of twice the
                   table's bytes, every row written once and checkpointed before;
  strata 10x       the same in another store, with each table's hot + warm budget a
                   tenth of its bytes (hot 1/20, warm 1/20): the table is 10x its
                   budget and, after the writing and checkpoint, ~90% of its rows are
                   only in LMDB (cold).
Keys: Zipf(--zipf) over the row range (mod rows), --bag keys per bag (1: one-hot, as
Criteo); dense features normal; labels random 0/1 (throughput only). All batches are
built before the clock starts. The three models are set up side by side (the Strata ones
writing their rows first), each runs the --warmup steps untimed, then the --steps timed
steps go in --segments segments: in each, every run trains on that segment's batches in
turn (the first one rotating). So every run sees the same batches in the same order,
and a slower moment of the machine falls on all of them alike; each segment also gives a
ratio to torch of its own (shown as median, min and max beside the overall ratio).

Reported: samples/s of each run and the ratio to torch; for the Strata runs the tier
traffic of the timed steps (hits in hot, warm, spill, LMDB (cold) and never-written rows
summed over the tables, from table.statistics() before and after), so the cold traffic of
the 10x run is seen to be real. Nothing is asserted; with --json the figures are written.

Usage:
  python bench_dlrm.py [--tables 8] [--rows 500000] [--batch-size 2048] [--bag 1]
                       [--steps 150] [--warmup 20] [--segments 5] [--threads 2]
                       [--runs torch,memory,10x] [--wait-idle SECONDS]
                       [--dir DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
sys.path.insert(0, os.path.join(os.path.dirname(here), "tests"))
import _common  # noqa: E402
from strata_dlrm import DENSE_FEATURES, DIMENSION, DLRM  # noqa: E402  (python/tests)

import strata  # noqa: E402
import strata.torch as st  # noqa: E402

TRAFFIC = ("hot_hits", "warm_hits", "spill_hits", "cold_hits", "initializer_hits")
TIERS = ("hot", "warm", "spill", "cold")
RUNS = {"torch": "torch", "memory": "strata memory", "10x": "strata 10x"}
INIT = (-0.05, 0.05)


def make_batches(args: argparse.Namespace) -> List[Any]:
    """Every batch of the run, warm-up included: (dense, [(keys, offsets)] per table, labels)."""
    rng = np.random.default_rng(args.seed)
    b, n = args.batch_size, args.batch_size * args.bag
    offsets = torch.arange(0, n, args.bag, dtype=torch.int64)
    batches = []
    for _ in range(args.warmup + args.steps):
        dense = torch.from_numpy(rng.normal(size=(b, DENSE_FEATURES)).astype(np.float32))
        sparse = []
        for _t in range(args.tables):
            keys = (rng.zipf(args.zipf, size=n) - 1) % args.rows
            sparse.append((torch.from_numpy(keys.astype(np.int64)), offsets))
        labels = torch.from_numpy(rng.integers(0, 2, size=b).astype(np.float32))
        batches.append((dense, sparse, labels))
    return batches


def train(model: nn.Module, optimizer: torch.optim.Optimizer, batches: List[Any], warmup: int):
    """Trains on every batch. Returns the seconds of the batches after the first `warmup`,
    and the seconds of each of those steps."""
    marks = []
    for step, (dense, sparse, labels) in enumerate(batches):
        if step >= warmup:
            marks.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        loss = F.binary_cross_entropy_with_logits(model(dense, sparse), labels)
        loss.backward()          # the Strata tables take their SGD step here
        optimizer.step()
    marks.append(time.perf_counter())
    steps = [b - a for a, b in zip(marks, marks[1:])]
    return marks[-1] - marks[0], steps


def record_bytes(scratch: str, args: argparse.Namespace) -> int:
    """The record size of a table of this spec, from a throwaway store's statistics."""
    path = os.path.join(scratch, "probe")
    with strata.Store(path) as store:
        table = store.create_table("probe", args.dimension, initializer="uniform", init_args=INIT,
                                   optimizer="sgd", learning_rate=args.lr)
        size = int(_common.table_statistics(table)["record_bytes"])
        table.close()
    shutil.rmtree(path, ignore_errors=True)
    return size


def strata_tables(path: str, args: argparse.Namespace, hot: int, warm: int):
    """A store at `path` with --tables tables, every row written once (a zero-gradient SGD
    step, in chunks of 65536 keys) and checkpointed. Returns (store, tables, seconds)."""
    start = time.perf_counter()
    store = strata.Store(path)
    tables = []
    chunk = 65536
    zeros = np.zeros((chunk, args.dimension), np.float32)
    for t in range(args.tables):
        table = store.create_table(f"t{t}", args.dimension, initializer="uniform", init_args=INIT,
                                   seed=100 + t, optimizer="sgd", learning_rate=args.lr,
                                   hot_bytes=hot, warm_bytes=warm)
        for first in range(0, args.rows, chunk):
            keys = np.arange(first, min(first + chunk, args.rows), dtype=np.uint64)
            table.apply_gradients(keys, zeros[: len(keys)])
        tables.append(table)
    store.checkpoint()
    return store, tables, time.perf_counter() - start


def summed(tables, part: str, names) -> Dict[str, int]:
    total = {name: 0 for name in names}
    for table in tables:
        values = _common.table_statistics(table)[part]
        for name in names:
            total[name] += int(values.get(name, 0))
    return total


class Run:
    """One of the three runs: a fresh model and its optimizer, trained segment by segment."""

    def __init__(self, name: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                 store=None, tables=(), path: str | None = None, **facts: Any) -> None:
        self.name, self.model, self.optimizer = name, model, optimizer
        self.store, self.tables, self.path = store, list(tables), path
        self.step_seconds: List[float] = []
        self.segments: List[Dict[str, Any]] = []    # seconds, steps, other-load share of each
        self.facts: Dict[str, Any] = dict(facts)

    def warm_up(self, batches) -> None:
        train(self.model, self.optimizer, batches, len(batches))
        if self.tables:     # the timed steps' traffic: counted from here
            self.facts["rows_per_tier_before_timed"] = summed(self.tables, "rows", TIERS)
            self._traffic = summed(self.tables, "traffic", TRAFFIC)

    def segment(self, batches) -> None:
        with _common.OtherLoad() as load:
            seconds, steps = train(self.model, self.optimizer, batches, 0)
        self.step_seconds += steps
        self.segments.append({"seconds": seconds, "steps": len(batches), "other_load_share": load.share})

    def finish(self) -> Dict[str, Any]:
        result = dict(self.facts)
        if self.tables:
            after = summed(self.tables, "traffic", TRAFFIC)
            result["traffic"] = {k: after[k] - self._traffic[k] for k in TRAFFIC}
            result["rows_per_tier_after"] = summed(self.tables, "rows", TIERS)
        self.model = self.optimizer = None
        for table in self.tables:
            table.close()
        if self.store is not None:
            self.store.close()
        self.tables, self.store = [], None
        gc.collect()
        if self.path:
            shutil.rmtree(self.path, ignore_errors=True)
        seconds = sum(x["seconds"] for x in self.segments)
        shares = [x["other_load_share"] for x in self.segments]
        result.update({
            "seconds": seconds, "step_seconds": self.step_seconds, "segments": self.segments,
            "other_load_share": (None if None in shares else
                                 sum(x["other_load_share"] * x["seconds"] for x in self.segments) / seconds),
        })
        return result


def torch_run(args: argparse.Namespace) -> Run:
    bags = []
    for _ in range(args.tables):
        bag = nn.EmbeddingBag(args.rows, args.dimension, mode="sum", sparse=True)
        nn.init.uniform_(bag.weight, *INIT)
        bags.append(bag)
    model = DLRM(bags, seed=0)
    return Run("torch", model, torch.optim.SGD(model.parameters(), lr=args.lr))


def strata_run(name: str, args: argparse.Namespace, path: str, hot: int, warm: int) -> Run:
    store, tables, setup = strata_tables(path, args, hot, warm)
    rows = summed(tables, "rows", TIERS)
    model = DLRM([st.EmbeddingBag(table, mode="sum") for table in tables], seed=0)
    # torch.optim sees only the dense parameters; the tables step in the store, in backward.
    return Run(name, model, torch.optim.SGD(model.parameters(), lr=args.lr), store, tables, path,
               setup_seconds=setup, hot_bytes_per_table=hot, warm_bytes_per_table=warm,
               rows_per_tier_after_setup=rows)


def share(value) -> str:
    return "?" if value is None else f"{100 * value:.0f}%"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=8)
    parser.add_argument("--rows", type=int, default=500_000, help="rows per table")
    parser.add_argument("--dimension", type=int, default=DIMENSION,
                        help=f"embedding dimension: the model's, {DIMENSION}")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--bag", type=int, default=1, help="keys per bag (default 1)")
    parser.add_argument("--steps", type=int, default=150, help="timed steps (default 150)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first (default 20)")
    parser.add_argument("--zipf", type=float, default=1.05, help="Zipf exponent of the keys")
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate, tables and dense")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--segments", type=int, default=5,
                        help="the timed steps in this many segments, the runs taking turns (default 5)")
    parser.add_argument("--runs", default="torch,memory,10x", help="which runs, of torch,memory,10x")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batches")
    parser.add_argument("--dir", help="parent of the scratch directory (default: the system's temp)")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                        help="before each segment, wait up to this long for a second in which the CPUs are under 10%% busy")
    args = parser.parse_args()
    if args.dimension != DIMENSION:
        parser.error(f"--dimension must be {DIMENSION}: the DLRM of python/tests/strata_dlrm.py is built for it")
    runs = [r for r in args.runs.split(",") if r]
    if not runs or any(r not in RUNS for r in runs):
        parser.error(f"--runs takes a comma-separated list of {', '.join(RUNS)}")
    for name in ("tables", "rows", "batch_size", "bag", "steps", "threads", "segments"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")

    torch.set_num_threads(args.threads)
    scratch = tempfile.mkdtemp(prefix="strata-bench-dlrm.", dir=args.dir)
    try:
        return run(args, runs, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run(args: argparse.Namespace, runs: List[str], scratch: str) -> int:
    start = time.perf_counter()
    batches = make_batches(args)
    built = time.perf_counter() - start
    record = record_bytes(scratch, args)
    table_bytes = args.rows * record
    samples = args.steps * args.batch_size
    distinct = [len(np.unique(np.concatenate([b[1][t][0].numpy() for b in batches[args.warmup:]])))
                for t in range(args.tables)]

    print(_common.machine_line())
    print(f"config: {args.tables} tables x {args.rows:,} rows, dimension {args.dimension}, batch {args.batch_size}, "
          f"{args.bag} key(s) per bag, Zipf {args.zipf} keys, SGD lr {args.lr}, "
          f"{args.warmup} warm-up + {args.steps} timed steps, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads")
    print(f"        Strata record {record} bytes, a table {table_bytes / 2**20:.1f} MiB; "
          f"distinct keys per table in the timed steps: {int(np.mean(distinct)):,} on average "
          f"({100 * np.mean(distinct) / args.rows:.1f}% of the rows); batches built in {built:.1f} s")
    print()

    budgets = {"memory": (2 * table_bytes, 0), "10x": (table_bytes // 20, table_bytes // 20)}
    trainers: Dict[str, Run] = {}
    for r in runs:
        if r == "torch":
            trainers[r] = torch_run(args)
        else:
            trainers[r] = strata_run(r, args, os.path.join(scratch, r), *budgets[r])
            print(f"  {RUNS[r]}: every row written and checkpointed in "
                  f"{trainers[r].facts['setup_seconds']:.1f} s", flush=True)
        trainers[r].warm_up(batches[: args.warmup])
    # The timed steps in --segments segments; in each, every run trains on that segment's
    # batches in turn (the first run rotating), so that a slower moment of the machine falls
    # on all of them alike and each segment gives a ratio of its own.
    timed = batches[args.warmup:]
    bounds = np.linspace(0, len(timed), min(args.segments, len(timed)) + 1).astype(int)
    for i, (first, last) in enumerate(zip(bounds, bounds[1:])):
        _common.wait_idle(args.wait_idle)
        for j in range(len(runs)):
            r = runs[(i + j) % len(runs)]
            trainers[r].segment(timed[first:last])
    results: Dict[str, Dict[str, Any]] = {}
    for r in runs:
        results[r] = trainers[r].finish()
        results[r]["samples_per_second"] = samples / results[r]["seconds"]
    del trainers
    if "torch" in results:
        for r, result in results.items():
            ratios = [(t["seconds"] / x["seconds"]) for x, t in zip(result["segments"], results["torch"]["segments"])]
            result["segment_ratios_to_torch"] = ratios
    print()
    header = (f"{'run':<14} {'hot+warm budget / table':>24} {'samples/s':>11} {'/ torch':>8} "
              f"{'segments: median':>17} {'min':>6} {'max':>6}  {'ms/step':>8} {'median':>7} {'max':>7} {'others':>7}")
    print(header)
    print("-" * len(header))
    base = results.get("torch", {}).get("samples_per_second")
    for r, result in results.items():
        if r == "torch":
            budget = "all in memory"
        else:
            budget = f"{(result['hot_bytes_per_table'] + result['warm_bytes_per_table']) / table_bytes:.2f}x the table"
        result["ratio_to_torch"] = result["samples_per_second"] / base if base else None
        ratio = f"{result['ratio_to_torch']:.3f}" if base else "-"
        seg = result.get("segment_ratios_to_torch")
        if seg:
            result["segment_ratio_median"] = _common.median(seg)
            segs = f"{result['segment_ratio_median']:>17.3f} {min(seg):>6.3f} {max(seg):>6.3f}"
        else:
            segs = f"{'-':>17} {'-':>6} {'-':>6}"
        result["step_ms_median"] = 1e3 * _common.median(result["step_seconds"])
        print(f"{RUNS[r]:<14} {budget:>24} {result['samples_per_second']:>11,.0f} {ratio:>8} {segs}  "
              f"{1e3 * result['seconds'] / args.steps:>8.2f} {result['step_ms_median']:>7.2f} "
              f"{1e3 * max(result['step_seconds']):>7.1f} {share(result['other_load_share']):>7}")

    print("(/ torch: over all timed steps; segments: the ratio within each of the segments, where the runs "
          "take turns; ms/step: the mean, the median\n and the slowest of the timed steps; others: the share of "
          "the CPUs other processes used during the timed steps, over 10% makes the figures unreliable)")
    noisy = [RUNS[r] for r, x in results.items() if (x["other_load_share"] or 0) > 0.10]
    if noisy:
        print(f"warning: other processes used over 10% of the CPUs during {', '.join(noisy)}: "
              "its figures are not reliable (rerun on an idle machine)")
    strata_runs = [r for r in results if r != "torch"]
    if strata_runs:
        print()
        print("Strata tiers, summed over the tables: rows per tier after writing and checkpointing; "
              "where the timed steps' lookups and updates found their rows")
        header = (f"{'run':<14} {'rows hot':>10} {'warm':>9} {'spill':>9} {'cold':>10}   "
                  f"{'hits hot':>10} {'warm':>9} {'spill':>9} {'cold':>9} {'new':>7} {'cold %':>7}")
        print(header)
        print("-" * len(header))
        for r in strata_runs:
            rows, t = results[r]["rows_per_tier_after_setup"], results[r]["traffic"]
            accesses = sum(t.values())
            results[r]["cold_share_of_accesses"] = t["cold_hits"] / accesses if accesses else 0.0
            print(f"{RUNS[r]:<14} {rows['hot']:>10,} {rows['warm']:>9,} {rows['spill']:>9,} {rows['cold']:>10,}   "
                  f"{t['hot_hits']:>10,} {t['warm_hits']:>9,} {t['spill_hits']:>9,} {t['cold_hits']:>9,} "
                  f"{t['initializer_hits']:>7,} {100 * results[r]['cold_share_of_accesses']:>6.1f}%")

    config = {k: getattr(args, k) for k in ("tables", "rows", "dimension", "batch_size", "bag", "steps",
                                            "warmup", "zipf", "lr", "threads", "seed", "segments")}
    config.update({"record_bytes": record, "table_bytes": table_bytes, "torch": torch.__version__,
                   "distinct_keys_per_table_timed": distinct, "library": strata.library_path()})
    _common.write_json(args.json, {"benchmark": "dlrm", "machine": _common.machine(), "config": config,
                                   "runs": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
