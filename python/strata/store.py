"""Stores and tables: the Python face of libStrataC (``strata.h``).

Every row call hands NumPy buffers to the library by address, without copying them: keys
as a 1-D C-contiguous ``uint64`` array, rows and gradients as C-contiguous ``float32`` arrays
of shape ``(len(keys), dimension)``. Anything else is converted first (a copy).

The library is called through :mod:`ctypes`, which releases the GIL for the whole call:
threads of one process (a training loop, a PyTorch DataLoader's pin-memory thread) work
on a store at once, and the library's own locks keep every call thread-safe.
"""

from __future__ import annotations

import ctypes
import json
import os
from ctypes import byref, c_double, c_float, c_size_t, c_uint64, c_void_p
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from . import _native
from ._native import lib
from .errors import ClosedError, error_class

__all__ = ["Checkpoint", "Store", "Table"]

_U64 = np.dtype(np.uint64)
_F32 = np.dtype(np.float32)

_DTYPES = {"float32": _native.FLOAT32, "float16": _native.FLOAT16, "bfloat16": _native.BFLOAT16}
_INITIALIZERS = {
    "zeros": (_native.INIT_ZEROS, 0),
    "constant": (_native.INIT_CONSTANT, 1),
    "uniform": (_native.INIT_UNIFORM, 2),
    "normal": (_native.INIT_NORMAL, 2),
}
_OPTIMIZERS = {
    "sgd": _native.SGD,
    "adagrad": _native.ADAGRAD,
    "rowwise_adagrad": _native.ROWWISE_ADAGRAD,
    "adam": _native.ADAM,
    "ftrl": _native.FTRL,
}
#: The learning rate (FTRL: alpha) a table gets when ``create_table`` is given none.
DEFAULT_LEARNING_RATES = {"sgd": 0.01, "adagrad": 0.01, "rowwise_adagrad": 0.01, "adam": 0.001, "ftrl": 0.05}
_NAMES = {
    "dtype": {v: k for k, v in _DTYPES.items()},
    "initializer": {v: k for k, (v, _) in _INITIALIZERS.items()},
    "optimizer": {v: k for k, v in _OPTIMIZERS.items()},
}

# The hot path looks these up once, as module globals.
_lookup = lib.strata_lookup
_peek = lib.strata_peek
_apply_gradients = lib.strata_apply_gradients
_remove = lib.strata_remove
_last_error = lib.strata_last_error
_from_buffer = ctypes.c_char.from_buffer
_addressof = ctypes.addressof
_empty = np.empty

# A valid address to pass with a count of 0 (the library may refuse a NULL buffer).
_NOTHING = np.zeros(1, np.uint64)
_NOTHING_ADDRESS = _NOTHING.__array_interface__["data"][0]
_NO_KEYS = np.zeros(0, np.uint64)


def _raise(status: int) -> None:
    """Raises the exception of ``status`` with the calling thread's last library message.

    Called right after the failed call, on the same thread: the message is per thread.
    """
    message = _last_error()
    text = message.decode("utf-8", "replace") if message else ""
    raise error_class(status)(text, status)


def _address(array: np.ndarray) -> int:
    """The address of a non-empty C-contiguous array's first element, cheaply."""
    try:
        # About 0.3 µs, against 1.2 µs for __array_interface__; needs a writable buffer.
        return _addressof(_from_buffer(array))
    except (TypeError, ValueError):
        return array.__array_interface__["data"][0]


def _convert_keys(keys: Any, table: str) -> tuple[np.ndarray, int, int]:
    """Keys that the fast path of :func:`_keys` did not take: checked, and copied unless they
    are a read-only C-contiguous uint64 array already. ``table`` names the table in errors."""
    array = np.asarray(keys)
    if array.ndim != 1:
        raise ValueError(f"table '{table}': keys must be 1-D, not of shape {array.shape}")
    count = array.shape[0]
    if count == 0:
        return _NO_KEYS, _NOTHING_ADDRESS, 0
    kind = array.dtype.kind
    if kind == "u":
        array = np.ascontiguousarray(array, dtype=_U64)
    elif kind == "i":
        negative = array < 0
        if negative.any():
            first = int(np.argmax(negative))
            raise ValueError(
                f"table '{table}': key {int(array[first])} at position {first} is negative; keys are uint64"
            )
        array = np.ascontiguousarray(array, dtype=_U64)
    elif (kind == "O" or (kind == "f" and not isinstance(keys, np.ndarray))) and all(
        isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in (keys if kind == "f" else array)
    ):
        # Python ints beyond int64 (NumPy makes float64 of [1, 2**63], object of [2**64]).
        array = np.array([int(k) for k in (keys if kind == "f" else array)], dtype=object)
        for position, key in enumerate(array):
            if not 0 <= key < 1 << 64:
                raise ValueError(
                    f"table '{table}': key {key} at position {position} is out of range; keys are uint64, in [0, 2**64)"
                )
        array = np.array(array.tolist(), dtype=_U64)
    else:
        raise TypeError(f"table '{table}': keys must be integers (a uint64 array, ideally), not {array.dtype}")
    return array, _address(array), count


def _keys(keys: Any, table: str) -> tuple[np.ndarray, int, int]:
    """``(array, address, count)`` of keys; a 1-D C-contiguous uint64 array is not copied.
    ``table``, the table's name, is for error messages."""
    if type(keys) is np.ndarray and keys.dtype is _U64 and keys.ndim == 1:
        try:
            # Refuses (TypeError, ValueError) a non-contiguous, read-only or empty array.
            return keys, _addressof(_from_buffer(keys)), keys.shape[0]
        except (TypeError, ValueError):
            pass
    return _convert_keys(keys, table)


def _float_or_default(value: float | None, default: float) -> float:
    return default if value is None else float(value)


def _shortest(value: float) -> float:
    """A float32 as the shortest decimal that reads back as it (0.01, not 0.009999999776)."""
    return float(str(np.float32(value)))


class Checkpoint(NamedTuple):
    """A completed checkpoint: its generation (0: none yet) and the payload written with it."""

    generation: int
    payload: bytes


class Store:
    """An open Strata store: a directory of embedding tables with crash-consistent checkpoints.

    Use it as a context manager (leaving the block closes it) or call :meth:`close`. One
    process opens a store for writing; others may open it read-only, each at the last
    checkpoint the writer completed. A store, and its tables, may be used from many threads
    at once. After ``os.fork()``, the child cannot use the parent's store: every call fails
    with :class:`~strata.ForkedError`; open it again there, read-only (as a PyTorch DataLoader
    worker does). For the same reason a store cannot be pickled (``TypeError``), and
    ``copy.copy`` / ``copy.deepcopy`` return the store itself.

    Args:
        path: the store's directory.
        create: create the store if the directory (new or empty) holds none; otherwise raise
            :class:`~strata.NoStoreError`.
        read_only: open read-only at the last checkpoint, beside a writer in another process.
            Only :meth:`Table.peek` and the reading calls work then.
        hot_bytes: hot memory per table, in bytes (``None``: 256 MiB).
        warm_bytes: warm (memory-mapped) memory per table, in bytes (``None``: 1 GiB).
        map_resident_bytes: a cap on LMDB's map pages resident in this process (``None``: none).
        initial_map_bytes: the LMDB map size of a new store, which grows as needed
            (``None``: 256 KiB).
        roll_back_undecided: abandon a checkpoint left undecided by a run over several
            processes, instead of raising :class:`~strata.CheckpointError`.

    Raises:
        NoStoreError, NotEmptyError, LockedError, FormatError, CorruptedError,
        InvalidArgumentError, ...: as ``strata_store_open`` reports.
    """

    path: str
    read_only: bool

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        read_only: bool = False,
        hot_bytes: int | None = None,
        warm_bytes: int | None = None,
        map_resident_bytes: int | None = None,
        initial_map_bytes: int | None = None,
        roll_back_undecided: bool = False,
    ) -> None:
        self._handle: int | None = None
        self._pid = os.getpid()
        self.path = os.fsdecode(os.fspath(path))
        self.read_only = bool(read_only)
        encoded = os.fsencode(self.path)
        if b"\0" in encoded:
            raise ValueError(f"path {self.path!r} holds a NUL character")
        options = _native.StoreOptions()
        lib.strata_store_options_init(byref(options))
        for field, value in (
            ("hot_bytes", hot_bytes),
            ("warm_bytes", warm_bytes),
            ("map_resident_bytes", map_resident_bytes),
            ("initial_map_bytes", initial_map_bytes),
        ):
            if value is not None:
                setattr(options, field, _int64(value, field))
        options.create = 1 if create else 0
        options.read_only = 1 if read_only else 0
        options.roll_back_undecided = 1 if roll_back_undecided else 0
        handle = c_void_p()
        status = lib.strata_store_open(encoded, byref(options), byref(handle))
        if status:
            _raise(status)
        self._handle = handle.value

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the store; closing a closed store does nothing.

        Waits for a checkpoint being written and releases the store's lock. Changes since
        the last :meth:`checkpoint` are not kept: checkpoint first. Every later call on the
        store or its tables raises :class:`~strata.ClosedError`. Safe while other threads use
        the store (they finish first, or fail with ``ClosedError``): this only closes
        (``strata_store_close``); the handle itself is freed when the object goes.
        """
        handle = self._handle
        if handle is None:
            return
        status = lib.strata_store_close(handle)
        if status:
            _raise(status)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self, _release: Any = lib.strata_store_release, _getpid: Any = os.getpid) -> None:
        # The handle is freed (and the store closed, if it still is open) when the last
        # reference goes, never earlier: strata_store_release needs that no other thread uses
        # the handle, and a thread inside a call holds a reference. Tables hold a reference to
        # their store. A fork child leaves the parent's handle alone.
        handle = getattr(self, "_handle", None)
        if handle is not None:
            self._handle = None
            if _getpid() == self._pid:
                _release(handle)

    # A store is a handle: a copy is the store itself, and it cannot cross processes.

    def __copy__(self) -> Store:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Store:
        return self

    def __reduce__(self) -> Any:
        raise TypeError(
            f"strata.Store {self.path!r} is a handle to an open store and cannot be pickled: "
            f"reopen it in the other process with strata.Store({self.path!r}, read_only=True)"
        )

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.__reduce__()

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "writer"
        return f"<strata.Store {self.path!r} ({mode})>"

    # -- tables --------------------------------------------------------------------------

    def create_table(
        self,
        name: str,
        dimension: int,
        *,
        dtype: str = "float32",
        initializer: str = "zeros",
        init_args: tuple[float, ...] = (),
        seed: int = 0,
        optimizer: str = "sgd",
        learning_rate: float | None = None,
        epsilon: float = 1e-8,
        initial_accumulator: float = 0.0,
        beta1: float = 0.9,
        beta2: float = 0.999,
        ftrl_beta: float = 1.0,
        l1: float = 0.0,
        l2: float = 0.0,
        hot_bytes: int | None = None,
        warm_bytes: int | None = None,
    ) -> Table:
        """Creates table ``name``, or opens it if it exists with the same spec.

        The table becomes durable with the next :meth:`checkpoint`. ``Table.spec`` holds the
        arguments here, so ``store.create_table(name, **table.spec)`` opens the same table.

        Args:
            name: 1 to 64 characters of ``A-Z a-z 0-9 _ - .``.
            dimension: floats per row, 1 to 65536.
            dtype: how values are stored: ``"float32"``, ``"float16"`` or ``"bfloat16"``.
                Lookups always return float32.
            initializer: the value of a row never written, a function of (seed, key):
                ``"zeros"``, ``"constant"`` (``init_args=(c,)``), ``"uniform"``
                (``init_args=(low, high)``) or ``"normal"`` (``init_args=(mean, std)``).
            init_args: the initializer's numbers, as above.
            seed: the initializer's seed, 0 to 2**64 - 1.
            optimizer: ``"sgd"``, ``"adagrad"``, ``"rowwise_adagrad"``, ``"adam"`` (lazy Adam,
                a step count per row) or ``"ftrl"`` (FTRL-Proximal).
            learning_rate: the optimizer's learning rate (FTRL: alpha); ``None`` for its
                default (:data:`DEFAULT_LEARNING_RATES`: 0.01; Adam 0.001; FTRL 0.05).
            epsilon: Adagrad, row-wise Adagrad and Adam.
            initial_accumulator: Adagrad and row-wise Adagrad.
            beta1, beta2: Adam.
            ftrl_beta, l1, l2: FTRL.
            hot_bytes, warm_bytes: this table's memory budgets (``None``: the store's). They
                are not stored with the table.

        Raises:
            ValueError: an unknown dtype, initializer or optimizer name, or the wrong number
                of ``init_args``.
            InvalidTableError: the library cannot make a table of this name or spec.
            TableExistsError: a table of this name exists with another spec.
            BudgetError: the budgets cannot hold a row.
        """
        spec = _native.TableSpec()
        lib.strata_table_spec_init(byref(spec), _int32(dimension, "dimension"))
        spec.dtype = _choice(dtype, _DTYPES, "dtype")
        initializer_code, arguments = _choice(initializer, _INITIALIZERS, "initializer")
        spec.initializer = initializer_code
        init_args = tuple(float(a) for a in init_args)
        if len(init_args) != arguments:
            expected = {0: "none", 1: "(c,)", 2: "(low, high)" if initializer == "uniform" else "(mean, std)"}
            raise ValueError(
                f"initializer {initializer!r} takes init_args {expected[arguments]}, not {init_args!r}"
            )
        spec.init_a, spec.init_b = (init_args + (0.0, 0.0))[:2]
        seed = int(seed)
        if not 0 <= seed < 1 << 64:
            raise ValueError(f"seed must be in [0, 2**64), not {seed}")
        spec.init_seed = seed
        spec.optimizer = _choice(optimizer, _OPTIMIZERS, "optimizer")
        spec.learning_rate = _float_or_default(learning_rate, DEFAULT_LEARNING_RATES[optimizer])
        spec.epsilon = float(epsilon)
        spec.initial_accumulator = float(initial_accumulator)
        spec.beta1 = float(beta1)
        spec.beta2 = float(beta2)
        spec.ftrl_beta = float(ftrl_beta)
        spec.l1 = float(l1)
        spec.l2 = float(l2)
        handle = c_void_p()
        status = lib.strata_table_create(
            self._handle,
            _table_name(name),
            byref(spec),
            -1 if hot_bytes is None else _int64(hot_bytes, "hot_bytes"),
            -1 if warm_bytes is None else _int64(warm_bytes, "warm_bytes"),
            byref(handle),
        )
        if status:
            _raise(status)
        return Table(self, name, handle.value)

    def table(self, name: str) -> Table:
        """Opens the existing table ``name``.

        Raises:
            UnknownTableError: the store has no such table.
        """
        handle = c_void_p()
        status = lib.strata_table_open(self._handle, _table_name(name), byref(handle))
        if status:
            _raise(status)
        return Table(self, name, handle.value)

    @property
    def tables(self) -> list[str]:
        """The names of the store's tables, sorted."""
        return sorted(self.statistics()["tables"])

    # -- checkpoints ---------------------------------------------------------------------

    def checkpoint(self, payload: bytes = b"") -> int:
        """Makes the current state of every table durable, with ``payload``, in one atomic step.

        After a crash at any moment the store reopens at exactly this checkpoint or the one
        before. Other threads' batches go on while it is written. The GIL is released.

        Args:
            payload: bytes kept with the checkpoint (the dense model's state, say); any
                bytes-like object.

        Returns:
            The checkpoint's generation number.

        Raises:
            ReadOnlyError, DiskFullError, CheckpointError, ClosedError, ...: nothing durable
            changed, and the call can be retried.
        """
        data = bytes(payload)
        generation = c_uint64()
        status = lib.strata_checkpoint(self._handle, data if data else None, len(data), byref(generation))
        if status:
            _raise(status)
        return generation.value

    def begin_checkpoint(self, payload: bytes = b"") -> PendingCheckpoint:
        """Starts a checkpoint of every table's current state, with ``payload``, written in the
        background while training goes on.

        Returns once the state is taken, between batches (it waits for batches in flight, and
        first for a checkpoint still being written); batches after it are not in it. A row
        changed before the checkpoint has written it is copied first, so batches stall only
        for that moment. :meth:`PendingCheckpoint.wait` says when it is durable; a pending
        checkpoint dropped unwaited is still written (closing the store waits for it), but its
        failure is then seen by no one. Like a :class:`Table`, the pending checkpoint keeps its
        store open (and its lock held) until both are gone or the store is closed. The GIL is
        released.

        Raises:
            ReadOnlyError, ClosedError, ...: no checkpoint was begun.
        """
        data = bytes(payload)
        handle = c_void_p()
        status = lib.strata_checkpoint_begin(self._handle, data if data else None, len(data), byref(handle))
        if status:
            _raise(status)
        return PendingCheckpoint(self, handle.value)

    def last_checkpoint(self) -> Checkpoint:
        """The last completed checkpoint: its generation (0 if none) and its payload."""
        generation = c_uint64()
        payload = c_void_p()
        size = c_size_t()
        status = lib.strata_last_checkpoint(self._handle, byref(generation), byref(payload), byref(size))
        if status:
            _raise(status)
        try:
            data = ctypes.string_at(payload.value, size.value) if payload.value else b""
        finally:
            lib.strata_free(payload)
        return Checkpoint(generation.value, data)

    def statistics(self) -> dict[str, Any]:
        """The store as a dict: ``path``, ``read_only``, ``last_checkpoint`` and ``tables``
        (each name with its ``spec`` and ``statistics``), from ``strata_store_statistics_json``."""
        text = c_void_p()
        status = lib.strata_store_statistics_json(self._handle, byref(text))
        if status:
            _raise(status)
        return _take_json(text)


class PendingCheckpoint:
    """A checkpoint being written in the background (:meth:`Store.begin_checkpoint`).

    It keeps its store open until it is gone or the store is closed; :meth:`wait` works after
    the store is closed (closing waits for the checkpoint)."""

    def __init__(self, store: Store, handle: int) -> None:
        self.store = store
        self._handle: int | None = handle
        self._pid = os.getpid()

    def wait(self) -> int:
        """Waits until the checkpoint is durable and returns its generation (at once if it
        has ended; the same outcome every time). The GIL is released while it waits.

        Raises:
            DiskFullError, CheckpointError, ...: it failed; the store is at the checkpoint
            before, and the rows this one took go into the next.
        """
        generation = c_uint64()
        status = lib.strata_checkpoint_wait(self._handle, byref(generation))
        if status:
            _raise(status)
        return generation.value

    @property
    def done(self) -> bool:
        """Whether the checkpoint has ended, durable or failed. Does not wait."""
        return lib.strata_checkpoint_done(self._handle) == 1

    def __del__(self, _release: Any = lib.strata_pending_checkpoint_release, _getpid: Any = os.getpid) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None:
            self._handle = None
            if _getpid() == self._pid:
                _release(handle)

    def __reduce__(self) -> Any:
        raise TypeError("a pending checkpoint is a handle of an open store and cannot be pickled")


class Table:
    """A table of an open :class:`Store`; made by :meth:`Store.create_table` or :meth:`Store.table`.

    Row calls take keys as a NumPy array of ``uint64`` (a 1-D C-contiguous one passes to the
    library with no copy; other integer arrays and sequences are copied, a negative key
    raising ``ValueError``, a non-integer dtype ``TypeError``). Keys may repeat. Every call
    releases the GIL while the library works and may run on many threads at once.

    Use it as a context manager (leaving the block closes it) or call :meth:`close`; the
    library's handle is released when the object goes. The table keeps its store open.

    A table is a handle, not a value: ``copy.copy`` and ``copy.deepcopy`` return the table
    itself (so a deep copy of a model holding one shares the table), and pickling raises
    ``TypeError``: open the store again in the other process, with ``read_only=True``.

    Attributes:
        name: the table's name.
        dimension: floats per row.
        store: the store it belongs to.
    """

    name: str
    dimension: int
    store: Store

    def __init__(self, store: Store, name: str, handle: int) -> None:
        """Private: tables come from :meth:`Store.create_table` and :meth:`Store.table`."""
        # _handle is what calls use (None once closed); _owned is what __del__ releases.
        self._handle: int | None = handle
        self._owned: int | None = handle
        self._pid = os.getpid()
        self.store = store
        self.name = name
        raw = _native.TableSpec()
        status = lib.strata_table_get_spec(handle, byref(raw))
        if status:
            self._handle = self._owned = None
            try:
                _raise(status)
            finally:
                lib.strata_table_release(handle)
        self.dimension = int(raw.dimension)
        self._spec = _spec_dict(raw)

    @property
    def spec(self) -> dict[str, Any]:
        """What the table is (a new dict each time), keyed as :meth:`Store.create_table`'s
        arguments: ``dimension``, ``dtype``, ``initializer``, ``init_args``, ``seed``,
        ``optimizer``, ``learning_rate``, ``epsilon``, ``initial_accumulator``, ``beta1``,
        ``beta2``, ``ftrl_beta``, ``l1``, ``l2``."""
        return dict(self._spec)

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Closes this table object: later calls on it raise :class:`~strata.ClosedError`.

        Idempotent, and safe while other threads use the table: calls already inside the
        library finish normally. The library's handle is released when the object goes
        (no call can be running then). Does not close the store.
        """
        self._handle = None

    def __enter__(self) -> Table:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self, _release: Any = lib.strata_table_release, _getpid: Any = os.getpid) -> None:
        # Only here: a thread inside a call holds a reference (its frame's self), so nothing
        # uses the handle now. A fork child leaves the parent's handle alone.
        handle = getattr(self, "_owned", None)
        if handle is not None:
            self._handle = self._owned = None
            if _getpid() == self._pid:
                _release(handle)

    # A table is a handle: a copy is the table itself (so copy.deepcopy of a model holding
    # one works, for EMA or AveragedModel), and it cannot cross processes.

    def __copy__(self) -> Table:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Table:
        return self

    def __reduce__(self) -> Any:
        raise TypeError(
            f"strata.Table '{self.name}' is a handle to an open store and cannot be pickled: "
            f"reopen it in the other process with strata.Store({self.store.path!r}, "
            f"read_only=True).table('{self.name}')"
        )

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.__reduce__()

    def __repr__(self) -> str:
        return f"<strata.Table {self.name!r} of {self.store.path!r}: dimension {self.dimension}, {self._spec['dtype']}, {self._spec['optimizer']}>"

    def _released(self) -> ClosedError:
        return ClosedError(f"table '{self.name}': this table object was closed (Table.close); open it again with store.table('{self.name}')", 16)

    def _rows(self, count: int, out: np.ndarray | None) -> tuple[np.ndarray, int, int]:
        """``(array, address, floats)`` of the rows to fill: ``out``, checked, or a new array."""
        dimension = self.dimension
        if out is None:
            out = _empty((count, dimension), _F32)
            if count:
                return out, _addressof(_from_buffer(out)), count * dimension
            return out, _NOTHING_ADDRESS, 0
        if not isinstance(out, np.ndarray) or out.dtype != _F32:
            raise ValueError(
                f"table '{self.name}': out must be a float32 numpy array, not {getattr(out, 'dtype', type(out).__name__)}"
            )
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(f"table '{self.name}': out must be C-contiguous and writable")
        size = out.size
        if out.shape != (count, dimension) and size == count * dimension:
            raise ValueError(f"table '{self.name}': out must have shape ({count}, {dimension}), not {out.shape}")
        # A wrong number of floats goes to the library, which refuses it (ShapeError).
        return out, (_address(out) if size else _NOTHING_ADDRESS), size

    def _read(self, function: Any, keys: npt.ArrayLike, out: np.ndarray | None) -> npt.NDArray[np.float32]:
        """What :meth:`lookup` and :meth:`peek` share: ``function`` (``strata_lookup`` or
        ``strata_peek``) of ``keys`` into ``out`` (a new array if ``None``)."""
        handle = self._handle
        if handle is None:
            raise self._released()
        keys, key_address, count = _keys(keys, self.name)
        out, row_address, floats = self._rows(count, out)
        status = function(handle, key_address, count, row_address, floats)
        if status:
            _raise(status)
        return out

    # -- rows ----------------------------------------------------------------------------

    def lookup(self, keys: npt.ArrayLike, out: np.ndarray | None = None) -> npt.NDArray[np.float32]:
        """The rows of ``keys``, brought to the hot tier (for training).

        A row never written reads as the initializer's values. The GIL is released during
        the library call.

        Args:
            keys: a 1-D array of uint64 keys (not copied if C-contiguous).
            out: a C-contiguous float32 array of shape ``(len(keys), dimension)`` to fill; a
                new one if ``None``.

        Returns:
            ``out`` (the same object, when given): float32 of shape ``(len(keys), dimension)``.

        Raises:
            ValueError: a bad ``out``, a negative key or keys that are not 1-D
                (``ShapeError``, a ``ValueError``, for an ``out`` of the wrong size).
            TypeError: keys that are not integers.
            ClosedError, ForkedError.
        """
        return self._read(_lookup, keys, out)

    def peek(self, keys: npt.ArrayLike, out: np.ndarray | None = None) -> npt.NDArray[np.float32]:
        """Like :meth:`lookup`, for inference: rows stay in their tier and no counter changes.

        On a read-only store, :meth:`lookup` and this are the row calls allowed. The GIL is
        released during the call.
        """
        return self._read(_peek, keys, out)

    def apply_gradients(
        self, keys: npt.ArrayLike, gradients: npt.ArrayLike, learning_rate: float | None = None
    ) -> None:
        """One optimizer step for the rows of ``keys``.

        A repeated key gets one step with the sum of its gradients (summed in order). If a
        gradient, or a step it would make, is not finite, the whole batch is rejected and
        nothing changes. The GIL is released during the call.

        Args:
            keys: a 1-D array of uint64 keys.
            gradients: float32 of shape ``(len(keys), dimension)``; a C-contiguous float32
                array is not copied, anything else is converted (float64 is rounded to float32).
            learning_rate: overrides the table's for this batch.

        Raises:
            NonFiniteError: nothing was applied.
            LearningRateError: the learning rate cannot be used; nothing was applied.
            ValueError, TypeError: as for :meth:`lookup`; ``ShapeError`` for gradients of the
                wrong size.
            ReadOnlyError, ClosedError, ForkedError.
        """
        handle = self._handle
        if handle is None:
            raise self._released()
        keys, key_address, count = _keys(keys, self.name)
        if not (type(gradients) is np.ndarray and gradients.dtype is _F32 and gradients.flags.c_contiguous):
            gradients = np.ascontiguousarray(gradients, dtype=_F32)
        size = gradients.size
        dimension = self.dimension
        if size and gradients.shape != (count, dimension) and size == count * dimension:
            raise ValueError(f"table '{self.name}': gradients must have shape ({count}, {dimension}), not {gradients.shape}")
        rate = None if learning_rate is None else byref(c_float(float(learning_rate)))
        status = _apply_gradients(
            handle, key_address, count, _address(gradients) if size else _NOTHING_ADDRESS, size, rate
        )
        if status:
            _raise(status)

    def remove(self, keys: npt.ArrayLike) -> None:
        """Removes rows: they read as the initializer's values again, and the next checkpoint
        deletes them from disk. The GIL is released during the call."""
        handle = self._handle
        if handle is None:
            raise self._released()
        keys, key_address, count = _keys(keys, self.name)
        status = _remove(handle, key_address, count)
        if status:
            _raise(status)

    def statistics(self) -> dict[str, Any]:
        """The table's counts of rows per tier, bytes and traffic (``strata_table_statistics_json``)."""
        handle = self._handle
        if handle is None:
            raise self._released()
        text = c_void_p()
        status = lib.strata_table_statistics_json(handle, byref(text))
        if status:
            _raise(status)
        return _take_json(text)

    def time_lookups(self, keys: npt.ArrayLike, repeats: int, *, fresh_output: bool = False) -> float:
        """Seconds the library takes for ``repeats`` lookups of ``keys``, timed inside it.

        For comparing this binding's overhead with the library's own call (benchmarks), in
        the same process and on the same table. The GIL is released during the call.

        Args:
            keys: as for :meth:`lookup`.
            repeats: how many lookups.
            fresh_output: ``False``: every lookup writes one array; ``True``: each writes a
                new buffer, allocated and freed around it, as :meth:`lookup` without ``out``
                returns a new array each call.
        """
        handle = self._handle
        if handle is None:
            raise self._released()
        keys, key_address, count = _keys(keys, self.name)
        floats = count * self.dimension
        if fresh_output:
            out, row_address = None, None
        else:
            out, row_address, floats = self._rows(count, None)
        seconds = c_double()
        status = lib.strata_time_lookups(
            handle, key_address, count, row_address, floats, _int64(repeats, "repeats"),
            1 if fresh_output else 0, byref(seconds),
        )
        if status:
            _raise(status)
        return seconds.value


# -- helpers -------------------------------------------------------------------------------


def _take_json(text: c_void_p) -> dict[str, Any]:
    """Decodes and frees a JSON string the library returned."""
    try:
        raw = ctypes.string_at(text.value) if text.value else b"{}"
    finally:
        lib.strata_free(text)
    return json.loads(raw.decode("utf-8"))


def _choice(value: str, choices: dict[str, Any], what: str) -> Any:
    try:
        return choices[value]
    except (KeyError, TypeError):
        raise ValueError(f"{what} must be one of {', '.join(map(repr, choices))}, not {value!r}") from None


def _int64(value: int, what: str) -> int:
    number = int(value) if isinstance(value, (int, np.integer)) else value
    if not isinstance(number, int) or isinstance(number, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not -(1 << 63) <= number < 1 << 63:
        raise ValueError(f"{what} is {number}, out of int64's range")
    return number


def _int32(value: int, what: str) -> int:
    number = _int64(value, what)
    if not -(1 << 31) <= number < 1 << 31:
        raise ValueError(f"{what} is {number}, out of int32's range")
    return number


def _table_name(name: str) -> bytes:
    if not isinstance(name, str):
        raise TypeError(f"a table name is a str, not {type(name).__name__}")
    encoded = name.encode("utf-8")
    if b"\0" in encoded:
        raise ValueError(f"table name {name!r} holds a NUL character")
    return encoded


def _spec_dict(raw: _native.TableSpec) -> dict[str, Any]:
    initializer = _NAMES["initializer"].get(raw.initializer, raw.initializer)
    arguments = _INITIALIZERS[initializer][1] if initializer in _INITIALIZERS else 2
    return {
        "dimension": int(raw.dimension),
        "dtype": _NAMES["dtype"].get(raw.dtype, raw.dtype),
        "initializer": initializer,
        "init_args": tuple(_shortest(v) for v in (raw.init_a, raw.init_b)[:arguments]),
        "seed": int(raw.init_seed),
        "optimizer": _NAMES["optimizer"].get(raw.optimizer, raw.optimizer),
        "learning_rate": _shortest(raw.learning_rate),
        "epsilon": _shortest(raw.epsilon),
        "initial_accumulator": _shortest(raw.initial_accumulator),
        "beta1": _shortest(raw.beta1),
        "beta2": _shortest(raw.beta2),
        "ftrl_beta": _shortest(raw.ftrl_beta),
        "l1": _shortest(raw.l1),
        "l2": _shortest(raw.l2),
    }

