"""Report of a run: languages x iterations tables per metric with `n` and 95% intervals, the paired change from
each model to the next, the gap to English, and PNG plots (Markdown + HTML)."""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from polyrise.errors import PolyriseError, missing_extra
from polyrise.evaluation import HEADLINE_METRICS, LOWER_IS_BETTER, fidelity, item_samples
from polyrise.io import atomic_open, iter_jsonl, read_jsonl
from polyrise.langid import LangIdSettings, judge
from polyrise.records import Response
from polyrise.stats import Change, RowSamples, ci_keys, paired_change

if TYPE_CHECKING:
    from rich.table import Table

Scores = dict[str, dict[str, dict[str, dict[str, float]]]]
"""task → model label (M0, M1, ...) → row (a language, a direction, "average") → metric → value."""


DISTINGUISHABLE = "†"
"""The mark of a change whose 95% interval excludes 0 (`*` marks trained languages)."""


def model_order(label: str) -> tuple[int, str]:
    """Sort key of model labels: M0, M1, ..., M10 in number order, other labels after them."""
    return (int(label[1:]), label) if label[:1] == "M" and label[1:].isdigit() else (10**6, label)


def _eval_dirs(run_dir: Path) -> list[Path]:
    """The run dir (or an eval dir) and every `iter_*/eval/`, in iteration order."""
    found = [p for p in run_dir.glob("iter_*/eval") if re.fullmatch(r"iter_\d+", p.parent.name)]  # not iter_0.bak
    return [run_dir, *sorted(found, key=lambda p: int(p.parent.name.split("_")[1]))]


def collect_scores(run_dir: Path) -> Scores:
    """Merge `scores.json` of the run dir (or an eval dir) and of every `iter_*/eval/`; later iterations win."""
    merged: Scores = {}
    for path in (d / "scores.json" for d in _eval_dirs(run_dir)):
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise PolyriseError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(data, dict):
            raise PolyriseError(f"{path}: expected {{task: {{model: {{row: metrics}}}}}}, got a {type(data).__name__}")
        for task, by_model in data.items():
            if not isinstance(by_model, dict) or not all(
                isinstance(rows, dict) and all(isinstance(cells, dict) for cells in rows.values())
                for rows in by_model.values()
            ):
                raise PolyriseError(f"{path}: {task}: expected {{model: {{row: {{metric: value}}}}}}")
            for label, rows in by_model.items():
                merged.setdefault(task, {})[label] = rows
    if not merged and not run_dir.is_dir():
        raise PolyriseError(f"{run_dir}: no such directory")
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
    unmeasurable = {row for label in labels for row, cells in by_model[label].items() if _unmeasurable(cells, metric)}
    rows = sorted({row for row, _ in values} | unmeasurable, key=lambda r: (r != "en", r == "average", r))
    return rows, labels, values


def _unmeasurable(cells: Any, metric: str) -> bool:
    """A row whose `metric` the detector could not measure (a language it has no model for)."""
    return isinstance(cells, dict) and metric in cells and cells.get("measurable") is False


def _cell(by_model: Mapping[str, Any], row: str, label: str, values: dict, intervals: dict, metric: str) -> str:
    """One table cell: the value with its interval, or "not measurable"."""
    if _unmeasurable(by_model[label].get(row), metric):
        return "not measurable"
    return _with_interval(values.get((row, label)), intervals.get((row, label)))


def interval_table(by_model: dict[str, dict[str, dict[str, float]]], metric: str) -> dict:
    """{(row, label): (low, high)}: the metric's 95% interval where the scores hold a finite one."""
    low_key, high_key = ci_keys(metric)
    return {
        (row, label): (float(cells[low_key]), float(cells[high_key]))
        for label, rows in by_model.items()
        for row, cells in rows.items()
        if isinstance(cells, dict)
        and all(isinstance(cells.get(k), int | float) and not math.isnan(cells[k]) for k in (low_key, high_key))
    }


def run_langid(run_dir: Path) -> LangIdSettings:
    """The `langid:` settings of the run (its `config.yaml`), which judged its answers; the defaults elsewhere."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return LangIdSettings()
    try:
        return LangIdSettings(**(yaml.safe_load(path.read_text()) or {}).get("langid", {}))
    except (yaml.YAMLError, ValidationError, AttributeError) as e:
        raise PolyriseError(f"{path}: langid: {e}") from None


def item_samples_of(run_dir: Path, task: str, label: str) -> RowSamples | str:
    """The per-item samples of `task` on model `label`, from its per-sample rows `<task>_<label>.jsonl` (in the last
    eval dir that has them; answers judged with the run's `langid` settings); else why there are none."""
    name = f"{task}_{label}.jsonl"
    paths = [d / name for d in _eval_dirs(run_dir) if (d / name).is_file()]
    if not paths:
        return f"{name} is missing"
    if task == "heldout":  # a run's held-out answers: judged as the run judged them
        samples = fidelity.row_samples(read_jsonl(paths[-1], Response), run_langid(run_dir)) or None
    else:
        samples = item_samples(paths[-1])
    return f"{name} holds no per-item values" if samples is None else samples


MAX_ROWS = 200
"""Rows embedded in report.html per group (pairs: an iteration and pair row; evaluation rows: a file, i.e. an
iteration, model and task, and a language); the page says how many it left out, so a large run's page stays small."""
MAX_CHARS = 4000
"""Characters kept of each text (prompt, answers, gold) in report.html; longer ones are clipped, saying so."""


def _clip(text: object) -> str | None:
    """A text for the page: None stays None, anything else a string of at most `MAX_CHARS` characters."""
    if text is None:
        return None
    text = str(text)
    if len(text) <= MAX_CHARS:
        return text
    return f"{text[:MAX_CHARS]}… [clipped: {len(text):,} characters]"


def _iteration(path: Path) -> int | None:
    """The iteration of `iter_<t>` (or of `iter_<t>/eval`); None for a run's top dir or a bare eval dir."""
    name = path.parent.name if path.name == "eval" else path.name
    return int(name.split("_")[1]) if re.fullmatch(r"iter_\d+", name) else None


def _capped(rows: list[dict[str, Any]], group: Callable[[dict[str, Any]], object]) -> tuple[list[dict[str, Any]], int]:
    """At most `MAX_ROWS` rows of each group (in file order), and how many were left out."""
    seen: dict[object, int] = {}
    kept = []
    for row in rows:
        key = group(row)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= MAX_ROWS:
            kept.append(row)
    return kept, len(rows) - len(kept)


def pair_views(run_dir: Path) -> list[dict[str, Any]]:
    """Every pair of every iteration, kept (`pairs.jsonl`) and dropped (`pairs_dropped.jsonl`, with its reason),
    with its correctness where the prompts had gold answers (`reward.jsonl`: chosen and rejected right or wrong)."""
    from polyrise.evaluation.reward import RewardLabel, pair_row
    from polyrise.records import DroppedPair, PreferencePair

    iters = [p for p in run_dir.glob("iter_*") if _iteration(p) is not None and (p / "pairs.jsonl").is_file()]
    views = []
    for it in sorted(iters, key=_iteration):
        labels = {}
        if (it / "reward.jsonl").is_file():
            labels = {(r.id, r.lang, r.via): r for r in read_jsonl(it / "reward.jsonl", RewardLabel)}
        dropped = read_jsonl(it / "pairs_dropped.jsonl", DroppedPair) if (it / "pairs_dropped.jsonl").is_file() else []
        for pair in [*read_jsonl(it / "pairs.jsonl", PreferencePair), *dropped]:
            label = labels.get((pair.id, pair.lang, pair.via)) if isinstance(pair, PreferencePair) else None
            views.append(
                {
                    "iter": _iteration(it),
                    "lang": pair_row(pair.lang, pair.via),
                    "id": pair.id,
                    "status": pair.reason if isinstance(pair, DroppedPair) else "kept",
                    "correct": None if label is None else [label.chosen_right, label.rejected_right],
                    **{k: _clip(getattr(pair, k)) for k in ("prompt", "chosen", "rejected")},
                }
            )
    return views


ANSWER_KEYS = ("output", "hypothesis", "pred")
"""Where an evaluation row holds its answer: a text (most tasks; translation's `hypothesis`), else the picked label."""


def _first(row: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    """The value of the first of `keys` that the row holds (not null), else None."""
    return next((row[k] for k in keys if row.get(k) is not None), None)


def _verdicts(path: Path, task: str, label: str) -> dict[tuple[str, str], str]:
    """(lang, id) → the verdict on a row of `<task>_<label>.jsonl`: right / wrong where its task scores per-item
    accuracy, win / tie / loss where a judge compared it (`<task>_<label>_judgements.jsonl`)."""
    samples = item_samples(path) or {}
    verdicts = {
        (lang, item): "right" if value else "wrong"
        for lang, metrics in samples.items()
        if "accuracy" in metrics
        for item, value in zip(metrics["accuracy"].ids, metrics["accuracy"].values, strict=True)
    }
    judged = path.with_name(f"{task}_{label}_judgements.jsonl")
    if judged.is_file():
        for _, row in iter_jsonl(judged):
            score = row.get("score")
            if isinstance(score, int | float):
                verdict = "win" if score > 0.5 else "tie" if score == 0.5 else "loss"
                verdicts[(str(row.get("lang")), str(row.get("id")))] = verdict
    return verdicts


def _direction(row: Mapping[str, Any]) -> str:
    """An evaluation row's language, or its direction (`en-de`) for a translation row."""
    return f"{row['src_lang']}-{row.get('lang')}" if "src_lang" in row else str(row.get("lang"))


def eval_views(run_dir: Path, scores: Scores) -> tuple[list[dict[str, Any]], int]:
    """The per-sample rows of every evaluation (`<task>_<label>.jsonl` of each eval dir) that hold a text or an
    answer, at most `MAX_ROWS` per file and language (and how many more there were): prompt, output, gold, the
    verdict (`_verdicts`; held-out answers: on or off target) and the languages the detector found in the output
    (the run's `langid` settings)."""
    settings = run_langid(run_dir)
    views = []
    left_out = 0
    for eval_dir in _eval_dirs(run_dir):
        for task in sorted(scores):
            for label in sorted(scores[task], key=model_order):
                path = eval_dir / f"{task}_{label}.jsonl"
                if not path.is_file():
                    continue
                answers = [row for _, row in iter_jsonl(path) if _first(row, ANSWER_KEYS) is not None]  # not reflik's
                rows, left = _capped(answers, _direction)
                left_out += left
                verdicts = _verdicts(path, task, label) if task != "heldout" else {}
                langs = sorted({str(row.get("lang")) for row in rows})
                for row in rows:
                    text, lang = _first(row, ANSWER_KEYS[:2]), str(row.get("lang"))
                    output = text if text is not None else row["pred"]  # choice, classify: the picked label
                    verdict = verdicts.get((lang, str(row.get("id"))))
                    detected = None
                    if isinstance(text, str):
                        judged = judge(text, lang, settings, langs)
                        detected = ", ".join(sorted({line.lang for line in judged.lines if line.lang})) or None
                        if task == "heldout" and judged.off_target is not None:
                            verdict = "off-target" if judged.off_target else "on-target"
                    if row.get("failed") is True:
                        verdict = "failed"
                    views.append(
                        {
                            "iter": _iteration(eval_dir),
                            "model": label,
                            "task": task,
                            "lang": _direction(row),
                            "id": str(row.get("id")),
                            "prompt": _clip(_first(row, ("prompt", "source", "instruction"))),
                            "output": _clip(output),
                            "gold": _clip(_first(row, ("gold", "reference", "label"))),
                            "verdict": verdict,
                            "detected": detected,
                        }
                    )
    return views, left_out


def _samples_data(run_dir: Path, scores: Scores) -> dict[str, Any]:
    """What report.html embeds for its per-sample views: the capped pairs and evaluation rows, and what was left
    out."""
    pairs, pairs_left = _capped(pair_views(run_dir), lambda view: (view["iter"], view["lang"]))
    evals, evals_left = eval_views(run_dir, scores)
    return {
        "pairs": pairs,
        "evals": evals,
        "left_out": {"pairs": pairs_left, "evals": evals_left},
        "max_rows": MAX_ROWS,
        "max_chars": MAX_CHARS,
    }


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element: `<`, `>` and `&` escaped, so no text can close it or open a comment."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


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


def _with_interval(value: float | None, interval: tuple[float, float] | None) -> str:
    """`0.300 [0.200, 0.400]`: a value and its 95% interval (the value alone when it has none)."""
    if value is None or interval is None:
        return _fmt(value)
    return f"{_fmt(value)} [{interval[0]:.3f}, {interval[1]:.3f}]"


def _change_text(change: Change | None) -> str:
    """`+0.100 [+0.020, +0.180] †`: a paired change, its 95% interval, and `DISTINGUISHABLE` when that excludes 0."""
    if change is None:
        return "-"
    mark = f" {DISTINGUISHABLE}" if change.distinguishable else ""
    return f"{change.delta:+.3f} [{change.low:+.3f}, {change.high:+.3f}]{mark}"


def _n_text(ns: Iterable[object]) -> str:
    """A row's `n` over the models: one number when those that have one agree, else each in turn (`-`: none)."""
    shown = [str(n) if isinstance(n, int) else "-" for n in ns]
    found = set(shown) - {"-"}
    if not found:
        return "-"
    return found.pop() if len(found) == 1 else "/".join(shown)


def _plots(
    task: str,
    metric: str,
    rows: list[str],
    labels: list[str],
    values: dict,
    intervals: dict,
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
        bounds = [(x, intervals[(r, label)]) for x, r in zip(xs, rows, strict=True) if (r, label) in intervals]
        if bounds:  # the 95% intervals, drawn as lines (a percentile interval need not contain the value)
            ax.vlines([x for x, _ in bounds], *zip(*(b for _, b in bounds), strict=True), color="black", linewidth=1)
    ax.set_xticks([j + width * (len(labels) - 1) / 2 for j in range(len(rows))], [shown(r) for r in rows])
    ax.set_ylabel(f"{metric} (lines: 95% interval)" if intervals else metric)
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


def _add_changes(
    md: list[str],
    body: list[str],
    changes: dict[tuple[str, str], Change],
    notes: list[str],
    labels: list[str],
    rows: list[str],
    shown: Callable[[str], str],
) -> None:
    """Append the table of paired changes between consecutive models (`paired_changes`) and its notes."""
    steps = [_step(a, b) for a, b in pairwise(labels)]
    if changes:
        caption = (
            "Change from each model to the next (later minus earlier, paired over the items both were scored on; "
            f"95% bootstrap interval; {DISTINGUISHABLE} where it excludes 0; - not paired):"
        )
        md += ["", caption, ""]
        body.append(f"<p>{html.escape(caption)}</p>")
        table = [
            [shown(r)]
            + [_change_text(changes.get((r, step))) for step in steps]
            + [_n_text(changes[(r, step)].n if (r, step) in changes else None for step in steps)]
            for r in rows
        ]
        _add_table(md, body, [*steps, "n"], table)
    elif not notes:
        notes = ["No paired change: no row has per-item values shared by two consecutive models."]
    for note in notes:
        md += ["", note]
        body.append(f"<p>{html.escape(note)}</p>")


def write_report(run_dir: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write `report.md`, `report.html` (one self-contained file: plots, styles, script and the per-sample data
    embedded, no network) and `plots/*.png`.

    Each table of a metric shows every value with its 95% interval and `n`; below it, the change from each model
    to the next, paired over the items both were scored on (their per-sample rows; bootstrap seeded by `seed`),
    marked `DISTINGUISHABLE` (†) where its 95% interval excludes 0. The HTML also shows the samples, searchable
    and filterable (its filters read from and kept in the address's `#...` part): every pair kept or dropped
    (`pair_views`) and every evaluation row (`eval_views`), at most `MAX_ROWS` per group.
    """
    run_dir = Path(run_dir)
    if problem := missing_extra("matplotlib", "eval", "the report's plots"):
        raise PolyriseError(problem)
    scores = collect_scores(run_dir)
    views = _samples_data(run_dir, scores)  # before anything is written: a bad row is an error, no half report
    md = [f"# polyrise report: {run_dir.name}", ""]
    body: list[str] = []
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
        by_model = scores[task]
        samples = {label: item_samples_of(run_dir, task, label) for label in by_model}
        for metric in HEADLINE_METRICS:
            rows, labels, values = metric_table(by_model, metric)
            if not rows:
                continue
            intervals = interval_table(by_model, metric)
            direction = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
            title = f"{task}: {metric} ({direction})"
            md += [f"## {title}", ""]
            body.append(f"<h2>{html.escape(title)}</h2>")
            table = [
                [shown(r)]
                + [_cell(by_model, r, lab, values, intervals, metric) for lab in labels]
                + [_n_text(by_model[lab].get(r, {}).get("n") for lab in labels)]
                for r in rows
            ]
            _add_table(md, body, [*labels, "n"], table)
            if len(labels) > 1:
                changes, notes = paired_changes(samples, labels, rows, metric, seed)
                _add_changes(md, body, changes, notes, labels, rows, shown)
            gaps = gap_to_english(rows, labels, values)
            if gaps:
                caption = f"Gap to English ({metric}, English minus language):"
                md += ["", caption, ""]
                body.append(f"<p>{html.escape(caption)}</p>")
                gap_rows = [r for r in rows if r not in ("en", "average")] + ["mean"]
                gap_cells = [[shown(r)] + [_fmt(gaps[lab].get(r)) for lab in gaps] for r in gap_rows]
                _add_table(md, body, list(gaps), gap_cells)
            for png in _plots(task, metric, rows, labels, values, intervals, gaps, run_dir / "plots", shown):
                md += ["", f"![{png.stem}](plots/{png.name})"]
                data = base64.b64encode(png.read_bytes()).decode()
                body.append(f'<img alt="{png.stem}" src="data:image/png;base64,{data}">')
            md.append("")
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    with atomic_open(md_path) as fh:
        fh.write("\n".join(md) + "\n")
    assets = resources.files("polyrise") / "data"
    page = (assets / "report.html").read_text(encoding="utf-8")
    parts = {
        "title": html.escape(f"polyrise report: {run_dir.name}"),
        "style": (assets / "report.css").read_text(encoding="utf-8"),
        "scores": "".join(body),
        "data": _script_json(views),
        "script": (assets / "report.js").read_text(encoding="utf-8"),
    }
    with atomic_open(html_path) as fh:
        fh.write(re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m.group(1)], page))  # one pass: no part is rescanned
    return md_path, html_path


def scores_table(task: str, by_model: dict[str, Any]) -> Table:
    """The console table of one evaluation task: rows (languages or directions) x models, per headline metric, each
    value with its 95% interval, and the rows' `n`."""
    from rich.table import Table

    table = Table(title=f"evaluation: {task}")
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
            _cell(by_model, row, label, values, intervals, metric)
            for metric, _, labels, values, intervals in columns
            for label in labels
        ]
        table.add_row(row, *cells, _n_text(by_model[label].get(row, {}).get("n") for label in models))
    return table
