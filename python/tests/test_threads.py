"""Threads and processes: many Python threads on one table (ctypes releases the GIL), per
thread error messages, and PyTorch DataLoader workers (fork and spawn) reading a store that the
main process has open for writing."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import strata

U64 = np.uint64
F32 = np.float32
DIMENSION = 16
KEYS_PER_THREAD = 2000


def run_threads(bodies: list[Callable[[], None]]) -> None:
    """Runs each body on a thread of its own, all released at once; re-raises the first failure."""
    barrier = threading.Barrier(len(bodies))
    errors: list[BaseException] = []

    def wrap(body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                barrier.wait()
                body()
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        return run

    threads = [threading.Thread(target=wrap(body)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
        assert not thread.is_alive(), "a thread did not finish"
    if errors:
        raise errors[0]


def train(table: strata.Table, worker: int, steps: int = 40) -> None:
    """A deterministic run on keys [worker * KEYS_PER_THREAD, (worker + 1) * KEYS_PER_THREAD):
    each step's gradient depends on the rows it read, so a lost or torn update shows."""
    rng = np.random.default_rng(worker)
    base = worker * KEYS_PER_THREAD
    for _ in range(steps):
        ids = (base + rng.integers(0, KEYS_PER_THREAD, 512)).astype(U64)
        rows = table.lookup(ids)
        gradients = (rows * F32(0.5) + rng.standard_normal(rows.shape).astype(F32)).astype(F32)
        table.apply_gradients(ids, gradients)
        if rng.random() < 0.1:
            table.remove(ids[:8])


def make_table(store: strata.Store) -> strata.Table:
    return store.create_table(
        "shared", DIMENSION, initializer="uniform", init_args=(-0.1, 0.1), seed=4, optimizer="adagrad", learning_rate=0.05
    )


def test_threads_on_disjoint_keys_match_a_sequential_run(tmp_path: Path) -> None:
    every_key = np.arange(4 * KEYS_PER_THREAD, dtype=U64)
    with strata.Store(tmp_path / "threads") as s:
        table = make_table(s)
        run_threads([lambda w=w: train(table, w) for w in range(4)])
        threaded = table.peek(every_key)
    with strata.Store(tmp_path / "sequential") as s:
        table = make_table(s)
        for worker in range(4):
            train(table, worker)
        sequential = table.peek(every_key)
    np.testing.assert_array_equal(threaded, sequential)


def test_lookups_and_checkpoints_beside_updates(tmp_path: Path) -> None:
    """Big lookups on one thread, updates on another, checkpoints on a third: each sees what it
    should (the big lookups read keys nobody writes)."""
    big = np.arange(1_000_000, 1_050_000, dtype=U64)
    with strata.Store(tmp_path / "s") as s:
        table = s.create_table("t", 64, initializer="constant", init_args=(0.5,))
        expected = np.full((len(big), 64), 0.5, F32)
        done = threading.Event()
        lookups = [0]

        def read() -> None:
            out = np.empty((len(big), 64), F32)
            while not done.is_set() or lookups[0] < 3:
                out[:] = 0
                assert table.lookup(big, out=out) is out
                np.testing.assert_array_equal(out, expected)
                lookups[0] += 1

        def write() -> None:
            try:
                ids = np.arange(1000, dtype=U64)
                for _ in range(200):
                    table.apply_gradients(ids, np.ones((1000, 64), F32))
            finally:
                done.set()

        def checkpoint() -> None:
            while not done.is_set():
                s.checkpoint(b"c")

        run_threads([read, write, checkpoint])
        assert lookups[0] >= 3
        rows = table.lookup(np.arange(1000, dtype=U64))
        value = F32(0.5)
        for _ in range(200):
            value = F32(value - F32(0.01) * F32(1))
        np.testing.assert_array_equal(rows, np.full((1000, 64), value, F32))


def test_error_messages_are_per_thread(store: strata.Store) -> None:
    table = store.create_table("t", 4)

    def unknown(name: str) -> Callable[[], None]:
        def run() -> None:
            for _ in range(300):
                with pytest.raises(strata.UnknownTableError) as error:
                    store.table(name)
                assert f"'{name}'" in str(error.value), str(error.value)

        return run

    def shape() -> None:
        for _ in range(300):
            with pytest.raises(strata.ShapeError) as error:
                table.lookup(np.arange(3, dtype=U64), out=np.empty((2, 4), F32))
            assert "'t'" in str(error.value), str(error.value)

    run_threads([unknown("first_missing"), unknown("second_missing"), shape])


# ---- PyTorch DataLoader workers -------------------------------------------------------------

BATCH = 64
BATCHES = 12


class PeekDataset:
    """Batch ``i`` of ``keys``, peeked from a read-only store that each process opens once
    (lazily, on its first item); the store is never pickled or inherited."""

    def __init__(self, path: str, name: str, keys: np.ndarray) -> None:
        self.path, self.name, self.keys = path, name, keys
        self._opened: tuple[int, strata.Store, strata.Table] | None = None

    def __len__(self) -> int:
        return len(self.keys) // BATCH

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_opened": None}

    def table(self) -> strata.Table:
        if self._opened is None or self._opened[0] != os.getpid():
            store = strata.Store(self.path, read_only=True)
            self._opened = (os.getpid(), store, store.table(self.name))
        return self._opened[2]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        import torch

        rows = self.table().peek(self.keys[index * BATCH : (index + 1) * BATCH])
        return torch.from_numpy(rows), os.getpid()


def open_in_worker(worker_id: int) -> None:
    """A worker_init_fn: opens the worker's read-only store before its first item."""
    import torch.utils.data

    torch.utils.data.get_worker_info().dataset.table()


def written_store(path: str) -> tuple[strata.Store, np.ndarray, np.ndarray]:
    """A store open for writing with rows written and checkpointed, then changed again (not
    checkpointed: readers must not see it). Returns it, the keys and the checkpointed rows."""
    store = strata.Store(path)
    table = store.create_table("items", 8, initializer="normal", init_args=(0, 1), seed=1, optimizer="adam")
    keys = np.random.default_rng(2).permutation(10_000)[: BATCH * BATCHES].astype(U64)
    table.apply_gradients(keys[::2], np.ones((len(keys[::2]), 8), F32))
    store.checkpoint(b"for the workers")
    checkpointed = table.peek(keys)
    table.apply_gradients(keys, np.ones((len(keys), 8), F32))
    assert not np.array_equal(table.peek(keys), checkpointed)
    return store, keys, checkpointed


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_read_the_writers_checkpoint(tmp_path: Path, context: str) -> None:
    torch = pytest.importorskip("torch")
    store, keys, checkpointed = written_store(str(tmp_path / "store"))
    with store:
        dataset = PeekDataset(store.path, "items", keys)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=None,
            num_workers=2,
            multiprocessing_context=context,
            worker_init_fn=open_in_worker if context == "spawn" else None,
        )
        batches = list(loader)
        assert len(batches) == BATCHES
        pids = {pid for _, pid in batches}
        assert os.getpid() not in pids and len(pids) == 2
        rows = torch.cat([b for b, _ in batches]).numpy()
        np.testing.assert_array_equal(rows, checkpointed)
        # The writer goes on, unharmed.
        store.table("items").apply_gradients(keys[:4], np.ones((4, 8), F32))
        store.checkpoint()


class InheritedDataset:
    """Items made with the main process's own table, inherited by fork: 1 if the worker got
    ForkedError, 0 if the call worked (it must not), any other error propagating."""

    def __init__(self, table: strata.Table) -> None:
        self.table = table

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> int:
        try:
            self.table.peek(np.arange(4, dtype=U64))
        except strata.ForkedError as error:
            message = str(error)
            assert "fork" in message and self.table.store.path in message, message
            return 1
        return 0


def test_dataloader_worker_with_an_inherited_store_gets_forked_error(store: strata.Store) -> None:
    torch = pytest.importorskip("torch")
    table = store.create_table("t", 4)
    table.lookup(np.arange(4, dtype=U64))
    loader = torch.utils.data.DataLoader(
        InheritedDataset(table), batch_size=4, num_workers=2, multiprocessing_context="fork"
    )
    flags = torch.cat(list(loader))
    assert flags.tolist() == [1] * 8
    # The main process's store still works.
    assert table.peek(np.arange(4, dtype=U64)).shape == (4, 4)
