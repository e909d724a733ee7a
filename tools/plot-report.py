#!/usr/bin/env python3
"""Draws the pictures of `strata bench --report DIR` and `strata train --report DIR`.

  plot-report.py bench DIR   reads DIR/bench.json and draws
      latency-cdf   empirical CDF of one batch lookup's latency, one curve per series
                    (hot, warm, cold, ...), with each series' p50 and p99 in the legend;
      hit-ratio     hot-tier hit ratio vs cache size for each Zipf exponent: the store's
                    policy (solid) against the static optimum, a cache holding the most
                    frequent rows (dashed, same colour).
  plot-report.py train DIR   reads DIR/metrics.jsonl (`strata train --metrics`) and, if it
                    exists, DIR/summary.json, and draws
      training-loss     training loss and samples/s vs step, checkpoints as grey lines;
      training-metrics  evaluation AUC and logloss vs step, with the planted model's AUC
                        (summary.json "planted_auc") as the best reachable; skipped when
                        there was no evaluation.

Each picture is written as DIR/NAME.png (dpi 120) and DIR/NAME.svg. Missing or malformed
input ends the script with a one-line message on stderr and exit status 1, before any
picture is written. Needs matplotlib and numpy: run it with the venv of tools/setup.sh.
"""
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")  # reports are drawn on headless machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import LogFormatter  # noqa: E402

# Drawing the same input twice gives the same SVG, so reports diff cleanly.
plt.rcParams["svg.hashsalt"] = "strata"


class Failure(Exception):
    """A problem told in one line on stderr instead of a traceback."""


def number(value, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Failure(f"{where} is {json.dumps(value)}, not a number")
    return float(value)


def field(obj, key, where):
    if not isinstance(obj, dict) or key not in obj:
        raise Failure(f"{where} has no \"{key}\"")
    return obj[key]


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        raise Failure(f"{path}: no such file")
    except (OSError, UnicodeDecodeError) as e:
        raise Failure(f"{path}: {e}")


def load_json(path):
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise Failure(f"{path}: not JSON ({e})")


def save(fig, directory, name):
    for ext in ("png", "svg"):
        path = os.path.join(directory, f"{name}.{ext}")
        try:
            # No date in the SVG either, for the same reason as the hash salt.
            fig.savefig(path, dpi=120, metadata={"Date": None} if ext == "svg" else None)
        except OSError as e:
            raise Failure(f"{path}: {e.strerror or e}")
        print(f"wrote {path}")
    plt.close(fig)


def plain(value):
    # Log axes default to 10^n labels, and "g" to 3.48e+03; plain numbers read faster.
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


class PlainLog(LogFormatter):
    """Lets matplotlib choose which log ticks get a label, but writes the label as text(x)."""

    # Its own labels are 10^n, or 3x10^1 when the data spans less than a decade.
    def __init__(self, text):
        super().__init__()
        self.text = text

    def __call__(self, x, pos=None):
        return self.text(x) if super().__call__(x, pos) else ""


def log_x(ax, text):
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(PlainLog(text))
    ax.xaxis.set_minor_formatter(PlainLog(text))


def grid(ax):
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)


def read_bench(path):
    report = load_json(path)
    meta = {k: int(number(field(report, k, path), f"{path}: {k}")) for k in ("rows", "dim", "batch")}
    meta["machine"] = str(field(report, "machine", path))

    latency = field(report, "latency", path)
    if not isinstance(latency, dict) or not latency:
        raise Failure(f"{path}: \"latency\" has no series")
    samples = {}
    for name, series in latency.items():
        where = f"{path}: latency \"{name}\""
        raw = field(series, "samples_us", where)
        if not isinstance(raw, list) or not raw:
            raise Failure(f"{where} has no samples")
        samples[name] = np.sort([number(v, f"{where}: a sample") for v in raw])
        if samples[name][0] <= 0:  # a log axis cannot show it
            raise Failure(f"{where} has a sample of {samples[name][0]:g} µs")

    policy = field(report, "policy", path)
    if not isinstance(policy, list) or not policy:
        raise Failure(f"{path}: \"policy\" has no points")
    curves = {}
    for i, point in enumerate(policy):
        where = f"{path}: policy[{i}]"
        values = [number(field(point, k, where), f"{where}.{k}")
                  for k in ("zipf", "cache_fraction", "hit_ratio", "static_optimum")]
        if values[1] <= 0:
            raise Failure(f"{where}.cache_fraction is {values[1]:g}, not > 0")
        curves.setdefault(values[0], []).append(values[1:])
    return meta, samples, {z: np.array(sorted(c)).T for z, c in sorted(curves.items())}


def bench(directory):
    meta, samples, curves = read_bench(os.path.join(directory, "bench.json"))
    subtitle = f"{meta['rows']:,} rows, {meta['machine']}"

    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for name, us in samples.items():
        p50, p99 = np.percentile(us, [50, 99])
        # Starting from 0 at the fastest sample draws its step too (all of it, if alone).
        ax.step(np.r_[us[0], us], np.arange(len(us) + 1) / len(us), where="post",
                label=f"{name}: p50 {plain(p50)} µs, p99 {plain(p99)} µs")
    log_x(ax, plain)
    ax.set_ylim(0, 1)
    ax.set_xlabel("latency of one batch lookup (µs, log scale)")
    ax.set_ylabel("fraction of batches at most this slow")
    grid(ax)
    # Below the axes: the curves sweep the whole plot, any corner inside may hide one.
    fig.legend(loc="outside lower center", ncol=2)
    fig.suptitle(f"Batch lookup latency (batch {meta['batch']}, dim {meta['dim']})")
    ax.set_title(subtitle, fontsize="small")
    save(fig, directory, "latency-cdf")

    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (zipf, (fraction, hit, optimum)) in enumerate(curves.items()):
        colour = colours[i % len(colours)]
        ax.plot(fraction * 100, hit, "o-", color=colour, label=f"zipf {zipf:g}: Strata")
        ax.plot(fraction * 100, optimum, "--", color=colour, label=f"zipf {zipf:g}: static optimum")
    log_x(ax, lambda v: f"{v:g}%")
    ax.set_ylim(0, 1)
    ax.set_xlabel("hot-tier size (% of rows, log scale)")
    ax.set_ylabel("hot-tier hit ratio")
    grid(ax)
    # Below the axes, one column per exponent (Strata above its optimum): inside, it would
    # cover the curves it explains.
    fig.legend(loc="outside lower center", ncol=min(len(curves), 4))
    fig.suptitle("Hot-tier hit ratio vs cache size")
    ax.set_title(subtitle, fontsize="small")
    save(fig, directory, "hit-ratio")


# The metrics drawn from evaluation events, the first two found: a protocol's headline metric
# and its companion (click-through, ratings, ranking).
PREFERRED_METRICS = ["auc", "logloss", "rmse", "mae", "ndcg@10", "recall@10"]
EVALUATION_FIELDS = {"event", "time", "step", "split", "samples"}


def read_metrics(path):
    needs = {"progress": ("step", "loss", "samples_per_second"),
             "checkpoint": ("step",)}
    events = {kind: [] for kind in needs}
    evaluations = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise Failure(f"{where}: not JSON ({e.msg} at column {e.colno})")
        kind = field(record, "event", where)
        if kind == "evaluation":
            number(field(record, "step", where), f"{where}: step")
            evaluations.append(record)
        elif kind in needs:  # other events may come later; they are not drawn
            events[kind].append([number(field(record, k, where), f"{where}: {k}") for k in needs[kind]])
    if not events["progress"]:
        raise Failure(f"{path}: no progress events")
    arrays = {kind: np.array(rows).reshape(-1, len(needs[kind])) for kind, rows in events.items()}
    return arrays, evaluations


def train(directory):
    events, evaluations = read_metrics(os.path.join(directory, "metrics.jsonl"))
    summary_path = os.path.join(directory, "summary.json")
    planted = None
    if os.path.exists(summary_path):
        summary = load_json(summary_path)
        if isinstance(summary, dict) and "planted_auc" in summary:
            planted = number(summary["planted_auc"], f"{summary_path}: planted_auc")
    checkpoints = events["checkpoint"][:, 0]

    step, loss, speed = events["progress"].T
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 6), layout="constrained")
    top.plot(step, loss)
    top.set_ylabel("training loss\n(mean since previous point)")
    bottom.plot(step, speed)
    bottom.set_ylabel("samples/s")
    bottom.set_ylim(bottom=0)  # from zero, so a dip reads as its true share of the speed
    bottom.set_xlabel("step")
    for ax in (top, bottom):
        for i, s in enumerate(checkpoints):
            ax.axvline(s, color="grey", linewidth=0.5, label="checkpoint" if i == 0 else None)
        ax.grid(True, alpha=0.3)
    if len(checkpoints):
        top.legend(loc="upper right")
    fig.suptitle("Training loss and throughput")
    save(fig, directory, "training-loss")

    if not evaluations:
        print(f"no evaluation events in {directory}/metrics.jsonl: training-metrics not drawn")
        return
    found = {k for e in evaluations for k in e if k not in EVALUATION_FIELDS}
    metrics = ([m for m in PREFERRED_METRICS if m in found] + sorted(found - set(PREFERRED_METRICS)))[:2]
    splits = list(dict.fromkeys(e.get("split", "eval") for e in evaluations))
    fig, axes = plt.subplots(len(metrics), 1, sharex=True, figsize=(8, 3 * len(metrics)), layout="constrained", squeeze=False)
    for ax, metric in zip(axes[:, 0], metrics):
        for split in splits:
            points = [(e["step"], e[metric]) for e in evaluations if e.get("split", "eval") == split and metric in e]
            points = [(s, v) for s, v in points if isinstance(v, (int, float))]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, "o-", markersize=4, label=split)
        if metric == "auc" and planted is not None:
            ax.axhline(planted, color="grey", linestyle="--", label="planted model (best reachable)")
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best")
    axes[-1, 0].set_xlabel("step")
    fig.suptitle("Evaluation " + " and ".join(metrics))
    save(fig, directory, "training-metrics")


def main(argv):
    modes = {"bench": bench, "train": train}
    if len(argv) != 3 or argv[1] not in modes:
        raise Failure("usage: plot-report.py bench|train DIR")
    modes[argv[1]](argv[2])


if __name__ == "__main__":
    try:
        main(sys.argv)
    except Failure as e:
        print(f"plot-report: {e}", file=sys.stderr)
        sys.exit(1)
