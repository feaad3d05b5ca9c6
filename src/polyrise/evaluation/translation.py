"""The `translation` task: the model's own self-translation on parallel data, scored with sacrebleu (chrF++, BLEU).

BLEU tokenisation follows the target language, using only what sacrebleu runs offline without extras:
`zh` → sacrebleu's "zh"; `ja` → "ja-mecab" and `ko` → "ko-mecab" when `sacrebleu[ja]` / `sacrebleu[ko]`
are installed, else "char"; `th` (no spaces between words) → "char"; every other language → "13a".
The SentencePiece tokenizers (flores101/flores200/spBLEU) are not used: they download a model at first use.
BLEU numbers are comparable only under the same tokenizer, so every score reports `bleu_tokenize`.
chrF++ (`CHRF(word_order=2)`) needs no tokenizer and is the headline metric.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from polyrise.errors import PolyriseError
from polyrise.evaluation.base import Metric, Scores, TaskRun, TaskSettings, TaskView
from polyrise.generation import Generator
from polyrise.io import load_rows, write_jsonl
from polyrise.records import Record
from polyrise.self_translation import TranslationJob, translate
from polyrise.settings import MAX_TOKENS, SamplingSettings
from polyrise.stats import RowSamples, Sample, Statistic, summarize

if TYPE_CHECKING:
    from sacrebleu.metrics.base import Metric as SacreMetric

_PREFERRED_TOKENIZE = {"zh": "zh", "ja": "ja-mecab", "ko": "ko-mecab", "th": "char"}


@cache
def _tokenizer_works(name: str) -> bool:
    from sacrebleu.metrics import BLEU

    try:
        BLEU(tokenize=name).corpus_score(["a"], [["a"]])
    except Exception:  # missing optional dependency (RuntimeError/ImportError) or a download that cannot happen
        return False
    return True


def bleu_tokenize(lang: str | None) -> str:
    """The sacrebleu BLEU tokenizer for texts in `lang` (see the module docstring); "13a" when unknown."""
    preferred = _PREFERRED_TOKENIZE.get(lang or "", "13a")
    return preferred if _tokenizer_works(preferred) else "char"


def _corpus_statistic(metric: SacreMetric) -> Statistic:
    """The corpus score from per-sentence match statistics, summed (as sacrebleu computes it, and resamples it in
    its own bootstrap)."""

    def score(stats: np.ndarray) -> float:
        return float(metric._compute_score_from_stats(stats.sum(axis=0).tolist()).score)

    return score


def corpus_samples(
    ids: Sequence[str], hypotheses: Sequence[str], references: Sequence[str], lang: str | None = None
) -> dict[str, Sample]:
    """The `chrf++` and `bleu` samples of hypotheses against one reference each: per sentence, sacrebleu's match
    statistics; the statistic is the corpus score. `lang` is the texts' language (the BLEU tokenizer)."""
    from sacrebleu.metrics import BLEU, CHRF

    if len(hypotheses) != len(references):
        raise PolyriseError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    metrics: dict[str, SacreMetric] = {"chrf++": CHRF(word_order=2), "bleu": BLEU(tokenize=bleu_tokenize(lang))}
    return {
        name: Sample(
            tuple(ids),
            np.array(metric._extract_corpus_statistics(list(hypotheses), [list(references)]), dtype=np.int64),
            _corpus_statistic(metric),
        )
        for name, metric in metrics.items()
    }


def corpus_scores(
    hypotheses: Sequence[str], references: Sequence[str], lang: str | None = None, *, seed: int = 0, key: str = ""
) -> dict[str, float | int | str]:
    """Corpus chrF++ and BLEU (0 to 100) of hypotheses against one reference each, each with its 95% bootstrap
    interval over sentences (seeded by (seed, key)), and `n` segments.

    `lang` is the language of the texts (the translation target); it picks the BLEU tokenizer, returned as
    `bleu_tokenize`. With no segments both scores are NaN.
    """
    samples = corpus_samples([str(i) for i in range(len(hypotheses))], hypotheses, references, lang)
    return {**summarize({key: samples}, seed)[key], "bleu_tokenize": bleu_tokenize(lang)}


class TranslationTask(TaskSettings):
    """chrF++ and BLEU of the model's self-translation from the source language (`en` when evaluated, else the
    first language) into every other language and back."""

    task: Literal["translation"] = "translation"
    requires = (("sacrebleu", "eval"),)
    source: str
    """Aligned files with `{lang}` (JSONL or JSON arrays of `id` + `instruction`), joined on `id`."""
    max_new_tokens: int = Field(default=256, ge=1, le=MAX_TOKENS)


METRICS = (Metric("chrf++"), Metric("bleu"))


class TranslationRow(Record):
    """One sentence's self-translation `src_lang` → `lang`: the model's `hypothesis` ("" when no translation
    could be extracted: `failed`) against the aligned `reference`, with its sentence chrF++."""

    id: str
    src_lang: str
    lang: str
    source: str
    hypothesis: str
    reference: str
    chrf: float
    failed: bool


@dataclass(frozen=True)
class ParallelRow:
    """One text in several languages, joined on `id`."""

    id: str
    texts: dict[str, str] = field(hash=False)


class _Text(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    lang: str
    instruction: str


def load_parallel(path_template: str | Path, langs: Sequence[str], limit: int | None = None) -> list[ParallelRow]:
    """Rows whose `id` occurs in every language's file (`{lang}` in the path), in the first language's order.

    Files are JSONL with `id` and `instruction` (the shape of alpagasus-1k/<lang>.jsonl), or JSON arrays of such
    objects (x-alpacaeval/<lang>.json); an id repeated within a file is an error.
    `limit` keeps the first rows after the join.
    """
    template = str(path_template)
    if "{lang}" not in template:
        raise PolyriseError(f"{template}: the path template needs a {{lang}} placeholder")
    if not langs:
        raise PolyriseError("no languages given")
    per_lang: dict[str, dict[str, str]] = {lang: {} for lang in langs}
    for row in load_rows(template, langs, _Text, unique_ids=True):
        per_lang[row.lang][row.id] = row.instruction
    first, *rest = per_lang.values()
    rows = [
        ParallelRow(pid, {lang: texts[pid] for lang, texts in per_lang.items()})
        for pid in first
        if all(pid in texts for texts in rest)
    ]
    return rows[:limit] if limit is not None else rows


def self_translation_quality(
    generator: Generator,
    parallel: Sequence[ParallelRow],
    source_lang: str,
    langs: Sequence[str],
    params: SamplingSettings,
    seed: int = 0,
) -> tuple[list[TranslationRow], dict[str, dict[str, float | int | str]]]:
    """Self-translate every row `source_lang`→L and L→`source_lang` for each L in `langs`; score each direction.

    Returns one `TranslationRow` per sentence and direction, and the scores: keys are directions such as
    "en-de", values `translation_scores` (seeded by `seed`) against the aligned references: with `failed`, the
    translations that could not be extracted (scored as empty hypotheses).
    """
    from sacrebleu.metrics import CHRF

    targets = [lang for lang in dict.fromkeys(langs) if lang != source_lang]
    for row in parallel:
        missing = [lang for lang in (source_lang, *targets) if lang not in row.texts]
        if missing:
            raise PolyriseError(f"parallel row {row.id!r} has no text in {', '.join(missing)}")
    directions = [(source_lang, lang) for lang in targets] + [(lang, source_lang) for lang in targets]
    pairs = [(src, tgt, row) for src, tgt in directions for row in parallel]
    jobs = [TranslationJob(row.id, "prompt", src, tgt, row.texts[src]) for src, tgt, row in pairs]
    translations = translate(generator, jobs, params, desc="translating parallel data")
    chrf = CHRF(word_order=2)
    rows = []
    for (src, tgt, row), t in zip(pairs, translations, strict=True):
        hypothesis = t.output if t.output is not None else ""
        rows.append(
            TranslationRow(
                id=row.id,
                src_lang=src,
                lang=tgt,
                source=row.texts[src],
                hypothesis=hypothesis,
                reference=row.texts[tgt],
                chrf=chrf.sentence_score(hypothesis, [row.texts[tgt]]).score,
                failed=t.output is None,
            )
        )
    return rows, translation_scores(rows, seed)


ROW = TranslationRow
"""The per-sample rows of the task, which `row_samples` turns into per-item values."""


def _directions(rows: Iterable[TranslationRow]) -> dict[str, list[TranslationRow]]:
    by_direction: dict[str, list[TranslationRow]] = {}
    for row in rows:
        by_direction.setdefault(f"{row.src_lang}-{row.lang}", []).append(row)
    return by_direction


def row_samples(rows: Iterable[TranslationRow]) -> RowSamples:
    """Per direction (`src-tgt`): the `chrf++` and `bleu` samples of its sentences (`corpus_samples`)."""
    return {
        direction: corpus_samples(
            [r.id for r in part], [r.hypothesis for r in part], [r.reference for r in part], part[0].lang
        )
        for direction, part in _directions(rows).items()
    }


def translation_scores(rows: Iterable[TranslationRow], seed: int = 0) -> dict[str, dict[str, float | int | str]]:
    """Per direction (`src-tgt`, in the rows' order): corpus chrF++ and BLEU of its rows with their 95% bootstrap
    intervals over sentences (seeded by (seed, direction)), `n`, `bleu_tokenize` and `failed`."""
    rows = list(rows)
    scores = summarize(row_samples(rows), seed)
    for direction, part in _directions(rows).items():
        scores[direction] |= {"bleu_tokenize": bleu_tokenize(part[0].lang), "failed": sum(r.failed for r in part)}
    return scores


def run(task: TranslationTask, context: TaskRun) -> Scores:
    """Self-translate the task's parallel data both ways; writes the per-sentence rows, returns the scores."""
    langs = context.langs
    source_lang = "en" if "en" in langs else langs[0]
    parallel = load_parallel(task.source, langs, task.limit)
    params = SamplingSettings(max_new_tokens=task.max_new_tokens)
    rows, scores = self_translation_quality(context.generator, parallel, source_lang, langs, params, context.seed)
    write_jsonl(context.rows_path(task), rows)
    return scores


VIEW = TaskView(
    METRICS,
    ROW,
    prompt="source",
    answer="hypothesis",
    gold="reference",
    lang=("src_lang", "lang"),
    samples=lambda rows, _: row_samples(rows),
    verdicts=lambda _, rows, __: ["failed" if row.failed else None for row in rows],
)
"""A row: the self-translation of a source into a direction (`en-de`); a failed one says so (chrF++ and BLEU are
corpus scores: no verdict per row)."""
