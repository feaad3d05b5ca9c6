"""Language confusion of answers, per language, as the Language Confusion Benchmark measures it (Marchisio et al.
2024): the off-target rate (the paper's "Off-tag": answers with a line in another language, = 1 - LPR), the
line-level pass rate LPR, the word-level pass rate WPR (answers in a non-Latin script without English words, among
those that pass LPR) and LCPR, their harmonic mean (LPR alone where WPR is not defined). Every rate comes with its
95% bootstrap interval and `n`, the answers that could be told; `skipped` could not (no identifiable line).
A language the detector cannot identify (`langid.measurable`) gets no rate: `measurable` false, rates None.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from polyrise.errors import PolyriseError
from polyrise.evaluation.base import Metric, TaskView
from polyrise.io import load_rows, write_jsonl
from polyrise.langid import LangIdSettings, Verdict, judge, measurable, word_level
from polyrise.languages import LANGUAGES
from polyrise.records import Response
from polyrise.stats import RowSamples, Sample, interval_entries

METRICS = (
    Metric("off_target", lower_is_better=True),
    Metric("lpr", headline=False),
    Metric("wpr"),
    Metric("lcpr"),
)
"""Also the metrics of the held-out answers' measurement of a run (`heldout` in its scores)."""


def _wpr(values: np.ndarray) -> float:
    """Share without English words among the answers that pass LPR (NaN marks the others)."""
    passed = values[~np.isnan(values)]
    return float(1 - passed.mean()) if len(passed) else math.nan


def _lcpr(values: np.ndarray) -> float:
    """Harmonic mean of LPR (column 0: line error) and WPR (column 1: word error, NaN after a line error)."""
    lpr, wpr = 1 - float(values[:, 0].mean()), _wpr(values[:, 1])
    if math.isnan(wpr):
        return lpr
    return 2 * lpr * wpr / (lpr + wpr) if lpr + wpr else 0.0


def confusion_scores(verdicts: Sequence[Verdict], lang: str, seed: int = 0) -> dict[str, Any]:
    """One language's row of scores from its answers' verdicts (see the module docstring)."""
    if not measurable(lang):
        none = dict.fromkeys(m.name for m in METRICS)
        return none | {"measurable": False, "n": 0, "skipped": len(verdicts)}
    told = [v for v in verdicts if v.off_target is not None]
    line_errors = np.array([v.off_target for v in told], dtype=float)
    word_errors = np.array([math.nan if v.off_target else float(bool(v.english_words)) for v in told])
    scores: dict[str, Any] = interval_entries("off_target", line_errors, seed, lang)
    scores |= interval_entries("lpr", 1 - line_errors, seed, lang)
    if word_level(lang):
        scores |= interval_entries("wpr", word_errors, seed, lang, statistic=_wpr)
    else:
        scores |= dict.fromkeys(("wpr", "wpr_ci_low", "wpr_ci_high"))
    pairs = np.stack([line_errors, word_errors], axis=1) if told else np.empty((0, 2))
    scores |= interval_entries("lcpr", pairs, seed, lang, statistic=_lcpr)
    return scores | {"measurable": True, "n": len(told), "skipped": len(verdicts) - len(told)}


def row_samples(responses: Iterable[Response], langid: LangIdSettings | None = None) -> RowSamples:
    """Per measurable language: the `off_target` sample (1 off, 0 on target) of the answers that can be told,
    judged with `langid` (what the report pairs between models)."""
    by_lang: dict[str, tuple[list[str], list[float]]] = {}
    for response, verdict in judge_responses(responses, langid or LangIdSettings()):
        if verdict.off_target is not None:
            ids, values = by_lang.setdefault(response.lang, ([], []))
            ids.append(response.id)
            values.append(float(verdict.off_target))
    return {lang: {"off_target": Sample(tuple(ids), np.array(values))} for lang, (ids, values) in by_lang.items()}


def judge_responses(responses: Iterable[Response], settings: LangIdSettings) -> list[tuple[Response, Verdict]]:
    """Every response with its verdict; the candidates are English, the responses' languages and the settings'."""
    responses = list(responses)
    langs = sorted({r.lang for r in responses})
    return [(r, judge(r.output, r.lang, settings, langs)) for r in responses]


def off_target_rates(
    responses: Iterable[Response], settings: LangIdSettings | None = None, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Per language: the confusion rates of the responses (`confusion_scores`)."""
    return _rates(judge_responses(responses, settings or LangIdSettings()), seed)


def _rates(judged: Iterable[tuple[Response, Verdict]], seed: int) -> dict[str, dict[str, Any]]:
    by_lang: dict[str, list[Verdict]] = {}
    for response, verdict in judged:
        by_lang.setdefault(response.lang, []).append(verdict)
    return {lang: confusion_scores(verdicts, lang, seed) for lang, verdicts in by_lang.items()}


class SavedOutput(BaseModel):
    """A row `polyrise score langid` re-scores: `id`, `lang`, `output`; other fields are ignored."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)
    id: str
    lang: str
    output: str


S = TypeVar("S", bound="SavedOutput")


def read_outputs(path: Path, record: type[S]) -> list[S]:
    """Saved outputs to re-score: JSONL rows of known languages, each (id, lang) once (a repeat names both
    lines), at least one row."""
    rows = load_rows(path, None, record, _known_language, unique_ids=True)
    if not rows:
        raise PolyriseError(f"{path}: no rows to score")
    return rows


def _known_language(row: SavedOutput) -> str | None:
    return None if row.lang in LANGUAGES else f"unknown language code {row.lang!r}"


def score_outputs(
    path: Path, settings: LangIdSettings, out_dir: Path | None = None, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Re-score saved outputs (`polyrise score langid`): the confusion rates per language; with `out_dir`, also
    `langid_rows.jsonl` (each answer's verdict and its lines; `api.score` merges the rates into `scores.json`)."""
    rows = read_outputs(path, SavedOutput)
    responses = [Response(id=row.id, lang=row.lang, prompt="", output=row.output) for row in rows]
    judged = judge_responses(responses, settings)
    scores = _rates(judged, seed)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_jsonl(out_dir / "langid_rows.jsonl", (_verdict_row(r, v) for r, v in judged))
    return scores


def _verdict_row(response: Response, verdict: Verdict) -> dict[str, Any]:
    return {
        "id": response.id,
        "lang": response.lang,
        "off_target": verdict.off_target,
        "lines": [asdict(line) for line in verdict.lines],
        "skipped_lines": verdict.skipped_lines,
        "english_words": verdict.english_words,
    }


def _on_or_off_target(_: Path, rows: Sequence[Response], settings: LangIdSettings) -> list[str | None]:
    """Each answer's verdict: off-target or on-target, judged with the run's settings; None where it cannot be told."""
    verdicts = (verdict.off_target for _, verdict in judge_responses(rows, settings))
    return [None if off is None else "off-target" if off else "on-target" for off in verdicts]


VIEW = TaskView(
    METRICS, Response, prompt="prompt", answer="output", samples=row_samples, verdicts=_on_or_off_target, key="heldout"
)
"""The run's held-out answers (`heldout` in its scores, `heldout_<model>.jsonl`), judged as the run judged them."""
