"""A DLRM trained with strata.torch, SIGKILLed at random moments and around checkpoints, resumes
from the last checkpoint and ends bit for bit where an uninterrupted run ends."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import strata  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # strata_dlrm, whatever the import mode

from strata_dlrm import TABLE_SIZES, table_rows  # noqa: E402

SCRIPT = Path(__file__).with_name("train_for_kill.py")
STEPS, EVERY = 200, 20


def run(store: Path, *, die: str | None = None, sleep: float = 0.0):
    """Runs train_for_kill.py to its end (or its own death); returns (returncode, lines)."""
    env = dict(os.environ)
    env.pop("STRATA_TEST_DIE", None)
    if die:
        env["STRATA_TEST_DIE"] = die
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(store), "--steps", str(STEPS), "--every", str(EVERY),
         "--sleep", str(sleep)],
        env=env, capture_output=True, text=True, timeout=600)
    if result.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"train_for_kill.py failed ({result.returncode}):\n{result.stderr}")
    return result.returncode, result.stdout.splitlines()


def run_and_kill_at(store: Path, step: int) -> list[str]:
    """Starts train_for_kill.py, SIGKILLs it as soon as it prints "step STEP" and returns every
    line it printed, those it printed before the kill landed included."""
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(store), "--steps", str(STEPS), "--every", str(EVERY),
         "--sleep", "0.005"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if k != "STRATA_TEST_DIE"})
    lines = []
    try:
        for line in process.stdout:
            lines.append(line.strip())
            if line.strip() == f"step {step}":
                process.send_signal(signal.SIGKILL)
                break
    finally:
        process.wait(timeout=600)
        # What the child printed between "step STEP" and its death (a slow parent may see a
        # checkpoint completed meanwhile).
        lines.extend(line.strip() for line in process.stdout.read().splitlines())
        process.stdout.close()
        stderr = process.stderr.read()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL, (process.returncode, lines[-3:], stderr)
    return lines


def resumed_at(lines: list[str]) -> int:
    return int(lines[0].split()[-1])


def last_durable(lines: list[str]) -> int:
    """The step of the last checkpoint a killed run is known to have completed: the last
    "checkpoint N" it printed (printed after save_checkpoint returned), else where it resumed."""
    printed = [int(line.split()[-1]) for line in lines if line.startswith("checkpoint ")]
    return max([resumed_at(lines), *printed])


def assert_resumes_after(resumed: int, killed_run: list[str]) -> None:
    """A run after ``killed_run`` resumes at its last printed checkpoint, or at the next one,
    durable but not printed when the kill landed."""
    last = last_durable(killed_run)
    assert resumed % EVERY == 0 and last <= resumed <= last + EVERY, (resumed, last, killed_run[-3:])


def final_state(store_path: Path):
    """The rows of keys 0..size-1 of each table and the dense state of the last checkpoint."""
    with strata.Store(str(store_path), create=False) as store:
        rows = [table_rows(store.table(f"t{t}"), size) for t, size in enumerate(TABLE_SIZES)]
        checkpoint = store.last_checkpoint()
    state = torch.load(io.BytesIO(checkpoint.payload), weights_only=True)
    return rows, state


def flatten(value, prefix=""):
    """(path, leaf) pairs of nested dicts and lists."""
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            yield from flatten(value[key], f"{prefix}/{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from flatten(item, f"{prefix}/{index}")
    else:
        yield prefix, value


def assert_same_state(actual, expected):
    rows, state = actual
    expected_rows, expected_state = expected
    for t, (a, b) in enumerate(zip(rows, expected_rows)):
        assert np.array_equal(a, b), f"table t{t}: rows differ (max {np.abs(a - b).max()})"
    assert state["extra"] == {"step": STEPS}
    a, b = dict(flatten(state["model"])), dict(flatten(expected_state["model"]))
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name].numpy(), b[name].numpy()), f"model{name} differs"
    a, b = dict(flatten(state["optimizer"])), dict(flatten(expected_state["optimizer"]))
    assert a.keys() == b.keys()
    for name in a:
        if isinstance(a[name], torch.Tensor):
            assert torch.equal(a[name], b[name]), f"optimizer{name} differs"
        else:
            assert a[name] == b[name], f"optimizer{name} differs"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    store = tmp_path_factory.mktemp("uninterrupted") / "store"
    code, lines = run(store)
    assert code == 0 and lines[0] == "resumed at 0" and lines[-1] == "done"
    return final_state(store)


def test_kill_at_random_steps_and_resume(tmp_path, uninterrupted):
    store = tmp_path / "store"
    rng = random.Random(20240613)   # seeded: the same kill steps every run
    first, second = rng.randint(70, 110), rng.randint(125, 190)
    print(f"\nkilling at step {first}, then at step {second}")

    killed = run_and_kill_at(store, first)
    assert resumed_at(killed) == 0 and f"step {first}" in killed
    lines = run_and_kill_at(store, second)
    # The first run's last printed checkpoint, or the one it was writing when it died.
    assert_resumes_after(resumed_at(lines), killed)
    killed = lines
    assert f"step {second}" in killed
    code, lines = run(store)
    assert code == 0 and lines[-1] == "done"
    assert_resumes_after(resumed_at(lines), killed)
    assert_same_state(final_state(store), uninterrupted)


@pytest.mark.parametrize("die, resumes", [
    ("before:80", {60}),
    ("after:80", {80}),
    ("during:80:0", {60, 80}),
    ("during:80:0.0005", {60, 80}),
    ("during:80:0.002", {60, 80}),
    ("during:80:0.01", {60, 80}),
])
def test_kill_around_a_checkpoint_and_resume(tmp_path, uninterrupted, die, resumes):
    store = tmp_path / "store"
    code, lines = run(store, die=die)
    assert code == -signal.SIGKILL, lines[-3:]
    code, lines = run(store)
    assert code == 0 and lines[-1] == "done"
    print(f"\n{die}: resumed at {resumed_at(lines)}")
    assert resumed_at(lines) in resumes
    assert_same_state(final_state(store), uninterrupted)
