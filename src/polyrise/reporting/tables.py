"""The report's tables as data, rendered to Markdown, HTML (`render`) and the console (`scores_table`) alike: per
metric, languages x models with every value's 95% interval and `n`, the paired change from each model to the next,
and the gap to English."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from polyrise.evaluation import HEADLINE_METRICS
from polyrise.reporting.collect import model_order
from polyrise.stats import Change, RowSamples, ci_keys, paired_change

if TYPE_CHECKING:
    from rich.table import Table as RichTable

DISTINGUISHABLE = "†"
"""The mark of a change whose 95% interval excludes 0 (`*` marks trained languages)."""

Values = dict[tuple[str, str], float]
"""(row, model label) → a metric's value."""
Intervals = dict[tuple[str, str], tuple[float, float]]
"""(row, model label) → the metric's 95% interval."""


@dataclass(frozen=True)
class Cell:
    """One table cell: a value (a change when `signed`) with its 95% interval and marks, or words (`text`)."""

    value: float | None = None
    interval: tuple[float, float] | None = None
    signed: bool = False
    marks: tuple[str, ...] = ()
    text: str | None = None

    def __str__(self) -> str:
        """`0.300 [0.200, 0.400]`, `+0.100 [+0.020, +0.180] †`, the text, or `-` for no value."""
        if self.text is not None:
            return self.text
        if self.value is None or math.isnan(self.value):
            return "-"
        spec = "+.3f" if self.signed else ".3f"
        shown = format(self.value, spec)
        if self.interval is not None:
            shown += f" [{format(self.interval[0], spec)}, {format(self.interval[1], spec)}]"
        return " ".join([shown, *self.marks])


@dataclass(frozen=True)
class Row:
    """A table row: its header (a language or direction, with marks such as `*`) and its cells."""

    label: str
    cells: list[Cell]
    marks: tuple[str, ...] = ()

    @property
    def header(self) -> str:
        return " ".join([self.label, *self.marks])


@dataclass(frozen=True)
class Table:
    """A table under an optional title (a heading) and caption (a line before it), and the notes after it; a
    table without rows is its notes only."""

    columns: list[str]
    rows: list[Row]
    title: str | None = None
    caption: str | None = None
    notes: list[str] = field(default_factory=list)


def metric_table(by_model: Mapping[str, Mapping[str, Any]], metric: str) -> tuple[list[str], list[str], Values]:
    """(row keys, model labels, {(row, label): value}) for one metric; rows ordered with English first."""
    labels = sorted(by_model, key=model_order)
    values = {
        (row, label): float(cells[metric])
        for label in labels
        for row, cells in by_model[label].items()
        if isinstance(cells, dict) and isinstance(cells.get(metric), int | float)
    }
    unmeasurable = {row for label in labels for row, cells in by_model[label].items() if _unmeasurable(cells, metric)}
    rows = sorted({row for row, _ in values} | unmeasurable, key=lambda r: (r != "en", r == "average", r))
    return rows, labels, values


def _unmeasurable(cells: Any, metric: str) -> bool:
    """A row whose `metric` the detector could not measure (a language it has no model for)."""
    return isinstance(cells, dict) and metric in cells and cells.get("measurable") is False


def interval_table(by_model: Mapping[str, Mapping[str, Any]], metric: str) -> Intervals:
    """{(row, label): (low, high)}: the metric's 95% interval where the scores hold a finite one."""
    low_key, high_key = ci_keys(metric)
    return {
        (row, label): (float(cells[low_key]), float(cells[high_key]))
        for label, rows in by_model.items()
        for row, cells in rows.items()
        if isinstance(cells, dict)
        and all(isinstance(cells.get(k), int | float) and not math.isnan(cells[k]) for k in (low_key, high_key))
    }


def _value_cell(
    by_model: Mapping[str, Any], row: str, label: str, values: Values, intervals: Intervals, metric: str
) -> Cell:
    """A value with its interval, or "not measurable"."""
    if _unmeasurable(by_model[label].get(row), metric):
        return Cell(text="not measurable")
    return Cell(values.get((row, label)), intervals.get((row, label)))


def _n_cell(ns: Iterable[object]) -> Cell:
    """A row's `n` over the models: one number when those that have one agree, else each in turn (`-`: none)."""
    shown = [str(n) if isinstance(n, int) else "-" for n in ns]
    found = set(shown) - {"-"}
    if not found:
        return Cell(text="-")
    return Cell(text=found.pop() if len(found) == 1 else "/".join(shown))


def _step(before: str, after: str) -> str:
    return f"{before}→{after}"


def paired_changes(
    samples: Mapping[str, RowSamples | str], labels: list[str], rows: list[str], metric: str, seed: int = 0
) -> tuple[dict[tuple[str, str], Change], list[str]]:
    """The change of `metric` from each model to the next (`M0→M1`, in `labels`' order) per row, paired over the
    items both were scored on (`stats.paired_change`, seeded by (seed, row)): {(row, step): change}, and a note
    for each step whose rows cannot be paired (`samples`: label → its samples or why there are none)."""
    changes: dict[tuple[str, str], Change] = {}
    notes = []
    for before, after in pairwise(labels):
        step, old, new = _step(before, after), samples[before], samples[after]
        if isinstance(old, str) or isinstance(new, str):
            reasons = [side for side in (old, new) if isinstance(side, str)]
            notes.append(f"{step} not paired: {', '.join(dict.fromkeys(reasons))}.")
            continue
        for row in rows:
            a, b = new.get(row, {}).get(metric), old.get(row, {}).get(metric)
            change = paired_change(a, b, seed, row) if a is not None and b is not None else None
            if change is not None:
                changes[(row, step)] = change
    return changes, notes


def gap_to_english(rows: list[str], labels: list[str], values: Values) -> dict[str, dict[str, float]]:
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


@dataclass(frozen=True)
class MetricTables:
    """One metric of one task: its table, the paired changes, the gap to English, and what the plots draw."""

    tables: list[Table]
    rows: list[str]
    labels: list[str]
    values: Values
    intervals: Intervals
    gaps: dict[str, dict[str, float]]


def metric_tables(
    task: str,
    by_model: Mapping[str, Mapping[str, Any]],
    metric: str,
    direction: str,
    samples: Mapping[str, RowSamples | str],
    marks: Callable[[str], tuple[str, ...]],
    seed: int,
) -> MetricTables | None:
    """The tables of `metric` of `task` (`direction`: "higher is better", ...; `samples`: label → its per-item
    samples or why there are none; `marks`: a row's marks); None when no row has the metric."""
    rows, labels, values = metric_table(by_model, metric)
    if not rows:
        return None
    intervals = interval_table(by_model, metric)
    main = Table(
        [*labels, "n"],
        [
            Row(
                r,
                [_value_cell(by_model, r, lab, values, intervals, metric) for lab in labels]
                + [_n_cell(by_model[lab].get(r, {}).get("n") for lab in labels)],
                marks(r),
            )
            for r in rows
        ],
        title=f"{task}: {metric} ({direction})",
    )
    tables = [main]
    if len(labels) > 1:
        tables.append(_change_table(paired_changes(samples, labels, rows, metric, seed), labels, rows, marks))
    gaps = gap_to_english(rows, labels, values)
    if gaps:
        gap_rows = [r for r in rows if r not in ("en", "average")] + ["mean"]
        cells = [Row(r, [Cell(gaps[lab].get(r)) for lab in gaps], marks(r)) for r in gap_rows]
        tables.append(Table(list(gaps), cells, caption=f"Gap to English ({metric}, English minus language):"))
    return MetricTables(tables, rows, labels, values, intervals, gaps)


def _change_table(
    found: tuple[dict[tuple[str, str], Change], list[str]],
    labels: list[str],
    rows: list[str],
    marks: Callable[[str], tuple[str, ...]],
) -> Table:
    """The paired changes between consecutive models (`paired_changes`) and their notes."""
    changes, notes = found
    steps = [_step(a, b) for a, b in pairwise(labels)]
    if not changes:
        notes = notes or ["No paired change: no row has per-item values shared by two consecutive models."]
        return Table([], [], notes=notes)

    def cell(change: Change | None) -> Cell:
        if change is None:
            return Cell()
        mark = (DISTINGUISHABLE,) if change.distinguishable else ()
        return Cell(change.delta, (change.low, change.high), signed=True, marks=mark)

    table = [
        Row(
            r,
            [cell(changes.get((r, step))) for step in steps]
            + [_n_cell(changes[(r, step)].n if (r, step) in changes else None for step in steps)],
            marks(r),
        )
        for r in rows
    ]
    caption = (
        "Change from each model to the next (later minus earlier, paired over the items both were scored on; "
        f"95% bootstrap interval; {DISTINGUISHABLE} where it excludes 0; - not paired):"
    )
    return Table([*steps, "n"], table, caption=caption, notes=notes)


def scores_table(task: str, by_model: dict[str, Any]) -> RichTable:
    """The console table of one evaluation task: rows (languages or directions) x models, per headline metric, each
    value with its 95% interval, and the rows' `n`."""
    from rich.table import Table as RichTable

    table = RichTable(title=f"evaluation: {task}")
    table.add_column("row")
    columns = []
    for metric in HEADLINE_METRICS:
        rows, labels, values = metric_table(by_model, metric)
        if rows:
            columns.append((metric, rows, labels, values, interval_table(by_model, metric)))
    all_rows = list(dict.fromkeys(r for _, rows, _, _, _ in columns for r in rows))
    for metric, _, labels, _, _ in columns:
        for label in labels:
            table.add_column(f"{metric} {label}", justify="right")
    table.add_column("n", justify="right")
    models = sorted(by_model, key=model_order)
    for row in all_rows:
        cells = [
            str(_value_cell(by_model, row, label, values, intervals, metric))
            for metric, _, labels, values, intervals in columns
            for label in labels
        ]
        table.add_row(row, *cells, str(_n_cell(by_model[label].get(row, {}).get("n") for label in models)))
    return table
