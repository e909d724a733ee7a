"""Shared fixtures of the strata package's tests.

The tests import the installed package (``pip install ./python``). When none is installed
they import the source tree's (``python/strata``), which finds the library through
``$STRATA_LIBRARY`` or the repository's ``.build/release/libStrataC.so``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("strata") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import strata  # noqa: E402


def pytest_report_header() -> str:
    return f"strata {strata.__version__} from {Path(strata.__file__).parent}, library {strata.library_path()} ({strata.library_version()})"


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    """A directory for a new store (not made yet)."""
    return str(tmp_path / "store")


@pytest.fixture
def store(store_path: str) -> Iterator[strata.Store]:
    """A new store opened for writing, closed after the test."""
    s = strata.Store(store_path)
    try:
        yield s
    finally:
        try:
            s.close()
        except strata.StrataError:
            pass


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240613)


def _fork_child(body: Callable[[], int]) -> int:
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = int(body())
        except BaseException:  # noqa: BLE001 - the parent reads the exit status
            code = 99
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), (
        f"the child died of signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"status {status}"
    )
    return os.WEXITSTATUS(status)


@pytest.fixture
def fork_child() -> Callable[[Callable[[], int]], int]:
    """Runs ``body()`` in a fork child and returns the child's exit status: ``body``'s return
    value, or 99 if it raised. The child leaves with ``os._exit`` (no cleanup, no pytest)."""
    return _fork_child
