"""Multiple-choice evaluation by log-likelihood (XNLI, XCOPA, PAWS-X and any data of the same shape).

Each item is a `context` and a list of `choices`; the model's pick is the choice whose continuation
log-likelihood log P(choice | context) is highest, optionally normalised by the choice's length
(per character, like lm-evaluation-harness's `acc_norm`, or per token).

Local data is JSONL, one item per line::

    {"id": "7", "lang": "de", "context": "Der Himmel ist", "choices": [" blau", " grün"], "label": 0}

`id` and `lang` may be left out when the file is one language's file of a `{lang}` path template
(`lang` is then that language; `id` the 1-based line number). Choices are appended to the context
verbatim, so they usually start with a space. Unknown keys are errors.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from polyrise.errors import PolyriseError
from polyrise.evaluation.base import Metric, Scores, TaskRun, TaskSettings, TaskView
from polyrise.generation import Generator, LogLikelihood
from polyrise.io import first_per_lang, load_rows, write_jsonl
from polyrise.stats import RowSamples, Sample, summarize

Normalize = Literal["chars", "tokens"] | None


class ChoiceItem(BaseModel):
    """One multiple-choice question: score `context + choices[i]`; `label` is the index of the right choice."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    lang: str
    context: str
    choices: list[str]
    label: int

    @field_validator("choices")
    @classmethod
    def _choices(cls, choices: list[str]) -> list[str]:
        if len(choices) < 2:
            raise ValueError("at least two choices are needed")
        if any(not c for c in choices):
            raise ValueError("choices must be non-empty strings")
        return choices

    @model_validator(mode="after")
    def _label_in_range(self) -> ChoiceItem:
        if not 0 <= self.label < len(self.choices):
            raise ValueError(f"label {self.label} is not an index into {len(self.choices)} choices")
        return self


class ChoicePrediction(BaseModel):
    """The model's pick for one item; `logliks` are the raw (unnormalised) sums of continuation log-probs."""

    model_config = ConfigDict(frozen=True)

    id: str
    lang: str
    pred: int
    label: int
    logliks: list[float]

    @property
    def correct(self) -> bool:
        return self.pred == self.label


# ---------------------------------------------------------------------------------------------- loading


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "row"
    return f"{where}: {first['msg'].removeprefix('Value error, ')}"


def load_choice_jsonl(path: str | Path, langs: Sequence[str] | None = None) -> list[ChoiceItem]:
    """Read choice items from one JSONL file, or from a `{lang}` path template for each of `langs` (`io.load_rows`)."""
    return load_rows(path, langs, ChoiceItem)


@dataclass(frozen=True)
class ChoiceTemplate:
    """How a dataset row becomes a ChoiceItem.

    `context` and each of `choices` are `str.format` templates over the row's fields (after `prepare`);
    `choices` may instead name a column that holds the list of choice strings.
    `prepare` may add derived fields, or return None to skip the row.
    """

    context: str
    choices: tuple[str, ...] | str
    label_column: str = "label"
    id_column: str | None = None
    prepare: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None


_FORMATTER = string.Formatter()


def _fill(template: str, row: Mapping[str, Any], what: str) -> str:
    try:
        return _FORMATTER.vformat(template, (), row)
    except KeyError as e:
        raise PolyriseError(
            f"{what} template {template!r} needs field {e.args[0]!r}; the row has {', '.join(sorted(row))}"
        ) from None


def row_to_item(row: Mapping[str, Any], index: int, lang: str, template: ChoiceTemplate) -> ChoiceItem | None:
    """Convert one dataset row (a mapping of column → value) to a ChoiceItem; None if `prepare` skips it."""
    data = dict(row)
    if template.prepare is not None:
        prepared = template.prepare(data)
        if prepared is None:
            return None
        data = prepared
    if isinstance(template.choices, str):
        if template.choices not in data:
            raise PolyriseError(f"no choices column {template.choices!r}; the row has {', '.join(sorted(data))}")
        choices = [str(c) for c in data[template.choices]]
    else:
        choices = [_fill(t, data, "choice") for t in template.choices]
    if template.label_column not in data:
        raise PolyriseError(f"no label column {template.label_column!r}; the row has {', '.join(sorted(data))}")
    item_id = str(data[template.id_column]) if template.id_column else str(index)
    try:
        return ChoiceItem(
            id=item_id,
            lang=lang,
            context=_fill(template.context, data, "context"),
            choices=choices,
            label=int(data[template.label_column]),
        )
    except ValidationError as e:
        raise PolyriseError(f"row {index} (id {item_id}): {_first_error(e)}") from None


def dataset_to_items(
    rows: Iterable[Mapping[str, Any]], lang: str, template: ChoiceTemplate, limit: int | None = None
) -> list[ChoiceItem]:
    """Convert rows (a `datasets.Dataset` or any iterable of dicts) to at most `limit` ChoiceItems."""
    items: list[ChoiceItem] = []
    for index, row in enumerate(rows):
        if limit is not None and len(items) >= limit:
            break
        item = row_to_item(row, index, lang, template)
        if item is not None:
            items.append(item)
    return items


def load_choice_hf(
    name: str,
    split: str,
    lang: str,
    context_template: str,
    choices_template: Sequence[str] | str,
    label_column: str = "label",
    *,
    config: str | None = None,
    id_column: str | None = None,
    prepare: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
    limit: int | None = None,
) -> list[ChoiceItem]:
    """Load a Hugging Face dataset (`config` defaults to `lang`) and convert its rows to ChoiceItems.

    See ChoiceTemplate for the templates. Needs the dataset on the hub or in the HF cache.
    """
    import datasets

    template = ChoiceTemplate(
        context=context_template,
        choices=choices_template if isinstance(choices_template, str) else tuple(choices_template),
        label_column=label_column,
        id_column=id_column,
        prepare=prepare,
    )
    try:
        dataset = datasets.load_dataset(name, config if config is not None else lang, split=split)
    except Exception as e:  # network, unknown config/split, script-based datasets: all one user-facing error
        raise PolyriseError(f"cannot load dataset {name!r} ({config or lang}, {split}): {e}") from None
    return dataset_to_items(dataset, lang, template, limit)


# ---------------------------------------------------------------------------------------------- presets


_FINAL_PUNCT = ".,;!?\u3002\uff0e\uff01\uff1f"  # ASCII and full-width (CJK) sentence ends


def _strip_final_punct(text: str) -> str:
    text = text.strip()
    return text[:-1] if text and text[-1] in _FINAL_PUNCT else text


def _lower_first(text: str) -> str:
    text = text.strip()
    return text[:1].lower() + text[1:]


def _prepare_xcopa(row: dict[str, Any]) -> dict[str, Any]:
    connector = {"cause": "because", "effect": "therefore"}[row["question"]]
    return {
        **row,
        "stem": _strip_final_punct(row["premise"]),
        "connector": connector,
        "choice1_lc": _lower_first(row["choice1"]),
        "choice2_lc": _lower_first(row["choice2"]),
    }


def _prepare_pawsx(row: dict[str, Any]) -> dict[str, Any] | None:
    s1, s2 = row.get("sentence1") or "", row.get("sentence2") or ""
    if not s1.strip() or not s2.strip():
        return None  # PAWS-X has a few empty sentences; lm-eval drops them too
    return {**row, "s1": _strip_final_punct(s1), "s2": _lower_first(s2)}


def _prepare_xnli(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "stem": _strip_final_punct(row["premise"]), "hyp": _lower_first(row["hypothesis"])}


@dataclass(frozen=True)
class ChoicePreset:
    """A ready-made benchmark: hub dataset (config = language code), default split, languages, template.

    All three datasets also have a `validation` split (XNLI 2490, XCOPA 100, PAWS-X 2000 rows per language).
    """

    dataset: str
    split: str
    languages: tuple[str, ...]
    template: ChoiceTemplate
    note: str = ""


PRESETS: dict[str, ChoicePreset] = {
    "xnli": ChoicePreset(
        dataset="facebook/xnli",
        split="test",
        languages=("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"),
        template=ChoiceTemplate(
            context="{stem}, right?",
            choices=(" Yes, {hyp}", " Also, {hyp}", " No, {hyp}"),  # 0 entailment, 1 neutral, 2 contradiction
            prepare=_prepare_xnli,
        ),
        note="lm-eval's 'premise, right? Yes/Also/No, hypothesis' with English verbalisers; unlike lm-eval, the "
        "premise's final period is dropped and the hypothesis starts lower-case (as lm-eval does for PAWS-X)",
    ),
    "xcopa": ChoicePreset(
        dataset="cambridgeltl/xcopa",
        split="test",
        languages=("et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh"),
        template=ChoiceTemplate(
            context="{stem} {connector}",
            choices=(" {choice1_lc}", " {choice2_lc}"),
            id_column="idx",
            prepare=_prepare_xcopa,
        ),
        note="premise without its final period + ' because' (cause) / ' therefore' (effect), English connectors",
    ),
    "pawsx": ChoicePreset(
        dataset="google-research-datasets/paws-x",
        split="test",
        languages=("de", "en", "es", "fr", "ja", "ko", "zh"),
        template=ChoiceTemplate(
            context="{s1}, right?",
            choices=(" No, {s2}", " Yes, {s2}"),  # 0 not a paraphrase, 1 paraphrase
            id_column="id",
            prepare=_prepare_pawsx,
        ),
        note="lm-eval's 'sentence1, right? No/Yes, sentence2' format with the English verbalisers",
    ),
}
"""Ready-made choice benchmarks. The verbalisers/connectors are English in every language (lm-eval uses
native ones), so accuracies compare across polyrise runs and iterations, not with lm-eval's numbers."""


def load_preset(name: str, lang: str, split: str | None = None, limit: int | None = None) -> list[ChoiceItem]:
    """Load one language of a preset from the Hugging Face hub (or the HF cache)."""
    if name not in PRESETS:
        raise PolyriseError(f"unknown choice task {name!r}; known: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    if lang not in preset.languages:
        raise PolyriseError(f"{name} has no language {lang!r}; it has {', '.join(preset.languages)}")
    t = preset.template
    return load_choice_hf(
        preset.dataset,
        split or preset.split,
        lang,
        t.context,
        t.choices,
        t.label_column,
        id_column=t.id_column,
        prepare=t.prepare,
        limit=limit,
    )


# ---------------------------------------------------------------------------------------------- scoring


def score_choices(
    generator: Generator,
    items: Sequence[ChoiceItem],
    normalize: Normalize = "chars",
) -> list[ChoicePrediction]:
    """Pick a choice for every item by log P(choice | context), in item order.

    Every (item, choice) pair is one request of the engine's `loglikelihood`, cached. The requests go longest
    context first, an item's choices together: the generator scores them in chunks, so each chunk's batches hold
    contexts of similar length, and the HF engine runs a context once for all its choices in the chunk.
    `normalize`: "chars" divides each log-likelihood by the choice's length in characters (lm-eval's acc_norm),
    "tokens" by its token count, None keeps the sum. Ties go to the lower index.
    """
    if normalize not in ("chars", "tokens", None):
        raise PolyriseError(f"normalize must be 'chars', 'tokens' or None, not {normalize!r}")
    longest_first = sorted(range(len(items)), key=lambda i: -len(items[i].context))
    pairs = [(i, j) for i in longest_first for j in range(len(items[i].choices))]
    requests = [(items[i].context, items[i].choices[j]) for i, j in pairs]
    scores = generator.loglikelihood(requests, desc="scoring choices")

    per_item: list[list[LogLikelihood]] = [[] for _ in items]
    for (i, _), s in zip(pairs, scores, strict=True):
        per_item[i].append(s)
    predictions = []
    for item, item_scores in zip(items, per_item, strict=True):
        logliks = [s.logprob for s in item_scores]
        if normalize == "chars":
            keyed = [ll / len(c) for ll, c in zip(logliks, item.choices, strict=True)]
        elif normalize == "tokens":
            keyed = [s.logprob / s.tokens for s in item_scores]
        else:
            keyed = logliks
        pred = max(range(len(keyed)), key=lambda j: (keyed[j], -j))
        predictions.append(ChoicePrediction(id=item.id, lang=item.lang, pred=pred, label=item.label, logliks=logliks))
    return predictions


class Pick(Protocol):
    """A prediction that is right or wrong: what accuracy reads (read-only, so that frozen models qualify)."""

    @property
    def id(self) -> str: ...

    @property
    def lang(self) -> str: ...

    @property
    def correct(self) -> bool: ...


ROW = ChoicePrediction
"""The per-sample rows of the task, which `row_samples` turns into per-item values."""


def row_samples(predictions: Iterable[Pick]) -> RowSamples:
    """Per language: the `accuracy` sample (1 for a right pick, 0 for a wrong one, per item)."""
    by_lang: dict[str, list[Pick]] = {}
    for p in predictions:
        by_lang.setdefault(p.lang, []).append(p)
    return {
        lang: {"accuracy": Sample(tuple(p.id for p in picks), np.array([float(p.correct) for p in picks]))}
        for lang, picks in by_lang.items()
    }


def choice_accuracy(predictions: Iterable[Pick], seed: int = 0) -> dict[str, dict[str, float | int]]:
    """Per language: `accuracy` (share of picks equal to the label) with its 95% bootstrap interval
    (`accuracy_ci_low`, `accuracy_ci_high`, seeded by (seed, language)) and `n` items."""
    return summarize(row_samples(predictions), seed)


# ---------------------------------------------------------------------------------------------- the task

NormalizeOption = Literal["chars", "tokens", "none"]
"""`normalize` as a task option: "none" is no normalisation (None)."""


class ChoiceTask(TaskSettings):
    """Multiple-choice accuracy, each choice scored by its (length-normalised) log-likelihood."""

    task: Literal["choice"] = "choice"
    source: str
    """`xnli`, `xcopa`, `pawsx` (a preset, read from the HF hub or cache) or a JSONL path with `{lang}`."""
    normalize: NormalizeOption = "chars"
    """Length normalisation of the choice log-likelihoods."""

    @property
    def key(self) -> str:
        """A preset is its own key (`xnli`); a file is `choice`."""
        return self.name or (self.source if "/" not in self.source else self.task)


METRICS = (Metric("accuracy"),)
VIEW = TaskView(METRICS, ROW, pick="pred", gold="label", samples=lambda rows, _: row_samples(rows))
"""A row: the picked choice's index, right or wrong against the label's."""


def run(task: ChoiceTask, context: TaskRun) -> Scores:
    """Pick a choice for every item of the task; writes the predictions, returns accuracy per language."""
    if task.source in PRESETS:
        items = [item for lang in context.langs for item in load_preset(task.source, lang, limit=task.limit)]
    else:
        items = first_per_lang(load_choice_jsonl(task.source, context.langs), task.limit)
    normalize = None if task.normalize == "none" else task.normalize
    predictions = score_choices(context.generator, items, normalize)
    write_jsonl(context.rows_path(task), predictions)
    return choice_accuracy(predictions, context.seed)
