"""strata.h against libStrataC.so and against the Python declarations."""
from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from strata import _native

HERE = Path(__file__).resolve().parent
HEADER = HERE.parent.parent / "Sources" / "StrataC" / "include" / "strata.h"


def _declared_functions() -> dict[str, int]:
    """Each function strata.h declares, with its number of parameters."""
    text = re.sub(r"/\*.*?\*/", "", HEADER.read_text(), flags=re.S)
    found = {}
    for m in re.finditer(r"\b(strata_\w+)\s*\(([^)]*)\)\s*;", text):
        params = m.group(2).strip()
        found[m.group(1)] = 0 if params in ("", "void") else params.count(",") + 1
    return found


def test_every_declared_function_is_bound_with_its_arity() -> None:
    declared = _declared_functions()
    assert len(declared) >= 20
    lib = _native.library()
    for name, arity in declared.items():
        function = getattr(lib, name)
        assert function.argtypes is not None, f"{name} has no argtypes in strata/_native.py"
        assert len(function.argtypes) == arity, f"{name}: strata.h has {arity} parameters, _native.py {len(function.argtypes)}"


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """c_api_check.c, compiled against strata.h and linked against the library."""
    compiler = shutil.which("clang") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler")
    library = Path(_native.library_path())
    program = tmp_path_factory.mktemp("c") / "c_api_check"
    subprocess.run([compiler, "-std=c11", "-Wall", "-Werror", "-I", str(HEADER.parent), str(HERE / "c_api_check.c"),
                    "-o", str(program), "-L", str(library.parent), "-lStrataC", f"-Wl,-rpath,{library.parent}", "-lm"],
                   check=True)
    return program


def test_the_header_compiles_and_links_and_its_calls_behave(program: Path, tmp_path: Path) -> None:
    result = subprocess.run([str(program), str(tmp_path / "store")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok rows kept by the checkpoint" in result.stdout


def test_the_ctypes_structs_have_the_headers_layout(program: Path) -> None:
    printed = subprocess.run([str(program), "--layout"], capture_output=True, text=True, check=True).stdout.split("\n")
    layout = {tuple(line.split()[:2]): int(line.split()[2]) for line in printed if line}
    structs = {"strata_store_options": _native.StoreOptions, "strata_table_spec": _native.TableSpec}
    for c_name, struct in structs.items():
        assert layout[(c_name, "size")] == ctypes.sizeof(struct), c_name
        c_fields = [field for (name, field) in layout if name == c_name and field != "size"]
        assert c_fields == [name for name, _ in struct._fields_], f"{c_name}: fields differ from strata.h's"
        for name, _ in struct._fields_:
            assert layout[(c_name, name)] == getattr(struct, name).offset, f"{c_name}.{name}"
