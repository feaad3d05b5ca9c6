"""Report of a run: languages x iterations tables per metric, the gap to English, and PNG plots (Markdown + HTML)."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyrise.errors import PolyriseError
from polyrise.evaluation import HEADLINE_METRICS, LOWER_IS_BETTER
from polyrise.io import atomic_open

if TYPE_CHECKING:
    from rich.table import Table

Scores = dict[str, dict[str, dict[str, dict[str, float]]]]
"""task → model label (M0, M1, ...) → row (a language, a direction, "average") → metric → value."""


def model_order(label: str) -> tuple[int, str]:
    """Sort key of model labels: M0, M1, ..., M10 in number order, other labels after them."""
    return (int(label[1:]), label) if label[:1] == "M" and label[1:].isdigit() else (10**6, label)


def collect_scores(run_dir: Path) -> Scores:
    """Merge `scores.json` of the run dir (or an eval dir) and of every `iter_*/eval/`; later iterations win."""
    files = [
        run_dir / "scores.json",
        *sorted(run_dir.glob("iter_*/eval/scores.json"), key=lambda p: int(p.parent.parent.name.split("_")[1])),
    ]
    merged: Scores = {}
    for path in files:
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise PolyriseError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        for task, by_model in data.items():
            for label, rows in by_model.items():
                merged.setdefault(task, {})[label] = rows
    if not merged:
        raise PolyriseError(f"{run_dir}: no scores.json found (expected scores.json or iter_*/eval/scores.json)")
    return merged


def metric_table(by_model: dict[str, dict[str, dict[str, float]]], metric: str) -> tuple[list[str], list[str], dict]:
    """(row keys, model labels, {(row, label): value}) for one metric; rows ordered with English first."""
    labels = sorted(by_model, key=model_order)
    values = {
        (row, label): float(cells[metric])
        for label in labels
        for row, cells in by_model[label].items()
        if isinstance(cells, dict) and isinstance(cells.get(metric), int | float)
    }
    rows = sorted({row for row, _ in values}, key=lambda r: (r != "en", r == "average", r))
    return rows, labels, values


def gap_to_english(rows: list[str], labels: list[str], values: dict) -> dict[str, dict[str, float]]:
    """Per model label: English minus each language (the imbalance), and their mean under "mean"."""
    gaps: dict[str, dict[str, float]] = {}
    for label in labels:
        en = values.get(("en", label))
        if en is None or math.isnan(en):
            continue
        langs = {
            r: en - values[(r, label)]
            for r in rows
            if r not in ("en", "average") and (r, label) in values and not math.isnan(values[(r, label)])
        }
        if langs:
            gaps[label] = {**langs, "mean": sum(langs.values()) / len(langs)}
    return gaps


def trained_languages(run_dir: Path) -> list[str]:
    """The languages whose questions a question-alignment run trained on (from its `config.yaml`); else none."""
    from polyrise.config import load_config

    path = run_dir / "config.yaml"
    if not path.is_file():
        return []
    cfg = load_config(path)
    if cfg.alignment is None:  # only a question-alignment run has one
        return []
    return cfg.alignment.trained_languages(cfg.source_lang)


def _fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def _plots(
    task: str,
    metric: str,
    rows: list[str],
    labels: list[str],
    values: dict,
    gaps: dict,
    out: Path,
    shown: Callable[[str], str],
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    safe = f"{task}_{metric}".replace("+", "p").replace("/", "_")
    paths = []
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(rows) * max(1, len(labels)) / 2 + 2), 3.2))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        xs = [j + i * width for j in range(len(rows))]
        ax.bar(xs, [values.get((r, label), math.nan) for r in rows], width, label=label)
    ax.set_xticks([j + width * (len(labels) - 1) / 2 for j in range(len(rows))], [shown(r) for r in rows])
    ax.set_ylabel(metric)
    ax.set_title(f"{task}: {metric} per language and iteration")
    ax.legend(fontsize="small")
    fig.tight_layout()
    paths.append(out / f"{safe}_by_language.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    if gaps:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        gap_langs = [r for r in rows if any(r in g for g in gaps.values())]
        for lang in gap_langs:
            ax.plot(list(gaps), [gaps[label].get(lang, math.nan) for label in gaps], marker="o", label=shown(lang))
        ax.plot(list(gaps), [gaps[label]["mean"] for label in gaps], "k--", marker="s", label="mean")
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_ylabel(f"English - language ({metric})")
        ax.set_title(f"{task}: gap to English per iteration")
        ax.legend(fontsize="small", ncol=2)
        fig.tight_layout()
        paths.append(out / f"{safe}_gap.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def _add_table(md: list[str], body: list[str], columns: list[str], rows: list[list[str]]) -> None:
    """Append one table, its first cell of each row a header, to the Markdown lines and the HTML parts."""
    md += ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    md += ["| " + " | ".join(row) + " |" for row in rows]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    cells = "".join(
        f"<tr><th>{html.escape(row[0])}</th>" + "".join(f"<td>{c}</td>" for c in row[1:]) + "</tr>" for row in rows
    )
    body.append(f"<table><tr><th></th>{head}</tr>{cells}</table>")


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write `report.md`, `report.html` (plots embedded, readable without a server) and `plots/*.png`."""
    run_dir = Path(run_dir)
    scores = collect_scores(run_dir)
    md = [f"# polyrise report: {run_dir.name}", ""]
    body = [f"<h1>polyrise report: {html.escape(run_dir.name)}</h1>"]
    trained = trained_languages(run_dir)
    if trained:
        note = (
            f"Question alignment: languages marked * ({', '.join(trained)}) were in training "
            "(directions are marked when they involve one); the other languages are unseen. "
            "M0 is the model before alignment, M1 after."
        )
        md += [note, ""]
        body.append(f"<p>{html.escape(note)}</p>")

    def shown(row: str) -> str:
        """A language, or a direction such as zh-en, marked when a training language is in it."""
        return f"{row} *" if any(part in trained for part in row.split("-")) else row

    for task in sorted(scores):
        for metric in HEADLINE_METRICS:
            rows, labels, values = metric_table(scores[task], metric)
            if not values:
                continue
            direction = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
            title = f"{task}: {metric} ({direction})"
            md += [f"## {title}", ""]
            body.append(f"<h2>{html.escape(title)}</h2>")
            _add_table(md, body, labels, [[shown(r)] + [_fmt(values.get((r, lab))) for lab in labels] for r in rows])
            gaps = gap_to_english(rows, labels, values)
            if gaps:
                caption = f"Gap to English ({metric}, English minus language):"
                md += ["", caption, ""]
                body.append(f"<p>{html.escape(caption)}</p>")
                gap_rows = [r for r in rows if r not in ("en", "average")] + ["mean"]
                gap_cells = [[shown(r)] + [_fmt(gaps[lab].get(r)) for lab in gaps] for r in gap_rows]
                _add_table(md, body, list(gaps), gap_cells)
            for png in _plots(task, metric, rows, labels, values, gaps, run_dir / "plots", shown):
                md += ["", f"![{png.stem}](plots/{png.name})"]
                data = base64.b64encode(png.read_bytes()).decode()
                body.append(f'<img alt="{png.stem}" src="data:image/png;base64,{data}">')
            md.append("")
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    with atomic_open(md_path) as fh:
        fh.write("\n".join(md) + "\n")
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}img{max-width:100%}"
    )
    with atomic_open(html_path) as fh:
        fh.write(
            f"<!doctype html><html><head><meta charset='utf-8'><title>polyrise report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
        )
    return md_path, html_path


def scores_table(task: str, by_model: dict[str, Any]) -> Table:
    """The console table of one evaluation task: rows (languages or directions) x models, per headline metric."""
    from rich.table import Table

    table = Table(title=f"evaluation: {task}")
    table.add_column("row")
    columns = []
    for metric in HEADLINE_METRICS:
        rows, labels, values = metric_table(by_model, metric)
        if values:
            columns.append((metric, rows, labels, values))
    all_rows = list(dict.fromkeys(r for _, rows, _, _ in columns for r in rows))
    for metric, _, labels, _ in columns:
        for label in labels:
            table.add_column(f"{metric} {label}", justify="right")
    for row in all_rows:
        cells = [
            f"{values[(row, label)]:.3f}" if (row, label) in values else "-"
            for _, _, labels, values in columns
            for label in labels
        ]
        table.add_row(row, *cells)
    return table
