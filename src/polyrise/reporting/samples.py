"""The per-sample data report.html embeds: every training example of the run's method (its `PairFiles`) and every
evaluation row a task view can show, capped per group and clipped, so a large run's page stays small."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from polyrise.evaluation import task_view
from polyrise.evaluation.reward import RewardLabel
from polyrise.io import read_jsonl
from polyrise.langid import LangIdSettings, judge
from polyrise.methods import MethodViews
from polyrise.records import DroppedPair, DroppedPrompt
from polyrise.reporting.collect import Scores, eval_dirs, iteration, model_order

MAX_ROWS = 200
"""Rows embedded in report.html per group (pairs: an iteration and pair row; evaluation rows: a file, i.e. an
iteration, model and task, and a language); the page says how many it left out, so a large run's page stays small."""
MAX_CHARS = 4000
"""Characters kept of each text (prompt, answers, gold) in report.html; longer ones are clipped, saying so."""


def clip(text: object) -> str | None:
    """A text for the page: None stays None, anything else a string of at most `MAX_CHARS` characters."""
    if text is None:
        return None
    text = str(text)
    if len(text) <= MAX_CHARS:
        return text
    return f"{text[:MAX_CHARS]}… [clipped: {len(text):,} characters]"


T = TypeVar("T")


def capped(rows: list[T], group: Callable[[T], object]) -> tuple[list[T], int]:
    """At most `MAX_ROWS` rows of each group (in file order), and how many were left out."""
    seen: dict[object, int] = {}
    kept = []
    for row in rows:
        key = group(row)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= MAX_ROWS:
            kept.append(row)
    return kept, len(rows) - len(kept)


def pair_views(run_dir: Path, views: MethodViews) -> list[dict[str, Any]]:
    """Every training example of every iteration (the method's `PairFiles`): kept, and dropped with its reason,
    the kept ones' sides right or wrong where the prompts had gold answers (its `labels`); then the self-translated
    prompts dropped before any example was made (status `prompt <reason>`: the source prompt, its translation)."""
    files = views.pairs
    if files is None:
        return []
    iters = [p for p in run_dir.glob("iter_*") if iteration(p) is not None and (p / files.kept).is_file()]
    found = []
    for it in sorted(iters, key=lambda p: iteration(p) or 0):
        labels, dropped = {}, []
        if files.labels and (it / files.labels).is_file():
            found_labels = read_jsonl(it / files.labels, RewardLabel)
            labels = {(x.id, x.row): [x.chosen_right, x.rejected_right] for x in found_labels}
        if files.dropped and (it / files.dropped).is_file():
            dropped = read_jsonl(it / files.dropped, DroppedPair)
        pairs: list[Any] = [*read_jsonl(it / files.kept, files.record), *dropped]
        for pair in pairs:
            row, kept = files.row(pair), not isinstance(pair, DroppedPair)
            found.append(
                {
                    "iter": iteration(it),
                    "lang": row,
                    "id": pair.id,
                    "status": "kept" if kept else pair.reason,
                    "correct": labels.get((pair.id, row)) if kept else None,
                    "prompt": clip(pair.prompt),
                    "sides": list(files.sides),
                    **{side: clip(getattr(pair, side)) for side in files.sides},
                }
            )
        if files.dropped_prompts and (it / files.dropped_prompts).is_file():
            for prompt in read_jsonl(it / files.dropped_prompts, DroppedPrompt):
                found.append(
                    {
                        "iter": iteration(it),
                        "lang": prompt.lang,
                        "id": prompt.id,
                        "status": f"prompt {prompt.reason}",
                        "correct": None,
                        "prompt": clip(prompt.source),
                        "sides": ["translation"],
                        "translation": clip(prompt.translation),
                    }
                )
    return found


def _lang(row: Any, fields: tuple[str, ...]) -> str:
    """An evaluation row's language, or its direction (`en-de`): its view's `lang` fields joined by "-"."""
    return "-".join(str(getattr(row, f)) for f in fields)


def _first_lang(pair: tuple[Any, Any], fields: tuple[str, ...]) -> str:
    """The language of a (row, verdict) pair's row."""
    return _lang(pair[0], fields)


def eval_views(run_dir: Path, scores: Scores, langid: LangIdSettings) -> tuple[list[dict[str, Any]], int]:
    """The per-sample rows of every evaluation (`<task>_<label>.jsonl` of each eval dir) whose task view shows an
    output, at most `MAX_ROWS` per file and language (and how many more there were): prompt, output, gold, the
    view's verdict and the languages the detector found in a free-text answer (the run's `langid` settings)."""
    views = []
    left_out = 0
    for eval_dir in eval_dirs(run_dir):
        for task in sorted(scores):
            for label in sorted(scores[task], key=model_order):
                path = eval_dir / f"{task}_{label}.jsonl"
                view = task_view(task, path) if path.is_file() else None
                if view is None or view.row is None or view.output is None:
                    continue
                rows: list[Any] = read_jsonl(path, view.row)
                judged = zip(rows, view.row_verdicts(path, rows, langid), strict=True)
                answered = [(row, verdict) for row, verdict in judged if getattr(row, view.output) is not None]

                kept, left = capped(answered, partial(_first_lang, fields=view.lang))
                left_out += left
                langs = sorted({row.lang for row, _ in kept})
                for row, verdict in kept:
                    detected = None
                    text = getattr(row, view.answer) if view.answer else None
                    if isinstance(text, str):
                        lines = judge(text, row.lang, langid, langs).lines
                        detected = ", ".join(sorted({line.lang for line in lines if line.lang})) or None
                    views.append(
                        {
                            "iter": iteration(eval_dir),
                            "model": label,
                            "task": task,
                            "lang": _lang(row, view.lang),
                            "id": str(row.id),
                            "prompt": clip(getattr(row, view.prompt)) if view.prompt else None,
                            "output": clip(getattr(row, view.output)),
                            "gold": clip(getattr(row, view.gold)) if view.gold else None,
                            "verdict": verdict,
                            "detected": detected,
                        }
                    )
    return views, left_out


def samples_data(run_dir: Path, scores: Scores, views: MethodViews, langid: LangIdSettings) -> dict[str, Any]:
    """What report.html embeds for its per-sample views: the capped pairs and evaluation rows, and what was left
    out."""
    pairs, pairs_left = capped(pair_views(run_dir, views), lambda view: (view["iter"], view["lang"]))
    evals, evals_left = eval_views(run_dir, scores, langid)
    return {
        "pairs": pairs,
        "evals": evals,
        "left_out": {"pairs": pairs_left, "evals": evals_left},
        "max_rows": MAX_ROWS,
        "max_chars": MAX_CHARS,
    }
