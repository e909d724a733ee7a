"""The strata package against libStrataC: round trips, conversions and every error path."""

from __future__ import annotations

import copy
import gc
import os
import pickle
import resource
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

import strata
from strata import _native

U64 = np.uint64
F32 = np.float32


def k(*values: int) -> np.ndarray:
    return np.array(values, dtype=U64)


def bfloat16(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (to nearest, ties to even), as float32."""
    bits = np.ascontiguousarray(values, dtype=F32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(F32)


def rounded(values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float16":
        return values.astype(np.float16).astype(F32)
    if dtype == "bfloat16":
        return bfloat16(values)
    return values.astype(F32)


# ---- the package --------------------------------------------------------------------------


def test_versions() -> None:
    assert strata.__version__ == "1.0.0"
    assert strata.library_version() == "1.0.0"
    assert strata.API_VERSION == 1
    assert os.path.isfile(strata.library_path())


def test_error_classes() -> None:
    classes = {
        1: (strata.InvalidArgumentError, ValueError),
        2: (strata.UnknownTableError, LookupError),
        3: (strata.TableExistsError, strata.StrataError),
        4: (strata.InvalidTableError, ValueError),
        5: (strata.ShapeError, ValueError),
        6: (strata.NonFiniteError, FloatingPointError),
        7: (strata.LearningRateError, ValueError),
        8: (strata.InvalidRowsError, ValueError),
        9: (strata.NoStoreError, FileNotFoundError),
        10: (strata.NotEmptyError, strata.StrataError),
        11: (strata.LockedError, strata.StrataError),
        12: (strata.ReadOnlyError, strata.StrataError),
        13: (strata.FormatError, strata.StrataError),
        14: (strata.CorruptedError, strata.StrataError),
        15: (strata.DiskFullError, OSError),
        16: (strata.ClosedError, strata.StrataError),
        17: (strata.CheckpointError, strata.StrataError),
        18: (strata.BudgetError, strata.StrataError),
        19: (strata.ForkedError, strata.StrataError),
        20: (strata.StrataSystemError, OSError),
    }
    for code, (cls, base) in classes.items():
        assert cls.code == code
        assert issubclass(cls, strata.StrataError) and issubclass(cls, base)
        error = cls(f"message {code}", code)
        assert str(error) == f"message {code}" and error.message == f"message {code}"
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is cls and copy.code == code and str(copy) == str(error)
    assert strata.errors.error_class(77) is strata.StrataError


# ---- round trips --------------------------------------------------------------------------


def test_new_store(store: strata.Store, store_path: str) -> None:
    assert store.path == store_path and not store.read_only
    assert store.last_checkpoint() == strata.Checkpoint(0, b"")
    assert store.tables == []
    statistics = store.statistics()
    assert statistics["read_only"] is False
    assert "tables" in statistics and "last_checkpoint" in statistics


def test_path_like(tmp_path: Path) -> None:
    with strata.Store(tmp_path / "s") as s:
        assert s.path == str(tmp_path / "s")


def test_never_written_rows_are_zeros(store: strata.Store) -> None:
    table = store.create_table("t", 8)
    assert table.name == "t" and table.dimension == 8 and table.store is store
    rows = table.lookup(k(0, 1, 2**64 - 1))
    assert rows.dtype == F32 and rows.shape == (3, 8) and rows.flags.c_contiguous
    assert not rows.any()


def test_constant_initializer(store: strata.Store) -> None:
    table = store.create_table("c", 5, initializer="constant", init_args=(0.25,))
    np.testing.assert_array_equal(table.lookup(k(3, 9)), np.full((2, 5), 0.25, F32))


def test_uniform_initializer_is_a_function_of_seed_and_key(store_path: str) -> None:
    low, high = -0.5, 0.25
    ids = k(*range(200), 2**63 + 5)
    with strata.Store(store_path) as s:
        t = s.create_table("u", 16, initializer="uniform", init_args=(low, high), seed=7)
        first = t.lookup(ids)
        np.testing.assert_array_equal(t.lookup(ids), first)
        np.testing.assert_array_equal(t.peek(ids), first)
        assert first.min() >= low and first.max() < high
        assert len(np.unique(first)) > 0.9 * first.size
        other_seed = s.create_table("u2", 16, initializer="uniform", init_args=(low, high), seed=8)
        assert not np.array_equal(other_seed.lookup(ids), first)
        s.checkpoint()
    with strata.Store(store_path, create=False) as s:
        np.testing.assert_array_equal(s.table("u").lookup(ids), first)


def test_normal_initializer(store: strata.Store) -> None:
    t = store.create_table("n", 64, initializer="normal", init_args=(1.0, 0.5), seed=3)
    rows = t.lookup(np.arange(2000, dtype=U64))
    assert abs(rows.mean() - 1.0) < 0.01
    assert abs(rows.std() - 0.5) < 0.01


def test_sgd_step_is_exact(store: strata.Store, rng: np.random.Generator) -> None:
    lr = 0.01
    t = store.create_table("s", 16, initializer="constant", init_args=(0.3,))
    ids = k(4, 8, 15)
    g1 = rng.standard_normal((3, 16)).astype(F32)
    g2 = rng.standard_normal((3, 16)).astype(F32)
    t.apply_gradients(ids, g1)
    expected = np.full((3, 16), 0.3, F32) - F32(lr) * g1
    np.testing.assert_array_equal(t.lookup(ids), expected)
    t.apply_gradients(ids, g2)
    expected = expected - F32(lr) * g2
    np.testing.assert_array_equal(t.lookup(ids), expected)
    # Untouched keys still read as the initializer.
    np.testing.assert_array_equal(t.lookup(k(16)), np.full((1, 16), 0.3, F32))


def test_duplicate_keys_get_one_step_with_the_summed_gradient(store: strata.Store, rng: np.random.Generator) -> None:
    t = store.create_table("d", 8)
    g = rng.standard_normal((4, 8)).astype(F32)
    t.apply_gradients(k(5, 7, 5, 5), g)
    summed = (g[0] + g[2]) + g[3]
    np.testing.assert_array_equal(t.lookup(k(5))[0], F32(0) - F32(0.01) * summed)
    np.testing.assert_array_equal(t.lookup(k(7))[0], F32(0) - F32(0.01) * g[1])


def test_learning_rate_override(store: strata.Store, rng: np.random.Generator) -> None:
    t = store.create_table("lr", 8, learning_rate=0.01)
    g = rng.standard_normal((2, 8)).astype(F32)
    t.apply_gradients(k(1, 2), g, learning_rate=0.5)
    np.testing.assert_array_equal(t.lookup(k(1, 2)), F32(0) - F32(0.5) * g)
    t.apply_gradients(k(3), g[:1])  # the table's own rate again
    np.testing.assert_array_equal(t.lookup(k(3)), F32(0) - F32(0.01) * g[:1])


def test_remove_reads_the_initializer_again(store: strata.Store) -> None:
    t = store.create_table("r", 4, initializer="uniform", init_args=(-1, 1), seed=11)
    ids = k(1, 2, 3)
    initial = t.lookup(ids)
    t.apply_gradients(ids, np.ones((3, 4), F32))
    assert not np.array_equal(t.lookup(ids), initial)
    t.remove(k(1, 3))
    after = t.lookup(ids)
    np.testing.assert_array_equal(after[[0, 2]], initial[[0, 2]])
    assert not np.array_equal(after[1], initial[1])
    store.checkpoint()
    np.testing.assert_array_equal(t.lookup(ids), after)


def test_checkpoint_survives_reopen_with_its_payload(store_path: str, rng: np.random.Generator) -> None:
    payload = b"\x00dense\x00state\xff\x00"
    ids = np.arange(0, 3000, 7, dtype=U64)
    g1 = rng.standard_normal((len(ids), 32)).astype(F32)
    g2 = rng.standard_normal((len(ids), 32)).astype(F32)
    with strata.Store(store_path) as s:
        t = s.create_table("emb", 32, optimizer="adagrad", learning_rate=0.1)
        t.apply_gradients(ids, g1)
        rows = t.lookup(ids)
        first = s.checkpoint(b"first")
        second = s.checkpoint(payload)
        assert second == first + 1 and first >= 1
        assert s.last_checkpoint() == strata.Checkpoint(second, payload)
        # What one more step gives, with the accumulators as they are: after reopening too.
        t.apply_gradients(ids, g2)
        stepped = t.lookup(ids)
    with strata.Store(store_path, create=False) as s:
        assert s.tables == ["emb"]
        assert s.last_checkpoint() == (second, payload)
        t = s.table("emb")
        assert t.spec["optimizer"] == "adagrad"
        np.testing.assert_array_equal(t.lookup(ids), rows)
        t.apply_gradients(ids, g2)
        np.testing.assert_array_equal(t.lookup(ids), stepped)
        assert s.checkpoint(memoryview(b"x")) == second + 1
        assert s.last_checkpoint().payload == b"x"


def test_changes_after_the_last_checkpoint_are_lost(store_path: str) -> None:
    ids = k(1, 2, 3)
    with strata.Store(store_path) as s:
        t = s.create_table("t", 4)
        t.apply_gradients(ids, np.ones((3, 4), F32))
        kept = t.lookup(ids)
        s.checkpoint(b"kept")
        t.apply_gradients(ids, np.ones((3, 4), F32))
        s.create_table("late", 4)
        assert not np.array_equal(t.lookup(ids), kept)
    with strata.Store(store_path) as s:
        assert s.tables == ["t"]
        assert s.last_checkpoint().payload == b"kept"
        np.testing.assert_array_equal(s.table("t").lookup(ids), kept)


def test_a_table_made_after_no_checkpoint_is_gone(store_path: str) -> None:
    with strata.Store(store_path) as s:
        s.create_table("t", 4)
    with strata.Store(store_path) as s:
        assert s.tables == []
        with pytest.raises(strata.UnknownTableError):
            s.table("t")


def test_peek_equals_lookup(store: strata.Store, rng: np.random.Generator) -> None:
    t = store.create_table("p", 12, initializer="normal", init_args=(0, 1), seed=5)
    ids = rng.integers(0, 10_000, 500).astype(U64)
    t.apply_gradients(ids[:100], rng.standard_normal((100, 12)).astype(F32))
    traffic = t.statistics()["statistics"]["traffic"]
    peeked = t.peek(ids)
    assert t.statistics()["statistics"]["traffic"] == traffic  # a peek changes no counter
    np.testing.assert_array_equal(peeked, t.lookup(ids))
    statistics = t.statistics()
    assert statistics["spec"]["dimension"] == 12 and statistics["spec"]["optimizer"] == "sgd"
    assert statistics["statistics"]["name"] == "p"
    written, read = len(np.unique(ids[:100])), len(np.unique(ids))
    rows = statistics["statistics"]["rows"]
    assert rows["hot"] == written  # the rows written, all in the hot tier
    assert rows["initializer_in_hot"] == read - written  # the lookup's never-written rows
    assert rows["warm"] == rows["cold"] == rows["spill"] == 0
    assert statistics["statistics"]["checkpoint"]["generation"] == 0


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_dtypes_round_to_their_storage(store: strata.Store, rng: np.random.Generator, dtype: str) -> None:
    spec = dict(initializer="uniform", init_args=(-1.0, 1.0), seed=9)
    reference = store.create_table("ref", 16, **spec)
    t = store.create_table(f"t_{dtype}", 16, dtype=dtype, **spec)
    assert t.spec["dtype"] == dtype
    ids = np.arange(50, dtype=U64)
    initial = reference.lookup(ids)
    np.testing.assert_array_equal(t.lookup(ids), rounded(initial, dtype))
    # One SGD step from zeros: the value read back is the storage type's rounding of -lr * g.
    z = store.create_table(f"z_{dtype}", 16, dtype=dtype, learning_rate=0.37)
    g = rng.standard_normal((50, 16)).astype(F32)
    z.apply_gradients(ids, g)
    np.testing.assert_array_equal(z.lookup(ids), rounded(F32(0) - F32(0.37) * g, dtype))
    np.testing.assert_array_equal(z.peek(ids), z.lookup(ids))


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "rowwise_adagrad", "adam", "ftrl"])
def test_every_optimizer_steps(store: strata.Store, rng: np.random.Generator, optimizer: str) -> None:
    t = store.create_table("o", 8, optimizer=optimizer, initializer="uniform", init_args=(-0.1, 0.1))
    assert t.spec["optimizer"] == optimizer
    assert t.spec["learning_rate"] == strata.DEFAULT_LEARNING_RATES[optimizer]
    ids = k(1, 2, 3)
    before = t.lookup(ids)
    g = rng.standard_normal((3, 8)).astype(F32)
    t.apply_gradients(ids, g)
    after = t.lookup(ids)
    assert np.isfinite(after).all()
    assert (after != before).any(axis=1).all()
    t.apply_gradients(ids, g)
    assert not np.array_equal(t.lookup(ids), after)


def test_adagrad_step_is_exact(store: strata.Store, rng: np.random.Generator) -> None:
    t = store.create_table("a", 8, optimizer="adagrad", learning_rate=0.1, initial_accumulator=0.5)
    g = rng.standard_normal((1, 8)).astype(F32)
    t.apply_gradients(k(1), g)
    a = F32(0.5) + g * g
    expected = F32(0) - F32(0.1) * g / (np.sqrt(a) + F32(1e-8))
    np.testing.assert_array_equal(t.lookup(k(1)), expected)


def test_create_table_defaults_follow_the_optimizer(store: strata.Store) -> None:
    spec = store.create_table("adam", 4, optimizer="adam").spec
    assert spec == {
        "dimension": 4, "dtype": "float32", "initializer": "zeros", "init_args": (), "seed": 0,
        "optimizer": "adam", "learning_rate": 0.001, "epsilon": 1e-8, "initial_accumulator": 0.0,
        "beta1": 0.9, "beta2": 0.999, "ftrl_beta": 1.0, "l1": 0.0, "l2": 0.0,
    }  # fmt: skip
    assert store.create_table("ftrl", 4, optimizer="ftrl").spec["learning_rate"] == 0.05


def test_spec_round_trip(store_path: str) -> None:
    arguments = dict(
        dtype="float16", initializer="normal", init_args=(0.5, 0.125), seed=2**64 - 1,
        optimizer="ftrl", learning_rate=0.2, ftrl_beta=0.5, l1=0.001, l2=0.01,
    )  # fmt: skip
    with strata.Store(store_path) as s:
        t = s.create_table("spec", 24, **arguments)
        spec = t.spec
        assert spec["dimension"] == 24
        for name, value in arguments.items():
            assert spec[name] == value, name
        assert s.table("spec").spec == spec
        # The spec is create_table's arguments: it opens the same table.
        again = s.create_table("spec", **spec)
        assert again.spec == spec
        listed = s.statistics()["tables"]["spec"]["spec"]
        assert listed["dimension"] == 24 and listed["dtype"] == "float16"
        assert listed["optimizer"] == "ftrl" and listed["initializer"] == "normal"
        assert listed["seed"] == 2**64 - 1
        t.spec["dimension"] = 1  # a copy
        assert t.spec["dimension"] == 24
        s.checkpoint()
    with strata.Store(store_path) as s:
        assert s.table("spec").spec == spec


def test_statistics(store: strata.Store) -> None:
    store.create_table("b", 4)
    a = store.create_table("a", 3)
    a.lookup(k(1, 2))
    a.apply_gradients(k(1, 5, 6), np.ones((3, 3), F32))
    statistics = store.statistics()
    assert set(statistics["tables"]) == {"a", "b"}
    assert store.tables == ["a", "b"]
    assert statistics["path"] == store.path and statistics["read_only"] is False
    assert statistics["last_checkpoint"]["generation"] == 0
    assert statistics["tables"]["a"]["spec"]["dimension"] == 3
    assert statistics["tables"]["b"]["spec"]["dimension"] == 4
    rows = statistics["tables"]["a"]["statistics"]["rows"]
    assert (rows["hot"], rows["initializer_in_hot"]) == (3, 1)  # keys 1, 5, 6 written; 2 read
    assert statistics["tables"]["b"]["statistics"]["rows"]["hot"] == 0

    generation = store.checkpoint(b"four")
    statistics = store.statistics()
    assert statistics["last_checkpoint"]["generation"] == generation == 1
    assert statistics["last_checkpoint"]["payload_bytes"] == 4
    checkpoint = statistics["tables"]["a"]["statistics"]["checkpoint"]
    assert checkpoint["generation"] == 1 and checkpoint["rows_written"] == 3
    assert a.statistics()["statistics"]["checkpoint"] == checkpoint


def test_out_is_filled_in_place(store: strata.Store) -> None:
    t = store.create_table("o", 4, initializer="constant", init_args=(2.0,))
    out = np.full((3, 4), -1, F32)
    assert t.lookup(k(1, 2, 3), out=out) is out
    np.testing.assert_array_equal(out, np.full((3, 4), 2.0, F32))
    out[:] = -1
    assert t.peek(k(1, 2, 3), out) is out
    assert (out == 2.0).all()


def test_zero_keys(store: strata.Store) -> None:
    t = store.create_table("z", 6)
    for empty in (np.empty(0, U64), [], np.empty(0, np.int64), ()):
        assert t.lookup(empty).shape == (0, 6)
        assert t.peek(empty).shape == (0, 6)
        t.remove(empty)
    t.apply_gradients(np.empty(0, U64), np.empty((0, 6), F32))
    t.apply_gradients([], [])
    out = np.empty((0, 6), F32)
    assert t.lookup(np.empty(0, U64), out=out) is out


def test_keys_in_other_forms(store: strata.Store) -> None:
    t = store.create_table("keys", 3, initializer="uniform", init_args=(-1, 1))
    ids = np.array([5, 2**63 + 1, 2**64 - 1, 0, 5], dtype=U64)
    expected = t.lookup(ids)
    np.testing.assert_array_equal(t.lookup([int(i) for i in ids]), expected)  # Python ints past int64
    np.testing.assert_array_equal(t.lookup(ids.astype(">u8")), expected)  # big-endian
    np.testing.assert_array_equal(t.lookup(np.repeat(ids, 2)[::2]), expected)  # not contiguous
    small = np.array([5, 0, 7], dtype=np.int64)
    for dtype in (np.int64, np.int32, np.uint32, np.uint8, np.int16):
        np.testing.assert_array_equal(t.lookup(small.astype(dtype)), t.lookup(small.astype(U64)))
    np.testing.assert_array_equal(t.lookup((5, 0, 7)), t.lookup(small.astype(U64)))
    read_only = ids.copy()
    read_only.flags.writeable = False
    np.testing.assert_array_equal(t.lookup(read_only), expected)
    np.testing.assert_array_equal(t.peek(np.frombuffer(ids.tobytes(), dtype=U64)), expected)


def test_uint64_keys_are_not_copied(store: strata.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    t = store.create_table("nocopy", 4)
    ids = k(1, 2, 3)
    seen: list[int] = []
    real = strata.store._lookup

    def spy(handle, keys, count, rows, floats):  # type: ignore[no-untyped-def]
        seen.append(keys)
        return real(handle, keys, count, rows, floats)

    monkeypatch.setattr(strata.store, "_lookup", spy)
    t.lookup(ids)
    assert seen == [ids.__array_interface__["data"][0]]


def test_gradients_in_other_forms(store: strata.Store, rng: np.random.Generator) -> None:
    t = store.create_table("g", 4)
    u = store.create_table("h", 4)
    g = rng.standard_normal((2, 4))  # float64: rounded to float32
    t.apply_gradients([1, 2], g)
    u.apply_gradients(k(1, 2), g.astype(F32))
    np.testing.assert_array_equal(t.lookup(k(1, 2)), u.lookup(k(1, 2)))
    fortran = np.asfortranarray(g.astype(F32))
    t.apply_gradients(k(3, 4), fortran)
    u.apply_gradients(k(3, 4), g.tolist())
    np.testing.assert_array_equal(t.lookup(k(3, 4)), u.lookup(k(3, 4)))


def test_context_managers(store_path: str) -> None:
    with strata.Store(store_path) as s:
        with s.create_table("t", 2) as t:
            t.lookup(k(1))
        with pytest.raises(strata.ClosedError, match="'t'"):
            t.lookup(k(1))
        t.close()  # idempotent
    with pytest.raises(strata.ClosedError):
        s.checkpoint()
    s.close()  # idempotent
    with strata.Store(store_path) as again:  # the lock was released
        assert again.tables == []


def test_released_objects_close_the_store(store_path: str) -> None:
    s = strata.Store(store_path)
    t = s.create_table("t", 2)
    del s
    gc.collect()
    t.lookup(k(1))  # the table keeps its store open
    del t
    gc.collect()
    with strata.Store(store_path):  # released: the lock is free again
        pass


def test_copies_are_the_same_handle(store: strata.Store) -> None:
    t = store.create_table("t", 2)
    t.apply_gradients(k(1), np.ones((1, 2), F32))
    for copied in (copy.copy(t), copy.deepcopy(t)):
        assert copied is t
    assert copy.copy(store) is store and copy.deepcopy(store) is store
    holder = {"table": t, "store": store, "both": [t, store]}
    deep = copy.deepcopy(holder)
    assert deep is not holder and deep["table"] is t and deep["both"][1] is store
    expected = t.lookup(k(1))
    copied = copy.deepcopy(t)
    del copied, deep
    gc.collect()
    # The original keeps working: nothing was released with the copies.
    np.testing.assert_array_equal(t.lookup(k(1)), expected)
    t.apply_gradients(k(1), np.ones((1, 2), F32))
    assert store.checkpoint() == 1


def test_tables_and_stores_cannot_be_pickled(store: strata.Store) -> None:
    t = store.create_table("items", 2)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError) as error:
            pickle.dumps(t, protocol=protocol)
        message = str(error.value)
        assert "'items' is a handle to an open store and cannot be pickled" in message
        assert f"strata.Store({store.path!r}, read_only=True).table('items')" in message
        with pytest.raises(TypeError) as error:
            pickle.dumps(store, protocol=protocol)
        assert "is a handle to an open store and cannot be pickled" in str(error.value)
        assert f"strata.Store({store.path!r}, read_only=True)" in str(error.value)
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps({"nested": [t]}, protocol=protocol)
    assert t.lookup(k(1)).shape == (1, 2)


def test_close_while_other_threads_use_the_table_and_store(store_path: str) -> None:
    """Table.close and Store.close while other threads are inside calls: the calls finish or
    raise ClosedError; the library's handles are released only when the objects go."""
    ids = np.arange(20_000, dtype=U64)
    store = strata.Store(store_path)
    t = store.create_table("t", 32, initializer="constant", init_args=(0.5,))
    u = store.create_table("u", 32, initializer="constant", init_args=(0.25,))
    started = threading.Barrier(5)
    outcomes: list[str] = []

    def read(table: strata.Table, value: float) -> None:
        started.wait()
        out = np.empty((len(ids), 32), F32)
        try:
            for _ in range(10_000):
                table.lookup(ids, out=out)
                assert (out == F32(value)).all()
        except strata.ClosedError as error:
            assert "closed" in str(error)
            outcomes.append("closed")
        else:
            outcomes.append("finished")

    threads = [threading.Thread(target=read, args=args) for args in [(t, 0.5), (t, 0.5), (u, 0.25), (u, 0.25)]]
    for thread in threads:
        thread.start()
    started.wait()
    t.close()  # the two readers of t stop at their next call
    store.close()  # the two readers of u stop too
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive()
    assert outcomes == ["closed"] * 4
    with pytest.raises(strata.ClosedError, match="Table.close"):
        t.lookup(ids[:1])
    with pytest.raises(strata.ClosedError):
        u.lookup(ids[:1])
    del t, u, store
    gc.collect()
    with strata.Store(store_path):  # released: the lock is free again
        pass


def test_read_only_store_reads_the_last_checkpoint(store_path: str) -> None:
    ids = k(1, 2)
    with strata.Store(store_path) as s:
        t = s.create_table("t", 3)
        t.apply_gradients(ids, np.ones((2, 3), F32))
        kept = t.lookup(ids)
        s.checkpoint(b"p")
        t.apply_gradients(ids, np.ones((2, 3), F32))
    with strata.Store(store_path, read_only=True) as r:
        assert r.read_only
        assert r.last_checkpoint().payload == b"p"
        t = r.table("t")
        np.testing.assert_array_equal(t.peek(ids), kept)
        # A reader's lookup moves rows between its own tiers only: it reads the checkpoint too.
        np.testing.assert_array_equal(t.lookup(ids), kept)
        for call in (
            lambda: t.apply_gradients(ids, np.ones((2, 3), F32)),
            lambda: t.remove(ids),
            lambda: r.checkpoint(),
            lambda: r.create_table("new", 3),
        ):
            with pytest.raises(strata.ReadOnlyError) as error:
                call()
            assert store_path in str(error.value)
        np.testing.assert_array_equal(t.peek(ids), kept)


def test_read_only_beside_a_writer_in_another_process(store_path: str, fork_child) -> None:  # type: ignore[no-untyped-def]
    ids = k(1, 2)
    with strata.Store(store_path) as s:
        t = s.create_table("t", 3)
        t.apply_gradients(ids, np.ones((2, 3), F32))
        kept = t.lookup(ids)
        s.checkpoint()
        t.apply_gradients(ids, np.ones((2, 3), F32))  # not checkpointed: the reader sees `kept`

        def child() -> int:
            with strata.Store(store_path, read_only=True) as r:
                return 0 if np.array_equal(r.table("t").peek(ids), kept) else 1

        assert fork_child(child) == 0
        with pytest.raises(strata.LockedError):  # one handle per process: read through `s`
            strata.Store(store_path, read_only=True)


def test_time_lookups(store: strata.Store) -> None:
    """time_lookups works (the benchmark python/benchmarks/bench_lookup.py uses it); tests do
    not assert timings."""
    t = store.create_table("t", 8)
    ids = np.arange(64, dtype=U64)
    for fresh_output in (False, True):
        seconds = t.time_lookups(ids, 10, fresh_output=fresh_output)
        assert isinstance(seconds, float) and seconds > 0
    assert t.time_lookups(np.arange(64), 3) > 0  # keys converted as for lookup
    for repeats in (-1, -(2**40)):
        with pytest.raises(strata.InvalidArgumentError):
            t.time_lookups(ids, repeats)
    with pytest.raises(TypeError):
        t.time_lookups(ids, 1.5)  # type: ignore[arg-type]


# ---- errors -------------------------------------------------------------------------------


def test_invalid_argument_negative_budget(tmp_path: Path) -> None:
    for option in ("hot_bytes", "warm_bytes", "map_resident_bytes", "initial_map_bytes"):
        with pytest.raises(strata.InvalidArgumentError) as error:
            strata.Store(tmp_path / option, **{option: -2})
        assert error.value.code == 1 and str(error.value)


def test_invalid_argument_from_null_pointers(store: strata.Store) -> None:
    t = store.create_table("t", 2)
    status = _native.lib.strata_lookup(t._handle, None, 1, None, 2)
    assert status == _native.E_INVALID_ARGUMENT
    assert _native.lib.strata_last_error()
    handle = _native.ctypes.c_void_p()
    assert _native.lib.strata_store_open(None, None, _native.ctypes.byref(handle)) == _native.E_INVALID_ARGUMENT
    assert handle.value is None


def test_invalid_argument_negative_repeats(store: strata.Store) -> None:
    t = store.create_table("t", 2)
    with pytest.raises(strata.InvalidArgumentError):
        t.time_lookups(k(1), -1)


@pytest.mark.parametrize("dimension", [0, -3, 65537])
def test_invalid_dimension(store: strata.Store, dimension: int) -> None:
    with pytest.raises(strata.InvalidTableError) as error:
        store.create_table("bad", dimension)
    assert "bad" in str(error.value)


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "slash/name", "é"])
def test_invalid_table_name(store: strata.Store, name: str) -> None:
    with pytest.raises(strata.InvalidTableError):
        store.create_table(name, 4)


def test_invalid_spec_values(store: strata.Store) -> None:
    with pytest.raises(strata.InvalidTableError, match="neg"):
        store.create_table("neg", 4, learning_rate=-1.0)
    with pytest.raises(strata.InvalidTableError, match="nan"):
        store.create_table("nan", 4, initializer="constant", init_args=(float("nan"),))


def test_python_side_argument_checks(store: strata.Store) -> None:
    with pytest.raises(ValueError, match="dtype"):
        store.create_table("t", 4, dtype="float64")
    with pytest.raises(ValueError, match="initializer"):
        store.create_table("t", 4, initializer="xavier")
    with pytest.raises(ValueError, match="init_args"):
        store.create_table("t", 4, initializer="uniform", init_args=(1.0,))
    with pytest.raises(ValueError, match="optimizer"):
        store.create_table("t", 4, optimizer="rmsprop")
    with pytest.raises(ValueError, match="seed"):
        store.create_table("t", 4, seed=-1)
    with pytest.raises(TypeError):
        store.create_table("t", 4.5)  # type: ignore[arg-type]
    assert store.tables == []


def test_unknown_table(store: strata.Store) -> None:
    with pytest.raises(strata.UnknownTableError) as error:
        store.table("missing_table")
    assert "missing_table" in str(error.value)
    assert isinstance(error.value, LookupError)


def test_table_exists_with_another_spec(store: strata.Store) -> None:
    store.create_table("twice", 8)
    store.create_table("twice", 8)  # the same spec: opened
    with pytest.raises(strata.TableExistsError) as error:
        store.create_table("twice", 16)
    assert "twice" in str(error.value)
    with pytest.raises(strata.TableExistsError):
        store.create_table("twice", 8, optimizer="adam")


def test_shape_mismatch(store: strata.Store) -> None:
    t = store.create_table("shape_t", 4)
    with pytest.raises(strata.ShapeError) as error:
        t.lookup(k(1, 2), out=np.empty((3, 4), F32))
    assert "shape_t" in str(error.value)
    with pytest.raises(strata.ShapeError):
        t.peek(k(1, 2), out=np.empty(7, F32))
    with pytest.raises(strata.ShapeError):
        t.lookup(k(1), out=np.empty((0, 4), F32))
    with pytest.raises(strata.ShapeError, match="shape_t"):
        t.apply_gradients(k(1, 2), np.ones((2, 3), F32))
    # Straight through ctypes: a wrong float count for the keys.
    ids = k(1, 2)
    rows = np.empty(9, F32)
    status = _native.lib.strata_lookup(t._handle, ids.ctypes.data, 2, rows.ctypes.data, 7)
    assert status == _native.E_SHAPE
    assert b"shape_t" in _native.lib.strata_last_error()


def test_out_checks(store: strata.Store) -> None:
    t = store.create_table("t", 4)
    for bad in (
        np.empty((2, 4), np.float64),
        np.empty((4, 2), F32),  # right size, wrong shape
        np.empty((2, 8), F32)[:, ::2],  # not contiguous
        [[0.0] * 4] * 2,
    ):
        with pytest.raises(ValueError, match="^table 't': out must"):
            t.lookup(k(1, 2), out=bad)  # type: ignore[arg-type]
    frozen = np.empty((2, 4), F32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="^table 't': out must be C-contiguous and writable"):
        t.peek(k(1, 2), out=frozen)
    with pytest.raises(ValueError, match=r"^table 't': gradients must have shape \(2, 4\), not \(4, 2\)"):
        t.apply_gradients(k(1, 2), np.ones((4, 2), F32))


def test_non_finite_gradient_changes_nothing(store: strata.Store) -> None:
    t = store.create_table("nf", 4, initializer="constant", init_args=(1.0,))
    ids = k(10, 11, 12)
    t.apply_gradients(ids, np.ones((3, 4), F32))
    before = t.lookup(ids)
    for bad in (np.nan, np.inf):
        g = np.ones((3, 4), F32)
        g[1, 2] = bad
        with pytest.raises(strata.NonFiniteError) as error:
            t.apply_gradients(ids, g)
        assert "nf" in str(error.value) and "11" in str(error.value)
        assert isinstance(error.value, FloatingPointError)
        np.testing.assert_array_equal(t.lookup(ids), before)


def test_non_finite_step_changes_nothing(store: strata.Store) -> None:
    t = store.create_table("f16", 2, dtype="float16", learning_rate=1.0)
    t.apply_gradients(k(1), np.full((1, 2), -60000, F32))
    before = t.lookup(k(1, 2))
    with pytest.raises(strata.NonFiniteError, match="f16"):
        t.apply_gradients(k(2, 1), np.full((2, 2), -60000, F32))  # key 1 would pass 65504
    np.testing.assert_array_equal(t.lookup(k(1, 2)), before)


def test_learning_rate_rejected(store: strata.Store) -> None:
    t = store.create_table("lr_t", 4)
    for rate in (-0.1, float("nan"), float("inf")):
        with pytest.raises(strata.LearningRateError) as error:
            t.apply_gradients(k(1), np.ones((1, 4), F32), learning_rate=rate)
        assert "lr_t" in str(error.value)
    assert not t.lookup(k(1)).any()


def test_no_store(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(strata.NoStoreError) as error:
        strata.Store(empty, create=False)
    assert str(empty) in str(error.value)
    assert isinstance(error.value, FileNotFoundError)
    with pytest.raises(strata.NoStoreError):
        strata.Store(tmp_path / "missing", read_only=True)
    assert list(empty.iterdir()) == []


def test_not_empty(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(strata.NotEmptyError) as error:
        strata.Store(foreign)
    assert str(foreign) in str(error.value) and "notes.txt" in str(error.value)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_locked_by_another_writer(store: strata.Store, store_path: str) -> None:
    with pytest.raises(strata.LockedError) as error:
        strata.Store(store_path)
    assert store_path in str(error.value)
    store.close()
    strata.Store(store_path).close()


def test_closed(store: strata.Store) -> None:
    t = store.create_table("t", 4)
    store.close()
    for call in (
        lambda: t.lookup(k(1)),
        lambda: t.peek(k(1)),
        lambda: t.apply_gradients(k(1), np.ones((1, 4), F32)),
        lambda: t.remove(k(1)),
        lambda: store.checkpoint(),
        lambda: store.last_checkpoint(),
        lambda: store.create_table("u", 4),
        lambda: store.table("t"),
        lambda: store.statistics(),
    ):
        with pytest.raises(strata.ClosedError) as error:
            call()
        assert error.value.code == 16 and "closed" in str(error.value)


@pytest.mark.parametrize("damage", ["garbage", "short_of_its_pages", "short_of_its_header"])
def test_corrupted_data_file(store_path: str, damage: str) -> None:
    with strata.Store(store_path) as s:
        t = s.create_table("t", 16)
        t.apply_gradients(np.arange(1000, dtype=U64), np.ones((1000, 16), F32))
        s.checkpoint()
    data = Path(store_path) / "rows.mdb"
    size = data.stat().st_size
    with open(data, "r+b") as f:
        if damage == "garbage":
            f.write(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
        else:
            f.truncate(3 * 4096 if damage == "short_of_its_pages" else 4096)
    expected = (strata.CorruptedError, strata.FormatError) if damage == "garbage" else strata.CorruptedError
    with pytest.raises(expected) as error:
        with strata.Store(store_path) as s:
            s.table("t").lookup(np.arange(1000, dtype=U64))
    assert str(data) in str(error.value)
    assert data.stat().st_size == (size if damage == "garbage" else 3 * 4096 if damage == "short_of_its_pages" else 4096)


def test_budget_too_small_for_a_row(store: strata.Store, store_path: str) -> None:
    with pytest.raises(strata.BudgetError) as error:
        store.create_table("tiny", 1024, hot_bytes=16)
    assert "tiny" in str(error.value)


def test_disk_full(store_path: str, fork_child) -> None:  # type: ignore[no-untyped-def]
    """A file size limit (RLIMIT_FSIZE, with SIGXFSZ ignored) stands in for a full disk."""
    ids = np.arange(20_000, dtype=U64)
    gradients = np.random.default_rng(0).standard_normal((len(ids), 64)).astype(F32)
    with strata.Store(store_path) as s:
        s.create_table("t", 64)
        s.checkpoint(b"before")

    def child() -> int:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = 4 << 20
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        with strata.Store(store_path, warm_bytes=0) as s:
            s.table("t").apply_gradients(ids, gradients)
            try:
                s.checkpoint(b"after")
            except strata.DiskFullError as error:
                return 0 if store_path in str(error) or "rows.mdb" in str(error) else 2
            except strata.StrataError as error:
                os.write(2, f"\n{type(error).__name__}: {error}\n".encode())
                return 3
            return 1

    assert fork_child(child) == 0
    with strata.Store(store_path) as s:
        assert s.last_checkpoint().payload == b"before"
        assert not s.table("t").lookup(ids[:10]).any()


def test_forked_child_gets_forked_error(store: strata.Store, fork_child) -> None:  # type: ignore[no-untyped-def]
    t = store.create_table("t", 4)
    t.lookup(k(1))

    def child() -> int:
        failures = 0
        for call in (
            lambda: t.lookup(k(1)),
            lambda: t.peek(k(1)),
            lambda: t.apply_gradients(k(1), np.ones((1, 4), F32)),
            lambda: store.checkpoint(),
            lambda: store.statistics(),
            lambda: store.close(),
        ):
            try:
                call()
            except strata.ForkedError:
                failures += 1
        return 0 if failures == 6 else 1

    assert fork_child(child) == 0

    def child_lets_go() -> int:
        # What a worker's garbage collection does: the parent's handles are left alone.
        t.__del__()
        store.__del__()
        t.close()
        gc.collect()
        return 0

    assert fork_child(child_lets_go) == 0
    # The parent's store is unharmed.
    t.apply_gradients(k(1), np.ones((1, 4), F32))
    store.checkpoint()
    assert t.lookup(k(1))[0, 0] == F32(0) - F32(0.01)


def test_bad_keys(store: strata.Store) -> None:
    t = store.create_table("items", 2)
    with pytest.raises(ValueError) as error:
        t.lookup(np.array([1, 2, -5, -6], dtype=np.int64))
    assert str(error.value) == "table 'items': key -5 at position 2 is negative; keys are uint64"
    with pytest.raises(ValueError, match=r"^table 'items': key -1 at position 1 is negative"):
        t.apply_gradients([0, -1], np.ones((2, 2), F32))
    with pytest.raises(ValueError, match=r"^table 'items': key 18446744073709551616 at position 1 is out of range"):
        t.lookup([1, 2**64])
    for floats in (np.array([1.0, 2.0]), [1.5], np.array([1, 2], dtype=np.float32)):
        with pytest.raises(TypeError, match="^table 'items': keys must be integers"):
            t.lookup(floats)
    with pytest.raises(TypeError, match="^table 'items'"):
        t.lookup(np.array(["a"]))
    with pytest.raises(ValueError, match="^table 'items': keys must be 1-D"):
        t.lookup(np.ones((2, 2), dtype=U64))
    with pytest.raises(ValueError, match="^table 'items': keys must be 1-D"):
        t.remove(np.uint64(3))


def test_a_background_checkpoint_holds_the_state_when_it_began(store_path: str) -> None:
    ids = k(1, 2, 3)
    with strata.Store(store_path) as s:
        t = s.create_table("t", 4, optimizer="sgd", learning_rate=1.0)
        t.apply_gradients(ids, np.ones((3, 4), F32))
        at_begin = t.peek(ids)
        pending = s.begin_checkpoint(b"background")
        # Batches go on while it is written; they are not in it.
        for _ in range(20):
            t.apply_gradients(ids, np.ones((3, 4), F32))
        generation = pending.wait()
        assert pending.done
        assert pending.wait() == generation == s.last_checkpoint().generation == 1
        assert s.last_checkpoint().payload == b"background"
        np.testing.assert_array_equal(t.peek(ids), at_begin - 20)
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(pending)
    with strata.Store(store_path) as s:
        np.testing.assert_array_equal(s.table("t").peek(ids), at_begin)
        assert s.last_checkpoint() == strata.Checkpoint(1, b"background")


def test_a_background_checkpoint_dropped_unwaited_is_still_written(store_path: str) -> None:
    with strata.Store(store_path) as s:
        t = s.create_table("t", 2)
        t.apply_gradients(k(7), np.ones((1, 2), F32))
        s.begin_checkpoint(b"unwaited")
    with strata.Store(store_path) as s:
        assert s.last_checkpoint() == strata.Checkpoint(1, b"unwaited")
        assert s.table("t").peek(k(7))[0, 0] != 0


def test_a_background_checkpoint_of_a_read_only_store_is_refused(store_path: str) -> None:
    with strata.Store(store_path) as s:
        s.create_table("t", 2)
        s.checkpoint()
    with strata.Store(store_path, read_only=True) as r:
        with pytest.raises(strata.ReadOnlyError, match="checkpoint"):
            r.begin_checkpoint()


@pytest.mark.parametrize("version, words", [(9, "format version 9; this build reads up to 2"),
                                             (1, "format version 1 by an older Strata")])
def test_a_store_of_another_format_is_refused_unchanged(store_path: str, version: int, words: str) -> None:
    with strata.Store(store_path) as s:
        s.create_table("t", 2)
        s.checkpoint(b"x")
    # The format number sits after its key in LMDB's meta pages, unchecksummed: rewrite every copy.
    rows = os.path.join(store_path, "rows.mdb")
    with open(rows, "rb") as f:
        data = f.read()
    assert data.count(b"format\x02\x00\x00\x00") >= 1
    changed = data.replace(b"format\x02\x00\x00\x00", b"format" + bytes([version, 0, 0, 0]))
    with open(rows, "wb") as f:
        f.write(changed)
    for read_only in (False, True):
        with pytest.raises(strata.FormatError) as error:
            strata.Store(store_path, read_only=read_only)
        assert rows in str(error.value) and words in str(error.value)
    with open(rows, "rb") as f:
        assert f.read() == changed


def test_a_system_call_failing_is_a_system_error_naming_the_path(tmp_path: Path) -> None:
    parent = tmp_path / "a-file"
    parent.write_bytes(b"not a directory")
    with pytest.raises(strata.StrataSystemError) as error:
        strata.Store(str(parent / "store"))
    assert isinstance(error.value, OSError)
    assert str(parent / "store") in str(error.value)
    assert parent.read_bytes() == b"not a directory"
