"""Builds the strata wheel: the Python package plus libStrataC.so, built from the repository.

`pip install ./python` (from the repository's root) runs `swift build -c release --product
StrataC` in the repository (the parent of this directory) and puts .build/release/libStrataC.so
into the package as strata/libStrataC.so. The wheel is platform-specific.

Environment:
    STRATA_SKIP_SWIFT_BUILD=1  do not run swift build: copy a library built already (CI builds
                               it first), $STRATA_LIBRARY if set, else .build/release/libStrataC.so.
    STRATA_SWIFT               the swift executable (default: swift on PATH).

Everything else (name, version, dependencies) is in pyproject.toml.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent
LIBRARY = "libStrataC.so"


class BinaryDistribution(Distribution):
    """A distribution with a native library: its wheel is tagged for this platform, not pure."""

    def has_ext_modules(self) -> bool:
        return True


def _built_library() -> Path:
    """The libStrataC.so to package: built now with swift, or one built before (see above)."""
    skip = os.environ.get("STRATA_SKIP_SWIFT_BUILD", "") not in ("", "0")
    if skip and os.environ.get("STRATA_LIBRARY"):
        library = Path(os.environ["STRATA_LIBRARY"])
        if not library.is_file():
            raise SystemExit(f"strata: STRATA_SKIP_SWIFT_BUILD is set and STRATA_LIBRARY is {library}, which is not a file")
        return library
    if not (REPOSITORY / "Package.swift").is_file():
        raise SystemExit(
            f"strata: {REPOSITORY} holds no Package.swift. The package builds libStrataC.so from the "
            "Strata repository it lives in: run `pip install ./python` from the root of a checkout, "
            "or set STRATA_SKIP_SWIFT_BUILD=1 and STRATA_LIBRARY to a libStrataC.so built already"
        )
    library = REPOSITORY / ".build" / "release" / LIBRARY
    if skip:
        if not library.is_file():
            raise SystemExit(
                f"strata: STRATA_SKIP_SWIFT_BUILD is set but {library} does not exist: build it with "
                "`swift build -c release --product StrataC` first"
            )
        return library
    swift = os.environ.get("STRATA_SWIFT") or shutil.which("swift")
    if not swift:
        raise SystemExit(
            "strata: swift not found on PATH: install the Swift toolchain (tools/setup.sh lists what "
            "else the build needs), or build libStrataC.so elsewhere and set STRATA_SKIP_SWIFT_BUILD=1"
        )
    command = [swift, "build", "-c", "release", "--product", "StrataC"]
    print(f"strata: running {' '.join(command)} in {REPOSITORY}", flush=True)
    try:
        subprocess.run(command, cwd=REPOSITORY, check=True)
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"strata: `{' '.join(command)}` failed (exit status {error.returncode}); see its output above") from None
    if not library.is_file():
        raise SystemExit(f"strata: swift build succeeded but made no {library}")
    return library


class BuildPyWithLibrary(build_py):
    """build_py, then libStrataC.so copied into the built package."""

    def run(self) -> None:
        super().run()
        if self.dry_run:
            return
        library = _built_library()
        target = Path(self.build_lib) / "strata" / LIBRARY
        target.parent.mkdir(parents=True, exist_ok=True)
        print(f"strata: copying {library} to {target}", flush=True)
        shutil.copyfile(library, target)
        os.chmod(target, 0o755)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / "strata" / LIBRARY)]


setup(cmdclass={"build_py": BuildPyWithLibrary}, distclass=BinaryDistribution)
