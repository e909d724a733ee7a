"""Trains the test DLRM on a strata store, checkpointing, resuming from the last checkpoint.

    python train_for_kill.py STORE [--steps 200] [--every 20] [--sleep SECONDS]

Batch i (1-based) is make_batch(i): the run is a function of the steps done, so a run killed
and resumed ends where an uninterrupted one does. Prints "resumed at STEP", then "step I" after
each training step and "checkpoint I" after each checkpoint, and "done" at the end, flushed.

STRATA_TEST_DIE makes the process SIGKILL itself around checkpoint STEP:
    before:STEP        right before save_checkpoint
    after:STEP         right after save_checkpoint returns
    during:STEP:SECS   from another thread SECS seconds after save_checkpoint starts (mid-write
                       if the checkpoint takes longer than that, else soon after)
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
import threading
import time

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
if importlib.util.find_spec("strata") is None:   # as conftest.py: the source tree's package
    sys.path.insert(0, os.path.dirname(HERE))

import strata  # noqa: E402
import strata.torch as st  # noqa: E402
from strata_dlrm import BAG_MODES, DLRM, create_tables, make_batch  # noqa: E402

TABLE_OPTIMIZERS = ("adagrad", "rowwise_adagrad", "adam")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    die_mode, die_step, die_delay = None, -1, 0.0
    if os.environ.get("STRATA_TEST_DIE"):
        parts = os.environ["STRATA_TEST_DIE"].split(":")
        die_mode, die_step = parts[0], int(parts[1])
        die_delay = float(parts[2]) if len(parts) > 2 else 0.0

    store = strata.Store(args.store)
    tables = create_tables(store, optimizers=TABLE_OPTIMIZERS, learning_rate=0.05)
    model = DLRM([st.EmbeddingBag(t, mode=m) for t, m in zip(tables, BAG_MODES)])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
    extra = st.load_checkpoint(store, model, optimizer)
    start = extra["step"] if extra is not None else 0
    print(f"resumed at {start}", flush=True)

    loss_fn = nn.BCEWithLogitsLoss()
    for step in range(start + 1, args.steps + 1):
        dense, sparse, labels = make_batch(step)
        optimizer.zero_grad()
        loss_fn(model(dense, sparse), labels).backward()
        optimizer.step()
        print(f"step {step}", flush=True)
        if args.sleep:
            time.sleep(args.sleep)
        if step % args.every == 0 or step == args.steps:
            if step == die_step and die_mode == "before":
                die()
            if step == die_step and die_mode == "during":
                threading.Timer(die_delay, die).start()
            st.save_checkpoint(store, model, optimizer, extra={"step": step})
            if step == die_step and die_mode == "after":
                die()
            print(f"checkpoint {step}", flush=True)
    store.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
