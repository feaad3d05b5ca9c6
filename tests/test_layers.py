"""The package's shape holds by itself: every module imports alone, in a fresh interpreter (no import order or
function-level import hides a cycle), and the layer contract in pyproject.toml is kept."""

from __future__ import annotations

import pkgutil
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import polyrise

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(polyrise.__path__, "polyrise.") if not m.name.endswith(".__main__")
)
"""Every module of the package (not `python -m` entry points, which run when imported)."""


def _import_alone(name: str) -> str | None:
    result = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True)
    return f"{name}: exit {result.returncode}: {result.stderr.strip()[-500:]}" if result.returncode else None


def test_every_module_imports_alone_in_a_fresh_interpreter():
    with ThreadPoolExecutor(4) as pool:  # one interpreter per module; they mostly wait on imports from disk
        failed = [problem for problem in pool.map(_import_alone, MODULES) if problem]
    assert not failed, "\n".join(failed)


def test_the_layer_contract_is_kept():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.skip("import-linter is not installed (the dev extra has it)")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([lint], capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stdout[-3000:]
