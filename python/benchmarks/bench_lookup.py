#!/usr/bin/env python3
"""The Python binding's overhead on a lookup: a 1024-key lookup at dimension 64 through
``table.lookup`` against the same lookup timed inside the library (``strata_time_lookups``),
side by side in one process, on one table, in one run.

Setup: a store in a scratch directory, a table of dimension 64 (uniform initializer, SGD),
100,000 keys written once (a zero-gradient step each, in batches) and checkpointed, so every
row exists and is hot; 1024 distinct keys drawn from them with a fixed seed (a uint64 array).

Then ``--rounds`` rounds (one more, first, not counted: the warm-up), each measuring, in this
order, ``--repeats`` lookups of the 1024 keys:

  a. swift,  one buffer:   strata_time_lookups(..., fresh_output=0): the library's own
                           lookup in a loop inside the library, into one buffer;
  b. python, one buffer:   ``table.lookup(keys, out=rows)`` in a Python loop, timed with
                           time.perf_counter_ns around the loop;
  c. swift,  new buffer:   strata_time_lookups(..., fresh_output=1): a malloc'd buffer per
                           lookup, freed after it;
  d. python, new array:    ``table.lookup(keys)``, a new numpy array per call.

Reported per mode: the median over rounds of µs per call on each side, and the median,
min and max over rounds of the per-round ratio Python / Swift (each round's two figures
are taken back to back, so a ratio is not skewed by a slower moment of the machine).
For context it also times what the Python side adds, alone: a ctypes call into the library
that does no work (strata_lookup with 0 keys), and np.empty of the (1024, 64) float32
result. Nothing is asserted: the figures are printed and, with --json, written.

Usage:
  python bench_lookup.py [--rounds 9] [--repeats 2000] [--keys 1024] [--dimension 64]
                         [--rows 100000] [--dir DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import inspect
import os
import shutil
import sys
import tempfile
import time
from ctypes import POINTER, c_double, c_int, c_int32, c_int64, c_size_t, c_void_p

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import strata  # noqa: E402
from strata import _native  # noqa: E402

MODES = (
    ("one buffer", 0, "table.lookup(keys, out=rows)"),
    ("new buffer", 1, "table.lookup(keys)"),
)


def direct_timer(table, keys: np.ndarray, rows: np.ndarray):
    """``(time(fresh, repeats) -> seconds, description)``: the C function
    ``strata_time_lookups`` through ctypes with the header's eight arguments (as the package
    declares it if its declaration has them, else a prototype of our own over the same
    loaded library), into ``rows`` when fresh is 0."""
    declared = _native.lib.strata_time_lookups
    if declared.argtypes is not None and len(declared.argtypes) == 8:
        function, how = declared, "strata._native.lib.strata_time_lookups (ctypes)"
    else:
        prototype = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t, c_void_p, c_size_t,
                                     c_int64, c_int32, POINTER(c_double))
        function = prototype(("strata_time_lookups", _native.lib))
        how = ("a ctypes prototype of strata_time_lookups with the header's 8 arguments "
               f"(the package declares {len(declared.argtypes or [])})")
    handle = c_void_p(_common.table_handle(table))
    seconds = c_double()
    key_address, row_address, count, floats = keys.ctypes.data, rows.ctypes.data, keys.shape[0], rows.size

    def time_(fresh: int, repeats: int) -> float:
        status = function(handle, key_address, count, None if fresh else row_address,
                          floats, repeats, fresh, ctypes.byref(seconds))
        if status:
            raise RuntimeError(f"strata_time_lookups: status {status}: "
                               f"{_native.lib.strata_last_error().decode()}")
        return seconds.value
    return time_, how


def swift_timer(table, keys: np.ndarray, rows: np.ndarray):
    """``(time(fresh, repeats) -> seconds, description)``: ``strata_time_lookups`` on ``table``,
    through ``Table.time_lookups`` if the package has it with a ``fresh_output`` argument,
    else through :func:`direct_timer`."""
    method = getattr(table, "time_lookups", None)
    if method is not None and "fresh_output" in inspect.signature(method).parameters:
        return (lambda fresh, repeats: method(keys, repeats, fresh_output=bool(fresh)),
                "Table.time_lookups(keys, repeats, fresh_output=...) -> strata_time_lookups")
    return direct_timer(table, keys, rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="counted rounds (default 9)")
    parser.add_argument("--repeats", type=int, default=2000, help="lookups per measurement (default 2000)")
    parser.add_argument("--keys", type=int, default=1024, help="keys per lookup (default 1024)")
    parser.add_argument("--dimension", type=int, default=64, help="table dimension (default 64)")
    parser.add_argument("--rows", type=int, default=100_000, help="rows written before (default 100000)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the key sample (default 7)")
    parser.add_argument("--dir", help="scratch directory (default: a new temporary one, removed at the end)")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                        help="first wait up to this long for a second in which the CPUs are under 10%% busy")
    args = parser.parse_args()
    if args.rounds < 1 or args.repeats < 1 or not 1 <= args.keys <= args.rows:
        parser.error("--rounds and --repeats must be at least 1, --keys in [1, --rows]")

    scratch = tempfile.mkdtemp(prefix="strata-bench-lookup.", dir=args.dir)
    try:
        return run(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run(args: argparse.Namespace, scratch: str) -> int:
    d = args.dimension
    store = strata.Store(os.path.join(scratch, "store"))
    table = store.create_table("lookup", d, initializer="uniform", init_args=(-0.05, 0.05),
                               seed=1, optimizer="sgd", learning_rate=0.01)
    chunk = 8192
    zeros = np.zeros((chunk, d), np.float32)
    for start in range(0, args.rows, chunk):
        keys = np.arange(start, min(start + chunk, args.rows), dtype=np.uint64)
        table.apply_gradients(keys, zeros[: len(keys)])
    store.checkpoint()
    s = _common.table_statistics(table)
    rng = np.random.default_rng(args.seed)
    keys = np.ascontiguousarray(rng.choice(args.rows, size=args.keys, replace=False).astype(np.uint64))
    rows = np.empty((args.keys, d), np.float32)

    time_lookups, how = swift_timer(table, keys, rows)

    def swift(fresh: int, repeats: int) -> float:
        return time_lookups(fresh, repeats) * 1e6 / repeats

    def python(fresh: int, repeats: int) -> float:
        lookup = table.lookup
        if fresh:
            start = time.perf_counter_ns()
            for _ in range(repeats):
                lookup(keys)
            end = time.perf_counter_ns()
        else:
            start = time.perf_counter_ns()
            for _ in range(repeats):
                lookup(keys, out=rows)
            end = time.perf_counter_ns()
        return (end - start) / 1e3 / repeats

    # Both sides read the same rows.
    table.lookup(keys, out=rows)
    swift(0, 1)
    assert np.array_equal(rows, table.lookup(keys)), "the two sides read different rows"

    results = {name: {"swift_us": [], "python_us": [], "ratio": []} for name, _, _ in MODES}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    _common.wait_idle(args.wait_idle)
    try:
        with _common.OtherLoad() as load:
            for round_ in range(args.rounds + 1):
                for name, fresh, _ in MODES:
                    sw = swift(fresh, args.repeats)
                    py = python(fresh, args.repeats)
                    if round_ == 0:
                        continue     # warm-up
                    r = results[name]
                    r["swift_us"].append(sw)
                    r["python_us"].append(py)
                    r["ratio"].append(py / sw)
        context = overheads(table, keys, rows, args, direct_timer(table, keys, rows)[0])
    finally:
        if gc_was_enabled:
            gc.enable()

    after = _common.table_statistics(table)
    store.close()

    config = {"keys": args.keys, "dimension": d, "rows": args.rows, "rounds": args.rounds,
              "repeats": args.repeats, "record_bytes": s.get("record_bytes"),
              "rows_per_tier": after.get("rows"), "swift_side": how,
              "library": strata.library_path(), "other_load_share": load.share}
    print(_common.machine_line())
    print(f"config: {args.keys} distinct keys of {args.rows} written rows (all hot), dimension {d}, "
          f"{args.rounds} rounds (+1 warm-up) of {args.repeats} lookups per mode and side; "
          f"record {s.get('record_bytes')} bytes")
    print(f"swift side: {how}")
    note = _common.load_note(load.share, "the rounds")
    if note:
        print(note)
    print()
    header = f"{'mode':<12} {'swift µs/call':>14} {'python µs/call':>15} {'python/swift':>13} {'min':>7} {'max':>7}   python call"
    print(header)
    print("-" * len(header))
    summary = {}
    for name, _, call in MODES:
        r = results[name]
        row = {
            "swift_us_median": _common.median(r["swift_us"]),
            "python_us_median": _common.median(r["python_us"]),
            "ratio_median": _common.median(r["ratio"]),
            "ratio_min": min(r["ratio"]),
            "ratio_max": max(r["ratio"]),
            "python_call": call,
            "rounds": r,
        }
        summary[name] = row
        print(f"{name:<12} {row['swift_us_median']:>14.2f} {row['python_us_median']:>15.2f} "
              f"{row['ratio_median']:>13.3f} {row['ratio_min']:>7.3f} {row['ratio_max']:>7.3f}   {call}")
    print()
    print("what the Python side adds, alone (median of rounds, µs per call):")
    for label, value in context.items():
        print(f"  {label:<72} {value:8.3f}")

    _common.write_json(args.json, {"benchmark": "lookup", "machine": _common.machine(),
                                   "config": config, "modes": summary, "python_side_alone_us": context})
    return 0


def overheads(table, keys: np.ndarray, rows: np.ndarray, args: argparse.Namespace, time_lookups) -> dict:
    """Per-call cost of pieces of the Python side alone, median of --rounds measurements
    (the 1024-key ones into `rows`, the buffer of the rounds)."""
    lib_lookup = _native.lib.strata_lookup
    lib_free = _native.lib.strata_free
    handle = _common.table_handle(table)
    key_address = keys.ctypes.data
    empty = np.empty
    d = args.dimension
    n = args.keys
    repeats = max(args.repeats, 10_000)

    def loop(body) -> float:
        values = []
        for _ in range(args.rounds):
            start = time.perf_counter_ns()
            body(repeats)
            values.append((time.perf_counter_ns() - start) / 1e3 / repeats)
        return _common.median(values)

    def loop_n(body) -> float:
        values = []
        for _ in range(args.rounds):
            start = time.perf_counter_ns()
            body(args.repeats)
            values.append((time.perf_counter_ns() - start) / 1e3 / args.repeats)
        return _common.median(values)

    def empty_loop(r):
        for _ in range(r):
            pass

    def ctypes_free(r):
        for _ in range(r):
            lib_free(None)

    def ctypes_nothing(r):
        for _ in range(r):
            lib_lookup(handle, key_address, 0, None, 0)

    def numpy_empty(r):
        for _ in range(r):
            empty((n, d), np.float32)

    small = keys[:1]
    one_row = np.empty((1, d), np.float32)

    def python_one_key(r):
        for _ in range(r):
            table.lookup(small, out=one_row)

    def ctypes_one_key(r):
        a = one_row.ctypes.data
        k = small.ctypes.data
        for _ in range(r):
            lib_lookup(handle, k, 1, a, d)

    def ctypes_all_keys(r):
        a = rows.ctypes.data
        for _ in range(r):
            lib_lookup(handle, key_address, n, a, n * d)

    def python_all_keys(r):
        for _ in range(r):
            table.lookup(keys, out=rows)

    def inside_one_at_a_time() -> float:
        # The library's own time for one lookup, timed inside it, when each lookup is a
        # separate call from a Python loop (as table.lookup's are) instead of a tight loop
        # of --repeats inside the library: what the caller's code between calls costs the
        # lookup itself (caches, branch predictors), with no binding time in it.
        values = []
        for _ in range(args.rounds):
            total = 0.0
            for _ in range(args.repeats):
                total += time_lookups(0, 1)
            values.append(total * 1e6 / args.repeats)
        return _common.median(values)

    return {
        "empty Python loop iteration": loop(empty_loop),
        "ctypes call of strata_free(NULL) (ctypes alone)": loop(ctypes_free),
        "ctypes call of strata_lookup with 0 keys (ctypes, library entry)": loop(ctypes_nothing),
        f"np.empty(({n}, {d}), float32)": loop(numpy_empty),
        "ctypes strata_lookup of 1 key into one buffer": loop(ctypes_one_key),
        "table.lookup of 1 key, out=buffer": loop(python_one_key),
        f"ctypes strata_lookup of the {n} keys into one buffer (no wrapper)": loop_n(ctypes_all_keys),
        f"table.lookup of the {n} keys, out=buffer (as in a., same loop)": loop_n(python_all_keys),
        f"library's own time of one {n}-key lookup, one call per Python iteration": inside_one_at_a_time(),
    }


if __name__ == "__main__":
    sys.exit(main())
