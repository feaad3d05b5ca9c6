"""Files the analyses write: PNG figures and Markdown tables, each written atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from polyrise.errors import PolyriseError
from polyrise.io import atomic_open

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
    """Save `fig` as PNG atomically (temp file beside `path`, then rename) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        pyplot().close(fig)
    return path


def write_markdown(path: Path, title: str, columns: list[str], rows: list[list[str]], notes: Sequence[str]) -> Path:
    """Write a Markdown page atomically: a title, one table, then the `notes` lines (captions, image links)."""
    lines = [f"# {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    with atomic_open(path) as fh:
        fh.write("\n".join([*lines, "", *notes]) + "\n")
    return path
