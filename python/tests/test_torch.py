"""strata.torch against PyTorch's own nn.Embedding / nn.EmbeddingBag, a DLRM trained both ways,
checkpoints of rows and dense state together, and errors."""

from __future__ import annotations

import copy
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import strata  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # strata_dlrm, whatever the import mode
import strata.torch as st  # noqa: E402

from strata_dlrm import DLRM, TABLE_SIZES, BAG_MODES, create_tables, make_batch, table_rows  # noqa: E402

N = 50          # keys 0..N-1 in the small tests
D = 8
LR = 0.1


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def store(tmp_path):
    with strata.Store(str(tmp_path / "store")) as s:
        yield s


@pytest.fixture
def table(store):
    return store.create_table("t", D, initializer="uniform", init_args=(-1.0, 1.0), seed=7,
                              optimizer="sgd", learning_rate=LR)


def all_rows(table, n=N) -> torch.Tensor:
    return torch.from_numpy(table.peek(np.arange(n, dtype=np.uint64)).copy())


class CountingTable:
    """Passes everything to a table and counts the row calls."""

    def __init__(self, table):
        self._table = table
        self.calls = {"lookup": 0, "peek": 0, "apply_gradients": 0}

    def __getattr__(self, name):
        attribute = getattr(self._table, name)
        if name in self.calls:
            def counted(*args, **kwargs):
                self.calls[name] += 1
                return attribute(*args, **kwargs)
            return counted
        return attribute


def check_step(table, before: torch.Tensor, dense_grad: torch.Tensor, lr: float, steps: int = 1):
    """The rows are `before - steps * lr * dense_grad` (untouched rows exactly as before)."""
    after = all_rows(table)
    expected = before - steps * lr * dense_grad
    torch.testing.assert_close(after, expected, rtol=1e-6, atol=1e-6)
    untouched = (dense_grad == 0).all(dim=1)
    assert torch.equal(after[untouched], before[untouched])
    assert (~untouched).any()


# ---- Embedding ------------------------------------------------------------------------------

KEY_SHAPES = [
    [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5],                       # 1-D with repeats
    [[0, 1, 2], [2, 1, 0], [49, 49, 49], [7, 8, 7]],         # 2-D
    [[[1, 2], [3, 1]], [[4, 4], [0, 49]]],                   # 3-D
    [],                                                      # empty
]


@pytest.mark.parametrize("keys", KEY_SHAPES, ids=["1d", "2d", "3d", "empty"])
def test_embedding_matches_nn_embedding(table, keys):
    keys = torch.tensor(keys, dtype=torch.long)
    before = all_rows(table)
    reference = nn.Embedding.from_pretrained(before.clone(), freeze=False)
    module = st.Embedding(table)

    out = module(keys)
    expected = reference(keys)
    assert out.shape == (*keys.shape, D) and out.dtype == torch.float32
    assert torch.equal(out, expected)

    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * upstream).sum().backward()
    (expected * upstream).sum().backward()
    if keys.numel() == 0:
        assert torch.equal(all_rows(table), before)
    else:
        check_step(table, before, reference.weight.grad, LR)


def test_embedding_int32_and_large_keys(table):
    keys = torch.tensor([2**62, 5, 2**40 + 3, 5], dtype=torch.long)
    out = st.Embedding(table).eval()(keys)
    expected = table.peek(keys.numpy().view(np.uint64))
    assert np.array_equal(out.numpy(), expected)
    small = torch.tensor([[1, 2], [3, 4]], dtype=torch.int32)
    assert torch.equal(st.Embedding(table)(small), st.Embedding(table)(small.long()))


def test_module_has_no_parameters_or_state(table):
    for module in (st.Embedding(table), st.EmbeddingBag(table)):
        assert list(module.parameters()) == []
        assert list(module.buffers()) == []
        assert module.state_dict() == {}
        assert module.embedding_dim == D
        assert "'t'" in repr(module)


# ---- EmbeddingBag ---------------------------------------------------------------------------

# (input, offsets, include_last_offset)
BAG_CASES = {
    "offsets": ([3, 1, 4, 1, 5, 9, 2, 6, 5, 3], [0, 2, 5, 9], False),
    "empty_bags": ([3, 3, 3, 7, 1, 7, 7, 0, 49], [0, 0, 3, 3, 7, 9], False),
    "include_last_offset": ([10, 11, 10, 12, 13, 14, 10], [0, 2, 2, 5, 7], True),
    "2d": ([[1, 2, 3], [3, 2, 1], [4, 4, 4], [0, 49, 0]], None, False),
    "all_empty": ([], [0, 0, 0], False),
    "last_offset_only": ([], [0], True),
}


BAG_PARAMETERS = [(mode, case, False) for mode in ("sum", "mean", "max") for case in BAG_CASES] + \
                 [("sum", case, True) for case in BAG_CASES]   # per_sample_weights: mode "sum" only


@pytest.mark.parametrize("mode, case, weighted", BAG_PARAMETERS,
                         ids=[f"{m}-{c}{'-weighted' if w else ''}" for m, c, w in BAG_PARAMETERS])
def test_embedding_bag_matches_nn_embedding_bag(table, mode, case, weighted):
    keys, offsets, include_last = BAG_CASES[case]
    keys = torch.tensor(keys, dtype=torch.long)
    offsets = None if offsets is None else torch.tensor(offsets, dtype=torch.long)
    generator = torch.Generator().manual_seed(2)
    psw = torch.rand(keys.shape, generator=generator) if weighted else None
    psw_reference = psw.clone().requires_grad_() if weighted else None
    if weighted:
        psw.requires_grad_()

    before = all_rows(table)
    reference = nn.EmbeddingBag.from_pretrained(before.clone(), freeze=False, mode=mode,
                                                include_last_offset=include_last)
    module = st.EmbeddingBag(table, mode=mode, include_last_offset=include_last)

    out = module(keys, offsets, per_sample_weights=psw)
    expected = reference(keys, offsets, per_sample_weights=psw_reference)
    assert out.shape == expected.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-7)

    upstream = torch.randn(out.shape, generator=generator)
    (out * upstream).sum().backward()
    (expected * upstream).sum().backward()
    if keys.numel() == 0:
        assert torch.equal(all_rows(table), before)
    else:
        check_step(table, before, reference.weight.grad, LR)
    if weighted:
        torch.testing.assert_close(psw.grad, psw_reference.grad, rtol=1e-6, atol=1e-6)


def test_embedding_bag_argument_errors_like_nn(table):
    bag = st.EmbeddingBag(table, mode="mean")
    with pytest.raises(NotImplementedError):
        bag(torch.tensor([1, 2]), torch.tensor([0]), per_sample_weights=torch.ones(2))
    with pytest.raises(ValueError):
        bag(torch.tensor([[1, 2]]), torch.tensor([0]))
    with pytest.raises(ValueError):
        bag(torch.tensor([1, 2]))
    with pytest.raises(ValueError):
        st.EmbeddingBag(table, mode="median")
    # Keys after the last offset: PyTorch's answer differs by mode (and its gradient is garbage).
    with pytest.raises(ValueError, match="end at the number of keys"):
        st.EmbeddingBag(table, include_last_offset=True)(torch.tensor([1, 2, 3, 4]), torch.tensor([0, 2]))
    # Offsets not starting at 0, or out of order: PyTorch 2.13 with one thread (this file's
    # setting) computes something for the second; Strata refuses both, in every mode.
    for mode in ("sum", "mean", "max"):
        for offsets in ([1, 2], [0, 3, 1], [0, 2, 2, 1], [0, 5]):
            with pytest.raises(ValueError, match="offsets must start at 0 and never decrease"):
                st.EmbeddingBag(table, mode=mode)(torch.tensor([1, 2, 3, 4]), torch.tensor(offsets))
    with pytest.raises(ValueError, match="offsets must be 1-D"):
        st.EmbeddingBag(table)(torch.tensor([1, 2]), torch.tensor([[0]]))
    # per_sample_weights of another shape or type, 1-D and 2-D input alike.
    for keys, weights in ((torch.tensor([1, 2, 3]), torch.ones(2)), (torch.tensor([[1, 2], [3, 4]]), torch.ones(4)),
                          (torch.tensor([[1, 2], [3, 4]]), torch.ones(2, 2, dtype=torch.float64))):
        offsets = torch.tensor([0]) if keys.dim() == 1 else None
        with pytest.raises(ValueError, match="per_sample_weights must be float32"):
            st.EmbeddingBag(table)(keys, offsets, per_sample_weights=weights)
    # No bags: no rows read, none stepped, as nn.EmbeddingBag's (0, D).
    before = all_rows(table)
    out = st.EmbeddingBag(table)(torch.tensor([1, 2]), torch.tensor([], dtype=torch.long))
    assert out.shape == (0, D)
    assert torch.equal(all_rows(table), before)


# ---- When the step happens ------------------------------------------------------------------

def test_learning_rate_override(table):
    keys = torch.tensor([1, 2, 2, 3])
    before = all_rows(table)
    reference = nn.Embedding.from_pretrained(before.clone(), freeze=False)
    st.Embedding(table, learning_rate=0.5)(keys).sum().backward()
    reference(keys).sum().backward()
    check_step(table, before, reference.weight.grad, 0.5)


def test_backward_twice_steps_twice(table):
    keys = torch.tensor([4, 5, 4])
    before = all_rows(table)
    reference = nn.Embedding.from_pretrained(before.clone(), freeze=False)
    loss = (st.Embedding(table)(keys) ** 2).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    (reference(keys) ** 2).sum().backward()
    # Both steps used the gradient of the forward's rows.
    check_step(table, before, reference.weight.grad, LR, steps=2)


def test_gradient_accumulation_steps_per_backward(table):
    keys = torch.tensor([[6, 7], [7, 8]])
    module = st.Embedding(table)
    before = all_rows(table)
    module(keys[0]).sum().backward()
    middle = all_rows(table)
    assert not torch.equal(middle, before)       # stepped already, before any optimizer.step()
    module(keys[1]).sum().backward()
    grad = torch.zeros(N, D)
    grad[6] += 1
    grad[7] += 2
    grad[8] += 1
    check_step(table, before, grad, LR)


def test_eval_and_no_grad_peek_and_do_not_step(table):
    counting = CountingTable(table)
    module = st.EmbeddingBag(counting)
    keys, offsets = torch.tensor([1, 2, 3, 1]), torch.tensor([0, 2])
    before = all_rows(table)

    module.eval()
    out = module(keys, offsets)
    assert not out.requires_grad
    module.train()
    with torch.no_grad():
        assert not module(keys, offsets).requires_grad
    with torch.inference_mode():
        module(keys, offsets)
    assert counting.calls == {"lookup": 0, "peek": 3, "apply_gradients": 0}
    assert torch.equal(all_rows(table), before)

    out = module(keys, offsets)
    assert out.requires_grad
    out.sum().backward()
    assert counting.calls == {"lookup": 1, "peek": 3, "apply_gradients": 1}


def test_dense_optimizer_never_sees_the_table(table):
    model = nn.Sequential(st.Embedding(table), nn.Linear(D, 1))
    assert [p.shape for p in model.parameters()] == [torch.Size([1, D]), torch.Size([1])]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = all_rows(table)
    optimizer.zero_grad()
    model(torch.tensor([3, 4])).sum().backward()
    stepped = all_rows(table)
    assert not torch.equal(stepped, before)
    optimizer.step()
    assert torch.equal(all_rows(table), stepped)


# ---- Errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_negative_key_is_a_value_error(table, train):
    for module, args, where in (
        (st.Embedding(table), (torch.tensor([1, -1]),), "position 1"),
        (st.EmbeddingBag(table), (torch.tensor([1, 2, -3]), torch.tensor([0, 1])), "position 2"),
        (st.Embedding(table), (torch.tensor([[1, 2], [-3, -3]]),), r"index \(1, 0\)"),
    ):
        module.train(train)
        key = int(args[0].min())
        with pytest.raises(ValueError, match=rf"^table 't': key {key} at {where} is negative; keys are uint64"):
            module(*args)


def test_float_keys_are_a_type_error(table):
    with pytest.raises(TypeError, match="^table 't': keys must be an integer tensor"):
        st.Embedding(table)(torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_closed_store_is_a_closed_error(tmp_path, train):
    store = strata.Store(str(tmp_path / "closed"))
    table = store.create_table("t", D)
    module = st.EmbeddingBag(table).train(train)
    module(torch.tensor([1, 2]), torch.tensor([0]))
    store.close()
    with pytest.raises(strata.ClosedError):
        module(torch.tensor([1, 2]), torch.tensor([0]))
    with pytest.raises(strata.ClosedError):
        st.Embedding(table).train(train)(torch.tensor([1]))


def test_error_in_backward_leaves_rows(table):
    """As documented: a non-finite gradient raises NonFiniteError and the batch is not applied."""
    keys = torch.tensor([1, 2])
    before = all_rows(table)
    out = st.Embedding(table)(keys)
    with pytest.raises(strata.NonFiniteError, match="'t'"):
        (out * float("inf")).sum().backward()
    assert torch.equal(all_rows(table), before)


@pytest.mark.parametrize("uses", ["one_module_twice", "two_modules"])
def test_a_table_used_twice_in_a_forward_steps_twice(store, uses):
    """Documented limitation: each use of a table in one forward pass is an optimizer step of
    its own in backward. With Adagrad the rows equal two successive steps, not one step on the
    summed gradient."""
    spec = dict(initializer="uniform", init_args=(-1.0, 1.0), seed=5, optimizer="adagrad",
                learning_rate=0.1, initial_accumulator=0.1)
    table = store.create_table("twice", D, **spec)
    successive = store.create_table("successive", D, **spec)
    summed = store.create_table("summed", D, **spec)
    key = np.array([3], dtype=np.uint64)
    upstream = torch.randn(1, D, generator=torch.Generator().manual_seed(3))

    first = st.Embedding(table)
    second = first if uses == "one_module_twice" else st.EmbeddingBag(table, mode="sum")
    keys = torch.tensor([3])
    a = first(keys)
    b = second(keys) if second is first else second(keys.view(1, 1))
    ((a * upstream).sum() + (b * upstream).sum()).backward()

    # The same gradient for both uses, so the order of the two steps does not matter.
    gradient = upstream.numpy().astype(np.float32)
    successive.apply_gradients(key, gradient)
    successive.apply_gradients(key, gradient)
    summed.apply_gradients(key, 2 * gradient)
    rows = table.peek(key)
    assert np.array_equal(rows, successive.peek(key))
    assert not np.allclose(rows, summed.peek(key), rtol=1e-4, atol=1e-6)


# ---- Checkpoints ----------------------------------------------------------------------------

class SmallModel(nn.Module):
    def __init__(self, table):
        super().__init__()
        torch.manual_seed(0)
        self.bag = st.EmbeddingBag(table, mode="mean")
        self.mlp = nn.Sequential(nn.Linear(D, 4), nn.ReLU(), nn.Linear(4, 1))

    def forward(self, keys, offsets):
        return self.mlp(self.bag(keys, offsets))


def small_model(table):
    return SmallModel(table)


def test_deepcopy_of_a_model_shares_the_table(table):
    """copy.deepcopy(model), as EMA and torch.optim.swa_utils.AveragedModel do it: the copy's
    module holds the same table (a handle), and the original works on after the copy goes."""
    import copy
    import gc

    model = small_model(table)
    keys, offsets = torch.tensor([1, 2, 3]), torch.tensor([0, 2])
    twin = copy.deepcopy(model)
    assert twin is not model and twin.bag is not model.bag
    assert twin.bag.table is table and copy.copy(model.bag).table is table
    for name, value in model.state_dict().items():
        assert torch.equal(value, twin.state_dict()[name]) and value is not twin.state_dict()[name]
    assert torch.equal(twin(keys, offsets), model(keys, offsets))
    averaged = torch.optim.swa_utils.AveragedModel(model)
    assert averaged.module.bag.table is table
    del twin, averaged
    gc.collect()
    before = all_rows(table)
    model.bag(keys, offsets).sum().backward()
    assert not torch.equal(all_rows(table), before)


@pytest.mark.parametrize("background", [False, True], ids=["in place", "in the background"])
def test_checkpoint_round_trip(tmp_path, background):
    path = str(tmp_path / "ckpt")
    keys, offsets = torch.tensor([1, 2, 3, 4, 2]), torch.tensor([0, 3])
    with strata.Store(path) as store:
        table = store.create_table("t", D, initializer="normal", init_args=(0.0, 0.1), seed=3,
                                   optimizer="adagrad", learning_rate=0.05)
        model = small_model(table)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        assert st.load_checkpoint(store, model, optimizer) is None
        for _ in range(3):
            optimizer.zero_grad()
            model(keys, offsets).pow(2).sum().backward()
            optimizer.step()
        rows = all_rows(table)
        dense = {k: v.clone() for k, v in model.state_dict().items()}
        adam = copy.deepcopy(optimizer.state_dict())
        if background:
            pending = st.save_checkpoint(store, model, optimizer, extra={"step": 3, "note": "x", "lrs": [0.1, 0.2]},
                                         background=True)
            # Training goes on while it is written: neither these rows nor these weights are in it.
            for _ in range(2):
                optimizer.zero_grad()
                model(keys, offsets).pow(2).sum().backward()
                optimizer.step()
            generation = pending.wait()
        else:
            generation = st.save_checkpoint(store, model, optimizer, extra={"step": 3, "note": "x", "lrs": [0.1, 0.2]})
        assert generation == store.last_checkpoint().generation >= 1
        # Steps after the checkpoint are lost with the store's close.
        model(keys, offsets).sum().backward()

    with strata.Store(path) as store:
        table = store.table("t")
        model = small_model(table)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        extra = st.load_checkpoint(store, model, optimizer)
        assert extra == {"step": 3, "note": "x", "lrs": [0.1, 0.2]}
        assert torch.equal(all_rows(table), rows)
        for name, value in model.state_dict().items():
            assert torch.equal(value, dense[name]), name
        state = optimizer.state_dict()["state"]
        assert state.keys() == adam["state"].keys()
        for index in state:
            for name in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(state[index][name], adam["state"][index][name])


def test_load_checkpoint_without_payload_or_extra(store, table):
    model = small_model(table)
    store.checkpoint()
    assert st.load_checkpoint(store, model) is None
    st.save_checkpoint(store, model)
    assert st.load_checkpoint(store, model) == {}
    with pytest.raises(ValueError, match="optimizer"):
        st.load_checkpoint(store, model, torch.optim.SGD(model.parameters(), lr=0.1))


# ---- DLRM -----------------------------------------------------------------------------------

def train_step(model, optimizer, batch, loss_fn=nn.BCEWithLogitsLoss()):
    dense, sparse, labels = batch
    optimizer.zero_grad()
    loss = loss_fn(model(dense, sparse), labels)
    loss.backward()
    optimizer.step()
    return loss.item()


def test_dlrm_parity_with_torch(store):
    """The issue's "done when": a DLRM with strata EmbeddingBags (SGD in the store) and
    torch.optim.SGD on the dense part trains as the same model with nn.EmbeddingBag(sparse=True)
    and torch.optim.SGD over everything."""
    lr, steps = 0.05, 300
    tables = create_tables(store, learning_rate=lr)
    strata_model = DLRM([st.EmbeddingBag(t, mode=m) for t, m in zip(tables, BAG_MODES)])
    torch_bags = [
        nn.EmbeddingBag.from_pretrained(torch.from_numpy(table_rows(t, n).copy()), freeze=False,
                                        mode=m, sparse=True)
        for t, n, m in zip(tables, TABLE_SIZES, BAG_MODES)
    ]
    torch_model = DLRM(torch_bags)
    for name, value in strata_model.state_dict().items():
        assert torch.equal(value, torch_model.state_dict()[name])
    strata_optimizer = torch.optim.SGD(strata_model.parameters(), lr=lr)
    torch_optimizer = torch.optim.SGD(torch_model.parameters(), lr=lr)

    worst, losses = 0.0, []
    for step in range(steps):
        batch = make_batch(1000 + step)
        loss_strata = train_step(strata_model, strata_optimizer, batch)
        loss_torch = train_step(torch_model, torch_optimizer, batch)
        difference = abs(loss_strata - loss_torch) / max(1.0, abs(loss_torch))
        worst = max(worst, difference)
        losses.append(loss_torch)
        assert difference <= 1e-5, f"step {step}: strata {loss_strata!r}, torch {loss_torch!r}"
    print(f"\nDLRM parity over {steps} steps: largest relative loss difference {worst:.3e}; "
          f"loss {np.mean(losses[:20]):.4f} -> {np.mean(losses[-20:]):.4f}")
    assert np.mean(losses[-20:]) < np.mean(losses[:20])

    worst_row = 0.0
    for t, n, bag in zip(tables, TABLE_SIZES, torch_bags):
        rows, weight = table_rows(t, n), bag.weight.detach().numpy()
        np.testing.assert_allclose(rows, weight, rtol=1e-5, atol=1e-6)
        worst_row = max(worst_row, float(np.abs(rows - weight).max()))
    torch_state = torch_model.state_dict()
    for name, value in strata_model.state_dict().items():
        torch.testing.assert_close(value, torch_state[name], rtol=1e-5, atol=1e-6)
    print(f"largest row difference {worst_row:.3e}")


def test_dlrm_dense_adam_learns(store):
    """Any torch.optim optimizer runs the dense part: Adam here, Adagrad in the tables."""
    tables = create_tables(store, optimizers=("adagrad", "rowwise_adagrad", "adam"), learning_rate=0.05)
    model = DLRM([st.EmbeddingBag(t, mode=m) for t, m in zip(tables, BAG_MODES)])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = [train_step(model, optimizer, make_batch(step, batch_size=128)) for step in range(100)]
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    print(f"\nDLRM with dense Adam: loss {first:.4f} -> {last:.4f}")
    assert last < 0.75 * first
