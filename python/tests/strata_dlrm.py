"""A small DLRM and its seeded synthetic data, shared by the strata.torch tests and
train_for_kill.py (not a test module itself)."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

DENSE_FEATURES = 8
DIMENSION = 16
TABLE_SIZES = (1000, 3000, 5000)
BAG_MODES = ("sum", "mean", "sum")

Batch = Tuple[Tensor, List[Tuple[Tensor, Tensor]], Tensor]


class DLRM(nn.Module):
    """Bottom MLP over dense features, one embedding bag per table, pairwise dot products of
    all of them (the dense vector included), top MLP to one logit."""

    def __init__(self, bags: Sequence[nn.Module], *, seed: int = 0) -> None:
        super().__init__()
        # The dense layers draw from a seed of their own, whatever the bags drew before.
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        self.bottom = nn.Sequential(nn.Linear(DENSE_FEATURES, 32), nn.ReLU(),
                                    nn.Linear(32, DIMENSION), nn.ReLU())
        self.bags = nn.ModuleList(bags)
        vectors = len(bags) + 1
        self.register_buffer("pairs", torch.triu_indices(vectors, vectors, offset=1), persistent=False)
        self.top = nn.Sequential(nn.Linear(DIMENSION + self.pairs.shape[1], 32), nn.ReLU(),
                                 nn.Linear(32, 1))
        torch.random.set_rng_state(generator_state)

    def forward(self, dense: Tensor, sparse: List[Tuple[Tensor, Tensor]]) -> Tensor:
        x = self.bottom(dense)
        vectors = [x] + [bag(keys, offsets) for bag, (keys, offsets) in zip(self.bags, sparse)]
        z = torch.stack(vectors, dim=1)                       # (B, T + 1, d)
        products = torch.bmm(z, z.transpose(1, 2))            # (B, T + 1, T + 1)
        flat = products[:, self.pairs[0], self.pairs[1]]      # (B, pairs)
        return self.top(torch.cat([x, flat], dim=1)).squeeze(1)


def _key_score(keys: np.ndarray, table: int) -> np.ndarray:
    """A fixed score in [-1, 1] per key: what the labels are made of."""
    h = (keys.astype(np.uint64) * np.uint64(2654435761) + np.uint64(97 * table + 13)) % np.uint64(1009)
    return h.astype(np.float64) / 504.0 - 1.0


def make_batch(seed: int, batch_size: int = 64, *, max_bag: int = 5) -> Batch:
    """Batch `seed`: dense features, per table a 1-D key tensor and its offsets (bags of 0 to
    max_bag - 1 Zipf-distributed keys, so rows repeat within and across batches), and a 0/1
    label a model can learn."""
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(batch_size, DENSE_FEATURES)).astype(np.float32)
    score = dense[:, 0] - 0.5 * dense[:, 1]
    sparse = []
    for t, size in enumerate(TABLE_SIZES):
        lengths = rng.integers(0, max_bag, size=batch_size)
        keys = (rng.zipf(1.2, size=int(lengths.sum())) - 1) % size
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        per_key = _key_score(keys, t)
        bag_of_key = np.repeat(np.arange(batch_size), lengths)
        score = score + np.bincount(bag_of_key, weights=per_key, minlength=batch_size)
        sparse.append((torch.from_numpy(keys.astype(np.int64)), torch.from_numpy(offsets.astype(np.int64))))
    labels = torch.from_numpy((score > 0).astype(np.float32))
    return torch.from_numpy(dense), sparse, labels


def create_tables(store, optimizers: Sequence[str] = ("sgd", "sgd", "sgd"), learning_rate: float = 0.05):
    """The DLRM's tables in `store` (created, or opened if they exist with the same spec)."""
    return [
        store.create_table(f"t{t}", DIMENSION, initializer="uniform", init_args=(-0.1, 0.1),
                           seed=100 + t, optimizer=optimizer, learning_rate=learning_rate)
        for t, optimizer in enumerate(optimizers)
    ]


def table_rows(table, size: int) -> np.ndarray:
    """Rows of keys 0..size-1, peeked."""
    return table.peek(np.arange(size, dtype=np.uint64))
