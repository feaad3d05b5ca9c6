"""The report's PNG plots of one metric: its value per language and model (with the 95% intervals), and the gap to
English per model."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

from polyrise.io import write_png
from polyrise.reporting.tables import MetricTables


def _plain(text: str) -> str:
    """A text matplotlib draws as it is (a `$` would start its math mode)."""
    return text.replace("$", r"\$")


def plot_metric(task: str, metric: str, data: MetricTables, out: Path, shown: Callable[[str], str]) -> list[Path]:
    """Write `<task>_<metric>_by_language.png` (and `..._gap.png` where there is a gap to English) into `out`; the
    file names keep letters, digits, `.`, `-` and `_` of the task and metric (`+` as `p`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, labels, values, intervals, gaps = data.rows, data.labels, data.values, data.intervals, data.gaps
    out.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^\w.-]", "_", f"{task}_{metric}".replace("+", "p"))
    paths = []
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(rows) * max(1, len(labels)) / 2 + 2), 3.2))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        xs = [j + i * width for j in range(len(rows))]
        ax.bar(xs, [values.get((r, label), math.nan) for r in rows], width, label=_plain(label))
        bounds = [(x, intervals[(r, label)]) for x, r in zip(xs, rows, strict=True) if (r, label) in intervals]
        if bounds:  # the 95% intervals, drawn as lines (a percentile interval need not contain the value)
            ax.vlines([x for x, _ in bounds], *zip(*(b for _, b in bounds), strict=True), color="black", linewidth=1)
    ax.set_xticks([j + width * (len(labels) - 1) / 2 for j in range(len(rows))], [_plain(shown(r)) for r in rows])
    ax.set_ylabel(_plain(f"{metric} (lines: 95% interval)" if intervals else metric))
    ax.set_title(_plain(f"{task}: {metric} per language and iteration"))
    ax.legend(fontsize="small")
    fig.tight_layout()
    paths.append(out / f"{safe}_by_language.png")
    write_png(fig, paths[-1])
    plt.close(fig)
    if gaps:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        gap_labels = [_plain(label) for label in gaps]
        for lang in [r for r in rows if any(r in g for g in gaps.values())]:
            ax.plot(gap_labels, [gaps[lab].get(lang, math.nan) for lab in gaps], marker="o", label=_plain(shown(lang)))
        ax.plot(gap_labels, [gaps[label]["mean"] for label in gaps], "k--", marker="s", label="mean")
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_ylabel(_plain(f"English - language ({metric})"))
        ax.set_title(_plain(f"{task}: gap to English per iteration"))
        ax.legend(fontsize="small", ncol=2)
        fig.tight_layout()
        paths.append(out / f"{safe}_gap.png")
        write_png(fig, paths[-1])
        plt.close(fig)
    return paths
