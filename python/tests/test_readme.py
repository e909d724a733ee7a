"""The README's Python examples, run as written (their /tmp paths moved into the test's)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _examples() -> list[str]:
    text = README.read_text()
    section = text[text.index("## From Python and PyTorch"):text.index("## Training\n")]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_has_its_python_examples() -> None:
    assert len(_examples()) == 2


@pytest.mark.parametrize("index", [0, 1])
def test_a_readme_example_runs_and_runs_again(index: int, tmp_path: Path) -> None:
    code = _examples()[index].replace('"/tmp/strata-', f'"{tmp_path}/strata-')
    assert str(tmp_path) in code
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    # Again on the store the first run left: the example resumes, or reopens its tables.
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    if index == 1:
        assert "step 199: loss" in first.stdout
        assert "step" not in again.stdout, "a second run of a finished training resumes past its end"
