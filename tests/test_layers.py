"""The package's shape holds by itself: every module imports alone, in a fresh interpreter (no import order or
function-level import hides a cycle), and the layer contract in pyproject.toml is kept."""

from __future__ import annotations

import importlib.util
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import polyrise

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(polyrise.__path__, "polyrise.") if not m.name.endswith(".__main__")
)
"""Every module of the package (not `python -m` entry points, which run when imported)."""


THIRD_PARTY = ("numpy", "pydantic", "rich", "torch", "transformers", "typer", "yaml")
"""Libraries the modules import at module level: imported once, before the forks, since their import order cannot
hide a cycle of polyrise's own."""

FORK_EACH = """
import importlib, os, sys, traceback
for lib in sys.argv[2:]:
    importlib.import_module(lib)
assert not [m for m in sys.modules if m.split(".")[0] == "polyrise"]
failed = 0
for name in sys.argv[1].split(","):
    pid = os.fork()
    if pid == 0:  # a child imports one module into an interpreter that holds none of polyrise's
        try:
            importlib.import_module(name)
        except BaseException:
            sys.stderr.write(f"{name}: {traceback.format_exc()[-500:]}\\n")
            os._exit(1)
        os._exit(0)
    failed += os.waitpid(pid, 0)[1] != 0
sys.exit(failed)
"""
"""One fresh interpreter, forked once per module: as fresh for polyrise's modules as one interpreter each, at a
fraction of the start-up time."""


def test_every_module_imports_alone_in_a_fresh_interpreter():
    libs = [lib for lib in THIRD_PARTY if importlib.util.find_spec(lib) is not None]
    result = subprocess.run(
        [sys.executable, "-c", FORK_EACH, ",".join(MODULES), *libs], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-5000:]


def test_a_module_that_fails_alone_is_found(tmp_path):
    """The forks see a cycle: a module importing a name its importer defines later fails alone."""
    (tmp_path / "cyc_a.py").write_text("import cyc_b\nX = 1\n")
    (tmp_path / "cyc_b.py").write_text("from cyc_a import X\n")
    result = subprocess.run(
        [sys.executable, "-c", FORK_EACH, "cyc_b,cyc_a"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode == 1 and result.stderr.startswith("cyc_a: ") and "ImportError" in result.stderr


def test_the_layer_contract_is_kept():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.skip("import-linter is not installed (the dev extra has it)")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([lint], capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stdout[-3000:]
