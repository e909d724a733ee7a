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
input ends the script with a one-line message on stderr and exit status 1.
Needs matplotlib and numpy: run it with the venv of tools/setup.sh.
"""
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")  # reports are drawn on headless machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

# Drawing the same input twice gives the same SVG, so reports diff cleanly.
plt.rcParams["svg.hashsalt"] = "strata"


class Malformed(Exception):
    pass


def number(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Malformed(f"{what} is {json.dumps(value)}, not a number")
    return float(value)


def field(obj, key, where):
    if not isinstance(obj, dict) or key not in obj:
        raise Malformed(f"{where} has no \"{key}\"")
    return obj[key]


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise Malformed(f"{path}: no such file")
    except (OSError, UnicodeDecodeError) as e:
        raise Malformed(f"{path}: {e}")
    except json.JSONDecodeError as e:
        raise Malformed(f"{path}: not JSON ({e})")


def save(fig, directory, name):
    for ext in ("png", "svg"):
        path = os.path.join(directory, f"{name}.{ext}")
        # No date in the SVG either, for the same reason as the hash salt.
        fig.savefig(path, dpi=120, metadata={"Date": None} if ext == "svg" else None)
        print(f"wrote {path}")
    plt.close(fig)


def plain(value, _pos=None):
    # Log axes default to 10^n labels, and "g" to 3.48e+03; plain numbers read faster.
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def grid(ax):
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)


def bench(directory):
    path = os.path.join(directory, "bench.json")
    report = load_json(path)
    dim = int(number(field(report, "dim", path), "dim"))
    batch = int(number(field(report, "batch", path), "batch"))
    rows = int(number(field(report, "rows", path), "rows"))
    machine = str(field(report, "machine", path))
    subtitle = f"{rows:,} rows, {machine}"

    latency = field(report, "latency", path)
    if not isinstance(latency, dict) or not latency:
        raise Malformed(f"{path}: \"latency\" has no series")
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for name, series in latency.items():
        raw = field(series, "samples_us", f"latency \"{name}\"")
        if not isinstance(raw, list) or not raw:
            raise Malformed(f"{path}: latency \"{name}\" has no samples")
        us = np.sort([number(v, f"a sample of latency \"{name}\"") for v in raw])
        if us[0] <= 0:
            raise Malformed(f"{path}: latency \"{name}\" has a sample <= 0 µs")
        p50, p99 = np.percentile(us, [50, 99])
        ax.step(us, np.arange(1, len(us) + 1) / len(us), where="post",
                label=f"{name}: p50 {plain(p50)} µs, p99 {plain(p99)} µs")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(plain))
    ax.set_ylim(0, 1)
    ax.set_xlabel("latency of one batch lookup (µs, log scale)")
    ax.set_ylabel("fraction of batches at most this slow")
    grid(ax)
    # Below the axes: the curves sweep the whole plot, any corner inside may hide one.
    fig.legend(loc="outside lower center", ncol=2)
    fig.suptitle(f"Batch lookup latency (batch {batch}, dim {dim})")
    ax.set_title(subtitle, fontsize="small")
    save(fig, directory, "latency-cdf")

    policy = field(report, "policy", path)
    if not isinstance(policy, list) or not policy:
        raise Malformed(f"{path}: \"policy\" has no points")
    curves = {}
    for i, point in enumerate(policy):
        where = f"{path}: policy[{i}]"
        values = [number(field(point, k, where), f"{where}.{k}")
                  for k in ("zipf", "cache_fraction", "hit_ratio", "static_optimum")]
        if values[1] <= 0:
            raise Malformed(f"{where}.cache_fraction is {values[1]:g}, not > 0")
        curves.setdefault(values[0], []).append(values[1:])
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for zipf, colour in zip(sorted(curves), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 9):
        fraction, hit, optimum = np.array(sorted(curves[zipf])).T
        ax.plot(fraction * 100, hit, "o-", color=colour, label=f"zipf {zipf:g}: Strata")
        ax.plot(fraction * 100, optimum, "--", color=colour, label=f"zipf {zipf:g}: static optimum")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
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


def read_metrics(path):
    events = {"progress": [], "evaluation": [], "checkpoint": []}
    needs = {"progress": ("step", "loss", "samples_per_second"),
             "evaluation": ("step", "auc", "logloss"),
             "checkpoint": ("step",)}
    try:
        with open(path) as f:
            lines = list(f)
    except FileNotFoundError:
        raise Malformed(f"{path}: no such file")
    except (OSError, UnicodeDecodeError) as e:
        raise Malformed(f"{path}: {e}")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise Malformed(f"{where}: not JSON ({e})")
        kind = field(record, "event", where)
        if kind in needs:  # other events may come later; they are not drawn
            events[kind].append([number(field(record, k, where), f"{where}: {k}") for k in needs[kind]])
    if not events["progress"]:
        raise Malformed(f"{path}: no progress events")
    return {k: np.array(v).reshape(-1, len(needs[k])) for k, v in events.items()}


def train(directory):
    events = read_metrics(os.path.join(directory, "metrics.jsonl"))
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

    if not len(events["evaluation"]):
        print(f"no evaluation events in {directory}/metrics.jsonl: training-metrics not drawn")
        return
    step, auc, logloss = events["evaluation"].T
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 6), layout="constrained")
    top.plot(step, auc, "o-", markersize=4, label="evaluation")
    if planted is not None:
        top.axhline(planted, color="grey", linestyle="--", label="planted model (best reachable)")
    top.set_ylabel("AUC")
    top.legend(loc="lower right")
    bottom.plot(step, logloss, "o-", markersize=4)
    bottom.set_ylabel("logloss")
    bottom.set_xlabel("step")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    fig.suptitle("Evaluation AUC and logloss")
    save(fig, directory, "training-metrics")


def main(argv):
    modes = {"bench": bench, "train": train}
    if len(argv) != 3 or argv[1] not in modes:
        raise Malformed("usage: plot-report.py bench|train DIR")
    modes[argv[1]](argv[2])


if __name__ == "__main__":
    try:
        main(sys.argv)
    except Malformed as e:
        print(f"plot-report: {e}", file=sys.stderr)
        sys.exit(1)
