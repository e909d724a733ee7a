"""The exceptions of :mod:`strata`: one class per ``strata_status`` code of ``strata.h``.

Every class derives from :class:`StrataError`; most also derive from the built-in exception
of the same meaning (``ValueError``, ``LookupError``, ``OSError``...), so code that catches
those keeps working. ``str(error)`` is the library's own message, which names the file,
table and key concerned and says what to do.
"""

from __future__ import annotations

__all__ = [
    "BudgetError",
    "CheckpointError",
    "ClosedError",
    "CorruptedError",
    "DiskFullError",
    "ForkedError",
    "FormatError",
    "InvalidArgumentError",
    "InvalidRowsError",
    "InvalidTableError",
    "LearningRateError",
    "LockedError",
    "NoStoreError",
    "NonFiniteError",
    "NotEmptyError",
    "ReadOnlyError",
    "ShapeError",
    "StrataError",
    "StrataSystemError",
    "TableExistsError",
    "UnknownTableError",
    "error_class",
]


class StrataError(Exception):
    """A call into the Strata library failed.

    Attributes:
        code: the ``strata_status`` code (``STRATA_E_...`` of ``strata.h``).
        message: the library's message; ``str(error)`` is the same text.
    """

    code: int = -1
    message: str

    def __init__(self, message: str = "", code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type, tuple[str, int]]:
        # Pickles as (class, message, code), whatever a built-in base (OSError) would do.
        return (type(self), (self.message, self.code))


class InvalidArgumentError(StrataError, ValueError):
    """``STRATA_E_INVALID_ARGUMENT``: an argument is out of range. Nothing changed."""

    code = 1


class UnknownTableError(StrataError, LookupError):
    """``STRATA_E_UNKNOWN_TABLE``: no table of that name."""

    code = 2


class TableExistsError(StrataError):
    """``STRATA_E_TABLE_EXISTS``: a table of that name exists with another spec."""

    code = 3


class InvalidTableError(StrataError, ValueError):
    """``STRATA_E_INVALID_TABLE``: the name or spec cannot make a table."""

    code = 4


class ShapeError(StrataError, ValueError):
    """``STRATA_E_SHAPE``: a buffer's size does not match the keys and the table's dimension."""

    code = 5


class NonFiniteError(StrataError, FloatingPointError):
    """``STRATA_E_NON_FINITE``: a gradient, or the step it makes, is not finite.

    The whole batch was rejected: nothing changed.
    """

    code = 6


class LearningRateError(StrataError, ValueError):
    """``STRATA_E_LEARNING_RATE``: the learning rate cannot be used with the table's optimizer."""

    code = 7


class InvalidRowsError(StrataError, ValueError):
    """``STRATA_E_INVALID_ROWS``: rows to assign cannot be stored. Nothing changed."""

    code = 8


class NoStoreError(StrataError, FileNotFoundError):
    """``STRATA_E_NO_STORE``: no store at the path (and ``create`` was false, or read-only)."""

    code = 9


class NotEmptyError(StrataError):
    """``STRATA_E_NOT_EMPTY``: the directory holds files that are not a store's.

    Nothing was written there.
    """

    code = 10


class LockedError(StrataError):
    """``STRATA_E_LOCKED``: another process, or another handle in this one, writes the store."""

    code = 11


class ReadOnlyError(StrataError):
    """``STRATA_E_READ_ONLY``: the store is read-only (opened so, or its directory is)."""

    code = 12


class FormatError(StrataError):
    """``STRATA_E_FORMAT``: the files were written in a format this Strata does not read."""

    code = 13


class CorruptedError(StrataError):
    """``STRATA_E_CORRUPTED``: a file does not hold what it should."""

    code = 14


class DiskFullError(StrataError, OSError):
    """``STRATA_E_DISK_FULL``: the disk is full; the store remains at its last checkpoint."""

    code = 15


class ClosedError(StrataError):
    """``STRATA_E_CLOSED``: the store (or, raised by Python, the table handle) was closed."""

    code = 16


class CheckpointError(StrataError):
    """``STRATA_E_CHECKPOINT``: a checkpoint is in progress, was interrupted or is undecided.

    The message says which and what to do.
    """

    code = 17


class BudgetError(StrataError, ValueError):
    """``STRATA_E_BUDGET``: the memory budgets cannot hold a single row."""

    code = 18


class ForkedError(StrataError):
    """``STRATA_E_FORKED``: the handle was opened by another process (this is a fork child).

    Open the store again in this process, read-only (``Store(path, read_only=True)``).
    """

    code = 19


class StrataSystemError(StrataError, OSError):
    """``STRATA_E_SYSTEM``: any other failed system or LMDB call."""

    code = 20


_BY_CODE: dict[int, type[StrataError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        UnknownTableError,
        TableExistsError,
        InvalidTableError,
        ShapeError,
        NonFiniteError,
        LearningRateError,
        InvalidRowsError,
        NoStoreError,
        NotEmptyError,
        LockedError,
        ReadOnlyError,
        FormatError,
        CorruptedError,
        DiskFullError,
        ClosedError,
        CheckpointError,
        BudgetError,
        ForkedError,
        StrataSystemError,
    )
}


def error_class(code: int) -> type[StrataError]:
    """The exception class of ``strata_status`` ``code`` (:class:`StrataError` if unknown)."""
    return _BY_CODE.get(code, StrataError)
