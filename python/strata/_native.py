"""ctypes declarations of libStrataC (``Sources/StrataC/include/strata.h``).

Private to the package: :mod:`strata.store` wraps these in :class:`strata.Store` and
:class:`strata.Table`. Every function of ``strata.h`` is declared here with its exact
argument and result types. Buffers (keys, rows, gradients, payloads) are declared
``c_void_p`` so that a plain address (a Python ``int``) passes with no conversion cost.

The library is loaded with :class:`ctypes.CDLL`, which releases the GIL around every call:
other Python threads (and PyTorch DataLoader threads) run while the library works.

Where the library is found, first match wins:

1. ``$STRATA_LIBRARY``, the path of a ``libStrataC.so``, if the variable is set;
2. ``libStrataC.so`` next to this file (where ``pip install`` puts it);
3. ``.build/release/libStrataC.so`` of the repository this file is in, when the package is
   imported from its source tree (``python/strata`` of a checkout that has been built with
   ``swift build -c release --product StrataC``).
"""

from __future__ import annotations

import ctypes
import os
from ctypes import (
    POINTER,
    Structure,
    c_char_p,
    c_double,
    c_float,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint64,
    c_void_p,
)
from pathlib import Path

__all__ = [
    "API_VERSION",
    "LIBRARY_NAME",
    "StoreOptions",
    "TableSpec",
    "find_library",
    "lib",
    "library",
    "library_path",
]

#: ``STRATA_API_VERSION`` of the header these declarations follow.
API_VERSION = 1
LIBRARY_NAME = "libStrataC.so"

# strata_status
OK = 0
E_INVALID_ARGUMENT = 1
E_UNKNOWN_TABLE = 2
E_TABLE_EXISTS = 3
E_INVALID_TABLE = 4
E_SHAPE = 5
E_NON_FINITE = 6
E_LEARNING_RATE = 7
E_INVALID_ROWS = 8
E_NO_STORE = 9
E_NOT_EMPTY = 10
E_LOCKED = 11
E_READ_ONLY = 12
E_FORMAT = 13
E_CORRUPTED = 14
E_DISK_FULL = 15
E_CLOSED = 16
E_CHECKPOINT = 17
E_BUDGET = 18
E_FORKED = 19
E_SYSTEM = 20

# strata_dtype
FLOAT32 = 0
FLOAT16 = 1
BFLOAT16 = 2

# strata_initializer
INIT_ZEROS = 0
INIT_CONSTANT = 1
INIT_UNIFORM = 2
INIT_NORMAL = 3

# strata_optimizer
SGD = 0
ADAGRAD = 1
ROWWISE_ADAGRAD = 2
ADAM = 3
FTRL = 4

# An enum is an int in C; the status return of every fallible call.
strata_status = c_int


class StoreOptions(Structure):
    """``strata_store_options``."""

    _fields_ = [
        ("hot_bytes", c_int64),
        ("warm_bytes", c_int64),
        ("map_resident_bytes", c_int64),
        ("initial_map_bytes", c_int64),
        ("create", c_int32),
        ("read_only", c_int32),
        ("roll_back_undecided", c_int32),
        ("reserved", c_int32),
    ]


class TableSpec(Structure):
    """``strata_table_spec``."""

    _fields_ = [
        ("dimension", c_int32),
        ("dtype", c_int32),
        ("initializer", c_int32),
        ("init_a", c_float),
        ("init_b", c_float),
        ("init_seed", c_uint64),
        ("optimizer", c_int32),
        ("learning_rate", c_float),
        ("epsilon", c_float),
        ("initial_accumulator", c_float),
        ("beta1", c_float),
        ("beta2", c_float),
        ("ftrl_beta", c_float),
        ("l1", c_float),
        ("l2", c_float),
        ("reserved", c_int32),
    ]


def find_library() -> str:
    """The path of the ``libStrataC.so`` to load (see the module's docstring for the order).

    Raises:
        ImportError: ``$STRATA_LIBRARY`` names no file, or no library was found.
    """
    configured = os.environ.get("STRATA_LIBRARY")
    if configured:
        if not os.path.isfile(configured):
            raise ImportError(
                f"STRATA_LIBRARY is {configured!r}, which is not a file; point it at a "
                f"{LIBRARY_NAME} built by `swift build -c release --product StrataC`, or unset it"
            )
        return configured
    here = Path(__file__).resolve().parent
    candidates = [here / LIBRARY_NAME, here.parent.parent / ".build" / "release" / LIBRARY_NAME]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    raise ImportError(
        f"{LIBRARY_NAME} not found (looked at {', '.join(str(c) for c in candidates)}): install the "
        "package with `pip install ./python` from the repository, which builds it, or set "
        "STRATA_LIBRARY to the path of one built by `swift build -c release --product StrataC`"
    )


def _declare(library: ctypes.CDLL) -> None:
    """Sets ``argtypes`` and ``restype`` of every function of ``strata.h``."""

    def declare(name: str, restype: object, *argtypes: object) -> None:
        function = getattr(library, name)
        function.restype = restype
        function.argtypes = list(argtypes)

    declare("strata_version", c_char_p)
    declare("strata_last_error", c_char_p)
    declare("strata_free", None, c_void_p)

    # Stores
    declare("strata_store_options_init", None, POINTER(StoreOptions))
    declare("strata_store_open", strata_status, c_char_p, POINTER(StoreOptions), POINTER(c_void_p))
    declare("strata_store_close", strata_status, c_void_p)
    declare("strata_store_release", None, c_void_p)
    declare("strata_checkpoint", strata_status, c_void_p, c_void_p, c_size_t, POINTER(c_uint64))
    declare("strata_checkpoint_begin", strata_status, c_void_p, c_void_p, c_size_t, POINTER(c_void_p))
    declare("strata_checkpoint_wait", strata_status, c_void_p, POINTER(c_uint64))
    declare("strata_checkpoint_done", c_int32, c_void_p)
    declare("strata_pending_checkpoint_release", None, c_void_p)
    declare(
        "strata_last_checkpoint",
        strata_status,
        c_void_p,
        POINTER(c_uint64),
        POINTER(c_void_p),
        POINTER(c_size_t),
    )
    declare("strata_store_statistics_json", strata_status, c_void_p, POINTER(c_void_p))

    # Tables
    declare("strata_table_spec_init", None, POINTER(TableSpec), c_int32)
    declare(
        "strata_table_create",
        strata_status,
        c_void_p,
        c_char_p,
        POINTER(TableSpec),
        c_int64,
        c_int64,
        POINTER(c_void_p),
    )
    declare("strata_table_open", strata_status, c_void_p, c_char_p, POINTER(c_void_p))
    declare("strata_table_get_spec", strata_status, c_void_p, POINTER(TableSpec))
    declare("strata_table_statistics_json", strata_status, c_void_p, POINTER(c_void_p))
    declare("strata_table_release", None, c_void_p)

    # Rows: (table, keys, count, rows, floats)
    declare("strata_lookup", strata_status, c_void_p, c_void_p, c_size_t, c_void_p, c_size_t)
    declare("strata_peek", strata_status, c_void_p, c_void_p, c_size_t, c_void_p, c_size_t)
    declare(
        "strata_apply_gradients",
        strata_status,
        c_void_p,
        c_void_p,
        c_size_t,
        c_void_p,
        c_size_t,
        POINTER(c_float),
    )
    declare("strata_remove", strata_status, c_void_p, c_void_p, c_size_t)
    declare(
        "strata_time_lookups",
        strata_status,
        c_void_p,
        c_void_p,
        c_size_t,
        c_void_p,
        c_size_t,
        c_int64,
        c_int32,
        POINTER(c_double),
    )


def load(path: str | None = None) -> ctypes.CDLL:
    """Loads and declares the library at ``path`` (default: :func:`find_library`)."""
    path = path or find_library()
    try:
        library = ctypes.CDLL(path)
    except OSError as error:
        raise ImportError(f"cannot load {path}: {error}") from error
    _declare(library)
    return library


#: The loaded library (a :class:`ctypes.CDLL`: calls release the GIL).
lib: ctypes.CDLL = load()


def library() -> ctypes.CDLL:
    """The loaded library, its functions declared (the same object as :data:`lib`)."""
    return lib


def library_path() -> str:
    """The path the library was loaded from."""
    return str(lib._name)
