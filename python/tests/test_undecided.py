"""STRATA_E_CHECKPOINT from Python: a shard a run over two processes left holding a checkpoint
it never decided (rank 1 killed between writing its two-phase checkpoint and keeping it).

Needs the release `strata` command (tools/test.sh's suite stage builds it first) and Open
MPI's mpirun (tools/setup.sh installs it)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import strata

REPOSITORY = Path(__file__).resolve().parents[2]
COMMAND = Path(os.environ.get("STRATA_COMMAND", REPOSITORY / ".build" / "release" / "strata"))


@pytest.fixture(scope="module")
def undecided_shard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mpirun = shutil.which("mpirun")
    if not COMMAND.is_file() or mpirun is None:
        pytest.skip(f"needs {COMMAND} (swift build -c release --product strata) and mpirun")
    store = tmp_path_factory.mktemp("cluster") / "set"
    arguments = ["train", "--data", "synthetic:criteo", "--store", str(store), "--embedding-dim", "4",
                 "--bottom-mlp", "8", "--top-mlp", "8", "--batch-size", "32", "--steps", "40",
                 "--checkpoint-every", "10", "--eval-samples", "0", "--synthetic-keys", "3000",
                 "--threads", "1", "--lookahead", "2", "--seed", "5"]
    # Rank 1 dies once its checkpoint of step 20 is written, before it is kept.
    run = subprocess.run([mpirun, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", "2",
                          "-x", "STRATA_KILL_FOR_TESTING", str(COMMAND)] + arguments,
                         env={**os.environ, "STRATA_KILL_FOR_TESTING": "1:written:20"},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0, "the run was not killed:\n" + run.stdout + run.stderr
    shard = store / "2-shards" / "shard-1"
    assert (shard / "rows.mdb").is_file(), run.stdout + run.stderr
    return shard


def test_an_undecided_checkpoint_is_refused_naming_the_way_out(undecided_shard: Path) -> None:
    for read_only in (False, True):
        with pytest.raises(strata.CheckpointError) as error:
            strata.Store(str(undecided_shard), read_only=read_only)
        message = str(error.value)
        assert str(undecided_shard) in message and "not yet kept or abandoned" in message
        assert "--resume" in message


def test_rolling_back_an_undecided_checkpoint_opens_at_the_one_before(tmp_path: Path, undecided_shard: Path) -> None:
    # On a copy: the shard stays undecided for the test above, whatever the order.
    copy = tmp_path / "shard-1"
    shutil.copytree(undecided_shard, copy)
    with strata.Store(str(copy), roll_back_undecided=True) as store:
        kept = store.last_checkpoint()
        assert kept.generation >= 1
        assert store.tables
    # Abandoned for good: a plain open now succeeds at the same checkpoint.
    with strata.Store(str(copy)) as store:
        assert store.last_checkpoint() == kept
