"""Files the analyses write: PNG figures and Markdown tables, each written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from polyrise.errors import PolyriseError
from polyrise.io import atomic_open, write_png

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def pyplot() -> ModuleType:
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    try:
        import matplotlib
    except ImportError:
        raise PolyriseError("plots need matplotlib: pip install 'polyrise[eval]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Figure, path: Path) -> Path:
    """Save `fig` as PNG atomically (`io.write_png`) and close it."""
    try:
        fig.tight_layout()
        return write_png(fig, path)
    finally:
        pyplot().close(fig)


def write_markdown(path: Path, title: str, columns: list[str], rows: list[list[str]], notes: Sequence[str]) -> Path:
    """Write a Markdown page atomically: a title, one table, then the `notes` lines (captions, image links)."""
    lines = [f"# {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    with atomic_open(path) as fh:
        fh.write("\n".join([*lines, "", *notes]) + "\n")
    return path
