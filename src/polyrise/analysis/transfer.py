"""Cross-lingual transfer of a gain: how much of what training on languages S bought reaches each unseen language.

For every language L with scores of a base and a tuned model, the gain is tuned - base (base - tuned for metrics
where lower is better, so a gain is always an improvement). The transfer to an unseen L is gain(L) divided by the
mean gain over the trained languages S: 1 means the unseen language gained as much as the trained ones, 0 nothing,
negative that it got worse. It is undefined when the trained languages gained nothing. Translation directions to
and from English (`de-en`, `en-de`) are compared within their own group (`L-en`, `en-L`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polyrise.analysis.writing import pyplot, save_figure, write_markdown
from polyrise.errors import PolyriseError
from polyrise.evaluation import HEADLINE_METRICS, LOWER_IS_BETTER
from polyrise.io import write_json
from polyrise.reporting import Scores, collect_scores, trained_languages

TransferRows = dict[str, dict[str, Any]]
"""language or direction → {"group", "base", "tuned", "gain", "transfer", "trained"}."""


def load_scores(paths: Sequence[Path]) -> tuple[Scores, list[str]]:
    """Merge the scores of run dirs (or eval dirs) and `scores.json` files; also the training languages the
    run dirs' configs record. A model label found in two inputs of one task is an error."""
    merged: Scores = {}
    trained: list[str] = []
    origin: dict[tuple[str, str], Path] = {}
    for path in paths:
        if path.is_dir():
            scores = collect_scores(path)
            trained += trained_languages(path)
        elif path.is_file():
            try:
                scores = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise PolyriseError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        else:
            raise PolyriseError(f"{path}: no such run directory or scores file")
        for task, by_model in scores.items():
            for label, rows in by_model.items():
                if (task, label) in origin:
                    raise PolyriseError(
                        f"{task}: model label {label!r} is in both {origin[task, label]} and {path}; "
                        "give the base and the tuned model distinct labels"
                    )
                origin[task, label] = path
                merged.setdefault(task, {})[label] = rows
    return merged, list(dict.fromkeys(trained))


def transfer(
    by_model: dict[str, dict[str, dict[str, float]]], metric: str, base: str, tuned: str, trained: Sequence[str]
) -> TransferRows:
    """Gain and transfer ratio per language and per direction to or from English, for one metric."""
    for label in (base, tuned):
        if label not in by_model:
            raise PolyriseError(f"no scores of model {label!r}; models: {', '.join(sorted(by_model))}")
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    rows: TransferRows = {}
    for key, cells in by_model[tuned].items():
        before = by_model[base].get(key, {})
        group = _language_and_group(key)
        if group is None or metric not in cells or metric not in before:
            continue
        lang, kind = group
        rows[key] = {
            "group": kind,
            "base": float(before[metric]),
            "tuned": float(cells[metric]),
            "gain": sign * (float(cells[metric]) - float(before[metric])),
            "trained": lang in trained,
        }
    for kind in {r["group"] for r in rows.values()}:
        members = [r for r in rows.values() if r["group"] == kind]
        trained_gains = [r["gain"] for r in members if r["trained"]]
        mean_gain = sum(trained_gains) / len(trained_gains) if trained_gains else 0.0
        for row in members:
            row["transfer"] = None if row["trained"] or not mean_gain else row["gain"] / mean_gain
    return dict(sorted(rows.items(), key=lambda kv: (kv[1]["group"], not kv[1]["trained"], kv[0] != "en", kv[0])))


def _language_and_group(row: str) -> tuple[str, str] | None:
    """(language, group) of a score row: `de` → (de, "L"); a direction to or from English, `de-en` → (de, "L-en")
    and `en-de` → (de, "en-L"). Gains are compared within a group. Averages and other directions: None."""
    if row == "average":
        return None
    parts = row.split("-")
    if len(parts) == 1:
        return row, "L"
    if len(parts) == 2 and "en" in parts and parts[0] != parts[1]:
        lang = parts[1] if parts[0] == "en" else parts[0]
        return lang, row.replace(lang, "L", 1)
    return None


def _cell(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:+.3f}"


def write_transfer(
    scores: Scores, trained: Sequence[str], base: str, tuned: str, out_dir: Path, tasks: Sequence[str] | None = None
) -> tuple[dict[str, dict[str, TransferRows]], list[Path]]:
    """Transfer tables for every (task, headline metric) with scores of both models: `transfer.json`,
    `transfer.md` and one bar plot per table in `out_dir`. Returns the results and the written files."""
    if not trained:
        raise PolyriseError("which languages were trained is unknown: pass --trained (or a question-alignment run)")
    results: dict[str, dict[str, TransferRows]] = {}
    for task in tasks or sorted(scores):
        if task not in scores:
            raise PolyriseError(f"no scores of task {task!r}; tasks: {', '.join(sorted(scores))}")
        if base not in scores[task] or tuned not in scores[task]:
            continue
        for metric in HEADLINE_METRICS:
            rows = transfer(scores[task], metric, base, tuned, trained)
            if any(r["trained"] for r in rows.values()) and any(not r["trained"] for r in rows.values()):
                results.setdefault(task, {})[metric] = rows
    if not results:
        raise PolyriseError(
            f"no task has per-language scores of both {base!r} and {tuned!r} for trained ({', '.join(trained)}) "
            "and unseen languages"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "transfer.json", {"trained": list(trained), "results": results})
    files = [out_dir / "transfer.json"]
    table: list[list[str]] = []
    notes = [
        f"Trained languages: {', '.join(trained)}. gain = {tuned} - {base} (sign flipped where lower is better); "
        "transfer = gain / mean gain of the trained languages.",
        "",
    ]
    plt = pyplot()
    for task, by_metric in results.items():
        for metric, rows in by_metric.items():
            for lang, r in rows.items():
                table.append(
                    [
                        task,
                        metric,
                        lang + (" *" if r["trained"] else ""),
                        f"{r['base']:.3f}",
                        f"{r['tuned']:.3f}",
                        _cell(r["gain"]),
                        "-" if r["transfer"] is None else f"{r['transfer']:.2f}",
                    ]
                )
            fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(rows) + 1.5), 3.2))
            langs = list(rows)
            colors = ["tab:orange" if rows[lang]["trained"] else "tab:blue" for lang in langs]
            ax.bar(langs, [rows[lang]["gain"] for lang in langs], color=colors)
            for i, lang in enumerate(langs):
                if rows[lang]["transfer"] is not None:
                    ax.annotate(f"{rows[lang]['transfer']:.2f}", (i, rows[lang]["gain"]), ha="center", fontsize=8)
            ax.axhline(0, color="grey", linewidth=0.8)
            ax.set_ylabel(f"gain in {metric}")
            ax.set_title(f"{task}: gain {base}→{tuned} (orange: trained; labels: transfer)", fontsize=9)
            png = save_figure(fig, out_dir / f"transfer_{task}_{metric}.png".replace("+", "p"))
            files.append(png)
            notes.append(f"![{png.stem}]({png.name})")
    columns = ["task", "metric", "language (* trained)", base, tuned, "gain", "transfer"]
    files.append(write_markdown(out_dir / "transfer.md", "Cross-lingual transfer", columns, table, notes))
    return results, files
