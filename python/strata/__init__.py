"""Strata from Python: an out-of-core embedding store, through libStrataC (``strata.h``).

::

    import numpy as np
    import strata

    with strata.Store("/data/ads-model") as store:
        items = store.create_table("items", 64, initializer="uniform", init_args=(-0.01, 0.01),
                                   optimizer="rowwise_adagrad", learning_rate=0.05)
        keys = np.array([3, 1, 4, 1, 5], dtype=np.uint64)
        rows = items.lookup(keys)                    # float32, (5, 64); keys not copied
        items.apply_gradients(keys, np.ones_like(rows))
        store.checkpoint(b"dense state")             # durable, atomic, every table

Keys are uint64 (a 1-D C-contiguous ``np.uint64`` array goes to the library without a copy);
rows and gradients are float32 of shape ``(len(keys), dimension)``. Every call releases the
GIL while the library works, and a store may be used from many threads at once. Errors are
:class:`StrataError` subclasses, one per ``strata_status`` code, whose text is the library's
message. After ``os.fork()`` the parent's store cannot be used in the child (it raises
:class:`ForkedError`): a DataLoader worker opens the store again with ``read_only=True``.

The library is found as ``$STRATA_LIBRARY``, else ``libStrataC.so`` inside this package.
"""

from __future__ import annotations

from . import _native
from . import errors
from .errors import *  # noqa: F403 - every exception class, as errors.__all__ lists them
from .store import DEFAULT_LEARNING_RATES, Checkpoint, PendingCheckpoint, Store, Table

__version__ = "1.0.0"
#: The ``STRATA_API_VERSION`` of ``strata.h`` this package was written against.
API_VERSION = _native.API_VERSION


def library_version() -> str:
    """The loaded libStrataC's version (``strata_version()``), such as ``"1.0.0"``."""
    return _native.lib.strata_version().decode("utf-8")


def library_path() -> str:
    """The path of the loaded libStrataC.so."""
    return _native.library_path()


__all__ = [
    "API_VERSION",
    "DEFAULT_LEARNING_RATES",
    "Checkpoint",
    "PendingCheckpoint",
    "Store",
    "Table",
    "__version__",
    "library_path",
    "library_version",
] + errors.__all__
