"""PyTorch modules over Strata tables: ``Embedding``, ``EmbeddingBag`` and checkpoints.

A Strata table is an embedding table that lives in the store, out of core, with its sparse
optimizer's state beside each row. The modules here make such a table a layer of a PyTorch
model::

    import torch
    import strata
    import strata.torch

    store = strata.Store("/data/ads-model")
    items = store.create_table("items", 16, initializer="uniform", init_args=(-0.05, 0.05),
                               optimizer="adagrad", learning_rate=0.05)
    bag = strata.torch.EmbeddingBag(items, mode="sum")

    dense = torch.optim.Adam(model.parameters())   # the dense part, any torch.optim optimizer
    for batch in data:
        loss = model(batch)
        dense.zero_grad()
        loss.backward()        # the tables' optimizer steps happen here, in the store
        dense.step()
        if step % 1000 == 0:
            strata.torch.save_checkpoint(store, model, dense, extra={"step": step})

How it works. A forward pass takes the batch's keys, keeps each key once
(``torch.unique``), looks the unique keys' rows up in the table (``table.lookup``, which
brings them to the hot tier) as a ``(U, d)`` tensor sharing the lookup's memory, and builds
the output with PyTorch's own ``F.embedding`` / ``F.embedding_bag`` over those rows. The
backward of that op sums the gradient of every occurrence of a key into one row of a
``(U, d)`` gradient, and the custom autograd function at the root of it hands that gradient
to ``table.apply_gradients``: the table's optimizer (SGD, Adagrad, row-wise Adagrad, Adam,
FTRL, as the table was created with) takes its step *during* ``loss.backward()``, the way
TorchRec's fused optimizers do. Nothing of the table is an ``nn.Parameter``: ``torch.optim``
optimizers never see it and ``state_dict()`` holds none of it; the rows are checkpointed by
the store (see :func:`save_checkpoint`).

Consequences of the step happening in backward:

* Gradient accumulation over several ``backward()`` calls before one ``optimizer.step()``
  makes one table step per ``backward()``, not one for the sum.
* ``backward(retain_graph=True)`` called twice on the same graph steps the tables twice.
* ``optimizer.zero_grad()`` does not touch the tables; there is nothing to zero.
* Checkpoint after ``optimizer.step()``, never between ``backward()`` and ``step()``: the rows
  have stepped by then and the dense parameters not yet.

Limitations:

* **One module call per table per step.** A table used by two modules, or one module called
  twice, in one forward pass gets two optimizer steps in backward, one per use, each with
  that use's gradient. With SGD that equals one step on the summed gradient; with Adagrad,
  row-wise Adagrad, Adam and FTRL it does not, and Adam's per-row step count advances twice.
  Gather all of a step's keys for a table into one call of one module (an ``EmbeddingBag``
  with offsets, or one ``Embedding`` call whose output you split).
* **The table's step takes the raw gradient, in backward.** Nothing between ``backward()``
  and ``optimizer.step()`` reaches the tables: ``torch.cuda.amp`` / ``GradScaler`` loss
  scaling (the tables would step on the scaled gradient, never unscaled) and
  ``clip_grad_norm_`` (the rows have stepped before it runs) do not apply to them. Scale the
  loss only for the dense part, or fold a factor into the module's ``learning_rate``. A
  non-finite gradient raises :class:`strata.NonFiniteError` from ``backward()`` and that
  table's batch is not applied (the table's rows are unchanged).

In ``eval()`` mode or under ``torch.no_grad()`` / ``torch.inference_mode()`` the modules read
with ``table.peek`` instead: rows stay in their tier, no counter changes, and the output
does not require grad with respect to the table.
"""

from __future__ import annotations

import io
from typing import Any, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Embedding", "EmbeddingBag", "save_checkpoint", "load_checkpoint"]


def _unique_keys(input: Tensor, table: str) -> Tuple[Tensor, Tensor, np.ndarray]:
    """Deduplicates ``input``'s keys, for table ``table`` (its name, for error messages).

    Returns ``(unique, inverse, unique_u64)``: ``unique`` the sorted distinct keys as a CPU
    int64 tensor, ``inverse`` the position in ``unique`` of every element of ``input`` (same
    shape as ``input``, on the CPU) and ``unique_u64`` a uint64 numpy view of ``unique``'s
    memory (no copy). Raises ``ValueError`` for a negative key and ``TypeError`` for keys
    that are not integers.
    """
    if not isinstance(input, Tensor):
        raise TypeError(
            f"table '{table}': keys must be a torch.Tensor of integers, not {type(input).__name__}")
    if input.dtype.is_floating_point or input.dtype.is_complex or input.dtype == torch.bool:
        raise TypeError(f"table '{table}': keys must be an integer tensor (torch.long), not {input.dtype}")
    keys = input.detach().to(device="cpu", dtype=torch.int64)
    unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    # Sorted: the first key is the smallest.
    if unique.numel() and int(unique[0]) < 0:
        key = int(unique[0])
        where = (keys == key).nonzero()[0].tolist()
        position = f"position {where[0]}" if len(where) == 1 else f"index {tuple(where)}"
        raise ValueError(
            f"table '{table}': key {key} at {position} is negative; keys are uint64 (they reach "
            "PyTorch as non-negative int64, as nn.Embedding's indices must be in range)")
    unique = unique.contiguous()
    return unique, inverse, unique.numpy().view(np.uint64)


class _UniqueRows(torch.autograd.Function):
    """The rows of unique keys, with the table's optimizer step as their backward.

    ``forward(anchor, table, keys, learning_rate)`` looks ``keys`` (uint64, distinct) up in
    ``table`` and returns their rows as a ``(U, d)`` float32 tensor. ``anchor`` is a
    zero-element tensor that requires grad, there only so that autograd records this node
    and runs its backward. ``backward(grad_rows)`` hands ``grad_rows`` — already summed per
    key by the op that consumed the rows — to ``table.apply_gradients`` and returns no
    gradient for any input.
    """

    @staticmethod
    def forward(ctx: Any, anchor: Tensor, table: Any, keys: np.ndarray,  # type: ignore[override]
                learning_rate: Optional[float]) -> Tensor:
        ctx.table = table
        ctx.keys = keys
        ctx.learning_rate = learning_rate
        if keys.size == 0:
            return torch.zeros((0, table.dimension), dtype=torch.float32)
        return torch.from_numpy(table.lookup(keys))

    @staticmethod
    def backward(ctx: Any, grad_rows: Tensor) -> Tuple[None, None, None, None]:  # type: ignore[override]
        keys: np.ndarray = ctx.keys
        if keys.size:
            grads = grad_rows.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
            ctx.table.apply_gradients(keys, grads, learning_rate=ctx.learning_rate)
        return None, None, None, None


class _SumBags(torch.autograd.Function):
    """Weighted sums of bags of rows: ``out[b] = sum of weight[i] * rows[index[i]]`` over the
    ``i`` with ``bag[i] == b``, for ``bags`` bags.

    The same values as ``F.embedding_bag`` in ``sum`` and ``mean`` mode, with a backward of
    one ``index_add_``: PyTorch's own backward of ``embedding_bag`` into a dense weight sorts
    the indices first, and took twice as long for a batch's unique rows. ``weight`` is the
    caller's per-sample weights (given their gradient when they need it), ``1 / len(bag)``
    for a mean, or ``None`` for a plain sum.
    """

    @staticmethod
    def forward(ctx: Any, rows: Tensor, index: Tensor, bag: Tensor, bags: int,  # type: ignore[override]
                weight: Optional[Tensor]) -> Tensor:
        ctx.save_for_backward(rows, index, bag, weight)
        out = torch.zeros((bags, rows.shape[1]), dtype=rows.dtype, device=rows.device)
        if index.numel():
            picked = rows.index_select(0, index)
            if weight is not None:
                picked = picked * weight.unsqueeze(1)
            out.index_add_(0, bag, picked)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> Tuple[Optional[Tensor], None, None, None, Optional[Tensor]]:  # type: ignore[override]
        rows, index, bag, weight = ctx.saved_tensors
        per_index = grad_out.index_select(0, bag)
        grad_weight = None
        if weight is not None and ctx.needs_input_grad[4]:
            grad_weight = (per_index * rows.index_select(0, index)).sum(1)
        if weight is not None:
            per_index = per_index * weight.unsqueeze(1)
        grad_rows = torch.zeros_like(rows).index_add_(0, index, per_index)
        return grad_rows, None, None, None, grad_weight


class _TableModule(nn.Module):
    """What :class:`Embedding` and :class:`EmbeddingBag` share: the table, the learning rate
    and the reading of a batch's unique rows."""

    def __init__(self, table: Any, learning_rate: Optional[float]) -> None:
        super().__init__()
        if learning_rate is not None:
            learning_rate = float(learning_rate)
        self.table = table
        self.learning_rate: Optional[float] = learning_rate
        # Makes autograd record _UniqueRows. A plain attribute, neither a parameter nor a
        # buffer: torch.optim never sees it, state_dict() does not hold it, .to() leaves it.
        self._anchor = torch.empty(0, requires_grad=True)

    @property
    def embedding_dim(self) -> int:
        """The table's dimension, the size of each output row."""
        return int(self.table.dimension)

    def _rows(self, input: Tensor) -> Tuple[Tensor, Tensor]:
        """``(inverse, rows)``: ``rows[inverse]`` are the rows of ``input``'s keys, ``rows``
        on ``input``'s device; looked up and stepped in backward when training with grad
        enabled, peeked otherwise."""
        _, inverse, keys = _unique_keys(input, getattr(self.table, "name", "?"))
        if self.training and torch.is_grad_enabled():
            rows = _UniqueRows.apply(self._anchor, self.table, keys, self.learning_rate)
        elif keys.size:
            rows = torch.from_numpy(self.table.peek(keys))
        else:
            rows = torch.zeros((0, self.embedding_dim), dtype=torch.float32)
        if input.device != rows.device:
            rows = rows.to(input.device)
            inverse = inverse.to(input.device)
        return inverse, rows

    def extra_repr(self) -> str:
        name = getattr(self.table, "name", "?")
        text = f"table={name!r}, embedding_dim={self.embedding_dim}"
        if self.learning_rate is not None:
            text += f", learning_rate={self.learning_rate}"
        return text


class Embedding(_TableModule):
    """A lookup table over a Strata table, like ``nn.Embedding``.

    ``Embedding(table)(input)`` with ``input`` an integer tensor of any shape returns a float32
    tensor of shape ``(*input.shape, table.dimension)``: the row of each key. Keys are any
    non-negative int64 (a Strata key is a uint64; there is no vocabulary size); a negative key
    raises ``ValueError``.

    Training (``train()`` mode with grad enabled), the rows are read with ``table.lookup``
    and ``loss.backward()`` applies one step of the table's own optimizer to every key of the
    batch, a repeated key getting one step with the sum of its gradients. ``learning_rate``,
    if given, overrides the table's for these steps. Because the step happens in backward,
    several ``backward()`` calls before one ``optimizer.step()`` (gradient accumulation) make
    several steps, and ``backward(retain_graph=True)`` twice steps twice. In ``eval()`` mode
    or without grad the rows are read with ``table.peek`` and nothing steps.

    Limitations (see the module's documentation):

    * Call a module once per step per table, with all its keys: a table used by two modules,
      or a module called twice, in one forward pass steps once per use. With SGD that equals
      one step on the summed gradient; with Adagrad, Adam or FTRL it does not, and Adam's
      per-row step count advances twice.
    * The step takes the raw gradient in backward: ``GradScaler`` / AMP loss scaling and
      ``clip_grad_norm_`` do not reach the table (scale the loss for the dense part only, or
      set ``learning_rate``). A non-finite gradient raises :class:`strata.NonFiniteError`
      and the batch is not applied.

    The module has no parameters and an empty ``state_dict()``; the rows are the store's and
    are made durable by ``store.checkpoint()`` (see :func:`save_checkpoint`).

    Args:
        table: a ``strata`` table (from ``store.create_table`` or ``store.table``).
        learning_rate: the learning rate of the table's steps from this module, or ``None``
            for the one the table was created with.
    """

    def __init__(self, table: Any, *, learning_rate: Optional[float] = None) -> None:
        super().__init__(table, learning_rate)

    def forward(self, input: Tensor) -> Tensor:
        """Returns the rows of ``input``'s keys, shape ``(*input.shape, dimension)``."""
        inverse, rows = self._rows(input)
        return F.embedding(inverse, rows)


class EmbeddingBag(_TableModule):
    """Sums or means of bags of rows of a Strata table, like ``nn.EmbeddingBag``.

    ``forward(input, offsets=None, per_sample_weights=None)`` follows ``nn.EmbeddingBag``:

    * ``input`` 2-D ``(B, N)``: ``B`` bags of ``N`` keys each; ``offsets`` must be ``None``.
    * ``input`` 1-D: the keys of all bags one after the other, ``offsets`` 1-D the start of
      each bag in ``input``; with ``include_last_offset=True`` ``offsets`` has one more
      element, the end of the last bag (``len(input)``).
    * ``per_sample_weights`` (float32, ``input``'s shape) scales each row before the sum;
      only with ``mode="sum"``.
    * An empty bag gives a row of zeros.

    Returns a float32 tensor ``(B, dimension)``. ``mode`` is ``"sum"``, ``"mean"`` or
    ``"max"``. Keys are non-negative int64; a negative key raises ``ValueError``.

    Training, ``loss.backward()`` applies one step of the table's optimizer to every key of
    the batch (a key in several bags, or several times in one, gets one step with the sum of
    its gradients), with ``learning_rate`` if given, else the table's. The step happens in
    backward: gradient accumulation over several ``backward()`` calls makes several steps, and
    ``backward(retain_graph=True)`` twice steps twice. In ``eval()`` mode or without grad the
    rows are read with ``table.peek`` and nothing steps. The module has no parameters.

    Limitations (see the module's documentation):

    * Call a module once per step per table, with all its keys (all the bags in one call): a
      table used by two modules, or a module called twice, in one forward pass steps once
      per use. With SGD that equals one step on the summed gradient; with Adagrad, Adam or
      FTRL it does not, and Adam's per-row step count advances twice.
    * The step takes the raw gradient in backward: ``GradScaler`` / AMP loss scaling and
      ``clip_grad_norm_`` do not reach the table (scale the loss for the dense part only, or
      set ``learning_rate``). A non-finite gradient raises :class:`strata.NonFiniteError`
      and the batch is not applied.

    Args:
        table: a ``strata`` table.
        mode: ``"sum"``, ``"mean"`` or ``"max"``.
        learning_rate: the learning rate of this module's steps, or ``None`` for the table's.
        include_last_offset: as ``nn.EmbeddingBag``'s.
    """

    def __init__(self, table: Any, mode: str = "sum", *, learning_rate: Optional[float] = None,
                 include_last_offset: bool = False) -> None:
        if mode not in ("sum", "mean", "max"):
            raise ValueError(f"mode must be 'sum', 'mean' or 'max', not {mode!r}")
        super().__init__(table, learning_rate)
        self.mode = mode
        self.include_last_offset = bool(include_last_offset)

    def forward(self, input: Tensor, offsets: Optional[Tensor] = None,
                per_sample_weights: Optional[Tensor] = None) -> Tensor:
        """Returns one row per bag, shape ``(bags, dimension)``."""
        if input.dim() not in (1, 2):
            raise ValueError(
                f"input must be 1-D (with offsets) or 2-D (fixed-size bags), not {input.dim()}-D")
        if input.dim() == 2 and offsets is not None:
            raise ValueError("offsets must be None when input is 2-D (each row is a bag)")
        if input.dim() == 1 and offsets is None:
            raise ValueError("offsets must be given when input is 1-D")
        if per_sample_weights is not None and self.mode != "sum":
            raise NotImplementedError(
                f"per_sample_weights is only supported for mode='sum' (got mode='{self.mode}')")
        name = getattr(self.table, "name", "?")
        if per_sample_weights is not None and (per_sample_weights.shape != input.shape
                                               or per_sample_weights.dtype != torch.float32):
            raise ValueError(
                f"table '{name}': per_sample_weights must be float32 of the input's shape {tuple(input.shape)}, "
                f"not {per_sample_weights.dtype} of shape {tuple(per_sample_weights.shape)}")
        # The bag of every key (checked whole here: PyTorch 2.13 does not check offsets out of
        # order with one thread, and answers keys after include_last_offset's end differently
        # in each mode, with uninitialised memory as their gradient).
        if input.dim() == 2:
            bags, size = input.shape
            lengths = torch.full((bags,), size)
        else:
            if offsets.dim() != 1:
                raise ValueError(f"table '{name}': offsets must be 1-D, not {offsets.dim()}-D")
            end = torch.tensor([input.numel()], dtype=offsets.dtype)
            bounds = offsets.cpu() if self.include_last_offset else torch.cat([offsets.cpu(), end])
            bags = max(bounds.numel() - 1, 0)
            lengths = bounds[1:] - bounds[:-1]
            if bags and (int(bounds[0]) != 0 or bool((lengths < 0).any()) or int(bounds[-1]) != input.numel()):
                raise ValueError(
                    f"table '{name}': offsets must start at 0 and never decrease"
                    + (", and with include_last_offset=True end at the number of keys" if self.include_last_offset
                       else f", each at most the number of keys ({input.numel()})")
                    + f"; got {offsets.tolist()[:8]}{' ...' if offsets.numel() > 8 else ''}")
        if bags == 0:
            # No key is in a bag: none is read or stepped, and the (0, d) result is in the graph.
            out = self._rows(input.reshape(-1)[:0])[1]
            if per_sample_weights is not None:
                # Keeps the weights in the graph, with a zero gradient, as nn.EmbeddingBag does.
                out = out + 0 * per_sample_weights.sum()
            return out
        inverse, rows = self._rows(input)
        if self.mode == "max" or not rows.requires_grad:
            return F.embedding_bag(inverse, rows, offsets.to(inverse.dtype) if offsets is not None else None,
                                   mode=self.mode, per_sample_weights=per_sample_weights,
                                   include_last_offset=self.include_last_offset)
        index = inverse.reshape(-1)
        lengths = lengths.to(index.device)
        bag = torch.arange(bags, device=index.device).repeat_interleave(lengths)
        weight = None
        if per_sample_weights is not None:
            weight = per_sample_weights.reshape(-1)
        elif self.mode == "mean":
            weight = (1.0 / lengths.clamp(min=1).to(rows.dtype)).index_select(0, bag)
        return _SumBags.apply(rows, index, bag, bags, weight)

    def extra_repr(self) -> str:
        text = super().extra_repr() + f", mode={self.mode!r}"
        if self.include_last_offset:
            text += ", include_last_offset=True"
        return text


def save_checkpoint(store: Any, module: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                    extra: Optional[dict] = None, *, background: bool = False) -> Any:
    """Makes the tables' rows and the model's dense state durable as one atomic checkpoint.

    Serializes ``{"model": module.state_dict(), "optimizer": optimizer.state_dict() or None,
    "extra": extra}`` with ``torch.save`` and writes it as the payload of
    ``store.checkpoint``: after a crash at any moment the store reopens at this checkpoint, or
    at the one before, with the dense state that was saved with those rows. Call it after
    ``optimizer.step()`` (the tables step in ``backward()``, the dense part in ``step()``).

    ``extra`` is for what resuming needs besides the weights (the step, the epoch, a data
    position). Keep it to plain Python values (dict, list, tuple, str, int, float, bool,
    None) and tensors, so that :func:`load_checkpoint` can read it with
    ``torch.load(weights_only=True)``.

    Returns the checkpoint's generation. With ``background=True`` it returns as soon as the
    rows' state is taken (``store.begin_checkpoint``), the dense state already serialized, and
    training goes on while the checkpoint is written: the result is a
    :class:`strata.PendingCheckpoint`, whose ``wait()`` gives the generation once durable.
    """
    state = {
        "model": module.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "extra": extra,
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    if background:
        return store.begin_checkpoint(payload=buffer.getvalue())
    return int(store.checkpoint(payload=buffer.getvalue()))


def load_checkpoint(store: Any, module: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                    *, weights_only: bool = True) -> Optional[dict]:
    """Restores the dense state saved by :func:`save_checkpoint` with the store's last
    checkpoint.

    Loads the checkpoint's ``module`` state dict into ``module`` (strictly) and, if
    ``optimizer`` is given, its optimizer state. The tables' rows are not touched: a store
    just opened *is* at its last checkpoint, so call this right after opening, before
    training. (Called later in the same process, it would pair the checkpoint's dense state
    with rows that have stepped since.)

    Returns ``None`` if the store has no checkpoint or its last one has no payload, else the
    ``extra`` saved with it (``{}`` if that was ``None``). ``weights_only=False`` reads
    payloads whose ``extra`` holds arbitrary pickled objects; only for payloads you trust.
    """
    checkpoint = store.last_checkpoint()
    if checkpoint.generation == 0 or not checkpoint.payload:
        return None
    state = torch.load(io.BytesIO(checkpoint.payload), map_location="cpu", weights_only=weights_only)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(
            f"the payload of checkpoint {checkpoint.generation} was not written by "
            "strata.torch.save_checkpoint")
    module.load_state_dict(state["model"])
    if optimizer is not None:
        if state.get("optimizer") is None:
            raise ValueError(
                f"checkpoint {checkpoint.generation} holds no optimizer state to load")
        optimizer.load_state_dict(state["optimizer"])
    extra = state.get("extra")
    return extra if extra is not None else {}
